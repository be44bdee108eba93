/*
 * The tracker, driven by scripts: what the client and the backend send, and
 * exactly what each side must then have received. Every script runs twice:
 * with each send whole, and one byte at a time.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/smtp.h"
#include "suites.h"

#define CAP	(16 * 1024 + 512)
#define SEEN	(256 * 1024)

/* Scripts */

enum op {
	END,
	C,		/* the client sends */
	B,		/* the backend sends */
	WANT_C,		/* the client has received exactly this since last */
	WANT_B,		/* the backend has received exactly this since last */
	TLS,		/* the client's handshake completes */
	BTLS,		/* egress: the upstream's handshake completes */
	C_EOF,
	B_EOF,
	FLAGS,		/* exactly these flags: b(ackend) t(ls) c(lose)
			 * u(pstream tls) */
	ABORT_TO,	/* smtp_abort(ABORT_TIMEOUT) */
	ABORT_DOWN,	/* smtp_abort(ABORT_BACKEND_DOWN) */
	MSGS,		/* messages acknowledged so far: len */
	LOG,		/* the log contains this */
};

struct step {
	enum op		 op;
	const char	*s;
	size_t		 len;
};

#define S(op, str)	{ op, str, sizeof(str) - 1 }
#define N(op)		{ op, NULL, 0 }
#define COUNT(op, n)	{ op, NULL, n }

struct script {
	const char	*name;
	enum smtp_mode	 mode;
	int		 bare_reject;
	size_t		 max_line;
	struct step	 steps[40];
	unsigned	 max_errors;	/* 0: off */
	int		 xclient;	/* client 192.0.2.1:4567 to 198.51.100.2:465 */
	int		 auth;		/* egress: 1 PLAIN, 2 LOGIN as apikey */
	int		 app_auth;	/* egress: 0 ignore, 1 refuse, 2 offer */
};

struct harness {
	struct smtp_conf	 conf;
	struct smtp		 t;
	struct buf		 cin, bin, cout, bout;
	int			 bytewise;
	int			 client_eof, backend_eof;
	char			*client_seen, *backend_seen;
	size_t			 client_len, backend_len;
	char			 log[4096];
};

static void
h_log(void *arg, enum smtp_log_level lvl, const char *msg)
{
	struct harness *h = arg;

	(void)lvl;
	strncat(h->log, msg, sizeof(h->log) - strlen(h->log) - 2);
	strcat(h->log, "\n");
}

static void
h_io(struct harness *h, struct smtp_io *io)
{
	io->client_in = &h->cin;
	io->backend_in = &h->bin;
	io->to_client = &h->cout;
	io->to_backend = &h->bout;
	io->client_eof = h->client_eof;
	io->backend_eof = h->backend_eof;
}

/* Move what the tracker wrote into the transcripts, as the sockets would. */
static void
h_drain(struct harness *h)
{
	ck_assert_uint_le(h->client_len + buf_len(&h->cout), SEEN);
	if (buf_len(&h->cout) > 0)
		memcpy(h->client_seen + h->client_len, buf_head(&h->cout),
		    buf_len(&h->cout));
	h->client_len += buf_len(&h->cout);
	buf_consume(&h->cout, buf_len(&h->cout));
	ck_assert_uint_le(h->backend_len + buf_len(&h->bout), SEEN);
	if (buf_len(&h->bout) > 0)
		memcpy(h->backend_seen + h->backend_len, buf_head(&h->bout),
		    buf_len(&h->bout));
	h->backend_len += buf_len(&h->bout);
	buf_consume(&h->bout, buf_len(&h->bout));
}

static void
h_run(struct harness *h)
{
	struct smtp_io io;
	int i, r;

	/* Each round drains the output, as the session's flushes do. */
	for (i = 0; i < 64; i++) {
		h_io(h, &io);
		r = smtp_run(&h->t, &io);
		/* An empty buffer holds no storage: an idle session costs
		 * no buffer memory. */
		ck_assert(buf_len(&h->bout) > 0 || h->bout.data == NULL);
		ck_assert(buf_len(&h->cout) > 0 || h->cout.data == NULL);
		if (!r)
			break;
		h_drain(h);
	}
	h_drain(h);
}

static void
h_init(struct harness *h, const struct script *sc, int bytewise)
{
	struct sockaddr_in client = { .sin_family = AF_INET,
	    .sin_port = htons(4567) };
	struct sockaddr_in local = { .sin_family = AF_INET,
	    .sin_port = htons(465) };
	struct smtp_io io;

	memset(h, 0, sizeof(*h));
	h->conf.hostname = "gw.test";
	h->conf.max_line = sc->max_line ? sc->max_line : 4096;
	h->conf.bare_reject = sc->bare_reject;
	h->conf.mode = sc->mode;
	h->conf.max_errors = sc->max_errors;
	h->conf.xclient = sc->xclient;
	h->conf.helo = "out.test";
	h->conf.auth = sc->auth;
	h->conf.auth_user = "apikey";
	h->conf.auth_pass = "s3cret";
	h->conf.app_auth = sc->app_auth;
	h->bytewise = bytewise;
	buf_init(&h->cin, CAP);
	buf_init(&h->bin, CAP);
	buf_init(&h->cout, CAP);
	buf_init(&h->bout, CAP);
	h->client_seen = calloc(1, SEEN);
	h->backend_seen = calloc(1, SEEN);
	ck_assert_ptr_nonnull(h->client_seen);
	ck_assert_ptr_nonnull(h->backend_seen);
	smtp_init(&h->t, &h->conf, h_log, h);
	inet_pton(AF_INET, "192.0.2.1", &client.sin_addr);
	inet_pton(AF_INET, "198.51.100.2", &local.sin_addr);
	smtp_set_identity(&h->t, (struct sockaddr *)&client,
	    (struct sockaddr *)&local);
	h_io(h, &io);
	smtp_start(&h->t, &io);
	h_run(h);
}

