import assert from "node:assert/strict";
import { Fernet } from "../../lib/crypto/fernet.ts";
import {
  fingerprint,
  formatFingerprint,
  IdentityError,
  importPeerKey,
  openIdentity,
  PassphraseRequiredError,
  PeerKeyCache,
  WrongPassphraseError,
} from "../../lib/crypto/identity.ts";
import { testIdentities } from "../_helpers/identities.ts";

const FILES = ["identity.key", "identity.pub", "history.key"] as const;
type Files = Record<(typeof FILES)[number], Uint8Array>;

// RSA key generation is slow: two identities (plain and passphrase-wrapped) are made once, their
// files kept in memory, and written into a fresh directory by each test that needs them.
const PASSPHRASE = "correct horse battery staple";
let plainFiles: Promise<Files> | undefined;
let wrappedFiles: Promise<Files> | undefined;

async function makeFiles(passphrase?: string): Promise<Files> {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat_identity_" });
  try {
    await openIdentity(dir, { passphrase });
    const out = {} as Files;
    for (const name of FILES) out[name] = await Deno.readFile(`${dir}/${name}`);
    return out;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const plain = () => plainFiles ??= makeFiles();
const wrapped = () => wrappedFiles ??= makeFiles(PASSPHRASE);

/** Runs `fn` in a fresh temporary directory holding the chosen files, then removes it. */
async function inDir(
  files: Partial<Files>,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "p2pchat_identity_" });
  try {
    for (const [name, bytes] of Object.entries(files)) {
      await Deno.writeFile(`${dir}/${name}`, bytes, { mode: 0o600 });
    }
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const mode = async (path: string) => (await Deno.stat(path)).mode! & 0o777;
const listing = async (dir: string) =>
  (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
const utf8 = (s: string) => new TextEncoder().encode(s);

/** Asserts an IdentityError of exactly this class whose message names `file`. */
async function rejectsNaming(
  promise: Promise<unknown>,
  file: string,
  cls: typeof IdentityError = IdentityError,
): Promise<IdentityError> {
  let caught: unknown;
  await assert.rejects(promise, (e: unknown) => {
    caught = e;
    return true;
  });
  assert.ok(caught instanceof IdentityError, `expected IdentityError, got ${caught}`);
  assert.equal(caught.constructor, cls, `expected ${cls.name}, got ${caught.name}`);
  assert.ok(caught.message.includes(file), `message should name ${file}: ${caught.message}`);
  assert.ok(!caught.message.includes("\n"), "one-line message");
  return caught;
}

function onPath(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return false;
}

Deno.test("openIdentity creates an identity with private files, then reloads the same one", async () => {
  await inDir({}, async (root) => {
    const dir = `${root}/data/alice`;
    let notes = 0;
    const first = await openIdentity(dir, { onCreate: () => notes++ });
    assert.equal(first.created, true);
    assert.equal(notes, 1);
    assert.deepEqual(await listing(dir), ["history.key", "identity.key", "identity.pub"]);
    assert.equal(await mode(dir), 0o700);
    assert.equal(await mode(`${dir}/identity.key`), 0o600);
    assert.equal(await mode(`${dir}/history.key`), 0o600);
    const keyPem = await Deno.readTextFile(`${dir}/identity.key`);
    assert.match(
      keyPem,
      /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/,
    );
    assert.match(await Deno.readTextFile(`${dir}/identity.pub`), /^-----BEGIN PUBLIC KEY-----\n/);
    const id = first.identity;
    assert.match(id.fingerprint, /^[0-9a-f]{64}$/);
    assert.equal(id.fingerprint, await fingerprint(id.spki));
    assert.equal(id.publicKey.fingerprint, id.fingerprint);
    await Fernet.create(id.historyKey); // a valid Fernet key

    const second = await openIdentity(dir, { onCreate: () => notes++ });
    assert.equal(second.created, false);
    assert.equal(notes, 1);
    assert.equal(second.identity.fingerprint, id.fingerprint);
    assert.deepEqual(second.identity.spki, id.spki);
    assert.equal(second.identity.historyKey, id.historyKey);
    assert.equal(await Deno.readTextFile(`${dir}/identity.key`), keyPem);
  });
});

Deno.test({
  name: "fingerprint equals openssl's SHA-256 of the SPKI DER",
  ignore: !onPath("openssl") || !onPath("sha256sum"),
  async fn() {
    const files = await plain();
    await inDir(files, async (dir) => {
      const { identity } = await openIdentity(dir);
      const out = await new Deno.Command("bash", {
        args: [
          "-c",
          'openssl pkey -pubin -in "$1" -outform DER | sha256sum',
          "_",
          `${dir}/identity.pub`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const expected = new TextDecoder().decode(out.stdout).split(" ")[0];
      assert.match(expected, /^[0-9a-f]{64}$/);
      assert.equal(identity.fingerprint, expected);
    });
  },
});

Deno.test("formatFingerprint groups four characters", () => {
  assert.equal(formatFingerprint("abcd1234ef"), "abcd 1234 ef");
  assert.equal(formatFingerprint(""), "");
  const fp = "0123456789abcdef".repeat(4);
  const formatted = formatFingerprint(fp);
  assert.equal(formatted.split(" ").length, 16);
  assert.equal(formatted.replaceAll(" ", ""), fp);
  assert.match(formatted, /^([0-9a-f]{4} ){15}[0-9a-f]{4}$/);
});

Deno.test("sign and verify: round trip and failures", async () => {
  await inDir(await plain(), async (dir) => {
    const { identity } = await openIdentity(dir);
    const data = utf8("the transcript");
    const signature = await identity.sign(data);
    assert.equal(signature.length, 256);
    assert.equal(await identity.publicKey.verify(signature, data), true);
    const peer = await importPeerKey(identity.spki);
    assert.equal(peer.fingerprint, identity.fingerprint);
    assert.equal(await peer.verify(signature, data), true);

    const tampered = signature.slice();
    tampered[100] ^= 1;
    assert.equal(await peer.verify(tampered, data), false);
    assert.equal(await peer.verify(signature, utf8("the transcripT")), false);
    assert.equal(await peer.verify(signature.subarray(1), data), false);
    assert.equal(await peer.verify(new Uint8Array(0), data), false);

    await inDir(await wrapped(), async (other) => {
      const stranger = (await openIdentity(other, { passphrase: PASSPHRASE })).identity;
      assert.notEqual(stranger.fingerprint, identity.fingerprint);
      assert.equal(await stranger.publicKey.verify(signature, data), false);
      assert.equal(await peer.verify(await stranger.sign(data), data), false);
    });
  });
});

Deno.test("encrypt and decrypt: round trip and failures", async () => {
  await inDir(await plain(), async (dir) => {
    const { identity } = await openIdentity(dir);
    const peer = await importPeerKey(identity.spki);
    for (const size of [0, 1, 32, 190]) {
      const secret = crypto.getRandomValues(new Uint8Array(size));
      const sealed = await peer.encrypt(secret);
      assert.equal(sealed.length, 256);
      assert.deepEqual(await identity.decrypt(sealed), secret);
    }
    await assert.rejects(peer.encrypt(new Uint8Array(191)), RangeError);

    const sealed = await peer.encrypt(utf8("secret"));
    const tampered = sealed.slice();
    tampered[5] ^= 1;
    await assert.rejects(identity.decrypt(tampered), IdentityError);
    await assert.rejects(identity.decrypt(new Uint8Array(10)), IdentityError);

    await inDir(await wrapped(), async (other) => {
      const stranger = (await openIdentity(other, { passphrase: PASSPHRASE })).identity;
      await assert.rejects(stranger.decrypt(sealed), IdentityError);
    });
  });
});

Deno.test("a corrupt or truncated identity.key is an error and is left untouched", async () => {
  const { "identity.key": good } = await plain();
  const pem = new TextDecoder().decode(good);
  const lines = pem.split("\n");
  const wrappedKey = new TextDecoder().decode((await wrapped())["identity.key"]);
  const cases: Record<string, Uint8Array> = {
    "empty": new Uint8Array(0),
    "garbage text": utf8("hello, this is not a key\n"),
    "binary garbage": crypto.getRandomValues(new Uint8Array(1200)),
    "truncated PEM": good.subarray(0, Math.floor(good.length / 2)),
    "PEM missing its middle": utf8([...lines.slice(0, 5), ...lines.slice(10)].join("\n")),
    "PEM with a flipped body character": utf8(
      pem.replace(/\n(.)/, (_m, c) => `\n${c === "A" ? "B" : "A"}`),
    ),
    "PEM of a public key": (await plain())["identity.pub"],
    "truncated wrapped JSON": utf8(wrappedKey.slice(0, 200)),
    "wrapped JSON with a short data field": utf8(
      wrappedKey.replace(/"data": "[^"]*"/, '"data": "AAAA"'),
    ),
  };
  for (const [label, bytes] of Object.entries(cases)) {
    await inDir({ "identity.key": bytes }, async (dir) => {
      const err = await rejectsNaming(
        openIdentity(dir, { passphrase: label.includes("wrapped") ? PASSPHRASE : undefined }),
        "identity.key",
      );
      assert.ok(err.message.length > 0, label);
      assert.deepEqual(await Deno.readFile(`${dir}/identity.key`), bytes, `${label}: file changed`);
      assert.deepEqual(await listing(dir), ["identity.key"], `${label}: files were created`);
    });
  }
});

Deno.test("a corrupt history.key or mismatched identity.pub is an error naming the file", async () => {
  const files = await plain();
  const badHistory = utf8("not-a-fernet-key\n");
  await inDir({ ...files, "history.key": badHistory }, async (dir) => {
    await rejectsNaming(openIdentity(dir), "history.key");
    assert.deepEqual(await Deno.readFile(`${dir}/history.key`), badHistory);
  });
  const otherPub = (await wrapped())["identity.pub"];
  await inDir({ ...files, "identity.pub": otherPub }, async (dir) => {
    await rejectsNaming(openIdentity(dir), "identity.pub");
    assert.deepEqual(await Deno.readFile(`${dir}/identity.pub`), otherPub);
  });
  await inDir(
    { ...files, "identity.pub": utf8("-----BEGIN PUBLIC KEY-----\nAAA") },
    async (dir) => {
      await rejectsNaming(openIdentity(dir), "identity.pub");
    },
  );
});

Deno.test("missing identity.pub and history.key are recreated; identity.key is not touched", async () => {
  const files = await plain();
  await inDir({ "identity.key": files["identity.key"] }, async (dir) => {
    const { identity, created } = await openIdentity(dir, { create: false });
    assert.equal(created, false);
    assert.equal(identity.fingerprint, await fingerprint(pubDer(files["identity.pub"])));
    assert.deepEqual(await Deno.readFile(`${dir}/identity.pub`), files["identity.pub"]);
    assert.deepEqual(await Deno.readFile(`${dir}/identity.key`), files["identity.key"]);
    assert.equal(await mode(`${dir}/history.key`), 0o600);
    assert.equal((await Deno.readTextFile(`${dir}/history.key`)).trim(), identity.historyKey);
    assert.notEqual(identity.historyKey, new TextDecoder().decode(files["history.key"]).trim());
  });
});

function pubDer(pem: Uint8Array): Uint8Array {
  const body = new TextDecoder().decode(pem).replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.fromBase64(body);
}

Deno.test("create: false without an identity is an error and creates nothing", async () => {
  await inDir({}, async (dir) => {
    let notes = 0;
    await rejectsNaming(
      openIdentity(dir, { create: false, onCreate: () => notes++ }),
      "identity.key",
    );
    assert.equal(notes, 0);
    assert.deepEqual(await listing(dir), []);
  });
});

Deno.test("an unusable data directory is an IdentityError", async () => {
  await inDir({}, async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "x");
    await rejectsNaming(openIdentity(`${dir}/file`), `${dir}/file`);
    await Deno.mkdir(`${dir}/identity.key`, { recursive: true });
    await rejectsNaming(openIdentity(dir), "identity.key");
  });
});

Deno.test("passphrase: create wrapped, reload, wrong and missing passphrase", async () => {
  const files = await wrapped();
  for (const name of ["identity.key", "history.key"] as const) {
    const doc = JSON.parse(new TextDecoder().decode(files[name]));
    assert.equal(doc.format, "p2pchat-wrapped-v1");
    assert.equal(doc.kdf, "PBKDF2-SHA256");
    assert.ok(doc.iterations >= 600_000);
    assert.equal(doc.cipher, "AES-256-GCM");
    assert.ok(!new TextDecoder().decode(files[name]).includes("PRIVATE KEY"));
  }
  // One derivation per start: both files share the salt.
  const salt = (name: "identity.key" | "history.key") =>
    JSON.parse(new TextDecoder().decode(files[name])).salt;
  assert.equal(salt("identity.key"), salt("history.key"));

  await inDir(files, async (dir) => {
    const a = await openIdentity(dir, { passphrase: PASSPHRASE });
    assert.equal(a.created, false);
    assert.equal(a.identity.fingerprint, await fingerprint(pubDer(files["identity.pub"])));
    const b = await openIdentity(dir, { passphrase: PASSPHRASE.normalize("NFD") });
    assert.equal(b.identity.historyKey, a.identity.historyKey);
    await Fernet.create(a.identity.historyKey);

    await rejectsNaming(
      openIdentity(dir, { passphrase: "wrong" }),
      "identity.key",
      WrongPassphraseError,
    );
    await rejectsNaming(openIdentity(dir), "identity.key", PassphraseRequiredError);
    await assert.rejects(openIdentity(dir, { passphrase: "" }), IdentityError);
    for (const name of FILES) assert.deepEqual(await Deno.readFile(`${dir}/${name}`), files[name]);
  });
});

Deno.test("passphrase: a missing history.key is recreated wrapped under the same salt", async () => {
  const files = await wrapped();
  await inDir({ "identity.key": files["identity.key"] }, async (dir) => {
    const { identity } = await openIdentity(dir, { passphrase: PASSPHRASE });
    const doc = JSON.parse(await Deno.readTextFile(`${dir}/history.key`));
    assert.equal(doc.salt, JSON.parse(new TextDecoder().decode(files["identity.key"])).salt);
    assert.equal(await mode(`${dir}/history.key`), 0o600);
    const again = await openIdentity(dir, { passphrase: PASSPHRASE });
    assert.equal(again.identity.historyKey, identity.historyKey);
  });
});

Deno.test("passphrase: wrapped history.key with a wrong passphrase or swapped contents", async () => {
  const files = await wrapped();
  // The identity's wrapped blob in history.key's place is refused (the content is bound).
  const swapped = new TextDecoder().decode(files["identity.key"]).replace(
    '"pkcs8"',
    '"fernet-key"',
  );
  await inDir({ ...files, "history.key": utf8(swapped) }, async (dir) => {
    await rejectsNaming(
      openIdentity(dir, { passphrase: PASSPHRASE }),
      "history.key",
      WrongPassphraseError,
    );
  });
  // A plain history.key beside a wrapped identity was altered.
  await inDir({ ...files, "history.key": (await plain())["history.key"] }, async (dir) => {
    await rejectsNaming(openIdentity(dir, { passphrase: PASSPHRASE }), "history.key");
  });
});

Deno.test("a passphrase for an unwrapped key is an IdentityError that says so", async () => {
  await inDir(await plain(), async (dir) => {
    const err = await rejectsNaming(openIdentity(dir, { passphrase: PASSPHRASE }), "identity.key");
    assert.match(err.message, /not passphrase-protected/);
  });
});

Deno.test("importPeerKey rejects garbage and non-RSA or weak keys", async () => {
  const { identity } = await inDirValue(await plain(), (dir) => openIdentity(dir));
  const garbage = [
    new Uint8Array(0),
    crypto.getRandomValues(new Uint8Array(294)),
    identity.spki.subarray(0, 200),
    Uint8Array.of(...identity.spki, 0), // trailing byte
  ];
  for (const bytes of garbage) await assert.rejects(importPeerKey(bytes), IdentityError);

  const ec = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const ecSpki = new Uint8Array(await crypto.subtle.exportKey("spki", ec.publicKey));
  await assert.rejects(importPeerKey(ecSpki), IdentityError);

  const ed = await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair;
  const edSpki = new Uint8Array(await crypto.subtle.exportKey("spki", ed.publicKey));
  await assert.rejects(importPeerKey(edSpki), IdentityError);

  const weak = await crypto.subtle.generateKey(
    {
      name: "RSA-PSS",
      hash: "SHA-256",
      modulusLength: 1024,
      publicExponent: Uint8Array.of(1, 0, 1),
    },
    true,
    ["sign", "verify"],
  );
  const weakSpki = new Uint8Array(await crypto.subtle.exportKey("spki", weak.publicKey));
  await assert.rejects(importPeerKey(weakSpki), /1024 bits/);

  const ok = await importPeerKey(identity.spki);
  assert.equal(ok.fingerprint, identity.fingerprint);
  assert.deepEqual(ok.spki, identity.spki);
});

async function inDirValue<T>(files: Partial<Files>, fn: (dir: string) => Promise<T>): Promise<T> {
  let value: T;
  await inDir(files, async (dir) => {
    value = await fn(dir);
  });
  return value!;
}

Deno.test("PeerKeyCache: one import per key, shared by concurrent callers; least recently used out; bad keys not kept", async () => {
  const [a, b, c] = await testIdentities(3, "p2pchat-keycache-");
  const keys = new PeerKeyCache({ capacity: 2 });
  // Concurrent first requests share one import: the same object for all.
  const [a1, a2] = await Promise.all([keys.get(a.publicKey.spki), keys.get(a.publicKey.spki)]);
  assert.equal(a1, a2);
  assert.equal(a1.fingerprint, a.publicKey.fingerprint);
  // A copy of the bytes finds the same key.
  assert.equal(await keys.get(a.publicKey.spki.slice()), a1);
  const b1 = await keys.get(b.publicKey.spki);
  // Touching a makes b the least recently used.
  assert.equal(await keys.get(a.publicKey.spki), a1);
  await keys.get(c.publicKey.spki); // evicts b
  assert.equal(keys.size, 2);
  assert.equal(await keys.get(a.publicKey.spki), a1, "a stayed");
  assert.notEqual(await keys.get(b.publicKey.spki), b1, "b was evicted and imported anew");

  // A bad key is refused like importPeerKey refuses it, and leaves no entry behind.
  const empty = new PeerKeyCache();
  await assert.rejects(empty.get(new Uint8Array([1, 2, 3])), IdentityError);
  await Promise.resolve();
  assert.equal(empty.size, 0);
  assert.throws(() => new PeerKeyCache({ capacity: 0 }), RangeError);
});
