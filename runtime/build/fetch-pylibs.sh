#!/usr/bin/env bash
# Fetches the Debian binary packages whose files go into the stdlib archive
# (no PyPI here), at the versions pinned in runtime/build/debian-pins, and
# unpacks what the sandbox uses:
#   OUTDIR/site       pure-Python libraries packed at the archive's root
#                     (dill: pickles functions and classes for session snapshots)
#   OUTDIR/zoneinfo   the time-zone database (tzdata), packed as the `tzdata`
#                     package that zoneinfo falls back to
#   OUTDIR/security   Lib/ of the pinned libpython3.11-* packages: the files
#                     that differ from the source replace them (pack-stdlib.py)
#   OUTDIR/binaries.txt  package and version of each, for runtime_info()
set -euo pipefail
OUT=${1:?usage: fetch-pylibs.sh OUTDIR}
# shellcheck source=debian-apt.sh
. "$(dirname "$0")/debian-apt.sh"
PKGS=(python3-dill tzdata libpython3.11-minimal libpython3.11-stdlib)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "==> apt-get update (bookworm, bookworm-updates, bookworm-security)" >&2
debian_apt_init "$WORK"
specs=()
for p in "${PKGS[@]}"; do specs+=("$p=$(pin "$p")"); done
echo "==> apt-get download ${specs[*]}" >&2
(cd "$WORK" && apt-get "${APT[@]}" download -q "${specs[@]}" >&2)
rm -rf "$OUT" && mkdir -p "$OUT/site" "$OUT/zoneinfo" "$OUT/security"
for p in "${PKGS[@]}"; do
  rm -rf "$WORK/x" && dpkg-deb -x "$WORK/${p}_"*.deb "$WORK/x"
  case $p in
    python3-dill) cp -r "$WORK"/x/usr/lib/python3/dist-packages/. "$OUT/site/" ;;
    # Only the canonical zones: posix/ and right/ are copies and leap-second
    # variants, which zoneinfo's own tzdata package leaves out as well.
    tzdata) (cd "$WORK/x/usr/share/zoneinfo" &&
              find . -type f ! -path './posix/*' ! -path './right/*' ! -name '*.tab' ! -name '*.zi' \
                ! -name leapseconds ! -name leap-seconds.list ! -name posixrules ! -name localtime |
              while read -r f; do mkdir -p "$OUT/zoneinfo/$(dirname "$f")" && cp "$f" "$OUT/zoneinfo/$f"; done) ;;
    libpython3.11-*) cp -r "$WORK"/x/usr/lib/python3.11/. "$OUT/security/" ;;
  esac
  echo "$p $(pin "$p")" >> "$OUT/binaries.txt"
done
find "$OUT/site" -name '__pycache__' -prune -exec rm -rf {} +
find "$OUT/site" -maxdepth 1 -name '*.dist-info' -prune -o -maxdepth 1 -name '*.egg-info' -prune -exec rm -rf {} +
find "$OUT/security" -name '__pycache__' -prune -exec rm -rf {} +
ls "$OUT/site" >&2
echo "==> $(find "$OUT/zoneinfo" -type f | wc -l) time zones" >&2
