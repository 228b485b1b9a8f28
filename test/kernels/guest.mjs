// Runs inside a matrix guest (test/kernels/boot.sh), with the machine's node: for
// each bpftool (the machine's and each Debian suite's), loads every object in
// bpf/obj the way the provider does (`bpftool prog loadall OBJ DIR type T`) and runs
// one packet through each program (BPF_PROG_TEST_RUN via `bpftool prog run`).
// Writes one JSON document to argv[3].
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

const [objDir, bpftoolList, outFile] = process.argv.slice(2);
const bpftools = JSON.parse(bpftoolList); // [{ name, path }]

function run(argv) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8", timeout: 600_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: (r.stderr ?? "") + (r.error ? String(r.error) : "") };
}

// Why a command failed, in one line: the verifier's last word when it refused the
// program, else libbpf's complaint, else the last line; without libbpf's list of
// every section name it knows or bpftool's strict-mode advice.
function reason(r) {
  const lines = (r.stderr + r.stdout).split("\n").map((l) => l.trim()).filter((l) => l &&
    !/supported section\(type\) names|libbpf strict mode|--legacy option|^Error: failed to (open|load) object file/.test(l));
  const end = lines.findIndex((l) => /-- END PROG LOAD LOG --/.test(l));
  // The verifier ends its log with statistics; its verdict is the line before them.
  const verdict = lines.slice(0, Math.max(end, 0)).filter((l) => !/^(processed \d+ insns|verification time|stack depth)/.test(l)).at(-1);
  if (end > 0 && verdict) return verdict.slice(0, 300);
  const libbpf = lines.find((l) => /^libbpf: /.test(l) && !/failed to load object/.test(l));
  return (libbpf ?? lines.at(-1) ?? `exit code ${r.code}`).slice(0, 300);
}

// Ethernet / IPv4 / UDP 10.0.0.1:1234 -> 10.0.0.2:80, 64 bytes.
function packet() {
  const b = Buffer.alloc(64);
  Buffer.from("020000000002020000000001", "hex").copy(b, 0);
  b.writeUInt16BE(0x0800, 12);
  const ip = 14;
  b[ip] = 0x45; b.writeUInt16BE(64 - 14, ip + 2); b[ip + 8] = 64; b[ip + 9] = 17;
  Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]).copy(b, ip + 12);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(ip + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  b.writeUInt16BE(~sum & 0xffff, ip + 10);
  const udp = ip + 20;
  b.writeUInt16BE(1234, udp); b.writeUInt16BE(80, udp + 2); b.writeUInt16BE(64 - udp, udp + 4);
  return b;
}

const pkt = "/tmp/kmx-packet.bin";
writeFileSync(pkt, packet());
const kernel = run(["uname", "-r"]).stdout.trim();
const objects = readdirSync(objDir).filter((f) => f.endsWith(".bpf.o")).sort();
const results = [];
for (const tool of bpftools) {
  const version = run([tool.path, "version"]).stdout.split("\n")[0].replace(/^.*bpftool /, "").trim();
  const probe = run([tool.path, "-j", "feature", "probe", "kernel"]);
  // What the provider's preflight reads: program types and the helpers of xdp and sched_cls.
  let features = null;
  try {
    const f = JSON.parse(probe.stdout);
    const helpers = {};
    for (const t of ["xdp", "sched_cls"]) helpers[t] = f.helpers?.[`${t}_available_helpers`] ?? null;
    features = { program_types: f.program_types, helpers };
  } catch { /* recorded as null */ }
  const loads = [];
  for (const file of objects) {
    const object = basename(file, ".bpf.o");
    // The provider's type for the object's hook: xdp_* -> xdp, everything else TC.
    const type = object.includes("xdp") ? "xdp" : "classifier";
    const dir = `/sys/fs/bpf/kmx/${tool.name}/${object}`;
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const started = Date.now();
    const load = run([tool.path, "prog", "loadall", join(objDir, file), `${dir}/progs`, "type", type, "pinmaps", `${dir}/maps`]);
    const entry = { object, type, load: load.code === 0 ? "ok" : "failed", loadMs: Date.now() - started, programs: [] };
    if (load.code !== 0) entry.reason = reason(load);
    else {
      for (const prog of readdirSync(`${dir}/progs`).sort()) {
        const r = run([tool.path, "-j", "prog", "run", "pinned", `${dir}/progs/${prog}`, "data_in", pkt, "data_out", "/tmp/kmx-out.bin", "repeat", "1"]);
        let retval;
        try { retval = JSON.parse(r.stdout).retval; } catch { /* failed below */ }
        entry.programs.push(r.code === 0 && retval !== undefined ? { name: prog, run: "ok", retval } : { name: prog, run: "failed", reason: reason(r) });
      }
    }
    rmSync(dir, { recursive: true, force: true });
    loads.push(entry);
  }
  results.push({ bpftool: tool.name, version, features, loads });
}
writeFileSync(outFile, JSON.stringify({ kernel, results }, null, 1));
