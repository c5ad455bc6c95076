#!/usr/bin/env bash
# Builds CPython 3.11 (Debian's source package) and zlib as static wasm32-wasi
# libraries with Debian's clang-16 and wasi-libc.
#
# Output in OUTDIR: lib/{libpython3.11.a,libmpdec.a,libexpat.a,libz.a,libsqlite3.a},
# include/python3.11 (headers + pyconfig.h), stdlib/ (Lib/ + _sysconfigdata).
#
# About two minutes on 2 cores; the Makefile caches OUTDIR keyed by the hash of
# this script, so it only runs again when the recipe changes.
set -euo pipefail

OUT=${1:?usage: build-cpython.sh OUTDIR}
PATCHES=$(cd "$(dirname "$0")/patches" && pwd)
WORK=${ERYX_BUILD_WORK:-$(mktemp -d)}
JOBS=${JOBS:-$(nproc)}
SUITE=${ERYX_DEBIAN_SUITE:-bookworm}
PYPKG=python3.11
ZPKG=zlib
SQLPKG=sqlite3

log() { printf '\033[1m==> %s\033[0m (%s)\n' "$*" "$(date +%H:%M:%S)" >&2; }

# bulk-memory: memcpy/memset become memory.copy/fill, which wazero runs as
# native memmove instead of a byte loop in wasm.
CC_WASM="clang-16 --target=wasm32-wasi -mbulk-memory -mnontrapping-fptoint"
AR_WASM=llvm-ar-16
RANLIB_WASM=llvm-ranlib-16
for t in clang-16 llvm-ar-16 llvm-ranlib-16 wasm-ld-16 dpkg-source tclsh cc; do
  command -v "$t" >/dev/null || { echo "missing tool $t: run .ci/install-deps" >&2; exit 1; }
done
[ -f /usr/lib/wasm32-wasi/libc.a ] || { echo "missing wasi-libc: run .ci/install-deps" >&2; exit 1; }

mkdir -p "$WORK" "$OUT"
cd "$WORK"

# A private apt configuration: source packages without touching the system's lists.
APT="-o Dir::Etc::sourcelist=$WORK/apt/sources.list -o Dir::Etc::sourceparts=/dev/null
     -o Dir::State::Lists=$WORK/apt/lists -o Dir::Cache=$WORK/apt/cache -o APT::Sandbox::User=root"
