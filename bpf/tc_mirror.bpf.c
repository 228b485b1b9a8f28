/* TC traffic mirror: a copy of every packet that matches one of up to 64
 * filters (protocol, source/destination prefix, source/destination port range;
 * IPv4 and IPv6) is sent out of a target interface with bpf_clone_redirect,
 * optionally 1 in N. The target is a local interface or a tunnel device
 * (gretap, vxlan) towards a collector.
 *
 * The original packet is never changed, and the verdict is always
 * TC_ACT_UNSPEC, not TC_ACT_OK. In direct-action mode TC_ACT_OK ends
 * classification: filters at a later priority on the same hook (a policy
 * program, another mirror) would silently stop running while the mirror is
 * attached. TC_ACT_UNSPEC hands the packet on to the next filter, and when
 * there is none, clsact lets it pass, exactly as if the mirror were absent
 * (TCX calls the same value TCX_NEXT).
 *
 * XDP cannot do this: bpf_clone_redirect is a TC helper (DESIGN.md), and an
 * XDP program cannot copy a packet.
 *
 * No snap length: bpf_clone_redirect copies the whole frame and no helper
 * truncates only the copy; bpf_skb_change_tail would truncate the original.
 *
 * Maps are not pinned by name; the provider pins them per resource with
 * `bpftool prog load ... pinmaps <dir>` (DESIGN.md, "Pins"). */
#include <linux/pkt_cls.h>
#include "parsing.h"
#include "tc_mirror.h"

/* Linear bytes the parser may need: Ethernet, two VLAN tags, IPv6, a few
 * extension headers and the port pair. */
#define MIRROR_PARSE_LEN 128

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_config);
} mirror_config SEC(".maps");

/* The filter records, for user space to read back; never read here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MIRROR_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, struct mirror_filter);
} mirror_filters SEC(".maps");

/* The classifier compiled from those records, per set (tc_mirror.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MIRROR_FILTER_SETS);
	__type(key, __u32);
	__type(value, struct mirror_head);
} mirror_heads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MIRROR_FILTER_SETS * MIRROR_RANGES_PER_SET);
	__type(key, __u32);
	__type(value, struct mirror_ranges);
} mirror_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MIRROR_FILTER_SETS * MIRROR_RANGES6_PER_SET);
	__type(key, __u32);
	__type(value, struct mirror_ranges6);
} mirror_ranges6 SEC(".maps");

/* Per-CPU so that counting needs no atomics; user space sums the CPUs. The
 * matched counter doubles as the sampling counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MIRROR_STAT_MAX);
	__type(key, __u32);
	__type(value, struct mirror_counter);
} mirror_stats SEC(".maps");

/* What the filters look at, parsed once per packet. Addresses stay in wire
 * order (the tunnel guard compares them so); unused words stay zero. */
struct packet {
	__u32 src[4];
	__u32 dst[4];
	__u8 family; /* 0: not IP (or not parseable) */
	__u8 proto;
	__u8 proto_known; /* 0: IPv6 whose extension headers could not be walked */
	__u8 has_ports;
	__u8 incomplete; /* a header ran past the linear data */
	__u16 sport;
	__u16 dport;
};

