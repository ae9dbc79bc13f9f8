/**
 * Builds the release binary with `deno compile`, embedding exactly the permission flags of the
 * `start` task ({@linkcode RUN_FLAGS}) and the unstable features deno.json enables.
 *
 * ```sh
 * deno task compile        # dist/p2pchat for this machine
 * deno task compile:all    # dist/p2pchat-<target>[.exe] for every release target
 * ```
 *
 * `deno compile` builds on `denort`, a runtime it downloads from dl.deno.land. Where that host
 * cannot be reached, `DENORT_BIN` names a denort binary of the same Deno version for this machine,
 * and `DENORT_BIN_<TARGET>` (e.g. `DENORT_BIN_AARCH64_APPLE_DARWIN`) one for another target:
 * Deno itself uses `DENORT_BIN` for every target, so this script hands it only to the build it
 * fits. When the runtime cannot be had, the script says so in one line and exits with 1.
 *
 * @module
 */

import config from "../deno.json" with { type: "json" };
import { RUN_FLAGS } from "../lib/cli/permissions.ts";

/** The targets `--all` builds, in the order it builds them. */
export const RELEASE_TARGETS: readonly string[] = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];

/** A bad command line for this script. */
export class CompileUsageError extends Error {
  /** @param message What is wrong. */
  constructor(message: string) {
    super(message);
    this.name = "CompileUsageError";
  }
}

/** What the command line asks for. */
export interface CompileRequest {
  /** Build every {@linkcode RELEASE_TARGETS} entry instead of this machine's binary. */
  all: boolean;
  /** Where the binaries go (default `dist`). */
  outDir: string;
}

/**
 * Parses the script's arguments: `[--all] [--out-dir DIR]`.
 *
 * @throws {CompileUsageError} for anything else.
 * @example
 * ```ts
 * parseCompileArgs(["--all"]); // { all: true, outDir: "dist" }
 * ```
 */
export function parseCompileArgs(args: readonly string[]): CompileRequest {
  const request: CompileRequest = { all: false, outDir: "dist" };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--all") {
      request.all = true;
    } else if (arg === "--out-dir" && i + 1 < args.length && args[i + 1] !== "") {
      request.outDir = args[++i];
    } else if (arg.startsWith("--out-dir=") && arg.length > "--out-dir=".length) {
      request.outDir = arg.slice("--out-dir=".length);
    } else {
      throw new CompileUsageError(`unknown argument "${arg}" (usage: [--all] [--out-dir DIR])`);
    }
  }
  return request;
}

/**
 * The binary's path: `DIR/p2pchat` for this machine (`target` null; `deno compile` adds `.exe`
 * itself on Windows), `DIR/p2pchat-<target>` for a named target, with `.exe` for Windows.
 *
 * @example
 * ```ts
 * outputPath("x86_64-pc-windows-msvc"); // "dist/p2pchat-x86_64-pc-windows-msvc.exe"
 * ```
 */
export function outputPath(target: string | null, outDir = "dist"): string {
  if (target === null) return `${outDir}/p2pchat`;
  return `${outDir}/p2pchat-${target}${target.includes("windows") ? ".exe" : ""}`;
}

/**
 * `--unstable-<name>` for each unstable feature (deno.json's `"unstable"` list).
 *
 * @example
 * ```ts
 * unstableFlags(["net"]); // ["--unstable-net"]
 * ```
 */
export function unstableFlags(features: readonly string[]): string[] {
  return features.map((f) => `--unstable-${f}`);
}

/** Options of {@linkcode compileArgs}. */
export interface CompileArgsOptions {
  /** Cross-compilation target; omitted for this machine. */
  target?: string | null;
  /** The config file (default `deno.json`). */
  config?: string;
  /** The entry point (default `main.ts`). */
  entry?: string;
  /** Permission flags (default {@linkcode RUN_FLAGS}). */
  runFlags?: readonly string[];
  /** Unstable features (default deno.json's `"unstable"`). */
  unstable?: readonly string[];
}

/**
 * The arguments of `deno` that build one binary: `compile`, the config, exactly the run flags,
 * the unstable features, the target, the output and the entry point.
 *
 * deno.json's `"unstable"` would reach the binary anyway (deno compile reads the config); naming
 * the features keeps the command complete on its own.
 *
 * @example
 * ```ts
 * compileArgs("dist/p2pchat", { runFlags: ["--allow-net"], unstable: ["net"] });
 * // ["compile", "--config", "deno.json", "--allow-net", "--unstable-net",
 * //  "--output", "dist/p2pchat", "main.ts"]
 * ```
 */
export function compileArgs(output: string, opts: CompileArgsOptions = {}): string[] {
  return [
    "compile",
    "--config",
    opts.config ?? "deno.json",
    ...(opts.runFlags ?? RUN_FLAGS),
    ...unstableFlags(opts.unstable ?? config.unstable),
    ...(opts.target ? ["--target", opts.target] : []),
    "--output",
    output,
    opts.entry ?? "main.ts",
  ];
}

/**
 * The environment variable that names a denort binary for `target` besides `DENORT_BIN`.
 *
 * @example
 * ```ts
 * denortVariable("aarch64-apple-darwin"); // "DENORT_BIN_AARCH64_APPLE_DARWIN"
 * ```
 */
