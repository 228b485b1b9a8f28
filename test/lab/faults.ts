// Support for test/lab/faults.test.ts: what a lab host holds, as one comparable
// text (so "exactly old or exactly new" is a string comparison), the revert timers
// still pending there, and a TCP proxy that adds latency and counts round trips.
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type { Lab, LabHost } from "./lab";

// Counters and flow state change with traffic, not with the configuration.
const VOLATILE_MAP = /stats|counter|flow|conntrack|_ct\b/;

const SNAPSHOT_SCRIPT = `
dev="$1"; history="$2"
echo "== pins"; find /sys/fs/bpf/bpfleet 2>/dev/null | sort
echo "== files"; find /var/lib/bpfleet -mindepth 1 2>/dev/null | grep -Ev '/objects(/[0-9a-f]{64}\\.bpf\\.o)?$|/probe(/[0-9a-f]{32})?$' | sort
echo "== maps"
find /sys/fs/bpf/bpfleet -path '*/maps/*' -type f 2>/dev/null | sort | while read -r m; do
  # A history map's bytes are not compared (hostSnapshot), so it is not dumped: the
  # firewall's slot arrays hold 2^16 and more slots, seconds of bpftool per snapshot.
  if [ -n "$history" ] && printf '%s\n' "\${m##*/}" | grep -Eq "$history"; then echo "-- $m"; continue; fi
  # A fingerprint, not the dump: a Maglev table has a million slots. Sorted, since a hash
  # map's order depends on its history, not only on its content.
  echo "-- $m $(bpftool map dump pinned "$m" 2>&1 | sort | sha256sum | cut -c1-16)"
done
echo "== net"; bpftool -j net show dev "$dev"
echo "== progs"; bpftool -j prog show
echo "== qdisc"; tc -j qdisc show dev "$dev"
echo "== ingress"; tc -j filter show dev "$dev" ingress
echo "== egress"; tc -j filter show dev "$dev" egress
echo "== links"; ip -j link show
`;

/**
 * What the host holds, normalised: program ids (new on every load) become
 * name:tag, per-CPU counters and flow tables are left out, and the object cache's
 * content-addressed files too (an upload left behind is not; it is a leftover).
 */
