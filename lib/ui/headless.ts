/**
 * Headless mode: commands in on stdin, one per line; events out on stdout as JSON lines.
 * The contract is public (README "Headless mode"): change it only by adding.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { RuntimeError } from "../cli/errors.ts";
import { formatFingerprint } from "../crypto/identity.ts";
import type { Logger } from "../log.ts";
import { type ChatNode, NodeError } from "../node/chat_node.ts";
import type { NodeEvent, WithoutTs } from "../node/events.ts";
import { MAX_TEXT_BYTES } from "../protocol/messages.ts";

/**
 * Longest command line read, in UTF-16 code units: room for a /send of the longest message with
 * room to spare; a longer line is dropped with an `error` instead of being held in memory.
 */
const MAX_LINE_LENGTH = 4 * MAX_TEXT_BYTES;

/** How long `/quit` waits for commands still running. */
const QUIT_GRACE_MS = 3_000;

/** A parsed headless command. */
export type HeadlessCommand =
  | { kind: "connect"; address: string }
  | { kind: "send"; peer: string; text: string }
  | { kind: "peers" }
  | { kind: "history"; peer: string; limit: number }
  | { kind: "trust"; peer: string; fingerprint: string }
  | { kind: "quit" };

/** Thrown by {@linkcode parseCommand} for a line that is not a valid command. */
export class CommandError extends Error {
  /**
   * Makes the error.
   *
   * @param message What is wrong, for the `error` event.
   */
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

/**
 * Parses one input line. Blank lines yield `null`.
 *
 * @throws {CommandError} for an unknown command or missing arguments.
 * @example
 * ```ts
 * parseCommand("/send Bob hello there"); // { kind: "send", peer: "Bob", text: "hello there" }
 * ```
 */
export function parseCommand(line: string): HeadlessCommand | null {
  const trimmed = line.trim();
  if (trimmed === "") return null;
  const space = trimmed.search(/\s/);
  const head = space < 0 ? trimmed : trimmed.slice(0, space);
  if (head === "/send") {
    const m = /^\/send\s+(\S+)\s+([\s\S]+)$/.exec(trimmed);
    if (!m) throw new CommandError("usage: /send PEER TEXT...");
    return { kind: "send", peer: m[1], text: m[2] };
  }
  // Split into words only for the other commands: a /send's text can be long.
  const args = space < 0 ? [] : trimmed.slice(space).trim().split(/\s+/);
  switch (head) {
    case "/connect":
      if (args.length !== 1) throw new CommandError("usage: /connect HOST:PORT");
      return { kind: "connect", address: args[0] };
    case "/peers":
      if (args.length !== 0) throw new CommandError("usage: /peers");
      return { kind: "peers" };
    case "/history": {
      if (args.length < 1 || args.length > 2) {
        throw new CommandError("usage: /history PEER [LIMIT]");
      }
      // Digits only: Number() would also take "1e2", "0x10" or "+5".
      const limit = args.length === 2 ? (/^\d{1,6}$/.test(args[1]) ? Number(args[1]) : NaN) : 50;
      if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) {
        throw new CommandError("LIMIT must be a whole number from 1 to 100000");
      }
      return { kind: "history", peer: args[0], limit };
    }
    case "/trust":
      if (args.length !== 2) throw new CommandError("usage: /trust PEER FINGERPRINT");
      return { kind: "trust", peer: args[0], fingerprint: args[1] };
    case "/quit":
    case "/exit":
      // Words after it are ignored: a script that says "/quit now" must not leave a peer running.
      return { kind: "quit" };
    default:
      throw new CommandError(
        head.startsWith("/")
          ? `unknown command ${head} (commands: /connect /send /peers /history /trust /quit)`
          : "commands start with / (for example /send PEER TEXT)",
      );
  }
}

/** Options of {@linkcode runHeadless}. */
export interface HeadlessOptions {
  /** Command lines (default: stdin). */
  input?: ReadableStream<Uint8Array>;
  /** Receives each output line without its newline (default: stdout). */
  write?: (line: string) => void;
  /** Resolves when something else (a signal) asks to stop. */
  stop?: Promise<void>;
  /** Where warnings for a person watching go (key changes, trust decisions), besides the events. */
  log?: Logger;
}

/**
 * Starts `node` and runs the headless interface until `/quit`, end of input or `opts.stop`;
 * then closes the node and prints `bye`.
 *
 * @throws whatever {@linkcode ChatNode.start} throws (e.g. the discovery port is unusable).
 *
 * @example
 * ```ts
 * await runHeadless(node);
 * ```
 */
