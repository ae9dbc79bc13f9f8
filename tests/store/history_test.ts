import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { Fernet, generateKey } from "../../lib/crypto/fernet.ts";
import { HistoryStore, SCHEMA_VERSION, StoreError } from "../../lib/store/mod.ts";
import { DEFER_MS } from "../../lib/store/history.ts";
import { hasCommand } from "../_helpers/tools.ts";

const ALICE = "a1".repeat(32);
const BOB = "b0".repeat(32);
const CAROL = "c3".repeat(32);

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat_history_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function out(id: string, peer: string, text: string, sentAt = 1_700_000_000_000) {
  return { id, peer, peerName: "Bob", text, sentAt };
}

function inc(id: string, peer: string, text: string, receivedAt = 1_700_000_000_500) {
  return { id, peer, peerName: "Alice", text, sentAt: 1_700_000_000_000, receivedAt };
}

/** The ids the store has not shown yet, oldest first. */
async function unshownIds(store: HistoryStore): Promise<string[]> {
  return (await store.unshown()).map((m) => m.id);
}

/** `PRAGMA user_version` of the file. */
function userVersion(path: string): number {
  return raw(path, (db) => (db.prepare("PRAGMA user_version").get() as { user_version: number }))
    .user_version;
}

/** Opens the file with a plain SQLite connection, runs `fn`, closes it. */
function raw<T>(path: string, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(path);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/** The database, WAL and shm files that exist, with their bytes. */
async function dbFiles(path: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const p of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      files.set(p, await Deno.readFile(p));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return files;
}

Deno.test("a new store records both directions and reads them back after reopening", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    await store.recordOutgoing(out("m1", BOB, "hello Bob"), "sent");
    assert.equal(await store.recordIncoming(inc("m2", BOB, "hi, 👋 ünïcode")), true);
    await store.setState("m1", "delivered");
    await store.close();
    await store.close(); // closing twice is harmless

    const again = await HistoryStore.open(path, { key });
    try {
      assert.deepEqual(await again.history(BOB), [
        {
          id: "m1",
          peer: BOB,
          peerName: "Bob",
          direction: "out",
          text: "hello Bob",
          sentAt: 1_700_000_000_000,
          receivedAt: null,
          state: "delivered",
        },
        {
          id: "m2",
          peer: BOB,
          peerName: "Alice",
          direction: "in",
          text: "hi, 👋 ünïcode",
          sentAt: 1_700_000_000_000,
          receivedAt: 1_700_000_000_500,
          state: "delivered",
        },
      ]);
      assert.equal(again.has("m1"), true);
      assert.equal(again.has("m2"), true);
      assert.equal(again.has("m3"), false);
    } finally {
      await again.close();
    }
    raw(path, (db) => {
      assert.deepEqual({ ...db.prepare("PRAGMA integrity_check").get() }, {
        integrity_check: "ok",
      });
      assert.deepEqual({ ...db.prepare("PRAGMA user_version").get() }, {
        user_version: SCHEMA_VERSION,
      });
      assert.deepEqual({ ...db.prepare("PRAGMA journal_mode").get() }, { journal_mode: "wal" });
    });
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("history pages back with before and limit across many messages", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), {
      key: generateKey(),
      durable: "normal",
    });
    try {
      const expected: string[] = [];
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 237; i++) {
        const id = `bob-${i}`;
        expected.push(id);
        writes.push(
          i % 3 === 0
            ? store.recordIncoming(inc(id, BOB, `text ${i}`))
            : store.recordOutgoing(out(id, BOB, `text ${i}`), "sent"),
        );
        // Another conversation interleaved, which must not show up in Bob's pages.
        writes.push(store.recordOutgoing(out(`carol-${i}`, CAROL, `other ${i}`), "sent"));
      }
      await Promise.all(writes);

      const first = await store.history(BOB);
      assert.equal(first.length, 50);
      assert.deepEqual(first.map((m) => m.id), expected.slice(-50));
      assert.ok(first.every((m) => m.text === `text ${m.id.slice(4)}`));

      const pages: string[][] = [];
      let before: string | undefined = undefined;
      for (;;) {
        const page: { id: string }[] = await store.history(BOB, { limit: 40, before });
        if (page.length === 0) break;
        assert.ok(page.length <= 40);
        pages.unshift(page.map((m) => m.id));
        before = page[0].id;
      }
      assert.equal(pages.length, Math.ceil(237 / 40));
      assert.equal(pages[0].length, 237 % 40);
      assert.deepEqual(pages.flat(), expected);

      assert.deepEqual(await store.history(BOB, { limit: 0 }), []);
      assert.deepEqual((await store.history(BOB, { limit: 1000 })).map((m) => m.id), expected);
      assert.deepEqual(await store.history("ff".repeat(32)), []);
      await assert.rejects(store.history(BOB, { before: "no-such-id" }), StoreError);
      await assert.rejects(store.history(BOB, { limit: -1 }), RangeError);
      await assert.rejects(store.history(BOB, { limit: 1.5 }), RangeError);
    } finally {
      await store.close();
    }
  });
});

