/* worker: what one event loop serves. Every session and listener belongs to
 * exactly one worker; nothing on the data path is shared between workers. */
#ifndef SMTPGATE_WORKER_H
#define SMTPGATE_WORKER_H

#include <ev.h>

#include "../config/config.h"
#include "metrics.h"
#include <openssl/ssl.h>
#include <stdint.h>

struct config;
struct iptable;
struct listener;
struct session;

struct worker {
	struct ev_loop		*loop;
	const struct config	*conf;
	SSL_CTX			*ctx;
	SSL_CTX			*up_ctx[CONFIG_MAX_UPSTREAMS];	/* per
						 * [upstream:NAME] */
	struct listener		*listeners;
	struct session		*sessions;	/* all open sessions, a list */
	unsigned		 nsessions;
	struct iptable		*ips;		/* per-IP limits */
	ev_timer		 sweep_timer;	/* forgets idle addresses */
	uint64_t		 next_id;
	int			 draining;	/* 0, 1: waiting, 2: 421s sent */
	ev_timer		 drain_timer;
	struct metrics		 metrics;	/* this worker's counters */
};

#endif
