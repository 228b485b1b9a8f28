/* Egress towards a backend or a client: the next-hop cache and the FIB (see
 * the comment at the top of bpf/xdp_maglev.bpf.c). */
#ifndef BPFLEET_MAGLEV_EGRESS_H
#define BPFLEET_MAGLEV_EGRESS_H

#include "maglev_maps.h"
#include "maglev_parse.h"

/* The UAPI headers this includes do not define the address families. */
#define AF_INET 2
#define AF_INET6 10

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

#endif
