/**
 * What the menu options and slash commands do: pick a peer, show peers, show history, connect,
 * trust, send. Shared by the menu (menu.ts) and the chat view (chat.ts).
 *
 * @module
 */

import { NodeError } from "../../node/chat_node.ts";
import type { App, PeerRef } from "./app.ts";
import { CommandError, completeInput, DEFAULT_HISTORY_LIMIT, parseCommand } from "./commands.ts";
import { connectHint, helpText, historyTable, peersTable } from "./format.ts";
import { completeWord } from "./line_editor.ts";
import { sanitize } from "./screen.ts";

/** What a command asks of the view that ran it. */
export type Outcome = { kind: "quit" } | { kind: "chat"; peer: PeerRef } | null;

/** The user ended input (Ctrl-D, Ctrl-C) or the program is stopping. */
export const QUIT: Outcome = { kind: "quit" };

/** Is `x` a picked peer (rather than an outcome of the picker)? */
export function isPeer(x: PeerRef | Outcome): x is PeerRef {
  return x !== null && "fingerprint" in x;
}

/**
 * Lets the user pick a peer by number (from a numbered list) or by name / fingerprint prefix.
 * Returns null when the user goes back (empty line, or `exit`), QUIT when input ended, and for
 * a slash command typed instead the outcome of running it.
 *
 * @example
 * ```ts
 * const peer = await pickPeer(app, "Chat with");
 * ```
 */
export async function pickPeer(app: App, purpose: string): Promise<PeerRef | Outcome> {
  const rows = app.peerRows();
  if (rows.length === 0) {
    app.print(
      app.discovery
        ? "No peers known yet. Wait for peers to appear (they announce themselves), " +
          "or choose 4 to connect by address."
        : "No peers known yet. Discovery is off (--no-discovery): choose 4 to connect by address.",
    );
    return null;
  }
  const s = app.style;
  app.print(
    rows.map((p, i) => {
      const state = p.connected ? s.green("connected") : p.active ? "on LAN" : s.dim("offline");
      const unread = p.unread > 0 ? s.yellow(`, ${p.unread} unread`) : "";
      return `  ${s.bold(String(i + 1))}  ${s.cyan(sanitize(p.name))} (${state}${unread})`;
    }).join("\n"),
  );
  for (;;) {
    const line = await app.prompter.readLine(`${purpose} (number or name, Enter to go back)> `, {
      history: app.menuHistory,
      complete: (l, c) => completeWord(l, c, app.peerNames()),
    });
    if (line === null) return QUIT;
    const t = line.trim();
    if (t === "") return null;
    // Slash commands work here too (the picker is left for them, as with Enter).
    if (t.startsWith("/")) return await runCommand(app, t, null);
    if (/^(exit|quit|q)$/i.test(t) && !app.peerNames().includes(t)) return null;
    if (/^\d+$/.test(t)) {
      const n = Number(t);
      if (n >= 1 && n <= rows.length) {
        return { name: rows[n - 1].name, fingerprint: rows[n - 1].fingerprint };
      }
      app.error(`no peer number ${t}: type 1 to ${rows.length}, a name, or Enter to go back`);
      continue;
    }
    const found = resolve(app, t);
    if (found) return found;
  }
}

/** Resolves a peer query to a {@linkcode PeerRef}, printing the node's hint when it fails. */
export function resolve(app: App, query: string): PeerRef | null {
  try {
    const r = app.node.resolvePeer(query);
    return { name: r.name, fingerprint: r.fingerprint };
  } catch (e) {
    if (!(e instanceof NodeError)) throw e;
    app.error(e.message);
    return null;
  }
}

/** Prints the peers table (menu 2). */
export function showPeers(app: App): void {
  const rows = app.peerRows();
  if (rows.length === 0) {
    app.print(
      app.discovery
        ? "No peers known yet. Peers on the LAN appear here by themselves; choose 4 to connect " +
          "by address."
        : "No peers known yet. Discovery is off (--no-discovery): choose 4 to connect by address.",
    );
    return;
  }
  const active = rows.filter((p) => p.active).length;
  app.print(`Peers: ${active} active, ${rows.length} known`);
  app.print(peersTable(rows, { style: app.style }));
}

/** Prints the history with `peer` (menu 3) and marks it read. */
export async function showHistory(
  app: App,
  peer: PeerRef,
  limit = DEFAULT_HISTORY_LIMIT,
): Promise<void> {
  let h;
  try {
    h = await app.node.history(peer.fingerprint, limit);
  } catch (e) {
    if (!(e instanceof NodeError)) throw e;
    app.error(e.message);
    return;
  }
  app.markRead(peer.fingerprint);
  if (h.messages.length === 0) {
    app.print(`No messages with ${sanitize(h.peer)} yet.`);
    return;
  }
  app.print(
    `History with ${sanitize(h.peer)} (last ${h.messages.length}, oldest first, local times):`,
  );
  app.print(historyTable(h.peer, h.messages, { style: app.style, columns: app.screen.columns }));
}

