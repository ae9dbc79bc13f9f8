/**
 * The real program in a real terminal (tmux), started exactly as users start it (the release
 * permission flags). Run inside `unshare --net` with lo up: discovery broadcasts on loopback.
 */

import assert from "node:assert/strict";
import { RUN_FLAGS } from "../../../lib/cli/permissions.ts";
import { MAIN, peerCommand, Tmux } from "./tmux.ts";
import { hasCommand } from "../../_helpers/tools.ts";

// Without tmux (a machine with only Node and npm) these are skipped; CI installs it.
const TMUX = hasCommand("tmux", ["-V"]);
const NO_TMUX = TMUX ? "" : " (skipped: tmux not installed)";

const decoder = new TextDecoder();

function discoveryPort(): number {
  return 20_000 + Math.floor(Math.random() * 20_000);
}

async function withDirs<T>(n: number, fn: (dirs: string[]) => Promise<T>): Promise<T> {
  const dirs: string[] = [];
  try {
    for (let i = 0; i < n; i++) dirs.push(await Deno.makeTempDir({ prefix: "p2pchat-ui-" }));
    return await fn(dirs);
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
}

/**
 * Runs `fn` with Alice in tmux session A and Bob in session B, discovering each other on
 * loopback; closes the tmux server and removes their data directories afterwards.
 */
async function withTmuxPair(fn: (tmux: Tmux) => Promise<void>): Promise<void> {
  await withDirs(2, async ([dirA, dirB]) => {
    const tmux = await Tmux.start();
    try {
      const port = discoveryPort();
      await tmux.spawn("A", peerCommand("Alice", { dataDir: dirA, discoveryPort: port }));
      await tmux.spawn("B", peerCommand("Bob", { dataDir: dirB, discoveryPort: port }));
      await fn(tmux);
    } finally {
      await tmux.close();
    }
  });
}

/** The last non-empty line of a screen. */
function lastLine(screen: string): string {
  return screen.trimEnd().split("\n").at(-1) ?? "";
}

Deno.test({
  name: "tmux: two peers chat through the menu; typing survives an incoming message" + NO_TMUX,
  ignore: !TMUX,
}, async () => {
  await withTmuxPair(async (tmux) => {
    await tmux.waitFor("A", "p2pchat>");
    await tmux.waitFor("B", "p2pchat>");
    // Discovery: each sees the other, with its fingerprint on first contact.
    await tmux.waitFor("A", "Bob is online");
    await tmux.waitFor("A", "First contact with Bob");
    await tmux.waitFor("B", "Alice is online");

    // A: menu 1, pick Bob (the only peer: number 1), type a message.
    await tmux.type("A", "1");
    await tmux.keys("A", "Enter");
    await tmux.waitFor("A", "Chat with (number or name");
    await tmux.type("A", "1");
    await tmux.keys("A", "Enter");
    await tmux.waitFor("A", "── chat with Bob");
    await tmux.type("A", "hello from Alice");
    await tmux.keys("A", "Enter");
    const sent = await tmux.waitFor("A", /you: hello from Alice {2}✓✓ delivered/);
    // One line whose state changed in place, not a line per state.
    assert.equal(sent.match(/hello from Alice/g)?.length, 1, sent);
    // B is in the menu: a notice with the unread count (and a bell).
    await tmux.waitFor("B", "Alice sent you a message (1 unread)");

    // B opens the chat by name with Tab completion; the message is there.
    await tmux.type("B", "1");
    await tmux.keys("B", "Enter");
    await tmux.waitFor("B", "1  Alice (connected, 1 unread)");
    await tmux.waitFor("B", "Chat with (number or name");
    await tmux.type("B", "Al");
    await tmux.keys("B", "Tab", "Enter");
    await tmux.waitFor("B", "── chat with Alice");
    await tmux.waitFor("B", /\d\d:\d\d Alice: hello from Alice/);

    // A types half a line; B's reply arrives; A's half line is intact on the input line.
    await tmux.type("A", "half typed");
    await tmux.waitFor("A", /Bob> half typed$/m);
    await tmux.type("B", "reply from Bob");
    await tmux.keys("B", "Enter");
    const screenA = await tmux.waitFor("A", /\d\d:\d\d Bob: reply from Bob/);
    assert.equal(lastLine(screenA), "Bob> half typed");
    const cur = await tmux.cursorLine("A");
    assert.equal(cur.line.trimEnd(), "Bob> half typed");
    assert.equal(cur.x, "Bob> half typed".length);
    // Editing keys work on the real terminal: go home, insert, go to the end, finish.
    await tmux.keys("A", "C-a");
    await tmux.type("A", "a ");
    await tmux.keys("A", "C-e");
    await tmux.type("A", " line");
    await tmux.keys("A", "Enter");
    await tmux.waitFor("B", /Alice: a half typed line/);

    // exit returns to the menu.
    await tmux.type("A", "exit");
    await tmux.keys("A", "Enter");
    await tmux.waitFor("A", "left the chat with Bob");
    const menu = await tmux.waitFor("A", /left the chat with Bob\n {2}1 {2}send messages/);
    assert.match(lastLine(menu), /^p2pchat> ?$/);

    // History (menu 3) shows both sides with delivery state.
    await tmux.type("A", "3");
    await tmux.keys("A", "Enter");
    await tmux.waitFor("A", "History with (number or name");
    await tmux.type("A", "1");
    await tmux.keys("A", "Enter");
    const history = await tmux.waitFor("A", /History with Bob[\s\S]*└/);
    const table = history.slice(history.lastIndexOf("History with Bob"));
    assert.match(table, /you +│ hello from Alice +│ ✓✓ delivered/);
    assert.match(table, /Bob +│ reply from Bob +│ received/);
    assert.match(table, /you +│ a half typed line +│ ✓✓ delivered/);

    // The peers table: B with its address, connected, nothing unread.
    await tmux.type("A", "2");
    await tmux.keys("A", "Enter");
    await tmux.waitFor(
      "A",
      /│ 1 +│ Bob +│ 127\.0\.0\.1:\d+ +│ [0-9a-f ]{19}… │ [\d:]{8} +│ connected +│ 0 +│/,
    );

    // A bad menu number is a hint, not a crash.
    await tmux.type("A", "9");
    await tmux.keys("A", "Enter");
    await tmux.waitFor("A", '"9" is not a menu option');

    // 5 quits cleanly; B hears the goodbye. Ctrl-D quits B.
    await tmux.type("A", "5");
    await tmux.keys("A", "Enter");
    assert.equal(await tmux.waitExit("A"), 0);
    await tmux.waitFor("A", "bye");
    await tmux.waitFor("B", /Alice went offline \(said goodbye\)|connection to Alice closed/);
    await tmux.keys("B", "C-d");
    assert.equal(await tmux.waitExit("B"), 0);
  });
});

Deno.test(
  { name: "tmux: colours on a terminal, none with NO_COLOR" + NO_TMUX, ignore: !TMUX },
  async () => {
    await withDirs(2, async ([dirA, dirB]) => {
      const tmux = await Tmux.start();
      try {
        await tmux.spawn(
          "plain",
          peerCommand("Plain", { dataDir: dirA, env: { NO_COLOR: "1", FORCE_COLOR: null } }),
        );
        await tmux.spawn(
          "color",
          peerCommand("Color", { dataDir: dirB, env: { NO_COLOR: null, FORCE_COLOR: null } }),
        );
        for (const s of ["plain", "color"]) {
          await tmux.waitFor(s, "p2pchat>");
          await tmux.type(s, "/help");
          await tmux.keys(s, "Enter");
          await tmux.waitFor(s, "/trust [PEER] [FINGERPRINT]");
        }
        const plain = await tmux.screen("plain", { escapes: true });
        const color = await tmux.screen("color", { escapes: true });
        assert.ok(
          !plain.includes("\x1b["),
          `escape codes with NO_COLOR:\n${JSON.stringify(plain)}`,
        );
        // The same screen without NO_COLOR has attributes: the check above can fail.
        assert.ok(color.includes("\x1b["), "colours expected on a terminal without NO_COLOR");
        // Ctrl-C (a key in raw mode, not a signal) quits cleanly, like q.
        await tmux.type("plain", "half");
        await tmux.keys("plain", "C-c");
        await tmux.type("color", "q");
        await tmux.keys("color", "Enter");
        for (const s of ["plain", "color"]) {
          assert.equal(await tmux.waitExit(s), 0);
          await tmux.waitFor(s, /bye\n/);
        }
      } finally {
        await tmux.close();
      }
    });
  },
);

/** Runs main.ts to completion with piped stdio (killed after a bounded wait: it must not hang). */
async function runPiped(
  args: string[],
  stdin: string | null,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...RUN_FLAGS, MAIN, ...args],
    stdin: stdin === null ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env,
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    if (stdin !== null) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(stdin));
      await w.close();
    }
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "tmux: closing the terminal window (SIGHUP) still tells peers goodbye" + NO_TMUX,
  ignore: !TMUX,
}, async () => {
  await withTmuxPair(async (tmux) => {
    await tmux.waitFor("B", "Alice is online");
    await tmux.waitFor("A", "Bob is online");
    // The window goes: its terminal hangs up on everything running in it.
    await tmux.run(["kill-session", "-t", "A"]);
    await tmux.waitFor("B", "Alice went offline (said goodbye)");
    await tmux.keys("B", "C-d");
    assert.equal(await tmux.waitExit("B"), 0);
  });
});

