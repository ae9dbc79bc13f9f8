/**
 * The chat history and outbox: an SQLite database (`chat_history.db`, via `node:sqlite`) whose
 * message bodies are Fernet tokens under a local history key.
 *
 * Writes are group-committed: every write requested in one turn of the event loop joins one
 * transaction, and each promise resolves only after the transaction holding its write has
 * committed and, at `full` durability, the WAL has been fsynced (on Deno's blocking thread pool,
 * not the event loop's thread). The format, the migrations and the
 * durability argument are in `docs/STORAGE.md`.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import { setImmediate } from "node:timers";
import { FernetSync, InvalidTokenError } from "../crypto/fernet_sync.ts";

/** Which way a message went: `in` was received from the peer, `out` was sent to it. */
export type Direction = "in" | "out";

/** Delivery state. Incoming messages are stored as `delivered` (we have them). */
export type MessageState = "queued" | "sent" | "delivered" | "failed";

/** One message as read back from the store. */
export interface StoredMessage {
  /** Message id, unique across both directions. */
  id: string;
  /** The peer's fingerprint (lowercase hex SHA-256 of its SPKI). */
  peer: string;
  /** The peer's display name when the message was stored ("" if unknown, e.g. migrated rows). */
  peerName: string;
  /** `in` (from the peer) or `out` (to the peer). */
  direction: Direction;
  /** The message text (decrypted). */
  text: string;
  /** When the sender sent it, ms since the epoch (the sender's clock). */
  sentAt: number;
  /** When we received it, ms since the epoch (our clock); null for outgoing or unknown. */
  receivedAt: number | null;
  /** Delivery state. */
  state: MessageState;
}

/** One conversation as listed by {@linkcode HistoryStore.conversations}. */
export interface Conversation {
  /** The peer's fingerprint. */
  peer: string;
  /** The most recent non-empty name stored for the peer ("" if none). */
  peerName: string;
  /** Number of messages in both directions. */
  count: number;
  /** Time of the last message (received time if known, else sent time), ms since the epoch. */
  lastAt: number;
}

/** Options of {@linkcode HistoryStore.open}. */
export interface HistoryStoreOptions {
  /** The history key: a Fernet key (url-safe base64 of 32 bytes). */
  key: string;
  /**
   * `full` (default): every write is fsynced before it resolves (off the event loop's thread),
   * so it survives power loss. `normal`: a commit
   * survives a crash or kill of the process but the last commits may be lost on power loss.
   */
  durable?: "full" | "normal";
}

/**
 * Thrown when the history cannot be used: the file cannot be opened, is not a (p2pchat history)
 * database, is corrupt, has a newer schema than this program knows, the key is wrong, or the store
 * is closed.
 */
