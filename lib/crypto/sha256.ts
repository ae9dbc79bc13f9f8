/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) in plain TypeScript, for the HMAC of short
 * Fernet tokens on the message path (one per message stored at rest).
 *
 * Why not `node:crypto`: a tag there costs two copies of a keyed hash object and two digests, each
 * a call into the runtime that allocates a buffer; in Deno that is 8-10 µs for a 100-byte
 * message's token, and typed-array allocations are a large part of it. This code allocates
 * nothing per tag (the working state is preallocated and reused, which is safe because it is
 * synchronous) and signs the same token in 1.5-2.5 µs. Native hashing is faster per byte, so for
 * long inputs (from about 512 bytes) `node:crypto` wins: `fernet_sync.ts` picks by length, and
 * `bench/crypto_bench.ts` measures both. SHA-256 has no secret-dependent branches or table
 * lookups, so a JavaScript version leaks no more timing than a native one.
 *
 * @module
 */

/** Length of a SHA-256 digest and of an HMAC-SHA256 tag, in bytes. */
export const SHA256_LENGTH = 32;

const BLOCK = 64;

/** Round constants: the first 32 bits of the fractional parts of the cube roots of 2..311. */
const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);

/** The initial hash value: the first 32 bits of the fractional parts of the square roots of 2..19. */
const INITIAL = new Int32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);

// Working memory shared by every call: all of it is used synchronously, start to end, and
// overwritten by the next call.
const schedule = new Int32Array(64);
const state = new Int32Array(8);
const tail = new Uint8Array(2 * BLOCK);
const tailView = new DataView(tail.buffer);
const innerDigest = new Uint8Array(SHA256_LENGTH);

/** Runs the compression function on the 64-byte block of `data` at `offset`, updating `h`. */
function compress(h: Int32Array, data: Uint8Array, offset: number): void {
  const w = schedule;
  for (let i = 0; i < 16; i++) {
    const j = offset + 4 * i;
    w[i] = (data[j] << 24) | (data[j + 1] << 16) | (data[j + 2] << 8) | data[j + 3];
  }
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15];
    const y = w[i - 2];
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
  }
  let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (hh + s1 + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    hh = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + b) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0;
  h[5] = (h[5] + f) | 0;
  h[6] = (h[6] + g) | 0;
  h[7] = (h[7] + hh) | 0;
}

/**
 * Finishes a hash that started from `start` (the state after `prefix` bytes, a multiple of 64)
 * over `data`, writing the digest into `out` at 0.
 */
function finish(start: Int32Array, prefix: number, data: Uint8Array, out: Uint8Array): void {
  const h = state;
  h.set(start);
  const whole = data.length - data.length % BLOCK;
  for (let at = 0; at < whole; at += BLOCK) compress(h, data, at);
  const rest = data.length - whole;
  tail.fill(0);
  for (let i = 0; i < rest; i++) tail[i] = data[whole + i];
  tail[rest] = 0x80;
  // The length in bits, big-endian, in the last 8 bytes of the last block.
  const end = rest + 9 <= BLOCK ? BLOCK : 2 * BLOCK;
  const bits = (prefix + data.length) * 8;
  tailView.setUint32(end - 8, Math.floor(bits / 0x1_0000_0000));
  tailView.setUint32(end - 4, bits >>> 0);
  compress(h, tail, 0);
  if (end > BLOCK) compress(h, tail, BLOCK);
  for (let i = 0; i < 8; i++) {
    const v = h[i];
    out[4 * i] = v >>> 24;
    out[4 * i + 1] = v >>> 16;
    out[4 * i + 2] = v >>> 8;
    out[4 * i + 3] = v;
  }
  tail.fill(0);
  h.fill(0);
}

/**
 * The SHA-256 digest of `data`.
 *
 * @example
 * ```ts
 * import { sha256 } from "./sha256.ts";
 * const digest = sha256(new TextEncoder().encode("abc")); // ba7816bf...
 * ```
 */
export function sha256(data: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(SHA256_LENGTH);
  finish(INITIAL, 0, data, out);
  return out;
}

/**
 * HMAC-SHA256 under one key, with the keyed inner and outer states computed once: a tag then
 * costs the hash of the data and one more block.
 *
 * @example
 * ```ts
 * import { HmacSha256 } from "./sha256.ts";
 * using mac = new HmacSha256(new Uint8Array(16));
 * const tag = mac.sign(new TextEncoder().encode("message"));
 * ```
 */
export class HmacSha256 {
  #inner = new Int32Array(8);
  #outer = new Int32Array(8);
  #closed = false;

  /**
   * Keys the HMAC. A key longer than 64 bytes is hashed first, as RFC 2104 says.
   *
   * @param key the key (any length); it is not kept
   */
  constructor(key: Uint8Array) {
    const k = key.length > BLOCK ? sha256(key) : key;
    const pad = new Uint8Array(BLOCK);
    for (const [target, byte] of [[this.#inner, 0x36], [this.#outer, 0x5c]] as const) {
      pad.fill(byte);
      for (let i = 0; i < k.length; i++) pad[i] ^= k[i];
      target.set(INITIAL);
      compress(target, pad, 0);
    }
    pad.fill(0);
    schedule.fill(0);
    if (k !== key) k.fill(0);
  }

  /**
   * Writes the tag of `data` into `out` at `offset` (default: a new 32-byte array) and returns
   * the tag's bytes.
   *
   * @throws {RangeError} when `out` has no room for 32 bytes at `offset`
   * @throws {TypeError} after {@linkcode close}
   */
  sign(data: Uint8Array, out?: Uint8Array, offset = 0): Uint8Array {
    if (this.#closed) throw new TypeError("this HMAC key was closed");
    const target = out ?? new Uint8Array(SHA256_LENGTH);
    if (offset < 0 || offset + SHA256_LENGTH > target.length) {
      throw new RangeError(`no room for a ${SHA256_LENGTH}-byte tag at ${offset}`);
    }
    finish(this.#inner, BLOCK, data, innerDigest);
    const tag = offset === 0 && target.length === SHA256_LENGTH
      ? target
      : target.subarray(offset, offset + SHA256_LENGTH);
    finish(this.#outer, BLOCK, innerDigest, tag);
    innerDigest.fill(0);
    return tag;
  }

  /** Forgets the keyed states; {@linkcode sign} throws afterwards. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#inner.fill(0);
    this.#outer.fill(0);
  }

  /** Same as {@linkcode close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
