/*
 * config: every case is a string in a table. Each runs twice, through
 * config_load_string() and through config_load() on a file of the same bytes,
 * so both readers (string and stdio) are covered. Good cases check the
 * values the rest of the program sees; bad ones check the exact
 * "FILE:LINE: " prefix, a key phrase of the message, and how many errors
 * there are (so one mistake does not cascade into noise).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../config/config.h"
#include "../../proxy/proxyproto.h"
#include "suites.h"

/* The pieces most cases are built from, with their line counts. */
#define GATEWAY		"[gateway]\nbackend = 127.0.0.1:25\n"		/* 2 */
#define TLS		"[tls]\ncert = /etc/c.pem\nkey = /etc/k.pem\n"	/* 3 */
#define LISTENER	"[listener:a]\naddress = 127.0.0.1:2525\n"	\
			"mode = starttls\n"				/* 3 */

#define X10		"xxxxxxxxxx"
#define X40		X10 X10 X10 X10
#define X50		X10 X10 X10 X10 X10
#define X250		X50 X50 X50 X50 X50

static const char example[] =
    "[gateway]\n"
    "backend = 127.0.0.1:25\n"
    "hostname = mail.example.org\n"
    "max_connections = 10000\n"
    "max_line = 4096\n"
    "bare_newlines = normalize     ; normalize | reject\n"
    "log_level = info              ; error | warn | info | debug\n"
    "[tls]\n"
    "cert = /etc/smtpgate/cert.pem\n"
    "key = /etc/smtpgate/key.pem\n"
    "min_version = TLSv1.2\n"
    "ciphers =\n"
    "ciphersuites =\n"
    "[timeouts]\n"
    "handshake = 30\n"
    "command = 300\n"
    "data = 600\n"
    "backend_connect = 10\n"
    "drain = 30\n"
    "[listener:smtps]\n"
    "address = 0.0.0.0:465\n"
    "mode = implicit\n"
    "backend = 127.0.0.1:25\n"
    "[listener:submission]\n"
    "address = 0.0.0.0:587\n"
    "mode = starttls\n"
    "require_tls = yes\n";

/* A temporary directory for the file-backed runs, made once per TCase. */
static char tmpdir[256];

static void
tmpdir_setup(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/smtpgate-config-XXXXXX",
	    t != NULL && *t != '\0' ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void
tmpdir_teardown(void)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/test.ini", tmpdir);
	(void)unlink(path);
	(void)rmdir(tmpdir);
}

/* The config under test: freed by the checked teardown, so a failed
 * assertion (which leaves the test early) leaks nothing under CK_FORK=no. */
static struct config *cur;

static void
config_teardown(void)
{
	config_free(cur);
	cur = NULL;
}

/*
 * Load text as "test.ini": from a string when even, from a file named
 * test.ini in tmpdir when odd. The name the messages use goes in name.
 */
static struct config *
load(const char *text, int mode, char *name, size_t namelen)
{
	struct config *c;
	FILE *f;

	if (mode % 2 == 0) {
		snprintf(name, namelen, "test.ini");
		cur = c = config_load_string(text, "test.ini");
	} else {
		snprintf(name, namelen, "%s/test.ini", tmpdir);
		f = fopen(name, "w");
		ck_assert_ptr_nonnull(f);
		ck_assert_int_ge(fputs(text, f), 0);
		ck_assert_int_eq(fclose(f), 0);
		cur = c = config_load(name);
		ck_assert_int_eq(unlink(name), 0);
	}
	ck_assert_ptr_nonnull(c);
	return (c);
}

/* An address as numbers: family, text of the IP, port. */
static void
check_addr(const struct config_addr *a, int family, const char *ip, int port)
{
	char got[INET6_ADDRSTRLEN];

	ck_assert_int_eq(a->ss.ss_family, family);
	if (family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)&a->ss;

		ck_assert_uint_eq(a->len, sizeof(*sin));
		ck_assert_ptr_nonnull(inet_ntop(AF_INET, &sin->sin_addr, got,
		    sizeof(got)));
		ck_assert_int_eq(ntohs(sin->sin_port), port);
	} else {
		const struct sockaddr_in6 *sin6 = (const void *)&a->ss;

		ck_assert_uint_eq(a->len, sizeof(*sin6));
		ck_assert_ptr_nonnull(inet_ntop(AF_INET6, &sin6->sin6_addr, got,
		    sizeof(got)));
		ck_assert_int_eq(ntohs(sin6->sin6_port), port);
	}
	ck_assert_str_eq(got, ip);
}

static void
check_defaults_rest(const struct config *c)
{
	ck_assert_int_eq(c->max_connections, 10000);
	ck_assert_int_eq(c->max_line, 4096);
	ck_assert_int_eq(c->bare_reject, 0);
	ck_assert_int_eq(c->log_level, CONFIG_LOG_INFO);
	ck_assert_uint_eq(c->metrics.len, 0);	/* off unless asked for */
	ck_assert_int_eq(c->tls.min_version, TLS1_2_VERSION);
	ck_assert_ptr_null(c->tls.ciphers);
	ck_assert_ptr_null(c->tls.ciphersuites);
	ck_assert_double_eq(c->timeouts.handshake, 30);
	ck_assert_double_eq(c->timeouts.command, 300);
	ck_assert_double_eq(c->timeouts.data, 600);
	ck_assert_double_eq(c->timeouts.backend_connect, 10);
	ck_assert_double_eq(c->timeouts.drain, 30);
}

/* Good cases: a config without errors, then what it must hold. */

typedef void (*check_fn)(const struct config *);

