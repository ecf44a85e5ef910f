// The sandbox: one Pyodide interpreter in a worker thread.
//
// The main thread (host.mjs) owns the wire to the broker and the timers; this
// thread only runs Python. Python can hold this thread for as long as it
// likes, which is why timeouts live elsewhere and reach us through the shared
// interrupt buffer.
//
// Over 300 lines on purpose: this is one worker thread's whole life (boot, lock-down, file guards, runs),
// and the guards close over the interpreter they lock, so they are read in the order they are applied.

import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import path from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import { installScheduling, RunScope } from "./scope.mjs";

const config = workerData;
const bootStarted = performance.now();
const GUEST_LIB = "/lib/mcp_guest";
const GUEST_MPLCONFIG = "/home/pyodide/.mplconfig";
// Compiled modules of lock-file packages, made and checked by the broker (mcp_pyodide/_bytecode.py).
const GUEST_BYTECODE = "/lib/mcp-pyodide-bytecode";
// Lock-file wheels the broker unpacked (mcp_pyodide/packages/trees.py), one folder per sha256.
const GUEST_TREES = "/lib/mcp-pyodide-packages";
const interrupt = new Int32Array(config.interruptBuffer);

capWasmMemory(config.memoryLimitBytes);
shimProcessBinding();
// No guest code runs between calls: scheduling and entry into Python are run-scoped (scope.mjs),
// installed before Pyodide loads so that it, too, only ever sees the scoped versions.
const scope = new RunScope();
scope.trusted = 1; // booting and setting up: the worker's own code, until the first run
installScheduling(globalThis, scope);
let reportCallbackError = () => {};
scope.onCallbackError = (error) => reportCallbackError(error);
// A promise user code left rejected (a failed load, a failed fetch) is the user's error, not
// a reason to end the interpreter: report it to the run in progress, if any.
process.on("unhandledRejection", (reason) => reportCallbackError(reason));

const { loadPyodide } = await import(config.pyodideModule);

/** Keep Pyodide's heap under the configured limit: Worker.resourceLimits does not cover wasm. */
function capWasmMemory(limitBytes) {
  if (!limitBytes) return;
  const RealMemory = WebAssembly.Memory;
  const maxPages = Math.max(1, Math.floor(limitBytes / 65536));
  function CappedMemory(descriptor) {
    const capped = { ...descriptor };
    if (capped.maximum === undefined || capped.maximum > maxPages) {
      capped.maximum = Math.max(maxPages, capped.initial ?? 0);
    }
    return new RealMemory(capped);
  }
  CappedMemory.prototype = RealMemory.prototype;
  WebAssembly.Memory = CappedMemory;
}

/** Emscripten's NODEFS asks for process.binding("constants"), which the permission model forbids. */
function shimProcessBinding() {
  const constants = { fs: fs.constants };
  Object.defineProperty(process, "binding", {
    value: (name) => {
      if (name === "constants") return constants;
      throw new Error(`process.binding(${JSON.stringify(name)}) is not available in the sandbox`);
    },
    writable: false,
    configurable: false,
  });
}

const POST_CHARS = 256 * 1024; // hand output to the main thread in batches of about this size...
const POST_MS = 50; // ...and at most this long after the last message (checked on each write)

/**
 * A run's output on its way to the main thread: one message per batch, not per write. A write
 * more than POST_MS after the last message goes at once (so `print` before a long step
 * streams); faster writes are gathered. Python holds the worker while it runs, so a gathered
 * tail waits for the next write or the end of the run. Both streams share one batch so their
 * order survives (a write to the other stream posts the batch first).
 */
class OutputBatch {
  constructor(runId) {
    this.runId = runId;
    this.stream = null;
    this.parts = [];
    this.size = 0;
    this.posted = -Infinity;
    this.gathering = null; // the StreamCapture holding undecoded bytes, if any
  }

  add(stream, text) {
    if (stream !== this.stream) this.post();
    this.stream = stream;
    this.parts.push(text);
    this.size += text.length;
    if (this.size >= POST_CHARS || performance.now() - this.posted >= POST_MS) this.post();
  }

  post() {
    if (!this.parts.length) return;
    this.posted = performance.now();
    const text = this.parts.length === 1 ? this.parts[0] : this.parts.join("");
    this.parts = [];
    this.size = 0;
    parentPort.postMessage({ type: "output", runId: this.runId, stream: this.stream, text });
  }
}

/** UTF-16 length of UTF-8 bytes without decoding them (for counting what the cap cut). */
function utf16Length(bytes) {
  let units = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if ((b & 0xc0) !== 0x80) units += b >= 0xf0 ? 2 : 1;
  }
  return units;
}

const GATHER_BYTES = 64 * 1024; // a stream's undecoded bytes held before they are decoded

