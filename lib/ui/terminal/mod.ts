/**
 * The interactive terminal UI: the original menu (1 chat, 2 peers, 3 history, 4 connect,
 * 5 quit), slash commands, and a live chat whose incoming messages print above the line being
 * typed. On a terminal it edits key by key in raw mode; with piped input it reads plain lines,
 * prints no escape codes, and quits at end of input.
 *
 * @module
 */

import { formatFingerprint } from "../../crypto/identity.ts";
import { type Logger, writeStderr } from "../../log.ts";
import type { ChatNode } from "../../node/chat_node.ts";
import { App, type TerminalNode } from "./app.ts";
import { runMenu } from "./menu.ts";
import { Prompter } from "./prompt.ts";
import { colorWanted, Screen, Style } from "./screen.ts";

/** Options of {@linkcode runTerminal}. */
export interface TerminalOptions {
  /** The program's logger: its lines are printed above the prompt while the UI runs. */
  log: Logger;
  /** Resolves when the program must stop (SIGINT, SIGTERM, SIGHUP). */
  stop: Promise<void>;
  /** Announcement interval (ms): the "nobody heard" hint comes after 3 of them (default 5 s). */
  intervalMs?: number;
  /** The UDP discovery port, named in that hint. */
  discoveryPort?: number;
  /** False when discovery is off: then no "nobody heard" hint. */
  discovery?: boolean;
  /** Input (default: stdin). */
  input?: ReadableStream<Uint8Array>;
  /** Output (default: stdout). */
  write?: (text: string) => void;
  /** Key-by-key editing with cursor control (default: stdin and stdout are terminals). */
  interactive?: boolean;
  /** Colours (default: NO_COLOR unset and stdout a terminal, or FORCE_COLOR). */
  color?: boolean;
  /** Terminal width (default: the real one, or 80). */
  columns?: () => number;
  /**
   * Starts the node once the UI listens to it (default: the node is running already). Starting
   * it here means the UI sees every event of the start, among them the messages that arrived
   * before a crash and were never shown: they are shown then.
   */
  startNode?: () => Promise<void>;
}

/**
 * Runs the terminal UI until the user quits (menu 5, q, /quit, Ctrl-C, Ctrl-D / end of input) or
 * `opts.stop` resolves; then closes the node (goodbyes sent, history closed) and returns.
 *
 * @example
 * ```ts
 * await runTerminal(node, { log, stop: signalPromise });
 * ```
 */
export async function runTerminal(node: ChatNode, opts: TerminalOptions): Promise<void> {
  await runTerminalWith(node, opts);
}

/**
 * {@linkcode runTerminal} for anything shaped like a node (tests pass a fake).
 *
 * @example
 * ```ts
 * await runTerminalWith(fakeNode, { log, stop, input, write, interactive: false });
 * ```
 */
export async function runTerminalWith(node: TerminalNode, opts: TerminalOptions): Promise<void> {
  const env = {
    NO_COLOR: envVar("NO_COLOR"),
    FORCE_COLOR: envVar("FORCE_COLOR"),
    TERM: envVar("TERM"),
  };
  const usesStdin = opts.input === undefined;
  const stdoutTty = opts.write === undefined && Deno.stdout.isTerminal();
  const interactive = opts.interactive ??
    (usesStdin && Deno.stdin.isTerminal() && stdoutTty && env.TERM !== "dumb");
  const color = opts.color ?? colorWanted({ isTerminal: stdoutTty, env });
  const style = new Style(color);
  const screen = new Screen({
    write: opts.write,
    interactive,
    columns: opts.columns ?? (() => consoleSize().columns),
    rows: () => consoleSize().rows,
  });
  const raw = interactive && usesStdin;
  const prompter = new Prompter({
    screen,
    input: opts.input ?? Deno.stdin.readable,
    interactive,
  });
  const intervalMs = opts.intervalMs ?? 5_000;
  const app = new App({
    node,
    screen,
    prompter,
    style,
    quietHintMs: opts.discovery === false ? 0 : Math.max(3 * intervalMs, 1_000),
    discovery: opts.discovery !== false,
    discoveryPort: opts.discoveryPort,
  });
  let rawOn = false;
  let closing = false;
  const onResize = () => screen.resized();
  try {
    opts.log.setSink(app.logSink);
    if (raw) {
      Deno.stdin.setRaw(true);
      rawOn = true;
      if (Deno.build.os !== "windows") Deno.addSignalListener("SIGWINCH", onResize);
    }
    screen.print(banner(node, style));
    app.start();
    await opts.startNode?.();
    prompter.start();
    const menu = runMenu(app).catch((e) => {
      // While closing, a view waiting on the node sees it shut: not worth a word.
      if (!closing) app.error(`internal error: ${e instanceof Error ? e.message : String(e)}`);
    });
    await Promise.race([menu, opts.stop, prompter.interrupted]);
    closing = true;
    await prompter.close();
    if (prompter.inputError) app.error(`input ended: ${prompter.inputError.message}`);
    screen.print(style.dim("closing: telling peers goodbye…"));
    await node.close();
    // The menu may still wait on the node (a connect, a send); closing the node ends those.
    // Bounded all the same: quitting must never hang.
    await settle(menu, 3_000);
    app.stop();
    screen.print("bye");
  } finally {
    app.stop();
    if (rawOn && Deno.build.os !== "windows") Deno.removeSignalListener("SIGWINCH", onResize);
    opts.log.setSink(writeLogLine);
    try {
      if (rawOn) Deno.stdin.setRaw(false);
    } finally {
      // Whatever happened above (a vanished terminal), peers get their goodbye. Idempotent.
      await node.close();
    }
  }
}

function banner(node: TerminalNode, style: Style): string {
  const fp = formatFingerprint(node.fingerprint);
  return [
    `${style.bold("p2pchat")}: you are ${style.magenta(node.name)}, listening on port ${node.port}`,
    `your fingerprint: ${fp}`,
    style.dim("(peers compare it with what they see to be sure they talk to you)"),
  ].join("\n");
}

/** Waits for `p`, but no longer than `ms`. */
async function settle(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([p, new Promise((r) => timer = setTimeout(r, ms))]);
  } finally {
    clearTimeout(timer);
  }
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (e) {
    // Not granted (--allow-env lists only what p2pchat needs): behave as if unset.
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      return undefined;
    }
    throw e;
  }
}

function consoleSize(): { columns: number; rows: number } {
  try {
    return Deno.consoleSize();
  } catch {
    // Not a terminal (or it went away): the classic default size.
    return { columns: 80, rows: 24 };
  }
}

function writeLogLine(level: string, line: string): void {
  writeStderr(`p2pchat: ${level}: ${line}\n`);
}
