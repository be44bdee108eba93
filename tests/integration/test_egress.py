"""Egress listeners: a local app speaks plaintext SMTP to the gateway, which
carries it over TLS (STARTTLS or implicit), with AUTH, to a smarthost.

The smarthost is tests/smarthost.py with certificates from a CA made for
the run (lib.relay_certs(): relay.test, a wrong name, a self-signed one).
Its raw log marks where TLS began (=== TLS ===), so every test that fails
the upstream checks what reached it before TLS (only EHLO and STARTTLS,
never MAIL, AUTH or a body) and after it (only EHLO, and AUTH where AUTH
is what failed). A port the gateway must not fall back to is a second
smarthost that must see no connection at all. Connect failures, the only
reason to try the next port, are a closed port (refused) and lib.Blackhole
(a full accept queue on loopback: the SYN is dropped, connect() times out);
a smarthost that accepts and stays silent is not one.

Real clients as the app: swaks, curl, smtplib, msmtp, and a real Postfix
relaying through the gateway (relayhost). Every message is compared byte
for byte at the smarthost.

Run with tests/integration/run.py (TEST_FILTER=test_egress for this file).
"""

import base64
import os
import re
import smtplib
import subprocess
import time
import unittest
import uuid

import lib
from lib import SMTPClient, dot_stuff, has_tool, make_message, mid, uniq

# Never before TLS: commands, credentials, message content.
SENSITIVE = (b"MAIL", b"RCPT", b"DATA", b"BDAT", b"AUTH", b"RSET", b"From:", b"Subject:")


def lines(data):
    """CRLF lines of a byte string (the last, unterminated part too)."""
    out = data.split(b"\r\n")
    if out and out[-1] == b"":
        out.pop()
    return out


class EgressBase(lib.IntegrationTest):
    """Smarthosts and egress gateways for one test, with cleanups."""

    def smarthost(self, *args, name="smarthost", cert="relay", port=0):
        certargs = lib.relay_certs().args(cert) if cert else []
        sh = lib.Smarthost(self.workdir, certargs + list(args), name=name, port=port)
        self._procs.append(sh)
        self.addCleanup(sh.stop)
        return sh.start()

    def password_file(self, password=lib.RELAY_PASSWORD, name="relay-password"):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(password + "\n")
        os.chmod(path, 0o600)
        return path

    def upstream(self, ports, **kw):
        """[upstream:relay] keys: the test CA, server_name relay.test, AUTH
        PLAIN as apikey with the right password, helo out.test; kw
        overrides (None removes a key)."""
        u = {"host": "127.0.0.1", "ports": ports, "ca_file": lib.relay_certs().ca,
             "server_name": "relay.test", "auth": "plain", "username": lib.RELAY_USER,
             "password_file": None, "helo": "out.test"}
        u.update(kw)
        if u.get("auth") not in (None, "none") and u["password_file"] is None:
            u["password_file"] = self.password_file()
        return {k: v for k, v in u.items() if v is not None}

    def egress(self, ports, listener=None, timeouts=None, name="gateway", **kw):
        gw = lib.EgressGateway(self.workdir, self.upstream(ports, **kw), listener=listener,
                               timeouts=timeouts, name=name)
        self._procs.append(gw)
        self.addCleanup(gw.stop)
        return gw.start()

    # --- the app's side ---------------------------------------------------

    def app(self, gw, timeout=lib.REPLY_TIMEOUT):
        return SMTPClient(gw.port_out, timeout=timeout)

    def greeted(self, gw):
        """An app session past the gateway's 220 (asserted)."""
        c = self.app(gw)
        r = c.reply()
        if r.code != 220:
            c.close()
            self.fail("the app's greeting: %r" % r)
        self.assertEqual(r.lines, ["app-gw.test ESMTP"])
        return c

    def expect_refused(self, gw, enhanced=r"4\.7\.0", timeout=lib.REPLY_TIMEOUT):
        """An app session whose greeting is 421 with an enhanced code
        matching `enhanced` (a regex), then a close."""
        with self.app(gw, timeout=timeout) as c:
            r = c.reply()
            self.assertCode(r, 421)
            self.assertRegex(r.lines[0], r"^%s app-gw\.test " % enhanced)
            c.wait_closed()
        return r

    def send_message(self, c, m, mail_from="<app@client.test>", rcpts=("<rcpt@relay.test>",)):
        return self.deliver(c, m, mail_from=mail_from, rcpts=rcpts)

    def check_stored(self, sh, m, mail_from=b"MAIL FROM:<app@client.test>",
                     rcpts=(b"RCPT TO:<rcpt@relay.test>",)):
        n, eml, env = sh.find_message(mid(m))
        self.assertEqual(eml, m, "message %d differs at the smarthost" % n)
        self.assertEqual(env[0], b"HELO out.test")
        self.assertEqual(env[1], mail_from)
        self.assertEqual(env[2:], list(rcpts))
        return n

    # --- what the smarthost saw -----------------------------------------------

    def conns(self, sh, n):
        """The smarthost's n connections (waits until all n are closed)."""
        sh.wait_closed(n)
        got = sh.conns()
        self.assertEqual(len(got), n, got)
        return got

    def assert_plain_clean(self, conn, expect=(b"EHLO out.test", b"STARTTLS")):
        """Before TLS the gateway said exactly `expect` (QUIT allowed), and
        nothing sensitive."""
        for word in SENSITIVE:
            self.assertNotIn(word, conn.plain, "%r before TLS: %r" % (word, conn.plain))
        got = [l for l in lines(conn.plain) if l != b"QUIT"]
        self.assertEqual(got, list(expect), "before TLS: %r" % conn.plain)

    def assert_tls_setup_only(self, conn, allowed=(b"EHLO out.test",)):
        """After TLS (if it came up) nothing but `allowed` (and QUIT)."""
        if conn.tls is None:
            return
        for l in lines(conn.tls):
            if l == b"QUIT" or l in allowed:
                continue
            if any(l.startswith(a) for a in allowed if a.endswith(b" ")):
                continue
            self.fail("after TLS the gateway sent %r (all: %r)" % (l, conn.tls))

    def assert_every_conn_clean(self, sh):
        """Every connection the smarthost had so far (one after another)
        said only EHLO and STARTTLS before TLS."""
        n = sh.connections()
        for conn in self.conns(sh, n):
            self.assert_plain_clean(conn)
            self.assertIsNotNone(conn.tls)

    def assert_untouched(self, sh, gw):
        """The gateway never tried sh's port: its log names every port it
        tries (and the last one in each session's closing line), and the
        smarthost saw no connection."""
        gw.wait_log(r'reason="')
        self.assertNotIn("127.0.0.1:%d" % sh.port, gw.log_text(), "%s was tried" % sh.name)
        self.assertEqual(sh.connections(), 0, "%s was connected to" % sh.name)


