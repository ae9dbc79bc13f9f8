/**
 * Length-prefixed frames: a u32 big-endian length followed by that many payload bytes.
 *
 * Pure code, no I/O: {@linkcode encodeFrame} builds frames and {@linkcode FrameDecoder} takes
 * bytes in whatever chunks the network delivers and returns whole payloads.
 *
 * @module
 */

/** Largest payload accepted by default (1 MiB). */
export const DEFAULT_MAX_FRAME_SIZE = 1 << 20;

/** Size of the length prefix in bytes. */
export const FRAME_HEADER_SIZE = 4;

/** Thrown by {@linkcode FrameDecoder.push} and {@linkcode encodeFrame} for a frame we refuse. */
export class FrameError extends Error {
  /** Why the frame was refused. */
  readonly reason: "too-large";

  /**
   * Makes the error.
   *
   * @param message What went wrong, for the log.
   * @param reason A stable code for the failure.
   */
  constructor(message: string, reason: "too-large") {
    super(message);
    this.name = "FrameError";
    this.reason = reason;
  }
}

/** Options for framing. */
export interface FrameOptions {
  /** Largest payload in bytes (default {@linkcode DEFAULT_MAX_FRAME_SIZE}). */
  maxFrameSize?: number;
}

/**
 * Builds one frame around `payload`.
 *
 * @throws {FrameError} when the payload is larger than the maximum frame size.
 * @example
 * ```ts
 * const frame = encodeFrame(new TextEncoder().encode("hi"));
 * // frame is [0, 0, 0, 2, 104, 105]
 * ```
 */
export function encodeFrame(payload: Uint8Array, opts: FrameOptions = {}): Uint8Array {
  const max = opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
  if (payload.length > max) {
    throw new FrameError(
      `frame of ${payload.length} bytes exceeds the ${max}-byte limit`,
      "too-large",
    );
  }
  const frame = new Uint8Array(FRAME_HEADER_SIZE + payload.length);
  new DataView(frame.buffer).setUint32(0, payload.length);
  frame.set(payload, FRAME_HEADER_SIZE);
  return frame;
}

/**
 * Builds many frames into one buffer, so they can leave in a single write.
 *
 * @throws {FrameError} when any payload is larger than the maximum frame size.
 * @example
 * ```ts
 * const bytes = encodeFrames([new Uint8Array([1]), new Uint8Array([2, 3])]);
 * // bytes.length === 4 + 1 + 4 + 2
 * ```
 */
export function encodeFrames(payloads: readonly Uint8Array[], opts: FrameOptions = {}): Uint8Array {
  const max = opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
  let total = 0;
  for (const p of payloads) {
    if (p.length > max) {
      throw new FrameError(`frame of ${p.length} bytes exceeds the ${max}-byte limit`, "too-large");
    }
    total += FRAME_HEADER_SIZE + p.length;
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const p of payloads) {
    view.setUint32(at, p.length);
    out.set(p, at + FRAME_HEADER_SIZE);
    at += FRAME_HEADER_SIZE + p.length;
  }
  return out;
}

/**
 * Incremental frame parser: feed it bytes as they arrive, get whole payloads back.
 *
 * A length above the limit is refused as soon as its 4-byte prefix is seen, so a hostile
 * peer cannot make us buffer more than one maximum-size frame.
 *
 * @example
 * ```ts
 * const decoder = new FrameDecoder();
 * decoder.push(new Uint8Array([0, 0, 0, 2, 104])); // => []
 * decoder.push(new Uint8Array([105]));             // => [Uint8Array [104, 105]]
 * ```
 */
export class FrameDecoder {
  #max: number;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #need = -1; // payload length of the frame in progress, -1 while the header is incomplete

  /**
   * Makes a decoder with nothing buffered.
   *
   * @param opts Limits; see {@linkcode FrameOptions}.
   */
  constructor(opts: FrameOptions = {}) {
    this.#max = opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
  }

  /** The current payload size limit. */
  get maxFrameSize(): number {
    return this.#max;
  }

  /** Changes the payload size limit (e.g. raised once a peer is authenticated). */
  set maxFrameSize(bytes: number) {
    this.#max = bytes;
  }

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Adds bytes and returns every payload they complete, in order.
   *
   * Returned payloads may share memory with `chunk`: do not overwrite a pushed chunk while its
   * payloads are in use (chunks from a `ReadableStream` are fresh each time).
   *
   * @throws {FrameError} when a length prefix exceeds the limit; the decoder is then unusable
   * and the connection should be closed.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (chunk.length === 0) return out;
    // Fast path: nothing buffered, parse straight out of the chunk without copying it.
    let at = 0;
    if (this.#buffered === 0 && this.#need < 0) {
      while (chunk.length - at >= FRAME_HEADER_SIZE) {
        const len = readLength(chunk, at);
        this.#check(len);
        if (chunk.length - at - FRAME_HEADER_SIZE < len) break;
        out.push(chunk.subarray(at + FRAME_HEADER_SIZE, at + FRAME_HEADER_SIZE + len));
        at += FRAME_HEADER_SIZE + len;
      }
      if (at === chunk.length) return out;
      chunk = chunk.subarray(at);
    }
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#drain(out);
    return out;
  }

  #check(len: number): void {
    if (len > this.#max) {
      throw new FrameError(
        `peer announced a ${len}-byte frame, over the ${this.#max}-byte limit`,
        "too-large",
      );
    }
  }

  #drain(out: Uint8Array[]): void {
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < FRAME_HEADER_SIZE) return;
        const header = this.#take(FRAME_HEADER_SIZE);
        const len = readLength(header, 0);
        this.#check(len);
        this.#need = len;
      }
      if (this.#buffered < this.#need) return;
      out.push(this.#take(this.#need));
      this.#need = -1;
    }
  }

  #take(n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    const first = this.#chunks[0];
    if (first.length >= n) {
      const part = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return part;
    }
    const part = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const head = this.#chunks[0];
      const use = Math.min(head.length, n - filled);
      part.set(head.subarray(0, use), filled);
      filled += use;
      if (use === head.length) this.#chunks.shift();
      else this.#chunks[0] = head.subarray(use);
    }
    this.#buffered -= n;
    return part;
  }
}

function readLength(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) >>> 0) + (bytes[at + 1] << 16) + (bytes[at + 2] << 8) + bytes[at + 3];
}
