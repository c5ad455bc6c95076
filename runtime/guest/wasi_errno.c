// ENOSPC for a full /tmp.
//
// wazero's file-system errno set has no ENOSPC (nor EFBIG): anything a file
// system returns outside it reaches the guest as EIO. The sandbox's only
// writable file system, the in-memory /tmp (runtime/internal/memfs),
// returns EIO for one reason, its quota, and the other descriptors a guest
// can write to (stdout, stderr, /dev/null) never fail. So EIO from a call
// that grows a file is the quota, which Linux reports as ENOSPC; the link
// routes libc's calls through these wrappers (-Wl,--wrap=...).

#include <wasi/api.h>

__wasi_errno_t __real___wasi_fd_write(__wasi_fd_t fd, const __wasi_ciovec_t *iovs, size_t n, __wasi_size_t *ret);
__wasi_errno_t __real___wasi_fd_pwrite(__wasi_fd_t fd, const __wasi_ciovec_t *iovs, size_t n,
                                       __wasi_filesize_t off, __wasi_size_t *ret);
__wasi_errno_t __real___wasi_fd_filestat_set_size(__wasi_fd_t fd, __wasi_filesize_t size);
__wasi_errno_t __real___wasi_fd_allocate(__wasi_fd_t fd, __wasi_filesize_t off, __wasi_filesize_t len);

static __wasi_errno_t nospc(__wasi_errno_t e) { return e == __WASI_ERRNO_IO ? __WASI_ERRNO_NOSPC : e; }

__wasi_errno_t __wrap___wasi_fd_write(__wasi_fd_t fd, const __wasi_ciovec_t *iovs, size_t n, __wasi_size_t *ret) {
    return nospc(__real___wasi_fd_write(fd, iovs, n, ret));
}

__wasi_errno_t __wrap___wasi_fd_pwrite(__wasi_fd_t fd, const __wasi_ciovec_t *iovs, size_t n,
                                       __wasi_filesize_t off, __wasi_size_t *ret) {
    return nospc(__real___wasi_fd_pwrite(fd, iovs, n, off, ret));
}

__wasi_errno_t __wrap___wasi_fd_filestat_set_size(__wasi_fd_t fd, __wasi_filesize_t size) {
    return nospc(__real___wasi_fd_filestat_set_size(fd, size));
}

__wasi_errno_t __wrap___wasi_fd_allocate(__wasi_fd_t fd, __wasi_filesize_t off, __wasi_filesize_t len) {
    return nospc(__real___wasi_fd_allocate(fd, off, len));
}
