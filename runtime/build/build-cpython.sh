#!/usr/bin/env bash
# Builds CPython 3.11 (Debian's source package) and the C libraries its
# modules need (zlib, sqlite3, bzip2, xz-utils' liblzma) as static wasm32-wasi
# libraries with Debian's clang-16 and wasi-libc. Every source is fetched at
# the exact version pinned in runtime/build/debian-pins.
#
# Output in OUTDIR: lib/{libpython3.11.a,libmpdec.a,libexpat.a,libz.a,libsqlite3.a,libbz2.a,liblzma.a},
# include/python3.11 (headers + pyconfig.h), stdlib/ (Lib/ + _sysconfigdata).
#
# A few minutes on 2 cores; the Makefile caches OUTDIR keyed by the hash of
# this script, the patches and the source pins, so it only runs again when the
# recipe changes.
set -euo pipefail

OUT=${1:?usage: build-cpython.sh OUTDIR}
PATCHES=$(cd "$(dirname "$0")/patches" && pwd)
WORK=${ERYX_BUILD_WORK:-$(mktemp -d)}
JOBS=${JOBS:-$(nproc)}
# shellcheck source=debian-apt.sh
. "$(dirname "$0")/debian-apt.sh"
PYPKG=python3.11
ZPKG=zlib
SQLPKG=sqlite3
BZPKG=bzip2
XZPKG=xz-utils

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

APT_READY=""
fetch() {
  local version
  version=$(pin "$1")
  if [ -z "$APT_READY" ]; then
    log "apt-get update (bookworm, bookworm-updates, bookworm-security)"
    debian_apt_init "$WORK"
    APT_READY=1
  fi
  log "apt-get source $1=$version"
  rm -rf "src-$1" && mkdir -p "src-$1" &&
    (cd "src-$1" && apt-get "${APT[@]}" source -q --download-only "$1=$version" >&2 &&
      dpkg-source -x ./*.dsc tree >/dev/null)
}

for p in $ZPKG $SQLPKG $BZPKG $XZPKG $PYPKG; do
  [ -d "src-$p/tree" ] || fetch "$p"
done

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

log "bzip2 for wasm32-wasi"
(
  cd src-$BZPKG/tree
  make -s libbz2.a CC="$CC_WASM" AR=$AR_WASM RANLIB=$RANLIB_WASM CFLAGS="-O2 -D_FILE_OFFSET_BITS=64" >/dev/null 2>&1
  cp libbz2.a "$SYSROOT/lib/" && cp bzlib.h "$SYSROOT/include/"
)

log "liblzma for wasm32-wasi"
(
  mkdir -p "$WORK/build-xz" && cd "$WORK/build-xz"
  # liblzma itself needs no signals, but a shared header declares a
  # sigprocmask() helper for the command-line tools (not built here).
  cat > wasi-shim.h <<'SHIM'
#define _WASI_EMULATED_SIGNAL 1
#include <signal.h>
typedef unsigned long sigset_t;
static inline int sigprocmask(int how, const sigset_t *set, sigset_t *old) { (void)how; (void)set; (void)old; return 0; }
SHIM
  CC="$CC_WASM" AR=$AR_WASM RANLIB=$RANLIB_WASM CFLAGS="-O2" \
    "$WORK/src-$XZPKG/tree/configure" -q --host=wasm32-unknown-wasi --build=x86_64-pc-linux-gnu \
    --prefix="$WORK/xz-install" --disable-shared --enable-static --disable-threads --disable-nls \
    --disable-xz --disable-xzdec --disable-lzmadec --disable-lzmainfo --disable-lzma-links \
    --disable-scripts --disable-doc >/dev/null 2>&1
  make -s -C src/liblzma -j"$JOBS" CFLAGS="-O2 -include $PWD/wasi-shim.h" >/dev/null 2>&1
  make -s -C src/liblzma install >/dev/null 2>&1
  cp "$WORK/xz-install/lib/liblzma.a" "$SYSROOT/lib/"
  cp -r "$WORK/xz-install/include/." "$SYSROOT/include/"
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
  # process, so ownership and permissions have no meaning there, and locks
  # are kept between its own connections (runtime/guest/sqlite_vfs.c wraps
  # the lock-free "unix-none" VFS).
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
export BZIP2_CFLAGS="-I$SYSROOT/include" BZIP2_LIBS="-L$SYSROOT/lib -lbz2"
export LIBLZMA_CFLAGS="-I$SYSROOT/include" LIBLZMA_LIBS="-L$SYSROOT/lib -llzma"
export LIBSQLITE3_CFLAGS="-I$SYSROOT/include" LIBSQLITE3_LIBS="-L$SYSROOT/lib -lsqlite3 -lwasi-emulated-mman -lwasi-emulated-getpid"
CONFIG_SITE=$PYSRC/Tools/wasm/config.site-wasm32-wasi \
  CC="$CC_WASM" CPP="clang-cpp-16 --target=wasm32-wasi" AR=$AR_WASM RANLIB=$RANLIB_WASM \
  OPT="-DNDEBUG -g0 -fwrapv -O3 -Wno-int-conversion" \
  "$PYSRC/configure" -C -q \
    --host=wasm32-unknown-wasi --build=x86_64-pc-linux-gnu \
    --with-build-python=/usr/bin/python3.11 \
    --disable-test-modules --without-ensurepip --with-pymalloc \
    ac_cv_header_uuid_uuid_h=no ac_cv_header_uuid_h=no \
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
# Which C modules the build has, for the stdlib import test and runtime_info().
grep -E '^(MODBUILT_NAMES|MODDISABLED_NAMES|MODMISSING_NAMES|MODSHARED_NAMES)=' Makefile > "$OUT/modules.txt" || true
for p in $ZPKG $SQLPKG $BZPKG $XZPKG $PYPKG; do echo "$p $(pin "$p")"; done > "$OUT/sources.txt"
log "done: $OUT"
