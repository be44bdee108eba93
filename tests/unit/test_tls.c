/*
 * tls: contexts built from a config (its [tls] section, [tls:NAME]
 * sections and a listener's client verification), and the non-blocking
 * operations. Keys and self-signed certificates are made at test time in a
 * temporary directory. Each connection is two in-process SSL objects joined
 * by a BIO pair: the server is driven only through tls_handshake(),
 * tls_read() and tls_write(), the client with plain OpenSSL calls.
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../config/config.h"
#include "../../tls/ticket.h"
#include "../../tls/tls.h"
#include "suites.h"

/* The files of the fixture; the "missing" ones are never written. */
enum file {
	F_EC_CRT, F_EC_KEY, F_EC2_CRT, F_EC2_KEY, F_EC3_CRT, F_EC3_KEY,
	F_RSA_CRT, F_RSA_KEY, F_CA_CRT, F_GARBAGE, F_MISSING_CRT, F_MISSING_KEY,
	NFILES
};

static const char *const file_names[NFILES] = {
	"ec.crt", "ec.key", "ec2.crt", "ec2.key", "ec3.crt", "ec3.key",
	"rsa.crt", "rsa.key", "ca.crt", "garbage.pem", "missing.crt",
	"missing.key"
};

static char	 dir[256];
static char	 paths[NFILES][512];
static X509	*ec_x509, *ec2_x509, *ec3_x509, *rsa_x509;
/* Client certificates: one from the CA in F_CA_CRT, one from another CA
 * with the same subject and key. */
static EVP_PKEY	*client_key;
static X509	*client_x509, *stranger_x509;

#define CLIENT_SUBJECT	"CN=client \\\"one\\\",O=smtpgate test"

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *e;

	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	ck_assert_ptr_nonnull(e = X509V3_EXT_conf_nid(NULL, &v3, nid, value));
	ck_assert_int_eq(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* A certificate for key with subject O=org (if any), CN=cn, issued by
 * issuer with issuer_key (NULL: self-signed); ca makes it a CA. */
static X509 *
make_cert(EVP_PKEY *key, long serial, const char *org, const char *cn,
    X509 *issuer, EVP_PKEY *issuer_key, int ca)
{
	X509 *x;
	X509_NAME *n;

	ck_assert_ptr_nonnull(x = X509_new());
	ck_assert_int_eq(X509_set_version(x, 2), 1);	/* v3 */
	ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	ck_assert_int_eq(X509_set_pubkey(x, key), 1);
	n = X509_get_subject_name(x);
	if (org != NULL)
		ck_assert_int_eq(X509_NAME_add_entry_by_txt(n, "O",
		    MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0), 1);
	ck_assert_int_eq(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0), 1);
	ck_assert_int_eq(X509_set_issuer_name(x, issuer != NULL ?
	    X509_get_subject_name(issuer) : n), 1);
	add_ext(x, issuer != NULL ? issuer : x, NID_basic_constraints,
	    ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	ck_assert_int_gt(X509_sign(x, issuer_key != NULL ? issuer_key : key,
	    EVP_sha256()), 0);
	return (x);
}

static X509 *
self_signed(EVP_PKEY *key, long serial)
{
	return (make_cert(key, serial, NULL, "smtpgate.test", NULL, NULL, 0));
}

static void
write_key(enum file which, EVP_PKEY *key)
{
	FILE *f;

	ck_assert_ptr_nonnull(f = fopen(paths[which], "w"));
	ck_assert_int_eq(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL,
	    NULL), 1);
	ck_assert_int_eq(fclose(f), 0);
}

static void
write_cert(enum file which, X509 *x)
{
	FILE *f;

	ck_assert_ptr_nonnull(f = fopen(paths[which], "w"));
	ck_assert_int_eq(PEM_write_X509(f, x), 1);
	ck_assert_int_eq(fclose(f), 0);
}

/* Once per TCase: RSA key generation is slow, under valgrind above all. */
static void
tls_setup(void)
{
	const char *t = getenv("TMPDIR");
	EVP_PKEY *ec, *ec2, *ec3, *rsa, *ca, *stranger;
	X509 *ca_x509, *stranger_ca;
	FILE *f;
	int i;

	snprintf(dir, sizeof(dir), "%s/smtpgate-tls-XXXXXX",
	    t != NULL && *t != '\0' ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	for (i = 0; i < NFILES; i++)
		snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir,
		    file_names[i]);

	ck_assert_ptr_nonnull(ec = EVP_EC_gen("P-256"));
	ck_assert_ptr_nonnull(ec2 = EVP_EC_gen("P-256"));
	ck_assert_ptr_nonnull(ec3 = EVP_EC_gen("P-256"));
	ck_assert_ptr_nonnull(ca = EVP_EC_gen("P-256"));
	ck_assert_ptr_nonnull(stranger = EVP_EC_gen("P-256"));
	ck_assert_ptr_nonnull(client_key = EVP_EC_gen("P-256"));
	ck_assert_ptr_nonnull(rsa = EVP_RSA_gen(2048));
	ec_x509 = self_signed(ec, 1);
	rsa_x509 = self_signed(rsa, 2);
	write_key(F_EC_KEY, ec);
	write_key(F_EC2_KEY, ec2);
	write_key(F_RSA_KEY, rsa);
	write_cert(F_EC_CRT, ec_x509);
	ec2_x509 = self_signed(ec2, 3);
	write_cert(F_EC2_CRT, ec2_x509);
	ec3_x509 = self_signed(ec3, 4);
	write_cert(F_EC3_CRT, ec3_x509);
	write_key(F_EC3_KEY, ec3);
	write_cert(F_RSA_CRT, rsa_x509);
	/* Two CAs of the same name: only the key tells them apart. */
	ca_x509 = make_cert(ca, 5, "smtpgate test", "client CA", NULL, NULL, 1);
	stranger_ca = make_cert(stranger, 6, "smtpgate test", "client CA", NULL,
	    NULL, 1);
	write_cert(F_CA_CRT, ca_x509);
	client_x509 = make_cert(client_key, 7, "smtpgate test", "client \"one\"",
	    ca_x509, ca, 0);
	stranger_x509 = make_cert(client_key, 8, "smtpgate test",
	    "client \"one\"", stranger_ca, stranger, 0);
	X509_free(ca_x509);
	X509_free(stranger_ca);
	EVP_PKEY_free(ec3);
	EVP_PKEY_free(ca);
	EVP_PKEY_free(stranger);
	ck_assert_ptr_nonnull(f = fopen(paths[F_GARBAGE], "w"));
	fputs("this is not a certificate\n", f);
	ck_assert_int_eq(fclose(f), 0);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ec2);
	EVP_PKEY_free(rsa);
}

