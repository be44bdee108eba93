/*
 * fuzz_smtp_tracker: the SMTP tracker driven from both sides at once, by a
 * script the fuzzer writes, under the session's rules for what can happen
 * when (proxy/session.c). Every byte the tracker writes is checked as it is
 * written (buf_append and buf_move are wrapped at link time: -Wl,--wrap),
 * and the tracker's state after every step.
 *
 * Input: one byte of configuration, then operations, each an op byte and
 * its operands:
 *
 *	byte 0	mode = (b & 3) % 3 (implicit, starttls, opportunistic),
 *		bare_reject = b & 4, max_line = {512, 1000, 4096, 8192}[b >> 3 & 3],
 *		max_errors = {0, 0, 3, 10}[b >> 5 & 3], xclient = b & 0x80
 *		(the client is 192.0.2.1:12345, on 198.51.100.2:465)
 *	op	op byte & 15 picks from optable[]; with bit 0x10 set, a send
 *		is not followed by a step, so that several sends arrive
 *		together as one large read would bring them:
 *		CLIENT len data		the client sends (if the session reads it)
 *		BACKEND len data	the backend sends (once it is connected)
 *		CLIENT_REP len n data	data n + 1 times, as one send
 *		BACKEND_REP len n data
 *		CLIENT_RAW len data	into client_in even when the session would
 *					not read (the tracker must discard it)
 *		TLS			the pending handshake completes
 *		CLIENT_EOF, BACKEND_EOF
 *		ABORT why		smtp_abort(why % ABORT_MAX)
 *		HOLD_CLIENT, HOLD_BACKEND	a peer stops (or resumes) reading:
 *					its output buffer is not drained
 *
 * The invariants, by the name SMTPGATE_FUZZ_IGNORE takes:
 *
 *	capacity	no buffer holds more than its capacity
 *	lost-output	the tracker never writes more than fits (its writes
 *			are unchecked, so a failed one is bytes silently lost);
 *			smtp_abort() called by the session is exempt
 *	fifo		at most SMTP_FIFO slots; the phase is a phase
 *	backend-once	want_backend is raised at most once
 *	tls-once	want_tls is never raised once TLS is on, nor on implicit
 *	tls-input	when want_tls is raised and when the handshake completes,
 *			no plaintext client byte is left in client_in
 *			(endpoint_start_tls() refuses otherwise; CVE-2011-0411)
 *	starttls-backend  on a starttls listener nothing reaches the backend
 *			before the client's handshake completed (DESIGN.md rule
 *			2) but the gateway's own EHLO and XCLIENT (xclient)
 *	implicit-plaintext  on an implicit listener nothing is written to the
 *			client before its handshake completed
 *	starttls-quiet	after "220 Ready to start TLS" nothing is written to
 *			the client until the handshake completed (the client is
 *			sending a ClientHello; smtp_abort() holds its 421 for this)
 *	reply-*		the client's stream is replies: lines ending in CRLF,
 *			no NUL, each "[2-5]DD", "[2-5]DD-..." or "[2-5]DD ...",
 *			the lines of one reply sharing their code
 *	backend-*	what the backend reads, as a backend reads it: command
 *			lines end in CRLF, hold no CR, LF or NUL, are not empty,
 *			fit max_line + 1 (a bare LF became CRLF), and never are
 *			XCLIENT or XFORWARD (DESIGN.md rule 5) but for the
 *			gateway's own one XCLIENT with the client's address
 *			(xclient); nothing before the backend's first reply
 *	smuggling	while the backend reads a DATA body (from its 354 to the
 *			CRLF.CRLF it was sent) it gets no command; body bytes
 *			have no bare CR or LF (DESIGN.md rule 6)
 *	data-without-354, auth-without-334, bdat-length
 *			body bytes go only to a backend whose last reply was 354
 *			and that was sent nothing since; an AUTH answer line
 *			likewise after 334; a BDAT chunk is exactly the size its
 *			forwarded BDAT command announced
 *	livelock	smtp_run() keeps returning 1 with nothing changed:
 *			session_step() would loop forever
 *	endless-loop	one smtp_run() logs over LOG_LOOP times: it loops
 *			inside (one that does not log shows as a timeout)
 *
 * Ignoring livelock or endless-loop abandons the input where it would hang,
 * so that the fuzzer goes on past a known hang.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../config/config.h"
#include "../../proxy/smtp.h"
#include "fuzz.h"

/* SESSION_BUF in session.c; the session's bulk direction has larger
 * buffers, and smaller ones only mean more backpressure here. */
