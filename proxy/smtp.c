/*
 * The SMTP tracker (DESIGN.md, "The SMTP tracker"). Every command takes a
 * slot in one FIFO; a slot is either answered by the backend or locally, and
 * replies leave in slot order. Client bytes are read as commands, as a DATA
 * body or as a BDAT chunk, never two of these at once.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smtp.h"

const char *const smtp_phase_names[PHASE_MAX] = {
	[PHASE_PLAIN] = "plain",
	[PHASE_TLS_WAIT] = "tls-wait",
	[PHASE_COMMAND] = "command",
	[PHASE_DATA] = "data",
	[PHASE_BDAT] = "bdat",
	[PHASE_BDAT_DISCARD] = "bdat-discard",
	[PHASE_AUTH] = "auth",
	[PHASE_APP_AUTH] = "app-auth",
	[PHASE_QUIT] = "quit",
	[PHASE_CLOSED] = "closed",
};

const char *const smtp_abort_names[ABORT_MAX] = {
	[ABORT_TIMEOUT] = "client timeout",
	[ABORT_BACKEND_DOWN] = "backend unavailable",
	[ABORT_BACKEND_CLOSED] = "backend closed the connection",
	[ABORT_BACKEND_TIMEOUT] = "backend timeout",
	[ABORT_BACKEND_PROTOCOL] = "backend protocol error",
	[ABORT_BACKEND_REFUSED] = "backend refused the session",
	[ABORT_BACKEND_XCLIENT] = "backend refused XCLIENT",
	[ABORT_UPSTREAM] = "no secure upstream",
	[ABORT_SHUTDOWN] = "shutdown",
};

static const char *const abort_replies[ABORT_MAX] = {
	[ABORT_TIMEOUT] = "421 4.4.2 %s Error: timeout exceeded\r\n",
	[ABORT_BACKEND_DOWN] = "421 4.4.1 %s Service not available, "
	    "backend unreachable\r\n",
	[ABORT_BACKEND_CLOSED] = "421 4.4.2 %s Service not available, "
	    "backend closed the connection\r\n",
	[ABORT_BACKEND_TIMEOUT] = "421 4.4.2 %s Service not available, "
	    "backend timeout\r\n",
	[ABORT_BACKEND_PROTOCOL] = "421 4.5.0 %s Service not available, "
	    "backend protocol error\r\n",
	[ABORT_BACKEND_REFUSED] = "421 4.3.0 %s Service not available\r\n",
	[ABORT_BACKEND_XCLIENT] = "421 4.3.0 %s Service not available\r\n",
	[ABORT_UPSTREAM] = "421 4.7.0 %s Service not available, no secure "
	    "connection to the relay\r\n",
	[ABORT_SHUTDOWN] = "421 4.3.2 %s Service shutting down\r\n",
};

/*
 * FIFO slots. Below SLOT_LOCAL the backend answers; from SLOT_LOCAL on the
 * gateway answers with a fixed reply once the slot reaches the head.
 */
enum slot {
	SLOT_BANNER,		/* backend greeting, relayed */
	SLOT_BANNER_HIDDEN,	/* backend greeting, the gateway greeted already */
	SLOT_UP_BANNER,		/* egress: the upstream's greeting, hidden */
	SLOT_UP_EHLO,		/* egress: the gateway's EHLO upstream */
	SLOT_UP_STARTTLS,	/* egress: 220, then TLS at once */
	SLOT_UP_AUTH,		/* egress: the gateway's AUTH upstream */
	SLOT_APP_EHLO,		/* egress: an app's EHLO, as RSET upstream */
	SLOT_APP_HELO,		/* egress: an app's HELO, likewise */
	SLOT_XC_EHLO,		/* the gateway's own EHLO, before XCLIENT */
	SLOT_XC_REPLY,		/* XCLIENT's 220: the greeting anew */
	SLOT_EHLO,		/* reply rewritten */
	SLOT_HELO_FALLBACK,	/* HELO sent for a rejected EHLO */
	SLOT_HELO,
	SLOT_DATA,		/* 354 opens the body */
	SLOT_DATA_END,
	SLOT_BDAT,
	SLOT_BDAT_LAST,
	SLOT_AUTH,		/* 334 asks for another line */
	SLOT_QUIT,
	SLOT_OTHER,
	SLOT_LOCAL = 64,
	LOCAL_EHLO = SLOT_LOCAL,
	LOCAL_EHLO_MIN,
	LOCAL_HELO,
	LOCAL_OK,
	LOCAL_QUIT,
	LOCAL_STARTTLS,
	LOCAL_530_TLS_FIRST,
	LOCAL_538_AUTH_TLS,
	LOCAL_501_STARTTLS,
	LOCAL_501_SYNTAX,
	LOCAL_503_TLS_ACTIVE,
	LOCAL_503_HELO_FIRST,
	LOCAL_502,
	LOCAL_500_LONG,
	LOCAL_500_SYNTAX,
	LOCAL_BARE_REJECT,
	LOCAL_235,
	LOCAL_334_USER,
	LOCAL_334_PASS,
	LOCAL_334,
	LOCAL_501_CANCEL,
	LOCAL_504,
};

/* The gateway's own replies; %s is the configured hostname where used. */
static const char *const local_replies[] = {
	[LOCAL_EHLO - SLOT_LOCAL] = "250-%s\r\n250-PIPELINING\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n",
	[LOCAL_EHLO_MIN - SLOT_LOCAL] = NULL,	/* built in emit_local() */
	[LOCAL_HELO - SLOT_LOCAL] = "250 %s\r\n",
	[LOCAL_OK - SLOT_LOCAL] = "250 2.0.0 OK\r\n",
	[LOCAL_QUIT - SLOT_LOCAL] = "221 2.0.0 %s closing connection\r\n",
	[LOCAL_STARTTLS - SLOT_LOCAL] = "220 2.0.0 Ready to start TLS\r\n",
	[LOCAL_530_TLS_FIRST - SLOT_LOCAL] =
	    "530 5.7.0 Must issue a STARTTLS command first\r\n",
	[LOCAL_538_AUTH_TLS - SLOT_LOCAL] = "538 5.7.11 Encryption required "
	    "for requested authentication mechanism\r\n",
	[LOCAL_501_STARTTLS - SLOT_LOCAL] =
	    "501 5.5.4 Syntax error (no parameters allowed)\r\n",
	[LOCAL_501_SYNTAX - SLOT_LOCAL] =
	    "501 5.5.4 Syntax error in parameters or arguments\r\n",
	[LOCAL_503_TLS_ACTIVE - SLOT_LOCAL] = "503 5.5.1 TLS already active\r\n",
	[LOCAL_503_HELO_FIRST - SLOT_LOCAL] = "503 5.5.1 Send EHLO/HELO first\r\n",
	[LOCAL_502 - SLOT_LOCAL] = "502 5.5.1 Command not implemented\r\n",
	[LOCAL_500_LONG - SLOT_LOCAL] = "500 5.5.2 Line too long\r\n",
	[LOCAL_500_SYNTAX - SLOT_LOCAL] =
	    "500 5.5.2 Syntax error, command unrecognized\r\n",
	[LOCAL_BARE_REJECT - SLOT_LOCAL] = "554 5.6.0 Message contains bare CR "
	    "or LF; rejected\r\n421 4.3.0 %s closing connection\r\n",
	[LOCAL_235 - SLOT_LOCAL] = "235 2.7.0 Authentication successful\r\n",
	[LOCAL_334_USER - SLOT_LOCAL] = "334 VXNlcm5hbWU6\r\n",
	[LOCAL_334_PASS - SLOT_LOCAL] = "334 UGFzc3dvcmQ6\r\n",
	[LOCAL_334 - SLOT_LOCAL] = "334 \r\n",
	[LOCAL_501_CANCEL - SLOT_LOCAL] = "501 5.7.0 Authentication "
	    "cancelled\r\n",
	[LOCAL_504 - SLOT_LOCAL] = "504 5.5.4 Unrecognized authentication "
	    "type\r\n",
};

