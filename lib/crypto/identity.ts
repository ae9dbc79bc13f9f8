/**
 * A user's RSA-2048 identity, kept in the data directory, and peers' public keys.
 *
 * One RSA key pair serves both RSA-PSS signatures and RSA-OAEP key transport (see
 * docs/IDENTITY.md for the file formats, the passphrase wrapping and why one key pair is enough).
 * The fingerprint of a key is the lowercase hex SHA-256 of its SPKI DER encoding.
 *
 * @module
 */

import { generateKey as generateFernetKey } from "./fernet.ts";

/** Any problem with the identity: corrupt or truncated key files, bad keys, an unusable directory. */
export class IdentityError extends Error {
  /**
   * Makes the error.
   *
   * @param message one line naming the file or key concerned
   * @param options the underlying error, if any
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "IdentityError";
  }
}

/** The passphrase does not open the wrapped key file (or the file was altered). */
export class WrongPassphraseError extends IdentityError {
  /**
   * Makes the error.
   *
   * @param message one line naming the file
   * @param options the underlying error, if any
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WrongPassphraseError";
  }
}

/** The key file is wrapped by a passphrase, but none was given. */
export class PassphraseRequiredError extends IdentityError {
  /**
   * Makes the error.
   *
   * @param message one line naming the file
   * @param options the underlying error, if any
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PassphraseRequiredError";
  }
}

/**
 * A peer's public identity (RSA, 2048 to 4096 bits).
 *
 * @example
 * ```ts
 * import { importPeerKey } from "./identity.ts";
 * declare const spki: Uint8Array, signature: Uint8Array, data: Uint8Array;
 * const peer = await importPeerKey(spki);
 * if (!await peer.verify(signature, data)) throw new Error("forged");
 * ```
 */
export interface PeerKey {
  /** Lowercase hex SHA-256 of the SPKI DER. */
  readonly fingerprint: string;
  /** The public key, SPKI DER. */
  readonly spki: Uint8Array;
  /**
   * Checks an RSA-PSS (SHA-256, salt length 32) signature.
   * @returns false for a wrong or malformed signature
   */
  verify(signature: Uint8Array, data: Uint8Array): Promise<boolean>;
  /**
   * Encrypts with RSA-OAEP (SHA-256): at most 190 bytes for a 2048-bit key.
   * @throws {RangeError} when the plaintext is too long for the key
   */
  encrypt(plaintext: Uint8Array): Promise<Uint8Array>;
}

const PRIVATE_KEY_FILE = "identity.key";
const PUBLIC_KEY_FILE = "identity.pub";
const HISTORY_KEY_FILE = "history.key";

const MIN_BITS = 2048;
const MAX_BITS = 4096;
const NEW_KEY_BITS = 2048;
const PSS_SALT_LENGTH = 32;
/** OAEP overhead with SHA-256: 2 * hash length + 2. */
const OAEP_OVERHEAD = 2 * 32 + 2;

const WRAP_FORMAT = "p2pchat-wrapped-v1";
const KDF_NAME = "PBKDF2-SHA256";
const CIPHER_NAME = "AES-256-GCM";
const PBKDF2_ITERATIONS = 600_000;
/** Files claiming more iterations are refused rather than stalling start-up for minutes. */
const MAX_PBKDF2_ITERATIONS = 50_000_000;
/** Key files are small; anything bigger is not ours and is not read into memory. */
const MAX_KEY_FILE_SIZE = 64 * 1024;

const PSS: RsaHashedImportParams = { name: "RSA-PSS", hash: "SHA-256" };
const OAEP: RsaHashedImportParams = { name: "RSA-OAEP", hash: "SHA-256" };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Computes a key's fingerprint: the lowercase hex SHA-256 of its SPKI DER encoding (what
 * `openssl pkey -pubin -in identity.pub -outform DER | sha256sum` prints).
 *
 * @param spki the public key, SPKI DER
 * @returns 64 lowercase hex digits
 *
 * @example
 * ```ts
 * import { fingerprint } from "./identity.ts";
 * declare const spki: Uint8Array;
 * console.log(await fingerprint(spki)); // "3f1c…"
 * ```
 */
export async function fingerprint(spki: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", spki as Uint8Array<ArrayBuffer>);
  return new Uint8Array(digest).toHex();
}

/**
 * Formats a fingerprint for people: groups of four characters separated by spaces.
 *
 * @param fp a fingerprint as returned by {@linkcode fingerprint}
 * @returns e.g. `"abcd 1234 ..."`
 *
 * @example
 * ```ts
 * import { formatFingerprint } from "./identity.ts";
 * formatFingerprint("abcd1234ef"); // "abcd 1234 ef"
 * ```
 */
export function formatFingerprint(fp: string): string {
  return fp.match(/.{1,4}/g)?.join(" ") ?? "";
}

/** An RSA public key usable for both PSS verification and OAEP encryption. */
class RsaPeerKey implements PeerKey {
  readonly fingerprint: string;
  readonly spki: Uint8Array;
  #pss: CryptoKey;
  #oaep: CryptoKey;
  #bytes: number;

