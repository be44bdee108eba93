/*
 * smtp: the SMTP tracker. A pure state machine between a client and a
 * backend: it reads bytes from two input buffers and writes bytes to two
 * output buffers, and raises flags the session acts on (connect the backend,
 * start TLS, close). It never touches a socket, libev or OpenSSL, so it is
 * unit-tested by feeding it bytes split at every point (DESIGN.md, "The SMTP
 * tracker").
 */
#ifndef SMTPGATE_SMTP_H
#define SMTPGATE_SMTP_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#include "body.h"
#include "buf.h"

enum smtp_mode {
	SMTP_MODE_IMPLICIT,		/* TLS from the first byte (465) */
	SMTP_MODE_STARTTLS,		/* gateway talks alone until TLS (587) */
	SMTP_MODE_OPPORTUNISTIC,	/* relayed plaintext, STARTTLS added (25) */
	SMTP_MODE_EGRESS		/* a local app in plaintext, TLS upstream */
};

/* How the client's bytes are read at this moment. */
enum smtp_phase {
	PHASE_PLAIN,		/* before TLS: the gateway answers alone */
	PHASE_TLS_WAIT,		/* STARTTLS accepted or implicit: no input */
	PHASE_COMMAND,		/* command lines, relayed */
	PHASE_DATA,		/* body after 354, until CRLF.CRLF */
	PHASE_BDAT,		/* the rest of a BDAT chunk, relayed */
	PHASE_BDAT_DISCARD,	/* the rest of a refused BDAT chunk, dropped */
	PHASE_AUTH,		/* the next line answers a 334 */
	PHASE_APP_AUTH,		/* egress: an app's AUTH line, taken locally */
	PHASE_QUIT,		/* QUIT seen: nothing more is read */
	PHASE_CLOSED,		/* closing: nothing more is read or written */
	PHASE_MAX
};

extern const char *const smtp_phase_names[PHASE_MAX];

/* Why the gateway ends a session on its own initiative. */
enum smtp_abort {
	ABORT_TIMEOUT,		/* the client was idle too long */
	ABORT_BACKEND_DOWN,	/* the backend could not be reached */
	ABORT_BACKEND_CLOSED,	/* the backend closed or reset */
	ABORT_BACKEND_TIMEOUT,	/* the backend did not answer in time */
	ABORT_BACKEND_PROTOCOL,	/* the backend sent something that is not SMTP */
	ABORT_BACKEND_REFUSED,	/* the backend greeted with other than 220 */
	ABORT_BACKEND_XCLIENT,	/* the backend lacks or refused XCLIENT */
	ABORT_UPSTREAM,		/* egress: no secure, authenticated upstream */
	ABORT_SHUTDOWN,		/* the gateway is stopping */
	ABORT_MAX
};

extern const char *const smtp_abort_names[ABORT_MAX];

enum smtp_log_level { SMTP_LOG_WARN, SMTP_LOG_INFO, SMTP_LOG_DEBUG };
typedef void (*smtp_log_fn)(void *arg, enum smtp_log_level, const char *msg);

struct smtp_conf {
	const char	*hostname;	/* the name in the gateway's own replies */
	size_t		 max_line;	/* command line limit, CRLF included */
	int		 bare_reject;	/* refuse bodies with bare CR/LF */
	unsigned	 max_errors;	/* 5xx replies in a row; 0: no limit */
	int		 xclient;	/* tell the backend who the client is */
	enum smtp_mode	 mode;
	/* Egress: the upstream's EHLO name and credentials, and what an app's
	 * own AUTH gets. */
	const char	*helo;
	int		 auth;		/* 0 none, 1 PLAIN, 2 LOGIN */
	const char	*auth_user;
	const char	*auth_pass;
	int		 app_auth;	/* 0 ignore, 1 refuse, 2 offer and ignore */
};

/* The four buffers the tracker works between, and what the peers did. */
struct smtp_io {
	struct buf	*client_in;	/* plaintext bytes from the client */
	struct buf	*backend_in;	/* bytes from the backend */
	struct buf	*to_client;
	struct buf	*to_backend;
	int		 client_eof;	/* no more client_in will come */
	int		 backend_eof;	/* no more backend_in will come */
};

#define SMTP_FIFO	256		/* commands awaiting a reply */
#define SMTP_REPLY_MAX	8192		/* one whole reply, all lines */
#define SMTP_REPLY_LINE	1000		/* one reply line, CRLF included */
#define SMTP_EXTS	256		/* EHLO keywords remembered */

struct smtp {
	const struct smtp_conf	*conf;
	smtp_log_fn		 log;
	void			*log_arg;

