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

/* Returns the fixed header's next header. Extension headers are not walked
 * here (parse_ip6_exthdrs does that for programs that need the upper layer). */
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

/* Parses Ethernet (VLAN tags skipped) and the IP header behind it. Returns
 * 4 with *iphdr set, or 6 with *ip6hdr set, and the cursor past that header
 * (IPv4 options included, IPv6 extension headers not); 0 for a frame that is
 * not IPv4/IPv6; -1 when a header is cut short or malformed. */
static __always_inline int parse_ip_frame(struct hdr_cursor *nh, void *data_end,
					  struct iphdr **iphdr, struct ipv6hdr **ip6hdr)
{
	struct ethhdr *eth;
	int eth_type;

	eth_type = parse_ethhdr(nh, data_end, &eth);
	if (eth_type == bpf_htons(ETH_P_IP))
		return parse_iphdr(nh, data_end, iphdr) < 0 ? -1 : 4;
	if (eth_type == bpf_htons(ETH_P_IPV6))
		return parse_ip6hdr(nh, data_end, ip6hdr) < 0 ? -1 : 6;
	return eth_type < 0 ? -1 : 0;
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

/* The UAPI has no IPv6 fragment header struct (net/ipv6.h is kernel-internal). */
struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3, then 2 reserved bits and M */
	__be32 identification;
};

#define IPV6_FRAG_OFFSET_MASK 0xfff8

/* Returns the fragment header's next header, with the fragment offset in
 * bytes in *frag_offset and the cursor past the header. */
static __always_inline int parse_ip6_fraghdr(struct hdr_cursor *nh, void *data_end,
					     __u16 *frag_offset)
{
	struct ipv6_frag_hdr *frag = nh->pos;

	if ((void *)(frag + 1) > data_end)
		return -1;
	nh->pos = frag + 1;
	*frag_offset = bpf_ntohs(frag->frag_off) & IPV6_FRAG_OFFSET_MASK;
	return frag->nexthdr;
}
/* Longer chains do not occur in legitimate traffic (RFC 9098 reports
 * operators dropping far shorter ones); the walk gives up. */
#define IPV6_EXT_MAX_CHAIN 8

/* Walks the IPv6 extension headers (RFC 8200 §4) that follow the fixed
 * header, starting at the cursor with `nexthdr` from the fixed header:
 * hop-by-hop options, routing, destination options and fragment headers are
 * skipped, and AH too when `walk_ah` is set. Returns the first header that is
 * not one of those, with the cursor on it: the upper-layer protocol (TCP,
 * UDP, ICMPv6, ...), or ESP, No Next Header or anything unknown, which a
 * program then treats as a protocol without ports. A fragment header stores
 * the fragment offset in bytes in *frag_offset; when it is non-zero the walk
 * stops there, since a later fragment carries payload where a header would
 * be. Returns -1 when a header is cut short or the chain is longer than
 * IPV6_EXT_MAX_CHAIN.
 *
 * `walk_ah` must be a constant: AH is all but unused, and each extra header
 * kind multiplies the paths the verifier explores, so a program that does not
 * ask for it compiles as if the case were not here. The mirror asks for it:
 * traffic inside AH is still traffic someone may want a copy of. */