/**
 * Per-run capture of one output stream, bounded in characters; past the cap it only counts.
 * Unbuffered `print` makes two writes per line, and decoding each on its own cost about as much
 * as running the loop: bytes are gathered and decoded once per GATHER_BYTES, per batch interval,
 * or when the other stream writes (so their order survives). Gathered bytes hold their estimated
 * characters back from the cap; decoding settles the estimate, so the cap is exact even for
 * invalid UTF-8 (a stray continuation byte counts 0 here and decodes to one character).
 */
class StreamCapture {
  constructor(batch, stream, maxChars) {
    this.batch = batch;
    this.stream = stream;
    this.remaining = maxChars;
    this.cutChars = 0;
    this.decoder = new TextDecoder("utf-8", { fatal: false });
    this.gathered = null;
    this.gatheredBytes = 0;
    this.reserved = 0;
  }

  write(bytes) {
    if (this.remaining <= 0 && this.gatheredBytes) this.decodeGathered(); // settle the estimate first
    if (this.remaining <= 0) {
      this.cutChars += utf16Length(bytes);
      return bytes.length;
    }
    if (this.batch.gathering !== this) this.batch.gathering?.decodeGathered();
    // A write too big to gather, or one that may reach the cap, is decoded at once (not counted first).
    const units = bytes.length <= GATHER_BYTES - this.gatheredBytes ? utf16Length(bytes) : Infinity;
    if (units > this.remaining) {
      this.decodeGathered();
      if (this.remaining <= 0) this.cutChars += utf16Length(bytes);
      else this.keep(this.decoder.decode(bytes, { stream: true }));
      return bytes.length;
    }
    this.gathered ??= new Uint8Array(GATHER_BYTES);
    this.gathered.set(bytes, this.gatheredBytes);
    this.gatheredBytes += bytes.length;
    this.reserved += units;
    this.remaining -= units;
    this.batch.gathering = this;
    if (performance.now() - this.batch.posted >= POST_MS) this.decodeGathered();
    return bytes.length;
  }

  /** Decode what was gathered and hand it to the batch (the decoder keeps a split character). */
  decodeGathered() {
    if (this.batch.gathering === this) this.batch.gathering = null;
    if (!this.gatheredBytes) return;
    const text = this.decoder.decode(this.gathered.subarray(0, this.gatheredBytes), { stream: true });
    this.gatheredBytes = 0;
    this.remaining += this.reserved;
    this.reserved = 0;
    this.keep(text);
  }

  finish() {
    this.decodeGathered();
    if (this.remaining > 0) this.keep(this.decoder.decode());
    this.batch.post();
  }

  keep(text) {
    if (!text) return;
    let kept = text;
    if (text.length > this.remaining) {
      kept = text.slice(0, this.remaining);
      this.cutChars += text.length - kept.length;
    }
    this.remaining -= kept.length;
    this.batch.add(this.stream, kept);
  }
}

const sandboxGlobals = {
  setTimeout: globalThis.setTimeout,
  clearTimeout: globalThis.clearTimeout,
  setInterval: globalThis.setInterval,
  clearInterval: globalThis.clearInterval,
  // What pyodide.http.pyfetch needs; fetch itself goes to the broker (see brokerFetch).
  fetch: (...args) => brokerFetch(...args),
  AbortController,
  AbortSignal,
  Object,
};

const bootOptions = {
  indexURL: config.pyodideDir,
  packageCacheDir: config.packageCacheDir,
  stdin: () => {
    throw new Error("stdin is not available in the sandbox");
  },
  stdout: () => {},
  stderr: () => {},
  jsglobals: sandboxGlobals,
  env: {
    HOME: "/home/pyodide",
    _: "/usr/bin/python",
    PYTHONUNBUFFERED: "1",
    MPLBACKEND: "Agg",
    ...(config.mplConfigDir ? { MPLCONFIGDIR: GUEST_MPLCONFIG } : {}),
  },
  args: [],
};
// Standard-library modules the guest helpers import, and the helpers themselves (imported, not
// installed: importing them changes nothing outside them), are in the snapshot, so a restored
// interpreter does not import them again (about 0.3 s per start). Nothing else runs before the
// snapshot; this file and the helpers' sources are part of the snapshot's key.
const SNAPSHOT_IMPORTS =
  "ast, collections.abc, importlib.abc, importlib.machinery, io, json, linecache, os, secrets, " +
  "shutil, signal, time, tokenize, traceback, types, typing";
const GUEST_IMPORTS = "mcp_guest_executor, mcp_guest_figures";

