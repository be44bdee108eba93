"""Client identity: who the backend (and the gateway itself) thinks the
client is.

- client_identity = proxy-v1 | proxy-v2: the gateway puts a PROXY header in
  front of the backend connection. Checked byte for byte against a capture
  server (addresses, v2's PP2_TYPE_SSL and PP2_TYPE_AUTHORITY), and end to
  end against a real Postfix with smtpd_upstream_proxy_protocol = haproxy,
  whose log must show the client's own source port.
- client_identity = xclient: the gateway introduces the client with
  XCLIENT (real Postfix with smtpd_authorized_xclient_hosts, and the fake
  backend), and fails closed (421, no client command reaches the backend)
  when XCLIENT is missing or refused.
- accept_proxy / trusted_proxies: the gateway behind a load balancer
  (scripted PROXY headers, and a real HAProxy): the header's address is the
  client's in the session log line (client=... via=...), the per-IP limits
  and client_identity; untrusted peers, garbage, late, wrong-version and
  split headers, and v2 LOCAL health checks.

Everything is on 127.0.0.0/8 (the load balancer and the client use
127.0.0.3 and 127.0.0.2 so that they cannot be mistaken for each other),
ports picked free, every wait has a deadline. The Postfix tests need Postfix
and root and are skipped without them (failed under CI, like
test_postfix.py); the HAProxy tests need the haproxy package.
"""

import os
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import unittest
import uuid

import lib
import test_postfix as tp

SMTP_TIMEOUT = 20.0
LB = "127.0.0.3"          # the load balancer's source address (HAProxy)
CLIENT = "127.0.0.2"      # the client's source address behind HAProxy
TRUSTED = "127.0.0.0/8, ::1"
XCLIENT_EXT = ("PIPELINING,8BITMIME,ENHANCEDSTATUSCODES,"
               "XCLIENT NAME ADDR PORT PROTO HELO DESTADDR DESTPORT")


def _skip_or_fail(why):
    if os.environ.get("CI"):
        raise AssertionError("CI is set but these tests cannot run: " + why)
    raise unittest.SkipTest(why)


def session_line(gw, client, listener, via=None, timeout=5.0):
    """Wait for the gateway's session line for `client` ((host, port)) on
    `listener`; with via=(host, port) it must name that load balancer, with
    via=None it must name none. Returns the match (group 1: the session
    number)."""
    pat = r"session=(\d+) client=%s%s listener=%s " % (
        re.escape(lib.fmt_addr(*client)),
        (" via=" + re.escape(lib.fmt_addr(*via))) if via else "", re.escape(listener))
    return gw.wait_log(pat, timeout)


def mode_of(gw, listener):
    return {name: mode for name, mode, *_ in gw.listeners}[listener]


def own_connection(pid, remote_port, local_host="127.0.0.1"):
    """The local (host, port) of process pid's established connection to
    127.0.0.1:remote_port from local_host (exactly one must exist)."""
    seen = []

    def look():
        seen[:] = [c["local"] for c in lib.tcp_connections(pid)
                   if c["state"] == "01" and c["remote"] == ("127.0.0.1", remote_port)
                   and c["local"][0] == local_host]
        return len(seen) == 1
    try:
        lib.wait_until(look, 5.0, "one connection")
    except lib.Timeout:
        raise lib.Timeout("pid %d: not exactly one connection from %s to port %d: %r"
                          % (pid, local_host, remote_port, seen))
    return seen[0]


# --------------------------------------------------------------------------
# a backend that records the PROXY header the gateway sends

