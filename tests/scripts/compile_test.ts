import assert from "node:assert/strict";
import config from "../../deno.json" with { type: "json" };
import { RUN_FLAGS } from "../../lib/cli/permissions.ts";
import { broadcastAddresses } from "../../lib/net/broadcast.ts";
import {
  compileArgs,
  CompileUsageError,
  denortFor,
  denortVariable,
  explainCompileFailure,
  outputPath,
  parseCompileArgs,
  RELEASE_TARGETS,
  unstableFlags,
} from "../../scripts/compile.ts";

const ROOT = decodeURIComponent(new URL("../..", import.meta.url).pathname).replace(/\/$/, "");
const SCRIPT = `${ROOT}/scripts/compile.ts`;
const decoder = new TextDecoder();

// What `deno compile` printed here (colours and all) when dl.deno.land could not be reached.
const DOWNLOAD_FAILED = "\x1b[0m\x1b[32mCompile\x1b[0m main.ts to dist/p2pchat\n" +
  "\x1b[0m\x1b[32mDownload\x1b[0m https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip\n" +
  "\x1b[0m\x1b[1m\x1b[31merror\x1b[0m: Writing deno compile executable to temporary file " +
  "'dist/p2pchat.tmp-eddfd5d350daad83'\n\nCaused by:\n    0: Setting up base binary.\n" +
  "    1: error sending request for url (https://dl.deno.land/release/v2.9.6/denort-x86_64-" +
  "unknown-linux-gnu.zip): client error (Connect): dns error: failed to lookup address " +
  "information: Temporary failure in name resolution\n    2: client error (Connect)\n";

Deno.test("compileArgs: exactly the start task's flags, the unstable features, output, entry", () => {
  const args = compileArgs("dist/p2pchat");
  assert.equal(args[0], "compile");
  assert.equal(args.at(-1), "main.ts");
  assert.deepEqual(args.slice(args.indexOf("--output"), args.indexOf("--output") + 2), [
    "--output",
    "dist/p2pchat",
  ]);
  // The permission flags appear once, in order, and nothing else grants a permission.
  const start = args.indexOf(RUN_FLAGS[0]);
  assert.deepEqual(args.slice(start, start + RUN_FLAGS.length), [...RUN_FLAGS]);
  const granting = args.filter((a) => /^--(allow|deny)-|^-A$|^--no-prompt$/.test(a));
  assert.deepEqual(granting, RUN_FLAGS.filter((a) => /^--(allow|deny)-|^--no-prompt$/.test(a)));
  assert.ok(!args.includes("--allow-all") && !args.includes("-A"));
  // deno.json enables the net unstable API (UDP discovery); the binary gets it by name too.
  assert.ok(config.unstable.includes("net"));
  assert.ok(args.includes("--unstable-net"));
  assert.ok(!args.includes("--target"));
  assert.deepEqual(args.slice(1, 3), ["--config", "deno.json"]);
});

Deno.test("compileArgs: a target, and explicit flags", () => {
  assert.deepEqual(
    compileArgs("out/x", {
      target: "aarch64-apple-darwin",
      runFlags: ["--allow-net"],
      unstable: ["net", "kv"],
      config: "/r/deno.json",
      entry: "/r/main.ts",
    }),
    [
      "compile",
      "--config",
      "/r/deno.json",
      "--allow-net",
      "--unstable-net",
      "--unstable-kv",
      "--target",
      "aarch64-apple-darwin",
      "--output",
      "out/x",
      "/r/main.ts",
    ],
  );
  assert.deepEqual(unstableFlags([]), []);
});

Deno.test("outputPath: this machine's binary, and one name per release target", () => {
  assert.equal(outputPath(null), "dist/p2pchat");
  assert.equal(outputPath(null, "/tmp/o"), "/tmp/o/p2pchat");
  assert.deepEqual(RELEASE_TARGETS.map((t) => outputPath(t)), [
    "dist/p2pchat-x86_64-unknown-linux-gnu",
    "dist/p2pchat-aarch64-unknown-linux-gnu",
    "dist/p2pchat-x86_64-apple-darwin",
    "dist/p2pchat-aarch64-apple-darwin",
    "dist/p2pchat-x86_64-pc-windows-msvc.exe",
  ]);
});

