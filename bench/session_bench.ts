/**
 * In-process protocol figures, no database: the handshake (RSA-PSS, RSA-OAEP, X25519, HKDF, then
 * READY both ways) and the message pipeline of a {@linkcode Session} pair over loopback TCP
 * (encrypt, frame, write, read, decrypt, check order, acknowledge).
 *
 * @module
 */

import { type Identity, openIdentity } from "../lib/crypto/identity.ts";
import { FramedConn } from "../lib/net/conn.ts";
import { initiateHandshake, respondHandshake } from "../lib/protocol/handshake.ts";
import { newMessageId } from "../lib/protocol/messages.ts";
import { Session } from "../lib/protocol/session.ts";
import { type JobOptions, SIZES } from "./crypto_bench.ts";
import { type FigureBook, ratio } from "./report.ts";
import { summarize } from "./stats.ts";

/** Makes `count` identities in temporary directories; `remove` deletes the directories. */
export async function makeIdentities(
  count: number,
): Promise<{ identities: Identity[]; remove(): Promise<void> }> {
  const dirs = await Promise.all(
    Array.from({ length: count }, () => Deno.makeTempDir({ prefix: "p2pchat-bench-id-" })),
  );
  const identities = await Promise.all(dirs.map(async (d) => (await openIdentity(d)).identity));
  return {
    identities,
    async remove() {
      await Promise.all(dirs.map((d) => Deno.remove(d, { recursive: true })));
    },
  };
}

/**
 * Dials `port` on 127.0.0.1 as `identity` and runs the handshake and READY exchange.
 *
 * @throws {HandshakeError|SessionError} when the peer refuses us.
 */
export async function dialSession(
  port: number,
  identity: Identity,
  name: string,
): Promise<Session> {
  const conn = new FramedConn(await Deno.connect({ hostname: "127.0.0.1", port }));
  try {
    const hs = await initiateHandshake(conn, identity, { name, listenPort: 0 });
    return await Session.establish(conn, hs);
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** Connects two sessions over loopback TCP: `a` dials, `b` answers. */
async function sessionPair(a: Identity, b: Identity): Promise<[Session, Session]> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted = listener.accept().then(async (raw) => {
    const conn = new FramedConn(raw);
    const hs = await respondHandshake(conn, b, { name: "Bob", listenPort: port });
    return await Session.establish(conn, hs);
  });
  try {
    return await Promise.all([dialSession(port, a, "Alice"), accepted]);
  } finally {
    listener.close();
  }
}

/**
 * Adds `handshake.p50`/`p99` (ms) and `pipeline.SIZE` (msg/s, with its ratio to
 * `fernet.limit.SIZE`).
 *
 * @throws {Error} when a session fails.
 */
export async function benchSession(book: FigureBook, opts: JobOptions): Promise<void> {
  const ids = await makeIdentities(2);
  const [alice, bob] = ids.identities;
  try {
    // Handshakes, one at a time (connect, three handshake frames, READY both ways, close).
    const rounds = opts.quick ? 10 : 30;
    const samples: number[] = [];
    for (let i = 0; i < rounds + 2; i++) {
      const t = performance.now();
      const [x, y] = await sessionPair(alice, bob);
      const dt = performance.now() - t;
      if (i >= 2) samples.push(dt);
      await x.close();
      await y.close();
    }
    const s = summarize(samples);
    book.add({
      id: "handshake.p50",
      group: "session",
      label: "handshake + READY, loopback, p50",
      value: s.p50,
      unit: "ms",
      note: `${s.n} handshakes, in process (both ends share the CPU)`,
    });
    book.add({
      id: "handshake.p99",
      group: "session",
      label: "handshake + READY, loopback, p99",
      value: s.p99,
      unit: "ms",
    });

    // Message pipeline: Alice sends, Bob acknowledges each burst; no database.
    for (const size of SIZES) {
      const count = opts.quick ? 5_000 : 20_000;
      const rate = await pipelineRate(alice, bob, size.bytes, count);
      const limit = book.get(`fernet.limit.${size.tag}`);
      book.add({
        id: `pipeline.${size.tag}`,
        group: "pipeline",
        label: `Session pipeline ${size.label} (enc, frame, dec, ack; no DB)`,
        value: rate,
        unit: "msg/s",
        ratio: ratio(rate, limit),
        target: limit
          ? { text: ">= 50% of raw Fernet", met: rate >= 0.5 * limit.value }
          : undefined,
        note: `${count} messages, up to 1024 unacknowledged`,
      });
    }
  } finally {
    await ids.remove();
  }
}

/** Messages per second through a Session pair, with at most 1024 in flight. */
async function pipelineRate(
  alice: Identity,
  bob: Identity,
  bytes: number,
  count: number,
): Promise<number> {
  const [a, b] = await sessionPair(alice, bob);
  const text = "x".repeat(bytes);
  const window = 1024;
  let acked = 0;
  let wake: (() => void) | null = null;
  const closed = Promise.withResolvers<void>();
  b.start({
    onMessages: async (ms) => {
      await b.sendAck(ms.map((m) => m.id));
    },
    onAck: () => {},
    onClose: () => closed.resolve(),
  });
  a.start({
    onMessages: () => {},
    onAck: (got) => {
      acked += got.length;
      wake?.();
    },
    onClose: () => {},
  });
  const waitAcked = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (acked >= n) {
          wake = null;
          resolve();
        } else wake = check;
      };
      check();
    });
  // Warm up, then measure.
  const warm = Math.min(2000, count / 4);
  let sent = 0;
  const run = async (n: number) => {
    const end = sent + n;
    while (sent < end) {
      if (sent - acked >= window) await waitAcked(sent - window + 1);
      a.sendMessage(newMessageId(), text, Date.now()).catch((e) => {
        throw e;
      });
      sent++;
    }
    await waitAcked(end);
  };
  await run(warm);
  const t = performance.now();
  await run(count);
  const secs = (performance.now() - t) / 1000;
  await a.close();
  await Promise.all([a.done, b.done, closed.promise]);
  return count / secs;
}
