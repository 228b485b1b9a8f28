import * as pulumi from "@pulumi/pulumi";
import { digestOf } from "../provider/healthGate/digest";
import { planWaves } from "../provider/healthGate/waves";
import { HealthGate, type CounterCheckArgs } from "./healthGate";
import type { HostArgs } from "./host";
import { XdpFirewall } from "./xdpFirewall";
import { TcPolicy, type TcPolicyDirectionState } from "./tcPolicy";

/** A host of a fleet: how to reach it, plus whatever else the per-host factory needs (e.g. `interface`). */
export interface FleetHost extends HostArgs {
  /**
   * The host's name in resource names (`<fleet>-<name>`), outputs and messages.
   * Letters, digits, '_' and '-'; unique in the fleet. Default: `address` with
   * every other character replaced by '-' (then `address` must be a plain string).
   * Renaming a host replaces its resources.
   */
  name?: string;
}

/** What the per-host factory gets besides the host. */
export interface FleetMember {
  /** Resource name to use: `<fleet>-<host name>`. It does not depend on the wave, so re-planning waves never replaces anything. */
  name: string;
  /** The host's connection (the host entry over `hostDefaults`, without extra fields), for the resource's `host` input. */
  host: HostArgs;
  /** The host's wave, 0 first. */
  wave: number;
  /**
   * Options the resource must be created with (spread more in if needed): the
   * fleet as parent, and a dependency on the previous wave's health gate, which
   * is what holds the resource back until that wave is healthy.
   */
  opts: pulumi.CustomResourceOptions;
}

/** How the health gate checks a resource of a kind the fleet does not know by itself. */
export interface FleetHealthTarget {
  /** Resource kind as in pin paths, e.g. "tc-policy". */
  kind: string;
  /** The resource's pin directory name. */
  pinName: pulumi.Input<string>;
  /** Program pin inside the pin directory. Default "prog". */
  program?: string;
  /** Hook the program must be on; undefined for a resource that is loaded but not attached. */
  hook?: pulumi.Input<{ interface: pulumi.Input<string>; type: "xdp" | "tc-ingress" | "tc-egress" } | undefined>;
  /** Program id the resource reports. */
  programId?: pulumi.Input<number>;
  /**
   * The resource outputs that make up its version. Their digest is the host's
   * version in the fleet's outputs and goes into the wave's gate digest, so the
   * gate runs again whenever one of them changes. Leave out counters (they move
   * on every refresh).
   */
  version: pulumi.Input<Record<string, unknown>>;
  /** Small fields shown beside the digest in the fleet's outputs. Default none. */
  summary?: pulumi.Input<Record<string, string | number | boolean | undefined>>;
  /** Packet expectations the gate proves on the host (the resource's own `expect`, in the grammar of its kind). Default none. */
  expect?: pulumi.Input<string[] | Record<string, string>>;
}

export interface FleetHealthArgs<H extends FleetHost, R extends pulumi.Resource> {
  /**
   * A command that must exit 0 on every host of a wave before the next wave
   * starts, as an argv array (`["curl", "-fsS", "http://127.0.0.1/healthz"]`),
   * never a shell string; or a function giving each host its own (undefined: no
   * probe on that host). Runs as root. Default: no probe.
   */
  probe?: string[] | ((host: H) => string[] | undefined);
  /** Seconds one probe run may take. Default 30, at most 3600. */
  probeTimeoutSeconds?: number;
  /** Probe runs before a host counts as unhealthy. Default 3, 1 to 20. */
  probeAttempts?: number;
  /** Seconds between probe runs. Default 2, 0 to 600. */
  probeIntervalSeconds?: number;
  /**
   * A counter that must grow on every host of a wave within a window, e.g.
   * `{ name: "passPackets", windowSeconds: 10 }` for XdpFirewall: proves traffic
   * still flows through the new program. Default: no counter check.
   */
  counter?: CounterCheckArgs;
  /** How to check resources other than XdpFirewall (which the fleet knows by itself); a TcPolicy the fleet also knows, when this is not given. */
  target?: (resource: R, host: H) => FleetHealthTarget;
  /**
   * Packet expectations every host of a wave must meet before the next wave starts, in
   * the `expect` grammar of the resource's kind (e.g. `(h) => [\`tcp 10.0.0.5:33000 >
   * ${h.address}:80 syn: pass\`]`): the gate runs them, with the resource's own, through
   * a probe copy of what is attached on each host; a miss stops the rollout. Default none.
   */
  expect?: (host: H) => string[];
}

