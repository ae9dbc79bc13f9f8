/**
 * The plaintext inside every session frame (protocol version 2). Pure code.
 *
 * ```
 * u8 type | u64 seq | u64 sentAt (ms) | type-specific body
 *   READY: empty
 *   MSG:   u16 n | n x (16-byte id | u64 sentAt (ms) | u32 length | UTF-8 text)
 *   ACK:   n x 16-byte ids
 *   PING / PONG: empty
 *   BYE:   UTF-8 reason
 * ```
 *
 * A MSG frame carries a batch: every message the sender had ready at once, so that under load one
 * Fernet token (one encryption, one decryption, one HMAC) serves many messages.
 *
 * @module
 */

import { BinaryReader, BinaryWriter, DecodeError, fromHex, toHex, toUtf8, utf8 } from "./codec.ts";

/** Largest chat message text, in UTF-8 bytes. */
export const MAX_TEXT_BYTES = 64 * 1024;
/** Largest number of ids in one ACK frame. */
export const MAX_ACK_IDS = 4096;
/** Largest number of messages in one MSG frame. */
export const MAX_BATCH_MESSAGES = 1024;
/**
 * A MSG frame's messages stop at this many encoded bytes; a single message may exceed it (up to
 * {@linkcode MAX_TEXT_BYTES} of text), but it then travels alone.
 */
export const BATCH_BYTES = 64 * 1024;
/** Length of a message id in bytes (shown as 32 hex digits). */
export const MESSAGE_ID_BYTES = 16;

const FRAME_HEADER_BYTES = 1 + 8 + 8;
const ENTRY_HEADER_BYTES = MESSAGE_ID_BYTES + 8 + 4;
/** The largest session frame plaintext: one message of the largest text, alone in its MSG. */
const MAX_PLAINTEXT_BYTES = FRAME_HEADER_BYTES + 2 + ENTRY_HEADER_BYTES + MAX_TEXT_BYTES;

/**
 * Length of the largest session frame on the wire: the Fernet token (base64url of version,
 * timestamp, IV, PKCS7-padded ciphertext and HMAC) of the largest plaintext. A frame size limit
 * below it could not carry every message.
 */
export const MAX_SESSION_FRAME_BYTES = 4 *
  Math.ceil((1 + 8 + 16 + 16 * (Math.floor(MAX_PLAINTEXT_BYTES / 16) + 1) + 32) / 3);

/** One chat message as it travels in a MSG frame. */
export interface ChatMessage {
  /** 32 lowercase hex digits (see {@linkcode newMessageId}). */
  id: string;
  /** The text, at most {@linkcode MAX_TEXT_BYTES} of UTF-8. */
  text: string;
  /** When it was written, ms since the epoch. */
  sentAt: number;
}

/** Session frame types. */
export const FrameType = {
  READY: 1,
  MSG: 2,
  ACK: 3,
  PING: 4,
  PONG: 5,
  BYE: 6,
} as const;

/** One decoded session frame. */
export type SessionFrame =
  | { type: typeof FrameType.READY; seq: number; sentAt: number }
  | { type: typeof FrameType.MSG; seq: number; sentAt: number; messages: ChatMessage[] }
  | { type: typeof FrameType.ACK; seq: number; sentAt: number; ids: string[] }
  | { type: typeof FrameType.PING; seq: number; sentAt: number }
  | { type: typeof FrameType.PONG; seq: number; sentAt: number }
  | { type: typeof FrameType.BYE; seq: number; sentAt: number; reason: string };

/**
 * A fresh message id: 32 lowercase hex digits, the first 12 the time in ms, the other 20 random
 * (as in UUIDv7: 80 random bits per millisecond never collide in practice).
 *
 * Why the time first: both peers keep a unique index on message ids, and purely random ids land
 * on a different index page each, so a commit of a few hundred messages rewrote as many pages
 * (in SQLite, two thirds of the cost of storing a message). Ids made one after another now sit
 * side by side. The time is no secret: every message carries its `sent_at` anyway.
 *
 * @example
 * ```ts
 * newMessageId(); // "019adf3c5e21" + 20 random hex digits
 * ```
 */
export function newMessageId(): string {
  // One buffer for every id (synchronous from start to end): no allocation but the string.
  const bytes = crypto.getRandomValues(newIdBytes);
  // 48 bits of ms reach the year 10889; written big-endian so that ids sort by time.
  const ms = Date.now();
  const high = Math.floor(ms / 2 ** 32);
  bytes[0] = high >>> 8;
  bytes[1] = high;
  newIdView.setUint32(2, ms >>> 0);
  return bytes.toHex();
}

