/**
 * How the load balancer host reaches each backend: the route (`ip route get`),
 * the next hop's MAC from the neighbour table (`ip neigh`, after a ping when
 * the entry is missing or stale), and whether the interface forwards, read in
 * one round trip. The MAC goes into the backend's record, and with it the
 * interface's MTU when the MAC is the next hop on the program's interface:
 * the program's next-hop cache, which spares packets that fit the per-packet
 * bpf_fib_lookup. Every apply surveys again, so a neighbour whose MAC changed
 * is rewritten by the next `up`; until then packets go to the old MAC.
 */
import { HostPreconditionError } from "../remote/preflight";
import { runShellScript } from "../remote/shellScript";
import type { SshSession } from "../remote/ssh";
import type { LbMode } from "./codec";
import { familyOf, type Backend } from "./schema";

export interface NextHop {
  address: string;
  /** The route as `ip route get` printed it (or its error). */
  route: string;
  dev?: string;
  via?: string;
  /** The source address the route picks (`src`). */
  src?: string;
  /** The address is the host's own. */
  local: boolean;
  mac?: string;
  /** The route's own MTU (`ip route get` prints "mtu N" when the route sets one). */
  mtu?: number;
  /** Neighbour state (REACHABLE, STALE, FAILED, ...), when there is an entry. */
  state?: string;
}

export interface RoutingSurvey {
  hops: Map<string, NextHop>;
  /** net.ipv{4,6}.conf.<interface>.forwarding */
  forwarding: { 4: boolean; 6: boolean };
  ping: boolean;
  /** The interface's MTU (/sys/class/net/<interface>/mtu), when the host reported it. */
  mtu?: number;
}

function wordAfter(words: readonly string[], key: string): string | undefined {
  const i = words.indexOf(key);
  return i >= 0 ? words[i + 1] : undefined;
}

/** Parses the script's output (pure, for tests). */
export function parseRoutingSurvey(stdout: string): RoutingSurvey {
  const hops = new Map<string, NextHop>();
  const forwarding = { 4: false, 6: false };
  let ping = false;
  let mtu = NaN;
  for (const section of stdout.split(/^@@/m).slice(1)) {
    const [head = "", ...lines] = section.split("\n");
    if (head.startsWith("hop ")) {
      const address = head.slice(4).trim();
      const route = (lines.find((l) => l.startsWith("route ")) ?? "route ").slice(6).trim();
      const neigh = (lines.find((l) => l.startsWith("neigh ")) ?? "neigh ").slice(6).trim();
      const words = route.split(/\s+/);
      const neighWords = neigh.split(/\s+/).filter(Boolean);
      const mac = wordAfter(neighWords, "lladdr")?.toLowerCase();
      const routeMtu = Number(wordAfter(words, "mtu"));
      hops.set(address, {
        address,
        route,
        dev: wordAfter(words, "dev"),
        via: wordAfter(words, "via"),
        ...(wordAfter(words, "src") ? { src: wordAfter(words, "src") } : {}),
        local: words[0] === "local",
        ...(mac && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) ? { mac } : {}),
        ...(Number.isInteger(routeMtu) && routeMtu > 0 ? { mtu: routeMtu } : {}),
        ...(neighWords.length > 1 ? { state: neighWords[neighWords.length - 1] } : {}),
      });
    } else if (head.startsWith("forwarding")) {
      for (const line of lines) {
        const [family, value] = line.trim().split(/\s+/);
        if (family === "ipv4") forwarding[4] = value === "1";
        if (family === "ipv6") forwarding[6] = value === "1";
      }
    } else if (head.startsWith("ping ")) {
      ping = head.slice(5).trim() === "true";
    } else if (head.startsWith("mtu")) {
      mtu = Number(head.slice(3).trim());
    }
  }
  return { hops, forwarding, ping, ...(Number.isInteger(mtu) && mtu >= 68 && mtu <= 0xffff ? { mtu } : {}) };
}

/** Routes, neighbours and forwarding for `addresses`, seen from the host, in one round trip. */
export async function surveyRouting(session: SshSession, iface: string, addresses: readonly string[]): Promise<RoutingSurvey> {
  const result = await runShellScript(session, "routing-survey", [iface, ...addresses]);
  return parseRoutingSurvey(result.stdout);
}

const SYSCTL = { 4: "net.ipv4.conf.<if>.forwarding", 6: "net.ipv6.conf.<if>.forwarding" } as const;

/**
 * The MAC each backend record carries (undefined: the program relies on the
 * FIB), or one error naming every backend that cannot be served and why.
 * Pure: `survey` is what the host said.
 */
