/*
 * metrics: the renderer over several workers (sums, the TLS kinds merged by
 * name, histogram buckets made cumulative, label escaping), the name tables
 * (stable slots, the "_other" overflow) and the close-reason mapping.
 *
 * The name tables are process-wide: each test uses names of its own, and
 * the one that fills a table runs last.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/metrics.h"
#include "../../proxy/smtp.h"
#include "../../proxy/worker.h"
#include "suites.h"

static struct worker *ws[2];

static void
setup(void)
{
	ws[0] = calloc(1, sizeof(struct worker));
	ws[1] = calloc(1, sizeof(struct worker));
	ck_assert_ptr_nonnull(ws[0]);
	ck_assert_ptr_nonnull(ws[1]);
}

static void
teardown(void)
{
	free(ws[0]);
	free(ws[1]);
}

static char *
render(int n)
{
	size_t len;
	char *text = metrics_render(ws, n, "9.9.9", &len);

	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(strlen(text), len);
	return (text);
}

/* The text holds this exact line. */
static void
has_line(const char *text, const char *line)
{
	const char *p = text;
	size_t n = strlen(line);

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
		p += n;
	}
	ck_abort_msg("no line '%s' in:\n%s", line, text);
}

START_TEST(test_counter_lines)
{
	int a = metrics_listener_slot("lines-a");
	int b = metrics_backend_slot("192.0.2.2:25");
	struct metrics_listener *l0 = &ws[0]->metrics.listeners[a];
	struct metrics_listener *l1 = &ws[1]->metrics.listeners[a];
	char *text;

	metrics_add(&l0->opened, 5);
	metrics_add(&l1->opened, 7);
	metrics_add(&l0->closed, 4);
	metrics_add(&l1->closed, 1);
	metrics_add(&l0->refused[METRICS_REFUSED_PER_IP_RATE], 2);
	metrics_add(&l1->refused[METRICS_REFUSED_PER_IP_RATE], 3);
	metrics_add(&l0->bytes_in, 100);
	metrics_add(&l1->bytes_out, 50);
	metrics_add(&l1->replies[4], 9);
	metrics_add(&l0->ended[METRICS_END_QUIT], 3);
	metrics_add(&l0->hs_failed[METRICS_HS_NOT_TLS], 1);
	metrics_add(&ws[1]->metrics.backends[b].failures, 6);

	text = render(2);
	has_line(text, "smtpgate_connections_total{listener=\"lines-a\"} 12");
	has_line(text, "smtpgate_connections_open{listener=\"lines-a\"} 7");
	has_line(text, "smtpgate_connections_refused_total{listener=\"lines-a\","
	    "reason=\"per_ip_rate\"} 5");
	has_line(text, "smtpgate_connections_refused_total{listener=\"lines-a\","
	    "reason=\"max_connections\"} 0");
	has_line(text, "smtpgate_bytes_total{listener=\"lines-a\","
	    "direction=\"in\"} 100");
	has_line(text, "smtpgate_bytes_total{listener=\"lines-a\","
	    "direction=\"out\"} 50");
	has_line(text, "smtpgate_replies_total{listener=\"lines-a\","
	    "class=\"5xx\"} 9");
	has_line(text, "smtpgate_sessions_ended_total{listener=\"lines-a\","
	    "reason=\"quit\"} 3");
	has_line(text, "smtpgate_tls_handshake_failures_total{listener="
	    "\"lines-a\",reason=\"not_tls\"} 1");
	has_line(text, "smtpgate_backend_connect_failures_total{backend="
	    "\"192.0.2.2:25\"} 6");
	/* One worker only: the other's counts are not in. */
	free(text);
	text = render(1);
	has_line(text, "smtpgate_connections_total{listener=\"lines-a\"} 5");
	free(text);
}
END_TEST

START_TEST(test_reloads)
{
	char *text;

	metrics_reload(1);
	metrics_reload(0);
	metrics_reload(1);
	text = render(1);
	has_line(text, "smtpgate_reloads_total{result=\"ok\"} 2");
	has_line(text, "smtpgate_reloads_total{result=\"failed\"} 1");
	free(text);
}
END_TEST

/* Each worker numbers the TLS kinds in the order it met them: the renderer
 * matches them by name. */
