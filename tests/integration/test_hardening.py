"""Adversarial end-to-end tests: per-address limits ([limits]), error
counting, slow clients against deadlines, STARTTLS injection across TCP
segments, TLS abuse, backends that break in new ways, thousands of idle
connections, and half-closed connections.

Each test would fail without the behaviour it names. Assertions are on reply
codes (and the enhanced status code where it is the behaviour under test)
and on what the backend received: its maildir and its raw byte log.

Per-address tests connect from their own 127.0.0.x source address, so the
readiness probes (from 127.0.0.1) and other tests never count against them.

Run with tests/integration/run.py (TEST_FILTER=test_hardening for just these).
"""

import os
import re
import select
import socket
import ssl
import struct
import time
import unittest

import lib
from lib import (SMTPClient, SourcedClient, ConnectionClosed, Timeout, dot_stuff, make_message,
                 starttls_client, tls_client, uniq)


def raw_connect(port, source=None, timeout=5.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def rst_close(sock):
    """Close with a TCP reset (SO_LINGER 0), no TLS close_notify."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def shut_wr(sock):
    """shutdown(SHUT_WR) on the TCP socket under `sock` (an SSLSocket too:
    a dup of the fd shares the socket, and SSLSocket.shutdown() would drop
    the TLS layer for reading)."""
    dup = socket.socket(fileno=os.dup(sock.fileno()))
    try:
        dup.shutdown(socket.SHUT_WR)
    finally:
        dup.close()


def trickle(c, payload, interval, limit):
    """Slowloris: send `payload` one piece per `interval` seconds on client
    c (an SMTPClient, plain or TLS) while reading; a bytes payload goes one
    byte at a time, a list of bytes one item at a time. Returns (received
    bytes, seconds from the first piece, closed?) as soon as a whole line
    arrives or the peer closes. Raises Timeout after `limit` seconds."""
    pieces = [payload[i:i + 1] for i in range(len(payload))] if isinstance(payload, bytes) \
        else list(payload)
    t0 = time.monotonic()
    got = b""
    i = 0
    sending = True
    while True:
        elapsed = time.monotonic() - t0
        if elapsed > limit:
            raise Timeout("no reply and no close within %.1fs of trickling (%d pieces sent, got %r)"
                          % (limit, i, got))
        if sending and i < len(pieces):
            try:
                c.send(pieces[i])
                i += 1
            except (OSError, ssl.SSLError):
                sending = False
        try:
            data = c._recv(interval)            # the wait paces the sender
        except socket.timeout:
            continue
        except (ssl.SSLError, OSError):
            data = b""
        if not data:
            return got, time.monotonic() - t0, True
        got += data
        if b"\n" in got:
            return got, time.monotonic() - t0, False


def trickle_raw(sock, payload, interval, limit):
    """The same on a raw socket: returns (received, seconds, bytes sent)
    once the peer closes. Raises Timeout after `limit` seconds."""
    t0 = time.monotonic()
    got = b""
    i = 0
    while True:
        if time.monotonic() - t0 > limit:
            raise Timeout("still open after %.1fs of trickling (%d bytes sent)" % (limit, i))
        if i < len(payload):
            try:
                sock.send(payload[i:i + 1])
                i += 1
            except OSError:
                return got, time.monotonic() - t0, i
        data = lib.recv_some(sock, interval, 4096)     # the wait paces the sender
        if data is None:
            continue
        if not data:
            return got, time.monotonic() - t0, i
        got += data


def client_hello():
    """A real TLS ClientHello record, as Python's client sends it."""
    s = socket.socket()        # never connected: MemoryTLS only needs it for sending later
    try:
        return lib.MemoryTLS(s).client_hello()
    finally:
        s.close()


def all_backend_conns_closed(be):
    return be.connections() == be.closed_connections()


# ============================================================================
# [limits] per_ip_connections, per_ip_rate

class PerAddressLimitTest(lib.IntegrationTest):

    def _refused_fast(self, port, source, listener):
        t0 = time.monotonic()
        s = raw_connect(port, source)
        with s:
            got, _ = lib.raw_until_closed(s, 5)
        took = time.monotonic() - t0
        self.assertTrue(got.startswith(b"421 4.7.0 "),
                        "%s: expected a plaintext 421 4.7.0, got %r" % (listener, got))
        self.assertEqual(got.count(b"\n"), 1, got)
        self.assertLess(took, 1.0, "%s: the refusal took %.2fs" % (listener, took))
        return got

    def test_per_ip_connections_on_implicit_and_starttls(self):
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),
                                            ("submission", "starttls", {})),
                                 extra=lib.limits_section(per_ip_connections=3))
        src = "127.0.0.2"
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        for _ in range(2):                      # two idle TLS sessions on 465 ...
            c = SourcedClient(gw.port("smtps"), src, tls=True)
            held.append(c)
            self.assertCode(c.reply(), 220)
            self.assertCode(c.ehlo(), 250)
        c = SourcedClient(gw.port("submission"), src)      # ... and one on 587
        held.append(c)
        self.assertCode(c.reply(), 220)
        self.assertCode(c.ehlo(), 250)
        self.assertCode(c.starttls(), 220)
        self.assertCode(c.ehlo(), 250)
        conns = be.connections()
        self.assertEqual(conns, 3)
        for listener in ("smtps", "submission"):
            with self.subTest(listener=listener):
                got = self._refused_fast(gw.port(listener), src, listener)
                self.assertIn(b"address", got)
        # the limit is per address: another one is served
        with SourcedClient(gw.port("smtps"), "127.0.0.3", tls=True) as c:
            self.assertCode(c.reply(), 220)
            self.assertCode(c.cmd("QUIT"), 221)
        # refused connections cost the backend nothing
        self.assertEqual(be.connections(), conns + 1)
        # a session that ended (QUIT) gives its place back before its close
        self.assertCode(held[0].cmd("QUIT"), 221)
        held[0].wait_closed()
        c = SourcedClient(gw.port("smtps"), src, tls=True)
        held.append(c)
        self.assertCode(c.reply(), 220)
        self.assertCode(c.ehlo(), 250)
        self.deliver(c, make_message(uniq("per-ip")))
        # the three places are taken again
        self._refused_fast(gw.port("submission"), src, "submission")
        # a client that just vanishes gives its place back too
        held[1].close()
        lib.wait_until(lambda: lib.greets(gw.port("submission"), src), 5,
                       "a place to free up after a client vanished")

    def test_default_limit_under_a_flood_from_one_address(self):
        be, gw = self.setup_pair(listeners=(("submission", "starttls", {}),))   # no [limits]: 20
        src = "127.0.0.7"
        socks, lines = [], []
        self.addCleanup(lambda: [s.close() for s in socks])
        try:
            got, lines = lib.open_greeted(gw.port("submission"), 200, 30, source=src)
        except Exception as e:
            socks.extend(getattr(e, "socks", []))
            raise
        socks.extend(got)
        greeted = sum(1 for l in lines if l.startswith(b"220 "))
        refused = sum(1 for l in lines if l.startswith(b"421 4.7.0 "))
        self.assertEqual((greeted, refused), (20, 180), lines[:25])
        with SourcedClient(gw.port("submission"), "127.0.0.8") as c:   # another address
            self.assertCode(c.reply(), 220)
        for s in socks:
            s.close()
        socks.clear()
        lib.wait_until(lambda: lib.greets(gw.port("submission"), src), 5,
                       "the flooding address to be served again")

    def test_every_kind_of_end_gives_the_place_back(self):
        dead = lib.fmt_addr("127.0.0.1", lib.closed_port())
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),
                                            ("submission", "starttls", {}),
                                            ("dead465", "implicit", {"backend": dead}),
                                            ("dead587", "starttls", {"backend": dead})),
                                 extra=lib.limits_section(per_ip_connections=2, max_errors=2))
        src = "127.0.0.6"
        rx = re.compile(r"client=127\.0\.0\.6:\d+ .*reason=")

        def ended():
            with open(gw.err_path, "r", errors="replace") as f:
                return len(rx.findall(f.read()))

        def garbage_handshake():
            with raw_connect(gw.port("smtps"), src) as s:
                s.sendall(b"\x16\x03\x01\x00\x05hello")
                lib.raw_until_closed(s, 8)

        def client_reset():
            c = SourcedClient(gw.port("submission"), src)
            self.assertCode(c.reply(), 220)
            rst_close(c.sock)

        def quit_():
            with SourcedClient(gw.port("submission"), src) as c:
                self.assertCode(c.reply(), 220)
                self.assertCode(c.cmd("QUIT"), 221)
                c.wait_closed()

        def too_many_errors():
            with SourcedClient(gw.port("submission"), src) as c:
                self.assertCode(c.reply(), 220)
                self.assertCode(c.cmd("MAIL FROM:<x@y>"), 530)
                self.assertCode(c.cmd("MAIL FROM:<x@y>"), 530)
                self.assertCode(c.reply(), 421)
                c.wait_closed()

        def starttls_then_garbage():
            with SourcedClient(gw.port("submission"), src) as c:
                self.assertCode(c.reply(), 220)
                self.assertCode(c.cmd("STARTTLS"), 220)
                c.send(b"\x16\x03\x01\x00\x05hello")
                c.wait_closed(8)

        def dead_backend_implicit():
            with SourcedClient(gw.port("dead465"), src, tls=True) as c:
                self.assertCode(c.reply(), 421)
                c.wait_closed()

        def dead_backend_starttls():
            with SourcedClient(gw.port("dead587"), src) as c:
                self.assertCode(c.reply(), 220)
                c.ehlo()
                self.assertCode(c.starttls(), 220)
                self.assertCode(c.reply(), 421)         # inside TLS, unasked
                c.wait_closed()

        n = 0
        for end in (garbage_handshake, client_reset, quit_, too_many_errors, starttls_then_garbage,
                    dead_backend_implicit, dead_backend_starttls):
            for _ in range(3):                  # more often than the limit
                with self.subTest(end=end.__name__):
                    end()
                    n += 1
                    lib.wait_until(lambda: ended() >= n, 10, "session %d to end" % n)
        # exactly two places again: two held, the third refused
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        for _ in range(2):
            c = SourcedClient(gw.port("submission"), src)
            held.append(c)
            self.assertCode(c.reply(), 220)
        self._refused_fast(gw.port("smtps"), src, "smtps")

    @unittest.skipUnless(lib.ipv6_available(), "no ::1")
    def test_per_ip_connections_ipv6(self):
        be, gw = self.setup_pair(listeners=(("sub6", "starttls", {"_host": "::1"}),),
                                 extra=lib.limits_section(per_ip_connections=2))
        port = gw.port("sub6")
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        # the readiness probe (also from ::1) may not be released yet: retried
        lib.hold_greeted(port, 2, held, host="::1")
        t0 = time.monotonic()
        with socket.create_connection(("::1", port), timeout=5) as s:
            got, _ = lib.raw_until_closed(s, 5)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertTrue(got.startswith(b"421 4.7.0 "), got)

    def test_per_ip_rate(self):
        be, gw = self.setup_pair(listeners=(("submission", "starttls", {}),),
                                 extra=lib.limits_section(per_ip_connections=0, per_ip_rate=5))
        port = gw.port("submission")
        src = "127.0.0.4"
        for i in range(5):
            with SourcedClient(port, src) as c:
                self.assertCode(c.reply(), 220)
                self.assertCode(c.cmd("QUIT"), 221)
                c.wait_closed()
        got = self._refused_fast(port, src, "submission")          # the 6th in the minute
        self.assertIn(b"minute", got)
        with SourcedClient(port, "127.0.0.5") as c:                # others are not affected
            self.assertCode(c.reply(), 220)
        # closed connections do not give the rate back, refused ones do not use it
        self._refused_fast(port, src, "submission")
        self.assertEqual(be.connections(), 0)