export function nextHopMacs(
  label: string,
  service: { interface: string; mode: LbMode; vips: Record<string, { address: string }>; backends: Record<string, Backend> },
  survey: RoutingSurvey,
): Record<string, string | undefined> {
  const { interface: iface, mode } = service;
  const macs: Record<string, string | undefined> = {};
  const problems: string[] = [];
  const needForwarding = new Map<4 | 6, string>();

  if (mode === "nat") {
    for (const vip of Object.values(service.vips)) {
      needForwarding.set(familyOf(vip.address), "nat mode forwards the backends' replies (translated back to the VIP) to the clients");
    }
  }
  if (mode === "ipip") {
    for (const b of Object.values(service.backends)) {
      needForwarding.set(familyOf(b.address), "ipip mode asks the FIB for the tunnel's source address and next hop");
    }
  }

  for (const [id, backend] of Object.entries(service.backends)) {
    if (backend.mac !== undefined) {
      macs[id] = backend.mac;
      continue;
    }
    const hop = survey.hops.get(backend.address);
    if (!hop) {
      problems.push(`backend ${id}: the host did not report a route`);
      continue;
    }
    if (hop.local) {
      problems.push(`backend ${id}: ${backend.address} is an address of the load balancer host itself`);
      continue;
    }
    if (!hop.dev) {
      problems.push(`backend ${id}: no route from the host (ip route get ${backend.address}: ${hop.route || "no answer"})`);
      continue;
    }
    if (hop.dev !== iface) {
      if (mode === "nat") {
        problems.push(
          `backend ${id}: reached through ${hop.dev}, not ${iface}; in nat mode its replies must come back through an interface that carries this load balancer, so backends must be reached through ${iface}`,
        );
        continue;
      }
      // The program redirects to the FIB's interface; the MAC is the FIB's too.
      macs[id] = undefined;
      needForwarding.set(familyOf(backend.address), `backend ${id} is reached through ${hop.dev}, and the program redirects there only when the FIB answers`);
      continue;
    }
    if (hop.via && mode === "dsr") {
      problems.push(
        `backend ${id}: reached via gateway ${hop.via}; dsr rewrites only the MAC address, so a backend must be on ${iface}'s own network segment (use mode "ipip" or "nat" for backends behind a router)`,
      );
      continue;
    }
    if (!hop.mac) {
      const nextHop = hop.via ? `gateway ${hop.via} of ${backend.address}` : backend.address;
      problems.push(
        `backend ${id}: cannot resolve the MAC address of ${nextHop} on ${iface} (neighbour ${hop.state ?? "entry missing"}${survey.ping ? " after a ping" : "; ping is not installed to prompt a lookup"}). ` +
          `Check that it is up and answers ARP/neighbour discovery, or give its mac`,
      );
      continue;
    }
    macs[id] = hop.mac;
  }

  for (const [family, why] of needForwarding) {
    if (!survey.forwarding[family]) {
      problems.push(`IPv${family} forwarding is off on ${iface}, and ${why}: enable it (sysctl -w ${SYSCTL[family].replace("<if>", iface)}=1)`);
    }
  }
  if (problems.length > 0) {
    throw new HostPreconditionError(`${label}: the load balancer cannot serve its backends as configured; nothing was changed:\n  - ${problems.join("\n  - ")}`);
  }
  return macs;
}

/** The addresses whose next hop the provider must look up (backends without a given MAC). */
export function addressesToResolve(backends: Record<string, Backend>): string[] {
  return [...new Set(Object.values(backends).filter((b) => b.mac === undefined).map((b) => b.address))];
}

/**
 * The next-hop cache: for each backend whose record carries a MAC (`macs`,
 * from nextHopMacs) that is its next hop on the program's interface, the MTU
 * the program may send to it without asking the FIB: the interface's, or the
 * route's when smaller. A backend without one (no MAC, or the host reported
 * no MTU) is left to the per-packet FIB lookup. Pure.
 */
export function nextHopMtus(macs: Record<string, string | undefined>, backends: Record<string, Backend>, survey: RoutingSurvey): Record<string, number | undefined> {
  const mtus: Record<string, number | undefined> = {};
  for (const [id, mac] of Object.entries(macs)) {
    if (mac === undefined || survey.mtu === undefined) continue;
    const routeMtu = survey.hops.get(backends[id]!.address)?.mtu;
    mtus[id] = routeMtu !== undefined && routeMtu >= 68 ? Math.min(routeMtu, survey.mtu) : survey.mtu;
  }
  return mtus;
}

/**
 * IPIP: the outer source address per family, when the host's routes give
 * every backend of that family the same one (`ip route get`'s `src`, what the
 * program's BPF_FIB_LOOKUP_SRC would pick per packet). It goes into lb_config,
 * which spares IPIP packets the FIB lookup when their next hop is cached. A
 * family whose backends disagree, or any of them unresolved, gets none: the
 * FIB picks per packet. Empty for the other modes. Pure.
 */
export function tunnelSources(mode: LbMode, backends: Record<string, Backend>, survey: RoutingSurvey): { v4?: string; v6?: string } {
  if (mode !== "ipip") return {};
  const out: { v4?: string; v6?: string } = {};
  for (const family of [4, 6] as const) {
    const members = Object.values(backends).filter((b) => familyOf(b.address) === family);
    if (members.length === 0) continue;
    const srcs = new Set(members.map((b) => survey.hops.get(b.address)?.src));
    const [only] = srcs;
    if (srcs.size === 1 && only !== undefined) out[family === 4 ? "v4" : "v6"] = only;
  }
  return out;
}
