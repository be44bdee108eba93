/*
 * fuzz_body: the DATA body scanner (proxy/body.c) over arbitrary bodies.
 *
 * The body is scanned five ways: whole into a session-sized buffer, cut in
 * two at a point the input picks, one byte at a time, through a small
 * output buffer that is drained whenever the scanner stops, and as the
 * session does it (body_pass() hands a clean run into an empty buffer
 * before body_scan() sees the rest). All five must write the same bytes
 * and find the end at the same place. Then, with drop
 * off (bare_newlines = normalize):
 *
 *  - the output has no bare CR or LF: every LF follows a CR, every CR is
 *    followed by an LF;
 *  - the scanner ends the body exactly where RFC 5321 section 4.1.1.4 does,
 *    at the first CRLF "." CRLF of the input (the DATA line's CRLF counts);
 *  - a lenient backend that ends a line at CR, LF or CRLF finds its first
 *    "." line exactly at the end of the output, or nowhere if not ended
 *    (the end of data it sees is the gateway's: no SMTP smuggling).
 *
 * With drop on (bare_newlines = reject), the end is found at the same place,
 * the output is the normalized output up to the first bare CR or LF, and
 * after one no "." line reaches the backend.
 *
 * Input: bytes 0-1 the cut point, byte 2 the small buffer's size; the rest
 * is the body.
 */
#include <stdlib.h>
#include <string.h>

#include "../../proxy/body.h"
#include "fuzz.h"

/* SESSION_BUF in session.c; the session's bulk direction has larger
 * buffers, and smaller ones only mean more backpressure here. */
#define CAP		(16 * 1024 + 512)
#define BODY_MAX	(64 * 1024)

struct scan {
	char	*out;		/* everything written, drained */
	size_t	 cap;
	size_t	 len;
	size_t	 end;		/* bytes consumed when it ended */
	int	 ended;
	int	 bare;
};

/* Drain b into s->out, as a session's flush does. */
static void
drain(struct scan *s, struct buf *b)
{
	size_t n = buf_len(b);

	if (n == 0)
		return;
	FUZZ_CHECK("harness", s->len + n <= s->cap, "the output grows past "
	    "twice the input");
	memcpy(s->out + s->len, buf_head(b), n);
	s->len += n;
	buf_consume(b, n);
}

/*
 * Scan in[0..n) offered in pieces: the scanner sees everything up to the
 * next cut, as the tracker offers all of client_in. cut == 0: whole.
 */
static void
scan(struct scan *s, const char *in, size_t n, int drop, size_t cap,
    size_t cut, int bytewise, int pass)
{
	struct body b;
	struct buf out;
	size_t off = 0, avail, used, before, moved, stalls = 0;
	int ended = 0;

	memset(s, 0, sizeof(*s));
	/* At most "..\r\n" for a byte: 2 per byte, plus what one call may
	 * write ahead of its input. */
	s->cap = 2 * n + 16;
	if ((s->out = malloc(s->cap)) == NULL)
		abort();
	buf_init(&out, cap);
	body_init(&b, drop);
	while (off < n && !ended) {
		if (bytewise)
			avail = off + 1;
		else if (cut > 0 && off < cut)
			avail = cut;
		else
			avail = n;
		moved = 0;
		if (pass && buf_len(&out) == 0) {
			moved = body_pass(&b, in + off, avail - off < cap ?
			    avail - off : cap);
			FUZZ_CHECK("body-pass", moved <= avail - off, "passed "
			    "%zu of %zu", moved, avail - off);
			if (buf_append(&out, in + off, moved) == -1)
				abort();
			off += moved;
		}
		before = buf_len(&out);
		used = body_scan(&b, in + off, avail - off, &out, &ended);
		FUZZ_CHECK("body-scan", used <= avail - off, "consumed %zu of "
		    "%zu", used, avail - off);
		FUZZ_CHECK("body-scan", buf_len(&out) <= cap, "output over "
		    "the buffer");
		FUZZ_CHECK("body-scan", !ended || used > 0, "ended on nothing");
		/* With the whole buffer free, each call makes progress. */
		FUZZ_CHECK("body-scan", moved > 0 || used > 0 ||
		    buf_len(&out) > before || before > 0, "no progress with "
		    "%zu bytes free", buf_room(&out));
		if (moved == 0 && used == 0 && buf_len(&out) == before)
			FUZZ_CHECK("body-scan", ++stalls < 4, "stalled");
		else
			stalls = 0;
		/* Without room the scanner stops: the session flushes. */
		if (used < avail - off || ended || bytewise || buf_room(&out) <
		    8)
			drain(s, &out);
		off += used;
	}
	drain(s, &out);
	buf_fini(&out);
	s->end = off;
	s->ended = ended;
	s->bare = b.bare;
}

/* Where RFC 5321 ends the body: just past the first CRLF.CRLF, counting the
 * CRLF that ended the DATA line. Returns 0 when it does not end. */
