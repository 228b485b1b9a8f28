/* XDP firewall: drop packets whose IPv4/IPv6 source address is denied, by exact
 * address or by prefix; pass everything else.
 *
 * The lookup starts at a direct-indexed array of 2-bit states, one per 24-bit
 * bucket of the address (xdp_firewall.h): most packets (misses, and hits of
 * prefixes up to /24) are decided there, without a hash or trie lookup; an
 * exact address, and an IPv6 prefix longer than /24 (one per length present,
 * longest first), is then read from an array of 12-way buckets (a hash
 * lookup only for entries past a full bucket); an IPv4 address in a /24 with a
 * /25–/31 reads that /24's host bitmap, from a direct-mapped slot likewise.
 * The LPM tries are the records
 * of the prefixes, read by the provider, never by this program.
 *
 * Fragments are judged like any packet: each carries the IP header, so a
 * denied source's later fragments are dropped too.
 *
 * What cannot be parsed passes. Dropping the unparseable would also drop ARP
 * and anything behind a third VLAN tag or an encapsulation we do not know,
 * and lock the host out of its own network. Malformed IP headers (wrong
 * version, ihl < 5, header longer than the frame) are discarded by the
 * kernel's own input path (ip_rcv_core, ipv6_rcv) before any socket sees them,
 * so passing them opens no way in to this host. (A bridge without
 * br_netfilter would forward them: this program guards the host.)
 *
 * Maps are not pinned by name: the provider pins them per resource with
 * `bpftool prog load ... pinmaps <dir>`, so two firewalls never share a map
 * (xdp_chain excepted: see xdp_chain.h). */
#include "parsing.h"
#include "xdp_firewall.h"
#include "xdp_chain.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FW_EXACT_MAX_ENTRIES);
	__type(key, __u32); /* the address as on the wire (network order) */
	__type(value, fw_deny_value);
} deny_v4_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FW_EXACT_MAX_ENTRIES);
	__type(key, struct fw_v6_addr);
	__type(value, fw_deny_value);
} deny_v6_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* LPM tries refuse anything else */
	__uint(max_entries, FW_PREFIX_MAX_ENTRIES);
	__type(key, struct fw_v4_prefix_key);
	__type(value, fw_deny_value);
} deny_v4_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FW_PREFIX_MAX_ENTRIES);
	__type(key, struct fw_v6_prefix_key);
	__type(value, fw_deny_value);
} deny_v6_prefix SEC(".maps");

/* The index and its detail maps: see xdp_firewall.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_INDEX_BLOCKS);
	__type(key, __u32);
	__type(value, struct fw_index_block);
} fw_v4_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_INDEX_BLOCKS);
	__type(key, __u32);
	__type(value, struct fw_index_block);
} fw_v6_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FW_V4_HOSTS_MAX_ENTRIES);
	__type(key, __u32); /* the /24, network order, last byte 0 */
	__type(value, struct fw_v4_hosts);
} fw_v4_hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_V4_NET_SLOTS);
	__type(key, __u32);
	__type(value, struct fw_v4_net_slot);
} fw_v4_net_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_V4_WAY_BUCKETS);
	__type(key, __u32);
	__type(value, struct fw_v4_ways);
} fw_v4_ways SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_V6_WAY_BUCKETS);
	__type(key, __u32);
	__type(value, struct fw_v6_ways);
} fw_v6_ways SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FW_V6_LONG_MAX_ENTRIES);
	__type(key, struct fw_v6_prefix_key);
	__type(value, fw_deny_value);
} fw_v6_long SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_v6_lengths);
} fw_v6_lengths SEC(".maps");

/* Per-CPU so that counting needs no atomics; user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_STAT_MAX);
	__type(key, __u32);
	__type(value, struct fw_counter);
} fw_stats SEC(".maps");

/* The state of bucket `top24` (the address's first 24 bits) in `index`. */
static __always_inline __u32 bucket_state(void *index, __u32 top24)
{
	__u32 block = top24 >> 8, bucket = top24 & 0xff;
	struct fw_index_block *b = bpf_map_lookup_elem(index, &block);

	if (!b)
		return FW_BUCKET_NONE;
	return (b->state[bucket >> 2] >> ((bucket & 3) * 2)) & 3;
}

