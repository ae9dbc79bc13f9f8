import assert from "node:assert/strict";
import { PeerProcess } from "../_helpers/peer_process.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function openConns(port: number, n: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < n; i++) {
    try {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch {
      break; // refused once the limits bite: that is the point
    }
  }
  return conns;
}

function closeAll(conns: Deno.TcpConn[]): void {
  for (const c of conns) {
    try {
      c.close();
    } catch {
      // closed by the peer already
    }
  }
}

async function chatRound(alice: PeerProcess, bob: PeerProcess, text: string): Promise<void> {
  await alice.command(`/send Bob ${text}`);
  await bob.waitFor((e) => e.type === "message" && e.text === text, 20_000);
  await alice.waitFor((e) => e.type === "delivered" && alice.all("delivered").length > 0);
}

Deno.test("hostile input on the TCP port never disturbs a legitimate conversation", async () => {
  const bob = await PeerProcess.start("Bob", {
    args: ["--no-discovery"],
  });
  const alice = await PeerProcess.start("Alice");
  const junk: Deno.TcpConn[] = [];
  try {
    await alice.command(`/connect ${bob.address}`);
    await bob.waitFor((e) => e.type === "connected");
    await chatRound(alice, bob, "before");
    const rssBefore = await bob.rssKiB();

    // 1. Random bytes.
    for (let i = 0; i < 20; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: bob.port });
      await c.write(crypto.getRandomValues(new Uint8Array(4096))).catch(() => 0);
      junk.push(c);
    }
    // 2. Huge length prefixes (4 GiB, 1 GiB, 1 MiB + 1 before authentication).
    for (const len of [0xffffffff, 0x40000000, (1 << 20) + 1, 9000]) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: bob.port });
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, len);
      await c.write(b).catch(() => 0);
      junk.push(c);
    }
    // 3. Half-open: a valid-looking length, then silence.
    {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: bob.port });
      await c.write(new Uint8Array([0, 0, 1, 0, 1, 1])).catch(() => 0);
      junk.push(c);
    }
    // 4. Slow drip: one byte every 50 ms.
    const drip = await Deno.connect({ hostname: "127.0.0.1", port: bob.port });
    junk.push(drip);
    const dripping = (async () => {
      for (let i = 0; i < 40; i++) {
        if ((await drip.write(new Uint8Array([0])).catch(() => -1)) < 0) return;
        await sleep(50);
      }
    })();
    // 5. Two hundred idle connections.
    junk.push(...await openConns(bob.port, 200));

    // The conversation goes on, both ways, while all of that is open.
    for (let i = 0; i < 5; i++) await chatRound(alice, bob, `during ${i}`);
    await bob.command("/send Alice still here");
    await alice.waitFor((e) => e.type === "message" && e.text === "still here");
    await dripping;

    const rssAfter = await bob.rssKiB();
    assert.ok(
      rssAfter - rssBefore < 64 * 1024,
      `memory grew by ${rssAfter - rssBefore} KiB under attack`,
    );
    await bob.command("/peers");
    const peers = await bob.next((e) => e.type === "peers");
    assert.equal(peers.peers.length, 1);
    assert.ok(bob.stderr.length < 100_000);
    assert.ok(!bob.stderr.includes("    at "), "no stack trace on stderr");
  } finally {
    closeAll(junk);
    await alice.quit();
    await bob.quit();
    await alice.cleanup();
    await bob.cleanup();
  }
});

Deno.test("connections that never authenticate cannot keep a real peer out once the limit is full", async () => {
  const bob = await PeerProcess.start("Bob", {
    args: ["--no-discovery", "--max-connections", "8", "--handshake-timeout", "60"],
  });
  const alice = await PeerProcess.start("Alice");
  let junk: Deno.TcpConn[] = [];
  try {
    // Eight silent connections fill Bob's limit; they would hold it for a minute.
    junk = await openConns(bob.port, 8);
    assert.equal(junk.length, 8);
    await sleep(200);
    await alice.command(`/connect ${bob.address}`);
    const e = await alice.next((e) => e.type === "connected" || e.type === "error", 20_000);
    assert.equal(e.type, "connected", JSON.stringify(e));
    await chatRound(alice, bob, "made room");
    // One of the silent ones was closed for it: the oldest.
    const closed = await junk[0].read(new Uint8Array(1)).catch(() => null);
    assert.equal(closed, null, "the oldest unauthenticated connection was closed");
  } finally {
    closeAll(junk);
    await alice.quit();
    await bob.quit();
    await alice.cleanup();
    await bob.cleanup();
  }
});
