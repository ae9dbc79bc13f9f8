/**
 * Reading lines from the user: key by key through the {@linkcode LineEditor} on a terminal
 * (raw mode), or whole lines from a pipe. Prompts stack: a question asked while another prompt
 * is open (a key change) takes the keyboard, and the interrupted line comes back intact.
 *
 * @module
 */

import {
  type Completer,
  type Key,
  KeyDecoder,
  LineEditor,
  textWidth,
  visibleWindow,
} from "./line_editor.ts";
import { sanitize, type Screen, stripAnsi } from "./screen.ts";

/** Columns a prompt may leave for typing (or half the width); a longer prompt shows as "> ". */
const MIN_INPUT_COLUMNS = 20;

/** Options of {@linkcode Prompter.readLine}. */
export interface ReadLineOptions {
  /** Earlier lines for Up/Down; the submitted line is appended. */
  history?: string[];
  /** Tab completion. */
  complete?: Completer;
  /**
   * Leave the submitted line on screen (default true). The chat view passes false and prints
   * the message its own way.
   */
  keep?: boolean;
}

/** Options of {@linkcode Prompter}. */
export interface PrompterOptions {
  /** Where prompts are drawn. */
  screen: Screen;
  /** The user's input (stdin, or a test's stream). */
  input: ReadableStream<Uint8Array>;
  /** Key-by-key editing (the caller has put the terminal in raw mode); false reads lines. */
  interactive: boolean;
}

interface Entry {
  prompt: string;
  promptWidth: number;
  editor: LineEditor;
  keep: boolean;
  resolve: (line: string | null) => void;
}

/** Why input ended. */
export type EndReason = "eof" | "interrupt" | "closed";

/**
 * The input side of the UI.
 *
 * @example
 * ```ts
 * const prompter = new Prompter({ screen, input: Deno.stdin.readable, interactive: false });
 * prompter.start();
 * const line = await prompter.readLine("choose> "); // null at end of input
 * await prompter.close();
 * ```
 */
export class Prompter {
  #screen: Screen;
  #input: ReadableStream<Uint8Array>;
  #interactive: boolean;
  #stack: Entry[] = [];
  #decoder = new KeyDecoder();
  #keys: Key[] = [];
  #lines: string[] = [];
  #partial = "";
  #ended: EndReason | null = null;
  #inputDone = false;
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #loop: Promise<void> | null = null;
  #interrupted: Promise<void>;
  #inputError: Error | null = null;
  #signalInterrupt!: () => void;

  /**
   * Makes a prompter; nothing is read until {@linkcode Prompter.start}.
   *
   * @param opts Screen, input, and whether to edit key by key.
   */
  constructor(opts: PrompterOptions) {
    this.#screen = opts.screen;
    this.#input = opts.input;
    this.#interactive = opts.interactive;
    this.#interrupted = new Promise((r) => this.#signalInterrupt = r);
  }

  /** The error that ended input early, if reading failed (not set by a normal end). */
  get inputError(): Error | null {
    return this.#inputError;
  }

  /** Resolves when the user presses Ctrl-C: the program should quit at once. */
  get interrupted(): Promise<void> {
    return this.#interrupted;
  }

  /** Starts reading input in the background. */
  start(): void {
    this.#loop ??= this.#read();
  }

