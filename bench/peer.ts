/**
 * A lean driver for a real `main.ts --headless` peer process, for benchmarks: it starts the peer
 * under the release permission flags, writes command lines, and hands every JSON event to
 * listeners as it arrives (no per-event scans, so 100,000 events cost little).
 *
 * @module
 */

import { dirname } from "node:path";
import { RUN_FLAGS } from "../lib/cli/permissions.ts";

/** Absolute path of main.ts. */
export const MAIN: string = new URL("../main.ts", import.meta.url).pathname;
/** The repository root (where deno.json is), the working directory of spawned peers. */
export const ROOT: string = new URL("..", import.meta.url).pathname;

/**
 * Starts `deno ARGS...` (this Deno) with stdin, stdout and stderr piped and colors off.
 *
 * @example
 * ```ts
 * const child = spawnDeno(["run", "main.ts", "--headless"], { cwd: ROOT });
 * ```
 */
export function spawnDeno(args: string[], opts: { cwd?: string } = {}): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args,
    cwd: opts.cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

/** A parsed event line. */
// deno-lint-ignore no-explicit-any -- events are JSON; each bench reads the fields it needs.
export type Event = { type: string; ts: number; [k: string]: any };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A running headless peer.
 *
 * @example
 * ```ts
 * const bob = await BenchPeer.start("Bob");
 * await bob.command("/peers");
 * await bob.next((e) => e.type === "peers");
 * await bob.quit();
 * ```
 */
export class BenchPeer {
  /** Display name. */
  readonly name: string;
  /** Data directory. */
  readonly dataDir: string;
  /** performance.now() just before spawning. */
  readonly spawnedAt: number;
  /** The `ready` event, and performance.now() when its line arrived. */
  ready: Event | null = null;
  readyAt = 0;
  /** Everything written to stderr. */
  stderr = "";
  /** Events seen, counted by type. */
  readonly counts = new Map<string, number>();
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #listeners = new Set<(e: Event, at: number) => void>();
  #readers: Promise<void>;
  #ownDir: boolean;

  private constructor(
    name: string,
    dataDir: string,
    ownDir: boolean,
    spawn: { args: string[]; cwd: string },
  ) {
    this.name = name;
    this.dataDir = dataDir;
    this.#ownDir = ownDir;
    this.spawnedAt = performance.now();
    this.#child = spawnDeno(spawn.args, { cwd: spawn.cwd });
    this.#writer = this.#child.stdin.getWriter();
    this.#readers = Promise.all([this.#readStdout(), this.#readStderr()]).then(() => {});
  }

  /**
   * Starts `main.ts --headless --name NAME` and waits (up to 60 s) for `ready`. `args` go to
   * p2pchat (default `--no-discovery`), `denoFlags` to `deno run` (e.g. `--cpu-prof`); `main` is
   * another copy of p2pchat's main.ts to run (default this one), started in its directory.
   *
   * @throws {Error} when `ready` does not come.
   */
  static async start(
    name: string,
    opts: { dataDir?: string; args?: string[]; denoFlags?: string[]; main?: string } = {},
  ): Promise<BenchPeer> {
    const ownDir = opts.dataDir === undefined;
    const dataDir = opts.dataDir ?? await Deno.makeTempDir({ prefix: `p2pchat-bench-${name}-` });
    const args = [
      "run",
      ...(opts.denoFlags ?? []),
      ...RUN_FLAGS,
      opts.main ?? MAIN,
      "--name",
      name,
      "--port",
      "0",
      "--data-dir",
      dataDir,
      "--headless",
      ...(opts.args ?? ["--no-discovery"]),
    ];
    const cwd = opts.main === undefined ? ROOT : dirname(opts.main);
    const peer = new BenchPeer(name, dataDir, ownDir, { args, cwd });
    const ready = peer.next((e) => e.type === "ready", 60_000);
    peer.on((e, at) => {
      if (e.type === "ready") peer.readyAt = at;
    });
    try {
      peer.ready = await ready;
    } catch (e) {
      await peer.close();
      throw e;
    }
    return peer;
  }

  /** TCP port from `ready`. */
  get port(): number {
    return this.ready!.port;
  }

  /** Process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Adds a listener for every future event (with performance.now() at arrival); returns an unsubscribe function. */
  on(listener: (e: Event, at: number) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The next event matching `pred`.
   *
   * @throws {Error} after `timeoutMs`, with the stderr so far.
   */
  next(pred: (e: Event) => boolean, timeoutMs = 30_000): Promise<Event> {
    return new Promise((resolve, reject) => {
      const off = this.on((e) => {
        if (!pred(e)) return;
        off();
        clearTimeout(timer);
        resolve(e);
      });
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${this.name}: no matching event within ${timeoutMs} ms\n${this.stderr}`));
      }, timeoutMs);
    });
  }

  /** Writes command lines (each gets its newline) in one write. */
  async command(...lines: string[]): Promise<void> {
    await this.#writer.write(encoder.encode(lines.map((l) => l + "\n").join("")));
  }

  /** Sends `/quit` and waits for the process to exit; removes its data directory if ours. */
  async quit(): Promise<void> {
    try {
      await this.command("/quit");
    } catch {
      // stdin already closed: the process is on its way out.
    }
    await this.close();
  }

  /** Kills the process (if still running), waits for it, removes its data directory if ours. */
  async close(): Promise<void> {
    const timer = setTimeout(() => this.#kill(), 10_000);
    await this.#writer.close().catch(() => {});
    await this.#child.status;
    clearTimeout(timer);
    await this.#readers;
    if (this.#ownDir) await Deno.remove(this.dataDir, { recursive: true }).catch(() => {});
  }

  /** Kills the process with SIGKILL now, then cleans up like {@linkcode close}. */
  async kill(): Promise<void> {
    this.#kill();
    await this.close();
  }

  #kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }

  async #readStdout(): Promise<void> {
    let buf = "";
    for await (const chunk of this.#child.stdout) {
      const at = performance.now();
      buf += decoder.decode(chunk, { stream: true });
      let start = 0;
      let nl: number;
      while ((nl = buf.indexOf("\n", start)) >= 0) {
        const line = buf.slice(start, nl);
        start = nl + 1;
        if (line.trim() === "") continue;
        const event = JSON.parse(line) as Event;
        this.counts.set(event.type, (this.counts.get(event.type) ?? 0) + 1);
        for (const l of [...this.#listeners]) l(event, at);
      }
      buf = buf.slice(start);
    }
  }

  async #readStderr(): Promise<void> {
    for await (const chunk of this.#child.stderr) this.stderr += decoder.decode(chunk);
  }
}
