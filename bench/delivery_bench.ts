/**
 * Delivery between two real peer processes (`main.ts --headless --no-discovery`, connected with
 * `/connect`): encryption, acknowledgement and SQLite persistence on both ends, measured from
 * the outside through the headless interface.
 *
 * @module
 */

import { type JobOptions, SIZES } from "./crypto_bench.ts";
import { BenchPeer, type Event } from "./peer.ts";
import { type FigureBook, ratio } from "./report.ts";
import { cpuSeconds, summarize } from "./stats.ts";

/**
 * Starts Alice and Bob and connects them.
 *
 * @throws {Error} when they do not connect.
 */
export async function connectedPair(
  args: string[] = ["--no-discovery"],
): Promise<{ alice: BenchPeer; bob: BenchPeer }> {
  const [alice, bob] = await Promise.all([
    BenchPeer.start("Alice", { args }),
    BenchPeer.start("Bob", { args }),
  ]);
  const connected = alice.next((e) => e.type === "connected" || e.type === "error");
  await alice.command(`/connect 127.0.0.1:${bob.port}`);
  const e = await connected;
  if (e.type !== "connected") throw new Error(`cannot connect: ${JSON.stringify(e)}`);
  return { alice, bob };
}

/**
 * Adds `headless.rtt.p50`, `delivery.latency.p50`/`p99` (ms) and `delivery.rate.SIZE` (msg/s).
 *
 * @throws {Error} when a message goes missing or an error event appears.
 */
export async function benchDelivery(book: FigureBook, opts: JobOptions): Promise<void> {
  const { alice, bob } = await connectedPair();
  try {
    const errors: Event[] = [];
    alice.on((e) => e.type === "error" && errors.push(e));
    bob.on((e) => e.type === "error" && errors.push(e));

    // The interface alone: a command in, its answer out (pipes + JSON), for context.
    // After a warm-up: the first few hundred commands of a fresh process run slower code.
    const ifaceSamples: number[] = [];
    const warm = 300;
    for (let i = 0; i < warm + (opts.quick ? 100 : 300); i++) {
      const t = performance.now();
      const got = alice.next((e) => e.type === "peers");
      await alice.command("/peers");
      await got;
      if (i >= warm) ifaceSamples.push(performance.now() - t);
    }
    const iface = summarize(ifaceSamples);
    book.add({
      id: "headless.rtt.p50",
      group: "delivery",
      label: "headless command round trip (/peers) p50",
      value: iface.p50,
      unit: "ms",
      ratio: ratio(iface.p50, book.get("tcp.rtt.p50")),
      note: "stdin pipe -> command -> JSON line on stdout: part of every figure below",
    });

    // Latency: one message at a time, /send until its `delivered` arrives.
    const rounds = opts.quick ? 200 : 2000;
    addLatency(book, summarize(await measureLatency(alice, bob, rounds)), {
      id: "delivery.latency",
      label: "delivery latency",
      baseline: "delivery.floor",
      note: "messages one at a time, measured outside through stdin/stdout",
    });

    // Throughput: pipe N /send lines, time until the last `delivered`.
    for (const size of SIZES) {
      const count = size.bytes === 100
        ? (opts.quick ? 5_000 : 40_000)
        : (opts.quick ? 1_000 : 8_000);
      const cpu0 = await Promise.all([cpuSeconds(alice.pid), cpuSeconds(bob.pid)]);
      const rate = await throughput(alice, bob, size.bytes, count);
      const cpu1 = await Promise.all([cpuSeconds(alice.pid), cpuSeconds(bob.pid)]);
      const limit = book.get(`fernet.limit.${size.tag}`);
      const tcp = book.get("tcp.msgrate.100B");
      book.add({
        id: `delivery.rate.${size.tag}`,
        group: "delivery",
        label: `sustained delivery ${size.label} (stored + acked)`,
        value: rate,
        unit: "msg/s",
        ratio: ratio(rate, limit),
        target: size.bytes === 100 ? { text: ">= 20,000 msg/s", met: rate >= 20_000 } : undefined,
        note: `${count} messages piped at once` +
          (tcp ? `; ${(100 * rate / tcp.value).toFixed(1)}% of raw TCP 100 B writes` : ""),
      });
      // Where the time goes, by counting: CPU (all threads) per message in each process.
      for (const [i, who] of [[0, "sender"], [1, "receiver"]] as const) {
        book.add({
          id: `delivery.cpu.${who}.${size.tag}`,
          group: "delivery",
          label: `  CPU per message ${size.label}, ${who} process`,
          value: (cpu1[i] - cpu0[i]) * 1e6 / count,
          unit: "µs",
          note: "user + system time of all its threads during the run, / messages",
        });
      }
    }
    if (errors.length > 0) throw new Error(`error events: ${JSON.stringify(errors.slice(0, 3))}`);
  } finally {
    await Promise.all([alice.quit(), bob.quit()]);
  }
  await benchNormalDurability(book, opts);
}

/**
 * The same latency and 100 B throughput with `--durability normal` (commits not fsynced: safe
 * against a crash of p2pchat, not of the operating system), to show what the fsync costs.
 */