# ============================================================================
# delivery

class EgressDeliveryTest(EgressBase):

    def test_starttls_auth_plain(self):
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port])
        m1, m2 = make_message(uniq("plain-1")), make_message(uniq("plain-2"))
        with self.greeted(gw) as c:
            ehlo = c.ehlo("app.test")
            self.assertCode(ehlo, 250)
            self.assertEqual(ehlo.lines[0], "app-gw.test")
            kws = ehlo.keywords()
            for kw in ("PIPELINING", "8BITMIME", "SIZE", "ENHANCEDSTATUSCODES"):
                self.assertIn(kw, kws)
            self.assertNotIn("AUTH", kws)
            self.assertNotIn("STARTTLS", kws)
            self.assertIn("SIZE 52428800", ehlo.lines)
            self.send_message(c, m1)
            self.assertCode(c.cmd("NOOP"), 250)
            # the upstream's replies are the app's, a 550 too
            self.assertCode(c.cmd("MAIL FROM:<app@client.test>"), 250)
            self.assertCode(c.cmd("RCPT TO:<reject-me@relay.test>"), 550)
            self.assertCode(c.cmd("RSET"), 250)
            self.send_message(c, m2)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_stored(sh, m1)
        self.check_stored(sh, m2)
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        tls = lines(conn.tls)
        self.assertEqual(tls[0], b"EHLO out.test")
        self.assertTrue(tls[1].startswith(b"AUTH PLAIN "), tls[:3])
        self.assertEqual(base64.b64decode(tls[1][11:]), b"\0apikey\0s3cret")
        self.assertEqual(tls[2], b"RSET", "the app's EHLO is an RSET upstream")
        self.assertEqual(tls[3], b"MAIL FROM:<app@client.test>")
        self.assertEqual(sh.events(r"connection 1: sni (\S+)"), ["relay.test"])
        self.assertEqual(sh.events(r"connection 1: auth (.*)"), ["PLAIN apikey ok"])
        gw.wait_log(r'listener=outbound upstream=127\.0\.0\.1:%d upstream_tls=TLSv1\.[23] .*'
                    r'msgs=2 .*reason="quit"' % sh.port)

    def test_starttls_auth_login(self):
        """AUTH LOGIN; the password is the first line of password_file
        (CRLF-ended here, a second line ignored); the app says HELO."""
        sh = self.smarthost("--auth", "login")
        pw = os.path.join(self.workdir, "pw-crlf")
        with open(pw, "wb") as f:
            f.write(lib.RELAY_PASSWORD.encode() + b"\r\nnot part of it\n")
        gw = self.egress([sh.port], auth="login", password_file=pw)
        m = make_message(uniq("login"))
        with self.greeted(gw) as c:
            r = c.cmd("HELO app.test")
            self.assertEqual((r.code, r.lines), (250, ["app-gw.test"]))
            self.send_message(c, m)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_stored(sh, m)
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        tls = lines(conn.tls)
        self.assertEqual(tls[:2], [b"EHLO out.test", b"AUTH LOGIN"])
        self.assertEqual([base64.b64decode(x) for x in tls[2:4]], [b"apikey", b"s3cret"])
        self.assertEqual(sh.events(r"connection 1: auth (.*)"), ["LOGIN apikey ok"])

    def test_implicit_tls(self):
        """tls = implicit on a port that is not 465: TLS from the first
        byte, no STARTTLS, no AUTH (auth = none). Without helo the EHLO
        name upstream is [gateway] hostname."""
        sh = self.smarthost("--mode", "implicit")
        gw = self.egress([sh.port], tls="implicit", auth="none", helo=None)
        m = make_message(uniq("implicit"))
        with self.greeted(gw) as c:
            ehlo = c.ehlo("app.test")
            self.assertCode(ehlo, 250)
            self.assertNotIn("AUTH", ehlo.keywords())
            self.send_message(c, m)
            self.assertCode(c.cmd("QUIT"), 221)
        n, eml, env = sh.find_message(mid(m))
        self.assertEqual(eml, m)
        self.assertEqual(env, [b"HELO app-gw.test", b"MAIL FROM:<app@client.test>",
                               b"RCPT TO:<rcpt@relay.test>"])
        (conn,) = self.conns(sh, 1)
        self.assertEqual(conn.plain, b"", "plaintext on an implicit-TLS port")
        self.assertEqual(lines(conn.tls)[:3], [b"EHLO app-gw.test", b"RSET",
                                               b"MAIL FROM:<app@client.test>"])
        self.assertNotIn(b"STARTTLS", conn.tls)
        gw.wait_log(r"upstream=127\.0\.0\.1:%d upstream_tls=TLSv1" % sh.port)

    def test_ehlo_hides_auth_starttls_xclient_xforward(self):
        sh = self.smarthost("--auth", "plain", "--chunking", "--ext", "XCLIENT ADDR NAME PROTO",
                            "--ext", "XFORWARD NAME ADDR", "--ext", "DSN", "--ext", "SMTPUTF8")
        gw = self.egress([sh.port])
        with self.greeted(gw) as c:
            ehlo = c.ehlo("app.test")
            self.assertCode(ehlo, 250)
            self.assertEqual(ehlo.lines, ["app-gw.test", "PIPELINING", "8BITMIME", "SIZE 52428800",
                                          "ENHANCEDSTATUSCODES", "CHUNKING", "DSN", "SMTPUTF8"])
            # what is hidden is refused too
            for cmd in ("STARTTLS", "XCLIENT ADDR=10.0.0.1", "XFORWARD ADDR=10.0.0.1"):
                r = c.cmd(cmd)
                self.assertCodeClass(r, 5)
            self.assertCode(c.cmd("QUIT"), 221)
        (conn,) = self.conns(sh, 1)
        self.assertNotIn(b"XCLIENT", conn.tls)
        self.assertNotIn(b"XFORWARD", conn.tls)
        self.assertEqual(conn.tls.count(b"STARTTLS"), 0)

    def test_pipelining_and_bdat(self):
        sh = self.smarthost("--auth", "plain", "--chunking")
        gw = self.egress([sh.port])
        m1, m2 = make_message(uniq("pipelined")), make_message(uniq("bdat"))
        with self.greeted(gw) as c:
            self.assertIn("CHUNKING", c.ehlo("app.test").keywords())
            c.send(b"MAIL FROM:<app@client.test>\r\nRCPT TO:<rcpt@relay.test>\r\n"
                   b"RCPT TO:<reject-2@relay.test>\r\nDATA\r\n")
            codes = [r.code for r in c.replies(4)]
            self.assertEqual(codes, [250, 250, 550, 354])
            c.send(dot_stuff(m1))
            self.assertCode(c.reply(), 250)
            cut = len(m2) // 2
            c.send(b"MAIL FROM:<app@client.test>\r\nRCPT TO:<rcpt@relay.test>\r\n"
                   + b"BDAT %d\r\n" % cut + m2[:cut]
                   + b"BDAT %d LAST\r\n" % (len(m2) - cut) + m2[cut:] + b"QUIT\r\n")
            self.assertEqual([r.code for r in c.replies(5)], [250, 250, 250, 250, 221])
        self.check_stored(sh, m1)
        self.check_stored(sh, m2)

    def test_early_talker_waits_for_the_secured_upstream(self):
        """An app that talks before its greeting: nothing it said reaches
        the upstream before TLS (and AUTH); it is served after."""
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port])
        m = make_message(uniq("early"))
        with self.app(gw) as c:
            c.send(b"EHLO early.test\r\nMAIL FROM:<early@client.test>\r\n")
            g = c.reply()
            self.assertCode(g, 220)
            self.assertEqual(g.lines, ["app-gw.test ESMTP"])
            self.assertCode(c.reply(), 250)
            self.assertCode(c.reply(), 250)
            self.assertCode(c.cmd("RCPT TO:<rcpt@relay.test>"), 250)
            self.assertCode(c.cmd("DATA"), 354)
            c.send(dot_stuff(m))
            self.assertCode(c.reply(), 250)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_stored(sh, m, mail_from=b"MAIL FROM:<early@client.test>")
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        self.assertTrue(lines(conn.tls)[1].startswith(b"AUTH PLAIN "))

    def test_concurrent_apps(self):
        """Apps at once, each with its own upstream connection."""
        import threading
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([lib.closed_port(), sh.port])
        msgs = [make_message(uniq("concurrent-%d" % i)) for i in range(6)]
        errors = []

        def one(m):
            try:
                with smtplib.SMTP("127.0.0.1", gw.port_out, timeout=20) as s:
                    s.ehlo("app.test")
                    refused = s.sendmail("app@client.test", ["rcpt@relay.test"], m)
                    if refused:
                        errors.append(refused)
            except Exception as e:      # reported below
                errors.append(e)
        threads = [threading.Thread(target=one, args=(m,)) for m in msgs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        for m in msgs:
            n, eml, env = sh.find_message(mid(m))
            self.assertEqual(eml, m, "message %d differs at the smarthost" % n)
            self.assertEqual(env[0], b"HELO out.test")
            self.assertTrue(env[1].startswith(b"mail FROM:<app@client.test>"), env)
            self.assertEqual(env[2:], [b"rcpt TO:<rcpt@relay.test>"])
        self.assertEqual(sh.connections(), len(msgs))
        self.assertEqual(sh.events(r"auth (\S+ \S+) ok"), ["PLAIN apikey"] * len(msgs))

    def test_verify_no_takes_a_self_signed_certificate(self):
        sh = self.smarthost(cert="self_signed")
        gw = self.egress([sh.port], verify="no", ca_file=None, auth="none")
        gw.wait_log(r"warn upstream relay: verify = no")
        m = make_message(uniq("verify-no"))
        with self.greeted(gw) as c:
            self.assertCode(c.ehlo("app.test"), 250)
            self.send_message(c, m)
        self.check_stored(sh, m)

    def test_server_name_defaults_to_host(self):
        """Without server_name the name checked is host: 127.0.0.1 here, so
        a certificate for IP:127.0.0.1 passes and one for relay.test does
        not."""
        good = self.smarthost(cert="ip", name="ip-cert")
        gw = self.egress([good.port], server_name=None, auth="none")
        m = make_message(uniq("ip-name"))
        with self.greeted(gw) as c:
            self.assertCode(c.ehlo("app.test"), 250)
            self.send_message(c, m)
        self.check_stored(good, m)
        gw.stop()
        bad = self.smarthost(name="dns-cert")
        gw2 = self.egress([bad.port], server_name=None, auth="none", name="gateway2")
        self.expect_refused(gw2)
        gw2.wait_log(r"upstream 127\.0\.0\.1:%d: .*(IP address|hostname) mismatch" % bad.port)

    def test_no_ip_literal_in_sni(self):
        """Without server_name and with an address for host, no SNI is
        sent: RFC 6066 section 3 allows no IP literal in a HostName."""
        sh = self.smarthost(cert="ip")
        gw = self.egress([sh.port], server_name=None, auth="none")
        with self.greeted(gw) as c:
            self.assertCode(c.cmd("QUIT"), 221)
        self.conns(sh, 1)
        self.assertEqual(sh.events(r"connection 1: sni (\S+)"), ["-"])


# ============================================================================
# failures: 421 to the app, nothing sensitive upstream, no fallback

class EgressFailureTest(EgressBase):

    def test_no_starttls_offered(self):
        sh = self.smarthost("--no-starttls", "--auth", "plain")
        spare = self.smarthost(name="spare")
        gw = self.egress([sh.port, spare.port])
        self.expect_refused(gw)
        gw.wait_log(r"upstream does not offer STARTTLS")
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn, expect=(b"EHLO out.test",))
        self.assertIsNone(conn.tls)
        self.assert_untouched(spare, gw)

    def test_auth_offered_in_plaintext_without_starttls(self):
        """A server that offers AUTH in the clear and no STARTTLS (a
        downgrade by a man in the middle): no AUTH, 421."""
        sh = self.smarthost("--no-starttls", "--ext", "AUTH PLAIN LOGIN", "--auth", "plain")
        gw = self.egress([sh.port])
        self.expect_refused(gw)
        gw.wait_log(r"upstream does not offer STARTTLS")
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn, expect=(b"EHLO out.test",))
        self.assertNotIn(b"AUTH", sh.raw_log())

    def test_stalled_handshake(self):
        """A 220 to STARTTLS and then no handshake: 421 after [timeouts]
        handshake, not the next port."""
        sh = self.smarthost("--stall-tls")
        spare = self.smarthost(name="spare")
        gw = self.egress([sh.port, spare.port], timeouts={"handshake": "1"})
        t0 = time.monotonic()
        self.expect_refused(gw)
        self.assertGreater(time.monotonic() - t0, 0.8)
        gw.wait_log(r"upstream 127\.0\.0\.1:%d: TLS handshake timeout" % sh.port)
        (conn,) = self.conns(sh, 1)
        # what came after the 220 is the ClientHello, never SMTP
        self.assertTrue(conn.plain.startswith(b"EHLO out.test\r\nSTARTTLS\r\n"), conn.plain)
        for word in SENSITIVE:
            self.assertNotIn(word, conn.plain)
        self.assertIsNone(conn.tls)
        self.assert_untouched(spare, gw)

    def test_app_leaves_during_the_upstream_setup(self):
        """An app that disconnects before its greeting: the upstream
        connection is dropped, nothing is relayed, the gateway serves the
        next app."""
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port])
        for i, data in enumerate((b"", b"EHLO gone.test\r\nMAIL FROM:<gone@client.test>\r\n")):
            with self.app(gw) as c:
                if data:
                    c.send(data)
            sh.wait_closed(i + 1)       # one at a time, for the log
            gw.wait_log(r'(?s)(reason="client closed".*){%d}' % (i + 1))
        self.assertTrue(gw.alive())
        for conn in self.conns(sh, 2):
            self.assert_plain_clean(conn)
            self.assert_tls_setup_only(conn, (b"EHLO out.test", b"AUTH PLAIN "))
        self.assertNotIn(b"gone", sh.raw_log())
        m = make_message(uniq("after-leavers"))
        with self.greeted(gw) as c:
            self.assertCode(c.ehlo("app.test"), 250)
            self.send_message(c, m)
        self.check_stored(sh, m)

    def test_starttls_refused(self):
        sh = self.smarthost("--starttls-reply", "454 4.7.0 TLS not available due to local problem")
        spare = self.smarthost(name="spare")
        gw = self.egress([sh.port, spare.port])
        self.expect_refused(gw)
        gw.wait_log(r"upstream refused STARTTLS")
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        self.assertIsNone(conn.tls)
        self.assert_untouched(spare, gw)

    def test_response_injection_after_starttls(self):
        """'220 Ready to start TLS\\r\\n250-PIPELINING\\r\\n' in one write:
        the bytes after the 220 came in plaintext: abort, no handshake."""
        sh = self.smarthost("--inject", "--auth", "plain")
        spare = self.smarthost(name="spare")
        gw = self.egress([sh.port, spare.port])
        self.expect_refused(gw)
        gw.wait_log(r"upstream sent bytes after its 220 to STARTTLS")
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        self.assertIsNone(conn.tls, "the gateway went on with the handshake")
        self.assertEqual(len(sh.events(r"connection 1: injecting")), 1)
        self.assert_untouched(spare, gw)

    def test_injection_of_a_whole_reply(self):
        """A full fake EHLO reply injected: same outcome."""
        sh = self.smarthost("--inject", r"250-relay.test\r\n250 AUTH PLAIN\r\n")
        gw = self.egress([sh.port])
        self.expect_refused(gw)
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        self.assertIsNone(conn.tls)

    def _cert_failure(self, cert, log_pattern, **upstream):
        """ports = closed, bad certificate, good: the closed port is passed
        over, the certificate fails: 421, and the good port is never tried.
        Twice: a port that failed TLS is not remembered as one that worked
        (the second session starts at the closed port again)."""
        closed = lib.closed_port()
        bad = self.smarthost("--auth", "plain", cert=cert, name="bad-cert")
        good = self.smarthost("--auth", "plain", name="good")
        gw = self.egress([closed, bad.port, good.port], **upstream)
        for i in (1, 2):
            self.expect_refused(gw)
            gw.wait_log(r"(?s)(upstream 127\.0\.0\.1:%d: [^\n]*%s.*){%d}"
                        % (bad.port, log_pattern, i))
            conns = self.conns(bad, i)
            self.assert_plain_clean(conns[-1])
            self.assertIsNone(conns[-1].tls, "the smarthost saw the handshake complete")
            self.assertEqual(len(bad.events(r"connection %d: tls handshake failed" % i)), 1)
            self.assertEqual(gw.log_count(r"backend 127\.0\.0\.1:%d: Connection refused"
                                          % closed), i)
        self.assert_untouched(good, gw)
        self.assertEqual(bad.count(), 0)

    def test_wrong_name_certificate_no_fallback(self):
        self._cert_failure("wrong_name", "hostname mismatch")

    def test_self_signed_certificate_no_fallback(self):
        self._cert_failure("self_signed", "self.signed certificate")

    def test_untrusted_ca_no_fallback(self):
        """No ca_file: the system store, which does not know the test CA."""
        self._cert_failure("relay", "unable to get local issuer certificate", ca_file=None)

    def test_implicit_tls_wrong_name_no_fallback(self):
        """On an implicit-TLS port a certificate that fails means not one
        byte of SMTP upstream."""
        bad = self.smarthost("--mode", "implicit", cert="wrong_name", name="bad-cert")
        good = self.smarthost("--mode", "implicit", name="good")
        gw = self.egress([bad.port, good.port], tls="implicit")
        self.expect_refused(gw)
        gw.wait_log(r"upstream 127\.0\.0\.1:%d: [^\n]*hostname mismatch" % bad.port)
        (conn,) = self.conns(bad, 1)
        self.assertEqual(conn.plain, b"")
        self.assertIsNone(conn.tls)
        self.assert_untouched(good, gw)

    def test_implicit_tls_against_a_plaintext_greeting(self):
        """tls = implicit on a STARTTLS port: the 220 is no TLS record."""
        sh = self.smarthost()
        spare = self.smarthost(name="spare", *("--mode", "implicit"))
        gw = self.egress([sh.port, spare.port], tls="implicit")
        self.expect_refused(gw)
        gw.wait_log(r"upstream 127\.0\.0\.1:%d: " % sh.port)
        (conn,) = self.conns(sh, 1)
        for word in SENSITIVE:
            self.assertNotIn(word, conn.plain)
        self.assertIsNone(conn.tls)
        self.assert_untouched(spare, gw)

    def test_banner_not_220(self):
        sh = self.smarthost("--banner", "554 5.7.1 relay.test no service for you")
        gw = self.egress([sh.port])
        self.expect_refused(gw)
        gw.wait_log(r"greeted with other than 220")
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn, expect=())

    def _auth_failure(self, mech):
        sh = self.smarthost("--auth", mech)
        spare = self.smarthost("--auth", mech, name="spare")
        gw = self.egress([sh.port, spare.port], auth=mech,
                         password_file=self.password_file("not-the-password", "wrong-pw"))
        self.expect_refused(gw)
        gw.wait_log(r"upstream refused AUTH %s with 535" % mech.upper())
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        self.assertIsNotNone(conn.tls)
        allowed = (b"EHLO out.test", b"AUTH PLAIN ") if mech == "plain" else \
            (b"EHLO out.test", b"AUTH LOGIN", base64.b64encode(b"apikey"),
             base64.b64encode(b"not-the-password"))
        self.assert_tls_setup_only(conn, allowed)
        self.assertEqual(sh.events(r"connection 1: auth (.*)"), ["%s apikey failed" % mech.upper()])
        self.assert_untouched(spare, gw)
        self.assertEqual(sh.count(), 0)

    def test_auth_plain_wrong_password(self):
        self._auth_failure("plain")

    def test_auth_login_wrong_password(self):
        self._auth_failure("login")

    def test_auth_mechanism_not_offered(self):
        """auth = login, the smarthost offers only PLAIN: no AUTH is sent."""
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port], auth="login")
        self.expect_refused(gw)
        gw.wait_log(r"upstream does not offer AUTH LOGIN")
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn)
        self.assertEqual(lines(conn.tls), [b"EHLO out.test"] if b"QUIT" not in conn.tls
                         else [b"EHLO out.test", b"QUIT"])

    def test_early_talker_with_a_failing_upstream(self):
        """The app pipelines a whole transaction before its greeting; the
        upstream offers no STARTTLS: none of it ever reaches the upstream."""
        sh = self.smarthost("--no-starttls")
        gw = self.egress([sh.port])
        m = make_message(uniq("early-fail"))
        with self.app(gw) as c:
            c.send(b"EHLO early.test\r\nMAIL FROM:<early@client.test>\r\nRCPT TO:<r@relay.test>\r\n"
                   b"DATA\r\n" + dot_stuff(m))
            r = c.reply()
            self.assertCode(r, 421)
            self.assertTrue(r.lines[0].startswith("4.7.0"), r)
            c.wait_closed()
        (conn,) = self.conns(sh, 1)
        self.assert_plain_clean(conn, expect=(b"EHLO out.test",))
        self.assertNotIn(b"early", sh.raw_log())


