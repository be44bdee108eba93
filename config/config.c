/*
 * The config loader. inih does not tell its handler the line number, so the
 * reader below feeds it one line at a time and counts; it also sees section
 * headers, which inih only reports through the keys under them, so unknown
 * and empty sections are caught there.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <pwd.h>
#include <openssl/ssl.h>

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../proxy/proxyproto.h"
#include "config.h"

struct source {
	FILE		*f;		/* a file, or */
	const char	*s;		/* a string */
	struct config	*c;
};

static void __attribute__((format(printf, 3, 4)))
config_error(struct config *c, int line, const char *fmt, ...)
{
	char msg[512], *n;
	int len, hdr;
	va_list ap;

	if (line > 0)
		hdr = snprintf(msg, sizeof(msg), "%s:%d: ", c->file, line);
	else
		hdr = snprintf(msg, sizeof(msg), "%s: ", c->file);
	if (hdr < 0 || (size_t)hdr >= sizeof(msg))
		hdr = 0;
	va_start(ap, fmt);
	vsnprintf(msg + hdr, sizeof(msg) - (size_t)hdr, fmt, ap);
	va_end(ap);
	len = (int)strlen(msg);
	c->nerrors++;
	if ((n = realloc(c->errors, c->errors_len + (size_t)len + 2)) == NULL)
		return;
	c->errors = n;
	memcpy(c->errors + c->errors_len, msg, (size_t)len);
	c->errors_len += (size_t)len;
	c->errors[c->errors_len++] = '\n';
	c->errors[c->errors_len] = '\0';
}

/* Setters: each parses one value into the field at dst. */

typedef int (*setter_fn)(struct config *, void *dst, const char *value,
    const void *arg);

/* Parse "host:port", "[v6]:port" or "*:port" and resolve it now. */
static int
set_address(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_addr *a = dst;
	struct addrinfo hints, *res;
	char host[256];
	const char *port, *h = v;
	size_t hlen;
	int r;

	(void)arg;
	if (*v == '[') {
		const char *end = strchr(v, ']');

		if (end == NULL || end[1] != ':') {
			config_error(c, c->lineno, "'%s': expected [address]:port", v);
			return (-1);
		}
		h = v + 1;
		hlen = (size_t)(end - h);
		port = end + 2;
	} else {
		const char *colon = strrchr(v, ':');

		if (colon == NULL || strchr(v, ':') != colon) {
			config_error(c, c->lineno, "'%s': expected host:port "
			    "(an IPv6 address goes in brackets)", v);
			return (-1);
		}
		hlen = (size_t)(colon - v);
		port = colon + 1;
	}
	if (hlen == 0 || hlen >= sizeof(host) || *port == '\0' ||
	    strspn(port, "0123456789") != strlen(port) || strlen(port) > 5 ||
	    atol(port) == 0 || atol(port) > 65535) {
		config_error(c, c->lineno, "'%s': expected host:port", v);
		return (-1);
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (strcmp(host, "*") == 0 ? AI_PASSIVE : 0);
	r = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
	if (r != 0) {
		config_error(c, c->lineno, "'%s': %s", v, gai_strerror(r));
		return (-1);
	}
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	snprintf(a->text, sizeof(a->text), "%s", v);
	a->line = c->lineno;
	freeaddrinfo(res);
	return (0);
}

static int
set_hostname(struct config *c, void *dst, const char *v, const void *arg)
{
	(void)arg;
	if (*v == '\0' || strlen(v) >= 256 || strpbrk(v, " \t\r\n") != NULL) {
		config_error(c, c->lineno, "'%s': expected a host name", v);
		return (-1);
	}
	strcpy(dst, v);
	return (0);
}

struct range {
	long	min, max;
};

static int
set_long(struct config *c, void *dst, const char *v, const void *arg)
{
	const struct range *r = arg;
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || errno != 0 || n < r->min || n > r->max) {
		config_error(c, c->lineno, "'%s': expected a number from %ld "
		    "to %ld", v, r->min, r->max);
		return (-1);
	}
	*(long *)dst = n;
	return (0);
}

/* "30", "30s", "5m", "1h": seconds. */
static int
set_seconds(struct config *c, void *dst, const char *v, const void *arg)
{
	char *end;
	double n;

	(void)arg;
	errno = 0;
	n = strtod(v, &end);
	if (end != v && *end != '\0' && end[1] == '\0') {
		switch (*end) {
		case 's': end++; break;
		case 'm': n *= 60; end++; break;
		case 'h': n *= 3600; end++; break;
		}
	}
	if (end == v || *end != '\0' || errno != 0 || !(n > 0) || n > 86400 * 7) {
		config_error(c, c->lineno, "'%s': expected a duration such as "
		    "30, 30s or 5m", v);
		return (-1);
	}
	*(double *)dst = n;
	return (0);
}

/* A word from a NULL-terminated list; stores its index, or the value at the
 * same index in a parallel list of ints when one follows the NULL. */
struct words {
	const char	*names[8];	/* NULL-terminated */
	int		 values[8];
};

