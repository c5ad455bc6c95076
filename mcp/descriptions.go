package mcp

// The texts an agent reads: they are the documentation it acts on, so
// they say what works, what does not and what the limits are.

const instructions = `eryx runs Python 3.11 in a WebAssembly sandbox on a job queue. Use run_python to compute, parse, transform data or call the host's callbacks; use a session to keep state between calls. Call list_callbacks to see the host functions code can await.`

const runPythonDescription = `Run Python 3.11 code in an isolated WebAssembly sandbox and return its stdout, stderr, the value of a variable named ` + "`result`" + ` (any JSON-encodable value) and the exception, if any.

How to use it well:
- Set ` + "`result = ...`" + ` to return data; print() for logs. Both come back.
- Top-level ` + "`await`" + ` works: the code runs inside an event loop, so asyncio.gather runs things concurrently.
- Callbacks (host functions, including tools of other MCP servers bridged as mcp.<server>.<tool>) are awaited like functions: ` + "`data = await mcp.fs.read_text_file(path=\"/data/a.txt\")`" + `. Several at once: ` + "`a, b = await asyncio.gather(f(x=1), g(y=2))`" + `. A failing callback raises eryx.CallbackError (import eryx; it has .type). list_callbacks shows what exists and each one's parameters.
- Sessions: pass the same "session" id to keep variables, imports and functions between calls (state is snapshotted after each call; open files and sockets are not kept). Without a session each call starts fresh. reset_session clears one.
- The standard library is available (json, re, math, datetime, collections, itertools, sqlite3, decimal, csv, ...); pip and third-party packages are not. There is no network unless the operator enabled it, no subprocesses and no threads; the filesystem is a private scratch area.
- Limits (set by the operator): run time (default 30 s; timeout_seconds can only lower it), memory (default 128 MiB), output (default 1 MiB, the rest is dropped), code size (1 MiB). A job that exceeds one ends with status "timeout" or "error" naming the limit.
- Output is streamed as progress notifications while the code runs, if the client asked for progress. Cancelling the call stops the code.`

const listCallbacksDescription = `List the callbacks that run_python code can await: their names (call them as ` + "`await name(**kwargs)`" + `, dotted names as namespaces), descriptions and JSON Schema of their keyword arguments.`

const resetSessionDescription = `Clear a run_python session: its variables, imports and functions are forgotten and the next call with the same session id starts from an empty namespace. Resetting a session that does not exist is not an error.`

const deleteSessionDescription = `Delete a run_python session and its stored state. Fails if the session does not exist (never used, expired after its idle lifetime, or already deleted).`
