"""End-to-end tests: the real smtpgate binary between real or raw clients
and the fake backend (tests/backend.py), all on loopback.

Assertions are on reply codes (never on reply texts, except where the
text is the thing relayed) and on what the backend received: its maildir
(msg-N.eml / msg-N.env) and its raw byte log.

Run with tests/integration/run.py (TEST_FILTER=substring for a subset).
"""

import os
import queue
import re
import signal
import smtplib
import ssl
import subprocess
import threading
import time
import unittest

import lib
from lib import (SMTPClient, ConnectionClosed, Timeout, dot_stuff, has_tool, make_message, mid,
                 starttls_client, tls_client, uniq)

EXT_ALL = ("PIPELINING,8BITMIME,CHUNKING,STARTTLS,XCLIENT,XFORWARD,AUTH PLAIN LOGIN,"
           "SIZE 52428800,ENHANCEDSTATUSCODES")


def normalized(wire_body):
    """The contents a backend may store for a DATA body `wire_body`
    (everything before the final ".\\r\\n") once bare CR and LF are turned
    into CRLF. Two renderings are safe and both fit DESIGN.md; they differ
    only for a line that is a lone dot followed by a bare CR or LF
    (".\\nMAIL ..." after a CRLF):
      - RFC reading: lines end at CRLF only, so the leading dot of that
        line is transparency and goes; then bare CR/LF become CRLF;
      - literal reading: bare CR/LF become CRLF first, which makes that
        line a lone "." of content (dot-stuffed on the wire), kept.
    Returns the set of acceptable contents."""
    out = set()
    for keep_lone_dot in (False, True):
        lines = []
        for l in wire_body.split(b"\r\n"):
            if l.startswith(b".") and not (keep_lone_dot and l[1:2] in (b"\r", b"\n")):
                l = l[1:]
            lines.append(l)
        out.add(re.sub(rb"\r\n|\r|\n", b"\r\n", b"\r\n".join(lines)))
    return out


# ============================================================================
# the fake backend itself: it is the oracle, so it is tested first

class BackendSelfTest(lib.IntegrationTest):
    """tests/backend.py alone, no gateway."""

    def test_dialogue_pipelining_and_byte_exact_data(self):
        be = self.start_backend()
        with SMTPClient(be.port) as c:
            self.assertCode(c.reply(), 220)
            self.assertCode(c.cmd("MAIL FROM:<a@b>"), 503)      # before EHLO
            self.assertCode(c.cmd("FROB"), 500)
            self.assertCode(c.ehlo("me.test"), 250)
            c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<reject@x>\r\nRCPT TO:<c@x>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.replies(5)], [250, 250, 550, 250, 354])
            m = make_message("self1")
            c.send(dot_stuff(m))
            self.assertCode(c.reply(), 250)
            eml, env = be.wait_message(1)
            self.assertEqual(eml, m)
            self.assertEqual(env, [b"HELO me.test", b"MAIL FROM:<a@x>", b"RCPT TO:<b@x>", b"RCPT TO:<c@x>"])
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        self.assertIn(b"RCPT TO:<reject@x>\r\n", be.raw_log())

    def test_bdat_chunks_are_raw(self):
        be = self.start_backend()
        with SMTPClient(be.port) as c:
            c.reply()
            c.ehlo()
            chunk1 = b"a\r\n.\r\nMAIL FROM:<x@y>\r\n"
            chunk2 = b"..tail\n"
            c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nBDAT %d\r\n" % len(chunk1) + chunk1 +
                   b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
            self.assertEqual([r.code for r in c.replies(4)], [250, 250, 250, 250])
        eml, env = be.wait_message(1)
        self.assertEqual(eml, chunk1 + chunk2)

    def test_lenient_backend_is_really_vulnerable(self):
        """The smuggling tests rely on --lenient ending data at LF.LF."""
        be = self.start_backend("--lenient")
        with SMTPClient(be.port) as c:
            c.reply()
            c.ehlo()
            c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
            c.send(b"hello\n.\nMAIL FROM:<smuggled@x>\r\nRCPT TO:<v@x>\r\nDATA\r\nevil\r\n.\r\n")
            self.assertEqual([r.code for r in c.replies(4)], [250, 250, 250, 354])
            self.assertCode(c.reply(), 250)
        be.wait_count(2)
        self.assertIn(b"MAIL FROM:<smuggled@x>", be.message(2)[1])

    def test_misbehaviour_options(self):
        be = self.start_backend("--no-ehlo", "--banner", "220-first\\n220 second",
                                "--auth-fail", "--ext", "AUTH PLAIN")
        with SMTPClient(be.port) as c:
            self.assertEqual(c.reply().lines, ["first", "second"])
            self.assertCode(c.ehlo(), 500)
            self.assertCode(c.cmd("HELO me"), 250)
            self.assertCode(c.cmd("AUTH PLAIN AGEAYg=="), 535)
        be2 = self.start_backend("--banner", "554 5.3.2 go away", name="b2")
        with SMTPClient(be2.port) as c:
            self.assertCode(c.reply(), 554)
            self.assertCode(c.ehlo(), 503)
            self.assertCode(c.cmd("QUIT"), 221)
        be3 = self.start_backend("--close-after-data", name="b3")
        with SMTPClient(be3.port) as c:
            c.reply()
            c.ehlo()
            c.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
            c.replies(3)
            c.send(b"x\r\n.\r\n")
            self.assertRaises(ConnectionClosed, c.reply)

    def test_sigterm_exits_zero_with_open_connection(self):
        be = self.start_backend()
        c = SMTPClient(be.port)
        self.addCleanup(c.close)
        c.reply()
        self.assertEqual(be.stop(timeout=5), 0)


# ============================================================================
# implicit TLS (smtps)