class CaptureBackend:
    """Accepts connections, decodes the PROXY header at the start of each
    (lib.parse_proxy), then plays a minimal SMTP server: 220, EHLO, NOOP,
    QUIT. headers: [(decoded header or the ValueError, raw bytes)]."""

    name = "capture"

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.headers = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(10.0)
        data = b""
        try:
            with conn:
                while True:
                    try:
                        parsed = lib.parse_proxy(data)
                    except ValueError as e:
                        with self.lock:
                            self.headers.append((e, data))
                        return
                    if parsed is not None:
                        break
                    more = conn.recv(4096)
                    if not more:
                        with self.lock:
                            self.headers.append((ValueError("closed inside the header"), data))
                        return
                    data += more
                hdr, used = parsed
                with self.lock:
                    self.headers.append((hdr, data[:used]))
                rest = data[used:]
                conn.sendall(b"220 capture.test ESMTP\r\n")
                while True:
                    while b"\r\n" not in rest:
                        more = conn.recv(4096)
                        if not more:
                            return
                        rest += more
                    line, rest = rest.split(b"\r\n", 1)
                    verb = line.split(b" ")[0].upper()
                    if verb == b"EHLO":
                        conn.sendall(b"250-capture.test\r\n250 PIPELINING\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"250 ok\r\n")
        except OSError:
            return

    def wait_header(self, src, timeout=5.0):
        """(decoded header, raw bytes) of the header that names client src
        ((host, port)). Raises lib.Timeout (listing what came, invalid
        headers included) if none does in time."""
        def look():
            with self.lock:
                for hdr, raw in self.headers:
                    if not isinstance(hdr, Exception) and hdr["src"] == src:
                        return hdr, raw
            return None
        try:
            return lib.wait_until(look, timeout, "header")
        except lib.Timeout:
            with self.lock:
                raise lib.Timeout("no PROXY header for %r at the capture backend in %.0fs; "
                                  "got: %r" % (src, timeout, self.headers))

    def stop(self):
        self.stopping.set()
        self.lsock.close()
        self.thread.join(5)

    def diagnostics(self):
        with self.lock:
            return "--- capture backend (%s) headers ---\n%s" % (
                self.addr, "\n".join("%r\n  raw %r" % h for h in self.headers))


class ProxyHeaderToBackendTest(lib.IntegrationTest):
    """client_identity = proxy-v1 | proxy-v2: the header the gateway sends
    first on the backend connection."""

    @classmethod
    def setUpClass(cls):
        cls.cap = CaptureBackend()
        cls.addClassCleanup(cls.cap.stop)
        cls.shared = [cls.cap]
        listeners = [
            ("v1-smtps", "implicit", {"client_identity": "proxy-v1"}),
            ("v1-sub", "starttls", {"client_identity": "proxy-v1"}),
            ("v2-smtps", "implicit", {"client_identity": "proxy-v2"}),
            ("v2-sub", "starttls", {"client_identity": "proxy-v2"}),
            ("v2-plain", "starttls", {"client_identity": "proxy-v2", "require_tls": "no"}),
            # the [gateway] default
            ("default", "implicit", {}),
            ("lb-v1", "implicit", {"client_identity": "proxy-v1", "accept_proxy": "any",
                                   "trusted_proxies": TRUSTED}),
            ("lb-v2", "implicit", {"client_identity": "proxy-v2", "accept_proxy": "any",
                                   "trusted_proxies": TRUSTED}),
        ]
        cls.v6 = lib.ipv6_available()
        if cls.v6:
            listeners.append(("v1-smtps6", "implicit", {"client_identity": "proxy-v1",
                                                        "_host": "::1"}))
        cls.gw = lib.start_gateway_for(cls, cls.cap.addr, listeners=listeners,
                                       gateway={"client_identity": "proxy-v2"})
        cls.shared = [cls.cap, cls.gw]

    def setUp(self):
        super().setUp()
        self.check_shared_alive()

    def session(self, listener, host="127.0.0.1", header=None, expect_src=None):
        """One session on `listener` (after a PROXY `header`, if given) up
        to an EHLO relayed by the backend. Returns (client (host, port),
        TLS version, cipher, the decoded header the backend got, its raw
        bytes, the listener's port). The backend's header is looked up by
        expect_src, by default the client's own address."""
        port = self.gw.port(listener)
        implicit = mode_of(self.gw, listener) == "implicit"
        if header is None:
            c = lib.SMTPClient(port, host=host, tls=implicit)
        else:
            c = lib.ProxiedClient(port, header, host=host, tls=implicit)
        with c:
            src = c.sock.getsockname()[:2]
            self.assertCode(c.reply(), 220)
            if not implicit:
                self.assertCode(c.ehlo(), 250)
                self.assertCode(c.starttls(), 220)
            r = c.ehlo()
            self.assertCode(r, 250)
            self.assertIn("capture.test", r.lines[0])
            version = c.sock.version() if c.tls else None
            cipher = c.sock.cipher()[0] if c.tls else None
            self.assertCode(c.cmd("QUIT"), 221)
        src = (src[0], src[1])
        hdr, raw = self.cap.wait_header(expect_src or src)
        return src, version, cipher, hdr, raw, port

    def test_v1_line(self):
        for listener in ("v1-smtps", "v1-sub"):
            with self.subTest(listener=listener):
                src, _, _, hdr, raw, port = self.session(listener)
                self.assertEqual(raw, b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (src[1], port))

    def test_v1_line_ipv6(self):
        if not self.v6:
            self.skipTest("no IPv6 loopback")
        src, _, _, hdr, raw, port = self.session("v1-smtps6", host="::1")
        self.assertEqual(raw, b"PROXY TCP6 ::1 ::1 %d %d\r\n" % (src[1], port))

    def test_v2_carries_addresses_tls_and_sni(self):
        for listener in ("v2-smtps", "v2-sub", "default"):
            with self.subTest(listener=listener):
                src, version, cipher, hdr, raw, port = self.session(listener)
                self.assertEqual(hdr["version"], 2)
                self.assertEqual(hdr["command"], "PROXY")
                self.assertEqual(hdr["family"], "TCP4")
                self.assertEqual(hdr["src"], src)
                self.assertEqual(hdr["dst"], ("127.0.0.1", port))
                self.assertEqual(hdr["authority"], "gw.test", hdr)
                self.assertIsNotNone(hdr["ssl"], "no PP2_TYPE_SSL: %r" % hdr)
                self.assertEqual(hdr["ssl"]["client"] & lib.PP2_CLIENT_SSL, lib.PP2_CLIENT_SSL, hdr)
                self.assertEqual(hdr["ssl"]["verify"], 0, hdr)
                self.assertEqual(hdr["ssl"]["version"], version, hdr)
                self.assertEqual(hdr["ssl"]["cipher"], cipher, hdr)

    def test_accept_proxy_address_passed_on(self):
        """Behind a load balancer, the backend's header carries the address
        from the load balancer's header; after a LOCAL header, the real
        peer's."""
        far = ("198.51.100.1", 465)
        with self.subTest("v1 header -> proxy-v1"):
            h = lib.proxy_v1(("203.0.113.70", 40070), far)
            _, _, _, hdr, raw, _ = self.session("lb-v1", header=h,
                                                expect_src=("203.0.113.70", 40070))
            self.assertEqual(raw, h)
        with self.subTest("v2 IPv6 header -> proxy-v1"):
            h = lib.proxy_v2(("2001:db8::71", 40071), ("2001:db8::1", 465))
            _, _, _, hdr, raw, _ = self.session("lb-v1", header=h,
                                                expect_src=("2001:db8::71", 40071))
            self.assertEqual(raw, b"PROXY TCP6 2001:db8::71 2001:db8::1 40071 465\r\n")
        with self.subTest("v1 header -> proxy-v2 with the gateway's TLS"):
            h = lib.proxy_v1(("203.0.113.72", 40072), far)
            _, version, cipher, hdr, raw, _ = self.session("lb-v2", header=h,
                                                           expect_src=("203.0.113.72", 40072))
            self.assertEqual((hdr["version"], hdr["command"], hdr["dst"]), (2, "PROXY", far))
            self.assertEqual((hdr["ssl"] or {}).get("version"), version, hdr)
            self.assertEqual((hdr["ssl"] or {}).get("cipher"), cipher, hdr)
            self.assertEqual(hdr["authority"], "gw.test", hdr)
        with self.subTest("v2 LOCAL -> proxy-v2 with the real peer"):
            src, _, _, hdr, raw, port = self.session("lb-v2", header=lib.proxy_v2(local=True))
            self.assertEqual((hdr["command"], hdr["src"], hdr["dst"]),
                             ("PROXY", src, ("127.0.0.1", port)))

    def test_v2_plaintext_session_has_no_ssl_tlv(self):
        src, _, _, hdr, raw, port = self.session("v2-plain")
        self.assertEqual((hdr["version"], hdr["command"], hdr["src"], hdr["dst"]),
                         (2, "PROXY", src, ("127.0.0.1", port)))
        self.assertIsNone(hdr["ssl"], hdr)
        self.assertIsNone(hdr["authority"], hdr)


# --------------------------------------------------------------------------
# real Postfix: proxy-v1, proxy-v2, xclient

class PostfixServices:
    """Extra smtpd services in a running tests/integration/postfix.sh
    instance, each on its own port with -o overrides, added with postconf -M
    and a reload. (postfix.sh's own readiness probe expects a greeting
    without sending anything, so an instance whose main.cf says
    smtpd_upstream_proxy_protocol = haproxy cannot be started by it.)"""

    @staticmethod
    def add(pf, services):
        """services: {key: [name=value, ...]}; returns {key: port}."""
        etc = os.path.join(pf.dir, "etc")
        ports = {}
        entries = []
        for key, settings in services.items():
            port = lib.free_port()
            ports[key] = port
            line = "127.0.0.1:%d inet n - n - - smtpd" % port
            line += "".join(" -o %s" % s for s in settings)
            entries.append("127.0.0.1:%d/inet=%s" % (port, line))
        for cmd in (["postconf", "-c", etc, "-M"] + entries, ["postfix", "-c", etc, "reload"]):
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            if r.returncode != 0:
                raise AssertionError("%s failed:\n%s"
                                     % (" ".join(cmd), r.stdout.decode("utf-8", "replace")))
        return ports


def probe_proxy_service(port):
    """True once 127.0.0.1:port is a Postfix smtpd that takes a PROXY header."""
    try:
        with lib.ProxiedClient(port, lib.proxy_v1(("192.0.2.1", 1), ("127.0.0.1", port)),
                               timeout=3) as c:
            return c.reply().code == 220 and c.cmd("QUIT").code == 221
    except (OSError, lib.Timeout, lib.ConnectionClosed, AssertionError):
        return False


def probe_xclient_service(port):
    """True once 127.0.0.1:port offers XCLIENT to 127.0.0.1."""
    try:
        with lib.SMTPClient(port, timeout=3) as c:
            if c.reply().code != 220:
                return False
            ok = "XCLIENT" in c.ehlo().keywords()
            c.cmd("QUIT")
            return ok
    except (OSError, lib.Timeout, lib.ConnectionClosed, AssertionError):
        return False


class ProxiedSMTP(smtplib.SMTP):
    """smtplib.SMTP that sends a PROXY header first, as a load balancer in
    front of the gateway would."""

    def __init__(self, header, *args, **kw):
        self._header = header
        super().__init__(*args, **kw)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(self._header(sock) if callable(self._header) else self._header)
        return sock


class ProxiedSMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, header, *args, **kw):
        self._header = header
        super().__init__(*args, **kw)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout, self.source_address)
        sock.sendall(self._header(sock) if callable(self._header) else self._header)
        return self.context.wrap_socket(sock, server_hostname=self._host)


