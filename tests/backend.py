#!/usr/bin/env python3
"""A small plaintext SMTP server: the demo backend for smtpgate, and a
scriptable fake backend for its integration tests.

    python3 tests/backend.py --listen 127.0.0.1:2525 [--maildir DIR] [--log FILE]

It speaks RFC 5321 with PIPELINING, 8BITMIME, SIZE, CHUNKING (BDAT),
ENHANCEDSTATUSCODES and AUTH PLAIN/LOGIN (any credentials are accepted unless
--auth-fail). Each accepted message N (1, 2, 3... in order of acceptance,
global across connections) is written atomically to DIR/msg-N.eml (the
message content, after dot-unstuffing for DATA, or the concatenated BDAT
chunks) and DIR/msg-N.env (lines `HELO <name>`, `MAIL FROM:<...>`,
`RCPT TO:<...>` exactly as the client sent them). The .env file is renamed
into place before the .eml file, so a reader that sees msg-N.eml also sees
msg-N.env.

Options that make it misbehave, for tests: --banner, --no-ehlo, --ext,
--lenient (treats a bare LF or bare CR as a line end: vulnerable to SMTP
smuggling), --close-after-data, --no-reply-after-data, --reply-delay,
--auth-fail, --reset-in-data (a TCP reset inside a DATA body), --long-reply
and --bad-reply (an over-long or malformed reply to one command, or to the
end of data), --xclient-reply (XCLIENT's reply when --ext offers it). A RCPT
whose address contains "reject" gets 550.

tests/smarthost.py reuses this server: it subclasses Server and Session and
overrides the hooks marked as such below (configure, report_message,
session; intercept, ehlo_keywords, refuse_transaction, takes_bdat,
handle_other, auth_mechanisms, decode_plain, check_credentials ...).

Only the Python standard library is used. Exits 0 on SIGTERM/SIGINT.
"""

import argparse
import base64
import os
import re
import selectors
import signal
import socket
import struct
import sys
import threading
import time

DEFAULT_EXT = ("PIPELINING,8BITMIME,CHUNKING,AUTH PLAIN LOGIN,"
               "SIZE 52428800,ENHANCEDSTATUSCODES")
RECV_SIZE = 65536
MAX_COMMAND = 65536          # longer command lines get 500 5.5.2

# The misbehaviour options of main(), all off: the parser defaults of a
# program that reuses Server and Session without offering them.
WELL_BEHAVED = dict(quiet=False, no_ehlo=False, lenient=False, close_after_data=False,
                    no_reply_after_data=False, reply_delay=0.0, auth_fail=False,
                    reset_in_data=None, long_reply=None, bad_reply=None, xclient_reply=None)


class Closed(Exception):
    """The peer went away (or the server is stopping)."""