const releaseWasmBytes = holdWasmBytes();
const { interpreter: pyodide, from: bootedFrom } = await boot();
releaseWasmBytes();
// The restore copied the 20 MB snapshot into the interpreter's memory. Pyodide keeps its options
// (the snapshot among them) for the interpreter's life: drop that reference, and free the bytes
// now rather than at some later full collection (ArrayBuffer.prototype.transfer: Node 22 and
// newer; Node 20 leaves them to the collector). Every interpreter is about 20 MiB smaller.
if (pyodide._module?.API?.config) delete pyodide._module.API.config._loadSnapshot;
config.snapshot?.buffer.transfer?.(0);
config.snapshot = null;
parentPort.postMessage({
  type: "booted",
  from: bootedFrom,
  ms: performance.now() - bootStarted,
  bufferBytes: process.memoryUsage().arrayBuffers,
});
// A restored interpreter starts from the snapshot's memory, `random`'s hidden state included
// (`secrets` imports it): without a fresh seed every interpreter would draw the same numbers.
pyodide.runPython("import random\nrandom.seed()\ndel random");

/**
 * Pyodide reads pyodide.asm.wasm (10 MB) through node:fs/promises and keeps the bytes, through
 * its instantiateWasm closure, for the interpreter's life, long after they were compiled. Note
 * the buffers it reads while booting; the function returned frees them (Node 22+: transfer) and
 * puts readFile back. Every interpreter is about 10 MiB smaller.
 */
function holdWasmBytes() {
  const readFile = fs.promises.readFile;
  const held = [];
  fs.promises.readFile = async function (file, ...rest) {
    const data = await readFile.call(this, file, ...rest);
    const ownBuffer = data instanceof Uint8Array && data.byteLength === data.buffer.byteLength;
    if (ownBuffer && String(file).endsWith(".wasm")) held.push(data.buffer);
    return data;
  };
  syncBuiltinESMExports();
  return () => {
    fs.promises.readFile = readFile;
    syncBuiltinESMExports();
    for (const buffer of held.splice(0)) buffer.transfer?.(0);
  };
}

/**
 * Restore a memory snapshot of a freshly booted interpreter when one is available (about
 * ten times faster than booting); otherwise boot normally and, if asked, take such a
 * snapshot before anything else runs, for the interpreters that come after.
 */
async function boot() {
  if (config.snapshot) {
    try {
      return { interpreter: await loadPyodide({ ...bootOptions, _loadSnapshot: config.snapshot }), from: "snapshot" };
    } catch (error) {
      parentPort.postMessage({ type: "snapshot-failed", reason: String(error?.message ?? error) });
    }
  }
  const fresh = await loadPyodide({ ...bootOptions, _makeSnapshot: Boolean(config.makeSnapshot) });
  if (config.makeSnapshot) {
    fresh.runPython(`import ${SNAPSHOT_IMPORTS}`);
    installGuestModules(fresh);
    fresh.runPython(`import ${GUEST_IMPORTS}\nimport sys\nsys.path.remove(${JSON.stringify(GUEST_LIB)})`);
    const snapshot = fresh.makeMemorySnapshot();
    parentPort.postMessage({ type: "snapshot", data: snapshot }, [snapshot.buffer]);
  }
  return { interpreter: fresh, from: "scratch" };
}

// No network from the sandbox. fetch (and so pyfetch, micropip, loadPackage of a URL) asks the
// broker, which refuses unless the server allows the host (--allow-network).
const pendingFetches = new Map();
let nextFetch = 0;
globalThis.fetch = brokerFetch;

function abandonFetches() {
  for (const resolve of pendingFetches.values()) resolve({ error: "the call that made this request ended" });
  pendingFetches.clear();
}

async function brokerFetch(input, init = {}) {
  const request = typeof input === "string" || input instanceof URL ? null : input;
  const url = String(request ? request.url : input);
  const method = String(init.method ?? request?.method ?? "GET");
  const headers = [...new Headers(init.headers ?? request?.headers ?? {}).entries()];
  let body = init.body ?? null;
  if (body !== null && body !== undefined) {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : new Uint8Array(await new Response(body).arrayBuffer());
    body = Buffer.from(bytes).toString("base64");
  }
  const fetchId = ++nextFetch;
  const reply = await new Promise((resolve) => {
    pendingFetches.set(fetchId, resolve);
    parentPort.postMessage({ type: "fetch", fetchId, request: { url, method, headers, body } });
  });
  if (reply.error) throw new TypeError(`fetch ${url} failed: ${reply.error}`);
  const { response } = reply;
  const status = response.status;
  const payload = [101, 204, 205, 304].includes(status) ? null : Buffer.from(response.body, "base64");
  return new Response(payload, { status, statusText: response.statusText ?? "", headers: response.headers });
}

