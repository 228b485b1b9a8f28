/* TC policy: stateless rules and stateful flow tracking on the clsact
 * ingress and egress hooks, IPv4 and IPv6. One object, two programs that
 * share every map: tc_policy_ingress and tc_policy_egress.
 *
 * Verdicts: a packet that passes gets TC_ACT_UNSPEC, not TC_ACT_OK, so the
 * filters after ours on the same hook (a mirror, another tool's policy)
 * still see it; a dropped packet gets TC_ACT_SHOT.
 *
 * What always passes, whatever the rules say:
 * - frames that are not IPv4/IPv6 (ARP above all: without it the host
 *   cannot resolve its neighbours and loses the network);
 * - ICMPv6 neighbour discovery, MLD, inverse ND, SEND and multicast router
 *   discovery (RFC 4890 §4.4.1: filtering them breaks IPv6 on the link);
 * - later fragments (IPv4 offset != 0, IPv6 fragment header offset != 0):
 *   they carry no ports to judge, and the kernel cannot reassemble them
 *   without the first fragment, which was judged (Linux discards
 *   overlapping fragments, so a later fragment cannot rewrite the first's
 *   header).
 * What cannot be parsed (a header cut short after pulling the packet's
 * headers into the linear area, a wrong version or IHL, more than
 * IPV6_EXT_MAX_CHAIN extension headers) gets the direction's default:
 * nothing we cannot judge passes a default-deny policy, and a default-allow
 * one does not start dropping what the kernel would drop anyway.
 *
 * IPv6 extension headers: hop-by-hop, routing, destination options and
 * fragment headers are skipped to reach the upper layer (at most
 * IPV6_EXT_MAX_CHAIN of them); AH, ESP, No Next Header and unknown headers
 * end the walk and are matched as that protocol, with no ports (rules for
 * "any" protocol apply to them). In the datagram an ICMPv6 error quotes,
 * only a fragment header is skipped.
 *
 * Stateful mode (tcpol_config.stateful): a packet of a live flow passes in
 * both directions before any rule is consulted, so established connections
 * survive rule changes. Otherwise the rules decide, and a packet they let
 * through records its flow: on egress this is what lets the replies to the
 * host's own connections in through a default-deny ingress; on ingress it
 * records the services' clients. An ICMP/ICMPv6 error quoting a datagram of
 * a live flow passes too (PMTU discovery, unreachables). A flow expires
 * after its idle timeout, checked when a packet looks it up: an idle entry
 * is gone (replaced by a fresh flow if the rules allow the packet, deleted
 * otherwise), and the LRU reclaims the entries of flows never seen again.
 * No BPF timers: a per-flow timer cost about 400 ns per new flow (allocating
 * and arming it, bench/tc-policy.ts) and needs Linux 5.15 (timer callbacks
 * 5.13), while this object loads from 5.10. A TCP RST removes the flow (the
 * RST itself passes); a FIN shortens its timeout to the transitory one; a
 * SYN on a closing flow is judged by the rules as a new connection.
 *
 * Maps are not pinned by name: the provider pins them per resource with
 * `bpftool prog loadall ... pinmaps <dir>`, and reuses them on upgrade. */

#include <linux/pkt_cls.h>
#include <bpf/bpf_core_read.h>
#include "parsing.h"
#include "tc_policy.h"

/* Enough for Ethernet + 2 VLAN tags + IPv6 + extension headers + an ICMPv6
 * error quoting an IPv6 header with its ports. Only pulled when parsing
 * found the linear area too short and the packet has more bytes. */
#define TCPOL_PULL_LEN 256
/* Ethernet, 2 VLAN tags, IPv6 and 8 extension headers of at most 2 KB each
 * end before 16.5 KB: every transport header offset fits in 15 bits. */