# ============================================================================
# ports: fallback on connect failures only, the last working port first

class EgressPortsTest(EgressBase):

    def deliver_one(self, gw, sh, tag):
        m = make_message(uniq(tag))
        with self.greeted(gw) as c:
            self.assertCode(c.ehlo("app.test"), 250)
            self.send_message(c, m)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_stored(sh, m)

    def test_refused_port_falls_back_and_the_working_port_is_remembered(self):
        closed = lib.closed_port()
        good = self.smarthost("--auth", "plain", name="good")
        gw = self.egress([closed, good.port])
        refused = r"backend 127\.0\.0\.1:%d: Connection refused"
        # 1: the closed port first, then the next one
        self.deliver_one(gw, good, "fallback-1")
        self.assertEqual(gw.log_count(refused % closed), 1)
        # 2: the port that worked first: no new attempt at the closed one
        self.deliver_one(gw, good, "fallback-2")
        self.assertEqual(good.connections(), 2)
        self.assertEqual(gw.log_count(refused % closed), 1,
                         "the second session tried the closed port again")
        # 3: the remembered port goes away and the first one comes up: the
        # remembered one is still tried first, then the list in order
        good.stop()
        first = self.smarthost("--auth", "plain", name="first", port=closed)
        self.deliver_one(gw, first, "fallback-3")
        self.assertEqual(gw.log_count(refused % good.port), 1)
        # 4: now the first port is the one that last worked
        self.deliver_one(gw, first, "fallback-4")
        self.assertEqual(gw.log_count(refused % good.port), 1,
                         "the fourth session did not start with the port that last worked")
        self.assertEqual(gw.log_count(refused % closed), 1)
        self.assertEqual(first.connections(), 2)

    def test_three_ports_in_order(self):
        c1, c2 = lib.closed_port(), lib.closed_port()
        good = self.smarthost("--auth", "plain")
        gw = self.egress([c1, c2, good.port])
        self.deliver_one(gw, good, "third-port")
        log = gw.log_text()
        i1 = log.find("backend 127.0.0.1:%d: Connection refused" % c1)
        i2 = log.find("backend 127.0.0.1:%d: Connection refused" % c2)
        self.assertTrue(0 <= i1 < i2, log)

    def test_every_port_refused(self):
        c1, c2 = lib.closed_port(), lib.closed_port()
        gw = self.egress([c1, c2])
        self.expect_refused(gw, enhanced=r"4\.4\.1")
        gw.wait_log(r"backend 127\.0\.0\.1:%d: Connection refused" % c2)
        self.assertEqual(gw.log_count(r"backend 127\.0\.0\.1:%d: Connection refused" % c1), 1)

    def test_connect_timeout_falls_back(self):
        """A port where connect() hangs (a firewall dropping SYNs, made
        with a full accept queue on loopback): after backend_connect (1 s)
        the next port is tried."""
        bh = lib.Blackhole()
        self.addCleanup(bh.close)
        if not bh.works:
            self.skipTest("cannot make a connect() hang on loopback here")
        good = self.smarthost("--auth", "plain")
        gw = self.egress([bh.port, good.port], timeouts={"backend_connect": "1"})
        t0 = time.monotonic()
        self.deliver_one(gw, good, "blackhole")
        self.assertGreater(time.monotonic() - t0, 0.8)
        gw.wait_log(r"backend 127\.0\.0\.1:%d: connect timeout" % bh.port)
        # remembered: the next session goes straight to the good port (a
        # try at the blackhole would be logged before the delivery)
        self.deliver_one(gw, good, "blackhole-2")
        self.assertEqual(gw.log_count(r"connect timeout"), 1)
        self.assertEqual(good.connections(), 2)

    def test_connect_timeout_on_every_port(self):
        bh = lib.Blackhole()
        self.addCleanup(bh.close)
        if not bh.works:
            self.skipTest("cannot make a connect() hang on loopback here")
        gw = self.egress([bh.port], timeouts={"backend_connect": "1"})
        self.expect_refused(gw, enhanced=r"4\.4\.1")
        gw.wait_log(r"backend 127\.0\.0\.1:%d: connect timeout" % bh.port)

    def test_silent_port_is_not_a_connect_failure(self):
        """closed, then one that accepts and never answers, then a good
        one: the silent port connected, so its banner timeout ends the
        session (421) and the good port is never tried."""
        closed = lib.closed_port()
        silent = self.smarthost("--silent", name="silent", cert=None)
        good = self.smarthost("--auth", "plain", name="good")
        gw = self.egress([closed, silent.port, good.port], timeouts={"data": "2"})
        t0 = time.monotonic()
        r = self.expect_refused(gw, enhanced=r"4\.\d\.\d", timeout=10)
        self.assertGreater(time.monotonic() - t0, 1.5, r)
        gw.wait_log(r"backend 127\.0\.0\.1:%d: Connection refused" % closed)
        (conn,) = self.conns(silent, 1)
        self.assertEqual(conn.plain, b"")
        self.assert_untouched(good, gw)


