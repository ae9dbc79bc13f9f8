/**
 * The order of outgoing messages, in process: a message sent alone leaves before its record
 * commits, the others wait for theirs, and none may overtake another on the way.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { setImmediate } from "node:timers";
import type { Identity } from "../../lib/crypto/identity.ts";
import { Logger } from "../../lib/log.ts";
import { ChatNode } from "../../lib/node/chat_node.ts";
import type { NodeEvent } from "../../lib/node/events.ts";
import { HistoryStore, PeerBook } from "../../lib/store/mod.ts";
import { testIdentities } from "../_helpers/identities.ts";

const [ALICE, BOB] = await testIdentities(2, "p2pchat-send-order-");

interface Running {
  node: ChatNode;
  history: HistoryStore;
  events: NodeEvent[];
  dir: string;
}

async function startNode(name: string, identity: Identity): Promise<Running> {
  const dir = await Deno.makeTempDir({ prefix: `p2pchat-send-order-${name}-` });
  const history = await HistoryStore.open(join(dir, "chat_history.db"), {
    key: identity.historyKey,
  });
  const peers = await PeerBook.open(join(dir, "peers.json"));
  const node = new ChatNode({
    name,
    identity,
    history,
    peers,
    listener: Deno.listen({ hostname: "127.0.0.1", port: 0 }),
    dataDir: dir,
    log: new Logger({ level: "error" }),
  });
  const events: NodeEvent[] = [];
  node.subscribe((e) => events.push(e));
  await node.start();
  return { node, history, events, dir };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !cond(); waited += 10) {
    if (waited > 10_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs `scenario` on Alice (connected to Bob) and returns the texts Bob got, in order. */
async function received(
  count: number,
  scenario: (alice: Running) => Promise<unknown>[],
): Promise<string[]> {
  const alice = await startNode("Alice", ALICE);
  const bob = await startNode("Bob", BOB);
  try {
    await alice.node.connect(`127.0.0.1:${bob.node.port}`);
    const texts = () =>
      bob.events.flatMap((e) => e.type === "message" && e.text !== "warm-up" ? [e.text] : []);
    await alice.node.send("Bob", "warm-up");
    await until(() => alice.events.some((e) => e.type === "delivered"), "the warm-up");
    await Promise.all(scenario(alice));
    await until(() => texts().length >= count, `${count} messages`);
    await until(
      () => alice.events.filter((e) => e.type === "delivered").length === count + 1,
      "every delivered",
    );
    return texts();
  } finally {
    await alice.node.close();
    await bob.node.close();
    await Deno.remove(alice.dir, { recursive: true });
    await Deno.remove(bob.dir, { recursive: true });
  }
}

Deno.test("send order: a message sent while another waits for its commit does not overtake it", async () => {
  const texts = await received(3, (alice) => {
    const sends: Promise<unknown>[] = [];
    const done = Promise.withResolvers<void>();
    setTimeout(() => {
      // A write earlier in the turn: the store's commit is set before A's send.
      sends.push(alice.history.setState("no-such-id", "sent"));
      sends.push(alice.node.send("Bob", "A")); // leaves at once, before its commit
      setImmediate(() => {
        // After A's commit: D waits for a commit of its own.
        sends.push(alice.node.send("Bob", "D"));
        setImmediate(() => {
          // D still waits: E must wait behind it, not leave at once.
          sends.push(alice.node.send("Bob", "E"));
          done.resolve();
        });
      });
    }, 0);
    return [done.promise.then(() => Promise.all(sends))];
  });
  assert.deepEqual(texts, ["A", "D", "E"]);
});

Deno.test("send order: a burst in one turn arrives in the order of the calls", async () => {
  const expected = Array.from({ length: 50 }, (_, i) => `burst ${i}`);
  const texts = await received(expected.length, (alice) => {
    return expected.map((t) => alice.node.send("Bob", t));
  });
  assert.deepEqual(texts, expected);
});