export class StoreError extends Error {
  /**
   * Makes the error.
   *
   * @param message What went wrong, for the user.
   * @param options `cause`: the underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreError";
  }
}

/** The schema version this code writes (`PRAGMA user_version`). */
export const SCHEMA_VERSION = 4;

/** `PRAGMA application_id` of a p2pchat history database ("P2CH"). */
const APPLICATION_ID = 0x50324348;

/** Plaintext of the key check value kept in the meta table. */
const KEY_CHECK_TEXT = "p2pchat history key check";

const STATES: readonly MessageState[] = ["queued", "sent", "delivered", "failed"];
const DEFAULT_LIMIT = 50;
/** Longest a deferred write waits for another write to share its commit, in ms. */
export const DEFER_MS = 100;

/**
 * The tables of schema versions 2 and 3 (3 only adds the meta rows `shown_through`, `shown_above`).
 * Frozen, like every old schema here: the migration from version 1 creates exactly these, so they
 * are written out in full rather than shared with the current tables.
 */
const TABLES_V2 = `
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE messages (
  seq         INTEGER PRIMARY KEY,
  id          TEXT NOT NULL UNIQUE,
  peer        TEXT NOT NULL,
  peer_name   TEXT NOT NULL,
  direction   TEXT NOT NULL CHECK (direction IN ('in', 'out')),
  body        TEXT NOT NULL,
  sent_at     INTEGER NOT NULL,
  received_at INTEGER,
  state       TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'delivered', 'failed'))
);
CREATE INDEX messages_peer_seq ON messages (peer, seq);
CREATE INDEX messages_outbox ON messages (peer, seq)
  WHERE direction = 'out' AND state IN ('queued', 'sent');
`;

/**
 * The peers table and the messages table of schema version 4: a message names its peer by a small
 * integer, so the two indexes on (peer, seq) hold 1-2 byte keys instead of 64 hex digits, and its
 * direction and state are small integers too (see {@linkcode DIRECTION_CODE}, {@linkcode
 * STATE_CODE}), so the `delivered` update rewrites a row of the same size in place.
 */
const PEERS_AND_MESSAGES_V4 = `
CREATE TABLE peers (
  id          INTEGER PRIMARY KEY,
  fingerprint TEXT NOT NULL UNIQUE
);
CREATE TABLE messages (
  seq         INTEGER PRIMARY KEY,
  id          TEXT NOT NULL UNIQUE,
  peer        INTEGER NOT NULL REFERENCES peers (id),
  peer_name   TEXT NOT NULL,
  direction   INTEGER NOT NULL CHECK (direction IN (0, 1)),
  body        TEXT NOT NULL,
  sent_at     INTEGER NOT NULL,
  received_at INTEGER,
  state       INTEGER NOT NULL CHECK (state IN (0, 1, 2, 3))
);
CREATE INDEX messages_peer_seq ON messages (peer, seq);
CREATE INDEX messages_outbox ON messages (peer, seq)
  WHERE direction = 1 AND state IN (0, 1);
`;

/** How `messages.direction` stores a {@linkcode Direction} (version 4). */
const DIRECTION_CODE: Readonly<Record<Direction, number>> = { in: 0, out: 1 };
const DIRECTIONS: readonly Direction[] = ["in", "out"];
/** How `messages.state` stores a {@linkcode MessageState} (version 4; version 1 used the same). */
const STATE_CODE = Object.fromEntries(STATES.map((state, code) => [state, code])) as Readonly<
  Record<MessageState, number>
>;

/** The tables of schema version 4 (the current one). */
const TABLES = `
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
${PEERS_AND_MESSAGES_V4}`;

/** The columns of a {@linkcode Row}, from `messages m JOIN peers p ON p.id = m.peer`. */
const ROW_COLUMNS = `m.id AS id, p.fingerprint AS peer, m.peer_name AS peer_name,
  m.direction AS direction, m.body AS body, m.sent_at AS sent_at, m.received_at AS received_at,
  m.state AS state`;
const FROM_ROWS = "messages m JOIN peers p ON p.id = m.peer";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

type Op =
  | {
    kind: "out";
    id: string;
    peer: string;
    peerName: string;
    sentAt: number;
    state: MessageState;
    /** The text as a Fernet token under the history key. */
    body: string;
    done: PromiseWithResolvers<void>;
    committed?: () => void;
  }
  | {
    kind: "in";
    id: string;
    peer: string;
    peerName: string;
    sentAt: number;
    receivedAt: number;
    /** The text as a Fernet token under the history key. */
    body: string;
    done: PromiseWithResolvers<boolean>;
  }
  | { kind: "state"; id: string; state: MessageState; done: PromiseWithResolvers<void> }
  | { kind: "states"; ids: string[]; state: MessageState; done: PromiseWithResolvers<void> };

interface Batch {
  ops: Op[];
  /** Resolves (never rejects) once the batch has been committed or has failed. */
  settled: PromiseWithResolvers<void>;
}

/** A message row as read (with its peer's fingerprint joined in). */
interface Row {
  id: string;
  peer: string;
  peer_name: string;
  /** A {@linkcode DIRECTION_CODE}. */
  direction: number;
  body: string;
  sent_at: number;
  received_at: number | null;
  /** A {@linkcode STATE_CODE}. */
  state: number;
}

/**
 * Encrypted message history and outbox on SQLite.
 *
 * Reads that return promises ({@linkcode outbox}, {@linkcode history}) first wait for the writes
 * requested before them, so they see their caller's own writes. The synchronous reads
 * ({@linkcode has}, {@linkcode outboxPeers}, {@linkcode conversations}) see committed data only.
 *
 * @example
 * ```ts
 * const store = await HistoryStore.open("data/chat_history.db", { key: historyKey });
 * await store.recordOutgoing({ id, peer, peerName: "Bob", text: "hi", sentAt: Date.now() }, "sent");
 * await store.setState(id, "delivered");
 * const last = await store.history(peer, { limit: 20 });
 * await store.close();
 * ```
 */
export class HistoryStore {
  #db: DatabaseSync;
  #fernet: FernetSync;
  #path: string;
  #closed = false;
  #open: Batch | null = null;
  #runner: Promise<void> | null = null;
  /** Writes waiting to share the next commit (see `deferred` in {@linkcode setStates}). */
  #deferred: Op[] = [];
  #deferTimer: ReturnType<typeof setTimeout> | undefined;
  /** Incoming messages stored but not yet shown: id -> seq (see {@linkcode markShown}). */
  #unshown = new Map<string, number>();
  /** Every incoming message up to this seq has been shown (persisted as meta `shown_through`). */
  #shownThrough = 0;
  /** Seqs above {@linkcode #shownThrough} shown out of order (persisted as meta `shown_above`). */
  #shownAbove = new Set<number>();
  /** `shown_above` as last written. */
  #savedAbove = "[]";
  /** The largest seq stored. */
  #lastSeq = 0;
  #durable: "full" | "normal";
  /** Off-thread fsyncs of the WAL, in `full` durability (null in `normal`). */
  #walSync: WalSync | null;
  #closing: Promise<void> | null = null;
  /** Why the store stopped working on its own, if it did. */
  #failure: StoreError | null = null;

  #insert: StatementSync;
  #insertPeer: StatementSync;
  /** Peer fingerprint -> its id in the peers table (every row of it: it only grows). */
  #peerIds = new Map<string, number>();
  #update: StatementSync;
  #updateMany: StatementSync;
  #has: StatementSync;
  #seqOf: StatementSync;
  #incomingBetween: StatementSync;
  #last: StatementSync;
  #before: StatementSync;
  #outbox: StatementSync;
  #outboxPeers: StatementSync;
  #conversations: StatementSync;
  #saveShown: StatementSync;
  #byIds: StatementSync;

