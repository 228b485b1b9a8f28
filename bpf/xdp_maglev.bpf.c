/* XDP L4 load balancer with Maglev hashing.
 *
 * Only TCP/UDP traffic to a configured VIP (address, port, protocol: lb_vips)
 * is balanced; everything else passes untouched, except, when some VIP is in
 * NAT mode, replies from backends, which are translated back to the VIP.
 *
 *   parse -> lb_vips -> [lb_flows] -> jhash2(5-tuple) % M -> maglev_table
 *         -> lb_backends -> DSR | NAT | IPIP -> FIB -> XDP_TX | redirect
 *
 * The Maglev table is computed in user space (provider/maglev/table.ts) and
 * written slot by slot; a slot holds a backend index. User space writes a
 * backend's record before any slot names it and clears the record (family 0)
 * only after no slot names it, so every single write leaves a table that
 * balances; a slot that still finds a cleared record drops the packet and
 * counts it (LB_STAT_NO_BACKEND) rather than send it anywhere stale.
 *
 * Egress towards a backend: first the next-hop cache in the backend's record
 * (LB_BACKEND_F_NEXT_HOP: the MAC the provider resolved on this interface
 * when it applied, and the interface's MTU). A packet that fits leaves by
 * XDP_TX to that MAC, our MAC taken from the frame's destination, with no
 * per-packet FIB walk; a neighbour that changes later is picked up by the
 * next apply, which resolves every next hop again.
 *
 * The fallback, for a backend without a cached next hop (reached through
 * another interface, or the provider resolved none), a packet too big for
 * the cached MTU, and replies (NAT): bpf_fib_lookup towards the new
 * destination gives the next hop's MAC, our MAC and the egress interface:
 * the same interface is XDP_TX, another is bpf_redirect. A blackhole,
 * unreachable or prohibit route drops. When the FIB has no answer otherwise
 * (forwarding disabled on the interface, or no neighbour entry yet), a
 * backend's static MAC is used with XDP_TX. A NAT or IPIP packet that has
 * neither goes to the kernel, which resolves the neighbour (or sends
 * "fragmentation needed") and forwards it; a DSR packet cannot (its
 * destination is still the VIP) and is dropped.
 *
 * Not balanced, passed: IPv4 fragments (a later fragment has no ports, so a
 * flow's fragments could not reach one backend), IPv6 with extension headers
 * before TCP/UDP, ICMP (including errors about VIP flows).
 *
 * Maps are not pinned by name: the provider pins them per resource with
 * `bpftool prog load ... pinmaps <dir>`, so two load balancers never share a
 * table. */
#include "parsing.h"
#include "maglev.h"
#include "xdp_chain.h"

/* The UAPI headers this includes do not define the address families. */
#define AF_INET 2
#define AF_INET6 10

#define IPV4_FRAG_MASK 0x3fff /* MF flag and fragment offset */

/* The seed of the Maglev packet hash. Fixed: load balancers of one fleet must
 * pick the same backend for a flow, whichever of them ECMP sends it to. */
#define LB_HASH_SEED 0

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, struct lb_vip_key);
	__type(value, struct lb_vip);
} lb_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_TABLE_CAPACITY);
	__type(key, __u32);
	__type(value, __u32); /* backend index; LB_NO_BACKEND (0) names none */
} maglev_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_FLOW_MAX_ENTRIES);
	__type(key, struct lb_flow_key);
	__type(value, __u32); /* backend index */
} lb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_NAT_MAX_ENTRIES);
	__type(key, struct lb_flow_key); /* backend -> client, as replies arrive */
	__type(value, struct lb_nat_origin);
} lb_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} lb_config SEC(".maps");

/* Per-CPU so that counting needs no atomics; user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lb_counter);
} lb_vip_ctr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_counter);
} lb_backend_ctr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_STAT_MAX);
	__type(key, __u32);
	__type(value, struct lb_counter);
} lb_stats SEC(".maps");

/* What the parser found: the flow, and where its headers are. */
struct packet {
	struct lb_flow_key flow;
	void *l3;
	void *l4;
	__u32 l3_off;    /* bytes before the IP header (Ethernet + VLAN tags) */
	__u16 l3_len;    /* IPv4 total length, or IPv6 header + payload length */
	__u8 new_flow;   /* TCP SYN without ACK: a connection starting */
	__u8 tos;        /* IPv4 TOS or IPv6 traffic class */
	__u64 bytes;     /* frame length, for the counters */
};

