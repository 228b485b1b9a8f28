// Issue 15, finding 2, with real packets: "::ffff:<client>" in an XdpFirewall
// deny list, or in a TcPolicy deny rule's `from`, was kept as an IPv6 /128,
// and the client's IPv4 pings still passed. Inputs go through each kind's own
// check(), as the engine sends them; the lifecycle then writes the maps.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeAllSessions } from "../../provider/remote/ssh";
import { tcPolicyKind } from "../../provider/tcPolicy/lifecycle";
import { checkTcPolicy, type TcPolicyInputs } from "../../provider/tcPolicy/schema";
import { xdpFirewallKind } from "../../provider/xdpFirewall/lifecycle";
import { checkXdpFirewall, type XdpFirewallInputs } from "../../provider/xdpFirewall/schema";
import { createLab, type Lab, type LabClient, type LabHost } from "./lab";
import { pingReaches } from "./traffic";

let lab: Lab;
let privateKey: string;
let h1: LabHost;
let c1: LabClient;
let c2: LabClient;

function common(host: LabHost) {
  return {
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
  };
}

beforeAll(async () => {
  lab = await createLab("chkmap", { hosts: 1, clients: 2 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  h1 = lab.hosts[0]!;
  [c1, c2] = lab.clients as [LabClient, LabClient];
});

afterAll(async () => {
  closeAllSessions();
  await lab?.destroy();
});

describe("IPv4-mapped addresses act on IPv4 packets", () => {
  it("XdpFirewall: deny ['::ffff:<client>'] drops that client's IPv4 pings, and only its", async () => {
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
    const checked = checkXdpFirewall({ ...common(h1), name: "mapped", deny: [`::ffff:${c1.address}`] });
    expect(checked.failures).toBeUndefined();
    const inputs = checked.inputs as XdpFirewallInputs;
    expect(inputs.deny).toEqual({ [`${c1.address}/32`]: "deny" });
    const { id, outs } = await xdpFirewallKind.create(inputs);
    try {
      expect(await pingReaches(lab, c1, h1.address)).toBe(false);
      expect(await pingReaches(lab, c2, h1.address)).toBe(true);
      // What the host holds reads back as the IPv4 entry: the next preview shows no drift.
      expect((await xdpFirewallKind.read(id, outs))?.inputs.deny).toEqual({ [`${c1.address}/32`]: "deny" });
    } finally {
      await xdpFirewallKind.delete(id, outs);
    }
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
  });

  it("TcPolicy: 'deny icmp from ::ffff:<client>' drops that client's IPv4 pings, and only its", async () => {
    const checked = checkTcPolicy({ ...common(h1), name: "mapped", ingress: { default: "allow", rules: [`deny icmp from ::ffff:${c1.address}`] } });
    expect(checked.failures).toBeUndefined();
    const inputs = checked.inputs as TcPolicyInputs;
    expect(Object.keys(inputs.ingress.rules)).toEqual([`deny icmp from ${c1.address}/32`]);
    const { id, outs } = await tcPolicyKind.create(inputs);
    try {
      expect(await pingReaches(lab, c1, h1.address)).toBe(false);
      expect(await pingReaches(lab, c2, h1.address)).toBe(true);
    } finally {
      await tcPolicyKind.delete(id, outs);
    }
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
  });
});
