#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../config/config.h"
#include "tls.h"

/* The last operation's errno, when OpenSSL reported SSL_ERROR_SYSCALL. */
static _Thread_local int last_errno;

SSL_CTX *
tls_ctx_new(const struct config_tls *c, char *err, size_t errlen)
{
	static const unsigned char sid_ctx[] = "smtpgate";
	int types[CONFIG_MAX_CERTS], type, i, j;
	char e[256];
	SSL_CTX *ctx;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "SSL_CTX_new: %s", tls_error(e, sizeof(e)));
		return (NULL);
	}
	SSL_CTX_set_min_proto_version(ctx, c->min_version);
	/* A TCP close without close_notify reads as an EOF: truncation cannot
	 * end a message, because only CRLF.CRLF or a counted BDAT does. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Partial writes and a moving buffer suit a relay whose output buffer
	 * compacts; released buffers keep idle sessions small. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	if (SSL_CTX_set1_groups_list(ctx, "X25519:P-256:X448:P-384:P-521") != 1)
		goto fail;
	if (c->ciphers != NULL && SSL_CTX_set_cipher_list(ctx, c->ciphers) != 1) {
		snprintf(err, errlen, "ciphers '%s': %s", c->ciphers,
		    tls_error(e, sizeof(e)));
		goto fail_msg;
	}
	if (c->ciphersuites != NULL &&
	    SSL_CTX_set_ciphersuites(ctx, c->ciphersuites) != 1) {
		snprintf(err, errlen, "ciphersuites '%s': %s", c->ciphersuites,
		    tls_error(e, sizeof(e)));
		goto fail_msg;
	}
	/* One context holds one chain per key type, so an RSA and an ECDSA
	 * pair live side by side and OpenSSL picks by the client's offer. */
	for (i = 0; i < c->ncerts && i < c->nkeys; i++) {
		if (SSL_CTX_use_certificate_chain_file(ctx, c->certs[i]) != 1) {
			snprintf(err, errlen, "cert %s: %s", c->certs[i],
			    tls_error(e, sizeof(e)));
			goto fail_msg;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, c->keys[i],
		    SSL_FILETYPE_PEM) != 1) {
			snprintf(err, errlen, "key %s: %s", c->keys[i],
			    tls_error(e, sizeof(e)));
			goto fail_msg;
		}
		if (SSL_CTX_check_private_key(ctx) != 1) {
			snprintf(err, errlen, "key %s does not match cert %s: %s",
			    c->keys[i], c->certs[i], tls_error(e, sizeof(e)));
			goto fail_msg;
		}
		/* A second chain of the same key type would silently replace
		 * the first. */
		type = EVP_PKEY_get_base_id(SSL_CTX_get0_privatekey(ctx));
		for (j = 0; j < i; j++)
			if (types[j] == type) {
				snprintf(err, errlen, "cert %s: a certificate with "
				    "a %s key is configured already", c->certs[i],
				    OBJ_nid2sn(type));
				goto fail_msg;
			}
		types[i] = type;
	}
	return (ctx);

fail:
	snprintf(err, errlen, "%s", tls_error(e, sizeof(e)));
fail_msg:
	SSL_CTX_free(ctx);
	return (NULL);
}

SSL_CTX *
tls_client_ctx_new(const struct config_upstream *u, char *err, size_t errlen)
{
	char e[256];
	SSL_CTX *ctx;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "SSL_CTX_new: %s", tls_error(e, sizeof(e)));
		return (NULL);
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (!u->verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return (ctx);
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (u->ca_file != NULL ?
	    SSL_CTX_load_verify_locations(ctx, u->ca_file, NULL) != 1 :
	    SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, errlen, "ca_file %s: %s", u->ca_file ? u->ca_file :
		    "(system store)", tls_error(e, sizeof(e)));
		SSL_CTX_free(ctx);
		return (NULL);
	}
	return (ctx);
}

/* Map an operation's result to tls_io: the one place SSL_get_error runs. */
static enum tls_io
tls_result(SSL *ssl, int r)
{
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_NONE:
		return (TLS_IO_OK);
	case SSL_ERROR_WANT_READ:
		return (TLS_IO_WANT_READ);
	case SSL_ERROR_WANT_WRITE:
		return (TLS_IO_WANT_WRITE);
	case SSL_ERROR_ZERO_RETURN:
		return (TLS_IO_EOF);
	case SSL_ERROR_SYSCALL:
		last_errno = errno;
		return (TLS_IO_ERROR);
	default:
		last_errno = 0;
		return (TLS_IO_ERROR);
	}
}

enum tls_io
tls_handshake(SSL *ssl)
{
	ERR_clear_error();
	return (tls_result(ssl, SSL_do_handshake(ssl)));
}

enum tls_io
tls_read(SSL *ssl, void *p, size_t n, size_t *n_r)
{
	ERR_clear_error();
	*n_r = 0;
	return (tls_result(ssl, SSL_read_ex(ssl, p, n, n_r) == 1 ? 1 : 0));
}

enum tls_io
tls_write(SSL *ssl, const void *p, size_t n, size_t *n_r)
{
	ERR_clear_error();
	*n_r = 0;
	return (tls_result(ssl, SSL_write_ex(ssl, p, n, n_r) == 1 ? 1 : 0));
}

const char *
tls_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e != 0)
		ERR_error_string_n(e, buf, len);
	else if (last_errno != 0)
		snprintf(buf, len, "%s", strerror(last_errno));
	else
		snprintf(buf, len, "unexpected EOF");
	ERR_clear_error();
	return (buf);
}
