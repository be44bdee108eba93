/*
 * loadgen: the benchmark's SMTP load generator. One thread, epoll
 * (edge-triggered), non-blocking OpenSSL; N sessions in flight for T seconds.
 *
 *   loadgen -m MODE -a ADDR:PORT [-c N] [-t SECONDS] [-k K] [-s BYTES] [-p]
 *
 * Modes, each a script of steps (see the tables below):
 *   handshake  TLS, read the 220 greeting, QUIT
 *   resumed    the same, resuming a TLS 1.3 ticket from an earlier session
 *   starttls   plaintext 220, EHLO, STARTTLS, TLS, EHLO, QUIT
 *   message    TLS, 220, EHLO, MAIL, RCPT, DATA, a -s byte body (2 KB), QUIT
 *   large      the same with a 20 MB body (-s); ops are then MB
 *   noop       one session: TLS, 220, EHLO, MAIL, RCPT, then NOOP round
 *              trips until the time is up (latencies are per round trip)
 *   idle       open K sessions (-k; at most N in their handshake at once),
 *              each to TLS + EHLO, print "ready K" and hold them until
 *              SIGUSR1, then QUIT them all
 * -p: no TLS at all (the TLS steps are skipped), for the plaintext baseline
 * straight to the sink.
 *
 * The client offers TLS 1.3 only, TLS_AES_256_GCM_SHA384 only and X25519
 * only, so every peer negotiates the same thing whatever its defaults. The
 * certificate is not verified (the CertificateVerify signature is, as in
 * any TLS 1.3 handshake).
 *
 * After T seconds no new session starts; sessions in flight finish (up to
 * 30 s more) and count. It prints one line of key=value results on stdout:
 *   mode= ok= errors= seconds= rate= p50_us= p99_us= mb= resumed= sha256=
 * ok is completed sessions (noop: round trips; idle: sessions held), rate
 * is ok per second (large: MB per second), latencies are per session from
 * connect() to the last reply (noop: per round trip; idle: to the EHLO
 * reply). sha256 is the hash of the message body as the sink hashes it.
 * Any failure (refused, reset, TLS error, unexpected reply, timeout) is an
 * error; the first few are described on stderr.
 */
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "netutil.h"

#define GRACE_NS	(30ULL * 1000000000ULL)	/* for sessions in flight */
#define MB		(1024.0 * 1024.0)
#define TICKETS		1024		/* resumption tickets kept */
#define ERRORS_SHOWN	5

enum step_kind { STEP_TLS, STEP_CMD, STEP_BODY, STEP_NOOPS, STEP_HOLD,
    STEP_END };

struct step {
	enum step_kind	 kind;
	const char	*text;		/* the command; NULL: only read a reply */
	int		 expect;	/* the reply code that lets us go on */
};

#define EHLO	{ STEP_CMD, "EHLO loadgen.example.org\r\n", 250 }
#define GREET	{ STEP_CMD, NULL, 220 }
#define QUIT	{ STEP_CMD, "QUIT\r\n", 221 }
#define MAIL	{ STEP_CMD, "MAIL FROM:<bench@example.org>\r\n", 250 }, \
		{ STEP_CMD, "RCPT TO:<sink@example.org>\r\n", 250 }

static const struct step SCRIPT_HANDSHAKE[] = {
	{ STEP_TLS, NULL, 0 }, GREET, QUIT, { STEP_END, NULL, 0 } };
static const struct step SCRIPT_STARTTLS[] = {
	GREET, EHLO, { STEP_CMD, "STARTTLS\r\n", 220 }, { STEP_TLS, NULL, 0 },
	EHLO, QUIT, { STEP_END, NULL, 0 } };
static const struct step SCRIPT_MESSAGE[] = {
	{ STEP_TLS, NULL, 0 }, GREET, EHLO, MAIL,
	{ STEP_CMD, "DATA\r\n", 354 }, { STEP_BODY, NULL, 250 }, QUIT,
	{ STEP_END, NULL, 0 } };
