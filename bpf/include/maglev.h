/* Map layouts of the Maglev load balancer (bpf/xdp_maglev.bpf.c), shared with
 * user space. provider/maglev/codec.ts mirrors these byte for byte and
 * test/kernel/maglev.test.ts checks sizes and offsets against the BTF of the
 * compiled object; each size is also asserted beside its struct, so a change
 * that would break the codec fails the build. Every struct spells out its padding as `reserved` fields
 * (always zero) so that no byte of a key is left to the compiler: a hash-map
 * key with an uninitialised hole never matches.
 *
 * Addresses and ports are in network byte order (as on the wire); indexes,
 * sizes and counters in host byte order (little-endian on every host we run).
 * An IPv4 address occupies addr[0..3], the other 12 bytes are zero.
 *
 * Map names stay within 15 characters: the kernel keeps only that many
 * (BPF_OBJ_NAME_LEN), and `bpftool map show` would report another name than
 * the pin. */
#ifndef BPFLEET_MAGLEV_H
#define BPFLEET_MAGLEV_H

#include <linux/types.h>

#define LB_MAX_VIPS 256
#define LB_MAX_BACKENDS 4096
/* Slots of all Maglev tables of one load balancer: 16 tables of 65537, or
 * one of up to 1048589 (the largest prime below). 8 MiB: array values are
 * kept 8-byte aligned. */
#define LB_TABLE_CAPACITY (16 * 65537)
/* LRU maps are preallocated: 262144 entries of 40-byte keys cost ~30 MiB each. */
#define LB_FLOW_MAX_ENTRIES 262144
#define LB_NAT_MAX_ENTRIES 262144

#define LB_FAMILY_V4 4
#define LB_FAMILY_V6 6

/* What a VIP does with the packets it balances. */
enum lb_mode {
	/* Rewrite the Ethernet addresses only; the VIP stays the destination
	 * (backends hold it on a loopback/dummy and answer the client directly). */
	LB_MODE_DSR = 1,
	/* Rewrite destination address and port to the backend's; replies come
	 * back through the load balancer and are translated back (lb_nat). */
	LB_MODE_NAT = 2,
	/* Encapsulate in an outer IPv4 or IPv6 header to the backend (IP-in-IP,
	 * IPv6-in-IPv6, IPv4-in-IPv6, IPv6-in-IPv4); the VIP stays the inner
	 * destination. For backends on other subnets. */
	LB_MODE_IPIP = 3,
};

/* lb_vip.flags */
/* Pin flows in lb_flows: a flow keeps its backend across table changes for
 * as long as the backend exists (Katran's LRU connection table). */
#define LB_VIP_F_FLOW_TABLE 0x01

/* lb_backend.flags */
/* `mac` may be used when the FIB has no answer (forwarding disabled on the
 * interface, or no neighbour entry): the frame then leaves by XDP_TX. */
#define LB_BACKEND_F_STATIC_MAC 0x01
/* The next-hop cache: `mac` is the backend's next hop on the interface the
 * program is attached to, resolved by the provider when it applied (or given
 * by the user), and `mtu` that interface's MTU. A packet whose IP datagram
 * (after encapsulation) fits `mtu` is sent to `mac` by XDP_TX without asking
 * the FIB; any other packet, or a backend without this flag (a cache miss:
 * reached through another interface, or nothing resolved), takes the
 * per-packet bpf_fib_lookup. The provider re-resolves on every apply. */
#define LB_BACKEND_F_NEXT_HOP 0x02

/* lb_config.flags */
/* Some VIP is in NAT mode: look up every non-VIP TCP/UDP packet in lb_nat
 * (replies from backends). Off, the non-VIP path costs no lookup. */
#define LB_CONFIG_F_REVERSE_NAT 0x01

/* Backend index 0 is never given to a backend and lb_backends[0] is never
 * written: a slot holding 0 names no backend (a VIP without backends), and so
 * does a slot never written, whatever the table region held before. */
#define LB_NO_BACKEND 0

/* lb_vips key: where clients send. */
struct lb_vip_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* LB_FAMILY_V4 or LB_FAMILY_V6 */
};
_Static_assert(sizeof(struct lb_vip_key) == 20, "provider/maglev/codec.ts: lb_vip_key");

/* lb_vips value. The VIP's table is
 * maglev_table[table_offset .. table_offset + table_size - 1]. */
struct lb_vip {
	__u32 vip_index;    /* index into lb_vip_ctr, < LB_MAX_VIPS */
	__u32 table_offset;
	__u32 table_size;   /* M, prime */
	__u8 mode;          /* enum lb_mode */
	__u8 flags;         /* LB_VIP_F_* */
	__u16 reserved;
};
_Static_assert(sizeof(struct lb_vip) == 16, "provider/maglev/codec.ts: lb_vip");