class PostfixIdentityTest(lib.IntegrationTest):
    """One private Postfix with three smtpd services, and one gateway whose
    listeners use them:

    - port `proxy`: smtpd_upstream_proxy_protocol = haproxy (v1 and v2),
    - port `xclient`: smtpd_authorized_xclient_hosts = 127.0.0.0/8,
    - postfix.sh's own port: neither (XCLIENT is not offered).

    Postfix logs client ports (smtpd_client_port_logging = yes), so the log
    tells the client's own connection from the gateway's."""

    @classmethod
    def setUpClass(cls):
        why = tp._postfix_missing()
        if why:
            _skip_or_fail(why)
        cls.postfix = tp.Postfix()
        cls.addClassCleanup(cls.postfix.stop)
        cls.shared = [cls.postfix]
        cls.postfix.start("smtpd_client_port_logging=yes")
        cls.pf_ports = PostfixServices.add(cls.postfix, {
            "proxy": ["smtpd_upstream_proxy_protocol=haproxy"],
            "xclient": ["smtpd_authorized_xclient_hosts=127.0.0.0/8"],
        })
        lib.wait_until(lambda: probe_proxy_service(cls.pf_ports["proxy"]), 30,
                       "Postfix's PROXY service after the reload")
        lib.wait_until(lambda: probe_xclient_service(cls.pf_ports["xclient"]), 30,
                       "Postfix's XCLIENT service after the reload")
        cls.maildir = cls.postfix.maildir
        proxy = "127.0.0.1:%d" % cls.pf_ports["proxy"]
        xclient = "127.0.0.1:%d" % cls.pf_ports["xclient"]
        lb = {"accept_proxy": "any", "trusted_proxies": TRUSTED}
        cls.gw = lib.start_gateway_for(cls, cls.postfix.addr, listeners=(
            ("v1-smtps", "implicit", {"client_identity": "proxy-v1", "backend": proxy}),
            ("v1-sub", "starttls", {"client_identity": "proxy-v1", "backend": proxy}),
            ("v2-smtps", "implicit", {"client_identity": "proxy-v2", "backend": proxy}),
            ("v2-sub", "starttls", {"client_identity": "proxy-v2", "backend": proxy}),
            ("lb-v2", "implicit", dict(lb, client_identity="proxy-v2", backend=proxy)),
            ("lb-v1-sub", "starttls", dict(lb, client_identity="proxy-v1", backend=proxy)),
            ("xc-smtps", "implicit", {"client_identity": "xclient", "backend": xclient}),
            ("xc-sub", "starttls", {"client_identity": "xclient", "backend": xclient}),
            ("lb-xc", "implicit", dict(lb, client_identity="xclient", backend=xclient)),
            ("xc-unauth", "implicit", {"client_identity": "xclient"}),   # postfix.sh's port
        ))
        cls.shared = [cls.postfix, cls.gw]

    def setUp(self):
        super().setUp()
        self.check_shared_alive()
        self.log_start = self.maillog_size()

    # --- helpers ---------------------------------------------------------

    def maillog_size(self):
        try:
            return os.path.getsize(self.postfix.maillog)
        except OSError:
            return 0

    def maillog(self):
        """The maillog written since this test started."""
        with open(self.postfix.maillog, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode("utf-8", "replace")

    def wait_maillog(self, pattern, timeout=tp.DELIVERY_TIMEOUT):
        rx = re.compile(pattern, re.M)
        return lib.wait_until(lambda: rx.search(self.maillog()), timeout,
                              "a Postfix log line matching %r" % pattern)

    def rcpt(self, tag):
        return "%s-%s@example.org" % (tag, uuid.uuid4().hex[:12])

    def send(self, listener, tag, header=None, before_send=None):
        """Send one message through `listener` with smtplib (implicit TLS
        or STARTTLS by the listener's mode), after a PROXY header if given.
        Returns (client (host, port) as the gateway's peer sees it, rcpt,
        wire). before_send(smtp) runs while the session is open."""
        sender = "%s@client.test" % tag
        rcpt = self.rcpt(tag)
        wire = tp.make_message(tag, rcpt, sender)
        port = self.gw.port(listener)
        ctx = self.gw.client_context()
        implicit = mode_of(self.gw, listener) == "implicit"
        kw = {"local_hostname": "client.test", "timeout": SMTP_TIMEOUT}
        if implicit:
            s = (ProxiedSMTP_SSL(header, "127.0.0.1", port, context=ctx, **kw) if header
                 else smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, **kw))
        else:
            s = (ProxiedSMTP(header, "127.0.0.1", port, **kw) if header
                 else smtplib.SMTP("127.0.0.1", port, **kw))
        with s:
            src = s.sock.getsockname()[:2]
            code, msg = s.ehlo()
            self.assertEqual(code, 250, msg)
            if not implicit:
                self.assertEqual(s.starttls(context=ctx)[0], 220)
                self.assertEqual(s.ehlo()[0], 250)
            if before_send:
                before_send(s)
            self.assertEqual(s.sendmail(sender, [rcpt], wire), {})
        return src, rcpt, wire

    def delivered(self, rcpt, wire):
        """Wait for the message; check it byte for byte; return (its trace
        header block as text, Postfix's queue id)."""
        (data,) = self.maildir.wait_for(rcpt)
        trace, rest = tp.Maildir.split(data)
        self.assertEqual(rest, tp.as_stored(wire))
        trace = trace.decode("utf-8", "replace")
        m = re.search(r"by backend\.test \(Postfix\) with \S+ id ([0-9A-Za-z]+)", trace)
        self.assertTrue(m, "no queue id in the trace headers:\n" + trace)
        return trace, m.group(1)

    def gateway_backend_port(self, backend_port):
        """The gateway's own source port towards Postfix (one session open)."""
        return own_connection(self.gw.proc.pid, backend_port)[1]

    # --- proxy-v1 / proxy-v2 ---------------------------------------------

    def test_proxy_v1_v2_postfix_sees_client_port(self):
        """Postfix (haproxy protocol) logs the client's own source port, not
        the gateway's connection to it; implicit TLS and STARTTLS."""
        for listener in ("v1-smtps", "v1-sub", "v2-smtps", "v2-sub"):
            with self.subTest(listener=listener):
                gw_ports = []

                def note_gateway_port(smtp):
                    gw_ports.append(self.gateway_backend_port(self.pf_ports["proxy"]))
                src, rcpt, wire = self.send(listener, listener, before_send=note_gateway_port)
                trace, qid = self.delivered(rcpt, wire)
                self.assertIn("(unknown [127.0.0.1])", trace)
                self.wait_maillog(r"connect from unknown\[127\.0\.0\.1\]:%d$" % src[1])
                self.wait_maillog(r": %s: client=unknown\[127\.0\.0\.1\]:%d$" % (qid, src[1]))
                self.assertNotEqual(gw_ports[0], src[1])
                self.assertNotRegex(self.maillog(), r"\]:%d\b" % gw_ports[0],
                                    "Postfix logged the gateway's own port")

    def test_accept_proxy_chain_to_postfix(self):
        """load balancer (scripted PROXY v1 / v2 header naming 203.0.113.7)
        -> gateway accept_proxy -> proxy-v2 / proxy-v1 -> Postfix, which
        logs and stamps the address and port from the first header."""
        cases = (
            ("lb-v2", "v1", lambda dst: lib.proxy_v1(("203.0.113.7", 40007), dst), 40007),
            ("lb-v2", "v2", lambda dst: lib.proxy_v2(("203.0.113.7", 40017), dst), 40017),
            ("lb-v1-sub", "v2", lambda dst: lib.proxy_v2(("203.0.113.7", 40027), dst), 40027),
        )
        for listener, version, make, cport in cases:
            with self.subTest(listener=listener, header=version):
                dst = ("127.0.0.1", self.gw.port(listener))
                src, rcpt, wire = self.send(listener, "%s-%s" % (listener, version),
                                            header=lambda sock: make(dst))
                trace, qid = self.delivered(rcpt, wire)
                self.assertIn("from client.test (unknown [203.0.113.7])", trace)
                self.wait_maillog(r"connect from unknown\[203\.0\.113\.7\]:%d$" % cport)
                self.wait_maillog(r": %s: client=unknown\[203\.0\.113\.7\]:%d$" % (qid, cport))
                session_line(self.gw, ("203.0.113.7", cport), listener, via=src)

    # --- xclient -----------------------------------------------------------

    def test_xclient_postfix(self):
        """XCLIENT ADDR/PORT: Postfix attributes the message to the client's
        own port; with accept_proxy, to the header's 203.0.113.8."""
        for listener in ("xc-smtps", "xc-sub"):
            with self.subTest(listener=listener):
                src, rcpt, wire = self.send(listener, listener)
                trace, qid = self.delivered(rcpt, wire)
                self.assertIn("from client.test (unknown [127.0.0.1])", trace)
                self.wait_maillog(r": %s: client=unknown\[127\.0\.0\.1\]:%d$" % (qid, src[1]))
        with self.subTest(listener="lb-xc"):
            dst = ("127.0.0.1", self.gw.port("lb-xc"))
            src, rcpt, wire = self.send("lb-xc", "lb-xc",
                                        header=lib.proxy_v2(("203.0.113.8", 40008), dst))
            trace, qid = self.delivered(rcpt, wire)
            self.assertIn("from client.test (unknown [203.0.113.8])", trace)
            self.wait_maillog(r": %s: client=unknown\[203\.0\.113\.8\]:40008$" % qid)
            session_line(self.gw, ("203.0.113.8", 40008), "lb-xc", via=src)

    def test_xclient_postfix_not_authorized_fails_closed(self):
        """Postfix without smtpd_authorized_xclient_hosts does not offer
        XCLIENT: the client gets 421, Postfix sees only the gateway's EHLO."""
        srcs = []

        def header(sock):
            srcs.append(sock.getsockname()[:2])
            return b""          # no header: only to learn the source port
        with self.assertRaises(smtplib.SMTPConnectError) as cm:
            ProxiedSMTP_SSL(header, "127.0.0.1", self.gw.port("xc-unauth"), timeout=SMTP_TIMEOUT,
                            context=self.gw.client_context(), local_hostname="client.test")
        self.assertEqual(cm.exception.smtp_code, 421, cm.exception)
        sid = session_line(self.gw, srcs[0], "xc-unauth").group(1)
        self.gw.wait_log(r"session=%s backend does not offer XCLIENT ADDR" % sid)

        def finished():
            done = [lines for lines in self.smtpd_sessions().values()
                    if lines[-1].startswith("disconnect from ")]
            return done or None
        done = lib.wait_until(finished, tp.DELIVERY_TIMEOUT, "Postfix to log the session's end")
        self.assertEqual(len(done), 1, done)
        lines = done[0]
        self.assertRegex(lines[0], r"^connect from unknown\[127\.0\.0\.1\]:\d+$")
        self.assertRegex(lines[-1], r"^disconnect from unknown\[127\.0\.0\.1\]:\d+ "
                         r"ehlo=1 (quit=1 )?commands=\d+$",
                         "Postfix saw more than the gateway's EHLO: %r" % lines)
        for line in lines:
            self.assertNotRegex(line, r"client=|client\.test|XCLIENT|xclient", lines)

    def smtpd_sessions(self):
        """The Postfix smtpd sessions that began since this test started:
        {smtpd pid: [log texts from its "connect from" line on]}."""
        out = {}
        for line in self.maillog().splitlines():
            m = re.search(r"/smtpd\[(\d+)\]: (.*)$", line)
            if not m:
                continue
            pid, text = m.groups()
            if text.startswith("connect from "):
                out[pid] = [text]
            elif pid in out:
                out[pid].append(text)
        return out


