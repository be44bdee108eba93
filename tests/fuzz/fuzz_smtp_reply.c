/*
 * fuzz_smtp_reply: smtp_line() and smtp_reply(), the parsers the tracker
 * reads every command and every backend reply with, over arbitrary bytes.
 *
 * Besides what each result promises (lengths within the input, a line ends
 * at its first LF, a reply is lines of one code, the last not continued), a
 * parser that reads a stream must decide the same way however the stream is
 * cut: a prefix of the input never gives a different complete answer, and
 * once a reply is complete or invalid, more bytes do not change that. The
 * tracker relies on this when bytes arrive one at a time.
 *
 * Input: byte 0 picks smtp_line()'s max; the rest is the span parsed.
 */
#include <stdio.h>
#include <string.h>

#include "../../proxy/smtp.h"
#include "fuzz.h"

#define INPUT_MAX	(SMTP_REPLY_MAX + 2 * SMTP_REPLY_LINE)

static void
check_line(const char *p, size_t n, size_t max)
{
	size_t len = (size_t)-1, used = (size_t)-1, scan = n < max ? n : max;
	const char *lf = memchr(p, '\n', scan);
	int r = smtp_line(p, n, max, &len, &used);

	switch (r) {
	case 1:
		FUZZ_CHECK("line", lf != NULL && used == (size_t)(lf - p) + 1,
		    "used %zu, first LF at %td", used, lf ? lf - p : -1);
		FUZZ_CHECK("line", used <= n && used <= max && len < used &&
		    len + 2 >= used, "len %zu used %zu n %zu max %zu", len, used,
		    n, max);
		FUZZ_CHECK("line", len + 2 != used || p[len] == '\r',
		    "CR stripped that is not there");
		FUZZ_CHECK("line", len + 1 != used || len == 0 ||
		    p[len - 1] != '\r', "a CR before LF kept in the line");
		break;
	case 0:
		FUZZ_CHECK("line", lf == NULL && n < max,
		    "wants more with %zu bytes, max %zu, LF %s", n, max,
		    lf ? "present" : "absent");
		break;
	case -1:
		FUZZ_CHECK("line", lf == NULL && n >= max,
		    "too long with %zu bytes, max %zu, LF %s", n, max,
		    lf ? "present" : "absent");
		break;
	default:
		FUZZ_CHECK("line", 0, "returned %d", r);
	}
}

/* What a complete reply must look like. */
static void
check_reply_shape(const char *p, size_t len, int code)
{
	size_t off = 0, lf;
	char c3[4];

	FUZZ_CHECK("reply", code >= 200 && code <= 599, "code %d", code);
	FUZZ_CHECK("reply", len >= 4 && len <= SMTP_REPLY_MAX &&
	    p[len - 1] == '\n', "length %zu", len);
	snprintf(c3, sizeof(c3), "%03d", code);
	while (off < len) {
		const char *e = memchr(p + off, '\n', len - off);

		FUZZ_CHECK("reply", e != NULL, "no LF after offset %zu", off);
		lf = (size_t)(e - p);
		FUZZ_CHECK("reply", lf - off + 1 <= SMTP_REPLY_LINE,
		    "a line of %zu bytes", lf - off + 1);
		FUZZ_CHECK("reply", lf - off >= 3 && memcmp(p + off, c3, 3) == 0,
		    "a line at %zu without code %s", off, c3);
		FUZZ_CHECK("reply", memchr(p + off, '\0', lf - off) == NULL,
		    "a NUL in a line");
		/* A CR only as part of the line's CRLF. */
		FUZZ_CHECK("reply", lf - off < 4 || memchr(p + off, '\r',
		    lf - off - 1) == NULL, "a CR inside a line");
		if (lf + 1 < len)
			FUZZ_CHECK("reply", lf - off >= 4 && p[off + 3] == '-',
			    "a line at %zu ends the reply early", off);
		else
			FUZZ_CHECK("reply", lf - off == 3 ||
			    (lf - off == 4 && p[off + 3] == '\r') ||
			    p[off + 3] == ' ', "the last line is continued");
		off = lf + 1;
	}
}

/* The answer for a prefix of k bytes, against the whole one. */
static void
check_prefix(const char *p, size_t k, int r, size_t len, int code)
{
	size_t klen = 0;
	int kr, kcode = 0;

	kr = smtp_reply(p, k, &klen, &kcode);
	if (r == 1 && k >= len)
		FUZZ_CHECK("reply-stream", kr == 1 && klen == len &&
		    kcode == code, "%zu bytes give %d (len %zu), all of them 1 "
		    "(len %zu)", k, kr, klen, len);
	else if (r == 1)
		FUZZ_CHECK("reply-stream", kr == 0, "%zu bytes give %d, all of "
		    "them a reply of %zu", k, kr, len);
	else if (kr == 1)
		FUZZ_CHECK("reply-stream", 0, "%zu bytes give a reply of %zu, "
		    "all of them %d", k, klen, r);
	else if (kr == -1)
		FUZZ_CHECK("reply-stream", r == -1, "%zu bytes are invalid, all "
		    "of them %d", k, r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t maxes[] = { 0, 1, 2, 3, 4, 8, 512, SMTP_REPLY_LINE };
	const char *p;
	size_t n, len = 0, k, i;
	int r, code = 0;

	if (size < 1)
		return (0);
	p = (const char *)data + 1;
	n = size - 1;
	if (n > INPUT_MAX)
		n = INPUT_MAX;

	check_line(p, n, maxes[data[0] & 7]);
	check_line(p, n, n);
	check_line(p, n, n + 1);
	check_line(p, n, (size_t)-1);

	r = smtp_reply(p, n, &len, &code);
	FUZZ_CHECK("reply", r >= -1 && r <= 1, "returned %d", r);
	if (r == 1)
		check_reply_shape(p, len, code);
	else if (r == 0)
		FUZZ_CHECK("reply", n < SMTP_REPLY_MAX, "wants more after %zu "
		    "bytes", n);

	/* Every prefix for a short input; for a long one, the prefixes that
	 * end at a line's end or one byte either side of it. */
	if (n <= 600) {
		for (k = 0; k < n; k++)
			check_prefix(p, k, r, len, code);
	} else {
		for (i = 0; i < n; i++) {
			if (p[i] != '\n')
				continue;
			check_prefix(p, i, r, len, code);
			check_prefix(p, i + 1, r, len, code);
			if (i + 2 <= n)
				check_prefix(p, i + 2, r, len, code);
		}
		check_prefix(p, n - 1, r, len, code);
	}
	return (0);
}
