// End-to-end test of discovery on a real multi-host IPv4 LAN (issue 4), made of network
// namespaces this test creates and removes itself:
//
//   p2pc-<id>-h1 (10.77.0.1/24, lan0) ─┐
//   p2pc-<id>-h2 (10.77.0.2/24, lan0) ─┼─ veth ── br0 in p2pc-<id>-br
//   p2pc-<id>-h3 (10.77.0.3/24, lan0) ─┘
//
// Every address lives only inside these namespaces, which are connected to nothing else: no
// packet can reach the machine's real interfaces. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and
// the `ip` tool; skipped with the reason otherwise. It also works inside `unshare --net`, as the
// test suite runs in CI: `ip netns add` makes brand-new namespaces from wherever it is called.

import assert from "node:assert/strict";
import { type Event, PeerProcess } from "../_helpers/peer_process.ts";

const SUBNET = "10.77.0";
const HOSTS = 3;
const INTERVAL_S = 0.5;
const TCP_PORT = 5000;

/** Runs `ip ARGS`; throws with its stderr when it fails. */
async function ip(...args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

function randomId(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(4)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/**
 * Creates the namespaces of the LAN, recording each in `made` as soon as it exists (so the caller
 * can remove it even when a later step fails).
 */
async function makeLan(id: string, made: string[]): Promise<string[]> {
  const bridgeNs = `p2pc-${id}-br`;
  await ip("netns", "add", bridgeNs);
  made.push(bridgeNs);
  await ip("-n", bridgeNs, "link", "set", "lo", "up");
  await ip("-n", bridgeNs, "link", "add", "br0", "type", "bridge", "forward_delay", "0");
  await ip("-n", bridgeNs, "link", "set", "br0", "up");
  const hosts: string[] = [];
  for (let i = 1; i <= HOSTS; i++) {
    const ns = `p2pc-${id}-h${i}`;
    await ip("netns", "add", ns);
    made.push(ns);
    hosts.push(ns);
    await ip("-n", ns, "link", "set", "lo", "up");
    // The veth pair is made in the host namespace; its other end goes straight to the bridge's.
    await ip(
      "-n",
      ns,
      "link",
      "add",
      "lan0",
      "type",
      "veth",
      "peer",
      "name",
      `v${i}`,
      "netns",
      bridgeNs,
    );
    await ip("-n", bridgeNs, "link", "set", `v${i}`, "master", "br0");
    await ip("-n", bridgeNs, "link", "set", `v${i}`, "up");
    await ip(
      "-n",
      ns,
      "addr",
      "add",
      `${SUBNET}.${i}/24`,
      "broadcast",
      `${SUBNET}.255`,
      "dev",
      "lan0",
    );
    await ip("-n", ns, "link", "set", "lan0", "up");
  }
  return hosts;
}

/** Removes namespaces (their veths and the bridge go with them); reports, never throws. */
async function removeLan(made: string[]): Promise<void> {
  for (const ns of made.reverse()) {
    await ip("netns", "del", ns).catch((e) => console.error(`cleanup: ${(e as Error).message}`));
  }
}

/** Why this test cannot run here, or null when it can. Tries the real thing on a scratch LAN. */
async function lanProblem(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  if (Deno.uid() !== 0) return "needs root to create network namespaces (ip netns add)";
  const made: string[] = [];
  try {
    const id = `probe${randomId()}`;
    const ns = `p2pc-${id}-br`;
    await ip("netns", "add", ns);
    made.push(ns);
    await ip("-n", ns, "link", "add", "br0", "type", "bridge");
    await ip("-n", ns, "link", "add", "a0", "type", "veth", "peer", "name", "a1");
    return null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "the ip tool (iproute2) is not installed";
    return `cannot build a namespace LAN here: ${(e as Error).message}`;
  } finally {
    await removeLan(made);
  }
}

const problem = await lanProblem();
if (problem !== null) console.warn(`lan_test skipped: ${problem}`);

const isUp = (q: PeerProcess) => (e: Event) =>
  e.type === "peer-up" && e.fingerprint === q.fingerprint;

Deno.test({
  name: "lan: three hosts on a bridged /24 discover each other by default broadcast and chat",
  ignore: problem !== null,
  fn: async () => {
    const id = randomId();
    const made: string[] = [];
    const peers: PeerProcess[] = [];
    try {
      const hosts = await makeLan(id, made);
      const discoveryPort = String(20000 + Math.floor(Math.random() * 12000));
      // Default broadcast targets (no --broadcast): each peer finds 10.77.0.255 on lan0 itself.
      const args = ["--discovery-port", discoveryPort, "--interval", String(INTERVAL_S)];
      // Not waiting for `ready` inside start(): every process gets a handle for the cleanup.
      for (const [i, ns] of hosts.entries()) {
        peers.push(
          await PeerProcess.start(`H${i + 1}`, {
            port: TCP_PORT,
            args,
            wrap: ["ip", "netns", "exec", ns],
            waitReady: false,
          }),
        );
      }
      for (const p of peers) p.ready = await p.waitFor((e) => e.type === "ready", 60_000);

      // Everyone hears everyone, from its LAN address.
      let worst = -Infinity;
      for (const [i, p] of peers.entries()) {
        for (const [j, q] of peers.entries()) {
          if (i === j) continue;
          const up = await p.waitFor(isUp(q), 10_000);
          assert.equal(up.name, q.name);
          assert.equal(up.host, `${SUBNET}.${j + 1}`, `${p.name} hears ${q.name} from its address`);
          assert.equal(up.port, TCP_PORT);
          worst = Math.max(worst, up.ts - Math.max(p.ready!.ts, q.ready!.ts));
        }
      }
      console.log(`  discovery latency on the LAN, worst pair: ${worst} ms (target 1000)`);
      const answer = peers[0].next((e) => e.type === "peers");
      await peers[0].command("/peers");
      const list = (await answer).peers;
      assert.deepEqual(
        list.map((e: Event) => [e.name, e.host, e.port, e.active]).sort(),
        [["H2", `${SUBNET}.2`, TCP_PORT, true], ["H3", `${SUBNET}.3`, TCP_PORT, true]],
      );

      // Host 1 writes to host 3 by name: connect on demand across the LAN.
      const [h1, h2, h3] = peers;
      await h1.command("/send H3 hello across the LAN");
      const sent = await h1.waitFor((e) => e.type === "sent");
      const msg = await h3.waitFor((e) => e.type === "message");
      assert.equal(msg.text, "hello across the LAN");
      assert.equal(msg.from, "H1");
      assert.equal(msg.id, sent.id);
      assert.equal((await h1.waitFor((e) => e.type === "delivered")).id, sent.id);
      await h3.command("/send H1 and back");
      assert.equal((await h1.waitFor((e) => e.type === "message")).text, "and back");
      await h3.waitFor((e) => e.type === "delivered");

      // A goodbye crosses the LAN too.
      assert.equal(await h2.quit(), 0);
      for (const p of [h1, h3]) {
        const down = await p.waitFor((e) => e.type === "peer-down", 10_000);
        assert.equal(down.fingerprint, h2.fingerprint);
        assert.equal(down.reason, "goodbye");
      }
      for (const p of [h1, h3]) assert.equal(await p.quit(), 0);
      for (const p of peers) {
        assert.ok(!p.stderr.includes("no broadcast route"), `${p.name}: ${p.stderr}`);
        assert.ok(!p.stderr.includes("    at "), `${p.name}: ${p.stderr}`);
      }
    } finally {
      for (const p of peers) await p.cleanup();
      await removeLan(made);
    }
  },
});
