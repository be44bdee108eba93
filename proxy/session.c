/*
 * A session drives its two endpoints and its tracker. Every event ends in
 * session_step(), which lets the tracker work, flushes what it produced, acts
 * on its flags and then derives the watchers and the timer from the state,
 * so no state lives only in which watchers happen to be running.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../config/config.h"
#include "../tls/tls.h"
#include "gen.h"
#include "iptable.h"
#include "listener.h"
#include "log.h"
#include "proxyproto.h"
#include "session.h"
#include "worker.h"

/* Each buffer holds a 16 KB TLS record or more; the tracker's limits
 * (CONFIG_MAX_LINE_MAX, SMTP_REPLY_MAX) must fit in one. Messages flow
 * client to backend only, so that direction's buffers are four records
 * long: a quarter of the reads, writes and wakeups per megabyte. Buffers
 * are allocated while bytes are in them only. */
#define SESSION_BUF		(16 * 1024 + 512)
#define SESSION_BULK_BUF	(64 * 1024 + 512)
/* Room for a backend's name: an upstream's host name and a port. */
#define BACKEND_NAME		300
/* How long a closing session may take to flush its last reply. */
#define SESSION_CLOSE_GRACE	5.0

static void	io_cb(struct ev_loop *, ev_io *, int);
static void	timer_cb(struct ev_loop *, ev_timer *, int);

static void
smtp_log(void *arg, enum smtp_log_level lvl, const char *msg)
{
	struct session *s = arg;
	static const enum log_level map[] = {
		[SMTP_LOG_WARN] = LOG_WARN, [SMTP_LOG_INFO] = LOG_INFO,
		[SMTP_LOG_DEBUG] = LOG_DEBUG,
	};

	log_msg(map[lvl], "session=%llu %s", (unsigned long long)s->id, msg);
}

static void
io_init(struct session *s, struct smtp_io *io)
{
	io->client_in = &s->client.in;
	io->backend_in = &s->backend.in;
	io->to_client = &s->client.out;
	io->to_backend = &s->backend.out;
	io->client_eof = s->client.eof;
	/* A backend that is not there yet has not closed. */
	io->backend_eof = s->backend.fd != -1 && !s->backend.connecting &&
	    (s->backend.eof || s->backend.failed);
}

void
session_format_addr(const struct sockaddr *sa, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(out, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(out, len, "[%s]:%u", host, port);
	} else {
		snprintf(out, len, "unknown");
	}
}