#define CAP		(16 * 1024 + 512)
#define REPLIES		4608		/* > CAP / 4: the shortest reply is "250\n" */
#define LINE_MAX_	(CONFIG_MAX_LINE_MAX + 16)
#define HOSTNAME	"gw.test"
#define LOG_LOOP	5000		/* log lines in one smtp_run(): a loop */
#define XCLIENT_LINE	"XCLIENT ADDR=192.0.2.1 PORT=12345"

int	__real_buf_append(struct buf *, const void *, size_t);
int	__wrap_buf_append(struct buf *, const void *, size_t);
int	__real_buf_move(struct buf *, struct buf *, size_t);
int	__wrap_buf_move(struct buf *, struct buf *, size_t);

enum op {
	OP_CLIENT, OP_BACKEND, OP_CLIENT_REP, OP_BACKEND_REP, OP_CLIENT_RAW,
	OP_TLS, OP_CLIENT_EOF, OP_BACKEND_EOF, OP_ABORT, OP_HOLD_CLIENT,
	OP_HOLD_BACKEND
};

static const enum op optable[16] = {
	OP_CLIENT, OP_CLIENT, OP_CLIENT, OP_CLIENT,		/* 0-3 */
	OP_BACKEND, OP_BACKEND, OP_BACKEND,			/* 4-6 */
	OP_CLIENT_REP, OP_BACKEND_REP, OP_TLS, OP_CLIENT_RAW,	/* 7-10 */
	OP_CLIENT_EOF, OP_BACKEND_EOF, OP_ABORT,		/* 11-13 */
	OP_HOLD_CLIENT, OP_HOLD_BACKEND,			/* 14-15 */
};

/* How the backend reads what it is sent. */
enum bstate {
	B_CMD,			/* command lines (or a BDAT chunk: bdat_left) */
	B_BODY,			/* a DATA body, until CRLF.CRLF */
	B_AUTH_LINE		/* an answer to 334, until its LF */
};

static struct harness {
	struct smtp_conf conf;
	struct smtp	 t;
	struct buf	 cin, bin, cout, bout;
	int		 client_eof, backend_eof;

	int		 active;	/* the wrapper checks appends */
	int		 in_tracker;	/* a failed append is lost output */
	int		 backend_up;	/* want_backend was acted on */
	int		 tls_pending;	/* a handshake is under way */
	int		 tls_done;	/* smtp_tls_done() was called */
	int		 hold_client, hold_backend;
	int		 done;		/* the session would be closed */
	int		 logs;		/* log lines in this smtp_run() */
	int		 in_run;
	jmp_buf		 run_jb;	/* out of an endless smtp_run() */

	/* The backend's stream, parsed into replies as smtp_reply() does; a
	 * reply takes effect once the tracker consumed it from bin. */
	struct buf	 mirror;
	unsigned long long fed, parsed;
	int		 mirror_bad;
	struct {
		unsigned long long end;
		int		 code;
	}		 rq[REPLIES];
	unsigned	 rq_head, rq_count;
	int		 nreplies;	/* consumed by the tracker */
	int		 last_code;	/* of the last one consumed */
	int		 sent_since;	/* bytes went to the backend since */
	int		 xclients;	/* the gateway's XCLIENT lines */

	/* What the backend reads. */
	enum bstate	 bs;
	unsigned long long bdat_left;
	char		 line[LINE_MAX_];
	size_t		 linelen;
	int		 cr;
	char		 tail[5];	/* the body's last bytes */

	/* What the client reads. */
	char		 rhead[4];
	size_t		 rlinelen;
	int		 rcr;
	int		 in_multi;
	char		 multi_code[3];
} H;

static void
harness_log(void *arg, enum smtp_log_level lvl, const char *msg)
{
	(void)arg;
	(void)lvl;
	/* The message must be a string. */
	(void)strlen(msg);
	if (H.in_run && ++H.logs == LOG_LOOP) {
		FUZZ_CHECK("endless-loop", 0, "smtp_run() loops, logging "
		    "\"%s\" (phase %s, %u slots, %zu backend bytes)", msg,
		    smtp_phase_names[H.t.phase], (unsigned)H.t.count,
		    buf_len(&H.bin));
		longjmp(H.run_jb, 1);
	}
}