static const struct step SCRIPT_NOOP[] = {
	{ STEP_TLS, NULL, 0 }, GREET, EHLO, MAIL,
	{ STEP_NOOPS, "NOOP\r\n", 250 }, QUIT, { STEP_END, NULL, 0 } };
static const struct step SCRIPT_IDLE[] = {
	{ STEP_TLS, NULL, 0 }, GREET, EHLO, { STEP_HOLD, NULL, 0 }, QUIT,
	{ STEP_END, NULL, 0 } };

/* What a completed session counts as. */
enum count { COUNT_SESSION, COUNT_MB, COUNT_ROUND_TRIP, COUNT_HELD };

static const struct mode {
	const char		*name;
	const struct step	*script;
	size_t			 body;		/* default -s */
	int			 conc;		/* default -c */
	int			 resume;	/* offer a ticket from earlier */
	enum count		 count;
} MODES[] = {
	{ "handshake", SCRIPT_HANDSHAKE, 0, 8, 0, COUNT_SESSION },
	{ "resumed", SCRIPT_HANDSHAKE, 0, 8, 1, COUNT_SESSION },
	{ "starttls", SCRIPT_STARTTLS, 0, 8, 0, COUNT_SESSION },
	{ "message", SCRIPT_MESSAGE, 2048, 8, 0, COUNT_SESSION },
	{ "large", SCRIPT_MESSAGE, 20 * 1024 * 1024, 2, 0, COUNT_MB },
	{ "noop", SCRIPT_NOOP, 0, 1, 0, COUNT_ROUND_TRIP },
	{ "idle", SCRIPT_IDLE, 0, 64, 0, COUNT_HELD },
};

enum conn_rc { CONN_BLOCKED, CONN_DONE, CONN_HELD, CONN_FAILED };

struct conn {
	int			 fd;
	SSL			*ssl;
	int			 connecting;
	int			 sent;		/* this step's text is queued */
	int			 held;		/* idle: in held_conns */
	const struct step	*step;
	const char		*out;
	size_t			 out_len, out_off;
	unsigned long long	 t0, t_cmd;
	size_t			 in_len;
	char			 in[8192];
};

/* Latencies in nanoseconds; grows by doubling. */
struct samples {
	unsigned long long	*v;
	size_t			 n, cap;
};

static const struct mode *mode;
static struct sockaddr_in target;
static SSL_CTX		*ctx;
static int		 plain, epfd;
static char		*wire;			/* body + ".\r\n" */
static size_t		 wire_len, body_len;
static char		 body_hash[2 * EVP_MAX_MD_SIZE + 1] = "-";
static unsigned long long deadline, ok, errors, resumed, held;
static struct samples	 lat;
static SSL_SESSION	*tickets[TICKETS];
static size_t		 ntickets;
static volatile sig_atomic_t released;

static void
on_usr1(int sig)
{
	(void)sig;
	released = 1;
}

static void
samples_add(struct samples *s, unsigned long long v)
{
	unsigned long long *nv;

	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 4096;
		if ((nv = realloc(s->v, s->cap * sizeof(*nv))) == NULL) {
			perror("realloc");
			exit(1);
		}
		s->v = nv;
	}
	s->v[s->n++] = v;
}

static int
cmp_ull(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a;
	unsigned long long y = *(const unsigned long long *)b;

	return (x > y) - (x < y);
}

/* The q-quantile in microseconds (nearest rank); 0 with no samples. */
static double
samples_quantile(const struct samples *s, double q)
{
	size_t i;

	if (s->n == 0)
		return (0);
	i = (size_t)(q * (double)(s->n - 1) + 0.5);
	return ((double)s->v[i] / 1000.0);
}

/*
 * A TLS 1.3 server sends its tickets after the handshake; they arrive while
 * we read the greeting. Keep them: each resumed session takes one (servers
 * may treat tickets as single-use), the newest one stays for reuse when the
 * pool runs dry.
 */