Deno.test({
  name: "tmux: a resize redraws the input line at the new width" + NO_TMUX,
  ignore: !TMUX,
}, async () => {
  await withTmuxPair(async (tmux) => {
    // Everything the start prints has come (no later line would redraw the input line).
    await tmux.waitFor("A", "First contact with Bob");
    await new Promise((r) => setTimeout(r, 500));
    const draft = Array.from({ length: 12 }, (_, i) => `word${i}`).join(" ") + " tail";
    await tmux.type("A", draft);
    await tmux.waitFor("A", /tail$/m);
    await tmux.run(["resize-window", "-t", "A", "-x", "50"]);
    // The terminal rewraps the old line; p2pchat draws its input line anew, prompt first, the
    // text scrolled so that the cursor (at the end) shows.
    const deadline = Date.now() + 10_000;
    let at = await tmux.cursorLine("A");
    while (!(at.line.startsWith("p2pchat> ") && at.line.trimEnd().endsWith("tail"))) {
      assert.ok(Date.now() < deadline, `input line after the resize: ${JSON.stringify(at)}`);
      await new Promise((r) => setTimeout(r, 100));
      at = await tmux.cursorLine("A");
    }
    assert.ok(at.line.trimEnd().length <= 50, at.line);
  });
});

Deno.test({
  name: "tmux: a key change is shown once, as a block, and accepted with y" + NO_TMUX,
  ignore: !TMUX,
}, async () => {
  await withDirs(3, async ([dirA, dirB, dirB2]) => {
    const tmux = await Tmux.start();
    try {
      const port = discoveryPort();
      await tmux.spawn("A", peerCommand("Alice", { dataDir: dirA, discoveryPort: port }));
      await tmux.spawn("B", peerCommand("Bob", { dataDir: dirB, discoveryPort: port }));
      await tmux.waitFor("A", "First contact with Bob");
      await tmux.keys("B", "C-d");
      await tmux.waitFor("A", "Bob went offline");
      // Another key under the name Bob: the block, the question, and no log line besides.
      await tmux.spawn("C", peerCommand("Bob", { dataDir: dirB2, discoveryPort: port }));
      await tmux.waitFor("A", /Trust the new key [0-9a-f ]+… of Bob\? \(y\/N\)/);
      await tmux.type("A", "y");
      await tmux.keys("A", "Enter");
      const screen = await tmux.waitFor("A", "Now trusting Bob");
      assert.equal(screen.match(/The key of Bob has CHANGED/g)?.length, 1, screen);
      assert.doesNotMatch(screen, /warn: (KEY CHANGED|now trusting)/, screen);
    } finally {
      await tmux.close();
    }
  });
});

