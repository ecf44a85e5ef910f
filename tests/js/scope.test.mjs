// Run-scoped scheduling (node_runtime/scope.mjs), on a stand-in global object so the test
// runner's own timers and promises are untouched.
import assert from "node:assert/strict";
import { test } from "node:test";
import { RunScope, SCHEDULING_ENTRY_POINTS, installScheduling } from "../../node_runtime/scope.mjs";

const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

function sandboxGlobal() {
  class ScopedPromise extends Promise {}
  class ScopedSignal extends AbortSignal {}
  const global = {
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    setImmediate,
    queueMicrotask,
    process: { nextTick: process.nextTick.bind(process) },
    Promise: ScopedPromise,
    AbortSignal: ScopedSignal,
    AbortController,
    DOMException,
    FinalizationRegistry,
    MessageChannel,
    BroadcastChannel,
    Atomics: { waitAsync: () => {} },
    Function,
    requestAnimationFrame: () => {},
  };
  const scope = new RunScope();
  installScheduling(global, scope);
  return { global, scope };
}

test("a timer fires inside the run that set it, never after it", async () => {
  const { global, scope } = sandboxGlobal();
  const fired = [];
  scope.begin(1);
  global.setTimeout(() => fired.push("in-run"), 1);
  await tick(20);
  global.setTimeout(() => fired.push("after-run"), 1);
  scope.end();
  await tick(20);
  scope.begin(2); // nor inside a later run
  await tick(20);
  scope.end();
  assert.deepEqual(fired, ["in-run"]);
});

test("the worker's own timers (scheduled outside any run) always fire", async () => {
  const { global } = sandboxGlobal();
  let fired = false;
  global.setTimeout(() => (fired = true), 1);
  await tick(20);
  assert.equal(fired, true);
});

test("an interval is cleared the first time it fires outside its run", async () => {
  const { global, scope } = sandboxGlobal();
  let count = 0;
  scope.begin(1);
  global.setInterval(() => (count += 1), 2);
  await tick(30);
  scope.end();
  const atEnd = count;
  await tick(30);
  assert.ok(atEnd > 0);
  assert.equal(count, atEnd);
});

test("strings are not accepted as callbacks", () => {
  const { global, scope } = sandboxGlobal();
  scope.begin(1);
  assert.throws(() => global.setTimeout("globalThis.x = 1", 0), TypeError);
  assert.throws(() => global.setInterval("globalThis.x = 1", 0), TypeError);
});

test("setImmediate, queueMicrotask and nextTick are run-scoped", async () => {
  const { global, scope } = sandboxGlobal();
  const fired = [];
  scope.begin(1);
  global.setImmediate(() => fired.push("immediate"));
  global.queueMicrotask(() => fired.push("microtask"));
  global.process.nextTick(() => fired.push("tick"));
  scope.end(); // the run ends synchronously, before any of them is due
  await tick(20);
  assert.deepEqual(fired, []);
});

test("a promise reaction the guest chose is dropped after its run; the runtime's closures still run", async () => {
  const { global, scope } = sandboxGlobal();
  const fired = [];
  const native = Array.prototype.push.bind(fired, "bound-native");
  scope.begin(1);
  let resolve;
  const pending = new global.Promise((r) => (resolve = r));
  pending.then(native);
  pending.then(() => fired.push("closure"));
  scope.end();
  resolve("value");
  await tick(20);
  assert.deepEqual(fired, ["closure"]);
});

test("promise reactions inside their own run behave normally", async () => {
  const { global, scope } = sandboxGlobal();
  scope.begin(1);
  const seen = await new Promise((done) => {
    global.Promise.resolve(41)
      .then((v) => v + 1)
      .then(done);
  });
  scope.end();
  assert.equal(seen, 42);
});

test("Promise.prototype.then cannot be put back by the guest", () => {
  const { global } = sandboxGlobal();
  const descriptor = Object.getOwnPropertyDescriptor(global.Promise.prototype, "then");
  assert.equal(descriptor.writable, false);
  assert.equal(descriptor.configurable, false);
});

test("AbortSignal.timeout aborts only inside the run that asked", async () => {
  const { global, scope } = sandboxGlobal();
  scope.begin(1);
  const inRun = global.AbortSignal.timeout(1);
  await tick(20);
  const late = global.AbortSignal.timeout(1);
  scope.end();
  await tick(20);
  assert.equal(inRun.aborted, true);
  assert.equal(inRun.reason.name, "TimeoutError");
  assert.equal(late.aborted, false);
});

test("work deferred between calls runs at the start of the next run, after the interpreter reopens", () => {
  const { scope } = sandboxGlobal();
  const events = [];
  scope.onBegin = () => events.push("open");
  scope.onEnd = () => events.push("close");
  scope.defer(() => events.push("finalizer"));
  assert.deepEqual(events, []);
  scope.begin(3);
  scope.end();
  assert.deepEqual(events, ["open", "finalizer", "close"]);
});

test("an exception in a callback goes to the run, not the worker", async () => {
  const { global, scope } = sandboxGlobal();
  const errors = [];
  scope.onCallbackError = (error) => errors.push(error.message);
  scope.begin(1);
  global.setTimeout(() => {
    throw new Error("boom");
  }, 1);
  await tick(20);
  scope.end();
  assert.deepEqual(errors, ["boom"]);
});

test("the scoped FinalizationRegistry does not lead back to the real one", () => {
  const { global } = sandboxGlobal();
  const registry = new global.FinalizationRegistry(() => {});
  assert.equal(registry.constructor, global.FinalizationRegistry);
  assert.notEqual(global.FinalizationRegistry, FinalizationRegistry);
  assert.equal(Object.getPrototypeOf(global.FinalizationRegistry), Function.prototype);
  registry.register({}, "held");
});

test("the entry points that can only be removed are gone, and each one is listed", () => {
  const { global } = sandboxGlobal();
  for (const name of ["MessageChannel", "BroadcastChannel", "requestAnimationFrame"]) {
    assert.equal(name in global, false, name);
    assert.ok(name in SCHEDULING_ENTRY_POINTS, name);
  }
  assert.equal("waitAsync" in global.Atomics, false);
});
