/**
 * Every data-plane hot path of issue 12 in one process, before and after.
 *
 *   sudo npx tsx bench/dataplane.ts [--baseline REF] [--repeat N] [--rounds N] [--no-scaling]
 *                                   [--only firewall,maglev,policy,mirror]
 *
 * What runs: BPF_PROG_TEST_RUN (`bpftool prog run ... repeat N`) of
 * - XdpFirewall exact hit / prefix hit (the longest prefix; for IPv4 also one of
 *   /24 or shorter) / miss, IPv4 and IPv6, 100k exact +
 *   10k prefixes, and scaling rows at 1k, 110k (the main lists) and 1M
 *   entries with realistic prefix-length mixes (IPv4: /32 singles, mostly /24,
 *   some /16–/23 and /25–/31, a few country-sized /8–/15; IPv6: /128 singles,
 *   /32–/64 mostly /48 and /64); for each list, the time to write it (one
 *   bpftool batch), to read it back (the record maps dumped) and the maps'
 *   memory (the lab's provider push over SSH: bench/xdp-firewall-push.ts);
 * - MaglevService non-VIP and VIP DSR flow-table hit (static MAC: forwarding
 *   off in the private netns, as bench/xdp-maglev.ts's "no FIB" rows); the
 *   same hit with forwarding on and a neighbour for every backend (the FIB
 *   path: before, a bpf_fib_lookup per packet; after, the next-hop cache in
 *   the records), and with records without the cache (the FIB fallback);
 *   IPIP (tunnel source configured) and NAT, SYN and connection-table hit, in
 *   the single-shot regime (bench/singleShot.ts: --single-shot-calls calls of
 *   repeat 1, default 100,000, interquartile mean; an empty XDP program timed
 *   the same way is their "× empty"), since their output cannot be fed back.
 *   A tree with lb_vip_index gets it written as its planner would (the VIP's
 *   slot ONE, the others NONE). Below the table, the Maglev targets
 *   as it defines them (maglevTargets);
 * - TcPolicy established / denied / new allowed flow (1,024 rules, 100k
 *   flows; the new-flow object runs with a 0 transitory timeout, see
 *   bench/tc-policy.ts);
 * - TrafficMirror no match with 1, 8 and 64 filters;
 * - an empty XDP and an empty TC program (and an empty XDP run with the
 *   Maglev rows' netns and ingress ifindex).
 *
 * Before/after: the baseline REF (default 8c21e2b) is exported with
 * `git archive` into /tmp/bpfleet-baseline-<sha>/ (no worktree is
 * registered), this tree's node_modules is linked into it and `make -C bpf`
 * builds its objects there. Every fixture loads its object from a *tree*
 * (this checkout or the baseline) and writes the maps with that tree's own
 * provider modules (plan, codec, batchText), required from the tree's
 * directory: an object whose map layout changed is always driven by the codec
 * written for it. The generated inputs (deny lists, rules, flows, filters,
 * frames) are the same for both trees. A fixture whose provider API changed
 * incompatibly has to learn the baseline's API here.
 *
 * Timing: each round runs every case once (both trees and the empty
 * programs, in one fixed interleaved order), so drift of this shared VM
 * spreads over all of them; each figure is the median over rounds (≥ 9).
 * "× empty" divides by the empty program of the same hook, median of the
 * same rounds. Results also go to .bench/dataplane.json.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { join } from "node:path";
import { canonicalPrefix } from "../provider/cidr";
import { ETH_P, ethernet, ipFrame, ipv4, tcp, udp } from "../test/kernel/packets";
import {
  buildObjects, createNetns, kernelTestsUnavailable, loadObject, loadProgram, REPO_ROOT, runXdp, TC, XDP,
  type LoadedObject, type LoadedProgram, type RunResult, type TestNetns,
} from "../test/kernel/progRun";
import { seededRandom } from "../test/support/seededRandom";
import { loadAverage, numberOption, option, printTable, writeBenchRecord } from "./support";
import { HOST4, makeFlows, randomRules } from "./tc-policy";
import { sixtyFourFilters } from "./mirrorFilters";
import { maskTo, randomBytes } from "./xdp-firewall";
import { runSingleShot } from "./singleShot";
import { backendAddress, frame as lbFrame, M, N as BACKENDS, VIP } from "./xdp-maglev";

const REPEAT = numberOption("repeat", 1_000_000);
const ROUNDS = Math.max(9, numberOption("rounds", 9));
const BASELINE = option("baseline", "8c21e2b");
const SCALING = !process.argv.includes("--no-scaling");
const SINGLE_SHOT_CALLS = numberOption("single-shot-calls", 100_000);
/** Sections to run (default all): a quick look at one program while working on it; quote figures from full runs. */
const ONLY = new Set(option("only", "firewall,maglev,policy,mirror").split(","));
const TC_UNSPEC = 0xffffffff;