export async function runHeadless(node: ChatNode, opts: HeadlessOptions = {}): Promise<void> {
  const stdout = opts.write ? null : new LineBatcher(writeAllStdout);
  const write = opts.write ?? ((line: string) => stdout!.push(line));
  const emit = (e: NodeEvent) => {
    write(JSON.stringify(e));
    if (e.type === "key-changed") {
      opts.log?.warn(
        `KEY CHANGED for ${e.name}: pinned ${formatFingerprint(e.old)}, now offered ` +
          `${formatFingerprint(e.new)}. Compare fingerprints out of band before trusting it.`,
      );
    } else if (e.type === "trusted") {
      opts.log?.warn(`now trusting ${e.name} as ${formatFingerprint(e.fingerprint)}`);
    }
  };
  // `message` lines leave at once (flush), right after the node recorded them as shown.
  const unsubscribe = node.subscribe(emit, { flush: () => stdout?.flush() ?? true });
  const error = (message: string, command?: string) =>
    emit({ type: "error", message, ...(command ? { command } : {}), ts: Date.now() });
  const inFlight = new Set<Promise<void>>();
  try {
    await node.start();
  } catch (e) {
    unsubscribe();
    throw e;
  }

  const handle = (line: string): boolean => {
    let cmd: HeadlessCommand | null;
    try {
      cmd = parseCommand(line);
    } catch (e) {
      error((e as Error).message, line.trim());
      return true;
    }
    if (cmd === null) return true;
    if (cmd.kind === "quit") return false;
    const run = execute(node, cmd, emit).catch((e) => {
      if (e instanceof NodeError) error(e.message, line.trim());
      else error(`internal error: ${(e as Error).message ?? e}`, line.trim());
    });
    // Commands run concurrently (a /send to an unreachable peer must not hold up /peers).
    const tracked = run.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
    return true;
  };

  // Whole batches of lines per read: a script piping thousands of commands costs one await per
  // chunk of input, not one per line.
  const lines = readLineBatches(opts.input ?? Deno.stdin, {
    maxLineLength: MAX_LINE_LENGTH,
    onOverlong: (head, length) =>
      error(
        `line too long: ${length} characters (the limit is ${MAX_LINE_LENGTH}; a message ` +
          `holds up to ${MAX_TEXT_BYTES} bytes)`,
        `${head.trim().slice(0, 40)}…`,
      ),
  });
  const outputGone = stdout?.failed.then(() => "stop" as const);
  const stopped = [opts.stop?.then(() => "stop" as const), outputGone].filter((p) =>
    p !== undefined
  );
  try {
    reading: for (;;) {
      // The next read of stdin starts at the end of this turn: starting one hands work to
      // another thread (tens of µs here), and what the commands just read set going (a
      // message's socket write) goes first.
      await new Promise<void>((resolve) => setImmediate(resolve));
      const next = lines.next();
      const result = stopped.length > 0 ? await Promise.race([next, ...stopped]) : await next;
      if (result === "stop" || result.done) break;
      for (const line of result.value) {
        if (!handle(line)) break reading;
      }
    }
  } finally {
    // Let commands in flight finish (their answers belong before `bye`), but not forever.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...inFlight]),
      new Promise((r) => timer = setTimeout(r, QUIT_GRACE_MS)),
    ]);
    clearTimeout(timer);
    await node.close();
    unsubscribe();
    write(JSON.stringify({ type: "bye", ts: Date.now() }));
    // The process exits right after this returns: nothing may stay in the buffer.
    stdout?.flush();
    lines.return(undefined).catch(() => {/* stdin already closed: nothing to release */});
  }
  if (stdout?.failure) {
    throw new RuntimeError(
      `stopped: cannot write to stdout (${stdout.failure.message}); peers were told goodbye`,
    );
  }
}

async function execute(
  node: ChatNode,
  cmd: Exclude<HeadlessCommand, { kind: "quit" }>,
  emit: (e: NodeEvent) => void,
): Promise<void> {
  const out = (e: WithoutTs<NodeEvent>) => emit({ ...e, ts: Date.now() } as NodeEvent);
  switch (cmd.kind) {
    case "connect":
      // The node emits `connected` itself when the session is up.
      await node.connect(cmd.address);
      return;
    case "send":
      await node.send(cmd.peer, cmd.text);
      return;
    case "peers":
      out({ type: "peers", peers: node.peers() });
      return;
    case "history": {
      const h = await node.history(cmd.peer, cmd.limit);
      out({ type: "history", peer: h.peer, messages: h.messages });
      return;
    }
    case "trust":
      await node.trust(cmd.peer, cmd.fingerprint);
      return;
  }
}

/**
 * Where lines are read from: a byte stream, or anything that reads into a buffer as `Deno.stdin`
 * does (`read` resolves to the number of bytes read, `null` at the end).
 */
export type LineSource = ReadableStream<Uint8Array> | {
  read(buffer: Uint8Array): Promise<number | null>;
};

/**
 * Splits a byte source into lines (without their `\n` or `\r\n`).
 *
 * @example
 * ```ts
 * for await (const line of readLines(Deno.stdin)) console.log(line);
 * ```
 */
export async function* readLines(source: LineSource): AsyncGenerator<string> {
  for await (const batch of readLineBatches(source)) yield* batch;
}

/** Options of {@linkcode readLineBatches}. */
export interface LineBatchOptions {
  /**
   * Longest line kept, in UTF-16 code units (default: unlimited). A longer line is dropped (its
   * text is not kept past the limit, so memory stays bounded) and reported to `onOverlong` in
   * its place, in order: after the lines before it have been yielded.
   */
  maxLineLength?: number;
  /** Called for each dropped line with its start (`maxLineLength` units) and its length. */
  onOverlong?: (head: string, length: number) => void;
}

