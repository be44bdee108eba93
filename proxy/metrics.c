/*
 * Counters per worker, the process-wide name tables, the hooks the session
 * and listener call, and the Prometheus text rendering (format 0.0.4).
 */
#include <openssl/crypto.h>

#include <ev.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/config.h"
#include "iptable.h"
#include "listener.h"
#include "metrics.h"
#include "session.h"
#include "worker.h"

const char *const metrics_refusal_names[METRICS_REFUSED_MAX] = {
	[METRICS_REFUSED_MAX_CONNECTIONS] = "max_connections",
	[METRICS_REFUSED_PER_IP_CONNECTIONS] = "per_ip_connections",
	[METRICS_REFUSED_PER_IP_RATE] = "per_ip_rate",
	[METRICS_REFUSED_UNTRUSTED_PROXY] = "untrusted_proxy",
};

const char *const metrics_hs_names[METRICS_HS_MAX] = {
	[METRICS_HS_TIMEOUT] = "timeout",
	[METRICS_HS_CLOSED] = "closed",
	[METRICS_HS_NO_SHARED_CIPHER] = "no_shared_cipher",
	[METRICS_HS_VERSION] = "unsupported_version",
	[METRICS_HS_NOT_TLS] = "not_tls",
	[METRICS_HS_SHUTDOWN] = "shutdown",
	[METRICS_HS_OTHER] = "other",
};

const char *const metrics_end_names[METRICS_END_MAX] = {
	[METRICS_END_QUIT] = "quit",
	[METRICS_END_CLIENT_CLOSED] = "client_closed",
	[METRICS_END_CLIENT_ERROR] = "client_error",
	[METRICS_END_TIMEOUT] = "timeout",
	[METRICS_END_TLS_FAILED] = "tls_failed",
	[METRICS_END_TOO_MANY_ERRORS] = "too_many_errors",
	[METRICS_END_MESSAGE_REJECTED] = "message_rejected",
	[METRICS_END_BACKEND_FAILED] = "backend_failed",
	[METRICS_END_BACKEND_CLOSED] = "backend_closed",
	[METRICS_END_UPSTREAM_FAILED] = "upstream_failed",
	[METRICS_END_PROXY_ERROR] = "proxy_error",
	[METRICS_END_REFUSED_LIMIT] = "refused_limit",
	[METRICS_END_SHUTDOWN] = "shutdown",
	[METRICS_END_OTHER] = "other",
};

/* Upper bounds of the backend connect histogram, in seconds: loopback
 * connects take tens of microseconds, a remote one milliseconds, a stalled
 * one reaches the backend_connect timeout. */
static const double buckets[METRICS_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 1, 2.5, 10,
};

/* An append-only table of names. Entries below n never change: a reader
 * that loads n (acquire) may read them without a lock; writers serialise
 * on the mutex. */
struct names {
	pthread_mutex_t	 lock;
	_Atomic int	 n;
	char		 name[METRICS_SLOTS - 1][METRICS_NAME];
};

static struct names listener_names = { .lock = PTHREAD_MUTEX_INITIALIZER };
static struct names backend_names = { .lock = PTHREAD_MUTEX_INITIALIZER };
static _Atomic uint64_t reloads[2];	/* failed, ok */

static int
names_find(const struct names *t, int n, const char *name)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcmp(t->name[i], name) == 0)
			return (i);
	return (-1);
}

static int
names_slot(struct names *t, const char *name)
{
	int n, i;

	n = atomic_load_explicit(&t->n, memory_order_acquire);
	if ((i = names_find(t, n, name)) != -1)
		return (i);
	/* Once the table is full, an unknown name costs no lock. */
	if (n == METRICS_SLOTS - 1)
		return (METRICS_SLOTS - 1);
	pthread_mutex_lock(&t->lock);
	n = atomic_load_explicit(&t->n, memory_order_relaxed);
	if ((i = names_find(t, n, name)) == -1) {
		if (n < METRICS_SLOTS - 1 && strlen(name) < METRICS_NAME) {
			strcpy(t->name[n], name);
			atomic_store_explicit(&t->n, n + 1, memory_order_release);
			i = n;
		} else
			i = METRICS_SLOTS - 1;	/* "_other" */
	}
	pthread_mutex_unlock(&t->lock);
	return (i);
}

