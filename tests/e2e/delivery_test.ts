/**
 * End-to-end delivery (issue 5): the outbox across restarts of either side, `/history`, the
 * `p2pchat history` command, and encryption at rest, all with real `main.ts --headless` processes.
 */

import assert from "node:assert/strict";
import { RUN_FLAGS } from "../../lib/cli/permissions.ts";
import { type Event, PeerProcess, runMain } from "../_helpers/peer_process.ts";
import { hasCommand } from "../_helpers/tools.ts";

/** Long enough for the sender's reconnection backoff (1 s, 2 s, 4 s, 8 s...) to reach a peer. */
const RECONNECT_MS = 25_000;

/** A TCP port that was free a moment ago, so a peer can be restarted on the same port. */
function freePort(): number {
  const l = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Connects `a` to `b` and waits until both sides say `connected`. */
async function connect(a: PeerProcess, b: PeerProcess): Promise<void> {
  const seenA = a.events.length;
  const seenB = b.events.length;
  await a.command(`/connect ${b.address}`);
  await a.waitFor((e) => e.type === "connected" && a.events.indexOf(e) >= seenA);
  await b.waitFor((e) => e.type === "connected" && b.events.indexOf(e) >= seenB);
}

/** Sends `text` from `p` to `to` and waits for the `sent` or `queued` event of that send. */
async function send(p: PeerProcess, to: string, text: string): Promise<Event> {
  const before = new Set(p.events.filter(isAccepted).map((e) => e.id));
  await p.command(`/send ${to} ${text}`);
  return await p.waitFor((e) => isAccepted(e) && !before.has(e.id));
}

function isAccepted(e: Event): boolean {
  return e.type === "sent" || e.type === "queued";
}

/** Waits until `p` has a `delivered` event for every id. */
async function delivered(p: PeerProcess, ids: string[], timeoutMs = 20_000): Promise<void> {
  const want = new Set(ids);
  const done = () => {
    const got = new Set(p.all("delivered").map((e) => e.id));
    return [...want].every((id) => got.has(id));
  };
  if (!done()) await p.waitFor(() => done(), timeoutMs);
}

/** Asks `p` for `/history PEER [LIMIT]` and returns the `history` event. */
async function history(p: PeerProcess, peer: string, limit?: number): Promise<Event> {
  const answer = p.next((e) => e.type === "history");
  await p.command(`/history ${peer}${limit === undefined ? "" : ` ${limit}`}`);
  return await answer;
}

Deno.test("delivery: messages sent while the receiver is down arrive once, in order, when it returns", async () => {
  const bobDir = await Deno.makeTempDir({ prefix: "p2pchat-Bob-" });
  const port = freePort();
  const alice = await PeerProcess.start("Alice");
  let bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
  try {
    await connect(alice, bob);
    const first = await send(alice, "Bob", "before the break");
    await delivered(alice, [first.id]);

    assert.equal(await bob.quit(), 0);
    await alice.waitFor((e) => e.type === "disconnected");
    const queued: Event[] = [];
    for (let i = 1; i <= 5; i++) queued.push(await send(alice, "Bob", `while away ${i}`));
    for (const e of queued) {
      assert.equal(e.type, "queued", "Bob is down: the message waits in the outbox");
      assert.equal(e.to, "Bob");
      assert.equal(e.fingerprint, bob.fingerprint);
    }
    const ids = queued.map((e) => e.id);
    assert.equal(new Set(ids).size, 5);

    // Same data directory and port: Alice finds Bob at his last known address on her own.
    bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
    await delivered(alice, ids, RECONNECT_MS);
    await bob.waitFor(() => bob.all("message").length >= 5);
    // Each queued message also reports `sent` once it leaves.
    for (const id of ids) assert.ok(alice.all("sent").some((e) => e.id === id), id);

    const h = await history(bob, "Alice");
    const messages = bob.all("message");
    assert.deepEqual(messages.map((e) => e.id), ids);
    assert.deepEqual(
      messages.map((e) => e.text),
      ["while away 1", "while away 2", "while away 3", "while away 4", "while away 5"],
    );
    for (const m of messages) {
      assert.equal(m.from, "Alice");
      assert.equal(m.fingerprint, alice.fingerprint);
    }
    assert.deepEqual(h.messages.map((m: Event) => m.id), [first.id, ...ids]);
    assert.ok(h.messages.every((m: Event) => m.direction === "in"));

    // Delivered once: no second `delivered` for the same id.
    const deliveredIds = alice.all("delivered").map((e) => e.id);
    assert.equal(new Set(deliveredIds).size, deliveredIds.length);
    assert.equal(await bob.quit(), 0);
    assert.equal(await alice.quit(), 0);
    assert.equal(bob.all("message").length, 5, "nothing arrived twice");
  } finally {
    await alice.cleanup();
    await bob.cleanup();
    await Deno.remove(bobDir, { recursive: true });
  }
});

Deno.test("delivery: an outbox bigger than a connection may queue is delivered whole when the peer returns", async () => {
  const bobDir = await Deno.makeTempDir({ prefix: "p2pchat-Bob-" });
  const port = freePort();
  const alice = await PeerProcess.start("Alice");
  let bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
  try {
    await connect(alice, bob);
    assert.equal(await bob.quit(), 0);
    await alice.waitFor((e) => e.type === "disconnected");
    // 24 MB of messages while Bob is away: flushed at once, they would pass the connection's
    // 16 MiB limit for a peer that does not read, and every reconnection would end the same way.
    const count = 6_000;
    const text = "w".repeat(4_000);
    for (let i = 0; i < count; i += 500) {
      const lines = [];
      for (let j = i; j < Math.min(count, i + 500); j++) lines.push(`/send Bob ${j} ${text}`);
      await alice.command(lines.join("\n"));
    }
    await alice.waitFor(() => alice.all("queued").length === count, 60_000);

    bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
    await alice.command(`/connect ${bob.address}`);
    await alice.waitFor(() => alice.all("delivered").length === count, 60_000);
    await bob.waitFor(() => bob.all("message").length === count, 10_000);
    assert.equal(alice.all("disconnected").length, 1, "one session for the whole outbox");
    assert.deepEqual(
      bob.all("message").map((e) => Number(e.text.split(" ")[0])),
      Array.from({ length: count }, (_, i) => i),
      "in order, each once",
    );
    assert.equal(await bob.quit(), 0);
    assert.equal(await alice.quit(), 0);
  } finally {
    await alice.cleanup();
    await bob.cleanup();
    await Deno.remove(bobDir, { recursive: true });
  }
});

Deno.test("delivery: under a burst of large messages on a live session, each id says sent, then delivered, once", async () => {
  const alice = await PeerProcess.start("Alice");
  const bob = await PeerProcess.start("Bob");
  try {
    await connect(alice, bob);
    // Megabytes in flight at once: the peer acknowledges the first messages of a long write
    // before the write is over.
    const count = 2_000;
    const text = "x".repeat(8_000);
    for (let i = 0; i < count; i += 250) {
      const lines = [];
      for (let j = i; j < Math.min(count, i + 250); j++) lines.push(`/send Bob ${j} ${text}`);
      await alice.command(lines.join("\n"));
    }
    await alice.waitFor(() => alice.all("delivered").length === count, 60_000);
    const order = new Map<string, string[]>();
    for (const e of alice.events) {
      if (e.type === "sent" || e.type === "queued" || e.type === "delivered") {
        order.set(e.id, [...order.get(e.id) ?? [], e.type]);
      }
    }
    assert.equal(order.size, count);
    for (const [id, types] of order) assert.deepEqual(types, ["sent", "delivered"], id);
    await bob.waitFor(() => bob.all("message").length === count, 10_000);
    assert.equal(await bob.quit(), 0);
    assert.equal(await alice.quit(), 0);
  } finally {
    await alice.cleanup();
    await bob.cleanup();
  }
});

// strace comes from Debian's strace package (CI installs it).
const HAS_STRACE = hasCommand("strace", ["-V"]);
if (!HAS_STRACE) console.warn("delivery_test: fsync trace test skipped: strace is not installed");

Deno.test({
  name: "delivery: at full durability, sent and delivered are written only after the WAL fsync",
  ignore: !HAS_STRACE,
  fn: async () => {
    const log = await Deno.makeTempFile({ prefix: "p2pchat_strace_" });
    const bob = await PeerProcess.start("Bob");
    // strace stays the parent of deno, so this Alice is stopped with /quit, never a signal.
    const alice = await PeerProcess.start("Alice", {
      wrap: ["strace", "-f", "-y", "-qq", "-s", "256", "-o", log]
        .concat(["-e", "trace=pwrite64,write,fdatasync,fsync"]),
    });
    try {
      await connect(alice, bob);
      const ids = [];
      for (let i = 0; i < 5; i++) {
        const e = await send(alice, "Bob", `traced ${i}`);
        assert.equal(e.type, "sent");
        await delivered(alice, [e.id]);
        ids.push(e.id);
      }
      assert.equal(await alice.quit(), 0);
      // Replay the trace in order of completion: at each `sent` or `delivered` line on stdout,
      // every write to the WAL made so far must have been fsynced.
      const unfinished = new Map<string, string>();
      let walWritten = false;
      const reported: string[] = [];
      for (const line of (await Deno.readTextFile(log)).split("\n")) {
        const tid = line.split(/\s+/, 1)[0];
        let call = line;
        if (line.includes("<unfinished ...>")) {
          unfinished.set(tid, line);
          continue;
        }
        if (line.includes(" resumed>")) call = unfinished.get(tid) ?? line;
        const wal = call.includes("chat_history.db-wal>");
        if (/ pwrite64\(/.test(call) && wal) walWritten = true;
        if (/ (fdatasync|fsync)\(/.test(call) && wal) walWritten = false;
        if (!/ write\(1</.test(call)) continue;
        // One write can carry several event lines.
        for (const [, type] of call.matchAll(/\\"type\\":\\"(sent|delivered)\\"/g)) {
          assert.equal(walWritten, false, `${type} written before the WAL was fsynced`);
          reported.push(type);
        }
      }
      assert.deepEqual(reported, ids.flatMap(() => ["sent", "delivered"]));
      assert.equal(await bob.quit(), 0);
    } finally {
      await alice.cleanup();
      await bob.cleanup();
      await Deno.remove(log);
    }
  },
});

Deno.test({
  name: "delivery: a slow disk never makes a message say queued after sent and delivered",
  ignore: !HAS_STRACE,
  fn: async () => {
    const bobDir = await Deno.makeTempDir({ prefix: "p2pchat-Bob-" });
    const port = freePort();
    const bobs = [await PeerProcess.start("Bob", { dataDir: bobDir, port })];
    // Every fdatasync of Alice's (the WAL syncer's) takes 4 s more, longer than send() waits for a
    // session (3 s) before it answers `queued`.
    const alice = await PeerProcess.start("Alice", {
      wrap: ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"]
        .concat(["-e", "inject=fdatasync:delay_enter=4000000"]),
    });
    try {
      await connect(alice, bobs[0]);
      assert.equal(await bobs[0].quit(), 0);
      await alice.waitFor((e) => e.type === "disconnected");
      await alice.command("/send Bob while you were away");
      // Bob comes back and dials Alice while her fsync of that message still runs.
      bobs.push(await PeerProcess.start("Bob", { dataDir: bobDir, port }));
      await bobs[1].command(`/connect ${alice.address}`);
      const done = await alice.waitFor((e) => e.type === "delivered", 30_000);
      await bobs[1].waitFor((e) => e.type === "message" && e.id === done.id);
      // send() itself finishes after the delayed fsync: give it the time to say anything more.
      await new Promise((r) => setTimeout(r, 1_000));
      const said = alice.events.filter((e) => e.id === done.id).map((e) => e.type);
      assert.deepEqual(said, ["sent", "delivered"]);
      assert.equal(await alice.quit(), 0);
    } finally {
      await alice.cleanup();
      for (const bob of bobs) await bob.cleanup();
      await Deno.remove(bobDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "delivery: when the disk fails an fsync, one error says so and nothing says sent",
  ignore: !HAS_STRACE,
  fn: async () => {
    const bob = await PeerProcess.start("Bob");
    // Alice's identity is made first (writing its key files uses fdatasync too); then, once she
    // runs, only her WAL syncer calls fdatasync, and every call fails with EIO.
    const aliceDir = await Deno.makeTempDir({ prefix: "p2pchat-Alice-" });
    await (await PeerProcess.start("Alice", { dataDir: aliceDir })).quit();
    const alice = await PeerProcess.start("Alice", {
      dataDir: aliceDir,
      wrap: ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"]
        .concat(["-e", "inject=fdatasync:error=EIO"]),
    });
    try {
      await connect(alice, bob);
      await alice.command("/send Bob into a failing disk");
      // The message leaves at commit, so its fsync fails either before its write is done (the
      // /send's error) or after (an error naming the message): one or the other, once.
      const error = await alice.waitFor((e) => e.type === "error");
      if (error.command !== undefined) {
        assert.equal(error.command, "/send Bob into a failing disk");
        assert.match(error.message, /^message not stored: cannot fsync .*Input\/output error/);
      } else {
        assert.match(error.message, /^message \w+ to Bob left but is not stored: cannot fsync/);
      }
      await alice.command("/send Bob once more");
      const again = await alice.waitFor((e) => e.type === "error" && e.command?.endsWith("more"));
      assert.match(again.message, /cannot fsync/);
      assert.equal(alice.all("error").length, 2);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(alice.all("sent").concat(alice.all("delivered"), alice.all("queued")), []);
      // Still a peer: it answers, and quits cleanly.
      await alice.command("/peers");
      await alice.waitFor((e) => e.type === "peers");
      assert.equal(await alice.quit(), 0);
      assert.equal(await bob.quit(), 0);
    } finally {
      await alice.cleanup();
      await bob.cleanup();
      await Deno.remove(aliceDir, { recursive: true });
    }
  },
});

Deno.test("delivery: the outbox survives a restart of the sender", async () => {
  const aliceDir = await Deno.makeTempDir({ prefix: "p2pchat-Alice-" });
  const bobDir = await Deno.makeTempDir({ prefix: "p2pchat-Bob-" });
  const port = freePort();
  let alice = await PeerProcess.start("Alice", { dataDir: aliceDir });
  let bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
  try {
    await connect(alice, bob);
    assert.equal(await bob.quit(), 0);
    await alice.waitFor((e) => e.type === "disconnected");
    const queued: Event[] = [];
    for (let i = 1; i <= 4; i++) queued.push(await send(alice, "Bob", `kept for later ${i}`));
    assert.ok(queued.every((e) => e.type === "queued"));
    const ids = queued.map((e) => e.id);
    assert.equal(await alice.quit(), 0);

    bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
    // Alice's outbox comes back from her database: she dials Bob without being asked to.
    alice = await PeerProcess.start("Alice", { dataDir: aliceDir });
    await delivered(alice, ids, RECONNECT_MS);
    await bob.waitFor(() => bob.all("message").length >= 4);
    assert.deepEqual(bob.all("message").map((e) => e.id), ids);
    assert.deepEqual(
      bob.all("message").map((e) => e.text),
      ["kept for later 1", "kept for later 2", "kept for later 3", "kept for later 4"],
    );
    const h = await history(bob, "Alice");
    assert.deepEqual(h.messages.map((m: Event) => m.id), ids);
    const ah = await history(alice, "Bob");
    assert.deepEqual(
      ah.messages.map((m: Event) => [m.id, m.state]),
      ids.map((id) => [id, "delivered"]),
    );

    // A second restart of the sender sends nothing again: the outbox is empty now.
    assert.equal(await alice.quit(), 0);
    alice = await PeerProcess.start("Alice", { dataDir: aliceDir });
    await alice.command(`/connect 127.0.0.1:${port}`);
    await alice.waitFor((e) => e.type === "connected");
    // Acknowledgements come in order: once this one is back, any retransmission's would be too.
    const probe = await send(alice, "Bob", "probe");
    await delivered(alice, [probe.id]);
    assert.deepEqual(alice.all("sent").map((e) => e.id), [probe.id]);
    assert.deepEqual(alice.all("delivered").map((e) => e.id), [probe.id]);
    assert.equal(await alice.quit(), 0);
    assert.equal(await bob.quit(), 0);
    assert.deepEqual(bob.all("message").map((e) => e.text), [
      "kept for later 1",
      "kept for later 2",
      "kept for later 3",
      "kept for later 4",
      "probe",
    ], "nothing arrived twice");
  } finally {
    await alice.cleanup();
    await bob.cleanup();
    await Deno.remove(aliceDir, { recursive: true });
    await Deno.remove(bobDir, { recursive: true });
  }
});

Deno.test("delivery: /history lists both directions, oldest first, with states and a limit", async () => {
  const bobDir = await Deno.makeTempDir({ prefix: "p2pchat-Bob-" });
  const port = freePort();
  const alice = await PeerProcess.start("Alice");
  let bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
  try {
    await connect(alice, bob);
    const a1 = await send(alice, "Bob", "one from Alice");
    await delivered(alice, [a1.id]);
    const a2 = await send(alice, "Bob", "two from Alice");
    await delivered(alice, [a2.id]);
    const b1 = await send(bob, "Alice", "one from Bob");
    await delivered(bob, [b1.id]);
    const a3 = await send(alice, "Bob", "three from Alice");
    await delivered(alice, [a3.id]);
    await bob.waitFor(() => bob.all("message").length >= 3);

    const ah = await history(alice, "Bob");
    assert.equal(ah.peer, "Bob");
    assert.deepEqual(ah.messages.map((m: Event) => [m.id, m.direction, m.text, m.state]), [
      [a1.id, "out", "one from Alice", "delivered"],
      [a2.id, "out", "two from Alice", "delivered"],
      [b1.id, "in", "one from Bob", "delivered"],
      [a3.id, "out", "three from Alice", "delivered"],
    ]);
    for (const m of ah.messages) assert.equal(typeof m.sentAt, "number");
    const bh = await history(bob, alice.fingerprint.slice(0, 12));
    assert.equal(bh.peer, "Alice");
    assert.deepEqual(bh.messages.map((m: Event) => [m.id, m.direction, m.text]), [
      [a1.id, "in", "one from Alice"],
      [a2.id, "in", "two from Alice"],
      [b1.id, "out", "one from Bob"],
      [a3.id, "in", "three from Alice"],
    ]);
    // The same message has the same sending time on both sides.
    assert.deepEqual(
      bh.messages.map((m: Event) => m.sentAt),
      ah.messages.map((m: Event) => m.sentAt),
    );

    const last2 = await history(alice, "Bob", 2);
    assert.deepEqual(last2.messages.map((m: Event) => m.id), [b1.id, a3.id]);
    const last1 = await history(bob, "Alice", 1);
    assert.deepEqual(last1.messages.map((m: Event) => m.id), [a3.id]);

    // An undelivered message shows its state.
    assert.equal(await bob.quit(), 0);
    await alice.waitFor((e) => e.type === "disconnected");
    const a4 = await send(alice, "Bob", "four, while Bob is away");
    assert.equal(a4.type, "queued");
    const pending = await history(alice, "Bob", 1);
    assert.deepEqual(pending.messages.map((m: Event) => [m.id, m.direction, m.state]), [
      [a4.id, "out", "queued"],
    ]);

    for (const line of ["/history Nobody", "/history Bob 0", "/history Bob many"]) {
      const error = alice.next((e) => e.type === "error");
      await alice.command(line);
      assert.equal((await error).command, line);
    }
    bob = await PeerProcess.start("Bob", { dataDir: bobDir, port });
    await delivered(alice, [a4.id], RECONNECT_MS);
    const after = await history(alice, "Bob", 1);
    assert.equal(after.messages[0].state, "delivered");
    assert.equal(await alice.quit(), 0);
    assert.equal(await bob.quit(), 0);
  } finally {
    await alice.cleanup();
    await bob.cleanup();
    await Deno.remove(bobDir, { recursive: true });
  }
});

Deno.test("history command: prints stored history without the network", async () => {
  const alice = await PeerProcess.start("Alice");
  const bob = await PeerProcess.start("Bob");
  const noNet = RUN_FLAGS.filter((f) => !f.startsWith("--allow-net"));
  try {
    await connect(alice, bob);
    const a1 = await send(alice, "Bob", "hello Bob");
    await delivered(alice, [a1.id]);
    const b1 = await send(bob, "Alice", "hi Alice, second line");
    await delivered(bob, [b1.id]);
    await alice.waitFor((e) => e.type === "message");
    const a2 = await send(alice, "Bob", "bye now");
    await delivered(alice, [a2.id]);
    const base = ["history", "--name", "Alice", "--data-dir", alice.dataDir];
    // While Alice runs (another terminal during a chat): the store is not locked against readers.
    const meanwhile = await runMain([...base, "--peer", "Bob", "--json"], { flags: noNet });
    assert.equal(meanwhile.code, 0, meanwhile.stderr);
    assert.deepEqual(
      JSON.parse(meanwhile.stdout)[0].messages.map((m: Event) => m.text),
      ["hello Bob", "hi Alice, second line", "bye now"],
    );
    assert.equal(await alice.quit(), 0);
    assert.equal(await bob.quit(), 0);

    // Control: these flags really forbid the network, so a peer cannot even start with them.
    const peer = await runMain(["--name", "Alice", "--data-dir", alice.dataDir, "--headless"], {
      flags: noNet,
    });
    assert.equal(peer.code, 1, peer.stderr);
    assert.match(peer.stderr, /net/);

    const json = await runMain([...base, "--peer", "Bob", "--json"], { flags: noNet });
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stderr, "");
    const dumps = JSON.parse(json.stdout);
    assert.equal(dumps.length, 1);
    assert.equal(dumps[0].peer, "Bob");
    assert.equal(dumps[0].fingerprint, bob.fingerprint);
    assert.deepEqual(
      dumps[0].messages.map((m: Event) => [m.id, m.direction, m.text, m.state]),
      [
        [a1.id, "out", "hello Bob", "delivered"],
        [b1.id, "in", "hi Alice, second line", "delivered"],
        [a2.id, "out", "bye now", "delivered"],
      ],
    );
    assert.equal(typeof dumps[0].messages[1].receivedAt, "number");

    const limited = await runMain([...base, "--peer", "Bob", "--limit", "1", "--json"], {
      flags: noNet,
    });
    assert.equal(limited.code, 0, limited.stderr);
    assert.deepEqual(JSON.parse(limited.stdout)[0].messages.map((m: Event) => m.id), [a2.id]);

    const text = await runMain([...base, "--peer", "Bob"], { flags: noNet });
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^== Bob \([0-9a-f]{16}…\), 3 message\(s\)$/);
    assert.match(lines[1], /me: hello Bob {2}\[delivered\]$/);
    assert.match(lines[2], /Bob: hi Alice, second line$/);
    assert.match(lines[3], /me: bye now {2}\[delivered\]$/);
    assert.equal(lines.length, 4);

    // Without --peer: every conversation.
    const all = await runMain(["history", "--name", "Bob", "--data-dir", bob.dataDir], {
      flags: noNet,
    });
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^== Alice /);
    assert.match(all.stdout, /Alice: hello Bob/);
    assert.match(all.stdout, /me: hi Alice, second line {2}\[delivered\]/);

    const unknown = await runMain([...base, "--peer", "Nobody"], { flags: noNet });
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stdout, "");
    assert.match(unknown.stderr, /^p2pchat: no conversation with "Nobody"\n$/);
  } finally {
    await alice.cleanup();
    await bob.cleanup();
  }
});

/** Every regular file under `dir`, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await filesUnder(path));
    else if (entry.isFile) out.push(path);
  }
  return out;
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

/** The files under `dir` whose raw bytes contain `text` (UTF-8). */
async function filesContaining(dir: string, text: string): Promise<string[]> {
  const needle = new TextEncoder().encode(text);
  const hits: string[] = [];
  for (const path of await filesUnder(dir)) {
    if (contains(await Deno.readFile(path), needle)) hits.push(path.slice(dir.length + 1));
  }
  return hits;
}

Deno.test("encryption at rest: no message text in any file of either data directory", async () => {
  const marker = `SECRET-MARKER-${crypto.randomUUID()}`;
  const alice = await PeerProcess.start("Alice");
  const bob = await PeerProcess.start("Bob");
  try {
    await connect(alice, bob);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const a = await send(alice, "Bob", `${marker} from Alice ${i}`);
      const b = await send(bob, "Alice", `${marker} from Bob ${i}`);
      ids.push(a.id, b.id);
    }
    await delivered(alice, ids.filter((_, i) => i % 2 === 0));
    await delivered(bob, ids.filter((_, i) => i % 2 === 1));

    // While both run (the WAL holds the recent transactions), then Bob killed (his WAL stays on
    // disk, never checkpointed), then Alice closed cleanly.
    for (const p of [alice, bob]) assert.deepEqual(await filesContaining(p.dataDir, marker), []);
    await bob.kill("SIGKILL");
    const bobFiles = (await filesUnder(bob.dataDir)).map((f) => f.slice(bob.dataDir.length + 1));
    assert.ok(bobFiles.includes("chat_history.db-wal"), `WAL left by the kill: ${bobFiles}`);
    assert.equal(await alice.quit(), 0);
    for (const p of [alice, bob]) {
      assert.deepEqual(await filesContaining(p.dataDir, marker), [], p.name);
      // Control: the search does find what is stored in plaintext (message ids, names), so it
      // can fail.
      assert.ok((await filesContaining(p.dataDir, ids[0])).length > 0, `${p.name}: control`);
    }
    assert.ok((await filesContaining(bob.dataDir, ids.at(-1)!)).includes("chat_history.db-wal"));
    assert.ok((await filesContaining(alice.dataDir, "Bob")).includes("chat_history.db"));
  } finally {
    await alice.cleanup();
    await bob.cleanup();
  }
});