class ImplicitTest(lib.SharedGatewayTest):

    def test_backend_banner_relayed_inside_tls(self):
        with SMTPClient(self.gw.port("smtps"), tls=True) as c:
            r = c.reply()
            self.assertCode(r, 220)
            self.assertIn("backend.test", r.text, "the backend's banner is relayed")

    def test_ehlo_is_the_backends_minus_starttls(self):
        with tls_client(self.gw) as c:
            r = c.ehlo()
            self.assertCode(r, 250)
            kw = r.keywords()
            for k in ("PIPELINING", "8BITMIME", "CHUNKING", "SIZE", "ENHANCEDSTATUSCODES", "AUTH"):
                self.assertIn(k, kw, r)
            self.assertNotIn("STARTTLS", kw)

    def test_delivery_byte_exact(self):
        m = make_message(uniq("implicit"))
        with tls_client(self.gw) as c:
            self.assertCode(c.ehlo("implicit.client"), 250)
            self.deliver(c, m, mail_from="<s1@client.test>", rcpts=("<r1@b.test>", "<r2@b.test>"))
            self.assertCode(c.cmd("QUIT"), 221)
        n, eml, env = self.be.find_message(mid(m))
        self.assertEqual(eml, m)
        self.assertEqual(env, [b"HELO implicit.client", b"MAIL FROM:<s1@client.test>",
                               b"RCPT TO:<r1@b.test>", b"RCPT TO:<r2@b.test>"])

    def test_two_messages_and_rset_in_one_session(self):
        m1, m2 = make_message(uniq("first")), make_message(uniq("second"))
        with tls_client(self.gw) as c:
            c.ehlo()
            self.deliver(c, m1)
            self.assertCode(c.cmd("MAIL FROM:<dropped@x>"), 250)
            self.assertCode(c.cmd("RSET"), 250)
            self.deliver(c, m2, mail_from="<second@x>")
        self.assertEqual(self.be.find_message(mid(m1))[1], m1)
        n, eml, env = self.be.find_message(mid(m2))
        self.assertEqual(eml, m2)
        self.assertIn(b"MAIL FROM:<second@x>", env)

    def test_starttls_refused_on_implicit(self):
        with tls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("STARTTLS"), 503, 554)
            self.assertCode(c.cmd("NOOP"), 250)

    def test_pipelining_replies_in_order(self):
        m = make_message(uniq("pipe"))
        with tls_client(self.gw) as c:
            c.ehlo()
            c.send(b"MAIL FROM:<p@x>\r\nRCPT TO:<a@x>\r\nRCPT TO:<reject-me@x>\r\n"
                   b"RCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.replies(6)], [250, 250, 550, 250, 250, 354])
            c.send(dot_stuff(m) + b"NOOP\r\nQUIT\r\n")
            self.assertEqual([r.code for r in c.replies(3)], [250, 250, 221])
        n, eml, env = self.be.find_message(mid(m))
        self.assertEqual(eml, m)
        self.assertEqual(env[1:], [b"MAIL FROM:<p@x>", b"RCPT TO:<a@x>", b"RCPT TO:<b@x>", b"RCPT TO:<c@x>"])

    def test_pipelining_with_locally_answered_commands_in_between(self):
        """Local answers (502 for XCLIENT / unknown verbs) take their slot in
        the FIFO: they are not sent before the earlier backend replies."""
        m = make_message(uniq("pipemix"))
        with tls_client(self.gw) as c:
            c.ehlo()
            c.send(b"MAIL FROM:<q@x>\r\nXCLIENT ADDR=6.6.6.1\r\nRCPT TO:<a@x>\r\nXYZZY\r\n"
                   b"NOOP\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.replies(6)], [250, 502, 250, 502, 250, 354])
            c.send(dot_stuff(m))
            self.assertCode(c.reply(), 250)
        self.assertEqual(self.be.find_message(mid(m))[1], m)
        log = self.be.raw_log()
        self.assertNotIn(b"6.6.6.1", log)
        self.assertNotIn(b"XYZZY", log)

    def test_unknown_command_502_not_forwarded(self):
        with tls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("FROBNICATE unknown-verb-marker"), 502)
            self.assertCode(c.cmd("XCLIENT ADDR=6.6.6.2"), 502)
            self.deliver(c, make_message(uniq("after-unknown")))       # sync point
        log = self.be.raw_log()
        self.assertNotIn(b"unknown-verb-marker", log)
        self.assertNotIn(b"6.6.6.2", log)

    def test_bdat_chunk_with_smtp_text_is_carried_intact(self):
        marker = uniq("bdat").encode()
        chunk1 = (b"Subject: " + marker + b"\r\n\r\nbody\r\n.\r\nMAIL FROM:<x@y>\r\n"
                  b"RCPT TO:<z@y>\r\nDATA\r\n..dots\r\n.")
        chunk2 = b"\r\nbare\nlf and bare\rcr\r\n.\r\n"
        with tls_client(self.gw) as c:
            r = c.ehlo()
            self.assertIn("CHUNKING", r.keywords())
            self.assertCode(c.cmd("MAIL FROM:<bdat@x>"), 250)
            self.assertCode(c.cmd("RCPT TO:<r@x>"), 250)
            c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
            self.assertCode(c.reply(), 250)
            c.send(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
            self.assertCode(c.reply(), 250)
            self.assertCode(c.cmd("NOOP"), 250)
        n, eml, env = self.be.find_message(marker)
        self.assertEqual(eml, chunk1 + chunk2)
        self.assertEqual(env[1:], [b"MAIL FROM:<bdat@x>", b"RCPT TO:<r@x>"])
        self.assertFalse(any(b"x@y" in e for e in self.be.all_envelopes()))

    def test_bdat_pipelined_in_one_write(self):
        marker = uniq("bdatpipe").encode()
        chunks = [b"Subject: " + marker + b"\r\n\r\n", b"", b"x" * 70000 + b"\r\n.\r\n", b"end\r\n"]
        wire = b"MAIL FROM:<bp@x>\r\nRCPT TO:<r@x>\r\n"
        for i, ch in enumerate(chunks):
            wire += b"BDAT %d%s\r\n" % (len(ch), b" LAST" if i == len(chunks) - 1 else b"") + ch
        with tls_client(self.gw) as c:
            c.ehlo()
            c.send(wire + b"QUIT\r\n")
            self.assertEqual([r.code for r in c.replies(7)], [250, 250, 250, 250, 250, 250, 221])
        self.assertEqual(self.be.find_message(marker)[1], b"".join(chunks))

    def test_bdat_zero_last(self):
        marker = uniq("bdat0").encode()
        body = b"Subject: " + marker + b"\r\n\r\nx\r\n"
        with tls_client(self.gw) as c:
            c.ehlo()
            c.send(b"MAIL FROM:<z@x>\r\nRCPT TO:<r@x>\r\nBDAT %d\r\n" % len(body) + body +
                   b"BDAT 0 LAST\r\n")
            self.assertEqual([r.code for r in c.replies(4)], [250, 250, 250, 250])
        self.assertEqual(self.be.find_message(marker)[1], body)

    def test_line_too_long_500_not_forwarded(self):
        marker = uniq("longline")
        max_line = int(self.gw.gateway_opts["max_line"])
        with tls_client(self.gw) as c:
            c.ehlo()
            line = "MAIL FROM:<%s@x> X=" % marker
            line += "a" * (max_line + 1 - len(line))
            self.assertEqual(len(line), max_line + 1)
            self.assertCode(c.cmd(line), 500)
            self.assertCode(c.cmd("NOOP"), 250)
            self.deliver(c, make_message(uniq("after-long")))
        self.assertNotIn(marker.encode(), self.be.raw_log())

    def test_very_long_lines_500_then_the_session_goes_on(self):
        """Lines far over max_line (arriving over several reads): 500, memory
        stays bounded, and the next command is read normally."""
        for n in (30000, 1000000):
            with self.subTest(length=n), tls_client(self.gw) as c:
                c.ehlo()
                self.assertCode(c.cmd("NOOP " + "b" * n), 500)
                self.assertCode(c.cmd("NOOP"), 250)

    def test_line_of_max_length_accepted(self):
        max_line = int(self.gw.gateway_opts["max_line"])
        with tls_client(self.gw) as c:
            c.ehlo()
            # max_line bytes with the CRLF: fits whether or not it counts
            self.assertCode(c.cmd("NOOP " + "a" * (max_line - 2 - 5)), 250)

    def test_bare_cr_or_nul_in_command_500(self):
        m1, m2 = uniq("barecr"), uniq("nul")
        with tls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("MAIL FROM:<%s\r@x>" % m1), 500)
            self.assertCode(c.cmd("MAIL FROM:<%s\0@x>" % m2), 500)
            self.assertCode(c.cmd("NOOP a\rb"), 500)
            self.deliver(c, make_message(uniq("after-cr")))
        log = self.be.raw_log()
        self.assertNotIn(m1.encode(), log)
        self.assertNotIn(m2.encode(), log)

    def test_bare_lf_command_accepted_and_forwarded_as_crlf(self):
        marker = uniq("barelf")
        m = make_message(marker)
        with tls_client(self.gw) as c:
            c.send(b"EHLO lf.client\n")
            self.assertCode(c.reply(), 250)
            c.send(b"MAIL FROM:<%s@x>\n" % marker.encode())
            self.assertCode(c.reply(), 250)
            c.send(b"RCPT TO:<r@x>\nDATA\n")
            self.assertCode(c.reply(), 250)
            self.assertCode(c.reply(), 354)
            c.send(dot_stuff(m))
            self.assertCode(c.reply(), 250)
        self.assertIn(b"MAIL FROM:<%s@x>\r\n" % marker.encode(), self.be.raw_log())
        self.assertEqual(self.be.find_message(mid(m))[1], m)

    def test_plaintext_on_implicit_port_closes_without_backend_traffic(self):
        marker = uniq("plain-on-465")
        c = SMTPClient(self.gw.port("smtps"))
        self.addCleanup(c.close)
        c.send(("EHLO %s\r\n" % marker).encode())
        got = c.wait_closed(timeout=8)
        self.assertFalse(got.startswith(b"250"), got)
        self.assertNotIn(marker.encode(), self.be.raw_log())
        self.gw.wait_log(r"(?i)reason=.*(tls|handshake)")       # the log says why

    def test_session_log_line(self):
        with tls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        self.gw.wait_log(r"session=\S+.*reason=|reason=\S+.*session=")


# ============================================================================
# large messages (own backend: its byte log gets big)

class LargeMessageTest(lib.SharedGatewayTest):

    def _big(self, size, limit):
        m = lib.big_message(size, marker=uniq("big%d" % size))
        t0 = time.monotonic()
        with tls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("MAIL FROM:<big@x> SIZE=%d" % len(m)), 250)
            self.assertCode(c.cmd("RCPT TO:<r@x>"), 250)
            self.assertCode(c.cmd("DATA"), 354)
            c.send(dot_stuff(m))
            self.assertCode(c.reply(timeout=limit), 250)
        n, eml, env = self.be.find_message(mid(m), timeout=limit)
        elapsed = time.monotonic() - t0
        self.assertEqual(len(eml), len(m))
        self.assertTrue(eml == m, "large message differs")
        return elapsed

    def test_10mb_message_intact(self):
        self._big(10 * 1000 * 1000, 30)

    def test_50mb_message_intact(self):
        if os.environ.get("SKIP_50MB"):
            self.skipTest("SKIP_50MB set")
        elapsed = self._big(50 * 1000 * 1000, 60)
        self.assertLess(elapsed, 20.0, "50 MB took %.1fs" % elapsed)

    def test_bdat_large_binary_chunks_pipelined(self):
        import random
        marker = uniq("bigbdat").encode()
        rng = random.Random(5321)
        chunks = [b"Subject: " + marker + b"\r\n\r\n" + rng.randbytes(3000000) + b"\r\n.\r\n",
                  rng.randbytes(4000000), b"\n.\n" + rng.randbytes(1000000)]
        wire = b"MAIL FROM:<bb@x>\r\nRCPT TO:<r@x>\r\n"
        for i, ch in enumerate(chunks):
            wire += b"BDAT %d%s\r\n" % (len(ch), b" LAST" if i == len(chunks) - 1 else b"") + ch
        with tls_client(self.gw) as c:
            c.ehlo()
            c.send(wire)
            self.assertEqual([r.code for r in c.replies(5, timeout=30)], [250] * 5)
        n, eml, env = self.be.find_message(marker, timeout=30)
        self.assertTrue(eml == b"".join(chunks), "BDAT content differs")


