/**
 * A frame-aware TCP proxy on loopback for tests: it decodes frames in each direction and lets a
 * test drop, duplicate, alter or reorder them.
 *
 * @module
 */

import { encodeFrames, FrameDecoder } from "../../lib/net/frame.ts";

/** Decides what to forward for the `index`-th frame in `direction`. */
export type FrameHook = (
  direction: "c->s" | "s->c",
  index: number,
  frame: Uint8Array,
) => Uint8Array[];

/** Starts a proxy to `target`; returns its port and a close function. */
export function startProxy(
  target: { hostname: string; port: number },
  hook: FrameHook = (_d, _i, f) => [f],
): { port: number; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const pumps: Promise<void>[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn, dir: "c->s" | "s->c") => {
    const decoder = new FrameDecoder({ maxFrameSize: 1 << 24 });
    let index = 0;
    try {
      for await (const chunk of from.readable) {
        const out: Uint8Array[] = [];
        for (const f of decoder.push(chunk)) out.push(...hook(dir, index++, f.slice()));
        if (out.length) {
          const bytes = encodeFrames(out, { maxFrameSize: 1 << 24 });
          let at = 0;
          while (at < bytes.length) at += await to.write(bytes.subarray(at));
        }
      }
    } catch {
      // One side went away: the proxy just stops forwarding.
    } finally {
      for (const c of [from, to]) {
        if (conns.delete(c)) closeQuietly(c);
      }
    }
  };
  const accepting = (async () => {
    for await (const client of listener) {
      const server = await Deno.connect(target);
      conns.add(client);
      conns.add(server);
      pumps.push(pump(client, server, "c->s"), pump(server, client, "s->c"));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: async () => {
      listener.close();
      await accepting.catch(() => {});
      for (const c of conns) closeQuietly(c);
      conns.clear();
      await Promise.allSettled(pumps);
    },
  };
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch (e) {
    // A stream that reached its end may have released the resource already.
    if (!(e instanceof Deno.errors.BadResource)) throw e;
  }
}
