#!/usr/bin/env python3
"""Run smtpgate's integration tests (unittest), one line per test, and end
with a line `N passed, N failed` (`, N skipped` when some were skipped).
Exits 1 if any test failed or errored.

    tests/integration/run.py                       # everything
    TEST_FILTER=Smuggling tests/integration/run.py # ids containing a substring
    TEST_FILTER=test_curl,test_swaks ...           # several substrings
    SMTPGATE_BIN=build-asan/smtpgate ...           # another gateway binary
    KEEP_TMP=1 ...                                 # keep the temp dir (logs, maildirs)

A test that fails gets the gateway's config and stderr and the backend's
output printed with its traceback.
"""

import faulthandler
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lib  # noqa: E402

PER_TEST_LIMIT = float(os.environ.get("TEST_TIME_LIMIT", "240"))


class Result(unittest.TestResult):
    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.passed = 0
        self.failed_ids = []
        self.skipped_n = 0
        self.reports = []
        self._t0 = 0.0
        self._bad = False

    def _w(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def startTest(self, test):
        super().startTest(test)
        self._t0 = time.monotonic()
        self._bad = False
        faulthandler.dump_traceback_later(PER_TEST_LIMIT, exit=True)

    def _diag(self, test):
        dump = getattr(test, "dump_diagnostics", None)
        if dump is None:
            gw = getattr(type(test), "gw", None)
            dump = getattr(gw, "diagnostics", None)
        if dump is None:
            return ""
        try:
            return dump()
        except Exception as e:            # diagnostics must never hide the failure
            return "<diagnostics failed: %r>" % e

    def _record(self, test, err, kind, label=None):
        self._bad = True
        text = self._exc_info_to_string(err, test)
        self.reports.append("%s: %s\n%s\n%s" % (kind, label or test.id(), text, self._diag(test)))

    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self._record(test, err, "ERROR")
        else:                                 # setUpClass / module fixture
            self.failed_ids.append(str(test))
            self.reports.append("ERROR: %s\n%s" % (test, _fmt(err)))
            self._w("ERROR %s" % test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, err, "FAIL")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "FAIL" if issubclass(err[0], test.failureException) else "ERROR"
            self._record(test, err, kind, label=subtest.id())

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_n += 1
        self._w("skip  %s: %s" % (test.id(), reason))

    def addSuccess(self, test):
        super().addSuccess(test)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        dt = time.monotonic() - self._t0
        if any(t is test for t, _ in self.skipped):
            return
        if self._bad:
            self.failed_ids.append(test.id())
            self._w("FAIL  %s (%.2fs)" % (test.id(), dt))
        else:
            self.passed += 1
            self._w("ok    %s (%.2fs)" % (test.id(), dt))


def _fmt(err):
    import traceback
    return "".join(traceback.format_exception(*err))


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def main():
    loader = unittest.TestLoader()
    discovered = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    tests = list(flatten(discovered))
    # import errors show up as _FailedTest: keep them (they are failures)
    flt = [f.strip() for f in os.environ.get("TEST_FILTER", "").split(",") if f.strip()]
    if flt:
        tests = [t for t in tests if any(f in t.id() for f in flt)]
        if not tests:
            print("TEST_FILTER=%r matches no test" % os.environ["TEST_FILTER"])
            print("0 passed, 1 failed")
            return 1
    binary = lib.gateway_bin()
    print("gateway binary: %s%s" % (binary, "" if os.access(binary, os.X_OK) else "  (MISSING: run make)"))
    print("temp dir: %s%s" % (lib.session_dir(), " (kept)" if os.environ.get("KEEP_TMP") else ""))
    sys.stdout.flush()

    result = Result(sys.stdout)
    t0 = time.monotonic()
    unittest.TestSuite(tests).run(result)
    elapsed = time.monotonic() - t0

    if result.reports:
        print("\n" + "=" * 70)
        for rep in result.reports:
            print(rep)
            print("-" * 70)
    failed = len(result.failed_ids)
    print("\n%d tests in %.1fs" % (result.passed + failed + result.skipped_n, elapsed))
    if failed:
        print("failed: " + ", ".join(result.failed_ids))
    line = "%d passed, %d failed" % (result.passed, failed)
    if result.skipped_n:
        line += ", %d skipped" % result.skipped_n
    print(line)
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
