/*
 * metrics_server: the HTTP endpoint for Prometheus (GET /metrics) and for
 * health checks (GET /healthz), on whichever loop its owner chooses.
 */
#ifndef SMTPGATE_METRICS_SERVER_H
#define SMTPGATE_METRICS_SERVER_H

#include <ev.h>
#include <stddef.h>

struct config;
struct config_addr;
struct metrics_server;
struct worker;

/* What the server reports on: read at each request, on the server's loop.
 * The owner keeps it alive and may change it between requests (workers
 * added, a config reloaded) from that loop's thread. */
struct metrics_view {
	struct worker *const	*ws;		/* every worker, summed */
	int			 nworkers;
	const struct config	*conf;		/* whose backends /healthz checks */
	const char		*version;	/* smtpgate_build_info */
};

/* Listen on addr and serve on loop. Returns NULL with a message in err. */
struct metrics_server	*metrics_server_start(struct ev_loop *loop,
			    const struct config_addr *addr,
			    const struct metrics_view *view, char *err,
			    size_t errlen);
/* Stop listening and close every HTTP connection. NULL does nothing. */
void			 metrics_server_free(struct metrics_server *ms);

#endif
