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

#include "smtp_int.h"

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

void
smtp_logf(struct smtp *t, enum smtp_log_level lvl, const char *fmt, ...)
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

/* Whether a command may still be queued: the largest takes two slots
 * (STARTTLS and the hidden banner behind it). */
static int
fifo_full(const struct smtp *t)
{
	return (t->count + 2 > SMTP_FIFO);
}

void
smtp_fifo_push(struct smtp *t, enum slot s)
{
	t->slots[(t->head + t->count) % SMTP_FIFO] = (uint8_t)s;
	t->count++;
}

enum slot
smtp_fifo_head(const struct smtp *t)
{
	return ((enum slot)t->slots[t->head]);
}

void
smtp_fifo_pop(struct smtp *t)
{
	t->head = (t->head + 1) % SMTP_FIFO;
	t->count--;
	if (t->count == 0)
		t->sync = 0;
}

void
smtp_fifo_replace(struct smtp *t, enum slot s)
{
	t->slots[t->head] = (uint8_t)s;
}

/* Output */

int
smtp_put(struct buf *b, const char *p, size_t n)
{
	return (buf_append(b, p, n));
}

/* Append a reply template with each "%s" replaced by host (the templates
 * are data, not printf formats). Returns 0, or -1 when it does not fit. */
int
smtp_putf(struct buf *b, const char *tmpl, const char *host)
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
	return (smtp_put(b, tmp, n + l));
}

