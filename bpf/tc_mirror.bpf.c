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
#define IPV6_EXT_MAX 6

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_config);
} mirror_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MIRROR_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, struct mirror_filter);
} mirror_filters SEC(".maps");

/* Per-CPU so that counting needs no atomics; user space sums the CPUs. The
 * matched counter doubles as the sampling counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MIRROR_STAT_MAX);
	__type(key, __u32);
	__type(value, struct mirror_counter);
} mirror_stats SEC(".maps");

/* What the filters look at, parsed once per packet. Unused address words stay
 * zero, so IPv4 and IPv6 compare the same four words against masks whose
 * unused words are zero too. */
struct packet {
	__u32 src[4];
	__u32 dst[4];
	__u8 family; /* 0: not IP (or not parseable) */
	__u8 proto;
	__u8 has_ports;
	__u8 incomplete; /* a header ran past the linear data */
	__u16 sport;
	__u16 dport;
};

struct port_pair {
	__be16 source;
	__be16 dest;
};

static __always_inline int has_port_pair(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* TCP, UDP and SCTP all start with the 16-bit source and destination ports.
 * Only those four bytes are needed, so a truncated L4 header still matches
 * on ports, as tcpdump's port filters do. */
static __always_inline int parse_port_pair(struct hdr_cursor *nh, void *data_end, struct port_pair **ports)
{
	struct port_pair *pp = nh->pos;

	if ((void *)(pp + 1) > data_end)
		return -1;
	*ports = pp;
	return 0;
}

/* parsing.h stops at the fixed IPv6 header; a filter on TCP/UDP must see past
 * hop-by-hop, routing, destination options, fragment and AH headers (RFC 8200
 * 4.1). Returns the upper-layer protocol, or -1. *later_fragment is set for a
 * fragment other than the first, which carries no L4 header. */
static __always_inline int skip_ipv6_ext(struct hdr_cursor *nh, void *data_end, int nexthdr, int *later_fragment)
{
	int i;

#pragma unroll
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 *hdr = nh->pos;

		if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING && nexthdr != IPPROTO_DSTOPTS &&
		    nexthdr != IPPROTO_FRAGMENT && nexthdr != IPPROTO_AH)
			return nexthdr;
		if ((void *)(hdr + 8) > data_end)
			return -1;
		if (nexthdr == IPPROTO_FRAGMENT) {
			/* offset: the upper 13 bits of bytes 2-3 */
			if (((hdr[2] << 8) | hdr[3]) & 0xfff8)
				*later_fragment = 1;
			nh->pos = hdr + 8;
		} else if (nexthdr == IPPROTO_AH) {
			nh->pos = hdr + (hdr[1] + 2) * 4;
		} else {
			nh->pos = hdr + (hdr[1] + 1) * 8;
		}
		nexthdr = hdr[0];
	}
	return -1;
}

static __always_inline void parse_packet(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hdr_cursor nh = { .pos = data };
	struct ethhdr *eth;
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	struct port_pair *ports;
	int eth_type, proto, later_fragment = 0;

	/* Every early return below on a failed parse marks the packet
	 * incomplete: the caller tells a malformed header from one that
	 * lies beyond the linear data. */
	p->incomplete = 1;
	eth_type = parse_ethhdr(&nh, data_end, &eth);
	if (eth_type == bpf_htons(ETH_P_IP)) {
		proto = parse_iphdr(&nh, data_end, &iph);
		if (proto < 0)
			return;
		p->family = 4;
		p->src[0] = iph->saddr;
		p->dst[0] = iph->daddr;
		later_fragment = (iph->frag_off & bpf_htons(0x1fff)) != 0;
	} else if (eth_type == bpf_htons(ETH_P_IPV6)) {
		proto = parse_ip6hdr(&nh, data_end, &ip6h);
		if (proto < 0)
			return;
		p->family = 6;
		__builtin_memcpy(p->src, &ip6h->saddr, sizeof(p->src));
		__builtin_memcpy(p->dst, &ip6h->daddr, sizeof(p->dst));
		proto = skip_ipv6_ext(&nh, data_end, proto, &later_fragment);
		if (proto < 0) {
			/* Addresses are known, the upper layer is not: only
			 * address filters can match. */
			p->proto = 0xff; /* IPPROTO_RAW's slot; never a filter's protocol here */
			return;
		}
	} else if (eth_type < 0) {
		return;
	}
	p->incomplete = 0;
	if (!p->family)
		return;
	p->proto = proto;
	if (later_fragment || !has_port_pair(proto))
		return;
	if (parse_port_pair(&nh, data_end, &ports) < 0) {
		p->incomplete = 1;
		return;
	}
	p->has_ports = 1;
	p->sport = bpf_ntohs(ports->source);
	p->dport = bpf_ntohs(ports->dest);
}

static __always_inline int in_prefix(const __u32 *addr, const __u32 *net, const __u32 *mask)
{
	return ((addr[0] & mask[0]) == net[0]) & ((addr[1] & mask[1]) == net[1]) &
	       ((addr[2] & mask[2]) == net[2]) & ((addr[3] & mask[3]) == net[3]);
}

static __always_inline int filter_matches(const struct mirror_filter *f, const struct packet *p)
{
	__u32 flags = f->flags;

	if (!flags)
		return 1;
	if (!p->family)
		return 0;
	if ((flags & MIRROR_F_IPV4) && p->family != 4)
		return 0;
	if ((flags & MIRROR_F_IPV6) && p->family != 6)
		return 0;
	if ((flags & MIRROR_F_PROTO) && p->proto != f->protocol)
		return 0;
	if ((flags & MIRROR_F_SRC) && !in_prefix(p->src, f->src_addr, f->src_mask))
		return 0;
	if ((flags & MIRROR_F_DST) && !in_prefix(p->dst, f->dst_addr, f->dst_mask))
		return 0;
	if (flags & (MIRROR_F_SPORT | MIRROR_F_DPORT)) {
		if (!p->has_ports)
			return 0;
		if ((flags & MIRROR_F_SPORT) && (p->sport < f->sport_min || p->sport > f->sport_max))
			return 0;
		if ((flags & MIRROR_F_DPORT) && (p->dport < f->dport_min || p->dport > f->dport_max))
			return 0;
	}
	return 1;
}

/* Filters are ORed; an empty set mirrors every packet. */
static __always_inline int matches_any(const struct mirror_config *cfg, const struct packet *p)
{
	__u32 set = cfg->active_set & 1;
	__u32 len = cfg->set_len[set];
	__u32 i;

	if (len == 0)
		return 1;
	for (i = 0; i < MIRROR_MAX_FILTERS; i++) {
		__u32 key = set * MIRROR_MAX_FILTERS + i;
		const struct mirror_filter *f;

		if (i >= len)
			break;
		f = bpf_map_lookup_elem(&mirror_filters, &key);
		if (!f)
			break;
		if (filter_matches(f, p))
			return 1;
	}
	return 0;
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
