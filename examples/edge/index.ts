// The classic edge: an XDP firewall in front of a Maglev load balancer on the
// same interface of one host. An interface has a single XDP hook, so both get a
// `chainPriority`: bpfleet puts its dispatcher on the hook and runs the firewall
// (slot 0) before the balancer (slot 1). A denied source is dropped before the
// balancer sees it; an allowed client's VIP traffic is balanced; everything else
// passes both and reaches the host's own stack (SSH included).
//
// By default the fleet is a local lab (`test/lab/lab.sh up NAME --hosts 3
// --clients 2`, then `pulumi config set labFile <its lab.json>`): its first host
// is the edge, the others are backends (test/e2e/xdpChain.test.ts prepares them
// as below), and its second client is denied. To deploy to real machines instead:
//
//   pulumi config set --path 'edge.address' 10.0.0.7
//   pulumi config set --path 'edge.hostKey' "ssh-ed25519 AAAA..."
//   pulumi config set --secret sshKey "$(cat ~/.ssh/id_ed25519)"
//   pulumi config set --path 'deny[0]' 203.0.113.0/24
//   pulumi config set --path 'backends[0]' 10.0.0.21
//   pulumi config set --path 'backends[1]' 10.0.0.22
//   pulumi config set --path 'vips[0]' 198.51.100.10:80/tcp
//
// The balancer runs in direct server return: each backend holds the VIP on a
// loopback and does not answer ARP for it (sysctl net.ipv4.conf.all.arp_ignore=1
// net.ipv4.conf.all.arp_announce=2), and the network routes the VIP to the edge.
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

interface Machine {
  name?: string;
  address: string;
  user?: string;
  port?: number;
  hostKey: string;
  interface?: string;
}

interface Lab {
  privateKeyPath: string;
  hosts: (Machine & { name: string })[];
  clients: { name: string; address: string; address6: string }[];
}

const config = new pulumi.Config();
const configured = config.getObject<Machine>("edge");
const lab: Lab | undefined = configured
  ? undefined
  : JSON.parse(fs.readFileSync(config.get("labFile") ?? "/run/bpfleet-lab/demo/lab.json", "utf8"));
const privateKey = config.getSecret("sshKey") ?? pulumi.secret(fs.readFileSync(lab!.privateKeyPath, "utf8"));

const edge = configured ?? lab!.hosts[0]!;
// One host object for both resources: they must name the same machine and
// interface to share its hook (the chain is per interface).
const host: bpfleet.HostArgs = { address: edge.address, port: edge.port, user: edge.user ?? "root", hostKey: edge.hostKey, privateKey };
const iface = edge.interface ?? "eth0";

// In the lab, deny the second client (v4 and v6) and a documentation prefix;
// the first client stays allowed.
const labDenied = lab?.clients[1];
const deny = config.getObject<string[]>("deny") ?? [...(labDenied ? [labDenied.address, labDenied.address6] : []), "203.0.113.0/24"];

const vips = config.getObject<string[]>("vips") ?? ["198.51.100.10:80/tcp"];
const backends = config.getObject<string[]>("backends") ?? lab!.hosts.slice(1).map((h) => h.address);

// Slot 0: a source the firewall drops never reaches the balancer, so a denied
// client cannot even open a connection to a backend. Deny-list changes are map
// writes: the balancer's flows are not disturbed.
const firewall = new bpfleet.XdpFirewall("edge-fw", { host, interface: iface, deny, chainPriority: 0 });

// Slot 1: what the firewall passes. No dependsOn between the two: the first to
// arrive attaches the dispatcher and the provider serialises chain changes with
// a lock on the host, so one `pulumi up` creates both in parallel.
const web = new bpfleet.MaglevService("web", { host, interface: iface, vips, backends, mode: "dsr", chainPriority: 1 });

/** The interface's chain in the order packets meet it: kernel program ids, what `bpftool prog show id N` lists. */
export const chain = pulumi.all([firewall.programId, web.programId]);
/** "driver" or "generic" (how the dispatcher is attached; "detached" if a member is out of its slot). */
export const attachModes = { firewall: firewall.attachMode, balancer: web.attachMode };
export const denied = firewall.deny.apply((entries) => Object.keys(entries));
export const balancedVips = web.vips.apply((v) => Object.keys(v));
export const balancedBackends = web.backends.apply((b) => Object.keys(b));
// Counters as of the last up/refresh: dropped by the firewall, and what reached each VIP past it.
export const dropped = firewall.counters.apply((c) => c.dropPackets);
export const vipPackets = web.counters.apply((c) => Object.fromEntries(Object.entries(c.vips).map(([vip, n]) => [vip, n.packets])));