Deno.test("states change, and the outbox holds undelivered messages in insertion order", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    // sentAt deliberately not monotonic: the outbox follows insertion order, not clocks.
    const sentAts = [50, 10, 40, 20, 30, 5, 60, 1];
    for (const [i, sentAt] of sentAts.entries()) {
      await store.recordOutgoing(out(`q${i}`, BOB, `queued ${i}`, sentAt), "queued");
      await store.recordOutgoing(out(`c${i}`, CAROL, `carol ${i}`, sentAt), "sent");
    }
    assert.deepEqual(store.outboxPeers(), [BOB, CAROL].sort());
    assert.deepEqual(
      (await store.outbox(BOB)).map((m) => [m.id, m.state, m.text]),
      sentAts.map((_, i) => [`q${i}`, "queued", `queued ${i}`]),
    );

    await store.setState("q0", "sent");
    await store.setState("q1", "delivered");
    await store.setState("q2", "failed");
    await store.setState("unknown-id", "delivered"); // no-op
    for (let i = 0; i < sentAts.length; i++) await store.setState(`c${i}`, "delivered");

    const expectedOutbox = ["q0", "q3", "q4", "q5", "q6", "q7"];
    assert.deepEqual((await store.outbox(BOB)).map((m) => m.id), expectedOutbox);
    assert.equal((await store.outbox(BOB))[0].state, "sent");
    assert.deepEqual(await store.outbox(CAROL), []);
    assert.deepEqual(store.outboxPeers(), [BOB]);
    const states = Object.fromEntries((await store.history(BOB)).map((m) => [m.id, m.state]));
    assert.equal(states.q1, "delivered");
    assert.equal(states.q2, "failed");
    await assert.rejects(store.setState("q3", "lost" as "sent"), RangeError);
    await assert.rejects(
      store.recordOutgoing(out("x", BOB, "x"), "delivered" as "sent"),
      RangeError,
    );
    // A malformed message is refused alone; the writes batched with it still land.
    const batch = [
      store.recordOutgoing(out("ok1", BOB, "fine"), "queued"),
      store.recordOutgoing(out("bad1", BOB, "x", 1.5), "queued"),
      store.recordIncoming({ ...inc("bad2", BOB, "x"), receivedAt: Number.NaN }),
      store.recordIncoming(inc("", BOB, "empty id")),
      store.recordIncoming({ ...inc("bad3", BOB, "x"), text: 42 as unknown as string }),
      store.recordOutgoing(out("ok2", BOB, "fine too"), "queued"),
    ];
    const outcomes = await Promise.allSettled(batch);
    assert.deepEqual(outcomes.map((o) => o.status), [
      "fulfilled",
      "rejected",
      "rejected",
      "rejected",
      "rejected",
      "fulfilled",
    ]);
    assert.ok(outcomes.every((o) => o.status === "fulfilled" || o.reason instanceof RangeError));
    assert.deepEqual((await store.outbox(BOB)).slice(-2).map((m) => m.id), ["ok1", "ok2"]);
    await store.setState("ok1", "failed");
    await store.setState("ok2", "failed");
    // setState leaves incoming messages alone.
    await store.recordIncoming(inc("in1", BOB, "incoming"));
    await store.setState("in1", "queued");
    assert.equal((await store.history(BOB)).at(-1)?.state, "delivered");
    await store.close();

    // The outbox survives a restart.
    const again = await HistoryStore.open(path, { key });
    try {
      assert.deepEqual(again.outboxPeers(), [BOB]);
      assert.deepEqual((await again.outbox(BOB)).map((m) => m.id), expectedOutbox);
    } finally {
      await again.close();
    }
  });
});

Deno.test("setStates changes many outgoing messages in one write, in request order", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), {
      key: generateKey(),
      durable: "normal",
    });
    try {
      for (let i = 0; i < 5; i++) await store.recordOutgoing(out(`s${i}`, BOB, `m ${i}`), "sent");
      await store.recordIncoming(inc("in1", BOB, "incoming"));
      // Unknown ids and incoming messages are left alone; one id works like setState.
      await store.setStates(["s0", "s2", "unknown-id", "in1"], "delivered");
      await store.setStates(["s4"], "failed");
      await store.setStates([], "delivered"); // nothing to do
      assert.deepEqual((await store.outbox(BOB)).map((m) => m.id), ["s1", "s3"]);
      const states = Object.fromEntries((await store.history(BOB)).map((m) => [m.id, m.state]));
      assert.deepEqual(states, {
        s0: "delivered",
        s1: "sent",
        s2: "delivered",
        s3: "sent",
        s4: "failed",
        in1: "delivered",
      });
      // Not awaited, in one batch: applied in the order requested, the last one wins.
      const ids = ["s1", "s3"];
      const writes = [
        store.setStates(ids, "failed"),
        store.setState("s1", "queued"),
        store.setStates(ids, "sent"),
      ];
      ids.push("s0"); // the store keeps its own copy of the list
      await Promise.all(writes);
      assert.deepEqual(
        (await store.outbox(BOB)).map((m) => [m.id, m.state]),
        [["s1", "sent"], ["s3", "sent"]],
      );
      assert.equal((await store.history(BOB))[0].state, "delivered");
      await assert.rejects(store.setStates(["s1"], "lost" as "sent"), RangeError);
      await assert.rejects(store.setStates([42 as unknown as string], "sent"), RangeError);
    } finally {
      await store.close();
    }
    await assert.rejects(store.setStates(["s1"], "sent"), StoreError);
  });
});

Deno.test("reads wait for writes requested before them", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), {
      key: generateKey(),
      durable: "normal",
    });
    try {
      const write = store.recordOutgoing(out("w1", BOB, "not awaited"), "queued");
      assert.deepEqual((await store.outbox(BOB)).map((m) => m.id), ["w1"]);
      const change = store.setState("w1", "delivered");
      assert.deepEqual(await store.outbox(BOB), []);
      await Promise.all([write, change]);
    } finally {
      await store.close();
    }
  });
});

Deno.test("incoming messages are de-duplicated by id, also within one batch", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), {
      key: generateKey(),
      durable: "normal",
    });
    try {
      assert.equal(await store.recordIncoming(inc("d1", ALICE, "first")), true);
      assert.equal(await store.recordIncoming(inc("d1", ALICE, "retransmitted")), false);

      // Same id three times in one tick: one insert wins.
      const same = await Promise.all([
        store.recordIncoming(inc("d2", ALICE, "a")),
        store.recordIncoming(inc("d2", ALICE, "b")),
        store.recordIncoming(inc("d2", ALICE, "c")),
      ]);
      assert.deepEqual(same, [true, false, false]);

      // An outgoing duplicate id is a no-op that keeps the first message.
      await store.recordOutgoing(out("o1", ALICE, "original"), "queued");
      await store.recordOutgoing(out("o1", ALICE, "replacement"), "sent");
      // An incoming message may not reuse an id we already have in the other direction.
      assert.equal(await store.recordIncoming(inc("o1", ALICE, "collision")), false);

      const all = await store.history(ALICE);
      assert.deepEqual(all.map((m) => [m.id, m.text]), [
        ["d1", "first"],
        ["d2", "a"],
        ["o1", "original"],
      ]);
      assert.equal(all[2].state, "queued");
      assert.deepEqual(store.conversations().map((c) => c.count), [3]);
    } finally {
      await store.close();
    }
  });
});

