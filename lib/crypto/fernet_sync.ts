/**
 * Fernet tokens (spec version 0x80) over `node:crypto`, synchronous: the engine of the message
 * path (session frames and history at rest). Tokens are byte for byte those of the WebCrypto
 * engine in `fernet.ts`, which stays the public contract; both share the token layout and its
 * checks (`fernet_token.ts`) and pass the same spec vectors.
 *
 * Why a second engine: each WebCrypto call is a hand-off to a thread pool and back through a
 * promise. A token costs two calls, a delivered message six, and in `deno task bench` that made
 * WebCrypto the bottleneck of delivery (latency and throughput). Here a token costs one AES call,
 * synchronous, and an HMAC: in plain TypeScript for a short token (`sha256.ts` says why), with
 * `node:crypto` for a long one. A token is built in a reused buffer, so that it allocates nothing
 * but the AES output (bench/README.md has the figures).
 *
 * @module
 */

import { createCipheriv, createDecipheriv, createHash, type Hash } from "node:crypto";
import {
  encryptParams,
  HEADER_LENGTH,
  HMAC_LENGTH,
  InvalidTokenError,
  parseToken,
  splitKey,
  timingSafeEqual,
  writeTokenHeader,
} from "./fernet_token.ts";
import { HmacSha256 } from "./sha256.ts";

export { generateKey, InvalidKeyError, InvalidTokenError } from "./fernet_token.ts";

const BLOCK = 16;
/**
 * Longest input signed with the TypeScript HMAC: about where native SHA-256 catches up (it costs
 * ~8 µs a tag whatever the length, the TypeScript one ~1 µs plus ~9 ns a byte here).
 */
const SHORT_MAC = 512;
const SHA256_BLOCK = 64;
/** Largest working buffer kept between tokens; a longer token gets one of its own. */
const KEEP_SCRATCH = 16 * 1024;

/** What createCipheriv and createDecipheriv return: both stream through `update`. */
type Cipher = {
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
  setAutoPadding(on: boolean): unknown;
};

const encoder = new TextEncoder();

/**
 * {@linkcode FernetSync.prototype.encrypt} or `decrypt` was called after `close`: a bug of the
 * caller, never a bad token.
 *
 * @example
 * ```ts
 * import { FernetClosedError, FernetSync, generateKey } from "./fernet_sync.ts";
 * const f = new FernetSync(generateKey());
 * f.close();
 * try {
 *   f.encrypt("late");
 * } catch (e) {
 *   console.assert(e instanceof FernetClosedError);
 * }
 * ```
 */
export class FernetClosedError extends Error {
  constructor() {
    super("this Fernet key was closed");
    this.name = "FernetClosedError";
  }
}

/**
 * Encrypts and decrypts Fernet tokens under one key, synchronously. Same options, same errors
 * and same tokens as {@linkcode import("./fernet.ts").Fernet}.
 *
 * @example Round trip
 * ```ts
 * import { FernetSync, generateKey } from "./fernet_sync.ts";
 * const fernet = new FernetSync(generateKey());
 * const plain = fernet.decrypt(fernet.encrypt("hello"), { ttl: 60 });
 * console.log(new TextDecoder().decode(plain)); // "hello"
 * fernet.close();
 * ```
 *
 * It holds two AES contexts of the runtime for its whole life: {@linkcode close} it (or declare
 * it with `using`) when done, or they stay allocated.
 */
export class FernetSync {
  #mac: TokenMac;
  #aes: AesCbc;
  /** Where tokens are built: reused, so a token allocates only its AES output. */
  #scratch = new Uint8Array(1024);
  /** Where a token's HMAC is computed to be checked. */
  #tag = new Uint8Array(HMAC_LENGTH);

  /**
   * Imports a key made by `generateKey` (base64url of 32 bytes; `=` padding optional).
   *
   * @param key the Fernet key
   * @throws {InvalidKeyError} when the key is not base64url or does not decode to 32 bytes
   */
  constructor(key: string) {
    const raw = splitKey(key);
    this.#mac = new TokenMac(raw.signing);
    this.#aes = new AesCbc(raw.encryption);
    raw.signing.fill(0);
    raw.encryption.fill(0);
  }

  /** True once {@linkcode close} was called: encrypt and decrypt then throw. */
  get closed(): boolean {
    return this.#aes.closed;
  }

  /** Releases the AES contexts. Idempotent. */
  close(): void {
    this.#aes.close();
    this.#mac.close();
  }

