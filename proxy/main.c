/*
 * smtpgate: argv, the config, privileges, and the control thread: it starts
 * the workers, and handles signals (SIGHUP reloads, SIGTERM/SIGINT drain and
 * stop) and the per-IP table's upkeep. Clients are served by the workers.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/capability.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <ev.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../config/config.h"
#include "../tls/ticket.h"
#include "gen.h"
#include "iptable.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "metrics_server.h"
#include "worker.h"

#define SMTPGATE_VERSION	"0.2.0"

struct control {
	const char		*path;
	struct gateway		 gw;
	struct gen		*gen;		/* the current generation */
	struct worker		**ws;		/* for the metrics view */
	struct metrics_view	 view;
	struct metrics_server	*ms;		/* NULL: metrics off */
	ev_timer		 sweep;		/* forgets idle addresses */
	ev_timer		 rotate;	/* new session ticket keys */
	ev_signal		 sigterm, sigint, sighup;
};

static sigset_t held_signals;

static void
usage(void)
{
	fprintf(stderr, "usage: smtpgate -c FILE     run in the foreground\n"
	    "       smtpgate -t -c FILE  check FILE (all a reload would load) "
	    "and exit\n"
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

/* Keep only CAP_NET_BIND_SERVICE after leaving root, so that a reload can
 * still bind a new port below 1024. Best effort: without it a reload that
 * adds such a port fails and says why. */
static void
keep_bind_capability(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	d[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].permitted =
	    CAP_TO_MASK(CAP_NET_BIND_SERVICE);
	d[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].effective =
	    CAP_TO_MASK(CAP_NET_BIND_SERVICE);
	if (syscall(SYS_capset, &h, d) == -1)
		log_msg(LOG_WARN, "cannot keep CAP_NET_BIND_SERVICE: %s; a "
		    "reload cannot bind new ports below 1024", strerror(errno));
}

/*
 * The ports are bound and the keys read: become c->user before any client
 * is served. Without a user, refuse to serve as root unless allow_root
 * says so. Returns 0, or -1 with a message in err.
 */
static int
drop_privileges(const struct config *c, char *err, size_t errlen)
{
	const struct passwd *pw;
	const struct group *gr = NULL;
	gid_t gid;

	if (c->user == NULL) {
		if (geteuid() == 0 && !c->allow_root) {
			snprintf(err, errlen, "%s: refusing to serve clients as "
			    "root: set user = NAME in [gateway] (or allow_root = "
			    "yes)", c->file);
			return (-1);
		}
		return (0);
	}
	if ((pw = getpwnam(c->user)) == NULL) {
		snprintf(err, errlen, "%s:%d: user %s: not found", c->file,
		    c->user_line, c->user);
		return (-1);
	}
	if (c->group != NULL && (gr = getgrnam(c->group)) == NULL) {
		snprintf(err, errlen, "%s:%d: group %s: not found", c->file,
		    c->group_line, c->group);
		return (-1);
	}
	gid = gr != NULL ? gr->gr_gid : pw->pw_gid;
	if (geteuid() != 0) {
		if (geteuid() == pw->pw_uid && getegid() == gid)
			return (0);
		snprintf(err, errlen, "%s:%d: user = %s: only root can switch "
		    "users (smtpgate runs as uid %u)", c->file, c->user_line,
		    c->user, (unsigned)geteuid());
		return (-1);
	}
	if (prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) == -1 ||
	    initgroups(pw->pw_name, gid) == -1 || setgid(gid) == -1 ||
	    setuid(pw->pw_uid) == -1) {
		snprintf(err, errlen, "cannot become user %s: %s", c->user,
		    strerror(errno));
		return (-1);
	}
	/* Make sure there is no way back. */
	if (pw->pw_uid != 0 && setuid(0) != -1) {
		snprintf(err, errlen, "could regain root after dropping it");
		return (-1);
	}
	keep_bind_capability();
	log_msg(LOG_INFO, "running as user %s (uid %u, gid %u)", c->user,
	    (unsigned)pw->pw_uid, (unsigned)gid);
	return (0);
}

/* Load the file. Returns NULL when it has errors, each logged (to stderr
 * before the gateway runs, to the log on a reload). */
static struct config *
load(const char *path, int running)
{
	struct config *c;
	const char *p, *nl;

	if ((c = config_load(path)) == NULL) {
		log_msg(LOG_ERROR, "%s: out of memory", path);
		return (NULL);
	}
	if (c->nerrors == 0)
		return (c);
	if (!running) {
		fputs(c->errors, stderr);
	} else {
		for (p = c->errors; (nl = strchr(p, '\n')) != NULL; p = nl + 1)
			log_msg(LOG_ERROR, "%.*s", (int)(nl - p), p);
	}
	config_free(c);
	return (NULL);
}

static int
nworkers_for(const struct config *c)
{
	long n;

	if (c->workers > 0)
		return ((int)c->workers);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return (n < 1 ? 1 : n > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS :
	    (int)n);
}

/* Every worker's listeners for g; NULL with a message in err. */
static struct listener **
new_lists(struct control *ctl, struct gen *g, char *err, size_t errlen)
{
	struct listener **lists;
	int i;

	if ((lists = calloc((size_t)ctl->gw.nworkers, sizeof(*lists))) ==
	    NULL) {
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	for (i = 0; i < ctl->gw.nworkers; i++)
		if (listener_new_list(g, &ctl->gw.workers[i], &lists[i], err,
		    errlen) == -1) {
			while (--i >= 0)
				listener_free_list(lists[i]);
			free(lists);
			return (NULL);
		}
	return (lists);
}

static void
apply_settings(struct control *ctl, const struct config *c)
{
	log_set_level((enum log_level)c->log_level);
	log_set_output(c->log_format == CONFIG_LOG_JSON, c->syslog);
	pthread_mutex_lock(&ctl->gw.lock);
	iptable_set_limits(ctl->gw.ips, (unsigned)c->limits.per_ip_connections,
	    (unsigned)c->limits.per_ip_rate);
	pthread_mutex_unlock(&ctl->gw.lock);
}

/*
 * SIGHUP: build the new generation whole (config, certificates, sockets,
 * listeners) beside the running one; on any error keep running on the old
 * one. Then switch every worker over; open sessions finish on the old one.
 */
static void
reload(struct control *ctl)
{
	const struct config *old = ctl->gen->conf;
	struct listener **lists;
	struct config *c;
	struct gen *g;
	char err[600];

	log_msg(LOG_INFO, "SIGHUP: reloading %s", ctl->path);
	if ((c = load(ctl->path, 1)) == NULL)
		goto fail;
	if (c->metrics.len != old->metrics.len || memcmp(&c->metrics.ss,
	    &old->metrics.ss, c->metrics.len) != 0)
		log_msg(LOG_WARN, "%s: a new metrics address needs a restart",
		    c->file);
	if (nworkers_for(c) != ctl->gw.nworkers)
		log_msg(LOG_WARN, "%s: a new number of workers needs a restart; "
		    "keeping %d", c->file, ctl->gw.nworkers);
	if ((c->user == NULL) != (old->user == NULL) || (c->user != NULL &&
	    strcmp(c->user, old->user) != 0))
		log_msg(LOG_WARN, "%s: a new user needs a restart", c->file);
	if ((g = gen_new(c, ctl->gw.nworkers, ctl->gen, ctl->gen->number + 1,
	    err, sizeof(err))) == NULL) {
		log_msg(LOG_ERROR, "%s", err);
		goto fail;
	}
	if ((lists = new_lists(ctl, g, err, sizeof(err))) == NULL) {
		log_msg(LOG_ERROR, "%s", err);
		gen_retire(g, ctl->gen, 1);
		gen_unref(g);
		goto fail;
	}
	metrics_register(g->conf);
	apply_settings(ctl, g->conf);
	ctl->view.conf = g->conf;
	if (worker_post_gen(&ctl->gw, g, lists) == -1) {
		/* A worker may still accept on an old socket: leave them all
		 * open rather than close one under it. */
		log_msg(LOG_ERROR, "a worker did not take the new configuration "
		    "in time; the old sockets stay open");
		gen_retire(ctl->gen, g, 0);
	} else {
		gen_retire(ctl->gen, g, 1);
	}
	free(lists);
	gen_unref(ctl->gen);
	ctl->gen = g;
	log_msg(LOG_INFO, "reloaded %s: configuration %u is live", ctl->path,
	    g->number);
	metrics_reload(1);
	return;

fail:
	metrics_reload(0);
	log_msg(LOG_ERROR, "reload failed: still serving configuration %u",
	    ctl->gen->number);
}

static void
signal_cb(struct ev_loop *loop, ev_signal *sig, int revents)
{
	struct control *ctl = sig->data;

	(void)revents;
	if (sig->signum == SIGHUP) {
		reload(ctl);
		return;
	}
	log_msg(LOG_INFO, "signal %d: no new connections; draining open "
	    "sessions for up to %.0fs", sig->signum,
	    ctl->gen->conf->timeouts.drain);
	ev_break(loop, EVBREAK_ALL);
}

static void
sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct control *ctl = t->data;

	(void)revents;
	pthread_mutex_lock(&ctl->gw.lock);
	iptable_sweep(ctl->gw.ips, ev_now(loop));
	pthread_mutex_unlock(&ctl->gw.lock);
}

static void
rotate_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)t;
	(void)revents;
	if (ticket_rotate() == -1)
		log_msg(LOG_WARN, "cannot make a new session ticket key; the "
		    "current one stays in use");
}