  private constructor(
    db: DatabaseSync,
    fernet: FernetSync,
    opts: { path: string; durable: "full" | "normal" },
  ) {
    this.#db = db;
    this.#fernet = fernet;
    this.#path = opts.path;
    this.#durable = opts.durable;
    // SQLite keeps the WAL beside the database file itself, behind any symbolic link to it.
    this.#walSync = opts.durable === "full" ? new WalSync(Deno.realPathSync(opts.path)) : null;
    const cols = "id, peer, peer_name, direction, body, sent_at, received_at, state";
    this.#insert = db.prepare(
      `INSERT INTO messages (${cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
    );
    this.#insertPeer = db.prepare(
      `INSERT INTO peers (fingerprint) VALUES (?)
       ON CONFLICT (fingerprint) DO UPDATE SET fingerprint = excluded.fingerprint RETURNING id`,
    );
    for (const r of db.prepare("SELECT id, fingerprint FROM peers").all()) {
      this.#peerIds.set(r.fingerprint as string, r.id as number);
    }
    // A delivered message never goes back to queued or sent: a late `sent` (its write finished
    // after the peer's ACK was handled) must not undo `delivered`.
    const forward = "NOT (state = 2 AND ?1 IN (0, 1))";
    this.#update = db.prepare(
      `UPDATE messages SET state = ?1 WHERE id = ?2 AND direction = 1 AND ${forward}`,
    );
    // One statement for a whole ACK: the ids travel as one JSON array parameter.
    this.#updateMany = db.prepare(
      `UPDATE messages SET state = ?1 WHERE direction = 1 AND ${forward}
       AND id IN (SELECT value FROM json_each(?2))`,
    );
    this.#has = db.prepare("SELECT 1 AS x FROM messages WHERE id = ?");
    this.#seqOf = db.prepare("SELECT seq, direction FROM messages WHERE id = ?");
    this.#incomingBetween = db.prepare(
      "SELECT seq FROM messages WHERE direction = 0 AND seq > ? AND seq <= ?",
    );
    this.#last = db.prepare(
      `SELECT ${ROW_COLUMNS} FROM ${FROM_ROWS} WHERE m.peer = ? ORDER BY m.seq DESC LIMIT ?`,
    );
    this.#before = db.prepare(
      `SELECT ${ROW_COLUMNS} FROM ${FROM_ROWS}
       WHERE m.peer = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?`,
    );
    this.#outbox = db.prepare(
      `SELECT ${ROW_COLUMNS} FROM messages m INDEXED BY messages_outbox
       JOIN peers p ON p.id = m.peer
       WHERE m.peer = ? AND m.direction = 1 AND m.state IN (0, 1) ORDER BY m.seq`,
    );
    this.#outboxPeers = db.prepare(
      `SELECT p.fingerprint AS peer FROM peers p
       WHERE EXISTS (SELECT 1 FROM messages m INDEXED BY messages_outbox
                     WHERE m.peer = p.id AND m.direction = 1 AND m.state IN (0, 1))
       ORDER BY p.fingerprint`,
    );
    this.#conversations = db.prepare(
      `SELECT p.fingerprint AS peer, c.count AS count,
              coalesce(m.received_at, m.sent_at) AS lastAt,
              coalesce((SELECT n.peer_name FROM messages n
                        WHERE n.peer = c.peer AND n.peer_name <> ''
                        ORDER BY n.seq DESC LIMIT 1), '') AS peerName
       FROM (SELECT peer, count(*) AS count, max(seq) AS last FROM messages GROUP BY peer) c
       JOIN messages m ON m.seq = c.last
       JOIN peers p ON p.id = c.peer
       ORDER BY c.last DESC`,
    );
    this.#saveShown = db.prepare("UPDATE meta SET value = ? WHERE key = ?");
    this.#byIds = db.prepare(
      `SELECT ${ROW_COLUMNS} FROM ${FROM_ROWS}
       WHERE m.id IN (SELECT value FROM json_each(?)) ORDER BY m.seq`,
    );
    const meta = (key: string) =>
      (db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as { value: string }).value;
    this.#shownThrough = Number(meta("shown_through"));
    this.#savedAbove = meta("shown_above");
    this.#shownAbove = new Set(JSON.parse(this.#savedAbove) as number[]);
    this.#lastSeq = (db.prepare("SELECT coalesce(max(seq), 0) AS n FROM messages").get() as {
      n: number;
    }).n;
    const waiting = db.prepare(
      "SELECT id, seq FROM messages WHERE seq > ? AND direction = 0 ORDER BY seq",
    ).all(this.#shownThrough) as { id: string; seq: number }[];
    for (const r of waiting) if (!this.#shownAbove.has(r.seq)) this.#unshown.set(r.id, r.seq);
  }

  /**
   * Opens (creating or migrating as needed) the history database at `path`.
   *
   * A new file is created with mode 0600 (names and fingerprints are stored in plaintext).
   *
   * @throws {StoreError} when the key is malformed or wrong, the file cannot be opened, is not a
   * p2pchat history database, is corrupt, or has a newer schema version than this program.
   * @example
   * ```ts
   * const store = await HistoryStore.open("chat_history.db", { key: generateKey() });
   * ```
   */
  static open(path: string, opts: HistoryStoreOptions): Promise<HistoryStore> {
    try {
      return Promise.resolve(HistoryStore.#openNow(path, opts));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  static #openNow(path: string, opts: HistoryStoreOptions): HistoryStore {
    let fernet: FernetSync;
    try {
      fernet = new FernetSync(opts.key);
    } catch (e) {
      throw new StoreError(`invalid history key: ${message(e)}`, { cause: e });
    }
    try {
      createPrivateFile(path);
    } catch (e) {
      fernet.close();
      throw e;
    }
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
    } catch (e) {
      fernet.close();
      throw new StoreError(`cannot open history database ${path}: ${message(e)}`, { cause: e });
    }
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      const version = pragmaNumber(db, "user_version");
      const appId = pragmaNumber(db, "application_id");
      if (appId !== 0 && appId !== APPLICATION_ID) {
        throw new StoreError(`${path} is not a p2pchat history database`);
      }
      if (version > SCHEMA_VERSION) {
        throw new StoreError(
          `${path} has history schema version ${version}, but this program knows only versions ` +
            `up to ${SCHEMA_VERSION}: use a newer p2pchat`,
        );
      }
      const mode = db.prepare("PRAGMA journal_mode = WAL").get()?.journal_mode;
      if (mode !== "wal") {
        throw new StoreError(`cannot switch ${path} to WAL mode (got ${String(mode)})`);
      }
      db.exec(`PRAGMA synchronous = ${opts.durable === "normal" ? "NORMAL" : "FULL"}`);
      db.exec("PRAGMA journal_size_limit = 8388608");
      // A file with a key check is checked before any migration: a wrong key changes nothing.
      if (version >= 2) checkKey(db, fernet, path);
      migrate(db, fernet, { path, version });
      if (version < 2) checkKey(db, fernet, path);
      // From here on SQLite never fsyncs in a commit: in `full` durability the store fsyncs the
      // WAL itself, off the event loop's thread, before it resolves a write (see WalSync).
      db.exec("PRAGMA synchronous = NORMAL");
      return new HistoryStore(db, fernet, { path, durable: opts.durable ?? "full" });
    } catch (e) {
      db.close();
      fernet.close();
      if (e instanceof StoreError) throw e;
      throw new StoreError(`cannot use history database ${path}: ${message(e)}`, { cause: e });
    }
  }

  /**
   * Why the store refuses writes now (it is closed, or it stopped after an fsync failed), or null
   * while it takes them. For a caller that acts on a write before it commits (sends the message
   * on), so that it does not act on a write that is bound to fail.
   *
   * @example
   * ```ts
   * if (store.refusal !== null) throw store.refusal;
   * ```
   */
  get refusal(): StoreError | null {
    return this.#closed ? this.#closedError() : null;
  }

  /**
   * Stores an outgoing message; resolves once it is durable (group commit). A duplicate id is a
   * no-op.
   *
   * `committed` is called as soon as the transaction holding the write has committed, before
   * the fsync that makes it durable (in `full` durability; at the same time in `normal`): the
   * row then survives a kill of this process, not yet a power cut, and the caller can send the
   * message on while the disk works. It is not called when the write fails. It runs inside the
   * commit and must not throw (an exception is rethrown as an uncaught error).
   *
   * @throws {StoreError} when the store is closed or the write fails.
   * @throws {RangeError} when `state` is not `queued` or `sent`, or a field has the wrong type
   * (ids and texts are strings, id and peer not empty, times integer ms).
   * @example
   * ```ts
   * const durable = store.recordOutgoing(row, "sent", { committed: () => write(row) });
   * await durable; // now say `sent`
   * ```
   */
  recordOutgoing(
    msg: { id: string; peer: string; peerName: string; text: string; sentAt: number },
    state: "queued" | "sent",
    opts: { committed?: () => void } = {},
  ): Promise<void> {
    if (state !== "queued" && state !== "sent") {
      return Promise.reject(
        new RangeError(`an outgoing message starts queued or sent, not ${state}`),
      );
    }
    const sealed = this.#prepare(msg);
    if ("error" in sealed) return Promise.reject(sealed.error);
    const done = Promise.withResolvers<void>();
    const { id, peer, peerName, sentAt } = msg;
    const { committed } = opts;
    this.#enqueue({
      kind: "out",
      id,
      peer,
      peerName,
      sentAt,
      state,
      body: sealed.body,
      done,
      committed,
    });
    return done.promise;
  }

  /**
   * Stores an incoming message (state `delivered`) unless its id is known; resolves true if it
   * was new, false if a duplicate (also within one batch), once durable.
   *
   * @throws {StoreError} when the store is closed or the write fails.
   * @throws {RangeError} when a field has the wrong type (see {@linkcode recordOutgoing}).
   */
  recordIncoming(
    msg: {
      id: string;
      peer: string;
      peerName: string;
      text: string;
      sentAt: number;
      receivedAt: number;
    },
  ): Promise<boolean> {
    const sealed = this.#prepare(msg);
    if ("error" in sealed) return Promise.reject(sealed.error);
    // No lookup first: `ON CONFLICT (id) DO NOTHING` and the row count tell a duplicate (also
    // one within the same batch). A retransmission is rare, so encrypting it again costs less
    // than a query for every message.
    const done = Promise.withResolvers<boolean>();
    const { id, peer, peerName, sentAt, receivedAt } = msg;
    this.#enqueue({ kind: "in", id, peer, peerName, sentAt, receivedAt, body: sealed.body, done });
    return done.promise;
  }

  /**
   * Changes the state of an outgoing message (e.g. sent -> delivered); resolves once durable.
   * Unknown ids and incoming messages are left alone. Writes apply in the order requested.
   *
   * @throws {StoreError} when the store is closed or the write fails.
   * @throws {RangeError} when `state` is not a {@linkcode MessageState}.
   */
  setState(id: string, state: MessageState): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    if (!STATES.includes(state)) {
      return Promise.reject(new RangeError(`unknown message state ${state}`));
    }
    const done = Promise.withResolvers<void>();
    this.#enqueue({ kind: "state", id, state, done });
    return done.promise;
  }

  /**
   * Changes the state of several outgoing messages at once (e.g. every id of one ACK) in one
   * write and one statement; resolves once durable. Same rules as {@linkcode setState}: unknown
   * ids and incoming messages are left alone, and writes apply in the order requested. An empty
   * list resolves at once.
   *
   * With `deferred`, the write does not ask for a commit of its own: it joins the next one any
   * other write asks for, or commits after {@linkcode DEFER_MS} at the latest (and before any read
   * that waits for writes, and on close). For a state whose loss in a crash costs nothing but a
   * repeat (a `delivered` mark: the outbox sends again and the peer acknowledges again), this
   * saves an fsync per acknowledgement.
   *
   * @throws {StoreError} when the store is closed or the write fails.
   * @throws {RangeError} when `state` is not a {@linkcode MessageState} or an id is not a string.
   * @example
   * ```ts
   * await store.setStates(["m1", "m2", "m3"], "delivered");
   * store.setStates(["m4"], "delivered", { deferred: true }); // rides along with the next write
   * ```
   */
  setStates(
    ids: readonly string[],
    state: MessageState,
    opts: { deferred?: boolean } = {},
  ): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    if (!STATES.includes(state)) {
      return Promise.reject(new RangeError(`unknown message state ${state}`));
    }
    if (!ids.every((id) => typeof id === "string")) {
      return Promise.reject(new RangeError("message ids must be strings"));
    }
    if (ids.length === 0) return Promise.resolve();
    const done = Promise.withResolvers<void>();
    this.#enqueue({ kind: "states", ids: [...ids], state, done }, opts.deferred);
    return done.promise;
  }

  /**
   * Records that incoming messages were shown to the user (written to stdout, printed): they
   * will not be returned by {@linkcode unshown} again. What is kept is a mark below which every
   * incoming message has been shown, plus the few shown out of order above it, so this costs one
   * small write per call, not one per id.
   *
   * The write is made at once, in its own transaction (not in the next group commit): the gap
   * between showing a message and recording it, in which a crash shows it again at the next
   * start, is then a few microseconds. It is committed without an fsync of its own (safe
   * against a crash of the process the moment it returns; the next durable write's fsync covers
   * it), so its
   * loss in a power cut only shows a message again. Unknown ids, outgoing ones and ids shown
   * already are ignored. If the write fails, the ids still count as shown in this process and
   * the next call writes them.
   *
   * @throws {StoreError} when the store is closed or the write fails.
   * @example
   * ```ts
   * if (await store.recordIncoming(msg)) {
   *   show(msg);
   *   await store.markShown([msg.id]);
   * }
   * ```
   */
  markShown(ids: readonly string[]): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    if (!ids.every((id) => typeof id === "string")) {
      return Promise.reject(new RangeError("message ids must be strings"));
    }
    try {
      this.#saveMarks(ids);
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.resolve();
  }

  /**
   * Takes back {@linkcode markShown} for messages whose display failed (the output went away
   * after they were recorded): {@linkcode unshown} returns them again, so the next start shows
   * them. Written at once, like `markShown`. Unknown ids, outgoing ones and ids not shown are
   * ignored.
   *
   * @throws {StoreError} when the store is closed or the write fails.
   * @example
   * ```ts
   * await store.markShown(ids);
   * if (!write(lines)) await store.unmarkShown(ids);
   * ```
   */
  unmarkShown(ids: readonly string[]): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    try {
      const back = new Map<string, number>();
      for (const id of ids) {
        if (typeof id !== "string" || this.#unshown.has(id)) continue;
        const row = this.#query(() => this.#seqOf.get(id)) as
          | { seq: number; direction: number }
          | undefined;
        if (row !== undefined && row.direction === DIRECTION_CODE.in) back.set(id, row.seq);
      }
      if (back.size === 0) return Promise.resolve();
      const taken = new Set(back.values());
      let through = this.#shownThrough;
      const lowest = Math.min(...taken);
      if (lowest <= through) {
        // The mark goes down below the lowest taken back; the others it covered stay shown.
        const covered = this.#query(() => this.#incomingBetween.all(lowest, through)) as {
          seq: number;
        }[];
        for (const { seq } of covered) if (!taken.has(seq)) this.#shownAbove.add(seq);
        through = lowest - 1;
      }
      for (const [id, seq] of back) {
        this.#unshown.set(id, seq);
        this.#shownAbove.delete(seq);
      }
      this.#writeMarks(through);
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.resolve();
  }

  /**
   * Moves `ids` out of the unshown set and writes the marks, synchronously.
   *
   * @throws {StoreError} when the write fails (the in-memory marks stay: they are true).
   */
  #saveMarks(ids: readonly string[]): void {
    for (const id of ids) {
      const seq = this.#unshown.get(id);
      if (seq === undefined) continue;
      this.#unshown.delete(id);
      this.#shownAbove.add(seq);
    }
    // Rows stored are committed (the node shows only what recordIncoming resolved), so the
    // newest seq and the unshown set describe the database as it is.
    let through = this.#lastSeq;
    for (const seq of this.#unshown.values()) through = Math.min(through, seq - 1);
    this.#writeMarks(Math.max(through, this.#shownThrough));
  }

  /**
   * Writes `through` and the out-of-order marks above it (if they changed), synchronously.
   *
   * @throws {StoreError} when the write fails.
   */
  #writeMarks(through: number): void {
    for (const seq of this.#shownAbove) if (seq <= through) this.#shownAbove.delete(seq);
    const above = JSON.stringify([...this.#shownAbove]);
    if (through === this.#shownThrough && above === this.#savedAbove) return;
    try {
      if (above === this.#savedAbove) {
        // The usual case (messages shown in order): one statement, its own transaction.
        this.#saveShown.run(String(through), "shown_through");
      } else {
        inTransaction(this.#db, () => {
          this.#saveShown.run(String(through), "shown_through");
          this.#saveShown.run(above, "shown_above");
        });
      }
      this.#shownThrough = through;
      this.#savedAbove = above;
    } catch (e) {
      throw new StoreError(`cannot record shown messages in ${this.#path}: ${message(e)}`, {
        cause: e,
      });
    }
  }

  /**
   * Incoming messages stored (so acknowledged) but never marked shown, oldest first: after a
   * crash between storing a message and showing it, these are what the user has not seen. Waits
   * for the writes requested before it.
   *
   * @throws {StoreError} when the store is closed or a body cannot be decrypted.
   */
  async unshown(): Promise<StoredMessage[]> {
    await this.#barrier();
    if (this.#unshown.size === 0) return [];
    const ids = JSON.stringify([...this.#unshown.keys()]);
    return this.#decode(this.#query(() => this.#byIds.all(ids) as unknown as Row[]));
  }

  /**
   * Outgoing messages to `peer` not yet delivered (queued or sent), oldest first (by insertion
   * order), after the writes already requested have committed.
   *
   * @throws {StoreError} when the store is closed or a body cannot be decrypted.
   */
  async outbox(peer: string): Promise<StoredMessage[]> {
    await this.#barrier();
    return this.#decode(this.#query(() => {
      const id = this.#peerIds.get(peer);
      return id === undefined ? [] : this.#outbox.all(id) as unknown as Row[];
    }));
  }

  /**
   * Fingerprints that have undelivered (queued or sent) outgoing messages, committed ones only.
   *
   * @throws {StoreError} when the store is closed or the database cannot be read.
   */
  outboxPeers(): string[] {
    return this.#query(() => this.#outboxPeers.all() as { peer: string }[]).map((r) => r.peer);
  }

  /**
   * The last `limit` (default 50) messages with `peer`, oldest first (insertion order); `before`
   * (a message id) pages back: only messages stored before that one. Waits for the writes already
   * requested.
   *
   * @throws {StoreError} when the store is closed, `before` is an unknown id, or a body cannot be
   * decrypted.
   * @throws {RangeError} when `limit` is not a non-negative integer.
   * @example
   * ```ts
   * const page = await store.history(peer, { limit: 20 });
   * const older = await store.history(peer, { limit: 20, before: page[0].id });
   * ```
   */
  async history(
    peer: string,
    opts: { limit?: number; before?: string } = {},
  ): Promise<StoredMessage[]> {
    const limit = opts.limit ?? DEFAULT_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new RangeError(`history limit must be a non-negative integer, not ${limit}`);
    }
    await this.#barrier();
    const before = opts.before;
    const rows = this.#query(() => {
      const id = this.#peerIds.get(peer);
      const at = before === undefined
        ? undefined
        : this.#seqOf.get(before) as { seq: number } | undefined;
      if (before !== undefined && at === undefined) {
        throw new StoreError(`unknown message id ${before}`);
      }
      if (id === undefined) return [];
      if (at === undefined) return this.#last.all(id, limit) as unknown as Row[];
      return this.#before.all(id, at.seq, limit) as unknown as Row[];
    });
    rows.reverse();
    return this.#decode(rows);
  }

  /**
   * Conversations: one row per peer fingerprint, most recent first (committed data only).
   *
   * @throws {StoreError} when the store is closed or the database cannot be read.
   */
  conversations(): Conversation[] {
    return this.#query(() => this.#conversations.all() as unknown as Conversation[]).map((r) => ({
      peer: r.peer,
      peerName: r.peerName,
      count: r.count,
      lastAt: r.lastAt,
    }));
  }

  /**
   * Is this id already stored (committed, in either direction)?
   *
   * @throws {StoreError} when the store is closed or the database cannot be read.
   */
  has(id: string): boolean {
    return this.#query(() => this.#has.get(id) !== undefined);
  }

  /** Flushes pending writes and closes the database. Closing twice is a no-op. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    if (this.#deferred.length > 0) this.#schedule();
    await this.#runner;
    await this.#walSync?.close();
    this.#db.close();
    this.#fernet.close();
  }

  #closedError(): StoreError {
    return this.#failure ?? new StoreError(`history database ${this.#path} is closed`);
  }

  /** Runs a synchronous read, turning SQLite errors (e.g. a corrupt page) into StoreError. */
  #query<T>(read: () => T): T {
    if (!this.#db.isOpen) throw this.#closedError();
    try {
      return read();
    } catch (e) {
      if (e instanceof StoreError) throw e;
      throw new StoreError(`cannot read ${this.#path}: ${message(e)}`, { cause: e });
    }
  }

  /** Checks a message to store and encrypts its text: its body, or what to reject with. */
  #prepare(
    msg: { id: string; peer: string; peerName: string; text: string; sentAt: number },
  ): { body: string } | { error: unknown } {
    if (this.#closed) return { error: this.#closedError() };
    const bad = invalidMessage(msg);
    if (bad !== null) return { error: bad };
    try {
      return { body: this.#seal(msg.id, msg.text) };
    } catch (e) {
      return { error: e };
    }
  }

  /**
   * Encrypts a body at once, when the write is requested: a batch then holds only finished rows.
   *
   * @throws {StoreError} when encryption fails.
   */
  #seal(id: string, text: string): string {
    try {
      return this.#fernet.encrypt(text);
    } catch (e) {
      throw new StoreError(`cannot encrypt message ${id}: ${message(e)}`, { cause: e });
    }
  }

  #enqueue(op: Op, deferred = false): void {
    if (deferred && this.#open === null) {
      this.#deferred.push(op);
      this.#deferTimer ??= setTimeout(() => {
        this.#deferTimer = undefined;
        this.#schedule();
      }, DEFER_MS);
      return;
    }
    this.#schedule().ops.push(op);
  }

  /** Opens a batch (deferred writes first: they were requested earlier) and schedules its commit. */
  #schedule(): Batch {
    if (this.#open === null) {
      this.#open = { ops: this.#deferred.splice(0), settled: Promise.withResolvers<void>() };
      clearTimeout(this.#deferTimer);
      this.#deferTimer = undefined;
    }
    // At the end of this turn of the event loop: everything requested in it joins the batch, and
    // output already asked for (socket writes, stdout lines) leaves before the commit, not after.
    this.#runner ??= new Promise<void>((resolve) =>
      setImmediate(() => {
        this.#run();
        resolve();
      })
    );
    return this.#open;
  }

  #run(): void {
    this.#runner = null;
    const batch = this.#open;
    if (batch === null) return;
    this.#open = null;
    this.#commit(batch);
    batch.settled.resolve();
  }

  /** Waits until the writes requested so far (deferred ones too) have committed or failed. */
  async #barrier(): Promise<void> {
    if (this.#deferred.length > 0) this.#schedule();
    if (this.#open !== null) await this.#open.settled.promise;
  }

  /** Commits one batch in one transaction; settles every op's promise; never throws. */
  #commit(batch: Batch): void {
    const ops = batch.ops;
    // Requested before an fsync failed, committed after it: refused like any later write.
    if (this.#failure !== null) {
      for (const op of ops) op.done.reject(this.#failure);
      return;
    }
    const results: (boolean | undefined)[] = [];
    // Incoming rows join the unshown set with the transaction, and leave it if it fails.
    const added: string[] = [];
    // Peers first named by this batch: forgotten again if it rolls back.
    const newPeers: string[] = [];
    let lastSeq = this.#lastSeq;
    try {
      this.#db.exec("BEGIN IMMEDIATE");
      for (const op of ops) {
        if (op.kind === "state") {
          this.#update.run(STATE_CODE[op.state], op.id);
          results.push(undefined);
        } else if (op.kind === "states") {
          const state = STATE_CODE[op.state];
          if (op.ids.length === 1) this.#update.run(state, op.ids[0]);
          else this.#updateMany.run(state, JSON.stringify(op.ids));
          results.push(undefined);
        } else {
          const incoming = op.kind === "in";
          let peer = this.#peerIds.get(op.peer);
          if (peer === undefined) {
            peer = (this.#insertPeer.get(op.peer) as { id: number }).id;
            this.#peerIds.set(op.peer, peer);
            newPeers.push(op.peer);
          }
          const r = this.#insert.run(
            op.id,
            peer,
            op.peerName,
            DIRECTION_CODE[op.kind],
            op.body,
            op.sentAt,
            incoming ? op.receivedAt : null,
            STATE_CODE[incoming ? "delivered" : op.state],
          );
          const fresh = Number(r.changes) === 1;
          if (fresh) {
            lastSeq = Number(r.lastInsertRowid);
            if (incoming) {
              this.#unshown.set(op.id, lastSeq);
              added.push(op.id);
            }
          }
          results.push(incoming ? fresh : undefined);
        }
      }
      this.#db.exec("COMMIT");
      this.#lastSeq = lastSeq;
    } catch (e) {
      for (const id of added) this.#unshown.delete(id);
      for (const fp of newPeers) this.#peerIds.delete(fp);
      let detail = message(e);
      try {
        if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      } catch (rollback) {
        detail += ` (and the rollback failed: ${message(rollback)})`;
      }
      const error = new StoreError(
        `cannot write ${ops.length} message(s) to ${this.#path}: ${detail}`,
        { cause: e },
      );
      for (const op of ops) op.done.reject(error);
      return;
    }
    for (const op of ops) {
      if (op.kind !== "out" || op.committed === undefined) continue;
      try {
        op.committed();
      } catch (e) {
        // A caller's bug: surfaced as an uncaught error, never at the price of the other writes.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
    const resolve = () =>
      ops.forEach((op, i) => {
        if (op.kind === "in") op.done.resolve(results[i] as boolean);
        else op.done.resolve();
      });
    if (this.#walSync === null) return resolve();
    this.#walSync.after(resolve, (e) => {
      const error = this.#fail(
        new StoreError(`cannot fsync ${this.#path}-wal: ${message(e)}`, { cause: e }),
      );
      for (const op of ops) op.done.reject(error);
    });
  }

  /**
   * Stops the store for good after an fsync failed: the kernel may have dropped the pages it
   * could not write, so a later fsync that succeeds proves nothing about them.
   */
  #fail(error: StoreError): StoreError {
    this.#failure ??= error;
    this.#closed = true;
    return this.#failure;
  }

  #decode(rows: Row[]): StoredMessage[] {
    return rows.map((r) => {
      let text: string;
      try {
        text = decoder.decode(this.#fernet.decrypt(r.body));
      } catch (e) {
        throw new StoreError(`cannot decrypt message ${r.id} in ${this.#path}`, { cause: e });
      }
      return {
        id: r.id,
        peer: r.peer,
        peerName: r.peer_name,
        direction: DIRECTIONS[r.direction],
        text,
        sentAt: r.sent_at,
        receivedAt: r.received_at,
        state: STATES[r.state],
      };
    });
  }
}

