/**
 * Helpers of the release tests: the permission grants of a flag list, the same list with one
 * grant taken away, bounded runs of a command, and the safety check for runs that use the
 * default broadcast addresses.
 *
 * @module
 */

import assert from "node:assert/strict";

/** Absolute path of main.ts. */
export const MAIN: string = decodeURIComponent(new URL("../../main.ts", import.meta.url).pathname);

/** Absolute path of the repository. */
export const ROOT: string = decodeURIComponent(new URL("../..", import.meta.url).pathname)
  .replace(/\/$/, "");

/** One `--allow-KIND[=a,b]` flag. */
export interface Grant {
  /** The flag as written. */
  flag: string;
  /** `net`, `read`, `env`, ... */
  kind: string;
  /** The listed names or paths; null when the flag grants all of its kind. */
  items: string[] | null;
}

/**
 * The `--allow-*` flags of `flags`, parsed.
 *
 * @example
 * ```ts
 * grants(["--allow-net", "--allow-env=HOME,TERM"]);
 * // [{ flag: "--allow-net", kind: "net", items: null },
 * //  { flag: "--allow-env=HOME,TERM", kind: "env", items: ["HOME", "TERM"] }]
 * ```
 */
export function grants(flags: readonly string[]): Grant[] {
  const out: Grant[] = [];
  for (const flag of flags) {
    const m = /^--allow-([a-z]+)(?:=(.*))?$/.exec(flag);
    if (m) out.push({ flag, kind: m[1], items: m[2] === undefined ? null : m[2].split(",") });
  }
  return out;
}

/**
 * `flags` without the `--allow-KIND` flag, or, given `item`, without that one item of its list
 * (the flag goes when its list empties).
 *
 * @example
 * ```ts
 * without(["--allow-net", "--allow-env=HOME,TERM"], "env", "TERM");
 * // ["--allow-net", "--allow-env=HOME"]
 * ```
 */
export function without(flags: readonly string[], kind: string, item?: string): string[] {
  const out: string[] = [];
  let found = false;
  for (const flag of flags) {
    const [g] = grants([flag]);
    if (g?.kind !== kind) {
      out.push(flag);
      continue;
    }
    found = true;
    if (item === undefined) continue;
    assert.ok(g.items?.includes(item), `${flag} does not list ${item}`);
    const rest = g.items!.filter((i) => i !== item);
    if (rest.length > 0) out.push(`--allow-${kind}=${rest.join(",")}`);
  }
  assert.ok(found, `no --allow-${kind} in ${flags.join(" ")}`);
  return out;
}

/**
 * True when every network interface has only loopback addresses, as inside
 * `unshare --net` with `lo` up: only then may a run use the default broadcast addresses, since
 * nothing it sends can leave the machine.
 */
export function loopbackOnly(): boolean {
  return Deno.networkInterfaces().every((i) => i.address.startsWith("127.") || i.address === "::1");
}

/** The reason to skip a test that needs {@linkcode loopbackOnly}, or "" when it may run. */
export const NOT_ISOLATED: string = loopbackOnly()
  ? ""
  : "not in a loopback-only network namespace (run it inside unshare --net)";

/** A finished (or killed) run. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** True when the run was killed for taking longer than its time limit. */
  timedOut: boolean;
}

/** A small, explicit environment: no NO_COLOR, FORCE_COLOR, TERM unless a test sets them. */
export function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ["HOME", "PATH", "DENO_DIR", "TMPDIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...extra };
}

const decoder = new TextDecoder();

/**
 * Runs `command args` with stdin closed (not a terminal, so Deno never prompts), in
 * {@linkcode baseEnv} plus `opts.env`; kills it after `opts.timeoutMs` (default 60 s).
 *
 * @example
 * ```ts
 * const r = await runBounded(Deno.execPath(), ["--version"]);
 * ```
 */
export async function runBounded(
  command: string,
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  const child = new Deno.Command(command, {
    args: [...args],
    env: baseEnv(opts.env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, opts.timeoutMs ?? 60_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `deno run FLAGS main.ts ARGS` with {@linkcode runBounded}. */
export function runMainBounded(
  flags: readonly string[],
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  return runBounded(Deno.execPath(), ["run", ...flags, MAIN, ...args], opts);
}

/**
 * Asserts that a run stopped on a missing permission the way p2pchat promises: status 1 within
 * the time limit, one stderr line (besides `warn:` lines) naming the kind and the flag, no stack
 * trace, and no `ready`. `item` is the exact name the line must give (env, sys), `under` a
 * directory the path it gives must be in (read, write).
 */
export function assertStoppedForPermission(
  r: RunResult,
  expected: { kind: string; item?: string; under?: string },
): void {
  const context = `status ${r.code}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout}`;
  assert.ok(!r.timedOut, `did not stop within its time limit\n${context}`);
  assert.equal(r.code, 1, context);
  const lines = r.stderr.split("\n").filter((l) => l !== "" && !l.startsWith("p2pchat: warn: "));
  assert.equal(lines.length, 1, `expected one line on stderr\n${context}`);
  const { kind, item, under } = expected;
  if (under !== undefined) {
    const dir = under.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    assert.match(
      lines[0],
      new RegExp(
        `^p2pchat: missing permission: ${kind} access to ${dir}(/\\S*)? ` +
          `\\(needs --allow-${kind}\\)$`,
      ),
    );
  } else if (item !== undefined) {
    const needs = kind === "env" || kind === "sys" ? `--allow-${kind}=${item}` : `--allow-${kind}`;
    assert.equal(
      lines[0],
      `p2pchat: missing permission: ${kind} access to ${item} (needs ${needs})`,
    );
  } else {
    assert.match(
      lines[0],
      new RegExp(
        `^p2pchat: missing permission: ${kind} access( to .+)? \\(needs --allow-${kind}` +
          `(=[^)]+)?\\)$`,
      ),
    );
  }
  assert.doesNotMatch(r.stderr, /^\s+at |Uncaught|^error: /m, context);
  assert.doesNotMatch(r.stdout, /"type":"ready"/, context);
}
