/**
 * The flow hash bpf/xdp_maglev.bpf.c picks a table slot with: the kernel's
 * jhash2 (include/linux/jhash.h, lookup3) over the ten 32-bit words of struct
 * lb_flow_key (provider/maglev/codec.ts encodeFlowKey), seed 0, read in host
 * byte order (little-endian on every architecture we load on). For preview:
 * which backend a packet reaches, without a host. test/support/lbFlowHash.ts
 * is an independent transcription the tests check this against, and the
 * kernel tests check both against the program.
 */
import { encodeFlowKey } from "../maglev/codec";

const rol = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

export function jhash2(k: readonly number[], initval: number): number {
  let a = (0xdeadbeef + (k.length << 2) + initval) >>> 0;
  let b = a;
  let c = a;
  let i = 0;
  let length = k.length;
  while (length > 3) {
    a = (a + k[i]!) >>> 0;
    b = (b + k[i + 1]!) >>> 0;
    c = (c + k[i + 2]!) >>> 0;
    // __jhash_mix
    a = (a - c) >>> 0; a = (a ^ rol(c, 4)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol(a, 6)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol(b, 8)) >>> 0; b = (b + a) >>> 0;
    a = (a - c) >>> 0; a = (a ^ rol(c, 16)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol(a, 19)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol(b, 4)) >>> 0; b = (b + a) >>> 0;
    length -= 3;
    i += 3;
  }
  if (length === 0) return c;
  if (length >= 3) c = (c + k[i + 2]!) >>> 0;
  if (length >= 2) b = (b + k[i + 1]!) >>> 0;
  a = (a + k[i]!) >>> 0;
  // __jhash_final
  c = (c ^ b) >>> 0; c = (c - rol(b, 14)) >>> 0;
  a = (a ^ c) >>> 0; a = (a - rol(c, 11)) >>> 0;
  b = (b ^ a) >>> 0; b = (b - rol(a, 25)) >>> 0;
  c = (c ^ b) >>> 0; c = (c - rol(b, 16)) >>> 0;
  a = (a ^ c) >>> 0; a = (a - rol(c, 4)) >>> 0;
  b = (b ^ a) >>> 0; b = (b - rol(a, 14)) >>> 0;
  c = (c ^ b) >>> 0; c = (c - rol(b, 24)) >>> 0;
  return c;
}

/** The hash of a packet's flow as the balancer computes it. */
export function maglevFlowHash(flow: { src: string; dst: string; srcPort: number; dstPort: number; protocol: "tcp" | "udp" }): number {
  const key = encodeFlowKey(flow);
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  return jhash2(Array.from({ length: key.length / 4 }, (_, i) => view.getUint32(i * 4, true)), 0);
}
