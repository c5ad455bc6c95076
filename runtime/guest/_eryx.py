"""eryx guest runtime: runs user code inside the sandbox.

The host imports this module once while it pre-initialises the interpreter and
then snapshots linear memory, so everything imported here is already loaded in
every sandbox. The host calls run() (through eryx_exec in eryx.c) for each
execution; run() always reports exactly one JSON outcome with
_eryxhost.result(), whatever the user's code does.
"""

import ast
import asyncio
import dis
import keyword
import asyncio.base_events
import asyncio.events
import builtins
import json
import os
import linecache
import random
import sys
import traceback
import types

import _eryxhost
import eryx

# Imported for their side effect: they become part of the snapshot, so user
# code importing them pays nothing. Keep the list to what jobs commonly use.
import base64  # noqa: F401
import collections  # noqa: F401
import copy  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import enum  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import math  # noqa: F401
import pickle  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import struct  # noqa: F401
import textwrap  # noqa: F401
import time  # noqa: F401
import typing  # noqa: F401
import zlib  # noqa: F401

import dill  # noqa: F401 - session snapshots; imported here to be in the image


def _unextend_pickle():
    # Importing dill copies its reducers into the pure-Python pickler
    # (pickle._Pickler.dispatch), so pickles made by it or by its subclasses
    # (joblib, cloudpickle-alikes) reference dill._dill and accept objects
    # that CPython refuses. Snapshots call dill explicitly and need none of it.
    dill.extend(False)


_unextend_pickle()

# Flags of eryx_exec; keep in sync with runtime/sandbox/sandbox.go.
FLAG_SESSION = 1  # run in the persistent session namespace
FLAG_SNAPSHOT = 2  # serialise the session namespace (reported via emit "snapshot")
FLAG_RESTORE = 4  # replace the session namespace from a snapshot (the source bytes)
FLAG_CLEAR = 8  # empty the session namespace

_USER_PREFIX = "<cell-"

# User code can monkeypatch any module, including the ones this runner uses;
# bind what reporting needs now so that it keeps working afterwards.
_report = _eryxhost.result
_wait = _eryxhost.wait
_call = _eryxhost.call
_reply = _eryxhost.reply
_emit = _eryxhost.emit
_settrace = sys.settrace
_monotonic = time.monotonic
_dumps = json.dumps
_loads = json.loads
_reseed = random.seed
_unpack = struct.unpack
_urandom = os.urandom
_format_exception = traceback.format_exception
_format_exception_only = traceback.format_exception_only
_iscoroutine = asyncio.iscoroutine
_instructions = dis.get_instructions

_state = {"cell": 0, "namespace": None, "callbacks": {}, "trace": False}


def _fresh_namespace():
    # A real __main__ module, so that user-defined functions and classes
    # belong to "__main__" and pickle (by value, with dill) like a script's.
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main.__dict__


def _namespace(flags):
    if not flags & FLAG_SESSION:
        return _fresh_namespace()
    if _state["namespace"] is None:
        _state["namespace"] = _fresh_namespace()
    return _state["namespace"]


# ---- event loop ---------------------------------------------------------------


class _HostSelector:
    """Stands in for selectors.Selector: a sandbox has no file descriptors to
    watch, so waiting means sleeping on the host until a timer is due or a
    host call completes."""

    def select(self, timeout=None):
        if timeout == 0 and not _pending:
            return []
        ns = -1 if timeout is None else max(0, int(timeout * 1e9))
        if _wait(ns) < 0:
            # Nothing is scheduled and nothing is pending on the host: no
            # event can ever wake this loop up again.
            raise RuntimeError("eryx: deadlock: the event loop is waiting for something that nothing will complete")
        return []

    def close(self):
        pass


class EventLoop(asyncio.base_events.BaseEventLoop):
    """An asyncio loop for WASI, which lacks the socketpair the standard
    selector loop needs for its self-pipe."""

    def __init__(self):
        super().__init__()
        self._selector = _HostSelector()

    def _process_events(self, event_list):
        _collect()

    def _write_to_self(self):
        # Only needed to wake a loop blocked in another thread; there are none.
        pass


class _EventLoopPolicy(asyncio.events.BaseDefaultEventLoopPolicy):
    _loop_factory = EventLoop


asyncio.set_event_loop_policy(_EventLoopPolicy())