# ============================================================================
# STARTTLS with require_tls (submission, and the 2525-style "alt")

class StartTLSTest(lib.SharedGatewayTest):

    def test_gateway_greets_and_offers_starttls_never_auth(self):
        for listener in ("submission", "alt"):
            with self.subTest(listener=listener), SMTPClient(self.gw.port(listener)) as c:
                self.assertCode(c.reply(), 220)
                r = c.ehlo()
                self.assertCode(r, 250)
                kw = r.keywords()
                for k in ("STARTTLS", "PIPELINING", "ENHANCEDSTATUSCODES"):
                    self.assertIn(k, kw, r)
                self.assertNotIn("AUTH", kw, r)
                self.assertFalse(any(l.upper().startswith("AUTH") for l in r.lines[1:]), r)

    def test_only_a_few_commands_before_tls(self):
        with SMTPClient(self.gw.port("submission")) as c:
            c.reply()
            self.assertCode(c.cmd("HELO plain.client"), 250)
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("NOOP"), 250)
            self.assertCode(c.cmd("RSET"), 250)
            for cmd in ("MAIL FROM:<a@x>", "RCPT TO:<b@x>", "DATA", "VRFY root", "EXPN list",
                        "HELP", "AUTH PLAIN AGEAYg==", "AUTH LOGIN"):
                with self.subTest(cmd=cmd):
                    self.assertCode(c.cmd(cmd), 530)
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()

    def test_pre_tls_pipelined_replies_in_order(self):
        with SMTPClient(self.gw.port("submission")) as c:
            c.reply()
            c.send(b"EHLO p.client\r\nNOOP\r\nMAIL FROM:<a@x>\r\nRSET\r\nRCPT TO:<b@x>\r\nNOOP\r\n")
            self.assertEqual([r.code for r in c.replies(6)], [250, 250, 530, 250, 530, 250])

    def test_delivery_after_starttls_byte_exact(self):
        for listener in ("submission", "alt"):
            with self.subTest(listener=listener):
                m = make_message(uniq("starttls-" + listener))
                with starttls_client(self.gw, listener) as c:
                    r = c.ehlo("after.tls")
                    self.assertCode(r, 250)
                    kw = r.keywords()
                    self.assertNotIn("STARTTLS", kw)
                    for k in ("AUTH", "8BITMIME", "CHUNKING", "SIZE"):    # the backend's, relayed
                        self.assertIn(k, kw, r)
                    self.deliver(c, m, mail_from="<st@x>")
                    self.assertCode(c.cmd("QUIT"), 221)
                n, eml, env = self.be.find_message(mid(m))
                self.assertEqual(eml, m)
                self.assertEqual(env, [b"HELO after.tls", b"MAIL FROM:<st@x>", b"RCPT TO:<rcpt@backend.test>"])

    def test_nothing_said_before_tls_reaches_the_backend(self):
        pre_helo, pre_mail = uniq("pretls-helo"), uniq("pretls-mail")
        m = make_message(uniq("pretls-msg"))
        with SMTPClient(self.gw.port("submission")) as c:
            c.reply()
            self.assertCode(c.ehlo(pre_helo), 250)
            self.assertCode(c.cmd("MAIL FROM:<%s@x>" % pre_mail), 530)
            self.assertCode(c.cmd("NOOP"), 250)
            self.assertCode(c.starttls(), 220)
            self.assertCode(c.ehlo("post.tls"), 250)
            self.deliver(c, m)
        n, eml, env = self.be.find_message(mid(m))
        self.assertEqual(env[0], b"HELO post.tls")
        log = self.be.raw_log()
        self.assertNotIn(pre_helo.encode(), log)
        self.assertNotIn(pre_mail.encode(), log)

    def test_ehlo_and_starttls_in_one_write(self):
        """STARTTLS last in a pipelined group: answered after the EHLO, and
        the handshake starts only after its 220."""
        m = make_message(uniq("ehlo-starttls-pipe"))
        with SMTPClient(self.gw.port("submission")) as c:
            c.reply()
            c.send(b"EHLO pipe.client\r\nSTARTTLS\r\n")
            self.assertCode(c.reply(), 250)
            self.assertCode(c.reply(), 220)
            c.wrap()
            self.assertCode(c.ehlo(), 250)
            self.deliver(c, m)
        self.assertEqual(self.be.find_message(mid(m))[1], m)

    def test_mail_after_tls_needs_fresh_ehlo(self):
        with starttls_client(self.gw) as c:
            self.assertCode(c.cmd("MAIL FROM:<a@x>"), 503)
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("MAIL FROM:<a@x>"), 250)

    def test_second_starttls_refused(self):
        with starttls_client(self.gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("STARTTLS"), 503, 554)

    def test_starttls_with_argument_501(self):
        with SMTPClient(self.gw.port("submission")) as c:
            c.reply()
            c.ehlo()
            self.assertCode(c.cmd("STARTTLS now"), 501)
            self.assertCode(c.starttls(), 220)          # a plain one still works
            self.assertCode(c.ehlo(), 250)

    def _injection(self, listener):
        inj = uniq("inj")
        c = SMTPClient(self.gw.port(listener))
        self.addCleanup(c.close)
        self.assertCode(c.reply(), 220)
        self.assertCode(c.ehlo(), 250)
        c.send(b"STARTTLS\r\nMAIL FROM:<%s@x>\r\n" % inj.encode())
        r = c.reply()
        tls_ok = False
        if r.code == 220:
            c.buf = b""     # whatever else came in plaintext is ignored; only the backend matters
            tls_ok = c.try_wrap()
        if tls_ok:
            try:
                r = c.ehlo("after.injection")
                if r.code == 250:
                    r2 = c.cmd("MAIL FROM:<legit@x>")
                    if r2.code == 250:
                        c.cmd("RCPT TO:<r@x>")
                        c.cmd("RSET")
                    c.cmd("QUIT")
            except (ConnectionClosed, OSError, ssl.SSLError):
                pass
        # a positive sync point: a full delivery through a fresh session
        with tls_client(self.gw) as c2:
            c2.ehlo()
            self.deliver(c2, make_message(uniq("inj-sync")))
        lib.assert_never(lambda: inj.encode() in self.be.raw_log(), 0.5,
                         "the injected MAIL reached the backend")
        self.assertFalse(any(inj.encode() in e for e in self.be.all_envelopes()))

    def test_starttls_command_injection_submission(self):
        self._injection("submission")

    def test_starttls_command_injection_opportunistic(self):
        self._injection("opportunistic")


