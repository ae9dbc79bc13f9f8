/**
 * Terminal output: colours (only when allowed), making untrusted text harmless, and printing
 * lines ABOVE the input line without disturbing what the user is typing.
 *
 * @module
 */

import { textWidth } from "./line_editor.ts";

/** A colour or attribute; the identity function when colours are off. */
export type Paint = (text: string) => string;

/**
 * Colours and attributes, switched off as a whole (NO_COLOR, not a TTY).
 *
 * @example
 * ```ts
 * const style = new Style(false);
 * style.red("x"); // "x"
 * ```
 */
export class Style {
  /** Whether any escape codes are produced. */
  readonly enabled: boolean;
  /** Bold. */
  readonly bold: Paint;
  /** Dim (faint). */
  readonly dim: Paint;
  /** Red: errors, key changes. */
  readonly red: Paint;
  /** Green: delivered, connected. */
  readonly green: Paint;
  /** Yellow: warnings, notices. */
  readonly yellow: Paint;
  /** Cyan: peer names. */
  readonly cyan: Paint;
  /** Magenta: our own name. */
  readonly magenta: Paint;

  /**
   * Makes the palette; when disabled, every paint returns its text unchanged.
   *
   * @param enabled Produce escape codes.
   */
  constructor(enabled: boolean) {
    this.enabled = enabled;
    const sgr = (on: number, off: number): Paint =>
      enabled ? (t) => `\x1b[${on}m${t}\x1b[${off}m` : (t) => t;
    this.bold = sgr(1, 22);
    this.dim = sgr(2, 22);
    this.red = sgr(31, 39);
    this.green = sgr(32, 39);
    this.yellow = sgr(33, 39);
    this.cyan = sgr(36, 39);
    this.magenta = sgr(35, 39);
  }
}

/**
 * Decides whether to colour: never with NO_COLOR set (non-empty), always with FORCE_COLOR set
 * (other than "0"), else only on a terminal that is not `TERM=dumb`.
 *
 * @example
 * ```ts
 * colorWanted({ isTerminal: true, env: { NO_COLOR: "1" } }); // false
 * ```
 */
export function colorWanted(
  opts: { isTerminal: boolean; env: { NO_COLOR?: string; FORCE_COLOR?: string; TERM?: string } },
): boolean {
  const { env } = opts;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== "" && env.FORCE_COLOR !== "0") {
    return true;
  }
  return opts.isTerminal && env.TERM !== "dumb";
}

/**
 * Makes text from the network safe to print: control characters (which could move the cursor,
 * change colours or rewrite the screen) become visible `^X`/`\u{..}` forms; line breaks
 * become "↵ " so one message stays on one line.
 *
 * @example
 * ```ts
 * sanitize("hi\x1b[2J"); // "hi^[[2J"
 * ```
 */
export function sanitize(text: string): string {
  return text.replace(/\r?\n/g, "↵ ").replace(
    // C0 controls, DEL, C1 controls, and bidirectional overrides that could disguise text.
    // deno-lint-ignore no-control-regex -- matching control characters is the point.
    /[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      const code = c.charCodeAt(0);
      if (code < 0x20) return "^" + String.fromCharCode(code + 64);
      if (code === 0x7f) return "^?";
      return `\\u{${code.toString(16)}}`;
    },
  );
}

/** Removes SGR colour codes (to measure the width of coloured text). */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex -- matching the escape character is the point.
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
}

/** Draws the active input line: the styled prompt, the visible text, and the cursor column. */
export type PromptRenderer = (columns: number) => { line: string; cursorColumn: number };

/** A printed line, for {@linkcode Screen.update}. */
export interface LineRef {
  /** Sequence number of the line. */
  readonly seq: number;
}

/** Options of {@linkcode Screen}. */
export interface ScreenOptions {
  /** Writes output (default: stdout, synchronously). */
  write?: (text: string) => void;
  /** Cursor control allowed (a terminal on both ends): lines go above a live input line. */
  interactive: boolean;
  /** Columns of the terminal (called on every redraw, so resizes are followed). */
  columns?: () => number;
  /** Rows of the terminal. */
  rows?: () => number;
}

const encoder = new TextEncoder();

/**
 * The output side of the UI. In interactive mode the bottom row belongs to the input line:
 * printing clears it, prints the line, and redraws it, so half-typed text survives. In plain
 * mode (piped) lines are simply written, and prompts end up on lines of their own.
 *
 * @example
 * ```ts
 * const screen = new Screen({ interactive: false, write: (t) => out.push(t) });
 * screen.print("hello");
 * ```
 */
export class Screen {
  #write: (text: string) => void;
  #interactive: boolean;
  #columns: () => number;
  #rows: () => number;
  #prompt: PromptRenderer | null = null;
  #seq = 0;
  /** Rows taken by the lines printed most recently (just above the input line), oldest first. */
  #recent: { seq: number; rows: number }[] = [];
  /** Plain mode: a prompt was written without its line end. */
  #midLine = false;
  /** The width the lines in #recent were measured at. */
  #width = 0;

  /**
   * Makes a screen; nothing is written until something is printed.
   *
   * @param opts Where to write and whether cursor control is allowed.
   */
  constructor(opts: ScreenOptions) {
    this.#write = opts.write ?? writeStdout;
    this.#interactive = opts.interactive;
    this.#columns = opts.columns ?? (() => 80);
    this.#rows = opts.rows ?? (() => 24);
  }

  /** False once stdout is gone (its reader went away): nothing printed reaches anyone. */
  get outputWorks(): boolean {
    return this.#write !== writeStdout || !stdoutGone;
  }