static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct lb_counter *c = bpf_map_lookup_elem(map, &index);

	if (!c)
		return;
	c->packets++;
	c->bytes += bytes;
}

/* ---------------------------------------------------------------- hashing */

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

/* Bob Jenkins' lookup3, as the kernel's jhash2(): test/kernel/maglev.test.ts
 * recomputes it to predict the backend of a flow. */
#define jhash_mix(a, b, c)                                   \
	do {                                                 \
		a -= c; a ^= rol32(c, 4);  c += b;           \
		b -= a; b ^= rol32(a, 6);  a += c;           \
		c -= b; c ^= rol32(b, 8);  b += a;           \
		a -= c; a ^= rol32(c, 16); c += b;           \
		b -= a; b ^= rol32(a, 19); a += c;           \
		c -= b; c ^= rol32(b, 4);  b += a;           \
	} while (0)

#define jhash_final(a, b, c)                                 \
	do {                                                 \
		c ^= b; c -= rol32(b, 14);                   \
		a ^= c; a -= rol32(c, 11);                   \
		b ^= a; b -= rol32(a, 25);                   \
		c ^= b; c -= rol32(b, 16);                   \
		a ^= c; a -= rol32(c, 4);                    \
		b ^= a; b -= rol32(a, 14);                   \
		c ^= b; c -= rol32(b, 24);                   \
	} while (0)

/* jhash2 over the ten 32-bit words of the flow key (read in host order). */
static __always_inline __u32 flow_hash(const struct lb_flow_key *key)
{
	const __u32 *w = (const __u32 *)key;
	__u32 a, b, c;

	a = b = c = 0xdeadbeef + (10 << 2) + LB_HASH_SEED;
	a += w[0]; b += w[1]; c += w[2];
	jhash_mix(a, b, c);
	a += w[3]; b += w[4]; c += w[5];
	jhash_mix(a, b, c);
	a += w[6]; b += w[7]; c += w[8];
	jhash_mix(a, b, c);
	a += w[9];
	jhash_final(a, b, c);
	return c;
}

/* ---------------------------------------------------------------- checksums */

/* bpf_csum_diff returns a 32-bit one's complement partial sum; XDP has no
 * helper to fold it (bpf_csum_fold is not a helper), so fold it here. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m'), with m and m' `size` bytes at
 * even offsets (so the byte order of the 16-bit words is the same throughout). */
static __always_inline void csum_replace(__sum16 *check, void *from, void *to, __u32 size)
{
	__u16 old = ~*check;

	*check = csum_fold((__u32)bpf_csum_diff(from, size, to, size, old));
}

/* An address (4 or 16 bytes) followed by the 4 bytes of both ports: the part
 * of the pseudo header and L4 header that NAT changes. */
struct addr_ports_v4 {
	__be32 addr;
	__be16 sport;
	__be16 dport;
};

struct addr_ports_v6 {
	__u8 addr[16];
	__be16 sport;
	__be16 dport;
};

/* The verifier cannot carry "family is IPv6, so 40 header bytes were
 * checked" through the stack into a subprogram: the parser's bounds checks
 * are repeated here for the headers a rewrite touches. They never fail for a
 * packet the parser accepted. */
static __always_inline int l4_csum_replace(struct xdp_md *ctx, struct packet *pkt, void *from, void *to, __u32 size)
{
	void *data_end = (void *)(long)ctx->data_end;

	if (pkt->flow.proto == IPPROTO_TCP) {
		struct tcphdr *tcp = pkt->l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		csum_replace(&tcp->check, from, to, size);
	} else {
		struct udphdr *udp = pkt->l4;

		if ((void *)(udp + 1) > data_end)
			return -1;
		/* IPv4 UDP may carry no checksum (0); that stays so. A computed
		 * zero is sent as all ones (RFC 768). */
		if (pkt->flow.family == LB_FAMILY_V4 && udp->check == 0)
			return 0;
		csum_replace(&udp->check, from, to, size);
		if (udp->check == 0)
			udp->check = 0xffff;
	}
	return 0;
}

