#include <syslog.h>

#include "log_syslog.h"

void
log_syslog_open(void)
{
	/* LOG_NDELAY: connect now, while the files of /dev are still
	 * reachable, before any privilege drop. */
	openlog("smtpgate", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_syslog_write(int level, const char *line)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

	syslog(prio[level], "%s", line);
}
