/*
 * buf: a fixed-capacity byte buffer. Storage appears on the first append (or
 * buf_tail) and goes away when the buffer drains, so the tests watch data as
 * closely as len and room.
 */
#include <stdlib.h>
#include <string.h>

#include "../../proxy/buf.h"
#include "suites.h"

/* The invariants every operation keeps. */
static void
check_invariants(const struct buf *b, size_t cap)
{
	ck_assert_uint_eq(b->cap, cap);
	ck_assert_uint_le(buf_len(b), cap);
	ck_assert_uint_eq(buf_len(b) + buf_room(b), cap);
	if (b->data != NULL)
		ck_assert_uint_le(b->off + b->len, cap);
	else
		ck_assert_uint_eq(b->len, 0);
}

START_TEST(test_init_is_empty)
{
	struct buf b;

	buf_init(&b, 16);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(buf_len(&b), 0);
	ck_assert_uint_eq(buf_room(&b), 16);
	check_invariants(&b, 16);
	buf_fini(&b);
}
END_TEST

START_TEST(test_fini_unused)
{
	struct buf b;

	/* A buffer that never held a byte owns nothing: fini is harmless,
	 * twice too, and leaves it usable. */
	buf_init(&b, 8);
	buf_fini(&b);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(buf_len(&b), 0);
	ck_assert_uint_eq(buf_room(&b), 8);
	buf_fini(&b);
	ck_assert_ptr_null(b.data);
	ck_assert_int_eq(buf_append(&b, "abc", 3), 0);
	ck_assert_mem_eq(buf_head(&b), "abc", 3);
	buf_fini(&b);
	ck_assert_ptr_null(b.data);
	check_invariants(&b, 8);
}
END_TEST

