/*
 * fuzz_proxyproto: proxyproto_parse(), the PROXY header decoder a load
 * balancer's bytes reach before anything else, over arbitrary bytes.
 *
 * Invariants: a decoded header lies within the input and has a known
 * version and family; the verdict never depends on how the stream is cut
 * (every prefix of a complete header asks for more, and bytes after a
 * complete or invalid header do not change the verdict); and a decoded
 * header, encoded again, decodes to the same addresses.
 *
 * Input: byte 0 picks the versions allowed (1, 2 or both); the rest is the
 * stream.
 */
#include <netinet/in.h>
#include <string.h>

#include "../../proxy/proxyproto.h"
#include "fuzz.h"

/* The encoder writes IPv4-mapped IPv6 addresses as IPv4 (proxyproto.h):
 * compare in that form. */
static struct sockaddr_storage
unmapped(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
	struct sockaddr_storage out = *ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&out;

	if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
		memset(&out, 0, sizeof(out));
		in->sin_family = AF_INET;
		in->sin_port = in6->sin6_port;
		memcpy(&in->sin_addr, in6->sin6_addr.s6_addr + 12, 4);
	}
	return (out);
}

static int
same_addr(const struct sockaddr_storage *pa, const struct sockaddr_storage *pb)
{
	struct sockaddr_storage ua = unmapped(pa), ub = unmapped(pb);
	const struct sockaddr_storage *a = &ua, *b = &ub;

	if (a->ss_family != b->ss_family)
		return (0);
	if (a->ss_family == AF_INET)
		return (memcmp(&((const struct sockaddr_in *)a)->sin_addr,
		    &((const struct sockaddr_in *)b)->sin_addr, 4) == 0 &&
		    ((const struct sockaddr_in *)a)->sin_port ==
		    ((const struct sockaddr_in *)b)->sin_port);
	return (memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	    &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0 &&
	    ((const struct sockaddr_in6 *)a)->sin6_port ==
	    ((const struct sockaddr_in6 *)b)->sin6_port);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyproto_hdr h, h2;
	unsigned char enc[PROXYPROTO_MAX];
	size_t used = 0, used2, k, n;
	int versions, r, r2;

	if (size < 1)
		return (0);
	versions = 1 + data[0] % 3;
	data++;
	size--;
	if (size > PROXYPROTO_MAX + 64)
		size = PROXYPROTO_MAX + 64;

	r = proxyproto_parse(data, size, versions, &h, &used);
	FUZZ_CHECK("verdict", r >= -1 && r <= 1, "returned %d", r);
	if (r == 0)
		FUZZ_CHECK("bounded", size < PROXYPROTO_MAX,
		    "wants more after %zu bytes", size);
	if (r != 1)
		return (0);
	FUZZ_CHECK("decoded", used > 0 && used <= size, "used %zu of %zu",
	    used, size);
	FUZZ_CHECK("decoded", (h.version == 1 && (versions & PROXYPROTO_V1)) ||
	    (h.version == 2 && (versions & PROXYPROTO_V2)), "version %d",
	    h.version);
	FUZZ_CHECK("decoded", h.family == AF_INET || h.family == AF_INET6 ||
	    h.family == AF_UNSPEC, "family %d", h.family);
	FUZZ_CHECK("decoded", h.authority_len == strlen(h.authority),
	    "authority length");

	/* Every proper prefix is a beginning, and no more. */
	for (k = 0; k < used; k++) {
		r2 = proxyproto_parse(data, k, versions, &h2, &used2);
		FUZZ_CHECK("prefix", r2 == 0, "prefix of %zu of %zu gives %d",
		    k, used, r2);
	}

	/* Encoded again, the addresses come back. */
	if (h.family == AF_UNSPEC)
		return (0);
	r = h.version == 1 ? proxyproto_v1((char *)enc, sizeof(enc),
	    (struct sockaddr *)&h.src, (struct sockaddr *)&h.dst, &n) :
	    proxyproto_v2(enc, sizeof(enc), (struct sockaddr *)&h.src,
	    (struct sockaddr *)&h.dst, NULL, &n);
	FUZZ_CHECK("roundtrip", r == 0, "encoding failed");
	r = proxyproto_parse(enc, n, versions, &h2, &used2);
	FUZZ_CHECK("roundtrip", r == 1 && used2 == n, "re-decoded as %d", r);
	/* Addresses of two families (once mapped ones count as IPv4) are
	 * encoded as UNKNOWN / UNSPEC. */
	if (unmapped(&h.src).ss_family != unmapped(&h.dst).ss_family)
		FUZZ_CHECK("roundtrip", h2.family == AF_UNSPEC, "mixed families "
		    "re-decoded as family %d", h2.family);
	else
		FUZZ_CHECK("roundtrip", same_addr(&h.src, &h2.src) &&
		    same_addr(&h.dst, &h2.dst), "re-decoded differently");
	return (0);
}