static void
tls_teardown(void)
{
	int i;

	X509_free(ec_x509);
	X509_free(ec2_x509);
	X509_free(ec3_x509);
	X509_free(rsa_x509);
	X509_free(client_x509);
	X509_free(stranger_x509);
	EVP_PKEY_free(client_key);
	ec_x509 = ec2_x509 = ec3_x509 = rsa_x509 = NULL;
	client_x509 = stranger_x509 = NULL;
	client_key = NULL;
	for (i = 0; i < NFILES; i++)
		(void)unlink(paths[i]);
	(void)rmdir(dir);
}

/* Contexts. */

static void
conf_init(struct config_tls *c, int min_version)
{
	memset(c, 0, sizeof(*c));
	c->min_version = min_version;
}

static void
conf_pair(struct config_tls *c, enum file cert, enum file key)
{
	c->certs[c->ncerts++] = paths[cert];
	c->keys[c->nkeys++] = paths[key];
}

/* A config that holds only [tls] (at line 7), as the loader leaves it. */
static struct config conf;

static SSL_CTX *
ctx_from(const struct config_tls *c, char *err, size_t errlen)
{
	memset(&conf, 0, sizeof(conf));
	conf.file = (char *)"test.ini";
	conf.tls_line = 7;
	conf.tls = *c;
	return (tls_server_ctx_new(&conf, NULL, err, errlen));
}

static SSL_CTX *
server_ctx(const struct config_tls *c)
{
	char err[512] = "";
	SSL_CTX *ctx;

	ctx = ctx_from(c, err, sizeof(err));
	ck_assert_msg(ctx != NULL, "tls_server_ctx_new: %s", err);
	return (ctx);
}

/* The usual server: one ECDSA pair, TLS 1.2 and up. */
static SSL_CTX *
server_ctx_ec(void)
{
	struct config_tls c;

	conf_init(&c, TLS1_2_VERSION);
	conf_pair(&c, F_EC_CRT, F_EC_KEY);
	return (server_ctx(&c));
}