#define TCPOL_L4_OFFSET_MASK 0x7fff

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcpol_config);
} tcpol_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TCPOL_MAX_RULES);
	__type(key, __u32);
	__type(value, struct tcpol_rule);
} tcpol_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* LPM tries refuse anything else */
	__uint(max_entries, TCPOL_L4_MAX_ENTRIES);
	__type(key, struct tcpol_l4_key);
	__type(value, struct tcpol_rule_set);
} tcpol_l4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, TCPOL_ADDR_MAX_ENTRIES);
	__type(key, struct tcpol_v4_prefix);
	__type(value, struct tcpol_rule_set);
} tcpol_src4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, TCPOL_ADDR_MAX_ENTRIES);
	__type(key, struct tcpol_v6_prefix);
	__type(value, struct tcpol_rule_set);
} tcpol_src6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, TCPOL_ADDR_MAX_ENTRIES);
	__type(key, struct tcpol_v4_prefix);
	__type(value, struct tcpol_rule_set);
} tcpol_dst4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, TCPOL_ADDR_MAX_ENTRIES);
	__type(key, struct tcpol_v6_prefix);
	__type(value, struct tcpol_rule_set);
} tcpol_dst6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * TCPOL_PEER4_PARTS);
	__type(key, __u32);
	__type(value, struct tcpol_peer4);
} tcpol_peer4 SEC(".maps");

/* LRU: when full, the least recently used flow makes room, so a burst of
 * new flows can never make the table refuse the host's own connections. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TCPOL_FLOW_MAX_ENTRIES);
	__type(key, struct tcpol_flow_key);
	__type(value, struct tcpol_flow);
} tcpol_flows SEC(".maps");

/* Per-CPU so that counting needs no atomics; user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPOL_STAT_MAX);
	__type(key, __u32);
	__type(value, struct tcpol_counter);
} tcpol_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPOL_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} tcpol_hits SEC(".maps");

/* A parsed packet. Addresses are 16 bytes for both families (IPv4 in the
 * first word, the rest zero), as in the flow key. */
struct tcpol_packet {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport; /* ICMP echo: the identifier, in both ports */
	__be16 dport;
	__u8 family;
	__u8 protocol;
	__u8 tcp_flags;
	__u8 icmp_error; /* 1: the quoted datagram below was parsed */
	/* The datagram an ICMP error quotes, as it was sent. */
	__u32 inner_saddr[4];
	__u32 inner_daddr[4];
	__be16 inner_sport;
	__be16 inner_dport;
	__u8 inner_protocol;
	__u8 pad[3];
};

enum tcpol_parse {
	PARSE_IP = 0,          /* judge it */
	PARSE_NOT_IP = 1,      /* pass */
	PARSE_ALWAYS_PASS = 2, /* later fragment, neighbour discovery: pass */
	PARSE_BAD = 3,         /* cut short or malformed: the direction's default */
};

enum tcpol_verdict {
	VERDICT_NONE = 0, /* no rule matched */
	VERDICT_ALLOW = 1,
	VERDICT_DENY = 2,
};

static __always_inline int icmp_is_error(__u8 type)
{
	/* As the kernel's icmp_is_err(): the messages that quote a datagram. */
	return type == 3 || type == 4 || type == 11 || type == 12;
}

static __always_inline int icmp_is_echo(__u8 type)
{
	return type == 0 || type == 8;
}

static __always_inline int icmpv6_is_error(__u8 type)
{
	return type >= 1 && type <= 4;
}

static __always_inline int icmpv6_is_echo(__u8 type)
{
	return type == 128 || type == 129;
}

/* RFC 4890 §4.4.1 "traffic that must not be dropped" (link-local control):
 * MLD 130-132 and 143, ND 133-137, inverse ND 141-142, SEND 148-149,
 * multicast router discovery 151-153. */
static __always_inline int icmpv6_is_link_control(__u8 type)
{
	return (type >= 130 && type <= 137) || type == 141 || type == 142 ||
	       type == 143 || type == 148 || type == 149 ||
	       (type >= 151 && type <= 153);
}

/* Parses the datagram an ICMP error quotes (RFC 792: its IP header and at
 * least 8 bytes of payload; RFC 4443 for ICMPv6). On success the inner
 * tuple is filled in and icmp_error set; otherwise the error is judged as
 * an ordinary ICMP packet. */
static __always_inline void parse_quoted(struct hdr_cursor *nh, void *data_end,
					 struct tcpol_packet *p)
{
	struct icmphdr_common *icmp;
	struct ipv6hdr *ip6h;
	struct iphdr *iph;
	__u16 frag_offset;
	int proto, type;

