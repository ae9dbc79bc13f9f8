/**
 * Errors that end the program with a one-line message.
 *
 * @module
 */

/** A failure at run time: one line on stderr, exit status 1. */
export class RuntimeError extends Error {
  /**
   * Makes the error that ends the program with exit status 1.
   *
   * @param message A one-line explanation for the user.
   */
  constructor(message: string) {
    super(message);
    this.name = "RuntimeError";
  }
}
