import assert from "node:assert/strict";
import { DecodeError } from "../../lib/protocol/codec.ts";
import {
  decodeSessionFrame,
  encodeSessionFrame,
  FrameType,
  isMessageId,
  MAX_TEXT_BYTES,
  newMessageId,
  type SessionFrame,
} from "../../lib/protocol/messages.ts";

const id = "00112233445566778899aabbccddeeff";

Deno.test("session frames round-trip", () => {
  const frames: SessionFrame[] = [
    { type: FrameType.READY, seq: 0, sentAt: 1 },
    { type: FrameType.MSG, seq: 1, sentAt: 1_700_000_000_000, id, text: "héllo ✓ 👋" },
    { type: FrameType.MSG, seq: 2 ** 40, sentAt: 0, id, text: "" },
    { type: FrameType.ACK, seq: 3, sentAt: 5, ids: [id, newMessageId()] },
    { type: FrameType.PING, seq: 4, sentAt: 6 },
    { type: FrameType.PONG, seq: 5, sentAt: 7 },
    { type: FrameType.BYE, seq: 6, sentAt: 8, reason: "bye" },
  ];
  for (const f of frames) assert.deepEqual(decodeSessionFrame(encodeSessionFrame(f)), f);
});

Deno.test("a MSG frame has a fixed layout", () => {
  const bytes = encodeSessionFrame({ type: FrameType.MSG, seq: 1, sentAt: 2, id, text: "hi" });
  assert.deepEqual(
    [...bytes],
    [
      2,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      1,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      2,
      ...[
        0x00,
        0x11,
        0x22,
        0x33,
        0x44,
        0x55,
        0x66,
        0x77,
        0x88,
        0x99,
        0xaa,
        0xbb,
        0xcc,
        0xdd,
        0xee,
        0xff,
      ],
      104,
      105,
    ],
  );
});

Deno.test("message ids are 32 hex digits and unique", () => {
  const ids = new Set(Array.from({ length: 1000 }, newMessageId));
  assert.equal(ids.size, 1000);
  for (const i of ids) assert.ok(isMessageId(i));
  assert.ok(!isMessageId("xyz"));
});

Deno.test("bad session frames are refused with DecodeError", () => {
  const good = encodeSessionFrame({ type: FrameType.ACK, seq: 1, sentAt: 2, ids: [id] });
  const cases: Uint8Array[] = [
    new Uint8Array(0),
    good.subarray(0, 10),
    good.subarray(0, good.length - 1), // ACK not a multiple of 16
    encodeSessionFrame({ type: FrameType.PING, seq: 1, sentAt: 1 }).slice().fill(9, 0, 1), // type 9
    new Uint8Array([...encodeSessionFrame({ type: FrameType.PING, seq: 1, sentAt: 1 }), 0]),
    new Uint8Array([2, ...new Uint8Array(16), ...new Uint8Array(16), 0xff]), // invalid UTF-8
    new Uint8Array([4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, ...new Uint8Array(8)]), // seq > 2^53
  ];
  for (const c of cases) assert.throws(() => decodeSessionFrame(c), DecodeError);
  for (let i = 0; i < 2000; i++) {
    const junk = crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 64)));
    try {
      decodeSessionFrame(junk);
    } catch (e) {
      assert.ok(e instanceof DecodeError, String(e));
    }
  }
});

Deno.test("encoding refuses over-long text and bad ids", () => {
  assert.throws(() =>
    encodeSessionFrame({
      type: FrameType.MSG,
      seq: 1,
      sentAt: 1,
      id,
      text: "x".repeat(MAX_TEXT_BYTES + 1),
    }), RangeError);
  assert.throws(
    () => encodeSessionFrame({ type: FrameType.MSG, seq: 1, sentAt: 1, id: "nope", text: "" }),
    RangeError,
  );
});