class BackendContactTest(lib.IntegrationTest):
    """When the gateway opens a backend connection."""

    def test_starttls_listener_connects_backend_only_after_starttls(self):
        be, gw = self.setup_pair(listeners=(("submission", "starttls", {}),))
        with SMTPClient(gw.port("submission")) as c:
            c.reply()
            c.ehlo()
            self.assertCode(c.cmd("MAIL FROM:<a@x>"), 530)
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        lib.assert_never(lambda: be.connections() > 0, 0.5, "a backend connection before STARTTLS")
        with starttls_client(gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.assertEqual(be.connections(), 1)

    def test_implicit_listener_connects_backend_only_after_handshake(self):
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),))
        c = SMTPClient(gw.port("smtps"))
        self.addCleanup(c.close)
        c.send(b"\x16\x03\x01\x00\x05hello")      # a broken ClientHello
        c.wait_closed(timeout=8)
        lib.assert_never(lambda: be.connections() > 0, 0.5, "a backend connection without a handshake")
        with tls_client(gw) as c:
            self.assertEqual(be.connections(), 1)

    def test_opportunistic_connects_backend_at_once(self):
        be, gw = self.setup_pair(listeners=(("opportunistic", "starttls", {"require_tls": "no"}),))
        base = be.connections()          # the readiness probe may have caused one
        with SMTPClient(gw.port("opportunistic")) as c:
            r = c.reply()
            self.assertCode(r, 220)
            self.assertIn("backend.test", r.text, "the backend's banner is relayed")
            self.assertGreater(be.connections(), base)