static void
h_fini(struct harness *h)
{
	buf_fini(&h->cin);
	buf_fini(&h->bin);
	buf_fini(&h->cout);
	buf_fini(&h->bout);
	free(h->client_seen);
	free(h->backend_seen);
}

static void
h_feed(struct harness *h, struct buf *b, const char *p, size_t n)
{
	size_t i;

	if (!h->bytewise) {
		ck_assert_int_eq(buf_append(b, p, n), 0);
		h_run(h);
		return;
	}
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(buf_append(b, p + i, 1), 0);
		h_run(h);
	}
}

static void
h_expect(const char *who, char *seen, size_t *len, const char *want,
    size_t wlen)
{
	if (*len != wlen || memcmp(seen, want, wlen) != 0)
		ck_abort_msg("%s got [%.*s] (%zu bytes), want [%.*s] (%zu bytes)",
		    who, (int)*len, seen, *len, (int)wlen, want, wlen);
	*len = 0;
}


#define EHLO_LOCAL "250-gw.test\r\n250-PIPELINING\r\n" \
	"250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"
#define GREETING "220 gw.test ESMTP\r\n"
#define EXTS "250-b.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n" \
	"250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"

/* A STARTTLS session up to a relayed EHLO inside TLS. */
#define TLS_UP \
	S(C, "EHLO c\r\n"), S(WANT_C, GREETING EHLO_LOCAL), \
	S(C, "STARTTLS\r\n"), S(WANT_C, "220 2.0.0 Ready to start TLS\r\n"), \
	S(FLAGS, "bt"), N(TLS), S(B, "220 b.test ESMTP\r\n"), \
	S(WANT_C, ""), S(C, "EHLO c\r\n"), S(WANT_B, "EHLO c\r\n"), \
	S(B, EXTS), S(WANT_C, EXTS)

#define X100 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define X600 X100 X100 X100 X100 X100 X100

/* An implicit session up to DATA's 354. */
#define IN_DATA \
	N(TLS), S(FLAGS, "b"), S(B, "220 b.test\r\n"), \
	S(WANT_C, "220 b.test\r\n"), S(C, "EHLO c\r\n"), S(B, EXTS), \
	S(C, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"), \
	S(B, "250 ok\r\n250 ok\r\n354 go\r\n"), \
	S(WANT_C, EXTS "250 ok\r\n250 ok\r\n354 go\r\n"), \
	S(WANT_B, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")