async function benchNormalDurability(book: FigureBook, opts: JobOptions): Promise<void> {
  const { alice, bob } = await connectedPair(["--no-discovery", "--durability", "normal"]);
  try {
    addLatency(book, summarize(await measureLatency(alice, bob, opts.quick ? 200 : 1000)), {
      id: "delivery.normal.latency",
      label: "delivery latency, --durability normal,",
      baseline: "delivery.floor.normal",
      note: "ratio: to the floor without fsync",
    });
    const count = opts.quick ? 5_000 : 20_000;
    const rate = await throughput(alice, bob, 100, count);
    book.add({
      id: "delivery.normal.rate.100B",
      group: "delivery",
      label: "sustained delivery 100 B, --durability normal",
      value: rate,
      unit: "msg/s",
      ratio: ratio(rate, book.get("fernet.limit.100B")),
      target: { text: ">= 20,000 msg/s", met: rate >= 20_000 },
      note: `${count} messages piped at once`,
    });
  } finally {
    await Promise.all([alice.quit(), bob.quit()]);
  }
}

/** Adds the p50 and p99 figures of a latency sample, with the PRODUCT.md targets. */
function addLatency(
  book: FigureBook,
  s: ReturnType<typeof summarize>,
  f: { id: string; label: string; baseline: string; note: string },
): void {
  for (const [q, limit] of [["p50", 1], ["p99", 5]] as const) {
    book.add({
      id: `${f.id}.${q}`,
      group: "delivery",
      label: `${f.label} ${q}`,
      value: s[q],
      unit: "ms",
      ratio: ratio(s[q], book.get(`${f.baseline}.${q}`)),
      target: { text: `< ${limit} ms`, met: s[q] < limit },
      note: `${s.n} ${f.note}`,
    });
  }
}

/**
 * Sends one message at a time and returns each send -> delivered time (ms), after a warm-up.
 *
 * @throws {Error} when Bob does not get every message.
 */
export async function measureLatency(
  alice: BenchPeer,
  bob: BenchPeer,
  rounds: number,
  warm = 300,
): Promise<number[]> {
  const samples: number[] = [];
  let arrived = 0;
  const delivered = () => {
    let resolve!: (at: number) => void;
    const p = new Promise<number>((r) => resolve = r);
    const off = alice.on((e, at) => {
      if (e.type !== "delivered") return;
      off();
      resolve(at);
    });
    return p;
  };
  const offMsg = bob.on((e) => e.type === "message" && arrived++);
  for (let i = 0; i < rounds + warm; i++) {
    const got = delivered();
    const t = performance.now();
    await alice.command(`/send Bob latency ${i}`);
    const at = await got;
    if (i >= warm) samples.push(at - t);
  }
  // Bob writes his `message` line after his ACK: the last one may trail Alice's `delivered`.
  for (let waited = 0; arrived < rounds + warm && waited < 5_000; waited += 10) {
    await new Promise((r) => setTimeout(r, 10));
  }
  offMsg();
  if (arrived !== rounds + warm) throw new Error(`Bob got ${arrived} of ${rounds + warm}`);
  return samples;
}

/**
 * Pipes `count` messages of `bytes` bytes from Alice to Bob at once; returns messages per second
 * until the last `delivered`.
 *
 * @throws {Error} when a message goes missing or comes twice, or after 120 s.
 */
export async function throughput(
  alice: BenchPeer,
  bob: BenchPeer,
  bytes: number,
  count: number,
): Promise<number> {
  // A tag per run: Bob's `message` lines of an earlier run may still be on their way.
  const tag = `run${++runs} `;
  const body = tag + "y".repeat(Math.max(0, bytes - tag.length));
  let delivered = 0;
  let received = 0;
  const done = Promise.withResolvers<number>();
  const allReceived = Promise.withResolvers<void>();
  const offA = alice.on((e, at) => {
    if (e.type === "delivered" && ++delivered === count) done.resolve(at);
  });
  const offB = bob.on((e) => {
    if (e.type === "message" && e.text.startsWith(tag) && ++received >= count) {
      allReceived.resolve();
    }
  });
  const timer = setTimeout(() => {
    const error = new Error(`only ${delivered} of ${count} delivered after 120 s`);
    done.reject(error);
    allReceived.reject(error);
  }, 120_000);
  const t = performance.now();
  const chunk = Math.max(1, Math.floor(256 * 1024 / (bytes + 12)));
  for (let i = 0; i < count; i += chunk) {
    const lines: string[] = [];
    for (let j = i; j < Math.min(count, i + chunk); j++) lines.push(`/send Bob ${body}`);
    await alice.command(...lines);
  }
  let end: number;
  try {
    end = await done.promise;
    // Every `delivered` means Bob stored it; his `message` lines may trail by a pipe read.
    await allReceived.promise;
    // Give a duplicate the time to show itself.
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    clearTimeout(timer);
    offA();
    offB();
  }
  if (received !== count) throw new Error(`Bob saw ${received} messages for ${count} sent`);
  return count / ((end - t) / 1000);
}

let runs = 0;
