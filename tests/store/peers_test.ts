import assert from "node:assert/strict";
import { PeerBook, PeerBookError, type PeerRecord } from "../../lib/store/peers.ts";

/** A fake pinned key (random bytes) and its fingerprint: the book checks only the hash. */
async function fakeKey(): Promise<{ fingerprint: string; spki: string }> {
  const der = crypto.getRandomValues(new Uint8Array(294));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", der));
  return {
    fingerprint: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
    spki: der.toBase64(),
  };
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "peers_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("PeerBook: a missing file is an empty book; records round-trip through the file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    const warnings: string[] = [];
    const book = await PeerBook.open(path, { onWarning: (m) => warnings.push(m) });
    assert.deepEqual(book.all(), []);
    const bob = await fakeKey();
    const carol = await fakeKey();
    const added = book.upsert({
      ...bob,
      name: "Bob",
      host: "192.168.1.7",
      port: 5001,
      firstSeen: 1000,
      lastSeen: 2000,
    });
    assert.deepEqual(added, {
      ...bob,
      name: "Bob",
      host: "192.168.1.7",
      port: 5001,
      firstSeen: 1000,
      lastSeen: 2000,
    });
    const before = Date.now();
    const c = book.upsert({ ...carol, name: "Carol" });
    assert.equal(c.host, null);
    assert.equal(c.port, null);
    assert.ok(c.firstSeen >= before && c.lastSeen === c.firstSeen);
    // Merging keeps what is not given.
    book.upsert({ fingerprint: bob.fingerprint, lastSeen: 3000, port: 5002 });
    await book.close();

    const doc = JSON.parse(await Deno.readTextFile(path));
    assert.equal(doc.version, 1);
    assert.equal(doc.peers.length, 2);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);

    const again = await PeerBook.open(path);
    const expected: PeerRecord = {
      ...bob,
      name: "Bob",
      host: "192.168.1.7",
      port: 5002,
      firstSeen: 1000,
      lastSeen: 3000,
    };
    assert.deepEqual(again.get(bob.fingerprint), expected);
    assert.deepEqual(again.get(carol.fingerprint), c);
    assert.deepEqual(again.all().map((r) => r.name), ["Bob", "Carol"]);
    assert.equal(again.get("0".repeat(64)), undefined);
    await again.close();
    assert.deepEqual(warnings, []);
    assert.deepEqual(await listDir(dir), ["peers.json"]);
  });
});

Deno.test("PeerBook: returned records are copies", async () => {
  await withDir(async (dir) => {
    const book = await PeerBook.open(`${dir}/peers.json`);
    const k = await fakeKey();
    const r = book.upsert({ ...k, name: "Bob" });
    r.name = "Mallory";
    book.get(k.fingerprint)!.name = "Mallory";
    book.all()[0].name = "Mallory";
    assert.equal(book.get(k.fingerprint)!.name, "Bob");
    await book.close();
  });
});

Deno.test("PeerBook: byName puts non-retired first, then the most recently seen", async () => {
  await withDir(async (dir) => {
    const book = await PeerBook.open(`${dir}/peers.json`);
    const [old, retired, current, other] = await Promise.all([
      fakeKey(),
      fakeKey(),
      fakeKey(),
      fakeKey(),
    ]);
    book.upsert({ ...retired, name: "Bob", lastSeen: 9000, retired: true });
    book.upsert({ ...old, name: "Bob", lastSeen: 1000 });
    book.upsert({ ...current, name: "Bob", lastSeen: 5000 });
    book.upsert({ ...other, name: "Bobby", lastSeen: 9999 });
    assert.deepEqual(book.byName("Bob").map((r) => r.fingerprint), [
      current.fingerprint,
      old.fingerprint,
      retired.fingerprint,
    ]);
    assert.deepEqual(book.byName("Nobody"), []);
    await book.close();
  });
});