/* A client that speaks versions min to max (0: OpenSSL's bound). */
static SSL_CTX *
client_ctx(int min_version, int max_version)
{
	SSL_CTX *ctx;

	ck_assert_ptr_nonnull(ctx = SSL_CTX_new(TLS_client_method()));
	ck_assert_int_eq(SSL_CTX_set_min_proto_version(ctx, min_version), 1);
	ck_assert_int_eq(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return (ctx);
}

/* Connections. */

struct pair {
	SSL		*client, *server;
	int		 client_error;	/* SSL_get_error on its failure */
	int		 client_reason;	/* ERR_GET_REASON on its failure */
	enum tls_io	 server_io;	/* tls_handshake's last result */
	int		 server_reason;
};

static void
pair_new(struct pair *p, SSL_CTX *sctx, SSL_CTX *cctx)
{
	BIO *cb, *sb;

	memset(p, 0, sizeof(*p));
	ck_assert_int_eq(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
	ck_assert_ptr_nonnull(p->client = SSL_new(cctx));
	ck_assert_ptr_nonnull(p->server = SSL_new(sctx));
	SSL_set_bio(p->client, cb, cb);
	SSL_set_bio(p->server, sb, sb);
	SSL_set_connect_state(p->client);
	SSL_set_accept_state(p->server);
}

static void
pair_free(struct pair *p)
{
	SSL_free(p->client);
	SSL_free(p->server);
	p->client = p->server = NULL;
}

/*
 * Drive both handshakes in turns, a bounded number of times. When one side
 * fails the other still gets its turns, so it reads the alert. Returns 0
 * when both completed, -1 otherwise (the reasons are in p).
 */
static int
pair_handshake(struct pair *p)
{
	int cstate = 0, sstate = 0, i, r;	/* 1 done, -1 failed */

	for (i = 0; i < 32 && (cstate != 1 || sstate != 1); i++) {
		if (cstate == 0) {
			ERR_clear_error();
			if ((r = SSL_do_handshake(p->client)) == 1)
				cstate = 1;
			else if ((p->client_error = SSL_get_error(p->client,
			    r)) != SSL_ERROR_WANT_READ) {
				p->client_reason = ERR_GET_REASON(
				    ERR_peek_error());
				cstate = -1;
			}
		}
		if (sstate == 0) {
			p->server_io = tls_handshake(p->server);
			if (p->server_io == TLS_IO_OK)
				sstate = 1;
			else if (p->server_io != TLS_IO_WANT_READ &&
			    p->server_io != TLS_IO_WANT_WRITE) {
				p->server_reason = ERR_GET_REASON(
				    ERR_peek_error());
				sstate = -1;
			}
		}
		if (cstate == -1 && sstate == -1)
			break;
	}
	ERR_clear_error();
	return (cstate == 1 && sstate == 1 ? 0 : -1);
}

/* Everything the client can read now, up to len bytes. */
static size_t
client_read(struct pair *p, char *buf, size_t len)
{
	size_t got = 0, n;

	while (got < len) {
		ERR_clear_error();
		if (SSL_read_ex(p->client, buf + got, len - got, &n) != 1) {
			ck_assert_int_eq(SSL_get_error(p->client, 0),
			    SSL_ERROR_WANT_READ);
			break;
		}
		got += n;
	}
	return (got);
}

/* A clean close from the client, seen by the server. */
static void
pair_close(struct pair *p)
{
	char c;
	size_t n;

	ck_assert_int_ge(SSL_shutdown(p->client), 0);
	ck_assert_int_eq(tls_read(p->server, &c, 1, &n), TLS_IO_EOF);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(SSL_shutdown(p->server), 1);
}

/*
 * What a test holds, freed by the checked teardown: an assertion that
 * leaves a test early leaks nothing, even under CK_FORK=no.
 */
static struct held {
	SSL_CTX		*sctx, *cctx;
	struct pair	 p;
	SSL_SESSION	*sess;
	X509		*peer;
	unsigned char	*in, *out, *copy;
	struct config	*conf;
	char		*subject;
	SSL_CTX		*ctxs[CONFIG_MAX_LISTENERS];
} h;

static void
held_free(void)
{
	int i;

	pair_free(&h.p);
	SSL_SESSION_free(h.sess);
	X509_free(h.peer);
	SSL_CTX_free(h.cctx);
	SSL_CTX_free(h.sctx);
	free(h.in);
	free(h.out);
	free(h.copy);
	config_free(h.conf);
	free(h.subject);
	for (i = 0; i < CONFIG_MAX_LISTENERS; i++)
		SSL_CTX_free(h.ctxs[i]);
	memset(&h, 0, sizeof(h));
}

/* Tests. */

START_TEST(test_handshake_and_io)
{
	static const char greeting[] = "220 smtpgate.test ESMTP\r\n";
	static const char ehlo[] = "EHLO client.test\r\n";
	char buf[256];
	size_t n;

	h.sctx = server_ctx_ec();
	h.cctx = client_ctx(0, 0);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_version(h.p.server), TLS1_3_VERSION);
	ck_assert_int_eq(SSL_version(h.p.client), TLS1_3_VERSION);

	/* Nothing sent yet: the server's read wants to read. */
	n = 99;
	ck_assert_int_eq(tls_read(h.p.server, buf, sizeof(buf), &n),
	    TLS_IO_WANT_READ);
	ck_assert_uint_eq(n, 0);

	/* Server to client. */
	ck_assert_int_eq(tls_write(h.p.server, greeting, strlen(greeting), &n),
	    TLS_IO_OK);
	ck_assert_uint_eq(n, strlen(greeting));
	ck_assert_uint_eq(client_read(&h.p, buf, sizeof(buf)),
	    strlen(greeting));
	ck_assert_mem_eq(buf, greeting, strlen(greeting));

	/* Client to server. */
	ck_assert_int_eq(SSL_write_ex(h.p.client, ehlo, strlen(ehlo), &n), 1);
	ck_assert_int_eq(tls_read(h.p.server, buf, sizeof(buf), &n), TLS_IO_OK);
	ck_assert_uint_eq(n, strlen(ehlo));
	ck_assert_mem_eq(buf, ehlo, strlen(ehlo));
	ck_assert_int_eq(tls_read(h.p.server, buf, sizeof(buf), &n),
	    TLS_IO_WANT_READ);
	ck_assert_uint_eq(n, 0);

	/* A short read leaves the rest pending inside OpenSSL. */
	ck_assert_int_eq(SSL_write_ex(h.p.client, ehlo, strlen(ehlo), &n), 1);
	ck_assert_int_eq(tls_read(h.p.server, buf, 4, &n), TLS_IO_OK);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(SSL_pending(h.p.server), (int)strlen(ehlo) - 4);
	ck_assert_int_eq(tls_read(h.p.server, buf + 4, sizeof(buf) - 4, &n),
	    TLS_IO_OK);
	ck_assert_uint_eq(n, strlen(ehlo) - 4);
	ck_assert_mem_eq(buf, ehlo, strlen(ehlo));

	pair_close(&h.p);
}
END_TEST

/* The peer's close: a close_notify, or the transport's EOF without one. */
START_TEST(test_eof)
{
	char buf[16];
	size_t n;

	h.sctx = server_ctx_ec();
	h.cctx = client_ctx(0, 0);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(tls_read(h.p.server, buf, sizeof(buf), &n),
	    TLS_IO_WANT_READ);
	if (_i == 0)
		ck_assert_int_ge(SSL_shutdown(h.p.client), 0);
	else
		ck_assert_int_eq(BIO_shutdown_wr(SSL_get_wbio(h.p.client)), 1);
	n = 99;
	ck_assert_int_eq(tls_read(h.p.server, buf, sizeof(buf), &n),
	    TLS_IO_EOF);
	ck_assert_uint_eq(n, 0);
	/* And it stays so. */
	ck_assert_int_eq(tls_read(h.p.server, buf, sizeof(buf), &n),
	    TLS_IO_EOF);
}
END_TEST

/*
 * Much more than the BIO pair holds, both ways. tls_write must make partial
 * progress, then want to write, then take the rest from another address:
 * the endpoint's buffer compacts between a short write and its retry.
 */
#define BULK	(256 * 1024)

START_TEST(test_bulk)
{
	size_t put, got, n, i;
	int steps, want_write = 0, partial = 0;
	const unsigned char *src;
	enum tls_io r;

	ck_assert_ptr_nonnull(h.out = malloc(BULK));
	ck_assert_ptr_nonnull(h.copy = malloc(BULK));
	ck_assert_ptr_nonnull(h.in = malloc(BULK));
	for (i = 0; i < BULK; i++)
		h.out[i] = (unsigned char)(i * 7 + i / 251);
	memcpy(h.copy, h.out, BULK);
	src = h.out;
	h.sctx = server_ctx_ec();
	h.cctx = client_ctx(0, _i == 0 ? 0 : TLS1_2_VERSION);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);

	/* Server to client. */
	put = got = 0;
	for (steps = 0; got < BULK; steps++) {
		ck_assert_int_lt(steps, 10000);
		while (put < BULK) {
			r = tls_write(h.p.server, src + put, BULK - put, &n);
			if (r == TLS_IO_WANT_WRITE) {
				ck_assert_uint_eq(n, 0);
				want_write = 1;
				/* The same bytes, somewhere else. */
				src = src == h.out ? h.copy : h.out;
				break;
			}
			ck_assert_int_eq(r, TLS_IO_OK);
			ck_assert_uint_gt(n, 0);
			if (n < BULK - put)
				partial = 1;
			put += n;
		}
		got += client_read(&h.p, (char *)h.in + got, BULK - got);
	}
	ck_assert_int_eq(want_write, 1);
	ck_assert_int_eq(partial, 1);
	ck_assert_uint_eq(put, BULK);
	ck_assert_int_eq(memcmp(h.in, h.out, BULK), 0);

	/* Client to server, read in small pieces. */
	memset(h.in, 0, BULK);
	put = got = 0;
	for (steps = 0; got < BULK; steps++) {
		ck_assert_int_lt(steps, 10000);
		while (put < BULK && SSL_write_ex(h.p.client, h.out + put,
		    BULK - put, &n) == 1)
			put += n;
		ERR_clear_error();
		for (;;) {
			r = tls_read(h.p.server, h.in + got, 1000, &n);
			if (r == TLS_IO_WANT_READ)
				break;
			ck_assert_int_eq(r, TLS_IO_OK);
			ck_assert_uint_le(n, 1000);
			got += n;
		}
	}
	ck_assert_int_eq(memcmp(h.in, h.out, BULK), 0);

	pair_close(&h.p);
}
END_TEST

/* A client that offers only TLS 1.1 meets the TLS 1.2 floor. */
START_TEST(test_tls11_refused)
{
	char err[256];

	h.sctx = server_ctx_ec();
	h.cctx = client_ctx(TLS1_1_VERSION, TLS1_1_VERSION);
	/* Let the client speak TLS 1.1 at all: OpenSSL 3 refuses it at
	 * security level 1 and up, before a byte is sent. */
	SSL_CTX_set_security_level(h.cctx, 0);
	ck_assert_int_eq(SSL_CTX_set_cipher_list(h.cctx, "DEFAULT:@SECLEVEL=0"),
	    1);

	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), -1);
	ck_assert_int_eq(h.p.server_io, TLS_IO_ERROR);
	ck_assert_int_eq(h.p.server_reason, SSL_R_UNSUPPORTED_PROTOCOL);
	ck_assert_int_eq(h.p.client_error, SSL_ERROR_SSL);
	pair_free(&h.p);

	/* The error text names the reason, and reading it clears it. */
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(SSL_do_handshake(h.p.client), -1);
	ck_assert_int_eq(tls_handshake(h.p.server), TLS_IO_ERROR);
	ck_assert_ptr_nonnull(strstr(tls_error(err, sizeof(err)),
	    "unsupported protocol"));
	ck_assert_uint_eq(ERR_peek_error(), 0);
	pair_free(&h.p);

	/* The control: the same client does complete TLS 1.1 with a server
	 * whose floor was lowered by hand, so the refusal was the floor's. */
	ck_assert_int_eq(SSL_CTX_set_min_proto_version(h.sctx, TLS1_1_VERSION),
	    1);
	SSL_CTX_set_security_level(h.sctx, 0);
	ck_assert_int_eq(SSL_CTX_set_cipher_list(h.sctx, "DEFAULT:@SECLEVEL=0"),
	    1);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_version(h.p.server), TLS1_1_VERSION);
}
END_TEST

