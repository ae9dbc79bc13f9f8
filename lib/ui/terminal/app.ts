/**
 * The terminal UI's shared state and its reactions to node events: which chat is open, unread
 * counts, the delivery state of sent messages, first contacts, key changes, and the one-time
 * hint when nobody has been heard.
 *
 * @module
 */

import { formatFingerprint } from "../../crypto/identity.ts";
import type { LogLevel } from "../../log.ts";
import { type ChatNode, NodeError } from "../../node/chat_node.ts";
import type { NodeEvent } from "../../node/events.ts";
import { MAX_TEXT_BYTES } from "../../protocol/messages.ts";
import {
  chatLine,
  keyChangeText,
  type OutState,
  type PeerRow,
  quietHint,
  sortPeers,
} from "./format.ts";
import type { Prompter } from "./prompt.ts";
import { type LineRef, sanitize, type Screen, type Style } from "./screen.ts";

/** What the terminal UI needs of a {@linkcode ChatNode} (a narrower type, so tests can fake it). */
export type TerminalNode = Pick<
  ChatNode,
  | "name"
  | "port"
  | "fingerprint"
  | "subscribe"
  | "connect"
  | "send"
  | "trust"
  | "peers"
  | "history"
  | "resolvePeer"
  | "close"
>;

/** A peer as the views refer to it. */
export interface PeerRef {
  /** The peer's display name (a label only). */
  name: string;
  /** The peer's fingerprint: its identity. */
  fingerprint: string;
}

/** Options of {@linkcode App}. */
export interface AppOptions {
  /** The running peer (or a test's fake). */
  node: TerminalNode;
  /** Where output is printed. */
  screen: Screen;
  /** Where lines and answers to questions are read. */
  prompter: Prompter;
  /** The colours (or none). */
  style: Style;
  /** Say why nobody shows up after this long without any peer (ms; 0 disables). */
  quietHintMs: number;
  /** The UDP discovery port, named in that hint. */
  discoveryPort?: number;
  /** False when discovery is off (`--no-discovery`): peers come only by address (default true). */
  discovery?: boolean;
}

interface OutLine {
  ref: LineRef;
  to: PeerRef;
  at: number;
  text: string;
  state: OutState;
}

/** Rank of states: a later event never moves a message back from delivered. */
const FINAL: ReadonlySet<OutState> = new Set(["delivered", "failed"]);

/**
 * The UI's state and event handling, shared by the menu and the chat view.
 *
 * @example
 * ```ts
 * const app = new App({ node, screen, prompter, style, quietHintMs: 15_000 });
 * app.start();
 * // ... menu ...
 * app.stop();
 * ```
 */
export class App {
  /** The peer. */
  readonly node: TerminalNode;
  /** Output. */
  readonly screen: Screen;
  /** Input. */
  readonly prompter: Prompter;
  /** Colours. */
  readonly style: Style;
  /** Up/Down history of menu and command lines. */
  readonly menuHistory: string[] = [];
  /** Up/Down history of chat lines. */
  readonly chatHistory: string[] = [];
  #unread = new Map<string, number>();
  #chat: PeerRef | null = null;
  #out = new Map<string, OutLine>();
  #early = new Map<string, OutState>();
  #sending = 0;
  #known = new Set<string>();
  #heardAny = false;
  #pendingKeys = new Map<string, { old: string; new: string; hinted?: boolean }>();
  #questions: Promise<void> = Promise.resolve();
  #unsubscribe: (() => void) | null = null;
  #hintTimer: ReturnType<typeof setTimeout> | null = null;
  #quietHintMs: number;
  #discoveryPort: number | undefined;
  #stopped = false;

  /**
   * Makes the UI state; it follows the node only after {@linkcode App.start}.
   *
   * @param opts The node, screen, prompter, colours and hint settings.
   */
  constructor(opts: AppOptions) {
    this.node = opts.node;
    this.screen = opts.screen;
    this.prompter = opts.prompter;
    this.style = opts.style;
    this.#quietHintMs = opts.quietHintMs;
    this.#discoveryPort = opts.discoveryPort;
    this.discovery = opts.discovery ?? true;
  }

