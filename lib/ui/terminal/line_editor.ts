/**
 * A small line editor without I/O: decodes the bytes a terminal sends in raw mode into keys, and
 * applies keys to an editable line (cursor, history, completion). The terminal layer
 * (prompt.ts) feeds it and draws the result; everything here is testable with vectors.
 *
 * @module
 */

/** Keys other than text, after decoding. */
export type KeyName =
  | "enter"
  | "backspace"
  | "delete"
  | "left"
  | "right"
  | "word-left"
  | "word-right"
  | "home"
  | "end"
  | "up"
  | "down"
  | "tab"
  | "interrupt"
  | "eof"
  | "kill-line"
  | "kill-to-end"
  | "delete-word"
  | "redraw"
  | "escape";

/** One decoded key press: printable text (possibly several characters, as pasted) or a named key. */
export type Key = { name: "text"; text: string } | { name: KeyName };

/** Single control bytes and what they mean (readline's defaults). */
const CONTROL: Record<string, KeyName> = {
  "\x01": "home", // Ctrl-A
  "\x02": "left", // Ctrl-B
  "\x03": "interrupt", // Ctrl-C
  "\x04": "eof", // Ctrl-D: end of input on an empty line, else delete
  "\x05": "end", // Ctrl-E
  "\x06": "right", // Ctrl-F
  "\x08": "backspace", // Ctrl-H
  "\t": "tab",
  "\x0b": "kill-to-end", // Ctrl-K
  "\x0c": "redraw", // Ctrl-L
  "\x0e": "down", // Ctrl-N
  "\x10": "up", // Ctrl-P
  "\x15": "kill-line", // Ctrl-U
  "\x17": "delete-word", // Ctrl-W
  "\x7f": "backspace",
};

/** Final bytes of CSI (`ESC [`) and SS3 (`ESC O`) sequences without parameters. */
const FINAL: Record<string, KeyName> = {
  A: "up",
  B: "down",
  C: "right",
  D: "left",
  H: "home",
  F: "end",
};

/** `ESC [ n ~` sequences. */
const TILDE: Record<string, KeyName> = {
  "1": "home",
  "7": "home",
  "4": "end",
  "8": "end",
  "3": "delete",
};

/** Longest escape sequence kept while waiting for its end; longer ones are dropped. */
const MAX_SEQUENCE = 32;

/**
 * Turns raw terminal input into {@linkcode Key}s. Stateful: a UTF-8 character or an escape
 * sequence split across two reads is completed by the next read.
 *
 * @example
 * ```ts
 * const d = new KeyDecoder();
 * d.feed(new TextEncoder().encode("hi\x1b[D\r"));
 * // [{ name: "text", text: "hi" }, { name: "left" }, { name: "enter" }]
 * ```
 */
export class KeyDecoder {
  #decoder = new TextDecoder();
  #pending = "";

