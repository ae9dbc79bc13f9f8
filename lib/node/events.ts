/**
 * Events a running peer reports. Their shapes are the public headless contract
 * (docs/HEADLESS.md): the headless UI prints them as JSON lines, the terminal UI renders them.
 *
 * @module
 */

/** One entry of a `peers` event. */
export interface PeerInfo {
  /** The name the peer last used (a label only). */
  name: string;
  /** Lowercase hex SHA-256 of the peer's public key: its identity. */
  fingerprint: string;
  /** Last address it was heard from or connected at; null if none. */
  host: string | null;
  /** Last TCP port it announced or was reached at; null if none. */
  port: number | null;
  /** Heard on the LAN within 3 announcement intervals, or connected. */
  active: boolean;
  /** A secure session with it is open now. */
  connected: boolean;
  /** ms since the epoch, 0 if never. */
  lastSeen: number;
}

/** One entry of a `history` event. */
export interface HistoryEntry {
  /** Message id, unique across both directions. */
  id: string;
  /** `in`: received from the peer; `out`: sent to it. */
  direction: "in" | "out";
  /** What was written (decrypted). */
  text: string;
  /** When the sender sent it, ms since the epoch (the sender's clock). */
  sentAt: number;
  /** Delivery state; received messages are always `delivered`. */
  state: "queued" | "sent" | "delivered" | "failed";
}

/** Every event, discriminated by `type`; `ts` is ms since the epoch. */
export type NodeEvent =
  & { ts: number }
  & (
    | { type: "ready"; name: string; port: number; fingerprint: string; dataDir: string }
    | { type: "peer-up"; name: string; fingerprint: string; host: string; port: number }
    | { type: "peer-down"; name: string; fingerprint: string; reason: "timeout" | "goodbye" }
    | { type: "connected"; name: string; fingerprint: string }
    | { type: "disconnected"; name: string; fingerprint: string; reason: string }
    | { type: "key-changed"; name: string; old: string; new: string }
    | {
      type: "message";
      id: string;
      from: string;
      fingerprint: string;
      text: string;
      sentAt: number;
    }
    | { type: "sent" | "queued" | "delivered"; id: string; to: string; fingerprint: string }
    | { type: "peers"; peers: PeerInfo[] }
    | { type: "history"; peer: string; messages: HistoryEntry[] }
    | { type: "trusted"; name: string; fingerprint: string }
    | { type: "error"; message: string; command?: string }
    | { type: "bye" }
  );

/** The `type` values of {@linkcode NodeEvent}. */
export type NodeEventType = NodeEvent["type"];

/** Distributive Omit, so that each member of a union keeps its own fields. */
export type WithoutTs<T> = T extends unknown ? Omit<T, "ts"> : never;