int
metrics_listener_slot(const char *name)
{
	return (names_slot(&listener_names, name));
}

int
metrics_backend_slot(const char *text)
{
	return (names_slot(&backend_names, text));
}

void
metrics_upstream_text(char *out, size_t len, const char *host, long port)
{
	snprintf(out, len, "%s:%ld", host, port);
}

void
metrics_register(const struct config *c)
{
	const struct config_listener *cl;
	const struct config_upstream *u;
	char text[METRICS_NAME];
	int i, j;

	for (i = 0; i < c->nlisteners; i++) {
		cl = &c->listeners[i];
		metrics_listener_slot(cl->name);
		if (cl->mode != CONFIG_MODE_EGRESS) {
			metrics_backend_slot(cl->backend.len ? cl->backend.text :
			    c->backend.text);
			continue;
		}
		u = &c->upstreams[cl->upstream];
		for (j = 0; j < u->nports; j++) {
			metrics_upstream_text(text, sizeof(text), u->host,
			    u->ports[j]);
			metrics_backend_slot(text);
		}
	}
}

void
metrics_reload(int ok)
{
	/* Reloads may come from any thread: a real read-modify-write. */
	atomic_fetch_add_explicit(&reloads[ok != 0], 1, memory_order_relaxed);
}

/* Hooks */

static struct metrics_listener *
ml(const struct listener *l)
{
	return (&l->w->metrics.listeners[l->mslot]);
}

void
metrics_refused(const struct listener *l, enum metrics_refusal why)
{
	metrics_add(&ml(l)->refused[why], 1);
}

enum metrics_refusal
metrics_refusal_ip(enum iptable_verdict v)
{
	return (v == IPTABLE_TOO_FAST ? METRICS_REFUSED_PER_IP_RATE :
	    METRICS_REFUSED_PER_IP_CONNECTIONS);
}

void
metrics_session_open(struct session *s)
{
	metrics_add(&ml(s->l)->opened, 1);
}

void
metrics_session_sync(struct session *s)
{
	struct metrics_listener *m = ml(s->l);
	struct metrics_mark *k = &s->metrics;
	int i;

	metrics_add(&m->bytes_in, s->client.bytes_in - k->bytes_in);
	metrics_add(&m->bytes_out, s->client.bytes_out - k->bytes_out);
	metrics_add(&m->messages, s->smtp.messages - k->messages);
	k->bytes_in = s->client.bytes_in;
	k->bytes_out = s->client.bytes_out;
	k->messages = s->smtp.messages;
	for (i = 1; i <= 5; i++) {
		metrics_add(&m->replies[i - 1], s->smtp.replies[i] -
		    k->replies[i]);
		k->replies[i] = s->smtp.replies[i];
	}
}

/* The index of (version, cipher) in this worker's kinds, adding it when
 * there is room; METRICS_TLS_KINDS ("other") when there is none. */
static unsigned
tls_kind(struct metrics *m, const char *version, const char *cipher)
{
	unsigned i, n = atomic_load_explicit(&m->ntls, memory_order_relaxed);
	struct metrics_tls_kind *k;

	for (i = 0; i < n; i++)
		if (strcmp(m->tls_kinds[i].version, version) == 0 &&
		    strcmp(m->tls_kinds[i].cipher, cipher) == 0)
			return (i);
	if (n == METRICS_TLS_KINDS || strlen(version) >= sizeof(k->version) ||
	    strlen(cipher) >= sizeof(k->cipher))
		return (METRICS_TLS_KINDS);
	k = &m->tls_kinds[n];
	strcpy(k->version, version);
	strcpy(k->cipher, cipher);
	/* Publish the entry: a reader that sees n + 1 sees its names. */
	atomic_store_explicit(&m->ntls, n + 1, memory_order_release);
	return (n);
}