const newIdBytes = new Uint8Array(MESSAGE_ID_BYTES);
const newIdView = new DataView(newIdBytes.buffer);

/**
 * Is `id` a well-formed message id?
 *
 * @example
 * ```ts
 * isMessageId(newMessageId()); // true
 * ```
 */
export function isMessageId(id: string): boolean {
  return /^[0-9a-f]{32}$/.test(id);
}

/**
 * Encodes a session frame's plaintext.
 *
 * @throws {RangeError} for text over {@linkcode MAX_TEXT_BYTES}, a bad id, too many ids or
 * messages, or several messages over {@linkcode BATCH_BYTES} together.
 * @example
 * ```ts
 * const bytes = encodeSessionFrame({ type: FrameType.PING, seq: 3, sentAt: Date.now() });
 * ```
 */
export function encodeSessionFrame(frame: SessionFrame): Uint8Array {
  const w = new BinaryWriter(64).u8(frame.type).u64(frame.seq).u64(frame.sentAt);
  switch (frame.type) {
    case FrameType.MSG: {
      const n = frame.messages.length;
      if (n === 0 || n > MAX_BATCH_MESSAGES) {
        throw new RangeError(`a MSG carries 1 to ${MAX_BATCH_MESSAGES} messages, not ${n}`);
      }
      const entries = frame.messages.map(encodeChatMessage);
      // What decodeSessionFrame refuses must not leave here either (see MessageBatch).
      const bytes = entries.reduce((sum, e) => sum + e.length, 0);
      if (n > 1 && bytes > BATCH_BYTES) {
        throw new RangeError(
          `a MSG of ${n} messages holds ${bytes} bytes; the limit is ${BATCH_BYTES}`,
        );
      }
      w.u16(n);
      for (const entry of entries) w.raw(entry);
      break;
    }
    case FrameType.ACK:
      if (frame.ids.length === 0 || frame.ids.length > MAX_ACK_IDS) {
        throw new RangeError("an ACK carries 1 to 4096 ids");
      }
      for (const id of frame.ids) w.raw(idBytes(id));
      break;
    case FrameType.BYE:
      w.raw(toUtf8(frame.reason.slice(0, 200)));
      break;
  }
  return w.finish();
}

/**
 * Decodes a session frame's plaintext.
 *
 * @throws {DecodeError} for an unknown type, a truncated frame or invalid fields, among them a
 * MSG of several messages whose entries (as {@linkcode encodeChatMessage} makes them) total more
 * than {@linkcode BATCH_BYTES}.
 */
export function decodeSessionFrame(bytes: Uint8Array): SessionFrame {
  const r = new BinaryReader(bytes);
  const type = r.u8();
  const seq = r.u64();
  const sentAt = r.u64();
  switch (type) {
    case FrameType.READY:
    case FrameType.PING:
    case FrameType.PONG:
      r.end();
      return { type, seq, sentAt };
    case FrameType.MSG: {
      const n = r.u16();
      if (n === 0 || n > MAX_BATCH_MESSAGES) throw new DecodeError(`bad MSG count ${n}`);
      const messages: ChatMessage[] = [];
      // The bound MessageBatch keeps to, so no batch of ours is refused: a lone entry may be as
      // large as its text allows, entries travelling together total at most BATCH_BYTES. Counted
      // before the text is read, so an oversized batch costs us no UTF-8 decoding.
      let entryBytes = 0;
      for (let i = 0; i < n; i++) {
        const id = toHex(r.raw(MESSAGE_ID_BYTES));
        const messageSentAt = r.u64();
        const length = r.u32();
        if (length > MAX_TEXT_BYTES) throw new DecodeError("message text too long");
        entryBytes += ENTRY_HEADER_BYTES + length;
        if (n > 1 && entryBytes > BATCH_BYTES) {
          throw new DecodeError(`MSG of ${n} messages exceeds ${BATCH_BYTES} bytes`);
        }
        messages.push({ id, text: utf8(r.raw(length)), sentAt: messageSentAt });
      }
      r.end();
      return { type, seq, sentAt, messages };
    }
    case FrameType.ACK: {
      const n = r.remaining / MESSAGE_ID_BYTES;
      if (!Number.isInteger(n) || n === 0 || n > MAX_ACK_IDS) throw new DecodeError("bad ACK");
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push(toHex(r.raw(MESSAGE_ID_BYTES)));
      return { type, seq, sentAt, ids };
    }
    case FrameType.BYE:
      return { type, seq, sentAt, reason: utf8(r.rest()) };
    default:
      throw new DecodeError(`unknown frame type ${type}`);
  }
}

