/**
 * Soak: four real peers on one loopback LAN exchange messages while peers are killed (SIGKILL)
 * and restarted, and connections are cut (`ss -K`), at random. At the end nothing shown as sent
 * is lost, nothing is stored or shown twice, and the memory of the peer that lived through it all
 * has not grown.
 *
 * Runs for P2PCHAT_SOAK_SECONDS of chaos, then lets everything settle. Default: 60 s in the test
 * suite (`deno task test`, CI), 300 s with `deno task soak` (which passes `--full`). Needs its own
 * network namespace (as every network test here): `unshare --net`, with `ss` available.
 */

import assert from "node:assert/strict";
import { type Event, PeerProcess } from "../_helpers/peer_process.ts";
import { hasCommand } from "../_helpers/tools.ts";

const SECONDS = Number(
  Deno.env.get("P2PCHAT_SOAK_SECONDS") ?? (Deno.args.includes("--full") ? "300" : "60"),
);
if (!Number.isFinite(SECONDS) || SECONDS < 5) {
  throw new RangeError(`P2PCHAT_SOAK_SECONDS must be at least 5, got ${SECONDS}`);
}
const NAMES = ["Alice", "Bob", "Carol", "Dave"];
/** Alice is never killed: her memory is watched. Her connections are cut like everyone's. */
const LONG_LIVED = "Alice";
const INTERVAL_S = 0.5;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function rand(lo: number, hi: number): number {
  return lo + Math.random() * (hi - lo);
}

function pick<T>(xs: readonly T[]): T {
  return xs[Math.floor(Math.random() * xs.length)];
}