/* lb_vip_index: a direct-mapped front of lb_vips, so that most packets find
 * their VIP (or learn they have none) with one array lookup, which the
 * verifier inlines, instead of a hash-map lookup, which is a call into the
 * kernel that calls on to compare keys (with retpoline and return-thunk
 * mitigations on, calls are dear: a lb_vips hit measured ~30 ns of a ~100 ns
 * VIP packet, the slot a few). A VIP key's slot is
 * lb_vip_slot_of() (maglev_hash.h). lb_vips stays the authority; a slot says
 * what lb_vips holds for the keys that map to it:
 *   ASK (0, the array's initial state): consult lb_vips (several VIPs map
 *     here, or the provider has not written the slot: a new map is all ASK,
 *     so an empty index behaves exactly as lb_vips alone);
 *   NONE: no VIP maps here: the packet is not a VIP's;
 *   ONE: exactly one VIP maps here, `key`, with the value `vip` it has in
 *     lb_vips: a packet with that key is the VIP's, any other is no VIP's.
 * The provider changes a slot only through ASK (provider/maglev/plan.ts):
 * before lb_vips changes, every slot about to change becomes ASK by a write
 * that changes only `state`; after, it gets its new bytes while still ASK,
 * and then its new state, again changing only `state`. A reader of a torn
 * write thus never sees ONE beside half-written bytes, and no prefix of a
 * batch makes the index disagree with lb_vips. */
#define LB_VIP_SLOT_BITS 10
#define LB_VIP_SLOTS (1 << LB_VIP_SLOT_BITS)

enum lb_vip_slot_state {
	LB_VIP_SLOT_ASK = 0,
	LB_VIP_SLOT_NONE = 1,
	LB_VIP_SLOT_ONE = 2,
};

struct lb_vip_slot {
	struct lb_vip_key key; /* ONE: the VIP; otherwise zero */
	struct lb_vip vip;     /* ONE: its lb_vips value; otherwise zero */
	__u8 state;            /* enum lb_vip_slot_state */
	__u8 reserved[3];
};
_Static_assert(sizeof(struct lb_vip_slot) == 40, "provider/maglev/codec.ts: lb_vip_slot");

/* lb_backends value, indexed by backend index (1 and up). A record with family 0 names
 * no backend: the array's "deleted" state, and what a slot pointing at a
 * removed backend finds (the packet is dropped and counted, never sent to a
 * stale address). */
struct lb_backend {
	__u8 addr[16];
	__be16 port;   /* NAT: the new destination port; 0 keeps the VIP's port */
	__u8 family;   /* LB_FAMILY_V4, LB_FAMILY_V6, or 0: no backend */
	__u8 flags;    /* LB_BACKEND_F_* */
	__u8 mac[6];   /* next-hop MAC resolved by the provider */
	__u16 mtu;     /* LB_BACKEND_F_NEXT_HOP: the largest IP datagram sent without the FIB */
};
_Static_assert(sizeof(struct lb_backend) == 28, "provider/maglev/codec.ts: lb_backend");

/* A flow as the program sees it: the key of lb_flows (client to VIP), of
 * lb_nat (backend to client, as replies arrive), and the input of the Maglev
 * hash (jhash2 over its ten 32-bit words). */
struct lb_flow_key {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u16 reserved;
};
_Static_assert(sizeof(struct lb_flow_key) == 40, "provider/maglev/codec.ts: lb_flow_key");

/* lb_nat value: what a backend's reply must look like to the client. */
struct lb_nat_origin {
	__u8 vip_addr[16];
	__be16 vip_port;
	__u16 reserved;
	__u32 vip_index;
};
_Static_assert(sizeof(struct lb_nat_origin) == 24, "provider/maglev/codec.ts: lb_nat_origin");

/* lb_config[0]. A tunnel source of all zeroes means "the address the FIB
 * picks for the backend" (BPF_FIB_LOOKUP_SRC). */
struct lb_config {
	__u32 flags;            /* LB_CONFIG_F_* */
	__u8 tunnel_src_v4[4];
	__u8 tunnel_src_v6[16];
};
_Static_assert(sizeof(struct lb_config) == 24, "provider/maglev/codec.ts: lb_config");

struct lb_counter {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct lb_counter) == 16, "provider/maglev/codec.ts: lb_counter");

/* Indexes of lb_stats (per-CPU), each a struct lb_counter. */
enum lb_stat {
	LB_STAT_NOT_VIP = 0,     /* passed untouched */
	LB_STAT_NO_BACKEND = 1,  /* VIP hit, but the slot or record names no backend: dropped */
	LB_STAT_TX = 2,          /* sent back out of the ingress interface */
	LB_STAT_REDIRECT = 3,    /* sent out of another interface */
	LB_STAT_STACK = 4,       /* rewritten and handed to the kernel (NAT, neighbour unresolved) */
	LB_STAT_FIB_DROP = 5,    /* no route or MAC to the destination: dropped */
	LB_STAT_STATIC_MAC = 6,  /* sent to the backend's MAC from its record: the next-hop cache, or the FIB had no answer */
	LB_STAT_REVERSE_NAT = 7, /* replies from backends translated back to the VIP */
	LB_STAT_FLOW_HIT = 8,    /* backend taken from lb_flows */
	LB_STAT_ENCAP_FAIL = 9,  /* IPIP: cannot encapsulate (VLAN tag, headroom, no source): dropped */
	LB_STAT_MAX = 10,
};

#endif
