// The Node process started by the Python broker.
//
// The main thread never runs user code: it speaks the wire protocol
// (protocol.mjs), owns the Pyodide worker, and enforces timeouts. Because it
// stays free while Python runs, a timeout can always fire: first as a
// KeyboardInterrupt through the shared interrupt buffer, then, if the
// interpreter does not stop within the grace period, by ending the worker.
//
// Over 300 lines on purpose: it is the main thread's whole side of the protocol (requests, worker
// life, timers, spare interpreter), which share one state and are read together.

import fs from "node:fs";
import { Worker } from "node:worker_threads";
import { PROTOCOL_VERSION, readFrames, sendFrame } from "./protocol.mjs";

const WORKER_URL = new URL("./worker.mjs", import.meta.url);
const SIGINT = 2;
const STALL_MS = 250;
const STALL_NOTICE =
  "Code left running by an earlier call (a callback or task) was holding the interpreter and did not stop; the interpreter was restarted and all state was reset before this call ran.";
const FATAL_NOTICE =
  "The interpreter failed fatally during this call; it was restarted, so all state was reset.";
const MEMORY_NOTICE =
  "The interpreter ran out of memory; it was restarted after this call, so all state was reset.";

let config = null; // set by the broker's "init" request
let runtime = null; // the current WorkerRuntime
let generation = 0; // counts interpreters, so the broker can tell a reset happened
let pyodideVersion = ""; // every interpreter loads the same Pyodide, so the first one's answer holds

function send(message) {
  sendFrame(process.stdout, message);
}

function log(text) {
  process.stderr.write(`[node] ${text}\n`);
}

/** One Pyodide worker and the run currently in it. */
/** An error as text: Emscripten's file-system errors have no message, only a name and an errno. */
function describeError(error) {
  if (error?.message) return error.message;
  if (error?.name) return `${error.name}${error.errno !== undefined ? ` (errno ${error.errno})` : ""}`;
  return String(error);
}

class WorkerRuntime {
  constructor() {
    this.generation = ++generation;
    this.created = performance.now();
    this.interruptBuffer = new SharedArrayBuffer(4);
    this.interrupt = new Int32Array(this.interruptBuffer);
    this.current = null; // {id, runId, timer, graceTimer, timedOut, timeoutMs}
    this.dead = false;
    this.nextRunId = 0;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    // The 20 MB snapshot is read per interpreter and not kept: memory matters more than 10 ms.
    // It is moved to the worker, not copied (a copy costs about 20 ms of every start).
    const snapshot = readSnapshot();
    this.worker = new Worker(WORKER_URL, {
      env: {},
      stdin: false,
      stdout: true,
      stderr: true,
      workerData: { ...config, snapshot, interruptBuffer: this.interruptBuffer },
      transferList: snapshot ? [snapshot.buffer] : [],
    });
    this.worker.stdout.on("data", (chunk) => log(`worker stdout: ${chunk.toString().trimEnd()}`));
    this.worker.stderr.on("data", (chunk) => log(`worker stderr: ${chunk.toString().trimEnd()}`));
    this.worker.on("message", (message) => this.onMessage(message));
    this.worker.on("error", (error) => this.onDeath(`the interpreter crashed: ${describeError(error)}`));
    this.worker.on("exit", (code) => this.onDeath(`the interpreter exited (code ${code})`));
  }

  onMessage(message) {
    if (message.type === "snapshot") {
      // The broker saves it where later interpreters (after a reset, a timeout or a crash) read it.
      config.makeSnapshot = false;
      send({ id: null, kind: "event", payload: { event: "snapshot", data: Buffer.from(message.data).toString("base64") } });
      return;
    }
    if (message.type === "snapshot-failed") {
      log(`memory snapshot unusable (${message.reason}); booting from scratch`);
      config.snapshotPath = null;
      return;
    }
    if (message.type === "fetch") {
      askBroker("fetch", message.request).then(
        (response) => this.worker.postMessage({ type: "fetched", fetchId: message.fetchId, response }),
        (error) => this.worker.postMessage({ type: "fetched", fetchId: message.fetchId, error: String(error?.message ?? error) }),
      );
      return;
    }
    if (message.type === "booted") {
      this.bootedFrom = message.from;
      const buffers = (Number(message.bufferBytes) || 0) / 1048576;
      log(`worker ${this.generation} booted from ${message.from} (${Math.round(message.ms)} ms after start; ${buffers.toFixed(1)} MiB of array buffers)`);
      return;
    }
    if (message.type === "ready") {
      this.version = message.version;
      log(`worker ${this.generation} ready ${Math.round(message.bootMs)} ms after start; ${Math.round(performance.now() - this.created)} ms after spawn`);
      this.resolveReady(message.version);
      return;
    }
    const run = this.current;
    if (!run || message.runId !== run.runId) return; // stale output from an abandoned run
    if (message.type === "started") {
      this.onStarted(run);
    } else if (message.type === "output") {
      outputs.push(run.id, message.stream, message.text);
    } else if (message.type === "done") {
      this.finishRun(message.outcome);
    } else if (message.type === "loaded") {
      this.current = null;
      stopTimers(run);
      send({ id: run.id, kind: "result", payload: { ...message.outcome, generation: this.generation } });
    }
  }

