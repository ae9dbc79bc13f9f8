import assert from "node:assert/strict";
import { colorWanted, sanitize, Screen, Style } from "../../../lib/ui/terminal/screen.ts";
import { VirtualTerminal } from "./vt.ts";

Deno.test("colorWanted: NO_COLOR wins, FORCE_COLOR forces, else a real terminal only", () => {
  assert.equal(colorWanted({ isTerminal: true, env: {} }), true);
  assert.equal(colorWanted({ isTerminal: false, env: {} }), false);
  assert.equal(colorWanted({ isTerminal: true, env: { NO_COLOR: "1" } }), false);
  assert.equal(colorWanted({ isTerminal: true, env: { NO_COLOR: "" } }), true);
  assert.equal(colorWanted({ isTerminal: true, env: { NO_COLOR: "1", FORCE_COLOR: "1" } }), false);
  assert.equal(colorWanted({ isTerminal: false, env: { FORCE_COLOR: "1" } }), true);
  assert.equal(colorWanted({ isTerminal: false, env: { FORCE_COLOR: "0" } }), false);
  assert.equal(colorWanted({ isTerminal: true, env: { TERM: "dumb" } }), false);
  assert.equal(new Style(false).bold("x"), "x");
  assert.equal(new Style(true).bold("x"), "\x1b[1mx\x1b[22m");
});

Deno.test("sanitize: control characters become visible, text stays", () => {
  assert.equal(sanitize("plain é 世界"), "plain é 世界");
  assert.equal(sanitize("a\x1b[2Jb"), "a^[[2Jb");
  assert.equal(sanitize("bell\x07"), "bell^G");
  assert.equal(sanitize("two\nlines"), "two↵ lines");
  assert.equal(sanitize("\x9b31m"), "\\u{9b}31m");
  assert.equal(sanitize("\u202eevil"), "\\u{202e}evil");
});

Deno.test("Screen (plain): lines as written, prompts end their line before output", () => {
  const out: string[] = [];
  const screen = new Screen({ interactive: false, write: (t) => out.push(t) });
  screen.print("one\ntwo");
  screen.writePrompt("choose> ");
  screen.print("event");
  screen.writePrompt("choose> ");
  screen.echo("2");
  screen.bell();
  const ref = screen.print("x");
  assert.equal(screen.update(ref, "y"), false);
  assert.equal(out.join(""), "one\ntwo\nchoose> \nevent\nchoose> 2\nx\n");
});

Deno.test("Screen (interactive): output goes above the input line, which is redrawn", () => {
  const vt = new VirtualTerminal(40);
  const screen = new Screen({ interactive: true, write: (t) => vt.write(t), columns: () => 40 });
  let typed = "half typ";
  screen.setPrompt(() => ({ line: "Bob> " + typed, cursorColumn: 5 + typed.length }));
  assert.deepEqual(vt.lines(), ["Bob> half typ"]);
  screen.print("12:00 Bob: hello");
  assert.deepEqual(vt.lines(), ["12:00 Bob: hello", "Bob> half typ"]);
  assert.equal(vt.cursor.col, 13);
  typed = "half typed";
  screen.redraw();
  assert.deepEqual(vt.lines(), ["12:00 Bob: hello", "Bob> half typed"]);
  // The last line is rewritten in place, even when it gets longer than a row.
  const ref = screen.print("you: hi  … sending");
  assert.equal(screen.update(ref, "you: hi  ✓ sent"), true);
  assert.deepEqual(vt.lines(), ["12:00 Bob: hello", "you: hi  ✓ sent", "Bob> half typed"]);
  // A line further up is rewritten in place too, when it keeps its single row.
  screen.print("↔ connected to Bob");
  assert.equal(screen.update(ref, "you: hi  ✓✓ delivered"), true);
  assert.deepEqual(vt.lines(), [
    "12:00 Bob: hello",
    "you: hi  ✓✓ delivered",
    "↔ connected to Bob",
    "Bob> half typed",
  ]);
  assert.equal(vt.cursor.row, 3);
  assert.equal(screen.update(ref, "x".repeat(60)), false);
  screen.bell();
  assert.equal(vt.bells, 1);
  screen.commitPrompt("Bob> done");
  assert.deepEqual(vt.lines().slice(-2), ["Bob> done", ""]);
});
