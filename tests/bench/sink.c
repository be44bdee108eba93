/*
 * sink: the benchmark's backend, a fast plaintext SMTP server.
 *
 *   sink -l 127.0.0.1:PORT [-H hashes.log]
 *
 * One thread, epoll. It greets 220, answers EHLO with PIPELINING, 8BITMIME,
 * SIZE and CHUNKING, MAIL/RCPT/RSET/NOOP/HELO with 250, DATA with 354 and
 * then scans the body for CRLF.CRLF with memmem(), BDAT n [LAST] by count,
 * QUIT with 221. It never stores a message. With -H it computes a SHA-256
 * over each message (the DATA body as it came over the wire, up to and
 * including the CRLF before ".", or the BDAT chunks) and appends
 * "HEX BYTES\n" to the file before it acknowledges the message, so once a
 * client has its 250 the line is in the file. The benchmark compares the
 * lines with the hash the load generator computed over what it sent: every
 * run then also proves byte-exact delivery through the proxy under test.
 *
 * Its CPU is not measured, only the proxy's; it is fast so that it is not
 * what limits a run.
 */
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "netutil.h"

#define IN_CAP	(256 * 1024)	/* one read of a large body, and a command */
#define OUT_CAP	8192		/* replies; a pipelined burst stops at OUT_LOW */
#define OUT_LOW	1024		/* room kept for the longest reply (EHLO) */

enum phase { PHASE_CMD, PHASE_DATA, PHASE_BDAT };

struct conn {
	struct conn	*prev, *next;	/* all open connections, for exit */
	int		 fd;
	enum phase	 phase;
	int		 body_start;	/* no byte of this DATA body seen yet */
	int		 bdat_last;	/* the BDAT chunk being read ends the message */
	size_t		 bdat_left;	/* bytes of the BDAT chunk still to come */
	unsigned long long body_len;
	EVP_MD_CTX	*md;		/* NULL unless hashing */
	size_t		 in_len;
	size_t		 out_len, out_off;
	char		 in[IN_CAP];
	char		 out[OUT_CAP];
};

static struct conn *conns;
static FILE	*hash_log;
static int	 epfd;
static volatile sig_atomic_t stopping;

static const char EHLO_REPLY[] =
    "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
    "250-SIZE 104857600\r\n250 CHUNKING\r\n";

static void
on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void
reply(struct conn *c, const char *s)
{
	size_t n = strlen(s);

	/* conn_process() keeps OUT_LOW bytes free before each command. */
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
}

static void
body_begin(struct conn *c)
{
	c->body_len = 0;
	if (c->md != NULL)
		EVP_DigestInit_ex(c->md, EVP_sha256(), NULL);
}

static void
body_add(struct conn *c, const char *p, size_t n)
{
	c->body_len += n;
	if (c->md != NULL && n > 0)
		EVP_DigestUpdate(c->md, p, n);
}

/* The message is complete: log its hash, then acknowledge it. */
static void
body_end(struct conn *c)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl, i;

	if (c->md != NULL) {
		EVP_DigestFinal_ex(c->md, d, &dl);
		for (i = 0; i < dl; i++)
			fprintf(hash_log, "%02x", d[i]);
		fprintf(hash_log, " %llu\n", c->body_len);
		/* Flushed before the 250 goes out: see the top comment. */
		fflush(hash_log);
	}
	reply(c, "250 2.0.0 Ok: queued\r\n");
}

