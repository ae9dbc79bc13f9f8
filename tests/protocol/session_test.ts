import assert from "node:assert/strict";
import { testIdentities } from "../_helpers/identities.ts";
import { FramedConn } from "../../lib/net/conn.ts";
import { initiateHandshake, respondHandshake } from "../../lib/protocol/handshake.ts";
import { newMessageId } from "../../lib/protocol/messages.ts";
import {
  type CloseReason,
  type IncomingMessage,
  Session,
  type SessionOptions,
} from "../../lib/protocol/session.ts";
import { type FrameHook, startProxy } from "../_helpers/proxy.ts";

// RSA key generation is slow: these identities serve every test.
const [alice, bob] = await testIdentities(2, "p2pchat-session-");

interface Side {
  session: Session;
  messages: IncomingMessage[];
  acks: string[];
  closed: Promise<{ reason: CloseReason; detail: string }>;
}

function attach(session: Session): Side {
  const side = { session, messages: [], acks: [] } as unknown as Side;
  side.closed = new Promise((resolve) => {
    session.start({
      onMessages: async (ms) => {
        side.messages.push(...ms);
        await session.sendAck(ms.map((m) => m.id)).catch(() => {});
      },
      onAck: (ids) => side.acks.push(...ids),
      onClose: (reason, detail) => resolve({ reason, detail }),
    });
  });
  return side;
}

/**
 * Alice dials Bob (through a frame proxy when `hook` is given); returns both running sides. Bob's
 * side is started by `attachBob` (default: reads, stores at once and acknowledges).
 */
async function pair(
  hook?: FrameHook,
  opts: SessionOptions = {},
  attachBob = attach,
  bobOpts: SessionOptions = opts,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const proxy = hook ? startProxy({ hostname: "127.0.0.1", port }, hook) : null;
  const accepted = listener.accept();
  const client = new FramedConn(
    await Deno.connect({ hostname: "127.0.0.1", port: proxy?.port ?? port }),
  );
  const server = new FramedConn(await accepted);
  listener.close();
  const [hi, hr] = await Promise.all([
    initiateHandshake(client, alice, { name: "Alice", listenPort: 1 }),
    respondHandshake(server, bob, { name: "Bob", listenPort: 2 }),
  ]);
  const [si, sr] = await Promise.all([
    Session.establish(client, hi, opts),
    Session.establish(server, hr, bobOpts),
  ]);
  const a = attach(si);
  const b = attachBob(sr);
  const cleanup = async () => {
    await a.session.close();
    await b.session.close();
    await Promise.all([a.session.done, b.session.done]);
    await proxy?.close();
  };
  return { a, b, cleanup };
}

