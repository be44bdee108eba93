"""Certificates by server name (SNI) and client certificates, end to end:
the real gateway with three certificate sets (the default [tls], an exact
[tls:exact] with an RSA and an ECDSA pair, a wildcard [tls:wild]), made at
test time with openssl under one test CA; Python ssl clients and
`openssl s_client` on implicit and STARTTLS listeners; client certificates
from a test client CA and from a stranger CA.

Run with tests/integration/run.py (TEST_FILTER=test_tls_ops for these).
"""

import os
import re
import ssl
import subprocess
import unittest

import lib
from lib import SMTPClient, make_message, uniq


class OpsCerts:
    """A server CA and three server certificates (default.test, mail.a.test
    with RSA and ECDSA keys, *.b.test), a client CA with a client
    certificate (CN=alice), and a stranger CA whose client certificate
    carries the same subject. Generated once per run."""

    def __init__(self, d):
        self.dir = d
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"]

        def ca(name, cn):
            cert, key = self.path(name + ".pem"), self.path(name + "-key.pem")
            lib._openssl(["req", "-x509"] + ec + ["-keyout", key, "-out", cert, "-days", "2",
                          "-subj", cn] + ca_ext, d)
            return cert, key

        def leaf(name, subj, ext, issuer, newkey=ec):
            cert, key = self.path(name + ".pem"), self.path(name + "-key.pem")
            csr, extfile = self.path(name + ".csr"), self.path(name + ".ext")
            with open(extfile, "w") as f:
                f.write("\n".join(["basicConstraints=critical,CA:FALSE"] + ext) + "\n")
            lib._openssl(["req", "-new"] + newkey + ["-keyout", key, "-out", csr, "-subj", subj], d)
            lib._openssl(["x509", "-req", "-in", csr, "-CA", issuer[0], "-CAkey", issuer[1],
                          "-set_serial", str(abs(hash((name, os.getpid()))) % (1 << 60) + 1),
                          "-days", "2", "-extfile", extfile, "-out", cert], d)
            return cert, key

        server = ["extendedKeyUsage=serverAuth"]
        self.server_ca = ca("server-ca", "/CN=smtpgate sni test CA")[0]
        sca = (self.server_ca, self.path("server-ca-key.pem"))
        self.default = leaf("default", "/CN=default.test",
                            server + ["subjectAltName=DNS:default.test"], sca)
        self.exact_ec = leaf("exact-ec", "/CN=mail.a.test",
                             server + ["subjectAltName=DNS:mail.a.test,DNS:other.a.test"], sca)
        self.exact_rsa = leaf("exact-rsa", "/CN=mail.a.test",
                              server + ["subjectAltName=DNS:mail.a.test,DNS:other.a.test"], sca,
                              newkey=["-newkey", "rsa:2048", "-nodes"])
        self.wild = leaf("wild", "/CN=*.b.test", server + ["subjectAltName=DNS:*.b.test"], sca)

        client = ["extendedKeyUsage=clientAuth"]
        self.client_ca = ca("client-ca", "/CN=smtpgate client CA")
        self.alice = leaf("alice", "/O=smtpgate test/CN=alice", client, self.client_ca)
        stranger_ca = ca("stranger-ca", "/CN=smtpgate client CA")
        self.stranger = leaf("stranger", "/O=smtpgate test/CN=alice", client, stranger_ca)

    def path(self, name):
        return os.path.join(self.dir, name)


def ops_certs():
    return lib._per_run("ops-certs", OpsCerts)


ALICE = "CN=alice,O=smtpgate test"


def client_ctx(cert=None, sigalgs=None):
    """A client trusting the server CA; host names are checked by the tests
    themselves (the served certificate is the thing under test)."""
    ctx = ssl.create_default_context(cafile=ops_certs().server_ca)
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(cert[0], cert[1])
    return ctx


def served_cn(c):
    """The CN of the certificate the gateway served to SMTPClient c."""
    subject = dict(x[0] for x in c.sock.getpeercert()["subject"])
    return subject["commonName"]


