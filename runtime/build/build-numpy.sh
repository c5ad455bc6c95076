#!/usr/bin/env bash
# Builds numpy 1.24.2 (Debian bookworm's source package) for wasm32-wasi as
# static archives, to be linked into the eryx reactor as built-in modules.
#
# Usage: build-numpy.sh CPYTHON_DIR OUTDIR
#   CPYTHON_DIR: the cached CPython build (headers, pyconfig.h, _sysconfigdata)
#   OUTDIR/lib/*.a        one archive per extension module + libnpymath,
#                         libnpyrandom
#   OUTDIR/modules.txt    "dotted.name archive init-symbol" per extension
#   OUTDIR/site/numpy     numpy's Python part (packed into the stdlib zip)
#   OUTDIR/tests/numpy    numpy's own tests (mounted as a package by tests)
#
# numpy's own setup.py (numpy.distutils) drives the build, run by the host's
# /usr/bin/python3.11 with the wasm build's sysconfig, so that its config
# checks ask the wasm compiler (sizeof(long) 4, pointers 4, long double 16)
# and its code generators and Cython run natively. WASI has no dlopen: the
# "shared library" link step is replaced by a script that archives the
# objects. SIMD dispatch, SVML, BLAS and signal handling are off.
#
# Source: `apt-get source numpy` from bookworm. When the archive cannot serve
# the upstream tarball, ERYX_NUMPY_SOURCE may name a git repository of numpy
# (tag v1.24.2 is exported) or a tarball of the same release; Debian's
# patches (its .debian.tar.xz) are applied either way. A source taken from
# a git repository is kept as $ERYX_CACHE_DIR/numpy-1.24.2-src.tar, which
# later builds on the machine use when the archive still cannot serve it.
set -euo pipefail

