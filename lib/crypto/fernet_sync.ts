/**
 * Fernet tokens (spec version 0x80) over `node:crypto`, synchronous: the engine of the message
 * path (session frames and history at rest). Tokens are byte for byte those of the WebCrypto
 * engine in `fernet.ts`, which stays the public contract; both share the token layout and its
 * checks (`fernet_token.ts`) and pass the same spec vectors.
 *
 * Why a second engine: each WebCrypto call is a hand-off to a thread pool and back through a
 * promise. A token costs two calls, a delivered message six, and in `deno task bench` that made
 * WebCrypto the bottleneck of delivery (latency and throughput); the same work through
 * `node:crypto` is synchronous and about 2.5x cheaper in CPU per token (bench/README.md).
 *
 * @module
 */

import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  type KeyObject,
} from "node:crypto";
import {
  encryptParams,
  HMAC_LENGTH,
  InvalidTokenError,
  layOutToken,
  parseToken,
  splitKey,
  timingSafeEqual,
} from "./fernet_token.ts";

export { generateKey, InvalidKeyError, InvalidTokenError } from "./fernet_token.ts";

const encoder = new TextEncoder();

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
 * ```
 */
export class FernetSync {
  #signing: KeyObject;
  #encryption: KeyObject;

  /**
   * Imports a key made by `generateKey` (base64url of 32 bytes; `=` padding optional).
   *
   * @param key the Fernet key
   * @throws {InvalidKeyError} when the key is not base64url or does not decode to 32 bytes
   */
  constructor(key: string) {
    const raw = splitKey(key);
    this.#signing = createSecretKey(raw.signing);
    this.#encryption = createSecretKey(raw.encryption);
    raw.signing.fill(0);
    raw.encryption.fill(0);
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
   * import { FernetSync, generateKey } from "./fernet_sync.ts";
   * const token = new FernetSync(generateKey()).encrypt(new Uint8Array([1, 2, 3]));
   * ```
   */
  encrypt(data: Uint8Array | string, opts?: { now?: number; iv?: Uint8Array }): string {
    const plain = typeof data === "string" ? encoder.encode(data) : data;
    const { seconds, iv } = encryptParams(opts);
    const cipher = createCipheriv("aes-128-cbc", this.#encryption, iv);
    const token = layOutToken(seconds, iv, [cipher.update(plain), cipher.final()]);
    const signedLength = token.length - HMAC_LENGTH;
    const mac = createHmac("sha256", this.#signing).update(token.subarray(0, signedLength))
      .digest();
    token.set(mac, signedLength);
    return token.toBase64({ alphabet: "base64url" });
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
   *
   * @example
   * ```ts
   * import { FernetSync, generateKey } from "./fernet_sync.ts";
   * const f = new FernetSync(generateKey());
   * const bytes = f.decrypt(f.encrypt("hi"), { ttl: 30 });
   * ```
   */
  decrypt(token: string, opts?: { ttl?: number; now?: number }): Uint8Array {
    const parsed = parseToken(token, opts);
    const expected = createHmac("sha256", this.#signing).update(parsed.signed).digest();
    if (!timingSafeEqual(expected, parsed.mac)) throw new InvalidTokenError("wrong HMAC");
    const decipher = createDecipheriv("aes-128-cbc", this.#encryption, parsed.iv);
    const head = decipher.update(parsed.ciphertext);
    let tail: Uint8Array;
    try {
      tail = decipher.final();
    } catch {
      // With a valid HMAC the only way AES-CBC decryption fails is bad PKCS7 padding.
      throw new InvalidTokenError("bad padding");
    }
    const plain = new Uint8Array(head.length + tail.length);
    plain.set(head);
    plain.set(tail, head.length);
    return plain;
  }
}
