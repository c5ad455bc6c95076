#!/usr/bin/env bash
# Links the guest glue (runtime/guest/eryx.c) with the cached CPython build
# into a WASI reactor module.  Usage: link.sh CPYTHON_DIR OUT.wasm [NUMPY_DIR]
#
# With NUMPY_DIR (the output of build-numpy.sh), numpy's extension modules
# are linked in and registered as built-in modules under their dotted names
# (an inittab generated from NUMPY_DIR/modules.txt), and the interpreter
# imports numpy during pre-initialisation.
set -euo pipefail
CPY=${1:?usage: link.sh CPYTHON_DIR OUT.wasm [NUMPY_DIR]}
OUT=${2:?usage: link.sh CPYTHON_DIR OUT.wasm [NUMPY_DIR]}
NPY=${3:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

CC="clang-16 --target=wasm32-wasi -mbulk-memory -mnontrapping-fptoint"
CFLAGS=(-O2 -g0 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
        -I"$CPY/include/python3.11" -I"$CPY/include")
EXTRA_OBJS=()
EXTRA_LIBS=()
if [ -n "$NPY" ]; then
  CFLAGS+=(-DERYX_EXTENSIONS -DERYX_PREIMPORT='"numpy"')
  "$HERE/build/gen-inittab.py" "$NPY/modules.txt" > "$TMP/inittab.c"
  $CC "${CFLAGS[@]}" -c "$TMP/inittab.c" -o "$TMP/inittab.o"
  EXTRA_OBJS+=("$TMP/inittab.o")
  while read -r _ archive _; do EXTRA_LIBS+=("$NPY/lib/$archive"); done < "$NPY/modules.txt"
  # long double printing (numpy's float128 repr) needs the full printf.
  EXTRA_LIBS+=("$NPY/lib/libnpyrandom.a" "$NPY/lib/libnpymath.a" -lc++ -lc++abi -lc-printscan-long-double)
fi
$CC "${CFLAGS[@]}" -c "$HERE/guest/eryx.c" -o "$TMP/eryx.o"
$CC -O2 -g0 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
  -D_POSIX_C_SOURCE=200809L -I"$CPY/include" -c "$HERE/guest/sqlite_vfs.c" -o "$TMP/sqlite_vfs.o"
$CC -O2 -g0 -std=c11 -Wall -Wextra -Werror -c "$HERE/guest/wasi_errno.c" -o "$TMP/wasi_errno.o"
# wasi_errno.c: a full /tmp is ENOSPC, not wazero's EIO.
WRAP=()
for f in fd_write fd_pwrite fd_filestat_set_size fd_allocate; do WRAP+=("-Wl,--wrap=__wasi_$f"); done

# The stack size matches CPython's own wasm build; the stack comes first so
# that an overflow traps instead of silently corrupting static data.
$CC -mexec-model=reactor -O2 -g0 \
  -z stack-size=524288 -Wl,--stack-first -Wl,--initial-memory=10485760 \
  -Wl,--export=__stack_pointer -Wl,--strip-debug "${WRAP[@]}" \
  -o "$TMP/out.wasm" "$TMP/eryx.o" "$TMP/sqlite_vfs.o" "$TMP/wasi_errno.o" "${EXTRA_OBJS[@]}" \
  "${EXTRA_LIBS[@]}" "$CPY/lib/libpython3.11.a" \
  "$CPY/lib/libmpdec.a" "$CPY/lib/libexpat.a" "$CPY/lib/libz.a" \
  "$CPY/lib/libsqlite3.a" "$CPY/lib/libbz2.a" "$CPY/lib/liblzma.a" \
  -lwasi-emulated-signal -lwasi-emulated-getpid -lwasi-emulated-process-clocks -lwasi-emulated-mman -lm \
  2> >(tee "$TMP/link.log" >&2)
# Two statically linked copies of a function with different signatures
# link "fine" and trap when called: refuse them.
if grep -q "signature mismatch" "$TMP/link.log"; then
  echo "link.sh: conflicting definitions between linked modules (see above)" >&2
  exit 1
fi
mv "$TMP/out.wasm" "$OUT"
