/* The program bpfleet attaches to an interface's XDP hook when more than one
 * of its XDP programs share the interface: it runs the first member of the
 * interface's chain (see include/xdp_chain.h). With no member present it
 * passes everything, so an empty chain is harmless while members come and go.
 *
 * Its only map, xdp_chain, is pinned by the provider beside it and given to
 * every member at load time. */
#define XDP_CHAIN_DISPATCHER
#include "xdp_chain.h"

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	return xdp_chain_from(ctx, 0);
}

char LICENSE[] SEC("license") = "GPL";
