/**
 * The Fernet token layout (spec version 0x80), shared by both engines: the WebCrypto one in
 * `fernet.ts` (the public contract) and the synchronous `node:crypto` one in `fernet_sync.ts`
 * (the message path). Pure: no primitive is called here, so every check on a token's shape runs
 * the same in both engines and is tested once.
 *
 * ```
 * token = base64url(0x80 ‖ timestamp (u64 BE, s) ‖ IV (16) ‖ AES-128-CBC/PKCS7 ciphertext ‖ HMAC)
 * HMAC  = HMAC-SHA256(signing key, 0x80 ‖ timestamp ‖ IV ‖ ciphertext)
 * key   = base64url(signing key (16) ‖ encryption key (16))
 * ```
 *
 * @module
 */

const VERSION = 0x80;
/** Bytes before the ciphertext: version, timestamp, IV. */
export const HEADER_LENGTH: number = 1 + 8 + 16;
/** Bytes of the HMAC-SHA256 at the end of a token. */
export const HMAC_LENGTH = 32;
const BLOCK = 16;
/** Smallest valid token: header, one cipher block (PKCS7 always pads), HMAC. */
const MIN_TOKEN_LENGTH = HEADER_LENGTH + BLOCK + HMAC_LENGTH;
/** Tokens stamped more than this far in the future are refused when a TTL is checked. */
const MAX_CLOCK_SKEW_S = 60;
const TWO_32 = 0x1_0000_0000;
const BASE64URL = { alphabet: "base64url" } as const;

/**
 * A token was rejected: malformed, forged, tampered, expired or stamped too far in the future.
 * `decrypt` (of either engine) rejects with this error, and only this one, for every bad token.
 * The message names the reason (it is safe to show: the HMAC is checked before anything that
 * depends on the key, so it is no padding oracle).
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
  /**
   * Makes the error; its message is `invalid Fernet token: ` followed by `reason`.
   *
   * @param reason why the token was rejected
   */
  constructor(reason: string) {
    super(`invalid Fernet token: ${reason}`);
    this.name = "InvalidTokenError";
  }
}

/**
 * A key given to `Fernet.create` or `new FernetSync` is not base64url of exactly 32 bytes.
 *
 * @example
 * ```ts
 * import { Fernet, InvalidKeyError } from "./fernet.ts";
 * await Fernet.create("short").catch((e) => console.assert(e instanceof InvalidKeyError));
 * ```
 */
