/*
 * proxyproto: the HAProxy PROXY protocol, versions 1 and 2 (spec revision
 * 2020/03/05), both directions. The decoder reads the header a load
 * balancer puts in front of a client connection (accept_proxy); the
 * encoders write the header the gateway puts in front of a backend
 * connection (client_identity = proxy-v1 | proxy-v2). Pure functions over
 * byte spans: no I/O, no libev, no OpenSSL.
 */
#ifndef SMTPGATE_PROXYPROTO_H
#define SMTPGATE_PROXYPROTO_H

#include <sys/socket.h>

#include <stddef.h>

/* Which header formats proxyproto_parse() accepts; a bitmask. */
#define PROXYPROTO_V1		0x01
#define PROXYPROTO_V2		0x02

/* The longest v1 line, CRLF included (spec section 2.1). */
#define PROXYPROTO_V1_MAX	107
/*
 * The largest v2 length field accepted. The spec allows 65535, but says
 * headers are meant to fit in 536 bytes; the biggest real ones (addresses,
 * SSL TLV with CN, AUTHORITY, UNIQUE_ID, cloud TLVs) stay well under 1 KiB.
 * A larger length is rejected as soon as the 16 fixed bytes are seen, so a
 * peer cannot make the gateway wait for, or buffer, 64 KiB.
 */
#define PROXYPROTO_V2_LEN_MAX	2048
#define PROXYPROTO_V2_MAX	(16 + PROXYPROTO_V2_LEN_MAX)
/* A read buffer this big always holds any header proxyproto_parse() takes,
 * and given this many bytes it never answers 0 ("more needed"). */
#define PROXYPROTO_MAX		PROXYPROTO_V2_MAX
/* The longest AUTHORITY (SNI) kept: a DNS name, RFC 6066 section 3. */
#define PROXYPROTO_AUTHORITY_MAX 255

enum proxyproto_cmd {
	PROXYPROTO_CMD_LOCAL,	/* v2 LOCAL: the proxy's own connection */
	PROXYPROTO_CMD_PROXY	/* relayed for a client (v1 always) */
};

struct proxyproto_hdr {
	int			 version;	/* 1 or 2 */
	enum proxyproto_cmd	 command;
	/*
	 * AF_INET or AF_INET6: src and dst hold the client's address and
	 * the address it connected to, ports included. AF_UNSPEC (a LOCAL
	 * command, a v1 UNKNOWN line, a v2 PROXY with family UNSPEC): use
	 * the connection's own addresses; src and dst are zeroed. Callers
	 * test family, not command.
	 */
	int			 family;
	struct sockaddr_storage	 src;
	struct sockaddr_storage	 dst;
	/* The v2 AUTHORITY TLV (the client's SNI), NUL-terminated; empty
	 * when absent. Never holds a control character. */
	size_t			 authority_len;
	char			 authority[PROXYPROTO_AUTHORITY_MAX + 1];
};

/* What the encoder says about the client's TLS; a NULL field is omitted. */
struct proxyproto_tls {
	const char	*version;	/* e.g. "TLSv1.3" */
	const char	*cipher;	/* e.g. "TLS_AES_256_GCM_SHA384" */
	const char	*sni;		/* the server name the client asked for */
};

/*
 * Decode a PROXY header at the start of the n bytes at p, of a format
 * allowed by versions (PROXYPROTO_V1 | PROXYPROTO_V2). Returns 1 when a
 * complete valid header was decoded: *h_r holds it and *used_r its length
 * (the bytes after it are the client's). Returns 0 when the bytes are a
 * valid beginning of a header and more are needed, and -1 as soon as they
 * cannot begin a valid header; the connection must then be closed. Only a
 * return of 1 writes *h_r and *used_r. Any bytes at all are safe; p may be
 * NULL when n is 0. The function keeps no state: call it again with all
 * the bytes received so far.
 */
int	proxyproto_parse(const void *p, size_t n, int versions,
	    struct proxyproto_hdr *h_r, size_t *used_r);

/*
 * Write the v1 line for a connection from src to dst into buf (len bytes,
 * PROXYPROTO_V1_MAX is always enough; no NUL is added). IPv4-mapped IPv6
 * addresses are written as IPv4. When the families differ, or either
 * address is NULL or neither IPv4 nor IPv6, the line is "PROXY UNKNOWN".
 * Returns 0 with the length in *n_r, or -1 (nothing written) when buf is
 * too small.
 */
int	proxyproto_v1(char *buf, size_t len, const struct sockaddr *src,
	    const struct sockaddr *dst, size_t *n_r);

/*
 * Write a v2 header, command PROXY over TCP, for a connection from src to
 * dst into buf (len bytes). Addresses are handled as by proxyproto_v1();
 * without a common family the header carries family UNSPEC, no address
 * and no TLV. With tls, the header carries PP2_TYPE_AUTHORITY with the SNI
 * (omitted when NULL or empty) and PP2_TYPE_SSL with PP2_CLIENT_SSL, verify
 * 0 and the version and cipher sub-TLVs. Returns 0 with the length in
 * *n_r, or -1 (nothing written) when buf is too small, the SNI is longer
 * than PROXYPROTO_AUTHORITY_MAX or holds a control character, or the
 * header would exceed PROXYPROTO_V2_MAX.
 */
int	proxyproto_v2(unsigned char *buf, size_t len,
	    const struct sockaddr *src, const struct sockaddr *dst,
	    const struct proxyproto_tls *tls, size_t *n_r);

#endif
