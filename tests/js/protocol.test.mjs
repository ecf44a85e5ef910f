// Frame encoding and decoding between the broker and the Node process (node_runtime/protocol.mjs).
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { encodeFrame, readFrames, sendFrame } from "../../node_runtime/protocol.mjs";

function collect() {
  const stream = new EventEmitter();
  const messages = [];
  let ended = 0;
  readFrames(stream, (message) => messages.push(message), () => (ended += 1));
  return { stream, messages, ended: () => ended };
}

test("a frame is a 4-byte big-endian length and UTF-8 JSON", () => {
  const frame = encodeFrame({ id: 1, kind: "execute", payload: { code: "print('é')" } });
  const size = frame.readUInt32BE(0);
  assert.equal(size, frame.length - 4);
  assert.deepEqual(JSON.parse(frame.subarray(4).toString("utf8")), { id: 1, kind: "execute", payload: { code: "print('é')" } });
});

test("frames split across chunks and packed into one chunk all arrive, in order", () => {
  const { stream, messages } = collect();
  const all = Buffer.concat([encodeFrame({ id: 1 }), encodeFrame({ id: 2, text: "x".repeat(1000) }), encodeFrame({ id: 3 })]);
  for (let at = 0; at < all.length; at += 7) stream.emit("data", all.subarray(at, at + 7));
  assert.deepEqual(
    messages.map((m) => m.id),
    [1, 2, 3],
  );
  assert.equal(messages[1].text.length, 1000);
});

test("an oversized frame is refused before it is buffered", () => {
  const { stream, messages } = collect();
  const head = Buffer.alloc(4);
  head.writeUInt32BE(512 * 1024 * 1024, 0);
  assert.throws(() => stream.emit("data", head), /exceeds the limit/);
  assert.equal(messages.length, 0);
});

test("the end of the stream is reported", () => {
  const { stream, ended } = collect();
  stream.emit("end");
  assert.ok(ended() >= 1);
});

test("sendFrame writes exactly one encoded frame", async () => {
  const stream = new PassThrough();
  sendFrame(stream, { id: null, kind: "event", payload: { event: "ready" } });
  stream.end();
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.deepEqual(Buffer.concat(chunks), encodeFrame({ id: null, kind: "event", payload: { event: "ready" } }));
});
