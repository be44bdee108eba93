/*
 * metrics: the counters behind /metrics, and their Prometheus rendering.
 *
 * Every worker has its own struct metrics, written only by its own thread
 * and read by whichever thread renders: each counter is an _Atomic uint64_t
 * bumped with a relaxed load and store (metrics_add), so the writer pays no
 * lock prefix and the reader's loads are well defined. The renderer sums
 * over the workers.
 *
 * Listener and backend names map to slots in two process-wide, append-only
 * tables (METRICS_SLOTS each): a name keeps its slot for the life of the
 * process, so counters never go backwards across reloads, and a listener
 * that is gone keeps its last values.
 */
#ifndef SMTPGATE_METRICS_H
#define SMTPGATE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "iptable.h"

struct config;
struct listener;
struct session;
struct worker;

#define METRICS_SLOTS		64	/* names per table; the last is "_other" */
#define METRICS_NAME		300	/* a label value: a name or host:port */
#define METRICS_TLS_KINDS	16	/* (version, cipher) pairs per worker */
#define METRICS_BUCKETS		14	/* backend connect histogram, +Inf aside */

/* Why a connection was refused before it became a session's work. */
enum metrics_refusal {
	METRICS_REFUSED_MAX_CONNECTIONS,
	METRICS_REFUSED_PER_IP_CONNECTIONS,
	METRICS_REFUSED_PER_IP_RATE,
	METRICS_REFUSED_UNTRUSTED_PROXY,
	METRICS_REFUSED_MAX
};

/* Why a client's TLS handshake failed: a fixed, small set. */
enum metrics_hs_failure {
	METRICS_HS_TIMEOUT,		/* the handshake deadline passed */
	METRICS_HS_CLOSED,		/* the client closed or reset */
	METRICS_HS_NO_SHARED_CIPHER,
	METRICS_HS_VERSION,		/* no TLS version in common */
	METRICS_HS_NOT_TLS,		/* the bytes were not TLS (plaintext, HTTP) */
	METRICS_HS_SHUTDOWN,		/* the gateway stopped during it */
	METRICS_HS_OTHER,		/* any other OpenSSL error */
	METRICS_HS_MAX
};

/* How a session ended, by category (metrics_end_reason() maps each close
 * reason the code can give to one). */
enum metrics_end {
	METRICS_END_QUIT,
	METRICS_END_CLIENT_CLOSED,
	METRICS_END_CLIENT_ERROR,	/* a read or write error on the client */
	METRICS_END_TIMEOUT,		/* client idle, PROXY header late */
	METRICS_END_TLS_FAILED,		/* during the client's handshake */
	METRICS_END_TOO_MANY_ERRORS,
	METRICS_END_MESSAGE_REJECTED,	/* bare_newlines = reject */
	METRICS_END_BACKEND_FAILED,	/* unreachable, timeout, not SMTP, ... */
	METRICS_END_BACKEND_CLOSED,	/* closed, or sent 421 */
	METRICS_END_UPSTREAM_FAILED,	/* egress: no secure upstream */
	METRICS_END_PROXY_ERROR,	/* a bad PROXY header */
	METRICS_END_REFUSED_LIMIT,	/* per-IP limit after a PROXY header */
	METRICS_END_SHUTDOWN,
	METRICS_END_OTHER,
	METRICS_END_MAX
};

extern const char *const metrics_refusal_names[METRICS_REFUSED_MAX];
extern const char *const metrics_hs_names[METRICS_HS_MAX];
extern const char *const metrics_end_names[METRICS_END_MAX];

/* One listener's counters in one worker. */
struct metrics_listener {
	_Atomic uint64_t	 opened, closed;	/* sessions */
	_Atomic uint64_t	 refused[METRICS_REFUSED_MAX];
	_Atomic uint64_t	 tls[METRICS_TLS_KINDS + 1];	/* by kind; last:
							 * "other" */
	_Atomic uint64_t	 resumed, starttls;
	_Atomic uint64_t	 hs_failed[METRICS_HS_MAX];
	_Atomic uint64_t	 messages, bytes_in, bytes_out;
	_Atomic uint64_t	 replies[5];	/* 1xx .. 5xx */
	_Atomic uint64_t	 ended[METRICS_END_MAX];
};

