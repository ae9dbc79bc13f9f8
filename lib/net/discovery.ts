/**
 * LAN discovery: signed UDP announcements, direct replies, goodbyes and the liveness of the peers
 * heard.
 *
 * Thin I/O around {@linkcode encodeAnnouncement}/{@linkcode decodeAnnouncement} and
 * {@linkcode broadcastAddresses}. Two sockets: one bound with `reuseAddress` on the shared
 * discovery port receives broadcasts (every peer on a host gets each one); one, unshared, on an
 * ephemeral port sends everything and receives the direct replies, because a unicast to the shared
 * port would reach only one of the peers on a host. The design is in docs/DISCOVERY.md.
 *
 * @module
 */

import { type Identity, PeerKeyCache } from "../crypto/identity.ts";
import {
  AnnouncementError,
  type AnnouncementKind,
  decodeAnnouncement,
  encodeAnnouncement,
  MAX_ANNOUNCEMENT_SIZE,
  nameProblem,
  type VerifiedAnnouncement,
} from "./announce.ts";
import { broadcastAddresses } from "./broadcast.ts";

/** The discovery UDP port of the original program. */
export const DEFAULT_DISCOVERY_PORT = 54545;

/** Time between two announcements, in ms. */
export const DEFAULT_INTERVAL_MS = 5000;

/** Longest interval accepted: one day (timers cannot wait longer than 2^31 - 1 ms anyway). */
export const MAX_INTERVAL_MS = 86_400_000;

/** A peer is down when not heard for this many of its own announcement intervals. */
export const MISSED_INTERVALS = 3;

/**
 * How far an announcement's timestamp may be from our clock, either way, in ms. A minute survives
 * the skew of LAN machines without NTP for days, and is short enough that a replayed datagram of a
 * peer we have forgotten (the replay memory is pruned after this window) is refused as stale.
 */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 60_000;

/** Flood limit per source address, by default: a burst, then a steady rate. */
export const DEFAULT_FLOOD_LIMIT: Readonly<FloodLimit> = { burst: 200, perSecond: 100 };

/** Datagrams verified per second from all sources together (spoofed source addresses). */
const GLOBAL_FLOOD_LIMIT: Readonly<FloodLimit> = { burst: 2000, perSecond: 1000 };

/** At most this many source addresses have a flood bucket; the oldest is dropped beyond. */
const MAX_FLOOD_SOURCES = 4096;

/** At most this many peers are tracked (up, or down and still in the replay window). */
const MAX_TRACKED_PEERS = 4096;

/** Direct replies, all peers together: a burst, then a steady rate. */
const REPLY_LIMIT: Readonly<FloodLimit> = { burst: 64, perSecond: 32 };

/** At most one direct reply to a given peer process (key and reply port) in this many ms. */
const REPLY_GAP_MS = 1000;

/** A signed reply datagram is reused for this many ms, so answering many peers signs once. */
const REPLY_REUSE_MS = 1000;

/** A peer's announced interval is clamped to this range before computing its timeout, in ms. */
const MIN_PEER_INTERVAL_MS = 50;
const MAX_PEER_INTERVAL_MS = 600_000;

/**
 * Datagrams of one socket being checked at once. Signature checks run on WebCrypto's thread pool;
 * waiting for each before reading the next made a busy peer fall behind a large LAN (50 peers
 * at a 1 s interval) until the socket's buffer overflowed and live peers timed out.
 */
const MAX_IN_FLIGHT = 32;

/** Peers' imported keys kept, so that a known peer's announcement costs one signature check. */
const KEY_CACHE_SIZE = 1024;

/** After this many receive errors in a row, a socket is given up (with a warning). */
const MAX_RECEIVE_ERRORS = 100;

/** A token bucket's size and refill rate. */
export interface FloodLimit {
  /** Datagrams accepted at once from a quiet source. */
  burst: number;
  /** Datagrams per second accepted in the long run. */
  perSecond: number;
}