// ---------------------------------------------------------------- trees

interface Tree {
  label: "before" | "after";
  root: string;
  object(name: string): string;
  /** A module of this tree, e.g. "provider/xdpFirewall/plan". */
  module<T = any>(path: string): T; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** The tree's bpftool batch text for map operations (remote/mapOperations; remote/bpfHost before it was split). */
  batchText(operations: unknown[]): string;
}

function tree(label: Tree["label"], root: string): Tree {
  return {
    label,
    root,
    object: (name) => join(root, "bpf/obj", `${name}.bpf.o`),
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    module: (path) => require(join(root, path)),
    batchText: (operations) => {
      const split = existsSync(join(root, "provider/remote/mapOperations.ts"));
      return require(join(root, split ? "provider/remote/mapOperations" : "provider/remote/bpfHost")).batchText(operations);
    },
  };
}

function baselineTree(ref: string): Tree {
  const sha = execFileSync("git", ["-C", REPO_ROOT, "rev-parse", "--verify", `${ref}^{commit}`], { encoding: "utf8" }).trim();
  const dir = `/tmp/bpfleet-baseline-${sha}`;
  if (!existsSync(join(dir, ".complete"))) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    execFileSync("sh", ["-c", 'git -C "$1" archive "$2" | tar -x -C "$3"', "sh", REPO_ROOT, sha, dir]);
    writeFileSync(join(dir, ".complete"), `${sha}\n`);
  }
  // This checkout's node_modules, linked on every run: the baseline may have been
  // exported by a checkout since removed, whose link would dangle.
  rmSync(join(dir, "node_modules"), { force: true });
  symlinkSync(join(REPO_ROOT, "node_modules"), join(dir, "node_modules"));
  execFileSync("make", ["-s", "-C", join(dir, "bpf")], { stdio: "inherit" });
  return tree("before", dir);
}

// ---------------------------------------------------------------- cases

type Hook = "xdp" | "xdp-netns" | "xdp-single" | "tc";

interface Case {
  group: string;
  path: string;
  hook: Hook;
  tree?: Tree["label"];
  expect: number;
  run(): Promise<RunResult>;
}

const loaded: { close(): void }[] = [];
async function program(object: string, type = "xdp"): Promise<LoadedProgram> {
  const p = await loadProgram(object, type);
  loaded.push(p);
  return p;
}
async function objectOf(object: string): Promise<LoadedObject> {
  const o = await loadObject(object, { type: "tc" });
  loaded.push(o);
  return o;
}

// ---------------------------------------------------------------- XdpFirewall

interface DenyLists {
  family: 4 | 6;
  entries: string[];
  exactHit: string;
  prefixHit: string;
  /** Inside an IPv4 prefix of /24 or shorter (most of a threat feed's prefixes); none for IPv6. */
  shallowHit?: string;
  miss: string;
}

const fmt = (b: Buffer) => (b.length === 4 ? [...b].join(".") : Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(":"));

/** A realistic length for prefix number `i` of a family. */
function prefixLength(family: 4 | 6, rand: () => number, i: number): number {
  const r = rand();
  if (family === 4) {
    if (i < 20) return 8 + Math.floor(rand() * 8); // a few country-sized blocks, whatever the list's size
    if (r < 0.7) return 24;
    if (r < 0.9) return 16 + Math.floor(rand() * 8);
    return 25 + Math.floor(rand() * 7);
  }
  if (r < 0.15) return 32;
  if (r < 0.55) return 48;
  if (r < 0.7) return 56;
  if (r < 0.95) return 64;
  return 33 + Math.floor(rand() * 15);
}