static int
set_word(struct config *c, void *dst, const char *v, const void *arg)
{
	const struct words *w = arg;
	char list[128] = "";
	int i;

	for (i = 0; w->names[i] != NULL; i++) {
		if (strcasecmp(v, w->names[i]) == 0) {
			*(int *)dst = w->values[i];
			return (0);
		}
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
		    i > 0 ? " | " : "", w->names[i]);
	}
	config_error(c, c->lineno, "'%s': expected %s", v, list);
	return (-1);
}

static int
set_string(struct config *c, void *dst, const char *v, const void *arg)
{
	char **s = dst;

	(void)arg;
	free(*s);
	if (*v == '\0') {
		*s = NULL;
		return (0);
	}
	if ((*s = strdup(v)) == NULL) {
		config_error(c, c->lineno, "out of memory");
		return (-1);
	}
	return (0);
}

/* A host name into a heap string (for the optional ones). */
static int
set_hostname_str(struct config *c, void *dst, const char *v, const void *arg)
{
	char tmp[256];

	if (set_hostname(c, tmp, v, arg) == -1)
		return (-1);
	return (set_string(c, dst, tmp, NULL));
}

/* cert and key repeat: each adds one path. */
static int
set_path(struct config *c, void *dst, const char *v, const void *arg)
{
	char **paths = dst;
	int *n = (int *)((char *)dst + (size_t)arg);

	if (*v == '\0') {
		config_error(c, c->lineno, "expected a file path");
		return (-1);
	}
	if (*n == CONFIG_MAX_CERTS) {
		config_error(c, c->lineno, "at most %d certificates",
		    CONFIG_MAX_CERTS);
		return (-1);
	}
	if ((paths[*n] = strdup(v)) == NULL) {
		config_error(c, c->lineno, "out of memory");
		return (-1);
	}
	(*n)++;
	return (0);
}

static int
set_listen(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_listener *l = dst;

	(void)arg;
	if (l->naddrs == CONFIG_MAX_ADDRS) {
		config_error(c, c->lineno, "at most %d addresses per listener",
		    CONFIG_MAX_ADDRS);
		return (-1);
	}
	if (set_address(c, &l->addrs[l->naddrs], v, NULL) == -1)
		return (-1);
	l->naddrs++;
	return (0);
}

/* "192.0.2.0/24, 2001:db8::/32, 198.51.100.7": adds every network. */
static int
set_cidrs(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_listener *l = dst;
	char item[128], *slash, *end;
	const char *p = v;
	struct config_cidr *n;
	size_t len;
	long bits;

	(void)arg;
	while (*p != '\0') {
		len = strcspn(p, ", \t");
		if (len == 0) {
			p++;
			continue;
		}
		if (len >= sizeof(item) || l->ntrusted == CONFIG_MAX_CIDRS) {
			config_error(c, c->lineno, "at most %d networks of up to "
			    "127 characters", CONFIG_MAX_CIDRS);
			return (-1);
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p += len;
		n = &l->trusted[l->ntrusted];
		if ((slash = strchr(item, '/')) != NULL)
			*slash = '\0';
		if (inet_pton(AF_INET, item, n->addr) == 1)
			n->family = AF_INET;
		else if (inet_pton(AF_INET6, item, n->addr) == 1)
			n->family = AF_INET6;
		else
			goto bad;
		bits = n->family == AF_INET ? 32 : 128;
		if (slash != NULL) {
			long max = bits;

			errno = 0;
			bits = strtol(slash + 1, &end, 10);
			if (slash[1] == '\0' || *end != '\0' || bits < 0 ||
			    bits > max)
				goto bad;
		}
		n->bits = (int)bits;
		l->ntrusted++;
		continue;
bad:
		if (slash != NULL)
			*slash = '/';
		config_error(c, c->lineno, "'%s': expected an address or "
		    "address/prefix", item);
		return (-1);
	}
	return (0);
}

static struct config_sni *
sni_find(struct config *c, const char *name)
{
	int i;

	for (i = 0; i < c->nsni; i++)
		if (strcmp(c->sni[i].name, name) == 0)
			return (&c->sni[i]);
	return (NULL);
}

/* Whether name (lower case already) is a host name, or "*." and one: labels
 * of letters, digits and hyphens (RFC 1123 section 2.1), a wildcard over
 * at least two labels. An address is refused: clients never send one as a
 * server name (RFC 6066 section 3). */
static int
sni_name_ok(const char *name)
{
	struct in_addr a;
	const char *p = name;
	size_t label = 0;
	int labels = 1;

	if (strncmp(p, "*.", 2) == 0)
		p += 2;
	if (*p == '\0' || strlen(name) > CONFIG_MAX_SNI_NAME ||
	    inet_pton(AF_INET, p, &a) == 1)
		return (0);
	for (; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0)
				return (0);
			label = 0;
			labels++;
		} else if ((islower((unsigned char)*p) ||
		    isdigit((unsigned char)*p) || *p == '-') && ++label <= 63) {
			continue;
		} else {
			return (0);
		}
	}
	return (label > 0 && (name[0] != '*' || labels >= 2));
}

/* "mail.a.org, *.b.org": adds every name, lower case. A name may be in one
 * [tls:NAME] section only, or which certificate it gets would depend on
 * the order of the file. */
