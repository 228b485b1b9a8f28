// MaglevService's check, diff and plan, pure: canonical inputs, the bad
// inputs a user can write (each refused with the property and the rule), and
// the order of the map writes a change becomes.
import { describe, expect, it } from "vitest";
import { failureAt } from "../support/checkFailure";
import { diffInputs, UNKNOWN } from "../../provider/dynamicAdapter";
import { provider } from "../../provider/maglev/dynamic";
import { decodeBackend, decodeConfig, decodeIndex, decodeVip, decodeVipKey, MAPS, SIZES, type BackendRecord, type VipValue } from "../../provider/maglev/codec";
import { maglevServiceKind } from "../../provider/maglev/lifecycle";
import { nextHopMacs, nextHopMtus, parseRoutingSurvey, tunnelSources } from "../../provider/maglev/neighbours";
import { allocateBackends, planService, restoreOperations, tableDigest, tableImage, type DesiredService, type ObservedService } from "../../provider/maglev/plan";
import { observedVipIndex, servedVips } from "../../provider/maglev/vipIndex";
import { checkMaglevService, TABLE_OFFSET, type MaglevServiceInputs, type MaglevServiceOutputs } from "../../provider/maglev/schema";
import type { MapOperation } from "../../provider/remote/mapOperations";
import { HostPreconditionError } from "../../provider/remote/preflight";

