/* Map layouts of the TC policy, shared with user space.
 * provider/tcPolicy/codec.ts mirrors every struct here byte for byte;
 * test/kernel/tcPolicy.test.ts checks sizes and member offsets against the
 * BTF of the compiled object, and each size is asserted beside its struct
 * (a change fails the build before a test runs). Sizes and padding are spelled out so that no
 * compiler decides them: every struct is a multiple of 8 bytes or has no
 * member wider than its alignment, and every hole is a named pad.
 *
 * Byte order: addresses and ports that are compared with packet bytes are in
 * network order (as on the wire); everything only user space reads or that
 * the LPM trie interprets (prefixlen) is in host order.
 *
 * How the stateless rules are matched (why this layout scales):
 *
 * A rule is {direction, protocol, destination port range, source prefix,
 * destination prefix, action}. Each rule owns one bit index (0..1023). Every
 * dimension has its own LPM trie whose entries carry a bitmap of rule indexes:
 *
 *   tcpol_l4    key {direction, protocol, port}: a port range is split into
 *               at most 30 aligned power-of-two blocks, each one prefix;
 *   tcpol_src4/6, tcpol_dst4/6   key {address}: the rule's prefix (a rule
 *               without one has its bit in the /0 entry).
 *
 * The bitmap of an entry P holds every rule having a prefix (block) that
 * contains P. Prefixes that contain one address are nested, so the longest
 * entry matching a packet field carries exactly the rules that match that
 * field (user space computes the bitmaps: provider/tcPolicy/plan.ts). A
 * packet's matching rules are the AND of three bitmaps: 3 trie lookups and
 * 16 AND-ed words, whatever the number of rules (the lookup-and-bit-vector
 * classifier of Lakshman & Stiliadis, SIGCOMM 1998). A linear scan of 1024
 * rules would cost ~1024 compares per packet; a hash per exact tuple cannot
 * express ranges and prefixes together. Deny beats allow: the packet is
 * denied when any matching rule is a deny rule, so rules need no order. */
#ifndef BPFLEET_TC_POLICY_H
#define BPFLEET_TC_POLICY_H

#include <linux/bpf.h>
#include <linux/types.h>

#define TCPOL_MAX_RULES 1024
#define TCPOL_RULE_WORDS (TCPOL_MAX_RULES / 64)
/* 1024 rules x at most 30 port blocks (a range split into aligned blocks),
 * rounded up: the trie never has to refuse an entry of a valid policy. */
#define TCPOL_L4_MAX_ENTRIES 32768
/* One prefix per rule and family, plus the /0 entry. */
#define TCPOL_ADDR_MAX_ENTRIES 2048
/* LRU maps are preallocated: ~120 bytes per entry (~30 MB). */
#define TCPOL_FLOW_MAX_ENTRIES 262144

enum tcpol_direction {
	TCPOL_INGRESS = 0,
	TCPOL_EGRESS = 1,
};

enum tcpol_action {
	TCPOL_ACTION_NONE = 0, /* an unused rule slot */
	TCPOL_ACTION_ALLOW = 1,
	TCPOL_ACTION_DENY = 2,
};

/* What a direction does with a packet that no rule (and no flow) matches.
 * Zero is "allow": a freshly loaded program with empty maps passes
 * everything until the provider has written its configuration. */
enum tcpol_default {
	TCPOL_DEFAULT_ALLOW = 0,
	TCPOL_DEFAULT_DENY = 1,
};

/* tcpol_cfg, an ARRAY of one entry (key 0). 176 bytes. */
struct tcpol_config {
	__u64 tcp_established_ns; /* idle timeout of a TCP flow seen both ways */
	__u64 tcp_transitory_ns;  /* TCP before the reply, and after a FIN */
	__u64 other_ns;           /* UDP, ICMP and everything else */
	__u8 ingress_default;     /* enum tcpol_default */
	__u8 egress_default;
	__u8 stateful;            /* 1: track flows and let them pass */
	__u8 failsafe_family;     /* 0: any source may use the failsafe port; 4 or 6: only failsafe_addr */
	__be16 failsafe_port;     /* TCP port that is never dropped (management SSH); 0: none */
	__u8 skip_tries;          /* TCPOL_SKIP_HOST(direction): see below */
	__u8 pad;
	__u8 failsafe_addr[16];   /* IPv4 in the first 4 bytes, the rest zero */
	__u64 deny_mask[TCPOL_RULE_WORDS]; /* bit i set: rule i is a deny rule */
};
_Static_assert(sizeof(struct tcpol_config) == 176, "codec.ts LAYOUTS: tcpol_config");