# ============================================================================
# [limits] max_errors

class MaxErrorsTest(lib.SharedGatewayTest):

    @classmethod
    def setUpClass(cls):
        cls.be, cls.gw = cls.start_shared(extra=lib.limits_section(max_errors=3))

    def test_three_530_then_421_and_close(self):
        with SMTPClient(self.gw.port("submission")) as c:
            self.assertCode(c.reply(), 220)
            self.assertCode(c.ehlo(), 250)
            for _ in range(3):
                self.assertCode(c.cmd("MAIL FROM:<x@y>"), 530)
            r = c.reply(timeout=5)                    # nothing more sent: the 421 comes by itself
            self.assertCode(r, 421)
            self.assertTrue(r.text.startswith("4.7.0 "), r)
            self.assertEqual(c.wait_closed(), b"")

    def test_nothing_after_the_421_when_pipelined(self):
        with SMTPClient(self.gw.port("submission")) as c:
            self.assertCode(c.reply(), 220)
            c.send(b"MAIL FROM:<x@y>\r\n" * 6 + b"NOOP\r\nQUIT\r\n")
            self.assertEqual([r.code for r in c.replies(4)], [530, 530, 530, 421])
            self.assertEqual(c.wait_closed(), b"", "replies after the 421")

    def test_a_success_resets_the_count(self):
        with SMTPClient(self.gw.port("submission")) as c:
            self.assertCode(c.reply(), 220)
            c.send(b"MAIL FROM:<x@y>\r\nMAIL FROM:<x@y>\r\nNOOP\r\n"
                   b"MAIL FROM:<x@y>\r\nMAIL FROM:<x@y>\r\nEHLO c.test\r\n"
                   b"MAIL FROM:<x@y>\r\nMAIL FROM:<x@y>\r\n")
            self.assertEqual([r.code for r in c.replies(8)], [530, 530, 250, 530, 530, 250, 530, 530])
            self.assertCode(c.cmd("NOOP"), 250)          # still open
            for _ in range(2):
                self.assertCode(c.cmd("MAIL FROM:<x@y>"), 530)
            self.assertCode(c.cmd("MAIL FROM:<x@y>"), 530)
            self.assertCode(c.reply(timeout=5), 421)
            c.wait_closed()

    def test_relayed_and_local_errors_count_together(self):
        marker = uniq("errs")
        with tls_client(self.gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("MAIL FROM:<%s@x>" % marker), 250)
            for _ in range(2):
                self.assertCode(c.cmd("RCPT TO:<reject@x>"), 550)      # relayed
            self.assertCode(c.cmd("RCPT TO:<ok@x>"), 250)              # resets
            self.assertCode(c.cmd("FOO"), 502)                         # local
            self.assertCode(c.cmd("RCPT TO:<reject2@x>"), 550)         # relayed
            self.assertCode(c.cmd("BAR"), 502)                         # local: the third
            self.assertCode(c.reply(timeout=5), 421)
            c.wait_closed()
        self.assertFalse(any(marker.encode() in e for e in self.be.all_envelopes()))


