/*
 * floor: what OpenSSL alone costs a TLS server on this machine, measured
 * in one process with no network and no proxy around it, so the benchmark
 * can say how far any proxy's figures are from the library's own floor.
 *
 *   floor -c CERT -k KEY [-n HANDSHAKES] [-m MIB]
 *
 * Server and client talk over a socketpair; only the server side's calls
 * are timed (CLOCK_THREAD_CPUTIME_ID), the client's are not counted. Same
 * shape as the benchmark: TLS 1.3, TLS_AES_256_GCM_SHA384, X25519, the
 * certificate given (ECDSA P-256 there), SSL_MODE_RELEASE_BUFFERS, no
 * session cache, stateless tickets. Prints one key=value line:
 *
 *   full_us	server CPU per full handshake (SSL_new to SSL_free)
 *   resumed_us	the same, resuming a ticket (psk_dhe_ke: X25519 again)
 *   read_us_per_mb	server CPU per MiB of SSL_read() (16 KB records, read
 *		ahead 64 KB at a time as the gateway does: socket read,
 *		AES-256-GCM, the copy out of OpenSSL's buffer)
 *   ssl_new_bytes	heap of one server SSL object before its handshake
 *   ssl_idle_bytes	heap of one server SSL object after its handshake
 *		and one read, with its buffers released: the least an idle
 *		TLS session can cost with this OpenSSL
 */
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SUITE		"TLS_AES_256_GCM_SHA384"
#define GROUP		"X25519"
#define HELD		200	/* SSL objects held for the memory figures */
#define SPINS		100	/* handshake steps before giving up */

static double
cpu_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return ((double)t.tv_sec + (double)t.tv_nsec / 1e9);
}

static size_t
heap_used(void)
{
	struct mallinfo2 m = mallinfo2();

	return (m.uordblks + m.hblkhd);
}

static void
die(const char *what)
{
	fprintf(stderr, "floor: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static SSL_CTX *
ctx_new(int server, const char *cert, const char *key)
{
	SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() :
	    TLS_client_method());

	if (c == NULL || SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_ciphersuites(c, SUITE) != 1 ||
	    SSL_CTX_set1_groups_list(c, GROUP) != 1)
		die("cannot set up a context");
	SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
	/* The client resumes with SSL_get1_session(): no cache either side
	 * holds memory the figures would count. */
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	if (!server)
		return (c);
	if (SSL_CTX_use_certificate_chain_file(c, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1)
		die("cannot load the certificate or key");
	return (c);
}

/* An SSL object on fd, as the server or the client. */
static SSL *
ssl_on(SSL_CTX *ctx, int fd, int server)
{
	SSL *ssl;

	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1)
		die("SSL_new");
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	return (ssl);
}

struct pair {
	int	 fd[2];		/* server, client */
	SSL	*srv, *cli;
	double	 cpu;		/* server-side CPU seconds so far */
};

/* A connected pair, the client resuming sess if not NULL; the server's
 * SSL_new counts as server time. */
static void
pair_open(struct pair *p, SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *sess)
{
	double t0;

	memset(p, 0, sizeof(*p));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd) == -1)
		die("socketpair");
	p->cli = ssl_on(cctx, p->fd[1], 0);
	if (sess != NULL)
		SSL_set_session(p->cli, sess);
	t0 = cpu_now();
	p->srv = ssl_on(sctx, p->fd[0], 1);
	p->cpu += cpu_now() - t0;
}

/* Both sides' handshakes, then the client takes the tickets in. */
static void
pair_handshake(struct pair *p)
{
	int s = 0, c = 0, i;
	double t0;
	char b[1];

	for (i = 0; i < SPINS && !(s == 1 && c == 1); i++) {
		if (c != 1)
			c = SSL_do_handshake(p->cli);
		if (s != 1) {
			t0 = cpu_now();
			s = SSL_do_handshake(p->srv);
			p->cpu += cpu_now() - t0;
		}
	}
	if (s != 1 || c != 1)
		die("the handshake did not complete");
	(void)SSL_read(p->cli, b, sizeof(b));
}

