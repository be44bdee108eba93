/*
 * iptable: open connections and recent connection counts per client
 * address, for the per-IP limits. An IPv4 client is one address; an IPv6
 * client is its /64, since one host commonly holds a whole /64. Pure: the
 * caller passes the time.
 */
#ifndef SMTPGATE_IPTABLE_H
#define SMTPGATE_IPTABLE_H

#include <sys/socket.h>

struct iptable;

enum iptable_verdict { IPTABLE_OK, IPTABLE_TOO_MANY, IPTABLE_TOO_FAST };

/* A table; max_conns and max_per_minute of 0 mean no limit. NULL when out of
 * memory. */
struct iptable		*iptable_new(unsigned max_conns, unsigned max_per_minute);
void			 iptable_free(struct iptable *t);
/* New limits (a reload); open connections stay counted. */
void			 iptable_set_limits(struct iptable *t, unsigned max_conns,
			    unsigned max_per_minute);
/* A connection from sa at time now (seconds): counted and allowed, or not
 * counted and refused. Out of memory allows, uncounted (*counted_r 0). */
enum iptable_verdict	 iptable_acquire(struct iptable *t,
			    const struct sockaddr *sa, double now, int *counted_r);
/* The text of a refusal, for the 421 a refused client gets. */
const char		*iptable_refusal(enum iptable_verdict v);
/* A counted connection from sa closed. */
void			 iptable_release(struct iptable *t,
			    const struct sockaddr *sa);
/* Drop entries with no open connection and no recent one; returns how many
 * entries remain. */
unsigned		 iptable_sweep(struct iptable *t, double now);

#endif
