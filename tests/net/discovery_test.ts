// Run inside a fresh network namespace (see helpers/COMMON.md):
//   unshare --net bash -c 'ip link set lo up && deno test --allow-all tests/net/'
// Every datagram goes to loopback (127.255.255.255 or 127.0.0.x); the one test that uses the
// default broadcast targets runs only where no interface but loopback is up.

import assert from "node:assert/strict";
import { type Identity, openIdentity } from "../../lib/crypto/identity.ts";
import { type AnnouncementFields, encodeAnnouncement } from "../../lib/net/announce.ts";
import { broadcastAddresses } from "../../lib/net/broadcast.ts";
import {
  Discovery,
  DiscoveryError,
  type DiscoveryOptions,
  type HeardPeer,
  type PeerDownReason,
} from "../../lib/net/discovery.ts";

const LOOPBACK_BROADCAST = "127.255.255.255";
/** Long enough that no periodic announcement can happen during a test. */
const NEVER_MS = 600_000;
/** Guard against a hang only: every wait below normally ends in milliseconds. */
const WAIT_LIMIT_MS = 20_000;

/**
 * Three identities, made once (RSA key generation is slow) in directories removed right away. Made
 * lazily by the first test, so their file operations start and end inside a test (sanitizers).
 */
let made: Promise<Identity[]> | undefined;
function identities(): Promise<Identity[]> {
  return made ??= make();
}
async function make(): Promise<Identity[]> {
  const out: Identity[] = [];
  for (let i = 0; i < 3; i++) {
    const dir = await Deno.makeTempDir({ prefix: "discovery_test_" });
    try {
      out.push((await openIdentity(dir)).identity);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return out;
}

function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 40000);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it holds; fails (does not hang) if it never does. */
async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > WAIT_LIMIT_MS) assert.fail(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A Discovery with its events recorded. */
class Probe {
  readonly discovery: Discovery;
  readonly ups: HeardPeer[] = [];
  readonly seen: HeardPeer[] = [];
  readonly downs: { peer: HeardPeer; reason: PeerDownReason; at: number }[] = [];
  readonly warnings: string[] = [];

  constructor(
    identity: Identity,
    opts: Partial<DiscoveryOptions> & { name: string; port: number },
  ) {
    this.discovery = new Discovery(identity, {
      tcpPort: 5000,
      broadcast: [LOOPBACK_BROADCAST],
      intervalMs: NEVER_MS,
      onPeerUp: (p) => this.ups.push(p),
      onPeerSeen: (p) => this.seen.push(p),
      onPeerDown: (peer, reason) => this.downs.push({ peer, reason, at: Date.now() }),
      onWarning: (m) => this.warnings.push(m),
      ...opts,
    });
  }

  knows(identity: Identity): boolean {
    return this.discovery.peers().some((p) => p.fingerprint === identity.fingerprint);
  }

  rejected(): number {
    const s = this.discovery.stats;
    return s.malformed + s.version + s.key + s.signature + s.stale + s.replayed + s.duplicate +
      s.flood + s.capacity;
  }
}

/** Stops every probe whatever happens, so the sanitizers see no socket or timer left. */
async function using(probes: Probe[], fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } finally {
    for (const p of probes) await p.discovery.stop();
  }
}

/** A raw UDP socket on a chosen loopback address, to play a peer or an attacker by hand. */
function rawSocket(hostname = "127.0.0.1", port = 0, reuseAddress = false): Deno.DatagramConn {
  return Deno.listenDatagram({ transport: "udp", hostname, port, reuseAddress });
}

function fields(over: Partial<AnnouncementFields> = {}): AnnouncementFields {
  return {
    kind: "hello",
    name: "Hand",
    tcpPort: 7000,
    replyPort: 9,
    timestamp: Date.now(),
    seq: 1,
    intervalMs: NEVER_MS,
    ...over,
  };
}

