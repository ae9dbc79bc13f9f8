import assert from "node:assert/strict";
import { PeerProcess, runMain } from "../_helpers/peer_process.ts";

Deno.test("trust on first use: a changed key is refused until /trust, then held messages go", async () => {
  const alice = await PeerProcess.start("Alice");
  let bob = await PeerProcess.start("Bob");
  let impostor: PeerProcess | null = null;
  try {
    await alice.command(`/connect ${bob.address}`);
    await alice.waitFor((e) => e.type === "connected" && e.name === "Bob");
    await alice.command("/send Bob hello old Bob");
    await alice.waitFor((e) => e.type === "delivered");
    const oldFp = bob.fingerprint;
    await bob.quit();
    await bob.cleanup();

    // "Bob" comes back with a new key (a new data directory): not the Bob Alice pinned.
    impostor = await PeerProcess.start("Bob");
    bob = impostor;
    await alice.command(`/connect ${bob.address}`);
    const changed = await alice.waitFor((e) => e.type === "key-changed");
    assert.equal(changed.name, "Bob");
    assert.equal(changed.old, oldFp);
    assert.equal(changed.new, bob.fingerprint);
    await alice.waitFor((e) => e.type === "error" && e.command?.startsWith("/connect"));
    assert.equal(alice.all("connected").length, 1, "no session with the new key");
    assert.match(alice.stderr, /KEY CHANGED for Bob/);

    // Messages to Bob are held: queued, not sent to the new key.
    await alice.command("/send Bob are you really Bob?");
    const queued = await alice.waitFor((e) => e.type === "queued");
    assert.equal(queued.fingerprint, oldFp);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(bob.all("message").length, 0);

    // A wrong fingerprint is refused.
    await alice.command(`/trust Bob ${"0".repeat(64)}`);
    await alice.waitFor((e) => e.type === "error" && e.command?.startsWith("/trust"));

    await alice.command(`/trust Bob ${bob.fingerprint}`);
    const trusted = await alice.waitFor((e) => e.type === "trusted");
    assert.equal(trusted.fingerprint, bob.fingerprint);
    await alice.command(`/connect ${bob.address}`);
    const msg = await bob.waitFor((e) => e.type === "message");
    assert.equal(msg.text, "are you really Bob?");
    await alice.waitFor((e) => e.type === "delivered" && e.fingerprint === bob.fingerprint);

    // Bob's history is one conversation across the key change, the moved message once; the
    // old key's own messages by its fingerprint prefix.
    const history = async (peer: string) => {
      await alice.command(`/history ${peer}`);
      const h = await alice.next((e) => e.type === "history" || e.type === "error");
      return h.messages?.map((m: { text: string; state: string }) => `${m.text} ${m.state}`) ?? h;
    };
    assert.deepEqual(await history("Bob"), [
      "hello old Bob delivered",
      "are you really Bob? delivered",
    ]);
    assert.deepEqual(await history(oldFp.slice(0, 8)), [
      "hello old Bob delivered",
      "are you really Bob? failed",
    ]);

    await alice.command("/peers");
    const peers = await alice.next((e) => e.type === "peers");
    assert.equal(peers.peers.length, 1);
    assert.equal(peers.peers[0].fingerprint, bob.fingerprint);

    // `p2pchat history --peer Bob`: a conversation per key Bob has had, each with its key.
    assert.equal(await alice.quit(), 0);
    const r = await runMain([
      ...["history", "--name", "Alice", "--data-dir", alice.dataDir, "--peer", "Bob", "--json"],
    ]);
    assert.equal(r.code, 0, r.stderr);
    const dumps = JSON.parse(r.stdout) as { peer: string; fingerprint: string }[];
    assert.deepEqual(
      dumps.map((d) => [d.peer, d.fingerprint]).sort(),
      [
        ["Bob", bob.fingerprint],
        ["Bob", oldFp],
      ].sort(),
    );
  } finally {
    await alice.quit();
    await alice.cleanup();
    await bob.quit();
    await bob.cleanup();
  }
});

