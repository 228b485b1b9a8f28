/* The maps of bpf/xdp_maglev.bpf.c (layouts in maglev.h) and the per-CPU
 * counting every path does. Included by that program only: each object that
 * includes it gets maps of its own. */
#ifndef BPFLEET_MAGLEV_MAPS_H
#define BPFLEET_MAGLEV_MAPS_H

#include "parsing.h"
#include "maglev.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, struct lb_vip_key);
	__type(value, struct lb_vip);
} lb_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_VIP_SLOTS);
	__type(key, __u32);
	__type(value, struct lb_vip_slot);
} lb_vip_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_TABLE_CAPACITY);
	__type(key, __u32);
	__type(value, __u32); /* backend index; LB_NO_BACKEND (0) names none */
} maglev_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_FLOW_MAX_ENTRIES);
	__type(key, struct lb_flow_key);
	__type(value, __u32); /* backend index */
} lb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_NAT_MAX_ENTRIES);
	__type(key, struct lb_flow_key); /* backend -> client, as replies arrive */
	__type(value, struct lb_nat_origin);
} lb_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} lb_config SEC(".maps");

/* Per-CPU so that counting needs no atomics; user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lb_counter);
} lb_vip_ctr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_counter);
} lb_backend_ctr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_STAT_MAX);
	__type(key, __u32);
	__type(value, struct lb_counter);
} lb_stats SEC(".maps");


static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct lb_counter *c = bpf_map_lookup_elem(map, &index);

	if (!c)
		return;
	c->packets++;
	c->bytes += bytes;
}

#endif
