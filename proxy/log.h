/*
 * log: one line per event, below a configured level, to stderr or syslog,
 * as text ("TIME LEVEL message") or JSON. Messages are written as leading
 * key=value fields (values with spaces in double quotes) and then free text;
 * the JSON form makes each leading field a member and the rest "msg".
 */
#ifndef SMTPGATE_LOG_H
#define SMTPGATE_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void	log_set_level(enum log_level);
/* json: JSON lines instead of text; to_syslog: to syslog (facility mail)
 * instead of stderr. */
void	log_set_output(int json, int to_syslog);
int	log_enabled(enum log_level);
void	log_msg(enum log_level, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* The JSON form of one message (see above) into out; returns its length,
 * or how long it would be, like snprintf. Exposed for the unit tests. */
size_t	log_json(char *out, size_t len, const char *stamp, const char *level,
	    const char *msg);

#endif
