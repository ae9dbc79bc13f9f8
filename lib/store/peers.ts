/**
 * The peer book: every peer ever known, with its pinned key, kept in `peers.json`.
 *
 * The whole book lives in memory; changes are written back atomically (temporary file in the same
 * directory, fsync, rename), coalesced so the file is written at most a few times a second. A file
 * that cannot be read as a valid book is renamed aside and the book starts empty.
 *
 * @module
 */

// node:crypto for a synchronous SHA-256: `upsert` is synchronous and must check that a pinned key
// matches its fingerprint before accepting it; WebCrypto's digest is asynchronous only.
import { createHash } from "node:crypto";

/** Version of the JSON document this code writes and reads. */
export const PEER_BOOK_VERSION = 1;

/** Default delay between a change and the write that saves it, in ms. */
export const DEFAULT_SAVE_DELAY_MS = 200;

/**
 * Delay before saving a change of `lastSeen` alone, in ms. Every announcement heard moves a
 * peer's `lastSeen`; saving each at once meant an fsync'd rewrite of the file five times a second
 * on a busy LAN, for a field that only tells the user roughly when a peer was last around.
 */
export const LAST_SEEN_SAVE_DELAY_MS = 30_000;

/** One known peer. */
export interface PeerRecord {
  /** Lowercase hex SHA-256 of the SPKI DER: the peer's identity. */
  fingerprint: string;
  /** Name it last used (a label only). */
  name: string;
  /** Base64 of its SPKI DER: the pinned key. */
  spki: string;
  /** Last address it was heard from or connected at, if any. */
  host: string | null;
  /** Last TCP port it announced or was reached at, if any. */
  port: number | null;
  /** First time we knew of it, ms since the epoch. */
  firstSeen: number;
  /** Last time we heard from it, ms since the epoch. */
  lastSeen: number;
  /** Set when another key took this peer's name after a key change the user accepted. */
  retired?: boolean;
  /**
   * The fingerprint of the key the user accepted in place of this one, when it was retired (absent
   * in records retired before the field existed).
   */
  retiredBy?: string;
  /**
   * Set while the peer is only known from its announcements: no session, no message, no trust
   * decision yet. Such records may be pruned ({@linkcode PeerBook.prune}); the flag is cleared at
   * first contact and never set again. Absent in files from before the flag: those count as
   * contacted.
   */
  heardOnly?: boolean;
}

/** Options of {@linkcode PeerBook.open}. */
export interface PeerBookOptions {
  /** Told about a corrupt file set aside or a background write that failed. */
  onWarning?: (message: string) => void;
  /** Delay between a change and its write, in ms (default {@linkcode DEFAULT_SAVE_DELAY_MS}). */
  saveDelayMs?: number;
  /**
   * Delay before writing changes of `lastSeen` alone, in ms (default
   * {@linkcode LAST_SEEN_SAVE_DELAY_MS}; never shorter than `saveDelayMs`).
   */
  lastSeenSaveDelayMs?: number;
}

/** Thrown by {@linkcode PeerBook} for a refused record, a closed book or a failed write. */
export class PeerBookError extends Error {
  /**
   * Makes the error.
   *
   * @param message What went wrong.
   * @param options The underlying error, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PeerBookError";
  }
}

/**
 * Known peers, kept in a JSON file.
 *
 * @example
 * ```ts
 * const book = await PeerBook.open("./data/peers.json", { onWarning: console.error });
 * book.upsert({ fingerprint, name: "Bob", spki: spkiDer.toBase64(), host: "192.168.1.7", port: 5001 });
 * console.log(book.byName("Bob")[0].lastSeen);
 * await book.close();
 * ```
 */
export class PeerBook {
  #path: string;
  #saveDelayMs: number;
  #lastSeenSaveDelayMs: number;
  #onWarning?: (message: string) => void;
  #records = new Map<string, PeerRecord>();
  #dirty = false;
  /** Set when a pending change is more than a `lastSeen` update: saved after the short delay. */
  #urgent = false;
  #closed = false;
  #timer?: ReturnType<typeof setTimeout>;
  #timerDue = Infinity;
  #writing?: Promise<void>;

  private constructor(path: string, opts: PeerBookOptions) {
    this.#path = path;
    this.#saveDelayMs = opts.saveDelayMs ?? DEFAULT_SAVE_DELAY_MS;
    this.#lastSeenSaveDelayMs = Math.max(
      this.#saveDelayMs,
      opts.lastSeenSaveDelayMs ?? LAST_SEEN_SAVE_DELAY_MS,
    );
    this.#onWarning = opts.onWarning;
  }

