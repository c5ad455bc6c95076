#!/usr/bin/env bash
# Fetches CPython's regression tests (Debian's libpython3.11-testsuite, plus
# test/support from libpython3.11-stdlib, at the pinned versions) into
# OUTDIR/test for make test-stdlib. Not part of the sandbox image.
set -euo pipefail
OUT=${1:?usage: fetch-testsuite.sh OUTDIR}
# shellcheck source=debian-apt.sh
. "$(dirname "$0")/debian-apt.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "==> apt-get update (bookworm, bookworm-updates, bookworm-security)" >&2
debian_apt_init "$WORK"
PKGS=(libpython3.11-testsuite libpython3.11-stdlib)
specs=()
for p in "${PKGS[@]}"; do specs+=("$p=$(pin "$p")"); done
echo "==> apt-get download ${specs[*]}" >&2
(cd "$WORK" && apt-get "${APT[@]}" download -q "${specs[@]}" >&2)
rm -rf "$OUT" && mkdir -p "$OUT"
for p in "${PKGS[@]}"; do dpkg-deb -x "$WORK/${p}_"*.deb "$WORK/x"; done
cp -r "$WORK/x/usr/lib/python3.11/test" "$OUT/"
find "$OUT" -name '__pycache__' -prune -exec rm -rf {} +
echo "$(pin libpython3.11-testsuite)" > "$OUT/VERSION"
echo "==> $(find "$OUT/test" -name 'test_*.py' | wc -l) test files in $OUT/test" >&2