static const struct script scripts[] = {
	{ .name = "starttls: the gateway talks alone before TLS",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING), S(FLAGS, ""),
		S(C, "EHLO client.test\r\n"), S(WANT_C, EHLO_LOCAL),
		S(C, "HELO client.test\r\nNOOP\r\nRSET\r\n"),
		S(WANT_C, "250 gw.test\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n"),
		S(C, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
		    "AUTH PLAIN AGFiAGM=\r\nXCLIENT ADDR=1.2.3.4\r\n"),
		S(WANT_C, "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "530 5.7.0 Must issue a STARTTLS command first\r\n"),
		S(C, "EHLO\r\n"), S(WANT_C, "501 5.5.4 Syntax error in "
		    "parameters or arguments\r\n"),
		S(C, "STARTTLS now\r\n"), S(WANT_C, "501 5.5.4 Syntax error "
		    "(no parameters allowed)\r\n"),
		S(C, "QUIT\r\n"), S(WANT_C, "221 2.0.0 gw.test closing "
		    "connection\r\n"),
		S(FLAGS, "c"), S(WANT_B, ""), N(END) } },
	{ .name = "starttls: injected plaintext after STARTTLS is never executed",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING),
		S(C, "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<inj@x>\r\nRSET\r\n"),
		S(WANT_C, EHLO_LOCAL "220 2.0.0 Ready to start TLS\r\n"),
		S(FLAGS, "bt"), S(LOG, "after STARTTLS"),
		N(TLS), S(B, "220 b.test\r\n"), S(WANT_C, ""),
		S(C, "MAIL FROM:<a@x>\r\n"),
		S(WANT_C, "503 5.5.1 Send EHLO/HELO first\r\n"),
		S(C, "EHLO c\r\n"), S(B, EXTS), S(WANT_C, EXTS),
		S(WANT_B, "EHLO c\r\n"), N(END) } },
	{ .name = "starttls: inside TLS the backend's EHLO is relayed, rewritten",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING), S(C, "STARTTLS\r\n"),
		S(WANT_C, "220 2.0.0 Ready to start TLS\r\n"), N(TLS),
		S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"),
		S(B, "250-b.test hi\r\n250-STARTTLS\r\n250-XCLIENT ADDR NAME\r\n"
		    "250-AUTH PLAIN\r\n250-XFORWARD NAME\r\n250 CHUNKING\r\n"),
		S(WANT_C, "250-b.test hi\r\n250-AUTH PLAIN\r\n250 CHUNKING\r\n"),
		S(C, "EHLO c\r\n"),
		S(B, "250-b.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
		S(WANT_C, "250-b.test\r\n250 PIPELINING\r\n"),
		S(C, "STARTTLS\r\n"), S(WANT_C, "503 5.5.1 TLS already active\r\n"),
		S(C, "XCLIENT ADDR=1.2.3.4\r\nXFORWARD NAME=x\r\n"),
		S(WANT_C, "502 5.5.1 Command not implemented\r\n"
		    "502 5.5.1 Command not implemented\r\n"),
		S(WANT_B, "EHLO c\r\nEHLO c\r\n"), N(END) } },
	{ .name = "starttls: client commands wait for the backend's banner",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING), S(C, "STARTTLS\r\n"),
		S(WANT_C, "220 2.0.0 Ready to start TLS\r\n"), N(TLS),
		S(C, "EHLO c\r\n"), S(WANT_B, ""),
		S(B, "220 b.test\r\n"), S(WANT_B, "EHLO c\r\n"), N(END) } },
	{ .name = "starttls: a backend greeting other than 220 ends with 421",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING), S(C, "STARTTLS\r\n"),
		S(WANT_C, "220 2.0.0 Ready to start TLS\r\n"), S(FLAGS, "bt"),
		S(B, "554 go away\r\n"), S(WANT_C, ""), N(TLS),
		S(WANT_C, "421 4.3.0 gw.test Service not available\r\n"),
		S(FLAGS, "c"), N(END) } },
	{ .name = "starttls: a backend failure during the handshake waits for TLS",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING), S(C, "STARTTLS\r\n"),
		S(WANT_C, "220 2.0.0 Ready to start TLS\r\n"), N(ABORT_DOWN),
		S(WANT_C, ""), N(TLS),
		S(WANT_C, "421 4.4.1 gw.test Service not available, backend "
		    "unreachable\r\n"), S(FLAGS, "bc"), N(END) } },
	{ .name = "implicit: banner relayed after the handshake, even 554",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		S(FLAGS, ""), N(TLS), S(FLAGS, "b"), S(C, "EHLO early\r\n"),
		S(WANT_B, ""), S(B, "554 5.3.2 no thanks\r\n"),
		S(WANT_C, "554 5.3.2 no thanks\r\n"), S(WANT_B, "EHLO early\r\n"),
		S(B, "503 5.5.1 bad sequence\r\n"),
		S(WANT_C, "503 5.5.1 bad sequence\r\n"), N(END) } },
	{ .name = "implicit: pipelined replies stay in order, local ones included",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"), S(B, EXTS),
		S(WANT_C, "220 b.test\r\n" EXTS),
		S(C, "MAIL FROM:<a@x>\r\nXCLIENT ADDR=1.2.3.4\r\nRCPT TO:<b@y>\r\n"
		    "FOO bar\r\nRCPT TO:<c@y>\r\n"),
		S(WANT_C, ""),
		S(WANT_B, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
		    "RCPT TO:<c@y>\r\n"),
		S(B, "250 2.1.0 ok\r\n"),
		S(WANT_C, "250 2.1.0 ok\r\n502 5.5.1 Command not implemented\r\n"),
		S(B, "250 2.1.5 ok\r\n550 5.1.1 no\r\n"),
		S(WANT_C, "250 2.1.5 ok\r\n502 5.5.1 Command not implemented\r\n"
		    "550 5.1.1 no\r\n"), N(END) } },
	{ .name = "implicit: EHLO before TLS-reset and STARTTLS refused",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "STARTTLS\r\n"),
		S(WANT_C, "220 b.test\r\n503 5.5.1 TLS already active\r\n"),
		S(C, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
		S(WANT_C, "503 5.5.1 Send EHLO/HELO first\r\n"
		    "503 5.5.1 Send EHLO/HELO first\r\n"
		    "503 5.5.1 Send EHLO/HELO first\r\n"),
		S(WANT_B, ""), N(END) } },
	{ .name = "data: a body is relayed and acknowledged only by the backend",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		IN_DATA,
		S(C, "Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n"),
		S(WANT_B, "Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
		    "QUIT\r\n"),
		S(WANT_C, ""), COUNT(MSGS, 0),
		S(B, "250 2.0.0 queued\r\n"), S(WANT_C, "250 2.0.0 queued\r\n"),
		COUNT(MSGS, 1), S(B, "221 bye\r\n"), S(WANT_C, "221 bye\r\n"),
		S(FLAGS, "c"), N(END) } },
	{ .name = "data: bytes after DATA wait for its reply",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"), S(B, EXTS),
		S(C, "DATA\r\nMAIL FROM:<x@y>\r\n"),
		S(WANT_B, "EHLO c\r\nDATA\r\n"),
		S(B, "503 5.5.1 no MAIL\r\n"),
		S(WANT_B, "MAIL FROM:<x@y>\r\n"), N(END) } },
	{ .name = "data: bare LF and CR are normalized, leading dots doubled",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		IN_DATA,
		S(C, "a\n.\nMAIL FROM:<s@x>\r\nb\r\n.\nc\r.\rd\r\n.\r"
		    "e\r\n\0.\r\n.x\n.\r\n"),
		S(WANT_B, "a\r\n..\r\nMAIL FROM:<s@x>\r\nb\r\n..\r\nc\r\n..\r\n"
		    "d\r\n..\r\ne\r\n\0.\r\n.x\r\n..\r\n"),
		S(C, ".\r\n"), S(WANT_B, ".\r\n"),
		S(LOG, "bare CR or LF in message body, normalized"),
		S(B, "250 ok\r\n"), COUNT(MSGS, 1), N(END) } },
	{ .name = "data: reject mode refuses a body with a bare LF",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 1, .max_line = 0, .steps = {
		IN_DATA, S(C, "good\r\nbad\nline\r\n.\r\n"),
		S(WANT_B, "good\r\nbad"),
		S(WANT_C, "554 5.6.0 Message contains bare CR or LF; rejected\r\n"
		    "421 4.3.0 gw.test closing connection\r\n"),
		S(FLAGS, "c"), COUNT(MSGS, 0), N(END) } },
	{ .name = "data: a client that closes mid-body abandons the message",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		IN_DATA, S(C, "partial\r\n"), N(C_EOF), S(FLAGS, "c"),
		S(WANT_B, "partial\r\n"), S(WANT_C, ""), N(END) } },
	{ .name = "bdat: chunks are carried byte for byte, never parsed",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"), S(B, EXTS),
		S(C, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
		    "BDAT 23\r\nx\r\n.\r\nMAIL FROM:<s@x>\r\n"
		    "BDAT 0 LAST\r\n"),
		S(WANT_B, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"
		    "BDAT 23\r\nx\r\n.\r\nMAIL FROM:<s@x>\r\nBDAT 0 LAST\r\n"),
		S(B, "250 ok\r\n250 ok\r\n250 23 octets\r\n250 queued\r\n"),
		COUNT(MSGS, 1), S(C, "BDAT 1x\r\n"),
		S(WANT_C, "220 b.test\r\n" EXTS "250 ok\r\n250 ok\r\n250 23 octets\r\n"
		    "250 queued\r\n501 5.5.4 Syntax error in parameters or "
		    "arguments\r\n"), N(END) } },
	{ .name = "bdat: without CHUNKING at the backend the chunk is dropped",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"),
		S(B, "250 b.test\r\n"),
		S(C, "BDAT 15 LAST\r\nMAIL FROM:<x>\r\nNOOP\r\n\r\n"),
		S(WANT_B, "EHLO c\r\nNOOP\r\n"),
		S(WANT_C, "220 b.test\r\n250 b.test\r\n"
		    "502 5.5.1 Command not implemented\r\n"),
		S(B, "250 ok\r\n"), S(WANT_C, "250 ok\r\n"
		    "500 5.5.2 Syntax error, command unrecognized\r\n"),
		N(END) } },
	{ .name = "lines: over-long, bare CR, NUL and bare LF",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 512, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(WANT_C, "220 b.test\r\n"),
		S(C, "NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxx\r\n"),
		S(WANT_C, "500 5.5.2 Line too long\r\n"),
		S(C, "NOOP a\rb\r\nNOOP \0\r\nNOOP\nXCLIENT ADDR=1.2.3.4\r\n"),
		S(WANT_B, "NOOP\r\n"),
		S(WANT_C, "500 5.5.2 Syntax error, command unrecognized\r\n"
		    "500 5.5.2 Syntax error, command unrecognized\r\n"),
		S(B, "250 ok\r\n"),
		S(WANT_C, "250 ok\r\n502 5.5.1 Command not implemented\r\n"),
		N(END) } },
	{ .name = "lines: an over-long line arriving in parts gets one 500",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 512, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(WANT_C, "220 b.test\r\n"),
		S(C, "NOOP " X600), S(C, X600), S(C, X600 "\r\nNOOP\r\n"),
		S(WANT_C, "500 5.5.2 Line too long\r\n"), S(WANT_B, "NOOP\r\n"),
		S(B, "250 ok\r\n"), S(WANT_C, "250 ok\r\n"),
		S(C, "NOOP " X600 "\r\nNOOP\r\n"),
		S(WANT_C, "500 5.5.2 Line too long\r\n"),
		S(WANT_B, "NOOP\r\n"), N(END) } },
	{ .name = "auth: answers to 334 pass while AUTH's slot is open",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"), S(B, EXTS),
		S(WANT_C, "220 b.test\r\n" EXTS), S(C, "AUTH LOGIN\r\n"),
		S(B, "334 VXNlcm5hbWU6\r\n"), S(C, "dXNlcg==\r\n"),
		S(B, "334 UGFzc3dvcmQ6\r\n"), S(C, "cGFzcw==\r\nNOOP\r\n"),
		S(WANT_B, "EHLO c\r\nAUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n"),
		S(B, "235 2.7.0 ok\r\n"), S(WANT_B, "NOOP\r\n"),
		S(WANT_C, "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
		    "235 2.7.0 ok\r\n"), N(END) } },
	{ .name = "ehlo: an RFC 821 backend gets HELO, the client a short EHLO reply",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 old.test\r\n"), S(C, "EHLO c.test\r\n"),
		S(B, "500 what?\r\n"), S(WANT_B, "EHLO c.test\r\nHELO c.test\r\n"),
		S(B, "250 old.test\r\n"),
		S(WANT_C, "220 old.test\r\n250 gw.test\r\n"),
		S(C, "EHLO again\r\n"), S(WANT_B, "HELO again\r\n"),
		S(B, "250 old.test\r\n"), S(WANT_C, "250 gw.test\r\n"), N(END) } },
	{ .name = "opportunistic: relayed plaintext, STARTTLS added, AUTH hidden",
	  .mode = SMTP_MODE_OPPORTUNISTIC, .bare_reject = 0, .max_line = 0, .steps = {
		S(FLAGS, "b"), S(B, "220 b.test\r\n"), S(WANT_C, "220 b.test\r\n"),
		S(C, "EHLO c\r\n"),
		S(B, "250-b.test\r\n250-AUTH PLAIN\r\n250-AUTH=PLAIN\r\n"
		    "250-STARTTLS\r\n250 SIZE 100\r\n"),
		S(WANT_C, "250-b.test\r\n250-SIZE 100\r\n250 STARTTLS\r\n"),
		S(C, "AUTH PLAIN AGFiAGM=\r\n"),
		S(WANT_C, "538 5.7.11 Encryption required for requested "
		    "authentication mechanism\r\n"),
		S(C, "NOOP\r\nSTARTTLS\r\n"), S(WANT_C, ""), S(FLAGS, ""),
		S(B, "250 ok\r\n"),
		S(WANT_C, "250 ok\r\n220 2.0.0 Ready to start TLS\r\n"),
		S(FLAGS, "t"), N(TLS), S(C, "MAIL FROM:<a@x>\r\n"),
		S(WANT_C, "503 5.5.1 Send EHLO/HELO first\r\n"),
		S(C, "EHLO c\r\n"), S(B, "250-b.test\r\n250 AUTH PLAIN\r\n"),
		S(WANT_C, "250-b.test\r\n250 AUTH PLAIN\r\n"),
		S(WANT_B, "EHLO c\r\nNOOP\r\nEHLO c\r\n"), N(END) } },
	{ .name = "auth: a 334 makes the next line data, whatever it says",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"), S(B, EXTS),
		S(C, "AUTH LOGIN\r\nQUIT\r\n"), S(B, "334 VXNlcm5hbWU6\r\n"),
		S(B, "535 5.7.8 no\r\n"),
		S(WANT_B, "EHLO c\r\nAUTH LOGIN\r\nQUIT\r\n"),
		S(WANT_C, "220 b.test\r\n" EXTS "334 VXNlcm5hbWU6\r\n"
		    "535 5.7.8 no\r\n"), S(FLAGS, "b"), N(END) } },
	{ .name = "backend: closing, garbage and unsolicited replies end with 421",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "NOOP\r\n"),
		S(B, "hello there\r\n"),
		S(WANT_C, "220 b.test\r\n421 4.5.0 gw.test Service not available, "
		    "backend protocol error\r\n"), S(FLAGS, "bc"), N(END) } },
	{ .name = "backend: an unsolicited reply is a protocol error",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n250 surprise\r\n"),
		S(WANT_C, "220 b.test\r\n421 4.5.0 gw.test Service not available, "
		    "backend protocol error\r\n"), S(FLAGS, "bc"), N(END) } },
	{ .name = "backend: an unsolicited 421 is relayed",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n421 4.4.2 idle\r\n"),
		S(WANT_C, "220 b.test\r\n421 4.4.2 idle\r\n"), S(FLAGS, "bc"),
		N(END) } },
	{ .name = "backend: a close mid-session gives the client 421",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "NOOP\r\n"), N(B_EOF),
		S(WANT_C, "220 b.test\r\n421 4.4.2 gw.test Service not available, "
		    "backend closed the connection\r\n"), S(FLAGS, "bc"),
		N(END) } },
	{ .name = "client: a half-close after QUIT still gets the 221",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "QUIT\r\n"), N(C_EOF),
		S(FLAGS, "b"), S(B, "221 bye\r\n"),
		S(WANT_C, "220 b.test\r\n221 bye\r\n"), S(FLAGS, "c"), N(END) } },
	{ .name = "timeout: 421 4.4.2 and close",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), N(ABORT_TO),
		S(WANT_C, "220 b.test\r\n421 4.4.2 gw.test Error: timeout "
		    "exceeded\r\n"), S(FLAGS, "bc"), N(END) } },
	{ .name = "errors: max_errors 5xx replies in a row end the session",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING), S(C, "MAIL\r\nFOO\r\nNOOP\r\nMAIL\r\n"
		    "RCPT\r\n"),
		S(WANT_C, "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "250 2.0.0 OK\r\n"
		    "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "530 5.7.0 Must issue a STARTTLS command first\r\n"),
		S(FLAGS, ""), S(C, "DATA\r\nQUIT\r\n"),
		S(WANT_C, "530 5.7.0 Must issue a STARTTLS command first\r\n"
		    "421 4.7.0 gw.test Too many errors, closing connection\r\n"),
		S(FLAGS, "c"), N(END) }, .max_errors = 3 },
	{ .name = "errors: relayed 5xx replies count too",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"),
		S(B, "250 b.test\r\n"), S(C, "RCPT\r\nRCPT\r\n"),
		S(B, "503 5.5.1 no\r\n503 5.5.1 no\r\n"),
		S(WANT_C, "220 b.test\r\n250 b.test\r\n503 5.5.1 no\r\n"
		    "503 5.5.1 no\r\n"
		    "421 4.7.0 gw.test Too many errors, closing connection\r\n"),
		S(FLAGS, "bc"), N(END) }, .max_errors = 2 },
	{ .name = "xclient: the client is introduced before any of its commands",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(C, "EHLO c\r\n"), S(B, "220 b.test\r\n"),
		S(WANT_B, "EHLO gw.test\r\n"), S(WANT_C, ""),
		S(B, "250-b.test\r\n250-XCLIENT NAME ADDR PORT PROTO HELO "
		    "DESTADDR DESTPORT\r\n250 PIPELINING\r\n"),
		S(WANT_B, "XCLIENT ADDR=192.0.2.1 PORT=4567 PROTO=ESMTP "
		    "DESTADDR=198.51.100.2 DESTPORT=465\r\n"),
		S(B, "220 b.test again\r\n"),
		S(WANT_C, "220 b.test again\r\n"), S(WANT_B, "EHLO c\r\n"),
		S(B, "250-b.test\r\n250 XCLIENT ADDR\r\n"),
		S(WANT_C, "250 b.test\r\n"), N(END) }, .xclient = 1 },
	{ .name = "xclient: a backend without XCLIENT gets nothing of the client's",
	  .mode = SMTP_MODE_STARTTLS, .bare_reject = 0, .max_line = 0, .steps = {
		S(WANT_C, GREETING), S(C, "STARTTLS\r\n"),
		S(WANT_C, "220 2.0.0 Ready to start TLS\r\n"), S(FLAGS, "bt"),
		S(B, "220 b.test\r\n"), S(WANT_B, ""), N(TLS),
		S(WANT_B, "EHLO gw.test\r\n"),
		S(C, "EHLO c\r\nMAIL FROM:<a@x>\r\n"),
		S(B, "250-b.test\r\n250 PIPELINING\r\n"),
		S(WANT_C, "421 4.3.0 gw.test Service not available\r\n"),
		S(LOG, "does not offer XCLIENT"), S(WANT_B, ""), S(FLAGS, "c"),
		N(END) }, .xclient = 1 },
	{ .name = "xclient: a refused XCLIENT ends the session with 421",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"),
		S(B, "250-b.test\r\n250 XCLIENT ADDR PORT\r\n"),
		S(WANT_B, "EHLO gw.test\r\nXCLIENT ADDR=192.0.2.1 "
		    "PORT=4567\r\n"),
		S(B, "550 5.7.0 not authorized\r\n"),
		S(WANT_C, "421 4.3.0 gw.test Service not available\r\n"),
		S(LOG, "refused XCLIENT with 550"), S(WANT_B, ""),
		S(FLAGS, "bc"), N(END) }, .xclient = 1 },
	{ .name = "egress: STARTTLS, EHLO anew, AUTH PLAIN, then the app",
	  .mode = SMTP_MODE_EGRESS, .auth = 1, .steps = {
		S(FLAGS, "b"), S(C, "EHLO app\r\n"), S(WANT_C, ""),
		S(B, "220 relay.test\r\n"), S(WANT_B, "EHLO out.test\r\n"),
		S(B, "250-relay.test\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n"),
		S(WANT_B, "STARTTLS\r\n"), S(B, "220 go ahead\r\n"),
		S(FLAGS, "u"), N(BTLS), S(WANT_B, "EHLO out.test\r\n"),
		S(B, "250-relay.test\r\n250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n"
		    "250-XCLIENT ADDR\r\n250 SIZE 1000\r\n"),
		S(WANT_B, "AUTH PLAIN AGFwaWtleQBzM2NyZXQ=\r\n"), S(WANT_C, ""),
		S(B, "235 2.7.0 ok\r\n"),
		S(WANT_C, "220 gw.test ESMTP\r\n"), S(WANT_B, "RSET\r\n"),
		S(B, "250 2.0.0 reset\r\n"),
		S(WANT_C, "250-gw.test\r\n250-CHUNKING\r\n250 SIZE 1000\r\n"),
		S(C, "STARTTLS\r\nAUTH PLAIN AHVAAHA=\r\nMAIL FROM:<a@x>\r\n"),
		S(WANT_C, "502 5.5.1 Command not implemented\r\n"
		    "235 2.7.0 Authentication successful\r\n"),
		S(WANT_B, "MAIL FROM:<a@x>\r\n"), N(END) } },
	{ .name = "egress: bytes after the 220 to STARTTLS abort",
	  .mode = SMTP_MODE_EGRESS, .steps = {
		S(FLAGS, "b"), S(B, "220 relay.test\r\n"),
		S(B, "250-relay.test\r\n250 STARTTLS\r\n"),
		S(WANT_B, "EHLO out.test\r\nSTARTTLS\r\n"),
		S(B, "220 go ahead\r\n250-injected\r\n"),
		S(WANT_C, "421 4.7.0 gw.test Service not available, no secure "
		    "connection to the relay\r\n"),
		S(LOG, "sent bytes after its 220 to STARTTLS"), S(FLAGS, "c"),
		N(END) } },
	{ .name = "egress: no STARTTLS offered is no plaintext fallback",
	  .mode = SMTP_MODE_EGRESS, .auth = 2, .steps = {
		S(FLAGS, "b"), S(C, "EHLO app\r\nMAIL FROM:<a@x>\r\n"),
		S(B, "220 relay.test\r\n"),
		S(B, "250-relay.test\r\n250 AUTH LOGIN\r\n"),
		S(WANT_B, "EHLO out.test\r\n"),
		S(WANT_C, "421 4.7.0 gw.test Service not available, no secure "
		    "connection to the relay\r\n"),
		S(LOG, "does not offer STARTTLS"), S(FLAGS, "c"), N(END) } },
	{ .name = "egress: implicit TLS, AUTH LOGIN, app AUTH refused",
	  .mode = SMTP_MODE_EGRESS, .auth = 2, .app_auth = 1, .steps = {
		S(FLAGS, "b"), N(BTLS), S(WANT_B, ""),
		S(B, "220 relay.test\r\n"),
		S(B, "250-relay.test\r\n250 AUTH LOGIN\r\n"),
		S(WANT_B, "EHLO out.test\r\nAUTH LOGIN\r\n"),
		S(B, "334 VXNlcm5hbWU6\r\n"), S(WANT_B, "YXBpa2V5\r\n"),
		S(B, "334 UGFzc3dvcmQ6\r\n"), S(WANT_B, "czNjcmV0\r\n"),
		S(B, "235 ok\r\n"), S(WANT_C, "220 gw.test ESMTP\r\n"),
		S(C, "AUTH LOGIN\r\n"),
		S(WANT_C, "502 5.5.1 Command not implemented\r\n"), N(END) } },
	{ .name = "egress: a refused AUTH upstream is a 421 to the app",
	  .mode = SMTP_MODE_EGRESS, .auth = 1, .steps = {
		N(BTLS), S(B, "220 relay.test\r\n"),
		S(B, "250-relay.test\r\n250 AUTH PLAIN\r\n"),
		S(B, "535 5.7.8 bad credentials\r\n"),
		S(WANT_C, "421 4.7.0 gw.test Service not available, no secure "
		    "connection to the relay\r\n"),
		S(LOG, "refused AUTH PLAIN with 535"), N(END) } },
	{ .name = "egress: app AUTH offered and ignored",
	  .mode = SMTP_MODE_EGRESS, .app_auth = 2, .steps = {
		N(BTLS), S(B, "220 relay.test\r\n"), S(B, "250 relay.test\r\n"),
		S(WANT_C, "220 gw.test ESMTP\r\n"), S(C, "EHLO app\r\n"),
		S(B, "250 ok\r\n"),
		S(WANT_C, "250-gw.test\r\n250 AUTH PLAIN LOGIN\r\n"),
		S(C, "AUTH LOGIN\r\nu\r\np\r\nAUTH PLAIN\r\nx\r\n"
		    "AUTH CRAM-MD5\r\nAUTH LOGIN\r\n*\r\n"),
		S(WANT_C, "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
		    "235 2.7.0 Authentication successful\r\n334 \r\n"
		    "235 2.7.0 Authentication successful\r\n"
		    "504 5.5.4 Unrecognized authentication type\r\n"
		    "334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication cancelled\r\n"),
		S(WANT_B, "EHLO out.test\r\nRSET\r\n"), N(END) } },
	{ .name = "fuzz: a backend that dies during the STARTTLS handshake",
	  .mode = SMTP_MODE_OPPORTUNISTIC, .steps = {
		S(B, "220 b.test\r\n"), S(C, "STARTTLS\r\n"),
		S(WANT_C, "220 b.test\r\n220 2.0.0 Ready to start TLS\r\n"),
		S(FLAGS, "bt"), S(B, "SSH-2.0-OpenSSH\r\n421 bye\r\n"), N(B_EOF),
		S(WANT_C, ""), S(FLAGS, ""), N(TLS),
		S(WANT_C, "421 4.5.0 gw.test Service not available, backend "
		    "protocol error\r\n"), S(FLAGS, "c"), N(END) } },
	{ .name = "fuzz: a reply nobody asked for behind STARTTLS's turn",
	  .mode = SMTP_MODE_OPPORTUNISTIC, .steps = {
		S(B, "220 b.test\r\n"), S(C, "NOOP\r\nSTARTTLS\r\n"),
		S(B, "250 ok\r\n250 surprise\r\n"),
		S(WANT_C, "220 b.test\r\n250 ok\r\n"
		    "220 2.0.0 Ready to start TLS\r\n"), S(FLAGS, "bt"), N(TLS),
		S(WANT_C, "421 4.5.0 gw.test Service not available, backend "
		    "protocol error\r\n"), S(FLAGS, "c"), N(END) } },
	{ .name = "fuzz: an AUTH that ends at once leaves no AUTH phase",
	  .mode = SMTP_MODE_IMPLICIT, .steps = {
		N(TLS), S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"), S(B, EXTS),
		S(C, "AUTH LOGIN\r\n"), S(B, "334 VXNlcm5hbWU6\r\n535 no\r\n"),
		S(C, "XCLIENT ADDR=1.2.3.4\r\n"),
		S(WANT_B, "EHLO c\r\nAUTH LOGIN\r\n"),
		S(WANT_C, "220 b.test\r\n" EXTS "334 VXNlcm5hbWU6\r\n535 no\r\n"
		    "502 5.5.1 Command not implemented\r\n"), N(END) } },
	{ .name = "fuzz: STARTTLS added with the EHLO reply's own code",
	  .mode = SMTP_MODE_OPPORTUNISTIC, .steps = {
		S(B, "220 b.test\r\n"), S(C, "EHLO c\r\n"),
		S(B, "251-b.test\r\n251 SIZE 10\r\n"),
		S(WANT_C, "220 b.test\r\n251-b.test\r\n251-SIZE 10\r\n"
		    "251 STARTTLS\r\n"), N(END) } },
	{ .name = "fuzz: nothing reaches the backend after a rejected body",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 1, .steps = {
		IN_DATA, S(C, "bad\nline\r\n.\r\nBDAT 9 LAST\r\n\r\n.\r\n"
		    "QUIT\r\n"),
		S(WANT_B, "bad"), S(FLAGS, "c"), N(END) } },
	{ .name = "implicit: no plaintext 421 before the handshake",
	  .mode = SMTP_MODE_IMPLICIT, .bare_reject = 0, .max_line = 0, .steps = {
		N(ABORT_TO), S(WANT_C, ""), S(FLAGS, "c"), N(END) } },
};

