/**
 * The network limits on this machine: plain loopback TCP between two Deno sockets, with no
 * framing, crypto or storage. Round trips of 100 B (ping-pong), the message rate of 100-byte
 * writes, and bulk throughput.
 *
 * @module
 */

import type { JobOptions } from "./crypto_bench.ts";
import type { FigureBook } from "./report.ts";
import { summarize } from "./stats.ts";

/** A connected TCP pair on 127.0.0.1; `close` closes both ends. */
export async function tcpPair(): Promise<{ a: Deno.TcpConn; b: Deno.TcpConn; close(): void }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const a = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  const b = await accepted;
  listener.close();
  a.setNoDelay(true);
  b.setNoDelay(true);
  return {
    a,
    b,
    close() {
      a.close();
      b.close();
    },
  };
}

async function readExactly(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  let at = 0;
  while (at < buf.length) {
    const n = await conn.read(buf.subarray(at));
    if (n === null) throw new Error("unexpected end of stream");
    at += n;
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

/**
 * Adds `tcp.rtt.p50`, `tcp.rtt.p99` (ms), `tcp.msgrate.100B` (msg/s) and `tcp.bulk` (MB/s).
 *
 * @throws {Error} when a socket fails.
 */
export async function benchTcp(book: FigureBook, opts: JobOptions): Promise<void> {
  // Ping-pong: 100 B there, 100 B back, one at a time.
  {
    const { a, b, close } = await tcpPair();
    const rounds = opts.quick ? 2000 : 10_000;
    const echo = (async () => {
      const buf = new Uint8Array(100);
      for (let i = 0; i < rounds + 200; i++) {
        await readExactly(b, buf);
        await writeAll(b, buf);
      }
    })();
    const out = new Uint8Array(100);
    const back = new Uint8Array(100);
    const samples: number[] = [];
    for (let i = 0; i < rounds + 200; i++) {
      const t = performance.now();
      await writeAll(a, out);
      await readExactly(a, back);
      if (i >= 200) samples.push(performance.now() - t);
    }
    await echo;
    close();
    const s = summarize(samples);
    book.add({
      id: "tcp.rtt.p50",
      group: "limits",
      label: "raw TCP round trip 100 B p50",
      value: s.p50,
      unit: "ms",
      note: `${s.n} round trips over loopback, plain Deno.Conn read/write`,
    });
    book.add({
      id: "tcp.rtt.p99",
      group: "limits",
      label: "raw TCP round trip 100 B p99",
      value: s.p99,
      unit: "ms",
    });
  }
  // Message rate: one 100-byte write per message, the reader drains.
  {
    const { a, b, close } = await tcpPair();
    const count = opts.quick ? 20_000 : 100_000;
    const total = count * 100;
    const drain = (async () => {
      const buf = new Uint8Array(64 * 1024);
      let got = 0;
      while (got < total) {
        const n = await b.read(buf);
        if (n === null) throw new Error("unexpected end of stream");
        got += n;
      }
    })();
    const msg = new Uint8Array(100);
    const t = performance.now();
    for (let i = 0; i < count; i++) await writeAll(a, msg);
    await drain;
    const secs = (performance.now() - t) / 1000;
    close();
    book.add({
      id: "tcp.msgrate.100B",
      group: "limits",
      label: "raw TCP 100 B writes",
      value: count / secs,
      unit: "msg/s",
      note: "one write() per 100-byte message, no batching",
    });
  }
  // Bulk: 64 KiB writes.
  {
    const { a, b, close } = await tcpPair();
    const chunk = new Uint8Array(64 * 1024);
    const total = (opts.quick ? 128 : 512) * 1024 * 1024;
    const drain = (async () => {
      const buf = new Uint8Array(256 * 1024);
      let got = 0;
      while (got < total) {
        const n = await b.read(buf);
        if (n === null) throw new Error("unexpected end of stream");
        got += n;
      }
    })();
    const t = performance.now();
    for (let sent = 0; sent < total; sent += chunk.length) await writeAll(a, chunk);
    await drain;
    const secs = (performance.now() - t) / 1000;
    close();
    book.add({
      id: "tcp.bulk",
      group: "limits",
      label: "raw TCP throughput (64 KiB writes)",
      value: total / secs / 1e6,
      unit: "MB/s",
    });
  }
}
