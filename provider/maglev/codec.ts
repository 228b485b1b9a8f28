/**
 * Byte layouts of the load balancer's maps, mirroring bpf/include/maglev.h
 * field by field (test/unit/maglevCodec.test.ts pins the bytes,
 * test/kernel/maglev.test.ts checks them against the object's BTF and runs
 * packets through maps written with them).
 *
 * Addresses and ports are in network byte order, as on the wire; indexes,
 * sizes, flags and counters little-endian (host order on x86-64 and arm64).
 * An IPv4 address fills the first 4 of 16 address bytes.
 */
import { formatAddress, isExact, parsePrefix } from "../cidr";
import type { MapOperation } from "../remote/mapOperations";
import type { SlotChange } from "./table";

export const MAPS = {
  vips: "lb_vips",
  vipIndex: "lb_vip_index",
  table: "maglev_table",
  backends: "lb_backends",
  flows: "lb_flows",
  nat: "lb_nat",
  config: "lb_config",
  vipStats: "lb_vip_ctr",
  backendStats: "lb_backend_ctr",
  stats: "lb_stats",
} as const;

export const LB_MAX_VIPS = 256;
export const LB_MAX_BACKENDS = 4096;
export const LB_TABLE_CAPACITY = 16 * 65537;
/** Slot value and backend index that names no backend; lb_backends[0] is never written. */
export const NO_BACKEND_INDEX = 0;

/** sizeof() of each struct in bpf/include/maglev.h. */
export const SIZES = { vipKey: 20, vip: 16, vipSlot: 40, backend: 28, flowKey: 40, natOrigin: 24, config: 24, counter: 16, index: 4 } as const;

export type LbMode = "dsr" | "nat" | "ipip";
export type L4Protocol = "tcp" | "udp";

const MODE_CODE: Record<LbMode, number> = { dsr: 1, nat: 2, ipip: 3 };
const PROTOCOL_NUMBER: Record<L4Protocol, number> = { tcp: 6, udp: 17 };
const VIP_F_FLOW_TABLE = 0x01;
const BACKEND_F_STATIC_MAC = 0x01;
const BACKEND_F_NEXT_HOP = 0x02;
const CONFIG_F_REVERSE_NAT = 0x01;
const FAMILY_V4 = 4;
const FAMILY_V6 = 6;

/** enum lb_stat, in index order. */
export const LB_STATS = [
  "notVip", "noBackend", "tx", "redirect", "stack", "fibDrop", "staticMac", "reverseNat", "flowHit", "encapFail",
] as const;
export type LbStat = (typeof LB_STATS)[number];

export class CodecError extends Error {}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** An exact IPv4/IPv6 address as 16 bytes (IPv4 in the first 4) and its family code. */
export function encodeAddress(address: string): { bytes: Uint8Array; family: 4 | 6 } {
  let prefix;
  try {
    prefix = parsePrefix(address);
  } catch {
    throw new CodecError(`"${address}" is not an IPv4 or IPv6 address`);
  }
  if (!isExact(prefix) || address.includes("/")) throw new CodecError(`"${address}" is a prefix; an address is needed`);
  const bytes = new Uint8Array(16);
  bytes.set(prefix.bytes, 0);
  return { bytes, family: prefix.family };
}

function decodeAddress(bytes: Uint8Array, family: number): string {
  if (family === FAMILY_V4) return formatAddress(bytes.slice(0, 4));
  if (family === FAMILY_V6) return formatAddress(bytes.slice(0, 16));
  throw new CodecError(`unknown address family code ${family}`);
}

function checkPort(port: number, what: string): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CodecError(`${what} must be a port number from 0 to 65535, got ${port}`);
  return port;
}

function checkU32(value: number, what: string, limit = 0x1_0000_0000): number {
  if (!Number.isInteger(value) || value < 0 || value >= limit) throw new CodecError(`${what} must be a whole number below ${limit}, got ${value}`);
  return value;
}

/** How the MaglevService names a backend: "10.0.0.2:8080", "[2001:db8::2]:8080". */
export function backendIdentity(address: string, port: number): string {
  const { bytes, family } = encodeAddress(address);
  const canonical = decodeAddress(bytes, family);
  return family === 6 ? `[${canonical}]:${checkPort(port, "port")}` : `${canonical}:${checkPort(port, "port")}`;
}

// ---------------------------------------------------------------- lb_vips

export interface VipKey {
  address: string;
  port: number;
  protocol: L4Protocol;
}