/* Run until SIGTERM or SIGINT, then drain. Returns the exit status. */
static int
serve(struct control *ctl)
{
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	struct listener **lists;
	char err[600];

	ev_signal_init(&ctl->sigterm, signal_cb, SIGTERM);
	ev_signal_init(&ctl->sigint, signal_cb, SIGINT);
	ev_signal_init(&ctl->sighup, signal_cb, SIGHUP);
	ctl->sigterm.data = ctl->sigint.data = ctl->sighup.data = ctl;
	ev_signal_start(loop, &ctl->sigterm);
	ev_signal_start(loop, &ctl->sigint);
	ev_signal_start(loop, &ctl->sighup);
	/* Handled from here on; one that came early was held (main). */
	sigprocmask(SIG_UNBLOCK, &held_signals, NULL);
	ev_timer_init(&ctl->sweep, sweep_cb, 60.0, 60.0);
	ctl->sweep.data = ctl;
	ev_timer_start(loop, &ctl->sweep);
	ev_timer_init(&ctl->rotate, rotate_cb, TICKET_ROTATE_SECONDS,
	    TICKET_ROTATE_SECONDS);
	ev_timer_start(loop, &ctl->rotate);

	if ((lists = new_lists(ctl, ctl->gen, err, sizeof(err))) == NULL) {
		log_msg(LOG_ERROR, "%s", err);
		return (1);
	}
	if (worker_start_all(&ctl->gw, ctl->gen, lists) == -1) {
		log_msg(LOG_ERROR, "cannot start the workers: %s",
		    strerror(errno));
		free(lists);
		worker_stop_all(&ctl->gw);
		return (1);
	}
	free(lists);
	if (ctl->gen->conf->metrics.len != 0 && (ctl->ms =
	    metrics_server_start(loop, &ctl->gen->conf->metrics, &ctl->view,
	    err, sizeof(err))) == NULL) {
		log_msg(LOG_ERROR, "%s", err);
		worker_stop_all(&ctl->gw);
		return (1);
	}
	log_msg(LOG_INFO, "smtpgate %s ready: %d worker%s", SMTPGATE_VERSION,
	    ctl->gw.nworkers, ctl->gw.nworkers == 1 ? "" : "s");

	ev_run(loop, 0);

	/* Scrapes are not served while the workers drain. */
	metrics_server_free(ctl->ms);
	worker_stop_all(&ctl->gw);
	ev_timer_stop(loop, &ctl->sweep);
	ev_timer_stop(loop, &ctl->rotate);
	ev_signal_stop(loop, &ctl->sigterm);
	ev_signal_stop(loop, &ctl->sigint);
	ev_signal_stop(loop, &ctl->sighup);
	log_msg(LOG_INFO, "stopped");
	return (0);
}