static void
mkio(struct smtp_io *io)
{
	io->client_in = &H.cin;
	io->backend_in = &H.bin;
	io->to_client = &H.cout;
	io->to_backend = &H.bout;
	io->client_eof = H.client_eof;
	io->backend_eof = H.backend_eof;
}

/* The backend side: replies the tracker has consumed take effect. */

static void
mirror_parse(void)
{
	size_t len;
	int code, r;

	while (!H.mirror_bad && buf_len(&H.mirror) > 0) {
		r = smtp_reply(buf_head(&H.mirror), buf_len(&H.mirror), &len,
		    &code);
		if (r == 0)
			break;
		if (r == -1) {
			/* The tracker aborts when it gets here. */
			H.mirror_bad = 1;
			break;
		}
		if (H.rq_count == REPLIES)
			fuzz_fail("harness", "reply queue full");
		H.parsed += len;
		H.rq[(H.rq_head + H.rq_count) % REPLIES].end = H.parsed;
		H.rq[(H.rq_head + H.rq_count) % REPLIES].code = code;
		H.rq_count++;
		buf_consume(&H.mirror, len);
	}
}

static void
apply_replies(void)
{
	unsigned long long consumed = H.fed - buf_len(&H.bin);

	while (H.rq_count > 0 && H.rq[H.rq_head].end <= consumed) {
		H.last_code = H.rq[H.rq_head].code;
		H.nreplies++;
		H.sent_since = 0;
		H.rq_head = (H.rq_head + 1) % REPLIES;
		H.rq_count--;
	}
}

/* Parse "BDAT size [LAST]" as RFC 3030 section 3 reads it; -1 if not. */
static int
bdat_size(const char *p, size_t n, unsigned long long *size_r)
{
	unsigned long long v = 0;
	size_t i = 5;

	if (n < 6 || strncasecmp(p, "BDAT ", 5) != 0)
		return (-1);
	for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
		if (v > (~0ULL - 9) / 10)
			return (-1);
		v = v * 10 + (unsigned long long)(p[i] - '0');
	}
	if (i == 5 || !(i == n || (n - i == 5 &&
	    strncasecmp(p + i, " LAST", 5) == 0)))
		return (-1);
	*size_r = v;
	return (0);
}

/* A command line the backend read in full (without its CRLF). */
static void
backend_command(const char *p, size_t n)
{
	size_t verb = 0;

	int own_xclient = H.conf.xclient && n >= sizeof(XCLIENT_LINE) - 1 &&
	    memcmp(p, XCLIENT_LINE, sizeof(XCLIENT_LINE) - 1) == 0 &&
	    (n == sizeof(XCLIENT_LINE) - 1 ||
	    p[sizeof(XCLIENT_LINE) - 1] == ' ');

	FUZZ_CHECK("backend-empty-line", n > 0, "an empty command line");
	while (verb < n && p[verb] != ' ')
		verb++;
	if (own_xclient)
		FUZZ_CHECK("backend-xclient", ++H.xclients == 1, "the gateway's "
		    "XCLIENT sent %d times", H.xclients);
	else
		FUZZ_CHECK("backend-xclient", !((verb == 7 &&
		    strncasecmp(p, "XCLIENT", 7) == 0) || (verb == 8 &&
		    strncasecmp(p, "XFORWARD", 8) == 0)),
		    "the backend got the command [%.*s]",
		    (int)(n > 80 ? 80 : n), p);
	/* Before the client's handshake on a starttls listener, only the
	 * gateway speaks to the backend. */
	if (H.conf.mode == SMTP_MODE_STARTTLS && !H.tls_done)
		FUZZ_CHECK("starttls-backend", own_xclient || (n ==
		    sizeof("EHLO " HOSTNAME) - 1 && memcmp(p, "EHLO " HOSTNAME,
		    n) == 0), "the backend got [%.*s] before the client's "
		    "handshake", (int)(n > 80 ? 80 : n), p);
	if (verb == 4 && strncasecmp(p, "BDAT", 4) == 0)
		bdat_size(p, n, &H.bdat_left);
}

