/**
 * The running peer: TCP server and dialer, secure sessions, trust on first use, the outbox and
 * delivery acknowledgements, discovery wiring, and the events the UIs show.
 *
 * @module
 */

import { formatFingerprint, type Identity } from "../crypto/identity.ts";
import type { Logger } from "../log.ts";
import { FramedConn } from "../net/conn.ts";
import type { Discovery, HeardPeer } from "../net/discovery.ts";
import {
  HandshakeError,
  type HandshakeResult,
  initiateHandshake,
  respondHandshake,
} from "../protocol/handshake.ts";
import { MAX_TEXT_BYTES, newMessageId } from "../protocol/messages.ts";
import { type CloseReason, Session, SessionError } from "../protocol/session.ts";
import type { HistoryStore, StoredMessage } from "../store/history.ts";
import type { PeerBook, PeerRecord } from "../store/peers.ts";
import type { HistoryEntry, NodeEvent, PeerInfo, WithoutTs } from "./events.ts";

/** Limits that keep a hostile peer from costing more than a closed connection. */
export interface NodeLimits {
  /** Open TCP connections in all (default 512). */
  maxConnections: number;
  /** Connections not yet authenticated, per remote address (default 32). */
  maxPendingPerAddress: number;
  /** Time for a whole handshake (default 10 s). */
  handshakeTimeoutMs: number;
  /** Largest frame after authentication (default 1 MiB). */
  maxFrameSize: number;
  /** Largest frame before authentication (default 8 KiB). */
  maxHandshakeFrameSize: number;
  /** Ping a quiet session after this long (default 15 s). */
  keepaliveMs: number;
  /** Close a session that has been silent this long (default 45 s). */
  idleTimeoutMs: number;
  /** Chat messages per second accepted from one peer (default 100,000). */
  maxMessagesPerSecond: number;
  /** Time to open a TCP connection (default 5 s). */
  connectTimeoutMs: number;
  /**
   * Peers kept in the book that are only known from their announcements (default 1024): beyond
   * it, those heard longest ago and not online are forgotten (see `PeerBook.prune`).
   */
  maxHeardPeers: number;
}

/** Default {@linkcode NodeLimits}. */
export const DEFAULT_LIMITS: NodeLimits = {
  maxConnections: 512,
  maxPendingPerAddress: 32,
  handshakeTimeoutMs: 10_000,
  maxFrameSize: 1 << 20,
  maxHandshakeFrameSize: 8 * 1024,
  keepaliveMs: 15_000,
  idleTimeoutMs: 45_000,
  maxMessagesPerSecond: 100_000,
  maxHeardPeers: 1024,
  connectTimeoutMs: 5_000,
};

/** A command could not be carried out; the message is meant for the user. */
export class NodeError extends Error {
  /**
   * Makes the error.
   *
   * @param message A one-line explanation for the user.
   * @param options `cause`: the underlying error, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NodeError";
  }
}

/** What {@linkcode ChatNode} is built from. */
export interface ChatNodeOptions {
  /** Our display name, given in handshakes and events. */
  name: string;
  /** Our RSA key pair; its fingerprint is who we are to peers. */
  identity: Identity;
  /** The message store and outbox; {@linkcode ChatNode.close} closes it. */
  history: HistoryStore;
  /** The book of known peers and their pinned keys; {@linkcode ChatNode.close} closes it. */
  peers: PeerBook;
  /** An open TCP listener: accepted on from {@linkcode ChatNode.start}, closed with the node. */
  listener: Deno.TcpListener;
  /** The data directory; only reported in the `ready` event. */
  dataDir: string;
  /** Where warnings and connection details go. */
  log: Logger;
  /** Creates the discovery service once the node knows its port; omitted with --no-discovery. */
  discovery?: (hooks: DiscoveryHooks) => Discovery;
  /** Limits to change; the rest keep {@linkcode DEFAULT_LIMITS}. */
  limits?: Partial<NodeLimits>;
}

/** Callbacks the node gives to its discovery service. */
export interface DiscoveryHooks {
  /** A peer is heard for the first time, or again after it went down. */
  onPeerUp(p: HeardPeer): void;
  /** Every accepted announcement of a peer (its address may have changed). */
  onPeerSeen(p: HeardPeer): void;
  /** A peer was not heard for 3 of its intervals, or said goodbye. */
  onPeerDown(p: HeardPeer, reason: "timeout" | "goodbye"): void;
}

interface OutMessage {
  id: string;
  peer: string;
  text: string;
  sentAt: number;
  state: "queued" | "sent";
  /** The session this message was last written to (null: not on the current one). */
  sentOn: Session | null;
  /**
   * May be written to the peer: its record has committed, or it is the one message that leaves
   * before its commit (see send()). The outbox keeps the order of the send() calls, and #flush
   * stops at the first message that may not be written yet.
   */
  writable: boolean;
  /** `sent` has been reported for it (or was, before a restart). */
  shown: boolean;
  /** The last write to a session: true once written, false if it failed. */
  written: Promise<boolean> | null;
  /**
   * What waits for the record to be durable (null once it is): `sent`, `queued` and `delivered`
   * are reported only then. The message itself may leave before that (see send()).
   */
  waiting: (() => void)[] | null;
}

interface PendingKey {
  name: string;
  fingerprint: string;
  spki: Uint8Array;
  host: string | null;
  port: number | null;
}

/**
 * One p2pchat peer.
 *
 * @example
 * ```ts
 * const node = new ChatNode({ name, identity, history, peers, listener, dataDir, log });
 * node.subscribe((event) => console.log(event));
 * await node.start();
 * await node.send("Bob", "hello");
 * await node.close();
 * ```
 */
export class ChatNode {
  #opts: ChatNodeOptions;
  #limits: NodeLimits;
  #log: Logger;
  #listeners = new Map<(e: NodeEvent) => void, ListenerOutput>();
  #sessions = new Map<string, { session: Session; since: number }>();
  #dialing = new Map<string, Promise<Session | null>>();
  #pending = new Set<FramedConn>();
  /** Inbound connections not yet authenticated, oldest first, with their address. */
  #inboundPending = new Map<FramedConn, string>();
  #pendingByAddress = new Map<string, number>();
  #connections = 0;
  #outbox = new Map<string, Map<string, OutMessage>>();
  #pendingKeys = new Map<string, PendingKey>();
  /** "address port" of our dials that reached ourselves (seen from the accepting side). */
  #selfDials = new Set<string>();
  #heard = new Map<string, HeardPeer>();
  #retryTimers = new Map<string, { timer: ReturnType<typeof setTimeout>; delay: number }>();
  #discovery: Discovery | null = null;
  #aliveTimer: ReturnType<typeof setInterval> | undefined;
  #acceptLoop: Promise<void> = Promise.resolve();
  #tasks = new Set<Promise<unknown>>();
  #closing = false;
  /** Per peer: the peer book save that must finish before the first message to it. */
  #bookSaves = new Map<string, Promise<void>>();
  /** Per peer: the current reconnect backoff. */
  #retryDelays = new Map<string, number>();
  /** Per peer: the session that has every writable outbox message written to it (see #flush). */
  #flushed = new Map<string, Session>();
  /** A message that left before its record committed is still waiting for that commit. */
  #earlyUncommitted = false;
  /** Messages (to any peer) waiting for their commit before they may be written. */
  #unwritable = 0;
  /** Keys already warned about for claiming the name of a live peer (bounded, see #nameClash). */
  #clashWarned = new Set<string>();

