// A stateful TC policy on a host's interface: inbound, only SSH and the services
// listed in stack config get in; the host's own outbound connections get their
// replies (the egress hook records them); everything else inbound is dropped.
// By default the host is the first of the local lab (`bash scripts/demo.sh
// --keep` starts one). Config:
//
//   labFile        lab.json of the lab (default /run/bpfleet-lab/demo/lab.json)
//   rules          ingress rules, e.g. pulumi config set --path 'rules[2]' "allow udp 5000"
//                  (default: allow tcp 22, allow tcp 8080)
//   otherTimeout   idle timeout of UDP/ICMP flows in seconds (default 60)
//
// A default-deny ingress also drops DHCP replies and multicast: on a host that
// gets its address by DHCP, add "allow udp 68".
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

interface Lab {
  privateKeyPath: string;
  hosts: { name: string; address: string; hostKey: string; interface: string }[];
}

const config = new pulumi.Config();
const lab: Lab = JSON.parse(fs.readFileSync(config.get("labFile") ?? "/run/bpfleet-lab/demo/lab.json", "utf8"));
const host = lab.hosts[0]!;

const policy = new bpfleet.TcPolicy("edge-policy", {
  host: {
    address: host.address,
    hostKey: host.hostKey,
    privateKey: pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")),
  },
  interface: host.interface,
  stateful: true,
  ingress: { default: "deny", rules: config.getObject<string[]>("rules") ?? ["allow tcp 22", "allow tcp 8080"] },
  timeouts: { other: config.getNumber("otherTimeout") ?? 60 },
});

export const ingressRules = policy.ingress.apply((ingress) => Object.keys(ingress.rules));
export const counters = policy.counters;
export const ruleHits = policy.ruleHits;
export const liveFlows = policy.liveFlows;
