// The floor: bare Pyodide in Node, with nothing of ours around it.
//
//   node bare_pyodide.mjs <pyodide dir> [calls]
//
// Prints JSON lines on stdout:
//   {"event": "first", ...}  as soon as the first runPython("1+1") has answered
//   {"event": "done",  ...}  after `calls` more timed runPython("1+1") calls, then two big
//                            outputs (100,000 printed lines, one 10 MB line) captured in full
// All times are milliseconds measured inside this process; RSS is
// process.memoryUsage().rss (the same number as psutil's rss) after the loop.
import { pathToFileURL } from "node:url";
import path from "node:path";

const started = performance.now(); // since this process started its clock (after Node's own startup)
const [, , dirArg, callsArg] = process.argv;
if (!dirArg) {
  console.error("usage: node bare_pyodide.mjs <pyodide dir> [calls]");
  process.exit(2);
}
const dir = path.resolve(dirArg) + path.sep;
const calls = Number.parseInt(callsArg ?? "300", 10);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const { loadPyodide } = await import(pathToFileURL(path.join(dir, "pyodide.mjs")).href);
const t0 = performance.now();
const pyodide = await loadPyodide({ indexURL: dir });
const t1 = performance.now();
const first = pyodide.runPython("1+1");
const t2 = performance.now();
if (first !== 2) throw new Error(`1+1 gave ${first}`);
emit({
  event: "first",
  import_ms: t0 - started,
  boot_ms: t1 - t0, // loadPyodide() alone
  first_call_ms: t2 - t1,
  process_uptime_ms: process.uptime() * 1000, // includes Node's own startup
  pyodide_version: pyodide.version,
  node_version: process.version,
});

// A few untimed calls so the timed ones are warm, as the server's are.
for (let i = 0; i < 10; i++) pyodide.runPython("1+1");
const per_call_ms = new Array(calls);
for (let i = 0; i < calls; i++) {
  const a = performance.now();
  pyodide.runPython("1+1");
  per_call_ms[i] = performance.now() - a;
}
const rss_bytes = process.memoryUsage().rss;

// Big output, captured the way any host must: a write handler that decodes and keeps the text.
function timedOutput(code) {
  const parts = [];
  const decoder = new TextDecoder();
  pyodide.setStdout({ write: (bytes) => (parts.push(decoder.decode(bytes, { stream: true })), bytes.length) });
  const a = performance.now();
  pyodide.runPython(code);
  parts.push(decoder.decode());
  const text = parts.join("");
  const ms = performance.now() - a;
  pyodide.setStdout({});
  return { ms, chars: text.length };
}
const print100k = timedOutput("for i in range(100000): print(i)");
const line10m = timedOutput("print('x' * 10_000_000)");
emit({ event: "done", per_call_ms, rss_bytes, print100k, line10m });
process.exit(0);
