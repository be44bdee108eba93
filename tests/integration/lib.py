"""Helpers for smtpgate's end-to-end tests: temp dirs, certificates, free
ports, the fake backend (tests/backend.py), the gateway process, and a small
raw SMTP client that can switch to TLS.

Everything talks to 127.0.0.1 / ::1 only, and every wait has a deadline.
Python standard library only.
"""

import glob
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND_PY = os.path.join(REPO, "tests", "backend.py")
PYTHON = sys.executable or "/usr/bin/python3"

READY_TIMEOUT = 10.0        # gateway / backend readiness
REPLY_TIMEOUT = 10.0        # one SMTP reply
MESSAGE_TIMEOUT = 10.0      # a message to show up in the backend's maildir


def gateway_bin():
    path = os.environ.get("SMTPGATE_BIN") or os.path.join(REPO, "build", "smtpgate")
    return os.path.abspath(path)


# --------------------------------------------------------------------------
# waiting

class Timeout(AssertionError):
    pass


def wait_until(pred, timeout, what="condition", interval=0.02):
    """Poll pred() until it returns a true value; return that value. Raise
    Timeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Timeout("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def assert_never(pred, duration, what="condition", interval=0.05):
    """Check during `duration` seconds that pred() stays false. Used only
    after a positive synchronisation point, as a safety margin."""
    deadline = time.monotonic() + duration
    while True:
        if pred():
            raise AssertionError("%s happened" % what)
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def can_connect(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_handed_ports = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host="127.0.0.1"):
    """A port that is free now, for a process that binds it later. Picked
    at random below the kernel's ephemeral range (so no outgoing connection
    and no bind-to-port-0 can take it in between), never the same twice in
    one run; falls back to a kernel-chosen port."""
    import random
    lo, hi = _ephemeral_range()
    top = min(lo - 1, 32000)
    if top > 12000:
        rng = random.Random()
        for _ in range(200):
            port = rng.randint(10000, top)
            if port in _handed_ports:
                continue
            if _bindable(host, port):
                _handed_ports.add(port)
                return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    _handed_ports.add(port)
    return port


def closed_port(host="127.0.0.1"):
    """A port where nothing listens (connections are refused)."""
    return free_port(host)


def fmt_addr(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# temp dirs and certificates

_session_dir = None
_per_run_objects = {}          # subdir -> what _per_run() made there
_lock = threading.RLock()


def session_dir():
    """One temp dir for the whole test run, removed at exit unless
    KEEP_TMP is set."""
    global _session_dir
    with _lock:
        if _session_dir is None:
            _session_dir = tempfile.mkdtemp(prefix="smtpgate-it-")
            if not os.environ.get("KEEP_TMP"):
                import atexit
                atexit.register(shutil.rmtree, _session_dir, True)
        return _session_dir


def new_workdir(name="t"):
    return tempfile.mkdtemp(prefix=re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] + "-",
                            dir=session_dir())


def _openssl(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.decode(errors="replace")))


class Certs:
    """Self-signed certificates for CN gw.test, SAN DNS:gw.test,
    IP:127.0.0.1, IP:::1: ECDSA P-256 (ec_cert/ec_key) and RSA 2048
    (rsa_cert/rsa_key). Generated once per test run."""

    SUBJ = "/CN=gw.test"
    SAN = "subjectAltName=DNS:gw.test,DNS:localhost,IP:127.0.0.1,IP:::1"

    def __init__(self, d):
        self.dir = d
        self.ec_key = os.path.join(d, "ec-key.pem")
        self.ec_cert = os.path.join(d, "ec-cert.pem")
        self.rsa_key = os.path.join(d, "rsa-key.pem")
        self.rsa_cert = os.path.join(d, "rsa-cert.pem")
        common = ["-x509", "-nodes", "-days", "2", "-subj", self.SUBJ, "-addext", self.SAN,
                  "-addext", "basicConstraints=critical,CA:FALSE",
                  "-addext", "keyUsage=digitalSignature,keyEncipherment",
                  "-addext", "extendedKeyUsage=serverAuth"]
        _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-keyout", self.ec_key, "-out", self.ec_cert] + common, d)
        _openssl(["req", "-newkey", "rsa:2048",
                  "-keyout", self.rsa_key, "-out", self.rsa_cert] + common, d)
        # one file trusting both, for clients
        self.ca_bundle = os.path.join(d, "trust.pem")
        with open(self.ca_bundle, "wb") as out:
            for p in (self.ec_cert, self.rsa_cert):
                with open(p, "rb") as f:
                    out.write(f.read())

    # the gateway's default pair
    @property
    def cert(self):
        return self.ec_cert

    @property
    def key(self):
        return self.ec_key


def _per_run(subdir, factory):
    """factory(session_dir()/subdir), made once per run (on first use)."""
    with _lock:
        if subdir not in _per_run_objects:
            d = os.path.join(session_dir(), subdir)
            os.makedirs(d, exist_ok=True)
            _per_run_objects[subdir] = factory(d)
        return _per_run_objects[subdir]


def certs():
    return _per_run("certs", Certs)


def client_context(cafile=None, verify=True):
    """A client SSL context that trusts the generated certificates."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cafile or certs().ca_bundle)


# --------------------------------------------------------------------------
# processes

def _tail(path, limit=6000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
        text = data.decode("utf-8", "replace")
        return ("[... %d bytes cut ...]\n" % (size - limit) if size > limit else "") + text
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)