/* Rewrites the destination (to_dst) or source address and port, with the
 * IPv4 header checksum and the TCP/UDP checksum updated incrementally. */
static __always_inline int rewrite_addr_port(struct xdp_md *ctx, struct packet *pkt, int to_dst, const __u8 *addr,
					     __be16 port)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct udphdr *l4 = pkt->l4; /* sport and dport sit alike in TCP and UDP */

	if ((void *)(l4 + 1) > data_end)
		return -1;
	if (pkt->flow.family == LB_FAMILY_V4) {
		struct iphdr *iph = pkt->l3;
		struct addr_ports_v4 from, to;

		if ((void *)(iph + 1) > data_end)
			return -1;
		from.addr = to_dst ? iph->daddr : iph->saddr;
		from.sport = l4->source;
		from.dport = l4->dest;
		to = from;
		__builtin_memcpy(&to.addr, addr, 4);
		if (to_dst)
			to.dport = port;
		else
			to.sport = port;
		if (l4_csum_replace(ctx, pkt, &from, &to, sizeof(from)) < 0)
			return -1;
		csum_replace(&iph->check, &from.addr, &to.addr, 4);
		if (to_dst)
			iph->daddr = to.addr;
		else
			iph->saddr = to.addr;
		l4->source = to.sport;
		l4->dest = to.dport;
	} else {
		struct ipv6hdr *ip6h = pkt->l3;
		struct addr_ports_v6 from, to;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		__builtin_memcpy(from.addr, to_dst ? (void *)&ip6h->daddr : (void *)&ip6h->saddr, 16);
		from.sport = l4->source;
		from.dport = l4->dest;
		to = from;
		__builtin_memcpy(to.addr, addr, 16);
		if (to_dst)
			to.dport = port;
		else
			to.sport = port;
		if (l4_csum_replace(ctx, pkt, &from, &to, sizeof(from)) < 0)
			return -1;
		if (to_dst)
			__builtin_memcpy(&ip6h->daddr, to.addr, 16);
		else
			__builtin_memcpy(&ip6h->saddr, to.addr, 16);
		l4->source = to.sport;
		l4->dest = to.dport;
	}
	return 0;
}

/* ---------------------------------------------------------------- parsing */

/* 0 when the frame is TCP or UDP over IPv4/IPv6 that we may balance. */
static __always_inline int parse_packet(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = data };
	struct ethhdr *eth;
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	struct tcphdr *tcp;
	struct udphdr *udp;
	int eth_type, proto;

	eth_type = parse_ethhdr(&nh, data_end, &eth);
	pkt->l3_off = nh.pos - data;
	if (eth_type == bpf_htons(ETH_P_IP)) {
		proto = parse_iphdr(&nh, data_end, &iph);
		if (proto < 0 || (iph->frag_off & bpf_htons(IPV4_FRAG_MASK)))
			return -1;
		pkt->l3 = iph;
		pkt->l3_len = bpf_ntohs(iph->tot_len);
		pkt->tos = iph->tos;
		pkt->flow.family = LB_FAMILY_V4;
		__builtin_memcpy(pkt->flow.src, &iph->saddr, 4);
		__builtin_memcpy(pkt->flow.dst, &iph->daddr, 4);
	} else if (eth_type == bpf_htons(ETH_P_IPV6)) {
		proto = parse_ip6hdr(&nh, data_end, &ip6h);
		if (proto < 0)
			return -1;
		pkt->l3 = ip6h;
		pkt->l3_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
		pkt->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
		pkt->flow.family = LB_FAMILY_V6;
		__builtin_memcpy(pkt->flow.src, &ip6h->saddr, 16);
		__builtin_memcpy(pkt->flow.dst, &ip6h->daddr, 16);
	} else {
		return -1;
	}

	if (proto == IPPROTO_TCP) {
		if (parse_tcphdr(&nh, data_end, &tcp) < 0)
			return -1;
		pkt->l4 = tcp;
		pkt->flow.sport = tcp->source;
		pkt->flow.dport = tcp->dest;
		pkt->new_flow = tcp->syn && !tcp->ack;
	} else if (proto == IPPROTO_UDP) {
		if (parse_udphdr(&nh, data_end, &udp) < 0)
			return -1;
		pkt->l4 = udp;
		pkt->flow.sport = udp->source;
		pkt->flow.dport = udp->dest;
	} else {
		return -1;
	}
	pkt->flow.proto = proto;
	return 0;
}

