/*
 * fuzz_config: config_load_string() over arbitrary text, then config_free()
 * (LeakSanitizer sees what it forgets). Checked after each load:
 *
 *  - every error is one line "fuzz.ini:LINE: ..." or "fuzz.ini: ...", with
 *    LINE within the text, and there are nerrors of them;
 *  - a config with no error is one the gateway can run: 1 to 32 listeners
 *    with distinct names, each with 1 to 8 resolved addresses, a mode and a
 *    backend; as many certs as keys, at least one; max_line within
 *    512..CONFIG_MAX_LINE_MAX; a host name without blanks.
 *
 * Addresses are resolved with getaddrinfo(). So that the fuzzer never sends
 * DNS queries (or waits for them), getaddrinfo is wrapped at link time
 * (-Wl,--wrap=getaddrinfo) to resolve numeric hosts only; "localhost" still
 * goes through /etc/hosts, which is local and fast.
 */
#include <sys/socket.h>
#include <netdb.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

#include "../../config/config.h"
#include "fuzz.h"

#define TEXT_MAX	(64 * 1024)
#define FILE_NAME	"fuzz.ini"

int	__real_getaddrinfo(const char *, const char *, const struct addrinfo *,
	    struct addrinfo **);
int	__wrap_getaddrinfo(const char *, const char *, const struct addrinfo *,
	    struct addrinfo **);

int
__wrap_getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
	struct addrinfo h;

	if (node == NULL || strcmp(node, "localhost") == 0)
		return (__real_getaddrinfo(node, service, hints, res));
	if (hints != NULL)
		h = *hints;
	else
		memset(&h, 0, sizeof(h));
	h.ai_flags |= AI_NUMERICHOST;
	return (__real_getaddrinfo(node, service, &h, res));
}

static void
check_addr(const struct config_addr *a, const char *what)
{
	FUZZ_CHECK("config-addr", a->len > 0 && a->len <= sizeof(a->ss) &&
	    (a->ss.ss_family == AF_INET || a->ss.ss_family == AF_INET6),
	    "%s: length %u, family %d", what, (unsigned)a->len,
	    a->ss.ss_family);
	FUZZ_CHECK("config-addr", memchr(a->text, '\0', sizeof(a->text)) !=
	    NULL, "%s: text not terminated", what);
}

static void
check_errors(const struct config *c, int nlines)
{
	const char *p = c->errors, *nl;
	int n = 0;
	long line;
	char *end;

	FUZZ_CHECK("config-errors", (c->nerrors == 0) == (c->errors == NULL),
	    "%d errors, text %s", c->nerrors, c->errors ? "set" : "NULL");
	if (p == NULL)
		return;
	FUZZ_CHECK("config-errors", strlen(p) == c->errors_len,
	    "errors_len %zu, text of %zu", c->errors_len, strlen(p));
	for (; *p != '\0'; p = nl + 1) {
		nl = strchr(p, '\n');
		FUZZ_CHECK("config-errors", nl != NULL, "an error without "
		    "its newline: [%s]", p);
		n++;
		FUZZ_CHECK("config-errors", strncmp(p, FILE_NAME ":",
		    sizeof(FILE_NAME)) == 0, "an error without the file "
		    "name: [%.*s]", (int)(nl - p), p);
		p += sizeof(FILE_NAME);
		if (*p == ' ')
			continue;
		line = strtol(p, &end, 10);
		FUZZ_CHECK("config-errors", end != p && *end == ':' &&
		    line >= 1 && line <= nlines, "an error at line %ld of "
		    "%d: [%.*s]", line, nlines, (int)(nl - p), p);
	}
	FUZZ_CHECK("config-errors", n == c->nerrors, "%d error lines, "
	    "nerrors %d", n, c->nerrors);
}

static void
check_valid(const struct config *c)
{
	const struct config_listener *l;
	int i, j;

	FUZZ_CHECK("config-valid", c->nlisteners >= 1 &&
	    c->nlisteners <= CONFIG_MAX_LISTENERS, "%d listeners",
	    c->nlisteners);
	FUZZ_CHECK("config-valid", c->max_line >= 512 &&
	    c->max_line <= CONFIG_MAX_LINE_MAX, "max_line %ld", c->max_line);
	FUZZ_CHECK("config-valid", memchr(c->hostname, '\0',
	    sizeof(c->hostname)) != NULL && c->hostname[0] != '\0' &&
	    strpbrk(c->hostname, " \t\r\n") == NULL, "hostname [%.40s]",
	    c->hostname);
	FUZZ_CHECK("config-valid", c->tls.ncerts >= 1 &&
	    c->tls.ncerts <= CONFIG_MAX_CERTS && c->tls.ncerts == c->tls.nkeys,
	    "%d certs, %d keys", c->tls.ncerts, c->tls.nkeys);
	if (c->backend.len > 0)
		check_addr(&c->backend, "[gateway] backend");
	for (i = 0; i < c->nlisteners; i++) {
		l = &c->listeners[i];
		FUZZ_CHECK("config-valid", memchr(l->name, '\0',
		    sizeof(l->name)) != NULL && l->name[0] != '\0',
		    "listener %d has no name", i);
		for (j = 0; j < i; j++)
			FUZZ_CHECK("config-valid", strcmp(l->name,
			    c->listeners[j].name) != 0, "listener '%s' twice",
			    l->name);
		FUZZ_CHECK("config-valid", l->naddrs >= 1 &&
		    l->naddrs <= CONFIG_MAX_ADDRS, "listener '%s': %d addresses",
		    l->name, l->naddrs);
		for (j = 0; j < l->naddrs && j < CONFIG_MAX_ADDRS; j++)
			check_addr(&l->addrs[j], l->name);
		FUZZ_CHECK("config-valid", l->mode == CONFIG_MODE_IMPLICIT ||
		    l->mode == CONFIG_MODE_STARTTLS, "listener '%s': mode %d",
		    l->name, (int)l->mode);
		FUZZ_CHECK("config-valid", l->require_tls == 0 ||
		    l->require_tls == 1, "listener '%s': require_tls %d",
		    l->name, l->require_tls);
		FUZZ_CHECK("config-valid", l->backend.len > 0 ||
		    c->backend.len > 0, "listener '%s': no backend", l->name);
		if (l->backend.len > 0)
			check_addr(&l->backend, l->name);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *c;
	char *text;
	size_t i;
	int nlines = 0;

	if (size > TEXT_MAX)
		size = TEXT_MAX;
	if ((text = malloc(size + 1)) == NULL)
		return (0);
	memcpy(text, data, size);
	text[size] = '\0';
	/* The loader reads up to the first NUL, one line per newline. */
	for (i = 0; text[i] != '\0'; i++)
		if (text[i] == '\n' || text[i + 1] == '\0')
			nlines++;

	if ((c = config_load_string(text, FILE_NAME)) != NULL) {
		check_errors(c, nlines);
		if (c->nerrors == 0)
			check_valid(c);
		config_free(c);
	}
	free(text);
	return (0);
}
