import assert from "node:assert/strict";
import {
  Fernet,
  generateKey,
  InvalidKeyError,
  InvalidTokenError,
} from "../../lib/crypto/fernet.ts";
import * as sync from "../../lib/crypto/fernet_sync.ts";

// The spec's published vectors, copied into the repository so that a clone tests on its own.
const VECTORS = new URL("./vectors/fernet/", import.meta.url);

interface Vector {
  desc?: string;
  token: string;
  now: string;
  iv?: number[];
  src?: string;
  ttl_sec?: number;
  secret: string;
}

async function loadVectors(name: string): Promise<Vector[]> {
  const url = new URL(name, VECTORS);
  let text: string;
  try {
    text = await Deno.readTextFile(url);
  } catch (cause) {
    throw new Error(
      `Fernet spec vectors missing: cannot read ${url.pathname}: ${(cause as Error).message}`,
    );
  }
  return JSON.parse(text) as Vector[];
}

const seconds = (rfc3339: string) => Date.parse(rfc3339) / 1000;
const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Decodes a token without checks, to craft broken ones. */
const raw = (token: string) => Uint8Array.fromBase64(token, { alphabet: "base64url" });
const b64 = (bytes: Uint8Array) => bytes.toBase64({ alphabet: "base64url" });

/** Signs `version ‖ ts ‖ iv ‖ ciphertext` with the key's signing half: a token with a valid HMAC. */
async function seal(key: string, body: Uint8Array<ArrayBuffer>): Promise<string> {
  const signing = await crypto.subtle.importKey(
    "raw",
    raw(key).subarray(0, 16),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", signing, body));
  const out = new Uint8Array(body.length + 32);
  out.set(body);
  out.set(mac, body.length);
  return b64(out);
}

/** One Fernet engine, seen through promises so that every test below runs on both. */
interface Cipher {
  encrypt(data: Uint8Array | string, opts?: { now?: number; iv?: Uint8Array }): Promise<string>;
  decrypt(token: string, opts?: { ttl?: number; now?: number }): Promise<Uint8Array>;
}

interface Engine {
  name: string;
  create(key: string): Promise<Cipher>;
  /** Releases what the instances made during one test hold (the sync engine's AES contexts). */
  closeAll(): void;
}

/** Instances of the sync engine made by the running test, closed when it ends. */
const open: sync.FernetSync[] = [];

const ENGINES: Engine[] = [
  { name: "WebCrypto", create: (key) => Fernet.create(key), closeAll: () => {} },
  {
    name: "node:crypto (sync)",
    closeAll: () => open.splice(0).forEach((f) => f.close()),
    // deno-lint-ignore require-await -- the constructor's throw must become a rejection
    create: async (key) => {
      const f = new sync.FernetSync(key);
      open.push(f);
      return {
        // deno-lint-ignore require-await -- same: sync throws become rejections
        encrypt: async (data, opts) => f.encrypt(data, opts),
        // deno-lint-ignore require-await -- same
        decrypt: async (token, opts) => f.decrypt(token, opts),
      };
    },
  },
];

/** Asserts that decrypt rejects with InvalidTokenError and the expected reason. */
async function assertInvalid(
  f: Cipher,
  token: string,
  reason: RegExp,
  opts?: { ttl?: number; now?: number },
): Promise<void> {
  await assert.rejects(f.decrypt(token, opts), (e: unknown) => {
    assert.ok(e instanceof InvalidTokenError, `expected InvalidTokenError, got ${e}`);
    assert.match(e.message, reason);
    return true;
  });
}

/** A test of one engine; what it opened is closed after it, whatever the outcome. */
function engineTest(engine: Engine, name: string, fn: () => Promise<void> | void): void {
  Deno.test(`${engine.name}: ${name}`, async () => {
    try {
      await fn();
    } finally {
      engine.closeAll();
    }
  });
}

for (const engine of ENGINES) {
  engineTest(engine, `spec vectors: generate.json byte for byte`, async () => {
    const vectors = await loadVectors("generate.json");
    assert.ok(vectors.length > 0);
    for (const v of vectors) {
      const f = await engine.create(v.secret);
      const token = await f.encrypt(v.src!, { now: seconds(v.now), iv: new Uint8Array(v.iv!) });
      assert.equal(token, v.token);
    }
  });

  engineTest(engine, `spec vectors: verify.json`, async () => {
    const vectors = await loadVectors("verify.json");
    assert.ok(vectors.length > 0);
    for (const v of vectors) {
      const f = await engine.create(v.secret);
      const plain = await f.decrypt(v.token, { ttl: v.ttl_sec, now: seconds(v.now) });
      assert.deepEqual(plain, utf8(v.src!));
    }
  });

  engineTest(
    engine,
    `spec vectors: every invalid.json token is rejected with InvalidTokenError`,
    async () => {
      const vectors = await loadVectors("invalid.json");
      assert.ok(vectors.length >= 8);
      for (const v of vectors) {
        const f = await engine.create(v.secret);
        await assert.rejects(
          f.decrypt(v.token, { ttl: v.ttl_sec, now: seconds(v.now) }),
          InvalidTokenError,
          v.desc,
        );
      }
    },
  );

  // One test per invalid-token class, each crafted so that only that one thing is wrong.

  const KEY = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
  const NOW = 499162800; // 1985-10-26T01:20:00-07:00

  const validToken = async (plaintext = "hello"): Promise<{ f: Cipher; token: string }> => {
    const f = await engine.create(KEY);
    return { f, token: await f.encrypt(plaintext, { now: NOW }) };
  };

  engineTest(engine, `invalid token: bad base64`, async () => {
    const { f, token } = await validToken();
    await assertInvalid(f, "%%%%" + token.slice(4), /base64/);
    await assertInvalid(f, token.replaceAll("-", "+").replaceAll("_", "/") + "+/", /base64/);
    await assertInvalid(f, token.slice(0, 1), /base64/);
  });

  engineTest(engine, `invalid token: wrong version`, async () => {
    const { f, token } = await validToken();
    const bytes = raw(token);
    const body = bytes.slice(0, bytes.length - 32);
    body[0] = 0x81;
    await assertInvalid(f, await seal(KEY, body), /version/);
    await assertInvalid(f, "", /version/);
  });

  engineTest(engine, `invalid token: too short`, async () => {
    const { f, token } = await validToken();
    const bytes = raw(token);
    // Header and HMAC but no ciphertext block: valid HMAC, still too short.
    await assertInvalid(f, await seal(KEY, bytes.slice(0, 25)), /too short/);
    await assertInvalid(f, b64(bytes.slice(0, 9)), /too short/);
  });

  engineTest(engine, `invalid token: ciphertext not a whole number of blocks`, async () => {
    const { f, token } = await validToken("a message longer than one block");
    const bytes = raw(token);
    const body = bytes.slice(0, bytes.length - 32 - 1); // drop one ciphertext byte
    await assertInvalid(f, await seal(KEY, body), /whole number of blocks/);
  });

  engineTest(engine, `invalid token: wrong HMAC`, async () => {
    const { f, token } = await validToken();
    const bytes = raw(token);
    bytes[bytes.length - 1] ^= 1;
    await assertInvalid(f, b64(bytes), /HMAC/);
    const tampered = raw(token);
    tampered[30] ^= 0x80; // a ciphertext bit
    await assertInvalid(f, b64(tampered), /HMAC/);
    const other = await engine.create(generateKey());
    await assertInvalid(other, token, /HMAC/);
  });

  engineTest(engine, `invalid token: bad padding under a valid HMAC`, async () => {
    // Encrypt one block whose last byte is 0 (never valid PKCS7), then drop the padding block that
    // WebCrypto appended: the remaining block decrypts to bad padding.
    const encryption = await crypto.subtle.importKey(
      "raw",
      raw(KEY).subarray(16),
      "AES-CBC",
      false,
      [
        "encrypt",
      ],
    );
    const iv = crypto.getRandomValues(new Uint8Array(16));
    const block = new Uint8Array(16).fill(7);
    block[15] = 0;
    const ct = new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-CBC", iv }, encryption, block),
    );
    const body = new Uint8Array(25 + 16);
    body[0] = 0x80;
    new DataView(body.buffer).setUint32(5, NOW);
    body.set(iv, 9);
    body.set(ct.subarray(0, 16), 25);
    const f = await engine.create(KEY);
    await assertInvalid(f, await seal(KEY, body), /padding/);
  });

  engineTest(engine, `invalid token: expired TTL`, async () => {
    const { f, token } = await validToken();
    assert.equal(text(await f.decrypt(token, { ttl: 60, now: NOW + 60 })), "hello");
    await assertInvalid(f, token, /expired/, { ttl: 60, now: NOW + 61 });
    await assertInvalid(f, token, /expired/, { ttl: 0, now: NOW + 1 });
  });

  engineTest(engine, `invalid token: timestamp more than 60 s in the future`, async () => {
    const { f, token } = await validToken();
    assert.equal(text(await f.decrypt(token, { ttl: 60, now: NOW - 60 })), "hello");
    await assertInvalid(f, token, /future/, { ttl: 60, now: NOW - 61 });
  });

  engineTest(engine, `decrypt without ttl does no time checks`, async () => {
    const { f, token } = await validToken();
    assert.equal(text(await f.decrypt(token)), "hello");
    assert.equal(text(await f.decrypt(token, { now: 0 })), "hello");
  });

  engineTest(engine, `decrypt accepts a token without '=' padding`, async () => {
    const { f, token } = await validToken();
    assert.ok(token.endsWith("="));
    assert.equal(text(await f.decrypt(token.replace(/=+$/, ""))), "hello");
  });

  engineTest(engine, `round trips at block-boundary and large sizes`, async () => {
    const f = await engine.create(generateKey());
    for (const size of [0, 1, 15, 16, 17, 4096, 70000]) {
      const data = new Uint8Array(size);
      // getRandomValues fills at most 65536 bytes per call.
      for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
      const token = await f.encrypt(data);
      const bytes = raw(token);
      assert.equal(bytes.length, 25 + (Math.floor(size / 16) + 1) * 16 + 32, `size ${size}`);
      assert.deepEqual(await f.decrypt(token, { ttl: 60 }), data, `size ${size}`);
    }
  });

  engineTest(engine, `round trips with random keys and messages`, async () => {
    for (let i = 0; i < 50; i++) {
      const key = generateKey();
      assert.equal(raw(key).length, 32);
      const f = await engine.create(key);
      const data = crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 300)));
      const token = await f.encrypt(data);
      assert.match(token, /^gAAAAA[A-Za-z0-9_-]+=*$/);
      assert.deepEqual(await f.decrypt(token), data);
      // A second instance from the same key string reads it too.
      assert.deepEqual(await (await engine.create(key)).decrypt(token), data);
    }
  });

  engineTest(engine, `string plaintext is UTF-8 and the timestamp is recorded`, async () => {
    const f = await engine.create(generateKey());
    const token = await f.encrypt("héllo ✓", { now: 2 ** 40 + 5.9 });
    assert.equal(text(await f.decrypt(token)), "héllo ✓");
    const view = new DataView(raw(token).buffer);
    assert.equal(view.getUint32(1), 2 ** 8);
    assert.equal(view.getUint32(5), 5);
  });

  engineTest(engine, `generateKey makes distinct 44-character padded base64url keys`, () => {
    const a = generateKey();
    assert.match(a, /^[A-Za-z0-9_-]{43}=$/);
    assert.notEqual(a, generateKey());
  });

  engineTest(engine, `a malformed key is InvalidKeyError`, async () => {
    for (const bad of ["", "short", "%%%%" + KEY.slice(4), KEY.slice(0, -4), KEY + "AAAA"]) {
      await assert.rejects(engine.create(bad), InvalidKeyError, JSON.stringify(bad));
    }
    // Unpadded is still the same 32 bytes.
    await engine.create(KEY.replace(/=$/, ""));
  });

  engineTest(engine, `encrypt refuses a bad IV or time`, async () => {
    const f = await engine.create(KEY);
    await assert.rejects(f.encrypt("x", { iv: new Uint8Array(15) }), RangeError);
    await assert.rejects(f.encrypt("x", { now: -1 }), RangeError);
    await assert.rejects(f.encrypt("x", { now: NaN }), RangeError);
  });
}