  /** Our display name. */
  readonly name: string;
  /** Our TCP port. */
  readonly port: number;

  /**
   * Makes a node; it accepts connections and starts discovery only in {@linkcode ChatNode.start}.
   * Unless `opts.limits` sets it, the keepalive is a third of the idle timeout, at most 15 s.
   *
   * @param opts Everything the node runs on; it takes ownership of listener and stores.
   */
  constructor(opts: ChatNodeOptions) {
    this.#opts = opts;
    this.#limits = { ...DEFAULT_LIMITS, ...opts.limits };
    if (opts.limits?.keepaliveMs === undefined) {
      // Pings must come well inside the idle timeout, or quiet sessions would be cut.
      this.#limits.keepaliveMs = Math.min(
        DEFAULT_LIMITS.keepaliveMs,
        this.#limits.idleTimeoutMs / 3,
      );
    }
    this.#log = opts.log;
    this.name = opts.name;
    this.port = (opts.listener.addr as Deno.NetAddr).port;
  }

  /** Our fingerprint. */
  get fingerprint(): string {
    return this.#opts.identity.fingerprint;
  }

  /**
   * Registers a listener for every event; returns a function that removes it.
   *
   * A listener shows `message` events to the user by the time it returns, or, if it buffers its
   * output, when its `flush` returns: after emitting messages the node records them as shown and
   * calls `flush` right after. `flush` returns false when the output is gone (the reader of
   * stdout went away): the node then takes back the record, so those messages are shown at the
   * next start, and removes the listener, so later messages wait for the next start too.
   *
   * @example
   * ```ts
   * const unsubscribe = node.subscribe((e) => lines.push(JSON.stringify(e)), {
   *   flush: () => writeLines(lines),
   * });
   * ```
   */
  subscribe(listener: (e: NodeEvent) => void, opts: ListenerOutput = {}): () => void {
    this.#listeners.set(listener, opts);
    return () => this.#listeners.delete(listener);
  }

