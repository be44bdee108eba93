#!/usr/bin/env python3
"""A scripted TLS smarthost (SendGrid/Mailgun/Office 365 style), for the
tests of smtpgate's egress listeners.

    python3 tests/smarthost.py --listen 127.0.0.1:0 --port-file F \\
        --cert relay.pem --key relay-key.pem [--mode starttls|implicit] \\
        [--auth plain|login] [--maildir DIR] [--log FILE]

--mode starttls (default) greets in plaintext and offers STARTTLS (not with
--no-starttls); --mode implicit speaks TLS from the first byte (port 465
style). Before TLS only EHLO/HELO/STARTTLS/NOOP/RSET/QUIT work; MAIL and
AUTH get 530, and AUTH is advertised only inside TLS. With --auth the
mechanism given is the one advertised (AUTH PLAIN or AUTH LOGIN), a session
must authenticate as --user/--password (apikey / s3cret) before MAIL, and
wrong credentials get 535.

Each accepted message N is stored as tests/backend.py does (this is its
server, subclassed): DIR/msg-N.eml (the content, dot-unstuffed, or the BDAT
chunks joined) and DIR/msg-N.env (lines `HELO <name>`, `MAIL FROM:<...>`,
`RCPT TO:<...>` as sent), the .env renamed into place first.

--log FILE gets every raw byte received (the plaintext ones and, once TLS is
up, the decrypted ones; never the TLS records themselves), with marker lines
of its own, each on a line of its own:

    === connection N from HOST:PORT ===
    === TLS ===                 (the handshake completed; what follows was
                                 received inside TLS)
    === closed N ===

so a test can tell what a peer said before TLS. stdout has one line per
event, "[smarthost] connection N ...": from, sni NAME, tls VERSION, tls
handshake failed: WHY, auth MECH USER ok|failed, pipelined bytes discarded,
closed.

Misbehaviour for tests: --no-starttls (hide and refuse it), --inject BYTES
(after "220 Ready to start TLS\\r\\n", these bytes in the same write, then
the handshake: the response-injection attack), --silent (accept TCP, never
answer), --stall-tls (a 220 to STARTTLS, then no handshake), --banner TEXT,
--starttls-reply TEXT (instead of the 220), --chunking (offer CHUNKING and
take BDAT), --ext (more EHLO lines, before and inside TLS, offered but not
implemented). A RCPT whose address contains "reject" gets 550.

Python standard library only. Exits 0 on SIGTERM/SIGINT.
"""

import argparse
import os
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
from backend import Closed, decode_b64, unescape  # noqa: E402

SIZE_LIMIT = 52428800


class Server(backend.Server):
    TAG = "[smarthost] "
    MARK_LOG = True

    def configure(self, opts):
        self.ctx = None
        if opts.cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(opts.cert, opts.key)
            self.ctx.sni_callback = self._sni
        self.banner = unescape(opts.banner if opts.banner is not None
                               else "220 relay.test ESMTP smarthost")
        if not self.banner.endswith(b"\r\n"):
            self.banner += b"\r\n"
        self.banner_refuses = not self.banner.startswith(b"2")
        self.size_limit = SIZE_LIMIT

    def _sni(self, sslobj, name, ctx):
        sslobj.sni_name = name
        return None

    def session(self, sock, cid):
        return Session(self, sock, cid)

    def report_message(self, n, mail_line, rcpt_lines, content):
        self.say("message %d stored (%d bytes)" % (n, len(content)))


