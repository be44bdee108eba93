#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/config.h"
#include "ticket.h"
#include "tls.h"

/* The last operation's errno, when OpenSSL reported SSL_ERROR_SYSCALL. */
static _Thread_local int last_errno;

/* How many characters of a client's subject a log line carries. */
#define SUBJECT_MAX	256

/*
 * What a listener asks of client certificates, the same for every context
 * of its set: after SSL_set_SSL_CTX() OpenSSL verifies against the new
 * context's store and sends its CA names, so each context holds them all.
 */
struct verify {
	int			 mode;		/* SSL_VERIFY_* */
	X509_STORE		*store;		/* NULL: no verification */
	STACK_OF(X509_NAME)	*names;		/* for the CertificateRequest */
	unsigned char		 sid_ctx[SSL_MAX_SID_CTX_LENGTH];
	unsigned		 sid_len;
};

/*
 * The SNI table of a default context: every [tls:NAME] name, sorted for
 * bsearch, each holding a reference to its section's context. The default
 * context owns it (ex data with a free function), so it lives exactly as
 * long as some SSL still uses that context, across a reload.
 */
struct sni_entry {
	char		*name;		/* lower case; "*.b.org" for wildcards */
	SSL_CTX		*ctx;
};

struct sni_table {
	size_t			 n;
	struct sni_entry	 v[];
};

static int sni_index = -1;
static CRYPTO_ONCE sni_once = CRYPTO_ONCE_STATIC_INIT;

static void
sni_table_free(struct sni_table *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->n; i++) {
		free(t->v[i].name);
		SSL_CTX_free(t->v[i].ctx);
	}
	free(t);
}

/* OpenSSL calls this when a context is freed, with its table or NULL. */
static void
sni_table_free_ex(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	sni_table_free(ptr);
}

static void
sni_index_init(void)
{
	sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
	    sni_table_free_ex);
}

static int
sni_entry_cmp(const void *a, const void *b)
{
	return (strcmp(((const struct sni_entry *)a)->name,
	    ((const struct sni_entry *)b)->name));
}

static SSL_CTX *
sni_lookup(const struct sni_table *t, const char *name)
{
	struct sni_entry key = { (char *)name, NULL }, *e;

	e = bsearch(&key, t->v, t->n, sizeof(t->v[0]), sni_entry_cmp);
	return (e != NULL ? e->ctx : NULL);
}

/*
 * The servername callback: the exact name first, then the wildcard for the
 * name less its first label; no name, an address, or no match keeps the
 * default context. Two lookups in a sorted array, no allocation.
 */
static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
	const struct sni_table *t = arg;
	const char *sn;
	char *dot;
	char name[CONFIG_MAX_SNI_NAME + 1];
	unsigned char a[16];
	SSL_CTX *ctx;
	size_t i, len;

	(void)alert;
	if ((sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) == NULL ||
	    (len = strlen(sn)) > CONFIG_MAX_SNI_NAME)
		return (SSL_TLSEXT_ERR_NOACK);
	/* RFC 6066 section 3: an address literal is not a server name. */
	if (inet_pton(AF_INET, sn, a) == 1 || inet_pton(AF_INET6, sn, a) == 1)
		return (SSL_TLSEXT_ERR_NOACK);
	for (i = 0; i <= len; i++)
		name[i] = (char)tolower((unsigned char)sn[i]);
	/* "mail.a.org." is mail.a.org: some clients send the root's dot. */
	if (len > 1 && name[len - 1] == '.')
		name[--len] = '\0';
	/* The wildcard takes the place of the first label, which must not be
	 * empty: "a.b.org" looks for "*.b.org". */
	if ((ctx = sni_lookup(t, name)) == NULL &&
	    (dot = strchr(name, '.')) != NULL && dot > name) {
		dot[-1] = '*';
		ctx = sni_lookup(t, dot - 1);
	}
	if (ctx == NULL)
		return (SSL_TLSEXT_ERR_NOACK);
	if (SSL_set_SSL_CTX(ssl, ctx) != ctx)
		return (SSL_TLSEXT_ERR_ALERT_FATAL);
	return (SSL_TLSEXT_ERR_OK);
}

