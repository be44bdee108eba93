/* The per-IP table: limits per address and per IPv6 /64, release, sweep. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "../../proxy/iptable.h"
#include "suites.h"

static struct sockaddr_storage
addr(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		ck_assert_int_eq(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, text, &in->sin_addr), 1);
	}
	return (ss);
}

static enum iptable_verdict
acquire(struct iptable *t, const char *text, double now)
{
	struct sockaddr_storage ss = addr(text);
	int counted;
	enum iptable_verdict v;

	v = iptable_acquire(t, (struct sockaddr *)&ss, now, &counted);
	ck_assert_int_eq(counted, v == IPTABLE_OK);
	return (v);
}

static void
release(struct iptable *t, const char *text)
{
	struct sockaddr_storage ss = addr(text);

	iptable_release(t, (struct sockaddr *)&ss);
}

START_TEST(test_per_address)
{
	struct iptable *t = iptable_new(2, 0);

	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(acquire(t, "192.0.2.1", 0), IPTABLE_OK);
	ck_assert_int_eq(acquire(t, "192.0.2.1", 0), IPTABLE_OK);
	ck_assert_int_eq(acquire(t, "192.0.2.1", 0), IPTABLE_TOO_MANY);
	/* Another address, and the IPv4-mapped form of the first. */
	ck_assert_int_eq(acquire(t, "192.0.2.2", 0), IPTABLE_OK);
	ck_assert_int_eq(acquire(t, "::ffff:192.0.2.1", 0), IPTABLE_TOO_MANY);
	release(t, "192.0.2.1");
	ck_assert_int_eq(acquire(t, "192.0.2.1", 0), IPTABLE_OK);
	/* Without a rate limit, closed addresses leave nothing behind. */
	release(t, "192.0.2.1");
	release(t, "192.0.2.1");
	release(t, "192.0.2.2");
	release(t, "192.0.2.2");	/* one too many: ignored */
	ck_assert_uint_eq(iptable_sweep(t, 0), 0);
	iptable_free(t);
}
END_TEST

START_TEST(test_ipv6_slash64)
{
	struct iptable *t = iptable_new(1, 0);

	ck_assert_int_eq(acquire(t, "2001:db8:1:2::1", 0), IPTABLE_OK);
	ck_assert_int_eq(acquire(t, "2001:db8:1:2:ffff::9", 0),
	    IPTABLE_TOO_MANY);
	ck_assert_int_eq(acquire(t, "2001:db8:1:3::1", 0), IPTABLE_OK);
	iptable_free(t);
}
END_TEST

START_TEST(test_rate)
{
	struct iptable *t = iptable_new(0, 3);
	int i;

	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(acquire(t, "198.51.100.7", 10 + i), IPTABLE_OK);
		release(t, "198.51.100.7");
	}
	ck_assert_int_eq(acquire(t, "198.51.100.7", 30), IPTABLE_TOO_FAST);
	ck_assert_uint_eq(iptable_sweep(t, 30), 1);
	/* A minute after the window opened, it opens anew. */
	ck_assert_int_eq(acquire(t, "198.51.100.7", 70), IPTABLE_OK);
	release(t, "198.51.100.7");
	ck_assert_uint_eq(iptable_sweep(t, 100), 1);
	ck_assert_uint_eq(iptable_sweep(t, 131), 0);
	iptable_free(t);
}
END_TEST

START_TEST(test_off)
{
	struct iptable *t = iptable_new(0, 0);
	int i;

	/* Off: every connection passes and none is counted. */
	for (i = 0; i < 1000; i++) {
		struct sockaddr_storage ss = addr("192.0.2.1");
		int counted = -1;

		ck_assert_int_eq(iptable_acquire(t, (struct sockaddr *)&ss, 0,
		    &counted), IPTABLE_OK);
		ck_assert_int_eq(counted, 0);
	}
	ck_assert_uint_eq(iptable_sweep(t, 0), 0);
	iptable_free(t);
	iptable_free(NULL);
}
END_TEST

Suite *
iptable_suite(void)
{
	Suite *s = suite_create("iptable");
	TCase *tc = tcase_create("limits");

	tcase_add_test(tc, test_per_address);
	tcase_add_test(tc, test_ipv6_slash64);
	tcase_add_test(tc, test_rate);
	tcase_add_test(tc, test_off);
	suite_add_tcase(s, tc);
	return (s);
}
