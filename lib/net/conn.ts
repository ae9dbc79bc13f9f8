/**
 * A framed TCP connection: thin I/O over {@linkcode FrameDecoder} and {@linkcode encodeFrames}.
 *
 * Reads are pulled (one payload per {@linkcode FramedConn.read}), so a slow consumer applies
 * back-pressure to the peer. Writes are coalesced: every write issued in the same turn of the
 * event loop, or while another write is on the wire, leaves in one buffer and one system call.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { DEFAULT_MAX_FRAME_SIZE, encodeFrames, FrameDecoder } from "./frame.ts";

/** Thrown by {@linkcode FramedConn.write} once the connection is closed or broken. */
export class ConnectionClosedError extends Error {
  /**
   * Makes the error.
   *
   * @param message Why the write could not happen (default "connection closed").
   */
  constructor(message = "connection closed") {
    super(message);
    this.name = "ConnectionClosedError";
  }
}

/** Options for {@linkcode FramedConn}. */
export interface FramedConnOptions {
  /** Largest frame accepted or sent (default 1 MiB). */
  maxFrameSize?: number;
  /** Bytes that may wait to be sent before the peer counts as not reading (default 16 MiB). */
  maxQueuedBytes?: number;
}

/** The most one read takes from the socket. */
const READ_BUFFER_SIZE = 64 * 1024;

/** Default {@linkcode FramedConnOptions.maxQueuedBytes}. */
export const DEFAULT_MAX_QUEUED_BYTES = 16 << 20;

interface PendingWrite {
  payload: Uint8Array;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * Wraps a `Deno.Conn` so that it carries whole payloads instead of a byte stream.
 *
 * @example
 * ```ts
 * const conn = new FramedConn(await Deno.connect({ hostname: "127.0.0.1", port: 5000 }));
 * await conn.write(new TextEncoder().encode("hello"));
 * const reply = await conn.read(); // null when the peer closed
 * conn.close();
 * ```
 */
export class FramedConn {
  #conn: Deno.Conn;
  /** Where reads land; what was read is copied out, since frames are views of their chunk. */
  #readBuffer = new Uint8Array(READ_BUFFER_SIZE);
  #decoder: FrameDecoder;
  #maxFrameSize: number;
  #maxQueuedBytes: number;
  #queuedBytes = 0;
  #ready: Uint8Array[] = [];
  #pending: PendingWrite[] = [];
  #flushing = false;
  /** A flush is set for the end of this turn of the event loop and has not started. */
  #scheduled = false;
  #closed = false;
  #bytesIn = 0;

  /** Address of the other end. */
  readonly remote: { hostname: string; port: number };

  /**
   * Takes over `conn` and frames its bytes; for TCP, Nagle's algorithm is turned off.
   *
   * @param conn An open TCP (or other stream) connection; the FramedConn owns it from now on.
   * @param opts Limits, see {@linkcode FramedConnOptions}.
   */
  constructor(conn: Deno.Conn, opts: FramedConnOptions = {}) {
    this.#conn = conn;
    this.#maxFrameSize = opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
    this.#maxQueuedBytes = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.#decoder = new FrameDecoder({ maxFrameSize: this.#maxFrameSize });
    const addr = conn.remoteAddr as Deno.NetAddr;
    this.remote = { hostname: addr.hostname ?? "", port: addr.port ?? 0 };
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  }

  /** Changes the frame size limit in both directions (e.g. raised after authentication). */
  setMaxFrameSize(bytes: number): void {
    this.#maxFrameSize = bytes;
    this.#decoder.maxFrameSize = bytes;
  }

  /** True once {@linkcode close} ran or the connection broke. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes received so far (for idle and slow-drip accounting). */
  get bytesIn(): number {
    return this.#bytesIn;
  }

