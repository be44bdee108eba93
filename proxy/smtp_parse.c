/*
 * The tracker's parsers: command lines, replies (RFC 5321 section 4.2),
 * BDAT arguments (RFC 3030) and EHLO keywords. Pure functions over byte
 * spans, which the fuzz targets drive directly.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "smtp_int.h"

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

void
smtp_cmd_parse(struct cmd *c, const char *line, size_t len)
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

/*
 * Parse "BDAT size [LAST]" (RFC 3030 section 3). Returns 0 and fills size
 * and last, or -1 when the arguments are not of that form.
 */
int
smtp_bdat_parse(const struct cmd *c, uint64_t *size_r, int *last_r)
{
	const char *p = c->arg, *end;
	uint64_t n = 0;

	if (p == NULL || c->arg_len == 0)
		return (-1);
	end = p + c->arg_len;
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

/*
 * The parameters of an EHLO keyword, e.g. XCLIENT's attribute names, copied
 * to out with spaces around them (" NAME ADDR "). Returns 1 when the reply
 * offers the keyword.
 */
int
smtp_ehlo_params(const char *p, size_t n, const char *kw, char *out, size_t outlen)
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
