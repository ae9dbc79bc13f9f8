/**
 * A tiny terminal emulator for in-process tests: understands exactly the control sequences the
 * terminal UI writes (CR, LF, BEL, erase line/below, cursor up/down/right, SGR), so a test can
 * look at "the screen" the way a user would. Unknown sequences fail the test.
 *
 * @module
 */

import { charWidth } from "../../../lib/ui/terminal/line_editor.ts";

/** A screen with unlimited height (nothing scrolls away) and a fixed width. */
export class VirtualTerminal {
  readonly width: number;
  readonly rows: string[][] = [[]];
  cursor = { row: 0, col: 0 };
  bells = 0;
  /** Every SGR sequence seen (to check that colours are off). */
  sgr = 0;

  constructor(width: number) {
    this.width = width;
  }

  write(text: string): void {
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      if (ch === "\x1b") {
        // deno-lint-ignore no-control-regex -- parsing escape sequences is the point.
        const m = /^\x1b\[([0-9;]*)([A-Za-z])/.exec(text.slice(i));
        if (!m) {
          throw new Error(`unexpected escape sequence ${JSON.stringify(text.slice(i, i + 8))}`);
        }
        this.#csi(m[1], m[2]);
        i += m[0].length;
        continue;
      }
      if (ch === "\r") this.cursor.col = 0;
      else if (ch === "\n") this.#down();
      else if (ch === "\x07") this.bells++;
      else if (ch < " ") throw new Error(`unexpected control character ${JSON.stringify(ch)}`);
      else {
        const cp = String.fromCodePoint(text.codePointAt(i)!);
        this.#put(cp);
        i += cp.length;
        continue;
      }
      i++;
    }
  }

  /** The screen's rows as text (exactly what was written on each). */
  lines(): string[] {
    return this.rows.map((r) => r.join(""));
  }

  /** Everything on screen as one string. */
  text(): string {
    return this.lines().join("\n");
  }

  /** The row the cursor is on (the input line, when a prompt is shown). */
  currentLine(): string {
    return this.lines()[this.cursor.row] ?? "";
  }

  #row(n: number): string[] {
    while (this.rows.length <= n) this.rows.push([]);
    return this.rows[n];
  }

  #down(): void {
    this.cursor.row++;
    this.#row(this.cursor.row);
  }

  #put(ch: string): void {
    const w = charWidth(ch);
    if (w === 0) return;
    if (this.cursor.col + w > this.width) {
      this.cursor.col = 0;
      this.#down();
    }
    const row = this.#row(this.cursor.row);
    while (row.length < this.cursor.col) row.push(" ");
    row[this.cursor.col] = ch;
    if (w === 2) row[this.cursor.col + 1] = "";
    this.cursor.col += w;
  }

  #csi(params: string, final: string): void {
    const n = params === "" ? 1 : Number(params.split(";")[0]);
    switch (final) {
      case "m":
        this.sgr++;
        return;
      case "K":
        if (params !== "2") throw new Error(`unexpected erase ${params}K`);
        this.rows[this.cursor.row] = [];
        return;
      case "J":
        this.rows[this.cursor.row].length = Math.min(
          this.rows[this.cursor.row].length,
          this.cursor.col,
        );
        this.rows.length = this.cursor.row + 1;
        return;
      case "A":
        this.cursor.row = Math.max(0, this.cursor.row - n);
        return;
      case "B":
        this.cursor.row += n;
        this.#row(this.cursor.row);
        return;
      case "C":
        this.cursor.col = Math.min(this.width - 1, this.cursor.col + n);
        return;
      default:
        throw new Error(`unexpected sequence ESC[${params}${final}`);
    }
  }
}