  execute(id, code, timeoutMs, notice = null) {
    const runId = ++this.nextRunId;
    const run = { id, runId, code, timedOut: false, timeoutMs, started: performance.now(), notice, begun: false };
    this.current = run;
    // The timeout starts when the worker starts the run; if it does not start promptly,
    // something left behind by an earlier call is holding the worker.
    run.stallTimer = setTimeout(() => this.onStall(run), STALL_MS);
    this.worker.postMessage({ type: "run", runId, code });
  }

  onStarted(run) {
    run.begun = true;
    clearTimeout(run.stallTimer);
    clearTimeout(run.stallGrace);
    run.started = performance.now();
    run.timer = setTimeout(() => this.onTimeout(run), run.timeoutMs);
  }

  onStall(run) {
    if (this.current !== run || run.begun) return;
    log(`run ${run.id} has not started after ${STALL_MS} ms: interrupting what holds the interpreter`);
    Atomics.store(this.interrupt, 0, SIGINT);
    run.stallGrace = setTimeout(() => {
      if (this.current !== run || run.begun) return;
      log(`run ${run.id} still blocked; replacing the interpreter`);
      this.current = null;
      replaceRuntime("stalled");
      const fresh = runtime;
      fresh.ready.then(
        () => fresh.execute(run.id, run.code, run.timeoutMs, STALL_NOTICE),
        (error) =>
          send({ id: run.id, kind: "error", payload: { code: "crashed", message: String(error?.message ?? error), stateReset: true } }),
      );
    }, config.graceMs);
  }

  loadPackages(id, names, timeoutMs, trees) {
    const runId = ++this.nextRunId;
    const run = { id, runId, started: performance.now() };
    this.current = run;
    run.timer = setTimeout(() => {
      if (this.current !== run) return;
      this.current = null;
      send({
        id,
        kind: "error",
        payload: { code: "timeout", message: `Loading packages took longer than ${timeoutMs} ms; the interpreter was restarted and all state was reset.`, stateReset: true },
      });
      replaceRuntime("package load timeout");
    }, timeoutMs);
    this.worker.postMessage({ type: "load", runId, names, trees });
  }

  onTimeout(run) {
    if (this.current !== run) return;
    run.timedOut = true;
    Atomics.store(this.interrupt, 0, SIGINT);
    // Python consumes the flag when it sees it; if the KeyboardInterrupt was swallowed
    // (a finalizer, an except clause), raise it again until the grace period ends.
    let signals = 1;
    run.resignal = setInterval(() => {
      if (this.current !== run) return clearInterval(run.resignal);
      if (Atomics.load(this.interrupt, 0) === 0) {
        signals += 1;
        Atomics.store(this.interrupt, 0, SIGINT);
      }
    }, 50);
    run.graceTimer = setTimeout(() => {
      clearInterval(run.resignal);
      if (this.current !== run) return;
      const pending = Atomics.load(this.interrupt, 0);
      log(`run ${run.id} ignored the interrupt (sent ${signals}, flag now ${pending}); ending the interpreter`);
      this.current = null;
      outputs.flush(run.id);
      send({
        id: run.id,
        kind: "error",
        payload: {
          code: "timeout",
          message: `Execution timed out after ${run.timeoutMs} ms and did not stop when interrupted; the interpreter was restarted and all state was reset.`,
          stateReset: true,
          durationMs: performance.now() - run.started,
        },
      });
      replaceRuntime("timeout");
    }, config.graceMs);
  }