static __always_inline int v4_denied(__be32 saddr)
{
	__u32 addr = bpf_ntohl(saddr), key = saddr;
	__u32 state = bucket_state(&fw_v4_index, addr >> 8);
	struct fw_v4_hosts *hosts;
	__u32 host;

	if (state == FW_BUCKET_NONE)
		return 0;
	if (state == FW_BUCKET_DENY)
		return 1;
	if (state == FW_BUCKET_LONGER) {
		__u32 net = saddr & bpf_htonl(0xffffff00);
		__u32 slot = ((addr >> 8) * FW_V4_SLOT_MULT) >> (32 - FW_V4_NET_SLOT_BITS);
		struct fw_v4_net_slot *hs = bpf_map_lookup_elem(&fw_v4_net_slots, &slot);

		host = addr & 0xff;
		if (hs && hs->valid && hs->net == net)
			return (hs->bits[host >> 6] >> (host & 63)) & 1;
		if (!hs || hs->overflow) {
			hosts = bpf_map_lookup_elem(&fw_v4_hosts, &net);
			if (hosts)
				return (hosts->bits[host >> 6] >> (host & 63)) & 1;
		}
		/* The slot neither holds this /24 nor overflows: the /24 is leaving
		 * LONGER (its slot is written before its bucket state, both ways)
		 * and keeps no prefix longer than /24 that both lists hold; the
		 * exact addresses are the safe answer. Likewise for a bitmap not
		 * yet in the hash (the provider writes it before the state that
		 * points at it). */
	}
	{
		__u32 bucket = (addr * FW_V4_SLOT_MULT) >> (32 - FW_V4_WAY_BITS);
		struct fw_v4_ways *w = bpf_map_lookup_elem(&fw_v4_ways, &bucket);

		if (w) {
			/* Unrolled: twelve compares of one cache line. */
#pragma unroll
			for (int i = 0; i < FW_WAYS; i++)
				if (((w->addr[i] ^ saddr) | (w->valid[i] ^ 1)) == 0)
					return 1;
			if (!w->overflow)
				return 0;
		}
	}
	return bpf_map_lookup_elem(&deny_v4_exact, &key) != NULL;
}

/* Index of the lowest set bit of a non-zero word, without branches (a loop
 * with branches here multiplies the verifier's states past its limit). */
static __always_inline __u32 lowest_bit(__u64 x)
{
	return __builtin_popcountll((x & -x) - 1);
}

/* Which byte holds the lowest set bit of m, whose set bits are all bit 7 of
 * their byte: that bit, moved to bit 0 of byte j, times a constant whose byte
 * 7 - j is j, leaves j in the top byte (a multiply, not lowest_bit's popcount,
 * which BPF has no instruction for: ~20 instructions). */
static __always_inline __u32 lowest_tag(__u64 m)
{
	return (((m & -m) >> 7) * 0x0001020304050607ULL) >> 56;
}

/* Whether the key (len, h:l) is listed (the masked address's halves in host
 * order; len 25..128): its fw_v6_ways bucket, and when the bucket overflows the
 * hash, fw_v6_long for a prefix or deny_v6_exact for an address. Inlined where
 * a packet asks it at most once (an EXACT bucket's address; a LONGER bucket's
 * longest length): the call of fw_v6_key_listed below costs a few ns. */
static __always_inline int v6_key_listed(__u64 h, __u64 l, __u32 len)
{
	struct fw_v6_prefix_key key = { .prefixlen = len };
	__u64 hb = bpf_cpu_to_be64(h), lb = bpf_cpu_to_be64(l);
	__u32 x = 0, bucket;
	struct fw_v6_ways *w;

	x = (x ^ (__u32)(h >> 32)) * FW_V4_SLOT_MULT;
	x = (x ^ (__u32)h) * FW_V4_SLOT_MULT;
	x = (x ^ (__u32)(l >> 32)) * FW_V4_SLOT_MULT;
	x = (x ^ (__u32)l) * FW_V4_SLOT_MULT;
	x = (x ^ len) * FW_V4_SLOT_MULT;
	bucket = x >> (32 - FW_V6_WAY_BITS);
	w = bpf_map_lookup_elem(&fw_v6_ways, &bucket);
	if (w) {
		const __u64 low7 = 0x7f7f7f7f7f7f7f7fULL;
		__u64 probe = ((x >> 7) & 0xff) * 0x0101010101010101ULL;

#pragma unroll
		for (int half = 0; half < 2; half++) {
			/* A high bit per byte where the way's tag is the probe's (exact:
			 * no borrow crosses bytes). */
			__u64 y = *(__u64 *)__builtin_assume_aligned(&w->tag[half * 8], 8) ^ probe;
			__u64 m = ~((((y & low7) + low7) | y) | low7);

			for (int j = 0; j < 8 && m; j++) {
				__u32 i = half * 8 + lowest_tag(m);

				m &= m - 1;
				/* Opaque to the compiler, so that it keeps the check the
				 * verifier needs (it cannot bound lowest_bit's result). */
				asm volatile("" : "+r"(i));
				if (i >= FW_WAYS)
					break;
				if ((((*(__u64 *)&w->addr[i][0] ^ hb) | (*(__u64 *)&w->addr[i][8] ^ lb)) | ((w->len[i] ^ len) | (w->valid[i] ^ 1))) == 0)
					return 1;
			}
		}
		if (!w->overflow)
			return 0;
	}
	__builtin_memcpy(key.addr, &hb, 8);
	__builtin_memcpy(key.addr + 8, &lb, 8);
	if (len == 128)
		return bpf_map_lookup_elem(&deny_v6_exact, key.addr) != NULL;
	return bpf_map_lookup_elem(&fw_v6_long, &key) != NULL;
}

