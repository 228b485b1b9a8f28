/* Packet parsing helpers shared by every bpfleet program, after
 * xdp-tutorial's common/parsing_helpers.h: one helper per header, each taking
 * a cursor, checking bounds once, advancing the cursor past the header and
 * returning what comes next (or -1). Bounds checks live here and nowhere else;
 * a program that got a header pointer back may read the whole header. */
#ifndef BPFLEET_PARSING_H
#define BPFLEET_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* linux/if_vlan.h is kernel-internal; the UAPI has no VLAN header struct. */
struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

/* QinQ (802.1AD outer + 802.1Q inner) is the deepest stacking seen in practice. */
#define VLAN_MAX_DEPTH 2

struct hdr_cursor {
	void *pos;
};

static __always_inline int proto_is_vlan(__u16 h_proto)
{
	return h_proto == bpf_htons(ETH_P_8021Q) ||
	       h_proto == bpf_htons(ETH_P_8021AD);
}

/* Skips up to VLAN_MAX_DEPTH VLAN tags and returns the inner EtherType in
 * network byte order. A frame with more tags returns the next tag's TPID,
 * which no program matches, so it is treated as "not IP". */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end,
					struct ethhdr **ethhdr)
{
	struct ethhdr *eth = nh->pos;
	struct vlan_hdr *vlh;
	__u16 h_proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return -1;

	nh->pos = eth + 1;
	*ethhdr = eth;
	h_proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (!proto_is_vlan(h_proto))
			break;
		vlh = nh->pos;
		if ((void *)(vlh + 1) > data_end)
			return -1;
		h_proto = vlh->h_vlan_encapsulated_proto;
		nh->pos = vlh + 1;
	}

	return h_proto;
}

/* Returns the IP protocol of the payload. The cursor moves past the options
 * too (ihl), so an L4 helper called next finds its header where it really is.
 * A header that is not version 4 or shorter than 20 bytes is rejected, as
 * ip_rcv_core rejects it. */
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end,
				       struct iphdr **iphdr)
{
	struct iphdr *iph = nh->pos;
	int hdrsize;

	if ((void *)(iph + 1) > data_end)
		return -1;

	if (iph->version != 4)
		return -1;
	hdrsize = iph->ihl * 4;
	if (hdrsize < (int)sizeof(*iph))
		return -1;
	if (nh->pos + hdrsize > data_end)
		return -1;

	nh->pos += hdrsize;
	*iphdr = iph;
	return iph->protocol;
}

/* Returns the fixed header's next header. Extension headers are not walked:
 * the source and destination addresses are all the current programs need. */
static __always_inline int parse_ip6hdr(struct hdr_cursor *nh, void *data_end,
					struct ipv6hdr **ip6hdr)
{
	struct ipv6hdr *ip6h = nh->pos;

	if ((void *)(ip6h + 1) > data_end)
		return -1;
	if (ip6h->version != 6)
		return -1;

	nh->pos = ip6h + 1;
	*ip6hdr = ip6h;
	return ip6h->nexthdr;
}

/* Returns the UDP header length. The caller must know the packet is not a
 * later IPv4/IPv6 fragment: those carry payload bytes where this expects a
 * header. */
static __always_inline int parse_udphdr(struct hdr_cursor *nh, void *data_end,
					struct udphdr **udphdr)
{
	struct udphdr *h = nh->pos;

	if ((void *)(h + 1) > data_end)
		return -1;

	nh->pos = h + 1;
	*udphdr = h;
	return sizeof(*h);
}

/* Returns the TCP header length including options (doff); same fragment
 * caveat as parse_udphdr. */
static __always_inline int parse_tcphdr(struct hdr_cursor *nh, void *data_end,
					struct tcphdr **tcphdr)
{
	struct tcphdr *h = nh->pos;
	int len;

	if ((void *)(h + 1) > data_end)
		return -1;

	len = h->doff * 4;
	if (len < (int)sizeof(*h))
		return -1;
	if (nh->pos + len > data_end)
		return -1;

	nh->pos += len;
	*tcphdr = h;
	return len;
}

#endif
