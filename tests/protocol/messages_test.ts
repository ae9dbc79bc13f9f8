import assert from "node:assert/strict";
import { DecodeError } from "../../lib/protocol/codec.ts";
import { FernetSync, generateKey } from "../../lib/crypto/fernet_sync.ts";
import {
  BATCH_BYTES,
  decodeSessionFrame,
  encodeChatMessage,
  encodeSessionFrame,
  FrameType,
  isMessageId,
  MAX_BATCH_MESSAGES,
  MAX_SESSION_FRAME_BYTES,
  MAX_TEXT_BYTES,
  MessageBatch,
  newMessageId,
  type SessionFrame,
} from "../../lib/protocol/messages.ts";

const id = "00112233445566778899aabbccddeeff";

Deno.test("session frames round-trip", () => {
  const frames: SessionFrame[] = [
    { type: FrameType.READY, seq: 0, sentAt: 1 },
    {
      type: FrameType.MSG,
      seq: 1,
      sentAt: 1_700_000_000_000,
      messages: [{ id, text: "héllo ✓ 👋", sentAt: 1_700_000_000_000 }],
    },
    {
      type: FrameType.MSG,
      seq: 2 ** 40,
      sentAt: 0,
      messages: [{ id, text: "", sentAt: 0 }, { id: newMessageId(), text: "two", sentAt: 2 ** 45 }],
    },
    { type: FrameType.ACK, seq: 3, sentAt: 5, ids: [id, newMessageId()] },
    { type: FrameType.PING, seq: 4, sentAt: 6 },
    { type: FrameType.PONG, seq: 5, sentAt: 7 },
    { type: FrameType.BYE, seq: 6, sentAt: 8, reason: "bye" },
  ];
  for (const f of frames) assert.deepEqual(decodeSessionFrame(encodeSessionFrame(f)), f);
});

Deno.test("a MSG frame has a fixed layout", () => {
  const bytes = encodeSessionFrame({
    type: FrameType.MSG,
    seq: 1,
    sentAt: 2,
    messages: [{ id, text: "hi", sentAt: 3 }],
  });
  const idBytes = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
  assert.deepEqual(
    [...bytes],
    [
      ...[2], // type
      ...[0, 0, 0, 0, 0, 0, 0, 1], // seq
      ...[0, 0, 0, 0, 0, 0, 0, 2], // sentAt of the frame
      ...[0, 1], // one message
      ...idBytes,
      ...idBytes.map((b) => b + 0x88),
      ...[0, 0, 0, 0, 0, 0, 0, 3], // its sentAt
      ...[0, 0, 0, 2], // text length
      ...[104, 105], // "hi"
    ],
  );
});

Deno.test("MessageBatch: encodes what decodeSessionFrame reads, and fills up to its limits", () => {
  const batch = new MessageBatch();
  assert.throws(() => batch.encode(1, 1), RangeError);
  const sent = Array.from({ length: 3 }, (_, i) => ({
    id: newMessageId(),
    text: `m${i} ✓`,
    sentAt: 1000 + i,
  }));
  for (const m of sent) batch.add(encodeChatMessage(m));
  assert.equal(batch.length, 3);
  assert.deepEqual(decodeSessionFrame(batch.encode(7, 9)), {
    type: FrameType.MSG,
    seq: 7,
    sentAt: 9,
    messages: sent,
  });

  // By bytes: 1 KiB texts fill a batch just under BATCH_BYTES; the next one does not fit.
  const kib = encodeChatMessage({ id, text: "k".repeat(1024), sentAt: 1 });
  const byBytes = new MessageBatch();
  while (byBytes.fits(kib)) byBytes.add(kib);
  assert.equal(byBytes.length, Math.floor(BATCH_BYTES / kib.length));
  assert.throws(() => byBytes.add(kib), RangeError);

  // By count: tiny messages stop at MAX_BATCH_MESSAGES.
  const tiny = encodeChatMessage({ id, text: "", sentAt: 1 });
  const byCount = new MessageBatch();
  while (byCount.fits(tiny)) byCount.add(tiny);
  assert.equal(byCount.length, MAX_BATCH_MESSAGES);
  assert.equal(decodeSessionFrame(byCount.encode(1, 1)).type, FrameType.MSG);

  // The largest message fits alone, and its frame's token is exactly the advertised maximum.
  const largest = encodeChatMessage({ id, text: "x".repeat(MAX_TEXT_BYTES), sentAt: 1 });
  const alone = new MessageBatch();
  assert.ok(alone.fits(largest));
  alone.add(largest);
  assert.ok(!alone.fits(tiny));
  using fernet = new FernetSync(generateKey());
  assert.equal(fernet.encrypt(alone.encode(2 ** 50, Date.now())).length, MAX_SESSION_FRAME_BYTES);
});

Deno.test("message ids are 32 hex digits and unique", () => {
  const ids = new Set(Array.from({ length: 1000 }, newMessageId));
  assert.equal(ids.size, 1000);
  for (const i of ids) assert.ok(isMessageId(i));
  assert.ok(!isMessageId("xyz"));
});

/** A MSG frame header (seq 1, sentAt 1) followed by `parts`. */
function msg(...parts: ArrayLike<number>[]): Uint8Array {
  const body = parts.flatMap((p) => [...Array.from(p)]);
  return new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, ...body]);
}