# ============================================================================
# opportunistic STARTTLS (require_tls = no)

class OpportunisticTest(lib.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        cls.be, cls.gw = cls.start_shared(backend_args=("--ext", EXT_ALL))

    def setUp(self):
        super().setUp()
        self.check_shared_alive()

    def test_plaintext_ehlo_adds_starttls_and_strips_auth_xclient(self):
        with SMTPClient(self.gw.port("opportunistic")) as c:
            self.assertCode(c.reply(), 220)
            r = c.ehlo()
            self.assertCode(r, 250)
            kw = r.keywords()
            self.assertEqual(kw.count("STARTTLS"), 1, r)
            for k in ("AUTH", "XCLIENT", "XFORWARD"):
                self.assertNotIn(k, kw, r)
            for k in ("8BITMIME", "CHUNKING", "PIPELINING"):
                self.assertIn(k, kw, r)

    def test_plaintext_delivery(self):
        m = make_message(uniq("opp-plain"))
        with SMTPClient(self.gw.port("opportunistic")) as c:
            c.reply()
            c.ehlo("plain.mta")
            self.deliver(c, m)
        n, eml, env = self.be.find_message(mid(m))
        self.assertEqual(eml, m)
        self.assertEqual(env[0], b"HELO plain.mta")

    def test_starttls_then_delivery_inside_tls(self):
        m = make_message(uniq("opp-tls"))
        with starttls_client(self.gw, "opportunistic") as c:
            r = c.ehlo("tls.mta")
            self.assertCode(r, 250)
            kw = r.keywords()
            self.assertNotIn("STARTTLS", kw, r)
            self.assertNotIn("XCLIENT", kw, r)
            self.assertNotIn("XFORWARD", kw, r)
            self.assertIn("AUTH", kw, r)
            self.deliver(c, m)
        n, eml, env = self.be.find_message(mid(m))
        self.assertEqual(eml, m)
        self.assertEqual(env[0], b"HELO tls.mta")

    def test_ehlo_rewrite_on_implicit_and_submission(self):
        with tls_client(self.gw) as c:
            kw = c.ehlo().keywords()
            self.assertIn("AUTH", kw)
            for k in ("STARTTLS", "XCLIENT", "XFORWARD"):
                self.assertNotIn(k, kw)
        with starttls_client(self.gw) as c:
            kw = c.ehlo().keywords()
            self.assertIn("AUTH", kw)
            for k in ("STARTTLS", "XCLIENT", "XFORWARD"):
                self.assertNotIn(k, kw)

    def test_xclient_xforward_never_forwarded_even_when_advertised(self):
        marks = []

        def spoof(c):
            a, b = uniq("xc"), uniq("xf")
            marks.extend([a, b])
            self.assertCode(c.cmd("XCLIENT ADDR=6.6.6.6 NAME=%s" % a), 502)
            self.assertCode(c.cmd("XFORWARD ADDR=6.6.6.7 NAME=%s" % b), 502)
            self.deliver(c, make_message(uniq("xsync")))

        with tls_client(self.gw) as c:
            c.ehlo()
            spoof(c)
        with starttls_client(self.gw) as c:
            c.ehlo()
            spoof(c)
        with SMTPClient(self.gw.port("opportunistic")) as c:
            c.reply()
            c.ehlo()
            spoof(c)
        log = self.be.raw_log()
        for mk in marks:
            self.assertNotIn(mk.encode(), log)
        self.assertNotIn(b"XCLIENT", log)
        self.assertNotIn(b"XFORWARD", log)

    def test_auth_plain_initial_response_relayed(self):
        with tls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("AUTH PLAIN AHVzZXIAcGFzcw=="), 235)
            self.deliver(c, make_message(uniq("authed")))

    def test_auth_334_continuations_relayed(self):
        """AUTH LOGIN and AUTH PLAIN without an initial response: the
        client's answers to 334 are carried to the backend."""
        with starttls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("AUTH LOGIN"), 334)
            self.assertCode(c.cmd("dXNlcg=="), 334)
            self.assertCode(c.cmd("cGFzcw=="), 235)
        with tls_client(self.gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("AUTH PLAIN"), 334)
            self.assertCode(c.cmd("AHVzZXIAcGFzcw=="), 235)
            self.assertCode(c.cmd("NOOP"), 250)


# ============================================================================
# SMTP smuggling: bare CR / LF in DATA against a vulnerable backend

SMUGGLE_TERMS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"]


def smuggling_body(marker, term):
    return (b"Subject: " + marker + b"\r\n\r\nhello" + term +
            b"MAIL FROM:<smuggled@x>\r\nRCPT TO:<victim@x>\r\nDATA\r\n"
            b"From: <ceo@bank.test>\r\n\r\nsmuggled body\r\n")