Deno.test("discovery: two peers find each other at once, the late one through the direct reply", async () => {
  const [a, b] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port, tcpPort: 5001 });
  const bob = new Probe(b, { name: "Bob", port, tcpPort: 5002 });
  await using([alice, bob], async () => {
    await alice.discovery.start();
    await bob.discovery.start();
    // Nobody announces periodically in this test (interval of 10 minutes): Alice learns of Bob
    // from his start-up announcement, and Bob of Alice only from her direct reply.
    await waitFor(() => alice.knows(b) && bob.knows(a), "both to know each other");
    assert.deepEqual(alice.ups.map((p) => [p.name, p.fingerprint, p.host, p.port]), [
      ["Bob", b.fingerprint, "127.0.0.1", 5002],
    ]);
    assert.deepEqual(bob.ups.map((p) => [p.name, p.fingerprint, p.host, p.port]), [
      ["Alice", a.fingerprint, "127.0.0.1", 5001],
    ]);
    assert.deepEqual(bob.ups[0].spki, a.spki);
    assert.equal(alice.discovery.stats.replies, 1);
    assert.equal(bob.discovery.stats.replies, 0, "a reply is never answered");
    // Each heard its own broadcast and ignored it.
    assert.ok(alice.discovery.stats.own >= 1);
    assert.ok(bob.discovery.stats.own >= 1);
    assert.ok(!alice.knows(a) && !bob.knows(b));
    assert.deepEqual(alice.warnings, []);
    assert.deepEqual(bob.warnings, []);
  });
});

Deno.test("discovery: three peers sharing the port all find each other", async () => {
  const ids = await identities();
  const port = randomPort();
  const probes = ids.map((id, i) => new Probe(id, { name: `peer${i}`, port, tcpPort: 5000 + i }));
  await using(probes, async () => {
    for (const p of probes) await p.discovery.start();
    await waitFor(
      () => probes.every((p, i) => ids.every((id, j) => i === j || p.knows(id))),
      "everyone to know everyone",
    );
    for (const [i, p] of probes.entries()) {
      assert.equal(p.ups.length, 2, `peer${i} up events`);
      assert.deepEqual(
        p.discovery.peers().map((x) => x.port).sort(),
        [5000, 5001, 5002].filter((x) => x !== 5000 + i),
      );
    }
    // The first two answered each newcomer; the last one had nobody new to answer.
    assert.equal(probes[0].discovery.stats.replies, 2);
    assert.equal(probes[1].discovery.stats.replies, 1);
    assert.equal(probes[2].discovery.stats.replies, 0);
  });
});

Deno.test("discovery: periodic announcements keep coming and refresh lastSeen", async () => {
  const [a, b] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port });
  const bob = new Probe(b, { name: "Bob", port, intervalMs: 30 });
  await using([alice, bob], async () => {
    await alice.discovery.start();
    await bob.discovery.start();
    await waitFor(() => alice.seen.length >= 4, "four announcements from Bob");
    assert.equal(alice.ups.length, 1, "up once, however many announcements");
    const times = alice.seen.map((p) => p.lastSeen);
    assert.deepEqual(times, [...times].sort((x, y) => x - y));
    assert.equal(alice.discovery.stats.replayed, 0);
  });
});

Deno.test("discovery: a goodbye takes the peer down at once; it comes back up on its next hello", async () => {
  const [a, b] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port });
  const bob = new Probe(b, { name: "Bob", port });
  await using([alice, bob], async () => {
    await alice.discovery.start();
    await bob.discovery.start();
    await waitFor(() => alice.knows(b) && bob.knows(a), "both to know each other");
    await bob.discovery.stop();
    // Bob's timeout would be 30 minutes: only the goodbye can take him down during this test.
    await waitFor(() => alice.downs.length === 1, "Bob to go down");
    assert.equal(alice.downs[0].reason, "goodbye");
    assert.equal(alice.downs[0].peer.fingerprint, b.fingerprint);
    assert.ok(!alice.knows(b));

    // A new process with Bob's key: up again, and answered again.
    const bob2 = new Probe(b, { name: "Bob", port });
    await using([bob2], async () => {
      await bob2.discovery.start();
      await waitFor(() => alice.knows(b) && bob2.knows(a), "Bob to be back");
      assert.equal(alice.ups.length, 2);
    });
  });
});