# ============================================================================
# deadlines against slow clients

class SlowClientTest(lib.IntegrationTest):

    def test_slowloris_command_line(self):
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),
                                            ("submission", "starttls", {})),
                                 timeouts={"command": "2"})
        for listener in ("submission", "smtps"):
            with self.subTest(listener=listener):
                marker = uniq("slowcmd").encode()
                if listener == "smtps":
                    c = tls_client(gw)
                else:
                    c = SMTPClient(gw.port(listener))
                    self.assertCode(c.reply(), 220)
                with c:
                    self.assertCode(c.ehlo(), 250)
                    if listener == "submission":
                        # control: complete commands are activity, for longer than `command`
                        for i in range(4):
                            if i:
                                time.sleep(max(0.0, 1.0 - took))      # paces the sender
                            got, took, closed = trickle(c, [b"NOOP\r\n"], 1.0, 5)
                            self.assertTrue(got.startswith(b"250 "), got)
                            self.assertLess(took, 1.0)
                            c.buf = got.split(b"\n", 1)[1]
                    got, took, closed = trickle(c, b"MAIL FROM:<" + marker + b"x" * 200, 0.3, 8)
                    self.assertFalse(closed, "closed without a reply (got %r)" % got)
                    self.assertTrue(got.startswith(b"421 4.4.2 "), got)
                    self.assertGreater(took, 1.5)
                    self.assertLess(took, 4.0, "the unfinished line kept the session alive")
                    c.wait_closed()
                self.assertNotIn(marker, be.raw_log())

    def test_slowloris_on_discarded_bytes(self):
        """Bytes the gateway throws away are not activity either: the rest of
        an over-long command line (after its 500), and a refused BDAT chunk
        (after its 503/502), trickled, still meet the command timeout."""
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),
                                            ("submission", "starttls", {})),
                                 timeouts={"command": "2", "data": "2"})
        be2 = self.start_backend("--ext", "PIPELINING,8BITMIME,ENHANCEDSTATUSCODES",
                                 name="be-nochunking")
        gw2 = self.start_gateway(be2.addr, listeners=(("smtps", "implicit", {}),),
                                 timeouts={"command": "2", "data": "2"}, name="gw-nochunking")
        cases = (("overlong-line", "submission", gw), ("overlong-line", "smtps", gw),
                 ("bdat-before-ehlo", "smtps", gw), ("bdat-without-chunking", "smtps", gw2))
        for what, listener, g in cases:
            with self.subTest(what=what, listener=listener):
                if listener == "smtps":
                    c = tls_client(g)
                else:
                    c = SMTPClient(g.port(listener))
                    self.assertCode(c.reply(), 220)
                with c:
                    if what == "overlong-line":
                        self.assertCode(c.ehlo(), 250)
                        c.send(b"MAIL FROM:<" + b"x" * 5000)          # over max_line, no LF
                        self.assertCode(c.reply(), 500)
                    elif what == "bdat-before-ehlo":
                        self.assertCode(c.cmd("BDAT 100000 LAST"), 503)
                    else:
                        self.assertCode(c.ehlo(), 250)
                        self.assertCode(c.cmd("BDAT 100000 LAST"), 502)
                    got, took, closed = trickle(c, b"y" * 100, 0.3, 5.5)
                    self.assertFalse(closed, "closed without a reply (got %r)" % got)
                    self.assertTrue(got.startswith(b"421 4.4.2 "), got)
                    self.assertLess(took, 4.0, "discarded bytes kept the session alive")
                    c.wait_closed()

    def test_slowloris_message_body(self):
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),),
                                 timeouts={"data": "2", "command": "20"})
        for how, pace in (("DATA", "bytes"), ("DATA", "lines"), ("BDAT", "bytes")):
            with self.subTest(how=how, pace=pace):
                marker = uniq("slowbody").encode()
                with tls_client(gw) as c:
                    self.assertCode(c.ehlo(), 250)
                    self.assertCode(c.cmd("MAIL FROM:<slow@x>"), 250)
                    self.assertCode(c.cmd("RCPT TO:<r@x>"), 250)
                    body = b"Subject: " + marker + b"\r\n\r\n" + b"line of the body\r\n" * 50
                    if how == "DATA":
                        self.assertCode(c.cmd("DATA"), 354)
                    else:
                        c.send(b"BDAT %d LAST\r\n" % (len(body) + 100))
                    # bytes: no line is ever complete; lines: a whole line every 0.2s
                    payload = body if pace == "bytes" else body.split(b"\n")
                    if pace == "lines":
                        payload = [l + b"\n" for l in payload[:-1]]
                    got, took, closed = trickle(c, payload, 0.2, 8)
                    self.assertFalse(closed, "closed without a reply (got %r)" % got)
                    self.assertTrue(got.startswith(b"421 4.4.2 "), got)
                    self.assertLess(took, 4.0, "the trickled body kept the session alive")
                    c.wait_closed()
                lib.wait_until(lambda: all_backend_conns_closed(be), 5,
                               "the backend session to be dropped")
                log = be.raw_log()
                start = log.find(b"DATA\r\n" if how == "DATA" else b"BDAT ")
                self.assertGreaterEqual(start, 0, log[-500:])
                self.assertNotIn(b"\r\n.\r\n", log[start:], "the backend got an end of data")
                self.assertEqual(be.count(), 0, "a trickled message was delivered")

    def test_trickled_bdat_chunk_is_a_client_timeout(self):
        """A client trickling a BDAT chunk is the slow party: the session
        must end as a client timeout (like a trickled DATA body), not be
        reported to the client and in the log as a backend timeout."""
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),),
                                 timeouts={"data": "2", "command": "20"})
        with tls_client(gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("MAIL FROM:<slow@x>"), 250)
            self.assertCode(c.cmd("RCPT TO:<r@x>"), 250)
            c.send(b"BDAT 1000 LAST\r\n")
            got, took, closed = trickle(c, b"Subject: slow chunk\r\n" * 10, 0.2, 8)
            self.assertTrue(got.startswith(b"421 4.4.2 "), got)
            c.wait_closed()
        m = gw.wait_log(r"listener=smtps tls=TLS\S* .*reason=\"([^\"]*)\"")
        self.assertEqual(m.group(1), "client timeout",
                         "the session log blames the backend for a slow client")
        self.assertNotIn(b"backend", got, "the 421 blames the backend for a slow client: %r" % got)

    def test_handshake_trickle(self):
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),
                                            ("submission", "starttls", {})),
                                 timeouts={"handshake": "2", "command": "20"})
        hello = client_hello()
        self.assertGreater(len(hello), 100)
        for listener in ("smtps", "submission"):
            with self.subTest(listener=listener):
                with SMTPClient(gw.port(listener)) as c:
                    if listener == "submission":
                        self.assertCode(c.reply(), 220)
                        self.assertCode(c.ehlo(), 250)
                        self.assertCode(c.cmd("STARTTLS"), 220)
                    got, took, sent = trickle_raw(c.sock, hello, 0.2, 8)
                self.assertLess(sent, len(hello), "the whole ClientHello went out")
                self.assertLess(took, 4.0, "the trickled handshake outlived its deadline")
                self.assertGreater(took, 1.5)
                self.assertNotIn(b"421", got, "a plaintext reply during a TLS handshake")
        # 465: no backend connection at all; 587: one, opened at STARTTLS, that got nothing
        lib.wait_until(lambda: all_backend_conns_closed(be), 5, "the backend session to end")
        self.assertLessEqual(be.connections(), 1)
        self.assertEqual(be.raw_log(), b"")