/* ---------------------------------------------------------------- egress */

static __always_inline int fib_lookup(struct xdp_md *ctx, struct bpf_fib_lookup *fib, const struct packet *pkt,
				      __u8 family, const __u8 *src, const __u8 *dst, __u16 tot_len, __u32 flags)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->l4_protocol = pkt->flow.proto;
	fib->sport = pkt->flow.sport;
	fib->dport = pkt->flow.dport;
	fib->tot_len = tot_len;
	fib->ifindex = ctx->ingress_ifindex;
	if (family == LB_FAMILY_V4) {
		fib->family = AF_INET;
		fib->tos = pkt->tos;
		__builtin_memcpy(&fib->ipv4_src, src, 4);
		__builtin_memcpy(&fib->ipv4_dst, dst, 4);
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, src, 16);
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
	}
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), flags);
}

/* Sends the (already rewritten) frame towards the FIB's next hop; see the
 * comment at the top for the fallbacks. `backend` is NULL for replies. */
static __always_inline int egress(struct xdp_md *ctx, int rc, const struct bpf_fib_lookup *fib,
				  const struct lb_backend *backend, int stack_ok, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;

	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
		if (fib->ifindex == ctx->ingress_ifindex) {
			count(&lb_stats, LB_STAT_TX, bytes);
			return XDP_TX;
		}
		count(&lb_stats, LB_STAT_REDIRECT, bytes);
		return bpf_redirect(fib->ifindex, 0);
	}
	/* The routing table says no: that holds for static MACs too. */
	if (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE || rc == BPF_FIB_LKUP_RET_PROHIBIT)
		goto drop;
	/* Too big for the egress MTU (IPIP adds a header): only the kernel can
	 * answer with ICMP "fragmentation needed" / "packet too big". */
	if (rc != BPF_FIB_LKUP_RET_FRAG_NEEDED && backend && (backend->flags & LB_BACKEND_F_STATIC_MAC)) {
		/* The frame came to us, so its destination MAC is ours on this
		 * interface: XDP has no helper that reads an interface's MAC. */
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, backend->mac, ETH_ALEN);
		count(&lb_stats, LB_STAT_STATIC_MAC, bytes);
		count(&lb_stats, LB_STAT_TX, bytes);
		return XDP_TX;
	}
	if (stack_ok) {
		count(&lb_stats, LB_STAT_STACK, bytes);
		return XDP_PASS;
	}
drop:
	count(&lb_stats, LB_STAT_FIB_DROP, bytes);
	return XDP_DROP;
}

/* The next-hop cache (see the top): 1 when `backend`'s record names the next
 * hop on this interface and an IP datagram of `len` bytes fits its MTU. */
static __always_inline int next_hop_cached(const struct lb_backend *backend, __u32 len)
{
	return (backend->flags & LB_BACKEND_F_NEXT_HOP) && len <= backend->mtu;
}

/* Sends the frame to the cached next hop: only the MACs change. */
static __always_inline int egress_cached(struct xdp_md *ctx, const struct lb_backend *backend, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	/* The frame came to us, so its destination MAC is ours on this
	 * interface: XDP has no helper that reads an interface's MAC. */
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, backend->mac, ETH_ALEN);
	count(&lb_stats, LB_STAT_STATIC_MAC, bytes);
	count(&lb_stats, LB_STAT_TX, bytes);
	return XDP_TX;
}

