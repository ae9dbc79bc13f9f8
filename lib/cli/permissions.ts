/**
 * The permission flags p2pchat runs with. The single source of truth is the `start` task in
 * deno.json; the compile script and the help text both read them from there.
 *
 * @module
 */

import config from "../../deno.json" with { type: "json" };

/**
 * Extracts the flags of a `deno run ... main.ts` command line.
 *
 * @throws {Error} when the command is not of that form.
 * @example
 * ```ts
 * runFlags("deno run --allow-net main.ts"); // ["--allow-net"]
 * ```
 */
export function runFlags(command: string): string[] {
  const words = command.trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== "main.ts") {
    throw new Error(`expected "deno run FLAGS main.ts", got "${command}"`);
  }
  return words.slice(2, -1);
}

/** The flags the `start` task and the compiled binary use. */
export const RUN_FLAGS: readonly string[] = runFlags(config.tasks.start);

/** One line per flag, for `--help`. */
export const PERMISSIONS_SUMMARY: string = RUN_FLAGS.join("\n  ");
