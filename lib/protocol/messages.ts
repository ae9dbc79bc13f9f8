/**
 * The plaintext inside every session frame (protocol version 1). Pure code.
 *
 * ```
 * u8 type | u64 seq | u64 sentAt (ms) | type-specific body
 *   READY: empty            MSG: 16-byte id, UTF-8 text     ACK: n x 16-byte ids
 *   PING / PONG: empty      BYE: UTF-8 reason
 * ```
 *
 * @module
 */

import { BinaryReader, BinaryWriter, DecodeError, fromHex, toHex, toUtf8, utf8 } from "./codec.ts";

/** Largest chat message text, in UTF-8 bytes. */
export const MAX_TEXT_BYTES = 64 * 1024;
/** Largest number of ids in one ACK frame. */
export const MAX_ACK_IDS = 4096;
/** Length of a message id in bytes (shown as 32 hex digits). */
export const MESSAGE_ID_BYTES = 16;

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
  | { type: typeof FrameType.MSG; seq: number; sentAt: number; id: string; text: string }
  | { type: typeof FrameType.ACK; seq: number; sentAt: number; ids: string[] }
  | { type: typeof FrameType.PING; seq: number; sentAt: number }
  | { type: typeof FrameType.PONG; seq: number; sentAt: number }
  | { type: typeof FrameType.BYE; seq: number; sentAt: number; reason: string };

/**
 * A fresh random message id: 32 lowercase hex digits.
 *
 * @example
 * ```ts
 * newMessageId(); // "3f1c...e9" (32 hex digits)
 * ```
 */
export function newMessageId(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(MESSAGE_ID_BYTES)));
}

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
 * @throws {RangeError} for text over {@linkcode MAX_TEXT_BYTES}, a bad id or too many ids.
 * @example
 * ```ts
 * const bytes = encodeSessionFrame({ type: FrameType.PING, seq: 3, sentAt: Date.now() });
 * ```
 */
export function encodeSessionFrame(frame: SessionFrame): Uint8Array {
  const w = new BinaryWriter(64).u8(frame.type).u64(frame.seq).u64(frame.sentAt);
  switch (frame.type) {
    case FrameType.MSG: {
      const text = toUtf8(frame.text);
      if (text.length > MAX_TEXT_BYTES) {
        throw new RangeError(`message is ${text.length} bytes; the limit is ${MAX_TEXT_BYTES}`);
      }
      w.raw(idBytes(frame.id)).raw(text);
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
 * @throws {DecodeError} for an unknown type, a truncated frame or invalid fields.
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
      const id = toHex(r.raw(MESSAGE_ID_BYTES));
      const body = r.rest();
      if (body.length > MAX_TEXT_BYTES) throw new DecodeError("message text too long");
      return { type, seq, sentAt, id, text: utf8(body) };
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

function idBytes(id: string): Uint8Array {
  if (!isMessageId(id)) throw new RangeError(`invalid message id ${JSON.stringify(id)}`);
  return fromHex(id);
}