/* min_version = TLSv1.3 refuses a client that stops at TLS 1.2. */
START_TEST(test_min_tls13)
{
	struct config_tls c;

	conf_init(&c, TLS1_3_VERSION);
	conf_pair(&c, F_EC_CRT, F_EC_KEY);
	h.sctx = server_ctx(&c);
	h.cctx = client_ctx(0, TLS1_2_VERSION);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), -1);
	ck_assert_int_eq(h.p.server_io, TLS_IO_ERROR);
	ck_assert_int_eq(h.p.server_reason, SSL_R_UNSUPPORTED_PROTOCOL);
	pair_free(&h.p);
	SSL_CTX_free(h.sctx);
	h.sctx = NULL;

	/* The same client with the default floor: TLS 1.2. */
	h.sctx = server_ctx_ec();
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_version(h.p.server), TLS1_2_VERSION);
	pair_free(&h.p);
	SSL_CTX_free(h.sctx);
	h.sctx = NULL;

	/* And a TLS 1.3 client gets in. */
	h.sctx = server_ctx(&c);
	SSL_CTX_free(h.cctx);
	h.cctx = NULL;
	h.cctx = client_ctx(0, 0);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_version(h.p.server), TLS1_3_VERSION);
}
END_TEST

/*
 * RSA and ECDSA pairs side by side, in either order: the client's signature
 * algorithms pick the certificate, in TLS 1.3 and in TLS 1.2.
 */
static const struct sigalg_case {
	int		 ec_first;
	int		 max_version;
	const char	*sigalgs;
	int		 want_ec;
} sigalg_cases[] = {
	{ 0, 0, "ecdsa_secp256r1_sha256", 1 },
	{ 0, 0, "rsa_pss_rsae_sha256:rsa_pkcs1_sha256", 0 },
	{ 1, 0, "ecdsa_secp256r1_sha256", 1 },
	{ 1, 0, "rsa_pss_rsae_sha256:rsa_pkcs1_sha256", 0 },
	{ 0, TLS1_2_VERSION, "ecdsa_secp256r1_sha256", 1 },
	{ 0, TLS1_2_VERSION, "rsa_pss_rsae_sha256:rsa_pkcs1_sha256", 0 },
	{ 1, TLS1_2_VERSION, "ecdsa_secp256r1_sha256", 1 },
	{ 1, TLS1_2_VERSION, "rsa_pkcs1_sha256", 0 },
};

START_TEST(test_cert_by_sigalg)
{
	const struct sigalg_case *sc = &sigalg_cases[_i];
	struct config_tls c;

	conf_init(&c, TLS1_2_VERSION);
	if (sc->ec_first) {
		conf_pair(&c, F_EC_CRT, F_EC_KEY);
		conf_pair(&c, F_RSA_CRT, F_RSA_KEY);
	} else {
		conf_pair(&c, F_RSA_CRT, F_RSA_KEY);
		conf_pair(&c, F_EC_CRT, F_EC_KEY);
	}
	h.sctx = server_ctx(&c);
	h.cctx = client_ctx(0, sc->max_version);
	ck_assert_int_eq(SSL_CTX_set1_sigalgs_list(h.cctx, sc->sigalgs), 1);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	if (sc->max_version != 0)
		ck_assert_int_eq(SSL_version(h.p.client), sc->max_version);
	ck_assert_ptr_nonnull(h.peer = SSL_get1_peer_certificate(h.p.client));
	ck_assert_int_eq(X509_cmp(h.peer, sc->want_ec ? ec_x509 : rsa_x509), 0);
	ck_assert_int_eq(EVP_PKEY_is_a(X509_get0_pubkey(h.peer),
	    sc->want_ec ? "EC" : "RSA"), 1);
}
END_TEST

/* Contexts that must not be built, and what the message must name. */
static const struct ctx_error_case {
	const char	*name;
	int		 npairs;
	enum file	 files[2][2];	/* { cert, key } */
	const char	*ciphers, *ciphersuites;
	int		 want_path;	/* an enum file, or -1 */
	const char	*want_text;
} ctx_error_cases[] = {
	{ "key of another EC cert", 1, { { F_EC_CRT, F_EC2_KEY } },
	    NULL, NULL, F_EC2_KEY, NULL },
	{ "EC key for an RSA cert", 1, { { F_RSA_CRT, F_EC_KEY } },
	    NULL, NULL, F_EC_KEY, NULL },
	{ "RSA key for an EC cert", 1, { { F_EC_CRT, F_RSA_KEY } },
	    NULL, NULL, F_RSA_KEY, NULL },
	{ "second pair mismatched", 2,
	    { { F_EC_CRT, F_EC_KEY }, { F_RSA_CRT, F_EC2_KEY } },
	    NULL, NULL, F_EC2_KEY, NULL },
	{ "keys in the wrong order", 2,
	    { { F_EC_CRT, F_RSA_KEY }, { F_RSA_CRT, F_EC_KEY } },
	    NULL, NULL, F_RSA_KEY, NULL },
	{ "key given as cert", 1, { { F_EC_KEY, F_EC_KEY } },
	    NULL, NULL, F_EC_KEY, NULL },
	{ "missing cert", 1, { { F_MISSING_CRT, F_EC_KEY } },
	    NULL, NULL, F_MISSING_CRT, NULL },
	{ "missing key", 1, { { F_EC_CRT, F_MISSING_KEY } },
	    NULL, NULL, F_MISSING_KEY, NULL },
	{ "garbage cert", 1, { { F_GARBAGE, F_EC_KEY } },
	    NULL, NULL, F_GARBAGE, NULL },
	{ "garbage key", 1, { { F_EC_CRT, F_GARBAGE } },
	    NULL, NULL, F_GARBAGE, NULL },
	{ "two certificates of one key type", 2,
	    { { F_EC_CRT, F_EC_KEY }, { F_EC2_CRT, F_EC2_KEY } },
	    NULL, NULL, F_EC2_CRT, "configured already" },
	{ "bad ciphers", 1, { { F_EC_CRT, F_EC_KEY } },
	    "NOT-A-CIPHER", NULL, -1, "ciphers 'NOT-A-CIPHER'" },
	{ "bad ciphersuites", 1, { { F_EC_CRT, F_EC_KEY } },
	    NULL, "TLS_NOT_A_SUITE", -1, "ciphersuites 'TLS_NOT_A_SUITE'" },
};

