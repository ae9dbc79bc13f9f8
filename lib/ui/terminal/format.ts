/**
 * What the terminal UI says, as pure functions: times, message lines, delivery states, the peers
 * and history tables, menu and help texts, and plain-words explanations of failures.
 *
 * @module
 */

import Table from "cli-table3";
import { formatFingerprint } from "../../crypto/identity.ts";
import type { HistoryEntry, PeerInfo } from "../../node/events.ts";
import { charWidth, textWidth } from "./line_editor.ts";
import { sanitize, type Style } from "./screen.ts";

/** Delivery state of an outgoing message as the UI shows it ("sending" until the node says). */
export type OutState = "sending" | "queued" | "sent" | "delivered" | "failed";

/** A known peer with the UI's unread count. */
export interface PeerRow extends PeerInfo {
  /** Messages received while the user was not in that peer's chat. */
  unread: number;
}

const pad = (n: number) => String(n).padStart(2, "0");

/**
 * Local time of `ms`: "14:05" today, "2024-03-01 14:05" on another day; with `seconds`,
 * "14:05:09".
 *
 * @example
 * ```ts
 * formatTime(Date.now()); // e.g. "14:05"
 * ```
 */
export function formatTime(ms: number, opts: { now?: number; seconds?: boolean } = {}): string {
  const d = new Date(ms);
  const now = new Date(opts.now ?? Date.now());
  let clock = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (opts.seconds) clock += `:${pad(d.getSeconds())}`;
  const sameDay = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() &&
    d.getDate() === now.getDate();
  if (sameDay) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

/**
 * The first 16 hex digits of a fingerprint in groups of four, for tables.
 *
 * @example
 * ```ts
 * shortFingerprint("0123456789abcdef0123"); // "0123 4567 89ab cdef…"
 * ```
 */
export function shortFingerprint(fp: string): string {
  return formatFingerprint(fp.slice(0, 16)) + (fp.length > 16 ? "…" : "");
}

/**
 * A delivery state as a short mark.
 *
 * @example
 * ```ts
 * stateMark("delivered", new Style(false)); // "✓✓ delivered"
 * ```
 */
export function stateMark(state: OutState | HistoryEntry["state"], style: Style): string {
  switch (state) {
    case "sending":
      return style.dim("… sending");
    case "queued":
      return style.yellow("⧗ queued");
    case "sent":
      return style.dim("✓ sent");
    case "delivered":
      return style.green("✓✓ delivered");
    case "failed":
      return style.red("✗ failed");
  }
}

/**
 * One chat line: "14:05 Bob: hello" (incoming) or "14:05 you: hello  ✓✓ delivered"
 * ("you → Bob" with `to`, outside Bob's chat). The text is sanitized here: it comes from the
 * network.
 *
 * @example
 * ```ts
 * chatLine({ at: 0, from: "Bob", text: "hi" }, new Style(false));
 * ```
 */
export function chatLine(
  m: { at: number; from: string; text: string; state?: OutState; to?: string },
  style: Style,
): string {
  const you = style.magenta("you") + (m.to ? ` → ${style.cyan(sanitize(m.to))}` : "");
  const who = m.state === undefined ? style.cyan(style.bold(sanitize(m.from))) : you;
  const mark = m.state === undefined ? "" : "  " + stateMark(m.state, style);
  return `${style.dim(formatTime(m.at))} ${who}: ${sanitize(m.text)}${mark}`;
}

/**
 * Orders peers for lists: connected first, then active, then the rest, each by name.
 *
 * @example
 * ```ts
 * sortPeers(node.peers());
 * ```
 */
export function sortPeers<T extends PeerInfo>(peers: T[]): T[] {
  const rank = (p: PeerInfo) => p.connected ? 0 : p.active ? 1 : 2;
  return [...peers].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

/** "connected", "on LAN" or "offline". */
function status(p: PeerInfo, style: Style): string {
  if (p.connected) return style.green("connected");
  if (p.active) return "on LAN";
  return style.dim("offline");
}

function address(p: PeerInfo): string {
  if (!p.host || !p.port) return "—";
  return p.host.includes(":") ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`;
}

/**
 * The peers table (menu 2): number, name, address, fingerprint, last seen, connection, unread.
 * Rows are shown in the order given (see {@linkcode sortPeers}).
 *
 * @example
 * ```ts
 * console.log(peersTable(rows, { style: new Style(false) }));
 * ```
 */
export function peersTable(rows: PeerRow[], opts: { style: Style; now?: number }): string {
  const { style } = opts;
  const table = new Table({
    head: ["#", "name", "address", "fingerprint", "last seen", "connected", "unread"].map((h) =>
      style.bold(h)
    ),
    style: { head: [], border: [] },
  });
  rows.forEach((p, i) => {
    table.push([
      String(i + 1),
      style.cyan(sanitize(p.name)),
      address(p),
      shortFingerprint(p.fingerprint),
      p.lastSeen > 0 ? formatTime(p.lastSeen, { now: opts.now, seconds: true }) : "never",
      status(p, style),
      p.unread > 0 ? style.yellow(String(p.unread)) : "0",
    ]);
  });
  return table.toString();
}

/**
 * The chat history table (menu 3), oldest first: local time, who, text, delivery state.
 *
 * @example
 * ```ts
 * console.log(historyTable("Bob", messages, { style: new Style(false), columns: 100 }));
 * ```
 */
export function historyTable(
  peer: string,
  messages: HistoryEntry[],
  opts: { style: Style; columns?: number; now?: number },
): string {
  const { style } = opts;
  const times = messages.map((m) => formatTime(m.sentAt, { now: opts.now }));
  const widest = (xs: string[]) => Math.max(0, ...xs.map(textWidth));
  // Borders and padding take 3 columns per column, plus 1; the message column gets the rest.
  const fixed = widest(["time", ...times]) + Math.max(5, textWidth(peer)) + 14 + 13;
  const room = Math.max(16, (opts.columns ?? 100) - fixed);
  // cli-table3's own wrapping miscounts colour codes: wrap the (uncoloured) text here instead.
  const table = new Table({
    head: ["time", "from", "message", "state"].map((h) => style.bold(h)),
    style: { head: [], border: [] },
  });
  messages.forEach((m, i) => {
    table.push([
      times[i],
      m.direction === "in" ? style.cyan(sanitize(peer)) : style.magenta("you"),
      wrapText(sanitize(m.text), room),
      m.direction === "in" ? style.dim("received") : stateMark(m.state, style),
    ]);
  });
  return table.toString();
}

/**
 * Wraps `text` into lines of at most `width` columns, breaking at spaces where it can.
 *
 * @example
 * ```ts
 * wrapText("hello big world", 9); // "hello big\nworld"
 * ```
 */
export function wrapText(text: string, width: number): string {
  const lines: string[] = [];
  let line: string[] = [];
  let used = 0;
  let lastSpace = -1;
  for (const ch of text) {
    const w = charWidth(ch);
    if (used + w > width && line.length > 0) {
      if (ch === " ") {
        // The line is full exactly at a word's end: the space itself becomes the break.
        lines.push(line.join(""));
        line = [];
        used = 0;
        lastSpace = -1;
        continue;
      }
      if (lastSpace > 0) {
        // Break after the last space; the rest of the word moves to the next line.
        lines.push(line.slice(0, lastSpace).join("").trimEnd());
        line = line.slice(lastSpace + 1);
      } else {
        lines.push(line.join(""));
        line = [];
      }
      used = line.reduce((n, c) => n + charWidth(c), 0);
      lastSpace = line.lastIndexOf(" ");
    }
    if (ch === " ") lastSpace = line.length;
    line.push(ch);
    used += w;
  }
  lines.push(line.join(""));
  return lines.join("\n");
}

/**
 * A plain-words hint for a failed connection attempt, from the node's one-line error; null when
 * the message already says everything.
 *
 * @example
 * ```ts
 * connectHint("connection refused (is p2pchat running there, on that port?)");
 * ```
 */
export function connectHint(message: string): string | null {
  const m = message.toLowerCase();
  if (m.includes("refused")) {
    return "Nothing accepted the connection there: check the port (each peer prints its own at " +
      "start-up) and that p2pchat is running on that machine.";
  }
  if (m.includes("no answer") || m.includes("timed out")) {
    return "No answer: the address may be wrong, the machine off or asleep, or a firewall may " +
      "be dropping connections to that port.";
  }
  if (m.includes("no route") || m.includes("unreachable")) {
    return "There is no route to that address: it may be on another subnet or VLAN that this " +
      "machine cannot reach, or the machine is off.";
  }
  if (m.includes("lookup") || m.includes("not known") || m.includes("resolve")) {
    return "That host name could not be resolved: try the IP address instead.";
  }
  if (m.includes("not host:port") || m.includes("new key") || m.includes("not the peer")) {
    return null;
  }
  if (
    m.includes("handshake") || m.includes("reset") || m.includes("closed") ||
    m.includes("protocol") || m.includes("version") || m.includes("timeout")
  ) {
    return "Something answered, but the secure handshake did not complete: it may not be " +
      "p2pchat, or it may be a different version.";
  }
  return null;
}

/**
 * What to say once when no peer has been heard for a while.
 *
 * @example
 * ```ts
 * quietHint({ seconds: 15 });
 * ```
 */
export function quietHint(opts: { seconds: number; discoveryPort?: number }): string {
  const port = opts.discoveryPort ? ` (UDP port ${opts.discoveryPort})` : "";
  return [
    `No other peer has been heard in ${opts.seconds} s. Peers find each other by UDP broadcast` +
    `${port}; if none shows up, the likely causes are:`,
    "  - a firewall blocking that UDP port, here or on the other machines;",
    "  - the other peers are on another subnet or VLAN (broadcasts do not cross routers).",
    "You can still connect directly: choose 4 and type the other peer's address as host:port.",
  ].join("\n");
}

/**
 * The main menu, with the original program's numbering.
 *
 * @example
 * ```ts
 * console.log(menuText(new Style(false)));
 * ```
 */
export function menuText(style: Style): string {
  const item = (key: string, text: string) => `  ${style.bold(key)}  ${text}`;
  return [
    item("1", "send messages (pick a peer, then chat; type exit to leave the chat)"),
    item("2", "active peers"),
    item("3", "chat history"),
    item("4", "connect to a peer by host:port"),
    item("5", "quit (or q)"),
    style.dim("  /help lists the commands; Tab completes peer names"),
  ].join("\n");
}

/** The one-line menu reminder printed after each action. */
export function menuReminder(style: Style): string {
  return style.dim("menu: 1 chat · 2 peers · 3 history · 4 connect · 5 quit · /help");
}

/**
 * The `/help` text.
 *
 * @example
 * ```ts
 * console.log(helpText(new Style(false)));
 * ```
 */
export function helpText(style: Style): string {
  const cmd = (c: string, d: string) => `  ${style.bold(c.padEnd(28))}${d}`;
  return [
    "Commands (anywhere; in a chat, PEER defaults to the peer you are chatting with):",
    cmd("/chat PEER", "chat with PEER (menu 1)"),
    cmd("/peers", "list peers (menu 2)"),
    cmd("/history [PEER] [LIMIT]", "show the conversation (menu 3)"),
    cmd("/connect [HOST:PORT]", "connect to a peer by address (menu 4)"),
    cmd("/send PEER TEXT", "send one message without opening the chat"),
    cmd("/trust [PEER] [FINGERPRINT]", "accept a peer's new key after a key change"),
    cmd("/help", "this text"),
    cmd("/quit", "quit (menu 5, q, Ctrl-C or Ctrl-D)"),
    "In a chat: type and press Enter to send; exit leaves the chat; //text sends /text.",
    "Editing: ←/→, Home/End (Ctrl-A/E), Ctrl-U/Ctrl-W delete, ↑/↓ earlier lines, Tab completes.",
    "PEER is a name or the first 8+ digits of a fingerprint.",
  ].join("\n");
}

/**
 * The loud notice for a key change.
 *
 * @example
 * ```ts
 * keyChangeText("Bob", oldFp, newFp, new Style(false));
 * ```
 */
export function keyChangeText(name: string, oldFp: string, newFp: string, style: Style): string {
  const n = sanitize(name);
  return [
    style.red(style.bold(`!! The key of ${n} has CHANGED !!`)),
    `   pinned key:  ${formatFingerprint(oldFp)}`,
    `   offered key: ${style.bold(formatFingerprint(newFp))}`,
    `${n} may have reinstalled p2pchat, or someone else may be using the name ${n}.`,
    `Compare the offered fingerprint with ${n} in person or by phone before trusting it.`,
    `Nothing is sent to or accepted from the new key until you do.`,
  ].join("\n");
}