	if (p->family == 4) {
		proto = parse_iphdr(nh, data_end, &iph);
		if (proto < 0 || ip_is_later_fragment(iph))
			return;
		p->inner_saddr[0] = iph->saddr;
		p->inner_daddr[0] = iph->daddr;
	} else {
		if (parse_ip6hdr(nh, data_end, &ip6h) < 0)
			return;
		__builtin_memcpy(p->inner_saddr, &ip6h->saddr, 16);
		__builtin_memcpy(p->inner_daddr, &ip6h->daddr, 16);
		proto = ip6h->nexthdr;
		/* The host's own datagrams carry no extension headers but the
		 * fragment header of a large UDP datagram (the usual subject of
		 * a Packet Too Big), and walking a second chain here would
		 * square the verifier's work. */
		if (proto == IPPROTO_FRAGMENT) {
			proto = parse_ip6_fraghdr(nh, data_end, &frag_offset);
			if (proto < 0 || frag_offset)
				return;
		}
	}

	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		if (parse_ports(nh, data_end, &p->inner_sport, &p->inner_dport) < 0)
			return;
	} else if ((proto == IPPROTO_ICMP && p->family == 4) ||
		   (proto == IPPROTO_ICMPV6 && p->family == 6)) {
		type = parse_icmphdr_common(nh, data_end, &icmp);
		if (type < 0)
			return;
		/* Only echo has a flow; an error about an error relates to nothing. */
		if (!(p->family == 4 ? icmp_is_echo(type) : icmpv6_is_echo(type)))
			return;
		p->inner_sport = icmp->id;
		p->inner_dport = icmp->id;
	}
	p->inner_protocol = proto;
	p->icmp_error = 1;
}

static __always_inline int parse_l4(struct hdr_cursor *nh, void *data_end,
				    struct tcpol_packet *p)
{
	struct icmphdr_common *icmp;
	struct tcphdr *th;
	struct udphdr *uh;
	int type;

	switch (p->protocol) {
	case IPPROTO_TCP:
		if (parse_tcphdr(nh, data_end, &th) < 0)
			return PARSE_BAD;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return PARSE_IP;
	case IPPROTO_UDP:
		if (parse_udphdr(nh, data_end, &uh) < 0)
			return PARSE_BAD;
		p->sport = uh->source;
		p->dport = uh->dest;
		return PARSE_IP;
	case IPPROTO_ICMP:
		if (p->family != 4)
			return PARSE_IP;
		type = parse_icmphdr_common(nh, data_end, &icmp);
		if (type < 0)
			return PARSE_BAD;
		if (icmp_is_echo(type)) {
			p->sport = icmp->id;
			p->dport = icmp->id;
		} else if (icmp_is_error(type)) {
			parse_quoted(nh, data_end, p);
		}
		return PARSE_IP;
	case IPPROTO_ICMPV6:
		if (p->family != 6)
			return PARSE_IP;
		type = parse_icmphdr_common(nh, data_end, &icmp);
		if (type < 0)
			return PARSE_BAD;
		if (icmpv6_is_link_control(type))
			return PARSE_ALWAYS_PASS;
		if (icmpv6_is_echo(type)) {
			p->sport = icmp->id;
			p->dport = icmp->id;
		} else if (icmpv6_is_error(type)) {
			parse_quoted(nh, data_end, p);
		}
		return PARSE_IP;
	default:
		return PARSE_IP;
	}
}

/* Parsing is inlined: the two BPF-to-BPF calls it was before cost ~16 ns
 * of a ~110 ns packet of an established flow (bench/dataplane.ts). The
 * verifier then walks every path through parsing (VLAN tags, IPv4 options,
 * IPv6 extension headers) for what follows, and again after
 * bpf_skb_pull_data: that costs load time (2.6 s instead of 0.3 s on this
 * loaded 2-CPU machine), not packet time. Global functions, verified once on
 * their own, would avoid that, but before Linux 5.12 a global function may
 * not take a pointer to the caller's stack, and 5.10 refuses the object. */
