/**
 * Pushing a large deny list to a host: through the provider (SSH, one bpftool
 * batch, read-back of every map) next to the same bpftool batch run directly on
 * the host, measured side by side on one lab host.
 *
 *   sudo npx vite-node bench/xdp-firewall-push.ts [--entries N] [--lab NAME] [--revert-seconds S] [--no-direct]
 *
 * --no-direct skips the direct bpftool batch and dump (minutes at 1M entries), for a
 * before/after of the provider's push alone, two trees back to back.
 * The lab host's eth0 carries the provider's SSH session, so the lockout guard is
 * armed for every change: its revert timer must outlast the push, or the host
 * undoes it mid-batch (a 1M push takes minutes). --revert-seconds sets
 * lockoutRevertSeconds (default 3600, the most it takes); 0 turns the guard off.
 */
import { readFileSync } from "node:fs";
import { execa } from "execa";
import { checkInputs } from "../provider/dynamicAdapter";
import { MAX_REVERT_SECONDS, MIN_REVERT_SECONDS } from "../provider/remote/lockout";
import { batchText } from "../provider/remote/mapOperations";
import { closeAllSessions } from "../provider/remote/ssh";
import { xdpFirewallKind as firewall } from "../provider/xdpFirewall/lifecycle";
import { denyOperations, planDeny } from "../provider/xdpFirewall/plan";
import { xdpFirewallSchema, type XdpFirewallInputs } from "../provider/xdpFirewall/schema";
import { createLab } from "../test/lab/lab";

const args = process.argv.slice(2);
const ENTRIES = Number(args[args.indexOf("--entries") + 1] || 100_000);
const option = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1]! : fallback);
const REVERT_SECONDS = Number(option("revert-seconds", "3600"));
const DIRECT = !args.includes("--no-direct");
// 0 turns the guard off; anything else must be a window the schema accepts (a typo must
// not silently run the push unguarded).
if (!Number.isInteger(REVERT_SECONDS) || (REVERT_SECONDS !== 0 && (REVERT_SECONDS < MIN_REVERT_SECONDS || REVERT_SECONDS > MAX_REVERT_SECONDS))) {
  throw new Error(`--revert-seconds must be 0 (guard off) or a whole number ${MIN_REVERT_SECONDS}-${MAX_REVERT_SECONDS}, got ${option("revert-seconds", "3600")}`);
}

/** ENTRIES distinct exact IPv4 addresses in 100.64.0.0/10, away from the lab's own subnet. */
function denyList(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `100.${64 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`);
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = process.hrtime.bigint();
  const value = await fn();
  return [value, Number(process.hrtime.bigint() - start) / 1e6];
}

async function main(): Promise<void> {
  const lab = await createLab(option("lab", "bpush"), { hosts: 1 });
  const host = lab.hosts[0]!;
  const privateKey = readFileSync(lab.privateKeyPath, "utf8");
  const deny = denyList(ENTRIES);
  const inputs = (list: string[]) =>
    checkInputs(xdpFirewallSchema, {
      host: { address: host.address, hostKey: host.hostKey },
      credentials: { privateKey },
      interface: "eth0",
      name: "bench",
      deny: list,
      ...(REVERT_SECONDS > 0 ? { lockoutRevertSeconds: REVERT_SECONDS } : { lockoutGuard: false }),
    }).inputs as XdpFirewallInputs;
  try {
    const [, checkMs] = await timed(async () => inputs(deny));
    const empty = await firewall.create(inputs([]));
    const all = inputs(deny);
    const [pushed, providerMs] = await timed(() => firewall.update(empty.id, empty.outs, all));
    if (Object.keys(pushed.deny).length !== ENTRIES) throw new Error(`expected ${ENTRIES} entries, host has ${Object.keys(pushed.deny).length}`);
    const [readBack, readMs] = await timed(() => firewall.read(empty.id, pushed));
    if (Object.keys(readBack!.outs.deny).length !== ENTRIES) throw new Error(`read back ${Object.keys(readBack!.outs.deny).length} entries, expected ${ENTRIES}`);
    const same = inputs(deny);
    const [, noopMs] = await timed(() => firewall.update(empty.id, pushed, same));
    const oneChange = inputs([...deny.slice(1), "192.0.2.1"]);
    const [, oneMs] = await timed(() => firewall.update(empty.id, pushed, oneChange));
    await firewall.delete(empty.id, pushed);

    // The same map writes, straight into a freshly loaded firewall's maps on the host.
    let directMs = NaN;
    let dumpMs = NaN;
    if (DIRECT) {
      const direct = await firewall.create(inputs([]));
      const batch = batchText(denyOperations(planDeny(Object.keys(inputs(deny).deny), []), (m) => `/sys/fs/bpf/bpfleet/xdp-firewall/bench/maps/${m}`));
      [, directMs] = await timed(() => lab.inHost(host, ["bpftool", "batch", "file", "-"], { input: batch }));
      [, dumpMs] = await timed(() => lab.inHost(host, ["bpftool", "-j", "map", "dump", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/bench/maps/deny_v4_exact"], { stdout: "ignore" }));
      await firewall.delete(direct.id, direct.outs);
    }

    const rows: [string, number][] = [
      [`check(): canonicalise ${ENTRIES} entries (pure)`, checkMs],
      [`provider update 0 -> ${ENTRIES} entries (SSH + batch + read-back)`, providerMs],
      ...(DIRECT
        ? ([
            [`bpftool batch of the same ${ENTRIES} updates, run on the host`, directMs],
            [`bpftool map dump of ${ENTRIES} entries, run on the host`, dumpMs],
          ] as [string, number][])
        : []),
      [`provider read (refresh): every record map dumped and decoded`, readMs],
      [`provider update, nothing changed (reads the maps to compare)`, noopMs],
      [`provider update, one entry replaced`, oneMs],
    ];
    console.log(`\nPushing ${ENTRIES} deny entries to one lab host (kernel ${(await execa("uname", ["-r"])).stdout}; ${REVERT_SECONDS > 0 ? `lockout guard armed, lockoutRevertSeconds ${REVERT_SECONDS}` : "lockout guard off"})`);
    for (const [label, ms] of rows) console.log(`${label.padEnd(70)} ${ms.toFixed(0).padStart(7)} ms`);
    console.log(`${"mapMemoryBytes after the push (bytes_memlock of every map)".padEnd(70)} ${(pushed.mapMemoryBytes / 1048576).toFixed(1).padStart(7)} MiB`);
    if (DIRECT) {
      console.log(`${"ratio provider push / direct bpftool batch".padEnd(70)} ${(providerMs / directMs).toFixed(2).padStart(7)} x`);
      console.log(`${"ratio provider push / (direct batch + direct dump)".padEnd(70)} ${(providerMs / (directMs + dumpMs)).toFixed(2).padStart(7)} x`);
    }
  } finally {
    closeAllSessions();
    await lab.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