START_TEST(test_ctx_errors)
{
	const struct ctx_error_case *ec = &ctx_error_cases[_i];
	struct config_tls c;
	char err[512] = "";
	SSL_CTX *ctx;
	int i;

	conf_init(&c, TLS1_2_VERSION);
	for (i = 0; i < ec->npairs; i++)
		conf_pair(&c, ec->files[i][0], ec->files[i][1]);
	c.ciphers = (char *)ec->ciphers;
	c.ciphersuites = (char *)ec->ciphersuites;
	ctx = ctx_from(&c, err, sizeof(err));
	ck_assert_msg(ctx == NULL, "%s: a context was built", ec->name);
	SSL_CTX_free(ctx);
	ck_assert_msg(strncmp(err, "test.ini:7: ", 12) == 0, "%s: \"%s\" does "
	    "not point at [tls]", ec->name, err);
	if (ec->want_path != -1)
		ck_assert_msg(strstr(err, paths[ec->want_path]) != NULL,
		    "%s: \"%s\" does not name %s", ec->name, err,
		    paths[ec->want_path]);
	if (ec->want_text != NULL)
		ck_assert_msg(strstr(err, ec->want_text) != NULL,
		    "%s: \"%s\" does not say %s", ec->name, err, ec->want_text);
	/* The reason is in err; nothing stays queued, or the next
	 * tls_error() on this thread would report this stale error. */
	ck_assert_msg(ERR_peek_error() == 0, "%s: an error stays queued: %s",
	    ec->name, ERR_reason_error_string(ERR_peek_error()));
	ERR_clear_error();
}
END_TEST

/* A second connection resumes the first one's session from a ticket. */
START_TEST(test_resumption)
{
	char buf[16];

	h.sctx = server_ctx_ec();
	h.cctx = client_ctx(0, _i == 0 ? 0 : TLS1_2_VERSION);

	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_session_reused(h.p.client), 0);
	/* TLS 1.3 tickets arrive after the handshake: read them. */
	ck_assert_uint_eq(client_read(&h.p, buf, sizeof(buf)), 0);
	ck_assert_ptr_nonnull(h.sess = SSL_get1_session(h.p.client));
	ck_assert_int_eq(SSL_SESSION_is_resumable(h.sess), 1);
	ck_assert_int_eq(SSL_SESSION_has_ticket(h.sess), 1);
	pair_close(&h.p);
	pair_free(&h.p);

	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(SSL_set_session(h.p.client, h.sess), 1);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_version(h.p.server),
	    _i == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
	ck_assert_int_eq(SSL_session_reused(h.p.client), 1);
	ck_assert_int_eq(SSL_session_reused(h.p.server), 1);
	pair_close(&h.p);
}
END_TEST

/* One connection to sctx with session h.sess offered (if any): whether it
 * resumed; h.sess becomes the session it ends with. */
static int
connect_once(SSL_CTX *sctx)
{
	char buf[16];
	int reused;

	pair_new(&h.p, sctx, h.cctx);
	if (h.sess != NULL)
		ck_assert_int_eq(SSL_set_session(h.p.client, h.sess), 1);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	reused = SSL_session_reused(h.p.server);
	ck_assert_uint_eq(client_read(&h.p, buf, sizeof(buf)), 0);
	SSL_SESSION_free(h.sess);
	ck_assert_ptr_nonnull(h.sess = SSL_get1_session(h.p.client));
	pair_close(&h.p);
	pair_free(&h.p);
	return (reused);
}

/*
 * Tickets are sealed with the process's ring (tls/ticket.c), not a key of
 * each context: one from a context resumes on another built later (a
 * reload, another worker), also after one rotation; after two it is no
 * longer accepted and the client gets a full handshake.
 */
START_TEST(test_ticket_keys_outlive_contexts)
{
	SSL_CTX *before;

	h.cctx = client_ctx(0, _i == 0 ? 0 : TLS1_2_VERSION);
	before = server_ctx_ec();
	ck_assert_int_eq(connect_once(before), 0);
	SSL_CTX_free(before);
	h.sctx = server_ctx_ec();
	ck_assert_int_eq(connect_once(h.sctx), 1);
	ck_assert_int_eq(ticket_rotate(), 0);
	ck_assert_int_eq(connect_once(h.sctx), 1);
	/* That resumption brought a ticket under the newest key. */
	ck_assert_int_eq(ticket_rotate(), 0);
	ck_assert_int_eq(connect_once(h.sctx), 1);
	ck_assert_int_eq(ticket_rotate(), 0);
	ck_assert_int_eq(ticket_rotate(), 0);
	ck_assert_int_eq(connect_once(h.sctx), 0);
}
END_TEST

/* TLS 1.2 renegotiation, from either side, does not happen. */
START_TEST(test_renegotiation_refused)
{
	static const char msg[] = "MAIL FROM:<a@b>\r\n";
	char buf[64];
	size_t n;
	int i, r = 0, cerr = SSL_ERROR_NONE, reason = 0;
	enum tls_io sio = TLS_IO_WANT_READ;

	h.sctx = server_ctx_ec();
	h.cctx = client_ctx(0, TLS1_2_VERSION);
	pair_new(&h.p, h.sctx, h.cctx);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_version(h.p.server), TLS1_2_VERSION);

	/* The server never starts one. */
	ck_assert_int_eq(SSL_renegotiate(h.p.server), 0);
	ERR_clear_error();

	/* The client asks; the server must not go along. */
	ck_assert_int_eq(SSL_renegotiate(h.p.client), 1);
	for (i = 0; i < 16; i++) {
		ERR_clear_error();
		if ((r = SSL_do_handshake(h.p.client)) == 1)
			break;
		cerr = SSL_get_error(h.p.client, r);
		if (cerr != SSL_ERROR_WANT_READ) {
			reason = ERR_GET_REASON(ERR_peek_error());
			break;
		}
		sio = tls_read(h.p.server, buf, sizeof(buf), &n);
		ck_assert_int_ne(sio, TLS_IO_OK);
		if (sio == TLS_IO_ERROR || sio == TLS_IO_EOF)
			break;
	}
	ERR_clear_error();
	ck_assert_msg(r != 1, "the renegotiation completed");
	/* The server answered no_renegotiation (RFC 5246 section 7.2.2),
	 * which OpenSSL's client takes as fatal. */
	ck_assert_int_eq(cerr, SSL_ERROR_SSL);
	ck_assert_int_eq(reason, SSL_R_NO_RENEGOTIATION);
	ck_assert_int_eq(SSL_renegotiate_pending(h.p.server), 0);
	ck_assert_int_eq(SSL_is_init_finished(h.p.server), 1);
	/* Nothing the client sends after that is taken as data. */
	(void)SSL_write_ex(h.p.client, msg, strlen(msg), &n);
	ERR_clear_error();
	ck_assert_int_ne(tls_read(h.p.server, buf, sizeof(buf), &n), TLS_IO_OK);
}
END_TEST

/*
 * SNI and client certificates. The config, with the fixture's paths:
 * [tls] has the ECDSA pair ec; [tls:exact] (line 6) serves mail.a.org and
 * other.a.org with ec2 and an RSA pair; [tls:wild] serves *.b.org and
 * *.0.0.1 with ec3. Listeners, by index: plain, opt (verify_client =
 * optional, client_ca at line 23), req (require), out (egress), plain2.
 */
