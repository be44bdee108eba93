#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "gen.h"
#include "iptable.h"
#include "listener.h"
#include "log.h"
#include "session.h"
#include "worker.h"

/* After the drain time has passed and the 421s are out, how long the last
 * sessions get to flush them. */
#define DRAIN_GRACE		5.0
/* How long the control thread waits for a worker to take a new generation:
 * a worker never blocks, so this only guards against a bug. */
#define POST_TIMEOUT		10

enum iptable_verdict
worker_ip_acquire(struct worker *w, const struct sockaddr *sa, int *counted_r)
{
	enum iptable_verdict v;

	pthread_mutex_lock(&w->gw->lock);
	v = iptable_acquire(w->gw->ips, sa, ev_now(w->loop), counted_r);
	pthread_mutex_unlock(&w->gw->lock);
	return (v);
}

void
worker_ip_release(struct worker *w, const struct sockaddr *sa)
{
	pthread_mutex_lock(&w->gw->lock);
	iptable_release(w->gw->ips, sa);
	pthread_mutex_unlock(&w->gw->lock);
}

static void
drain_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;
	struct session *s, *next;

	(void)revents;
	if (w->draining == 1) {
		log_msg(LOG_INFO, "worker %d: drain time over: ending %u "
		    "sessions with 421", w->index, w->nsessions);
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
begin_drain(struct worker *w)
{
	w->draining = 1;
	listener_stop_all(w);
	if (w->nsessions == 0) {
		ev_break(w->loop, EVBREAK_ALL);
		return;
	}
	ev_timer_init(&w->drain_timer, drain_cb, w->gen->conf->timeouts.drain,
	    0.0);
	w->drain_timer.data = w;
	ev_timer_start(w->loop, &w->drain_timer);
}

/* Act on what the control thread posted. */
static void
take_post(struct worker *w)
{
	struct listener *list;
	struct gen *g;
	int stop;

	pthread_mutex_lock(&w->gw->lock);
	list = w->post_listeners;
	g = w->post_gen;
	stop = w->post_stop;
	w->post_listeners = NULL;
	w->post_gen = NULL;
	pthread_mutex_unlock(&w->gw->lock);

	if (g != NULL) {
		/* Open sessions keep their listener, and through it their
		 * generation, until they end. */
		listener_retire_all(w);
		if (!w->draining)
			listener_start_list(w, list);
		else
			listener_free_list(list);
		gen_unref(w->gen);
		w->gen = g;
		/* Only now may the control thread close the old sockets: no
		 * watcher of this worker is on them any more. */
		pthread_mutex_lock(&w->gw->lock);
		w->post_taken = 1;
		pthread_cond_broadcast(&w->gw->posted);
		pthread_mutex_unlock(&w->gw->lock);
	}
	if (stop && !w->draining)
		begin_drain(w);
}

static void
wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	(void)loop;
	(void)revents;
	take_post(a->data);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	/* The first post is taken inside the loop: a stop posted before the
	 * thread ran must reach an ev_break() that ev_run() honours (ev_run
	 * forgets breaks made before it began). */
	ev_async_send(w->loop, &w->wake);
	ev_run(w->loop, 0);

	ev_timer_stop(w->loop, &w->drain_timer);
	ev_async_stop(w->loop, &w->wake);
	listener_free_all(w);
	return (NULL);
}

/* Workers from on were set up but never ran: free their posts and loops;
 * only the first from count. */
static void
unstarted(struct gateway *gw, int from)
{
	struct worker *w;
	int i;

	for (i = from; i < gw->nworkers; i++) {
		w = &gw->workers[i];
		listener_free_list(w->post_listeners);
		gen_unref(w->post_gen);
		w->post_listeners = NULL;
		w->post_gen = NULL;
		if (w->loop != NULL)
			ev_loop_destroy(w->loop);
		w->loop = NULL;
	}
	gw->nworkers = from;
}

int
worker_start_all(struct gateway *gw, struct gen *g, struct listener **lists)
{
	sigset_t all, old;
	struct worker *w;
	int i, e = ENOMEM, started = 0;

	for (i = 0; i < gw->nworkers; i++) {
		gw->workers[i].post_listeners = lists[i];
		gw->workers[i].post_gen = gen_ref(g);
	}
	for (i = 0; i < gw->nworkers; i++) {
		w = &gw->workers[i];
		if ((w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK)) ==
		    NULL)
			goto fail;
		ev_async_init(&w->wake, wake_cb);
		w->wake.data = w;
		ev_async_start(w->loop, &w->wake);
		ev_init(&w->drain_timer, drain_cb);
	}
	/* Signals belong to the control thread: the workers start with all
	 * of them blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; started < gw->nworkers; started++)
		if ((e = pthread_create(&gw->workers[started].thread, NULL,
		    worker_main, &gw->workers[started])) != 0)
			break;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started == gw->nworkers)
		return (0);
fail:
	unstarted(gw, started);
	errno = e;
	return (-1);
}

int
worker_post_gen(struct gateway *gw, struct gen *g, struct listener **lists)
{
	struct timespec deadline;
	int i, taken, r = 0;

	pthread_mutex_lock(&gw->lock);
	for (i = 0; i < gw->nworkers; i++) {
		/* A worker that has not run since the last post (a reload
		 * right after start, or after a post that timed out) never
		 * started those listeners: they go, the new ones replace them. */
		listener_free_list(gw->workers[i].post_listeners);
		gen_unref(gw->workers[i].post_gen);
		gw->workers[i].post_listeners = lists[i];
		gw->workers[i].post_gen = gen_ref(g);
		gw->workers[i].post_taken = 0;
		ev_async_send(gw->workers[i].loop, &gw->workers[i].wake);
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += POST_TIMEOUT;
	for (;;) {
		for (i = taken = 0; i < gw->nworkers; i++)
			taken += gw->workers[i].post_taken;
		if (taken == gw->nworkers)
			break;
		if (pthread_cond_timedwait(&gw->posted, &gw->lock, &deadline) ==
		    ETIMEDOUT) {
			r = -1;
			break;
		}
	}
	pthread_mutex_unlock(&gw->lock);
	return (r);
}

void
worker_stop_all(struct gateway *gw)
{
	int i;

	pthread_mutex_lock(&gw->lock);
	for (i = 0; i < gw->nworkers; i++) {
		gw->workers[i].post_stop = 1;
		ev_async_send(gw->workers[i].loop, &gw->workers[i].wake);
	}
	pthread_mutex_unlock(&gw->lock);
	for (i = 0; i < gw->nworkers; i++)
		pthread_join(gw->workers[i].thread, NULL);
}