/** A peer heard on the LAN. */
export interface HeardPeer {
  /** Name it announces (a label only). */
  name: string;
  /** Lowercase hex SHA-256 of its SPKI DER. */
  fingerprint: string;
  /** Its public key, SPKI DER, as carried in its signed announcement. */
  spki: Uint8Array;
  /** Source address of its latest accepted announcement. */
  host: string;
  /** TCP port it announces. */
  port: number;
  /** When we last heard it (or {@linkcode Discovery.markAlive} was called), ms since the epoch. */
  lastSeen: number;
}

/** Why a peer went down. */
export type PeerDownReason = "timeout" | "goodbye";

/** Options of {@linkcode Discovery}. */
export interface DiscoveryOptions {
  /** Name to announce. */
  name: string;
  /** TCP port of our chat server, announced to peers. */
  tcpPort: number;
  /** Shared UDP discovery port (default {@linkcode DEFAULT_DISCOVERY_PORT}). */
  port?: number;
  /**
   * Send announcements only to these addresses. When absent, the directed broadcast address of
   * every IPv4, non-loopback interface, recomputed at each interval.
   */
  broadcast?: string[];
  /** Time between announcements in ms (default {@linkcode DEFAULT_INTERVAL_MS}). */
  intervalMs?: number;
  /** Clock skew tolerated in timestamps, ms (default {@linkcode DEFAULT_MAX_CLOCK_SKEW_MS}). */
  maxClockSkewMs?: number;
  /** Per-source-address rate limit (default {@linkcode DEFAULT_FLOOD_LIMIT}). */
  floodLimit?: FloodLimit;
  /** A peer is heard for the first time, or again after it went down. */
  onPeerUp?: (peer: HeardPeer) => void;
  /** Every accepted announcement of a peer (its address may have changed). */
  onPeerSeen?: (peer: HeardPeer) => void;
  /** A peer was not heard for 3 of its intervals, or said goodbye. */
  onPeerDown?: (peer: HeardPeer, reason: PeerDownReason) => void;
  /** Something is wrong but discovery goes on (no broadcast route, a send failed, ...). */
  onWarning?: (message: string) => void;
}

/** Thrown by {@linkcode Discovery.start} when discovery cannot run (port not bindable, ...). */
export class DiscoveryError extends Error {
  /**
   * Makes the error.
   *
   * @param message What went wrong, for the user.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DiscoveryError";
  }
}

/** What we remember of a peer. */
interface PeerState {
  peer: HeardPeer;
  up: boolean;
  /** (timestamp, seq) of the latest accepted announcement: anything not newer is a replay. */
  lastTs: number;
  lastSeq: number;
  /** Where direct replies to it go. */
  replyHost: string;
  replyPort: number;
  /** Not heard for this long means down. */
  timeoutMs: number;
  /** When, and to which reply port, we last sent it a direct reply. */
  lastReplyAt: number;
  lastReplyPort: number;
}

/** Counters, by reason: what happened to the datagrams received and sent. */
const STAT_KEYS = [
  "received", // datagrams read from either socket
  "accepted", // verified, fresh announcements of another peer
  "own", // our own announcements, heard back
  "malformed",
  "version",
  "key",
  "signature",
  "stale", // timestamp too far from our clock
  "replayed", // older than the latest accepted from that key
  "duplicate", // same (timestamp, seq) as the latest accepted: a copy via another path, or a replay
  "flood", // over the rate limit of its source address (or of all sources)
  "capacity", // a new key while the table of tracked peers is full
  "rounds", // periodic announcement rounds (with or without any target)
  "sent",
  "sendErrors",
  "replies", // direct replies sent
  "repliesLimited", // direct replies not sent because of the reply rate limit
] as const;

/**
 * Announces this peer on the LAN and keeps the list of peers heard, up or down.
 *
 * @example
 * ```ts
 * const { identity } = await openIdentity("./data");
 * const discovery = new Discovery(identity, {
 *   name: "Alice",
 *   tcpPort: 5000,
 *   onPeerUp: (p) => console.log("up", p.name, `${p.host}:${p.port}`),
 *   onPeerDown: (p, reason) => console.log("down", p.name, reason),
 *   onWarning: (m) => console.error(m),
 * });
 * await discovery.start();
 * // ...
 * await discovery.stop();
 * ```
 */
export class Discovery {
  #identity: Identity;
  #name: string;
  #tcpPort: number;
  #port: number;
  #broadcast: string[] | undefined;
  #intervalMs: number;
  #maxSkewMs: number;
  #floodLimit: FloodLimit;
  #onPeerUp?: (peer: HeardPeer) => void;
  #onPeerSeen?: (peer: HeardPeer) => void;
  #onPeerDown?: (peer: HeardPeer, reason: PeerDownReason) => void;
  #onWarning?: (message: string) => void;

