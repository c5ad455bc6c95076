#!/usr/bin/env bash
# Says when Debian (bookworm, bookworm-updates, bookworm-security) serves a
# newer version of a package pinned in runtime/build/debian-pins. A warning,
# not a failure: moving a pin is a deliberate commit (and a rebuild).
# Exit status 0 either way; 2 when the archive cannot be read.
set -euo pipefail
# shellcheck source=debian-apt.sh
. "$(dirname "$0")/debian-apt.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
debian_apt_init "$WORK" 2>"$WORK/update.log" || { cat "$WORK/update.log" >&2; echo "check-updates: cannot read Debian's archive" >&2; exit 2; }
newer=0
while read -r kind name version _; do
  case $kind in source|binary|test) ;; *) continue ;; esac
  if [ "$kind" = source ]; then
    versions=$(apt-cache "${APT[@]}" showsrc "$name" 2>/dev/null | awk '/^Package:/ { p = $2 } /^Version:/ && p == "'"$name"'" { print $2 }')
  else
    versions=$(apt-cache "${APT[@]}" madison "$name" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }')
  fi
  [ -n "$versions" ] || { echo "warning: $kind $name: not found in Debian's archive"; newer=1; continue; }
  best=$version
  for v in $versions; do
    if dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
  done
  if [ "$best" != "$version" ]; then
    echo "warning: $kind $name: pinned $version, Debian serves $best (runtime/build/debian-pins)"
    newer=1
  else
    echo "ok: $kind $name $version"
  fi
done < "$PINS_FILE"
[ "$newer" -eq 0 ] || echo "check-updates: newer Debian versions exist (see docs/runtime.md, \"Debian versions\", for moving a pin)"