static void __attribute__((format(printf, 3, 4)))
logf_(struct smtp *t, enum smtp_log_level lvl, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (t->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	t->log(t->log_arg, lvl, msg);
}

/* FIFO */

static int
fifo_full(const struct smtp *t)
{
	return (t->count == SMTP_FIFO);
}

static void
fifo_push(struct smtp *t, enum slot s)
{
	t->slots[(t->head + t->count) % SMTP_FIFO] = (uint8_t)s;
	t->count++;
}

static enum slot
fifo_head(const struct smtp *t)
{
	return ((enum slot)t->slots[t->head]);
}

static void
fifo_pop(struct smtp *t)
{
	t->head = (t->head + 1) % SMTP_FIFO;
	t->count--;
	if (t->count == 0)
		t->sync = 0;
}

static void
fifo_replace_head(struct smtp *t, enum slot s)
{
	t->slots[t->head] = (uint8_t)s;
}

/* Output */

static int
put(struct buf *b, const char *p, size_t n)
{
	return (buf_append(b, p, n));
}

/* Append a reply template with each "%s" replaced by host (the templates
 * are data, not printf formats). Returns 0, or -1 when it does not fit. */
static int
putf(struct buf *b, const char *tmpl, const char *host)
{
	char tmp[640];
	size_t n = 0, hl = strlen(host), l;
	const char *p;

	while ((p = strstr(tmpl, "%s")) != NULL) {
		l = (size_t)(p - tmpl);
		if (n + l + hl > sizeof(tmp))
			return (-1);
		memcpy(tmp + n, tmpl, l);
		memcpy(tmp + n + l, host, hl);
		n += l + hl;
		tmpl = p + 2;
	}
	l = strlen(tmpl);
	if (n + l > sizeof(tmp))
		return (-1);
	memcpy(tmp + n, tmpl, l);
	return (put(b, tmp, n + l));
}

static void
close_after_flush(struct smtp *t, const char *reason)
{
	t->phase = PHASE_CLOSED;
	t->want_close = 1;
	/* A closing session starts no handshake. */
	t->want_tls = t->want_backend_tls = 0;
	if (t->close_reason == NULL)
		t->close_reason = reason;
}

/* Parsers */

int
smtp_line(const char *p, size_t n, size_t max, size_t *len_r, size_t *used_r)
{
	const char *lf;
	size_t scan = n < max ? n : max;

	if ((lf = memchr(p, '\n', scan)) == NULL)
		return (n >= max ? -1 : 0);
	*used_r = (size_t)(lf - p) + 1;
	*len_r = *used_r - 1;
	if (*len_r > 0 && p[*len_r - 1] == '\r')
		(*len_r)--;
	return (1);
}

static int
is_digit(char c)
{
	return (c >= '0' && c <= '9');
}

int
smtp_reply(const char *p, size_t n, size_t *len_r, int *code_r)
{
	size_t off = 0, used, len;
	int code = -1, c, r;

	for (;;) {
		r = smtp_line(p + off, n - off, SMTP_REPLY_LINE, &len, &used);
		if (r != 1)
			return (r == 0 && off + (n - off) < SMTP_REPLY_MAX ?
			    0 : -1);
		if (len < 3 || !is_digit(p[off]) || !is_digit(p[off + 1]) ||
		    !is_digit(p[off + 2]) || p[off] < '2' || p[off] > '5')
			return (-1);
		c = (p[off] - '0') * 100 + (p[off + 1] - '0') * 10 +
		    (p[off + 2] - '0');
		if (code != -1 && c != code)
			return (-1);
		code = c;
		if (len > 3 && p[off + 3] != ' ' && p[off + 3] != '-')
			return (-1);
		if (memchr(p + off, '\0', len) != NULL ||
		    memchr(p + off, '\r', len) != NULL)
			return (-1);
		off += used;
		if (off > SMTP_REPLY_MAX)
			return (-1);
		if (len == 3 || p[off - used + 3] == ' ') {
			*len_r = off;
			*code_r = code;
			return (1);
		}
	}
}

/* Commands */

enum verb {
	VERB_UNKNOWN, VERB_EHLO, VERB_HELO, VERB_MAIL, VERB_RCPT, VERB_DATA,
	VERB_BDAT, VERB_RSET, VERB_NOOP, VERB_QUIT, VERB_VRFY, VERB_EXPN,
	VERB_HELP, VERB_AUTH, VERB_STARTTLS, VERB_XCLIENT, VERB_XFORWARD,
};

static const struct {
	const char	*name;
	enum verb	 verb;
} verbs[] = {
	{ "EHLO", VERB_EHLO }, { "HELO", VERB_HELO }, { "MAIL", VERB_MAIL },
	{ "RCPT", VERB_RCPT }, { "DATA", VERB_DATA }, { "BDAT", VERB_BDAT },
	{ "RSET", VERB_RSET }, { "NOOP", VERB_NOOP }, { "QUIT", VERB_QUIT },
	{ "VRFY", VERB_VRFY }, { "EXPN", VERB_EXPN }, { "HELP", VERB_HELP },
	{ "AUTH", VERB_AUTH }, { "STARTTLS", VERB_STARTTLS },
	{ "XCLIENT", VERB_XCLIENT }, { "XFORWARD", VERB_XFORWARD },
};

struct cmd {
	const char	*line;		/* without its terminator */
	size_t		 len;
	enum verb	 verb;
	const char	*verb_p;
	size_t		 verb_len;
	const char	*arg;		/* after the first space; NULL if none */
	size_t		 arg_len;
};

static void
cmd_parse(struct cmd *c, const char *line, size_t len)
{
	const char *sp;
	size_t i;

	c->line = line;
	c->len = len;
	c->verb_p = line;
	sp = memchr(line, ' ', len);
	c->verb_len = sp ? (size_t)(sp - line) : len;
	c->arg = sp ? sp + 1 : NULL;
	c->arg_len = sp ? len - c->verb_len - 1 : 0;
	c->verb = VERB_UNKNOWN;
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strlen(verbs[i].name) == c->verb_len &&
		    strncasecmp(verbs[i].name, line, c->verb_len) == 0) {
			c->verb = verbs[i].verb;
			break;
		}
}

/* Whether the backend's EHLO reply offered keyword kw (case-insensitive). */
static int
ext_offered(const struct smtp *t, const char *kw, size_t n)
{
	const char *p = t->exts;

	while ((p = strchr(p, ' ')) != NULL) {
		p++;
		if (strncasecmp(p, kw, n) == 0 && p[n] == ' ')
			return (1);
	}
	return (0);
}

