/*
 * gen: one generation of the configuration: the loaded config, the TLS
 * contexts built from it and the listening sockets it serves. A reload builds
 * a new generation beside the running one and switches only once all of it
 * was built. Generations are reference-counted: the control thread holds the
 * current one and every listener (in every worker) holds the one it was made
 * from, so open sessions finish on the settings they started with.
 */
#ifndef SMTPGATE_GEN_H
#define SMTPGATE_GEN_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stddef.h>

#include "../config/config.h"

struct gen {
	atomic_int		 refs;
	unsigned		 number;	/* 1, 2, ...: for the log */
	struct config		*conf;		/* owned */
	SSL_CTX			*ctx[CONFIG_MAX_LISTENERS];	/* per
						 * [listener:NAME]'s server side;
						 * NULL: egress */
	SSL_CTX			*up_ctx[CONFIG_MAX_UPSTREAMS];	/* per
						 * [upstream:NAME] */
	int			 nworkers;
	/* One listening socket per listener address and worker: the socket of
	 * address a (in config order) for worker i is fds[a * nworkers + i]. */
	int			 naddrs;
	int			*fds;
	/* Egress: per listener, the index of the upstream port that last
	 * worked, shared by all workers (the next session tries it first). */
	atomic_int		 up_preferred[CONFIG_MAX_LISTENERS];
};

/* Build a generation from c (taken over, freed with it on failure too): TLS
 * contexts, and the listening sockets: those of addresses old already
 * listens on are shared (no connection is refused during a reload), the
 * others bound now. Returns NULL with a message in err. */
struct gen	*gen_new(struct config *c, int nworkers, const struct gen *old,
		    unsigned number, char *err, size_t errlen);
/* Once no worker accepts on old any more: close the sockets of old that g
 * did not take over, and leave old owning none. close_them 0: close none
 * (a worker might still use them; they are left open for good). */
void		 gen_retire(struct gen *old, const struct gen *g,
		    int close_them);
struct gen	*gen_ref(struct gen *g);
/* Drop a reference; the last one frees the generation and closes the
 * sockets it still owns. NULL does nothing. */
void		 gen_unref(struct gen *g);

#endif