static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	if (ntickets == TICKETS) {
		SSL_SESSION_free(tickets[0]);
		memmove(tickets, tickets + 1, (TICKETS - 1) * sizeof(*tickets));
		ntickets--;
	}
	tickets[ntickets++] = sess;
	return (1);	/* we keep the reference */
}

static void
ticket_use(SSL *ssl)
{
	if (ntickets == 0)
		return;
	SSL_set_session(ssl, tickets[ntickets - 1]);
	/* Take it from the pool unless it is the only one left. */
	if (ntickets > 1)
		SSL_SESSION_free(tickets[--ntickets]);
}

static SSL_CTX *
client_ctx(void)
{
	SSL_CTX *c;

	if ((c = SSL_CTX_new(TLS_client_method())) == NULL)
		goto err0;
	if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_ciphersuites(c, "TLS_AES_256_GCM_SHA384") != 1 ||
	    SSL_CTX_set1_groups_list(c, "X25519") != 1)
		goto err1;
	SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(c, on_new_session);
	return (c);
err1:
	SSL_CTX_free(c);
err0:
	ERR_print_errors_fp(stderr);
	return (NULL);
}

/*
 * The message: a few headers, then 80-character lines that start with a
 * digit (so nothing is dot-stuffed and the sink hashes exactly these
 * bytes), every line CRLF-terminated, len bytes in all; then ".\r\n".
 */
static int
body_make(size_t len)
{
	static const char hdr[] = "From: <bench@example.org>\r\n"
	    "To: <sink@example.org>\r\nSubject: smtpgate bench\r\n\r\n";
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl, i;
	size_t off, r, n, line = 0;

	if (len < sizeof(hdr) + 1) {
		fprintf(stderr, "loadgen: -s must be at least %zu\n",
		    sizeof(hdr) + 1);
		return (-1);
	}
	if ((wire = malloc(len + 3)) == NULL)
		return (-1);
	memcpy(wire, hdr, sizeof(hdr) - 1);
	for (off = sizeof(hdr) - 1; off < len; off += n + 2, line++) {
		r = len - off;
		/* Never leave a single byte: it could not hold a CRLF. */
		n = r >= 84 ? 80 : r - 2;
		for (i = 0; i < n; i++)
			wire[off + i] = (char)('0' + (line + i) % 75);
		wire[off] = (char)('0' + line % 10);
		memcpy(wire + off + n, "\r\n", 2);
	}
	memcpy(wire + len, ".\r\n", 3);
	body_len = len;
	wire_len = len + 3;
	if (EVP_Digest(wire, len, d, &dl, EVP_sha256(), NULL) != 1)
		return (-1);
	for (i = 0; i < dl; i++)
		snprintf(body_hash + 2 * i, 3, "%02x", d[i]);
	return (0);
}

static enum conn_rc
conn_fail(struct conn *c, const char *why)
{
	if (errors < ERRORS_SHOWN) {
		fprintf(stderr, "loadgen: session failed at step %td: %s\n",
		    c->step - mode->script, why);
		ERR_print_errors_fp(stderr);
	}
	ERR_clear_error();
	return (CONN_FAILED);
}

/* Returns bytes read, 0 when the socket has nothing now, -1 at EOF/error. */
static ssize_t
conn_read(struct conn *c, char *p, size_t n)
{
	ssize_t r;
	int e;

	if (c->ssl != NULL) {
		if ((r = SSL_read(c->ssl, p, (int)n)) > 0)
			return (r);
		e = SSL_get_error(c->ssl, (int)r);
		return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ?
		    0 : -1);
	}
	while ((r = recv(c->fd, p, n, 0)) == -1 && errno == EINTR)
		;
	if (r > 0)
		return (r);
	return (r == -1 && errno == EAGAIN ? 0 : -1);
}

