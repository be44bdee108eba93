/*
 * session: one client connection and its backend connection, the tracker
 * between them, and one timer. session_close() is the only way a session
 * ends and the only place it is freed.
 */
#ifndef SMTPGATE_SESSION_H
#define SMTPGATE_SESSION_H

#include <sys/socket.h>

#include "endpoint.h"
#include "smtp.h"

struct listener;
struct worker;

struct session {
	struct worker		*w;
	const struct listener	*l;
	uint64_t		 id;
	struct endpoint		 client, backend;
	struct smtp		 smtp;
	ev_timer		 timer;
	ev_tstamp		 started;
	char			 peer[64];	/* client address:port */
	char			 sni[64];
	const char		*tls_version;	/* static strings from OpenSSL */
	const char		*tls_cipher;
	struct session		*prev, *next;
};

/* Take over an accepted socket and start serving it. Returns NULL (and
 * closes fd) when out of memory. */
struct session	*session_new(struct worker *w, const struct listener *l, int fd,
		    const struct sockaddr *sa, socklen_t salen);
/* The gateway is stopping: end the session with a 421 (or at once while a
 * TLS handshake is under way). The session may be freed on return. */
void		 session_shutdown(struct session *s);
/* End the session now, log its line, free it. */
void		 session_close(struct session *s, const char *reason);

#endif
