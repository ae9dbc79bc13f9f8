/**
 * `deno task bench`: measures p2pchat against the raw limits of this machine, side by side in
 * one run, prints a table and writes `bench/results.json`.
 *
 *     deno task bench [--quick] [--only JOB,JOB] [--out FILE]
 *
 * Jobs, in order: crypto, tcp, floor (the limits: raw Fernet, raw sockets, and the raw hops of a
 * delivery between two processes), storage (SQLite, and the history store against it), session
 * (handshake, pipeline), delivery (two peer processes), startup, discovery, memory. Everything
 * stays on loopback; discovery announcements go to 127.255.255.255 only.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { benchCrypto, type JobOptions } from "./crypto_bench.ts";
import { benchDelivery } from "./delivery_bench.ts";
import { benchFloor } from "./floor_bench.ts";
import { benchDiscovery, benchMemory, benchStartup } from "./process_bench.ts";
import { FigureBook, renderTable, type Results } from "./report.ts";
import { benchSession } from "./session_bench.ts";
import { benchStorage } from "./storage_bench.ts";
import { benchTcp } from "./tcp_bench.ts";

const JOBS: Record<string, (book: FigureBook, opts: JobOptions) => Promise<void>> = {
  crypto: benchCrypto,
  tcp: benchTcp,
  floor: benchFloor,
  storage: benchStorage,
  session: benchSession,
  delivery: benchDelivery,
  startup: benchStartup,
  discovery: benchDiscovery,
  memory: benchMemory,
};

async function main(): Promise<number> {
  const usage = `usage: deno task bench [--quick] [--only ${
    Object.keys(JOBS).join(",")
  }] [--out FILE]`;
  let values;
  try {
    ({ values } = parseArgs({
      // `deno task bench -- --quick` hands the `--` on: the same as `deno task bench --quick`.
      args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
      options: {
        quick: { type: "boolean", default: false },
        only: { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", default: false },
      },
    }));
  } catch (e) {
    console.error(`bench: ${(e as Error).message}\n${usage}`);
    return 2;
  }
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const only = values.only?.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const name of only ?? []) {
    if (!(name in JOBS)) {
      console.error(`unknown job ${name}; jobs: ${Object.keys(JOBS).join(", ")}`);
      return 2;
    }
  }
  const opts: JobOptions = { quick: values.quick };
  const out = values.out ?? new URL("./results.json", import.meta.url).pathname;
  const book = new FigureBook();
  const date = new Date().toISOString();
  const loadBefore = Deno.loadavg();
  const start = performance.now();
  const failures: string[] = [];
  for (const [name, job] of Object.entries(JOBS)) {
    if (only && !only.includes(name)) continue;
    const t = performance.now();
    console.error(`bench: ${name}...`);
    try {
      await job(book, opts);
    } catch (e) {
      // One broken job should not hide the others' figures; the exit status reports it.
      failures.push(`${name}: ${(e as Error).stack ?? e}`);
      console.error(`bench: ${name} FAILED: ${(e as Error).message}`);
    }
    console.error(`bench: ${name} took ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const results: Results = {
    date,
    mode: opts.quick ? "quick" : "full",
    machine: {
      deno: Deno.version.deno,
      v8: Deno.version.v8,
      os: Deno.build.os,
      arch: Deno.build.arch,
      cpus: navigator.hardwareConcurrency,
      loadavgBefore: loadBefore,
      loadavgAfter: Deno.loadavg(),
    },
    seconds: (performance.now() - start) / 1000,
    figures: book.all(),
  };
  console.log(renderTable(results.figures));
  console.log(
    `\n${results.mode} run, ${results.seconds.toFixed(0)} s; load average before ` +
      `${loadBefore.map((l) => l.toFixed(2)).join(" ")} (${results.machine.cpus} CPUs)`,
  );
  await Deno.writeTextFile(out, JSON.stringify(results, null, 2) + "\n");
  console.log(`results written to ${out}`);
  for (const f of failures) console.error(`\nFAILED ${f}`);
  return failures.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
