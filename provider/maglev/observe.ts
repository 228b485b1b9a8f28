/**
 * What a MaglevService has on its host, read back for `read`: VIPs (as the
 * program serves them, through lb_vip_index), backends and
 * their indexes, the mode and table size the maps hold, the tables' digest, the
 * counters, and next hops that changed under the records.
 */
import { connectResource } from "../remote/resource";
import type { SshSession } from "../remote/ssh";
import type { XdpPlacement } from "../remote/xdpHook";
import { decodeVip, decodeVipKey, encodeVip, encodeVipKey, LB_TABLE_CAPACITY, type BackendRecord, type LbMode, type VipValue } from "./codec";
import { appliedBackendsOf, boundAsRead } from "./backendSet";
import { observeMaps, observeProgram, readCountersAndTables } from "./hostState";
import { addressesToResolve, nextHopMacs, nextHopMtus, surveyRouting, tunnelSources } from "./neighbours";
import { recordKey, tableDigest } from "./plan";
import { vipKey, type Backend, type Counter, type MaglevServiceOutputs, type Vip } from "./schema";
import { servedVips } from "./vipIndex";

function counterRecord(keys: readonly string[], counters: Record<string, Counter>): Record<string, Counter> {
  return Object.fromEntries(keys.map((k) => [k, counters[k] ?? { packets: 0, bytes: 0 }]));
}

/** The value most VIPs agree on, preferring one that differs from `previous` so that drift shows. */
function observedSetting<T>(values: readonly T[], previous: T): T {
  return values.find((v) => v !== previous) ?? previous;
}

/**
 * The next-hop cache against the host as it is now: each backend whose record
 * carries another MAC or MTU than `up` would write (a neighbour that moved, a
 * route or MTU that changed), or why the host cannot serve the backends any
 * more. The program trusts the cache, so only this shows such a change.
 */
async function nextHopDrift(
  session: SshSession,
  olds: MaglevServiceOutputs,
  records: Map<number, BackendRecord>,
  backendIndexes: Record<string, number>,
  sourcesOnHost: { v4?: string; v6?: string },
): Promise<string[]> {
  const backends = olds.backends ?? {};
  const routing = await surveyRouting(session, olds.interface, addressesToResolve(backends));
  let macs: Record<string, string | undefined>;
  try {
    macs = nextHopMacs(session.label, olds, routing);
  } catch (err) {
    return [(err as Error).message];
  }
  const mtus = nextHopMtus(macs, backends, routing);
  const drift: string[] = [];
  const sources = tunnelSources(olds.mode, backends, routing);
  for (const family of ["v4", "v6"] as const) {
    if ((sources[family] ?? "") !== (sourcesOnHost[family] ?? "")) drift.push(`IPIP tunnel source (${family}): lb_config ${sourcesOnHost[family] ?? "none (FIB)"}, host now ${sources[family] ?? "none (FIB)"}`);
  }
  const show = (mac: string | undefined, mtu: number | undefined) => (mac === undefined ? "no MAC (FIB)" : `${mac}${mtu !== undefined ? ` mtu ${mtu}` : ""}`);
  for (const id of Object.keys(backends)) {
    const index = backendIndexes[id];
    const record = index !== undefined ? records.get(index) : undefined;
    if (!record) continue; // a missing record is drift of the backends themselves
    if (record.mac !== macs[id] || record.mtu !== mtus[id]) drift.push(`${id}: record ${show(record.mac, record.mtu)}, host now ${show(macs[id], mtus[id])}`);
  }
  return drift;
}

