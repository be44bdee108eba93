/*
 * A main() for the fuzz targets without libFuzzer: run every file named on
 * the command line, or found directly in a directory named there, through
 * LLVMFuzzerTestOneInput() once, each in a child process, so that one that
 * breaks an invariant (abort), crashes or hangs is reported and the others
 * still run. Exits 1 if any failed; `make fuzz-replay` runs each corpus this
 * way with the normal compiler.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

#define REPLAY_MAX	(1024 * 1024)	/* libFuzzer's default -max_len is far less */
#define REPLAY_SECONDS	10		/* as make fuzz's -timeout */

/* An input that runs this long hangs the code under test: a finding. */
static void
on_alarm(int sig)
{
	static const char msg[] = "replay: timeout: the input runs over "
	    "10 seconds (an endless loop?)\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	if (fuzz_input_name != NULL) {
		(void)!write(2, "replay: input ", 14);
		(void)!write(2, fuzz_input_name, strlen(fuzz_input_name));
		(void)!write(2, "\n", 1);
	}
	abort();
}

/* Run one file. Returns 0, or -1 when it cannot be read. */
static int
run_input(const char *path)
{
	FILE *f;
	uint8_t *data;
	size_t n;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return (-1);
	}
	if ((data = malloc(REPLAY_MAX)) == NULL) {
		fclose(f);
		return (-1);
	}
	n = fread(data, 1, REPLAY_MAX, f);
	if (ferror(f)) {
		fprintf(stderr, "replay: %s: read error\n", path);
		free(data);
		fclose(f);
		return (-1);
	}
	fclose(f);
	fuzz_input_name = path;
	alarm(REPLAY_SECONDS);
	LLVMFuzzerTestOneInput(data, n);
	alarm(0);
	fuzz_input_name = NULL;
	free(data);
	return (0);
}

/* Run one file in a child. Returns 0, or -1 when it failed. */
static int
run_file(const char *path)
{
	pid_t pid;
	int status;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) == -1) {
		fprintf(stderr, "replay: fork: %s\n", strerror(errno));
		return (-1);
	}
	if (pid == 0)
		_exit(run_input(path) == 0 ? 0 : 1);
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return (-1);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return (0);
	if (WIFSIGNALED(status))
		fprintf(stderr, "replay: FAILED %s (signal %d)\n", path,
		    WTERMSIG(status));
	else
		fprintf(stderr, "replay: FAILED %s (exit %d)\n", path,
		    WEXITSTATUS(status));
	return (-1);
}

static int
skip_dot(const struct dirent *d)
{
	return (d->d_name[0] != '.');
}

int
main(int argc, char **argv)
{
	struct dirent **names;
	struct stat st;
	char path[4096];
	int i, j, n, runs = 0, failed = 0, errors = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return (2);
	}
	signal(SIGALRM, on_alarm);
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) == -1) {
			fprintf(stderr, "replay: %s: %s\n", argv[i],
			    strerror(errno));
			errors++;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			failed += run_file(argv[i]) == -1;
			runs++;
			continue;
		}
		if ((n = scandir(argv[i], &names, skip_dot, alphasort)) == -1) {
			fprintf(stderr, "replay: %s: %s\n", argv[i],
			    strerror(errno));
			errors++;
			continue;
		}
		for (j = 0; j < n; j++) {
			snprintf(path, sizeof(path), "%s/%s", argv[i],
			    names[j]->d_name);
			if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
				failed += run_file(path) == -1;
				runs++;
			}
			free(names[j]);
		}
		free(names);
	}
	printf("%s: %d inputs replayed, %d failed%s\n", argv[0], runs, failed,
	    errors ? ", some paths unreadable" : "");
	return (failed || errors ? 1 : 0);
}
