import assert from "node:assert/strict";
import {
  type Command,
  CommandError,
  completeInput,
  parseCommand,
} from "../../../lib/ui/terminal/commands.ts";

Deno.test("parseCommand: vectors", () => {
  const vectors: [string, Command][] = [
    ["/help", { kind: "help" }],
    ["  /peers  ", { kind: "peers" }],
    ["/connect", { kind: "connect", target: null }],
    ["/connect 10.0.0.2:5000", { kind: "connect", target: "10.0.0.2:5000" }],
    ["/history", { kind: "history", peer: null, limit: 50 }],
    ["/history Bob", { kind: "history", peer: "Bob", limit: 50 }],
    ["/history 20", { kind: "history", peer: null, limit: 20 }],
    ["/history Bob 7", { kind: "history", peer: "Bob", limit: 7 }],
    ["/chat", { kind: "chat", peer: null }],
    ["/chat Bob", { kind: "chat", peer: "Bob" }],
    ["/send Bob hello  there", { kind: "send", peer: "Bob", text: "hello  there" }],
    ["/trust", { kind: "trust", peer: null, fingerprint: null }],
    ["/trust Bob", { kind: "trust", peer: "Bob", fingerprint: null }],
    ["/trust Bob abcd 1234 ef", { kind: "trust", peer: "Bob", fingerprint: "abcd1234ef" }],
    ["/quit", { kind: "quit" }],
    ["/QUIT", { kind: "quit" }],
    ["/exit", { kind: "quit" }],
  ];
  for (const [line, cmd] of vectors) assert.deepEqual(parseCommand(line), cmd, line);
});

Deno.test("parseCommand: mistakes are CommandErrors with a hint", () => {
  for (
    const line of [
      "/nope",
      "/connect a b",
      "/history Bob 0",
      "/history Bob x",
      "/history a b c",
      "/send Bob",
      "/chat a b",
    ]
  ) {
    assert.throws(() => parseCommand(line), CommandError, line);
  }
  assert.throws(() => parseCommand("/nope"), /unknown command \/nope: try \/chat/);
});

Deno.test("completeInput: commands first, then peer names where a peer goes", () => {
  const peers = ["Bob", "Carol"];
  assert.deepEqual(completeInput("/hi", 3, peers), {
    line: "/history ",
    cursor: 9,
    matches: ["/history"],
  });
  assert.deepEqual(completeInput("/", 1, peers).matches.length, 8);
  assert.deepEqual(completeInput("/c", 2, peers).matches, ["/chat", "/connect"]);
  assert.deepEqual(completeInput("/chat c", 7, peers), {
    line: "/chat Carol ",
    cursor: 12,
    matches: ["Carol"],
  });
  assert.deepEqual(completeInput("/history ", 9, peers).matches, ["Bob", "Carol"]);
  // No peer names where none belong.
  assert.deepEqual(completeInput("/peers b", 8, peers).matches, []);
  assert.deepEqual(completeInput("/history Bob b", 14, peers).matches, []);
  // Outside commands (menu pickers, chat text), the word at the cursor is a name.
  assert.deepEqual(completeInput("hi b", 4, peers).line, "hi Bob ");
});