Deno.test("both engines make and read each other's tokens, byte for byte", async () => {
  const key = generateKey();
  const web = await Fernet.create(key);
  using node = new sync.FernetSync(key);
  // 470-503: the signed part crosses 512 bytes, where FernetSync's HMAC changes implementation.
  for (const size of [0, 1, 15, 16, 17, 100, 470, 471, 486, 487, 503, 4096, 70000]) {
    const data = new Uint8Array(size).map((_, i) => i * 7);
    const iv = crypto.getRandomValues(new Uint8Array(16));
    const fromWeb = await web.encrypt(data, { now: 1_700_000_000, iv });
    assert.equal(node.encrypt(data, { now: 1_700_000_000, iv }), fromWeb, `size ${size}`);
    assert.deepEqual(node.decrypt(fromWeb), data);
    assert.deepEqual(await web.decrypt(node.encrypt(data)), data);
  }
});

Deno.test("FernetSync encrypts a string as its UTF-8 bytes, short or long, one token after another", async () => {
  const key = generateKey();
  const web = await Fernet.create(key);
  using node = new sync.FernetSync(key);
  // Multi-byte characters fill the worst case the working buffer is sized for; the long ones
  // outgrow the buffer kept between tokens.
  for (
    const s of ["", "hello", "héllo wörld", "🔐".repeat(100), "€".repeat(5000), "x€🔐".repeat(9000)]
  ) {
    const iv = crypto.getRandomValues(new Uint8Array(16));
    const expected = await web.encrypt(new TextEncoder().encode(s), { now: 1_700_000_000, iv });
    assert.equal(node.encrypt(s, { now: 1_700_000_000, iv }), expected, `${s.length} units`);
    assert.equal(text(node.decrypt(node.encrypt(s))), s);
  }
});

