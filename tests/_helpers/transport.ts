/**
 * In-memory frame transports for protocol tests, with a hook to tamper with frames in flight.
 *
 * @module
 */

import type { FrameTransport } from "../../lib/protocol/handshake.ts";

/** A frame passing from one side to the other. */
export type Tamper = (
  direction: "a->b" | "b->a",
  index: number,
  frame: Uint8Array,
) => Uint8Array | null;

class Queue {
  #items: (Uint8Array | null)[] = [];
  #waiters: ((v: Uint8Array | null) => void)[] = [];
  push(v: Uint8Array | null) {
    const w = this.#waiters.shift();
    if (w) w(v);
    else this.#items.push(v);
  }
  pop(): Promise<Uint8Array | null> {
    if (this.#items.length) return Promise.resolve(this.#items.shift()!);
    return new Promise((r) => this.#waiters.push(r));
  }
}

/** A connected pair of in-memory transports. Frames written on one are read on the other. */
export function transportPair(tamper?: Tamper): {
  a: FrameTransport & { sent: Uint8Array[] };
  b: FrameTransport & { sent: Uint8Array[] };
} {
  const toA = new Queue();
  const toB = new Queue();
  let ab = 0;
  let ba = 0;
  const make = (
    inbox: Queue,
    outbox: Queue,
    dir: "a->b" | "b->a",
  ): FrameTransport & { sent: Uint8Array[] } => {
    let closed = false;
    const sent: Uint8Array[] = [];
    return {
      sent,
      read: () => closed ? Promise.resolve(null) : inbox.pop(),
      write: (payload) => {
        if (closed) return Promise.reject(new Error("closed"));
        sent.push(payload.slice());
        const i = dir === "a->b" ? ab++ : ba++;
        const out = tamper ? tamper(dir, i, payload.slice()) : payload.slice();
        if (out !== null) outbox.push(out);
        return Promise.resolve();
      },
      close: () => {
        if (closed) return;
        closed = true;
        inbox.push(null);
        outbox.push(null);
      },
    };
  };
  return { a: make(toA, toB, "a->b"), b: make(toB, toA, "b->a") };
}