Deno.test("group commit: many unawaited writes all resolve, each stored once, each durable when resolved", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const store = await HistoryStore.open(path, { key: generateKey() });
    const reader = new DatabaseSync(path);
    try {
      const count = reader.prepare("SELECT count(*) AS n FROM messages WHERE id = ?");
      const n = 3000;
      const seen: Promise<{ isNew: boolean; committed: number }>[] = [];
      // Checked as each promise resolves: another connection already sees the row.
      const write = (id: string, text: string) =>
        seen.push(
          store.recordIncoming(inc(id, ALICE, text)).then((isNew) => ({
            isNew,
            committed: (count.get(id) as { n: number }).n,
          })),
        );
      for (let i = 0; i < n; i++) {
        write(`g${i}`, `burst ${i}`);
        // Every tenth message also arrives a second time in the same burst.
        if (i % 10 === 0) write(`g${i}`, `again ${i}`);
      }
      const settled = await Promise.all(seen);
      assert.equal(settled.filter((s) => s.isNew).length, n);
      assert.equal(settled.filter((s) => !s.isNew).length, n / 10);
      assert.ok(settled.every((s) => s.committed === 1));

      // Writes requested while the first burst commits form later batches, and all land too.
      const more: Promise<void>[] = [];
      for (let i = 0; i < 500; i++) {
        more.push(store.recordOutgoing(out(`h${i}`, ALICE, `more ${i}`), "sent"));
        if (i % 100 === 0) await Promise.resolve();
      }
      await Promise.all(more);

      const total = reader.prepare("SELECT count(*) AS n, count(DISTINCT id) AS d FROM messages")
        .get() as { n: number; d: number };
      assert.deepEqual({ ...total }, { n: n + 500, d: n + 500 });
      const texts = (await store.history(ALICE, { limit: n + 500 })).map((m) => m.text);
      assert.equal(texts[0], "burst 0");
      assert.equal(texts[n - 1], `burst ${n - 1}`);
      assert.equal(texts.at(-1), "more 499");
    } finally {
      reader.close();
      await store.close();
    }
    raw(path, (db) => {
      assert.equal(
        (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
          .integrity_check,
        "ok",
      );
    });
  });
});

/**
 * Counts the transactions in a WAL file: valid frames (salts matching the header) whose
 * "database size after commit" field is non-zero are commit frames, one per transaction.
 */
async function walCommits(path: string): Promise<number> {
  const wal = await Deno.readFile(`${path}-wal`);
  const header = new DataView(wal.buffer, wal.byteOffset, wal.byteLength);
  const pageSize = header.getUint32(8);
  const salt1 = header.getUint32(16);
  const salt2 = header.getUint32(20);
  let commits = 0;
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    if (header.getUint32(at + 8) !== salt1 || header.getUint32(at + 12) !== salt2) break;
    if (header.getUint32(at + 4) !== 0) commits++;
  }
  return commits;
}

Deno.test("writes requested in one tick are committed in one transaction", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const store = await HistoryStore.open(path, { key: generateKey(), durable: "normal" });
    try {
      await store.recordOutgoing(out("first", BOB, "before the burst"), "sent");
      const before = await walCommits(path);
      assert.ok(before >= 1);
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) writes.push(store.recordIncoming(inc(`t${i}`, BOB, `m ${i}`)));
      writes.push(store.recordOutgoing(out("t-out", BOB, "queued one"), "queued"));
      writes.push(store.setState("first", "delivered"));
      await Promise.all(writes);
      assert.equal(await walCommits(path), before + 1);

      // One more write is one more transaction: the count above can move.
      await store.recordIncoming(inc("t-last", BOB, "alone"));
      assert.equal(await walCommits(path), before + 2);
    } finally {
      await store.close();
    }
  });
});

Deno.test("a deferred state write shares the next commit, or commits alone after DEFER_MS", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    // As stored (schema version 4: 0 queued, 1 sent, 2 delivered, 3 failed), read by another
    // connection: what is committed.
    const codes = ["queued", "sent", "delivered", "failed"];
    const stateOf = (id: string) =>
      codes[
        raw(path, (db) =>
          db.prepare("SELECT state FROM messages WHERE id = ?").get(id)?.state as number)
      ];
    try {
      for (const id of ["d1", "d2", "d3", "d4"]) {
        await store.recordOutgoing(out(id, BOB, id), "sent");
      }
      const before = await walCommits(path);

      // Alone: nothing is committed at once (its timer cannot fire before this shorter one),
      // then it commits by itself.
      const alone = store.setStates(["d1"], "delivered", { deferred: true });
      await new Promise((r) => setTimeout(r, DEFER_MS / 4));
      assert.equal(stateOf("d1"), "sent");
      await alone;
      assert.equal(stateOf("d1"), "delivered");
      assert.equal(await walCommits(path), before + 1);

      // With a write that asks for a commit: one transaction for both.
      const riding = store.setStates(["d2"], "delivered", { deferred: true });
      await store.recordIncoming(inc("carrier", BOB, "carrier"));
      assert.equal(stateOf("d2"), "delivered");
      await riding;
      assert.equal(await walCommits(path), before + 2);

      // A read that waits for earlier writes sees a deferred one.
      store.setStates(["d3"], "delivered", { deferred: true });
      const page = await store.history(BOB, { limit: 10 });
      assert.equal(page.find((m) => m.id === "d3")?.state, "delivered");

      // Close commits what is still deferred (and leaves no timer behind).
      const last = store.setStates(["d4"], "failed", { deferred: true });
      await store.close();
      await last;
      assert.equal(stateOf("d4"), "failed");
    } finally {
      await store.close();
    }
  });
});

Deno.test("incoming messages stay unshown until marked, across restarts, oldest first", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();

    let store = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.equal(await store.recordIncoming(inc("a1", BOB, "one")), true);
      await store.recordOutgoing(out("o1", BOB, "mine"), "sent");
      assert.equal(await store.recordIncoming(inc("a2", CAROL, "two")), true);
      assert.equal(await store.recordIncoming(inc("a3", BOB, "three")), true);
      assert.equal(await store.recordIncoming(inc("a1", BOB, "one again")), false);
      assert.deepEqual(await unshownIds(store), ["a1", "a2", "a3"]);
      const [first] = await store.unshown();
      assert.deepEqual([first.text, first.peer, first.direction], ["one", BOB, "in"]);

      // Marking a later one must not hide an earlier unmarked one, now or after a restart.
      await store.markShown(["a2"]);
      assert.deepEqual(await unshownIds(store), ["a1", "a3"]);
    } finally {
      await store.close();
    }
    store = await HistoryStore.open(path, { key, durable: "full" });
    try {
      assert.deepEqual(await unshownIds(store), ["a1", "a3"]);
      await store.markShown(["a1", "a3", "o1", "never-stored"]);
      assert.deepEqual(await unshownIds(store), []);
      assert.equal(await store.recordIncoming(inc("a4", BOB, "four")), true);
      await assert.rejects(store.markShown([1 as unknown as string]), RangeError);
    } finally {
      await store.close();
    }
    // Not marked before the (clean) close: still unshown.
    store = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.deepEqual(await unshownIds(store), ["a4"]);
      await store.markShown(["a4"]);
    } finally {
      await store.close();
    }
    store = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.deepEqual(await unshownIds(store), []);
      // The mark is one row in meta, however many messages were shown.
      raw(path, (db) => {
        const row = db.prepare("SELECT value FROM meta WHERE key = 'shown_through'").get();
        assert.equal(Number(row?.value), 5); // a1, o1, a2, a3, a4
      });
    } finally {
      await store.close();
    }
  });
});

