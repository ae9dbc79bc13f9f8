/**
 * bench/steps.ts: the timestamps it adds to a copy of p2pchat find their places in today's code,
 * and a round is split into the steps of its critical path.
 */

import assert from "node:assert/strict";
import { addMarks, criticalPath, MAIN_EXIT, MARKS, splitRounds } from "../../bench/steps.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("steps: every mark finds its anchor exactly once in the current code", async () => {
  for (const file of new Set(MARKS.map((m) => m.file))) {
    const text = await Deno.readTextFile(`${ROOT}${file}`);
    const out = addMarks(file, text, "../steps_mark.ts");
    for (const m of MARKS.filter((m) => m.file === file)) {
      assert.ok(out.includes(`mark(${JSON.stringify(m.step)});`), `${file}: ${m.step}`);
    }
    assert.ok(out.startsWith('import { mark } from "../steps_mark.ts";\n'));
  }
  assert.ok((await Deno.readTextFile(`${ROOT}main.ts`)).includes(MAIN_EXIT));
});

Deno.test("steps: the tool runs two instrumented peers and prints every step", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${ROOT}bench/steps.ts`, "--rounds", "20"],
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(text, /^20 of 20 rounds with every step/);
  assert.match(text, /B\.fsync -> B\.fsynced +p50 +\d+/);
  assert.match(text, /total +p50 +\d+/);
  const normal = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      `${ROOT}bench/steps.ts`,
      "--rounds",
      "20",
      "--durability",
      "normal",
    ],
    env: { NO_COLOR: "1" },
  }).output();
  assert.equal(normal.code, 0, new TextDecoder().decode(normal.stderr));
  assert.match(
    new TextDecoder().decode(normal.stdout),
    /^20 of 20 rounds with every step \(durability normal\)/,
  );
});

Deno.test("steps: a bad --rounds is one line and exit 2", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${ROOT}bench/steps.ts`, "--rounds", "zero"],
  }).output();
  assert.equal(out.code, 2);
  assert.equal(
    new TextDecoder().decode(out.stderr),
    "steps: --rounds must be a positive integer\n",
  );
});

Deno.test("steps: an anchor missing or found twice is an error naming the file and step", () => {
  const file = MARKS[0].file;
  assert.throws(
    () => addMarks(file, "nothing here", "./m.ts"),
    /lib\/ui\/headless\.ts: anchor for step in/,
  );
  const twice = `${MARKS[0].anchor}\n${MARKS[0].anchor}`;
  assert.throws(
    () =>
      addMarks(
        file,
        twice + MARKS.filter((m) => m.file === file).slice(1).map((m) => m.anchor).join("\n"),
        "./m.ts",
      ),
    /not found exactly once/,
  );
});

Deno.test("steps: a mark goes before or after its anchor", () => {
  const file = "lib/store/history.ts";
  const text = MARKS.filter((m) => m.file === file).map((m) => m.anchor).join("\n");
  const out = addMarks(file, text, "./m.ts");
  assert.ok(out.includes('mark("begin"); this.#db.exec("BEGIN IMMEDIATE");'));
  assert.ok(out.includes('this.#lastSeq = lastSeq; mark("commit"); '));
});

Deno.test("steps: a round splits into its steps; a round with a step missing is skipped", () => {
  const path = criticalPath("full");
  // Round 1 at t = 1000 ms: step i at 1000 + (i + 1) * 0.01 ms; delivered at 1000.2 ms.
  const marks: [string, number][] = path.map((s, i) => [s, 1000 + (i + 1) * 0.01]);
  // A mark of another step in between does not disturb the path.
  marks.push(["A.fsynced", 1000.035]);
  // Round 2 at t = 2000 ms lacks B.fsync (not on the path of that round): skipped.
  for (const [i, s] of path.entries()) if (s !== "B.fsync") marks.push([s, 2000 + (i + 1) * 0.01]);
  const steps = splitRounds([[1000, 1000.2], [2000, 2000.2]], marks, criticalPath("full"));
  assert.equal(steps.get("total")!.length, 1);
  assert.ok(Math.abs(steps.get("total")![0] - 200) < 1e-6);
  assert.ok(Math.abs(steps.get("sent -> A.in")![0] - 10) < 1e-6);
  assert.ok(Math.abs(steps.get("A.in -> A.socket-write")![0] - 10) < 1e-6);
  const last = 200 - path.length * 10; // µs from the last step's mark to `delivered`
  assert.ok(Math.abs(steps.get("A.out -> delivered")![0] - last) < 1e-6);
  assert.equal(steps.size, path.length + 2);
  // Without fsync steps on the path (normal durability), round 2 counts too.
  const normal = splitRounds([[1000, 1000.2], [2000, 2000.2]], marks, criticalPath("normal"));
  assert.equal(normal.get("total")!.length, 2);
  assert.ok(Math.abs(normal.get("B.commit -> B.ack-out")![1] - 30) < 1e-6);
});
