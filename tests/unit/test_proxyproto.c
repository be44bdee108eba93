/*
 * proxyproto: the PROXY protocol decoder and encoders. Every decoder case
 * runs whole and one byte at a time; every prefix lives in a heap block of
 * exactly its size, so ASan and valgrind see any read past the bytes
 * received. The one-byte-at-a-time run checks what the stateless decoder
 * promises its caller: 0 until the verdict, then the same verdict on every
 * longer prefix.
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/proxyproto.h"
#include "suites.h"

#define BOTH	(PROXYPROTO_V1 | PROXYPROTO_V2)

/* The v2 signature, and the address blocks most v2 cases use. */
#define SIG	"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
/* 192.0.2.1:53764 -> 198.51.100.2:465 */
#define A4	"\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xd2\x04" "\x01\xd1"
/* [2001:db8::1]:53764 -> [2001:db8::2]:465 */
#define A6	"\x20\x01\x0d\xb8\x00\x00\x00\x00" \
		"\x00\x00\x00\x00\x00\x00\x00\x01" \
		"\x20\x01\x0d\xb8\x00\x00\x00\x00" \
		"\x00\x00\x00\x00\x00\x00\x00\x02" "\xd2\x04" "\x01\xd1"
#define STR15	"abcdefghijklmno"
#define STR255	STR15 STR15 STR15 STR15 STR15 STR15 STR15 STR15 STR15 \
		STR15 STR15 STR15 STR15 STR15 STR15 STR15 STR15
#define FF6	"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

#define IN(s)	.in = (s), .len = sizeof(s) - 1
/* The shortest prefix refused (ret -1), or the header's length (ret 1). */
#define AT(s)	.at = sizeof(s) - 1
#define IS4	.family = AF_INET, .src = "192.0.2.1", .sport = 53764, \
		.dst = "198.51.100.2", .dport = 465
#define IS6	.family = AF_INET6, .src = "2001:db8::1", .sport = 53764, \
		.dst = "2001:db8::2", .dport = 465

struct parse_case {
	const char	*name;
	const char	*in;
	size_t		 len;
	int		 only;		/* versions allowed; 0: both */
	int		 ret;		/* whole */
	size_t		 at;		/* 0: the whole input */
	int		 local;		/* v2 LOCAL */
	int		 family;
	const char	*src;
	unsigned	 sport;
	const char	*dst;
	unsigned	 dport;
	const char	*authority;
};