/* tcpol_config.skip_tries: bit TCPOL_SKIP_HOST(direction) set when no rule of
 * the direction names the host's own side (ingress: a destination, `to`;
 * egress: a source, `from`). Every rule of the direction is then in that
 * trie's /0 entry, so its lookup cannot remove one, and the program skips it
 * (a trie lookup is ~20 ns; a policy rarely names the host's own addresses).
 * Planning sets a bit only while no rule it would ignore is in the tries
 * (provider/tcPolicy/plan.ts); 0, what older providers write, skips nothing. */
#define TCPOL_SKIP_HOST(direction) (1 << (direction))

/* tcpol_config.skip_tries: tcpol_peer4 holds the IPv4 peer tries' filters
 * (written by planning while this bit is off, and the bit set after them;
 * cleared in a change's first write when the tries change under them). */
#define TCPOL_PEER4_FILTER (1 << 2)

/* tcpol_peer4, an ARRAY of 2 x TCPOL_PEER4_PARTS (key trie * 4 + part;
 * trie 0: tcpol_src4, the ingress peer; 1: tcpol_dst4, the egress peer):
 * which /16s an entry of that trie other than /0 overlaps, one bit each, a
 * quarter of the address space per part (/16 b is in part b >> 14: a value
 * must fit one bpftool batch line, at most 4096 words), and the trie's /0
 * entry (in each part). An IPv4 peer in a /16
 * no entry overlaps matches the /0 entry alone: when `any` shares no rule
 * with the port's set, no rule matches, without the trie lookup (~15 ns;
 * most denied packets come from peers no rule names). All zero (no /0
 * entry) is the empty set, as a missing entry is. */
#define TCPOL_PEER4_PARTS 4
#define TCPOL_PEER4_PART_BUCKETS (65536 / TCPOL_PEER4_PARTS)

/* tcpol_rules, an ARRAY of TCPOL_MAX_RULES: what each rule index means.
 * The data path never reads it; it is how `read` reports the rules as
 * loaded and how planning keeps indexes stable across updates. 44 bytes. */
struct tcpol_rule {
	__u8 action;    /* enum tcpol_action; TCPOL_ACTION_NONE: free slot */
	__u8 direction; /* enum tcpol_direction */
	__u8 protocol;  /* 0 any, 1 icmp (ICMP and ICMPv6), 6 tcp, 17 udp */
	__u8 family;    /* 0 both, 4, 6 */
	__u16 port_lo;  /* host order; 0 and 0: any port */
	__u16 port_hi;
	__u8 src_len;   /* prefix lengths, meaningful with the flags below */
	__u8 dst_len;
	__u8 flags;     /* TCPOL_RULE_HAS_SRC | TCPOL_RULE_HAS_DST */
	__u8 pad;
	__u8 src[16];
	__u8 dst[16];
};
_Static_assert(sizeof(struct tcpol_rule) == 44, "codec.ts LAYOUTS: tcpol_rule");

#define TCPOL_RULE_HAS_SRC 0x1
#define TCPOL_RULE_HAS_DST 0x2

/* tcpol_l4 key. prefixlen counts bits of what follows: 8 match the
 * direction only (a rule for any protocol), 16 one protocol, 17..32 a port
 * block. 8 bytes. */
struct tcpol_l4_key {
	__u32 prefixlen; /* host order, as the LPM trie expects */
	__u8 direction;
	__u8 protocol;
	__be16 port;     /* destination port; 0 for protocols without ports */
};
_Static_assert(sizeof(struct tcpol_l4_key) == 8, "codec.ts LAYOUTS: tcpol_l4_key");

struct tcpol_v4_prefix {
	__u32 prefixlen;
	__u8 addr[4];
};
_Static_assert(sizeof(struct tcpol_v4_prefix) == 8, "codec.ts LAYOUTS: tcpol_v4_prefix");

struct tcpol_v6_prefix {
	__u32 prefixlen;
	__u8 addr[16];
};
_Static_assert(sizeof(struct tcpol_v6_prefix) == 20, "codec.ts LAYOUTS: tcpol_v6_prefix");

