/**
 * Whole-process figures: start-up time with an existing identity, discovery latency (a new peer
 * listed by a running one), and resident memory of an idle peer and of a peer holding 50
 * connections.
 *
 * Network: loopback only; discovery announcements go to 127.255.255.255 only, on a random port.
 *
 * @module
 */

import { RUN_FLAGS } from "../lib/cli/permissions.ts";
import type { JobOptions } from "./crypto_bench.ts";
import { BenchPeer, ROOT } from "./peer.ts";
import { type FigureBook, ratio } from "./report.ts";
import { dialSession, makeIdentities } from "./session_bench.ts";
import { rssKiB, sleep, summarize } from "./stats.ts";
import type { Session } from "../lib/protocol/session.ts";

/** A random UDP port for discovery, away from the default 54545 and from ephemeral ports. */
export function randomDiscoveryPort(): number {
  return 40_000 + Math.floor(Math.random() * 9_000);
}

/**
 * Adds `startup.p50` and `startup.baseline` (ms).
 *
 * @throws {Error} when a peer does not start.
 */
export async function benchStartup(book: FigureBook, opts: JobOptions): Promise<void> {
  const runs = opts.quick ? 3 : 7;
  // Baseline: the runtime itself, running an empty module under the same flags.
  const empty = await Deno.makeTempFile({ prefix: "p2pchat-bench-empty-", suffix: ".ts" });
  const baseline: number[] = [];
  try {
    for (let i = 0; i < runs + 1; i++) {
      const t = performance.now();
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", ...RUN_FLAGS, empty],
        cwd: ROOT,
        stdout: "null",
        stderr: "null",
      }).output();
      if (!out.success) throw new Error("deno run of an empty module failed");
      if (i > 0) baseline.push(performance.now() - t);
    }
  } finally {
    await Deno.remove(empty);
  }
  const dataDir = await Deno.makeTempDir({ prefix: "p2pchat-bench-startup-" });
  const samples: number[] = [];
  try {
    // The first start creates the identity (not measured); later ones load it.
    for (let i = 0; i < runs + 1; i++) {
      const peer = await BenchPeer.start("Starter", { dataDir });
      if (i > 0) samples.push(peer.readyAt - peer.spawnedAt);
      await peer.quit();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
  const base = summarize(baseline).p50;
  const s = summarize(samples);
  book.add({
    id: "startup.baseline",
    group: "process",
    label: "bare `deno run` of an empty module (baseline)",
    value: base,
    unit: "ms",
    note: `median of ${baseline.length}, same permission flags`,
  });
  book.add({
    id: "startup.p50",
    group: "process",
    label: "start-up to ready, existing identity, minus baseline",
    value: s.p50 - base,
    unit: "ms",
    target: { text: "< 300 ms", met: s.p50 - base < 300 },
    note: `spawn -> ready line ${s.p50.toFixed(0)} ms (median of ${s.n}) minus the baseline`,
  });
  book.add({
    id: "startup.total",
    group: "process",
    label: "start-up to ready, existing identity, total",
    value: s.p50,
    unit: "ms",
    ratio: ratio(s.p50, book.get("startup.baseline")),
  });
}

/**
 * Adds `discovery.latency.p50` (ms from the new peer's `ready` to `peer-up` at the running peer)
 * and `discovery.spawn.p50` (from spawning it).
 *
 * @throws {Error} when the new peer is not listed within 10 s.
 */
export async function benchDiscovery(book: FigureBook, opts: JobOptions): Promise<void> {
  const port = randomDiscoveryPort();
  const args = [
    "--discovery-port",
    String(port),
    "--broadcast",
    "127.255.255.255",
    "--interval",
    "0.5",
  ];
  const runs = opts.quick ? 3 : 6;
  const fromReady: number[] = [];
  const fromSpawn: number[] = [];
  const watcher = await BenchPeer.start("Watcher", { args });
  const dataDir = await Deno.makeTempDir({ prefix: "p2pchat-bench-newcomer-" });
  try {
    // The same newcomer each time (its identity made in the first, unmeasured run): after its
    // goodbye it is new again to the watcher, which lists it with a fresh `peer-up`.
    for (let i = 0; i < runs + 1; i++) {
      const name = "Newcomer";
      let upAt = 0;
      const listed = watcher.next((e) => e.type === "peer-up" && e.name === name, 10_000);
      const off = watcher.on((e, at) => {
        if (e.type === "peer-up" && e.name === name) upAt = at;
      });
      const peer = await BenchPeer.start(name, { args, dataDir });
      const gone = watcher.next((e) => e.type === "peer-down" && e.name === name, 10_000);
      gone.catch(() => {}); // awaited below unless listing failed first
      try {
        const up = await listed;
        off();
        // Both event times come from Date.now() on this machine: comparable.
        if (i > 0) {
          fromReady.push(up.ts - peer.ready!.ts);
          fromSpawn.push(upAt - peer.spawnedAt);
        }
      } finally {
        await peer.quit();
      }
      // Its goodbye: the watcher forgets it before the next start.
      await gone;
    }
  } finally {
    await watcher.quit();
    await Deno.remove(dataDir, { recursive: true });
  }
  const r = summarize(fromReady);
  const s = summarize(fromSpawn);
  book.add({
    id: "discovery.latency.p50",
    group: "process",
    label: "discovery: new peer's ready -> listed (peer-up) by another",
    value: r.p50,
    unit: "ms",
    target: { text: "< 500 ms", met: r.max < 500 },
    note: `median of ${r.n}, max ${r.max} ms; interval 0.5 s, broadcast 127.255.255.255; ` +
      "the start-up announcement leaves before `ready`",
  });
  book.add({
    id: "discovery.spawn.p50",
    group: "process",
    label: "discovery: spawn of the new peer -> listed",
    value: s.p50,
    unit: "ms",
    note: "includes the new peer's start-up (existing identity)",
  });
}

/**
 * Adds `memory.idle` and `memory.50conn` (MiB of VmRSS of the peer process).
 *
 * @throws {Error} when the sessions cannot be set up.
 */
export async function benchMemory(book: FigureBook, opts: JobOptions): Promise<void> {
  const conns = 50;
  const peer = await BenchPeer.start("Host");
  const ids = await makeIdentities(conns);
  const sessions: Session[] = [];
  try {
    await sleep(opts.quick ? 500 : 1500);
    const idle = await rssKiB(peer.pid);
    let connected = 0;
    const all = Promise.withResolvers<void>();
    const off = peer.on((e) => {
      if (e.type === "connected" && ++connected === conns) all.resolve();
    });
    // Ten at a time: the host runs the responder side of every handshake.
    for (let i = 0; i < conns; i += 10) {
      const batch = ids.identities.slice(i, i + 10);
      sessions.push(
        ...await Promise.all(batch.map((id, j) => dialSession(peer.port, id, `Guest${i + j}`))),
      );
    }
    for (const s of sessions) {
      s.start({ onMessages: () => {}, onAck: () => {}, onClose: () => {} });
    }
    await all.promise;
    off();
    await sleep(opts.quick ? 500 : 1500);
    const held = await rssKiB(peer.pid);
    book.add({
      id: "memory.idle",
      group: "process",
      label: "resident memory, idle peer",
      value: idle / 1024,
      unit: "MiB",
      note: "VmRSS from /proc",
    });
    book.add({
      id: "memory.50conn",
      group: "process",
      label: `resident memory, peer holding ${conns} sessions`,
      value: held / 1024,
      unit: "MiB",
      ratio: ratio(held / 1024, book.get("memory.idle")),
      note: `${((held - idle) / conns).toFixed(0)} KiB per session`,
    });
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
    await Promise.all(sessions.map((s) => s.done));
    await peer.quit();
    await ids.remove();
  }
}
