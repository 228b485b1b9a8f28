// Fault injection at every step: for each kind and each of create, update, delete
// and read, the operation is cut at its k-th remote command for every k (counted on
// a clean run first), through the hook in provider/remote/ssh.ts (BPFLEET_FAULT).
// After each cut: the host must hold exactly the old or exactly the new state (a
// pending revert timer may still be on its way to "old"), the error must name the
// resource and the step, what it says the host holds ("as before", "new") must be
// what the host holds (the matrix's "said" column), and the retry the next `pulumi up` would make must
// converge with no manual action, also once every revert timer has fired.
//
// BPFLEET_FAULTS=ci runs a slice (see CI below).
// BPFLEET_FAULTS=subset runs mode "cut" (connection destroyed before the step runs) at every
// step of update and the first, middle and last step of create, delete and read; the kinds
// can be narrowed with BPFLEET_FAULTS_KINDS=XdpFirewall,TcPolicy (XdpFirewallDenyList: the
// firewall with a DenyList, whose update is planned without a survey).
// BPFLEET_FAULTS=full adds "cut-after" (the step ran, its answer was lost) and
// "fail" (the step fails, the connection stays up). The matrix is printed.
// BPFLEET_FAULTS_STEPS=3,7-9 narrows the steps cut to those numbers (to re-run the
// failing cases of a long matrix); the operation and mode are picked with -t, e.g.
// -t "TcPolicy: a cut at every step update, fail".
// The latency part drives each kind's create and update through a TCP proxy with
// 80 ms RTT and prints SSH round trips, commands, logins and wall time.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInputs, type Kind } from "../../provider/dynamicAdapter";
import { OperationError, operations } from "../../provider/operations";
import { closeAllSessions, sessionFor, stepNamed, type Operation } from "../../provider/remote/ssh";
import type { Credentials, HostConnection } from "../../provider/remote/hostSchema";
import { pinLayout } from "../../provider/remote/pins";
import { MAPS as TC_MAPS, PEER4_FILTER, TRIE_MAPS } from "../../provider/tcPolicy/codec";
import { surveyPolicy } from "../../provider/tcPolicy/hostState";
import { KIND as POLICY_KIND, observedFrom } from "../../provider/tcPolicy/outputs";
import { peerFiltersOf } from "../../provider/tcPolicy/plan";
import { checkMaglevService } from "../../provider/maglev/schema";
import { maglevServiceKind } from "../../provider/maglev/lifecycle";
import { checkTcPolicy } from "../../provider/tcPolicy/schema";
import { trafficMirrorKind } from "../../provider/trafficMirror/lifecycle";
import { trafficMirrorSchema } from "../../provider/trafficMirror/schema";
import { tcPolicyKind } from "../../provider/tcPolicy/lifecycle";
import { xdpFirewallKind } from "../../provider/xdpFirewall/lifecycle";
import { checkXdpFirewall, xdpFirewallSchema } from "../../provider/xdpFirewall/schema";
import { checkDenyList } from "../../provider/denyList/schema";
import { contentDigest, parseContentText } from "../../provider/sharedContent";
import { attachedPart, hostSnapshot, LatencyProxy, pendingGuards, snapshotDiff, waitForGuards } from "./faults";
import { createLab, type Lab, type LabHost } from "./lab";

// Unset or "off": skipped. The "ci" slice took 411 s for three kinds on the shared
// 2-core machine (issue 15 note), over the ~3 min CI can give it, so it stays opt-in.
const LEVEL = process.env.BPFLEET_FAULTS ?? "off";
const ENABLED = LEVEL !== "off";
const FULL = LEVEL === "full";
/**
 * The "ci" slice: every kind's update cut at its map batch (named, so it follows the
 * step wherever it moves) and at its last step, and its delete at its last step:
 * the cuts that leave a half-applied batch, a change whose proof never came,
 * and a delete that stopped before its cleanup.
 */
const CI = LEVEL === "ci";
const MODES = FULL ? (["cut", "cut-after", "fail"] as const) : (["cut"] as const);
type Mode = (typeof MODES)[number];
type Op = "create" | "update" | "delete" | "read";
const OPS: Op[] = CI ? ["update", "delete"] : ["create", "update", "delete", "read"];
// A short revert window, so that a timer left armed by a cut fires within the test, yet
// longer than a Maglev create on a loaded machine: a window shorter than the change
// reverts it under the provider's feet (see the report in issue 15).
const REVERT_SECONDS = 20;

