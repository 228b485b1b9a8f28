/**
 * Every bpfleet program counts in per-CPU values of one layout,
 * struct { __u64 packets; __u64 bytes; } (little-endian on the hosts we run on);
 * a reading is their sum over CPUs.
 */
export interface PacketCount {
  packets: number;
  bytes: number;
}

export function sumCounters(perCpu: readonly Uint8Array[]): PacketCount {
  let packets = 0n;
  let bytes = 0n;
  for (const value of perCpu) {
    const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
    packets += view.getBigUint64(0, true);
    bytes += view.getBigUint64(8, true);
  }
  return { packets: Number(packets), bytes: Number(bytes) };
}
