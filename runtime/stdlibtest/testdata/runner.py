# Runs one CPython regression-test module with unittest and reports each
# test's outcome. The same file runs natively and in a sandbox; the caller
# prepends NAME, SUITE (the directory holding test/), PKG (the sandbox's
# archive of it, or None natively) and WORK (a writable directory).
import importlib
import os
import sys
import unittest
import warnings

if PKG is not None and not os.path.isdir(os.path.join(SUITE, "test")):
    # In the sandbox the suite comes as a package archive; tests open their
    # data files by path, so they need a real directory: unpack into /tmp.
    import zipfile
    with zipfile.ZipFile(PKG) as z:
        z.extractall(SUITE)
sys.path.insert(0, SUITE)
os.chdir(WORK)
warnings.simplefilter("ignore")

from test import support  # noqa: E402

# As regrtest without -u: no network, no huge or slow resources.
support.use_resources = []
support.verbose = 0


class Result(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.outcomes = {}

    def addSuccess(self, test):
        self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test.id()] = "fail"

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[str(test.id() if hasattr(test, "id") else test)] = "error"

    def addSkip(self, test, reason):
        self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test, err):
        self.outcomes[test.id()] = "pass"

    def addUnexpectedSuccess(self, test):
        self.outcomes[test.id()] = "fail"

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self.outcomes[test.id()] = "fail"


outcome = {"module": NAME, "import_error": None, "tests": {}}
try:
    mod = importlib.import_module("test." + NAME)
    suite = unittest.defaultTestLoader.loadTestsFromModule(mod)
    r = Result()
    suite.run(r)
    # A failed subtest marks the test failed even if addSuccess follows.
    outcome["tests"] = r.outcomes
except BaseException as e:  # noqa: BLE001 - an unimportable module is a result
    outcome["import_error"] = f"{type(e).__name__}: {e}"
result = outcome