def _make_default_policy():
    # asyncio.set_event_loop_policy(None) (common in test teardown) goes back
    # to asyncio.DefaultEventLoopPolicy, whose selector loop needs a
    # socketpair() for its self-pipe, which a sandbox cannot have: make the
    # sandbox's policy that default.
    asyncio.DefaultEventLoopPolicy = _EventLoopPolicy
    asyncio.unix_events.DefaultEventLoopPolicy = _EventLoopPolicy


_make_default_policy()


def _install_help():
    # help() is put into builtins by the site module, which the sandbox does
    # not run (no site-packages, no user paths); pydoc itself works.
    import _sitebuiltins
    builtins.help = _sitebuiltins._Helper()


_install_help()


def _fix_utime_now():
    # os.utime(path) / os.utime(path, None) means "now" (UTIME_NOW), which
    # arrives in the host's file system as time 0 (seen with wazero 1.12 and
    # Debian's wasi-libc): pass the current time explicitly instead.
    import os
    real = os.utime

    def utime(path, times=None, *, ns=None, dir_fd=None, follow_symlinks=True):
        if times is None and ns is None:
            now = time.time_ns()
            ns = (now, now)
        if ns is not None:
            return real(path, ns=ns, dir_fd=dir_fd, follow_symlinks=follow_symlinks) if times is None else \
                real(path, times, ns=ns, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        return real(path, times, dir_fd=dir_fd, follow_symlinks=follow_symlinks)

    utime.__doc__ = real.__doc__
    for group in (os.supports_fd, os.supports_dir_fd, os.supports_follow_symlinks, os.supports_effective_ids):
        if real in group:
            group.discard(real)
            group.add(utime)
    os.utime = utime


_fix_utime_now()


def _run_coroutine(coro):
    loop = EventLoop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


# ---- host calls and callbacks ----------------------------------------------------

# Futures of host calls in flight, by host handle.
_pending = {}

# Builtin exception types a callback error may be raised as; anything else
# becomes eryx.CallbackError so that host error names cannot pick arbitrary
# classes.
_ERROR_TYPES = {t.__name__: t for t in (
    ValueError, TypeError, KeyError, LookupError, IndexError, RuntimeError, NotImplementedError,
    PermissionError, FileNotFoundError, ConnectionError, OSError, ArithmeticError, ZeroDivisionError,
    AttributeError, NameError, UnicodeError,
)}


def _callback_exception(err):
    etype, message = err.get("type", "CallbackError"), err.get("message", "")
    if etype == "TimeoutError":
        return eryx.CallbackTimeout(etype, message)
    if etype == "CallbackLimitError":
        return eryx.CallbackLimitError(etype, message)
    if etype == "ServiceUnavailable":
        return eryx.ServiceUnavailable(etype, message)
    cls = _ERROR_TYPES.get(etype)
    if cls is not None:
        return cls(message)
    return eryx.CallbackError(etype, message)


def _settle(fut, data):
    if fut.cancelled():
        return
    doc = _loads(data)
    if "error" in doc:
        fut.set_exception(_callback_exception(doc["error"]))
    else:
        fut.set_result(doc.get("ok"))


def _collect():
    """Hands every finished host call's reply to its future."""
    for handle in list(_pending):
        data = _reply(handle)
        if data is not None:
            _settle(_pending.pop(handle), data)


def host_call_sync(op, payload):
    """Runs a host call to completion, blocking the interpreter (used by the
    socket shims, whose API is synchronous). Returns the reply's "ok" value
    or raises its error."""
    handle = _call(op, payload)
    if handle < 0:
        raise RuntimeError(f"eryx: host call {op!r} refused")
    while True:
        data = _reply(handle)
        if data is not None:
            doc = _loads(data)
            if "error" in doc:
                raise _callback_exception(doc["error"])
            return doc.get("ok")
        # Settle other finished calls so that waiting cannot spin on them.
        _collect()
        _wait(-1)


async def _host_call(op, payload):
    loop = asyncio.get_running_loop()
    if not loop._ready and not loop._scheduled and not _pending:
        # Nothing else can run until this call completes (no ready tasks, no
        # timers, no other calls in flight): waiting for it directly is the
        # same, minus two trips through the event loop.
        return host_call_sync(op, payload)
    handle = _call(op, payload)
    if handle < 0:
        raise RuntimeError(f"eryx: host call {op!r} refused")
    fut = asyncio.get_running_loop().create_future()
    _pending[handle] = fut
    return await fut


_JSON_TYPES = {
    "object": dict, "array": (list, tuple), "string": str, "boolean": bool,
    "integer": int, "number": (int, float), "null": type(None),
}


def _type_ok(expected, value):
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    py = _JSON_TYPES.get(expected)
    return py is None or isinstance(value, py)


def _check(schema, value, where):
    """Validates value against the JSON Schema subset callbacks use; returns
    a message naming the problem, or None."""
    if not isinstance(schema, dict):
        return None
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_type_ok(x, value) for x in types):
            return f"{where}: expected {' or '.join(types)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is not one of {schema['enum']!r}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{where}: shorter than {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where}: longer than {schema['maxLength']} characters"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where}: {value} is below the minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where}: {value} is above the maximum {schema['maximum']}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                return f"{where}: missing required argument {name!r}"
        for name, v in value.items():
            if name in props:
                msg = _check(props[name], v, f"{where}: argument {name!r}" if where.endswith(")") else f"{where}.{name}")
                if msg:
                    return msg
            elif schema.get("additionalProperties") is False:
                return f"{where}: unexpected argument {name!r}"
    if isinstance(value, (list, tuple)) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            msg = _check(schema["items"], v, f"{where}[{i}]")
            if msg:
                return msg
    return None


