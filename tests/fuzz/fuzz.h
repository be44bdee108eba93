/*
 * Fuzz targets: thin wrappers around pure functions (STYLE.md, "Tests").
 * Each fuzz_NAME.c defines LLVMFuzzerTestOneInput(); linked with libFuzzer
 * it is fuzzed, linked with replay.c it replays a corpus (make fuzz-replay).
 */
#ifndef SMTPGATE_FUZZ_H
#define SMTPGATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The file replay.c is running, for failure messages; NULL under libFuzzer. */
extern const char *fuzz_input_name;

/*
 * Whether invariant name is checked. SMTPGATE_FUZZ_IGNORE="a,b" turns some
 * off, so that a known finding does not hide the next one while it is open.
 */
int	fuzz_enabled(const char *name);
/* Report a broken invariant on stderr and abort(): libFuzzer keeps the input
 * as a crash, the replay exits non-zero. */
void	fuzz_fail(const char *name, const char *fmt, ...)
	    __attribute__((noreturn, format(printf, 2, 3)));

#define FUZZ_CHECK(name, cond, ...) do {				\
	if (!(cond) && fuzz_enabled(name))				\
		fuzz_fail(name, __VA_ARGS__);				\
} while (0)

#endif
