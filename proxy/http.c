#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../config/config.h"
#include "http.h"

struct http_conn {
	struct http_server	*srv;
	int			 fd;
	ev_io			 rio, wio;
	ev_timer		 timer;
	int			 head;		/* a HEAD request: no body */
	char			 req[HTTP_MAX_REQUEST + 1];
	size_t			 reqlen;
	char			*out;		/* the reply, headers and body */
	size_t			 outlen, outoff;
	struct http_conn	*prev, *next;
};

struct http_server {
	struct ev_loop		*loop;
	int			 fd;
	ev_io			 io;
	ev_timer		 retry;		/* after EMFILE: accept again later */
	http_handler_fn		 fn;
	void			*arg;
	struct http_conn	*conns;
	unsigned		 nconns;
};

static void
conn_free(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	ev_io_stop(srv->loop, &c->rio);
	ev_io_stop(srv->loop, &c->wio);
	ev_timer_stop(srv->loop, &c->timer);
	close(c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	srv->nconns--;
	free(c->out);
	free(c);
}

static const char *
status_text(int status)
{
	switch (status) {
	case 200: return ("OK");
	case 400: return ("Bad Request");
	case 404: return ("Not Found");
	case 405: return ("Method Not Allowed");
	case 431: return ("Request Header Fields Too Large");
	case 503: return ("Service Unavailable");
	default: return ("Internal Server Error");
	}
}

static void
write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct http_conn *c = w->data;
	ssize_t n;

	(void)loop;
	(void)revents;
	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			conn_free(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	/* Everything is out: a FIN after it, then the close. */
	shutdown(c->fd, SHUT_WR);
	conn_free(c);
}

void
http_respond(struct http_conn *c, int status, const char *ctype,
    const char *body, size_t len)
{
	struct http_server *srv = c->srv;
	char hdr[256];
	int n;

	n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
	    status_text(status), ctype, len, status == 405 ?
	    "Allow: GET, HEAD\r\n" : "");
	if (c->head)
		len = 0;
	if (n < 0 || (size_t)n >= sizeof(hdr) ||
	    (c->out = malloc((size_t)n + len)) == NULL) {
		conn_free(c);
		return;
	}
	memcpy(c->out, hdr, (size_t)n);
	if (len > 0)
		memcpy(c->out + n, body, len);
	c->outlen = (size_t)n + len;
	/* The reader is done; the same deadline now bounds the write. */
	ev_io_stop(srv->loop, &c->rio);
	ev_timer_stop(srv->loop, &c->timer);
	ev_timer_set(&c->timer, HTTP_TIMEOUT, 0.0);
	ev_timer_start(srv->loop, &c->timer);
	ev_io_start(srv->loop, &c->wio);
}

