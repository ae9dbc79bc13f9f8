import assert from "node:assert/strict";
import { CommandError, parseCommand, readLineBatches, readLines } from "../../lib/ui/headless.ts";

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const chunk of chunks) c.enqueue(chunk);
      c.close();
    },
  });
}

async function collect(chunks: Uint8Array[]): Promise<string[]> {
  const out: string[] = [];
  for await (const line of readLines(streamOf(chunks))) out.push(line);
  return out;
}

Deno.test("headless: commands parse", () => {
  assert.deepEqual(parseCommand("/connect 127.0.0.1:5000"), {
    kind: "connect",
    address: "127.0.0.1:5000",
  });
  assert.deepEqual(parseCommand("/send Bob  hello   there "), {
    kind: "send",
    peer: "Bob",
    text: "hello   there",
  });
  assert.deepEqual(parseCommand("/peers"), { kind: "peers" });
  assert.deepEqual(parseCommand("/history Bob"), { kind: "history", peer: "Bob", limit: 50 });
  assert.deepEqual(parseCommand("/history Bob 7"), { kind: "history", peer: "Bob", limit: 7 });
  assert.deepEqual(parseCommand("/history Bob 100000"), {
    kind: "history",
    peer: "Bob",
    limit: 100_000,
  });
  assert.deepEqual(parseCommand("/trust Bob abcd"), {
    kind: "trust",
    peer: "Bob",
    fingerprint: "abcd",
  });
  assert.deepEqual(parseCommand("/quit"), { kind: "quit" });
  assert.deepEqual(parseCommand("/quit now please"), { kind: "quit" });
  assert.equal(parseCommand("   "), null);
  // Any whitespace separates words, tabs too, and runs of it count once.
  assert.deepEqual(parseCommand("\t/send\tBob\thi there"), {
    kind: "send",
    peer: "Bob",
    text: "hi there",
  });
  assert.deepEqual(parseCommand("/connect   127.0.0.1:5000  "), {
    kind: "connect",
    address: "127.0.0.1:5000",
  });
  assert.deepEqual(parseCommand("/history\t Bob \t 3"), { kind: "history", peer: "Bob", limit: 3 });
});

Deno.test("headless: bad commands are CommandErrors", () => {
  for (
    const line of [
      "hi",
      "/nope",
      "/send",
      "/send Bob",
      "/connect",
      "/connect a b",
      "/peers x",
      "/peers\tx",
      "/send\tBob",
      "/history",
      "/history Bob 0",
      "/history Bob x",
      "/history Bob 1e2",
      "/history Bob 0x10",
      "/history Bob +5",
      "/history Bob 100001",
      "/trust Bob",
    ]
  ) {
    assert.throws(() => parseCommand(line), CommandError, line);
  }
});

Deno.test("headless: lines survive any chunking, CRLF and multi-byte characters", async () => {
  const text = "/send Bob héllo 👋\r\n/peers\n\n/history Bob 3\n/quit";
  const bytes = new TextEncoder().encode(text);
  const expected = ["/send Bob héllo 👋", "/peers", "", "/history Bob 3", "/quit"];
  for (let cut = 0; cut <= bytes.length; cut++) {
    assert.deepEqual(
      await collect([bytes.slice(0, cut), bytes.slice(cut)]),
      expected,
      `cut ${cut}`,
    );
  }
  assert.deepEqual(await collect([...bytes].map((b) => new Uint8Array([b]))), expected);
});

Deno.test("headless: a reader that stops early cancels its input; one that ends does not", async () => {
  let cancelled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(new TextEncoder().encode("/peers\n"));
    },
    cancel() {
      cancelled++;
    },
  });
  const lines = readLineBatches(endless);
  assert.deepEqual((await lines.next()).value, ["/peers"]);
  await lines.return(undefined);
  assert.equal(cancelled, 1);

  let cancelledAtEnd = 0;
  const finite = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode("/peers\n/quit"));
      c.close();
    },
    cancel() {
      cancelledAtEnd++;
    },
  });
  const all: string[][] = [];
  for await (const b of readLineBatches(finite)) all.push(b);
  assert.deepEqual(all, [["/peers"], ["/quit"]]);
  assert.equal(cancelledAtEnd, 0);
});