/* ---------------------------------------------------------------- modes */

/* clang turns __builtin_memcmp into a call to memcmp, which BPF does not have. */
static __always_inline int addr_equal(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int forward_dsr(struct xdp_md *ctx, struct packet *pkt, const struct lb_backend *backend,
				       struct bpf_fib_lookup *fib)
{
	int rc;

	if (next_hop_cached(backend, pkt->l3_len))
		return egress_cached(ctx, backend, pkt->bytes);
	/* Route towards the backend's own address; the packet keeps the VIP. */
	rc = fib_lookup(ctx, fib, pkt, backend->family, pkt->flow.src, backend->addr, pkt->l3_len, 0);
	return egress(ctx, rc, fib, backend, 0, pkt->bytes);
}

/* Not inlined: each mode's locals get a stack frame of their own (the
 * verifier allows 512 bytes per call chain, clang 512 per function). */
static __noinline int forward_nat(struct xdp_md *ctx, struct packet *pkt, const struct lb_vip *vip,
				  const struct lb_backend *backend, struct bpf_fib_lookup *fib)
{
	struct lb_flow_key reply = {};
	struct lb_nat_origin origin = {};
	struct lb_nat_origin *known;
	__be16 port = backend->port ? backend->port : pkt->flow.dport;
	int rc;

	/* The reply's 5-tuple, as it will arrive from the backend. */
	__builtin_memcpy(reply.src, backend->addr, 16);
	__builtin_memcpy(reply.dst, pkt->flow.src, 16);
	reply.sport = port;
	reply.dport = pkt->flow.sport;
	reply.proto = pkt->flow.proto;
	reply.family = pkt->flow.family;
	__builtin_memcpy(origin.vip_addr, pkt->flow.dst, 16);
	origin.vip_port = pkt->flow.dport;
	origin.vip_index = vip->vip_index;
	/* Write only when new or changed: an LRU update per packet would
	 * contend on the LRU lists for nothing. */
	known = bpf_map_lookup_elem(&lb_nat, &reply);
	if (!known || known->vip_port != origin.vip_port || known->vip_index != origin.vip_index ||
	    !addr_equal(known->vip_addr, origin.vip_addr))
		bpf_map_update_elem(&lb_nat, &reply, &origin, BPF_ANY);

	if (rewrite_addr_port(ctx, pkt, 1, backend->addr, port) < 0)
		return XDP_DROP;
	if (next_hop_cached(backend, pkt->l3_len))
		return egress_cached(ctx, backend, pkt->bytes);
	rc = fib_lookup(ctx, fib, pkt, backend->family, pkt->flow.src, backend->addr, pkt->l3_len, 0);
	return egress(ctx, rc, fib, backend, 1, pkt->bytes);
}

/* A reply from a backend (lb_nat knows its 5-tuple): the source becomes the
 * VIP again. Returns -1 when the packet is not such a reply. */
static __noinline int reverse_nat(struct xdp_md *ctx, struct packet *pkt, struct bpf_fib_lookup *fib)
{
	struct lb_nat_origin *origin = bpf_map_lookup_elem(&lb_nat, &pkt->flow);
	int rc;

	if (!origin)
		return -1;
	if (rewrite_addr_port(ctx, pkt, 0, origin->vip_addr, origin->vip_port) < 0)
		return XDP_DROP;
	count(&lb_stats, LB_STAT_REVERSE_NAT, pkt->bytes);
	rc = fib_lookup(ctx, fib, pkt, pkt->flow.family, origin->vip_addr, pkt->flow.dst, pkt->l3_len, 0);
	return egress(ctx, rc, fib, NULL, 1, pkt->bytes);
}

static __always_inline __u16 ipv4_header_csum(const struct iphdr *iph)
{
	const __u16 *w = (const __u16 *)iph;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)sizeof(*iph) / 2; i++)
		sum += w[i];
	return csum_fold(sum);
}

static __always_inline int encap_fail(__u64 bytes)
{
	count(&lb_stats, LB_STAT_ENCAP_FAIL, bytes);
	return XDP_DROP;
}

