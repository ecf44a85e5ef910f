// The wire between the Python broker and this Node process.
//
// Frames travel over this process's own stdin/stdout, which are private pipes
// owned by the broker (never the MCP channel). Each frame is a 4-byte
// big-endian length followed by that many bytes of UTF-8 JSON:
//
//   {"id": 7, "kind": "execute", "payload": {...}}      broker -> node (request)
//   {"id": 7, "kind": "output", "payload": {...}}       node -> broker (stream)
//   {"id": 7, "kind": "result", "payload": {...}}       node -> broker (reply)
//   {"id": 7, "kind": "error", "payload": {...}}        node -> broker (reply)
//   {"id": null, "kind": "event", "payload": {...}}     node -> broker (no reply)
//
// Nothing else in the runtime reads stdin or writes stdout: logs go to stderr.
//
// The message catalogue below is the same as mcp_pyodide/_protocol.py (the broker's side, which
// decodes and bounds everything this process sends) and docs/protocol.md. A field is spelled once:
// camelCase here, the same words in snake_case in Python (stdoutTruncatedChars <-> stdout_truncated_chars).

/** Bumped whenever a message or field changes meaning; checked by both sides at `init`. */
export const PROTOCOL_VERSION = 3;

const MAX_FRAME = 256 * 1024 * 1024;

// ---- broker -> node requests: {id: number, kind, payload} ------------------------------------

/**
 * @typedef {object} MountSpec
 * @property {string} guestPath
 * @property {string} hostPath
 * @property {boolean} readOnly
 *
 * @typedef {object} InitRequest  kind "init"; reply InitReply
 * @property {number} protocolVersion  must equal PROTOCOL_VERSION, else an ErrorReply with code "protocol"
 * @property {string} pyodideDir
 * @property {string} pyodideModule  file: URL of pyodide.mjs
 * @property {string} packageCacheDir
 * @property {Record<string, string>} guestModules  module name -> Python source
 * @property {{outputDir: string | null}} guestOptions
 * @property {MountSpec[]} mounts
 * @property {string} mplConfigDir  read-only in the sandbox; only the broker writes it
 * @property {number} memoryLimitBytes
 * @property {number} maxOutputChars
 * @property {number} graceMs
 * @property {string | null} snapshotPath
 * @property {boolean} makeSnapshot
 * @property {boolean} [spareInterpreter]  keep a second worker restored ahead, swapped in on reset
 * @property {string | null} [bytecodeDir]  read-only in the sandbox: checked pycs of lock-file packages, used as sys.pycache_prefix
 * @property {string | null} [bytecodeStdlib]  a file in bytecodeDir: the standard library zip with its pycs, put on sys.path when present
 * @property {string | null} [packageTreesDir]  read-only in the sandbox: verified wheels the broker unpacked, one folder per sha256
 *
 * @typedef {{code: string, timeoutMs: number}} ExecuteRequest  kind "execute"; reply ExecuteReply
 * @typedef {{name: string, fileName: string, folder: string, dirs: string[], files: string[], dynlibs: string[], datafiles: string[]}} PackageTreeSpec
 *   an unpacked wheel (paths relative to its folder, which mirrors site-packages): `dirs` are made in site-packages
 *   and `files` linked there; `dynlibs` loaded as loadPackage does; `datafiles` (`<dist>.data/data/X`) also linked at /X
 * @typedef {{names: string[], timeoutMs: number, trees?: PackageTreeSpec[]}} LoadPackagesRequest  kind "load-packages"; reply LoadPackagesReply
 * @typedef {{}} ResetRequest  kind "reset"; reply ResetReply
 * @typedef {{}} PingRequest  kind "ping"; reply PingReply
 */

// ---- node -> broker replies: {id, kind: "result" | "error" | "output", payload} ----------------

/**
 * @typedef {{protocolVersion: number, pyodideVersion: string, nodeVersion: string, generation: number, bootedFrom: string}} InitReply
 * @typedef {{type: string, message: string, traceback: string}} ErrorInfo
 *
 * @typedef {object} ExecuteReply  figures/written/removed are hints: the broker decides what to serve
 * @property {boolean} ok
 * @property {string | null} result  repr of the last expression
 * @property {ErrorInfo | null} error
 * @property {string[]} figures  guest paths of saved PNGs
 * @property {string[]} written  guest paths written in writable mounts
 * @property {string[]} removed
 * @property {number} stdoutTruncatedChars
 * @property {number} stderrTruncatedChars
 * @property {boolean} fatal
 * @property {number} durationMs
 * @property {number} generation
 * @property {string} [notice]  why state was reset before or after this run
 * @property {boolean} [stateReset]
 *
 * @typedef {{error: string | null, logs: string[], loaded: Record<string, string>, generation: number}} LoadPackagesReply
 * @typedef {{pyodideVersion: string, generation: number}} ResetReply
 * @typedef {{generation: number}} PingReply
 *
 * @typedef {object} ErrorReply  kind "error"; for execute it also carries the ExecuteReply fields
 * @property {"timeout" | "crashed" | "runtime" | "protocol"} code
 * @property {string} message
 * @property {boolean} [stateReset]
 * @property {number} [durationMs]
 *
 * @typedef {{stream: "stdout" | "stderr", text: string}} Output  kind "output", before the reply
 */