static void
ext_add(struct smtp *t, const char *kw, size_t n)
{
	size_t used = strlen(t->exts);

	if (n == 0 || memchr(kw, ' ', n) != NULL)
		return;
	/* An overflowing list only makes rare extension verbs unavailable. */
	if (used + n + 2 > sizeof(t->exts))
		return;
	if (used == 0)
		t->exts[used++] = ' ';
	memcpy(t->exts + used, kw, n);
	t->exts[used + n] = ' ';
	t->exts[used + n + 1] = '\0';
}

/*
 * Parse "BDAT size [LAST]" (RFC 3030 section 3). Returns 0 and fills size
 * and last, or -1 when the arguments are not of that form.
 */
static int
bdat_parse(const struct cmd *c, uint64_t *size_r, int *last_r)
{
	const char *p = c->arg, *end = c->arg + c->arg_len;
	uint64_t n = 0;

	if (p == NULL || p == end)
		return (-1);
	for (; p < end && is_digit(*p); p++) {
		if (n > (UINT64_MAX - 9) / 10)
			return (-1);
		n = n * 10 + (uint64_t)(*p - '0');
	}
	if (p == c->arg)
		return (-1);
	*last_r = 0;
	if (p < end) {
		if (end - p != 5 || strncasecmp(p, " LAST", 5) != 0)
			return (-1);
		*last_r = 1;
	}
	*size_r = n;
	return (0);
}

/* Queue a command to the backend: its line with CRLF, and its slot. */
static void
forward(struct smtp *t, struct smtp_io *io, const struct cmd *c, enum slot s)
{
	put(io->to_backend, c->line, c->len);
	put(io->to_backend, "\r\n", 2);
	fifo_push(t, s);
}

/* The client sent STARTTLS (its line is the first used bytes of client_in)
 * and may start TLS: whatever followed the line in plaintext is discarded
 * here, and only here (CVE-2011-0411). */
static void
accept_starttls(struct smtp *t, struct smtp_io *io, size_t used)
{
	size_t n = buf_len(io->client_in) - used;

	if (n > 0)
		logf_(t, SMTP_LOG_WARN, "discarded %zu bytes sent after "
		    "STARTTLS in plaintext", n);
	buf_consume(io->client_in, buf_len(io->client_in));
	fifo_push(t, LOCAL_STARTTLS);
	t->phase = PHASE_TLS_WAIT;
	/* RFC 3207 section 4.2 and 6: the backend session begins inside TLS,
	 * with nothing said before it. It is connected now so that its banner
	 * arrives during the handshake. */
	if (t->conf->mode == SMTP_MODE_STARTTLS) {
		t->want_backend = 1;
		fifo_push(t, SLOT_BANNER_HIDDEN);
	}
}

/* A command before TLS on a STARTTLS listener: the gateway answers alone
 * (DESIGN.md rule 2). The command's line is the first used bytes of
 * client_in; returns 1 when it consumed client_in itself. */
static int
command_plain(struct smtp *t, struct smtp_io *io, const struct cmd *c,
    size_t used)
{
	switch (c->verb) {
	case VERB_EHLO:
	case VERB_HELO:
		if (c->arg_len == 0)
			fifo_push(t, LOCAL_501_SYNTAX);
		else
			fifo_push(t, c->verb == VERB_EHLO ? LOCAL_EHLO :
			    LOCAL_HELO);
		break;
	case VERB_NOOP:
	case VERB_RSET:
		fifo_push(t, LOCAL_OK);
		break;
	case VERB_QUIT:
		fifo_push(t, LOCAL_QUIT);
		t->phase = PHASE_QUIT;
		break;
	case VERB_STARTTLS:
		if (c->arg != NULL)
			fifo_push(t, LOCAL_501_STARTTLS);
		else {
			accept_starttls(t, io, used);
			return (1);
		}
		break;
	default:
		fifo_push(t, LOCAL_530_TLS_FIRST);
		break;
	}
	return (0);
}

/* A command relayed to the backend, or refused on its way there (DESIGN.md
 * rule 5). As command_plain(), returns 1 when it consumed client_in. */
static int
command_relay(struct smtp *t, struct smtp_io *io, const struct cmd *c,
    size_t used)
{
	uint64_t size;
	int last;

	switch (c->verb) {
	case VERB_STARTTLS:
		if (t->tls || t->conf->mode != SMTP_MODE_OPPORTUNISTIC)
			fifo_push(t, LOCAL_503_TLS_ACTIVE);
		else if (c->arg != NULL)
			fifo_push(t, LOCAL_501_STARTTLS);
		else {
			accept_starttls(t, io, used);
			return (1);
		}
		return (0);
	case VERB_XCLIENT:
	case VERB_XFORWARD:
		/* The backend trusts the gateway's address; these would let
		 * any client claim another identity. */
		fifo_push(t, LOCAL_502);
		return (0);
	case VERB_EHLO:
	case VERB_HELO:
		if (c->arg_len == 0 || c->arg_len >= sizeof(t->ehlo_arg)) {
			fifo_push(t, LOCAL_501_SYNTAX);
			return (0);
		}
		memcpy(t->ehlo_arg, c->arg, c->arg_len);
		t->ehlo_arg[c->arg_len] = '\0';
		t->helo_done = 0;
		t->sync = 1;
		if (c->verb == VERB_HELO) {
			forward(t, io, c, SLOT_HELO);
		} else if (t->no_ehlo) {
			put(io->to_backend, "HELO ", 5);
			put(io->to_backend, c->arg, c->arg_len);
			put(io->to_backend, "\r\n", 2);
			fifo_push(t, SLOT_HELO_FALLBACK);
		} else {
			forward(t, io, c, SLOT_EHLO);
		}
		return (0);
	case VERB_AUTH:
		if (!t->tls) {
			fifo_push(t, LOCAL_538_AUTH_TLS);
			return (0);
		}
		break;
	case VERB_MAIL:
	case VERB_RCPT:
	case VERB_DATA:
	case VERB_BDAT:
	case VERB_RSET:
	case VERB_NOOP:
	case VERB_QUIT:
	case VERB_VRFY:
	case VERB_EXPN:
	case VERB_HELP:
		break;
	case VERB_UNKNOWN:
		if (c->verb_len == 0 || !ext_offered(t, c->verb_p, c->verb_len)) {
			fifo_push(t, LOCAL_502);
			return (0);
		}
		/* An extension command must end a pipelined group (RFC 2920
		 * section 3.1); wait for its reply. */
		forward(t, io, c, SLOT_OTHER);
		t->sync = 1;
		return (0);
	}

	/* RFC 3207 section 4.2 and RFC 5321 section 4.1.4: after TLS (and on
	 * a fresh session) a transaction needs a new EHLO/HELO, so nothing the
	 * backend learnt before TLS can carry a transaction. */
	if (!t->helo_done && (c->verb == VERB_MAIL || c->verb == VERB_RCPT ||
	    c->verb == VERB_DATA || c->verb == VERB_BDAT ||
	    c->verb == VERB_AUTH)) {
		fifo_push(t, LOCAL_503_HELO_FIRST);
		if (c->verb == VERB_BDAT && bdat_parse(c, &size, &last) == 0) {
			t->bdat_left = size;
			t->phase = size > 0 ? PHASE_BDAT_DISCARD : t->phase;
		}
		return (0);
	}

	switch (c->verb) {
	case VERB_DATA:
		/* The bytes after DATA are body or commands depending on the
		 * reply: read nothing more until it is in. */
		forward(t, io, c, SLOT_DATA);
		t->sync = 1;
		break;
	case VERB_BDAT:
		if (bdat_parse(c, &size, &last) == -1) {
			fifo_push(t, LOCAL_501_SYNTAX);
			break;
		}
		t->bdat_left = size;
		if (!t->chunking) {
			/* A backend without CHUNKING would read the chunk as
			 * commands: answer here and drop the chunk, as RFC 3030
			 * asks of a refused BDAT. */
			fifo_push(t, LOCAL_502);
			if (size > 0)
				t->phase = PHASE_BDAT_DISCARD;
			break;
		}
		forward(t, io, c, last ? SLOT_BDAT_LAST : SLOT_BDAT);
		if (size > 0)
			t->phase = PHASE_BDAT;
		break;
	case VERB_AUTH:
		forward(t, io, c, SLOT_AUTH);
		t->sync = 1;
		break;
	case VERB_QUIT:
		forward(t, io, c, SLOT_QUIT);
		t->phase = PHASE_QUIT;
		break;
	default:
		forward(t, io, c, SLOT_OTHER);
		break;
	}
	return (0);
}