  #shared?: Deno.DatagramConn;
  #direct?: Deno.DatagramConn;
  #replyPort = 0;
  #loops: Promise<void>[] = [];
  #state: "new" | "running" | "stopping" | "stopped" = "new";

  #announceTimer?: ReturnType<typeof setTimeout>;
  #announcing?: Promise<void>;
  #sweepTimer?: ReturnType<typeof setTimeout>;
  #sweepAt = Infinity;

  #seq = 0;
  #lastTimestamp = 0;
  #reply?: { bytes: Promise<Uint8Array>; at: number };

  #peers = new Map<string, PeerState>();
  #floodBuckets = new Map<string, TokenBucket>();
  #globalBucket: TokenBucket;
  #replyBucket: TokenBucket;
  #stats: Record<string, number> = Object.fromEntries(STAT_KEYS.map((k) => [k, 0]));
  #warnedNoRoute = false;
  #failingTargets = new Set<string>();
  #keys = new PeerKeyCache({ capacity: KEY_CACHE_SIZE });

  /**
   * Prepares discovery; nothing is bound until {@linkcode Discovery.start}.
   *
   * @throws {RangeError} when the name, a port or the interval is out of range.
   */
  constructor(identity: Identity, opts: DiscoveryOptions) {
    this.#identity = identity;
    this.#name = opts.name;
    this.#tcpPort = opts.tcpPort;
    this.#port = opts.port ?? DEFAULT_DISCOVERY_PORT;
    this.#broadcast = opts.broadcast ? [...opts.broadcast] : undefined;
    this.#intervalMs = opts.intervalMs ?? DEFAULT_INTERVAL_MS;
    this.#maxSkewMs = opts.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
    this.#floodLimit = opts.floodLimit ?? DEFAULT_FLOOD_LIMIT;
    this.#onPeerUp = opts.onPeerUp;
    this.#onPeerSeen = opts.onPeerSeen;
    this.#onPeerDown = opts.onPeerDown;
    this.#onWarning = opts.onWarning;
    if (!Number.isInteger(this.#port) || this.#port < 1 || this.#port > 65535) {
      throw new RangeError(`discovery port ${this.#port} is out of range`);
    }
    if (!Number.isInteger(this.#tcpPort) || this.#tcpPort < 1 || this.#tcpPort > 65535) {
      throw new RangeError(`TCP port ${this.#tcpPort} is out of range`);
    }
    if (
      !Number.isInteger(this.#intervalMs) || this.#intervalMs < 1 ||
      this.#intervalMs > MAX_INTERVAL_MS
    ) {
      throw new RangeError(`interval ${this.#intervalMs} ms is outside 1-${MAX_INTERVAL_MS}`);
    }
    const problem = nameProblem(this.#name);
    if (problem !== undefined) throw new RangeError(problem);
    this.#globalBucket = new TokenBucket(GLOBAL_FLOOD_LIMIT);
    this.#replyBucket = new TokenBucket(REPLY_LIMIT);
  }

  /** Counters by reason (see docs/DISCOVERY.md): a snapshot, updated as datagrams come. */
  get stats(): Record<string, number> {
    return { ...this.#stats };
  }

  /**
   * Binds both sockets, starts listening and sends the first announcement.
   *
   * @throws {DiscoveryError} when a socket cannot be bound or the interfaces cannot be read.
   */
  async start(): Promise<void> {
    if (this.#state !== "new") throw new DiscoveryError("discovery was already started");
    try {
      this.#shared = Deno.listenDatagram({
        transport: "udp",
        hostname: "0.0.0.0",
        port: this.#port,
        reuseAddress: true,
      });
    } catch (e) {
      throw new DiscoveryError(
        `cannot listen on UDP port ${this.#port}: ${errorMessage(e)}`,
        { cause: e },
      );
    }
    try {
      this.#direct = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    } catch (e) {
      this.#shared.close();
      throw new DiscoveryError(`cannot open a UDP socket: ${errorMessage(e)}`, { cause: e });
    }
    this.#replyPort = (this.#direct.addr as Deno.NetAddr).port;
    if (this.#broadcast === undefined) {
      try {
        Deno.networkInterfaces();
      } catch (e) {
        this.#shared.close();
        this.#direct.close();
        throw new DiscoveryError(`cannot list network interfaces: ${errorMessage(e)}`, {
          cause: e,
        });
      }
    }
    this.#state = "running";
    this.#loops = [this.#receiveLoop(this.#shared), this.#receiveLoop(this.#direct)];
    await this.#runAnnounce();
  }

  /**
   * Says goodbye, closes the sockets and clears the timers. Peers stay known (see
   * {@linkcode Discovery.peers}) but no callback fires any more. Calling it twice is harmless.
   */
  async stop(): Promise<void> {
    if (this.#state !== "running") {
      this.#state = "stopped";
      return;
    }
    this.#state = "stopping";
    clearTimeout(this.#announceTimer);
    clearTimeout(this.#sweepTimer);
    this.#announceTimer = this.#sweepTimer = undefined;
    await this.#announcing;
    await this.#sendGoodbye();
    this.#state = "stopped";
    this.#shared?.close();
    this.#direct?.close();
    await Promise.all(this.#loops);
  }

  /**
   * Keeps an up peer up, as if just heard (e.g. while we hold a live connection with it).
   *
   * @returns `true` when the peer is up and was refreshed, `false` when unknown or down.
   */
  markAlive(fingerprint: string): boolean {
    const state = this.#peers.get(fingerprint);
    if (state === undefined || !state.up) return false;
    state.peer.lastSeen = Date.now();
    return true;
  }

  /** The peers up now, in the order they were first heard. */
  peers(): HeardPeer[] {
    return [...this.#peers.values()].filter((s) => s.up).map((s) => copyPeer(s.peer));
  }

  /** A method, not an inline test, so TypeScript does not narrow the state across awaits. */
  #stopped(): boolean {
    return this.#state === "stopped";
  }

  // ---- sending ----

  /** Sends one announcement now, then schedules the next. */
  #runAnnounce(): Promise<void> {
    const run = async () => {
      try {
        const targets = this.#targets();
        if (targets.length > 0) {
          const bytes = await this.#encode("hello");
          for (const host of targets) await this.#send(bytes, host, this.#port);
        }
      } catch (e) {
        // Signing failed (#send reports its own errors): try again at the next interval.
        this.#warn(`announcement failed: ${errorMessage(e)}`);
      }
      this.#stats.rounds++;
      if (this.#state === "running") {
        this.#announceTimer = setTimeout(() => {
          this.#announcing = this.#runAnnounce();
        }, this.#intervalMs);
      }
    };
    this.#announcing = run();
    return this.#announcing;
  }

  /** Goodbye to the broadcast targets and, directly, to every peer up. */
  async #sendGoodbye(): Promise<void> {
    let bytes: Uint8Array;
    try {
      bytes = await this.#encode("goodbye");
    } catch (e) {
      this.#warn(`goodbye not sent: ${errorMessage(e)}`);
      return;
    }
    for (const host of this.#targets()) await this.#send(bytes, host, this.#port);
    for (const state of this.#peers.values()) {
      if (state.up) await this.#send(bytes, state.replyHost, state.replyPort);
    }
  }

  /** Where announcements go now; warns once per spell without any address. */
  #targets(): string[] {
    let targets: string[];
    if (this.#broadcast !== undefined) {
      targets = this.#broadcast;
    } else {
      try {
        targets = broadcastAddresses(Deno.networkInterfaces());
      } catch (e) {
        this.#warn(`cannot list network interfaces: ${errorMessage(e)}`);
        targets = [];
      }
    }
    if (targets.length === 0) {
      if (!this.#warnedNoRoute) {
        this.#warnedNoRoute = true;
        this.#warn(
          "no broadcast route: no IPv4 interface other than loopback is up, so peers on the LAN " +
            "cannot be discovered; they can still be reached with /connect HOST:PORT",
        );
      }
    } else {
      this.#warnedNoRoute = false;
    }
    return targets;
  }

  /** Signs an announcement with a fresh (timestamp, seq), monotonic even if the clock steps back. */
  #encode(kind: AnnouncementKind): Promise<Uint8Array> {
    this.#lastTimestamp = Math.max(Date.now(), this.#lastTimestamp);
    this.#seq = (this.#seq + 1) >>> 0;
    return encodeAnnouncement({
      kind,
      name: this.#name,
      tcpPort: this.#tcpPort,
      replyPort: this.#replyPort,
      timestamp: this.#lastTimestamp,
      seq: this.#seq,
      intervalMs: this.#intervalMs,
    }, this.#identity);
  }

  /** Sends from the unshared socket; a failure is a warning (once until that target works). */
  async #send(bytes: Uint8Array, hostname: string, port: number): Promise<void> {
    if (this.#stopped() || this.#direct === undefined) return;
    const target = `${hostname}:${port}`;
    try {
      await this.#direct.send(bytes, { transport: "udp", hostname, port });
      this.#stats.sent++;
      this.#failingTargets.delete(target);
    } catch (e) {
      this.#stats.sendErrors++;
      if (!this.#failingTargets.has(target)) {
        this.#failingTargets.add(target);
        this.#warn(`cannot send to ${target}: ${errorMessage(e)}`);
      }
    }
  }

  /** A direct reply to a peer just heard, within the rate limits. */
  async #replyTo(state: PeerState, now: number): Promise<void> {
    // The same process (same reply port) is answered at most once per gap; a restarted one, on
    // a new port, is answered at once.
    if (state.lastReplyPort === state.replyPort && now - state.lastReplyAt < REPLY_GAP_MS) return;
    if (!this.#replyBucket.take(now)) {
      this.#stats.repliesLimited++;
      return;
    }
    state.lastReplyAt = now;
    state.lastReplyPort = state.replyPort;
    // The promise is kept, not its result: hellos checked at the same time share one signature.
    if (this.#reply === undefined || now - this.#reply.at >= REPLY_REUSE_MS) {
      const bytes = this.#encode("reply");
      this.#reply = { bytes, at: now };
      // A failed signature is not reused: the next hello tries again.
      bytes.catch(() => {
        if (this.#reply?.bytes === bytes) this.#reply = undefined;
      });
    }
    const bytes = await this.#reply.bytes;
    this.#stats.replies++;
    await this.#send(bytes, state.replyHost, state.replyPort);
  }

  // ---- receiving ----

  async #receiveLoop(conn: Deno.DatagramConn): Promise<void> {
    // One buffer per socket, one byte larger than any valid datagram, so oversize shows.
    const buffer = new Uint8Array(MAX_ANNOUNCEMENT_SIZE + 1);
    const inFlight = new Set<Promise<void>>();
    try {
      await this.#receive(conn, buffer, inFlight);
    } finally {
      await Promise.all(inFlight);
    }
  }

  /** Reads datagrams until the socket closes, checking up to MAX_IN_FLIGHT of them at once. */
  async #receive(
    conn: Deno.DatagramConn,
    buffer: Uint8Array,
    inFlight: Set<Promise<void>>,
  ): Promise<void> {
    let errors = 0;
    while (!this.#stopped()) {
      if (inFlight.size >= MAX_IN_FLIGHT) {
        // Backpressure: the kernel's socket buffer holds what comes meanwhile.
        await Promise.race(inFlight);
        continue;
      }
      let data: Uint8Array;
      let addr: Deno.Addr;
      try {
        [data, addr] = await conn.receive(buffer);
        errors = 0;
      } catch (e) {
        if (this.#stopped()) return; // the socket was closed by stop()
        if (++errors >= MAX_RECEIVE_ERRORS) {
          this.#warn(`discovery socket failed, no longer listening on it: ${errorMessage(e)}`);
          return;
        }
        // Transient (e.g. an ICMP error reported on some platforms): keep listening.
        continue;
      }
      this.#stats.received++;
      if (addr.transport !== "udp") continue;
      // A copy: the buffer is read into again while this datagram is being checked.
      const handled = this.#handle(data.slice(), addr.hostname).catch((e) => {
        // #handle only throws on a bug (or a callback's error it already reported): keep serving.
        this.#warn(`error handling a discovery datagram: ${errorMessage(e)}`);
      }).finally(() => inFlight.delete(handled));
      inFlight.add(handled);
    }
  }