/*
 * One context: the protocol settings of [tls], one certificate set (an RSA
 * and an ECDSA chain may live side by side; OpenSSL picks by the client's
 * offer), and the listener's client verification. Returns NULL with a
 * message in err.
 */
static SSL_CTX *
ctx_build(const struct config_tls *c, char *const *certs, char *const *keys,
    int n, const struct verify *v, char *err, size_t errlen)
{
	STACK_OF(X509_NAME) *names;
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
	ticket_attach(ctx);
	/* Resumption is by stateless tickets only: a server-side session
	 * cache is one more lock all workers would share, and a table to
	 * sweep during handshakes. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* A session resumes only where it was verified the same way. */
	SSL_CTX_set_session_id_context(ctx, v->sid_ctx, v->sid_len);
	if (v->store != NULL) {
		if ((names = SSL_dup_CA_list(v->names)) == NULL)
			goto fail;
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set1_cert_store(ctx, v->store);
		SSL_CTX_set_verify(ctx, v->mode, NULL);
	}
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
	for (i = 0; i < n; i++) {
		if (SSL_CTX_use_certificate_chain_file(ctx, certs[i]) != 1) {
			snprintf(err, errlen, "cert %s: %s", certs[i],
			    tls_error(e, sizeof(e)));
			goto fail_msg;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, keys[i],
		    SSL_FILETYPE_PEM) != 1) {
			snprintf(err, errlen, "key %s: %s", keys[i],
			    tls_error(e, sizeof(e)));
			goto fail_msg;
		}
		if (SSL_CTX_check_private_key(ctx) != 1) {
			snprintf(err, errlen, "key %s does not match cert %s: %s",
			    keys[i], certs[i], tls_error(e, sizeof(e)));
			goto fail_msg;
		}
		/* A second chain of the same key type would silently replace
		 * the first. */
		type = EVP_PKEY_get_base_id(SSL_CTX_get0_privatekey(ctx));
		for (j = 0; j < i; j++)
			if (types[j] == type) {
				snprintf(err, errlen, "cert %s: a certificate with "
				    "a %s key is configured already", certs[i],
				    OBJ_nid2sn(type));
				goto fail_msg;
			}
		types[i] = type;
	}
	return (ctx);

fail:
	/* tls_error() falls back on the last I/O error, which a context
	 * build has nothing to do with. */
	snprintf(err, errlen, "%s", ERR_peek_error() != 0 ?
	    tls_error(e, sizeof(e)) : "out of memory");
fail_msg:
	SSL_CTX_free(ctx);
	return (NULL);
}

/*
 * Read client_ca into v and choose the session id context. Listeners
 * without verification share "smtpgate"; each verifying listener gets a
 * digest of its name, its setting and the CA certificates it trusts, so a
 * session verified (or not) on one listener never resumes on another (RFC
 * 5246 section F.1.4), nor after a reload changed whom it trusts (the
 * ticket keys outlive reloads). Returns 0, or -1 with a message in err.
 */
