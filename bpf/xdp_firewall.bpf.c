/* XDP firewall: drop packets whose IPv4/IPv6 source address is denied, by exact
 * address (hash maps) or by prefix (LPM tries); pass everything else.
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

/* Per-CPU so that counting needs no atomics; user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_STAT_MAX);
	__type(key, __u32);
	__type(value, struct fw_counter);
} fw_stats SEC(".maps");

static __always_inline int v4_denied(__be32 saddr)
{
	struct fw_v4_prefix_key pkey = { .prefixlen = 32 };
	__u32 key = saddr;

	if (bpf_map_lookup_elem(&deny_v4_exact, &key))
		return 1;
	__builtin_memcpy(pkey.addr, &saddr, sizeof(pkey.addr));
	return bpf_map_lookup_elem(&deny_v4_prefix, &pkey) != NULL;
}

static __always_inline int v6_denied(const struct in6_addr *saddr)
{
	struct fw_v6_prefix_key pkey = { .prefixlen = 128 };
	struct fw_v6_addr key;

	/* Map keys must live on the stack: helpers do not take packet pointers
	 * as keys for these map types. */
	__builtin_memcpy(key.addr, saddr, sizeof(key.addr));
	if (bpf_map_lookup_elem(&deny_v6_exact, &key))
		return 1;
	__builtin_memcpy(pkey.addr, saddr, sizeof(pkey.addr));
	return bpf_map_lookup_elem(&deny_v6_prefix, &pkey) != NULL;
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
	struct ethhdr *eth;
	struct iphdr *iph;
	struct ipv6hdr *ip6h;
	int eth_type, denied = 0;

	eth_type = parse_ethhdr(&nh, data_end, &eth);
	if (eth_type == bpf_htons(ETH_P_IP)) {
		if (parse_iphdr(&nh, data_end, &iph) >= 0)
			denied = v4_denied(iph->saddr);
	} else if (eth_type == bpf_htons(ETH_P_IPV6)) {
		if (parse_ip6hdr(&nh, data_end, &ip6h) >= 0)
			denied = v6_denied(&ip6h->saddr);
	}

	/* SEC("xdp") without frags: the frame is all linear, so this is its
	 * full length. */
	count(denied ? FW_STAT_DROP : FW_STAT_PASS, data_end - data);
	return xdp_chain_verdict(ctx, denied ? XDP_DROP : XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
