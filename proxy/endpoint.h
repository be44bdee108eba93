/*
 * endpoint: one side of a session. A socket, an optional TLS layer under it,
 * a read and a write watcher, and one buffer per direction. It moves bytes;
 * what they mean is the tracker's business.
 */
#ifndef SMTPGATE_ENDPOINT_H
#define SMTPGATE_ENDPOINT_H

#include <ev.h>
#include <openssl/ssl.h>
#include <stdint.h>

#include "buf.h"

struct endpoint {
	int		 fd;
	SSL		*ssl;		/* NULL while plaintext */
	ev_io		 rio, wio;
	struct buf	 in, out;
	unsigned	 eof:1;		/* the peer will send nothing more */
	unsigned	 failed:1;	/* a read or write error: give up */
	unsigned	 handshaking:1;
	unsigned	 connecting:1;
	unsigned	 read_wants_write:1;	/* TLS: a read must wait for POLLOUT */
	unsigned	 write_wants_read:1;	/* TLS: a write must wait for POLLIN */
	unsigned	 hs_wants_write:1;	/* the handshake waits for POLLOUT */
	uint64_t	 bytes_in, bytes_out;	/* application bytes */
	char		 error[128];	/* why it failed, for the log */
};

/* Set up an endpoint around fd (-1: none yet) with buffers of at most
 * incap and outcap bytes; cb gets both watchers, whose data is set to arg. */
void	endpoint_init(struct endpoint *e, int fd, size_t incap, size_t outcap,
	    void (*cb)(struct ev_loop *, ev_io *, int), void *arg);
/* Stop the watchers, free TLS and buffers, close the socket. */
void	endpoint_fini(struct endpoint *e, struct ev_loop *loop);
/* Take fd as the socket (after a connect() started). */
void	endpoint_set_fd(struct endpoint *e, int fd);

/* Attach TLS: as a server when peer_name is NULL, else as a client that
 * sends peer_name as SNI and, if ctx verifies, checks the certificate is
 * for it (RFC 7817). The only place an SSL is attached: it refuses (-1)
 * while any plaintext input is buffered, so no byte read before the
 * handshake can be taken as read inside it. */
int	endpoint_start_tls(struct endpoint *e, SSL_CTX *ctx,
	    const char *peer_name);
/* Drive the handshake: 1 done, 0 in progress, -1 failed (error set). */
int	endpoint_handshake(struct endpoint *e);

/* Read what the socket has into in. Returns the bytes read; sets eof or
 * failed. */
size_t	endpoint_fill(struct endpoint *e);
/* Write out until it is empty or the socket is full. Returns bytes written;
 * sets failed. */
size_t	endpoint_flush(struct endpoint *e);
/* Whether TLS holds bytes (decrypted, or read ahead and not yet decrypted)
 * that the socket will not signal again. */
int	endpoint_pending(const struct endpoint *e);

/* Start or stop each watcher as wanted (reading: whether input is wanted). */
void	endpoint_watch(struct endpoint *e, struct ev_loop *loop, int reading);

#endif
