/**
 * The discovery announcement: one signed UDP datagram saying "this key, under this name, listens
 * on this TCP port".
 *
 * Pure code, no sockets: {@linkcode encodeAnnouncement} builds and signs a datagram,
 * {@linkcode decodeAnnouncement} parses one and verifies its signature with the key it carries.
 * The layout, byte by byte, is in docs/DISCOVERY.md.
 *
 * @module
 */

import {
  type Identity,
  importPeerKey,
  type PeerKey,
  type PeerKeyCache,
} from "../crypto/identity.ts";

/** First four bytes of every announcement: ASCII "P2PA". */
export const ANNOUNCEMENT_MAGIC: Uint8Array = new Uint8Array([0x50, 0x32, 0x50, 0x41]);

/** The only format version this code writes and reads. */
export const ANNOUNCEMENT_VERSION = 1;

/** Largest datagram accepted or produced, in bytes (fits any LAN MTU without IP fragmentation). */
export const MAX_ANNOUNCEMENT_SIZE = 1200;

/** Largest name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 64;

/** Largest SPKI DER carried, in bytes (RSA-4096 is 550; RSA-2048, our key, is 294). */
export const MAX_SPKI_BYTES = 600;

/** Largest signature carried, in bytes (RSA-4096). */
export const MAX_SIGNATURE_BYTES = 512;

/** Size of the fixed header before the name. */
const HEADER_SIZE = 29;

/**
 * Prepended to the datagram bytes before signing, so an announcement signature can never be
 * mistaken for a signature made by another part of the protocol with the same identity key.
 */
const SIGNATURE_CONTEXT = new TextEncoder().encode("p2pchat announcement\0");

/** What an announcement says: the sender is up (`hello`), answers one peer (`reply`), or leaves. */
export type AnnouncementKind = "hello" | "reply" | "goodbye";

const KIND_CODES: Record<AnnouncementKind, number> = { hello: 1, reply: 2, goodbye: 3 };
const KINDS_BY_CODE: Record<number, AnnouncementKind> = { 1: "hello", 2: "reply", 3: "goodbye" };

/**
 * Why an announcement was refused.
 *
 * - `malformed`: not an announcement of ours, truncated, oversized, or a field out of range.
 * - `version`: our magic but a format version this code does not read.
 * - `key`: the carried SPKI is not a usable public key.
 * - `signature`: the signature does not verify with the carried key.
 * - `field`: (encoding only) a field given to {@linkcode encodeAnnouncement} is out of range.
 */
export type AnnouncementReason = "malformed" | "version" | "key" | "signature" | "field";

/** Thrown by {@linkcode decodeAnnouncement} for any datagram it refuses, and by the encoder. */
export class AnnouncementError extends Error {
  /** A stable code for the failure. */
  readonly reason: AnnouncementReason;

  /**
   * Makes the error.
   *
   * @param message What went wrong, for the log.
   * @param reason A stable code for the failure.
   * @param options The underlying error, when there is one.
   */
  constructor(message: string, reason: AnnouncementReason, options?: ErrorOptions) {
    super(message, options);
    this.name = "AnnouncementError";
    this.reason = reason;
  }
}

/** The fields an announcement carries, apart from the sender's key and signature. */
export interface AnnouncementFields {
  /** What the datagram says. */
  kind: AnnouncementKind;
  /** Display name: 1 to {@linkcode MAX_NAME_BYTES} UTF-8 bytes, no control characters. */
  name: string;
  /** TCP port the sender's chat server listens on (1-65535). */
  tcpPort: number;
  /** UDP port of the sender's own, unshared socket: where direct replies go (1-65535). */
  replyPort: number;
  /** Sender's clock when it built the datagram, ms since the epoch. */
  timestamp: number;
  /** Per-sender counter (u32), so two datagrams built in the same millisecond are ordered. */
  seq: number;
  /** How often the sender announces, in ms (1 to 2^32-1): receivers time it out after three. */
  intervalMs: number;
}

/** An announcement whose signature has been checked against the key it carries. */
export interface VerifiedAnnouncement extends AnnouncementFields {
  /** The sender's public key, SPKI DER, as carried. */
  spki: Uint8Array;
  /** Lowercase hex SHA-256 of {@linkcode VerifiedAnnouncement.spki}. */
  fingerprint: string;
  /** The imported key, ready for further use. */
  key: PeerKey;
}

/** What {@linkcode encodeAnnouncement} needs of an identity: its public key and a signer. */
export type AnnouncementSigner = Pick<Identity, "spki" | "sign">;

