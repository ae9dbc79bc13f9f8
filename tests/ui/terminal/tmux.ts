/**
 * Drives real programs in a real terminal (tmux) for end-to-end tests: a private tmux server per
 * test (its own socket), `send-keys` to type, `capture-pane` to read the screen, bounded polling.
 *
 * @module
 */

import { RUN_FLAGS } from "../../../lib/cli/permissions.ts";

/** Absolute path of main.ts. */
export const MAIN = new URL("../../../main.ts", import.meta.url).pathname;

const decoder = new TextDecoder();

/**
 * A private tmux server. Always call {@linkcode Tmux.close} in a finally block.
 *
 * @example
 * ```ts
 * const tmux = await Tmux.start();
 * try { await tmux.spawn("A", ["bash"]); } finally { await tmux.close(); }
 * ```
 */
export class Tmux {
  readonly socket = `p2pchat-test-${crypto.randomUUID().slice(0, 8)}`;
  #dir: string;
  #conf: string;
  #panes = new Set<number>();
  #started = false;

  private constructor(dir: string) {
    this.#dir = dir;
    this.#conf = `${dir}/tmux.conf`;
  }

  /** Creates the server's config (dead panes stay readable, so exit codes can be checked). */
  static async start(): Promise<Tmux> {
    const dir = await Deno.makeTempDir({ prefix: "p2pchat-tmux-" });
    const t = new Tmux(dir);
    await Deno.writeTextFile(t.#conf, "set -g remain-on-exit on\nset -g history-limit 5000\n");
    return t;
  }

  /** Runs a tmux command on this server; returns stdout. */
  async run(args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-L", this.socket, "-f", this.#conf, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`tmux ${args.join(" ")} failed: ${decoder.decode(out.stderr).trim()}`);
    }
    return decoder.decode(out.stdout);
  }

  /**
   * Starts `argv` in a new 120x40 session called `name`. A shell around it prints
   * "[exited N]" when it ends (tmux does not always keep the status of a dead pane).
   */
  async spawn(name: string, argv: string[]): Promise<void> {
    const command = `${shellJoin(argv)}; echo "[exited $?]"`;
    await this.run(["new-session", "-d", "-s", name, "-x", "120", "-y", "40", command]);
    this.#started = true;
    const pid = Number((await this.run(["display", "-p", "-t", name, "#{pane_pid}"])).trim());
    if (pid > 0) this.#panes.add(pid);
  }

  /** Types text literally (no key names). */
  async type(name: string, text: string): Promise<void> {
    await this.run(["send-keys", "-t", name, "-l", text]);
  }

  /** Presses keys by tmux name ("Enter", "C-d", "Tab", "Left"). */
  async keys(name: string, ...keys: string[]): Promise<void> {
    await this.run(["send-keys", "-t", name, ...keys]);
  }

  /** The visible screen (wrapped lines joined), or with `escapes` the attributes as SGR codes. */
  async screen(name: string, opts: { escapes?: boolean; history?: boolean } = {}): Promise<string> {
    const args = ["capture-pane", "-p", "-J", "-t", name];
    if (opts.escapes) args.push("-e");
    if (opts.history) args.push("-S", "-");
    return await this.run(args);
  }

  /** The line the cursor is on, and the cursor's column. */
  async cursorLine(name: string): Promise<{ line: string; x: number }> {
    const [x, y] = (await this.run(["display", "-p", "-t", name, "#{cursor_x} #{cursor_y}"]))
      .trim().split(" ").map(Number);
    const lines = (await this.run(["capture-pane", "-p", "-t", name])).split("\n");
    return { line: lines[y] ?? "", x };
  }

  /**
   * Polls the screen (with scrollback) until `want` appears.
   *
   * @throws {Error} after `timeoutMs`, with the screen as it was.
   */
  async waitFor(name: string, want: string | RegExp, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const screen = await this.screen(name, { history: true });
      if (typeof want === "string" ? screen.includes(want) : want.test(screen)) return screen;
      if (Date.now() > deadline) {
        throw new Error(`[${name}] timed out waiting for ${want}; screen:\n${screen}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Waits until the program in `name` has exited; returns its exit status. */
  async waitExit(name: string, timeoutMs = 30_000): Promise<number> {
    const screen = await this.waitFor(name, /\[exited \d+\]/, timeoutMs);
    return Number(/\[exited (\d+)\]/.exec(screen)![1]);
  }

  /** Kills the server and anything still running in it; removes the temporary files. */
  async close(): Promise<void> {
    if (this.#started) {
      try {
        await this.run(["kill-server"]);
      } catch (e) {
        // Already gone: nothing to kill.
        if (!/no server running|error connecting/.test((e as Error).message)) throw e;
      }
    }
    for (const pid of this.#panes) {
      try {
        // The pane's shell leads its own process group, which holds the program too.
        Deno.kill(-pid, "SIGKILL");
      } catch (e) {
        // Exited with the server, as expected.
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    await Deno.remove(this.#dir, { recursive: true });
  }
}

/** Quotes argv for the shell command tmux runs. */
function shellJoin(argv: string[]): string {
  return argv.map((a) => /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)
    .join(" ");
}

/** Options of {@linkcode peerCommand}. */
export interface PeerCommandOptions {
  dataDir: string;
  discoveryPort?: number;
  /** Environment changes: a string sets, null unsets. */
  env?: Record<string, string | null>;
  extra?: string[];
}

/**
 * The command line of a peer exactly as users run it (the release permission flags), with
 * discovery on loopback broadcast when a discovery port is given, else `--no-discovery`.
 */
export function peerCommand(name: string, opts: PeerCommandOptions): string[] {
  // env(1) wants its -u options before any assignment.
  const entries = Object.entries(opts.env ?? {});
  const env: string[] = [
    "env",
    ...entries.filter(([, v]) => v === null).flatMap(([k]) => ["-u", k]),
    ...entries.filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`),
  ];
  const discovery = opts.discoveryPort
    ? [
      "--discovery-port",
      String(opts.discoveryPort),
      "--broadcast",
      "127.255.255.255",
      "--interval",
      "0.5",
    ]
    : ["--no-discovery"];
  return [
    ...env,
    Deno.execPath(),
    "run",
    ...RUN_FLAGS,
    MAIN,
    "--name",
    name,
    "--port",
    "0",
    "--data-dir",
    opts.dataDir,
    ...discovery,
    ...(opts.extra ?? []),
  ];
}
