"""smtpgate in front of a real Postfix (plaintext-only legacy backend).

Postfix runs as a private instance (tests/integration/postfix.sh) on a free
loopback port and delivers every recipient to one maildir. The gateway sits
in front of it with an implicit-TLS and a STARTTLS listener. Each test sends
a message through the gateway, waits for Postfix to deliver it, and checks
that the stored message is byte-for-byte what the client sent (after the
trace headers Postfix prepends) and that the envelope is intact.

Needs Postfix (scripts/install-deps test) and root (Postfix's master runs
as root). Without them the tests are skipped, except under CI (env CI set),
where they fail: CI must exercise the real backend.
"""

import os
import shutil
import smtplib
import subprocess
import tempfile
import unittest
import uuid

import lib

HERE = os.path.dirname(os.path.abspath(__file__))
POSTFIX_SH = os.path.join(HERE, "postfix.sh")
DELIVERY_TIMEOUT = 30.0
SMTP_TIMEOUT = 20.0


def _postfix_missing():
    """Why a real Postfix can't run here, or None if it can."""
    if not (shutil.which("postfix") or os.path.exists("/usr/sbin/postfix")):
        return "postfix is not installed (run: scripts/install-deps test)"
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            return "postfix needs root (its master runs as root) and sudo is missing"
        probe = subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if probe.returncode != 0:
            return "postfix needs root (its master runs as root); sudo -n is refused"
    return None