class SmugglingTest(lib.IntegrationTest):

    def _send(self, gw, body):
        """One session: EHLO, MAIL, RCPT, DATA, body + .CRLF; returns the
        reply to the end of data (or None if the connection dropped)."""
        with tls_client(gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("MAIL FROM:<honest@x>"), 250)
            self.assertCode(c.cmd("RCPT TO:<r@x>"), 250)
            self.assertCode(c.cmd("DATA"), 354)
            c.send(body + b".\r\n")
            try:
                r = c.reply()
            except ConnectionClosed:
                return None
            try:
                c.cmd("QUIT")
            except (ConnectionClosed, OSError, ssl.SSLError):
                pass
            return r

    def test_normalize_mode_one_message_no_smuggled_sender(self):
        be, gw = self.setup_pair(backend_args=("--lenient",))
        for i, term in enumerate(SMUGGLE_TERMS):
            with self.subTest(term=term):
                before = be.count()
                r = self._send(gw, smuggling_body(uniq("smuggle").encode(), term))
                self.assertIsNotNone(r, "connection dropped after the body")
                self.assertCode(r, 250)
                be.wait_count(before + 1)
                lib.assert_never(lambda: be.count() > before + 1, 0.3, "a second (smuggled) message")
                for env in be.all_envelopes():
                    self.assertNotIn(b"smuggled@x", env)
                self.assertIn(b"MAIL FROM:<honest@x>", be.message(before + 1)[1])

    def test_normalize_mode_content_as_the_gateway_read_it(self):
        be, gw = self.setup_pair(backend_args=("--lenient",))
        for term in SMUGGLE_TERMS:
            with self.subTest(term=term):
                marker = uniq("norm").encode()
                body = smuggling_body(marker, term)
                r = self._send(gw, body)
                self.assertIsNotNone(r)
                self.assertCode(r, 250)
                n, eml, env = be.find_message(marker)
                self.assertIn(eml, normalized(body))

    def test_reject_mode_5xx_and_nothing_delivered(self):
        be, gw = self.setup_pair(backend_args=("--lenient",), gateway={"bare_newlines": "reject"})
        for term in SMUGGLE_TERMS:
            with self.subTest(term=term):
                r = self._send(gw, smuggling_body(uniq("rej").encode(), term))
                self.assertIsNotNone(r, "connection dropped instead of a 5xx")
                self.assertCodeClass(r, 5)
        # sync: a clean message must be the first and only one delivered
        m = make_message(uniq("clean"))
        with tls_client(gw) as c:
            c.ehlo()
            self.deliver(c, m)
        be.wait_count(1)
        lib.assert_never(lambda: be.count() > 1, 0.3, "a rejected message was delivered")
        self.assertEqual(be.message(1)[0], m)
        for env in be.all_envelopes():
            self.assertNotIn(b"smuggled@x", env)

    def test_reject_mode_clean_messages_pass(self):
        be, gw = self.setup_pair(gateway={"bare_newlines": "reject"})
        m = make_message(uniq("clean-reject-mode"))
        with tls_client(gw) as c:
            c.ehlo()
            self.deliver(c, m)
        self.assertEqual(be.wait_message(1)[0], m)


# ============================================================================
# the backend misbehaves