static void
backend_cmd_bytes(const char *p, size_t n)
{
	size_t i, max = H.conf.max_line + 1 > 5 + 255 + 2 ?
	    H.conf.max_line + 1 : 5 + 255 + 2;

	FUZZ_CHECK("smuggling", H.bs != B_BODY, "the backend got command "
	    "bytes [%.*s] inside a DATA body it was never sent the end of",
	    (int)(n > 80 ? 80 : n), p);
	FUZZ_CHECK("bdat-length", H.bdat_left == 0, "the backend got command "
	    "bytes while %llu bytes of a BDAT chunk are due", H.bdat_left);
	FUZZ_CHECK("backend-auth", H.bs != B_AUTH_LINE, "command bytes inside "
	    "an AUTH answer line");
	for (i = 0; i < n; i++) {
		char c = p[i];

		if (H.cr) {
			FUZZ_CHECK("backend-bare-cr", c == '\n',
			    "a bare CR in a command line");
			H.cr = 0;
			backend_command(H.line, H.linelen);
			H.linelen = 0;
			continue;
		}
		FUZZ_CHECK("backend-bare-lf", c != '\n', "a bare LF in a "
		    "command line");
		FUZZ_CHECK("backend-nul", c != '\0', "a NUL in a command line");
		if (c == '\r') {
			H.cr = 1;
			continue;
		}
		FUZZ_CHECK("backend-line-length", H.linelen + 3 <= max,
		    "a command line over %zu bytes", max);
		if (H.linelen < sizeof(H.line))
			H.line[H.linelen++] = c;
	}
}

static void
backend_body_bytes(const char *p, size_t n)
{
	size_t i;

	if (H.bs != B_BODY) {
		FUZZ_CHECK("data-without-354", H.bs == B_CMD &&
		    H.linelen == 0 && !H.cr && H.bdat_left == 0 &&
		    H.last_code == 354 && !H.sent_since, "body bytes [%.*s] "
		    "for a backend whose last reply was %d%s",
		    (int)(n > 80 ? 80 : n), p, H.last_code,
		    H.sent_since ? " and that was sent bytes since" : "");
		H.bs = B_BODY;
		memcpy(H.tail, "...\r\n", 5);
		H.cr = 0;
	}
	for (i = 0; i < n; i++) {
		char c = p[i];

		FUZZ_CHECK("smuggling", H.bs == B_BODY, "body bytes after the "
		    "body's end in one write");
		if (H.cr)
			FUZZ_CHECK("smuggling", c == '\n', "a bare CR in a "
			    "body the backend reads");
		else
			FUZZ_CHECK("smuggling", c != '\n', "a bare LF in a "
			    "body the backend reads");
		H.cr = c == '\r';
		memmove(H.tail, H.tail + 1, 4);
		H.tail[4] = c;
		if (memcmp(H.tail, "\r\n.\r\n", 5) == 0)
			H.bs = B_CMD;
	}
}

static void
backend_auth_bytes(const char *p, size_t n)
{
	size_t i;

	if (H.bs != B_AUTH_LINE) {
		FUZZ_CHECK("auth-without-334", H.bs == B_CMD &&
		    H.linelen == 0 && !H.cr && H.bdat_left == 0 &&
		    H.last_code == 334 && !H.sent_since, "an AUTH answer line "
		    "[%.*s] for a backend whose last reply was %d%s",
		    (int)(n > 80 ? 80 : n), p, H.last_code,
		    H.sent_since ? " and that was sent bytes since" : "");
		H.bs = B_AUTH_LINE;
	}
	for (i = 0; i < n; i++) {
		FUZZ_CHECK("backend-auth", H.bs == B_AUTH_LINE, "bytes after "
		    "an AUTH answer line in one write");
		if (p[i] == '\n')
			H.bs = B_CMD;
	}
}

/* Bytes appended to to_backend, classified by how the tracker reads the
 * client at that moment. */
static void
backend_stream(const char *p, size_t n)
{
	FUZZ_CHECK("starttls-backend", H.conf.xclient ||
	    !(H.conf.mode == SMTP_MODE_STARTTLS && !H.tls_done), "%zu bytes "
	    "[%.*s] for the backend before the client's handshake", n,
	    (int)(n > 80 ? 80 : n), p);
	apply_replies();
	/* A reply the tracker is handling is still in bin: rq's head. */
	FUZZ_CHECK("backend-before-banner", H.nreplies + H.rq_count > 0,
	    "bytes for the backend before its banner");
	switch (H.t.phase) {
	case PHASE_DATA:
		backend_body_bytes(p, n);
		break;
	case PHASE_BDAT:
		FUZZ_CHECK("bdat-length", H.bs == B_CMD && H.linelen == 0 &&
		    !H.cr && n <= H.bdat_left, "%zu chunk bytes where %llu "
		    "are due", n, H.bdat_left);
		H.bdat_left -= n <= H.bdat_left ? n : H.bdat_left;
		break;
	case PHASE_AUTH:
		backend_auth_bytes(p, n);
		break;
	default:
		backend_cmd_bytes(p, n);
		break;
	}
	H.sent_since = 1;
}

