// Mirror the HTTP requests a host receives to a local capture interface.
// By default the host is the first of the local lab (`bash scripts/demo.sh --keep`
// starts one); config: labFile, port (default 80), target (default "mirtap0",
// an interface that must exist on the host: a dummy, or a veth feeding tcpdump).
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

const mirror = new bpfleet.TrafficMirror("http-mirror", {
  host: {
    address: host.address,
    hostKey: host.hostKey,
    privateKey: pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")),
  },
  interface: host.interface,
  direction: "ingress",
  filters: [{ protocol: "tcp", destinationPort: config.getNumber("port") ?? 80 }],
  target: { interface: config.get("target") ?? "mirtap0" },
});

export const filters = mirror.filters;