mountHostFolders();
// Imports read a package's modules compiled ahead (checked against their sources) instead of
// compiling them; the interpreter never writes bytecode (Pyodide sets dont_write_bytecode).
if (config.bytecodeDir) pyodide.runPython(`__import__("sys").pycache_prefix = ${JSON.stringify(GUEST_BYTECODE)}`);
// The standard library with its modules compiled, once the broker has made it: ahead of Pyodide's own.
if (config.bytecodeDir && config.bytecodeStdlib) {
  const compiled = JSON.stringify(`${GUEST_BYTECODE}/${config.bytecodeStdlib}`);
  pyodide.runPython(
    `(lambda sys, os: os.path.exists(${compiled}) and sys.path.insert(sys.path.index("/lib/python312.zip"), ${compiled}))` +
      `(__import__("sys"), __import__("os"))`,
  );
}
capInMemoryFiles(config.memoryLimitBytes);
if (config.packageTreesDir) copyLinkedFilesOnWrite();
lockDownRuntime();
freezeNodeFs();
installGuestModules(pyodide);
const guest = pyodide.runPython("import mcp_guest_executor\nmcp_guest_executor.install()");
guest.configure(pyodide.toPy(config.guestOptions ?? {}));
// Keep our own handles and take the helpers out of user code's easy reach.
const guestExecute = guest.execute;
const guestFlush = guest.flush_streams;
const guestModule = pyodide.runPython("import mcp_guest_executor\nmcp_guest_executor");
const integrityTable = guestModule.INTEGRITY;
const restoreIntegrity = guestModule._restore_integrity;
const restoreCode = restoreIntegrity.__code__;
const [settrace, setprofile] = pyodide.runPython("import sys\n(sys.settrace, sys.setprofile)").toJs();
/** Undo tampering with the executor before each run (see _restore_integrity); cheap enough per run. */
function protectExecutor() {
  settrace(null); // a tracer left behind would run inside our own code first
  setprofile(null);
  restoreIntegrity.__code__ = restoreCode;
  restoreIntegrity(integrityTable);
}
// Between calls every Python frame is refused (see scope.mjs): JavaScript calling back into
// Python then gets an ordinary error instead of running guest code.
const refuseBetweenCalls = guestModule.refuse_between_calls;
const refuseCode = refuseBetweenCalls.__code__;
scope.onBegin = () => settrace(null);
scope.onEnd = () => {
  refuseBetweenCalls.__code__ = refuseCode; // a run may have rewritten it
  settrace(refuseBetweenCalls);
};
pyodide.runPython(
  `import sys\nif ${JSON.stringify(GUEST_LIB)} in sys.path: sys.path.remove(${JSON.stringify(GUEST_LIB)})\n` +
    "for _name in ('mcp_guest_executor', 'mcp_guest_figures'): sys.modules.pop(_name, None)\ndel _name",
);

/** Show each granted host folder at its guest path; the permission flags are the real fence. */
function mountHostFolders() {
  const { FS } = pyodide;
  const mounts = [...(config.mounts ?? [])];
  // Shared by every session, so read-only here: the broker writes the font cache.
  if (config.mplConfigDir) mounts.push({ guestPath: GUEST_MPLCONFIG, hostPath: config.mplConfigDir, readOnly: true });
  if (config.bytecodeDir) mounts.push({ guestPath: GUEST_BYTECODE, hostPath: config.bytecodeDir, readOnly: true });
  if (config.packageTreesDir) mounts.push({ guestPath: GUEST_TREES, hostPath: config.packageTreesDir, readOnly: true });
  const roots = new Map();
  for (const mount of mounts) {
    FS.mkdirTree(mount.guestPath);
    const top = FS.mount(FS.filesystems.NODEFS, { root: mount.hostPath }, mount.guestPath);
    roots.set(top.mount, path.resolve(mount.hostPath));
  }
  fenceMountRoots(roots);
  guardReadOnlyMounts(mounts.filter((m) => m.readOnly).map((m) => m.guestPath));
  watchWrites(new Set(mounts.filter((m) => !m.readOnly).map((m) => m.guestPath)));
}

/** Paths written in the output folder during the current run: reported with its result. */
const writtenPaths = new Set();
const removedPaths = new Set();

