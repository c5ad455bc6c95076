// An eryx callback service in Node.js, written with the `nats` client's
// services API (NATS micro). It follows the convention of docs/callbacks.md:
//
//   - one micro endpoint per callback, on subject <prefix>.cb.<name>, in the
//     default queue group "q" so that instances share the load;
//   - endpoint metadata "eryx.callback" (the name Python calls),
//     "eryx.description" and "eryx.schema" (JSON Schema of the keyword
//     arguments, as a JSON string), which $SRV.INFO exposes to workers;
//   - service metadata "eryx.protocol": "1";
//   - request: JSON object of keyword arguments; headers carry the W3C trace
//     context (traceparent, tracestate) and Eryx-Timeout-Ms;
//   - reply: the JSON result, or a micro error (Nats-Service-Error-Code and
//     Nats-Service-Error headers) whose body is {"type": ..., "message": ...}:
//     the type becomes the Python exception's type.
//
// Run: NATS_URL=nats://127.0.0.1:4222 node service.js
"use strict";

const { connect, headers, JSONCodec } = require("nats");

const PROTOCOL = "1";
const jc = JSONCodec();

// CallbackError makes a handler raise a typed exception in Python.
class CallbackError extends Error {
  constructor(type, message) {
    super(message);
    this.type = type;
  }
}

// The callbacks. A handler gets the decoded keyword arguments and a context
// ({ headers, deadline }) and returns (or resolves to) a JSON-encodable value.
const callbacks = [
  {
    name: "node.greet",
    description: "Greets someone by name.",
    schema: {
      type: "object",
      properties: { name: { type: "string" } },
      required: ["name"],
    },
    handler: ({ name }) => `Hello, ${name}!`,
  },
  {
    name: "node.sum",
    description: "Sum of a list of numbers.",
    schema: {
      type: "object",
      properties: { numbers: { type: "array", items: { type: "number" } } },
      required: ["numbers"],
    },
    handler: ({ numbers }) => {
      if (!Array.isArray(numbers)) {
        throw new CallbackError("TypeError", "numbers must be a list");
      }
      return numbers.reduce((a, b) => a + b, 0);
    },
  },
  {
    name: "node.fail",
    description: "Raises ValueError with the given message (to show error mapping).",
    schema: {
      type: "object",
      properties: { message: { type: "string" } },
    },
    handler: async ({ message }) => {
      throw new CallbackError("ValueError", message || "failed on purpose");
    },
  },
  {
    name: "node.crash",
    description: "A handler bug: throws a plain Error.",
    schema: { type: "object", properties: {} },
    handler: () => {
      throw new Error("undefined is not a function");
    },
  },
  {
    name: "node.context",
    description: "Returns the trace context and time budget the request carried.",
    schema: { type: "object", properties: {} },
    handler: (_args, ctx) => ({
      traceparent: ctx.headers ? ctx.headers.get("traceparent") : "",
      has_deadline: ctx.deadline !== undefined,
      runtime: `node ${process.version}`,
    }),
  },
];

// errorReply turns whatever a handler threw into the wire convention.
function errorReply(err) {
  if (err instanceof CallbackError) {
    return { code: 400, type: err.type, message: String(err.message) };
  }
  return { code: 500, type: "InternalError", message: `callback failed: ${err && err.message ? err.message : err}` };
}

// Headers are single-line; the JSON body carries the full message.
function oneLine(s) {
  s = String(s).replace(/[\r\n]+/g, " ");
  return (s.length > 512 ? s.slice(0, 512) + "…" : s) || "(no message)";
}

async function handle(cb, msg) {
  let reply;
  try {
    const args = msg.data.length ? jc.decode(msg.data) : {};
    const budget = msg.headers ? Number(msg.headers.get("Eryx-Timeout-Ms")) : NaN;
    const ctx = {
      headers: msg.headers,
      deadline: budget > 0 ? Date.now() + budget : undefined,
    };
    const result = await cb.handler(args, ctx);
    msg.respond(jc.encode(result === undefined ? null : result));
    return;
  } catch (err) {
    reply = errorReply(err);
  }
  const h = headers();
  h.set("Eryx-Error-Type", oneLine(reply.type));
  msg.respondError(reply.code, oneLine(reply.message), jc.encode({ type: reply.type, message: reply.message }), { headers: h });
}

// start registers the service on an open connection and returns it.
async function start(nc, { prefix = "eryx", name = "eryx-node-example" } = {}) {
  const srv = await nc.services.add({
    name,
    version: "1.0.0",
    description: "eryx example callbacks in Node.js",
    metadata: { "eryx.protocol": PROTOCOL },
  });
  for (const cb of callbacks) {
    srv.addEndpoint(cb.name.replace(/\./g, "-"), {
      subject: `${prefix}.cb.${cb.name}`,
      metadata: {
        "eryx.callback": cb.name,
        "eryx.description": cb.description,
        "eryx.schema": JSON.stringify(cb.schema),
      },
      handler: (err, msg) => {
        if (err) {
          console.error(`endpoint ${cb.name}: ${err.message}`);
          return;
        }
        handle(cb, msg);
      },
    });
  }
  // Once the server has our subscriptions, discovery sees every endpoint.
  await nc.flush();
  return srv;
}

async function main() {
  const servers = process.env.NATS_URL || "nats://127.0.0.1:4222";
  const prefix = process.env.ERYX_PREFIX || "eryx";
  const nc = await connect({ servers, name: "eryx-node-example" });
  const srv = await start(nc, { prefix });
  console.log(`ready: ${callbacks.length} callbacks on ${prefix}.cb.*`);

  const shutdown = async () => {
    await srv.stop();
    await nc.drain();
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);
  const err = await nc.closed();
  if (err) {
    console.error(`connection closed: ${err.message}`);
    process.exit(1);
  }
}

module.exports = { start, callbacks, CallbackError };

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