export async function hostSnapshot(lab: Lab, host: LabHost, dev = "eth0", historyMaps?: RegExp): Promise<string> {
  const out = String((await lab.inHost(host, ["sh", "-c", SNAPSHOT_SCRIPT, "snap", dev, historyMaps?.source ?? ""])).stdout);
  const sections = new Map<string, string>();
  for (const part of out.split(/^== /m).slice(1)) {
    const nl = part.indexOf("\n");
    sections.set(part.slice(0, nl), part.slice(nl + 1).trim());
  }
  const progs = new Map<number, string>();
  for (const p of JSON.parse(sections.get("progs") || "[]") as { id: number; name?: string; tag: string }[]) progs.set(p.id, `${p.name ?? "?"}:${p.tag}`);
  const byId = (_key: string, value: unknown) => value;
  const scrub = (key: string, value: unknown): unknown => {
    if ((key === "id" || key === "prog_id") && typeof value === "number") return progs.get(value) ?? "id";
    if (key === "ifindex" || key === "handle" || key === "jited" || key === "prog_flags") return undefined;
    return byId(key, value);
  };
  const maps: string[] = [];
  for (const line of (sections.get("maps") ?? "").split("\n").filter(Boolean)) {
    const pin = line.replace(/^-- /, "").split(" ")[0]!;
    const name = pin.replace(/^.*\//, "");
    // A map whose bytes depend on the order of past writes (allocated indexes,
    // slots) is listed without its fingerprint: the caller judges its content
    // by what the kind reads back from it.
    if (!VOLATILE_MAP.test(name)) maps.push(historyMaps?.test(name) ? pin : line.replace(/^-- /, ""));
  }
  const links = (JSON.parse(sections.get("links") || "[]") as { ifname: string; link_type?: string; linkinfo?: { info_kind?: string }; operstate?: string }[])
    .map((l) => `${l.ifname}:${l.link_type}`)
    .sort();
  return [
    `pins\n${sections.get("pins")}`,
    `files\n${sections.get("files")}`,
    `maps\n${maps.join("\n")}`,
    `net ${JSON.stringify(JSON.parse(sections.get("net") || "null"), scrub)}`,
    `qdisc ${JSON.stringify(JSON.parse(sections.get("qdisc") || "null"), scrub)}`,
    `ingress ${JSON.stringify(JSON.parse(sections.get("ingress") || "null"), scrub)}`,
    `egress ${JSON.stringify(JSON.parse(sections.get("egress") || "null"), scrub)}`,
    `links ${links.join(" ")}`,
  ].join("\n");
}

/**
 * The snapshot without its pins and files: what is attached and what it would do
 * to traffic. A clsact qdisc with no filter on either hook does nothing to
 * traffic, so it does not count here (a delete cut before its last step leaves one).
 */
export function attachedPart(snapshot: string): string {
  const lines = snapshot.split("\n").filter((line) => /^(net|qdisc|ingress|egress|links) /.test(line));
  const noFilters = ["ingress", "egress"].every((hook) => lines.some((l) => l === `${hook} []` || l === `${hook} null`));
  return lines
    .map((line) => {
      if (!noFilters || !line.startsWith("qdisc ")) return line;
      const qdiscs = JSON.parse(line.slice(6)) as { kind?: string }[] | null;
      return `qdisc ${JSON.stringify((qdiscs ?? []).filter((q) => q.kind !== "clsact"))}`;
    })
    .join("\n");
}

/** The first lines where two snapshots differ, for a failure message. */
export function snapshotDiff(a: string, b: string, max = 6): string {
  const al = a.split("\n");
  const bl = b.split("\n");
  const out: string[] = [];
  for (let i = 0; i < Math.max(al.length, bl.length) && out.length < max; i++) {
    if (al[i] !== bl[i]) out.push(`- ${(al[i] ?? "").slice(0, 200)}\n+ ${(bl[i] ?? "").slice(0, 200)}`);
  }
  return out.join("\n");
}

/**
 * Revert timers armed on this host and not yet fired or disarmed (their script is
 * still <token>.sh). /run is shared by the lab's hosts, so only watchers in this
 * host's network namespace count.
 */
export async function pendingGuards(lab: Lab, host: LabHost): Promise<number> {
  const script = `
me=$(readlink /proc/self/ns/net); n=0
for p in /run/bpfleet/guards/*.pid; do
  [ -e "$p" ] && [ -e "\${p%.pid}.sh" ] || continue
  pid=$(cat "$p" 2>/dev/null)
  [ -n "$pid" ] && [ "$(readlink /proc/$pid/ns/net 2>/dev/null)" = "$me" ] && n=$((n+1))
done
echo $n`;
  return Number(String((await lab.inHost(host, ["sh", "-c", script])).stdout).trim());
}

/** Waits until every pending revert timer on the host has fired (or was disarmed). */
export async function waitForGuards(lab: Lab, host: LabHost, maxMs: number): Promise<void> {
  const deadline = Date.now() + maxMs;
  while ((await pendingGuards(lab, host)) > 0) {
    if (Date.now() > deadline) throw new Error(`revert timers still pending on ${host.name} after ${maxMs} ms`);
    await sleep(250);
  }
  // A timer that just fired may still be running its revert script.
  await sleep(500);
}

/**
 * A TCP proxy in the test process between the provider and a host's sshd that delays
 * every chunk by half the round-trip time in each direction (order kept), and counts
 * round trips: each time the host answers after the provider has sent something.
 */
export class LatencyProxy {
  private server: Server | undefined;
  private sockets = new Set<Socket>();
  roundTrips = 0;
  bytes = 0;

  constructor(
    private readonly target: { address: string; port: number },
    readonly rttMs: number,
  ) {}

  async listen(): Promise<number> {
    let lastFromClient = false;
    this.server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.address);
      this.sockets.add(client).add(upstream);
      const relay = (from: Socket, to: Socket, fromClient: boolean) => {
        let chain = Promise.resolve();
        from.on("data", (chunk: Buffer) => {
          this.bytes += chunk.length;
          if (fromClient) lastFromClient = true;
          else if (lastFromClient) {
            lastFromClient = false;
            this.roundTrips++;
          }
          const due = Date.now() + this.rttMs / 2;
          chain = chain.then(async () => {
            const wait = due - Date.now();
            if (wait > 0) await sleep(wait);
            if (!to.destroyed) to.write(chunk);
          });
        });
        from.on("close", () => void chain.then(() => to.destroy()));
        from.on("error", () => to.destroy());
      };
      relay(client, upstream, true);
      relay(upstream, client, false);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
