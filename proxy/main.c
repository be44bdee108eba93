/*
 * smtpgate: argv, config, TLS context, listeners, signals, the event loop.
 */
#include <sys/resource.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../config/config.h"
#include "../tls/tls.h"
#include "iptable.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "metrics_server.h"
#include "session.h"
#include "worker.h"

#define SMTPGATE_VERSION	"0.1.0"

/* After the drain time has passed and the 421s are out, how long the last
 * sessions get to flush them. */
#define DRAIN_GRACE		5.0

static void
usage(void)
{
	fprintf(stderr, "usage: smtpgate -c FILE     run in the foreground\n"
	    "       smtpgate -t -c FILE  check FILE and exit\n"
	    "       smtpgate -V          print versions\n");
	exit(2);
}

static void
versions(void)
{
	printf("smtpgate %s\n%s\nlibev %d.%d\n", SMTPGATE_VERSION,
	    OpenSSL_version(OPENSSL_VERSION), ev_version_major(),
	    ev_version_minor());
}

/* Raise the descriptor limit to its hard limit: each session needs two. */
static void
raise_nofile(long max_connections)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY &&
	    (rlim_t)max_connections * 2 + 64 > rl.rlim_cur)
		log_msg(LOG_WARN, "the file descriptor limit (%llu) caps "
		    "max_connections at about %llu, not %ld",
		    (unsigned long long)rl.rlim_cur,
		    (unsigned long long)(rl.rlim_cur - 64) / 2, max_connections);
}

static void
sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	(void)loop;
	(void)revents;
	iptable_sweep(w->ips, ev_now(loop));
}

static void
drain_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;
	struct session *s, *next;

	(void)revents;
	if (w->draining == 1) {
		log_msg(LOG_INFO, "drain time over: ending %u sessions with 421",
		    w->nsessions);
		w->draining = 2;
		for (s = w->sessions; s != NULL; s = next) {
			next = s->next;
			session_shutdown(s);
		}
		if (w->nsessions > 0) {
			ev_timer_set(t, DRAIN_GRACE, 0.0);
			ev_timer_start(loop, t);
		}
		return;
	}
	for (s = w->sessions; s != NULL; s = next) {
		next = s->next;
		session_close(s, "shutdown");
	}
}

static void
signal_cb(struct ev_loop *loop, ev_signal *sig, int revents)
{
	struct worker *w = sig->data;

	(void)revents;
	if (w->draining)
		return;
	log_msg(LOG_INFO, "signal %d: no new connections; %u sessions open, "
	    "draining for up to %.0fs", sig->signum, w->nsessions,
	    w->conf->timeouts.drain);
	w->draining = 1;
	listener_stop_all(w);
	if (w->nsessions == 0) {
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	ev_timer_init(&w->drain_timer, drain_cb, w->conf->timeouts.drain, 0.0);
	w->drain_timer.data = w;
	ev_timer_start(loop, &w->drain_timer);
}

/* Load the file; print every error. Returns NULL when it has any. */
static struct config *
load(const char *path)
{
	struct config *c;

	if ((c = config_load(path)) == NULL) {
		fprintf(stderr, "%s: out of memory\n", path);
		return (NULL);
	}
	if (c->nerrors > 0) {
		fputs(c->errors, stderr);
		config_free(c);
		return (NULL);
	}
	return (c);
}

int
main(int argc, char **argv)
{
	struct worker w, *ws[1] = { &w };
	struct metrics_view view = { ws, 1, NULL, SMTPGATE_VERSION };
	struct metrics_server *ms = NULL;
	struct config *c;
	ev_signal sigterm, sigint;
	const char *path = NULL;
	char err[512];
	int ch, i, test = 0, rc = 1;

	while ((ch = getopt(argc, argv, "c:tVh")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'V':
			versions();
			return (0);
		default:
			usage();
		}
	}
	if (path == NULL || optind != argc)
		usage();

	if ((c = load(path)) == NULL)
		return (1);
	log_set_level((enum log_level)c->log_level);
	metrics_register(c);
	view.conf = c;
	memset(&w, 0, sizeof(w));
	w.conf = c;
	if ((w.ctx = tls_ctx_new(&c->tls, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s:%d: %s\n", path, c->tls_line, err);
		goto out;
	}
	for (i = 0; i < c->nupstreams; i++) {
		const struct config_upstream *u = &c->upstreams[i];

		if ((w.up_ctx[i] = tls_client_ctx_new(u, err, sizeof(err))) ==
		    NULL) {
			fprintf(stderr, "%s:%d: upstream %s: %s\n", path, u->line,
			    u->name, err);
			goto out;
		}
		if (!u->verify)
			log_msg(LOG_WARN, "upstream %s: verify = no: its "
			    "certificate is not checked", u->name);
	}
	if (test) {
		printf("%s: ok\n", path);
		rc = 0;
		goto out;
	}

	signal(SIGPIPE, SIG_IGN);
	raise_nofile(c->max_connections);
	w.loop = ev_default_loop(EVFLAG_AUTO);
	if ((w.ips = iptable_new((unsigned)c->limits.per_ip_connections,
	    (unsigned)c->limits.per_ip_rate)) == NULL) {
		log_msg(LOG_ERROR, "out of memory");
		goto out;
	}
	ev_timer_init(&w.sweep_timer, sweep_cb, 60.0, 60.0);
	w.sweep_timer.data = &w;
	ev_timer_start(w.loop, &w.sweep_timer);
	if (c->metrics.len != 0 && (ms = metrics_server_start(w.loop,
	    &c->metrics, &view, err, sizeof(err))) == NULL) {
		log_msg(LOG_ERROR, "%s", err);
		goto out;
	}
	if (listener_open_all(&w, err, sizeof(err)) == -1) {
		log_msg(LOG_ERROR, "%s", err);
		goto out;
	}
	ev_signal_init(&sigterm, signal_cb, SIGTERM);
	ev_signal_init(&sigint, signal_cb, SIGINT);
	sigterm.data = sigint.data = &w;
	ev_signal_start(w.loop, &sigterm);
	ev_signal_start(w.loop, &sigint);
	log_msg(LOG_INFO, "smtpgate %s ready", SMTPGATE_VERSION);

	ev_run(w.loop, 0);

	ev_timer_stop(w.loop, &w.drain_timer);
	ev_timer_stop(w.loop, &w.sweep_timer);
	ev_signal_stop(w.loop, &sigterm);
	ev_signal_stop(w.loop, &sigint);
	listener_free_all(&w);
	log_msg(LOG_INFO, "stopped");
	rc = 0;
out:
	metrics_server_free(ms);
	SSL_CTX_free(w.ctx);
	for (i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		SSL_CTX_free(w.up_ctx[i]);
	iptable_free(w.ips);
	config_free(c);
	if (w.loop != NULL)
		ev_loop_destroy(w.loop);
	return (rc);
}