/* v6_key_listed as a global function, for the walk of the lengths: the
 * verifier checks it once, not once per IPv6 prefix length the walk may try
 * (up to 103); inlined there, its twelve compares multiplied the verifier's
 * work past its limit. */
__noinline int fw_v6_key_listed(__u64 h, __u64 l, __u32 len)
{
	return v6_key_listed(h, l, len);
}

/* hi:lo (the address's two halves in host order) masked to `len` (25..127),
 * in place. */
static __always_inline void v6_mask(__u64 *h, __u64 *l, __u32 len)
{
	if (len >= 64)
		*l = len == 64 ? 0 : *l & (~0ULL << (128 - len));
	else {
		*h &= ~0ULL << (64 - len);
		*l = 0;
	}
}

/* Whether a prefix of length `len` (25..127) covers hi:lo, by the global
 * function. */
static __always_inline int v6_long_hit(__u64 hi, __u64 lo, __u32 len)
{
	v6_mask(&hi, &lo, len);
	return fw_v6_key_listed(hi, lo, len);
}

static __always_inline int v6_denied(const struct in6_addr *saddr)
{
	__u32 top24 = ((__u32)saddr->s6_addr[0] << 16) | ((__u32)saddr->s6_addr[1] << 8) | saddr->s6_addr[2];
	__u32 state = bucket_state(&fw_v6_index, top24);
	struct fw_v6_addr key;
	__u64 hi, lo;

	if (state == FW_BUCKET_NONE)
		return 0;
	if (state == FW_BUCKET_DENY)
		return 1;
	/* Map keys must live on the stack: helpers do not take packet pointers
	 * as keys for these map types. */
	__builtin_memcpy(key.addr, saddr, sizeof(key.addr));
	__builtin_memcpy(&hi, key.addr, 8);
	__builtin_memcpy(&lo, key.addr + 8, 8);
	hi = bpf_be64_to_cpu(hi);
	lo = bpf_be64_to_cpu(lo);
	if (state == FW_BUCKET_LONGER) {
		__u32 zero = 0;
		struct fw_v6_lengths *lengths = bpf_map_lookup_elem(&fw_v6_lengths, &zero);
		__u64 w;

		if (lengths) {
			/* Longest first (the set is stored reversed: bit k is
			 * length 127 - k); each present length is one lookup.
			 * The longest is asked inline (below the loops it
			 * would be asked by a call, one per length). */
			__u64 w0 = lengths->bits[0], w1 = lengths->bits[1];
			__u32 first = 0;

			if (w0) {
				first = 127 - lowest_bit(w0);
				w0 &= w0 - 1;
			} else if (w1) {
				first = 63 - lowest_bit(w1);
				w1 &= w1 - 1;
			}
			if (first >= 25) {
				__u64 h = hi, l = lo;

				v6_mask(&h, &l, first);
				if (v6_key_listed(h, l, first))
					return 1;
			}
			w = w0;
			for (int i = 0; i < 64 && w; i++) {
				__u32 k = lowest_bit(w);

				w &= w - 1;
				if (v6_long_hit(hi, lo, 127 - k))
					return 1;
			}
			w = w1;
			for (int i = 0; i < 64 && w; i++) {
				__u32 k = lowest_bit(w);

				w &= w - 1;
				if (63 - k < 25)
					break;
				if (v6_long_hit(hi, lo, 63 - k))
					return 1;
			}
		}
		return fw_v6_key_listed(hi, lo, 128);
	}
	return v6_key_listed(hi, lo, 128);
}

static __always_inline void count(__u32 stat, __u64 bytes)
{
	struct fw_counter *c = bpf_map_lookup_elem(&fw_stats, &stat);

	if (!c)
		return;
	c->packets++;
	c->bytes += bytes;
}

SEC("xdp")
int xdp_firewall(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = data };
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	int family, denied = 0;

	family = parse_ip_frame(&nh, data_end, &iph, &ip6h);
	if (family == 6)
		denied = v6_denied(&ip6h->saddr);
	else if (family == 4)
		denied = v4_denied(iph->saddr);

	/* SEC("xdp") without frags: the frame is all linear, so this is its
	 * full length. */
	count(denied ? FW_STAT_DROP : FW_STAT_PASS, data_end - data);
	return xdp_chain_verdict(ctx, denied ? XDP_DROP : XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
