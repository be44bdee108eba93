/*
 * tls: server contexts and non-blocking TLS operations. The rest of the
 * program sees one result enum and never calls SSL_get_error().
 */
#ifndef SMTPGATE_TLS_H
#define SMTPGATE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct config_tls;

enum tls_io {
	TLS_IO_OK,
	TLS_IO_WANT_READ,
	TLS_IO_WANT_WRITE,
	TLS_IO_EOF,		/* the peer closed (close_notify or TCP EOF) */
	TLS_IO_ERROR
};

/* Build a server context from [tls]: every cert/key pair loaded and checked,
 * TLS 1.2 minimum by default, renegotiation off, server cipher preference,
 * X25519 first, tickets on. Returns NULL with a message in err. */
SSL_CTX		*tls_ctx_new(const struct config_tls *c, char *err, size_t errlen);

/* Build a client context for [upstream:NAME]: TLS 1.2 minimum, and unless
 * verify = no, the chain checked against ca_file or the system store.
 * Returns NULL with a message in err. */
struct config_upstream;
SSL_CTX		*tls_client_ctx_new(const struct config_upstream *u, char *err,
		    size_t errlen);

/* Each returns TLS_IO_OK with the byte count in *n_r, or why it could not. */
enum tls_io	 tls_handshake(SSL *ssl);
enum tls_io	 tls_read(SSL *ssl, void *p, size_t n, size_t *n_r);
enum tls_io	 tls_write(SSL *ssl, const void *p, size_t n, size_t *n_r);

/* The first queued OpenSSL error as text (or errno's text for syscalls),
 * for log lines; the queue is cleared. */
const char	*tls_error(char *buf, size_t len);

#endif
