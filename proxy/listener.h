/* listener: one listening socket of one worker, its ev_io, and accept(). */
#ifndef SMTPGATE_LISTENER_H
#define SMTPGATE_LISTENER_H

#include <ev.h>
#include <stddef.h>

#include "smtp.h"

struct config_addr;
struct config_listener;
struct gen;
struct worker;

struct listener {
	ev_io				 io;
	ev_timer			 retry;	/* after EMFILE: accept again later */
	int				 fd;	/* owned by gen */
	struct worker			*w;
	struct gen			*gen;	/* a reference: what it serves */
	const struct config_listener	*conf;	/* in gen->conf */
	int				 index;	/* of conf in gen->conf */
	const struct config_addr	*addr;
	const struct config_addr	*backend;
	struct smtp_conf		 smtp;
	int				 identity;	/* enum config_identity */
	const struct config_upstream	*upstream;	/* egress */
	unsigned			 nsessions;	/* open on it */
	unsigned			 retired:1;	/* a reload replaced it */
	int				 mslot;	/* metrics_listener_slot() */
	struct listener			*next;
};

/* Worker w's listeners for generation g, one per address, on w's sockets,
 * not started. Returns 0 with the list in *list_r, or -1 with a message in
 * err. */
int	listener_new_list(struct gen *g, struct worker *w,
	    struct listener **list_r, char *err, size_t errlen);
/* Free a list that was never started. */
void	listener_free_list(struct listener *list);
/* Stop accepting on every listener of w and retire it: those without open
 * sessions are freed now, the others when their last session ends. */
void	listener_retire_all(struct worker *w);
/* Add a list to w and start accepting on it, logging each address. */
void	listener_start_list(struct worker *w, struct listener *list);
/* A session on l ended: free l if it was retired and this was the last. */
void	listener_release(struct listener *l);
/* Tell a client it is over a limit: "421 4.7.0 HOST why, try again later",
 * in plaintext, best effort; the caller closes. */
void	listener_refuse(const struct listener *l, int fd, const char *why);
/* Stop accepting, keep the sockets (shutdown). */
void	listener_stop_all(struct worker *w);
/* Free every listener of w (the sockets belong to their generations). */
void	listener_free_all(struct worker *w);

#endif