const valid = {
  host: { address: "10.200.1.11", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
  credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
  interface: "eth0",
  name: "web",
  vips: ["198.51.100.10:80/tcp", { address: "2001:DB8:100::10", port: 80, protocol: "tcp" }, "198.51.100.10:53/UDP"],
  backends: [{ address: "10.200.1.13", weight: 2 }, "10.200.1.12", { address: "fd00:bf:1:0::12", mac: "02-BF-01-01-00-02" }],
  mode: "dsr",
};

function check(news: Record<string, unknown>) {
  return checkMaglevService(news);
}

const canonical = () => check(valid).inputs as MaglevServiceInputs;

describe("MaglevService check", () => {
  it("canonicalises VIPs and backends into records keyed by canonical text, sorted", () => {
    const result = check(valid);
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.vips).toEqual({
      "198.51.100.10:53/udp": { address: "198.51.100.10", port: 53, protocol: "udp" },
      "198.51.100.10:80/tcp": { address: "198.51.100.10", port: 80, protocol: "tcp" },
      "[2001:db8:100::10]:80/tcp": { address: "2001:db8:100::10", port: 80, protocol: "tcp" },
    });
    expect(result.inputs?.backends).toEqual({
      "10.200.1.12": { address: "10.200.1.12", weight: 1 },
      "10.200.1.13": { address: "10.200.1.13", weight: 2 },
      "fd00:bf:1::12": { address: "fd00:bf:1::12", weight: 1, mac: "02:bf:01:01:00:02" },
    });
    expect(Object.keys(result.inputs?.backends)).toEqual(["10.200.1.12", "10.200.1.13", "fd00:bf:1::12"]);
    expect(result.inputs).toMatchObject({ mode: "dsr", tableSize: 65537, connectionTable: true, xdpMode: "auto", host: { port: 22, user: "root" } });
  });

  it("accepts the canonical record form it produced, and produces it again", () => {
    const once = canonical();
    expect(check(once as never).inputs).toEqual(once);
  });

  it("recomputes record keys from the values rather than trusting them", () => {
    const result = check({ ...valid, backends: { whatever: { address: "10.200.1.12" }, other: { address: "fd00::12" } } });
    expect(Object.keys(result.inputs!.backends)).toEqual(["10.200.1.12", "fd00::12"]);
  });

  it("keys nat backends by address and port, so one host can serve on two ports", () => {
    const result = check({ ...valid, mode: "nat", vips: ["198.51.100.10:80/tcp"], backends: [{ address: "10.0.0.2", port: 8080 }, { address: "10.0.0.2", port: 8081 }] });
    expect(result.failures).toBeUndefined();
    expect(Object.keys(result.inputs!.backends)).toEqual(["10.0.0.2:8080", "10.0.0.2:8081"]);
  });

  it("lets ipip mix families: an IPv4 VIP may tunnel to IPv6 backends", () => {
    const result = check({ ...valid, mode: "ipip", vips: ["198.51.100.10:80/tcp"], backends: ["fd00::2", "10.0.0.2"] });
    expect(result.failures).toBeUndefined();
  });

  it.each([
    // VIPs
    [{ vips: ["198.51.100.10/tcp"] }, "vips[0]", /has no port: write "address:port\/protocol"/],
    [{ vips: ["198.51.100.10"] }, "vips[0]", /has no port/],
    [{ vips: ["198.51.100.10:80"] }, "vips[0]", /has no protocol/],
    [{ vips: ["198.51.100.10:80/icmp"] }, "vips[0]", /protocol must be tcp or udp/],
    [{ vips: ["198.51.100.10:0/tcp"] }, "vips[0]", /port must be a number from 1 to 65535/],
    [{ vips: ["2001:db8::10:80/tcp"] }, "vips[0]", /IPv6 VIP in brackets/],
    [{ vips: ["198.51.100.0/24:80/tcp"] }, "vips[0]", /not an IPv4 or IPv6 address/],
    [{ vips: ["web.example.com:80/tcp"] }, "vips[0]", /not an IPv4 or IPv6 address/],
    [{ vips: [{ address: "198.51.100.10", port: 80 }] }, "vips[0].protocol", /./],
    [{ vips: [{ address: "198.51.100.10", protocol: "tcp" }] }, "vips[0].port", /./],
    [{ vips: "198.51.100.10:80/tcp" }, "vips", /./],
    // backends
    [{ backends: ["10.200.1.12", { address: "10.200.1.12", weight: 3 }] }, "backends[1]", /10\.200\.1\.12 is listed twice \(also at backends\[0\]\)/],
    [{ backends: ["fd00::2", "FD00:0::2"] }, "backends[1]", /listed twice/],
    [{ backends: [{ address: "10.200.1.12", weight: 0 }] }, "backends[0].weight", /from 1 to 65535/],
    [{ backends: [{ address: "10.200.1.12", weight: -1 }] }, "backends[0].weight", /from 1 to 65535/],
    [{ backends: [{ address: "10.200.1.12", weight: 1.5 }] }, "backends[0].weight", /whole number/],
    [{ backends: [{ address: "10.200.1.12", weight: 70000 }] }, "backends[0].weight", /from 1 to 65535/],
    [{ backends: [{ address: "10.200.1.0/24" }] }, "backends[0].address", /not an IPv4 or IPv6 address/],
    [{ backends: [{ address: "10.200.1.12", mac: "02:bf:01" }] }, "backends[0].mac", /MAC address/],
    [{ backends: [{ address: "10.200.1.12", prot: 80 }] }, "backends[0]", /prot/],
    [{ backends: [{ address: "10.200.1.12", port: 8080 }] }, "backends[0].port", /dsr keeps the VIP's destination port/],
    [{ mode: "ipip", backends: [{ address: "10.200.1.12", port: 8080 }] }, "backends[0].port", /ipip keeps the VIP's destination port/],
    // families
    [{ vips: ["198.51.100.10:80/tcp"], backends: ["10.200.1.12", "fd00::2"] }, "backends[1]", /IPv6 backend fd00::2, but every VIP is IPv4: in dsr mode a packet keeps its address family/],
    [{ mode: "nat", vips: ["198.51.100.10:80/tcp"], backends: ["fd00::2"] }, "backends[0]", /in nat mode a packet keeps its address family/],
    [{ vips: ["198.51.100.10:80/tcp", "[2001:db8::10]:80/tcp"], backends: ["10.200.1.12"] }, "vips[1]", /IPv6 VIP \[2001:db8::10\]:80\/tcp has no IPv6 backend/],
    // table size
    [{ tableSize: 65536 }, "tableSize", /not prime .*next one is 65537/],
    [{ tableSize: 1 }, "tableSize", /must be a prime number/],
    [{ tableSize: 2_000_003 }, "tableSize", /at most 1048589/],
    [{ tableSize: 65537.5 }, "tableSize", /whole number/],
    [{ tableSize: 1009, backends: Array.from({ length: 11 }, (_, i) => `10.200.1.${20 + i}`), vips: ["198.51.100.10:80/tcp"] }, "tableSize", /smaller than 100 slots per backend for 11 backends \(1100\); use a prime of at least 1103/],
    [{ tableSize: 1_048_573 }, "tableSize", /IPv6 VIPs in dsr mode get a table of their own .*at most 524287/],
    // the rest
    [{ mode: "dnat" }, "mode", /./],
    [{ connectionTable: "yes" }, "connectionTable", /boolean/],
    [{ xdpMode: "fast" }, "xdpMode", /./],
    [{ lockoutRevertSeconds: 2 }, "lockoutRevertSeconds", /./],
    [{ lockoutGuard: "no" }, "lockoutGuard", /boolean/],
    [{ interface: "eth0; reboot" }, "interface", /only letters, digits/],
    [{ name: "web.lb" }, "pinName", /bpffs refuses/],
    // issue 15: the same VIP twice was accepted silently
    [{ vips: ["198.51.100.10:80/tcp", "198.51.100.10:53/udp", "198.51.100.10:80/TCP"] }, "vips[2]", /198\.51\.100\.10:80\/tcp is listed twice \(also at vips\[0\]\); list each VIP once/],
    [{ vips: ["[2001:db8::10]:80/tcp", { address: "2001:DB8:0::10", port: 80, protocol: "tcp" }] }, "vips[1]", /\[2001:db8::10\]:80\/tcp is listed twice/],
  ])("rejects %j naming %s", (patch, property, reason) => {
    const result = check({ ...valid, ...patch });
    expect(result.inputs).toBeUndefined();
    const failure = failureAt(result, property, { ...valid, ...patch });
    expect(failure.reason).toMatch(reason);
  });

  it("names a bad entry of the record form by its key", () => {
    const result = check({ ...valid, backends: { "10.200.1.12": { address: "10.200.1.12", weight: 0 } } });
    expect(failureAt(result, 'backends["10.200.1.12"].weight', { ...valid, backends: {} }).reason).toMatch(/weight/);
  });

  it("lets values that are unknown during preview through, and checks across properties only once they are known", () => {
    const unknownBackends = check({ ...valid, backends: UNKNOWN });
    expect(unknownBackends.failures).toBeUndefined();
    expect(unknownBackends.inputs?.backends).toBe(UNKNOWN);
    const unknownAddress = check({ ...valid, backends: [{ address: UNKNOWN }], tableSize: 65537 });
    expect(unknownAddress.failures).toBeUndefined();
    const unknownMode = check({ ...valid, mode: UNKNOWN, backends: [{ address: "10.200.1.12", port: 8080 }] });
    expect(unknownMode.failures).toBeUndefined();
  });

  it("goes through the provider's check, as the engine calls it", async () => {
    const result = await provider.check!({}, { ...valid, tableSize: 65536 });
    expect(result.failures?.map((f) => f.property)).toEqual(["tableSize"]);
  });
});

describe("MaglevService diff", () => {
  const outputs = (inputs: MaglevServiceInputs): MaglevServiceOutputs => {
    const backendIndexes = Object.fromEntries(Object.keys(inputs.backends).map((id, i) => [id, i + 1]));
    return {
      ...inputs,
      objectSha256: "0".repeat(64),
      programId: 1,
      programTag: "t",
      expectResults: {},
      attachMode: "driver",
      backendIndexes,
      nextBackendIndex: Object.keys(backendIndexes).length + 1,
      vipIndexes: {},
      backendMacs: {},
      tableDigest: tableDigest(tableImage(inputs, backendIndexes).image),
      reverseNat: false,
      counters: { vips: {}, backends: {}, totals: {} },
    };
  };

  it("updates in place when backends, VIPs, mode or table size change; replaces for host, interface, name and XDP mode", () => {
    const olds = outputs(canonical());
    const news = check({ ...valid, backends: ["10.200.1.12", "fd00:bf:1::12"] }).inputs as MaglevServiceInputs;
    expect(diffInputs(maglevServiceKind, olds, news)).toMatchObject({ changes: true, replaces: [] });
    const mode = check({ ...valid, mode: "nat" }).inputs as MaglevServiceInputs;
    expect(diffInputs(maglevServiceKind, olds, mode).replaces).toEqual([]);
    const xdp = check({ ...valid, xdpMode: "generic" }).inputs as MaglevServiceInputs;
    expect(diffInputs(maglevServiceKind, olds, xdp)).toMatchObject({ replaces: ["xdpMode"], deleteBeforeReplace: true });
    const iface = check({ ...valid, interface: "eth1" }).inputs as MaglevServiceInputs;
    expect(diffInputs(maglevServiceKind, olds, iface).replaces).toEqual(["interface"]);
  });

  it("sees tables changed on the host (a refresh read another digest) as a change, even with equal inputs", () => {
    const inputs = canonical();
    const olds = outputs(inputs);
    const pending = maglevServiceKind.pendingChanges!(olds, inputs).filter((p) => !p.startsWith("BPF object"));
    expect(pending).toEqual([]);
    const drifted = maglevServiceKind.pendingChanges!({ ...olds, tableDigest: "f".repeat(64) }, inputs);
    expect(drifted.join("\n")).toMatch(/maglev_table does not hold the tables these backends give/);
  });

  it("sees a program read back off its hook (pins left, attachMode detached) as a change, even with equal inputs", () => {
    const inputs = canonical();
    const detached = maglevServiceKind.pendingChanges!({ ...outputs(inputs), attachMode: "detached" }, inputs);
    expect(detached).toContain("the load balancer's program is not on its hook (detached)");
  });
});

// ---------------------------------------------------------------- plan

const pin = (map: string) => `/sys/fs/bpf/bpfleet/maglev/web/maps/${map}`;
const MARKER = "/sys/fs/bpf/bpfleet/maglev/web/table_digest";
const M = 1009;

function desired(backends: string[], patch: Partial<DesiredService> = {}): DesiredService {
  const inputs = check({ ...valid, vips: ["198.51.100.10:80/tcp"], backends, tableSize: M }).inputs as MaglevServiceInputs;
  return { ...inputs, macs: Object.fromEntries(backends.map((b, i) => [b, `02:00:00:00:00:0${i}`])), ...patch };
}

const EMPTY: ObservedService = { vips: new Map(), backends: new Map(), reverseNat: false, tables: undefined };

/** Applies a plan's operations to a model of the maps, as the host would. */
function apply(observed: ObservedService, ops: readonly MapOperation[]): ObservedService {
  const vips = new Map(observed.vips);
  const backends = new Map(observed.backends);
  const tables = new Map([...(observed.tables ?? new Map())].map(([o, s]) => [o, Uint32Array.from(s)]));
  const slotsAt = (slot: number) => {
    const offset = slot >= TABLE_OFFSET.v6 ? TABLE_OFFSET.v6 : 0;
    let slots = tables.get(offset);
    if (!slots || slot - offset >= slots.length) {
      const grown = new Uint32Array(Math.max(slots?.length ?? 0, slot - offset + 1));
      if (slots) grown.set(slots);
      tables.set(offset, (slots = grown));
    }
    return { slots, at: slot - offset };
  };
  let reverseNat = observed.reverseNat;
  const vipIndex = new Map(observed.vipIndex ?? []);
  for (const op of ops) {
    if (op.map === pin(MAPS.vipIndex) && op.op === "update") {
      vipIndex.set(decodeIndex(op.key), op.value);
    } else if (op.map === pin(MAPS.vips)) {
      const key = decodeVipKey(op.key);
      const k = `${key.address}:${key.port}/${key.protocol}`;
      if (op.op === "delete") vips.delete(k);
      else vips.set(k, decodeVip(op.value));
    } else if (op.map === pin(MAPS.backends) && op.op === "update") {
      const record = decodeBackend(op.value);
      if (record) backends.set(decodeIndex(op.key), record);
      else backends.delete(decodeIndex(op.key));
    } else if (op.map === pin(MAPS.table) && op.op === "update") {
      const { slots, at } = slotsAt(decodeIndex(op.key));
      slots[at] = decodeIndex(op.value);
    } else if (op.map === pin(MAPS.config) && op.op === "update") {
      reverseNat = (op.value[0]! & 1) === 1;
    }
  }
  return { vips, backends, reverseNat, tables, vipIndex };
}

/** Every slot any VIP's table covers names a backend record that exists. */
function everySlotNamesABackend(state: ObservedService): boolean {
  for (const vip of state.vips.values()) {
    const slots = state.tables?.get(vip.tableOffset);
    for (let s = 0; s < vip.tableSize; s++) {
      const index = slots?.[s] ?? 0;
      if (index !== 0 && !state.backends.has(index)) return false;
    }
  }
  return true;
}

describe("MaglevService plan", () => {
  it("creates: records, then the whole table, then the VIP, between the marker's clear and its digest", () => {
    const plan = planService(desired(["10.200.1.12", "10.200.1.13"]), EMPTY, {}, pin, MARKER);
    const maps = plan.operations.map((o) => o.map.split("/").pop());
    expect(maps[0]).toBe("table_digest");
    expect(maps.at(-1)).toBe("table_digest");
    expect(plan.operations[0]!.op === "update" && plan.operations[0]!.value.every((b) => b === 0)).toBe(true);
    const firstSlot = maps.indexOf(MAPS.table);
    expect(maps.lastIndexOf(MAPS.backends)).toBeLessThan(firstSlot);
    expect(maps.lastIndexOf(MAPS.table)).toBeLessThan(maps.indexOf(MAPS.vips));
    expect(maps.filter((m) => m === MAPS.table)).toHaveLength(M);
    expect(plan.allocation.backendIndexes).toEqual({ "10.200.1.12": 1, "10.200.1.13": 2 });
    expect(plan.summary).toMatchObject({ backendsAdded: ["10.200.1.12", "10.200.1.13"], vipsAdded: ["198.51.100.10:80/tcp"], slotsWritten: M });
  });

  it("changes a backend with the slots that change only, and never points at nothing at any step of the batch", () => {
    const three = ["10.200.1.12", "10.200.1.13", "10.200.1.14"];
    const first = planService(desired(three), EMPTY, {}, pin, MARKER);
    let state = apply(EMPTY, first.operations);
    state = { ...state, tables: first.tables };
    const removal = planService(desired(three.slice(0, 2)), state, { nextBackendIndex: first.allocation.nextBackendIndex }, pin, MARKER);
    // About M/3 slots move (those of the removed backend, and the few Maglev reassigns).
    expect(removal.summary.slotsWritten).toBeGreaterThan(M / 3 - 5);
    expect(removal.summary.slotsWritten).toBeLessThan(M / 3 + M / 20);
    expect(removal.summary.backendsRemoved).toEqual(["10.200.1.14"]);
    for (let i = 1; i <= removal.operations.length; i++) {
      expect(everySlotNamesABackend(apply(state, removal.operations.slice(0, i))), `after operation ${i}`).toBe(true);
    }
    const after = apply(state, removal.operations);
    expect([...after.backends.keys()]).toEqual([1, 2]);
    expect(tableDigest(after.tables!)).toBe(removal.tableDigest);

    // Adding a backend afterwards: a new index, not the one just freed.
    const addition = planService(desired([...three.slice(0, 2), "10.200.1.15"]), { ...after, tables: removal.tables }, { nextBackendIndex: removal.allocation.nextBackendIndex }, pin, MARKER);
    expect(addition.allocation.backendIndexes["10.200.1.15"]).toBe(4);
    const mid = apply(after, addition.operations);
    for (let i = 1; i <= addition.operations.length; i++) {
      expect(everySlotNamesABackend(apply(after, addition.operations.slice(0, i)))).toBe(true);
    }
    expect(tableDigest(mid.tables!)).toBe(addition.tableDigest);
  });

  it("writes nothing when the host already holds the plan", () => {
    const d = desired(["10.200.1.12"]);
    const first = planService(d, EMPTY, {}, pin, MARKER);
    const state = { ...apply(EMPTY, first.operations), tables: first.tables };
    expect(planService(d, state, { nextBackendIndex: first.allocation.nextBackendIndex }, pin, MARKER).operations).toEqual([]);
  });

  it("rewrites every slot when the tables on the host are not known (the marker did not match)", () => {
    const d = desired(["10.200.1.12", "10.200.1.13"]);
    const first = planService(d, EMPTY, {}, pin, MARKER);
    const state = apply(EMPTY, first.operations);
    const plan = planService(d, { ...state, tables: undefined }, { nextBackendIndex: first.allocation.nextBackendIndex }, pin, MARKER);
    expect(plan.summary.slotsWritten).toBe(M);
    expect(plan.summary.backendsAdded).toEqual([]);
  });

  it("turns reverse NAT on before the first NAT VIP and off only after the last one is gone", () => {
    const nat = { ...desired(["10.200.1.12"]), mode: "nat" as const };
    const on = planService(nat, EMPTY, {}, pin, MARKER);
    const maps = on.operations.map((o) => o.map.split("/").pop());
    expect(maps.indexOf(MAPS.config)).toBeLessThan(maps.indexOf(MAPS.vips));
    const state = { ...apply(EMPTY, on.operations), tables: on.tables };
    expect(state.reverseNat).toBe(true);
    const off = planService(desired(["10.200.1.12"]), state, { nextBackendIndex: 2 }, pin, MARKER);
    const offMaps = off.operations.map((o) => o.map.split("/").pop());
    expect(offMaps.lastIndexOf(MAPS.config)).toBeGreaterThan(offMaps.lastIndexOf(MAPS.vips));
    expect(apply(state, off.operations).reverseNat).toBe(false);
  });

  it("writes IPIP tunnel sources into lb_config once, and clears them when the mode no longer wants them", () => {
    const ipip = { ...desired(["10.200.1.12"]), mode: "ipip" as const, tunnelSources: { v4: "10.200.1.11" } };
    const configs = (ops: readonly MapOperation[]) => ops.filter((o) => o.map === pin(MAPS.config) && o.op === "update").map((o) => decodeConfig((o as { value: Uint8Array }).value));
    const first = planService(ipip, EMPTY, {}, pin, MARKER);
    expect(configs(first.operations)).toEqual([{ reverseNat: false, tunnelSourceV4: "10.200.1.11" }]);
    const state = { ...apply(EMPTY, first.operations), tables: first.tables, tunnelSources: { v4: "10.200.1.11" } };
    expect(configs(planService(ipip, state, { nextBackendIndex: 2 }, pin, MARKER).operations)).toEqual([]);
    expect(configs(planService({ ...ipip, tunnelSources: {} }, state, { nextBackendIndex: 2 }, pin, MARKER).operations)).toEqual([{ reverseNat: false }]);
    // Into NAT: the flag goes on first, and the sources go with it.
    const nat = planService({ ...ipip, mode: "nat", tunnelSources: {} }, state, { nextBackendIndex: 2 }, pin, MARKER);
    expect(configs(nat.operations)).toEqual([{ reverseNat: true }]);
  });

  it("shrinking the table: the VIP takes the new size before the slots beyond it are cleared", () => {
    const big = desired(["10.200.1.12"], { tableSize: 1013 });
    const first = planService(big, EMPTY, {}, pin, MARKER);
    const state = { ...apply(EMPTY, first.operations), tables: first.tables };
    const small = planService(desired(["10.200.1.12"]), state, { nextBackendIndex: 2 }, pin, MARKER);
    const vipAt = small.operations.findIndex((o) => o.map === pin(MAPS.vips));
    const clears = small.operations.map((o, i) => [o, i] as const).filter(([o]) => o.map === pin(MAPS.table) && o.op === "update" && decodeIndex(o.key) >= M);
    expect(clears).toHaveLength(4);
    expect(clears.every(([, i]) => i > vipAt)).toBe(true);
    expect(small.summary.slotsCleared).toBe(4);
  });

  it("gives dsr IPv4 and IPv6 VIPs a table each, over their own family's backends", () => {
    const inputs = check({ ...valid, tableSize: M }).inputs as MaglevServiceInputs;
    const plan = planService({ ...inputs, macs: {} }, EMPTY, {}, pin, MARKER);
    expect([...plan.tables.keys()]).toEqual([TABLE_OFFSET.v4, TABLE_OFFSET.v6]);
    const v6Index = plan.allocation.backendIndexes["fd00:bf:1::12"];
    expect(new Set(plan.tables.get(TABLE_OFFSET.v6))).toEqual(new Set([v6Index]));
    const vipValues = plan.operations.filter((o) => o.map === pin(MAPS.vips) && o.op === "update").map((o) => decodeVip((o as { value: Uint8Array }).value));
    expect(vipValues.map((v: VipValue) => v.tableOffset).sort((a, b) => a - b)).toEqual([0, 0, TABLE_OFFSET.v6]);
  });

  it("keeps indexes of backends on the host and does not reuse a freed index right away", () => {
    const observed = new Map<number, BackendRecord>([[7, { address: "10.0.0.7", port: 0 }], [9, { address: "10.0.0.9", port: 0 }]]);
    const { indexes, next } = allocateBackends(["10.0.0.7", "10.0.0.8", "10.0.0.10"], observed, 8);
    expect(indexes).toEqual({ "10.0.0.7": 7, "10.0.0.8": 8, "10.0.0.10": 10 });
    expect(next).toBe(11);
    expect(allocateBackends(["10.0.0.1"], new Map(), 4095).indexes).toEqual({ "10.0.0.1": 4095 });
    expect(allocateBackends(["10.0.0.1", "10.0.0.2"], new Map(), 4095).indexes).toEqual({ "10.0.0.1": 4095, "10.0.0.2": 1 });
  });
});

// ---------------------------------------------------------------- rollback of a failed batch

const hexOf = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** The maps as bytes, by pin and hex key; an array map's missing key reads as zeros (as bpftool dumps it). */
type ByteMaps = Map<string, Map<string, Uint8Array>>;
const ARRAY_VALUE: Record<string, number> = { [pin(MAPS.backends)]: SIZES.backend, [pin(MAPS.config)]: SIZES.config, [pin(MAPS.table)]: SIZES.index, [pin(MAPS.vipIndex)]: SIZES.vipSlot, [MARKER]: 32 };

function applyBytes(maps: ByteMaps, ops: readonly MapOperation[]): ByteMaps {
  const next: ByteMaps = new Map([...maps].map(([m, e]) => [m, new Map(e)]));
  for (const o of ops) {
    let entries = next.get(o.map);
    if (!entries) next.set(o.map, (entries = new Map()));
    if (o.op === "delete") {
      if (!entries.has(hexOf(o.key))) throw new Error(`delete of a missing key in ${o.map}: bpftool batch would stop here`);
      entries.delete(hexOf(o.key));
    } else if (o.map in ARRAY_VALUE && o.value.every((b) => b === 0)) entries.delete(hexOf(o.key));
    else entries.set(hexOf(o.key), o.value);
  }
  return next;
}

/** What observeMaps dumps (lb_vips, lb_backends, lb_config, the marker, lb_vip_index), arrays reading zeros where unset. */
function dumpOf(maps: ByteMaps): Map<string, Map<string, Uint8Array>> {
  const dump = new Map<string, Map<string, Uint8Array>>();
  for (const m of [pin(MAPS.vips), pin(MAPS.backends), pin(MAPS.config), MARKER, pin(MAPS.vipIndex)]) {
    const size = ARRAY_VALUE[m];
    const entries = new Map(maps.get(m) ?? []);
    dump.set(m, size === undefined ? entries : new (class extends Map<string, Uint8Array> {
      override get(k: string) { return super.get(k) ?? new Uint8Array(size); }
    })(entries));
  }
  return dump;
}

/** lb_vip_index as restoreMaps reads it back. */
const indexOf = (maps: ByteMaps) => observedVipIndex([...(maps.get(pin(MAPS.vipIndex)) ?? [])].map(([k, v]) => ({ key: Buffer.from(k, "hex"), value: v })));
const vipEntriesOf = (maps: ByteMaps) => [...(maps.get(pin(MAPS.vips)) ?? [])].map(([k, v]) => ({ key: Buffer.from(k, "hex"), value: v }));
const vipKeysOf = (maps: ByteMaps) => vipEntriesOf(maps).map((e) => hexOf(e.key)).sort();
/** The VIPs the program serves through lb_vip_index in front of lb_vips (a model of its lookup). */
const servedKeys = (maps: ByteMaps) => [...servedVips(vipEntriesOf(maps), indexOf(maps)).keys()].sort();
const withoutCounters = (maps: ByteMaps) => JSON.stringify([...maps].filter(([m]) => !/_ctr$/.test(m)).map(([m, e]) => [m, [...e].map(([k, v]) => [k, hexOf(v)]).sort()]).sort());

describe("MaglevService rollback of a failed batch", () => {
  const three = ["10.200.1.12", "10.200.1.13", "10.200.1.14"];

  it("after every prefix of an update's batch, the undo brings back exactly the maps before, and no step of it points at nothing", () => {
    const first = planService(desired(three), EMPTY, {}, pin, MARKER);
    const hostBefore = applyBytes(new Map(), first.operations);
    const stateBefore = { ...apply(EMPTY, first.operations), tables: first.tables };
    // A backend removed, one added, and a second VIP (a new key of the hash map).
    const update = planService(
      desired(["10.200.1.12", "10.200.1.13", "10.200.1.15"], { vips: { ...desired(three).vips, "198.51.100.11:80/tcp": { address: "198.51.100.11", port: 80, protocol: "tcp" } } }),
      stateBefore, { nextBackendIndex: first.allocation.nextBackendIndex }, pin, MARKER,
    );
    expect(update.summary).toMatchObject({ backendsAdded: ["10.200.1.15"], backendsRemoved: ["10.200.1.14"], vipsAdded: ["198.51.100.11:80/tcp"] });
    expect(update.operations.some((o) => o.map === pin(MAPS.vipIndex)), "the update moves lb_vip_index slots").toBe(true);
    const n = update.operations.length;
    let undo: MapOperation[] = [];
    for (const i of [0, 1, 2, 3, Math.floor(n / 3), Math.floor(n / 2), n - 3, n - 2, n - 1, n]) {
      const failedAt = applyBytes(hostBefore, update.operations.slice(0, i));
      // restoreMaps reads lb_vip_index again, and deletes only the new hash keys the batch did write.
      undo = restoreOperations(update.operations, dumpOf(hostBefore), first.tables, pin, MARKER, indexOf(failedAt));
      const present = (o: MapOperation) => o.op === "update" || failedAt.get(o.map)?.has(hexOf(o.key));
      const steps = undo.filter(present);
      expect(withoutCounters(applyBytes(failedAt, steps)), `batch stopped after ${i} of ${n} lines`).toBe(withoutCounters(hostBefore));
      const mid = apply(stateBefore, update.operations.slice(0, i));
      for (let j = 1; j <= steps.length; j += 97) expect(everySlotNamesABackend(apply(mid, steps.slice(0, j))), `undo line ${j} after ${i}`).toBe(true);
      // Every line of the undo leaves the index serving exactly what lb_vips holds.
      let maps = failedAt;
      for (const [j, step] of steps.entries()) {
        maps = applyBytes(maps, [step]);
        expect(servedKeys(maps), `index after undo line ${j + 1} of ${steps.length}, batch stopped after ${i}`).toEqual(vipKeysOf(maps));
      }
    }
    // The marker: cleared first, its previous digest written last.
    expect(undo[0]).toMatchObject({ map: MARKER, value: new Uint8Array(32) });
    expect(undo.at(-1)).toMatchObject({ map: MARKER, value: Uint8Array.from(Buffer.from(first.tableDigest, "hex")) });
  });

  it("undoes nothing when the batch rewrote slots whose previous values are not known, and leaves the marker cleared", () => {
    const first = planService(desired(three), EMPTY, {}, pin, MARKER);
    const hostBefore = applyBytes(new Map(), first.operations);
    const update = planService(desired(three.slice(0, 2)), { ...apply(EMPTY, first.operations), tables: undefined }, { nextBackendIndex: first.allocation.nextBackendIndex }, pin, MARKER);
    expect(update.summary.slotsWritten).toBe(M);
    expect(restoreOperations(update.operations, dumpOf(hostBefore), undefined, pin, MARKER, indexOf(hostBefore))).toEqual([]);
  });
});

describe("MaglevService next hops", () => {
  const survey = parseRoutingSurvey(
    [
      "@@hop 10.200.1.12",
      "route 10.200.1.12 dev eth0 src 10.200.1.11 uid 0",
      "neigh 10.200.1.12 lladdr 02:bf:01:01:00:02 REACHABLE",
      "@@hop 10.200.1.99",
      "route 10.200.1.99 dev eth0 src 10.200.1.11 uid 0",
      "neigh 10.200.1.99 FAILED",
      "@@hop 192.0.2.7",
      "route 192.0.2.7 via 10.200.1.1 dev eth0 src 10.200.1.11 uid 0",
      "neigh 10.200.1.1 lladdr 02:bf:01:00:00:01 STALE",
      "@@hop 10.9.0.2",
      "route 10.9.0.2 dev eth1 src 10.9.0.1 uid 0",
      "neigh 10.9.0.2 lladdr 02:00:00:00:09:02 REACHABLE",
      "@@hop 10.200.1.13",
      "route 10.200.1.13 dev eth0 src 10.200.1.11 uid 0 mtu 1400",
      "neigh 10.200.1.13 lladdr 02:bf:01:01:00:03 REACHABLE",
      "@@hop 10.200.1.11",
      "route local 10.200.1.11 dev lo src 10.200.1.11 uid 0",
      "neigh ",
      "@@forwarding",
      "ipv4 0",
      "ipv6 1",
      "@@ping true",
      "@@mtu 1500",
    ].join("\n"),
  );
  const service = (mode: "dsr" | "nat" | "ipip", addresses: string[]) => ({
    interface: "eth0",
    mode,
    vips: { "198.51.100.10:80/tcp": { address: "198.51.100.10" } },
    backends: Object.fromEntries(addresses.map((a) => [a, { address: a, weight: 1 }])),
  });

  it("takes the MAC of the backend, or of its gateway", () => {
    expect(nextHopMacs("h1", service("dsr", ["10.200.1.12"]), survey)).toEqual({ "10.200.1.12": "02:bf:01:01:00:02" });
    expect(() => nextHopMacs("h1", service("nat", ["192.0.2.7"]), survey)).toThrow(/IPv4 forwarding is off on eth0.*sysctl -w net\.ipv4\.conf\.eth0\.forwarding=1/s);
    expect(nextHopMacs("h1", service("nat", ["192.0.2.7"]), { ...survey, forwarding: { 4: true, 6: true } })).toEqual({ "192.0.2.7": "02:bf:01:00:00:01" });
  });

  it("takes an IPIP tunnel source per family when the routes give all its backends the same one", () => {
    const both = { "10.200.1.12": { address: "10.200.1.12", weight: 1 }, "10.200.1.13": { address: "10.200.1.13", weight: 1 } };
    expect(tunnelSources("ipip", both, survey)).toEqual({ v4: "10.200.1.11" });
    expect(tunnelSources("dsr", both, survey)).toEqual({});
    // 10.9.0.2 leaves through eth1 from 10.9.0.1: the family has no single source, the FIB picks per packet.
    expect(tunnelSources("ipip", { ...both, "10.9.0.2": { address: "10.9.0.2", weight: 1 } }, survey)).toEqual({});
    expect(tunnelSources("ipip", { "10.200.1.50": { address: "10.200.1.50", weight: 1 } }, survey)).toEqual({});
  });

  it("caches each resolved next hop with the interface's MTU, or the route's when it sets a smaller one; nothing without a MAC", () => {
    expect(survey.mtu).toBe(1500);
    const s = service("dsr", ["10.200.1.12", "10.200.1.13"]);
    const macs = nextHopMacs("h1", s, survey);
    expect(nextHopMtus({ ...macs, "10.9.0.2": undefined }, { ...s.backends, "10.9.0.2": { address: "10.9.0.2", weight: 1 } }, survey)).toEqual({ "10.200.1.12": 1500, "10.200.1.13": 1400 });
    // A host that reported no MTU: no cache, the FIB for every packet.
    expect(nextHopMtus(macs, s.backends, parseRoutingSurvey("@@mtu \n@@ping true"))).toEqual({});
  });

  it.each([
    ["dsr", "10.200.1.99", /cannot resolve the MAC address of 10\.200\.1\.99 on eth0 \(neighbour FAILED after a ping\)/],
    ["dsr", "192.0.2.7", /reached via gateway 10\.200\.1\.1; dsr rewrites only the MAC address/],
    ["dsr", "10.9.0.2", /IPv4 forwarding is off on eth0, and backend 10\.9\.0\.2 is reached through eth1/],
    ["nat", "10.9.0.2", /reached through eth1, not eth0; in nat mode its replies must come back through an interface that carries this load balancer/],
    ["dsr", "10.200.1.11", /is an address of the load balancer host itself/],
    ["dsr", "10.200.1.50", /did not report a route/],
  ] as const)("%s to %s: refuses with the reason", (mode, address, reason) => {
    expect(() => nextHopMacs("root@10.200.1.11", service(mode, [address]), survey)).toThrow(HostPreconditionError);
    expect(() => nextHopMacs("root@10.200.1.11", service(mode, [address]), survey)).toThrow(reason);
  });
});
