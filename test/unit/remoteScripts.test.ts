// The shipped survey, preflight, upload, load, dump and removal scripts
// (provider/remote/sh), run for real by sh under a stub PATH: bpftool, ip, tc and
// ping are small scripts that print what the real tools print and log how they
// were called; every other command is the real one. Where a TypeScript function
// reads a script's output, it runs here through a session that executes the script
// locally, exactly as SshSession.runScript would on a host (`sh -c TEXT bpfleet ARGS`).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseSurvey } from "../../provider/healthGate/targetSurvey";
import { surveyRouting } from "../../provider/maglev/neighbours";
import { HostOutputError } from "../../provider/remote/hostJson";
import { dumpMaps } from "../../provider/remote/mapOperations";
import { uploadObject, type LocalObject } from "../../provider/remote/objectUpload";
import { pinLayout } from "../../provider/remote/pins";
import { HostPreconditionError, preflight } from "../../provider/remote/preflight";
import { programState, sections, surveyResource } from "../../provider/remote/resourceSurvey";
import { shellQuote } from "../../provider/remote/quote";
import { shellScript, shellScriptCommand } from "../../provider/remote/shellScript";
import { RemoteCommandError, type ExecOptions, type ExecResult, type SshSession } from "../../provider/remote/ssh";
import { surveyPolicy } from "../../provider/tcPolicy/hostState";
import { ensureTunnel } from "../../provider/trafficMirror/tunnel";