class BackendFailureTest(lib.IntegrationTest):

    def test_backend_refused_421(self):
        gw = self.start_gateway(lib.fmt_addr("127.0.0.1", lib.closed_port()))
        with SMTPClient(gw.port("smtps"), tls=True) as c:       # TLS first, then 421
            self.assertCode(c.reply(), 421)
            c.wait_closed()
        with SMTPClient(gw.port("opportunistic")) as c:
            self.assertCode(c.reply(), 421)
            c.wait_closed()
        with SMTPClient(gw.port("submission")) as c:
            self.assertCode(c.reply(), 220)              # the gateway's own greeting
            c.ehlo()
            self.assertCode(c.starttls(), 220)
            try:
                c.send(b"EHLO client.test\r\n")
            except OSError:
                pass                                     # the 421 may already be there
            self.assertCode(c.reply(), 421)
            c.wait_closed()

    def test_backend_closes_after_data_421_never_250(self):
        be, gw = self.setup_pair(backend_args=("--close-after-data",))
        with tls_client(gw) as c:
            c.ehlo()
            self.assertCode(c.cmd("MAIL FROM:<a@x>"), 250)
            self.assertCode(c.cmd("RCPT TO:<b@x>"), 250)
            self.assertCode(c.cmd("DATA"), 354)
            c.send(dot_stuff(make_message("closed")))
            self.assertCode(c.reply(), 421)
            c.wait_closed()

    def test_backend_dies_mid_session_421(self):
        be, gw = self.setup_pair()
        with tls_client(gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.assertEqual(be.stop(), 0)
            try:
                c.send(b"NOOP\r\n")
            except OSError:
                pass
            self.assertCode(c.reply(), 421)
            c.wait_closed()

    def test_client_gone_mid_data_nothing_delivered(self):
        be, gw = self.setup_pair(listeners=(("smtps", "implicit", {}),))
        with tls_client(gw) as c:
            c.ehlo()
            c.cmd("MAIL FROM:<a@x>")
            c.cmd("RCPT TO:<b@x>")
            self.assertCode(c.cmd("DATA"), 354)
            c.send(b"Subject: cut\r\n\r\npartial body without an end\r\n")
        # the gateway must drop the backend session, not finish the message
        lib.wait_until(lambda: be.closed_connections() >= 1, 10, "the backend connection to close")
        lib.assert_never(lambda: be.count() > 0, 0.3, "a partial message was delivered")

    def test_backend_never_answers_data_421_after_data_timeout(self):
        be, gw = self.setup_pair(backend_args=("--no-reply-after-data",), timeouts={"data": "2"})
        with tls_client(gw) as c:
            c.ehlo()
            c.cmd("MAIL FROM:<a@x>")
            c.cmd("RCPT TO:<b@x>")
            self.assertCode(c.cmd("DATA"), 354)
            c.send(dot_stuff(make_message("stalled")))
            t0 = time.monotonic()
            self.assertCode(c.reply(timeout=15), 421)
            self.assertLess(time.monotonic() - t0, 12)
            c.wait_closed()

    def test_rfc821_backend_helo_fallback(self):
        be, gw = self.setup_pair(backend_args=("--no-ehlo",))
        m = make_message(uniq("helo-fallback"))
        with tls_client(gw) as c:
            r = c.ehlo("old.client")
            self.assertCode(r, 250)
            self.assertNotIn("STARTTLS", r.keywords())
            self.deliver(c, m)
        eml, env = be.wait_message(1)
        self.assertEqual(eml, m)
        self.assertEqual(env[0], b"HELO old.client")
        m2 = make_message(uniq("helo-fallback-587"))
        with starttls_client(gw) as c:
            self.assertCode(c.ehlo("old.client2"), 250)
            self.deliver(c, m2)
        self.assertEqual(be.wait_message(2)[0], m2)

    def test_backend_554_banner_relayed(self):
        be, gw = self.setup_pair(backend_args=("--banner", "554 5.3.2 go away"))
        with SMTPClient(gw.port("smtps"), tls=True) as c:
            self.assertCode(c.reply(), 554)
        with SMTPClient(gw.port("opportunistic")) as c:
            self.assertCode(c.reply(), 554)

    def test_backend_garbage_banner_421(self):
        be, gw = self.setup_pair(backend_args=("--banner", "hello, this is not SMTP"))
        with SMTPClient(gw.port("smtps"), tls=True) as c:
            self.assertCode(c.reply(), 421)
            c.wait_closed()

    def test_slow_backend_replies_stay_in_order(self):
        be, gw = self.setup_pair(backend_args=("--reply-delay", "0.15"))
        m = make_message(uniq("slow"))
        with tls_client(gw) as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@x>\r\nXCLIENT ADDR=6.6.6.3\r\nRCPT TO:<reject@x>\r\n"
                   b"FOO\r\nRCPT TO:<b@x>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.replies(6)], [250, 502, 550, 502, 250, 354])
            c.send(dot_stuff(m))
            self.assertCode(c.reply(), 250)
        self.assertEqual(be.wait_message(1)[0], m)


# ============================================================================
# timeouts, connection cap, signals, config check

class LifecycleTest(lib.IntegrationTest):

    def test_idle_client_gets_421(self):
        be, gw = self.setup_pair(timeouts={"command": "2"})
        for listener in ("smtps", "submission"):
            with self.subTest(listener=listener):
                if listener == "smtps":
                    c = tls_client(gw)
                else:
                    c = SMTPClient(gw.port(listener))
                    c.reply()
                with c:
                    self.assertCode(c.ehlo(), 250)
                    t0 = time.monotonic()
                    self.assertCode(c.reply(timeout=10), 421)
                    took = time.monotonic() - t0
                    self.assertGreater(took, 1.0)
                    self.assertLess(took, 8.0)
                    c.wait_closed()

    def test_stalled_handshake_closed(self):
        be, gw = self.setup_pair(timeouts={"handshake": "2"},
                                 listeners=(("smtps", "implicit", {}),))
        c = SMTPClient(gw.port("smtps"))
        self.addCleanup(c.close)
        t0 = time.monotonic()
        c.wait_closed(timeout=10)
        self.assertLess(time.monotonic() - t0, 9)
        self.assertEqual(be.connections(), 0)

    def test_connection_cap(self):
        be, gw = self.setup_pair(gateway={"max_connections": "2"},
                                 listeners=(("submission", "starttls", {}),))
        port = gw.port("submission")
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        # The readiness probe's connection may not be released yet: retried.
        lib.hold_greeted(port, 2, held)
        t0 = time.monotonic()
        with SMTPClient(port) as c3:
            self.assertCode(c3.reply(timeout=5), 421)
            self.assertLess(time.monotonic() - t0, 2.0)
            c3.wait_closed()
        held[0].cmd("QUIT")
        held[0].close()
        lib.wait_until(lambda: lib.greets(port), 10, "a slot to free up after a close")

    def test_sigterm_idle_exits_zero(self):
        be, gw = self.setup_pair()
        gw.signal(signal.SIGTERM)
        self.assertEqual(gw.wait_exit(10), 0)

    def test_sigterm_drains_open_session_then_421(self):
        be, gw = self.setup_pair(timeouts={"drain": "3"})
        m = make_message(uniq("drain"))
        c = tls_client(gw)
        self.addCleanup(c.close)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<d@x>"), 250)
        self.assertCode(c.cmd("RCPT TO:<r@x>"), 250)
        gw.signal(signal.SIGTERM)
        t0 = time.monotonic()
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(m))
        self.assertCode(c.reply(), 250)                 # the open transaction finishes
        self.assertEqual(be.wait_message(1)[0], m)
        try:
            r = c.reply(timeout=10)                     # then 421 by the drain deadline
            self.assertCode(r, 421)
        except ConnectionClosed:
            self.fail("connection closed without a 421 at the end of the drain")
        self.assertLess(time.monotonic() - t0, 3 + 4)
        self.assertEqual(gw.wait_exit(8), 0)

    def test_config_check(self):
        be = self.start_backend()
        gw = self.make_gateway(be.addr)
        r = subprocess.run([lib.gateway_bin(), "-t", "-c", gw.config_path], capture_output=True,
                           timeout=10)
        self.assertEqual(r.returncode, 0, r)
        bad = os.path.join(self.workdir, "bad.ini")
        lines = gw.config_text().split("\n")
        self.assertEqual(lines[0], "[gateway]")
        lines.insert(1, "no_such_key = 1")
        with open(bad, "w") as f:
            f.write("\n".join(lines))
        r = subprocess.run([lib.gateway_bin(), "-t", "-c", bad], capture_output=True, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(("%s:2:" % bad).encode(), r.stdout + r.stderr)
        r = subprocess.run([lib.gateway_bin(), "-c", bad], capture_output=True, timeout=10)
        self.assertNotEqual(r.returncode, 0, "the gateway started with an unknown key")


# ============================================================================
# certificates, IPv6

class TLSTest(lib.IntegrationTest):

    def _peer_der(self, gw, ctx):
        with SMTPClient(gw.port("smtps"), tls=True, ctx=ctx) as c:
            self.assertCode(c.reply(), 220)
            return c.sock.getpeercert(binary_form=True)

    def _der(self, path):
        with open(path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def test_ecdsa_and_rsa_certificates(self):
        cs = lib.certs()
        be, gw = self.setup_pair(tls={"cert": [cs.ec_cert, cs.rsa_cert], "key": [cs.ec_key, cs.rsa_key]})
        for name, suite, want in (("rsa", "ECDHE-RSA-AES128-GCM-SHA256", cs.rsa_cert),
                                  ("ecdsa", "ECDHE-ECDSA-AES128-GCM-SHA256", cs.ec_cert)):
            with self.subTest(client=name):
                ctx = lib.client_context()
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers(suite)
                self.assertEqual(self._peer_der(gw, ctx), self._der(want))
        self.assertIn(self._peer_der(gw, lib.client_context()),
                      (self._der(cs.rsa_cert), self._der(cs.ec_cert)))

    def test_rsa_only_gateway(self):
        cs = lib.certs()
        be, gw = self.setup_pair(tls={"cert": cs.rsa_cert, "key": cs.rsa_key})
        m = make_message(uniq("rsa"))
        with tls_client(gw) as c:
            self.assertEqual(c.sock.getpeercert(binary_form=True), self._der(cs.rsa_cert))
            c.ehlo()
            self.deliver(c, m)
        self.assertEqual(be.wait_message(1)[0], m)

    @unittest.skipUnless(lib.ipv6_available(), "no ::1")
    def test_ipv6_listener_and_backend(self):
        be = self.start_backend(host="::1")
        gw = self.start_gateway(be.addr, listeners=(("smtps6", "implicit", {"_host": "::1"}),
                                                    ("sub6", "starttls", {"_host": "::1"})))
        m = make_message(uniq("v6"))
        with SMTPClient(gw.port("smtps6"), host="::1", tls=True) as c:
            self.assertCode(c.reply(), 220)
            c.ehlo()
            self.deliver(c, m)
        self.assertEqual(be.wait_message(1)[0], m)
        with SMTPClient(gw.port("sub6"), host="::1") as c:
            self.assertCode(c.reply(), 220)
            c.ehlo()
            self.assertCode(c.starttls(), 220)
            self.assertCode(c.ehlo(), 250)


# ============================================================================
# real clients: curl, swaks, openssl s_client, smtplib

class SClient:
    """openssl s_client driven line by line; its stdout is read by a thread."""

    def __init__(self, port, starttls=False, workdir="."):
        args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-quiet", "-nocommands",
                "-CAfile", lib.certs().ca_bundle, "-verify_return_error",
                "-verify_hostname", "gw.test", "-servername", "gw.test"]
        if starttls:
            args += ["-starttls", "smtp", "-name", "sclient.test"]
        self.err_path = os.path.join(workdir, "s_client-%d.err" % port)
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.q = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in iter(self.p.stdout.readline, b""):
            self.q.put(line)
        self.q.put(None)

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def reply(self, timeout=10):
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise Timeout("s_client: no reply in %ss (have %r); stderr:\n%s"
                              % (timeout, lines, self.stderr()))
            if line is None:
                raise ConnectionClosed("s_client ended (have %r); stderr:\n%s" % (lines, self.stderr()))
            m = re.match(rb"^(\d{3})([ -])(.*?)\r?\n?$", line)
            if not m:
                continue                      # s_client's own chatter
            lines.append(m.group(3).decode(errors="replace"))
            if m.group(2) == b" ":
                return lib.Reply(int(m.group(1)), lines)

    def cmd(self, line, timeout=10):
        self.send(line.encode() + b"\r\n")
        return self.reply(timeout)

    def stderr(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def finish(self, timeout=10):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            raise Timeout("s_client did not exit")
        finally:
            self.err.close()


class RealClientsTest(lib.SharedGatewayTest):

    def _check(self, marker, m, mail_from, rcpt):
        n, eml, env = self.be.find_message(mid(m))
        self.assertEqual(eml, m, "message %d differs from what the client sent" % n)
        # smtplib sends "mail FROM:" / "rcpt TO:": compare case-insensitively
        self.assertTrue(env[1].upper().startswith(b"MAIL FROM:<%s>" % mail_from.upper().encode()), env)
        self.assertEqual([e.upper() for e in env[2:]], [b"RCPT TO:<%s>" % rcpt.upper().encode()])

    def _run(self, args, timeout=30):
        r = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, "%s failed (%d):\nstdout: %s\nstderr: %s" % (
            args[0], r.returncode, r.stdout.decode(errors="replace")[-3000:],
            r.stderr.decode(errors="replace")[-3000:]))
        return r

    @unittest.skipUnless(has_tool("curl"), "curl not installed")
    def test_curl(self):
        cases = [("smtps", "smtps", []), ("submission", "smtp", ["--ssl-reqd"]),
                 ("alt", "smtp", ["--ssl-reqd"]), ("opportunistic", "smtp", ["--ssl-reqd"])]
        for listener, scheme, extra in cases:
            with self.subTest(listener=listener):
                marker = uniq("curl-" + listener)
                m = make_message(marker)
                path = os.path.join(self.workdir, marker + ".eml")
                with open(path, "wb") as f:
                    f.write(m)
                self._run(["curl", "-sS", "--max-time", "20", "--cacert", lib.certs().ca_bundle,
                           "--url", "%s://127.0.0.1:%d/curl.client" % (scheme, self.gw.port(listener)),
                           "--mail-from", "curl@client.test", "--mail-rcpt", "r@backend.test",
                           "--upload-file", path] + extra)
                self._check(marker, m, "curl@client.test", "r@backend.test")

    @unittest.skipUnless(has_tool("swaks"), "swaks not installed")
    def test_swaks(self):
        cases = [("smtps", ["--tls-on-connect"]), ("submission", ["--tls"]),
                 ("alt", ["--tls"]), ("opportunistic", ["--tls"])]
        for listener, extra in cases:
            with self.subTest(listener=listener):
                marker = uniq("swaks-" + listener)
                m = make_message(marker)
                path = os.path.join(self.workdir, marker + ".eml")
                with open(path, "wb") as f:
                    f.write(m[:-2])          # swaks adds the final CRLF itself
                self._run(["swaks", "--server", "127.0.0.1", "--port", str(self.gw.port(listener)),
                               "--from", "swaks@client.test", "--to", "r@backend.test",
                               "--helo", "swaks.client", "--data", "@" + path,
                               "--timeout", "20"] + extra)
                self._check(marker, m, "swaks@client.test", "r@backend.test")

    @unittest.skipUnless(has_tool("openssl"), "openssl not installed")
    def test_openssl_s_client(self):
        for listener, starttls in (("smtps", False), ("submission", True), ("opportunistic", True)):
            with self.subTest(listener=listener):
                marker = uniq("sclient-" + listener)
                m = make_message(marker)
                s = SClient(self.gw.port(listener), starttls=starttls, workdir=self.workdir)
                try:
                    if not starttls:
                        self.assertCode(s.reply(), 220)
                    self.assertCode(s.cmd("EHLO sclient.test"), 250)
                    self.assertCode(s.cmd("MAIL FROM:<sc@client.test>"), 250)
                    self.assertCode(s.cmd("RCPT TO:<r@backend.test>"), 250)
                    self.assertCode(s.cmd("DATA"), 354)
                    s.send(dot_stuff(m))
                    self.assertCode(s.reply(), 250)
                    self.assertCode(s.cmd("QUIT"), 221)
                    self.assertEqual(s.finish(), 0, s.stderr())
                finally:
                    if s.p.poll() is None:
                        s.p.kill()
                        s.p.wait(5)
                self._check(marker, m, "sc@client.test", "r@backend.test")

    def test_smtplib(self):
        ctx = lib.client_context()
        cases = [("smtps", "ssl"), ("submission", "starttls"), ("alt", "starttls"),
                 ("opportunistic", "starttls")]
        for listener, how in cases:
            with self.subTest(listener=listener):
                marker = uniq("smtplib-" + listener)
                m = make_message(marker)
                port = self.gw.port(listener)
                if how == "ssl":
                    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=20)
                else:
                    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
                with s:
                    if how == "starttls":
                        s.ehlo("smtplib.client")
                        self.assertTrue(s.has_extn("starttls"))
                        code, _ = s.starttls(context=ctx)
                        self.assertEqual(code, 220)
                    code, _ = s.ehlo("smtplib.client")
                    self.assertEqual(code, 250)
                    self.assertFalse(s.has_extn("starttls"))
                    refused = s.sendmail("py@client.test", ["r@backend.test"], m)
                    self.assertEqual(refused, {})
                self._check(marker, m, "py@client.test", "r@backend.test")


if __name__ == "__main__":
    unittest.main()
