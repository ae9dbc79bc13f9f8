import assert from "node:assert/strict";
import { MAIN, PeerProcess, runMain } from "../_helpers/peer_process.ts";
import { RUN_FLAGS } from "../../lib/cli/permissions.ts";

function oneLine(stderr: string): void {
  const lines = stderr.trim().split("\n").filter((l) => !l.includes("creating your identity"));
  assert.equal(lines.length, 1, stderr);
  assert.ok(!stderr.includes("    at "), `no stack trace: ${stderr}`);
}

Deno.test("cli: an unusable data directory is one line and exit 1", async () => {
  const file = await Deno.makeTempFile();
  try {
    const r = await runMain([
      "--name",
      "A",
      "--port",
      "0",
      "--data-dir",
      `${file}/sub`,
      "--headless",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot use data directory/);
    oneLine(r.stderr);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("cli: passphrase-protected identity: right, wrong and missing passphrase", async () => {
  const dir = await Deno.makeTempDir();
  const pw = await Deno.makeTempFile();
  const wrong = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(pw, "correct horse battery staple\n");
    await Deno.writeTextFile(wrong, "tr0ub4dor&3\n");
    const first = await PeerProcess.start("Alice", {
      dataDir: dir,
      args: ["--no-discovery", "--passphrase-file", pw],
    });
    const fp = first.fingerprint;
    assert.equal(await first.quit(), 0);
    const key = await Deno.readTextFile(`${dir}/identity.key`);
    assert.ok(!key.includes("PRIVATE KEY"), "the private key is stored wrapped");

    const again = await PeerProcess.start("Alice", {
      dataDir: dir,
      args: ["--no-discovery", "--passphrase-file", pw],
    });
    assert.equal(again.fingerprint, fp);
    assert.equal(await again.quit(), 0);

    const bad = await runMain([
      "--name",
      "Alice",
      "--port",
      "0",
      "--data-dir",
      dir,
      "--headless",
      "--passphrase-file",
      wrong,
    ]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /wrong passphrase/);
    oneLine(bad.stderr);

    const missing = await runMain([
      "--name",
      "Alice",
      "--port",
      "0",
      "--data-dir",
      dir,
      "--headless",
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /passphrase/);
    oneLine(missing.stderr);

    const noFile = await runMain([
      "--name",
      "Alice",
      "--data-dir",
      dir,
      "--passphrase-file",
      `${dir}/does-not-exist`,
    ]);
    assert.equal(noFile.code, 1);
    assert.match(noFile.stderr, /cannot read passphrase file/);
    oneLine(noFile.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(pw);
    await Deno.remove(wrong);
  }
});

Deno.test("cli: a corrupt identity key is an error, never a new identity", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const p = await PeerProcess.start("Alice", { dataDir: dir });
    assert.equal(await p.quit(), 0);
    const key = await Deno.readTextFile(`${dir}/identity.key`);
    await Deno.writeTextFile(`${dir}/identity.key`, key.slice(0, key.length / 2));
    const r = await runMain(["--name", "Alice", "--port", "0", "--data-dir", dir, "--headless"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /identity\.key/);
    oneLine(r.stderr);
    assert.equal(
      await Deno.readTextFile(`${dir}/identity.key`),
      key.slice(0, key.length / 2),
      "the damaged file is left alone",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: one running peer per data directory", async () => {
  const first = await PeerProcess.start("Alice");
  try {
    const r = await runMain([
      "--name",
      "Alice",
      "--port",
      "0",
      "--data-dir",
      first.dataDir,
      "--headless",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /in use by another running p2pchat/);
    oneLine(r.stderr);
    // The lock dies with the process, even a killed one.
    await first.kill();
    const again = await PeerProcess.start("Alice", { dataDir: first.dataDir });
    assert.equal(again.fingerprint, first.fingerprint);
    assert.equal(await again.quit(), 0);
  } finally {
    await first.cleanup();
  }
});

/** Starts a headless peer `name` in `dir`, every stream piped and none read yet. */
function spawnHeadless(name: string, dir: string, extra: string[] = []): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...RUN_FLAGS,
      MAIN,
      ...["--name", name, "--port", "0", "--data-dir", dir, "--no-discovery", "--headless"],
      ...extra,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

/**
 * Starts a headless Alice in `dir` whose stdout the test reads itself (PeerProcess reads it all),
 * so that it can stop reading: `readUntil` reads up to a text, `hangUp` closes the pipe.
 */
function spawnAlice(dir: string) {
  const child = spawnHeadless("Alice", dir);
  const reader = child.stdout.getReader();
  let seen = "";
  return {
    child,
    stdin: child.stdin.getWriter(),
    stderr: new Response(child.stderr).text(),
    /** Reads stdout until `text` appears; returns everything read so far. */
    async readUntil(text: string): Promise<string> {
      while (!seen.includes(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`Alice's output ended before ${text}: ${seen}`);
        seen += new TextDecoder().decode(value);
      }
      return seen;
    },
    hangUp: () => reader.cancel(),
  };
}

Deno.test("cli: headless whose reader goes away stops in one line, exit 1, peers told goodbye", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-gone-" });
  const bob = await PeerProcess.start("Bob");
  const { child, stdin, stderr, readUntil, hangUp } = spawnAlice(dir);
  try {
    // Read up to `ready`, then hang up: the next event line meets a closed pipe.
    await readUntil('"ready"');
    await hangUp();
    await stdin.write(new TextEncoder().encode(`/connect ${bob.address}\n`));
    const status = await child.status;
    assert.equal(status.code, 1);
    const err = await stderr;
    assert.match(err, /cannot write to stdout/);
    oneLine(err);
    // The session it had opened was closed with a goodbye, not dropped.
    const gone = await bob.waitFor((e) => e.type === "disconnected", 10_000);
    assert.equal(gone.name, "Alice");
    assert.equal(gone.reason, "goodbye");
  } finally {
    await stdin.close().catch(() => {});
    await bob.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a message that meets a gone reader is shown at the next start, once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-unshown-" });
  const bob = await PeerProcess.start("Bob");
  const { child, stdin, stderr, readUntil, hangUp } = spawnAlice(dir);
  let again: PeerProcess | undefined;
  try {
    // Read Alice's output until Bob is connected, then hang up: the next line she writes is
    // Bob's message, and it meets a closed pipe.
    const seen = await readUntil('"ready"');
    const port = JSON.parse(seen.split("\n").find((l) => l.includes('"ready"'))!).port;
    await bob.command(`/connect 127.0.0.1:${port}`);
    await readUntil('"connected"');
    await hangUp();
    await bob.command("/send Alice written while nobody reads");
    // Alice stored it (so acknowledged it) though she could not show it.
    await bob.waitFor((e) => e.type === "delivered", 20_000);
    assert.equal((await child.status).code, 1);
    assert.match(await stderr, /cannot write to stdout/);

    again = await PeerProcess.start("Alice", { dataDir: dir });
    const shown = await again.waitFor((e) => e.type === "message", 20_000);
    assert.equal(shown.text, "written while nobody reads");
    assert.equal(shown.from, "Bob");
    await again.command("/history Bob");
    const history = await again.waitFor((e) => e.type === "history");
    assert.equal(history.messages.length, 1);
    assert.equal(await again.quit(), 0);
    assert.equal(again.all("message").length, 1, "shown once");
  } finally {
    await stdin.close().catch(() => {});
    await again?.cleanup();
    await bob.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a stderr nobody reads loses only the logs: a first start, a chat, a clean exit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-nostderr-" });
  const bob = await PeerProcess.start("Bob");
  // --verbose logs every connection, so that there is something to write to the closed stderr.
  const child = spawnHeadless("Alice", dir, ["--verbose"]);
  // Closed before Alice writes anything: her first warning (a new identity) meets EPIPE.
  await child.stderr.cancel();
  const stdin = child.stdin.getWriter();
  const output = new Response(child.stdout).text();
  try {
    await stdin.write(new TextEncoder().encode(`/connect ${bob.address}\n`));
    await bob.waitFor((e) => e.type === "connected" && e.name === "Alice", 20_000);
    await bob.command("/send Alice can you hear me");
    await stdin.write(new TextEncoder().encode("/send Bob yes\n"));
    await bob.waitFor((e) => e.type === "message" && e.text === "yes", 20_000);
    await bob.waitFor((e) => e.type === "delivered", 20_000);
    await stdin.close();
    assert.equal((await child.status).code, 0);
    const events = (await output).trim().split("\n").map((l) => JSON.parse(l));
    const types = events.map((e) => e.type);
    assert.equal(types[0], "ready");
    assert.equal(types.at(-1), "bye");
    assert.ok(types.includes("connected"), types.join(" "));
    assert.ok(events.some((e) => e.type === "message" && e.text === "can you hear me"));
    assert.ok(!types.includes("error"), JSON.stringify(events));
  } finally {
    await stdin.close().catch(() => {});
    await bob.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});