let lab: Lab;
let h1: LabHost;
let privateKey: string;

type AnyKind = Kind<object, object>;

interface KindCase {
  name: string;
  kind: AnyKind;
  id: string;
  old: () => object;
  new: () => object;
  /**
   * Maps whose bytes depend on the order of past writes (rule indexes, backend
   * indexes and table slots, filter slots): the same configuration reached by
   * another path holds other bytes. Their content is judged by what the kind
   * reads back (its inputs as observed, and what it says an update must still
   * fix), not by a fingerprint.
   */
  historyMaps?: RegExp;
  /**
   * For a history map derived from others: whether it holds what they give, as one
   * line of the snapshot (what a fingerprint cannot judge once its bytes follow history).
   */
  derived?: () => Promise<string>;
}

function host(address = h1.address, port = 22) {
  return { address, port, hostKey: h1.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 };
}

function checked(result: { inputs?: unknown; failures?: unknown }): object {
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as object;
}

function firewallInputs(deny: string[], over: Record<string, unknown> = {}): object {
  return checked(checkInputs(xdpFirewallSchema, { host: host(), credentials: { privateKey }, interface: "eth0", name: "fw", deny, lockoutRevertSeconds: REVERT_SECONDS, ...over }));
}

/**
 * A firewall applying a DenyList of `entries`, registered as the list's check does
 * (every call: the harness's update plans from both versions, without a survey, when
 * both are registered; lifecycle.ts optimisticUpdate).
 */
function listFirewallInputs(entries: string[]): object {
  const list = checkDenyList(undefined, { entries });
  const keys = parseContentText((list.inputs as { entries: string }).entries);
  const denyList = { name: "feed", digest: contentDigest(keys), count: keys.length };
  return checked(checkXdpFirewall({ host: host(), credentials: { privateKey }, interface: "eth0", name: "fwl", denyList, lockoutRevertSeconds: REVERT_SECONDS }));
}

function policyInputs(rules: string[], over: Record<string, unknown> = {}): object {
  return checked(
    checkTcPolicy({
      host: host(),
      credentials: { privateKey },
      interface: "eth0",
      name: "pol",
      stateful: true,
      ingress: { default: "deny", rules },
      lockoutRevertSeconds: REVERT_SECONDS,
      ...over,
    }),
  );
}

function serviceInputs(backends: string[], over: Record<string, unknown> = {}): object {
  return checked(
    checkMaglevService({
      host: host(),
      credentials: { privateKey },
      interface: "eth0",
      name: "web",
      vips: ["198.51.100.10:80/tcp", "[2001:db8:100::10]:80/tcp"],
      backends,
      mode: "dsr",
      // A small prime table: read (which reads every slot back) stays fast.
      tableSize: 1009,
      lockoutRevertSeconds: REVERT_SECONDS,
      ...over,
    }),
  );
}

function mirrorInputs(filters: object[], over: Record<string, unknown> = {}): object {
  return checked(
    checkInputs(trafficMirrorSchema, {
      host: host(),
      credentials: { privateKey },
      interface: "eth0",
      name: "mir",
      direction: "ingress",
      filters,
      target: { interface: MIRROR_TARGET },
      lockoutRevertSeconds: REVERT_SECONDS,
      ...over,
    }),
  );
}

/**
 * Whether the policy's IPv4 peer filters (tcpol_peer4) are on, and hold what its
 * tries and rules give (plan.ts peerFiltersOf): the program trusts them while on.
 */
async function policyPeerFilters(): Promise<string> {
  const { host: on, credentials } = policyInputs([]) as { host: HostConnection; credentials: Credentials };
  const state = await surveyPolicy(await sessionFor(on, credentials), "eth0", pinLayout(POLICY_KIND, "pol"), { maps: [TC_MAPS.config, TC_MAPS.rules, ...TRIE_MAPS, TC_MAPS.peer4] });
  const dumped = state.maps.get(TC_MAPS.peer4);
  if (!dumped) return "peer filters: no map";
  const observed = observedFrom(state);
  const have = new Map(dumped.map((e) => [Buffer.from(e.key).readUInt32LE(0), Buffer.from(e.values[0]!).toString("hex")]));
  const right = [...peerFiltersOf(observed.tries, observed.rules)].every(([key, value]) => have.get(key) === Buffer.from(value).toString("hex"));
  return `peer filters ${observed.config.skipTries & PEER4_FILTER ? "on" : "off"}, ${right ? "as the tries and rules give" : "NOT as the tries and rules give"}`;
}