async def invoke(name, /, *args, **kwargs):
    """Calls the callback `name`; always available, whatever the name.

    `name` is positional-only so that a schema parameter called `name` (or
    anything else) arrives in kwargs instead of colliding with it."""
    if not isinstance(name, str):
        raise TypeError(f"invoke() needs a callback name, not {type(name).__name__}")
    spec = _state["callbacks"].get(name)
    if spec is not None:
        kwargs = _bind(spec, args, kwargs)
        msg = _check(spec.get("parameters_schema") or {}, kwargs, f"{name}()")
        if msg:
            raise TypeError(msg)
    elif args:
        # Not installed in this job (the host installs a bounded number of
        # a large catalogue): without its schema, only keywords can be sent.
        raise TypeError(f"{name}() is not installed in this job: call invoke({name!r}, **kwargs) with keyword arguments")
    # A name that is not installed still goes to the host, which knows the
    # whole catalogue and answers NameError for names it does not serve.
    tracing = _state["trace"]
    if tracing:
        _trace_emit({"kind": "callback_start", "callback": name, "args": kwargs, "line": _user_line()})
    start = _monotonic()
    error = None
    try:
        return await _host_call("callback", _dumps({"name": name, "args": kwargs}, separators=(",", ":")).encode())
    except BaseException as e:
        error = e
        raise
    finally:
        if tracing:
            ev = {"kind": "callback_end", "callback": name, "line": _user_line(),
                  "duration_ms": (_monotonic() - start) * 1000}
            if error is not None:
                ev["error"] = {"type": type(error).__name__, "message": str(error)}
            _trace_emit(ev)


def _bind(spec, args, kwargs):
    """Maps positional arguments to the schema's properties, in order."""
    if not args:
        return kwargs
    params = list(((spec.get("parameters_schema") or {}).get("properties") or {}).keys())
    name = spec["name"]
    if len(args) > len(params):
        raise TypeError(f"{name}() takes {len(params)} positional arguments but {len(args)} were given")
    bound = dict(zip(params, args))
    for k in kwargs:
        if k in bound:
            raise TypeError(f"{name}() got multiple values for argument {k!r}")
    bound.update(kwargs)
    return bound


def list_callbacks():
    """Describes the callbacks this execution can call."""
    return [dict(spec) for spec in _state["callbacks"].values()]


class _Namespace:
    """Holds dotted callbacks: `http.get` lives at `http`'s attribute `get`."""

    def __init__(self, path):
        self._path = path

    def __repr__(self):
        return f"<eryx callbacks {self._path}.*>"


def _make_callback(spec):
    name = spec["name"]

    async def callback(*args, **kwargs):
        return await invoke(name, *args, **kwargs)

    callback.__eryx_callback__ = True
    callback.__name__ = name.rsplit(".", 1)[-1]
    callback.__qualname__ = name
    callback.__doc__ = spec.get("description") or None
    return callback