/** Notice files created, written, renamed or removed in writable mounts, without walking them. */
function watchWrites(folders) {
  if (!folders.size) return;
  const { FS } = pyodide;
  const NODEFS = FS.filesystems.NODEFS;
  const watched = (node) => folders.has(node?.mount?.mountpoint);
  const wrap = (ops, name, record) =>
    intercept(ops, name, (call, ...args) => {
      const result = call();
      try {
        record(...args);
      } catch {
        // Bookkeeping must never break the file operation itself.
      }
      return result;
    });
  wrap(NODEFS.node_ops, "mknod", (parent, name, mode) => {
    if (watched(parent) && FS.isFile(mode)) writtenPaths.add(`${FS.getPath(parent)}/${name}`);
  });
  wrap(NODEFS.node_ops, "rename", (oldNode, newDir, newName) => {
    if (watched(newDir)) writtenPaths.add(`${FS.getPath(newDir)}/${newName}`);
    if (watched(oldNode)) removedPaths.add(FS.getPath(oldNode));
  });
  wrap(NODEFS.node_ops, "unlink", (parent, name) => {
    if (watched(parent)) removedPaths.add(`${FS.getPath(parent)}/${name}`);
  });
  wrap(NODEFS.node_ops, "setattr", (node, attr) => {
    if (watched(node) && attr?.size !== undefined) writtenPaths.add(FS.getPath(node)); // a truncation
  });
  wrap(NODEFS.stream_ops, "write", (stream) => {
    if (watched(stream.node)) writtenPaths.add(FS.getPath(stream.node));
  });
}

/**
 * Keep every NODEFS path inside the host folder its mount was made for. The roots live in this
 * closure: a guest that rewrites `node.mount.opts.root`, a node's name (`..`) or `node.mount`
 * gets EPERM, never another host path. The mount objects are frozen as well, so their options
 * read back as they were set.
 */
function fenceMountRoots(roots) {
  const { FS } = pyodide;
  const NODEFS = FS.filesystems.NODEFS;
  const EPERM = pyodide._module.ERRNO_CODES.EPERM;
  for (const mount of roots.keys()) {
    Object.freeze(mount.opts);
    for (const key of ["opts", "type", "mountpoint", "root"]) {
      Object.defineProperty(mount, key, { value: mount[key], writable: false, configurable: false });
    }
  }
  const joined = NODEFS.realPath;
  NODEFS.realPath = (node) => {
    const root = roots.get(node?.mount);
    const real = root === undefined ? null : path.resolve(joined(node));
    if (real === null || (real !== root && !real.startsWith(root + path.sep))) throw new FS.ErrnoError(EPERM);
    return real;
  };
}

/** After every wrapper is in place: the guest cannot replace NODEFS's operations or realPath. */
function freezeNodeFs() {
  const NODEFS = pyodide.FS.filesystems.NODEFS;
  Object.freeze(NODEFS.node_ops);
  Object.freeze(NODEFS.stream_ops);
  Object.freeze(NODEFS);
}

/**
 * Writes to a read-only mount fail with EROFS inside Python. Node's permission model and
 * Landlock already stop them on the host, but Emscripten would otherwise hide that failure
 * and Python would believe the file was written.
 */
function guardReadOnlyMounts(readOnlyPaths) {
  if (!readOnlyPaths.length) return;
  const { FS } = pyodide;
  const NODEFS = FS.filesystems.NODEFS;
  const EROFS = pyodide._module.ERRNO_CODES.EROFS;
  const O_ACCMODE = 3;
  const readOnly = (node) => readOnlyPaths.includes(node?.mount?.mountpoint);
  const deny = () => {
    throw new FS.ErrnoError(EROFS);
  };
  const guard = (ops, name, test) =>
    intercept(ops, name, (call, ...args) => {
      if (test(...args)) deny();
      return call();
    });
  for (const name of ["mknod", "rename", "unlink", "rmdir", "symlink"]) {
    guard(NODEFS.node_ops, name, (node) => readOnly(node));
  }
  guard(NODEFS.node_ops, "setattr", (node, attr) => readOnly(node) && (attr.size !== undefined || attr.mode !== undefined || attr.timestamp !== undefined));
  guard(NODEFS.stream_ops, "open", (stream) => readOnly(stream.node) && (stream.flags & O_ACCMODE) !== 0);
  guard(NODEFS.stream_ops, "write", (stream) => readOnly(stream.node));
}

/**
 * Files in the in-memory file system (/tmp, /home, ...) live in JavaScript buffers outside
 * the capped WebAssembly heap; count them against the same limit so they cannot fill the host.
 */
function capInMemoryFiles(limitBytes) {
  if (!limitBytes) return;
  const { FS } = pyodide;
  const MEMFS = FS.filesystems.MEMFS;
  const ENOSPC = pyodide._module.ERRNO_CODES.ENOSPC;
  let used = 0;
  const sizeOf = (node) => (node && FS.isFile(node.mode) ? node.usedBytes ?? 0 : 0);
  // MEMFS copies its operations into per-type tables when it makes nodes: patch those tables.
  const tables = MEMFS.ops_table ?? {};
  const fileStream = tables.file?.stream ?? MEMFS.stream_ops;
  const fileNode = tables.file?.node ?? MEMFS.node_ops;
  const dirNode = tables.dir?.node ?? MEMFS.node_ops;
  intercept(fileStream, "write", (call, stream, buffer, offset, length, position) => {
    const before = sizeOf(stream.node);
    const after = Math.max(before, position + length);
    if (after > before && used + (after - before) > limitBytes) throw new FS.ErrnoError(ENOSPC);
    const written = call();
    used += sizeOf(stream.node) - before;
    return written;
  });
  intercept(fileNode, "setattr", (call, node, attr) => {
    const before = sizeOf(node);
    if (attr.size !== undefined && attr.size > before && used + (attr.size - before) > limitBytes) {
      throw new FS.ErrnoError(ENOSPC);
    }
    const result = call();
    used += sizeOf(node) - before;
    return result;
  });
  intercept(dirNode, "unlink", (call, parent, name) => {
    let node = null;
    try {
      node = FS.lookupNode(parent, name);
    } catch {
      // unlink reports the missing name itself
    }
    const result = call();
    if (node) used -= sizeOf(node);
    return result;
  });
}