#define NSCRIPTS	(sizeof(scripts) / sizeof(scripts[0]))

static void
check_flags(struct harness *h, const char *want)
{
	char got[8];
	int n = 0;

	if (h->t.want_backend)
		got[n++] = 'b';
	if (h->t.want_tls)
		got[n++] = 't';
	if (h->t.want_close)
		got[n++] = 'c';
	if (h->t.want_backend_tls)
		got[n++] = 'u';
	got[n] = '\0';
	ck_assert_str_eq(got, want);
	/* The session acts on these and clears them; so does the harness. */
	h->t.want_backend = h->t.want_tls = h->t.want_backend_tls = 0;
}

START_TEST(test_script)
{
	const struct script *sc = &scripts[_i / 2];
	const struct step *st;
	struct harness h;
	struct smtp_io io;

	h_init(&h, sc, _i % 2);
	for (st = sc->steps; st->op != END; st++) {
		switch (st->op) {
		case C:
			h_feed(&h, &h.cin, st->s, st->len);
			break;
		case B:
			h_feed(&h, &h.bin, st->s, st->len);
			break;
		case WANT_C:
			h_expect(sc->name, h.client_seen, &h.client_len, st->s,
			    st->len);
			break;
		case WANT_B:
			h_expect(sc->name, h.backend_seen, &h.backend_len,
			    st->s, st->len);
			break;
		case TLS:
			h_io(&h, &io);
			smtp_tls_done(&h.t, &io);
			h_run(&h);
			break;
		case BTLS:
			h_io(&h, &io);
			smtp_backend_tls_done(&h.t, &io);
			h_run(&h);
			break;
		case C_EOF:
			h.client_eof = 1;
			h_run(&h);
			break;
		case B_EOF:
			h.backend_eof = 1;
			h_run(&h);
			break;
		case FLAGS:
			check_flags(&h, st->s);
			break;
		case ABORT_TO:
		case ABORT_DOWN:
			h_io(&h, &io);
			smtp_abort(&h.t, &io, st->op == ABORT_TO ? ABORT_TIMEOUT :
			    ABORT_BACKEND_DOWN);
			h_run(&h);
			break;
		case MSGS:
			ck_assert_uint_eq(h.t.messages, st->len);
			break;
		case LOG:
			if (strstr(h.log, st->s) == NULL)
				ck_abort_msg("%s: log lacks [%s]: [%s]", sc->name,
				    st->s, h.log);
			break;
		case END:
			break;
		}
	}
	h_fini(&h);
}
END_TEST

