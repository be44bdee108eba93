/*
 * The PROXY protocol (HAProxy, spec revision 2020/03/05). The decoder is
 * strict: the spec says the receiver must not guess and must abort on any
 * header that does not match exactly (sections 2.1 and 2.2), so every check
 * here is a -1, never a repair. It is also stateless: it is called again
 * with every byte received so far, and answers 0 only while the bytes can
 * still become a valid header.
 */
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN	(sizeof(v1_sig) - 1)

static const unsigned char v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
#define V2_HDR_LEN	16		/* signature, ver_cmd, fam, len */

#define V2_VERSION	0x2		/* high nibble of byte 13 */
#define V2_CMD_LOCAL	0x0
#define V2_CMD_PROXY	0x1
#define V2_FAM_UNSPEC	0x00		/* byte 14: family, transport */
#define V2_FAM_TCP4	0x11
#define V2_FAM_TCP6	0x21
#define V2_ADDR_TCP4	12		/* 2 * 4 + 2 * 2 */
#define V2_ADDR_TCP6	36		/* 2 * 16 + 2 * 2 */

#define PP2_TYPE_AUTHORITY	0x02
#define PP2_TYPE_CRC32C		0x03
#define PP2_TYPE_SSL		0x20
#define PP2_SUBTYPE_SSL_VERSION	0x21
#define PP2_SUBTYPE_SSL_CIPHER	0x23
#define PP2_CLIENT_SSL		0x01
#define PP2_TLV_HDR		3	/* type, length_hi, length_lo */
#define PP2_SSL_HDR		5	/* client, verify */

/* The longest IPv6 text inet_pton() takes, "ffff:...:255.255.255.255". */
#define V1_IPV6_MAX	(INET6_ADDRSTRLEN - 1)

/* A value the AUTHORITY TLV may carry: it ends up in logs and in SMTP
 * replies, so a control character is refused rather than escaped. */
static int
authority_ok(const unsigned char *s, size_t len)
{
	size_t i;

	if (len > PROXYPROTO_AUTHORITY_MAX)
		return (-1);
	for (i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] == 0x7f)
			return (-1);
	return (0);
}

static void
set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* ---- Version 1 ---------------------------------------------------- */

/*
 * The decoder ran out of bytes in the middle of a v1 line. Within the first
 * PROXYPROTO_V1_MAX bytes that means "wait"; past them the CRLF is missing
 * where the spec says it must be (section 2.1), so the line is invalid.
 */
static int
v1_more(size_t n)
{
	return (n < PROXYPROTO_V1_MAX ? 0 : -1);
}

/* Advance *i to the space, CR or LF ending the word it starts. Returns 1 when
 * that delimiter is within lim, 0 when the bytes ran out first. */
static int
v1_word(const unsigned char *b, size_t lim, size_t *i)
{
	while (*i < lim && b[*i] != ' ' && b[*i] != '\r' && b[*i] != '\n')
		(*i)++;
	return (*i < lim);
}

/*
 * Each field checker below takes a word and whether it is whole (its
 * delimiter arrived). A whole word must be exactly valid, and is stored; a
 * word cut short by the end of the bytes must be the beginning of a valid
 * one. Both return 0, or -1 when the word cannot be (or begin) a valid one.
 */

static int
v1_proto(const unsigned char *s, size_t len, int whole, int *fam_r)
{
	static const struct {
		const char	*name;
		int		 family;
	} protos[] = {
		{ "TCP4", AF_INET },
		{ "TCP6", AF_INET6 },
		{ "UNKNOWN", AF_UNSPEC },
	};
	size_t i, plen;

	for (i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		plen = strlen(protos[i].name);
		if (whole ? len != plen : len > plen)
			continue;
		if (memcmp(s, protos[i].name, len) == 0) {
			*fam_r = protos[i].family;
			return (0);
		}
	}
	return (-1);
}

/* Exactly four decimal numbers 0-255 joined by single dots, without leading
 * zeros, which the spec forbids to avoid reading them as octal. */