CPY=$(cd "${1:?usage: build-numpy.sh CPYTHON_DIR OUTDIR}" && pwd)
OUT=${2:?usage: build-numpy.sh CPYTHON_DIR OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${ERYX_BUILD_WORK:-$(mktemp -d)}
JOBS=${JOBS:-$(nproc)}
SUITE=${ERYX_DEBIAN_SUITE:-bookworm}
VERSION=1.24.2

log() { printf '\033[1m==> numpy: %s\033[0m (%s)\n' "$*" "$(date +%H:%M:%S)" >&2; }

for t in clang-16 clang++-16 llvm-ar-16 llvm-ranlib-16 dpkg-source cython3 /usr/bin/python3.11; do
  command -v "$t" >/dev/null || { echo "missing tool $t: run .ci/install-deps" >&2; exit 1; }
done
[ -d /usr/lib/llvm-16/include/wasm32-wasi/c++/v1 ] || { echo "missing libc++ for wasm32-wasi: run .ci/install-deps" >&2; exit 1; }
/usr/bin/python3.11 -c 'import setuptools' 2>/dev/null || { echo "missing python3-setuptools: run .ci/install-deps" >&2; exit 1; }
SYSCONF=$(ls "$CPY"/stdlib/_sysconfigdata_*wasi*.py 2>/dev/null | head -1)
[ -n "$SYSCONF" ] || { echo "no _sysconfigdata in $CPY/stdlib" >&2; exit 1; }

mkdir -p "$WORK" "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$WORK"

# ---- source -------------------------------------------------------------------
APT="-o Dir::Etc::sourcelist=$WORK/apt/sources.list -o Dir::Etc::sourceparts=/dev/null
     -o Dir::State::Lists=$WORK/apt/lists -o Dir::Cache=$WORK/apt/cache -o APT::Sandbox::User=root"
if [ ! -d src/tree ]; then
  mkdir -p apt/lists/partial apt/cache/archives/partial src
  echo "deb-src http://deb.debian.org/debian $SUITE main" > apt/sources.list
  log "apt-get update (deb-src $SUITE)"
  # shellcheck disable=SC2086
  apt-get $APT update -q >&2
  log "apt-get source numpy"
  # shellcheck disable=SC2086
  if (cd src && apt-get $APT source -q --download-only numpy >&2); then
    (cd src && dpkg-source -x ./numpy_*.dsc tree >/dev/null)
  else
    debtar=$(ls src/numpy_"$VERSION"-*.debian.tar.xz 2>/dev/null | head -1)
    [ -n "$debtar" ] || { echo "numpy: could not fetch Debian's numpy source package" >&2; exit 1; }
    # A tarball kept from an earlier build on this machine serves as well.
    kept=${ERYX_CACHE_DIR:-$HOME/.cache/eryx}/numpy-$VERSION-src.tar
    if [ -z "${ERYX_NUMPY_SOURCE:-}" ] && [ -f "$kept" ]; then ERYX_NUMPY_SOURCE=$kept; fi
    [ -n "${ERYX_NUMPY_SOURCE:-}" ] || {
      echo "numpy: the archive did not serve numpy's upstream tarball; set ERYX_NUMPY_SOURCE" \
           "to a numpy git repository or a numpy-$VERSION tarball (or ERYX_NUMPY=0 to build without numpy)" >&2
      exit 1
    }
    log "upstream source from $ERYX_NUMPY_SOURCE (Debian's patches from $(basename "$debtar"))"
    mkdir -p src/tree
    if [ -d "$ERYX_NUMPY_SOURCE" ]; then
      mkdir -p "$(dirname "$kept")"
      git -C "$ERYX_NUMPY_SOURCE" archive --prefix="numpy-$VERSION/" -o "$kept.tmp" "v$VERSION" && mv "$kept.tmp" "$kept"
      tar -xf "$kept" -C src/tree --strip-components=1
    else
      tar -xf "$ERYX_NUMPY_SOURCE" -C src/tree --strip-components=1
    fi
    [ -f src/tree/numpy/core/setup.py ] || { echo "numpy: $ERYX_NUMPY_SOURCE is not numpy $VERSION" >&2; exit 1; }
    tar -xJf "$debtar" -C src/tree
    for p in $(grep -v '^#' src/tree/debian/patches/series); do
      patch -d src/tree -p1 --forward --quiet < "src/tree/debian/patches/$p"
    done
  fi
fi
if [ ! -f src/.patched ]; then
  for p in "$HERE"/patches/numpy-*.patch; do
    log "patch $(basename "$p")"
    patch -d src/tree -p1 --forward --quiet < "$p"
  done
  touch src/.patched
fi

# ---- cross environment -------------------------------------------------------
mkdir -p tools sysconf
cp "$SYSCONF" sysconf/
# numpy.distutils keeps only the first word of CXX, so the C++ flags live in
# a wrapper. No exceptions (wazero runs no wasm exception handling), no RTTI.
cat > tools/wasm-c++ <<'EOF'
#!/bin/sh
exec clang++-16 --target=wasm32-wasi -mbulk-memory -mnontrapping-fptoint -fno-exceptions -fno-rtti \
  -isystem /usr/lib/llvm-16/include/wasm32-wasi/c++/v1 -Drestrict=__restrict "$@"
EOF
# Stands in for the shared-library linker: the "extension module" becomes a
# static archive of its objects, and the libraries it asked for are recorded.
cat > tools/ldshared <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
out=""; objs=(); libs=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2; continue;;
    *.o) objs+=("$1");;
    -l*|*.a) libs+=("$1");;
  esac
  shift
done
[ -n "$out" ] || { echo "ldshared: no -o" >&2; exit 1; }
rm -f "$out"
llvm-ar-16 rcs "$out" "${objs[@]}"
printf '%s\n' "${libs[@]}" > "$out.libs"
EOF
chmod +x tools/wasm-c++ tools/ldshared

DEFS="-DNDEBUG -DNPY_NO_SIGNAL -D__NPY_PRIVATE_NO_SIGNAL -D_WASI_EMULATED_SIGNAL -D_WASI_EMULATED_MMAN
      -D_WASI_EMULATED_PROCESS_CLOCKS -D_WASI_EMULATED_GETPID"