static void
check_example(const struct config *c)
{
	const struct config_listener *l;

	check_addr(&c->backend, AF_INET, "127.0.0.1", 25);
	ck_assert_str_eq(c->backend.text, "127.0.0.1:25");
	ck_assert_str_eq(c->hostname, "mail.example.org");
	check_defaults_rest(c);
	ck_assert_int_eq(c->tls.ncerts, 1);
	ck_assert_int_eq(c->tls.nkeys, 1);
	ck_assert_str_eq(c->tls.certs[0], "/etc/smtpgate/cert.pem");
	ck_assert_str_eq(c->tls.keys[0], "/etc/smtpgate/key.pem");

	ck_assert_int_eq(c->nlisteners, 2);
	l = &c->listeners[0];
	ck_assert_str_eq(l->name, "smtps");
	ck_assert_int_eq(l->line, 20);
	ck_assert_int_eq(l->naddrs, 1);
	check_addr(&l->addrs[0], AF_INET, "0.0.0.0", 465);
	ck_assert_str_eq(l->addrs[0].text, "0.0.0.0:465");
	ck_assert_int_eq(l->mode, CONFIG_MODE_IMPLICIT);
	check_addr(&l->backend, AF_INET, "127.0.0.1", 25);

	l = &c->listeners[1];
	ck_assert_str_eq(l->name, "submission");
	ck_assert_int_eq(l->line, 24);
	ck_assert_int_eq(l->naddrs, 1);
	check_addr(&l->addrs[0], AF_INET, "0.0.0.0", 587);
	ck_assert_int_eq(l->mode, CONFIG_MODE_STARTTLS);
	ck_assert_int_eq(l->require_tls, 1);
	ck_assert_uint_eq(l->backend.len, 0);	/* the [gateway] one */
}

static void
check_defaults(const struct config *c)
{
	check_defaults_rest(c);
	/* No hostname: the system's, never empty. */
	ck_assert_uint_gt(strlen(c->hostname), 0);
	ck_assert_int_eq(c->nlisteners, 1);
	ck_assert_str_eq(c->listeners[0].name, "a");
	ck_assert_int_eq(c->listeners[0].mode, CONFIG_MODE_STARTTLS);
	/* Unset, require_tls is on: a starttls listener refuses mail
	 * before STARTTLS unless the file says otherwise. */
	ck_assert_int_eq(c->listeners[0].require_tls, 1);
}

static void
check_durations(const struct config *c)
{
	ck_assert_double_eq(c->timeouts.handshake, 30);
	ck_assert_double_eq(c->timeouts.command, 30);
	ck_assert_double_eq(c->timeouts.data, 300);
	ck_assert_double_eq(c->timeouts.backend_connect, 3600);
	ck_assert_double_eq(c->timeouts.drain, 90);
}

static void
check_addresses(const struct config *c)
{
	const struct config_listener *l = &c->listeners[0];

	check_addr(&c->backend, AF_INET6, "::1", 25);
	ck_assert_str_eq(c->backend.text, "[::1]:25");
	ck_assert_int_eq(c->nlisteners, 1);
	ck_assert_int_eq(l->naddrs, 4);
	check_addr(&l->addrs[0], AF_INET6, "::1", 465);
	check_addr(&l->addrs[1], AF_INET, "127.0.0.1", 465);
	check_addr(&l->addrs[2], AF_INET6, "::", 465);
	check_addr(&l->addrs[3], AF_INET, "0.0.0.0", 65535);
	ck_assert_int_eq(l->mode, CONFIG_MODE_IMPLICIT);
}

static void
check_wildcard(const struct config *c)
{
	const struct config_addr *a = &c->listeners[0].addrs[0];

	/* "*" is the wildcard of whichever family getaddrinfo puts first. */
	ck_assert_int_eq(c->listeners[0].naddrs, 1);
	if (a->ss.ss_family == AF_INET)
		check_addr(a, AF_INET, "0.0.0.0", 25);
	else
		check_addr(a, AF_INET6, "::", 25);
	ck_assert_str_eq(a->text, "*:25");
}

static void
check_two_certs(const struct config *c)
{
	ck_assert_int_eq(c->tls.ncerts, 2);
	ck_assert_int_eq(c->tls.nkeys, 2);
	ck_assert_str_eq(c->tls.certs[0], "/etc/rsa.crt");
	ck_assert_str_eq(c->tls.keys[0], "/etc/rsa.key");
	ck_assert_str_eq(c->tls.certs[1], "/etc/ec.crt");
	ck_assert_str_eq(c->tls.keys[1], "/etc/ec.key");
}

static void
check_words(const struct config *c)
{
	ck_assert_int_eq(c->bare_reject, 1);
	ck_assert_int_eq(c->log_level, CONFIG_LOG_DEBUG);
	ck_assert_int_eq(c->tls.min_version, TLS1_3_VERSION);
	ck_assert_str_eq(c->tls.ciphers, "HIGH:!aNULL");
	ck_assert_str_eq(c->tls.ciphersuites, "TLS_AES_256_GCM_SHA384");
	ck_assert_int_eq(c->max_connections, 1);
	ck_assert_int_eq(c->max_line, 512);
	ck_assert_int_eq(c->nlisteners, 3);
	ck_assert_int_eq(c->listeners[0].require_tls, 0);
	ck_assert_int_eq(c->listeners[1].require_tls, 1);
	ck_assert_int_eq(c->listeners[2].require_tls, 0);
	ck_assert_int_eq(c->listeners[2].mode, CONFIG_MODE_STARTTLS);
}

static void
check_listener_backend(const struct config *c)
{
	ck_assert_uint_eq(c->backend.len, 0);
	check_addr(&c->listeners[0].backend, AF_INET, "127.0.0.1", 2526);
	ck_assert_int_eq(c->max_line, 8192);
}

static void
check_metrics(const struct config *c)
{
	check_addr(&c->metrics, AF_INET, "127.0.0.1", 9325);
	ck_assert_str_eq(c->metrics.text, "127.0.0.1:9325");
}

