#!/usr/bin/python3.11
"""Packs numpy's Python part (build-numpy.sh's site directory) into the
numpy image's /lib/numpy.zip, the way pack-stdlib.py packs the stdlib:
unchecked hash-based .pyc stored uncompressed, sources beside them
deflated, fixed timestamps.

Usage: pack-numpy.py SITE_DIR OUT.zip
"""

import importlib.util
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("pack_stdlib", os.path.join(HERE, "pack-stdlib.py"))
pack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pack)


def main():
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"pack-numpy: needs Python 3.11 for the .pyc magic number, got {sys.version}")
    site, out = sys.argv[1:3]
    modules = {rel: pack.read(path) for path, rel in pack.walk(site) if rel.endswith(".py")}
    if not modules:
        sys.exit(f"pack-numpy: no Python modules under {site}")
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        def add(name, payload, compress):
            entry = zipfile.ZipInfo(name, date_time=pack.EPOCH)
            entry.external_attr = 0o444 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            zf.writestr(entry, payload, compresslevel=9 if compress else None)
        for rel in sorted(modules):
            add(rel[:-3] + ".pyc", pack.pyc_bytes(modules[rel], "/lib/numpy.zip/" + rel), False)
            if modules[rel]:
                add(rel, modules[rel], True)
    os.replace(tmp, out)
    print(f"pack-numpy: {len(modules)} modules, {os.path.getsize(out) // 1024} KiB -> {out}")


if __name__ == "__main__":
    main()
