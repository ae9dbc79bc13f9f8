/**
 * Small statistics and timing helpers for the benchmarks (pure, apart from the clock).
 *
 * @module
 */

import process from "node:process";

/** Summary of a sample of durations or sizes. */
export interface Summary {
  /** Number of samples. */
  n: number;
  /** Smallest sample. */
  min: number;
  /** Median. */
  p50: number;
  /** 99th percentile (nearest rank). */
  p99: number;
  /** Largest sample. */
  max: number;
  /** Arithmetic mean. */
  mean: number;
}

/**
 * The `p`-th percentile (0-100) of `sorted` by nearest rank.
 *
 * @throws {RangeError} when `sorted` is empty.
 * @example
 * ```ts
 * percentile([1, 2, 3, 4], 50); // 2
 * ```
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new RangeError("no samples");
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/**
 * Summarizes samples (they need not be sorted).
 *
 * @throws {RangeError} when `samples` is empty.
 * @example
 * ```ts
 * summarize([3, 1, 2]).p50; // 2
 * ```
 */
export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    min: sorted[0],
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1],
    mean: sum / sorted.length,
  };
}

/** What {@linkcode rateOf} measured. */
export interface Rate {
  /** Operations per second (wall clock). */
  rate: number;
  /** CPU time of this whole process (all threads) per operation, in µs. */
  cpuUs: number;
}

/**
 * Runs `op` (which does `batch` operations per call) repeatedly for about `ms` milliseconds after
 * a short warm-up, and returns operations per second and CPU time per operation.
 *
 * @example
 * ```ts
 * const { rate } = await rateOf(async () => { await work(); }, { ms: 500 });
 * ```
 */
export async function rateOf(
  op: () => Promise<unknown> | unknown,
  opts: { ms: number; batch?: number; warmupMs?: number },
): Promise<Rate> {
  const batch = opts.batch ?? 1;
  const warmEnd = performance.now() + (opts.warmupMs ?? Math.min(300, opts.ms / 4));
  while (performance.now() < warmEnd) await op();
  let count = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + opts.ms;
  let now = start;
  while (now < end) {
    await op();
    count += batch;
    now = performance.now();
  }
  const cpu = process.cpuUsage(cpu0);
  return { rate: count / ((now - start) / 1000), cpuUs: (cpu.user + cpu.system) / count };
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resident memory of process `pid` in KiB (Linux `/proc/PID/status` VmRSS).
 *
 * @throws {Error} when the process does not exist or the field is missing.
 */
export async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+)/.exec(status);
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]);
}

/**
 * CPU time (user + system, all threads) used so far by process `pid`, in seconds, from
 * `/proc/PID/stat` (10 ms resolution).
 *
 * @throws {Error} when the process does not exist.
 */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the command name (which may contain spaces) start at "state".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
