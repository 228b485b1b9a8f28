/* Map layouts of the XDP firewall, shared with user space.
 * provider/xdpFirewall/codec.ts mirrors these byte for byte; test/kernel checks
 * the sizes against the BTF of the compiled object. Keys are in network byte
 * order so that TypeScript can write an address's bytes as they appear on the
 * wire. */
#ifndef BPFLEET_XDP_FIREWALL_H
#define BPFLEET_XDP_FIREWALL_H

#include <linux/types.h>

/* Exact addresses live in hash maps (one lookup, O(1)); prefixes in LPM tries.
 * Hash maps are not preallocated: a 1M-entry ceiling costs nothing until used. */
#define FW_EXACT_MAX_ENTRIES 1048576
#define FW_PREFIX_MAX_ENTRIES 262144

struct fw_v4_prefix_key {
	__u32 prefixlen; /* host byte order, as the LPM trie expects */
	__u8 addr[4];
};

struct fw_v6_prefix_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct fw_v6_addr {
	__u8 addr[16];
};

/* The value of every deny map; reserved for per-entry flags, always 1 today. */
typedef __u8 fw_deny_value;

struct fw_counter {
	__u64 packets;
	__u64 bytes;
};

/* Indexes of the per-CPU stats array. */
enum fw_stat {
	FW_STAT_PASS = 0,
	FW_STAT_DROP = 1,
	FW_STAT_MAX = 2,
};

#endif
