# Sourced by the build scripts: a private apt configuration over Debian
# bookworm, bookworm-updates and bookworm-security, so that source and binary
# packages can be fetched without touching the system's lists.
#   debian_apt_init DIR   writes DIR/apt and runs apt-get update
#   pin NAME              prints the pinned version of NAME (runtime/build/debian-pins)
# After init, "${APT[@]}" holds the apt-get/apt-cache options.
PINS_FILE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/debian-pins
pin() {
  local v
  v=$(awk -v n="$1" '$1 !~ /^#/ && $2 == n { print $3 }' "$PINS_FILE")
  [ -n "$v" ] || { echo "no pin for $1 in $PINS_FILE" >&2; return 1; }
  echo "$v"
}
debian_apt_init() {
  local dir=$1
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial"
  local s
  for s in "bookworm main" "bookworm-updates main"; do
    echo "deb http://deb.debian.org/debian $s"
    echo "deb-src http://deb.debian.org/debian $s"
  done > "$dir/apt/sources.list"
  echo "deb http://security.debian.org/debian-security bookworm-security main" >> "$dir/apt/sources.list"
  echo "deb-src http://security.debian.org/debian-security bookworm-security main" >> "$dir/apt/sources.list"
  APT=(-o "Dir::Etc::sourcelist=$dir/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
       -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache" -o APT::Sandbox::User=root
       -o Acquire::Languages=none)
  apt-get "${APT[@]}" update -q >&2
}