static int
v1_ipv4(const unsigned char *s, size_t len, int whole, struct in_addr *a_r)
{
	unsigned char octets[4];
	unsigned val = 0;
	size_t i, dots = 0, digits = 0;

	for (i = 0; i < len; i++) {
		if (s[i] >= '0' && s[i] <= '9') {
			if (digits > 0 && val == 0)
				return (-1);
			val = val * 10 + (unsigned)(s[i] - '0');
			if (val > 255)
				return (-1);
			digits++;
		} else if (s[i] == '.') {
			if (digits == 0 || dots == 3)
				return (-1);
			octets[dots++] = (unsigned char)val;
			val = 0;
			digits = 0;
		} else
			return (-1);
	}
	if (!whole)
		return (0);
	if (dots != 3 || digits == 0)
		return (-1);
	octets[3] = (unsigned char)val;
	memcpy(a_r, octets, sizeof(octets));
	return (0);
}

/*
 * The spec describes hexadecimal groups and one "::"; inet_pton() decides
 * the whole word. It also takes a trailing dotted quad ("::ffff:1.2.3.4"),
 * which is what senders that format with inet_ntop() write for IPv4-mapped
 * addresses. A cut word is only checked for its characters and length.
 */
static int
v1_ipv6(const unsigned char *s, size_t len, int whole, struct in6_addr *a_r)
{
	char text[V1_IPV6_MAX + 1];
	size_t i;

	if (len > V1_IPV6_MAX)
		return (-1);
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f') ||
		    (s[i] >= 'A' && s[i] <= 'F') || s[i] == ':' || s[i] == '.'))
			return (-1);
	if (!whole)
		return (0);
	memcpy(text, s, len);
	text[len] = '\0';
	return (inet_pton(AF_INET6, text, a_r) == 1 ? 0 : -1);
}

static int
v1_addr(const unsigned char *s, size_t len, int whole, int fam,
    struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	ss->ss_family = (sa_family_t)fam;
	if (fam == AF_INET)
		return (v1_ipv4(s, len, whole, &sin->sin_addr));
	return (v1_ipv6(s, len, whole, &sin6->sin6_addr));
}

/* A decimal number 0-65535 without leading zeros. */
static int
v1_port(const unsigned char *s, size_t len, int whole,
    struct sockaddr_storage *ss)
{
	unsigned long val = 0;
	size_t i;

	if (len > 1 && s[0] == '0')
		return (-1);
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		val = val * 10 + (unsigned long)(s[i] - '0');
		if (val > 65535)
			return (-1);
	}
	if (!whole)
		return (0);
	if (len == 0)
		return (-1);
	set_port(ss, (uint16_t)val);
	return (0);
}

/*
 * "PROXY UNKNOWN" is followed by anything the receiver ignores, up to the
 * CRLF (section 2.1). A bare CR or LF is still refused: the line can only
 * end with CRLF.
 */
static int
v1_unknown(const unsigned char *b, size_t n, size_t lim, size_t i,
    struct proxyproto_hdr *h, struct proxyproto_hdr *h_r, size_t *used_r)
{
	for (; i < lim; i++) {
		if (b[i] == '\n')
			return (-1);
		if (b[i] != '\r')
			continue;
		if (i + 1 == lim)
			return (v1_more(n));
		if (b[i + 1] != '\n')
			return (-1);
		*h_r = *h;
		*used_r = i + 2;
		return (1);
	}
	return (v1_more(n));
}

/*
 * "PROXY" SP proto SP src SP dst SP sport SP dport CRLF, every separator
 * exactly one space (section 2.1). Each word is checked as soon as it
 * starts arriving, so a bad byte is refused when it is seen.
 */
static int
v1_parse(const unsigned char *b, size_t n, struct proxyproto_hdr *h_r,
    size_t *used_r)
{
	struct proxyproto_hdr h;
	size_t lim, i, start, f;
	int done, fam, r;

	lim = n < PROXYPROTO_V1_MAX ? n : PROXYPROTO_V1_MAX;
	if (memcmp(b, v1_sig, lim < V1_SIG_LEN ? lim : V1_SIG_LEN) != 0)
		return (-1);
	if (lim < V1_SIG_LEN)
		return (v1_more(n));

	start = i = V1_SIG_LEN;
	done = v1_word(b, lim, &i);
	if (v1_proto(b + start, i - start, done, &fam) == -1)
		return (-1);
	if (!done)
		return (v1_more(n));

	memset(&h, 0, sizeof(h));
	h.version = 1;
	h.command = PROXYPROTO_CMD_PROXY;
	h.family = fam;
	if (fam == AF_UNSPEC)
		return (v1_unknown(b, n, lim, i, &h, h_r, used_r));
	if (b[i++] != ' ')
		return (-1);

	/* Source and destination addresses, then their ports. */
	for (f = 0; f < 4; f++) {
		start = i;
		done = v1_word(b, lim, &i);
		if (f < 2)
			r = v1_addr(b + start, i - start, done, fam,
			    f == 0 ? &h.src : &h.dst);
		else
			r = v1_port(b + start, i - start, done,
			    f == 2 ? &h.src : &h.dst);
		if (r == -1)
			return (-1);
		if (!done)
			return (v1_more(n));
		if (b[i++] != (f < 3 ? ' ' : '\r'))
			return (-1);
	}
	if (i == lim)
		return (v1_more(n));
	if (b[i++] != '\n')
		return (-1);
	*h_r = h;
	*used_r = i;
	return (1);
}