Deno.test("PeerBook: upsert refuses records that would break the pin", async () => {
  await withDir(async (dir) => {
    const book = await PeerBook.open(`${dir}/peers.json`);
    const a = await fakeKey();
    const b = await fakeKey();
    // A new peer needs a name and a key.
    assert.throws(() => book.upsert({ fingerprint: a.fingerprint, name: "A" }), PeerBookError);
    assert.throws(() => book.upsert({ ...a }), PeerBookError);
    // The key must hash to the fingerprint.
    assert.throws(
      () => book.upsert({ fingerprint: a.fingerprint, spki: b.spki, name: "A" }),
      PeerBookError,
    );
    book.upsert({ ...a, name: "A" });
    // A pinned key never changes under its fingerprint.
    assert.throws(() => book.upsert({ fingerprint: a.fingerprint, spki: b.spki }), PeerBookError);
    // Field checks.
    assert.throws(() => book.upsert({ fingerprint: a.fingerprint, port: 70000 }), PeerBookError);
    assert.throws(() => book.upsert({ fingerprint: a.fingerprint, name: "" }), PeerBookError);
    assert.throws(
      () => book.upsert({ ...b, fingerprint: b.fingerprint.toUpperCase(), name: "B" }),
      PeerBookError,
    );
    assert.equal(book.all().length, 1);
    assert.equal(book.get(a.fingerprint)!.spki, a.spki);
    await book.close();
    assert.throws(() => book.upsert({ fingerprint: a.fingerprint, lastSeen: 1 }), PeerBookError);
  });
});

Deno.test("PeerBook: a corrupt or invalid file is set aside with a warning and the book starts empty", async () => {
  const good = await fakeKey();
  const record = { ...good, name: "Bob", host: null, port: null, firstSeen: 1, lastSeen: 2 };
  const bad: [string, string][] = [
    ["unparsable", "{not json"],
    ["empty", ""],
    ["truncated", JSON.stringify({ version: 1, peers: [record] }).slice(0, 50)],
    ["array", "[]"],
    ["version", JSON.stringify({ version: 2, peers: [record] })],
    ["peers not array", JSON.stringify({ version: 1, peers: {} })],
    ["bad fingerprint", JSON.stringify({ version: 1, peers: [{ ...record, fingerprint: "abc" }] })],
    ["key mismatch", JSON.stringify({ version: 1, peers: [{ ...record, spki: "AAAA" }] })],
    ["bad port", JSON.stringify({ version: 1, peers: [{ ...record, port: "5000" }] })],
    ["missing field", JSON.stringify({ version: 1, peers: [{ ...record, lastSeen: undefined }] })],
    ["duplicate", JSON.stringify({ version: 1, peers: [record, record] })],
    [
      "retiredBy, not retired",
      JSON.stringify({ version: 1, peers: [{ ...record, retiredBy: "ab".repeat(32) }] }),
    ],
    [
      "retiredBy itself",
      JSON.stringify({
        version: 1,
        peers: [{ ...record, retired: true, retiredBy: good.fingerprint }],
      }),
    ],
    [
      "retiredBy not hex",
      JSON.stringify({ version: 1, peers: [{ ...record, retired: true, retiredBy: "Bob" }] }),
    ],
  ];
  for (const [label, content] of bad) {
    await withDir(async (dir) => {
      const path = `${dir}/peers.json`;
      await Deno.writeTextFile(path, content);
      const warnings: string[] = [];
      const book = await PeerBook.open(path, { onWarning: (m) => warnings.push(m) });
      assert.deepEqual(book.all(), [], label);
      assert.equal(warnings.length, 1, label);
      const names = await listDir(dir);
      assert.equal(names.length, 1, label);
      assert.match(names[0], /^peers\.json\.corrupt-\d+$/, label);
      assert.ok(warnings[0].includes(names[0]), label);
      assert.equal(await Deno.readTextFile(`${dir}/${names[0]}`), content, label);
      // The book is rebuilt from scratch.
      book.upsert({ ...good, name: "Bob" });
      await book.close();
      const again = await PeerBook.open(path);
      assert.equal(again.all().length, 1, label);
      await again.close();
    });
  }
});

Deno.test("PeerBook: many upserts coalesce into a single write", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    // A long delay: nothing may be written until close(), however many changes and ticks pass.
    const book = await PeerBook.open(path, { saveDelayMs: 60_000 });
    const keys = await Promise.all(Array.from({ length: 20 }, fakeKey));
    for (let round = 0; round < 50; round++) {
      for (const [i, k] of keys.entries()) book.upsert({ ...k, name: `peer${i}`, lastSeen: round });
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.deepEqual(await listDir(dir), [], "written before the save delay");
    await book.close();
    const doc = JSON.parse(await Deno.readTextFile(path));
    assert.equal(doc.peers.length, 20);
    assert.ok(doc.peers.every((p: PeerRecord) => p.lastSeen === 49));
  });
});

