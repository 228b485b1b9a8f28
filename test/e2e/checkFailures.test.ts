// End to end: what a user sees from `pulumi preview` when check() refuses an
// input (issue 15, findings 2 and 9), through the real CLI and the packed
// package. Before, every failure read "property deny[0] value {<nil>} has a
// problem: …" (the engine looks the property up as a top-level input key), a
// bad pinName was reported as `name`, an IPv4-mapped deny entry was kept as
// IPv6 (and dropped nothing), duplicate VIPs and a mirror port 0 passed, and a
// mirror aimed at its own interface was refused only by `up`.
// check() is pure and preview of new resources never opens SSH, so the hosts
// here are addresses nobody answers on and no lab is needed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PulumiProject } from "./pulumiProject";

// The engine stops a preview at the first resource whose check fails, so each
// scenario declares one resource.
const PROGRAM = `
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const host = { address: "192.0.2.7", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB", privateKey: pulumi.secret("not-a-key") };
const scenario = config.require("scenario");

if (scenario === "fw") new bpfleet.XdpFirewall("fw", { host, interface: "eth0", pinName: "edge.fw", deny: ["10.0.0.1", "::10.200.1.201", "10.0.0.0/33"] });
if (scenario === "fw-if") new bpfleet.XdpFirewall("fw-if", { host, interface: "eth0;reboot", deny: [] });
if (scenario === "lb") new bpfleet.MaglevService("lb", { host, interface: "eth0", vips: ["198.51.100.10:80/tcp", "198.51.100.10:80/TCP"], backends: [{ address: "10.200.1.12" }] });
if (scenario === "mirror-port") new bpfleet.TrafficMirror("mirror", { host, interface: "eth0", filters: [{ protocol: "tcp", destinationPort: 0 }], target: { interface: "mirror0" } });
if (scenario === "mirror-loop") new bpfleet.TrafficMirror("mirror", { host, interface: "eth0", target: { interface: "eth0" } });
if (scenario === "mapped") new bpfleet.XdpFirewall("fw", { host, interface: "eth0", deny: ["::ffff:10.200.1.201", "2001:db8::/32"] });
`;

let project: PulumiProject;

beforeAll(async () => {
  project = await PulumiProject.fromSource("checkfailures", PROGRAM, "bpfleet-checkfailures");
}, 600_000);

afterAll(async () => {
  // Nothing was created: the stack has no resources to destroy.
  if (project) await project.pulumi(["stack", "rm", "--yes", "--force"]);
});

async function refusedPreview(scenario: string): Promise<string> {
  await project.ok(["config", "set", "scenario", scenario]);
  const run = await project.pulumi(["preview"]);
  const output = `${run.stdout}\n${run.stderr}`;
  expect(run.exitCode, output).not.toBe(0);
  expect(output).not.toMatch(/value \{<nil>\}/);
  expect(output).toMatch(/1 errored/);
  return output;
}

describe("check failures through the real Pulumi CLI (pulumi preview)", () => {
  it("a path inside a list leads the reason; pinName is named as the SDK names it", async () => {
    const output = await refusedPreview("fw");
    expect(output).toMatch(/resource 'fw' has a problem: deny\[1\]: "::10\.200\.1\.201" is an IPv4-compatible IPv6 address \(::a\.b\.c\.d, deprecated by RFC 4291\): no packet carries it, so it would match nothing; write the IPv4 form "10\.200\.1\.201"/);
    expect(output).toMatch(/resource 'fw' has a problem: deny\[2\]: "10\.0\.0\.0\/33": prefix length must be a whole number from 0 to 32/);
    expect(output).toMatch(/resource 'fw' has a problem: pinName: must start with a letter or digit and contain only letters, digits, '_' and '-' \(bpffs refuses '\.'\)/);
  });

  it("a top-level scalar: the engine shows the value the user wrote", async () => {
    const output = await refusedPreview("fw-if");
    expect(output).toMatch(/resource 'fw-if': property interface value \{eth0;reboot\} has a problem: interface: must start with a letter or digit/);
  });

  it("the same VIP twice", async () => {
    const output = await refusedPreview("lb");
    expect(output).toMatch(/resource 'lb' has a problem: vips\[1\]: 198\.51\.100\.10:80\/tcp is listed twice \(also at vips\[0\]\); list each VIP once/);
  });

  it("a mirror filter on port 0", async () => {
    const output = await refusedPreview("mirror-port");
    expect(output).toMatch(/resource 'mirror' has a problem: filters\[0\]\.destinationPort: port 0 is not a port traffic is addressed to \(use 1-65535\)/);
  });

  it("a mirror aimed at the interface it mirrors, refused at preview (before, only up refused it)", async () => {
    const output = await refusedPreview("mirror-loop");
    expect(output).toMatch(/resource 'mirror' has a problem: target\.interface: "eth0" is the mirrored interface itself: every copy sent out of it would be mirrored again \(a loop\)/);
  });

  it("pulumi preview --diff shows an IPv4-mapped deny entry as the IPv4 entry it becomes", async () => {
    await project.ok(["config", "set", "scenario", "mapped"]);
    const run = await project.ok(["preview", "--diff"]);
    expect(run.stdout).toMatch(/deny\s*: \{\s*10\.200\.1\.201\/32: "deny"\s*2001:db8::\/32\s*: "deny"\s*\}/);
    expect(run.stdout).not.toMatch(/::ffff:/);
  });
});