/* ---- Version 2 ---------------------------------------------------- */

static size_t
get16(const unsigned char *p)
{
	return ((size_t)p[0] << 8 | p[1]);
}

/* CRC32c (Castagnoli, reflected), bit by bit: headers are short. */
static uint32_t
crc32c(uint32_t crc, const unsigned char *p, size_t n)
{
	int k;

	while (n-- > 0) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return (crc);
}

/*
 * Section 2.2.3: the checksum covers the whole header with its own four
 * bytes (at off) taken as zeros, and is carried in network byte order.
 */
static int
v2_crc_ok(const unsigned char *b, size_t total, size_t off)
{
	static const unsigned char zero[4];
	uint32_t crc, want;

	want = (uint32_t)b[off] << 24 | (uint32_t)b[off + 1] << 16 |
	    (uint32_t)b[off + 2] << 8 | b[off + 3];
	crc = crc32c(0xffffffffu, b, off);
	crc = crc32c(crc, zero, sizeof(zero));
	crc = crc32c(crc, b + off + 4, total - off - 4);
	return ((crc ^ 0xffffffffu) == want);
}

/* A list of TLVs filling [off, end) exactly, each inside it. */
static int
v2_tlv_list_ok(const unsigned char *b, size_t off, size_t end)
{
	while (off < end) {
		if (end - off < PP2_TLV_HDR ||
		    get16(b + off + 1) > end - off - PP2_TLV_HDR)
			return (-1);
		off += PP2_TLV_HDR + get16(b + off + 1);
	}
	return (0);
}

/*
 * The TLVs after the address block, up to the end of the header. Every TLV
 * must lie inside the header, and they must fill it exactly: stray bytes
 * are an invalid header, not padding (padding is PP2_TYPE_NOOP). Unknown
 * types are skipped; a type this code reads may appear only once, since
 * picking one of two would be a guess.
 */
static int
v2_tlvs(const unsigned char *b, size_t off, size_t end,
    struct proxyproto_hdr *h)
{
	size_t vlen, crc_off = 0;
	int seen_authority = 0, seen_crc = 0, seen_ssl = 0;

	if (v2_tlv_list_ok(b, off, end) == -1)
		return (-1);
	for (; off < end; off += vlen) {
		vlen = get16(b + off + 1);
		switch (b[off]) {
		case PP2_TYPE_AUTHORITY:
			if (seen_authority++ ||
			    authority_ok(b + off + PP2_TLV_HDR, vlen) == -1)
				return (-1);
			memcpy(h->authority, b + off + PP2_TLV_HDR, vlen);
			h->authority[vlen] = '\0';
			h->authority_len = vlen;
			break;
		case PP2_TYPE_CRC32C:
			if (seen_crc++ || vlen != 4)
				return (-1);
			crc_off = off + PP2_TLV_HDR;
			break;
		case PP2_TYPE_SSL:
			/* Section 2.2.6: client and verify, then sub-TLVs. */
			if (seen_ssl++ || vlen < PP2_SSL_HDR ||
			    v2_tlv_list_ok(b, off + PP2_TLV_HDR + PP2_SSL_HDR,
			    off + PP2_TLV_HDR + vlen) == -1)
				return (-1);
			break;
		default:
			break;
		}
		off += PP2_TLV_HDR;
	}
	if (seen_crc && !v2_crc_ok(b, end, crc_off))
		return (-1);
	return (0);
}

/*
 * Section 2.2. The 16 fixed bytes are checked one by one as they arrive;
 * the rest only once the whole header is in (the address block must not be
 * parsed before, and it is short).
 */