/*
 * Egress: the app talks to the gateway, which is already authenticated
 * upstream. Its EHLO and HELO are answered with what holds through the
 * gateway (after an RSET upstream, as a new EHLO resets a transaction); its
 * own AUTH is taken and ignored, or refused; STARTTLS is not offered. The
 * rest is relayed. Returns as command_relay().
 */
static int
command_egress(struct smtp *t, struct smtp_io *io, const struct cmd *c,
    size_t used)
{
	const char *sp;
	size_t alen;

	switch (c->verb) {
	case VERB_EHLO:
	case VERB_HELO:
		if (c->arg_len == 0) {
			fifo_push(t, LOCAL_501_SYNTAX);
			return (0);
		}
		put(io->to_backend, "RSET\r\n", 6);
		fifo_push(t, c->verb == VERB_EHLO ? SLOT_APP_EHLO : SLOT_APP_HELO);
		t->sync = 1;
		return (0);
	case VERB_STARTTLS:
		fifo_push(t, LOCAL_502);
		return (0);
	case VERB_AUTH:
		break;
	default:
		return (command_relay(t, io, c, used));
	}
	if (t->conf->app_auth == 1) {
		fifo_push(t, LOCAL_502);
		return (0);
	}
	/* RFC 4954: PLAIN takes one line (maybe in the command), LOGIN two
	 * (the first maybe in the command). */
	/* The line is not NUL-terminated: the mechanism ends at a space or at
	 * the end of the argument. */
	sp = c->arg != NULL ? memchr(c->arg, ' ', c->arg_len) : NULL;
	alen = sp != NULL ? (size_t)(sp - c->arg) : c->arg_len;
	if (c->arg != NULL && alen == 5 && strncasecmp(c->arg, "PLAIN", 5) == 0)
		t->app_auth_left = c->arg_len > alen ? 0 : 1;
	else if (c->arg != NULL && alen == 5 &&
	    strncasecmp(c->arg, "LOGIN", 5) == 0)
		t->app_auth_left = c->arg_len > alen ? 1 : 2;
	else {
		fifo_push(t, LOCAL_504);
		return (0);
	}
	if (t->app_auth_left == 0) {
		fifo_push(t, LOCAL_235);
		return (0);
	}
	fifo_push(t, t->app_auth_left == 2 ? LOCAL_334_USER :
	    alen == 5 && strncasecmp(c->arg, "LOGIN", 5) == 0 ? LOCAL_334_PASS :
	    LOCAL_334);
	t->phase = PHASE_APP_AUTH;
	return (0);
}

/* Egress: one line of an app's AUTH exchange, taken and dropped. */
static void
app_auth_line(struct smtp *t, const char *p, size_t len)
{
	if (len == 1 && p[0] == '*') {
		fifo_push(t, LOCAL_501_CANCEL);
		t->phase = PHASE_COMMAND;
		return;
	}
	if (--t->app_auth_left > 0) {
		fifo_push(t, LOCAL_334_PASS);
		return;
	}
	fifo_push(t, LOCAL_235);
	t->phase = PHASE_COMMAND;
}

/*
 * Read one command line from client_in and act on it. Returns 1 when a line
 * (or part of an over-long one) was consumed, 0 when it must wait.
 */
static int
client_command(struct smtp *t, struct smtp_io *io)
{
	const char *p = buf_head(io->client_in);
	size_t n = buf_len(io->client_in), len, used;
	struct cmd c;
	int r;

	/* After a group-ending command nothing is read until its reply is in;
	 * an answer to a 334 is what that reply asked for. */
	if (n == 0 || fifo_full(t) || (t->sync && t->count > 0 &&
	    t->phase != PHASE_AUTH && t->phase != PHASE_APP_AUTH))
		return (0);
	/* The longest command plus CRLF must fit in to_backend. */
	if (buf_room(io->to_backend) < t->conf->max_line + 8)
		return (0);

	r = t->skip_line ? -1 : smtp_line(p, n, t->conf->max_line, &len, &used);
	if (r == 0)
		return (0);
	if (r == -1) {
		/* An over-long line is dropped through its LF if that is here,
		 * or else what there is, and the rest as it comes. It gets one
		 * 500. */
		const char *lf = memchr(p, '\n', n);

		if (!t->skip_line)
			fifo_push(t, LOCAL_500_LONG);
		t->skip_line = lf == NULL;
		buf_consume(io->client_in, lf ? (size_t)(lf - p) + 1 : n);
		return (1);
	}

	/* A bare CR or a NUL inside a command line is never forwarded. */
	if (t->phase != PHASE_AUTH && t->phase != PHASE_APP_AUTH && (len == 0 ||
	    memchr(p, '\r', len) != NULL || memchr(p, '\0', len) != NULL)) {
		buf_consume(io->client_in, used);
		fifo_push(t, LOCAL_500_SYNTAX);
		return (1);
	}

	if (t->phase == PHASE_AUTH) {
		/* An answer to a 334 is not a command (RFC 4954 section 4). */
		put(io->to_backend, p, len);
		put(io->to_backend, "\r\n", 2);
		buf_consume(io->client_in, used);
		t->phase = PHASE_COMMAND;
		return (1);
	}

	if (t->phase == PHASE_APP_AUTH) {
		app_auth_line(t, p, len);
		buf_consume(io->client_in, used);
		return (1);
	}

	/* The line stays in client_in until it is handled: it is read in
	 * place, and accept_starttls() sees exactly what followed it. */
	cmd_parse(&c, p, len);
	if (t->phase == PHASE_PLAIN)
		r = command_plain(t, io, &c, used);
	else if (t->conf->mode == SMTP_MODE_EGRESS)
		r = command_egress(t, io, &c, used);
	else
		r = command_relay(t, io, &c, used);
	if (!r)
		buf_consume(io->client_in, used);
	return (1);
}

/* DATA body bytes, through the scanner. Returns 1 if it consumed any. */
static int
body_input(struct smtp *t, struct smtp_io *io)
{
	size_t used;
	int ended, was_bare = t->body.bare;

	used = body_scan(&t->body, buf_head(io->client_in),
	    buf_len(io->client_in), io->to_backend, &ended);
	buf_consume(io->client_in, used);
	if (t->body.bare && !was_bare)
		logf_(t, SMTP_LOG_INFO, "bare CR or LF in message body, %s",
		    t->conf->bare_reject ? "rejecting" : "normalized");
	if (ended) {
		t->phase = PHASE_COMMAND;
		/* A rejected body never got its end of data: the backend's
		 * transaction dies with the session. */
		fifo_push(t, t->body.bare && t->body.drop ? LOCAL_BARE_REJECT :
		    SLOT_DATA_END);
	}
	return (used > 0);
}