START_TEST(test_tls_kinds_merge)
{
	int a = metrics_listener_slot("tls-a");
	struct metrics *m0 = &ws[0]->metrics, *m1 = &ws[1]->metrics;
	char *text;

	strcpy(m0->tls_kinds[0].version, "TLSv1.3");
	strcpy(m0->tls_kinds[0].cipher, "TLS_AES_256_GCM_SHA384");
	m0->ntls = 1;
	strcpy(m1->tls_kinds[0].version, "TLSv1.2");
	strcpy(m1->tls_kinds[0].cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");
	strcpy(m1->tls_kinds[1].version, "TLSv1.3");
	strcpy(m1->tls_kinds[1].cipher, "TLS_AES_256_GCM_SHA384");
	m1->ntls = 2;
	metrics_add(&m0->listeners[a].tls[0], 4);
	metrics_add(&m1->listeners[a].tls[0], 1);
	metrics_add(&m1->listeners[a].tls[1], 6);
	metrics_add(&m1->listeners[a].tls[METRICS_TLS_KINDS], 2);

	text = render(2);
	has_line(text, "smtpgate_tls_handshakes_total{listener=\"tls-a\","
	    "version=\"TLSv1.3\",cipher=\"TLS_AES_256_GCM_SHA384\"} 10");
	has_line(text, "smtpgate_tls_handshakes_total{listener=\"tls-a\","
	    "version=\"TLSv1.2\",cipher=\"ECDHE-ECDSA-AES128-GCM-SHA256\"} 1");
	has_line(text, "smtpgate_tls_handshakes_total{listener=\"tls-a\","
	    "version=\"other\",cipher=\"other\"} 2");
	free(text);
}
END_TEST

START_TEST(test_histogram)
{
	int b = metrics_backend_slot("[2001:db8::1]:25");
	struct metrics_backend *b0 = &ws[0]->metrics.backends[b];
	struct metrics_backend *b1 = &ws[1]->metrics.backends[b];
	char *text;

	metrics_add(&b0->buckets[0], 2);		/* <= 0.0001 s */
	metrics_add(&b1->buckets[3], 1);		/* <= 0.001 s */
	metrics_add(&b1->buckets[METRICS_BUCKETS], 1);	/* > 10 s */
	metrics_add(&b0->sum_ns, 1500000000);
	metrics_add(&b1->sum_ns, 500000000);

	text = render(2);
	has_line(text, "smtpgate_backend_connect_seconds_bucket{backend="
	    "\"[2001:db8::1]:25\",le=\"0.0001\"} 2");
	has_line(text, "smtpgate_backend_connect_seconds_bucket{backend="
	    "\"[2001:db8::1]:25\",le=\"0.0005\"} 2");
	has_line(text, "smtpgate_backend_connect_seconds_bucket{backend="
	    "\"[2001:db8::1]:25\",le=\"0.001\"} 3");
	has_line(text, "smtpgate_backend_connect_seconds_bucket{backend="
	    "\"[2001:db8::1]:25\",le=\"10\"} 3");
	has_line(text, "smtpgate_backend_connect_seconds_bucket{backend="
	    "\"[2001:db8::1]:25\",le=\"+Inf\"} 4");
	has_line(text, "smtpgate_backend_connect_seconds_count{backend="
	    "\"[2001:db8::1]:25\"} 4");
	has_line(text, "smtpgate_backend_connect_seconds_sum{backend="
	    "\"[2001:db8::1]:25\"} 2.000000000");
	free(text);
}
END_TEST

/* A scrape between a session's open and close counts, on another worker,
 * can see more closed than opened: the gauge stays at 0, never wraps. */
START_TEST(test_open_gauge_never_wraps)
{
	int l = metrics_listener_slot("gauge");
	char *text;

	metrics_add(&ws[0]->metrics.listeners[l].opened, 1);
	metrics_add(&ws[0]->metrics.listeners[l].closed, 2);
	metrics_add(&ws[1]->metrics.listeners[l].opened, 3);
	metrics_add(&ws[1]->metrics.listeners[l].closed, 1);
	text = render(2);
	has_line(text, "smtpgate_connections_open{listener=\"gauge\"} 2");
	free(text);
}
END_TEST

START_TEST(test_label_escaping)
{
	int a = metrics_listener_slot("we\"ird\\name\n");
	char *text;

	metrics_add(&ws[0]->metrics.listeners[a].opened, 1);
	text = render(1);
	has_line(text, "smtpgate_connections_total{listener=\"we\\\"ird\\\\name"
	    "\\n\"} 1");
	free(text);
}
END_TEST

/* A name keeps its slot; listeners and backends number apart. */
START_TEST(test_slots_stable)
{
	int a = metrics_listener_slot("stable-a");
	int b = metrics_listener_slot("stable-b");

	ck_assert_int_ne(a, b);
	ck_assert_int_eq(metrics_listener_slot("stable-a"), a);
	ck_assert_int_eq(metrics_listener_slot("stable-b"), b);
	ck_assert_int_lt(a, METRICS_SLOTS - 1);
}
END_TEST

/* Every tracker abort and every fixed close text has a category. */
START_TEST(test_end_reasons)
{
	static const struct {
		const char		*reason;
		int			 handshaking;
		const char		*client_error;
		enum metrics_end	 want;
	} cases[] = {
		{ "quit", 0, NULL, METRICS_END_QUIT },
		{ "client closed", 0, NULL, METRICS_END_CLIENT_CLOSED },
		{ "client closed during message", 0, NULL,
		    METRICS_END_CLIENT_CLOSED },
		{ "client timeout", 0, NULL, METRICS_END_TIMEOUT },
		{ "backend unavailable", 0, NULL, METRICS_END_BACKEND_FAILED },
		{ "backend sent 421", 0, NULL, METRICS_END_BACKEND_CLOSED },
		{ "too many errors", 0, NULL, METRICS_END_TOO_MANY_ERRORS },
		{ "bare CR or LF in message body", 0, NULL,
		    METRICS_END_MESSAGE_REJECTED },
		{ "no secure upstream", 0, NULL, METRICS_END_UPSTREAM_FAILED },
		{ "invalid PROXY header", 0, NULL, METRICS_END_PROXY_ERROR },
		{ "no PROXY header in time", 0, NULL, METRICS_END_TIMEOUT },
		{ "shutdown", 1, NULL, METRICS_END_SHUTDOWN },
		{ "shutdown", 0, NULL, METRICS_END_SHUTDOWN },
		{ "TLS handshake timeout", 1, NULL, METRICS_END_TLS_FAILED },
		{ "TLS handshake: peer closed", 1, "TLS handshake: peer closed",
		    METRICS_END_TLS_FAILED },
		{ "Connection reset by peer", 0, "Connection reset by peer",
		    METRICS_END_CLIENT_ERROR },
		{ "cannot start TLS", 0, NULL, METRICS_END_OTHER },
		{ NULL, 0, NULL, METRICS_END_OTHER },
	};
	size_t i;
	int j;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(metrics_end_reason(cases[i].reason,
		    cases[i].handshaking, cases[i].client_error) == cases[i].want,
		    "reason '%s'", cases[i].reason);
	for (j = 0; j < ABORT_MAX; j++)
		ck_assert_int_ne(metrics_end_reason(smtp_abort_names[j], 0, NULL),
		    METRICS_END_OTHER);
	ck_assert_int_eq(metrics_end_reason(iptable_refusal(IPTABLE_TOO_MANY),
	    0, NULL), METRICS_END_REFUSED_LIMIT);
	ck_assert_int_eq(metrics_end_reason(iptable_refusal(IPTABLE_TOO_FAST),
	    0, NULL), METRICS_END_REFUSED_LIMIT);
}
END_TEST

START_TEST(test_hs_reasons)
{
	static const struct {
		const char		*reason;
		enum metrics_hs_failure	 want;
	} cases[] = {
		{ "TLS handshake timeout", METRICS_HS_TIMEOUT },
		{ "shutdown", METRICS_HS_SHUTDOWN },
		{ "TLS handshake: peer closed", METRICS_HS_CLOSED },
		{ "TLS handshake: Connection reset by peer", METRICS_HS_CLOSED },
		{ "TLS handshake: unexpected EOF", METRICS_HS_CLOSED },
		{ "TLS handshake: error:0A0000C1:SSL routines::no shared cipher",
		    METRICS_HS_NO_SHARED_CIPHER },
		{ "TLS handshake: error:0A000102:SSL routines::unsupported "
		    "protocol", METRICS_HS_VERSION },
		{ "TLS handshake: error:0A00010B:SSL routines::wrong version "
		    "number", METRICS_HS_NOT_TLS },
		{ "TLS handshake: error:0A00009C:SSL routines::http request",
		    METRICS_HS_NOT_TLS },
		{ "TLS handshake: error:0A00006C:SSL routines::bad key share",
		    METRICS_HS_OTHER },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ck_assert_msg(metrics_hs_reason(cases[i].reason) == cases[i].want,
		    "reason '%s'", cases[i].reason);
}
END_TEST

/* Past METRICS_SLOTS - 1 names, new ones share "_other"; it runs last
 * because it fills the process-wide table. */
START_TEST(test_overflow)
{
	char name[32];
	int i, s;
	char *text;

	for (i = 0; i < METRICS_SLOTS; i++) {
		snprintf(name, sizeof(name), "fill-%d", i);
		s = metrics_listener_slot(name);
	}
	ck_assert_int_eq(s, METRICS_SLOTS - 1);
	ck_assert_int_eq(metrics_listener_slot("one more"), METRICS_SLOTS - 1);
	metrics_add(&ws[0]->metrics.listeners[s].opened, 3);
	text = render(1);
	has_line(text, "smtpgate_connections_total{listener=\"_other\"} 3");
	free(text);
}
END_TEST

Suite *
metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("metrics");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_counter_lines);
	tcase_add_test(tc, test_reloads);
	tcase_add_test(tc, test_tls_kinds_merge);
	tcase_add_test(tc, test_histogram);
	tcase_add_test(tc, test_open_gauge_never_wraps);
	tcase_add_test(tc, test_label_escaping);
	tcase_add_test(tc, test_slots_stable);
	tcase_add_test(tc, test_end_reasons);
	tcase_add_test(tc, test_hs_reasons);
	tcase_add_test(tc, test_overflow);
	suite_add_tcase(s, tc);
	return (s);
}
