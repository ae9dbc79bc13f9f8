/**
 * The terminal UI in-process, against a fake node: piped mode (lines in, plain text out) and
 * interactive mode (key bytes in, a virtual terminal out).
 */

import assert from "node:assert/strict";
import { Logger } from "../../../lib/log.ts";
import { NodeError } from "../../../lib/node/chat_node.ts";
import type { HistoryEntry, NodeEvent, PeerInfo, WithoutTs } from "../../../lib/node/events.ts";
import type { PeerRecord } from "../../../lib/store/peers.ts";
import { runTerminalWith, type TerminalOptions } from "../../../lib/ui/terminal/mod.ts";
import { VirtualTerminal } from "./vt.ts";

const FP_ME = "f".repeat(64);
const FP_BOB = "b0b0".repeat(16);
const FP_CAROL = "ca01".repeat(16);
const FP_BOB2 = "b222".repeat(16);

/** A stand-in for ChatNode: records commands, emits what a test tells it to. */
class FakeNode {
  readonly name = "Alice";
  readonly port = 5000;
  readonly fingerprint = FP_ME;
  listeners = new Set<(e: NodeEvent) => void>();
  known: PeerInfo[] = [
    peer("Bob", FP_BOB, { active: true, connected: true }),
    peer("Carol", FP_CAROL, { active: true }),
  ];
  sent: { to: string; text: string; id: string }[] = [];
  trusted: [string, string][] = [];
  connects: string[] = [];
  history: (query: string, limit: number) => Promise<{ peer: string; messages: HistoryEntry[] }> = (
    query,
  ) => Promise.resolve({ peer: this.resolvePeer(query).name, messages: [] });
  closed = false;
  /** Whether send() reports "sent" at once (as for a connected peer). */
  autoSent = true;

