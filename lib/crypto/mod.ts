/**
 * The crypto core of p2pchat: Fernet tokens and the RSA identity.
 *
 * @example
 * ```ts
 * import { Fernet, openIdentity } from "./mod.ts";
 * const { identity } = await openIdentity("./data");
 * const history = await Fernet.create(identity.historyKey);
 * ```
 *
 * @module
 */

export { Fernet, generateKey, InvalidKeyError, InvalidTokenError } from "./fernet.ts";
export {
  fingerprint,
  formatFingerprint,
  Identity,
  IdentityError,
  importPeerKey,
  openIdentity,
  PassphraseRequiredError,
  type PeerKey,
  WrongPassphraseError,
} from "./identity.ts";