# ============================================================================
# the app's own AUTH: ignore (default), refuse, offer

APP_USER, APP_PASS = "app-user", "app-secret-XYZ"


class EgressAppAuthTest(EgressBase):

    def assert_app_creds_not_upstream(self, sh):
        log = sh.raw_log()
        for needle in (APP_USER.encode(), APP_PASS.encode(),
                       base64.b64encode(APP_USER.encode()), base64.b64encode(APP_PASS.encode()),
                       base64.b64encode(b"\0" + APP_USER.encode() + b"\0" + APP_PASS.encode())):
            self.assertNotIn(needle, log)
        self.assertEqual(len(re.findall(rb"^AUTH ", log, re.M)), 1, "only the gateway's AUTH")
        self.assertEqual(sh.events(r"auth (\S+ \S+) ok"), ["PLAIN apikey"] * sh.connections())

    def test_ignore(self):
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port])       # app_auth: the default
        plain = base64.b64encode(b"\0" + APP_USER.encode() + b"\0" + APP_PASS.encode()).decode()
        u64 = base64.b64encode(APP_USER.encode()).decode()
        p64 = base64.b64encode(APP_PASS.encode()).decode()
        m = make_message(uniq("app-auth-ignore"))
        with self.greeted(gw) as c:
            self.assertNotIn("AUTH", c.ehlo("app.test").keywords())
            self.assertCode(c.cmd("AUTH PLAIN " + plain), 235)
            r = c.cmd("AUTH PLAIN")
            self.assertCode(r, 334)
            self.assertCode(c.cmd(plain), 235)
            r = c.cmd("AUTH LOGIN")
            self.assertEqual((r.code, r.lines), (334, ["VXNlcm5hbWU6"]))
            r = c.cmd(u64)
            self.assertEqual((r.code, r.lines), (334, ["UGFzc3dvcmQ6"]))
            self.assertCode(c.cmd(p64), 235)
            r = c.cmd("AUTH LOGIN " + u64)
            self.assertEqual((r.code, r.lines), (334, ["UGFzc3dvcmQ6"]))
            self.assertCode(c.cmd(p64), 235)
            self.assertCode(c.cmd("AUTH CRAM-MD5"), 504)
            self.assertCode(c.cmd("AUTH LOGIN"), 334)
            self.assertCode(c.cmd("*"), 501)
            self.send_message(c, m)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_stored(sh, m)
        self.conns(sh, 1)
        self.assert_app_creds_not_upstream(sh)

    def test_refuse(self):
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port], listener={"app_auth": "refuse"})
        m = make_message(uniq("app-auth-refuse"))
        with self.greeted(gw) as c:
            self.assertNotIn("AUTH", c.ehlo("app.test").keywords())
            self.assertCode(c.cmd("AUTH PLAIN " + base64.b64encode(b"\0u\0p").decode()), 502)
            self.assertCode(c.cmd("AUTH LOGIN"), 502)
            # the session goes on
            self.send_message(c, m)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_stored(sh, m)
        self.conns(sh, 1)
        self.assertEqual(len(re.findall(rb"^AUTH ", sh.raw_log(), re.M)), 1)

    def test_offer(self):
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port], listener={"app_auth": "offer"})
        m = make_message(uniq("app-auth-offer"))
        with self.greeted(gw) as c:
            ehlo = c.ehlo("app.test")
            self.assertCode(ehlo, 250)
            self.assertEqual(ehlo.lines[-1], "AUTH PLAIN LOGIN")
            self.assertEqual(ehlo.keywords().count("AUTH"), 1)
            self.assertCode(c.cmd("AUTH PLAIN " + base64.b64encode(
                b"\0" + APP_USER.encode() + b"\0" + APP_PASS.encode()).decode()), 235)
            self.send_message(c, m)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_stored(sh, m)
        self.conns(sh, 1)
        self.assert_app_creds_not_upstream(sh)

    @unittest.skipUnless(has_tool("swaks"), "swaks not installed")
    def test_offer_swaks(self):
        sh = self.smarthost("--auth", "plain")
        gw = self.egress([sh.port], listener={"app_auth": "offer"})
        for mech in ("PLAIN", "LOGIN"):
            with self.subTest(mech=mech):
                m = make_message(uniq("swaks-auth-" + mech))
                path = os.path.join(self.workdir, "swaks-%s.eml" % mech)
                with open(path, "wb") as f:
                    f.write(m[:-2])          # swaks adds the final CRLF itself
                r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(gw.port_out),
                                    "--from", "app@client.test", "--to", "rcpt@relay.test",
                                    "--helo", "swaks.app", "--auth", mech, "-au", APP_USER,
                                    "-ap", APP_PASS, "--data", "@" + path, "--timeout", "20"],
                                   capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
                self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace")[-3000:])
                self.assertIn(b"235 ", r.stdout)
                self.check_stored(sh, m)
        self.conns(sh, 2)
        log = sh.raw_log()
        for needle in (APP_USER.encode(), APP_PASS.encode(), base64.b64encode(APP_PASS.encode())):
            self.assertNotIn(needle, log)
        self.assertEqual(sh.events(r"auth (\S+ \S+) ok"), ["PLAIN apikey"] * 2)


