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

Each accepted message N is stored as tests/backend.py does: DIR/msg-N.eml
(the content, dot-unstuffed, or the BDAT chunks joined) and DIR/msg-N.env
(lines `HELO <name>`, `MAIL FROM:<...>`, `RCPT TO:<...>` as sent), the
.env renamed into place first.

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
import base64
import os
import re
import selectors
import signal
import socket
import ssl
import sys
import threading
import time

RECV_SIZE = 65536
MAX_LINE = 65536
SIZE_LIMIT = 52428800


class Closed(Exception):
    """The peer went away, or the server is stopping."""


def _unescape(text):
    """\\r \\n \\t \\0 \\\\ and \\xHH in a command-line argument, as bytes."""
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    simple = {ord("r"): b"\r", ord("n"): b"\n", ord("t"): b"\t", ord("0"): b"\0",
              ord("\\"): b"\\"}
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == ord("\\") and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt in simple:
                out += simple[nxt]
                i += 2
                continue
            if nxt == ord("x") and i + 4 <= len(raw):
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
                continue
        out.append(c)
        i += 1
    return bytes(out)


def _fmt_addr(addr):
    if len(addr) > 2:
        return "[%s]:%d" % (addr[0], addr[1])
    return "%s:%d" % (addr[0], addr[1])


def _b64(data):
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        return None


class Server:
    def __init__(self, opts):
        self.opts = opts
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.msg_counter = 0
        self.conn_counter = 0
        self.conns = {}
        self.threads = []
        self.logf = open(opts.log, "ab") if opts.log else None
        self.log_last = b"\n"
        if opts.maildir:
            os.makedirs(opts.maildir, exist_ok=True)
        self.ctx = None
        if opts.cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(opts.cert, opts.key)
            self.ctx.sni_callback = self._sni
        self.banner = _unescape(opts.banner if opts.banner is not None
                                else "220 relay.test ESMTP smarthost")
        if not self.banner.endswith(b"\r\n"):
            self.banner += b"\r\n"

    def _sni(self, sslobj, name, ctx):
        sslobj.sni_name = name
        return None

    # --- shared resources ---------------------------------------------------

    def log_bytes(self, data):
        if self.logf is None or not data:
            return
        with self.log_lock:
            self.logf.write(data)
            self.logf.flush()
            self.log_last = data[-1:]

    def log_mark(self, text):
        """A marker line of our own, always at the start of a line."""
        if self.logf is None:
            return
        with self.log_lock:
            if self.log_last != b"\n":
                self.logf.write(b"\n")
            self.logf.write(b"=== " + text.encode() + b" ===\n")
            self.logf.flush()
            self.log_last = b"\n"

    def say(self, text):
        with self.lock:
            sys.stdout.write("[smarthost] " + text + "\n")
            sys.stdout.flush()

    def store(self, helo, mail_line, rcpt_lines, content):
        with self.lock:
            self.msg_counter += 1
            n = self.msg_counter
        if self.opts.maildir:
            env = [b"HELO " + (helo or b""), mail_line] + rcpt_lines
            base = os.path.join(self.opts.maildir, "msg-%d" % n)
            self._atomic_write(base + ".env", b"".join(l + b"\n" for l in env))
            self._atomic_write(base + ".eml", content)
        self.say("message %d stored (%d bytes)" % (n, len(content)))
        return n

    @staticmethod
    def _atomic_write(path, data):
        tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)

    # --- main loop ------------------------------------------------------------

    def serve(self, lsock):
        rfd, wfd = socket.socketpair()
        rfd.setblocking(False)
        wfd.setblocking(False)
        signal.set_wakeup_fd(wfd.fileno(), warn_on_full_buffer=False)

        def on_signal(signum, frame):
            self.stop.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        sel = selectors.DefaultSelector()
        sel.register(lsock, selectors.EVENT_READ)
        sel.register(rfd, selectors.EVENT_READ)
        lsock.setblocking(False)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=1.0):
                if key.fileobj is rfd:
                    try:
                        rfd.recv(512)
                    except OSError:
                        pass
                    continue
                try:
                    csock, addr = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self.say("accept failed: %s" % e)
                    continue
                csock.setblocking(True)
                with self.lock:
                    self.conn_counter += 1
                    cid = self.conn_counter
                    self.conns[cid] = csock
                t = threading.Thread(target=self.run_conn, args=(csock, addr, cid), daemon=True)
                self.threads = [x for x in self.threads if x.is_alive()]
                self.threads.append(t)
                t.start()
        sel.close()
        lsock.close()
        with self.lock:
            socks = list(self.conns.values())
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 3.0
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.say("stopped")
        if self.logf is not None:
            self.logf.close()

    def run_conn(self, sock, addr, cid):
        self.say("connection %d from %s" % (cid, _fmt_addr(addr)))
        self.log_mark("connection %d from %s" % (cid, _fmt_addr(addr)))
        sess = Session(self, sock, cid)
        try:
            sess.run()
        except Closed:
            pass
        except Exception as e:          # never crash the server
            self.say("connection %d error: %r" % (cid, e))
        finally:
            with self.lock:
                self.conns.pop(cid, None)
            try:
                sess.sock.close()
            except OSError:
                pass
            self.log_mark("closed %d" % cid)
            self.say("connection %d closed" % cid)


