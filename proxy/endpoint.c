#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../tls/tls.h"
#include "endpoint.h"

void
endpoint_init(struct endpoint *e, int fd, size_t incap, size_t outcap,
    void (*cb)(struct ev_loop *, ev_io *, int), void *arg)
{
	memset(e, 0, sizeof(*e));
	e->fd = fd;
	buf_init(&e->in, incap);
	buf_init(&e->out, outcap);
	ev_io_init(&e->rio, cb, fd, EV_READ);
	ev_io_init(&e->wio, cb, fd, EV_WRITE);
	e->rio.data = e->wio.data = arg;
}

void
endpoint_set_fd(struct endpoint *e, int fd)
{
	e->fd = fd;
	ev_io_set(&e->rio, fd, EV_READ);
	ev_io_set(&e->wio, fd, EV_WRITE);
}

void
endpoint_fini(struct endpoint *e, struct ev_loop *loop)
{
	ev_io_stop(loop, &e->rio);
	ev_io_stop(loop, &e->wio);
	if (e->ssl != NULL) {
		/* RFC 8314 section 3.4: a close alert before the TCP close,
		 * best effort on a non-blocking socket. */
		if (!e->failed && !e->handshaking)
			SSL_shutdown(e->ssl);
		SSL_free(e->ssl);
		e->ssl = NULL;
	}
	if (e->fd != -1)
		close(e->fd);
	e->fd = -1;
	buf_fini(&e->in);
	buf_fini(&e->out);
}