/**
 * Connects to `target` (host:port, or the number or name of a known peer with an address); with
 * null, lists the known addresses and asks. Failures are explained in words.
 */
export async function connect(app: App, target: string | null): Promise<Outcome> {
  const rows = app.peerRows().filter((p) => p.host && p.port);
  if (target === null) {
    if (rows.length > 0) {
      app.print("Known peers:");
      app.print(
        rows.map((p, i) =>
          `  ${app.style.bold(String(i + 1))}  ${app.style.cyan(sanitize(p.name))} at ${
            address(p)
          }` +
          (p.connected ? app.style.green(" (connected)") : "")
        ).join("\n"),
      );
    }
    const line = await app.prompter.readLine(
      rows.length > 0
        ? "Address (host:port) or number, Enter to go back> "
        : "Address (host:port), Enter to go back> ",
      { history: app.menuHistory, complete: (l, c) => completeWord(l, c, rows.map((p) => p.name)) },
    );
    if (line === null) return QUIT;
    target = line.trim();
    if (target === "") return null;
    if (target.startsWith("/")) return await runCommand(app, target, null);
  }
  let addr = target;
  if (/^\d+$/.test(target)) {
    const n = Number(target);
    if (n < 1 || n > rows.length) {
      app.error(
        rows.length > 0
          ? `no peer number ${target}: type 1 to ${rows.length}, or an address like 192.168.1.20:5000`
          : `"${target}" is not an address: type host:port, for example 192.168.1.20:5000`,
      );
      return null;
    }
    addr = address(rows[n - 1]);
  } else if (!target.includes(":")) {
    const byName = rows.find((p) => p.name.toLowerCase() === target!.toLowerCase());
    if (byName) addr = address(byName);
  }
  app.print(app.style.dim(`connecting to ${addr}…`));
  try {
    // Success needs no words here: the node's `connected` event is printed by the App.
    await app.node.connect(addr);
    return null;
  } catch (e) {
    if (!(e instanceof NodeError)) throw e;
    // The node's message may name the address already ("cannot connect to HOST:PORT: ...").
    const why = e.message.startsWith(`cannot connect to ${addr}: `)
      ? e.message.slice(`cannot connect to ${addr}: `.length)
      : e.message;
    app.error(`could not connect to ${addr}: ${why}`);
    const hint = connectHint(e.message);
    if (hint) app.print(hint);
    return null;
  }
}

function address(p: { host: string | null; port: number | null }): string {
  return p.host!.includes(":") ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`;
}

/** Completion for a command line: command names, then peer names. */
export function completeLine(
  app: App,
): (line: string, cursor: number) => ReturnType<typeof completeInput> {
  return (line, cursor) => completeInput(line, cursor, app.peerNames());
}

/**
 * Runs one slash command. `chatPeer` is the peer of the open chat (the default PEER there).
 * Bad commands print a one-line hint; nothing here throws for a user mistake.
 */
export async function runCommand(
  app: App,
  line: string,
  chatPeer: PeerRef | null,
): Promise<Outcome> {
  let cmd;
  try {
    cmd = parseCommand(line);
  } catch (e) {
    if (!(e instanceof CommandError)) throw e;
    app.error(e.message);
    return null;
  }
  switch (cmd.kind) {
    case "help":
      app.print(helpText(app.style));
      return null;
    case "quit":
      return QUIT;
    case "peers":
      showPeers(app);
      return null;
    case "connect":
      return await connect(app, cmd.target);
    case "chat": {
      const peer = cmd.peer === null ? await pickPeer(app, "Chat with") : resolve(app, cmd.peer);
      return isPeer(peer) ? { kind: "chat", peer } : peer;
    }
    case "history": {
      let peer: PeerRef | Outcome = chatPeer;
      if (cmd.peer !== null) peer = resolve(app, cmd.peer);
      else if (peer === null) peer = await pickPeer(app, "History with");
      if (!isPeer(peer)) return peer;
      await showHistory(app, peer, cmd.limit);
      return null;
    }
    case "send": {
      const peer = resolve(app, cmd.peer);
      if (peer) await app.send(peer, cmd.text);
      return null;
    }
    case "trust": {
      const name = cmd.peer ?? chatPeer?.name ?? null;
      if (name === null) {
        app.error("usage: /trust PEER [FINGERPRINT] (the fingerprint shown when its key changed)");
        return null;
      }
      if (cmd.fingerprint !== null) {
        await app.trust(name, cmd.fingerprint);
        return null;
      }
      const change = app.findKeyChange(name);
      if (change === null) {
        app.error(
          `no new key of ${sanitize(name)} is waiting: give it as /trust ${
            sanitize(name)
          } FINGERPRINT`,
        );
        return null;
      }
      await app.trust(change.name, change.fingerprint);
      return null;
    }
  }
}