Deno.test("PeerBook: background saves happen by themselves, never closer than the save delay", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    const delay = 100;
    const book = await PeerBook.open(path, { saveDelayMs: delay });
    const watcher = Deno.watchFs(dir);
    let temps = 0;
    const watching = (async () => {
      for await (const event of watcher) {
        if (event.kind === "create") {
          temps += event.paths.filter((p) => p.includes("peers.json.tmp-")).length;
        }
      }
    })();
    const k = await fakeKey();
    const started = Date.now();
    let n = 0;
    // Change the book every few ms for a while.
    while (Date.now() - started < 6 * delay) {
      // A new port each time: a change saved after the short delay (lastSeen alone waits longer).
      book.upsert({ ...k, name: "Bob", port: 1 + (++n % 60_000), lastSeen: n });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const elapsed = Date.now() - started;
    // Wait for the background save of the last change, without flushing.
    while (JSON.parse(await Deno.readTextFile(path).catch(() => "{}")).peers?.[0]?.lastSeen !== n) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const total = Date.now() - started;
    await book.close(); // nothing pending: no further write
    // Let the watcher deliver the last events before counting.
    await new Promise((resolve) => setTimeout(resolve, 50));
    watcher.close();
    await watching;
    assert.ok(n > 20, `only ${n} upserts in ${elapsed} ms`);
    assert.ok(temps >= 1, "no write seen");
    // Each write waits for the delay after the change that armed it: at most one per delay.
    assert.ok(temps <= Math.floor(total / delay) + 1, `${temps} writes in ${total} ms`);
    assert.deepEqual(await listDir(dir), ["peers.json"]);
  });
});

Deno.test("PeerBook: a lastSeen-only change waits for the long delay; a real change or close saves it sooner", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    const book = await PeerBook.open(path, { saveDelayMs: 20, lastSeenSaveDelayMs: 400 });
    const saved = async () => JSON.parse(await Deno.readTextFile(path)).peers[0];
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const k = await fakeKey();
    book.upsert({ ...k, name: "Bob", host: "127.0.0.1", port: 5001, lastSeen: 1 });
    await sleep(150);
    assert.equal((await saved()).lastSeen, 1, "a new peer is saved after the short delay");

    // Announcements heard: lastSeen moves, nothing else.
    book.upsert({ fingerprint: k.fingerprint, lastSeen: 2 });
    await sleep(150);
    assert.equal((await saved()).lastSeen, 1, "lastSeen alone is not written at once");
    await sleep(450);
    assert.equal((await saved()).lastSeen, 2, "lastSeen alone is written after the long delay");

    // A pending lastSeen change rides with the next real change.
    book.upsert({ fingerprint: k.fingerprint, lastSeen: 3 });
    await sleep(50);
    book.upsert({ fingerprint: k.fingerprint, port: 5002 });
    await sleep(150);
    assert.deepEqual([(await saved()).lastSeen, (await saved()).port], [3, 5002]);

    // And close writes whatever is pending.
    book.upsert({ fingerprint: k.fingerprint, lastSeen: 4 });
    await book.close();
    assert.equal((await saved()).lastSeen, 4);
  });
});

Deno.test("PeerBook: upserts racing with writes and concurrent flushes all land", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    const book = await PeerBook.open(path, { saveDelayMs: 1 });
    const keys = await Promise.all(Array.from({ length: 30 }, fakeKey));
    const flushes: Promise<void>[] = [];
    for (const [i, k] of keys.entries()) {
      book.upsert({ ...k, name: `peer${i}` });
      // A flush is in flight while the next upserts come in.
      if (i % 7 === 0) flushes.push(book.flush());
      if (i % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    // Several upserts to one peer before any flush: the last value of each field wins.
    book.upsert({ fingerprint: keys[0].fingerprint, host: "10.0.0.1", port: 1 });
    book.upsert({ fingerprint: keys[0].fingerprint, port: 2 });
    book.upsert({ fingerprint: keys[0].fingerprint, name: "renamed" });
    await Promise.all([...flushes, book.flush(), book.flush()]);
    await book.close();
    const again = await PeerBook.open(path);
    assert.equal(again.all().length, 30);
    assert.deepEqual(again.all().map((r) => r.fingerprint), keys.map((k) => k.fingerprint));
    const first = again.get(keys[0].fingerprint)!;
    assert.equal(first.name, "renamed");
    assert.equal(first.host, "10.0.0.1");
    assert.equal(first.port, 2);
    await again.close();
    assert.deepEqual(await listDir(dir), ["peers.json"]);
  });
});