static int
v2_parse(const unsigned char *b, size_t n, struct proxyproto_hdr *h_r,
    size_t *used_r)
{
	struct proxyproto_hdr h;
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;
	size_t len, block;
	int cmd, fam;

	if (memcmp(b, v2_sig, n < sizeof(v2_sig) ? n : sizeof(v2_sig)) != 0)
		return (-1);
	if (n < 13)
		return (0);
	cmd = b[12] & 0x0f;
	if ((b[12] >> 4) != V2_VERSION ||
	    (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY))
		return (-1);
	if (n < 14)
		return (0);
	/*
	 * Families above AF_UNIX (3) and transports above DGRAM (2) must be
	 * rejected. LOCAL ignores the family. PROXY needs TCP over IPv4 or
	 * IPv6, or UNSPEC (use the real addresses): the spec lets a
	 * receiver refuse the rest, and a mail gateway has no use for UDP or
	 * AF_UNIX clients.
	 */
	fam = b[13];
	if ((fam >> 4) > 3 || (fam & 0x0f) > 2)
		return (-1);
	if (cmd == V2_CMD_PROXY && fam != V2_FAM_UNSPEC &&
	    fam != V2_FAM_TCP4 && fam != V2_FAM_TCP6)
		return (-1);
	if (n < V2_HDR_LEN)
		return (0);
	len = get16(b + 14);
	block = 0;
	if (cmd == V2_CMD_PROXY && fam == V2_FAM_TCP4)
		block = V2_ADDR_TCP4;
	else if (cmd == V2_CMD_PROXY && fam == V2_FAM_TCP6)
		block = V2_ADDR_TCP6;
	if (len > PROXYPROTO_V2_LEN_MAX || len < block)
		return (-1);
	if (n < V2_HDR_LEN + len)
		return (0);

	memset(&h, 0, sizeof(h));
	h.version = 2;
	h.command = cmd == V2_CMD_LOCAL ? PROXYPROTO_CMD_LOCAL :
	    PROXYPROTO_CMD_PROXY;
	h.family = AF_UNSPEC;
	/*
	 * LOCAL and UNSPEC: the whole block is skipped (the spec says to
	 * discard it, family included), so where TLVs would start is
	 * unknown and none are read.
	 */
	if (block == V2_ADDR_TCP4) {
		h.family = AF_INET;
		sin = (struct sockaddr_in *)&h.src;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, b + 16, 4);
		memcpy(&sin->sin_port, b + 24, 2);
		sin = (struct sockaddr_in *)&h.dst;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, b + 20, 4);
		memcpy(&sin->sin_port, b + 26, 2);
	} else if (block == V2_ADDR_TCP6) {
		h.family = AF_INET6;
		sin6 = (struct sockaddr_in6 *)&h.src;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, b + 16, 16);
		memcpy(&sin6->sin6_port, b + 48, 2);
		sin6 = (struct sockaddr_in6 *)&h.dst;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, b + 32, 16);
		memcpy(&sin6->sin6_port, b + 50, 2);
	}
	if (block > 0 &&
	    v2_tlvs(b, V2_HDR_LEN + block, V2_HDR_LEN + len, &h) == -1)
		return (-1);
	*h_r = h;
	*used_r = V2_HDR_LEN + len;
	return (1);
}

int
proxyproto_parse(const void *p, size_t n, int versions,
    struct proxyproto_hdr *h_r, size_t *used_r)
{
	const unsigned char *b = p;

	/* The two signatures differ in their first byte (section 2.2). */
	if (n == 0)
		return (versions & (PROXYPROTO_V1 | PROXYPROTO_V2) ? 0 : -1);
	if ((versions & PROXYPROTO_V2) && b[0] == v2_sig[0])
		return (v2_parse(b, n, h_r, used_r));
	if ((versions & PROXYPROTO_V1) && b[0] == (unsigned char)v1_sig[0])
		return (v1_parse(b, n, h_r, used_r));
	return (-1);
}

/* ---- Encoders ----------------------------------------------------- */

/*
 * Copy an address into ss, an IPv4-mapped IPv6 one (a dual-stack listener
 * sees IPv4 clients that way) as plain IPv4, so the backend logs and
 * matches the client as IPv4. Returns the family, AF_UNSPEC for any other.
 */