const scratch = mkdtempSync(join(tmpdir(), "bpfleet-scripts-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let cases = 0;
/** A fresh directory with bin/ (stubs first on PATH) and a log of every stub call. */
function stubHost(stubs: Record<string, string>, options: { onlyStubs?: boolean } = {}) {
  const dir = join(scratch, `case${++cases}`);
  const bin = join(dir, "bin");
  mkdirSync(bin, { recursive: true });
  const log = join(dir, "calls.log");
  writeFileSync(log, "");
  for (const [name, body] of Object.entries(stubs)) {
    writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> ${shellQuote([log])}\n${body}\n`, { mode: 0o755 });
  }
  const path = options.onlyStubs ? bin : `${bin}:/usr/bin:/bin`;
  const calls = () => readFileSync(log, "utf8").split("\n").filter(Boolean);
  return { dir, bin, path, calls };
}

/** Runs a shipped script as `sh -c TEXT bpfleet ARGS` under `path`. */
function runScript(name: string, args: readonly string[], path: string, stdin?: string | Buffer) {
  const [, ...rest] = shellScriptCommand(name, args);
  const r = spawnSync("/bin/sh", rest, { env: { PATH: path }, input: stdin });
  return { code: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** A session whose commands run here, under `path`, as SshSession's would on a host. */
function localSession(path: string, peer?: string): SshSession {
  const exec = (argv: readonly string[], options: ExecOptions): ExecResult => {
    // sh itself is found where a host's login shell finds it, whatever the stub PATH holds.
    const r = spawnSync(argv[0] === "sh" ? "/bin/sh" : argv[0]!, argv.slice(1), { env: { PATH: path }, input: options.stdin });
    const result = { code: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
    if (result.code !== 0 && !options.allowFailure) throw new RemoteCommandError("stub-host", shellQuote(argv), result, `exited with status ${result.code}`);
    return result;
  };
  const session = {
    label: "stub-host",
    run: async (argv: readonly string[], options: ExecOptions = {}) => exec(argv, options),
    runScript: async (script: string, args: readonly string[], options: ExecOptions = {}) => exec(["sh", "-c", script, "bpfleet", ...args], options),
    managementPeer: async () => peer,
  };
  return session as unknown as SshSession;
}

const FEATURES = JSON.stringify({
  syscall_config: { have_bpf_syscall: true },
  program_types: { have_xdp_prog_type: true, have_sched_cls_prog_type: true, have_lirc_mode2_prog_type: false },
  helpers: { xdp_available_helpers: ["bpf_map_lookup_elem", "bpf_redirect_map"], sched_cls_available_helpers: ["bpf_clone_redirect"] },
});

describe("preflight.sh", () => {
  const stat = 'if [ "$1" = -f ]; then echo "${STAT_FS:-bpf_fs}"; else exec /usr/bin/stat "$@"; fi';

  it("names every missing tool, and what to install", async () => {
    const host = stubHost({ ip: "exit 0" }, { onlyStubs: true });
    await expect(preflight(localSession(host.path))).rejects.toThrow(new HostPreconditionError("stub-host: required tools are missing on the host: bpftool tc. Install bpftool and iproute2 (Debian/Ubuntu: apt-get install bpftool iproute2)."));
  });

  it("reads the kernel, bpftool's version and the probed program types and helpers", async () => {
    const host = stubHost({ stat, tc: "exit 0", ip: "exit 0", bpftool: `case "$*" in version) echo "bpftool v7.1.0"; echo "using libbpf v1.1";; "-j feature probe kernel") echo '${FEATURES}';; esac` });
    const facts = await preflight(localSession(host.path));
    expect(facts).toEqual({
      kernel: spawnSync("uname", ["-r"]).stdout.toString().trim(),
      bpftool: "bpftool v7.1.0",
      programTypes: { xdp: true, sched_cls: true, lirc_mode2: false },
      helpers: { xdp: ["bpf_map_lookup_elem", "bpf_redirect_map"], sched_cls: ["bpf_clone_redirect"] },
    });
  });

  it("says bpffs is missing when mounting it fails (exit 4)", async () => {
    const host = stubHost({ stat: `STAT_FS=tmpfs; ${stat}`, tc: "exit 0", ip: "exit 0", bpftool: "exit 0", mount: "echo 'mount: permission denied' >&2; exit 32" });
    const err = await preflight(localSession(host.path)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteCommandError);
    // mount's own message goes to stdout (2>&1 >&2), so stderr holds only the script's.
    expect((err as Error).message).toMatch(/^stub-host: preflight: preflight failed: bpffs is not mounted at \/sys\/fs\/bpf and mounting it failed\n[^]*stderr: bpffs is not mounted at \/sys\/fs\/bpf and mounting it failed$/);
    expect(host.calls()).toContain("mount -t bpf bpf /sys/fs/bpf");
  });

  it("fails naming the command when the feature probe prints no JSON", async () => {
    const host = stubHost({ stat, tc: "exit 0", ip: "exit 0", bpftool: 'case "$*" in version) echo "bpftool v5.10.0";; *) echo "Error: unrecognized option -j";; esac' });
    await expect(preflight(localSession(host.path))).rejects.toThrow(HostOutputError);
    await expect(preflight(localSession(host.path))).rejects.toThrow(/^stub-host: `bpftool -j feature probe kernel` printed something other than JSON \(it began: "Error: unrecognized option -j"\)/);
  });
});

// A pin root with two bpfleet programs, for the XDP chain's owner lookup.
function pinRoot(dir: string): string {
  const root = join(dir, "pins");
  for (const owner of ["xdp-firewall/edge", "maglev-service/web"]) {
    mkdirSync(join(root, owner), { recursive: true });
    writeFileSync(join(root, owner, "prog"), "");
  }
  return root;
}

// bpftool's answers by argument list; anything else fails as a missing pin does (JSON error on stdout).
const BPFTOOL = (root: string) => `case "$*" in
  "-j net show dev eth0") echo '[{"xdp":[{"devname":"eth0","ifindex":2,"mode":"driver","id":42}],"tc":[],"flow_dissector":[]}]';;
  "-j prog show pinned /pins/fw/prog") echo '{"id":42,"type":"xdp","name":"xdp_firewall","tag":"0123456789abcdef","gpl_compatible":true}';;
  "-j prog show pinned /run/disp/prog") echo '{"id":7,"type":"xdp","name":"xdp_dispatcher","tag":"fedcba9876543210"}';;
  "-j map dump pinned /run/disp/maps/xdp_chain") echo '[{"key":["0x00","0x00","0x00","0x00"],"value":["0x2a","0x00","0x00","0x00"],"formatted":{"key":0,"value":42}}]';;
  "-j map dump pinned /pins/fw/maps/stats") echo '[{"key":["0x00","0x00","0x00","0x00"],"values":[{"cpu":0,"value":["0x05","0x00"]},{"cpu":1,"value":["0x01","0x00"]}]}]';;
  "-j prog show pinned ${root}/xdp-firewall/edge/prog") echo '{"id":42,"name":"xdp_firewall"}';;
  "-j prog show pinned ${root}/maglev-service/web/prog") echo '{"id":43,"name":"xdp_maglev"}';;
  *) echo '{"error":"No such file or directory"}'; exit 255;;
esac`;
const IP = `case "$*" in
  "-j link show") echo '[{"ifindex":1,"ifname":"lo","link_type":"loopback"},{"ifindex":2,"ifname":"eth0","link_type":"ether"}]';;
  "-j route get 192.0.2.1") echo '[{"dst":"192.0.2.1","dev":"eth0","prefsrc":"192.0.2.10","flags":[],"uid":0,"cache":[]}]';;
  *) echo "Error: unexpected $*" >&2; exit 2;;