# --------------------------------------------------------------------------
# XCLIENT with the fake backend

class XclientFakeBackendTest(lib.IntegrationTest):
    """client_identity = xclient against tests/backend.py: the XCLIENT line
    itself, and failing closed."""

    @classmethod
    def setUpClass(cls):
        d = lib.new_workdir(cls.__name__)
        cls.backends = {}
        for key, args in (
            ("ok", ["--ext", XCLIENT_EXT, "--xclient-reply", "220"]),
            ("none", []),                                               # no XCLIENT at all
            ("noaddr", ["--ext", "PIPELINING,8BITMIME,XCLIENT NAME HELO",
                        "--xclient-reply", "220"]),
            ("refuses", ["--ext", XCLIENT_EXT, "--xclient-reply", "550"]),
        ):
            be = lib.Backend(d, args, name="backend-" + key)
            cls.addClassCleanup(be.stop)
            be.start()
            cls.backends[key] = be
        xc = {"client_identity": "xclient"}
        cls.gw = lib.start_gateway_for(cls, cls.backends["ok"].addr, listeners=(
            ("ok", "implicit", dict(xc)),
            ("ok-sub", "starttls", dict(xc)),
            ("none", "implicit", dict(xc, backend=cls.backends["none"].addr)),
            ("none-sub", "starttls", dict(xc, backend=cls.backends["none"].addr)),
            ("noaddr", "implicit", dict(xc, backend=cls.backends["noaddr"].addr)),
            ("refuses", "implicit", dict(xc, backend=cls.backends["refuses"].addr)),
        ))
        cls.shared = list(cls.backends.values()) + [cls.gw]

    def setUp(self):
        super().setUp()
        self.check_shared_alive()

    def test_xclient_then_client_dialogue(self):
        for listener in ("ok", "ok-sub"):
            with self.subTest(listener=listener):
                be = self.backends["ok"]
                marker = "xclient-ok-%s-%s" % (listener, uuid.uuid4().hex[:8])
                port = self.gw.port(listener)
                implicit = mode_of(self.gw, listener) == "implicit"
                with lib.SMTPClient(port, tls=implicit) as c:
                    src = c.sock.getsockname()[:2]
                    greeting = c.reply()
                    self.assertCode(greeting, 220)
                    if not implicit:
                        self.assertCode(c.ehlo(), 250)
                        self.assertCode(c.starttls(), 220)
                    else:
                        self.assertIn("after XCLIENT", greeting.text)
                    r = c.ehlo("client.test")
                    self.assertCode(r, 250)
                    self.assertNotIn("XCLIENT", r.keywords())
                    self.deliver(c, lib.make_message(marker))
                    self.assertCode(c.cmd("QUIT"), 221)
                n, eml, env = be.find_message(marker)
                self.assertEqual(env[0], b"HELO client.test")
                xline = (b"XCLIENT ADDR=127.0.0.1 PORT=%d PROTO=ESMTP "
                         b"DESTADDR=127.0.0.1 DESTPORT=%d\r\n" % (src[1], port))
                log = be.raw_log()
                self.assertIn(b"EHLO gw.test\r\n" + xline + b"EHLO client.test\r\n", log)

    def fail_closed(self, listener, backend, why, sneaky=True):
        """A session on `listener` gets 421 and no client command reaches
        `backend` (its raw log gets only the gateway's own commands).
        sneaky: the client pipelines EHLO and MAIL straight after the
        handshake, without waiting for the greeting."""
        be = self.backends[backend]
        before = len(be.raw_log())
        conns = be.connections()
        implicit = mode_of(self.gw, listener) == "implicit"
        with lib.SMTPClient(self.gw.port(listener), tls=implicit) as c:
            src = c.sock.getsockname()[:2]
            if implicit:
                if sneaky:
                    c.send(b"EHLO sneaky.client\r\nMAIL FROM:<sneaky@client.test>\r\n")
                r = c.reply()
            else:
                self.assertCode(c.reply(), 220)            # the gateway's own
                self.assertCode(c.ehlo(), 250)
                self.assertCode(c.starttls(), 220)
                c.send(b"EHLO sneaky.client\r\n")
                r = c.reply()
            self.assertCode(r, 421)
            c.wait_closed(5.0)
        sid = session_line(self.gw, src, listener).group(1)
        self.gw.wait_log(r"session=%s %s" % (sid, why))
        lib.wait_until(lambda: be.closed_connections() >= conns + 1, 5.0,
                       "the backend connection to close")
        self.assertEqual(be.connections(), conns + 1)
        log = be.raw_log()[before:]
        self.assertTrue(log.startswith(b"EHLO gw.test\r\n"), log)
        for bad in (b"sneaky", b"MAIL", b"RCPT", b"DATA", b"client.test"):
            self.assertNotIn(bad, log)
        return log, src

    def test_no_xclient_fails_closed(self):
        for listener in ("none", "none-sub"):
            with self.subTest(listener=listener):
                log, _ = self.fail_closed(listener, "none", r"backend does not offer XCLIENT ADDR")
                self.assertNotIn(b"XCLIENT", log)

    def test_xclient_without_addr_fails_closed(self):
        log, _ = self.fail_closed("noaddr", "noaddr", r"backend does not offer XCLIENT ADDR")
        self.assertNotIn(b"XCLIENT", log)

    def test_xclient_refused_fails_closed(self):
        log, src = self.fail_closed("refuses", "refuses", r"backend refused XCLIENT with 550")
        self.assertIn(b"\r\nXCLIENT ADDR=127.0.0.1 PORT=%d " % src[1], log)