/** struct lb_vip_key { u8 addr[16]; be16 port; u8 proto; u8 family; } */
export function encodeVipKey(vip: VipKey): Uint8Array {
  const { bytes, family } = encodeAddress(vip.address);
  const key = new Uint8Array(SIZES.vipKey);
  key.set(bytes, 0);
  view(key).setUint16(16, checkPort(vip.port, "VIP port"), false);
  const proto = PROTOCOL_NUMBER[vip.protocol];
  if (proto === undefined) throw new CodecError(`protocol must be tcp or udp, got ${String(vip.protocol)}`);
  key[18] = proto;
  key[19] = family;
  return key;
}

export function decodeVipKey(key: Uint8Array): VipKey {
  if (key.length !== SIZES.vipKey) throw new CodecError(`a VIP key has ${SIZES.vipKey} bytes, not ${key.length}`);
  const protocol = (Object.keys(PROTOCOL_NUMBER) as L4Protocol[]).find((p) => PROTOCOL_NUMBER[p] === key[18]);
  if (!protocol) throw new CodecError(`VIP key with IP protocol ${key[18]}, not TCP or UDP`);
  return { address: decodeAddress(key.subarray(0, 16), key[19]!), port: view(key).getUint16(16, false), protocol };
}

export interface VipValue {
  /** Index into lb_vip_ctr, < LB_MAX_VIPS. */
  vipIndex: number;
  /** First slot of the VIP's table in maglev_table. */
  tableOffset: number;
  /** M. */
  tableSize: number;
  mode: LbMode;
  /** Pin flows in lb_flows (LRU connection table). */
  flowTable: boolean;
}

/** struct lb_vip { u32 vip_index; u32 table_offset; u32 table_size; u8 mode; u8 flags; u16 reserved; } */
export function encodeVip(vip: VipValue): Uint8Array {
  const value = new Uint8Array(SIZES.vip);
  const v = view(value);
  v.setUint32(0, checkU32(vip.vipIndex, "vipIndex", LB_MAX_VIPS), true);
  const offset = checkU32(vip.tableOffset, "tableOffset", LB_TABLE_CAPACITY);
  const size = checkU32(vip.tableSize, "tableSize", LB_TABLE_CAPACITY + 1);
  if (offset + size > LB_TABLE_CAPACITY) throw new CodecError(`a table of ${size} slots at offset ${offset} ends past the ${LB_TABLE_CAPACITY} slots of maglev_table`);
  v.setUint32(4, offset, true);
  v.setUint32(8, size, true);
  const mode = MODE_CODE[vip.mode];
  if (mode === undefined) throw new CodecError(`mode must be dsr, nat or ipip, got ${String(vip.mode)}`);
  value[12] = mode;
  value[13] = vip.flowTable ? VIP_F_FLOW_TABLE : 0;
  return value;
}

export function decodeVip(value: Uint8Array): VipValue {
  if (value.length !== SIZES.vip) throw new CodecError(`a VIP value has ${SIZES.vip} bytes, not ${value.length}`);
  const v = view(value);
  const mode = (Object.keys(MODE_CODE) as LbMode[]).find((m) => MODE_CODE[m] === value[12]);
  if (!mode) throw new CodecError(`VIP value with unknown mode ${value[12]}`);
  return { vipIndex: v.getUint32(0, true), tableOffset: v.getUint32(4, true), tableSize: v.getUint32(8, true), mode, flowTable: (value[13]! & VIP_F_FLOW_TABLE) !== 0 };
}

// ---------------------------------------------------------------- lb_vip_index

/** Slots of lb_vip_index (LB_VIP_SLOTS). */
export const LB_VIP_SLOTS = 1024;
const VIP_SLOT_BITS = 10;

/** enum lb_vip_slot_state: what a lb_vip_index slot says (see bpf/include/maglev.h). */
export const VIP_SLOT_STATE = { ask: 0, none: 1, one: 2 } as const;
export type VipSlotState = keyof typeof VIP_SLOT_STATE;

/** lb_vip_slot_of (bpf/include/maglev_hash.h): the key's five words in host order, XOR-folded, Fibonacci-hashed. */
export function vipSlotOf(key: Uint8Array): number {
  if (key.length !== SIZES.vipKey) throw new CodecError(`a VIP key has ${SIZES.vipKey} bytes, not ${key.length}`);
  const v = view(key);
  let x = 0;
  for (let i = 0; i < SIZES.vipKey; i += 4) x ^= v.getUint32(i, true);
  return Math.imul(x, 0x9e3779b1) >>> (32 - VIP_SLOT_BITS);
}

/**
 * struct lb_vip_slot { struct lb_vip_key key; struct lb_vip vip; u8 state; u8 reserved[3]; }
 * from the raw key and value bytes (zero for ASK and NONE).
 */