static int
set_sni_names(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_sni *t = dst;
	char name[CONFIG_MAX_SNI_NAME + 2], **n;
	size_t len, k;
	int i, j;

	(void)arg;
	if (strspn(v, ", \t") == strlen(v)) {
		config_error(c, c->lineno, "expected host names such as "
		    "mail.example.org, *.example.org");
		return (-1);
	}
	while (*v != '\0') {
		if ((len = strcspn(v, ", \t")) == 0) {
			v++;
			continue;
		}
		for (k = 0; k < len && k < sizeof(name) - 1; k++)
			name[k] = (char)tolower((unsigned char)v[k]);
		name[k] = '\0';
		v += len;
		if (len >= sizeof(name) || !sni_name_ok(name)) {
			config_error(c, c->lineno, "'%s': expected a host name "
			    "or *.domain", name);
			return (-1);
		}
		for (i = 0; i < c->nsni; i++)
			for (j = 0; j < c->sni[i].nnames; j++)
				if (strcmp(c->sni[i].names[j], name) == 0) {
					config_error(c, c->lineno, "'%s' is "
					    "listed already in [tls:%s]", name,
					    c->sni[i].name);
					return (-1);
				}
		if ((n = realloc(t->names, sizeof(*n) *
		    (size_t)(t->nnames + 1))) == NULL) {
			config_error(c, c->lineno, "out of memory");
			return (-1);
		}
		t->names = n;
		if ((n[t->nnames] = strdup(name)) == NULL) {
			config_error(c, c->lineno, "out of memory");
			return (-1);
		}
		t->nnames++;
	}
	return (0);
}

static int
set_client_ca(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_listener *l = dst;

	(void)arg;
	if (*v == '\0') {
		config_error(c, c->lineno, "expected a file path");
		return (-1);
	}
	l->client_ca_line = c->lineno;
	return (set_string(c, &l->client_ca, v, NULL));
}

static const struct range r_conns = { 1, 1000000 };
static const struct range r_line = { 512, CONFIG_MAX_LINE_MAX };
static const struct range r_limit = { 0, 1000000 };
static const struct words w_bare = { { "normalize", "reject", NULL }, { 0, 1 } };
static const struct words w_log = { { "error", "warn", "info", "debug", NULL },
	{ CONFIG_LOG_ERROR, CONFIG_LOG_WARN, CONFIG_LOG_INFO, CONFIG_LOG_DEBUG } };
static const struct words w_tlsver = { { "TLSv1.2", "TLSv1.3", NULL },
	{ TLS1_2_VERSION, TLS1_3_VERSION } };
static const struct words w_mode = { { "implicit", "starttls", "egress",
	NULL }, { CONFIG_MODE_IMPLICIT, CONFIG_MODE_STARTTLS, CONFIG_MODE_EGRESS } };
static const struct words w_uptls = { { "auto", "implicit", "starttls", NULL },
	{ CONFIG_UP_AUTO, CONFIG_UP_IMPLICIT, CONFIG_UP_STARTTLS } };
static const struct words w_auth = { { "none", "plain", "login", NULL },
	{ CONFIG_AUTH_NONE, CONFIG_AUTH_PLAIN, CONFIG_AUTH_LOGIN } };
static const struct words w_app_auth = { { "ignore", "refuse", "offer",
	NULL }, { CONFIG_APP_AUTH_IGNORE, CONFIG_APP_AUTH_REFUSE,
	CONFIG_APP_AUTH_OFFER } };
static const struct words w_identity = { { "none", "proxy-v1", "proxy-v2",
	"xclient", NULL }, { CONFIG_ID_NONE, CONFIG_ID_PROXY_V1,
	CONFIG_ID_PROXY_V2, CONFIG_ID_XCLIENT } };
static const struct words w_proxy = { { "no", "v1", "v2", "any", NULL },
	{ 0, PROXYPROTO_V1, PROXYPROTO_V2, PROXYPROTO_V1 | PROXYPROTO_V2 } };
static const struct words w_log_format = { { "text", "json", NULL },
	{ CONFIG_LOG_TEXT, CONFIG_LOG_JSON } };
static const struct words w_verify = { { "none", "optional", "require",
	NULL }, { CONFIG_VERIFY_NONE, CONFIG_VERIFY_OPTIONAL,
	CONFIG_VERIFY_REQUIRE } };
static const struct words w_bool = { { "yes", "no", "true", "false", "on",
	"off", NULL }, { 1, 0, 1, 0, 1, 0 } };

enum section { SEC_GATEWAY, SEC_TLS, SEC_TIMEOUTS, SEC_LIMITS, SEC_LISTENER,
	       SEC_UPSTREAM, SEC_SNI };

/* "auto" (0: one per CPU) or a number. */
static int
set_workers(struct config *c, void *dst, const char *v, const void *arg)
{
	static const struct range r = { 1, CONFIG_MAX_WORKERS };

	(void)arg;
	if (strcasecmp(v, "auto") == 0) {
		*(long *)dst = 0;
		return (0);
	}
	return (set_long(c, dst, v, &r));
}