class SNITest(lib.IntegrationTest):
    """One gateway, five listeners: implicit and STARTTLS without client
    certificates, implicit and STARTTLS requiring one, implicit with an
    optional one."""

    @classmethod
    def setUpClass(cls):
        oc = ops_certs()
        d = lib.new_workdir(cls.__name__)
        cls.be = lib.Backend(d)
        cls.addClassCleanup(cls.be.stop)
        cls.be.start()
        verify = {"client_ca": oc.client_ca[0]}
        cls.gw = lib.Gateway(
            d, cls.be.addr,
            listeners=(("smtps", "implicit", {}),
                       ("submission", "starttls", {}),
                       ("smtps_req", "implicit", dict(verify, verify_client="require")),
                       ("sub_req", "starttls", dict(verify, verify_client="require")),
                       ("smtps_opt", "implicit", dict(verify, verify_client="optional"))),
            tls={"cert": oc.default[0], "key": oc.default[1]},
            extra={"tls:exact": {"names": "Mail.A.test, other.a.test",
                                 "cert": [oc.exact_rsa[0], oc.exact_ec[0]],
                                 "key": [oc.exact_rsa[1], oc.exact_ec[1]]},
                   "tls:wild": {"names": "*.b.test", "cert": oc.wild[0], "key": oc.wild[1]}})
        cls.addClassCleanup(cls.gw.stop)
        cls.gw.start()
        cls.shared = [cls.be, cls.gw]

    def setUp(self):
        super().setUp()
        self.check_shared_alive()

    # helpers ------------------------------------------------------------------

    def connect(self, listener, server_hostname, cert=None):
        """A TLS session on listener (implicit or after STARTTLS), past the
        banner or the STARTTLS reply."""
        port = self.gw.port(listener)
        ctx = client_ctx(cert)
        if listener.startswith("smtps"):
            c = SMTPClient(port, tls=True, ctx=ctx, server_hostname=server_hostname)
            self.assertCode(c.reply(), 220)
        else:
            c = SMTPClient(port)
            self.assertCode(c.reply(), 220)
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.starttls(ctx=ctx, server_hostname=server_hostname), 220)
        self.addCleanup(c.close)
        return c

    def send_one(self, c, tag):
        """A message through c; returns its marker once the backend has it."""
        marker = uniq(tag)
        self.assertCode(c.ehlo(), 250)
        self.deliver(c, make_message(marker))
        self.assertCode(c.cmd("QUIT"), 221)
        self.be.find_message(marker)
        return marker

    def session_line(self, listener, sni):
        """The session's log line, once the gateway wrote it."""
        return self.gw.wait_log(r"listener=%s tls=\S+ cipher=\S+ sni=%s .*reason=\"quit\""
                                % (re.escape(listener), re.escape(sni))).group(0)

    def refused(self, listener, cert):
        """A handshake the gateway must refuse: the client gets an alert or
        a close, never a banner or a reply, and the log says why."""
        before = self.be.connections()
        c = SMTPClient(self.gw.port(listener))
        self.addCleanup(c.close)
        if listener.startswith("sub"):
            self.assertCode(c.reply(), 220)
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("STARTTLS"), 220)
        # In TLS 1.3 the client's side completes before the server has
        # looked at its certificate; the refusal then comes as an alert on
        # the first read.
        if c.try_wrap(client_ctx(cert), "mail.a.test"):
            with self.assertRaises((ssl.SSLError, lib.ConnectionClosed, OSError)):
                r = c.reply()
                self.fail("a session after a refused certificate: %r" % r)
        self.gw.wait_log(r"listener=%s .*client_cert=- .*reason=\"[^\"]*"
                         r"(certificate|CERTIFICATE)" % re.escape(listener))
        # On STARTTLS listeners the backend is connected once STARTTLS is
        # accepted, in parallel with the handshake (DESIGN.md).
        if listener.startswith("smtps"):
            self.assertEqual(self.be.connections(), before)

    # SNI ------------------------------------------------------------------------

    def test_certificate_by_name_python(self):
        cases = ((None, "default.test"), ("mail.a.test", "mail.a.test"),
                 ("MAIL.A.TEST", "mail.a.test"), ("other.a.test", "mail.a.test"),
                 ("x.b.test", "*.b.test"), ("y.x.b.test", "default.test"),
                 ("b.test", "default.test"), ("unknown.example", "default.test"),
                 ("127.0.0.1", "default.test"))
        for listener in ("smtps", "submission"):
            for sn, want in cases:
                with self.subTest(listener=listener, server_name=sn):
                    c = self.connect(listener, sn)
                    self.assertEqual(served_cn(c), want)
                    c.close()

    def test_mail_flows_with_each_certificate(self):
        for listener in ("smtps", "submission"):
            for sn, want in (("mail.a.test", "mail.a.test"), ("x.b.test", "*.b.test"),
                             (None, "default.test")):
                with self.subTest(listener=listener, server_name=sn):
                    c = self.connect(listener, sn)
                    self.assertEqual(served_cn(c), want)
                    self.send_one(c, "sni")
                    line = self.session_line(listener, sn or "-")
                    self.assertIn("client_cert=- ", line)

    @unittest.skipUnless(lib.has_tool("openssl"), "openssl not installed")
    def test_openssl_s_client(self):
        """openssl s_client with -servername, implicit and -starttls smtp;
        an RSA-only client gets the RSA certificate of the same name."""
        oc = ops_certs()
        cases = (("smtps", [], "mail.a.test", "CN = mail.a.test", "EC"),
                 ("submission", ["-starttls", "smtp"], "mail.a.test", "CN = mail.a.test", "EC"),
                 ("smtps", ["-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"], "mail.a.test",
                  "CN = mail.a.test", "RSA"),
                 ("submission", ["-starttls", "smtp", "-tls1_2", "-sigalgs", "RSA+SHA256"],
                  "other.a.test", "CN = mail.a.test", "RSA"),
                 ("smtps", [], "z.b.test", "CN = *.b.test", "EC"),
                 ("submission", ["-starttls", "smtp"], "nothing.example", "CN = default.test",
                  "EC"),
                 ("smtps", ["-noservername"], None, "CN = default.test", "EC"))
        for listener, args, sn, subject, keytype in cases:
            with self.subTest(listener=listener, args=args, server_name=sn):
                cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.gw.port(listener),
                       "-CAfile", oc.server_ca, "-verify_return_error", "-ign_eof"] + args
                if sn is not None:
                    cmd += ["-servername", sn]
                if subject != "CN = default.test":
                    cmd += ["-verify_hostname", sn]
                r = subprocess.run(cmd, input=b"EHLO client.test\r\nQUIT\r\n",
                                   capture_output=True, timeout=30)
                out = r.stdout.decode(errors="replace")
                self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors="replace"))
                self.assertRegex(out, r"subject=%s\n" % re.escape(subject))
                self.assertIn("Verify return code: 0 (ok)", out)
                self.assertRegex(out, r"Server public key is (256|2048) bit")
                self.assertIn("2048 bit" if keytype == "RSA" else "256 bit", out)
                self.assertRegex(out, r"\n221[ -]")

    # client certificates -------------------------------------------------------

    def test_require_good_certificate_relays_and_logs(self):
        oc = ops_certs()
        for listener, sn in (("smtps_req", None), ("sub_req", "mail.a.test"),
                             ("smtps_req", "x.b.test")):
            with self.subTest(listener=listener, server_name=sn):
                c = self.connect(listener, sn, cert=oc.alice)
                self.send_one(c, "alice")
                line = self.session_line(listener, sn or "-")
                self.assertIn('client_cert="%s" ' % ALICE, line)
                if sn is not None:
                    self.assertEqual(served_cn(c), "mail.a.test" if sn.startswith("mail")
                                     else "*.b.test")

    def test_require_without_certificate_fails(self):
        for listener in ("smtps_req", "sub_req"):
            with self.subTest(listener=listener):
                self.refused(listener, None)

    def test_certificate_from_another_ca_fails(self):
        oc = ops_certs()
        for listener in ("smtps_req", "sub_req", "smtps_opt"):
            with self.subTest(listener=listener):
                self.refused(listener, oc.stranger)

    def test_optional(self):
        oc = ops_certs()
        c = self.connect("smtps_opt", "other.a.test")
        self.send_one(c, "anonymous")
        self.assertIn("client_cert=- ", self.session_line("smtps_opt", "other.a.test"))
        c = self.connect("smtps_opt", "x.b.test", cert=oc.alice)
        self.send_one(c, "optional-alice")
        self.assertIn('client_cert="%s" ' % ALICE, self.session_line("smtps_opt", "x.b.test"))

    def test_no_certificate_asked_without_verify_client(self):
        """A listener without verify_client never asks: a client that has a
        certificate does not send it, and nothing is logged."""
        oc = ops_certs()
        c = self.connect("smtps", "mail.a.test", cert=oc.alice)
        self.send_one(c, "unasked")
        self.assertIn("client_cert=- ", self.session_line("smtps", "mail.a.test"))


