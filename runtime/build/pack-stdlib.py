#!/usr/bin/python3.11
"""Packs the sandbox's /lib/python311.zip: the wasm build's standard library,
the guest runtime and the Debian packages fetched by fetch-pylibs.sh.

Usage: pack-stdlib.py CPYTHON_DIR PYLIB_DIR GUEST_DIR OUT.zip

- Modules are compiled to unchecked hash-based .pyc by this interpreter (it
  must be 3.11: the magic number has to match) and stored uncompressed, so
  importing never inflates anything.
- Their sources are stored beside them, deflated, for tracebacks, linecache
  and inspect.getsource (zipimport prefers the .pyc and only reads a .py
  when asked for source).
- PYLIB_DIR/security holds Lib/ of Debian's security update of python3.11,
  whose source package cannot be fetched: a file there that differs from the
  source's copy (other than in its #! line) replaces it.
- PYLIB_DIR/site (dill) is packed at the root; PYLIB_DIR/zoneinfo becomes the
  `tzdata` package that zoneinfo falls back to when no TZPATH has the zone.
- _eryx_build.py and eryx-runtime.json record the versions of everything
  (read by eryx.runtime_info() in the sandbox and `eryx-worker --version`).

Entries have fixed timestamps: the zip only changes when its inputs do.
"""

import importlib.util
import json
import os
import sys
import zipfile

# Packages that cannot work in a WASI sandbox, with the reason; the import
# test (runtime/sandbox/stdlib_test.go) keeps stdlib-absent.txt in step.
EXCLUDE_DIRS = {
    "test": "CPython's own test suite (make test-stdlib mounts it instead)",
    "tests": "",
    "idlelib": "needs tkinter",
    "tkinter": "needs Tk (_tkinter)",
    "turtledemo": "needs tkinter",
    "ensurepip": "needs subprocesses and bundled wheels",
    "curses": "no terminal (_curses is not built)",
    "msilib": "Windows only",
    "site-packages": "",
    "__pycache__": "",
    "config-3.11-wasm32-wasi": "",
}
EXCLUDE_FILES = {"turtle.py": "needs tkinter", "antigravity.py": "opens a web browser"}
# Non-Python files that modules read at run time through their loader.
DATA_FILES = {("lib2to3", "Grammar.txt"), ("lib2to3", "PatternGrammar.txt")}
# Debian's sysconfig looks for _sysconfigdata_{abiflags}_{multiarch}, the
# build writes _sysconfigdata_{abiflags}_{platform}_{multiarch}.
SYSCONFIGDATA = "_sysconfigdata__wasm32-wasi.py"
EPOCH = (1980, 1, 1, 0, 0, 0)


def pyc_bytes(source, display_path):
    code = compile(source, display_path, "exec", dont_inherit=True, optimize=0)
    # Unchecked hash-based pyc: never compared with its source.
    source_hash = importlib.util.source_hash(source)
    return importlib._bootstrap_external._code_to_hash_pyc(code, source_hash, checked=False)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def same_but_shebang(a, b):
    def body(data):
        return data.split(b"\n", 1)[1] if data.startswith(b"#!") else data
    return body(a) == body(b)


def walk(tree):
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDE_DIRS)
        for name in sorted(files):
            yield os.path.join(root, name), os.path.relpath(os.path.join(root, name), tree)


def read_pairs(path):
    with open(path) as f:
        return dict(line.split(None, 1) for line in f.read().splitlines() if line.strip())


def main():
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"pack-stdlib: needs Python 3.11 for the .pyc magic number, got {sys.version}")
    cpython, pylibs, guest, out = sys.argv[1:5]
    stdlib = os.path.join(cpython, "stdlib")
    security = os.path.join(pylibs, "security")
    modules = {}  # archive path of the .py -> source bytes
    data = {}  # archive path -> bytes, stored as is
    replaced = []
    for path, rel in walk(stdlib):
        name = os.path.basename(rel)
        if name in EXCLUDE_FILES:
            continue
        if name.endswith(".py"):
            source = read(path)
            fixed = os.path.join(security, rel)
            if os.path.isfile(fixed) and not same_but_shebang(source, read(fixed)):
                source = read(fixed)
                replaced.append(rel)
            if name.startswith("_sysconfigdata_"):
                rel = SYSCONFIGDATA
            modules[rel] = source
        elif (os.path.dirname(rel), name) in DATA_FILES:
            data[rel] = read(path)
    for path, rel in walk(os.path.join(pylibs, "site")):
        if rel.endswith(".py"):
            modules[rel] = read(path)
    zones = []
    zoneroot = os.path.join(pylibs, "zoneinfo")
    for path, rel in walk(zoneroot):
        data["tzdata/zoneinfo/" + rel] = read(path)
        zones.append(rel)
    # zoneinfo reads zones through importlib.resources: every directory is a package.
    for d in {""} | {os.path.dirname(z) for z in zones}:
        pkg = os.path.join("tzdata/zoneinfo", d) if d else "tzdata/zoneinfo"
        while pkg:
            modules.setdefault(pkg + "/__init__.py", b"")
            pkg = os.path.dirname(pkg)
    data["tzdata/zones"] = ("\n".join(sorted(zones)) + "\n").encode()
    # Guest files (e.g. the ssl shim) replace stdlib modules of the same name.
    for name in sorted(os.listdir(guest)):
        if name.endswith(".py"):
            modules[name] = read(os.path.join(guest, name))

    sources = read_pairs(os.path.join(cpython, "sources.txt"))
    binaries = read_pairs(os.path.join(pylibs, "binaries.txt"))
    replaced = [r for r in replaced if r not in modules or not os.path.isfile(os.path.join(guest, r))]
    info = {
        "python": sys.version.split()[0],
        "debian_sources": sources,
        "debian_packages": binaries,
        "security_files": sorted(replaced),
        "tzdata": binaries.get("tzdata", ""),
        "modules": len(modules),
    }
    modules["_eryx_build.py"] = (
        '"""Versions of what this runtime was built from (generated by pack-stdlib.py)."""\n'
        f"INFO = {info!r}\n"
    ).encode()
    data["eryx-runtime.json"] = json.dumps(info, indent=1, sort_keys=True).encode()

    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        def add(name, payload, compress):
            entry = zipfile.ZipInfo(name, date_time=EPOCH)
            entry.external_attr = 0o444 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            zf.writestr(entry, payload, compresslevel=9 if compress else None)
        for rel in sorted(modules):
            add(rel[:-3] + ".pyc", pyc_bytes(modules[rel], "/lib/python311.zip/" + rel), False)
            if modules[rel]:
                add(rel, modules[rel], True)
        for rel in sorted(data):
            add(rel, data[rel], False)
    os.replace(tmp, out)
    print(f"pack-stdlib: {len(modules)} modules ({len(replaced)} from the security update: "
          f"{', '.join(sorted(replaced))}), {len(zones)} time zones, "
          f"{os.path.getsize(out) // 1024} KiB -> {out}")


if __name__ == "__main__":
    main()