  /** Decodes the next chunk of input. Invalid UTF-8 becomes U+FFFD; it never throws. */
  feed(bytes: Uint8Array): Key[] {
    return this.feedText(this.#decoder.decode(bytes, { stream: true }));
  }

  /** Decodes already-decoded text (used by {@linkcode feed} and by tests). */
  feedText(chunk: string): Key[] {
    const s = this.#pending + chunk;
    this.#pending = "";
    const keys: Key[] = [];
    let text = "";
    const flushText = () => {
      if (text !== "") keys.push({ name: "text", text });
      text = "";
    };
    let i = 0;
    while (i < s.length) {
      const ch = s[i];
      if (ch === "\x1b") {
        flushText();
        const r = parseEscape(s, i);
        if (r === "incomplete") {
          const rest = s.slice(i);
          if (rest.length <= MAX_SEQUENCE) this.#pending = rest;
          break;
        }
        if (r.key) keys.push({ name: r.key });
        i = r.next;
        continue;
      }
      if (ch === "\r" || ch === "\n") {
        flushText();
        keys.push({ name: "enter" });
        // A pasted CRLF is one line break, not two.
        i += ch === "\r" && s[i + 1] === "\n" ? 2 : 1;
        continue;
      }
      const control = CONTROL[ch];
      if (control) {
        flushText();
        keys.push({ name: control });
        i++;
        continue;
      }
      const code = ch.charCodeAt(0);
      // Other C0 and C1 controls have no meaning here and must not reach the screen.
      if (code >= 0x20 && !(code >= 0x80 && code < 0xa0)) text += ch;
      i++;
    }
    flushText();
    return keys;
  }
}

/** Parses the escape sequence at `s[i]` (which is ESC). */
function parseEscape(s: string, i: number): { key: KeyName | null; next: number } | "incomplete" {
  const kind = s[i + 1];
  if (kind === undefined) {
    // A lone ESC at the end of a read: terminals send whole sequences in one write, so this is
    // the Escape key itself.
    return { key: "escape", next: i + 1 };
  }
  if (kind === "[") {
    let j = i + 2;
    while (j < s.length && /[0-9;?]/.test(s[j])) j++;
    if (j >= s.length) return "incomplete";
    const params = s.slice(i + 2, j);
    const final = s[j];
    const next = j + 1;
    if (final === "~") return { key: TILDE[params.split(";")[0]] ?? null, next };
    const modifier = params.split(";")[1];
    // Ctrl (5) or Alt (3) with left/right moves by words, as in readline.
    if ((modifier === "5" || modifier === "3") && (final === "C" || final === "D")) {
      return { key: final === "C" ? "word-right" : "word-left", next };
    }
    return { key: FINAL[final] ?? null, next };
  }
  if (kind === "O") {
    if (i + 2 >= s.length) return "incomplete";
    return { key: FINAL[s[i + 2]] ?? null, next: i + 3 };
  }
  // Alt+key: the few that readline binds; the rest are ignored whole.
  if (kind === "b") return { key: "word-left", next: i + 2 };
  if (kind === "f") return { key: "word-right", next: i + 2 };
  if (kind === "\x7f" || kind === "\x08") return { key: "delete-word", next: i + 2 };
  if (kind === "\x1b") return { key: "escape", next: i + 1 };
  return { key: null, next: i + 1 + [...s.slice(i + 1, i + 3)][0].length };
}

/** What a completer returns: the new line and cursor, and every candidate that matched. */
export interface Completion {
  /** The line after completion (unchanged when nothing matched). */
  line: string;
  /** The cursor after completion, as a code-point index. */
  cursor: number;
  /** Every distinct candidate that matched the word before the cursor, sorted. */
  matches: string[];
}

/** Completes the line at the cursor (a code-point index); see {@linkcode completeWord}. */
export type Completer = (line: string, cursor: number) => Completion;

/** What applying a key asks the caller to do. */
export type EditResult =
  | { kind: "none" }
  | { kind: "redraw" }
  | { kind: "submit"; line: string }
  | { kind: "interrupt" }
  | { kind: "eof" }
  | { kind: "matches"; matches: string[] };

/** Options of {@linkcode LineEditor}. */
export interface LineEditorOptions {
  /** Previous lines, oldest first; submitted lines are appended to this same array. */
  history?: string[];
  /** Called on Tab. */
  complete?: Completer;
  /** Longest history kept (default 200). */
  historySize?: number;
}

/**
 * An editable line: code points and a cursor, readline-style keys, history and completion.
 *
 * @example
 * ```ts
 * const ed = new LineEditor();
 * ed.apply({ name: "text", text: "helo" });
 * ed.apply({ name: "left" });
 * ed.apply({ name: "text", text: "l" });
 * ed.apply({ name: "enter" }); // { kind: "submit", line: "hello" }
 * ```
 */
export class LineEditor {
  #chars: string[] = [];
  #cursor = 0;
  #history: string[];
  #historySize: number;
  /** Position in history while browsing; equals history.length when editing the draft. */
  #index: number;
  #draft: string[] = [];
  #complete: Completer | undefined;

  /**
   * Makes an empty line; `opts.history` is used in place, not copied.
   *
   * @param opts History and completion.
   */
  constructor(opts: LineEditorOptions = {}) {
    this.#history = opts.history ?? [];
    this.#historySize = opts.historySize ?? 200;
    this.#index = this.#history.length;
    this.#complete = opts.complete;
  }