/**
 * Encodes one message as it sits in a MSG frame (id, time, length, text); what
 * {@linkcode MessageBatch} collects.
 *
 * @throws {RangeError} for a bad id, a bad time or a text over {@linkcode MAX_TEXT_BYTES}.
 * @example
 * ```ts
 * const entry = encodeChatMessage({ id: newMessageId(), text: "hi", sentAt: Date.now() });
 * ```
 */
export function encodeChatMessage(m: ChatMessage): Uint8Array {
  if (!isMessageId(m.id)) throw new RangeError(`invalid message id ${JSON.stringify(m.id)}`);
  if (!Number.isSafeInteger(m.sentAt) || m.sentAt < 0) {
    throw new RangeError(`message time must be ms since the epoch, not ${m.sentAt}`);
  }
  // Written in place: at most 3 UTF-8 bytes per UTF-16 unit, then cut to what was written.
  const room = new Uint8Array(ENTRY_HEADER_BYTES + m.text.length * 3);
  const { written } = textEncoder.encodeInto(m.text, room.subarray(ENTRY_HEADER_BYTES));
  if (written > MAX_TEXT_BYTES) {
    throw new RangeError(`message is ${written} bytes; the limit is ${MAX_TEXT_BYTES}`);
  }
  room.setFromHex(m.id);
  const view = new DataView(room.buffer);
  view.setUint32(MESSAGE_ID_BYTES, Math.floor(m.sentAt / 0x1_0000_0000));
  view.setUint32(MESSAGE_ID_BYTES + 4, m.sentAt >>> 0);
  view.setUint32(MESSAGE_ID_BYTES + 8, written);
  return room.subarray(0, ENTRY_HEADER_BYTES + written);
}

const textEncoder = new TextEncoder();

/**
 * Collects encoded messages (from {@linkcode encodeChatMessage}) for one MSG frame, up to
 * {@linkcode MAX_BATCH_MESSAGES} messages and {@linkcode BATCH_BYTES} (a larger message fits
 * only into an empty batch).
 *
 * @example
 * ```ts
 * const batch = new MessageBatch();
 * const entry = encodeChatMessage({ id: newMessageId(), text: "hi", sentAt: Date.now() });
 * if (batch.fits(entry)) batch.add(entry);
 * const plain = batch.encode(1, Date.now()); // decodeSessionFrame(plain).messages
 * ```
 */
export class MessageBatch {
  #entries: Uint8Array[] = [];
  #bytes = 0;

  /** Number of messages collected. */
  get length(): number {
    return this.#entries.length;
  }

  /** Would `entry` still fit? (Always, into an empty batch.) */
  fits(entry: Uint8Array): boolean {
    if (this.#entries.length === 0) return true;
    return this.#entries.length < MAX_BATCH_MESSAGES && this.#bytes + entry.length <= BATCH_BYTES;
  }

  /**
   * Adds an encoded message.
   *
   * @throws {RangeError} when it does not fit (check {@linkcode fits} first).
   */
  add(entry: Uint8Array): void {
    if (!this.fits(entry)) throw new RangeError("the message does not fit into this batch");
    this.#entries.push(entry);
    this.#bytes += entry.length;
  }

  /**
   * The plaintext of the MSG frame carrying the batch.
   *
   * @throws {RangeError} when the batch is empty.
   */
  encode(seq: number, sentAt: number): Uint8Array {
    const n = this.#entries.length;
    if (n === 0) throw new RangeError("an empty batch is no MSG frame");
    const w = new BinaryWriter(FRAME_HEADER_BYTES + 2 + this.#bytes)
      .u8(FrameType.MSG).u64(seq).u64(sentAt).u16(n);
    for (const entry of this.#entries) w.raw(entry);
    return w.finish();
  }
}

function idBytes(id: string): Uint8Array {
  if (!isMessageId(id)) throw new RangeError(`invalid message id ${JSON.stringify(id)}`);
  return fromHex(id);
}