// The mirror's local target: a veth pair inside h1 (as in trafficMirror.test.ts).
const MIRROR_TARGET = "flt0";

const KINDS: KindCase[] = [
  {
    name: "XdpFirewall",
    kind: xdpFirewallKind as unknown as AnyKind,
    id: "",
    old: () => firewallInputs(["192.0.2.1", "198.51.100.0/24", "2001:db8::/48"]),
    new: () => firewallInputs(["192.0.2.1", "192.0.2.2", "203.0.113.0/24", "2001:db8:1::/48"]),
    // A net slot an entry left keeps its key bytes, marked not valid (the torn-write steps),
    // so old -> new -> old holds other bytes than a fresh old; a way bucket ends as built
    // fresh, but a cut mid-steps leaves a step's bytes. What they serve is proven by the
    // kernel tests and the unit test's torn-write replays.
    historyMaps: /^fw_(v4_ways|v6_ways|v4_net_slots)$/,
  },
  {
    // The same kind with its entries held once, in a DenyList: an update between two
    // registered versions is planned from the state, and its first exec checks the
    // host before it arms the revert and runs the batch (lifecycle.ts optimisticUpdate).
    name: "XdpFirewallDenyList",
    kind: xdpFirewallKind as unknown as AnyKind,
    id: "",
    old: () => listFirewallInputs(["192.0.2.1/32", "198.51.100.0/24", "2001:db8::/48"]),
    new: () => listFirewallInputs(["192.0.2.1/32", "192.0.2.2/32", "203.0.113.0/24", "2001:db8:1::/48"]),
    historyMaps: /^fw_(v4_slots|v6_slots|v4_net_slots)$/,
  },
  {
    name: "TcPolicy",
    kind: tcPolicyKind as unknown as AnyKind,
    id: "",
    old: () => policyInputs(["allow tcp 22", "allow tcp 8080"]),
    new: () => policyInputs(["allow tcp 22", "allow tcp 8081", "allow udp 5000 from 10.0.0.0/8"]),
    // tcpol_peer4 holds rule indexes too (its /0 rule sets): judged by `derived`.
    historyMaps: /^tcpol_(rules|l4|src4|src6|dst4|dst6|peer4)$/,
    derived: policyPeerFilters,
  },
  {
    name: "MaglevService",
    kind: maglevServiceKind as unknown as AnyKind,
    id: "",
    old: () => serviceInputs([lab.hosts[1]!.address, lab.hosts[1]!.address6]),
    new: () => serviceInputs([lab.hosts[1]!.address, lab.hosts[2]!.address, lab.hosts[1]!.address6, lab.hosts[2]!.address6]),
    historyMaps: /^(lb_vips|lb_backends|maglev_table|table_digest)$/,
  },
  {
    name: "TrafficMirror",
    kind: trafficMirrorKind as unknown as AnyKind,
    id: "",
    old: () => mirrorInputs([{ protocol: "tcp", destinationPort: 80 }]),
    new: () => mirrorInputs([{ protocol: "tcp", destinationPort: 8080 }, { protocol: "udp", destinationPort: 53 }], { direction: "both" }),
    historyMaps: /^mirror_(config|filters|heads|ranges|ranges6)$/,
  },
];
const ONLY = process.env.BPFLEET_FAULTS_KINDS?.split(",");
const STEPS = process.env.BPFLEET_FAULTS_STEPS?.split(",").flatMap((part) => {
  const [from, to = from] = part.split("-").map(Number);
  if (!Number.isInteger(from) || !Number.isInteger(to)) throw new Error(`BPFLEET_FAULTS_STEPS: ${part} is not a step number or range (e.g. 3,7-9)`);
  return Array.from({ length: to! - from! + 1 }, (_, i) => from! + i);
});

