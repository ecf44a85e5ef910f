// Run scopes: no guest code runs between calls.
//
// Guest code (user Python, and JavaScript functions it hands to the scheduler) may only run
// while a call is in progress. Two fences make that a property of the worker rather than of
// each API user code might find:
//
// 1. Scheduling. Every way to ask for a callback later that is reachable in the worker is
//    replaced, before Pyodide loads, by a run-scoped version (SCHEDULING_ENTRY_POINTS lists
//    them). A callback remembers the run that scheduled it and is dropped if it fires after
//    that run ended, or inside another run. Callbacks scheduled by the worker itself outside
//    any run (owner 0) always fire.
// 2. Entry into Python. `onEnd` and `onBegin` close and reopen Python itself (the worker
//    installs a trace function that refuses every Python frame between calls), so even a
//    callback the worker did not schedule (a Pyodide API that finishes in the background
//    and calls back) cannot run Python code between calls. Python finalizers (PyProxy
//    garbage collection, which may run `__del__`) that come due between calls are deferred
//    to the start of the next run.
//
// Nothing here depends on Pyodide; tests/js/scope.test.mjs exercises it with plain functions.

/** Every scheduling entry point of the worker's globals and how it is handled. */
export const SCHEDULING_ENTRY_POINTS = Object.freeze({
  setTimeout: "run-scoped",
  setInterval: "run-scoped (cleared when it fires outside its run)",
  setImmediate: "run-scoped (also Pyodide's scheduleCallback and Emscripten's setImmediateWrapped)",
  queueMicrotask: "run-scoped",
  "process.nextTick": "run-scoped",
  "Promise.prototype.then":
    "reactions the guest chose (native: Python callables, bound functions) run-scoped; catch, finally, Promise.all/race/any use then",
  "AbortSignal.timeout": "rebuilt on the run-scoped setTimeout",
  FinalizationRegistry: "cleanups of a guest registry run-scoped; the worker's deferred to the next run",
  MessageChannel: "removed",
  BroadcastChannel: "removed",
  MessagePort: "kept (cannot be constructed; only MessageChannel/BroadcastChannel/worker_threads make ports)",
  "Atomics.waitAsync": "removed",
  requestAnimationFrame: "absent in Node; Emscripten's fallback uses the run-scoped setTimeout",
  "Module.safeSetTimeout / _emscripten_set_timeout / _emscripten_set_interval / emscripten_async_call":
    "call the global setTimeout/setInterval: run-scoped",
  "pyodide webloop (asyncio call_soon/call_later, tasks)": "through scheduleCallback: run-scoped",
  "Emscripten callUserCallback": "not a scheduler: runs only when its (scoped) caller runs",
  WeakRef: "no callbacks of its own; collection is only reported through FinalizationRegistry",
});

const PENDING_FOREVER = new Promise(() => {});

/** Who may run now: the current run (0 = none) and whether the worker itself is working. */
export class RunScope {
  constructor() {
    this.run = 0;
    this.trusted = 0;
    this.deferred = [];
    this.onCallbackError = () => {};
    this.onBegin = () => {}; // reopen Python (called before deferred finalizers run)
    this.onEnd = () => {}; // close Python again
  }

  /** A callback scheduled by `owner` may run now. */
  live(owner) {
    return owner === 0 || owner === this.run;
  }

  /** Python may be entered now: a run is in progress, or the worker itself is at work. */
  get open() {
    return this.run !== 0 || this.trusted > 0;
  }

  begin(runId) {
    this.run = runId;
    this.onBegin();
    const due = this.deferred.splice(0);
    for (const task of due) this.guard(task);
  }

  end() {
    this.run = 0;
    this.onEnd();
  }

  /** Run `action` as the worker (not guest code), e.g. while booting. */
  trust(action) {
    this.trusted += 1;
    try {
      return action();
    } finally {
      this.trusted -= 1;
    }
  }

  /** Run `task` at the start of the next run (or now, if one is in progress). */
  defer(task) {
    if (this.open) this.guard(task);
    else this.deferred.push(task);
  }

  guard(task, args = []) {
    try {
      return task(...args);
    } catch (error) {
      // An exception in a callback belongs to the run's stderr, not to the worker.
      this.onCallbackError(error);
      return undefined;
    }
  }

  /** `callback` bound to the run scheduling it now; it does nothing once that run is over. */
  bind(callback, args = []) {
    if (typeof callback !== "function") {
      throw new TypeError("the callback must be a function (strings are not run in the sandbox)");
    }
    const owner = this.run;
    return () => {
      if (!this.live(owner)) {
        this.release(callback);
        return;
      }
      this.guard(callback, args);
    };
  }