function denyLists(family: 4 | 6, exact: number, prefixes: number, seed: number): DenyLists {
  const rand = seededRandom(seed);
  const width = family === 4 ? 4 : 16;
  const exactSet = new Set<string>();
  const exactList: Buffer[] = [];
  while (exactList.length < exact) {
    const b = randomBytes(rand, width);
    const hex = b.toString("hex");
    if (exactSet.has(hex)) continue;
    exactSet.add(hex);
    exactList.push(b);
  }
  const prefixSet = new Set<string>();
  const lengths = new Set<number>();
  const prefixList: { addr: Buffer; len: number }[] = [];
  while (prefixList.length < prefixes) {
    const len = prefixLength(family, rand, prefixList.length);
    const addr = maskTo(randomBytes(rand, width), len);
    const id = `${addr.toString("hex")}/${len}`;
    if (prefixSet.has(id)) continue;
    prefixSet.add(id);
    lengths.add(len);
    prefixList.push({ addr, len });
  }
  const covered = (a: Buffer) => exactSet.has(a.toString("hex")) || [...lengths].some((l) => prefixSet.has(`${maskTo(a, l).toString("hex")}/${l}`));
  // The longest prefix: the deepest trie walk.
  const deepest = prefixList.reduce((a, b) => (b.len > a.len ? b : a));
  const inside = Buffer.from(deepest.addr);
  inside[width - 1]! |= 1;
  const probe = seededRandom(seed + 1000);
  let miss = randomBytes(probe, width);
  while (covered(miss)) miss = randomBytes(probe, width);
  const shallow = family === 4 ? prefixList.find((p) => p.len <= 24) : undefined;
  const shallowInside = shallow && Buffer.from(shallow.addr);
  if (shallowInside) shallowInside[3]! |= 1; // a host bit: inside the prefix
  return {
    family,
    shallowHit: shallowInside && !exactSet.has(shallowInside.toString("hex")) ? fmt(shallowInside) : undefined,
    entries: [
      ...exactList.map((b) => canonicalPrefix(`${fmt(b)}/${width * 8}`)),
      ...prefixList.map((p) => canonicalPrefix(`${fmt(p.addr)}/${p.len}`)),
    ],
    exactHit: fmt(exactList[exactList.length >> 1]!),
    prefixHit: fmt(inside),
    miss: fmt(miss),
  };
}

async function firewall(t: Tree, lists: DenyLists[]): Promise<LoadedProgram> {
  const { planDeny, denyOperations } = t.module("provider/xdpFirewall/plan");
  const batchText = t.batchText;
  const fw = await program(t.object("xdp_firewall"));
  // As a create fills a firewall, before it goes on its hook (the last argument: no
  // reader yet, one write per new slot; a tree whose denyOperations has no such
  // argument ignores it).
  for (const l of lists) await fw.batchText(batchText(denyOperations(planDeny(l.entries, []), (m: string) => fw.mapPin(m), true)));
  return fw;
}

function firewallFrame(src: string): Buffer {
  const dst = src.includes(":") ? "2001:db8:ffff::1" : "10.255.255.254";
  return ipFrame({ src, dst, payload: udp({ srcPort: 40000, dstPort: 53, payload: Buffer.alloc(18) }) });
}

/** Per firewall fixture: list, tree, bpftool batch time, read-back time, records, bytes_memlock of all its maps. */
const firewallPushes: string[][] = [];

async function firewallCases(trees: Tree[]): Promise<Case[]> {
  const sizes = [
    { label: "100k exact + 10k prefixes", exact: 100_000, prefixes: 10_000, main: true },
    ...(SCALING
      ? [
          { label: "scaling 1k (900 exact + 100 prefixes)", exact: 900, prefixes: 100, main: false },
          { label: "scaling 1M (900k exact + 100k prefixes)", exact: 900_000, prefixes: 100_000, main: false },
        ]
      : []),
  ];
  const cases: Case[] = [];
  for (const size of sizes) {
    const lists = [denyLists(4, size.exact, size.prefixes, 1), denyLists(6, size.exact, size.prefixes, 2)];
    for (const t of trees) {
      const started = process.hrtime.bigint();
      const fw = await firewall(t, lists);
      const written = Number(process.hrtime.bigint() - started) / 1e9;
      // Read back as the provider's read does (every record map dumped), and the maps' memory as mapMemoryBytes sums it.
      const readStarted = process.hrtime.bigint();
      let records = 0;
      for (const map of t.module("provider/xdpFirewall/codec").DENY_MAPS as string[]) records += (await fw.dumpMap(map)).length;
      const read = Number(process.hrtime.bigint() - readStarted) / 1e9;
      if (records !== lists.reduce((n, l) => n + l.entries.length, 0)) throw new Error(`${t.label} ${size.label}: read back ${records} records`);
      let memory = 0;
      for (const map of fw.mapNames()) memory += ((await fw.mapInfo(map)) as unknown as { bytes_memlock: number }).bytes_memlock;
      firewallPushes.push([size.label, t.label, `${written.toFixed(1)} s`, `${read.toFixed(1)} s`, `${records.toLocaleString("en")}`, `${(memory / 1048576).toFixed(0)} MiB`]);
      console.error(`  ${t.label} xdp_firewall, ${size.label} per family: written in ${written.toFixed(1)} s, ${records} records read back in ${read.toFixed(1)} s, maps ${(memory / 1048576).toFixed(0)} MiB`);
      for (const l of lists) {
        const F = `IPv${l.family}`;
        const kinds = size.main ? (["exact hit", "prefix hit", "prefix hit, /24 or shorter", "miss"] as const) : (["exact hit", "prefix hit", "miss"] as const);
        for (const kind of kinds) {
          if (kind === "prefix hit, /24 or shorter" && !l.shallowHit) continue;
          const src = kind === "exact hit" ? l.exactHit : kind === "prefix hit" ? l.prefixHit : kind === "miss" ? l.miss : l.shallowHit!;
          const f = firewallFrame(src);
          cases.push({ group: `XdpFirewall, ${size.label}`, path: `${F} ${kind}`, hook: "xdp", tree: t.label, expect: kind === "miss" ? XDP.PASS : XDP.DROP, run: () => fw.run(f, { repeat: REPEAT }) });
        }
      }
    }
  }
  return cases;
}

