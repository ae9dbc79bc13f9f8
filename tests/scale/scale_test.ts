/**
 * Scale: many real peers on one simulated LAN (loopback broadcast, 127.255.255.255, on a random
 * shared discovery port, in the test's own network namespace). Everyone lists everyone; a message
 * from each peer to each other peer arrives exactly once; the announcement traffic per peer is
 * counted with a listening socket on the discovery port.
 *
 * 50 peers by default (about 75 s on 2 cores); P2PCHAT_SCALE_PEERS=N for another number. No
 * assertion on speed: the waits are bounded only so that a failure ends the test.
 */

import assert from "node:assert/strict";
import { type Event, PeerProcess } from "../_helpers/peer_process.ts";

const PEERS = Number(Deno.env.get("P2PCHAT_SCALE_PEERS") ?? "50");
if (!Number.isInteger(PEERS) || PEERS < 2 || PEERS > 100) {
  throw new RangeError(`P2PCHAT_SCALE_PEERS must be 2-100, got ${PEERS}`);
}
/**
 * Every peer checks the RSA signature of every other peer's announcement: about 1 ms of CPU each
 * here, so one host simulating N peers spends N²·1 ms per interval on it. On a real LAN each
 * peer has its own machine (N·1 ms per interval); here a 2 s interval keeps 50 peers from
 * saturating 2 cores.
 */
const INTERVAL_S = PEERS > 20 ? 2 : 1;

async function until(cond: () => boolean, what: string, timeoutMs: number): Promise<number> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return performance.now() - start;
}

/** Counts the broadcast datagrams on the shared discovery port (every such socket gets each). */
function countDatagrams(port: number) {
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: "0.0.0.0",
    port,
    reuseAddress: true,
  });
  const seen: { at: number; bytes: number }[] = [];
  const done = (async () => {
    try {
      for (;;) {
        const [data] = await socket.receive();
        seen.push({ at: performance.now(), bytes: data.length });
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted)) {
        throw e;
      }
    }
  })();
  return {
    /** Datagrams and bytes seen between two performance.now() times. */
    between(from: number, to: number) {
      const inside = seen.filter((s) => s.at >= from && s.at < to);
      return { packets: inside.length, bytes: inside.reduce((a, s) => a + s.bytes, 0) };
    },
    async close() {
      socket.close();
      await done;
    },
  };
}

function name(i: number): string {
  return `P${String(i).padStart(2, "0")}`;
}