export _PYTHON_SYSCONFIGDATA_NAME
_PYTHON_SYSCONFIGDATA_NAME=$(basename "$SYSCONF" .py)
export PYTHONPATH=$WORK/sysconf _PYTHON_HOST_PLATFORM=wasi-wasm32
export CC="clang-16 --target=wasm32-wasi -mbulk-memory -mnontrapping-fptoint" CXX=$WORK/tools/wasm-c++
export LDSHARED=$WORK/tools/ldshared AR=llvm-ar-16 RANLIB=llvm-ranlib-16 LDFLAGS=""
# The wasm pyconfig.h must win over the host's headers distutils adds later.
export CFLAGS="-I$CPY/include/python3.11 -O2 -g0 -fwrapv -Wno-int-conversion $(echo $DEFS)"
export NPY_DISABLE_SVML=1 BLAS=None LAPACK=None ATLAS=None NPY_BLAS_ORDER= NPY_LAPACK_ORDER=

log "setup.py build (code generators, Cython, about 3 minutes on 2 cores)"
cd src/tree
if ! /usr/bin/python3.11 setup.py build --disable-optimization -j"$JOBS" >"$WORK/build.log" 2>&1; then
  tail -60 "$WORK/build.log" >&2
  echo "numpy: build failed (full log: $WORK/build.log)" >&2
  exit 1
fi
BUILD=$PWD/build
LIB=$(ls -d "$BUILD"/lib.*)
TEMP=$(ls -d "$BUILD"/temp.*)

# ---- collect --------------------------------------------------------------------
log "collect outputs"
rm -rf "$OUT/lib" "$OUT/site" "$OUT/tests" && mkdir -p "$OUT/lib" "$OUT/site" "$OUT/tests"
cp "$TEMP"/libnpymath.a "$TEMP"/libnpyrandom.a "$OUT/lib/"
: > "$OUT/modules.txt"
# The extension modules that are linked in; numpy.core._simd only tests the
# SIMD dispatch, which is off.
MODULES="core._multiarray_umath core._multiarray_tests core._umath_tests core._rational_tests
  core._struct_ufunc_tests core._operand_flag_tests linalg._umath_linalg linalg.lapack_lite
  fft._pocketfft_internal random._common random.bit_generator random._bounded_integers
  random._mt19937 random._philox random._pcg64 random._sfc64 random._generator random.mtrand"
umath_objs=$(llvm-ar-16 t "$LIB/numpy/core/_multiarray_umath".*.so)
for m in $MODULES; do
  so=$(ls "$LIB/numpy/${m//.//}".*.so)
  base=${m##*.}
  a="$OUT/lib/libnpy_${m//./_}.a"
  cp "$so" "$a"
  # The test modules compile a few of _multiarray_umath's sources again, and
  # lapack_lite the same f2c LAPACK as _umath_linalg; linked statically those
  # would be duplicate symbols, so the second copy goes.
  case $m in
    core._multiarray_umath|linalg._umath_linalg) dups="";;
    linalg.lapack_lite) dups=$(llvm-ar-16 t "$LIB/numpy/linalg/_umath_linalg".*.so);;
    *) dups=$umath_objs;;
  esac
  for o in $(llvm-ar-16 t "$a"); do
    if grep -qx "$o" <<<"$dups"; then llvm-ar-16 d "$a" "$o"; fi
  done
  llvm-ranlib-16 "$a"
  echo "numpy.$m $(basename "$a") PyInit_$base" >> "$OUT/modules.txt"
done
# The Python part, without what cannot work in the sandbox (no compilers,
# no subprocess): numpy.distutils and numpy.f2py are left out.
(cd "$LIB" && find numpy -name '*.py' -o -name '*.pyi' -o -name 'py.typed' | grep -v '/tests/' |
  grep -Ev '^numpy/(distutils|f2py)/' | while read -r f; do
    mkdir -p "$OUT/site/$(dirname "$f")" && cp "$f" "$OUT/site/$f"; done)
rm -f "$OUT/site/numpy/setup.py" "$OUT/site/numpy/"*/setup.py
# numpy's own tests with their data files (from the source tree: the build
# only copies the Python files), for the test suites.
(cd "$WORK/src/tree" && find numpy -path '*/tests/*' -type f | grep -Ev '^numpy/(distutils|f2py)/' |
  grep -v '/__pycache__/' | while read -r f; do
    mkdir -p "$OUT/tests/$(dirname "$f")" && cp "$f" "$OUT/tests/$f"; done)
echo "$VERSION" > "$OUT/VERSION"
log "done: $OUT ($(du -sh "$OUT/lib" | cut -f1) of archives)"