# --------------------------------------------------------------------------
# accept_proxy behind a real HAProxy

class HAProxyTest(lib.IntegrationTest):
    """HAProxy (mode tcp, send-proxy and send-proxy-v2, from 127.0.0.3) in
    front of the gateway's accept_proxy listeners; the client connects to
    HAProxy from 127.0.0.2."""

    @classmethod
    def setUpClass(cls):
        if lib.haproxy_bin() is None:
            _skip_or_fail("haproxy is not installed (run: scripts/install-deps test)")
        d = lib.new_workdir(cls.__name__)
        cls.be = lib.Backend(d, name="backend")
        cls.addClassCleanup(cls.be.stop)
        cls.be.start()
        cls.be_xc = lib.Backend(d, ["--ext", XCLIENT_EXT, "--xclient-reply", "220"],
                                name="backend-xc")
        cls.addClassCleanup(cls.be_xc.stop)
        cls.be_xc.start()
        lb = {"accept_proxy": "any", "trusted_proxies": TRUSTED}
        cls.gw = lib.start_gateway_for(cls, cls.be.addr, listeners=(
            ("lb", "implicit", dict(lb)),
            ("lb-sub", "starttls", dict(lb)),
            ("lb-xc", "implicit", dict(lb, client_identity="xclient", backend=cls.be_xc.addr)),
        ))
        cls.fe = {}
        for key in ("v1", "v2", "v1-sub", "v2-xc"):
            cls.fe[key] = lib.free_port()
        cls.haproxy = lib.HAProxy(d, cls.haproxy_config(), cls.fe.values())
        cls.addClassCleanup(cls.haproxy.stop)
        cls.shared = [cls.be, cls.be_xc, cls.gw, cls.haproxy]
        cls.haproxy.start()

    @classmethod
    def haproxy_config(cls):
        def pair(key, listener, send):
            return ("frontend fe_%(k)s\n"
                    "    bind 127.0.0.1:%(fe)d\n"
                    "    default_backend be_%(k)s\n"
                    "backend be_%(k)s\n"
                    "    server gw 127.0.0.1:%(gw)d source %(lb)s %(send)s\n"
                    % {"k": key.replace("-", "_"), "fe": cls.fe[key], "gw": cls.gw.port(listener),
                       "lb": LB, "send": send})
        return ("global\n"
                "    log stdout format raw local0 info\n"
                "    maxconn 200\n"
                "defaults\n"
                "    mode tcp\n"
                "    log global\n"
                "    option tcplog\n"
                "    timeout connect 5s\n"
                "    timeout client 30s\n"
                "    timeout server 30s\n"
                + pair("v1", "lb", "send-proxy")
                + pair("v2", "lb", "send-proxy-v2")
                + pair("v1-sub", "lb-sub", "send-proxy")
                + pair("v2-xc", "lb-xc", "send-proxy-v2"))

    def setUp(self):
        super().setUp()
        self.check_shared_alive()
        if self.haproxy.proc.poll() is not None:
            self.fail("haproxy has exited:\n" + self.haproxy.output())

    def through(self, fe, listener, marker, be):
        """A message through HAProxy's frontend `fe` from 127.0.0.2; returns
        (client (host, port), HAProxy's own (host, port) at the gateway)."""
        implicit = not listener.endswith("-sub")
        with lib.ProxiedClient(self.fe[fe], b"", source=CLIENT, tls=implicit) as c:
            self.assertCode(c.reply(), 220)
            if not implicit:
                self.assertCode(c.ehlo(), 250)
                self.assertCode(c.starttls(), 220)
            self.assertCode(c.ehlo(), 250)
            via = own_connection(self.haproxy.proc.pid, self.gw.port(listener), local_host=LB)
            self.deliver(c, lib.make_message(marker))
            self.assertCode(c.cmd("QUIT"), 221)
        be.find_message(marker)
        return c.src, via

    def test_session_line_names_client_and_haproxy(self):
        for fe, listener in (("v1", "lb"), ("v2", "lb"), ("v1-sub", "lb-sub")):
            with self.subTest(frontend=fe):
                src, via = self.through(fe, listener, "haproxy-%s-%s" % (fe, uuid.uuid4().hex[:8]),
                                        self.be)
                self.assertEqual(src[0], CLIENT)
                session_line(self.gw, src, listener, via=via)

    def test_xclient_names_client_behind_haproxy(self):
        marker = "haproxy-xc-%s" % uuid.uuid4().hex[:8]
        src, via = self.through("v2-xc", "lb-xc", marker, self.be_xc)
        self.assertIn(b"XCLIENT ADDR=%s PORT=%d PROTO=ESMTP DESTADDR=127.0.0.1 DESTPORT=%d\r\n"
                      % (CLIENT.encode(), src[1], self.fe["v2-xc"]), self.be_xc.raw_log())
        session_line(self.gw, src, "lb-xc", via=via)