class Session:
    def __init__(self, srv, sock, cid):
        self.srv = srv
        self.opts = srv.opts
        self.sock = sock
        self.cid = cid
        self.buf = bytearray()
        self.tls = False
        self.helo = None
        self.authed = False
        self.reset()
        sock.settimeout(self.opts.idle_timeout)

    def reset(self):
        self.mail = None
        self.rcpts = []
        self.chunks = None

    def say(self, text):
        self.srv.say("connection %d: %s" % (self.cid, text))

    # --- I/O --------------------------------------------------------------

    def recv_more(self):
        if self.srv.stop.is_set():
            raise Closed()
        try:
            data = self.sock.recv(RECV_SIZE)
        except socket.timeout:
            self.send_now(b"421 4.4.2 relay.test idle timeout\r\n")
            raise Closed()
        except (OSError, ssl.SSLError):
            raise Closed()
        if not data:
            raise Closed()
        self.srv.log_bytes(data)
        self.buf += data

    def send_now(self, data):
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            raise Closed()

    def reply(self, text):
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogateescape")
        if not text.endswith(b"\r\n"):
            text += b"\r\n"
        self.send_now(text)

    def readline(self):
        scan = 0
        while True:
            i = self.buf.find(b"\r\n", scan)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            scan = max(0, len(self.buf) - 1)
            if len(self.buf) > MAX_LINE:
                self.buf.clear()
                self.reply("500 5.5.2 Line too long")
                scan = 0
                continue
            self.recv_more()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.recv_more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_data(self):
        """The content after a 354, dot-unstuffed; only CRLF.CRLF ends it."""
        acc = bytearray(b"\r\n")
        acc += self.buf
        self.buf = bytearray()
        scan = 0
        while True:
            i = acc.find(b"\r\n.\r\n", scan)
            if i >= 0:
                self.buf = acc[i + 5:]
                body = bytes(acc[:i + 2]).replace(b"\r\n.", b"\r\n")
                return body[2:]
            scan = max(0, len(acc) - 4)
            self.recv_more()
            acc += self.buf
            self.buf = bytearray()

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
            # Never a byte from us; take what comes until the peer leaves.
            while True:
                self.buf.clear()
                self.recv_more()
        if self.opts.mode == "implicit":
            if not self.start_tls():
                return
        self.reply(self.srv.banner)
        if not self.srv.banner.startswith(b"2"):
            # a refusing greeting: only QUIT, as RFC 5321 3.1 allows
            while True:
                line = self.readline()
                if line.upper().startswith(b"QUIT"):
                    self.reply("221 2.0.0 relay.test closing")
                    return
                self.reply("503 5.5.1 No service")
        while True:
            line = self.readline()
            if not self.handle(line):
                return

    def ehlo_lines(self):
        lines = ["PIPELINING", "8BITMIME", "SIZE %d" % SIZE_LIMIT, "ENHANCEDSTATUSCODES"]
        if self.opts.chunking:
            lines.append("CHUNKING")
        lines.extend(self.opts.ext or ())
        if not self.tls and self.opts.mode == "starttls" and not self.opts.no_starttls:
            lines.append("STARTTLS")
        if self.tls and self.opts.auth:
            lines.append("AUTH " + self.opts.auth.upper())
        return lines

    def handle(self, line):
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        arg = arg.strip()
        if verb == b"QUIT":
            self.reply("221 2.0.0 relay.test closing")
            return False
        if verb == b"EHLO" or verb == b"HELO":
            if not arg:
                self.reply("501 5.5.4 %s needs a domain" % verb.decode())
                return True
            self.helo = arg
            self.reset()
            if verb == b"HELO":
                self.reply("250 relay.test")
                return True
            lines = ["relay.test Hello %s" % arg.decode("utf-8", "replace")] + self.ehlo_lines()
            self.reply("".join("250-%s\r\n" % l for l in lines[:-1]) + "250 %s\r\n" % lines[-1])
            return True
        if verb == b"STARTTLS":
            return self.do_starttls(arg)
        if verb == b"NOOP":
            self.reply("250 2.0.0 Ok")
            return True
        if verb == b"RSET":
            self.reset()
            self.reply("250 2.0.0 Ok")
            return True
        if verb == b"AUTH":
            return self.do_auth(arg)
        if verb in (b"MAIL", b"RCPT", b"DATA", b"BDAT"):
            if not self.tls:
                self.reply("530 5.7.0 Must issue a STARTTLS command first")
                return True
            if self.opts.auth and not self.authed:
                self.reply("530 5.7.0 Authentication required")
                return True
            if verb == b"MAIL":
                return self.do_mail(line, arg)
            if verb == b"RCPT":
                return self.do_rcpt(line, arg)
            if verb == b"DATA":
                return self.do_data(arg)
            if self.opts.chunking:
                return self.do_bdat(arg)
        self.reply("502 5.5.1 Command not implemented")
        return True

    def do_starttls(self, arg):
        if self.tls or self.opts.mode != "starttls" or self.opts.no_starttls:
            self.reply("502 5.5.1 Command not implemented" if not self.tls
                       else "554 5.5.1 TLS already active")
            return True
        if arg:
            self.reply("501 5.5.4 Syntax: STARTTLS")
            return True
        if self.opts.starttls_reply is not None:
            self.reply(_unescape(self.opts.starttls_reply))
            return True
        out = b"220 2.0.0 Ready to start TLS\r\n"
        if self.opts.inject is not None:
            out += _unescape(self.opts.inject)
            self.say("injecting %d bytes after the 220" % (len(out) - 31))
        self.send_now(out)
        if self.opts.stall_tls:
            self.say("stalling the handshake")
            while True:                   # take what comes, never answer
                self.buf.clear()
                self.recv_more()
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

    def do_auth(self, arg):
        if not self.tls or not self.opts.auth:
            self.reply("503 5.5.1 AUTH not available" if self.tls
                       else "530 5.7.0 Must issue a STARTTLS command first")
            return True
        if self.authed:
            self.reply("503 5.5.1 Already authenticated")
            return True
        if self.mail is not None:
            self.reply("503 5.5.1 AUTH not allowed during a transaction")
            return True
        parts = arg.split()
        if not parts:
            self.reply("501 5.5.4 Syntax: AUTH mechanism")
            return True
        mech = parts[0].upper()
        if mech != self.opts.auth.upper().encode():
            self.reply("504 5.5.4 Unrecognized authentication type")
            return True
        if mech == b"PLAIN":
            resp = parts[1] if len(parts) > 1 else None
            if resp is None:
                self.reply("334 ")
                resp = self.readline()
            if resp == b"*":
                self.reply("501 5.7.0 Authentication cancelled")
                return True
            raw = _b64(resp)
            if raw is None or raw.count(b"\0") != 2:
                self.reply("501 5.5.2 Cannot decode response")
                return True
            _authz, user, pw = raw.split(b"\0")
        else:
            if len(parts) > 1:
                u = parts[1]
            else:
                self.reply("334 VXNlcm5hbWU6")
                u = self.readline()
            if u == b"*":
                self.reply("501 5.7.0 Authentication cancelled")
                return True
            self.reply("334 UGFzc3dvcmQ6")
            p = self.readline()
            if p == b"*":
                self.reply("501 5.7.0 Authentication cancelled")
                return True
            user, pw = _b64(u), _b64(p)
            if user is None or pw is None:
                self.reply("501 5.5.2 Cannot decode response")
                return True
        ok = user == self.opts.user.encode() and pw == self.opts.password.encode()
        self.say("auth %s %s %s" % (mech.decode(), user.decode("utf-8", "replace"),
                                    "ok" if ok else "failed"))
        if not ok:
            self.reply("535 5.7.8 Authentication credentials invalid")
            return True
        self.authed = True
        self.reply("235 2.7.0 Authentication successful")
        return True

    def do_mail(self, line, arg):
        if self.helo is None:
            self.reply("503 5.5.1 Send HELO/EHLO first")
            return True
        if self.mail is not None:
            self.reply("503 5.5.1 Nested MAIL command")
            return True
        if not arg.upper().startswith(b"FROM:"):
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return True
        m = re.search(rb"\bSIZE=(\d+)", arg, re.I)
        if m and int(m.group(1)) > SIZE_LIMIT:
            self.reply("552 5.3.4 Message size exceeds fixed limit")
            return True
        self.mail = line
        self.rcpts = []
        self.chunks = None
        self.reply("250 2.1.0 Ok")
        return True

    def do_rcpt(self, line, arg):
        if self.mail is None:
            self.reply("503 5.5.1 Need MAIL before RCPT")
            return True
        if not arg.upper().startswith(b"TO:"):
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return True
        if b"reject" in arg.lower():
            self.reply("550 5.1.1 No such user here")
            return True
        self.rcpts.append(line)
        self.reply("250 2.1.5 Ok")
        return True

    def do_data(self, arg):
        if arg:
            self.reply("501 5.5.4 No parameters allowed")
            return True
        if self.mail is None or not self.rcpts or self.chunks is not None:
            self.reply("503 5.5.1 Bad sequence of commands")
            return True
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        return self.finish(self.read_data())

    def do_bdat(self, arg):
        m = re.fullmatch(rb"(\d+)(?:\s+(LAST))?", arg, re.I)
        if not m:
            self.reply("501 5.5.4 Syntax: BDAT size [LAST]")
            return True
        chunk = self.read_exact(int(m.group(1)))
        if self.mail is None or not self.rcpts:
            self.reply("503 5.5.1 Bad sequence of commands")
            return True
        if self.chunks is None:
            self.chunks = []
        self.chunks.append(chunk)
        if m.group(2) is None:
            self.reply("250 2.0.0 %d octets received" % len(chunk))
            return True
        return self.finish(b"".join(self.chunks))

    def finish(self, content):
        n = self.srv.store(self.helo, self.mail, self.rcpts, content)
        self.reset()
        self.reply("250 2.0.0 Ok: queued as S%d" % n)
        return True


def parse_listen(text):
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
    if m:
        return socket.AF_INET6, m.group(1), int(m.group(2))
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT or [V6]:PORT, got %r" % text)
    return socket.AF_INET, host or "127.0.0.1", int(port)


def main(argv=None):
    p = argparse.ArgumentParser(description="Scripted TLS smarthost for smtpgate's egress tests.")
    p.add_argument("--listen", type=parse_listen, default=parse_listen("127.0.0.1:0"),
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
    opts = p.parse_args(argv)
    if (opts.cert is None) != (opts.key is None):
        p.error("--cert and --key go together")
    if not opts.silent and opts.cert is None and (opts.mode == "implicit" or not opts.no_starttls):
        p.error("TLS needs --cert and --key (or use --no-starttls / --silent)")

    family, host, port = opts.listen
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(128)
    bound = lsock.getsockname()[1]
    srv = Server(opts)
    if opts.port_file:
        tmp = opts.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % bound)
        os.rename(tmp, opts.port_file)
    srv.say("listening on %s:%d (%s%s%s)" % (host, bound, opts.mode,
                                            ", silent" if opts.silent else "",
                                            ", auth " + opts.auth if opts.auth else ""))
    srv.serve(lsock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