/** `p`, or a clear failure after `ms` instead of a test that hangs. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("session: messages flow both ways in order, and are acknowledged", async () => {
  const { a, b, cleanup } = await pair();
  try {
    const sent: string[] = [];
    for (let i = 0; i < 200; i++) {
      const id = newMessageId();
      sent.push(id);
      a.session.sendMessage(id, `message ${i}`, Date.now());
    }
    await b.session.sendMessage(newMessageId(), "hello Alice", 42);
    await until(() => b.messages.length === 200 && a.acks.length === 200, "200 messages + acks");
    assert.deepEqual(b.messages.map((m) => m.id), sent);
    assert.deepEqual(a.acks, sent);
    assert.equal(b.messages[7].text, "message 7");
    await until(() => a.messages.length === 1, "Bob's message");
    assert.deepEqual(a.messages[0].text, "hello Alice");
    assert.equal(a.messages[0].sentAt, 42);
    assert.equal(a.session.peerName, "Bob");
    assert.equal(b.session.peerFingerprint, alice.fingerprint);
  } finally {
    await cleanup();
  }
});

Deno.test("session: messages sent in one task share a MSG frame; more than fit go in several, in order", async () => {
  const frames: number[] = [];
  const { a, b, cleanup } = await pair((d, i, f) => {
    if (d === "c->s" && i >= 3) frames.push(f.length);
    return [f];
  });
  try {
    const sent: string[] = [];
    const written: Promise<void>[] = [];
    // 2500 short messages in one task: 1024 fit in a frame (MAX_BATCH_MESSAGES).
    for (let i = 0; i < 2500; i++) {
      const id = newMessageId();
      sent.push(id);
      written.push(a.session.sendMessage(id, `burst ${i}`, i));
    }
    await Promise.all(written);
    await until(() => a.acks.length === 2500, "2500 acks");
    assert.deepEqual(b.messages.map((m) => m.id), sent);
    assert.deepEqual(b.messages.map((m) => m.sentAt), sent.map((_, i) => i));
    assert.deepEqual(a.acks, sent);
    assert.equal(frames.length, 3, `MSG frames: ${frames.length}`);

    // A message in a later task is a frame of its own, sent without waiting for more.
    await a.session.sendMessage(newMessageId(), "alone", 1);
    await until(() => b.messages.length === 2501, "the lone message");
    assert.equal(frames.length, 4);

    // An ACK (or any other frame) asked for after messages leaves after them.
    const late = newMessageId();
    const msg = a.session.sendMessage(late, "before the ack", 1);
    const ack = a.session.sendAck([newMessageId()]);
    await Promise.all([msg, ack]);
    await until(() => b.messages.length === 2502, "the message before the ack");
    assert.equal(b.messages.at(-1)!.id, late);

    // A bad message is refused at once and takes nothing down.
    await assert.rejects(a.session.sendMessage("nope", "x", 1), RangeError);
    await a.session.sendMessage(newMessageId(), "still fine", 1);
    await until(() => b.messages.length === 2503, "the message after a refused one");
  } finally {
    await cleanup();
  }
});

Deno.test("session: more messages at once than the connection may queue wait in the session, in order", async () => {
  const { a, b, cleanup } = await pair();
  try {
    // 24 MiB of messages in one task: handed to the connection at once, they would pass its
    // 16 MiB limit for a peer that does not read, and the session would be closed.
    const text = "q".repeat(4000);
    const sent: string[] = [];
    const written: Promise<void>[] = [];
    for (let i = 0; i < 6000; i++) {
      const id = newMessageId();
      sent.push(id);
      written.push(a.session.sendMessage(id, text, i));
    }
    await Promise.all(written);
    await until(() => a.acks.length === sent.length, "every message acknowledged", 30_000);
    assert.ok(!a.session.closed && !b.session.closed, "the session stayed open");
    assert.deepEqual(b.messages.map((m) => m.id), sent);
    assert.deepEqual(a.acks, sent);
  } finally {
    await cleanup();
  }
});

Deno.test("session: an ACK of more than 4096 ids goes out in several frames", async () => {
  const { a, b, cleanup } = await pair();
  try {
    const ids = Array.from({ length: 9000 }, newMessageId);
    await b.session.sendAck(ids);
    await until(() => a.acks.length === 9000, "9000 acked ids");
    assert.deepEqual(a.acks, ids);
  } finally {
    await cleanup();
  }
});

Deno.test("session: a graceful close reaches the peer as bye", async () => {
  const { a, b, cleanup } = await pair();
  await a.session.close("closed", "see you");
  const { reason, detail } = await b.closed;
  assert.equal(reason, "bye");
  assert.equal(detail, "see you");
  await cleanup();
});

for (
  const [name, hook] of [
    ["a replayed frame", (d, i, f) => d === "c->s" && i === 5 ? [f, f] : [f]],
    [
      "reordered frames",
      (() => {
        let held: Uint8Array | null = null;
        return (d: string, i: number, f: Uint8Array) => {
          if (d !== "c->s") return [f];
          if (i === 5) {
            held = f;
            return [];
          }
          if (i === 6) return [f, held!];
          return [f];
        };
      })(),
    ],
    ["a dropped frame", (d, i, f) => d === "c->s" && i === 5 ? [] : [f]],
    [
      "a tampered token",
      (d, i, f) => {
        // A character in the middle of the token: every one of its bits is data. (Near the
        // end, a character of the last base64 group may hold only padding bits, which decoders
        // ignore, as Python's does: changing those changes no byte.)
        const k = f.length >> 1;
        if (d === "c->s" && i === 5) f[k] = f[k] === 65 ? 66 : 65;
        return [f];
      },
    ],
    ["random bytes", (d, i, f) => d === "c->s" && i === 5 ? [crypto.getRandomValues(f)] : [f]],
  ] as [string, FrameHook][]
) {
  Deno.test(`session: ${name} closes the session as a protocol violation`, async () => {
    // Frames c->s: 0 HELLO, 1 AUTH, 2 READY, then messages from 3 on.
    const { a, b, cleanup } = await pair(hook);
    try {
      // One message per task, so each travels in a frame of its own.
      for (let i = 0; i < 6; i++) {
        await a.session.sendMessage(newMessageId(), `m${i}`, Date.now()).catch(() => {});
      }
      const closed = await within(b.closed, 10_000, "the protocol violation to close the session");
      assert.equal(closed.reason, "protocol", closed.detail);
      assert.ok(b.messages.length <= 2, "nothing after the bad frame is accepted");
      for (const m of b.messages) assert.match(m.text, /^m[01]$/);
    } finally {
      await cleanup();
    }
  });
}

Deno.test("session: a peer that goes silent is closed as idle; pings keep a quiet one open", async () => {
  let silence = false;
  const { a, b, cleanup } = await pair(
    (d, _i, f) => (silence && d === "s->c" ? [] : [f]),
    { keepaliveMs: 60, idleTimeoutMs: 300 },
  );
  try {
    // Quiet but alive: pings and pongs keep both open well past the idle timeout.
    await new Promise((r) => setTimeout(r, 700));
    assert.ok(!a.session.closed && !b.session.closed);
    silence = true;
    const closed = await a.closed;
    assert.equal(closed.reason, "idle");
  } finally {
    await cleanup();
  }
});

/** Starts Bob's side with a store of its own: `store` resolves when his messages are durable. */
function attachStoring(store: (ms: IncomingMessage[]) => Promise<void>) {
  return (session: Session): Side => {
    const side = { session, messages: [], acks: [] } as unknown as Side;
    side.closed = new Promise((resolve) => {
      session.start({
        onMessages: async (ms) => {
          side.messages.push(...ms);
          await store(ms);
          await session.sendAck(ms.map((m) => m.id)).catch(() => {});
        },
        onAck: () => {},
        onClose: (reason, detail) => resolve({ reason, detail }),
      });
    });
    return side;
  };
}

