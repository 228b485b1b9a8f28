// MaglevService against real hosts: real sshd, real kernel, real connections.
// The provider is driven directly here; test/e2e drives it through the Pulumi CLI.
//
// Topology (one L2 segment, the lab's bridge):
//
//   c1 (client) ──┐            routes VIP4/32 and VIP6/128 via h1 (as an upstream router would)
//   h1 (LB)     ──┤ bridge     XDP load balancer on eth0
//   h2, h3, h4  ──┘            backends: VIP4 and VIP6 on lo, arp_ignore=1/arp_announce=2
//
// DSR: h1 rewrites only the destination MAC; the backends answer c1 directly
// (replies never reach h1). NAT: the backends route c1 via h1 (a host route
// here, a default route in a real deployment), so their replies come back into
// h1's eth0, where the program translates them back to the VIP.
//
// XDP_TX on a veth only delivers when the peer (here the root-side bridge port
// bfl<lab>-h1) has an XDP program: the setup attaches an XDP_PASS program there
// (passXdpTxToBridge in ./traffic).
//
// Each backend runs tiny socat servers that answer with their host name, so
// the client learns which backend served a connection:
//   tcp 80   (v4 and v6, any address) — name, then close
//   tcp 81   — name, then the name again for every line received (established flows)
//   udp 53   bound to the VIPs (dsr: the reply's source must be the VIP)
//   tcp/udp 8080 on the backend's own addresses (nat target port) — name and the peer address
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeIndex, MAPS } from "../../provider/maglev/codec";
import { maglevServiceKind as lb } from "../../provider/maglev/lifecycle";
import { canonicalAddress, checkMaglevService, type MaglevServiceInputs, type MaglevServiceOutputs } from "../../provider/maglev/schema";
import { buildTable, type MaglevTable } from "../../provider/maglev/table";
import { packagedObject } from "../../provider/objects";
import { closeAllSessions } from "../../provider/remote/ssh";
import { lbFlowHash } from "../support/lbFlowHash";
import { createLab, type Lab, type LabClient, type LabHost, type Run } from "./lab";
import { passXdpTxToBridge, tcpdumpListening } from "./traffic";

const VIP4 = "198.51.100.10";
const VIP6 = "2001:db8:100::10";
const PIN = "/sys/fs/bpf/bpfleet/maglev/web";
const M = 65537;