Deno.test("PeerBook: an existing wider file mode becomes 0600 on the next write", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    await Deno.writeTextFile(path, JSON.stringify({ version: 1, peers: [] }), { mode: 0o644 });
    await Deno.chmod(path, 0o644);
    const book = await PeerBook.open(path);
    book.upsert({ ...(await fakeKey()), name: "Bob" });
    await book.close();
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("PeerBook: a failed write throws from flush, leaves no temporary file, and retries", async () => {
  await withDir(async (dir) => {
    const sub = `${dir}/data`;
    await Deno.mkdir(sub);
    const path = `${sub}/peers.json`;
    const warnings: string[] = [];
    const book = await PeerBook.open(path, {
      saveDelayMs: 60_000,
      onWarning: (m) => warnings.push(m),
    });
    book.upsert({ ...(await fakeKey()), name: "Bob" });
    // The data directory disappears: the write cannot happen.
    await Deno.remove(sub, { recursive: true });
    await assert.rejects(book.flush(), PeerBookError);
    // The change is still pending and lands once the directory is back.
    await Deno.mkdir(sub);
    await book.close();
    const again = await PeerBook.open(path);
    assert.equal(again.all().length, 1);
    await again.close();
    assert.deepEqual(await listDir(sub), ["peers.json"]);
    assert.deepEqual(warnings, []);
  });
});

Deno.test("PeerBook: heard-only until the first contact, then contacted for good; saved and read back", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    const book = await PeerBook.open(path);
    const heard = await fakeKey();
    const met = await fakeKey();
    assert.equal(book.upsert({ ...heard, name: "Heard", heardOnly: true }).heardOnly, true);
    // Heard again (no flag given, or the flag again): still heard-only.
    assert.equal(book.upsert({ fingerprint: heard.fingerprint, lastSeen: 5 }).heardOnly, true);
    assert.equal(book.upsert({ ...met, name: "Met", heardOnly: true }).heardOnly, true);
    // First contact clears it; announcements afterwards cannot set it again.
    assert.equal(
      book.upsert({ fingerprint: met.fingerprint, heardOnly: false }).heardOnly,
      undefined,
    );
    assert.equal(
      book.upsert({ fingerprint: met.fingerprint, heardOnly: true }).heardOnly,
      undefined,
    );
    // A record created by a contact is never heard-only.
    const direct = await fakeKey();
    assert.equal(book.upsert({ ...direct, name: "Direct" }).heardOnly, undefined);
    await book.close();

    const again = await PeerBook.open(path);
    try {
      assert.equal(again.get(heard.fingerprint)?.heardOnly, true);
      assert.equal(again.get(met.fingerprint)?.heardOnly, undefined);
    } finally {
      await again.close();
    }
    // A bad flag makes the file invalid like any other bad field.
    const doc = JSON.parse(await Deno.readTextFile(path));
    doc.peers[0].heardOnly = "yes";
    await Deno.writeTextFile(path, JSON.stringify(doc));
    const warnings: string[] = [];
    const broken = await PeerBook.open(path, { onWarning: (m) => warnings.push(m) });
    assert.deepEqual(broken.all(), []);
    assert.match(warnings.join(), /heardOnly is not boolean/);
    await broken.close();
  });
});