/**
 * Splits a byte source into lines, yielding every complete line of each chunk read as one array.
 * Each chunk's text is scanned once, so a long line costs its length, not its length squared.
 * Leaving early (`return()`) cancels a stream.
 *
 * @example
 * ```ts
 * for await (const lines of readLineBatches(Deno.stdin)) console.log(lines.length);
 * ```
 */
export async function* readLineBatches(
  source: LineSource,
  opts: LineBatchOptions = {},
): AsyncGenerator<string[]> {
  // Read directly, with a streaming decoder: web streams add promise hops (and, for Deno.stdin's
  // readable, a new 64 KiB buffer) to every chunk, and a script that waits for each answer sends
  // a chunk a line.
  const chunks = chunkReader(source);
  const decoder = new TextDecoder();
  const max = opts.maxLineLength ?? Infinity;
  // The line being read: its pieces so far (up to `max` units) and its whole length.
  const pieces: string[] = [];
  let length = 0;
  const take = (text: string) => {
    if (length < max) pieces.push(length + text.length <= max ? text : text.slice(0, max - length));
    length += text.length;
  };
  let ended = false;
  try {
    for (;;) {
      const value = await chunks.read();
      if (value === null) {
        ended = true;
        break;
      }
      const text = decoder.decode(value, { stream: true });
      let batch: string[] = [];
      let start = 0;
      let nl: number;
      while ((nl = text.indexOf("\n", start)) >= 0) {
        take(text.slice(start, nl));
        start = nl + 1;
        const line = pieces.length === 1 ? pieces[0] : pieces.join("");
        const whole = length;
        pieces.length = 0;
        length = 0;
        if (whole <= max) {
          batch.push(stripCr(line));
          continue;
        }
        // Its report goes after the answers to the lines before it.
        if (batch.length > 0) yield batch;
        batch = [];
        opts.onOverlong?.(line, whole);
      }
      if (start < text.length) take(start === 0 ? text : text.slice(start));
      if (batch.length > 0) yield batch;
    }
  } finally {
    // Left early (the consumer stopped): the source is not wanted any more, as with for await.
    await chunks.release(!ended);
  }
  take(decoder.decode());
  if (length > max) opts.onOverlong?.(pieces.join(""), length);
  else if (length > 0) yield [stripCr(pieces.join(""))];
}

/** The next chunk of a source (null at its end), valid until the next read. */
interface ChunkReader {
  read(): Promise<Uint8Array | null>;
  release(cancel: boolean): Promise<void>;
}

function chunkReader(source: LineSource): ChunkReader {
  if (source instanceof ReadableStream) {
    const reader = source.getReader();
    return {
      read: async () => {
        const { value, done } = await reader.read();
        return done ? null : value;
      },
      release: async (cancel) => {
        if (cancel) await reader.cancel();
        reader.releaseLock();
      },
    };
  }
  const buffer = new Uint8Array(64 * 1024);
  return {
    read: async () => {
      const n = await source.read(buffer);
      return n === null ? null : buffer.subarray(0, n);
    },
    // Nothing to cancel: a read under way ends with the process.
    release: () => Promise.resolve(),
  };
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

const encoder = new TextEncoder();

/**
 * Collects output lines and writes them together at the end of the current turn of the event
 * loop (`setImmediate`, a few µs), so that a burst of events (an ACK for 500 messages gives 500
 * `delivered` lines) costs one system call and one wake-up of the reader instead of one each.
 * Order is kept; {@linkcode LineBatcher.flush} empties the buffer at once (before exiting).
 */
class LineBatcher {
  #lines: string[] = [];
  #scheduled = false;
  #sink: (bytes: Uint8Array) => void;
  /** The write error that ended output (the reader went away), if one did. */
  failure: Error | null = null;
  /** Resolves once output has failed: nothing more can be written. */
  readonly failed: Promise<void>;
  #fail!: () => void;

  constructor(sink: (bytes: Uint8Array) => void) {
    this.#sink = sink;
    this.failed = new Promise((resolve) => this.#fail = resolve);
  }

  /** Queues a line for the end of this turn of the event loop (or the next `flush`). */
  push(line: string): void {
    if (this.failure !== null) return;
    this.#lines.push(line);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Writes every queued line now; false when output has failed (now or before). */
  flush(): boolean {
    this.#scheduled = false;
    if (this.failure !== null) return false;
    if (this.#lines.length === 0) return true;
    const text = this.#lines.join("\n") + "\n";
    this.#lines = [];
    try {
      this.#sink(encoder.encode(text));
    } catch (e) {
      // A closed pipe (the reader went away) or a broken terminal: stop, do not crash.
      this.failure = e instanceof Error ? e : new Error(String(e));
      this.#fail();
      return false;
    }
    return true;
  }
}

function writeAllStdout(bytes: Uint8Array): void {
  let at = 0;
  while (at < bytes.length) at += Deno.stdout.writeSync(bytes.subarray(at));
}