esac`;

describe("resource-survey.sh and program-state.sh", () => {
  it("frame each fact, with the XDP chain and its owners when a dispatcher is named", () => {
    const host = stubHost({});
    const root = pinRoot(host.dir);
    writeFileSync(join(host.bin, "bpftool"), `#!/bin/sh\n${BPFTOOL(root)}\n`, { mode: 0o755 });
    writeFileSync(join(host.bin, "ip"), `#!/bin/sh\n${IP}\n`, { mode: 0o755 });
    const object = join(host.dir, "object.bpf.o");
    writeFileSync(object, "");
    const survey = runScript("resource-survey", ["eth0", "/pins/fw/prog", object, "192.0.2.1", "/run/disp", root], host.path);
    expect(survey.code).toBe(0);
    const parts = sections(survey.stdout);
    expect([...parts.keys()]).toEqual(["links", "net", "prog", "object", "route", "dispatcher", "chain", "owners"]);
    expect(parts.get("object")).toBe("true");
    expect(JSON.parse(parts.get("dispatcher")!)).toMatchObject({ id: 7 });
    expect(parts.get("owners")!.split("\n").sort()).toEqual([`42 ${root}/xdp-firewall/edge/prog`, `43 ${root}/maglev-service/web/prog`]);

    const state = runScript("program-state", ["eth0", "/pins/gone/prog", "/pins/gone/maps/stats", "", root], host.path);
    expect(state.code).toBe(0);
    // A missing program prints null, a missing map [], and no dispatcher means no chain sections.
    expect(Object.fromEntries(sections(state.stdout))).toEqual({ prog: "null", net: expect.stringContaining('"id":42'), stats: "[]" });
  });

  it("surveyResource and programState read them", async () => {
    const host = stubHost({});
    writeFileSync(join(host.bin, "bpftool"), `#!/bin/sh\n${BPFTOOL(pinRoot(host.dir))}\n`, { mode: 0o755 });
    writeFileSync(join(host.bin, "ip"), `#!/bin/sh\n${IP}\n`, { mode: 0o755 });
    const session = localSession(host.path, "192.0.2.1");
    const layout = { dir: "/pins/fw", program: "/pins/fw/prog", maps: "/pins/fw/maps" };
    const object: LocalObject = { path: "x", bytes: Buffer.alloc(0), sha256: "00".repeat(32) };
    expect(await surveyResource(session, "eth0", layout, object)).toEqual({
      interfaces: ["lo", "eth0"],
      xdp: { mode: "driver", programId: 42 },
      program: { id: 42, tag: "0123456789abcdef", name: "xdp_firewall" },
      objectPresent: false,
      managementInterface: "eth0",
      chain: { dispatcherId: undefined, slots: new Map(), owners: new Map() },
    });
    const state = await programState(session, "eth0", layout, "stats");
    expect(state.program?.id).toBe(42);
    expect(state.stats.map((e) => e.values.map((v) => [...v]))).toEqual([[[5, 0], [1, 0]]]);
  });

  it("surveyResource names the host and command when bpftool prints another shape", async () => {
    const host = stubHost({ bpftool: `case "$*" in "-j net show dev eth0") echo '[{"xdp":[{"mode":"driver","id":"42"}]}]';; *) echo null; exit 255;; esac` });
    writeFileSync(join(host.bin, "ip"), `#!/bin/sh\n${IP}\n`, { mode: 0o755 });
    const object: LocalObject = { path: "x", bytes: Buffer.alloc(0), sha256: "00".repeat(32) };
    await expect(surveyResource(localSession(host.path), "eth0", pinLayout("xdp-firewall", "edge"), object)).rejects.toThrow(
      /^stub-host: `bpftool -j net show dev eth0` printed JSON of another shape, at \[0\]\.xdp\[0\]\.id: Invalid input: expected number, received string/,
    );
  });
});

describe("object-upload.sh", () => {
  const bytes = Buffer.from("an object\n");
  const sha256 = "4f0c1a0ad1e3bd0c6eb20b3bb3b1da06cd0b6e08ed33de24c8e3b7fa6bfe1da7";

  it("puts the object at its path when the digest matches, making the cache 0700", () => {
    const host = stubHost({});
    const cache = join(host.dir, "state", "objects");
    const computed = spawnSync("sha256sum", { input: bytes }).stdout.toString().split(" ")[0]!;
    const result = runScript("object-upload", [cache, join(cache, `${computed}.bpf.o`), computed], host.path, bytes);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(readFileSync(join(cache, `${computed}.bpf.o`))).toEqual(bytes);
    expect(statSync(cache).mode & 0o777).toBe(0o700);
    expect(statSync(join(host.dir, "state")).mode & 0o777).toBe(0o700);
  });

  it("refuses a corrupted upload and leaves nothing behind", () => {
    const host = stubHost({});
    const cache = join(host.dir, "state", "objects");
    const result = runScript("object-upload", [cache, join(cache, `${sha256}.bpf.o`), sha256], host.path, Buffer.from("something else"));
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("checksum mismatch after upload");
    expect(readdirSync(cache)).toEqual([]);
  });

  it("uploadObject skips an object already there", async () => {
    const host = stubHost({});
    const session = localSession(host.path);
    const object: LocalObject = { path: "x", bytes, sha256 };
    // The cache is /var/lib/bpfleet/objects, so only the skip is tried here.
    expect(await uploadObject(session, object, true)).toBe(`/var/lib/bpfleet/objects/${sha256}.bpf.o`);
    expect(host.calls()).toEqual([]);
  });
});

