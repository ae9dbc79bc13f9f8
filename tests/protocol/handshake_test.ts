import assert from "node:assert/strict";
import type { Identity } from "../../lib/crypto/identity.ts";
import { testIdentities } from "../_helpers/identities.ts";
import {
  decodeHello,
  encodeHello,
  HandshakeError,
  type HandshakeFailure,
  type HandshakeResult,
  initiateHandshake,
  isValidName,
  PROTOCOL_VERSION,
  respondHandshake,
} from "../../lib/protocol/handshake.ts";
import { type Tamper, transportPair } from "../_helpers/transport.ts";

// RSA key generation is slow: these identities serve every test.
const [alice, bob, mallory] = await testIdentities(3, "p2pchat-hs-");

async function run(
  opts: { tamper?: Tamper; initiator?: Identity; responder?: Identity; timeoutMs?: number } = {},
): Promise<[PromiseSettledResult<HandshakeResult>, PromiseSettledResult<HandshakeResult>]> {
  const { a, b } = transportPair(opts.tamper);
  const i = initiateHandshake(a, opts.initiator ?? alice, {
    name: "Alice",
    listenPort: 5000,
    timeoutMs: opts.timeoutMs ?? 5000,
  }).finally(() => a.close());
  const r = respondHandshake(b, opts.responder ?? bob, {
    name: "Bob",
    listenPort: 5001,
    timeoutMs: opts.timeoutMs ?? 5000,
  }).finally(() => b.close());
  return await Promise.allSettled([i, r]) as [
    PromiseSettledResult<HandshakeResult>,
    PromiseSettledResult<HandshakeResult>,
  ];
}

function failed(r: PromiseSettledResult<HandshakeResult>, reason?: HandshakeFailure): void {
  assert.equal(r.status, "rejected", "handshake should have failed");
  const e = (r as PromiseRejectedResult).reason;
  assert.ok(e instanceof HandshakeError, `expected HandshakeError, got ${e}`);
  if (reason) assert.equal(e.reason, reason, e.message);
}

Deno.test("handshake: both sides authenticate and derive crossed direction keys", async () => {
  const [i, r] = await run();
  assert.equal(i.status, "fulfilled");
  assert.equal(r.status, "fulfilled");
  const ir = (i as PromiseFulfilledResult<HandshakeResult>).value;
  const rr = (r as PromiseFulfilledResult<HandshakeResult>).value;
  assert.equal(ir.peerName, "Bob");
  assert.equal(rr.peerName, "Alice");
  assert.equal(ir.peerKey.fingerprint, bob.fingerprint);
  assert.equal(rr.peerKey.fingerprint, alice.fingerprint);
  assert.equal(ir.peerListenPort, 5001);
  assert.equal(rr.peerListenPort, 5000);
  assert.equal(ir.sendKey, rr.recvKey);
  assert.equal(ir.recvKey, rr.sendKey);
  assert.notEqual(ir.sendKey, ir.recvKey);
  assert.deepEqual(ir.sessionId, rr.sessionId);
  assert.ok(ir.initiator && !rr.initiator);
});

Deno.test("handshake: two sessions between the same peers never share keys", async () => {
  const results = await Promise.all([run(), run(), run()]);
  const keys = new Set<string>();
  for (const [i] of results) {
    const v = (i as PromiseFulfilledResult<HandshakeResult>).value;
    keys.add(v.sendKey);
    keys.add(v.recvKey);
  }
  assert.equal(keys.size, 6);
});

Deno.test("handshake: a tampered HELLO breaks the responder's signature for the initiator", async () => {
  const [i] = await run({
    tamper: (dir, idx, f) => {
      if (dir === "a->b" && idx === 0) f[f.length - 1] ^= 1; // flip a nonce bit
      return f;
    },
  });
  failed(i, "bad-signature");
});

Deno.test("handshake: a forged responder signature is refused", async () => {
  const [i] = await run({
    tamper: (dir, idx, f) => {
      if (dir === "b->a" && idx === 0) f[f.length - 5] ^= 0x40;
      return f;
    },
  });
  failed(i, "bad-signature");
});

