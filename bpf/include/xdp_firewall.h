/* Map layouts of the XDP firewall, shared with user space.
 * provider/xdpFirewall/codec.ts and index.ts mirror these byte for byte;
 * test/kernel checks the sizes against the BTF of the compiled object, and
 * each size is asserted beside its struct, so a change fails the build first. Keys are
 * in network byte order so that TypeScript can write an address's bytes as
 * they appear on the wire. */
#ifndef BPFLEET_XDP_FIREWALL_H
#define BPFLEET_XDP_FIREWALL_H

#include <linux/types.h>

/* The record maps: one entry per deny entry, as the user wrote it. Exact
 * addresses live in hash maps (read on the hot path too); prefixes in LPM tries
 * (records only: the program reads the index below, never the tries, whose
 * lookups slow down as they fill). Hash maps are not preallocated: a 1M-entry
 * ceiling costs nothing until used. */
#define FW_EXACT_MAX_ENTRIES 1048576
#define FW_PREFIX_MAX_ENTRIES 262144

/* The index, derived from the records by the provider (index.ts). Each family's
 * address space is cut into 2^24 buckets by its top 24 bits (an IPv4 /24; the
 * first 24 bits of an IPv6 address); each bucket has a 2-bit state, packed four
 * to a byte, 256 buckets (one /16) to a block. Direct-indexed: the verifier
 * inlines the array lookup, so a miss costs a few instructions whatever the
 * list's size. 65536 blocks of 64 bytes: 4 MiB a family, preallocated. */
#define FW_INDEX_BLOCKS 65536

enum fw_bucket_state {
	FW_BUCKET_NONE = 0,   /* no entry touches this bucket: pass */
	FW_BUCKET_DENY = 1,   /* a prefix of length <= 24 covers it: drop */
	FW_BUCKET_EXACT = 2,  /* exact addresses only: look in deny_v4/v6_exact */
	FW_BUCKET_LONGER = 3, /* prefixes longer than /24 (and maybe exact
			       * addresses): IPv4 fw_v4_net_slots (fw_v4_hosts
			       * when the slot overflows), IPv6 fw_v6_ways per
			       * length then the exact address */
};

struct fw_index_block {
	__u8 state[64]; /* bucket b: (state[b / 4] >> (2 * (b % 4))) & 3 */
};
_Static_assert(sizeof(struct fw_index_block) == 64, "provider/xdpFirewall: fw_index_block");

/* IPv4 buckets in the LONGER state: every address of the /24 that an entry
 * denies (prefixes /25–/31 and exact addresses), one bit per last byte. Keyed by
 * the /24's network address as on the wire (last byte 0). */
struct fw_v4_hosts {
	__u64 bits[4]; /* host h: (bits[h / 64] >> (h % 64)) & 1 */
};
_Static_assert(sizeof(struct fw_v4_hosts) == 32, "provider/xdpFirewall: fw_v4_hosts");
#define FW_V4_HOSTS_MAX_ENTRIES FW_PREFIX_MAX_ENTRIES

/* The same bitmaps, direct-mapped by /24, so that a hit of a /25–/31 (and any
 * address of a LONGER bucket) costs an inlined array read instead of the hash
 * lookup (~20 ns, a third of the packet). Slot of a /24 t (the address's top
 * 24 bits, host order): (t * FW_V4_SLOT_MULT) >> (32 - FW_V4_NET_SLOT_BITS).
 * Each slot holds the lowest /24 of its slot (with its bitmap), and `overflow`
 * when other /24s share the slot: those are found in fw_v4_hosts, which holds
 * every LONGER /24 and is read only then. 2^16 slots of 40 bytes, 2.5 MiB,
 * preallocated: with 10k LONGER /24s 86% have a slot of their own. Stepwise
 * writes (index.ts, slotOperations): `net` changes
 * only while `valid` is 0 and `overflow` 1, and the bitmap with it; a bitmap
 * rewritten in place (same /24) mixes old and new bytes when read torn, and
 * never loses a bit both hold. */
#define FW_V4_NET_SLOT_BITS 16
#define FW_V4_NET_SLOTS (1 << FW_V4_NET_SLOT_BITS)

struct fw_v4_net_slot {
	__be32 net;      /* the /24 as on the wire, last byte 0 */
	__u8 valid;      /* 1: net and bits are listed */
	__u8 overflow;   /* 1: look in fw_v4_hosts when net is not the one */
	__u8 pad[2];
	__u64 bits[4];   /* as struct fw_v4_hosts */
};
_Static_assert(sizeof(struct fw_v4_net_slot) == 40, "provider/xdpFirewall: fw_v4_net_slot");

/* IPv6 prefixes longer than /24 and shorter than /128, one hash for all their
 * lengths (key as the LPM trie's: length, then the masked address), and which
 * of those lengths exist (reversed, so that the lowest set bit is the longest:
 * length n is bit k = 127 - n of the 128-bit set, bits[k / 64] >> (k % 64)),
 * so that the program tries each present length once, longest first. */