void
metrics_tls_done(struct session *s)
{
	struct metrics_listener *m = ml(s->l);

	metrics_add(&m->tls[tls_kind(&s->w->metrics, s->tls_version,
	    s->tls_cipher)], 1);
	if (SSL_session_reused(s->client.ssl))
		metrics_add(&m->resumed, 1);
	if (s->l->smtp.mode != SMTP_MODE_IMPLICIT)
		metrics_add(&m->starttls, 1);
}

void
metrics_connect_begin(struct session *s)
{
	s->metrics.connect_t0 = ev_time();
	if (!s->backend.connecting)
		metrics_connect_end(s, 1);
}

void
metrics_connect_end(struct session *s, int ok)
{
	struct metrics_backend *b;
	double d;
	int i;

	b = &s->w->metrics.backends[s->metrics.backend];
	if (!ok) {
		metrics_add(&b->failures, 1);
		return;
	}
	d = ev_time() - s->metrics.connect_t0;
	if (d < 0)
		d = 0;
	for (i = 0; i < METRICS_BUCKETS && d > buckets[i]; i++)
		;
	metrics_add(&b->buckets[i], 1);
	metrics_add(&b->sum_ns, (uint64_t)(d * 1e9));
}

/* Close reasons given as fixed texts (smtp.c, session.c); the tracker's
 * aborts are mapped by their enum below. */
static const struct {
	const char		*reason;
	enum metrics_end	 end;
} end_texts[] = {
	{ "quit", METRICS_END_QUIT },
	{ "client closed", METRICS_END_CLIENT_CLOSED },
	{ "client closed during message", METRICS_END_CLIENT_CLOSED },
	{ "too many errors", METRICS_END_TOO_MANY_ERRORS },
	{ "bare CR or LF in message body", METRICS_END_MESSAGE_REJECTED },
	{ "backend sent 421", METRICS_END_BACKEND_CLOSED },
	{ "no PROXY header in time", METRICS_END_TIMEOUT },
	{ "closed before its PROXY header", METRICS_END_PROXY_ERROR },
	{ "invalid PROXY header", METRICS_END_PROXY_ERROR },
	{ "cannot read the PROXY header", METRICS_END_PROXY_ERROR },
};

static const enum metrics_end abort_ends[ABORT_MAX] = {
	[ABORT_TIMEOUT] = METRICS_END_TIMEOUT,
	[ABORT_BACKEND_DOWN] = METRICS_END_BACKEND_FAILED,
	[ABORT_BACKEND_CLOSED] = METRICS_END_BACKEND_CLOSED,
	[ABORT_BACKEND_TIMEOUT] = METRICS_END_BACKEND_FAILED,
	[ABORT_BACKEND_PROTOCOL] = METRICS_END_BACKEND_FAILED,
	[ABORT_BACKEND_REFUSED] = METRICS_END_BACKEND_FAILED,
	[ABORT_BACKEND_XCLIENT] = METRICS_END_BACKEND_FAILED,
	[ABORT_UPSTREAM] = METRICS_END_UPSTREAM_FAILED,
	[ABORT_SHUTDOWN] = METRICS_END_SHUTDOWN,
};

enum metrics_end
metrics_end_reason(const char *reason, int handshaking,
    const char *client_error)
{
	size_t i;

	if (reason == NULL)
		return (METRICS_END_OTHER);
	if (strcmp(reason, smtp_abort_names[ABORT_SHUTDOWN]) == 0)
		return (METRICS_END_SHUTDOWN);
	if (handshaking)
		return (METRICS_END_TLS_FAILED);
	for (i = 0; i < ABORT_MAX; i++)
		if (strcmp(reason, smtp_abort_names[i]) == 0)
			return (abort_ends[i]);
	for (i = 0; i < sizeof(end_texts) / sizeof(end_texts[0]); i++)
		if (strcmp(reason, end_texts[i].reason) == 0)
			return (end_texts[i].end);
	if (strcmp(reason, iptable_refusal(IPTABLE_TOO_MANY)) == 0 ||
	    strcmp(reason, iptable_refusal(IPTABLE_TOO_FAST)) == 0)
		return (METRICS_END_REFUSED_LIMIT);
	if (client_error != NULL && strcmp(reason, client_error) == 0)
		return (METRICS_END_CLIENT_ERROR);
	return (METRICS_END_OTHER);
}

