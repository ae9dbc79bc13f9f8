import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { HmacSha256, sha256, SHA256_LENGTH } from "../../lib/crypto/sha256.ts";

const text = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => b.toHex();
const fromHex = (h: string) => Uint8Array.fromHex(h);

Deno.test("sha256: FIPS 180-4 example vectors", () => {
  assert.equal(
    hex(sha256(text("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    hex(sha256(new Uint8Array(0))),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    hex(sha256(text("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  assert.equal(
    hex(sha256(text("a".repeat(1_000_000)))),
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
  );
});

Deno.test("hmac-sha256: RFC 4231 test cases 1-4, 6 and 7 (short, long and hashed keys)", () => {
  const cases: [key: Uint8Array, data: Uint8Array, tag: string][] = [
    [
      new Uint8Array(20).fill(0x0b),
      text("Hi There"),
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ],
    [
      text("Jefe"),
      text("what do ya want for nothing?"),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ],
    [
      new Uint8Array(20).fill(0xaa),
      new Uint8Array(50).fill(0xdd),
      "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ],
    [
      fromHex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
      new Uint8Array(50).fill(0xcd),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ],
    [
      new Uint8Array(131).fill(0xaa),
      text("Test Using Larger Than Block-Size Key - Hash Key First"),
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ],
    [
      new Uint8Array(131).fill(0xaa),
      text(
        "This is a test using a larger than block-size key and a larger than block-size data. " +
          "The key needs to be hashed before being used by the HMAC algorithm.",
      ),
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ],
  ];
  for (const [key, data, tag] of cases) {
    using mac = new HmacSha256(key);
    assert.equal(hex(mac.sign(data)), tag);
  }
});

Deno.test("sha256 and hmac-sha256 agree with node:crypto at every length around the block edges", () => {
  const key = crypto.getRandomValues(new Uint8Array(16));
  using mac = new HmacSha256(key);
  const data = crypto.getRandomValues(new Uint8Array(400));
  for (let n = 0; n <= 400; n++) {
    // A view at an odd offset: the input need not start its buffer.
    const part = data.subarray(400 - n);
    assert.equal(hex(sha256(part)), createHash("sha256").update(part).digest("hex"), `${n}`);
    assert.equal(hex(mac.sign(part)), createHmac("sha256", key).update(part).digest("hex"), `${n}`);
  }
});

Deno.test("hmac-sha256: sign writes into a given array at an offset, checks the room, refuses after close", () => {
  const key = new Uint8Array(16).fill(7);
  const mac = new HmacSha256(key);
  const data = text("fernet token bytes");
  const expected = createHmac("sha256", key).update(data).digest("hex");
  const out = new Uint8Array(10 + SHA256_LENGTH + 5);
  const tag = mac.sign(data, out, 10);
  assert.equal(hex(tag), expected);
  assert.equal(hex(out.subarray(10, 10 + SHA256_LENGTH)), expected);
  assert.deepEqual(
    [...out.subarray(0, 10), ...out.subarray(10 + SHA256_LENGTH)],
    Array(15).fill(0),
  );
  assert.throws(() => mac.sign(data, out, 20), RangeError);
  assert.throws(() => mac.sign(data, new Uint8Array(31)), RangeError);
  // The key bytes given are not changed, and signing twice gives the same tag.
  assert.deepEqual(key, new Uint8Array(16).fill(7));
  assert.equal(hex(mac.sign(data)), expected);
  mac.close();
  assert.throws(() => mac.sign(data), TypeError);
});
