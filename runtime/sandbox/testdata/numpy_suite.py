"""Runs a selection of numpy's own tests with pytest and prints one JSON line
of counts per module: the same file runs inside the sandbox (numpy image,
tests and pytest mounted as packages) and natively against Debian's
python3-numpy, so that the two can be compared.

Parameters come as globals set before this file's code: TESTS_ZIP (an archive
of numpy/<module>/tests/..., of which only the members under EXTRACT are
extracted, when given) or TESTS_DIR (a directory to copy), WORK (a writable
directory) and ARGS (pytest arguments: paths relative to WORK).
"""
import json
import os
import sys
import zipfile

import numpy

work = WORK  # noqa: F821 - set by the caller
if "TESTS_ZIP" in globals():
    with zipfile.ZipFile(TESTS_ZIP) as zf:  # noqa: F821
        prefix = globals().get("EXTRACT", "")
        zf.extractall(work, [n for n in zf.namelist() if n.startswith(prefix)])
else:
    import shutil
    shutil.copytree(TESTS_DIR, work, dirs_exist_ok=True)  # noqa: F821
# pytest finds the package root by walking up __init__.py files; numpy and
# its subpackages are already imported (from the image), so the extracted
# test packages are reached by extending their __path__.
# WASI has no ctypes. Several test files import it at the top for a few
# tests; an inert stand-in lets the rest of those files run (the tests that
# use ctypes fail). numpy itself was imported before and knows ctypes is absent.
try:
    import ctypes  # noqa: F401
except ImportError:
    stubs = os.path.join(work, "_stubs")
    os.makedirs(stubs, exist_ok=True)
    with open(os.path.join(stubs, "ctypes.py"), "w") as f:
        f.write("def __getattr__(name):\n"
                "    if name.startswith('__'):\n"
                "        raise AttributeError(name)\n"
                "    def absent(*args, **kwargs):\n"
                "        raise NotImplementedError('ctypes is not available in WASI')\n"
                "    return type(name, (), {'__init__': absent, '__call__': absent})\n")
    sys.path.insert(0, stubs)

top = os.path.join(work, "numpy")
subs = [sub for sub in sorted(os.listdir(top)) if sub != "tests" and os.path.isdir(os.path.join(top, sub))]
# Imported before the empty __init__.py files below exist, which are only
# there for pytest's package detection.
mods = [numpy] + [__import__("numpy." + sub, fromlist=["_"]) for sub in subs]
for mod, d in zip(mods, [top] + [os.path.join(top, sub) for sub in subs]):
    open(os.path.join(d, "__init__.py"), "a").close()
    if d not in mod.__path__:
        mod.__path__.insert(0, d)

# WASI refuses paths outside the sandbox's mounts (such as "/") with
# ENOTCAPABLE, which pathlib does not take for absence; pytest probes the
# parents of every test path.
import pathlib  # noqa: E402


def _absent_if_refused(probe):
    def wrapped(self, *args, **kwargs):
        try:
            return probe(self, *args, **kwargs)
        except PermissionError:
            return False
    return wrapped


for _name in ("exists", "is_dir", "is_file"):
    setattr(pathlib.Path, _name, _absent_if_refused(getattr(pathlib.Path, _name)))

import pytest  # noqa: E402


class Counts:
    def __init__(self):
        self.by_module = {}
        self.by_file = {}
        self.failures = []

    def _count(self, nodeid, outcome, longrepr):
        parts = nodeid.split("::")[0].split("/")
        module = parts[1] if len(parts) > 2 and parts[0] == "numpy" else "other"
        c = self.by_module.setdefault(module, {"passed": 0, "failed": 0, "skipped": 0})
        c[outcome] += 1
        f = nodeid.split("::")[0]
        self.by_file[f] = self.by_file.get(f, 0) + (outcome == "passed")
        if outcome == "failed" and len(self.failures) < 400:
            msg = str(longrepr).strip().splitlines()
            self.failures.append([nodeid, msg[-1][:200] if msg else ""])

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.passed:
            self._count(report.nodeid, "passed", None)
        elif report.failed:
            self._count(report.nodeid, "failed", report.longrepr)
        elif report.skipped:
            self._count(report.nodeid, "skipped", None)

    def pytest_collectreport(self, report):
        # A file that fails to import loses all its tests: count it.
        if report.failed:
            self._count(report.nodeid or "numpy/other/?", "failed", report.longrepr)


counts = Counts()
os.chdir(work)
# An explicit ini file and rootdir: pytest would otherwise probe every
# parent directory, and WASI refuses (rather than denies) paths outside
# the sandbox's mounts.
ini = os.path.join(work, "pytest.ini")
with open(ini, "w") as f:
    f.write("[pytest]\n")
code = pytest.main(["-c", ini, "--rootdir", work, "--confcutdir", work, "-q", "--no-header", "-p", "no:cacheprovider", "-p", "no:faulthandler", "--capture=sys", "-p", "numpy.conftest", "-o", "addopts=",
                    "-W", "ignore", "--tb=line", "-rN", "--disable-warnings",
                    # numpy's own default selection (numpy.test() and runtests.py): no tests
                    # marked slow, some of which need several GiB.
                    "-m", "not slow"] + ARGS, plugins=[counts])  # noqa: F821
print("NUMPY-SUITE " + json.dumps({"exit": int(code), "modules": counts.by_module, "files": counts.by_file,
                                      "failures": counts.failures}))
