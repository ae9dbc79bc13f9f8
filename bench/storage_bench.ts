/**
 * The storage limit and the history store against it: raw SQLite commits (one row, WAL, with
 * and without an fsync per commit) and batched inserts, then {@linkcode HistoryStore} (Fernet
 * at rest, group commit) storing incoming messages the way a receiving peer does.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { generateKey } from "../lib/crypto/fernet.ts";
import { newMessageId } from "../lib/protocol/messages.ts";
import { HistoryStore } from "../lib/store/history.ts";
import type { JobOptions } from "./crypto_bench.ts";
import { type FigureBook, ratio } from "./report.ts";
import { summarize } from "./stats.ts";

/**
 * Adds `sqlite.commit.full.p50`, `sqlite.commit.normal.p50` (ms), `sqlite.insert.rate` and
 * `store.incoming.rate` (rows/s).
 *
 * @throws {Error} when SQLite fails.
 */
export async function benchStorage(book: FigureBook, opts: JobOptions): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat-bench-store-" });
  try {
    for (const sync of ["FULL", "NORMAL"] as const) {
      const db = new DatabaseSync(`${dir}/raw-${sync}.db`);
      db.exec("PRAGMA journal_mode = WAL");
      db.exec(`PRAGMA synchronous = ${sync}`);
      db.exec("CREATE TABLE m (id TEXT PRIMARY KEY, body TEXT NOT NULL)");
      const insert = db.prepare("INSERT INTO m (id, body) VALUES (?, ?)");
      const body = "x".repeat(200);
      const samples: number[] = [];
      for (let i = 0; i < (opts.quick ? 300 : 1000); i++) {
        const t = performance.now();
        db.exec("BEGIN IMMEDIATE");
        insert.run(newMessageId(), body);
        db.exec("COMMIT");
        samples.push(performance.now() - t);
      }
      const s = summarize(samples);
      book.add({
        id: `sqlite.commit.${sync.toLowerCase()}.p50`,
        group: "limits",
        label: `SQLite commit of 1 row, WAL, synchronous=${sync}, p50`,
        value: s.p50,
        unit: "ms",
        note: `p99 ${s.p99.toFixed(3)} ms` + (sync === "FULL" ? "; an fsync per commit" : ""),
      });
      if (sync === "FULL") {
        const rows = opts.quick ? 20_000 : 100_000;
        const t = performance.now();
        for (let i = 0; i < rows; i += 500) {
          db.exec("BEGIN IMMEDIATE");
          for (let j = 0; j < 500; j++) insert.run(newMessageId(), body);
          db.exec("COMMIT");
        }
        const rate = rows / ((performance.now() - t) / 1000);
        book.add({
          id: "sqlite.insert.rate",
          group: "limits",
          label: "SQLite inserts, 500 per commit, synchronous=FULL",
          value: rate,
          unit: "row/s",
        });
      }
      db.close();
    }

    // The history store as a receiver uses it: many recordIncoming at once, group-committed.
    const store = await HistoryStore.open(`${dir}/history.db`, { key: generateKey() });
    try {
      const count = opts.quick ? 5_000 : 20_000;
      const peer = "ab".repeat(32);
      const text = "z".repeat(100);
      const burst = async (n: number) => {
        const now = Date.now();
        await Promise.all(Array.from({ length: n }, () =>
          store.recordIncoming({
            id: newMessageId(),
            peer,
            peerName: "Alice",
            text,
            sentAt: now,
            receivedAt: now,
          })));
      };
      await burst(500);
      const t = performance.now();
      for (let i = 0; i < count; i += 200) await burst(200);
      const rate = count / ((performance.now() - t) / 1000);
      book.add({
        id: "store.incoming.rate",
        group: "pipeline",
        label: "HistoryStore.recordIncoming 100 B (Fernet at rest + group commit)",
        value: rate,
        unit: "msg/s",
        ratio: ratio(rate, book.get("sqlite.insert.rate")),
        note: "bursts of 200 as a receiving session hands them over",
      });
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