let lab: Lab;
let privateKey: string;
let h1: LabHost;
let backends: LabHost[];
let c1: LabClient;
let service: { id: string; outs: MaglevServiceOutputs } | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function inputs(patch: Record<string, unknown> = {}): MaglevServiceInputs {
  const result = checkMaglevService({
    host: { address: h1.address, hostKey: h1.hostKey, connectTimeoutMs: 5000, commandTimeoutMs: 120_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "web",
    vips: [`${VIP4}:80/tcp`, `${VIP4}:81/tcp`, `${VIP4}:53/udp`, `[${VIP6}]:80/tcp`, `[${VIP6}]:53/udp`],
    backends: backends.flatMap((h) => [h.address, h.address6]),
    mode: "dsr",
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as MaglevServiceInputs;
}

async function inHostText(host: LabHost, argv: string[]): Promise<string> {
  return String((await lab.inHost(host, argv)).stdout).trim();
}

async function pinsOn(host: LabHost): Promise<string> {
  return inHostText(host, ["sh", "-c", "ls -R /sys/fs/bpf/bpfleet 2>/dev/null || true"]);
}

async function xdpOn(host: LabHost): Promise<unknown> {
  return JSON.parse(await inHostText(host, ["bpftool", "-j", "net", "show", "dev", "eth0"]))[0].xdp;
}

// ---------------------------------------------------------------- traffic

const nameOf = (address: string) => [...lab.hosts, ...lab.clients].find((h) => h.address === address || h.address6 === address)?.name;

/**
 * UDP exchanges from the client, one source port after the other: each sends a
 * datagram and waits up to 2 s for the first answer, three tries from the same
 * port (the same flow, so the same backend).
 */
const UDP_CLIENT = `
const dgram = require("dgram");
const [address, port, first, count] = process.argv.slice(1);
const family = address.includes(":") ? "udp6" : "udp4";
async function exchange(sport) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const reply = await new Promise((resolve) => {
      const socket = dgram.createSocket({ type: family, reuseAddr: true });
      const done = (text) => { clearTimeout(timer); socket.close(); resolve(text); };
      const timer = setTimeout(() => done(""), 2000);
      socket.on("message", (m) => done(m.toString().trim()));
      socket.on("error", () => done(""));
      socket.bind(sport, () => socket.send("q\\n", Number(port), address));
    });
    if (reply) return reply;
  }
  return "";
}
(async () => {
  for (let i = 0; i < Number(count); i++) console.log(Number(first) + i, await exchange(Number(first) + i));
})();
`;

/**
 * One short connection (or UDP exchange) per source port, one after the
 * other; what each got back, by source port ("" when nothing came back).
 */
async function exchanges(o: { address: string; port: number; protocol: "tcp" | "udp"; from: number; count: number }): Promise<Map<number, string>> {
  let stdout: string;
  if (o.protocol === "udp") {
    stdout = String((await lab.inClient(c1, [process.execPath, "-e", UDP_CLIENT, o.address, String(o.port), String(o.from), String(o.count)], { timeout: 300_000 })).stdout);
  } else {
    const target = o.address.includes(":") ? `TCP6:[${o.address}]:${o.port}` : `TCP4:${o.address}:${o.port}`;
    // -u (read the connection only): the client closes last, so the TIME_WAIT
    // state of a port pair stays on the server and the next run may reuse it.
    const script = `for p in $(seq ${o.from} ${o.from + o.count - 1}); do printf '%s %s\\n' "$p" "$(timeout 8 socat -u ${target},sourceport=$p,reuseaddr STDOUT 2>/dev/null | tr '\\n' ' ')"; done`;
    stdout = String((await lab.inClient(c1, ["sh", "-c", script], { timeout: 300_000 })).stdout);
  }
  const out = new Map<number, string>();
  for (const line of stdout.split("\n")) {
    const [port, ...rest] = line.trim().split(" ");
    if (port) out.set(Number(port), rest.join(" ").trim());
  }
  return out;
}

function tally(replies: Map<number, string>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const reply of replies.values()) {
    const name = reply.split(" ")[0] || "(none)";
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

/** tcpdump's text output on a host or the client; the returned function stops it and returns the packet lines. */
async function capture(where: LabHost | LabClient, filter: string): Promise<() => Promise<string[]>> {
  // -vv makes tcpdump verify IP and TCP/UDP checksums and flag wrong ones "incorrect".
  const argv = ["tcpdump", "-i", "eth0", "-Q", "in", "-n", "-e", "-l", "-p", "-vv", filter];
  const proc: Run = "sshdPid" in where ? lab.inHost(where, argv, { reject: false }) : lab.inClient(where, argv, { reject: false });
  const stop = await tcpdumpListening(proc, `${where.name} eth0`, 500);
  return async () => {
    const result = await stop();
    // Packet lines start with a timestamp; -vv adds indented continuation lines.
    const lines = String(result.stdout).split("\n");
    const packets: string[] = [];
    for (const line of lines) {
      if (/^\d\d:\d\d:\d\d\./.test(line)) packets.push(line);
      else if (packets.length > 0 && line.trim()) packets[packets.length - 1] += ` ${line.trim()}`;
    }
    return packets;
  };
}

const srcMac = (packet: string) => packet.split(" ")[1]!;

// ---------------------------------------------------------------- the flow hash, recomputed

/** The backend (host name) the table sends a client TCP flow to VIP4:80 from `sport`. */
function predicted(table: MaglevTable, sport: number): string {
  const slot = lbFlowHash({ src: c1.address, dst: VIP4, sport, dport: 80, proto: "tcp" }) % table.size;
  return nameOf(table.backends[table.slots[slot]!]!)!;
}

/**
 * Long-lived connections from the client, each from its own source port: the
 * first line each got (the backend's name), then, on request, what each
 * answers to one more line (its name, or the error that ended it).
 */
const HOLDER = `
const net = require("net");
const [host, port, first, count] = process.argv.slice(1);
const conns = [];
for (let i = 0; i < Number(count); i++) setTimeout(() => {
  const c = { sport: Number(first) + i, lines: [], buf: "" };
  c.socket = net.connect({ host, port: Number(port), localPort: c.sport });
  c.socket.setEncoding("utf8");
  c.socket.on("data", (d) => { c.buf += d; let n; while ((n = c.buf.indexOf("\\n")) >= 0) { c.lines.push(c.buf.slice(0, n)); c.buf = c.buf.slice(n + 1); } });
  c.socket.on("error", (e) => { c.error = e.code; });
  c.socket.on("close", () => { c.closed = true; });
  conns.push(c);
}, 20 * i);
const started = Date.now();
const ready = setInterval(() => {
  if (Date.now() - started < 15000 && (conns.length < Number(count) || !conns.every((c) => c.lines.length > 0 || c.error))) return;
  clearInterval(ready);
  console.log(JSON.stringify(conns.map((c) => [c.sport, c.lines[0] ?? c.error ?? null])));
}, 100);
process.stdin.on("data", () => {
  for (const c of conns) if (!c.closed) c.socket.write("again\\n");
  setTimeout(() => { console.log(JSON.stringify(conns.map((c) => [c.sport, c.lines[1] ?? c.error ?? (c.closed ? "closed" : null)]))); process.exit(0); }, 2500);
});
`;

async function holdConnections(from: number, count: number): Promise<{ first: Map<number, string>; again: () => Promise<Map<number, string>> }> {
  const proc = lab.inClient(c1, [process.execPath, "-e", HOLDER, VIP4, "81", String(from), String(count)], { stdin: "pipe", reject: false });
  const lines: string[] = [];
  let pending = "";
  const waiters: (() => void)[] = [];
  proc.stdout!.on("data", (d: Buffer) => {
    pending += d.toString();
    let n;
    while ((n = pending.indexOf("\n")) >= 0) {
      lines.push(pending.slice(0, n));
      pending = pending.slice(n + 1);
      waiters.splice(0).forEach((w) => w());
    }
  });
  const nextLine = async (i: number) => {
    while (lines.length <= i) await new Promise<void>((r) => waiters.push(r));
    return new Map(JSON.parse(lines[i]!) as [number, string][]);
  };
  const first = await nextLine(0);
  return {
    first,
    again: async () => {
      proc.stdin!.write("go\n");
      const result = await nextLine(1);
      await proc;
      return result;
    },
  };
}

// ---------------------------------------------------------------- setup

beforeAll(async () => {
  lab = await createLab("lblab", { hosts: 4, clients: 1 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  [h1] = lab.hosts as [LabHost];
  backends = lab.hosts.slice(1);
  c1 = lab.clients[0]!;
  await passXdpTxToBridge(lab, h1);
  for (const h of backends) {
    const name = h.name;
    await lab.inHost(h, [
      "sh",
      "-c",
      `ip addr add ${VIP4}/32 dev lo && ip addr add ${VIP6}/128 dev lo && ` +
        "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2",
    ]);
    const servers = [
      `TCP6-LISTEN:80,ipv6only=0,fork,reuseaddr,backlog=128 SYSTEM:'echo ${name}'`,
      `TCP6-LISTEN:81,ipv6only=0,fork,reuseaddr,backlog=128 SYSTEM:'echo ${name}; while read l; do echo ${name}; done'`,
      `-t 0.1 UDP4-RECVFROM:53,bind=${VIP4},fork SYSTEM:'echo ${name}'`,
      `-t 0.1 UDP6-RECVFROM:53,bind=[${VIP6}],fork SYSTEM:'echo ${name}'`,
      `TCP4-LISTEN:8080,bind=${h.address},fork,reuseaddr SYSTEM:'echo ${name} $SOCAT_PEERADDR'`,
      `TCP6-LISTEN:8080,bind=[${h.address6}],fork,reuseaddr SYSTEM:'echo ${name} $SOCAT_PEERADDR'`,
      `-t 0.1 UDP4-RECVFROM:8080,bind=${h.address},fork SYSTEM:'echo ${name} $SOCAT_PEERADDR'`,
      `-t 0.1 UDP6-RECVFROM:8080,bind=[${h.address6}],fork SYSTEM:'echo ${name} $SOCAT_PEERADDR'`,
    ];
    // Detached: `lab.sh down` kills everything left in the namespace.
    await lab.inHost(h, ["sh", "-c", servers.map((s) => `setsid socat ${s} </dev/null >/dev/null 2>&1 &`).join("\n")]);
  }
  await lab.inClient(c1, ["ip", "route", "add", `${VIP4}/32`, "via", h1.address]);
  await lab.inClient(c1, ["ip", "-6", "route", "add", `${VIP6}/128`, "via", h1.address6]);
  await sleep(300);
});

afterAll(async () => {
  if (service) await lb.delete(service.id, service.outs).catch(() => undefined);
  closeAllSessions();
  await lab?.destroy();
});

// ---------------------------------------------------------------- DSR

describe("MaglevService in dsr mode", () => {
  let before: Map<number, string>;
  let removedIndex: number | undefined;

  it("create: 60 TCP connections to the IPv4 VIP spread over the three backends, each to the backend the Maglev table names", async () => {
    const started = Date.now();
    service = await lb.create(inputs());
    console.log(`create (2 tables of ${M} slots, 6 backends, 5 VIPs): ${Date.now() - started} ms`);
    expect(service.id).toBe(`root@${h1.address}/maglev/web`);
    expect(service.outs.attachMode).toBe("driver");
    // MACs resolved on h1 from its neighbour table: the lab's fixed MACs.
    expect(service.outs.backendMacs).toEqual(Object.fromEntries(backends.flatMap((h) => [[h.address, h.mac], [h.address6, h.mac]])));

    before = await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 41001, count: 60 });
    const counts = tally(before);
    console.log("dsr tcp/v4, 60 connections:", counts);
    expect(Object.keys(counts).sort()).toEqual(["h2", "h3", "h4"]);
    for (const n of Object.values(counts)) expect(n).toBeGreaterThanOrEqual(8);
    const table = buildTable(backends.map((h) => ({ id: h.address })), M);
    for (const [port, name] of before) expect(name, `source port ${port}`).toBe(predicted(table, port));
  });

  it("the backends answer the client directly: replies come from their MACs, none reaches h1, checksums intact", async () => {
    const atClient = await capture(c1, `src host ${VIP4} or src host ${VIP6}`);
    const atLb = await capture(h1, `(src host ${VIP4} or src host ${VIP6}) and ether dst ${h1.mac}`);
    const vipBefore = (await lb.read(service!.id, service!.outs))!.outs.counters.vips[`${VIP4}:80/tcp`]!.packets;
    const replies = await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 43001, count: 20 });
    const v6 = await exchanges({ address: VIP6, port: 80, protocol: "tcp", from: 43001, count: 10 });
    expect([...replies.values(), ...v6.values()].every((r) => /^h[234]$/.test(r))).toBe(true);
    const clientSaw = await atClient();
    const lbSaw = await atLb();
    expect(lbSaw).toEqual([]);
    expect(clientSaw.length).toBeGreaterThanOrEqual(30 * 3);
    const backendMacs = new Set(backends.map((h) => h.mac));
    expect(clientSaw.filter((p) => !backendMacs.has(srcMac(p)))).toEqual([]);
    expect(clientSaw.filter((p) => p.includes("incorrect"))).toEqual([]);
    // The load balancer counted the client's side only: SYN, ACK, FIN, ACK per connection at least.
    const vipAfter = (await lb.read(service!.id, service!.outs))!.outs.counters.vips[`${VIP4}:80/tcp`]!.packets;
    expect(vipAfter - vipBefore).toBeGreaterThanOrEqual(20 * 3);
  });

  it("UDP (v4 and v6) and TCP over IPv6 are balanced over the backends too", async () => {
    const udp4 = await exchanges({ address: VIP4, port: 53, protocol: "udp", from: 44001, count: 24 });
    const udp6 = await exchanges({ address: VIP6, port: 53, protocol: "udp", from: 44001, count: 24 });
    const tcp6 = await exchanges({ address: VIP6, port: 80, protocol: "tcp", from: 44001, count: 30 });
    console.log("dsr udp/v4:", tally(udp4), "udp/v6:", tally(udp6), "tcp/v6:", tally(tcp6));
    for (const replies of [udp4, udp6, tcp6]) {
      const counts = tally(replies);
      expect(Object.keys(counts).sort()).toEqual(["h2", "h3", "h4"]);
    }
  });

  it("read: VIPs, backends, counters per VIP and backend, and the digest of the tables as written", async () => {
    const started = Date.now();
    const read = await lb.read(service!.id, service!.outs);
    console.log(`read (2 tables of ${M} slots looked up): ${Date.now() - started} ms`);
    expect(read!.inputs.vips).toEqual(service!.outs.vips);
    expect(read!.inputs.backends).toEqual(service!.outs.backends);
    expect(read!.outs.tableDigest).toBe(service!.outs.tableDigest);
    expect(read!.outs.backendIndexes).toEqual(service!.outs.backendIndexes);
    for (const h of backends) {
      expect(read!.outs.counters.backends[h.address]!.packets).toBeGreaterThan(0);
      expect(read!.outs.counters.backends[h.address6]!.packets).toBeGreaterThan(0);
    }
    // h1 does not forward: the FIB has no answer and the program uses the resolved MACs.
    expect(read!.outs.counters.totals.staticMac!.packets).toBeGreaterThan(0);
    expect(read!.outs.counters.totals.fibDrop!.packets).toBe(0);
    service = { id: service!.id, outs: read!.outs };
  });

  it("removing a backend moves only its flows: new connections per source port, and established connections through the connection table", async () => {
    const h4 = backends[2]!;
    const held = await holdConnections(45001, 30);
    expect([...held.first.values()].every((n) => /^h[234]$/.test(n)), JSON.stringify([...held.first])).toBe(true);

    removedIndex = service!.outs.backendIndexes[h4.address];
    const started = Date.now();
    const outs = await lb.update(service!.id, service!.outs, inputs({ backends: backends.flatMap((h) => (h === h4 ? [h.address6] : [h.address, h.address6])) }));
    console.log(`update removing one backend: ${Date.now() - started} ms`);
    expect(Object.keys(outs.backends)).not.toContain(h4.address);
    expect(outs.backendIndexes[backends[0]!.address]).toBe(service!.outs.backendIndexes[backends[0]!.address]);
    service = { id: service!.id, outs };

    // New connections follow the table: h4's move, the others stay, except the
    // few slots Maglev itself hands from one remaining backend to the other.
    const after = await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 41001, count: 60 });
    const table = buildTable([backends[0]!, backends[1]!].map((h) => ({ id: h.address })), M);
    for (const [port, name] of after) expect(name, `source port ${port}`).toBe(predicted(table, port));
    const wasOnH4 = [...before].filter(([, n]) => n === "h4").map(([p]) => p);
    const stayed = [...before].filter(([, n]) => n !== "h4");
    const movedAmongRemaining = stayed.filter(([p, n]) => after.get(p) !== n).length;
    console.log(`backend removal: ${wasOnH4.length} of 60 flows were on h4 and moved; ${movedAmongRemaining} of ${stayed.length} others moved (as the table predicts)`);
    expect(wasOnH4.every((p) => after.get(p) === "h2" || after.get(p) === "h3")).toBe(true);
    expect(movedAmongRemaining).toBeLessThanOrEqual(1);

    // Established connections keep their backend; those on h4 are gone (its
    // record is cleared, the flow falls back to the table, whose backend resets it).
    const again = await held.again();
    for (const [port, name] of held.first) {
      if (name === "h4") expect(again.get(port), `connection from ${port}`).not.toMatch(/^h[234]$/);
      else expect(again.get(port), `connection from ${port}`).toBe(name);
    }
    console.log("established:", [...held.first].map(([p, n]) => `${n}->${again.get(p)}`).join(" "));
  });

  it("adding a backend under traffic: no connection fails while the batch runs; new connections follow the table (about a third move to it), established ones stay where they are (the connection table)", async () => {
    const h4 = backends[2]!;
    const held = await holdConnections(48001, 30);
    // Short connections back to back while the batch is applied: the delta
    // writes keep the table valid at every step, so none may fail.
    const stop = join(mkdtempSync(join(tmpdir(), "maglev-")), "stop");
    const load = lab.inClient(c1, [
      "sh",
      "-c",
      `ok=0; fail=0; while [ ! -e ${stop} ]; do if timeout 3 socat -u TCP:${VIP4}:80 STDOUT 2>/dev/null | grep -q '^h[234]$'; then ok=$((ok+1)); else fail=$((fail+1)); fi; done; echo "$ok $fail"`,
    ]);
    await sleep(1000);
    const outs = await lb.update(service!.id, service!.outs, inputs());
    await sleep(1000);
    writeFileSync(stop, "");
    const [ok, failed] = String((await load).stdout).trim().split(" ").map(Number);
    console.log(`during the update: ${ok} connections answered, ${failed} failed`);
    expect(ok).toBeGreaterThan(10);
    expect(failed).toBe(0);
    // Not the index h4 had before its removal: lb_flows may still name that one.
    expect(outs.backendIndexes[h4.address]).not.toBe(removedIndex);
    service = { id: service!.id, outs };

    const table = buildTable(backends.map((h) => ({ id: h.address })), M);
    const fresh = await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 48001, count: 30 });
    for (const [port, name] of fresh) expect(name, `source port ${port}`).toBe(predicted(table, port));
    const nowOnH4 = [...fresh].filter(([, n]) => n === "h4").map(([p]) => p);
    expect(nowOnH4.length).toBeGreaterThanOrEqual(3);

    const again = await held.again();
    for (const [port, name] of held.first) expect(again.get(port), `connection from ${port}`).toBe(name);
    console.log(`backend addition: ${nowOnH4.length} of 30 new connections go to h4; all 30 established connections kept their backend (${nowOnH4.length} of them by their lb_flows entry against the table)`);
  });

  it("a table slot changed by hand shows up as drift in read, and the next update rewrites the tables", async () => {
    const slot = 7;
    const wrong = service!.outs.backendIndexes[backends[0]!.address6]!;
    await lab.inHost(h1, ["bpftool", "map", "update", "pinned", `${PIN}/maps/${MAPS.table}`, "key", "hex", ...Buffer.from(encodeIndex(slot)).toString("hex").match(/../g)!, "value", "hex", ...Buffer.from(encodeIndex(wrong)).toString("hex").match(/../g)!]);
    const read = await lb.read(service!.id, service!.outs);
    expect(read!.outs.tableDigest).not.toBe(service!.outs.tableDigest);
    expect(lb.pendingChanges!(read!.outs, inputs({ backends: Object.values(service!.outs.backends) })).join()).toMatch(/maglev_table does not hold/);
    const outs = await lb.update(service!.id, read!.outs, service!.outs);
    expect(outs.tableDigest).toBe(service!.outs.tableDigest);
    const reread = await lb.read(service!.id, outs);
    expect(reread!.outs.tableDigest).toBe(service!.outs.tableDigest);
    service = { id: service!.id, outs: reread!.outs };
  });

  it("a backend's neighbour that moves shows up as next-hop drift in read; the next update rewrites its record (the next-hop cache) and traffic follows", async () => {
    const h2 = backends[0]!;
    const moved = "02:00:00:00:99:02";
    const backendsNow = inputs({ backends: Object.values(service!.outs.backends) });
    await lab.inHost(h1, ["ip", "neigh", "replace", h2.address, "lladdr", moved, "dev", "eth0", "nud", "permanent"]);
    try {
      const read = await lb.read(service!.id, service!.outs);
      expect(read!.outs.nextHopDrift).toEqual([`${h2.address}: record ${h2.mac} mtu 1500, host now ${moved} mtu 1500`]);
      expect(lb.pendingChanges!(read!.outs, backendsNow).join()).toMatch(/next hops changed on the host/);
      const outs = await lb.update(service!.id, read!.outs, backendsNow);
      expect(outs.backendMacs[h2.address]).toBe(moved);
      expect((await lb.read(service!.id, outs))!.outs.nextHopDrift).toEqual([]);
      service = { id: service!.id, outs };
    } finally {
      await lab.inHost(h1, ["ip", "neigh", "replace", h2.address, "lladdr", h2.mac, "dev", "eth0", "nud", "reachable"]);
    }
    const read = await lb.read(service!.id, service!.outs);
    expect(read!.outs.nextHopDrift).toEqual([`${h2.address}: record ${moved} mtu 1500, host now ${h2.mac} mtu 1500`]);
    const outs = await lb.update(service!.id, read!.outs, backendsNow);
    expect(outs.backendMacs[h2.address]).toBe(h2.mac);
    service = { id: service!.id, outs };
    const answered = tally(await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 45001, count: 30 }));
    expect(Object.keys(answered).sort()).toEqual(["h2", "h3", "h4"]);
  });
});