  /** The line as typed so far. */
  get text(): string {
    return this.#chars.join("");
  }

  /** The code points of the line (for drawing). */
  get chars(): readonly string[] {
    return this.#chars;
  }

  /** The cursor, as an index into {@linkcode chars}. */
  get cursor(): number {
    return this.#cursor;
  }

  /** Replaces the line and puts the cursor at `cursor` (default: the end). */
  set(text: string, cursor?: number): void {
    this.#chars = [...text];
    this.#cursor = Math.max(0, Math.min(cursor ?? this.#chars.length, this.#chars.length));
  }

  /** Applies one key and says what the caller must do about it. */
  apply(key: Key): EditResult {
    const chars = this.#chars;
    switch (key.name) {
      case "text": {
        const add = [...key.text];
        chars.splice(this.#cursor, 0, ...add);
        this.#cursor += add.length;
        return REDRAW;
      }
      case "enter": {
        const line = this.text;
        this.#remember(line);
        this.set("");
        return { kind: "submit", line };
      }
      case "backspace":
        if (this.#cursor === 0) return NONE;
        chars.splice(--this.#cursor, 1);
        return REDRAW;
      case "delete":
        if (this.#cursor >= chars.length) return NONE;
        chars.splice(this.#cursor, 1);
        return REDRAW;
      case "eof":
        if (chars.length === 0) return { kind: "eof" };
        if (this.#cursor >= chars.length) return NONE;
        chars.splice(this.#cursor, 1);
        return REDRAW;
      case "left":
        return this.#move(this.#cursor - 1);
      case "right":
        return this.#move(this.#cursor + 1);
      case "home":
        return this.#move(0);
      case "end":
        return this.#move(chars.length);
      case "word-left":
        return this.#move(wordStart(chars, this.#cursor));
      case "word-right":
        return this.#move(wordEnd(chars, this.#cursor));
      case "kill-line":
        if (this.#cursor === 0) return NONE;
        chars.splice(0, this.#cursor);
        this.#cursor = 0;
        return REDRAW;
      case "kill-to-end":
        if (this.#cursor >= chars.length) return NONE;
        chars.splice(this.#cursor);
        return REDRAW;
      case "delete-word": {
        const start = wordStart(chars, this.#cursor);
        if (start === this.#cursor) return NONE;
        chars.splice(start, this.#cursor - start);
        this.#cursor = start;
        return REDRAW;
      }
      case "up":
        return this.#browse(this.#index - 1);
      case "down":
        return this.#browse(this.#index + 1);
      case "tab": {
        if (!this.#complete) return NONE;
        const c = this.#complete(this.text, this.#cursor);
        this.set(c.line, c.cursor);
        return c.matches.length > 1 ? { kind: "matches", matches: c.matches } : REDRAW;
      }
      case "interrupt":
        return { kind: "interrupt" };
      case "redraw":
        return REDRAW;
      case "escape":
        return NONE;
    }
  }

  #move(to: number): EditResult {
    const next = Math.max(0, Math.min(to, this.#chars.length));
    if (next === this.#cursor) return NONE;
    this.#cursor = next;
    return REDRAW;
  }

  #browse(to: number): EditResult {
    if (to < 0 || to > this.#history.length || to === this.#index) return NONE;
    if (this.#index === this.#history.length) this.#draft = [...this.#chars];
    this.#index = to;
    this.set(to === this.#history.length ? this.#draft.join("") : this.#history[to]);
    return REDRAW;
  }

  #remember(line: string): void {
    if (line.trim() !== "" && this.#history.at(-1) !== line) {
      this.#history.push(line);
      if (this.#history.length > this.#historySize) {
        this.#history.splice(0, this.#history.length - this.#historySize);
      }
    }
    this.#index = this.#history.length;
    this.#draft = [];
  }
}

const NONE: EditResult = { kind: "none" };
const REDRAW: EditResult = { kind: "redraw" };

function wordStart(chars: readonly string[], from: number): number {
  let i = from;
  while (i > 0 && /\s/.test(chars[i - 1])) i--;
  while (i > 0 && !/\s/.test(chars[i - 1])) i--;
  return i;
}

function wordEnd(chars: readonly string[], from: number): number {
  let i = from;
  while (i < chars.length && /\s/.test(chars[i])) i++;
  while (i < chars.length && !/\s/.test(chars[i])) i++;
  return i;
}

/**
 * Completes the word before `cursor` (a code-point index) from `candidates`: a single match is
 * inserted whole (plus a space), several extend the word to their longest common prefix.
 * Matching is case-insensitive; the candidate's spelling wins.
 *
 * @example
 * ```ts
 * completeWord("/history Bo", 11, ["Bob", "Alice"]);
 * // { line: "/history Bob ", cursor: 13, matches: ["Bob"] }
 * ```
 */
export function completeWord(line: string, cursor: number, candidates: string[]): Completion {
  const chars = [...line];
  const start = lastWordStart(chars, cursor);
  const word = chars.slice(start, cursor).join("");
  const lower = word.toLowerCase();
  const matches = [...new Set(candidates)].filter((c) => c.toLowerCase().startsWith(lower)).sort();
  if (matches.length === 0) return { line, cursor, matches };
  let insert: string;
  if (matches.length === 1) {
    insert = matches[0] + (chars[cursor] === " " ? "" : " ");
  } else {
    const prefix = commonPrefix(matches);
    // Keep what the user typed unless the common prefix is longer.
    insert = [...prefix].length > [...word].length ? prefix : word;
  }
  const before = chars.slice(0, start).join("");
  const after = chars.slice(cursor).join("");
  const newCursor = [...before].length + [...insert].length;
  return { line: before + insert + after, cursor: newCursor, matches };
}

function lastWordStart(chars: readonly string[], cursor: number): number {
  let i = cursor;
  while (i > 0 && !/\s/.test(chars[i - 1])) i--;
  return i;
}

function commonPrefix(words: string[]): string {
  let prefix = [...words[0]];
  for (const w of words.slice(1)) {
    const cs = [...w];
    let n = 0;
    while (n < prefix.length && n < cs.length && prefix[n].toLowerCase() === cs[n].toLowerCase()) {
      n++;
    }
    prefix = prefix.slice(0, n);
  }
  return prefix.join("");
}

/**
 * Columns a code point takes in a terminal: 0 for combining marks and format characters, 2 for
 * East Asian wide characters and emoji, else 1.
 *
 * @example
 * ```ts
 * charWidth("a"); // 1
 * charWidth("界"); // 2
 * ```
 */
export function charWidth(ch: string): number {
  const cp = ch.codePointAt(0) ?? 0;
  if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return 0;
  if (/^[\p{Mn}\p{Me}\p{Cf}]$/u.test(ch)) return 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0x303e) ||
    (cp >= 0x3041 && cp <= 0x33ff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x20000 && cp <= 0x3fffd) ||
    /^\p{Emoji_Presentation}$/u.test(ch)
  ) {
    return 2;
  }
  return 1;
}

/**
 * Columns a string takes in a terminal (no escape sequences expected).
 *
 * @example
 * ```ts
 * textWidth("héllo 世界"); // 10
 * ```
 */
export function textWidth(text: string): number {
  let w = 0;
  for (const ch of text) w += charWidth(ch);
  return w;
}

/**
 * Which part of a long line to show so that it fits on one screen row after the prompt, with
 * the cursor visible: the line scrolls sideways instead of wrapping, so redrawing it is always
 * "clear one row, print".
 *
 * @example
 * ```ts
 * visibleWindow([..."hello"], 5, 20); // { text: "hello", cursorColumn: 5 }
 * ```
 */
export function visibleWindow(
  chars: readonly string[],
  cursor: number,
  width: number,
): { text: string; cursorColumn: number } {
  const avail = Math.max(1, width);
  const widths = chars.map(charWidth);
  let start = 0;
  let before = 0;
  for (let i = 0; i < cursor; i++) before += widths[i];
  // The cursor needs a column of its own after the text before it.
  while (before > avail - 1 && start < cursor) before -= widths[start++];
  let end = start;
  let used = 0;
  while (end < chars.length && used + widths[end] <= avail) used += widths[end++];
  return { text: chars.slice(start, end).join(""), cursorColumn: before };
}
