/* NAT's rewrite of an address and port, with the IPv4 header and TCP/UDP
 * checksums updated incrementally. */
#ifndef BPFLEET_MAGLEV_NAT_H
#define BPFLEET_MAGLEV_NAT_H

#include "maglev_csum.h"
#include "maglev_parse.h"

/* The part of the L4 header and pseudo header that NAT changes: both ports
 * and an address (IPv4: addr[0] only). The checksum of 16-bit words does not
 * depend on their order, so the ports go first and one bpf_csum_diff covers
 * 4 + 4 or 4 + 16 contiguous bytes for either family. */
struct ports_addr {
	__be16 sport;
	__be16 dport;
	__be32 addr[4];
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

/* The rewrite for one family: `l3_addr` is the packet's address field of
 * `addr_len` (a constant: 4 or 16) bytes, `ip_check` the IPv4 header
 * checksum (NULL for IPv6, which has none). */
static __always_inline int rewrite_l3_l4(struct xdp_md *ctx, struct packet *pkt, struct udphdr *l4, __be32 *l3_addr,
					 __sum16 *ip_check, int to_dst, const __u8 *addr, __be16 port,
					 const __u32 addr_len)
{
	struct ports_addr from, to;

	from.sport = l4->source;
	from.dport = l4->dest;
	__builtin_memcpy(from.addr, l3_addr, addr_len);
	to.sport = to_dst ? from.sport : port;
	to.dport = to_dst ? port : from.dport;
	__builtin_memcpy(to.addr, addr, addr_len);
	if (l4_csum_replace(ctx, pkt, &from, &to, 4 + addr_len) < 0)
		return -1;
	if (ip_check)
		csum_replace(ip_check, from.addr, to.addr, addr_len);
	__builtin_memcpy(l3_addr, to.addr, addr_len);
	l4->source = to.sport;
	l4->dest = to.dport;
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

		if ((void *)(iph + 1) > data_end)
			return -1;
		return rewrite_l3_l4(ctx, pkt, l4, to_dst ? &iph->daddr : &iph->saddr, &iph->check, to_dst, addr, port, 4);
	} else {
		struct ipv6hdr *ip6h = pkt->l3;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		return rewrite_l3_l4(ctx, pkt, l4, to_dst ? ip6h->daddr.s6_addr32 : ip6h->saddr.s6_addr32, NULL,
				     to_dst, addr, port, 16);
	}
}

#endif