// ---------------------------------------------------------------- upgrade

describe("MaglevService object upgrade", () => {
  it("a new BPF object is swapped in against the same pinned maps: tables, flows and counters survive", async () => {
    const mapId = async (map: string) => JSON.parse(await inHostText(h1, ["bpftool", "-j", "map", "show", "pinned", `${PIN}/maps/${map}`])).id as number;
    const before = { table: await mapId(MAPS.table), flows: await mapId(MAPS.flows), vips: await mapId(MAPS.vips) };
    const stale = { ...service!.outs, objectSha256: "0".repeat(64) };
    expect(lb.pendingChanges!(stale, inputs({ backends: Object.values(service!.outs.backends) })).join()).toMatch(/BPF object/);
    const outs = await lb.update(service!.id, stale, inputs({ backends: Object.values(service!.outs.backends) }));
    expect(outs.programId).not.toBe(service!.outs.programId);
    expect(outs.objectSha256).toBe(packagedObject("xdp_maglev").sha256);
    expect(outs.attachMode).toBe("driver");
    expect(outs.tableDigest).toBe(service!.outs.tableDigest);
    expect(outs.counters.vips[`${VIP4}:80/tcp`]!.packets).toBeGreaterThanOrEqual(service!.outs.counters.vips[`${VIP4}:80/tcp`]!.packets);
    expect({ table: await mapId(MAPS.table), flows: await mapId(MAPS.flows), vips: await mapId(MAPS.vips) }).toEqual(before);
    expect(await pinsOn(h1)).not.toMatch(/prog_new|maps_staged/);
    const replies = await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 49001, count: 15 });
    expect(Object.keys(tally(replies)).sort()).toEqual(["h2", "h3", "h4"]);
    service = { id: service!.id, outs };
  });
});