def _install_callbacks(namespace, specs):
    _state["callbacks"] = {s["name"]: s for s in specs}
    namespace["invoke"] = invoke
    namespace["list_callbacks"] = list_callbacks
    for spec in specs:
        parts = spec["name"].split(".")
        if keyword.iskeyword(parts[0]) or any(keyword.iskeyword(p) for p in parts) or hasattr(builtins, parts[0]):
            # Exposing it would shadow a builtin or be unusable: only
            # invoke() reaches it, and list_callbacks() says why.
            spec["exposed"] = False
            spec["reason"] = f"{parts[0]!r} is a Python builtin or keyword; call it with invoke({spec['name']!r})"
            continue
        target = namespace
        for i, part in enumerate(parts[:-1]):
            node = target.get(part) if isinstance(target, dict) else getattr(target, part, None)
            if not isinstance(node, _Namespace):
                node = _Namespace(".".join(parts[: i + 1]))
                if isinstance(target, dict):
                    target[part] = node
                else:
                    setattr(target, part, node)
            target = node
        fn = _make_callback(spec)
        if isinstance(target, dict):
            target[parts[-1]] = fn
        else:
            setattr(target, parts[-1], fn)


# ---- tracing ----------------------------------------------------------------------


def _trace_emit(ev):
    try:
        _emit("trace", _dumps(ev, separators=(",", ":"), default=repr).encode())
    except Exception:  # noqa: BLE001 - tracing must never break the user's code
        pass


def _user_line():
    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_filename.startswith(_USER_PREFIX):
            return f.f_lineno
        f = f.f_back
    return 0


def _local_tracer(frame, event, arg):
    if event == "line":
        _trace_emit({"kind": "line", "line": frame.f_lineno, "function": frame.f_code.co_name})
    elif event == "return":
        _trace_emit({"kind": "return", "line": frame.f_lineno, "function": frame.f_code.co_name})
    elif event == "exception":
        exc = arg[1]
        if isinstance(exc, (StopIteration, StopAsyncIteration, GeneratorExit)):
            return _local_tracer  # how generators and coroutines work, not errors
        _trace_emit({"kind": "exception", "line": frame.f_lineno, "function": frame.f_code.co_name,
                     "error": {"type": _type_name(exc), "message": str(exc)}})
    return _local_tracer


def _global_tracer(frame, event, arg):
    # Only the user's own code is traced: not the stdlib, not this runtime.
    if not frame.f_code.co_filename.startswith(_USER_PREFIX):
        return None
    if event == "call":
        _trace_emit({"kind": "call", "line": frame.f_lineno, "function": frame.f_code.co_name})
    return _local_tracer


# ---- session state ------------------------------------------------------------------

_SNAPSHOT_VERSION = 1


def _is_runtime_object(value):
    return isinstance(value, _Namespace) or getattr(value, "__eryx_callback__", False) or value is invoke \
        or value is list_callbacks


def _pickle_value(value, dill):
    """Pickles one variable. Plain data goes through the C pickler (dill's is
    pure Python, ~20x slower); anything that refers to __main__ (functions,
    classes and instances defined by the user) needs dill, which pickles
    those by value so they load in a sandbox that never ran their code."""
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if b"__main__" not in blob:
            return blob
    except Exception:  # noqa: BLE001 - fall back to dill, which handles more
        pass
    return dill.dumps(value, recurse=True)


def _snapshot(max_bytes):
    """Serialises the user's session globals. Each variable is pickled on its
    own so that one that cannot be (a generator, an open file, a lock...) is
    reported by name instead of failing the whole snapshot or vanishing."""
    import dill

    namespace = _state["namespace"] or {}
    variables, modules, skipped = {}, {}, []
    size = 0
    for name, value in list(namespace.items()):
        if name.startswith("__") and name.endswith("__") or _is_runtime_object(value):
            continue
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        try:
            blob = _pickle_value(value, dill)
        except Exception as e:  # noqa: BLE001 - any failure means "not serialisable"
            skipped.append({"name": name, "reason": f"{type(e).__name__}: {e}"[:300]})
            continue
        size += len(blob)
        if size > max_bytes:
            raise MemoryError(f"session state exceeds the {max_bytes}-byte snapshot limit (at variable {name!r})")
        variables[name] = blob
    data = pickle.dumps({"v": _SNAPSHOT_VERSION, "vars": variables, "modules": modules})
    if len(data) > max_bytes:
        raise MemoryError(f"session state of {len(data)} bytes exceeds the {max_bytes}-byte snapshot limit")
    _emit("snapshot", data)
    return {"status": "ok", "skipped": skipped, "variables": len(variables), "modules": len(modules)}


