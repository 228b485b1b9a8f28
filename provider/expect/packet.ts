/**
 * The frame an expectation stands for, byte for byte, to feed BPF_PROG_TEST_RUN
 * (`bpftool prog run ... data_in <file>`): Ethernet II, IPv4 (no options, DF
 * clear) or IPv6 (no extension headers), then TCP (no options), UDP or an ICMP /
 * ICMPv6 echo, every length and checksum computed here (RFC 1071; the pseudo
 * headers of RFC 9293 §3.1, RFC 768 and RFC 8200 §8.1).
 *
 * Fields the grammar does not name take fixed values (FRAME_DEFAULTS), so an
 * expectation always gives the same bytes; `FrameOptions` overrides them where
 * the host matters (the interface's MAC as destination, so a program that
 * checks it sees its own) or to reproduce a packet built elsewhere.
 */
import { parsePrefix } from "../cidr";
import { TCP_FLAG_BITS, type Expectation, type Hook } from "./grammar";

export const ETHERTYPE = { ipv4: 0x0800, ipv6: 0x86dd } as const;
export const IP_PROTOCOL = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58 } as const;
/** Echo request / reply: ICMP (RFC 792) and ICMPv6 (RFC 4443 §4). */
export const ECHO = { 4: { request: 8, reply: 0 }, 6: { request: 128, reply: 129 } } as const;

export interface FrameOptions {
  /** Ethernet source and destination, "aa:bb:cc:dd:ee:ff". */
  sourceMac?: string;
  destinationMac?: string;
  /** IPv4 TTL / IPv6 hop limit. */
  ttl?: number;
  /** IPv4 identification. */
  ipId?: number;
  /** IPv4 TOS / IPv6 traffic class. */
  tos?: number;
  tcpSeq?: number;
  tcpAck?: number;
  tcpWindow?: number;
  /** The L4 payload (after the TCP/UDP header, or after the echo's id and sequence). */
  payload?: Uint8Array;
  /** ICMP echo identifier and sequence number. */
  icmpId?: number;
  icmpSequence?: number;
}

/**
 * What a frame carries when the options do not say: locally administered MACs,
 * TTL 64, a 5-byte UDP payload "probe", an empty TCP segment, echo id 1 seq 1.
 * Chosen to be the values test/kernel/packets.ts uses, so the kernel tests can
 * show an expectation gives the bytes of the packets they build by hand.
 */
export const FRAME_DEFAULTS = {
  sourceMac: "02:00:00:00:00:01",
  destinationMac: "02:00:00:00:00:02",
  ttl: 64,
  ipId: 0x1234,
  tos: 0,
  tcpSeq: 1,
  tcpAck: 0,
  tcpWindow: 65535,
  udpPayload: Buffer.from("probe"),
  icmpId: 1,
  icmpSequence: 1,
} as const;