Deno.test("trust: a retired key back under a name nobody holds now names its successor as old", async () => {
  const dirs = await Promise.all(
    ["bob1", "bob2"].map((n) => Deno.makeTempDir({ prefix: `p2pchat-${n}-` })),
  );
  const alice = await PeerProcess.start("Alice");
  const peers: PeerProcess[] = [];
  /** Starts Bob's key `i` under `name`, has Alice connect, and quits it again. */
  const visit = async (i: number, name: string, expect: "connected" | "key-changed") => {
    const p = await PeerProcess.start(name, { dataDir: dirs[i] });
    peers.push(p);
    const seen = alice.events.length;
    await alice.command(`/connect ${p.address}`);
    const e = await alice.waitFor((e) =>
      (e.type === "connected" || e.type === "key-changed") && alice.events.indexOf(e) >= seen
    );
    assert.equal(e.type, expect, JSON.stringify(e));
    assert.equal(await p.quit(), 0);
    return { event: e, fingerprint: p.fingerprint };
  };
  try {
    const k1 = (await visit(0, "Bob", "connected")).fingerprint;
    // A new key for Bob, accepted: the first one is retired in its favour.
    const second = await visit(1, "Bob", "key-changed");
    const k2 = second.fingerprint;
    assert.deepEqual([second.event.old, second.event.new], [k1, k2]);
    await alice.command(`/trust Bob ${k2}`);
    await alice.waitFor((e) => e.type === "trusted");
    // The accepted key now goes by another name, so no current key holds "Bob".
    await visit(1, "Robert", "connected");
    assert.match(alice.stderr, /Bob \(key [0-9a-f ]+…\) now calls itself Robert/);
    // The retired key comes back as Bob: refused, and the key change names k2, not k1 twice.
    const back = await visit(0, "Bob", "key-changed");
    assert.deepEqual([back.event.name, back.event.old, back.event.new], ["Bob", k2, k1]);
    await alice.command("/peers");
    const listed = await alice.next((e) => e.type === "peers");
    assert.deepEqual(listed.peers.map((p: { name: string }) => p.name), ["Robert"]);
  } finally {
    await alice.quit();
    await alice.cleanup();
    for (const p of peers) await p.cleanup();
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("trust: only a key the name offered or held is accepted; PEER may be a fingerprint prefix", async () => {
  const alice = await PeerProcess.start("Alice");
  const carol = await PeerProcess.start("Carol");
  let bob = await PeerProcess.start("Bob");
  const extra: PeerProcess[] = [];
  try {
    for (const p of [bob, carol]) {
      await alice.command(`/connect ${p.address}`);
      await alice.waitFor((e) => e.type === "connected" && e.name === p.name);
    }
    const listed = async () => {
      await alice.command("/peers");
      const e = await alice.next((e) => e.type === "peers");
      return e.peers.map((p: { name: string; fingerprint: string }) => [p.name, p.fingerprint])
        .sort();
    };
    const before = await listed();
    // Another peer's key under a name, or under a name nobody has: refused, nothing renamed.
    for (const line of [`/trust Carol ${bob.fingerprint}`, `/trust Zed ${bob.fingerprint}`]) {
      await alice.command(line);
      const e = await alice.next((e) => e.type === "error" || e.type === "trusted");
      assert.equal(e.type, "error", `${line}: ${JSON.stringify(e)}`);
      assert.equal(e.command, line);
    }
    assert.deepEqual(await listed(), before);
    await alice.command("/send Carol still yours");
    await carol.waitFor((e) => e.type === "message" && e.text === "still yours");
    assert.equal(bob.all("message").length, 0);

    // Bob comes back with a new key; PEER given as the old key's fingerprint prefix.
    const oldFp = bob.fingerprint;
    await bob.quit();
    extra.push(bob);
    bob = await PeerProcess.start("Bob");
    await alice.command(`/connect ${bob.address}`);
    await alice.waitFor((e) => e.type === "key-changed" && e.new === bob.fingerprint);
    await alice.command(`/trust ${oldFp.slice(0, 8)} ${bob.fingerprint}`);
    const trusted = await alice.next((e) => e.type === "trusted" || e.type === "error");
    assert.deepEqual([trusted.type, trusted.name, trusted.fingerprint], [
      "trusted",
      "Bob",
      bob.fingerprint,
    ]);
  } finally {
    for (const p of [alice, carol, bob]) {
      await p.quit();
      await p.cleanup();
    }
    for (const p of extra) await p.cleanup();
  }
});

Deno.test("trust: a second key under a connected peer's name is refused, with no key change to answer", async () => {
  const alice = await PeerProcess.start("Alice");
  const bob = await PeerProcess.start("Bob");
  const mallory = await PeerProcess.start("Bob");
  try {
    await alice.command(`/connect ${bob.address}`);
    await alice.waitFor((e) => e.type === "connected" && e.name === "Bob");
    // Mallory, calling herself Bob with her own key, dials Alice while the real Bob is online.
    await mallory.command(`/connect ${alice.address}`);
    await mallory.waitFor((e) => e.type === "error" && e.command?.startsWith("/connect"));
    await alice.command("/send Bob still you?");
    await bob.waitFor((e) => e.type === "message" && e.text === "still you?");
    await alice.waitFor((e) => e.type === "delivered");
    assert.equal(
      alice.all("key-changed").length,
      0,
      "no key change while the pinned key is online",
    );
    assert.match(alice.stderr, /refused a second key .* under the name Bob/);
    assert.equal(mallory.all("message").length, 0);

    // Once the real Bob is gone, the same key may be a genuine key change: asked, as before.
    assert.equal(await bob.quit(), 0);
    await alice.waitFor((e) => e.type === "disconnected" && e.name === "Bob");
    await mallory.command(`/connect ${alice.address}`);
    const changed = await alice.waitFor((e) => e.type === "key-changed");
    assert.deepEqual([changed.old, changed.new], [bob.fingerprint, mallory.fingerprint]);
  } finally {
    for (const p of [alice, bob, mallory]) {
      await p.quit();
      await p.cleanup();
    }
  }
});

Deno.test("trust: a known key cannot take another peer's name, so /trust cannot hand it over", async () => {
  const alice = await PeerProcess.start("Alice");
  const bob = await PeerProcess.start("Bob");
  const mallory = await PeerProcess.start("Mallory");
  let renamed: PeerProcess | undefined;
  try {
    for (const p of [bob, mallory]) {
      await alice.command(`/connect ${p.address}`);
      await alice.waitFor((e) => e.type === "connected" && e.name === p.name);
    }
    // Bob goes away with a message waiting for him; Mallory comes back, same key, as "Bob".
    assert.equal(await bob.quit(), 0);
    await alice.waitFor((e) => e.type === "disconnected" && e.name === "Bob");
    await alice.command("/send Bob secret for bob");
    await alice.waitFor((e) => e.type === "queued");
    assert.equal(await mallory.quit(), 0);
    renamed = await PeerProcess.start("Bob", { dataDir: mallory.dataDir });
    await renamed.command(`/connect ${alice.address}`);
    await renamed.waitFor((e) => e.type === "error" && e.command?.startsWith("/connect"));
    assert.match(alice.stderr, /Mallory \(key [0-9a-f ]+…\) now calls itself Bob, the name of/);
    // Still Mallory in Alice's book; /trust cannot give her Bob's name or his message.
    await alice.command(`/trust Bob ${mallory.fingerprint}`);
    const e = await alice.next((e) => e.type === "error" || e.type === "trusted");
    assert.equal(e.type, "error", JSON.stringify(e));
    await alice.command("/peers");
    const peers = await alice.next((e) => e.type === "peers");
    assert.deepEqual(
      peers.peers.map((p: { name: string; fingerprint: string }) => [p.name, p.fingerprint]).sort(),
      [["Bob", bob.fingerprint], ["Mallory", mallory.fingerprint]].sort(),
    );
    assert.equal(renamed.all("message").length, 0);
  } finally {
    await renamed?.quit();
    await renamed?.cleanup();
    for (const p of [alice, bob, mallory]) {
      await p.quit();
      await p.cleanup();
    }
  }
});

Deno.test("trust: keeping the pinned key turns the offered one down; held messages go to the pinned key", async () => {
  const alice = await PeerProcess.start("Alice");
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const bob = await PeerProcess.start("Bob", { port });
  const other = await PeerProcess.start("Bob");
  const dir = bob.dataDir;
  let back: PeerProcess | undefined;
  try {
    await alice.command(`/connect ${bob.address}`);
    await alice.waitFor((e) => e.type === "connected" && e.name === "Bob");
    const pinned = bob.fingerprint;
    assert.equal(await bob.quit(), 0);
    await alice.waitFor((e) => e.type === "disconnected");
    // Another key offers itself as Bob: held; the user keeps the pinned one.
    await alice.command(`/connect ${other.address}`);
    await alice.waitFor((e) => e.type === "key-changed");
    await alice.command("/send Bob for the pinned Bob");
    await alice.waitFor((e) => e.type === "queued");
    await alice.command(`/trust Bob ${pinned}`);
    await alice.waitFor((e) => e.type === "trusted" && e.fingerprint === pinned);
    // No longer held: Alice retries Bob's address, and when the pinned Bob comes back there he
    // gets the message (no /connect); the other key got nothing.
    back = await PeerProcess.start("Bob", { dataDir: dir, port });
    const msg = await back.waitFor((e) => e.type === "message", 30_000);
    assert.equal(msg.text, "for the pinned Bob");
    assert.equal(other.all("message").length, 0);
  } finally {
    await back?.quit();
    await back?.cleanup();
    for (const p of [alice, other, bob]) {
      await p.quit();
      await p.cleanup();
    }
  }
});