static void
reply_text(struct http_conn *c, int status, const char *text)
{
	http_respond(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/*
 * A whole request head is in c->req: check the request line (RFC 9112
 * section 3) and hand it to the handler. Headers are not needed, so they
 * are only required to be there.
 */
static void
request(struct http_conn *c)
{
	char *sp1, *sp2, *eol, *q;

	eol = strpbrk(c->req, "\r\n");
	*eol = '\0';
	if ((sp1 = strchr(c->req, ' ')) == NULL ||
	    (sp2 = strchr(sp1 + 1, ' ')) == NULL || strchr(sp2 + 1, ' ') ||
	    sp1 == c->req || sp1[1] != '/' ||
	    strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || strlen(sp2 + 1) != 8) {
		reply_text(c, 400, "bad request\n");
		return;
	}
	*sp1 = *sp2 = '\0';
	if ((q = strchr(sp1 + 1, '?')) != NULL)
		*q = '\0';
	c->head = strcmp(c->req, "HEAD") == 0;
	/* From here on the handler owns the timing. */
	ev_io_stop(c->srv->loop, &c->rio);
	ev_timer_stop(c->srv->loop, &c->timer);
	c->srv->fn(c->srv->arg, c, c->req, sp1 + 1);
}

/* Whether p[0..len) holds an empty line at or after from: LF, then LF
 * or CRLF (a request head ends there; lines may end in LF alone). */
static int
head_ends(const char *p, size_t from, size_t len)
{
	const char *lf = p + from, *end = p + len;

	while ((lf = memchr(lf, '\n', (size_t)(end - lf))) != NULL) {
		lf++;
		if (lf < end && *lf == '\r')
			lf++;
		if (lf < end && *lf == '\n')
			return (1);
	}
	return (0);
}

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct http_conn *c = w->data;
	size_t from;
	ssize_t n;

	(void)loop;
	(void)revents;
	n = recv(c->fd, c->req + c->reqlen, HTTP_MAX_REQUEST - c->reqlen, 0);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(c);
		return;
	}
	from = c->reqlen;
	c->reqlen += (size_t)n;
	c->req[c->reqlen] = '\0';
	if (memchr(c->req + from, '\0', (size_t)n) != NULL) {
		reply_text(c, 400, "bad request\n");
		return;
	}
	/* Only the new bytes, and the two before them, can end the head. */
	if (head_ends(c->req, from > 2 ? from - 2 : 0, c->reqlen)) {
		request(c);
		return;
	}
	if (c->reqlen == HTTP_MAX_REQUEST)
		reply_text(c, 431, "request head too large\n");
}

static void
timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	conn_free(t->data);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct http_server *srv = w->data;
	struct http_conn *c;
	int fd;

	(void)revents;
	while ((fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK |
	    SOCK_CLOEXEC)) != -1) {
		if (srv->nconns >= HTTP_MAX_CONNS ||
		    (c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		c->srv = srv;
		c->fd = fd;
		ev_io_init(&c->rio, read_cb, fd, EV_READ);
		ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
		ev_timer_init(&c->timer, timer_cb, HTTP_TIMEOUT, 0.0);
		c->rio.data = c->wio.data = c->timer.data = c;
		c->next = srv->conns;
		if (srv->conns != NULL)
			srv->conns->prev = c;
		srv->conns = c;
		srv->nconns++;
		ev_io_start(loop, &c->rio);
		ev_timer_start(loop, &c->timer);
	}
	if (errno == EMFILE || errno == ENFILE) {
		/* Level-triggered: a connection we cannot take would spin the
		 * control loop (signals, reloads). Pause a moment. */
		ev_io_stop(loop, &srv->io);
		ev_timer_set(&srv->retry, 1.0, 0.0);
		ev_timer_start(loop, &srv->retry);
	}
}

static void
retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct http_server *srv = t->data;

	(void)revents;
	ev_io_start(loop, &srv->io);
}

struct http_server *
http_server_new(struct ev_loop *loop, const struct config_addr *addr,
    http_handler_fn fn, void *arg, char *err, size_t errlen)
{
	struct http_server *srv;
	int one = 1;

	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto err0;
	}
	srv->loop = loop;
	srv->fn = fn;
	srv->arg = arg;
	srv->fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (srv->fd == -1)
		goto err1;
	setsockopt(srv->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(srv->fd, (const struct sockaddr *)&addr->ss, addr->len) == -1 ||
	    listen(srv->fd, 64) == -1)
		goto err2;
	ev_io_init(&srv->io, accept_cb, srv->fd, EV_READ);
	srv->io.data = srv;
	ev_init(&srv->retry, retry_cb);
	srv->retry.data = srv;
	ev_io_start(loop, &srv->io);
	return (srv);

err2:
	one = errno;
	close(srv->fd);
	errno = one;
err1:
	snprintf(err, errlen, "metrics %s: %s", addr->text, strerror(errno));
	free(srv);
err0:
	return (NULL);
}

void
http_server_free(struct http_server *srv)
{
	if (srv == NULL)
		return;
	while (srv->conns != NULL)
		conn_free(srv->conns);
	ev_io_stop(srv->loop, &srv->io);
	ev_timer_stop(srv->loop, &srv->retry);
	close(srv->fd);
	free(srv);
}