  /**
   * Shows `prompt` and resolves with the line the user enters, or null when input has ended
   * (end of input, Ctrl-C, or {@linkcode close}). Lines typed ahead are used first.
   */
  readLine(prompt: string, opts: ReadLineOptions = {}): Promise<string | null> {
    if (this.#ended === "interrupt" || this.#ended === "closed") return Promise.resolve(null);
    if (!this.#interactive) return this.#readPlain(prompt);
    if (this.#ended === "eof") return Promise.resolve(null);
    return new Promise((resolve) => {
      this.#stack.push({
        prompt,
        promptWidth: textWidth(stripAnsi(prompt)),
        editor: new LineEditor({ history: opts.history, complete: opts.complete }),
        keep: opts.keep ?? true,
        resolve,
      });
      this.#screen.setPrompt((columns) => this.#render(columns));
      this.#drain();
    });
  }

  /** Ends every open prompt with null and stops reading. Idempotent. */
  async close(): Promise<void> {
    this.#end("closed");
    // Releasing the reader rejects a pending read at once (stdin cannot be interrupted otherwise).
    this.#reader?.releaseLock();
    await this.#loop;
  }

  #readPlain(prompt: string): Promise<string | null> {
    const queued = this.#lines.shift();
    if (queued !== undefined) {
      this.#screen.writePrompt(prompt);
      this.#screen.echo(sanitize(queued));
      return Promise.resolve(queued);
    }
    if (this.#inputDone || this.#ended) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.#screen.writePrompt(prompt);
      this.#stack.push({ prompt, promptWidth: 0, editor: new LineEditor(), keep: true, resolve });
    });
  }

  async #read(): Promise<void> {
    const reader = this.#input.getReader();
    this.#reader = reader;
    const text = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#ended) break;
        if (this.#interactive) {
          this.#keys.push(...this.#decoder.feed(value));
          this.#drain();
        } else {
          this.#onText(text.decode(value, { stream: true }));
        }
      }
    } catch (e) {
      // close() releases the reader on purpose. Any other read error means the terminal or pipe
      // went away: that is the end of input; the caller may report it (inputError).
      if (!(e instanceof TypeError && this.#ended === "closed")) this.#inputError = e as Error;
    } finally {
      // Releasing twice is harmless (close() may have done it already).
      reader.releaseLock();
      this.#inputDone = true;
      if (!this.#interactive && this.#partial !== "") {
        this.#lines.push(this.#partial.replace(/\r$/, ""));
        this.#partial = "";
      }
      this.#deliverPlain();
      if (this.#interactive) this.#end("eof");
      else if (this.#lines.length === 0) this.#end("eof");
    }
  }

  #onText(chunk: string): void {
    this.#partial += chunk;
    let nl: number;
    while ((nl = this.#partial.indexOf("\n")) >= 0) {
      this.#lines.push(this.#partial.slice(0, nl).replace(/\r$/, ""));
      this.#partial = this.#partial.slice(nl + 1);
    }
    this.#deliverPlain();
  }

  /** Plain mode: hands queued lines to waiting prompts; ends them at end of input. */
  #deliverPlain(): void {
    while (this.#stack.length > 0) {
      const line = this.#lines.shift();
      if (line === undefined) {
        if (!this.#inputDone) return;
        this.#stack.pop()!.resolve(null);
        continue;
      }
      this.#screen.echo(sanitize(line));
      this.#stack.pop()!.resolve(line);
    }
  }

  /** Interactive mode: applies typed keys to the top prompt. */
  #drain(): void {
    let dirty = false;
    while (this.#keys.length > 0 && this.#stack.length > 0 && this.#ended === null) {
      const top = this.#stack.at(-1)!;
      const result = top.editor.apply(this.#keys.shift()!);
      switch (result.kind) {
        case "none":
          break;
        case "redraw":
          dirty = true;
          break;
        case "matches":
          this.#screen.print(result.matches.join("  "));
          dirty = false;
          break;
        case "submit": {
          this.#stack.pop();
          if (top.keep) this.#screen.commitPrompt(top.prompt + result.line);
          else this.#screen.clearPrompt();
          if (this.#stack.length > 0) this.#screen.setPrompt((c) => this.#render(c));
          dirty = false;
          top.resolve(result.line);
          break;
        }
        case "interrupt":
          this.#end("interrupt");
          return;
        case "eof":
          this.#end("eof");
          return;
      }
    }
    if (dirty) this.#screen.redraw();
  }

  #render(columns: number): { line: string; cursorColumn: number } {
    const top = this.#stack.at(-1);
    if (!top) return { line: "", cursorColumn: 0 };
    // A prompt that leaves too little room to type in would wrap: fall back to a short one. Half
    // the width is always fine (a short prompt on a tiny terminal stays as it is).
    const narrow = top.promptWidth > Math.max(columns / 2, columns - MIN_INPUT_COLUMNS);
    const prompt = narrow ? "> " : top.prompt;
    const width = narrow ? 2 : top.promptWidth;
    const win = visibleWindow(top.editor.chars, top.editor.cursor, columns - width - 1);
    return { line: prompt + win.text, cursorColumn: width + win.cursorColumn };
  }

  #end(reason: EndReason): void {
    if (this.#ended !== null && reason !== "closed") return;
    const first = this.#ended === null;
    this.#ended = reason;
    this.#keys = [];
    const open = this.#stack.splice(0);
    if (open.length > 0) this.#screen.clearPrompt();
    for (const entry of open.reverse()) entry.resolve(null);
    if (first && reason === "interrupt") this.#signalInterrupt();
  }
}
