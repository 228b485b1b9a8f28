/* Checksum arithmetic for the rewrites of bpf/xdp_maglev.bpf.c: folding,
 * incremental updates (RFC 1624) and a whole IPv4 header. */
#ifndef BPFLEET_MAGLEV_CSUM_H
#define BPFLEET_MAGLEV_CSUM_H

#include "parsing.h"

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

#endif
