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

const MAX_FRAME = 256 * 1024 * 1024;

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
