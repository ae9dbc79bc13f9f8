/**
 * Local storage: the encrypted chat history and outbox.
 *
 * @module
 */

export * from "./history.ts";
