#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tls/tls.h"
#include "gen.h"
#include "log.h"

/* The kernel caps the backlog at net.core.somaxconn; bursts of thousands of
 * clients are what it is for. */
#define LISTEN_BACKLOG	4096

static const struct config_addr *
addr_at(const struct config *c, int a)
{
	int i;

	for (i = 0; i < c->nlisteners; i++) {
		if (a < c->listeners[i].naddrs)
			return (&c->listeners[i].addrs[a]);
		a -= c->listeners[i].naddrs;
	}
	return (NULL);
}

static int
addr_count(const struct config *c)
{
	int i, n = 0;

	for (i = 0; i < c->nlisteners; i++)
		n += c->listeners[i].naddrs;
	return (n);
}

static int
same_addr(const struct config_addr *x, const struct config_addr *y)
{
	return (x->len == y->len && memcmp(&x->ss, &y->ss, x->len) == 0);
}

/* Bind one listening socket. With several workers every address gets one
 * socket per worker (SO_REUSEPORT): the kernel spreads connections over
 * them and no accept is shared between threads. */
static int
open_socket(const struct config_addr *a, int reuseport, char *err,
    size_t errlen)
{
	int fd, one = 1;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
		goto fail;
	/* [::]:port serves IPv6 only; IPv4 gets its own address line. */
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1 ||
	    listen(fd, LISTEN_BACKLOG) == -1)
		goto fail;
	return (fd);

fail:
	snprintf(err, errlen, "%s: %s", a->text, strerror(errno));
	if (fd != -1)
		close(fd);
	return (-1);
}

/* Take over old's sockets for the addresses both serve; bind the rest. */
static int
gen_sockets(struct gen *g, const struct gen *old, char *err, size_t errlen)
{
	const struct config_addr *a;
	int i, k, o, n = g->nworkers;

	g->naddrs = addr_count(g->conf);
	if ((g->fds = malloc(sizeof(int) * (size_t)(g->naddrs * n + 1))) ==
	    NULL) {
		snprintf(err, errlen, "out of memory");
		return (-1);
	}
	for (i = 0; i < g->naddrs * n; i++)
		g->fds[i] = -1;
	for (i = 0; i < g->naddrs; i++) {
		a = addr_at(g->conf, i);
		for (o = 0; old != NULL && o < old->naddrs; o++)
			if (old->fds[o * n] != -1 &&
			    same_addr(a, addr_at(old->conf, o)))
				break;
		if (old != NULL && o < old->naddrs) {
			/* An address written twice in the new file is bound
			 * twice, and fails like it would at start-up. */
			for (k = 0; k < i; k++)
				if (g->fds[k * n] == old->fds[o * n])
					break;
			if (k == i) {
				memcpy(&g->fds[i * n], &old->fds[o * n],
				    sizeof(int) * (size_t)n);
				continue;
			}
		}
		for (k = 0; k < n; k++)
			if ((g->fds[i * n + k] = open_socket(a, n > 1, err,
			    errlen)) == -1)
				return (-1);
	}
	return (0);
}

/* Whether fd is one of g's sockets. */
static int
gen_has_fd(const struct gen *g, int fd)
{
	int i;

	for (i = 0; g != NULL && i < g->naddrs * g->nworkers; i++)
		if (g->fds[i] == fd)
			return (1);
	return (0);
}

/* Give up the sockets g owns: close those keep is not taking over (unless
 * told not to), and own none. */
static void
drop_sockets(struct gen *g, const struct gen *keep, int close_them)
{
	int i;

	for (i = 0; g->fds != NULL && i < g->naddrs * g->nworkers; i++) {
		if (close_them && g->fds[i] != -1 && !gen_has_fd(keep, g->fds[i]))
			close(g->fds[i]);
		g->fds[i] = -1;
	}
}

static void
gen_free(struct gen *g)
{
	int i;

	drop_sockets(g, NULL, 1);
	free(g->fds);
	for (i = 0; i < CONFIG_MAX_LISTENERS; i++)
		SSL_CTX_free(g->ctx[i]);
	for (i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		SSL_CTX_free(g->up_ctx[i]);
	config_free(g->conf);
	free(g);
}

struct gen *
gen_new(struct config *c, int nworkers, const struct gen *old,
    unsigned number, char *err, size_t errlen)
{
	const struct config_upstream *u;
	struct gen *g;
	char e[400];
	int i;

	if ((g = calloc(1, sizeof(*g))) == NULL) {
		config_free(c);
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	atomic_init(&g->refs, 1);
	g->conf = c;
	g->number = number;
	g->nworkers = nworkers;
	for (i = 0; i < CONFIG_MAX_LISTENERS; i++)
		atomic_init(&g->up_preferred[i], 0);
	if (tls_server_ctxs_new(c, g->ctx, err, errlen) == -1)
		goto fail;
	for (i = 0; i < c->nupstreams; i++) {
		u = &c->upstreams[i];
		if ((g->up_ctx[i] = tls_client_ctx_new(u, e, sizeof(e))) ==
		    NULL) {
			snprintf(err, errlen, "%s:%d: upstream %s: %s", c->file,
			    u->line, u->name, e);
			goto fail;
		}
		if (!u->verify)
			log_msg(LOG_WARN, "upstream %s: verify = no: its "
			    "certificate is not checked", u->name);
	}
	if (nworkers > 0 && gen_sockets(g, old, err, errlen) == -1) {
		/* Only the sockets bound here are closed, never old's. */
		drop_sockets(g, old, 1);
		goto fail;
	}
	return (g);

fail:
	gen_free(g);
	return (NULL);
}

void
gen_retire(struct gen *old, const struct gen *g, int close_them)
{
	drop_sockets(old, g, close_them);
}

struct gen *
gen_ref(struct gen *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
	return (g);
}

void
gen_unref(struct gen *g)
{
	if (g != NULL &&
	    atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
		gen_free(g);
}
