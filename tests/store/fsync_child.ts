/**
 * Child process of the fsync test in history_test.ts: stores one outgoing message in the history
 * at `Deno.args[0]` with durability `Deno.args[1]`, and writes `REQUEST` before each write and
 * `DURABLE` once the store reports it (or `FAILED` and the error, then `REFUSAL` and whether the
 * store refuses writes now), so that a syscall trace shows where the WAL writes and fsyncs fall.
 *
 * @module
 */

import { generateKey } from "../../lib/crypto/fernet.ts";
import { HistoryStore } from "../../lib/store/mod.ts";

const [path, durable] = Deno.args;
if (durable !== "full" && durable !== "normal") throw new Error("usage: PATH full|normal");
const say = (line: string) => Deno.stdout.writeSync(new TextEncoder().encode(`${line}\n`));
const store = await HistoryStore.open(path, { key: generateKey(), durable });
say("OPEN");
for (const round of [1, 2]) {
  say(`REQUEST ${round}`);
  try {
    await store.recordOutgoing(
      { id: `m${round}`, peer: "b0".repeat(32), peerName: "Bob", text: "hi", sentAt: Date.now() },
      "sent",
    );
    say(`DURABLE ${round}`);
  } catch (e) {
    say(`FAILED ${round} ${(e as Error).name}: ${(e as Error).message}`);
    say(`REFUSAL ${store.refusal === e}`);
  }
}
await store.close();
say("CLOSED");
