/**
 * Packet crafting for kernel tests: Ethernet (with VLAN tags), ARP, IPv4 (with
 * options and fragments), IPv6 (with extension headers and fragments), TCP,
 * UDP, ICMP and ICMPv6.
 *
 * Every length and checksum is computed here, independently of the BPF code
 * under test, so a test can compare a program's output bytes against a packet
 * built the same way. packets.test.ts cross-checks the checksums with tcpdump.
 */
import { writeFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";

export const ETH_P = { IP: 0x0800, ARP: 0x0806, IPV6: 0x86dd, VLAN: 0x8100, QINQ: 0x88a8 } as const;
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;

// ---------------------------------------------------------------- addresses

export function macBytes(mac: string): Buffer {
  const parts = mac.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{2}$/i.test(p))) {
    throw new Error(`not a MAC address: ${mac}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function ipv4Bytes(addr: string): Buffer {
  if (!isIPv4(addr)) throw new Error(`not an IPv4 address: ${addr}`);
  return Buffer.from(addr.split(".").map(Number));
}

export function ipv6Bytes(addr: string): Buffer {
  if (!isIPv6(addr)) throw new Error(`not an IPv6 address: ${addr}`);
  // A dotted IPv4 tail (::ffff:192.0.2.1) is two 16-bit words.
  const text = addr.replace(/(\d+\.\d+\.\d+\.\d+)$/, (v4) => {
    const b = ipv4Bytes(v4);
    return `${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  });
  const words = (s: string) => (s === "" ? [] : s.split(":").map((w) => parseInt(w, 16)));
  const halves = text.split("::");
  const left = words(halves[0]!);
  const right = halves.length === 2 ? words(halves[1]!) : [];
  const all = halves.length === 2 ? [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right] : left;
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

export function ipBytes(addr: string): Buffer {
  return isIPv4(addr) ? ipv4Bytes(addr) : ipv6Bytes(addr);
}

// ---------------------------------------------------------------- checksums

/** RFC 1071 Internet checksum of the concatenated parts. */
export function internetChecksum(...parts: Buffer[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The pseudo header that TCP, UDP and ICMPv6 checksums cover (RFC 793, RFC 8200 §8.1). */
function pseudoHeader(src: Buffer, dst: Buffer, protocol: number, length: number): Buffer {
  if (src.length === 4) {
    const ph = Buffer.alloc(12);
    src.copy(ph, 0);
    dst.copy(ph, 4);
    ph[9] = protocol;
    ph.writeUInt16BE(length, 10);
    return ph;
  }
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(length, 32);
  ph[39] = protocol;
  return ph;
}

// ---------------------------------------------------------------- layer 4

/** An L4 segment whose checksum depends on the IP addresses around it. */
export interface Segment {
  protocol: number;
  encode(src: Buffer, dst: Buffer): Buffer;
}

export interface TcpFlags {
  fin?: boolean;
  syn?: boolean;
  rst?: boolean;
  psh?: boolean;
  ack?: boolean;
  urg?: boolean;
}

export function tcp(o: {
  srcPort: number;
  dstPort: number;
  seq?: number;
  ack?: number;
  flags?: TcpFlags;
  window?: number;
  /** Raw option bytes, padded here to a multiple of 4 with End-of-Options. */
  options?: Buffer;
  payload?: Buffer;
  /** Overrides the computed checksum (to craft a bad one). */
  checksum?: number;
}): Segment {
  return {
    protocol: IPPROTO.TCP,
    encode(src, dst) {
      const options = padTo4(o.options ?? Buffer.alloc(0));
      const payload = o.payload ?? Buffer.alloc(0);
      const h = Buffer.alloc(20 + options.length);
      h.writeUInt16BE(o.srcPort, 0);
      h.writeUInt16BE(o.dstPort, 2);
      h.writeUInt32BE((o.seq ?? 1) >>> 0, 4);
      h.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
      const f = o.flags ?? { syn: true };
      h[12] = (h.length / 4) << 4;
      h[13] =
        (f.fin ? 0x01 : 0) | (f.syn ? 0x02 : 0) | (f.rst ? 0x04 : 0) |
        (f.psh ? 0x08 : 0) | (f.ack ? 0x10 : 0) | (f.urg ? 0x20 : 0);
      h.writeUInt16BE(o.window ?? 65535, 14);
      options.copy(h, 20);
      const seg = Buffer.concat([h, payload]);
      const sum = o.checksum ?? internetChecksum(pseudoHeader(src, dst, IPPROTO.TCP, seg.length), seg);
      seg.writeUInt16BE(sum, 16);
      return seg;
    },
  };
}

export function udp(o: { srcPort: number; dstPort: number; payload?: Buffer; checksum?: number }): Segment {
  return {
    protocol: IPPROTO.UDP,
    encode(src, dst) {
      const payload = o.payload ?? Buffer.alloc(0);
      const seg = Buffer.alloc(8 + payload.length);
      seg.writeUInt16BE(o.srcPort, 0);
      seg.writeUInt16BE(o.dstPort, 2);
      seg.writeUInt16BE(seg.length, 4);
      payload.copy(seg, 8);
      let sum = o.checksum ?? internetChecksum(pseudoHeader(src, dst, IPPROTO.UDP, seg.length), seg);
      // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
      if (o.checksum === undefined && sum === 0) sum = 0xffff;
      seg.writeUInt16BE(sum, 6);
      return seg;
    },
  };
}

/** ICMP (IPv4): no pseudo header; `id` and `sequence` fill the 4 bytes after the checksum. */
export function icmpv4(o: { type: number; code?: number; id?: number; sequence?: number; payload?: Buffer }): Segment {
  return {
    protocol: IPPROTO.ICMP,
    encode() {
      const seg = icmpBody(o);
      seg.writeUInt16BE(internetChecksum(seg), 2);
      return seg;
    },
  };
}

/** ICMPv6: the checksum covers the IPv6 pseudo header (RFC 4443 §2.3). */
export function icmpv6(o: { type: number; code?: number; id?: number; sequence?: number; payload?: Buffer }): Segment {
  return {
    protocol: IPPROTO.ICMPV6,
    encode(src, dst) {
      const seg = icmpBody(o);
      seg.writeUInt16BE(internetChecksum(pseudoHeader(src, dst, IPPROTO.ICMPV6, seg.length), seg), 2);
      return seg;
    },
  };
}

function icmpBody(o: { type: number; code?: number; id?: number; sequence?: number; payload?: Buffer }): Buffer {
  const payload = o.payload ?? Buffer.alloc(0);
  const seg = Buffer.alloc(8 + payload.length);
  seg[0] = o.type;
  seg[1] = o.code ?? 0;
  seg.writeUInt16BE(o.id ?? 0, 4);
  seg.writeUInt16BE(o.sequence ?? 0, 6);
  payload.copy(seg, 8);
  return seg;
}

// ---------------------------------------------------------------- layer 3

export function ipv4(o: {
  src: string;
  dst: string;
  payload: Segment | Buffer;
  /** Required when payload is raw bytes. */
  protocol?: number;
  ttl?: number;
  tos?: number;
  id?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** In 8-byte units, as on the wire. */
  fragmentOffset?: number;
  /** Raw option bytes, padded here to a multiple of 4 with End-of-Options; at most 40. */
  options?: Buffer;
  /** Overrides the IHL field (to craft malformed headers); the bytes are unchanged. */
  ihl?: number;
  version?: number;
  checksum?: number;
}): Buffer {
  const src = ipv4Bytes(o.src);
  const dst = ipv4Bytes(o.dst);
  const options = padTo4(o.options ?? Buffer.alloc(0));
  if (options.length > 40) throw new Error("IPv4 options are at most 40 bytes");
  const protocol = isSegment(o.payload) ? o.payload.protocol : o.protocol;
  if (protocol === undefined) throw new Error("ipv4: protocol is required with a raw payload");
  const payload = isSegment(o.payload) ? o.payload.encode(src, dst) : o.payload;
  const h = Buffer.alloc(20 + options.length);
  h[0] = ((o.version ?? 4) << 4) | (o.ihl ?? h.length / 4);
  h[1] = o.tos ?? 0;
  h.writeUInt16BE(h.length + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE(
    (o.dontFragment ? 0x4000 : 0) | (o.moreFragments ? 0x2000 : 0) | ((o.fragmentOffset ?? 0) & 0x1fff),
    6,
  );
  h[8] = o.ttl ?? 64;
  h[9] = protocol;
  src.copy(h, 12);
  dst.copy(h, 16);
  options.copy(h, 20);
  h.writeUInt16BE(o.checksum ?? internetChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

/**
 * An IPv6 extension header (RFC 8200 §4). Every kernel test builds its IPv6
 * fragments and extension-header chains with this one encoding.
 */
export type Ipv6Extension =
  /** Options headers hold one PadN option; routing is type 4 (segment routing), read by length only. Length: total bytes, a multiple of 8 (default 8). */
  | { type: "hop-by-hop" | "routing" | "destination"; length?: number }
  /** Offset in 8-byte units, as on the wire (as ipv4's fragmentOffset); M flag. */
  | { type: "fragment"; fragmentOffset?: number; moreFragments?: boolean; id?: number }
  /** RFC 4302 AH; length: total bytes, a multiple of 4, at least 12 (default 16: a 4-byte ICV). */
  | { type: "ah"; length?: number };

const EXTENSION_CODE = { "hop-by-hop": 0, routing: 43, fragment: 44, ah: 51, destination: 60 } as const;

function extensionHeader(h: Ipv6Extension, next: number): Buffer {
  let b: Buffer;
  if (h.type === "fragment") {
    b = Buffer.alloc(8);
    b.writeUInt16BE((((h.fragmentOffset ?? 0) & 0x1fff) << 3) | (h.moreFragments ? 1 : 0), 2);
    b.writeUInt32BE(h.id ?? 0xabcd, 4);
  } else if (h.type === "ah") {
    const length = h.length ?? 16;
    if (length < 12 || length % 4 !== 0) throw new Error("AH: length is a multiple of 4, at least 12");
    b = Buffer.alloc(length);
    b[1] = length / 4 - 2; // 4-byte units, not counting the first two
    b.writeUInt32BE(0x100, 4); // SPI
    b.writeUInt32BE(1, 8); // sequence number
  } else {
    const length = h.length ?? 8;
    if (length < 8 || length % 8 !== 0) throw new Error(`${h.type}: length is a multiple of 8`);
    b = Buffer.alloc(length);
    b[1] = length / 8 - 1; // 8-byte units, not counting the first
    if (h.type === "routing") {
      b[2] = 4; // routing type; segments left 0
    } else {
      b[2] = 1; // PadN covering the rest
      b[3] = length - 4;
    }
  }
  b[0] = next;
  return b;
}

export function ipv6(o: {
  src: string;
  dst: string;
  payload: Segment | Buffer;
  nextHeader?: number;
  /** Between the fixed header and the payload, in this order. */
  extensions?: Ipv6Extension[];
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}): Buffer {
  const src = ipv6Bytes(o.src);
  const dst = ipv6Bytes(o.dst);
  let nextHeader = isSegment(o.payload) ? o.payload.protocol : o.nextHeader;
  if (nextHeader === undefined) throw new Error("ipv6: nextHeader is required with a raw payload");
  let payload = isSegment(o.payload) ? o.payload.encode(src, dst) : o.payload;
  for (const h of [...(o.extensions ?? [])].reverse()) {
    payload = Buffer.concat([extensionHeader(h, nextHeader), payload]);
    nextHeader = EXTENSION_CODE[h.type];
  }
  const h = Buffer.alloc(40);
  h.writeUInt32BE(((6 << 28) | ((o.trafficClass ?? 0) << 20) | ((o.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(payload.length, 4);
  h[6] = nextHeader;
  h[7] = o.hopLimit ?? 64;
  src.copy(h, 8);
  dst.copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** An ARP request or reply for IPv4 over Ethernet (EtherType ETH_P.ARP). */
export function arp(o: {
  op: "request" | "reply";
  senderMac: string;
  senderIp: string;
  targetMac?: string;
  targetIp: string;
}): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt16BE(1, 0); // Ethernet
  b.writeUInt16BE(ETH_P.IP, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(o.op === "request" ? 1 : 2, 6);
  macBytes(o.senderMac).copy(b, 8);
  ipv4Bytes(o.senderIp).copy(b, 14);
  macBytes(o.targetMac ?? "00:00:00:00:00:00").copy(b, 18);
  ipv4Bytes(o.targetIp).copy(b, 24);
  return b;
}

// ---------------------------------------------------------------- layer 2

export interface VlanTag {
  vid: number;
  pcp?: number;
  /** The TPID announcing this tag: 0x8100 (802.1Q, default) or 0x88a8 (802.1AD). */
  tpid?: number;
}

/** An Ethernet frame; VLAN tags are listed outermost first. No FCS, as XDP sees frames. */
export function ethernet(o: {
  dst?: string;
  src?: string;
  vlans?: VlanTag[];
  etherType: number;
  payload: Buffer;
}): Buffer {
  const vlans = o.vlans ?? [];
  const h = Buffer.alloc(14 + 4 * vlans.length);
  macBytes(o.dst ?? "02:00:00:00:00:02").copy(h, 0);
  macBytes(o.src ?? "02:00:00:00:00:01").copy(h, 6);
  let off = 12;
  for (const tag of vlans) {
    h.writeUInt16BE(tag.tpid ?? ETH_P.VLAN, off);
    h.writeUInt16BE(((tag.pcp ?? 0) << 13) | (tag.vid & 0xfff), off + 2);
    off += 4;
  }
  h.writeUInt16BE(o.etherType, off);
  return Buffer.concat([h, o.payload]);
}

/** Ethernet + IPv4 or IPv6 chosen by the address family of `src`. */
export function ipFrame(o: { src: string; dst: string; payload: Segment; vlans?: VlanTag[] }): Buffer {
  const v4 = isIPv4(o.src);
  return ethernet({
    vlans: o.vlans,
    etherType: v4 ? ETH_P.IP : ETH_P.IPV6,
    payload: v4 ? ipv4({ src: o.src, dst: o.dst, payload: o.payload }) : ipv6({ src: o.src, dst: o.dst, payload: o.payload }),
  });
}

// ---------------------------------------------------------------- inspection

export interface Dissection {
  vlanIds: number[];
  etherType: number;
  l3Offset: number;
  /** IP protocol / IPv6 next header; undefined for non-IP frames. */
  protocol?: number;
  l4Offset?: number;
  src?: Buffer;
  dst?: Buffer;
}

/** Locates the headers of a frame built by this module (or rewritten by a program). */
export function dissect(frame: Buffer): Dissection {
  let off = 12;
  let etherType = frame.readUInt16BE(off);
  const vlanIds: number[] = [];
  while (etherType === ETH_P.VLAN || etherType === ETH_P.QINQ) {
    vlanIds.push(frame.readUInt16BE(off + 2) & 0xfff);
    off += 4;
    etherType = frame.readUInt16BE(off);
  }
  const l3 = off + 2;
  if (etherType === ETH_P.IP) {
    const ihl = (frame[l3]! & 0x0f) * 4;
    return {
      vlanIds, etherType, l3Offset: l3, protocol: frame[l3 + 9], l4Offset: l3 + ihl,
      src: frame.subarray(l3 + 12, l3 + 16), dst: frame.subarray(l3 + 16, l3 + 20),
    };
  }
  if (etherType === ETH_P.IPV6) {
    return {
      vlanIds, etherType, l3Offset: l3, protocol: frame[l3 + 6], l4Offset: l3 + 40,
      src: frame.subarray(l3 + 8, l3 + 24), dst: frame.subarray(l3 + 24, l3 + 40),
    };
  }
  return { vlanIds, etherType, l3Offset: l3 };
}

/**
 * Recomputes the checksums of an IP frame: true where the stored value is
 * right. For output packets of programs that rewrite headers.
 */
export function checksumsValid(frame: Buffer): { ipv4Header?: boolean; l4?: boolean } {
  const d = dissect(frame);
  const out: { ipv4Header?: boolean; l4?: boolean } = {};
  if (d.protocol === undefined || d.l4Offset === undefined) return out;
  if (d.etherType === ETH_P.IP) {
    out.ipv4Header = internetChecksum(frame.subarray(d.l3Offset, d.l4Offset)) === 0;
  }
  const totalEnd =
    d.etherType === ETH_P.IP
      ? d.l3Offset + frame.readUInt16BE(d.l3Offset + 2)
      : d.l4Offset + frame.readUInt16BE(d.l3Offset + 4);
  const seg = frame.subarray(d.l4Offset, totalEnd);
  if (d.protocol === IPPROTO.ICMP) out.l4 = internetChecksum(seg) === 0;
  else if (d.protocol === IPPROTO.TCP || d.protocol === IPPROTO.UDP || d.protocol === IPPROTO.ICMPV6) {
    out.l4 = internetChecksum(pseudoHeader(d.src!, d.dst!, d.protocol, seg.length), seg) === 0;
  }
  return out;
}

/** Writes frames to a classic pcap file (LINKTYPE_ETHERNET), for tcpdump/wireshark. */
export function writePcap(path: string, frames: Buffer[]): void {
  const global = Buffer.alloc(24);
  global.writeUInt32LE(0xa1b2c3d4, 0);
  global.writeUInt16LE(2, 4);
  global.writeUInt16LE(4, 6);
  global.writeUInt32LE(65535, 16);
  global.writeUInt32LE(1, 20);
  const records = frames.map((f, i) => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(i, 0);
    h.writeUInt32LE(f.length, 8);
    h.writeUInt32LE(f.length, 12);
    return Buffer.concat([h, f]);
  });
  writeFileSync(path, Buffer.concat([global, ...records]));
}

function isSegment(p: Segment | Buffer): p is Segment {
  return !Buffer.isBuffer(p);
}

function padTo4(b: Buffer): Buffer {
  const rem = b.length % 4;
  return rem === 0 ? b : Buffer.concat([b, Buffer.alloc(4 - rem)]);
}
