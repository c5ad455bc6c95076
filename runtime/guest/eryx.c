// eryx guest glue: the C side of the sandbox.
//
// Linked with libpython into a WASI *reactor* module. The host (Go, wazero)
// calls the exported eryx_* functions; the guest calls back into the host
// through imports from the "eryx" module. All Python-level logic lives in
// _eryx.py; this file only owns interpreter start-up, moving bytes across the
// boundary and the interrupt request, which must be callable from a host
// function at any point of the guest's execution.

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ERYX_IMPORT(name) __attribute__((import_module("eryx"), import_name(name)))
#define ERYX_EXPORT(name) __attribute__((export_name(name)))

// Called by the loop-header checks that the host inserts into this module
// when the host's preemption flag is set (see runtime/internal/preempt).
ERYX_IMPORT("preempt") void eryx_host_preempt(void);
// Hands the JSON outcome of an execution to the host.
ERYX_IMPORT("result") void eryx_host_result(const uint8_t *buf, uint32_t len);
// Generic request to the host: op names a host service, the payload is JSON.
// Returns a handle whose reply is read with eryx_host_reply; negative on error.
ERYX_IMPORT("call") int32_t eryx_host_call(const uint8_t *op, uint32_t op_len,
                                           const uint8_t *buf, uint32_t len);
// Copies the reply of a finished host call into buf (at most cap bytes) and
// returns its full length; -1 when the handle is unknown, -2 while pending.
// A reply is collected (forgotten by the host) once it has been copied whole.
ERYX_IMPORT("reply") int32_t eryx_host_reply(int32_t handle, uint8_t *buf, uint32_t cap);
// Fire-and-forget event to the host (trace events); kind names its schema.
ERYX_IMPORT("emit") void eryx_host_emit(const uint8_t *kind, uint32_t kind_len,
                                        const uint8_t *buf, uint32_t len);
// Sleeps until a pending host call completes or timeout_ns passes; returns the
// number of completed calls that have not been collected yet.
ERYX_IMPORT("wait") int32_t eryx_host_wait(int64_t timeout_ns);

static PyObject *g_run;  // _eryx.run, resolved once at init

void eryx_sqlite_vfs_register(void);  // sqlite_vfs.c

// ---- _eryxhost: the Python view of the host imports -------------------------

static PyObject *host_call(PyObject *self, PyObject *args) {
    const char *op;
    Py_ssize_t op_len;
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "s#y*", &op, &op_len, &payload)) return NULL;
    int32_t h = eryx_host_call((const uint8_t *)op, (uint32_t)op_len,
                               (const uint8_t *)payload.buf, (uint32_t)payload.len);
    PyBuffer_Release(&payload);
    return PyLong_FromLong(h);
}

static PyObject *host_reply(PyObject *self, PyObject *arg) {
    long h = PyLong_AsLong(arg);
    if (h == -1 && PyErr_Occurred()) return NULL;
    int32_t n = eryx_host_reply((int32_t)h, NULL, 0);
    if (n == -2) Py_RETURN_NONE;
    if (n < 0) {
        PyErr_Format(PyExc_LookupError, "eryx: unknown host call handle %ld", h);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) return NULL;
    eryx_host_reply((int32_t)h, (uint8_t *)PyBytes_AS_STRING(out), (uint32_t)n);
    return out;
}

static PyObject *host_wait(PyObject *self, PyObject *arg) {
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred()) return NULL;
    int32_t n;
    Py_BEGIN_ALLOW_THREADS
    n = eryx_host_wait((int64_t)ns);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
}

static PyObject *host_emit(PyObject *self, PyObject *args) {
    const char *kind;
    Py_ssize_t kind_len;
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "s#y*", &kind, &kind_len, &payload)) return NULL;
    eryx_host_emit((const uint8_t *)kind, (uint32_t)kind_len, (const uint8_t *)payload.buf,
                   (uint32_t)payload.len);
    PyBuffer_Release(&payload);
    Py_RETURN_NONE;
}