void
smtp_close_after_flush(struct smtp *t, const char *reason)
{
	t->phase = PHASE_CLOSED;
	t->want_close = 1;
	/* A closing session starts no handshake. */
	t->want_tls = t->want_backend_tls = 0;
	if (t->close_reason == NULL)
		t->close_reason = reason;
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

void
smtp_ext_add(struct smtp *t, const char *kw, size_t n)
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

/* Queue a command to the backend: its line with CRLF, and its slot. */
static void
forward(struct smtp *t, struct smtp_io *io, const struct cmd *c, enum slot s)
{
	smtp_put(io->to_backend, c->line, c->len);
	smtp_put(io->to_backend, "\r\n", 2);
	smtp_fifo_push(t, s);
}

/* The client sent STARTTLS (its line is the first used bytes of client_in)
 * and may start TLS: whatever followed the line in plaintext is discarded
 * here, and only here (CVE-2011-0411). */
static void
accept_starttls(struct smtp *t, struct smtp_io *io, size_t used)
{
	size_t n = buf_len(io->client_in) - used;

	if (n > 0)
		smtp_logf(t, SMTP_LOG_WARN, "discarded %zu bytes sent after "
		    "STARTTLS in plaintext", n);
	buf_consume(io->client_in, buf_len(io->client_in));
	smtp_fifo_push(t, LOCAL_STARTTLS);
	t->phase = PHASE_TLS_WAIT;
	/* RFC 3207 section 4.2 and 6: the backend session begins inside TLS,
	 * with nothing said before it. It is connected now so that its banner
	 * arrives during the handshake. */
	if (t->conf->mode == SMTP_MODE_STARTTLS) {
		t->want_backend = 1;
		smtp_fifo_push(t, SLOT_BANNER_HIDDEN);
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
			smtp_fifo_push(t, LOCAL_501_SYNTAX);
		else
			smtp_fifo_push(t, c->verb == VERB_EHLO ? LOCAL_EHLO :
			    LOCAL_HELO);
		break;
	case VERB_NOOP:
	case VERB_RSET:
		smtp_fifo_push(t, LOCAL_OK);
		break;
	case VERB_QUIT:
		smtp_fifo_push(t, LOCAL_QUIT);
		t->phase = PHASE_QUIT;
		break;
	case VERB_STARTTLS:
		if (c->arg != NULL)
			smtp_fifo_push(t, LOCAL_501_STARTTLS);
		else {
			accept_starttls(t, io, used);
			return (1);
		}
		break;
	default:
		smtp_fifo_push(t, LOCAL_530_TLS_FIRST);
		break;
	}
	return (0);
}

/* A command relayed to the backend, or refused on its way there (DESIGN.md
 * rule 5). As command_plain(), returns 1 when it consumed client_in. */
int
smtp_command_relay(struct smtp *t, struct smtp_io *io, const struct cmd *c,
    size_t used)
{
	uint64_t size;
	int last;

	switch (c->verb) {
	case VERB_STARTTLS:
		if (t->tls || t->conf->mode != SMTP_MODE_OPPORTUNISTIC)
			smtp_fifo_push(t, LOCAL_503_TLS_ACTIVE);
		else if (c->arg != NULL)
			smtp_fifo_push(t, LOCAL_501_STARTTLS);
		else {
			accept_starttls(t, io, used);
			return (1);
		}
		return (0);
	case VERB_XCLIENT:
	case VERB_XFORWARD:
		/* The backend trusts the gateway's address; these would let
		 * any client claim another identity. */
		smtp_fifo_push(t, LOCAL_502);
		return (0);
	case VERB_EHLO:
	case VERB_HELO:
		if (c->arg_len == 0 || c->arg_len >= sizeof(t->ehlo_arg)) {
			smtp_fifo_push(t, LOCAL_501_SYNTAX);
			return (0);
		}
		memcpy(t->ehlo_arg, c->arg, c->arg_len);
		t->ehlo_arg[c->arg_len] = '\0';
		t->helo_done = 0;
		t->sync = 1;
		if (c->verb == VERB_HELO) {
			forward(t, io, c, SLOT_HELO);
		} else if (t->no_ehlo) {
			smtp_put(io->to_backend, "HELO ", 5);
			smtp_put(io->to_backend, c->arg, c->arg_len);
			smtp_put(io->to_backend, "\r\n", 2);
			smtp_fifo_push(t, SLOT_HELO_FALLBACK);
		} else {
			forward(t, io, c, SLOT_EHLO);
		}
		return (0);
	case VERB_AUTH:
		if (!t->tls) {
			smtp_fifo_push(t, LOCAL_538_AUTH_TLS);
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
			smtp_fifo_push(t, LOCAL_502);
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
		smtp_fifo_push(t, LOCAL_503_HELO_FIRST);
		if (c->verb == VERB_BDAT && smtp_bdat_parse(c, &size, &last) == 0) {
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
		if (smtp_bdat_parse(c, &size, &last) == -1) {
			smtp_fifo_push(t, LOCAL_501_SYNTAX);
			break;
		}
		t->bdat_left = size;
		if (!t->chunking) {
			/* A backend without CHUNKING would read the chunk as
			 * commands: answer here and drop the chunk, as RFC 3030
			 * asks of a refused BDAT. */
			smtp_fifo_push(t, LOCAL_502);
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
			smtp_fifo_push(t, LOCAL_500_LONG);
		t->skip_line = lf == NULL;
		buf_consume(io->client_in, lf ? (size_t)(lf - p) + 1 : n);
		return (1);
	}

	/* A bare CR or a NUL inside a command line is never forwarded. */
	if (t->phase != PHASE_AUTH && t->phase != PHASE_APP_AUTH && (len == 0 ||
	    memchr(p, '\r', len) != NULL || memchr(p, '\0', len) != NULL)) {
		buf_consume(io->client_in, used);
		smtp_fifo_push(t, LOCAL_500_SYNTAX);
		return (1);
	}

	if (t->phase == PHASE_AUTH) {
		/* An answer to a 334 is not a command (RFC 4954 section 4). */
		smtp_put(io->to_backend, p, len);
		smtp_put(io->to_backend, "\r\n", 2);
		buf_consume(io->client_in, used);
		t->phase = PHASE_COMMAND;
		return (1);
	}

	t->active = 1;
	if (t->phase == PHASE_APP_AUTH) {
		smtp_egress_auth_line(t, p, len);
		buf_consume(io->client_in, used);
		return (1);
	}

	/* The line stays in client_in until it is handled: it is read in
	 * place, and accept_starttls() sees exactly what followed it. */
	smtp_cmd_parse(&c, p, len);
	if (t->phase == PHASE_PLAIN)
		r = command_plain(t, io, &c, used);
	else if (t->conf->mode == SMTP_MODE_EGRESS)
		r = smtp_egress_command(t, io, &c, used);
	else
		r = smtp_command_relay(t, io, &c, used);
	if (!r)
		buf_consume(io->client_in, used);
	return (1);
}

/* DATA body bytes, through the scanner. Returns 1 if it consumed any. */
static int
body_input(struct smtp *t, struct smtp_io *io)
{
	size_t moved = 0, used, n = buf_len(io->client_in);
	int ended, was_bare = t->body.bare;

	/* Storage first: neither the move nor the scanner's output can then
	 * fail half-way. */
	if (buf_tail(io->to_backend) == NULL)
		return (0);
	/* What passes unchanged into an empty buffer is handed over rather
	 * than copied (buf_move): the bulk of a large message. */
	if (buf_len(io->to_backend) == 0) {
		if (n > buf_room(io->to_backend))
			n = buf_room(io->to_backend);
		if ((moved = body_pass(&t->body, buf_head(io->client_in),
		    n)) > 0)
			(void)buf_move(io->to_backend, io->client_in, moved);
	}
	used = body_scan(&t->body, buf_head(io->client_in),
	    buf_len(io->client_in), io->to_backend, &ended);
	buf_consume(io->client_in, used);
	/* A held CR, or a dropped body, wrote nothing: no storage waits. */
	if (buf_len(io->to_backend) == 0)
		buf_fini(io->to_backend);
	if (t->body.bare && !was_bare)
		smtp_logf(t, SMTP_LOG_INFO, "bare CR or LF in message body, %s",
		    t->conf->bare_reject ? "rejecting" : "normalized");
	if (ended && t->body.bare && t->body.drop) {
		/* A rejected body never got its end of data, and the backend
		 * is still reading one: nothing more may reach it. The
		 * transaction dies with the session. */
		t->phase = PHASE_QUIT;
		smtp_fifo_push(t, LOCAL_BARE_REJECT);
	} else if (ended) {
		t->phase = PHASE_COMMAND;
		smtp_fifo_push(t, SLOT_DATA_END);
	}
	return (moved + used > 0);
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
	if (t->phase != PHASE_BDAT)
		buf_consume(io->client_in, n);
	else if (buf_move(io->to_backend, io->client_in, n) == -1)
		return (0);
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
			smtp_logf(t, SMTP_LOG_WARN, "discarded %zu bytes sent after "
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
void
smtp_count_reply(struct smtp *t, struct smtp_io *io, char cls)
{
	if (cls >= '1' && cls <= '5')
		t->replies[cls - '0']++;
	if (cls != '5') {
		t->errors = 0;
		return;
	}
	if (t->conf->max_errors == 0 || ++t->errors < t->conf->max_errors ||
	    t->phase == PHASE_CLOSED)
		return;
	smtp_putf(io->to_client, "421 4.7.0 %s Too many errors, closing "
	    "connection\r\n", t->conf->hostname);
	t->replies[4]++;
	smtp_close_after_flush(t, "too many errors");
}

/* Emit local replies at the head of the FIFO. Returns 1 if any was. */
static int
emit_local(struct smtp *t, struct smtp_io *io)
{
	const char *host = t->conf->hostname;
	int any = 0;
	enum slot s;

	while (t->count > 0 && (s = smtp_fifo_head(t)) >= SLOT_LOCAL &&
	    t->phase != PHASE_CLOSED) {
		if (buf_room(io->to_client) < 640)
			break;
		if (s == LOCAL_EHLO_MIN)
			smtp_putf(io->to_client, !t->tls && t->conf->mode ==
			    SMTP_MODE_OPPORTUNISTIC ? "250-%s\r\n250 STARTTLS\r\n"
			    : "250 %s\r\n", host);
		else
			smtp_putf(io->to_client, local_replies[s - SLOT_LOCAL], host);
		smtp_fifo_pop(t);
		any = 1;
		if (s == LOCAL_STARTTLS)
			t->want_tls = t->starttls_sent = 1;
		else if (s == LOCAL_QUIT)
			smtp_close_after_flush(t, "quit");
		else if (s == LOCAL_BARE_REJECT)
			smtp_close_after_flush(t, "bare CR or LF in message body");
		smtp_count_reply(t, io, s == LOCAL_EHLO_MIN ? '2' :
		    local_replies[s - SLOT_LOCAL][0]);
	}
	return (any);
}

/* Copy a reply (a valid one: smtp_reply() said so) line by line, each
 * ending in CRLF. */
void
smtp_relay_reply(struct smtp *t, struct smtp_io *io, const char *p, size_t n)
{
	size_t off = 0, len, used;

	while (off < n && smtp_line(p + off, n - off, n - off, &len, &used) == 1) {
		smtp_put(io->to_client, p + off, len);
		smtp_put(io->to_client, "\r\n", 2);
		off += used;
	}
	smtp_count_reply(t, io, p[0]);
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
			smtp_ext_add(t, k, kw);
			if (nkept == sizeof(kept) / sizeof(kept[0]) - 1)
				continue;
		}
		kept[nkept] = line;
		kept_len[nkept++] = len;
	}
	if (pre_tls)
		kept[nkept] = "250 STARTTLS", kept_len[nkept++] = 12;
	/* Every line carries the reply's own code, the added one too. */
	for (i = 0; i < nkept; i++) {
		smtp_put(out, p, 3);
		smtp_put(out, i + 1 < nkept ? "-" : " ", 1);
		if (kept_len[i] > 4)
			smtp_put(out, kept[i] + 4, kept_len[i] - 4);
		smtp_put(out, "\r\n", 2);
	}
}

/* After the backend's 220: introduce the client with XCLIENT (Postfix's
 * XCLIENT_README) before any of its commands pass. */
static void
xclient_begin(struct smtp *t, struct smtp_io *io, enum slot banner)
{
	t->xc_relay = banner == SLOT_BANNER;
	smtp_putf(io->to_backend, "EHLO %s\r\n", t->conf->hostname);
	smtp_fifo_replace(t, SLOT_XC_EHLO);
}

static void
xclient_send(struct smtp *t, struct smtp_io *io, const char *p, size_t n,
    int code)
{
	char attrs[256];

	if (code != 250 || !smtp_ehlo_params(p, n, "XCLIENT", attrs, sizeof(attrs)) ||
	    strstr(attrs, " ADDR ") == NULL) {
		smtp_logf(t, SMTP_LOG_WARN, "backend does not offer XCLIENT ADDR "
		    "(EHLO got %d); refusing to relay with the gateway's "
		    "address", code);
		smtp_fifo_pop(t);
		smtp_abort(t, io, ABORT_BACKEND_XCLIENT);
		return;
	}
	/* PROTO=ESMTP: the client's HELO or EHLO is not known yet; it reaches
	 * the backend itself after the new 220. */
	smtp_put(io->to_backend, "XCLIENT ", 8);
	smtp_put(io->to_backend, t->xc_client, strlen(t->xc_client));
	if (strstr(attrs, " PROTO ") != NULL)
		smtp_put(io->to_backend, " PROTO=ESMTP", 12);
	if (t->xc_local[0] != '\0' && strstr(attrs, " DESTADDR ") != NULL &&
	    strstr(attrs, " DESTPORT ") != NULL) {
		smtp_put(io->to_backend, " ", 1);
		smtp_put(io->to_backend, t->xc_local, strlen(t->xc_local));
	}
	smtp_put(io->to_backend, "\r\n", 2);
	smtp_fifo_replace(t, SLOT_XC_REPLY);
}

/* Handle one complete backend reply for the slot at the head. */
static void
backend_reply(struct smtp *t, struct smtp_io *io, const char *p, size_t n,
    int code)
{
	enum slot s = smtp_fifo_head(t);
	int ok = code / 100 == 2;

	switch (s) {
	case SLOT_UP_BANNER:
	case SLOT_UP_EHLO:
	case SLOT_UP_STARTTLS:
	case SLOT_UP_AUTH:
		smtp_egress_reply(t, io, p, n, code);
		return;
	case SLOT_APP_EHLO:
	case SLOT_APP_HELO:
		/* The upstream's answer to our RSET stands for the EHLO. */
		if (!ok) {
			smtp_relay_reply(t, io, p, n);
			break;
		}
		t->helo_done = 1;
		if (s == SLOT_APP_EHLO)
			smtp_egress_ehlo_reply(t, io);
		else
			smtp_putf(io->to_client, "250 %s\r\n", t->conf->hostname);
		smtp_count_reply(t, io, '2');
		break;
	case SLOT_BANNER:
		if (t->conf->xclient && code == 220) {
			xclient_begin(t, io, s);
			return;
		}
		t->greeted = 1;
		smtp_relay_reply(t, io, p, n);
		break;
	case SLOT_XC_EHLO:
		xclient_send(t, io, p, n, code);
		return;
	case SLOT_XC_REPLY:
		if (code != 220) {
			smtp_logf(t, SMTP_LOG_WARN, "backend refused XCLIENT with %d",
			    code);
			smtp_fifo_pop(t);
			smtp_abort(t, io, ABORT_BACKEND_XCLIENT);
			return;
		}
		t->greeted = 1;
		if (t->xc_relay)
			smtp_relay_reply(t, io, p, n);
		break;
	case SLOT_BANNER_HIDDEN:
		if (t->conf->xclient && code == 220) {
			xclient_begin(t, io, s);
			return;
		}
		t->greeted = 1;
		if (code != 220) {
			smtp_logf(t, SMTP_LOG_WARN, "backend greeted with %d", code);
			smtp_fifo_pop(t);
			smtp_abort(t, io, ABORT_BACKEND_REFUSED);
			return;
		}
		break;
	case SLOT_EHLO:
		if (code == 500 || code == 502) {
			/* An RFC 821 server: say HELO for the client, and answer
			 * its EHLO with what holds through the gateway. */
			t->no_ehlo = 1;
			smtp_put(io->to_backend, "HELO ", 5);
			smtp_put(io->to_backend, t->ehlo_arg, strlen(t->ehlo_arg));
			smtp_put(io->to_backend, "\r\n", 2);
			smtp_fifo_replace(t, SLOT_HELO_FALLBACK);
			return;
		}
		if (ok) {
			ehlo_rewrite(t, io->to_client, p, n);
			smtp_count_reply(t, io, '2');
			t->helo_done = 1;
		} else {
			smtp_relay_reply(t, io, p, n);
		}
		break;
	case SLOT_HELO_FALLBACK:
		if (ok) {
			t->helo_done = 1;
			t->chunking = 0;
			t->exts[0] = '\0';
			smtp_fifo_replace(t, LOCAL_EHLO_MIN);
			emit_local(t, io);
			return;
		}
		smtp_relay_reply(t, io, p, n);
		break;
	case SLOT_HELO:
		if (ok) {
			t->helo_done = 1;
			t->chunking = 0;
			t->exts[0] = '\0';
		}
		smtp_relay_reply(t, io, p, n);
		break;
	case SLOT_DATA:
		smtp_relay_reply(t, io, p, n);
		if (code == 354) {
			t->phase = PHASE_DATA;
			body_init(&t->body, t->conf->bare_reject);
		}
		break;
	case SLOT_DATA_END:
	case SLOT_BDAT_LAST:
		smtp_relay_reply(t, io, p, n);
		if (ok)
			t->messages++;
		break;
	case SLOT_AUTH:
		smtp_relay_reply(t, io, p, n);
		if (code == 334) {
			/* The exchange goes on: the slot stays at the head. */
			t->phase = PHASE_AUTH;
			return;
		}
		/* Over, even if a 334 came just before: the next line is a
		 * command again. */
		if (t->phase == PHASE_AUTH)
			t->phase = PHASE_COMMAND;
		break;
	case SLOT_QUIT:
		smtp_relay_reply(t, io, p, n);
		smtp_fifo_pop(t);
		smtp_close_after_flush(t, "quit");
		return;
	case SLOT_BDAT:
	case SLOT_OTHER:
	default:
		smtp_relay_reply(t, io, p, n);
		break;
	}
	smtp_fifo_pop(t);
	/* RFC 5321 section 3.8: 421 means the backend is closing. */
	if (code == 421)
		smtp_close_after_flush(t, "backend sent 421");
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
	 * come in plaintext (see smtp_egress_reply()). */
	if (t->want_backend_tls && buf_len(io->backend_in) > 0) {
		smtp_logf(t, SMTP_LOG_WARN, "upstream sent bytes after its 220 to "
		    "STARTTLS");
		smtp_abort(t, io, ABORT_UPSTREAM);
		return (1);
	}
	while (t->phase != PHASE_CLOSED && buf_len(io->backend_in) > 0) {
		emit_local(t, io);
		if (t->starttls_sent)
			break;	/* the rest waits for the handshake */
		r = smtp_reply(buf_head(io->backend_in), buf_len(io->backend_in),
		    &len, &code);
		if (r == 0)
			break;
		if (r == -1) {
			smtp_logf(t, SMTP_LOG_WARN, "backend sent an invalid reply");
			smtp_abort(t, io, ABORT_BACKEND_PROTOCOL);
			return (1);
		}
		if (t->count == 0 || smtp_fifo_head(t) >= SLOT_LOCAL) {
			if (t->count == 0 && code == 421) {
				/* An unsolicited 421 may come at any time. */
				smtp_relay_reply(t, io, buf_head(io->backend_in),
				    len);
				buf_consume(io->backend_in, len);
				smtp_close_after_flush(t, "backend sent 421");
				return (1);
			}
			if (t->count == 0) {
				smtp_logf(t, SMTP_LOG_WARN, "backend sent a reply "
				    "nobody asked for");
				smtp_abort(t, io, ABORT_BACKEND_PROTOCOL);
				return (1);
			}
			break;	/* a local reply is waiting for room */
		}
		/* The rewritten EHLO reply adds at most one short line; a
		 * rejected EHLO sends a HELO to the backend, a greeting may
		 * start XCLIENT. */
		/* Bare LF line ends grow into CRLF: at most one byte per
		 * four-byte line. */
		if (buf_room(io->to_client) < len + len / 4 + 640 ||
		    (slot_sends(smtp_fifo_head(t)) && buf_room(io->to_backend) < 2048))
			break;
		backend_reply(t, io, buf_head(io->backend_in), len, code);
		buf_consume(io->backend_in, len);
		any = t->active = 1;
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
		smtp_putf(io->to_client, "220 %s ESMTP\r\n", t->conf->hostname);
		t->replies[2]++;
		t->phase = PHASE_PLAIN;
		break;
	case SMTP_MODE_OPPORTUNISTIC:
		t->want_backend = 1;
		smtp_fifo_push(t, SLOT_BANNER);
		t->phase = PHASE_COMMAND;
		break;
	case SMTP_MODE_IMPLICIT:
		t->phase = PHASE_TLS_WAIT;
		break;
	case SMTP_MODE_EGRESS:
		/* The app is greeted once the upstream is secured. */
		t->want_backend = 1;
		smtp_fifo_push(t, SLOT_UP_BANNER);
		t->phase = PHASE_COMMAND;
		break;
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
		smtp_fifo_push(t, SLOT_BANNER);
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
	if (t->tls || t->conf->mode != SMTP_MODE_IMPLICIT) {
		smtp_putf(io->to_client, abort_replies[why], t->conf->hostname);
		t->replies[4]++;
	}
	smtp_close_after_flush(t, smtp_abort_names[why]);
}

int
smtp_run(struct smtp *t, struct smtp_io *io)
{
	int any = 0, progress;

	do {
		progress = 0;
		if (t->phase == PHASE_CLOSED)
			break;
		/* While the client's STARTTLS handshake runs, nothing may reach
		 * it in plaintext and nothing it sent is executed
		 * (client_input() drops it): the backend's bytes (and its
		 * close) wait for smtp_tls_done(). */
		if (t->starttls_sent)
			return (any | client_input(t, io));
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
			smtp_close_after_flush(t, "client closed during message");
			return (1);
		}
		/* A client that half-closed after QUIT still gets its replies
		 * before the close. */
		if (t->count == 0) {
			smtp_close_after_flush(t, "client closed");
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
	return (t->count > 0 && smtp_fifo_head(t) < SLOT_LOCAL);
}