Deno.test("FernetSync answers synchronously and throws the same error classes", () => {
  assert.equal(sync.InvalidTokenError, InvalidTokenError);
  assert.equal(sync.InvalidKeyError, InvalidKeyError);
  const f = new sync.FernetSync(generateKey());
  const token = f.encrypt("now");
  assert.equal(typeof token, "string");
  assert.equal(text(f.decrypt(token)), "now");
  assert.throws(() => f.decrypt(token.slice(0, -8)), InvalidTokenError);
  assert.throws(() => new sync.FernetSync("short"), InvalidKeyError);
  f.close();
  assert.ok(f.closed);
  assert.throws(() => f.encrypt("late"), sync.FernetClosedError);
  assert.throws(() => f.decrypt(token), sync.FernetClosedError);
  assert.throws(() => f.decrypt(token.slice(0, -8)), sync.FernetClosedError);
  f.close();
});

Deno.test("FernetSync: tokens of one instance are independent (the AES chain restarts at each IV)", () => {
  using f = new sync.FernetSync(generateKey());
  const data = new Uint8Array(48).fill(1);
  const iv = new Uint8Array(16).fill(2);
  const first = f.encrypt(data, { now: 5, iv });
  // Tokens in between advance the long-lived AES objects' chains in both directions.
  for (let i = 0; i < 3; i++) f.decrypt(f.encrypt(new Uint8Array(i * 17)));
  assert.equal(f.encrypt(data, { now: 5, iv }), first);
  // A token that fails its HMAC never reaches AES; the next good one still decrypts.
  const bad = raw(first);
  bad[40] ^= 1;
  assert.throws(() => f.decrypt(b64(bad)), InvalidTokenError);
  assert.deepEqual(f.decrypt(first), data);
  assert.deepEqual(f.decrypt(first), data);
});