  constructor(fp: string, spki: Uint8Array, pss: CryptoKey, oaep: CryptoKey) {
    this.fingerprint = fp;
    this.spki = spki;
    this.#pss = pss;
    this.#oaep = oaep;
    this.#bytes = (pss.algorithm as RsaHashedKeyAlgorithm).modulusLength / 8;
  }

  async verify(signature: Uint8Array, data: Uint8Array): Promise<boolean> {
    // A signature of the wrong length cannot be valid; WebCrypto would say false as well.
    if (signature.length !== this.#bytes) return false;
    return await crypto.subtle.verify(
      { name: "RSA-PSS", saltLength: PSS_SALT_LENGTH },
      this.#pss,
      signature as Uint8Array<ArrayBuffer>,
      data as Uint8Array<ArrayBuffer>,
    );
  }

  async encrypt(plaintext: Uint8Array): Promise<Uint8Array> {
    const max = this.#bytes - OAEP_OVERHEAD;
    if (plaintext.length > max) {
      throw new RangeError(`RSA-OAEP plaintext of ${plaintext.length} bytes exceeds ${max}`);
    }
    return new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "RSA-OAEP" },
        this.#oaep,
        plaintext as Uint8Array<ArrayBuffer>,
      ),
    );
  }
}

/**
 * Imports a peer's public key from its SPKI DER encoding.
 *
 * @param spki the public key, SPKI DER (as sent by the peer)
 * @returns the peer key, with its fingerprint
 * @throws {IdentityError} when the bytes are malformed, not in canonical DER, not an RSA key, or
 *   the key is smaller than 2048 or larger than 4096 bits, or its exponent is not 65537
 *
 * @example
 * ```ts
 * import { importPeerKey } from "./identity.ts";
 * declare const spki: Uint8Array;
 * const peer = await importPeerKey(spki);
 * console.log(peer.fingerprint);
 * ```
 */
export async function importPeerKey(spki: Uint8Array): Promise<PeerKey> {
  if (!(spki instanceof Uint8Array)) throw new IdentityError("public key: not bytes");
  const own = spki.slice(); // the caller's buffer may be reused
  let pss: CryptoKey;
  try {
    pss = await crypto.subtle.importKey("spki", own, PSS, true, ["verify"]);
  } catch (cause) {
    throw new IdentityError(`public key: not an RSA SPKI key (${message(cause)})`, { cause });
  }
  checkRsaKey(pss, "public key");
  // Re-encoding must give the same bytes, so one key has exactly one fingerprint.
  const canonical = new Uint8Array(await crypto.subtle.exportKey("spki", pss));
  if (!equalBytes(canonical, own)) throw new IdentityError("public key: not canonical SPKI DER");
  const [oaep, fp] = await Promise.all([
    crypto.subtle.importKey("spki", own, OAEP, false, ["encrypt"]),
    fingerprint(own),
  ]);
  return new RsaPeerKey(fp, own, pss, oaep);
}

