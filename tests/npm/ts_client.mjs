// The official TypeScript SDK as a client: run code twice (state kept), list tools, print JSON.
// Usage: node ts_client.mjs stdio <python> <server args...> | node ts_client.mjs http <url>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [kind, ...rest] = process.argv.slice(2);
const transport =
  kind === "stdio"
    ? new StdioClientTransport({ command: rest[0], args: rest.slice(1), env: process.env, stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(rest[0]));
const client = new Client({ name: "ts-sdk-test", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name);
const first = await client.callTool({ name: "pyodide_execute", arguments: { code: "x = 6 * 7\nx" } });
const session = first.structuredContent?.session;
const args = session ? { session } : {};
const second = await client.callTool({ name: "pyodide_execute", arguments: { code: "x + 1", ...args } });
process.stdout.write(
  JSON.stringify({
    protocol: client.getServerVersion()?.name,
    tools,
    first: first.structuredContent?.result,
    second: second.structuredContent?.result,
    session: session ?? null,
  }) + "\n",
);
await client.close();