/* BDAT chunk bytes: relayed as they are, or dropped. */
static int
bdat_scan(struct smtp *t, struct smtp_io *io)
{
	size_t n = buf_len(io->client_in);

	if (n > t->bdat_left)
		n = (size_t)t->bdat_left;
	if (t->phase == PHASE_BDAT && n > buf_room(io->to_backend))
		n = buf_room(io->to_backend);
	if (n == 0)
		return (0);
	if (t->phase == PHASE_BDAT)
		put(io->to_backend, buf_head(io->client_in), n);
	buf_consume(io->client_in, n);
	t->bdat_left -= n;
	if (t->bdat_left == 0)
		t->phase = PHASE_COMMAND;
	return (1);
}

static int
client_input(struct smtp *t, struct smtp_io *io)
{
	switch (t->phase) {
	case PHASE_PLAIN:
		return (client_command(t, io));
	case PHASE_COMMAND:
	case PHASE_AUTH:
	case PHASE_APP_AUTH:
		/* Nothing goes to the backend before its banner. */
		if (!t->greeted)
			return (0);
		return (client_command(t, io));
	case PHASE_DATA:
		return (body_input(t, io));
	case PHASE_BDAT:
	case PHASE_BDAT_DISCARD:
		return (bdat_scan(t, io));
	case PHASE_TLS_WAIT:
		/* Plaintext that arrived after STARTTLS was accepted is never
		 * executed; the session reads none, but be sure. */
		if (buf_len(io->client_in) > 0) {
			logf_(t, SMTP_LOG_WARN, "discarded %zu bytes sent after "
			    "STARTTLS in plaintext", buf_len(io->client_in));
			buf_consume(io->client_in, buf_len(io->client_in));
			return (1);
		}
		return (0);
	case PHASE_QUIT:
	case PHASE_CLOSED:
	case PHASE_MAX:
		break;
	}
	return (0);
}

/* Replies */

/* RFC 5321 section 7.8: a client that keeps failing is dropped, once
 * max_errors 5xx replies came in a row. cls is the reply's first digit. */
static void
count_reply(struct smtp *t, struct smtp_io *io, char cls)
{
	if (cls != '5') {
		t->errors = 0;
		return;
	}
	if (t->conf->max_errors == 0 || ++t->errors < t->conf->max_errors ||
	    t->phase == PHASE_CLOSED)
		return;
	putf(io->to_client, "421 4.7.0 %s Too many errors, closing "
	    "connection\r\n", t->conf->hostname);
	close_after_flush(t, "too many errors");
}

/* Emit local replies at the head of the FIFO. Returns 1 if any was. */
static int
emit_local(struct smtp *t, struct smtp_io *io)
{
	const char *host = t->conf->hostname;
	int any = 0;
	enum slot s;

	while (t->count > 0 && (s = fifo_head(t)) >= SLOT_LOCAL &&
	    t->phase != PHASE_CLOSED) {
		if (buf_room(io->to_client) < 640)
			break;
		if (s == LOCAL_EHLO_MIN)
			putf(io->to_client, !t->tls && t->conf->mode ==
			    SMTP_MODE_OPPORTUNISTIC ? "250-%s\r\n250 STARTTLS\r\n"
			    : "250 %s\r\n", host);
		else
			putf(io->to_client, local_replies[s - SLOT_LOCAL], host);
		fifo_pop(t);
		any = 1;
		if (s == LOCAL_STARTTLS)
			t->want_tls = t->starttls_sent = 1;
		else if (s == LOCAL_QUIT)
			close_after_flush(t, "quit");
		else if (s == LOCAL_BARE_REJECT)
			close_after_flush(t, "bare CR or LF in message body");
		count_reply(t, io, s == LOCAL_EHLO_MIN ? '2' :
		    local_replies[s - SLOT_LOCAL][0]);
	}
	return (any);
}

/* Copy a reply (a valid one: smtp_reply() said so) line by line, each
 * ending in CRLF. */
static void
relay_reply(struct smtp *t, struct smtp_io *io, const char *p, size_t n)
{
	size_t off = 0, len, used;

	while (off < n && smtp_line(p + off, n - off, n - off, &len, &used) == 1) {
		put(io->to_client, p + off, len);
		put(io->to_client, "\r\n", 2);
		off += used;
	}
	count_reply(t, io, p[0]);
}

/*
 * Rewrite a 250 reply to EHLO (DESIGN.md rule 4): STARTTLS, XCLIENT and
 * XFORWARD go; before TLS on an opportunistic listener AUTH goes too and
 * STARTTLS is offered by the gateway. The keywords are remembered for
 * relaying extension commands and BDAT.
 */
static void
ehlo_rewrite(struct smtp *t, struct buf *out, const char *p, size_t n)
{
	const char *kept[65];	/* one more for the added STARTTLS */
	size_t kept_len[65], nkept = 0, off = 0, len, used, kw, i;
	int pre_tls = !t->tls;

	t->exts[0] = '\0';
	t->chunking = 0;
	while (off < n && smtp_line(p + off, n - off, n - off, &len, &used) == 1) {
		const char *line = p + off;

		off += used;
		if (nkept > 0) {
			/* Not the first line: a keyword with parameters. */
			const char *k = line + 4;
			size_t klen = len > 4 ? len - 4 : 0;

			for (kw = 0; kw < klen && k[kw] != ' ' && k[kw] != '='; kw++)
				;
			if ((kw == 8 && strncasecmp(k, "STARTTLS", 8) == 0) ||
			    (kw == 7 && strncasecmp(k, "XCLIENT", 7) == 0) ||
			    (kw == 8 && strncasecmp(k, "XFORWARD", 8) == 0) ||
			    (pre_tls && kw == 4 && strncasecmp(k, "AUTH", 4) == 0))
				continue;
			if (kw == 8 && strncasecmp(k, "CHUNKING", 8) == 0)
				t->chunking = 1;
			ext_add(t, k, kw);
			if (nkept == sizeof(kept) / sizeof(kept[0]) - 1)
				continue;
		}
		kept[nkept] = line;
		kept_len[nkept++] = len;
	}
	if (pre_tls)
		kept[nkept] = "250 STARTTLS", kept_len[nkept++] = 12;
	for (i = 0; i < nkept; i++) {
		put(out, kept[i], 3);
		put(out, i + 1 < nkept ? "-" : " ", 1);
		if (kept_len[i] > 4)
			put(out, kept[i] + 4, kept_len[i] - 4);
		put(out, "\r\n", 2);
	}
}

/*
 * The parameters of an EHLO keyword, e.g. XCLIENT's attribute names, copied
 * to out with spaces around them (" NAME ADDR "). Returns 1 when the reply
 * offers the keyword.
 */
static int
ehlo_params(const char *p, size_t n, const char *kw, char *out, size_t outlen)
{
	size_t off = 0, len, used, kwlen = strlen(kw);

	while (off < n && smtp_line(p + off, n - off, n - off, &len, &used) == 1) {
		const char *line = p + off;

		off += used;
		if (len < 4 + kwlen || strncasecmp(line + 4, kw, kwlen) != 0 ||
		    (len > 4 + kwlen && line[4 + kwlen] != ' '))
			continue;
		snprintf(out, outlen, "%.*s ", (int)(len - 4 - kwlen),
		    line + 4 + kwlen);
		return (1);
	}
	return (0);
}