Deno.test("discovery: the direct reply goes to the carried reply port, again after a restart", async () => {
  const [a, b] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port });
  // Bob, by hand: each "process" is a socket whose port he announces as his reply port.
  const first = rawSocket();
  const second = rawSocket();
  const replyPortOf = (s: Deno.DatagramConn) => (s.addr as Deno.NetAddr).port;
  const receiveReply = async (s: Deno.DatagramConn) => {
    const [data] = await s.receive();
    return data;
  };
  await using([alice], async () => {
    try {
      await alice.discovery.start();
      const hello1 = await encodeAnnouncement(fields({ replyPort: replyPortOf(first) }), b);
      await first.send(hello1, { transport: "udp", hostname: LOOPBACK_BROADCAST, port });
      const reply1 = await receiveReply(first);
      assert.equal(reply1[5], 2, "kind: reply");
      // Killed and restarted before timing out: same key, new socket, seq starting over.
      const hello2 = await encodeAnnouncement(
        fields({ replyPort: replyPortOf(second), timestamp: Date.now() + 1, seq: 1 }),
        b,
      );
      await second.send(hello2, { transport: "udp", hostname: LOOPBACK_BROADCAST, port });
      const reply2 = await receiveReply(second);
      assert.equal(reply2[5], 2, "kind: reply");
      assert.equal(alice.ups.length, 1, "still the same peer, up all along");
      assert.equal(alice.discovery.stats.replies, 2);
    } finally {
      first.close();
      second.close();
    }
  });
});

Deno.test("discovery: a peer not heard for 3 of its intervals goes down by timeout", async () => {
  const [a, b] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port });
  // Bob is played by hand: he announces once (saying he announces every 100 ms), then falls
  // silent without a goodbye, as after kill -9.
  const bob = rawSocket();
  await using([alice], async () => {
    try {
      await alice.discovery.start();
      const bytes = await encodeAnnouncement(fields({ intervalMs: 100 }), b);
      await bob.send(bytes, { transport: "udp", hostname: LOOPBACK_BROADCAST, port });
      await waitFor(() => alice.knows(b), "Bob to be up");
      const heardAt = alice.ups[0].lastSeen;
      await waitFor(() => alice.downs.length === 1, "Bob to time out");
      assert.equal(alice.downs[0].reason, "timeout");
      assert.ok(alice.downs[0].at - heardAt >= 300, "down before 3 intervals");
      assert.ok(!alice.knows(b));
      // A replay of his last datagram does not bring him back.
      await bob.send(bytes, { transport: "udp", hostname: LOOPBACK_BROADCAST, port });
      await waitFor(() => alice.discovery.stats.duplicate === 1, "the replay to be counted");
      assert.ok(!alice.knows(b));
    } finally {
      bob.close();
    }
  });
});

Deno.test("discovery: markAlive keeps a silent peer up; without it the peer times out", async () => {
  const [a, b] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port });
  const bob = rawSocket();
  await using([alice], async () => {
    try {
      await alice.discovery.start();
      assert.equal(alice.discovery.markAlive(b.fingerprint), false, "unknown peer");
      const bytes = await encodeAnnouncement(fields({ intervalMs: 60 }), b);
      await bob.send(bytes, { transport: "udp", hostname: LOOPBACK_BROADCAST, port });
      await waitFor(() => alice.knows(b), "Bob to be up");
      // Six timeouts' worth of silence, with a live connection said to exist all along.
      const until = Date.now() + 6 * 180;
      while (Date.now() < until) {
        assert.equal(alice.discovery.markAlive(b.fingerprint), true);
        await sleep(5);
      }
      assert.equal(alice.downs.length, 0);
      await waitFor(() => alice.downs.length === 1, "Bob to time out");
      assert.equal(alice.downs[0].reason, "timeout");
      assert.equal(alice.discovery.markAlive(b.fingerprint), false, "down peer");
    } finally {
      bob.close();
    }
  });
});