Deno.test("handshake: a swapped identity key in HELLO_R is refused", async () => {
  const [i] = await run({
    tamper: (dir, idx, f) => {
      if (dir !== "b->a" || idx !== 0) return f;
      const { hello, signature } = decodeHello(f, true);
      const forged = encodeHello({ ...hello, spki: mallory.spki }, true);
      const out = new Uint8Array(forged.length + 2 + signature!.length);
      out.set(forged);
      new DataView(out.buffer).setUint16(forged.length, signature!.length);
      out.set(signature!, forged.length + 2);
      return out;
    },
  });
  failed(i, "bad-signature");
});

Deno.test("handshake: a swapped ephemeral key is detected", async () => {
  const [i, r] = await run({
    tamper: (dir, idx, f) => {
      if (dir === "a->b" && idx === 0) {
        const { hello } = decodeHello(f, false);
        const eph = hello.ephemeral.slice();
        eph[0] ^= 1;
        return encodeHello({ ...hello, ephemeral: eph }, false);
      }
      return f;
    },
  });
  // The responder signed a transcript with the wrong key in it: the initiator notices.
  failed(i, "bad-signature");
  failed(r);
});

Deno.test("handshake: AUTH signed by a different key than the HELLO's is refused", async () => {
  // Mallory claims Alice's identity key but can only sign with her own.
  const impostor = {
    spki: alice.spki,
    fingerprint: alice.fingerprint,
    sign: (data: Uint8Array) => mallory.sign(data),
  } as unknown as Identity;
  const [, r] = await run({ initiator: impostor });
  // (The initiator's side ends after AUTH; it learns of the failure when READY never comes.)
  failed(r, "bad-signature");
});

Deno.test("handshake: replaying a recorded initiator flight fails", async () => {
  const { a, b } = transportPair();
  await Promise.all([
    initiateHandshake(a, alice, { name: "Alice", listenPort: 5000 }),
    respondHandshake(b, bob, { name: "Bob", listenPort: 5001 }),
  ]);
  const recorded = a.sent; // HELLO, AUTH
  a.close();
  // Replay to a fresh responder session: its new ephemeral key changes the transcript.
  const { a: replayer, b: responder } = transportPair();
  const result = respondHandshake(responder, bob, { name: "Bob", listenPort: 5001 });
  await replayer.write(recorded[0]);
  await replayer.read();
  await replayer.write(recorded[1]);
  const [r] = await Promise.allSettled([result]);
  failed(r, "bad-signature");
  replayer.close();
});

Deno.test("handshake: another protocol version is refused", async () => {
  const [, r] = await run({
    tamper: (dir, idx, f) => {
      if (dir === "a->b" && idx === 0) f[1] = PROTOCOL_VERSION + 1;
      return f;
    },
  });
  failed(r, "version");
});

Deno.test("handshake: garbage instead of HELLO is malformed", async () => {
  const { a, b } = transportPair();
  const r = respondHandshake(b, bob, { name: "Bob", listenPort: 1 });
  await a.write(crypto.getRandomValues(new Uint8Array(100)).fill(1, 0, 1));
  const [res] = await Promise.allSettled([r]);
  failed(res);
  a.close();
});

Deno.test("handshake: connecting to ourselves is refused", async () => {
  const [i, r] = await run({ initiator: bob, responder: bob });
  failed(r, "self");
  failed(i);
});

Deno.test("handshake: a silent peer times out", async () => {
  const { a, b } = transportPair();
  const r = respondHandshake(b, bob, { name: "Bob", listenPort: 1, timeoutMs: 100 });
  const [res] = await Promise.allSettled([r]);
  failed(res, "timeout");
  a.close();
});

Deno.test("isValidName accepts labels and refuses spaces, control characters, long names", () => {
  for (const ok of ["Alice", "bob_2", "x", "Zoë", "a.b-c", ".x", "._"]) {
    assert.ok(isValidName(ok), ok);
  }
  // Only dots would make the default data directory "." or "..": everyone's folder, or above it.
  for (const bad of ["", "a b", "a\nb", "x".repeat(33), "a/b", "\u0000", ".", "..", "..."]) {
    assert.ok(!isValidName(bad), JSON.stringify(bad));
  }
});