/* OpenSSL's reason texts (ERR_reason_error_string) that name a handshake
 * failure we count apart; everything else from OpenSSL is "other". */
static const struct {
	const char		*text;
	enum metrics_hs_failure	 why;
} hs_texts[] = {
	{ "no shared cipher", METRICS_HS_NO_SHARED_CIPHER },
	{ "unsupported protocol", METRICS_HS_VERSION },
	{ "version too low", METRICS_HS_VERSION },
	{ "protocol version", METRICS_HS_VERSION },
	{ "wrong version number", METRICS_HS_NOT_TLS },
	{ "http request", METRICS_HS_NOT_TLS },
	{ "packet length too long", METRICS_HS_NOT_TLS },
	{ "record layer failure", METRICS_HS_NOT_TLS },
	{ "unexpected eof", METRICS_HS_CLOSED },
	{ "peer closed", METRICS_HS_CLOSED },
};

enum metrics_hs_failure
metrics_hs_reason(const char *reason)
{
	size_t i;

	if (reason == NULL)
		return (METRICS_HS_OTHER);
	if (strcmp(reason, "TLS handshake timeout") == 0)
		return (METRICS_HS_TIMEOUT);
	if (strcmp(reason, smtp_abort_names[ABORT_SHUTDOWN]) == 0)
		return (METRICS_HS_SHUTDOWN);
	for (i = 0; i < sizeof(hs_texts) / sizeof(hs_texts[0]); i++)
		if (strcasestr(reason, hs_texts[i].text) != NULL)
			return (hs_texts[i].why);
	/* Not an OpenSSL error: the socket's (a reset, a broken pipe). */
	if (strstr(reason, "routines:") == NULL)
		return (METRICS_HS_CLOSED);
	return (METRICS_HS_OTHER);
}

void
metrics_session_close(struct session *s, const char *reason)
{
	struct metrics_listener *m = ml(s->l);
	int hs = s->client.handshaking;

	metrics_session_sync(s);
	metrics_add(&m->ended[metrics_end_reason(reason, hs,
	    s->client.failed ? s->client.error : NULL)], 1);
	if (hs)
		metrics_add(&m->hs_failed[metrics_hs_reason(reason)], 1);
	metrics_add(&m->closed, 1);
}

/* Rendering */

/* A growing output buffer; failed once memory ran short. */
struct out {
	char	*p;
	size_t	 len, cap;
	int	 failed;
};

static void __attribute__((format(printf, 2, 3)))
out_printf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	char *np;
	int n;

	for (;;) {
		if (o->failed)
			return;
		room = o->cap - o->len;
		va_start(ap, fmt);
		n = vsnprintf(o->p + o->len, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			o->len += (size_t)n;
			return;
		}
		if ((np = realloc(o->p, o->cap * 2 + (size_t)n)) == NULL) {
			o->failed = 1;
			return;
		}
		o->p = np;
		o->cap = o->cap * 2 + (size_t)n;
	}
}

/* A label value with \, " and newline escaped (the text format's rule). */
static const char *
esc(const char *v, char *buf, size_t len)
{
	size_t j = 0;

	for (; *v != '\0' && j + 3 < len; v++) {
		if (*v == '\\' || *v == '"' || *v == '\n') {
			buf[j++] = '\\';
			buf[j++] = *v == '\n' ? 'n' : *v;
		} else
			buf[j++] = *v;
	}
	buf[j] = '\0';
	return (buf);
}