static void
check_metrics_v6(const struct config *c)
{
	check_addr(&c->metrics, AF_INET6, "::1", 9325);
}

static void
check_one_listener(const struct config *c)
{
	ck_assert_int_eq(c->nlisteners, 1);
	ck_assert_int_eq(c->listeners[0].naddrs, 1);
	ck_assert_int_eq(c->listeners[0].mode, CONFIG_MODE_STARTTLS);
	check_addr(&c->backend, AF_INET, "127.0.0.1", 25);
}

static void
check_long_name(const struct config *c)
{
	ck_assert_int_eq(c->nlisteners, 1);
	ck_assert_str_eq(c->listeners[0].name, X40);
	ck_assert_int_eq(c->listeners[0].naddrs, 1);
}

static void
check_identity(const struct config *c)
{
	const struct config_listener *l = &c->listeners[0];

	ck_assert_int_eq(c->client_identity, CONFIG_ID_XCLIENT);
	ck_assert_int_eq(l->client_identity, CONFIG_ID_PROXY_V2);
	ck_assert_int_eq(c->listeners[1].client_identity, CONFIG_ID_XCLIENT);
	ck_assert_int_eq(l->accept_proxy, PROXYPROTO_V1 | PROXYPROTO_V2);
	ck_assert_int_eq(l->ntrusted, 3);
	ck_assert_int_eq(l->trusted[0].family, AF_INET);
	ck_assert_int_eq(l->trusted[0].bits, 8);
	ck_assert_int_eq(l->trusted[1].family, AF_INET6);
	ck_assert_int_eq(l->trusted[1].bits, 128);
	ck_assert_int_eq(l->trusted[2].bits, 32);
	ck_assert(c->timeouts.proxy_header == 5);
}

static void
check_ops(const struct config *c)
{
	ck_assert_int_eq(c->workers, 4);
	ck_assert_str_eq(c->user, "nobody");
	ck_assert_str_eq(c->group, "nogroup");
	ck_assert_int_eq(c->user_line, 4);
	ck_assert_int_eq(c->allow_root, 0);
	ck_assert_int_eq(c->log_format, CONFIG_LOG_JSON);
	ck_assert_int_eq(c->syslog, 1);
}

static void
check_workers_auto(const struct config *c)
{
	ck_assert_int_eq(c->workers, 0);
	ck_assert_ptr_null(c->user);
	ck_assert_int_eq(c->allow_root, 1);
	ck_assert_int_eq(c->log_format, CONFIG_LOG_TEXT);
}

static void
check_sni(const struct config *c)
{
	const struct config_sni *t;
	const struct config_listener *l = &c->listeners[0];

	ck_assert_int_eq(c->nsni, 2);
	t = &c->sni[0];
	ck_assert_str_eq(t->name, "a");
	ck_assert_int_eq(t->line, 6);
	ck_assert_int_eq(t->nnames, 3);
	ck_assert_str_eq(t->names[0], "mail.a.org");
	ck_assert_str_eq(t->names[1], "*.b.org");
	ck_assert_str_eq(t->names[2], "smtp-1.a.org");
	ck_assert_int_eq(t->ncerts, 2);
	ck_assert_str_eq(t->certs[1], "/etc/a-ec.pem");
	ck_assert_str_eq(t->keys[1], "/etc/a-ec.key");
	t = &c->sni[1];
	ck_assert_str_eq(t->name, "c");
	ck_assert_int_eq(t->nnames, 1);
	ck_assert_str_eq(t->names[0], "c.example");
	ck_assert_int_eq(l->verify_client, CONFIG_VERIFY_REQUIRE);
	ck_assert_str_eq(l->client_ca, "/etc/ca.pem");
	ck_assert_int_eq(l->client_ca_line, 20);
	ck_assert_int_eq(c->listeners[1].verify_client, CONFIG_VERIFY_OPTIONAL);
	ck_assert_int_eq(c->listeners[2].verify_client, CONFIG_VERIFY_NONE);
	ck_assert_ptr_null(c->listeners[2].client_ca);
}