/* The client side. */

static void
reply_line_end(void)
{
	int ok = H.rlinelen >= 3 && H.rhead[0] >= '2' && H.rhead[0] <= '5' &&
	    H.rhead[1] >= '0' && H.rhead[1] <= '9' &&
	    H.rhead[2] >= '0' && H.rhead[2] <= '9' &&
	    (H.rlinelen == 3 || H.rhead[3] == ' ' || H.rhead[3] == '-');

	FUZZ_CHECK("reply-syntax", ok, "a reply line starting [%.*s]",
	    (int)(H.rlinelen < 4 ? H.rlinelen : 4), H.rhead);
	if (!ok)
		return;
	FUZZ_CHECK("reply-multiline", !H.in_multi ||
	    memcmp(H.multi_code, H.rhead, 3) == 0, "reply %.3s goes on with a "
	    "line of %.3s", H.multi_code, H.rhead);
	H.in_multi = H.rlinelen > 3 && H.rhead[3] == '-';
	memcpy(H.multi_code, H.rhead, 3);
}

static void
client_stream(const char *p, size_t n)
{
	size_t i;

	FUZZ_CHECK("implicit-plaintext", !(H.conf.mode == SMTP_MODE_IMPLICIT &&
	    !H.tls_done), "%zu bytes [%.*s] to the client before its handshake",
	    n, (int)(n > 80 ? 80 : n), p);
	FUZZ_CHECK("starttls-quiet", !H.t.starttls_sent, "%zu bytes [%.*s] to "
	    "the client after 220 to STARTTLS, before its handshake", n,
	    (int)(n > 80 ? 80 : n), p);
	for (i = 0; i < n; i++) {
		char c = p[i];

		if (H.rcr) {
			FUZZ_CHECK("reply-bare-cr", c == '\n', "a bare CR in a "
			    "reply");
			H.rcr = 0;
			reply_line_end();
			H.rlinelen = 0;
			continue;
		}
		FUZZ_CHECK("reply-bare-lf", c != '\n', "a bare LF in a reply");
		FUZZ_CHECK("reply-nul", c != '\0', "a NUL in a reply");
		if (c == '\r') {
			H.rcr = 1;
			continue;
		}
		if (H.rlinelen < sizeof(H.rhead))
			H.rhead[H.rlinelen] = c;
		H.rlinelen++;
	}
}

int
__wrap_buf_append(struct buf *b, const void *p, size_t n)
{
	size_t before = buf_len(b);
	int r = __real_buf_append(b, p, n);

	if (!H.active || !(b == &H.cout || b == &H.bout))
		return (r);
	if (r == -1) {
		if (H.in_tracker)
			FUZZ_CHECK("lost-output", 0, "an append of %zu bytes "
			    "[%.*s] to %s (%zu of %zu used) failed", n,
			    (int)(n > 80 ? 80 : n), (const char *)p,
			    b == &H.cout ? "to_client" : "to_backend", before,
			    b->cap);
		return (r);
	}
	if (n == 0)
		return (r);
	if (b == &H.bout)
		backend_stream(p, n);
	else
		client_stream(p, n);
	return (r);
}

/* The tracker moves body and chunk bytes from client_in to to_backend:
 * the same bytes, seen before they go. */
int
__wrap_buf_move(struct buf *dst, struct buf *src, size_t n)
{
	if (H.active && dst == &H.bout && n > 0)
		backend_stream(buf_head(src), n);
	FUZZ_CHECK("lost-output", !H.in_tracker || n <= buf_room(dst), "a move "
	    "of %zu bytes to a buffer with room for %zu", n, buf_room(dst));
	return (__real_buf_move(dst, src, n));
}

/* The session's step: run the tracker, act on its flags, flush. */

