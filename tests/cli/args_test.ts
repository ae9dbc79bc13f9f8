import assert from "node:assert/strict";
import {
  DEFAULT_DISCOVERY_PORT,
  DEFAULT_PORT,
  defaultDataDir,
  parseCommandLine,
  UsageError,
} from "../../lib/cli/args.ts";
import { runFlags } from "../../lib/cli/permissions.ts";

const env = { HOME: "/home/alice" };

Deno.test("args: defaults", () => {
  const inv = parseCommandLine(["--name", "Alice"], env);
  assert.deepEqual(inv, {
    command: "peer",
    name: "Alice",
    port: DEFAULT_PORT,
    dataDir: "/home/alice/.local/share/p2pchat/Alice",
    discoveryPort: DEFAULT_DISCOVERY_PORT,
    broadcast: null,
    intervalMs: 5000,
    discovery: true,
    passphraseFile: null,
    headless: false,
    verbose: false,
    limits: {},
    durability: "full",
  });
});

Deno.test("args: every peer option", () => {
  const inv = parseCommandLine([
    "-n",
    "Bob",
    "-p",
    "0",
    "--data-dir",
    "d",
    "--discovery-port",
    "47999",
    "--broadcast",
    "127.255.255.255, 10.0.0.255",
    "--interval",
    "0.5",
    "--no-discovery",
    "--passphrase-file",
    "pw",
    "--headless",
    "-v",
    "--max-connections",
    "10",
    "--max-per-address",
    "3",
    "--handshake-timeout",
    "2.5",
    "--idle-timeout",
    "60",
    "--max-frame-size",
    "200000",
    "--max-heard-peers",
    "0",
    "--durability",
    "normal",
  ], env);
  assert.equal(inv.command, "peer");
  if (inv.command !== "peer") return;
  assert.equal(inv.port, 0);
  assert.equal(inv.dataDir, "d");
  assert.equal(inv.discoveryPort, 47999);
  assert.deepEqual(inv.broadcast, ["127.255.255.255", "10.0.0.255"]);
  assert.equal(inv.intervalMs, 500);
  assert.equal(inv.discovery, false);
  assert.equal(inv.passphraseFile, "pw");
  assert.ok(inv.headless && inv.verbose);
  assert.equal(inv.durability, "normal");
  assert.deepEqual(inv.limits, {
    maxConnections: 10,
    maxPendingPerAddress: 3,
    handshakeTimeoutMs: 2500,
    idleTimeoutMs: 60_000,
    maxFrameSize: 200_000,
    maxHeardPeers: 0,
  });
});

Deno.test("args: history subcommand", () => {
  assert.deepEqual(
    parseCommandLine(["history", "--name", "A", "--peer", "Bob", "--limit", "5", "--json"], {
      XDG_DATA_HOME: "/x",
    }),
    {
      command: "history",
      name: "A",
      dataDir: "/x/p2pchat/A",
      peer: "Bob",
      limit: 5,
      json: true,
      passphraseFile: null,
    },
  );
});

Deno.test("args: help and version win", () => {
  assert.deepEqual(parseCommandLine(["--help"], env), { command: "help" });
  assert.deepEqual(parseCommandLine(["-V"], env), { command: "version" });
});

Deno.test("args: bad input is a UsageError with a clear message", () => {
  const bad: [string[], RegExp][] = [
    [[], /--name is required/],
    [["--name", ""], /invalid --name/],
    [["--name", "a b"], /invalid --name/],
    [["--name", ".."], /invalid --name "\.\.": .*not only dots/],
    [["--name"], /^--name needs a value$/],
    [
      ["--name", "A", "--port", "-5"],
      /^--port needs a value \(one that starts with "-" is written --port=-…\)$/,
    ],
    [["--name", "A", "--port=-5"], /--port/],
    [["--name", "A", "--port", "-1"], /--port/],
    [["--name", "A", "--port", "70000"], /--port/],
    [["--name", "A", "--port", "1.5"], /--port/],
    [["--name", "A", "--interval", "0"], /--interval/],
    [["--name", "A", "--interval", ""], /--interval/],
    [["--name", "A", "--broadcast", "999.1.1.1"], /--broadcast/],
    [["--name", "A", "--broadcast", ","], /--broadcast/],
    [["--name", "A", "--what"], /what/],
    [["--name", "A", "extra"], /extra|positional/i],
    [["--name", "A", "--peer", "B"], /history/],
    [["history", "--name", "A", "--port", "1"], /does not apply/],
    [["--name", "A", "--max-frame-size", "10"], /--max-frame-size/],
    [["--name", "A", "--idle-timeout", "x"], /--idle-timeout/],
    [["--name", "A", "--max-heard-peers", "-1"], /--max-heard-peers/],
    [
      ["--name", "A", "--max-frame-size", "87523"],
      /--max-frame-size must be a whole number from 87524/,
    ],
    [["--name", "A", "--durability", "fast"], /--durability/],
  ];
  for (const [args, pattern] of bad) {
    assert.throws(() => parseCommandLine(args, env), (e) => {
      assert.ok(e instanceof UsageError, `${args.join(" ")}: ${e}`);
      assert.match(e.message, pattern);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("args: default data directory per name, XDG first", () => {
  assert.equal(defaultDataDir("A", { XDG_DATA_HOME: "/d", HOME: "/h" }), "/d/p2pchat/A");
  assert.equal(defaultDataDir("A", { HOME: "/h" }), "/h/.local/share/p2pchat/A");
  assert.equal(defaultDataDir("A", {}), "p2pchat-data/A");
  assert.notEqual(defaultDataDir("A", env), defaultDataDir("B", env));
});

Deno.test("permissions: the start task is a plain deno run with flags", () => {
  assert.deepEqual(runFlags("deno run --allow-net --allow-env=A main.ts"), [
    "--allow-net",
    "--allow-env=A",
  ]);
  assert.throws(() => runFlags("deno task x"));
});
