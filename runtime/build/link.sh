#!/usr/bin/env bash
# Links the guest glue (runtime/guest/eryx.c) with the cached CPython build
# into a WASI reactor module.  Usage: link.sh CPYTHON_DIR OUT.wasm
set -euo pipefail
CPY=${1:?usage: link.sh CPYTHON_DIR OUT.wasm}
OUT=${2:?usage: link.sh CPYTHON_DIR OUT.wasm}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

CC="clang-16 --target=wasm32-wasi -mbulk-memory -mnontrapping-fptoint"
$CC -O2 -g0 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
  -I"$CPY/include/python3.11" -I"$CPY/include" -c "$HERE/guest/eryx.c" -o "$TMP/eryx.o"
$CC -O2 -g0 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
  -D_POSIX_C_SOURCE=200809L -I"$CPY/include" -c "$HERE/guest/sqlite_vfs.c" -o "$TMP/sqlite_vfs.o"
$CC -O2 -g0 -std=c11 -Wall -Wextra -Werror -c "$HERE/guest/wasi_errno.c" -o "$TMP/wasi_errno.o"
# wasi_errno.c: a full /tmp is ENOSPC, not wazero's EIO.
WRAP=""
for f in fd_write fd_pwrite fd_filestat_set_size fd_allocate; do WRAP="$WRAP -Wl,--wrap=__wasi_$f"; done

# The stack size matches CPython's own wasm build; the stack comes first so
# that an overflow traps instead of silently corrupting static data.
$CC -mexec-model=reactor -O2 -g0 \
  -z stack-size=524288 -Wl,--stack-first -Wl,--initial-memory=10485760 \
  -Wl,--export=__stack_pointer -Wl,--strip-debug $WRAP \
  -o "$TMP/out.wasm" "$TMP/eryx.o" "$TMP/sqlite_vfs.o" "$TMP/wasi_errno.o" \
  "$CPY/lib/libpython3.11.a" "$CPY/lib/libmpdec.a" "$CPY/lib/libexpat.a" "$CPY/lib/libz.a" \
  "$CPY/lib/libsqlite3.a" "$CPY/lib/libbz2.a" "$CPY/lib/liblzma.a" \
  -lwasi-emulated-signal -lwasi-emulated-getpid -lwasi-emulated-process-clocks -lwasi-emulated-mman -lm
mv "$TMP/out.wasm" "$OUT"
