#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/config.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "metrics_server.h"

struct metrics_server {
	const struct metrics_view	*view;
	struct http_server		*http;
	struct health			*health;
};

/* Prometheus text exposition format 0.0.4. */
#define METRICS_CTYPE	"text/plain; version=0.0.4; charset=utf-8"
#define TEXT_CTYPE	"text/plain; charset=utf-8"

static void
handle(void *arg, struct http_conn *c, const char *method, const char *path)
{
	struct metrics_server *ms = arg;
	const struct metrics_view *v = ms->view;
	char *text;
	size_t len;
	int is_metrics = strcmp(path, "/metrics") == 0;

	if (!is_metrics && strcmp(path, "/healthz") != 0) {
		http_respond(c, 404, TEXT_CTYPE, "not found\n", 10);
		return;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		http_respond(c, 405, TEXT_CTYPE, "method not allowed\n", 19);
		return;
	}
	if (!is_metrics) {
		health_check(ms->health, v->conf, c);
		return;
	}
	if ((text = metrics_render(v->ws, v->nworkers, v->version, &len)) ==
	    NULL) {
		log_msg(LOG_ERROR, "metrics: out of memory");
		http_respond(c, 500, TEXT_CTYPE, "out of memory\n", 14);
		return;
	}
	http_respond(c, 200, METRICS_CTYPE, text, len);
	free(text);
}

struct metrics_server *
metrics_server_start(struct ev_loop *loop, const struct config_addr *addr,
    const struct metrics_view *view, char *err, size_t errlen)
{
	struct metrics_server *ms;

	if ((ms = calloc(1, sizeof(*ms))) == NULL ||
	    (ms->health = health_new(loop)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto err1;
	}
	ms->view = view;
	if ((ms->http = http_server_new(loop, addr, handle, ms, err,
	    errlen)) == NULL)
		goto err2;
	log_msg(LOG_INFO, "metrics on http://%s/metrics and /healthz",
	    addr->text);
	return (ms);

err2:
	health_free(ms->health);
err1:
	free(ms);
	return (NULL);
}

void
metrics_server_free(struct metrics_server *ms)
{
	if (ms == NULL)
		return;
	/* Health first: it forgets the connections it was to answer, which
	 * the HTTP server then closes. */
	health_free(ms->health);
	http_server_free(ms->http);
	free(ms);
}
