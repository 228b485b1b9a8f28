import { describe, expect, it } from "vitest";
import { failureAt } from "../support/checkFailure";
import { checkInputs, diffInputs, UNKNOWN } from "../../provider/dynamicAdapter";
import { healthGateKind } from "../../provider/healthGate/lifecycle";
import { healthGateSchema, type HealthGateInputs, type HealthGateOutputs } from "../../provider/healthGate/schema";

const target = {
  label: "h1",
  host: { address: "10.200.1.11", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
  kind: "xdp-firewall",
  name: "edge-h1",
  hook: { interface: "eth0", type: "xdp" },
  probe: ["ping", "-c1", "-W1", "10.200.1.201"],
};

const valid = {
  fleet: "edge",
  wave: 0,
  canary: true,
  targets: [target],
  programIds: [42],
  credentials: [{ privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" }],
  digest: "a".repeat(64),
  counter: { name: "passPackets", windowSeconds: 2 },
};

describe("HealthGate check", () => {
  it("takes a program pin inside one directory of the pin directory (a TcPolicy's progs/), and nothing deeper or outside", () => {
    const withProgram = (program: string) => checkInputs(healthGateSchema, { ...valid, targets: [{ ...target, program }] });
    expect((withProgram("progs/tc_policy_ingress").inputs as HealthGateInputs).targets[0]!.program).toBe("progs/tc_policy_ingress");
    for (const bad of ["progs/../prog", "a/b/c", "/prog", "progs/", "progs/.x"]) expect(withProgram(bad).failures?.[0]?.reason, bad).toMatch(/^targets\[0\]\.program: .*only letters/);
  });

  it("fills defaults", () => {
    const result = checkInputs(healthGateSchema, valid);
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toMatchObject({
      probeTimeoutSeconds: 30,
      probeAttempts: 3,
      probeIntervalSeconds: 2,
      notReached: [],
      counter: { name: "passPackets", minIncrease: 1, windowSeconds: 2 },
      targets: [{ program: "prog", host: { port: 22, user: "root" } }],
    });
  });

  it("accepts what it produced", () => {
    const once = checkInputs(healthGateSchema, valid).inputs!;
    expect(checkInputs(healthGateSchema, once).inputs).toEqual(once);
  });

  const withTarget = (patch: Record<string, unknown>) => ({ ...valid, targets: [{ ...target, ...patch }] });

  it.each([
    [withTarget({ probe: [] }), "targets[0].probe", /must name a command/],
    [withTarget({ probe: "curl -fsS http://127.0.0.1/ && reboot" }), "targets[0].probe", /argv array.*never a shell string/],
    [withTarget({ probe: { argv: ["true"] } }), "targets[0].probe", /argv array/],
    [withTarget({ probe: [""] }), "targets[0].probe[0]", /must not be empty/],
    [withTarget({ probe: ["true", "a\0b"] }), "targets[0].probe[1]", /NUL/],
    [withTarget({ probe: ["true", 7] }), "targets[0].probe[1]", /string/],
    [withTarget({ kind: "../etc" }), "targets[0].kind", /bpfleet kind/],
    [withTarget({ name: "edge.h1" }), "targets[0].pinName", /bpffs refuses/],
    [withTarget({ program: "../prog" }), "targets[0].program", /only letters/],
    [withTarget({ hook: { interface: "eth0; reboot", type: "xdp" } }), "targets[0].hook.interface", /only letters/],
    [withTarget({ hook: { interface: "eth0", type: "lwt" } }), "targets[0].hook.type", /./],
    [{ ...valid, programIds: [-1] }, "programIds[0]", /./],
    [withTarget({ programId: 42 }), "targets[0]", /programId/],
    [withTarget({ surprise: 1 }), "targets[0]", /surprise/],
    [{ ...valid, targets: [] }, "targets", /at least one host/],
    [{ ...valid, counter: { name: "passPackets", windowSeconds: -1 } }, "counter.windowSeconds", /more than 0/],
    [{ ...valid, counter: { name: "passPackets", windowSeconds: 0 } }, "counter.windowSeconds", /more than 0/],
    [{ ...valid, counter: { name: "passPackets", windowSeconds: 601 } }, "counter.windowSeconds", /at most 600/],
    [{ ...valid, counter: { name: "passPackets", windowSeconds: 5, minIncrease: 0 } }, "counter.minIncrease", /at least 1/],
    [{ ...valid, counter: { name: "packets", windowSeconds: 5 } }, "counter.name", /must be one of passPackets/],
    [{ ...valid, counter: { name: "passPackets" } }, "counter.windowSeconds", /./],
    [{ ...valid, probeTimeoutSeconds: -3 }, "probeTimeoutSeconds", /more than 0/],
    [{ ...valid, probeTimeoutSeconds: 0 }, "probeTimeoutSeconds", /more than 0/],
    [{ ...valid, probeIntervalSeconds: -1 }, "probeIntervalSeconds", /0 seconds or more/],
    [{ ...valid, probeAttempts: 0 }, "probeAttempts", /at least 1/],
    [{ ...valid, probeAttempts: 1.5 }, "probeAttempts", /whole number/],
    [{ ...valid, digest: "not-a-digest" }, "digest", /sha256/],
    [{ ...valid, wave: -1 }, "wave", /./],
    [{ ...valid, credentials: [{ privateKey: "k", token: "x" }] }, "targets[0].host", /token/],
  ])("rejects %j naming %s", (inputs, property, reason) => {
    const result = checkInputs(healthGateSchema, inputs as Record<string, unknown>);
    expect(result.inputs).toBeUndefined();
    const failure = failureAt(result, property, inputs as Record<string, unknown>);
    expect(failure.reason).toMatch(reason);
  });

  it("lets values that are unknown during preview through", () => {
    const result = checkInputs(healthGateSchema, { ...valid, digest: UNKNOWN, programIds: [UNKNOWN] });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.digest).toBe(UNKNOWN);
    // What a changing wave leaves unknown is kept out of targets, which are still checked and canonical.
    expect(result.inputs?.targets).toMatchObject([{ program: "prog", host: { port: 22, connectTimeoutMs: 15000 } }]);
  });
});

describe("HealthGate diff", () => {
  const olds = { ...(checkInputs(healthGateSchema, valid).inputs as HealthGateInputs), checkedAt: "2025-01-01T00:00:00Z", reports: [] } as HealthGateOutputs;
  const news = (patch: Record<string, unknown>) => checkInputs(healthGateSchema, { ...valid, ...patch }).inputs as HealthGateInputs;

  it("is unchanged when the wave is unchanged (what it saw last time is no input)", () => {
    expect(diffInputs(healthGateKind, olds, news({}))).toMatchObject({ changes: false, replaces: [] });
  });

  it("runs again when the wave's digest changes, or is unknown during preview", () => {
    expect(diffInputs(healthGateKind, olds, news({ digest: "b".repeat(64) }))).toMatchObject({ changes: true, replaces: [] });
    expect(diffInputs(healthGateKind, olds, { ...news({}), digest: UNKNOWN })).toMatchObject({ changes: true, replaces: [] });
    expect(diffInputs(healthGateKind, olds, news({ programIds: [43] })).changes).toBe(true);
  });

  it("runs again when what it checks changes", () => {
    expect(diffInputs(healthGateKind, olds, news({ counter: { name: "passPackets", windowSeconds: 3 } })).changes).toBe(true);
    expect(diffInputs(healthGateKind, olds, news({ targets: [{ ...target, probe: ["true"] }] })).changes).toBe(true);
  });

  it("is replaced (so it runs again) when it moves to another wave", () => {
    expect(diffInputs(healthGateKind, olds, news({ wave: 1 }))).toMatchObject({ changes: true, replaces: ["wave"] });
  });
});