/**
 * Imports peers' public keys once each: a bounded cache of {@linkcode importPeerKey} by SPKI bytes,
 * least recently used out first.
 *
 * Why: importing a key takes four WebCrypto calls (import, canonical re-export, OAEP import,
 * SHA-256), each a hand-off to a thread pool and back. A LAN peer hears every other peer's
 * signed announcement each interval, always under the same few keys; with the cache a known key
 * costs nothing and an announcement only its signature check. Failed imports are not kept.
 *
 * @example
 * ```ts
 * import { PeerKeyCache } from "./identity.ts";
 * declare const spki: Uint8Array;
 * const keys = new PeerKeyCache({ capacity: 256 });
 * const peer = await keys.get(spki); // imported
 * console.assert(await keys.get(spki) === peer); // the same object, no WebCrypto call
 * ```
 */
export class PeerKeyCache {
  #capacity: number;
  #keys = new Map<string, Promise<PeerKey>>();

  /**
   * Makes an empty cache.
   *
   * @param opts `capacity`: most keys kept (default 1024)
   * @throws {RangeError} when the capacity is not a positive integer
   */
  constructor(opts: { capacity?: number } = {}) {
    this.#capacity = opts.capacity ?? 1024;
    if (!Number.isInteger(this.#capacity) || this.#capacity < 1) {
      throw new RangeError(`capacity must be a positive integer, got ${this.#capacity}`);
    }
  }

  /** How many keys are held (imports still running included). */
  get size(): number {
    return this.#keys.size;
  }

  /**
   * The imported key for `spki`: from the cache, or imported now (concurrent calls for the same
   * key share one import).
   *
   * @param spki the public key, SPKI DER (copied; the caller may reuse its buffer)
   * @returns the same {@linkcode PeerKey} object for the same bytes while they stay cached
   * @throws {IdentityError} as {@linkcode importPeerKey} does
   */
  get(spki: Uint8Array): Promise<PeerKey> {
    if (!(spki instanceof Uint8Array)) {
      return Promise.reject(new IdentityError("public key: not bytes"));
    }
    const id = spki.toBase64();
    const held = this.#keys.get(id);
    if (held !== undefined) {
      // Map order is insertion order: re-inserting marks the key as the most recently used.
      this.#keys.delete(id);
      this.#keys.set(id, held);
      return held;
    }
    const imported = importPeerKey(spki);
    this.#keys.set(id, imported);
    if (this.#keys.size > this.#capacity) {
      this.#keys.delete(this.#keys.keys().next().value as string);
    }
    // A bad key is not remembered: it would only take the place of a good one.
    imported.catch(() => {
      if (this.#keys.get(id) === imported) this.#keys.delete(id);
    });
    return imported;
  }
}

/** Built inside the class (the only place allowed to call its private constructor). */
let constructIdentity: (parts: IdentityParts) => Identity;

interface IdentityParts {
  publicKey: PeerKey;
  pss: CryptoKey;
  oaep: CryptoKey;
  historyKey: string;
}

/**
 * The user's own identity: an RSA key pair used for RSA-PSS signatures and RSA-OAEP key
 * transport, plus the Fernet key that encrypts history at rest. Made by {@linkcode openIdentity}.
 *
 * @example
 * ```ts
 * import { openIdentity } from "./identity.ts";
 * const { identity } = await openIdentity("./data");
 * const signature = await identity.sign(new TextEncoder().encode("hello"));
 * console.log(await identity.publicKey.verify(signature, new TextEncoder().encode("hello")));
 * ```
 */
export class Identity {
  /** Lowercase hex SHA-256 of the SPKI DER. */
  readonly fingerprint: string;
  /** The public key, SPKI DER. */
  readonly spki: Uint8Array;
  /** The public half, as peers see it. */
  readonly publicKey: PeerKey;
  #pss: CryptoKey;
  #oaep: CryptoKey;
  #historyKey: string;

  static {
    constructIdentity = (parts) => new Identity(parts);
  }

  private constructor(parts: IdentityParts) {
    this.publicKey = parts.publicKey;
    this.fingerprint = parts.publicKey.fingerprint;
    this.spki = parts.publicKey.spki;
    this.#pss = parts.pss;
    this.#oaep = parts.oaep;
    this.#historyKey = parts.historyKey;
  }

  /**
   * The Fernet key (as made by `generateKey`) that encrypts history at rest. A getter, so that
   * printing the identity does not print the key.
   */
  get historyKey(): string {
    return this.#historyKey;
  }

  /**
   * Signs with RSA-PSS (SHA-256, salt length 32).
   *
   * @param data the bytes to sign
   * @returns the signature (256 bytes for a 2048-bit key)
   */
  async sign(data: Uint8Array): Promise<Uint8Array> {
    return new Uint8Array(
      await crypto.subtle.sign(
        { name: "RSA-PSS", saltLength: PSS_SALT_LENGTH },
        this.#pss,
        data as Uint8Array<ArrayBuffer>,
      ),
    );
  }

  /**
   * Decrypts an RSA-OAEP (SHA-256) ciphertext made with {@linkcode PeerKey.encrypt}.
   *
   * @param ciphertext the ciphertext
   * @returns the plaintext
   * @throws {IdentityError} when the ciphertext was not made for this key or was altered
   */
  async decrypt(ciphertext: Uint8Array): Promise<Uint8Array> {
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "RSA-OAEP" },
          this.#oaep,
          ciphertext as Uint8Array<ArrayBuffer>,
        ),
      );
    } catch (cause) {
      throw new IdentityError("RSA-OAEP decryption failed", { cause });
    }
  }
}