static const struct parse_case parse_cases[] = {
	/* v1, valid: the spec's examples and limits (section 2.1). */
	{ "v1 spec example",
	    IN("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
	    "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"),
	    .ret = 1, AT("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
	    .family = AF_INET, .src = "192.168.0.1", .sport = 56324,
	    .dst = "192.168.0.11", .dport = 443 },
	{ "v1 longest TCP4",
	    IN("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
	    .ret = 1, .family = AF_INET, .src = "255.255.255.255",
	    .sport = 65535, .dst = "255.255.255.255", .dport = 65535 },
	{ "v1 longest TCP6",
	    IN("PROXY TCP6 " FF6 " " FF6 " 65535 65535\r\n"),
	    .ret = 1, .family = AF_INET6, .src = FF6, .sport = 65535,
	    .dst = FF6, .dport = 65535 },
	{ "v1 UNKNOWN short form", IN("PROXY UNKNOWN\r\n"), .ret = 1,
	    .family = AF_UNSPEC },
	{ "v1 UNKNOWN worst case, 107 bytes",
	    IN("PROXY UNKNOWN " FF6 " " FF6 " 65535 65535\r\n"), .ret = 1,
	    .family = AF_UNSPEC },
	{ "v1 UNKNOWN ignores what follows",
	    IN("PROXY UNKNOWN \x01\x7f\xff any thing\r\nEHLO x\r\n"), .ret = 1,
	    AT("PROXY UNKNOWN \x01\x7f\xff any thing\r\n"),
	    .family = AF_UNSPEC },
	{ "v1 zero address and port", IN("PROXY TCP4 0.0.0.0 10.0.0.1 0 25\r\n"),
	    .ret = 1, .family = AF_INET, .src = "0.0.0.0", .sport = 0,
	    .dst = "10.0.0.1", .dport = 25 },
	{ "v1 TCP6 compressed, upper case",
	    IN("PROXY TCP6 2001:DB8::1 ::1 1 2\r\n"), .ret = 1,
	    .family = AF_INET6, .src = "2001:db8::1", .sport = 1,
	    .dst = "::1", .dport = 2 },
	{ "v1 TCP6 mapped, as inet_ntop writes it",
	    IN("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 53764 465\r\n"),
	    .ret = 1, .family = AF_INET6, .src = "::ffff:192.0.2.1",
	    .sport = 53764, .dst = "::ffff:198.51.100.2", .dport = 465 },
	{ "v1 TCP6, exactly 107 bytes",
	    IN("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
	    "ffff:ffff:ffff:ffff:ffff:fff:1.2.3.4 65535 65535\r\n"), .ret = 1,
	    .family = AF_INET6, .src = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	    .sport = 65535, .dst = "ffff:ffff:ffff:ffff:ffff:fff:102:304",
	    .dport = 65535 },

	/* v1, cut short: valid so far, more needed. */
	{ "v1 empty input", IN(""), .ret = 0 },
	{ "v1 signature only", IN("PROXY"), .ret = 0 },
	{ "v1 without LF", IN("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\r"),
	    .ret = 0 },
	{ "v1 UNKNOWN without CRLF", IN("PROXY UNKNOWN"), .ret = 0 },
	{ "v1 in the middle of an IPv6 address", IN("PROXY TCP6 2001:db8::"),
	    .ret = 0 },

	/* v1, too long: no CRLF within 107 bytes. */
	{ "v1 UNKNOWN, 108 bytes",
	    IN("PROXY UNKNOWN " FF6 " " FF6 " 65535 655350\r\n"), .ret = -1,
	    AT("PROXY UNKNOWN " FF6 " " FF6 " 65535 655350\r") },
	{ "v1 TCP6, 108 bytes",
	    IN("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:1.2.3.4 65535 65535\r\n"), .ret = -1,
	    AT("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:1.2.3.4 65535 65535\r") },

	/* v1, line ends: CRLF only. */
	{ "v1 LF only",
	    IN("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\nEHLO x\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\n") },
	{ "v1 CR only", IN("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\r\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\r\r") },
	{ "v1 UNKNOWN, LF only", IN("PROXY UNKNOWN\n"), .ret = -1 },
	{ "v1 UNKNOWN, bare CR inside", IN("PROXY UNKNOWN x\ry\r\n"), .ret = -1,
	    AT("PROXY UNKNOWN x\ry") },
	{ "v1 UNKNOWN, bare LF inside", IN("PROXY UNKNOWN x\ny\r\n"), .ret = -1,
	    AT("PROXY UNKNOWN x\n") },

	/* v1, signature, protocol and separators. */
	{ "v1 lower case signature", IN("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    .ret = -1, AT("p") },
	{ "v1 no space after PROXY", IN("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    .ret = -1, AT("PROXYT") },
	{ "v1 two spaces after PROXY", IN("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    .ret = -1, AT("PROXY  ") },
	{ "v1 tab separator", IN("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    .ret = -1, AT("PROXY\t") },
	{ "v1 TCP5", IN("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP5") },
	{ "v1 lower case tcp4", IN("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    .ret = -1, AT("PROXY t") },
	{ "v1 UDP4", IN("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), .ret = -1,
	    AT("PROXY UD") },
	{ "v1 UNKNOWNX", IN("PROXY UNKNOWNX\r\n"), .ret = -1,
	    AT("PROXY UNKNOWNX") },
	{ "v1 TCP4 without addresses", IN("PROXY TCP4\r\n"), .ret = -1,
	    AT("PROXY TCP4\r") },
	{ "v1 two spaces before the address",
	    IN("PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4  ") },
	{ "v1 NUL in the line", IN("PROXY TCP4 192.0.2.1\x00" "1 5.6.7.8\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1\x00") },

	/* v1, addresses. */
	{ "v1 IPv4 leading zero",
	    IN("PROXY TCP4 192.0.02.1 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.02") },
	{ "v1 IPv4 octet over 255",
	    IN("PROXY TCP4 256.0.2.1 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4 256") },
	{ "v1 IPv4 three octets",
	    IN("PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2 ") },
	{ "v1 IPv4 five octets",
	    IN("PROXY TCP4 192.0.2.1.5 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2.1.") },
	{ "v1 IPv4 empty octet",
	    IN("PROXY TCP4 192..2.1 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4 192..") },
	{ "v1 IPv4 trailing dot",
	    IN("PROXY TCP4 192.0.2. 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2. ") },
	{ "v1 IPv4 hex", IN("PROXY TCP4 0xc0.0.2.1 198.51.100.2 1 2\r\n"),
	    .ret = -1, AT("PROXY TCP4 0x") },
	{ "v1 IPv6 address in TCP4", IN("PROXY TCP4 ::1 ::1 1 2\r\n"),
	    .ret = -1, AT("PROXY TCP4 :") },
	{ "v1 TCP4 with an IPv6 destination",
	    IN("PROXY TCP4 192.0.2.1 ::1 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2.1 :") },
	{ "v1 IPv4 address in TCP6",
	    IN("PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP6 192.0.2.1 ") },
	{ "v1 IPv6 bad digit", IN("PROXY TCP6 2001:db8::g ::1 1 2\r\n"),
	    .ret = -1, AT("PROXY TCP6 2001:db8::g") },
	{ "v1 IPv6 two ::", IN("PROXY TCP6 1::2::3 ::1 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP6 1::2::3 ") },
	{ "v1 IPv6 five-digit group", IN("PROXY TCP6 12345::1 ::1 1 2\r\n"),
	    .ret = -1, AT("PROXY TCP6 12345::1 ") },
	{ "v1 IPv6 too long",
	    IN("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555 "
	    "::1 1 2\r\n"), .ret = -1,
	    AT("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555") },
	{ "v1 IPv6 with a scope", IN("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
	    .ret = -1, AT("PROXY TCP6 fe80::1%") },

	/* v1, ports. */
	{ "v1 port 65536",
	    IN("PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2.1 198.51.100.2 65536") },
	{ "v1 port six digits",
	    IN("PROXY TCP4 192.0.2.1 198.51.100.2 25 100000\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2.1 198.51.100.2 25 100000") },
	{ "v1 port leading zero",
	    IN("PROXY TCP4 192.0.2.1 198.51.100.2 1 025\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2.1 198.51.100.2 1 02") },
	{ "v1 port 00", IN("PROXY TCP4 192.0.2.1 198.51.100.2 00 25\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2 00") },
	{ "v1 port empty", IN("PROXY TCP4 192.0.2.1 198.51.100.2  25\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2  ") },
	{ "v1 port negative", IN("PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2 -") },
	{ "v1 port with a sign", IN("PROXY TCP4 192.0.2.1 198.51.100.2 +1 25\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2 +") },
	{ "v1 port with a letter", IN("PROXY TCP4 192.0.2.1 198.51.100.2 1a 25\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2 1a") },
	{ "v1 destination port missing",
	    IN("PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n"), .ret = -1,
	    AT("PROXY TCP4 192.0.2.1 198.51.100.2 1\r") },
	{ "v1 extra field", IN("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n"),
	    .ret = -1, AT("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 ") },

	/* Neither signature. */
	{ "SMTP instead of a header", IN("EHLO client.example\r\n"), .ret = -1,
	    AT("E") },
	{ "TLS instead of a header", IN("\x16\x03\x01\x02\x00\x01"), .ret = -1,
	    AT("\x16") },
	{ "v1 line, only v2 allowed", IN("PROXY UNKNOWN\r\n"),
	    .only = PROXYPROTO_V2, .ret = -1, AT("P") },
	{ "v2 header, only v1 allowed", IN(SIG "\x21\x11\x00\x0c" A4),
	    .only = PROXYPROTO_V1, .ret = -1, AT("\r") },

	/* v2, valid (section 2.2). */
	{ "v2 TCP4", IN(SIG "\x21\x11\x00\x0c" A4 "EHLO x\r\n"), .ret = 1,
	    AT(SIG "\x21\x11\x00\x0c" A4), IS4 },
	{ "v2 TCP4, only v2 allowed", IN(SIG "\x21\x11\x00\x0c" A4),
	    .only = PROXYPROTO_V2, .ret = 1, IS4 },
	{ "v2 TCP6", IN(SIG "\x21\x21\x00\x24" A6), .ret = 1, IS6 },
	{ "v2 LOCAL", IN(SIG "\x20\x00\x00\x00"), .ret = 1, .local = 1,
	    .family = AF_UNSPEC },
	{ "v2 LOCAL with addresses", IN(SIG "\x20\x11\x00\x0c" A4), .ret = 1,
	    .local = 1, .family = AF_UNSPEC },
	{ "v2 LOCAL skips any block", IN(SIG "\x20\x00\x00\x03" "\xff\x00\x01"),
	    .ret = 1, .local = 1, .family = AF_UNSPEC },
	{ "v2 LOCAL over UDP", IN(SIG "\x20\x12\x00\x00"), .ret = 1,
	    .local = 1, .family = AF_UNSPEC },
	{ "v2 PROXY UNSPEC", IN(SIG "\x21\x00\x00\x00"), .ret = 1,
	    .family = AF_UNSPEC },
	{ "v2 PROXY UNSPEC with a block",
	    IN(SIG "\x21\x00\x00\x04" "\x01\x02\x03\x04"), .ret = 1,
	    .family = AF_UNSPEC },
	{ "v2 AUTHORITY",
	    IN(SIG "\x21\x11\x00\x1f" A4 "\x02\x00\x10" "mail.example.com"),
	    .ret = 1, IS4, .authority = "mail.example.com" },
	{ "v2 NOOP, custom, ALPN and AUTHORITY",
	    IN(SIG "\x21\x11\x00\x2c" A4 "\x04\x00\x00" "\xe0\x00\x02" "ab"
	    "\x01\x00\x04" "smtp" "\x02\x00\x0e" "mx.example.net"), .ret = 1,
	    IS4, .authority = "mx.example.net" },
	{ "v2 SSL as HAProxy sends it",
	    IN(SIG "\x21\x11\x00\x37" A4 "\x20\x00\x28" "\x01" "\x00\x00\x00\x00"
	    "\x21\x00\x07" "TLSv1.3" "\x23\x00\x16" "TLS_AES_256_GCM_SHA384"),
	    .ret = 1, IS4 },
	{ "v2 CRC32C", IN(SIG "\x21\x11\x00\x13" A4 "\x03\x00\x04"
	    "\x36\x81\x0b\x2f"), .ret = 1, IS4 },
	{ "v2 AUTHORITY of 255 bytes",
	    IN(SIG "\x21\x21\x01\x26" A6 "\x02\x00\xff" STR255), .ret = 1, IS6,
	    .authority = STR255 },
	{ "v2 AUTHORITY in UTF-8",
	    IN(SIG "\x21\x11\x00\x19" A4 "\x02\x00\x0a" "caf\xc3\xa9" ".test"),
	    .ret = 1, IS4, .authority = "caf\xc3\xa9" ".test" },
	{ "v2 AUTHORITY empty", IN(SIG "\x21\x11\x00\x0f" A4 "\x02\x00\x00"),
	    .ret = 1, IS4 },

	/* v2, cut short. */
	{ "v2 half a signature", IN("\x0d\x0a\x0d\x0a\x00\x0d"), .ret = 0 },
	{ "v2 fixed part only", IN(SIG "\x21\x11\x00\x0c"), .ret = 0 },
	{ "v2 one byte short", IN(SIG "\x21\x11\x00\x0c" "\xc0\x00\x02\x01"
	    "\xc6\x33\x64\x02" "\xd2\x04" "\x01"), .ret = 0 },
	{ "v2 TLV cut short",
	    IN(SIG "\x21\x11\x00\x1f" A4 "\x02\x00\x10" "mail.example.co"),
	    .ret = 0 },

	/* v2, signature, version, command, family. */
	{ "v2 bad signature", IN("\x0d\x0a\x0d\x0a\x00\x0d\x0a" "QUIX\n"
	    "\x21\x11\x00\x0c" A4), .ret = -1,
	    AT("\x0d\x0a\x0d\x0a\x00\x0d\x0a" "QUIX") },
	{ "v2 CR then CR", IN("\r\r\n"), .ret = -1, AT("\r\r") },
	{ "v2 version 1", IN(SIG "\x11\x11\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x11") },
	{ "v2 version 3", IN(SIG "\x31\x11\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x31") },
	{ "v2 version 0", IN(SIG "\x01\x11\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x01") },
	{ "v2 command 2", IN(SIG "\x22\x11\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x22") },
	{ "v2 command 15", IN(SIG "\x2f\x11\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x2f") },
	{ "v2 family 4", IN(SIG "\x21\x41\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x21\x41") },
	{ "v2 transport 3", IN(SIG "\x21\x13\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x21\x13") },
	{ "v2 LOCAL, family 4", IN(SIG "\x20\x41\x00\x00"), .ret = -1,
	    AT(SIG "\x20\x41") },
	{ "v2 LOCAL, transport 3", IN(SIG "\x20\x03\x00\x00"), .ret = -1,
	    AT(SIG "\x20\x03") },
	{ "v2 PROXY over UDP4", IN(SIG "\x21\x12\x00\x0c" A4), .ret = -1,
	    AT(SIG "\x21\x12") },
	{ "v2 PROXY over UDP6", IN(SIG "\x21\x22\x00\x24" A6), .ret = -1,
	    AT(SIG "\x21\x22") },
	{ "v2 PROXY over AF_UNIX", IN(SIG "\x21\x31\x00\x00"), .ret = -1,
	    AT(SIG "\x21\x31") },
	{ "v2 PROXY INET, transport UNSPEC", IN(SIG "\x21\x10\x00\x0c" A4),
	    .ret = -1, AT(SIG "\x21\x10") },
	{ "v2 PROXY UNSPEC, STREAM", IN(SIG "\x21\x01\x00\x00"), .ret = -1,
	    AT(SIG "\x21\x01") },

	/* v2, lengths. */
	{ "v2 TCP4 length 11", IN(SIG "\x21\x11\x00\x0b" A4), .ret = -1,
	    AT(SIG "\x21\x11\x00\x0b") },
	{ "v2 TCP4 length 0", IN(SIG "\x21\x11\x00\x00"), .ret = -1 },
	{ "v2 TCP6 with the TCP4 length", IN(SIG "\x21\x21\x00\x0c" A4),
	    .ret = -1, AT(SIG "\x21\x21\x00\x0c") },
	{ "v2 TCP6 length 35", IN(SIG "\x21\x21\x00\x23" A6), .ret = -1,
	    AT(SIG "\x21\x21\x00\x23") },
	{ "v2 length over the cap", IN(SIG "\x21\x11\x08\x01" A4), .ret = -1,
	    AT(SIG "\x21\x11\x08\x01") },
	{ "v2 length 65535", IN(SIG "\x21\x11\xff\xff" A4), .ret = -1,
	    AT(SIG "\x21\x11\xff\xff") },
	{ "v2 LOCAL length 65535", IN(SIG "\x20\x00\xff\xff"), .ret = -1 },

	/* v2, TLVs. */
	{ "v2 TLV overruns the header",
	    IN(SIG "\x21\x11\x00\x0f" A4 "\x02\x00\x05" "abcde"), .ret = -1,
	    AT(SIG "\x21\x11\x00\x0f" A4 "\x02\x00\x05") },
	{ "v2 TLV one byte over",
	    IN(SIG "\x21\x11\x00\x14" A4 "\x04\x00\x06" "abcde"), .ret = -1 },
	{ "v2 TLV header cut by the end",
	    IN(SIG "\x21\x11\x00\x0e" A4 "\x04\x00"), .ret = -1 },
	{ "v2 SSL shorter than client and verify",
	    IN(SIG "\x21\x11\x00\x13" A4 "\x20\x00\x04" "\x01\x00\x00\x00"),
	    .ret = -1 },
	{ "v2 SSL sub-TLV overruns",
	    IN(SIG "\x21\x11\x00\x17" A4 "\x20\x00\x08" "\x01\x00\x00\x00\x00"
	    "\x21\x00\x05"), .ret = -1 },
	{ "v2 SSL twice",
	    IN(SIG "\x21\x11\x00\x1c" A4 "\x20\x00\x05" "\x01\x00\x00\x00\x00"
	    "\x20\x00\x05" "\x01\x00\x00\x00\x00"), .ret = -1 },
	{ "v2 AUTHORITY twice",
	    IN(SIG "\x21\x11\x00\x14" A4 "\x02\x00\x01" "a" "\x02\x00\x01" "b"),
	    .ret = -1 },
	{ "v2 AUTHORITY with LF",
	    IN(SIG "\x21\x11\x00\x12" A4 "\x02\x00\x03" "a\nb"), .ret = -1 },
	{ "v2 AUTHORITY with NUL",
	    IN(SIG "\x21\x11\x00\x12" A4 "\x02\x00\x03" "a\x00" "b"), .ret = -1 },
	{ "v2 AUTHORITY of 256 bytes",
	    IN(SIG "\x21\x21\x01\x27" A6 "\x02\x01\x00" STR255 "x"), .ret = -1 },
	{ "v2 CRC32C wrong",
	    IN(SIG "\x21\x11\x00\x13" A4 "\x03\x00\x04" "\x36\x81\x0b\x2e"),
	    .ret = -1 },
	{ "v2 CRC32C of 3 bytes",
	    IN(SIG "\x21\x11\x00\x12" A4 "\x03\x00\x03" "\x00\x00\x00"),
	    .ret = -1 },
	{ "v2 CRC32C twice",
	    IN(SIG "\x21\x11\x00\x1a" A4 "\x03\x00\x04" "\x36\x81\x0b\x2f"
	    "\x03\x00\x04" "\x36\x81\x0b\x2f"), .ret = -1 },
};
#define NPARSE	(sizeof(parse_cases) / sizeof(parse_cases[0]))

/* ---- Helpers --------------------------------------------------------- */

static void
make_addr(struct sockaddr_storage *ss, int fam, const char *text,
    unsigned port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_un *un = (struct sockaddr_un *)ss;

	memset(ss, 0, sizeof(*ss));
	ss->ss_family = (sa_family_t)fam;
	if (fam == AF_INET) {
		ck_assert_int_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1);
		sin->sin_port = htons((uint16_t)port);
	} else if (fam == AF_INET6) {
		ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
		sin6->sin6_port = htons((uint16_t)port);
	} else if (fam == AF_UNIX)
		strcpy(un->sun_path, text);
}

static void
check_addr(const char *name, const struct sockaddr_storage *ss, int fam,
    const char *text, unsigned port)
{
	struct sockaddr_storage want;

	ck_assert_msg(ss->ss_family == fam, "%s: family %d, want %d", name,
	    ss->ss_family, fam);
	make_addr(&want, fam, text, port);
	if (fam == AF_INET)
		ck_assert_msg(memcmp(ss, &want, sizeof(struct sockaddr_in)) == 0,
		    "%s: not %s port %u", name, text, port);
	else
		ck_assert_msg(memcmp(ss, &want, sizeof(struct sockaddr_in6)) ==
		    0, "%s: not [%s] port %u", name, text, port);
}

/*
 * ck_assert records every check that passes (a write each time); the loops
 * below make millions of checks, so they use this, which costs nothing
 * until it fails.
 */
#define REQUIRE(cond, ...)	do {					\
	if (!(cond))							\
		ck_abort_msg(__VA_ARGS__);				\
} while (0)

/* What any decoded header must look like, whatever the input. */
static void
check_sane(const char *name, const struct proxyproto_hdr *h, size_t used,
    size_t n)
{
	static const struct sockaddr_storage zero;
	size_t i;

	REQUIRE(used > 0 && used <= n && used <= PROXYPROTO_MAX,
	    "%s: used %zu of %zu", name, used, n);
	REQUIRE(h->version == 1 || h->version == 2, "%s: version %d", name,
	    h->version);
	REQUIRE(h->version == 2 || (used <= PROXYPROTO_V1_MAX &&
	    h->command == PROXYPROTO_CMD_PROXY), "%s: v1 used %zu", name, used);
	REQUIRE(h->command == PROXYPROTO_CMD_LOCAL ||
	    h->command == PROXYPROTO_CMD_PROXY, "%s: command", name);
	REQUIRE(h->family == AF_INET || h->family == AF_INET6 ||
	    h->family == AF_UNSPEC, "%s: family %d", name, h->family);
	REQUIRE(h->command == PROXYPROTO_CMD_PROXY || h->family == AF_UNSPEC,
	    "%s: LOCAL with an address", name);
	if (h->family == AF_UNSPEC)
		REQUIRE(memcmp(&h->src, &zero, sizeof(zero)) == 0 &&
		    memcmp(&h->dst, &zero, sizeof(zero)) == 0,
		    "%s: addresses without a family", name);
	else
		REQUIRE(h->src.ss_family == h->family &&
		    h->dst.ss_family == h->family, "%s: address families", name);
	REQUIRE(h->authority_len <= PROXYPROTO_AUTHORITY_MAX &&
	    strlen(h->authority) == h->authority_len, "%s: authority length",
	    name);
	for (i = 0; i < h->authority_len; i++)
		REQUIRE((unsigned char)h->authority[i] >= 0x20 &&
		    h->authority[i] != 0x7f, "%s: control in authority", name);
}

static int
hdr_eq(const struct proxyproto_hdr *a, const struct proxyproto_hdr *b)
{
	return (a->version == b->version && a->command == b->command &&
	    a->family == b->family &&
	    memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
	    memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0 &&
	    a->authority_len == b->authority_len &&
	    strcmp(a->authority, b->authority) == 0);
}

/*
 * Parse n bytes from a heap block of exactly n bytes (NULL for none), and
 * check that *h_r and *used_r are left alone unless the result is 1.
 */
static int
parse_copy(const char *name, const void *in, size_t n, int versions,
    struct proxyproto_hdr *h_r, size_t *used_r)
{
	struct proxyproto_hdr before;
	unsigned char *p = NULL;
	int r;

	if (n > 0) {
		p = malloc(n);
		REQUIRE(p != NULL, "out of memory");
		memcpy(p, in, n);
	}
	memset(h_r, 0x5a, sizeof(*h_r));
	memcpy(&before, h_r, sizeof(before));
	*used_r = 12345;
	r = proxyproto_parse(p, n, versions, h_r, used_r);
	free(p);
	REQUIRE(r >= -1 && r <= 1, "%s: returned %d", name, r);
	if (r == 1)
		check_sane(name, h_r, *used_r, n);
	else
		REQUIRE(memcmp(h_r, &before, sizeof(before)) == 0 &&
		    *used_r == 12345, "%s: header written on %d", name, r);
	return (r);
}

/*
 * Feed in one byte more at a time. Each prefix is copied to the end of a
 * block of exactly len bytes, so a read past it leaves the block. Checks
 * that the verdict, once given, never changes: -1 stays -1, and 1 keeps the
 * same header and length. Returns the shortest prefix with a verdict (len + 1
 * when none), the verdict in *ret_r and, for 1, the header.
 */
static size_t
feed_bytewise(const char *name, const void *in, size_t len, int versions,
    int *ret_r, struct proxyproto_hdr *h_r, size_t *used_r)
{
	struct proxyproto_hdr h, first;
	unsigned char *blk;
	size_t k, used, decided = len + 1;
	int r;

	blk = malloc(len > 0 ? len : 1);
	REQUIRE(blk != NULL, "out of memory");
	memset(&first, 0, sizeof(first));
	*ret_r = 0;
	for (k = 0; k <= len; k++) {
		if (k > 0)
			memcpy(blk + len - k, in, k);
		r = proxyproto_parse(k > 0 ? blk + len - k : NULL, k, versions,
		    &h, &used);
		if (decided > len) {
			if (r == 0)
				continue;
			decided = k;
			*ret_r = r;
			if (r == 1) {
				check_sane(name, &h, used, k);
				first = h;
				*used_r = used;
			}
			continue;
		}
		REQUIRE(r == *ret_r, "%s: %d after %zu bytes, then %d after %zu",
		    name, *ret_r, decided, r, k);
		if (r == 1)
			REQUIRE(used == *used_r && hdr_eq(&h, &first),
			    "%s: another header after %zu bytes", name, k);
	}
	free(blk);
	if (*ret_r == 1)
		*h_r = first;
	return (decided);
}

static void
check_case(const struct parse_case *pc, const struct proxyproto_hdr *h)
{
	static const struct sockaddr_storage zero;

	ck_assert_int_eq(h->version, pc->in[0] == 'P' ? 1 : 2);
	ck_assert_int_eq(h->command, pc->local ? PROXYPROTO_CMD_LOCAL :
	    PROXYPROTO_CMD_PROXY);
	ck_assert_msg(h->family == pc->family, "%s: family %d", pc->name,
	    h->family);
	if (pc->family != AF_UNSPEC) {
		check_addr(pc->name, &h->src, pc->family, pc->src, pc->sport);
		check_addr(pc->name, &h->dst, pc->family, pc->dst, pc->dport);
	} else {
		ck_assert(memcmp(&h->src, &zero, sizeof(zero)) == 0);
		ck_assert(memcmp(&h->dst, &zero, sizeof(zero)) == 0);
	}
	if (pc->authority != NULL) {
		ck_assert_uint_eq(h->authority_len, strlen(pc->authority));
		ck_assert_str_eq(h->authority, pc->authority);
	} else
		ck_assert_uint_eq(h->authority_len, 0);
}

/* ---- Decoder --------------------------------------------------------- */

START_TEST(test_parse)
{
	const struct parse_case *pc = &parse_cases[_i / 2];
	int versions = pc->only != 0 ? pc->only : BOTH;
	size_t at = pc->at != 0 ? pc->at : pc->len;
	struct proxyproto_hdr h;
	size_t used, decided;
	char *more;
	int r;

	ck_assert_uint_le(at, pc->len);
	if (_i % 2 == 0) {
		r = parse_copy(pc->name, pc->in, pc->len, versions, &h, &used);
		ck_assert_msg(r == pc->ret, "%s: whole: %d, want %d", pc->name,
		    r, pc->ret);
		if (r == 1) {
			ck_assert_msg(used == at, "%s: used %zu, want %zu",
			    pc->name, used, at);
			check_case(pc, &h);
		}
		if (pc->ret == 0)
			return;
		/* Whatever follows the header changes nothing. */
		more = malloc(pc->len + 8);
		ck_assert_ptr_nonnull(more);
		memcpy(more, pc->in, pc->len);
		memcpy(more + pc->len, "QUIT\r\n\r\n", 8);
		r = parse_copy(pc->name, more, pc->len + 8, versions, &h, &used);
		free(more);
		ck_assert_msg(r == pc->ret, "%s: with more: %d", pc->name, r);
		if (r == 1) {
			ck_assert_uint_eq(used, at);
			check_case(pc, &h);
		}
		return;
	}
	decided = feed_bytewise(pc->name, pc->in, pc->len, versions, &r, &h,
	    &used);
	if (pc->ret == 0) {
		ck_assert_msg(decided == pc->len + 1, "%s: %d after %zu bytes",
		    pc->name, r, decided);
		return;
	}
	ck_assert_msg(r == pc->ret && decided == at,
	    "%s: bytewise: %d after %zu bytes, want %d after %zu", pc->name,
	    r, decided, pc->ret, at);
	if (r == 1) {
		ck_assert_uint_eq(used, at);
		check_case(pc, &h);
	}
}
END_TEST

START_TEST(test_spec_lengths)
{
	/* Section 2.1 counts these; the table above relies on them. */
	ck_assert_uint_eq(strlen("PROXY TCP4 255.255.255.255 255.255.255.255 "
	    "65535 65535\r\n"), 56);
	ck_assert_uint_eq(strlen("PROXY TCP6 " FF6 " " FF6 " 65535 65535\r\n"),
	    104);
	ck_assert_uint_eq(strlen("PROXY UNKNOWN\r\n"), 15);
	ck_assert_uint_eq(strlen("PROXY UNKNOWN " FF6 " " FF6
	    " 65535 65535\r\n"), PROXYPROTO_V1_MAX);
	ck_assert_uint_eq(sizeof(SIG) - 1, 12);
	ck_assert_uint_eq(sizeof(A4) - 1, 12);
	ck_assert_uint_eq(sizeof(A6) - 1, 36);
	ck_assert_uint_eq(sizeof(STR255) - 1, 255);
}
END_TEST

START_TEST(test_no_version)
{
	struct proxyproto_hdr h;
	size_t used;

	/* With no format allowed, nothing can begin a header. */
	ck_assert_int_eq(parse_copy("none", "", 0, 0, &h, &used), -1);
	ck_assert_int_eq(parse_copy("none", "PROXY UNKNOWN\r\n", 15, 0, &h,
	    &used), -1);
	ck_assert_int_eq(parse_copy("none", SIG "\x20\x00\x00\x00", 16, 0, &h,
	    &used), -1);
}
END_TEST

/* The largest header accepted, and one byte more (PROXYPROTO_V2_LEN_MAX). */
START_TEST(test_v2_cap)
{
	unsigned char *in;
	size_t len = PROXYPROTO_V2_LEN_MAX + (size_t)_i, noop, used, decided;
	struct proxyproto_hdr h;
	int r, whole;

	in = calloc(1, 16 + len);
	ck_assert_ptr_nonnull(in);
	memcpy(in, SIG "\x21\x11", 14);
	in[14] = (unsigned char)(len >> 8);
	in[15] = (unsigned char)len;
	memcpy(in + 16, A4, 12);
	noop = len - 12 - 3;
	in[28] = 0x04;
	in[29] = (unsigned char)(noop >> 8);
	in[30] = (unsigned char)noop;
	whole = parse_copy("cap", in, 16 + len, BOTH, &h, &used);
	decided = feed_bytewise("cap", in, 16 + len, BOTH, &r, &h, &used);
	ck_assert_int_eq(whole, r);
	if (_i == 0) {
		ck_assert_int_eq(r, 1);
		ck_assert_uint_eq(used, PROXYPROTO_MAX);
		ck_assert_uint_eq(decided, PROXYPROTO_MAX);
	} else {
		ck_assert_int_eq(r, -1);
		ck_assert_uint_eq(decided, 16);
	}
	free(in);
}
END_TEST

/*
 * A caller reads into a PROXYPROTO_MAX buffer: once it is full the decoder
 * must decide, or the caller would wait for bytes it has no room for.
 */
START_TEST(test_full_buffer_decides)
{
	static const struct {
		const char	*head;
		size_t		 len;
		unsigned char	 fill;
		int		 ret;
	} starts[] = {
#define START(s, fill, ret)	{ (s), sizeof(s) - 1, (fill), (ret) }
		START("PROXY UNKNOWN ", 'x', -1),
		START("PROXY TCP6 ", 'f', -1),
		START("PROXY TCP4 1", '1', -1),
		START(SIG "\x21\x11\x08\x00" A4 "\x04\x07\xf1", 0, 1),
		START(SIG "\x20\x00\x08\x00", 0xff, 1),
		START(SIG "\x21\x21\x08\x00" A6 "\xe0\x07\xd9", 'z', 1),
#undef START
	};
	unsigned char *in;
	struct proxyproto_hdr h;
	size_t i, used;

	in = malloc(PROXYPROTO_MAX);
	ck_assert_ptr_nonnull(in);
	for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
		memset(in, starts[i].fill, PROXYPROTO_MAX);
		memcpy(in, starts[i].head, starts[i].len);
		ck_assert_int_eq(parse_copy("full", in, PROXYPROTO_MAX, BOTH, &h,
		    &used), starts[i].ret);
	}
	free(in);
}
END_TEST

/* ---- Encoders -------------------------------------------------------- */

struct enc_case {
	const char		*name;
	int			 version;
	int			 sfam;		/* AF_UNSPEC: a NULL address */
	const char		*src;
	unsigned		 sport;
	int			 dfam;
	const char		*dst;
	unsigned		 dport;
	int			 with_tls;
	struct proxyproto_tls	 tls;
	const char		*out;
	size_t			 outlen;
	/* What the decoder reads back; dsrc and ddst default to src, dst. */
	int			 family;
	const char		*dsrc, *ddst;
	const char		*authority;
};

#define OUT(s)	.out = (s), .outlen = sizeof(s) - 1
#define E4	.sfam = AF_INET, .src = "192.0.2.1", .sport = 53764, \
		.dfam = AF_INET, .dst = "198.51.100.2", .dport = 465, \
		.family = AF_INET
#define E6	.sfam = AF_INET6, .src = "2001:db8::1", .sport = 53764, \
		.dfam = AF_INET6, .dst = "2001:db8::2", .dport = 465, \
		.family = AF_INET6
#define EV6(a)	.sfam = AF_INET6, .src = (a), .sport = 1, \
		.dfam = AF_INET6, .dst = "::1", .dport = 2, .family = AF_INET6
#define TLS_ALL	.with_tls = 1, .tls = { "TLSv1.3", "TLS_AES_256_GCM_SHA384", \
		"mx.example.net" }

static const struct enc_case enc_cases[] = {
	/* v1. */
	{ "v1 spec example", 1, .sfam = AF_INET, .src = "192.168.0.1",
	    .sport = 56324, .dfam = AF_INET, .dst = "192.168.0.11",
	    .dport = 443, .family = AF_INET,
	    OUT("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n") },
	{ "v1 TCP4", 1, E4,
	    OUT("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\r\n") },
	{ "v1 TCP4 extremes", 1, .sfam = AF_INET, .src = "0.0.0.0",
	    .sport = 0, .dfam = AF_INET, .dst = "255.255.255.255",
	    .dport = 65535, .family = AF_INET,
	    OUT("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n") },
	{ "v1 TCP6", 1, E6,
	    OUT("PROXY TCP6 2001:db8::1 2001:db8::2 53764 465\r\n") },
	{ "v1 TCP6 longest", 1, .sfam = AF_INET6, .src = FF6, .sport = 65535,
	    .dfam = AF_INET6, .dst = FF6, .dport = 65535, .family = AF_INET6,
	    OUT("PROXY TCP6 " FF6 " " FF6 " 65535 65535\r\n") },
	{ "v1 TCP6 all zeros", 1, EV6("::"), OUT("PROXY TCP6 :: ::1 1 2\r\n") },
	/* RFC 5952 section 4: the text the encoder writes. */
	{ "v1 TCP6 first of two equal runs", 1, EV6("2001:db8:0:0:1:0:0:1"),
	    OUT("PROXY TCP6 2001:db8::1:0:0:1 ::1 1 2\r\n") },
	{ "v1 TCP6 longest run", 1, EV6("2001:0:0:1:0:0:0:1"),
	    OUT("PROXY TCP6 2001:0:0:1::1 ::1 1 2\r\n") },
	{ "v1 TCP6 single zero not compressed", 1, EV6("2001:db8:0:1:1:1:1:1"),
	    OUT("PROXY TCP6 2001:db8:0:1:1:1:1:1 ::1 1 2\r\n") },
	{ "v1 TCP6 trailing run", 1, EV6("1::"), OUT("PROXY TCP6 1:: ::1 1 2\r\n") },
	{ "v1 TCP6 lower case, no leading zeros", 1,
	    EV6("2001:0DB8:AAAA:0000:0000:0000:0000:00FF"),
	    OUT("PROXY TCP6 2001:db8:aaaa::ff ::1 1 2\r\n") },
	{ "v1 TCP6 compatible, not dotted", 1, EV6("::1.2.3.4"),
	    OUT("PROXY TCP6 ::102:304 ::1 1 2\r\n") },
	{ "v1 TCP6 ending in a run of one", 1, EV6("1:2:3:4:5:6:7:0"),
	    OUT("PROXY TCP6 1:2:3:4:5:6:7:0 ::1 1 2\r\n") },
	{ "v1 mapped addresses as TCP4", 1, .sfam = AF_INET6,
	    .src = "::ffff:192.0.2.1", .sport = 53764, .dfam = AF_INET6,
	    .dst = "::ffff:198.51.100.2", .dport = 465, .family = AF_INET,
	    .dsrc = "192.0.2.1", .ddst = "198.51.100.2",
	    OUT("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\r\n") },
	{ "v1 mapped and IPv4 as TCP4", 1, .sfam = AF_INET6,
	    .src = "::ffff:192.0.2.1", .sport = 53764, .dfam = AF_INET,
	    .dst = "198.51.100.2", .dport = 465, .family = AF_INET,
	    .dsrc = "192.0.2.1",
	    OUT("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\r\n") },
	{ "v1 mixed families", 1, .sfam = AF_INET, .src = "192.0.2.1",
	    .sport = 1, .dfam = AF_INET6, .dst = "2001:db8::2", .dport = 2,
	    .family = AF_UNSPEC, OUT("PROXY UNKNOWN\r\n") },
	{ "v1 AF_UNIX", 1, .sfam = AF_UNIX, .src = "/run/a", .dfam = AF_UNIX,
	    .dst = "/run/b", .family = AF_UNSPEC, OUT("PROXY UNKNOWN\r\n") },
	{ "v1 no source", 1, .sfam = AF_UNSPEC, .dfam = AF_INET,
	    .dst = "198.51.100.2", .dport = 465, .family = AF_UNSPEC,
	    OUT("PROXY UNKNOWN\r\n") },

	/* v2. */
	{ "v2 TCP4", 2, E4, OUT(SIG "\x21\x11\x00\x0c" A4) },
	{ "v2 TCP6", 2, E6, OUT(SIG "\x21\x21\x00\x24" A6) },
	{ "v2 TCP4 with TLS", 2, E4, TLS_ALL,
	    .authority = "mx.example.net",
	    OUT(SIG "\x21\x11\x00\x48" A4 "\x02\x00\x0e" "mx.example.net"
	    "\x20\x00\x28" "\x01" "\x00\x00\x00\x00" "\x21\x00\x07" "TLSv1.3"
	    "\x23\x00\x16" "TLS_AES_256_GCM_SHA384") },
	{ "v2 TCP6 with TLS", 2, E6, TLS_ALL,
	    .authority = "mx.example.net",
	    OUT(SIG "\x21\x21\x00\x60" A6 "\x02\x00\x0e" "mx.example.net"
	    "\x20\x00\x28" "\x01" "\x00\x00\x00\x00" "\x21\x00\x07" "TLSv1.3"
	    "\x23\x00\x16" "TLS_AES_256_GCM_SHA384") },
	{ "v2 TLS, nothing known", 2, E4, .with_tls = 1,
	    OUT(SIG "\x21\x11\x00\x14" A4 "\x20\x00\x05" "\x01"
	    "\x00\x00\x00\x00") },
	{ "v2 TLS, version only, empty SNI", 2, E4, .with_tls = 1,
	    .tls = { "TLSv1.3", NULL, "" },
	    OUT(SIG "\x21\x11\x00\x1e" A4 "\x20\x00\x0f" "\x01"
	    "\x00\x00\x00\x00" "\x21\x00\x07" "TLSv1.3") },
	{ "v2 TLS, SNI only", 2, E4, .with_tls = 1,
	    .tls = { NULL, NULL, "a.example" }, .authority = "a.example",
	    OUT(SIG "\x21\x11\x00\x20" A4 "\x02\x00\x09" "a.example"
	    "\x20\x00\x05" "\x01" "\x00\x00\x00\x00") },
	{ "v2 SNI of 255 bytes", 2, E4, .with_tls = 1,
	    .tls = { NULL, NULL, STR255 }, .authority = STR255,
	    OUT(SIG "\x21\x11\x01\x16" A4 "\x02\x00\xff" STR255
	    "\x20\x00\x05" "\x01" "\x00\x00\x00\x00") },
	{ "v2 mapped addresses as TCP4", 2, .sfam = AF_INET6,
	    .src = "::ffff:192.0.2.1", .sport = 53764, .dfam = AF_INET6,
	    .dst = "::ffff:198.51.100.2", .dport = 465, .family = AF_INET,
	    .dsrc = "192.0.2.1", .ddst = "198.51.100.2",
	    OUT(SIG "\x21\x11\x00\x0c" A4) },
	{ "v2 mixed families, TLS dropped", 2, .sfam = AF_INET,
	    .src = "192.0.2.1", .sport = 1, .dfam = AF_INET6,
	    .dst = "2001:db8::2", .dport = 2, .family = AF_UNSPEC, TLS_ALL,
	    OUT(SIG "\x21\x00\x00\x00") },
	{ "v2 no addresses", 2, .sfam = AF_UNSPEC, .dfam = AF_UNSPEC,
	    .family = AF_UNSPEC, OUT(SIG "\x21\x00\x00\x00") },
};
#define NENC	(sizeof(enc_cases) / sizeof(enc_cases[0]))

static int
encode(const struct enc_case *ec, void *buf, size_t len, size_t *n_r)
{
	struct sockaddr_storage s, d;
	const struct sockaddr *sp = NULL, *dp = NULL;

	if (ec->sfam != AF_UNSPEC) {
		make_addr(&s, ec->sfam, ec->src, ec->sport);
		sp = (const struct sockaddr *)&s;
	}
	if (ec->dfam != AF_UNSPEC) {
		make_addr(&d, ec->dfam, ec->dst, ec->dport);
		dp = (const struct sockaddr *)&d;
	}
	if (ec->version == 1)
		return (proxyproto_v1(buf, len, sp, dp, n_r));
	return (proxyproto_v2(buf, len, sp, dp, ec->with_tls ? &ec->tls : NULL,
	    n_r));
}

/*
 * Encode into buffers of every size up to the exact one: each too small is
 * refused and left untouched. Then decode what was written, whole and one
 * byte at a time, and find the addresses and SNI again.
 */
START_TEST(test_encode)
{
	const struct enc_case *ec = &enc_cases[_i];
	unsigned char buf[PROXYPROTO_MAX + 1], sentinel[PROXYPROTO_MAX + 1];
	struct proxyproto_hdr h, hb;
	size_t len, n, used, usedb, decided;
	int r;

	memset(sentinel, 0xa5, sizeof(sentinel));
	for (len = 0; len < ec->outlen; len++) {
		memcpy(buf, sentinel, sizeof(buf));
		n = 777;
		ck_assert_msg(encode(ec, buf, len, &n) == -1,
		    "%s: fits in %zu bytes", ec->name, len);
		ck_assert_uint_eq(n, 777);
		ck_assert(memcmp(buf, sentinel, sizeof(buf)) == 0);
	}
	memcpy(buf, sentinel, sizeof(buf));
	ck_assert_msg(encode(ec, buf, ec->outlen, &n) == 0, "%s: refused",
	    ec->name);
	ck_assert_msg(n == ec->outlen && memcmp(buf, ec->out, n) == 0,
	    "%s: wrote %zu bytes, want %zu", ec->name, n, ec->outlen);
	ck_assert_int_eq(buf[n], 0xa5);
	ck_assert_int_eq(encode(ec, buf, sizeof(buf), &n), 0);
	ck_assert_uint_eq(n, ec->outlen);

	r = parse_copy(ec->name, ec->out, ec->outlen, BOTH, &h, &used);
	ck_assert_msg(r == 1, "%s: decoded %d", ec->name, r);
	decided = feed_bytewise(ec->name, ec->out, ec->outlen, BOTH, &r, &hb,
	    &usedb);
	ck_assert_int_eq(r, 1);
	ck_assert_uint_eq(decided, ec->outlen);
	ck_assert_uint_eq(used, ec->outlen);
	ck_assert(hdr_eq(&h, &hb));
	ck_assert_int_eq(h.version, ec->version);
	ck_assert_int_eq(h.command, PROXYPROTO_CMD_PROXY);
	ck_assert_int_eq(h.family, ec->family);
	if (ec->family != AF_UNSPEC) {
		check_addr(ec->name, &h.src, ec->family,
		    ec->dsrc != NULL ? ec->dsrc : ec->src, ec->sport);
		check_addr(ec->name, &h.dst, ec->family,
		    ec->ddst != NULL ? ec->ddst : ec->dst, ec->dport);
	}
	if (ec->authority != NULL)
		ck_assert_str_eq(h.authority, ec->authority);
	else
		ck_assert_uint_eq(h.authority_len, 0);
}
END_TEST

START_TEST(test_encode_refused)
{
	static const char *const bad_sni[] = {
		"mx.example.net\r\nQUIT", "a\tb", "\x7f", STR255 "x",
	};
	unsigned char buf[PROXYPROTO_MAX];
	struct sockaddr_storage s, d;
	struct proxyproto_tls tls = { "TLSv1.3", NULL, NULL };
	char *big;
	size_t i, n;

	make_addr(&s, AF_INET, "192.0.2.1", 1);
	make_addr(&d, AF_INET, "198.51.100.2", 2);
	/* An SNI the decoder would refuse is not sent either. */
	for (i = 0; i < sizeof(bad_sni) / sizeof(bad_sni[0]); i++) {
		tls.sni = bad_sni[i];
		ck_assert_int_eq(proxyproto_v2(buf, sizeof(buf),
		    (struct sockaddr *)&s, (struct sockaddr *)&d, &tls, &n), -1);
	}
	/* Nor a header over the decoder's cap. */
	big = malloc(PROXYPROTO_V2_LEN_MAX);
	ck_assert_ptr_nonnull(big);
	memset(big, 'x', PROXYPROTO_V2_LEN_MAX - 1);
	big[PROXYPROTO_V2_LEN_MAX - 1] = '\0';
	tls.sni = NULL;
	tls.cipher = big;
	ck_assert_int_eq(proxyproto_v2(buf, sizeof(buf), (struct sockaddr *)&s,
	    (struct sockaddr *)&d, &tls, &n), -1);
	/* Up to the cap exactly is fine: 12 + 3 + 5 + 3 + 7 + 3 + c. */
	big[PROXYPROTO_V2_LEN_MAX - 33] = '\0';
	ck_assert_int_eq(proxyproto_v2(buf, sizeof(buf), (struct sockaddr *)&s,
	    (struct sockaddr *)&d, &tls, &n), 0);
	ck_assert_uint_eq(n, PROXYPROTO_MAX);
	free(big);
}
END_TEST

/* ---- Any input ------------------------------------------------------- */

/*
 * Decode arbitrary bytes whole and one at a time: the same verdict both
 * ways, never a crash or a read past the input (ASan, valgrind), and
 * feed_bytewise's checks that a verdict never changes.
 */
static void
check_any(const unsigned char *in, size_t len)
{
	struct proxyproto_hdr h, hb;
	size_t used = 0, usedb = 0;
	int r, rb;

	r = parse_copy("any", in, len, BOTH, &h, &used);
	(void)feed_bytewise("any", in, len, BOTH, &rb, &hb, &usedb);
	REQUIRE(r == rb && (r != 1 || (used == usedb && hdr_eq(&h, &hb))),
	    "any: %d whole, %d bytewise", r, rb);
}

static const struct {
	const char	*in;
	size_t		 len;
} seeds[] = {
#define SEED(s)	{ (s), sizeof(s) - 1 }
	SEED("PROXY TCP4 192.0.2.1 198.51.100.2 53764 465\r\n"),
	SEED("PROXY TCP6 2001:db8::1 ::ffff:198.51.100.2 53764 465\r\n"),
	SEED("PROXY UNKNOWN x\r\n"),
	SEED(SIG "\x21\x11\x00\x13" A4 "\x03\x00\x04" "\x36\x81\x0b\x2f"),
	SEED(SIG "\x21\x21\x00\x46" A6 "\x02\x00\x03" "a.b" "\x20\x00\x15"
	    "\x01" "\x00\x00\x00\x00" "\x21\x00\x07" "TLSv1.3" "\x23\x00\x03"
	    "RC4" "\x04\x00\x01" "z"),
	SEED(SIG "\x20\x00\x00\x02" "\x00\x00"),
#undef SEED
};
#define NSEEDS	(sizeof(seeds) / sizeof(seeds[0]))

/* Every one-byte change of a seed, at every place, to every value. */
START_TEST(test_any_one_byte)
{
	unsigned char in[256];
	size_t len = seeds[_i].len, pos;
	unsigned v;

	ck_assert_uint_le(len, sizeof(in));
	check_any((const unsigned char *)seeds[_i].in, len);
	for (pos = 0; pos < len; pos++) {
		for (v = 0; v < 256; v++) {
			memcpy(in, seeds[_i].in, len);
			if (in[pos] == v)
				continue;
			in[pos] = (unsigned char)v;
			check_any(in, len);
		}
	}
}
END_TEST

static uint32_t
xorshift(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return (*s);
}

/* Seeds bent in several places at once: bytes changed, inserted, removed,
 * length fields set to anything, the tail cut. */
START_TEST(test_any_random)
{
	unsigned char in[512];
	uint32_t s = 0x9e3779b9u + (uint32_t)_i;
	size_t len, pos, k;
	int iter, m;

	for (iter = 0; iter < 2000; iter++) {
		k = xorshift(&s) % NSEEDS;
		len = seeds[k].len;
		memcpy(in, seeds[k].in, len);
		for (m = (int)(xorshift(&s) % 4); m >= 0; m--) {
			pos = len > 0 ? xorshift(&s) % len : 0;
			switch (xorshift(&s) % 5) {
			case 0:
				if (len > 0)
					in[pos] = (unsigned char)xorshift(&s);
				break;
			case 1:
				if (len < sizeof(in)) {
					memmove(in + pos + 1, in + pos, len - pos);
					in[pos] = (unsigned char)xorshift(&s);
					len++;
				}
				break;
			case 2:
				if (len > 0) {
					memmove(in + pos, in + pos + 1,
					    len - pos - 1);
					len--;
				}
				break;
			case 3:
				if (len >= 16 && in[0] == '\r') {
					in[14] = (unsigned char)(xorshift(&s) % 2);
					in[15] = (unsigned char)xorshift(&s);
				}
				break;
			default:
				len = pos;
				break;
			}
		}
		check_any(in, len);
	}
}
END_TEST

Suite *
proxyproto_suite(void)
{
	Suite *s = suite_create("proxyproto");
	TCase *tc;

	tc = tcase_create("parse");
	tcase_add_loop_test(tc, test_parse, 0, (int)NPARSE * 2);
	tcase_add_test(tc, test_spec_lengths);
	tcase_add_test(tc, test_no_version);
	tcase_add_loop_test(tc, test_v2_cap, 0, 2);
	tcase_add_test(tc, test_full_buffer_decides);
	suite_add_tcase(s, tc);

	tc = tcase_create("encode");
	tcase_add_loop_test(tc, test_encode, 0, (int)NENC);
	tcase_add_test(tc, test_encode_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("any input");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_any_one_byte, 0, (int)NSEEDS);
	tcase_add_loop_test(tc, test_any_random, 0, 4);
	suite_add_tcase(s, tc);
	return (s);
}