class Session(backend.Session):
    HOST = "relay.test"
    QUEUE_ID = "S%d"
    UNRECOGNIZED = "502 5.5.1 Command not implemented"

    def __init__(self, srv, sock, cid):
        self.tls = False
        super().__init__(srv, sock, cid)

    def discard_long_line(self):
        self.buf.clear()

    def start_tls(self):
        """Server side of the handshake on the plain socket. Returns True
        once it is done; False (logged) when it failed."""
        if self.srv.ctx is None:
            self.say("tls handshake failed: no --cert")
            return False
        self.sock.settimeout(self.opts.handshake_timeout)
        try:
            self.sock = self.srv.ctx.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.say("tls handshake failed: %s" % e)
            return False
        self.sock.settimeout(self.opts.idle_timeout)
        sni = getattr(self.sock, "sni_name", None)
        self.say("sni %s" % (sni or "-"))
        self.say("tls %s %s" % (self.sock.version(), self.sock.cipher()[0]))
        self.srv.log_mark("TLS")
        self.tls = True
        return True

    # --- the dialogue ------------------------------------------------------

    def run(self):
        if self.opts.silent:
            self.swallow()                # never a byte from us
        if self.opts.mode == "implicit":
            if not self.start_tls():
                return
        super().run()

    def intercept(self, verb, line):
        if not self.srv.banner_refuses:
            return None
        # a refusing greeting: only QUIT, as RFC 5321 3.1 allows
        if line.upper().startswith(b"QUIT"):
            return self.do_quit()
        self.reply("503 5.5.1 No service")
        return True

    def ehlo_keywords(self):
        lines = ["PIPELINING", "8BITMIME", "SIZE %d" % SIZE_LIMIT, "ENHANCEDSTATUSCODES"]
        if self.opts.chunking:
            lines.append("CHUNKING")
        lines.extend(self.opts.ext or ())
        if not self.tls and self.opts.mode == "starttls" and not self.opts.no_starttls:
            lines.append("STARTTLS")
        if self.tls and self.opts.auth:
            lines.append("AUTH " + self.opts.auth.upper())
        return lines

    def refuse_transaction(self):
        if not self.tls:
            return "530 5.7.0 Must issue a STARTTLS command first"
        if self.opts.auth and not self.authed:
            return "530 5.7.0 Authentication required"
        return None

    def takes_bdat(self):
        return self.opts.chunking

    def handle_other(self, verb, arg):
        if verb == b"STARTTLS":
            return self.do_starttls(arg)
        if verb == b"AUTH":
            return self.do_auth(arg)
        return self.unrecognized()

    def do_starttls(self, arg):
        if self.tls or self.opts.mode != "starttls" or self.opts.no_starttls:
            self.reply("502 5.5.1 Command not implemented" if not self.tls
                       else "554 5.5.1 TLS already active")
            return True
        if arg:
            self.reply("501 5.5.4 Syntax: STARTTLS")
            return True
        if self.opts.starttls_reply is not None:
            self.reply(unescape(self.opts.starttls_reply))
            return True
        out = b"220 2.0.0 Ready to start TLS\r\n"
        if self.opts.inject is not None:
            out += unescape(self.opts.inject)
            self.say("injecting %d bytes after the 220" % (len(out) - 31))
        self.send_now(out)
        if self.opts.stall_tls:
            self.say("stalling the handshake")
            self.swallow()
        if self.buf:
            # pipelined after STARTTLS in plaintext: never executed
            self.say("pipelined bytes discarded: %r" % bytes(self.buf[:200]))
            self.buf.clear()
        if not self.start_tls():
            raise Closed()
        # RFC 3207 4.2: forget everything learnt before TLS
        self.helo = None
        self.authed = False
        self.reset()
        return True

    # --- AUTH: only inside TLS, only the --auth mechanism, only --user -------

    def do_auth(self, arg):
        if not self.tls or not self.opts.auth:
            self.reply("503 5.5.1 AUTH not available" if self.tls
                       else "530 5.7.0 Must issue a STARTTLS command first")
            return True
        return super().do_auth(arg)

    def auth_mechanisms(self):
        return (self.opts.auth.upper().encode(),)

    def decode_plain(self, resp):
        raw = decode_b64(resp)
        if raw is None or raw.count(b"\0") != 2:
            return None
        _authz, user, pw = raw.split(b"\0")
        return user, pw

    def check_credentials(self, mech, user, pw):
        ok = user == self.opts.user.encode() and pw == self.opts.password.encode()
        self.say("auth %s %s %s" % (mech.decode(), user.decode("utf-8", "replace"),
                                    "ok" if ok else "failed"))
        return ok


def main(argv=None):
    p = argparse.ArgumentParser(description="Scripted TLS smarthost for smtpgate's egress tests.")
    p.add_argument("--listen", type=backend.parse_listen, default=backend.parse_listen("127.0.0.1:0"),
                   help="HOST:PORT to listen on (port 0: any free port)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--cert", help="PEM certificate chain (leaf first)")
    p.add_argument("--key", help="PEM private key")
    p.add_argument("--mode", choices=("starttls", "implicit"), default="starttls")
    p.add_argument("--no-starttls", action="store_true", help="neither offer nor accept STARTTLS")
    p.add_argument("--inject", metavar="BYTES", nargs="?", const="250-PIPELINING\\r\\n",
                   help="send BYTES (escapes \\r \\n \\xHH) right behind the 220 to STARTTLS, "
                   "in the same write (default 250-PIPELINING\\r\\n)")
    p.add_argument("--starttls-reply", metavar="TEXT", help="answer STARTTLS with TEXT instead")
    p.add_argument("--auth", choices=("plain", "login"),
                   help="require AUTH with this mechanism (offered inside TLS only)")
    p.add_argument("--user", default="apikey")
    p.add_argument("--password", default="s3cret")
    p.add_argument("--chunking", action="store_true", help="offer CHUNKING and take BDAT")
    p.add_argument("--ext", action="append", metavar="KEYWORD",
                   help="one more EHLO line (e.g. 'XCLIENT ADDR NAME'), offered only; may repeat")
    p.add_argument("--banner", help="greeting (escapes allowed; default 220 relay.test ...)")
    p.add_argument("--silent", action="store_true", help="accept TCP and never answer")
    p.add_argument("--stall-tls", action="store_true",
                   help="answer STARTTLS with 220, then never take part in the handshake")
    p.add_argument("--maildir", help="write msg-N.eml and msg-N.env here")
    p.add_argument("--log", help="append raw received bytes and marker lines to this file")
    p.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--handshake-timeout", type=float, default=10.0, metavar="SECONDS")
    p.set_defaults(**backend.WELL_BEHAVED)      # backend.py's misbehaviour: none here
    opts = p.parse_args(argv)
    if (opts.cert is None) != (opts.key is None):
        p.error("--cert and --key go together")
    if not opts.silent and opts.cert is None and (opts.mode == "implicit" or not opts.no_starttls):
        p.error("TLS needs --cert and --key (or use --no-starttls / --silent)")
    return backend.run_server(opts, Server, lambda family, host, port: "%s:%d (%s%s%s)" % (
        host, port, opts.mode, ", silent" if opts.silent else "",
        ", auth " + opts.auth if opts.auth else ""))


if __name__ == "__main__":
    sys.exit(main())
