/**
 * Where the time goes in delivery: runs the 100 B throughput load between two peer processes
 * started with `deno run --cpu-prof`, then prints each process's heaviest functions by self time
 * (and by inclusive time for p2pchat's own modules).
 *
 *     deno run --allow-all bench/profile.ts [--count N] [--bytes B] [--keep DIR]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BenchPeer } from "./peer.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One row of a profile summary. */
export interface HotSpot {
  /** `function (file:line)`. */
  name: string;
  /** Share of all samples, 0-100. */
  percent: number;
}

/**
 * Self time by function and inclusive time by p2pchat function of a V8 `.cpuprofile`.
 *
 * @example
 * ```ts
 * const { self } = summarizeProfile(JSON.parse(await Deno.readTextFile(file)), 15);
 * ```
 */
export function summarizeProfile(
  profile: CpuProfile,
  top: number,
): { self: HotSpot[]; inclusive: HotSpot[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: ProfileNode) => {
    const f = n.callFrame;
    const file = f.url.replace(/^.*\/(lib|bench|main)\b/, "$1").replace(/^ext:/, "ext:");
    return `${f.functionName || "(anonymous)"} (${file}:${f.lineNumber + 1})`;
  };
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const id of profile.samples) {
    const node = byId.get(id)!;
    const name = label(node);
    self.set(name, (self.get(name) ?? 0) + 1);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      if (!n.callFrame.url.includes("/lib/")) continue;
      const l = label(n);
      if (seen.has(l)) continue;
      seen.add(l);
      inclusive.set(l, (inclusive.get(l) ?? 0) + 1);
    }
  }
  const total = profile.samples.length;
  const rank = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, n]) => ({
      name,
      percent: 100 * n / total,
    }));
  return { self: rank(self), inclusive: rank(inclusive) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      count: { type: "string", default: "20000" },
      bytes: { type: "string", default: "100" },
      keep: { type: "string" },
    },
  });
  const count = Number(values.count);
  const body = "y".repeat(Number(values.bytes));
  const dir = values.keep ?? await Deno.makeTempDir({ prefix: "p2pchat-prof-" });
  const denoFlags = (name: string) => ["--cpu-prof", `--cpu-prof-dir=${dir}/${name}`];
  const alice = await BenchPeer.start("Alice", { denoFlags: denoFlags("alice") });
  const bob = await BenchPeer.start("Bob", { denoFlags: denoFlags("bob") });
  try {
    const connected = alice.next((e) => e.type === "connected");
    await alice.command(`/connect 127.0.0.1:${bob.port}`);
    await connected;
    let delivered = 0;
    const done = Promise.withResolvers<void>();
    alice.on((e) => {
      if (e.type === "delivered" && ++delivered === count) done.resolve();
    });
    const t = performance.now();
    for (let i = 0; i < count; i += 1000) {
      const lines = Array.from({ length: Math.min(1000, count - i) }, () => `/send Bob ${body}`);
      await alice.command(...lines);
    }
    await done.promise;
    const secs = (performance.now() - t) / 1000;
    console.log(
      `${count} messages of ${body.length} B in ${secs.toFixed(2)} s: ` +
        `${Math.round(count / secs)} msg/s (profiled: slower than unprofiled)`,
    );
  } finally {
    await alice.quit();
    await bob.quit();
  }
  for (const name of ["alice", "bob"]) {
    for (const entry of Deno.readDirSync(`${dir}/${name}`)) {
      const profile = JSON.parse(await Deno.readTextFile(`${dir}/${name}/${entry.name}`));
      const { self, inclusive } = summarizeProfile(profile, 25);
      console.log(`\n== ${name}: self time`);
      for (const h of self) console.log(`${h.percent.toFixed(1).padStart(5)}%  ${h.name}`);
      console.log(`\n== ${name}: inclusive time, p2pchat functions`);
      for (const h of inclusive) console.log(`${h.percent.toFixed(1).padStart(5)}%  ${h.name}`);
    }
  }
  if (values.keep === undefined) await Deno.remove(dir, { recursive: true });
  else console.log(`\nprofiles kept in ${dir}`);
}

if (import.meta.main) await main();
