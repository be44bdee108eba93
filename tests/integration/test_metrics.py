"""/metrics and /healthz: the real gateway with `metrics = 127.0.0.1:PORT`,
real sessions through it (implicit TLS, STARTTLS, a message, a refused
connection, a failed handshake, a backend that is down), and the counters
checked to move by exactly what those sessions did. The text is checked
with Prometheus' own parser (`promtool check metrics`), and the HTTP
server's error cases and its behaviour under a slowloris client too.
"""

import re
import socket
import subprocess
import time

import lib
from lib import (SMTPClient, SourcedClient, make_message, raw_until_closed, recv_some,
                 starttls_client, tls_client, uniq, wait_until)

HTTP_MAX_CONNS = 16          # proxy/http.h
HTTP_TIMEOUT = 5.0


def http(port, request, timeout=10.0):
    """Send raw request bytes; return (status, headers dict, body) of the
    reply, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data, _ = raw_until_closed(s, timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get(port, path, method="GET"):
    return http(port, ("%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, path)).encode())


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, ((label, value), ...)): float} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, "unparsable line %r" % line
        labels = tuple(sorted(LABEL.findall(m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def total(samples, name, **labels):
    """The sum of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class MetricsTest(lib.IntegrationTest):

    def start(self, backend_addr=None, **kw):
        self.mport = lib.free_port()
        gw_opts = {"metrics": "127.0.0.1:%d" % self.mport}
        gw_opts.update(kw.pop("gateway", {}))
        if backend_addr is None:
            self.be = self.start_backend()
            backend_addr = self.be.addr
        self.gw = self.start_gateway(backend_addr, gateway=gw_opts, **kw)
        wait_until(lambda: lib.can_connect(self.mport), lib.READY_TIMEOUT, "metrics port")
        return self.gw

    def scrape(self):
        status, headers, body = get(self.mport, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"))
        return body.decode()

    def settled(self):
        """A scrape once no session is open and every session that was
        opened has ended (the readiness probes' too), so that later
        differences are this test's alone."""
        def quiet():
            s = parse(self.scrape())
            opened = total(s, "smtpgate_connections_total")
            if (total(s, "smtpgate_connections_open") == 0 and
                    total(s, "smtpgate_sessions_ended_total") == opened):
                return s
            return None
        return wait_until(quiet, 10, "no open sessions")

    def wait_metric(self, before, name, delta, **labels):
        """Wait until `name{labels}` has grown by exactly `delta` since
        `before`; return the scrape."""
        want = total(before, name, **labels) + delta

        def grown():
            s = parse(self.scrape())
            return s if total(s, name, **labels) >= want else None
        s = wait_until(grown, 10, "%s%r to grow by %s" % (name, labels, delta))
        self.assertEqual(total(s, name, **labels), want, "%s%r" % (name, labels))
        return s

    def promtool(self, text):
        self.assertTrue(lib.has_tool("promtool"),
                        "promtool missing: scripts/install-deps test installs it")
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics:\n%s\n---\n%s"
                         % (p.stdout.decode(), text))

    # ------------------------------------------------------------------

    def test_sessions_move_the_counters_and_promtool_accepts_them(self):
        self.start()
        self.promtool(self.scrape())
        before = self.settled()

        with tls_client(self.gw) as c:                       # implicit TLS, one message
            self.assertCode(c.ehlo(), 250)
            self.deliver(c, make_message(uniq("imp")))
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        c = starttls_client(self.gw)                         # STARTTLS, one message
        with c:
            self.assertCode(c.ehlo(), 250)
            self.deliver(c, make_message(uniq("sub")))
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        with socket.create_connection(("127.0.0.1", self.gw.port("smtps"))) as s:
            s.sendall(b"EHLO plaintext.test\r\n")             # not TLS: handshake fails
            raw_until_closed(s, 10)

        after = self.settled()
        text = self.scrape()
        self.promtool(text)

        def d(name, **labels):
            return total(after, name, **labels) - total(before, name, **labels)

        self.assertEqual(d("smtpgate_connections_total", listener="smtps"), 2)
        self.assertEqual(d("smtpgate_connections_total", listener="submission"), 1)
        self.assertEqual(d("smtpgate_tls_handshakes_total", listener="smtps"), 1)
        self.assertEqual(d("smtpgate_tls_handshakes_total", listener="submission"), 1)
        self.assertEqual(d("smtpgate_starttls_total", listener="submission"), 1)
        self.assertEqual(d("smtpgate_starttls_total", listener="smtps"), 0)
        self.assertEqual(d("smtpgate_tls_handshake_failures_total", listener="smtps",
                           reason="not_tls"), 1)
        self.assertEqual(d("smtpgate_messages_total", listener="smtps"), 1)
        self.assertEqual(d("smtpgate_messages_total", listener="submission"), 1)
        for l in ("smtps", "submission"):
            self.assertEqual(d("smtpgate_sessions_ended_total", listener=l, reason="quit"), 1)
            self.assertEqual(d("smtpgate_replies_total", listener=l, **{"class": "3xx"}), 1)
            self.assertEqual(d("smtpgate_replies_total", listener=l, **{"class": "5xx"}), 0)
            self.assertGreater(d("smtpgate_bytes_total", listener=l, direction="in"), 100)
            self.assertGreater(d("smtpgate_bytes_total", listener=l, direction="out"), 100)
        # 220 banner, EHLO, MAIL, RCPT, 250 after data, 221 (implicit)
        self.assertEqual(d("smtpgate_replies_total", listener="smtps", **{"class": "2xx"}), 6)
        # the gateway's own 220, EHLO and 220 to STARTTLS before TLS, then
        # the same less the backend's banner, which the client never sees
        self.assertEqual(d("smtpgate_replies_total", listener="submission",
                           **{"class": "2xx"}), 8)
        self.assertEqual(d("smtpgate_sessions_ended_total", listener="smtps",
                           reason="tls_failed"), 1)
        self.assertEqual(d("smtpgate_backend_connect_seconds_count", backend=self.be.addr), 2)
        self.assertEqual(d("smtpgate_backend_connect_seconds_bucket", backend=self.be.addr,
                           le="+Inf"), 2)
        self.assertEqual(d("smtpgate_backend_connect_failures_total", backend=self.be.addr), 0)
        self.assertRegex(text, r'smtpgate_build_info\{version="[^"]+",openssl="OpenSSL 3')
        self.assertIn('smtpgate_reloads_total{result="ok"} 0', text)
        # Every listener and label value is there from the start, at zero.
        self.assertEqual(after[("smtpgate_connections_refused_total",
                                (("listener", "alt"), ("reason", "max_connections")))], 0)

    def test_counters_move_while_a_session_runs(self):
        self.start()
        before = self.settled()
        with tls_client(self.gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.deliver(c, make_message(uniq("live")))
            # Still open: the message and its replies are counted already.
            s = self.wait_metric(before, "smtpgate_messages_total", 1, listener="smtps")
            self.assertEqual(total(s, "smtpgate_connections_open", listener="smtps"), 1)
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        s = self.settled()
        self.assertEqual(total(s, "smtpgate_connections_open", listener="smtps"), 0)

    def test_refused_over_the_per_ip_limit(self):
        self.start(extra=lib.limits_section(per_ip_connections=1))
        before = self.settled()
        with SourcedClient(self.gw.port("submission"), "127.0.0.9") as held:
            self.assertCode(held.reply(), 220)
            with SourcedClient(self.gw.port("submission"), "127.0.0.9") as c:
                self.assertCode(c.reply(), 421)
            self.wait_metric(before, "smtpgate_connections_refused_total", 1,
                             listener="submission", reason="per_ip_connections")
        after = self.settled()
        self.assertEqual(total(after, "smtpgate_connections_total", listener="submission")
                         - total(before, "smtpgate_connections_total", listener="submission"), 1)
        self.assertEqual(total(after, "smtpgate_connections_refused_total", reason="max_connections"), 0)

    def test_backend_down(self):
        dead = lib.fmt_addr("127.0.0.1", lib.closed_port())
        self.start(backend_addr=dead)
        before = self.settled()
        with tls_client_nobanner(self.gw) as c:
            self.assertCode(c.reply(), 421)
            c.wait_closed()
        after = self.wait_metric(before, "smtpgate_sessions_ended_total", 1, listener="smtps",
                                 reason="backend_failed")
        self.assertEqual(total(after, "smtpgate_backend_connect_failures_total", backend=dead)
                         - total(before, "smtpgate_backend_connect_failures_total", backend=dead),
                         1)
        self.assertEqual(total(after, "smtpgate_backend_connect_seconds_count", backend=dead), 0)
        status, _, body = get(self.mport, "/healthz")
        self.assertEqual(status, 503)
        self.assertIn(("backend %s: Connection refused" % dead).encode(), body)
        self.promtool(self.scrape())

    def test_healthz_follows_the_backend(self):
        self.start()
        status, headers, body = get(self.mport, "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertEqual(headers["connection"], "close")
        # The probe is a TCP connection, opened and closed.
        wait_until(lambda: self.be.connections() >= 1, 5, "the probe at the backend")
        self.be.stop()
        # Answers are cached for 2 s: poll until the next probe round.
        wait_until(lambda: get(self.mport, "/healthz")[0] == 503, 10, "healthz 503")
        status, _, body = get(self.mport, "/healthz")
        self.assertEqual(status, 503)
        self.assertIn(("backend %s: Connection refused" % self.be.addr).encode(), body)

    def test_healthz_probes_are_cached(self):
        self.start()
        self.assertEqual(get(self.mport, "/healthz")[0], 200)
        n = wait_until(lambda: self.be.connections(), 5, "the probe's connection")
        for _ in range(5):
            self.assertEqual(get(self.mport, "/healthz")[0], 200)
        # Five more requests within the cache time: at most one more probe.
        self.assertLessEqual(self.be.connections(), n + 1)

    def test_http_errors(self):
        self.start()
        self.assertEqual(get(self.mport, "/nope")[0], 404)
        self.assertEqual(get(self.mport, "/")[0], 404)
        status, headers, _ = get(self.mport, "/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "GET, HEAD")
        self.assertEqual(get(self.mport, "/healthz", method="DELETE")[0], 405)
        self.assertEqual(http(self.mport, b"HELLO\r\n\r\n")[0], 400)
        self.assertEqual(http(self.mport, b"GET /metrics\r\n\r\n")[0], 400)
        self.assertEqual(http(self.mport, b"GET metrics HTTP/1.1\r\n\r\n")[0], 400)
        self.assertEqual(http(self.mport, b"GET /metrics HTTP/1.1\r\nX: \0\r\n\r\n")[0], 400)
        big = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n"
        self.assertEqual(http(self.mport, big)[0], 431)
        # HEAD: the headers of a GET, no body.
        status, headers, body = get(self.mport, "/metrics", method="HEAD")
        self.assertEqual(status, 200)
        self.assertGreater(int(headers["content-length"]), 1000)
        self.assertEqual(body, b"")
        # A query string is ignored; the bare-LF request of old tools works.
        self.assertEqual(get(self.mport, "/metrics?x=1")[0], 200)
        self.assertEqual(http(self.mport, b"GET /healthz HTTP/1.0\n\n")[0], 200)

    def test_slowloris_scrapers_do_not_stall_smtp(self):
        self.start()
        slow = []
        self.addCleanup(lambda: [s.close() for s in slow])
        # More than the server holds, each sending half a request line.
        for _ in range(HTTP_MAX_CONNS + 4):
            s = socket.create_connection(("127.0.0.1", self.mport), timeout=5)
            s.sendall(b"GET /metr")
            slow.append(s)
        t0 = time.monotonic()
        # SMTP is served meanwhile, a whole session with a message.
        with tls_client(self.gw) as c:
            self.assertCode(c.ehlo(), 250)
            self.deliver(c, make_message(uniq("slowloris")))
            self.assertCode(c.cmd("QUIT"), 221)
            c.wait_closed()
        # Those over the cap are closed at once, the rest at the read
        # timeout; none is served.
        for s in slow:
            got, _ = raw_until_closed(s, HTTP_TIMEOUT + 10)
            self.assertEqual(got, b"")
        self.assertGreaterEqual(time.monotonic() - t0, HTTP_TIMEOUT - 1)
        # The server is free again.
        self.assertEqual(get(self.mport, "/metrics")[0], 200)

    def test_a_scraper_that_never_reads(self):
        self.start()
        # It sends many requests' worth and reads nothing back: the gateway
        # carries on, and a normal scrape works alongside it.
        with socket.create_connection(("127.0.0.1", self.mport)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            with tls_client(self.gw) as c:
                self.assertCode(c.ehlo(), 250)
                self.assertCode(c.cmd("QUIT"), 221)
            self.assertEqual(get(self.mport, "/metrics")[0], 200)
            self.assertIsNotNone(recv_some(s, 5))


def tls_client_nobanner(gw, listener="smtps"):
    """An implicit-TLS client whose first reply the test reads itself."""
    return SMTPClient(gw.port(listener), tls=True)