static __always_inline int tcpol_parse_l4(struct __sk_buff *skb, __u32 offset, struct tcpol_packet *p)
{
	void *data_end = (void *)(long)skb->data_end;
	void *data = (void *)(long)skb->data;
	struct hdr_cursor nh;

	if (!p)
		return PARSE_BAD;
	/* A no-op for every offset tcpol_parse can produce; it gives the
	 * verifier the bound it needs for the pointer arithmetic below (a
	 * comparison would be made on a copy of the register). */
	offset &= TCPOL_L4_OFFSET_MASK;
	nh.pos = data + offset;
	return parse_l4(&nh, data_end, p);
}

static __always_inline int tcpol_parse(struct __sk_buff *skb, struct tcpol_packet *p)
{
	void *data_end = (void *)(long)skb->data_end;
	void *data = (void *)(long)skb->data;
	struct hdr_cursor nh = { .pos = data };
	struct ipv6hdr *ip6h;
	struct iphdr *iph;
	__u16 frag_offset;
	int family, proto;

	if (!p)
		return PARSE_BAD;
	family = parse_ip_frame(&nh, data_end, &iph, &ip6h);
	if (family < 0)
		return PARSE_BAD;
	if (family == 4) {
		proto = iph->protocol;
		p->family = 4;
		p->saddr[0] = iph->saddr;
		p->daddr[0] = iph->daddr;
		if (ip_is_later_fragment(iph))
			return PARSE_ALWAYS_PASS;
	} else if (family == 6) {
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6h->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6h->daddr, 16);
		proto = parse_ip6_exthdrs(&nh, data_end, ip6h->nexthdr, &frag_offset);
		if (proto < 0)
			return PARSE_BAD;
		if (frag_offset)
			return PARSE_ALWAYS_PASS;
	} else {
		return PARSE_NOT_IP;
	}
	p->protocol = proto;
	return tcpol_parse_l4(skb, nh.pos - data, p);
}

static __always_inline void count(__u32 stat, __u64 bytes)
{
	struct tcpol_counter *c = bpf_map_lookup_elem(&tcpol_stats, &stat);

	if (!c)
		return;
	c->packets++;
	c->bytes += bytes;
}

static __always_inline void count_rule_hit(__u32 rule)
{
	__u64 *hits = bpf_map_lookup_elem(&tcpol_hits, &rule);

	if (hits)
		(*hits)++;
}

/* Index of the lowest set bit of a non-zero word: the population count of
 * the ones below it. BPF has no ctz instruction, and a branchy binary
 * search multiplies the verifier's paths by 64 for every use. */
static __always_inline __u32 lowest_bit(__u64 x)
{
	__u64 v = (x & -x) - 1;

	v = v - ((v >> 1) & 0x5555555555555555ULL);
	v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
	v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (v * 0x0101010101010101ULL) >> 56;
}

/* Whether a rule is in both sets. Checked before the third trie lookup: most
 * packets no rule matches (a port no rule names from a peer no rule names) are
 * decided by two lookups and this, ~20 ns less on a denied packet. */
static __always_inline int any_common(const struct tcpol_rule_set *a, const struct tcpol_rule_set *b)
{
	__u64 any = 0;

	for (int w = 0; w < TCPOL_RULE_WORDS; w++)
		any |= a->bits[w] & b->bits[w];
	return any != 0;
}

/* The verdict of the rules in all three sets. Deny beats allow. */
static __always_inline int rules_verdict(const struct tcpol_config *cfg, const struct tcpol_rule_set *ports,
					 const struct tcpol_rule_set *peer, const struct tcpol_rule_set *host)
{
	__u64 match, deny, deny_bits = 0, allow_bits = 0;
	int w, deny_word = -1, allow_word = -1;

	/* Find the words first and the bits after the loop: the verifier then
	 * walks one path per word, not one per word and bit. */
	for (w = 0; w < TCPOL_RULE_WORDS; w++) {
		match = ports->bits[w] & peer->bits[w] & host->bits[w];
		if (!match)
			continue;
		deny = match & cfg->deny_mask[w];
		if (deny) {
			deny_word = w;
			deny_bits = deny;
			break;
		}
		if (allow_word < 0) {
			allow_word = w;
			allow_bits = match;
		}
	}
	if (deny_word >= 0) {
		count_rule_hit(deny_word * 64 + lowest_bit(deny_bits));
		return VERDICT_DENY;
	}
	if (allow_word >= 0) {
		count_rule_hit(allow_word * 64 + lowest_bit(allow_bits));
		return VERDICT_ALLOW;
	}
	return VERDICT_NONE;
}

