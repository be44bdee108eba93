#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "log.h"

static enum log_level level = LOG_INFO;
static const char *const names[] = { "error", "warn", "info", "debug" };

void
log_set_level(enum log_level l)
{
	level = l;
}

int
log_enabled(enum log_level l)
{
	return (l <= level);
}

void
log_msg(enum log_level l, const char *fmt, ...)
{
	char line[1024], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (!log_enabled(l))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line, so lines from threads never interleave. */
	fprintf(stderr, "%s.%03ldZ %s %s\n", stamp, ts.tv_nsec / 1000000,
	    names[l], line);
}