static __always_inline int parse_ip6_exthdrs_walk(struct hdr_cursor *nh, void *data_end,
						  __u8 nexthdr, __u16 *frag_offset,
						  const int walk_ah)
{
	struct ipv6_opt_hdr *opt;
	int i, len, next;

	*frag_offset = 0;
	for (i = 0; i < IPV6_EXT_MAX_CHAIN; i++) {
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			opt = nh->pos;
			if ((void *)(opt + 1) > data_end)
				return -1;
			len = (opt->hdrlen + 1) * 8; /* 8-byte units, not counting the first */
			nexthdr = opt->nexthdr;
			if (nh->pos + len > data_end)
				return -1;
			nh->pos += len;
			break;
		case IPPROTO_FRAGMENT:
			next = parse_ip6_fraghdr(nh, data_end, frag_offset);
			if (next < 0)
				return -1;
			nexthdr = next;
			if (*frag_offset)
				return nexthdr;
			break;
		default:
			if (!walk_ah || nexthdr != IPPROTO_AH)
				return nexthdr;
			opt = nh->pos;
			if ((void *)(opt + 1) > data_end)
				return -1;
			len = (opt->hdrlen + 2) * 4; /* 4-byte units, not counting the first two (RFC 4302 2.2) */
			nexthdr = opt->nexthdr;
			if (nh->pos + len > data_end)
				return -1;
			nh->pos += len;
			break;
		}
	}
	/* The chain ended exactly at the limit, or goes on beyond it. */
	if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT ||
	    (walk_ah && nexthdr == IPPROTO_AH))
		return -1;
	return nexthdr;
}

static __always_inline int parse_ip6_exthdrs(struct hdr_cursor *nh, void *data_end,
					     __u8 nexthdr, __u16 *frag_offset)
{
	return parse_ip6_exthdrs_walk(nh, data_end, nexthdr, frag_offset, 0);
}

/* Fragments, recognised here and nowhere else: IPv4 by ip_is_fragment and
 * ip_is_later_fragment, IPv6 by the fragment offset parse_ip6_exthdrs (or
 * parse_ip6_fraghdr) reports. What a program does with them is its own
 * decision, stated at its top and tested in test/kernel with the fragments
 * packets.ts builds: the firewall judges every fragment by its source
 * address (each carries the IP header); the balancer passes every fragment
 * (a later one has no ports, so a flow's fragments could not all reach one
 * backend); the policy passes later fragments (the first carries the ports
 * and was judged); the mirror matches later fragments on addresses and
 * protocol only. */
#define IPV4_MF 0x2000
#define IPV4_FRAG_OFFSET_MASK 0x1fff

/* True for an IPv4 fragment other than the first: its payload starts in
 * the middle of the upper-layer datagram, so there is no header to read. */
static __always_inline int ip_is_later_fragment(const struct iphdr *iph)
{
	return (iph->frag_off & bpf_htons(IPV4_FRAG_OFFSET_MASK)) != 0;
}

/* True for any IPv4 fragment, the first (MF set, offset 0) included. */
static __always_inline int ip_is_fragment(const struct iphdr *iph)
{
	return (iph->frag_off & bpf_htons(IPV4_MF | IPV4_FRAG_OFFSET_MASK)) != 0;
}

/* Reads the source and destination ports, the first 4 bytes of TCP, UDP,
 * UDP-Lite, SCTP and DCCP headers, without moving the cursor. Needs only
 * those 4 bytes, so it also reads the ports of a header cut short, such as
 * the 8 bytes of the offending datagram an ICMP error quotes (RFC 792). */
static __always_inline int parse_ports(struct hdr_cursor *nh, void *data_end,
				       __be16 *sport, __be16 *dport)
{
	__be16 *ports = nh->pos;

	if ((void *)(ports + 2) > data_end)
		return -1;
	*sport = ports[0];
	*dport = ports[1];
	return 0;
}

/* The 8 bytes every ICMP and ICMPv6 message starts with; id and sequence
 * are those of echo messages (and unused or other fields elsewhere). */
struct icmphdr_common {
	__u8 type;
	__u8 code;
	__sum16 cksum;
	__be16 id;
	__be16 sequence;
};

/* Returns the ICMP or ICMPv6 type. */
static __always_inline int parse_icmphdr_common(struct hdr_cursor *nh, void *data_end,
						struct icmphdr_common **icmphdr)
{
	struct icmphdr_common *h = nh->pos;

	if ((void *)(h + 1) > data_end)
		return -1;

	nh->pos = h + 1;
	*icmphdr = h;
	return h->type;
}

#endif