/** Everything `read` reports, or undefined when the service's pins are gone. */
export async function observe(kind: string, placement: XdpPlacement, declared: MaglevServiceOutputs): Promise<MaglevServiceOutputs | undefined> {
  const { session, layout } = await connectResource(kind, declared);
  const program = await observeProgram(session, layout, placement);
  if (!program) return undefined;
  const maps = await observeMaps(session, layout);
  // Bound to a MaglevBackendSet: judged against the backends the host recorded as applied,
  // not the set's state (refresh reads resources in no particular order, and a host a
  // failed wave left behind holds another version than the stack's).
  const bound = declared.backendSet ? await appliedBackendsOf(session, kind, declared) : undefined;
  const olds = bound ? { ...declared, backends: bound.backends } : declared;

  const backends: Record<string, Backend> = {};
  const backendIndexes: Record<string, number> = {};
  const backendMacs: Record<string, string> = {};
  for (const [index, record] of [...maps.backends].sort((a, b) => a[0] - b[0])) {
    const id = recordKey(record);
    if (backends[id]) continue;
    const previous = olds.backends?.[id];
    backends[id] = {
      address: record.address,
      ...(record.port !== 0 ? { port: record.port } : {}),
      weight: previous?.weight ?? 1,
      ...(previous?.mac !== undefined ? { mac: record.mac ?? "" } : {}),
    };
    backendIndexes[id] = index;
    backendMacs[id] = record.mac ?? "";
  }
  const vips: Record<string, Vip> = {};
  const vipIndexes: Record<string, number> = {};
  const values: VipValue[] = [];
  // The VIPs the program serves: lb_vips as lb_vip_index lets it through, so a
  // slot changed by hand shows as the VIPs it hides or invents.
  const stored = [...maps.vips].map(([key, value]) => ({ key: encodeVipKey(maps.vipAddresses.get(key)!), value: encodeVip(value) }));
  for (const served of servedVips(stored, maps.vipIndex).values()) {
    let vip: Vip, value: VipValue;
    try {
      vip = decodeVipKey(served.key);
      value = decodeVip(served.value);
    } catch {
      continue; // a slot no codec wrote: the next apply rewrites it
    }
    vips[vipKey(vip)] = vip;
    vipIndexes[vipKey(vip)] = value.vipIndex;
    values.push(value);
  }
  const regions = new Map<number, number>();
  for (const v of values) {
    if (v.tableSize > 0 && v.tableOffset < LB_TABLE_CAPACITY) regions.set(v.tableOffset, Math.max(regions.get(v.tableOffset) ?? 0, Math.min(v.tableSize, LB_TABLE_CAPACITY - v.tableOffset)));
  }
  const drift = await nextHopDrift(session, olds, maps.backends, backendIndexes, maps.tunnelSources);
  const read = await readCountersAndTables(
    session,
    layout,
    vipIndexes,
    backendIndexes,
    [...regions].sort((a, b) => a[0] - b[0]).map(([offset, size]) => ({ offset, size })),
  );
  const observed: MaglevServiceOutputs = {
    ...olds,
    vips: sortedLike(vips, olds.vips),
    backends: sortedLike(backends, olds.backends),
    mode: observedSetting<LbMode>(values.map((v) => v.mode), olds.mode),
    tableSize: observedSetting(values.map((v) => v.tableSize), olds.tableSize),
    connectionTable: observedSetting(values.map((v) => v.flowTable), olds.connectionTable),
    programId: program.programId,
    programTag: program.programTag,
    attachMode: program.attachment?.mode ?? "detached",
    backendIndexes,
    vipIndexes,
    backendMacs,
    nextHopDrift: drift,
    tableDigest: tableDigest(read.tables),
    reverseNat: maps.reverseNat,
    counters: { vips: counterRecord(Object.keys(vips), read.vips), backends: counterRecord(Object.keys(backends), read.backends), totals: program.totals },
  };
  return bound ? boundAsRead(observed, declared, bound.recorded) : observed;
}

/** `observed` with the keys that `previous` also has in previous's order first, so that state does not churn. */
function sortedLike<T>(observed: Record<string, T>, previous: Record<string, T> | undefined): Record<string, T> {
  const keys = [...Object.keys(previous ?? {}).filter((k) => k in observed), ...Object.keys(observed).filter((k) => !(k in (previous ?? {})))];
  return Object.fromEntries(keys.map((k) => [k, observed[k]!]));
}
