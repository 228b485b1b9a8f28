/* XDP L4 load balancer with Maglev hashing.
 *
 * Only TCP/UDP traffic to a configured VIP (address, port, protocol: lb_vips)
 * is balanced; everything else passes untouched, except, when some VIP is in
 * NAT mode, replies from backends, which are translated back to the VIP.
 *
 *   parse -> lb_vip_index [-> lb_vips] -> [lb_flows] -> jhash2(5-tuple) % M -> maglev_table
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
 * Not balanced, passed: IPv4 and IPv6 fragments, the first included (a later
 * fragment has no ports, so a flow's fragments could not all reach one
 * backend), IPv6 with any other extension header before TCP/UDP, ICMP
 * (including errors about VIP flows).
 *
 * Maps are not pinned by name: the provider pins them per resource with
 * `bpftool prog load ... pinmaps <dir>`, so two load balancers never share a
 * table.
 *
 * Headers by concern (as katran splits its balancer): maglev_maps.h (maps
 * and counting), maglev_parse.h (the fields it reads, through parsing.h),
 * maglev_hash.h (jhash2), maglev_csum.h, maglev_nat.h (address/port
 * rewrite), maglev_egress.h (next-hop cache and FIB); this file holds the
 * modes and the program. */
#include "parsing.h"
#include "maglev.h"
#include "xdp_chain.h"
#include "maglev_maps.h"
#include "maglev_hash.h"
#include "maglev_csum.h"
#include "maglev_parse.h"
#include "maglev_nat.h"
#include "maglev_egress.h"

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

static __always_inline int vip_key_equal(const struct lb_vip_key *a, const struct lb_vip_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

/* The VIP a packet is for, or NULL: lb_vip_index's slot first, lb_vips only
 * when the slot says ASK (see lb_vip_slot in maglev.h). */
static __always_inline struct lb_vip *lookup_vip(const struct lb_vip_key *key)
{
	__u32 index = lb_vip_slot_of(key);
	struct lb_vip_slot *slot = bpf_map_lookup_elem(&lb_vip_index, &index);

	if (slot && slot->state == LB_VIP_SLOT_NONE)
		return NULL;
	if (slot && slot->state == LB_VIP_SLOT_ONE)
		return vip_key_equal(&slot->key, key) ? &slot->vip : NULL;
	return bpf_map_lookup_elem(&lb_vips, key);
}

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
	/* Read as 32-bit words (the verifier wants aligned stack access). */
	struct lb_vip_key key __attribute__((aligned(4))) = {};
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
	vip = lookup_vip(&key);
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