  finishRun(outcome) {
    const run = this.current;
    this.current = null;
    stopTimers(run);
    outputs.flush(run.id);
    /** @type {import("./protocol.mjs").ExecuteReply} */
    const payload = {
      ok: outcome.ok,
      result: outcome.result,
      error: outcome.error,
      figures: outcome.figures,
      written: outcome.written,
      removed: outcome.removed,
      stdoutTruncatedChars: outcome.stdoutTruncatedChars,
      stderrTruncatedChars: outcome.stderrTruncatedChars,
      fatal: outcome.fatal,
      durationMs: performance.now() - run.started,
      generation: this.generation,
    };
    if (run.notice) {
      payload.notice = run.notice;
      payload.stateReset = true;
    }
    // The wasm heap never shrinks: after a MemoryError start clean rather than limp on.
    const exhausted = outcome?.error?.type === "MemoryError";
    if (exhausted) {
      payload.stateReset = true;
      payload.notice = MEMORY_NOTICE;
    }
    if (outcome?.fatal) {
      payload.stateReset = true;
      payload.notice = FATAL_NOTICE;
    }
    if (run.timedOut) {
      send({
        id: run.id,
        kind: "error",
        payload: {
          ...payload,
          code: "timeout",
          message: `Execution timed out after ${run.timeoutMs} ms and was interrupted; variables defined before this call are kept.`,
          stateReset: false,
        },
      });
    } else {
      send({ id: run.id, kind: "result", payload });
    }
    if (exhausted || outcome?.fatal) replaceRuntime(exhausted ? "memory exhausted" : "fatal error");
  }

  onDeath(reason) {
    if (this.dead) return;
    this.dead = true;
    this.rejectReady(new Error(reason));
    const run = this.current;
    this.current = null;
    if (run) {
      stopTimers(run);
      outputs.flush(run.id);
      send({
        id: run.id,
        kind: "error",
        payload: {
          code: "crashed",
          message: `${reason}; the interpreter was restarted and all state was reset.`,
          stateReset: true,
          durationMs: performance.now() - run.started,
        },
      });
    }
    if (runtime === this) replaceRuntime("crash");
  }

  terminate() {
    this.dead = true;
    this.worker.terminate();
  }
}

/** Every timer a run may hold (timeout, grace, re-interrupt, stall): one place to stop them all. */
function stopTimers(run) {
  clearTimeout(run.timer);
  clearTimeout(run.graceTimer);
  clearTimeout(run.stallTimer);
  clearTimeout(run.stallGrace);
  clearInterval(run.resignal);
}

/** Coalesces streamed output so a flood of small writes becomes a few frames. */
const outputs = {
  pending: new Map(), // id -> [{stream, text}]
  timer: null,
  push(id, stream, text) {
    let list = this.pending.get(id);
    if (!list) this.pending.set(id, (list = []));
    const last = list[list.length - 1];
    if (last && last.stream === stream) last.text += text;
    else list.push({ stream, text });
    this.timer ??= setTimeout(() => this.flushAll(), 10);
  },
  flush(id) {
    const list = this.pending.get(id);
    if (!list) return;
    this.pending.delete(id);
    for (const chunk of list) send({ id, kind: "output", payload: chunk });
  },
  flushAll() {
    this.timer = null;
    for (const id of [...this.pending.keys()]) this.flush(id);
  },
};

function readSnapshot() {
  if (!config.snapshotPath || config.makeSnapshot) return null;
  try {
    const data = fs.readFileSync(config.snapshotPath);
    // A file this big has an ArrayBuffer of its own, which can be moved; copy one that does not.
    const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
    return own ? new Uint8Array(data.buffer) : new Uint8Array(data);
  } catch (error) {
    if (error?.code !== "ENOENT") log(`could not read the memory snapshot: ${error?.message ?? error}`);
    return null;
  }
}

/**
 * With `config.spareInterpreter`, a second worker is restored from the snapshot while the
 * current one is idle, so a reset (or a replacement after a timeout or crash) swaps it in
 * instead of waiting for a boot. It costs one more interpreter's memory, hence optional.
 */
const SPARE_DELAY_MS = 1000; // after start-up or a swap, so the boot does not compete with the next calls
let spare = null;
let spareTimer = null;

