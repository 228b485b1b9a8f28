// The filter list the mirror benchmarks share (bench/traffic-mirror.ts, bench/dataplane.ts).
import { filterSchema, type MirrorFilter } from "../provider/trafficMirror/schema";

/** 32 IPv4 TCP filters and 32 IPv6 UDP filters; check() sorts them, IPv4 TCP first. */
export function sixtyFourFilters(): MirrorFilter[] {
  const v4 = Array.from({ length: 32 }, (_, i) => ({ protocol: "tcp", source: `10.${i}.0.0/16`, destination: "192.0.2.0/24", destinationPort: 8000 + i }));
  const v6 = Array.from({ length: 32 }, (_, i) => ({ protocol: "udp", source: `2001:db8:${(i + 1).toString(16)}::/48`, destinationPort: 9000 + i }));
  return [...v4, ...v6].map((f) => filterSchema.parse(f));
}