// ---------------------------------------------------------------- MaglevService

const LB_GROUP = "MaglevService (100 backends, M = 65537)";
const LB_SINGLE_GROUP = "MaglevService, single shot (repeat 1 × calls, IQM)";

/** A namespace like main()'s, with forwarding on and a permanent neighbour for every backend: bpf_fib_lookup answers. */
async function fibNamespace(): Promise<{ ns: TestNetns; ifindex: number }> {
  const ns = await createNetns();
  loaded.push(ns);
  await ns.ip("link", "add", "lb0", "type", "veth", "peer", "name", "lb0p");
  await ns.ip("link", "set", "lb0", "up");
  await ns.ip("link", "set", "lb0p", "up");
  await ns.ip("addr", "add", "10.0.0.1/16", "dev", "lb0");
  await ns.sysctl("net.ipv4.conf.all.forwarding", 1);
  for (let i = 1; i <= BACKENDS; i++) await ns.ip("-4", "neigh", "replace", backendAddress("v4", i), "lladdr", "02:00:00:00:aa:01", "dev", "lb0", "nud", "permanent");
  return { ns, ifindex: (await ns.link("lb0")).ifindex };
}

/**
 * One IPv4 VIP in `mode` with the flow table on, its records written by the
 * tree's own codec. `cache`: the records carry the next-hop cache (MAC and
 * MTU 1500), which a tree whose codec has no such field ignores; off, the
 * records carry the static MAC only, as before the cache.
 */
async function maglevService(t: Tree, mode: "dsr" | "nat" | "ipip", cache: boolean): Promise<LoadedProgram> {
  const codec = t.module("provider/maglev/codec");
  const table = t.module("provider/maglev/table");
  const lb = await program(t.object("xdp_maglev"));
  const ids = Array.from({ length: BACKENDS }, (_, i) => backendAddress("v4", i + 1));
  const index = new Map(ids.map((id, i) => [id, i + 1]));
  const entry = (key: Uint8Array, value: Uint8Array) => ({ key: Buffer.from(key), value: Buffer.from(value) });
  const record = (id: string) => ({ address: id, port: mode === "nat" ? 8080 : 80, mac: "02:00:00:00:00:01", ...(cache ? { mtu: 1500 } : {}) });
  await lb.updateMap(codec.MAPS.backends, ids.map((id) => entry(codec.encodeIndex(index.get(id)!), codec.encodeBackend(record(id)))));
  const ops = codec.tableOperations(table.diffTable(table.buildTable([], M), table.buildTable(ids.map((id) => ({ id })), M)), 0, (id: string) => index.get(id)!, lb.mapPin(codec.MAPS.table));
  await lb.batchText(t.batchText(ops));
  const vipKey = codec.encodeVipKey({ address: VIP.v4, port: 80, protocol: "tcp" });
  const vipValue = codec.encodeVip({ vipIndex: 0, tableOffset: 0, tableSize: M, mode, flowTable: true });
  await lb.updateMap(codec.MAPS.vips, [entry(vipKey, vipValue)]);
  // A tree with lb_vip_index (provider/maglev/vipIndex) gets it written as its planner would: the VIP's slot ONE, the rest NONE.
  if (existsSync(join(t.root, "provider/maglev/vipIndex.ts"))) {
    const vipIndex = t.module("provider/maglev/vipIndex");
    const { before, after } = vipIndex.vipIndexOperations(vipIndex.vipIndexImage([{ key: vipKey, value: vipValue }]), new Map(), lb.mapPin(codec.MAPS.vipIndex));
    await lb.batchText(t.batchText([...before, ...after]));
  }
  // IPIP with a configured tunnel source (as a production balancer has one): the FIB is not needed for the source.
  await lb.updateMap(codec.MAPS.config, [entry(codec.encodeIndex(0), codec.encodeConfig({ reverseNat: mode === "nat", ...(mode === "ipip" ? { tunnelSourceV4: "10.0.0.1" } : {}) }))]);
  return lb;
}