function prepareSpareSoon() {
  if (!config?.spareInterpreter) return;
  clearTimeout(spareTimer);
  spareTimer = setTimeout(() => {
    if (spare && !spare.dead) return;
    const prepared = (spare = new WorkerRuntime());
    prepared.ready.then(
      () => log(`spare interpreter ${prepared.generation} ready`),
      () => {},
    );
  }, SPARE_DELAY_MS);
  spareTimer.unref();
}

function takeSpare() {
  const taken = spare && !spare.dead ? spare : null;
  spare = null;
  return taken;
}

function replaceRuntime(why, taken = takeSpare()) {
  if (runtime && !runtime.dead) runtime.terminate();
  runtime = taken ?? new WorkerRuntime();
  prepareSpareSoon();
  send({ id: null, kind: "event", payload: { event: "restarting", reason: why, generation: runtime.generation } });
  runtime.ready.then(
    (version) => send({ id: null, kind: "event", payload: { event: "ready", version, generation: runtime.generation } }),
    () => {},
  );
}

/** Requests this side makes of the broker (network fetches); replies carry the same string id. */
const brokerRequests = new Map();
let nextBrokerRequest = 0;
function askBroker(kind, payload) {
  const id = `n${++nextBrokerRequest}`;
  return new Promise((resolve, reject) => {
    brokerRequests.set(id, { resolve, reject });
    send({ id, kind, payload });
  });
}

/** The live worker once it has booted; one retry if it died while booting. */
async function readyRuntime() {
  let current = runtime;
  try {
    await current.ready;
  } catch {
    current = runtime; // it died while booting and was replaced; wait for the new one
    await current.ready;
  }
  if (current !== runtime || current.dead) throw new Error("the interpreter was restarted before the call could run");
  return current;
}

async function handle(message) {
  const { id, kind, payload } = message;
  if (typeof id === "string" && brokerRequests.has(id)) {
    const pending = brokerRequests.get(id);
    brokerRequests.delete(id);
    if (kind === "result") pending.resolve(payload);
    else pending.reject(new Error(payload?.message ?? "the broker refused the request"));
    return;
  }
  try {
    switch (kind) {
      case "init": {
        if (payload?.protocolVersion !== PROTOCOL_VERSION) {
          send({
            id,
            kind: "error",
            payload: {
              code: "protocol",
              message: `the broker speaks protocol version ${payload?.protocolVersion}, this Node runtime version ${PROTOCOL_VERSION}: the runtime files are from another mcp-pyodide release`,
            },
          });
          break;
        }
        config = payload;
        runtime = new WorkerRuntime();
        const version = (pyodideVersion = await runtime.ready);
        prepareSpareSoon();
        send({
          id,
          kind: "result",
          payload: {
            protocolVersion: PROTOCOL_VERSION,
            pyodideVersion: version,
            nodeVersion: process.version,
            generation: runtime.generation,
            bootedFrom: runtime.bootedFrom ?? "",
          },
        });
        break;
      }
      case "execute": {
        const current = await readyRuntime();
        current.execute(id, payload.code, payload.timeoutMs);
        break;
      }
      case "load-packages": {
        const current = await readyRuntime();
        current.loadPackages(id, payload.names, payload.timeoutMs ?? 300000, payload.trees ?? []);
        break;
      }
      case "reset": {
        // Answered once the old interpreter is gone: its state cannot outlive this reply. The new
        // one boots meanwhile (or was the spare, already booted); the next call waits for it.
        if (runtime && !runtime.dead) runtime.terminate();
        const taken = takeSpare();
        send({ id, kind: "result", payload: { pyodideVersion, generation: taken?.generation ?? generation + 1 } });
        replaceRuntime("requested", taken); // after the reply: starting a worker reads the 20 MB snapshot
        break;
      }
      case "ping":
        send({ id, kind: "result", payload: { generation: runtime?.generation ?? 0 } });
        break;
      default:
        throw new Error(`unknown request kind ${JSON.stringify(kind)}`);
    }
  } catch (error) {
    send({ id, kind: "error", payload: { code: "runtime", message: String(error?.message ?? error) } });
  }
}

// The broker closing our stdin means it is gone: never outlive it. Not process.exit(): in
// Node's platform shutdown it can deadlock after heavy JIT work (nodejs/node#54918, seen here
// with Pyodide), which would leave this process running for good. Nothing needs a clean exit.
const leave = () => process.kill(process.pid, "SIGKILL");
readFrames(process.stdin, (message) => void handle(message), leave);
process.stdout.on("error", leave);