/* After the backend's 220: introduce the client with XCLIENT (Postfix's
 * XCLIENT_README) before any of its commands pass. */
static void
xclient_begin(struct smtp *t, struct smtp_io *io, enum slot banner)
{
	t->xc_relay = banner == SLOT_BANNER;
	putf(io->to_backend, "EHLO %s\r\n", t->conf->hostname);
	fifo_replace_head(t, SLOT_XC_EHLO);
}

static void
xclient_send(struct smtp *t, struct smtp_io *io, const char *p, size_t n,
    int code)
{
	char attrs[256];

	if (code != 250 || !ehlo_params(p, n, "XCLIENT", attrs, sizeof(attrs)) ||
	    strstr(attrs, " ADDR ") == NULL) {
		logf_(t, SMTP_LOG_WARN, "backend does not offer XCLIENT ADDR "
		    "(EHLO got %d); refusing to relay with the gateway's "
		    "address", code);
		fifo_pop(t);
		smtp_abort(t, io, ABORT_BACKEND_XCLIENT);
		return;
	}
	/* PROTO=ESMTP: the client's HELO or EHLO is not known yet; it reaches
	 * the backend itself after the new 220. */
	put(io->to_backend, "XCLIENT ", 8);
	put(io->to_backend, t->xc_client, strlen(t->xc_client));
	if (strstr(attrs, " PROTO ") != NULL)
		put(io->to_backend, " PROTO=ESMTP", 12);
	if (t->xc_local[0] != '\0' && strstr(attrs, " DESTADDR ") != NULL &&
	    strstr(attrs, " DESTPORT ") != NULL) {
		put(io->to_backend, " ", 1);
		put(io->to_backend, t->xc_local, strlen(t->xc_local));
	}
	put(io->to_backend, "\r\n", 2);
	fifo_replace_head(t, SLOT_XC_REPLY);
}

/* Base64 (RFC 4648) of n bytes, NUL-terminated; out holds 4 * (n + 2) / 3
 * + 1 bytes. */
static void
base64(const unsigned char *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789+/";
	size_t i;
	unsigned v;

	for (i = 0; i + 2 < n; i += 3) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = tab[v & 63];
	}
	if (i < n) {
		v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		*out++ = '=';
	}
	*out = '\0';
}

/* Egress: send one AUTH line: prefix, then the base64 of the parts joined
 * by NULs ("AUTH PLAIN " with "", user, password; or a bare LOGIN answer). */
static void
up_auth_send(struct smtp_io *io, const char *prefix, const char *const *parts,
    int nparts)
{
	unsigned char raw[800];
	char enc[sizeof(raw) * 4 / 3 + 8];
	size_t n = 0, l;
	int i;

	for (i = 0; i < nparts; i++) {
		if (i > 0)
			raw[n++] = '\0';
		/* The config loader bounds these; a longer one is cut, not
		 * overrun. */
		l = strnlen(parts[i], 380);
		memcpy(raw + n, parts[i], l);
		n += l;
	}
	base64(raw, n, enc);
	put(io->to_backend, prefix, strlen(prefix));
	put(io->to_backend, enc, strlen(enc));
	put(io->to_backend, "\r\n", 2);
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(enc, sizeof(enc));
}

/*
 * Egress: the upstream's EHLO reply inside TLS. Its extensions, less AUTH,
 * STARTTLS, XCLIENT and XFORWARD, are what the app is offered; CHUNKING and
 * extension verbs are remembered for relaying.
 */
static void
up_ehlo_record(struct smtp *t, const char *p, size_t n)
{
	size_t off = 0, len, used, kw, u = 0;
	int first = 1;

	t->exts[0] = '\0';
	t->up_ehlo[0] = '\0';
	t->chunking = 0;
	while (off < n && smtp_line(p + off, n - off, n - off, &len, &used) == 1) {
		const char *k = p + off + 4;
		size_t klen = len > 4 ? len - 4 : 0;

		off += used;
		if (first) {
			first = 0;
			continue;
		}
		for (kw = 0; kw < klen && k[kw] != ' ' && k[kw] != '='; kw++)
			;
		if ((kw == 4 && strncasecmp(k, "AUTH", 4) == 0) ||
		    (kw == 8 && strncasecmp(k, "STARTTLS", 8) == 0) ||
		    (kw == 7 && strncasecmp(k, "XCLIENT", 7) == 0) ||
		    (kw == 8 && strncasecmp(k, "XFORWARD", 8) == 0))
			continue;
		if (kw == 8 && strncasecmp(k, "CHUNKING", 8) == 0)
			t->chunking = 1;
		ext_add(t, k, kw);
		if (u + klen + 2 > sizeof(t->up_ehlo))
			continue;
		memcpy(t->up_ehlo + u, k, klen);
		u += klen;
		t->up_ehlo[u++] = '\n';
		t->up_ehlo[u] = '\0';
	}
}

/* Egress: the app's EHLO reply, from what the upstream offers. */
static void
app_ehlo_reply(struct smtp *t, struct smtp_io *io)
{
	const char *p = t->up_ehlo, *nl;
	/* For apps that will not send mail without authenticating: AUTH is
	 * offered, and whatever they send is taken and ignored. */
	int offer = t->conf->app_auth == 2;

	put(io->to_client, "250", 3);
	put(io->to_client, *p != '\0' || offer ? "-" : " ", 1);
	put(io->to_client, t->conf->hostname, strlen(t->conf->hostname));
	put(io->to_client, "\r\n", 2);
	for (; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		put(io->to_client, nl[1] != '\0' || offer ? "250-" : "250 ", 4);
		put(io->to_client, p, (size_t)(nl - p));
		put(io->to_client, "\r\n", 2);
	}
	if (offer)
		put(io->to_client, "250 AUTH PLAIN LOGIN\r\n", 22);
}

/* Egress: a reply during the upstream's setup (greeting, EHLO, STARTTLS,
 * AUTH). Nothing of the app's passes before it completes, and it never
 * goes on without TLS. */