  /** Starts serving, loads the outbox, starts discovery, and emits `ready`. */
  async start(): Promise<void> {
    for (const peer of this.#opts.history.outboxPeers()) {
      const box = this.#box(peer);
      for (const m of await this.#opts.history.outbox(peer)) {
        box.set(m.id, {
          ...m,
          state: m.state === "queued" ? "queued" : "sent",
          sentOn: null,
          writable: true,
          shown: m.state === "sent",
          written: null,
          waiting: null,
        });
      }
    }
    // Discovery starts before `ready` (its port must be bound first), and a reply to its first
    // announcement can arrive meanwhile: what it reports waits, so `ready` is the first event.
    let early: (() => void)[] | null = [];
    const after = (f: () => void) => early === null ? f() : early.push(f);
    if (this.#opts.discovery) {
      this.#discovery = this.#opts.discovery({
        onPeerUp: (p) => after(() => this.#onHeard(p, true)),
        onPeerSeen: (p) => after(() => this.#onHeard(p, false)),
        onPeerDown: (p, reason) => after(() => this.#onPeerDown(p, reason)),
      });
      await this.#discovery.start();
    }
    this.#emit({
      type: "ready",
      name: this.name,
      port: this.port,
      fingerprint: this.fingerprint,
      dataDir: this.#opts.dataDir,
    });
    // Messages stored before a crash that came before they were shown: shown now, oldest first,
    // before any new one can arrive.
    this.#show(await this.#opts.history.unshown());
    // Inbound connections wait in the listen backlog until now, so `connected` follows `ready`.
    this.#acceptLoop = this.#accept();
    if (this.#discovery) {
      // A connected peer is alive even when its announcements do not reach us (pings prove it).
      this.#aliveTimer = setInterval(() => {
        for (const fp of this.#sessions.keys()) this.#discovery?.markAlive(fp);
      }, 1_000);
    }
    const waiting = early;
    early = null;
    for (const f of waiting) {
      try {
        f();
      } catch (e) {
        // Discovery reports a callback's error as a warning; do the same for the deferred ones.
        this.#log.warn(`discovery callback failed: ${describe(e)}`);
      }
    }
    for (const peer of this.#outbox.keys()) this.#kick(peer);
  }

  // ---------------------------------------------------------------- commands

  /**
   * Connects to `host:port` and authenticates the peer there.
   *
   * @throws {NodeError} when the address is bad, the connection fails, or the peer is refused.
   */
  async connect(address: string): Promise<{ name: string; fingerprint: string }> {
    const { host, port } = parseAddress(address);
    const { session, fresh } = await this.#dial(host, port);
    if (!fresh) {
      // Already connected to that peer: the existing session stays; say so all the same.
      this.#emit({
        type: "connected",
        name: session.peerName,
        fingerprint: session.peerFingerprint,
      });
    }
    return { name: session.peerName, fingerprint: session.peerFingerprint };
  }

  /**
   * Sends `text` to the peer named by `query` (a name, or a fingerprint prefix of 8+ hex digits).
   * Emits `sent` when it left for a connected peer, or `queued` when the peer is unreachable;
   * `delivered` follows once the peer has stored it.
   *
   * @throws {NodeError} for an unknown or ambiguous peer, or an over-long message.
   */
  async send(query: string, text: string): Promise<string> {
    if (overTextLimit(text)) {
      throw new NodeError(`message too long (limit ${MAX_TEXT_BYTES} bytes)`);
    }
    if (text.length === 0) throw new NodeError("empty message");
    const record = this.resolvePeer(query);
    const fp = record.fingerprint;
    // A message makes the peer a contact: its record must outlive any pruning.
    if (record.heardOnly) this.#opts.peers.upsert({ fingerprint: fp, heardOnly: false });
    await this.#bookSaved(fp);
    // The message leaves before its record commits: not at all if the record cannot be made.
    const refusal = this.#opts.history.refusal;
    if (refusal !== null) {
      throw new NodeError(`message not stored: ${describe(refusal)}`, { cause: refusal });
    }
    const held = this.#heldByKeyChange(record);
    const live = this.#sessions.get(fp)?.session;
    const msg: OutMessage = {
      id: newMessageId(),
      peer: fp,
      text,
      sentAt: Date.now(),
      state: live && !live.closed && !held ? "sent" : "queued",
      sentOn: null,
      writable: false,
      shown: false,
      written: null,
      waiting: [],
    };
    const row = { id: msg.id, peer: fp, peerName: record.name, text, sentAt: msg.sentAt };
    // Into the outbox at once, so that it keeps the order of the calls. A message sent alone
    // (typed, or a script's that waits for each answer) leaves at once too, and its record
    // commits at the end of this turn of the event loop: it travels while our commit and fsync
    // run instead of after the commit. Only one message at a time leaves before its commit, and
    // only while no message waits for its own: the others (a flood) join that commit and leave
    // once it is done, in order. So a kill can leave the peer with at most one message that our
    // history lacks (and that was never reported): docs/STORAGE.md, "Durability". Each is
    // reported once its record is durable.
    msg.writable = !this.#earlyUncommitted && this.#unwritable === 0;
    let early = msg.writable;
    const release = () => {
      if (!early) return;
      early = false;
      this.#earlyUncommitted = false;
    };
    if (early) this.#earlyUncommitted = true;
    else this.#unwritable++;
    const box = this.#box(fp);
    box.set(msg.id, msg);
    const committed = early ? null : Promise.withResolvers<void>();
    const durable = this.#opts.history.recordOutgoing(row, msg.state, {
      committed: committed?.resolve ?? release,
    });
    durable.then(() => {
      const waiting = msg.waiting ?? [];
      msg.waiting = null;
      for (const f of waiting) f();
    }, (e) => {
      release();
      committed?.reject(e);
      // Not stored, or not durable (the fsync failed): the store refuses every write from now on
      // and nothing more is reported for this message, which leaves the outbox. Not written:
      // send() answers with the error. Written already: send() may have answered, so the error
      // is told here.
      box.delete(msg.id);
      if (msg.sentOn === null) return;
      this.#log.error(`message ${msg.id} is not stored: ${describe(e)}`);
      this.#emit({
        type: "error",
        message: `message ${msg.id} to ${record.name} left but is not stored: ${describe(e)}`,
      });
    });
    if (committed !== null) {
      try {
        await committed.promise;
      } catch (e) {
        throw new NodeError(`message not stored: ${describe(e)}`, { cause: e });
      } finally {
        this.#unwritable--;
      }
      msg.writable = true;
    }
    if (held) {
      // Not written now: the outbox is no longer all on the session (see #flush).
      this.#flushed.delete(fp);
    } else {
      // At once, before the next message's turn: #flush relies on it to keep the order.
      this.#flush(fp, msg);
      if (msg.sentOn === null) {
        // Reach the peer if we can, but answer `queued` after a few seconds (an unreachable
        // host can take connect + handshake timeouts); a session that comes up later flushes
        // the outbox and reports `sent` then.
        const session = await settleWithin(this.#ensureSession(fp), SEND_WAIT_MS, null);
        // Not if its record failed meanwhile (it left the outbox).
        if (session !== null && box.get(msg.id) === msg) this.#flush(fp, msg);
      }
      // #flush reports `sent` when the write is done (and the record durable). Not waiting for
      // that here is measurably cheaper under load: a send() then ends with its write.
      if (msg.written !== null && await msg.written) return msg.id;
    }
    await this.#durableOrError(durable);
    // A session that came up while the record's fsync ran may have reported the message already
    // (`sent`, even `delivered`): `queued` would now be false news.
    if (msg.shown || box.get(msg.id) !== msg) return msg.id;
    this.#emit({ type: "queued", id: msg.id, to: record.name, fingerprint: fp });
    if (!held) this.#scheduleRetry(fp);
    return msg.id;
  }

  /** Waits for a record to be durable; a store that failed meanwhile is the caller's error. */
  async #durableOrError(durable: Promise<void>): Promise<void> {
    try {
      await durable;
    } catch (e) {
      throw new NodeError(`message not stored: ${describe(e)}`, { cause: e });
    }
  }

  /**
   * Makes sure the peer book is on disk before the first message to `fp` (once per peer): the
   * outbox names a peer by fingerprint only, and a crash right after a first contact must not
   * leave messages for a peer whose key and address were never saved.
   */
  #bookSaved(fp: string): Promise<void> {
    let saved = this.#bookSaves.get(fp);
    if (saved === undefined) {
      saved = this.#opts.peers.flush().catch((e) =>
        this.#log.warn(`cannot save the peer book: ${describe(e)}`)
      );
      this.#bookSaves.set(fp, saved);
    }
    return saved;
  }

  /**
   * Accepts `fingerprint` as the key of a name after a key change: the key the name offered
   * (`key-changed`), or one it had before (a retired key, taken back). `query` is the name, or a
   * fingerprint prefix (8+ hex digits) of a key it has had or offered. Other keys are refused,
   * so that trust can never move a name, and what is written to it, to another peer.
   *
   * @throws {NodeError} for an unknown name, or a key that name has neither offered nor held.
   * @example
   * ```ts
   * await node.trust("Bob", "3d567efc…"); // the `new` fingerprint of Bob's `key-changed`
   * ```
   */
  async trust(query: string, fingerprint: string): Promise<PeerRecord> {
    const fp = fingerprint.toLowerCase().replaceAll(/[\s:]/g, "");
    if (!/^[0-9a-f]{64}$/.test(fp)) {
      throw new NodeError("FINGERPRINT must be the key's 64 hex digits (`new` of its key-changed)");
    }
    const name = this.#trustedName(query);
    const pending = this.#pendingKeys.get(name);
    let record: PeerRecord | undefined;
    if (pending && pending.fingerprint === fp) {
      record = this.#opts.peers.upsert({
        fingerprint: fp,
        name,
        spki: toBase64(pending.spki),
        host: pending.host,
        port: pending.port,
        lastSeen: Date.now(),
        retired: false,
        heardOnly: false,
      });
      this.#pendingKeys.delete(name);
    } else {
      // Only a key this name has had (the pinned one, or one retired from it): accepting any
      // known key would hand the name, and the messages written to it, to another peer. A
      // record's name is what its key last claimed, but no key may claim a name another key
      // holds (#renameRefused), and a retired record keeps its name.
      const known = this.#opts.peers.get(fp);
      if (!known || known.name !== name) {
        throw new NodeError(
          `${formatFingerprint(fp)} is not a key ${name} has offered` +
            (pending ? ` (it offered ${formatFingerprint(pending.fingerprint)})` : ""),
        );
      }
      // The pinned key itself: the user keeps it, and the key offered instead is turned down.
      if (!known.retired) this.#pendingKeys.delete(name);
      record = this.#opts.peers.upsert({ fingerprint: fp, name, retired: false, heardOnly: false });
    }
    // Retire every other key that held this name; messages held for it go to the new key.
    for (const old of this.#opts.peers.byName(name)) {
      if (old.fingerprint === fp || old.retired) continue;
      // Gone meanwhile (a heard-only record pruned while an earlier outbox moved): nothing to do.
      if (this.#opts.peers.get(old.fingerprint) === undefined) continue;
      this.#opts.peers.upsert({ fingerprint: old.fingerprint, retired: true, retiredBy: fp });
      await this.#moveOutbox(old.fingerprint, fp, name);
    }
    this.#emit({ type: "trusted", name, fingerprint: fp });
    this.#kick(fp);
    return record;
  }

  /**
   * The name `/trust PEER` is about: a name with a key waiting for trust, a known name, or a
   * fingerprint prefix (8+ hex digits) of a waiting key or of a key that held the name.
   */
  #trustedName(query: string): string {
    const q = query.trim();
    if (this.#pendingKeys.has(q) || this.#opts.peers.byName(q).length > 0) return q;
    const lower = q.toLowerCase();
    const hex = lower.replaceAll(/[\s:]/g, "");
    const byPrefix = /^[0-9a-f]{8,64}$/.test(hex);
    const names = new Set<string>();
    for (const p of this.#pendingKeys.values()) {
      if (p.name.toLowerCase() === lower) names.add(p.name);
    }
    for (const r of this.#opts.peers.all()) if (r.name.toLowerCase() === lower) names.add(r.name);
    if (names.size === 0 && byPrefix) {
      for (const p of this.#pendingKeys.values()) {
        if (p.fingerprint.startsWith(hex)) names.add(p.name);
      }
      for (const r of this.#opts.peers.all()) if (r.fingerprint.startsWith(hex)) names.add(r.name);
    }
    if (names.size === 1) return [...names][0];
    if (names.size === 0) throw new NodeError(`unknown peer "${query}" (see /peers)`);
    throw new NodeError(`"${query}" matches ${[...names].join(", ")}; give the exact name`);
  }

  /** Every known peer, for `/peers`. */
  peers(): PeerInfo[] {
    const out: PeerInfo[] = [];
    for (const r of this.#opts.peers.all()) {
      if (r.retired) continue;
      const connected = this.#sessions.has(r.fingerprint);
      const heard = this.#heard.get(r.fingerprint);
      out.push({
        name: r.name,
        fingerprint: r.fingerprint,
        host: r.host,
        port: r.port,
        active: connected || heard !== undefined,
        connected,
        lastSeen: Math.max(r.lastSeen, heard?.lastSeen ?? 0),
      });
    }
    return out;
  }

  /**
   * The last `limit` messages with the peer named by `query`, oldest first. The conversation
   * includes the keys that name had before a key change the user accepted (retired keys), but for
   * the messages moved from them to the new key; a fingerprint prefix of a retired key gives
   * that key's messages alone.
   *
   * @throws {NodeError} for an unknown or ambiguous peer.
   */
  async history(query: string, limit = 50): Promise<{ peer: string; messages: HistoryEntry[] }> {
    const record = this.#historyPeer(query);
    let rows = await this.#opts.history.history(record.fingerprint, { limit });
    if (!record.retired) {
      for (const old of this.#opts.peers.byName(record.name)) {
        if (!old.retired || old.fingerprint === record.fingerprint) continue;
        const earlier = (await this.#opts.history.history(old.fingerprint, { limit }))
          // Failed is what /trust moved to the new key: its copy there stands for it.
          .filter((m) => !(m.direction === "out" && m.state === "failed"));
        rows = mergeBySentAt(earlier, rows).slice(-limit);
      }
    }
    return {
      peer: record.name,
      messages: rows.map((m: StoredMessage) => ({
        id: m.id,
        direction: m.direction,
        text: m.text,
        sentAt: m.sentAt,
        state: m.state,
      })),
    };
  }

  /** The peer `/history` is about: as {@linkcode resolvePeer}, or a retired key by prefix. */
  #historyPeer(query: string): PeerRecord {
    try {
      return this.resolvePeer(query);
    } catch (e) {
      const hex = query.trim().toLowerCase().replaceAll(/[\s:]/g, "");
      if (!(e instanceof NodeError) || !/^[0-9a-f]{8,64}$/.test(hex)) throw e;
      // Only retired keys are left to match: resolvePeer knows every current one.
      const matches = this.#opts.peers.all().filter((r) => r.fingerprint.startsWith(hex));
      if (matches.length !== 1) throw e;
      return matches[0];
    }
  }

  /**
   * Finds a peer by name (exact, then case-insensitive) or by a fingerprint prefix of 8+ hex digits.
   *
   * @throws {NodeError} when nothing or more than one peer matches.
   */
  resolvePeer(query: string): PeerRecord {
    const q = query.trim();
    // The common case, one peer with exactly that name, without copying the whole peer book.
    const named = this.#opts.peers.byName(q);
    if (named.length > 0 && !named[0].retired && (named.length === 1 || named[1].retired)) {
      return named[0];
    }
    const all = this.#opts.peers.all().filter((r) => !r.retired);
    let matches = all.filter((r) => r.name === q);
    if (matches.length === 0) {
      matches = all.filter((r) => r.name.toLowerCase() === q.toLowerCase());
    }
    const hex = q.toLowerCase().replaceAll(/[\s:]/g, "");
    if (matches.length === 0 && /^[0-9a-f]{8,64}$/.test(hex)) {
      matches = all.filter((r) => r.fingerprint.startsWith(hex));
    }
    if (matches.length === 1) return matches[0];
    if (matches.length === 0) {
      throw new NodeError(`unknown peer "${query}" (see /peers, or /connect HOST:PORT first)`);
    }
    throw new NodeError(
      `"${query}" matches ${matches.length} peers; use a fingerprint prefix: ` +
        matches.map((m) => m.fingerprint.slice(0, 8)).join(", "),
    );
  }

  /** Sends goodbyes, closes every connection and the stores. Idempotent. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    clearInterval(this.#aliveTimer);
    for (const { timer } of this.#retryTimers.values()) clearTimeout(timer);
    this.#retryTimers.clear();
    try {
      this.#opts.listener.close();
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) throw e;
    }
    const stops: Promise<unknown>[] = [];
    if (this.#discovery) stops.push(this.#discovery.stop());
    for (const { session } of this.#sessions.values()) stops.push(session.close("closed", "bye"));
    for (const conn of this.#pending) conn.close();
    await Promise.allSettled(stops);
    await this.#acceptLoop;
    // Dials and handshakes in flight end by their own timeouts; do not wait for them all.
    await settleWithin(Promise.allSettled([...this.#tasks]), CLOSE_GRACE_MS, undefined);
    await settleWithin(
      Promise.allSettled([...this.#sessions.values()].map((s) => s.session.done)),
      CLOSE_GRACE_MS,
      undefined,
    );
    await this.#opts.history.close();
    await this.#opts.peers.close();
  }

  // ---------------------------------------------------------------- connections

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#opts.listener.accept();
      } catch (e) {
        if (this.#closing) return;
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
        // EMFILE and friends: log, pause briefly, keep serving.
        this.#log.warn(`accept failed: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      this.#track(this.#serveInbound(conn));
    }
  }

  /** The unauthenticated inbound connection to close for a newcomer (see #serveInbound). */
  #evictionVictim(): FramedConn | undefined {
    let busiest: string | undefined;
    let most = 0;
    for (const [address, n] of this.#pendingByAddress) {
      if (n > most) [busiest, most] = [address, n];
    }
    let oldest: FramedConn | undefined;
    for (const [conn, address] of this.#inboundPending) {
      if (address === busiest) return conn;
      oldest ??= conn;
    }
    return oldest;
  }

  async #serveInbound(raw: Deno.TcpConn): Promise<void> {
    const host = (raw.remoteAddr as Deno.NetAddr).hostname;
    const perAddress = this.#pendingByAddress.get(host) ?? 0;
    if (this.#closing) {
      raw.close();
      return;
    }
    if (perAddress >= this.#limits.maxPendingPerAddress) {
      this.#log.info(`refused a connection from ${host}: too many unauthenticated connections`);
      raw.close();
      return;
    }
    if (this.#connections >= this.#limits.maxConnections) {
      // Full. Connections that never finish their handshake (a flood from many addresses) must
      // not keep real peers out until they time out: one still unauthenticated makes room, the
      // oldest of the address that holds most of them (a flood's, not a lone real peer's).
      // Authenticated connections and sessions are never pushed out.
      const victim = this.#evictionVictim();
      if (victim === undefined) {
        this.#log.info(`refused a connection from ${host}: connection limit reached`);
        raw.close();
        return;
      }
      this.#inboundPending.delete(victim);
      victim.close();
      this.#log.info("connection limit reached: closed an unauthenticated connection");
    }
    this.#connections++;
    this.#pendingByAddress.set(host, perAddress + 1);
    const conn = new FramedConn(raw, { maxFrameSize: this.#limits.maxHandshakeFrameSize });
    this.#pending.add(conn);
    this.#inboundPending.set(conn, host);
    // The address keeps its slot until the session is up or refused (READY included), so one
    // address cannot hold more than its share of connections that never finish setting up.
    try {
      let hs: HandshakeResult;
      try {
        hs = await respondHandshake(conn, this.#opts.identity, {
          name: this.name,
          listenPort: this.port,
          timeoutMs: this.#limits.handshakeTimeoutMs,
        });
        // Authenticated: no longer one a newcomer may push out.
        this.#inboundPending.delete(conn);
      } catch (e) {
        this.#log.info(`handshake with ${host} failed: ${describe(e)}`);
        if (e instanceof HandshakeError && e.reason === "self") {
          // Our own dial (it reads only that we closed): #dial tells the user by this port.
          if (this.#selfDials.size >= 64) this.#selfDials.clear();
          // By address and port: another host cannot make a dial of ours look like this one
          // (its connection comes from its own address, whatever key its HELLO names).
          this.#selfDials.add(`${host} ${(raw.remoteAddr as Deno.NetAddr).port}`);
        }
        conn.close();
        this.#connections--;
        return;
      }
      try {
        await this.#admit(conn, hs);
      } catch (e) {
        this.#log.info(`session with ${host} refused: ${describe(e)}`);
        conn.close();
        this.#connections--;
      }
    } finally {
      this.#pending.delete(conn);
      this.#inboundPending.delete(conn);
      const n = (this.#pendingByAddress.get(host) ?? 1) - 1;
      if (n <= 0) this.#pendingByAddress.delete(host);
      else this.#pendingByAddress.set(host, n);
    }
  }

  /** Dials `host:port`, runs the handshake and registers the session. */
  async #dial(
    host: string,
    port: number,
    expect?: string,
  ): Promise<{ session: Session; fresh: boolean }> {
    if (this.#closing) throw new NodeError("shutting down");
    // Our own dials get a reserve above the limit that inbound connections fill, so strangers
    // filling our slots cannot stop us from reaching the peers we chose.
    if (this.#connections >= this.#limits.maxConnections + DIAL_RESERVE) {
      throw new NodeError("too many open connections");
    }
    this.#connections++;
    let conn: FramedConn | null = null;
    let local = "";
    try {
      const raw = await connectWithTimeout(host, port, this.#limits.connectTimeoutMs);
      const addr = raw.localAddr as Deno.NetAddr;
      local = `${addr.hostname} ${addr.port}`;
      conn = new FramedConn(raw, { maxFrameSize: this.#limits.maxHandshakeFrameSize });
      this.#pending.add(conn);
      const hs = await initiateHandshake(conn, this.#opts.identity, {
        name: this.name,
        listenPort: this.port,
        timeoutMs: this.#limits.handshakeTimeoutMs,
      });
      if (expect && hs.peerKey.fingerprint !== expect) {
        throw new NodeError(
          `${host}:${port} is now ${hs.peerName} (${hs.peerKey.fingerprint.slice(0, 16)}…), ` +
            `not the peer expected there`,
        );
      }
      return await this.#admit(conn, hs, { host, port });
    } catch (e) {
      conn?.close();
      this.#connections--;
      if (e instanceof NodeError) throw e;
      if (this.#selfDials.delete(local)) {
        throw new NodeError("that is this peer's own address");
      }
      throw new NodeError(`cannot connect to ${host}:${port}: ${describe(e)}`);
    } finally {
      // Pending until registered or refused: close() closes whatever is still setting up.
      if (conn) this.#pending.delete(conn);
    }
  }

  /**
   * Checks the authenticated peer against the pinned keys, proves the session keys, and makes
   * the session the peer's current one.
   */
  async #admit(
    conn: FramedConn,
    hs: HandshakeResult,
    dialed?: { host: string; port: number },
  ): Promise<{ session: Session; fresh: boolean }> {
    if (this.#closing) throw new NodeError("shutting down");
    const fp = hs.peerKey.fingerprint;
    const host = dialed?.host ?? conn.remote.hostname;
    const port = dialed?.port ?? (hs.peerListenPort || null);
    // As for announcements (#nameClash): while the pinned key is alive, anyone can present
    // another key under its name, and that must not hold the real peer's messages or ask the
    // user to trust it.
    const live = this.#liveHolder(hs.peerName, fp);
    if (live !== undefined) {
      const refusal =
        `refused a second key ${formatFingerprint(fp)} under the name ${hs.peerName} ` +
        `(from ${host}): ${hs.peerName} is online with its pinned key ` +
        formatFingerprint(live.fingerprint);
      this.#warnClash(fp, refusal);
      throw new NodeError(refusal);
    }
    const refused = this.#renameRefused(fp, hs.peerName);
    if (refused !== null) throw new NodeError(refused);
    if (!this.#checkTrust(hs.peerName, fp, hs.peerKey.spki, { host, port, heardOnly: false })) {
      throw new NodeError(
        `${hs.peerName} presented a new key ${formatFingerprint(fp)}; ` +
          `nothing is exchanged until you trust it (/trust ${hs.peerName} ${fp})`,
      );
    }
    conn.setMaxFrameSize(this.#limits.maxFrameSize);
    let session: Session;
    try {
      session = await Session.establish(conn, hs, {
        keepaliveMs: this.#limits.keepaliveMs,
        idleTimeoutMs: this.#limits.idleTimeoutMs,
        maxMessagesPerSecond: this.#limits.maxMessagesPerSecond,
        readyTimeoutMs: this.#limits.handshakeTimeoutMs,
      });
    } catch (e) {
      if (e instanceof SessionError) throw new NodeError(e.message);
      throw e;
    }
    if (this.#closing) {
      // READY came while we were shutting down: say goodbye instead of registering.
      await session.close("closed", "shutting down");
      throw new NodeError("shutting down");
    }
    this.#opts.peers.upsert({
      fingerprint: fp,
      name: hs.peerName,
      // The key again: a heard-only record may have been pruned while READY was on its way.
      spki: toBase64(hs.peerKey.spki),
      host,
      port,
      lastSeen: Date.now(),
      heardOnly: false,
    });
    const previous = this.#sessions.get(fp);
    if (previous && !previous.session.closed) {
      if (this.#keepExisting(previous, session)) {
        await session.close("replaced", "duplicate connection");
        this.#connections--;
        return { session: previous.session, fresh: false };
      }
      this.#sessions.delete(fp);
      this.#track(previous.session.close("replaced", "replaced by a newer connection"));
    }
    this.#register(session);
    return { session, fresh: true };
  }

  /**
   * The key that stands for a retired record now: its `retiredBy`, followed while that one was
   * retired too. Undefined when the chain ends at a record no longer known or has no link.
   */
  #successor(record: PeerRecord | undefined): string | undefined {
    const seen = new Set<string>();
    let at = record;
    while (at?.retired && at.retiredBy !== undefined && !seen.has(at.fingerprint)) {
      seen.add(at.fingerprint);
      at = this.#opts.peers.get(at.retiredBy);
      if (at !== undefined && !at.retired) return at.fingerprint;
    }
    return undefined;
  }

  /**
   * Two live sessions with one peer (both dialed at once, or a reconnect). Both ends must keep
   * the same one, whatever order they saw them in: of two young sessions, the one with the
   * smaller session id (a hash both ends share) stays. A session older than a few seconds is
   * more likely dead than duplicated (the peer restarted), so then the newer one wins.
   */
  #keepExisting(previous: { session: Session; since: number }, next: Session): boolean {
    if (Date.now() - previous.since > DUPLICATE_WINDOW_MS) return false;
    return previous.session.id < next.id;
  }

  #register(session: Session): void {
    const fp = session.peerFingerprint;
    this.#sessions.set(fp, { session, since: Date.now() });
    const retry = this.#retryTimers.get(fp);
    if (retry) {
      clearTimeout(retry.timer);
      this.#retryTimers.delete(fp);
    }
    session.start({
      onMessages: (messages) => this.#onMessages(session, messages),
      onAck: (ids) => this.#onAck(session, ids),
      onClose: (reason, detail) => this.#onClose(session, reason, detail),
    });
    this.#discovery?.markAlive(fp);
    this.#emit({ type: "connected", name: session.peerName, fingerprint: fp });
    this.#flush(fp);
  }

  #onClose(session: Session, reason: CloseReason, detail: string): void {
    const fp = session.peerFingerprint;
    this.#connections--;
    for (const m of this.#outbox.get(fp)?.values() ?? []) {
      if (m.sentOn === session) m.sentOn = null;
    }
    if (this.#sessions.get(fp)?.session !== session) return;
    this.#sessions.delete(fp);
    if (this.#closing) return;
    this.#log.info(`connection to ${session.peerName} closed: ${reason} (${detail})`);
    this.#emit({
      type: "disconnected",
      name: session.peerName,
      fingerprint: fp,
      reason: reason === "bye" ? "goodbye" : reason,
    });
    // Undelivered messages wait for the next session (the backoff keeps the retries cheap).
    this.#kick(fp);
  }

  /** Returns the live session to `fp`, dialing its last known address if needed. */
  #ensureSession(fp: string): Promise<Session | null> {
    const live = this.#sessions.get(fp)?.session;
    if (live && !live.closed) return Promise.resolve(live);
    const inFlight = this.#dialing.get(fp);
    if (inFlight) return inFlight;
    const record = this.#opts.peers.get(fp);
    const heard = this.#heard.get(fp);
    const host = heard?.host ?? record?.host;
    const port = heard?.port ?? record?.port;
    if (!host || !port || this.#closing) return Promise.resolve(null);
    const attempt = this.#dial(host, port, fp).then(
      (r) => {
        // Connected while closing: close() has closed the sessions it knew of, not this one.
        if (this.#closing) {
          this.#track(r.session.close("closed", "bye"));
          return null;
        }
        return r.session;
      },
      (e) => {
        this.#log.info(`cannot reach ${record?.name ?? fp.slice(0, 8)}: ${describe(e)}`);
        return null;
      },
    ).finally(() => this.#dialing.delete(fp));
    this.#dialing.set(fp, attempt);
    return attempt;
  }

  /**
   * Makes sure undelivered messages to `fp` get going: flushes them on a live session, or
   * dials, retrying with backoff while messages wait.
   */
  #kick(fp: string): void {
    if (this.#closing || (this.#outbox.get(fp)?.size ?? 0) === 0) return;
    if (this.#sessions.has(fp)) {
      this.#flush(fp);
      return;
    }
    const record = this.#opts.peers.get(fp);
    if (!record || record.retired || this.#heldByKeyChange(record)) return;
    if (this.#retryTimers.has(fp) || this.#dialing.has(fp)) return;
    this.#track(
      this.#ensureSession(fp).then((s) => {
        if (s === null) this.#scheduleRetry(fp);
      }),
    );
  }

  #scheduleRetry(fp: string): void {
    if (this.#closing || this.#retryTimers.has(fp)) return;
    const delay = Math.min(30_000, (this.#retryDelays.get(fp) ?? 500) * 2);
    this.#retryDelays.set(fp, delay);
    const timer = setTimeout(() => {
      this.#retryTimers.delete(fp);
      this.#kick(fp);
    }, delay);
    this.#retryTimers.set(fp, { timer, delay });
  }

  /**
   * Writes to the current session with `fp`, in outbox order, every writable message not yet on
   * it. Messages become writable in the order of the send() calls, so the first one that is not
   * yet ends the pass: send() writes it (and each one after it) as soon as it is. That keeps the
   * whole outbox on the session, so for `next` (a message just writable) only `next` itself
   * needs writing: no scan of the outbox per message under load.
   */
  #flush(fp: string, next?: OutMessage): void {
    const session = this.#sessions.get(fp)?.session;
    const box = this.#outbox.get(fp);
    if (!session || session.closed || !box) return;
    this.#retryDelays.delete(fp);
    if (next !== undefined && this.#flushed.get(fp) === session) {
      if (next.sentOn !== session) this.#write(fp, session, next);
      return;
    }
    for (const m of box.values()) {
      if (!m.writable) break;
      if (m.sentOn !== session) this.#write(fp, session, m);
    }
    this.#flushed.set(fp, session);
  }

  /** Runs `report` once the record of `m` is durable: at once if it is. */
  #whenDurable(m: OutMessage, report: () => void): void {
    if (m.waiting === null) report();
    else m.waiting.push(report);
  }

  #write(fp: string, session: Session, m: OutMessage): void {
    m.sentOn = session;
    m.written = session.sendMessage(m.id, m.text, m.sentAt).then(
      () => {
        // Acknowledged while the write was still going (a long outbox in one write): #onAck has
        // already said `sent` and `delivered`, and the row is delivered.
        if (this.#outbox.get(fp)?.get(m.id) !== m) return true;
        if (m.state === "queued") {
          m.state = "sent";
          this.#track(this.#opts.history.setState(m.id, "sent"));
        }
        this.#whenDurable(m, () => {
          if (m.shown) return;
          m.shown = true;
          this.#emit({ type: "sent", id: m.id, to: session.peerName, fingerprint: fp });
        });
        return true;
      },
      () => {
        if (m.sentOn === session) m.sentOn = null;
        if (this.#flushed.get(fp) === session) this.#flushed.delete(fp);
        return false;
      },
    );
  }

  async #onMessages(
    session: Session,
    messages: { id: string; text: string; sentAt: number }[],
  ): Promise<void> {
    const fp = session.peerFingerprint;
    const receivedAt = Date.now();
    const fresh = await Promise.all(messages.map((m) =>
      this.#opts.history.recordIncoming({
        id: m.id,
        peer: fp,
        peerName: session.peerName,
        text: m.text,
        sentAt: m.sentAt,
        receivedAt,
      })
    ));
    // Durable now: acknowledge everything, including retransmissions we already had.
    session.sendAck(messages.map((m) => m.id)).catch((e) =>
      this.#log.info(`ack to ${session.peerName} not sent: ${describe(e)}`)
    );
    this.#show(
      messages.filter((_, i) => fresh[i]).map((m) => ({
        id: m.id,
        peerName: session.peerName,
        peer: fp,
        text: m.text,
        sentAt: m.sentAt,
      })),
    );
    this.#discovery?.markAlive(fp);
  }

  #onAck(session: Session, ids: string[]): void {
    const fp = session.peerFingerprint;
    const box = this.#outbox.get(fp);
    const delivered: OutMessage[] = [];
    for (const id of ids) {
      const m = box?.get(id);
      if (m === undefined) continue;
      box!.delete(id);
      delivered.push(m);
    }
    // The events first: their output is then queued ahead of the state write's commit (an fsync
    // at full durability) instead of behind it. Showing `delivered` before our own record of it
    // is durable loses nothing: the peer has the message, and after a crash the outbox sends it
    // again, the peer acknowledges the duplicate, and the state is written then.
    for (const m of delivered) {
      // The peer can acknowledge a message before our own record of it is durable (it left once
      // committed), and the first messages of a long write before the write is done: the events
      // wait for the record, and `sent` still comes first.
      this.#whenDurable(m, () => {
        if (!m.shown) {
          m.shown = true;
          this.#emit({ type: "sent", id: m.id, to: session.peerName, fingerprint: fp });
        }
        this.#emit({ type: "delivered", id: m.id, to: session.peerName, fingerprint: fp });
      });
    }
    // One store write for the whole ACK (an ACK under load carries hundreds of ids), deferred to
    // share the next commit: losing it in a crash costs a resend the peer acknowledges again.
    if (delivered.length > 0) {
      this.#track(
        this.#opts.history.setStates(delivered.map((m) => m.id), "delivered", { deferred: true }),
      );
    }
    this.#discovery?.markAlive(fp);
  }

  // ---------------------------------------------------------------- trust

  /**
   * Trust on first use. Returns false (after a `key-changed` event) when `name` is pinned to a
   * different key: nothing is exchanged with the new key until the user trusts it.
   */
  #checkTrust(
    name: string,
    fp: string,
    spki: Uint8Array,
    where: { host: string | null; port: number | null; heardOnly: boolean },
  ): boolean {
    const { host, port } = where;
    const known = this.#opts.peers.get(fp);
    if (known && !known.retired) return true;
    const holders = this.#opts.peers.byName(name).filter((r) => !r.retired && r.fingerprint !== fp);
    if (holders.length === 0 && !known) {
      this.#opts.peers.upsert({
        fingerprint: fp,
        name,
        spki: toBase64(spki),
        host,
        port,
        firstSeen: Date.now(),
        lastSeen: Date.now(),
        heardOnly: where.heardOnly,
      });
      this.#log.info(`first contact with ${name}: key ${formatFingerprint(fp)}`);
      return true;
    }
    // A retired key back under a name nobody holds now: the key that replaced it is the pinned one.
    const old = holders[0]?.fingerprint ?? this.#successor(known) ?? fp;
    const pending = this.#pendingKeys.get(name);
    this.#pendingKeys.set(name, { name, fingerprint: fp, spki, host, port });
    // The event is the warning: each interface says it in its own way (headless: on stderr too).
    if (!pending || pending.fingerprint !== fp) {
      this.#emit({ type: "key-changed", name, old, new: fp });
    }
    return false;
  }

  /**
   * Messages to a name whose key changed wait for /trust. Not while the pinned key itself is
   * connected: they can only ever go to that key, so holding them would protect nothing and would
   * let anyone stall a conversation by claiming the name.
   */
  #heldByKeyChange(record: PeerRecord): boolean {
    const pending = this.#pendingKeys.get(record.name);
    if (pending === undefined || pending.fingerprint === record.fingerprint) return false;
    return !this.#sessions.has(record.fingerprint);
  }

  async #moveOutbox(from: string, to: string, name: string): Promise<void> {
    const box = this.#outbox.get(from);
    if (!box) return;
    const target = this.#box(to);
    // One at a time, each taken from the old key only once its copy is stored: an error (or a
    // shutdown) part way leaves every message in exactly one outbox.
    for (const m of [...box.values()]) {
      // A message is bound to the key it was written for: re-address it as a new message.
      const moved: OutMessage = {
        ...m,
        id: newMessageId(),
        peer: to,
        state: "queued",
        sentOn: null,
        writable: true,
        shown: false,
        written: null,
        waiting: null,
      };
      await this.#opts.history.recordOutgoing(
        { id: moved.id, peer: to, peerName: name, text: moved.text, sentAt: moved.sentAt },
        "queued",
      );
      target.set(moved.id, moved);
      // Not on the new key's session yet: the next pass writes it, in outbox order, before any
      // message sent after it.
      this.#flushed.delete(to);
      box.delete(m.id);
      await this.#opts.history.setState(m.id, "failed");
      this.#emit({ type: "queued", id: moved.id, to: name, fingerprint: to });
    }
    if (box.size === 0) this.#outbox.delete(from);
  }

  // ---------------------------------------------------------------- discovery

  #onHeard(p: HeardPeer, up: boolean): void {
    if (this.#closing) return;
    if (this.#nameClash(p)) return;
    if (this.#renameRefused(p.fingerprint, p.name) !== null) return;
    const isNew = this.#opts.peers.get(p.fingerprint) === undefined;
    const where = { host: p.host, port: p.port, heardOnly: true };
    if (!this.#checkTrust(p.name, p.fingerprint, p.spki, where)) return;
    const wasHeard = this.#heard.has(p.fingerprint);
    this.#heard.set(p.fingerprint, p);
    this.#opts.peers.upsert({
      fingerprint: p.fingerprint,
      name: p.name,
      host: p.host,
      port: p.port,
      lastSeen: p.lastSeen,
    });
    // Online now, so never the one forgotten.
    if (isNew) this.#pruneBook();
    if (up || !wasHeard) {
      this.#emit({
        type: "peer-up",
        name: p.name,
        fingerprint: p.fingerprint,
        host: p.host,
        port: p.port,
      });
    }
    if (!this.#sessions.has(p.fingerprint)) {
      // Heard again: retry at once instead of waiting for the backoff.
      const retry = this.#retryTimers.get(p.fingerprint);
      if (retry) {
        clearTimeout(retry.timer);
        this.#retryTimers.delete(p.fingerprint);
      }
      this.#kick(p.fingerprint);
    }
  }

  /**
   * An announcement under the name of a peer whose pinned key is alive right now (heard on the
   * LAN, or connected) is a name clash, not a key change: the peer still has its key. Anyone on
   * the LAN can sign such an announcement with a key of their own, so it must not raise a key
   * change (which holds every message to the real peer until /trust); it is ignored with a
   * warning. Once the pinned key is gone (timeout, goodbye), a new key under its name is treated
   * as a possible key change again.
   */
  #nameClash(p: HeardPeer): boolean {
    const live = this.#liveHolder(p.name, p.fingerprint);
    if (live === undefined) return false;
    this.#warnClash(
      p.fingerprint,
      `ignoring an announcement from ${p.host} that claims the name ${p.name} with key ` +
        `${formatFingerprint(p.fingerprint)}: ${p.name} is online with its pinned key ` +
        `${formatFingerprint(live.fingerprint)}`,
    );
    return true;
  }

  /**
   * A pinned key that now calls itself `name`: allowed, with a warning, when no other current key
   * holds that name; refused (the reason returned, warned once) when one does, since taking it
   * would make the key look like that peer's, to the user and to /trust. Null when allowed.
   */
  #renameRefused(fp: string, name: string): string | null {
    const known = this.#opts.peers.get(fp);
    if (known === undefined || known.retired || known.name === name) return null;
    const was = `${known.name} (key ${formatFingerprint(fp.slice(0, 16))}…)`;
    const holder = this.#opts.peers.byName(name).find((r) => !r.retired && r.fingerprint !== fp);
    if (holder === undefined) {
      // The same key, so the same peer; messages to its old name now reach it under the new one.
      this.#log.warn(`${was} now calls itself ${name}`);
      return null;
    }
    const refusal = `${was} now calls itself ${name}, the name of another key ` +
      `(${formatFingerprint(holder.fingerprint.slice(0, 16))}…): refused`;
    this.#warnClash(`${fp} ${name}`, refusal);
    return refusal;
  }

  /** Warns about a name clash, once per key (a fingerprint, or a fingerprint and a name). */
  #warnClash(key: string, warning: string): void {
    if (this.#clashWarned.has(key)) return;
    // Bounded: a flood of fresh keys must not grow memory; the worst case is a repeated warning.
    if (this.#clashWarned.size >= 1024) this.#clashWarned.clear();
    this.#clashWarned.add(key);
    this.#log.warn(warning);
  }

  /**
   * The pinned key of `name` when it is alive right now (heard on the LAN, or connected) and `fp`
   * is another key, not pinned itself: then `fp` under that name is a clash, not a key change.
   */
  #liveHolder(name: string, fp: string): PeerRecord | undefined {
    const known = this.#opts.peers.get(fp);
    // A key already pinned (two peers that share a name) is no clash: #checkTrust accepts it.
    if (known !== undefined && !known.retired) return undefined;
    return this.#opts.peers.byName(name).find((r) =>
      !r.retired && r.fingerprint !== fp &&
      (this.#heard.has(r.fingerprint) || this.#sessions.has(r.fingerprint))
    );
  }

  #onPeerDown(p: HeardPeer, reason: "timeout" | "goodbye"): void {
    if (!this.#heard.delete(p.fingerprint) || this.#closing) return;
    this.#emit({ type: "peer-down", name: p.name, fingerprint: p.fingerprint, reason });
    // Offline now: if it was only ever heard, it may be what has to go.
    this.#pruneBook();
  }

  /**
   * Bounds the peers known only from announcements. Never forgotten: peers online now (a peer's
   * pinned name protects it from clashing keys only while its record exists) and peers with
   * messages waiting.
   */
  #pruneBook(): void {
    const removed = this.#opts.peers.prune(
      this.#limits.maxHeardPeers,
      (fp) => this.#heard.has(fp) || this.#sessions.has(fp) || this.#outbox.has(fp),
    );
    if (removed.length > 0) {
      this.#log.info(
        `forgot ${removed.length} peer(s) only ever heard, not online (over ` +
          `${this.#limits.maxHeardPeers}): ${removed.map((r) => r.name).join(", ")}`,
      );
    }
  }

  // ---------------------------------------------------------------- helpers

  #box(fp: string): Map<string, OutMessage> {
    let box = this.#outbox.get(fp);
    if (!box) this.#outbox.set(fp, box = new Map());
    return box;
  }

  #track(p: Promise<unknown>): void {
    const tracked = p.catch((e) => this.#log.error(`internal error: ${describe(e)}`)).finally(
      () => this.#tasks.delete(tracked),
    );
    this.#tasks.add(tracked);
  }

  #emit(event: WithoutTs<NodeEvent>): void {
    const full = { ...event, ts: Date.now() } as NodeEvent;
    for (const l of this.#listeners.keys()) l(full);
  }

  /**
   * Shows stored incoming messages: emits `message` for each, records them as shown, then has
   * every listener that buffers its output write it at once. A process killed right after a
   * message was seen (its line read from stdout) never shows it again; the price is the few
   * microseconds between the record and the write, in which a kill leaves a recorded message
   * unshown (it stays in the history), and a kill while that write blocks (a reader slower than
   * we are, or gone). Messages stored and never recorded are shown at the next start (see
   * {@linkcode start}).
   */
  #show(
    messages: { id: string; peerName: string; peer: string; text: string; sentAt: number }[],
  ): void {
    // Nobody to show them to (a UI that has not subscribed yet): they stay unshown, for the next
    // start, rather than being recorded unseen.
    if (messages.length === 0 || this.#listeners.size === 0) return;
    // In slices, so that a write that blocks (a reader slower than we are, or gone) when the
    // process is killed can leave at most one slice recorded and not written.
    for (let i = 0; i < messages.length; i += SHOW_SLICE) {
      const slice = messages.slice(i, i + SHOW_SLICE);
      for (const m of slice) {
        this.#emit({
          type: "message",
          id: m.id,
          from: m.peerName,
          fingerprint: m.peer,
          text: m.text,
          sentAt: m.sentAt,
        });
      }
      // The lines are ready: the record and the write follow each other with nothing between.
      const ids = slice.map((m) => m.id);
      this.#track(this.#opts.history.markShown(ids));
      if (!this.#flushListeners()) {
        // Nobody saw them: they wait for the next start, with everything stored after them.
        this.#track(this.#opts.history.unmarkShown(ids));
        if (this.#listeners.size === 0) return;
      }
    }
  }

  /** Flushes every listener's output; drops those whose output is gone. True if one showed. */
  #flushListeners(): boolean {
    let shown = false;
    for (const [listener, { flush }] of [...this.#listeners]) {
      if (flush === undefined || flush()) shown = true;
      else this.#listeners.delete(listener);
    }
    return shown;
  }
}