/**
 * Opens the identity in `dir`, creating the directory (mode 0700) and a new identity when there is
 * none. An existing private key is never overwritten. When `identity.key` exists but
 * `identity.pub` or `history.key` is missing, those are recreated (the public key from the
 * private key; a new history key). Files: `identity.key` (0600), `identity.pub`, `history.key`
 * (0600); see docs/IDENTITY.md.
 *
 * @param dir the data directory
 * @param opts `passphrase` wraps (on creation) or unwraps the key files (NFC-normalized, not
 *   empty); `create` (default true) makes an identity when there is none, else that is an error;
 *   `onCreate` is called just before the slow key generation, e.g. for a progress note
 * @returns the identity, and whether it was created now
 * @throws {PassphraseRequiredError} when a key file is wrapped but no passphrase was given
 * @throws {WrongPassphraseError} when the passphrase does not open a wrapped key file
 * @throws {IdentityError} for a corrupt or truncated key file (left untouched), a passphrase given
 *   for an unwrapped key, `identity.pub` not matching `identity.key`, a missing identity with
 *   `create: false`, or a directory or file that cannot be read or written
 *
 * @example
 * ```ts
 * import { formatFingerprint, openIdentity } from "./identity.ts";
 * const { identity, created } = await openIdentity("./data", {
 *   onCreate: () => console.log("creating a new identity..."),
 * });
 * console.log(created ? "new" : "loaded", formatFingerprint(identity.fingerprint));
 * ```
 */
