/*
 * tls: server contexts and non-blocking TLS operations. The rest of the
 * program sees one result enum and never calls SSL_get_error().
 */
#ifndef SMTPGATE_TLS_H
#define SMTPGATE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct config;
struct config_listener;

enum tls_io {
	TLS_IO_OK,
	TLS_IO_WANT_READ,
	TLS_IO_WANT_WRITE,
	TLS_IO_EOF,		/* the peer closed (close_notify or TCP EOF) */
	TLS_IO_ERROR
};

/*
 * Build the server context for listener l (NULL: one without client
 * verification): the [tls] certificates and protocol settings, TLS 1.2
 * minimum by default, renegotiation off, server cipher preference, X25519
 * first, tickets on; l's client_ca and verify_client. With [tls:NAME]
 * sections it owns a context per section and the table that picks one by
 * the client's server name, so the caller holds just this one reference
 * (SSL_CTX_free), and SSLs still using it stay safe after it is dropped.
 * Returns NULL with "FILE:LINE: what is wrong" in err.
 */
SSL_CTX		*tls_server_ctx_new(const struct config *c,
		    const struct config_listener *l, char *err, size_t errlen);
/*
 * The server context of every listener of c, indexed like c->listeners:
 * one shared (and referenced once per listener) by all without client
 * verification, its own for each with, NULL for egress listeners. Returns
 * 0, or -1 with "FILE:LINE: ..." in err and nothing held.
 */
int		 tls_server_ctxs_new(const struct config *c, SSL_CTX **ctx_r,
		    char *err, size_t errlen);
/* The subject of the client's verified certificate, RFC 2253, safe inside
 * a quoted log value (malloc'd, caller frees), or NULL when it presented
 * none. */
char		*tls_client_subject(const SSL *ssl);

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