def _restore(data):
    """Replaces the session namespace with a snapshot's contents."""
    import dill

    snap = pickle.loads(data)
    if not isinstance(snap, dict) or snap.get("v") != _SNAPSHOT_VERSION:
        raise ValueError("not an eryx session snapshot of a supported version")
    namespace = _fresh_namespace()
    skipped = []
    for name, module in snap["modules"].items():
        try:
            namespace[name] = __import__(module, fromlist=["_"])
        except Exception as e:  # noqa: BLE001
            skipped.append({"name": name, "reason": f"import {module}: {type(e).__name__}: {e}"[:300]})
    for name, blob in snap["vars"].items():
        try:
            # The C unpickler loads dill's pickles too (dill is importable).
            namespace[name] = pickle.loads(blob)
        except Exception as e:  # noqa: BLE001
            skipped.append({"name": name, "reason": f"{type(e).__name__}: {e}"[:300]})
    _state["namespace"] = namespace
    return {"status": "ok", "skipped": skipped, "variables": len(snap["vars"]), "modules": len(snap["modules"])}


def _mount_packages(options):
    """Puts this execution's package archives (under /pkg) on sys.path."""
    for archive in reversed(options.get("packages") or []):
        if archive not in sys.path:
            sys.path.insert(0, archive)


# ---- secrets: per-execution environment ------------------------------------------

_env_set = set()  # names _apply_env put into os.environ


def _apply_env(env):
    """Sets this execution's environment (the placeholders of the job's
    secrets) in os.environ and for eryx.secret, and removes the previous
    execution's, which a session would otherwise carry over."""
    import os
    for name in _env_set:
        os.environ.pop(name, None)
    _env_set.clear()
    env = env or {}
    for name, value in env.items():
        os.environ[name] = value
        _env_set.add(name)
    eryx._set_secrets(env)


def _control(src, options, flags):
    """Session operations that run no user code."""
    _mount_packages(options)
    try:
        if flags & FLAG_SNAPSHOT:
            return _snapshot(int(options.get("max_bytes", 10 << 20)))
        if flags & FLAG_RESTORE:
            return _restore(src)
        _state["namespace"] = None
        return {"status": "ok"}
    except BaseException as e:  # noqa: BLE001
        return {"status": "error", "error": {"type": _type_name(e), "message": str(e), "line": 0, "traceback": ""}}


# ---- outcome documents ----------------------------------------------------------


def _type_name(exc):
    t = type(exc)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{t.__qualname__}"


# The most traceback entries an error document shows: sys.tracebacklimit's
# default in CPython's own traceback printer.
_TB_LIMIT = 1000


def _user_tb(tb):
    """Drops the runner's own frames: tracebacks start at the user's code.
    An exception raised without passing through user code (the runtime's
    own, such as a deadlock) gets no frames at all."""
    t = tb
    while t is not None:
        if t.tb_frame.f_code.co_filename.startswith(_USER_PREFIX):
            return t
        t = t.tb_next
    return None


def _error_doc(exc):
    message = str(exc)
    if isinstance(exc, MemoryError) and not message:
        message = "out of memory: the sandbox's memory limit was reached"
    err = {"type": _type_name(exc), "message": message}
    if isinstance(exc, SyntaxError):
        err["line"] = exc.lineno or 0
        err["traceback"] = "".join(_format_exception_only(type(exc), exc))
        return err
    tb = _user_tb(exc.__traceback__)
    line = 0
    depth = 0
    t = tb
    while t is not None:
        depth += 1
        if t.tb_frame.f_code.co_filename.startswith(_USER_PREFIX):
            line = t.tb_lineno
        t = t.tb_next
    err["line"] = line
    # Like CPython's own printer, show only the innermost _TB_LIMIT entries:
    # the traceback module formats every frame in Python, which for a
    # recursion that ran out of memory (10**5 frames and more) takes longer
    # than the job's timeout.
    skipped = max(depth - _TB_LIMIT, 0)
    for _ in range(skipped):
        tb = tb.tb_next
    lines = _format_exception(type(exc), exc, tb, limit=_TB_LIMIT)
    if skipped:
        lines.insert(1, f"  [{skipped} earlier frames not shown]\n")
    err["traceback"] = "".join(lines)
    return err


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    # CPython prints a non-integer exit argument to stderr and exits with 1.
    print(code, file=sys.stderr)
    return 1


_NOTHING = object()


def _stores_result(code, top=True):
    """Whether code binds the global `result`: at the top level by name, in
    a nested function through `global result`. (A class body's STORE_NAME
    binds the class's own name and is ignored.)"""
    ops = ("STORE_NAME", "STORE_GLOBAL", "DELETE_NAME", "DELETE_GLOBAL") if top else ("STORE_GLOBAL", "DELETE_GLOBAL")
    if "result" in code.co_names:
        for ins in _instructions(code):
            if ins.opname in ops and ins.argval == "result":
                return True
    return any(_stores_result(c, False) for c in code.co_consts if isinstance(c, types.CodeType))


