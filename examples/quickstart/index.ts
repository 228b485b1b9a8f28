// Quickstart: an XDP firewall on every host of a fleet, dropping traffic from
// denied sources. By default the fleet is the local lab (`bash scripts/demo.sh`
// starts it); set `hosts` in stack config to deploy to real machines instead:
//
//   pulumi config set --path 'hosts[0].address' 10.0.0.7
//   pulumi config set --path 'hosts[0].hostKey' "ssh-ed25519 AAAA..."
//   pulumi config set --secret sshKey "$(cat ~/.ssh/id_ed25519)"
//   pulumi config set --path 'deny[0]' 203.0.113.0/24
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

interface FleetHost {
  name?: string;
  address: string;
  user?: string;
  port?: number;
  hostKey: string;
  interface?: string;
}

interface Lab {
  privateKeyPath: string;
  hosts: (FleetHost & { name: string; interface: string })[];
  clients: { name: string; address: string; address6: string }[];
}

const config = new pulumi.Config();
const configuredHosts = config.getObject<FleetHost[]>("hosts");
const lab: Lab | undefined = configuredHosts
  ? undefined
  : JSON.parse(fs.readFileSync(config.get("labFile") ?? "/run/bpfleet-lab/demo/lab.json", "utf8"));

const hosts = configuredHosts ?? lab!.hosts;
const privateKey = config.getSecret("sshKey") ?? pulumi.secret(fs.readFileSync(lab!.privateKeyPath, "utf8"));

// Large lists come from a file (one entry per line): stack config travels to the
// program in an environment variable, which the kernel caps at 128 KiB.
const denyFile = config.get("denyFile");
// In the lab, deny the first client namespace (v4 and v6) and two documentation prefixes.
const deny = (denyFile ? fs.readFileSync(denyFile, "utf8").split("\n").filter(Boolean) : undefined) ?? config.getObject<string[]>("deny") ?? [
  ...(lab ? [lab.clients[0]!.address, lab.clients[0]!.address6] : []),
  "203.0.113.0/24",
  "2001:db8::/32",
];

const firewalls = hosts.map(
  (host, i) =>
    new bpfleet.XdpFirewall(`edge-fw-${host.name ?? i}`, {
      host: { address: host.address, port: host.port, user: host.user ?? "root", hostKey: host.hostKey, privateKey },
      interface: host.interface ?? "eth0",
      deny,
    }),
);

export const programs = firewalls.map((fw) => fw.programId);
export const denied = firewalls.map((fw) => fw.deny.apply((entries) => Object.keys(entries)));
export const dropped = firewalls.map((fw) => fw.counters.apply((c) => c.dropPackets));
