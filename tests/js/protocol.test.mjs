// Unit tests for the Node side of the wire (run by tests/test_js.py with `node --test`).
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { PROTOCOL_VERSION, encodeFrame, readFrames, sendFrame } from "../../node_runtime/protocol.mjs";

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

test("sendFrame writes exactly one encoded frame", async () => {
  const stream = new PassThrough();
  sendFrame(stream, { id: null, kind: "event", payload: { event: "ready" } });
  stream.end();
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.deepEqual(Buffer.concat(chunks), encodeFrame({ id: null, kind: "event", payload: { event: "ready" } }));
});
