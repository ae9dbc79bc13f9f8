/**
 * The delivery floor: the latency limit of this machine for the shape of a delivery, measured by
 * two raw processes (`floor_peer.ts`) that make the same hops as two p2pchat peers driven
 * through stdin/stdout, with nothing of p2pchat in them: a line into the sender's stdin, 100
 * bytes over loopback TCP, page writes and an fdatasync on each end (concurrently, on one disk,
 * as both peers here share it), a 4-byte ACK back, a line out of the sender's stdout.
 *
 * In one process, a TCP round trip costs no wake-up; between processes every hop wakes one, and
 * on a virtual machine that is most of the time. This is the limit a delivery is compared with.
 *
 * @module
 */

import type { JobOptions } from "./crypto_bench.ts";
import { spawnDeno } from "./peer.ts";
import { type FigureBook, ratio } from "./report.ts";
import { summarize, type Summary } from "./stats.ts";

const PEER = new URL("./floor_peer.ts", import.meta.url).pathname;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A floor process: its stdout lines, each with performance.now() at arrival. */
class FloorProcess {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: { line: string; at: number }[] = [];
  #wake: (() => void) | null = null;
  readonly #reading: Promise<void>;
  #stderr = "";

  constructor(args: string[], dir: string) {
    this.#child = spawnDeno([
      "run",
      "--allow-net=127.0.0.1",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      PEER,
      ...args,
    ]);
    this.#writer = this.#child.stdin.getWriter();
    this.#reading = Promise.all([this.#read(), this.#readStderr()]).then(() => {});
  }

  async #readStderr(): Promise<void> {
    for await (const chunk of this.#child.stderr) this.#stderr += decoder.decode(chunk);
  }

  async #read(): Promise<void> {
    let buf = "";
    for await (const chunk of this.#child.stdout) {
      const at = performance.now();
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        this.#lines.push({ line: buf.slice(0, nl), at });
        buf = buf.slice(nl + 1);
      }
      this.#wake?.();
    }
    this.#wake?.();
  }

  /** The next stdout line and its arrival time. */
  async line(): Promise<{ line: string; at: number }> {
    while (this.#lines.length === 0) {
      const status = this.#child.status;
      await Promise.race([new Promise<void>((r) => this.#wake = r), status]);
      this.#wake = null;
      if (this.#lines.length === 0 && await settled(status)) {
        // Its last lines may still be on their way from the pipe.
        await this.#reading;
        if (this.#lines.length > 0) break;
        const why = this.#stderr.trim().split("\n").find((l) => l.includes("rror")) ?? "";
        throw new Error(`floor process exited early${why ? `: ${why}` : ""}`);
      }
    }
    return this.#lines.shift()!;
  }

  write(line: string): Promise<void> {
    return this.#writer.write(encoder.encode(line + "\n"));
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 10_000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#reading;
  }
}

async function settled(p: Promise<unknown>): Promise<boolean> {
  const probe = Symbol();
  return await Promise.race([p, Promise.resolve(probe)]) !== probe;
}

/**
 * Runs `rounds` deliveries one at a time (after a warm-up of `warm`, default 300) between two
 * floor processes and summarizes line in -> line out, in ms. Their page files go to `dir` (on
 * the disk to measure; default a new temporary directory) and are removed afterwards.
 *
 * @throws {Error} when a floor process fails.
 */
export async function measureFloor(
  rounds: number,
  opts: { fsync: boolean; warm?: number; dir?: string },
): Promise<Summary> {
  const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "p2pchat-floor-" });
  const flags = opts.fsync ? [] : ["--no-fsync"];
  const receiver = new FloorProcess(["receiver", `${dir}/receiver`, ...flags], dir);
  let sender: FloorProcess | null = null;
  try {
    const port = (await receiver.line()).line;
    sender = new FloorProcess(["sender", `${dir}/sender`, port, ...flags], dir);
    if ((await sender.line()).line !== "ready") throw new Error("floor sender did not start");
    const warm = opts.warm ?? 300;
    const samples: number[] = [];
    for (let i = 0; i < rounds + warm; i++) {
      const t = performance.now();
      await sender.write("send");
      const { at } = await sender.line();
      if (i >= warm) samples.push(at - t);
    }
    return summarize(samples);
  } finally {
    await sender?.close();
    await receiver.close();
    if (opts.dir === undefined) await Deno.remove(dir, { recursive: true });
    else {
      for (const name of ["sender", "receiver"]) {
        await Deno.remove(`${dir}/${name}`).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) {
            throw e;
          }
        });
      }
    }
  }
}

/**
 * Adds `delivery.floor.p50`/`p99` and `delivery.floor.normal.p50`/`p99` (ms): the same hops as a
 * delivery between two processes driven through stdin/stdout, with and without the fsyncs, and
 * nothing of p2pchat. The delivery job's latency figures are ratios to these.
 *
 * @throws {Error} when a floor process fails.
 */
export async function benchFloor(book: FigureBook, opts: JobOptions): Promise<void> {
  const rounds = opts.quick ? 200 : 2000;
  for (const fsync of [true, false]) {
    const s = await measureFloor(rounds, { fsync });
    const id = fsync ? "delivery.floor" : "delivery.floor.normal";
    for (const q of ["p50", "p99"] as const) {
      book.add({
        id: `${id}.${q}`,
        group: "limits",
        label: `delivery floor${fsync ? "" : " without fsync"} ${q}`,
        value: s[q],
        unit: "ms",
        ratio: ratio(s[q], book.get(`tcp.rtt.${q}`)),
        note: `${s.n} rounds between two raw processes (bench/floor_peer.ts): stdin line -> ` +
          `${fsync ? "4 pages + fdatasync" : "4 pages"} -> 100 B over TCP -> ` +
          `${fsync ? "3 pages + fdatasync" : "3 pages"} -> 4 B ACK -> stdout line`,
      });
    }
  }
}
