/**
 * The p2pchat handshake (protocol version 2): mutual authentication with the RSA identity keys,
 * forward secrecy from ephemeral X25519 keys, and one Fernet key per direction.
 *
 * ```
 * initiator                                   responder
 *   HELLO  (v, name, port, spki_i, eph_i, n_i) ->
 *          <- HELLO_R (v, name, port, spki_r, eph_r, n_r, sig_r = PSS_r("resp" || H1))
 *   AUTH   (OAEP_r(secret), sig_i = PSS_i("init" || H2)) ->
 * H1 = SHA-256(label || HELLO || HELLO_R without sig);  H2 = SHA-256(H1 || OAEP_r(secret))
 * keys = HKDF-SHA256(ikm = X25519(eph_i, eph_r) || secret, salt = H2, info = label) -> 64 bytes
 * ```
 *
 * The wire formats live in {@linkcode encodeHello} and friends (pure); {@linkcode initiateHandshake}
 * and {@linkcode respondHandshake} drive them over any {@linkcode FrameTransport}. See
 * docs/PROTOCOL.md for the security argument.
 *
 * @module
 */

import { type Identity, importPeerKey, type PeerKey } from "../crypto/identity.ts";
import { BinaryReader, BinaryWriter, DecodeError, toUtf8 } from "./codec.ts";

/** Protocol version spoken by this build. */
export const PROTOCOL_VERSION = 2;

/** Default time limit for a whole handshake. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

const LABEL = "p2pchat/1 handshake";
const FRAME_HELLO = 0x01;
const FRAME_HELLO_REPLY = 0x02;
const FRAME_AUTH = 0x03;
const X25519_KEY_SIZE = 32;
const NONCE_SIZE = 32;
const SECRET_SIZE = 32;
const MAX_NAME_BYTES = 64;

/** Why a handshake failed. */
export type HandshakeFailure =
  | "timeout"
  | "closed"
  | "malformed"
  | "version"
  | "unexpected-frame"
  | "bad-key"
  | "bad-signature"
  | "bad-secret"
  | "self";

/** Thrown when a handshake fails; the connection must be closed. */
export class HandshakeError extends Error {
  /** A stable code for the failure. */
  readonly reason: HandshakeFailure;

  /**
   * Makes the error.
   *
   * @param reason A stable code.
   * @param message Details for the log.
   */
  constructor(reason: HandshakeFailure, message: string) {
    super(message);
    this.name = "HandshakeError";
    this.reason = reason;
  }
}

/** What the handshake needs from a connection: whole frames in, whole frames out. */
export interface FrameTransport {
  /** Next frame, or null when the stream ended. */
  read(): Promise<Uint8Array | null>;
  /** Sends one frame. */
  write(payload: Uint8Array): Promise<void>;
  /** Closes the transport; a pending read then returns null. */
  close(): void;
}

/** The outcome of a successful handshake. */
export interface HandshakeResult {
  /** The name the peer gave (a label; the key is the identity). */
  peerName: string;
  /** The peer's authenticated identity key. */
  peerKey: PeerKey;
  /** TCP port the peer listens on (0 when it does not). */
  peerListenPort: number;
  /** Fernet key (base64url) for frames we send. */
  sendKey: string;
  /** Fernet key (base64url) for frames we receive. */
  recvKey: string;
  /** The final transcript hash: unique to this session. */
  sessionId: Uint8Array;
  /** True on the side that opened the connection. */
  initiator: boolean;
}

/** Options for both handshake roles. */
export interface HandshakeOptions {
  /** Our display name. */
  name: string;
  /** Our TCP listening port, so the peer can reach us later. */
  listenPort: number;
  /** Time limit for the whole exchange (default 10 s). */
  timeoutMs?: number;
}