export interface FleetArgs<H extends FleetHost, R extends pulumi.Resource> {
  /**
   * The hosts, in rollout order: the canary wave is the first `canary` hosts.
   * Must be plain values (the waves are planned when the program runs); fields
   * of a host may be Outputs, except `name` (or `address` when there is no name).
   * Default: the list in stack config under `hostsConfigKey`.
   */
  hosts?: H[];
  /** Stack config key holding the host list when `hosts` is not given, e.g. "hosts" or "bpfleet:hosts". Default "hosts". */
  hostsConfigKey?: string;
  /** Connection settings every host gets unless it sets its own, typically `{ privateKey: config.requireSecret("sshKey") }`. */
  hostDefaults?: Partial<HostArgs>;
  /**
   * Creates the bpfleet resource of one host. It must pass `member.opts` to the
   * resource (that is what orders the waves), and should use `member.name`.
   * Called once per host, in host order.
   */
  resource: (host: H, member: FleetMember) => R;
  /** Hosts in the canary wave. 0 for none. Default 1; at most the number of hosts. */
  canary?: number;
  /** Hosts per wave after the canary: 1 to the number of hosts. Give this or `wavePercent`, not both. */
  waveSize?: number;
  /**
   * Hosts per wave after the canary, as a percentage (1 to 100) of the whole
   * fleet, rounded up. Default 25 when `waveSize` is not given.
   */
  wavePercent?: number;
  /** What the health gate after each wave checks besides "the resource reads back healthy". */
  health?: FleetHealthArgs<H, R>;
}

/** Which version a host is on, as of the last successful `pulumi up`. */
export interface FleetHostStatus {
  /** The host's wave, 0 first. */
  wave: number;
  /** Name of the host's resource. */
  resource: string;
  /**
   * sha256 of the resource's version outputs (for XdpFirewall: its deny entries, or the
   * digest and count of the DenyList it applied; interface, attachment, object, program id).
   */
  version: string;
  /** When the host's wave last passed its health gate (ISO 8601). */
  checkedAt: string;
  /** For XdpFirewall: objectSha256, programId, attachMode, denyEntries, and with a DenyList denyListDigest (the list it applied). */
  [field: string]: string | number | boolean | undefined;
}

// The connection fields of HostArgs: a host entry may carry more (e.g. `interface`), which must not reach a resource's `host` input.
const HOST_ARG_KEYS = [
  "address",
  "port",
  "user",
  "hostKey",
  "knownHostsPath",
  "insecureSkipHostKeyCheck",
  "privateKey",
  "passphrase",
  "password",
  "agentSocket",
  "sudo",
  "jumpHost",
  "connectTimeoutMs",
  "commandTimeoutMs",
] as const satisfies readonly (keyof HostArgs)[];
// Fails to compile when HostArgs gains a field that is missing above.
const hostArgKeysComplete: Exclude<keyof HostArgs, (typeof HOST_ARG_KEYS)[number]> extends never ? true : never = true;
void hostArgKeysComplete;

function connectionOf(entry: FleetHost, defaults: Partial<HostArgs>): HostArgs {
  const connection: Record<string, unknown> = {};
  for (const key of HOST_ARG_KEYS) {
    const value = entry[key] ?? defaults[key];
    if (value !== undefined) connection[key] = value;
  }
  return connection as unknown as HostArgs;
}

function hostNameOf(entry: FleetHost, index: number): string {
  if (entry.name !== undefined) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/.test(entry.name)) {
      throw new Error(`hosts[${index}].name: "${entry.name}" must start with a letter or digit and contain only letters, digits, '_' and '-' (it becomes part of resource and pin names)`);
    }
    return entry.name;
  }
  if (typeof entry.address !== "string") throw new Error(`hosts[${index}]: give a name: the address is not a plain string, so no name can be derived from it`);
  return entry.address.replace(/[^A-Za-z0-9_-]/g, "-");
}

/** The gate's expectations of one host: the resource's own and the fleet's, as one list. */
function gateExpectations(target: FleetHealthTarget, extra: string[] | undefined): pulumi.Output<string[]> | undefined {
  if (target.expect === undefined && !extra?.length) return undefined;
  return pulumi.output(target.expect ?? []).apply((own) => [...(Array.isArray(own) ? own : Object.keys(own ?? {})), ...(extra ?? [])]);
}

function hostsFromConfig<H extends FleetHost>(key: string): H[] {
  const colon = key.indexOf(":");
  const config = colon > 0 ? new pulumi.Config(key.slice(0, colon)) : new pulumi.Config();
  const hosts = config.requireObject<H[]>(colon > 0 ? key.slice(colon + 1) : key);
  if (!Array.isArray(hosts)) throw new Error(`stack config ${key} must be a list of hosts`);
  return hosts;
}

