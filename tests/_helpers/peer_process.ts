/**
 * Drives a real `main.ts --headless` process for end-to-end tests: starts it under the exact
 * permission flags of the release binary, writes commands, and waits for JSON events.
 *
 * @module
 */

import { RUN_FLAGS } from "../../lib/cli/permissions.ts";

/** Absolute path of main.ts. */
export const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A parsed event line. */
// deno-lint-ignore no-explicit-any -- events are untyped JSON by design: tests check fields.
export type Event = { type: string; ts: number; [k: string]: any };

/** Options for {@linkcode PeerProcess.start}. */
export interface StartOptions {
  /** Data directory (default: a fresh temporary directory, removed by `cleanup`). */
  dataDir?: string;
  /** TCP port (default 0: any). */
  port?: number;
  /** Extra arguments, e.g. discovery settings. Default: `--no-discovery`. */
  args?: string[];
  /** Permission flags (default: the release flags). */
  flags?: readonly string[];
  /** Wait for `ready` (default true). */
  waitReady?: boolean;
  env?: Record<string, string>;
  /**
   * A command prefix the deno command runs under, e.g. `["ip", "netns", "exec", "ns1"]` (default:
   * none). That command must exec deno in place, so `pid` and `kill` still reach the peer.
   */
  wrap?: string[];
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/**
 * A running headless peer.
 *
 * @example
 * ```ts
 * const bob = await PeerProcess.start("Bob");
 * bob.command("/peers");
 * const peers = await bob.waitFor((e) => e.type === "peers");
 * await bob.quit();
 * ```
 */
export class PeerProcess {
  readonly name: string;
  readonly dataDir: string;
  readonly events: Event[] = [];
  stderr = "";
  ready: Event | null = null;
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #waiters: { pred: (e: Event) => boolean; resolve: (e: Event) => void }[] = [];
  #readers: Promise<void>;
  #ownDir: boolean;
  #status: Promise<Deno.CommandStatus>;
  #exited = false;
  #paused: PromiseWithResolvers<void> | null = null;

  private constructor(name: string, dataDir: string, ownDir: boolean, child: Deno.ChildProcess) {
    this.name = name;
    this.dataDir = dataDir;
    this.#ownDir = ownDir;
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    this.#readers = Promise.all([this.#readStdout(), this.#readStderr()]).then(() => {});
  }

