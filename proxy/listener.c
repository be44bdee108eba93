#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../config/config.h"
#include "gen.h"
#include "iptable.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "session.h"
#include "worker.h"

/* How many connections one readiness event accepts, so that one busy
 * listener cannot starve the sessions already open. */
#define ACCEPT_BATCH	64

/* A connection over a limit is refused before any TLS or greeting work is
 * spent on it (DESIGN.md, "Failures a client sees"). The reply is plaintext,
 * which an implicit-TLS client reads as a failed handshake. */
void
listener_refuse(const struct listener *l, int fd, const char *why)
{
	char msg[320];
	int n;

	n = snprintf(msg, sizeof(msg), "421 4.7.0 %s %s, try again later\r\n",
	    l->gen->conf->hostname, why);
	if (n > 0)
		(void)send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	const struct config *c = l->gen->conf;
	struct sockaddr_storage ss;
	enum iptable_verdict v;
	socklen_t len;
	int fd, i, counted;
	char peer[64];

	(void)revents;
	for (i = 0; i < ACCEPT_BATCH; i++) {
		len = sizeof(ss);
		fd = accept4(l->fd, (struct sockaddr *)&ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Level-triggered: a pending connection we cannot
				 * take would spin the loop. Pause a moment. */
				log_msg(LOG_WARN, "listener %s: %s; pausing "
				    "accept for 1s", l->conf->name,
				    strerror(errno));
				ev_io_stop(loop, &l->io);
				ev_timer_set(&l->retry, 1.0, 0.0);
				ev_timer_start(loop, &l->retry);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED) {
				log_msg(LOG_WARN, "listener %s: accept: %s",
				    l->conf->name, strerror(errno));
			}
			return;
		}
		if (atomic_load_explicit(&l->w->gw->nsessions,
		    memory_order_relaxed) >= (unsigned long)c->max_connections) {
			log_msg(LOG_WARN, "listener %s: max_connections (%ld) "
			    "reached, refusing a connection", l->conf->name,
			    c->max_connections);
			listener_refuse(l, fd, "Too many connections");
			metrics_refused(l, METRICS_REFUSED_MAX_CONNECTIONS);
			close(fd);
			continue;
		}
		if (l->conf->accept_proxy) {
			/* Only the load balancers may speak; the per-IP limits
			 * apply to the address their header names. */
			if (!config_cidr_match(l->conf->trusted,
			    l->conf->ntrusted, (struct sockaddr *)&ss)) {
				session_format_addr((struct sockaddr *)&ss, peer,
				    sizeof(peer));
				log_msg(LOG_WARN, "listener %s: %s is not in "
				    "trusted_proxies, refused", l->conf->name,
				    peer);
				metrics_refused(l, METRICS_REFUSED_UNTRUSTED_PROXY);
				close(fd);
				continue;
			}
			session_new(l->w, l, fd, (struct sockaddr *)&ss, len, 0);
			continue;
		}
		v = worker_ip_acquire(l->w, (struct sockaddr *)&ss, &counted);
		if (v != IPTABLE_OK) {
			session_format_addr((struct sockaddr *)&ss, peer,
			    sizeof(peer));
			log_msg(LOG_WARN, "listener %s: client %s: %s, refused",
			    l->conf->name, peer, v == IPTABLE_TOO_MANY ?
			    "per_ip_connections reached" : "per_ip_rate reached");
			listener_refuse(l, fd, iptable_refusal(v));
			metrics_refused(l, metrics_refusal_ip(v));
			close(fd);
			continue;
		}
		session_new(l->w, l, fd, (struct sockaddr *)&ss, len, counted);
	}
}

static void
retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct listener *l = t->data;

	(void)revents;
	if (!l->w->draining && !l->retired)
		ev_io_start(loop, &l->io);
}