/* The stateless rules: three trie lookups (two when the host's own side is
 * skipped: tcpol_config.skip_tries; one fewer for an IPv4 peer in a /16 no
 * rule prefix overlaps: tcpol_peer4) and an AND of three bitmaps (see
 * tc_policy.h). The peer's side (ingress: source) is looked up first: it and
 * the port decide most packets no rule matches. When the host's side is
 * skipped, rules_verdict is inlined a second time with `peer` in its place
 * (ANDing a set twice changes nothing): one copy per path, so the verifier
 * never merges lookups of different maps into one walk of the loop. */
static __always_inline int match_rules(const struct tcpol_config *cfg, __u8 dir,
				       const struct tcpol_packet *p)
{
	struct tcpol_l4_key l4 = { .prefixlen = 32, .direction = dir, .protocol = p->protocol };
	const __u32 *peer_addr = dir == TCPOL_INGRESS ? p->saddr : p->daddr;
	const __u32 *host_addr = dir == TCPOL_INGRESS ? p->daddr : p->saddr;
	int skip_host = cfg->skip_tries & TCPOL_SKIP_HOST(dir);
	struct tcpol_rule_set *ports, *peer, *host;

	if (p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP)
		l4.port = p->dport;
	ports = bpf_map_lookup_elem(&tcpol_l4, &l4);
	if (!ports)
		return VERDICT_NONE;

	if (p->family == 4) {
		struct tcpol_v4_prefix k = { .prefixlen = 32 };

		/* A peer in a /16 no entry of the trie overlaps would find the
		 * /0 entry: when it shares no rule with the port, the answer is
		 * known without the trie. Otherwise the trie is looked up as
		 * always (the same set; one path on, so that the verifier never
		 * merges pointers into two different maps). */
		if (cfg->skip_tries & TCPOL_PEER4_FILTER) {
			__u32 b = bpf_ntohl(peer_addr[0]) >> 16, i = b % TCPOL_PEER4_PART_BUCKETS;
			__u32 part = (dir == TCPOL_INGRESS ? 0 : TCPOL_PEER4_PARTS) + b / TCPOL_PEER4_PART_BUCKETS;
			struct tcpol_peer4 *filter = bpf_map_lookup_elem(&tcpol_peer4, &part);

			if (filter && !((filter->touched[i >> 6] >> (i & 63)) & 1) && !any_common(ports, &filter->any))
				return VERDICT_NONE;
		}
		__builtin_memcpy(k.addr, peer_addr, 4);
		peer = bpf_map_lookup_elem(dir == TCPOL_INGRESS ? (void *)&tcpol_src4 : (void *)&tcpol_dst4, &k);
		if (!peer || !any_common(ports, peer))
			return VERDICT_NONE;
		if (skip_host)
			return rules_verdict(cfg, ports, peer, peer);
		__builtin_memcpy(k.addr, host_addr, 4);
		host = bpf_map_lookup_elem(dir == TCPOL_INGRESS ? (void *)&tcpol_dst4 : (void *)&tcpol_src4, &k);
	} else {
		struct tcpol_v6_prefix k = { .prefixlen = 128 };

		__builtin_memcpy(k.addr, peer_addr, 16);
		peer = bpf_map_lookup_elem(dir == TCPOL_INGRESS ? (void *)&tcpol_src6 : (void *)&tcpol_dst6, &k);
		if (!peer || !any_common(ports, peer))
			return VERDICT_NONE;
		if (skip_host)
			return rules_verdict(cfg, ports, peer, peer);
		__builtin_memcpy(k.addr, host_addr, 16);
		host = bpf_map_lookup_elem(dir == TCPOL_INGRESS ? (void *)&tcpol_dst6 : (void *)&tcpol_src6, &k);
	}
	if (!host)
		return VERDICT_NONE;
	return rules_verdict(cfg, ports, peer, host);
}

