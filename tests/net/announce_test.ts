import assert from "node:assert/strict";
import { type Identity, openIdentity } from "../../lib/crypto/identity.ts";
import {
  ANNOUNCEMENT_VERSION,
  AnnouncementError,
  type AnnouncementFields,
  decodeAnnouncement,
  encodeAnnouncement,
  MAX_ANNOUNCEMENT_SIZE,
  nameProblem,
} from "../../lib/net/announce.ts";

/**
 * Two identities, made once (RSA key generation is slow) in directories removed right away. Made
 * lazily by the first test, so their file operations start and end inside a test (sanitizers).
 */
let made: Promise<[Identity, Identity]> | undefined;
function identities(): Promise<[Identity, Identity]> {
  return made ??= make();
}
async function make(): Promise<[Identity, Identity]> {
  const one = async () => {
    const dir = await Deno.makeTempDir({ prefix: "announce_test_" });
    try {
      return (await openIdentity(dir)).identity;
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  };
  return [await one(), await one()];
}

const FIELDS: AnnouncementFields = {
  kind: "hello",
  name: "Alice",
  tcpPort: 5000,
  replyPort: 40123,
  timestamp: 1_700_000_000_123,
  seq: 7,
  intervalMs: 5000,
};

/** A small deterministic PRNG (mulberry32), so a fuzz failure can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Asserts that decoding rejects `bytes` with an AnnouncementError, and returns its reason. */
async function rejectReason(bytes: Uint8Array, label: string): Promise<string> {
  try {
    await decodeAnnouncement(bytes);
  } catch (e) {
    assert.ok(e instanceof AnnouncementError, `${label}: threw ${e}`);
    return e.reason;
  }
  assert.fail(`${label}: accepted`);
}

Deno.test("announcement: round trip of every kind", async () => {
  const [alice] = await identities();
  for (const kind of ["hello", "reply", "goodbye"] as const) {
    const bytes = await encodeAnnouncement({ ...FIELDS, kind }, alice);
    assert.ok(bytes.length <= MAX_ANNOUNCEMENT_SIZE);
    const a = await decodeAnnouncement(bytes);
    assert.equal(a.kind, kind);
    assert.equal(a.name, FIELDS.name);
    assert.equal(a.tcpPort, FIELDS.tcpPort);
    assert.equal(a.replyPort, FIELDS.replyPort);
    assert.equal(a.timestamp, FIELDS.timestamp);
    assert.equal(a.seq, FIELDS.seq);
    assert.equal(a.intervalMs, FIELDS.intervalMs);
    assert.deepEqual(a.spki, alice.spki);
    assert.equal(a.fingerprint, alice.fingerprint);
    assert.equal(a.key.fingerprint, alice.fingerprint);
  }
});

Deno.test("announcement: extreme field values round-trip", async () => {
  const [alice] = await identities();
  const fields: AnnouncementFields = {
    kind: "reply",
    name: "é".repeat(32), // 64 UTF-8 bytes, the limit
    tcpPort: 65535,
    replyPort: 1,
    timestamp: Number.MAX_SAFE_INTEGER,
    seq: 0xffffffff,
    intervalMs: 0xffffffff,
  };
  const a = await decodeAnnouncement(await encodeAnnouncement(fields, alice));
  const { spki: _s, fingerprint: _f, key: _k, ...decoded } = a;
  assert.deepEqual(decoded, fields);
  const zero = await decodeAnnouncement(
    await encodeAnnouncement({ ...fields, name: "z", timestamp: 0, seq: 0, intervalMs: 1 }, alice),
  );
  assert.equal(zero.timestamp, 0);
  assert.equal(zero.seq, 0);
});

Deno.test("announcement: header layout, byte by byte (docs/DISCOVERY.md)", async () => {
  const [alice] = await identities();
  const bytes = await encodeAnnouncement({ ...FIELDS, kind: "goodbye", name: "Bö" }, alice);
  const name = new TextEncoder().encode("Bö"); // 3 bytes
  const expectedHeader = [
    0x50,
    0x32,
    0x50,
    0x41, // magic "P2PA"
    0x01, // version
    0x03, // kind: goodbye
    0x13,
    0x88, // TCP port 5000
    0x9c,
    0xbb, // reply port 40123
    0x00,
    0x00,
    0x01,
    0x8b,
    0xcf,
    0xe5,
    0x68,
    0x7b, // timestamp 1700000000123
    0x00,
    0x00,
    0x00,
    0x07, // seq 7
    0x00,
    0x00,
    0x13,
    0x88, // interval 5000 ms
    0x03, // name length
    alice.spki.length >> 8,
    alice.spki.length & 0xff, // SPKI length
  ];
  assert.deepEqual([...bytes.subarray(0, 29)], expectedHeader);
  assert.deepEqual(bytes.subarray(29, 32), name);
  assert.deepEqual(bytes.subarray(32, 32 + alice.spki.length), alice.spki);
  // RSA-2048: a 256-byte signature fills the rest.
  assert.equal(bytes.length, 32 + alice.spki.length + 256);
  assert.equal(ANNOUNCEMENT_VERSION, 1);
});

Deno.test("announcement: a datagram inside a larger buffer decodes", async () => {
  const [alice] = await identities();
  const bytes = await encodeAnnouncement(FIELDS, alice);
  const big = new Uint8Array(bytes.length + 100);
  big.set(bytes, 37);
  const a = await decodeAnnouncement(big.subarray(37, 37 + bytes.length));
  assert.equal(a.fingerprint, alice.fingerprint);
});

Deno.test("announcement: the encoder refuses fields out of range", async () => {
  const [alice] = await identities();
  const bad: [string, Partial<AnnouncementFields>][] = [
    ["empty name", { name: "" }],
    ["65-byte name", { name: "x".repeat(65) }],
    ["33 two-byte characters", { name: "é".repeat(33) }],
    ["newline in name", { name: "a\nb" }],
    ["escape in name", { name: "\x1b[2J" }],
    ["C1 control in name", { name: "a\u0085" }],
    ["bidi override in name", { name: "a\u202eb" }],
    ["TCP port 0", { tcpPort: 0 }],
    ["TCP port 65536", { tcpPort: 65536 }],
    ["fractional port", { tcpPort: 50.5 }],
    ["reply port 0", { replyPort: 0 }],
    ["negative timestamp", { timestamp: -1 }],
    ["unsafe timestamp", { timestamp: 2 ** 53 }],
    ["NaN timestamp", { timestamp: NaN }],
    ["negative seq", { seq: -1 }],
    ["seq over u32", { seq: 2 ** 32 }],
    ["interval 0", { intervalMs: 0 }],
    ["interval over u32", { intervalMs: 2 ** 32 }],
    ["unknown kind", { kind: "bye" as AnnouncementFields["kind"] }],
  ];
  for (const [label, change] of bad) {
    await assert.rejects(
      encodeAnnouncement({ ...FIELDS, ...change }, alice),
      (e) => e instanceof AnnouncementError && e.reason === "field",
      label,
    );
  }
});

Deno.test("announcement: wrong magic, version, kind and sizes are refused with their reason", async () => {
  const [alice] = await identities();
  const good = await encodeAnnouncement(FIELDS, alice);
  const edit = (at: number, value: number) => {
    const copy = good.slice();
    copy[at] = value;
    return copy;
  };
  assert.equal(await rejectReason(edit(0, 0x51), "magic"), "malformed");
  assert.equal(await rejectReason(edit(4, 2), "version 2"), "version");
  assert.equal(await rejectReason(edit(4, 0), "version 0"), "version");
  assert.equal(await rejectReason(edit(5, 0), "kind 0"), "malformed");
  assert.equal(await rejectReason(edit(5, 4), "kind 4"), "malformed");
  assert.equal(await rejectReason(edit(6, 0), "TCP port high byte"), "signature");
  assert.equal(await rejectReason(edit(26, 65), "name length 65"), "malformed");
  assert.equal(await rejectReason(edit(10, 0x00 | 0x20), "timestamp over 2^53"), "malformed");
  assert.equal(await rejectReason(new Uint8Array(0), "empty"), "malformed");
  assert.equal(await rejectReason(good.subarray(0, 5), "5 bytes"), "malformed");
  const oversized = new Uint8Array(MAX_ANNOUNCEMENT_SIZE + 1);
  oversized.set(good);
  assert.equal(await rejectReason(oversized, "oversized"), "malformed");
  const longer = new Uint8Array(good.length + 1);
  longer.set(good);
  assert.equal(await rejectReason(longer, "one byte appended"), "signature");
  // Not even a byte array: still only an AnnouncementError.
  assert.equal(await rejectReason("P2PA" as unknown as Uint8Array, "a string"), "malformed");
  assert.equal(await rejectReason(null as unknown as Uint8Array, "null"), "malformed");
});

Deno.test("announcement: a carried key that is not a key is refused as 'key'", async () => {
  const [alice] = await identities();
  const junkKey = crypto.getRandomValues(new Uint8Array(294));
  const signer = { spki: junkKey, sign: (data: Uint8Array) => alice.sign(data) };
  const bytes = await encodeAnnouncement(FIELDS, signer);
  assert.equal(await rejectReason(bytes, "junk SPKI"), "key");
});

Deno.test("announcement: forged and re-signed announcements are refused as 'signature'", async () => {
  const [alice, mallory] = await identities();
  // Alice's key carried, Mallory's signature.
  const forged = await encodeAnnouncement(FIELDS, {
    spki: alice.spki,
    sign: (data: Uint8Array) => mallory.sign(data),
  });
  assert.equal(await rejectReason(forged, "re-signed by another key"), "signature");
  // Alice's genuine signature over other fields.
  const genuine = await encodeAnnouncement(FIELDS, alice);
  const other = await encodeAnnouncement({ ...FIELDS, tcpPort: 6666 }, alice);
  const spliced = other.slice();
  spliced.set(genuine.subarray(genuine.length - 256), other.length - 256);
  assert.equal(await rejectReason(spliced, "signature of another datagram"), "signature");
  // Mallory may call herself Alice: the name is a label, the fingerprint tells them apart.
  const impostor = await decodeAnnouncement(await encodeAnnouncement(FIELDS, mallory));
  assert.equal(impostor.name, "Alice");
  assert.equal(impostor.fingerprint, mallory.fingerprint);
  assert.notEqual(impostor.fingerprint, alice.fingerprint);
});

Deno.test("announcement fuzz: every truncation is refused", async () => {
  const [alice] = await identities();
  const good = await encodeAnnouncement(FIELDS, alice);
  for (let n = 0; n < good.length; n++) await rejectReason(good.subarray(0, n), `first ${n} bytes`);
});

Deno.test("announcement fuzz: every single-bit flip is refused", async () => {
  const [alice] = await identities();
  const good = await encodeAnnouncement(FIELDS, alice);
  for (let bit = 0; bit < good.length * 8; bit++) {
    const copy = good.slice();
    copy[bit >> 3] ^= 1 << (bit & 7);
    await rejectReason(copy, `bit ${bit} flipped`);
  }
});

Deno.test("announcement fuzz: random bytes, with and without a valid-looking header, are refused", async () => {
  const [alice] = await identities();
  const good = await encodeAnnouncement(FIELDS, alice);
  const random = prng(0xa11ce);
  for (let i = 0; i < 3000; i++) {
    const length = Math.floor(random() * (MAX_ANNOUNCEMENT_SIZE + 100));
    const bytes = new Uint8Array(length);
    for (let j = 0; j < length; j++) bytes[j] = Math.floor(random() * 256);
    // A third keep our magic and version, a third the whole genuine header, so the fuzz
    // reaches past the first checks.
    if (i % 3 === 1) bytes.set(good.subarray(0, Math.min(5, length)));
    if (i % 3 === 2) bytes.set(good.subarray(0, Math.min(29, length)));
    await rejectReason(bytes, `random datagram ${i}`);
  }
  // Random changes to a few bytes of a genuine datagram.
  for (let i = 0; i < 1000; i++) {
    const copy = good.slice();
    const changes = 1 + Math.floor(random() * 4);
    for (let c = 0; c < changes; c++) {
      const at = Math.floor(random() * copy.length);
      const value = Math.floor(random() * 256);
      copy[at] = copy[at] === value ? value ^ 0xff : value;
    }
    await rejectReason(copy, `mutation ${i}`);
  }
});

Deno.test("nameProblem: says why a name cannot be announced", () => {
  assert.equal(nameProblem("Alice"), undefined);
  assert.equal(nameProblem("Zoë 🙂"), undefined);
  assert.equal(nameProblem("é".repeat(32)), undefined);
  assert.match(nameProblem("")!, /bytes/);
  assert.match(nameProblem("é".repeat(33))!, /66 bytes/);
  assert.match(nameProblem("tab\there")!, /control/);
  assert.match(nameProblem("\u202egnp.exe")!, /control/);
});
