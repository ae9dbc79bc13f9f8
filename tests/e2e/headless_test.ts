import assert from "node:assert/strict";
import { PeerProcess, runMain } from "../_helpers/peer_process.ts";

Deno.test("headless: two peers connect and chat both ways, with delivery", async () => {
  const alice = await PeerProcess.start("Alice");
  const bob = await PeerProcess.start("Bob");
  try {
    assert.match(alice.fingerprint, /^[0-9a-f]{64}$/);
    assert.equal(alice.ready!.name, "Alice");
    assert.equal(alice.ready!.dataDir, alice.dataDir);
    await alice.command(`/connect ${bob.address}`);
    const c = await alice.waitFor((e) => e.type === "connected");
    assert.equal(c.name, "Bob");
    assert.equal(c.fingerprint, bob.fingerprint);
    const cb = await bob.waitFor((e) => e.type === "connected");
    assert.equal(cb.fingerprint, alice.fingerprint);

    await alice.command("/send Bob hello Bob, how are you?");
    const sent = await alice.waitFor((e) => e.type === "sent");
    assert.equal(sent.to, "Bob");
    const msg = await bob.waitFor((e) => e.type === "message");
    assert.equal(msg.text, "hello Bob, how are you?");
    assert.equal(msg.from, "Alice");
    assert.equal(msg.fingerprint, alice.fingerprint);
    assert.equal(msg.id, sent.id);
    const delivered = await alice.waitFor((e) => e.type === "delivered");
    assert.equal(delivered.id, sent.id);

    await bob.command(`/send ${alice.fingerprint.slice(0, 12)} fine, thanks`);
    const back = await alice.waitFor((e) => e.type === "message");
    assert.equal(back.text, "fine, thanks");
    assert.equal(back.from, "Bob");
    await bob.waitFor((e) => e.type === "delivered");

    // Many messages keep their order and arrive once each.
    for (let i = 0; i < 50; i++) await alice.command(`/send Bob n${i}`);
    await alice.waitFor((e) => e.type === "delivered" && alice.all("delivered").length >= 51);
    await bob.waitFor(() => bob.all("message").length >= 51);
    assert.deepEqual(
      bob.all("message").slice(1).map((e) => e.text),
      Array.from({ length: 50 }, (_, i) => `n${i}`),
    );
    for (const e of [...alice.events, ...bob.events]) assert.equal(typeof e.ts, "number");

    assert.equal(await alice.quit(), 0);
    const dis = await bob.waitFor((e) => e.type === "disconnected");
    assert.equal(dis.name, "Alice");
    assert.equal(alice.events.at(-1)!.type, "bye");
    assert.equal(await bob.quit(), 0);
  } finally {
    await alice.cleanup();
    await bob.cleanup();
  }
});

Deno.test("headless: bad commands get error events and the peer keeps running", async () => {
  const p = await PeerProcess.start("Carol");
  try {
    for (
      const line of [
        "hello",
        "/nope",
        "/send",
        "/send Nobody hi",
        "/connect nowhere",
        "/history",
        "/trust Bob",
        "/connect 127.0.0.1:1",
      ]
    ) {
      await p.command(line);
      const e = await p.next((e) => e.type === "error");
      assert.ok(e.message.length > 0);
      assert.equal(e.command, line);
    }
    // Its own address: said in so many words (the handshake with itself is refused).
    await p.command(`/connect ${p.address}`);
    const self = await p.next((e) => e.type === "error");
    assert.equal(self.message, "that is this peer's own address");
    // A line far over any message is dropped with one error, in its place; the next one counts.
    await p.command(`/send Bob ${"x".repeat(1 << 20)}`);
    const long = await p.next((e) => e.type === "error");
    assert.match(long.message, /^line too long: 1048586 characters/);
    assert.equal(long.command, `/send Bob ${"x".repeat(30)}…`);
    await p.command("/peers");
    const peers = await p.next((e) => e.type === "peers");
    assert.deepEqual(peers.peers, []);
    assert.equal(await p.endInput(), 0);
    assert.equal(p.events.at(-1)!.type, "bye");
    assert.ok(!p.stderr.includes("    at "), `no stack trace: ${p.stderr}`);
  } finally {
    await p.cleanup();
  }
});

for (const signal of ["SIGTERM", "SIGHUP"] as const) {
  Deno.test(`headless: ${signal} quits cleanly with bye, and the peer is told goodbye`, async () => {
    const p = await PeerProcess.start("Dave");
    const q = await PeerProcess.start("Erin");
    try {
      await q.command(`/connect ${p.address}`);
      await p.waitFor((e) => e.type === "connected");
      assert.equal(await p.kill(signal), 0);
      assert.equal(p.events.at(-1)!.type, "bye");
      const gone = await q.waitFor((e) => e.type === "disconnected");
      assert.equal(gone.reason, "goodbye");
    } finally {
      await p.cleanup();
      await q.quit();
      await q.cleanup();
    }
  });
}

Deno.test("cli: bad options exit 2 with one line; a port in use exits 1", async () => {
  const cases: [string[], number, RegExp][] = [
    [["--port", "5000"], 2, /--name is required/],
    [["--name", "x y"], 2, /invalid --name/],
    [["--name", "A", "--port", "99999"], 2, /--port must be/],
    [["--name", "A", "--bogus"], 2, /bogus/],
    [["--name", "A", "--interval", "abc"], 2, /--interval/],
    [["--name", "A", "--broadcast", "1.2.3"], 2, /--broadcast/],
  ];
  for (const [args, code, pattern] of cases) {
    const r = await runMain(args);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  const holder = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  const dir = await Deno.makeTempDir();
  try {
    const port = (holder.addr as Deno.NetAddr).port;
    const r = await runMain([
      "--name",
      "A",
      "--port",
      String(port),
      "--data-dir",
      dir,
      "--headless",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`port ${port} is already in use`));
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  } finally {
    holder.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: --help and --version", async () => {
  const help = await runMain(["--help"]);
  assert.equal(help.code, 0);
  for (const s of ["--name", "--port", "--data-dir", "--headless", "--allow-net", "Examples"]) {
    assert.ok(help.stdout.includes(s), s);
  }
  // `history --help` is the same text, which explains the history command's options.
  const historyHelp = await runMain(["history", "--help"]);
  assert.equal(historyHelp.code, 0);
  for (const s of ["--peer P", "--limit N", "--json"]) assert.ok(historyHelp.stdout.includes(s), s);
  const v = await runMain(["--version"]);
  assert.match(v.stdout, /^p2pchat \d+\.\d+\.\d+\n$/);
});