describe("program-load.sh", () => {
  // bpftool prog load|loadall OBJ PIN type T [map name N pinned P]... pinmaps DIR: pins the maps the object has.
  const bpftool = 'eval "staged=\\${$#}"; mkdir -p "$staged"; for m in deny_v4 stats xdp_chain; do : > "$staged/$m"; done; [ -z "$FAIL" ] || exit 255';

  it("reuses the pinned maps, pins new ones beside them, and never pins a shared chain", () => {
    const host = stubHost({ bpftool });
    const dir = join(host.dir, "pins", "xdp-firewall", "edge");
    mkdirSync(join(dir, "maps"), { recursive: true });
    writeFileSync(join(dir, "maps", "deny_v4"), "old");
    writeFileSync(join(dir, "maps", "xdp_chain"), "private");
    const result = runScript("program-load", ["/var/tmp/o.bpf.o", dir, "xdp", "load", "/run/disp/maps/xdp_chain", join(host.dir, "state"), join(host.dir, "state", "objects")], host.path);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(host.calls()).toEqual([
      `bpftool prog load /var/tmp/o.bpf.o ${dir}/prog_new type xdp map name deny_v4 pinned ${dir}/maps/deny_v4 map name xdp_chain pinned /run/disp/maps/xdp_chain pinmaps ${dir}/maps_staged`,
    ]);
    expect(readdirSync(join(dir, "maps")).sort()).toEqual(["deny_v4", "stats", "xdp_chain"]);
    expect(readFileSync(join(dir, "maps", "deny_v4"), "utf8")).toBe("old");
    expect(existsSync(join(dir, "maps_staged"))).toBe(false);
    // Objects outside the cache do not make the state dirs.
    expect(existsSync(join(host.dir, "state"))).toBe(false);
  });

  it("does not offer retired maps (XdpFirewall's fw_v4_slots, fw_v6_slots) to the load, and unpins them once it loaded", () => {
    const host = stubHost({ bpftool });
    const dir = join(host.dir, "pins", "xdp-firewall", "edge");
    mkdirSync(join(dir, "maps"), { recursive: true });
    for (const m of ["deny_v4", "fw_v4_slots", "fw_v6_slots"]) writeFileSync(join(dir, "maps", m), "old");
    const result = runScript("program-load", ["/var/tmp/o.bpf.o", dir, "xdp", "load", "", join(host.dir, "state"), join(host.dir, "state", "objects")], host.path);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(host.calls()).toEqual([`bpftool prog load /var/tmp/o.bpf.o ${dir}/prog_new type xdp map name deny_v4 pinned ${dir}/maps/deny_v4 pinmaps ${dir}/maps_staged`]);
    expect(readdirSync(join(dir, "maps")).sort()).toEqual(["deny_v4", "stats", "xdp_chain"]);
    // A failed load leaves them pinned: the program still attached is the one that reads them.
    const failing = stubHost({ bpftool: `FAIL=1; ${bpftool}` });
    const dir2 = join(failing.dir, "pins", "xdp-firewall", "edge");
    mkdirSync(join(dir2, "maps"), { recursive: true });
    for (const m of ["deny_v4", "fw_v4_slots"]) writeFileSync(join(dir2, "maps", m), "old");
    expect(runScript("program-load", ["/o.bpf.o", dir2, "xdp", "load", "", "/nonexistent", "/nonexistent/objects"], failing.path).code).toBe(1);
    expect(readdirSync(join(dir2, "maps")).sort()).toEqual(["deny_v4", "fw_v4_slots"]);
  });

  it("loads every program for loadall, checking the cache dirs of a cached object", () => {
    const host = stubHost({ bpftool });
    const dir = join(host.dir, "pins", "tc-policy", "p");
    const cache = join(host.dir, "state", "objects");
    const result = runScript("program-load", [`${cache}/ab.bpf.o`, dir, "classifier", "loadall", "", join(host.dir, "state"), cache], host.path);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(host.calls()).toEqual([`bpftool prog loadall ${cache}/ab.bpf.o ${dir}/progs_new type classifier pinmaps ${dir}/maps_staged`]);
    expect(statSync(cache).mode & 0o777).toBe(0o700);
  });

  it("names the failing command line, and refuses an unknown verb", () => {
    const host = stubHost({ bpftool: `FAIL=1; ${bpftool}` });
    const dir = join(host.dir, "pins", "k", "n");
    const failed = runScript("program-load", ["/o.bpf.o", dir, "xdp", "load", "", "/nonexistent", "/nonexistent/objects"], host.path);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toBe(`failed: bpftool prog load /o.bpf.o ${dir}/prog_new type xdp\n`);
    expect(runScript("program-load", ["/o.bpf.o", dir, "xdp", "reload", "", "/s", "/s/objects"], host.path)).toMatchObject({ code: 2, stderr: "bad load verb reload\n" });
  });
});

