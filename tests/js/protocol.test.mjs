// Unit tests for the Node side of the wire (run by tests/test_js.py with `node --test`).
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { FramePipe, MAIN_WRITER, PROTOCOL_VERSION, encodeFrame, readFrames } from "../../node_runtime/protocol.mjs";

const PROTOCOL_URL = new URL("../../node_runtime/protocol.mjs", import.meta.url).href;

function scratchFile() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "frames-"));
  return path.join(dir, "out");
}

/** Every frame in `bytes`, decoded; fails on a torn one. */
function framesIn(bytes) {
  const seen = [];
  let at = 0;
  while (at < bytes.length) {
    const size = bytes.readUInt32BE(at);
    seen.push(JSON.parse(bytes.subarray(at + 4, at + 4 + size).toString("utf8")));
    at += 4 + size;
  }
  assert.equal(at, bytes.length);
  return seen;
}

test("a frame is a 4-byte big-endian length, then UTF-8 JSON", () => {
  const frame = encodeFrame({ id: 1, kind: "result", payload: { text: "é" } });
  const size = frame.readUInt32BE(0);
  assert.equal(size, frame.length - 4);
  assert.deepEqual(JSON.parse(frame.subarray(4).toString("utf8")), { id: 1, kind: "result", payload: { text: "é" } });
});

test("frames split across chunks and joined in one chunk are all read, in order", async () => {
  const stream = new PassThrough();
  const seen = [];
  const ended = new Promise((resolve) => readFrames(stream, (m) => seen.push(m), resolve));
  const bytes = Buffer.concat([encodeFrame({ id: 1 }), encodeFrame({ id: 2 }), encodeFrame({ id: 3 })]);
  for (let i = 0; i < bytes.length; i += 3) stream.write(bytes.subarray(i, i + 3));
  stream.end();
  await ended;
  assert.deepEqual(seen.map((m) => m.id), [1, 2, 3]);
});

test("the protocol version is a positive whole number", () => {
  assert.ok(Number.isInteger(PROTOCOL_VERSION) && PROTOCOL_VERSION > 0);
});

test("an oversized frame is refused before it is buffered", () => {
  const stream = new PassThrough();
  const seen = [];
  readFrames(stream, (m) => seen.push(m), () => {});
  const head = Buffer.alloc(4);
  head.writeUInt32BE(512 * 1024 * 1024, 0);
  assert.throws(() => stream.emit("data", head), /exceeds the limit/);
  assert.equal(seen.length, 0);
});

test("FramePipe.send writes exactly one encoded frame and leaves the lock free", () => {
  const file = scratchFile();
  const fd = fs.openSync(file, "w");
  const pipe = new FramePipe(fd, new SharedArrayBuffer(4), 2);
  pipe.send({ id: null, kind: "event", payload: { event: "ready" } });
  fs.closeSync(fd);
  assert.deepEqual(fs.readFileSync(file), encodeFrame({ id: null, kind: "event", payload: { event: "ready" } }));
  assert.equal(pipe.holder(), 0);
});

test("the lock has one holder at a time, and only a holder's own end breaks it", () => {
  const lock = new SharedArrayBuffer(4);
  const main = new FramePipe(1, lock, MAIN_WRITER);
  const worker = new FramePipe(1, lock, 2);
  assert.ok(worker.tryTake());
  assert.equal(main.tryTake(), false);
  main.breakFor(3); // another worker's end: not this holder's
  assert.equal(main.holder(), 2);
  main.breakFor(2);
  assert.ok(main.tryTake());
  assert.equal(worker.holder(), MAIN_WRITER);
  main.release();
});

test("a worker's frame waits while the main thread holds the lock, and no frame is torn", async () => {
  const file = scratchFile();
  const fd = fs.openSync(file, "w");
  const lock = new SharedArrayBuffer(4);
  const main = new FramePipe(fd, lock, MAIN_WRITER);
  assert.ok(main.tryTake());
  const source = `
    const { workerData, parentPort } = require("node:worker_threads");
    import(workerData.url).then(({ FramePipe }) => {
      const pipe = new FramePipe(workerData.fd, workerData.lock, 2);
      parentPort.postMessage("writing");
      for (let i = 0; i < 20; i++) pipe.send({ id: i, kind: "output", payload: { text: "w".repeat(100000) } });
      parentPort.postMessage("done");
    });`;
  const worker = new Worker(source, { eval: true, workerData: { url: PROTOCOL_URL, fd, lock } });
  const done = new Promise((resolve) => worker.on("message", (m) => m === "done" && resolve()));
  await new Promise((resolve) => worker.once("message", resolve));
  // Give the worker time to reach its first write: without the lock, it would land now.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(fs.fstatSync(fd).size, 0, "the worker wrote while the main thread held the lock");
  main.writeAll(encodeFrame({ id: "main", kind: "event", payload: {} }));
  main.release();
  await done;
  await worker.terminate();
  fs.closeSync(fd);
  const ids = framesIn(fs.readFileSync(file)).map((m) => m.id);
  assert.deepEqual(ids, ["main", ...Array.from({ length: 20 }, (_, i) => i)]);
});