Deno.test("PeerBook: prune forgets the heard-only peers first heard last, never protected ones or contacts", async () => {
  await withDir(async (dir) => {
    const book = await PeerBook.open(`${dir}/peers.json`);
    try {
      const contact = await fakeKey();
      book.upsert({ ...contact, name: "Contact", firstSeen: 1_000, lastSeen: 1 });
      const heard: { fingerprint: string; spki: string }[] = [];
      // Added out of firstSeen order, and seen last in the opposite order: only firstSeen counts.
      for (const i of [3, 0, 9, 5, 1, 8, 2, 7, 4, 6]) {
        const k = await fakeKey();
        heard[i] = k;
        book.upsert({
          ...k,
          name: `H${i}`,
          firstSeen: 100 + i,
          lastSeen: 200 - i,
          heardOnly: true,
        });
      }
      assert.deepEqual(book.prune(10, () => false), []);
      // Over by 4: H6 to H9, first heard last, go, newest first; H8 is online (protected) and
      // stays over the bound rather than push out H5, which we knew before it.
      const online = new Set([heard[8].fingerprint]);
      const removed = book.prune(6, (fp) => online.has(fp));
      assert.deepEqual(removed.map((r) => r.name), ["H9", "H7", "H6"]);
      assert.deepEqual(
        book.all().map((r) => r.name).sort(),
        ["Contact", "H0", "H1", "H2", "H3", "H4", "H5", "H8"],
      );
      // Offline now, H8 is the one over the bound.
      assert.deepEqual(book.prune(6, () => false).map((r) => r.name), ["H8"]);
      // Everything protected: nothing to remove, the bound waits for them to go offline.
      assert.deepEqual(book.prune(0, () => true), []);
      assert.deepEqual(
        book.prune(0, () => false).map((r) => r.name),
        ["H5", "H4", "H3", "H2", "H1", "H0"],
      );
      assert.deepEqual(book.all().map((r) => r.name), ["Contact"]);
    } finally {
      await book.close();
    }
  });
});

Deno.test("PeerBook: older heard-only peers survive a flood of newer ones, online or gone", async () => {
  await withDir(async (dir) => {
    const book = await PeerBook.open(`${dir}/peers.json`);
    try {
      const max = 8;
      // Peers heard long ago, offline for a day since: the old lastSeen order evicted them first.
      const old: string[] = [];
      for (let i = 0; i < 5; i++) {
        const k = await fakeKey();
        old.push(k.fingerprint);
        book.upsert({
          ...k,
          name: `Old${i}`,
          firstSeen: 1_000 + i,
          lastSeen: 2_000,
          heardOnly: true,
        });
      }
      // A flood of fresh keys, all first heard in the same millisecond (ties go by arrival), each
      // online while announcing and pruned for as it is heard, as ChatNode does.
      const online = new Set<string>();
      const flood: string[] = [];
      const keep = (fp: string) => online.has(fp);
      for (let i = 0; i < 40; i++) {
        const k = await fakeKey();
        flood.push(k.fingerprint);
        online.add(k.fingerprint);
        book.upsert({
          ...k,
          name: `Minted${i}`,
          firstSeen: 90_000,
          lastSeen: 90_000,
          heardOnly: true,
        });
        assert.deepEqual(book.prune(max, keep), [], "an online flood pushes nobody out");
      }
      // Then the flood stops and times out, peer by peer, pruned at each.
      const removed: string[] = [];
      for (const fp of flood) {
        online.delete(fp);
        removed.push(...book.prune(max, keep).map((r) => r.fingerprint));
      }
      const left = book.all().map((r) => r.fingerprint);
      for (const fp of old) assert.ok(left.includes(fp), "a peer known before the flood stays");
      assert.deepEqual(left, [...old, ...flood.slice(0, max - old.length)]);
      assert.deepEqual(removed.sort(), flood.slice(max - old.length).sort());
    } finally {
      await book.close();
    }
  });
});

Deno.test("PeerBook: retiredBy is kept while retired, read back, and dropped when trusted again", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/peers.json`;
    const [old, next] = await Promise.all([fakeKey(), fakeKey()]);
    const book = await PeerBook.open(path);
    book.upsert({ ...old, name: "Bob" });
    book.upsert({ ...next, name: "Bob" });
    book.upsert({ fingerprint: old.fingerprint, retired: true, retiredBy: next.fingerprint });
    // A later change of another field keeps the link.
    book.upsert({ fingerprint: old.fingerprint, lastSeen: 5 });
    await book.close();
    const again = await PeerBook.open(path);
    const read = again.get(old.fingerprint)!;
    assert.equal(read.retired, true);
    assert.equal(read.retiredBy, next.fingerprint);
    // Trusted again: no longer retired, so no longer replaced by anyone.
    again.upsert({ fingerprint: old.fingerprint, retired: false });
    assert.equal(again.get(old.fingerprint)!.retiredBy, undefined);
    await again.close();
    const third = await PeerBook.open(path);
    assert.equal(third.get(old.fingerprint)!.retiredBy, undefined);
    await third.close();
  });
});
