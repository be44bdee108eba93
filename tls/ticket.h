/*
 * ticket: the keys that encrypt TLS session tickets. One ring for the
 * whole process, used by every server context of every generation, so a
 * ticket a client got from one worker resumes on any other, and still
 * resumes after a reload. The control thread rotates the ring; a ticket is
 * sealed with the newest key and opened with either of the two newest.
 */
#ifndef SMTPGATE_TICKET_H
#define SMTPGATE_TICKET_H

#include <openssl/ssl.h>

/* How often the control thread rotates: a ticket stays good for one to two
 * of these, longer than the session lifetime OpenSSL announces (2 h). */
#define TICKET_ROTATE_SECONDS	(6 * 3600)

/* A new newest key; the newest becomes the previous, the previous goes.
 * Returns 0, or -1 with the ring unchanged. */
int	ticket_rotate(void);
/* Seal and open ctx's tickets with the ring (made on first use). */
void	ticket_attach(SSL_CTX *ctx);
/* Wipe the keys (at exit, once no context is used). */
void	ticket_fini(void);

#endif
