import assert from "node:assert/strict";
import {
  charWidth,
  completeWord,
  type Key,
  KeyDecoder,
  LineEditor,
  textWidth,
  visibleWindow,
} from "../../../lib/ui/terminal/line_editor.ts";

const enc = new TextEncoder();

Deno.test("KeyDecoder: byte vectors decode to keys", () => {
  const vectors: [string, Key[]][] = [
    ["abc", [{ name: "text", text: "abc" }]],
    ["\r", [{ name: "enter" }]],
    ["\n", [{ name: "enter" }]],
    ["a\r\nb\r", [{ name: "text", text: "a" }, { name: "enter" }, { name: "text", text: "b" }, {
      name: "enter",
    }]],
    ["\x7f", [{ name: "backspace" }]],
    ["\x08", [{ name: "backspace" }]],
    ["\t", [{ name: "tab" }]],
    ["\x01", [{ name: "home" }]],
    ["\x05", [{ name: "end" }]],
    ["\x02", [{ name: "left" }]],
    ["\x06", [{ name: "right" }]],
    ["\x03", [{ name: "interrupt" }]],
    ["\x04", [{ name: "eof" }]],
    ["\x15", [{ name: "kill-line" }]],
    ["\x0b", [{ name: "kill-to-end" }]],
    ["\x17", [{ name: "delete-word" }]],
    ["\x10", [{ name: "up" }]],
    ["\x0e", [{ name: "down" }]],
    ["\x1b[A", [{ name: "up" }]],
    ["\x1b[B", [{ name: "down" }]],
    ["\x1b[C", [{ name: "right" }]],
    ["\x1b[D", [{ name: "left" }]],
    ["\x1bOA", [{ name: "up" }]],
    ["\x1bOH", [{ name: "home" }]],
    ["\x1bOF", [{ name: "end" }]],
    ["\x1b[H", [{ name: "home" }]],
    ["\x1b[F", [{ name: "end" }]],
    ["\x1b[1~", [{ name: "home" }]],
    ["\x1b[4~", [{ name: "end" }]],
    ["\x1b[7~", [{ name: "home" }]],
    ["\x1b[8~", [{ name: "end" }]],
    ["\x1b[3~", [{ name: "delete" }]],
    ["\x1b[1;5C", [{ name: "word-right" }]],
    ["\x1b[1;5D", [{ name: "word-left" }]],
    ["\x1bb", [{ name: "word-left" }]],
    ["\x1bf", [{ name: "word-right" }]],
    ["\x1b\x7f", [{ name: "delete-word" }]],
    ["\x1b", [{ name: "escape" }]],
    // Unknown sequences are swallowed whole, never typed as text.
    ["\x1b[15~x", [{ name: "text", text: "x" }]],
    ["\x1b[200~", []],
    ["\x1bz", []],
    // Other control characters are dropped.
    ["a\x00\x07b", [{ name: "text", text: "ab" }]],
    ["héllo 世界 😀", [{ name: "text", text: "héllo 世界 😀" }]],
    ["x\x1b[Dy", [{ name: "text", text: "x" }, { name: "left" }, { name: "text", text: "y" }]],
  ];
  for (const [input, keys] of vectors) {
    assert.deepEqual(new KeyDecoder().feed(enc.encode(input)), keys, JSON.stringify(input));
  }
});

Deno.test("KeyDecoder: UTF-8 and escape sequences split across reads", () => {
  const d = new KeyDecoder();
  const bytes = enc.encode("é世");
  // "é" is 2 bytes, "世" is 3: split inside each.
  assert.deepEqual(d.feed(bytes.subarray(0, 1)), []);
  assert.deepEqual(d.feed(bytes.subarray(1, 3)), [{ name: "text", text: "é" }]);
  assert.deepEqual(d.feed(bytes.subarray(3)), [{ name: "text", text: "世" }]);
  assert.deepEqual(d.feed(enc.encode("\x1b[")), []);
  assert.deepEqual(d.feed(enc.encode("1;5")), []);
  assert.deepEqual(d.feed(enc.encode("Cz")), [{ name: "word-right" }, { name: "text", text: "z" }]);
  assert.deepEqual(d.feed(enc.encode("\x1bO")), []);
  assert.deepEqual(d.feed(enc.encode("D")), [{ name: "left" }]);
  // Invalid UTF-8 becomes U+FFFD rather than an exception.
  assert.deepEqual(d.feed(new Uint8Array([0xff, 0x41])), [{ name: "text", text: "\ufffdA" }]);
});

