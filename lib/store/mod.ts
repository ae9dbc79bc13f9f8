/**
 * Local storage: the encrypted chat history and outbox.
 *
 * @module
 */

export * from "./history.ts";
export * from "./peers.ts";