static void
upstream_reply(struct smtp *t, struct smtp_io *io, const char *p, size_t n,
    int code)
{
	enum slot s = fifo_head(t);
	const struct smtp_conf *c = t->conf;
	const char *mech = c->auth == 1 ? "PLAIN" : "LOGIN";
	char params[256];
	const char *why = NULL;

	switch (s) {
	case SLOT_UP_BANNER:
		if (code != 220) {
			why = "greeted with other than 220";
			break;
		}
		putf(io->to_backend, "EHLO %s\r\n", c->helo);
		fifo_replace_head(t, SLOT_UP_EHLO);
		return;
	case SLOT_UP_EHLO:
		if (code != 250) {
			why = "refused EHLO";
			break;
		}
		if (!t->backend_tls) {
			/* Never a plaintext fallback. */
			if (!ehlo_params(p, n, "STARTTLS", params,
			    sizeof(params))) {
				why = "does not offer STARTTLS";
				break;
			}
			put(io->to_backend, "STARTTLS\r\n", 10);
			fifo_replace_head(t, SLOT_UP_STARTTLS);
			return;
		}
		up_ehlo_record(t, p, n);
		if (c->auth != 0) {
			if (!ehlo_params(p, n, "AUTH", params, sizeof(params)) ||
			    strcasestr(params, c->auth == 1 ? " PLAIN " :
			    " LOGIN ") == NULL) {
				logf_(t, SMTP_LOG_WARN, "upstream does not offer "
				    "AUTH %s", mech);
				why = "lacks the AUTH mechanism";
				break;
			}
			t->auth_step = 0;
			if (c->auth == 1) {
				const char *parts[] = { "", c->auth_user,
				    c->auth_pass };

				up_auth_send(io, "AUTH PLAIN ", parts, 3);
			} else {
				put(io->to_backend, "AUTH LOGIN\r\n", 12);
			}
			fifo_replace_head(t, SLOT_UP_AUTH);
			return;
		}
		goto ready;
	case SLOT_UP_STARTTLS:
		if (code != 220) {
			why = "refused STARTTLS";
			break;
		}
		/* Anything behind the 220 came in plaintext, where an attacker
		 * may have put it: the client half of the NO STARTTLS attack. */
		if (buf_len(io->backend_in) > n) {
			why = "sent bytes after its 220 to STARTTLS";
			break;
		}
		fifo_pop(t);
		t->want_backend_tls = 1;
		return;
	case SLOT_UP_AUTH:
		if (code == 334 && c->auth == 2 && t->auth_step < 2) {
			up_auth_send(io, "", t->auth_step++ == 0 ?
			    &c->auth_user : &c->auth_pass, 1);
			return;
		}
		if (code != 235) {
			logf_(t, SMTP_LOG_WARN, "upstream refused AUTH %s with "
			    "%d", mech, code);
			why = "refused AUTH";
			break;
		}
		goto ready;
	default:
		break;
	}
	logf_(t, SMTP_LOG_WARN, "upstream %s (%d)", why ? why : "failed", code);
	fifo_pop(t);
	smtp_abort(t, io, ABORT_UPSTREAM);
	return;

ready:
	/* TLS is up and verified, AUTH done: the app is greeted now. */
	fifo_pop(t);
	t->greeted = 1;
	t->helo_done = 0;
	putf(io->to_client, "220 %s ESMTP\r\n", c->hostname);
	logf_(t, SMTP_LOG_DEBUG, "upstream ready");
}

/* Handle one complete backend reply for the slot at the head. */
static void
backend_reply(struct smtp *t, struct smtp_io *io, const char *p, size_t n,
    int code)
{
	enum slot s = fifo_head(t);
	int ok = code / 100 == 2;

	switch (s) {
	case SLOT_UP_BANNER:
	case SLOT_UP_EHLO:
	case SLOT_UP_STARTTLS:
	case SLOT_UP_AUTH:
		upstream_reply(t, io, p, n, code);
		return;
	case SLOT_APP_EHLO:
	case SLOT_APP_HELO:
		/* The upstream's answer to our RSET stands for the EHLO. */
		if (!ok) {
			relay_reply(t, io, p, n);
			break;
		}
		t->helo_done = 1;
		if (s == SLOT_APP_EHLO)
			app_ehlo_reply(t, io);
		else
			putf(io->to_client, "250 %s\r\n", t->conf->hostname);
		count_reply(t, io, '2');
		break;
	case SLOT_BANNER:
		if (t->conf->xclient && code == 220) {
			xclient_begin(t, io, s);
			return;
		}
		t->greeted = 1;
		relay_reply(t, io, p, n);
		break;
	case SLOT_XC_EHLO:
		xclient_send(t, io, p, n, code);
		return;
	case SLOT_XC_REPLY:
		if (code != 220) {
			logf_(t, SMTP_LOG_WARN, "backend refused XCLIENT with %d",
			    code);
			fifo_pop(t);
			smtp_abort(t, io, ABORT_BACKEND_XCLIENT);
			return;
		}
		t->greeted = 1;
		if (t->xc_relay)
			relay_reply(t, io, p, n);
		break;
	case SLOT_BANNER_HIDDEN:
		if (t->conf->xclient && code == 220) {
			xclient_begin(t, io, s);
			return;
		}
		t->greeted = 1;
		if (code != 220) {
			logf_(t, SMTP_LOG_WARN, "backend greeted with %d", code);
			fifo_pop(t);
			smtp_abort(t, io, ABORT_BACKEND_REFUSED);
			return;
		}
		break;
	case SLOT_EHLO:
		if (code == 500 || code == 502) {
			/* An RFC 821 server: say HELO for the client, and answer
			 * its EHLO with what holds through the gateway. */
			t->no_ehlo = 1;
			put(io->to_backend, "HELO ", 5);
			put(io->to_backend, t->ehlo_arg, strlen(t->ehlo_arg));
			put(io->to_backend, "\r\n", 2);
			fifo_replace_head(t, SLOT_HELO_FALLBACK);
			return;
		}
		if (ok) {
			ehlo_rewrite(t, io->to_client, p, n);
			count_reply(t, io, '2');
			t->helo_done = 1;
		} else {
			relay_reply(t, io, p, n);
		}
		break;
	case SLOT_HELO_FALLBACK:
		if (ok) {
			t->helo_done = 1;
			t->chunking = 0;
			t->exts[0] = '\0';
			fifo_replace_head(t, LOCAL_EHLO_MIN);
			emit_local(t, io);
			return;
		}
		relay_reply(t, io, p, n);
		break;
	case SLOT_HELO:
		if (ok) {
			t->helo_done = 1;
			t->chunking = 0;
			t->exts[0] = '\0';
		}
		relay_reply(t, io, p, n);
		break;
	case SLOT_DATA:
		relay_reply(t, io, p, n);
		if (code == 354) {
			t->phase = PHASE_DATA;
			body_init(&t->body, t->conf->bare_reject);
		}
		break;
	case SLOT_DATA_END:
	case SLOT_BDAT_LAST:
		relay_reply(t, io, p, n);
		if (ok)
			t->messages++;
		break;
	case SLOT_AUTH:
		relay_reply(t, io, p, n);
		if (code == 334) {
			/* The exchange goes on: the slot stays at the head. */
			t->phase = PHASE_AUTH;
			return;
		}
		break;
	case SLOT_QUIT:
		relay_reply(t, io, p, n);
		fifo_pop(t);
		close_after_flush(t, "quit");
		return;
	case SLOT_BDAT:
	case SLOT_OTHER:
	default:
		relay_reply(t, io, p, n);
		break;
	}
	fifo_pop(t);
	/* RFC 5321 section 3.8: 421 means the backend is closing. */
	if (code == 421)
		close_after_flush(t, "backend sent 421");
}

/* Whether the reply for slot s may make the gateway send the backend a
 * command of its own. */
static int
slot_sends(enum slot s)
{
	return (s == SLOT_BANNER || s == SLOT_BANNER_HIDDEN || s == SLOT_EHLO ||
	    s == SLOT_XC_EHLO || (s >= SLOT_UP_BANNER && s <= SLOT_UP_AUTH));
}