def _make_pdeathsig():
    """preexec_fn that asks Linux to SIGTERM the child when this test
    process dies (so a killed run leaves no gateway or backend behind)."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec():
        prctl(1, int(signal.SIGTERM), 0, 0, 0)     # PR_SET_PDEATHSIG
    return preexec


_PDEATHSIG = _make_pdeathsig() if sys.platform.startswith("linux") else None


def _stop_process(proc, timeout, sig=signal.SIGTERM):
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class _Helper:
    """A helper program of the tests (PROGRAM: backend, smarthost,
    haproxy) as a subprocess, its stdout and stderr in `out_path`."""

    PROGRAM = None

    def __init__(self, workdir, name, out_suffix):
        self.workdir = workdir
        self.name = name
        self.out_path = os.path.join(workdir, name + out_suffix)
        self.proc = None

    def spawn(self, cmd, ready, what, **popen_kw):
        """Start cmd and wait until ready() is true (`what` names that in
        the Timeout). Raises if the program exits first."""
        self._out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_PDEATHSIG, **popen_kw)

        def check():
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (self.PROGRAM, self.proc.returncode,
                                                               self.output()))
            return ready()
        wait_until(check, READY_TIMEOUT, what)

    def stop(self, timeout=5.0):
        """SIGTERM (SIGKILL after `timeout`); returns the exit status, None
        when it was not running."""
        if self.proc is None:
            return None
        rc = _stop_process(self.proc, timeout)
        self._out.close()
        self.proc = None
        return rc

    def output(self):
        return _tail(self.out_path)


class Backend(_Helper):
    """tests/backend.py as a subprocess, listening on a port it picked
    itself (no race), with a maildir and a raw byte log in `workdir`."""

    PROGRAM = "backend"

    def __init__(self, workdir, args=(), host="127.0.0.1", name="backend"):
        super().__init__(workdir, name, "-stdout.txt")
        self.host = host
        self.args = list(args)
        self.maildir = os.path.join(workdir, name + "-mail")
        self.log_path = os.path.join(workdir, name + "-raw.log")
        self.port_file = os.path.join(workdir, name + ".port")
        self.port = None

    @property
    def addr(self):
        return fmt_addr(self.host, self.port)

    def command(self):
        return [PYTHON, BACKEND_PY, "--listen", fmt_addr(self.host, 0),
                "--port-file", self.port_file, "--maildir", self.maildir,
                "--log", self.log_path, "--quiet"] + self.args

    def start(self):
        os.makedirs(self.maildir, exist_ok=True)
        open(self.log_path, "ab").close()
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.spawn(self.command(), lambda: os.path.exists(self.port_file),
                   "%s port file" % self.PROGRAM)
        with open(self.port_file) as f:
            self.port = int(f.read().strip())
        return self

    def diagnostics(self):
        return "--- %s (%s) stdout ---\n%s\n--- %s raw log (tail) ---\n%s" % (
            self.name, self.addr if self.port else "?", self.output(), self.name,
            _tail(self.log_path, 3000))

    # maildir ---------------------------------------------------------------

    def count(self):
        return len(glob.glob(os.path.join(self.maildir, "msg-*.eml")))

    def wait_count(self, n, timeout=MESSAGE_TIMEOUT):
        wait_until(lambda: self.count() >= n, timeout, "%d message(s) at the backend (have %d)"
                   % (n, self.count()))
        return self.count()

    def message(self, n):
        """(content bytes, envelope lines as bytes) of message n."""
        base = os.path.join(self.maildir, "msg-%d" % n)
        with open(base + ".eml", "rb") as f:
            eml = f.read()
        with open(base + ".env", "rb") as f:
            env = f.read().split(b"\n")[:-1]
        return eml, env

    def wait_message(self, n, timeout=MESSAGE_TIMEOUT):
        self.wait_count(n, timeout)
        return self.message(n)

    def all_envelopes(self):
        out = []
        for p in sorted(glob.glob(os.path.join(self.maildir, "msg-*.env"))):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def find_message(self, marker, timeout=MESSAGE_TIMEOUT):
        """Wait until exactly one stored message contains `marker`; return
        (n, content, envelope lines)."""
        if isinstance(marker, str):
            marker = marker.encode()

        def look():
            hits = []
            for p in glob.glob(os.path.join(self.maildir, "msg-*.eml")):
                with open(p, "rb") as f:
                    if marker in f.read():
                        hits.append(int(re.search(r"msg-(\d+)\.eml$", p).group(1)))
            return hits
        hits = wait_until(look, timeout, "a message containing %r at the backend" % marker)
        if len(hits) != 1:
            raise AssertionError("%d messages contain %r: %r" % (len(hits), marker, sorted(hits)))
        n = hits[0]
        eml, env = self.message(n)
        return n, eml, env

    def raw_log(self):
        with open(self.log_path, "rb") as f:
            return f.read()

    def stdout_text(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def events(self, pattern):
        """The regex matches (re.M) over its event lines."""
        return re.findall(pattern, self.stdout_text(), re.M)

    def connections(self):
        """How many connections it has accepted so far."""
        return len(self.events(r"^\[%s\] connection \d+ from" % self.PROGRAM))

    def closed_connections(self):
        return len(self.events(r"^\[%s\] connection \d+ closed" % self.PROGRAM))


DEFAULT_LISTENERS = (
    ("smtps", "implicit", {}),
    ("submission", "starttls", {}),
    ("opportunistic", "starttls", {"require_tls": "no"}),
    ("alt", "starttls", {}),          # the 2525-style submission port
)


# The tests run as root in CI; the gateway refuses to serve as root unless
# told so.
ALLOW_ROOT = "yes" if os.geteuid() == 0 else None


class Gateway:
    """build/smtpgate (or $SMTPGATE_BIN) with a generated INI config."""

    def __init__(self, workdir, backend_addr, listeners=DEFAULT_LISTENERS, gateway=None,
                 tls=None, timeouts=None, extra=None, host="127.0.0.1", name="gateway",
                 raw_config=None):
        self.workdir = workdir
        self.name = name
        self.backend_addr = backend_addr
        self.host = host
        self.listeners = []
        self.ports = {}
        for entry in listeners:
            lname, mode, opts = entry[0], entry[1], dict(entry[2]) if len(entry) > 2 else {}
            lhost = opts.pop("_host", host)
            port = free_port(lhost)
            self.ports[lname] = port
            self.listeners.append((lname, mode, lhost, port, opts))
        c = certs()
        self.gateway_opts = {"backend": backend_addr, "hostname": "gw.test", "log_level": "debug",
                             "max_line": "4096", "bare_newlines": "normalize",
                             "allow_root": ALLOW_ROOT}
        self.gateway_opts.update(gateway or {})
        self.tls_opts = {"cert": c.cert, "key": c.key}
        self.tls_opts.update(tls or {})
        self.timeout_opts = {"handshake": "5", "command": "10", "data": "10",
                             "backend_connect": "3", "drain": "2"}
        self.timeout_opts.update(timeouts or {})
        self.extra = extra or {}
        self.config_path = os.path.join(workdir, name + ".ini")
        self.err_path = os.path.join(workdir, name + "-stderr.txt")
        self.out_path = os.path.join(workdir, name + "-stdout.txt")
        self.proc = None
        self.raw_config = raw_config
        # A command the gateway runs under (it must exec it in place).
        self.wrapper = []
        self.write_config()

    def port(self, name):
        return self.ports[name]

    def client_context(self, verify=True):
        return client_context(verify=verify)

    # How a list value is written: None, one "key = item" line per item;
    # else one line with the items joined with this.
    LIST_JOIN = None

    def ini_section(self, out, title, opts):
        """Append the lines of section [title] with `opts` (None values
        left out) to the list `out`."""
        out.append("[%s]" % title)
        for k, v in opts.items():
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                if self.LIST_JOIN is not None:
                    v = [self.LIST_JOIN.join(str(x) for x in v)]
            else:
                v = [v]
            for one in v:
                out.append("%s = %s" % (k, one))
        out.append("")

    def listener_sections(self, out):
        for lname, mode, lhost, port, opts in self.listeners:
            o = {"address": fmt_addr(lhost, port), "mode": mode}
            o.update(opts)
            self.ini_section(out, "listener:" + lname, o)

    def config_text(self):
        if self.raw_config is not None:
            return self.raw_config
        out = []
        self.ini_section(out, "gateway", self.gateway_opts)
        self.ini_section(out, "tls", self.tls_opts)
        self.ini_section(out, "timeouts", self.timeout_opts)
        self.listener_sections(out)
        for title, opts in self.extra.items():
            self.ini_section(out, title, opts)
        return "\n".join(out)

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write(self.config_text())

    def start(self, wait=True):
        binary = gateway_bin()
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError("gateway binary %s not found: run make, or set SMTPGATE_BIN"
                                    % binary)
        for attempt in range(3):
            self._err = open(self.err_path, "ab")
            self._out = open(self.out_path, "ab")
            self.proc = subprocess.Popen(self.wrapper + [binary, "-c", self.config_path],
                                         stdout=self._out,
                                         stderr=self._err, stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         preexec_fn=_PDEATHSIG)
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except AssertionError:
                # Someone took a port between free_port() and the bind: pick
                # new ports and try again. Anything else is a real failure.
                if self.proc.poll() is None or "in use" not in self.stderr() or attempt == 2:
                    raise
                self._err.close()
                self._out.close()
                self.repick_ports()
        return self

    def repick_ports(self):
        fresh = []
        for lname, mode, lhost, port, opts in self.listeners:
            port = free_port(lhost)
            self.ports[lname] = port
            fresh.append((lname, mode, lhost, port, opts))
        self.listeners = fresh
        self.write_config()

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        for lname, mode, lhost, port, opts in self.listeners:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError("gateway exited with %s before listening:\n%s"
                                         % (self.proc.returncode, self.stderr()))
                if can_connect(port, lhost, timeout=0.5):
                    break
                if time.monotonic() >= deadline:
                    raise Timeout("gateway listener %s (%s) not accepting after %.0fs:\n%s"
                                  % (lname, fmt_addr(lhost, port), timeout, self.stderr()))
                time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout("gateway still running %.1fs later" % timeout)

    def stop(self, timeout=None):
        """Stop the gateway. Raises if it had died on its own (crash) or left
        sanitizer reports."""
        if self.proc is None:
            return None
        died = self.proc.poll()
        pid = self.proc.pid
        if timeout is None:
            timeout = float(self.timeout_opts.get("drain", 2)) + 5
        rc = _stop_process(self.proc, timeout)
        self._err.close()
        self._out.close()
        problems = []
        if died is not None and died < 0:
            problems.append("gateway died on its own with signal %d" % -died)
        text = self.stderr(limit=200000)
        if rc == 99 and os.environ.get("VALGRIND_LOGS"):
            # tests/valgrind-smtpgate's exit code for a valgrind report
            problems.append("valgrind report in %s/%d.log" % (os.environ["VALGRIND_LOGS"], pid))
        for pat in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                    "WARNING: ThreadSanitizer", "ERROR: MemorySanitizer"):
            if pat in text:
                problems.append("sanitizer report in gateway stderr: %r" % pat)
        self.proc = None
        if problems:
            raise AssertionError("; ".join(problems) + "\n" + self.stderr())
        return rc

    def stderr(self, limit=8000):
        return _tail(self.err_path, limit)

    def wait_log(self, pattern, timeout=5.0):
        rx = re.compile(pattern)

        def found():
            try:
                with open(self.err_path, "r", errors="replace") as f:
                    return rx.search(f.read())
            except OSError:
                return None
        return wait_until(found, timeout, "gateway log line matching %r" % pattern)

    def diagnostics(self):
        return "--- %s config ---\n%s\n--- %s stderr (tail) ---\n%s" % (
            self.name, self.config_text(), self.name, self.stderr())


def start_gateway_for(owner, backend_addr, **kw):
    """Start a gateway with the default listeners (smtps, submission,
    opportunistic, alt) in front of backend_addr, for a test class or test
    case `owner`. Its stop is registered in owner._cleanups_cls when that
    list exists, else with addClassCleanup (a class) or addCleanup (a
    test case)."""
    name = owner.__name__ if isinstance(owner, type) else owner.id().split(".")[-1]
    gw = Gateway(new_workdir(name), backend_addr, **kw)
    cleanups = getattr(owner, "_cleanups_cls", None)
    if isinstance(cleanups, list):
        cleanups.append(gw.stop)
    elif isinstance(owner, type):
        owner.addClassCleanup(gw.stop)
    else:
        owner.addCleanup(gw.stop)
    gw.start()
    return gw


# --------------------------------------------------------------------------
# a raw SMTP client

class ConnectionClosed(Exception):
    pass


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines          # text after "NNN-" / "NNN "

    @property
    def text(self):
        return "\n".join(self.lines)

    def keywords(self):
        """EHLO keywords (upper case), from every line but the first."""
        return [l.split()[0].upper() for l in self.lines[1:] if l.split()]

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


class SMTPClient:
    """A raw SMTP client over a socket that can switch to TLS. Reads replies
    with deadlines; never assumes anything about timing."""

    def __init__(self, port, host="127.0.0.1", tls=False, ctx=None, server_hostname="gw.test",
                 timeout=REPLY_TIMEOUT):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.tls = False
        if tls:
            self.wrap(ctx, server_hostname)

    def wrap(self, ctx=None, server_hostname="gw.test"):
        if self.buf:
            raise AssertionError("plaintext bytes pending before the TLS handshake: %r" % self.buf)
        ctx = ctx or client_context()
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True

    def try_wrap(self, ctx=None, server_hostname="gw.test"):
        """wrap(); False instead of the error when the handshake fails."""
        try:
            self.wrap(ctx, server_hostname)
            return True
        except (ssl.SSLError, OSError):
            return False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _recv(self, timeout):
        self.sock.settimeout(max(0.01, timeout))
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            raise
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""
        except ssl.SSLError as e:
            if "UNEXPECTED_EOF" in str(e) or "EOF" in str(e):
                return b""
            raise

    def reply(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        lines = []
        code = None
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("no complete reply within %.1fs (have %r, buffered %r)"
                                  % (timeout, lines, self.buf))
                try:
                    data = self._recv(left)
                except socket.timeout:
                    raise Timeout("no complete reply within %.1fs (have %r, buffered %r)"
                                  % (timeout, lines, self.buf))
                if not data:
                    raise ConnectionClosed("connection closed (partial reply %r, buffered %r)"
                                           % (lines, self.buf))
                self.buf += data
                continue
            raw = self.buf[:i].rstrip(b"\r")
            self.buf = self.buf[i + 1:]
            m = _REPLY_LINE.match(raw) or (re.match(rb"^(\d{3})()$", raw))
            if not m:
                raise AssertionError("malformed reply line %r" % raw)
            c = int(m.group(1))
            if code is not None and c != code:
                raise AssertionError("reply code changed inside a multi-line reply: %r then %r"
                                     % (lines, raw))
            code = c
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def ehlo(self, name="client.test"):
        return self.cmd("EHLO " + name)

    def starttls(self, ctx=None, server_hostname="gw.test"):
        r = self.cmd("STARTTLS")
        if r.code == 220:
            self.wrap(ctx, server_hostname)
        return r

    def wait_closed(self, timeout=5.0):
        """Read (and return) whatever arrives until the peer closes. Raises
        Timeout if it does not close in time."""
        deadline = time.monotonic() + timeout
        got = self.buf
        self.buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("connection still open after %.1fs (got %r)" % (timeout, got))
            try:
                data = self._recv(left)
            except socket.timeout:
                continue
            except (ssl.SSLError, OSError):
                return got
            if not data:
                return got
            got += data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dot_stuff(content):
    """DATA transparency (RFC 5321 4.5.2) for CRLF content that ends in
    CRLF; returns the bytes to send after the 354, terminator included."""
    assert content.endswith(b"\r\n") or content == b""
    stuffed = re.sub(rb"(^|\r\n)\.", rb"\1..", content)
    return stuffed + b".\r\n"


def make_message(marker, body_lines=20, extra=b""):
    """A CRLF message with headers, 8-bit bytes, leading dots, empty lines,
    tabs and trailing spaces. `marker` makes it unique."""
    if isinstance(marker, str):
        marker = marker.encode()
    lines = [b"From: <sender@client.test>", b"To: <rcpt@backend.test>",
             b"Subject: test " + marker, b"Message-ID: <" + marker + b"@client.test>",
             b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
             b"Content-Transfer-Encoding: 8bit", b""]
    for i in range(body_lines):
        if i % 7 == 0:
            lines.append(b"." + marker + b" line %d starts with a dot" % i)
        elif i % 7 == 1:
            lines.append(b"..two dots %d" % i)
        elif i % 7 == 2:
            lines.append(b"")
        elif i % 7 == 3:
            lines.append(b"tab\there, trailing spaces   ")
        elif i % 7 == 4:
            lines.append("8-bit: Grüße, ½, 日本語 ".encode("utf-8") + b"%d" % i)
        elif i % 7 == 5:
            lines.append(b".")
        else:
            lines.append(b"plain line %d for " % i + marker)
    lines.append(b"end of " + marker)
    return b"\r\n".join(lines) + b"\r\n" + extra


def big_message(size, marker="big"):
    """About `size` bytes (at least) of CRLF text: 76-char lines, every
    16th starting with a dot; ends in CRLF."""
    head = make_message(marker, body_lines=10)
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-=+/0123456789"
    block = (line + b"\r\n") * 15 + b"." + line[1:] + b"\r\n"
    reps = max(0, size - len(head)) // len(block) + 1
    return head + block * reps


def uniq(tag):
    """A marker unique in this run: TAG-PID-NNNNN."""
    uniq.n += 1
    return "%s-%d-%05d" % (tag, os.getpid(), uniq.n)      # fixed width: prefix-free


uniq.n = 0


def mid(m):
    """The Message-ID line of a make_message() message: unique, delimited."""
    line = m.split(b"\r\n")[3]
    assert line.startswith(b"Message-ID: <"), line
    return line


def has_tool(name):
    return shutil.which(name) is not None


def tls_client(gw, listener="smtps", **kw):
    """A client on an implicit listener, past the banner (asserted 220)."""
    c = SMTPClient(gw.port(listener), tls=True, **kw)
    r = c.reply()
    if r.code != 220:
        c.close()
        raise AssertionError("banner on %s: %r" % (listener, r))
    return c


def starttls_client(gw, listener="submission", ehlo="client.test"):
    """A client on a STARTTLS listener, after greeting, EHLO, STARTTLS and
    the TLS handshake (not yet the second EHLO)."""
    c = SMTPClient(gw.port(listener))
    r = c.reply()
    if r.code != 220:
        c.close()
        raise AssertionError("greeting on %s: %r" % (listener, r))
    r = c.ehlo(ehlo)
    if r.code != 250:
        c.close()
        raise AssertionError("EHLO on %s: %r" % (listener, r))
    r = c.starttls()
    if r.code != 220:
        c.close()
        raise AssertionError("STARTTLS on %s: %r" % (listener, r))
    return c


# --------------------------------------------------------------------------
# test case base class

class IntegrationTest(unittest.TestCase):
    """Starts backends and gateways with cleanups; run.py calls
    dump_diagnostics() when a test fails."""

    shared = []          # class-level processes (set by setUpClass)

    def setUp(self):
        self._procs = []
        self.workdir = new_workdir(self.id().split(".")[-1])

    # processes for this test only ---------------------------------------------

    def start_backend(self, *args, host="127.0.0.1", name="backend"):
        be = Backend(self.workdir, args, host=host, name=name)
        self._procs.append(be)
        self.addCleanup(be.stop)
        return be.start()

    def make_gateway(self, backend_addr, **kw):
        kw.setdefault("name", "gateway")
        gw = Gateway(self.workdir, backend_addr, **kw)
        self._procs.append(gw)
        self.addCleanup(gw.stop)
        return gw

    def start_gateway(self, backend_addr, **kw):
        return self.make_gateway(backend_addr, **kw).start()

    def setup_pair(self, backend_args=(), **gw_kw):
        be = self.start_backend(*backend_args)
        gw = self.start_gateway(be.addr, **gw_kw)
        return be, gw

    # class-level fixtures -----------------------------------------------------

    @classmethod
    def start_shared(cls, backend_args=(), **gw_kw):
        d = new_workdir(cls.__name__)
        be = Backend(d, backend_args)
        cls.addClassCleanup(be.stop)
        be.start()
        gw = Gateway(d, be.addr, **gw_kw)
        cls.addClassCleanup(gw.stop)
        cls.shared = [be, gw]
        gw.start()
        return be, gw

    def check_shared_alive(self):
        for p in type(self).shared:
            if isinstance(p, Gateway) and not p.alive():
                rc = p.proc.returncode if p.proc else None
                err = p.stderr()
                # restart so that later tests can run
                p.stop_rc = rc
                try:
                    p._err.close()
                    p._out.close()
                except Exception:
                    pass
                p.proc = None
                p.start()
                self.fail("the shared gateway had died (rc=%s) before this test; restarted it.\n%s"
                          % (rc, err))

    def dump_diagnostics(self):
        parts = []
        for p in list(getattr(self, "_procs", [])) + list(type(self).shared):
            try:
                parts.append(p.diagnostics())
            except Exception as e:
                parts.append("<diagnostics failed: %r>" % e)
        return "\n".join(parts)

    # assertions -----------------------------------------------------------------

    def assertCode(self, reply, *codes):
        if reply.code not in codes:
            self.fail("expected reply %s, got %r" % ("/".join(map(str, codes)), reply))

    def assertCodeClass(self, reply, digit):
        if reply.code // 100 != digit:
            self.fail("expected a %dxx reply, got %r" % (digit, reply))

    def deliver(self, c, content, mail_from="<sender@client.test>", rcpts=("<rcpt@backend.test>",),
                mail_params=""):
        """MAIL, RCPT..., DATA, body on an open client; asserts the codes."""
        self.assertCode(c.cmd("MAIL FROM:%s%s" % (mail_from, mail_params)), 250)
        for r in rcpts:
            self.assertCode(c.cmd("RCPT TO:%s" % r), 250, 251)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(content))
        final = c.reply(timeout=60)
        self.assertCode(final, 250)
        return final


class SharedGatewayTest(IntegrationTest):
    """A test class whose tests share one backend and one default gateway
    (self.be, self.gw), checked alive before each test."""

    @classmethod
    def setUpClass(cls):
        cls.be, cls.gw = cls.start_shared()

    def setUp(self):
        super().setUp()
        self.check_shared_alive()


# --------------------------------------------------------------------------
# hardening helpers: [limits], client source addresses, raw TLS bytes, many
# connections, the gateway's fds and memory (tests/integration/test_hardening.py)

def limits_section(extra=None, **limits):
    """`extra=` for Gateway with a [limits] section, e.g.
    limits_section(per_ip_connections=3, max_errors=0). Other sections in
    `extra` are kept."""
    out = dict(extra or {})
    out["limits"] = {k: str(v) for k, v in limits.items()}
    return out


class SourcedClient(SMTPClient):
    """An SMTPClient whose connection comes from a chosen local address
    (any 127.0.0.0/8 address works on Linux loopback), so that per-address
    limits are measured apart from the readiness probes and other clients,
    which connect from 127.0.0.1."""

    def __init__(self, port, source, host="127.0.0.1", tls=False, ctx=None,
                 server_hostname="gw.test", timeout=REPLY_TIMEOUT):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""
        self.tls = False
        if tls:
            self.wrap(ctx, server_hostname)


def recv_some(sock, timeout, size=65536):
    """One recv() on a raw socket within `timeout` seconds: the bytes, b""
    when the peer closed (or reset), None when nothing came in time."""
    sock.settimeout(timeout)
    try:
        return sock.recv(size)
    except socket.timeout:
        return None
    except OSError:
        return b""


def raw_until_closed(sock, timeout):
    """Read a raw socket until the peer closes (or resets); return
    (bytes, seconds taken). Raises Timeout if it is still open."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("connection still open after %.1fs (got %r)" % (timeout, got[:200]))
        data = recv_some(sock, max(0.01, left))
        if data is None:
            continue
        if not data:
            return got, time.monotonic() - t0
        got += data


