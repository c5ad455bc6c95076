// Drives `eryx-mcp serve` over stdio with the official TypeScript SDK
// client: lists the tools, runs code, keeps a session across two calls,
// receives output as progress notifications, cancels a busy loop and
// checks that an unknown tool is a JSON-RPC error. Prints one JSON line
// with what it saw; the Go test (cmd/eryx-mcp) checks it.
//
//   node client.mjs /path/to/eryx-mcp [serve flags...]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [bin, ...flags] = process.argv.slice(2);
const transport = new StdioClientTransport({ command: bin, args: ["serve", ...flags], stderr: "inherit" });
const client = new Client({ name: "eryx-ts-test", version: "1.0.0" });
await client.connect(transport);
const out = {};

out.tools = (await client.listTools()).tools.map((t) => t.name).sort();

const run = await client.callTool({ name: "run_python", arguments: { code: "print('from ts')\nresult = sum(range(10))" } });
out.run = { isError: run.isError ?? false, result: run.structuredContent.result, stdout: run.structuredContent.stdout };

await client.callTool({ name: "run_python", arguments: { code: "counter = 41", session: "ts-1" } });
const second = await client.callTool({ name: "run_python", arguments: { code: "counter += 1\nresult = counter", session: "ts-1" } });
out.session = second.structuredContent.result;

const progress = [];
await client.callTool(
  { name: "run_python", arguments: { code: "for i in range(3):\n    print('line', i, flush=True)" } },
  undefined,
  { onprogress: (p) => progress.push(p.message) },
);
out.progress = progress;

// Cancel a busy loop once it runs: the SDK sends notifications/cancelled.
const ac = new AbortController();
let jobID = "";
const spin = client.callTool(
  { name: "run_python", arguments: { code: "print('spinning', flush=True)\nwhile True: pass" } },
  undefined,
  {
    signal: ac.signal,
    onprogress: (p) => {
      if (p.message.startsWith("job ")) jobID = p.message.split(" ")[1];
      if (p.message.includes("spinning")) ac.abort("test cancels");
    },
  },
);
try {
  await spin;
  out.cancel = "not cancelled";
} catch (e) {
  out.cancel = "cancelled";
}
out.cancelledJob = jobID;

try {
  await client.callTool({ name: "no_such_tool", arguments: {} });
  out.unknownTool = "no error";
} catch (e) {
  out.unknownTool = { code: e.code, message: e.message };
}

// The server still serves after all that.
const after = await client.callTool({ name: "run_python", arguments: { code: "result = 'alive'" } });
out.after = after.structuredContent.result;

console.log(JSON.stringify(out));
await client.close();
