/* log_syslog: syslog(3) behind a tiny interface, in its own file because
 * <syslog.h> defines LOG_INFO and LOG_DEBUG, which log.h's levels reuse. */
#ifndef SMTPGATE_LOG_SYSLOG_H
#define SMTPGATE_LOG_SYSLOG_H

/* Open the connection to syslog (idempotent), facility mail. */
void	log_syslog_open(void);
/* level: 0 error, 1 warn, 2 info, 3 debug (enum log_level's order). */
void	log_syslog_write(int level, const char *line);

#endif