/* The management path (DESIGN.md, lockout guard): TCP to or from the
 * failsafe port of this host, optionally only with one peer address. */
static __always_inline int failsafe(const struct tcpol_config *cfg, __u8 dir,
				    const struct tcpol_packet *p)
{
	const __u32 *peer = dir == TCPOL_INGRESS ? p->saddr : p->daddr;
	__be16 local_port = dir == TCPOL_INGRESS ? p->dport : p->sport;
	__u32 want[4];

	if (!cfg->failsafe_port || p->protocol != IPPROTO_TCP || local_port != cfg->failsafe_port)
		return 0;
	if (!cfg->failsafe_family)
		return 1;
	if (cfg->failsafe_family != p->family)
		return 0;
	__builtin_memcpy(want, cfg->failsafe_addr, 16);
	return peer[0] == want[0] && peer[1] == want[1] && peer[2] == want[2] && peer[3] == want[3];
}

static __always_inline __u64 flow_timeout(const struct tcpol_config *cfg, __u8 protocol, __u8 state)
{
	if (protocol != IPPROTO_TCP)
		return cfg->other_ns;
	return state == TCPOL_FLOW_ESTABLISHED ? cfg->tcp_established_ns : cfg->tcp_transitory_ns;
}

/* Now, on CLOCK_MONOTONIC's time base. bpf_ktime_get_ns() reads the clock
 * source: ~30 ns here, a quarter of a packet of a live flow. The coarse
 * clock (Linux 5.11) returns the time of the last tick, behind by at most a
 * tick (1-10 ms), nothing for idle timeouts of seconds. libbpf resolves
 * bpf_core_enum_value_exists() against the running kernel's BTF when the
 * object loads (a CO-RE relocation, no map), and the verifier removes the
 * branch not taken: the same object loads on 5.10, which has no coarse
 * clock. */
static __always_inline __u64 flow_clock(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns))
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/* The flow key of a 5-tuple as it was sent: by this host (`sent_here`: its
 * source is the local end) or to it. */
static __always_inline void flow_key_set(struct tcpol_flow_key *k, int sent_here, const __u32 *saddr,
					 const __u32 *daddr, __be16 sport, __be16 dport, __u8 protocol,
					 __u8 family)
{
	if (sent_here) {
		__builtin_memcpy(k->local, saddr, 16);
		__builtin_memcpy(k->remote, daddr, 16);
		k->local_port = sport;
		k->remote_port = dport;
	} else {
		__builtin_memcpy(k->local, daddr, 16);
		__builtin_memcpy(k->remote, saddr, 16);
		k->local_port = dport;
		k->remote_port = sport;
	}
	k->protocol = protocol;
	k->family = family;
}

static __always_inline void flow_key_of(struct tcpol_flow_key *k, __u8 dir,
					const struct tcpol_packet *p)
{
	flow_key_set(k, dir == TCPOL_EGRESS, p->saddr, p->daddr, p->sport, p->dport, p->protocol, p->family);
}

static __always_inline __u8 seen_flag(__u8 dir)
{
	return dir == TCPOL_EGRESS ? TCPOL_FLOW_SEEN_EGRESS : TCPOL_FLOW_SEEN_INGRESS;
}

enum tcpol_flow_lookup {
	FLOW_NONE = 0,    /* no entry: a new flow if the rules allow it */
	FLOW_LIVE = 1,    /* a live flow, refreshed: pass */
	FLOW_STALE = 2,   /* an entry idle past its timeout, or closed and
			   * reopened by a SYN: gone; replaced if the rules
			   * allow the packet, deleted otherwise */
};

/* Looks the packet's flow up and refreshes it when live. Idle expiry is
 * decided here, on lookup, against the timeout configured now: nothing of
 * ours runs on the host to collect garbage, and BPF timers (one per flow,
 * allocated on creation) cost more than the rest of a new flow and need
 * Linux 5.15. A stale entry stays in the table until its 5-tuple is seen
 * again or the LRU reclaims its memory; read counts only live entries. */
