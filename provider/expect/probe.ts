/**
 * How expectations run on a host without touching live state: the frames each
 * expectation sends (a TcPolicy reply first opens its flow through the other
 * hook), the order that keeps expectations from seeing each other's flows, and
 * which maps a probe copy of a program shares with the live one.
 *
 * A probe copy is the same object loaded once more (`bpftool prog load[all]
 * OBJ <scratch pin> map name M pinned <live pin of M> ...`) with the maps it
 * only reads shared and every map it writes fresh: flow tables, NAT records,
 * counters, and the XDP chain's program array. Its verdicts are the live
 * program's (same code, same entries, read at the same moment), and nothing a
 * probe does reaches the live flow table, the counters `read` reports, or the
 * next chain member. test/kernel/expect.test.ts proves both for each kind.
 */
import type { Expectation, ExpectKind, Hook } from "./grammar";
import { buildFrame, flowOpener, type FrameOptions } from "./packet";

/** Maps each program only reads, shared with the probe copy; the rest are fresh. */
export const SHARED_MAPS: Record<ExpectKind, readonly string[]> = {
  // The deny tries are the provider's records; the program reads the exact hashes and the index (its slots included).
  xdpFirewall: ["deny_v4_exact", "deny_v6_exact", "fw_v4_index", "fw_v6_index", "fw_v4_hosts", "fw_v6_long", "fw_v6_lengths", "fw_v4_ways", "fw_v6_ways", "fw_v4_net_slots"],
  tcPolicy: ["tcpol_cfg", "tcpol_rules", "tcpol_l4", "tcpol_src4", "tcpol_src6", "tcpol_dst4", "tcpol_dst6", "tcpol_peer4"],
  maglevService: ["lb_vips", "lb_vip_index", "maglev_table", "lb_backends", "lb_config"],
};

/**
 * A member of an interface's XDP chain (bpf/include/xdp_chain.h) is probed as
 * the chain: a probe copy of the dispatcher owns a scratch xdp_chain, each
 * member's copy is loaded against that scratch array (and shares its live
 * xdp_chain_next, which it only reads) and is placed in its live slot, and the
 * frame runs through the dispatcher copy, so every member's verdict counts and
 * no live member sees the probe.
 */
export const CHAIN_SHARED_MAPS: readonly string[] = ["xdp_chain_next"];

export interface ProbeStep {
  hook: Hook;
  frame: Buffer;
}

export interface Probe {
  expectation: Expectation;
  /** Frames in order; the verdict that counts is the last one's. */
  steps: ProbeStep[];
}

/**
 * The flow an expectation's packets belong to, as tc_policy keys its flow
 * table: protocol and the (local, remote) ends, which the ingress and egress
 * packets of one flow share. ICMP echoes are keyed by their identifier, the
 * same for every expectation (FRAME_DEFAULTS.icmpId).
 */
export function flowTuple(e: Expectation): string {
  const [local, remote] = e.hook === "ingress" ? [e.destination, e.source] : [e.source, e.destination];
  const [localPort, remotePort] = e.hook === "ingress" ? [e.destinationPort, e.sourcePort] : [e.sourcePort, e.destinationPort];
  return `${e.protocol} ${local} ${localPort ?? ""} ${remote} ${remotePort ?? ""}`;
}

/**
 * Expectations grouped so that no two in a group share a flow: between groups
 * the probe copy's flow table is emptied, so every expectation meets a table
 * holding only the flows its own packets made (none for a "new" packet, its
 * opener's for a "reply"), whatever else the list holds. Stateless kinds need
 * one group. Order within the list is kept.
 */
export function probeRounds(expectations: readonly Expectation[], frame: FrameOptions = {}): Probe[][] {
  const rounds: { tuples: Set<string>; probes: Probe[] }[] = [];
  for (const e of expectations) {
    const steps: ProbeStep[] = [];
    if (e.reply) {
      const opener = flowOpener(e);
      steps.push({ hook: opener.hook, frame: buildFrame(opener.expectation, frame) });
    }
    steps.push({ hook: e.hook, frame: buildFrame(e, frame) });
    const tuple = e.kind === "tcPolicy" ? flowTuple(e) : undefined;
    let round = rounds.find((r) => tuple === undefined || !r.tuples.has(tuple));
    if (!round) rounds.push((round = { tuples: new Set(), probes: [] }));
    if (tuple !== undefined) round.tuples.add(tuple);
    round.probes.push({ expectation: e, steps });
  }
  return rounds.map((r) => r.probes);
}