static void
family(struct out *o, const char *name, const char *type, const char *help)
{
	out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The names of a table's slots in use, "_other" last when it filled up. */
static int
names_snapshot(struct names *t, const char **names)
{
	int i, n = atomic_load_explicit(&t->n, memory_order_acquire);

	for (i = 0; i < n; i++)
		names[i] = t->name[i];
	if (n == METRICS_SLOTS - 1)
		names[n++] = "_other";
	return (n);
}

static uint64_t
ld(_Atomic uint64_t *c)
{
	return (atomic_load_explicit(c, memory_order_relaxed));
}

/* Sum of one listener counter (at byte offset off) over the workers. */
static uint64_t
sum_l(struct worker *const *ws, int n, int slot, size_t off)
{
	uint64_t t = 0;
	int i;

	for (i = 0; i < n; i++)
		t += ld((_Atomic uint64_t *)((char *)&ws[i]->metrics.listeners[slot]
		    + off));
	return (t);
}

static uint64_t
sum_b(struct worker *const *ws, int n, int slot, size_t off)
{
	uint64_t t = 0;
	int i;

	for (i = 0; i < n; i++)
		t += ld((_Atomic uint64_t *)((char *)&ws[i]->metrics.backends[slot]
		    + off));
	return (t);
}

/* Sessions open on listener slot now. Opened and closed are read at
 * different moments (and written with relaxed stores), so a session that
 * opened and closed in between could make a worker's difference negative:
 * closed is read first and the difference kept at 0 or more. */
static uint64_t
open_sessions(struct worker *const *ws, int n, int slot)
{
	uint64_t t = 0, opened, closed;
	int i;

	for (i = 0; i < n; i++) {
		closed = ld(&ws[i]->metrics.listeners[slot].closed);
		opened = ld(&ws[i]->metrics.listeners[slot].opened);
		t += opened > closed ? opened - closed : 0;
	}
	return (t);
}

#define LOFF(f)	offsetof(struct metrics_listener, f)
#define BOFF(f)	offsetof(struct metrics_backend, f)

/* One line per listener of a counter without further labels. */
static void
per_listener(struct out *o, struct worker *const *ws, int n,
    const char **lnames, int nl, const char *name, size_t off)
{
	char e[2 * METRICS_NAME];
	int s;

	for (s = 0; s < nl; s++)
		out_printf(o, "%s{listener=\"%s\"} %llu\n", name,
		    esc(lnames[s], e, sizeof(e)),
		    (unsigned long long)sum_l(ws, n, s, off));
}

/* One line per listener and value of an enum label (nv values, the
 * counters at off, off + 8, ...). */
static void
per_listener_enum(struct out *o, struct worker *const *ws, int n,
    const char **lnames, int nl, const char *name, const char *label,
    const char *const *values, int nv, size_t off)
{
	char e[2 * METRICS_NAME];
	int s, v;

	for (s = 0; s < nl; s++)
		for (v = 0; v < nv; v++)
			out_printf(o, "%s{listener=\"%s\",%s=\"%s\"} %llu\n", name,
			    esc(lnames[s], e, sizeof(e)), label, values[v],
			    (unsigned long long)sum_l(ws, n, s, off +
			    (size_t)v * sizeof(_Atomic uint64_t)));
}

/* The TLS handshakes by listener, version and cipher: the workers' kinds
 * merged by name, each listed only where it has a count. */
static void
tls_handshakes(struct out *o, struct worker *const *ws, int n,
    const char **lnames, int nl)
{
	static const struct metrics_tls_kind other = { "other", "other" };
	const struct metrics_tls_kind **kinds;
	char e1[2 * METRICS_NAME], e2[160], e3[160];
	unsigned nk = 0, k, j, cnt;
	int i, s, *map;
	uint64_t t;

	kinds = calloc((size_t)n * METRICS_TLS_KINDS + 1, sizeof(*kinds));
	map = calloc((size_t)n * ((size_t)n * METRICS_TLS_KINDS + 1),
	    sizeof(*map));
	if (kinds == NULL || map == NULL) {
		o->failed = 1;
		goto out;
	}
	/* map[i * maxk + k]: worker i's index of merged kind k, or -1. */
	for (i = 0; i < n; i++) {
		cnt = atomic_load_explicit(&ws[i]->metrics.ntls,
		    memory_order_acquire);
		for (j = 0; j < cnt; j++) {
			const struct metrics_tls_kind *tk =
			    &ws[i]->metrics.tls_kinds[j];

			for (k = 0; k < nk; k++)
				if (strcmp(kinds[k]->version, tk->version) == 0 &&
				    strcmp(kinds[k]->cipher, tk->cipher) == 0)
					break;
			if (k == nk)
				kinds[nk++] = tk;
		}
	}
	kinds[nk++] = &other;
	for (i = 0; i < n; i++) {
		cnt = atomic_load_explicit(&ws[i]->metrics.ntls,
		    memory_order_acquire);
		for (k = 0; k < nk; k++) {
			map[(size_t)i * nk + k] = k == nk - 1 ?
			    METRICS_TLS_KINDS : -1;
			for (j = 0; j < cnt && k < nk - 1; j++)
				if (strcmp(kinds[k]->version,
				    ws[i]->metrics.tls_kinds[j].version) == 0 &&
				    strcmp(kinds[k]->cipher,
				    ws[i]->metrics.tls_kinds[j].cipher) == 0)
					map[(size_t)i * nk + k] = (int)j;
		}
	}
	for (s = 0; s < nl; s++) {
		for (k = 0; k < nk; k++) {
			t = 0;
			for (i = 0; i < n; i++)
				if (map[(size_t)i * nk + k] != -1)
					t += ld(&ws[i]->metrics.listeners[s].tls[
					    map[(size_t)i * nk + k]]);
			if (t == 0)
				continue;
			out_printf(o, "smtpgate_tls_handshakes_total{listener="
			    "\"%s\",version=\"%s\",cipher=\"%s\"} %llu\n",
			    esc(lnames[s], e1, sizeof(e1)),
			    esc(kinds[k]->version, e2, sizeof(e2)),
			    esc(kinds[k]->cipher, e3, sizeof(e3)),
			    (unsigned long long)t);
		}
	}
out:
	free(kinds);
	free(map);
}

static void
backend_histograms(struct out *o, struct worker *const *ws, int n,
    const char **bnames, int nb)
{
	char e[2 * METRICS_NAME];
	uint64_t cum;
	int s, i;

	family(o, "smtpgate_backend_connect_seconds", "histogram",
	    "Time from connect() to a connected backend socket, successful "
	    "connects only.");
	for (s = 0; s < nb; s++) {
		esc(bnames[s], e, sizeof(e));
		cum = 0;
		for (i = 0; i <= METRICS_BUCKETS; i++) {
			cum += sum_b(ws, n, s, BOFF(buckets) +
			    (size_t)i * sizeof(_Atomic uint64_t));
			if (i < METRICS_BUCKETS)
				out_printf(o, "smtpgate_backend_connect_seconds_"
				    "bucket{backend=\"%s\",le=\"%g\"} %llu\n", e,
				    buckets[i], (unsigned long long)cum);
			else
				out_printf(o, "smtpgate_backend_connect_seconds_"
				    "bucket{backend=\"%s\",le=\"+Inf\"} %llu\n", e,
				    (unsigned long long)cum);
		}
		out_printf(o, "smtpgate_backend_connect_seconds_sum{backend="
		    "\"%s\"} %.9f\n", e, (double)sum_b(ws, n, s, BOFF(sum_ns)) /
		    1e9);
		/* The count is the +Inf bucket: from the same reads. */
		out_printf(o, "smtpgate_backend_connect_seconds_count{backend="
		    "\"%s\"} %llu\n", e, (unsigned long long)cum);
	}
	family(o, "smtpgate_backend_connect_failures_total", "counter",
	    "Backend connects that failed or timed out.");
	for (s = 0; s < nb; s++)
		out_printf(o, "smtpgate_backend_connect_failures_total{backend="
		    "\"%s\"} %llu\n", esc(bnames[s], e, sizeof(e)),
		    (unsigned long long)sum_b(ws, n, s, BOFF(failures)));
}

char *
metrics_render(struct worker *const *ws, int n, const char *version,
    size_t *len_r)
{
	static const char *const classes[] = { "1xx", "2xx", "3xx", "4xx",
	    "5xx" };
	static const char *const directions[] = { "in", "out" };
	const char *lnames[METRICS_SLOTS], *bnames[METRICS_SLOTS];
	struct out o = { NULL, 0, 8192, 0 };
	char e[2 * METRICS_NAME];
	int nl, nb, s;

	if ((o.p = malloc(o.cap)) == NULL)
		return (NULL);
	nl = names_snapshot(&listener_names, lnames);
	nb = names_snapshot(&backend_names, bnames);

	family(&o, "smtpgate_build_info", "gauge",
	    "The running smtpgate: version and OpenSSL library.");
	out_printf(&o, "smtpgate_build_info{version=\"%s\",openssl=\"%s\"} 1\n",
	    esc(version, e, sizeof(e)), OpenSSL_version(OPENSSL_VERSION));
	family(&o, "smtpgate_reloads_total", "counter",
	    "Configuration reloads, applied (ok) or refused (failed).");
	out_printf(&o, "smtpgate_reloads_total{result=\"ok\"} %llu\n"
	    "smtpgate_reloads_total{result=\"failed\"} %llu\n",
	    (unsigned long long)atomic_load(&reloads[1]),
	    (unsigned long long)atomic_load(&reloads[0]));

	family(&o, "smtpgate_connections_total", "counter",
	    "Client connections accepted as sessions.");
	per_listener(&o, ws, n, lnames, nl, "smtpgate_connections_total",
	    LOFF(opened));
	family(&o, "smtpgate_connections_open", "gauge",
	    "Client sessions open now.");
	for (s = 0; s < nl; s++)
		out_printf(&o, "smtpgate_connections_open{listener=\"%s\"} %llu\n",
		    esc(lnames[s], e, sizeof(e)),
		    (unsigned long long)open_sessions(ws, n, s));
	family(&o, "smtpgate_connections_refused_total", "counter",
	    "Client connections refused over a limit (with a 421) or from "
	    "outside trusted_proxies.");
	per_listener_enum(&o, ws, n, lnames, nl,
	    "smtpgate_connections_refused_total", "reason",
	    metrics_refusal_names, METRICS_REFUSED_MAX, LOFF(refused));

	family(&o, "smtpgate_tls_handshakes_total", "counter",
	    "Client TLS handshakes completed, by version and cipher.");
	tls_handshakes(&o, ws, n, lnames, nl);
	family(&o, "smtpgate_tls_resumed_total", "counter",
	    "Client TLS handshakes that resumed a session.");
	per_listener(&o, ws, n, lnames, nl, "smtpgate_tls_resumed_total",
	    LOFF(resumed));
	family(&o, "smtpgate_tls_handshake_failures_total", "counter",
	    "Client TLS handshakes that failed, by reason.");
	per_listener_enum(&o, ws, n, lnames, nl,
	    "smtpgate_tls_handshake_failures_total", "reason", metrics_hs_names,
	    METRICS_HS_MAX, LOFF(hs_failed));
	family(&o, "smtpgate_starttls_total", "counter",
	    "STARTTLS upgrades completed (handshake done).");
	per_listener(&o, ws, n, lnames, nl, "smtpgate_starttls_total",
	    LOFF(starttls));

	family(&o, "smtpgate_messages_total", "counter",
	    "Messages the backend acknowledged.");
	per_listener(&o, ws, n, lnames, nl, "smtpgate_messages_total",
	    LOFF(messages));
	family(&o, "smtpgate_bytes_total", "counter",
	    "Client application bytes (after TLS): in from, out to the client.");
	per_listener_enum(&o, ws, n, lnames, nl, "smtpgate_bytes_total",
	    "direction", directions, 2, LOFF(bytes_in));
	family(&o, "smtpgate_replies_total", "counter",
	    "SMTP replies sent to clients, by class.");
	per_listener_enum(&o, ws, n, lnames, nl, "smtpgate_replies_total",
	    "class", classes, 5, LOFF(replies));
	family(&o, "smtpgate_sessions_ended_total", "counter",
	    "Sessions ended, by reason.");
	per_listener_enum(&o, ws, n, lnames, nl, "smtpgate_sessions_ended_total",
	    "reason", metrics_end_names, METRICS_END_MAX, LOFF(ended));

	backend_histograms(&o, ws, n, bnames, nb);

	if (o.failed) {
		free(o.p);
		return (NULL);
	}
	*len_r = o.len;
	return (o.p);
}
