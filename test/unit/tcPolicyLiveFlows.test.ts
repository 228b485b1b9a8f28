// The shell function read uses to count live flows (hostState.ts LIVE_FLOWS_SH),
// run for real under a stub bpftool that prints canned dumps in bpftool's JSON
// shape (raw bytes, then BTF-formatted members). test/kernel/tcPolicy.test.ts
// runs the same function on the pinned maps of the loaded object.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { encodeConfig, encodeFlowKey, ZERO_CONFIG, encodeFlowValue, secondsToNs, u32Key, type FlowKey, type FlowValue } from "../../provider/tcPolicy/codec";
import { LIVE_FLOWS_SH } from "../../provider/tcPolicy/hostState";

const scratch = mkdtempSync(join(tmpdir(), "bpfleet-liveflows-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const hex = (bytes: Uint8Array) => [...bytes].map((b) => `"0x${b.toString(16).padStart(2, "0")}"`).join(",");
/** One map dump as `bpftool -j map dump` prints it for a map with BTF. */
const dump = (entries: { key: Uint8Array; value: Uint8Array }[]) =>
  `[${entries.map((e) => `{"key":[${hex(e.key)}],"value":[${hex(e.value)}],"formatted":{"key":{"local":[1,2],"remote":[3,4]},"value":{"last_seen_ns":1,"state":0,"reserved":[0,0]}}}`).join(",")}]`;

function config(established: number, transitory: number, other: number): Uint8Array {
  return encodeConfig({
    ...ZERO_CONFIG, stateful: true,
    tcpEstablishedNs: secondsToNs(established), tcpTransitoryNs: secondsToNs(transitory), otherNs: secondsToNs(other),
  });
}

let n = 0;
function flow(protocol: number, state: FlowValue["state"], idleSeconds: number): { key: Uint8Array; value: Uint8Array } {
  const key: FlowKey = { family: 4, protocol, local: "10.0.0.1", remote: `192.0.2.${++n}`, localPort: 40000 + n, remotePort: 443 };
  const lastSeenNs = (process.hrtime.bigint() - BigInt(Math.round(idleSeconds * 1e9))) & 0xffff_ffff_ffff_ffffn;
  return { key: encodeFlowKey(key), value: encodeFlowValue({ lastSeenNs, state, flags: 0 }) };
}

/** Runs count_live_flows with a bpftool that prints <scratch>/<case>/<pin basename>.json. */
function countLive(name: string, cfg: string | undefined, flows: string): number {
  const dir = join(scratch, name);
  execFileSync("mkdir", ["-p", dir]);
  if (cfg !== undefined) writeFileSync(join(dir, "tcpol_cfg.json"), cfg);
  writeFileSync(join(dir, "tcpol_flows.json"), flows);
  writeFileSync(join(dir, "bpftool"), `#!/bin/sh\neval "f=\\$$#"\ncat "${dir}/$(basename "$f").json" 2>/dev/null || { echo '{"error":"no map"}'; exit 255; }\n`);
  chmodSync(join(dir, "bpftool"), 0o755);
  const out = execFileSync("sh", ["-c", `${LIVE_FLOWS_SH}\ncount_live_flows /pins/tcpol_cfg /pins/tcpol_flows`], {
    encoding: "utf8",
    env: { ...process.env, PATH: `${dir}:${process.env.PATH}` },
  });
  return Number(out.trim());
}

describe("count_live_flows (read's liveFlows)", () => {
  const cfg = dump([{ key: u32Key(0), value: config(3600, 30, 60) }]);

  it("counts a flow only while idle for less than the timeout of its protocol and state", () => {
    const flows = dump([
      flow(6, "established", 1), // live
      flow(6, "established", 3599 - 5), // live: just inside 3600
      flow(6, "established", 3700), // idle past 3600
      flow(6, "new", 10), // transitory 30: live
      flow(6, "closing", 40), // transitory 30: gone
      flow(17, "new", 59 - 5), // other 60: live
      flow(17, "established", 120), // other: gone, whatever the state
      flow(1, "new", 61), // ICMP is "other": gone
    ]);
    expect(countLive("states", cfg, flows)).toBe(4);
  });

  it("follows the program's u64 arithmetic: a last_seen before boot wraps and is idle, one a moment ahead of now is live", () => {
    const flows = dump([flow(6, "established", 1e7), flow(6, "established", -0.5)]);
    expect(countLive("wrap", cfg, flows)).toBe(1);
  });

  it("counts every entry when the configuration cannot be read, and nothing in an empty table", () => {
    expect(countLive("nocfg", undefined, dump([flow(6, "established", 1e5), flow(17, "new", 1)]))).toBe(2);
    expect(countLive("empty", cfg, "[]")).toBe(0);
  });
});