export async function openIdentity(
  dir: string,
  opts: {
    /** Wraps (on creation) or unwraps the key files. NFC-normalized; must not be empty. */
    passphrase?: string;
    /** Create an identity when there is none (default true); when false, none is an error. */
    create?: boolean;
    /** Called just before the (slow) key generation, e.g. to print a progress note. */
    onCreate?: () => void;
  } = {},
): Promise<{ identity: Identity; created: boolean }> {
  const passphrase = opts.passphrase?.normalize("NFC");
  if (passphrase === "") throw new IdentityError("the passphrase is empty");
  await ensureDir(dir);
  const keyPath = join(dir, PRIVATE_KEY_FILE);
  const pubPath = join(dir, PUBLIC_KEY_FILE);
  const historyPath = join(dir, HISTORY_KEY_FILE);
  const wrapping = new Wrapping(passphrase);

  let created = false;
  let pkcs8: Uint8Array<ArrayBuffer>;
  let keyText = await readKeyFile(keyPath);
  if (keyText === undefined) {
    if (opts.create === false) {
      throw new IdentityError(`no identity in ${dir}: ${PRIVATE_KEY_FILE} does not exist`);
    }
    opts.onCreate?.();
    pkcs8 = await generatePkcs8();
    const content = passphrase === undefined
      ? toPem("PRIVATE KEY", pkcs8)
      : await wrapping.wrap(pkcs8, { content: "pkcs8", fresh: true });
    created = await writeNewFile(keyPath, content, 0o600);
    if (!created) {
      // Another process made the identity first: use theirs, never overwrite it.
      keyText = await readKeyFile(keyPath);
      if (keyText === undefined) throw new IdentityError(`${keyPath} vanished while creating it`);
    }
  }
  if (keyText !== undefined) {
    pkcs8 = await decodePrivateKeyFile(keyText, keyPath, wrapping);
  }
  const keys = await importPrivateKey(pkcs8!, keyPath);

  const pubPem = toPem("PUBLIC KEY", keys.publicKey.spki);
  const pubText = await readKeyFile(pubPath);
  if (pubText === undefined) {
    await writeNewFile(pubPath, pubPem, 0o644);
  } else if (!equalBytes(decodePem(pubText, "PUBLIC KEY", pubPath), keys.publicKey.spki)) {
    throw new IdentityError(
      `${pubPath} does not match ${PRIVATE_KEY_FILE}; remove it to have it written again`,
    );
  }

  let historyKey: string;
  const historyText = await readKeyFile(historyPath);
  if (historyText === undefined) {
    historyKey = generateFernetKey();
    const content = wrapping.active
      ? await wrapping.wrap(encoder.encode(historyKey), { content: "fernet-key", fresh: false })
      : historyKey + "\n";
    if (!await writeNewFile(historyPath, content, 0o600)) {
      historyKey = await decodeHistoryKeyFile(
        await readKeyFile(historyPath) ?? "",
        historyPath,
        wrapping,
      );
    }
  } else {
    historyKey = await decodeHistoryKeyFile(historyText, historyPath, wrapping);
  }

  const identity = constructIdentity({
    publicKey: keys.publicKey,
    pss: keys.pss,
    oaep: keys.oaep,
    historyKey,
  });
  return { identity, created };
}

// ---- key material ----