Deno.test("unmarkShown takes a mark back, now and across restarts, keeping the others shown", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();

    let store = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      for (const id of ["a1", "a2", "a3", "a4"]) await store.recordIncoming(inc(id, BOB, id));
      await store.recordOutgoing(out("o1", BOB, "mine"), "sent");
      // All shown in one go: the mark covers them all.
      await store.markShown(["a1", "a2", "a3", "a4"]);
      assert.deepEqual(await unshownIds(store), []);
      // The output failed for a2 and a3: taken back, below the mark; a1 and a4 stay shown.
      await store.unmarkShown(["a2", "a3", "o1", "never-stored", "a2"]);
      assert.deepEqual(await unshownIds(store), ["a2", "a3"]);
    } finally {
      await store.close();
    }
    store = await HistoryStore.open(path, { key, durable: "full" });
    try {
      assert.deepEqual(await unshownIds(store), ["a2", "a3"]);
      // Taking back one that is still unshown changes nothing; marking again works as usual.
      await store.unmarkShown(["a3"]);
      await store.markShown(["a3"]);
      assert.deepEqual(await unshownIds(store), ["a2"]);
      await store.recordIncoming(inc("a5", BOB, "a5"));
      await store.markShown(["a5"]);
      await store.unmarkShown(["a5"]);
    } finally {
      await store.close();
    }
    store = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.deepEqual(await unshownIds(store), ["a2", "a5"]);
      await store.markShown(["a2", "a5"]);
      assert.deepEqual(await unshownIds(store), []);
    } finally {
      await store.close();
    }
    store = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.deepEqual(await unshownIds(store), []);
      await store.close();
      await assert.rejects(store.unmarkShown(["a1"]), StoreError);
    } finally {
      await store.close();
    }
  });
});

Deno.test("a failed batch leaves nothing unshown; a failed mark still counts and is written next time", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "full" });
    try {
      // An insert of id "boom" fails, and with it the whole batch it is in.
      raw(path, (db) =>
        db.exec(`CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.id = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END`));
      await store.recordIncoming(inc("a", BOB, "stored"));
      const failed = [
        store.recordIncoming(inc("x", BOB, "rolled back")),
        store.recordIncoming(inc("boom", BOB, "fails")),
      ];
      for (const r of await Promise.allSettled(failed)) assert.equal(r.status, "rejected");
      assert.equal(store.has("x"), false);
      assert.deepEqual(await unshownIds(store), ["a"]);

      // Marks cannot be written: the call fails, but a was shown and is not offered again...
      raw(path, (db) =>
        db.exec(`CREATE TRIGGER nomark BEFORE UPDATE ON meta
                 BEGIN SELECT RAISE(ABORT, 'no marks'); END`));
      await assert.rejects(store.markShown(["a"]), StoreError);
      assert.deepEqual(await unshownIds(store), []);
      // ...and the next call, once writing works again, saves it.
      raw(path, (db) => db.exec("DROP TRIGGER nomark"));
      await store.markShown([]);
    } finally {
      await store.close();
    }
    const again = await HistoryStore.open(path, { key, durable: "full" });
    try {
      assert.deepEqual(await unshownIds(again), []);
    } finally {
      await again.close();
    }
  });
});

Deno.test("a delivered message never goes back to sent or queued", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), {
      key: generateKey(),
      durable: "normal",
    });
    try {
      await store.recordOutgoing(out("o1", BOB, "one"), "queued");
      await store.recordOutgoing(out("o2", BOB, "two"), "queued");
      await store.setStates(["o1", "o2"], "delivered");
      // A `sent` whose write finished after the ACK was handled comes late: it changes nothing.
      await store.setState("o1", "sent");
      await store.setStates(["o2"], "queued");
      const states = (await store.history(BOB)).map((m) => m.state);
      assert.deepEqual(states, ["delivered", "delivered"]);
      await store.setState("o1", "failed");
      assert.equal((await store.history(BOB))[0].state, "failed");
    } finally {
      await store.close();
    }
  });
});

/**
 * Turns a current database back into what version 3 wrote: messages name their peer by
 * fingerprint, no peers table (the inverse of the 3 -> 4 migration, keeping every seq).
 */
function downgradeToV3(path: string): void {
  raw(path, (db) => {
    db.exec(`
      BEGIN;
      ALTER TABLE messages RENAME TO messages_v4;
      DROP INDEX messages_peer_seq;
      DROP INDEX messages_outbox;
      CREATE TABLE messages (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        peer        TEXT NOT NULL,
        peer_name   TEXT NOT NULL,
        direction   TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        body        TEXT NOT NULL,
        sent_at     INTEGER NOT NULL,
        received_at INTEGER,
        state       TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'delivered', 'failed'))
      );
      CREATE INDEX messages_peer_seq ON messages (peer, seq);
      CREATE INDEX messages_outbox ON messages (peer, seq)
        WHERE direction = 'out' AND state IN ('queued', 'sent');
      INSERT INTO messages
        SELECT m.seq, m.id, p.fingerprint, m.peer_name,
               CASE m.direction WHEN 0 THEN 'in' WHEN 1 THEN 'out' END,
               m.body, m.sent_at, m.received_at,
               CASE m.state WHEN 0 THEN 'queued' WHEN 1 THEN 'sent' WHEN 2 THEN 'delivered'
                            WHEN 3 THEN 'failed' END
        FROM messages_v4 m JOIN peers p ON p.id = m.peer;
      DROP TABLE messages_v4;
      DROP TABLE peers;
      PRAGMA user_version = 3;
      COMMIT;
    `);
  });
}