static __always_inline int has_port_pair(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

static __always_inline void parse_packet(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hdr_cursor nh = { .pos = data };
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	__be16 sport, dport;
	__u16 frag_offset;
	int family, proto, later_fragment = 0;

	/* Every early return below on a failed parse marks the packet
	 * incomplete: the caller tells a malformed header from one that
	 * lies beyond the linear data. */
	p->incomplete = 1;
	family = parse_ip_frame(&nh, data_end, &iph, &ip6h);
	if (family == 4) {
		proto = iph->protocol;
		p->family = 4;
		p->src[0] = iph->saddr;
		p->dst[0] = iph->daddr;
		later_fragment = ip_is_later_fragment(iph);
	} else if (family == 6) {
		p->family = 6;
		__builtin_memcpy(p->src, &ip6h->saddr, sizeof(p->src));
		__builtin_memcpy(p->dst, &ip6h->daddr, sizeof(p->dst));
		/* hop-by-hop, routing, destination options, fragment and AH
		 * headers stand between a filter on TCP/UDP and its ports. */
		proto = parse_ip6_exthdrs_walk(&nh, data_end, ip6h->nexthdr, &frag_offset, 1);
		if (proto < 0)
			/* Addresses are known, the upper layer is not: only
			 * address filters can match. */
			return;
		later_fragment = frag_offset != 0;
	} else if (family < 0) {
		return;
	}
	p->incomplete = 0;
	if (!p->family)
		return;
	p->proto = proto;
	p->proto_known = 1;
	if (later_fragment || !has_port_pair(proto))
		return;
	/* Only the four port bytes are needed, so a truncated L4 header still
	 * matches on ports, as tcpdump's port filters do. */
	if (parse_ports(&nh, data_end, &sport, &dport) < 0) {
		p->incomplete = 1;
		return;
	}
	p->has_ports = 1;
	p->sport = bpf_ntohs(sport);
	p->dport = bpf_ntohs(dport);
}

/* 1 when bound <= v, without a branch: both are below 2^32, so the 64-bit
 * difference bound - v - 1 is negative exactly then. A branch per step would
 * cost a misprediction on the CPU and double the verifier's paths. */
#define LE32(bound, v) le32((bound), (v))

/* The step bit is hidden from clang (barrier_var, no instruction): knowing it
 * is 0 or 1, clang turns the search's `i += bit << k` into an OR, as the bits
 * do not overlap, and verifiers before 6.12 keep no bounds through an OR (nor
 * XOR or a shift by a register; only ADD, SUB and AND with a register), so
 * 5.10 and 6.1 refused the next index into bound[] as unbounded. Through ADD
 * they see i stay below MIRROR_BOUNDS. */
static __always_inline __u64 le32(__u64 bound, __u64 v)
{
	__u64 le = (bound - v - 1) >> 63;

	barrier_var(le);
	return le;
}

/* The number of bounds <= v (0..MIRROR_BOUNDS): the interval v falls in.
 * Only the depth halving steps the bounds in use need are taken (the rest
 * of bound[] holds the largest value). The last step counts bound[127],
 * which is <= v only when all are: with fewer bounds, only for the largest
 * value, whose interval's bits the padding of bits[] repeats. */
static __always_inline __u32 rank32(const struct mirror_ranges *r, __u32 v)
{
	const __u32 *bound = r->bound;
	__u64 i = 0;

	switch (r->depth) {
	default:
		i = LE32(bound[63], v) << 6;
		/* fallthrough */
	case 6:
		i += LE32(bound[i + 31], v) << 5;
		/* fallthrough */
	case 5:
		i += LE32(bound[i + 15], v) << 4;
		/* fallthrough */
	case 4:
		i += LE32(bound[i + 7], v) << 3;
		/* fallthrough */
	case 3:
		i += LE32(bound[i + 3], v) << 2;
		/* fallthrough */
	case 2:
		i += LE32(bound[i + 1], v) << 1;
		/* fallthrough */
	case 1:
		i += LE32(bound[i], v);
		/* fallthrough */
	case 0:
		break;
	}
	return i + LE32(bound[MIRROR_BOUNDS - 1], v);
}

/* Hacker's Delight 2-12: 1 when a < b, unsigned, without a branch. */
static __always_inline __u64 lt64(__u64 a, __u64 b)
{
	return ((~a & b) | ((~a | b) & (a - b))) >> 63;
}

static __always_inline __u64 le128(const struct mirror_bound6 *b, __u64 hi, __u64 lo)
{
	__u64 diff = b->hi ^ hi;
	__u64 same_hi = ((diff | -diff) >> 63) ^ 1;
	__u64 le = lt64(b->hi, hi) | (same_hi & (lt64(lo, b->lo) ^ 1));

	/* 0 or 1, but through an OR, which verifiers before 6.12 see as
	 * unbounded (le32): the AND bounds it for them. The first barrier
	 * keeps clang from dropping the AND as redundant, the second from
	 * turning rank128's ADDs into ORs. */
	barrier_var(le);
	le &= 1;
	barrier_var(le);
	return le;
}

static __always_inline __u32 rank128(const struct mirror_ranges6 *r, __u64 hi, __u64 lo)
{
	const struct mirror_bound6 *bound = r->bound;
	__u64 i = 0;

	switch (r->depth) {
	default:
		i = le128(&bound[63], hi, lo) << 6;
		/* fallthrough */
	case 6:
		i += le128(&bound[i + 31], hi, lo) << 5;
		/* fallthrough */
	case 5:
		i += le128(&bound[i + 15], hi, lo) << 4;
		/* fallthrough */
	case 4:
		i += le128(&bound[i + 7], hi, lo) << 3;
		/* fallthrough */
	case 3:
		i += le128(&bound[i + 3], hi, lo) << 2;
		/* fallthrough */
	case 2:
		i += le128(&bound[i + 1], hi, lo) << 1;
		/* fallthrough */
	case 1:
		i += le128(&bound[i], hi, lo);
		/* fallthrough */
	case 0:
		break;
	}
	return i + le128(&bound[MIRROR_BOUNDS - 1], hi, lo);
}

static __always_inline __u64 range_bits(__u32 set, __u32 field, __u32 v)
{
	__u32 key = set * MIRROR_RANGES_PER_SET + field;
	const struct mirror_ranges *r = bpf_map_lookup_elem(&mirror_ranges, &key);

	return r ? r->bits[rank32(r, v)] : 0;
}

static __always_inline __u64 range6_bits(__u32 set, __u32 field, const __u32 *addr)
{
	__u32 key = set * MIRROR_RANGES6_PER_SET + field;
	const struct mirror_ranges6 *r = bpf_map_lookup_elem(&mirror_ranges6, &key);
	__u64 hi = ((__u64)bpf_ntohl(addr[0]) << 32) | bpf_ntohl(addr[1]);
	__u64 lo = ((__u64)bpf_ntohl(addr[2]) << 32) | bpf_ntohl(addr[3]);

	return r ? r->bits[rank128(r, hi, lo)] : 0;
}

/* The filters an address satisfies, of those constraining it (field 0:
 * source, 1: destination, in both enums). */
static __always_inline __u64 addr_bits(__u32 set, __u32 field, const struct packet *p, const __u32 *addr)
{
	if (p->family == 4)
		return range_bits(set, field, bpf_ntohl(addr[0]));
	return range6_bits(set, field, addr);
}

/* Filters are ORed; an empty set mirrors every packet. Each step keeps the
 * candidates m that the field lets through; a field none of them constrains
 * is skipped, and once m is empty every later step is. */
static __always_inline int matches_any(const struct mirror_config *cfg, const struct packet *p)
{
	__u32 set = cfg->active_set & 1;
	const struct mirror_head *h;
	__u64 m;

	if (cfg->set_len[set] == 0)
		return 1;
	h = bpf_map_lookup_elem(&mirror_heads, &set);
	if (!h)
		return 0;
	m = h->live;
	if (!p->family)
		return (m & h->any_packet) != 0;
	m &= p->family == 4 ? h->v4 : h->v6;
	if (m & ~h->proto_any)
		m &= h->proto_any | (p->proto_known ? h->proto[p->proto] : 0);
	if (m & ~h->ports_any) {
		if (!p->has_ports) {
			m &= h->ports_any;
		} else {
			if (m & ~h->dport_any)
				m &= h->dport_any | range_bits(set, MIRROR_R_DPORT, p->dport);
			if (m & ~h->sport_any)
				m &= h->sport_any | range_bits(set, MIRROR_R_SPORT, p->sport);
		}
	}
	if (m & ~h->src_any)
		m &= h->src_any | addr_bits(set, MIRROR_R_SRC4, p, p->src);
	if (m & ~h->dst_any)
		m &= h->dst_any | addr_bits(set, MIRROR_R_DST4, p, p->dst);
	return m != 0;
}

/* The tunnel's own encapsulated copies. IPv4 fragments of a VXLAN datagram
 * other than the first carry no ports, so any UDP fragment to the collector
 * counts as ours. */
static __always_inline int own_tunnel_traffic(const struct mirror_config *cfg, const struct packet *p)
{
	if (cfg->guard_kind == MIRROR_GUARD_NONE || p->family != cfg->guard_family)
		return 0;
	if (p->dst[0] != cfg->guard_addr[0] || p->dst[1] != cfg->guard_addr[1] ||
	    p->dst[2] != cfg->guard_addr[2] || p->dst[3] != cfg->guard_addr[3])
		return 0;
	if (cfg->guard_kind == MIRROR_GUARD_GRE)
		return p->proto == IPPROTO_GRE;
	return p->proto == IPPROTO_UDP && (!p->has_ports || p->dport == cfg->guard_port);
}

static __always_inline struct mirror_counter *count(__u32 stat, __u64 bytes)
{
	struct mirror_counter *c = bpf_map_lookup_elem(&mirror_stats, &stat);

	if (!c)
		return 0;
	c->packets++;
	c->bytes += bytes;
	return c;
}

/* Headers normally sit in the linear area at TC. When one does not (some
 * drivers' header split, a GSO packet whose linear part is shorter than its
 * headers), make the first bytes linear and parse again. That can reallocate
 * the skb's head but never changes a byte of the packet; it is not done up
 * front because pulling unshares a cloned skb (TCP keeps a clone of every
 * segment it sends), which would copy the head of every packet. */
static __always_inline void parse(struct __sk_buff *skb, struct packet *p)
{
	__u32 linear, want;

	parse_packet(skb, p);
	if (!p->incomplete)
		return;
	linear = skb->data_end - skb->data;
	want = skb->len < MIRROR_PARSE_LEN ? skb->len : MIRROR_PARSE_LEN;
	if (linear >= want || bpf_skb_pull_data(skb, want))
		return;
	__builtin_memset(p, 0, sizeof(*p));
	parse_packet(skb, p);
}

/* "classifier", not "tc": the only name for a TC program that every libbpf
 * knows, Debian 11's bpftool 5.10 included. */
SEC("classifier")
int tc_mirror(struct __sk_buff *skb)
{
	const struct mirror_config *cfg;
	struct mirror_counter *matched;
	struct packet p = {};
	__u32 zero = 0, len = skb->len;
	int err;

	cfg = bpf_map_lookup_elem(&mirror_config, &zero);
	if (!cfg || !cfg->target_ifindex)
		return TC_ACT_UNSPEC;

	parse(skb, &p);
	if (own_tunnel_traffic(cfg, &p) || !matches_any(cfg, &p))
		return TC_ACT_UNSPEC;

	matched = count(MIRROR_STAT_MATCHED, len);
	if (cfg->sample_rate > 1 && (!matched || matched->packets % cfg->sample_rate))
		return TC_ACT_UNSPEC;

	/* 0: to the target's egress, as a capture port or tunnel expects. A
	 * failing copy is counted; the original goes on regardless. */
	err = bpf_clone_redirect(skb, cfg->target_ifindex, 0);
	count(err ? MIRROR_STAT_CLONE_FAILED : MIRROR_STAT_MIRRORED, len);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