/**
 * A TcPolicy's hook as part of its version: a hook bound to a TcRuleSet by the set's
 * digest and count as the policy reports it applied (read back from the host's record
 * on refresh: a host a failed wave left on an older set shows that one), an inline
 * hook by its rules, as they always were. Drift is left out: the host's version is
 * what it applied, and the next `up` repairs drift.
 */
function hookVersion(hook: TcPolicyDirectionState): Record<string, unknown> {
  return hook.ruleSet ? { default: hook.default, ruleSet: { digest: hook.ruleSet.digest, count: hook.ruleSet.count } } : { default: hook.default, rules: hook.rules };
}

/** TcPolicy as a fleet target: its ingress program on its TC ingress hook, versioned by its policy. */
function tcPolicyTarget(resource: TcPolicy): FleetHealthTarget {
  return {
    kind: "tc-policy",
    pinName: resource.name,
    program: "progs/tc_policy_ingress",
    hook: pulumi.all([resource.attached, resource.interface]).apply(([attached, iface]) => (attached ? { interface: iface, type: "tc-ingress" as const } : undefined)),
    programId: resource.programs.apply((p) => p.ingress.id),
    expect: resource.expect,
    version: pulumi
      .all([resource.ingress, resource.egress, resource.stateful, resource.timeouts, resource.interface, resource.objectSha256, resource.programs])
      .apply(([ingress, egress, stateful, timeouts, iface, objectSha256, programs]) => ({
        ingress: hookVersion(ingress),
        egress: hookVersion(egress),
        stateful,
        timeouts,
        interface: iface,
        objectSha256,
        programIds: { ingress: programs.ingress.id, egress: programs.egress.id },
      })),
    summary: pulumi.all([resource.objectSha256, resource.programs, resource.ingress, resource.egress]).apply(([objectSha256, programs, ingress, egress]) => ({
      objectSha256,
      programId: programs.ingress.id,
      ingressRules: ingress.ruleSet?.count ?? Object.keys(ingress.rules).length,
      ingressRuleSetDigest: ingress.ruleSet?.digest,
      egressRules: egress.ruleSet?.count ?? Object.keys(egress.rules).length,
      egressRuleSetDigest: egress.ruleSet?.digest,
    })),
  };
}

/** The health target and version of a resource the fleet knows by itself. */
function builtinTarget(resource: pulumi.Resource): FleetHealthTarget | undefined {
  if (!(resource instanceof XdpFirewall)) return undefined;
  // `name` (the pin name) is an output of every bpfleet resource, even where the class does not declare it.
  const pinName = (resource as unknown as { name: pulumi.Output<string> }).name;
  // A firewall given a DenyList is versioned by the list it reports it applied (digest and
  // count, read back from the host's applied copy on refresh), never by the entries: the
  // program would otherwise hash the whole list once per host, twice, on every run (a
  // 100k-entry list on 100 hosts), and claim the declared list for a host that kept an
  // older one (a later wave after a failed gate). Inline `deny` stays as it was, so a
  // stack's versions do not move on upgrade.
  const content: pulumi.Output<Record<string, unknown>> = resource.sharedDenyList
    ? resource.denyList.apply((list): Record<string, unknown> => ({ denyList: list && { digest: list.digest, count: list.count } }))
    : resource.deny.apply((deny): Record<string, unknown> => ({ deny }));
  const entries: pulumi.Output<Record<string, string | number | undefined>> = resource.sharedDenyList
    ? resource.denyList.apply((list): Record<string, string | number | undefined> => ({ denyEntries: list?.count ?? 0, denyListDigest: list?.digest }))
    : resource.deny.apply((deny): Record<string, string | number | undefined> => ({ denyEntries: Object.keys(deny ?? {}).length }));
  return {
    kind: "xdp-firewall",
    pinName,
    hook: pulumi.all([resource.attached, resource.interface]).apply(([attached, iface]) => (attached ? { interface: iface, type: "xdp" as const } : undefined)),
    programId: resource.programId,
    expect: resource.expect,
    version: pulumi.all([content, resource.interface, resource.attachMode, resource.objectSha256, resource.programId]).apply(([content, iface, attachMode, objectSha256, programId]) => ({
      ...content,
      interface: iface,
      attachMode,
      objectSha256,
      programId,
    })),
    summary: pulumi.all([resource.objectSha256, resource.programId, resource.attachMode, entries]).apply(([objectSha256, programId, attachMode, entries]) => ({
      objectSha256,
      programId,
      attachMode,
      ...entries,
    })),
  };
}