  /**
   * Opens the book at `path`; a missing file is an empty book. A file that is not a valid book
   * (unparsable JSON, wrong version, a bad record) is renamed to `<path>.corrupt-<ms>`, reported
   * with `onWarning`, and the book starts empty.
   *
   * @throws {PeerBookError} when the file exists but cannot be read, or cannot be set aside.
   */
  static async open(path: string, opts: PeerBookOptions = {}): Promise<PeerBook> {
    const book = new PeerBook(path, opts);
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return book;
      throw new PeerBookError(`cannot read ${path}: ${errorMessage(e)}`, { cause: e });
    }
    let records: PeerRecord[];
    try {
      records = parseBook(text);
    } catch (e) {
      const aside = `${path}.corrupt-${Date.now()}`;
      try {
        await Deno.rename(path, aside);
      } catch (renameError) {
        throw new PeerBookError(`cannot set aside corrupt ${path}: ${errorMessage(renameError)}`, {
          cause: renameError,
        });
      }
      book.#warn(`${path} is not a valid peer book (${errorMessage(e)}); moved to ${aside}`);
      return book;
    }
    for (const record of records) book.#records.set(record.fingerprint, record);
    return book;
  }

  /** The record of a fingerprint, or `undefined`. */
  get(fingerprint: string): PeerRecord | undefined {
    const record = this.#records.get(fingerprint);
    return record && { ...record };
  }

  /** Records with this exact name: non-retired first, then most recently seen first. */
  byName(name: string): PeerRecord[] {
    return [...this.#records.values()]
      .filter((r) => r.name === name)
      .sort((a, b) =>
        Number(a.retired ?? false) - Number(b.retired ?? false) || b.lastSeen - a.lastSeen
      )
      .map((r) => ({ ...r }));
  }

  /** Every record, in the order they were first added. */
  all(): PeerRecord[] {
    return [...this.#records.values()].map((r) => ({ ...r }));
  }

  /**
   * Adds a peer or merges fields into a known one, and schedules a save. A new peer needs `name`
   * and `spki`; `host` and `port` default to `null`, `firstSeen` and `lastSeen` to now.
   *
   * @throws {PeerBookError} when the book is closed, a field is invalid, a new peer lacks its name
   * or key, or `spki` does not hash to `fingerprint` (a pinned key never changes under a
   * fingerprint).
   */
  upsert(rec: Partial<PeerRecord> & { fingerprint: string }): PeerRecord {
    if (this.#closed) throw new PeerBookError("the peer book is closed");
    const existing = this.#records.get(rec.fingerprint);
    const now = Date.now();
    const merged: PeerRecord = {
      fingerprint: rec.fingerprint,
      name: rec.name ?? existing?.name ?? "",
      spki: rec.spki ?? existing?.spki ?? "",
      host: rec.host !== undefined ? rec.host : existing?.host ?? null,
      port: rec.port !== undefined ? rec.port : existing?.port ?? null,
      firstSeen: rec.firstSeen ?? existing?.firstSeen ?? now,
      lastSeen: rec.lastSeen ?? existing?.lastSeen ?? now,
    };
    const retired = rec.retired ?? existing?.retired;
    if (retired !== undefined) merged.retired = retired;
    // Meaningful only while retired: trusting the key again clears it.
    const retiredBy = rec.retiredBy ?? existing?.retiredBy;
    if (retired === true && retiredBy !== undefined) merged.retiredBy = retiredBy;
    // Heard-only until the first contact, then contacted for good.
    const heardOnly = existing === undefined
      ? rec.heardOnly === true
      : existing.heardOnly === true && rec.heardOnly !== false;
    if (heardOnly) merged.heardOnly = true;
    if (existing === undefined && (rec.name === undefined || rec.spki === undefined)) {
      throw new PeerBookError(`new peer ${rec.fingerprint} needs a name and a key`);
    }
    const problem = checkRecord(merged) ??
      (existing !== undefined && merged.spki !== existing.spki
        ? "the key differs from the one pinned under this fingerprint"
        : undefined);
    if (problem !== undefined) throw new PeerBookError(`refused peer record: ${problem}`);
    this.#records.set(merged.fingerprint, merged);
    this.#dirty = true;
    if (existing === undefined || !onlyLastSeenMoved(existing, merged)) this.#urgent = true;
    this.#schedule();
    return { ...merged };
  }

  /**
   * Bounds the heard-only records (peers only known from their announcements) to
   * `maxHeardOnly`, keeping the ones known longest: ranked by `firstSeen`, oldest first (ties in
   * the order they were added), those beyond the first `maxHeardOnly` are removed, most recently
   * first seen first, except those `keep` protects (e.g. peers online right now). A protected
   * record beyond the bound stays, over the bound, until a later call finds it unprotected; it
   * never pushes an older record out. Without a bound, anyone on the LAN signing announcements
   * with fresh keys would grow the book, and `peers.json`, without end; with this order such a
   * flood evicts itself, and cannot evict an offline peer we knew before it (whose name it could
   * then pin to its own key, making the real peer's return look like a key change).
   *
   * @returns the records removed, most recently first seen first
   * @throws {PeerBookError} when the book is closed.
   * @example
   * ```ts
   * book.prune(1024, (fp) => online.has(fp));
   * ```
   */
  prune(maxHeardOnly: number, keep: (fingerprint: string) => boolean): PeerRecord[] {
    if (this.#closed) throw new PeerBookError("the peer book is closed");
    // Not lastSeen: a flood is seen last, so evicting by it pushed out the offline peers instead.
    // firstSeen is our clock when the peer was first heard (no announcement carries it), so a
    // peer cannot backdate it. Sorting is stable, so records first seen in the same millisecond
    // keep the order they were added in.
    const heardOnly = [...this.#records.values()].filter((r) => r.heardOnly === true)
      .sort((a, b) => a.firstSeen - b.firstSeen);
    if (heardOnly.length <= maxHeardOnly) return [];
    // Only the newcomers beyond the bound are candidates: evicting older records in place of
    // protected newcomers would let a flood that stays online push out the peers known before it.
    const removed = heardOnly.slice(Math.max(0, maxHeardOnly))
      .filter((r) => !keep(r.fingerprint))
      .reverse();
    for (const r of removed) this.#records.delete(r.fingerprint);
    if (removed.length > 0) {
      this.#dirty = this.#urgent = true;
      this.#schedule();
    }
    return removed.map((r) => ({ ...r }));
  }

  /**
   * Writes pending changes now (and waits for a write in progress).
   *
   * @throws {PeerBookError} when the write fails; the changes stay pending.
   */
  async flush(): Promise<void> {
    // A write may be under way; wait for it (its failure is reported by whoever started it),
    // then write what came after it.
    while (this.#writing !== undefined) await this.#writing.catch(() => {});
    this.#disarm();
    if (this.#dirty) await this.#write();
  }

  /**
   * Flushes and stops: no timer is left, further upserts throw.
   *
   * @throws {PeerBookError} when the final write fails.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  /**
   * Arms the save timer (the long delay when only `lastSeen` moved), unless it is armed to fire
   * sooner or a write is under way (that write re-arms it).
   */
  #schedule(): void {
    if (this.#closed || this.#writing !== undefined) return;
    const delay = this.#urgent ? this.#saveDelayMs : this.#lastSeenSaveDelayMs;
    // The monotonic clock: a step of the wall clock must not keep a real change waiting 30 s.
    const due = performance.now() + delay;
    if (this.#timer !== undefined && this.#timerDue <= due) return;
    this.#disarm();
    this.#timerDue = due;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerDue = Infinity;
      if (this.#dirty) this.#write().catch((e) => this.#warn(errorMessage(e)));
    }, delay);
  }

  #disarm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerDue = Infinity;
  }

  /** One atomic write of the whole book; re-arms the timer if changes came in meanwhile. */
  #write(): Promise<void> {
    this.#dirty = this.#urgent = false;
    const text = JSON.stringify(
      { version: PEER_BOOK_VERSION, peers: [...this.#records.values()] },
      null,
      2,
    ) + "\n";
    const writing = writeAtomic(this.#path, text).then(() => {
      this.#writing = undefined;
      // Changes made during the write: save them after another delay.
      if (this.#dirty) this.#schedule();
    }, (e) => {
      this.#writing = undefined;
      // Not re-armed: a broken disk would mean a write and a warning every delay. The next
      // change, flush() or close() tries again.
      this.#dirty = this.#urgent = true;
      throw new PeerBookError(`cannot save ${this.#path}: ${errorMessage(e)}`, { cause: e });
    });
    this.#writing = writing;
    return writing;
  }

  #warn(message: string): void {
    if (this.#onWarning === undefined) return;
    try {
      this.#onWarning(message);
    } catch (e) {
      // The warning channel itself is broken: nothing left to report to but the console.
      console.error("peers: onWarning failed:", e, "while reporting:", message);
    }
  }
}

/** True when `after` differs from `before` in `lastSeen` alone. */
function onlyLastSeenMoved(before: PeerRecord, after: PeerRecord): boolean {
  return before.name === after.name && before.spki === after.spki && before.host === after.host &&
    before.port === after.port && before.firstSeen === after.firstSeen &&
    before.retired === after.retired && before.retiredBy === after.retiredBy &&
    before.heardOnly === after.heardOnly;
}

/** Writes `text` to `path` atomically: a temporary file beside it, fsync, rename, mode 0600. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash >= 0 ? path.slice(0, slash) || "/" : ".";
  const temp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID()}`;
  const file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
  try {
    try {
      const bytes = new TextEncoder().encode(text);
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    // The umask cannot widen 0600, but an odd umask could narrow it; chmod makes it exact.
    await Deno.chmod(temp, 0o600);
    await Deno.rename(temp, path);
  } catch (e) {
    await Deno.remove(temp).catch(() => {/* the rename may have happened; the error above wins */});
    throw e;
  }
  // Make the rename itself durable: fsync the directory entry. Windows cannot open a directory
  // as a file, and its rename is already journaled by NTFS.
  if (Deno.build.os === "windows") return;
  const dirHandle = await Deno.open(dir, { read: true });
  try {
    await dirHandle.sync();
  } finally {
    dirHandle.close();
  }
}

/** Parses and validates a peer book document; throws an Error saying what is wrong. */
function parseBook(text: string): PeerRecord[] {
  const doc: unknown = JSON.parse(text);
  if (!isObject(doc)) throw new Error("not a JSON object");
  if (doc.version !== PEER_BOOK_VERSION) throw new Error(`unsupported version ${doc.version}`);
  if (!Array.isArray(doc.peers)) throw new Error("peers is not an array");
  const seen = new Set<string>();
  const records: PeerRecord[] = [];
  for (const raw of doc.peers) {
    if (!isObject(raw)) throw new Error("a peer is not an object");
    const record: PeerRecord = {
      fingerprint: raw.fingerprint as string,
      name: raw.name as string,
      spki: raw.spki as string,
      host: raw.host as string | null,
      port: raw.port as number | null,
      firstSeen: raw.firstSeen as number,
      lastSeen: raw.lastSeen as number,
    };
    if (raw.retired !== undefined) record.retired = raw.retired as boolean;
    if (raw.retiredBy !== undefined) record.retiredBy = raw.retiredBy as string;
    if (raw.heardOnly !== undefined) record.heardOnly = raw.heardOnly as boolean;
    const problem = checkRecord(record);
    if (problem !== undefined) throw new Error(`peer ${String(raw.fingerprint)}: ${problem}`);
    if (seen.has(record.fingerprint)) throw new Error(`peer ${record.fingerprint} twice`);
    seen.add(record.fingerprint);
    records.push(record);
  }
  return records;
}

/** Field checks for a record; returns the problem, or `undefined`. Types are checked at run time. */
function checkRecord(r: PeerRecord): string | undefined {
  if (typeof r.fingerprint !== "string" || !/^[0-9a-f]{64}$/.test(r.fingerprint)) {
    return "fingerprint is not 64 lowercase hex digits";
  }
  if (typeof r.name !== "string" || r.name.length === 0 || r.name.length > 256) {
    return "name is not a non-empty string";
  }
  if (typeof r.spki !== "string") return "key is not a string";
  let spki: Uint8Array;
  try {
    spki = Uint8Array.fromBase64(r.spki);
  } catch {
    return "key is not base64"; // the SyntaxError says no more than this
  }
  // One text per key: a pinned key compares equal as a string only in canonical form.
  if (spki.toBase64() !== r.spki) return "key is not canonical base64";
  if (spki.length === 0 || createHash("sha256").update(spki).digest("hex") !== r.fingerprint) {
    return "key does not match the fingerprint";
  }
  if (r.host !== null && (typeof r.host !== "string" || r.host.length === 0)) {
    return "host is not a string or null";
  }
  if (r.port !== null && !(Number.isInteger(r.port) && r.port >= 1 && r.port <= 65535)) {
    return "port is not 1-65535 or null";
  }
  if (!Number.isSafeInteger(r.firstSeen) || r.firstSeen < 0) return "firstSeen is not a time";
  if (!Number.isSafeInteger(r.lastSeen) || r.lastSeen < 0) return "lastSeen is not a time";
  if (r.retired !== undefined && typeof r.retired !== "boolean") return "retired is not boolean";
  if (
    r.retiredBy !== undefined &&
    (typeof r.retiredBy !== "string" || !/^[0-9a-f]{64}$/.test(r.retiredBy) ||
      r.retiredBy === r.fingerprint || r.retired !== true)
  ) {
    return "retiredBy is not another fingerprint of a retired record";
  }
  if (r.heardOnly !== undefined && typeof r.heardOnly !== "boolean") {
    return "heardOnly is not boolean";
  }
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
