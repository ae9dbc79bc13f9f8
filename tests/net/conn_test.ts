import assert from "node:assert/strict";
import { ConnectionClosedError, FramedConn } from "../../lib/net/conn.ts";
import { FrameError } from "../../lib/net/frame.ts";

async function pair(opts: { maxQueuedBytes?: number; maxFrameSize?: number } = {}) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const a = new FramedConn(
    await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
    opts,
  );
  const b = new FramedConn(await accepted, opts);
  listener.close();
  return { a, b };
}

/** Runs `body` with a connected pair and closes both ends after it, whatever happens. */
async function withPair(
  opts: { maxQueuedBytes?: number; maxFrameSize?: number },
  body: (a: FramedConn, b: FramedConn) => Promise<void>,
): Promise<void> {
  const { a, b } = await pair(opts);
  try {
    await body(a, b);
  } finally {
    a.close();
    b.close();
  }
}

Deno.test("FramedConn: payloads arrive whole and in order; a burst comes as one batch", () =>
  withPair({}, async (a, b) => {
    const sent = Array.from({ length: 100 }, (_, i) => new Uint8Array(i * 37).fill(i));
    await Promise.all(sent.map((p) => a.write(p)));
    const got: Uint8Array[] = [];
    while (got.length < sent.length) got.push(...(await b.readBatch())!);
    assert.deepEqual(got, sent);
    a.close();
    assert.equal(await b.read(), null, "end of stream after the peer closed");
  }));

Deno.test("FramedConn: a payload read earlier is not changed by later reads", () =>
  withPair({}, async (a, b) => {
    // Each payload is read on its own (its write is awaited first), so each comes from another
    // read of the socket: payloads must not be views of a buffer that the next read reuses.
    const kept: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) {
      await a.write(new Uint8Array(1000 - i).fill(i));
      kept.push((await b.read())!);
    }
    for (const [i, p] of kept.entries()) {
      assert.deepEqual(p, new Uint8Array(1000 - i).fill(i), `payload ${i}`);
    }
  }));

Deno.test("FramedConn: close() during a read makes it return null", () =>
  withPair({}, async (_a, b) => {
    const reading = b.read();
    await new Promise((r) => setTimeout(r, 20));
    b.close();
    assert.equal(await reading, null);
  }));

Deno.test("FramedConn: an oversized frame from the peer is a FrameError", () =>
  withPair({ maxFrameSize: 1024 }, async (a, b) => {
    b.setMaxFrameSize(16);
    await a.write(new Uint8Array(100));
    await assert.rejects(() => b.read(), FrameError);
  }));

Deno.test("FramedConn: a peer that never reads cannot make us buffer without end", () =>
  withPair({ maxQueuedBytes: 256 * 1024 }, async (a, _b) => {
    const chunk = new Uint8Array(64 * 1024);
    let error: unknown = null;
    const writes: Promise<void>[] = [];
    // b never reads: the kernel buffers fill, then our queue, then the connection is closed.
    for (let i = 0; i < 2000 && error === null; i++) {
      const w = a.write(chunk);
      writes.push(w.catch((e) => {
        error ??= e;
      }));
      if (i % 16 === 15) await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(writes);
    assert.ok(error instanceof ConnectionClosedError, `got ${error}`);
    assert.match(error.message, /not reading/);
    assert.ok(a.closed);
  }));