START_TEST(test_append_consume)
{
	struct buf b;

	buf_init(&b, 16);
	ck_assert_int_eq(buf_append(&b, "hello", 5), 0);
	ck_assert_ptr_nonnull(b.data);
	ck_assert_uint_eq(buf_len(&b), 5);
	ck_assert_uint_eq(buf_room(&b), 11);
	ck_assert_mem_eq(buf_head(&b), "hello", 5);
	ck_assert_int_eq(buf_append(&b, " world", 6), 0);
	ck_assert_uint_eq(buf_len(&b), 11);
	ck_assert_mem_eq(buf_head(&b), "hello world", 11);
	check_invariants(&b, 16);

	buf_consume(&b, 6);
	ck_assert_uint_eq(buf_len(&b), 5);
	ck_assert_uint_eq(buf_room(&b), 11);
	ck_assert_mem_eq(buf_head(&b), "world", 5);
	ck_assert_ptr_nonnull(b.data);
	check_invariants(&b, 16);

	/* The last byte out releases the storage. */
	buf_consume(&b, 5);
	ck_assert_uint_eq(buf_len(&b), 0);
	ck_assert_uint_eq(buf_room(&b), 16);
	ck_assert_ptr_null(b.data);
	check_invariants(&b, 16);

	/* And the next append gets fresh storage. */
	ck_assert_int_eq(buf_append(&b, "again", 5), 0);
	ck_assert_ptr_nonnull(b.data);
	ck_assert_mem_eq(buf_head(&b), "again", 5);
	buf_fini(&b);
	ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(test_append_zero)
{
	struct buf b;

	/* Nothing to append allocates nothing, even when the buffer is full. */
	buf_init(&b, 4);
	ck_assert_int_eq(buf_append(&b, "", 0), 0);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(buf_len(&b), 0);
	ck_assert_int_eq(buf_append(&b, "abcd", 4), 0);
	ck_assert_int_eq(buf_append(&b, "", 0), 0);
	ck_assert_uint_eq(buf_len(&b), 4);
	ck_assert_mem_eq(buf_head(&b), "abcd", 4);
	buf_fini(&b);
}
END_TEST

START_TEST(test_append_over_room)
{
	struct buf b;

	/* Too much for the room left: -1 and not one byte written. */
	buf_init(&b, 10);
	ck_assert_int_eq(buf_append(&b, "0123456789X", 11), -1);
	ck_assert_uint_eq(buf_len(&b), 0);
	ck_assert_ptr_null(b.data);

	ck_assert_int_eq(buf_append(&b, "01234567", 8), 0);
	ck_assert_int_eq(buf_append(&b, "abc", 3), -1);
	ck_assert_uint_eq(buf_len(&b), 8);
	ck_assert_uint_eq(buf_room(&b), 2);
	ck_assert_mem_eq(buf_head(&b), "01234567", 8);

	/* Exactly the room fits. */
	ck_assert_int_eq(buf_append(&b, "ab", 2), 0);
	ck_assert_uint_eq(buf_room(&b), 0);
	ck_assert_mem_eq(buf_head(&b), "01234567ab", 10);
	ck_assert_int_eq(buf_append(&b, "c", 1), -1);
	ck_assert_mem_eq(buf_head(&b), "01234567ab", 10);
	check_invariants(&b, 10);

	/* Room made at the head is usable at once: append compacts. */
	buf_consume(&b, 3);
	ck_assert_uint_eq(buf_room(&b), 3);
	ck_assert_int_eq(buf_append(&b, "wxyz", 4), -1);
	ck_assert_mem_eq(buf_head(&b), "34567ab", 7);
	ck_assert_int_eq(buf_append(&b, "xyz", 3), 0);
	ck_assert_uint_eq(buf_len(&b), 10);
	ck_assert_mem_eq(buf_head(&b), "34567abxyz", 10);
	check_invariants(&b, 10);
	buf_fini(&b);
}
END_TEST

START_TEST(test_tail_unused)
{
	struct buf b;
	char *t;

	/* buf_tail allocates on first use and offers the whole capacity. */
	buf_init(&b, 32);
	t = buf_tail(&b);
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_eq(t, b.data);
	memset(t, 'x', buf_room(&b));
	buf_added(&b, 32);
	ck_assert_uint_eq(buf_len(&b), 32);
	ck_assert_uint_eq(buf_room(&b), 0);
	buf_consume(&b, 32);
	ck_assert_ptr_null(b.data);

	/* A tail taken and nothing added: the storage stays until fini. */
	ck_assert_ptr_nonnull(buf_tail(&b));
	buf_added(&b, 0);
	ck_assert_uint_eq(buf_len(&b), 0);
	buf_fini(&b);
	ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(test_tail_compacts)
{
	struct buf b;
	char *t;

	buf_init(&b, 10);
	ck_assert_int_eq(buf_append(&b, "abcdefgh", 8), 0);
	buf_consume(&b, 6);
	ck_assert_uint_eq(b.off, 6);
	ck_assert_uint_eq(buf_len(&b), 2);
	ck_assert_uint_eq(buf_room(&b), 8);

	/* The 8 bytes of room lie 2 after the tail and 6 before the head; the
	 * tail must present them as one span, the unread bytes moved first. */
	t = buf_tail(&b);
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(b.off, 0);
	ck_assert_ptr_eq(t, b.data + 2);
	ck_assert_mem_eq(buf_head(&b), "gh", 2);
	memcpy(t, "12345678", 8);
	buf_added(&b, 8);
	ck_assert_uint_eq(buf_len(&b), 10);
	ck_assert_uint_eq(buf_room(&b), 0);
	ck_assert_mem_eq(buf_head(&b), "gh12345678", 10);
	check_invariants(&b, 10);

	/* A partial commit leaves the rest as room. */
	buf_consume(&b, 4);
	t = buf_tail(&b);
	ck_assert_ptr_eq(t, b.data + 6);
	memcpy(t, "AB", 2);
	buf_added(&b, 2);
	ck_assert_uint_eq(buf_len(&b), 8);
	ck_assert_uint_eq(buf_room(&b), 2);
	ck_assert_mem_eq(buf_head(&b), "345678AB", 8);
	check_invariants(&b, 10);

	buf_consume(&b, 8);
	ck_assert_ptr_null(b.data);
	buf_fini(&b);
}
END_TEST

START_TEST(test_fini_used)
{
	struct buf b;

	/* Fini with unread bytes frees them (valgrind and ASan watch) and
	 * leaves an empty buffer of the same capacity. */
	buf_init(&b, 64);
	ck_assert_int_eq(buf_append(&b, "pending", 7), 0);
	buf_consume(&b, 2);
	buf_fini(&b);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(buf_len(&b), 0);
	ck_assert_uint_eq(buf_room(&b), 64);
	ck_assert_uint_eq(b.off, 0);
	ck_assert_int_eq(buf_append(&b, "x", 1), 0);
	ck_assert_mem_eq(buf_head(&b), "x", 1);
	buf_fini(&b);
}
END_TEST

/*
 * A stream through the buffer, the way an endpoint uses it: fill with
 * buf_tail/buf_added (or buf_append) up to some chunk size, drain with
 * buf_consume in another. Every byte must come out once, in order.
 */
static const struct stream_case {
	size_t	cap;
	size_t	in;		/* most bytes written per step */
	size_t	out;		/* most bytes consumed per step */
	int	use_append;
} stream_cases[] = {
	{ 1, 1, 1, 0 },
	{ 7, 3, 2, 0 },
	{ 7, 2, 3, 1 },
	{ 16, 16, 16, 0 },
	{ 16, 5, 16, 1 },
	{ 16, 16, 1, 0 },
	{ 4096, 1000, 777, 0 },
	{ 4096, 333, 4096, 1 },
	{ 100, 99, 98, 0 },
};

#define STREAM_BYTES	20000

START_TEST(test_stream)
{
	const struct stream_case *sc = &stream_cases[_i];
	struct buf b;
	size_t put = 0, got = 0, n, k;
	unsigned char chunk[4096];
	char *t;
	int steps = 0;

	buf_init(&b, sc->cap);
	while (got < STREAM_BYTES) {
		ck_assert_int_lt(++steps, 10 * STREAM_BYTES);
		/* Fill as much as the chunk size, the room and the stream
		 * allow. */
		n = sc->in;
		if (n > buf_room(&b))
			n = buf_room(&b);
		if (n > STREAM_BYTES - put)
			n = STREAM_BYTES - put;
		if (n > 0) {
			for (k = 0; k < n; k++)
				chunk[k] = (unsigned char)((put + k) *
				    131 % 251);
			if (sc->use_append) {
				ck_assert_int_eq(buf_append(&b, chunk, n), 0);
			} else {
				t = buf_tail(&b);
				ck_assert_ptr_nonnull(t);
				memcpy(t, chunk, n);
				buf_added(&b, n);
			}
			put += n;
		}
		check_invariants(&b, sc->cap);

		/* One byte more than the room never goes in. */
		if (buf_room(&b) < sizeof(chunk)) {
			size_t before = buf_len(&b);

			ck_assert_int_eq(buf_append(&b, chunk,
			    buf_room(&b) + 1), -1);
			ck_assert_uint_eq(buf_len(&b), before);
		}

		/* Drain some and check every byte. */
		n = sc->out < buf_len(&b) ? sc->out : buf_len(&b);
		for (k = 0; k < n; k++)
			ck_assert_uint_eq((unsigned char)buf_head(&b)[k],
			    (got + k) * 131 % 251);
		buf_consume(&b, n);
		got += n;
		if (buf_len(&b) == 0)
			ck_assert_ptr_null(b.data);
		check_invariants(&b, sc->cap);
	}
	ck_assert_uint_eq(put, STREAM_BYTES);
	ck_assert_ptr_null(b.data);
	buf_fini(&b);
}
END_TEST

/* Most of src into an empty dst with storage: the two trade storage, and
 * only what stays behind is copied. */
START_TEST(test_move_trades_storage)
{
	struct buf src, dst;
	char *block;

	buf_init(&src, 16);
	buf_init(&dst, 16);
	ck_assert_int_eq(buf_append(&src, "xxbodybody12", 12), 0);
	buf_consume(&src, 2);
	block = src.data;
	ck_assert_ptr_nonnull(buf_tail(&dst));
	ck_assert_int_eq(buf_move(&dst, &src, 8), 0);
	ck_assert_ptr_eq(dst.data, block);
	ck_assert_uint_eq(buf_len(&dst), 8);
	ck_assert_mem_eq(buf_head(&dst), "bodybody", 8);
	ck_assert_uint_eq(buf_len(&src), 2);
	ck_assert_mem_eq(buf_head(&src), "12", 2);
	check_invariants(&src, 16);
	check_invariants(&dst, 16);
	/* All of it: src is left empty, without storage. */
	ck_assert_int_eq(buf_append(&dst, "34", 2), 0);
	buf_consume(&dst, 10);
	ck_assert_ptr_nonnull(buf_tail(&dst));
	ck_assert_int_eq(buf_move(&dst, &src, 2), 0);
	ck_assert_mem_eq(buf_head(&dst), "12", 2);
	ck_assert_ptr_null(src.data);
	check_invariants(&src, 16);
	buf_fini(&src);
	buf_fini(&dst);
}
END_TEST

/* Otherwise the bytes are copied: dst holds data, the capacities differ,
 * or less than half of src moves. */
START_TEST(test_move_copies)
{
	struct buf src, dst, big;

	buf_init(&src, 16);
	buf_init(&dst, 16);
	buf_init(&big, 32);
	ck_assert_int_eq(buf_append(&src, "abcdefgh", 8), 0);
	ck_assert_int_eq(buf_append(&dst, "<", 1), 0);
	ck_assert_int_eq(buf_move(&dst, &src, 6), 0);
	ck_assert_mem_eq(buf_head(&dst), "<abcdef", 7);
	ck_assert_mem_eq(buf_head(&src), "gh", 2);
	buf_consume(&dst, 7);
	ck_assert_int_eq(buf_move(&dst, &src, 1), 0);
	ck_assert_mem_eq(buf_head(&dst), "g", 1);
	ck_assert_mem_eq(buf_head(&src), "h", 1);
	ck_assert_int_eq(buf_move(&big, &src, 1), 0);
	ck_assert_mem_eq(buf_head(&big), "h", 1);
	ck_assert_ptr_null(src.data);
	check_invariants(&dst, 16);
	check_invariants(&big, 32);
	buf_fini(&dst);
	buf_fini(&big);
}
END_TEST

Suite *
buf_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("buf");
	tc = tcase_create("basics");
	tcase_add_test(tc, test_init_is_empty);
	tcase_add_test(tc, test_fini_unused);
	tcase_add_test(tc, test_append_consume);
	tcase_add_test(tc, test_append_zero);
	tcase_add_test(tc, test_append_over_room);
	tcase_add_test(tc, test_tail_unused);
	tcase_add_test(tc, test_tail_compacts);
	tcase_add_test(tc, test_fini_used);
	tcase_add_test(tc, test_move_trades_storage);
	tcase_add_test(tc, test_move_copies);
	suite_add_tcase(s, tc);

	tc = tcase_create("stream");
	tcase_add_loop_test(tc, test_stream, 0,
	    (int)(sizeof(stream_cases) / sizeof(stream_cases[0])));
	suite_add_tcase(s, tc);
	return (s);
}
