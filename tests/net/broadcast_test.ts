import assert from "node:assert/strict";
import { broadcastAddresses } from "../../lib/net/broadcast.ts";

/** A network interface entry as Deno.networkInterfaces() returns it. */
function iface(
  address: string,
  netmask: string,
  opts: { family?: "IPv4" | "IPv6"; name?: string } = {},
): Deno.NetworkInterfaceInfo {
  return {
    family: opts.family ?? "IPv4",
    name: opts.name ?? "eth0",
    address,
    netmask,
    scopeid: opts.family === "IPv6" ? 0 : null,
    cidr: `${address}/?`,
    mac: "02:00:00:00:00:01",
  };
}

Deno.test("broadcastAddresses: vectors for every common prefix length", () => {
  // Pure computation over made-up interfaces: no packet is sent to any of these addresses.
  const vectors: [string, string, string][] = [
    ["10.1.2.3", "255.0.0.0", "10.255.255.255"], // /8
    ["172.16.5.4", "255.240.0.0", "172.31.255.255"], // /12
    ["172.16.5.4", "255.255.0.0", "172.16.255.255"], // /16
    ["192.168.17.20", "255.255.240.0", "192.168.31.255"], // /20
    ["192.168.1.20", "255.255.254.0", "192.168.1.255"], // /23
    ["192.168.0.20", "255.255.254.0", "192.168.1.255"], // /23, lower half
    ["192.168.1.20", "255.255.255.0", "192.168.1.255"], // /24
    ["192.168.1.200", "255.255.255.128", "192.168.1.255"], // /25
    ["192.168.1.20", "255.255.255.128", "192.168.1.127"], // /25, lower half
    ["192.168.1.70", "255.255.255.192", "192.168.1.127"], // /26
    ["192.168.1.9", "255.255.255.248", "192.168.1.15"], // /29
    ["192.168.1.5", "255.255.255.252", "192.168.1.7"], // /30
    ["10.0.0.1", "255.255.255.0", "10.0.0.255"],
  ];
  for (const [address, netmask, expected] of vectors) {
    assert.deepEqual(broadcastAddresses([iface(address, netmask)]), [expected], address);
  }
});

Deno.test("broadcastAddresses: /31, /32, loopback, IPv6 and junk yield nothing", () => {
  assert.deepEqual(
    broadcastAddresses([
      iface("10.0.0.0", "255.255.255.254"), // /31 point-to-point
      iface("10.0.0.7", "255.255.255.255"), // /32
      iface("127.0.0.1", "255.0.0.0", { name: "lo" }),
      iface("127.0.0.1", "255.0.0.0", { name: "renamed" }), // loopback by address, not by name
      iface("fd00::2", "ffff:ffff:ffff:ffff::", { family: "IPv6" }),
      iface("192.168.1.2", "255.0.255.0"), // not a contiguous mask
      iface("192.168.1.2", "0.0.0.0"), // /0
      iface("192.168.1", "255.255.255.0"),
      iface("192.168.1.256", "255.255.255.0"),
      iface("192.168.1.2", "255.255.255.x"),
      iface("", ""),
    ]),
    [],
  );
});

Deno.test("broadcastAddresses: deduplicates and keeps input order", () => {
  assert.deepEqual(
    broadcastAddresses([
      iface("127.0.0.1", "255.0.0.0", { name: "lo" }),
      iface("192.168.1.20", "255.255.255.0", { name: "eth0" }),
      iface("10.9.0.1", "255.255.0.0", { name: "wg0" }),
      iface("192.168.1.21", "255.255.255.0", { name: "eth0" }), // second address, same subnet
      iface("192.168.1.22", "255.255.255.0", { name: "br0" }),
    ]),
    ["192.168.1.255", "10.9.255.255"],
  );
});

Deno.test("broadcastAddresses: empty input gives an empty list", () => {
  assert.deepEqual(broadcastAddresses([]), []);
});