// ---- node -> broker, unsolicited ---------------------------------------------------------------

/**
 * Events: {id: null, kind: "event", payload}.
 * @typedef {{event: "snapshot", data: string}} SnapshotEvent  base64 memory image made before any user code
 * @typedef {{event: "restarting", reason: string, generation: number}} RestartingEvent
 * @typedef {{event: "ready", version: string, generation: number}} ReadyEvent
 *
 * Requests this process makes of the broker: {id: "n<k>", kind: "fetch", payload}; the broker
 * answers {id, kind: "result", payload: FetchResponse} or {id, kind: "error", payload: {message}}.
 * @typedef {{url: string, method: string, headers: [string, string][], body: string | null}} FetchRequest  body base64
 * @typedef {{url: string, status: number, statusText: string, headers: [string, string][], body: string}} FetchResponse
 */

// ---- host (main thread) <-> worker: postMessage ------------------------------------------------

/**
 * workerData: the InitRequest fields plus {snapshot: Uint8Array | null, interruptBuffer: SharedArrayBuffer}.
 *
 * host -> worker:
 * @typedef {{type: "run", runId: number, code: string}} WorkerRun
 * @typedef {{type: "load", runId: number, names: string[], trees: PackageTreeSpec[]}} WorkerLoad
 * @typedef {{type: "fetched", fetchId: number, response?: FetchResponse, error?: string}} WorkerFetched
 *
 * worker -> host:
 * @typedef {{type: "booted", from: "snapshot" | "scratch", ms: number, bufferBytes: number}} WorkerBooted  bufferBytes: ArrayBuffer memory still held once booted
 * @typedef {{type: "ready", version: string, bootMs: number}} WorkerReady
 * @typedef {{type: "snapshot", data: Uint8Array}} WorkerSnapshot  only when makeSnapshot, before user code
 * @typedef {{type: "snapshot-failed", reason: string}} WorkerSnapshotFailed
 * @typedef {{type: "started", runId: number}} WorkerStarted  the run began: its timeout starts now
 * @typedef {{type: "output", runId: number, stream: "stdout" | "stderr", text: string}} WorkerOutput
 * @typedef {{type: "done", runId: number, outcome: RunOutcome}} WorkerDone
 * @typedef {{type: "loaded", runId: number, outcome: {error: string | null, logs: string[], loaded: Record<string, string>}}} WorkerLoaded
 * @typedef {{type: "fetch", fetchId: number, request: FetchRequest}} WorkerFetch
 *
 * @typedef {object} RunOutcome  what the worker says one run produced; the host adds durationMs, generation, notice
 * @property {boolean} ok
 * @property {string | null} result
 * @property {ErrorInfo | null} error
 * @property {string[]} figures
 * @property {string[]} written
 * @property {string[]} removed
 * @property {number} stdoutTruncatedChars
 * @property {number} stderrTruncatedChars
 * @property {boolean} fatal
 */

/** Encode one message as a length-prefixed frame. */
export function encodeFrame(message) {
  const body = Buffer.from(JSON.stringify(message), "utf8");
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/**
 * Read frames from a stream and hand each decoded message to `onMessage`.
 * Calls `onEnd` once when the stream closes (the broker went away).
 */
export function readFrames(stream, onMessage, onEnd) {
  let pending = Buffer.alloc(0);
  stream.on("data", (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 4) {
      const size = pending.readUInt32BE(0);
      if (size > MAX_FRAME) {
        throw new Error(`frame of ${size} bytes exceeds the limit`);
      }
      if (pending.length < 4 + size) break;
      const body = pending.subarray(4, 4 + size);
      pending = pending.subarray(4 + size);
      onMessage(JSON.parse(body.toString("utf8")));
    }
  });
  stream.on("end", onEnd);
  stream.on("close", onEnd);
}

/** Write one message to the broker. */
export function sendFrame(stream, message) {
  stream.write(encodeFrame(message));
}