interface Outcome {
  kind: string;
  op: Op;
  mode: Mode;
  step: number;
  of: number;
  stepName: string;
  after: "old" | "new" | "detached" | "staged" | "other";
  /** What the error said the host held (OperationError.hostState), or the error's class when it says it in its own words. */
  said: string;
  guardPending: boolean;
  converged: boolean;
  problem?: string;
}

const matrix: Outcome[] = [];

/** JSON with object keys sorted, so that two reads of one configuration print alike. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    return `{${Object.keys(record).sort().filter((k) => record[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

beforeAll(async () => {
  if (!ENABLED) return;
  lab = await createLab("faults", { hosts: 3, clients: 0 });
  h1 = lab.hosts[0]!;
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  await lab.inHost(h1, ["ip", "link", "add", MIRROR_TARGET, "type", "veth", "peer", "name", `${MIRROR_TARGET}p`]);
  for (const dev of [MIRROR_TARGET, `${MIRROR_TARGET}p`]) await lab.inHost(h1, ["ip", "link", "set", dev, "up"]);
});

afterAll(async () => {
  delete process.env.BPFLEET_FAULT;
  closeAllSessions();
  if (matrix.length > 0) printMatrix();
  await lab?.destroy();
});

function printMatrix(): void {
  const lines = [`fault matrix (modes: ${MODES.join(", ")}; ${LEVEL}${FULL ? "" : "; BPFLEET_FAULTS=full for every step in every mode"})`];
  lines.push("kind          op      mode       step  what the step runs                                   host after  said       guard  next op converged");
  for (const o of matrix) lines.push(matrixRow(o));
  // "other" with a revert timer armed is a host on its way back to old (the test waits for it).
  const bad = matrix.filter((o) => !o.converged || (o.after === "other" && !o.guardPending));
  const reverting = matrix.filter((o) => o.converged && o.after === "other" && o.guardPending);
  lines.push(`${matrix.length} cases, ${bad.length} not old-or-new-and-converged (${reverting.length} "other" with a revert armed, old once it fired)`);
  console.log(lines.join("\n"));
}

function matrixRow(o: Outcome): string {
  return `${o.kind.padEnd(13)} ${o.op.padEnd(7)} ${o.mode.padEnd(10)} ${`${o.step}/${o.of}`.padEnd(5)} ${o.stepName.slice(0, 52).padEnd(52)} ${o.after.padEnd(11)} ${o.said.slice(0, 10).padEnd(10)} ${(o.guardPending ? "armed" : "-").padEnd(6)} ${o.converged ? "yes" : `NO: ${o.problem}`}`;
}

/** Runs one kind's matrix. */
function describeKind(spec: KindCase): void {
  describe(`${spec.name}: a cut at every step`, () => {
    const counts = new Map<Op, { n: number; steps: string[] }>();
    let last: Operation | undefined;
    const ops = operations(spec.kind, (operation) => (last = operation));
    let reference: { absent: string; old: string; created: string; updated: string; outsOld: object; id: string };

    // The outputs every semantic read starts from (read needs a previous state; always the same one).
    let probe: { id: string; outs: object } | undefined;

    /** What the host holds: hostSnapshot, plus for history-dependent maps what the kind reads back. */
    async function snapshot(): Promise<string> {
      const structural = await hostSnapshot(lab, h1, "eth0", spec.historyMaps);
      if (!spec.historyMaps || !probe) return structural;
      let semantic: string;
      try {
        const read = await spec.kind.read(probe.id, probe.outs as never);
        if (!read) semantic = "absent";
        else {
          const { host: _host, credentials: _credentials, ...inputs } = read.inputs as Record<string, unknown>;
          semantic = `${canonicalJson(inputs)}\npending ${JSON.stringify(spec.kind.pendingChanges?.(read.outs, read.inputs) ?? [])}`;
        }
      } catch (err) {
        semantic = `read failed: ${(err as Error).message.split("\n")[0]}`;
      }
      if (spec.derived) semantic += `\n${await spec.derived().catch((err: Error) => `derived maps not read: ${err.message.split("\n")[0]}`)}`;
      return `${structural}\nread ${semantic}`;
    }

    async function toAbsent(outs: object, id: string): Promise<void> {
      await ops.delete(id, outs);
    }

    async function toOld(): Promise<object> {
      return (await ops.create(spec.old())).outs;
    }

    beforeAll(async () => {
      // Clean runs: the reference states and each operation's number of steps.
      const made = await ops.create(spec.old());
      const id = made.id;
      probe = made;
      await toAbsent(made.outs, id);
      const absent = await snapshot();
      const created0 = await ops.create(spec.new());
      counts.set("create", { n: last!.execs, steps: [...last!.steps] });
      const created = await snapshot();
      await toAbsent(created0.outs, id);
      const outsOld = await toOld();
      const old = await snapshot();
      await ops.read(id, outsOld);
      counts.set("read", { n: last!.execs, steps: [...last!.steps] });
      await ops.update(id, outsOld, spec.new());
      counts.set("update", { n: last!.execs, steps: [...last!.steps] });
      const updated = await snapshot();
      const outsOld2 = await toOld();
      expect(await snapshot()).toBe(old);
      await ops.delete(id, outsOld2);
      counts.set("delete", { n: last!.execs, steps: [...last!.steps] });
      expect(await snapshot()).toBe(absent);
      reference = { absent, old, created, updated, outsOld: outsOld2, id };
    }, 300_000);

    afterAll(async () => {
      delete process.env.BPFLEET_FAULT;
      if (reference) await ops.delete(reference.id, reference.outsOld).catch(() => undefined);
    });

    for (const op of OPS) {
      for (const mode of MODES) {
        it(`${op}, ${mode}: old or new after every step, and the next ${op} converges`, async () => {
          const { n, steps } = counts.get(op)!;
          expect(n).toBeGreaterThan(0);
          const problems: string[] = [];
          // CI: every step of update (where revert timers are armed), and the first, middle and last
          // step of the others; BPFLEET_FAULTS=full: every step of every operation.
          // The exec that runs the batch (alone, or with steps carried along: "a + bpftool batch").
          const batch = stepNamed(steps, "bpftool batch") + 1;
          const ks = Array.from({ length: n }, (_, i) => i + 1).filter((k) =>
            CI ? k === n || (op === "update" && k === batch) : FULL || op === "update" || k === 1 || k === Math.ceil(n / 2) || k === n,
          ).filter((k) => !STEPS || STEPS.includes(k));
          for (const k of ks) {
            const caseStart = performance.now();
            // The starting state: nothing (create), or the old configuration.
            let outs: object | undefined;
            if (op === "create") await ops.delete(reference.id, reference.outsOld);
            else outs = await toOld();
            const before = await snapshot();
            if (before !== (op === "create" ? reference.absent : reference.old)) problems.push(`step ${k}: the starting state is not the reference one:\n${snapshotDiff(op === "create" ? reference.absent : reference.old, before)}`);
            const wanted = { create: reference.created, update: reference.updated, delete: reference.absent, read: reference.old }[op];
            const run = () =>
              op === "create"
                ? ops.create(spec.new())
                : op === "update"
                  ? ops.update(reference.id, outs!, spec.new())
                  : op === "delete"
                    ? ops.delete(reference.id, outs!)
                    : ops.read(reference.id, outs!);

            process.env.BPFLEET_FAULT = `${spec.kind.kind}:${op}:${k}:${mode}`;
            let error: Error | undefined;
            try {
              await run();
            } catch (err) {
              error = err as Error;
            } finally {
              delete process.env.BPFLEET_FAULT;
            }
            const firstLine = error?.message.split("\n")[0] ?? "";
            if (!error) problems.push(`step ${k}: the operation did not fail`);
            // One line: the resource, the operation and the step.
            else if (!firstLine.includes(reference.id) || !new RegExp(`${op} failed (at|after) step ${k}\\b`).test(firstLine)) problems.push(`step ${k}: the error does not name the resource and step ${k} in its first line: ${firstLine}`);
            const said = error instanceof OperationError ? error.hostState : (error?.constructor.name ?? "-");
            // Before the snapshot: a timer that fires in between then leaves "old", not "other" unarmed.
            const guardPending = (await pendingGuards(lab, h1)) > 0;
            const after = await snapshot();
            // A delete cut between taking the program off the hook and removing its pins leaves
            // pins that do nothing to traffic: "detached", finished by the next delete.
            // A create cut after loading but before attaching leaves pins that do nothing to traffic
            // either: "staged", adopted by the next create.
            const state =
              after === before
                ? "old"
                : after === wanted
                  ? "new"
                  : op === "delete" && attachedPart(after) === attachedPart(wanted)
                    ? "detached"
                    : op === "create" && attachedPart(after) === attachedPart(before)
                      ? "staged"
                      : "other";
            // The error says what the host was seen to hold (operations.ts): a claim it makes must be true.
            // A read's "as before" is not observed (a read changes nothing), so only what a change claims is judged.
            if (op !== "read" && said === "as before" && state !== "old" && state !== "staged") problems.push(`step ${k}: the error says the host is as before, but it holds ${state}\n  the failure said: ${firstLine}`);
            if (said === "new" && state !== "new" && state !== "detached") problems.push(`step ${k}: the error says the host holds the new configuration, but it holds ${state}\n  the failure said: ${firstLine}`);

            // The next `pulumi up` (or refresh, or destroy): the same operation from the same recorded state.
            let problem: string | undefined;
            try {
              await run();
              await waitForGuards(lab, h1, (REVERT_SECONDS + 8) * 1000);
              const final = await snapshot();
              if (final !== wanted) problem = `after the retry and every revert timer, the host differs from the wanted state:\n${snapshotDiff(wanted, final)}`;
            } catch (err) {
              problem = `the retry failed: ${(err as Error).message.split("\n")[0]}`;
            }
            matrix.push({ kind: spec.name, op, mode, step: k, of: n, stepName: steps[k - 1] ?? "?", after: state, said, guardPending, converged: !problem, problem: problem?.split("\n")[0] });
            // One line per case as it ends: a long matrix (BPFLEET_FAULTS=full) can be followed, and read up to a crash.
            console.log(`case ${matrixRow(matrix[matrix.length - 1]!)} (${((performance.now() - caseStart) / 1000).toFixed(1)} s)\n  said: ${firstLine}`);
            if (problem) problems.push(`step ${k} (${steps[k - 1]}): ${problem}\n  the failure said: ${firstLine}`);
            if (state === "other" && !guardPending) problems.push(`step ${k} (${steps[k - 1]}): the host holds neither the old nor the new state:\n${snapshotDiff(before, after)}\n  the failure said: ${firstLine}`);
          }
          expect(problems, `${spec.name} ${op} ${mode}`).toEqual([]);
        }, 900_000);
      }
    }
  });
}

