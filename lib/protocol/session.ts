/**
 * A secure session: after the handshake, every frame is a Fernet token under the sender's
 * direction key, carrying a {@linkcode SessionFrame} with a strictly increasing sequence number.
 *
 * A replayed, reordered, forged or undecryptable frame closes the session. Keepalive pings keep
 * an idle connection open and detect a dead one.
 *
 * @module
 */

import { FernetSync, InvalidTokenError } from "../crypto/fernet_sync.ts";
import type { PeerKey } from "../crypto/identity.ts";
import { ConnectionClosedError, type FramedConn } from "../net/conn.ts";
import { FrameError } from "../net/frame.ts";
import { DecodeError, toHex } from "./codec.ts";
import type { HandshakeResult } from "./handshake.ts";
import {
  decodeSessionFrame,
  encodeChatMessage,
  encodeSessionFrame,
  FrameType,
  MAX_ACK_IDS,
  MessageBatch,
  type SessionFrame,
} from "./messages.ts";

/** Default interval of keepalive pings on a quiet session. */
export const DEFAULT_KEEPALIVE_MS = 15_000;
/**
 * MSG frame bytes (plaintext) that may wait in the connection's queue; more wait in the session.
 * Well below the connection's limit for a peer that does not read (16 MiB of tokens).
 */
const MSG_HIGH_WATER = 4 << 20;
/** Time a goodbye may take before the connection is closed anyway. */
const BYE_TIMEOUT_MS = 1_000;
/** Default time without any frame from the peer after which the session is dead. */
export const DEFAULT_IDLE_TIMEOUT_MS = 45_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Why a session ended. */
export type CloseReason =
  | "closed" // we closed it
  | "bye" // the peer said goodbye
  | "eof" // the peer's stream ended without goodbye
  | "idle" // nothing heard for too long
  | "stalled" // the peer has not read what we wrote for too long
  | "protocol" // a bad, replayed or reordered frame
  | "frame-too-large"
  | "rate"
  | "replaced"; // a newer session to the same peer took over

/** Thrown by {@linkcode Session.establish} when the peer never proves its keys. */
export class SessionError extends Error {
  /**
   * Makes the error.
   *
   * @param message What went wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "SessionError";
  }
}

/** A chat message received on a session. */
export interface IncomingMessage {
  /** Message id: 32 lowercase hex digits. */
  id: string;
  /** The message text, at most `MAX_TEXT_BYTES` (64 KiB) of UTF-8. */
  text: string;
  /** When the sender wrote it, ms since the epoch (the sender's clock). */
  sentAt: number;
}

/** Callbacks of a running session. */
export interface SessionHandlers {
  /**
   * Called for each burst of messages, in order. The session reads nothing more until the
   * returned promise settles: this is the back-pressure that bounds memory.
   */
  onMessages(messages: IncomingMessage[]): Promise<void> | void;
  /** Called with the ids the peer acknowledged. */
  onAck(ids: string[]): void;
  /** Called once when the session ends. */
  onClose(reason: CloseReason, detail: string): void;
}

/** Limits and timers of a session. */
export interface SessionOptions {
  /** Send a ping after this long without sending (default 15 s). */
  keepaliveMs?: number;
  /** Close after this long without receiving (default 45 s). */
  idleTimeoutMs?: number;
  /** Maximum chat messages per second accepted from the peer (default 100,000). */
  maxMessagesPerSecond?: number;
}

/**
 * A Fernet-protected, ordered message channel with one peer.
 *
 * @example
 * ```ts
 * const session = await Session.establish(conn, await initiateHandshake(conn, id, opts));
 * session.start({ onMessages: (m) => console.log(m), onAck: () => {}, onClose: () => {} });
 * await session.sendMessage(newMessageId(), "hello", Date.now());
 * ```
 */
export class Session {
  #conn: FramedConn;
  #send: FernetSync;
  #recv: FernetSync;
  #sendSeq = 0;
  #recvSeq = 0;
  #pongPending = false;
  /** Messages waiting for the end of the current task, to leave together in one MSG frame. */
  #batch: MessageBatch | null = null;
  #batchSent: PromiseWithResolvers<void> | null = null;
  /** Closed batches waiting for the connection to take them (see #pump). */
  #backlog: { batch: MessageBatch; sent: PromiseWithResolvers<void> }[] = [];
  /** Plaintext bytes of MSG frames handed to the connection and not yet written out. */
  #inFlight = 0;
  /** Messages sent in this session and not yet acknowledged (never below 0). */
  #unacked = 0;
  /** When the last ACK came, or the first message went out with none waiting for one. */
  #ackWaitSince = Date.now();
  #handlers: SessionHandlers | null = null;
  #closed = false;
  #lastSent = Date.now();
  #lastReceived = Date.now();
  #timer: ReturnType<typeof setInterval> | undefined;
  #keepaliveMs: number;
  #idleTimeoutMs: number;
  #rate: number;
  #tokens: number;
  #tokensAt = Date.now();
  #done: Promise<void> = Promise.resolve();