Deno.test("denortFor: DENORT_BIN serves this machine only; other targets need their own", () => {
  const host = "x86_64-unknown-linux-gnu";
  assert.equal(denortVariable("aarch64-apple-darwin"), "DENORT_BIN_AARCH64_APPLE_DARWIN");
  assert.equal(denortVariable(host), "DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU");
  const env = { DENORT_BIN: "/opt/denort", DENORT_BIN_AARCH64_APPLE_DARWIN: "/opt/mac" };
  assert.deepEqual(denortFor(null, { host, env }), { variable: "DENORT_BIN", path: "/opt/denort" });
  assert.deepEqual(denortFor(host, { host, env }), { variable: "DENORT_BIN", path: "/opt/denort" });
  assert.deepEqual(denortFor("aarch64-apple-darwin", { host, env }), {
    variable: "DENORT_BIN_AARCH64_APPLE_DARWIN",
    path: "/opt/mac",
  });
  assert.deepEqual(denortFor("x86_64-apple-darwin", { host, env }), {
    variable: "DENORT_BIN_X86_64_APPLE_DARWIN",
    path: undefined,
  });
  assert.deepEqual(denortFor(null, { host, env: {} }), { variable: "DENORT_BIN", path: undefined });
  assert.deepEqual(
    denortFor(null, { host, env: { DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU: "/d" } }),
    { variable: "DENORT_BIN_X86_64_UNKNOWN_LINUX_GNU", path: "/d" },
  );
});

Deno.test("explainCompileFailure: the denort runtime in one line; other failures untouched", () => {
  assert.equal(
    explainCompileFailure(DOWNLOAD_FAILED, { target: null, variable: "DENORT_BIN" }),
    "deno compile needs the denort runtime, which could not be downloaded from dl.deno.land; " +
      "set DENORT_BIN to a denort binary",
  );
  assert.equal(
    explainCompileFailure(DOWNLOAD_FAILED, {
      target: "x86_64-apple-darwin",
      variable: "DENORT_BIN_X86_64_APPLE_DARWIN",
    }),
    "deno compile needs the denort runtime for x86_64-apple-darwin, which could not be " +
      "downloaded from dl.deno.land; set DENORT_BIN_X86_64_APPLE_DARWIN to a denort binary",
  );
  assert.equal(
    explainCompileFailure(
      "error: Could not find denort at '/nope'\n\nCaused by:\n    No such file or directory",
      { target: null, variable: "DENORT_BIN" },
    ),
    "DENORT_BIN=/nope is not a readable file",
  );
  // A type error after a successful download mentions dl.deno.land, but is not about denort.
  const typeError = "Download https://dl.deno.land/release/v2.9.6/denort-x.zip\n" +
    "error: TS2322 [ERROR]: Type 'string' is not assignable to type 'number'.";
  assert.equal(explainCompileFailure(typeError, { target: null, variable: "DENORT_BIN" }), null);
});

Deno.test("parseCompileArgs: --all and --out-dir only", () => {
  assert.deepEqual(parseCompileArgs([]), { all: false, outDir: "dist" });
  assert.deepEqual(parseCompileArgs(["--all"]), { all: true, outDir: "dist" });
  assert.deepEqual(parseCompileArgs(["--out-dir", "/tmp/x", "--all"]), {
    all: true,
    outDir: "/tmp/x",
  });
  assert.deepEqual(parseCompileArgs(["--out-dir=o"]), { all: false, outDir: "o" });
  for (const bad of [["--al"], ["--out-dir"], ["--out-dir="], ["x86_64-apple-darwin"]]) {
    assert.throws(() => parseCompileArgs(bad), CompileUsageError);
  }
});

/** Runs scripts/compile.ts (as `deno task compile` does) and returns its status and stderr. */
async function runScript(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number; stderr: string }> {
  const vars = Deno.env.toObject();
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete vars[k];
    else vars[k] = v;
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", SCRIPT, ...args],
    cwd: ROOT,
    env: vars,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: decoder.decode(out.stderr) };
}