Deno.test("a schema version 3 database becomes version 4 with every message, seq, mark and outbox kept", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    await store.recordIncoming(inc("b1", BOB, "from bob, shown"));
    await store.recordOutgoing(out("b2", BOB, "to bob, delivered"), "sent");
    await store.setState("b2", "delivered");
    await store.recordOutgoing(out("c1", CAROL, "to carol, queued"), "queued");
    await store.recordIncoming(inc("b3", BOB, "from bob, not shown"));
    await store.recordOutgoing(out("b4", BOB, "to bob, sent"), "sent");
    await store.markShown(["b1"]);
    const before = {
      bob: await store.history(BOB),
      carol: await store.history(CAROL),
      conversations: store.conversations(),
    };
    await store.close();
    downgradeToV3(path);
    assert.equal(userVersion(path), 3);
    // The wrong key is refused before the migration: the file stays as version 3 wrote it.
    await assert.rejects(
      HistoryStore.open(path, { key: generateKey(), durable: "normal" }),
      (e) => e instanceof StoreError && /wrong history key/.test(e.message),
    );
    assert.equal(userVersion(path), 3);

    const again = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.equal(userVersion(path), 4);
      assert.deepEqual(await again.history(BOB), before.bob);
      assert.deepEqual(await again.history(CAROL), before.carol);
      assert.deepEqual(again.conversations(), before.conversations);
      assert.deepEqual((await again.unshown()).map((m) => m.id), ["b3"]);
      assert.deepEqual(again.outboxPeers(), [BOB, CAROL].sort());
      assert.deepEqual((await again.outbox(BOB)).map((m) => m.id), ["b4"]);
      assert.deepEqual((await again.outbox(CAROL)).map((m) => m.id), ["c1"]);
      // New rows go after the migrated ones, for known and new peers alike.
      await again.recordIncoming(inc("b5", BOB, "after the migration"));
      await again.recordOutgoing(out("a1", ALICE, "a new peer"), "queued");
      assert.deepEqual((await again.history(BOB)).map((m) => m.id), ["b1", "b2", "b3", "b4", "b5"]);
      assert.deepEqual(again.conversations().map((c) => c.peer), [ALICE, BOB, CAROL]);
      assert.equal(await again.recordIncoming(inc("b3", BOB, "a duplicate")), false);
    } finally {
      await again.close();
    }
    raw(path, (db) => {
      assert.equal(
        (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
          .integrity_check,
        "ok",
      );
      assert.deepEqual(
        db.prepare("SELECT id, fingerprint FROM peers ORDER BY id").all().map((r) => ({ ...r })),
        [{ id: 1, fingerprint: BOB }, { id: 2, fingerprint: CAROL }, { id: 3, fingerprint: ALICE }],
      );
      assert.deepEqual(
        db.prepare("SELECT seq, id FROM messages ORDER BY seq").all().map((r) => [r.seq, r.id]),
        [[1, "b1"], [2, "b2"], [3, "c1"], [4, "b3"], [5, "b4"], [6, "b5"], [7, "a1"]],
      );
      // Direction 0 in, 1 out; state 0 queued, 1 sent, 2 delivered, 3 failed (docs/STORAGE.md).
      assert.deepEqual(
        db.prepare("SELECT direction, state FROM messages ORDER BY seq").all()
          .map((r) => [r.direction, r.state]),
        [[0, 2], [1, 2], [1, 0], [0, 2], [1, 1], [0, 2], [1, 0]],
      );
    });
  });
});

Deno.test("a schema version 2 database becomes version 4 with every message counted as shown (never with a wrong key)", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    await store.recordIncoming(inc("old1", BOB, "seen long ago"));
    await store.recordIncoming(inc("old2", BOB, "seen long ago too"));
    await store.close();
    // What version 2 wrote: the tables of version 3, no shown_through.
    downgradeToV3(path);
    raw(path, (db) => {
      db.exec("DELETE FROM meta WHERE key LIKE 'shown_%'; PRAGMA user_version = 2;");
    });
    const version = () => userVersion(path);
    // The wrong key is refused before the migration: the file stays as version 2 wrote it.
    await assert.rejects(
      HistoryStore.open(path, { key: generateKey(), durable: "normal" }),
      (e) => e instanceof StoreError && /wrong history key/.test(e.message),
    );
    assert.equal(version(), 2);
    const again = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.deepEqual(await again.unshown(), []);
      assert.equal((await again.history(BOB)).length, 2);
    } finally {
      await again.close();
    }
    assert.equal(userVersion(path), 4);
    raw(path, (db) => {
      assert.equal(
        db.prepare("SELECT value FROM meta WHERE key = 'shown_through'").get()?.value,
        "2",
      );
    });
  });
});

Deno.test("close flushes pending writes; a closed store refuses work", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    const pending = store.recordOutgoing(out("p1", BOB, "in flight at close"), "queued");
    await store.close();
    await pending;
    await assert.rejects(store.recordOutgoing(out("p2", BOB, "late"), "queued"), StoreError);
    await assert.rejects(store.recordIncoming(inc("p3", BOB, "late")), StoreError);
    await assert.rejects(store.setState("p1", "sent"), StoreError);
    await assert.rejects(store.history(BOB), StoreError);
    await assert.rejects(store.outbox(BOB), StoreError);
    assert.throws(() => store.has("p1"), StoreError);
    assert.throws(() => store.outboxPeers(), StoreError);
    assert.throws(() => store.conversations(), StoreError);

    const again = await HistoryStore.open(path, { key });
    try {
      assert.deepEqual((await again.outbox(BOB)).map((m) => m.text), ["in flight at close"]);
    } finally {
      await again.close();
    }
  });
});

Deno.test("conversations list each peer once, most recent first, with the latest name", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), {
      key: generateKey(),
      durable: "normal",
    });
    try {
      assert.deepEqual(store.conversations(), []);
      await store.recordOutgoing({ ...out("1", BOB, "x", 100), peerName: "Bob" }, "sent");
      await store.recordIncoming({ ...inc("2", CAROL, "y", 200), peerName: "Carol" });
      await store.recordIncoming({ ...inc("3", BOB, "z", 300), peerName: "Robert" });
      await store.recordOutgoing({ ...out("4", ALICE, "w", 400), peerName: "Alice" }, "queued");
      assert.deepEqual(store.conversations(), [
        { peer: ALICE, peerName: "Alice", count: 1, lastAt: 400 },
        { peer: BOB, peerName: "Robert", count: 2, lastAt: 300 },
        { peer: CAROL, peerName: "Carol", count: 1, lastAt: 200 },
      ]);
    } finally {
      await store.close();
    }
  });
});

Deno.test("no message text is readable in the database, WAL or shm files", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const marker = "ZQX-secret-marker-7f3a";
    const peerName = "PlainNameVisible";
    const store = await HistoryStore.open(path, { key: generateKey() });
    try {
      for (let i = 0; i < 200; i++) {
        await Promise.all([
          store.recordOutgoing({ ...out(`o${i}`, BOB, `${marker} out ${i}`), peerName }, "queued"),
          store.recordIncoming({ ...inc(`i${i}`, BOB, `in ${i} ${marker}`), peerName }),
        ]);
      }
      await store.setState("o1", "delivered");
      assert.equal((await store.history(BOB, { limit: 1 }))[0].text, `in 199 ${marker}`);

      const open = await dbFiles(path);
      assert.ok(open.has(`${path}-wal`), "the WAL file exists while the store is open");
      const all = [...open.values()];
      // Control: the grep does find what is stored in plaintext (the peer name), so it can fail.
      assert.ok(all.some((bytes) => contains(bytes, new TextEncoder().encode(peerName))));
      for (const [file, bytes] of open) {
        assert.equal(contains(bytes, new TextEncoder().encode(marker)), false, file);
        assert.equal(contains(bytes, new TextEncoder().encode("secret")), false, file);
      }
    } finally {
      await store.close();
    }
    const closed = await dbFiles(path);
    assert.ok(closed.size >= 1);
    for (const [file, bytes] of closed) {
      assert.equal(contains(bytes, new TextEncoder().encode(marker)), false, file);
    }
  });
});