function mac(text: string): Buffer {
  const parts = text.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{2}$/i.test(p))) throw new Error(`not a MAC address: ${text}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

/** RFC 1071 Internet checksum of the concatenated parts. */
export function internetChecksum(...parts: Uint8Array[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

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

/** The L4 segment, checksummed over the pseudo header of `src` and `dst`. */
function segment(e: Expectation, src: Buffer, dst: Buffer, o: FrameOptions): { protocol: number; bytes: Buffer } {
  if (e.protocol === "tcp") {
    const payload = Buffer.from(o.payload ?? Buffer.alloc(0));
    const seg = Buffer.alloc(20 + payload.length);
    seg.writeUInt16BE(e.sourcePort!, 0);
    seg.writeUInt16BE(e.destinationPort!, 2);
    seg.writeUInt32BE((o.tcpSeq ?? FRAME_DEFAULTS.tcpSeq) >>> 0, 4);
    seg.writeUInt32BE((o.tcpAck ?? FRAME_DEFAULTS.tcpAck) >>> 0, 8);
    seg[12] = 5 << 4;
    seg[13] = (e.flags ?? []).reduce((bits, f) => bits | TCP_FLAG_BITS[f], 0);
    seg.writeUInt16BE(o.tcpWindow ?? FRAME_DEFAULTS.tcpWindow, 14);
    payload.copy(seg, 20);
    seg.writeUInt16BE(internetChecksum(pseudoHeader(src, dst, IP_PROTOCOL.tcp, seg.length), seg), 16);
    return { protocol: IP_PROTOCOL.tcp, bytes: seg };
  }
  if (e.protocol === "udp") {
    const payload = Buffer.from(o.payload ?? FRAME_DEFAULTS.udpPayload);
    const seg = Buffer.alloc(8 + payload.length);
    seg.writeUInt16BE(e.sourcePort!, 0);
    seg.writeUInt16BE(e.destinationPort!, 2);
    seg.writeUInt16BE(seg.length, 4);
    payload.copy(seg, 8);
    const sum = internetChecksum(pseudoHeader(src, dst, IP_PROTOCOL.udp, seg.length), seg);
    // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
    seg.writeUInt16BE(sum === 0 ? 0xffff : sum, 6);
    return { protocol: IP_PROTOCOL.udp, bytes: seg };
  }
  const payload = Buffer.from(o.payload ?? Buffer.alloc(0));
  const seg = Buffer.alloc(8 + payload.length);
  seg[0] = ECHO[e.family][e.reply ? "reply" : "request"];
  seg.writeUInt16BE(o.icmpId ?? FRAME_DEFAULTS.icmpId, 4);
  seg.writeUInt16BE(o.icmpSequence ?? FRAME_DEFAULTS.icmpSequence, 6);
  payload.copy(seg, 8);
  const protocol = e.family === 4 ? IP_PROTOCOL.icmp : IP_PROTOCOL.icmpv6;
  // ICMPv6's checksum covers the pseudo header (RFC 4443 §2.3); ICMP's does not.
  seg.writeUInt16BE(e.family === 4 ? internetChecksum(seg) : internetChecksum(pseudoHeader(src, dst, protocol, seg.length), seg), 2);
  return { protocol, bytes: seg };
}

/** The Ethernet frame of an expectation's packet. */
export function buildFrame(e: Expectation, o: FrameOptions = {}): Buffer {
  const src = Buffer.from(parsePrefix(e.source).bytes);
  const dst = Buffer.from(parsePrefix(e.destination).bytes);
  const l4 = segment(e, src, dst, o);
  const ttl = o.ttl ?? FRAME_DEFAULTS.ttl;
  const tos = o.tos ?? FRAME_DEFAULTS.tos;
  let l3: Buffer;
  if (e.family === 4) {
    l3 = Buffer.alloc(20);
    l3[0] = 0x45;
    l3[1] = tos;
    l3.writeUInt16BE(20 + l4.bytes.length, 2);
    l3.writeUInt16BE(o.ipId ?? FRAME_DEFAULTS.ipId, 4);
    l3[8] = ttl;
    l3[9] = l4.protocol;
    src.copy(l3, 12);
    dst.copy(l3, 16);
    l3.writeUInt16BE(internetChecksum(l3), 10);
  } else {
    l3 = Buffer.alloc(40);
    l3.writeUInt32BE(((6 << 28) | (tos << 20)) >>> 0, 0);
    l3.writeUInt16BE(l4.bytes.length, 4);
    l3[6] = l4.protocol;
    l3[7] = ttl;
    src.copy(l3, 8);
    dst.copy(l3, 24);
  }
  const eth = Buffer.alloc(14);
  mac(o.destinationMac ?? FRAME_DEFAULTS.destinationMac).copy(eth, 0);
  mac(o.sourceMac ?? FRAME_DEFAULTS.sourceMac).copy(eth, 6);
  eth.writeUInt16BE(e.family === 4 ? ETHERTYPE.ipv4 : ETHERTYPE.ipv6, 12);
  return Buffer.concat([eth, l3, l4.bytes]);
}

/**
 * A TcPolicy "reply" expectation is about a flow the other side opened: the
 * packet that opens it goes the other way, through the other hook — source and
 * destination swapped, a TCP SYN, a UDP datagram, an echo request with the
 * same identifier (FRAME_DEFAULTS.icmpId, as the reply's).
 * Running it first (and only then the reply) is what makes the flow exist, in
 * a probe copy's scratch flow table (probe.ts), never the live one.
 */
export function flowOpener(e: Expectation): { hook: Hook; expectation: Expectation } {
  if (!e.reply) throw new Error("flowOpener: only a reply expectation has a flow to open");
  const opener: Expectation = {
    ...e,
    hook: e.hook === "ingress" ? "egress" : "ingress",
    reply: false,
    source: e.destination,
    destination: e.source,
    sourcePort: e.destinationPort,
    destinationPort: e.sourcePort,
    outcome: { verdict: "pass" },
  };
  if (e.protocol === "tcp") opener.flags = ["syn"];
  else delete opener.flags;
  return { hook: opener.hook, expectation: opener };
}