fetch() {
  if [ ! -d "$WORK/apt/lists" ]; then
    mkdir -p apt/lists/partial apt/cache/archives/partial
    echo "deb-src http://deb.debian.org/debian $SUITE main" > apt/sources.list
    log "apt-get update (deb-src $SUITE)"
    # shellcheck disable=SC2086
    apt-get $APT update -q >&2
  fi
  log "apt-get source $1"
  mkdir -p "src-$1" && (cd "src-$1" && apt-get $APT source -q --download-only "$1" >&2 &&
    dpkg-source -x ./*.dsc tree >/dev/null)
}

[ -d src-$ZPKG/tree ] || fetch $ZPKG
[ -d src-$SQLPKG/tree ] || fetch $SQLPKG
[ -d src-$PYPKG/tree ] || fetch $PYPKG

# Our fixes to CPython, one patch a fix (runtime/build/patches/cpython-*.patch,
# applied in name order; the Makefile's cache key covers them).
if [ ! -f src-$PYPKG/.patched ]; then
  for p in "$PATCHES"/cpython-*.patch; do
    log "patch $(basename "$p")"
    patch -d src-$PYPKG/tree -p1 --forward --quiet < "$p"
  done
  touch src-$PYPKG/.patched
fi

SYSROOT=$OUT
mkdir -p "$SYSROOT/lib" "$SYSROOT/include"

log "zlib for wasm32-wasi"
(
  cd src-$ZPKG/tree
  CC="$CC_WASM" AR=$AR_WASM RANLIB=$RANLIB_WASM CFLAGS="-O2" CHOST=wasm32 \
    ./configure --static --prefix="$SYSROOT" >/dev/null
  make -s -j"$JOBS" libz.a >/dev/null 2>&1
  cp libz.a "$SYSROOT/lib/" && cp zlib.h zconf.h "$SYSROOT/include/"
)

# pymalloc: configure turns it off for WASI, but it works there (arenas come
# from malloc) and allocation-heavy Python runs ~1.5-2x faster with it.
log "sqlite3 for wasm32-wasi"
(
  # The amalgamation is generated with the host's compiler and tclsh.
  mkdir -p "$WORK/build-sqlite" && cd "$WORK/build-sqlite"
  "$WORK/src-$SQLPKG/tree/configure" --disable-tcl >/dev/null 2>&1
  make -s sqlite3.c >/dev/null 2>&1
  # WASI lacks a few POSIX calls the unix VFS names; the sandbox is a single
  # process, so ownership, permissions and locks have no meaning there (the
  # runtime makes the lock-free "unix-none" VFS the default).
  cat > wasi-shim.h <<'SHIM'
#include <sys/types.h>
#include <fcntl.h>
#include <unistd.h>
#define F_RDLCK 0
#define F_WRLCK 1
#define F_UNLCK 2
#define F_GETLK 5
#define F_SETLK 6
#define F_SETLKW 7
static inline int fchmod(int fd, mode_t m) { (void)fd; (void)m; return 0; }
static inline int fchown(int fd, uid_t u, gid_t g) { (void)fd; (void)u; (void)g; return 0; }
static inline uid_t geteuid(void) { return 0; }
SHIM
  $CC_WASM -O2 -include wasi-shim.h -c sqlite3.c -o sqlite3.o \
    -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_WAL \
    -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_MAX_MMAP_SIZE=0 -DSQLITE_TEMP_STORE=3 -DSQLITE_OMIT_POPEN \
    -D_WASI_EMULATED_GETPID -D_WASI_EMULATED_MMAN
  rm -f "$SYSROOT/lib/libsqlite3.a"
  $AR_WASM rcs "$SYSROOT/lib/libsqlite3.a" sqlite3.o
  cp sqlite3.h sqlite3ext.h "$SYSROOT/include/"
)

log "CPython configure (about a minute)"
PYSRC=$WORK/src-$PYPKG/tree
mkdir -p "$WORK/build-py" && cd "$WORK/build-py"
export PKG_CONFIG_PATH="" PKG_CONFIG_LIBDIR="$SYSROOT/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR=/nonexistent
export ZLIB_CFLAGS="-I$SYSROOT/include" ZLIB_LIBS="-L$SYSROOT/lib -lz"
export LIBSQLITE3_CFLAGS="-I$SYSROOT/include" LIBSQLITE3_LIBS="-L$SYSROOT/lib -lsqlite3 -lwasi-emulated-mman -lwasi-emulated-getpid"
CONFIG_SITE=$PYSRC/Tools/wasm/config.site-wasm32-wasi \
  CC="$CC_WASM" CPP="clang-cpp-16 --target=wasm32-wasi" AR=$AR_WASM RANLIB=$RANLIB_WASM \
  OPT="-DNDEBUG -g0 -fwrapv -O3 -Wno-int-conversion" \
  "$PYSRC/configure" -C -q \
    --host=wasm32-unknown-wasi --build=x86_64-pc-linux-gnu \
    --with-build-python=/usr/bin/python3.11 \
    --disable-test-modules --without-ensurepip --with-pymalloc \
    ac_cv_header_bzlib_h=no ac_cv_header_lzma_h=no ac_cv_header_uuid_uuid_h=no ac_cv_header_uuid_h=no \
    >&2

log "CPython make (about a minute)"
make -j"$JOBS" -s python.wasm >"$WORK/make.log" 2>&1 || { tail -50 "$WORK/make.log" >&2; exit 1; }
[ -f python.wasm ] || { echo "CPython build failed" >&2; exit 1; }

log "collect outputs"
make -s pybuilddir.txt >/dev/null 2>&1 || true
cp libpython3.11.a Modules/_decimal/libmpdec/libmpdec.a Modules/expat/libexpat.a "$OUT/lib/"
rm -rf "$OUT/include/python3.11" && mkdir -p "$OUT/include/python3.11"
cp -r "$PYSRC"/Include/. "$OUT/include/python3.11/"
cp pyconfig.h "$OUT/include/python3.11/"
rm -rf "$OUT/stdlib" && mkdir -p "$OUT/stdlib"
cp -r "$PYSRC"/Lib/. "$OUT/stdlib/"
cp build/lib.wasi-wasm32-3.11/_sysconfigdata*.py "$OUT/stdlib/"
log "done: $OUT"
