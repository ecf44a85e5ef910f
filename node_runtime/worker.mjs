// The sandbox: one Pyodide interpreter in a worker thread.
//
// The main thread (host.mjs) owns the wire to the broker and the timers; this
// thread only runs Python. Python can hold this thread for as long as it
// likes, which is why timeouts live elsewhere and reach us through the shared
// interrupt buffer.

import fs from "node:fs";
import { parentPort, workerData } from "node:worker_threads";

const config = workerData;
const bootStarted = performance.now();
const GUEST_LIB = "/lib/mcp_guest";
const GUEST_MPLCONFIG = "/home/pyodide/.mplconfig";
const interrupt = new Int32Array(config.interruptBuffer);

capWasmMemory(config.memoryLimitBytes);
shimProcessBinding();

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

/** Per-run capture of one output stream, bounded in characters. */
class StreamCapture {
  constructor(runId, stream, maxChars) {
    this.runId = runId;
    this.stream = stream;
    this.remaining = maxChars;
    this.cutChars = 0;
    this.decoder = new TextDecoder("utf-8", { fatal: false });
  }

  write(bytes) {
    this.forward(this.decoder.decode(bytes, { stream: true }));
    return bytes.length;
  }

  finish() {
    this.forward(this.decoder.decode());
  }

  forward(text) {
    if (!text) return;
    if (this.remaining <= 0) {
      this.cutChars += text.length;
      return;
    }
    let kept = text;
    if (text.length > this.remaining) {
      kept = text.slice(0, this.remaining);
      this.cutChars += text.length - kept.length;
    }
    this.remaining -= kept.length;
    parentPort.postMessage({ type: "output", runId: this.runId, stream: this.stream, text: kept });
  }
}

/**
 * Timers for Python (`js.setTimeout`, asyncio's event loop) that only fire inside the run
 * that scheduled them, so a callback left behind cannot take over the worker between runs.
 */
let activeRun = 0;
function runScoped(schedule, cancel) {
  return {
    set(callback, delay, ...args) {
      const owner = activeRun;
      return schedule(() => {
        if (owner !== 0 && owner === activeRun) callback(...args);
        else if (typeof callback?.destroy === "function") callback.destroy();
      }, delay);
    },
    clear: cancel,
  };
}
const timeout = runScoped(setTimeout, clearTimeout);
const interval = runScoped(setInterval, clearInterval);
const sandboxGlobals = {
  setTimeout: timeout.set,
  clearTimeout: timeout.clear,
  setInterval: interval.set,
  clearInterval: interval.clear,
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
    PYTHONUNBUFFERED: "1",
    MPLBACKEND: "Agg",
    ...(config.mplConfigDir ? { MPLCONFIGDIR: GUEST_MPLCONFIG } : {}),
  },
  args: [],
};
const pyodide = await boot();
config.snapshot = null; // 20 MB this worker no longer needs

/**
 * Restore a memory snapshot of a freshly booted interpreter when one is available (about
 * ten times faster than booting); otherwise boot normally and, if asked, take such a
 * snapshot before anything else runs, for the interpreters that come after.
 */
async function boot() {
  if (config.snapshot) {
    try {
      const restored = await loadPyodide({ ...bootOptions, _loadSnapshot: config.snapshot });
      parentPort.postMessage({ type: "booted", from: "snapshot", ms: performance.now() - bootStarted });
      return restored;
    } catch (error) {
      parentPort.postMessage({ type: "snapshot-failed", reason: String(error?.message ?? error) });
    }
  }
  const fresh = await loadPyodide({ ...bootOptions, _makeSnapshot: Boolean(config.makeSnapshot) });
  if (config.makeSnapshot) {
    const snapshot = fresh.makeMemorySnapshot();
    parentPort.postMessage({ type: "snapshot", data: snapshot }, [snapshot.buffer]);
  }
  parentPort.postMessage({ type: "booted", from: "scratch" });
  return fresh;
}

// No network from the sandbox: package files arrive through the broker's cache folder.
globalThis.fetch = () => Promise.reject(new Error("network access is disabled in the sandbox"));

mountHostFolders();
installGuestModules();
const guest = pyodide.runPython("import mcp_guest_executor\nmcp_guest_executor.GUEST");
guest.configure(pyodide.toPy(config.guestOptions ?? {}));
pyodide.runPython(`import sys\nif ${JSON.stringify(GUEST_LIB)} in sys.path: sys.path.remove(${JSON.stringify(GUEST_LIB)})`);

/** Show each granted host folder at its guest path; the permission flags are the real fence. */
function mountHostFolders() {
  const { FS } = pyodide;
  const mounts = [...(config.mounts ?? [])];
  // Shared by every session, so read-only here: the broker writes the font cache.
  if (config.mplConfigDir) mounts.push({ guestPath: GUEST_MPLCONFIG, hostPath: config.mplConfigDir, readOnly: true });
  for (const mount of mounts) {
    FS.mkdirTree(mount.guestPath);
    FS.mount(FS.filesystems.NODEFS, { root: mount.hostPath }, mount.guestPath);
  }
  guardReadOnlyMounts(mounts.filter((m) => m.readOnly).map((m) => m.guestPath));
  if (config.outputGuestPath) watchWrites(config.outputGuestPath);
}