Deno.test("bad session frames are refused with DecodeError", () => {
  const good = encodeSessionFrame({ type: FrameType.ACK, seq: 1, sentAt: 2, ids: [id] });
  const cases: Uint8Array[] = [
    new Uint8Array(0),
    good.subarray(0, 10),
    good.subarray(0, good.length - 1), // ACK not a multiple of 16
    encodeSessionFrame({ type: FrameType.PING, seq: 1, sentAt: 1 }).slice().fill(9, 0, 1), // type 9
    new Uint8Array([...encodeSessionFrame({ type: FrameType.PING, seq: 1, sentAt: 1 }), 0]),
    msg([0, 1], new Uint8Array(16), new Uint8Array(8), [0, 0, 0, 1], [0xff]), // invalid UTF-8
    msg([0, 0]), // no message
    msg([0x04, 0x01]), // over MAX_BATCH_MESSAGES
    msg([0, 2], new Uint8Array(16), new Uint8Array(8), [0, 0, 0, 0]), // says 2, holds 1
    msg([0, 1], new Uint8Array(16), new Uint8Array(8), [0, 0, 0, 2], [0x68]), // text cut short
    msg([0, 1], new Uint8Array(16), new Uint8Array(8), [0, 0, 0, 0], [0]), // trailing byte
    msg([0, 1], new Uint8Array(16), new Uint8Array(8), [0, 1, 0, 1], new Uint8Array(65537)), // long
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

/** The plaintext of a MSG frame (seq 1, sentAt 1) of already encoded entries, unchecked. */
function rawMsg(entries: Uint8Array[]): Uint8Array {
  return msg([entries.length >> 8, entries.length & 0xff], ...entries);
}

/** An encoded message with an empty text. */
function tinyEntry(): Uint8Array {
  return encodeChatMessage({ id: newMessageId(), text: "", sentAt: 1 });
}

Deno.test("a MSG of several messages is held to BATCH_BYTES; a lone one only to MAX_TEXT_BYTES", () => {
  // Two entries of exactly half the budget each, 28-byte header plus text, the text counted in
  // UTF-8 bytes ("é" is 2): the sender's MessageBatch takes both, so the receiver must too.
  const header = encodeChatMessage({ id, text: "", sentAt: 1 }).length;
  const half = BATCH_BYTES / 2 - header;
  const atLimit = [
    { id, text: "é".repeat(half / 2), sentAt: 1 },
    { id: newMessageId(), text: "x".repeat(half), sentAt: 2 },
  ];
  const entries = atLimit.map(encodeChatMessage);
  assert.equal(entries[0].length + entries[1].length, BATCH_BYTES);
  const batch = new MessageBatch();
  for (const e of entries) {
    assert.ok(batch.fits(e));
    batch.add(e);
  }
  const decoded = decodeSessionFrame(batch.encode(1, 1));
  assert.ok(decoded.type === FrameType.MSG);
  assert.deepEqual(decoded.messages, atLimit);
  assert.deepEqual(decodeSessionFrame(rawMsg(entries)), decoded);

  // One byte more: our sender would not send it, and the receiver refuses it.
  const over = [entries[0], encodeChatMessage({ ...atLimit[1], text: atLimit[1].text + "y" })];
  assert.ok(!batch.fits(over[1]));
  assert.throws(() => decodeSessionFrame(rawMsg(over)), DecodeError);
  assert.throws(
    () =>
      encodeSessionFrame({
        type: FrameType.MSG,
        seq: 1,
        sentAt: 1,
        messages: [atLimit[0], { ...atLimit[1], text: atLimit[1].text + "y" }],
      }),
    RangeError,
  );

  // What the count and per-text limits alone let through under a 1 MiB frame: a dozen full texts.
  const full = encodeChatMessage({ id, text: "z".repeat(MAX_TEXT_BYTES), sentAt: 1 });
  assert.throws(() => decodeSessionFrame(rawMsg(Array(12).fill(full))), DecodeError);
  assert.throws(() => decodeSessionFrame(rawMsg([full, tinyEntry()])), DecodeError);

  // A lone message may exceed the batch budget, up to the largest text.
  const lone = decodeSessionFrame(rawMsg([full]));
  assert.ok(lone.type === FrameType.MSG);
  assert.equal(lone.messages[0].text.length, MAX_TEXT_BYTES);
});

Deno.test("encoding refuses over-long text, bad ids, bad times and empty or huge batches", () => {
  const one = (m: { id: string; text: string; sentAt: number }) =>
    encodeSessionFrame({ type: FrameType.MSG, seq: 1, sentAt: 1, messages: [m] });
  assert.throws(() => one({ id, text: "x".repeat(MAX_TEXT_BYTES + 1), sentAt: 1 }), RangeError);
  assert.throws(() => one({ id: "nope", text: "", sentAt: 1 }), RangeError);
  assert.throws(() => one({ id, text: "", sentAt: -1 }), RangeError);
  assert.throws(() => one({ id, text: "", sentAt: 1.5 }), RangeError);
  assert.throws(
    () => encodeSessionFrame({ type: FrameType.MSG, seq: 1, sentAt: 1, messages: [] }),
    RangeError,
  );
  const many = Array.from({ length: MAX_BATCH_MESSAGES + 1 }, () => ({ id, text: "", sentAt: 1 }));
  assert.throws(
    () => encodeSessionFrame({ type: FrameType.MSG, seq: 1, sentAt: 1, messages: many }),
    RangeError,
  );
  // The largest text is fine.
  one({ id, text: "x".repeat(MAX_TEXT_BYTES), sentAt: 1 });
});
