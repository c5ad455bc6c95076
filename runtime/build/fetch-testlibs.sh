#!/usr/bin/env bash
# Fetches the pure-Python packages that run numpy's own test suite inside the
# sandbox (pytest and its dependencies, hypothesis for numpy's conftest) from
# Debian's archive into OUTDIR/site, and the stdlib parts the runtime image
# leaves out but pytest needs (unittest, doctest, pdb and friends) from the
# CPython build. Only tests mount these; they are not in any runtime image.
# Usage: fetch-testlibs.sh CPYTHON_DIR OUTDIR
set -euo pipefail
CPY=${1:?usage: fetch-testlibs.sh CPYTHON_DIR OUTDIR}
OUT=${2:?usage: fetch-testlibs.sh CPYTHON_DIR OUTDIR}
SUITE=${ERYX_DEBIAN_SUITE:-bookworm}
PKGS=(python3-pytest python3-pluggy python3-iniconfig python3-packaging python3-attr python3-py
      python3-more-itertools python3-hypothesis python3-sortedcontainers)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial"
echo "deb http://deb.debian.org/debian $SUITE main" > "$WORK/apt/sources.list"
APT=(-o "Dir::Etc::sourcelist=$WORK/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
     -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache" -o APT::Sandbox::User=root)
echo "==> apt-get download ${PKGS[*]}" >&2
apt-get "${APT[@]}" update -q >&2
(cd "$WORK" && apt-get "${APT[@]}" download "${PKGS[@]}" >&2)
rm -rf "$OUT/site" && mkdir -p "$OUT/site"
for deb in "$WORK"/*.deb; do
  dpkg-deb -x "$deb" "$WORK/x"
done
cp -r "$WORK"/x/usr/lib/python3/dist-packages/. "$OUT/site/"
for m in unittest doctest.py pdb.py bdb.py cmd.py code.py codeop.py pydoc.py glob.py; do
  cp -r "$CPY/stdlib/$m" "$OUT/site/" 2>/dev/null || true
done
find "$OUT/site" -name '__pycache__' -prune -exec rm -rf {} +
ls "$OUT/site" >&2
