/**
 * Bytes of Pulumi state one MaglevService and one TrafficMirror cost a host (issue 10:
 * "N hosts x a few KB"), small and at their largest content: a balancer with 1 backend
 * and 1 VIP against one with `--backends` backends (static MACs, DSR) and `--vips` VIPs,
 * and a mirror with 1 filter against one with `--filters` filters; then both at their
 * largest with their content held once, the backends in a MaglevBackendSet the service
 * binds as `backendSet` and the filters in a MirrorFilterSet the mirror binds as
 * `filterSet` (a set's bytes are paid once per stack, a service's or mirror's once per
 * host). Real CLI, one lab host,
 * `pulumi stack export`; per resource, its bytes, its inputs' and outputs', and its
 * largest outputs. Last, `pulumi preview --diff` with one filter fewer in the set, as
 * the CLI prints it.
 *
 *   sudo npx vite-node bench/kind-state-size.ts [--backends 254] [--vips 16] [--filters 64]
 *
 * The lab is named bks (a veth pair mirtap0/mirtap1 in its host is the mirror's target);
 * it and the project are removed at the end.
 */
import { numberOption, printTable } from "./support";
import { PulumiProject } from "../test/e2e/pulumiProject";
import { createLab } from "../test/lab/lab";

const BACKENDS = numberOption("backends", 254);
const VIPS = numberOption("vips", 16);
const FILTERS = numberOption("filters", 64);
if (!Number.isInteger(BACKENDS) || BACKENDS < 1 || BACKENDS > 254) throw new Error(`--backends must be a whole number 1-254, got ${BACKENDS}`);
if (!Number.isInteger(VIPS) || VIPS < 1 || VIPS > 200) throw new Error(`--vips must be a whole number 1-200, got ${VIPS}`);
if (!Number.isInteger(FILTERS) || FILTERS < 1 || FILTERS > 64) throw new Error(`--filters must be a whole number 1-64, got ${FILTERS}`);

const PROGRAM = `import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const host = lab.hosts[0];
const h = { address: host.address, hostKey: host.hostKey, privateKey: pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")) };
const hex = (n: number) => n.toString(16).padStart(2, "0");
// "set": the backends and the filters held once, in sets the service and the mirror bind (issue 10).
const held = config.require("layout") === "set";
const backends = Array.from({ length: config.requireNumber("backends") }, (_, i) => ({ address: \`10.9.\${i >> 8}.\${(i & 255) + 1}\`, mac: \`02:00:00:00:\${hex(i >> 8)}:\${hex(i & 255)}\` }));
new bpfleet.MaglevService("lb", {
  host: h,
  interface: host.interface,
  mode: "dsr",
  vips: Array.from({ length: config.requireNumber("vips") }, (_, i) => \`198.51.100.\${10 + i}:80/tcp\`),
  ...(held ? { backendSet: new bpfleet.MaglevBackendSet("pool", { backends }) } : { backends }),
});
const filters = Array.from({ length: config.requireNumber("filters") }, (_, i) => ({ protocol: "tcp" as const, destinationPort: 1000 + i }));
new bpfleet.TrafficMirror("mirror", {
  host: h,
  interface: host.interface,
  direction: "ingress",
  ...(held ? { filterSet: new bpfleet.MirrorFilterSet("mirror-filters", { filters }) } : { filters }),
  target: { interface: "mirtap0" },
});
`;

interface StateResource {
  type: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
}

const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value ?? null));

async function main(): Promise<void> {
  const lab = await createLab("bks", { hosts: 1, clients: 0 });
  const host = lab.hosts[0]!;
  const project = await PulumiProject.fromSource("bench-kind-state", PROGRAM);
  const rows: string[][] = [];
  let preview = "";
  try {
    await lab.inHost(host, ["ip", "link", "add", "mirtap0", "type", "veth", "peer", "name", "mirtap1"]);
    for (const link of ["mirtap0", "mirtap1"]) await lab.inHost(host, ["ip", "link", "set", link, "up"]);
    await project.ok(["config", "set", "labFile", lab.jsonPath]);
    // The set layout last: the same stack moves its service and its mirror to the sets in place.
    for (const [backends, vips, filters, layout] of [[1, 1, 1, "inline"], [BACKENDS, VIPS, FILTERS, "inline"], [BACKENDS, VIPS, FILTERS, "set"]] as const) {
      for (const [key, value] of Object.entries({ backends, vips, filters, layout })) await project.ok(["config", "set", key, String(value)]);
      await project.ok(["up", "--yes", "--skip-preview"]);
      const state = JSON.parse(await project.exportState()) as { deployment: { resources: StateResource[] } };
      for (const r of state.deployment.resources) {
        const kind = r.type.split(":").pop()!;
        const content = {
          MaglevService: `${backends} backends, ${vips} VIPs, ${layout === "set" ? "bound to a set" : "inline"}`,
          MaglevBackendSet: `${backends} backends, once per stack`,
          TrafficMirror: `${filters} filters, ${layout === "set" ? "bound to a set" : "inline"}`,
          MirrorFilterSet: `${filters} filters, once per stack`,
        }[kind];
        if (content === undefined) continue;
        const largest = Object.entries(r.outputs ?? {}).map(([k, v]) => [k, bytes(v)] as const).sort((a, b) => b[1] - a[1]).slice(0, 4);
        rows.push([kind, content, String(bytes(r)), String(bytes(r.inputs)), String(bytes(r.outputs)), largest.map(([k, n]) => `${k} ${n}`).join(", ")]);
      }
    }
    await project.ok(["config", "set", "filters", String(FILTERS - 1)]);
    preview = (await project.ok(["preview", "--diff"])).stdout;
    await project.ok(["destroy", "--yes", "--skip-preview"]);
  } finally {
    await lab.destroy();
  }
  console.log("\nPulumi state of one resource on one host (pulumi stack export, JSON bytes)");
  printTable(["kind", "content", "resource", "inputs", "outputs", "largest outputs"], rows, [0, 1, 5]);
  console.log(`\npulumi preview --diff, the set's last filter removed (${FILTERS} -> ${FILTERS - 1}):`);
  console.log(preview);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