const NAMES = new Set([
  "enter",
  "backspace",
  "delete",
  "left",
  "right",
  "word-left",
  "word-right",
  "home",
  "end",
  "up",
  "down",
  "tab",
  "interrupt",
  "eof",
  "kill-line",
  "kill-to-end",
  "delete-word",
]);

/** Applies a key script: key names are pressed, anything else is typed. */
function run(ed: LineEditor, script: string[]): void {
  for (const k of script) ed.apply(NAMES.has(k) ? { name: k } as Key : { name: "text", text: k });
}

Deno.test("LineEditor: editing vectors (text, cursor)", () => {
  const cases: { script: string[]; text: string; cursor: number }[] = [
    { script: ["hello"], text: "hello", cursor: 5 },
    { script: ["helo", "left", "l"], text: "hello", cursor: 4 },
    { script: ["hello", "home", "X"], text: "Xhello", cursor: 1 },
    { script: ["hello", "home", "end", "!"], text: "hello!", cursor: 6 },
    { script: ["hello", "backspace", "backspace"], text: "hel", cursor: 3 },
    { script: ["hello", "home", "backspace"], text: "hello", cursor: 0 },
    { script: ["hello", "home", "delete"], text: "ello", cursor: 0 },
    { script: ["hello", "delete"], text: "hello", cursor: 5 },
    { script: ["hello", "eof"], text: "hello", cursor: 5 },
    { script: ["hello", "left", "left", "eof"], text: "helo", cursor: 3 },
    { script: ["hello world", "left", "left", "kill-line"], text: "ld", cursor: 0 },
    { script: ["hello world", "left", "left", "kill-to-end"], text: "hello wor", cursor: 9 },
    { script: ["hello big world", "delete-word"], text: "hello big ", cursor: 10 },
    { script: ["hello big world  ", "delete-word"], text: "hello big ", cursor: 10 },
    { script: ["one two", "word-left", "word-left", "X"], text: "Xone two", cursor: 1 },
    { script: ["one two", "home", "word-right", "X"], text: "oneX two", cursor: 4 },
    { script: ["left", "right", "home", "end"], text: "", cursor: 0 },
    // Code points, not UTF-16 units: one backspace removes the whole emoji.
    { script: ["a😀b", "left", "backspace"], text: "ab", cursor: 1 },
    { script: ["世界", "left", "é"], text: "世é界", cursor: 2 },
    { script: ["hello", "right", "right"], text: "hello", cursor: 5 },
  ];
  for (const c of cases) {
    const ed = new LineEditor();
    run(ed, c.script);
    assert.equal(ed.text, c.text, JSON.stringify(c.script));
    assert.equal(ed.cursor, c.cursor, JSON.stringify(c.script));
  }
});

Deno.test("LineEditor: enter submits and clears; eof only on an empty line; interrupt", () => {
  const ed = new LineEditor();
  ed.apply({ name: "text", text: "hi there" });
  assert.deepEqual(ed.apply({ name: "enter" }), { kind: "submit", line: "hi there" });
  assert.equal(ed.text, "");
  assert.deepEqual(ed.apply({ name: "eof" }), { kind: "eof" });
  assert.deepEqual(ed.apply({ name: "interrupt" }), { kind: "interrupt" });
  ed.apply({ name: "text", text: "x" });
  assert.deepEqual(ed.apply({ name: "eof" }), { kind: "none" });
  assert.deepEqual(ed.apply({ name: "left" }), { kind: "redraw" });
  assert.deepEqual(ed.apply({ name: "left" }), { kind: "none" });
});