/**
 * Replace `ops[name]` (an Emscripten file-system operation) with `around(call, ...args)`,
 * where `call()` runs the original with the same `this` and arguments.
 */
function intercept(ops, name, around) {
  const original = ops[name];
  if (typeof original !== "function") return;
  ops[name] = function (...args) {
    return around(() => original.apply(this, args), ...args);
  };
}

/**
 * Close what user code could otherwise reach through `pyodide_js`: new host mounts and child
 * processes (which would abort the interpreter). Scheduling is run-scoped by scope.mjs.
 */
function lockDownRuntime() {
  const { FS } = pyodide;
  const refuseMount = () => {
    throw new Error("mounting host folders is not allowed in the sandbox");
  };
  FS.filesystems.NODEFS.mount = refuseMount;
  pyodide.mountNodeFS = refuseMount;
  const realRequire = globalThis.require;
  if (typeof realRequire === "function") {
    const noProcesses = () => {
      throw new Error("starting host processes is not allowed in the sandbox");
    };
    // Emscripten's system() asks for child_process: answer "no shell" instead of aborting.
    const childProcess = { spawnSync: () => ({ status: 127, signal: null, stdout: null, stderr: null }), execSync: noProcesses, spawn: noProcesses };
    const refused = new Set(["net", "tls", "http", "https", "http2", "dgram", "dns", "ws", "worker_threads", "inspector", "vm", "module", "cluster"]);
    globalThis.require = (name) => {
      const bare = String(name).replace(/^node:/, "");
      if (bare === "child_process") return childProcess;
      if (refused.has(bare)) throw new Error(`the ${bare} module is not available in the sandbox`);
      return realRequire(name);
    };
  }
}

/** The guest helpers are real .py files sent by the broker; put them where Python imports them. */
function installGuestModules(interpreter) {
  const { FS } = interpreter;
  FS.mkdirTree(GUEST_LIB);
  for (const [name, source] of Object.entries(config.guestModules)) {
    FS.writeFile(`${GUEST_LIB}/${name}.py`, source);
  }
  interpreter.runPython(`import sys\nsys.path.insert(0, ${JSON.stringify(GUEST_LIB)})`);
}

/**
 * fds 0-2 are set up once and lead to `sink`, which each run points at its own captures (and
 * at nothing between runs, so a timer left behind writes nowhere). Setting a stream costs a
 * reopen of all three in the file system (about 50 us each); it is done again only when user
 * code may have changed them: it called one of the setters below, or fds 0-2 are no longer the
 * streams installed here (closed, dup2'd, replaced, or their read/write patched in place).
 */
const DISCARD = (bytes) => bytes.length;
const sink = { out: DISCARD, err: DISCARD };
const stdoutDevice = { write: (bytes) => sink.out(bytes) };
const stderrDevice = { write: (bytes) => sink.err(bytes) };
const stdioSetters = { setStdin: pyodide.setStdin, setStdout: pyodide.setStdout, setStderr: pyodide.setStderr };
let stdioChanged = true;
let installedStreams = [];
for (const name of Object.keys(stdioSetters)) {
  const setter = stdioSetters[name];
  pyodide[name] = function (...args) {
    stdioChanged = true;
    return setter.apply(this, args);
  };
}

function stdioIntact() {
  const { FS } = pyodide;
  return installedStreams.every((entry, fd) => {
    const stream = FS.getStream(fd);
    const ops = stream?.stream_ops;
    return stream === entry.stream && ops === entry.ops && ops?.write === entry.write && ops?.read === entry.read;
  });
}

// Pyodide's three std streams share one operations object: a patch of it in place outlives
// any reopen, so its functions as first installed (before any user code) are put back.
const pristineOps = new Map(); // ops object -> {read, write}