/*
 * Property: for random bodies, the backend's reading of what the gateway
 * sent, even by a lenient parser that takes CR, LF or CRLF as a line end,
 * ends exactly where the gateway ended the body, and holds only CRLF lines.
 */
static size_t
lenient_end(const char *p, size_t n)
{
	size_t i = 0, start;

	while (i < n) {
		start = i;
		while (i < n && p[i] != '\r' && p[i] != '\n')
			i++;
		if (i == n)
			return (0);
		if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
			i++;
		i++;
		if (i - start >= 2 && p[start] == '.' &&
		    (p[start + 1] == '\r' || p[start + 1] == '\n'))
			return (i);
	}
	return (0);
}

/* Where the strict reading (RFC 5321: only CRLF "." CRLF) of the input
 * ends the body, or 0. */
static size_t
strict_end(const char *p, size_t n)
{
	size_t i;

	if (n >= 3 && memcmp(p, ".\r\n", 3) == 0)
		return (3);
	for (i = 0; i + 5 <= n; i++)
		if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
			return (i + 5);
	return (0);
}

START_TEST(test_body_property)
{
	static const char alphabet[] = "a.\r\n";
	char in[64];
	struct harness h;
	unsigned seed = 12345u + (unsigned)_i * 7919u;
	size_t n, i, want_in, end, k;
	const char *out;
	int round;

	for (round = 0; round < 500; round++) {
		static const struct script implicit = { .mode =
		    SMTP_MODE_IMPLICIT };

		h_init(&h, &implicit, round % 2);
		{
			struct smtp_io io;

			h_io(&h, &io);
			smtp_tls_done(&h.t, &io);
		}
		h_feed(&h, &h.bin, "220 b\r\n", 7);
		h_feed(&h, &h.cin, "EHLO c\r\n", 8);
		h_feed(&h, &h.bin, "250 b\r\n", 7);
		h_feed(&h, &h.cin, "DATA\r\n", 6);
		h_feed(&h, &h.bin, "354 go\r\n", 8);
		h.backend_len = 0;
		n = 1 + (size_t)(rand_r(&seed) % (sizeof(in) - 6));
		for (i = 0; i < n; i++)
			in[i] = alphabet[rand_r(&seed) % 4];
		memcpy(in + n, "\r\n.\r\n", 5);
		n += 5;
		want_in = strict_end(in, n);
		ck_assert_uint_ne(want_in, 0);
		h_feed(&h, &h.cin, in, want_in);
		/* The gateway ended the body exactly at the strict end. */
		ck_assert_int_eq(h.t.phase, PHASE_COMMAND);
		out = h.backend_seen;
		end = lenient_end(out, h.backend_len);
		if (end != h.backend_len)
			ck_abort_msg("input [%.*s]: lenient end %zu, sent %zu [%.*s]",
			    (int)want_in, in, end, h.backend_len,
			    (int)h.backend_len, out);
		for (k = 0; k < h.backend_len; k++) {
			if (out[k] == '\n')
				ck_assert(k > 0 && out[k - 1] == '\r');
			if (out[k] == '\r')
				ck_assert(k + 1 < h.backend_len && out[k + 1] == '\n');
		}
		h_fini(&h);
	}
}
END_TEST