/* A user or group name: checked now, so -t catches a typo. */
static int
set_account(struct config *c, void *dst, const char *v, const void *arg)
{
	int group = arg != NULL;

	if (group ? getgrnam(v) == NULL : getpwnam(v) == NULL) {
		config_error(c, c->lineno, "'%s': no such %s", v,
		    group ? "group" : "user");
		return (-1);
	}
	if (group)
		c->group_line = c->lineno;
	else
		c->user_line = c->lineno;
	return (set_string(c, dst, v, NULL));
}

/* "587, 2525, 465": the ports an upstream is tried on, in order. */
static int
set_ports(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_upstream *u = dst;
	char *end;
	long port;

	(void)arg;
	u->nports = 0;
	while (*v != '\0') {
		if (*v == ',' || *v == ' ' || *v == '\t') {
			v++;
			continue;
		}
		errno = 0;
		port = strtol(v, &end, 10);
		if (end == v || errno != 0 || port < 1 || port > 65535 ||
		    (*end != '\0' && *end != ',' && *end != ' ' &&
		    *end != '\t') || u->nports == CONFIG_MAX_PORTS) {
			config_error(c, c->lineno, "'%s': expected up to %d ports "
			    "such as 587, 2525, 465", v, CONFIG_MAX_PORTS);
			return (-1);
		}
		u->ports[u->nports++] = port;
		v = end;
	}
	return (0);
}

/* A host name or address, resolved now; connections add the port. */
static int
set_host(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_upstream *u = dst;
	char hp[300];

	(void)arg;
	if (*v == '\0' || strlen(v) > 255 || strpbrk(v, " \t[]") != NULL) {
		config_error(c, c->lineno, "'%s': expected a host name or "
		    "address", v);
		return (-1);
	}
	snprintf(hp, sizeof(hp), strchr(v, ':') ? "[%s]:25" : "%s:25", v);
	if (set_address(c, &u->addr, hp, NULL) == -1)
		return (-1);
	return (set_string(c, &u->host, v, NULL));
}

/* password_file: the secret is read now, never written in the file. */
static int
set_password_file(struct config *c, void *dst, const char *v, const void *arg)
{
	struct config_upstream *u = dst;
	char buf[1024];
	size_t n;
	FILE *f;

	(void)arg;
	if ((f = fopen(v, "r")) == NULL) {
		config_error(c, c->lineno, "password_file %s: %s", v,
		    strerror(errno));
		return (-1);
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		config_error(c, c->lineno, "password_file %s is empty", v);
		return (-1);
	}
	if (set_string(c, &u->password, buf, NULL) == -1)
		return (-1);
	explicit_bzero(buf, sizeof(buf));
	return (set_string(c, &u->password_file, v, NULL));
}

#define G(f)	offsetof(struct config, f)
#define L(f)	offsetof(struct config_listener, f)
#define U(f)	offsetof(struct config_upstream, f)
#define S(f)	offsetof(struct config_sni, f)