/* Returns bytes written, 0 when the socket is full, -1 on an error. */
static ssize_t
conn_write(struct conn *c, const char *p, size_t n)
{
	ssize_t r;
	int e;

	if (c->ssl != NULL) {
		/* Up to 256 KB per call: OpenSSL cuts it into records. */
		if (n > 256 * 1024)
			n = 256 * 1024;
		if ((r = SSL_write(c->ssl, p, (int)n)) > 0)
			return (r);
		e = SSL_get_error(c->ssl, (int)r);
		return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ?
		    0 : -1);
	}
	while ((r = send(c->fd, p, n, MSG_NOSIGNAL)) == -1 && errno == EINTR)
		;
	if (r >= 0)
		return (r);
	return (errno == EAGAIN ? 0 : -1);
}

/*
 * Reads until a whole reply (its last line has a space after the code) is
 * buffered. Returns 1 with *code set, 0 when more must come, -1 on EOF or a
 * reply too long.
 */
static int
conn_reply(struct conn *c, int *code)
{
	char *p, *lf, *end;
	ssize_t r;

	for (;;) {
		p = c->in;
		end = c->in + c->in_len;
		while ((lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			if (lf - p >= 3 && (lf - p == 3 || p[3] != '-')) {
				*code = atoi(p);
				/* We never pipeline: nothing may follow. */
				c->in_len = (size_t)(end - lf - 1);
				memmove(c->in, lf + 1, c->in_len);
				return (1);
			}
			p = lf + 1;
		}
		if (c->in_len == sizeof(c->in))
			return (-1);
		if ((r = conn_read(c, c->in + c->in_len,
		    sizeof(c->in) - c->in_len)) <= 0)
			return ((int)r);
		c->in_len += (size_t)r;
	}
}

/* Runs the script as far as the sockets allow. */
static enum conn_rc
conn_drive(struct conn *c)
{
	unsigned long long now;
	ssize_t r;
	int code, rc;

	for (;;) {
		switch (c->step->kind) {
		case STEP_TLS:
			if (plain) {
				c->step++;
				continue;
			}
			if (c->ssl == NULL) {
				if ((c->ssl = SSL_new(ctx)) == NULL ||
				    SSL_set_fd(c->ssl, c->fd) != 1)
					return (conn_fail(c, "SSL_new"));
				if (mode->resume)
					ticket_use(c->ssl);
				SSL_set_connect_state(c->ssl);
			}
			ERR_clear_error();
			if ((rc = SSL_do_handshake(c->ssl)) != 1) {
				code = SSL_get_error(c->ssl, rc);
				if (code == SSL_ERROR_WANT_READ ||
				    code == SSL_ERROR_WANT_WRITE)
					return (CONN_BLOCKED);
				return (conn_fail(c, "TLS handshake"));
			}
			if (SSL_session_reused(c->ssl))
				resumed++;
			c->step++;
			continue;
		case STEP_NOOPS:
			if (!c->sent && net_now_ns() >= deadline) {
				c->step++;
				continue;
			}
			/* FALLTHROUGH */
		case STEP_CMD:
		case STEP_BODY:
			if (!c->sent) {
				c->sent = 1;
				if (c->step->kind == STEP_BODY) {
					c->out = wire;
					c->out_len = wire_len;
				} else {
					c->out = c->step->text;
					c->out_len = c->out ? strlen(c->out) : 0;
				}
				c->out_off = 0;
				c->t_cmd = net_now_ns();
			}
			while (c->out_off < c->out_len) {
				r = conn_write(c, c->out + c->out_off,
				    c->out_len - c->out_off);
				if (r == 0)
					return (CONN_BLOCKED);
				if (r == -1)
					return (conn_fail(c, "write"));
				c->out_off += (size_t)r;
			}
			if ((rc = conn_reply(c, &code)) == 0)
				return (CONN_BLOCKED);
			if (rc == -1)
				return (conn_fail(c, "connection closed"));
			if (code != c->step->expect)
				return (conn_fail(c, "unexpected reply code"));
			c->sent = 0;
			if (c->step->kind == STEP_NOOPS) {
				now = net_now_ns();
				samples_add(&lat, now - c->t_cmd);
				ok++;
				continue;
			}
			c->step++;
			if (c->step->kind == STEP_HOLD)
				samples_add(&lat, net_now_ns() - c->t0);
			continue;
		case STEP_HOLD:
			if (!released)
				return (CONN_HELD);
			c->step++;
			continue;
		case STEP_END:
			return (CONN_DONE);
		}
	}
}

static void
conn_free(struct conn *c)
{
	if (c->ssl != NULL) {
		/* A close_notify, as a polite client sends; never waited for. */
		(void)SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	close(c->fd);
	free(c);
}

/* Connects a new session; failures count as errors. */
static struct conn *
conn_start(void)
{
	struct epoll_event ev;
	struct conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return (NULL);
	c->step = mode->script;
	c->t0 = net_now_ns();
	if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1) {
		perror("socket");
		goto err0;
	}
	net_nodelay(c->fd);
	if (connect(c->fd, (struct sockaddr *)&target, sizeof(target)) == -1) {
		if (errno != EINPROGRESS) {
			conn_fail(c, strerror(errno));
			goto err1;
		}
		c->connecting = 1;
	}
	/* Edge-triggered: the script runs until a socket call would block. */
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
		perror("epoll_ctl");
		goto err1;
	}
	return (c);
err1:
	close(c->fd);
err0:
	free(c);
	return (NULL);
}