/* One command line (CRLF or LF stripped). Returns -1 to close. */
static int
command(struct conn *c, char *line)
{
	char *end;
	unsigned long long n;

	if (strncasecmp(line, "EHLO", 4) == 0)
		reply(c, EHLO_REPLY);
	else if (strncasecmp(line, "HELO", 4) == 0 ||
	    strncasecmp(line, "MAIL", 4) == 0 ||
	    strncasecmp(line, "RCPT", 4) == 0 ||
	    strncasecmp(line, "RSET", 4) == 0 ||
	    strncasecmp(line, "NOOP", 4) == 0)
		reply(c, "250 2.0.0 Ok\r\n");
	else if (strncasecmp(line, "DATA", 4) == 0) {
		reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
		c->phase = PHASE_DATA;
		c->body_start = 1;
		body_begin(c);
	} else if (strncasecmp(line, "BDAT ", 5) == 0) {
		n = strtoull(line + 5, &end, 10);
		if (end == line + 5) {
			reply(c, "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
			return (0);
		}
		if (c->phase != PHASE_BDAT)
			body_begin(c);
		c->phase = PHASE_BDAT;
		c->bdat_left = n;
		c->bdat_last = strcasecmp(end, " LAST") == 0;
	} else if (strncasecmp(line, "QUIT", 4) == 0) {
		reply(c, "221 2.0.0 Bye\r\n");
		return (-1);
	} else
		reply(c, "502 5.5.1 Unrecognized command\r\n");
	return (0);
}

/*
 * A DATA body: consume what is buffered. Returns the bytes used; sets the
 * phase back to commands when the end of data was seen.
 */
static size_t
data_scan(struct conn *c)
{
	char *p;
	size_t keep;

	/* An empty body: ".\r\n" straight after the 354. */
	if (c->body_start) {
		if (c->in_len < 3)
			return (0);
		if (memcmp(c->in, ".\r\n", 3) == 0) {
			c->phase = PHASE_CMD;
			body_end(c);
			return (3);
		}
		c->body_start = 0;
	}
	if ((p = memmem(c->in, c->in_len, "\r\n.\r\n", 5)) != NULL) {
		/* The CRLF before "." ends the body's last line. */
		body_add(c, c->in, (size_t)(p - c->in) + 2);
		c->phase = PHASE_CMD;
		body_end(c);
		return ((size_t)(p - c->in) + 5);
	}
	/* The last 4 bytes may start the end of data: keep them. */
	if (c->in_len <= 4)
		return (0);
	keep = c->in_len - 4;
	body_add(c, c->in, keep);
	return (keep);
}

/* Runs what is buffered. Returns -1 to close after flushing. */
static int
conn_process(struct conn *c)
{
	size_t used, n;
	char *lf;
	int rc = 0;

	for (;;) {
		if (c->out_len + OUT_LOW > OUT_CAP)
			break;
		if (c->phase == PHASE_DATA) {
			if ((used = data_scan(c)) == 0)
				break;
		} else if (c->phase == PHASE_BDAT && c->bdat_left > 0) {
			n = c->in_len < c->bdat_left ? c->in_len : c->bdat_left;
			if (n == 0)
				break;
			body_add(c, c->in, n);
			c->bdat_left -= n;
			used = n;
			if (c->bdat_left == 0) {
				if (c->bdat_last) {
					c->phase = PHASE_CMD;
					body_end(c);
				} else
					reply(c, "250 2.0.0 Chunk ok\r\n");
			}
		} else {
			if ((lf = memchr(c->in, '\n', c->in_len)) == NULL) {
				if (c->in_len == IN_CAP)
					return (-1);	/* no line end in 256 KB */
				break;
			}
			used = (size_t)(lf - c->in) + 1;
			*lf = '\0';
			if (lf > c->in && lf[-1] == '\r')
				lf[-1] = '\0';
			if (command(c, c->in) == -1)
				rc = -1;
		}
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
		if (rc == -1)
			break;
	}
	return (rc);
}

/* Returns -1 on an error, 0 when all was written, 1 when the socket is full. */
static int
conn_flush(struct conn *c)
{
	ssize_t n;

	while (c->out_off < c->out_len) {
		n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return (1);
		if (n == -1)
			return (-1);
		c->out_off += (size_t)n;
	}
	c->out_len = c->out_off = 0;
	return (0);
}

static void
conn_free(struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	close(c->fd);
	EVP_MD_CTX_free(c->md);
	free(c);
}

/*
 * Edge-triggered: read until EAGAIN, process, write until EAGAIN. A full
 * output buffer stops processing (not reading: the input buffer is bounded
 * and a full one stops reading), and the next EPOLLOUT carries on.
 */
static void
conn_event(struct conn *c)
{
	ssize_t n;
	int eof = 0, quit = 0, drained, fl;

	for (;;) {
		drained = 0;
		if (c->in_len < IN_CAP) {
			n = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
			if (n == -1 && errno == EINTR)
				continue;
			if (n == 0)
				eof = 1;
			else if (n == -1 && errno == EAGAIN)
				drained = 1;
			else if (n == -1) {
				conn_free(c);
				return;
			} else
				c->in_len += (size_t)n;
		}
		if (conn_process(c) == -1)
			quit = 1;
		if ((fl = conn_flush(c)) == -1) {
			conn_free(c);
			return;
		}
		if (quit || eof) {
			if (fl == 0) {
				conn_free(c);
				return;
			}
			/* Let the 221 drain before closing. */
			if (quit)
				shutdown(c->fd, SHUT_RD);
			return;
		}
		/*
		 * Edge-triggered: sleep only once the socket is drained (the
		 * next EPOLLIN comes) or full (the next EPOLLOUT comes).
		 */
		if (fl == 1 || drained)
			return;
	}
}

static void
accept_all(int lfd)
{
	struct epoll_event ev;
	struct conn *c;
	int fd;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) != -1) {
		net_nodelay(fd);
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		if ((c->next = conns) != NULL)
			conns->prev = c;
		conns = c;
		if (hash_log != NULL && (c->md = EVP_MD_CTX_new()) == NULL) {
			conn_free(c);
			continue;
		}
		reply(c, "220 sink ESMTP\r\n");
		ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
		ev.data.ptr = c;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
			conn_free(c);
			continue;
		}
		conn_event(c);
	}
}

int
main(int argc, char **argv)
{
	struct epoll_event evs[256], ev;
	const char *listen_addr = NULL, *log_path = NULL;
	int lfd, opt, n, i;
	static int listener_tag;

	while ((opt = getopt(argc, argv, "l:H:")) != -1) {
		switch (opt) {
		case 'l': listen_addr = optarg; break;
		case 'H': log_path = optarg; break;
		default: goto usage;
		}
	}
	if (listen_addr == NULL || optind != argc)
		goto usage;
	if (log_path != NULL && (hash_log = fopen(log_path, "a")) == NULL) {
		perror(log_path);
		return (1);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if ((lfd = net_listen(listen_addr)) == -1)
		return (1);
	if ((epfd = epoll_create1(0)) == -1) {
		perror("epoll_create1");
		return (1);
	}
	ev.events = EPOLLIN;
	ev.data.ptr = &listener_tag;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) == -1) {
		perror("epoll_ctl");
		return (1);
	}
	while (!stopping) {
		if ((n = epoll_wait(epfd, evs, 256, -1)) == -1) {
			if (errno == EINTR)
				continue;
			perror("epoll_wait");
			return (1);
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == &listener_tag)
				accept_all(lfd);
			else
				conn_event(evs[i].data.ptr);
		}
	}
	while (conns != NULL)
		conn_free(conns);
	close(epfd);
	close(lfd);
	if (hash_log != NULL)
		fclose(hash_log);
	return (0);
usage:
	fprintf(stderr, "usage: sink -l ADDR:PORT [-H hashes.log]\n");
	return (2);
}
