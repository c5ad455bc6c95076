// sqlite locking inside one sandbox.
//
// WASI has no fcntl locks, so sqlite's unix VFS cannot lock, and its
// lock-free "unix-none" variant lets two connections to one file database
// write at once: the second one also takes the first one's journal for a
// crashed transaction's and rolls it back ("disk I/O error", a damaged
// database). A sandbox is one process with one thread, so the locks only
// have to be shared between the connections of this process: this VFS is
// unix-none with sqlite's five lock levels kept in a table per database
// path, with the rules of POSIX advisory locks as os_unix.c uses them
// (readers share, one writer reserves, a pending writer stops new readers,
// exclusive waits for the readers to go). A conflicting request answers
// SQLITE_BUSY; Python's sqlite3 then retries until its timeout and raises
// "database is locked", as on Linux.

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

// One database file's locks, shared by all its open connections.
typedef struct lockinfo {
    struct lockinfo *next;
    char *path;
    int refs;     // open files on this path
    int shared;   // connections holding SHARED or more
    void *writer; // the connection holding RESERVED, PENDING or EXCLUSIVE
    int level;    // the writer's level
} lockinfo;

typedef struct {
    sqlite3_file base; // pMethods = &locked_methods
    lockinfo *info;    // NULL for files that sqlite never locks (journals)
    int level;
    sqlite3_file *real; // unix-none's file, allocated right after this struct
} lockedfile;

static sqlite3_vfs *g_base;
static lockinfo *g_locks;

static lockinfo *lock_acquire_info(const char *path) {
    for (lockinfo *l = g_locks; l != NULL; l = l->next) {
        if (strcmp(l->path, path) == 0) {
            l->refs++;
            return l;
        }
    }
    lockinfo *l = calloc(1, sizeof *l);
    if (l == NULL) return NULL;
    l->path = strdup(path);
    if (l->path == NULL) {
        free(l);
        return NULL;
    }
    l->refs = 1;
    l->next = g_locks;
    g_locks = l;
    return l;
}

static void lock_release_info(lockinfo *info) {
    if (--info->refs > 0) return;
    for (lockinfo **p = &g_locks; *p != NULL; p = &(*p)->next) {
        if (*p == info) {
            *p = info->next;
            break;
        }
    }
    free(info->path);
    free(info);
}

static int x_lock(sqlite3_file *f, int want) {
    lockedfile *lf = (lockedfile *)f;
    lockinfo *l = lf->info;
    if (l == NULL || lf->level >= want) {
        if (l == NULL) lf->level = want;
        return SQLITE_OK;
    }
    if (want == SQLITE_LOCK_SHARED) {
        // A pending or exclusive writer keeps new readers out.
        if (l->writer != NULL && l->writer != lf && l->level >= SQLITE_LOCK_PENDING) return SQLITE_BUSY;
        l->shared++;
        lf->level = SQLITE_LOCK_SHARED;
        return SQLITE_OK;
    }
    // RESERVED, PENDING, EXCLUSIVE: one writer at a time.
    if (l->writer != NULL && l->writer != lf) return SQLITE_BUSY;
    l->writer = lf;
    if (want == SQLITE_LOCK_RESERVED) {
        l->level = lf->level = SQLITE_LOCK_RESERVED;
        return SQLITE_OK;
    }
    // EXCLUSIVE (PENDING is only ever an intermediate state): readers other
    // than this connection must finish first; meanwhile PENDING holds off new ones.
    if (l->shared > 1) {
        l->level = lf->level = SQLITE_LOCK_PENDING;
        return SQLITE_BUSY;
    }
    l->level = lf->level = SQLITE_LOCK_EXCLUSIVE;
    return SQLITE_OK;
}

static int x_unlock(sqlite3_file *f, int to) {
    lockedfile *lf = (lockedfile *)f;
    lockinfo *l = lf->info;
    if (l == NULL || lf->level <= to) {
        if (l == NULL) lf->level = to;
        return SQLITE_OK;
    }
    if (lf->level >= SQLITE_LOCK_RESERVED && l->writer == lf) {
        l->writer = NULL;
        l->level = SQLITE_LOCK_NONE;
    }
    if (to == SQLITE_LOCK_NONE && lf->level >= SQLITE_LOCK_SHARED) l->shared--;
    lf->level = to;
    return SQLITE_OK;
}

static int x_check_reserved(sqlite3_file *f, int *out) {
    lockedfile *lf = (lockedfile *)f;
    lockinfo *l = lf->info;
    *out = l != NULL && l->writer != NULL && l->writer != lf;
    return SQLITE_OK;
}

static int x_close(sqlite3_file *f) {
    lockedfile *lf = (lockedfile *)f;
    x_unlock(f, SQLITE_LOCK_NONE);
    int rc = lf->real->pMethods ? lf->real->pMethods->xClose(lf->real) : SQLITE_OK;
    if (lf->info != NULL) lock_release_info(lf->info);
    lf->info = NULL;
    return rc;
}

#define REAL(f) (((lockedfile *)(f))->real)
static int x_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) { return REAL(f)->pMethods->xRead(REAL(f), b, n, o); }
static int x_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) { return REAL(f)->pMethods->xWrite(REAL(f), b, n, o); }
static int x_truncate(sqlite3_file *f, sqlite3_int64 s) { return REAL(f)->pMethods->xTruncate(REAL(f), s); }
static int x_sync(sqlite3_file *f, int fl) { return REAL(f)->pMethods->xSync(REAL(f), fl); }
static int x_size(sqlite3_file *f, sqlite3_int64 *s) { return REAL(f)->pMethods->xFileSize(REAL(f), s); }
static int x_fcntl(sqlite3_file *f, int op, void *a) {
    if (op == SQLITE_FCNTL_LOCKSTATE) {
        *(int *)a = ((lockedfile *)f)->level;
        return SQLITE_OK;
    }
    return REAL(f)->pMethods->xFileControl(REAL(f), op, a);
}
static int x_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int x_devchar(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }

static const sqlite3_io_methods locked_methods = {
    1, x_close, x_read, x_write, x_truncate, x_sync, x_size,
    x_lock, x_unlock, x_check_reserved, x_fcntl, x_sector, x_devchar,
};

static int x_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags) {
    lockedfile *lf = (lockedfile *)f;
    memset(lf, 0, sizeof *lf);
    lf->real = (sqlite3_file *)(lf + 1);
    int rc = g_base->xOpen(g_base, name, lf->real, flags, out_flags);
    if (rc != SQLITE_OK) return rc;
    // Only main databases are locked by sqlite; a temporary one has no name.
    if ((flags & SQLITE_OPEN_MAIN_DB) && name != NULL) {
        lf->info = lock_acquire_info(name);
        if (lf->info == NULL) {
            lf->real->pMethods->xClose(lf->real);
            return SQLITE_NOMEM;
        }
    }
    lf->base.pMethods = &locked_methods;
    return SQLITE_OK;
}

static sqlite3_vfs g_vfs;

// eryx_sqlite_vfs_register makes the sandbox's locking VFS sqlite's default.
void eryx_sqlite_vfs_register(void) {
    if (sqlite3_initialize() != SQLITE_OK) return;
    g_base = sqlite3_vfs_find("unix-none");
    if (g_base == NULL) return;
    g_vfs = *g_base;
    g_vfs.iVersion = g_base->iVersion;
    g_vfs.szOsFile = (int)sizeof(lockedfile) + g_base->szOsFile;
    g_vfs.pNext = NULL;
    g_vfs.zName = "eryx";
    g_vfs.xOpen = x_open;
    sqlite3_vfs_register(&g_vfs, 1);
}