class Maildir:
    """The single maildir that the Postfix instance delivers to."""

    # Headers that Postfix's virtual(8), cleanup(8) and smtpd(8) prepend.
    TRACE_HEADERS = (b"return-path", b"x-original-to", b"delivered-to", b"received")

    def __init__(self, path):
        self.path = path

    def _files(self):
        new = os.path.join(self.path, "new")
        cur = os.path.join(self.path, "cur")
        out = []
        for d in (new, cur):
            try:
                out.extend(os.path.join(d, n) for n in os.listdir(d))
            except FileNotFoundError:
                pass
        return out

    @staticmethod
    def split(data):
        """(trace header block, rest) of a stored message: the trace block is
        the leading Return-Path/X-Original-To/Delivered-To/Received headers
        (with their continuation lines)."""
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break
            line = data[pos:end]
            name = line.split(b":", 1)[0].lower()
            if line[:1] in (b" ", b"\t") and pos > 0:
                pos = end + 1
                continue
            if b":" in line and name in Maildir.TRACE_HEADERS:
                pos = end + 1
                continue
            break
        return data[:pos], data[pos:]

    @staticmethod
    def header(block, name):
        """Values of header NAME (bytes, lower case) in a header block."""
        vals = []
        for line in block.split(b"\n"):
            if b":" in line and line.split(b":", 1)[0].lower() == name:
                vals.append(line.split(b":", 1)[1].strip())
        return vals

    def find(self, rcpt):
        """Contents (bytes) of the messages delivered to envelope recipient
        RCPT so far (Postfix stores one copy per recipient)."""
        want = rcpt.encode()
        found = []
        for f in self._files():
            try:
                with open(f, "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                continue  # moved from new/ to cur/ meanwhile
            trace, _ = self.split(data)
            if want in self.header(trace, b"delivered-to"):
                found.append(data)
        return found

    def wait_for(self, rcpt, count=1, timeout=DELIVERY_TIMEOUT):
        """Wait until exactly COUNT messages for envelope recipient RCPT are
        stored; return their contents."""
        lib.wait_until(lambda: len(self.find(rcpt)) >= count, timeout,
                       "%d message(s) for <%s> in Postfix's maildir" % (count, rcpt))
        found = self.find(rcpt)
        if len(found) != count:
            raise AssertionError("%d messages for <%s>, expected %d" % (len(found), rcpt, count))
        return found


def make_message(tag, rcpt, sender):
    """A message in wire form (CRLF line ends, not dot-stuffed) that Postfix
    stores unchanged: every header it would add or rewrite is present and
    fully qualified. The body has lines that stress dot-stuffing, a long
    line and 8-bit UTF-8."""
    lines = [
        "From: Sender <%s>" % sender,
        "To: Recipient <%s>" % rcpt,
        "Subject: smtpgate postfix test %s" % tag,
        "Date: Thu, 01 Jan 2026 00:00:00 +0000",
        "Message-ID: <%s@gw.test>" % uuid.uuid4().hex,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Hello through %s." % tag,
        ".",
        "..",
        ".leading dot",
        "..two leading dots",
        " . not an end",
        "x" * 900,
        "Gr\u00fc\u00dfe, \u65e5\u672c, \u00e9t\u00e9",
        "",
        "last line",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def as_stored(wire):
    """What Postfix's maildir delivery stores for WIRE: LF line ends."""
    return wire.replace(b"\r\n", b"\n")


class Postfix:
    """A private Postfix instance run by postfix.sh; shows its log when a
    test fails (run.py collects diagnostics() from cls.shared)."""

    name = "postfix"

    def __init__(self):
        # Postfix's unprivileged daemons must be able to walk into its
        # directory, so it gets a world-searchable one of its own in the
        # system temp dir rather than one under the test run's private tree.
        self.dir = tempfile.mkdtemp(prefix="smtpgate-postfix-")
        os.chmod(self.dir, 0o755)
        self.maillog = os.path.join(self.dir, "maillog")
        self.maildir = Maildir(os.path.join(self.dir, "mail", "inbox"))
        self.port = None
        self.running = False

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self, *settings):
        self.port = lib.free_port()
        res = subprocess.run([POSTFIX_SH, "start", self.dir, str(self.port)] + list(settings),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=120)
        self.running = True       # stop() even after a failed start
        if res.returncode != 0:
            raise AssertionError("postfix.sh start failed:\n" + res.stdout.decode("utf-8", "replace"))
        return self

    def stop(self):
        if self.running:
            self.running = False
            res = subprocess.run([POSTFIX_SH, "stop", self.dir], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            if res.returncode != 0:
                raise AssertionError("postfix.sh stop failed:\n" + res.stdout.decode("utf-8", "replace"))
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, limit=4000):
        try:
            with open(self.maillog, "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace")
        except OSError as e:
            return "<cannot read %s: %s>" % (self.maillog, e)

    def diagnostics(self):
        return "--- postfix (%s, %s) maillog (tail) ---\n%s" % (
            self.addr if self.port else "?", self.dir, self.log_tail())


class PostfixBackendTest(lib.IntegrationTest):
    """The gateway (implicit TLS + STARTTLS listeners) relaying to a real
    Postfix."""

    @classmethod
    def setUpClass(cls):
        why = _postfix_missing()
        if why:
            if os.environ.get("CI"):
                raise AssertionError("CI is set but the Postfix integration tests cannot run: " + why)
            raise unittest.SkipTest(why)
        cls.postfix = Postfix()
        cls.addClassCleanup(cls.postfix.stop)
        cls.shared = [cls.postfix]
        cls.postfix.start()
        cls.maildir = cls.postfix.maildir
        cls.gw = lib.start_gateway_for(cls, cls.postfix.addr, listeners=(
            ("smtps", "implicit", {}),
            ("submission", "starttls", {}),
        ))
        cls.shared = [cls.postfix, cls.gw]

    def setUp(self):
        super().setUp()
        self.check_shared_alive()

    # --- helpers ---------------------------------------------------------

    def rcpt(self, tag):
        return "%s-%s@example.org" % (tag, uuid.uuid4().hex[:12])

    def check_delivered(self, rcpt, sender, wire, count=1):
        """Wait for WIRE to be delivered to RCPT and check it byte for byte,
        and its envelope (Return-Path, X-Original-To, Delivered-To)."""
        got = self.maildir.wait_for(rcpt, count=count)
        for data in got:
            trace, rest = Maildir.split(data)
            self.assertEqual(rest, as_stored(wire),
                             "stored message differs from what was sent; trace headers:\n"
                             + trace.decode("utf-8", "replace"))
            self.assertEqual(Maildir.header(trace, b"delivered-to"), [rcpt.encode()])
            self.assertEqual(Maildir.header(trace, b"x-original-to"), [rcpt.encode()])
            self.assertEqual(Maildir.header(trace, b"return-path"), [b"<" + sender.encode() + b">"])
            # Postfix's own Received line is the only one: the gateway adds none.
            received = Maildir.header(trace, b"received")
            self.assertEqual(len(received), 1, trace.decode("utf-8", "replace"))
            self.assertIn(b"by backend.test (Postfix)", data[:len(trace)])
        return got

    # --- tests -----------------------------------------------------------

    def test_implicit_tls_smtplib(self):
        sender = "implicit@client.test"
        r1, r2 = self.rcpt("implicit"), self.rcpt("implicit-cc")
        wire = make_message("implicit TLS", r1, sender)
        r3 = self.rcpt("implicit-second")
        wire3 = make_message("implicit TLS second", r3, sender)
        with smtplib.SMTP_SSL("127.0.0.1", self.gw.port("smtps"), timeout=SMTP_TIMEOUT,
                              context=self.gw.client_context()) as s:
            code, ehlo = s.ehlo("client.test")
            self.assertEqual(code, 250, ehlo)
            self.assertTrue(s.has_extn("pipelining"), ehlo)
            self.assertFalse(s.has_extn("starttls"), "STARTTLS offered on an implicit-TLS listener")
            self.assertEqual(s.sendmail(sender, [r1, r2], wire, mail_options=["BODY=8BITMIME"]), {})
            # a second transaction in the same session
            self.assertEqual(s.sendmail(sender, [r3], wire3, mail_options=["BODY=8BITMIME"]), {})
        # one message, two envelope recipients: Postfix stores one copy each
        self.check_delivered(r1, sender, wire)
        self.check_delivered(r2, sender, wire)
        self.check_delivered(r3, sender, wire3)

    def test_starttls_smtplib(self):
        sender = "starttls@client.test"
        rcpt = self.rcpt("starttls")
        wire = make_message("STARTTLS", rcpt, sender)
        with smtplib.SMTP("127.0.0.1", self.gw.port("submission"), timeout=SMTP_TIMEOUT) as s:
            code, ehlo = s.ehlo("client.test")
            self.assertEqual(code, 250, ehlo)
            self.assertTrue(s.has_extn("starttls"), ehlo)
            code, msg = s.starttls(context=self.gw.client_context())
            self.assertEqual(code, 220, msg)
            code, ehlo = s.ehlo("client.test")
            self.assertEqual(code, 250, ehlo)
            self.assertFalse(s.has_extn("starttls"), "STARTTLS still offered after TLS: %r" % ehlo)
            self.assertTrue(s.has_extn("chunking"), "Postfix's CHUNKING not passed on: %r" % ehlo)
            self.assertEqual(s.sendmail(sender, [rcpt], wire, mail_options=["BODY=8BITMIME"]), {})
        self.check_delivered(rcpt, sender, wire)

    def test_bdat_chunking_pipelined_over_tls(self):
        """BDAT through the gateway to Postfix, pipelined: the chunks are
        carried as they are, so a body with CRLF.CRLF inside, lines that
        start with a dot and an SMTP command inside arrive literally."""
        sender = "bdat@client.test"
        rcpt = self.rcpt("bdat")
        wire = (make_message("BDAT", rcpt, sender)
                + b"after a lone dot:\r\n.\r\n.\r\nQUIT\r\nstill body\r\n")
        cut = len(wire) // 3
        chunks = [wire[:cut], wire[cut:]]          # split mid-line
        with lib.SMTPClient(self.gw.port("smtps"), tls=True, timeout=SMTP_TIMEOUT) as c:
            self.assertCode(c.reply(), 220)
            ehlo = c.ehlo()
            self.assertCode(ehlo, 250)
            self.assertIn("CHUNKING", ehlo.keywords(), "Postfix's CHUNKING not passed on")
            self.assertIn("PIPELINING", ehlo.keywords())
            c.send(b"MAIL FROM:<%s> BODY=8BITMIME\r\nRCPT TO:<%s>\r\n" % (sender.encode(), rcpt.encode())
                   + b"BDAT %d\r\n" % len(chunks[0]) + chunks[0]
                   + b"BDAT %d LAST\r\n" % len(chunks[1]) + chunks[1]
                   + b"QUIT\r\n")
            mail, rcpt_r, bdat1, bdat2, quit_r = c.replies(5, timeout=SMTP_TIMEOUT)
            for r in (mail, rcpt_r, bdat1, bdat2):
                self.assertCode(r, 250)
            self.assertIn("queued as", bdat2.text)
            self.assertCode(quit_r, 221)
        self.check_delivered(rcpt, sender, wire)

    def test_starttls_data_pipelined_raw(self):
        """DATA after STARTTLS with PIPELINING (RFC 2920): MAIL, RCPT, DATA
        in one write; the body then goes through dot-stuffed."""
        sender = "pipelined@client.test"
        rcpt = self.rcpt("pipelined")
        wire = make_message("pipelined DATA", rcpt, sender)
        with lib.SMTPClient(self.gw.port("submission"), timeout=SMTP_TIMEOUT) as c:
            self.assertCode(c.reply(), 220)
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.starttls(self.gw.client_context()), 220)
            self.assertCode(c.ehlo(), 250)
            c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender.encode(), rcpt.encode()))
            mail, rcpt_r, data = c.replies(3)
            self.assertCode(mail, 250)
            self.assertCode(rcpt_r, 250)
            self.assertCode(data, 354)
            c.send(lib.dot_stuff(wire))
            self.assertCode(c.reply(timeout=SMTP_TIMEOUT), 250)
            self.assertCode(c.cmd("QUIT"), 221)
        self.check_delivered(rcpt, sender, wire)


if __name__ == "__main__":
    unittest.main()
