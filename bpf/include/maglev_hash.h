/* The Maglev flow hash: the kernel's jhash2() over the flow key. */
#ifndef BPFLEET_MAGLEV_HASH_H
#define BPFLEET_MAGLEV_HASH_H

#include "maglev.h"

/* The seed of the Maglev packet hash. Fixed: load balancers of one fleet must
 * pick the same backend for a flow, whichever of them ECMP sends it to. */
#define LB_HASH_SEED 0

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

/* Bob Jenkins' lookup3, as the kernel's jhash2(): test/kernel/maglev.test.ts
 * recomputes it to predict the backend of a flow. */
#define jhash_mix(a, b, c)                                   \
	do {                                                 \
		a -= c; a ^= rol32(c, 4);  c += b;           \
		b -= a; b ^= rol32(a, 6);  a += c;           \
		c -= b; c ^= rol32(b, 8);  b += a;           \
		a -= c; a ^= rol32(c, 16); c += b;           \
		b -= a; b ^= rol32(a, 19); a += c;           \
		c -= b; c ^= rol32(b, 4);  b += a;           \
	} while (0)

#define jhash_final(a, b, c)                                 \
	do {                                                 \
		c ^= b; c -= rol32(b, 14);                   \
		a ^= c; a -= rol32(c, 11);                   \
		b ^= a; b -= rol32(a, 25);                   \
		c ^= b; c -= rol32(b, 16);                   \
		a ^= c; a -= rol32(c, 4);                    \
		b ^= a; b -= rol32(a, 14);                   \
		c ^= b; c -= rol32(b, 24);                   \
	} while (0)

/* jhash2 over the ten 32-bit words of the flow key (read in host order). */
static __always_inline __u32 flow_hash(const struct lb_flow_key *key)
{
	const __u32 *w = (const __u32 *)key;
	__u32 a, b, c;

	a = b = c = 0xdeadbeef + (10 << 2) + LB_HASH_SEED;
	a += w[0]; b += w[1]; c += w[2];
	jhash_mix(a, b, c);
	a += w[3]; b += w[4]; c += w[5];
	jhash_mix(a, b, c);
	a += w[6]; b += w[7]; c += w[8];
	jhash_mix(a, b, c);
	a += w[9];
	jhash_final(a, b, c);
	return c;
}

/* The lb_vip_index slot of a VIP key: the key's five 32-bit words (read in
 * host order) folded by XOR, then Fibonacci hashing (multiply by 2^32/phi,
 * keep the top bits). Cheap, and provider/maglev/codec.ts vipSlotOf computes
 * the same; a collision costs only a lb_vips lookup (the slot is ASK). */
static __always_inline __u32 lb_vip_slot_of(const struct lb_vip_key *key)
{
	const __u32 *w = (const __u32 *)key;

	return ((w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4]) * 0x9e3779b1u) >> (32 - LB_VIP_SLOT_BITS);
}

#endif