# ============================================================================
# real clients as the app, one gateway and smarthost for the class

class EgressRealClientsTest(EgressBase):

    @classmethod
    def setUpClass(cls):
        d = lib.new_workdir(cls.__name__)
        cls.sh = lib.Smarthost(d, lib.relay_certs().args("relay") + ["--auth", "login"])
        cls.addClassCleanup(cls.sh.stop)
        cls.sh.start()
        pw = os.path.join(d, "relay-password")
        with open(pw, "w") as f:
            f.write(lib.RELAY_PASSWORD + "\n")
        cls.gw = lib.EgressGateway(d, {
            "host": "127.0.0.1", "ports": [lib.closed_port(), cls.sh.port],
            "ca_file": lib.relay_certs().ca, "server_name": "relay.test", "auth": "login",
            "username": lib.RELAY_USER, "password_file": pw, "helo": "out.test"})
        cls.addClassCleanup(cls.gw.stop)
        cls.shared = [cls.sh, cls.gw]
        cls.gw.start()

    def _run(self, args, timeout=30, stdin=None):
        r = subprocess.run(args, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL if stdin is None else stdin)
        self.assertEqual(r.returncode, 0, "%s failed (%d):\nstdout: %s\nstderr: %s" % (
            args[0], r.returncode, r.stdout.decode(errors="replace")[-3000:],
            r.stderr.decode(errors="replace")[-3000:]))
        return r

    def _check(self, m, mail_from, rcpt):
        n, eml, env = self.sh.find_message(mid(m))
        self.assertEqual(eml, m, "message %d differs at the smarthost" % n)
        self.assertEqual(env[0], b"HELO out.test")
        # smtplib sends "mail FROM:" / "rcpt TO:": compare case-insensitively
        self.assertTrue(env[1].upper().startswith(b"MAIL FROM:<%s>" % mail_from.upper().encode()),
                        env)
        self.assertEqual([e.upper() for e in env[2:]], [b"RCPT TO:<%s>" % rcpt.upper().encode()])
        self.assert_every_conn_clean(self.sh)

    def _file(self, name, data):
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @unittest.skipUnless(has_tool("swaks"), "swaks not installed")
    def test_swaks(self):
        m = make_message(uniq("swaks"))
        path = self._file("swaks.eml", m[:-2])      # swaks adds the final CRLF
        self._run(["swaks", "--server", "127.0.0.1", "--port", str(self.gw.port_out),
                   "--from", "swaks@client.test", "--to", "r@relay.test", "--helo", "swaks.app",
                   "--data", "@" + path, "--timeout", "20"])
        self._check(m, "swaks@client.test", "r@relay.test")

    @unittest.skipUnless(has_tool("curl"), "curl not installed")
    def test_curl(self):
        m = make_message(uniq("curl"))
        path = self._file("curl.eml", m)
        self._run(["curl", "-sS", "--max-time", "20",
                   "--url", "smtp://127.0.0.1:%d/curl.app" % self.gw.port_out,
                   "--mail-from", "curl@client.test", "--mail-rcpt", "r@relay.test",
                   "--upload-file", path])
        self._check(m, "curl@client.test", "r@relay.test")

    def test_smtplib(self):
        m = make_message(uniq("smtplib"))
        with smtplib.SMTP("127.0.0.1", self.gw.port_out, timeout=20) as s:
            code, _ = s.ehlo("smtplib.app")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"))
            self.assertEqual(s.sendmail("py@client.test", ["r@relay.test"], m), {})
        self._check(m, "py@client.test", "r@relay.test")

    @unittest.skipUnless(has_tool("msmtp"), "msmtp not installed (scripts/install-deps test)")
    def test_msmtp(self):
        m = make_message(uniq("msmtp"))
        conf = self._file("msmtprc", (
            "defaults\n"
            "logfile %s\n"
            "account default\n"
            "host 127.0.0.1\n"
            "port %d\n"
            "tls off\n"
            "auth off\n"
            "domain msmtp.app\n"
            "from msmtp@client.test\n"
            "timeout 20\n"
            "set_from_header off\n"
            "set_date_header off\n"
            "set_msgid_header off\n" % (os.path.join(self.workdir, "msmtp.log"),
                                        self.gw.port_out)).encode())
        os.chmod(conf, 0o600)
        with open(self._file("msmtp.eml", m), "rb") as f:
            self._run(["msmtp", "-C", conf, "-f", "msmtp@client.test", "--", "r@relay.test"],
                      stdin=f)
        self._check(m, "msmtp@client.test", "r@relay.test")


