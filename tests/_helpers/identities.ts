/**
 * Throwaway identities for tests: RSA key generation is slow, so each test module makes a few
 * once and removes their directories when it unloads.
 *
 * @module
 */

import { type Identity, openIdentity } from "../../lib/crypto/identity.ts";

/** Creates `n` identities in temporary directories, removed at unload. */
export async function testIdentities(n: number, prefix = "p2pchat-test-"): Promise<Identity[]> {
  const dirs: string[] = [];
  const ids = await Promise.all(Array.from({ length: n }, async () => {
    const dir = await Deno.makeTempDir({ prefix });
    dirs.push(dir);
    return (await openIdentity(dir)).identity;
  }));
  globalThis.addEventListener("unload", () => {
    for (const d of dirs) Deno.removeSync(d, { recursive: true });
  });
  return ids;
}