enum { L_PLAIN, L_OPT, L_REQ, L_OUT, L_PLAIN2 };
enum served { S_DEFAULT, S_EXACT, S_WILD, S_EXACT_RSA };

static void
sni_config(enum file exact_ec_key, enum file ca)
{
	char text[8192];
	int n;

	n = snprintf(text, sizeof(text),
	    "[gateway]\nbackend = 127.0.0.1:25\n"
	    "[tls]\ncert = %s\nkey = %s\n"
	    "[tls:exact]\nnames = Mail.A.org, other.a.org\n"
	    "cert = %s\nkey = %s\ncert = %s\nkey = %s\n"
	    "[tls:wild]\nnames = *.b.org, *.0.0.1\ncert = %s\nkey = %s\n"
	    "[listener:plain]\naddress = 127.0.0.1:1\nmode = implicit\n"
	    "[listener:opt]\naddress = 127.0.0.1:2\nmode = implicit\n"
	    "verify_client = optional\nclient_ca = %s\n"
	    "[listener:req]\naddress = 127.0.0.1:3\nmode = starttls\n"
	    "verify_client = require\nclient_ca = %s\n"
	    "[listener:out]\naddress = 127.0.0.1:4\nmode = egress\n"
	    "upstream = relay\n"
	    "[listener:plain2]\naddress = 127.0.0.1:5\nmode = starttls\n"
	    "[upstream:relay]\nhost = 127.0.0.1\n",
	    paths[F_EC_CRT], paths[F_EC_KEY], paths[F_EC2_CRT],
	    paths[exact_ec_key], paths[F_RSA_CRT], paths[F_RSA_KEY],
	    paths[F_EC3_CRT], paths[F_EC3_KEY], paths[ca], paths[ca]);
	ck_assert(n > 0 && (size_t)n < sizeof(text));
	ck_assert_ptr_nonnull(h.conf = config_load_string(text, "test.ini"));
	ck_assert_msg(h.conf->nerrors == 0, "%s", h.conf->errors);
}

static SSL_CTX *
listener_ctx(int listener)
{
	char err[512] = "";
	SSL_CTX *ctx;

	ctx = tls_server_ctx_new(h.conf, &h.conf->listeners[listener], err,
	    sizeof(err));
	ck_assert_msg(ctx != NULL, "tls_server_ctx_new: %s", err);
	return (ctx);
}

/* A client of TLS version max (0: 1.3) that offers only ECDSA or RSA
 * signatures, and presents cert (if any) with the client key. */
static SSL_CTX *
client_ctx_with(int max_version, int rsa, X509 *cert)
{
	SSL_CTX *ctx = client_ctx(0, max_version);

	ck_assert_int_eq(SSL_CTX_set1_sigalgs_list(ctx, rsa ?
	    "rsa_pss_rsae_sha256:rsa_pkcs1_sha256" : "ecdsa_secp256r1_sha256"),
	    1);
	if (cert != NULL) {
		ck_assert_int_eq(SSL_CTX_use_certificate(ctx, cert), 1);
		ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, client_key), 1);
	}
	return (ctx);
}

static void
pair_new_sni(struct pair *p, const char *sn)
{
	pair_new(p, h.sctx, h.cctx);
	if (sn != NULL)
		ck_assert_int_eq(SSL_set_tlsext_host_name(p->client, sn), 1);
}

/* Which certificate the client got. */
static void
check_served(enum served want, const char *what)
{
	X509 *const certs[] = { ec_x509, ec2_x509, ec3_x509, rsa_x509 };
	static const char *const names[] = { "default", "exact", "wildcard",
	    "exact (RSA)" };
	int i;

	X509_free(h.peer);
	ck_assert_ptr_nonnull(h.peer = SSL_get1_peer_certificate(h.p.client));
	for (i = 0; i < 4; i++)
		if (X509_cmp(h.peer, certs[i]) == 0)
			break;
	ck_assert_msg(i == (int)want, "%s: got the %s certificate, not the "
	    "%s one", what, i < 4 ? names[i] : "unknown", names[want]);
}

static const struct sni_case {
	const char	*sn;
	enum served	 want;
} sni_cases[] = {
	{ NULL, S_DEFAULT },
	{ "mail.a.org", S_EXACT },
	{ "MAIL.A.Org", S_EXACT },
	{ "other.a.org", S_EXACT },
	{ "x.b.org", S_WILD },
	{ "X.B.ORG", S_WILD },
	{ "smtp-2.b.org", S_WILD },
	{ "y.x.b.org", S_DEFAULT },	/* a wildcard is one label */
	{ "b.org", S_DEFAULT },		/* and not none */
	{ ".b.org", S_DEFAULT },
	{ "a.org", S_DEFAULT },
	{ "mail.a.org.example", S_DEFAULT },
	{ "mail.a.org.", S_EXACT },	/* the root's dot is no label */
	{ "x.b.org.", S_WILD },
	{ ".", S_DEFAULT },
	{ "unknown.example", S_DEFAULT },
	{ "x.0.0.1", S_WILD },		/* a name, so *.0.0.1 matches... */
	{ "127.0.0.1", S_DEFAULT },	/* ...but an address is no name */
	{ "10.0.0.1", S_DEFAULT },
	{ "::1", S_DEFAULT },
};

#define NSNI	((int)(sizeof(sni_cases) / sizeof(sni_cases[0])))

/* Each case in TLS 1.3 and TLS 1.2, on a listener with and without client
 * verification (whose contexts are built apart). */
START_TEST(test_sni)
{
	const struct sni_case *sc = &sni_cases[_i / 4];

	sni_config(F_EC2_KEY, F_CA_CRT);
	h.sctx = listener_ctx(_i % 4 < 2 ? L_PLAIN : L_OPT);
	h.cctx = client_ctx_with(_i % 2 ? TLS1_2_VERSION : 0, 0, NULL);
	pair_new_sni(&h.p, sc->sn);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	check_served(sc->want, sc->sn != NULL ? sc->sn : "no SNI");
	if (sc->sn != NULL)
		ck_assert_str_eq(SSL_get_servername(h.p.server,
		    TLSEXT_NAMETYPE_host_name), sc->sn);
	pair_close(&h.p);
}
END_TEST

/* One name, an RSA and an ECDSA pair: the client's offer picks. */
START_TEST(test_sni_key_types)
{
	int rsa = _i % 2;

	sni_config(F_EC2_KEY, F_CA_CRT);
	h.sctx = listener_ctx(L_PLAIN);
	h.cctx = client_ctx_with(_i < 2 ? 0 : TLS1_2_VERSION, rsa, NULL);
	pair_new_sni(&h.p, "mail.a.org");
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	check_served(rsa ? S_EXACT_RSA : S_EXACT, "mail.a.org");
	ck_assert_int_eq(EVP_PKEY_is_a(X509_get0_pubkey(h.peer),
	    rsa ? "RSA" : "EC"), 1);
}
END_TEST

