/**
 * Slash commands of the terminal UI (`/peers`, `/connect`, ...): parsing and Tab completion.
 * Pure: carrying them out is actions.ts's job.
 *
 * @module
 */

import { completeWord, type Completion } from "./line_editor.ts";

/** A parsed slash command; a null argument means "ask" or "the current chat's peer". */
export type Command =
  | { kind: "help" }
  | { kind: "peers" }
  | { kind: "connect"; target: string | null }
  | { kind: "history"; peer: string | null; limit: number }
  | { kind: "chat"; peer: string | null }
  | { kind: "send"; peer: string; text: string }
  | { kind: "trust"; peer: string | null; fingerprint: string | null }
  | { kind: "quit" };

/** Every command name, for completion and help. */
export const COMMANDS: readonly string[] = [
  "/chat",
  "/connect",
  "/help",
  "/history",
  "/peers",
  "/quit",
  "/send",
  "/trust",
];

/** Commands whose first argument is a peer name. */
const PEER_ARGUMENT = new Set(["/chat", "/history", "/send", "/trust", "/connect"]);

/** Default number of messages `/history` shows. */
export const DEFAULT_HISTORY_LIMIT = 50;

/** A line that is not a valid command; the message is a one-line hint for the user. */
export class CommandError extends Error {
  /**
   * Makes the error.
   *
   * @param message What is wrong and how to do it right.
   */
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

/**
 * Parses a line starting with "/".
 *
 * @throws {CommandError} for an unknown command or bad arguments.
 * @example
 * ```ts
 * parseCommand("/history Bob 20"); // { kind: "history", peer: "Bob", limit: 20 }
 * ```
 */
export function parseCommand(line: string): Command {
  const trimmed = line.trim();
  const [head, ...args] = trimmed.split(/\s+/);
  switch (head.toLowerCase()) {
    case "/help":
    case "/?":
      return { kind: "help" };
    case "/peers":
      return { kind: "peers" };
    case "/connect":
      if (args.length > 1) throw new CommandError("usage: /connect [HOST:PORT]");
      return { kind: "connect", target: args[0] ?? null };
    case "/history": {
      if (args.length > 2) throw new CommandError("usage: /history [PEER] [LIMIT]");
      // "/history 20" in a chat means the last 20 with the current peer.
      let peer: string | null = args[0] ?? null;
      let limitText = args[1];
      if (args.length === 1 && /^\d+$/.test(args[0])) {
        peer = null;
        limitText = args[0];
      }
      const limit = limitText === undefined ? DEFAULT_HISTORY_LIMIT : Number(limitText);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) {
        throw new CommandError("LIMIT must be a whole number from 1 to 100000");
      }
      return { kind: "history", peer, limit };
    }
    case "/chat":
    case "/msg":
      if (args.length > 1) throw new CommandError("usage: /chat PEER");
      return { kind: "chat", peer: args[0] ?? null };
    case "/send": {
      const m = /^\S+\s+(\S+)\s+([\s\S]+)$/.exec(trimmed);
      if (!m) throw new CommandError("usage: /send PEER TEXT");
      return { kind: "send", peer: m[1], text: m[2] };
    }
    case "/trust":
      // A fingerprint may be pasted in groups ("abcd 1234 ..."): the rest of the line is it.
      return {
        kind: "trust",
        peer: args[0] ?? null,
        fingerprint: args.length > 1 ? args.slice(1).join("") : null,
      };
    case "/quit":
    case "/exit":
      return { kind: "quit" };
    default:
      throw new CommandError(`unknown command ${head}: try ${COMMANDS.join(" ")} (/help explains)`);
  }
}

/**
 * Tab completion for any input line: command names while the first word starts with "/",
 * peer names elsewhere.
 *
 * @example
 * ```ts
 * completeInput("/hi", 3, ["Bob"]); // { line: "/history ", cursor: 9, matches: ["/history"] }
 * completeInput("/chat b", 7, ["Bob"]); // { line: "/chat Bob ", cursor: 10, matches: ["Bob"] }
 * ```
 */
export function completeInput(line: string, cursor: number, peerNames: string[]): Completion {
  const before = [...line].slice(0, cursor).join("");
  if (/^\/\S*$/.test(before)) return completeWord(line, cursor, [...COMMANDS]);
  const head = /^(\/\S+)\s/.exec(before)?.[1]?.toLowerCase();
  if (head !== undefined) {
    // Only the first argument of a command is a peer name.
    const argIndex = before.trimEnd().split(/\s+/).length - (/\s$/.test(before) ? 0 : 1);
    if (!PEER_ARGUMENT.has(head) || argIndex !== 1) return { line, cursor, matches: [] };
  }
  return completeWord(line, cursor, peerNames);
}
