/**
 * TCP connection setup rate through TcPolicy in the lab, next to the same lab
 * without the policy, in one run.
 *
 * A client namespace opens connections to a server on lab host h1's eth0 as
 * fast as it can (several processes, each: connect, read until the server
 * closes, close; the server accepts and closes at once), for a fixed time per
 * measurement. The setups take turns measurement by measurement; a rate is the
 * median of its measurements, a ratio the median of the ratios within a round
 * (other load on the machine drifts less within a round than over the run):
 *
 *   - no policy (the policy's filters detached: `attached: false`);
 *   - stateless policy: ingress default deny, allow tcp 22 and the server's
 *     port, plus 100 other rules (deny rules with ports and source prefixes);
 *   - the same rules stateful: every connection creates a flow entry (with
 *     its idle timer), its packets after the SYN are flow hits, and its FIN
 *     moves it to the transitory timeout.
 *
 * The policy is switched between setups by the provider (update), as a user
 * would. Results are also written to .bench/tc-policy-connections.json.
 *
 *   sudo npx vite-node bench/tc-policy-connections.ts [--seconds N] [--rounds N] [--clients N]
 */
import { readFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { closeAllSessions } from "../provider/remote/ssh";
import { tcPolicyKind as policy, type TcPolicyState } from "../provider/tcPolicy/lifecycle";
import { checkTcPolicy, type TcPolicyInputs } from "../provider/tcPolicy/schema";
import { createLab, type Lab, type LabHost } from "../test/lab/lab";
import { numberOption, printTable, writeBenchRecord } from "./support";

const SECONDS = numberOption("seconds", 3);
const ROUNDS = numberOption("rounds", 7);
const CLIENTS = numberOption("clients", Math.max(2, 2 * cpus().length));
const PORT = 8080;
const REPO_ROOT = resolve(__dirname, "..");

// Forks `procs` servers on one SO_REUSEPORT port; each accepts and closes. They
// die with the first process (PR_SET_PDEATHSIG), which the bench kills.
const SERVER = `
import ctypes, os, signal, socket, sys
port, procs = int(sys.argv[1]), int(sys.argv[2])
for _ in range(procs - 1):
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
        break
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("", port))
s.listen(4096)
while True:
    c, _ = s.accept()
    c.close()
`;

// Forks `procs` clients that start together and connect for `seconds`;
// prints "<connections> <errors>".
const CLIENT = `
import os, socket, sys, time
host, port, seconds, procs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
start = time.time() + 0.3
r, w = os.pipe()
pids = []
for _ in range(procs):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        while time.time() < start:
            time.sleep(0.001)
        end, done, errors = start + seconds, 0, 0
        while time.time() < end:
            try:
                c = socket.create_connection((host, port), timeout=2)
                while c.recv(64):
                    pass
                c.close()
                done += 1
            except OSError:
                errors += 1
        os.write(w, ("%d %d\\n" % (done, errors)).encode())
        os._exit(0)
    pids.append(pid)
os.close(w)
for pid in pids:
    os.waitpid(pid, 0)
lines = os.read(r, 1 << 16).decode().split()
print(sum(int(x) for x in lines[0::2]), sum(int(x) for x in lines[1::2]))
`;

const OTHER_RULES = Array.from({ length: 100 }, (_, i) => `deny ${i % 2 ? "udp" : "tcp"} ${20000 + i * 17}-${20010 + i * 17} from 198.${18 + (i % 2)}.${i}.0/24`);

function inputs(lab: Lab, host: LabHost, patch: Record<string, unknown>): TcPolicyInputs {
  const result = checkTcPolicy({
    host: { address: host.address, hostKey: host.hostKey },
    credentials: { privateKey: readFileSync(lab.privateKeyPath, "utf8") },
    interface: host.interface,
    name: "bench",
    ingress: { default: "deny", rules: ["allow tcp 22", `allow tcp ${PORT}`, ...OTHER_RULES] },
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as TcPolicyInputs;
}

interface Setup {
  name: string;
  patch: Record<string, unknown>;
}

const SETUPS: Setup[] = [
  { name: "no policy (detached)", patch: { attached: false } },
  { name: "stateless policy, 102 rules", patch: { stateful: false } },
  { name: "stateful policy, 102 rules", patch: { stateful: true } },
];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const lab = await createLab("tpbench", { hosts: 1, clients: 1 });
  const h1 = lab.hosts[0]!;
  const c1 = lab.clients[0]!;
  const server = lab.inHost(h1, ["python3", "-c", SERVER, String(PORT), String(cpus().length)], { reject: false });
  let made: { id: string; outs: TcPolicyState } | undefined;
  try {
    await sleep(1000);
    const measure = async () => {
      const r = await lab.inClient(c1, ["python3", "-c", CLIENT, h1.address, String(PORT), String(SECONDS), String(CLIENTS)], { timeout: (SECONDS + 30) * 1000 });
      const [done, errors] = String(r.stdout).trim().split(/\s+/).map(Number) as [number, number];
      return { perSecond: done / SECONDS, errors };
    };
    made = await policy.create(inputs(lab, h1, SETUPS[0]!.patch));
    await measure(); // warm-up
    const results = new Map<string, { perSecond: number[]; errors: number; flowsCreated: number[] }>(SETUPS.map((s) => [s.name, { perSecond: [], errors: 0, flowsCreated: [] }]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const setup of SETUPS) {
        made.outs = await policy.update(made.id, made.outs, inputs(lab, h1, setup.patch));
        const m = await measure();
        const read = await policy.read(made.id, made.outs);
        const created = (read?.outs.counters.flowsCreated ?? 0) - made.outs.counters.flowsCreated;
        const entry = results.get(setup.name)!;
        entry.perSecond.push(m.perSecond);
        entry.errors += m.errors;
        entry.flowsCreated.push(created);
        console.error(`round ${round + 1}/${ROUNDS}: ${setup.name}: ${m.perSecond.toFixed(0)} connections/s, ${m.errors} errors, ${created} flows created, ${read?.outs.liveFlows ?? 0} in the table`);
      }
    }
    const baseline = results.get(SETUPS[0]!.name)!.perSecond;
    const rows = SETUPS.map((s) => {
      const r = results.get(s.name)!;
      // Ratios within a round, where the setups ran seconds apart, shrug off load that drifts over the run.
      const ratios = r.perSecond.map((rate, round) => rate / baseline[round]!);
      return {
        setup: s.name,
        connectionsPerSecond: Math.round(median(r.perSecond)),
        ratio: median(ratios),
        errors: r.errors,
        flowsCreated: median(r.flowsCreated),
        all: r.perSecond.map(Math.round),
        ratios: ratios.map((x) => Number(x.toFixed(3))),
      };
    });
    console.log(`kernel ${release()}, ${cpus()[0]?.model ?? "unknown CPU"}, ${cpus().length} CPUs`);
    console.log(
      `TCP connection setup (connect, server closes, close) from a client namespace to h1:${PORT} over the lab bridge, ${CLIENTS} client processes, ` +
        `${SECONDS} s per measurement, median of ${ROUNDS}, setups interleaved\n`,
    );
    printTable(
      ["setup", "connections/s", "vs no policy (median of rounds)", "failed connects", "flows created per measurement", "each measurement"],
      rows.map((r) => [r.setup, String(r.connectionsPerSecond), `${r.ratio.toFixed(3)}x`, String(r.errors), String(r.flowsCreated), r.all.join(" ")]),
    );
    writeBenchRecord("tc-policy-connections", { kernel: release(), seconds: SECONDS, rounds: ROUNDS, clients: CLIENTS, rows });
  } finally {
    if (made) await policy.delete(made.id, made.outs).catch((err) => console.error(`deleting the policy: ${(err as Error).message}`));
    server.kill("SIGTERM");
    closeAllSessions();
    await lab.destroy();
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
