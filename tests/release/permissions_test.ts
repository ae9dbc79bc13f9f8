/**
 * Release proof for the permission flags (RUN_FLAGS, the `start` task's flags, which the binary
 * embeds): a whole chat session works under exactly those flags, and taking any one of them away
 * (or any one name out of a scoped list) either stops p2pchat with one line naming the flag, or,
 * for the colour and terminal variables that p2pchat treats as unset when it may not read them,
 * visibly loses what the grant is for.
 *
 * Runs that use the default broadcast addresses need a loopback-only network namespace
 * (`unshare --net`) and are skipped elsewhere, so no test ever sends a packet off the machine.
 */

import assert from "node:assert/strict";
import { RUN_FLAGS } from "../../lib/cli/permissions.ts";
import { PeerProcess } from "../_helpers/peer_process.ts";
import {
  assertStoppedForPermission,
  baseEnv,
  type Grant,
  grants,
  MAIN,
  NOT_ISOLATED,
  runMainBounded,
  without,
} from "./_release.ts";

const LOOPBACK_BROADCAST = "127.255.255.255";
const ESC = "\x1b[";

/** A free UDP port on loopback for one test's discovery traffic. */
function freeUdpPort(): number {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (socket.addr as Deno.NetAddr).port;
  socket.close();
  return port;
}

// ------------------------------------------------------------------ what each grant is for

type Mode = "headless" | "terminal" | "history";

/** Grants without which p2pchat cannot work, and the runs that must stop without them. */
const REQUIRED: Record<string, { modes: Mode[]; defaultBroadcast?: boolean }> = {
  // TCP server and peers, UDP discovery.
  "net": { modes: ["headless", "terminal"] },
  // The data directory (identity, peers.json, chat_history.db).
  "read": { modes: ["headless", "terminal", "history"] },
  "write": { modes: ["headless", "terminal", "history"] },
  // The default data directory: $XDG_DATA_HOME/p2pchat/NAME, else ~/.local/share/p2pchat/NAME.
  "env:HOME": { modes: ["headless", "terminal", "history"] },
  "env:XDG_DATA_HOME": { modes: ["headless", "terminal", "history"] },
  // The broadcast address of each interface, for discovery without --broadcast.
  "sys:networkInterfaces": { modes: ["headless", "terminal"], defaultBroadcast: true },
};

/** Grants p2pchat does without by treating the variable as unset; each has a test below. */
const DEGRADES: Record<string, string> = {
  "env:TERM": "without it TERM=dumb is ignored and a dumb terminal gets escape sequences",
};

/** Grants in RUN_FLAGS that nothing needs (reported to the lead: drop them); tested below. */
const UNUSED: Record<string, string> = {
  // Deno reads these two without any permission check (its Node-compat allowlist).
  "env:NO_COLOR": "Deno lets every program read NO_COLOR",
  "env:FORCE_COLOR": "Deno lets every program read FORCE_COLOR",
  "sys:hostname": "nothing in p2pchat calls Deno.hostname()",
};

function key(g: Grant, item?: string): string {
  return item === undefined ? g.kind : `${g.kind}:${item}`;
}

// ------------------------------------------------------------------ static shape of the flags

Deno.test("RUN_FLAGS: no blanket grant, and every scoped grant is a list of names", () => {
  assert.ok(!RUN_FLAGS.includes("--allow-all") && !RUN_FLAGS.includes("-A"));
  const all = grants(RUN_FLAGS);
  assert.equal(all.length, RUN_FLAGS.filter((f) => f.startsWith("--allow-")).length);
  for (const g of all) {
    assert.ok(!["run", "ffi", "import"].includes(g.kind), `${g.flag} is not needed by p2pchat`);
    if (g.kind === "env" || g.kind === "sys") assert.ok(g.items !== null, `${g.flag} is unscoped`);
  }
  for (const g of all) {
    for (const item of g.items ?? [undefined]) {
      const k = key(g, item);
      assert.ok(
        k in REQUIRED || k in DEGRADES || k in UNUSED,
        `${k} (from ${g.flag}) has no test: say in this file what it is for`,
      );
    }
  }
});

// ------------------------------------------------------------------ a whole session