/* Every key, in one place. Listener offsets are into the listener. */
static const struct key {
	enum section	 section;
	const char	*name;
	setter_fn	 set;
	size_t		 offset;
	const void	*arg;
} keys[] = {
	{ SEC_GATEWAY, "backend", set_address, G(backend), NULL },
	{ SEC_GATEWAY, "hostname", set_hostname, G(hostname), NULL },
	{ SEC_GATEWAY, "metrics", set_address, G(metrics), NULL },
	{ SEC_GATEWAY, "max_connections", set_long, G(max_connections), &r_conns },
	{ SEC_GATEWAY, "max_line", set_long, G(max_line), &r_line },
	{ SEC_GATEWAY, "bare_newlines", set_word, G(bare_reject), &w_bare },
	{ SEC_GATEWAY, "log_level", set_word, G(log_level), &w_log },
	{ SEC_GATEWAY, "client_identity", set_word, G(client_identity),
	    &w_identity },
	{ SEC_GATEWAY, "log_format", set_word, G(log_format), &w_log_format },
	{ SEC_GATEWAY, "syslog", set_word, G(syslog), &w_bool },
	{ SEC_GATEWAY, "workers", set_workers, G(workers), NULL },
	{ SEC_GATEWAY, "user", set_account, G(user), NULL },
	{ SEC_GATEWAY, "group", set_account, G(group), "group" },
	{ SEC_GATEWAY, "allow_root", set_word, G(allow_root), &w_bool },
	{ SEC_TLS, "cert", set_path, G(tls.certs),
	    (void *)(offsetof(struct config_tls, ncerts) -
	    offsetof(struct config_tls, certs)) },
	{ SEC_TLS, "key", set_path, G(tls.keys),
	    (void *)(offsetof(struct config_tls, nkeys) -
	    offsetof(struct config_tls, keys)) },
	{ SEC_TLS, "min_version", set_word, G(tls.min_version), &w_tlsver },
	{ SEC_TLS, "ciphers", set_string, G(tls.ciphers), NULL },
	{ SEC_TLS, "ciphersuites", set_string, G(tls.ciphersuites), NULL },
	{ SEC_TIMEOUTS, "handshake", set_seconds, G(timeouts.handshake), NULL },
	{ SEC_TIMEOUTS, "command", set_seconds, G(timeouts.command), NULL },
	{ SEC_TIMEOUTS, "data", set_seconds, G(timeouts.data), NULL },
	{ SEC_TIMEOUTS, "backend_connect", set_seconds,
	    G(timeouts.backend_connect), NULL },
	{ SEC_TIMEOUTS, "drain", set_seconds, G(timeouts.drain), NULL },
	{ SEC_TIMEOUTS, "proxy_header", set_seconds, G(timeouts.proxy_header),
	    NULL },
	{ SEC_LIMITS, "per_ip_connections", set_long,
	    G(limits.per_ip_connections), &r_limit },
	{ SEC_LIMITS, "per_ip_rate", set_long, G(limits.per_ip_rate), &r_limit },
	{ SEC_LIMITS, "max_errors", set_long, G(limits.max_errors), &r_limit },
	{ SEC_LISTENER, "address", set_listen, 0, NULL },
	{ SEC_LISTENER, "mode", set_word, L(mode), &w_mode },
	{ SEC_LISTENER, "backend", set_address, L(backend), NULL },
	{ SEC_LISTENER, "require_tls", set_word, L(require_tls), &w_bool },
	{ SEC_LISTENER, "client_identity", set_word, L(client_identity),
	    &w_identity },
	{ SEC_LISTENER, "accept_proxy", set_word, L(accept_proxy), &w_proxy },
	{ SEC_LISTENER, "trusted_proxies", set_cidrs, 0, NULL },
	{ SEC_LISTENER, "upstream", set_hostname, L(upstream_name), NULL },
	{ SEC_LISTENER, "app_auth", set_word, L(app_auth), &w_app_auth },
	{ SEC_LISTENER, "client_ca", set_client_ca, 0, NULL },
	{ SEC_LISTENER, "verify_client", set_word, L(verify_client),
	    &w_verify },
	{ SEC_SNI, "names", set_sni_names, 0, NULL },
	{ SEC_SNI, "cert", set_path, S(certs),
	    (void *)(S(ncerts) - S(certs)) },
	{ SEC_SNI, "key", set_path, S(keys), (void *)(S(nkeys) - S(keys)) },
	{ SEC_UPSTREAM, "host", set_host, 0, NULL },
	{ SEC_UPSTREAM, "ports", set_ports, 0, NULL },
	{ SEC_UPSTREAM, "tls", set_word, U(tls), &w_uptls },
	{ SEC_UPSTREAM, "verify", set_word, U(verify), &w_bool },
	{ SEC_UPSTREAM, "ca_file", set_string, U(ca_file), NULL },
	{ SEC_UPSTREAM, "server_name", set_string, U(server_name), NULL },
	{ SEC_UPSTREAM, "auth", set_word, U(auth), &w_auth },
	{ SEC_UPSTREAM, "username", set_string, U(username), NULL },
	{ SEC_UPSTREAM, "password_file", set_password_file, 0, NULL },
	{ SEC_UPSTREAM, "helo", set_hostname_str, U(helo), NULL },
};

#define NKEYS	(sizeof(keys) / sizeof(keys[0]))

static struct config_upstream *
upstream_find(struct config *c, const char *name)
{
	int i;

	for (i = 0; i < c->nupstreams; i++)
		if (strcmp(c->upstreams[i].name, name) == 0)
			return (&c->upstreams[i]);
	return (NULL);
}

static struct config_listener *
listener_find(struct config *c, const char *name)
{
	int i;

	for (i = 0; i < c->nlisteners; i++)
		if (strcmp(c->listeners[i].name, name) == 0)
			return (&c->listeners[i]);
	return (NULL);
}

#define SECTION_NAME_MAX	40

/* Check the NAME of a [kind:NAME] header: its length, that it is new, and
 * that there is room for one more. Returns 0 when the section may begin. */
static int
named_section_ok(struct config *c, const char *kind, const char *name,
    int exists, int count, int max)
{
	/* inih passes section names of up to 49 characters to the handler;
	 * a longer one would be matched cut short. */
	if (*name == '\0' || strlen(name) > SECTION_NAME_MAX) {
		config_error(c, c->lineno, "[%s:NAME] needs a name of 1 to %d "
		    "characters", kind, SECTION_NAME_MAX);
		return (-1);
	}
	if (exists) {
		config_error(c, c->lineno, "%s '%s' is defined twice", kind, name);
		return (-1);
	}
	if (count == max) {
		config_error(c, c->lineno, "at most %d %ss", max, kind);
		return (-1);
	}
	return (0);
}

static void
upstream_begin(struct config *c, const char *name)
{
	struct config_upstream *u;

	if (named_section_ok(c, "upstream", name, upstream_find(c, name) != NULL,
	    c->nupstreams, CONFIG_MAX_UPSTREAMS) == -1)
		return;
	u = &c->upstreams[c->nupstreams++];
	memset(u, 0, sizeof(*u));
	strcpy(u->name, name);
	u->line = c->lineno;
	u->verify = -1;
}

static void
sni_begin(struct config *c, const char *name)
{
	struct config_sni *t;

	if (named_section_ok(c, "tls", name, sni_find(c, name) != NULL,
	    c->nsni, CONFIG_MAX_SNI) == -1)
		return;
	t = &c->sni[c->nsni++];
	memset(t, 0, sizeof(*t));
	strcpy(t->name, name);
	t->line = c->lineno;
}

