/*
 * http: a tiny HTTP/1.x server on a libev loop, for /metrics and /healthz.
 * One request per connection, answered with "Connection: close". Reads are
 * bounded (HTTP_MAX_REQUEST bytes of request head, HTTP_TIMEOUT seconds to
 * send it) and so is the number of connections (HTTP_MAX_CONNS): a slow or
 * hostile client costs a buffer and a timer, never a wait on the loop.
 */
#ifndef SMTPGATE_HTTP_H
#define SMTPGATE_HTTP_H

#include <ev.h>
#include <stddef.h>

#define HTTP_MAX_REQUEST	8192	/* request line and headers */
#define HTTP_TIMEOUT		5.0	/* to send the request; to take the reply */
#define HTTP_MAX_CONNS		16	/* more are closed at once */

struct config_addr;
struct http_conn;
struct http_server;

/* A complete, well-formed request: method as sent ("GET"), path without
 * its query. The handler must answer with http_respond(), at once or
 * later from the same loop; until it does the connection stays open (and
 * is not timed out), so the handler must answer in bounded time. */
typedef void (*http_handler_fn)(void *arg, struct http_conn *c,
    const char *method, const char *path);

/* Listen on addr and serve on loop. Returns NULL with a message in err. */
struct http_server	*http_server_new(struct ev_loop *loop,
			    const struct config_addr *addr, http_handler_fn fn,
			    void *arg, char *err, size_t errlen);
/* Close the socket and every connection (pending ones too: the handler
 * must forget them first). NULL does nothing. */
void			 http_server_free(struct http_server *srv);

/* Answer with status, content type and body (copied); a HEAD request gets
 * the headers only. The connection closes once the reply is out. */
void			 http_respond(struct http_conn *c, int status,
			    const char *ctype, const char *body, size_t len);

#endif
