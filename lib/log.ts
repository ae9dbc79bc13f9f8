/**
 * A minimal leveled logger writing one line per entry to stderr (stdout belongs to the UI or
 * the headless JSON stream).
 *
 * @module
 */

/** Severity levels, most severe first. */
export type LogLevel = "error" | "warn" | "info" | "debug";

const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Where log lines go; replaceable so the terminal UI can print them above its prompt. */
export type LogSink = (level: LogLevel, line: string) => void;

/**
 * A logger with a level threshold.
 *
 * @example
 * ```ts
 * const log = new Logger({ level: "info" });
 * log.warn("no broadcast route");
 * ```
 */
export class Logger {
  #level: number;
  #sink: LogSink;

  /**
   * Makes a logger that passes on entries at `level` or more severe.
   *
   * @param opts `level` (default "warn"), `sink` (default: stderr).
   */
  constructor(opts: { level?: LogLevel; sink?: LogSink } = {}) {
    this.#level = ORDER[opts.level ?? "warn"];
    this.#sink = opts.sink ?? writeLogLine;
  }

  /** Sends future lines to `sink`. */
  setSink(sink: LogSink): void {
    this.#sink = sink;
  }

  /** Logs at `level` if the threshold lets it through. */
  log(level: LogLevel, message: string): void {
    if (ORDER[level] <= this.#level) this.#sink(level, message);
  }

  /** Logs an error. */
  error(message: string): void {
    this.log("error", message);
  }

  /** Logs a warning. */
  warn(message: string): void {
    this.log("warn", message);
  }

  /** Logs information. */
  info(message: string): void {
    this.log("info", message);
  }

  /** Logs detail for debugging. */
  debug(message: string): void {
    this.log("debug", message);
  }
}

const encoder = new TextEncoder();
let stderrGone = false;

/**
 * Writes `text` (a whole line with its newline) to stderr, and never throws: a log that cannot be
 * written must not stop the chat or change what stdout says. When stderr is gone (its reader
 * closed it) the text is dropped, and so is every later one.
 *
 * @example
 * ```ts
 * writeStderr("p2pchat: warn: no broadcast route\n");
 * ```
 */
export function writeStderr(text: string): void {
  if (stderrGone) return;
  const bytes = encoder.encode(text);
  try {
    let at = 0;
    while (at < bytes.length) at += Deno.stderr.writeSync(bytes.subarray(at));
  } catch (e) {
    // Nobody reads stderr any more (EPIPE, a closed terminal): there is nowhere to say so. Any
    // other failure (a stderr set non-blocking by someone else) costs this line only.
    if (e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.BadResource) {
      stderrGone = true;
    }
  }
}

function writeLogLine(level: LogLevel, line: string): void {
  writeStderr(`p2pchat: ${level}: ${line}\n`);
}
