/**
 * The program: turns a command line into a running peer (or a history listing) and every
 * failure into one line on stderr and an exit status. `main.ts` only calls {@linkcode run}.
 *
 * @module
 */

import {
  IdentityError,
  openIdentity,
  PassphraseRequiredError,
  WrongPassphraseError,
} from "../crypto/identity.ts";
import { Logger, writeStderr } from "../log.ts";
import { Discovery, DiscoveryError } from "../net/discovery.ts";
import { ChatNode } from "../node/chat_node.ts";
import { HistoryStore, StoreError } from "../store/history.ts";
import { PeerBook } from "../store/peers.ts";
import { runHeadless } from "../ui/headless.ts";
import {
  helpText,
  type HistoryOptions,
  parseCommandLine,
  type PeerOptions,
  UsageError,
  VERSION,
} from "./args.ts";
import { RuntimeError } from "./errors.ts";
import { printHistory } from "./history_command.ts";
import { PERMISSIONS_SUMMARY } from "./permissions.ts";

/**
 * Runs p2pchat with `args` and returns the exit status.
 *
 * @example
 * ```ts
 * Deno.exit(await run(Deno.args));
 * ```
 */
export async function run(args: string[]): Promise<number> {
  try {
    const inv = parseCommandLine(args, readEnv());
    switch (inv.command) {
      case "help":
        await writeAll(Deno.stdout, helpText(PERMISSIONS_SUMMARY));
        return 0;
      case "version":
        await writeAll(Deno.stdout, `p2pchat ${VERSION}\n`);
        return 0;
      case "history":
        return await runHistory(inv);
      case "peer":
        return await runPeer(inv);
    }
  } catch (e) {
    const line = explain(e);
    writeStderr(`p2pchat: ${line.message}\n`);
    return line.status;
  }
}

async function runPeer(opts: PeerOptions): Promise<number> {
  const log = new Logger({ level: opts.verbose ? "info" : "warn" });
  await prepareDataDir(opts.dataDir);
  const lock = await lockDataDir(opts.dataDir);
  try {
    return await runLockedPeer(opts, log);
  } finally {
    lock.close();
  }
}

/** Runs the peer once its data directory is ours alone. */
async function runLockedPeer(opts: PeerOptions, log: Logger): Promise<number> {
  const passphrase = await readPassphrase(opts.passphraseFile);
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: "0.0.0.0", port: opts.port });
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) {
      throw new RuntimeError(
        `port ${opts.port} is already in use (another p2pchat?); choose another with --port`,
      );
    }
    throw e;
  }
  let history: HistoryStore | null = null;
  let identity;
  try {
    ({ identity } = await openIdentity(opts.dataDir, {
      passphrase,
      onCreate: () =>
        log.warn("creating your identity (an RSA-2048 key pair): this takes a moment..."),
    }));
  } catch (e) {
    listener.close();
    throw e;
  }
  let peers: PeerBook | null = null;
  let node: ChatNode;
  try {
    history = await HistoryStore.open(`${opts.dataDir}/chat_history.db`, {
      key: identity.historyKey,
      durable: opts.durability,
    });
    peers = await PeerBook.open(`${opts.dataDir}/peers.json`, { onWarning: (m) => log.warn(m) });
    const tcpPort = (listener.addr as Deno.NetAddr).port;
    node = new ChatNode({
      name: opts.name,
      identity,
      history,
      peers,
      listener,
      dataDir: opts.dataDir,
      log,
      limits: opts.limits,
      discovery: opts.discovery
        ? (hooks) =>
          new Discovery(identity, {
            name: opts.name,
            tcpPort,
            port: opts.discoveryPort,
            broadcast: opts.broadcast ?? undefined,
            intervalMs: opts.intervalMs,
            ...hooks,
            onWarning: (m) => log.warn(m),
          })
        : undefined,
    });
  } catch (e) {
    listener.close();
    await history?.close();
    await peers?.close();
    throw e;
  }
  // Headless subscribes to the node's events first, then starts it (so it prints `ready`).
  const stop = stopSignal();
  try {
    if (opts.headless) {
      await runHeadless(node, { stop: stop.promise, log });
    } else {
      const { runTerminal } = await import("../ui/terminal/mod.ts");
      // The terminal UI starts the node once it listens: the start shows the messages stored
      // before a crash and never shown.
      await runTerminal(node, {
        startNode: () => node.start(),
        log,
        stop: stop.promise,
        intervalMs: opts.intervalMs,
        discoveryPort: opts.discoveryPort,
        discovery: opts.discovery,
      });
    }
  } catch (e) {
    await node.close();
    throw e;
  } finally {
    stop.dispose();
  }
  return 0;
}

/**
 * One running peer per data directory: two would share one identity and one outbox. The lock is
 * the operating system's, so it also goes away when a peer is killed.
 */
async function lockDataDir(dir: string): Promise<Deno.FsFile> {
  const file = await Deno.open(`${dir}/.lock`, { create: true, write: true, mode: 0o600 });
  if (!(await file.tryLock(true))) {
    file.close();
    throw new RuntimeError(`data directory ${dir} is in use by another running p2pchat`);
  }
  return file;
}