describe("dump-maps.sh", () => {
  it("dumps every map in one run; a missing map reads as undefined", async () => {
    const host = stubHost({
      bpftool: `case "$5" in /pins/a) echo '[{"key":["0x01"],"value":["0x02","0x03"]}]';; *) echo '{"error":"bpf obj get (/pins): No such file or directory"}'; exit 255;; esac`,
    });
    const dumps = await dumpMaps(localSession(host.path), ["/pins/a", "/pins/b"]);
    expect([...dumps.keys()]).toEqual(["/pins/a", "/pins/b"]);
    expect(dumps.get("/pins/a")!.map((e) => [[...e.key], e.values.map((v) => [...v])])).toEqual([[[1], [[2, 3]]]]);
    expect(dumps.get("/pins/b")).toBeUndefined();
    expect(host.calls()).toHaveLength(2);
  });
});

describe("remove-pins.sh", () => {
  function tree(dir: string, boot: boolean) {
    const root = join(dir, "pins");
    for (const p of ["xdp-firewall/a/maps", "xdp-firewall/b/maps"]) mkdirSync(join(root, p), { recursive: true });
    mkdirSync(join(dir, "state", "objects"), { recursive: true });
    if (boot) {
      mkdirSync(join(dir, "state", "boot", "xdp-firewall", "a"), { recursive: true });
    }
    return root;
  }
  const remove = (dir: string, root: string, name: string, path: string) => runScript("remove-pins", [join(root, "xdp-firewall", name), join(root, "xdp-firewall"), root, join(dir, "state")], path);

  it("removes the pin dir, and the pin root and object cache with the last resource", () => {
    const host = stubHost({});
    const root = tree(host.dir, false);
    expect(remove(host.dir, root, "a", host.path).code).toBe(0);
    expect(readdirSync(join(root, "xdp-firewall"))).toEqual(["b"]);
    expect(existsSync(join(host.dir, "state"))).toBe(true);
    expect(remove(host.dir, root, "b", host.path).code).toBe(0);
    expect(existsSync(root)).toBe(false);
    expect(existsSync(join(host.dir, "state"))).toBe(false);
    // Absent is fine.
    expect(remove(host.dir, root, "b", host.path).code).toBe(0);
  });

  it("keeps the object cache while boot-restore files name it", () => {
    const host = stubHost({});
    const root = tree(host.dir, true);
    remove(host.dir, root, "a", host.path);
    remove(host.dir, root, "b", host.path);
    expect(existsSync(root)).toBe(false);
    expect(existsSync(join(host.dir, "state", "objects"))).toBe(true);
  });
});

describe("policy-survey.sh", () => {
  it("reads links, the hook qdisc, both hooks' filters, the programs, route and maps; a missing map reads as undefined", async () => {
    const host = stubHost({
      tc: `case "$*" in
        "-j qdisc show dev eth0") echo '[{"kind":"noqueue","handle":"0:","root":true},{"kind":"clsact","handle":"ffff:","parent":"ffff:fff1"}]';;
        "-j filter show dev eth0 ingress") echo '[{"protocol":"all","pref":49152,"kind":"bpf","chain":0},{"protocol":"all","pref":49152,"kind":"bpf","chain":0,"options":{"handle":"0x1","bpf_name":"tc_policy_ingress","direct-action":true,"prog":{"id":51,"name":"tc_policy_ingr","tag":"aa"}}}]';;
        *) echo '[]';;
      esac`,
      bpftool: `case "$*" in
        *"/progs/tc_policy_ingress") echo '{"id":51,"name":"tc_policy_ingr","tag":"aa"}';;
        *"/maps/tcpol_rules") echo '[{"key":["0x01"],"value":["0x02"]}]';;
        *) echo '{"error":"No such file or directory"}'; exit 255;;
      esac`,
    });
    writeFileSync(join(host.bin, "ip"), `#!/bin/sh\n${IP}\n`, { mode: 0o755 });
    const state = await surveyPolicy(localSession(host.path), "eth0", pinLayout("tc-policy", "p"), { peer: "192.0.2.1", countFlows: true, maps: ["tcpol_rules", "tcpol_gone"] });
    expect(state.links).toEqual([{ ifname: "lo", ifindex: 1, linkType: "loopback" }, { ifname: "eth0", ifindex: 2, linkType: "ether" }]);
    expect(state.hookQdisc).toBe("clsact");
    expect(state.filters).toEqual([{ direction: "ingress", priority: 49152, protocol: "all", kind: "bpf", handle: 1, directAction: true, programId: 51, programName: "tc_policy_ingr", programTag: "aa" }]);
    expect(state.programs).toEqual({ ingress: { id: 51, name: "tc_policy_ingr", tag: "aa" } });
    expect(state.objectPresent).toBe(false);
    expect(state.managementRoute).toEqual({ dev: "eth0", prefsrc: "192.0.2.10" });
    expect(state.maps.get("tcpol_rules")!.length).toBe(1);
    expect(state.maps.has("tcpol_gone") && state.maps.get("tcpol_gone")).toBeUndefined();
    // No pinned flow table (the pins do not exist here): nothing counted.
    expect(state.liveFlows).toBeUndefined();
    expect(host.calls()).toContain("bpftool -j prog show pinned /sys/fs/bpf/bpfleet/tc-policy/p/progs/tc_policy_egress");
  });
});