/* Parsers, directly. */
static const struct {
	const char	*in;
	int		 ret;
	size_t		 len;
	int		 code;
} replies[] = {
	{ "250 ok\r\n", 1, 8, 250 },
	{ "250\r\n", 1, 5, 250 },
	{ "250-a\r\n250-b\r\n250 c\r\n", 1, 21, 250 },
	{ "250-a\r\n250 c\r\n354 x\r\n", 1, 14, 250 },
	{ "250-a\r\n", 0, 0, 0 },
	{ "250 ok", 0, 0, 0 },
	{ "250 ok\n", 1, 7, 250 },
	{ "250-a\r\n251 b\r\n", -1, 0, 0 },
	{ "25 ok\r\n", -1, 0, 0 },
	{ "abc ok\r\n", -1, 0, 0 },
	{ "250xok\r\n", -1, 0, 0 },
	{ "150 ok\r\n", -1, 0, 0 },
	{ "650 ok\r\n", -1, 0, 0 },
	{ "250 o\rk\r\n", -1, 0, 0 },
};

START_TEST(test_reply_parse)
{
	size_t len = 0, n = strlen(replies[_i].in);
	int code = 0, r;

	r = smtp_reply(replies[_i].in, n, &len, &code);
	ck_assert_int_eq(r, replies[_i].ret);
	if (r == 1) {
		ck_assert_uint_eq(len, replies[_i].len);
		ck_assert_int_eq(code, replies[_i].code);
	}
}
END_TEST