static int
verify_init(struct verify *v, const struct config_listener *l, char *err,
    size_t errlen)
{
	static const char plain[] = "smtpgate";
	unsigned char md[EVP_MAX_MD_SIZE], cmd[EVP_MAX_MD_SIZE];
	STACK_OF(X509_OBJECT) *objs;
	unsigned mdlen, cmdlen;
	EVP_MD_CTX *dctx = NULL;
	X509 *x;
	char id[128], e[256];
	int n, i, ok;

	memset(v, 0, sizeof(*v));
	if (l == NULL || l->verify_client == CONFIG_VERIFY_NONE) {
		memcpy(v->sid_ctx, plain, sizeof(plain) - 1);
		v->sid_len = sizeof(plain) - 1;
		return (0);
	}
	v->mode = SSL_VERIFY_PEER | (l->verify_client == CONFIG_VERIFY_REQUIRE ?
	    SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
	n = snprintf(id, sizeof(id), "smtpgate:%d:%s", l->verify_client,
	    l->name);
	ERR_clear_error();
	if ((v->store = X509_STORE_new()) == NULL) {
		snprintf(err, errlen, "%s", tls_error(e, sizeof(e)));
		return (-1);
	}
	if (X509_STORE_load_file(v->store, l->client_ca) != 1 ||
	    (v->names = SSL_load_client_CA_file(l->client_ca)) == NULL) {
		snprintf(err, errlen, "client_ca %s: %s", l->client_ca,
		    ERR_peek_error() != 0 ? tls_error(e, sizeof(e)) :
		    "no CA certificate in it");
		ERR_clear_error();
		return (-1);
	}
	ok = (dctx = EVP_MD_CTX_new()) != NULL &&
	    EVP_DigestInit_ex(dctx, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(dctx, id, (size_t)n) == 1;
	objs = X509_STORE_get0_objects(v->store);
	for (i = 0; ok && i < sk_X509_OBJECT_num(objs); i++)
		if ((x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i))) !=
		    NULL)
			ok = X509_digest(x, EVP_sha256(), cmd, &cmdlen) == 1 &&
			    EVP_DigestUpdate(dctx, cmd, cmdlen) == 1;
	ok = ok && EVP_DigestFinal_ex(dctx, md, &mdlen) == 1;
	EVP_MD_CTX_free(dctx);
	if (!ok) {
		snprintf(err, errlen, "%s", tls_error(e, sizeof(e)));
		return (-1);
	}
	memcpy(v->sid_ctx, md, mdlen < sizeof(v->sid_ctx) ? mdlen :
	    sizeof(v->sid_ctx));
	v->sid_len = mdlen < sizeof(v->sid_ctx) ? mdlen : sizeof(v->sid_ctx);
	return (0);
}

static void
verify_fini(struct verify *v)
{
	X509_STORE_free(v->store);
	sk_X509_NAME_pop_free(v->names, X509_NAME_free);
}

/* Every [tls:NAME] context for one verification setup, in a table that
 * ctx then owns. Returns 0, or -1 with "FILE:LINE: ..." in err. */
static int
sni_attach(SSL_CTX *ctx, const struct config *c, const struct verify *v,
    char *err, size_t errlen)
{
	struct sni_table *t;
	SSL_CTX *named;
	char msg[512];
	size_t total = 0;
	int i, j;

	for (i = 0; i < c->nsni; i++)
		total += (size_t)c->sni[i].nnames;
	if ((t = calloc(1, sizeof(*t) + total * sizeof(t->v[0]))) == NULL ||
	    SSL_CTX_set_ex_data(ctx, sni_index, t) != 1) {
		free(t);
		snprintf(err, errlen, "%s: out of memory", c->file);
		return (-1);
	}
	/* From here on ctx frees t, and t what it holds. */
	for (i = 0; i < c->nsni; i++) {
		const struct config_sni *s = &c->sni[i];

		if ((named = ctx_build(&c->tls, s->certs, s->keys, s->ncerts, v,
		    msg, sizeof(msg))) == NULL) {
			snprintf(err, errlen, "%s:%d: [tls:%s] %s", c->file,
			    s->line, s->name, msg);
			return (-1);
		}
		for (j = 0; j < s->nnames; j++) {
			if ((t->v[t->n].name = strdup(s->names[j])) == NULL) {
				SSL_CTX_free(named);
				snprintf(err, errlen, "%s: out of memory",
				    c->file);
				return (-1);
			}
			SSL_CTX_up_ref(named);
			t->v[t->n++].ctx = named;
		}
		SSL_CTX_free(named);
	}
	qsort(t->v, t->n, sizeof(t->v[0]), sni_entry_cmp);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, t);
	return (0);
}

