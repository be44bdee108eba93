/* listener: listening sockets, one ev_io each, and accept(). */
#ifndef SMTPGATE_LISTENER_H
#define SMTPGATE_LISTENER_H

#include <ev.h>
#include <stddef.h>

#include "smtp.h"

struct config_addr;
struct config_listener;
struct worker;

struct listener {
	ev_io				 io;
	ev_timer			 retry;	/* after EMFILE: accept again later */
	int				 fd;
	struct worker			*w;
	const struct config_listener	*conf;
	const struct config_addr	*addr;
	const struct config_addr	*backend;
	struct smtp_conf		 smtp;
	int				 identity;	/* enum config_identity */
	const struct config_upstream	*upstream;	/* egress */
	int				 mslot;	/* metrics_listener_slot() */
	int				 up_preferred;	/* egress: the port index
							 * that last worked */
	struct listener			*next;
};

/* Bind every configured address and start accepting. Returns 0, or -1 with
 * a message in err (nothing is left open). */
int	listener_open_all(struct worker *w, char *err, size_t errlen);
/* Tell a client it is over a limit: "421 4.7.0 HOST why, try again later",
 * in plaintext, best effort; the caller closes. */
void	listener_refuse(const struct listener *l, int fd, const char *why);
/* Stop accepting, keep the sockets (shutdown). */
void	listener_stop_all(struct worker *w);
/* Close and free every listener. */
void	listener_free_all(struct worker *w);

#endif
