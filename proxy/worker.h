/*
 * worker: one thread and its event loop. Every session and listener belongs
 * to exactly one worker; nothing on the data path is shared between workers.
 * What they do share lives in struct gateway and is touched only when a
 * connection is accepted or ends (the per-IP table, under a lock; the
 * session count, atomic) or on a reload.
 */
#ifndef SMTPGATE_WORKER_H
#define SMTPGATE_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "iptable.h"
#include "metrics.h"

struct gen;
struct listener;
struct session;
struct sockaddr;

/* The process: what all workers share. */
struct gateway {
	pthread_mutex_t		 lock;		/* ips, and the posts below */
	pthread_cond_t		 posted;	/* a worker took a post */
	struct iptable		*ips;		/* per-IP limits */
	atomic_uint		 nsessions;	/* over all workers */
	atomic_uint_fast64_t	 next_id;	/* session ids */
	struct worker		*workers;
	int			 nworkers;
};

struct worker {
	struct gateway		*gw;
	int			 index;
	pthread_t		 thread;
	struct ev_loop		*loop;
	struct gen		*gen;		/* the newest generation here */
	struct listener		*listeners;	/* current and retired ones */
	struct session		*sessions;	/* all open sessions, a list */
	unsigned		 nsessions;
	int			 draining;	/* 0, 1: waiting, 2: 421s sent */
	ev_timer		 drain_timer;
	struct metrics		 metrics;	/* this worker's counters */

	/* Posts from the control thread, under gw->lock. */
	ev_async		 wake;
	struct listener		*post_listeners;	/* a new generation's */
	struct gen		*post_gen;
	int			 post_stop;	/* drain and end */
	int			 post_taken;	/* the last post was acted on */
};

/* Set up and start the worker threads, serving generation g with lists[i]
 * for worker i (see listener_new_list; the workers take them over, also on
 * failure). Returns 0, or -1 with errno set and gw->nworkers lowered to
 * the threads that do run. */
int	worker_start_all(struct gateway *gw, struct gen *g,
	    struct listener **lists);
/* Hand every worker a new generation and its listeners (lists[i] for
 * worker i; a post it has not taken yet is freed and replaced), and wait
 * until each has switched to them, so the caller may then close the
 * sockets the old generation no longer needs. Returns 0, or -1 when a
 * worker did not answer in time. */
int	worker_post_gen(struct gateway *gw, struct gen *g,
	    struct listener **lists);
/* Tell every worker to stop accepting, drain its sessions and end; wait
 * for the threads. */
void	worker_stop_all(struct gateway *gw);

/* A connection from sa was accepted: count it against the per-IP limits
 * (see iptable_acquire). */
enum iptable_verdict worker_ip_acquire(struct worker *w,
	    const struct sockaddr *sa, int *counted_r);
void	worker_ip_release(struct worker *w, const struct sockaddr *sa);

#endif
