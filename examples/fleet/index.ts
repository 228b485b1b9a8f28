// Fleet rollout: an XDP firewall on every host, all applying one deny list, rolled
// out in waves: a canary host first, then waves of `waveSize` hosts. After each
// wave a health gate checks that wave's hosts (firewall pinned and attached, a
// ping from the host gets through, the pass counter moves) before the next wave is
// touched; a failing gate fails `pulumi up` and later hosts keep their previous
// list (each host records the list it applied; the next `up` converges every host
// from what it holds).
//
// By default the fleet is a lab (`labFile` in stack config, the file lab.sh
// writes); for real machines put them in stack config instead:
//
//   pulumi config set --path 'hosts[0].name' web-1
//   pulumi config set --path 'hosts[0].address' 10.0.0.7
//   pulumi config set --path 'hosts[0].hostKey' "ssh-ed25519 AAAA..."
//   pulumi config set --secret sshKey "$(cat ~/.ssh/id_ed25519)"
//   pulumi config set --path 'deny[0]' 203.0.113.0/24
//   pulumi config set --path 'probe[0]' curl --path 'probe[1]' -fsS --path 'probe[2]' http://127.0.0.1/healthz
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

interface Host extends bpfleet.FleetHost {
  name: string;
  interface?: string;
}

interface Lab {
  privateKeyPath: string;
  hosts: { name: string; address: string; port: number; user: string; hostKey: string; interface: string }[];
  clients: { address: string }[];
}

const config = new pulumi.Config();
const labFile = config.get("labFile");
const lab: Lab | undefined = labFile ? JSON.parse(fs.readFileSync(labFile, "utf8")) : undefined;
const privateKey = config.getSecret("sshKey") ?? (lab ? pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")) : undefined);

/**
 * Deny entries of every host, held once in the stack's state as one DenyList: a
 * preview shows a changed entry once, under the list, and names each host's firewall
 * that will apply it; each firewall's state carries only the list's digest and count.
 */
const denyList = new bpfleet.DenyList("edge-deny", { entries: config.getObject<string[]>("deny") ?? ["203.0.113.0/24"] });
/** Health probe run on each host after its wave; in the lab, a ping to the first client. */
const probe = config.getObject<string[]>("probe") ?? (lab ? ["ping", "-c", "1", "-W", "1", lab.clients[0]!.address] : undefined);
/** Seconds within which the firewall's pass counter must move; 0 turns the check off. */
const counterWindow = config.getNumber("counterWindowSeconds") ?? (probe ? 1 : 0);

const fleet = new bpfleet.Fleet<Host, bpfleet.XdpFirewall>("edge", {
  // Without `hosts`, the fleet reads the list from stack config "hosts".
  hosts: lab?.hosts.map(({ name, address, port, user, hostKey, interface: iface }) => ({ name, address, port, user, hostKey, interface: iface })),
  hostDefaults: { privateKey },
  canary: config.getNumber("canary") ?? 1,
  waveSize: config.getNumber("waveSize") ?? 5,
  health: {
    probe,
    probeAttempts: 2,
    probeIntervalSeconds: 1,
    counter: counterWindow > 0 ? { name: "passPackets", windowSeconds: counterWindow } : undefined,
  },
  resource: (host, member) => new bpfleet.XdpFirewall(member.name, { host: member.host, interface: host.interface ?? "eth0", denyList }, member.opts),
});

/** Host names per wave, canary first. */
export const waves = fleet.waves;
/** Per host: wave, version digest, BPF object, program id, and the list it applied (denyEntries, denyListDigest). */
export const rollout = fleet.hosts;