async function generatePkcs8(): Promise<Uint8Array<ArrayBuffer>> {
  const pair = await crypto.subtle.generateKey(
    { ...PSS, modulusLength: NEW_KEY_BITS, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ["sign", "verify"],
  );
  return new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
}

/** Imports the private key for both algorithms and derives the public key from it. */
async function importPrivateKey(
  pkcs8: Uint8Array<ArrayBuffer>,
  path: string,
): Promise<{ publicKey: PeerKey; pss: CryptoKey; oaep: CryptoKey }> {
  let extractable: CryptoKey;
  try {
    extractable = await crypto.subtle.importKey("pkcs8", pkcs8, PSS, true, ["sign"]);
  } catch (cause) {
    throw corrupt(path, `not an RSA private key (${message(cause)})`, cause);
  }
  checkRsaKey(extractable, path);
  const jwk = await crypto.subtle.exportKey("jwk", extractable);
  const publicJwk: JsonWebKey = { kty: "RSA", n: jwk.n, e: jwk.e };
  const spki = new Uint8Array(
    await crypto.subtle.exportKey(
      "spki",
      await crypto.subtle.importKey("jwk", publicJwk, PSS, true, ["verify"]),
    ),
  );
  const [pss, oaep, publicKey] = await Promise.all([
    crypto.subtle.importKey("pkcs8", pkcs8, PSS, false, ["sign"]),
    crypto.subtle.importKey("pkcs8", pkcs8, OAEP, false, ["decrypt"]),
    importPeerKey(spki),
  ]);
  // A damaged but parseable key would sign garbage; one signature at start-up catches it.
  const probe = encoder.encode("p2pchat identity self-test");
  const signature = new Uint8Array(
    await crypto.subtle.sign({ name: "RSA-PSS", saltLength: PSS_SALT_LENGTH }, pss, probe),
  );
  if (!await publicKey.verify(signature, probe)) {
    throw corrupt(path, "the private key is inconsistent (self-test signature failed)");
  }
  return { publicKey, pss, oaep };
}

function checkRsaKey(key: CryptoKey, what: string): void {
  const alg = key.algorithm as RsaHashedKeyAlgorithm;
  const bits = alg.modulusLength;
  if (!(bits >= MIN_BITS && bits <= MAX_BITS)) {
    throw new IdentityError(`${what}: RSA key of ${bits} bits (need ${MIN_BITS} to ${MAX_BITS})`);
  }
  const e = alg.publicExponent;
  if (!(e.length === 3 && e[0] === 1 && e[1] === 0 && e[2] === 1)) {
    throw new IdentityError(`${what}: RSA public exponent is not 65537`);
  }
}

async function decodePrivateKeyFile(
  text: string,
  path: string,
  wrapping: Wrapping,
): Promise<Uint8Array<ArrayBuffer>> {
  if (isWrapped(text)) return await wrapping.unwrap(text, { path, content: "pkcs8", first: true });
  const der = decodePem(text, "PRIVATE KEY", path);
  if (wrapping.passphrase !== undefined) {
    throw new IdentityError(
      `${path} is not passphrase-protected, but a passphrase was given (remove the passphrase ` +
        `option, or start with a new data directory to have a protected key)`,
    );
  }
  return der;
}

async function decodeHistoryKeyFile(
  text: string,
  path: string,
  wrapping: Wrapping,
): Promise<string> {
  let key: string;
  if (isWrapped(text)) {
    const bytes = await wrapping.unwrap(text, { path, content: "fernet-key", first: false });
    try {
      key = decoder.decode(bytes);
    } catch (cause) {
      throw corrupt(path, "the unwrapped key is not text", cause);
    }
  } else {
    if (wrapping.active) {
      throw new IdentityError(
        `${path} is not passphrase-protected although ${PRIVATE_KEY_FILE} is; it was altered`,
      );
    }
    key = text.trim();
  }
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(key, { alphabet: "base64url" });
  } catch (cause) {
    throw corrupt(path, "not a base64url Fernet key", cause);
  }
  if (bytes.length !== 32) throw corrupt(path, `the key is ${bytes.length} bytes, expected 32`);
  return key;
}

// ---- passphrase wrapping ----

/** The JSON document of a wrapped key file (docs/IDENTITY.md). */
interface WrappedFile {
  format: typeof WRAP_FORMAT;
  content: "pkcs8" | "fernet-key";
  kdf: typeof KDF_NAME;
  iterations: number;
  salt: string;
  cipher: typeof CIPHER_NAME;
  iv: string;
  data: string;
}

function isWrapped(text: string): boolean {
  return text.trimStart().startsWith("{");
}

/**
 * Derives the wrapping key from the passphrase once per start (PBKDF2 is deliberately slow) and
 * uses it for both key files. Its salt and iterations come from identity.key: the first file
 * unwrapped, or the fresh parameters when the identity is being created.
 */
class Wrapping {
  readonly passphrase: string | undefined;
  #params: { salt: Uint8Array<ArrayBuffer>; iterations: number; key: CryptoKey } | undefined;

  constructor(passphrase: string | undefined) {
    this.passphrase = passphrase;
  }

  /** True once identity.key was found (or made) wrapped under the passphrase. */
  get active(): boolean {
    return this.#params !== undefined;
  }