export class InvalidKeyError extends Error {
  /**
   * Makes the error; its message is `invalid Fernet key: ` followed by `reason`.
   *
   * @param reason what is wrong with the key
   */
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
 * Decodes and checks a key: base64url (`=` padding optional) of exactly 32 bytes.
 *
 * @returns the signing key (first 16 bytes) and the encryption key (last 16); the caller should
 *   zero them once imported
 * @throws {InvalidKeyError} when the key is not a string, not base64url, or not 32 bytes
 *
 * @example
 * ```ts
 * import { generateKey, splitKey } from "./fernet_token.ts";
 * const { signing, encryption } = splitKey(generateKey());
 * ```
 */
export function splitKey(
  key: string,
): { signing: Uint8Array<ArrayBuffer>; encryption: Uint8Array<ArrayBuffer> } {
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
  return { signing: raw.subarray(0, 16), encryption: raw.subarray(16) };
}

/**
 * Checks the `now` and `iv` options of `encrypt` and supplies their defaults.
 *
 * @param opts the options of `encrypt`
 * @param into where a random IV is written (default: a new array); unused when `opts.iv` is given
 * @returns whole seconds since the epoch, and the IV (random unless given)
 * @throws {RangeError} when `now` is not a non-negative number or `iv` (or `into`) is not 16 bytes
 *
 * @example
 * ```ts
 * import { encryptParams } from "./fernet_token.ts";
 * const { seconds, iv } = encryptParams({ now: 1 });
 * ```
 */
export function encryptParams(
  opts?: { now?: number; iv?: Uint8Array },
  into?: Uint8Array,
): { seconds: number; iv: Uint8Array<ArrayBuffer> } {
  const now = opts?.now ?? Date.now() / 1000;
  if (!Number.isFinite(now) || now < 0 || now > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(`now must be seconds since the epoch, got ${now}`);
  }
  const iv = (opts?.iv ?? crypto.getRandomValues(into ?? new Uint8Array(16))) as Uint8Array<
    ArrayBuffer
  >;
  if (iv.length !== 16) throw new RangeError(`iv must be 16 bytes, got ${iv.length}`);
  return { seconds: Math.floor(now), iv };
}

/**
 * Writes a token's version, timestamp and IV (the first {@linkcode HEADER_LENGTH} bytes) into
 * `token`.
 *
 * @example
 * ```ts
 * import { HEADER_LENGTH, writeTokenHeader } from "./fernet_token.ts";
 * const token = new Uint8Array(HEADER_LENGTH);
 * writeTokenHeader(token, 0, new Uint8Array(16));
 * ```
 */
export function writeTokenHeader(token: Uint8Array, seconds: number, iv: Uint8Array): void {
  token[0] = VERSION;
  const high = Math.floor(seconds / TWO_32);
  const low = seconds >>> 0;
  for (let i = 0; i < 4; i++) {
    token[1 + i] = high >>> (24 - 8 * i);
    token[5 + i] = low >>> (24 - 8 * i);
  }
  // A no-op copy when `iv` already is that part of `token`.
  token.set(iv, 9);
}

/**
 * Lays out a token's bytes around a ciphertext, leaving the last {@linkcode HMAC_LENGTH} bytes
 * for the HMAC of everything before them.
 *
 * @param seconds the timestamp, whole seconds since the epoch
 * @param iv the 16-byte IV the ciphertext was made with
 * @param ciphertext parts of the AES-128-CBC ciphertext, in order (node:crypto returns two)
 * @returns the token bytes, HMAC not yet filled in
 *
 * @example
 * ```ts
 * import { HMAC_LENGTH, layOutToken } from "./fernet_token.ts";
 * const token = layOutToken(0, new Uint8Array(16), [new Uint8Array(16)]);
 * console.assert(token.length === 25 + 16 + HMAC_LENGTH);
 * ```
 */
export function layOutToken(
  seconds: number,
  iv: Uint8Array,
  ciphertext: Uint8Array[],
): Uint8Array<ArrayBuffer> {
  let length = 0;
  for (const part of ciphertext) length += part.length;
  const token = new Uint8Array(HEADER_LENGTH + length + HMAC_LENGTH);
  writeTokenHeader(token, seconds, iv);
  let at = HEADER_LENGTH;
  for (const part of ciphertext) {
    token.set(part, at);
    at += part.length;
  }
  return token;
}

/** The parts of a token that passed {@linkcode parseToken}: views into one decoded buffer. */
export interface ParsedToken {
  /** version ‖ timestamp ‖ IV ‖ ciphertext: what the HMAC covers. */
  signed: Uint8Array<ArrayBuffer>;
  /** The token's HMAC. */
  mac: Uint8Array<ArrayBuffer>;
  /** The 16-byte IV. */
  iv: Uint8Array<ArrayBuffer>;
  /** The ciphertext, a whole number of blocks. */
  ciphertext: Uint8Array<ArrayBuffer>;
}

/**
 * Decodes a token and checks everything that needs no key: base64url, version, length, whole
 * blocks, and (when `ttl` is given) age and clock skew, as the reference implementations do:
 * refused when `timestamp + ttl < now` or `timestamp > now + 60`.
 *
 * @param token the token (base64url; `=` padding optional)
 * @param opts `ttl`: maximum age in seconds (default: no time checks); `now`: the current time
 *   in seconds since the epoch (default: the clock)
 * @throws {InvalidTokenError} for a malformed, expired or future-stamped token
 * @throws {RangeError} when `ttl` or `now` is not a non-negative number (a caller bug)
 *
 * @example
 * ```ts
 * import { parseToken } from "./fernet_token.ts";
 * try {
 *   parseToken("gAAAAA");
 * } catch (e) {
 *   console.log((e as Error).message); // "invalid Fernet token: too short"
 * }
 * ```
 */
export function parseToken(token: string, opts?: { ttl?: number; now?: number }): ParsedToken {
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
  return {
    signed: bytes.subarray(0, signedLength),
    mac: bytes.subarray(signedLength),
    iv: bytes.subarray(9, HEADER_LENGTH),
    ciphertext: bytes.subarray(HEADER_LENGTH, signedLength),
  };
}

/**
 * Compares two byte arrays without an early exit, so timing leaks no matching prefix.
 *
 * @returns true when both have the same length and bytes
 *
 * @example
 * ```ts
 * import { timingSafeEqual } from "./fernet_token.ts";
 * console.assert(timingSafeEqual(new Uint8Array([1]), new Uint8Array([1])));
 * ```
 */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