/**
 * Builds and signs one announcement datagram.
 *
 * @throws {AnnouncementError} with reason `field` when a field is out of range or the datagram
 * would exceed {@linkcode MAX_ANNOUNCEMENT_SIZE}; whatever `identity.sign` throws.
 * @example
 * ```ts
 * const { identity } = await openIdentity("./data");
 * const datagram = await encodeAnnouncement({
 *   kind: "hello", name: "Alice", tcpPort: 5000, replyPort: 40123,
 *   timestamp: Date.now(), seq: 1, intervalMs: 5000,
 * }, identity);
 * ```
 */
export async function encodeAnnouncement(
  fields: AnnouncementFields,
  identity: AnnouncementSigner,
): Promise<Uint8Array> {
  const problem = checkFields(fields);
  if (problem !== undefined) throw new AnnouncementError(problem, "field");
  const name = new TextEncoder().encode(fields.name);
  const spki = identity.spki;
  if (spki.length < 1 || spki.length > MAX_SPKI_BYTES) {
    throw new AnnouncementError(`SPKI of ${spki.length} bytes is out of range`, "field");
  }
  const body = new Uint8Array(HEADER_SIZE + name.length + spki.length);
  const view = new DataView(body.buffer);
  body.set(ANNOUNCEMENT_MAGIC, 0);
  view.setUint8(4, ANNOUNCEMENT_VERSION);
  view.setUint8(5, KIND_CODES[fields.kind]);
  view.setUint16(6, fields.tcpPort);
  view.setUint16(8, fields.replyPort);
  view.setUint32(10, Math.floor(fields.timestamp / 2 ** 32));
  view.setUint32(14, fields.timestamp % 2 ** 32);
  view.setUint32(18, fields.seq);
  view.setUint32(22, fields.intervalMs);
  view.setUint8(26, name.length);
  view.setUint16(27, spki.length);
  body.set(name, HEADER_SIZE);
  body.set(spki, HEADER_SIZE + name.length);
  const signature = await identity.sign(signedMessage(body));
  const total = body.length + signature.length;
  if (signature.length < 1 || signature.length > MAX_SIGNATURE_BYTES) {
    throw new AnnouncementError(`signature of ${signature.length} bytes is out of range`, "field");
  }
  if (total > MAX_ANNOUNCEMENT_SIZE) {
    throw new AnnouncementError(
      `announcement of ${total} bytes exceeds ${MAX_ANNOUNCEMENT_SIZE}`,
      "field",
    );
  }
  const datagram = new Uint8Array(total);
  datagram.set(body, 0);
  datagram.set(signature, body.length);
  return datagram;
}

/**
 * Parses one datagram and verifies its signature with the key it carries.
 *
 * Any input at all either yields a verified announcement or throws {@linkcode AnnouncementError};
 * nothing else is thrown. It does not judge freshness, replays or who the sender is: the caller
 * does (see {@linkcode VerifiedAnnouncement.fingerprint} and `timestamp`/`seq`).
 *
 * @param bytes the datagram
 * @param opts `keys`: a cache the carried key is imported through (default: imported anew)
 * @throws {AnnouncementError} with reason `malformed`, `version`, `key` or `signature`.
 * @example
 * ```ts
 * try {
 *   const a = await decodeAnnouncement(datagram);
 *   console.log(a.name, a.fingerprint, a.tcpPort);
 * } catch (e) {
 *   if (!(e instanceof AnnouncementError)) throw e;
 *   stats[e.reason]++;
 * }
 * ```
 */
export async function decodeAnnouncement(
  bytes: Uint8Array,
  opts: { keys?: PeerKeyCache } = {},
): Promise<VerifiedAnnouncement> {
  const { fields, spki, signature, signedLength } = parse(bytes);
  // Copied before any await, so a caller reusing its buffer cannot change what is verified.
  const message = signedMessage(bytes.subarray(0, signedLength));
  let key: PeerKey;
  try {
    key = await (opts.keys?.get(spki) ?? importPeerKey(spki));
  } catch (e) {
    throw new AnnouncementError("carried key is not a usable public key", "key", { cause: e });
  }
  let valid: boolean;
  try {
    valid = await key.verify(signature, message);
  } catch (e) {
    throw new AnnouncementError("signature could not be checked", "signature", { cause: e });
  }
  if (!valid) throw new AnnouncementError("signature does not verify", "signature");
  return { ...fields, spki, fingerprint: key.fingerprint, key };
}