/** The fields of a HELLO or HELLO_R frame. */
export interface Hello {
  /** Protocol version of the sender; decoding refuses any but {@linkcode PROTOCOL_VERSION}. */
  version: number;
  /** The sender's display name (a label only). */
  name: string;
  /** TCP port the sender listens on (0 when it does not). */
  listenPort: number;
  /** The sender's RSA identity key, SPKI DER. */
  spki: Uint8Array;
  /** The sender's ephemeral X25519 public key, 32 raw bytes. */
  ephemeral: Uint8Array;
  /** 32 random bytes, fresh for this handshake. */
  nonce: Uint8Array;
}

/**
 * Encodes a HELLO frame (initiator) or the unsigned part of a HELLO_R frame (responder).
 *
 * @example
 * ```ts
 * const bytes = encodeHello(hello, false);
 * ```
 */
export function encodeHello(hello: Hello, reply: boolean): Uint8Array {
  return new BinaryWriter(512)
    .u8(reply ? FRAME_HELLO_REPLY : FRAME_HELLO)
    .u8(hello.version)
    .string8(hello.name)
    .u16(hello.listenPort)
    .bytes16(hello.spki)
    .raw(hello.ephemeral)
    .raw(hello.nonce)
    .finish();
}

/**
 * Decodes a HELLO frame, or a HELLO_R frame with its trailing signature.
 *
 * @throws {HandshakeError} `unexpected-frame`, `version` or `malformed`.
 */
export function decodeHello(
  bytes: Uint8Array,
  reply: boolean,
): { hello: Hello; signed: Uint8Array; signature: Uint8Array | null } {
  try {
    const r = new BinaryReader(bytes);
    const type = r.u8();
    if (type !== (reply ? FRAME_HELLO_REPLY : FRAME_HELLO)) {
      throw new HandshakeError("unexpected-frame", `expected ${reply ? "HELLO_R" : "HELLO"}`);
    }
    const version = r.u8();
    if (version !== PROTOCOL_VERSION) {
      throw new HandshakeError(
        "version",
        `peer speaks protocol version ${version}, we speak ${PROTOCOL_VERSION}`,
      );
    }
    const name = r.string8();
    if (!isValidName(name)) throw new HandshakeError("malformed", "invalid peer name");
    const listenPort = r.u16();
    const spki = r.bytes16();
    const ephemeral = r.raw(X25519_KEY_SIZE);
    const nonce = r.raw(NONCE_SIZE);
    const signedLength = bytes.length - r.remaining;
    let signature: Uint8Array | null = null;
    if (reply) signature = r.bytes16();
    r.end();
    return {
      hello: { version, name, listenPort, spki, ephemeral, nonce },
      signed: bytes.subarray(0, signedLength),
      signature,
    };
  } catch (e) {
    if (e instanceof DecodeError) throw new HandshakeError("malformed", `bad hello: ${e.message}`);
    throw e;
  }
}

/**
 * Is `name` acceptable as a display name? 1 to 32 letters, digits, `_`, `-` or `.`, not only dots;
 * names carry no spaces so that commands such as `/send NAME TEXT` stay unambiguous.
 *
 * @example
 * ```ts
 * isValidName("Alice"); // true
 * isValidName("a b");   // false
 * ```
 */
export function isValidName(name: string): boolean {
  // Not only dots: the default data directory is named after the name, and "." or ".." would
  // put it in (or above) the folder that holds everyone's.
  return /^[\p{L}\p{N}_.-]{1,32}$/u.test(name) && !/^\.+$/.test(name) &&
    toUtf8(name).length <= MAX_NAME_BYTES;
}

/**
 * Runs the initiator side over `transport`.
 *
 * @throws {HandshakeError} for every failure (the caller closes the connection).
 * @example
 * ```ts
 * const result = await initiateHandshake(conn, identity, { name: "Alice", listenPort: 5000 });
 * ```
 */
