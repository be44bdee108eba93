#include <stdint.h>
#include <string.h>
#ifdef __x86_64__
#include <immintrin.h>
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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CLEAN_AVX2	1

/* Where a 64-byte block's clean run ends, plus 2: relative to the block it
 * may end one or two bytes before it (a CR or CRLF at the end of the
 * previous block). A bare LF stops it at itself, a bare CR at the CR (its
 * bit is at the byte after it), a dot line at the CRLF before the dot. */
static inline size_t
first_stop(uint64_t bare_lf, uint64_t bare_cr, uint64_t dot_line)
{
	size_t at = 64 + 2;

	if (bare_lf != 0)
		at = (size_t)__builtin_ctzll(bare_lf) + 2;
	if (bare_cr != 0 && (size_t)__builtin_ctzll(bare_cr) + 1 < at)
		at = (size_t)__builtin_ctzll(bare_cr) + 1;
	if (dot_line != 0 && (size_t)__builtin_ctzll(dot_line) < at)
		at = (size_t)__builtin_ctzll(dot_line);
	return (at);
}

/* Bit i set where the 64 bytes in v[0..1] hold c. */
__attribute__((target("avx2"))) static inline uint64_t
match64(const __m256i v[2], char c)
{
	const __m256i m = _mm256_set1_epi8(c);

	return ((uint64_t)(uint32_t)_mm256_movemask_epi8(
	    _mm256_cmpeq_epi8(v[0], m)) |
	    (uint64_t)(uint32_t)_mm256_movemask_epi8(
	    _mm256_cmpeq_epi8(v[1], m)) << 32);
}

/*
 * clean_run() 64 bytes at a time with AVX2 (x86-64 CPUs since 2013; the
 * others take the byte loop): returns how far it got, with *stop set when
 * the run ends there, else with the carries the byte loop goes on from.
 */
__attribute__((target("avx2"))) static size_t
clean_blocks(const char *p, size_t n, unsigned *prev_cr, unsigned *prev_lf,
    int *stop)
{
	uint64_t cr, lf, dot, crlf, bare_lf, bare_cr, dot_line;
	__m256i v[2];
	size_t i;

	for (i = 0; i + 64 <= n; i += 64) {
		v[0] = _mm256_loadu_si256((const __m256i *)(const void *)
		    (p + i));
		v[1] = _mm256_loadu_si256((const __m256i *)(const void *)
		    (p + i + 32));
		cr = match64(v, '\r');
		lf = match64(v, '\n');
		dot = match64(v, '.');
		/* The LFs that end a CRLF; then each problem where it is
		 * seen: a bare LF at itself, a bare CR at the byte after it
		 * (not an LF), a dot at itself after a CRLF. */
		crlf = lf & ((cr << 1) | *prev_cr);
		bare_lf = lf & ~crlf;
		bare_cr = ((cr << 1) | *prev_cr) & ~lf;
		dot_line = ((crlf << 1) | *prev_lf) & dot;
		if ((bare_lf | bare_cr | dot_line) != 0) {
			*stop = 1;
			/* Only after a first block can it end before i. */
			return (i + first_stop(bare_lf, bare_cr, dot_line) - 2);
		}
		*prev_cr = (unsigned)(cr >> 63);
		*prev_lf = (unsigned)(crlf >> 63);
	}
	return (i);
}
#endif

/*
 * The length of the longest prefix of p[0..n), read inside a line or at
 * the start of one that does not begin with a dot, that goes to the backend
 * unchanged: every CR in it is followed by an LF, every LF follows a CR,
 * and no line in it starts with a dot (which could be the end of data). It
 * stops at the first CR or LF that breaks this, or at a CRLF whose next
 * byte is not here yet; the state machine handles what follows. The byte
 * loop is the definition; clean_blocks() does the bulk where it can.
 */
static size_t
clean_run(const char *p, size_t n)
{
	unsigned prev_cr = 0, prev_lf = 0;
	size_t i = 0;

#ifdef CLEAN_AVX2
	int stop = 0;

	if (__builtin_cpu_supports("avx2")) {
		i = clean_blocks(p, n, &prev_cr, &prev_lf, &stop);
		if (stop)
			return (i);
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
