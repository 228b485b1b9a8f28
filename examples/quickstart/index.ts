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

// The list is held once in the stack's state, whatever the number of hosts: each
// firewall's state carries only its digest and count, and a preview shows a changed
// entry once, under this resource, then the firewalls that will apply it.
const denyList = new bpfleet.DenyList("edge-deny", { entries: deny });

const firewalls = hosts.map(
  (host, i) =>
    new bpfleet.XdpFirewall(`edge-fw-${host.name ?? i}`, {
      host: { address: host.address, port: host.port, user: host.user ?? "root", hostKey: host.hostKey, privateKey },
      interface: host.interface ?? "eth0",
      denyList,
    }),
);

export const programs = firewalls.map((fw) => fw.programId);
// Summaries, not the entries: a stack output is re-diffed and printed on every change,
// and a 100k-entry list printed per host cost minutes (issue 10). Per host: how many
// entries of which version it applied, and the drift refresh found there.
export const denied = firewalls.map((fw) =>
  pulumi.all([fw.denyList, fw.denyDrift]).apply(([list, drift]) => ({ entries: list?.count ?? 0, digest: list?.digest.slice(0, 12) ?? "", drift: Object.keys(drift ?? {}).length })),
);
export const dropped = firewalls.map((fw) => fw.counters.apply((c) => c.dropPackets));
