/**
 * Where a delivery's latency goes, step by step. Copies p2pchat (main.ts, deno.json, deno.lock,
 * lib/) to a temporary directory, adds a timestamp at each step of a delivery to the copy (the
 * code under test is left as it is), runs two headless peers of the copy, sends messages one at a
 * time, and prints the median and p90 of each step along the critical path, in µs:
 *
 *     deno run --allow-all bench/steps.ts [--rounds N] [--durability full|normal]
 *
 * Timestamps are `performance.timeOrigin + performance.now()`, comparable across the processes
 * of one machine. A step that moved in the code makes the copy fail to build: the error names the
 * file and the anchor text to update in {@linkcode MARKS}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BenchPeer, ROOT } from "./peer.ts";

/** One timestamp added to the copy: in `file`, `mark(step)` goes before or after `anchor`. */
export interface Mark {
  file: string;
  anchor: string;
  step: string;
  where: "before" | "after";
}

/** The steps, as they happen on the critical path of one delivery. */
export const MARKS: readonly Mark[] = [
  {
    file: "lib/ui/headless.ts",
    anchor: "const handle = (line: string): boolean => {",
    step: "in",
    where: "after",
  },
  {
    file: "lib/store/history.ts",
    anchor: 'this.#db.exec("BEGIN IMMEDIATE");\n      for (const op of ops) {',
    step: "begin",
    where: "before",
  },
  {
    file: "lib/store/history.ts",
    anchor: 'this.#db.exec("COMMIT");\n      this.#lastSeq = lastSeq;',
    step: "commit",
    where: "after",
  },
  {
    file: "lib/store/history.ts",
    anchor: "await this.#file.syncData();",
    step: "fsync",
    where: "before",
  },
  {
    file: "lib/store/history.ts",
    anchor: "for (const w of batch) w.ok();",
    step: "fsynced",
    where: "before",
  },
  {
    file: "lib/net/conn.ts",
    anchor: "while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));",
    step: "socket-write",
    where: "before",
  },
  {
    file: "lib/net/conn.ts",
    anchor: "this.#bytesIn += n;",
    step: "socket-read",
    where: "before",
  },
  {
    file: "lib/node/chat_node.ts",
    anchor: "session.sendAck(messages.map((m) => m.id))",
    step: "ack-out",
    where: "before",
  },
  {
    file: "lib/node/chat_node.ts",
    anchor: "const delivered: OutMessage[] = [];",
    step: "ack-in",
    where: "before",
  },
  {
    file: "lib/ui/headless.ts",
    anchor: 'const text = this.#lines.join("\\n") + "\\n";',
    step: "out",
    where: "before",
  },
];

/** Where main.ts exits: the copy writes its timestamps just before. */
export const MAIN_EXIT = "Deno.exit(await run(Deno.args));";

/**
 * The critical path: which process (A sender, B receiver) reaches which step, in order. With
 * `normal` durability there is no fsync of the WAL.
 */
export function criticalPath(durability: "full" | "normal"): string[] {
  return durability === "full" ? [...PATH] : PATH.filter((s) => !s.startsWith("B.fsync"));
}

const PATH: readonly string[] = [
  "A.in",
  // The sender's commit (A.begin, A.commit) comes after its socket write, off the path.
  "A.socket-write",
  "B.socket-read",
  "B.begin",
  "B.commit",
  "B.fsync",
  "B.fsynced",
  "B.ack-out",
  "B.socket-write",
  "A.socket-read",
  "A.ack-in",
  "A.out",
];

/**
 * Inserts `mark(step)` calls into the source text of one file, plus the import of `mark`.
 *
 * @throws {Error} when an anchor is not found exactly once.
 * @example
 * ```ts
 * const src = addMarks("lib/net/conn.ts", text, "../steps_mark.ts");
 * ```
 */
export function addMarks(file: string, text: string, markModule: string): string {
  let out = text;
  for (const m of MARKS.filter((m) => m.file === file)) {
    const at = out.indexOf(m.anchor);
    if (at < 0 || out.indexOf(m.anchor, at + 1) >= 0) {
      throw new Error(`${file}: anchor for step ${m.step} not found exactly once: ${m.anchor}`);
    }
    const call = `mark(${JSON.stringify(m.step)}); `;
    const pos = m.where === "before" ? at : at + m.anchor.length;
    out = out.slice(0, pos) + (m.where === "before" ? call : ` ${call}`) + out.slice(pos);
  }
  return `import { mark } from ${JSON.stringify(markModule)};\n${out}`;
}

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else if (e.isFile) await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

