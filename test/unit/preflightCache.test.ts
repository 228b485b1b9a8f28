// sh/preflight.sh run for real under a stub PATH (a bpftool that counts its feature
// probes): the probe is kept in a root-only cache and not run again while the kernel
// and bpftool stay the same; another bpftool binary is probed again; a cache file
// that root alone did not write, or a directory others can write, is not trusted.
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { shellScriptCommand } from "../../provider/remote/shellScript";

const scratch = mkdtempSync(join(tmpdir(), "bpfleet-preflight-"));
const bin = join(scratch, "bin");
const probes = join(scratch, "probes");
const state = join(scratch, "state");
const cache = join(state, "probe");

// The shape of `bpftool -j feature probe kernel` (one line), cut short: every section, and
// helper lists for more program types than bpfleet loads.
const PROBE =
  '{"system_config":{"unprivileged_bpf_disabled":2,"bpf_jit_enable":1},"syscall_config":{"have_bpf_syscall":true},' +
  '"program_types":{"have_socket_filter_prog_type":true,"have_sched_cls_prog_type":true,"have_xdp_prog_type":true},' +
  '"map_types":{"have_hash_map_type":true,"have_lpm_trie_map_type":true},' +
  '"helpers":{"socket_filter_available_helpers":["bpf_map_lookup_elem","bpf_get_prandom_u32"],' +
  '"sched_cls_available_helpers":["bpf_map_lookup_elem","bpf_ktime_get_ns","bpf_skb_pull_data"],' +
  '"xdp_available_helpers":["bpf_map_lookup_elem","bpf_fib_lookup","bpf_redirect_map"],"lirc_mode2_available_helpers":[]},' +
  '"misc":{"have_large_insn_limit":true}}';

function stubBpftool(version: string, probe = '{"program_types":{"have_xdp_prog_type":true}}'): void {
  spawnSync("mkdir", ["-p", bin]);
  // The stub is the bpftool the script finds first; ip and tc need only exist.
  writeFileSync(join(bin, "bpftool"), `#!/bin/sh\ncase "$*" in\n  "-j feature probe kernel") echo probe >> ${probes}; echo '${probe}' ;;\n  version) echo "bpftool ${version}" ;;\nesac\n`);
  chmodSync(join(bin, "bpftool"), 0o755);
  for (const tool of ["ip", "tc"]) writeFileSync(join(bin, tool), "#!/bin/sh\n"), chmodSync(join(bin, tool), 0o755);
}

function preflight() {
  const r = spawnSync("sh", shellScriptCommand("preflight", { state, cache }).slice(1), { encoding: "utf8", env: { PATH: `${bin}:/usr/bin:/bin` } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const probeCount = () => (existsSync(probes) ? readFileSync(probes, "utf8").split("\n").filter(Boolean).length : 0);

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("sh/preflight.sh keeps the feature probe", () => {
  it("probes once, then answers from a root-only cache, the same text", () => {
    stubBpftool("v7.1.0");
    const first = preflight();
    expect(first.status).toBe(0);
    expect(first.stdout).toMatch(/^kernel=.*\nbpftool=bpftool v7\.1\.0\n@@features\n\{"program_types"/);
    expect(probeCount()).toBe(1);
    const second = preflight();
    expect(second).toEqual(first);
    expect(probeCount()).toBe(1);
    for (const d of [state, cache]) expect(statSync(d).mode & 0o777).toBe(0o700);
    const [file] = readdirSync(cache);
    expect(statSync(join(cache, file!)).mode & 0o777).toBe(0o600);
  });

  it("probes again for another bpftool binary", () => {
    stubBpftool("v7.5.0-longer");
    expect(preflight().stdout).toMatch(/bpftool=bpftool v7\.5\.0-longer/);
    expect(probeCount()).toBe(2);
    expect(readdirSync(cache)).toHaveLength(2);
  });

  it("does not trust a cache file another user owns, nor a directory others can write", () => {
    for (const file of readdirSync(cache)) {
      writeFileSync(join(cache, file), "kernel=planted\nbpftool=planted\n@@features\n{}\n");
      chownSync(join(cache, file), 65534, 65534);
    }
    expect(preflight().stdout).not.toMatch(/planted/);
    expect(probeCount()).toBe(3);
    chmodSync(cache, 0o777);
    expect(preflight().stdout).not.toMatch(/planted/);
    expect(probeCount()).toBe(4);
  });

  it("keeps and sends only what preflight reads: the program types and the xdp and sched_cls helpers", () => {
    stubBpftool("v7.6.0", PROBE);
    const out = preflight();
    expect(out.status).toBe(0);
    const features = JSON.parse(out.stdout.split("@@features\n")[1]!);
    expect(features).toEqual({
      program_types: { have_socket_filter_prog_type: true, have_sched_cls_prog_type: true, have_xdp_prog_type: true },
      helpers: {
        sched_cls_available_helpers: ["bpf_map_lookup_elem", "bpf_ktime_get_ns", "bpf_skb_pull_data"],
        xdp_available_helpers: ["bpf_map_lookup_elem", "bpf_fib_lookup", "bpf_redirect_map"],
      },
    });
    expect(preflight().stdout).toBe(out.stdout);
  });

  it("still says which tools are missing", () => {
    rmSync(join(bin, "tc"));
    expect(preflight()).toMatchObject({ status: 3, stderr: "missing: tc\n" });
  });
});