# --------------------------------------------------------------------------
# accept_proxy edge cases

def tls_behind_header_one_write(port, header, timeout=10.0):
    """Send `header` and the TLS ClientHello in one write, finish the
    handshake, read the greeting, QUIT. Returns (greeting line, the
    connection's (host, port))."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = lib.client_context().wrap_bio(inc, out, server_hostname="gw.test")

        def feed():
            left = deadline - time.monotonic()
            if left <= 0:
                raise lib.Timeout("TLS peer silent")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise lib.ConnectionClosed("closed during TLS")
            inc.write(data)

        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(header + out.read())
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = out.read()
                if pending:
                    sock.sendall(pending)
                feed()
        pending = out.read()
        if pending:
            sock.sendall(pending)

        def line():
            got = b""
            while not got.endswith(b"\n"):
                try:
                    got += obj.read(1)
                except ssl.SSLWantReadError:
                    feed()
            return got
        greeting = line()
        obj.write(b"QUIT\r\n")
        sock.sendall(out.read())
        bye = line()
        return greeting, bye, sock.getsockname()[:2]
    finally:
        sock.close()


class AcceptProxyEdgeTest(lib.IntegrationTest):
    """accept_proxy on the gateway with proxy_header = 1 and
    per_ip_connections = 2, fed by scripted load balancers."""

    @classmethod
    def setUpClass(cls):
        d = lib.new_workdir(cls.__name__)
        cls.be = lib.Backend(d)
        cls.addClassCleanup(cls.be.stop)
        cls.be.start()
        trusted = {"trusted_proxies": TRUSTED}
        cls.gw = lib.start_gateway_for(cls, cls.be.addr, listeners=(
            ("any-sub", "starttls", dict(trusted, accept_proxy="any")),
            ("v2-sub", "starttls", dict(trusted, accept_proxy="v2")),
            ("v1-sub", "starttls", dict(trusted, accept_proxy="v1")),
            ("any-tls", "implicit", dict(trusted, accept_proxy="any")),
            ("untrusted", "starttls", {"accept_proxy": "any", "trusted_proxies": "::1"}),
        ), timeouts={"proxy_header": "1"}, extra={"limits": {"per_ip_connections": "2"}})
        cls.shared = [cls.be, cls.gw]

    def setUp(self):
        super().setUp()
        self.check_shared_alive()

    def dst(self, listener):
        return ("127.0.0.1", self.gw.port(listener))

    def greeted(self, listener, header, src, parts=None, pause=0.3):
        """Send `header` (in `parts`, split at those offsets, with a pause
        between) and expect the gateway's 220; the session line then names
        src via our own connection."""
        with lib.ProxiedClient(self.gw.port(listener), b"") as c:
            cuts = [0] + list(parts or []) + [len(header)]
            for i in range(len(cuts) - 1):
                if i:
                    time.sleep(pause)    # a slow load balancer; not a synchronisation
                c.sock.sendall(header[cuts[i]:cuts[i + 1]])
            self.assertCode(c.reply(), 220)
            self.assertCode(c.ehlo(), 250)
            self.assertCode(c.cmd("QUIT"), 221)
        if src is None:
            session_line(self.gw, c.src, listener)
        else:
            session_line(self.gw, src, listener, via=c.src)
        return c.src

    def closed_silently(self, listener, data, reason, within=3.0):
        """Send `data` (may be b""); the gateway closes without a byte,
        within `within` seconds, and (if reason) logs the session with that
        reason. Returns (seconds it took, our (host, port))."""
        with socket.create_connection(("127.0.0.1", self.gw.port(listener)), timeout=5) as s:
            src = s.getsockname()[:2]
            t0 = time.monotonic()
            try:
                if data:
                    s.sendall(data)
            except OSError:
                pass                 # already closed (and reset) by the gateway
            got, _ = lib.raw_until_closed(s, within)
            took = time.monotonic() - t0
        self.assertEqual(got, b"", "bytes before the close")
        if reason is not None:
            self.gw.wait_log(r"client=%s listener=%s .*reason=\"%s\"" % (
                re.escape(lib.fmt_addr(*src)), re.escape(listener), re.escape(reason)))
        return took, src

    def test_untrusted_peer_closed_at_once(self):
        took, src = self.closed_silently("untrusted", b"", None, within=2.0)
        self.gw.wait_log(r"listener untrusted: %s is not in trusted_proxies"
                         % re.escape(lib.fmt_addr(*src)))
        # even with a well-formed header
        header = lib.proxy_v1(("203.0.113.50", 1), self.dst("untrusted"))
        took, src = self.closed_silently("untrusted", header, None, within=2.0)
        self.gw.wait_log(r"listener untrusted: %s is not in trusted_proxies"
                         % re.escape(lib.fmt_addr(*src)))

    def test_garbage_closes(self):
        dst = self.dst("any-sub")
        v2 = lib.proxy_v2(("203.0.113.51", 1), dst)
        cases = {
            "http": b"GET / HTTP/1.0\r\n\r\n",
            "smtp": b"EHLO client.test\r\n",
            "v1 bad family": b"PROXY TCP5 203.0.113.51 127.0.0.1 1 25\r\n",
            "v1 bad port": b"PROXY TCP4 203.0.113.51 127.0.0.1 99999 25\r\n",
            "v1 bad address": b"PROXY TCP4 203.0.113.500 127.0.0.1 1 25\r\n",
            "v1 too long": b"PROXY TCP4 " + b"1" * 120,
            "v2 bad version": v2[:12] + b"\x31" + v2[13:],
            "v2 bad command": v2[:12] + b"\x2f" + v2[13:],
            "v2 huge length": v2[:14] + b"\xff\xff" + v2[16:],
            "tls": b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + b"\x00" * 40,
        }
        for name, data in cases.items():
            with self.subTest(name=name):
                self.closed_silently("any-sub", data, "invalid PROXY header")

    def test_no_header_in_time(self):
        took, _ = self.closed_silently("any-sub", b"", "no PROXY header in time", within=5.0)
        self.assertGreater(took, 0.7)
        self.assertLess(took, 3.0)
        # half a header, then nothing
        half = lib.proxy_v2(("203.0.113.52", 1), self.dst("any-tls"))[:20]
        took, _ = self.closed_silently("any-tls", half, "no PROXY header in time", within=5.0)
        self.assertGreater(took, 0.7)
        self.assertLess(took, 3.0)

    def test_header_deadline_not_reset_by_trickle(self):
        """proxy_header is a deadline: a byte every 0.2s does not extend it."""
        header = lib.proxy_v1(("203.0.113.53", 40053), self.dst("any-sub"))
        with socket.create_connection(("127.0.0.1", self.gw.port("any-sub")), timeout=5) as s:
            src = s.getsockname()[:2]
            t0 = time.monotonic()
            closed = False
            for i in range(len(header) - 1):
                try:
                    s.sendall(header[i:i + 1])
                except OSError:
                    closed = True
                    break
                s.settimeout(0.2)
                try:
                    data = s.recv(100)
                except socket.timeout:
                    continue
                except OSError:
                    data = b""
                self.assertEqual(data, b"")
                closed = True
                break
            took = time.monotonic() - t0
        self.assertTrue(closed, "still open after the whole header but one byte (%.1fs)" % took)
        self.assertLess(took, 3.0)
        self.gw.wait_log(r"client=%s listener=any-sub .*reason=\"no PROXY header in time\""
                         % re.escape(lib.fmt_addr(*src)))

    def test_versions_per_listener(self):
        v1 = lambda n, l: lib.proxy_v1(("203.0.113.%d" % n, 40000 + n), self.dst(l))   # noqa: E731
        v2 = lambda n, l: lib.proxy_v2(("203.0.113.%d" % n, 40000 + n), self.dst(l))   # noqa: E731
        with self.subTest("v1 on a v2-only listener"):
            self.closed_silently("v2-sub", v1(54, "v2-sub"), "invalid PROXY header")
        with self.subTest("v2 on a v1-only listener"):
            self.closed_silently("v1-sub", v2(55, "v1-sub"), "invalid PROXY header")
        with self.subTest("v2 on v2-only"):
            self.greeted("v2-sub", v2(56, "v2-sub"), ("203.0.113.56", 40056))
        with self.subTest("v1 on v1-only"):
            self.greeted("v1-sub", v1(57, "v1-sub"), ("203.0.113.57", 40057))
        with self.subTest("ipv6 in the header"):
            h = lib.proxy_v2(("2001:db8::58", 40058), ("2001:db8::1", 465))
            self.greeted("any-sub", h, ("2001:db8::58", 40058))

    def test_split_header(self):
        v1 = lib.proxy_v1(("203.0.113.60", 40060), self.dst("any-sub"))
        v2 = lib.proxy_v2(("203.0.113.61", 40061), self.dst("any-sub"),
                          tlvs=[(lib.PP2_TYPE_AUTHORITY, b"lb.test"),
                                (lib.PP2_TYPE_NOOP, b"\0" * 5)])
        with self.subTest("v1 mid-line"):
            self.greeted("any-sub", v1, ("203.0.113.60", 40060), parts=[9])
        with self.subTest("v2 in the signature and in the addresses"):
            self.greeted("any-sub", v2, ("203.0.113.61", 40061), parts=[5, 20])
        with self.subTest("v2 byte by byte in the fixed part"):
            self.greeted("any-sub", v2, ("203.0.113.61", 40061), parts=list(range(1, 17)),
                         pause=0.02)
        with self.subTest("implicit TLS after a split header"):
            h = lib.proxy_v2(("203.0.113.62", 40062), self.dst("any-tls"))
            with lib.ProxiedClient(self.gw.port("any-tls"), h[:14]) as c:
                time.sleep(0.3)            # a slow load balancer; not a synchronisation
                c.sock.sendall(h[14:])
                c.wrap()
                self.assertCode(c.reply(), 220)
                self.assertCode(c.cmd("QUIT"), 221)
            session_line(self.gw, ("203.0.113.62", 40062), "any-tls", via=c.src)

    def test_header_and_client_hello_in_one_write(self):
        """The ClientHello right behind the header (one TCP segment) stays
        for TLS."""
        for name, make in (("v1", lib.proxy_v1), ("v2", lib.proxy_v2)):
            with self.subTest(header=name):
                cport = 40063 if name == "v1" else 40064
                greeting, bye, own = tls_behind_header_one_write(
                    self.gw.port("any-tls"), make(("203.0.113.63", cport), self.dst("any-tls")))
                self.assertTrue(greeting.startswith(b"220 "), greeting)
                self.assertTrue(bye.startswith(b"221 "), bye)
                session_line(self.gw, ("203.0.113.63", cport), "any-tls", via=own)

    def test_local_and_unknown_use_the_real_peer(self):
        """A v2 LOCAL header (a health check) and a v1 UNKNOWN line are
        accepted; the session is the load balancer's own: no via=."""
        with self.subTest("v2 LOCAL"):
            self.greeted("any-sub", lib.proxy_v2(local=True), None)
        with self.subTest("v2 LOCAL on a v2-only listener"):
            self.greeted("v2-sub", lib.proxy_v2(local=True), None)
        with self.subTest("v2 PROXY, family UNSPEC"):
            self.greeted("any-sub", lib.proxy_v2(), None)
        with self.subTest("v1 UNKNOWN"):
            self.greeted("any-sub", b"PROXY UNKNOWN\r\n", None)
        with self.subTest("implicit TLS after a LOCAL header"):
            local = lib.proxy_v2(local=True)
            with lib.ProxiedClient(self.gw.port("any-tls"), local, tls=True) as c:
                self.assertCode(c.reply(), 220)
                self.assertCode(c.cmd("QUIT"), 221)
            session_line(self.gw, c.src, "any-tls")

    def test_per_ip_limit_counts_header_address(self):
        """per_ip_connections = 2 applies to the header's address, not to
        the load balancer's."""
        port = self.gw.port("any-sub")
        h = lambda a, p: lib.proxy_v1((a, p), self.dst("any-sub"))   # noqa: E731
        held = []
        try:
            for i in range(2):
                c = lib.ProxiedClient(port, h("198.51.100.20", 41000 + i))
                held.append(c)
                self.assertCode(c.reply(), 220)
            c = lib.ProxiedClient(port, h("198.51.100.20", 41002))
            held.append(c)
            r = c.reply()
            self.assertCode(r, 421)
            c.wait_closed(5.0)
            # another address behind the same load balancer still gets in
            c = lib.ProxiedClient(port, h("198.51.100.21", 41003))
            held.append(c)
            self.assertCode(c.reply(), 220)
            self.assertCode(c.cmd("QUIT"), 221)
        finally:
            for c in held:
                c.close()
        self.gw.wait_log(r"client=198\.51\.100\.20:41002 via=%s listener=any-sub "
                         % re.escape(lib.fmt_addr(*held[2].src)))
        # once those sessions are over, the address has its slots back
        for i, c in enumerate(held[:2]):
            session_line(self.gw, ("198.51.100.20", 41000 + i), "any-sub", via=c.src)
        with lib.ProxiedClient(port, h("198.51.100.20", 41004)) as c:
            self.assertCode(c.reply(), 220)
            self.assertCode(c.cmd("QUIT"), 221)


if __name__ == "__main__":
    unittest.main()
