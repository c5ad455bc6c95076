"""eryx guest runtime: runs user code inside the sandbox.

The host imports this module once while it pre-initialises the interpreter and
then snapshots linear memory, so everything imported here is already loaded in
every sandbox. The host calls run() (through eryx_exec in eryx.c) for each
execution; run() always reports exactly one JSON outcome with
_eryxhost.result(), whatever the user's code does.
"""

import ast
import asyncio
import asyncio.base_events
import asyncio.events
import builtins
import json
import linecache
import random
import sys
import traceback

import _eryxhost

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

# Flags of eryx_exec; keep in sync with runtime/sandbox/guest.go.
FLAG_SESSION = 1  # run in the persistent session namespace

_USER_PREFIX = "<cell-"

# User code can monkeypatch any module, including the ones this runner uses;
# bind what reporting needs now so that it keeps working afterwards.
_report = _eryxhost.result
_wait = _eryxhost.wait
_dumps = json.dumps
_loads = json.loads
_reseed = random.seed
_format_exception = traceback.format_exception
_format_exception_only = traceback.format_exception_only
_iscoroutine = asyncio.iscoroutine

_state = {"cell": 0, "namespace": None}


def _fresh_namespace():
    return {"__name__": "__main__", "__doc__": None, "__builtins__": builtins}


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
        pass

    def _write_to_self(self):
        # Only needed to wake a loop blocked in another thread; there are none.
        pass


class _EventLoopPolicy(asyncio.events.BaseDefaultEventLoopPolicy):
    _loop_factory = EventLoop


asyncio.set_event_loop_policy(_EventLoopPolicy())


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


# ---- outcome documents ----------------------------------------------------------


def _type_name(exc):
    t = type(exc)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{t.__qualname__}"


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
    err = {"type": _type_name(exc), "message": str(exc)}
    if isinstance(exc, SyntaxError):
        err["line"] = exc.lineno or 0
        err["traceback"] = "".join(_format_exception_only(type(exc), exc))
        return err
    tb = _user_tb(exc.__traceback__)
    line = 0
    t = tb
    while t is not None:
        if t.tb_frame.f_code.co_filename.startswith(_USER_PREFIX):
            line = t.tb_lineno
        t = t.tb_next
    err["line"] = line
    err["traceback"] = "".join(_format_exception(type(exc), exc, tb))
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


def _attach_result(doc, namespace):
    if "result" not in namespace:
        return
    value = namespace["result"]
    try:
        doc["result"] = _loads(_dumps(value, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError) as e:
        doc["result_error"] = f"result is not JSON-serialisable: {e}"
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
    try:
        compiled = compile(code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        return {"status": "error", "error": _error_doc(e)}
    doc = {"status": "ok"}
    try:
        ret = eval(compiled, namespace)  # noqa: S307 - running user code is the point
        # Code with top-level await compiles to a coroutine.
        if _iscoroutine(ret):
            _run_coroutine(ret)
    except SystemExit as e:
        doc = {"status": "exit", "exit_code": _exit_code(e)}
    except BaseException as e:  # noqa: BLE001 - every outcome must be reported
        doc = {"status": "error", "error": _error_doc(e)}
    _flush()
    _attach_result(doc, namespace)
    return doc


def run(src, options, flags):
    """Entry point called by eryx_exec. Never raises: any failure, including
    one while building the report, still produces exactly one outcome."""
    try:
        doc = _execute(src, _loads(options) if options else {}, flags)
        payload = _dumps(doc, separators=(",", ":")).encode()
    except BaseException as e:  # noqa: BLE001
        try:
            payload = _dumps({"status": "error", "error": {
                "type": type(e).__name__, "message": f"eryx runtime: {e}", "line": 0, "traceback": ""}}).encode()
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            payload = b'{"status":"error","error":{"type":"MemoryError","message":"eryx runtime: out of memory while reporting","line":0,"traceback":""}}'
    _report(payload)
