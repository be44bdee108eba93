/*
 * smtp_int: what the tracker's files share (smtp.c, smtp_parse.c,
 * smtp_egress.c), and nothing else includes. The interface is smtp.h.
 */
#ifndef SMTPGATE_SMTP_INT_H
#define SMTPGATE_SMTP_INT_H

#include "smtp.h"

/*
 * FIFO slots. Below SLOT_LOCAL the backend answers; from SLOT_LOCAL on the
 * gateway answers with a fixed reply once the slot reaches the head.
 */
enum slot {
	SLOT_BANNER,		/* backend greeting, relayed */
	SLOT_BANNER_HIDDEN,	/* backend greeting, the gateway greeted already */
	SLOT_UP_BANNER,		/* egress: the upstream's greeting, hidden */
	SLOT_UP_EHLO,		/* egress: the gateway's EHLO upstream */
	SLOT_UP_STARTTLS,	/* egress: 220, then TLS at once */
	SLOT_UP_AUTH,		/* egress: the gateway's AUTH upstream */
	SLOT_APP_EHLO,		/* egress: an app's EHLO, as RSET upstream */
	SLOT_APP_HELO,		/* egress: an app's HELO, likewise */
	SLOT_XC_EHLO,		/* the gateway's own EHLO, before XCLIENT */
	SLOT_XC_REPLY,		/* XCLIENT's 220: the greeting anew */
	SLOT_EHLO,		/* reply rewritten */
	SLOT_HELO_FALLBACK,	/* HELO sent for a rejected EHLO */
	SLOT_HELO,
	SLOT_DATA,		/* 354 opens the body */
	SLOT_DATA_END,
	SLOT_BDAT,
	SLOT_BDAT_LAST,
	SLOT_AUTH,		/* 334 asks for another line */
	SLOT_QUIT,
	SLOT_OTHER,
	SLOT_LOCAL = 64,
	LOCAL_EHLO = SLOT_LOCAL,
	LOCAL_EHLO_MIN,
	LOCAL_HELO,
	LOCAL_OK,
	LOCAL_QUIT,
	LOCAL_STARTTLS,
	LOCAL_530_TLS_FIRST,
	LOCAL_538_AUTH_TLS,
	LOCAL_501_STARTTLS,
	LOCAL_501_SYNTAX,
	LOCAL_503_TLS_ACTIVE,
	LOCAL_503_HELO_FIRST,
	LOCAL_502,
	LOCAL_500_LONG,
	LOCAL_500_SYNTAX,
	LOCAL_BARE_REJECT,
	LOCAL_235,
	LOCAL_334_USER,
	LOCAL_334_PASS,
	LOCAL_334,
	LOCAL_501_CANCEL,
	LOCAL_504,
};

enum verb {
	VERB_UNKNOWN, VERB_EHLO, VERB_HELO, VERB_MAIL, VERB_RCPT, VERB_DATA,
	VERB_BDAT, VERB_RSET, VERB_NOOP, VERB_QUIT, VERB_VRFY, VERB_EXPN,
	VERB_HELP, VERB_AUTH, VERB_STARTTLS, VERB_XCLIENT, VERB_XFORWARD,
};

struct cmd {
	const char	*line;		/* without its terminator */
	size_t		 len;
	enum verb	 verb;
	const char	*verb_p;
	size_t		 verb_len;
	const char	*arg;		/* after the first space; NULL if none */
	size_t		 arg_len;
};


/* Parsers (smtp_parse.c), pure. */
void	smtp_cmd_parse(struct cmd *c, const char *line, size_t len);
int	smtp_bdat_parse(const struct cmd *c, uint64_t *size_r, int *last_r);
int	smtp_ehlo_params(const char *p, size_t n, const char *kw, char *out,
	    size_t outlen);

/* The tracker's own helpers (smtp.c). */
void	smtp_logf(struct smtp *t, enum smtp_log_level lvl, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
void	smtp_fifo_push(struct smtp *t, enum slot s);
enum slot smtp_fifo_head(const struct smtp *t);
void	smtp_fifo_pop(struct smtp *t);
void	smtp_fifo_replace(struct smtp *t, enum slot s);
int	smtp_put(struct buf *b, const char *p, size_t n);
int	smtp_putf(struct buf *b, const char *tmpl, const char *host);
void	smtp_close_after_flush(struct smtp *t, const char *reason);
void	smtp_relay_reply(struct smtp *t, struct smtp_io *io, const char *p,
	    size_t n);
void	smtp_count_reply(struct smtp *t, struct smtp_io *io, char cls);
void	smtp_ext_add(struct smtp *t, const char *kw, size_t n);
int	smtp_command_relay(struct smtp *t, struct smtp_io *io,
	    const struct cmd *c, size_t used);

/* Egress (smtp_egress.c). */
int	smtp_egress_command(struct smtp *t, struct smtp_io *io,
	    const struct cmd *c, size_t used);
void	smtp_egress_auth_line(struct smtp *t, const char *p, size_t len);
void	smtp_egress_ehlo_reply(struct smtp *t, struct smtp_io *io);
void	smtp_egress_reply(struct smtp *t, struct smtp_io *io, const char *p,
	    size_t n, int code);

#endif