Deno.test({
  name: `scale: ${PEERS} peers on one loopback LAN list each other and exchange ` +
    `${PEERS * (PEERS - 1)} messages exactly once (P2PCHAT_SCALE_PEERS)`,
  async fn() {
    const discoveryPort = 40_000 + Math.floor(Math.random() * 9_000);
    const counter = countDatagrams(discoveryPort);
    const peers: PeerProcess[] = [];
    const args = [
      "--discovery-port",
      String(discoveryPort),
      "--broadcast",
      "127.255.255.255",
      "--interval",
      String(INTERVAL_S),
    ];
    try {
      // Staggered start, a few at a time: 2 cores, and each new peer makes an RSA key.
      const t0 = performance.now();
      for (let i = 0; i < PEERS; i += 3) {
        const wave = [];
        for (let j = i; j < Math.min(PEERS, i + 3); j++) {
          wave.push(PeerProcess.start(name(j), { args }));
        }
        peers.push(...await Promise.all(wave));
      }
      const started = performance.now();
      const startSeconds = (started - t0) / 1000;
      const byName = new Map(peers.map((p) => [p.name, p]));
      const fingerprints = new Set(peers.map((p) => p.fingerprint));
      assert.equal(fingerprints.size, PEERS);

      // Everyone hears everyone.
      const heard = (p: PeerProcess) =>
        new Set(p.all("peer-up").map((e) => e.fingerprint).filter((f) => f !== p.fingerprint));
      const meshMs = await until(
        () => peers.every((p) => heard(p).size === PEERS - 1),
        "every peer to hear every other",
        60_000 + PEERS * 1_000,
      );
      for (const p of peers) {
        await p.command("/peers");
        const list = await p.next((e) => e.type === "peers", 30_000);
        const active = list.peers.filter((x: Event) => x.active);
        assert.equal(
          active.length,
          PEERS - 1,
          `${p.name} lists ${active.length} active peers; went down since heard: ` +
            JSON.stringify(p.all("peer-down").map((e) => [e.name, e.reason, e.ts])) +
            `; stderr: ${p.stderr.slice(-2000)}`,
        );
      }

      // Traffic: broadcasts in a steady window of a few intervals.
      const windowS = 5 * INTERVAL_S;
      const from = performance.now();
      await new Promise((r) => setTimeout(r, windowS * 1000));
      const traffic = counter.between(from, performance.now());
      const perPeerPerInterval = traffic.packets / PEERS / (windowS / INTERVAL_S);
      const bytesPerPacket = traffic.bytes / Math.max(1, traffic.packets);
      // One broadcast per peer per interval, whatever the size of the LAN: the total grows
      // linearly with the peers. (Direct replies go to each peer's own socket, not counted here.)
      assert.ok(
        perPeerPerInterval >= 0.5 && perPeerPerInterval <= 1.5,
        `${perPeerPerInterval.toFixed(2)} broadcasts per peer per interval`,
      );

      // Every peer sends to every other, in rounds: in round r peer i writes to peer i + r, so
      // each pair's connection is opened once (by the lower round) and reused by the other.
      const t1 = performance.now();
      for (let r = 1; r < PEERS; r++) {
        await Promise.all(
          peers.map((p, i) =>
            p.command(`/send ${name((i + r) % PEERS)} m ${p.name} ${name((i + r) % PEERS)}`)
          ),
        );
        // Pace: the next round only once every peer has accepted this one.
        await until(
          () => peers.every((p) => p.all("sent").length + p.all("queued").length >= r),
          `round ${r} to be accepted`,
          60_000,
        );
      }
      const total = PEERS * (PEERS - 1);
      await until(
        () => peers.reduce((n, p) => n + p.all("message").length, 0) >= total,
        `${total} messages to arrive`,
        120_000 + PEERS * 2_000,
      );
      await until(
        () => peers.every((p) => p.all("delivered").length >= PEERS - 1),
        "every message to be acknowledged",
        60_000,
      );
      const sendSeconds = (performance.now() - t1) / 1000;
      // Let late duplicates, if any, show up before counting.
      await new Promise((r) => setTimeout(r, 2 * INTERVAL_S * 1000));

      for (const p of peers) {
        const messages = p.all("message");
        const texts = messages.map((e) => e.text).sort();
        const expected = peers.filter((q) => q !== p).map((q) => `m ${q.name} ${p.name}`).sort();
        assert.deepEqual(texts, expected, `${p.name} received each message exactly once`);
        assert.equal(new Set(messages.map((e) => e.id)).size, messages.length);
        for (const e of messages) {
          assert.equal(e.fingerprint, byName.get(e.from)!.fingerprint, `${e.from} is who it says`);
        }
        const delivered = p.all("delivered");
        assert.equal(new Set(delivered.map((e) => e.id)).size, PEERS - 1, `${p.name} delivered`);
        assert.deepEqual(p.all("error"), [], `${p.name} had no errors`);
      }
      const rss = await Promise.all(peers.map((p) => p.rssKiB()));
      const meanRss = rss.reduce((a, b) => a + b, 0) / rss.length / 1024;

      console.log(
        [
          `scale summary (${PEERS} peers, interval ${INTERVAL_S} s):`,
          `  start-up of all peers (staggered, 3 at a time): ${startSeconds.toFixed(1)} s`,
          `  everyone lists everyone ${(meshMs / 1000).toFixed(1)} s after the last start ` +
          `(${(meshMs / 1000 / INTERVAL_S).toFixed(1)} intervals)`,
          `  announcements: ${perPeerPerInterval.toFixed(2)} packets and ` +
          `${(perPeerPerInterval * bytesPerPacket).toFixed(0)} bytes per interval sent by each ` +
          `peer (${bytesPerPacket.toFixed(0)} B each); each peer receives ` +
          `${(perPeerPerInterval * (PEERS - 1)).toFixed(1)} packets per interval; all peers ` +
          `together ${(traffic.packets / (windowS / INTERVAL_S)).toFixed(1)} packets per interval`,
          `  ${total} messages sent in ${PEERS - 1} rounds, all delivered exactly once in ` +
          `${sendSeconds.toFixed(1)} s`,
          `  resident memory per peer: ${meanRss.toFixed(0)} MiB (mean), ` +
          `${(Math.max(...rss) / 1024).toFixed(0)} MiB (max)`,
        ].join("\n"),
      );
    } finally {
      // Quit a few at a time (each says goodbye to everyone).
      for (let i = 0; i < peers.length; i += 10) {
        await Promise.all(peers.slice(i, i + 10).map((p) => p.quit().catch(() => p.kill())));
      }
      await Promise.all(peers.map((p) => p.cleanup()));
      await counter.close();
    }
  },
});