  /** Starts `main.ts --headless --name NAME` and waits for its `ready` event. */
  static async start(name: string, opts: StartOptions = {}): Promise<PeerProcess> {
    const ownDir = opts.dataDir === undefined;
    const dataDir = opts.dataDir ?? await Deno.makeTempDir({ prefix: `p2pchat-${name}-` });
    const args = [
      "run",
      ...(opts.flags ?? RUN_FLAGS),
      MAIN,
      "--name",
      name,
      "--port",
      String(opts.port ?? 0),
      "--data-dir",
      dataDir,
      "--headless",
      ...(opts.args ?? ["--no-discovery"]),
    ];
    const wrap = opts.wrap ?? [];
    const child = new Deno.Command(wrap[0] ?? Deno.execPath(), {
      args: wrap.length > 0 ? [...wrap.slice(1), Deno.execPath(), ...args] : args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...opts.env },
    }).spawn();
    const p = new PeerProcess(name, dataDir, ownDir, child);
    if (opts.waitReady ?? true) {
      // Fail at once if the process dies before `ready`, and never leave it behind.
      const exited = p.#status.then((s) => {
        throw new Error(`${name} exited with status ${s.code} before ready; stderr: ${p.stderr}`);
      });
      try {
        p.ready = await Promise.race([p.waitFor((e) => e.type === "ready", 60_000), exited]);
      } catch (e) {
        await p.cleanup().catch(() => {});
        throw e;
      } finally {
        exited.catch(() => {/* the race above reported it, or the peer is running */});
      }
    }
    return p;
  }

  /** The peer's TCP port (from `ready`). */
  get port(): number {
    return this.ready!.port;
  }

  /** The peer's fingerprint (from `ready`). */
  get fingerprint(): string {
    return this.ready!.fingerprint;
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Resident memory in KiB (Linux), from /proc. */
  async rssKiB(): Promise<number> {
    const status = await Deno.readTextFile(`/proc/${this.pid}/status`);
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  }

  /** The `host:port` to connect to. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Writes one command line. */
  async command(line: string): Promise<void> {
    await this.#writer.write(encoder.encode(line + "\n"));
  }

  /**
   * Resolves with the first event (already seen or future) matching `pred`.
   *
   * @throws {Error} after `timeoutMs`, with the events and stderr seen so far.
   */
  waitFor(pred: (e: Event) => boolean, timeoutMs = 20_000): Promise<Event> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return this.#wait(pred, timeoutMs);
  }

  /** Like {@linkcode waitFor} but only for events that arrive after this call. */
  next(pred: (e: Event) => boolean, timeoutMs = 20_000): Promise<Event> {
    return this.#wait(pred, timeoutMs);
  }

  #wait(pred: (e: Event) => boolean, timeoutMs: number): Promise<Event> {
    return new Promise((resolve, reject) => {
      const waiter = {
        pred,
        resolve: (e: Event) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `${this.name}: timed out after ${timeoutMs} ms; events: ` +
              this.events.map((e) => JSON.stringify(e)).join("\n") + `\nstderr: ${this.stderr}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /**
   * Stops reading the peer's stdout: once the pipe is full, the peer's writes to it block, as with
   * a reader that does not keep up. {@linkcode resumeOutput} (or a kill) reads on.
   */
  pauseOutput(): void {
    this.#paused ??= Promise.withResolvers<void>();
  }

  /** Reads the peer's stdout again after {@linkcode pauseOutput}. */
  resumeOutput(): void {
    this.#paused?.resolve();
    this.#paused = null;
  }

  /** Events of a type seen so far. */
  all(type: string): Event[] {
    return this.events.filter((e) => e.type === type);
  }

  /** Sends `/quit`, waits for exit; returns the exit code. Cleans up. */
  async quit(): Promise<number> {
    if (!this.#exited) {
      try {
        await this.command("/quit");
      } catch {
        // stdin already closed: the process is on its way out.
      }
    }
    return await this.#finish();
  }

  /** Kills the process with `signal` (default SIGKILL) and waits for it. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<number> {
    if (!this.#exited) {
      try {
        this.#child.kill(signal);
      } catch {
        // Already gone.
      }
    }
    // A SIGKILLed peer dies without reading on: wait for that first, so that a write it was
    // blocked in cannot complete in the moment between the signal and its death because we read.
    if (signal === "SIGKILL") await this.#status;
    // What the peer wrote before it died is still in the pipe: read it to the end.
    this.resumeOutput();
    return await this.#finish();
  }

  /** Closes stdin (end of input) and waits for exit. */
  async endInput(): Promise<number> {
    await this.#writer.close().catch(() => {});
    return await this.#finish();
  }

  /** Removes the data directory if this helper created it. */
  async cleanup(): Promise<void> {
    if (!this.#exited) await this.kill();
    if (this.#ownDir) await Deno.remove(this.dataDir, { recursive: true }).catch(() => {});
  }

  async #finish(): Promise<number> {
    // A peer that does not exit within 20 s is a bug: kill it so the suite cannot hang, and say so.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = await Promise.race([
      this.#status.then(() => false),
      new Promise<boolean>((r) => timer = setTimeout(() => r(true), 20_000)),
    ]);
    clearTimeout(timer);
    if (hung) {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // exited just now
      }
      await this.#status;
      await this.#writer.close().catch(() => {});
      await this.#readers;
      throw new Error(`${this.name} did not exit within 20 s; stderr: ${this.stderr}`);
    }
    const status = await this.#status;
    await this.#writer.close().catch(() => {});
    await this.#readers;
    return status.code;
  }

  async #readStdout(): Promise<void> {
    let buf = "";
    const reader = this.#child.stdout.getReader();
    for (;;) {
      if (this.#paused) await this.#paused.promise;
      const { value: chunk, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === "") continue;
        let event: Event;
        try {
          event = JSON.parse(line);
        } catch {
          event = { type: "not-json", ts: Date.now(), line };
        }
        this.events.push(event);
        for (const w of [...this.#waiters]) {
          if (w.pred(event)) {
            this.#waiters = this.#waiters.filter((x) => x !== w);
            w.resolve(event);
          }
        }
      }
    }
  }

  async #readStderr(): Promise<void> {
    for await (const chunk of this.#child.stderr) this.stderr += decoder.decode(chunk);
  }
}

/** Runs main.ts with `args` to completion; returns exit code, stdout and stderr. */
export async function runMain(
  args: string[],
  opts: { flags?: readonly string[]; env?: Record<string, string>; stdin?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...(opts.flags ?? RUN_FLAGS), MAIN, ...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...opts.env },
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(encoder.encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}