describe("routing-survey.sh", () => {
  it("pings only next hops without a usable MAC, then reads the neighbours again", async () => {
    const host = stubHost({
      ip: `case "$*" in
        "route get 192.0.2.21") echo "192.0.2.21 dev eth0 src 192.0.2.10 uid 0";;
        "route get 198.51.100.7") echo "198.51.100.7 via 192.0.2.1 dev eth0 src 192.0.2.10 uid 0";;
        "route get 192.0.2.10") echo "local 192.0.2.10 dev lo src 192.0.2.10 uid 0";;
        "neigh show to 192.0.2.21 dev eth0") echo "192.0.2.21 lladdr 02:00:00:00:00:21 REACHABLE";;
        "neigh show to 192.0.2.1 dev eth0") if [ -e "$(dirname "$0")/../pinged" ]; then echo "192.0.2.1 lladdr 02:00:00:00:00:01 REACHABLE"; else echo "192.0.2.1 lladdr 02:00:00:00:00:01 STALE"; fi;;
      esac`,
      ping: ': > "$(dirname "$0")/../pinged"',
    });
    const survey = await surveyRouting(localSession(host.path), "eth0", ["192.0.2.21", "198.51.100.7", "192.0.2.10"]);
    expect(host.calls().filter((c) => c.startsWith("ping"))).toEqual(["ping -n -c 1 -W 1 -I eth0 192.0.2.1"]);
    expect(survey.ping).toBe(true);
    expect(survey.hops.get("192.0.2.21")).toMatchObject({ dev: "eth0", mac: "02:00:00:00:00:21", state: "REACHABLE", local: false });
    expect(survey.hops.get("198.51.100.7")).toMatchObject({ dev: "eth0", via: "192.0.2.1", mac: "02:00:00:00:00:01", state: "REACHABLE" });
    expect(survey.hops.get("192.0.2.10")).toMatchObject({ dev: "lo", local: true });
    expect(survey.hops.get("192.0.2.10")!.mac).toBeUndefined();
  });
});

describe("target-survey.sh", () => {
  it("frames what a health gate reads, null for what is missing", () => {
    const host = stubHost({});
    writeFileSync(join(host.bin, "bpftool"), `#!/bin/sh\n${BPFTOOL(pinRoot(host.dir))}\n`, { mode: 0o755 });
    const out = runScript("target-survey", [host.dir, "/pins/fw/prog", "eth0", "/pins/fw/maps/stats", "/run/disp"], host.path);
    expect(out.code).toBe(0);
    expect(parseSurvey(out.stdout)).toMatchObject({ pinDirExists: true, programId: 42, hooks: { xdp: [42], "tc-ingress": [], "tc-egress": [] } });
    const bare = runScript("target-survey", [join(host.dir, "gone"), "/pins/gone/prog", "", "", ""], host.path);
    expect(bare.stdout).toBe("@@dir\nfalse\n@@prog\nnull\n@@net\nnull\n@@stats\nnull\n");
    expect(parseSurvey(bare.stdout)).toEqual({ pinDirExists: false, programId: undefined, hooks: undefined, stats: undefined });
  });
});

