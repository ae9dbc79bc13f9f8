/**
 * Fernet tokens (spec version 0x80) over WebCrypto, byte-compatible with the Fernet spec:
 *
 * ```
 * token = base64url(0x80 ‖ timestamp (u64 BE, s) ‖ IV (16) ‖ AES-128-CBC/PKCS7 ciphertext ‖ HMAC)
 * HMAC  = HMAC-SHA256(signing key, 0x80 ‖ timestamp ‖ IV ‖ ciphertext)
 * key   = base64url(signing key (16) ‖ encryption key (16))
 * ```
 *
 * This module's exported names are a public contract: outside tools call them.
 *
 * @module
 */

const VERSION = 0x80;
const HEADER_LENGTH = 1 + 8 + 16; // version, timestamp, IV
const HMAC_LENGTH = 32;
const BLOCK = 16;
/** Smallest valid token: header, one cipher block (PKCS7 always pads), HMAC. */
const MIN_TOKEN_LENGTH = HEADER_LENGTH + BLOCK + HMAC_LENGTH;
/** Tokens stamped more than this far in the future are refused when a TTL is checked. */
const MAX_CLOCK_SKEW_S = 60;
const TWO_32 = 0x1_0000_0000;
const BASE64URL = { alphabet: "base64url" } as const;

const encoder = new TextEncoder();

/**
 * A token was rejected: malformed, forged, tampered, expired or stamped too far in the future.
 * {@linkcode Fernet.prototype.decrypt} rejects with this error, and only this one, for every bad
 * token. The message names the reason (it is safe to show: the HMAC is checked before anything
 * that depends on the key, so it is no padding oracle).
 *
 * @example Catching a bad token
 * ```ts
 * import { Fernet, generateKey, InvalidTokenError } from "./fernet.ts";
 * const f = await Fernet.create(generateKey());
 * try {
 *   await f.decrypt("not a token");
 * } catch (e) {
 *   if (!(e instanceof InvalidTokenError)) throw e;
 * }
 * ```
 */
export class InvalidTokenError extends Error {
  /** @param reason why the token was rejected */
  constructor(reason: string) {
    super(`invalid Fernet token: ${reason}`);
    this.name = "InvalidTokenError";
  }
}

/**
 * A key given to {@linkcode Fernet.create} is not base64url of exactly 32 bytes.
 *
 * @example
 * ```ts
 * import { Fernet, InvalidKeyError } from "./fernet.ts";
 * await Fernet.create("short").catch((e) => console.assert(e instanceof InvalidKeyError));
 * ```
 */
export class InvalidKeyError extends Error {
  /** @param reason what is wrong with the key */
  constructor(reason: string) {
    super(`invalid Fernet key: ${reason}`);
    this.name = "InvalidKeyError";
  }
}

/**
 * Makes a new random Fernet key: base64url (with padding) of 32 random bytes, the signing key
 * followed by the encryption key.
 *
 * @returns a 44-character key string
 *
 * @example
 * ```ts
 * import { Fernet, generateKey } from "./fernet.ts";
 * const fernet = await Fernet.create(generateKey());
 * ```
 */
export function generateKey(): string {
  return crypto.getRandomValues(new Uint8Array(32)).toBase64(BASE64URL);
}

/**
 * Encrypts and decrypts Fernet tokens under one key. The WebCrypto keys are imported once, in
 * {@linkcode Fernet.create}, so each token costs one AES-CBC and one HMAC call.
 *
 * @example Round trip
 * ```ts
 * import { Fernet, generateKey } from "./fernet.ts";
 * const fernet = await Fernet.create(generateKey());
 * const token = await fernet.encrypt("hello");
 * const plain = await fernet.decrypt(token, { ttl: 60 });
 * console.log(new TextDecoder().decode(plain)); // "hello"
 * ```
 */
export class Fernet {
  #signing: CryptoKey;
  #encryption: CryptoKey;

  private constructor(signing: CryptoKey, encryption: CryptoKey) {
    this.#signing = signing;
    this.#encryption = encryption;
  }

  /**
   * Imports a key made by {@linkcode generateKey} (base64url of 32 bytes; `=` padding optional).
   *
   * @param key the Fernet key
   * @returns a Fernet instance bound to the key
   * @throws {InvalidKeyError} when the key is not base64url or does not decode to 32 bytes
   *
   * @example
   * ```ts
   * import { Fernet } from "./fernet.ts";
   * const f = await Fernet.create("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=");
   * ```
   */
  static async create(key: string): Promise<Fernet> {
    if (typeof key !== "string") throw new InvalidKeyError("the key must be a string");
    let raw: Uint8Array<ArrayBuffer>;
    try {
      raw = Uint8Array.fromBase64(key, BASE64URL);
    } catch (cause) {
      throw new InvalidKeyError(`not base64url (${(cause as Error).message})`);
    }
    if (raw.length !== 32) {
      throw new InvalidKeyError(`it decodes to ${raw.length} bytes, expected 32`);
    }
    const [signing, encryption] = await Promise.all([
      crypto.subtle.importKey(
        "raw",
        raw.subarray(0, 16),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign"],
      ),
      crypto.subtle.importKey("raw", raw.subarray(16), "AES-CBC", false, ["encrypt", "decrypt"]),
    ]);
    raw.fill(0);
    return new Fernet(signing, encryption);
  }