function synFrame(src: string, dst: string): Buffer {
  return ethernet({
    dst: "02:00:00:00:00:aa",
    src: "02:00:00:00:00:fe",
    etherType: ETH_P.IP,
    payload: ipv4({ src, dst, payload: tcp({ srcPort: 40000, dstPort: 80, flags: { syn: true }, payload: Buffer.alloc(18) }) }),
  });
}

async function maglevCases(trees: Tree[], ns: TestNetns, ifindex: number, fib: { ns: TestNetns; ifindex: number }): Promise<Case[]> {
  const cases: Case[] = [];
  const vipHit = lbFrame("192.0.2.7", VIP.v4);
  const syn = synFrame("192.0.2.7", VIP.v4);
  const nonVip = lbFrame("192.0.2.7", VIP.v4, 81);
  const opts = { netns: ns, ingressIfindex: ifindex, repeat: REPEAT };
  const fibOpts = { netns: fib.ns, ingressIfindex: fib.ifindex, repeat: REPEAT };
  const single = { netns: fib.ns, ingressIfindex: fib.ifindex, calls: SINGLE_SHOT_CALLS };
  for (const t of trees) {
    const dsr = await maglevService(t, "dsr", true);
    const dsrNoCache = await maglevService(t, "dsr", false);
    const nat = await maglevService(t, "nat", true);
    const ipip = await maglevService(t, "ipip", true);
    cases.push(
      { group: LB_GROUP, path: "IPv4 non-VIP", hook: "xdp-netns", tree: t.label, expect: XDP.PASS, run: () => runXdp(dsr, nonVip, opts) },
      { group: LB_GROUP, path: "IPv4 VIP, DSR, static MAC, flow-table hit", hook: "xdp-netns", tree: t.label, expect: XDP.TX, run: () => runXdp(dsr, vipHit, opts) },
      // Forwarding on: before, every packet walks the FIB; after, the next-hop cache answers.
      { group: LB_GROUP, path: "IPv4 VIP, DSR, forwarding on (FIB path), flow-table hit", hook: "xdp-netns", tree: t.label, expect: XDP.TX, run: () => runXdp(dsr, vipHit, fibOpts) },
      // Records without the cache: the per-packet FIB fallback, in both trees.
      { group: LB_GROUP, path: "IPv4 VIP, DSR, forwarding on, no next-hop cache (FIB fallback), flow-table hit", hook: "xdp-netns", tree: t.label, expect: XDP.TX, run: () => runXdp(dsrNoCache, vipHit, fibOpts) },
      { group: LB_SINGLE_GROUP, path: "IPv4 VIP, IPIP, SYN", hook: "xdp-single", tree: t.label, expect: XDP.TX, run: () => runSingleShot(ipip, syn, single) },
      { group: LB_SINGLE_GROUP, path: "IPv4 VIP, IPIP, connection-table hit", hook: "xdp-single", tree: t.label, expect: XDP.TX, run: () => runSingleShot(ipip, vipHit, single) },
      { group: LB_SINGLE_GROUP, path: "IPv4 VIP, NAT, SYN", hook: "xdp-single", tree: t.label, expect: XDP.TX, run: () => runSingleShot(nat, syn, single) },
      { group: LB_SINGLE_GROUP, path: "IPv4 VIP, NAT, connection-table hit", hook: "xdp-single", tree: t.label, expect: XDP.TX, run: () => runSingleShot(nat, vipHit, single) },
    );
  }
  return cases;
}

/**
 * The MaglevService targets of issue 12 as the issue states them, from one run's
 * medians: DSR static-MAC hit ≤ 3.5× empty; the FIB path within 1.15× of the
 * static-MAC path; IPIP SYN and connection-table hit ≤ 0.9× the production
 * balancer's single-shot figures quoted in the issue (SYN 417 ns, hit 218 ns,
 * 138 above its empty program): this bench does not run that balancer, so its
 * figures come from the run, compared both absolute and above the
 * single-shot empty program (the issue's ~80 ns against this run's).
 */