Deno.test("discovery: fuzzed, forged, stale and replayed datagrams are counted while discovery goes on", async () => {
  const [a, b, c] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port });
  // Bob announces every 20 ms, so an eavesdropper can capture several genuine datagrams.
  const bob = new Probe(b, { name: "Bob", port, intervalMs: 20 });
  // The attacker listens on the shared port too, and sends from other loopback addresses, so
  // its floods are limited per source address without touching the peers at 127.0.0.1.
  const eavesdropper = rawSocket("0.0.0.0", port, true);
  const attackers = ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map((h) => rawSocket(h));
  const send = (from: Deno.DatagramConn, bytes: Uint8Array) =>
    from.send(bytes, { transport: "udp", hostname: LOOPBACK_BROADCAST, port });
  /** Sends in small batches, letting Alice process each, so no datagram drops in the kernel. */
  const attack = async (from: Deno.DatagramConn, datagrams: Uint8Array[]) => {
    for (let i = 0; i < datagrams.length; i += 10) {
      const before = alice.rejected();
      const batch = datagrams.slice(i, i + 10);
      for (const d of batch) await send(from, d);
      await waitFor(() => alice.rejected() >= before + batch.length, "Alice to reject a batch");
    }
  };
  await using([alice, bob], async () => {
    try {
      await alice.discovery.start();
      await bob.discovery.start();
      await waitFor(() => alice.knows(b) && bob.knows(a), "both to know each other");

      // Capture two genuine datagrams of Bob's from the air.
      const captured: Uint8Array[] = [];
      while (captured.length < 2) {
        const [data] = await eavesdropper.receive();
        const view = new DataView(data.buffer, data.byteOffset);
        // Bob's own hellos only (his SPKI follows the name; match on the TCP port is enough here).
        if (data.length > 29 && view.getUint16(6) === 5000 && data[5] === 1) {
          if (new TextDecoder().decode(data.subarray(29, 32)) === "Bob") {
            captured.push(data.slice());
          }
        }
      }

      const random = (n: number) => {
        const out: Uint8Array[] = [];
        for (let i = 0; i < n; i++) {
          out.push(crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 1300))));
        }
        return out;
      };
      const genuine = await encodeAnnouncement(fields({ name: "Bob" }), b);
      const truncated = Array.from(
        { length: 40 },
        (_, i) => genuine.subarray(0, Math.floor((i * genuine.length) / 40)),
      );
      // Bob's key and name, signed by Carol's key.
      const forged = await encodeAnnouncement(fields({ name: "Bob", seq: 99 }), {
        spki: b.spki,
        sign: (d: Uint8Array) => c.sign(d),
      });
      // Carol's genuine signature, but from two minutes ago.
      const stale = await encodeAnnouncement(
        fields({ name: "Carol", timestamp: Date.now() - 120_000 }),
        c,
      );
      const base = alice.discovery.stats;

      await attack(attackers[0], random(100));
      await attack(attackers[1], truncated);
      await attack(attackers[2], [forged, forged, stale]);
      // Replays of captured genuine datagrams: older than Bob's latest (he announces every
      // 20 ms), so refused whatever address they come from.
      await attack(attackers[2], captured);

      const s = alice.discovery.stats;
      assert.equal(
        s.malformed + s.version + s.key + s.signature -
          (base.malformed + base.version + base.key + base.signature),
        100 + 40 + 2,
      );
      assert.equal(s.signature - base.signature >= 2, true);
      assert.equal(s.stale - base.stale, 1);
      assert.equal(s.replayed + s.duplicate - (base.replayed + base.duplicate), 2);
      assert.equal(s.flood, 0);
      // Nothing of it made a peer: Alice knows only Bob, and Bob is still Bob.
      assert.deepEqual(alice.discovery.peers().map((p) => p.fingerprint), [b.fingerprint]);
      assert.ok(!alice.knows(c));
      assert.deepEqual(alice.downs, []);
      assert.deepEqual(alice.warnings, []);

      // And discovery still works: a newcomer is found and answered.
      const carol = new Probe(c, { name: "Carol", port });
      await using([carol], async () => {
        await carol.discovery.start();
        await waitFor(
          () => alice.knows(c) && carol.knows(a) && carol.knows(b),
          "Carol to be found",
        );
      });
    } finally {
      eavesdropper.close();
      for (const s of attackers) s.close();
    }
  });
});

Deno.test("discovery: a flood from one address is rate-limited while other sources are heard", async () => {
  const [a, b] = await identities();
  const port = randomPort();
  const alice = new Probe(a, { name: "Alice", port, floodLimit: { burst: 20, perSecond: 1 } });
  const attacker = rawSocket("127.0.0.9");
  await using([alice], async () => {
    try {
      await alice.discovery.start();
      const junk = new Uint8Array(100);
      for (let i = 0; i < 300; i++) {
        await attacker.send(junk, { transport: "udp", hostname: LOOPBACK_BROADCAST, port });
        if (i % 10 === 9) {
          await waitFor(() => alice.discovery.stats.received >= i + 1 + 1, "Alice to read a batch");
        }
      }
      await waitFor(
        () => alice.discovery.stats.flood + alice.discovery.stats.malformed >= 300,
        "all counted",
      );
      const s = alice.discovery.stats;
      // 20 at once, then about one a second: far fewer than 300 were even parsed.
      assert.ok(s.malformed >= 20 && s.malformed < 100, `${s.malformed} parsed`);
      assert.equal(s.flood, 300 - s.malformed);
      // Bob, from another address, is heard.
      const bob = new Probe(b, { name: "Bob", port });
      await using([bob], async () => {
        await bob.discovery.start();
        await waitFor(() => alice.knows(b) && bob.knows(a), "Bob to be found");
      });
    } finally {
      attacker.close();
    }
  });
});

