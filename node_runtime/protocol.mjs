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
// Nothing else in the runtime reads stdin or writes stdout: logs go to stderr. Two threads write
// stdout: the main thread (replies, events) and the worker (a run's output and its reply, written
// straight to the pipe rather than through the main thread: one thread hop less per call). A lock
// in shared memory keeps every frame whole (FramePipe below).
//
// The message catalogue below is the same as mcp_pyodide/_protocol.py (the broker's side, which
// decodes and bounds everything this process sends) and docs/protocol.md. A field is spelled once:
// camelCase here, the same words in snake_case in Python (stdoutTruncatedChars <-> stdout_truncated_chars).

import fs from "node:fs";

/** Bumped whenever a message or field changes meaning; checked by both sides at `init`. */
export const PROTOCOL_VERSION = 2;

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
 *
 * @typedef {{code: string, timeoutMs: number}} ExecuteRequest  kind "execute"; reply ExecuteReply
 * @typedef {{names: string[], timeoutMs: number}} LoadPackagesRequest  kind "load-packages"; reply LoadPackagesReply
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
 * workerData: the InitRequest fields plus {snapshot: Uint8Array | null, interruptBuffer, runControl,
 * pipeLock: SharedArrayBuffer, runPort: MessagePort, writer: number, generation: number}.
 * runControl[0] is the runId the main thread timed out; runPort carries "started" and "done",
 * which the main thread can read synchronously (receiveMessageOnPort) before it handles a request.
 *
 * host -> worker:
 * @typedef {{type: "run", runId: number, id: number, code: string, timeoutMs: number, notice: string | null}} WorkerRun
 *   the worker writes the run's Output frames and its ExecuteReply (or, timed out, ErrorReply) itself
 * @typedef {{type: "load", runId: number, names: string[]}} WorkerLoad
 * @typedef {{type: "fetched", fetchId: number, response?: FetchResponse, error?: string}} WorkerFetched
 *
 * worker -> host:
 * @typedef {{type: "booted", from: "snapshot" | "scratch", ms: number, bufferBytes: number}} WorkerBooted  bufferBytes: ArrayBuffer memory still held once booted
 * @typedef {{type: "ready", version: string, bootMs: number}} WorkerReady
 * @typedef {{type: "snapshot", data: Uint8Array}} WorkerSnapshot  only when makeSnapshot, before user code
 * @typedef {{type: "snapshot-failed", reason: string}} WorkerSnapshotFailed
 * @typedef {{type: "started", runId: number}} WorkerStarted  on runPort: the run began, its timeout starts now
 * @typedef {{type: "done", runId: number, replace: string | null}} WorkerDone  on runPort, posted just before
 *   the reply is written; `replace` says why the interpreter is beyond use (memory exhausted, fatal error)
 * @typedef {{type: "sent", runId: number, ok: boolean}} WorkerSent  on runPort, once the reply is written
 *   (ok) or could not be (the main thread then answers the run itself and replaces the interpreter)
 * @typedef {{type: "loaded", runId: number, outcome: {error: string | null, logs: string[], loaded: Record<string, string>}}} WorkerLoaded
 * @typedef {{type: "fetch", fetchId: number, request: FetchRequest}} WorkerFetch
 *
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

// Captured when this module loads, before the worker has run any guest code: the guest can
// replace globals, not these references, so it cannot make a frame writer skip its lock.
const { compareExchange, load, notify, store, wait } = Atomics;
const writeSync = fs.writeSync;
const nap = new Int32Array(new SharedArrayBuffer(4));

/** The main thread's owner id in a FramePipe lock; a worker's is its generation + 1. */
export const MAIN_WRITER = 1;

/**
 * Whole frames onto one pipe from two threads. The lock word holds its holder's owner id (0:
 * free). The worker waits for it; the main thread never waits on a thread that runs guest code:
 * it keeps its frames in order and retries (host.mjs), and breaks the lock of a worker that
 * ended while holding it.
 */
export class FramePipe {
  constructor(fd, lockBuffer, owner) {
    this.fd = fd;
    this.lock = new Int32Array(lockBuffer);
    this.owner = owner;
  }

  /** Take the lock if it is free; true when taken. */
  tryTake() {
    return compareExchange(this.lock, 0, 0, this.owner) === 0;
  }

  /** Wait until the lock is ours (the worker only). */
  take() {
    for (;;) {
      const held = compareExchange(this.lock, 0, 0, this.owner);
      if (held === 0) return;
      wait(this.lock, 0, held, 100);
    }
  }

  release() {
    store(this.lock, 0, 0);
    notify(this.lock, 0);
  }

  /** Whoever holds the lock now (0: nobody). */
  holder() {
    return load(this.lock, 0);
  }

  /** Free a lock that `owner` still holds (a worker that ended while writing). */
  breakFor(owner) {
    if (compareExchange(this.lock, 0, owner, 0) === owner) notify(this.lock, 0);
  }

  /** Write all of `frame` (a blocking pipe takes it in one write; a signal may split it). */
  writeAll(frame) {
    const size = frame.length;
    let done = 0;
    while (done < size) {
      try {
        done += writeSync(this.fd, frame, done, size - done);
      } catch (error) {
        if (error?.code !== "EAGAIN") throw error;
        wait(nap, 0, 0, 1);
      }
    }
  }

  /** Take the lock, write one message, release: the worker's way of sending. */
  send(message) {
    const frame = encodeFrame(message);
    this.take();
    try {
      this.writeAll(frame);
    } finally {
      this.release();
    }
  }
}