int
main(int argc, char **argv)
{
	struct control ctl;
	struct config *c;
	char err[600];
	int ch, i, test = 0, rc = 1;

	memset(&ctl, 0, sizeof(ctl));
	while ((ch = getopt(argc, argv, "c:tVh")) != -1) {
		switch (ch) {
		case 'c':
			ctl.path = optarg;
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
	if (ctl.path == NULL || optind != argc)
		usage();

	/* The sockets listen before the handlers are in place: hold the
	 * signals until then, so an early SIGHUP is a reload, not an exit. */
	sigemptyset(&held_signals);
	sigaddset(&held_signals, SIGHUP);
	sigaddset(&held_signals, SIGTERM);
	sigaddset(&held_signals, SIGINT);
	sigprocmask(SIG_BLOCK, &held_signals, NULL);
	if ((c = load(ctl.path, 0)) == NULL)
		return (1);
	log_set_level((enum log_level)c->log_level);
	if (!test)
		log_set_output(c->log_format == CONFIG_LOG_JSON, c->syslog);
	if (test) {
		/* Everything a reload would build, but no socket. */
		if ((ctl.gen = gen_new(c, 0, NULL, 0, err, sizeof(err))) ==
		    NULL) {
			fprintf(stderr, "%s\n", err);
			return (1);
		}
		printf("%s: ok\n", ctl.path);
		gen_unref(ctl.gen);
		ticket_fini();
		return (0);
	}

	signal(SIGPIPE, SIG_IGN);
	raise_nofile(c->max_connections);
	/* A relay frees and takes 64 KB buffers many times a second. With
	 * glibc's 128 KB default, a free at the top of a worker's arena gave
	 * the pages back and the next buffer faulted them in again (about 20
	 * page faults per MB relayed); up to 512 KB per arena stays mapped. */
	mallopt(M_TRIM_THRESHOLD, 512 * 1024);
	metrics_register(c);
	ctl.gw.nworkers = nworkers_for(c);
	if ((ctl.gen = gen_new(c, ctl.gw.nworkers, NULL, 1, err,
	    sizeof(err))) == NULL) {
		log_msg(LOG_ERROR, "%s", err);
		return (1);
	}
	if (drop_privileges(ctl.gen->conf, err, sizeof(err)) == -1) {
		log_msg(LOG_ERROR, "%s", err);
		goto out;
	}
	pthread_mutex_init(&ctl.gw.lock, NULL);
	pthread_cond_init(&ctl.gw.posted, NULL);
	ctl.gw.ips = iptable_new(0, 0);
	ctl.gw.workers = calloc((size_t)ctl.gw.nworkers,
	    sizeof(*ctl.gw.workers));
	ctl.ws = calloc((size_t)ctl.gw.nworkers, sizeof(*ctl.ws));
	if (ctl.gw.ips == NULL || ctl.gw.workers == NULL || ctl.ws == NULL) {
		log_msg(LOG_ERROR, "out of memory");
		goto out;
	}
	for (i = 0; i < ctl.gw.nworkers; i++) {
		ctl.gw.workers[i].gw = &ctl.gw;
		ctl.gw.workers[i].index = i;
		ctl.ws[i] = &ctl.gw.workers[i];
	}
	ctl.view.ws = ctl.ws;
	ctl.view.nworkers = ctl.gw.nworkers;
	ctl.view.conf = ctl.gen->conf;
	ctl.view.version = SMTPGATE_VERSION;
	apply_settings(&ctl, ctl.gen->conf);
	rc = serve(&ctl);
	for (i = 0; i < ctl.gw.nworkers; i++) {
		if (ctl.gw.workers[i].loop != NULL)
			ev_loop_destroy(ctl.gw.workers[i].loop);
		gen_unref(ctl.gw.workers[i].gen);
	}
out:
	free(ctl.ws);
	free(ctl.gw.workers);
	iptable_free(ctl.gw.ips);
	gen_unref(ctl.gen);
	ticket_fini();
	ev_loop_destroy(EV_DEFAULT);
	return (rc);
}