  /** Same as {@linkcode close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** A working buffer of at least `size` bytes: the kept one, grown if needed, or a new one. */
  #buffer(size: number): Uint8Array {
    if (size <= this.#scratch.length) return this.#scratch;
    if (size > KEEP_SCRATCH) return new Uint8Array(size);
    this.#scratch = new Uint8Array(KEEP_SCRATCH);
    return this.#scratch;
  }

  /**
   * Encrypts `data` (a string is encoded as UTF-8) into a token.
   *
   * @param data the plaintext
   * @param opts `now`: the timestamp to record, seconds since the epoch (default: the clock);
   *   `iv`: the 16-byte IV (default: random; set it only to reproduce test vectors)
   * @returns the token, base64url with padding
   * @throws {RangeError} when `now` is not a non-negative number or `iv` is not 16 bytes
   * @throws {FernetClosedError} after {@linkcode close}
   *
   * @example
   * ```ts
   * import { FernetSync, generateKey } from "./fernet_sync.ts";
   * using fernet = new FernetSync(generateKey());
   * const token = fernet.encrypt(new Uint8Array([1, 2, 3]));
   * ```
   */
  encrypt(data: Uint8Array | string, opts?: { now?: number; iv?: Uint8Array }): string {
    if (this.closed) throw new FernetClosedError();
    // UTF-8 takes at most 3 bytes per UTF-16 unit; PKCS7 adds 1 to 16 bytes.
    const most = typeof data === "string" ? 3 * data.length : data.length;
    const token = this.#buffer(HEADER_LENGTH + most + BLOCK + HMAC_LENGTH);
    const { seconds, iv } = encryptParams(opts, token.subarray(9, HEADER_LENGTH));
    writeTokenHeader(token, seconds, iv);
    let length: number;
    if (typeof data === "string") {
      length = encoder.encodeInto(data, token.subarray(HEADER_LENGTH)).written;
    } else {
      token.set(data, HEADER_LENGTH);
      length = data.length;
    }
    // PKCS7: 1 to 16 bytes of padding, each holding the padding length.
    const padding = BLOCK - length % BLOCK;
    const signedLength = HEADER_LENGTH + length + padding;
    token.fill(padding, HEADER_LENGTH + length, signedLength);
    // The ciphertext replaces the plaintext: none of it stays in the buffer.
    token.set(this.#aes.encrypt(iv, token.subarray(HEADER_LENGTH, signedLength)), HEADER_LENGTH);
    this.#mac.sign(token.subarray(0, signedLength), token, signedLength);
    return token.subarray(0, signedLength + HMAC_LENGTH).toBase64({ alphabet: "base64url" });
  }

  /**
   * Verifies and decrypts a token. The HMAC is checked (in constant time) before any decryption.
   * The age and clock-skew checks apply when `ttl` is given, as in the reference implementations.
   *
   * @param token the token (base64url; `=` padding optional)
   * @param opts `ttl`: maximum age in seconds (default: no time checks); `now`: the current time
   *   in seconds since the epoch (default: the clock)
   * @returns the plaintext bytes
   * @throws {InvalidTokenError} for every bad token: bad base64, wrong version, too short,
   *   ciphertext not whole blocks, wrong HMAC, bad padding, expired, too far in the future
   * @throws {RangeError} when `ttl` or `now` is not a non-negative number (a caller bug)
   * @throws {FernetClosedError} after {@linkcode close}
   *
   * @example
   * ```ts
   * import { FernetSync, generateKey } from "./fernet_sync.ts";
   * using f = new FernetSync(generateKey());
   * const bytes = f.decrypt(f.encrypt("hi"), { ttl: 30 });
   * ```
   */
  decrypt(token: string, opts?: { ttl?: number; now?: number }): Uint8Array {
    if (this.closed) throw new FernetClosedError();
    const parsed = parseToken(token, opts);
    if (!timingSafeEqual(this.#mac.sign(parsed.signed, this.#tag), parsed.mac)) {
      throw new InvalidTokenError("wrong HMAC");
    }
    const padded = this.#aes.decrypt(parsed.iv, parsed.ciphertext);
    // With a valid HMAC the padding is ours or the peer's bug, never an attacker's probe, so
    // checking it byte by byte leaks nothing.
    const padding = padded[padded.length - 1];
    let bad = padding < 1 || padding > BLOCK;
    for (let i = padded.length - padding; !bad && i < padded.length; i++) {
      bad = padded[i] !== padding;
    }
    if (bad) throw new InvalidTokenError("bad padding");
    return new Uint8Array(padded.buffer, padded.byteOffset, padded.length - padding);
  }
}

/**
 * HMAC-SHA256 under the token signing key, by the faster way for the input's length: TypeScript
 * ({@linkcode HmacSha256}) up to {@linkcode SHORT_MAC} bytes, `node:crypto` above, with its keyed
 * inner and outer hash states computed once (a tag then costs two copies of a state instead of a
 * fresh keyed HMAC object). Both give the same tag.
 */
class TokenMac {
  #short: HmacSha256;
  #inner: Hash;
  #outer: Hash;

  constructor(key: Uint8Array) {
    this.#short = new HmacSha256(key);
    // Fernet signing keys are 16 bytes, shorter than a SHA-256 block: padded, never hashed.
    const ipad = new Uint8Array(SHA256_BLOCK).fill(0x36);
    const opad = new Uint8Array(SHA256_BLOCK).fill(0x5c);
    for (let i = 0; i < key.length; i++) {
      ipad[i] ^= key[i];
      opad[i] ^= key[i];
    }
    this.#inner = createHash("sha256").update(ipad);
    this.#outer = createHash("sha256").update(opad);
    ipad.fill(0);
    opad.fill(0);
  }

  /** Writes the tag of `data` into `out` at `offset`; returns the tag's bytes. */
  sign(data: Uint8Array, out: Uint8Array, offset = 0): Uint8Array {
    if (data.length <= SHORT_MAC) return this.#short.sign(data, out, offset);
    const inner = this.#inner.copy().update(data).digest();
    out.set(this.#outer.copy().update(inner).digest(), offset);
    return out.subarray(offset, offset + HMAC_LENGTH);
  }

  close(): void {
    this.#short.close();
  }
}

/**
 * AES-128-CBC over whole blocks with one long-lived cipher object per direction, so a token
 * needs no new key schedule. Each object chains from the last ciphertext block it produced or
 * consumed; XORing that block and the token's IV into the first block (before encryption, after
 * decryption) makes every token start its chain at its own IV, as a new object would.
 */
class AesCbc {
  #key: Uint8Array;
  #encryptor!: Cipher;
  #decryptor!: Cipher;
  #encryptChain = new Uint8Array(BLOCK);
  #decryptChain = new Uint8Array(BLOCK);
  closed = false;

  constructor(key: Uint8Array) {
    this.#key = new Uint8Array(key);
    this.#resetEncryptor();
    this.#resetDecryptor();
  }

  /** Encrypts `padded` (whole blocks; overwritten) under `iv`. */
  encrypt(iv: Uint8Array, padded: Uint8Array): Uint8Array {
    if (this.closed) throw new FernetClosedError();
    for (let i = 0; i < BLOCK; i++) padded[i] ^= iv[i] ^ this.#encryptChain[i];
    const out = this.#encryptor.update(padded);
    if (out.length !== padded.length) {
      this.#resetEncryptor();
      throw new Error(`AES-CBC returned ${out.length} bytes for ${padded.length}`);
    }
    this.#encryptChain.set(out.subarray(out.length - BLOCK));
    return out;
  }

  /** Decrypts `ciphertext` (whole blocks) under `iv`; the padding is left on. */
  decrypt(iv: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.closed) throw new FernetClosedError();
    const out = this.#decryptor.update(ciphertext);
    if (out.length !== ciphertext.length) {
      this.#resetDecryptor();
      throw new Error(`AES-CBC returned ${out.length} bytes for ${ciphertext.length}`);
    }
    for (let i = 0; i < BLOCK; i++) out[i] ^= iv[i] ^ this.#decryptChain[i];
    this.#decryptChain.set(ciphertext.subarray(ciphertext.length - BLOCK));
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // final() ends each stream and frees its context; both hold whole blocks only, so neither
    // has anything left to return or a padding to check.
    this.#encryptor.final();
    this.#decryptor.final();
    this.#key.fill(0);
  }

  // An object that returned fewer bytes than it was given (never seen) holds a block back and
  // its chaining value is unknown: it is replaced.
  #resetEncryptor(): void {
    this.#encryptor?.final();
    this.#encryptor = createCipheriv("aes-128-cbc", this.#key, new Uint8Array(BLOCK));
    this.#encryptor.setAutoPadding(false);
    this.#encryptChain.fill(0);
  }

  #resetDecryptor(): void {
    this.#decryptor?.final();
    this.#decryptor = createDecipheriv("aes-128-cbc", this.#key, new Uint8Array(BLOCK));
    this.#decryptor.setAutoPadding(false);
    this.#decryptChain.fill(0);
  }
}