enum client_cert { C_NONE, C_GOOD, C_STRANGER };

/* A certificate from the other CA fails verification: OpenSSL queues the
 * signature's error first, so the test asks for the verify result. */
#define STRANGER	-1

static const struct verify_case {
	int		 listener;
	enum client_cert cert;
	const char	*sn;
	int		 ok;
	int		 reason;	/* the server's, when not ok;
					 * STRANGER: a bad signature */
	enum served	 served;
} verify_cases[] = {
	/* No certificate is asked for, so none is sent or logged. */
	{ L_PLAIN, C_GOOD, NULL, 1, 0, S_DEFAULT },
	{ L_OPT, C_NONE, NULL, 1, 0, S_DEFAULT },
	{ L_OPT, C_GOOD, NULL, 1, 0, S_DEFAULT },
	{ L_OPT, C_STRANGER, NULL, 0, STRANGER, 0 },
	{ L_REQ, C_NONE, NULL, 0, SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE, 0 },
	{ L_REQ, C_GOOD, NULL, 1, 0, S_DEFAULT },
	{ L_REQ, C_STRANGER, NULL, 0, STRANGER, 0 },
	/* After the switch to a [tls:NAME] context the verification and the
	 * CA names stay the listener's. */
	{ L_REQ, C_GOOD, "mail.a.org", 1, 0, S_EXACT },
	{ L_REQ, C_GOOD, "x.b.org", 1, 0, S_WILD },
	{ L_REQ, C_STRANGER, "mail.a.org", 0, STRANGER, 0 },
	{ L_REQ, C_NONE, "x.b.org", 0, SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE,
	    0 },
	{ L_OPT, C_NONE, "x.b.org", 1, 0, S_WILD },
	{ L_OPT, C_GOOD, "other.a.org", 1, 0, S_EXACT },
};

#define NVERIFY	((int)(sizeof(verify_cases) / sizeof(verify_cases[0])))

START_TEST(test_client_cert)
{
	const struct verify_case *vc = &verify_cases[_i / 2];
	X509 *const certs[] = { NULL, client_x509, stranger_x509 };
	const STACK_OF(X509_NAME) *ca_names;

	sni_config(F_EC2_KEY, F_CA_CRT);
	h.sctx = listener_ctx(vc->listener);
	h.cctx = client_ctx_with(_i % 2 ? TLS1_2_VERSION : 0, 0,
	    certs[vc->cert]);
	pair_new_sni(&h.p, vc->sn);
	if (!vc->ok) {
		ck_assert_int_eq(pair_handshake(&h.p), -1);
		ck_assert_int_eq(h.p.server_io, TLS_IO_ERROR);
		if (vc->reason == STRANGER)
			ck_assert_int_eq(SSL_get_verify_result(h.p.server),
			    X509_V_ERR_CERT_SIGNATURE_FAILURE);
		else
			ck_assert_int_eq(h.p.server_reason, vc->reason);
		return;
	}
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	check_served(vc->served, vc->sn != NULL ? vc->sn : "no SNI");
	h.subject = tls_client_subject(h.p.server);
	ca_names = SSL_get0_peer_CA_list(h.p.client);
	if (vc->listener == L_PLAIN) {
		ck_assert_ptr_null(h.subject);
		ck_assert_ptr_null(SSL_get0_peer_certificate(h.p.server));
		ck_assert_int_le(sk_X509_NAME_num(ca_names), 0);
	} else {
		/* The CertificateRequest named the CA. */
		ck_assert_int_eq(sk_X509_NAME_num(ca_names), 1);
		ck_assert_int_eq(X509_NAME_cmp(sk_X509_NAME_value(ca_names, 0),
		    X509_get_issuer_name(client_x509)), 0);
		if (vc->cert == C_NONE)
			ck_assert_ptr_null(h.subject);
		else
			ck_assert_pstr_eq(h.subject, CLIENT_SUBJECT);
	}
	pair_close(&h.p);
}
END_TEST

/*
 * A session resumes on the listener that verified it, still with its
 * client's subject, and carries an id context of that listener only.
 */
START_TEST(test_client_cert_resumption)
{
	char buf[16];
	const unsigned char *id;
	int i;
	unsigned req_len, other_len;
	unsigned char req_id[SSL_MAX_SID_CTX_LENGTH];

	sni_config(F_EC2_KEY, F_CA_CRT);
	h.sctx = listener_ctx(L_REQ);
	h.cctx = client_ctx_with(_i ? TLS1_2_VERSION : 0, 0, client_x509);
	pair_new_sni(&h.p, "x.b.org");
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_uint_eq(client_read(&h.p, buf, sizeof(buf)), 0);
	ck_assert_ptr_nonnull(h.sess = SSL_get1_session(h.p.client));
	id = SSL_SESSION_get0_id_context(SSL_get0_session(h.p.server),
	    &req_len);
	ck_assert_uint_gt(req_len, 0);
	memcpy(req_id, id, req_len);
	pair_close(&h.p);
	pair_free(&h.p);

	pair_new_sni(&h.p, "x.b.org");
	ck_assert_int_eq(SSL_set_session(h.p.client, h.sess), 1);
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	ck_assert_int_eq(SSL_session_reused(h.p.server), 1);
	check_served(S_WILD, "resumed");
	ck_assert_pstr_eq(h.subject = tls_client_subject(h.p.server),
	    CLIENT_SUBJECT);
	pair_close(&h.p);
	pair_free(&h.p);

	/* The other listeners' sessions carry other id contexts, so none
	 * of theirs resumes here even with shared ticket keys (OpenSSL
	 * compares the id context before it resumes). */
	h.ctxs[L_OPT] = listener_ctx(L_OPT);
	h.ctxs[L_PLAIN] = listener_ctx(L_PLAIN);
	for (i = 0; i < 2; i++) {
		pair_new(&h.p, h.ctxs[i == 0 ? L_OPT : L_PLAIN], h.cctx);
		ck_assert_int_eq(pair_handshake(&h.p), 0);
		id = SSL_SESSION_get0_id_context(SSL_get0_session(h.p.server),
		    &other_len);
		ck_assert(other_len != req_len || memcmp(id, req_id,
		    req_len) != 0);
		if (i == 1)
			ck_assert_mem_eq(id, "smtpgate", other_len);
		pair_free(&h.p);
	}
}
END_TEST

/*
 * Reload drops the last reference to a context while a handshake on it
 * has not even begun: the SSL keeps the context, its SNI table and the
 * named contexts alive, and frees them with itself (ASan and valgrind
 * would see a use after free or a leak).
 */
START_TEST(test_ctx_outlives_reference)
{
	sni_config(F_EC2_KEY, F_CA_CRT);
	h.sctx = listener_ctx(L_REQ);
	h.cctx = client_ctx_with(0, 0, client_x509);
	pair_new_sni(&h.p, _i ? "x.b.org" : "mail.a.org");
	SSL_CTX_free(h.sctx);
	h.sctx = NULL;
	config_free(h.conf);
	h.conf = NULL;
	ck_assert_int_eq(pair_handshake(&h.p), 0);
	check_served(_i ? S_WILD : S_EXACT, "after the reference was dropped");
	ck_assert_pstr_eq(h.subject = tls_client_subject(h.p.server),
	    CLIENT_SUBJECT);
	pair_close(&h.p);
}
END_TEST

