/**
 * Directed broadcast addresses of the machine's IPv4 interfaces.
 *
 * Pure code: it takes the list {@linkcode Deno.networkInterfaces} returns and computes, for every
 * IPv4 interface that is not loopback and has room for a broadcast address, `address | ~netmask`.
 *
 * @module
 */

/**
 * The directed broadcast address of every IPv4, non-loopback interface, deduplicated, in the order
 * of the input.
 *
 * Any prefix length works (a /8 gives `a.255.255.255`, a /20 gives a mixed address, a /30 its last
 * address). A /31 (point-to-point, RFC 3021) and a /32 have no broadcast address and are skipped, as
 * are loopback (127.0.0.0/8) and entries with an address or netmask that does not parse. Never throws.
 *
 * @example
 * ```ts
 * const targets = broadcastAddresses([
 *   { family: "IPv4", name: "eth0", address: "192.168.1.20", netmask: "255.255.240.0",
 *     scopeid: null, cidr: "192.168.1.20/20", mac: "02:00:00:00:00:01" },
 * ]);
 * // targets is ["192.168.15.255"]
 * ```
 */
export function broadcastAddresses(interfaces: readonly Deno.NetworkInterfaceInfo[]): string[] {
  const out: string[] = [];
  for (const info of interfaces) {
    if (info.family !== "IPv4") continue;
    const address = parseIPv4(info.address);
    const mask = parseIPv4(info.netmask);
    if (address === undefined || mask === undefined) continue;
    // Loopback is judged by address, not by interface name, so a renamed `lo` is still skipped.
    if (address >>> 24 === 127) continue;
    const prefix = prefixLength(mask);
    // A non-contiguous mask is not a real netmask; /31 and /32 have no broadcast address.
    if (prefix === undefined || prefix > 30 || prefix === 0) continue;
    const broadcast = (address | ~mask) >>> 0;
    const text = formatIPv4(broadcast);
    if (!out.includes(text)) out.push(text);
  }
  return out;
}

/** Parses dotted-quad IPv4 text into an unsigned 32-bit number, or `undefined`. */
function parseIPv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value;
}

/** The prefix length of a contiguous netmask, or `undefined` when the mask has holes. */
function prefixLength(mask: number): number | undefined {
  const inverted = ~mask >>> 0;
  // A contiguous mask inverted is 2^k - 1, so adding one leaves a power of two.
  if ((inverted & (inverted + 1)) !== 0) return undefined;
  return 32 - Math.log2(inverted + 1);
}

/** Formats an unsigned 32-bit number as dotted-quad text. */
function formatIPv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join(".");
}