  async #handle(data: Uint8Array, host: string): Promise<void> {
    const received = Date.now();
    if (!this.#takeFloodToken(host, received)) {
      this.#stats.flood++;
      return;
    }
    let a: VerifiedAnnouncement;
    try {
      a = await decodeAnnouncement(data, { keys: this.#keys });
    } catch (e) {
      if (!(e instanceof AnnouncementError)) throw e;
      this.#stats[e.reason]++;
      return;
    }
    if (this.#state !== "running") return;
    if (a.fingerprint === this.#identity.fingerprint) {
      this.#stats.own++;
      return;
    }
    const now = Date.now();
    if (Math.abs(now - a.timestamp) > this.#maxSkewMs) {
      this.#stats.stale++;
      return;
    }
    let state = this.#peers.get(a.fingerprint);
    if (state !== undefined) {
      if (a.timestamp === state.lastTs && a.seq === state.lastSeq) {
        this.#stats.duplicate++;
        return;
      }
      if (a.timestamp < state.lastTs || (a.timestamp === state.lastTs && a.seq < state.lastSeq)) {
        this.#stats.replayed++;
        return;
      }
    } else if (this.#peers.size >= MAX_TRACKED_PEERS) {
      this.#prune(now);
      if (this.#peers.size >= MAX_TRACKED_PEERS) {
        this.#stats.capacity++;
        return;
      }
    }
    this.#stats.accepted++;
    const wasUp = state?.up ?? false;
    // A new reply port means a new process behind the same key (a restart before its timeout).
    // The source address alone may flip between the interfaces of a multi-homed peer.
    const moved = state !== undefined && state.replyPort !== a.replyPort;
    const interval = Math.min(Math.max(a.intervalMs, MIN_PEER_INTERVAL_MS), MAX_PEER_INTERVAL_MS);
    const peer: HeardPeer = {
      name: a.name,
      fingerprint: a.fingerprint,
      spki: a.spki,
      host,
      port: a.tcpPort,
      lastSeen: now,
    };
    if (state === undefined) {
      state = {
        peer,
        up: false,
        lastTs: a.timestamp,
        lastSeq: a.seq,
        replyHost: host,
        replyPort: a.replyPort,
        timeoutMs: MISSED_INTERVALS * interval,
        lastReplyAt: -Infinity,
        lastReplyPort: 0,
      };
      this.#peers.set(a.fingerprint, state);
    }
    state.lastTs = a.timestamp;
    state.lastSeq = a.seq;
    if (a.kind === "goodbye") {
      if (wasUp) {
        state.up = false;
        state.peer.lastSeen = now;
        this.#emitDown(state.peer, "goodbye");
      }
      return;
    }
    state.peer = peer;
    state.up = true;
    state.replyHost = host;
    state.replyPort = a.replyPort;
    state.timeoutMs = MISSED_INTERVALS * interval;
    this.#scheduleSweep(now + state.timeoutMs);
    if (!wasUp) this.#emit(this.#onPeerUp, peer);
    this.#emit(this.#onPeerSeen, peer);
    // Answer a peer that may not know us yet: newly heard, or a new process behind the same key.
    if (a.kind === "hello" && (!wasUp || moved)) await this.#replyTo(state, now);
  }

  /** Takes a token from the source's bucket and from the global one. */
  #takeFloodToken(host: string, now: number): boolean {
    let bucket = this.#floodBuckets.get(host);
    if (bucket === undefined) {
      if (this.#floodBuckets.size >= MAX_FLOOD_SOURCES) {
        // Map order is insertion order, and a used bucket is re-inserted: this drops the stalest.
        const stalest = this.#floodBuckets.keys().next().value as string;
        this.#floodBuckets.delete(stalest);
      }
      bucket = new TokenBucket(this.#floodLimit);
    } else {
      this.#floodBuckets.delete(host);
    }
    this.#floodBuckets.set(host, bucket);
    return bucket.take(now) && this.#globalBucket.take(now);
  }

  // ---- liveness ----

  /** Makes sure a sweep runs no later than `deadline`. */
  #scheduleSweep(deadline: number): void {
    if (this.#state !== "running") return;
    if (this.#sweepTimer !== undefined && this.#sweepAt <= deadline) return;
    clearTimeout(this.#sweepTimer);
    this.#sweepAt = deadline;
    this.#sweepTimer = setTimeout(() => this.#sweep(), Math.max(0, deadline - Date.now()));
  }

  /** Takes down the peers not heard in time, then waits for the next deadline. */
  #sweep(): void {
    this.#sweepTimer = undefined;
    this.#sweepAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const state of this.#peers.values()) {
      if (!state.up) continue;
      const deadline = state.peer.lastSeen + state.timeoutMs;
      if (deadline <= now) {
        state.up = false;
        this.#emitDown(state.peer, "timeout");
      } else {
        next = Math.min(next, deadline);
      }
    }
    this.#prune(now);
    if (next !== Infinity) this.#scheduleSweep(next);
  }

  /**
   * Forgets down peers whose latest timestamp is outside the skew window: any replay of their
   * datagrams would be refused as stale anyway, so the replay memory is no longer needed.
   */
  #prune(now: number): void {
    for (const [fingerprint, state] of this.#peers) {
      if (!state.up && now - state.lastTs > this.#maxSkewMs) this.#peers.delete(fingerprint);
    }
  }

  // ---- callbacks ----

  #emitDown(peer: HeardPeer, reason: PeerDownReason): void {
    if (this.#onPeerDown === undefined) return;
    try {
      this.#onPeerDown(copyPeer(peer), reason);
    } catch (e) {
      this.#warn(`onPeerDown failed: ${errorMessage(e)}`);
    }
  }

  #emit(callback: ((peer: HeardPeer) => void) | undefined, peer: HeardPeer): void {
    if (callback === undefined) return;
    try {
      callback(copyPeer(peer));
    } catch (e) {
      this.#warn(`discovery callback failed: ${errorMessage(e)}`);
    }
  }

  #warn(message: string): void {
    if (this.#onWarning === undefined) return;
    try {
      this.#onWarning(message);
    } catch (e) {
      // The warning channel itself is broken: nothing left to report to but the console.
      console.error("discovery: onWarning failed:", e, "while reporting:", message);
    }
  }
}

/** A classic token bucket. */
class TokenBucket {
  #burst: number;
  #perMs: number;
  #tokens: number;
  #at = -Infinity;

  constructor(limit: Readonly<FloodLimit>) {
    this.#burst = limit.burst;
    this.#perMs = limit.perSecond / 1000;
    this.#tokens = limit.burst;
  }

  /** Takes one token if there is one. */
  take(now: number): boolean {
    if (this.#at !== -Infinity) {
      this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#perMs);
    }
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

function copyPeer(peer: HeardPeer): HeardPeer {
  return { ...peer, spki: peer.spki.slice() };
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