/** A source like Deno.stdin: each read copies the next chunk into the caller's buffer. */
function readerOf(chunks: Uint8Array[]) {
  let next = 0;
  return {
    read(buffer: Uint8Array): Promise<number | null> {
      if (next === chunks.length) return Promise.resolve(null);
      const chunk = chunks[next++];
      buffer.set(chunk);
      return Promise.resolve(chunk.length);
    },
  };
}

Deno.test("headless: a reading source (as Deno.stdin) gives the same lines as a stream", async () => {
  const text = "/send Bob héllo 👋\r\n/peers\n\n/history Bob 3\n/quit";
  const bytes = new TextEncoder().encode(text);
  const expected = ["/send Bob héllo 👋", "/peers", "", "/history Bob 3", "/quit"];
  const read = async (chunks: Uint8Array[]) => {
    const out: string[] = [];
    for await (const line of readLines(readerOf(chunks))) out.push(line);
    return out;
  };
  // The source reuses one buffer for every read: lines must not keep bytes of an earlier read.
  for (let cut = 0; cut <= bytes.length; cut++) {
    assert.deepEqual(await read([bytes.slice(0, cut), bytes.slice(cut)]), expected, `cut ${cut}`);
  }
  assert.deepEqual(await read([...bytes].map((b) => new Uint8Array([b]))), expected);
});

Deno.test("headless: a chunk of many lines comes as one batch", async () => {
  const lines = Array.from({ length: 1000 }, (_, i) => `/send Bob ${i}`);
  const batches: string[][] = [];
  const stream = streamOf([new TextEncoder().encode(lines.join("\n") + "\n")]);
  for await (const b of readLineBatches(stream)) batches.push(b);
  assert.equal(batches.length, 1);
  assert.deepEqual(batches[0], lines);
});

Deno.test("headless: a line over the limit is dropped and reported in its place, across chunks", async () => {
  const long = "/send Bob " + "x".repeat(100);
  const text = `/peers\n${long}\n/quit\n${"y".repeat(30)}`;
  const bytes = new TextEncoder().encode(text);
  for (const size of [1, 7, 64, bytes.length]) {
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < bytes.length; at += size) chunks.push(bytes.slice(at, at + size));
    const seen: string[] = [];
    const lines = readLineBatches(streamOf(chunks), {
      maxLineLength: 20,
      onOverlong: (head, length) => seen.push(`overlong ${length} ${head}`),
    });
    for await (const batch of lines) seen.push(...batch);
    assert.deepEqual(
      seen,
      [
        "/peers",
        `overlong ${long.length} ${long.slice(0, 20)}`,
        "/quit",
        "overlong 30 " +
        "y".repeat(20),
      ],
      `chunks of ${size}`,
    );
  }
  // At the limit exactly: kept whole, also when it comes in pieces.
  const exact = "z".repeat(20);
  const chunks = [...exact + "\n"].map((c) => new TextEncoder().encode(c));
  const out: string[] = [];
  for await (const b of readLineBatches(streamOf(chunks), { maxLineLength: 20 })) out.push(...b);
  assert.deepEqual(out, [exact]);
});

Deno.test("headless: a long line in many chunks comes whole", async () => {
  const line = "/send Bob " + "é".repeat(300_000);
  const bytes = new TextEncoder().encode(line + "\n/peers\n");
  const chunks: Uint8Array[] = [];
  // Odd chunk sizes: some cut a character in two.
  for (let at = 0; at < bytes.length; at += 4099) chunks.push(bytes.slice(at, at + 4099));
  assert.deepEqual(await collect(chunks), [line, "/peers"]);
});