// ---------------------------------------------------------------- NAT

describe("MaglevService in nat mode (updated in place from dsr)", () => {
  const natInputs = () =>
    inputs({
      mode: "nat",
      vips: [`${VIP4}:80/tcp`, `${VIP4}:53/udp`, `[${VIP6}]:80/tcp`, `[${VIP6}]:53/udp`],
      backends: backends.flatMap((h) => [
        { address: h.address, port: 8080 },
        { address: h.address6, port: 8080 },
      ]),
    });

  it("is refused while h1 does not forward, and nothing changes", async () => {
    await expect(lb.update(service!.id, service!.outs, natInputs())).rejects.toThrow(/IPv4 forwarding is off on eth0, and nat mode forwards the backends' replies.*sysctl -w net\.ipv4\.conf\.eth0\.forwarding=1/s);
    const read = await lb.read(service!.id, service!.outs);
    expect(read!.outs.mode).toBe("dsr");
    expect(read!.outs.tableDigest).toBe(service!.outs.tableDigest);
  });

  it("connections reach the backends' own port 8080 with the client's address, and replies come back through h1 translated to the VIP", async () => {
    // h1 routes; the backends send their replies to the client via h1 (and ignore redirects to go direct).
    await lab.inHost(h1, ["sysctl", "-qw", "net.ipv4.conf.eth0.forwarding=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"]);
    for (const h of backends) {
      await lab.inHost(h, ["sh", "-c", `ip route add ${c1.address}/32 via ${h1.address} && ip -6 route add ${c1.address6}/128 via ${h1.address6} && sysctl -qw net.ipv4.conf.all.accept_redirects=0 net.ipv4.conf.eth0.accept_redirects=0 net.ipv6.conf.all.accept_redirects=0 net.ipv6.conf.eth0.accept_redirects=0`]);
    }
    const outs = await lb.update(service!.id, service!.outs, natInputs());
    expect(outs.programId).toBe(service!.outs.programId);
    expect(outs.reverseNat).toBe(true);
    service = { id: service!.id, outs };

    const atClient = await capture(c1, `src host ${VIP4} or src host ${VIP6}`);
    const tcp4 = await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 46001, count: 60 });
    const tcp6 = await exchanges({ address: VIP6, port: 80, protocol: "tcp", from: 46001, count: 30 });
    const udp4 = await exchanges({ address: VIP4, port: 53, protocol: "udp", from: 46001, count: 30 });
    const udp6 = await exchanges({ address: VIP6, port: 53, protocol: "udp", from: 46001, count: 30 });
    const clientSaw = await atClient();
    console.log("nat tcp/v4:", tally(tcp4), "tcp/v6:", tally(tcp6), "udp/v4:", tally(udp4), "udp/v6:", tally(udp6));
    for (const [replies, client] of [[tcp4, c1.address], [tcp6, c1.address6], [udp4, c1.address], [udp6, c1.address6]] as const) {
      expect(Object.keys(tally(replies)).sort(), JSON.stringify([...replies])).toEqual(["h2", "h3", "h4"]);
      // The backend served on 8080 and saw the client itself (NAT rewrites the destination only).
      for (const reply of replies.values()) {
        const [name, peer = ""] = reply.split(" ");
        expect(name).toMatch(/^h[234]$/);
        expect(canonicalAddress(peer.replace(/^\[|\]$/g, ""))?.address, reply).toBe(client);
      }
    }
    // Every reply the client got from a VIP was sent by h1 (translated there), with correct checksums.
    expect(clientSaw.length).toBeGreaterThanOrEqual(60 * 3);
    expect(clientSaw.filter((p) => srcMac(p) !== h1.mac)).toEqual([]);
    expect(clientSaw.filter((p) => p.includes("incorrect"))).toEqual([]);
    const read = await lb.read(service!.id, service!.outs);
    expect(read!.outs.counters.totals.reverseNat!.packets).toBeGreaterThanOrEqual(clientSaw.length);
    service = { id: service!.id, outs: read!.outs };
  });

  it("delete: detaches and removes every pin; the VIP no longer answers; deleting again succeeds", async () => {
    await lb.delete(service!.id, service!.outs);
    expect(await pinsOn(h1)).toBe("");
    expect(await xdpOn(h1)).toEqual([]);
    const replies = await exchanges({ address: VIP4, port: 80, protocol: "tcp", from: 47001, count: 3 });
    expect([...replies.values()]).toEqual(["", "", ""]);
    await lb.delete(service!.id, service!.outs);
    expect(await lb.read(service!.id, service!.outs)).toBeUndefined();
    service = undefined;
  });
});