static int
enc_addr(const struct sockaddr *sa, struct sockaddr_storage *ss)
{
	struct sockaddr_in6 sin6;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	if (sa == NULL)
		return (AF_UNSPEC);
	if (sa->sa_family == AF_INET) {
		memcpy(ss, sa, sizeof(struct sockaddr_in));
		return (AF_INET);
	}
	if (sa->sa_family != AF_INET6)
		return (AF_UNSPEC);
	memcpy(&sin6, sa, sizeof(sin6));
	if (!IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
		memcpy(ss, &sin6, sizeof(sin6));
		return (AF_INET6);
	}
	sin->sin_family = AF_INET;
	sin->sin_port = sin6.sin6_port;
	memcpy(&sin->sin_addr, sin6.sin6_addr.s6_addr + 12, 4);
	return (AF_INET);
}

/* The family both addresses share after enc_addr(), or AF_UNSPEC. */
static int
enc_pair(const struct sockaddr *src, const struct sockaddr *dst,
    struct sockaddr_storage *s_r, struct sockaddr_storage *d_r)
{
	int fam;

	fam = enc_addr(src, s_r);
	return (enc_addr(dst, d_r) == fam ? fam : AF_UNSPEC);
}

/*
 * IPv6 text as RFC 5952 section 4 has it: lowercase, no leading zeros, the
 * longest run of two or more zero groups (the first of equals) as "::".
 * Unlike inet_ntop() it never ends in a dotted quad, which section 2.1 of
 * the PROXY spec does not describe. out holds at least 40 bytes.
 */
static void
enc_ipv6(const struct in6_addr *a, char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned w[8];
	int i, run, best = -1, bestlen = 1, shift, started;

	for (i = 0; i < 8; i++)
		w[i] = (unsigned)a->s6_addr[2 * i] << 8 | a->s6_addr[2 * i + 1];
	for (i = 0; i < 8; i += run > 0 ? run : 1) {
		for (run = 0; i + run < 8 && w[i + run] == 0; run++)
			;
		if (run > bestlen) {
			best = i;
			bestlen = run;
		}
	}
	for (i = 0; i < 8; i++) {
		if (i == best) {
			*out++ = ':';
			*out++ = ':';
			i += bestlen - 1;
			continue;
		}
		if (i > 0 && i != best + bestlen)
			*out++ = ':';
		for (started = 0, shift = 12; shift >= 0; shift -= 4) {
			if (started || shift == 0 || (w[i] >> shift) != 0) {
				*out++ = hex[(w[i] >> shift) & 0x0f];
				started = 1;
			}
		}
	}
	*out = '\0';
}