static __always_inline int flow_track(const struct tcpol_config *cfg, __u8 dir,
				      const struct tcpol_packet *p,
				      struct tcpol_flow_key *k, __u64 *clock)
{
	struct tcpol_flow *f = bpf_map_lookup_elem(&tcpol_flows, k);
	__u64 now;
	__u8 flags, state;

	if (!f)
		return FLOW_NONE;
	now = *clock = flow_clock();
	state = f->state;
	/* >=: a timeout of 0 keeps no flow. */
	if (now - f->last_seen_ns >= flow_timeout(cfg, p->protocol, state)) {
		count(TCPOL_STAT_FLOWS_EXPIRED, 0);
		return FLOW_STALE;
	}
	flags = f->flags | seen_flag(dir);
	if (p->protocol == IPPROTO_TCP) {
		if (p->tcp_flags & TCP_FLAG_RST) {
			if (bpf_map_delete_elem(&tcpol_flows, k) == 0)
				count(TCPOL_STAT_FLOWS_RESET, 0);
			return FLOW_LIVE;
		}
		if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
		    state == TCPOL_FLOW_CLOSING)
			return FLOW_STALE; /* a new connection on the same ports */
	}
	if (p->protocol == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_FIN)) {
		flags |= dir == TCPOL_EGRESS ? TCPOL_FLOW_FIN_EGRESS : TCPOL_FLOW_FIN_INGRESS;
		state = TCPOL_FLOW_CLOSING;
	} else if (state == TCPOL_FLOW_NEW &&
		   (flags & (TCPOL_FLOW_SEEN_EGRESS | TCPOL_FLOW_SEEN_INGRESS)) ==
			   (TCPOL_FLOW_SEEN_EGRESS | TCPOL_FLOW_SEEN_INGRESS)) {
		state = TCPOL_FLOW_ESTABLISHED;
	}
	/* Skip the stores when nothing changed: a flow's entry is shared by
	 * every CPU its packets arrive on. */
	if (f->state != state)
		f->state = state;
	if (f->flags != flags)
		f->flags = flags;
	if (f->last_seen_ns != now)
		f->last_seen_ns = now;
	return FLOW_LIVE;
}

/* Records a flow the rules let through. BPF_NOEXIST for a new one: another
 * CPU may have created it since our lookup, and its entry wins. BPF_ANY over
 * a stale one, which it replaces in one step. */
static __always_inline void flow_create(__u8 dir, const struct tcpol_packet *p,
					struct tcpol_flow_key *k, __u64 now, int stale)
{
	struct tcpol_flow fresh = {
		.last_seen_ns = now,
		.state = TCPOL_FLOW_NEW,
		.flags = seen_flag(dir) |
			 (dir == TCPOL_EGRESS ? TCPOL_FLOW_ORIGIN_EGRESS : TCPOL_FLOW_ORIGIN_INGRESS),
	};

	if (p->protocol == IPPROTO_TCP) {
		if (p->tcp_flags & TCP_FLAG_RST) {
			/* nothing left to track */
			if (stale)
				bpf_map_delete_elem(&tcpol_flows, k);
			return;
		}
		if (p->tcp_flags & TCP_FLAG_FIN) {
			fresh.state = TCPOL_FLOW_CLOSING;
			fresh.flags |= dir == TCPOL_EGRESS ? TCPOL_FLOW_FIN_EGRESS : TCPOL_FLOW_FIN_INGRESS;
		}
	}
	if (bpf_map_update_elem(&tcpol_flows, k, &fresh, stale ? BPF_ANY : BPF_NOEXIST) == 0)
		count(TCPOL_STAT_FLOWS_CREATED, 0);
}

/* 1 when an ICMP error quotes a datagram of a live flow. Ingress errors
 * quote what the host sent; egress errors what the host received. */
static __always_inline int flow_related(const struct tcpol_config *cfg, __u8 dir,
					const struct tcpol_packet *p)
{
	struct tcpol_flow_key k = {};
	struct tcpol_flow *f;

	flow_key_set(&k, dir == TCPOL_INGRESS, p->inner_saddr, p->inner_daddr, p->inner_sport, p->inner_dport,
		     p->inner_protocol, p->family);
	f = bpf_map_lookup_elem(&tcpol_flows, &k);
	if (!f)
		return 0;
	return flow_clock() - f->last_seen_ns < flow_timeout(cfg, k.protocol, f->state);
}

