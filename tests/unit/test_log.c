/*
 * log: the JSON form of a message. Leading key=value fields become members
 * (counts as numbers), the rest "msg"; every byte that JSON cannot hold
 * raw is escaped, and a short buffer is cut but stays terminated.
 */
#include <string.h>

#include "../../proxy/log.h"
#include "suites.h"

#define T	"2026-12-04T10:00:00.000Z"

static const struct {
	const char	*msg;
	const char	*json;
} cases[] = {
	{ "session=12 client=127.0.0.1:5 listener=smtps tls=TLSv1.3 msgs=1 "
	    "reason=\"client closed\"",
	    "{\"time\":\"" T "\",\"level\":\"info\",\"session\":12,"
	    "\"client\":\"127.0.0.1:5\",\"listener\":\"smtps\","
	    "\"tls\":\"TLSv1.3\",\"msgs\":1,\"reason\":\"client closed\"}" },
	{ "session=3 backend 127.0.0.1:25: Connection refused",
	    "{\"time\":\"" T "\",\"level\":\"info\",\"session\":3,"
	    "\"msg\":\"backend 127.0.0.1:25: Connection refused\"}" },
	{ "listening on [::1]:465 (a, implicit TLS)",
	    "{\"time\":\"" T "\",\"level\":\"info\","
	    "\"msg\":\"listening on [::1]:465 (a, implicit TLS)\"}" },
	{ "quote \" backslash \\ tab \t bell \a",
	    "{\"time\":\"" T "\",\"level\":\"info\","
	    "\"msg\":\"quote \\\" backslash \\\\ tab \\u0009 bell \\u0007\"}" },
	{ "sni=\"a\\b\" x", "{\"time\":\"" T "\",\"level\":\"info\","
	    "\"sni\":\"a\\\\b\",\"msg\":\"x\"}" },
	/* An unterminated quote is text, not a field. */
	{ "reason=\"open", "{\"time\":\"" T "\",\"level\":\"info\","
	    "\"msg\":\"reason=\\\"open\"}" },
	/* Twenty digits may not fit a JSON number reader: a string. */
	{ "id=12345678901234567890", "{\"time\":\"" T "\",\"level\":\"info\","
	    "\"id\":\"12345678901234567890\"}" },
	{ "", "{\"time\":\"" T "\",\"level\":\"info\"}" },
};

#define NCASES	((int)(sizeof(cases) / sizeof(cases[0])))

START_TEST(test_json)
{
	char out[1024];
	size_t n;

	n = log_json(out, sizeof(out), T, "info", cases[_i].msg);
	ck_assert_str_eq(out, cases[_i].json);
	ck_assert_uint_eq(n, strlen(cases[_i].json));
}
END_TEST

START_TEST(test_json_short_buffer)
{
	char out[16];
	size_t n;

	memset(out, 'x', sizeof(out));
	n = log_json(out, sizeof(out), T, "info", cases[0].msg);
	ck_assert_uint_eq(n, strlen(cases[0].json));
	ck_assert_int_eq(out[sizeof(out) - 1], '\0');
	ck_assert_int_eq(strncmp(out, cases[0].json, sizeof(out) - 1), 0);
}
END_TEST

Suite *
log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("json");

	tcase_add_loop_test(tc, test_json, 0, NCASES);
	tcase_add_test(tc, test_json_short_buffer);
	suite_add_tcase(s, tc);
	return (s);
}
