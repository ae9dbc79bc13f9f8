/**
 * The delivery floor of `deno task bench` (bench/floor_bench.ts): two raw processes make the hops
 * of a delivery, one line out for each line in. No assertion on speed, only that every round is
 * measured and the processes clean up.
 */

import assert from "node:assert/strict";
import { benchFloor, measureFloor } from "../../bench/floor_bench.ts";
import { FigureBook } from "../../bench/report.ts";

Deno.test("floor: one measured round per line, with and without fsync", async () => {
  for (const fsync of [true, false]) {
    const s = await measureFloor(30, { fsync, warm: 5 });
    assert.equal(s.n, 30);
    assert.ok(s.p50 > 0 && s.p50 <= s.p99, JSON.stringify(s));
  }
});

Deno.test("floor: the bench job adds its four figures under the limits", async () => {
  const book = new FigureBook();
  await benchFloor(book, { quick: true });
  const ids = book.all().map((f) => f.id);
  assert.deepEqual(ids, [
    "delivery.floor.p50",
    "delivery.floor.p99",
    "delivery.floor.normal.p50",
    "delivery.floor.normal.p99",
  ]);
  for (const f of book.all()) assert.equal(f.group, "limits");
});

Deno.test("floor: a floor process that cannot start is an error, not a hang", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The receiver cannot create its file inside a path that is a file.
    await Deno.writeTextFile(`${dir}/blocker`, "");
    const s = await measureFloor(1, { fsync: true, warm: 0, dir: `${dir}/blocker` }).then(
      () => null,
      (e: Error) => e,
    );
    assert.ok(s instanceof Error);
    assert.match(s.message, /floor process exited early: .*Not a directory/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