static void
pair_close(struct pair *p)
{
	double t0 = cpu_now();

	SSL_shutdown(p->srv);
	SSL_free(p->srv);
	p->cpu += cpu_now() - t0;
	/* A client that closed properly keeps its session resumable. */
	SSL_set_shutdown(p->cli, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(p->cli);
	close(p->fd[0]);
	close(p->fd[1]);
}

/* Server CPU per handshake in microseconds, n of them, resuming or not. */
static double
handshakes(SSL_CTX *sctx, SSL_CTX *cctx, int n, int resume)
{
	SSL_SESSION *sess = NULL;
	struct pair p;
	double cpu = 0;
	int i, reused = 0;

	for (i = 0; i < n; i++) {
		pair_open(&p, sctx, cctx, resume ? sess : NULL);
		pair_handshake(&p);
		reused += SSL_session_reused(p.cli);
		if (resume) {
			SSL_SESSION_free(sess);
			sess = SSL_get1_session(p.cli);
		}
		pair_close(&p);
		cpu += p.cpu;
	}
	SSL_SESSION_free(sess);
	if (resume && reused < n - 1)
		die("tickets did not resume");
	return (cpu / n * 1e6);
}

/* Server CPU per MiB read through SSL_read in 16 KB records. */
static double
bulk_read(SSL_CTX *sctx, SSL_CTX *cctx, int mib)
{
	static char rec[16384], in[65536];
	struct pair p;
	double t0, cpu = 0;
	long long left = (long long)mib << 20, sent = 0;
	int r;

	memset(rec, 'x', sizeof(rec));
	pair_open(&p, sctx, cctx, NULL);
	pair_handshake(&p);
	/* As the gateway reads: several records per read(). */
	SSL_set_read_ahead(p.srv, 1);
	SSL_set_default_read_buffer_len(p.srv, sizeof(in));
	while (left > 0) {
		/* Fill the socket pair, then drain it on the server side. */
		while (sent < left && SSL_write(p.cli, rec, sizeof(rec)) > 0)
			sent += (long long)sizeof(rec);
		t0 = cpu_now();
		while ((r = SSL_read(p.srv, in, sizeof(in))) > 0) {
			left -= r;
			sent -= r;
		}
		cpu += cpu_now() - t0;
		if (SSL_get_error(p.srv, r) != SSL_ERROR_WANT_READ)
			die("SSL_read failed");
	}
	pair_close(&p);
	return (cpu / mib * 1e6);
}

/* Heap per server SSL object: just made, and idle after its handshake. */
static void
memory(SSL_CTX *sctx, SSL_CTX *cctx, size_t *fresh, size_t *idle)
{
	static struct pair p[HELD];
	size_t h0, h1, h2, h3;
	char b[16];
	int i;

	h0 = heap_used();
	for (i = 0; i < HELD; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
		    p[i].fd) == -1)
			die("socketpair");
		p[i].cli = ssl_on(cctx, p[i].fd[1], 0);
	}
	h1 = heap_used();
	for (i = 0; i < HELD; i++)
		p[i].srv = ssl_on(sctx, p[i].fd[0], 1);
	h2 = heap_used();
	for (i = 0; i < HELD; i++) {
		pair_handshake(&p[i]);
		if (SSL_write(p[i].cli, "EHLO x\r\n", 8) != 8 ||
		    SSL_read(p[i].srv, b, sizeof(b)) != 8)
			die("a read after the handshake failed");
	}
	/* The clients go, so only the servers' bytes are left over h0. */
	for (i = 0; i < HELD; i++) {
		SSL_set_shutdown(p[i].cli, SSL_SENT_SHUTDOWN |
		    SSL_RECEIVED_SHUTDOWN);
		SSL_free(p[i].cli);
	}
	h3 = heap_used();
	for (i = 0; i < HELD; i++) {
		SSL_free(p[i].srv);
		close(p[i].fd[0]);
		close(p[i].fd[1]);
	}
	*fresh = (h2 - h1) / HELD;
	*idle = h3 > h0 ? (h3 - h0) / HELD : 0;
}

int
main(int argc, char **argv)
{
	const char *cert = NULL, *key = NULL;
	SSL_CTX *sctx, *cctx;
	size_t fresh, idle;
	double full, resumed, read;
	int ch, n = 2000, mib = 256;

	while ((ch = getopt(argc, argv, "c:k:n:m:")) != -1) {
		switch (ch) {
		case 'c':
			cert = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'n':
			n = atoi(optarg);
			break;
		case 'm':
			mib = atoi(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (cert == NULL || key == NULL || n < 2 || mib < 1)
		goto usage;
	sctx = ctx_new(1, cert, key);
	cctx = ctx_new(0, NULL, NULL);
	/* Warm up: first-use lookups are not what a running server pays. */
	(void)handshakes(sctx, cctx, 20, 1);
	full = handshakes(sctx, cctx, n, 0);
	resumed = handshakes(sctx, cctx, n, 1);
	read = bulk_read(sctx, cctx, mib);
	memory(sctx, cctx, &fresh, &idle);
	printf("full_us=%.1f resumed_us=%.1f read_us_per_mb=%.1f "
	    "ssl_new_bytes=%zu ssl_idle_bytes=%zu\n", full, resumed, read,
	    fresh, idle);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return (0);

usage:
	fprintf(stderr, "usage: floor -c CERT -k KEY [-n HANDSHAKES] "
	    "[-m MIB]\n");
	return (2);
}