static __always_inline int decide(const struct tcpol_config *cfg, __u8 dir,
				  const struct tcpol_packet *p)
{
	struct tcpol_flow_key k = {};
	int verdict, flow = FLOW_NONE;
	/* Read only when needed: the clock costs ~30 ns here, more than a third
	 * of a packet of a live flow, and a denied packet never needs it. */
	__u64 now = 0;

	if (failsafe(cfg, dir, p))
		return VERDICT_ALLOW;
	if (cfg->stateful) {
		flow_key_of(&k, dir, p);
		flow = flow_track(cfg, dir, p, &k, &now);
		if (flow == FLOW_LIVE)
			return VERDICT_ALLOW;
		if (p->icmp_error && flow_related(cfg, dir, p))
			return VERDICT_ALLOW;
	}
	verdict = match_rules(cfg, dir, p);
	if (verdict == VERDICT_NONE) {
		__u8 dflt = dir == TCPOL_EGRESS ? cfg->egress_default : cfg->ingress_default;

		verdict = dflt == TCPOL_DEFAULT_DENY ? VERDICT_DENY : VERDICT_ALLOW;
	}
	if (verdict == VERDICT_ALLOW && cfg->stateful)
		flow_create(dir, p, &k, now ? now : flow_clock(), flow == FLOW_STALE);
	else if (flow == FLOW_STALE)
		bpf_map_delete_elem(&tcpol_flows, &k);
	return verdict;
}

static __always_inline int handle(struct __sk_buff *skb, const __u8 dir)
{
	struct tcpol_packet p = {};
	struct tcpol_config *cfg;
	__u32 zero = 0, linear;
	int parsed, verdict;

	cfg = bpf_map_lookup_elem(&tcpol_cfg, &zero);
	if (!cfg)
		return TC_ACT_UNSPEC;

	parsed = tcpol_parse(skb, &p);
	linear = skb->data_end - skb->data;
	if (parsed == PARSE_BAD && skb->len > linear) {
		/* Headers may sit in paged fragments (GRO, some drivers). */
		bpf_skb_pull_data(skb, skb->len < TCPOL_PULL_LEN ? skb->len : TCPOL_PULL_LEN);
		__builtin_memset(&p, 0, sizeof(p));
		parsed = tcpol_parse(skb, &p);
	}

	switch (parsed) {
	case PARSE_IP:
		verdict = decide(cfg, dir, &p);
		break;
	case PARSE_BAD:
		verdict = (dir == TCPOL_EGRESS ? cfg->egress_default : cfg->ingress_default) == TCPOL_DEFAULT_DENY
				  ? VERDICT_DENY
				  : VERDICT_ALLOW;
		break;
	default:
		verdict = VERDICT_ALLOW;
	}

	if (dir == TCPOL_EGRESS)
		count(verdict == VERDICT_DENY ? TCPOL_STAT_EGRESS_DENIED : TCPOL_STAT_EGRESS_ALLOWED, skb->len);
	else
		count(verdict == VERDICT_DENY ? TCPOL_STAT_INGRESS_DENIED : TCPOL_STAT_INGRESS_ALLOWED, skb->len);
	return verdict == VERDICT_DENY ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

/* Sections named <object>/<direction>, loaded with an explicit `type classifier`:
 * libbpf before 0.6 (Debian 11's bpftool 5.10) pins each program after its
 * section, with '/' as '_', so these pins are the function names that newer
 * libbpf uses, and two programs never share one "tc" or "classifier" pin. */
SEC("tc_policy/ingress")
int tc_policy_ingress(struct __sk_buff *skb)
{
	return handle(skb, TCPOL_INGRESS);
}

SEC("tc_policy/egress")
int tc_policy_egress(struct __sk_buff *skb)
{
	return handle(skb, TCPOL_EGRESS);
}

char LICENSE[] SEC("license") = "GPL";