  async wrap(
    plain: Uint8Array<ArrayBuffer>,
    opts: { content: WrappedFile["content"]; fresh: boolean },
  ): Promise<string> {
    if (opts.fresh) {
      const salt = crypto.getRandomValues(new Uint8Array(16));
      this.#params = {
        salt,
        iterations: PBKDF2_ITERATIONS,
        key: await this.#derive(salt, PBKDF2_ITERATIONS),
      };
    }
    const params = this.#params!;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const data = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: aad(opts.content) },
        params.key,
        plain,
      ),
    );
    const doc: WrappedFile = {
      format: WRAP_FORMAT,
      content: opts.content,
      kdf: KDF_NAME,
      iterations: params.iterations,
      salt: params.salt.toBase64(),
      cipher: CIPHER_NAME,
      iv: iv.toBase64(),
      data: data.toBase64(),
    };
    return JSON.stringify(doc, null, 2) + "\n";
  }

  async unwrap(
    text: string,
    opts: { path: string; content: WrappedFile["content"]; first: boolean },
  ): Promise<Uint8Array<ArrayBuffer>> {
    const { path } = opts;
    const doc = parseWrapped(text, path, opts.content);
    if (this.passphrase === undefined) {
      throw new PassphraseRequiredError(`${path} is protected by a passphrase, but none was given`);
    }
    const salt = doc.salt;
    let key: CryptoKey;
    if (
      this.#params && this.#params.iterations === doc.iterations &&
      equalBytes(this.#params.salt, salt)
    ) {
      key = this.#params.key;
    } else {
      key = await this.#derive(salt, doc.iterations);
      if (opts.first) this.#params = { salt, iterations: doc.iterations, key };
    }
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: doc.iv, additionalData: aad(opts.content) },
          key,
          doc.data,
        ),
      );
    } catch (cause) {
      // AES-GCM cannot tell a wrong key from altered bytes; the passphrase is the likely cause.
      throw new WrongPassphraseError(
        `wrong passphrase for ${path} (or the file was altered)`,
        { cause },
      );
    }
  }

  async #derive(salt: Uint8Array<ArrayBuffer>, iterations: number): Promise<CryptoKey> {
    const base = await crypto.subtle.importKey(
      "raw",
      encoder.encode(this.passphrase!),
      "PBKDF2",
      false,
      ["deriveKey"],
    );
    return await crypto.subtle.deriveKey(
      { name: "PBKDF2", hash: "SHA-256", salt, iterations },
      base,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
  }
}

/** Binds a wrapped blob to what it holds, so the two files' contents cannot be swapped. */
function aad(content: WrappedFile["content"]): Uint8Array<ArrayBuffer> {
  return encoder.encode(`${WRAP_FORMAT}:${content}`);
}

function parseWrapped(
  text: string,
  path: string,
  content: WrappedFile["content"],
): {
  iterations: number;
  salt: Uint8Array<ArrayBuffer>;
  iv: Uint8Array<ArrayBuffer>;
  data: Uint8Array<ArrayBuffer>;
} {
  let doc: Partial<Record<keyof WrappedFile, unknown>>;
  try {
    doc = JSON.parse(text);
  } catch (cause) {
    throw corrupt(path, "the wrapped key document is not valid JSON", cause);
  }
  if (doc === null || typeof doc !== "object") throw corrupt(path, "not a wrapped key document");
  if (doc.format !== WRAP_FORMAT) {
    throw corrupt(path, `unknown format ${JSON.stringify(doc.format)}`);
  }
  if (doc.content !== content) {
    throw corrupt(path, `it holds ${JSON.stringify(doc.content)}, not ${content}`);
  }
  if (doc.kdf !== KDF_NAME || doc.cipher !== CIPHER_NAME) {
    throw corrupt(path, `unsupported kdf or cipher`);
  }
  const iterations = doc.iterations;
  if (
    typeof iterations !== "number" || !Number.isInteger(iterations) ||
    iterations < PBKDF2_ITERATIONS || iterations > MAX_PBKDF2_ITERATIONS
  ) {
    throw corrupt(path, `bad iteration count ${JSON.stringify(iterations)}`);
  }
  const bytes = (field: "salt" | "iv" | "data", min: number, max: number) => {
    const value = doc[field];
    let out: Uint8Array<ArrayBuffer>;
    try {
      if (typeof value !== "string") throw new TypeError("not a string");
      out = Uint8Array.fromBase64(value, { lastChunkHandling: "strict" });
    } catch (cause) {
      throw corrupt(path, `field ${field} is not base64`, cause);
    }
    if (out.length < min || out.length > max) {
      throw corrupt(path, `field ${field} has a bad length (${out.length} bytes)`);
    }
    return out;
  };
  return {
    iterations,
    salt: bytes("salt", 16, 64),
    iv: bytes("iv", 12, 12),
    data: bytes("data", 17, MAX_KEY_FILE_SIZE),
  };
}

