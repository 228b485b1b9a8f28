import { describe, expect, it } from "vitest";
import { sumCounters } from "../../provider/counters";

/** One CPU's struct { __u64 packets; __u64 bytes; }, little-endian. */
function cpu(packets: bigint, bytes: bigint): Uint8Array {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setBigUint64(0, packets, true);
  new DataView(b.buffer).setBigUint64(8, bytes, true);
  return b;
}

describe("sumCounters", () => {
  it("sums packets and bytes over CPUs", () => {
    expect(sumCounters([cpu(1n, 100n), cpu(2n, 50n)])).toEqual({ packets: 3, bytes: 150 });
  });

  it("reads values at any offset of a larger buffer (bpftool dumps are sliced)", () => {
    const whole = new Uint8Array(48);
    whole.set(cpu(7n, 700n), 16);
    expect(sumCounters([whole.subarray(16, 32)])).toEqual({ packets: 7, bytes: 700 });
  });

  it("uses all 64 bits of a counter", () => {
    expect(sumCounters([cpu(2n ** 40n, 2n ** 45n)])).toEqual({ packets: 2 ** 40, bytes: 2 ** 45 });
  });

  it("is zero for no CPUs", () => {
    expect(sumCounters([])).toEqual({ packets: 0, bytes: 0 });
  });
});
