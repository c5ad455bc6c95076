#!/usr/bin/python3.11
"""Compiles the wasm build's standard library (plus the guest runtime) to
sourceless .pyc files and packs them into an uncompressed, reproducible zip
that the sandbox imports from (/lib/python311.zip).

Usage: pack-stdlib.py STDLIB_DIR GUEST_DIR OUT.zip [SITE_DIR...]

SITE_DIRs hold extra pure-Python libraries (e.g. dill from Debian), packed
at the root of the zip like the stdlib.

Must run under the same CPython minor version as the guest (3.11): the .pyc
magic number has to match. Entries are stored uncompressed so that importing
never needs zlib, and with fixed timestamps so the zip only changes when its
inputs do.
"""

import importlib.util
import os
import sys
import zipfile

# Packages that cannot work in a WASI sandbox or only serve development.
EXCLUDE_DIRS = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "venv", "pydoc_data", "curses", "dbm", "distutils",
    "msilib", "site-packages", "__pycache__", "config-3.11-wasm32-wasi", "unittest",
}
EXCLUDE_FILES = {"turtle.py", "antigravity.py", "this.py", "pydoc.py", "tabnanny.py"}
EPOCH = (1980, 1, 1, 0, 0, 0)


def pyc_bytes(source_path, display_path):
    with open(source_path, "rb") as f:
        source = f.read()
    code = compile(source, display_path, "exec", dont_inherit=True, optimize=0)
    # Unchecked hash-based pyc: never compared with a source that is not there.
    source_hash = importlib.util.source_hash(source)
    return importlib._bootstrap_external._code_to_hash_pyc(code, source_hash, checked=False)


def main():
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"pack-stdlib: needs Python 3.11 for the .pyc magic number, got {sys.version}")
    stdlib, guest, out = sys.argv[1:4]
    entries = []
    for tree in [stdlib] + sys.argv[4:]:
        for root, dirs, files in os.walk(tree):
            dirs[:] = sorted(d for d in dirs if d not in EXCLUDE_DIRS)
            for name in sorted(files):
                if name.endswith(".py") and name not in EXCLUDE_FILES:
                    path = os.path.join(root, name)
                    entries.append((path, os.path.relpath(path, tree)))
    # Guest files (e.g. the ssl shim) replace stdlib modules of the same name.
    shadowed = {name for name in os.listdir(guest) if name.endswith(".py")}
    entries = [(path, rel) for path, rel in entries if rel not in shadowed]
    for name in sorted(shadowed):
        entries.append((os.path.join(guest, name), name))
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for path, rel in entries:
            data = pyc_bytes(path, "/lib/" + rel)
            info = zipfile.ZipInfo(rel[:-3] + ".pyc", date_time=EPOCH)
            info.external_attr = 0o444 << 16
            zf.writestr(info, data)
    os.replace(tmp, out)
    print(f"pack-stdlib: {len(entries)} modules, {os.path.getsize(out) // 1024} KiB -> {out}")


if __name__ == "__main__":
    main()