# ============================================================================
# STARTTLS: nothing said in plaintext survives, whatever the TCP segments

class StartTLSInjectionTest(lib.IntegrationTest):

    def setUp(self):
        super().setUp()
        self.be, self.gw = self.setup_pair(
            listeners=(("submission", "starttls", {}),
                       ("opportunistic", "starttls", {"require_tls": "no"})),
            timeouts={"handshake": "2"})

    def _check_session_bytes(self, since, tls_ok):
        """What the backend got from the session: nothing, or (after a real
        handshake) a fresh EHLO and what followed it."""
        lib.wait_until(lambda: all_backend_conns_closed(self.be), 5, "the backend session to end")
        got = self.be.raw_log()[since:]
        if tls_ok:
            self.assertTrue(got == b"" or got.startswith(b"EHLO fresh.test\r\n"), got)
        else:
            self.assertEqual(got, b"", "the backend got bytes from a session whose TLS failed")

    def _after_tls(self, c):
        """Inside TLS: a fresh EHLO and a legitimate transaction start."""
        try:
            self.assertCode(c.ehlo("fresh.test"), 250)
            self.assertCode(c.cmd("MAIL FROM:<legit@x>"), 250)
            self.assertCode(c.cmd("QUIT"), 221)
        except (ConnectionClosed, OSError, ssl.SSLError):
            pass

    def test_injection_in_a_second_tcp_segment(self):
        for listener in ("submission", "opportunistic"):
            for when in ("after-220-arrived", "at-once"):
                with self.subTest(listener=listener, when=when):
                    inj = uniq("inj").encode()
                    since = len(self.be.raw_log())
                    c = SMTPClient(self.gw.port(listener))
                    self.addCleanup(c.close)
                    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.assertCode(c.reply(), 220)
                    self.assertCode(c.ehlo(), 250)
                    if listener == "opportunistic":
                        lib.wait_until(lambda: b"EHLO client.test\r\n" in self.be.raw_log()[since:],
                                       5, "the relayed EHLO")
                        since = len(self.be.raw_log())
                    c.send(b"STARTTLS\r\n")
                    if when == "after-220-arrived":
                        # the 220 is waiting (not read): the gateway is in its handshake
                        r, _, _ = select.select([c.sock], [], [], 5)
                        self.assertTrue(r, "no 220 to STARTTLS")
                    c.send(b"MAIL FROM:<" + inj + b"@x>\r\n")
                    r = c.reply()
                    self.assertCode(r, 220)
                    # after the 220 only TLS may come (an alert, if the MAIL was
                    # taken for a ClientHello), never a plaintext reply
                    self.assertIsNone(re.match(rb"\d{3}", c.buf), c.buf)
                    tls_ok = False
                    if not c.buf:
                        tls_ok = c.try_wrap()
                    if tls_ok:
                        self._after_tls(c)
                    c.close()
                    self._check_session_bytes(since, tls_ok)
                    self.assertNotIn(inj, self.be.raw_log())
        self.assertEqual(self.be.count(), 0)

    def test_clienthello_sent_with_starttls(self):
        for listener in ("submission", "opportunistic"):
            with self.subTest(listener=listener):
                inj = uniq("inj").encode()
                since = len(self.be.raw_log())
                c = SMTPClient(self.gw.port(listener))
                self.addCleanup(c.close)
                self.assertCode(c.reply(), 220)
                self.assertCode(c.ehlo(), 250)
                if listener == "opportunistic":
                    lib.wait_until(lambda: b"EHLO client.test\r\n" in self.be.raw_log()[since:],
                                   5, "the relayed EHLO")
                    since = len(self.be.raw_log())
                m = lib.MemoryTLS(c.sock)
                hello = m.client_hello()
                # the ClientHello and a plaintext command, before the 220
                c.send(b"STARTTLS\r\n" + hello + b"\r\nMAIL FROM:<" + inj + b"@x>\r\n")
                self.assertCode(c.reply(), 220)
                self.assertIsNone(re.match(rb"\d{3}", c.buf), c.buf)    # TLS only after the 220
                m.inc.write(c.buf)
                c.buf = b""
                try:
                    tls_ok = m.handshake(timeout=8)
                except Timeout:
                    self.fail("the gateway neither finished nor cut the handshake")
                if tls_ok:
                    m.send(b"EHLO fresh.test\r\n")
                    while True:
                        line = m.recv_line(5)
                        if not line or line[3:4] != b"-":
                            break
                    m.send(b"QUIT\r\n")
                    m.recv_line(5)
                c.close()
                self._check_session_bytes(since, tls_ok)
                self.assertNotIn(inj, self.be.raw_log())
        self.gw.wait_log(r"discarded \d+ bytes sent after STARTTLS")
        self.assertEqual(self.be.count(), 0)