int
proxyproto_v1(char *buf, size_t len, const struct sockaddr *src,
    const struct sockaddr *dst, size_t *n_r)
{
	char line[PROXYPROTO_V1_MAX + 1], s[INET6_ADDRSTRLEN],
	    d[INET6_ADDRSTRLEN];
	struct sockaddr_storage sa, da;
	const unsigned char *a;
	unsigned sport = 0, dport = 0;
	int fam, n;

	fam = enc_pair(src, dst, &sa, &da);
	if (fam == AF_INET) {
		a = (const unsigned char *)
		    &((struct sockaddr_in *)&sa)->sin_addr;
		snprintf(s, sizeof(s), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
		a = (const unsigned char *)
		    &((struct sockaddr_in *)&da)->sin_addr;
		snprintf(d, sizeof(d), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
		sport = ntohs(((struct sockaddr_in *)&sa)->sin_port);
		dport = ntohs(((struct sockaddr_in *)&da)->sin_port);
	} else if (fam == AF_INET6) {
		enc_ipv6(&((struct sockaddr_in6 *)&sa)->sin6_addr, s);
		enc_ipv6(&((struct sockaddr_in6 *)&da)->sin6_addr, d);
		sport = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
		dport = ntohs(((struct sockaddr_in6 *)&da)->sin6_port);
	}
	/*
	 * Section 2.1: a sender that cannot fill the line correctly says
	 * UNKNOWN, in its short form.
	 */
	if (fam == AF_UNSPEC)
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	else
		n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
		    fam == AF_INET ? "TCP4" : "TCP6", s, d, sport, dport);
	if (n < 0 || (size_t)n > len)
		return (-1);
	memcpy(buf, line, (size_t)n);
	*n_r = (size_t)n;
	return (0);
}

/* Append n bytes to the header being built in out (PROXYPROTO_V2_MAX). */
static int
enc_put(unsigned char *out, size_t *off, const void *p, size_t n)
{
	if (n > PROXYPROTO_V2_MAX - *off)
		return (-1);
	memcpy(out + *off, p, n);
	*off += n;
	return (0);
}

static int
enc_tlv(unsigned char *out, size_t *off, unsigned char type, const char *s)
{
	unsigned char th[PP2_TLV_HDR];
	size_t n = strlen(s);

	if (n > 0xffff)
		return (-1);
	th[0] = type;
	th[1] = (unsigned char)(n >> 8);
	th[2] = (unsigned char)n;
	if (enc_put(out, off, th, sizeof(th)) == -1 ||
	    enc_put(out, off, s, n) == -1)
		return (-1);
	return (0);
}

/* PP2_TYPE_AUTHORITY, then PP2_TYPE_SSL with its sub-TLVs (section 2.2). */
static int
enc_tls(unsigned char *out, size_t *off, const struct proxyproto_tls *tls)
{
	/*
	 * Type, length (set below), client, verify. No PP2_CLIENT_CERT_*
	 * flag: no client certificate was taken, and verify is 0 then, as
	 * HAProxy sends it; receivers read the flags first.
	 */
	unsigned char ssl[PP2_TLV_HDR + PP2_SSL_HDR] =
	    { PP2_TYPE_SSL, 0, 0, PP2_CLIENT_SSL, 0, 0, 0, 0 };
	size_t start, vlen;

	if (tls->sni != NULL && tls->sni[0] != '\0') {
		if (authority_ok((const unsigned char *)tls->sni,
		    strlen(tls->sni)) == -1 ||
		    enc_tlv(out, off, PP2_TYPE_AUTHORITY, tls->sni) == -1)
			return (-1);
	}
	start = *off;
	if (enc_put(out, off, ssl, sizeof(ssl)) == -1)
		return (-1);
	if (tls->version != NULL &&
	    enc_tlv(out, off, PP2_SUBTYPE_SSL_VERSION, tls->version) == -1)
		return (-1);
	if (tls->cipher != NULL &&
	    enc_tlv(out, off, PP2_SUBTYPE_SSL_CIPHER, tls->cipher) == -1)
		return (-1);
	/* Bounded by PROXYPROTO_V2_MAX, so it fits 16 bits. */
	vlen = *off - start - PP2_TLV_HDR;
	out[start + 1] = (unsigned char)(vlen >> 8);
	out[start + 2] = (unsigned char)vlen;
	return (0);
}

int
proxyproto_v2(unsigned char *buf, size_t len, const struct sockaddr *src,
    const struct sockaddr *dst, const struct proxyproto_tls *tls,
    size_t *n_r)
{
	unsigned char out[PROXYPROTO_V2_MAX];
	struct sockaddr_storage sa, da;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
	struct sockaddr_in *d4 = (struct sockaddr_in *)&da;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
	struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&da;
	size_t off = V2_HDR_LEN;
	int fam;

	memcpy(out, v2_sig, sizeof(v2_sig));
	out[12] = V2_VERSION << 4 | V2_CMD_PROXY;
	fam = enc_pair(src, dst, &sa, &da);
	/*
	 * Source address, destination address, source port, destination
	 * port, all in network byte order as they are stored. These puts
	 * cannot fail: 16 + 36 bytes fit in PROXYPROTO_V2_MAX.
	 */
	if (fam == AF_INET) {
		out[13] = V2_FAM_TCP4;
		enc_put(out, &off, &s4->sin_addr, 4);
		enc_put(out, &off, &d4->sin_addr, 4);
		enc_put(out, &off, &s4->sin_port, 2);
		enc_put(out, &off, &d4->sin_port, 2);
	} else if (fam == AF_INET6) {
		out[13] = V2_FAM_TCP6;
		enc_put(out, &off, &s6->sin6_addr, 16);
		enc_put(out, &off, &d6->sin6_addr, 16);
		enc_put(out, &off, &s6->sin6_port, 2);
		enc_put(out, &off, &d6->sin6_port, 2);
	} else
		out[13] = V2_FAM_UNSPEC;
	/*
	 * Without addresses the receiver skips the whole block (HAProxy and
	 * this decoder both do), so TLVs would be lost: none are sent.
	 */
	if (tls != NULL && fam != AF_UNSPEC && enc_tls(out, &off, tls) == -1)
		return (-1);
	out[14] = (unsigned char)((off - V2_HDR_LEN) >> 8);
	out[15] = (unsigned char)(off - V2_HDR_LEN);
	if (off > len)
		return (-1);
	memcpy(buf, out, off);
	*n_r = off;
	return (0);
}