if (ENABLED) for (const spec of KINDS) if (!ONLY || ONLY.includes(spec.name)) describeKind(spec);

describe.skipIf(!ENABLED || CI)("latency: every kind's create and update over 80 ms RTT", () => {
  it("reports SSH round trips, commands, logins and wall time per operation", async () => {
    const proxy = new LatencyProxy({ address: h1.address, port: 22 }, 80);
    const port = await proxy.listen();
    const rows: string[] = [];
    try {
      closeAllSessions();
      for (const spec of KINDS) {
        let last: Operation | undefined;
        const ops = operations(spec.kind, (operation) => (last = operation));
        // The policy's management check looks at the port the provider dials (the proxy's); sshd still listens on 22, which it allows.
        const via = (inputs: object) => ({ ...inputs, host: { ...(inputs as { host: object }).host, address: "127.0.0.1", port }, ...(spec.name === "TcPolicy" ? { allowLockout: true } : {}) });
        const measure = async (label: string, run: () => Promise<unknown>) => {
          const trips = proxy.roundTrips;
          const start = performance.now();
          const result = await run();
          const wall = performance.now() - start;
          rows.push(`${spec.name.padEnd(13)} ${label.padEnd(7)} ${String(proxy.roundTrips - trips).padStart(6)} ${String(last!.execs).padStart(8)} ${String(last!.logins).padStart(6)} ${(wall / 1000).toFixed(2).padStart(8)}`);
          return result;
        };
        const made = (await measure("create", () => ops.create(via(spec.old())))) as { id: string; outs: object };
        const outs = await measure("update", () => ops.update(made.id, made.outs, via(spec.new())));
        await measure("read", () => ops.read(made.id, outs as object));
        await measure("delete", () => ops.delete(made.id, outs as object));
        expect(proxy.roundTrips).toBeGreaterThan(0);
      }
    } finally {
      closeAllSessions();
      await proxy.close();
    }
    console.log(["latency (80 ms RTT through a TCP proxy; round trips = host answers after the provider spoke)", "kind          op       trips commands logins   wall s", ...rows].join("\n"));
  }, 600_000);
});
