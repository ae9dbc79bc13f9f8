/**
 * The crypto limit: raw Fernet encrypt+decrypt rate for 100 B and 4 KiB messages, with the
 * project's two engines: WebCrypto (`lib/crypto/fernet.ts`, one at a time and 64 in flight) and
 * `node:crypto` (`lib/crypto/fernet_sync.ts`, the one sessions and the history store use: AES from
 * `node:crypto`, HMAC-SHA256 from `lib/crypto/sha256.ts`), and the two HMACs side by side.
 *
 * @module
 */

import { Fernet, generateKey } from "../lib/crypto/fernet.ts";
import { createHash } from "node:crypto";
import { FernetSync } from "../lib/crypto/fernet_sync.ts";
import { HmacSha256 } from "../lib/crypto/sha256.ts";
import { type FigureBook, ratio } from "./report.ts";
import { rateOf } from "./stats.ts";

/** Message sizes measured everywhere. */
export const SIZES = [{ bytes: 100, tag: "100B", label: "100 B" }, {
  bytes: 4096,
  tag: "4KiB",
  label: "4 KiB",
}] as const;

/** Options of every bench job. */
export interface JobOptions {
  /** Shorter runs, fewer samples. */
  quick: boolean;
}

/**
 * Measures the Fernet limits and adds `fernet.webcrypto.seq.SIZE`, `fernet.webcrypto.par.SIZE`,
 * `fernet.node.SIZE` and `fernet.limit.SIZE` (the best of them: the limit the pipeline is
 * compared with) to `book`.
 *
 * @throws {Error} when the two implementations do not understand each other's tokens.
 */
export async function benchCrypto(book: FigureBook, opts: JobOptions): Promise<void> {
  const key = generateKey();
  const web = await Fernet.create(key);
  using node = new FernetSync(key);
  const ms = opts.quick ? 400 : 1200;
  for (const size of SIZES) {
    const plain = crypto.getRandomValues(new Uint8Array(size.bytes));
    // The comparison is only fair if both speak the same format.
    const a = node.decrypt(await web.encrypt(plain));
    const b = await web.decrypt(node.encrypt(plain));
    if (a.length !== plain.length || b.length !== plain.length) {
      throw new Error("the node:crypto and WebCrypto Fernet engines disagree");
    }
    const seq = await rateOf(async () => {
      await web.decrypt(await web.encrypt(plain));
    }, { ms });
    const inFlight = 64;
    const par = await rateOf(async () => {
      const tasks: Promise<Uint8Array>[] = [];
      for (let i = 0; i < inFlight; i++) tasks.push(web.encrypt(plain).then((t) => web.decrypt(t)));
      await Promise.all(tasks);
    }, { ms, batch: inFlight });
    const nodeRate = await rateOf(() => {
      for (let i = 0; i < 64; i++) node.decrypt(node.encrypt(plain));
    }, { ms, batch: 64 });
    book.add({
      id: `fernet.webcrypto.seq.${size.tag}`,
      group: "limits",
      label: `Fernet enc+dec ${size.label}, WebCrypto, 1 at a time`,
      value: seq.rate,
      unit: "msg/s",
      note: `${seq.cpuUs.toFixed(1)} µs CPU per enc+dec`,
    });
    book.add({
      id: `fernet.webcrypto.par.${size.tag}`,
      group: "limits",
      label: `Fernet enc+dec ${size.label}, WebCrypto, ${inFlight} in flight`,
      value: par.rate,
      unit: "msg/s",
      note: `${par.cpuUs.toFixed(1)} µs CPU per enc+dec (WebCrypto runs on a thread pool)`,
    });
    const bestWeb = Math.max(seq.rate, par.rate);
    const limit = Math.max(bestWeb, nodeRate.rate);
    book.add({
      id: `fernet.node.${size.tag}`,
      group: "limits",
      label: `Fernet enc+dec ${size.label}, node:crypto AES (sync, the message path's engine)`,
      value: nodeRate.rate,
      unit: "msg/s",
      note: `${(nodeRate.rate / bestWeb).toFixed(2)}x the best WebCrypto rate; ` +
        `${nodeRate.cpuUs.toFixed(1)} µs CPU per enc+dec`,
    });
    book.add({
      id: `fernet.cpu.webcrypto.${size.tag}`,
      group: "limits",
      label: `  CPU per Fernet enc+dec ${size.label}, WebCrypto (64 in flight)`,
      value: par.cpuUs,
      unit: "µs",
    });
    book.add({
      id: `fernet.cpu.node.${size.tag}`,
      group: "limits",
      label: `  CPU per Fernet enc+dec ${size.label}, node:crypto`,
      value: nodeRate.cpuUs,
      unit: "µs",
    });
    await benchHmac(book, { ms, bytes: size.bytes, tag: size.tag, label: size.label });
    book.add({
      id: `fernet.limit.${size.tag}`,
      group: "limits",
      label: `raw Fernet ${size.label}`,
      value: limit,
      unit: "msg/s",
      note:
        "the best rate above, of either engine: the limit the message figures are compared with",
    });
  }
}

/**
 * One token's HMAC-SHA256 (the bytes a `size` message's token signs), with `node:crypto` keyed
 * hash objects (two copies and two digests per tag, the fastest way through its API) and with
 * `lib/crypto/sha256.ts`; adds `fernet.hmac.node.SIZE` and `fernet.hmac.ts.SIZE` (µs per tag).
 */
async function benchHmac(
  book: FigureBook,
  opts: { ms: number; bytes: number; tag: string; label: string },
): Promise<void> {
  const key = crypto.getRandomValues(new Uint8Array(16));
  // version + timestamp + IV + the padded ciphertext.
  const signed = crypto.getRandomValues(new Uint8Array(25 + (opts.bytes + 16 - opts.bytes % 16)));
  const pad = (byte: number) => {
    const p = new Uint8Array(64).fill(byte);
    key.forEach((k, i) => p[i] ^= k);
    return p;
  };
  const inner = createHash("sha256").update(pad(0x36));
  const outer = createHash("sha256").update(pad(0x5c));
  using ours = new HmacSha256(key);
  const out = new Uint8Array(32);
  const node = await rateOf(() => {
    for (let i = 0; i < 64; i++) outer.copy().update(inner.copy().update(signed).digest()).digest();
  }, { ms: opts.ms, batch: 64 });
  const ts = await rateOf(() => {
    for (let i = 0; i < 64; i++) ours.sign(signed, out);
  }, { ms: opts.ms, batch: 64 });
  book.add({
    id: `fernet.hmac.node.${opts.tag}`,
    group: "limits",
    label: `  HMAC of a ${opts.label} token, node:crypto keyed hash copies`,
    value: 1e6 / node.rate,
    unit: "µs",
  });
  book.add({
    id: `fernet.hmac.ts.${opts.tag}`,
    group: "limits",
    label: `  HMAC of a ${opts.label} token, lib/crypto/sha256.ts (the engine's)`,
    value: 1e6 / ts.rate,
    unit: "µs",
    ratio: ratio(1e6 / ts.rate, book.get(`fernet.hmac.node.${opts.tag}`)),
  });
}
