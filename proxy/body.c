#include <string.h>

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
				/* A run of ordinary bytes is copied at once. */
				for (run = i; run < n && in[run] != '\r' &&
				    in[run] != '\n'; run++)
					;
				run -= i;
				if (run > buf_room(out) - SPECIAL_ROOM)
					run = buf_room(out) - SPECIAL_ROOM;
				if (run == 0)
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