/* Take complete replies from backend_in. Returns 1 if any was. */
static int
backend_input(struct smtp *t, struct smtp_io *io)
{
	size_t len;
	int code, r, any = 0;

	/* Egress: between the 220 to STARTTLS and the handshake nothing may
	 * come in plaintext (see upstream_reply()). */
	if (t->want_backend_tls && buf_len(io->backend_in) > 0) {
		logf_(t, SMTP_LOG_WARN, "upstream sent bytes after its 220 to "
		    "STARTTLS");
		smtp_abort(t, io, ABORT_UPSTREAM);
		return (1);
	}
	while (t->phase != PHASE_CLOSED && buf_len(io->backend_in) > 0) {
		emit_local(t, io);
		r = smtp_reply(buf_head(io->backend_in), buf_len(io->backend_in),
		    &len, &code);
		if (r == 0)
			break;
		if (r == -1) {
			logf_(t, SMTP_LOG_WARN, "backend sent an invalid reply");
			smtp_abort(t, io, ABORT_BACKEND_PROTOCOL);
			return (1);
		}
		if (t->count == 0 || fifo_head(t) >= SLOT_LOCAL) {
			if (t->count == 0 && code == 421) {
				/* An unsolicited 421 may come at any time. */
				relay_reply(t, io, buf_head(io->backend_in),
				    len);
				buf_consume(io->backend_in, len);
				close_after_flush(t, "backend sent 421");
				return (1);
			}
			if (t->count == 0) {
				logf_(t, SMTP_LOG_WARN, "backend sent a reply "
				    "nobody asked for");
				smtp_abort(t, io, ABORT_BACKEND_PROTOCOL);
				return (1);
			}
			break;	/* a local reply is waiting for room */
		}
		/* The rewritten EHLO reply adds at most one short line; a
		 * rejected EHLO sends a HELO to the backend, a greeting may
		 * start XCLIENT. */
		if (buf_room(io->to_client) < len + 640 ||
		    (slot_sends(fifo_head(t)) && buf_room(io->to_backend) < 2048))
			break;
		backend_reply(t, io, buf_head(io->backend_in), len, code);
		buf_consume(io->backend_in, len);
		any = 1;
	}
	return (emit_local(t, io) || any);
}

/* Public interface */

/* An address as XCLIENT wants it: xtext of "1.2.3.4" or "IPV6:...". */
static int
xclient_addr(const struct sockaddr *sa, const char *addr_kw,
    const char *port_kw, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port;
	int n;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		n = snprintf(out, len, "%s=%s %s=%u", addr_kw, host, port_kw, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		n = snprintf(out, len, "%s=IPV6:%s %s=%u", addr_kw, host, port_kw,
		    port);
	} else {
		return (-1);
	}
	/* Addresses and ports hold no "+", "=" or byte outside 33..126, so
	 * their xtext is themselves. */
	return (n > 0 && (size_t)n < len ? 0 : -1);
}

void
smtp_set_identity(struct smtp *t, const struct sockaddr *client,
    const struct sockaddr *local)
{
	if (xclient_addr(client, "ADDR", "PORT", t->xc_client,
	    sizeof(t->xc_client)) == -1)
		strcpy(t->xc_client, "ADDR=[UNAVAILABLE]");
	if (local == NULL || xclient_addr(local, "DESTADDR", "DESTPORT",
	    t->xc_local, sizeof(t->xc_local)) == -1)
		t->xc_local[0] = '\0';
}

void
smtp_init(struct smtp *t, const struct smtp_conf *c, smtp_log_fn log,
    void *log_arg)
{
	memset(t, 0, sizeof(*t));
	t->conf = c;
	t->log = log;
	t->log_arg = log_arg;
	t->pending_abort = -1;
	t->phase = PHASE_TLS_WAIT;
}

void
smtp_start(struct smtp *t, struct smtp_io *io)
{
	switch (t->conf->mode) {
	case SMTP_MODE_STARTTLS:
		putf(io->to_client, "220 %s ESMTP\r\n", t->conf->hostname);
		t->phase = PHASE_PLAIN;
		break;
	case SMTP_MODE_OPPORTUNISTIC:
		t->want_backend = 1;
		fifo_push(t, SLOT_BANNER);
		t->phase = PHASE_COMMAND;
		break;
	case SMTP_MODE_IMPLICIT:
		t->phase = PHASE_TLS_WAIT;
		break;
	case SMTP_MODE_EGRESS:
		/* The app is greeted once the upstream is secured. */
		t->want_backend = 1;
		fifo_push(t, SLOT_UP_BANNER);
		t->phase = PHASE_COMMAND;
		break;
	}
}

void
smtp_backend_tls_done(struct smtp *t, struct smtp_io *io)
{
	t->backend_tls = 1;
	/* After STARTTLS, whatever the upstream said before is forgotten and
	 * EHLO is sent anew (RFC 3207 section 4.2); with implicit TLS its
	 * greeting is still to come. */
	if (t->count == 0) {
		putf(io->to_backend, "EHLO %s\r\n", t->conf->helo);
		fifo_push(t, SLOT_UP_EHLO);
	}
}

void
smtp_tls_done(struct smtp *t, struct smtp_io *io)
{
	t->tls = 1;
	t->starttls_sent = 0;
	t->helo_done = 0;
	t->chunking = 0;
	t->exts[0] = '\0';
	t->ehlo_arg[0] = '\0';
	t->phase = PHASE_COMMAND;
	if (t->conf->mode == SMTP_MODE_IMPLICIT) {
		t->want_backend = 1;
		fifo_push(t, SLOT_BANNER);
	}
	if (t->pending_abort != -1)
		smtp_abort(t, io, (enum smtp_abort)t->pending_abort);
}

void
smtp_abort(struct smtp *t, struct smtp_io *io, enum smtp_abort why)
{
	if (t->phase == PHASE_CLOSED)
		return;
	if (t->starttls_sent) {
		/* The client is starting TLS: the 421 must travel inside it,
		 * so it waits for smtp_tls_done(). */
		t->pending_abort = (int)why;
		return;
	}
	/* Before an implicit handshake the client cannot read plaintext. */
	if (t->tls || t->conf->mode != SMTP_MODE_IMPLICIT)
		putf(io->to_client, abort_replies[why], t->conf->hostname);
	close_after_flush(t, smtp_abort_names[why]);
}

int
smtp_run(struct smtp *t, struct smtp_io *io)
{
	int any = 0, progress;

	do {
		progress = 0;
		if (t->phase == PHASE_CLOSED)
			break;
		progress |= backend_input(t, io);
		if (t->phase == PHASE_CLOSED)
			break;
		progress |= client_input(t, io);
		progress |= emit_local(t, io);
		any |= progress;
	} while (progress);

	if (t->phase == PHASE_CLOSED)
		return (any);
	/* Every complete reply was taken above: a backend that is gone now
	 * leaves the session without a server (RFC 5321 section 3.8). */
	if (io->backend_eof) {
		smtp_abort(t, io, ABORT_BACKEND_CLOSED);
		return (1);
	}
	if (io->client_eof) {
		if (t->phase == PHASE_DATA || t->phase == PHASE_BDAT) {
			/* An unfinished message is abandoned: the backend never
			 * sees its end (RFC 5321 section 4.1.1.5). */
			close_after_flush(t, "client closed during message");
			return (1);
		}
		/* A client that half-closed after QUIT still gets its replies
		 * before the close. */
		if (t->count == 0) {
			close_after_flush(t, "client closed");
			return (1);
		}
	}
	return (any);
}

int
smtp_wants_client_input(const struct smtp *t)
{
	switch (t->phase) {
	case PHASE_TLS_WAIT:
	case PHASE_QUIT:
	case PHASE_CLOSED:
	case PHASE_MAX:
		return (0);
	default:
		return (1);
	}
}

int
smtp_awaits_backend(const struct smtp *t)
{
	return (t->count > 0 && fifo_head(t) < SLOT_LOCAL);
}