def _attach_result(doc, namespace, before, compiled):
    """Reports `result` if this execution set it. In a session the variable
    persists like any other, but it is the output of the job that assigned
    it: a later job that leaves it alone reports no result. Assigned means
    rebound to another object, or rebound at all by the job's own code (so
    that `result = 42` twice in a row reports 42 both times, although
    small ints are one object)."""
    value = namespace.get("result", _NOTHING)
    if value is _NOTHING:
        return
    if value is before and not (compiled is not None and _stores_result(compiled)):
        return
    try:
        doc["result"] = _loads(_dumps(value, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError) as e:
        doc["result_error"] = f"result is not JSON-serialisable: {e}"
        if type(value).__module__.startswith("numpy"):
            doc["result_error"] += " (convert numpy values first: array.tolist(), float(x), int(x))"
        try:
            doc["result_repr"] = repr(value)[:4096]
        except Exception:  # noqa: BLE001 - a hostile __repr__ must not break reporting
            pass


def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # noqa: BLE001 - user code may have replaced the streams
            pass


def _execute(src, options, flags):
    # Sandboxes restored from one snapshot share the random state captured at
    # snapshot time; reseed from the host's crypto randomness (os.urandom).
    _reseed()
    # numpy's legacy global generator (np.random.seed/rand) has the same
    # problem when numpy is in the image.
    _np_random = sys.modules.get("numpy.random")
    if _np_random is not None:
        try:
            # 128 bits through init_by_array: a tenth of the cost of seed().
            _np_random.seed(_unpack("<4I", _urandom(16)))
        except Exception:  # noqa: BLE001 - a session may have replaced it; its own business
            pass
    try:
        code = src.decode("utf-8")
    except UnicodeDecodeError as e:
        return {"status": "error", "error": {"type": "UnicodeDecodeError", "message": str(e), "line": 0,
                                             "traceback": f"UnicodeDecodeError: {e}\n"}}
    _state["cell"] += 1
    filename = f"{_USER_PREFIX}{_state['cell']}>"
    # Lets tracebacks show the user's source lines.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    namespace = _namespace(flags)
    before = namespace.get("result", _NOTHING)
    _install_callbacks(namespace, options.get("callbacks") or [])
    _mount_packages(options)
    _apply_env(options.get("env"))
    # The host gateway serves this execution's network access, if any; the
    # shims route socket and ssl through it (runtime/guest/_eryx_net.py).
    # Called every time: None turns networking off again in a session.
    import _eryx_net
    _eryx_net.install(options.get("network"))
    _state["trace"] = bool(options.get("trace"))
    try:
        compiled = compile(code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        return {"status": "error", "error": _error_doc(e)}
    doc = {"status": "ok"}
    try:
        if _state["trace"]:
            _settrace(_global_tracer)
        try:
            ret = eval(compiled, namespace)  # noqa: S307 - running user code is the point
            # Code with top-level await compiles to a coroutine.
            if _iscoroutine(ret):
                _run_coroutine(ret)
        finally:
            _settrace(None)
            _pending.clear()
    except SystemExit as e:
        doc = {"status": "exit", "exit_code": _exit_code(e)}
    except BaseException as e:  # noqa: BLE001 - every outcome must be reported
        doc = {"status": "error", "error": _error_doc(e)}
    _flush()
    _attach_result(doc, namespace, before, compiled)
    return doc


def run(src, options, flags):
    """Entry point called by eryx_exec. Never raises: any failure, including
    one while building the report, still produces exactly one outcome."""
    try:
        opts = _loads(options) if options else {}
        if flags & (FLAG_SNAPSHOT | FLAG_RESTORE | FLAG_CLEAR):
            doc = _control(src, opts, flags)
        else:
            doc = _execute(src, opts, flags)
        payload = _dumps(doc, separators=(",", ":")).encode()
    except BaseException as e:  # noqa: BLE001
        try:
            payload = _dumps({"status": "error", "error": {
                "type": type(e).__name__, "message": f"eryx runtime: {e or type(e).__name__}", "line": 0,
                "traceback": ""}}).encode()
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            payload = b'{"status":"error","error":{"type":"MemoryError","message":"eryx runtime: out of memory while reporting","line":0,"traceback":""}}'
    _report(payload)