/* A section header, seen by the reader: check its name. */
static void
section_begin(struct config *c, const char *name)
{
	struct config_listener *l;

	if (strcmp(name, "gateway") == 0 || strcmp(name, "timeouts") == 0 ||
	    strcmp(name, "limits") == 0)
		return;
	if (strcmp(name, "tls") == 0) {
		c->tls_line = c->lineno;
		return;
	}
	if (strncmp(name, "upstream:", 9) == 0) {
		upstream_begin(c, name + 9);
		return;
	}
	if (strncmp(name, "tls:", 4) == 0) {
		sni_begin(c, name + 4);
		return;
	}
	if (strncmp(name, "listener:", 9) != 0) {
		config_error(c, c->lineno, "unknown section [%s] (expected gateway, "
		    "tls, tls:NAME, timeouts, limits, listener:NAME or "
		    "upstream:NAME)", name);
		return;
	}
	name += 9;
	if (named_section_ok(c, "listener", name, listener_find(c, name) != NULL,
	    c->nlisteners, CONFIG_MAX_LISTENERS) == -1)
		return;
	l = &c->listeners[c->nlisteners++];
	memset(l, 0, sizeof(*l));
	strcpy(l->name, name);
	l->line = c->lineno;
	l->require_tls = -1;
}

/* inih's reader: one line per call, counted. */
static char *
read_line(char *str, int num, void *stream)
{
	struct source *src = stream;
	size_t n = 0, cap = (size_t)num - 1;
	int ch, overlong = 0;
	const char *p;

	for (;;) {
		if (src->f != NULL)
			ch = fgetc(src->f);
		else
			ch = *src->s != '\0' ? (unsigned char)*src->s++ : EOF;
		if (ch == EOF)
			break;
		if (n < cap)
			str[n++] = (char)ch;
		else
			overlong = 1;
		if (ch == '\n')
			break;
	}
	if (n == 0)
		return (NULL);
	str[n] = '\0';
	src->c->lineno++;
	if (overlong) {
		config_error(src->c, src->c->lineno, "line too long (at most %d "
		    "characters)", num - 3);
		str[0] = '\0';
		return (str);
	}
	p = str;
	/* inih skips a UTF-8 byte order mark; so must the header check. */
	if (src->c->lineno == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	for (; isspace((unsigned char)*p); p++)
		;
	if (*p == '[') {
		const char *end = strchr(p, ']');
		char name[128];

		if (end != NULL && (size_t)(end - p - 1) < sizeof(name)) {
			memcpy(name, p + 1, (size_t)(end - p - 1));
			name[end - p - 1] = '\0';
			section_begin(src->c, name);
		} else if (end != NULL) {
			config_error(src->c, src->c->lineno, "section name too "
			    "long");
		}
	}
	return (str);
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct config *c = user;
	struct config_listener *l = NULL;
	struct config_upstream *u = NULL;
	struct config_sni *t = NULL;
	enum section sec;
	char *base;
	size_t i;

	if (*section == '\0') {
		config_error(c, c->lineno, "'%s' is outside any section", name);
		return (1);
	}
	if (strcmp(section, "gateway") == 0)
		sec = SEC_GATEWAY;
	else if (strcmp(section, "tls") == 0)
		sec = SEC_TLS;
	else if (strcmp(section, "timeouts") == 0)
		sec = SEC_TIMEOUTS;
	else if (strcmp(section, "limits") == 0)
		sec = SEC_LIMITS;
	else if (strncmp(section, "listener:", 9) == 0 &&
	    (l = listener_find(c, section + 9)) != NULL)
		sec = SEC_LISTENER;
	else if (strncmp(section, "upstream:", 9) == 0 &&
	    (u = upstream_find(c, section + 9)) != NULL)
		sec = SEC_UPSTREAM;
	else if (strncmp(section, "tls:", 4) == 0 &&
	    (t = sni_find(c, section + 4)) != NULL)
		sec = SEC_SNI;
	else
		return (1);	/* reported at the section header */
	base = sec == SEC_LISTENER ? (char *)l : sec == SEC_UPSTREAM ?
	    (char *)u : sec == SEC_SNI ? (char *)t : (char *)c;

	for (i = 0; i < NKEYS; i++) {
		if (keys[i].section != sec || strcmp(keys[i].name, name) != 0)
			continue;
		keys[i].set(c, base + keys[i].offset, value, keys[i].arg);
		return (1);
	}
	config_error(c, c->lineno, "unknown key '%s' in [%s]", name, section);
	return (1);
}

static void
complete(struct config *c)
{
	if (c->hostname[0] == '\0' &&
	    gethostname(c->hostname, sizeof(c->hostname) - 1) != 0)
		strcpy(c->hostname, "localhost");
	if (c->tls.min_version == 0)
		c->tls.min_version = TLS1_2_VERSION;
}

static void
validate_upstream(struct config *c, struct config_upstream *u)
{
	if (u->host == NULL)
		config_error(c, u->line, "upstream '%s' has no host", u->name);
	if (u->nports == 0)
		u->ports[u->nports++] = 587;
	if (u->verify == -1)
		u->verify = 1;
	if (u->auth != CONFIG_AUTH_NONE && (u->username == NULL ||
	    u->password == NULL))
		config_error(c, u->line, "upstream '%s': auth needs username "
		    "and password_file", u->name);
	/* What AUTH PLAIN carries must fit one line (RFC 4954 section 4). */
	if ((u->username != NULL && strlen(u->username) > 255) ||
	    (u->password != NULL && strlen(u->password) > 380))
		config_error(c, u->line, "upstream '%s': username (255) or "
		    "password (380 characters) too long", u->name);
}

static void
validate_sni(struct config *c, const struct config_sni *t)
{
	if (t->nnames == 0)
		config_error(c, t->line, "[tls:%s] needs names = the host "
		    "names it serves", t->name);
	if (t->ncerts == 0)
		config_error(c, t->line, "[tls:%s] needs cert and key", t->name);
	else if (t->ncerts != t->nkeys)
		config_error(c, t->line, "[tls:%s] has %d cert and %d key "
		    "lines: one key per cert, in the same order", t->name,
		    t->ncerts, t->nkeys);
}

/* Client certificates: what verify_client needs, and where it applies. */
static void
validate_verify(struct config *c, const struct config_listener *l)
{
	if (l->mode == CONFIG_MODE_EGRESS) {
		if (l->verify_client != CONFIG_VERIFY_NONE || l->client_ca)
			config_error(c, l->line, "listener '%s': verify_client "
			    "and client_ca are not for egress listeners",
			    l->name);
		return;
	}
	if (l->verify_client != CONFIG_VERIFY_NONE && l->client_ca == NULL)
		config_error(c, l->line, "listener '%s': verify_client needs "
		    "client_ca (the CA certificates to check against)", l->name);
	if (l->verify_client == CONFIG_VERIFY_NONE && l->client_ca != NULL)
		config_error(c, l->client_ca_line, "listener '%s': client_ca "
		    "without verify_client = optional | require", l->name);
}

static void
validate(struct config *c)
{
	struct config_listener *l;
	struct config_upstream *u;
	const struct passwd *pw;
	int i, j, tls_needed = 0;

	for (i = 0; i < c->nupstreams; i++)
		validate_upstream(c, &c->upstreams[i]);
	if (c->group != NULL && c->user == NULL)
		config_error(c, c->group_line, "group needs user in [gateway]");
	/* -t binds nothing: catch here what would only fail at start-up. */
	for (i = 0; c->metrics.len != 0 && i < c->nlisteners; i++)
		for (j = 0; j < c->listeners[i].naddrs; j++)
			if (c->listeners[i].addrs[j].len == c->metrics.len &&
			    memcmp(&c->listeners[i].addrs[j].ss, &c->metrics.ss,
			    c->metrics.len) == 0)
				config_error(c, c->metrics.line, "metrics %s is "
				    "also listener '%s''s address",
				    c->metrics.text, c->listeners[i].name);
	if (c->user != NULL && (pw = getpwnam(c->user)) != NULL &&
	    pw->pw_uid == 0 && !c->allow_root)
		config_error(c, c->user_line, "user = %s is root: serving as "
		    "root needs allow_root = yes", c->user);
	for (i = 0; i < c->nsni; i++)
		validate_sni(c, &c->sni[i]);
	if (c->nlisteners == 0)
		config_error(c, 0, "no [listener:NAME] section: nothing to serve");
	for (i = 0; i < c->nlisteners; i++) {
		l = &c->listeners[i];
		validate_verify(c, l);
		if (l->naddrs == 0)
			config_error(c, l->line, "listener '%s' has no address",
			    l->name);
		if (l->mode == CONFIG_MODE_NONE)
			config_error(c, l->line, "listener '%s' has no mode "
			    "(implicit | starttls | egress)", l->name);
		if (l->mode == CONFIG_MODE_EGRESS) {
			if ((u = upstream_find(c, l->upstream_name)) == NULL)
				config_error(c, l->line, "egress listener '%s' "
				    "needs upstream = NAME of an [upstream:NAME]",
				    l->name);
			else
				l->upstream = (int)(u - c->upstreams);
			if (l->require_tls != -1 || l->accept_proxy != 0 ||
			    l->backend.len != 0)
				config_error(c, l->line, "listener '%s': "
				    "require_tls, accept_proxy and backend are not "
				    "for egress listeners", l->name);
			continue;
		}
		tls_needed = 1;
		if (l->upstream_name[0] != '\0')
			config_error(c, l->line, "listener '%s': upstream is for "
			    "egress listeners only", l->name);
		if (l->mode == CONFIG_MODE_IMPLICIT && l->require_tls != -1)
			config_error(c, l->line, "listener '%s': require_tls is "
			    "for starttls listeners only", l->name);
		if (l->require_tls == -1)
			l->require_tls = 1;
		if (l->client_identity == CONFIG_ID_UNSET)
			l->client_identity = c->client_identity;
		if (l->accept_proxy != 0 && l->ntrusted == 0)
			config_error(c, l->line, "listener '%s': accept_proxy "
			    "needs trusted_proxies (the load balancers' "
			    "addresses)", l->name);
		if (l->accept_proxy == 0 && l->ntrusted != 0)
			config_error(c, l->line, "listener '%s': trusted_proxies "
			    "without accept_proxy", l->name);
		if (l->backend.len == 0 && c->backend.len == 0)
			config_error(c, l->line, "listener '%s' has no backend, "
			    "and [gateway] names none", l->name);
	}
	/* Egress listeners take plaintext from local apps: only the others
	 * need a certificate. */
	if (c->tls.ncerts == 0 && tls_needed)
		config_error(c, c->tls_line, "no certificate: [tls] needs cert "
		    "and key");
	else if (c->tls.ncerts != c->tls.nkeys)
		config_error(c, c->tls_line, "[tls] has %d cert and %d key "
		    "lines: one key per cert, in the same order", c->tls.ncerts,
		    c->tls.nkeys);
}

static struct config *
config_new(const char *name)
{
	struct config *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return (NULL);
	if ((c->file = strdup(name)) == NULL) {
		free(c);
		return (NULL);
	}
	c->max_connections = 10000;
	c->max_line = 4096;
	c->workers = 0;
	c->log_level = CONFIG_LOG_INFO;
	c->timeouts.handshake = 30;
	c->timeouts.command = 300;
	c->timeouts.data = 600;
	c->timeouts.backend_connect = 10;
	c->timeouts.drain = 30;
	c->timeouts.proxy_header = 3;
	c->client_identity = CONFIG_ID_NONE;
	c->limits.per_ip_connections = 20;
	c->limits.max_errors = 10;
	return (c);
}

static struct config *
load(struct source *src, const char *name)
{
	struct config *c;
	int r;

	if ((c = config_new(name)) == NULL)
		return (NULL);
	src->c = c;
	/* An indented line is a key like any other, not a continuation of the
	 * value above it. */
	ini_allow_multiline = false;
	r = ini_parse_stream(read_line, src, handler, c);
	if (r > 0)
		config_error(c, r, "syntax error (expected [section] or "
		    "key = value)");
	complete(c);
	validate(c);
	return (c);
}

struct config *
config_load(const char *path)
{
	struct source src = { 0 };
	struct config *c;

	if ((src.f = fopen(path, "r")) == NULL) {
		if ((c = config_new(path)) != NULL)
			config_error(c, 0, "%s", strerror(errno));
		return (c);
	}
	c = load(&src, path);
	fclose(src.f);
	return (c);
}

struct config *
config_load_string(const char *text, const char *name)
{
	struct source src = { 0 };

	src.s = text;
	return (load(&src, name));
}

socklen_t
config_upstream_addr(const struct config_upstream *u, long port,
    struct sockaddr_storage *ss_r)
{
	/* The host was resolved without a port (set_host). */
	memcpy(ss_r, &u->addr.ss, sizeof(*ss_r));
	if (ss_r->ss_family == AF_INET)
		((struct sockaddr_in *)ss_r)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss_r)->sin6_port = htons((uint16_t)port);
	return (u->addr.len);
}