static const struct good_case {
	const char	*name;
	const char	*text;
	check_fn	 check;
} good_cases[] = {
	{ "example", example, check_example },
	{ "defaults", GATEWAY TLS LISTENER, check_defaults },
	{ "durations", GATEWAY TLS LISTENER
	    "[timeouts]\nhandshake = 30\ncommand = 30s\ndata = 5m\n"
	    "backend_connect = 1h\ndrain = 1.5m\n", check_durations },
	{ "ipv6 and several addresses",
	    "[gateway]\nbackend = [::1]:25\n" TLS
	    "[listener:a]\naddress = [::1]:465\naddress = 127.0.0.1:465\n"
	    "address = [::]:465\naddress = 0.0.0.0:65535\nmode = implicit\n",
	    check_addresses },
	{ "wildcard", GATEWAY TLS
	    "[listener:a]\naddress = *:25\nmode = starttls\n", check_wildcard },
	{ "rsa and ecdsa",
	    GATEWAY "[tls]\ncert = /etc/rsa.crt\nkey = /etc/rsa.key\n"
	    "cert = /etc/ec.crt\nkey = /etc/ec.key\n" LISTENER,
	    check_two_certs },
	{ "words",
	    "[gateway]\nbackend = 127.0.0.1:25\nbare_newlines = reject\n"
	    "log_level = DEBUG\nmax_connections = 1\nmax_line = 512\n"
	    "[tls]\ncert = /c\nkey = /k\nmin_version = TLSv1.3\n"
	    "ciphers = HIGH:!aNULL\nciphersuites = TLS_AES_256_GCM_SHA384\n"
	    "[listener:a]\naddress = 127.0.0.1:25\nmode = starttls\n"
	    "require_tls = no\n"
	    "[listener:b]\naddress = 127.0.0.1:587\nmode = StartTLS\n"
	    "require_tls = on\n"
	    "[listener:c]\naddress = 127.0.0.1:26\nmode = starttls\n"
	    "require_tls = false\n", check_words },
	{ "listener backend only",
	    "[gateway]\nmax_line = 8192\n" TLS
	    "[listener:a]\naddress = 127.0.0.1:2525\nmode = starttls\n"
	    "backend = 127.0.0.1:2526\n", check_listener_backend },
	{ "metrics", GATEWAY "metrics = 127.0.0.1:9325\n" TLS LISTENER,
	    check_metrics },
	{ "metrics on ipv6", GATEWAY "metrics = [::1]:9325\n" TLS LISTENER,
	    check_metrics_v6 },
	{ "comments and crlf",
	    "; a comment\r\n# another\r\n\r\n[gateway]\r\n"
	    "backend = 127.0.0.1:25   ; inline\r\n"
	    "[tls]\r\ncert = /c\r\nkey = /k\r\n"
	    "[listener:a]\r\naddress = 127.0.0.1:2525\r\nmode = starttls\r\n",
	    check_one_listener },
	{ "no newline at the end",
	    GATEWAY TLS "[listener:a]\naddress = 127.0.0.1:2525\n"
	    "mode = starttls", check_one_listener },
	/* The longest line the message for "line too long" promises. */
	{ "197 characters", GATEWAY ";" X50 X50 X50 X10 X10 X10 X10
	    "xxxxxx\n" TLS LISTENER, check_one_listener },
	/* Editors on Windows start files with a UTF-8 byte order mark; inih
	 * skips it, and the section on that first line must still count. */
	{ "byte order mark", "\xEF\xBB\xBF" LISTENER GATEWAY TLS,
	    check_one_listener },
	/* The longest listener name: inih hands the handler at most 49
	 * characters of "listener:NAME". */
	{ "client identity", "[gateway]\nbackend = 127.0.0.1:25\n"
	    "client_identity = xclient\n" TLS "[timeouts]\nproxy_header = 5s\n"
	    LISTENER "client_identity = proxy-v2\naccept_proxy = any\n"
	    "trusted_proxies = 10.0.0.0/8, ::1 192.0.2.7\n"
	    "[listener:b]\naddress = 127.0.0.1:2526\nmode = implicit\n",
	    check_identity },
	{ "operations", "[gateway]\nbackend = 127.0.0.1:25\nworkers = 4\n"
	    "user = nobody\ngroup = nogroup\nallow_root = no\n"
	    "log_format = json\nsyslog = yes\n" TLS LISTENER, check_ops },
	{ "workers auto", "[gateway]\nbackend = 127.0.0.1:25\nworkers = auto\n"
	    "allow_root = yes\n" TLS LISTENER, check_workers_auto },
	{ "sni and client certificates", GATEWAY TLS
	    "[tls:a]\nnames = Mail.A.org, *.B.ORG\n"
	    "cert = /etc/a-rsa.pem\nkey = /etc/a-rsa.key\n"
	    "cert = /etc/a-ec.pem\nkey = /etc/a-ec.key\n"
	    "names = smtp-1.a.org\n"
	    "[tls:c]\nnames=c.example\ncert = /c\nkey = /k\n"
	    "[listener:a]\naddress = 127.0.0.1:465\nmode = implicit\n"
	    "client_ca = /etc/ca.pem\nverify_client = require\n"
	    "[listener:b]\naddress = 127.0.0.1:587\nmode = starttls\n"
	    "verify_client = Optional\nclient_ca = /etc/ca.pem\n"
	    "[listener:c]\naddress = 127.0.0.1:588\nmode = starttls\n"
	    "verify_client = none\n", check_sni },
	{ "long listener name", GATEWAY TLS "[listener:" X40 "]\n"
	    "address = 127.0.0.1:2525\nmode = starttls\n", check_long_name },
};

#define NGOOD	((int)(sizeof(good_cases) / sizeof(good_cases[0])))

START_TEST(test_good)
{
	const struct good_case *gc = &good_cases[_i / 2];
	struct config *c;
	char name[512];

	c = load(gc->text, _i, name, sizeof(name));
	ck_assert_msg(c->nerrors == 0, "%s (%s): %d errors:\n%s", gc->name,
	    _i % 2 ? "file" : "string", c->nerrors,
	    c->errors != NULL ? c->errors : "");
	ck_assert_ptr_null(c->errors);
	ck_assert_str_eq(c->file, name);
	gc->check(c);
}
END_TEST

/*
 * Bad cases: prefix is "test.ini:LINE: " (or "test.ini: " for a whole-file
 * error); one message must start with it and contain phrase on that line.
 */