static enum conn_rc
conn_event(struct conn *c)
{
	socklen_t len = sizeof(int);
	int err = 0;

	if (c->connecting) {
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			return (CONN_BLOCKED);
		if (err != 0)
			return (conn_fail(c, strerror(err)));
		c->connecting = 0;
	}
	return (conn_drive(c));
}

/* Counts a session that ended and frees it. */
static void
conn_end(struct conn *c, enum conn_rc rc)
{
	if (rc == CONN_DONE) {
		/* noop counts round trips, idle counts sessions held. */
		if (mode->count == COUNT_SESSION || mode->count == COUNT_MB) {
			ok++;
			samples_add(&lat, net_now_ns() - c->t0);
		}
	} else
		errors++;
	conn_free(c);
}

/* Idle mode: c reached its hold step; it waits there for SIGUSR1. */
static void
hold(struct conn *c, struct conn **held_conns)
{
	c->held = 1;
	held_conns[held++] = c;
}

static void
usage(void)
{
	fprintf(stderr, "usage: loadgen -m handshake|resumed|starttls|message|"
	    "large|noop|idle -a ADDR:PORT\n"
	    "               [-c CONCURRENCY] [-t SECONDS] [-k HELD] "
	    "[-s BODY_BYTES] [-p]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct epoll_event evs[256];
	struct conn **held_conns = NULL, *c;
	unsigned long long start, end, now, hard;
	double seconds = 5, secs, mb;
	size_t body = 0, i;
	long k = 1000;
	int conc = 0, opt, n, j, active = 0, idle_mode, ready = 0;
	long started = 0;
	enum conn_rc rc;

	while ((opt = getopt(argc, argv, "m:a:c:t:k:s:p")) != -1) {
		switch (opt) {
		case 'm':
			for (i = 0; i < sizeof(MODES) / sizeof(MODES[0]); i++)
				if (strcmp(optarg, MODES[i].name) == 0)
					mode = &MODES[i];
			break;
		case 'a':
			if (net_parse(optarg, &target) == -1)
				usage();
			break;
		case 'c': conc = atoi(optarg); break;
		case 't': seconds = atof(optarg); break;
		case 'k': k = atol(optarg); break;
		case 's': body = (size_t)strtoull(optarg, NULL, 10); break;
		case 'p': plain = 1; break;
		default: usage();
		}
	}
	if (mode == NULL || target.sin_port == 0 || optind != argc ||
	    seconds <= 0 || k <= 0)
		usage();
	if (plain && mode->script == SCRIPT_STARTTLS) {
		fprintf(stderr, "loadgen: starttls has no plaintext variant\n");
		return (2);
	}
	idle_mode = mode->count == COUNT_HELD;
	if (conc <= 0)
		conc = mode->conc;
	if (body == 0)
		body = mode->body;
	if (body > 0 && body_make(body) == -1)
		return (1);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGUSR1, on_usr1);
	if (!plain && (ctx = client_ctx()) == NULL)
		return (1);
	if ((epfd = epoll_create1(0)) == -1) {
		perror("epoll_create1");
		return (1);
	}
	if (idle_mode && (held_conns = calloc((size_t)k, sizeof(c))) == NULL)
		return (1);

	start = net_now_ns();
	deadline = start + (unsigned long long)(seconds * 1e9);
	hard = deadline + GRACE_NS;
	for (;;) {
		now = net_now_ns();
		/* Idle mode starts K sessions, the others start until T. */
		while (active < conc && (idle_mode ? started < k :
		    now < deadline)) {
			started++;
			if ((c = conn_start()) == NULL) {
				errors++;
				continue;
			}
			active++;
			if (!c->connecting) {
				if ((rc = conn_event(c)) == CONN_HELD) {
					hold(c, held_conns);
					active--;
				} else if (rc != CONN_BLOCKED) {
					conn_end(c, rc);
					active--;
				}
			}
		}
		if (idle_mode && !ready && active == 0 && started == k) {
			/* All set up: the driver measures, then sends SIGUSR1. */
			printf("ready %llu\n", held);
			fflush(stdout);
			ready = 1;
		}
		if (idle_mode && ready && released && held > 0) {
			/* Release: QUIT every held session. */
			for (i = 0; i < held; i++) {
				c = held_conns[i];
				active++;
				if ((rc = conn_event(c)) != CONN_BLOCKED) {
					conn_end(c, rc);
					active--;
				}
			}
			ok = held;
			held = 0;
			hard = net_now_ns() + GRACE_NS;
		}
		if (active == 0 && (idle_mode ? ready && released :
		    now >= deadline))
			break;
		if (!idle_mode || !ready || released) {
			if (now >= hard) {
				/* Counted as errors; the process exits next,
				 * so their sockets are left to it. */
				fprintf(stderr, "loadgen: %d sessions did not "
				    "finish in time\n", active);
				errors += (unsigned long long)active;
				break;
			}
		}
		if ((n = epoll_wait(epfd, evs, 256, 50)) == -1) {
			if (errno == EINTR)
				continue;
			perror("epoll_wait");
			return (1);
		}
		for (j = 0; j < n; j++) {
			c = evs[j].data.ptr;
			if ((rc = conn_event(c)) == CONN_BLOCKED)
				continue;
			if (rc == CONN_HELD) {
				/* Not when woken again while held (its peer spoke). */
				if (!c->held) {
					hold(c, held_conns);
					active--;
				}
				continue;
			}
			conn_end(c, rc);
			active--;
		}
	}
	end = net_now_ns();
	qsort(lat.v, lat.n, sizeof(*lat.v), cmp_ull);
	secs = (double)(end - start) / 1e9;
	mb = mode->count == COUNT_MB ? (double)ok * (double)body_len / MB : 0;
	printf("mode=%s ok=%llu errors=%llu seconds=%.3f rate=%.1f "
	    "p50_us=%.1f p99_us=%.1f mb=%.1f resumed=%llu sha256=%s "
	    "body_bytes=%zu\n", mode->name, ok, errors, secs,
	    mb > 0 ? mb / secs : (double)ok / secs,
	    samples_quantile(&lat, 0.50), samples_quantile(&lat, 0.99), mb,
	    resumed, body_hash, body_len);
	while (ntickets > 0)
		SSL_SESSION_free(tickets[--ntickets]);
	SSL_CTX_free(ctx);
	close(epfd);
	free(held_conns);
	free(lat.v);
	free(wire);
	return (errors > 0 ? 3 : 0);
}