export function encodeVipSlot(state: VipSlotState, key?: Uint8Array, value?: Uint8Array): Uint8Array {
  const slot = new Uint8Array(SIZES.vipSlot);
  if (key) slot.set(key.subarray(0, SIZES.vipKey), 0);
  if (value) slot.set(value.subarray(0, SIZES.vip), SIZES.vipKey);
  slot[SIZES.vipKey + SIZES.vip] = VIP_SLOT_STATE[state];
  return slot;
}

/** The state a lb_vip_index value says (an unknown code reads as ASK, which is what the program does with it). */
export function vipSlotState(slot: Uint8Array): VipSlotState {
  if (slot.length !== SIZES.vipSlot) throw new CodecError(`a VIP index slot has ${SIZES.vipSlot} bytes, not ${slot.length}`);
  const code = slot[SIZES.vipKey + SIZES.vip];
  return code === VIP_SLOT_STATE.none ? "none" : code === VIP_SLOT_STATE.one ? "one" : "ask";
}

// ---------------------------------------------------------------- lb_backends, maglev_table

/** u32 key of an array map (lb_backends, maglev_table, the counters) or value of a table slot. */
export function encodeIndex(index: number): Uint8Array {
  const bytes = new Uint8Array(4);
  view(bytes).setUint32(0, checkU32(index, "index"), true);
  return bytes;
}

export function decodeIndex(bytes: Uint8Array): number {
  if (bytes.length !== 4) throw new CodecError(`an index has 4 bytes, not ${bytes.length}`);
  return view(bytes).getUint32(0, true);
}

export interface BackendRecord {
  address: string;
  /** NAT: the destination port the backend listens on; 0 keeps the VIP's port. */
  port: number;
  /** The next hop's MAC ("02:00:00:00:00:0a"), used when the FIB has no answer; undefined: FIB only. */
  mac?: string;
  /**
   * With `mac`: the next-hop cache. `mac` is the next hop on the program's
   * interface and this its MTU; the program sends packets that fit straight
   * to `mac`, without a per-packet FIB lookup. Undefined: the FIB first.
   */
  mtu?: number;
}

export function macBytes(mac: string): Uint8Array {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new CodecError(`"${mac}" is not a MAC address (six hex pairs separated by ':')`);
  return Uint8Array.from(mac.split(":").map((h) => parseInt(h, 16)));
}

function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/**
 * struct lb_backend { u8 addr[16]; be16 port; u8 family; u8 flags; u8 mac[6]; u16 mtu; }
 * undefined encodes the cleared record (all zero: "no backend").
 */
export function encodeBackend(record: BackendRecord | undefined): Uint8Array {
  const value = new Uint8Array(SIZES.backend);
  if (!record) return value;
  const { bytes, family } = encodeAddress(record.address);
  value.set(bytes, 0);
  view(value).setUint16(16, checkPort(record.port, "backend port"), false);
  value[18] = family;
  if (record.mac !== undefined) {
    value[19] = BACKEND_F_STATIC_MAC;
    value.set(macBytes(record.mac), 20);
    if (record.mtu !== undefined) {
      if (!Number.isInteger(record.mtu) || record.mtu < 68 || record.mtu > 0xffff) throw new CodecError(`next-hop MTU ${record.mtu} is not an integer from 68 to 65535`);
      value[19] |= BACKEND_F_NEXT_HOP;
      view(value).setUint16(26, record.mtu, true);
    }
  } else if (record.mtu !== undefined) {
    throw new CodecError("a next-hop MTU needs the next hop's MAC");
  }
  return value;
}

export function decodeBackend(value: Uint8Array): BackendRecord | undefined {
  if (value.length !== SIZES.backend) throw new CodecError(`a backend record has ${SIZES.backend} bytes, not ${value.length}`);
  if (value[18] === 0) return undefined;
  const record: BackendRecord = { address: decodeAddress(value.subarray(0, 16), value[18]!), port: view(value).getUint16(16, false) };
  if (value[19]! & BACKEND_F_STATIC_MAC) record.mac = formatMac(value.subarray(20, 26));
  if (value[19]! & BACKEND_F_NEXT_HOP) record.mtu = view(value).getUint16(26, true);
  return record;
}

/**
 * The maglev_table writes for `changes` of one VIP table at `tableOffset`:
 * slot → backend index (NO_BACKEND_INDEX where the slot names none). The
 * caller writes new backend records before these and clears removed ones after.
 */
export function tableOperations(
  changes: readonly SlotChange[],
  tableOffset: number,
  indexOf: (backend: string) => number,
  mapPin: string,
): MapOperation[] {
  return changes.map((c) => ({
    op: "update",
    map: mapPin,
    key: encodeIndex(tableOffset + c.slot),
    value: encodeIndex(c.backend === undefined ? NO_BACKEND_INDEX : indexOf(c.backend)),
  }));
}

