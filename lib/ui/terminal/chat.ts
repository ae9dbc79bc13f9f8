/**
 * The chat view (menu 1): recent messages with one peer, then a live conversation. Incoming
 * messages print above the input line; `exit` goes back to the menu.
 *
 * @module
 */

import { NodeError } from "../../node/chat_node.ts";
import { completeLine, type Outcome, QUIT, runCommand } from "./actions.ts";
import type { App, PeerRef } from "./app.ts";
import { chatLine } from "./format.ts";
import { sanitize } from "./screen.ts";

/** Messages shown on entering a chat (more if more are unread). */
const RECENT = 10;

/**
 * Runs the chat with `peer` until `exit` (returns null), `/quit` or end of input (returns the
 * quit outcome). `/chat OTHER` switches peers without going back to the menu.
 *
 * @example
 * ```ts
 * const outcome = await chatView(app, { name: "Bob", fingerprint });
 * ```
 */
export async function chatView(app: App, first: PeerRef): Promise<Outcome> {
  let peer = first;
  try {
    for (;;) {
      await enter(app, peer);
      const next = await converse(app, peer);
      if (next?.kind !== "chat") return next;
      peer = next.peer;
    }
  } finally {
    app.setChat(null);
  }
}

async function enter(app: App, peer: PeerRef): Promise<void> {
  const s = app.style;
  const unread = app.unread(peer.fingerprint);
  app.setChat(peer);
  app.print(
    s.bold(`── chat with ${sanitize(peer.name)} `) +
      s.dim(`(type a message and press Enter; exit leaves the chat; /help for commands)`),
  );
  try {
    const h = await app.node.history(peer.fingerprint, Math.max(RECENT, unread));
    for (const m of h.messages) {
      app.print(chatLine(
        m.direction === "in"
          ? { at: m.sentAt, from: h.peer, text: m.text }
          : { at: m.sentAt, from: "you", text: m.text, state: m.state },
        s,
      ));
    }
  } catch (e) {
    if (!(e instanceof NodeError)) throw e;
    app.error(e.message);
  }
}

async function converse(app: App, peer: PeerRef): Promise<Outcome> {
  const complete = completeLine(app);
  for (;;) {
    // The peer may have changed key (and fingerprint) while the chat was open.
    const current = app.chat ?? peer;
    const line = await app.prompter.readLine(
      `${app.style.cyan(sanitize(current.name))}${app.style.dim(">")} `,
      { history: app.chatHistory, complete, keep: false },
    );
    if (line === null) return QUIT;
    const t = line.trim();
    if (t === "") continue;
    if (t === "exit") {
      app.print(app.style.dim(`left the chat with ${sanitize(current.name)}`));
      return null;
    }
    if (t.startsWith("/") && !t.startsWith("//")) {
      app.print(`${app.style.dim(">")} ${sanitize(t)}`);
      const outcome = await runCommand(app, t, current);
      if (outcome !== null) return outcome;
      continue;
    }
    // "//text" sends "/text"; anything else is sent as typed.
    await app.send(current, line.startsWith("//") ? line.slice(1) : line);
  }
}