/* One backend's connects in one worker; buckets are not cumulative. */
struct metrics_backend {
	_Atomic uint64_t	 buckets[METRICS_BUCKETS + 1];	/* last: +Inf */
	_Atomic uint64_t	 sum_ns, failures;
};

/* A TLS version and cipher pair this worker has seen: written once, before
 * ntls is raised (release), never changed after. */
struct metrics_tls_kind {
	char	version[16];
	char	cipher[64];
};

struct metrics {
	struct metrics_listener	 listeners[METRICS_SLOTS];
	struct metrics_backend	 backends[METRICS_SLOTS];
	struct metrics_tls_kind	 tls_kinds[METRICS_TLS_KINDS];
	_Atomic unsigned	 ntls;
};

/* What a session has already added to its worker's counters, so that it
 * can add the difference as it goes (and a long session's counters move
 * while it runs). */
struct metrics_mark {
	uint64_t	 bytes_in, bytes_out;
	unsigned	 messages;
	unsigned	 replies[6];
	double		 connect_t0;	/* when the backend connect began */
	int		 backend;	/* its backend's slot, set before the
					 * connect */
};

/* A single-writer counter: only the owning worker's thread calls this. */
static inline void
metrics_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) +
	    n, memory_order_relaxed);
}

/* The slot of listener name, or backend address text, assigning a new one
 * on first sight (any thread; lookups take no lock). When the table is
 * full the answer is the shared "_other" slot. */
int	metrics_listener_slot(const char *name);
int	metrics_backend_slot(const char *text);
/* Give every listener and backend of c its slot now, so that they show in
 * /metrics (at zero) before their first connection. Call on every config
 * load. */
void	metrics_register(const struct config *c);
/* The backend address text a connection to port of an egress upstream is
 * known by ("host:port"), the same the session logs. */
void	metrics_upstream_text(char *out, size_t len, const char *host,
	    long port);

/* A configuration reload was applied (ok) or refused. Any thread. */
void	metrics_reload(int ok);

/* Hooks: each is one call where the event happens. */
void	metrics_refused(const struct listener *l, enum metrics_refusal why);
/* The refusal a per-IP verdict (not IPTABLE_OK) stands for. */
enum metrics_refusal	metrics_refusal_ip(enum iptable_verdict v);
void	metrics_session_open(struct session *s);
/* Add what the session's tracker and client endpoint counted since the
 * last call: bytes, messages, replies. */
void	metrics_session_sync(struct session *s);
/* The client's TLS handshake completed. */
void	metrics_tls_done(struct session *s);
/* A backend connect started (after connect()); counts it at once when it
 * completed at once. */
void	metrics_connect_begin(struct session *s);
/* A backend connect finished: ok, or failed (refused, timed out). */
void	metrics_connect_end(struct session *s, int ok);
/* The session ends with this reason (session_close()): final sync, why it
 * ended, and whether it died in its TLS handshake. */
void	metrics_session_close(struct session *s, const char *reason);

/* Classify a close reason; handshaking: the client's TLS handshake was
 * under way. client_error: the client endpoint's error text, or NULL. */
enum metrics_end	metrics_end_reason(const char *reason, int handshaking,
			    const char *client_error);
/* Classify a failed handshake by the close reason. */
enum metrics_hs_failure	metrics_hs_reason(const char *reason);

/* The Prometheus text exposition of n workers' counters summed, plus the
 * process-wide ones. Returns a malloc'ed string (its length in *len_r),
 * or NULL when out of memory. */
char	*metrics_render(struct worker *const *ws, int n, const char *version,
	    size_t *len_r);

#endif
