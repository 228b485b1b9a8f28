// A Maglev load balancer: an XDP program on one host spreads connections to a
// VIP over backends, in direct server return (the backends answer clients
// themselves). By default the fleet is a local lab (`test/lab/lab.sh up NAME
// --hosts 4 --clients 1`, then `pulumi config set labFile <its lab.json>`):
// its first host balances, the others are backends (test/e2e/maglevService.test.ts
// prepares them as below). To deploy to real machines instead:
//
//   pulumi config set --path 'loadBalancer.address' 10.0.0.7
//   pulumi config set --path 'loadBalancer.hostKey' "ssh-ed25519 AAAA..."
//   pulumi config set --secret sshKey "$(cat ~/.ssh/id_ed25519)"
//   pulumi config set --path 'backends[0]' 10.0.0.21
//   pulumi config set --path 'backends[1]' 10.0.0.22
//   pulumi config set --path 'vips[0]' 198.51.100.10:80/tcp
//
// In dsr mode each backend must hold the VIP on a loopback and not answer ARP
// for it (sysctl net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2),
// and the network must route the VIP to the load balancer.
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

interface Machine {
  name?: string;
  address: string;
  address6?: string;
  user?: string;
  port?: number;
  hostKey: string;
  interface?: string;
}

interface Lab {
  privateKeyPath: string;
  hosts: (Machine & { name: string; address6: string })[];
}

const config = new pulumi.Config();
const configured = config.getObject<Machine>("loadBalancer");
const lab: Lab | undefined = configured
  ? undefined
  : JSON.parse(fs.readFileSync(config.get("labFile") ?? "/run/bpfleet-lab/demo/lab.json", "utf8"));
const privateKey = config.getSecret("sshKey") ?? pulumi.secret(fs.readFileSync(lab!.privateKeyPath, "utf8"));

const vips = config.getObject<string[]>("vips") ?? ["198.51.100.10:80/tcp"];
const wantsIpv6 = vips.some((vip) => vip.startsWith("["));

// The backends: addresses from config, or (in the lab) the hosts named in
// `backendHosts` (default: every host but the load balancer).
let backends = config.getObject<string[]>("backends");
if (!backends) {
  const names = config.getObject<string[]>("backendHosts") ?? lab!.hosts.slice(1).map((h) => h.name);
  backends = names.flatMap((name) => {
    const host = lab!.hosts.find((h) => h.name === name);
    if (!host) throw new Error(`backendHosts: the lab has no host ${name}`);
    return wantsIpv6 ? [host.address, host.address6] : [host.address];
  });
}

const balancer = configured ?? lab!.hosts[0]!;
const web = new bpfleet.MaglevService("web", {
  host: { address: balancer.address, port: balancer.port, user: balancer.user ?? "root", hostKey: balancer.hostKey, privateKey },
  interface: balancer.interface ?? "eth0",
  vips,
  backends,
  mode: (config.get("mode") as "dsr" | "nat" | "ipip" | undefined) ?? "dsr",
  tableSize: config.getNumber("tableSize"),
});

export const balancedVips = web.vips.apply((v) => Object.keys(v));
export const balancedBackends = web.backends.apply((b) => Object.keys(b));
export const nextHops = web.backendMacs;
export const tableDigest = web.tableDigest;
export const vipPackets = web.counters.apply((c) => Object.fromEntries(Object.entries(c.vips).map(([vip, n]) => [vip, n.packets])));