/* Adds an outer IPv4 or IPv6 header (the backend's family) in front of the
 * packet's IP header. The outer source is lb_config's tunnel source of that
 * family, or else the address the FIB picks for reaching the backend. */
static __noinline int forward_ipip(struct xdp_md *ctx, struct packet *pkt, const struct lb_backend *backend,
				   struct bpf_fib_lookup *fib)
{
	__u64 bytes = pkt->bytes;
	__u32 zero = 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&lb_config, &zero);
	__u8 src[16] = {};
	__u8 inner_proto = pkt->flow.family == LB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	int outer_v4 = backend->family == LB_FAMILY_V4;
	int outer_len = outer_v4 ? (int)sizeof(struct iphdr) : (int)sizeof(struct ipv6hdr);
	__u32 flags = 0, hash;
	__u16 inner_len = pkt->l3_len;
	__u8 tos = pkt->tos;
	void *data, *data_end;
	struct ethhdr *eth, *old_eth;
	int rc = 0, have_src = 0, cached, i;

	if (!cfg)
		return encap_fail(bytes);
	/* The outer header goes where the EtherType was: with VLAN tags in
	 * between, the tags would have to move too. Untagged frames only. */
	if (pkt->l3_off != sizeof(struct ethhdr))
		return encap_fail(bytes);
	if (outer_v4) {
		__builtin_memcpy(src, cfg->tunnel_src_v4, 4);
		have_src = *(__u32 *)src != 0;
	} else {
		__builtin_memcpy(src, cfg->tunnel_src_v6, 16);
#pragma unroll
		for (i = 0; i < 16; i++)
			have_src |= src[i];
	}
	/* Without a configured source only the FIB can name one. */
	cached = have_src && next_hop_cached(backend, inner_len + outer_len);
	if (!have_src)
		flags |= BPF_FIB_LOOKUP_SRC;
	if (!cached)
		rc = fib_lookup(ctx, fib, pkt, backend->family, src, backend->addr, inner_len + outer_len, flags);
	if (!have_src) {
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return encap_fail(bytes);
		if (outer_v4)
			__builtin_memcpy(src, &fib->ipv4_src, 4);
		else
			__builtin_memcpy(src, fib->ipv6_src, 16);
	}

	if (bpf_xdp_adjust_head(ctx, -outer_len))
		return encap_fail(bytes);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if (data + sizeof(*eth) + sizeof(struct ipv6hdr) > data_end)
		return encap_fail(bytes);
	old_eth = data + outer_len;
	__builtin_memcpy(eth->h_dest, old_eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old_eth->h_source, ETH_ALEN);

	if (outer_v4) {
		struct iphdr outer = {
			.version = 4,
			.ihl = 5,
			.tos = tos,
			.tot_len = bpf_htons(inner_len + sizeof(struct iphdr)),
			.ttl = 64,
			.protocol = inner_proto,
		};
		struct iphdr *iph = (void *)(eth + 1);

		eth->h_proto = bpf_htons(ETH_P_IP);
		__builtin_memcpy(&outer.saddr, src, 4);
		__builtin_memcpy(&outer.daddr, backend->addr, 4);
		outer.check = ipv4_header_csum(&outer);
		__builtin_memcpy(iph, &outer, sizeof(outer));
	} else {
		struct ipv6hdr outer = {
			.version = 6,
			.priority = tos >> 4,
			.payload_len = bpf_htons(inner_len),
			.nexthdr = inner_proto,
			.hop_limit = 64,
		};
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		/* The flow label carries the flow's hash, so that ECMP and RSS
		 * on the way to the backend spread tunnelled flows. */
		hash = flow_hash(&pkt->flow);
		outer.flow_lbl[0] = ((tos & 0x0f) << 4) | ((hash >> 16) & 0x0f);
		outer.flow_lbl[1] = hash >> 8;
		outer.flow_lbl[2] = hash;
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		__builtin_memcpy(&outer.saddr, src, 16);
		__builtin_memcpy(&outer.daddr, backend->addr, 16);
		__builtin_memcpy(ip6h, &outer, sizeof(outer));
	}
	if (cached)
		return egress_cached(ctx, backend, bytes + outer_len);
	return egress(ctx, rc, fib, backend, 1, bytes + outer_len);
}

