// The flow hash bpf/xdp_maglev.bpf.c computes, recomputed here independently of
// the provider's codec, so that tests can predict which backend a flow reaches:
// the kernel's jhash2 over the ten words of struct lb_flow_key, seed 0.
import { IPPROTO, ipBytes } from "../kernel/packets";

export interface Flow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: "tcp" | "udp";
}

const rol = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

/** The kernel's jhash2 (lookup3), transcribed from include/linux/jhash.h. */
export function jhash2(k: number[], initval: number): number {
  let a = (0xdeadbeef + (k.length << 2) + initval) >>> 0;
  let b = a;
  let c = a;
  const mix = () => {
    a = (a - c) >>> 0; a = (a ^ rol(c, 4)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol(a, 6)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol(b, 8)) >>> 0; b = (b + a) >>> 0;
    a = (a - c) >>> 0; a = (a ^ rol(c, 16)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol(a, 19)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol(b, 4)) >>> 0; b = (b + a) >>> 0;
  };
  const final = () => {
    c = (c ^ b) >>> 0; c = (c - rol(b, 14)) >>> 0;
    a = (a ^ c) >>> 0; a = (a - rol(c, 11)) >>> 0;
    b = (b ^ a) >>> 0; b = (b - rol(a, 25)) >>> 0;
    c = (c ^ b) >>> 0; c = (c - rol(b, 16)) >>> 0;
    a = (a ^ c) >>> 0; a = (a - rol(c, 4)) >>> 0;
    b = (b ^ a) >>> 0; b = (b - rol(a, 14)) >>> 0;
    c = (c ^ b) >>> 0; c = (c - rol(b, 24)) >>> 0;
  };
  let i = 0;
  let length = k.length;
  while (length > 3) {
    a = (a + k[i]!) >>> 0; b = (b + k[i + 1]!) >>> 0; c = (c + k[i + 2]!) >>> 0;
    mix();
    length -= 3;
    i += 3;
  }
  if (length === 0) return c;
  if (length >= 3) c = (c + k[i + 2]!) >>> 0;
  if (length >= 2) b = (b + k[i + 1]!) >>> 0;
  a = (a + k[i]!) >>> 0;
  final();
  return c;
}

/** struct lb_flow_key, built from the packet's fields (not by the codec under test). */
export function lbFlowKey(f: Flow): Buffer {
  const key = Buffer.alloc(40);
  ipBytes(f.src).copy(key, 0);
  ipBytes(f.dst).copy(key, 16);
  key.writeUInt16BE(f.sport, 32);
  key.writeUInt16BE(f.dport, 34);
  key[36] = f.proto === "tcp" ? IPPROTO.TCP : IPPROTO.UDP;
  key[37] = f.src.includes(":") ? 6 : 4;
  return key;
}

export function lbFlowHash(f: Flow): number {
  const key = lbFlowKey(f);
  return jhash2(Array.from({ length: 10 }, (_, i) => key.readUInt32LE(i * 4)), 0);
}