Deno.test("opening with the wrong history key fails clearly and changes nothing", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    await store.recordIncoming(inc("k1", BOB, "kept"));
    await store.close();

    await assert.rejects(
      HistoryStore.open(path, { key: generateKey() }),
      (e) => e instanceof StoreError && /wrong history key/.test(e.message),
    );
    await assert.rejects(HistoryStore.open(path, { key: "not a key" }), StoreError);

    const again = await HistoryStore.open(path, { key });
    try {
      assert.deepEqual((await again.history(BOB)).map((m) => m.text), ["kept"]);
    } finally {
      await again.close();
    }
  });
});

/** Builds a schema version 1 database by hand, as the first release wrote it. */
async function makeV1(path: string, key: string): Promise<void> {
  const fernet = await Fernet.create(key);
  const rows: [string, string, "in" | "out", string, number, number][] = [
    ["v1-a", BOB, "out", "old queued", 1000, 0],
    ["v1-b", BOB, "in", "old incoming", 900, 2],
    ["v1-c", CAROL, "out", "old sent", 1100, 1],
    ["v1-d", BOB, "out", "old delivered", 800, 2],
    ["v1-e", BOB, "out", "old failed", 1200, 3],
    ["v1-f", BOB, "out", "old sent to bob", 700, 1],
  ];
  const tokens = await Promise.all(rows.map((r) => fernet.encrypt(r[3])));
  raw(path, (db) => {
    db.exec(`
      CREATE TABLE messages (
        id        TEXT PRIMARY KEY,
        peer      TEXT NOT NULL,
        direction TEXT NOT NULL,
        body      TEXT NOT NULL,
        sent_at   INTEGER NOT NULL,
        state     INTEGER NOT NULL
      );
      CREATE INDEX messages_peer ON messages (peer, sent_at);
      PRAGMA user_version = 1;
    `);
    const insert = db.prepare("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)");
    rows.forEach(([id, peer, direction, , sentAt, state], i) => {
      insert.run(id, peer, direction, tokens[i], sentAt, state);
    });
  });
}

Deno.test("a schema version 1 database is migrated to version 4 (through 2 and 3)", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    await makeV1(path, key);

    const store = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      assert.deepEqual(await store.history(BOB), [
        {
          id: "v1-a",
          peer: BOB,
          peerName: "",
          direction: "out",
          text: "old queued",
          sentAt: 1000,
          receivedAt: null,
          state: "queued",
        },
        {
          id: "v1-b",
          peer: BOB,
          peerName: "",
          direction: "in",
          text: "old incoming",
          sentAt: 900,
          receivedAt: null,
          state: "delivered",
        },
        {
          id: "v1-d",
          peer: BOB,
          peerName: "",
          direction: "out",
          text: "old delivered",
          sentAt: 800,
          receivedAt: null,
          state: "delivered",
        },
        {
          id: "v1-e",
          peer: BOB,
          peerName: "",
          direction: "out",
          text: "old failed",
          sentAt: 1200,
          receivedAt: null,
          state: "failed",
        },
        {
          id: "v1-f",
          peer: BOB,
          peerName: "",
          direction: "out",
          text: "old sent to bob",
          sentAt: 700,
          receivedAt: null,
          state: "sent",
        },
      ]);
      assert.deepEqual((await store.outbox(BOB)).map((m) => m.id), ["v1-a", "v1-f"]);
      assert.deepEqual(store.outboxPeers(), [BOB, CAROL].sort());
      // New writes go after the migrated rows and carry the new columns.
      assert.equal(await store.recordIncoming(inc("v1-b", BOB, "dup of migrated")), false);
      assert.equal(await store.recordIncoming(inc("new", BOB, "after migration")), true);
      const last = (await store.history(BOB, { limit: 1 }))[0];
      assert.deepEqual([last.id, last.peerName, last.receivedAt], [
        "new",
        "Alice",
        1_700_000_000_500,
      ]);
      assert.equal(store.conversations().find((c) => c.peer === CAROL)?.peerName, "");
    } finally {
      await store.close();
    }
    assert.equal(userVersion(path), 4);
    raw(path, (db) => {
      assert.equal(
        (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
          .integrity_check,
        "ok",
      );
      const tables = db.prepare("SELECT name FROM sqlite_schema ORDER BY name").all()
        .map((r) => r.name);
      assert.deepEqual(tables, [
        "messages",
        "messages_outbox",
        "messages_peer_seq",
        "meta",
        "peers",
        "sqlite_autoindex_messages_1",
        "sqlite_autoindex_peers_1",
      ]);
    });
    // And the migrated database now has a key check.
    await assert.rejects(HistoryStore.open(path, { key: generateKey() }), /wrong history key/);
  });
});

Deno.test("migrating version 1 with the wrong key fails and leaves the file at version 1", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    await makeV1(path, generateKey());
    await assert.rejects(
      HistoryStore.open(path, { key: generateKey() }),
      (e) => e instanceof StoreError && /wrong history key/.test(e.message),
    );
    assert.equal(userVersion(path), 1);
    raw(path, (db) => {
      assert.equal((db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n, 6);
    });
  });
});

Deno.test("a version 1 row with an unknown state makes the migration fail without changes", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    await makeV1(path, key);
    raw(path, (db) => db.exec("UPDATE messages SET state = 9 WHERE id = 'v1-c'"));
    await assert.rejects(
      HistoryStore.open(path, { key }),
      (e) => e instanceof StoreError && /migrate .* from schema version 1 to 2/.test(e.message),
    );
    assert.equal(userVersion(path), 1);
    raw(path, (db) => {
      const names = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").all()
        .map((r) => r.name);
      assert.deepEqual(names, ["messages"]);
    });
  });
});