  /** Whether peers on the LAN announce themselves to us (discovery is on). */
  readonly discovery: boolean;

  /** Subscribes to the node's events and arms the "nobody heard" hint. */
  start(): void {
    for (const p of this.node.peers()) {
      this.#known.add(p.fingerprint);
      if (p.active) this.#heardAny = true;
    }
    // Lines are printed synchronously; once stdout is gone, messages are left for the next start.
    this.#unsubscribe = this.node.subscribe((e) => this.#onEvent(e), {
      flush: () => this.screen.outputWorks,
    });
    if (this.#quietHintMs > 0) {
      this.#hintTimer = setTimeout(() => {
        this.#hintTimer = null;
        if (!this.#heardAny && !this.node.peers().some((p) => p.active)) {
          this.screen.print(
            this.style.yellow(quietHint({
              seconds: Math.round(this.#quietHintMs / 1000),
              discoveryPort: this.#discoveryPort,
            })),
          );
        }
      }, this.#quietHintMs);
    }
  }

  /** Unsubscribes and cancels timers. */
  stop(): void {
    this.#stopped = true;
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    if (this.#hintTimer !== null) clearTimeout(this.#hintTimer);
    this.#hintTimer = null;
  }

  /** Prints lines above the input line. */
  print(text: string): void {
    this.screen.print(text);
  }

  /** Prints an error hint (one line, red). */
  error(text: string): void {
    this.screen.print(this.style.red(text));
  }

  /** Receives log lines (warnings) while the UI runs; see Logger.setSink. */
  logSink = (level: LogLevel, line: string): void => {
    const paint = level === "error" ? this.style.red : level === "warn" ? this.style.yellow : (
      this.style.dim
    );
    this.screen.print(paint(`${level}: ${sanitize(line)}`));
  };

  /** Known peers, sorted, with unread counts. */
  peerRows(): PeerRow[] {
    return sortPeers(this.node.peers()).map((p) => ({
      ...p,
      unread: this.#unread.get(p.fingerprint) ?? 0,
    }));
  }

  /** Names of known peers, for completion. */
  peerNames(): string[] {
    return this.node.peers().map((p) => p.name);
  }

  /** Unread count of a peer. */
  unread(fingerprint: string): number {
    return this.#unread.get(fingerprint) ?? 0;
  }

  /** Marks a peer's messages as read. */
  markRead(fingerprint: string): void {
    this.#unread.delete(fingerprint);
  }

  /** The chat currently open, if any. */
  get chat(): PeerRef | null {
    return this.#chat;
  }

  /** Opens (or, with null, closes) the chat view with `peer`: its messages print in full. */
  setChat(peer: PeerRef | null): void {
    this.#chat = peer;
    if (peer) this.markRead(peer.fingerprint);
  }

  /** The new key a peer offered after a key change, if one waits for trust. */
  pendingKey(name: string): string | null {
    return this.#pendingKeys.get(name)?.new ?? null;
  }

  /**
   * The key change `query` is about, as /trust takes it: the name (in any case) or a fingerprint
   * prefix (8+ hex digits) of its old or new key. Null when none, or more than one, matches.
   */
  findKeyChange(query: string): { name: string; fingerprint: string } | null {
    const exact = this.#pendingKeys.get(query);
    if (exact) return { name: query, fingerprint: exact.new };
    const q = query.toLowerCase().replaceAll(/[\s:]/g, "");
    const prefix = /^[0-9a-f]{8,64}$/.test(q);
    const found = [...this.#pendingKeys].filter(([name, k]) =>
      name.toLowerCase() === query.toLowerCase() ||
      (prefix && (k.old.startsWith(q) || k.new.startsWith(q)))
    );
    return found.length === 1 ? { name: found[0][0], fingerprint: found[0][1].new } : null;
  }

  /**
   * Sends `text` to `peer`, printing the line at once and updating its delivery state as the
   * node reports it (sending → queued/sent → delivered).
   */
  async send(peer: PeerRef, text: string): Promise<void> {
    // Encoded only when it might be over (3 bytes at most per UTF-16 unit).
    const bytes = text.length * 3 <= MAX_TEXT_BYTES ? 0 : encoder.encode(text).length;
    if (bytes > MAX_TEXT_BYTES) {
      // Refused before it is printed: a pasted megabyte would otherwise fill the screen first.
      this.error(`not sent: message too long (${bytes} bytes; the limit is ${MAX_TEXT_BYTES})`);
      return;
    }
    const line: OutLine = { ref: { seq: 0 }, to: peer, at: Date.now(), text, state: "sending" };
    line.ref = this.screen.print(this.#outText(line));
    this.#sending++;
    let id: string;
    try {
      id = await this.node.send(peer.fingerprint, text);
    } catch (e) {
      this.#setState(line, "failed");
      if (e instanceof NodeError) this.error(`not sent: ${e.message}`);
      else throw e;
      return;
    } finally {
      this.#sending--;
    }
    this.#out.set(id, line);
    const early = this.#early.get(id);
    this.#early.delete(id);
    if (early) this.#setState(line, early);
    if (this.#sending === 0) this.#early.clear();
  }

  /**
   * Asks (y/N) whether to trust `name`'s new key, and trusts it on "y". The question names the
   * key (its first 16 digits); a key no longer offered by the time it is asked, or answered, is
   * not trusted, and a command typed at the question is not taken for an answer.
   */
  askTrust(name: string, fingerprint: string): Promise<void> {
    const later = `To accept the new one later: /trust ${name} ${fingerprint}`;
    const ask = async () => {
      if (this.#stopped || this.pendingKey(name) !== fingerprint) return;
      const answer = await this.prompter.readLine(
        this.style.yellow(
          `Trust the new key ${formatFingerprint(fingerprint.slice(0, 16))}… of ` +
            `${sanitize(name)}? (y/N) `,
        ),
      );
      if (answer !== null && answer.trim().startsWith("/")) {
        this.error(
          `That was a command, not an answer: it was not run, and the key was not trusted. ${later}`,
        );
      } else if (answer === null || !/^y(es)?$/i.test(answer.trim())) {
        this.print(`Kept the pinned key. ${later}`);
      } else if (this.pendingKey(name) !== fingerprint) {
        this.error(`${sanitize(name)} offers another key since: not trusted. See its warning.`);
      } else {
        await this.trust(name, fingerprint);
      }
    };
    this.#questions = this.#questions.then(ask, ask);
    return this.#questions;
  }

  /** Trusts `fingerprint` as `name`'s key and says so; NodeError becomes a hint. */
  async trust(name: string, fingerprint: string): Promise<void> {
    // Accepting moves the held messages (each says `queued` again): no "wait for /trust" now.
    const held = this.#pendingKeys.get(name);
    if (held !== undefined) held.hinted = true;
    try {
      await this.node.trust(name, fingerprint);
      this.#pendingKeys.delete(name);
      this.print(
        this.style.green(`Now trusting ${sanitize(name)} as ${formatFingerprint(fingerprint)}.`),
      );
    } catch (e) {
      if (!(e instanceof NodeError)) throw e;
      this.error(`cannot trust: ${e.message}`);
    }
  }

  #outText(line: OutLine): string {
    // Outside that peer's chat (a /send, or the chat was left) the line names the recipient.
    const to = this.#chat?.fingerprint === line.to.fingerprint ? undefined : line.to.name;
    return chatLine(
      { at: line.at, from: "you", text: line.text, state: line.state, to },
      this.style,
    );
  }

  #setState(line: OutLine, state: OutState): void {
    if (FINAL.has(line.state) || line.state === state) return;
    line.state = state;
    const text = this.#outText(line);
    if (!this.screen.update(line.ref, text)) line.ref = this.screen.print(text);
  }

  #onEvent(e: NodeEvent): void {
    if (this.#stopped) return;
    const s = this.style;
    switch (e.type) {
      case "peer-up":
        this.#heardAny = true;
        this.print(s.dim(`● ${sanitize(e.name)} is online at ${e.host}:${e.port}`));
        this.#firstContact(e.name, e.fingerprint);
        return;
      case "peer-down":
        this.print(
          s.dim(
            `○ ${sanitize(e.name)} went offline` +
              (e.reason === "goodbye" ? " (said goodbye)" : " (not heard for a while)"),
          ),
        );
        return;
      case "connected":
        this.#heardAny = true;
        this.print(s.dim(`↔ connected to ${sanitize(e.name)}`));
        this.#firstContact(e.name, e.fingerprint);
        return;
      case "disconnected":
        this.print(s.dim(`connection to ${sanitize(e.name)} closed (${sanitize(e.reason)})`));
        return;
      case "key-changed":
        this.#pendingKeys.set(e.name, { old: e.old, new: e.new });
        this.print(keyChangeText(e.name, e.old, e.new, s));
        this.screen.bell();
        if (this.screen.interactive) {
          this.askTrust(e.name, e.new).catch((err) => this.error(`trust failed: ${err}`));
        } else {
          this.print(`To trust the new key: /trust ${e.name} ${e.new}`);
        }
        return;
      case "trusted":
        this.#pendingKeys.delete(e.name);
        this.#known.add(e.fingerprint);
        if (this.#chat?.name === e.name) this.#chat = { ...this.#chat, fingerprint: e.fingerprint };
        return;
      case "message":
        this.#heardAny = true;
        this.#onMessage(e);
        return;
      case "sent":
      case "queued":
      case "delivered": {
        const line = this.#out.get(e.id);
        if (line) {
          this.#setState(line, e.type);
          if (e.type === "delivered") this.#out.delete(e.id);
        } else if (this.#sending > 0) {
          // send() has not returned the id yet: keep the state for it.
          this.#early.set(e.id, e.type);
        } else if (e.type === "delivered") {
          this.print(s.green(`✓✓ ${sanitize(e.to)} received a message you had queued earlier`));
        }
        const held = e.type === "queued" ? this.#pendingKeys.get(e.to) : undefined;
        if (held !== undefined && !held.hinted) {
          // Queued because of the key change, not because the peer is away: say what frees it.
          held.hinted = true;
          this.print(
            s.yellow(
              `Messages to ${sanitize(e.to)} wait until you accept its new key (compare ` +
                `fingerprints first): /trust ${e.to} ${held.new}`,
            ),
          );
        }
        return;
      }
      default:
        // ready, peers, history, error, bye: answers to headless commands, not shown here.
        return;
    }
  }

  #onMessage(e: Extract<NodeEvent, { type: "message" }>): void {
    const chat = this.#chat;
    if (chat && chat.fingerprint === e.fingerprint) {
      this.print(chatLine({ at: e.ts, from: e.from, text: e.text }, this.style));
      return;
    }
    const count = (this.#unread.get(e.fingerprint) ?? 0) + 1;
    this.#unread.set(e.fingerprint, count);
    const name = sanitize(e.from);
    const how = chat ? `/chat ${name}` : `1 or /chat ${name}`;
    this.print(
      this.style.yellow(
        `✉ ${name} sent you a message (${count} unread) — ${how} to read it`,
      ),
    );
    this.screen.bell();
  }

  #firstContact(name: string, fingerprint: string): void {
    if (this.#known.has(fingerprint)) return;
    this.#known.add(fingerprint);
    this.print(
      `First contact with ${sanitize(name)}; their key fingerprint is\n` +
        `   ${this.style.bold(formatFingerprint(fingerprint))}\n` +
        `Compare it with ${sanitize(name)} in person or by phone: it is pinned from now on.`,
    );
  }
}

const encoder = new TextEncoder();