// ---- files ----

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function ensureDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (cause) {
    throw new IdentityError(`cannot create the data directory ${dir}: ${message(cause)}`, {
      cause,
    });
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (cause) {
    throw new IdentityError(`cannot use the data directory ${dir}: ${message(cause)}`, { cause });
  }
  if (!info.isDirectory) throw new IdentityError(`the data directory ${dir} is not a directory`);
}

/** Reads a key file as text; `undefined` when it does not exist. */
async function readKeyFile(path: string): Promise<string | undefined> {
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw new IdentityError(`${path} is not a regular file`);
    if (info.size > MAX_KEY_FILE_SIZE) throw corrupt(path, `it is ${info.size} bytes, too large`);
    bytes = await Deno.readFile(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) return undefined;
    if (cause instanceof IdentityError) throw cause;
    throw new IdentityError(`cannot read ${path}: ${message(cause)}`, { cause });
  }
  try {
    return decoder.decode(bytes);
  } catch (cause) {
    throw corrupt(path, "it is not text", cause);
  }
}

/**
 * Writes a file that must not exist yet, atomically: a temporary file is written and synced, then
 * hard-linked into place (link never replaces an existing file). Falls back to an exclusive
 * create where hard links are not supported.
 *
 * @returns false when the file already exists (it is left as it is)
 */
async function writeNewFile(path: string, content: string, mode: number): Promise<boolean> {
  const bytes = encoder.encode(content);
  const tmp = `${path}.${crypto.getRandomValues(new Uint8Array(6)).toHex()}.tmp`;
  try {
    await writeSynced(tmp, bytes, mode);
    try {
      await Deno.link(tmp, path);
      return true;
    } catch (cause) {
      if (cause instanceof Deno.errors.AlreadyExists) return false;
      // No hard links here (some file systems): an exclusive create still never overwrites.
      try {
        await writeSynced(path, bytes, mode);
        return true;
      } catch (second) {
        if (second instanceof Deno.errors.AlreadyExists) return false;
        throw second;
      }
    }
  } catch (cause) {
    throw new IdentityError(`cannot write ${path}: ${message(cause)}`, { cause });
  } finally {
    await Deno.remove(tmp).catch((cause) => {
      if (!(cause instanceof Deno.errors.NotFound)) throw cause;
    });
  }
}

async function writeSynced(path: string, bytes: Uint8Array, mode: number): Promise<void> {
  const file = await Deno.open(path, { write: true, createNew: true, mode });
  try {
    // The process umask applies to `mode` at creation: set the mode explicitly.
    if (Deno.build.os !== "windows") await Deno.chmod(path, mode);
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.syncData();
  } finally {
    file.close();
  }
}

// ---- small helpers ----

function toPem(label: string, der: Uint8Array): string {
  const body = der.toBase64().match(/.{1,64}/g)!.join("\n");
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

function decodePem(text: string, label: string, path: string): Uint8Array<ArrayBuffer> {
  const begin = `-----BEGIN ${label}-----`;
  const end = `-----END ${label}-----`;
  const trimmed = text.trim();
  if (!trimmed.startsWith(begin) || !trimmed.endsWith(end)) {
    throw corrupt(path, `not a PEM ${label.toLowerCase()} file`);
  }
  const body = trimmed.slice(begin.length, trimmed.length - end.length).replace(/\s+/g, "");
  try {
    return Uint8Array.fromBase64(body, { lastChunkHandling: "strict" });
  } catch (cause) {
    throw corrupt(path, "the PEM body is not base64", cause);
  }
}

function corrupt(path: string, why: string, cause?: unknown): IdentityError {
  let advice = "restore it from a backup, or move it away to start a new identity";
  if (path.endsWith(PUBLIC_KEY_FILE)) advice = "remove it to have it written again";
  if (path.endsWith(HISTORY_KEY_FILE)) {
    advice = "restore it from a backup (without it the stored history cannot be read)";
  }
  return new IdentityError(
    `${path} is corrupt or truncated: ${why}; it was left untouched: ${advice}`,
    cause === undefined ? undefined : { cause },
  );
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