Deno.test({
  name:
    "discovery: with only loopback up, the default targets give one warning and it keeps running",
  // Safety: never broadcast on a real network from a test. Run inside `unshare --net`.
  ignore: broadcastAddresses(Deno.networkInterfaces()).length > 0,
  fn: async () => {
    const [a, b] = await identities();
    const port = randomPort();
    // No `broadcast` option: the interfaces decide, and there is nothing but loopback.
    const alice = new Probe(a, { name: "Alice", port, broadcast: undefined, intervalMs: 10 });
    const bob = new Probe(b, { name: "Bob", port });
    await using([alice, bob], async () => {
      await alice.discovery.start();
      await waitFor(() => alice.discovery.stats.rounds >= 10, "ten announcement rounds");
      assert.equal(alice.warnings.length, 1);
      assert.match(alice.warnings[0], /no broadcast route/);
      assert.match(alice.warnings[0], /\/connect/);
      assert.equal(alice.discovery.stats.sent, 0);
      // Still listening, and still answering: Bob (who broadcasts on loopback) finds her.
      await bob.discovery.start();
      await waitFor(() => alice.knows(b) && bob.knows(a), "both to know each other");
      assert.equal(alice.warnings.length, 1);
    });
  },
});

Deno.test({
  name: "discovery: a send error is a warning, once per target, not a crash",
  // 0.0.0.1 is refused by the kernel anywhere; run only in a namespace all the same.
  ignore: broadcastAddresses(Deno.networkInterfaces()).length > 0,
  fn: sendErrorTest,
});

async function sendErrorTest(): Promise<void> {
  const [a] = await identities();
  const port = randomPort();
  // 0.0.0.1 has no route from inside the namespace (nor anywhere: 0.0.0.0/8 is "this network").
  const alice = new Probe(a, {
    name: "Alice",
    port,
    broadcast: ["0.0.0.1", LOOPBACK_BROADCAST],
    intervalMs: 10,
  });
  await using([alice], async () => {
    await alice.discovery.start();
    await waitFor(() => alice.discovery.stats.rounds >= 5, "five rounds");
    assert.ok(alice.discovery.stats.sendErrors >= 5);
    assert.equal(alice.warnings.length, 1);
    assert.match(alice.warnings[0], /0\.0\.0\.1/);
    assert.ok(alice.discovery.stats.own >= 1, "the other target still works");
  });
}

Deno.test("discovery: a port held without reuseAddress is a DiscoveryError; start and stop are guarded", async () => {
  const [a] = await identities();
  const port = randomPort();
  const holder = rawSocket("0.0.0.0", port, false);
  try {
    const d = new Discovery(a, {
      name: "Alice",
      tcpPort: 5000,
      port,
      broadcast: [LOOPBACK_BROADCAST],
    });
    await assert.rejects(d.start(), DiscoveryError);
    await d.stop();
  } finally {
    holder.close();
  }
  const d = new Discovery(a, {
    name: "Alice",
    tcpPort: 5000,
    port,
    broadcast: [LOOPBACK_BROADCAST],
  });
  await d.start();
  await assert.rejects(d.start(), DiscoveryError);
  await d.stop();
  await d.stop();
  assert.throws(() => new Discovery(a, { name: "A", tcpPort: 0 }), RangeError);
  assert.throws(() => new Discovery(a, { name: "A", tcpPort: 1, port: 70000 }), RangeError);
  assert.throws(() => new Discovery(a, { name: "A", tcpPort: 1, intervalMs: 0 }), RangeError);
  assert.throws(() => new Discovery(a, { name: "A", tcpPort: 1, intervalMs: 2 ** 31 }), RangeError);
  assert.throws(() => new Discovery(a, { name: "", tcpPort: 1 }), RangeError);
  assert.throws(() => new Discovery(a, { name: "a\x1b[2J", tcpPort: 1 }), RangeError);
});