  /** The peer's display name from the handshake. */
  readonly peerName: string;
  /** The peer's authenticated key. */
  readonly peerKey: PeerKey;
  /** The peer's TCP listening port (0 if none). */
  readonly peerListenPort: number;
  /** True if we opened the connection. */
  readonly initiator: boolean;
  /** Remote address of the connection. */
  readonly remote: { hostname: string; port: number };
  /** The handshake's final transcript hash in hex: the same on both ends, unique per session. */
  readonly id: string;

  private constructor(
    conn: FramedConn,
    hs: HandshakeResult,
    send: FernetSync,
    recv: FernetSync,
    opts: SessionOptions,
  ) {
    this.#conn = conn;
    this.#send = send;
    this.#recv = recv;
    this.peerName = hs.peerName;
    this.peerKey = hs.peerKey;
    this.peerListenPort = hs.peerListenPort;
    this.initiator = hs.initiator;
    this.remote = conn.remote;
    this.id = toHex(hs.sessionId);
    this.#keepaliveMs = opts.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#rate = opts.maxMessagesPerSecond ?? 100_000;
    this.#tokens = this.#rate;
  }

  /**
   * Turns a finished handshake into a session: each side sends READY as its first encrypted
   * frame and waits for the peer's, which proves the peer derived the same keys.
   *
   * @throws {SessionError} when the peer's READY does not arrive in time or does not decrypt.
   */
  static async establish(
    conn: FramedConn,
    hs: HandshakeResult,
    opts: SessionOptions & { readyTimeoutMs?: number } = {},
  ): Promise<Session> {
    const session = new Session(
      conn,
      hs,
      new FernetSync(hs.sendKey),
      new FernetSync(hs.recvKey),
      opts,
    );
    const timer = setTimeout(() => conn.close(), opts.readyTimeoutMs ?? 10_000);
    try {
      await session.#write({ type: FrameType.READY, seq: 0, sentAt: Date.now() });
      const payload = await conn.read();
      if (payload === null) throw new SessionError("peer closed before proving its session keys");
      const frame = session.#open(payload);
      if (frame.type !== FrameType.READY) throw new SessionError("expected READY");
    } catch (e) {
      conn.close();
      session.#closeKeys();
      if (e instanceof SessionError) throw e;
      throw new SessionError(`session setup failed: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    return session;
  }

  /** True once the session has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The peer's fingerprint. */
  get peerFingerprint(): string {
    return this.peerKey.fingerprint;
  }

  /** Resolves when the read loop has finished after {@linkcode start}. */
  get done(): Promise<void> {
    return this.#done;
  }

  /** Starts the read loop and keepalive timer; `handlers` get everything from now on. */
  start(handlers: SessionHandlers): void {
    if (this.#handlers) throw new Error("session already started");
    this.#handlers = handlers;
    const tick = Math.max(50, Math.min(this.#keepaliveMs, this.#idleTimeoutMs) / 3);
    this.#timer = setInterval(() => this.#onTick(), tick);
    this.#done = this.#readLoop();
  }

  /**
   * Sends a chat message; resolves once it was handed to the operating system. Messages leave in
   * call order. Those sent during one task (one turn of the event loop) travel together in one
   * MSG frame, as many as fit: under load one token carries many messages, and a lone message
   * waits for nothing.
   *
   * @throws {RangeError} at once for a bad id or time, or a text over the size limit.
   * @throws {ConnectionClosedError} when the session is closed or the write fails.
   */
  sendMessage(id: string, text: string, sentAt: number): Promise<void> {
    if (this.#closed) return Promise.reject(new ConnectionClosedError("session closed"));
    let entry: Uint8Array;
    try {
      entry = encodeChatMessage({ id, text, sentAt });
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#batch !== null && !this.#batch.fits(entry)) this.#sendBatch();
    if (this.#batch === null || this.#batchSent === null) {
      const batch = new MessageBatch();
      this.#batch = batch;
      this.#batchSent = Promise.withResolvers<void>();
      queueMicrotask(() => {
        if (this.#batch === batch) this.#sendBatch();
      });
    }
    this.#batch.add(entry);
    return this.#batchSent.promise;
  }

  /**
   * Acknowledges durably stored messages (in frames of up to 4096 ids).
   *
   * @throws {ConnectionClosedError} when the session is closed or the write fails.
   */
  sendAck(ids: string[]): Promise<void> {
    const frames: Promise<void>[] = [];
    for (let i = 0; i < ids.length; i += MAX_ACK_IDS) {
      const chunk = ids.slice(i, i + MAX_ACK_IDS);
      // At once: the peer waits for it, and what follows it here (showing the messages) need not
      // come first.
      frames.push(
        this.#queue({ type: FrameType.ACK, seq: 0, sentAt: Date.now(), ids: chunk }, { now: true }),
      );
    }
    return Promise.all(frames).then(() => {});
  }

  /** Says goodbye (best effort) and closes. Idempotent. */
  async close(reason: CloseReason = "closed", detail = "closed by us"): Promise<void> {
    if (this.#closed) return;
    if (reason === "closed" || reason === "replaced") {
      // A peer that stopped reading must not hold up our exit: the goodbye gets one second.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const bye = this.#queue({ type: FrameType.BYE, seq: 0, sentAt: Date.now(), reason: detail });
      try {
        await Promise.race([bye, new Promise((r) => timer = setTimeout(r, BYE_TIMEOUT_MS))]);
      } catch (e) {
        if (!(e instanceof ConnectionClosedError)) throw e;
      } finally {
        clearTimeout(timer);
      }
      bye.catch(() => {/* reported by the race above, or moot once the connection closes */});
    }
    this.#finish(reason, detail);
  }

  #queue(frame: SessionFrame, opts: { now?: boolean } = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new ConnectionClosedError("session closed"));
    // Messages asked for earlier leave first: frames keep the order of the calls.
    this.#sendBatch();
    let plain: Uint8Array;
    try {
      // Encode before taking the sequence number: a frame that cannot be encoded (a caller bug)
      // must not leave a gap the peer would take for a dropped frame.
      plain = encodeSessionFrame({ ...frame, seq: this.#sendSeq + 1 });
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#seal(plain, opts);
  }

  /** Sends the waiting messages, if any, as one MSG frame (after the backlog, if any). */
  #sendBatch(): void {
    const batch = this.#batch;
    const sent = this.#batchSent;
    if (batch === null || sent === null) return;
    this.#batch = null;
    this.#batchSent = null;
    if (this.#closed) {
      sent.reject(new ConnectionClosedError("session closed"));
      return;
    }
    this.#backlog.push({ batch, sent });
    this.#pump();
  }

  /**
   * Hands backlogged MSG frames to the connection while less than {@linkcode MSG_HIGH_WATER}
   * bytes of them wait there. A peer that reads slowly (or a whole outbox sent at once) then
   * waits here, in order, and never reaches the connection's limit for peers that do not read
   * at all, which would close the session and start the same flood over after reconnecting.
   */
  #pump(): void {
    while (this.#backlog.length > 0 && this.#inFlight < MSG_HIGH_WATER && !this.#closed) {
      const { batch, sent } = this.#backlog.shift()!;
      const plain = batch.encode(this.#sendSeq + 1, Date.now());
      if (this.#unacked === 0) this.#ackWaitSince = Date.now();
      this.#unacked += batch.length;
      this.#inFlight += plain.length;
      this.#seal(plain, { now: true }).then(
        () => {
          this.#inFlight -= plain.length;
          sent.resolve();
          this.#pump();
        },
        (e) => {
          this.#inFlight -= plain.length;
          sent.reject(e);
        },
      );
    }
  }

  /** Takes the next sequence number (already in `plain`), encrypts and writes. */
  #seal(plain: Uint8Array, opts: { now?: boolean } = {}): Promise<void> {
    this.#sendSeq++;
    // Encryption is synchronous and the connection keeps the order of writes (coalescing a
    // burst of frames into one system call), so frames leave in sequence order.
    this.#lastSent = Date.now();
    return this.#conn.write(encoder.encode(this.#send.encrypt(plain)), opts);
  }

  async #write(frame: SessionFrame): Promise<void> {
    await this.#conn.write(encoder.encode(this.#send.encrypt(encodeSessionFrame(frame))));
  }

  #open(payload: Uint8Array): SessionFrame {
    // No TTL: order and freshness come from sequence numbers under per-session keys, not from
    // clocks, so LAN peers with skewed clocks still talk.
    return this.#accept(this.#recv.decrypt(decoder.decode(payload)));
  }

  async #readLoop(): Promise<void> {
    try {
      while (!this.#closed) {
        const batch = await this.#conn.readBatch();
        if (batch === null) {
          this.#finish("eof", "peer closed the connection");
          return;
        }
        const messages: IncomingMessage[] = [];
        for (const payload of batch) {
          // A handler of an earlier frame may have closed the session (and its keys).
          if (this.#closed) return;
          const frame = this.#open(payload);
          switch (frame.type) {
            case FrameType.MSG:
              for (const m of frame.messages) messages.push(m);
              break;
            case FrameType.ACK:
              this.#unacked = Math.max(0, this.#unacked - frame.ids.length);
              this.#ackWaitSince = Date.now();
              this.#handlers!.onAck(frame.ids);
              break;
            case FrameType.PING:
              // One PONG answers any number of PINGs still waiting: a peer that floods pings
              // and does not read cannot make us queue replies without end.
              if (this.#pongPending) break;
              this.#pongPending = true;
              this.#queue({ type: FrameType.PONG, seq: 0, sentAt: Date.now() }).then(
                () => this.#pongPending = false,
                (e) => this.#onSendError(e),
              );
              break;
            case FrameType.PONG:
              break;
            case FrameType.BYE:
              if (messages.length) await this.#handlers!.onMessages(messages);
              this.#finish("bye", frame.reason || "peer said goodbye");
              return;
            case FrameType.READY:
              throw new DecodeError("READY after setup");
          }
        }
        if (messages.length) {
          await this.#throttle(messages.length);
          await this.#handlers!.onMessages(messages);
        }
      }
    } catch (e) {
      if (e instanceof FrameError) this.#finish("frame-too-large", e.message);
      else if (e instanceof InvalidTokenError || e instanceof DecodeError) {
        this.#finish("protocol", `rejected frame: ${e.message}`);
      } else if (e instanceof ConnectionClosedError) this.#finish("eof", e.message);
      else {
        // Not the peer's fault (e.g. a store error in a handler): contain it to this session.
        this.#finish("protocol", `session failed: ${(e as Error).stack ?? e}`);
      }
    }
  }

  #accept(plain: Uint8Array): SessionFrame {
    const frame = decodeSessionFrame(plain);
    if (frame.seq !== this.#recvSeq) {
      throw new DecodeError(
        `sequence ${frame.seq}, expected ${this.#recvSeq}: replayed or reordered frame`,
      );
    }
    this.#recvSeq++;
    this.#lastReceived = Date.now();
    return frame;
  }

  async #throttle(count: number): Promise<void> {
    const now = Date.now();
    this.#tokens = Math.min(this.#rate, this.#tokens + (now - this.#tokensAt) * this.#rate / 1000);
    this.#tokensAt = now;
    this.#tokens -= count;
    if (this.#tokens < 0) {
      const waitMs = Math.ceil(-this.#tokens * 1000 / this.#rate);
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }

  #onTick(): void {
    const now = Date.now();
    if (now - this.#lastReceived > this.#idleTimeoutMs) {
      this.#finish("idle", `nothing heard for ${Math.round((now - this.#lastReceived) / 1000)} s`);
      return;
    }
    // A peer that keeps talking (PINGs) but stops reading or storing would hold our messages
    // forever: pacing keeps them from ever reaching the connection's limit for peers that do not
    // read, and a few may sit in the socket buffers. A peer that reads, however slowly, acks.
    if (this.#unacked > 0 && now - this.#ackWaitSince > this.#idleTimeoutMs) {
      this.#finish(
        "stalled",
        `${this.#unacked} message(s) not acknowledged for ` +
          `${Math.round((now - this.#ackWaitSince) / 1000)} s`,
      );
      return;
    }
    if (now - this.#lastSent >= this.#keepaliveMs) {
      this.#queue({ type: FrameType.PING, seq: 0, sentAt: now }).catch((e) => this.#onSendError(e));
    }
  }

  #onSendError(e: unknown): void {
    // A failed background write (ping, pong) means the connection is gone.
    this.#finish("eof", `write failed: ${(e as Error).message ?? e}`);
  }

  #closeKeys(): void {
    this.#send.close();
    this.#recv.close();
  }

  #finish(reason: CloseReason, detail: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const { sent } of this.#backlog.splice(0)) {
      sent.reject(new ConnectionClosedError("session closed"));
    }
    clearInterval(this.#timer);
    this.#conn.close();
    this.#closeKeys();
    this.#handlers?.onClose(reason, detail);
  }
}
