// MirrorFilterSet + TrafficMirror on two lab hosts, driving the provider directly (issue 10):
// both mirrors bind one filter set, registered by the set's check; their states carry only
// the set's digest and count; each host records the filters it applied; real UDP packets
// from a client are mirrored per the set's filters on both hosts (the program's own
// counters); a set change reaches both; a filter (icmp) slipped in by hand on one host is found
// by read on that host only, as the stray filter, and the next update removes it; an
// inline mirror moves to the set with no map write; a set version this deployment does
// not hold comes from the host's live set or applied record when either holds it, and
// is refused otherwise before anything changes.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalFilterSet, checkMirrorFilterSet } from "../../provider/mirrorFilterSet/schema";
import { operations } from "../../provider/operations";
import { closeAllSessions } from "../../provider/remote/ssh";
import { clearRegisteredContent } from "../../provider/sharedContent";
import { FILTERS_MAP } from "../../provider/trafficMirror/codec";
import { trafficMirrorKind } from "../../provider/trafficMirror/lifecycle";
import { checkTrafficMirror, filterKey, type TrafficMirrorInputs, type TrafficMirrorOutputs } from "../../provider/trafficMirror/schema";
import { createLab, type Lab, type LabClient, type LabHost } from "./lab";
import { slipFilterIn } from "./mirrorByHand";

let lab: Lab;
let privateKey: string;
let hosts: LabHost[];
let client: LabClient;
const mirror = operations(trafficMirrorKind);
const PIN = "/sys/fs/bpf/bpfleet/traffic-mirror/tap";
const TARGET = "tap0";
const FILTERS = [{ protocol: "udp", destinationPort: 5000 }, { protocol: "udp", destinationPort: 5001 }];
const LINES = ["udp and dst port 5000", "udp and dst port 5001"];

/** The set's check, as the engine runs it before any mirror that binds it: registers `filters` (and `olds`). */
function filterSet(filters: unknown[], olds?: unknown[]) {
  const result = checkMirrorFilterSet(olds && { filters: canonicalFilterSet(olds)!.text }, { filters });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  const c = canonicalFilterSet(filters)!;
  return { name: "tap-filters", digest: c.digest, count: c.count };
}