/**
 * Checks a message's fields before it joins a batch: one bad row would otherwise make the whole
 * transaction, and every other write in it, fail.
 */
function invalidMessage(
  msg: {
    id: string;
    peer: string;
    peerName: string;
    text: string;
    sentAt: number;
    receivedAt?: number;
  },
): RangeError | null {
  for (const field of ["id", "peer", "peerName", "text"] as const) {
    if (typeof msg[field] !== "string") return new RangeError(`message ${field} must be a string`);
  }
  if (msg.id === "" || msg.peer === "") {
    return new RangeError("message id and peer must not be empty");
  }
  for (const field of ["sentAt", "receivedAt"] as const) {
    const value = msg[field];
    if (value !== undefined && !Number.isSafeInteger(value)) {
      return new RangeError(
        `message ${field} must be an integer (ms since the epoch), not ${value}`,
      );
    }
  }
  return null;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Creates an empty database file readable by its owner only; an existing file is left alone. */
function createPrivateFile(path: string): void {
  try {
    Deno.openSync(path, { write: true, createNew: true, mode: 0o600 }).close();
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return;
    throw new StoreError(`cannot create history database ${path}: ${message(e)}`, { cause: e });
  }
}

function pragmaNumber(db: DatabaseSync, name: "user_version" | "application_id"): number {
  const row = db.prepare(`PRAGMA ${name}`).get() as Record<string, number> | undefined;
  return row?.[name] ?? 0;
}

/**
 * fsyncs a WAL file on Deno's blocking thread pool, so that the event loop goes on (reading
 * frames, encrypting, committing the next batch) while the disk works. SQLite runs with
 * `synchronous = NORMAL`, which is `FULL` without the WAL fsync after each commit; this adds that
 * fsync back. Commits made while an fsync runs wait for the next one, which covers them all: one
 * fsync at a time, as many commits per fsync as arrive meanwhile.
 */
class WalSync {
  #path: string;
  #file: Deno.FsFile | null = null;
  #running: Promise<void> | null = null;
  /** Why an fsync failed: every later one fails too (see HistoryStore#fail). */
  #failure: { error: unknown } | null = null;
  /** Callbacks of commits made since the running fsync started. */
  #waiting: { ok: () => void; failed: (e: unknown) => void }[] = [];

  constructor(dbPath: string) {
    this.#path = dbPath;
  }

  /** Calls `ok` once everything committed so far is on disk, or `failed` if it cannot be. */
  after(ok: () => void, failed: (e: unknown) => void): void {
    if (this.#failure !== null) return failed(this.#failure.error);
    this.#waiting.push({ ok, failed });
    this.#running ??= this.#drain();
  }

  /** Waits for the fsyncs asked for, then closes the file. */
  async close(): Promise<void> {
    await this.#running;
    this.#file?.close();
    this.#file = null;
  }

  async #drain(): Promise<void> {
    while (this.#waiting.length > 0) {
      const batch = this.#waiting.splice(0);
      try {
        await this.#sync();
      } catch (e) {
        this.#failure = { error: e };
        for (const w of batch.concat(this.#waiting.splice(0))) w.failed(e);
        break;
      }
      for (const w of batch) w.ok();
    }
    this.#running = null;
  }

  async #sync(): Promise<void> {
    if (this.#file === null) {
      // The WAL file exists once the connection has read the database. It was created by this
      // connection (SQLite removes it when the last one closes), so its directory entry is made
      // durable too, once, or a power cut could drop the whole file with the commits in it.
      // Write access without writing: Windows flushes a file only through a handle that may write.
      const file = await Deno.open(`${this.#path}-wal`, { read: true, write: true });
      try {
        // Windows cannot open a directory as a file, and NTFS journals the file's creation.
        if (Deno.build.os !== "windows") {
          using dir = await Deno.open(dirname(this.#path), { read: true });
          await dir.sync();
        }
      } catch (e) {
        file.close();
        throw e;
      }
      this.#file = file;
    }
    await this.#file.syncData();
  }
}

function inTransaction(db: DatabaseSync, work: () => void): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    work();
    db.exec("COMMIT");
  } catch (e) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw e;
  }
}

/** Brings the schema from `version` to {@linkcode SCHEMA_VERSION}, one step per transaction. */
function migrate(
  db: DatabaseSync,
  fernet: FernetSync,
  opts: { path: string; version: number },
): void {
  if (opts.version === 0) {
    const tables = db.prepare("SELECT count(*) AS n FROM sqlite_schema").get() as { n: number };
    if (tables.n !== 0) {
      throw new StoreError(`${opts.path} is not a p2pchat history database (no schema version)`);
    }
    const check = fernet.encrypt(encoder.encode(KEY_CHECK_TEXT));
    inTransaction(db, () => {
      db.exec(TABLES);
      db.prepare("INSERT INTO meta (key, value) VALUES ('key_check', ?)").run(check);
      db.exec("INSERT INTO meta (key, value) VALUES ('shown_through', '0'), ('shown_above', '[]')");
      db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    });
    return;
  }
  // One entry per step; each step commits its own transaction, ending with its user_version.
  const steps: Record<number, (db: DatabaseSync, fernet: FernetSync, path: string) => void> = {
    1: migrate1to2,
    2: migrate2to3,
    3: migrate3to4,
  };
  for (let v = opts.version; v < SCHEMA_VERSION; v++) {
    const step = steps[v];
    if (step === undefined) {
      throw new StoreError(`${opts.path}: no migration from history schema version ${v}`);
    }
    step(db, fernet, opts.path);
  }
}

/**
 * Version 1 had no meta table (so no key check), no peer name, no received time, and the state
 * as an integer (0 queued, 1 sent, 2 delivered, 3 failed). See docs/STORAGE.md.
 */
function migrate1to2(db: DatabaseSync, fernet: FernetSync, path: string): void {
  // Verify the key on an existing body before stamping a key check made with it.
  const sample = db.prepare("SELECT id, body FROM messages ORDER BY rowid LIMIT 1").get() as
    | { id: string; body: string }
    | undefined;
  if (sample !== undefined) {
    try {
      fernet.decrypt(sample.body);
    } catch (e) {
      if (!(e instanceof InvalidTokenError)) throw e;
      throw new StoreError(`wrong history key for ${path} (cannot decrypt message ${sample.id})`, {
        cause: e,
      });
    }
  }
  const check = fernet.encrypt(encoder.encode(KEY_CHECK_TEXT));
  try {
    inTransaction(db, () => {
      db.exec("ALTER TABLE messages RENAME TO messages_v1");
      db.exec("DROP INDEX IF EXISTS messages_peer");
      db.exec(TABLES_V2);
      db.prepare("INSERT INTO meta (key, value) VALUES ('key_check', ?)").run(check);
      db.exec(`
        INSERT INTO messages (id, peer, peer_name, direction, body, sent_at, received_at, state)
        SELECT id, peer, '', direction, body, sent_at, NULL,
               CASE state WHEN 0 THEN 'queued' WHEN 1 THEN 'sent'
                          WHEN 2 THEN 'delivered' WHEN 3 THEN 'failed' END
        FROM messages_v1 ORDER BY rowid;
        DROP TABLE messages_v1;
      `);
      db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      db.exec("PRAGMA user_version = 2");
    });
  } catch (e) {
    throw new StoreError(`cannot migrate ${path} from schema version 1 to 2: ${message(e)}`, {
      cause: e,
    });
  }
}

/**
 * Version 3 adds the meta rows `shown_through` (every incoming message up to that seq was shown)
 * and `shown_above` (a JSON array of the seqs above it shown out of order).
 * Whether the messages of an older database were shown is unknown; they count as shown (the
 * alternative, showing a whole history again, is worse).
 */
function migrate2to3(db: DatabaseSync, _fernet: FernetSync, path: string): void {
  try {
    inTransaction(db, () => {
      db.exec(
        `INSERT INTO meta (key, value)
         SELECT 'shown_through', CAST(coalesce(max(seq), 0) AS TEXT) FROM messages`,
      );
      db.exec("INSERT INTO meta (key, value) VALUES ('shown_above', '[]')");
      db.exec("PRAGMA user_version = 3");
    });
  } catch (e) {
    throw new StoreError(`cannot migrate ${path} from schema version 2 to 3: ${message(e)}`, {
      cause: e,
    });
  }
}

/**
 * Version 4 names each message's peer by an integer id into a new `peers` table instead of by its
 * fingerprint (64 hex digits), which made the two (peer, seq) indexes three times bigger than
 * their rows needed, and stores direction and state as small integers. Rows keep their seq (the
 * shown marks refer to it) and order.
 */
function migrate3to4(db: DatabaseSync, _fernet: FernetSync, path: string): void {
  try {
    inTransaction(db, () => {
      db.exec(`
        ALTER TABLE messages RENAME TO messages_v3;
        DROP INDEX messages_peer_seq;
        DROP INDEX messages_outbox;
        ${PEERS_AND_MESSAGES_V4}
        INSERT INTO peers (fingerprint)
          SELECT peer FROM messages_v3 GROUP BY peer ORDER BY min(seq);
        INSERT INTO messages (seq, id, peer, peer_name, direction, body, sent_at, received_at, state)
          SELECT m.seq, m.id, p.id, m.peer_name,
                 CASE m.direction WHEN 'in' THEN 0 WHEN 'out' THEN 1 END,
                 m.body, m.sent_at, m.received_at,
                 CASE m.state WHEN 'queued' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2
                              WHEN 'failed' THEN 3 END
          FROM messages_v3 m JOIN peers p ON p.fingerprint = m.peer ORDER BY m.seq;
        DROP TABLE messages_v3;
        PRAGMA user_version = 4;
      `);
    });
  } catch (e) {
    throw new StoreError(`cannot migrate ${path} from schema version 3 to 4: ${message(e)}`, {
      cause: e,
    });
  }
}

function checkKey(db: DatabaseSync, fernet: FernetSync, path: string): void {
  const row = db.prepare("SELECT value FROM meta WHERE key = 'key_check'").get() as
    | { value: string }
    | undefined;
  if (row === undefined) throw new StoreError(`${path} has no key check value`);
  let plain: string;
  try {
    plain = decoder.decode(fernet.decrypt(row.value));
  } catch (e) {
    if (!(e instanceof InvalidTokenError)) throw e;
    throw new StoreError(`wrong history key for ${path}`, { cause: e });
  }
  if (plain !== KEY_CHECK_TEXT) throw new StoreError(`wrong history key for ${path}`);
}
