import { describe, expect, it } from "vitest";
import { assessTarget, parseSurvey, type TargetSurvey } from "../../provider/healthGate/targetSurvey";
import { COUNTER_SOURCES } from "../../provider/healthGate/counters";
import { canonicalJson, digestOf } from "../../provider/healthGate/digest";
import { gateTargetSchema } from "../../provider/healthGate/schema";

const target = gateTargetSchema.parse({
  host: { address: "10.200.1.11" },
  kind: "xdp-firewall",
  name: "edge-h1",
  hook: { interface: "eth0", type: "xdp" },
});

const healthy: TargetSurvey = { pinDirExists: true, programId: 42, hooks: { xdp: [42], "tc-ingress": [], "tc-egress": [] }, stats: undefined };

describe("assessTarget", () => {
  it.each<[string, Partial<TargetSurvey>, typeof target | undefined, RegExp | undefined]>([
    ["healthy", {}, undefined, undefined],
    ["pin directory gone", { pinDirExists: false, programId: undefined }, undefined, /pin directory \/sys\/fs\/bpf\/bpfleet\/xdp-firewall\/edge-h1 is missing/],
    ["program pin gone", { programId: undefined }, undefined, /program pin \/sys\/fs\/bpf\/bpfleet\/xdp-firewall\/edge-h1\/prog is missing/],
    ["detached", { hooks: { xdp: [], "tc-ingress": [], "tc-egress": [] } }, undefined, /program id 42 is not attached to eth0 xdp \(the hook is empty\)/],
    ["someone else's program on the hook", { hooks: { xdp: [7], "tc-ingress": [], "tc-egress": [] } }, undefined, /the hook holds id 7/],
    ["interface gone", { hooks: undefined }, undefined, /interface eth0 cannot be read/],
    ["another program than the resource reported", { programId: 43, hooks: { xdp: [43], "tc-ingress": [], "tc-egress": [] } }, undefined, /pinned program is id 43, but the resource reported id 42/],
    ["staged (no hook asked for) and detached", { hooks: undefined }, { ...target, hook: undefined }, undefined],
    ["tc ingress", { hooks: { xdp: [], "tc-ingress": [42], "tc-egress": [] } }, { ...target, hook: { interface: "eth0", type: "tc-ingress" } }, undefined],
    ["tc on the wrong direction", { hooks: { xdp: [], "tc-ingress": [], "tc-egress": [42] } }, { ...target, hook: { interface: "eth0", type: "tc-ingress" } }, /not attached to eth0 tc-ingress/],
  ])("%s", (_name, patch, customTarget, problem) => {
    const problems = assessTarget(customTarget ?? target, 42, { ...healthy, ...patch });
    if (problem) expect(problems.join("\n")).toMatch(problem);
    else expect(problems).toEqual([]);
  });

  it("checks the program id only when one is expected", () => {
    const other = { ...healthy, programId: 43, hooks: { xdp: [43], "tc-ingress": [], "tc-egress": [] } };
    expect(assessTarget(target, null, other)).toEqual([]);
    expect(assessTarget(target, undefined, other)).toEqual([]);
  });
});

describe("parseSurvey", () => {
  it("reads the script's framed sections, XDP and TC hooks (clsact and tcx)", () => {
    const stdout = [
      "@@dir",
      "true",
      "@@prog",
      '{"id":42,"type":"xdp","name":"xdp_firewall","tag":"ab"}',
      "@@net",
      '[{"xdp":[{"devname":"eth0","ifindex":2,"mode":"generic","id":42}],"tc":[{"devname":"eth0","ifindex":2,"kind":"clsact/ingress","name":"x","id":50},{"devname":"eth0","kind":"tcx/egress","name":"y","prog_id":51}],"flow_dissector":[]}]',
      "@@stats",
      '[{"key":["0x00","0x00","0x00","0x00"],"values":[{"cpu":0,"value":["0x05","0x00","0x00","0x00","0x00","0x00","0x00","0x00","0x40","0x00","0x00","0x00","0x00","0x00","0x00","0x00"]},{"cpu":1,"value":["0x02","0x00","0x00","0x00","0x00","0x00","0x00","0x00","0x10","0x00","0x00","0x00","0x00","0x00","0x00","0x00"]}]}]',
      "",
    ].join("\n");
    const survey = parseSurvey(stdout);
    expect(survey).toMatchObject({ pinDirExists: true, programId: 42, hooks: { xdp: [42], "tc-ingress": [50], "tc-egress": [51] } });
    expect(COUNTER_SOURCES["xdp-firewall"]!.read(survey.stats!)).toEqual({ passPackets: 7, passBytes: 80, dropPackets: 0, dropBytes: 0 });
  });

  it("counts the members of bpfleet's XDP chain as on the hook while the dispatcher runs there, and not otherwise", () => {
    const chained = (hookId: number) =>
      parseSurvey([
        "@@dir", "true", "@@prog", '{"id":42}',
        "@@net", `[{"xdp":[{"devname":"eth0","ifindex":2,"mode":"driver","id":${hookId}}],"tc":[]}]`,
        "@@stats", "null",
        "@@dispatcher", '{"id":7,"name":"xdp_dispatcher"}',
        "@@chain", '[{"key":[],"value":[],"formatted":{"key":0,"value":42}},{"key":[],"value":[],"formatted":{"key":1,"value":43}}]',
        "",
      ].join("\n"));
    expect(chained(7).hooks?.xdp).toEqual([7, 42, 43]);
    expect(assessTarget(target, 42, chained(7))).toEqual([]);
    expect(chained(99).hooks?.xdp).toEqual([99]);
    expect(assessTarget(target, 42, chained(99))).toEqual([
      "program id 42 is not attached to eth0 xdp (the hook holds id 99)",
    ]);
  });

  it("reads missing things as missing", () => {
    expect(parseSurvey("@@dir\nfalse\n@@prog\nnull\n@@net\nnull\n@@stats\nnull\n")).toEqual({ pinDirExists: false, programId: undefined, hooks: undefined, stats: undefined });
  });
});

describe("digestOf", () => {
  it("depends on values only, not on key order", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, 2], c: "x" }, u: undefined })).toBe('{"a":{"c":"x","d":[1,2]},"b":1}');
    expect(digestOf({ deny: { "10.0.0.0/8": "deny" }, programId: 7 })).toBe(digestOf({ programId: 7, deny: { "10.0.0.0/8": "deny" } }));
    expect(digestOf({ deny: {}, programId: 7 })).not.toBe(digestOf({ deny: {}, programId: 8 }));
    expect(digestOf([1, 2])).not.toBe(digestOf([2, 1]));
  });
});
