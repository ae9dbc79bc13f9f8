/**
 * `p2pchat history`: prints stored conversations from the data directory. No network activity.
 *
 * @module
 */

import type { HistoryStore, StoredMessage } from "../store/history.ts";
import type { PeerBook } from "../store/peers.ts";
import type { HistoryOptions } from "./args.ts";
import { sanitize } from "../ui/terminal/screen.ts";
import { RuntimeError } from "./errors.ts";

/** One conversation as printed with `--json`. */
export interface ConversationDump {
  /** The peer's name: from the peer book, else the one stored with its messages. */
  peer: string;
  /** The peer's fingerprint (lowercase hex SHA-256 of its public key). */
  fingerprint: string;
  /** The last messages of the conversation, oldest first; times are ms since the epoch. */
  messages: {
    id: string;
    direction: "in" | "out";
    text: string;
    sentAt: number;
    receivedAt: number | null;
    state: string;
  }[];
}

/**
 * Collects the conversations to print: those with `opts.peer` (a name: a conversation per key
 * that name has had, e.g. before and after a key change; or a fingerprint prefix of 8+ hex
 * digits), or every conversation, each limited to its last `opts.limit` messages.
 *
 * @throws {RuntimeError} when `opts.peer` matches no conversation, or is a prefix of several.
 * @example
 * ```ts
 * const dumps = await collectHistory(history, peers, { peer: "Bob", limit: 20 });
 * ```
 */
export async function collectHistory(
  history: HistoryStore,
  peers: PeerBook,
  opts: Pick<HistoryOptions, "peer" | "limit">,
): Promise<ConversationDump[]> {
  const conversations = history.conversations().map((c) => ({
    fingerprint: c.peer,
    name: peers.get(c.peer)?.name ?? c.peerName,
  }));
  let chosen = conversations;
  if (opts.peer !== null) {
    const q = opts.peer.toLowerCase();
    chosen = conversations.filter((c) => c.name === opts.peer);
    if (chosen.length === 0) chosen = conversations.filter((c) => c.name.toLowerCase() === q);
    if (chosen.length === 0 && /^[0-9a-f]{8,64}$/.test(q)) {
      chosen = conversations.filter((c) => c.fingerprint.startsWith(q));
    }
    if (chosen.length === 0) throw new RuntimeError(`no conversation with "${opts.peer}"`);
    // Several under one name are that name's keys: each is printed with its fingerprint.
    if (chosen.length > 1 && !chosen.every((c) => c.name === chosen[0].name)) {
      throw new RuntimeError(
        `"${opts.peer}" matches ${chosen.length} peers; use a fingerprint prefix: ` +
          chosen.map((c) => c.fingerprint.slice(0, 8)).join(", "),
      );
    }
  }
  const out: ConversationDump[] = [];
  for (const c of chosen) {
    const rows = await history.history(c.fingerprint, { limit: opts.limit });
    out.push({
      peer: c.name,
      fingerprint: c.fingerprint,
      messages: rows.map((m: StoredMessage) => ({
        id: m.id,
        direction: m.direction,
        text: m.text,
        sentAt: m.sentAt,
        receivedAt: m.receivedAt,
        state: m.state,
      })),
    });
  }
  return out;
}

/**
 * Formats conversations as text: a heading per peer, one line per message, local times.
 *
 * @example
 * ```ts
 * console.log(formatHistory(await collectHistory(history, peers, { peer: null, limit: 20 })));
 * ```
 */
export function formatHistory(dumps: ConversationDump[]): string {
  if (dumps.length === 0) return "no messages yet\n";
  const lines: string[] = [];
  for (const d of dumps) {
    lines.push(`== ${d.peer} (${d.fingerprint.slice(0, 16)}…), ${d.messages.length} message(s)`);
    for (const m of d.messages) {
      const who = m.direction === "out" ? "me" : d.peer;
      const state = m.direction === "out" ? `  [${m.state}]` : "";
      lines.push(`${localTime(m.sentAt)}  ${who}: ${sanitize(m.text)}${state}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** Prints history per the options; see {@linkcode collectHistory}. */
export async function printHistory(
  history: HistoryStore,
  peers: PeerBook,
  opts: HistoryOptions,
): Promise<void> {
  const dumps = await collectHistory(history, peers, opts);
  const text = opts.json ? JSON.stringify(dumps, null, 2) + "\n" : formatHistory(dumps);
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  while (at < bytes.length) at += await Deno.stdout.write(bytes.subarray(at));
}

/**
 * A timestamp in local time, `YYYY-MM-DD HH:MM:SS`.
 *
 * @example
 * ```ts
 * localTime(Date.now()); // "2026-11-24 18:03:12"
 * ```
 */
export function localTime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