/**
 * Messages shown per record-and-write step (see #show). Slices of one atomic pipe write (4 KiB,
 * 13 short messages) would hide fewer messages when a kill lands in a blocked write, but cost
 * about a tenth of the sustained rate (more records, writes and wake-ups of the reader).
 */
const SHOW_SLICE = 64;

/** How a listener's buffered output is written (see ChatNode.subscribe). */
export interface ListenerOutput {
  /** Writes what the listener buffered; false when the output is gone. */
  flush?: () => boolean;
}

/** Connections beyond maxConnections that only our own dials may use. */
const DIAL_RESERVE = 32;

/** Two sessions with one peer established within this window are duplicates, not a reconnect. */
const DUPLICATE_WINDOW_MS = 3_000;

/** How long close() waits for work in flight before closing the stores anyway. */
const CLOSE_GRACE_MS = 2_000;

/** How long send() waits for a connection before it answers `queued`. */
const SEND_WAIT_MS = 3_000;

/** Waits for `work` at most `ms`; then resolves with `late` (the work goes on). */
async function settleWithin<T, L>(work: Promise<T>, ms: number, late: L): Promise<T | L> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([work, new Promise<L>((r) => timer = setTimeout(() => r(late), ms))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Parses `host:port` (IPv6 as `[addr]:port`).
 *
 * @throws {NodeError} when the address is malformed.
 * @example
 * ```ts
 * parseAddress("127.0.0.1:5000"); // { host: "127.0.0.1", port: 5000 }
 * ```
 */
export function parseAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(address.trim()) ??
    /^([^:\s]+):(\d{1,5})$/.exec(address.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new NodeError(`"${address}" is not HOST:PORT (for example 192.168.1.20:5000)`);
  }
  return { host: m[1], port };
}

async function connectWithTimeout(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<Deno.TcpConn> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await Deno.connect({ hostname: host, port, signal: controller.signal });
  } catch (e) {
    if (controller.signal.aborted) throw new NodeError(`no answer within ${timeoutMs / 1000} s`);
    if (e instanceof Deno.errors.ConnectionRefused) {
      throw new NodeError("connection refused (is p2pchat running there, on that port?)");
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function describe(e: unknown): string {
  if (e instanceof HandshakeError) return `${e.reason}: ${e.message}`;
  if (e instanceof Error) return e.message;
  return String(e);
}

const encoder = new TextEncoder();

/** Is `text` over {@linkcode MAX_TEXT_BYTES} in UTF-8? Encodes it only when it might be. */
function overTextLimit(text: string): boolean {
  // A UTF-16 unit is at most 3 UTF-8 bytes (a surrogate pair, 2 units, is 4 bytes).
  if (text.length * 3 <= MAX_TEXT_BYTES) return false;
  return encoder.encode(text).length > MAX_TEXT_BYTES;
}

function toBase64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Two lists each in order of sending merged into one, oldest first (`a` first on ties). */
function mergeBySentAt<T extends { sentAt: number }>(a: readonly T[], b: readonly T[]): T[] {
  const out: T[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i].sentAt <= b[j].sentAt)) out.push(a[i++]);
    else out.push(b[j++]);
  }
  return out;
}
