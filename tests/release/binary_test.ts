/**
 * The release binary end to end: `deno task compile` builds it (which needs the denort runtime:
 * DENORT_BIN, since dl.deno.land is out of reach here), then two copies of it find each other by
 * loopback broadcast, chat both ways, and the `history` subcommand prints what they stored.
 *
 * P2PCHAT_BINARY=/path/to/p2pchat runs the same test against a binary built elsewhere (a
 * downloaded release) instead of compiling one. Without either variable the test is skipped.
 */

import assert from "node:assert/strict";
import { RUN_FLAGS } from "../../lib/cli/permissions.ts";
import { baseEnv, ROOT, runBounded } from "./_release.ts";

const GIVEN = Deno.env.get("P2PCHAT_BINARY") ?? "";
const DENORT = Deno.env.get("DENORT_BIN") ?? "";
const SKIP = GIVEN || DENORT ? "" : "DENORT_BIN not set";
const LOOPBACK_BROADCAST = "127.255.255.255";

// deno-lint-ignore no-explicit-any -- events are untyped JSON by design: the test checks fields.
type Event = { type: string; [k: string]: any };

/** One headless peer run from the binary: commands in, JSON events out. */
class BinaryPeer {
  readonly events: Event[] = [];
  stderr = "";
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #done: Promise<void>;
  #changed: () => void = () => {};

  constructor(binary: string, args: string[]) {
    this.#child = new Deno.Command(binary, {
      args,
      env: baseEnv({ NO_COLOR: "1" }),
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#done = Promise.all([this.#readEvents(), this.#readStderr()]).then(() => {});
  }

  async #readEvents(): Promise<void> {
    let buffered = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line !== "") this.events.push(JSON.parse(line));
      }
      this.#changed();
    }
  }

  async #readStderr(): Promise<void> {
    for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) {
      this.stderr += chunk;
    }
  }

  /** The first event matching `pred`, waiting up to `timeoutMs` for it. */
  async waitFor(pred: (e: Event) => boolean, timeoutMs = 30_000): Promise<Event> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(pred);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out; events:\n${this.events.map((e) => JSON.stringify(e)).join("\n")}\n` +
            `stderr:\n${this.stderr}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#changed = resolve;
        timer = setTimeout(resolve, Math.min(left, 1_000));
      });
      clearTimeout(timer);
    }
  }

  async command(line: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(line + "\n"));
  }

  /** Sends /quit and returns the exit status (killing the peer if it does not stop). */
  async quit(): Promise<number> {
    await this.command("/quit").catch(() => {/* already gone */});
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 30_000);
    try {
      const status = await this.#child.status;
      await this.#writer.close().catch(() => {/* already closed */});
      await this.#done;
      return status.code;
    } finally {
      clearTimeout(timer);
    }
  }
}

Deno.test({
  name: "release binary end to end" + (SKIP ? ` (skipped: ${SKIP})` : ""),
  ignore: SKIP !== "",
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "p2pchat-release-" });
    try {
      let binary = GIVEN;
      if (!binary) {
        const built = await runBounded(
          Deno.execPath(),
          ["task", "--config", `${ROOT}/deno.json`, "compile", "--out-dir", `${work}/dist`],
          { env: { DENORT_BIN: DENORT }, timeoutMs: 300_000 },
        );
        assert.equal(built.code, 0, `deno task compile failed:\n${built.stderr}`);
        binary = `${work}/dist/p2pchat`;
      }

      const version = await runBounded(binary, ["--version"]);
      assert.match(version.stdout, /^p2pchat \d+\.\d+\.\d+/, version.stderr);
      const help = await runBounded(binary, ["--help"]);
      assert.equal(help.code, 0, help.stderr);
      for (const flag of RUN_FLAGS) assert.ok(help.stdout.includes(flag), `--help lacks ${flag}`);

      const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      const port = String((socket.addr as Deno.NetAddr).port);
      socket.close();
      const peer = (name: string) =>
        new BinaryPeer(binary, [
          "--name",
          name,
          "--port",
          "0",
          "--data-dir",
          `${work}/${name}`,
          "--headless",
          "--discovery-port",
          port,
          "--broadcast",
          LOOPBACK_BROADCAST,
          "--interval",
          "0.2",
        ]);
      const alice = peer("Alice");
      const bob = peer("Bob");
      try {
        const a = await alice.waitFor((e) => e.type === "ready", 60_000);
        const b = await bob.waitFor((e) => e.type === "ready", 60_000);
        assert.equal(
          (await alice.waitFor((e) => e.type === "peer-up" && e.name === "Bob")).fingerprint,
          b.fingerprint,
        );
        assert.equal(
          (await bob.waitFor((e) => e.type === "peer-up" && e.name === "Alice")).fingerprint,
          a.fingerprint,
        );
        await alice.command("/send Bob hello from the binary");
        assert.equal(
          (await bob.waitFor((e) => e.type === "message")).text,
          "hello from the binary",
        );
        await alice.waitFor((e) => e.type === "delivered");
        await bob.command("/send Alice and back");
        assert.equal((await alice.waitFor((e) => e.type === "message")).text, "and back");
        await bob.waitFor((e) => e.type === "delivered");
        await alice.command("/history Bob");
        const h = await alice.waitFor((e) => e.type === "history");
        assert.deepEqual(h.messages.map((m: { text: string }) => m.text), [
          "hello from the binary",
          "and back",
        ]);
      } finally {
        assert.equal(await alice.quit(), 0, alice.stderr);
        assert.equal(await bob.quit(), 0, bob.stderr);
      }
      for (const p of [alice, bob]) {
        assert.doesNotMatch(p.stderr, /missing permission|Requires|Uncaught/, p.stderr);
      }

      const history = await runBounded(binary, [
        "history",
        "--name",
        "Bob",
        "--data-dir",
        `${work}/Bob`,
        "--json",
      ]);
      assert.equal(history.code, 0, history.stderr);
      const dump = JSON.parse(history.stdout);
      assert.equal(dump[0].peer, "Alice");
      assert.deepEqual(
        dump[0].messages.map((m: { direction: string; text: string }) => [
          m.direction,
          m.text,
        ]),
        [["in", "hello from the binary"], ["out", "and back"]],
      );

      // The terminal UI, piped: FORCE_COLOR is honoured inside the binary too.
      const ui = await runBounded(
        binary,
        ["--name", "Carol", "--port", "0", "--data-dir", `${work}/Carol`, "--no-discovery"],
        { env: { FORCE_COLOR: "1" } },
      );
      assert.equal(ui.code, 0, ui.stderr);
      assert.ok(ui.stdout.includes("\x1b["), `no colours with FORCE_COLOR=1:\n${ui.stdout}`);
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});
