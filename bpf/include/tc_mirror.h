/* Map layouts of the TC traffic mirror, shared with user space.
 * provider/trafficMirror/codec.ts mirrors these byte for byte; test/kernel
 * checks the sizes and offsets against the BTF of the compiled object; each
 * size is asserted beside its struct, so a change fails the build first.
 * Addresses and masks are kept as the bytes appear on the wire, so TypeScript
 * writes them unconverted and the program compares them word by word with the
 * packet. Ports and every other number are in host byte order (little endian
 * on every machine this runs on). */
#ifndef BPFLEET_TC_MIRROR_H
#define BPFLEET_TC_MIRROR_H

#include <linux/types.h>

#define MIRROR_MAX_FILTERS 64
/* Two filter sets: user space fills the one the program is not reading (its
 * records and its classifier), then flips mirror_config.active_set. A packet
 * never sees half a filter list. */
#define MIRROR_FILTER_SETS 2
#define MIRROR_FILTER_SLOTS (MIRROR_MAX_FILTERS * MIRROR_FILTER_SETS)

/* Which fields of a filter take part in the match. A filter with no flags
 * matches every packet, IP or not. */
enum mirror_filter_flag {
	MIRROR_F_IPV4 = 1 << 0,	 /* only IPv4 packets (src or dst is an IPv4 prefix) */
	MIRROR_F_IPV6 = 1 << 1,	 /* only IPv6 packets */
	MIRROR_F_PROTO = 1 << 2, /* IPv4 protocol / IPv6 upper-layer header */
	MIRROR_F_SRC = 1 << 3,
	MIRROR_F_DST = 1 << 4,
	MIRROR_F_SPORT = 1 << 5, /* implies TCP, UDP or SCTP, and not a later fragment */
	MIRROR_F_DPORT = 1 << 6,
};

/* 80 bytes. An IPv4 prefix uses word 0 of addr/mask; the rest stay zero.
 * The record of a filter, as the provider reads it back; the program matches
 * with the classifier compiled from these records (below). */
struct mirror_filter {
	__u32 flags;
	__u8 protocol;
	__u8 pad[3];
	__u16 sport_min; /* inclusive range */
	__u16 sport_max;
	__u16 dport_min;
	__u16 dport_max;
	__u32 src_addr[4]; /* network address, wire order */
	__u32 src_mask[4];
	__u32 dst_addr[4];
	__u32 dst_mask[4];
};
_Static_assert(sizeof(struct mirror_filter) == 80, "codec.ts FILTER_SIZE");

/* The classifier: what the program reads per packet, compiled by
 * provider/trafficMirror/codec.ts from the filter records above (which the
 * program never reads; they are what user space reads back). Bit i of every
 * bitmap stands for filter i of the set. A packet costs the same fixed number
 * of array lookups whatever the filter count: each field yields the bitmap of
 * filters it satisfies, the bitmaps are ANDed, and a field no remaining
 * candidate constrains is not looked at. Array lookups are inlined by the
 * verifier into an address computation; no hash or trie is walked. */

/* One per filter set (key: set). */
struct mirror_head {
	__u64 live;	  /* filters in the set */
	__u64 any_packet; /* no condition at all: match non-IP frames too */
	__u64 v4;	  /* can match an IPv4 packet (no IPv6 prefix) */
	__u64 v6;	  /* can match an IPv6 packet (no IPv4 prefix) */
	__u64 proto_any;  /* no protocol condition */
	__u64 ports_any;  /* no port condition: match packets without ports */
	__u64 sport_any;
	__u64 dport_any;
	__u64 src_any;
	__u64 dst_any;
	__u64 proto[256]; /* filters whose protocol is the index */
};
_Static_assert(sizeof(struct mirror_head) == 2128, "codec.ts HEAD_SIZE");

/* A field's value space cut at every filter's range ends: bound[] holds the
 * sorted starts of the intervals after the first (unused slots hold the
 * largest value), bits[j] the filters whose range covers interval j, i.e. the
 * values v with exactly j bounds <= v. Filters without a condition on the
 * field have no bits here (the head's *_any). 64 ranges have at most 128
 * ends, so a lookup is a branch-free binary search of at most 8 steps; depth
 * is how many of the halving steps the bounds in use need (n bounds: the
 * smallest d with n <= 2^d - 1, at most 7), so a field cut by a few filters
 * costs a few steps, the same for every packet. */
#define MIRROR_BOUNDS 128

/* IPv4 addresses and ports, host byte order. Key: set * 4 + enum mirror_range32. */
struct mirror_ranges {
	__u32 bound[MIRROR_BOUNDS];
	__u64 bits[MIRROR_BOUNDS + 1];
	__u32 depth;
	__u32 pad;
};
_Static_assert(sizeof(struct mirror_ranges) == 1552, "codec.ts RANGES_SIZE");

enum mirror_range32 {
	MIRROR_R_SRC4 = 0,
	MIRROR_R_DST4 = 1,
	MIRROR_R_SPORT = 2,
	MIRROR_R_DPORT = 3,
	MIRROR_RANGES_PER_SET = 4,
};

/* IPv6 addresses as two host-order halves, high first. Key: set * 2 + 0
 * (source) or + 1 (destination). */
struct mirror_bound6 {
	__u64 hi;
	__u64 lo;
};
_Static_assert(sizeof(struct mirror_bound6) == 16, "codec.ts RANGES6_SIZE / MIRROR_BOUNDS");

struct mirror_ranges6 {
	struct mirror_bound6 bound[MIRROR_BOUNDS];
	__u64 bits[MIRROR_BOUNDS + 1];
	__u32 depth;
	__u32 pad;
};
_Static_assert(sizeof(struct mirror_ranges6) == 3088, "codec.ts RANGES6_SIZE");

#define MIRROR_RANGES6_PER_SET 2

/* Packets of the resource's own tunnel (the encapsulated copies) are never
 * mirrored, or mirroring egress of the tunnel's underlay would mirror its own
 * copies without end. */
enum mirror_guard_kind {
	MIRROR_GUARD_NONE = 0,
	MIRROR_GUARD_GRE = 1,	/* IP protocol 47 to guard_addr */
	MIRROR_GUARD_VXLAN = 2, /* UDP to guard_addr:guard_port */
};

/* 40 bytes; the single element of mirror_config. */
struct mirror_config {
	__u32 target_ifindex; /* 0: mirror nothing */
	__u32 active_set;     /* 0 or 1: which half of mirror_filters is live */
	__u32 set_len[MIRROR_FILTER_SETS]; /* filters in each set; 0 = mirror every packet */
	__u32 sample_rate;    /* mirror 1 in N matching packets per CPU; 0 and 1 mean all */
	__u8 guard_kind;      /* enum mirror_guard_kind */
	__u8 guard_family;    /* 4 or 6 */
	__u16 guard_port;     /* host byte order */
	__u32 guard_addr[4];  /* wire order; IPv4 in word 0 */
};
_Static_assert(sizeof(struct mirror_config) == 40, "codec.ts CONFIG_SIZE");

struct mirror_counter {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct mirror_counter) == 16, "codec.ts counters");

/* Indexes of the per-CPU stats array. */
enum mirror_stat {
	MIRROR_STAT_MATCHED = 0,      /* matched a filter (before sampling) */
	MIRROR_STAT_MIRRORED = 1,     /* copy handed to the target */
	MIRROR_STAT_CLONE_FAILED = 2, /* bpf_clone_redirect failed; the original still passed */
	MIRROR_STAT_MAX = 3,
};

#endif
