#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "body.h"

enum {
	BODY_BOL,		/* at the start of a line */
	BODY_TEXT,		/* inside a line */
	BODY_CR,		/* a CR is held: CRLF or a bare CR? */
	BODY_DOT,		/* a leading dot is held (a "first" line) */
	BODY_DOT_CR,		/* a leading dot and a CR are held */
};

/* Room kept free before handling one byte: the most one emits is "..\r\n". */
#define SPECIAL_ROOM	4

void
body_init(struct body *b, int drop)
{
	b->state = BODY_BOL;
	b->first = 1;
	b->bare = 0;
	b->drop = drop;
}

/*
 * The length of the longest prefix of p[0..n), read inside a line (p[0] is
 * neither CR nor LF), that goes to the backend unchanged: every CR in it is
 * followed by an LF, every LF follows a CR, and no line in it starts with a
 * dot (which could be the end of data). It stops at the first CR or LF
 * that breaks this, or at a CRLF whose next byte is not here yet; the state
 * machine handles what follows. With SSE2 (every x86-64) sixteen bytes are
 * checked at a time; the byte loop below is the definition.
 */
static size_t
clean_run(const char *p, size_t n)
{
	unsigned prev_cr = 0, prev_lf = 0;
	size_t i = 0;

#ifdef __SSE2__
	const __m128i vcr = _mm_set1_epi8('\r'), vlf = _mm_set1_epi8('\n');
	const __m128i vdot = _mm_set1_epi8('.');
	unsigned cr, lf, dot, crlf, bad;
	__m128i v;

	for (; i + 16 <= n; i += 16) {
		v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		cr = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, vcr));
		lf = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, vlf));
		dot = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, vdot));
		/* The LFs that end a CRLF. Where each problem starts,
		 * shifted two bits up so that a CR one or two bytes back
		 * still has a bit: a bare LF at its place, a bare CR one
		 * before the byte that is not LF, a dot after a CRLF two
		 * before the dot. */
		crlf = lf & ((cr << 1) | prev_cr);
		bad = ((lf & ~crlf) << 2) |
		    ((((cr << 1) | prev_cr) & ~lf & 0xffff) << 1) |
		    (((crlf << 1) | prev_lf) & dot & 0xffff);
		if (bad != 0)
			return (i + (size_t)__builtin_ctz(bad) - 2);
		prev_cr = cr >> 15;
		prev_lf = crlf >> 15;
	}
#endif
	for (; i < n; i++) {
		if (prev_cr && p[i] != '\n')
			return (i - 1);
		if (p[i] == '\n' && !prev_cr)
			return (i);
		if (prev_lf && p[i] == '.')
			return (i - 2);
		prev_cr = p[i] == '\r';
		prev_lf = p[i] == '\n';
	}
	/* A CR, or a CRLF, at the end: what comes next decides. */
	return (prev_cr ? n - 1 : prev_lf ? n - 2 : n);
}

/* Pass the clean run at in[0..n) over; the caller sends it. */
static size_t
pass_run(struct body *b, const char *in, size_t n)
{
	size_t run = clean_run(in, n);

	if (run > 0 && in[run - 1] == '\n') {
		/* Cut after a CRLF: a new line. */
		b->first = 1;
		b->state = BODY_BOL;
	}
	return (run);
}

size_t
body_pass(struct body *b, const char *in, size_t n)
{
	size_t run;

	if (n == 0 || (b->drop && b->bare))
		return (0);
	/* Inside a line clean_run() decides alone; at the start of one a
	 * dot or a bare LF needs the state machine. */
	if (b->state == BODY_BOL) {
		if (in[0] == '.' || in[0] == '\n')
			return (0);
	} else if (b->state != BODY_TEXT) {
		return (0);
	}
	run = pass_run(b, in, n);
	if (run > 0 && in[run - 1] != '\n')
		b->state = BODY_TEXT;
	return (run);
}

static void
emit(struct body *b, struct buf *out, const char *p, size_t n)
{
	if (!(b->drop && b->bare))
		buf_append(out, p, n);
}

/* A bare CR or LF ends the current line; the next one is not "first". */
static void
bare_end(struct body *b, struct buf *out, const char *p, size_t n)
{
	b->bare = 1;
	emit(b, out, p, n);
	b->first = 0;
	b->state = BODY_BOL;
}

size_t
body_scan(struct body *b, const char *in, size_t n, struct buf *out,
    int *ended)
{
	size_t i = 0, run;
	char ch;

	*ended = 0;
	while (i < n && buf_room(out) >= SPECIAL_ROOM) {
		ch = in[i];
		switch (b->state) {
		case BODY_TEXT:
			if (ch != '\r' && ch != '\n') {
				/* What needs no change is copied at once, whole
				 * lines included. Only what fits is scanned: a
				 * CR or CRLF at the cut waits for the next
				 * call. */
				run = n - i;
				if (run > buf_room(out) - SPECIAL_ROOM)
					run = buf_room(out) - SPECIAL_ROOM;
				if ((run = pass_run(b, in + i, run)) == 0)
					return (i);
				emit(b, out, in + i, run);
				i += run;
				continue;
			}
			/* FALLTHROUGH */
		case BODY_BOL:
			if (ch == '\r')
				b->state = BODY_CR;
			else if (ch == '\n')
				bare_end(b, out, "\r\n", 2);
			else if (ch == '.' && b->state == BODY_BOL && b->first)
				b->state = BODY_DOT;
			else if (ch == '.' && b->state == BODY_BOL) {
				/* A line a bare CR or LF began: the backend must
				 * read this dot as text. */
				emit(b, out, "..", 2);
				b->state = BODY_TEXT;
			} else {
				emit(b, out, &ch, 1);
				b->state = BODY_TEXT;
			}
			i++;
			break;
		case BODY_CR:
			if (ch == '\n') {
				emit(b, out, "\r\n", 2);
				b->first = 1;
				b->state = BODY_BOL;
				i++;
			} else {
				/* A bare CR: the byte is read again at the start
				 * of the new line. */
				bare_end(b, out, "\r\n", 2);
			}
			break;
		case BODY_DOT:
			if (ch == '\r') {
				b->state = BODY_DOT_CR;
				i++;
			} else if (ch == '\n') {
				bare_end(b, out, "..\r\n", 4);
				i++;
			} else {
				/* The client's own dot-stuffing: pass it on. */
				emit(b, out, ".", 1);
				b->state = BODY_TEXT;
			}
			break;
		case BODY_DOT_CR:
			if (ch == '\n') {
				emit(b, out, ".\r\n", 3);
				*ended = 1;
				return (i + 1);
			}
			bare_end(b, out, "..\r\n", 4);
			break;
		}
	}
	return (i);
}