/** Structure checks only: everything {@linkcode decodeAnnouncement} does before cryptography. */
function parse(bytes: Uint8Array): {
  fields: AnnouncementFields;
  spki: Uint8Array;
  signature: Uint8Array;
  signedLength: number;
} {
  const malformed = (why: string) => new AnnouncementError(why, "malformed");
  if (!(bytes instanceof Uint8Array)) throw malformed("not a byte array");
  if (bytes.length > MAX_ANNOUNCEMENT_SIZE) throw malformed(`${bytes.length} bytes is too large`);
  if (bytes.length < 6) throw malformed("shorter than the header");
  for (let i = 0; i < ANNOUNCEMENT_MAGIC.length; i++) {
    if (bytes[i] !== ANNOUNCEMENT_MAGIC[i]) throw malformed("bad magic");
  }
  if (bytes[4] !== ANNOUNCEMENT_VERSION) {
    throw new AnnouncementError(`unsupported version ${bytes[4]}`, "version");
  }
  if (bytes.length < HEADER_SIZE) throw malformed("shorter than the header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = KINDS_BY_CODE[view.getUint8(5)];
  if (kind === undefined) throw malformed(`unknown kind ${view.getUint8(5)}`);
  const high = view.getUint32(10);
  // Timestamps above 2^53 - 1 cannot be represented exactly: no honest sender makes them.
  if (high > 0x1fffff) throw malformed("timestamp out of range");
  const nameLength = view.getUint8(26);
  const spkiLength = view.getUint16(27);
  const signedLength = HEADER_SIZE + nameLength + spkiLength;
  if (nameLength > MAX_NAME_BYTES) throw malformed("name too long");
  if (spkiLength < 1 || spkiLength > MAX_SPKI_BYTES) throw malformed("SPKI length out of range");
  const signatureLength = bytes.length - signedLength;
  if (signatureLength < 1) throw malformed("truncated");
  if (signatureLength > MAX_SIGNATURE_BYTES) throw malformed("signature too long");
  let name: string;
  try {
    name = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      bytes.subarray(HEADER_SIZE, HEADER_SIZE + nameLength),
    );
  } catch (e) {
    throw new AnnouncementError("name is not valid UTF-8", "malformed", { cause: e });
  }
  const fields: AnnouncementFields = {
    kind,
    name,
    tcpPort: view.getUint16(6),
    replyPort: view.getUint16(8),
    timestamp: high * 2 ** 32 + view.getUint32(14),
    seq: view.getUint32(18),
    intervalMs: view.getUint32(22),
  };
  const problem = checkFields(fields);
  if (problem !== undefined) throw malformed(problem);
  return {
    fields,
    // Copies, so the result does not pin (or alias) the caller's receive buffer.
    spki: bytes.slice(HEADER_SIZE + nameLength, signedLength),
    signature: bytes.slice(signedLength),
    signedLength,
  };
}

/** Control characters and bidirectional overrides: they could rewrite a terminal line. */
const UNSAFE_NAME = /[\p{Cc}\u202a-\u202e\u2066-\u2069]/u;

/**
 * Why `name` cannot be announced, or `undefined` when it can: 1 to {@linkcode MAX_NAME_BYTES}
 * UTF-8 bytes, no control characters (C0, DEL, C1) and no bidirectional overrides.
 *
 * @example
 * ```ts
 * nameProblem("Alice"); // undefined
 * nameProblem("x".repeat(65)); // "name of 65 bytes is outside 1-64"
 * ```
 */
export function nameProblem(name: string): string | undefined {
  if (typeof name !== "string") return "name is not a string";
  const nameBytes = new TextEncoder().encode(name).length;
  if (nameBytes < 1 || nameBytes > MAX_NAME_BYTES) {
    return `name of ${nameBytes} bytes is outside 1-${MAX_NAME_BYTES}`;
  }
  if (UNSAFE_NAME.test(name)) return "name contains control characters";
  return undefined;
}

/** Range checks shared by the encoder and the decoder; returns the problem, or `undefined`. */
function checkFields(f: AnnouncementFields): string | undefined {
  if (!Object.hasOwn(KIND_CODES, f.kind)) return `unknown kind ${String(f.kind)}`;
  const nameIssue = nameProblem(f.name);
  if (nameIssue !== undefined) return nameIssue;
  if (!isIntIn(f.tcpPort, 1, 65535)) return `TCP port ${f.tcpPort} is out of range`;
  if (!isIntIn(f.replyPort, 1, 65535)) return `reply port ${f.replyPort} is out of range`;
  if (!isIntIn(f.timestamp, 0, Number.MAX_SAFE_INTEGER)) return "timestamp out of range";
  if (!isIntIn(f.seq, 0, 0xffffffff)) return `sequence ${f.seq} is out of range`;
  if (!isIntIn(f.intervalMs, 1, 0xffffffff)) return `interval ${f.intervalMs} is out of range`;
  return undefined;
}

function isIntIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

/** The exact bytes signed: a context label, then the datagram up to the signature. */
function signedMessage(body: Uint8Array): Uint8Array {
  const message = new Uint8Array(SIGNATURE_CONTEXT.length + body.length);
  message.set(SIGNATURE_CONTEXT, 0);
  message.set(body, SIGNATURE_CONTEXT.length);
  return message;
}