# ============================================================================
# TLS abuse

class TLSAbuseTest(lib.IntegrationTest):

    def setUp(self):
        super().setUp()
        self.be, self.gw = self.setup_pair(
            listeners=(("smtps", "implicit", {}), ("submission", "starttls", {})),
            timeouts={"handshake": "3"})

    def test_garbage_instead_of_clienthello(self):
        cases = (("zeros", b"\x00" * 512),
                 ("random", b"\xff" + os.urandom(1023)),
                 ("oversized-record", b"\x16\x03\x01\xff\xff" + os.urandom(2000)),
                 ("http", b"GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
                 ("sslv2-hello", b"\x80\x2e\x01\x00\x02\x00\x15" + os.urandom(45)))
        for name, data in cases:
            with self.subTest(garbage=name):
                s = raw_connect(self.gw.port("smtps"))
                with s:
                    try:
                        s.sendall(data)
                    except OSError:
                        pass
                    got, took = lib.raw_until_closed(s, 8)
                self.assertLess(took, 1.5, "garbage is a failed handshake, not a stalled one")
                self.assertNotIn(b"220", got)
        self.assertEqual(self.be.connections(), 0)
        self.assertEqual(self.be.raw_log(), b"")
        with tls_client(self.gw) as c:                  # still serving
            self.assertCode(c.ehlo(), 250)

    def test_clienthello_on_starttls_port_before_starttls(self):
        hello = client_hello()
        with SMTPClient(self.gw.port("submission")) as c:
            self.assertCode(c.reply(), 220)
            c.send(hello + b"\r\nQUIT\r\n")
            codes = []
            try:
                while True:
                    codes.append(c.reply(timeout=5).code)
            except ConnectionClosed:
                pass
            except AssertionError as e:               # a malformed reply line
                self.fail("%s (codes so far %r)" % (e, codes))
        self.assertTrue(codes, "no reply at all")
        for code in codes[:-1]:
            self.assertEqual(code // 100, 5, codes)
        self.assertIn(codes[-1], (221, 421) + tuple(range(500, 600)), codes)
        self.assertEqual(self.be.connections(), 0)

    def _old_tls_client_ctx(self, version):
        ctx = lib.client_context()
        ctx.minimum_version = version
        ctx.maximum_version = version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        return ctx

    def _control_old_tls(self, version):
        """Skip unless this Python/OpenSSL can really speak `version`:
        handshake in memory against a permissive server."""
        try:
            cctx = self._old_tls_client_ctx(version)
            sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            sctx.minimum_version = ssl.TLSVersion.TLSv1
            sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            sctx.load_cert_chain(lib.certs().cert, lib.certs().key)
        except (ssl.SSLError, ValueError) as e:
            self.skipTest("no %s in this OpenSSL: %s" % (version.name, e))
        ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        cl = cctx.wrap_bio(ci, co, server_hostname="gw.test")
        sv = sctx.wrap_bio(si, so, server_side=True)
        done = [False, False]
        for _ in range(20):
            for i, (obj, out, peer_in) in enumerate(((cl, co, si), (sv, so, ci))):
                if not done[i]:
                    try:
                        obj.do_handshake()
                        done[i] = True
                    except ssl.SSLWantReadError:
                        pass
                    except ssl.SSLError as e:
                        self.skipTest("%s does not work here: %s" % (version.name, e))
                peer_in.write(out.read())
            if all(done):
                break
        if not all(done) or cl.version() != {ssl.TLSVersion.TLSv1: "TLSv1",
                                             ssl.TLSVersion.TLSv1_1: "TLSv1.1"}[version]:
            self.skipTest("%s handshake control failed (%r)" % (version.name, cl.version()))

    def test_tls10_and_tls11_refused(self):
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with self.subTest(version=version.name):
                self._control_old_tls(version)      # skips this version if the client cannot
                for listener in ("smtps", "submission"):
                    ctx = self._old_tls_client_ctx(version)
                    c = SMTPClient(self.gw.port(listener))
                    with c:
                        if listener == "submission":
                            self.assertCode(c.reply(), 220)
                            c.ehlo()
                            self.assertCode(c.cmd("STARTTLS"), 220)
                        with self.assertRaises((ssl.SSLError, OSError, ConnectionClosed),
                                               msg="%s accepted" % version.name):
                            c.wrap(ctx)
                            c.reply(timeout=5)      # a TLS session: its banner
                            self.fail("%s handshake completed on %s (%s)"
                                      % (version.name, listener, c.sock.version()))
        # TLS 1.2 still works
        ctx = lib.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with tls_client(self.gw, ctx=ctx) as c:
            self.assertEqual(c.sock.version(), "TLSv1.2")
        # nothing from a refused client reaches the backend
        lib.wait_until(lambda: all_backend_conns_closed(self.be), 5, "the backend sessions to end")
        self.assertEqual(self.be.raw_log(), b"", "the backend got bytes from a refused client")

    def test_abrupt_close_mid_data(self):
        for how, tail in (("fin-no-close-notify", b"\r\n."), ("rst", b"\r\n.\r")):
            with self.subTest(close=how):
                marker = uniq("abrupt").encode()
                closed_before = self.be.closed_connections()
                c = tls_client(self.gw)
                self.assertCode(c.ehlo(), 250)
                self.assertCode(c.cmd("MAIL FROM:<a@x>"), 250)
                self.assertCode(c.cmd("RCPT TO:<b@x>"), 250)
                self.assertCode(c.cmd("DATA"), 354)
                c.send(b"Subject: " + marker + b"\r\n\r\npartial body" + tail)
                if how == "rst":
                    rst_close(c.sock)
                else:
                    c.sock.close()                  # no unwrap(): no close_notify
                lib.wait_until(lambda: self.be.closed_connections() > closed_before, 10,
                               "the backend session to be dropped")
                log = self.be.raw_log()
                i = log.find(b"DATA\r\n", max(0, log.find(marker) - 200))
                self.assertGreaterEqual(i, 0)
                self.assertNotIn(b"\r\n.\r\n", log[i:], "the backend got an end of data")
                self.assertEqual(self.be.count(), 0, "a cut message was delivered")
        self.assertTrue(self.gw.alive())


# ============================================================================
# the backend breaks

class BackendBreaksTest(lib.IntegrationTest):

    def _pair(self, tag, *backend_args):
        be = self.start_backend(*backend_args, name="be-" + tag)
        gw = self.start_gateway(be.addr, listeners=(("smtps", "implicit", {}),), name="gw-" + tag)
        return be, gw

    def _transaction(self, c):
        self.assertCode(c.ehlo(), 250)
        self.assertCode(c.cmd("MAIL FROM:<a@x>"), 250)
        self.assertCode(c.cmd("RCPT TO:<b@x>"), 250)

    def test_backend_resets_mid_data(self):
        be, gw = self._pair("reset", "--reset-in-data", "1000")
        m = lib.big_message(2 * 1024 * 1024, marker=uniq("reset"))
        for i in range(2):               # the second session: the gateway is still serving
            with self.subTest(session=i):
                with raw_connect(gw.port("smtps"), timeout=10) as s:
                    t = lib.MemoryTLS(s)
                    self.assertTrue(t.handshake(10), t.error)
                    self.assertEqual(t.reply_code(), 220)
                    for line, code in ((b"EHLO c.test", 250), (b"MAIL FROM:<a@x>", 250),
                                       (b"RCPT TO:<b@x>", 250), (b"DATA", 354)):
                        t.send(line + b"\r\n")
                        self.assertEqual(t.reply_code(), code, line)
                    # the client keeps sending its body while the backend resets
                    got = t.send_and_read(dot_stuff(m), 20)
                    self.assertTrue(got.startswith(b"421 "), got[:200])
                    self.assertEqual(got.count(b"\n"), 1, got[:200])
                lib.wait_until(lambda: all_backend_conns_closed(be), 5, "the backend session to end")
        log = be.raw_log()
        self.assertNotIn(b"\r\n.\r\n", log[log.find(b"DATA\r\n"):])
        self.assertEqual(be.count(), 0)

    def test_overlong_reply_line(self):
        for key in ("EHLO", "MAIL", "END"):
            with self.subTest(reply_to=key):
                be, gw = self._pair("long-" + key.lower(), "--long-reply", "%s=2000" % key)
                with tls_client(gw) as c:
                    if key == "EHLO":
                        self.assertCode(c.ehlo(), 421)
                    elif key == "MAIL":
                        self.assertCode(c.ehlo(), 250)
                        self.assertCode(c.cmd("MAIL FROM:<a@x>"), 421)
                    else:
                        self._transaction(c)
                        self.assertCode(c.cmd("DATA"), 354)
                        c.send(dot_stuff(make_message(uniq("long"))))
                        self.assertCode(c.reply(), 421)
                    c.wait_closed()

    def test_malformed_replies(self):
        cases = (("DATA", r"35 go ahead\r\n"),
                 ("DATA", r"354-go ahead\r\n250 ok\r\n"),
                 ("END", r"250-queued\r\n550 5.0.0 not really\r\n"),
                 ("END", r"2500 queued\r\n"),
                 ("END", r"250 queued\x00 as 1\r\n"),
                 ("END", r"250 queued\rinjected\r\n"),
                 ("END", r"hello, this is not SMTP\r\n"))
        for i, (key, text) in enumerate(cases):
            with self.subTest(reply_to=key, text=text):
                be, gw = self._pair("bad%d" % i, "--bad-reply", "%s=%s" % (key, text))
                with tls_client(gw) as c:
                    self._transaction(c)
                    if key == "DATA":
                        self.assertCode(c.cmd("DATA"), 421)
                    else:
                        self.assertCode(c.cmd("DATA"), 354)
                        c.send(dot_stuff(make_message(uniq("bad"))))
                        r = c.reply()
                        self.assertCode(r, 421)
                    c.wait_closed()


    def test_unsolicited_and_early_replies(self):
        # an extra reply after MAIL's: nobody asked for it
        be, gw = self._pair("extra", "--bad-reply", r"MAIL=250 2.1.0 Ok\r\n250 2.0.0 extra\r\n")
        with tls_client(gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("MAIL FROM:<a@x>"), 250)
            self.assertCode(c.reply(timeout=5), 421)         # without sending anything more
            c.wait_closed()
        # a 250 "for the message" right after the 354, before any body: the
        # client must never see it (it would take it for its message's)
        be, gw = self._pair("early", "--bad-reply", r"DATA=354 go\r\n250 2.0.0 queued early\r\n")
        with tls_client(gw) as c:
            self._transaction(c)
            self.assertCode(c.cmd("DATA"), 354)
            self.assertCode(c.reply(timeout=5), 421)      # without sending a byte of body
            c.wait_closed()

    def test_huge_multiline_reply(self):
        # 300 EHLO lines of 300 bytes: a valid reply far over any buffer
        ext = ",".join("X%03d%s" % (i, "y" * 290) for i in range(300))
        be, gw = self._pair("huge", "--ext", ext)
        with tls_client(gw) as c:
            r = c.ehlo()            # relayed or refused, but answered and bounded
            if r.code == 421:
                c.wait_closed()
            else:
                self.assertCode(r, 250)
                self.assertEqual(len(r.lines), 301)
                self.assertCode(c.cmd("NOOP"), 250)
        self.assertTrue(gw.alive())

    def test_backend_silent_after_connect(self):
        be = self.start_backend("--reply-delay", "30", name="be-silent")
        gw = self.start_gateway(be.addr, listeners=(("smtps", "implicit", {}),
                                                    ("submission", "starttls", {})),
                                timeouts={"data": "2"}, name="gw-silent")
        t0 = time.monotonic()
        with SMTPClient(gw.port("smtps"), tls=True) as c:
            self.assertCode(c.reply(timeout=8), 421)
            c.wait_closed()
        self.assertLess(time.monotonic() - t0, 5)
        with starttls_client(gw) as c:
            t0 = time.monotonic()
            try:
                c.send(b"EHLO c.test\r\n")
            except OSError:
                pass
            self.assertCode(c.reply(timeout=8), 421)
            self.assertLess(time.monotonic() - t0, 5)
            c.wait_closed()


# ============================================================================
# many connections

class ManyConnectionsTest(lib.IntegrationTest):

    N = 2000

    def _conn_sockets(self, pid):
        st = lib.proc_tcp_states(pid)
        return sum(n for s, n in st.items() if s != "0A")       # all but LISTEN

    def test_2000_idle_connections(self):
        soft = lib.raise_nofile()
        if soft < self.N + 300:
            self.skipTest("RLIMIT_NOFILE hard limit %d is too low" % soft)
        be = self.start_backend()
        gw = self.start_gateway(be.addr, listeners=(("smtps", "implicit", {}),
                                                    ("submission", "starttls", {})),
                                gateway={"max_connections": "5000", "log_level": "info"},
                                timeouts={"command": "120"},
                                extra=lib.limits_section(per_ip_connections=0))
        pid = gw.proc.pid
        with tls_client(gw) as c:                         # warm up: one full session
            self.assertCode(c.ehlo(), 250)
            self.deliver(c, make_message(uniq("warm")))
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        lib.wait_until(lambda: self._conn_sockets(pid) == 0, 10, "the gateway to hold no connections")
        fd0 = lib.proc_fd_count(pid)
        rss0 = lib.proc_rss_kb(pid)

        socks = []

        def close_all():
            for s in socks:
                s.close()
            socks.clear()
        self.addCleanup(close_all)
        try:
            got, lines = lib.open_greeted(gw.port("submission"), self.N, 60)
        except Exception as e:
            socks.extend(getattr(e, "socks", []))
            raise
        socks.extend(got)
        bad = [l for l in lines if not l.startswith(b"220 ")]
        self.assertEqual(len(bad), 0, "%d of %d got no 220 greeting, e.g. %r"
                         % (len(bad), self.N, bad[:3]))
        fd_peak = lib.proc_fd_count(pid)
        self.assertGreaterEqual(fd_peak, fd0 + self.N)
        rss_peak = lib.proc_rss_kb(pid)
        m = make_message(uniq("among-2000"))
        with tls_client(gw) as c:                          # a normal message still goes through
            self.assertCode(c.ehlo(), 250)
            self.deliver(c, m)
        self.assertEqual(be.find_message(m.split(b"\r\n")[3])[1], m)
        close_all()
        try:
            lib.wait_until(lambda: lib.proc_fd_count(pid) <= fd0 + 2, 20,
                           "the gateway's fds to return to %d" % fd0)
        except Timeout:
            self.fail("gateway fds: %d before, %d with %d idle, %d after closing them (tcp %r)"
                      % (fd0, fd_peak, self.N, lib.proc_fd_count(pid), lib.proc_tcp_states(pid)))
        lib.wait_until(lambda: self._conn_sockets(pid) == 0, 10, "the gateway to hold no connections")
        rss1 = lib.proc_rss_kb(pid)
        if not lib.is_sanitized_binary():
            self.assertLess(rss1 - rss0, 8 * 1024,
                            "gateway RSS: %d kB before, %d kB with %d idle, %d kB after"
                            % (rss0, rss_peak, self.N, rss1))
        self.assertTrue(gw.alive())

    def test_max_connections_refusal_on_both_listeners(self):
        be = self.start_backend()
        gw = self.start_gateway(be.addr, listeners=(("smtps", "implicit", {}),
                                                    ("submission", "starttls", {})),
                                gateway={"max_connections": "50"},
                                timeouts={"command": "60"},
                                extra=lib.limits_section(per_ip_connections=0))
        port = gw.port("submission")
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        deadline = time.monotonic() + 15
        while len(held) < 50:                 # a readiness probe may hold a place briefly
            if time.monotonic() > deadline:
                self.fail("only %d of 50 connections greeted" % len(held))
            try:
                socks, lines = lib.open_greeted(port, 50 - len(held), 10)
            except Exception as e:
                for s in getattr(e, "socks", []):
                    s.close()
                raise
            for s, l in zip(socks, lines):
                if l.startswith(b"220 "):
                    held.append(s)
                else:
                    s.close()
        for listener in ("submission", "smtps"):
            with self.subTest(listener=listener):
                t0 = time.monotonic()
                with raw_connect(gw.port(listener)) as s:
                    got, _ = lib.raw_until_closed(s, 5)
                self.assertLess(time.monotonic() - t0, 1.0)
                self.assertTrue(got.startswith(b"421 4.7.0 "), got)
        self.assertEqual(be.connections(), 0)
        s = held.pop()
        s.sendall(b"QUIT\r\n")
        got, _ = lib.raw_until_closed(s, 5)
        s.close()
        self.assertTrue(got.startswith(b"221 "), got)
        with SMTPClient(port) as c:                      # its place is free again
            self.assertCode(c.reply(), 220)


# ============================================================================
# half-closed connections, backends that close first

class HalfCloseTest(lib.IntegrationTest):

    def setUp(self):
        super().setUp()
        self.be, self.gw = self.setup_pair(
            listeners=(("smtps", "implicit", {}), ("submission", "starttls", {}),
                       ("opportunistic", "starttls", {"require_tls": "no"})))

    def test_quit_then_shut_wr_before_tls(self):
        for listener in ("submission", "opportunistic"):
            for pipelined in (False, True):
                with self.subTest(listener=listener, pipelined=pipelined):
                    with SMTPClient(self.gw.port(listener)) as c:
                        self.assertCode(c.reply(), 220)
                        if pipelined:
                            c.send(b"EHLO c.test\r\nNOOP\r\nQUIT\r\n")
                            shut_wr(c.sock)
                            self.assertEqual([r.code for r in c.replies(3)], [250, 250, 221])
                        else:
                            self.assertCode(c.ehlo(), 250)
                            c.send(b"QUIT\r\n")
                            shut_wr(c.sock)
                            self.assertCode(c.reply(), 221)
                        c.wait_closed()

    def test_quit_then_shut_wr_inside_tls(self):
        for listener in ("smtps", "submission"):
            for pipelined in (False, True):
                with self.subTest(listener=listener, pipelined=pipelined):
                    c = tls_client(self.gw) if listener == "smtps" else starttls_client(self.gw)
                    with c:
                        if pipelined:
                            c.send(b"EHLO c.test\r\nMAIL FROM:<h@x>\r\nQUIT\r\n")
                            shut_wr(c.sock)
                            self.assertEqual([r.code for r in c.replies(3)], [250, 250, 221])
                        else:
                            self.assertCode(c.ehlo(), 250)
                            c.send(b"QUIT\r\n")
                            shut_wr(c.sock)
                            r = c.reply()
                            self.assertCode(r, 221)
                            self.assertIn("backend.test", r.text, "the backend's 221, relayed")
                        c.wait_closed()

    def test_message_then_quit_then_shut_wr(self):
        """A batch client: the body, QUIT and its end of input in one go."""
        for listener in ("smtps", "submission"):
            with self.subTest(listener=listener):
                m = make_message(uniq("batch-" + listener))
                c = tls_client(self.gw) if listener == "smtps" else starttls_client(self.gw)
                with c:
                    self.assertCode(c.ehlo(), 250)
                    c.send(b"MAIL FROM:<b@x>\r\nRCPT TO:<r@x>\r\nDATA\r\n")
                    self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
                    c.send(dot_stuff(m) + b"QUIT\r\n")
                    shut_wr(c.sock)
                    self.assertEqual([r.code for r in c.replies(2)], [250, 221])
                    c.wait_closed()
                self.assertEqual(self.be.find_message(m.split(b"\r\n")[3])[1], m)

    def test_backend_closes_right_after_its_221(self):
        for i in range(5):
            with self.subTest(round=i):
                with tls_client(self.gw) as c:
                    self.assertCode(c.ehlo(), 250)
                    if i % 2:
                        c.send(b"NOOP\r\nQUIT\r\n")
                        self.assertCode(c.reply(), 250)
                    else:
                        c.send(b"QUIT\r\n")
                    r = c.reply()
                    self.assertCode(r, 221)
                    self.assertIn("backend.test", r.text)
                    c.wait_closed()
        with SMTPClient(self.gw.port("opportunistic")) as c:
            self.assertCode(c.reply(), 220)
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()


if __name__ == "__main__":
    unittest.main()
