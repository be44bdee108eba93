#include <stdlib.h>
#include <string.h>

#include "buf.h"

void
buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->off = b->len = 0;
	b->cap = cap;
}

void
buf_fini(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = 0;
}

char *
buf_tail(struct buf *b)
{
	if (b->data == NULL && (b->data = malloc(b->cap)) == NULL)
		return (NULL);
	/* Compact, so the caller always sees all of buf_room() as one span. */
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	return (b->data + b->len);
}

void
buf_added(struct buf *b, size_t n)
{
	b->len += n;
}

int
buf_append(struct buf *b, const void *p, size_t n)
{
	char *t;

	if (n > buf_room(b))
		return (-1);
	if (n == 0)
		return (0);
	if ((t = buf_tail(b)) == NULL)
		return (-1);
	memcpy(t, p, n);
	b->len += n;
	return (0);
}

void
buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (b->len == 0)
		buf_fini(b);
}

int
buf_move(struct buf *dst, struct buf *src, size_t n)
{
	size_t rest = src->len - n;
	char *t;

	if ((t = buf_tail(dst)) == NULL)
		return (-1);
	if (dst->len != 0 || dst->cap != src->cap || n < rest) {
		memcpy(t, buf_head(src), n);
		dst->len += n;
		buf_consume(src, n);
		return (0);
	}
	/* Trade: dst's empty storage takes src's remaining bytes. */
	memcpy(t, src->data + src->off + n, rest);
	dst->data = src->data;
	dst->off = src->off;
	dst->len = n;
	src->data = t;
	src->off = 0;
	src->len = rest;
	if (rest == 0)
		buf_fini(src);
	return (0);
}