class Server:
    TAG = "[backend] "        # in front of every line say() prints
    MARK_LOG = False          # whether log_mark() writes marker lines to the raw log

    def __init__(self, opts):
        self.opts = opts
        self.stop = threading.Event()
        self.lock = threading.Lock()          # message counter, stdout
        self.log_lock = threading.Lock()
        self.msg_counter = 0
        self.conn_counter = 0
        self.conns = {}                       # id -> socket
        self.threads = []
        self.logf = open(opts.log, "ab") if opts.log else None
        self.log_last = b"\n"                 # the last byte written to the raw log
        if opts.maildir:
            os.makedirs(opts.maildir, exist_ok=True)
        # KEY (a verb, or END for the end of data) -> raw reply bytes
        self.overrides = {}
        self.configure(opts)

    def configure(self, opts):
        """Hook: what the server offers and how it greets. Sets ext,
        ext_words, size_limit (0: none), banner (bytes), banner_refuses and
        overrides."""
        ext = DEFAULT_EXT if opts.ext is None else opts.ext
        self.ext = [e.strip() for e in ext.split(",") if e.strip()]
        self.ext_words = {e.split()[0].upper() for e in self.ext}
        self.size_limit = 0
        for e in self.ext:
            parts = e.split()
            if parts[0].upper() == "SIZE" and len(parts) > 1 and parts[1].isdigit():
                self.size_limit = int(parts[1])
        banner = opts.banner if opts.banner is not None else "220 backend.test ESMTP fake"
        lines = banner.replace("\\r\\n", "\n").replace("\\n", "\n").split("\n")
        self.banner = "".join(l.rstrip("\r") + "\r\n" for l in lines).encode("utf-8", "surrogateescape")
        self.banner_refuses = not banner.startswith("2")
        for item in opts.long_reply or ():
            key, _, n = item.partition("=")
            n = int(n)
            line = b"250 " + b"x" * max(0, n - 6) + b"\r\n"
            self.overrides[key.strip().upper()] = line
        for item in opts.bad_reply or ():
            key, _, text = item.partition("=")
            self.overrides[key.strip().upper()] = unescape(text)

    # --- shared resources ------------------------------------------------

    def log_bytes(self, data):
        if self.logf is None or not data:
            return
        with self.log_lock:
            self.logf.write(data)
            self.logf.flush()
            self.log_last = data[-1:]

    def log_mark(self, text):
        """A marker line of our own in the raw log ("=== TEXT ==="), always
        at the start of a line; only where MARK_LOG is set."""
        if self.logf is None or not self.MARK_LOG:
            return
        with self.log_lock:
            if self.log_last != b"\n":
                self.logf.write(b"\n")
            self.logf.write(b"=== " + text.encode() + b" ===\n")
            self.logf.flush()
            self.log_last = b"\n"

    def say(self, text):
        with self.lock:
            sys.stdout.write(self.TAG + text + "\n")
            sys.stdout.flush()

    def store(self, helo, mail_line, rcpt_lines, content):
        """Assign the next message number, write the files and report the
        message. Returns N."""
        with self.lock:
            self.msg_counter += 1
            n = self.msg_counter
        if self.opts.maildir:
            env = [b"HELO " + (helo or b""), mail_line] + rcpt_lines
            base = os.path.join(self.opts.maildir, "msg-%d" % n)
            self._atomic_write(base + ".env", b"".join(l + b"\n" for l in env))
            self._atomic_write(base + ".eml", content)
        self.report_message(n, mail_line, rcpt_lines, content)
        return n

    def report_message(self, n, mail_line, rcpt_lines, content):
        """Hook: what stdout shows of stored message n (here a summary line,
        then the content unless --quiet)."""
        sender = _path_of(mail_line, b"FROM:")
        rcpts = b", ".join(_path_of(l, b"TO:") for l in rcpt_lines)
        head = "--- message %d from %s to %s (%d bytes) ---\n" % (
            n, sender.decode("utf-8", "replace"), rcpts.decode("utf-8", "replace"), len(content))
        with self.lock:
            sys.stdout.write(head)
            if not self.opts.quiet:
                sys.stdout.flush()
                sys.stdout.buffer.write(content)
                if content and not content.endswith(b"\n"):
                    sys.stdout.buffer.write(b"\n")
                sys.stdout.buffer.flush()
            sys.stdout.flush()

    @staticmethod
    def _atomic_write(path, data):
        tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)

    # --- main loop ---------------------------------------------------------

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
        # shutting down: stop accepting, wake every connection thread
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

    def session(self, sock, cid):
        """Hook: the Session (class) that serves one connection."""
        return Session(self, sock, cid)

    def run_conn(self, sock, addr, cid):
        self.say("connection %d from %s" % (cid, _fmt_addr(addr)))
        self.log_mark("connection %d from %s" % (cid, _fmt_addr(addr)))
        sess = None
        try:
            sess = self.session(sock, cid)
            sess.run()
        except Closed:
            pass
        except Exception as e:        # never crash the server
            self.say("connection %d error: %r" % (cid, e))
        finally:
            with self.lock:
                self.conns.pop(cid, None)
            try:
                # the session's socket: a TLS one once the session wrapped it
                (sess.sock if sess is not None else sock).close()
            except OSError:
                pass
            self.log_mark("closed %d" % cid)
            self.say("connection %d closed" % cid)


def _fmt_addr(addr):
    if len(addr) > 2:
        return "[%s]:%d" % (addr[0], addr[1])
    return "%s:%d" % (addr[0], addr[1])


