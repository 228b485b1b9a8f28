// The management session an XdpFirewall records in its state (managementSession.ts):
// how a state with and without it is read, that it never shows as a change in a diff,
// and sh/firewall-update-check.sh run for real under a stub PATH (an `ip` and a
// `bpftool` that answer as a host would), accepting the session's address as either
// candidate and refusing anything else with the reason the provider logs.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checkInputs, diffInputs } from "../../provider/dynamicAdapter";
import { packagedObject } from "../../provider/objects";
import { shellScriptCommand } from "../../provider/remote/shellScript";
import { contentDigest } from "../../provider/sharedContent";
import { xdpFirewallKind } from "../../provider/xdpFirewall/lifecycle";
import { candidatePeers, managementSession, recordedSession, sessionFromCheck } from "../../provider/xdpFirewall/managementSession";
import { xdpFirewallSchema, type XdpFirewallOutputs } from "../../provider/xdpFirewall/schema";

describe("XdpFirewall managementSession in the state", () => {
  it("a state written before the field existed has none; a value that is no address is ignored", () => {
    expect(recordedSession({})).toBeUndefined();
    expect(recordedSession({ managementSession: undefined })).toBeUndefined();
    expect(recordedSession({ managementSession: "10.0.0.1" })).toBeUndefined();
    expect(recordedSession({ managementSession: { address: "not an address; rm -rf /" } })).toBeUndefined();
    expect(recordedSession({ managementSession: { address: 7 } })).toBeUndefined();
    expect(recordedSession({ managementSession: { address: "10.0.0.1", interface: "eth0" } })).toEqual({ address: "10.0.0.1", interface: "eth0" });
    // A name no kernel gives an interface is dropped; the address stays.
    expect(recordedSession({ managementSession: { address: "2001:db8::1", interface: "a b" } })).toEqual({ address: "2001:db8::1" });
  });

  it("keeps an IPv4 peer of a dual-stack socket as the IPv4 it is", () => {
    expect(managementSession("::ffff:10.200.1.1", "eth0")).toEqual({ address: "10.200.1.1", interface: "eth0" });
    expect(managementSession("", "eth0")).toBeUndefined();
    expect(managementSession(undefined, undefined)).toBeUndefined();
  });

  it("candidates: this end's socket address and the recorded one, deduplicated; none when neither is known", () => {
    expect(candidatePeers("127.0.0.1", { address: "10.200.1.1" })).toEqual(["127.0.0.1", "10.200.1.1"]);
    expect(candidatePeers("10.200.1.1", { address: "10.200.1.1", interface: "eth0" })).toEqual(["10.200.1.1"]);
    expect(candidatePeers("::ffff:10.200.1.1", { address: "10.200.1.1" })).toEqual(["10.200.1.1"]);
    // A jump host: no guess, the record alone.
    expect(candidatePeers(undefined, { address: "10.200.1.1" })).toEqual(["10.200.1.1"]);
    expect(candidatePeers(undefined, undefined)).toEqual([]);
  });

  it("reads what the check reports on success", () => {
    expect(sessionFromCheck({ code: 0, stdout: "10.200.1.1 eth0\n", stderr: "" })).toEqual({ address: "10.200.1.1", interface: "eth0" });
    expect(sessionFromCheck({ code: 0, stdout: "10.200.1.1 \n", stderr: "" })).toEqual({ address: "10.200.1.1" });
    expect(sessionFromCheck(undefined)).toBeUndefined();
  });

  describe("diff", () => {
    const inputs = checkInputs(xdpFirewallSchema, {
      host: { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
      credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
      interface: "eth0",
      name: "edge-fw",
      denyList: { name: "feed", digest: contentDigest(["192.0.2.9/32"]), count: 1 },
    }).inputs as XdpFirewallOutputs;
    const olds = (session?: XdpFirewallOutputs["managementSession"]): XdpFirewallOutputs => ({
      ...inputs,
      objectSha256: packagedObject("xdp_firewall").sha256,
      programId: 7,
      programTag: "abc",
      attachMode: "generic",
      counters: { passPackets: 0, passBytes: 0, dropPackets: 0, dropBytes: 0 },
      mapMemoryBytes: 0,
      expectResults: {},
      ...(session ? { managementSession: session } : {}),
    });

    it("shows no change for the recorded session alone, with or without it in the old state", () => {
      expect(diffInputs(xdpFirewallKind, olds({ address: "10.200.1.1", interface: "eth0" }), inputs)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
      expect(diffInputs(xdpFirewallKind, olds(), inputs)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
    });

    it("is no input: the schema has no such key, so check drops one a program sets", () => {
      expect("managementSession" in xdpFirewallSchema.shape).toBe(false);
      const checked = checkInputs(xdpFirewallSchema, { ...inputs, managementSession: { address: "192.0.2.1" } }).inputs!;
      expect(checked.managementSession).toBeUndefined();
    });
  });
});

describe("sh/firewall-update-check.sh", () => {
  const scratch = mkdtempSync(join(tmpdir(), "bpfleet-fwcheck-"));
  const bin = join(scratch, "bin");
  const maps = [join(scratch, "deny_v4_exact"), join(scratch, "fw_v4_state")];
  const applied = join(scratch, "applied");
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  mkdirSync(bin);
  for (const map of maps) writeFileSync(map, "");
  writeFileSync(applied, "192.0.2.9/32\n");
  const digest = contentDigest(["192.0.2.9/32"]);
  // The host: 10.200.1.1 (the lab's bridge) is routed over eth0, anything else over mgmt0;
  // program 42 is pinned and runs alone on eth0 in generic mode.
  writeFileSync(join(bin, "ip"), `#!/bin/sh\ncase "$*" in\n  "-o route get 10.200.1.1") echo "10.200.1.1 dev eth0 src 10.200.1.10 uid 0" ;;\n  "-o route get "*) echo "$4 via 10.9.0.1 dev mgmt0 src 10.9.0.10 uid 0" ;;\nesac\n`);
  writeFileSync(join(bin, "bpftool"), `#!/bin/sh\ncase "$*" in\n  "prog show pinned "*) echo "42: xdp  name xdp_firewall  tag 0123456789abcdef  gpl" ;;\n  "-j net show dev eth0") echo '[{"xdp":[{"devname":"eth0","ifindex":2,"mode":"generic","id":42}],"tc":[],"flow_dissector":[],"netfilter":[]}]' ;;\nesac\n`);
  for (const tool of ["ip", "bpftool"]) chmodSync(join(bin, tool), 0o755);

  function check(sshConnection: string, peers: string, routeDev: string) {
    const args = ["/sys/fs/bpf/bpfleet/xdp-firewall/fw/prog", "42", "eth0", "generic", applied, digest, peers, routeDev, ...maps];
    const r = spawnSync("sh", shellScriptCommand("firewall-update-check", args).slice(1), { encoding: "utf8", env: { PATH: `${bin}:/usr/bin:/bin`, SSH_CONNECTION: sshConnection } });
    return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
  }

  it("accepts the session from either candidate and reports the address and interface the host sees", () => {
    // Through a forwarder: this end's socket address is 127.0.0.1, the host sees the forwarder's.
    expect(check("10.200.1.1 40000 10.200.1.10 22", "127.0.0.1 10.200.1.1", "eth0")).toEqual({ status: 0, stdout: "10.200.1.1 eth0", stderr: "" });
    expect(check("127.0.0.1 40000 127.0.0.1 22", "127.0.0.1 10.200.1.1", "")).toMatchObject({ status: 0, stdout: "127.0.0.1 mgmt0" });
    expect(check("::ffff:10.200.1.1 40000 ::ffff:10.200.1.10 22", "10.200.1.1", "eth0")).toMatchObject({ status: 0, stdout: "10.200.1.1 eth0" });
  });

  it("refuses any other address, saying which it saw and which it expected, and changes nothing", () => {
    expect(check("10.200.1.1 40000 10.200.1.10 22", "127.0.0.1", "eth0")).toEqual({ status: 10, stdout: "", stderr: "bpfleet: the management session comes from 10.200.1.1, not from 127.0.0.1 as the provider expected" });
    expect(check("10.200.1.7 40000 10.200.1.10 22", "127.0.0.1 10.200.1.1", "")).toMatchObject({ status: 10, stderr: "bpfleet: the management session comes from 10.200.1.7, not from 127.0.0.1 or 10.200.1.1 as the provider expected" });
    // Matched as text, never as a pattern.
    expect(check("* 40000 10.200.1.10 22", "127.0.0.1 10.200.1.1", "")).toMatchObject({ status: 10 });
    expect(check("10.200.1.1 40000 10.200.1.10 22", "10.200.1.1*", "")).toMatchObject({ status: 10 });
    expect(check("", "127.0.0.1", "")).toMatchObject({ status: 10, stderr: expect.stringMatching(/address is unknown here/) });
  });

  it("holds the host to the interface the plan assumed: the firewall's (guarded) or another (not guarded)", () => {
    // Managed over mgmt0, with the plan assuming eth0: refused, and the other way round.
    expect(check("10.9.0.5 40000 10.9.0.10 22", "10.9.0.5", "eth0")).toMatchObject({ status: 10, stderr: "bpfleet: the management session from 10.9.0.5 is routed over mgmt0, not eth0" });
    expect(check("10.9.0.5 40000 10.9.0.10 22", "10.9.0.5", "mgmt0")).toMatchObject({ status: 0, stdout: "10.9.0.5 mgmt0" });
    expect(check("10.200.1.1 40000 10.200.1.10 22", "10.200.1.1", "mgmt0")).toMatchObject({ status: 10, stderr: "bpfleet: the management session from 10.200.1.1 is routed over eth0, not mgmt0" });
  });

  it("still checks the rest: the applied copy's version", () => {
    writeFileSync(applied, "192.0.2.10/32\n");
    try {
      expect(check("10.200.1.1 40000 10.200.1.10 22", "10.200.1.1", "eth0")).toMatchObject({ status: 10, stderr: expect.stringMatching(/^bpfleet: the applied copy is version [0-9a-f]{64}, not /) });
    } finally {
      writeFileSync(applied, "192.0.2.9/32\n");
    }
  });
});