class ConfigCheckTest(lib.IntegrationTest):
    """`smtpgate -t` loads every [tls:NAME] pair and every client_ca, and
    points at the line to fix."""

    def check(self, text):
        path = os.path.join(self.workdir, "t.ini")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([lib.gateway_bin(), "-t", "-c", path], capture_output=True,
                           timeout=30)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace"), path

    def base(self, sni_key=None, ca=None):
        oc = ops_certs()
        return ("[gateway]\nbackend = 127.0.0.1:25\n"
                "[tls]\ncert = %s\nkey = %s\n"
                "[tls:exact]\nnames = mail.a.test\ncert = %s\nkey = %s\n"
                "[listener:a]\naddress = 127.0.0.1:465\nmode = implicit\n"
                "verify_client = require\nclient_ca = %s\n"
                % (oc.default[0], oc.default[1], oc.exact_ec[0], sni_key or oc.exact_ec[1],
                   ca or oc.client_ca[0]))

    def test_good(self):
        rc, out, path = self.check(self.base())
        self.assertEqual((rc, out), (0, "%s: ok\n" % path))

    def test_wrong_key_in_tls_name(self):
        rc, out, path = self.check(self.base(sni_key=ops_certs().wild[1]))
        self.assertEqual(rc, 1)
        self.assertTrue(out.startswith("%s:6: [tls:exact] key %s: " % (path, ops_certs().wild[1])),
                        out)

    def test_missing_client_ca(self):
        missing = os.path.join(self.workdir, "nope.pem")
        rc, out, path = self.check(self.base(ca=missing))
        self.assertEqual(rc, 1)
        self.assertTrue(out.startswith("%s:14: listener 'a': client_ca %s" % (path, missing)), out)

    def test_name_twice(self):
        rc, out, path = self.check(self.base() + "[tls:again]\nnames = x.test, MAIL.a.test\n"
                                   "cert = /c\nkey = /k\n")
        self.assertEqual(rc, 1)
        self.assertIn("%s:16: 'mail.a.test' is listed already in [tls:exact]" % path, out)


if __name__ == "__main__":
    unittest.main()
