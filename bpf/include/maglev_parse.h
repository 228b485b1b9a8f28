/* What bpf/xdp_maglev.bpf.c reads from a frame (struct packet), read with
 * parsing.h's helpers: this file only picks the balancer's fields. */
#ifndef BPFLEET_MAGLEV_PARSE_H
#define BPFLEET_MAGLEV_PARSE_H

#include "parsing.h"
#include "maglev.h"

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

/* 0 when the frame is TCP or UDP over IPv4/IPv6 that we may balance. */
static __always_inline int parse_packet(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = data };
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	struct tcphdr *tcp;
	struct udphdr *udp;
	int family, proto;

	family = parse_ip_frame(&nh, data_end, &iph, &ip6h);
	if (family == 4) {
		if (ip_is_fragment(iph))
			return -1;
		proto = iph->protocol;
		pkt->l3 = iph;
		pkt->l3_len = bpf_ntohs(iph->tot_len);
		pkt->tos = iph->tos;
		pkt->flow.family = LB_FAMILY_V4;
		__builtin_memcpy(pkt->flow.src, &iph->saddr, 4);
		__builtin_memcpy(pkt->flow.dst, &iph->daddr, 4);
	} else if (family == 6) {
		proto = ip6h->nexthdr;
		pkt->l3 = ip6h;
		pkt->l3_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
		pkt->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
		pkt->flow.family = LB_FAMILY_V6;
		__builtin_memcpy(pkt->flow.src, &ip6h->saddr, 16);
		__builtin_memcpy(pkt->flow.dst, &ip6h->daddr, 16);
	} else {
		return -1;
	}
	pkt->l3_off = pkt->l3 - data;

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

#endif