function inputs(host: LabHost, patch: Record<string, unknown>): TrafficMirrorInputs {
  const result = checkTrafficMirror({
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "tap",
    direction: "ingress",
    target: { interface: TARGET },
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as TrafficMirrorInputs;
}

const text = async (host: LabHost, argv: string[]) => String((await lab.inHost(host, argv, { reject: false })).stdout);
const applied = (host: LabHost) => text(host, ["cat", "/var/lib/bpfleet/applied/traffic-mirror/tap"]);
const filtersMap = (host: LabHost) => text(host, ["bpftool", "-j", "map", "dump", "pinned", `${PIN}/maps/${FILTERS_MAP}`]);

/** `count` UDP datagrams from the client to the host's `port`; nothing needs to listen: the mirror sees them on ingress. */
async function sendUdp(host: LabHost, port: number, count = 3): Promise<void> {
  await lab.inClient(client, ["sh", "-c", `for i in $(seq ${count}); do echo tap | socat -u STDIN UDP4-SENDTO:${host.address}:${port}; done`]);
}

/** Three echo requests from the client (each answered: a mirror only copies). */
async function ping(host: LabHost): Promise<void> {
  await lab.inClient(client, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", host.address]);
}

/** Copies the host's program made of the packets sent by `send` (its own counters, read back by read). */
async function mirroredBy(host: LabHost, outs: TrafficMirrorOutputs, send: () => Promise<void>): Promise<number> {
  const before = (await mirror.read("id", outs))!.outs.counters.mirroredPackets;
  await send();
  return (await mirror.read("id", outs))!.outs.counters.mirroredPackets - before;
}

beforeAll(async () => {
  lab = await createLab("mfset", { hosts: 2, clients: 1 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  hosts = lab.hosts;
  client = lab.clients[0]!;
  // The local target in each host: a veth pair (this kernel has no dummy driver), IPv6 off.
  for (const host of hosts) {
    await lab.inHost(host, ["ip", "link", "add", TARGET, "type", "veth", "peer", "name", `${TARGET}p`]);
    for (const dev of [TARGET, `${TARGET}p`]) {
      await lab.inHost(host, ["sysctl", "-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
      await lab.inHost(host, ["ip", "link", "set", dev, "up"]);
    }
  }
}, 300_000);

afterAll(async () => {
  closeAllSessions();
  await lab?.destroy();
});

describe("TrafficMirror bound to a MirrorFilterSet, on two lab hosts", () => {
  const outs: TrafficMirrorOutputs[] = [];

  it("an inline mirror moves to the set holding the same filters with no map write; its state then carries the set's ref, not the filters", async () => {
    for (const host of hosts) outs.push((await mirror.create(inputs(host, { filters: FILTERS }))).outs);
    const before = await Promise.all(hosts.map(filtersMap));
    clearRegisteredContent();
    const ref = filterSet(FILTERS);
    for (const [i, host] of hosts.entries()) {
      outs[i] = await mirror.update("id", outs[i]!, inputs(host, { filterSet: ref }));
      expect(outs[i]!.filterSet).toEqual(ref);
      expect(outs[i]!.filters).toEqual({});
      expect(outs[i]!.filterDrift).toBeUndefined();
      expect(JSON.stringify(outs[i])).not.toContain("5001");
      expect(await applied(host)).toBe(LINES.join("\n"));
      expect(await mirroredBy(host, outs[i]!, () => sendUdp(host, 5001))).toBe(3);
      expect(await mirroredBy(host, outs[i]!, () => sendUdp(host, 6000))).toBe(0);
    }
    // The same records at the same slots: nothing was rewritten, so no packet went unmirrored.
    expect(await Promise.all(hosts.map(filtersMap))).toEqual(before);
  }, 180_000);

  it("one filter added to the set reaches both hosts; each state stays small and names only the new digest", async () => {
    clearRegisteredContent();
    // A set's filter may be given as its text, as state shows it.
    const ref = filterSet([...FILTERS, "udp and dst port 6000"], FILTERS);
    for (const [i, host] of hosts.entries()) {
      outs[i] = await mirror.update("id", outs[i]!, inputs(host, { filterSet: ref }));
      expect(outs[i]!.filterSet).toEqual(ref);
      expect(await applied(host)).toBe([...LINES, "udp and dst port 6000"].join("\n"));
      expect(await mirroredBy(host, outs[i]!, () => sendUdp(host, 6000))).toBe(3);
      expect(await mirroredBy(host, outs[i]!, () => sendUdp(host, 7000))).toBe(0);
      expect(JSON.stringify(outs[i]).length).toBeLessThan(3000);
    }
  }, 120_000);

  it("a filter slipped in by hand on one host is reported by read on that host only, as the stray filter; the next update removes it", async () => {
    const [h1, h2] = hosts as [LabHost, LabHost];
    const live = await slipFilterIn(lab, h2, PIN, { protocol: "icmp" });
    expect(live.map(filterKey)).toEqual([...LINES, "udp and dst port 6000", "icmp"]);
    expect(await mirroredBy(h2, outs[1]!, () => ping(h2))).toBe(3);

    const read1 = await mirror.read("id", outs[0]!);
    expect(read1!.inputs.filterSet).toEqual(outs[0]!.filterSet);
    expect(read1!.inputs.filterDrift).toBeUndefined();
    const read2 = await mirror.read("id", outs[1]!);
    expect(read2!.inputs.filterSet).toEqual(outs[1]!.filterSet);
    expect(read2!.inputs.filters).toEqual({});
    expect(read2!.inputs.filterDrift).toEqual({ icmp: "stray" });

    // `up --target` of the mirror alone (the set's version registered nowhere): the live
    // set is not that version any more, the host's applied record is, and is used.
    const ref = outs[1]!.filterSet!;
    clearRegisteredContent();
    outs[1] = await mirror.update("id", read2!.outs, inputs(h2, { filterSet: ref }));
    expect(outs[1]!.filterSet).toEqual(ref);
    expect(outs[1]!.filterDrift).toBeUndefined();
    expect(await mirroredBy(h2, outs[1]!, () => ping(h2))).toBe(0);
    expect(await mirroredBy(h2, outs[1]!, () => sendUdp(h2, 6000))).toBe(3);
    expect((await mirror.read("id", outs[1]!))!.inputs.filterDrift).toBeUndefined();
  }, 120_000);

  it("`up --target` without the set: the version the live set holds is used; one the host does not hold is refused, nothing changed", async () => {
    const h1 = hosts[0]!;
    clearRegisteredContent();
    const same = outs[0]!.filterSet!;
    const again = await mirror.update("id", { ...outs[0]!, filterDrift: { x: "stray" } }, inputs(h1, { filterSet: same }));
    expect(again.filterSet).toEqual(same);
    const unknown = { ...same, digest: "b".repeat(64) };
    const before = await filtersMap(h1);
    await expect(mirror.update("id", outs[0]!, inputs(h1, { filterSet: unknown }))).rejects.toThrow(
      /mirror tap must apply version bbbbbbbbbbbb of MirrorFilterSet 'tap-filters' \(3 filters\).*target the MirrorFilterSet resource 'tap-filters' too\. Nothing was changed\./s,
    );
    expect(await filtersMap(h1)).toBe(before);
    expect(await applied(h1)).toBe([...LINES, "udp and dst port 6000"].join("\n"));
  }, 120_000);

  it("back to inline filters: the two-set update as before, and the record goes; delete removes the mirror", async () => {
    const h1 = hosts[0]!;
    outs[0] = await mirror.update("id", outs[0]!, inputs(h1, { filters: [{ protocol: "udp", destinationPort: 5000 }] }));
    expect(Object.keys(outs[0]!.filters)).toEqual(["udp and dst port 5000"]);
    expect(outs[0]!.filterSet).toBeUndefined();
    expect(await text(h1, ["ls", "/var/lib/bpfleet/applied/traffic-mirror"])).toBe("");
    expect(await mirroredBy(h1, outs[0]!, () => sendUdp(h1, 5001))).toBe(0);
    expect(await mirroredBy(h1, outs[0]!, () => sendUdp(h1, 5000))).toBe(3);
    for (const [i, host] of hosts.entries()) {
      await mirror.delete("id", outs[i]!);
      expect(await text(host, ["ls", "/var/lib/bpfleet/applied/traffic-mirror"])).toBe("");
      expect(await text(host, ["ls", "/sys/fs/bpf/bpfleet/traffic-mirror"])).toBe("");
    }
  }, 120_000);
});