/* One context shared by the listeners without client verification, one
 * of its own for each with, none for egress. */
START_TEST(test_ctxs_per_listener)
{
	char err[512] = "";

	sni_config(F_EC2_KEY, F_CA_CRT);
	ck_assert_msg(tls_server_ctxs_new(h.conf, h.ctxs, err, sizeof(err)) ==
	    0, "%s", err);
	ck_assert_ptr_nonnull(h.ctxs[L_PLAIN]);
	ck_assert_ptr_eq(h.ctxs[L_PLAIN], h.ctxs[L_PLAIN2]);
	ck_assert_ptr_nonnull(h.ctxs[L_OPT]);
	ck_assert_ptr_nonnull(h.ctxs[L_REQ]);
	ck_assert_ptr_ne(h.ctxs[L_OPT], h.ctxs[L_PLAIN]);
	ck_assert_ptr_ne(h.ctxs[L_REQ], h.ctxs[L_OPT]);
	ck_assert_ptr_null(h.ctxs[L_OUT]);
	ck_assert_int_eq(SSL_CTX_get_verify_mode(h.ctxs[L_PLAIN]),
	    SSL_VERIFY_NONE);
	ck_assert_int_eq(SSL_CTX_get_verify_mode(h.ctxs[L_OPT]),
	    SSL_VERIFY_PEER);
	ck_assert_int_eq(SSL_CTX_get_verify_mode(h.ctxs[L_REQ]),
	    SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
}
END_TEST

/*
 * Ticket keys outlive a reload, so whom a listener trusts is part of its
 * session id context: a session resumes on the listener rebuilt with the
 * same client_ca, not on one that trusts another CA.
 */
START_TEST(test_new_client_ca_no_resumption)
{
	sni_config(F_EC2_KEY, F_CA_CRT);
	h.cctx = client_ctx_with(0, 0, NULL);
	h.sctx = listener_ctx(L_OPT);
	ck_assert_int_eq(connect_once(h.sctx), 0);
	SSL_CTX_free(h.sctx);
	h.sctx = listener_ctx(L_OPT);
	ck_assert_int_eq(connect_once(h.sctx), 1);
	SSL_CTX_free(h.sctx);
	h.sctx = NULL;
	config_free(h.conf);
	h.conf = NULL;
	sni_config(F_EC2_KEY, F_EC_CRT);
	h.sctx = listener_ctx(L_OPT);
	ck_assert_int_eq(connect_once(h.sctx), 0);
}
END_TEST

/* What cannot be built says FILE:LINE of the section or key to fix. */
static const struct sni_error_case {
	enum file	 exact_ec_key, ca;
	int		 listener;
	const char	*prefix;
	int		 want_path;
} sni_error_cases[] = {
	{ F_EC3_KEY, F_CA_CRT, L_PLAIN, "test.ini:6: [tls:exact] ", F_EC3_KEY },
	{ F_MISSING_KEY, F_CA_CRT, L_REQ, "test.ini:6: [tls:exact] ",
	    F_MISSING_KEY },
	{ F_EC2_KEY, F_MISSING_CRT, L_OPT, "test.ini:23: listener 'opt': "
	    "client_ca ", F_MISSING_CRT },
	{ F_EC2_KEY, F_GARBAGE, L_REQ, "test.ini:28: listener 'req': "
	    "client_ca ", F_GARBAGE },
	{ F_EC2_KEY, F_EC_KEY, L_OPT, "test.ini:23: listener 'opt': "
	    "client_ca ", F_EC_KEY },
};

START_TEST(test_sni_ctx_errors)
{
	const struct sni_error_case *ec = &sni_error_cases[_i];
	char err[512] = "";
	SSL_CTX *ctx;

	sni_config(ec->exact_ec_key, ec->ca);
	ctx = tls_server_ctx_new(h.conf, &h.conf->listeners[ec->listener],
	    err, sizeof(err));
	SSL_CTX_free(ctx);
	ck_assert_msg(ctx == NULL, "case %d: a context was built", _i);
	ck_assert_msg(strncmp(err, ec->prefix, strlen(ec->prefix)) == 0,
	    "case %d: \"%s\" does not start with \"%s\"", _i, err, ec->prefix);
	ck_assert_msg(strstr(err, paths[ec->want_path]) != NULL,
	    "case %d: \"%s\" does not name %s", _i, err,
	    paths[ec->want_path]);
	ck_assert_msg(ERR_peek_error() == 0, "case %d: an error stays queued",
	    _i);
	/* The whole set fails alike, and holds nothing. */
	ck_assert_int_eq(tls_server_ctxs_new(h.conf, h.ctxs, err, sizeof(err)),
	    -1);
	ck_assert_ptr_null(h.ctxs[L_PLAIN]);
}
END_TEST

Suite *
tls_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("tls");
	tc = tcase_create("tls");
	/* Key generation happens once, outside the per-test timeout. */
	tcase_add_unchecked_fixture(tc, tls_setup, tls_teardown);
	tcase_add_checked_fixture(tc, NULL, held_free);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_handshake_and_io);
	tcase_add_loop_test(tc, test_eof, 0, 2);
	tcase_add_loop_test(tc, test_bulk, 0, 2);
	tcase_add_test(tc, test_tls11_refused);
	tcase_add_test(tc, test_min_tls13);
	tcase_add_loop_test(tc, test_cert_by_sigalg, 0,
	    (int)(sizeof(sigalg_cases) / sizeof(sigalg_cases[0])));
	tcase_add_loop_test(tc, test_ctx_errors, 0,
	    (int)(sizeof(ctx_error_cases) / sizeof(ctx_error_cases[0])));
	tcase_add_loop_test(tc, test_resumption, 0, 2);
	tcase_add_loop_test(tc, test_ticket_keys_outlive_contexts, 0, 2);
	tcase_add_test(tc, test_renegotiation_refused);
	tcase_add_loop_test(tc, test_sni, 0, 4 * NSNI);
	tcase_add_loop_test(tc, test_sni_key_types, 0, 4);
	tcase_add_loop_test(tc, test_client_cert, 0, 2 * NVERIFY);
	tcase_add_loop_test(tc, test_client_cert_resumption, 0, 2);
	tcase_add_loop_test(tc, test_ctx_outlives_reference, 0, 2);
	tcase_add_test(tc, test_ctxs_per_listener);
	tcase_add_test(tc, test_new_client_ca_no_resumption);
	tcase_add_loop_test(tc, test_sni_ctx_errors, 0,
	    (int)(sizeof(sni_error_cases) / sizeof(sni_error_cases[0])));
	suite_add_tcase(s, tc);
	return (s);
}
