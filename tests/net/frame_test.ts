import assert from "node:assert/strict";
import {
  DEFAULT_MAX_FRAME_SIZE,
  encodeFrame,
  encodeFrames,
  FrameDecoder,
  FrameError,
} from "../../lib/net/frame.ts";

const bytes = (...xs: number[]) => new Uint8Array(xs);

Deno.test("encodeFrame prefixes a big-endian u32 length", () => {
  assert.deepEqual(encodeFrame(bytes(104, 105)), bytes(0, 0, 0, 2, 104, 105));
  assert.deepEqual(encodeFrame(new Uint8Array(0)), bytes(0, 0, 0, 0));
  const big = encodeFrame(new Uint8Array(0x010203));
  assert.deepEqual(big.subarray(0, 4), bytes(0, 1, 2, 3));
});

Deno.test("encodeFrame refuses payloads over the limit", () => {
  assert.throws(() => encodeFrame(new Uint8Array(11), { maxFrameSize: 10 }), FrameError);
  assert.throws(() => encodeFrames([new Uint8Array(1), new Uint8Array(11)], { maxFrameSize: 10 }));
});

function payloads(): Uint8Array[] {
  const out = [new Uint8Array(0), bytes(1), bytes(2, 3, 4, 5, 6)];
  for (const n of [3, 4, 5, 255, 256, 1000]) {
    out.push(crypto.getRandomValues(new Uint8Array(n)));
  }
  return out;
}

Deno.test("decoder returns frames split at every byte boundary", () => {
  const ps = payloads();
  const stream = encodeFrames(ps);
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new FrameDecoder();
    const got = [...d.push(stream.slice(0, cut)), ...d.push(stream.slice(cut))];
    assert.deepEqual(got, ps, `cut at ${cut}`);
    assert.equal(d.buffered, 0);
  }
});

Deno.test("decoder handles byte-at-a-time and two-way splits", () => {
  const ps = payloads();
  const stream = encodeFrames(ps);
  const d = new FrameDecoder();
  const got: Uint8Array[] = [];
  for (const b of stream) got.push(...d.push(bytes(b)));
  assert.deepEqual(got, ps);
  for (let a = 0; a < stream.length; a += 7) {
    for (let b = a; b <= stream.length; b += 13) {
      const d2 = new FrameDecoder();
      const out = [
        ...d2.push(stream.slice(0, a)),
        ...d2.push(stream.slice(a, b)),
        ...d2.push(stream.slice(b)),
      ];
      assert.deepEqual(out, ps, `cuts at ${a}, ${b}`);
    }
  }
});

Deno.test("decoder returns many merged frames from one chunk", () => {
  const ps = Array.from({ length: 500 }, (_, i) => new Uint8Array(i % 17).fill(i & 0xff));
  assert.deepEqual(new FrameDecoder().push(encodeFrames(ps)), ps);
});

Deno.test("decoder refuses an oversized length as soon as the header arrives", () => {
  const d = new FrameDecoder({ maxFrameSize: 1024 });
  assert.throws(
    () => d.push(bytes(0, 0, 4, 1)),
    (e) => e instanceof FrameError && e.reason === "too-large",
  );
  const d2 = new FrameDecoder();
  assert.throws(() => d2.push(bytes(0xff, 0xff)).concat(d2.push(bytes(0xff, 0xff))), FrameError);
  assert.equal(DEFAULT_MAX_FRAME_SIZE, 1 << 20);
});

Deno.test("decoder accepts a frame of exactly the maximum size", () => {
  const p = crypto.getRandomValues(new Uint8Array(4096));
  const d = new FrameDecoder({ maxFrameSize: 4096 });
  assert.deepEqual(d.push(encodeFrame(p, { maxFrameSize: 4096 })), [p]);
});

Deno.test("decoder limit can be raised after authentication", () => {
  const d = new FrameDecoder({ maxFrameSize: 8 });
  d.maxFrameSize = 100;
  assert.equal(d.push(encodeFrame(new Uint8Array(50))).length, 1);
});