  subscribe(listener: (e: NodeEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(e: WithoutTs<NodeEvent>): void {
    for (const l of this.listeners) l({ ...e, ts: Date.now() } as NodeEvent);
  }

  connect(address: string): Promise<{ name: string; fingerprint: string }> {
    this.connects.push(address);
    return Promise.reject(
      new NodeError("connection refused (is p2pchat running there, on that port?)"),
    );
  }

  send(query: string, text: string): Promise<string> {
    const r = this.resolvePeer(query);
    const id = `m${this.sent.length + 1}`;
    this.sent.push({ to: r.name, text, id });
    if (this.autoSent) this.emit({ type: "sent", id, to: r.name, fingerprint: r.fingerprint });
    return Promise.resolve(id);
  }

  trust(name: string, fingerprint: string): Promise<PeerRecord> {
    this.trusted.push([name, fingerprint]);
    return Promise.resolve(record(name, fingerprint));
  }

  peers(): PeerInfo[] {
    return this.known;
  }

  resolvePeer(query: string): PeerRecord {
    const p = this.known.find((p) =>
      p.name.toLowerCase() === query.toLowerCase() || p.fingerprint === query
    );
    if (!p) {
      throw new NodeError(`unknown peer "${query}" (see /peers, or /connect HOST:PORT first)`);
    }
    return record(p.name, p.fingerprint);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

function peer(name: string, fingerprint: string, over: Partial<PeerInfo> = {}): PeerInfo {
  return {
    name,
    fingerprint,
    host: "127.0.0.1",
    port: 6000,
    active: false,
    connected: false,
    lastSeen: Date.now(),
    ...over,
  };
}

function record(name: string, fingerprint: string): PeerRecord {
  return { name, fingerprint, spki: "", host: null, port: null, firstSeen: 0, lastSeen: 0 };
}

/** Input the test writes to, as a terminal or a pipe would deliver it. */
class Keyboard {
  readonly stream: ReadableStream<Uint8Array>;
  #ctl!: ReadableStreamDefaultController<Uint8Array>;
  #open = true;
  constructor() {
    this.stream = new ReadableStream({ start: (c) => this.#ctl = c });
  }
  type(text: string): void {
    this.#ctl.enqueue(new TextEncoder().encode(text));
  }
  end(): void {
    if (this.#open) this.#ctl.close();
    this.#open = false;
  }
}

/** Polls `check` until it returns true; fails with `describe()` after a bounded wait. */
async function until(check: () => boolean, describe: () => string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out; screen:\n${describe()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Harness {
  node: FakeNode;
  keys: Keyboard;
  vt: VirtualTerminal;
  out: () => string;
  done: Promise<void>;
  stop: () => void;
  waitFor: (text: string | RegExp) => Promise<void>;
}

function start(
  opts: { interactive: boolean; setup?: (node: FakeNode) => void } & Partial<TerminalOptions>,
): Harness {
  const node = new FakeNode();
  opts.setup?.(node);
  const keys = new Keyboard();
  const vt = new VirtualTerminal(100);
  let raw = "";
  let stop!: () => void;
  const stopped = new Promise<void>((r) => stop = r);
  const done = runTerminalWith(node, {
    log: new Logger(),
    stop: stopped,
    input: keys.stream,
    write: (t) => {
      raw += t;
      if (opts.interactive) vt.write(t);
    },
    color: false,
    columns: () => 100,
    discovery: false,
    ...opts,
  });
  const out = () => opts.interactive ? vt.text() : raw;
  return {
    node,
    keys,
    vt,
    out,
    done,
    stop,
    waitFor: (text) =>
      until(
        () => typeof text === "string" ? out().includes(text) : text.test(out()),
        () => out(),
      ),
  };
}

async function finish(h: Harness): Promise<void> {
  h.keys.end();
  h.stop();
  await h.done;
}

Deno.test("piped: menu choices, chat, exit back to the menu, quit; no escape codes", async () => {
  const h = start({ interactive: false });
  try {
    await h.waitFor("p2pchat> ");
    h.keys.type("2\n");
    await h.waitFor("Peers: 2 active, 2 known");
    h.keys.type("7\n");
    await h.waitFor('"7" is not a menu option: type 1 to 5');
    h.keys.type("1\n");
    await h.waitFor("Chat with (number or name, Enter to go back)> ");
    h.keys.type("9\n");
    await h.waitFor("no peer number 9");
    h.keys.type("1\n");
    await h.waitFor("── chat with Bob");
    h.keys.type("hello Bob\n");
    await h.waitFor(/you: hello Bob {2}✓ sent/);
    assert.deepEqual(h.node.sent.map((m) => [m.to, m.text]), [["Bob", "hello Bob"]]);
    h.node.emit({ type: "delivered", id: "m1", to: "Bob", fingerprint: FP_BOB });
    await h.waitFor(/you: hello Bob {2}✓✓ delivered/);
    h.node.emit({
      type: "message",
      id: "x",
      from: "Bob",
      fingerprint: FP_BOB,
      text: "hi!",
      sentAt: 1,
    });
    await h.waitFor(/\d\d:\d\d Bob: hi!/);
    h.keys.type("exit\n");
    await h.waitFor("left the chat with Bob");
    // /send from the menu names the recipient.
    h.keys.type("/send carol quick one\n");
    await h.waitFor(/you → Carol: quick one {2}✓ sent/);
    h.keys.type("5\n");
    await h.done;
    assert.equal(h.node.closed, true);
    assert.ok(h.out().endsWith("bye\n"), h.out());
    assert.ok(!h.out().includes("\x1b"), "no escape codes in piped output");
    assert.ok(!h.out().includes("\x07"), "no bell in piped output");
  } finally {
    await finish(h);
  }
});

Deno.test("piped: end of input quits cleanly and closes the node", async () => {
  const h = start({ interactive: false });
  try {
    h.keys.type("2\n/peers\n");
    h.keys.end();
    await h.done;
    assert.equal(h.node.closed, true);
    // Both lines were handled before end of input took effect.
    assert.equal(h.out().match(/Peers: 2 active/g)?.length, 2);
  } finally {
    await finish(h);
  }
});

Deno.test("stop (a signal) ends the UI and closes the node", async () => {
  const h = start({ interactive: true });
  try {
    await h.waitFor("p2pchat> ");
    h.keys.type("half");
    h.stop();
    await h.done;
    assert.equal(h.node.closed, true);
  } finally {
    await finish(h);
  }
});

Deno.test("interactive: an incoming message prints above the half-typed line", async () => {
  const h = start({ interactive: true });
  try {
    await h.waitFor("p2pchat> ");
    h.keys.type("1\r");
    await h.waitFor("Chat with");
    h.keys.type("bo\t\r");
    await h.waitFor("── chat with Bob");
    h.keys.type("half typ\x1b[D\x1b[Ce");
    await until(() => h.vt.currentLine() === "Bob> half type", () => h.out());
    h.node.emit({
      type: "message",
      id: "x",
      from: "Bob",
      fingerprint: FP_BOB,
      text: "ping",
      sentAt: 1,
    });
    await h.waitFor(/\d\d:\d\d Bob: ping\nBob> half type$/);
    assert.equal(h.vt.currentLine(), "Bob> half type");
    assert.equal(h.vt.cursor.col, "Bob> half type".length);
    // A message from someone else: a notice, a bell, and an unread count.
    h.node.emit({
      type: "message",
      id: "y",
      from: "Carol",
      fingerprint: FP_CAROL,
      text: "secret",
      sentAt: 1,
    });
    await h.waitFor("Carol sent you a message (1 unread)");
    assert.equal(h.vt.bells, 1);
    assert.ok(!h.out().includes("secret"));
    assert.equal(h.vt.currentLine(), "Bob> half type");
    // Typing continues where it was; the line is sent whole.
    h.keys.type("d\r");
    await h.waitFor(/you: half typed {2}✓ sent\nBob> $/);
    assert.deepEqual(h.node.sent.map((m) => m.text), ["half typed"]);
    h.keys.type("/peers\r");
    await h.waitFor(/│ 1 +│/);
    h.keys.type("exit\r");
    await h.waitFor("left the chat with Bob");
    h.keys.type("\x04");
    await h.done;
    assert.equal(h.node.closed, true);
    assert.equal(h.vt.sgr, 0, "no colours when colour is off");
  } finally {
    await finish(h);
  }
});

Deno.test("interactive: delivery states update in place (queued, sent, delivered)", async () => {
  const h = start({ interactive: true });
  h.node.autoSent = false;
  try {
    h.keys.type("/chat Carol\r");
    await h.waitFor("── chat with Carol");
    h.keys.type("are you there?\r");
    await h.waitFor(/you: are you there\? {2}… sending\nCarol> $/);
    h.node.emit({ type: "queued", id: "m1", to: "Carol", fingerprint: FP_CAROL });
    await h.waitFor(/you: are you there\? {2}⧗ queued\nCarol> $/);
    h.node.emit({ type: "connected", name: "Carol", fingerprint: FP_CAROL });
    h.node.emit({ type: "sent", id: "m1", to: "Carol", fingerprint: FP_CAROL });
    await h.waitFor(/you: are you there\? {2}✓ sent\n↔ connected to Carol\nCarol> $/);
    h.node.emit({ type: "delivered", id: "m1", to: "Carol", fingerprint: FP_CAROL });
    await h.waitFor(/you: are you there\? {2}✓✓ delivered\n↔ connected to Carol\nCarol> $/);
    assert.equal(h.out().match(/are you there/g)?.length, 1);
  } finally {
    await finish(h);
  }
});

Deno.test("interactive: key change asks (y/N) and the typed line comes back", async () => {
  const h = start({ interactive: true });
  try {
    h.keys.type("/chat Bob\r");
    await h.waitFor("── chat with Bob");
    h.keys.type("draft");
    h.node.emit({ type: "key-changed", name: "Bob", old: FP_BOB, new: FP_BOB2 });
    await h.waitFor("Trust the new key b222 b222 b222 b222… of Bob? (y/N) ");
    assert.ok(h.out().includes("b222 b222 b222"), "new fingerprint shown");
    assert.ok(h.out().includes("b0b0 b0b0 b0b0"), "old fingerprint shown");
    h.keys.type("y\r");
    await h.waitFor("Now trusting Bob");
    assert.deepEqual(h.node.trusted, [["Bob", FP_BOB2]]);
    await until(() => h.vt.currentLine() === "Bob> draft", () => h.out());
    // A "no" leaves the key alone and says how to trust later.
    h.node.emit({ type: "key-changed", name: "Carol", old: FP_CAROL, new: FP_BOB2 });
    await h.waitFor("Trust the new key b222 b222 b222 b222… of Carol? (y/N) ");
    h.keys.type("\r");
    await h.waitFor("To accept the new one later: /trust Carol b222b222");
    assert.equal(h.node.trusted.length, 1);
    // A command typed at the question is no answer: not run, not trusted, and said so.
    h.node.emit({ type: "key-changed", name: "Carol", old: FP_CAROL, new: FP_BOB2 });
    await h.waitFor(/Trust the new key b222 b222 b222 b222… of Carol\? \(y\/N\) $/);
    h.keys.type("/send Carol hi\r");
    await h.waitFor("That was a command, not an answer: it was not run");
    assert.equal(h.node.trusted.length, 1);
    assert.equal(h.node.sent.length, 0);
    // A key replaced while its question is up is not trusted by a late "y".
    h.node.emit({ type: "key-changed", name: "Carol", old: FP_CAROL, new: FP_BOB2 });
    await h.waitFor(/Trust the new key b222 b222 b222 b222… of Carol\? \(y\/N\) $/);
    h.node.emit({ type: "key-changed", name: "Carol", old: FP_CAROL, new: FP_CAROL });
    h.keys.type("y\r");
    await h.waitFor("Carol offers another key since: not trusted");
    assert.equal(h.node.trusted.length, 1);
    // ...and the key offered now gets its own question.
    await h.waitFor(/Trust the new key ca01 ca01 ca01 ca01… of Carol\? \(y\/N\) $/);
    h.keys.type("n\r");
    await until(
      () => h.vt.currentLine() === "Bob> draft",
      () => JSON.stringify([h.vt.cursor, h.vt.lines().slice(-3)]),
    );
  } finally {
    await finish(h);
  }
});

Deno.test("first contact shows the fingerprint; failed connect explains why", async () => {
  const h = start({ interactive: false });
  try {
    await h.waitFor("p2pchat> ");
    h.node.emit({ type: "peer-up", name: "Dave", fingerprint: "d".repeat(64), host: "h", port: 1 });
    await h.waitFor("First contact with Dave");
    assert.ok(h.out().includes("dddd dddd dddd dddd"));
    // Bob was known before: no first-contact notice.
    h.node.emit({ type: "connected", name: "Bob", fingerprint: FP_BOB });
    await h.waitFor("connected to Bob");
    assert.ok(!h.out().includes("First contact with Bob"));
    h.keys.type("4\n127.0.0.1:1\n");
    await h.waitFor("could not connect to 127.0.0.1:1: connection refused");
    await h.waitFor("Nothing accepted the connection");
    assert.deepEqual(h.node.connects, ["127.0.0.1:1"]);
    h.keys.type("/connect 2\n");
    await h.waitFor("could not connect to 127.0.0.1:6000");
  } finally {
    await finish(h);
  }
});

Deno.test("nobody heard: one hint naming firewall, subnet/VLAN and option 4", async () => {
  const h = start({
    interactive: false,
    discovery: true,
    intervalMs: 50,
    discoveryPort: 45454,
    setup: (node) => node.known = [],
  });
  try {
    await h.waitFor("No other peer has been heard");
    assert.match(h.out(), /firewall[\s\S]*VLAN[\s\S]*choose 4/);
    assert.ok(h.out().includes("45454"));
  } finally {
    await finish(h);
  }
  assert.equal(h.out().match(/No other peer has been heard/g)?.length, 1);
});

Deno.test("Ctrl-C quits at once, even with text typed", async () => {
  const h = start({ interactive: true });
  try {
    await h.waitFor("p2pchat> ");
    h.keys.type("abc\x03");
    await h.done;
    assert.equal(h.node.closed, true);
    assert.ok(h.out().trimEnd().endsWith("bye"), h.out());
  } finally {
    await finish(h);
  }
});

Deno.test("history view shows both sides with states; log lines print above the prompt", async () => {
  const log = new Logger();
  const h = start({ interactive: true, log });
  const t = Date.now();
  h.node.history = (query) =>
    Promise.resolve({
      peer: h.node.resolvePeer(query).name,
      messages: [
        { id: "1", direction: "out", text: "question", sentAt: t, state: "delivered" },
        { id: "2", direction: "in", text: "answer", sentAt: t, state: "delivered" },
      ],
    });
  try {
    await h.waitFor("p2pchat> ");
    h.keys.type("3\r2\r");
    await h.waitFor("History with Carol");
    await h.waitFor(/│ you +│ question +│ ✓✓ delivered/);
    await h.waitFor(/│ Carol +│ answer +│ received/);
    h.keys.type("typing");
    log.warn("something odd");
    await h.waitFor(/warn: something odd\np2pchat> typing$/);
  } finally {
    await finish(h);
  }
});

Deno.test("the node starts once the UI listens: messages shown at start (stored before a crash) reach it", async () => {
  let node!: FakeNode;
  const h = start({
    interactive: false,
    setup: (n) => node = n,
    startNode: () => {
      // What ChatNode.start does with messages stored and never shown: events, before the menu.
      node.emit({
        type: "message",
        id: "early",
        from: "Bob",
        fingerprint: FP_BOB,
        text: "sent while you were down",
        sentAt: 1,
      });
      return Promise.resolve();
    },
  });
  try {
    // Outside a chat a message is announced as unread, before the menu's first prompt.
    await h.waitFor("p2pchat> ");
    const notice = h.out().indexOf("Bob sent you a message (1 unread)");
    assert.ok(notice >= 0 && notice < h.out().indexOf("p2pchat> "), h.out());
  } finally {
    await finish(h);
  }
});

Deno.test("interactive: on an 80-column terminal the picker's question stays on its input line", async () => {
  for (
    const [columns, want] of [[80, "Chat with (number or name, Enter to go back)> "], [40, "> "]]
  ) {
    const h = start({ interactive: true, columns: () => columns as number });
    try {
      await h.waitFor("p2pchat> ");
      h.keys.type("1\r");
      await until(() => h.vt.currentLine() === want, () => `${columns}: ${h.vt.currentLine()}`);
    } finally {
      await finish(h);
    }
  }
});

Deno.test("interactive: a message over the limit is refused before it is printed", async () => {
  const h = start({ interactive: true });
  try {
    h.keys.type("/chat Bob\r");
    await h.waitFor("── chat with Bob");
    h.keys.type("é".repeat(40_000) + "\r");
    await h.waitFor("not sent: message too long (80000 bytes; the limit is 65536)");
    assert.equal(h.node.sent.length, 0);
    assert.ok(!h.out().includes("éééé"), "the text was not printed");
    h.keys.type("é".repeat(30_000) + "\r");
    await until(() => h.node.sent.length === 1, () => h.out().slice(-300));
  } finally {
    await finish(h);
  }
});

Deno.test("interactive: a message held by a key change says what frees it, once", async () => {
  const h = start({ interactive: false });
  h.node.autoSent = false;
  try {
    h.node.emit({ type: "key-changed", name: "Carol", old: FP_CAROL, new: FP_BOB2 });
    await h.waitFor(`/trust Carol ${FP_BOB2}`);
    for (const id of ["q1", "q2"]) {
      h.node.emit({ type: "queued", id, to: "Carol", fingerprint: FP_CAROL });
    }
    await h.waitFor("Messages to Carol wait until you accept its new key");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(h.out().match(/Messages to Carol wait/g)?.length, 1);
  } finally {
    await finish(h);
  }
});

Deno.test("piped: slash commands and exit work at the pickers and the address prompt", async () => {
  const h = start({ interactive: false });
  try {
    await h.waitFor("p2pchat> ");
    h.keys.type("1\n/peers\n");
    await h.waitFor("Peers: 2 active, 2 known");
    h.keys.type("3\nexit\n");
    await until(
      () => h.out().split("History with").length === 2 && /p2pchat> $/.test(h.out()),
      h.out,
    );
    assert.ok(!h.out().includes('unknown peer "exit"'), h.out());
    h.keys.type("4\n/help\n");
    await h.waitFor("/trust [PEER] [FINGERPRINT]");
    assert.deepEqual(h.node.connects, [], "a command is not an address");
    h.keys.type("1\n/chat Carol\n");
    await h.waitFor("── chat with Carol");
  } finally {
    await finish(h);
  }
});

Deno.test("interactive: after a resize a state change is printed anew, not over another line", async () => {
  let columns = 100;
  const h = start({ interactive: true, columns: () => columns });
  h.node.autoSent = false;
  try {
    h.keys.type("/chat Carol\r");
    await h.waitFor("── chat with Carol");
    h.keys.type("first\r");
    await h.waitFor(/you: first {2}… sending/);
    h.keys.type("second\r");
    await h.waitFor(/you: second {2}… sending\nCarol> $/);
    columns = 50;
    h.node.emit({ type: "sent", id: "m1", to: "Carol", fingerprint: FP_CAROL });
    await h.waitFor(/you: second {2}… sending\n.*you: first {2}✓ sent\nCarol> $/);
    assert.match(h.out(), /you: first {2}… sending\n/, "the old line is left alone");
  } finally {
    await finish(h);
  }
});

Deno.test("piped: /trust without a fingerprint finds the key change by name in any case or by prefix", async () => {
  const h = start({ interactive: false });
  try {
    h.node.emit({ type: "key-changed", name: "Bob", old: FP_BOB, new: FP_BOB2 });
    await h.waitFor(`/trust Bob ${FP_BOB2}`);
    h.keys.type("/trust bob\n");
    await until(() => h.node.trusted.length === 1, h.out);
    assert.deepEqual(h.node.trusted[0], ["Bob", FP_BOB2]);
    h.node.emit({ type: "key-changed", name: "Carol", old: FP_CAROL, new: FP_BOB2 });
    await h.waitFor(`/trust Carol ${FP_BOB2}`);
    h.keys.type(`/trust ${FP_CAROL.slice(0, 8)}\n`);
    await until(() => h.node.trusted.length === 2, h.out);
    assert.deepEqual(h.node.trusted[1], ["Carol", FP_BOB2]);
    h.keys.type("/trust Dave\n");
    await h.waitFor("no new key of Dave is waiting");
  } finally {
    await finish(h);
  }
});