export function denortVariable(target: string): string {
  return `DENORT_BIN_${target.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

/**
 * Which variable gives the denort binary for a build, and its value: for this machine's target
 * `DENORT_BIN` (else `DENORT_BIN_<HOST>`), for another target only `DENORT_BIN_<TARGET>`, since a
 * runtime for this machine cannot run elsewhere.
 *
 * @example
 * ```ts
 * denortFor(null, { host: "x86_64-unknown-linux-gnu", env: { DENORT_BIN: "/opt/denort" } });
 * // { variable: "DENORT_BIN", path: "/opt/denort" }
 * ```
 */
export function denortFor(
  target: string | null,
  opts: { host: string; env: Readonly<Record<string, string | undefined>> },
): { variable: string; path: string | undefined } {
  const own = denortVariable(target ?? opts.host);
  if (target === null || target === opts.host) {
    if (opts.env.DENORT_BIN) return { variable: "DENORT_BIN", path: opts.env.DENORT_BIN };
    if (opts.env[own]) return { variable: own, path: opts.env[own] };
    return { variable: "DENORT_BIN", path: undefined };
  }
  return { variable: own, path: opts.env[own] || undefined };
}

/**
 * Turns a failed `deno compile`'s stderr into one line when the cause is the denort runtime;
 * returns null for any other failure (a type error, say), whose output speaks for itself.
 *
 * @example
 * ```ts
 * explainCompileFailure("error: ... Setting up base binary. ... dl.deno.land ...", {
 *   target: null,
 *   variable: "DENORT_BIN",
 * });
 * // "deno compile needs the denort runtime, which could not be downloaded from dl.deno.land; ..."
 * ```
 */
export function explainCompileFailure(
  stderr: string,
  opts: { target: string | null; variable: string },
): string | null {
  // deno colours its errors (it sees no NO_COLOR here): strip the colour codes before matching.
  const text = stderr.replaceAll(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "");
  const missing = /Could not find denort at '([^']*)'/.exec(text);
  if (missing) return `${opts.variable}=${missing[1]} is not a readable file`;
  // Not any mention of dl.deno.land: a successful download prints its URL too.
  if (
    /Setting up base binary|(request for url \(|Failed downloading ')https:\/\/dl\.deno\.land/.test(
      text,
    )
  ) {
    const forTarget = opts.target ? ` for ${opts.target}` : "";
    return `deno compile needs the denort runtime${forTarget}, which could not be downloaded ` +
      `from dl.deno.land; set ${opts.variable} to a denort binary`;
  }
  return null;
}

const decoder = new TextDecoder();

/** `path` as seen from `root` (the repository), unless it is absolute. */
function inRoot(root: string, path: string): string {
  return /^([A-Za-z]:)?[\\/]/.test(path) ? path : `${root}/${path}`;
}

async function build(
  target: string | null,
  opts: { root: string; outDir: string },
): Promise<string | null> {
  const env = Deno.env.toObject();
  const denort = denortFor(target, { host: Deno.build.target, env });
  // Deno reads DENORT_BIN for whatever target it builds: pass only the one that fits.
  delete env.DENORT_BIN;
  if (denort.path) env.DENORT_BIN = denort.path;
  const output = outputPath(target, opts.outDir);
  const out = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(output, { target }),
    cwd: opts.root,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = decoder.decode(out.stderr);
  if (!out.success) {
    const line = explainCompileFailure(stderr, { target, variable: denort.variable });
    if (line !== null) return line;
    await Deno.stderr.write(out.stderr);
    return `deno compile failed${target ? ` for ${target}` : ""} (see above)`;
  }
  await Deno.stderr.write(out.stderr);
  if (target === null || target === Deno.build.target) {
    // A wrong DENORT_BIN (the deno CLI itself, another version) still "compiles": make sure the
    // result runs p2pchat before calling it a release.
    const path = `${inRoot(opts.root, output)}${Deno.build.os === "windows" ? ".exe" : ""}`;
    const check = await new Deno.Command(path, { args: ["--version"], stdin: "null" }).output()
      .catch((e: Error) => ({ success: false, stdout: new TextEncoder().encode(e.message) }));
    const said = decoder.decode(check.stdout).trim();
    if (!check.success || !said.startsWith("p2pchat ")) {
      await Deno.remove(path).catch(() => {/* already gone: nothing to clean */});
      return `${output} does not run p2pchat (${denort.variable}` +
        `${denort.path ? `=${denort.path}` : ""} is not a denort ${Deno.version.deno} binary?)`;
    }
  }
  console.error(`p2pchat: built ${output}`);
  return null;
}

/**
 * Runs the script; returns the exit status (0 built, 1 build failed, 2 bad arguments).
 *
 * @example
 * ```ts
 * Deno.exit(await main(Deno.args));
 * ```
 */
export async function main(args: readonly string[]): Promise<number> {
  let request: CompileRequest;
  try {
    request = parseCompileArgs(args);
  } catch (e) {
    if (!(e instanceof CompileUsageError)) throw e;
    console.error(`p2pchat: ${e.message}`);
    return 2;
  }
  let root = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
  if (Deno.build.os === "windows") root = root.replace(/^\/([A-Za-z]:)/, "$1");
  await Deno.mkdir(inRoot(root, request.outDir), { recursive: true });
  for (const target of request.all ? RELEASE_TARGETS : [null]) {
    const failure = await build(target, { root, outDir: request.outDir });
    if (failure !== null) {
      console.error(`p2pchat: ${failure}`);
      return 1;
    }
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