// ---------------------------------------------------------------- refusals

describe("MaglevService refuses, and leaves the host as it was", () => {
  it("a backend whose MAC cannot be resolved", async () => {
    const ghost = lab.subnet4.replace(/0\/24$/, "99");
    await expect(lb.create(inputs({ backends: [backends[0]!.address, ghost, backends[0]!.address6] }))).rejects.toThrow(
      new RegExp(`backend ${ghost.replace(/\./g, "\\.")}: cannot resolve the MAC address of ${ghost.replace(/\./g, "\\.")} on eth0 \\(neighbour (FAILED|INCOMPLETE|entry missing) after a ping\\)`),
    );
    expect(await pinsOn(h1)).toBe("");
    expect(await xdpOn(h1)).toEqual([]);
  });

  it("an XDP program it did not attach", async () => {
    await lab.inHost(h1, ["sh", "-c", "cat > /tmp/foreign.bpf.o"], { input: packagedObject("empty_xdp").bytes as unknown as string });
    await lab.inHost(h1, ["ip", "link", "set", "dev", "eth0", "xdpgeneric", "obj", "/tmp/foreign.bpf.o", "sec", "xdp"]);
    try {
      await expect(lb.create(inputs())).rejects.toThrow(/already has XDP program id \d+ attached .*did not attach/);
      expect(await pinsOn(h1)).toBe("");
      expect(JSON.stringify(await xdpOn(h1))).toMatch(/"mode":"generic"/);
    } finally {
      await lab.inHost(h1, ["ip", "link", "set", "dev", "eth0", "xdpgeneric", "off"]);
    }
  });
});
