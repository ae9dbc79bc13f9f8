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

import {
  encryptParams,
  generateKey,
  HMAC_LENGTH,
  InvalidKeyError,
  InvalidTokenError,
  layOutToken,
  parseToken,
  splitKey,
  timingSafeEqual,
} from "./fernet_token.ts";

export { generateKey, InvalidKeyError, InvalidTokenError };

const encoder = new TextEncoder();

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
    const raw = splitKey(key);
    const [signing, encryption] = await Promise.all([
      crypto.subtle.importKey(
        "raw",
        raw.signing,
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign"],
      ),
      crypto.subtle.importKey("raw", raw.encryption, "AES-CBC", false, ["encrypt", "decrypt"]),
    ]);
    raw.signing.fill(0);
    raw.encryption.fill(0);
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
    const { seconds, iv } = encryptParams(opts);
    const ciphertext = new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-CBC", iv }, this.#encryption, plain),
    );
    const token = layOutToken(seconds, iv, [ciphertext]);
    const signedLength = token.length - HMAC_LENGTH;
    const mac = await crypto.subtle.sign("HMAC", this.#signing, token.subarray(0, signedLength));
    token.set(new Uint8Array(mac), signedLength);
    return token.toBase64({ alphabet: "base64url" });
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
    const parsed = parseToken(token, opts);
    const expected = new Uint8Array(
      await crypto.subtle.sign("HMAC", this.#signing, parsed.signed),
    );
    if (!timingSafeEqual(expected, parsed.mac)) throw new InvalidTokenError("wrong HMAC");

    let plain: ArrayBuffer;
    try {
      plain = await crypto.subtle.decrypt(
        { name: "AES-CBC", iv: parsed.iv },
        this.#encryption,
        parsed.ciphertext,
      );
    } catch {
      // With a valid HMAC the only way AES-CBC decryption fails is bad PKCS7 padding.
      throw new InvalidTokenError("bad padding");
    }
    return new Uint8Array(plain);
  }
}