Deno.test("under exactly RUN_FLAGS: two peers discover each other on loopback and chat", async () => {
  const port = String(freeUdpPort());
  const discovery = [
    "--discovery-port",
    port,
    "--broadcast",
    LOOPBACK_BROADCAST,
    "--interval",
    "0.2",
  ];
  const alice = await PeerProcess.start("Alice", { args: discovery, flags: RUN_FLAGS });
  const bob = await PeerProcess.start("Bob", { args: discovery, flags: RUN_FLAGS });
  try {
    const seenByAlice = await alice.waitFor((e) => e.type === "peer-up" && e.name === "Bob");
    assert.equal(seenByAlice.fingerprint, bob.fingerprint);
    const seenByBob = await bob.waitFor((e) => e.type === "peer-up" && e.name === "Alice");
    assert.equal(seenByBob.fingerprint, alice.fingerprint);

    await alice.command("/send Bob hello from the release flags");
    const sent = await alice.waitFor((e) => e.type === "sent" || e.type === "queued");
    const got = await bob.waitFor((e) => e.type === "message");
    assert.equal(got.text, "hello from the release flags");
    assert.equal(got.fingerprint, alice.fingerprint);
    assert.equal((await alice.waitFor((e) => e.type === "delivered")).id, sent.id);

    await bob.command("/send Alice and back");
    const back = await alice.waitFor((e) => e.type === "message");
    assert.equal(back.text, "and back");
    await bob.waitFor((e) => e.type === "delivered");

    await alice.command("/history Bob");
    const h = await alice.waitFor((e) => e.type === "history");
    assert.deepEqual(
      h.messages.map((m: { direction: string; text: string }) => [m.direction, m.text]),
      [["out", "hello from the release flags"], ["in", "and back"]],
    );
    assert.equal(await alice.quit(), 0);
    assert.equal(await bob.quit(), 0);
    for (const p of [alice, bob]) {
      assert.doesNotMatch(p.stderr, /missing permission|Requires|Uncaught/, p.stderr);
    }

    // The history subcommand, under the same flags, reads what the session stored.
    const r = await runMainBounded(RUN_FLAGS, [
      "history",
      "--name",
      "Alice",
      "--data-dir",
      alice.dataDir,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const dump = JSON.parse(r.stdout);
    assert.equal(dump.length, 1);
    assert.equal(dump[0].peer, "Bob");
    assert.deepEqual(
      dump[0].messages.map((m: { text: string }) => m.text),
      ["hello from the release flags", "and back"],
    );
  } finally {
    await alice.cleanup();
    await bob.cleanup();
  }
});

Deno.test({
  name:
    "under exactly RUN_FLAGS, default broadcast with only loopback up: one warning, chat works" +
    (NOT_ISOLATED ? ` (skipped: ${NOT_ISOLATED})` : ""),
  ignore: NOT_ISOLATED !== "",
  async fn() {
    const carol = await PeerProcess.start("Carol", {
      args: ["--discovery-port", String(freeUdpPort()), "--interval", "0.2"],
      flags: RUN_FLAGS,
    });
    const dave = await PeerProcess.start("Dave", { flags: RUN_FLAGS });
    try {
      await carol.command(`/connect ${dave.address}`);
      await carol.waitFor((e) => e.type === "connected");
      await carol.command("/send Dave no LAN here, but loopback works");
      await dave.waitFor((e) => e.type === "message");
      await carol.waitFor((e) => e.type === "delivered");
      assert.equal(await carol.quit(), 0);
      assert.equal(await dave.quit(), 0);
      const warnings = carol.stderr.split("\n").filter((l) => l.includes("no broadcast route"));
      assert.equal(warnings.length, 1, carol.stderr);
      assert.match(warnings[0], /^p2pchat: warn: /);
      assert.doesNotMatch(carol.stderr, /missing permission|Requires|Uncaught/);
    } finally {
      await carol.cleanup();
      await dave.cleanup();
    }
  },
});

Deno.test("file access scoped to the data directory is enough (deno install with scoped flags)", async () => {
  const port = String(freeUdpPort());
  const discovery = [
    "--discovery-port",
    port,
    "--broadcast",
    LOOPBACK_BROADCAST,
    "--interval",
    "0.2",
  ];
  const dirs = [
    await Deno.makeTempDir({ prefix: "p2pchat-Erin-" }),
    await Deno.makeTempDir({ prefix: "p2pchat-Finn-" }),
  ];
  const scoped = (dir: string) => [
    ...without(without(RUN_FLAGS, "read"), "write"),
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
  ];
  const erin = await PeerProcess.start("Erin", {
    dataDir: dirs[0],
    args: discovery,
    flags: scoped(dirs[0]),
  });
  const finn = await PeerProcess.start("Finn", {
    dataDir: dirs[1],
    args: discovery,
    flags: scoped(dirs[1]),
  });
  try {
    await erin.waitFor((e) => e.type === "peer-up" && e.name === "Finn");
    await erin.command("/send Finn scoped");
    await finn.waitFor((e) => e.type === "message" && e.text === "scoped");
    await erin.waitFor((e) => e.type === "delivered");
    assert.equal(await erin.quit(), 0);
    assert.equal(await finn.quit(), 0);
    const r = await runMainBounded(scoped(dirs[1]), [
      "history",
      "--name",
      "Finn",
      "--data-dir",
      dirs[1],
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout)[0].messages[0].text, "scoped");
    // And the terminal UI (its modules load npm packages) runs under the same scope.
    const t = await runMainBounded(scoped(dirs[0]), [
      "--name",
      "Erin",
      "--data-dir",
      dirs[0],
      "--port",
      "0",
      "--no-discovery",
    ]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /you are Erin/);
  } finally {
    await erin.cleanup();
    await finn.cleanup();
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

// ------------------------------------------------------------------ each grant taken away

function modeArgs(mode: Mode, dataDir: string, defaultBroadcast: boolean): string[] {
  if (mode === "history") return ["history", "--name", "Rel", "--data-dir", dataDir];
  const discovery = defaultBroadcast
    ? ["--discovery-port", String(freeUdpPort()), "--interval", "0.2"]
    : ["--no-discovery"];
  return [
    "--name",
    "Rel",
    "--port",
    "0",
    "--data-dir",
    dataDir,
    ...(mode === "headless" ? ["--headless"] : []),
    ...discovery,
  ];
}

Deno.test("each permission taken away stops p2pchat with one line naming it", async (t) => {
  // One data directory with an identity and a history, so every run gets as far as it can.
  const dataDir = await Deno.makeTempDir({ prefix: "p2pchat-perm-" });
  try {
    const setup = await runMainBounded(RUN_FLAGS, modeArgs("headless", dataDir, false));
    assert.equal(setup.code, 0, setup.stderr);

    for (const g of grants(RUN_FLAGS)) {
      // The whole flag, then (for lists) each item on its own.
      const cases: { flags: string[]; k: string; item?: string; label: string }[] = [];
      const firstRequired = g.items?.find((i) => key(g, i) in REQUIRED);
      if (g.items === null || firstRequired !== undefined) {
        cases.push({
          flags: without(RUN_FLAGS, g.kind),
          k: g.items === null ? g.kind : key(g, firstRequired),
          label: `without ${g.flag}`,
        });
      }
      for (const item of g.items ?? []) {
        if (!(key(g, item) in REQUIRED)) continue;
        cases.push({
          flags: without(RUN_FLAGS, g.kind, item),
          k: key(g, item),
          item,
          label: `without ${item} in --allow-${g.kind}`,
        });
      }
      for (const c of cases) {
        const need = REQUIRED[c.k];
        for (const mode of need.modes) {
          const isolated = !need.defaultBroadcast || NOT_ISOLATED === "";
          await t.step({
            name: `${c.label}: ${mode}` + (isolated ? "" : ` (skipped: ${NOT_ISOLATED})`),
            ignore: !isolated,
            async fn() {
              const r = await runMainBounded(
                c.flags,
                modeArgs(mode, dataDir, need.defaultBroadcast ?? false),
              );
              const fileKind = g.kind === "read" || g.kind === "write";
              assertStoppedForPermission(r, {
                kind: g.kind,
                item: g.kind === "env" || g.kind === "sys" ? c.k.split(":")[1] : undefined,
                under: fileKind ? dataDir : undefined,
              });
            },
          });
        }
      }
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

// ------------------------------------------------------------------ grants p2pchat can do without

/** The terminal UI with stdin closed (not a terminal): banner, menu, end of input, bye. */
async function terminalRun(flags: readonly string[], env: Record<string, string>) {
  const dataDir = await Deno.makeTempDir({ prefix: "p2pchat-term-" });
  try {
    const r = await runMainBounded(
      flags,
      ["--name", "Gus", "--port", "0", "--data-dir", dataDir, "--no-discovery"],
      { env },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /you are .*Gus/);
    assert.doesNotMatch(r.stderr, /missing permission|Requires|Uncaught/);
    return r;
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
}

const hasItem = (kind: string, item: string) =>
  grants(RUN_FLAGS).some((g) => g.kind === kind && g.items?.includes(item));

Deno.test("NO_COLOR and FORCE_COLOR work without being in --allow-env", async () => {
  // Deno reads both without a permission check, so listing them grants nothing.
  let flags = [...RUN_FLAGS];
  for (const name of ["NO_COLOR", "FORCE_COLOR"]) {
    if (hasItem("env", name)) flags = without(flags, "env", name);
  }
  const forced = await terminalRun(flags, { FORCE_COLOR: "1" });
  assert.ok(forced.stdout.includes(ESC), "FORCE_COLOR=1 gave no colours");
  const plain = await terminalRun(flags, {});
  assert.ok(!plain.stdout.includes(ESC), "colours on a pipe without FORCE_COLOR");
  const both = await terminalRun(flags, { FORCE_COLOR: "1", NO_COLOR: "1" });
  assert.ok(!both.stdout.includes(ESC), "NO_COLOR=1 still gave colours");
});

/** Single-quotes `s` for sh. */
function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

const hasScript = (() => {
  try {
    return new Deno.Command("script", { args: ["--version"] }).outputSync().success;
  } catch {
    return false;
  }
})();

/**
 * Runs the terminal UI on a pseudo-terminal (util-linux `script`), answers `q` at its first
 * prompt, and returns everything the terminal showed.
 */
async function ptyRun(flags: readonly string[], env: Record<string, string>): Promise<string> {
  const dataDir = await Deno.makeTempDir({ prefix: "p2pchat-pty-" });
  const command = [
    Deno.execPath(),
    "run",
    ...flags,
    MAIN,
    "--name",
    "Hal",
    "--port",
    "0",
    "--data-dir",
    dataDir,
    "--no-discovery",
  ].map(shellQuote).join(" ");
  const child = new Deno.Command("script", {
    args: ["-qec", command, "/dev/null"],
    env: baseEnv(env),
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  let screen = "";
  let answered = false;
  const promptRe = new RegExp(`p2pchat(${ESC.replace("[", "\\[")}[0-9;]*m)*> `);
  try {
    const decoder = new TextDecoder();
    const stderr = child.stderr.text();
    for await (const chunk of child.stdout) {
      screen += decoder.decode(chunk, { stream: true });
      if (!answered && promptRe.test(screen)) {
        answered = true;
        await writer.write(new TextEncoder().encode("q\r"));
      }
      // A Deno permission prompt would wait for an answer that never comes: stop at once.
      if (screen.includes("Deno requests")) child.kill("SIGKILL");
    }
    await stderr;
    const status = await child.status;
    assert.doesNotMatch(screen, /Deno requests/, `a Deno permission prompt:\n${screen}`);
    assert.ok(answered, `no prompt appeared:\n${screen}`);
    assert.equal(status.code, 0, screen);
    return screen;
  } finally {
    clearTimeout(timer);
    await writer.close().catch(() => {/* script already closed its input */});
    await Deno.remove(dataDir, { recursive: true });
  }
}

Deno.test({
  name: "on a terminal: no Deno permission prompt under RUN_FLAGS, and TERM=dumb is honoured" +
    (hasScript ? "" : " (skipped: util-linux script not installed)"),
  ignore: !hasScript || !hasItem("env", "TERM"),
  async fn() {
    const granted = await ptyRun(RUN_FLAGS, { TERM: "dumb" });
    assert.doesNotMatch(granted, /Deno requests/, granted);
    assert.ok(!granted.includes(ESC), `TERM=dumb still got escape sequences:\n${granted}`);
    // Without the grant, Deno would ask for TERM on a terminal unless --no-prompt is given;
    // with it, p2pchat reads TERM as unset.
    const noPrompt = RUN_FLAGS.includes("--no-prompt") ? [] : ["--no-prompt"];
    const denied = await ptyRun([...without(RUN_FLAGS, "env", "TERM"), ...noPrompt], {
      TERM: "dumb",
    });
    assert.doesNotMatch(denied, /Deno requests/, denied);
    assert.ok(denied.includes(ESC), DEGRADES["env:TERM"]);
  },
});

Deno.test({
  name: "hostname in --allow-sys is not needed (headless and terminal, default broadcast)" +
    (!hasItem("sys", "hostname")
      ? " (skipped: not granted)"
      : NOT_ISOLATED
      ? ` (skipped: ${NOT_ISOLATED})`
      : ""),
  ignore: !hasItem("sys", "hostname") || NOT_ISOLATED !== "",
  async fn() {
    const flags = without(RUN_FLAGS, "sys", "hostname");
    const dataDir = await Deno.makeTempDir({ prefix: "p2pchat-host-" });
    try {
      for (const mode of ["headless", "terminal"] as const) {
        const r = await runMainBounded(flags, modeArgs(mode, dataDir, true));
        assert.equal(r.code, 0, `${UNUSED["sys:hostname"]}\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, /missing permission|Requires/);
      }
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