  /**
   * Returns the next payload, or `null` once the peer closed the stream (or we closed it).
   *
   * @throws {FrameError} when the peer sends a frame over the size limit.
   */
  async read(): Promise<Uint8Array | null> {
    while (this.#ready.length === 0) {
      if (this.#closed) return null;
      // conn.read, not conn.readable: the stream's reader adds promise hops and a 64 KiB
      // buffer to every read, and a delivery waits for two reads on its way.
      let n: number | null;
      try {
        n = await this.#conn.read(this.#readBuffer);
      } catch (e) {
        // A reset or a read cut short by close(): both mean the stream is over for us.
        if (this.#closed || e instanceof Deno.errors.ConnectionReset || isStreamError(e)) {
          this.close();
          return null;
        }
        throw e;
      }
      if (n === null) {
        this.close();
        return null;
      }
      if (this.#closed) return null;
      this.#bytesIn += n;
      const frames = this.#decoder.push(this.#readBuffer.slice(0, n));
      for (const f of frames) this.#ready.push(f);
    }
    return this.#ready.shift()!;
  }

  /**
   * Returns every payload already received (at least one, waiting if needed), or `null` at the
   * end of the stream. Lets a consumer process a burst of frames in one pass.
   *
   * @throws {FrameError} when the peer sends a frame over the size limit.
   */
  async readBatch(): Promise<Uint8Array[] | null> {
    const first = await this.read();
    if (first === null) return null;
    const batch = [first];
    for (const f of this.#ready.splice(0)) batch.push(f);
    return batch;
  }

  /**
   * Sends one payload as a frame; resolves once it was handed to the operating system.
   * Frames wait for the end of the current turn of the event loop so that a burst shares one
   * system call; with `now`, the write starts at once (after the frames before it), for a frame
   * the peer is waiting for while this turn has more work to do.
   *
   * @throws {ConnectionClosedError} when the connection is closed or breaks while writing.
   * @throws {FrameError} when the payload is over the frame size limit.
   */
  write(payload: Uint8Array, opts: { now?: boolean } = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new ConnectionClosedError());
    if (payload.length > this.#maxFrameSize) {
      // encodeFrames would throw too, but later and for the whole batch; refuse just this one.
      return Promise.reject(
        new ConnectionClosedError(`payload of ${payload.length} bytes is over the frame limit`),
      );
    }
    if (this.#queuedBytes + payload.length > this.#maxQueuedBytes) {
      // A peer that does not read would otherwise make us buffer without end.
      this.close();
      return Promise.reject(
        new ConnectionClosedError(
          `peer is not reading: over ${this.#maxQueuedBytes} bytes waiting to be sent`,
        ),
      );
    }
    this.#queuedBytes += payload.length;
    return new Promise((resolve, reject) => {
      this.#pending.push({ payload, resolve, reject });
      // A write under way takes this frame with the next system call.
      if (this.#flushing) return;
      if (opts.now) {
        // Also when frames before it wait for the end of the turn: they leave with it, now.
        // Deno starts a socket write when it is called, so this sends before returning here.
        this.#scheduled = false;
        this.#startFlush();
      } else if (!this.#scheduled) {
        // Wait for the end of this turn of the event loop (a few µs), so that the frames of a
        // burst (a batch of messages, their acks) share one system call.
        this.#scheduled = true;
        setImmediate(() => {
          if (!this.#scheduled) return; // a `now` frame took them already
          this.#scheduled = false;
          this.#startFlush();
        });
      }
    });
  }

  #startFlush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    this.#flush();
  }

  async #flush(): Promise<void> {
    try {
      while (this.#pending.length > 0 && !this.#closed) {
        const batch = this.#pending;
        this.#pending = [];
        let batchBytes = 0;
        for (const p of batch) batchBytes += p.payload.length;
        try {
          const bytes = encodeFrames(batch.map((p) => p.payload), {
            maxFrameSize: this.#maxFrameSize,
          });
          let at = 0;
          while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
          for (const p of batch) p.resolve();
        } catch (e) {
          const err = new ConnectionClosedError(`write failed: ${(e as Error).message}`);
          for (const p of batch) p.reject(err);
          this.close();
        } finally {
          this.#queuedBytes -= batchBytes;
        }
      }
    } finally {
      this.#flushing = false;
      if (this.#closed) this.#failPending();
    }
  }

  #failPending(): void {
    const err = new ConnectionClosedError();
    for (const p of this.#pending.splice(0)) {
      this.#queuedBytes -= p.payload.length;
      p.reject(err);
    }
  }

  /** Closes the connection; pending reads return `null`, pending writes reject. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) throw e;
    }
    // A flush under way or set for the end of the turn fails what is left when it runs.
    if (!this.#flushing && !this.#scheduled) this.#failPending();
  }
}

function isStreamError(e: unknown): boolean {
  return e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted ||
    e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.UnexpectedEof ||
    (e instanceof TypeError && /closed|released|errored/i.test(e.message));
}
