/**
 * Command-line arguments: parsing, validation and the help text. Pure code apart from reading
 * the environment for the default data directory.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { isValidName } from "../protocol/handshake.ts";
import { MAX_SESSION_FRAME_BYTES } from "../protocol/messages.ts";

/** The program's version. */
export const VERSION = "0.1.0";

/** Default TCP port, as in the original design's examples. */
export const DEFAULT_PORT = 5000;
/** Default UDP discovery port (the original program's). */
export const DEFAULT_DISCOVERY_PORT = 54545;

/** A bad command line: printed as one line, exit status 2. */
export class UsageError extends Error {
  /**
   * Makes the error that ends the program with exit status 2.
   *
   * @param message What is wrong, for the user.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Options of a chat peer. */
export interface PeerOptions {
  /** Run a chat peer. */
  command: "peer";
  /** Your display name, already checked by `isValidName`. */
  name: string;
  /** TCP port to listen on (default 5000; 0 means any free port). */
  port: number;
  /** Directory of the identity, `peers.json` and `chat_history.db`. */
  dataDir: string;
  /** UDP port of the LAN announcements (default 54545). */
  discoveryPort: number;
  /** Explicit announcement targets; null means every interface's broadcast address. */
  broadcast: string[] | null;
  /** Time between announcements, in ms (default 5000). */
  intervalMs: number;
  /** False with `--no-discovery`: no UDP at all, peers are reached by address only. */
  discovery: boolean;
  /** File holding the passphrase that protects your keys; null when none was given. */
  passphraseFile: string | null;
  /** Speak JSON lines on stdin/stdout instead of showing the interactive menu. */
  headless: boolean;
  /** Log connections and discovery details too (level `info` instead of `warn`). */
  verbose: boolean;
  /** Connection limits given on the command line (the rest keep their defaults). */
  limits: PeerLimits;
  /** `full`: every commit is fsynced (survives power loss); `normal`: survives a crash of p2pchat. */
  durability: "full" | "normal";
}

/** Limits settable from the command line (see lib/node/chat_node.ts NodeLimits). */
export interface PeerLimits {
  /** Open TCP connections in all (`--max-connections`). */
  maxConnections?: number;
  /** Unauthenticated connections per remote address (`--max-per-address`). */
  maxPendingPerAddress?: number;
  /** Time allowed for a handshake, in ms (`--handshake-timeout`, given in seconds). */
  handshakeTimeoutMs?: number;
  /** Largest frame after authentication, in bytes (`--max-frame-size`). */
  maxFrameSize?: number;
  /** A session silent this long is closed, in ms (`--idle-timeout`, given in seconds). */
  idleTimeoutMs?: number;
  /** Peers kept that were only ever heard, never contacted (`--max-heard-peers`). */
  maxHeardPeers?: number;
}

/** Options of `p2pchat history`. */
export interface HistoryOptions {
  /** Print stored history. */
  command: "history";
  /** Your display name; it picks the default data directory. */
  name: string;
  /** Directory of the identity, `peers.json` and `chat_history.db`. */
  dataDir: string;
  /**
   * Only the conversation with this peer (a name or a fingerprint prefix of 8+ hex digits);
   * null for every conversation.
   */
  peer: string | null;
  /** Most recent messages shown per conversation (default 50). */
  limit: number;
  /** Print JSON instead of text. */
  json: boolean;
  /** File holding the passphrase that protects your keys; null when none was given. */
  passphraseFile: string | null;
}

/** What the command line asks for. */
export type Invocation =
  | PeerOptions
  | HistoryOptions
  | { command: "help" }
  | { command: "version" };

/**
 * Parses the command line.
 *
 * @throws {UsageError} for an unknown option, a missing name or a bad value.
 * @example
 * ```ts
 * parseCommandLine(["--name", "Alice", "--port", "5000"], {});
 * ```
 */
export function parseCommandLine(
  args: string[],
  env: { HOME?: string; XDG_DATA_HOME?: string },
): Invocation {
  let parsed;
  const sub = args[0] === "history" ? "history" : "peer";
  try {
    parsed = parseArgs({
      args: sub === "history" ? args.slice(1) : args,
      strict: true,
      allowPositionals: false,
      options: {
        name: { type: "string", short: "n" },
        port: { type: "string", short: "p" },
        "data-dir": { type: "string", short: "d" },
        "discovery-port": { type: "string" },
        broadcast: { type: "string" },
        interval: { type: "string" },
        "no-discovery": { type: "boolean" },
        "passphrase-file": { type: "string" },
        headless: { type: "boolean" },
        "max-connections": { type: "string" },
        "max-per-address": { type: "string" },
        "handshake-timeout": { type: "string" },
        "max-frame-size": { type: "string" },
        "idle-timeout": { type: "string" },
        "max-heard-peers": { type: "string" },
        durability: { type: "string" },
        verbose: { type: "boolean", short: "v" },
        peer: { type: "string" },
        limit: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (e) {
    throw new UsageError(usageMessage((e as Error).message));
  }
  const v = parsed.values;
  if (v.help) return { command: "help" };
  if (v.version) return { command: "version" };
  if (v.name === undefined) throw new UsageError("--name is required (for example --name Alice)");
  if (!isValidName(v.name)) {
    throw new UsageError(
      `invalid --name "${v.name}": use 1-32 letters, digits, "_", "-" or "." (no spaces, not only dots)`,
    );
  }
  const dataDir = v["data-dir"] ?? defaultDataDir(v.name, env);
  if (sub === "history") {
    for (
      const k of [
        "port",
        "discovery-port",
        "broadcast",
        "interval",
        "headless",
        "max-connections",
        "max-per-address",
        "handshake-timeout",
        "max-frame-size",
        "idle-timeout",
        "max-heard-peers",
        "durability",
      ] as const
    ) {
      if (v[k] !== undefined) throw new UsageError(`--${k} does not apply to "history"`);
    }
    return {
      command: "history",
      name: v.name,
      dataDir,
      peer: v.peer ?? null,
      limit: v.limit === undefined ? 50 : integer("--limit", v.limit, 1, 1_000_000),
      json: v.json ?? false,
      passphraseFile: v["passphrase-file"] ?? null,
    };
  }
  for (const k of ["peer", "limit", "json"] as const) {
    if (v[k] !== undefined) throw new UsageError(`--${k} only applies to "p2pchat history"`);
  }
  const interval = v.interval === undefined ? 5 : Number(v.interval);
  if (
    v.interval?.trim() === "" || !Number.isFinite(interval) || interval < 0.05 || interval > 3600
  ) {
    throw new UsageError(`--interval must be a number of seconds from 0.05 to 3600`);
  }
  let broadcast: string[] | null = null;
  if (v.broadcast !== undefined) {
    broadcast = v.broadcast.split(",").map((s) => s.trim()).filter((s) => s !== "");
    for (const addr of broadcast) {
      if (!isIPv4(addr)) throw new UsageError(`--broadcast: "${addr}" is not an IPv4 address`);
    }
    if (broadcast.length === 0) throw new UsageError("--broadcast needs at least one address");
  }
  return {
    command: "peer",
    name: v.name,
    port: v.port === undefined ? DEFAULT_PORT : integer("--port", v.port, 0, 65535),
    dataDir,
    discoveryPort: v["discovery-port"] === undefined
      ? DEFAULT_DISCOVERY_PORT
      : integer("--discovery-port", v["discovery-port"], 1, 65535),
    broadcast,
    intervalMs: Math.round(interval * 1000),
    discovery: !v["no-discovery"],
    passphraseFile: v["passphrase-file"] ?? null,
    headless: v.headless ?? false,
    verbose: v.verbose ?? false,
    limits: parseLimits(v),
    durability: parseDurability(v.durability),
  };
}

function parseLimits(v: Record<string, string | boolean | undefined>): PeerLimits {
  const limits: PeerLimits = {};
  const str = (k: string) => v[k] as string | undefined;
  if (str("max-connections") !== undefined) {
    limits.maxConnections = integer("--max-connections", str("max-connections")!, 1, 100_000);
  }
  if (str("max-per-address") !== undefined) {
    limits.maxPendingPerAddress = integer("--max-per-address", str("max-per-address")!, 1, 10_000);
  }
  if (str("handshake-timeout") !== undefined) {
    limits.handshakeTimeoutMs = seconds("--handshake-timeout", str("handshake-timeout")!, 0.1, 300);
  }
  if (str("idle-timeout") !== undefined) {
    limits.idleTimeoutMs = seconds("--idle-timeout", str("idle-timeout")!, 1, 86_400);
  }
  if (str("max-frame-size") !== undefined) {
    limits.maxFrameSize = integer(
      "--max-frame-size",
      str("max-frame-size")!,
      MAX_SESSION_FRAME_BYTES,
      64 << 20,
    );
  }
  if (str("max-heard-peers") !== undefined) {
    limits.maxHeardPeers = integer("--max-heard-peers", str("max-heard-peers")!, 0, 1_000_000);
  }
  return limits;
}

function parseDurability(value: string | undefined): "full" | "normal" {
  if (value === undefined || value === "full" || value === "normal") return value ?? "full";
  throw new UsageError(`--durability must be "full" or "normal", not "${value}"`);
}

function seconds(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(`${flag} must be a number of seconds from ${min} to ${max}`);
  }
  return Math.round(n * 1000);
}

/**
 * The default data directory: `$XDG_DATA_HOME/p2pchat/NAME`, else
 * `$HOME/.local/share/p2pchat/NAME`, else `./p2pchat-data/NAME`. One directory per name, so two
 * names on one machine never share keys or history.
 *
 * @example
 * ```ts
 * defaultDataDir("Alice", { HOME: "/home/a" }); // "/home/a/.local/share/p2pchat/Alice"
 * ```
 */
export function defaultDataDir(
  name: string,
  env: { HOME?: string; XDG_DATA_HOME?: string },
): string {
  if (env.XDG_DATA_HOME) return `${env.XDG_DATA_HOME}/p2pchat/${name}`;
  if (env.HOME) return `${env.HOME}/.local/share/p2pchat/${name}`;
  return `p2pchat-data/${name}`;
}

function integer(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, not "${value}"`);
  }
  return n;
}

function isIPv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/** The `--help` text. */
export function helpText(permissions: string): string {
  return `p2pchat ${VERSION}: end-to-end encrypted chat on your local network, no server needed.

Usage:
  p2pchat --name NAME [--port N] [options]        start a peer (interactive menu)
  p2pchat --name NAME --headless [options]        start a peer speaking JSON lines on stdin/stdout
  p2pchat history --name NAME [--peer P] [--limit N] [--json]
                                                  print stored history; no network activity

Options:
  -n, --name NAME            your display name (required): letters, digits, _ - . (max 32)
  -p, --port N               TCP port to listen on (default ${DEFAULT_PORT}; 0 = any free port)
  -d, --data-dir DIR         identity, peers.json and chat_history.db (default below)
      --discovery-port N     UDP port for LAN announcements (default ${DEFAULT_DISCOVERY_PORT})
      --broadcast A[,A]      announce only to these addresses (default: the broadcast address
                             of every up, non-loopback IPv4 interface)
      --interval S           seconds between announcements (default 5; fractions allowed)
      --no-discovery         no UDP at all; reach peers with "connect" (menu 4) only
      --passphrase-file F    read the passphrase that protects your keys from F
      --headless             machine interface (see README, "Headless mode")
  -v, --verbose              log connections and discovery details to stderr

Limits (a hostile peer costs a closed connection, never a crash):
      --max-connections N    open TCP connections in all (default 512)
      --max-per-address N    unauthenticated connections per address (default 32)
      --handshake-timeout S  time allowed for a handshake (default 10)
      --idle-timeout S       close a session silent this long (default 45; pings every 15)
      --max-frame-size B     largest frame after authentication (default 1048576)
      --max-heard-peers N    peers kept that were only ever heard, never contacted: beyond N,
                             the newest ones are forgotten once offline (default 1024)

Storage:
      --durability full|normal  full (default): every write is fsynced and survives a power
                             loss; normal: survives a crash of p2pchat (kill -9) but not of
                             the operating system, and delivers with less latency
  -h, --help                 this text
  -V, --version              the version

History command (p2pchat history --name NAME ...; also while that peer runs):
      --peer P               one peer: a name (a conversation per key it has had) or a
                             fingerprint prefix of 8+ hex digits (default: everyone)
      --limit N              the last N messages of each conversation (default 50)
      --json                 machine-readable output

Data directory (default):
  $XDG_DATA_HOME/p2pchat/NAME, else ~/.local/share/p2pchat/NAME

Permissions this program runs with:
  ${permissions}

Examples:
  p2pchat --name Alice --port 5000
  p2pchat --name Bob --port 5001 --data-dir ./bob
  p2pchat history --name Alice --peer Bob --limit 20

Exit status: 0 ok, 1 runtime error (port in use, unusable data directory, wrong
passphrase, missing permission), 2 bad command line.
`;
}

/** parseArgs' message in our words: one line, naming the option and what to write instead. */
function usageMessage(message: string): string {
  const m = /^Option '(?:-\w, )?(--[\w-]+)(?: <value>)?' argument (missing|is ambiguous)/.exec(
    message,
  );
  if (m?.[2] === "missing") return `${m[1]} needs a value`;
  if (m) return `${m[1]} needs a value (one that starts with "-" is written ${m[1]}=-…)`;
  return message.replace(/\. To specify a positional.*$/s, "").split("\n")[0];
}
