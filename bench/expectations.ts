/**
 * What packet expectations cost an update (issue 14): the provider's XdpFirewall
 * update of one deny entry on a lab host (over SSH, lockout guard on, as every
 * update on the management interface), with 0, 1, 10 and 100 expectations,
 * interleaved round by round on the same host; medians, and each ratio to the
 * same update with none. Every expectation set runs in one exec on the host.
 *
 *   sudo npx vite-node bench/expectations.ts [--rounds N] [--lab NAME]
 */
import { readFileSync } from "node:fs";
import { execa } from "execa";
import { checkInputs } from "../provider/dynamicAdapter";
import { closeAllSessions } from "../provider/remote/ssh";
import { xdpFirewallKind as firewall } from "../provider/xdpFirewall/lifecycle";
import { xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "../provider/xdpFirewall/schema";
import { createLab } from "../test/lab/lab";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1]! : fallback);
const ROUNDS = Number(option("rounds", "7"));
const COUNTS = [0, 1, 10, 100];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const lab = await createLab(option("lab", "expectb"), { hosts: 1 });
  const host = lab.hosts[0]!;
  const privateKey = readFileSync(lab.privateKeyPath, "utf8");
  // N health-check style packets to the host, none of them denied: every update meets them all.
  const expectations = (n: number) => Array.from({ length: n }, (_, i) => `tcp 10.9.${i >> 8}.${i & 255}:40000 > ${host.address}:80 syn: pass`);
  const inputs = (deny: string[], n: number) =>
    checkInputs(xdpFirewallSchema, {
      host: { address: host.address, hostKey: host.hostKey },
      credentials: { privateKey },
      interface: "eth0",
      name: "bench",
      deny,
      expect: expectations(n),
    }).inputs as XdpFirewallInputs;
  const times = new Map<number, number[]>(COUNTS.map((n) => [n, []]));
  try {
    const created = await firewall.create(inputs(["203.0.113.0/24"], 0));
    let outs: XdpFirewallOutputs = created.outs;
    let toggle = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // A different order each round, so drift on the shared machine spreads over every count.
      const order = COUNTS.map((n, i) => COUNTS[(i + round) % COUNTS.length]!);
      for (const n of order) {
        const deny = ["203.0.113.0/24", ...(toggle++ % 2 ? ["198.51.100.7"] : [])];
        const start = process.hrtime.bigint();
        outs = await firewall.update(created.id, outs, inputs(deny, n));
        times.get(n)!.push(Number(process.hrtime.bigint() - start) / 1e6);
        const met = Object.values(outs.expectResults).filter((r) => r.met).length;
        if (met !== n) throw new Error(`${n} expectations: ${met} met`);
      }
    }
    await firewall.delete(created.id, outs);
    const base = median(times.get(0)!);
    console.log(`\nXdpFirewall update of one deny entry on a lab host, ${ROUNDS} rounds interleaved (kernel ${(await execa("uname", ["-r"])).stdout})`);
    for (const n of COUNTS) {
      const m = median(times.get(n)!);
      console.log(`${`${n} expectations`.padEnd(20)} median ${m.toFixed(0).padStart(5)} ms   +${(m - base).toFixed(0).padStart(4)} ms   ${(m / base).toFixed(2)} x   (runs: ${times.get(n)!.map((t) => t.toFixed(0)).join(" ")})`);
    }
  } finally {
    closeAllSessions();
    await lab.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
