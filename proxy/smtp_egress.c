/*
 * The tracker's egress half (DESIGN.md, the egress listener): the upstream
 * is secured and authenticated before the app is greeted, and the app's
 * EHLO and AUTH are answered with what holds through the gateway.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smtp_int.h"

/*
 * Egress: the app talks to the gateway, which is already authenticated
 * upstream. Its EHLO and HELO are answered with what holds through the
 * gateway (after an RSET upstream, as a new EHLO resets a transaction); its
 * own AUTH is taken and ignored, or refused; STARTTLS is not offered. The
 * rest is relayed. Returns as smtp_command_relay().
 */
int
smtp_egress_command(struct smtp *t, struct smtp_io *io, const struct cmd *c,
    size_t used)
{
	const char *sp;
	size_t alen;

	switch (c->verb) {
	case VERB_EHLO:
	case VERB_HELO:
		if (c->arg_len == 0) {
			smtp_fifo_push(t, LOCAL_501_SYNTAX);
			return (0);
		}
		smtp_put(io->to_backend, "RSET\r\n", 6);
		smtp_fifo_push(t, c->verb == VERB_EHLO ? SLOT_APP_EHLO : SLOT_APP_HELO);
		t->sync = 1;
		return (0);
	case VERB_STARTTLS:
		smtp_fifo_push(t, LOCAL_502);
		return (0);
	case VERB_AUTH:
		break;
	default:
		return (smtp_command_relay(t, io, c, used));
	}
	if (t->conf->app_auth == 1) {
		smtp_fifo_push(t, LOCAL_502);
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
		smtp_fifo_push(t, LOCAL_504);
		return (0);
	}
	if (t->app_auth_left == 0) {
		smtp_fifo_push(t, LOCAL_235);
		return (0);
	}
	smtp_fifo_push(t, t->app_auth_left == 2 ? LOCAL_334_USER :
	    alen == 5 && strncasecmp(c->arg, "LOGIN", 5) == 0 ? LOCAL_334_PASS :
	    LOCAL_334);
	t->phase = PHASE_APP_AUTH;
	return (0);
}

/* Egress: one line of an app's AUTH exchange, taken and dropped. */
void
smtp_egress_auth_line(struct smtp *t, const char *p, size_t len)
{
	if (len == 1 && p[0] == '*') {
		smtp_fifo_push(t, LOCAL_501_CANCEL);
		t->phase = PHASE_COMMAND;
		return;
	}
	if (--t->app_auth_left > 0) {
		smtp_fifo_push(t, LOCAL_334_PASS);
		return;
	}
	smtp_fifo_push(t, LOCAL_235);
	t->phase = PHASE_COMMAND;
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
	smtp_put(io->to_backend, prefix, strlen(prefix));
	smtp_put(io->to_backend, enc, strlen(enc));
	smtp_put(io->to_backend, "\r\n", 2);
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
		smtp_ext_add(t, k, kw);
		if (u + klen + 2 > sizeof(t->up_ehlo))
			continue;
		memcpy(t->up_ehlo + u, k, klen);
		u += klen;
		t->up_ehlo[u++] = '\n';
		t->up_ehlo[u] = '\0';
	}
}

/* Egress: the app's EHLO reply, from what the upstream offers. */
void
smtp_egress_ehlo_reply(struct smtp *t, struct smtp_io *io)
{
	const char *p = t->up_ehlo, *nl;
	/* For apps that will not send mail without authenticating: AUTH is
	 * offered, and whatever they send is taken and ignored. */
	int offer = t->conf->app_auth == 2;

	smtp_put(io->to_client, "250", 3);
	smtp_put(io->to_client, *p != '\0' || offer ? "-" : " ", 1);
	smtp_put(io->to_client, t->conf->hostname, strlen(t->conf->hostname));
	smtp_put(io->to_client, "\r\n", 2);
	for (; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		smtp_put(io->to_client, nl[1] != '\0' || offer ? "250-" : "250 ", 4);
		smtp_put(io->to_client, p, (size_t)(nl - p));
		smtp_put(io->to_client, "\r\n", 2);
	}
	if (offer)
		smtp_put(io->to_client, "250 AUTH PLAIN LOGIN\r\n", 22);
}

/* Egress: a reply during the upstream's setup (greeting, EHLO, STARTTLS,
 * AUTH). Nothing of the app's passes before it completes, and it never
 * goes on without TLS. */
void
smtp_egress_reply(struct smtp *t, struct smtp_io *io, const char *p, size_t n,
    int code)
{
	enum slot s = smtp_fifo_head(t);
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
		smtp_putf(io->to_backend, "EHLO %s\r\n", c->helo);
		smtp_fifo_replace(t, SLOT_UP_EHLO);
		return;
	case SLOT_UP_EHLO:
		if (code != 250) {
			why = "refused EHLO";
			break;
		}
		if (!t->backend_tls) {
			/* Never a plaintext fallback. */
			if (!smtp_ehlo_params(p, n, "STARTTLS", params,
			    sizeof(params))) {
				why = "does not offer STARTTLS";
				break;
			}
			smtp_put(io->to_backend, "STARTTLS\r\n", 10);
			smtp_fifo_replace(t, SLOT_UP_STARTTLS);
			return;
		}
		up_ehlo_record(t, p, n);
		if (c->auth != 0) {
			if (!smtp_ehlo_params(p, n, "AUTH", params, sizeof(params)) ||
			    strcasestr(params, c->auth == 1 ? " PLAIN " :
			    " LOGIN ") == NULL) {
				smtp_logf(t, SMTP_LOG_WARN, "upstream does not offer "
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
				smtp_put(io->to_backend, "AUTH LOGIN\r\n", 12);
			}
			smtp_fifo_replace(t, SLOT_UP_AUTH);
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
		smtp_fifo_pop(t);
		t->want_backend_tls = 1;
		return;
	case SLOT_UP_AUTH:
		if (code == 334 && c->auth == 2 && t->auth_step < 2) {
			up_auth_send(io, "", t->auth_step++ == 0 ?
			    &c->auth_user : &c->auth_pass, 1);
			return;
		}
		if (code != 235) {
			smtp_logf(t, SMTP_LOG_WARN, "upstream refused AUTH %s with "
			    "%d", mech, code);
			why = "refused AUTH";
			break;
		}
		goto ready;
	default:
		break;
	}
	smtp_logf(t, SMTP_LOG_WARN, "upstream %s (%d)", why ? why : "failed", code);
	smtp_fifo_pop(t);
	smtp_abort(t, io, ABORT_UPSTREAM);
	return;

ready:
	/* TLS is up and verified, AUTH done: the app is greeted now. */
	smtp_fifo_pop(t);
	t->greeted = 1;
	t->helo_done = 0;
	smtp_putf(io->to_client, "220 %s ESMTP\r\n", c->hostname);
	t->replies[2]++;
	smtp_logf(t, SMTP_LOG_DEBUG, "upstream ready");
}

void
smtp_backend_tls_done(struct smtp *t, struct smtp_io *io)
{
	t->backend_tls = 1;
	/* After STARTTLS, whatever the upstream said before is forgotten and
	 * EHLO is sent anew (RFC 3207 section 4.2); with implicit TLS its
	 * greeting is still to come. */
	if (t->count == 0) {
		smtp_putf(io->to_backend, "EHLO %s\r\n", t->conf->helo);
		smtp_fifo_push(t, SLOT_UP_EHLO);
	}
}