def greets(port, source=None, host="127.0.0.1"):
    """Whether a new connection to host:port (from `source`, an address
    of 127.0.0.0/8, when given) is greeted with 220 within 3 s."""
    with (SMTPClient(port, host) if source is None else SourcedClient(port, source, host)) as c:
        try:
            return c.reply(timeout=3).code == 220
        except (ConnectionClosed, Timeout):
            return False


def hold_greeted(port, n, held, host="127.0.0.1", timeout=10):
    """Open n SMTPClients to host:port, each greeted with 220, into the
    list `held` (the caller closes them). A gateway may still count an
    earlier connection (the readiness probe's) for a moment, so this
    starts over until all n are greeted; Timeout after `timeout` s."""
    def all_greeted():
        for c in held:
            c.close()
        held.clear()
        for _ in range(n):
            c = SMTPClient(port, host=host)
            held.append(c)
            try:
                if c.reply(timeout=3).code != 220:
                    return False
            except (ConnectionClosed, Timeout):
                return False
        return True
    wait_until(all_greeted, timeout, "%d greeted connections to %s" % (n, fmt_addr(host, port)))


class MemoryTLS:
    """A TLS client driven through memory BIOs over a raw socket, so the test
    decides when (and how fast) each handshake byte goes out."""

    def __init__(self, sock, ctx=None, server_hostname="gw.test"):
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = (ctx or client_context()).wrap_bio(self.inc, self.out,
                                                      server_hostname=server_hostname)
        self.error = None

    def client_hello(self):
        """The first flight (the ClientHello record), not sent."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.out.read()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _feed(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("TLS peer silent")
        self.sock.settimeout(max(0.01, left))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout("TLS peer silent")
        except OSError:
            data = b""
        return self._take(data)

    def _take(self, data):
        """Hand bytes received (b"": the peer's EOF) to TLS; False at EOF."""
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()
        return bool(data)

    def handshake(self, timeout):
        """Go on with the handshake (sending what is pending). True once it
        completes; False when the peer closed or the handshake failed
        (self.error says how). Raises Timeout if the peer stays silent."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return True
            except ssl.SSLWantReadError:
                try:
                    self._flush()
                except OSError as e:
                    self.error = e
                    return False
                self._feed(deadline)
            except (ssl.SSLError, OSError) as e:
                self.error = e
                return False

    def send(self, data):
        self.obj.write(data)
        self._flush()

    def reply_code(self, timeout=REPLY_TIMEOUT):
        """Read one whole reply (every line); return its code, or None if the
        peer closed first."""
        while True:
            line = self.recv_line(timeout)
            if not line.endswith(b"\n"):
                return None
            if line[3:4] != b"-":
                return int(line[:3])

    def send_and_read(self, data, timeout):
        """Send `data` while reading what comes back, in one thread (the raw
        socket goes non-blocking): a client that keeps sending a body while
        the server answers and closes. Returns the decrypted bytes received
        once the peer closed, or once all was sent and a whole line came.
        Raises Timeout after `timeout` seconds."""
        import select
        deadline = time.monotonic() + timeout
        self.obj.write(data)
        raw = self.out.read()
        sent = 0
        got = b""
        self.sock.setblocking(False)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("send_and_read: %d of %d bytes sent, got %r after %.1fs"
                                  % (sent, len(raw), got[:200], timeout))
                wl = [self.sock] if sent < len(raw) else []
                r, w, _ = select.select([self.sock], wl, [], min(left, 0.5))
                if w:
                    try:
                        sent += self.sock.send(raw[sent:sent + 65536])
                    except BlockingIOError:
                        pass
                    except OSError:
                        sent = len(raw)          # the peer is gone: nothing more to send
                if not r:
                    continue
                try:
                    d = self.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                self._take(d)
                while True:
                    try:
                        chunk = self.obj.read(65536)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLError:
                        return got
                    if not chunk:
                        return got
                    got += chunk
                if not d:
                    return got
                if b"\n" in got and sent >= len(raw):
                    return got
        finally:
            self.sock.setblocking(True)

    def recv_line(self, timeout):
        """Decrypted bytes up to and including the next LF; b"" at EOF."""
        deadline = time.monotonic() + timeout
        got = b""
        while not got.endswith(b"\n"):
            try:
                got += self.obj.read(1)
                continue
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return got
            if not self._feed(deadline):
                try:
                    got += self.obj.read(65536)
                except ssl.SSLError:
                    pass
                return got
        return got


def raise_nofile(want=None):
    """Raise this process's RLIMIT_NOFILE soft limit (to the hard limit, or
    to `want` if that is lower). Returns the new soft limit. Child processes
    started afterwards inherit it."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    new = top if want is None else min(top, max(soft, want))
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def _proc_tcp_rows():
    """The rows of /proc/net/tcp and /proc/net/tcp6, split into fields
    (1: local address, 2: remote, 3: state, 9: inode)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                rows = [line.split() for line in f]
        except OSError:
            continue
        for p in rows:
            if len(p) > 9:
                yield p


def _socket_inodes(pid):
    """The socket inode of each fd of process `pid` that is a socket."""
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            m = re.match(r"socket:\[(\d+)\]$", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue
        if m:
            out.append(m.group(1))
    return out


def proc_tcp_states(pid):
    """{TCP state (hex, as in /proc/net/tcp: "01" established, "0A" listen,
    "08" close-wait ...): count} over the sockets that process `pid` holds."""
    states = {p[9]: p[3] for p in _proc_tcp_rows()}
    out = {}
    for inode in _socket_inodes(pid):
        if inode in states:
            out[states[inode]] = out.get(states[inode], 0) + 1
    return out


def open_greeted(port, n, timeout, host="127.0.0.1", source=None):
    """Open n plain TCP connections to `port` and read one reply line on
    each. Returns (sockets, first lines) in connection order; a connection
    closed before a whole line gets its partial bytes. Raises Timeout when
    not all n lines (or closes) came within `timeout` seconds. The caller
    closes the sockets (also on failure: they are attached to the
    exception as .socks)."""
    import selectors
    deadline = time.monotonic() + timeout
    socks = []
    try:
        for _ in range(n):
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("only %d of %d connections made in %.0fs" % (len(socks), n, timeout))
            s = socket.create_connection((host, port), timeout=min(5.0, left),
                                         source_address=(source, 0) if source else None)
            s.setblocking(False)
            socks.append(s)
        bufs = [b""] * n
        done = [False] * n
        pending = n
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_READ, i)
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("%d of %d connections got no reply line in %.0fs"
                                  % (pending, n, timeout))
                for key, _ in sel.select(timeout=min(left, 1.0)):
                    i = key.data
                    try:
                        data = socks[i].recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    bufs[i] += data
                    if not data or b"\n" in bufs[i]:
                        done[i] = True
                        pending -= 1
                        sel.unregister(socks[i])
        finally:
            sel.close()
        for s in socks:
            s.setblocking(True)
        return socks, [b.split(b"\n")[0] + (b"\n" if b"\n" in b else b"") for b in bufs]
    except BaseException as e:
        e.socks = socks
        raise


def is_sanitized_binary(path=None):
    """True if the gateway runs under AddressSanitizer or valgrind (RSS is
    not meaningful then: freed memory sits in ASan's quarantine, valgrind
    adds its own)."""
    path = path or gateway_bin()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"valgrind" in data


# --------------------------------------------------------------------------
# client identity helpers: PROXY protocol headers (both directions), a client
# behind a load balancer, the TCP connections a process holds, HAProxy
# (tests/integration/test_identity.py)

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_NOOP = 0x04
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_CLIENT_SSL = 0x01


def proxy_v1(src, dst):
    """A PROXY v1 line for a connection from src to dst, (host, port)
    each; TCP6 when the hosts are IPv6."""
    fam = "TCP6" if ":" in src[0] else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src[0], dst[0], src[1], dst[1])).encode()


def proxy_v2(src=None, dst=None, local=False, tlvs=()):
    """A PROXY v2 header: command PROXY over TCP from src to dst ((host,
    port) each), or with local=True a LOCAL command (a health check) with
    no address. tlvs: (type, value bytes) pairs appended as they are."""
    if local:
        ver_cmd, fam, body = 0x20, 0x00, b""
    elif src is None:
        ver_cmd, fam, body = 0x21, 0x00, b""          # PROXY, family UNSPEC
    elif ":" in src[0]:
        ver_cmd, fam = 0x21, 0x21
        body = (socket.inet_pton(socket.AF_INET6, src[0]) + socket.inet_pton(socket.AF_INET6, dst[0])
                + struct.pack("!HH", src[1], dst[1]))
    else:
        ver_cmd, fam = 0x21, 0x11
        body = (socket.inet_pton(socket.AF_INET, src[0]) + socket.inet_pton(socket.AF_INET, dst[0])
                + struct.pack("!HH", src[1], dst[1]))
    for t, v in tlvs:
        body += struct.pack("!BH", t, len(v)) + v
    return PROXY_V2_SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body)) + body


def _tlvs(data):
    out = []
    i = 0
    while i < len(data):
        if i + 3 > len(data):
            raise ValueError("truncated TLV at %d: %r" % (i, data[i:]))
        t, n = struct.unpack("!BH", data[i:i + 3])
        if i + 3 + n > len(data):
            raise ValueError("TLV 0x%02x of length %d overruns the header" % (t, n))
        out.append((t, data[i + 3:i + 3 + n]))
        i += 3 + n
    return out


def parse_proxy(data):
    """Decode the PROXY header at the start of `data` (v1 or v2). Returns
    None while it is incomplete, else (header dict, its length); raises
    ValueError when it cannot be one. The dict has version, command
    ("PROXY" / "LOCAL"), family ("TCP4" / "TCP6" / "UNKNOWN"), src, dst
    ((host, port) or None), tlvs ([(type, bytes)]), ssl (None, or a dict
    with client, verify, version, cipher, cn) and authority (str or None)."""
    if data[:6] == b"PROXY "[:len(data)] and len(data) < 6:
        return None
    if data.startswith(b"PROXY "):
        end = data.find(b"\r\n")
        if end < 0:
            if len(data) >= 107:
                raise ValueError("v1 line longer than 107 bytes")
            return None
        parts = data[:end].decode("ascii").split(" ")
        h = {"version": 1, "command": "PROXY", "family": parts[1], "src": None, "dst": None,
             "tlvs": [], "ssl": None, "authority": None}
        if parts[1] != "UNKNOWN":
            if len(parts) != 6:
                raise ValueError("bad v1 line %r" % data[:end])
            h["src"] = (parts[2], int(parts[4]))
            h["dst"] = (parts[3], int(parts[5]))
        return h, end + 2
    if not PROXY_V2_SIG.startswith(data[:12]):
        raise ValueError("not a PROXY header: %r" % data[:16])
    if len(data) < 16:
        return None
    ver_cmd, fam = data[12], data[13]
    n = struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2 or (ver_cmd & 0xF) > 1:
        raise ValueError("bad v2 version/command byte 0x%02x" % ver_cmd)
    if len(data) < 16 + n:
        return None
    body = data[16:16 + n]
    h = {"version": 2, "command": "PROXY" if ver_cmd & 1 else "LOCAL", "family": "UNKNOWN",
         "src": None, "dst": None, "ssl": None, "authority": None}
    if fam == 0x11:
        h["family"] = "TCP4"
        h["src"] = (socket.inet_ntop(socket.AF_INET, body[0:4]), struct.unpack("!H", body[8:10])[0])
        h["dst"] = (socket.inet_ntop(socket.AF_INET, body[4:8]), struct.unpack("!H", body[10:12])[0])
        rest = body[12:]
    elif fam == 0x21:
        h["family"] = "TCP6"
        h["src"] = (socket.inet_ntop(socket.AF_INET6, body[0:16]), struct.unpack("!H", body[32:34])[0])
        h["dst"] = (socket.inet_ntop(socket.AF_INET6, body[16:32]), struct.unpack("!H", body[34:36])[0])
        rest = body[36:]
    elif fam == 0x00:
        rest = body
    else:
        raise ValueError("unexpected v2 family/protocol byte 0x%02x" % fam)
    h["tlvs"] = _tlvs(rest)
    for t, v in h["tlvs"]:
        if t == PP2_TYPE_AUTHORITY:
            h["authority"] = v.decode("utf-8", "replace")
        elif t == PP2_TYPE_SSL:
            if len(v) < 5:
                raise ValueError("PP2_TYPE_SSL shorter than 5 bytes")
            ssl_info = {"client": v[0], "verify": struct.unpack("!I", v[1:5])[0],
                        "version": None, "cipher": None, "cn": None, "sub": _tlvs(v[5:])}
            for st, sv in ssl_info["sub"]:
                key = {PP2_SUBTYPE_SSL_VERSION: "version", PP2_SUBTYPE_SSL_CIPHER: "cipher",
                       PP2_SUBTYPE_SSL_CN: "cn"}.get(st)
                if key:
                    ssl_info[key] = sv.decode("utf-8", "replace")
            h["ssl"] = ssl_info
    return h, 16 + n


class ProxiedClient(SMTPClient):
    """An SMTPClient that speaks as a load balancer would: from an optional
    local `source` address, it sends `header` (bytes, may be b"") first,
    then (tls=True) starts TLS. .src is the connection's own (host,
    port)."""

    def __init__(self, port, header, host="127.0.0.1", source=None, tls=False, ctx=None,
                 server_hostname="gw.test", timeout=REPLY_TIMEOUT):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.src = self.sock.getsockname()[:2]
        self.buf = b""
        self.tls = False
        if header:
            self.sock.sendall(header)
        if tls:
            self.wrap(ctx, server_hostname)


def _proc_net_addr(text):
    hexaddr, hexport = text.split(":")
    raw = bytes.fromhex(hexaddr)
    # the kernel prints each 32-bit word in host byte order
    words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    packed = b"".join(struct.pack("=I", int.from_bytes(w, "big")) for w in words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    host = socket.inet_ntop(family, packed)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(hexport, 16)


def tcp_connections(pid=None):
    """The TCP sockets on this host (or only those process `pid` holds), as
    dicts: local (host, port), remote (host, port), state (hex as in
    /proc/net/tcp: "01" established, "0A" listen)."""
    inodes = None if pid is None else set(_socket_inodes(pid))
    return [{"local": _proc_net_addr(p[1]), "remote": _proc_net_addr(p[2]), "state": p[3]}
            for p in _proc_tcp_rows() if inodes is None or p[9] in inodes]


def tcp_listening(port, host="127.0.0.1"):
    return any(c["state"] == "0A" and c["local"] == (host, port) for c in tcp_connections())


def haproxy_bin():
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                       else None)


class HAProxy(_Helper):
    """HAProxy in the foreground (-db) with a config given as text, for
    tests of accept_proxy behind a real load balancer. `ports` are the
    frontend ports it must be listening on before start() returns. stop()
    is a hard one (SIGTERM); SIGUSR1 would wait for open connections."""

    PROGRAM = "haproxy"

    def __init__(self, workdir, config, ports, name="haproxy"):
        super().__init__(workdir, name, "-output.txt")
        self.config = config
        self.ports = list(ports)
        self.config_path = os.path.join(workdir, name + ".cfg")

    def start(self):
        binary = haproxy_bin()
        if binary is None:
            raise FileNotFoundError("haproxy is not installed (scripts/install-deps test)")
        with open(self.config_path, "w") as f:
            f.write(self.config)
        self.spawn([binary, "-db", "-f", self.config_path],
                   lambda: all(tcp_listening(p) for p in self.ports),
                   "haproxy listening on %s" % self.ports, cwd=self.workdir)
        return self

    def diagnostics(self):
        return "--- %s config ---\n%s\n--- %s output (tail) ---\n%s" % (
            self.name, self.config, self.name, self.output())


# --------------------------------------------------------------------------
# egress helpers: a test CA and smarthost certificates, the scripted TLS
# smarthost (tests/smarthost.py), a gateway with an egress listener, a
# loopback port where connect() hangs (tests/integration/test_egress.py)

SMARTHOST_PY = os.path.join(REPO, "tests", "smarthost.py")
RELAY_USER = "apikey"
RELAY_PASSWORD = "s3cret"


class RelayCerts:
    """A test CA and the smarthost's certificates, generated once per run:
    relay (CN/SAN relay.test, signed by the CA), wrong_name (other.test,
    signed by the CA), self_signed (relay.test, signed by itself), ip (SAN
    IP:127.0.0.1 only, signed by the CA). Each is a (cert, key) pair;
    `ca` is the CA certificate to give as ca_file."""

    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "relay-ca.pem")
        self.ca_key = os.path.join(d, "relay-ca-key.pem")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl(["req", "-x509"] + ec + ["-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                  "-subj", "/CN=smtpgate egress test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
        leaf_ext = ["basicConstraints=critical,CA:FALSE",
                    "keyUsage=critical,digitalSignature,keyEncipherment",
                    "extendedKeyUsage=serverAuth"]
        self.pairs = {}
        for name, cn, san in (("relay", "relay.test", "DNS:relay.test"),
                              ("wrong_name", "other.test", "DNS:other.test"),
                              ("ip", "127.0.0.1", "IP:127.0.0.1")):
            cert = os.path.join(d, "%s.pem" % name)
            key = os.path.join(d, "%s-key.pem" % name)
            csr = os.path.join(d, "%s.csr" % name)
            ext = os.path.join(d, "%s.ext" % name)
            with open(ext, "w") as f:
                f.write("\n".join(leaf_ext + ["subjectAltName=" + san]) + "\n")
            _openssl(["req", "-new"] + ec + ["-keyout", key, "-out", csr, "-subj", "/CN=" + cn], d)
            _openssl(["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-set_serial", str(abs(hash((name, os.getpid()))) % (1 << 60) + 1),
                      "-days", "2", "-extfile", ext, "-out", cert], d)
            self.pairs[name] = (cert, key)
        cert = os.path.join(d, "self_signed.pem")
        key = os.path.join(d, "self_signed-key.pem")
        _openssl(["req", "-x509"] + ec + ["-keyout", key, "-out", cert, "-days", "2",
                  "-subj", "/CN=relay.test"] + sum((["-addext", e] for e in leaf_ext), [])
                 + ["-addext", "subjectAltName=DNS:relay.test"], d)
        self.pairs["self_signed"] = (cert, key)

    def args(self, name):
        cert, key = self.pairs[name]
        return ["--cert", cert, "--key", key]


def relay_certs():
    return _per_run("relay-certs", RelayCerts)


class SmarthostConn:
    """What one connection sent to the smarthost, from its raw log: `plain`
    (bytes before TLS), `tls` (bytes inside TLS, or None when TLS never
    came up), `closed` (its end was logged)."""

    def __init__(self, n, peer):
        self.n = n
        self.peer = peer
        self.plain = b""
        self.tls = None
        self.closed = False

    def __repr__(self):
        return "SmarthostConn(%d, plain=%r, tls=%r, closed=%s)" % (
            self.n, self.plain, self.tls, self.closed)


_SH_MARK = re.compile(rb"^=== (connection (\d+) from (\S+)|TLS|closed (\d+)) ===\n", re.M)


class Smarthost(Backend):
    """tests/smarthost.py as a subprocess: on a port it picks itself, or on
    `port` when given (e.g. a port the gateway already tried and found
    closed). The maildir helpers are Backend's."""

    PROGRAM = "smarthost"

    def __init__(self, workdir, args=(), name="smarthost", port=0):
        super().__init__(workdir, args, name=name)
        self.want_port = port

    def command(self):
        return [PYTHON, SMARTHOST_PY, "--listen", "%s:%d" % (self.host, self.want_port),
                "--port-file", self.port_file, "--maildir", self.maildir,
                "--log", self.log_path] + self.args

    def wait_closed(self, n, timeout=REPLY_TIMEOUT):
        """Wait until n connections have ended (so the log is complete)."""
        wait_until(lambda: self.closed_connections() >= n, timeout,
                   "%d closed connection(s) at %s (have %d)" % (n, self.name,
                                                                self.closed_connections()))

    def conns(self):
        """[SmarthostConn] in order, from the raw log. Raises if connections
        overlapped (their bytes could not be told apart)."""
        data = self.raw_log()
        out = []
        cur = None
        pos = 0
        for m in _SH_MARK.finditer(data):
            if cur is not None:
                chunk = data[pos:m.start()]
                if cur.tls is None:
                    cur.plain += chunk
                else:
                    cur.tls += chunk
            elif data[pos:m.start()]:
                raise AssertionError("%s log: bytes outside any connection" % self.name)
            pos = m.end()
            if m.group(2):
                if cur is not None:
                    raise AssertionError("%s log: connections %d and %s overlap"
                                         % (self.name, cur.n, m.group(2).decode()))
                cur = SmarthostConn(int(m.group(2)), m.group(3).decode())
                out.append(cur)
            elif m.group(1) == b"TLS":
                cur.tls = b""
            else:
                cur.closed = True
                cur = None
        if cur is not None:
            chunk = data[pos:]
            if cur.tls is None:
                cur.plain += chunk
            else:
                cur.tls += chunk
        return out