function installStdio() {
  stdioSetters.setStdin({ error: true });
  stdioSetters.setStdout(stdoutDevice);
  stdioSetters.setStderr(stderrDevice);
  const { FS } = pyodide;
  installedStreams = [0, 1, 2].map((fd) => {
    const stream = FS.getStream(fd);
    const ops = stream?.stream_ops;
    if (ops && !pristineOps.has(ops)) pristineOps.set(ops, { read: ops.read, write: ops.write });
    const pristine = ops && pristineOps.get(ops);
    if (pristine) Object.assign(ops, pristine);
    return { stream, ops, write: ops?.write, read: ops?.read };
  });
  stdioChanged = false;
}

/** Restore everything user code could have changed since the last run. */
function armRun(runId) {
  const batch = new OutputBatch(runId);
  const out = new StreamCapture(batch, "stdout", config.maxOutputChars);
  const err = new StreamCapture(batch, "stderr", config.maxOutputChars);
  if (stdioChanged || !stdioIntact()) installStdio();
  sink.out = (bytes) => out.write(bytes);
  sink.err = (bytes) => err.write(bytes);
  Atomics.store(interrupt, 0, 0);
  pyodide.setInterruptBuffer(interrupt);
  return { out, err };
}

const FATAL = /fatally failed|fatal error|Aborted\(|RuntimeError: unreachable/i;

async function run(message) {
  parentPort.postMessage({ type: "started", runId: message.runId });
  let outcome = null;
  let fatal = false;
  let out = null;
  let err = null;
  try {
    ({ out, err } = armRun(message.runId));
    const stderr = err;
    reportCallbackError = (error) => {
      stderr.write(new TextEncoder().encode(`Exception in a callback: ${error?.message ?? error}\n`));
    };
    writtenPaths.clear();
    removedPaths.clear();
    scope.begin(message.runId); // also runs finalizers that came due between calls
    protectExecutor();
    let reply = guestExecute(message.code);
    if (typeof reply !== "string") {
      const awaitable = reply;
      try {
        reply = await awaitable;
      } finally {
        awaitable.destroy?.();
      }
    }
    const report = JSON.parse(reply);
    outcome = { ok: report.ok === true, result: report.result ?? null, error: report.error ?? null, figures: report.extra?.figures ?? [] };
  } catch (error) {
    const text = String(error?.message ?? error);
    fatal = FATAL.test(text);
    outcome = { ok: false, result: null, error: { type: error?.type ?? error?.name ?? "Error", message: text, traceback: text }, figures: [] };
  }
  // Everything below touches the interpreter again; if that fails, it is beyond use.
  try {
    guestFlush();
  } catch (error) {
    if (FATAL.test(String(error?.message ?? error))) fatal = true;
  }
  scope.end();
  abandonFetches(); // the broker cancels them too; nothing waits for these answers any more
  reportCallbackError = () => {};
  try {
    out?.finish();
    err?.finish();
    // Route later stray writes (timers left behind) nowhere rather than into the next run.
    sink.out = DISCARD;
    sink.err = DISCARD;
    // After a fatal error Pyodide turns every property of its API into a getter that throws:
    // reading one is the check.
    void pyodide.setInterruptBuffer;
  } catch {
    fatal = true;
  }
  outcome.written = [...writtenPaths];
  outcome.removed = [...removedPaths];
  outcome.stdoutTruncatedChars = out?.cutChars ?? 0;
  outcome.stderrTruncatedChars = err?.cutChars ?? 0;
  outcome.fatal = fatal;
  parentPort.postMessage({ type: "done", runId: message.runId, outcome });
}

// Taken before any user code runs: what linking an unpacked tree needs of Pyodide's internals.
const sitePackages = pyodide._api.sitepackages;
const loadDynlibsFromPackage = pyodide._api.loadDynlibsFromPackage;
// Not importlib.invalidate_caches(): on its first call it imports importlib.metadata (140 ms here).
// New packages are new names in site-packages, and new portions of namespace packages.
const invalidateImportCaches = pyodide.runPython(
  `(lambda sys, ns: lambda site: (getattr(sys.path_importer_cache.get(site), "invalidate_caches", lambda: None)(),` +
    ` setattr(ns, "_epoch", ns._epoch + 1)))` +
    `(__import__("sys"), __import__("importlib._bootstrap_external", fromlist=["_"])._NamespacePath)`,
);

/**
 * Make an unpacked wheel importable as loadPackage would have installed it: its folders made in
 * site-packages, each file a link to the read-only tree (see copyLinkedFilesOnWrite), its data
 * files linked under sys.prefix, its .so files loaded the same way. False (nothing changed) when
 * one of its top-level names is taken already: loadPackage then decides.
 */
async function linkTree(tree, logs) {
  const { FS } = pyodide;
  const base = `${GUEST_TREES}/${tree.folder}`;
  const tops = new Set(tree.files.map((file) => file.split("/")[0]));
  if ([...tops].some((top) => FS.analyzePath(`${sitePackages}/${top}`).exists)) return false;
  const made = [];
  try {
    for (const dir of tree.dirs) {
      FS.mkdir(`${sitePackages}/${dir}`);
      made.push(dir);
    }
    for (const file of tree.files) {
      FS.symlink(`${base}/${file}`, `${sitePackages}/${file}`);
      made.push(file);
    }
  } catch {
    for (const name of made.reverse()) {
      const where = `${sitePackages}/${name}`;
      FS.isDir(FS.lstat(where).mode) ? FS.rmdir(where) : FS.unlink(where);
    }
    return false;
  }
  for (const file of tree.datafiles) {
    const target = `/${file.split("/").slice(2).join("/")}`; // sys.prefix is /
    FS.mkdirTree(path.posix.dirname(target));
    if (FS.analyzePath(target).exists) FS.unlink(target);
    FS.symlink(`${base}/${file}`, target);
  }
  await loadDynlibsFromPackage({ file_name: tree.fileName }, tree.dynlibs.map((lib) => `${sitePackages}/${lib}`));
  pyodide.loadedPackages[tree.name] = "default channel";
  logs.push(`Loaded ${tree.name} (unpacked)`);
  return true;
}

/**
 * Package files are links to the shared read-only trees. Opened for writing, such a link becomes
 * this interpreter's own copy first (counted against its memory like any file it writes), so
 * code that patches a package's file sees what it would after loadPackage; the tree never changes.
 */
function copyLinkedFilesOnWrite() {
  const { FS } = pyodide;
  const open = FS.open;
  const writes = (flags) => (typeof flags === "number" ? (flags & 3) !== 0 : /[wa+]/.test(String(flags)));
  FS.open = function (target, flags, ...rest) {
    if (typeof target === "string" && writes(flags)) {
      let found = null;
      try {
        found = FS.lookupPath(target, { follow: false });
      } catch {
        // Not there yet: open creates it, or fails as it would have.
      }
      if (found && FS.isLink(found.node.mode) && FS.readlink(found.path).startsWith(`${GUEST_TREES}/`)) {
        // Beside it, then over it: a copy that does not fit (--memory-limit) leaves the link as it was.
        const copy = `${found.path}.mcp-pyodide-copy`;
        try {
          FS.writeFile(copy, FS.readFile(found.path));
          FS.rename(copy, found.path);
        } catch (error) {
          if (FS.analyzePath(copy).exists) FS.unlink(copy);
          throw error;
        }
      }
    }
    return open.call(this, target, flags, ...rest);
  };
}

async function loadPackages(message) {
  const logs = [];
  let error = null;
  scope.begin(message.runId); // a run of its own: callbacks left by earlier calls stay dropped
  try {
    const trees = new Map((message.trees ?? []).map((tree) => [tree.name, tree]));
    // The rest first: a shared library a tree's modules link against is one of them.
    const rest = message.names.filter((name) => !trees.has(name));
    const options = { messageCallback: (text) => logs.push(text), errorCallback: (text) => logs.push(text), checkIntegrity: true };
    if (rest.length) await pyodide.loadPackage(rest, options);
    const unlinked = [];
    for (const tree of trees.values()) {
      if (!pyodide.loadedPackages[tree.name] && !(await linkTree(tree, logs))) unlinked.push(tree.name);
    }
    if (trees.size) invalidateImportCaches(sitePackages);
    if (unlinked.length) await pyodide.loadPackage(unlinked, options);
  } catch (caught) {
    error = String(caught?.message ?? caught);
  }
  scope.end();
  const loaded = Object.fromEntries(Object.entries(pyodide.loadedPackages));
  parentPort.postMessage({ type: "loaded", runId: message.runId, outcome: { error, logs, loaded } });
}

// Runs and loads one at a time. A plain loop with native `await` (not promise.then chains,
// which are run-scoped) so nothing a run leaves behind can hold up the next one.
const tasks = [];
let draining = false;
async function drain() {
  draining = true;
  while (tasks.length) await tasks.shift()();
  draining = false;
}
function enqueue(task) {
  tasks.push(task);
  if (!draining) void drain();
}
parentPort.on("message", (message) => {
  if (message.type === "run") {
    enqueue(() => run(message));
  } else if (message.type === "fetched") {
    // Not queued: a run awaiting this answer is what holds the queue.
    const resolve = pendingFetches.get(message.fetchId);
    pendingFetches.delete(message.fetchId);
    resolve?.(message);
  } else if (message.type === "load") {
    enqueue(() => loadPackages(message));
  }
});

scope.trusted = 0; // from here on Python runs only inside a run
scope.onEnd();
parentPort.postMessage({ type: "ready", version: pyodide.version, bootMs: performance.now() - bootStarted });
