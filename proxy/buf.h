/* buf: a fixed-capacity byte buffer whose storage is allocated on first use
 * and released when it drains, so an idle session costs no buffer memory. */
#ifndef SMTPGATE_BUF_H
#define SMTPGATE_BUF_H

#include <stddef.h>

struct buf {
	char	*data;		/* NULL until the first append */
	size_t	 off;		/* start of the unread bytes */
	size_t	 len;		/* unread bytes */
	size_t	 cap;		/* fixed capacity */
};

/* Set up an empty buffer that will hold at most cap bytes. */
void	buf_init(struct buf *b, size_t cap);
/* Release the storage; the buffer is empty and usable again. */
void	buf_fini(struct buf *b);

static inline size_t buf_len(const struct buf *b) { return (b->len); }
static inline size_t buf_room(const struct buf *b) { return (b->cap - b->len); }
static inline const char *
buf_head(const struct buf *b)
{
	return (b->data != NULL ? b->data + b->off : "");
}

/* Make room contiguous at the tail: returns a pointer to at least
 * buf_room(b) writable bytes, or NULL when out of memory. Commit with
 * buf_added(). */
char	*buf_tail(struct buf *b);
void	 buf_added(struct buf *b, size_t n);

/* Append n bytes; returns 0, or -1 (nothing appended) when they do not fit
 * or memory is short. */
int	 buf_append(struct buf *b, const void *p, size_t n);
/* Drop n bytes from the head; storage is released when the buffer empties. */
void	 buf_consume(struct buf *b, size_t n);
/*
 * Move the first n bytes of src to the tail of dst (n <= buf_len(src),
 * n <= buf_room(dst)). When dst is empty, has the same capacity and the n
 * bytes are at least half of src, the two trade storage and only src's
 * remaining bytes are copied: a bulk relay hands its data on instead of
 * copying it. Returns 0, or -1 (nothing moved) when dst has no storage and
 * memory is short; once buf_tail(dst) succeeded it cannot fail.
 */
int	 buf_move(struct buf *dst, struct buf *src, size_t n);

#endif
