import assert from "node:assert/strict";
import { PeerProcess } from "../_helpers/peer_process.ts";

Deno.test("trust on first use: a changed key is refused until /trust, then held messages go", async () => {
  const alice = await PeerProcess.start("Alice");
  let bob = await PeerProcess.start("Bob");
  let impostor: PeerProcess | null = null;
  try {
    await alice.command(`/connect ${bob.address}`);
    await alice.waitFor((e) => e.type === "connected" && e.name === "Bob");
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

    await alice.command("/peers");
    const peers = await alice.next((e) => e.type === "peers");
    assert.equal(peers.peers.length, 1);
    assert.equal(peers.peers[0].fingerprint, bob.fingerprint);
  } finally {
    await alice.quit();
    await alice.cleanup();
    await bob.quit();
    await bob.cleanup();
  }
});