static void __attribute__((format(printf, 2, 3)))
fail(struct endpoint *e, const char *fmt, ...)
{
	va_list ap;

	e->failed = 1;
	if (e->error[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(e->error, sizeof(e->error), fmt, ap);
	va_end(ap);
}

static int
is_address(const char *name)
{
	struct in6_addr a;

	return (inet_pton(AF_INET, name, &a) == 1 ||
	    inet_pton(AF_INET6, name, &a) == 1);
}

int
endpoint_start_tls(struct endpoint *e, SSL_CTX *ctx, const char *peer_name)
{
	if (buf_len(&e->in) > 0 || e->ssl != NULL)
		return (-1);
	if ((e->ssl = SSL_new(ctx)) == NULL)
		return (-1);
	if (SSL_set_fd(e->ssl, e->fd) != 1)
		goto fail;
	/* Read as much as the socket holds in one read(), not a record
	 * header and then its body. What is read ahead is what
	 * endpoint_pending() reports. */
	SSL_set_read_ahead(e->ssl, 1);
	/* Room for a few records per read (OpenSSL allocates it only while
	 * bytes wait in it: SSL_MODE_RELEASE_BUFFERS). */
	SSL_set_default_read_buffer_len(e->ssl, buf_room(&e->in));
	if (peer_name == NULL) {
		SSL_set_accept_state(e->ssl);
	} else {
		/* RFC 6066 section 3: no address literal as a server name. */
		if (!is_address(peer_name) &&
		    SSL_set_tlsext_host_name(e->ssl, peer_name) != 1)
			goto fail;
		if (SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_NONE &&
		    SSL_set1_host(e->ssl, peer_name) != 1)
			goto fail;
		SSL_set_connect_state(e->ssl);
	}
	e->handshaking = 1;
	return (0);

fail:
	SSL_free(e->ssl);
	e->ssl = NULL;
	return (-1);
}

int
endpoint_handshake(struct endpoint *e)
{
	char err[160];

	e->hs_wants_write = 0;
	switch (tls_handshake(e->ssl)) {
	case TLS_IO_OK:
		e->handshaking = 0;
		return (1);
	case TLS_IO_WANT_READ:
		return (0);
	case TLS_IO_WANT_WRITE:
		e->hs_wants_write = 1;
		return (0);
	case TLS_IO_EOF:
		fail(e, "TLS handshake: peer closed");
		return (-1);
	case TLS_IO_ERROR:
		break;
	}
	fail(e, "TLS handshake: %s", tls_error(err, sizeof(err)));
	return (-1);
}

size_t
endpoint_fill(struct endpoint *e)
{
	char err[160], *t;
	size_t total = 0, got;
	ssize_t r;

	e->read_wants_write = 0;
	while (!e->eof && !e->failed && buf_room(&e->in) > 0) {
		if ((t = buf_tail(&e->in)) == NULL) {
			fail(e, "out of memory");
			break;
		}
		if (e->ssl == NULL) {
			r = recv(e->fd, t, buf_room(&e->in), 0);
			if (r > 0) {
				got = (size_t)r;
			} else if (r == 0) {
				e->eof = 1;
				break;
			} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
				break;
			} else if (errno == EINTR) {
				continue;
			} else {
				fail(e, "%s", strerror(errno));
				break;
			}
		} else {
			switch (tls_read(e->ssl, t, buf_room(&e->in), &got)) {
			case TLS_IO_OK:
				break;
			case TLS_IO_WANT_WRITE:
				e->read_wants_write = 1;
				goto out;
			case TLS_IO_WANT_READ:
				goto out;
			case TLS_IO_EOF:
				e->eof = 1;
				goto out;
			case TLS_IO_ERROR:
				fail(e, "TLS read: %s", tls_error(err,
				    sizeof(err)));
				goto out;
			}
		}
		buf_added(&e->in, got);
		total += got;
	}
out:
	/* A failed or empty read leaves no storage behind. */
	if (buf_len(&e->in) == 0)
		buf_fini(&e->in);
	e->bytes_in += total;
	return (total);
}

size_t
endpoint_flush(struct endpoint *e)
{
	char err[160];
	size_t total = 0, put;
	ssize_t r;

	e->write_wants_read = 0;
	while (!e->failed && buf_len(&e->out) > 0) {
		if (e->ssl == NULL) {
			r = send(e->fd, buf_head(&e->out), buf_len(&e->out),
			    MSG_NOSIGNAL);
			if (r >= 0) {
				put = (size_t)r;
			} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
				break;
			} else if (errno == EINTR) {
				continue;
			} else {
				fail(e, "%s", strerror(errno));
				break;
			}
		} else {
			switch (tls_write(e->ssl, buf_head(&e->out),
			    buf_len(&e->out), &put)) {
			case TLS_IO_OK:
				break;
			case TLS_IO_WANT_READ:
				e->write_wants_read = 1;
				goto out;
			case TLS_IO_WANT_WRITE:
				goto out;
			case TLS_IO_EOF:
			case TLS_IO_ERROR:
				fail(e, "TLS write: %s", tls_error(err,
				    sizeof(err)));
				goto out;
			}
		}
		buf_consume(&e->out, put);
		total += put;
	}
out:
	e->bytes_out += total;
	return (total);
}

int
endpoint_pending(const struct endpoint *e)
{
	return (e->ssl != NULL && !e->handshaking && SSL_has_pending(e->ssl));
}

void
endpoint_watch(struct endpoint *e, struct ev_loop *loop, int reading)
{
	int r, w;

	if (e->fd == -1)
		return;
	if (e->failed) {
		r = w = 0;
	} else if (e->connecting) {
		r = 0;
		w = 1;
	} else if (e->handshaking) {
		r = !e->hs_wants_write;
		w = e->hs_wants_write;
	} else {
		/* libev is level-triggered: a reader with no room would spin. */
		r = (reading && !e->eof && buf_room(&e->in) > 0) ||
		    e->write_wants_read;
		w = buf_len(&e->out) > 0 || e->read_wants_write;
	}
	if (r)
		ev_io_start(loop, &e->rio);
	else
		ev_io_stop(loop, &e->rio);
	if (w)
		ev_io_start(loop, &e->wio);
	else
		ev_io_stop(loop, &e->wio);
}