function maglevTargets(figure: (group: string, path: string, tree: Tree["label"]) => number, singleEmpty: number, xdpEmpty: number): string[] {
  const lines: string[] = [];
  const PRODUCTION = { syn: 417, hit: 218, empty: 80 };
  for (const tree of ["before", "after"] as const) {
    const staticMac = figure(LB_GROUP, "IPv4 VIP, DSR, static MAC, flow-table hit", tree);
    const fib = figure(LB_GROUP, "IPv4 VIP, DSR, forwarding on (FIB path), flow-table hit", tree);
    const syn = figure(LB_SINGLE_GROUP, "IPv4 VIP, IPIP, SYN", tree);
    const hit = figure(LB_SINGLE_GROUP, "IPv4 VIP, IPIP, connection-table hit", tree);
    const above = (x: number, empty: number) => x - empty;
    lines.push(
      `${tree}: DSR static-MAC hit ${(staticMac / xdpEmpty).toFixed(2)}× empty (target ≤ 3.5); FIB path ${(fib / staticMac).toFixed(2)}× static MAC (target ≤ 1.15); ` +
        `IPIP SYN ${(syn / PRODUCTION.syn).toFixed(2)}× production absolute, ${(above(syn, singleEmpty) / above(PRODUCTION.syn, PRODUCTION.empty)).toFixed(2)}× above empty; ` +
        `IPIP hit ${(hit / PRODUCTION.hit).toFixed(2)}× absolute, ${(above(hit, singleEmpty) / above(PRODUCTION.hit, PRODUCTION.empty)).toFixed(2)}× above empty (targets ≤ 0.9)`,
    );
  }
  return lines;
}

// ---------------------------------------------------------------- TcPolicy

async function policyObject(t: Tree, rules: { ingress: string[]; egress: string[] }, transitoryZero: boolean, flows: ReturnType<typeof makeFlows>): Promise<LoadedObject> {
  const batchText = t.batchText;
  const codec = t.module("provider/tcPolicy/codec");
  const plan = t.module("provider/tcPolicy/plan");
  const schema = t.module("provider/tcPolicy/schema");
  const policy = await objectOf(t.object("tc_policy"));
  const inputs = schema.tcPolicySchema.parse({
    host: { address: "192.0.2.1" }, interface: "eth0", name: "bench", stateful: true,
    ingress: { default: "deny", rules: rules.ingress }, egress: { default: "allow", rules: rules.egress },
    timeouts: { tcpEstablished: 3600, tcpTransitory: 3600, other: 3600 },
  });
  const desired = plan.desiredPolicy(inputs, schema.rulesOf(inputs));
  if (transitoryZero) desired.config.tcpTransitoryNs = 0n;
  const tries: Record<string, unknown[]> = {};
  for (const map of codec.TRIE_MAPS as string[]) tries[map] = await policy.dumpMap(map);
  const observed = plan.observePolicy({ rules: await policy.dumpMap(codec.MAPS.rules), tries, config: await policy.lookup(codec.MAPS.config, Buffer.from(codec.u32Key(0))) });
  await policy.batchText(batchText(plan.planPolicy(desired, observed, (m: string) => policy.mapPin(m)).operations));
  if (!transitoryZero) {
    const now = process.hrtime.bigint();
    const value = codec.encodeFlowValue({ lastSeenNs: now, state: "established", flags: codec.FLOW_FLAG.originEgress | codec.FLOW_FLAG.seenEgress | codec.FLOW_FLAG.seenIngress });
    const v4 = flows.filter((f) => !f.peer.includes(":"));
    await policy.batchText(batchText(v4.map((f) => ({
      op: "update", map: policy.mapPin(codec.MAPS.flows), value,
      key: codec.encodeFlowKey({ family: 4, protocol: 6, local: HOST4, remote: f.peer, localPort: f.localPort, remotePort: f.peerPort }),
    }))));
  }
  return policy;
}

async function policyCases(trees: Tree[]): Promise<Case[]> {
  const rand = seededRandom(1);
  const rules = { ingress: ["allow tcp 22", "allow tcp 8080", ...randomRules(rand, 898, "from")], egress: randomRules(rand, 124, "to") };
  const flows = makeFlows(100_000);
  const flow = flows.find((f) => !f.peer.includes(":"))!;
  const established = ipFrame({ src: flow.peer, dst: HOST4, payload: tcp({ srcPort: flow.peerPort, dstPort: flow.localPort, flags: { ack: true } }) });
  const denied = ipFrame({ src: "100.64.1.2", dst: HOST4, payload: tcp({ srcPort: 50000, dstPort: 9090 }) });
  const syn = ipFrame({ src: "100.64.1.2", dst: HOST4, payload: tcp({ srcPort: 50000, dstPort: 8080 }) });
  const group = "TcPolicy (1,024 rules, 100k flows), ingress";
  const cases: Case[] = [];
  for (const t of trees) {
    const steady = await policyObject(t, rules, false, flows);
    const fresh = await policyObject(t, rules, true, flows);
    const name = t.module("provider/tcPolicy/codec").PROGRAMS.ingress as string;
    cases.push(
      { group, path: "IPv4 established flow hit", hook: "tc", tree: t.label, expect: TC.UNSPEC, run: () => steady.runProgram(name, established, { repeat: REPEAT }) },
      { group, path: "IPv4 denied (no flow, default deny)", hook: "tc", tree: t.label, expect: TC.SHOT, run: () => steady.runProgram(name, denied, { repeat: REPEAT }) },
      { group, path: "IPv4 new allowed flow (SYN to tcp/8080)", hook: "tc", tree: t.label, expect: TC.UNSPEC, run: () => fresh.runProgram(name, syn, { repeat: REPEAT }) },
    );
  }
  return cases;
}

