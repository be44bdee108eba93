#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets into tests/fuzz/corpus/NAME/,
and the reproducers of open findings into tests/fuzz/crashes/NAME/.

Both are checked in; run this again after changing it:
    python3 tests/fuzz/mkcorpus.py
Tracker inputs are in fuzz_smtp_tracker's op format (see its header comment).
When a finding is fixed, move its input from CRASHES to TRACKER: it is then a
regression seed.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# fuzz_smtp_tracker: configuration byte and ops.
IMPLICIT, STARTTLS, OPPORTUNISTIC = 0, 1, 2
ML512, ML1000, ML4096, ML8192 = 0, 1, 2, 3
OP_CLIENT, OP_BACKEND, OP_CLIENT_REP, OP_BACKEND_REP = 0, 4, 7, 8
OP_TLS, OP_CLIENT_RAW, OP_CLIENT_EOF, OP_BACKEND_EOF = 9, 10, 11, 12
OP_ABORT, OP_HOLD_CLIENT, OP_HOLD_BACKEND = 13, 14, 15
ABORT_TIMEOUT, ABORT_BACKEND_DOWN, ABORT_SHUTDOWN = 0, 1, 6


def cfg(mode, bare_reject=0, max_line=ML4096, max_errors=0, xclient=0):
    return bytes([mode | bare_reject << 2 | max_line << 3 | max_errors << 5 |
                  xclient << 7])


def chunks(op, data):
    data = data.encode("latin-1") if isinstance(data, str) else data
    out = b""
    for i in range(0, len(data), 255):
        piece = data[i:i + 255]
        out += bytes([op, len(piece)]) + piece
    return out


def C(s):
    return chunks(OP_CLIENT, s)


def B(s):
    return chunks(OP_BACKEND, s)


BATCH = 0x10


def B_ONE(s):
    """The backend sends s in one read: every piece but the last is batched,
    so the tracker runs once over all of it."""
    out = chunks(OP_BACKEND | BATCH, s)
    # Clear the batch bit on the last op.
    data = s.encode("latin-1") if isinstance(s, str) else s
    last = (len(data) - 1) // 255 * (255 + 2)
    return out[:last] + bytes([OP_BACKEND]) + out[last + 1:]


def RAW(s):
    return chunks(OP_CLIENT_RAW, s)


def CREP(s, n):
    s = s.encode("latin-1")
    return bytes([OP_CLIENT_REP, len(s), n - 1]) + s


def BREP(s, n):
    s = s.encode("latin-1")
    return bytes([OP_BACKEND_REP, len(s), n - 1]) + s


TLS = bytes([OP_TLS])
C_EOF = bytes([OP_CLIENT_EOF])
B_EOF = bytes([OP_BACKEND_EOF])
HOLD_C = bytes([OP_HOLD_CLIENT])
HOLD_B = bytes([OP_HOLD_BACKEND])


def ABORT(why):
    return bytes([OP_ABORT, why])


EXTS = ("250-b.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
        "250-AUTH PLAIN LOGIN\r\n250-XCLIENT NAME ADDR\r\n250 8BITMIME\r\n")
UP = TLS + B("220 b.test ESMTP\r\n") + C("EHLO c.test\r\n") + B(EXTS)
TLS_UP = (C("EHLO c.test\r\n") + C("STARTTLS\r\n") + TLS +
          B("220 b.test ESMTP\r\n") + C("EHLO c.test\r\n") + B(EXTS))
TXN = "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
TXN_OK = "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"