Deno.test("a database from a newer schema version is refused with a clear message", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    raw(path, (db) => db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`));
    await assert.rejects(
      HistoryStore.open(path, { key: generateKey() }),
      (e) =>
        e instanceof StoreError && e.message.includes(`version ${SCHEMA_VERSION + 1}`) &&
        /newer p2pchat/.test(e.message),
    );
  });
});

Deno.test("garbage, corrupt and foreign files are refused with StoreError", async () => {
  await withDir(async (dir) => {
    const key = generateKey();

    const garbage = join(dir, "garbage.db");
    await Deno.writeTextFile(garbage, "this is not an SQLite database\n".repeat(200));
    await assert.rejects(HistoryStore.open(garbage, { key }), StoreError);

    // A real history whose first page (the schema) has been overwritten.
    const corrupt = join(dir, "corrupt.db");
    const store = await HistoryStore.open(corrupt, { key, durable: "normal" });
    for (let i = 0; i < 50; i++) await store.recordIncoming(inc(`x${i}`, BOB, "x".repeat(500)));
    // Shown, so that opening reads no message page but the newest one.
    await store.markShown(Array.from({ length: 50 }, (_, i) => `x${i}`));
    await store.close();
    const bytes = await Deno.readFile(corrupt);
    bytes.fill(0xa5, 100, 4096);
    await Deno.writeFile(corrupt, bytes);
    await assert.rejects(HistoryStore.open(corrupt, { key }), StoreError);

    // Some other application's SQLite database.
    const foreign = join(dir, "foreign.db");
    raw(foreign, (db) => db.exec("CREATE TABLE notes (body TEXT)"));
    await assert.rejects(
      HistoryStore.open(foreign, { key }),
      (e) => e instanceof StoreError && /not a p2pchat history database/.test(e.message),
    );
    const otherApp = join(dir, "other_app.db");
    raw(otherApp, (db) => db.exec("PRAGMA application_id = 1234"));
    await assert.rejects(HistoryStore.open(otherApp, { key }), /not a p2pchat history database/);

    await assert.rejects(
      HistoryStore.open(join(dir, "missing", "chat_history.db"), { key }),
      StoreError,
    );
  });
});

Deno.test("a corrupt page found after opening makes reads and writes fail with StoreError", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat_history.db");
    const key = generateKey();
    const store = await HistoryStore.open(path, { key, durable: "normal" });
    for (let i = 0; i < 50; i++) await store.recordIncoming(inc(`x${i}`, BOB, "x".repeat(500)));
    // Shown, so that opening reads no message page but the newest one.
    await store.markShown(Array.from({ length: 50 }, (_, i) => `x${i}`));
    await store.close();
    // The schema (page 1), the key check (page 2) and the newest messages (the last pages) stay
    // intact; three pages of the first messages do not.
    const bytes = await Deno.readFile(path);
    assert.ok(bytes.length >= 4096 * 8);
    bytes.fill(0xa5, 4096 * 7, 4096 * 10);
    await Deno.writeFile(path, bytes);

    const broken = await HistoryStore.open(path, { key, durable: "normal" });
    try {
      await assert.rejects(broken.history(BOB, { limit: 100 }), /malformed/);
      // A write that must read a damaged row (to check its direction) fails as a whole.
      const early = Array.from({ length: 20 }, (_, i) => `x${i}`);
      await assert.rejects(broken.setStates(early, "failed"), StoreError);
    } finally {
      await broken.close();
    }
  });
});

// strace comes from Debian's strace package (CI installs it).
const HAS_STRACE = hasCommand("strace", ["-V"]);
if (!HAS_STRACE) console.warn("history_test: fsync trace tests skipped: strace is not installed");

/** One traced syscall, in the order the trace shows them finishing. */
interface Traced {
  tid: number;
  call: string;
  /** The first argument as strace -y shows it, e.g. `25</tmp/x/chat_history.db-wal>`. */
  fd: string;
  /** For a write to stdout: the line written (without its newline). */
  line?: string;
}

/**
 * Runs tests/store/fsync_child.ts under `strace -f -y` and returns its fsync, fdatasync, pwrite64
 * and stdout writes in order of completion (a call strace shows as unfinished counts where it resumes).
 */
async function traceChild(
  dir: string,
  durable: "full" | "normal",
  opts: { inject?: string } = {},
): Promise<Traced[]> {
  const log = join(dir, "strace.log");
  const child = new URL("./fsync_child.ts", import.meta.url).pathname;
  const inject = opts.inject === undefined ? [] : ["-e", `inject=${opts.inject}`];
  const result = await new Deno.Command("strace", {
    args: ["-f", "-y", "-qq", "-s", "256", "-e", "trace=fsync,fdatasync,write,pwrite64", ...inject]
      .concat(["-o", log])
      .concat([
        Deno.execPath(),
        "run",
        "--allow-all",
        child,
        join(dir, "chat_history.db"),
        durable,
      ]),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(result.success, new TextDecoder().decode(result.stderr));
  const pending = new Map<number, Traced>();
  const calls: Traced[] = [];
  for (const text of (await Deno.readTextFile(log)).split("\n")) {
    const started = text.match(/^(\d+)\s+(\w+)\((\d+<[^>]*>)(?:, "(.*?)\\n")?/);
    const resumed = text.match(/^(\d+)\s+<\.\.\. \w+ resumed>/);
    if (started) {
      const call: Traced = { tid: Number(started[1]), call: started[2], fd: started[3] };
      if (started[4] !== undefined && call.fd.startsWith("1<")) call.line = started[4];
      if (text.includes("<unfinished ...>")) pending.set(call.tid, call);
      else calls.push(call);
    } else if (resumed) {
      const call = pending.get(Number(resumed[1]));
      pending.delete(Number(resumed[1]));
      if (call) calls.push(call);
    }
  }
  return calls;
}

/** Index of the stdout line `line` in a trace. */
function lineAt(calls: Traced[], line: string): number {
  const i = calls.findIndex((c) => c.line === line);
  assert.ok(i >= 0, `"${line}" not in the trace`);
  return i;
}

Deno.test({
  name: "full durability: a write resolves after an fdatasync of the WAL made off the event loop",
  ignore: !HAS_STRACE,
  fn: async () => {
    await withDir(async (dir) => {
      const calls = await traceChild(dir, "full");
      const main = calls[lineAt(calls, "OPEN")].tid;
      const wal = (c: Traced) => c.fd.endsWith("chat_history.db-wal>");
      for (const round of [1, 2]) {
        const between = calls.slice(
          lineAt(calls, `REQUEST ${round}`),
          lineAt(calls, `DURABLE ${round}`),
        );
        // The commit writes the WAL; an fdatasync of it, on another thread, comes after.
        const commit = between.findLastIndex((c) => c.call === "pwrite64" && wal(c));
        assert.ok(commit >= 0, `round ${round}: no WAL write between request and resolve`);
        assert.ok(
          between.slice(commit).some((c) => c.call === "fdatasync" && wal(c) && c.tid !== main),
          `round ${round}: no fdatasync of the WAL on another thread between commit and resolve`,
        );
      }
      // The WAL's directory entry is made durable once, before the first write resolves.
      const dirSyncs = calls.slice(lineAt(calls, "OPEN"), lineAt(calls, "DURABLE 1"))
        .filter((c) => c.call === "fsync" && c.fd.endsWith(`${dir}>`));
      assert.equal(dirSyncs.length, 1);
      // Nothing blocks the event loop's thread on the disk between opening and closing.
      const inUse = calls.slice(lineAt(calls, "OPEN"), lineAt(calls, "DURABLE 2"));
      assert.deepEqual(
        inUse.filter((c) => !c.call.includes("write") && c.tid === main),
        [],
      );
    });
  },
});

Deno.test({
  name: "normal durability: no fsync between a commit and its promise",
  ignore: !HAS_STRACE,
  fn: async () => {
    await withDir(async (dir) => {
      const calls = await traceChild(dir, "normal");
      const inUse = calls.slice(lineAt(calls, "OPEN"), lineAt(calls, "DURABLE 2"));
      assert.deepEqual(
        inUse.filter((c) => !c.call.includes("write") && c.fd.includes("chat_history")),
        [],
      );
      const first = calls.slice(lineAt(calls, "REQUEST 1"), lineAt(calls, "DURABLE 1"));
      assert.ok(first.some((c) => c.call === "pwrite64" && c.fd.endsWith("chat_history.db-wal>")));
    });
  },
});

Deno.test({
  name: "full durability: an fsync that fails (EIO, injected) fails its writes and every later one",
  ignore: !HAS_STRACE,
  fn: async () => {
    await withDir(async (dir) => {
      // Only the WAL syncer calls fdatasync (SQLite and Deno's own caches call fsync).
      const calls = await traceChild(dir, "full", { inject: "fdatasync:error=EIO" });
      const lines = calls.filter((c) => c.line !== undefined).map((c) => c.line);
      assert.deepEqual(lines.slice(0, 2), ["OPEN", "REQUEST 1"]);
      assert.match(
        lines[2]!,
        /^FAILED 1 StoreError: cannot fsync .*chat_history\.db-wal: Input\/output error/,
      );
      // The store stopped for good, and says so before a write is requested (`refusal`): the
      // next write is refused before it reaches a commit.
      assert.deepEqual(lines.slice(3, 5), ["REFUSAL true", "REQUEST 2"]);
      assert.match(lines[5]!, /^FAILED 2 StoreError: cannot fsync/);
      const second = calls.slice(lineAt(calls, "REQUEST 2"), lineAt(calls, "CLOSED"));
      assert.ok(second.findIndex((c) => c.line?.startsWith("FAILED 2")) >= 0);
      assert.deepEqual(
        second.slice(0, second.findIndex((c) => c.line?.startsWith("FAILED 2")))
          .filter((c) => c.call === "pwrite64" && c.fd.endsWith("chat_history.db-wal>")),
        [],
      );
      assert.deepEqual(lines.slice(6), ["REFUSAL true", "CLOSED"]);
    });
  },
});

Deno.test("recordOutgoing calls committed before it resolves, and not when the write fails", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), { key: generateKey() });
    try {
      const order: string[] = [];
      const done = store.recordOutgoing(out("c1", BOB, "hi"), "sent", {
        committed: () => order.push("committed"),
      }).then(() => order.push("durable"));
      assert.deepEqual(order, []);
      await done;
      assert.deepEqual(order, ["committed", "durable"]);
      // An invalid message never reaches a commit.
      let called = false;
      await assert.rejects(
        store.recordOutgoing(out("", BOB, "hi"), "sent", { committed: () => called = true }),
        RangeError,
      );
      assert.equal(called, false);
    } finally {
      await store.close();
    }
  });
});

Deno.test("a committed callback that throws surfaces as an uncaught error; the other writes resolve", async () => {
  const uncaught: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    uncaught.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    await withDir(async (dir) => {
      const store = await HistoryStore.open(join(dir, "chat_history.db"), {
        key: generateKey(),
        durable: "normal",
      });
      try {
        const called: string[] = [];
        await Promise.all([
          store.recordOutgoing(out("t1", BOB, "one"), "sent", {
            committed: () => {
              throw new Error("a caller's bug");
            },
          }),
          store.recordOutgoing(out("t2", BOB, "two"), "sent", {
            committed: () => called.push("t2"),
          }),
        ]);
        assert.deepEqual(called, ["t2"]);
        assert.deepEqual((await store.history(BOB)).map((m) => m.id), ["t1", "t2"]);
        await new Promise((r) => setTimeout(r, 10));
        assert.equal(uncaught.length, 1);
        assert.match(String(uncaught[0]), /a caller's bug/);
      } finally {
        await store.close();
      }
    });
  } finally {
    globalThis.removeEventListener("error", onError);
  }
});

Deno.test("refusal is null while the store takes writes, the reason once it refuses them", async () => {
  await withDir(async (dir) => {
    const store = await HistoryStore.open(join(dir, "chat_history.db"), { key: generateKey() });
    // Read through a call: TypeScript would keep the first assertion's narrowing of the getter.
    const refusal = () => store.refusal;
    assert.equal(refusal(), null);
    await store.recordOutgoing(out("r1", BOB, "hi"), "sent");
    assert.equal(refusal(), null);
    await store.close();
    assert.ok(refusal() instanceof StoreError);
    assert.match(refusal()!.message, /is closed/);
    await assert.rejects(store.recordOutgoing(out("r2", BOB, "late"), "sent"), StoreError);
  });
});

Deno.test("full durability through a symbolic link: the WAL beside the real file is the one fsynced", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(join(dir, "real"));
    await Deno.mkdir(join(dir, "link"));
    const key = generateKey();
    // Created at its real place, then opened through a link to it.
    await (await HistoryStore.open(join(dir, "real", "chat_history.db"), { key })).close();
    await Deno.symlink(join(dir, "real", "chat_history.db"), join(dir, "link", "chat_history.db"));
    const store = await HistoryStore.open(join(dir, "link", "chat_history.db"), { key });
    try {
      await store.recordOutgoing(out("s1", BOB, "through a link"), "sent");
      assert.equal(await store.recordIncoming(inc("s2", BOB, "and back")), true);
      assert.deepEqual((await store.history(BOB)).map((m) => m.text), [
        "through a link",
        "and back",
      ]);
      assert.ok((await Deno.stat(join(dir, "real", "chat_history.db-wal"))).isFile);
    } finally {
      await store.close();
    }
  });
});