static const struct bad_case {
	const char	*name;
	const char	*text;
	int		 nerrors;
	const char	*prefix;
	const char	*phrase;
} bad_cases[] = {
	{ "unknown key", GATEWAY "bogus = 1\n" TLS LISTENER,
	    1, "test.ini:3: ", "unknown key 'bogus' in [gateway]" },
	{ "metrics without port", GATEWAY "metrics = 127.0.0.1\n" TLS LISTENER,
	    1, "test.ini:3: ", "'127.0.0.1': expected host:port" },
	{ "metrics port 0", GATEWAY "metrics = 127.0.0.1:0\n" TLS LISTENER,
	    1, "test.ini:3: ", "'127.0.0.1:0': expected host:port" },
	{ "metrics in a listener", GATEWAY TLS LISTENER
	    "metrics = 127.0.0.1:9325\n", 1, "test.ini:9: ",
	    "unknown key 'metrics' in [listener:a]" },
	{ "key of another section", GATEWAY "cert = /c\n" TLS LISTENER,
	    1, "test.ini:3: ", "unknown key 'cert' in [gateway]" },
	{ "unknown listener key", GATEWAY TLS LISTENER "port = 25\n",
	    1, "test.ini:9: ", "unknown key 'port' in [listener:a]" },
	{ "unknown timeouts key", GATEWAY TLS LISTENER "[timeouts]\n"
	    "connect = 10\n", 1, "test.ini:10: ",
	    "unknown key 'connect' in [timeouts]" },
	{ "unknown key, crlf", "[gateway]\r\nbackend = 127.0.0.1:25\r\n"
	    "bogus = 1\r\n" TLS LISTENER,
	    1, "test.ini:3: ", "unknown key 'bogus' in [gateway]" },
	{ "unknown section", GATEWAY TLS LISTENER "[gatway]\n"
	    "hostname = mx.example.org\n",
	    1, "test.ini:9: ", "unknown section [gatway]" },
	{ "unknown empty section", GATEWAY "[bogus]\n" TLS LISTENER,
	    1, "test.ini:3: ", "unknown section [bogus]" },
	{ "unknown section, long name", GATEWAY "[" X50 X50 X50 "]\n" TLS
	    LISTENER, 1, "test.ini:3: ", "section name too long" },
	{ "listener name too long", GATEWAY TLS LISTENER "[listener:" X40 "x]\n"
	    "address = 127.0.0.1:2526\nmode = starttls\n", 1, "test.ini:9: ",
	    "name of 1 to 40 characters" },
	/* A key before the first section header. */
	{ "key outside any section", "hostname = mx.example.org\n" GATEWAY
	    TLS LISTENER, 1, "test.ini:1: ", "outside any section" },
	/* Bad addresses go in a listener's backend, so the [gateway] one
	 * still serves and no second error follows. */
	{ "address without port", GATEWAY TLS LISTENER "backend = 127.0.0.1\n",
	    1, "test.ini:9: ", "'127.0.0.1': expected host:port" },
	{ "ipv6 without brackets", GATEWAY TLS LISTENER "backend = ::1:25\n",
	    1, "test.ini:9: ", "IPv6 address goes in brackets" },
	{ "ipv6 without port", GATEWAY TLS LISTENER "backend = [::1]25\n",
	    1, "test.ini:9: ", "'[::1]25': expected [address]:port" },
	{ "ipv6 unclosed", GATEWAY TLS LISTENER "backend = [::1:25\n",
	    1, "test.ini:9: ", "expected [address]:port" },
	{ "empty host", GATEWAY TLS LISTENER "backend = :25\n",
	    1, "test.ini:9: ", "':25': expected host:port" },
	{ "accept_proxy without trusted_proxies", GATEWAY TLS LISTENER
	    "accept_proxy = v2\n", 1, "test.ini:6: ", "needs trusted_proxies" },
	{ "trusted_proxies without accept_proxy", GATEWAY TLS LISTENER
	    "trusted_proxies = 10.0.0.1\n", 1, "test.ini:6: ",
	    "without accept_proxy" },
	{ "bad network", GATEWAY TLS LISTENER "accept_proxy = v1\n"
	    "trusted_proxies = 10.0.0.0/33\n", 2, "test.ini:10: ",
	    "'10.0.0.0/33': expected an address or address/prefix" },
	{ "bad client_identity", GATEWAY TLS LISTENER
	    "client_identity = proxy\n", 1, "test.ini:9: ",
	    "expected none | proxy-v1 | proxy-v2 | xclient" },
	{ "port zero", GATEWAY TLS LISTENER "backend = 127.0.0.1:0\n",
	    1, "test.ini:9: ", "'127.0.0.1:0': expected host:port" },
	{ "port too big", GATEWAY TLS LISTENER "backend = 127.0.0.1:65536\n",
	    1, "test.ini:9: ", "'127.0.0.1:65536': expected host:port" },
	{ "port not a number", GATEWAY TLS LISTENER
	    "backend = 127.0.0.1:smtp\n",
	    1, "test.ini:9: ", "'127.0.0.1:smtp': expected host:port" },
	{ "port empty", GATEWAY TLS LISTENER "backend = 127.0.0.1:\n",
	    1, "test.ini:9: ", "'127.0.0.1:': expected host:port" },
	{ "gateway backend bad", "[gateway]\nbackend = 127.0.0.1\n" TLS
	    LISTENER, 2, "test.ini:2: ", "expected host:port" },
	{ "bad listener address", GATEWAY TLS "[listener:a]\n"
	    "address = 127.0.0.1:2525\naddress = 127.0.0.1:99999\n"
	    "mode = starttls\n", 1, "test.ini:8: ", "expected host:port" },
	{ "too many addresses", GATEWAY TLS "[listener:a]\nmode = starttls\n"
	    "address = 127.0.0.1:1\naddress = 127.0.0.1:2\n"
	    "address = 127.0.0.1:3\naddress = 127.0.0.1:4\n"
	    "address = 127.0.0.1:5\naddress = 127.0.0.1:6\n"
	    "address = 127.0.0.1:7\naddress = 127.0.0.1:8\n"
	    "address = 127.0.0.1:9\n",
	    1, "test.ini:16: ", "at most 8 addresses" },
	{ "max_line too small", "[gateway]\nbackend = 127.0.0.1:25\n"
	    "max_line = 100\n" TLS LISTENER,
	    1, "test.ini:3: ", "'100': expected a number from 512 to 8192" },
	{ "max_line too big", GATEWAY "max_line = 8193\n" TLS LISTENER,
	    1, "test.ini:3: ", "expected a number from 512 to 8192" },
	{ "max_connections zero", GATEWAY "max_connections = 0\n" TLS
	    LISTENER, 1, "test.ini:3: ", "expected a number from 1 to" },
	{ "max_connections with a unit", GATEWAY "max_connections = 10k\n"
	    TLS LISTENER, 1, "test.ini:3: ", "'10k': expected a number" },
	{ "bad bare_newlines", GATEWAY "bare_newlines = strip\n" TLS LISTENER,
	    1, "test.ini:3: ", "'strip': expected normalize | reject" },
	{ "bad log_level", GATEWAY "log_level = verbose\n" TLS LISTENER,
	    1, "test.ini:3: ", "'verbose': expected error | warn | info" },
	{ "bad hostname", GATEWAY "hostname = mail example\n" TLS LISTENER,
	    1, "test.ini:3: ", "expected a host name" },
	{ "bad min_version", GATEWAY "[tls]\ncert = /c\nkey = /k\n"
	    "min_version = TLSv1.1\n" LISTENER,
	    1, "test.ini:6: ", "'TLSv1.1': expected TLSv1.2 | TLSv1.3" },
	{ "duration unit", GATEWAY TLS LISTENER "[timeouts]\n"
	    "command = 30x\n", 1, "test.ini:10: ",
	    "'30x': expected a duration" },
	{ "duration space", GATEWAY TLS LISTENER "[timeouts]\n"
	    "command = 5 m\n", 1, "test.ini:10: ", "expected a duration" },
	{ "duration negative", GATEWAY TLS LISTENER "[timeouts]\n"
	    "data = -1\n", 1, "test.ini:10: ", "expected a duration" },
	{ "duration zero", GATEWAY TLS LISTENER "[timeouts]\n"
	    "handshake = 0\n", 1, "test.ini:10: ", "expected a duration" },
	{ "duration word", GATEWAY TLS LISTENER "[timeouts]\n"
	    "drain = soon\n", 1, "test.ini:10: ", "expected a duration" },
	{ "duration empty", GATEWAY TLS LISTENER "[timeouts]\n"
	    "drain =\n", 1, "test.ini:10: ", "expected a duration" },
	{ "duration over a week", GATEWAY TLS LISTENER "[timeouts]\n"
	    "data = 1000h\n", 1, "test.ini:10: ", "expected a duration" },
	{ "listener without address", GATEWAY TLS "[listener:a]\n"
	    "mode = starttls\n", 1, "test.ini:6: ",
	    "listener 'a' has no address" },
	{ "listener without mode", GATEWAY TLS "[listener:a]\n"
	    "address = 127.0.0.1:2525\n", 1, "test.ini:6: ",
	    "listener 'a' has no mode" },
	{ "bad mode", GATEWAY TLS "[listener:a]\naddress = 127.0.0.1:2525\n"
	    "mode = tls\n", 2, "test.ini:8: ",
	    "'tls': expected implicit | starttls" },
	{ "empty listener name", GATEWAY TLS LISTENER "[listener:]\n"
	    "address = 127.0.0.1:2526\nmode = starttls\n",
	    1, "test.ini:9: ", "needs a name" },
	{ "duplicate listener", GATEWAY TLS LISTENER "[listener:a]\n"
	    "address = 127.0.0.1:2526\nmode = implicit\n",
	    1, "test.ini:9: ", "listener 'a' is defined twice" },
	{ "require_tls on implicit", GATEWAY TLS "[listener:a]\n"
	    "address = 127.0.0.1:465\nmode = implicit\nrequire_tls = yes\n",
	    1, "test.ini:6: ", "require_tls is for starttls listeners only" },
	{ "bad require_tls", GATEWAY TLS LISTENER "require_tls = maybe\n",
	    1, "test.ini:9: ", "'maybe': expected yes | no" },
	{ "no backend anywhere", TLS LISTENER,
	    1, "test.ini:4: ", "listener 'a' has no backend" },
	{ "cert without key", GATEWAY "[tls]\ncert = /c\n" LISTENER,
	    1, "test.ini:3: ", "[tls] has 1 cert and 0 key lines" },
	{ "key without cert", GATEWAY "[tls]\nkey = /k\n" LISTENER,
	    1, "test.ini:3: ", "no certificate" },
	{ "no tls section", GATEWAY LISTENER,
	    1, "test.ini: ", "no certificate" },
	{ "empty cert", GATEWAY "[tls]\ncert =\ncert = /c\nkey = /k\n"
	    LISTENER, 1, "test.ini:4: ", "expected a file path" },
	{ "five certs", GATEWAY "[tls]\n"
	    "cert = /1\nkey = /1\ncert = /2\nkey = /2\ncert = /3\nkey = /3\n"
	    "cert = /4\nkey = /4\ncert = /5\nkey = /5\n" LISTENER,
	    2, "test.ini:12: ", "at most 4 certificates" },
	{ "no listener", GATEWAY TLS,
	    1, "test.ini: ", "no [listener:NAME] section" },
	{ "empty file", "",
	    1, "test.ini: ", "no [listener:NAME] section" },
	{ "egress without upstream", GATEWAY "[listener:out]\n"
	    "address = 127.0.0.1:2525\nmode = egress\n", 1, "test.ini:3: ",
	    "needs upstream = NAME" },
	{ "upstream without host", "[listener:out]\naddress = 127.0.0.1:2525\n"
	    "mode = egress\nupstream = relay\n[upstream:relay]\nports = 587\n",
	    1, "test.ini:5: ", "upstream 'relay' has no host" },
	{ "upstream bad port list", "[listener:out]\naddress = 127.0.0.1:2525\n"
	    "mode = egress\nupstream = relay\n[upstream:relay]\n"
	    "host = 127.0.0.1\nports = 587, 99999\n", 1, "test.ini:7: ",
	    "expected up to 8 ports" },
	{ "upstream auth without password", "[listener:out]\n"
	    "address = 127.0.0.1:2525\nmode = egress\nupstream = relay\n"
	    "[upstream:relay]\nhost = 127.0.0.1\nauth = plain\n"
	    "username = u\n", 1, "test.ini:5: ",
	    "auth needs username and password_file" },
	{ "upstream missing password file", "[listener:out]\n"
	    "address = 127.0.0.1:2525\nmode = egress\nupstream = relay\n"
	    "[upstream:relay]\nhost = 127.0.0.1\n"
	    "password_file = /nonexistent/pw\n", 1, "test.ini:7: ",
	    "password_file /nonexistent/pw: No such file or directory" },
	{ "workers zero", GATEWAY "workers = 0\n" TLS LISTENER, 1,
	    "test.ini:3: ", "expected a number from 1 to 64" },
	{ "workers too many", GATEWAY "workers = 65\n" TLS LISTENER, 1,
	    "test.ini:3: ", "expected a number from 1 to 64" },
	{ "unknown user", GATEWAY "user = no-such-user-x\n" TLS LISTENER, 1,
	    "test.ini:3: ", "'no-such-user-x': no such user" },
	{ "unknown group", GATEWAY "user = nobody\ngroup = no-such-group-x\n"
	    TLS LISTENER, 1, "test.ini:4: ", "'no-such-group-x': no such group" },
	{ "group without user", GATEWAY "group = nogroup\n" TLS LISTENER, 1,
	    "test.ini:3: ", "group needs user" },
	{ "metrics on a listener's address", GATEWAY
	    "metrics = 127.0.0.1:2525\n" TLS LISTENER, 1, "test.ini:3: ",
	    "metrics 127.0.0.1:2525 is also listener 'a''s address" },
	{ "user root without allow_root", GATEWAY "user = root\n" TLS LISTENER,
	    1, "test.ini:3: ", "serving as root needs allow_root = yes" },
	{ "bad log format", GATEWAY "log_format = xml\n" TLS LISTENER, 1,
	    "test.ini:3: ", "'xml': expected text | json" },
	{ "tls section without names", GATEWAY TLS LISTENER "[tls:a]\n"
	    "cert = /c\nkey = /k\n", 1, "test.ini:9: ",
	    "[tls:a] needs names =" },
	{ "tls section without cert", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a.example\n", 1, "test.ini:9: ",
	    "[tls:a] needs cert and key" },
	{ "tls section cert without key", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a.example\ncert = /c\ncert = /d\nkey = /k\n", 1,
	    "test.ini:9: ", "[tls:a] has 2 cert and 1 key lines" },
	{ "name in two sections", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a.example, *.b.example\ncert = /c\nkey = /k\n"
	    "[tls:b]\ncert = /c\nkey = /k\nnames = b.example, *.B.example\n",
	    1, "test.ini:16: ", "'*.b.example' is listed already in [tls:a]" },
	{ "name twice in one section", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a.example\ncert = /c\nkey = /k\nnames = A.example\n",
	    1, "test.ini:13: ", "'a.example' is listed already in [tls:a]" },
	{ "wildcard over one label", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = *.org\ncert = /c\nkey = /k\n", 2, "test.ini:10: ",
	    "'*.org': expected a host name or *.domain" },
	{ "wildcard not leftmost", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a.*.org\ncert = /c\nkey = /k\n", 2, "test.ini:10: ",
	    "'a.*.org': expected a host name" },
	{ "partial wildcard", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = mail*.a.org\ncert = /c\nkey = /k\n", 2, "test.ini:10: ",
	    "'mail*.a.org': expected a host name" },
	{ "empty label", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a..org\ncert = /c\nkey = /k\n", 2, "test.ini:10: ",
	    "'a..org': expected a host name" },
	{ "trailing dot", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a.org.\ncert = /c\nkey = /k\n", 2, "test.ini:10: ",
	    "'a.org.': expected a host name" },
	{ "address as a name", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = 192.0.2.1\ncert = /c\nkey = /k\n", 2, "test.ini:10: ",
	    "'192.0.2.1': expected a host name" },
	{ "empty names", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = ,\ncert = /c\nkey = /k\n", 2, "test.ini:10: ",
	    "expected host names" },
	{ "protocol setting in a tls:NAME section", GATEWAY TLS LISTENER
	    "[tls:a]\nnames = a.example\ncert = /c\nkey = /k\n"
	    "min_version = TLSv1.3\n", 1, "test.ini:13: ",
	    "unknown key 'min_version' in [tls:a]" },
	{ "tls section twice", GATEWAY TLS LISTENER "[tls:a]\n"
	    "names = a.example\ncert = /c\nkey = /k\n[tls:a]\n", 1,
	    "test.ini:13: ", "tls 'a' is defined twice" },
	{ "verify_client without client_ca", GATEWAY TLS LISTENER
	    "verify_client = require\n", 1, "test.ini:6: ",
	    "verify_client needs client_ca" },
	{ "client_ca without verify_client", GATEWAY TLS LISTENER
	    "client_ca = /etc/ca.pem\n", 1, "test.ini:9: ",
	    "client_ca without verify_client" },
	{ "bad verify_client", GATEWAY TLS LISTENER "client_ca = /ca\n"
	    "verify_client = yes\n", 2, "test.ini:10: ",
	    "'yes': expected none | optional | require" },
	{ "empty client_ca", GATEWAY TLS LISTENER "client_ca =\n"
	    "verify_client = optional\n", 2, "test.ini:9: ",
	    "expected a file path" },
	{ "verify_client on egress", "[listener:out]\n"
	    "address = 127.0.0.1:2525\nmode = egress\nupstream = relay\n"
	    "verify_client = require\nclient_ca = /ca\n"
	    "[upstream:relay]\nhost = 127.0.0.1\n", 1, "test.ini:1: ",
	    "not for egress listeners" },
	{ "syntax error", GATEWAY "this line has no equals sign\n" TLS
	    LISTENER, 1, "test.ini:3: ", "syntax error" },
	{ "unclosed section", GATEWAY TLS LISTENER "[timeouts\n",
	    1, "test.ini:9: ", "syntax error" },
	{ "line too long", GATEWAY "hostname = " X250 "\n" TLS LISTENER,
	    1, "test.ini:3: ", "line too long" },
	{ "comment too long", GATEWAY TLS LISTENER "; " X250 X250 "\n",
	    1, "test.ini:9: ", "line too long" },
};