static void
check_state(void)
{
	FUZZ_CHECK("capacity", buf_len(&H.cin) <= CAP && buf_len(&H.bin) <= CAP &&
	    buf_len(&H.cout) <= CAP && buf_len(&H.bout) <= CAP,
	    "a buffer over its capacity");
	FUZZ_CHECK("fifo", H.t.count <= SMTP_FIFO, "%u slots in a FIFO of %d",
	    (unsigned)H.t.count, SMTP_FIFO);
	FUZZ_CHECK("fifo", (unsigned)H.t.phase < PHASE_MAX, "phase %d",
	    (int)H.t.phase);
	FUZZ_CHECK("tls-once", !H.t.want_tls || (!H.tls_done &&
	    H.conf.mode != SMTP_MODE_IMPLICIT), "want_tls raised again");
}

/* One smtp_run(): its result, or -1 when it looped (endless-loop ignored). */
static int
run_once(void)
{
	struct smtp_io io;
	int r;

	mkio(&io);
	H.logs = 0;
	if (setjmp(H.run_jb) != 0) {
		H.in_run = H.in_tracker = 0;
		return (-1);
	}
	H.in_run = H.in_tracker = 1;
	r = smtp_run(&H.t, &io);
	H.in_run = H.in_tracker = 0;
	return (r);
}

static void
step(void)
{
	int progress, r, rounds = 0;

	do {
		progress = 0;
		if (++rounds == 10000) {
			FUZZ_CHECK("livelock", 0, "smtp_run() keeps making "
			    "progress (phase %s, %u slots)",
			    smtp_phase_names[H.t.phase], (unsigned)H.t.count);
			/* Ignored: the session would hang here; stop. */
			H.done = 1;
			return;
		}
		if ((r = run_once()) == -1) {
			/* Ignored endless-loop: the session would hang. */
			H.done = 1;
			return;
		}
		if (r)
			progress = 1;
		check_state();
		if (H.t.want_backend) {
			FUZZ_CHECK("backend-once", !H.backend_up,
			    "want_backend raised again");
			H.t.want_backend = 0;
			H.backend_up = 1;
			progress = 1;
		}
		if (!H.hold_client && buf_len(&H.cout) > 0) {
			buf_consume(&H.cout, buf_len(&H.cout));
			progress = 1;
		}
		if (H.backend_up && !H.hold_backend && buf_len(&H.bout) > 0) {
			buf_consume(&H.bout, buf_len(&H.bout));
			progress = 1;
		}
		/* The session closes once to_client is flushed, and reads
		 * nothing meanwhile: nothing more happens to the tracker. */
		if (H.t.want_close) {
			H.done = 1;
			return;
		}
		if (H.t.want_tls && buf_len(&H.cout) == 0) {
			FUZZ_CHECK("tls-input", buf_len(&H.cin) == 0, "%zu "
			    "plaintext bytes left in client_in as TLS starts",
			    buf_len(&H.cin));
			H.t.want_tls = 0;
			H.tls_pending = 1;
			progress = 1;
		}
	} while (progress);
}

/* Append up to room(b) bytes: data repeated reps times. */
static size_t
feed(struct buf *b, const uint8_t *data, size_t n, size_t reps)
{
	size_t total = 0, k;

	if (n == 0)
		return (0);
	while (reps-- > 0 && buf_room(b) > 0) {
		k = n < buf_room(b) ? n : buf_room(b);
		if (buf_append(b, data, k) == -1)
			fuzz_fail("harness", "append");
		if (b == &H.bin) {
			if (buf_append(&H.mirror, data, k) == -1)
				fuzz_fail("harness", "mirror append");
			H.fed += k;
		}
		total += k;
	}
	if (b == &H.bin)
		mirror_parse();
	return (total);
}

static int
client_reading(void)
{
	return (smtp_wants_client_input(&H.t) && !H.t.want_close &&
	    !H.client_eof);
}

