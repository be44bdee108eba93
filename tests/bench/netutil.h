/*
 * netutil: the socket helpers the sink and the load generator share.
 */
#ifndef NETUTIL_H
#define NETUTIL_H

#include <sys/socket.h>
#include <netinet/in.h>

/* "A.B.C.D:PORT" into *sa. Returns 0, or -1 with a message on stderr. */
int	net_parse(const char *s, struct sockaddr_in *sa);

/* A non-blocking listening socket on s (SO_REUSEADDR). Returns fd or -1. */
int	net_listen(const char *s);

/* Disables Nagle on fd: SMTP is small request/reply exchanges. */
void	net_nodelay(int fd);

/* A monotonic clock in nanoseconds. */
unsigned long long net_now_ns(void);

#endif
