/*
 * session: one client connection and its backend connection, the tracker
 * between them, and one timer. session_close() is the only way a session
 * ends and the only place it is freed.
 */
#ifndef SMTPGATE_SESSION_H
#define SMTPGATE_SESSION_H

#include <sys/socket.h>

#include "endpoint.h"
#include "metrics.h"
#include "smtp.h"

struct listener;
struct worker;

struct session {
	struct worker		*w;
	struct listener		*l;
	uint64_t		 id;
	struct endpoint		 client, backend;
	struct smtp		 smtp;
	ev_timer		 timer;
	ev_tstamp		 started;
	struct sockaddr_storage	 peer_sa;	/* the client (PROXY: as told) */
	struct sockaddr_storage	 local_sa;	/* what it connected to */
	unsigned		 awaiting_proxy:1;	/* PROXY header not read yet */
	unsigned		 identity_pending:1;	/* PROXY v2 waits for TLS */
	unsigned		 port_noted:1;	/* egress: the working port is noted */
	int			 port_try;	/* egress: the how-manieth port */
	int			 port_first;	/* egress: the port index tried
						 * first (the one that last
						 * worked when it began) */
	const char		*up_tls;	/* egress: the upstream's TLS version */
	int			 ip_counted;	/* holds a place in w->ips */
	int			 wait;		/* what the timer measures */
	char			 peer[64];	/* client address:port */
	char			 via[64];	/* the load balancer, if any */
	char			 sni[64];
	char			*client_cert;	/* its verified subject, or NULL */
	const char		*tls_version;	/* static strings from OpenSSL */
	const char		*tls_cipher;
	struct metrics_mark	 metrics;	/* counted so far */
	struct session		*prev, *next;
};

/* Take over an accepted socket and start serving it; ip_counted: the
 * connection holds a place in the per-IP table, which the session gives
 * back when it ends. Returns NULL when the session ended at once (or memory
 * was short); fd is closed then. */
struct session	*session_new(struct worker *w, struct listener *l, int fd,
		    const struct sockaddr *sa, socklen_t salen, int ip_counted);
/* The gateway is stopping: end the session with a 421 (or at once while a
 * TLS handshake is under way). The session may be freed on return. */
void		 session_shutdown(struct session *s);
/* "192.0.2.1:25" or "[2001:db8::1]:25", for logs. */
void		 session_format_addr(const struct sockaddr *sa, char *out,
		    size_t len);
/* End the session now, log its line, free it. */
void		 session_close(struct session *s, const char *reason);

#endif
