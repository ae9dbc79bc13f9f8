/**
 * p2pchat: end-to-end encrypted peer-to-peer chat for the local network.
 *
 * Everything happens in lib/; this file only starts the program and exits with its status.
 *
 * @module
 */

import { run } from "./lib/cli/run.ts";

if (import.meta.main) {
  Deno.exit(await run(Deno.args));
}
