/*
 * netutil: the socket helpers the sink and the load generator share.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "netutil.h"

int
net_parse(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon;
	char *end;
	unsigned long port;

	if ((colon = strrchr(s, ':')) == NULL ||
	    (size_t)(colon - s) >= sizeof(host))
		goto bad;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	port = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || port == 0 || port > 65535)
		goto bad;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		goto bad;
	return (0);
bad:
	fprintf(stderr, "%s: not an IPv4 ADDR:PORT\n", s);
	return (-1);
}

int
net_listen(const char *s)
{
	struct sockaddr_in sa;
	int fd, one = 1;

	if (net_parse(s, &sa) == -1)
		return (-1);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1)
		goto err0;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    listen(fd, 4096) == -1)
		goto err1;
	return (fd);
err1:
	close(fd);
err0:
	perror(s);
	return (-1);
}

void
net_nodelay(int fd)
{
	int one = 1;

	/* Best effort: a failure costs latency, not correctness. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

unsigned long long
net_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((unsigned long long)ts.tv_sec * 1000000000ULL +
	    (unsigned long long)ts.tv_nsec);
}