async function until(cond: () => Promise<boolean>, what: string, timeoutMs: number) {
  const start = performance.now();
  while (!(await cond())) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

// `ss` comes with iproute2 (CI installs it); without it the soak runs without cut connections.
const CAN_CUT = hasCommand("ss", ["-V"]);

/** Cuts every TCP connection to or from `port` (both ends see a reset). */
async function cutConnections(port: number): Promise<void> {
  if (!CAN_CUT) return;
  const out = await new Deno.Command("ss", {
    args: ["-K", "-t", "state", "established", `( sport = :${port} or dport = :${port} )`],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`ss -K failed: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test({
  name: `soak: ${NAMES.length} peers, ${SECONDS} s of messages with random SIGKILLs, restarts ` +
    `and cut connections: nothing lost, nothing twice, memory flat (P2PCHAT_SOAK_SECONDS)`,
  async fn() {
    const discoveryPort = 40_000 + Math.floor(Math.random() * 9_000);
    const args = [
      "--discovery-port",
      String(discoveryPort),
      "--broadcast",
      "127.255.255.255",
      "--interval",
      String(INTERVAL_S),
    ];
    const dirs = new Map<string, string>();
    for (const n of NAMES) dirs.set(n, await Deno.makeTempDir({ prefix: `p2pchat-soak-${n}-` }));
    /** Every process that ran under each name, the current one last. */
    const lives = new Map<string, PeerProcess[]>(NAMES.map((n) => [n, []]));
    const running = new Map<string, PeerProcess>();
    const start = async (n: string) => {
      const p = await PeerProcess.start(n, { dataDir: dirs.get(n)!, args });
      lives.get(n)!.push(p);
      running.set(n, p);
      return p;
    };
    const stats = { kills: 0, cuts: 0, attempted: 0 };
    const attempted = new Set<string>();
    /** Each text sent, and the process (the life of its sender) it was handed to. */
    const handedTo = new Map<string, PeerProcess>();
    let chaos = true;
    try {
      for (const n of NAMES) await start(n);
      // Everyone knows everyone before the chaos starts (so /send by name works).
      await until(
        () =>
          Promise.resolve(
            [...running.values()].every((p) =>
              new Set(p.all("peer-up").map((e) => e.name)).size === NAMES.length - 1
            ),
          ),
        "discovery of all peers",
        30_000,
      );

      const senders = NAMES.map(async (from) => {
        let n = 0;
        while (chaos) {
          const p = running.get(from);
          if (p) {
            // Bursts of 1-4 lines in one write, so that a SIGKILL often lands mid-burst.
            const lines: string[] = [];
            for (let i = Math.floor(rand(1, 5)); i > 0; i--) {
              const to = pick(NAMES.filter((x) => x !== from));
              const text = `soak ${from}>${to} #${n++}`;
              attempted.add(text);
              handedTo.set(text, p);
              stats.attempted++;
              lines.push(`/send ${to} ${text}`);
            }
            // The process may die under us: then these may or may not have been taken.
            await p.command(lines.join("\n")).catch(() => {});
          }
          await sleep(rand(50, 250));
        }
      });

      const alice = running.get(LONG_LIVED)!;
      const chaosEnd = performance.now() + SECONDS * 1000;
      const warmAt = performance.now() + Math.min(15_000, SECONDS * 250);
      let warmRss = 0;
      const rssTrend: number[] = [];
      let nextSample = warmAt;
      while (performance.now() < chaosEnd) {
        await sleep(rand(500, 2500));
        if (performance.now() >= nextSample) {
          rssTrend.push(await alice.rssKiB());
          if (warmRss === 0) warmRss = rssTrend[0];
          nextSample += Math.max(5_000, SECONDS * 100);
        }
        if (Math.random() < 0.5) {
          const victim = pick(NAMES.filter((x) => x !== LONG_LIVED && running.has(x)));
          const p = running.get(victim)!;
          running.delete(victim);
          // Kill it right after handing it a burst, so that some sends are cut mid-way.
          const burst: string[] = [];
          for (let i = 0; i < 5; i++) {
            const to = pick(NAMES.filter((x) => x !== victim));
            const text = `soak ${victim}>${to} last-${stats.kills}-${i}`;
            attempted.add(text);
            handedTo.set(text, p);
            stats.attempted++;
            burst.push(`/send ${to} ${text}`);
          }
          await p.command(burst.join("\n")).catch(() => {});
          await sleep(rand(0, 5));
          await p.kill("SIGKILL");
          stats.kills++;
          await sleep(rand(200, 2000));
          await start(victim);
        } else {
          await cutConnections(running.get(pick(NAMES))!.port);
          stats.cuts++;
        }
      }
      if (warmRss === 0) warmRss = await alice.rssKiB();
      chaos = false;
      await Promise.all(senders);
      // Memory at the end of the load, before the checks below make Alice answer large
      // /history queries (whose buffers V8 keeps for a while: not a leak).
      await sleep(2000);
      const endRss = await alice.rssKiB();

      // Settle: every outgoing message in each sender's history must reach its receiver.
      const history = async (p: PeerProcess, peer: string): Promise<Event[]> => {
        const got = p.next((e) => e.type === "history" && e.peer === peer, 30_000);
        await p.command(`/history ${peer} 100000`);
        return (await got).messages;
      };
      type Pair = { out: Event[]; in: Event[] };
      const snapshot = async (): Promise<Map<string, Pair>> => {
        const pairs = new Map<string, Pair>();
        for (const from of NAMES) {
          for (const to of NAMES) {
            if (from === to) continue;
            const out = (await history(running.get(from)!, to)).filter((m) =>
              m.direction === "out"
            );
            const inn = (await history(running.get(to)!, from)).filter((m) => m.direction === "in");
            pairs.set(`${from}>${to}`, { out, in: inn });
          }
        }
        return pairs;
      };
      let pairs = new Map<string, Pair>();
      const settleStart = performance.now();
      await until(
        async () => {
          pairs = await snapshot();
          return [...pairs.values()].every((p) =>
            p.out.every((m) => m.state === "delivered") &&
            p.out.every((m) => p.in.some((r) => r.id === m.id))
          );
        },
        "every stored message to be delivered and acknowledged",
        120_000,
      );
      const settleSeconds = (performance.now() - settleStart) / 1000;
      // Late duplicates would show up now.
      await sleep(2000);
      pairs = await snapshot();
      const afterChecksRss = await alice.rssKiB();

      let stored = 0;
      let shownMissingEvent = 0;
      let receivedUnrecorded = 0;
      /** Per sending process: messages received that its history lacks (it died first). */
      const unrecordedBy = new Map<PeerProcess, string[]>();
      for (const [key, pair] of pairs) {
        const [from, to] = key.split(">");
        stored += pair.out.length;
        // Nothing shown as sent (or queued) is missing from the sender's own history...
        const outIds = new Set(pair.out.map((m) => m.id));
        for (const life of lives.get(from)!) {
          for (const e of life.all("sent").concat(life.all("queued"))) {
            if (e.to === to) assert.ok(outIds.has(e.id), `${key}: ${e.id} was shown as sent`);
          }
        }
        // ...and everything in it reached the receiver, once.
        const inIds = pair.in.map((m) => m.id);
        assert.equal(new Set(inIds).size, inIds.length, `${key}: no id stored twice`);
        const inTexts = pair.in.map((m) => m.text);
        assert.equal(new Set(inTexts).size, inTexts.length, `${key}: no text stored twice`);
        for (const m of pair.out) {
          assert.ok(inIds.includes(m.id), `${key}: ${m.text} lost`);
          assert.equal(m.state, "delivered");
        }
        for (const m of pair.in) {
          assert.ok(attempted.has(m.text), `${key}: ${m.text} was never sent`);
          if (outIds.has(m.id)) continue;
          receivedUnrecorded++;
          const life = handedTo.get(m.text)!;
          unrecordedBy.set(life, [...(unrecordedBy.get(life) ?? []), m.text]);
        }
        // Shown to the receiver's user at most once, across all its lives.
        const shown = lives.get(to)!.flatMap((l) => l.all("message")).filter((e) =>
          e.from === from
        );
        const shownIds = shown.map((e) => e.id);
        assert.equal(new Set(shownIds).size, shownIds.length, `${key}: a message shown twice`);
        shownMissingEvent += pair.in.filter((m) => !shownIds.includes(m.id)).length;
      }
      // One message at a time leaves before its commit: one per killed process at most.
      for (const texts of unrecordedBy.values()) {
        assert.ok(texts.length <= 1, `one process left unrecorded: ${texts.join(", ")}`);
      }
      for (const life of lives.values()) {
        for (const p of life) {
          const errors = p.all("error");
          assert.deepEqual(errors, [], `${p.name}: error events`);
        }
      }
      const growth = endRss - warmRss;
      console.log(
        [
          `soak summary (${SECONDS} s of chaos):`,
          `  sends attempted ${stats.attempted}; stored by senders ${stored}; all delivered ` +
          `exactly once (settled ${settleSeconds.toFixed(1)} s after the chaos)`,
          `  SIGKILL + restart: ${stats.kills}; connection cuts: ${stats.cuts}; processes run: ` +
          `${[...lives.values()].reduce((a, l) => a + l.length, 0)}`,
          `  received though the sender died before recording it: ${receivedUnrecorded}; ` +
          `stored but its event lost to a SIGKILL: ${shownMissingEvent}`,
          `  ${LONG_LIVED}'s resident memory: ${(warmRss / 1024).toFixed(1)} MiB after warm-up, ` +
          `${(endRss / 1024).toFixed(1)} MiB at the end (${growth >= 0 ? "+" : ""}` +
          `${(growth / 1024).toFixed(1)} MiB); during the chaos: ` +
          rssTrend.map((k) => (k / 1024).toFixed(0)).join(" ") + " MiB; after the " +
          `/history checks: ${(afterChecksRss / 1024).toFixed(1)} MiB`,
        ].join("\n"),
      );
      // Generous: V8 grows its heap lazily; a leak per message would be far above this.
      assert.ok(
        growth < Math.max(32 * 1024, warmRss / 2),
        `${LONG_LIVED}'s memory grew from ${warmRss} KiB to ${endRss} KiB`,
      );
    } finally {
      chaos = false;
      await Promise.all([...running.values()].map((p) => p.quit().catch(() => p.kill())));
      for (const life of lives.values()) for (const p of life) await p.cleanup();
      for (const d of dirs.values()) await Deno.remove(d, { recursive: true });
    }
  },
});