export function initiateHandshake(
  transport: FrameTransport,
  identity: Identity,
  opts: HandshakeOptions,
): Promise<HandshakeResult> {
  return withTimeout(transport, opts.timeoutMs, async () => {
    const { eph, hello } = await freshHello(identity, opts);
    const helloBytes = encodeHello(hello, false);
    await transport.write(helloBytes);

    const replyBytes = await readFrame(transport);
    const reply = decodeHello(replyBytes, true);
    const peerKey = await importKey(reply.hello.spki);
    if (peerKey.fingerprint === identity.fingerprint) {
      throw new HandshakeError("self", "connected to ourselves");
    }
    const h1 = await transcriptHash(helloBytes, reply.signed);
    const ok = await peerKey.verify(reply.signature!, concat(toUtf8("resp"), h1));
    if (!ok) throw new HandshakeError("bad-signature", "responder's signature does not verify");

    const secret = crypto.getRandomValues(new Uint8Array(SECRET_SIZE));
    const sealed = await peerKey.encrypt(secret);
    const h2 = await sha256(concat(h1, sealed));
    const signature = await identity.sign(concat(toUtf8("init"), h2));
    await transport.write(
      new BinaryWriter(600).u8(FRAME_AUTH).bytes16(sealed).bytes16(signature).finish(),
    );
    const keys = await deriveKeys(eph.privateKey, reply.hello.ephemeral, secret, h2);
    return outcome(reply.hello, peerKey, keys, h2, true);
  });
}

/**
 * Runs the responder side over `transport`.
 *
 * @throws {HandshakeError} for every failure (the caller closes the connection).
 * @example
 * ```ts
 * const result = await respondHandshake(conn, identity, { name: "Bob", listenPort: 5001 });
 * ```
 */
export function respondHandshake(
  transport: FrameTransport,
  identity: Identity,
  opts: HandshakeOptions,
): Promise<HandshakeResult> {
  return withTimeout(transport, opts.timeoutMs, async () => {
    const helloBytes = await readFrame(transport);
    const hello = decodeHello(helloBytes, false);
    const peerKey = await importKey(hello.hello.spki);
    if (peerKey.fingerprint === identity.fingerprint) {
      throw new HandshakeError("self", "connected to ourselves");
    }
    const { eph, hello: reply } = await freshHello(identity, opts);
    const replySigned = encodeHello(reply, true);
    const h1 = await transcriptHash(helloBytes, replySigned);
    const signature = await identity.sign(concat(toUtf8("resp"), h1));
    await transport.write(new BinaryWriter(900).raw(replySigned).bytes16(signature).finish());

    const authBytes = await readFrame(transport);
    let sealed: Uint8Array;
    let authSignature: Uint8Array;
    try {
      const r = new BinaryReader(authBytes);
      if (r.u8() !== FRAME_AUTH) throw new HandshakeError("unexpected-frame", "expected AUTH");
      sealed = r.bytes16();
      authSignature = r.bytes16();
      r.end();
    } catch (e) {
      if (e instanceof DecodeError) throw new HandshakeError("malformed", `bad AUTH: ${e.message}`);
      throw e;
    }
    const h2 = await sha256(concat(h1, sealed));
    // Verify the initiator's signature before touching the RSA ciphertext (no decryption oracle).
    const ok = await peerKey.verify(authSignature, concat(toUtf8("init"), h2));
    if (!ok) throw new HandshakeError("bad-signature", "initiator's signature does not verify");
    let secret: Uint8Array;
    try {
      secret = await identity.decrypt(sealed);
    } catch (e) {
      throw new HandshakeError("bad-secret", `cannot open the key-exchange secret: ${e}`);
    }
    if (secret.length !== SECRET_SIZE) {
      throw new HandshakeError("bad-secret", "key-exchange secret has the wrong size");
    }
    const keys = await deriveKeys(eph.privateKey, hello.hello.ephemeral, secret, h2);
    return outcome(hello.hello, peerKey, keys, h2, false);
  });
}