	enum smtp_phase		 phase;
	unsigned		 tls:1;		/* the client side is encrypted */
	unsigned		 helo_done:1;	/* EHLO/HELO accepted since TLS */
	unsigned		 sync:1;	/* parse no more until replies are in */
	unsigned		 greeted:1;	/* the backend's banner has arrived */
	unsigned		 no_ehlo:1;	/* the backend rejects EHLO */
	unsigned		 chunking:1;	/* the backend offers CHUNKING */
	unsigned		 skip_line:1;	/* dropping an over-long line */
	unsigned		 bdat_last:1;
	unsigned		 xc_relay:1;	/* XCLIENT's 220 goes to the client */
	unsigned		 backend_tls:1;	/* egress: the upstream is encrypted */
	unsigned		 want_backend_tls:1;	/* egress: start it now */
	uint8_t			 auth_step;	/* egress: AUTH LOGIN rounds done */
	uint8_t			 app_auth_left;	/* egress: app AUTH lines to take */

	/* Flags for the session, which clears them once acted upon. */
	unsigned		 want_backend:1;	/* connect it now */
	unsigned		 want_tls:1;	/* start TLS once to_client is flushed */
	unsigned		 starttls_sent:1;	/* 220 to STARTTLS is out */
	unsigned		 want_close:1;	/* close once to_client is flushed */
	unsigned		 active:1;	/* a command or reply completed:
						 * the session's idle timer starts
						 * anew (bytes that are dropped do
						 * not count) */
	const char		*close_reason;	/* static text, for the log */

	int			 pending_abort;	/* -1, or an abort held until TLS is up */
	struct body		 body;		/* the DATA body scanner */
	uint64_t		 bdat_left;
	uint16_t		 head, count;
	uint8_t			 slots[SMTP_FIFO];
	unsigned		 messages;	/* acknowledged by the backend */
	unsigned		 errors;	/* 5xx replies in a row */
	unsigned		 replies[6];	/* to the client, by first digit */
	char			 ehlo_arg[256];
	char			 exts[SMTP_EXTS];	/* " KW KW " the backend offers */
	char			 xc_client[96];	/* "ADDR=... PORT=...", xtext */
	char			 xc_local[96];	/* "DESTADDR=... DESTPORT=..." */
	char			 up_ehlo[512];	/* egress: "KW params\n" for the app */
};

/* Set up a tracker for one session; nothing is allocated. */
void	smtp_init(struct smtp *t, const struct smtp_conf *c, smtp_log_fn log,
	    void *log_arg);
/* The connection is open: write the gateway's greeting (starttls) or ask
 * for the backend (opportunistic); implicit waits for smtp_tls_done(). */
void	smtp_start(struct smtp *t, struct smtp_io *io);
/* The client's TLS handshake completed: forget everything learnt before it
 * (RFC 3207 section 4.2) and go on inside TLS. */
void	smtp_tls_done(struct smtp *t, struct smtp_io *io);
/* The client's address and the address it connected to, for XCLIENT. Call
 * before the backend's greeting arrives. */
void	smtp_set_identity(struct smtp *t, const struct sockaddr *client,
	    const struct sockaddr *local);
/* Egress: the TLS handshake with the upstream completed (implicit TLS
 * before its banner, or after its 220 to STARTTLS). */
void	smtp_backend_tls_done(struct smtp *t, struct smtp_io *io);
/* Process everything the buffers allow. Returns 1 when it consumed or
 * produced anything, 0 otherwise. */
int	smtp_run(struct smtp *t, struct smtp_io *io);
/* End the session from the gateway's side: a 421 to the client (held until
 * the handshake is done while one is under way) and want_close. */
void	smtp_abort(struct smtp *t, struct smtp_io *io, enum smtp_abort why);
/* Whether more client bytes are wanted now (else the reader may pause). */
int	smtp_wants_client_input(const struct smtp *t);
/* Whether a backend reply is awaited (for choosing a timeout). */
int	smtp_awaits_backend(const struct smtp *t);

/*
 * Parsers, pure functions over a byte span.
 *
 * smtp_line: find one line ending in LF within max bytes. Returns 1 with the
 * line's length without its terminator (LF or CRLF) in *len_r and the bytes
 * it used in *used_r; 0 when more bytes are needed; -1 when no LF comes
 * within max bytes.
 */
int	smtp_line(const char *p, size_t n, size_t max, size_t *len_r,
	    size_t *used_r);
/*
 * smtp_reply: find one complete reply (RFC 5321 section 4.2). Returns 1 with
 * its length in *len_r and its code in *code_r; 0 when more bytes are needed;
 * -1 when the bytes are not a valid reply or exceed SMTP_REPLY_MAX.
 */
int	smtp_reply(const char *p, size_t n, size_t *len_r, int *code_r);

#endif
