import assert from "node:assert/strict";
import {
  chatLine,
  connectHint,
  formatTime,
  historyTable,
  type PeerRow,
  peersTable,
  quietHint,
  shortFingerprint,
  sortPeers,
  stateMark,
  wrapText,
} from "../../../lib/ui/terminal/format.ts";
import { textWidth } from "../../../lib/ui/terminal/line_editor.ts";
import { stripAnsi, Style } from "../../../lib/ui/terminal/screen.ts";

const plain = new Style(false);
const color = new Style(true);
const ESC = "\x1b";

Deno.test("formatTime: local clock today, date otherwise", () => {
  const t = new Date(2024, 2, 1, 9, 5, 7).getTime();
  assert.equal(formatTime(t, { now: t + 1000 }), "09:05");
  assert.equal(formatTime(t, { now: t + 1000, seconds: true }), "09:05:07");
  assert.equal(formatTime(t, { now: t + 2 * 86_400_000 }), "2024-03-01 09:05");
});

Deno.test("stateMark and chatLine", () => {
  assert.equal(stateMark("sending", plain), "… sending");
  assert.equal(stateMark("queued", plain), "⧗ queued");
  assert.equal(stateMark("sent", plain), "✓ sent");
  assert.equal(stateMark("delivered", plain), "✓✓ delivered");
  assert.equal(stateMark("failed", plain), "✗ failed");
  assert.ok(stateMark("delivered", color).includes(ESC));
  const at = new Date(2024, 0, 1, 14, 2).getTime();
  assert.match(
    chatLine({ at, from: "Bob", text: "hi" }, plain),
    /^(\d{4}-\d\d-\d\d )?14:02 Bob: hi$/,
  );
  assert.match(
    chatLine({ at, from: "you", text: "yo", state: "sent" }, plain),
    /14:02 you: yo {2}✓ sent$/,
  );
  // Text from the network cannot smuggle escape codes onto the screen.
  const evil = chatLine({ at, from: "Bob", text: "x\x1b[2J\x07y" }, plain);
  assert.ok(!evil.includes(ESC) && !evil.includes("\x07"), evil);
});

const FP_A = "a".repeat(64);
const FP_B = "0123456789abcdef".repeat(4);

function row(over: Partial<PeerRow>): PeerRow {
  return {
    name: "X",
    fingerprint: FP_A,
    host: "10.0.0.2",
    port: 5000,
    active: false,
    connected: false,
    lastSeen: 0,
    unread: 0,
    ...over,
  };
}

Deno.test("sortPeers: connected, then active, then offline, by name", () => {
  const sorted = sortPeers([
    row({ name: "Zed" }),
    row({ name: "Bob", active: true }),
    row({ name: "Amy" }),
    row({ name: "Cy", active: true, connected: true }),
  ]);
  assert.deepEqual(sorted.map((p) => p.name), ["Cy", "Bob", "Amy", "Zed"]);
});

Deno.test("peersTable: every column, no escape codes without colour", () => {
  const now = new Date(2024, 0, 1, 12, 0, 0).getTime();
  const text = peersTable([
    row({
      name: "Bob",
      fingerprint: FP_B,
      active: true,
      connected: true,
      lastSeen: now,
      unread: 3,
    }),
    row({ name: "Carol", host: null, port: null }),
  ], { style: plain, now });
  for (
    const want of ["name", "address", "fingerprint", "last seen", "connected", "unread", "Bob"]
  ) {
    assert.ok(text.includes(want), want);
  }
  assert.ok(text.includes("10.0.0.2:5000"));
  assert.ok(text.includes(shortFingerprint(FP_B)));
  assert.equal(shortFingerprint(FP_B), "0123 4567 89ab cdef…");
  assert.ok(text.includes("12:00:00"));
  assert.ok(text.includes("never"));
  assert.ok(text.includes("offline"));
  assert.match(text, /│ 3 +│/);
  assert.ok(!text.includes(ESC));
  assert.ok(peersTable([row({ connected: true })], { style: color }).includes(ESC));
});

Deno.test("historyTable: both directions, states, wrapping long text", () => {
  const t = new Date(2024, 0, 1, 8, 30).getTime();
  const text = historyTable("Bob", [
    { id: "1", direction: "out", text: "hello Bob", sentAt: t, state: "delivered" },
    { id: "2", direction: "in", text: "hi you", sentAt: t + 60_000, state: "delivered" },
    { id: "3", direction: "out", text: "w".repeat(150), sentAt: t, state: "queued" },
  ], { style: plain, columns: 80, now: t });
  assert.ok(text.includes("hello Bob"));
  assert.ok(text.includes("hi you"));
  assert.ok(text.includes("✓✓ delivered"));
  assert.ok(text.includes("received"));
  assert.ok(text.includes("⧗ queued"));
  assert.ok(text.includes("08:31"));
  for (const line of text.split("\n")) assert.ok([...line].length <= 80, line);
  assert.ok(!text.includes(ESC));
  // With colours, every row keeps the table's shape (colour codes take no columns).
  const colored = historyTable("Bob", [
    { id: "1", direction: "out", text: "hello Bob ".repeat(20), sentAt: t, state: "delivered" },
    { id: "2", direction: "in", text: "hi", sentAt: t, state: "delivered" },
  ], { style: color, columns: 80, now: t });
  assert.ok(colored.includes(ESC));
  const widths = new Set(colored.split("\n").map((l) => textWidth(stripAnsi(l))));
  assert.equal(widths.size, 1, colored);
  assert.ok([...widths][0] <= 80);
  assert.equal(
    stripAnsi(colored).split("\n")[1].replace(/ +/g, " "),
    "│ time │ from │ message │ state │",
  );
});

Deno.test("wrapText: at spaces when possible, hard otherwise, by columns", () => {
  assert.equal(wrapText("hello big world", 9), "hello big\nworld");
  assert.equal(wrapText("abcdefghij", 4), "abcd\nefgh\nij");
  assert.equal(wrapText("short", 10), "short");
  assert.equal(wrapText("世界世界", 5), "世界\n世界");
  assert.equal(wrapText("", 5), "");
});

Deno.test("connectHint: failures explained in words", () => {
  assert.match(
    connectHint("connection refused (is p2pchat running there, on that port?)")!,
    /port/,
  );
  assert.match(connectHint("no answer within 5 s")!, /firewall/);
  assert.match(connectHint("cannot connect to 10.9.9.9:5000: No route to host")!, /subnet/);
  assert.match(
    connectHint("cannot connect to nohost:1: failed to lookup address information")!,
    /IP address/,
  );
  assert.match(
    connectHint("cannot connect to 1.2.3.4:5: handshake: connection closed")!,
    /handshake/,
  );
  assert.equal(connectHint('"x" is not HOST:PORT (for example 192.168.1.20:5000)'), null);
  assert.match(quietHint({ seconds: 15, discoveryPort: 54545 }), /firewall[\s\S]*VLAN[\s\S]*4/);
  assert.match(quietHint({ seconds: 15, discoveryPort: 54545 }), /54545/);
});