static int
backend_reading(void)
{
	return (H.backend_up && !H.backend_eof && !H.t.want_close);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t max_lines[] = { 512, 1000, 4096, 8192 };
	static const unsigned max_errors[] = { 0, 0, 3, 10 };
	struct sockaddr_in client = { .sin_family = AF_INET,
	    .sin_port = htons(12345) };
	struct sockaddr_in local = { .sin_family = AF_INET,
	    .sin_port = htons(465) };
	const uint8_t *p = data, *end = data + size, *d;
	struct smtp_io io;
	size_t len, reps;
	enum op op;
	int batch, unstepped = 0;

	if (size < 1)
		return (0);
	memset(&H, 0, sizeof(H));
	H.conf.hostname = HOSTNAME;
	H.conf.mode = (enum smtp_mode)((*p & 3) % 3);
	H.conf.bare_reject = (*p & 4) != 0;
	H.conf.max_line = max_lines[*p >> 3 & 3];
	H.conf.max_errors = max_errors[*p >> 5 & 3];
	H.conf.xclient = (*p & 0x80) != 0;
	p++;
	buf_init(&H.cin, CAP);
	buf_init(&H.bin, CAP);
	buf_init(&H.cout, CAP);
	buf_init(&H.bout, CAP);
	buf_init(&H.mirror, 2 * CAP);
	H.active = 1;

	smtp_init(&H.t, &H.conf, harness_log, NULL);
	inet_pton(AF_INET, "192.0.2.1", &client.sin_addr);
	inet_pton(AF_INET, "198.51.100.2", &local.sin_addr);
	smtp_set_identity(&H.t, (struct sockaddr *)&client,
	    (struct sockaddr *)&local);
	mkio(&io);
	H.in_tracker = 1;
	smtp_start(&H.t, &io);
	H.in_tracker = 0;
	/* An implicit listener starts its handshake at once. */
	H.tls_pending = H.conf.mode == SMTP_MODE_IMPLICIT;
	step();

	while (p < end && !H.done) {
		batch = (*p & 0x10) != 0;
		op = optable[*p++ & 15];
		/* The session runs the tracker after every read: only sends
		 * are batched, and anything else sees them processed. */
		if (unstepped && op != OP_CLIENT && op != OP_BACKEND &&
		    op != OP_CLIENT_REP && op != OP_BACKEND_REP) {
			step();
			unstepped = 0;
			if (H.done)
				break;
		}
		switch (op) {
		case OP_CLIENT:
		case OP_BACKEND:
		case OP_CLIENT_RAW:
		case OP_CLIENT_REP:
		case OP_BACKEND_REP:
			len = p < end ? *p++ : 0;
			reps = 1;
			if (op == OP_CLIENT_REP || op == OP_BACKEND_REP)
				reps = p < end ? (size_t)*p++ + 1 : 1;
			if (len > (size_t)(end - p))
				len = (size_t)(end - p);
			d = p;
			p += len;
			if (op == OP_BACKEND || op == OP_BACKEND_REP) {
				if (backend_reading())
					feed(&H.bin, d, len, reps);
			} else if (op == OP_CLIENT_RAW) {
				if (!H.client_eof && !H.t.want_close)
					feed(&H.cin, d, len, reps);
			} else if (client_reading()) {
				feed(&H.cin, d, len, reps);
			}
			if (batch) {
				unstepped = 1;
				continue;
			}
			break;
		case OP_TLS:
			if (!H.tls_pending)
				break;
			FUZZ_CHECK("tls-input", buf_len(&H.cin) == 0, "%zu "
			    "plaintext bytes in client_in as the handshake "
			    "completes", buf_len(&H.cin));
			H.tls_pending = 0;
			H.tls_done = 1;
			mkio(&io);
			H.in_tracker = 1;
			smtp_tls_done(&H.t, &io);
			H.in_tracker = 0;
			break;
		case OP_CLIENT_EOF:
			/* The session sees an EOF only when it reads. */
			if (client_reading())
				H.client_eof = 1;
			break;
		case OP_BACKEND_EOF:
			if (backend_reading())
				H.backend_eof = 1;
			break;
		case OP_ABORT:
			mkio(&io);
			smtp_abort(&H.t, &io, (enum smtp_abort)((p < end ?
			    *p++ : 0) % ABORT_MAX));
			break;
		case OP_HOLD_CLIENT:
			H.hold_client = !H.hold_client;
			break;
		case OP_HOLD_BACKEND:
			H.hold_backend = !H.hold_backend;
			break;
		}
		step();
		unstepped = 0;
	}
	/* Both peers read what is left. */
	if (!H.done) {
		H.hold_client = H.hold_backend = 0;
		step();
	}

	H.active = 0;
	buf_fini(&H.cin);
	buf_fini(&H.bin);
	buf_fini(&H.cout);
	buf_fini(&H.bout);
	buf_fini(&H.mirror);
	return (0);
}
