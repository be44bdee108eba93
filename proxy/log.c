#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "log_syslog.h"

/* Set by the control thread (at start and on reloads), read by all. */
static atomic_int level = LOG_INFO;
static atomic_int json, to_syslog;
static const char *const names[] = { "error", "warn", "info", "debug" };

void
log_set_level(enum log_level l)
{
	atomic_store_explicit(&level, (int)l, memory_order_relaxed);
}

void
log_set_output(int j, int s)
{
	if (s)
		log_syslog_open();
	atomic_store_explicit(&json, j, memory_order_relaxed);
	atomic_store_explicit(&to_syslog, s, memory_order_relaxed);
}

int
log_enabled(enum log_level l)
{
	return ((int)l <= atomic_load_explicit(&level, memory_order_relaxed));
}

/* Appends to out, never past len, and counts what it would have written. */
struct out {
	char	*p;
	size_t	 len, n;
};

static void
put(struct out *o, const char *s, size_t n)
{
	if (o->n < o->len)
		memcpy(o->p + o->n, s, o->n + n < o->len ? n : o->len - o->n);
	o->n += n;
}

/* A JSON string's contents: quotes, backslashes and control bytes escaped.
 * Bytes >= 0x80 pass as they are (the log is UTF-8 where the peers are). */
static void
put_escaped(struct out *o, const char *s, size_t n)
{
	char esc[8];
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			esc[0] = '\\';
			esc[1] = (char)ch;
			put(o, esc, 2);
		} else if (ch < 0x20 || ch == 0x7f) {
			put(o, esc, (size_t)snprintf(esc, sizeof(esc), "\\u%04x",
			    ch));
		} else {
			put(o, s + i, 1);
		}
	}
}

/* A leading field: key=value or key="value", keys of [a-z_]. Returns its
 * length and the key's and value's spans, or 0 when p is not a field. */
static size_t
field(const char *p, size_t *klen, const char **v, size_t *vlen)
{
	const char *q = p, *end;

	while ((*q >= 'a' && *q <= 'z') || *q == '_')
		q++;
	if (q == p || *q != '=')
		return (0);
	*klen = (size_t)(q - p);
	q++;
	if (*q == '"') {
		if ((end = strchr(q + 1, '"')) == NULL)
			return (0);
		*v = q + 1;
		*vlen = (size_t)(end - q - 1);
		end++;
	} else {
		end = q + strcspn(q, " ");
		*v = q;
		*vlen = (size_t)(end - q);
	}
	if (*end != ' ' && *end != '\0')
		return (0);
	return ((size_t)(end - p));
}

size_t
log_json(char *buf, size_t len, const char *stamp, const char *lvl,
    const char *msg)
{
	struct out o = { buf, len, 0 };
	const char *v;
	size_t klen, vlen, n;

	put(&o, "{\"time\":\"", 9);
	put(&o, stamp, strlen(stamp));
	put(&o, "\",\"level\":\"", 11);
	put(&o, lvl, strlen(lvl));
	put(&o, "\"", 1);
	while ((n = field(msg, &klen, &v, &vlen)) > 0) {
		put(&o, ",\"", 2);
		put(&o, msg, klen);
		put(&o, "\":", 2);
		/* Counts are numbers; everything else is a string. */
		if (vlen > 0 && vlen < 20 && strspn(v, "0123456789") >= vlen) {
			put(&o, v, vlen);
		} else {
			put(&o, "\"", 1);
			put_escaped(&o, v, vlen);
			put(&o, "\"", 1);
		}
		msg += n;
		while (*msg == ' ')
			msg++;
	}
	if (*msg != '\0') {
		put(&o, ",\"msg\":\"", 8);
		put_escaped(&o, msg, strlen(msg));
		put(&o, "\"", 1);
	}
	put(&o, "}", 1);
	if (len > 0)
		buf[o.n < len ? o.n : len - 1] = '\0';
	return (o.n);
}

void
log_msg(enum log_level l, const char *fmt, ...)
{
	char msg[1024], line[2048], stamp[40];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int j = atomic_load_explicit(&json, memory_order_relaxed);

	if (!log_enabled(l))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + strlen(stamp), sizeof(stamp) - strlen(stamp),
	    ".%03ldZ", ts.tv_nsec / 1000000);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (atomic_load_explicit(&to_syslog, memory_order_relaxed)) {
		/* syslog stamps the line itself. */
		if (j)
			log_json(line, sizeof(line), stamp, names[l], msg);
		log_syslog_write((int)l, j ? line : msg);
		return;
	}
	if (j)
		log_json(line, sizeof(line), stamp, names[l], msg);
	else
		snprintf(line, sizeof(line), "%s %s %s", stamp, names[l], msg);
	/* One fprintf per line, so lines from threads never interleave. */
	fprintf(stderr, "%s\n", line);
}