/* The tracker's settings for listener cl of configuration c. */
static void
smtp_settings(struct listener *l, const struct config *c,
    const struct config_listener *cl)
{
	l->backend = cl->backend.len ? &cl->backend : &c->backend;
	l->smtp.hostname = c->hostname;
	l->smtp.max_line = (size_t)c->max_line;
	l->smtp.bare_reject = c->bare_reject;
	l->smtp.max_errors = (unsigned)c->limits.max_errors;
	l->identity = cl->client_identity;
	l->smtp.xclient = cl->client_identity == CONFIG_ID_XCLIENT;
	l->smtp.mode = cl->mode == CONFIG_MODE_IMPLICIT ? SMTP_MODE_IMPLICIT :
	    cl->mode == CONFIG_MODE_EGRESS ? SMTP_MODE_EGRESS :
	    cl->require_tls ? SMTP_MODE_STARTTLS : SMTP_MODE_OPPORTUNISTIC;
	if (cl->mode == CONFIG_MODE_EGRESS) {
		const struct config_upstream *u = &c->upstreams[cl->upstream];

		l->upstream = u;
		l->smtp.helo = u->helo ? u->helo : c->hostname;
		l->smtp.auth = (int)u->auth;
		l->smtp.auth_user = u->username;
		l->smtp.auth_pass = u->password;
		l->smtp.app_auth = cl->app_auth;
	}
}

static void
listener_free(struct listener *l)
{
	gen_unref(l->gen);
	free(l);
}

int
listener_new_list(struct gen *g, struct worker *w, struct listener **list_r,
    char *err, size_t errlen)
{
	const struct config *c = g->conf;
	struct listener *l, **tail = list_r;
	int i, j, a = 0;

	*list_r = NULL;
	for (i = 0; i < c->nlisteners; i++) {
		for (j = 0; j < c->listeners[i].naddrs; j++, a++) {
			if ((l = calloc(1, sizeof(*l))) == NULL) {
				snprintf(err, errlen, "out of memory");
				listener_free_list(*list_r);
				*list_r = NULL;
				return (-1);
			}
			l->w = w;
			l->gen = gen_ref(g);
			l->conf = &c->listeners[i];
			l->index = i;
			l->addr = &l->conf->addrs[j];
			l->fd = g->fds[a * g->nworkers + w->index];
			smtp_settings(l, c, l->conf);
			l->mslot = metrics_listener_slot(l->conf->name);
			ev_io_init(&l->io, accept_cb, l->fd, EV_READ);
			l->io.data = l;
			ev_init(&l->retry, retry_cb);
			l->retry.data = l;
			*tail = l;
			tail = &l->next;
		}
	}
	return (0);
}

void
listener_free_list(struct listener *list)
{
	struct listener *next;

	for (; list != NULL; list = next) {
		next = list->next;
		listener_free(list);
	}
}

/* Unlink l from w's list. */
static void
unlink_listener(struct worker *w, struct listener *l)
{
	struct listener **p;

	for (p = &w->listeners; *p != NULL; p = &(*p)->next)
		if (*p == l) {
			*p = l->next;
			return;
		}
}

void
listener_retire_all(struct worker *w)
{
	struct listener *l, *next;

	for (l = w->listeners; l != NULL; l = next) {
		next = l->next;
		ev_io_stop(w->loop, &l->io);
		ev_timer_stop(w->loop, &l->retry);
		l->retired = 1;
		if (l->nsessions == 0) {
			unlink_listener(w, l);
			listener_free(l);
		}
	}
}

void
listener_release(struct listener *l)
{
	if (--l->nsessions == 0 && l->retired) {
		unlink_listener(l->w, l);
		listener_free(l);
	}
}

void
listener_start_list(struct worker *w, struct listener *list)
{
	struct listener *l, *last = NULL;

	for (l = list; l != NULL; l = l->next) {
		last = l;
		ev_io_start(w->loop, &l->io);
		if (w->index != 0)
			continue;
		if (l->upstream != NULL)
			log_msg(LOG_INFO, "listening on %s (%s, egress), "
			    "upstream %s", l->addr->text, l->conf->name,
			    l->upstream->host);
		else
			log_msg(LOG_INFO, "listening on %s (%s, %s), backend %s",
			    l->addr->text, l->conf->name,
			    l->smtp.mode == SMTP_MODE_IMPLICIT ? "implicit TLS" :
			    l->smtp.mode == SMTP_MODE_STARTTLS ?
			    "STARTTLS required" : "STARTTLS optional",
			    l->backend->text);
	}
	if (last != NULL) {
		last->next = w->listeners;
		w->listeners = list;
	}
}

void
listener_stop_all(struct worker *w)
{
	struct listener *l;

	for (l = w->listeners; l != NULL; l = l->next) {
		ev_io_stop(w->loop, &l->io);
		ev_timer_stop(w->loop, &l->retry);
	}
}

void
listener_free_all(struct worker *w)
{
	listener_stop_all(w);
	listener_free_list(w->listeners);
	w->listeners = NULL;
}