  /** Whether lines are printed above a live input line. */
  get interactive(): boolean {
    return this.#interactive;
  }

  /** Terminal width in columns. */
  get columns(): number {
    return Math.max(20, this.#columns());
  }

  /**
   * Prints one or more lines (split on "\n") above the input line.
   * Returns a reference to the last one for {@linkcode update}.
   */
  print(text: string): LineRef {
    const lines = text.split("\n");
    this.#checkWidth();
    if (!this.#interactive) {
      this.#write((this.#midLine ? "\n" : "") + lines.join("\n") + "\n");
      this.#midLine = false;
      return { seq: ++this.#seq };
    }
    this.#write(CLEAR_ROW + lines.join("\r\n") + "\r\n" + this.#promptText());
    for (const line of lines) this.#remember(line);
    return { seq: this.#seq };
  }

  /**
   * Rewrites a printed line in place if it is still the last one above the input line (and the
   * terminal allows it); returns false otherwise, and the caller prints a new line instead.
   */
  update(ref: LineRef, text: string): boolean {
    if (!this.#interactive || text.includes("\n")) return false;
    this.#checkWidth();
    const at = this.#recent.findIndex((l) => l.seq === ref.seq);
    if (at < 0) return false;
    const line = this.#recent[at];
    const rows = this.#rowsOf(text);
    const below = this.#recent.slice(at + 1).reduce((n, l) => n + l.rows, 0);
    if (below + line.rows >= this.#rows() - 1) return false;
    if (at === this.#recent.length - 1) {
      // The last line: clear from it down and print it again (its height may change).
      this.#write(`${CLEAR_ROW}\x1b[${line.rows}A\x1b[J${text}\r\n${this.#promptText()}`);
      line.rows = rows;
      return true;
    }
    // Further up: rewrite that one row in place and come back, if the height stays one row.
    if (line.rows !== 1 || rows !== 1) return false;
    const up = below + 1;
    this.#write(`\x1b[${up}A${CLEAR_ROW}${text}\r\x1b[${up}B${CLEAR_ROW}${this.#promptText()}`);
    return true;
  }

  /** Rings the terminal bell (interactive mode only: a BEL in piped output is noise). */
  bell(): void {
    if (this.#interactive) this.#write("\x07");
  }

  /** Sets (or removes, with null) the input line drawn at the bottom, and draws it. */
  setPrompt(render: PromptRenderer | null): void {
    this.#prompt = render;
    if (this.#interactive) this.#write(CLEAR_ROW + this.#promptText());
  }

  /**
   * Redraws the input line at the terminal's new width after a resize (SIGWINCH). Lines already
   * printed stay as the terminal rewrapped them and are not rewritten in place any more.
   */
  resized(): void {
    this.#checkWidth();
    if (this.#interactive) this.#write(CLEAR_ROW + "\x1b[J" + this.#promptText());
  }

  /** Redraws the input line after an edit. */
  redraw(): void {
    if (this.#interactive) this.#write(CLEAR_ROW + this.#promptText());
  }

  /** Replaces the input line by `text` (the submitted prompt and line), kept on screen. */
  commitPrompt(text: string): void {
    this.#prompt = null;
    if (!this.#interactive) return;
    this.#write(CLEAR_ROW + text + "\r\n");
    this.#remember(text);
  }

  /** Removes the input line from the screen. */
  clearPrompt(): void {
    this.#prompt = null;
    if (this.#interactive) this.#write(CLEAR_ROW);
  }

  /** Plain mode: writes a prompt without a line end (the next print starts a new line). */
  writePrompt(text: string): void {
    this.#write(text);
    this.#midLine = true;
  }

  /** Plain mode: echoes the line read after a prompt, so transcripts show what was chosen. */
  echo(line: string): void {
    this.#write(line + "\n");
    this.#midLine = false;
  }

  #promptText(): string {
    if (!this.#prompt) return "";
    const { line, cursorColumn } = this.#prompt(this.columns);
    // Return to column 0, then move right to the cursor: exact whatever the character widths.
    return line + "\r" + (cursorColumn > 0 ? `\x1b[${cursorColumn}C` : "");
  }

  #remember(line: string): void {
    this.#recent.push({ seq: ++this.#seq, rows: this.#rowsOf(line) });
    // Only lines still on screen can be rewritten.
    if (this.#recent.length > 200) this.#recent.splice(0, this.#recent.length - 200);
  }

  /**
   * After a resize the terminal has wrapped (or cut) the lines already on screen its own way:
   * where they are is no longer known, so none of them is rewritten in place any more (a state
   * change is printed as a new line instead of landing on the wrong row).
   */
  #checkWidth(): void {
    const width = this.columns;
    if (width === this.#width) return;
    this.#width = width;
    this.#recent = [];
  }

  #rowsOf(line: string): number {
    return Math.max(1, Math.ceil(textWidth(stripAnsi(line)) / this.columns));
  }
}

/** Carriage return, then erase the whole row. */
const CLEAR_ROW = "\r\x1b[2K";

let stdoutGone = false;

function writeStdout(text: string): void {
  if (stdoutGone) return;
  const bytes = encoder.encode(text);
  let at = 0;
  try {
    while (at < bytes.length) at += Deno.stdout.writeSync(bytes.subarray(at));
  } catch (e) {
    // Whoever read our output has gone (`p2pchat | head`): nothing left to show, and an
    // exception here would surface inside the node's event dispatch. Input still ends the UI.
    if (!(e instanceof Deno.errors.BrokenPipe)) throw e;
    stdoutGone = true;
  }
}