// ---------------------------------------------------------------- TrafficMirror

async function mirrorCases(trees: Tree[]): Promise<Case[]> {
  const all = sixtyFourFilters();
  const payload = Buffer.alloc(64, 0x61);
  const v4 = ipFrame({ src: "10.99.0.1", dst: "192.0.2.1", payload: tcp({ srcPort: 40000, dstPort: 8000, payload }) });
  const v6 = ipFrame({ src: "2001:db8:ffff::1", dst: "2001:db8:ffff::2", payload: udp({ srcPort: 40000, dstPort: 9000, payload }) });
  const cases: Case[] = [];
  for (const count of [1, 8, 64]) {
    // 1 and 8: the first IPv4 filters, so the IPv4 packet walks them all before missing.
    const filters = count === 64 ? all : all.slice(0, count);
    for (const t of trees) {
      const codec = t.module("provider/trafficMirror/codec");
      const plan = t.module("provider/trafficMirror/plan");
      const schema = t.module("provider/trafficMirror/schema");
      const batchText = t.batchText;
      const mirror = await objectOf(t.object("tc_mirror"));
      const config = codec.decodeConfig((await mirror.dumpMap(codec.CONFIG_MAP))[0]!.value);
      // ifindex 1 (lo): nothing matches, so nothing is ever copied to it.
      const p = plan.planMirror({ targetIfindex: 1, sampleRate: 1, filters: schema.filterRecord(filters) }, { config, filters: {} });
      await mirror.batchText(batchText(plan.mirrorOperations(p, (m: string) => mirror.mapPin(m))));
      const group = "TrafficMirror, no match";
      cases.push({ group, path: `IPv4, ${count} filters`, hook: "tc", tree: t.label, expect: TC.UNSPEC, run: () => mirror.runProgram("tc_mirror", v4, { repeat: REPEAT }) });
      if (count === 64) cases.push({ group, path: "IPv6, 64 filters", hook: "tc", tree: t.label, expect: TC.UNSPEC, run: () => mirror.runProgram("tc_mirror", v6, { repeat: REPEAT }) });
    }
  }
  return cases;
}