// ---------------------------------------------------------------- lb_flows, lb_nat

export interface FlowKey {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  protocol: L4Protocol;
}

/** struct lb_flow_key { u8 src[16]; u8 dst[16]; be16 sport; be16 dport; u8 proto; u8 family; u16 reserved; } */
export function encodeFlowKey(flow: FlowKey): Uint8Array {
  const src = encodeAddress(flow.src);
  const dst = encodeAddress(flow.dst);
  if (src.family !== dst.family) throw new CodecError(`flow ${flow.src} -> ${flow.dst} mixes address families`);
  const key = new Uint8Array(SIZES.flowKey);
  key.set(src.bytes, 0);
  key.set(dst.bytes, 16);
  view(key).setUint16(32, checkPort(flow.srcPort, "source port"), false);
  view(key).setUint16(34, checkPort(flow.dstPort, "destination port"), false);
  key[36] = PROTOCOL_NUMBER[flow.protocol];
  key[37] = src.family;
  return key;
}

export function decodeFlowKey(key: Uint8Array): FlowKey {
  if (key.length !== SIZES.flowKey) throw new CodecError(`a flow key has ${SIZES.flowKey} bytes, not ${key.length}`);
  const protocol = (Object.keys(PROTOCOL_NUMBER) as L4Protocol[]).find((p) => PROTOCOL_NUMBER[p] === key[36]);
  if (!protocol) throw new CodecError(`flow key with IP protocol ${key[36]}`);
  const v = view(key);
  return {
    src: decodeAddress(key.subarray(0, 16), key[37]!),
    dst: decodeAddress(key.subarray(16, 32), key[37]!),
    srcPort: v.getUint16(32, false),
    dstPort: v.getUint16(34, false),
    protocol,
  };
}

export interface NatOrigin {
  vipAddress: string;
  vipPort: number;
  vipIndex: number;
}

/** struct lb_nat_origin { u8 vip_addr[16]; be16 vip_port; u16 reserved; u32 vip_index; }; the family is the flow key's. */
export function decodeNatOrigin(value: Uint8Array, family: 4 | 6): NatOrigin {
  if (value.length !== SIZES.natOrigin) throw new CodecError(`a NAT origin has ${SIZES.natOrigin} bytes, not ${value.length}`);
  const v = view(value);
  return { vipAddress: decodeAddress(value.subarray(0, 16), family), vipPort: v.getUint16(16, false), vipIndex: v.getUint32(20, true) };
}

// ---------------------------------------------------------------- lb_config

export interface LbConfig {
  /** Look up replies from backends in lb_nat: on when some VIP is in NAT mode. */
  reverseNat: boolean;
  /** Outer source of IPIP packets to IPv4 backends; undefined: the FIB's choice. */
  tunnelSourceV4?: string;
  /** Outer source of IPIP packets to IPv6 backends; undefined: the FIB's choice. */
  tunnelSourceV6?: string;
}

/** struct lb_config { u32 flags; u8 tunnel_src_v4[4]; u8 tunnel_src_v6[16]; } at key 0. */
export function encodeConfig(config: LbConfig): Uint8Array {
  const value = new Uint8Array(SIZES.config);
  view(value).setUint32(0, config.reverseNat ? CONFIG_F_REVERSE_NAT : 0, true);
  if (config.tunnelSourceV4 !== undefined) {
    const a = encodeAddress(config.tunnelSourceV4);
    if (a.family !== 4) throw new CodecError(`tunnelSourceV4 ${config.tunnelSourceV4} is not an IPv4 address`);
    value.set(a.bytes.subarray(0, 4), 4);
  }
  if (config.tunnelSourceV6 !== undefined) {
    const a = encodeAddress(config.tunnelSourceV6);
    if (a.family !== 6) throw new CodecError(`tunnelSourceV6 ${config.tunnelSourceV6} is not an IPv6 address`);
    value.set(a.bytes, 8);
  }
  return value;
}

export function decodeConfig(value: Uint8Array): LbConfig {
  if (value.length !== SIZES.config) throw new CodecError(`lb_config has ${SIZES.config} bytes, not ${value.length}`);
  const config: LbConfig = { reverseNat: (view(value).getUint32(0, true) & CONFIG_F_REVERSE_NAT) !== 0 };
  if (value.subarray(4, 8).some((b) => b !== 0)) config.tunnelSourceV4 = decodeAddress(value.subarray(4, 8), 4);
  if (value.subarray(8, 24).some((b) => b !== 0)) config.tunnelSourceV6 = decodeAddress(value.subarray(8, 24), 6);
  return config;
}

// ---------------------------------------------------------------- counters

