/*
 * body: the DATA body scanner (DESIGN.md rule 6), a pure function over byte
 * spans. Only CRLF "." CRLF ends a body (RFC 5321 section 4.1.1.4). A bare
 * CR or LF is sent on as CRLF; the line it starts is then a new line to the
 * backend, so a leading dot on it is doubled, and a "." line ended by a bare
 * CR or LF is doubled too. Any backend, however lenient about line ends,
 * then finds the end of data exactly where the gateway did.
 */
#ifndef SMTPGATE_BODY_H
#define SMTPGATE_BODY_H

#include <stddef.h>

#include "buf.h"

struct body {
	unsigned char	 state;
	unsigned	 first:1;	/* the line began after a real CRLF */
	unsigned	 bare:1;	/* a bare CR or LF was seen */
	unsigned	 drop:1;	/* send nothing from the first bare one on */
};

/* Start a body; with drop set, output stops at the first bare CR or LF
 * (bare_newlines = reject) and the end of data is not sent either. */
void	body_init(struct body *b, int drop);
/*
 * Scan n bytes of the client's body into out, as far as out has room.
 * Returns the bytes consumed; *ended is set when they include the end of
 * data (which is then the last byte consumed, and written to out unless the
 * body is dropped).
 */
size_t	body_scan(struct body *b, const char *in, size_t n, struct buf *out,
	    int *ended);
/*
 * The length of the longest prefix of in[0..n) that body_scan() would pass
 * on unchanged from where the scanner stands (0 when the next byte needs its
 * state machine, or when nothing is sent any more); the scanner then stands
 * after it. The caller sends those bytes on itself, which lets it move them
 * rather than copy them. Never includes the end of data.
 */
size_t	body_pass(struct body *b, const char *in, size_t n);

#endif