#define FW_V6_LONG_MAX_ENTRIES FW_PREFIX_MAX_ENTRIES
struct fw_v6_lengths {
	__u64 bits[2];
};
_Static_assert(sizeof(struct fw_v6_lengths) == 16, "provider/xdpFirewall: fw_v6_lengths");

/* IPv4 exact addresses in buckets of FW_WAYS ways, so that an exact hit costs
 * one inlined array read (one 64-byte line) instead of a hash lookup (~30 ns
 * here, as much as the rest of the program). Bucket of address a (host order):
 * (a * FW_V4_SLOT_MULT) >> (32 - FW_V4_WAY_BITS). A bucket holds the FW_WAYS
 * lowest listed addresses of its bucket, in ascending order (way i the i-th),
 * and `overflow` when more share it: those are found in deny_v4_exact, which
 * the program reads only then. Read for EXACT buckets (and a LONGER one without
 * its bitmap). 2^17 buckets of 64 bytes, 8 MiB, preallocated (as the direct-
 * mapped 2^20 slots before, where at 1M entries a third shared a slot and took
 * the hash): at 1M exact entries 1.2% of them overflow, at 100k none.
 *
 * A bucket changes in steps that each keep every remaining address enforced,
 * torn or not (index.ts, bucketOperations): `valid[i]` and `overflow` are single
 * bytes; a way's address changes only while its `valid` is 0, and a way holding
 * an address both lists keep is emptied only while `overflow` is 1. */
#define FW_WAYS 12
#define FW_V4_WAY_BITS 17
#define FW_V4_WAY_BUCKETS (1 << FW_V4_WAY_BITS)
#define FW_V4_SLOT_MULT 0x9E3779B1u

struct fw_v4_ways {
	__be32 addr[FW_WAYS]; /* as on the wire, ascending */
	__u8 valid[FW_WAYS];  /* 1: addr[i] is listed */
	__u8 overflow;        /* 1: look in deny_v4_exact when no way holds it */
	__u8 pad[3];
};
_Static_assert(sizeof(struct fw_v4_ways) == 64, "provider/xdpFirewall: fw_v4_ways");

/* IPv6 exact addresses and prefixes longer than /24, in buckets the same way,
 * keyed by (length, masked address): an exact hit and a long-prefix hit (one
 * bucket read per length present) then cost no hash lookup either. Bucket of
 * a key: the four 32-bit words of the masked address (host order, first word
 * first) and the length, folded by h = (h ^ x) * FW_V4_SLOT_MULT from h = 0,
 * top FW_V6_WAY_BITS bits. A bucket holds the FW_WAYS lowest keys (address
 * bytes, then length); an overflowing bucket sends the lookup to fw_v6_long
 * (prefixes) or deny_v6_exact (length 128). 2^17 buckets of 240 bytes, 30 MiB,
 * preallocated (the 2^19 direct-mapped slots were 12 MiB, and at 1M keys half
 * of them shared a slot): at 1M keys 1.2% overflow. The same stepwise writes
 * as fw_v4_ways; a way's tag is one of its key bytes. */
#define FW_V6_WAY_BITS 17
#define FW_V6_WAY_BUCKETS (1 << FW_V6_WAY_BITS)

struct fw_v6_ways {
	__u8 addr[FW_WAYS][16]; /* masked, as on the wire */
	__u8 tag[16];           /* tag[i]: bits 7..14 of way i's key's fold (its
				 * bucket is bits 15..31); 0 past the ways. The
				 * program compares a way's key only where its tag
				 * is the probe's: twelve in two word-wide steps,
				 * since a LONGER bucket probes once per length. */
	__u8 len[FW_WAYS];      /* 25..128 */
	__u8 valid[FW_WAYS];
	__u8 overflow;
	__u8 pad[7];
} __attribute__((aligned(8))); /* as array map values are: the program's word
				* loads of addr and tag are then one load each,
				* not eight byte loads and fourteen shifts/ors */
_Static_assert(sizeof(struct fw_v6_ways) == 240, "provider/xdpFirewall: fw_v6_ways");

struct fw_v4_prefix_key {
	__u32 prefixlen; /* host byte order, as the LPM trie expects */
	__u8 addr[4];
};
_Static_assert(sizeof(struct fw_v4_prefix_key) == 8, "provider/xdpFirewall: fw_v4_prefix_key");

struct fw_v6_prefix_key {
	__u32 prefixlen;
	__u8 addr[16];
};
_Static_assert(sizeof(struct fw_v6_prefix_key) == 20, "provider/xdpFirewall: fw_v6_prefix_key");

struct fw_v6_addr {
	__u8 addr[16];
};
_Static_assert(sizeof(struct fw_v6_addr) == 16, "provider/xdpFirewall: fw_v6_addr");

/* The value of every deny map; reserved for per-entry flags, always 1 today. */
typedef __u8 fw_deny_value;

struct fw_counter {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct fw_counter) == 16, "provider/xdpFirewall: fw_counter");

/* Indexes of the per-CPU stats array. */
enum fw_stat {
	FW_STAT_PASS = 0,
	FW_STAT_DROP = 1,
	FW_STAT_MAX = 2,
};

#endif
