#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../config/config.h"
#include "health.h"
#include "http.h"
#include "metrics.h"

/* One per listener at most: distinct backends only. */
#define HEALTH_TARGETS	CONFIG_MAX_LISTENERS

struct probe {
	struct health		*h;
	struct sockaddr_storage	 ss;
	socklen_t		 len;
	char			 text[METRICS_NAME];
	ev_io			 io;
	int			 fd;
	const char		*error;		/* NULL: reachable */
};

struct health {
	struct ev_loop		*loop;
	struct probe		 probes[HEALTH_TARGETS];
	int			 nprobes, pending;
	ev_timer		 timer;		/* the round's deadline */
	struct http_conn	*waiting[HTTP_MAX_CONNS];
	int			 nwaiting;
	/* The last answer. */
	int			 status;	/* 0: none yet */
	ev_tstamp		 at;
	char			 body[4096];
};

/* Add a target unless it is there already: a backend a, or (a NULL) the
 * first port of upstream u. */
static void
target(struct health *h, const struct config_addr *a,
    const struct config_upstream *u)
{
	struct probe *p = &h->probes[h->nprobes];
	int i;

	if (h->nprobes == HEALTH_TARGETS)
		return;
	if (a == NULL) {
		p->len = config_upstream_addr(u, u->ports[0], &p->ss);
		metrics_upstream_text(p->text, sizeof(p->text), u->host,
		    u->ports[0]);
	} else {
		memcpy(&p->ss, &a->ss, sizeof(p->ss));
		p->len = a->len;
		snprintf(p->text, sizeof(p->text), "%s", a->text);
	}
	for (i = 0; i < h->nprobes; i++)
		if (h->probes[i].len == p->len &&
		    memcmp(&h->probes[i].ss, &p->ss, p->len) == 0)
			return;
	h->nprobes++;
}

static void
probe_done(struct probe *p, const char *error)
{
	struct health *h = p->h;

	ev_io_stop(h->loop, &p->io);
	close(p->fd);
	p->fd = -1;
	p->error = error;
	h->pending--;
}

/* The round is over: write the answer, cache it, give it to everyone. */
static void
round_end(struct health *h)
{
	size_t off = 0;
	int i, n;

	ev_timer_stop(h->loop, &h->timer);
	h->status = 200;
	h->body[0] = '\0';
	for (i = 0; i < h->nprobes; i++) {
		if (h->probes[i].fd != -1)
			probe_done(&h->probes[i], "connect timeout");
		if (h->probes[i].error == NULL)
			continue;
		h->status = 503;
		n = snprintf(h->body + off, sizeof(h->body) - off,
		    "backend %s: %s\n", h->probes[i].text, h->probes[i].error);
		if (n > 0 && (size_t)n < sizeof(h->body) - off)
			off += (size_t)n;
	}
	if (h->status == 200)
		snprintf(h->body, sizeof(h->body), "ok\n");
	h->at = ev_now(h->loop);
	for (i = 0; i < h->nwaiting; i++)
		http_respond(h->waiting[i], h->status,
		    "text/plain; charset=utf-8", h->body, strlen(h->body));
	h->nwaiting = 0;
}

static void
probe_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct probe *p = w->data;
	socklen_t len = sizeof(int);
	int err = 0;

	(void)loop;
	(void)revents;
	if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	probe_done(p, err != 0 ? strerror(err) : NULL);
	if (p->h->pending == 0)
		round_end(p->h);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	round_end(t->data);
}

static void
round_start(struct health *h, const struct config *conf)
{
	const struct config_listener *cl;
	struct probe *p;
	int i;

	h->nprobes = 0;
	for (i = 0; i < conf->nlisteners; i++) {
		cl = &conf->listeners[i];
		if (cl->mode != CONFIG_MODE_EGRESS) {
			target(h, cl->backend.len ? &cl->backend : &conf->backend,
			    NULL);
			continue;
		}
		target(h, NULL, &conf->upstreams[cl->upstream]);
	}
	h->pending = 0;
	for (i = 0; i < h->nprobes; i++) {
		p = &h->probes[i];
		p->h = h;
		p->error = NULL;
		p->fd = socket(p->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (p->fd == -1) {
			p->error = strerror(errno);
			continue;
		}
		h->pending++;
		if (connect(p->fd, (struct sockaddr *)&p->ss, p->len) == 0) {
			probe_done(p, NULL);
			continue;
		}
		if (errno != EINPROGRESS) {
			probe_done(p, strerror(errno));
			continue;
		}
		ev_io_init(&p->io, probe_cb, p->fd, EV_WRITE);
		p->io.data = p;
		ev_io_start(h->loop, &p->io);
	}
	if (h->pending == 0) {
		round_end(h);
		return;
	}
	ev_timer_set(&h->timer, HEALTH_TIMEOUT, 0.0);
	ev_timer_start(h->loop, &h->timer);
}

struct health *
health_new(struct ev_loop *loop)
{
	struct health *h;

	if ((h = calloc(1, sizeof(*h))) == NULL)
		return (NULL);
	h->loop = loop;
	ev_init(&h->timer, timer_cb);
	h->timer.data = h;
	return (h);
}

void
health_free(struct health *h)
{
	int i;

	if (h == NULL)
		return;
	ev_timer_stop(h->loop, &h->timer);
	for (i = 0; i < h->nprobes; i++)
		if (h->pending > 0 && h->probes[i].fd != -1)
			probe_done(&h->probes[i], NULL);
	free(h);
}

void
health_check(struct health *h, const struct config *conf,
    struct http_conn *c)
{
	if (h->nwaiting == 0 && h->status != 0 &&
	    ev_now(h->loop) - h->at < HEALTH_CACHE) {
		http_respond(c, h->status, "text/plain; charset=utf-8", h->body,
		    strlen(h->body));
		return;
	}
	/* The HTTP server holds at most HTTP_MAX_CONNS connections, so every
	 * request fits. */
	h->waiting[h->nwaiting++] = c;
	if (h->nwaiting == 1)
		round_start(h, conf);
}
