/*
 * health: /healthz. Whether every backend the configuration uses accepts a
 * TCP connection: each is probed with a non-blocking connect() on the loop
 * (the connection is closed as soon as it is established, before any SMTP),
 * within HEALTH_TIMEOUT; the answer is cached for HEALTH_CACHE seconds so
 * that frequent probes do not hammer the backends.
 */
#ifndef SMTPGATE_HEALTH_H
#define SMTPGATE_HEALTH_H

#include <ev.h>

#define HEALTH_TIMEOUT	2.0	/* per probe round */
#define HEALTH_CACHE	2.0	/* how long an answer is reused */

struct config;
struct health;
struct http_conn;

struct health	*health_new(struct ev_loop *loop);
/* Forget pending requests without answering them (the HTTP server closes
 * them) and stop every probe. NULL does nothing. */
void		 health_free(struct health *h);
/* Answer c with 200 "ok" when every distinct backend of c (the effective
 * backend of each listener; for an egress listener its upstream's host on
 * the first port) is reachable, else 503 with a line per failing one.
 * From the cache when it is fresh, else once a probe round ends. */
void		 health_check(struct health *h, const struct config *conf,
		    struct http_conn *c);

#endif