START_TEST(test_reply_too_long)
{
	char *p = malloc(SMTP_REPLY_MAX + 100);
	size_t len, off = 0;
	int code;

	ck_assert_ptr_nonnull(p);
	while (off + 8 <= SMTP_REPLY_MAX + 90) {
		memcpy(p + off, "250-xx\r\n", 8);
		off += 8;
	}
	ck_assert_int_eq(smtp_reply(p, off, &len, &code), -1);
	memset(p, 'x', SMTP_REPLY_LINE + 10);
	memcpy(p, "250 ", 4);
	ck_assert_int_eq(smtp_reply(p, SMTP_REPLY_LINE + 10, &len, &code), -1);
	free(p);
}
END_TEST

START_TEST(test_line_parse)
{
	size_t len, used;

	ck_assert_int_eq(smtp_line("NOOP\r\nX", 7, 512, &len, &used), 1);
	ck_assert_uint_eq(len, 4);
	ck_assert_uint_eq(used, 6);
	ck_assert_int_eq(smtp_line("NOOP\nX", 6, 512, &len, &used), 1);
	ck_assert_uint_eq(len, 4);
	ck_assert_uint_eq(used, 5);
	ck_assert_int_eq(smtp_line("NOOP", 4, 512, &len, &used), 0);
	ck_assert_int_eq(smtp_line("NOOP", 4, 4, &len, &used), -1);
	ck_assert_int_eq(smtp_line("NOO\n", 4, 4, &len, &used), 1);
}
END_TEST

Suite *
smtp_suite(void)
{
	Suite *s = suite_create("smtp");
	TCase *tc = tcase_create("tracker");

	/* The property test's 2,000 sessions take seconds under sanitizers. */
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_script, 0, (int)NSCRIPTS * 2);
	tcase_add_loop_test(tc, test_body_property, 0, 4);
	suite_add_tcase(s, tc);
	tc = tcase_create("parsers");
	tcase_add_loop_test(tc, test_reply_parse, 0,
	    (int)(sizeof(replies) / sizeof(replies[0])));
	tcase_add_test(tc, test_reply_too_long);
	tcase_add_test(tc, test_line_parse);
	suite_add_tcase(s, tc);
	return (s);
}