static void
nodelay(int fd)
{
	int one = 1;

	/* Replies are small and latency-bound; coalescing only delays them. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The PROXY header that tells the backend who the client is, first on the
 * backend connection. Version 2 carries the client's TLS, so while a
 * STARTTLS handshake is under way it waits for the handshake's end. */
static void
identity_header(struct session *s)
{
	struct proxyproto_tls tls = { s->tls_version, s->tls_cipher,
	    s->sni[0] ? s->sni : NULL };
	unsigned char hdr[PROXYPROTO_MAX];
	struct smtp_io io;
	size_t n;
	int r;

	if (s->l->identity == CONFIG_ID_PROXY_V1)
		r = proxyproto_v1((char *)hdr, sizeof(hdr),
		    (struct sockaddr *)&s->peer_sa,
		    (struct sockaddr *)&s->local_sa, &n);
	else if (s->l->identity != CONFIG_ID_PROXY_V2)
		return;
	else if (s->l->smtp.mode == SMTP_MODE_STARTTLS &&
	    (s->client.ssl == NULL || s->client.handshaking)) {
		/* Connected when STARTTLS was accepted: the handshake is
		 * still to come. */
		s->identity_pending = 1;
		return;
	} else
		r = proxyproto_v2(hdr, sizeof(hdr), (struct sockaddr *)&s->peer_sa,
		    (struct sockaddr *)&s->local_sa, s->tls_version ? &tls : NULL,
		    &n);
	s->identity_pending = 0;
	if (r == -1 && tls.sni != NULL) {
		/* A server name the header cannot carry (the client chose it)
		 * is left out rather than the header. */
		tls.sni = NULL;
		r = proxyproto_v2(hdr, sizeof(hdr), (struct sockaddr *)&s->peer_sa,
		    (struct sockaddr *)&s->local_sa, &tls, &n);
	}
	/* Nothing else was written to the backend yet: it greets only after
	 * the header. Without one it must not be spoken to at all. */
	if (r == -1 || buf_append(&s->backend.out, hdr, n) == -1) {
		log_msg(LOG_ERROR, "session=%llu cannot encode the PROXY header",
		    (unsigned long long)s->id);
		io_init(s, &io);
		smtp_abort(&s->smtp, &io, ABORT_BACKEND_DOWN);
	}
}

/* Egress: the index into the upstream's ports of the port_try-th port to
 * try: the one that last worked first, then the others in order. */
static int
port_index(const struct session *s)
{
	int pref = s->port_first, i = s->port_try - 1;

	if (s->port_try == 0)
		return (pref);
	return (i >= pref ? i + 1 : i);
}

/* The backend's address, for logs and metrics: the upstream's host and
 * the port being tried (egress), or the backend's own text. */
static const char *
backend_name(const struct session *s, char *buf, size_t len)
{
	const struct config_upstream *u = s->l->upstream;

	if (u == NULL)
		return (s->l->backend->text);
	metrics_upstream_text(buf, len, u->host, u->ports[port_index(s)]);
	return (buf);
}

/* Egress: whether the port being tried speaks TLS from its first byte. */
static int
port_implicit(const struct session *s)
{
	const struct config_upstream *u = s->l->upstream;

	return (u->tls == CONFIG_UP_IMPLICIT || (u->tls == CONFIG_UP_AUTO &&
	    u->ports[port_index(s)] == 465));
}

/* Egress: move on to the next port, for a connect failure or timeout only
 * (a blocked port); never for a TLS failure, which would be a downgrade.
 * Returns 0 when none is left. */
static int
next_port(struct session *s)
{
	if (s->l->upstream == NULL || s->port_try + 1 >= s->l->upstream->nports)
		return (0);
	s->port_try++;
	return (1);
}

/* Start connecting to the backend, or the upstream on the next port that
 * can be tried. Returns 0, or -1 (logged) when none is left. */
static int
backend_connect(struct session *s)
{
	const struct config_upstream *u = s->l->upstream;
	struct sockaddr_storage ss;
	socklen_t len;
	char buf[BACKEND_NAME];
	const char *name;
	int fd;

	do {
		if (u != NULL) {
			len = config_upstream_addr(u, u->ports[port_index(s)],
			    &ss);
		} else {
			memcpy(&ss, &s->l->backend->ss, sizeof(ss));
			len = s->l->backend->len;
		}
		name = backend_name(s, buf, sizeof(buf));
		/* The name lookup is a few string compares: cheap next to
		 * the connect() it comes with. */
		s->metrics.backend = metrics_backend_slot(name);
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (fd == -1) {
			log_msg(LOG_ERROR, "session=%llu backend %s: socket: %s",
			    (unsigned long long)s->id, name, strerror(errno));
			return (-1);
		}
		nodelay(fd);
		if (connect(fd, (struct sockaddr *)&ss, len) == 0 ||
		    errno == EINPROGRESS) {
			s->backend.connecting = errno == EINPROGRESS;
			endpoint_set_fd(&s->backend, fd);
			metrics_connect_begin(s);
			identity_header(s);
			return (0);
		}
		log_msg(LOG_WARN, "session=%llu backend %s: %s",
		    (unsigned long long)s->id, name, strerror(errno));
		metrics_connect_end(s, 0);
		close(fd);
	} while (next_port(s));
	return (-1);
}

/* The connection to the backend failed (error or timeout): try the next
 * upstream port, or give up with 421. */
static void
backend_failed(struct session *s, const char *why)
{
	struct smtp_io io;
	char buf[BACKEND_NAME];

	log_msg(LOG_WARN, "session=%llu backend %s: %s", (unsigned long long)s->id,
	    backend_name(s, buf, sizeof(buf)), why);
	endpoint_fini(&s->backend, s->w->loop);
	if (next_port(s) && backend_connect(s) == 0)
		return;
	io_init(s, &io);
	smtp_abort(&s->smtp, &io, ABORT_BACKEND_DOWN);
}

/* The upstream's TLS handshake made progress (egress). */
static void
backend_handshake(struct session *s)
{
	struct smtp_io io;
	char buf[BACKEND_NAME];
	long v;
	int r;

	if ((r = endpoint_handshake(&s->backend)) == 0)
		return;
	io_init(s, &io);
	if (r == -1) {
		v = SSL_get_verify_result(s->backend.ssl);
		log_msg(LOG_WARN, "session=%llu upstream %s: %s%s%s",
		    (unsigned long long)s->id, backend_name(s, buf,
		    sizeof(buf)), s->backend.error,
		    v != X509_V_OK ? ": " : "", v != X509_V_OK ?
		    X509_verify_cert_error_string(v) : "");
		smtp_abort(&s->smtp, &io, ABORT_UPSTREAM);
		return;
	}
	s->up_tls = SSL_get_version(s->backend.ssl);
	smtp_backend_tls_done(&s->smtp, &io);
}

/* Egress: secure the upstream connection (at once on an implicit port,
 * after the 220 to STARTTLS otherwise). */
static void
backend_start_tls(struct session *s)
{
	const struct config_upstream *u = s->l->upstream;
	struct smtp_io io;

	if (endpoint_start_tls(&s->backend, s->l->gen->up_ctx[s->l->conf->upstream],
	    u->server_name ? u->server_name : u->host) == -1) {
		io_init(s, &io);
		smtp_abort(&s->smtp, &io, ABORT_UPSTREAM);
		return;
	}
	backend_handshake(s);
}

/* The backend socket became writable while connecting. */
static void
backend_connected(struct session *s)
{
	socklen_t len = sizeof(int);
	int err = 0;

	if (getsockopt(s->backend.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	s->backend.connecting = 0;
	metrics_connect_end(s, err == 0);
	if (err != 0)
		backend_failed(s, strerror(err));
	else if (s->l->upstream != NULL && port_implicit(s))
		backend_start_tls(s);
}

/* The client's handshake made progress. Returns a reason to close, or NULL. */
static const char *
client_handshake(struct session *s)
{
	struct smtp_io io;
	const char *sni;
	int r;

	if ((r = endpoint_handshake(&s->client)) == -1)
		return (s->client.error);
	if (r == 0)
		return (NULL);
	s->tls_version = SSL_get_version(s->client.ssl);
	s->tls_cipher = SSL_get_cipher_name(s->client.ssl);
	if ((sni = SSL_get_servername(s->client.ssl,
	    TLSEXT_NAMETYPE_host_name)) != NULL)
		snprintf(s->sni, sizeof(s->sni), "%s", sni);
	metrics_tls_done(s);
	s->client_cert = tls_client_subject(s->client.ssl);
	if (s->identity_pending)
		identity_header(s);
	io_init(s, &io);
	smtp_tls_done(&s->smtp, &io);
	return (NULL);
}

static int
client_reading(const struct session *s)
{
	return (s->awaiting_proxy || (smtp_wants_client_input(&s->smtp) &&
	    !s->smtp.want_close));
}

/*
 * Serve the client: count it against the per-IP limits (by the address a
 * PROXY header named, if any), greet it or start its TLS. Returns a reason
 * to close, or NULL.
 */
static const char *
session_begin(struct session *s)
{
	struct smtp_io io;
	enum iptable_verdict v;

	if (s->l->conf->accept_proxy) {
		v = worker_ip_acquire(s->w, (struct sockaddr *)&s->peer_sa,
		    &s->ip_counted);
		if (v != IPTABLE_OK) {
			listener_refuse(s->l, s->client.fd, iptable_refusal(v));
			metrics_refused(s->l, metrics_refusal_ip(v));
			return (iptable_refusal(v));
		}
	}
	smtp_set_identity(&s->smtp, (struct sockaddr *)&s->peer_sa,
	    (struct sockaddr *)&s->local_sa);
	io_init(s, &io);
	smtp_start(&s->smtp, &io);
	if (s->l->smtp.mode == SMTP_MODE_IMPLICIT &&
	    endpoint_start_tls(&s->client, s->l->gen->ctx[s->l->index],
	    NULL) == -1)
		return ("cannot start TLS");
	return (NULL);
}

static void
set_rcvlowat(int fd, int n)
{
	setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &n, sizeof(n));
}

/*
 * The PROXY header a load balancer sends before the client's first byte.
 * It is read with MSG_PEEK and then exactly its length is taken, so the TLS
 * ClientHello behind it stays in the socket for OpenSSL. The header's
 * addresses become the session's. Returns a reason to close, or NULL.
 */
static const char *
proxy_header(struct session *s)
{
	unsigned char buf[PROXYPROTO_MAX];
	struct proxyproto_hdr h;
	size_t used;
	ssize_t n;
	int r;

	n = recv(s->client.fd, buf, sizeof(buf), MSG_PEEK);
	if (n == 0)
		return ("closed before its PROXY header");
	if (n == -1)
		return (errno == EAGAIN || errno == EINTR ? NULL :
		    strerror(errno));
	r = proxyproto_parse(buf, (size_t)n, s->l->conf->accept_proxy, &h,
	    &used);
	if (r == -1)
		return ("invalid PROXY header");
	if (r == 0) {
		/* The peeked bytes stay readable: wake up only once more
		 * have come. */
		set_rcvlowat(s->client.fd, (int)n + 1);
		return (NULL);
	}
	if (recv(s->client.fd, buf, used, 0) != (ssize_t)used)
		return ("cannot read the PROXY header");
	set_rcvlowat(s->client.fd, 1);
	s->awaiting_proxy = 0;
	s->client.bytes_in += used;
	if (h.family != AF_UNSPEC) {
		memcpy(s->via, s->peer, sizeof(s->via));
		memcpy(&s->peer_sa, &h.src, sizeof(s->peer_sa));
		memcpy(&s->local_sa, &h.dst, sizeof(s->local_sa));
		session_format_addr((struct sockaddr *)&s->peer_sa, s->peer,
		    sizeof(s->peer));
	}
	log_msg(LOG_DEBUG, "session=%llu PROXY v%d header: client %s",
	    (unsigned long long)s->id, h.version, s->peer);
	return (session_begin(s));
}

/* What the session's one timer measures. */
enum wait {
	WAIT_NONE,
	WAIT_PROXY,		/* a load balancer's PROXY header: a deadline */
	WAIT_HANDSHAKE,		/* a whole TLS handshake: a deadline */
	WAIT_CONNECT,		/* the backend's connect: a deadline */
	WAIT_BODY,		/* one DATA or BDAT phase: a deadline */
	WAIT_BACKEND,		/* a backend reply: idle, renewed by replies */
	WAIT_COMMAND,		/* the next complete command: idle, likewise */
	WAIT_CLOSE,		/* the last reply's flush */
};

static enum wait
session_wait(const struct session *s)
{
	if (s->smtp.want_close)
		return (WAIT_CLOSE);
	if (s->awaiting_proxy)
		return (WAIT_PROXY);
	if (s->client.handshaking || s->backend.handshaking)
		return (WAIT_HANDSHAKE);
	if (s->backend.connecting)
		return (WAIT_CONNECT);
	if (s->smtp.phase == PHASE_DATA || s->smtp.phase == PHASE_BDAT ||
	    s->smtp.phase == PHASE_BDAT_DISCARD)
		return (WAIT_BODY);
	if (smtp_awaits_backend(&s->smtp))
		return (WAIT_BACKEND);
	return (WAIT_COMMAND);
}

/*
 * Set the timer for what the session waits for now. A deadline starts when
 * its wait begins and no traffic extends it, so a client that trickles
 * bytes cannot hold a handshake or a message open; the idle waits start
 * again whenever a command or a reply completed (active).
 */
static void
session_timer(struct session *s, int active)
{
	const struct config_timeouts *t = &s->l->gen->conf->timeouts;
	enum wait w = session_wait(s);
	static const int renewable[] = { [WAIT_BACKEND] = 1, [WAIT_COMMAND] = 1,
	    [WAIT_CLOSE] = 0 };

	if (w == (enum wait)s->wait && !(active && renewable[w]))
		return;
	s->wait = (int)w;
	switch (w) {
	case WAIT_PROXY:
		s->timer.repeat = t->proxy_header;
		break;
	case WAIT_HANDSHAKE:
		s->timer.repeat = t->handshake;
		break;
	case WAIT_CONNECT:
		s->timer.repeat = t->backend_connect;
		break;
	case WAIT_BODY:
	case WAIT_BACKEND:
		s->timer.repeat = t->data;
		break;
	case WAIT_COMMAND:
		s->timer.repeat = t->command;
		break;
	case WAIT_CLOSE:
	case WAIT_NONE:
		s->timer.repeat = SESSION_CLOSE_GRACE;
		break;
	}
	ev_timer_again(s->w->loop, &s->timer);
}

/*
 * Let the tracker work until nothing moves, then set watchers and timer.
 * Returns a reason to close the session, or NULL.
 */
static const char *
session_step(struct session *s, int active)
{
	struct ev_loop *loop = s->w->loop;
	struct smtp_io io;
	int progress;

	do {
		progress = 0;
		/* Bytes already decrypted inside OpenSSL never make the socket
		 * readable again. */
		if (client_reading(s) && endpoint_pending(&s->client) &&
		    buf_room(&s->client.in) > 0)
			progress |= endpoint_fill(&s->client) > 0;
		if (s->client.failed)
			return (s->client.error);
		io_init(s, &io);
		if (smtp_run(&s->smtp, &io))
			progress = 1;
		if (s->smtp.active) {
			s->smtp.active = 0;
			active = 1;
			metrics_session_sync(s);
		}
		if (s->smtp.want_backend) {
			s->smtp.want_backend = 0;
			if (backend_connect(s) == -1)
				smtp_abort(&s->smtp, &io, ABORT_BACKEND_DOWN);
			progress = 1;
		}
		if (buf_len(&s->client.out) > 0)
			progress |= endpoint_flush(&s->client) > 0;
		if (s->client.failed)
			return (s->client.error);
		if (s->backend.fd != -1 && !s->backend.connecting &&
		    buf_len(&s->backend.out) > 0)
			progress |= endpoint_flush(&s->backend) > 0;
		if (s->smtp.want_close && buf_len(&s->client.out) == 0)
			return (s->smtp.close_reason);
		if (s->smtp.want_backend_tls && buf_len(&s->backend.out) == 0) {
			/* The STARTTLS line is out and its 220 read. */
			s->smtp.want_backend_tls = 0;
			backend_start_tls(s);
			progress = active = 1;
		}
		if (s->l->upstream != NULL && s->smtp.greeted &&
		    !s->port_noted) {
			/* The next session tries this port first. */
			atomic_store_explicit(&s->l->gen->up_preferred[
			    s->l->index], port_index(s), memory_order_relaxed);
			s->port_noted = 1;
		}
		if (s->smtp.want_tls && buf_len(&s->client.out) == 0) {
			/* The 220 is on the wire: the next client byte is the
			 * ClientHello. */
			s->smtp.want_tls = 0;
			if (endpoint_start_tls(&s->client,
			    s->l->gen->ctx[s->l->index], NULL) == -1)
				return ("cannot start TLS");
			if (client_handshake(s) != NULL)
				return (s->client.error);
			progress = active = 1;
		}
	} while (progress);

	endpoint_watch(&s->client, loop, client_reading(s));
	endpoint_watch(&s->backend, loop, !s->smtp.want_close);
	session_timer(s, active);
	return (NULL);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = w->data;
	struct endpoint *e;
	const char *why = NULL;
	int active = 0;

	(void)loop;
	(void)revents;
	e = (w == &s->client.rio || w == &s->client.wio) ? &s->client :
	    &s->backend;
	if (e == &s->client && s->awaiting_proxy) {
		why = proxy_header(s);
		active = 1;
	} else if (e == &s->backend && e->connecting) {
		backend_connected(s);
		active = 1;
	} else if (e->handshaking) {
		if (e == &s->client)
			why = client_handshake(s);
		else
			backend_handshake(s);
		active = 1;
	} else {
		/* Either event may serve the other direction under TLS
		 * (read_wants_write, write_wants_read): try both. */
		if (e == &s->client ? client_reading(s) : !s->smtp.want_close)
			endpoint_fill(e);
		if (buf_len(&e->out) > 0)
			endpoint_flush(e);
		/* Only whole commands and replies count as activity (the
		 * tracker says when): a peer that trickles bytes without
		 * finishing a line still times out. */
	}
	if (why == NULL)
		why = session_step(s, active);
	if (why != NULL)
		session_close(s, why);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;
	struct smtp_io io;
	char buf[BACKEND_NAME];
	const char *why;

	(void)loop;
	(void)revents;
	if (s->smtp.want_close) {
		session_close(s, s->smtp.close_reason);
		return;
	}
	if (s->awaiting_proxy) {
		session_close(s, "no PROXY header in time");
		return;
	}
	if (s->client.handshaking) {
		session_close(s, "TLS handshake timeout");
		return;
	}
	io_init(s, &io);
	if (s->backend.connecting) {
		metrics_connect_end(s, 0);
		backend_failed(s, "connect timeout");
	} else if (s->backend.handshaking) {
		log_msg(LOG_WARN, "session=%llu upstream %s: TLS handshake "
		    "timeout", (unsigned long long)s->id, backend_name(s, buf,
		    sizeof(buf)));
		smtp_abort(&s->smtp, &io, ABORT_UPSTREAM);
	} else if (session_wait(s) == WAIT_BACKEND) {
		smtp_abort(&s->smtp, &io, ABORT_BACKEND_TIMEOUT);
	} else {
		/* Idle before a command, or too slow inside a message. */
		smtp_abort(&s->smtp, &io, ABORT_TIMEOUT);
	}
	if ((why = session_step(s, 1)) != NULL)
		session_close(s, why);
}

struct session *
session_new(struct worker *w, struct listener *l, int fd,
    const struct sockaddr *sa, socklen_t salen, int ip_counted)
{
	struct session *s;
	const char *why = NULL;
	socklen_t llen = sizeof(struct sockaddr_storage);

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		if (ip_counted)
			worker_ip_release(w, sa);
		close(fd);
		return (NULL);
	}
	s->w = w;
	s->l = l;
	memcpy(&s->peer_sa, sa, salen < sizeof(s->peer_sa) ? salen :
	    sizeof(s->peer_sa));
	s->ip_counted = ip_counted;
	s->port_first = atomic_load_explicit(&l->gen->up_preferred[l->index],
	    memory_order_relaxed);
	if (getsockname(fd, (struct sockaddr *)&s->local_sa, &llen) == -1)
		s->local_sa.ss_family = AF_UNSPEC;
	s->id = atomic_fetch_add_explicit(&w->gw->next_id, 1,
	    memory_order_relaxed) + 1;
	s->started = ev_now(w->loop);
	session_format_addr(sa, s->peer, sizeof(s->peer));
	nodelay(fd);
	endpoint_init(&s->client, fd, SESSION_BULK_BUF, SESSION_BUF, io_cb, s);
	endpoint_init(&s->backend, -1, SESSION_BUF, SESSION_BULK_BUF, io_cb, s);
	ev_init(&s->timer, timer_cb);
	s->timer.data = s;
	smtp_init(&s->smtp, &l->smtp, smtp_log, s);

	s->next = w->sessions;
	if (w->sessions != NULL)
		w->sessions->prev = s;
	w->sessions = s;
	w->nsessions++;
	l->nsessions++;
	atomic_fetch_add_explicit(&w->gw->nsessions, 1, memory_order_relaxed);
	metrics_session_open(s);
	log_msg(LOG_DEBUG, "session=%llu connect from %s to %s",
	    (unsigned long long)s->id, s->peer, l->conf->name);

	if (l->conf->accept_proxy)
		s->awaiting_proxy = 1;
	else
		why = session_begin(s);
	if (why != NULL || (why = session_step(s, 1)) != NULL) {
		session_close(s, why);
		return (NULL);
	}
	return (s);
}

void
session_shutdown(struct session *s)
{
	struct smtp_io io;
	const char *why;

	if (s->client.handshaking) {
		session_close(s, smtp_abort_names[ABORT_SHUTDOWN]);
		return;
	}
	io_init(s, &io);
	smtp_abort(&s->smtp, &io, ABORT_SHUTDOWN);
	if (!s->smtp.want_close) {
		/* The 421 waits for a STARTTLS handshake that will not come
		 * in time. */
		session_close(s, smtp_abort_names[ABORT_SHUTDOWN]);
		return;
	}
	if ((why = session_step(s, 1)) != NULL)
		session_close(s, why);
}

void
session_close(struct session *s, const char *reason)
{
	struct worker *w = s->w;
	char buf[BACKEND_NAME];

	metrics_session_close(s, reason);
	ev_timer_stop(w->loop, &s->timer);
	if (s->ip_counted)
		worker_ip_release(w, (struct sockaddr *)&s->peer_sa);
	endpoint_fini(&s->client, w->loop);
	endpoint_fini(&s->backend, w->loop);
	/* Logged once its sockets are closed: the line means it is over. */
	log_msg(LOG_INFO, "session=%llu client=%s%s%s listener=%s%s%s%s%s tls=%s "
	    "cipher=%s sni=%s client_cert=%s%s%s msgs=%u in=%llu out=%llu "
	    "duration=%.3fs reason=\"%s\"", (unsigned long long)s->id, s->peer,
	    s->via[0] ? " via=" : "", s->via, s->l->conf->name,
	    s->l->upstream ? " upstream=" : "", s->l->upstream ?
	    backend_name(s, buf, sizeof(buf)) : "",
	    s->l->upstream ? " upstream_tls=" : "", s->l->upstream ?
	    (s->up_tls ? s->up_tls : "-") : "",
	    s->tls_version ? s->tls_version : "-",
	    s->tls_cipher ? s->tls_cipher : "-",
	    s->sni[0] ? s->sni : "-", s->client_cert ? "\"" : "",
	    s->client_cert ? s->client_cert : "-", s->client_cert ? "\"" : "",
	    s->smtp.messages,
	    (unsigned long long)s->client.bytes_in,
	    (unsigned long long)s->client.bytes_out,
	    ev_now(w->loop) - s->started, reason ? reason : "unknown");
	free(s->client_cert);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	w->nsessions--;
	atomic_fetch_sub_explicit(&w->gw->nsessions, 1, memory_order_relaxed);
	listener_release(s->l);
	free(s);
	if (w->draining && w->nsessions == 0)
		ev_break(w->loop, EVBREAK_ALL);
}