Deno.test("LineEditor: history with up/down keeps the draft", () => {
  const history: string[] = [];
  const ed = new LineEditor({ history });
  for (const line of ["first", "second", "second", "  "]) {
    ed.apply({ name: "text", text: line });
    ed.apply({ name: "enter" });
  }
  // Duplicates in a row and blank lines are not remembered.
  assert.deepEqual(history, ["first", "second"]);
  ed.apply({ name: "text", text: "draft" });
  ed.apply({ name: "up" });
  assert.equal(ed.text, "second");
  ed.apply({ name: "up" });
  assert.equal(ed.text, "first");
  assert.deepEqual(ed.apply({ name: "up" }), { kind: "none" });
  assert.equal(ed.text, "first");
  ed.apply({ name: "down" });
  ed.apply({ name: "down" });
  assert.equal(ed.text, "draft");
  assert.deepEqual(ed.apply({ name: "down" }), { kind: "none" });
  // A recalled line can be edited and submitted.
  ed.apply({ name: "up" });
  ed.apply({ name: "text", text: "!" });
  assert.deepEqual(ed.apply({ name: "enter" }), { kind: "submit", line: "second!" });
  assert.deepEqual(history, ["first", "second", "second!"]);
  // A second editor sharing the array sees the same history.
  const other = new LineEditor({ history });
  other.apply({ name: "up" });
  assert.equal(other.text, "second!");
});

Deno.test("LineEditor: tab completion", () => {
  const names = ["Bob", "Bobby", "Alice"];
  const ed = new LineEditor({ complete: (l, c) => completeWord(l, c, names) });
  ed.apply({ name: "text", text: "hi al" });
  assert.deepEqual(ed.apply({ name: "tab" }), { kind: "redraw" });
  assert.equal(ed.text, "hi Alice ");
  ed.apply({ name: "text", text: "and b" });
  assert.deepEqual(ed.apply({ name: "tab" }), { kind: "matches", matches: ["Bob", "Bobby"] });
  assert.equal(ed.text, "hi Alice and Bob");
  assert.equal(ed.cursor, 16);
  const plain = new LineEditor();
  assert.deepEqual(plain.apply({ name: "tab" }), { kind: "none" });
});

Deno.test("completeWord: vectors", () => {
  const names = ["Bob", "bobcat", "Carol", "Çelik"];
  assert.deepEqual(completeWord("", 0, names).matches, ["Bob", "Carol", "bobcat", "Çelik"]);
  assert.deepEqual(completeWord("", 0, names).line, "");
  assert.deepEqual(completeWord("ca", 2, names), { line: "Carol ", cursor: 6, matches: ["Carol"] });
  assert.deepEqual(completeWord("ç", 1, names), { line: "Çelik ", cursor: 6, matches: ["Çelik"] });
  assert.deepEqual(completeWord("bo", 2, names), {
    line: "Bob",
    cursor: 3,
    matches: ["Bob", "bobcat"],
  });
  assert.deepEqual(completeWord("x", 1, names), { line: "x", cursor: 1, matches: [] });
  // Completing in the middle of a line keeps what follows.
  assert.deepEqual(completeWord("hi car there", 6, names), {
    line: "hi Carol there",
    cursor: 8,
    matches: ["Carol"],
  });
});

Deno.test("charWidth/textWidth/visibleWindow", () => {
  assert.equal(charWidth("a"), 1);
  assert.equal(charWidth("é"), 1);
  assert.equal(charWidth("世"), 2);
  assert.equal(charWidth("😀"), 2);
  assert.equal(charWidth("\u0301"), 0);
  assert.equal(charWidth("\u200d"), 0);
  assert.equal(textWidth("héllo 世界"), 10);
  assert.deepEqual(visibleWindow([..."hello"], 5, 20), { text: "hello", cursorColumn: 5 });
  assert.deepEqual(visibleWindow([..."hello"], 0, 20), { text: "hello", cursorColumn: 0 });
  // Longer than the room: scrolls so the cursor stays visible, never wider than the room.
  const long = [..."abcdefghijklmnopqrstuvwxyz"];
  const end = visibleWindow(long, 26, 10);
  assert.equal(end.text, "rstuvwxyz");
  assert.equal(end.cursorColumn, 9);
  const start = visibleWindow(long, 0, 10);
  assert.equal(start.text, "abcdefghij");
  assert.equal(start.cursorColumn, 0);
  const wide = visibleWindow([..."世界世界世界"], 6, 7);
  assert.ok(textWidth(wide.text) <= 7);
  assert.equal(wide.cursorColumn, 6);
  assert.equal(wide.text, "界世界");
});
