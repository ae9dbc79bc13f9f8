/**
 * Fernet (spec version 0x80) over `node:crypto`, synchronous: the comparison implementation for
 * the WebCrypto one in lib/crypto/fernet.ts. Benchmark use only; it produces and accepts the same
 * tokens (the crypto bench checks that both ways before measuring).
 *
 * @module
 */

import { createCipheriv, createDecipheriv, createHmac, randomFillSync } from "node:crypto";
import { Buffer } from "node:buffer";

const VERSION = 0x80;
const HEADER = 25;
const MAC = 32;
const BASE64URL = { alphabet: "base64url" } as const;

/**
 * A Fernet key bound to `node:crypto` primitives.
 *
 * @example
 * ```ts
 * const f = new NodeFernet(generateKey());
 * const plain = f.decrypt(f.encrypt(new TextEncoder().encode("hi")));
 * ```
 */
export class NodeFernet {
  #signing: Buffer;
  #encryption: Buffer;

  /**
   * @param key base64url of 32 bytes (signing key, then encryption key).
   * @throws {RangeError} when the key does not decode to 32 bytes.
   */
  constructor(key: string) {
    const raw = Uint8Array.fromBase64(key, BASE64URL);
    if (raw.length !== 32) throw new RangeError(`a Fernet key is 32 bytes, got ${raw.length}`);
    this.#signing = Buffer.from(raw.subarray(0, 16));
    this.#encryption = Buffer.from(raw.subarray(16));
  }

  /** Encrypts `plain` into a token (base64url with padding). */
  encrypt(plain: Uint8Array): string {
    const iv = randomFillSync(Buffer.alloc(16));
    const cipher = createCipheriv("aes-128-cbc", this.#encryption, iv);
    const c1 = cipher.update(plain);
    const c2 = cipher.final();
    const token = new Uint8Array(HEADER + c1.length + c2.length + MAC);
    const seconds = Math.floor(Date.now() / 1000);
    token[0] = VERSION;
    const view = new DataView(token.buffer);
    view.setUint32(1, Math.floor(seconds / 0x1_0000_0000));
    view.setUint32(5, seconds >>> 0);
    token.set(iv, 9);
    token.set(c1, HEADER);
    token.set(c2, HEADER + c1.length);
    const signed = token.length - MAC;
    const mac = createHmac("sha256", this.#signing).update(token.subarray(0, signed)).digest();
    token.set(mac, signed);
    return token.toBase64(BASE64URL);
  }

  /**
   * Verifies and decrypts a token (no TTL check).
   *
   * @throws {Error} when the token is malformed or its HMAC is wrong.
   */
  decrypt(token: string): Uint8Array {
    const bytes = Uint8Array.fromBase64(token, BASE64URL);
    const signed = bytes.length - MAC;
    if (bytes[0] !== VERSION || signed < HEADER + 16 || (signed - HEADER) % 16 !== 0) {
      throw new Error("malformed token");
    }
    const mac = createHmac("sha256", this.#signing).update(bytes.subarray(0, signed)).digest();
    let diff = 0;
    for (let i = 0; i < MAC; i++) diff |= mac[i] ^ bytes[signed + i];
    if (diff !== 0) throw new Error("wrong HMAC");
    const decipher = createDecipheriv("aes-128-cbc", this.#encryption, bytes.subarray(9, HEADER));
    const p1 = decipher.update(bytes.subarray(HEADER, signed));
    const p2 = decipher.final();
    const out = new Uint8Array(p1.length + p2.length);
    out.set(p1);
    out.set(p2, p1.length);
    return out;
  }
}
