#include <netinet/in.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iptable.h"

#define BUCKETS		4096	/* a power of two */
#define WINDOW		60.0	/* per_ip_rate counts connections per minute */

struct entry {
	unsigned char	 key[9];	/* family, then 4 or 8 address bytes */
	unsigned	 conns;		/* open now */
	unsigned	 recent;	/* opened since window_start */
	double		 window_start;
	struct entry	*next;
};

struct iptable {
	unsigned	 max_conns, max_rate;
	unsigned	 entries;
	struct entry	*buckets[BUCKETS];
};

struct iptable *
iptable_new(unsigned max_conns, unsigned max_per_minute)
{
	struct iptable *t;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return (NULL);
	iptable_set_limits(t, max_conns, max_per_minute);
	return (t);
}

void
iptable_set_limits(struct iptable *t, unsigned max_conns,
    unsigned max_per_minute)
{
	t->max_conns = max_conns;
	t->max_rate = max_per_minute;
}

void
iptable_free(struct iptable *t)
{
	struct entry *e, *next;
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < BUCKETS; i++)
		for (e = t->buckets[i]; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	free(t);
}

/* The key of an address: IPv4, or the /64 of IPv6 (an IPv4-mapped IPv6
 * address counts as its IPv4 address). */
static void
key_of(const struct sockaddr *sa, unsigned char key[9])
{
	memset(key, 0, 9);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)(const void *)sa)
		    ->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			key[0] = 4;
			memcpy(key + 1, a->s6_addr + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, a->s6_addr, 8);
		}
	}
}

static struct entry **
slot(struct iptable *t, const unsigned char key[9])
{
	uint32_t h = 2166136261u;	/* FNV-1a */
	struct entry **pe;
	int i;

	for (i = 0; i < 9; i++)
		h = (h ^ key[i]) * 16777619u;
	for (pe = &t->buckets[h & (BUCKETS - 1)]; *pe != NULL;
	    pe = &(*pe)->next)
		if (memcmp((*pe)->key, key, 9) == 0)
			break;
	return (pe);
}

enum iptable_verdict
iptable_acquire(struct iptable *t, const struct sockaddr *sa, double now,
    int *counted_r)
{
	unsigned char key[9];
	struct entry **pe, *e;

	*counted_r = 0;
	if (t->max_conns == 0 && t->max_rate == 0)
		return (IPTABLE_OK);
	key_of(sa, key);
	pe = slot(t, key);
	if ((e = *pe) == NULL) {
		if ((e = calloc(1, sizeof(*e))) == NULL)
			return (IPTABLE_OK);
		memcpy(e->key, key, 9);
		e->window_start = now;
		*pe = e;
		t->entries++;
	}
	if (now - e->window_start >= WINDOW) {
		e->window_start = now;
		e->recent = 0;
	}
	if (t->max_conns != 0 && e->conns >= t->max_conns)
		return (IPTABLE_TOO_MANY);
	if (t->max_rate != 0 && e->recent >= t->max_rate)
		return (IPTABLE_TOO_FAST);
	e->conns++;
	e->recent++;
	*counted_r = 1;
	return (IPTABLE_OK);
}

const char *
iptable_refusal(enum iptable_verdict v)
{
	return (v == IPTABLE_TOO_FAST ? "Too many connections from your "
	    "address per minute" : "Too many connections from your address");
}

void
iptable_release(struct iptable *t, const struct sockaddr *sa)
{
	unsigned char key[9];
	struct entry **pe, *e;

	key_of(sa, key);
	pe = slot(t, key);
	if ((e = *pe) == NULL || e->conns == 0)
		return;
	/* Without a rate limit an idle entry remembers nothing worth keeping. */
	if (--e->conns == 0 && t->max_rate == 0) {
		*pe = e->next;
		free(e);
		t->entries--;
	}
}

unsigned
iptable_sweep(struct iptable *t, double now)
{
	struct entry **pe, *e;
	size_t i;

	for (i = 0; i < BUCKETS; i++)
		for (pe = &t->buckets[i]; (e = *pe) != NULL;) {
			if (e->conns == 0 && now - e->window_start >= WINDOW) {
				*pe = e->next;
				free(e);
				t->entries--;
			} else {
				pe = &e->next;
			}
		}
	return (t->entries);
}