# ============================================================================
# a real Postfix as the app: relayhost = the egress listener

class EgressPostfixTest(EgressBase):

    @classmethod
    def setUpClass(cls):
        import test_postfix as tp
        why = tp._postfix_missing()
        if why:
            if os.environ.get("CI"):
                raise AssertionError("CI is set but the Postfix egress test cannot run: " + why)
            raise unittest.SkipTest(why)
        d = lib.new_workdir(cls.__name__)
        cls.sh = lib.Smarthost(d, lib.relay_certs().args("relay") + ["--auth", "plain"])
        cls.addClassCleanup(cls.sh.stop)
        cls.sh.start()
        pw = os.path.join(d, "relay-password")
        with open(pw, "w") as f:
            f.write(lib.RELAY_PASSWORD + "\n")
        cls.gw = lib.EgressGateway(d, {
            "host": "127.0.0.1", "ports": [cls.sh.port], "ca_file": lib.relay_certs().ca,
            "server_name": "relay.test", "auth": "plain", "username": lib.RELAY_USER,
            "password_file": pw, "helo": "out.test"})
        cls.addClassCleanup(cls.gw.stop)
        cls.gw.start()
        cls.postfix = tp.Postfix()
        cls.addClassCleanup(cls.postfix.stop)
        cls.shared = [cls.sh, cls.gw, cls.postfix]
        # Nothing is delivered locally: every domain goes to the relayhost,
        # over the smtp client that postfix.sh's master.cf does not run.
        cls.postfix.start("relayhost=[127.0.0.1]:%d" % cls.gw.port_out,
                          "virtual_mailbox_domains=", "default_transport=smtp",
                          "smtp_tls_security_level=none", "smtp_sasl_auth_enable=no")
        etc = os.path.join(cls.postfix.dir, "etc")
        with open(os.path.join(etc, "master.cf"), "a") as f:
            f.write("smtp      unix  -       -       n       -       -       smtp\n")
        r = subprocess.run(["postfix", "-c", etc, "reload"], capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError("postfix reload failed: %r" % r)
        sock = os.path.join(cls.postfix.dir, "queue", "private", "smtp")
        lib.wait_until(lambda: os.path.exists(sock), 20, "Postfix's smtp service socket")

    def test_postfix_relays_through_the_gateway(self):
        import test_postfix as tp
        sender = "pf-sender@client.test"
        rcpt = "pf-%s@example.org" % uuid.uuid4().hex[:12]
        wire = tp.make_message("egress via Postfix", rcpt, sender)
        msgid = re.search(rb"^Message-ID: <[^>]+>", wire, re.M).group(0)
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=20) as s:
            s.ehlo("app.test")
            self.assertEqual(s.sendmail(sender, [rcpt], wire, mail_options=["BODY=8BITMIME"]), {})
        n, eml, env = self.sh.find_message(msgid, timeout=30)
        # Postfix prepends its Received header; the rest is what the app sent
        self.assertTrue(eml.endswith(wire), "message %d at the smarthost:\n%r" % (n, eml[:600]))
        trace = eml[:len(eml) - len(wire)]
        self.assertTrue(trace.startswith(b"Received: from app.test"), trace)
        self.assertIn(b"by backend.test (Postfix)", trace)
        self.assertEqual(len(re.findall(rb"^\S", trace, re.M)), 1, "more than one header added")
        self.assertEqual(env[0], b"HELO out.test")
        self.assertTrue(env[1].startswith(b"MAIL FROM:<%s>" % sender.encode()), env)
        self.assertEqual(env[2:], [b"RCPT TO:<%s>" % rcpt.encode()])
        self.assert_every_conn_clean(self.sh)
        # Postfix saw the gateway's greeting and a 250 for its message
        self.gw.wait_log(r"msgs=1 .*reason=\"quit\"")
        # Postfix logs the delivery after the session ends: poll for it.
        sent = re.compile(r"to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent"
                          % (re.escape(rcpt), self.gw.port_out))
        lib.wait_until(lambda: sent.search(self.postfix.log_tail(20000)), 10,
                       "Postfix logging status=sent")


if __name__ == "__main__":
    unittest.main()