def _path_of(line, prefix):
    """b'MAIL FROM:<a@b> SIZE=1' -> b'<a@b>'."""
    i = line.upper().find(prefix)
    rest = line[i + len(prefix):].strip() if i >= 0 else b""
    m = re.match(rb"<[^>]*>", rest)
    if m:
        return m.group(0)
    return rest.split(b" ")[0] if rest else b"<>"


_LENIENT_EOL = re.compile(rb"\r\n|\n|\r")


class Session:
    HOST = "backend.test"                             # the name in replies
    QUEUE_ID = "%d"                                   # "queued as ..." for message N
    UNRECOGNIZED = "500 5.5.1 Command unrecognized"   # the reply to unknown verbs

    def __init__(self, srv, sock, cid):
        self.srv = srv
        self.opts = srv.opts
        self.sock = sock
        self.cid = cid
        self.buf = bytearray()
        self.eof = False
        self.helo = None          # bytes, the HELO/EHLO argument
        self.authed = False
        self.reset()
        sock.settimeout(self.opts.idle_timeout)

    def reset(self):
        self.mail = None          # the MAIL command line (bytes)
        self.rcpts = []
        self.chunks = None        # list of BDAT chunks once BDAT started

    def say(self, text):
        self.srv.say("connection %d: %s" % (self.cid, text))

    # --- I/O ---------------------------------------------------------------

    def recv_more(self):
        if self.eof or self.srv.stop.is_set():
            raise Closed()
        try:
            data = self.sock.recv(RECV_SIZE)
        except socket.timeout:
            self.send_now(b"421 4.4.2 %s idle timeout\r\n" % self.HOST.encode())
            raise Closed()
        except OSError:
            raise Closed()
        if not data:
            self.eof = True
            raise Closed()
        self.srv.log_bytes(data)
        self.buf += data

    def swallow(self):
        """Take whatever comes and never answer, until the peer leaves."""
        while True:
            self.buf.clear()
            self.recv_more()

    def send_now(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()

    def reply(self, text):
        if self.opts.reply_delay > 0:
            if self.srv.stop.wait(self.opts.reply_delay):
                raise Closed()
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogateescape")
        if not text.endswith(b"\r\n"):
            text += b"\r\n"
        self.send_now(text)

    def readline(self):
        """One line without its terminator. Strict mode: only CRLF ends a
        line. Lenient: CRLF, a bare LF or a bare CR does."""
        scan = 0
        while True:
            if self.opts.lenient:
                m = _LENIENT_EOL.search(self.buf, scan)
                if m and not (m.group(0) == b"\r" and m.end() == len(self.buf) and not self.eof):
                    line = bytes(self.buf[:m.start()])
                    del self.buf[:m.end()]
                    return line
            else:
                i = self.buf.find(b"\r\n", scan)
                if i >= 0:
                    line = bytes(self.buf[:i])
                    del self.buf[:i + 2]
                    return line
            scan = max(0, len(self.buf) - 1)
            if len(self.buf) > MAX_COMMAND:
                self.discard_long_line()
                self.reply("500 5.5.2 Line too long")
                scan = 0
                continue
            self.recv_more()

    def discard_long_line(self):
        """Hook: drop an over-long command line (here up to its LF)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                del self.buf[:i + 1]
                return
            self.buf.clear()
            self.recv_more()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.recv_more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_data(self):
        """Message content after a 354, dot-unstuffed."""
        if self.opts.lenient:
            return self.read_data_lenient()
        # Strict: only CRLF.CRLF ends the data. A virtual CRLF in front makes
        # a first line of "." end the data too.
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

    def read_data_lenient(self):
        # VULNERABLE on purpose: any of CRLF, LF, CR ends a line, and a line
        # holding only "." ends the data.
        out = bytearray()
        pos = 0
        while True:
            m = _LENIENT_EOL.search(self.buf, pos)
            if m is None or (m.group(0) == b"\r" and m.end() == len(self.buf)):
                del self.buf[:pos]
                pos = 0
                self.recv_more()
                continue
            line = self.buf[pos:m.start()]
            if line == b".":
                del self.buf[:m.end()]
                return bytes(out)
            if line.startswith(b"."):
                line = line[1:]
            out += line
            out += m.group(0)
            pos = m.end()

    # --- the dialogue --------------------------------------------------------

    def run(self):
        self.reply(self.srv.banner)
        while True:
            line = self.readline()
            if not self.handle(line):
                return

    def handle(self, line):
        """Returns False when the session should end."""
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        arg = arg.strip()
        taken = self.intercept(verb, line)
        if taken is not None:
            return taken
        if verb == b"QUIT":
            return self.do_quit()
        if verb in (b"EHLO", b"HELO"):
            return self.do_helo(verb, arg)
        if verb == b"NOOP":
            self.reply("250 2.0.0 Ok")
            return True
        if verb == b"RSET":
            self.reset()
            self.reply("250 2.0.0 Ok")
            return True
        if verb in (b"MAIL", b"RCPT", b"DATA", b"BDAT"):
            refusal = self.refuse_transaction()
            if refusal is not None:
                self.reply(refusal)
                return True
            if verb == b"MAIL":
                return self.do_mail(line, arg)
            if verb == b"RCPT":
                return self.do_rcpt(line, arg)
            if verb == b"DATA":
                return self.do_data(arg)
            if self.takes_bdat():
                return self.do_bdat(arg)
        return self.handle_other(verb, arg)

    def intercept(self, verb, line):
        """Hook: a command taken before its own handling. Returns None to
        go on, else what handle() returns. Here: a refusing banner allows
        only QUIT, and the scripted replies (--long-reply, --bad-reply)."""
        if self.srv.banner_refuses and verb != b"QUIT":
            self.reply("503 5.5.1 No service, only QUIT")
            return True
        override = self.srv.overrides.get(verb.decode("latin-1"))
        if override is not None and verb != b"END":
            # the scripted reply instead of the real one; no state changes
            self.say("scripted reply to %s" % verb.decode("latin-1"))
            self.send_now(override)
            return verb != b"QUIT"
        return None

    def ehlo_keywords(self):
        """Hook: the EHLO reply's lines after the greeting one."""
        return self.srv.ext

    def refuse_transaction(self):
        """Hook: the reply that refuses MAIL, RCPT, DATA and BDAT here and
        now, or None (here never)."""
        return None

    def takes_bdat(self):
        """Hook: whether BDAT is a command (else it is unrecognized)."""
        return "CHUNKING" in self.srv.ext_words

    def handle_other(self, verb, arg):
        """Hook: the verbs beyond the core ones, and unrecognized ones."""
        if verb == b"VRFY":
            self.reply("252 2.5.2 Cannot VRFY user, but will accept message")
            return True
        if verb == b"HELP":
            self.reply("214 2.0.0 See RFC 5321")
            return True
        if verb == b"AUTH" and "AUTH" in self.srv.ext_words:
            return self.do_auth(arg)
        if verb == b"STARTTLS" and "STARTTLS" in self.srv.ext_words:
            self.reply("454 4.7.0 TLS not available")
            return True
        if verb in (b"XCLIENT", b"XFORWARD") and verb.decode() in self.srv.ext_words:
            if verb == b"XCLIENT" and self.opts.xclient_reply is not None:
                return self.do_xclient(arg)
            self.reply("250 2.0.0 Ok")
            return True
        return self.unrecognized()

    def unrecognized(self):
        self.reply(self.UNRECOGNIZED)
        return True

    def do_quit(self):
        self.reply("221 2.0.0 %s closing" % self.HOST)
        return False

    def do_helo(self, verb, arg):
        if verb == b"EHLO" and self.opts.no_ehlo:
            self.reply("500 5.5.1 unrecognized command")
            return True
        if not arg:
            self.reply("501 5.5.4 %s needs a domain" % verb.decode())
            return True
        self.helo = arg
        self.reset()
        if verb == b"HELO":
            self.reply("250 " + self.HOST)
            return True
        lines = ["%s Hello %s" % (self.HOST, arg.decode("utf-8", "replace"))] + self.ehlo_keywords()
        self.reply("".join("250-%s\r\n" % l for l in lines[:-1]) + "250 %s\r\n" % lines[-1])
        return True

    def do_xclient(self, arg):
        """XCLIENT as Postfix answers it (--xclient-reply 220): a new
        greeting, and the session starts over (EHLO again). Any other code:
        refused, nothing changes."""
        code = self.opts.xclient_reply
        self.say("XCLIENT %s -> %d" % (arg.decode("utf-8", "replace"), code))
        if code == 220:
            self.helo = None
            self.authed = False
            self.reset()
            self.reply("220 backend.test ESMTP fake (after XCLIENT)")
        else:
            self.reply("%d %d.7.0 XCLIENT refused" % (code, code // 100))
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
        if m and self.srv.size_limit and int(m.group(1)) > self.srv.size_limit:
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
        if self.opts.reset_in_data is not None:
            self.reset_after(self.opts.reset_in_data)
        content = self.read_data()
        return self.finish_message(content)

    def do_bdat(self, arg):
        m = re.fullmatch(rb"(\d+)(?:\s+(LAST))?", arg, re.I)
        if not m:
            self.reply("501 5.5.4 Syntax: BDAT size [LAST]")
            return True
        n = int(m.group(1))
        last = m.group(2) is not None
        chunk = self.read_exact(n)            # always consume the chunk
        if self.mail is None or not self.rcpts:
            self.reply("503 5.5.1 Bad sequence of commands")
            return True
        if self.chunks is None:
            self.chunks = []
        self.chunks.append(chunk)
        if not last:
            self.reply("250 2.0.0 %d octets received" % n)
            return True
        return self.finish_message(b"".join(self.chunks))

    def reset_after(self, n):
        """Read until n body bytes are in, then close with a TCP reset
        (SO_LINGER 0): no reply, no end of data."""
        while len(self.buf) < n:
            self.recv_more()
        self.say("reset after %d body bytes" % len(self.buf))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass
        raise Closed()

    def finish_message(self, content):
        override = self.srv.overrides.get("END")
        if override is not None:
            self.say("scripted reply to the end of data, message not stored")
            self.reset()
            self.send_now(override)
            return True
        if self.opts.close_after_data:
            self.say("closing after data, no reply")
            raise Closed()
        if self.opts.no_reply_after_data:
            self.say("never answering the data")
            self.swallow()                    # until the peer leaves
        n = self.srv.store(self.helo, self.mail, self.rcpts, content)
        self.reset()
        self.reply("250 2.0.0 Ok: queued as " + self.QUEUE_ID % n)
        return True

    # --- AUTH ----------------------------------------------------------------

    def do_auth(self, arg):
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
        if mech not in self.auth_mechanisms():
            self.reply("504 5.5.4 Unrecognized authentication type")
            return True
        creds = self.read_credentials(mech, parts[1] if len(parts) > 1 else None)
        if creds is None:
            return True                       # cancelled or undecodable, answered
        if not self.check_credentials(mech, *creds):
            self.reply("535 5.7.8 Authentication credentials invalid")
            return True
        self.authed = True
        self.reply("235 2.7.0 Authentication successful")
        return True

    def auth_response(self, given, prompt):
        """The client's answer: `given` (on the AUTH line) or the line that
        follows a 334 `prompt`. None, answered with 501, when it is "*"."""
        if given is None:
            self.reply(prompt)
            given = self.readline()
        if given == b"*":
            self.reply("501 5.7.0 Authentication cancelled")
            return None
        return given

    def read_credentials(self, mech, initial):
        """(user, password) for PLAIN or LOGIN; None when the client
        cancelled or they do not decode (answered)."""
        if mech == b"PLAIN":
            resp = self.auth_response(initial, "334 ")
            if resp is None:
                return None
            creds = self.decode_plain(resp)
        else:
            user = self.auth_response(initial, "334 VXNlcm5hbWU6")
            if user is None:
                return None
            pw = self.auth_response(None, "334 UGFzc3dvcmQ6")
            if pw is None:
                return None
            user, pw = decode_b64(user), decode_b64(pw)
            creds = None if user is None or pw is None else (user, pw)
        if creds is None:
            self.reply("501 5.5.2 Cannot decode response")
        return creds

    def auth_mechanisms(self):
        """Hook: the AUTH mechanisms taken (upper-case bytes)."""
        return (b"PLAIN", b"LOGIN")

    def decode_plain(self, resp):
        """Hook: (user, password) of an AUTH PLAIN response, None when it
        does not decode. Here any base64 will do, or "=" (empty)."""
        raw = b"" if resp == b"=" else decode_b64(resp)
        if raw is None:
            return None
        fields = raw.split(b"\0")
        return (fields[1], fields[2]) if len(fields) == 3 else (b"", b"")

    def check_credentials(self, mech, user, pw):
        """Hook: whether the credentials are right (here: any, unless
        --auth-fail)."""
        return not self.opts.auth_fail


def decode_b64(data):
    """The bytes that base64 `data` stands for, or None when it is not
    valid base64."""
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        return None


def unescape(text):
    """'\\r', '\\n', '\\t', '\\0', '\\\\' and '\\xHH' in a command-line argument, as bytes."""
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    simple = {ord("r"): b"\r", ord("n"): b"\n", ord("t"): b"\t", ord("0"): b"\0",
              ord("\\"): b"\\"}
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


def parse_listen(text):
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
    if m:
        return socket.AF_INET6, m.group(1), int(m.group(2))
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT or [V6]:PORT, got %r" % text)
    if ":" in host:
        return socket.AF_INET6, host, int(port)
    return socket.AF_INET, host or "127.0.0.1", int(port)


def main(argv=None):
    p = argparse.ArgumentParser(description="Fake plaintext SMTP backend for smtpgate.")
    p.add_argument("--listen", type=parse_listen, default=parse_listen("127.0.0.1:2525"),
                   help="HOST:PORT or [V6]:PORT to listen on (port 0: any free port)")
    p.add_argument("--port-file", help="write the bound port number to this file once listening")
    p.add_argument("--maildir", help="write msg-N.eml and msg-N.env here")
    p.add_argument("--log", help="append every raw byte received to this file")
    p.add_argument("--quiet", action="store_true",
                   help="print only a summary line per message, not its content")
    p.add_argument("--banner", help='greeting line(s), "\\n" separates lines '
                   '(default "220 backend.test ESMTP fake")')
    p.add_argument("--no-ehlo", action="store_true", help="answer EHLO with 500 (RFC 821 server)")
    p.add_argument("--ext", default=None,
                   help="comma-separated EHLO keywords (default %r)" % DEFAULT_EXT)
    p.add_argument("--lenient", action="store_true",
                   help="VULNERABLE: a bare LF or CR ends a line, in commands and DATA")
    p.add_argument("--close-after-data", action="store_true",
                   help="close the connection at the end of data, without a reply")
    p.add_argument("--no-reply-after-data", action="store_true",
                   help="never answer the end of data")
    p.add_argument("--reply-delay", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long before every reply")
    p.add_argument("--auth-fail", action="store_true", help="reject every AUTH with 535")
    p.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="close a connection idle this long (default 300)")
    p.add_argument("--reset-in-data", type=int, default=None, metavar="N",
                   help="after a 354, read N body bytes, then close with a TCP reset")
    p.add_argument("--long-reply", action="append", metavar="KEY=LEN",
                   help="answer KEY (a verb, or END: the end of data) with one 250 line of "
                   "LEN bytes, CRLF included; may repeat")
    p.add_argument("--bad-reply", action="append", metavar="KEY=TEXT",
                   help="answer KEY (a verb, or END) with TEXT sent as is (\\r, \\n, \\xHH "
                   "escapes; add the CRLF yourself); the message is not stored; may repeat")
    p.add_argument("--xclient-reply", type=int, default=None, metavar="CODE",
                   help="answer XCLIENT (when --ext offers it) with CODE instead of 250: 220 "
                   "is a new greeting that starts the session over (as Postfix does), "
                   "anything else a refusal")
    opts = p.parse_args(argv)
    return run_server(opts, Server, lambda family, host, port: _fmt_addr(
        (host, port) if family == socket.AF_INET else (host, port, 0, 0)))


def run_server(opts, server_class, where):
    """Listen on opts.listen, make server_class(opts), write the bound port
    to opts.port_file, say "listening on " + where(family, host, port) and
    serve until SIGTERM/SIGINT. Returns 0."""
    family, host, port = opts.listen
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    lsock.bind((host, port))
    lsock.listen(128)
    bound = lsock.getsockname()[1]
    srv = server_class(opts)
    if opts.port_file:
        tmp = opts.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % bound)
        os.rename(tmp, opts.port_file)
    srv.say("listening on " + where(family, host, bound))
    srv.serve(lsock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