/* The value of every rule trie: bit i (word i / 64, bit i % 64) set when
 * rule i matches. 128 bytes. */
struct tcpol_rule_set {
	__u64 bits[TCPOL_RULE_WORDS];
};
_Static_assert(sizeof(struct tcpol_rule_set) == 128, "codec.ts LAYOUTS: tcpol_rule_set");

/* tcpol_peer4's value (see TCPOL_PEER4_FILTER above). */
struct tcpol_peer4 {
	__u64 touched[TCPOL_PEER4_PART_BUCKETS / 64]; /* /16 b, i = b % 16384: (touched[i / 64] >> (i % 64)) & 1 */
	struct tcpol_rule_set any;
};
_Static_assert(sizeof(struct tcpol_peer4) == 2176, "codec.ts LAYOUTS: tcpol_peer4");

/* tcpol_flows key: a flow as seen from this host, so that a packet in
 * either direction builds the same key (egress: local = source; ingress:
 * local = destination). ICMP echo flows carry the identifier in both ports.
 * 40 bytes. */
struct tcpol_flow_key {
	__u8 local[16];  /* IPv4 in the first 4 bytes, the rest zero */
	__u8 remote[16];
	__be16 local_port;
	__be16 remote_port;
	__u8 protocol;
	__u8 family;     /* 4 or 6 */
	__u8 pad[2];
};
_Static_assert(sizeof(struct tcpol_flow_key) == 40, "codec.ts LAYOUTS: tcpol_flow_key");

enum tcpol_flow_state {
	TCPOL_FLOW_NEW = 0,         /* seen in one direction only */
	TCPOL_FLOW_ESTABLISHED = 1, /* seen both ways */
	TCPOL_FLOW_CLOSING = 2,     /* a FIN was seen */
};

#define TCPOL_FLOW_ORIGIN_EGRESS 0x01 /* the host opened it */
#define TCPOL_FLOW_ORIGIN_INGRESS 0x02 /* an allow rule admitted it */
#define TCPOL_FLOW_SEEN_EGRESS 0x04
#define TCPOL_FLOW_SEEN_INGRESS 0x08
#define TCPOL_FLOW_FIN_EGRESS 0x10
#define TCPOL_FLOW_FIN_INGRESS 0x20

/* tcpol_flows value. An entry idle past its timeout is gone: the program
 * treats it as absent when it looks it up (and replaces or deletes it then),
 * read counts only live entries, and the LRU reclaims the memory of the
 * others. 32 bytes: the last 16 held the per-flow BPF timer of versions
 * before lazy expiry. They are kept, never read or written by the program
 * (user space writes zeros), so that the pinned flow table of an older
 * version, whose BTF still declares a bpf_timer there, is reused on upgrade
 * with its flows: libbpf reuses a pinned map only when type, key and value
 * sizes and max_entries agree. */
struct tcpol_flow {
	__u64 last_seen_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u8 state;         /* enum tcpol_flow_state */
	__u8 flags;         /* TCPOL_FLOW_* */
	__u8 pad[6];
	__u8 reserved[16];
};
_Static_assert(sizeof(struct tcpol_flow) == 32, "codec.ts LAYOUTS: tcpol_flow");

struct tcpol_counter {
	__u64 packets; /* for the flow counters: the number of events */
	__u64 bytes;   /* for the flow counters: always 0 */
};
_Static_assert(sizeof(struct tcpol_counter) == 16, "codec.ts LAYOUTS: tcpol_counter");

/* Indexes of tcpol_stats, a per-CPU ARRAY of struct tcpol_counter. */
enum tcpol_stat {
	TCPOL_STAT_INGRESS_ALLOWED = 0,
	TCPOL_STAT_INGRESS_DENIED = 1,
	TCPOL_STAT_EGRESS_ALLOWED = 2,
	TCPOL_STAT_EGRESS_DENIED = 3,
	TCPOL_STAT_FLOWS_CREATED = 4,
	TCPOL_STAT_FLOWS_EXPIRED = 5, /* found idle past the timeout on lookup */
	TCPOL_STAT_FLOWS_RESET = 6,   /* removed by a TCP RST */
	TCPOL_STAT_MAX = 7,
};

/* tcpol_hits, a per-CPU ARRAY of TCPOL_MAX_RULES __u64: packets decided by
 * each rule (the first matching deny rule, else the first matching allow
 * rule). */

#endif