  /** A dropped Python callback is destroyed, but only inside a run (destroying may run __del__). */
  release(callback) {
    if (typeof callback.destroy === "function") this.defer(() => callback.destroy());
  }
}

function define(owner, name, value) {
  Object.defineProperty(owner, name, { value, writable: false, configurable: false, enumerable: false });
}

/** Replace every scheduling entry point of `global` (a worker's globalThis) with a run-scoped one. */
export function installScheduling(global, scope) {
  const timer = (set) =>
    function (callback, delay, ...args) {
      return set(scope.bind(callback, args), delay);
    };
  const realSetInterval = global.setInterval;
  const realClearInterval = global.clearInterval;
  function setInterval(callback, delay, ...args) {
    if (typeof callback !== "function") {
      throw new TypeError("the callback must be a function (strings are not run in the sandbox)");
    }
    const owner = scope.run;
    const handle = realSetInterval(() => {
      if (!scope.live(owner)) {
        realClearInterval(handle);
        scope.release(callback);
        return;
      }
      scope.guard(callback, args);
    }, delay);
    return handle;
  }
  const realSetTimeout = global.setTimeout;
  const setTimeout = timer(realSetTimeout);
  global.setTimeout = setTimeout;
  global.setInterval = setInterval;
  if (typeof global.setImmediate === "function") {
    const realSetImmediate = global.setImmediate;
    global.setImmediate = (callback, ...args) => realSetImmediate(scope.bind(callback, args));
  }
  const realQueueMicrotask = global.queueMicrotask;
  global.queueMicrotask = (callback) => realQueueMicrotask(scope.bind(callback));
  if (typeof global.process?.nextTick === "function") {
    const realNextTick = global.process.nextTick.bind(global.process);
    global.process.nextTick = (callback, ...args) => realNextTick(scope.bind(callback, args));
  }

  // A reaction due after its run ended is dropped when the guest could have chosen it: a
  // native function (a Python callable, a bound function, a builtin). The runtime's own
  // closures (Pyodide's loader chains) still run, so its bookkeeping cannot wedge; any
  // Python they call is refused by the closed interpreter (see onEnd).
  const realThen = global.Promise.prototype.then;
  const toSource = global.Function.prototype.toString;
  const guestChosen = (handler) => {
    try {
      return toSource.call(handler).endsWith("{ [native code] }");
    } catch {
      return true;
    }
  };
  const reaction = (handler) => {
    if (typeof handler !== "function" || scope.run === 0) return handler;
    const owner = scope.run;
    return (value) => (scope.live(owner) || !guestChosen(handler) ? handler(value) : PENDING_FOREVER);
  };
  define(global.Promise.prototype, "then", function then(onFulfilled, onRejected) {
    return realThen.call(this, reaction(onFulfilled), reaction(onRejected));
  });

  if (typeof global.AbortSignal === "function") {
    const Controller = global.AbortController;
    define(global.AbortSignal, "timeout", function timeout(ms) {
      const controller = new Controller();
      const handle = setTimeout(() => {
        const reason = new global.DOMException("The operation was aborted due to timeout", "TimeoutError");
        controller.abort(reason);
      }, ms);
      handle?.unref?.();
      return controller.signal;
    });
  }

  if (typeof global.FinalizationRegistry === "function") {
    global.FinalizationRegistry = scopedFinalizationRegistry(global.FinalizationRegistry, scope);
  }
  // The constructors that make message ports. MessagePort itself stays (Node's Response and web
  // streams look it up; it cannot be constructed), but nothing in reach can make one.
  for (const name of ["MessageChannel", "BroadcastChannel"]) delete global[name];
  if (global.Atomics) delete global.Atomics.waitAsync;
  delete global.requestAnimationFrame;
}

/**
 * A FinalizationRegistry whose cleanups respect run scopes. The real registry stays private,
 * so `registry.constructor` leads back here and nowhere else.
 */
function scopedFinalizationRegistry(Real, scope) {
  return class FinalizationRegistry {
    #inner;

    constructor(cleanup) {
      if (typeof cleanup !== "function") throw new TypeError("cleanup must be a function");
      const owner = scope.run;
      this.#inner = new Real((held) => {
        if (owner !== 0) {
          if (scope.live(owner)) scope.guard(cleanup, [held]);
        } else {
          // The worker's own registry (Pyodide's PyProxy finalizer): a decref may run __del__.
          scope.defer(() => cleanup(held));
        }
      });
    }

    register(target, held, token) {
      return this.#inner.register(target, held, token);
    }

    unregister(token) {
      return this.#inner.unregister(token);
    }
  };
}