Deno.test("piped: menu from stdin, plain text out, end of input quits (exit 0)", async () => {
  await withDirs(1, async ([dir]) => {
    // FORCE_COLOR unset and NO_COLOR unset: being piped alone must switch colours off.
    const r = await runPiped(
      ["--name", "Pipe", "--port", "0", "--data-dir", dir, "--no-discovery"],
      "2\n8\nx\x1b[Dy\n/history Nobody\n/help\n",
      { NO_COLOR: "", FORCE_COLOR: "" },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes("p2pchat> 2\n"), r.stdout);
    // With --no-discovery nobody announces: the hint says how peers come instead.
    assert.ok(r.stdout.includes("No peers known yet. Discovery is off"), r.stdout);
    assert.ok(r.stdout.includes('"8" is not a menu option'), r.stdout);
    // An escape sequence typed into a bad choice is shown harmless, not sent to the terminal.
    assert.ok(r.stdout.includes('"x^[[Dy" is not a menu option'), r.stdout);
    assert.ok(r.stdout.includes('unknown peer "Nobody"'), r.stdout);
    assert.ok(r.stdout.includes("/trust [PEER] [FINGERPRINT]"), r.stdout);
    assert.ok(r.stdout.trimEnd().endsWith("bye"), r.stdout);
    assert.ok(!r.stdout.includes("\x1b"), JSON.stringify(r.stdout));
    assert.ok(!r.stderr.includes("\x1b"), JSON.stringify(r.stderr));
  });
});

Deno.test("cli: --help exits 0; bad options exit 2 with one line and no stack trace", async () => {
  const help = await runPiped(["--help"], null);
  assert.equal(help.code, 0);
  for (const opt of ["--name", "--port", "--data-dir", "--headless"]) {
    assert.ok(help.stdout.includes(opt), opt);
  }
  for (
    const args of [
      ["--bogus"],
      ["--name", "A", "--port", "notaport"],
      ["--port", "5000"],
      ["--name", "has space"],
    ]
  ) {
    const r = await runPiped(args, null);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^p2pchat: /);
    assert.ok(!/\bat .*:\d+:\d+/.test(r.stderr), `stack trace: ${r.stderr}`);
  }
});