/** Builds the instrumented copy in `dir`; its marks go to `${out}/PID.json` at exit. */
async function buildCopy(dir: string, out: string): Promise<string> {
  await copyTree(`${ROOT}lib`, `${dir}/lib`);
  for (const f of ["deno.json", "deno.lock"]) await Deno.copyFile(`${ROOT}${f}`, `${dir}/${f}`);
  await Deno.writeTextFile(
    `${dir}/lib/steps_mark.ts`,
    `const marks: [string, number][] = [];
/** Records a step of the delivery under measurement. */
export function mark(step: string): void {
  marks.push([step, performance.timeOrigin + performance.now()]);
}
/** Writes the steps recorded. */
export function dumpMarks(): void {
  Deno.writeTextFileSync(${JSON.stringify(out)} + "/" + Deno.pid + ".json", JSON.stringify(marks));
}
`,
  );
  for (const file of new Set(MARKS.map((m) => m.file))) {
    const text = await Deno.readTextFile(`${ROOT}${file}`);
    await Deno.writeTextFile(`${dir}/${file}`, addMarks(file, text, "../steps_mark.ts"));
  }
  const main = await Deno.readTextFile(`${ROOT}main.ts`);
  const exit = MAIN_EXIT;
  if (!main.includes(exit)) throw new Error(`main.ts: anchor not found: ${exit}`);
  await Deno.writeTextFile(
    `${dir}/main.ts`,
    `import { dumpMarks } from "./lib/steps_mark.ts";\n` +
      main.replace(exit, "const code = await run(Deno.args);\n  dumpMarks();\n  Deno.exit(code);"),
  );
  return `${dir}/main.ts`;
}

/**
 * Splits each round (send time, arrival of `delivered`) into the steps of `path` (see
 * {@linkcode criticalPath}): for each step, the time since the step before it (µs). Rounds where
 * a step is missing are skipped.
 *
 * @example
 * ```ts
 * const steps = splitRounds([[0, 1]], [["A.in", 0.1]], criticalPath("full"));
 * ```
 */
export function splitRounds(
  rounds: [number, number][],
  marks: [string, number][],
  path: readonly string[],
): Map<string, number[]> {
  const sorted = [...marks].sort((a, b) => a[1] - b[1]);
  const steps = new Map<string, number[]>();
  let j = 0;
  for (const [t0, t1] of rounds) {
    while (j < sorted.length && sorted[j][1] < t0) j++;
    const row: [string, number][] = [];
    let k = j;
    let prev = t0;
    let prevName = "sent";
    for (const name of path) {
      while (k < sorted.length && sorted[k][1] <= t1 && sorted[k][0] !== name) k++;
      if (k >= sorted.length || sorted[k][1] > t1) break;
      row.push([`${prevName} -> ${name}`, (sorted[k][1] - prev) * 1000]);
      prev = sorted[k][1];
      prevName = name;
      k++;
    }
    if (row.length !== path.length) continue;
    row.push([`${prevName} -> delivered`, (t1 - prev) * 1000]);
    row.push(["total", (t1 - t0) * 1000]);
    for (const [step, us] of row) {
      if (!steps.has(step)) steps.set(step, []);
      steps.get(step)!.push(us);
    }
  }
  return steps;
}

function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "1000" },
      durability: { type: "string", default: "full" },
    },
  });
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) {
    console.error("steps: --rounds must be a positive integer");
    return 2;
  }
  if (values.durability !== "full" && values.durability !== "normal") {
    console.error("steps: --durability must be full or normal");
    return 2;
  }
  const tmp = await Deno.makeTempDir({ prefix: "p2pchat-steps-" });
  try {
    const main = await buildCopy(`${tmp}/src`, tmp);
    const args = ["--no-discovery", "--durability", values.durability!];
    const [alice, bob] = await Promise.all([
      BenchPeer.start("Alice", { main, args }),
      BenchPeer.start("Bob", { main, args }),
    ]);
    const times: [number, number][] = [];
    try {
      const connected = alice.next((e) => e.type === "connected");
      await alice.command(`/connect 127.0.0.1:${bob.port}`);
      await connected;
      const warm = 300;
      for (let i = 0; i < warm + rounds; i++) {
        const delivered = alice.next((e) => e.type === "delivered");
        let at = 0;
        const off = alice.on((e, t) => {
          if (e.type === "delivered") at = t;
        });
        const t = performance.now();
        await alice.command(`/send Bob step ${i}`);
        await delivered;
        off();
        if (i >= warm) times.push([performance.timeOrigin + t, performance.timeOrigin + at]);
      }
    } finally {
      await Promise.all([alice.quit(), bob.quit()]);
    }
    const marks: [string, number][] = [];
    for (const [who, peer] of [["A", alice], ["B", bob]] as const) {
      const own = JSON.parse(await Deno.readTextFile(`${tmp}/${peer.pid}.json`));
      for (const [step, t] of own as [string, number][]) marks.push([`${who}.${step}`, t]);
    }
    const steps = splitRounds(times, marks, criticalPath(values.durability));
    const n = steps.get("total")?.length ?? 0;
    console.log(
      `${n} of ${rounds} rounds with every step (durability ${values.durability}); µs, ` +
        "A = sender, B = receiver",
    );
    for (const [step, us] of steps) {
      console.log(
        `${step.padEnd(34)} p50 ${quantile(us, 0.5).toFixed(0).padStart(6)}` +
          `   p90 ${quantile(us, 0.9).toFixed(0).padStart(6)}`,
      );
    }
    return n > 0 ? 0 : 1;
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main());