/** The result for one role: each side sends under its own direction's key. */
function outcome(
  peer: Hello,
  peerKey: PeerKey,
  keys: { initiatorToResponder: string; responderToInitiator: string },
  sessionId: Uint8Array,
  initiator: boolean,
): HandshakeResult {
  return {
    peerName: peer.name,
    peerKey,
    peerListenPort: peer.listenPort,
    sendKey: initiator ? keys.initiatorToResponder : keys.responderToInitiator,
    recvKey: initiator ? keys.responderToInitiator : keys.initiatorToResponder,
    sessionId,
    initiator,
  };
}

/** Our side's HELLO fields with a new ephemeral key pair and nonce. */
async function freshHello(
  identity: Identity,
  opts: HandshakeOptions,
): Promise<{ eph: { privateKey: CryptoKey; publicRaw: Uint8Array }; hello: Hello }> {
  const eph = await generateEphemeral();
  return {
    eph,
    hello: {
      version: PROTOCOL_VERSION,
      name: opts.name,
      listenPort: opts.listenPort,
      spki: identity.spki,
      ephemeral: eph.publicRaw,
      nonce: crypto.getRandomValues(new Uint8Array(NONCE_SIZE)),
    },
  };
}

async function withTimeout<T>(
  transport: FrameTransport,
  timeoutMs: number | undefined,
  run: () => Promise<T>,
): Promise<T> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    transport.close();
  }, timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
  try {
    return await run();
  } catch (e) {
    if (timedOut) throw new HandshakeError("timeout", "handshake took too long");
    if (e instanceof HandshakeError) throw e;
    throw new HandshakeError("closed", `handshake failed: ${(e as Error).message ?? e}`);
  } finally {
    clearTimeout(timer);
  }
}

async function readFrame(transport: FrameTransport): Promise<Uint8Array> {
  const frame = await transport.read();
  if (frame === null) throw new HandshakeError("closed", "peer closed during the handshake");
  return frame;
}

async function importKey(spki: Uint8Array): Promise<PeerKey> {
  try {
    return await importPeerKey(spki);
  } catch (e) {
    throw new HandshakeError("bad-key", `peer sent an unusable identity key: ${e}`);
  }
}

async function generateEphemeral(): Promise<{ privateKey: CryptoKey; publicRaw: Uint8Array }> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, [
    "deriveBits",
  ]) as CryptoKeyPair;
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicRaw };
}

async function deriveKeys(
  ourPrivate: CryptoKey,
  theirPublicRaw: Uint8Array,
  secret: Uint8Array,
  salt: Uint8Array,
): Promise<{ initiatorToResponder: string; responderToInitiator: string }> {
  let shared: Uint8Array;
  try {
    const theirs = await crypto.subtle.importKey(
      "raw",
      theirPublicRaw as Uint8Array<ArrayBuffer>,
      { name: "X25519" },
      false,
      [],
    );
    shared = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "X25519", public: theirs }, ourPrivate, 256),
    );
  } catch (e) {
    // A small-order point yields an all-zero secret, which WebCrypto refuses: a hostile peer.
    throw new HandshakeError("bad-key", `unusable ephemeral key: ${e}`);
  }
  const ikm = await crypto.subtle.importKey(
    "raw",
    concat(shared, secret) as Uint8Array<ArrayBuffer>,
    "HKDF",
    false,
    ["deriveBits"],
  );
  const okm = new Uint8Array(
    await crypto.subtle.deriveBits(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: salt as Uint8Array<ArrayBuffer>,
        info: toUtf8(`${LABEL} keys`) as Uint8Array<ArrayBuffer>,
      },
      ikm,
      512,
    ),
  );
  return {
    initiatorToResponder: base64url(okm.subarray(0, 32)),
    responderToInitiator: base64url(okm.subarray(32, 64)),
  };
}

async function transcriptHash(hello: Uint8Array, replySigned: Uint8Array): Promise<Uint8Array> {
  const label = toUtf8(LABEL);
  const w = new BinaryWriter(label.length + hello.length + replySigned.length + 8);
  w.bytes16(label).bytes16(hello).bytes16(replySigned);
  return await sha256(w.finish());
}

async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function base64url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_");
}
