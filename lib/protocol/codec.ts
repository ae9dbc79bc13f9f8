/**
 * Tiny big-endian binary writer and reader for protocol messages. Pure code.
 *
 * @module
 */

/** Thrown by {@linkcode BinaryReader} when input is truncated or a field is out of range. */
export class DecodeError extends Error {
  /**
   * Makes the error.
   *
   * @param message What was wrong with the input.
   */
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Appends fields to a growing buffer.
 *
 * @example
 * ```ts
 * const bytes = new BinaryWriter().u8(1).string8("alice").finish();
 * ```
 */
export class BinaryWriter {
  #buf: Uint8Array;
  #view: DataView;
  #at = 0;

  /**
   * Makes an empty writer.
   *
   * @param capacity Initial capacity in bytes; the buffer grows as needed.
   */
  constructor(capacity = 256) {
    this.#buf = new Uint8Array(capacity);
    this.#view = new DataView(this.#buf.buffer);
  }

  #room(n: number): void {
    if (this.#at + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#at + n));
    next.set(this.#buf.subarray(0, this.#at));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  /** Writes one unsigned byte. */
  u8(v: number): this {
    this.#room(1);
    this.#view.setUint8(this.#at, v);
    this.#at += 1;
    return this;
  }

  /** Writes an unsigned 16-bit integer. */
  u16(v: number): this {
    this.#room(2);
    this.#view.setUint16(this.#at, v);
    this.#at += 2;
    return this;
  }

  /** Writes an unsigned 32-bit integer. */
  u32(v: number): this {
    this.#room(4);
    this.#view.setUint32(this.#at, v);
    this.#at += 4;
    return this;
  }

  /** Writes a non-negative safe integer as an unsigned 64-bit integer. */
  u64(v: number): this {
    this.#room(8);
    this.#view.setUint32(this.#at, Math.floor(v / 0x1_0000_0000));
    this.#view.setUint32(this.#at + 4, v >>> 0);
    this.#at += 8;
    return this;
  }

  /** Writes bytes as they are (the reader must know their length). */
  raw(bytes: Uint8Array): this {
    this.#room(bytes.length);
    this.#buf.set(bytes, this.#at);
    this.#at += bytes.length;
    return this;
  }

  /** Writes bytes preceded by a u16 length. */
  bytes16(bytes: Uint8Array): this {
    if (bytes.length > 0xffff) throw new RangeError("field longer than 65535 bytes");
    return this.u16(bytes.length).raw(bytes);
  }

  /** Writes a UTF-8 string preceded by a u8 byte length. */
  string8(s: string): this {
    const b = encoder.encode(s);
    if (b.length > 0xff) throw new RangeError("string longer than 255 bytes");
    return this.u8(b.length).raw(b);
  }

  /** Returns the bytes written so far. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#at);
  }
}

/**
 * Reads fields written by {@linkcode BinaryWriter}; every read checks bounds.
 *
 * @example
 * ```ts
 * const r = new BinaryReader(bytes);
 * const kind = r.u8();
 * const name = r.string8();
 * r.end(); // throws if bytes are left over
 * ```
 */
export class BinaryReader {
  #bytes: Uint8Array;
  #view: DataView;
  #at = 0;

  /**
   * Makes a reader positioned at the first byte.
   *
   * @param bytes The input; it is not copied.
   */
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  #need(n: number): void {
    if (this.#at + n > this.#bytes.length) throw new DecodeError("truncated input");
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.#bytes.length - this.#at;
  }

  /** Reads one unsigned byte. @throws {DecodeError} when truncated. */
  u8(): number {
    this.#need(1);
    return this.#view.getUint8(this.#at++);
  }

  /** Reads an unsigned 16-bit integer. @throws {DecodeError} when truncated. */
  u16(): number {
    this.#need(2);
    const v = this.#view.getUint16(this.#at);
    this.#at += 2;
    return v;
  }

  /** Reads an unsigned 32-bit integer. @throws {DecodeError} when truncated. */
  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#at);
    this.#at += 4;
    return v;
  }

  /** Reads an unsigned 64-bit integer; @throws {DecodeError} when truncated or above 2^53. */
  u64(): number {
    this.#need(8);
    const hi = this.#view.getUint32(this.#at);
    const lo = this.#view.getUint32(this.#at + 4);
    this.#at += 8;
    if (hi > 0x1f_ffff) throw new DecodeError("integer out of range");
    return hi * 0x1_0000_0000 + lo;
  }

  /** Reads `n` bytes (a view, not a copy). @throws {DecodeError} when truncated. */
  raw(n: number): Uint8Array {
    this.#need(n);
    const out = this.#bytes.subarray(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }

  /** Reads the rest of the input. */
  rest(): Uint8Array {
    return this.raw(this.remaining);
  }

  /** Reads bytes preceded by a u16 length. @throws {DecodeError} when truncated. */
  bytes16(): Uint8Array {
    return this.raw(this.u16());
  }

  /** Reads a u8-length UTF-8 string. @throws {DecodeError} when truncated or not UTF-8. */
  string8(): string {
    return utf8(this.raw(this.u8()));
  }

  /**
   * Checks that the whole input has been read.
   *
   * @throws {DecodeError} when bytes are left over.
   */
  end(): void {
    if (this.#at !== this.#bytes.length) throw new DecodeError("trailing bytes");
  }
}

/**
 * Decodes strict UTF-8.
 *
 * @throws {DecodeError} when the bytes are not valid UTF-8.
 */
export function utf8(bytes: Uint8Array): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new DecodeError("invalid UTF-8");
  }
}

/** Encodes a string as UTF-8. */
export function toUtf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return bytes.toHex();
}

/**
 * Parses lowercase or uppercase hex.
 *
 * @throws {DecodeError} when `hex` is not an even-length hex string.
 */
export function fromHex(hex: string): Uint8Array {
  try {
    return Uint8Array.fromHex(hex);
  } catch {
    // The engine's SyntaxError is exactly this case.
    throw new DecodeError("not hex");
  }
}