static PyObject *host_result(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    eryx_host_result((const uint8_t *)b.buf, (uint32_t)b.len);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyMethodDef host_methods[] = {
    {"call", host_call, METH_VARARGS, "call(op, payload) -> handle: start a host call."},
    {"reply", host_reply, METH_O, "reply(handle) -> bytes | None: the reply, None while pending."},
    {"emit", host_emit, METH_VARARGS, "emit(kind, payload): send an event to the host."},
    {"wait", host_wait, METH_O, "wait(timeout_ns) -> int: block until a host call completes."},
    {"result", host_result, METH_O, "result(bytes): report the execution outcome."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef host_module = {
    PyModuleDef_HEAD_INIT, "_eryxhost", "Host imports of the eryx sandbox.", -1, host_methods,
};

static PyObject *init_host_module(void) { return PyModule_Create(&host_module); }

// ---- lifecycle ----------------------------------------------------------------

static int fail_status(PyStatus st) {
    if (st.err_msg) fprintf(stderr, "eryx: init: %s%s%s\n", st.func ? st.func : "",
                            st.func ? ": " : "", st.err_msg);
    return -1;
}

// g_hash_seed, when not negative, fixes the str/bytes hash secret (set by the
// host before eryx_init; see Config.HashSeed).
static int64_t g_hash_seed = -1;

ERYX_EXPORT("eryx_set_hash_seed") void eryx_set_hash_seed(uint32_t seed) { g_hash_seed = seed; }

// eryx_init starts the interpreter and imports the guest runtime. The host
// runs it once, then snapshots linear memory: every sandbox starts from here.
#ifdef ERYX_EXTENSIONS
// Generated from the extension build (runtime/build/gen-inittab.py): registers
// statically linked extension modules such as numpy's as built-ins.
int eryx_register_extensions(void);

// Imports a module whose failure makes the image unusable, printing why.
static int import_required(const char *name) {
    PyObject *m = PyImport_ImportModule(name);
    if (m == NULL) {
        PyErr_Print();
        return -1;
    }
    Py_DECREF(m);
    return 0;
}
#endif

ERYX_EXPORT("eryx_init") int32_t eryx_init(void) {
    if (PyImport_AppendInittab("_eryxhost", init_host_module) < 0) return -1;
#ifdef ERYX_EXTENSIONS
    if (eryx_register_extensions() < 0) return -1;
#endif

    // UTF-8 everywhere (file names, stdio), whatever the absent locale says.
    PyPreConfig preconfig;
    PyPreConfig_InitIsolatedConfig(&preconfig);
    preconfig.utf8_mode = 1;
    PyStatus pst = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(pst)) return fail_status(pst);

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    // Output is streamed to the host as it is produced.
    config.buffered_stdio = 0;
    config.write_bytecode = 0;
    config.site_import = 0;
    config.install_signal_handlers = 0;
    config.pathconfig_warnings = 0;
    if (g_hash_seed >= 0) {
        config.use_hash_seed = 1;
        config.hash_seed = (unsigned long)g_hash_seed;
    }
    config.module_search_paths_set = 1;
    PyStatus st = PyWideStringList_Append(&config.module_search_paths, L"/lib/python311.zip");
    if (PyStatus_Exception(st)) goto fail;
#ifdef ERYX_EXTENSIONS
    // The Python part of the linked-in extensions (numpy), packed separately.
    st = PyWideStringList_Append(&config.module_search_paths, L"/lib/numpy.zip");
    if (PyStatus_Exception(st)) goto fail;
#endif
    st = PyConfig_SetString(&config, &config.program_name, L"python3.11");
    if (PyStatus_Exception(st)) goto fail;
    st = PyConfig_SetString(&config, &config.home, L"/lib");
    if (PyStatus_Exception(st)) goto fail;
    st = PyConfig_SetString(&config, &config.stdio_encoding, L"utf-8");
    if (PyStatus_Exception(st)) goto fail;
    st = PyConfig_SetString(&config, &config.stdio_errors, L"backslashreplace");
    if (PyStatus_Exception(st)) goto fail;
    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st)) goto fail;
    PyConfig_Clear(&config);

    // WASI has no fcntl locks: sqlite locks between this process's own
    // connections instead (sqlite_vfs.c).
    eryx_sqlite_vfs_register();

#ifdef ERYX_EXTENSIONS
    // The finder for built-in modules inside packages (numpy.core._...).
    if (import_required("_eryx_ext") < 0) return -4;
#endif
#ifdef ERYX_PREIMPORT
    // Imported here to be part of the memory image every sandbox starts
    // from: importing it in a job then costs a dictionary lookup.
    if (import_required(ERYX_PREIMPORT) < 0) return -5;
    if (import_required("_eryx_numpy") < 0) return -5;
#endif

    PyObject *mod = PyImport_ImportModule("_eryx");
    if (mod == NULL) {
        PyErr_Print();
        return -2;
    }
    g_run = PyObject_GetAttrString(mod, "run");
    Py_DECREF(mod);
    if (g_run == NULL) {
        PyErr_Print();
        return -3;
    }
    return 0;
fail:
    PyConfig_Clear(&config);
    return fail_status(st);
}

ERYX_EXPORT("eryx_alloc") void *eryx_alloc(uint32_t n) { return malloc(n ? n : 1); }

ERYX_EXPORT("eryx_free") void eryx_free(void *p) { free(p); }

// eryx_exec runs code (UTF-8, len bytes) under the JSON options document
// opts (see _eryx.py) with the given flags. The outcome reaches the host
// through eryx_host_result; the return value is 0 when the runner itself
// completed, negative when it failed.
// Set by our CPython patch when the interpreter runs out of memory.
extern int _Py_eryx_out_of_memory;

ERYX_EXPORT("eryx_exec") int32_t eryx_exec(const char *code, uint32_t len, const char *opts,
                                           uint32_t opts_len, uint32_t flags) {
    // Each execution starts with a clean out-of-memory record (see
    // runtime/build/patches/cpython-oom-no-exception.patch).
    _Py_eryx_out_of_memory = 0;
    PyObject *src = PyBytes_FromStringAndSize(code, len);
    PyObject *options = PyBytes_FromStringAndSize(opts, opts_len);
    PyObject *ret = NULL;
    if (src != NULL && options != NULL)
        ret = PyObject_CallFunction(g_run, "OOI", src, options, (unsigned int)flags);
    Py_XDECREF(src);
    Py_XDECREF(options);
    if (ret == NULL) {
        // Only reached when the runner's own safety nets failed (e.g. out
        // of memory while reporting); the host reports an internal error.
        PyErr_Print();
        return -1;
    }
    Py_DECREF(ret);
    return 0;
}

static int raise_interrupt(void *arg) {
    (void)arg;
    PyErr_SetString(PyExc_KeyboardInterrupt, "eryx: execution interrupted by the host");
    return -1;
}

// eryx_interrupt asks the interpreter to raise KeyboardInterrupt at its next
// check. The host calls it from inside its preempt hook, that is, from any
// point of the guest's execution, which is why it only queues a pending call:
// that is the async-signal-safe entry point CPython offers.
ERYX_EXPORT("eryx_interrupt") int32_t eryx_interrupt(void) {
    return Py_AddPendingCall(raise_interrupt, NULL);
}

// eryx_checkpoint lets the host verify the preempt import is wired (and keeps
// the linker from dropping it before the host instruments the module).
ERYX_EXPORT("eryx_checkpoint") void eryx_checkpoint(void) { eryx_host_preempt(); }