TRACKER = {
    "implicit-message": cfg(IMPLICIT) + UP + C(TXN) + B(TXN_OK) +
    C("Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n") +
    B("250 2.0.0 queued\r\n221 2.0.0 bye\r\n"),
    "starttls-message": cfg(STARTTLS) + TLS_UP + C(TXN) + B(TXN_OK) +
    C("hello\r\n.\r\n") + B("250 queued\r\n") + C("QUIT\r\n") +
    B("221 bye\r\n"),
    "starttls-injection": cfg(STARTTLS) +
    C("EHLO c\r\nSTARTTLS\r\nMAIL FROM:<inj@x>\r\nRSET\r\n") + TLS +
    B("220 b.test\r\n") + C("MAIL FROM:<a@x>\r\n") + C("EHLO c\r\n") +
    B(EXTS),
    "starttls-injection-raw": cfg(STARTTLS) + C("STARTTLS\r\n") +
    RAW("XCLIENT ADDR=6.6.6.6\r\nMAIL FROM:<x@y>\r\n") + TLS +
    B("220 b.test\r\n") + C("EHLO c\r\n") + B(EXTS),
    "starttls-plaintext-refused": cfg(STARTTLS) +
    C("EHLO client.test\r\nHELO client.test\r\nNOOP\r\nRSET\r\n") +
    C("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
      "AUTH PLAIN AGFiAGM=\r\nXCLIENT ADDR=1.2.3.4\r\n") +
    C("EHLO\r\nSTARTTLS now\r\nQUIT\r\n"),
    "starttls-ehlo-rewrite": cfg(STARTTLS) + C("STARTTLS\r\n") + TLS +
    B("220 b.test\r\n") + C("EHLO c\r\n") +
    B("250-b.test hi\r\n250-STARTTLS\r\n250-XCLIENT ADDR NAME\r\n"
      "250-AUTH PLAIN\r\n250-XFORWARD NAME\r\n250 CHUNKING\r\n") +
    C("STARTTLS\r\nXCLIENT ADDR=1.2.3.4\r\nXFORWARD NAME=x\r\n"
      "xclient addr=1\r\nXCLIENT\r\n"),
    "starttls-banner-refused": cfg(STARTTLS) + C("STARTTLS\r\n") +
    B("554 go away\r\n") + TLS,
    "starttls-backend-down-in-handshake": cfg(STARTTLS) +
    C("STARTTLS\r\n") + ABORT(ABORT_BACKEND_DOWN) + TLS,
    "implicit-pipelining": cfg(IMPLICIT) + UP +
    C("MAIL FROM:<a@x>\r\nXCLIENT ADDR=1.2.3.4\r\nRCPT TO:<b@y>\r\n"
      "FOO bar\r\nRCPT TO:<c@y>\r\nXFORWARD ADDR=1\r\nNOOP\r\n") +
    B("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no\r\n250 ok\r\n"),
    "implicit-no-ehlo-yet": cfg(IMPLICIT) + TLS + B("220 b.test\r\n") +
    C("STARTTLS\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nBDAT 5\r\n"
      "hello"),
    "data-waits-for-reply": cfg(IMPLICIT) + UP +
    C("DATA\r\nMAIL FROM:<x@y>\r\n") + B("503 5.5.1 no MAIL\r\n") +
    B("250 ok\r\n"),
    "data-bare-normalized": cfg(IMPLICIT) + UP + C(TXN) + B(TXN_OK) +
    C("a\n.\nMAIL FROM:<s@x>\r\nb\r\n.\nc\r.\rd\r\n.\r"
      "e\r\n\0.\r\n.x\n.\r\n") + C(".\r\n") + B("250 ok\r\n"),
    "data-smuggling-patterns": cfg(IMPLICIT) + UP + C(TXN) + B(TXN_OK) +
    C("x\r\n\n.\r\nRSET\r\nx\n.\nXCLIENT ADDR=6.6.6.6\r\n\r.\r\n"
      "\r\n.\nMAIL FROM:<e@x>\r\n\r\n.\r\r\n.\r\n") +
    B("250 ok\r\n") + C("QUIT\r\n"),
    "data-reject": cfg(IMPLICIT, bare_reject=1) + UP + C(TXN) + B(TXN_OK) +
    C("good\r\nbad\nline\r\n.\r\nRSET\r\n"),
    "data-reject-clean": cfg(IMPLICIT, bare_reject=1) + UP + C(TXN) +
    B(TXN_OK) + C("good\r\nline\r\n.\r\n") + B("250 ok\r\n"),
    "data-client-eof": cfg(IMPLICIT) + UP + C(TXN) + B(TXN_OK) +
    C("partial\r\n") + C_EOF,
    "bdat": cfg(IMPLICIT) + UP +
    C("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 23\r\nx\r\n.\r\n"
      "MAIL FROM:<s@x>\r\nBDAT 0 LAST\r\n") +
    B("250 ok\r\n250 ok\r\n250 23 octets\r\n250 queued\r\n") +
    C("BDAT 1x\r\nBDAT 3 last\r\nabc"),
    "bdat-no-chunking": cfg(IMPLICIT) + TLS + B("220 b.test\r\n") +
    C("EHLO c\r\n") + B("250 b.test\r\n") +
    C("BDAT 15 LAST\r\nMAIL FROM:<x>\r\nNOOP\r\n\r\n") + B("250 ok\r\n"),
    "lines-limits": cfg(IMPLICIT, max_line=ML512) + TLS +
    B("220 b.test\r\n") + C("NOOP " + "x" * 600 + "\r\n") +
    C("NOOP a\rb\r\nNOOP \0\r\nNOOP\nXCLIENT ADDR=1.2.3.4\r\n") +
    B("250 ok\r\n") + C("NOOP " + "x" * 300) + C("x" * 300 + "\r\nNOOP\r\n"),
    "auth-login": cfg(IMPLICIT) + UP + C("AUTH LOGIN\r\n") +
    B("334 VXNlcm5hbWU6\r\n") + C("dXNlcg==\r\n") +
    B("334 UGFzc3dvcmQ6\r\n") + C("cGFzcw==\r\nNOOP\r\n") +
    B("235 2.7.0 ok\r\n250 ok\r\n"),
    "auth-pipelined-answer": cfg(IMPLICIT) + UP +
    C("AUTH LOGIN\r\nQUIT\r\n") + B("334 VXNlcm5hbWU6\r\n") +
    B("535 5.7.8 no\r\n"),
    "ehlo-rfc821": cfg(IMPLICIT) + TLS + B("220 old.test\r\n") +
    C("EHLO c.test\r\n") + B("500 what?\r\n") + B("250 old.test\r\n") +
    C("EHLO again\r\n") + B("250 old.test\r\n"),
    "opportunistic": cfg(OPPORTUNISTIC) + B("220 b.test\r\n") +
    C("EHLO c\r\n") +
    B("250-b.test\r\n250-AUTH PLAIN\r\n250-AUTH=PLAIN\r\n"
      "250-STARTTLS\r\n250 SIZE 100\r\n") +
    C("AUTH PLAIN AGFiAGM=\r\n") + C("NOOP\r\nSTARTTLS\r\n") +
    B("250 ok\r\n") + TLS + C("MAIL FROM:<a@x>\r\n") + C("EHLO c\r\n") +
    B("250-b.test\r\n250 AUTH PLAIN\r\n"),
    "opportunistic-plain-message": cfg(OPPORTUNISTIC) + B("220 b.test\r\n") +
    C("EHLO c\r\n") + B(EXTS) + C(TXN) + B(TXN_OK) + C("hi\r\n.\r\n") +
    B("250 ok\r\n"),
    "backend-garbage": cfg(IMPLICIT) + TLS + B("220 b.test\r\n") +
    C("NOOP\r\n") + B("hello there\r\n"),
    "backend-unsolicited": cfg(IMPLICIT) + TLS +
    B("220 b.test\r\n250 surprise\r\n"),
    "backend-unsolicited-421": cfg(IMPLICIT) + TLS +
    B("220 b.test\r\n421 4.4.2 idle\r\n"),
    "backend-eof": cfg(IMPLICIT) + TLS + B("220 b.test\r\n") +
    C("NOOP\r\n") + B_EOF,
    "backend-multiline-lf": cfg(IMPLICIT) + TLS + B("220-b.test\n220 hi\n") +
    C("EHLO c\r\n") + B("250-b\n250-PIPELINING\n250-CHUNKING\n250 SIZE\n") +
    C("HELP\r\n") + B("214-a\n214-b\n214\n"),
    "client-half-close": cfg(IMPLICIT) + TLS + B("220 b.test\r\n") +
    C("QUIT\r\n") + C_EOF + B("221 bye\r\n"),
    "timeout": cfg(IMPLICIT) + TLS + B("220 b.test\r\n") +
    ABORT(ABORT_TIMEOUT),
    "implicit-abort-before-tls": cfg(IMPLICIT) + ABORT(ABORT_SHUTDOWN),
    "max-errors": cfg(STARTTLS, max_errors=2) +
    C("MAIL\r\nFOO\r\nNOOP\r\nMAIL\r\nRCPT\r\nDATA\r\nQUIT\r\n"),
    "max-errors-relayed": cfg(IMPLICIT, max_errors=2) + TLS +
    B("220 b.test\r\n") + C("EHLO c\r\n") + B("250 b.test\r\n") +
    C("RCPT\r\nRCPT\r\n") + B("503 5.5.1 no\r\n503 5.5.1 no\r\n"),
    "hold-client-pipeline": cfg(IMPLICIT) + UP + HOLD_C +
    CREP("NOOP\r\n", 200) + BREP("250 2.0.0 ok\r\n", 200) +
    CREP("FOO\r\n", 250) + HOLD_C + C("QUIT\r\n") + B("221 bye\r\n"),
    "hold-backend": cfg(IMPLICIT) + UP + HOLD_B + CREP("RSET\r\n", 250) +
    HOLD_B + BREP("250 ok\r\n", 250),
    "xclient-implicit": cfg(IMPLICIT, xclient=1) + TLS +
    B("220 b.test ESMTP\r\n") + C("EHLO c.test\r\n") +
    B("250-b.test\r\n250-XCLIENT NAME ADDR PORT PROTO DESTADDR DESTPORT\r\n"
      "250 PIPELINING\r\n") + B("220 b.test hello 192.0.2.1\r\n") +
    B(EXTS) + C("XCLIENT ADDR=6.6.6.6\r\n" + TXN) + B(TXN_OK) +
    C("hi\r\n.\r\n") + B("250 ok\r\n"),
    "xclient-starttls": cfg(STARTTLS, xclient=1) + C("STARTTLS\r\n") +
    B("220 b.test ESMTP\r\n") +
    B("250-b.test\r\n250 XCLIENT ADDR PORT\r\n") + TLS +
    B("220 b.test again\r\n") + C("EHLO c\r\n") + B(EXTS),
    "xclient-refused": cfg(IMPLICIT, xclient=1) + TLS +
    B("220 b.test\r\n") + B("250 b.test\r\n"),
    "starttls-local-flood": cfg(STARTTLS) + CREP("X\r\n", 256) +
    CREP("NOOP\r\n", 256) + C("STARTTLS\r\n") + TLS + B("220 b\r\n"),
}