#define NBAD	((int)(sizeof(bad_cases) / sizeof(bad_cases[0])))

/* Whether one line of errors starts with prefix and holds phrase. */
static int
has_error(const char *errors, const char *prefix, const char *phrase)
{
	const char *line, *nl, *p;
	size_t plen = strlen(prefix);

	for (line = errors; line != NULL && *line != '\0'; line = nl + 1) {
		if ((nl = strchr(line, '\n')) == NULL)
			return (0);	/* every message ends in a newline */
		if (strncmp(line, prefix, plen) != 0)
			continue;
		if ((p = strstr(line + plen, phrase)) != NULL && p < nl)
			return (1);
	}
	return (0);
}

START_TEST(test_bad)
{
	const struct bad_case *bc = &bad_cases[_i / 2];
	struct config *c;
	char name[512], prefix[600];
	const char *p;
	int lines = 0;

	c = load(bc->text, _i, name, sizeof(name));
	/* The prefix names the file as it was given. */
	snprintf(prefix, sizeof(prefix), "%s%s", name,
	    bc->prefix + strlen("test.ini"));
	ck_assert_msg(c->errors != NULL, "%s (%s): no error at all", bc->name,
	    _i % 2 ? "file" : "string");
	ck_assert_msg(has_error(c->errors, prefix, bc->phrase),
	    "%s (%s): no \"%s...%s\" in:\n%s", bc->name,
	    _i % 2 ? "file" : "string", prefix, bc->phrase, c->errors);
	ck_assert_msg(c->nerrors == bc->nerrors, "%s (%s): %d errors, not %d:"
	    "\n%s", bc->name, _i % 2 ? "file" : "string", c->nerrors,
	    bc->nerrors, c->errors);
	/* One "FILE:..." line per error, each ending in a newline. */
	for (p = c->errors; *p != '\0'; p++)
		if (*p == '\n')
			lines++;
	ck_assert_int_eq(lines, c->nerrors);
	ck_assert_uint_eq(strlen(c->errors), c->errors_len);
	ck_assert_int_eq(c->errors[c->errors_len - 1], '\n');
}
END_TEST

