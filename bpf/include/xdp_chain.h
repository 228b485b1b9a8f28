/* How bpfleet's XDP programs share one interface (a firewall in front of a
 * load balancer). The interface's hook holds xdp_dispatcher, which tail-calls
 * the first program present in the interface's xdp_chain array; a member that
 * would return XDP_PASS tail-calls the next present slot instead, so a packet
 * passes to the stack only after every member passed it. Any other verdict
 * (drop, tx, redirect) ends the chain, as with libxdp's dispatcher.
 *
 * A member learns its place from its own one-word xdp_chain_next map: the
 * first slot after its own, or 0 when it is attached alone (then it never
 * looks at xdp_chain). The provider writes it before the program enters a
 * slot, and loads a chained member against the interface's pinned xdp_chain;
 * a program attached alone gets a private, empty one. */
#ifndef BPFLEET_XDP_CHAIN_H
#define BPFLEET_XDP_CHAIN_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Slots are priorities: 0 runs first. Keep in sync with provider/remote/xdpHook.ts. */
#define XDP_CHAIN_SLOTS 8

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, XDP_CHAIN_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} xdp_chain SEC(".maps");

/* Tail-calls the first present slot at or after `from`; returns only when
 * there is none (a tail call that succeeds never returns). */
static __always_inline int xdp_chain_from(struct xdp_md *ctx, __u32 from)
{
#pragma unroll
	for (__u32 slot = 0; slot < XDP_CHAIN_SLOTS; slot++)
		if (slot >= from)
			bpf_tail_call(ctx, &xdp_chain, slot);
	return XDP_PASS;
}

#ifndef XDP_CHAIN_DISPATCHER
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} xdp_chain_next SEC(".maps");

/* A member's verdict: XDP_PASS goes on to the next member, if any. */
static __always_inline int xdp_chain_verdict(struct xdp_md *ctx, int verdict)
{
	__u32 zero = 0;
	__u32 *next;

	if (verdict != XDP_PASS)
		return verdict;
	next = bpf_map_lookup_elem(&xdp_chain_next, &zero);
	if (!next || *next == 0)
		return XDP_PASS;
	return xdp_chain_from(ctx, *next);
}
#endif

#endif