Deno.test("compile script: a DENORT_BIN that is not there is one line and exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-compile-" });
  try {
    const { code, stderr } = await runScript(["--out-dir", dir], {
      DENORT_BIN: `${dir}/no-such-denort`,
    });
    assert.equal(code, 1);
    assert.equal(stderr, `p2pchat: DENORT_BIN=${dir}/no-such-denort is not a readable file\n`);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Where deno keeps a downloaded runtime; with one there, compiling needs no network.
const info = JSON.parse(
  decoder.decode(
    (await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdin: "null" }).output())
      .stdout,
  ),
) as { denoDir: string };
const cachedDenort =
  `${info.denoDir}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;
const hasCachedDenort = (() => {
  try {
    Deno.statSync(cachedDenort);
    return true;
  } catch {
    return false;
  }
})();
// In a namespace with only loopback up, dl.deno.land is surely unreachable.
const offline = broadcastAddresses(Deno.networkInterfaces()).length === 0 &&
  Deno.networkInterfaces().every((i) => i.address.startsWith("127.") || i.address === "::1");
const whyNotOffline = Deno.env.get("DENORT_BIN")
  ? "DENORT_BIN is set"
  : hasCachedDenort
  ? "a denort runtime is cached"
  : !offline
  ? "not in a loopback-only network namespace"
  : "";

Deno.test({
  name: "compile script: no denort runtime to be had is one line and exit 1" +
    (whyNotOffline ? ` (skipped: ${whyNotOffline})` : ""),
  ignore: whyNotOffline !== "",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "p2pchat-compile-" });
    try {
      for (const args of [["--out-dir", dir], ["--all", "--out-dir", dir]]) {
        const { code, stderr } = await runScript(args, { DENORT_BIN: undefined });
        assert.equal(code, 1);
        const forTarget = args.includes("--all") ? ` for ${RELEASE_TARGETS[0]}` : "";
        const variable = args.includes("--all") && RELEASE_TARGETS[0] !== Deno.build.target
          ? denortVariable(RELEASE_TARGETS[0])
          : "DENORT_BIN";
        assert.equal(
          stderr,
          `p2pchat: deno compile needs the denort runtime${forTarget}, which could not be ` +
            `downloaded from dl.deno.land; set ${variable} to a denort binary\n`,
        );
      }
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The JSON object that follows `"key":` last in `bytes` (deno compile's metadata is JSON). */
function lastJsonObject(bytes: Uint8Array, key: string): Record<string, unknown> {
  const text = new TextDecoder("latin1").decode(bytes);
  const at = text.lastIndexOf(`"${key}":{`);
  assert.ok(at >= 0, `no "${key}" in the binary`);
  const start = at + key.length + 3;
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return JSON.parse(text.slice(start, i + 1));
  }
  throw new Error(`unterminated "${key}" object`);
}

/** The metadata `deno compile` records for `--allow-X[=a,b]` flags: allow_X = [] or [a, b]. */
function expectedGrants(flags: readonly string[]): Record<string, string[]> {
  const grants: Record<string, string[]> = {};
  for (const flag of flags) {
    const m = /^--allow-([a-z]+)(?:=(.*))?$/.exec(flag);
    if (m) grants[`allow_${m[1]}`] = m[2] === undefined ? [] : m[2].split(",");
  }
  return grants;
}

// The deno CLI itself stands in for denort here: the binary it makes does not run p2pchat, but
// it carries the same metadata, so the test can read which permissions a release would embed.
Deno.test("deno compile with compileArgs embeds exactly the start task's permissions", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-compile-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: compileArgs(`${dir}/p2pchat`),
      cwd: ROOT,
      env: { DENORT_BIN: Deno.execPath() },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, decoder.decode(out.stderr));
    const binary = await Deno.readFile(`${dir}/p2pchat`);
    const permissions = lastJsonObject(binary, "permissions");
    const expected = expectedGrants(RUN_FLAGS);
    for (const [key, value] of Object.entries(permissions)) {
      if (!key.startsWith("allow_") || key === "allow_import") continue;
      assert.deepEqual(value, expected[key] ?? null, key);
    }
    for (const key of Object.keys(expected)) assert.ok(key in permissions, key);
    assert.equal(permissions.prompt, !RUN_FLAGS.includes("--no-prompt"));
    const unstable = lastJsonObject(binary, "unstable_config");
    assert.deepEqual(unstable.features, config.unstable);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compile script: a DENORT_BIN that is no denort leaves no binary behind", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-compile-" });
  try {
    const { code, stderr } = await runScript(["--out-dir", dir], { DENORT_BIN: Deno.execPath() });
    assert.equal(code, 1);
    const last = stderr.trimEnd().split("\n").at(-1)!;
    assert.equal(
      last,
      `p2pchat: ${dir}/p2pchat does not run p2pchat (DENORT_BIN=${Deno.execPath()} is not a ` +
        `denort ${Deno.version.deno} binary?)`,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
