/* log: lines to stderr, "TIME LEVEL message", below a configured level. */
#ifndef SMTPGATE_LOG_H
#define SMTPGATE_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void	log_set_level(enum log_level);
int	log_enabled(enum log_level);
void	log_msg(enum log_level, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

#endif