  /**
   * Encrypts `data` (a string is encoded as UTF-8) into a token.
   *
   * @param data the plaintext
   * @param opts `now`: the timestamp to record, seconds since the epoch (default: the clock);
   *   `iv`: the 16-byte IV (default: random; set it only to reproduce test vectors)
   * @returns the token, base64url with padding
   * @throws {RangeError} when `now` is not a non-negative number or `iv` is not 16 bytes
   *
   * @example
   * ```ts
   * import { Fernet, generateKey } from "./fernet.ts";
   * const token = await (await Fernet.create(generateKey())).encrypt(new Uint8Array([1, 2, 3]));
   * ```
   */
  async encrypt(
    data: Uint8Array | string,
    opts?: { now?: number; iv?: Uint8Array },
  ): Promise<string> {
    // WebCrypto copies its input, so a view over a SharedArrayBuffer is fine: the cast only
    // satisfies the DOM typing of BufferSource.
    const plain = (typeof data === "string" ? encoder.encode(data) : data) as Uint8Array<
      ArrayBuffer
    >;
    const now = opts?.now ?? Date.now() / 1000;
    if (!Number.isFinite(now) || now < 0 || now > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`now must be seconds since the epoch, got ${now}`);
    }
    const iv = (opts?.iv ?? crypto.getRandomValues(new Uint8Array(16))) as Uint8Array<ArrayBuffer>;
    if (iv.length !== 16) throw new RangeError(`iv must be 16 bytes, got ${iv.length}`);

    const ciphertext = new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-CBC", iv }, this.#encryption, plain),
    );
    const signedLength = HEADER_LENGTH + ciphertext.length;
    const token = new Uint8Array(signedLength + HMAC_LENGTH);
    const view = new DataView(token.buffer);
    const seconds = Math.floor(now);
    token[0] = VERSION;
    view.setUint32(1, Math.floor(seconds / TWO_32));
    view.setUint32(5, seconds >>> 0);
    token.set(iv, 9);
    token.set(ciphertext, HEADER_LENGTH);
    const mac = await crypto.subtle.sign("HMAC", this.#signing, token.subarray(0, signedLength));
    token.set(new Uint8Array(mac), signedLength);
    return token.toBase64(BASE64URL);
  }

  /**
   * Verifies and decrypts a token. The HMAC is checked (in constant time) before any decryption.
   * The age and clock-skew checks apply when `ttl` is given, as in the reference implementations:
   * the token is refused when `timestamp + ttl < now` or `timestamp > now + 60`.
   *
   * @param token the token (base64url; `=` padding optional)
   * @param opts `ttl`: maximum age in seconds (default: no time checks); `now`: the current time
   *   in seconds since the epoch (default: the clock)
   * @returns the plaintext bytes
   * @throws {InvalidTokenError} for every bad token: bad base64, wrong version, too short,
   *   ciphertext not whole blocks, wrong HMAC, bad padding, expired, too far in the future
   * @throws {RangeError} when `ttl` or `now` is not a non-negative number (a caller bug)
   *
   * @example
   * ```ts
   * import { Fernet, generateKey } from "./fernet.ts";
   * const f = await Fernet.create(generateKey());
   * const bytes = await f.decrypt(await f.encrypt("hi"), { ttl: 30 });
   * ```
   */
  async decrypt(token: string, opts?: { ttl?: number; now?: number }): Promise<Uint8Array> {
    if (typeof token !== "string") throw new InvalidTokenError("not a string");
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = Uint8Array.fromBase64(token, BASE64URL);
    } catch {
      // The decoder's SyntaxError is exactly this case; its text adds nothing for the caller.
      throw new InvalidTokenError("bad base64url");
    }
    if (bytes.length === 0 || bytes[0] !== VERSION) {
      throw new InvalidTokenError("wrong version");
    }
    const signedLength = bytes.length - HMAC_LENGTH;
    if (signedLength < HEADER_LENGTH) throw new InvalidTokenError("too short");
    if ((signedLength - HEADER_LENGTH) % BLOCK !== 0) {
      throw new InvalidTokenError("ciphertext is not a whole number of blocks");
    }
    if (bytes.length < MIN_TOKEN_LENGTH) throw new InvalidTokenError("too short");

    const ttl = opts?.ttl;
    if (ttl !== undefined) {
      if (!(ttl >= 0)) throw new RangeError(`ttl must be a non-negative number, got ${ttl}`);
      const now = Math.floor(opts?.now ?? Date.now() / 1000);
      if (!(now >= 0)) throw new RangeError(`now must be seconds since the epoch`);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const timestamp = view.getUint32(1) * TWO_32 + view.getUint32(5);
      if (timestamp + ttl < now) throw new InvalidTokenError("expired");
      if (timestamp > now + MAX_CLOCK_SKEW_S) {
        throw new InvalidTokenError("timestamp too far in the future");
      }
    }

    const expected = new Uint8Array(
      await crypto.subtle.sign("HMAC", this.#signing, bytes.subarray(0, signedLength)),
    );
    if (!timingSafeEqual(expected, bytes.subarray(signedLength))) {
      throw new InvalidTokenError("wrong HMAC");
    }

    let plain: ArrayBuffer;
    try {
      plain = await crypto.subtle.decrypt(
        { name: "AES-CBC", iv: bytes.subarray(9, HEADER_LENGTH) },
        this.#encryption,
        bytes.subarray(HEADER_LENGTH, signedLength),
      );
    } catch {
      // With a valid HMAC the only way AES-CBC decryption fails is bad PKCS7 padding.
      throw new InvalidTokenError("bad padding");
    }
    return new Uint8Array(plain);
  }
}

/** Compares two equal-length byte arrays without an early exit, so timing leaks no prefix. */
function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