START_TEST(test_missing_file)
{
	struct config *c;
	char path[512], want[600];

	snprintf(path, sizeof(path), "%s/missing.ini", tmpdir);
	cur = c = config_load(path);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->nerrors, 1);
	snprintf(want, sizeof(want), "%s: %s\n", path, strerror(ENOENT));
	ck_assert_str_eq(c->errors, want);
}
END_TEST

START_TEST(test_free_null)
{
	config_free(NULL);
}
END_TEST

/* trusted_proxies matching, IPv4-mapped addresses as IPv4. */
START_TEST(test_cidr_match)
{
	struct config *c = config_load_string(GATEWAY TLS LISTENER
	    "accept_proxy = any\ntrusted_proxies = 10.1.0.0/16, 2001:db8::/33, "
	    "192.0.2.1, 198.51.100.128/25\n", "test.ini");
	static const struct {
		const char	*addr;
		int		 match;
	} cases[] = {
		{ "10.1.2.3", 1 }, { "10.2.0.1", 0 }, { "::ffff:10.1.9.9", 1 },
		{ "192.0.2.1", 1 }, { "192.0.2.2", 0 }, { "198.51.100.200", 1 },
		{ "198.51.100.127", 0 }, { "2001:db8:7fff::1", 1 },
		{ "2001:db8:8000::1", 0 }, { "::1", 0 },
	};
	struct sockaddr_storage ss;
	size_t i;

	ck_assert_int_eq(c->nerrors, 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&ss, 0, sizeof(ss));
		if (strchr(cases[i].addr, ':') != NULL) {
			ss.ss_family = AF_INET6;
			ck_assert_int_eq(inet_pton(AF_INET6, cases[i].addr,
			    &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
		} else {
			ss.ss_family = AF_INET;
			ck_assert_int_eq(inet_pton(AF_INET, cases[i].addr,
			    &((struct sockaddr_in *)&ss)->sin_addr), 1);
		}
		ck_assert_msg(config_cidr_match(c->listeners[0].trusted,
		    c->listeners[0].ntrusted, (struct sockaddr *)&ss) ==
		    cases[i].match, "%s", cases[i].addr);
	}
	config_free(c);
}
END_TEST

Suite *
config_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("config");
	tc = tcase_create("good");
	tcase_add_unchecked_fixture(tc, tmpdir_setup, tmpdir_teardown);
	tcase_add_checked_fixture(tc, NULL, config_teardown);
	tcase_add_loop_test(tc, test_good, 0, 2 * NGOOD);
	suite_add_tcase(s, tc);

	tc = tcase_create("bad");
	tcase_add_unchecked_fixture(tc, tmpdir_setup, tmpdir_teardown);
	tcase_add_checked_fixture(tc, NULL, config_teardown);
	tcase_add_loop_test(tc, test_bad, 0, 2 * NBAD);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_free_null);
	tcase_add_test(tc, test_cidr_match);
	suite_add_tcase(s, tc);
	return (s);
}
