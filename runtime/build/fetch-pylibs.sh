#!/usr/bin/env bash
# Fetches the pure-Python libraries the guest runtime uses from Debian's
# archive (no PyPI here) and extracts them into OUTDIR/site.
#   dill: pickles user-defined functions and classes for session snapshots.
set -euo pipefail
OUT=${1:?usage: fetch-pylibs.sh OUTDIR}
SUITE=${ERYX_DEBIAN_SUITE:-bookworm}
PKGS=(python3-dill)
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
find "$OUT/site" -name '__pycache__' -prune -exec rm -rf {} + 
find "$OUT/site" -maxdepth 1 -name '*.dist-info' -prune -o -maxdepth 1 -name '*.egg-info' -prune -exec rm -rf {} +
ls "$OUT/site" >&2