static size_t
strict_end(const char *in, size_t n)
{
	size_t i;

	if (n >= 3 && memcmp(in, ".\r\n", 3) == 0)
		return (3);
	for (i = 0; i + 5 <= n; i++)
		if (memcmp(in + i, "\r\n.\r\n", 5) == 0)
			return (i + 5);
	return (0);
}

/* Where a backend that ends lines at CR, LF or CRLF finds its first "."
 * line: the offset past that line's end, or 0. */
static size_t
lenient_end(const char *p, size_t n)
{
	size_t i = 0, start = 0, eol;

	while (i < n) {
		if (p[i] != '\r' && p[i] != '\n') {
			i++;
			continue;
		}
		/* A line p[start..i) ends here. */
		eol = i + ((p[i] == '\r' && i + 1 < n &&
		    p[i + 1] == '\n') ? 2 : 1);

		if (i - start == 1 && p[start] == '.')
			return (eol);
		i = start = eol;
	}
	return (0);
}

static void
check_normalized(const struct scan *s)
{
	size_t i;

	for (i = 0; i < s->len; i++) {
		if (s->out[i] == '\n')
			FUZZ_CHECK("body-bare", i > 0 && s->out[i - 1] == '\r',
			    "a bare LF at %zu of the output", i);
		if (s->out[i] == '\r')
			FUZZ_CHECK("body-bare", i + 1 < s->len &&
			    s->out[i + 1] == '\n', "a bare CR at %zu of the "
			    "output", i);
	}
}

static void
same(const struct scan *a, const struct scan *b, const char *how)
{
	FUZZ_CHECK("body-split", a->ended == b->ended && a->end == b->end &&
	    a->len == b->len && memcmp(a->out, b->out, a->len) == 0 &&
	    a->bare == b->bare, "scanned %s: ended %d at %zu, %zu bytes out; "
	    "whole: ended %d at %zu, %zu bytes out", how, b->ended, b->end,
	    b->len, a->ended, a->end, a->len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[] = { 5, 6, 7, 8, 9, 16, 64, 1000 };
	struct scan whole, part, bytes, small, passed, drop, drop_small;
	const char *in;
	size_t n, cut, cap, strict, lenient;

	if (size < 3)
		return (0);
	in = (const char *)data + 3;
	n = size - 3;
	if (n > BODY_MAX)
		n = BODY_MAX;
	cut = n > 0 ? ((size_t)data[0] << 8 | data[1]) % n : 0;
	cap = caps[data[2] & 7];

	scan(&whole, in, n, 0, CAP, 0, 0, 0);
	scan(&part, in, n, 0, CAP, cut, 0, 0);
	scan(&bytes, in, n, 0, CAP, 0, 1, 0);
	scan(&small, in, n, 0, cap, cut, 0, 0);
	scan(&passed, in, n, 0, cap, cut, 0, 1);
	same(&whole, &part, "in two");
	same(&whole, &bytes, "byte by byte");
	same(&whole, &small, "through a small buffer");
	same(&whole, &passed, "passing clean runs on");

	check_normalized(&whole);
	strict = strict_end(in, n);
	FUZZ_CHECK("body-end", whole.ended ? strict == whole.end : strict == 0,
	    "the scanner %s at %zu, RFC 5321 at %zu", whole.ended ? "ended" :
	    "did not end", whole.end, strict);
	if (whole.ended)
		FUZZ_CHECK("body-end", whole.len >= 3 && memcmp(whole.out +
		    whole.len - 3, ".\r\n", 3) == 0 && (whole.len == 3 ||
		    whole.out[whole.len - 4] == '\n'), "the output does not "
		    "end in CRLF.CRLF");
	lenient = lenient_end(whole.out, whole.len);
	FUZZ_CHECK("smuggling", whole.ended ? lenient == whole.len :
	    lenient == 0, "a lenient backend ends the body at %zu of %zu "
	    "output bytes (the gateway: %s)", lenient, whole.len,
	    whole.ended ? "at the end" : "not ended");

	scan(&drop, in, n, 1, CAP, cut, 0, 1);
	scan(&drop_small, in, n, 1, cap, 0, 0, 0);
	same(&drop, &drop_small, "with drop through a small buffer");
	FUZZ_CHECK("body-drop", drop.ended == whole.ended &&
	    drop.end == whole.end && drop.bare == whole.bare, "with drop: "
	    "ended %d at %zu, without: ended %d at %zu", drop.ended, drop.end,
	    whole.ended, whole.end);
	FUZZ_CHECK("body-drop", drop.len <= whole.len &&
	    memcmp(drop.out, whole.out, drop.len) == 0, "with drop the "
	    "output is not a prefix of the normalized one");
	if (!whole.bare)
		same(&whole, &drop, "with drop, no bare CR or LF");
	else
		FUZZ_CHECK("smuggling", lenient_end(drop.out, drop.len) == 0,
		    "a rejected body sends the backend an end of data");

	free(whole.out);
	free(part.out);
	free(bytes.out);
	free(small.out);
	free(passed.out);
	free(drop.out);
	free(drop_small.out);
	return (0);
}