/** Paths written in the output folder during the current run: reported with its result. */
const writtenPaths = new Set();

/** Notice files created, written or renamed into the output folder, without walking it. */
function watchWrites(folder) {
  const { FS } = pyodide;
  const NODEFS = FS.filesystems.NODEFS;
  const inFolder = (node) => node?.mount?.mountpoint === folder;
  const wrap = (ops, name, record) => {
    const original = ops[name];
    if (typeof original !== "function") return;
    ops[name] = function (...args) {
      const result = original.apply(this, args);
      try {
        record(...args);
      } catch {
        // Bookkeeping must never break the file operation itself.
      }
      return result;
    };
  };
  wrap(NODEFS.node_ops, "mknod", (parent, name, mode) => {
    if (inFolder(parent) && FS.isFile(mode)) writtenPaths.add(`${FS.getPath(parent)}/${name}`);
  });
  wrap(NODEFS.node_ops, "rename", (oldNode, newDir, newName) => {
    if (inFolder(newDir)) writtenPaths.add(`${FS.getPath(newDir)}/${newName}`);
  });
  wrap(NODEFS.stream_ops, "write", (stream) => {
    if (inFolder(stream.node)) writtenPaths.add(FS.getPath(stream.node));
  });
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
  const guard = (ops, name, test) => {
    const original = ops[name];
    if (typeof original !== "function") return;
    ops[name] = function (...args) {
      if (test(...args)) deny();
      return original.apply(this, args);
    };
  };
  for (const name of ["mknod", "rename", "unlink", "rmdir", "symlink"]) {
    guard(NODEFS.node_ops, name, (node) => readOnly(node));
  }
  guard(NODEFS.node_ops, "setattr", (node, attr) => readOnly(node) && (attr.size !== undefined || attr.mode !== undefined || attr.timestamp !== undefined));
  guard(NODEFS.stream_ops, "open", (stream) => readOnly(stream.node) && (stream.flags & O_ACCMODE) !== 0);
  guard(NODEFS.stream_ops, "write", (stream) => readOnly(stream.node));
}

/** The guest helpers are real .py files sent by the broker; put them where Python imports them. */
function installGuestModules() {
  const { FS } = pyodide;
  FS.mkdirTree(GUEST_LIB);
  for (const [name, source] of Object.entries(config.guestModules)) {
    FS.writeFile(`${GUEST_LIB}/${name}.py`, source);
  }
  pyodide.runPython(`import sys\nsys.path.insert(0, ${JSON.stringify(GUEST_LIB)})`);
}

/** Restore everything user code could have changed since the last run. */
function armRun(runId) {
  const out = new StreamCapture(runId, "stdout", config.maxOutputChars);
  const err = new StreamCapture(runId, "stderr", config.maxOutputChars);
  pyodide.setStdin({ error: true });
  pyodide.setStdout({ write: (bytes) => out.write(bytes) });
  pyodide.setStderr({ write: (bytes) => err.write(bytes) });
  Atomics.store(interrupt, 0, 0);
  pyodide.setInterruptBuffer(interrupt);
  return { out, err };
}

async function run(message) {
  const { out, err } = armRun(message.runId);
  writtenPaths.clear();
  activeRun = message.runId;
  let outcome;
  try {
    let reply = guest.execute(message.code);
    if (typeof reply !== "string") {
      const awaitable = reply;
      try {
        reply = await awaitable;
      } finally {
        awaitable.destroy?.();
      }
    }
    outcome = JSON.parse(reply);
  } catch (error) {
    outcome = {
      ok: false,
      error: { type: error?.type ?? error?.name ?? "Error", message: String(error?.message ?? error), traceback: String(error?.message ?? error) },
    };
  }
  try {
    guest.flush_streams();
  } catch {
    // A broken sys.stdout is the user's own; the run result still stands.
  }
  out.finish();
  err.finish();
  activeRun = 0;
  outcome.written = [...writtenPaths];
  outcome.stdoutCut = out.cutChars;
  outcome.stderrCut = err.cutChars;
  // Route later stray writes (timers left behind) nowhere rather than into the next run.
  pyodide.setStdout({ write: (bytes) => bytes.length });
  pyodide.setStderr({ write: (bytes) => bytes.length });
  parentPort.postMessage({ type: "done", runId: message.runId, outcome });
}

async function loadPackages(message) {
  const logs = [];
  let error = null;
  try {
    await pyodide.loadPackage(message.names, {
      messageCallback: (text) => logs.push(text),
      errorCallback: (text) => logs.push(text),
      checkIntegrity: true,
    });
  } catch (caught) {
    error = String(caught?.message ?? caught);
  }
  const loaded = Object.fromEntries(Object.entries(pyodide.loadedPackages));
  parentPort.postMessage({ type: "loaded", runId: message.runId, outcome: { error, logs, loaded } });
}

let queue = Promise.resolve();
parentPort.on("message", (message) => {
  if (message.type === "run") {
    queue = queue.then(() => run(message));
  } else if (message.type === "load") {
    queue = queue.then(() => loadPackages(message));
  }
});

parentPort.postMessage({ type: "ready", version: pyodide.version, bootMs: performance.now() - bootStarted });