int
config_cidr_match(const struct config_cidr *nets, int n,
    const struct sockaddr *sa)
{
	unsigned char addr[16];
	int family, i, full, rest;

	if (sa->sa_family == AF_INET) {
		family = AF_INET;
		memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)
		    ->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)
		    (const void *)sa)->sin6_addr.s6_addr;

		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)a)) {
			family = AF_INET;
			memcpy(addr, a + 12, 4);
		} else {
			family = AF_INET6;
			memcpy(addr, a, 16);
		}
	} else {
		return (0);
	}
	for (i = 0; i < n; i++) {
		if (nets[i].family != family)
			continue;
		full = nets[i].bits / 8;
		rest = nets[i].bits % 8;
		if (memcmp(addr, nets[i].addr, (size_t)full) != 0)
			continue;
		if (rest != 0 && ((addr[full] ^ nets[i].addr[full]) &
		    (0xff << (8 - rest)) & 0xff) != 0)
			continue;
		return (1);
	}
	return (0);
}

void
config_free(struct config *c)
{
	int i;

	if (c == NULL)
		return;
	for (i = 0; i < c->tls.ncerts; i++)
		free(c->tls.certs[i]);
	for (i = 0; i < c->tls.nkeys; i++)
		free(c->tls.keys[i]);
	for (i = 0; i < c->nupstreams; i++) {
		struct config_upstream *u = &c->upstreams[i];

		free(u->host);
		free(u->ca_file);
		free(u->server_name);
		free(u->username);
		free(u->password_file);
		if (u->password != NULL)
			explicit_bzero(u->password, strlen(u->password));
		free(u->password);
		free(u->helo);
	}
	for (i = 0; i < c->nsni; i++) {
		struct config_sni *t = &c->sni[i];
		int j;

		for (j = 0; j < t->nnames; j++)
			free(t->names[j]);
		free(t->names);
		for (j = 0; j < t->ncerts; j++)
			free(t->certs[j]);
		for (j = 0; j < t->nkeys; j++)
			free(t->keys[j]);
	}
	for (i = 0; i < c->nlisteners; i++)
		free(c->listeners[i].client_ca);
	free(c->tls.ciphers);
	free(c->tls.ciphersuites);
	free(c->user);
	free(c->group);
	free(c->errors);
	free(c->file);
	free(c);
}
