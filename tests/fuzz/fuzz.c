/* Invariant reporting shared by the fuzz targets. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

const char *fuzz_input_name;

int
fuzz_enabled(const char *name)
{
	static const char *ignore;
	static int loaded;
	const char *p;
	size_t n = strlen(name);

	if (!loaded) {
		ignore = getenv("SMTPGATE_FUZZ_IGNORE");
		loaded = 1;
	}
	for (p = ignore; p != NULL && *p != '\0'; p += strcspn(p, ",")) {
		p += *p == ',';
		if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return (0);
	}
	return (1);
}

void
fuzz_fail(const char *name, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz: invariant '%s' broken: ", name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (fuzz_input_name != NULL)
		fprintf(stderr, "fuzz: input %s\n", fuzz_input_name);
	fflush(stderr);
	abort();
}
