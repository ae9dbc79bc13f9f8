/**
 * One end of the delivery floor (see `floor_bench.ts`): the hops a delivery makes, with nothing
 * of p2pchat in them. No framing, crypto, SQLite or JSON: only the pipes, loopback sockets,
 * page writes and fdatasyncs (on Deno's blocking pool, as the history store does them) that any
 * implementation of "stored and acknowledged on both ends, driven through stdin/stdout" makes.
 *
 *     deno run --allow-net=127.0.0.1 --allow-read --allow-write bench/floor_peer.ts \
 *       receiver FILE [--no-fsync]        # prints its port, then serves one sender
 *     ... bench/floor_peer.ts sender FILE PORT [--no-fsync]   # prints "ready", then one line
 *                                                          # out for each line in
 *
 * The sender, for each stdin line: writes 4 pages to its file (the commit of an outgoing row
 * touches 4 pages), starts their fdatasync, sends 100 bytes; once the receiver's 4-byte ACK is
 * in and its own fdatasync done, writes a line to stdout. The receiver, for each 100 bytes:
 * writes 3 pages (an incoming row touches 3), fdatasyncs them, answers the ACK.
 *
 * @module
 */

const PAGE = new Uint8Array(4096).fill(0x5a);
/** Pages the writes cycle through, like a WAL that restarts after each checkpoint. */
const CYCLE = 1000;

/** A file of CYCLE pages, overwritten in place page by page. */
class PageFile {
  #file: Deno.FsFile;
  #next = 0;
  readonly fsync: boolean;

  constructor(path: string, fsync: boolean) {
    this.#file = Deno.openSync(path, { read: true, write: true, create: true, truncate: true });
    for (let i = 0; i < CYCLE; i++) this.#file.writeSync(PAGE);
    this.#file.syncSync();
    this.fsync = fsync;
  }

  /** Writes `pages` pages (in the page cache) and returns their fdatasync. */
  commit(pages: number): Promise<void> {
    if (this.#next + pages > CYCLE) this.#next = 0;
    this.#file.seekSync(this.#next * PAGE.length, Deno.SeekMode.Start);
    for (let i = 0; i < pages; i++) this.#file.writeSync(PAGE);
    this.#next += pages;
    return this.fsync ? this.#file.syncData() : Promise.resolve();
  }

  close(): void {
    this.#file.close();
  }
}

async function readExactly(conn: Deno.Conn, buf: Uint8Array): Promise<boolean> {
  let at = 0;
  while (at < buf.length) {
    const n = await conn.read(buf.subarray(at));
    if (n === null) return false;
    at += n;
  }
  return true;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

const encoder = new TextEncoder();

function say(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let at = 0;
  while (at < bytes.length) at += Deno.stdout.writeSync(bytes.subarray(at));
}

async function receiver(file: PageFile): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  say(String((listener.addr as Deno.NetAddr).port));
  const conn = await listener.accept();
  listener.close();
  conn.setNoDelay(true);
  const message = new Uint8Array(100);
  const ack = new Uint8Array(4);
  while (await readExactly(conn, message)) {
    await file.commit(3);
    await writeAll(conn, ack);
  }
  conn.close();
}

async function sender(file: PageFile, port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const message = new Uint8Array(100).fill(0x61);
  const ack = new Uint8Array(4);
  say("ready");
  const decoder = new TextDecoder();
  let partial = "";
  // Deno.stdin.read, as p2pchat reads it: the cheapest way, so that the floor stays a floor.
  const chunk = new Uint8Array(64 * 1024);
  for (let n; (n = await Deno.stdin.read(chunk)) !== null;) {
    const text = partial + decoder.decode(chunk.subarray(0, n), { stream: true });
    const lines = text.split("\n");
    partial = lines.pop()!;
    for (const _ of lines) {
      const durable = file.commit(4);
      await writeAll(conn, message);
      if (!await readExactly(conn, ack)) throw new Error("receiver went away");
      await durable;
      say("delivered");
    }
  }
  conn.close();
}

if (import.meta.main) {
  const [role, path, third] = Deno.args;
  const file = new PageFile(path, !Deno.args.includes("--no-fsync"));
  try {
    if (role === "receiver") await receiver(file);
    else if (role === "sender") await sender(file, Number(third));
    else throw new Error(`unknown role ${role}`);
  } finally {
    file.close();
  }
}