/**
 * One bpfleet resource per host, rolled out in waves: a canary wave first, then
 * waves of `waveSize` hosts (or `wavePercent` of the fleet). After each wave a
 * HealthGate checks that wave's hosts; the next wave's resources depend on that
 * gate, so a failing gate fails `pulumi up` and the hosts of later waves are not
 * touched: they keep their previous version. Fix the spec and run `pulumi up`
 * again; the gate of a changed wave runs again.
 *
 * Outputs are written on a successful `pulumi up`; after a failed one, the
 * failure's message (and each resource's state) says which hosts changed.
 */
export class Fleet<H extends FleetHost = FleetHost, R extends pulumi.Resource = pulumi.Resource> extends pulumi.ComponentResource {
  /** Host names per wave, wave 0 (the canary) first. */
  public readonly waves: string[][];
  /** The per-host resources, in host order. */
  public readonly resources: R[];
  /** The health gate after each wave, in wave order. */
  public readonly gates: HealthGate[];
  /** Per host name: its wave and the version it is on. */
  public readonly hosts: pulumi.Output<Record<string, FleetHostStatus>>;

  constructor(name: string, args: FleetArgs<H, R>, opts?: pulumi.ComponentResourceOptions) {
    super("bpfleet:index:Fleet", name, {}, opts);
    const entries = args.hosts ?? hostsFromConfig<H>(args.hostsConfigKey ?? "hosts");
    const named = entries.map((entry, index) => ({ entry, hostName: hostNameOf(entry, index) }));
    const seen = new Set<string>();
    for (const { hostName } of named) {
      if (seen.has(hostName)) throw new Error(`fleet ${name}: two hosts are named "${hostName}"; give each a unique name`);
      seen.add(hostName);
    }
    const planned = planWaves(named, { canary: args.canary, size: args.waveSize, percent: args.wavePercent });
    this.waves = planned.map((wave) => wave.map((h) => h.hostName));
    const canaryWave = (args.canary ?? 1) > 0;
    const health = args.health ?? {};

    this.resources = [];
    this.gates = [];
    const statuses: pulumi.Output<[string, FleetHostStatus]>[] = [];
    let previousGate: HealthGate | undefined;
    planned.forEach((wave, waveNumber) => {
      const members = wave.map(({ entry, hostName }) => {
        const member: FleetMember = {
          name: `${name}-${hostName}`,
          host: connectionOf(entry, args.hostDefaults ?? {}),
          wave: waveNumber,
          opts: { parent: this, dependsOn: previousGate ? [previousGate] : [] },
        };
        const resource = args.resource(entry, member);
        // A program that already says how to check its TcPolicies keeps its own target (and versions).
        const target = builtinTarget(resource) ?? health.target?.(resource, entry) ?? (resource instanceof TcPolicy ? tcPolicyTarget(resource) : undefined);
        if (!target) throw new Error(`fleet ${name}: the fleet cannot health-check the resource of host ${hostName}; pass health.target to say how`);
        return { entry, hostName, member, resource, target };
      });
      const versions = members.map(({ hostName, target }) => pulumi.output(target.version).apply((version) => ({ host: hostName, version: digestOf(version) })));
      const probeOf = (entry: H) => (typeof health.probe === "function" ? health.probe(entry) : health.probe);
      const gate: HealthGate = new HealthGate(
        `${name}-wave${waveNumber}`,
        {
          fleet: name,
          wave: waveNumber,
          canary: canaryWave && waveNumber === 0,
          targets: members.map(({ entry, hostName, member, target }) => ({
            host: member.host,
            label: hostName,
            kind: target.kind,
            pinName: target.pinName,
            program: target.program,
            hook: target.hook,
            programId: target.programId,
            probe: probeOf(entry),
            expect: gateExpectations(target, health.expect?.(entry)),
          })),
          digest: pulumi.all(versions).apply((list) => digestOf(list)),
          counter: health.counter,
          probeTimeoutSeconds: health.probeTimeoutSeconds,
          probeAttempts: health.probeAttempts,
          probeIntervalSeconds: health.probeIntervalSeconds,
          notReached: planned.slice(waveNumber + 1).flatMap((later) => later.map((h) => h.hostName)),
        },
        { parent: this, dependsOn: members.map((m) => m.resource) },
      );
      for (const { hostName, member, resource, target } of members) {
        this.resources.push(resource);
        statuses.push(
          pulumi
            .all([target.version, target.summary ?? {}, gate.checkedAt])
            .apply(([version, summary, checkedAt]) => [hostName, { wave: waveNumber, resource: member.name, version: digestOf(version), ...summary, checkedAt }] as [string, FleetHostStatus]),
        );
      }
      this.gates.push(gate);
      previousGate = gate;
    });

    this.hosts = pulumi.all(statuses).apply((pairs) => Object.fromEntries(pairs));
    this.registerOutputs({ waves: this.waves, hosts: this.hosts });
  }
}