class EgressGateway(Gateway):
    """smtpgate with one egress listener (`outbound`) and its
    [upstream:relay]; no [tls] section. `upstream` holds the upstream's
    keys (a list for ports is joined with commas); `listener` more keys for
    the listener (app_auth ...). It is ready when its port is listening,
    found in /proc/net/tcp: a probe connection would be an app session that
    makes the gateway connect upstream."""

    def __init__(self, workdir, upstream, listener=None, gateway=None, timeouts=None,
                 name="gateway"):
        self.upstream_opts = dict(upstream)
        self.egress_gateway_opts = {"hostname": "app-gw.test", "log_level": "debug",
                                    "allow_root": ALLOW_ROOT}
        self.egress_gateway_opts.update(gateway or {})
        lopts = {"upstream": "relay"}
        lopts.update(listener or {})
        t = {"handshake": "5", "command": "10", "data": "10", "backend_connect": "2", "drain": "2"}
        t.update(timeouts or {})
        super().__init__(workdir, None, listeners=(("outbound", "egress", lopts),),
                         timeouts=t, name=name)

    @property
    def port_out(self):
        return self.ports["outbound"]

    LIST_JOIN = ", "

    def config_text(self):
        out = []
        self.ini_section(out, "gateway", self.egress_gateway_opts)
        self.ini_section(out, "timeouts", self.timeout_opts)
        self.listener_sections(out)
        self.ini_section(out, "upstream:relay", self.upstream_opts)
        return "\n".join(out)

    def wait_ready(self, timeout=READY_TIMEOUT):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited with %s before listening:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            return all(tcp_listening(port, lhost) for _, _, lhost, port, _ in self.listeners)
        wait_until(ready, timeout, "egress gateway listening")

    def log_text(self):
        try:
            with open(self.err_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_count(self, pattern):
        return len(re.findall(pattern, self.log_text(), re.M))


class Blackhole:
    """A loopback port where connect() hangs, as at a firewall that drops
    SYNs: a socket listening with a backlog of 0 whose accept queue is
    filled by one connection and never accepted, so Linux drops every later
    SYN. `works` says whether a probe connect indeed timed out."""

    def __init__(self, host="127.0.0.1", probe_timeout=0.5):
        import select
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind((host, free_port(host)))
        self.lsock.listen(0)
        self.host, self.port = self.lsock.getsockname()[:2]
        self.fillers = []
        self.works = False
        for _ in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((self.host, self.port))
            self.fillers.append(s)
            if not select.select([], [s], [], 0.3)[1]:
                break                  # this one hangs: the queue is full
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(probe_timeout)
        try:
            probe.connect((self.host, self.port))
        except socket.timeout:
            self.works = True
        except OSError:
            pass
        finally:
            probe.close()

    def close(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()