def big_reply(code, total):
    """A multi-line reply of exactly total bytes, lines of at most 1000."""
    lines, left = [], total
    while left > 1000:
        lines.append(code + "-" + "x" * 994 + "\r\n")
        left -= 1000
    lines.append(code + " " + "y" * (left - 6) + "\r\n")
    return "".join(lines)


def fifo_flood(n):
    out = b""
    while n > 0:
        out += CREP("X\r\n", min(n, 256))
        n -= min(n, 256)
    return out


EXTS_CHUNKING = "250-b.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
SMUGGLED = ("\r\n.\r\nMAIL FROM:<ceo@bank.test>\r\nRCPT TO:<v@x.test>\r\n"
            "XCLIENT ADDR=6.6.6.6\r\n")

# Findings of fuzz_smtp_tracker, by the invariant they broke; all fixed, and
# kept as regression seeds (each has a unit test in tests/unit/test_smtp.c
# too, named "fuzz: ...").
FIXED = {
    # The backend answers with something that is not SMTP while the client
    # does its STARTTLS handshake: smtp_abort() is held (starttls_sent),
    # backend_input() returns 1 without consuming the reply, smtp_run()
    # loops forever (the worker thread hangs).
    "endless-loop-starttls-backend-not-smtp": cfg(STARTTLS) +
    C("EHLO c\r\nSTARTTLS\r\n") + B("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
    # The same with a well-formed reply nobody asked for after the banner.
    "endless-loop-starttls-backend-extra-reply": cfg(STARTTLS) +
    C("STARTTLS\r\n") + B("220 b.test ESMTP\r\n250 surprise\r\n"),
    # Opportunistic: the reply to NOOP and an unasked one in one read; the
    # 220 to STARTTLS goes out between them.
    "endless-loop-opportunistic-extra-reply": cfg(OPPORTUNISTIC) +
    B("220 b.test\r\n") + C("EHLO c\r\n") + B("250 b.test\r\n") +
    C("NOOP\r\nSTARTTLS\r\n") + B_ONE("250 ok\r\n250 surprise\r\n"),
    # The backend closes during the client's handshake: smtp_run() returns 1
    # on every call (the held abort changes nothing) and session_step()
    # loops on that forever.
    "livelock-starttls-backend-eof": cfg(STARTTLS) + C("STARTTLS\r\n") +
    B_EOF,
    # bare_newlines = reject: the body is cut at its bare LF and its end is
    # never sent, but when to_client has under 640 bytes free the 554 waits
    # and client_command() goes on: the BDAT chunk's CRLF.CRLF ends the
    # backend's DATA and the rest runs as commands. Here the room comes from
    # a 354 ending in a bare LF (it grows by its CR when relayed).
    "smuggling-reject-mode-no-room": cfg(IMPLICIT, bare_reject=1) + TLS +
    B("220 b.test\r\n") + C("EHLO c\r\n") + B(EXTS_CHUNKING) +
    C("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\nbad\r\n.\r\n"
      "BDAT %d LAST\r\n" % len(SMUGGLED) + SMUGGLED) +
    B_ONE(big_reply("250", 8125) + big_reply("250", 8124) + "354 go\n"),
    # A 334 and a 535 in one read: the AUTH slot is popped, the phase stays
    # PHASE_AUTH, and the client's next line goes to the backend unparsed,
    # as an answer the backend no longer waits for.
    "auth-without-334-phase-outlives-exchange": cfg(IMPLICIT) + TLS +
    B("220 b.test\r\n") + C("EHLO c\r\n") +
    B("250-b.test\r\n250 AUTH LOGIN\r\n") +
    C("AUTH LOGIN\r\nXCLIENT ADDR=6.6.6.6\r\n") +
    B_ONE("334 VXNlcm5hbWU6\r\n535 5.7.8 no\r\n"),
    # accept_starttls() pushes two slots after client_command() checked for
    # one: a STARTTLS read with 255 slots waiting makes 257 of 256, and the
    # banner slot overwrites the head (the client is not reading).
    "fifo-overflow-starttls": cfg(STARTTLS) + HOLD_C + fifo_flood(601) +
    C("STARTTLS\r\n"),
    # An unsolicited 421 is relayed in plaintext after the 220 to STARTTLS,
    # while the client sends its ClientHello (smtp_abort() holds its 421
    # for exactly this reason).
    "starttls-quiet-unsolicited-421": cfg(STARTTLS) + C("STARTTLS\r\n") +
    B("220 b.test\r\n") + B("421 4.3.2 shutting down\r\n"),
    # A 2xx EHLO reply other than 250 before TLS (opportunistic) gets
    # "250 STARTTLS" appended: "251-b.test", "251-SIZE 10", "250 STARTTLS".
    "reply-multiline-ehlo-251": cfg(OPPORTUNISTIC) + B("220 b.test\r\n") +
    C("EHLO c\r\n") + B("251-b.test\r\n251 SIZE 10\r\n"),
    # backend_input() keeps len + 640 bytes free for a reply, but relaying
    # re-terminates every line with CRLF: a reply of 1638 bare-LF lines grows
    # by 1638 bytes, the appends fail unchecked and the client gets a
    # truncated multi-line reply (its last line lost).
    "lost-output-bare-lf-reply-grows": cfg(IMPLICIT) + TLS +
    B("220 b.test\r\n") + C("NOOP\r\nNOOP\r\n") +
    B_ONE(big_reply("250", 8065) + "250-\n" * 1637 + "250 z\n"),
    # "BDAT" without an argument: smtp_bdat_parse() computes c->arg +
    # c->arg_len with arg NULL (clang's UBSan: "applying zero offset to null
    # pointer"); found by make fuzz, passes the gcc replay.
    "ubsan-bdat-without-argument": cfg(IMPLICIT) + TLS + B("220 b.test\r\n") +
    C("EHLO c\r\n") + B(EXTS) + C("BDAT\r\n"),
}

# Open findings: each fails `make fuzz-replay` until it is fixed, then moves
# to FIXED.
CRASHES = {}

REPLY = {
    "single": "220 mx.example.org ESMTP Postfix\r\n",
    "multi": EXTS,
    "lf-only": "250-a\n250-b\n250 c\n",
    "code-only": "250\r\n",
    "code-only-multi": "250-\r\n250\r\n",
    "mixed-codes": "250-a\r\n251 b\r\n",
    "bad-separator": "250xa\r\n",
    "cr-inside": "250 a\rb\r\n",
    "nul-inside": "250 a\0b\r\n",
    "incomplete": "250-a\r\n250-b",
    "code-1xx": "150 hmm\r\n",
    "code-6xx": "650 hmm\r\n",
    "short": "25\r\n",
    "two-replies": "250 ok\r\n354 go\r\n",
    "long-line": "250 " + "x" * 1100 + "\r\n",
    "line-999": "250 " + "x" * 994 + "\r\n",
    "many-lines": "250-" + "x" * 90 + "\r\n" * 1 + ("250-" + "y" * 90 +
                                                    "\r\n") * 95 + "250 z\r\n",
}

BODY = {
    "plain": "Subject: hi\r\n\r\nhello\r\n.\r\n",
    "empty": ".\r\n",
    "stuffed": "..leading\r\n...\r\n.\r\n",
    "bare-lf-end": "x\n.\nMAIL FROM:<s@x>\r\n.\r\n",
    "bare-cr-end": "x\r.\rRSET\r\n.\r\n",
    "lf-dot-crlf": "x\n.\r\nRSET\r\n.\r\n",
    "crlf-dot-lf": "x\r\n.\nRSET\r\n.\r\n",
    "cr-crlf": "x\r\r\n.\r\n",
    "dot-cr-cr": ".\r\r\n.\r\n",
    "nul": "a\0b\r\n\0.\r\n.\r\n",
    "no-end": "a\r\nb\r\n.",
    "trailing-after-end": "a\r\n.\r\nQUIT\r\n",
    "only-lf": "\n\n\n.\n",
    "dot-x": ".x\n.\r\n",
}

CONFIG = {
    "sample": """; comment
[gateway]
backend = 127.0.0.1:25
hostname = mail.example.org
max_connections = 10000
max_line = 4096
bare_newlines = normalize
log_level = info

[tls]
cert = /etc/smtpgate/cert.pem
key = /etc/smtpgate/key.pem
min_version = TLSv1.2
ciphers =
ciphersuites =

[timeouts]
handshake = 30
command = 5m
data = 1h
backend_connect = 10s
drain = 30

[limits]
per_ip_connections = 20
per_ip_rate = 0
max_errors = 10

[listener:submissions]
address = 0.0.0.0:465
address = [::]:465
mode = implicit

[listener:submission]
address = 0.0.0.0:587
mode = starttls

[listener:mx]
address = *:25
mode = starttls
require_tls = no
backend = [::1]:2525
""",
    "minimal": """[gateway]
backend = 127.0.0.1:25
[tls]
cert = c.pem
key = k.pem
[listener:a]
address = 127.0.0.1:465
mode = implicit
""",
    "proxy": """[gateway]
backend = 127.0.0.1:25
client_identity = xclient
[tls]
cert = c.pem
key = k.pem
[timeouts]
proxy_header = 3
[listener:lb]
address = 127.0.0.1:465
mode = implicit
accept_proxy = any
trusted_proxies = 10.0.0.0/8, 2001:db8::/32 192.0.2.7
client_identity = proxy-v2
""",
    "errors": """backend = outside
[nosuch]
[gateway]
backend = host-without-port
backend = 1.2.3.4:99999
hostname = has space
max_line = 100
bare_newlines = maybe
unknown = 1
[tls]
cert = a
cert = b
key = a
min_version = SSLv3
[timeouts]
handshake = -1
command = 5x
[listener:]
[listener:a]
[listener:a]
[listener:b]
mode = implicit
require_tls = yes
address = [::1:25
address = 1.2.3.4
accept_proxy = v1
not a key value line
""",
    "long-lines": "[gateway]\nhostname = " + "h" * 400 + "\n[" + "s" * 200 +
    "]\n[listener:" + "n" * 60 + "]\n",
    "bom-crlf": "\ufeff[gateway]\r\nbackend = 127.0.0.1:25\r\n",
    "listeners-33": "".join("[listener:l%d]\naddress = 127.0.0.1:%d\n"
                            "mode = starttls\n" % (i, 1000 + i)
                            for i in range(33)),
}


def write(target, name, data, where="corpus"):
    d = os.path.join(HERE, where, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8" if target == "fuzz_config" else "latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, data in list(TRACKER.items()) + list(FIXED.items()):
        write("fuzz_smtp_tracker", name, data)
    for name, data in CRASHES.items():
        write("fuzz_smtp_tracker", name, data, "crashes")
    for i, (name, data) in enumerate(REPLY.items()):
        # Byte 0 picks smtp_line()'s max.
        write("fuzz_smtp_reply", name, bytes([i & 7]) + data.encode("latin-1"))
    for i, (name, data) in enumerate(BODY.items()):
        # Bytes 0-1: the cut point; byte 2: the small buffer's size.
        write("fuzz_body", name, bytes([0, i * 3 + 1, i & 7]) +
              data.encode("latin-1"))
    for name, data in CONFIG.items():
        write("fuzz_config", name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