// ---------------------------------------------------------------- main

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const unavailable = kernelTestsUnavailable();
  if (unavailable) {
    console.error(`bench/dataplane: ${unavailable}`);
    process.exit(2);
  }
  await buildObjects();
  const after = tree("after", REPO_ROOT);
  const before = baselineTree(BASELINE);
  const trees = [before, after];
  const ns = await createNetns();
  try {
    await ns.ip("link", "add", "lb0", "type", "veth", "peer", "name", "lb0p");
    await ns.ip("link", "set", "lb0", "up");
    await ns.ip("link", "set", "lb0p", "up");
    await ns.ip("addr", "add", "10.0.0.1/16", "dev", "lb0");
    // Forwarding stays off: bpf_fib_lookup answers FWD_DISABLED at once and the static MAC is used.
    const { ifindex } = await ns.link("lb0");
    const fib = await fibNamespace();

    console.error("setting up (both trees' objects, maps written by each tree's own provider code)");
    const emptyXdp = await program(after.object("empty_xdp"));
    const emptyTc = await program(after.object("empty_tc"), "tc");
    const probe = ipFrame({ src: "192.0.2.7", dst: "10.255.255.254", payload: udp({ srcPort: 40000, dstPort: 53, payload: Buffer.alloc(18) }) });
    const empties: Record<Hook, Case> = {
      xdp: { group: "", path: "empty XDP", hook: "xdp", expect: XDP.PASS, run: () => emptyXdp.run(probe, { repeat: REPEAT }) },
      "xdp-netns": { group: "", path: "empty XDP (netns, ingress ifindex)", hook: "xdp-netns", expect: XDP.PASS, run: () => runXdp(emptyXdp, probe, { netns: ns, ingressIfindex: ifindex, repeat: REPEAT }) },
      "xdp-single": { group: "", path: `empty XDP, single shot (${SINGLE_SHOT_CALLS.toLocaleString("en")} calls of repeat 1, IQM)`, hook: "xdp-single", expect: XDP.PASS, run: () => runSingleShot(emptyXdp, probe, { netns: fib.ns, ingressIfindex: fib.ifindex, calls: SINGLE_SHOT_CALLS }) },
      tc: { group: "", path: "empty TC", hook: "tc", expect: TC.OK, run: () => emptyTc.run(probe, { repeat: REPEAT }) },
    };
    const cases = [
      ...(ONLY.has("firewall") ? await firewallCases(trees) : []),
      ...(ONLY.has("maglev") ? await maglevCases(trees, ns, ifindex, fib) : []),
      ...(ONLY.has("policy") ? await policyCases(trees) : []),
      ...(ONLY.has("mirror") ? await mirrorCases(trees) : []),
    ];
    const hooks = new Set(cases.map((c) => c.hook));
    const emptyCases = Object.values(empties).filter((c) => hooks.has(c.hook));
    const timed = [...emptyCases, ...cases];
    const samples = new Map<Case, number[]>(timed.map((c) => [c, []]));
    for (let round = 0; round < ROUNDS; round++) {
      console.error(`round ${round + 1}/${ROUNDS} (load ${loadAverage()})`);
      for (const c of timed) {
        const r = await c.run();
        const verdict = c.hook === "tc" ? r.retval | 0 : r.retval;
        if (verdict !== c.expect && !(c.expect === TC.UNSPEC && r.retval === TC_UNSPEC)) throw new Error(`${c.tree} ${c.group} ${c.path}: verdict ${verdict}, expected ${c.expect}`);
        samples.get(c)!.push(r.durationNs);
      }
    }
    const ns_ = (c: Case) => median(samples.get(c)!);
    const emptyNs = (h: Hook) => ns_(empties[h]);

    console.log(`kernel ${release()}, ${cpus()[0]?.model ?? "unknown CPU"}, ${cpus().length} CPUs; load ${loadAverage()}`);
    console.log(`BPF_PROG_TEST_RUN repeat ${REPEAT.toLocaleString("en")}, medians of ${ROUNDS} interleaved rounds; before = ${BASELINE}, after = this tree\n`);
    printTable(["empty program", "ns/pkt"], emptyCases.map((c) => [c.path, String(ns_(c))]));
    console.log("");
    const rows: string[][] = [];
    const record: Record<string, unknown>[] = [];
    const keyOf = (c: Case) => `${c.group}\u0000${c.path}`;
    const seen = new Set<string>();
    for (const c of cases) {
      const key = keyOf(c);
      if (seen.has(key)) continue;
      seen.add(key);
      const pair = (label: Tree["label"]) => cases.find((x) => keyOf(x) === key && x.tree === label);
      const b = pair("before");
      const a = pair("after");
      const e = emptyNs(c.hook);
      const bn = b ? ns_(b) : NaN;
      const an = a ? ns_(a) : NaN;
      rows.push([c.group, c.path, String(bn), `${(bn / e).toFixed(2)}`, String(an), `${(an / e).toFixed(2)}`, `${(an / bn).toFixed(2)}`]);
      record.push({ group: c.group, path: c.path, emptyNs: e, beforeNs: bn, afterNs: an });
    }
    printTable(["group", "path", "before ns", "× empty", "after ns", "× empty", "after/before"], rows, [0, 1]);
    if (ONLY.has("maglev")) {
      const figure = (group: string, path: string, label: Tree["label"]) => ns_(cases.find((c) => c.group === group && c.path === path && c.tree === label)!);
      console.log(`\nMaglevService targets (issue 12):\n  ${maglevTargets(figure, emptyNs("xdp-single"), emptyNs("xdp-netns")).join("\n  ")}`);
    }
    if (firewallPushes.length > 0) {
      console.log("\nXdpFirewall lists (both families) written with the tree's own plan in one bpftool batch, read back (every record map dumped), map memory (bytes_memlock)");
      printTable(["list per family", "tree", "written", "read back", "records", "maps"], firewallPushes, [0, 1]);
    }
    writeBenchRecord("dataplane", { kernel: release(), baseline: BASELINE, repeat: REPEAT, rounds: ROUNDS, empties: Object.fromEntries(emptyCases.map((c) => [c.path, ns_(c)])), rows: record });
  } finally {
    for (const p of loaded) p.close();
    ns.close();
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