/* ---------------------------------------------------------------- program */

/* The backend for this packet: its pinned flow, else the Maglev slot. */
static __always_inline struct lb_backend *pick_backend(const struct lb_vip *vip, struct packet *pkt, __u32 *index)
{
	struct lb_backend *backend;
	__u32 *found, slot;
	int pinned = vip->flags & LB_VIP_F_FLOW_TABLE;

	/* A SYN starts a new connection: it follows the current table even if
	 * an old flow with the same 5-tuple is still pinned. */
	if (pinned && !pkt->new_flow) {
		found = bpf_map_lookup_elem(&lb_flows, &pkt->flow);
		if (found) {
			*index = *found;
			backend = bpf_map_lookup_elem(&lb_backends, index);
			if (backend && backend->family) {
				count(&lb_stats, LB_STAT_FLOW_HIT, pkt->bytes);
				return backend;
			}
		}
	}
	if (vip->table_size == 0)
		return NULL;
	slot = vip->table_offset + flow_hash(&pkt->flow) % vip->table_size;
	found = bpf_map_lookup_elem(&maglev_table, &slot);
	if (!found || *found == LB_NO_BACKEND)
		return NULL;
	*index = *found;
	backend = bpf_map_lookup_elem(&lb_backends, index);
	if (!backend || !backend->family)
		return NULL;
	if (pinned)
		bpf_map_update_elem(&lb_flows, &pkt->flow, index, BPF_ANY);
	return backend;
}

static __always_inline int balance(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	/* SEC("xdp") without frags: the frame is all linear. */
	struct packet pkt = { .bytes = data_end - data };
	struct lb_vip_key key = {};
	struct bpf_fib_lookup fib;
	struct lb_backend *backend;
	struct lb_vip *vip;
	__u32 index = 0, zero = 0;
	int ret;

	if (parse_packet(ctx, &pkt) < 0)
		goto pass;

	__builtin_memcpy(key.addr, pkt.flow.dst, 16);
	key.port = pkt.flow.dport;
	key.proto = pkt.flow.proto;
	key.family = pkt.flow.family;
	vip = bpf_map_lookup_elem(&lb_vips, &key);
	if (!vip) {
		struct lb_config *cfg = bpf_map_lookup_elem(&lb_config, &zero);

		if (cfg && (cfg->flags & LB_CONFIG_F_REVERSE_NAT)) {
			ret = reverse_nat(ctx, &pkt, &fib);
			if (ret >= 0)
				return ret;
		}
		goto pass;
	}

	count(&lb_vip_ctr, vip->vip_index, pkt.bytes);
	backend = pick_backend(vip, &pkt, &index);
	/* NAT and DSR keep the packet's family: a backend of the other
	 * family is a configuration the provider refuses. */
	if (!backend || (vip->mode != LB_MODE_IPIP && backend->family != pkt.flow.family)) {
		count(&lb_stats, LB_STAT_NO_BACKEND, pkt.bytes);
		return XDP_DROP;
	}
	count(&lb_backend_ctr, index, pkt.bytes);

	switch (vip->mode) {
	case LB_MODE_DSR:
		return forward_dsr(ctx, &pkt, backend, &fib);
	case LB_MODE_NAT:
		return forward_nat(ctx, &pkt, vip, backend, &fib);
	case LB_MODE_IPIP:
		return forward_ipip(ctx, &pkt, backend, &fib);
	default:
		count(&lb_stats, LB_STAT_NO_BACKEND, pkt.bytes);
		return XDP_DROP;
	}

pass:
	count(&lb_stats, LB_STAT_NOT_VIP, pkt.bytes);
	return XDP_PASS;
}

SEC("xdp")
int xdp_maglev(struct xdp_md *ctx)
{
	/* What the balancer passes goes on to the next program sharing the
	 * interface, if any (see xdp_chain.h). */
	return xdp_chain_verdict(ctx, balance(ctx));
}

char LICENSE[] SEC("license") = "GPL";
