/* NAT's rewrite of an address and port, with the IPv4 header and TCP/UDP
 * checksums updated incrementally. */
#ifndef BPFLEET_MAGLEV_NAT_H
#define BPFLEET_MAGLEV_NAT_H

#include "maglev_csum.h"
#include "maglev_parse.h"

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

#endif