describe("tunnel-add.sh", () => {
  const spec = { type: "vxlan" as const, remote: "192.0.2.50", vni: 42, port: 4789 };

  it("adds the device, marks it as ours and brings it up, in one script", async () => {
    const host = stubHost({
      ip: `case "$*" in "-d -j link show dev "*)
        echo '[{"ifindex":9,"ifname":"'"$6"'","flags":["UP"],"ifalias":"bpfleet traffic-mirror web","linkinfo":{"info_kind":"vxlan","info_data":{"id":42,"remote":"192.0.2.50","port":4789}}}]';;
      esac`,
    });
    const result = await ensureTunnel(localSession(host.path), "web", spec, []);
    expect(result).toMatchObject({ created: true, link: { ifindex: 9, up: true, alias: "bpfleet traffic-mirror web", kind: "vxlan" } });
    const device = result.link.ifname;
    expect(device).toMatch(/^bfm[0-9a-f]{12}$/);
    expect(host.calls()).toEqual([
      `ip link add ${device} type vxlan id 42 remote 192.0.2.50 dstport 4789 nolearning`,
      `ip link set dev ${device} addrgenmode none`,
      `ip link set dev ${device} alias bpfleet traffic-mirror web up`,
      `ip -d -j link show dev ${device}`,
    ]);
  });

  it("removes a device it could not mark, and says when the kernel lacks the tunnel type", async () => {
    const host = stubHost({ ip: 'case "$*" in "link set dev t0 alias"*) exit 2;; esac' });
    expect(runScript("tunnel-add", ["t0", "bpfleet traffic-mirror web", "type", "vxlan"], host.path).code).toBe(1);
    expect(host.calls().at(-1)).toBe("ip link del t0");
    const noKernel = stubHost({ ip: 'case "$*" in "link add"*) echo "Error: Unknown device type." >&2; exit 2;; esac' });
    expect(runScript("tunnel-add", ["t0", "a", "type", "vxlan"], noKernel.path)).toMatchObject({ code: 3, stderr: "Error: Unknown device type.\n" });
    expect(noKernel.calls()).toEqual(["ip link add t0 type vxlan"]);
    await expect(ensureTunnel(localSession(noKernel.path), "web", spec, [])).rejects.toThrow(
      /^stub-host: could not create the vxlan tunnel bfm[0-9a-f]{12} to 192\.0\.2\.50: Error: Unknown device type\.\. The host's kernel has no vxlan support \(CONFIG_VXLAN\); use the other tunnel type\.$/,
    );
  });
});