Deno.test("session: a peer that keeps pinging but never stores what it gets is closed as stalled", async () => {
  // Bob's store never finishes: he never acknowledges, never reads again, and his pings go on
  // (his own idle timeout is long, so he is not the one who closes).
  const never = Promise.withResolvers<void>();
  const { a, b, cleanup } = await pair(
    undefined,
    { keepaliveMs: 50, idleTimeoutMs: 1_500 },
    attachStoring(() => never.promise),
    { keepaliveMs: 50, idleTimeoutMs: 60_000 },
  );
  try {
    // Three short messages: they fit in the socket buffers, so no write ever blocks.
    for (let i = 0; i < 3; i++) await a.session.sendMessage(newMessageId(), `m${i}`, i);
    const closed = await within(a.closed, 20_000, "Alice to give up on Bob");
    assert.equal(closed.reason, "stalled");
    assert.match(closed.detail, /3 message\(s\) not acknowledged/);
    assert.ok(b.messages.length >= 1, "Bob got them, and sat on them");
  } finally {
    never.resolve();
    await cleanup();
  }
});

Deno.test("session: a peer that reads and acknowledges slowly is not closed as stalled", async () => {
  // Bob takes 150 ms to store each batch; Alice's idle timeout is 1 s, far less than the whole.
  const { a, b, cleanup } = await pair(
    undefined,
    { keepaliveMs: 50, idleTimeoutMs: 1_000 },
    attachStoring(() => new Promise((r) => setTimeout(r, 150))),
  );
  try {
    const text = "s".repeat(60_000); // one message per MSG frame
    const count = 25;
    for (let i = 0; i < count; i++) a.session.sendMessage(newMessageId(), text, i);
    await until(() => a.acks.length === count, `${count} acks`, 20_000);
    assert.ok(!a.session.closed && !b.session.closed, "both still open");
    assert.equal(b.messages.length, count);
  } finally {
    await cleanup();
  }
});