SSL_CTX *
tls_server_ctx_new(const struct config *c, const struct config_listener *l,
    char *err, size_t errlen)
{
	struct verify v;
	char msg[512];
	SSL_CTX *ctx = NULL;

	if (CRYPTO_THREAD_run_once(&sni_once, sni_index_init) != 1 ||
	    sni_index == -1) {
		snprintf(err, errlen, "%s: cannot register the SNI table",
		    c->file);
		return (NULL);
	}
	if (verify_init(&v, l, msg, sizeof(msg)) == -1) {
		snprintf(err, errlen, "%s:%d: listener '%s': %s", c->file,
		    l->client_ca_line, l->name, msg);
		goto out;
	}
	if ((ctx = ctx_build(&c->tls, c->tls.certs, c->tls.keys, c->tls.ncerts,
	    &v, msg, sizeof(msg))) == NULL) {
		snprintf(err, errlen, "%s:%d: %s", c->file, c->tls_line, msg);
		goto out;
	}
	if (c->nsni > 0 && sni_attach(ctx, c, &v, err, errlen) == -1) {
		SSL_CTX_free(ctx);
		ctx = NULL;
	}
out:
	verify_fini(&v);
	return (ctx);
}

int
tls_server_ctxs_new(const struct config *c, SSL_CTX **ctx_r, char *err,
    size_t errlen)
{
	const struct config_listener *l;
	SSL_CTX *shared = NULL;
	int i;

	for (i = 0; i < c->nlisteners; i++)
		ctx_r[i] = NULL;
	for (i = 0; i < c->nlisteners; i++) {
		l = &c->listeners[i];
		if (l->mode == CONFIG_MODE_EGRESS)
			continue;
		if (l->verify_client != CONFIG_VERIFY_NONE) {
			if ((ctx_r[i] = tls_server_ctx_new(c, l, err, errlen)) ==
			    NULL)
				goto fail;
			continue;
		}
		if (shared == NULL) {
			if ((shared = tls_server_ctx_new(c, NULL, err, errlen)) ==
			    NULL)
				goto fail;
		} else {
			SSL_CTX_up_ref(shared);
		}
		ctx_r[i] = shared;
	}
	return (0);

fail:
	for (i = 0; i < c->nlisteners; i++) {
		SSL_CTX_free(ctx_r[i]);
		ctx_r[i] = NULL;
	}
	return (-1);
}

char *
tls_client_subject(const SSL *ssl)
{
	X509 *x;
	BIO *b;
	char *p, *out;
	long len;
	size_t i, o = 0;

	if ((x = SSL_get0_peer_certificate(ssl)) == NULL ||
	    SSL_get_verify_result(ssl) != X509_V_OK ||
	    (b = BIO_new(BIO_s_mem())) == NULL)
		return (NULL);
	if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
	    XN_FLAG_RFC2253) < 0 || (len = BIO_get_mem_data(b, &p)) < 0 ||
	    (out = malloc(SUBJECT_MAX + 4)) == NULL) {
		BIO_free(b);
		return (NULL);
	}
	/*
	 * RFC 2253 escapes '"' and, with these flags, control and non-ASCII
	 * bytes too. Whatever OpenSSL makes of a hostile name, the log line
	 * stays one line and the value stays inside its quotes: escape pairs
	 * are copied whole, any other '"' is escaped, any byte that is not
	 * printable ASCII becomes '?'.
	 */
	for (i = 0; i < (size_t)len && o < SUBJECT_MAX - 1; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (ch == '\\' || ch == '"') {
			out[o++] = '\\';
			if (ch == '\\' && i + 1 < (size_t)len)
				ch = (unsigned char)p[++i];
		}
		out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	if (i < (size_t)len) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	BIO_free(b);
	return (out);
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