async function runHistory(opts: HistoryOptions): Promise<number> {
  await ensureReadableDir(opts.dataDir);
  const passphrase = await readPassphrase(opts.passphraseFile);
  const { identity } = await openIdentity(opts.dataDir, { passphrase, create: false });
  const history = await HistoryStore.open(`${opts.dataDir}/chat_history.db`, {
    key: identity.historyKey,
  });
  try {
    const peers = await PeerBook.open(`${opts.dataDir}/peers.json`, {
      onWarning: (m) => writeStderr(`p2pchat: ${m}\n`),
    });
    try {
      await printHistory(history, peers, opts);
    } finally {
      await peers.close();
    }
  } finally {
    await history.close();
  }
  return 0;
}

async function prepareDataDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const probe = `${dir}/.write-test-${crypto.randomUUID()}`;
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new RuntimeError(`cannot use data directory ${dir}: ${reason(e)}`);
  }
}

async function ensureReadableDir(dir: string): Promise<void> {
  try {
    const info = await Deno.stat(dir);
    if (!info.isDirectory) throw new RuntimeError(`${dir} is not a directory`);
  } catch (e) {
    if (e instanceof RuntimeError || e instanceof Deno.errors.NotCapable) throw e;
    throw new RuntimeError(`cannot read data directory ${dir}: ${reason(e)}`);
  }
}

async function readPassphrase(file: string | null): Promise<string | undefined> {
  if (file === null) return undefined;
  try {
    const text = await Deno.readTextFile(file);
    const passphrase = text.replace(/\r?\n$/, "");
    if (passphrase === "") throw new RuntimeError(`passphrase file ${file} is empty`);
    return passphrase;
  } catch (e) {
    if (e instanceof RuntimeError || e instanceof Deno.errors.NotCapable) throw e;
    throw new RuntimeError(`cannot read passphrase file ${file}: ${reason(e)}`);
  }
}

function stopSignal(): { promise: Promise<void>; dispose: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => resolve = r);
  // SIGHUP: the terminal went away (its window closed); peers still get their goodbye.
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) Deno.addSignalListener(s, resolve);
  return {
    promise,
    dispose: () => {
      for (const s of signals) Deno.removeSignalListener(s, resolve);
    },
  };
}

function readEnv(): { HOME?: string; XDG_DATA_HOME?: string } {
  // Under a narrow --allow-env, reading anything else would throw; these two are granted.
  return { HOME: Deno.env.get("HOME"), XDG_DATA_HOME: Deno.env.get("XDG_DATA_HOME") };
}

function explain(e: unknown): { message: string; status: number } {
  if (e instanceof UsageError) return { message: `${e.message} (see --help)`, status: 2 };
  if (e instanceof WrongPassphraseError) {
    return { message: "wrong passphrase for this identity", status: 1 };
  }
  if (e instanceof PassphraseRequiredError) {
    return {
      message: "this identity is protected by a passphrase: give it with --passphrase-file",
      status: 1,
    };
  }
  if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
    return { message: permissionMessage(e as Error), status: 1 };
  }
  // A missing Deno permission wrapped by a module (IdentityError, DiscoveryError, ...) is still
  // a missing permission: name the flag, not the module's view of it. OS-level PermissionDenied
  // causes stay with the wrapper, whose message says which file.
  for (let c = (e as Error | undefined)?.cause, depth = 0; c && depth < 8; depth++) {
    if (c instanceof Deno.errors.NotCapable) return { message: permissionMessage(c), status: 1 };
    c = (c as Error).cause;
  }
  if (
    e instanceof RuntimeError || e instanceof IdentityError || e instanceof StoreError ||
    e instanceof DiscoveryError
  ) {
    return { message: e.message, status: 1 };
  }
  return { message: `unexpected error: ${reason(e)}`, status: 1 };
}

function permissionMessage(e: Error): string {
  // `deno run` says "run again with the --allow-X flag"; a compiled binary says "specify the
  // required permissions during compilation using `deno compile --allow-X`".
  const m =
    /Requires (\w+) access(?: to (?:"((?:[^"\\]|\\.)*)"|([^,]+)))?, (?:run again with the (--allow-[\w-]+) flag|specify the required permissions during compilation using `deno compile (--allow-[\w-]+)`)/
      .exec(e.message);
  if (m) {
    const kind = m[1];
    const what = m[2] ?? m[3];
    const flag = m[4] ?? m[5];
    // env and sys grants are lists of names: say which name is missing from the list.
    const needs = what && (kind === "env" || kind === "sys") ? `${flag}=${what}` : flag;
    return `missing permission: ${kind} access${what ? ` to ${what}` : ""} (needs ${needs})`;
  }
  if (e instanceof Deno.errors.PermissionDenied) {
    return `the operating system refused access: ${e.message.split("\n")[0]}`;
  }
  return `missing permission: ${e.message.split("\n")[0]}`;
}

function reason(e: unknown): string {
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.NotFound) return "not found";
  if (e instanceof Deno.errors.AlreadyExists) return "a file is in the way";
  if (e instanceof Error) return e.message.split("\n")[0];
  return String(e);
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  while (at < bytes.length) at += await w.write(bytes.subarray(at));
}