it("every script above is shipped and loads with the prelude functions it calls", () => {
  for (const name of ["preflight", "resource-survey", "program-state", "object-upload", "program-load", "dump-maps", "remove-pins", "policy-survey", "routing-survey", "target-survey", "tunnel-add"]) {
    expect(spawnSync("sh", ["-n", "-c", shellScript(name)]).status, name).toBe(0);
  }
  expect(shellScript("resource-survey")).toMatch(/^json_or\(\) \{[^]*\nxdp_chain_sections\(\) \{/);
  expect(shellScript("policy-survey")).toMatch(/^json_or\(\) \{[^]*\ncount_live_flows\(\) \{/);
});

describe("the TC hook's scripts", () => {
  // A tc that keeps the interface's qdisc and filters as files in $STATE, so a
  // script's effects can be read back; `qdisc add` fails when a clsact is there,
  // as the kernel's does ("Exclusivity flag on, cannot modify").
  const tcStub = (state: string) => `
S=${shellQuote([state])}
case "$1 $2" in
  "qdisc add") [ -e "$S/late-clsact" ] && : > "$S/clsact"; [ -e "$S/clsact" ] && { echo "Error: Exclusivity flag on, cannot modify." >&2; exit 2; }; : > "$S/clsact";;
  "qdisc show") [ -e "$S/clsact" ] && echo "qdisc clsact ffff: parent ffff:fff1"; true;;
  "qdisc del") rm -f "$S/clsact";;
  "filter show") cat "$S/filters-$5" 2>/dev/null; true;;
  "-j filter") echo "[\\"$6 filters\\"]";;
esac`;

  function tcHost(setup: { clsact?: boolean; lateClsact?: boolean; filters?: string } = {}) {
    const state = join(scratch, `tc${++cases}`);
    mkdirSync(state, { recursive: true, mode: 0o700 });
    if (setup.clsact) writeFileSync(join(state, "clsact"), "");
    if (setup.lateClsact) writeFileSync(join(state, "late-clsact"), "");
    if (setup.filters) writeFileSync(join(state, "filters-egress"), setup.filters);
    const host = stubHost({ tc: tcStub(state) });
    const run = (name: string, args: readonly string[]) => runScript(name, args, host.path);
    return { state, marker: join(state, "run", "clsact-eth0"), run, clsact: () => existsSync(join(state, "clsact")) };
  }

  it("tc-add-clsact.sh adds the qdisc and its marker; a clsact another bpfleet resource added a moment earlier is no failure", () => {
    const fresh = tcHost();
    expect(fresh.run("tc-add-clsact", ["eth0", fresh.marker]).code).toBe(0);
    expect(fresh.clsact() && existsSync(fresh.marker)).toBe(true);
    expect((statSync(join(fresh.state, "run")).mode & 0o777).toString(8)).toBe("700");

    const raced = tcHost({ lateClsact: true });
    const r = raced.run("tc-add-clsact", ["eth0", raced.marker]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(existsSync(raced.marker)).toBe(true); // the last bpfleet resource to leave removes it
  });

  it("tc-add-clsact.sh fails with tc's own error, and drops its marker, when the add fails and no clsact is there", () => {
    const host = tcHost();
    const broken = stubHost({ tc: 'case "$1 $2" in "qdisc add") echo "Error: Specified qdisc kind is unknown." >&2; exit 2;; esac; true' });
    const r = runScript("tc-add-clsact", ["eth0", host.marker], broken.path);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Specified qdisc kind is unknown");
    expect(existsSync(host.marker)).toBe(false);
  });

  it("tc-remove-clsact-if-empty.sh removes only an empty clsact bpfleet added", () => {
    const absent = tcHost();
    expect(absent.run("tc-remove-clsact-if-empty", ["eth0", absent.marker, "no"]).stdout.trim()).toBe("absent");
    const foreign = tcHost({ clsact: true });
    expect(foreign.run("tc-remove-clsact-if-empty", ["eth0", foreign.marker, "no"]).stdout.trim()).toBe("foreign");
    expect(foreign.clsact()).toBe(true);
    const busy = tcHost({ clsact: true, filters: "filter protocol all pref 1 bpf chain 0 handle 0x1 other[7]" });
    expect(busy.run("tc-remove-clsact-if-empty", ["eth0", busy.marker, "yes"]).stdout.trim()).toBe("busy");
    expect(busy.clsact()).toBe(true);
    const ours = tcHost({ clsact: true });
    mkdirSync(join(ours.state, "run"), { mode: 0o700 });
    writeFileSync(ours.marker, "");
    expect(ours.run("tc-remove-clsact-if-empty", ["eth0", ours.marker, "no"]).stdout.trim()).toBe("removed");
    expect([ours.clsact(), existsSync(ours.marker)]).toEqual([false, false]);
  });

  it("tc-show-filters.sh frames both hooks for tcFilters", () => {
    const host = tcHost();
    expect(host.run("tc-show-filters", ["eth0"]).stdout).toBe('@@ingress\n["ingress filters"]\n\n@@egress\n["egress filters"]\n');
  });

  it("tc-show-filters.sh lists nothing for an interface that is gone, and fails on any other failure (a delete must not read it as no filters)", () => {
    const failing = 'case "$1 $2" in "-j filter") echo "Cannot find device \\"$5\\"" >&2; exit 1;; esac; true';
    const gone = stubHost({ tc: failing, ip: 'echo "Device \\"$4\\" does not exist." >&2; exit 1' });
    expect(runScript("tc-show-filters", ["eth0"], gone.path)).toMatchObject({ code: 0, stdout: "@@absent\n" });
    const present = stubHost({ tc: failing, ip: "exit 0" });
    const r = runScript("tc-show-filters", ["eth0"], present.path);
    expect([r.code, r.stdout]).toEqual([1, ""]);
    expect(r.stderr).toContain("Cannot find device");
    // The egress listing failing after the ingress one worked fails too.
    const egress = stubHost({ tc: 'case "$6" in egress) exit 1;; esac; echo "[]"', ip: "exit 0" });
    expect(runScript("tc-show-filters", ["eth0"], egress.path).code).not.toBe(0);
  });

  it("tc-policy-swap-programs.sh makes the new programs current and keeps the previous ones for the revert", () => {
    const dir = join(scratch, `swap${++cases}`);
    for (const [sub, file] of [["progs", "old"], ["progs_new", "new"], ["progs_old", "older"]] as const) {
      mkdirSync(join(dir, sub), { recursive: true });
      writeFileSync(join(dir, sub, file), "");
    }
    expect(runScript("tc-policy-swap-programs", [dir], "/usr/bin:/bin").code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(["progs", "progs_old"]);
    expect([readdirSync(join(dir, "progs")), readdirSync(join(dir, "progs_old"))]).toEqual([["new"], ["old"]]);
  });

  it("mirror-routes.sh frames the two routes, null for no address or no route", () => {
    const host = stubHost({ ip: '[ "$4" = 192.0.2.1 ] && { echo \'[{"dev":"eth0"}]\'; exit 0; }; exit 2' });
    expect(runScript("mirror-routes", ["192.0.2.1", ""], host.path).stdout).toBe('@@management\n[{"dev":"eth0"}]\n@@underlay\nnull\n');
    expect(runScript("mirror-routes", ["", "198.51.100.9"], host.path).stdout).toBe("@@management\nnull\n@@underlay\nnull\n");
  });
});
