/**
 * What sharing an interface costs: the XDP firewall attached alone, next to the
 * same firewall run through bpfleet's dispatcher (bpf/xdp_dispatcher.bpf.c), and
 * the firewall-then-Maglev chain, measured in the kernel with BPF_PROG_TEST_RUN,
 * side by side in one run. An XDP program that only returns XDP_PASS gives the
 * harness's own cost.
 *
 *   sudo npx tsx bench/xdp-chain.ts [--repeat N] [--rounds N]
 *
 * Packet: an allowed IPv4 TCP SYN to no VIP, the worst case for a chain (every
 * member passes it, so every member runs). Each figure is the median of
 * `rounds` runs of `repeat` packets.
 */
import { execFileSync } from "node:child_process";
import { ETH_P, ethernet, ipv4, tcp } from "../test/kernel/packets";
import { buildObjects, kernelTestsUnavailable, loadProgram, objectPath, XDP, type LoadedProgram } from "../test/kernel/progRun";
import { numberOption } from "./support";

const REPEAT = numberOption("repeat", 1_000_000);
const ROUNDS = numberOption("rounds", 5);

const u32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff].map(String);

/** As the provider places a member: its xdp_chain_next first, then its slot. */
function place(chain: string, member: LoadedProgram, slot: number): void {
  execFileSync("bpftool", ["map", "update", "pinned", member.mapPin("xdp_chain_next"), "key", ...u32(0), "value", ...u32(slot + 1)]);
  execFileSync("bpftool", ["map", "update", "pinned", chain, "key", ...u32(slot), "value", "pinned", member.progPin]);
}

function clear(chain: string, slot: number): void {
  execFileSync("bpftool", ["map", "delete", "pinned", chain, "key", ...u32(slot)]);
}

async function median(prog: LoadedProgram, frame: Buffer): Promise<number> {
  const runs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const { retval, durationNs } = await prog.run(frame, { repeat: REPEAT });
    if (retval !== XDP.PASS) throw new Error(`expected XDP_PASS, got ${retval}`);
    runs.push(durationNs);
  }
  return runs.sort((a, b) => a - b)[Math.floor(runs.length / 2)]!;
}

async function main(): Promise<void> {
  const unavailable = kernelTestsUnavailable();
  if (unavailable) throw new Error(unavailable);
  await buildObjects();
  const frame = ethernet({
    dst: "02:00:00:00:00:01",
    src: "02:00:00:00:00:02",
    etherType: ETH_P.IP,
    payload: ipv4({ src: "192.0.2.7", dst: "10.0.0.1", payload: tcp({ srcPort: 40000, dstPort: 22, flags: { syn: true } }) }),
  });
  const empty = await loadProgram(objectPath("empty_xdp"));
  const dispatcher = await loadProgram(objectPath("xdp_dispatcher"));
  const chain = dispatcher.mapPin("xdp_chain");
  const alone = await loadProgram(objectPath("xdp_firewall"));
  const member = await loadProgram(objectPath("xdp_firewall"), "xdp", { xdp_chain: chain });
  const balancer = await loadProgram(objectPath("xdp_maglev"), "xdp", { xdp_chain: chain });
  try {
    const rows: [string, number][] = [];
    rows.push(["XDP_PASS only (harness)", await median(empty, frame)]);
    rows.push(["dispatcher, empty chain", await median(dispatcher, frame)]);
    rows.push(["firewall alone", await median(alone, frame)]);
    place(chain, member, 0);
    rows.push(["dispatcher -> firewall", await median(dispatcher, frame)]);
    rows.push(["maglev alone (its own empty chain)", await median(balancer, frame)]);
    place(chain, balancer, 1);
    rows.push(["dispatcher -> firewall -> maglev", await median(dispatcher, frame)]);
    clear(chain, 0);
    clear(chain, 1);

    const base = rows.find(([n]) => n === "firewall alone")![1];
    console.log(`repeat ${REPEAT}, median of ${ROUNDS}; allowed IPv4 TCP SYN to no VIP (every member passes it)`);
    for (const [name, ns] of rows) console.log(`${name.padEnd(38)} ${String(ns).padStart(4)} ns  ${(ns / base).toFixed(2)}x firewall alone`);
  } finally {
    for (const p of [balancer, member, alone, dispatcher, empty]) p.close();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
