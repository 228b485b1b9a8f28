/* The single-shot regime of issue 12: BPF_PROG_TEST_RUN with repeat 1, many
 * times, each call on the same input frame. `repeat N` runs the program again
 * on the frame the previous run left, which a program that rewrites addresses
 * (NAT) or grows the frame (IPIP) cannot take; one call per packet can, and
 * costs the kernel's per-call setup (an empty XDP program reads ~80 ns this
 * way), so its figures are only comparable to an empty program timed alike.
 *
 *   single_shot PROG_PIN DATA_IN CTX_IN|- CALLS
 *
 * Prints one JSON line: the retval of the first call, how many calls returned
 * another, and the interquartile mean and median of the kernel's per-call
 * durations (ns). Run it inside the namespace whose FIB the program should
 * see (nsenter --net=...). Built by bench/singleShot.ts with the system gcc. */
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static void *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	static char buf[65536];
	void *out;

	if (!f) {
		perror(path);
		exit(1);
	}
	*len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	out = malloc(*len ? *len : 1);
	memcpy(out, buf, *len);
	return out;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	union bpf_attr attr;
	size_t data_len, ctx_len = 0;
	void *data, *ctx = NULL;
	static char out[65536 + 512];
	uint32_t *durations, first = 0, others = 0;
	long calls, i, lo, hi;
	double sum = 0;
	int fd;

	if (argc != 5) {
		fprintf(stderr, "usage: %s PROG_PIN DATA_IN CTX_IN|- CALLS\n", argv[0]);
		return 2;
	}
	calls = strtol(argv[4], NULL, 10);
	if (calls < 4) {
		fprintf(stderr, "CALLS must be at least 4\n");
		return 2;
	}
	memset(&attr, 0, sizeof(attr));
	attr.pathname = (uintptr_t)argv[1];
	fd = bpf(BPF_OBJ_GET, &attr);
	if (fd < 0) {
		perror("BPF_OBJ_GET");
		return 1;
	}
	data = read_file(argv[2], &data_len);
	if (strcmp(argv[3], "-") != 0)
		ctx = read_file(argv[3], &ctx_len);
	durations = calloc(calls, sizeof(*durations));

	for (i = 0; i < calls; i++) {
		memset(&attr, 0, sizeof(attr));
		attr.test.prog_fd = fd;
		attr.test.data_in = (uintptr_t)data;
		attr.test.data_size_in = data_len;
		attr.test.data_out = (uintptr_t)out;
		attr.test.data_size_out = sizeof(out);
		attr.test.ctx_in = (uintptr_t)ctx;
		attr.test.ctx_size_in = ctx_len;
		attr.test.repeat = 1;
		if (bpf(BPF_PROG_TEST_RUN, &attr) < 0) {
			perror("BPF_PROG_TEST_RUN");
			return 1;
		}
		if (i == 0)
			first = attr.test.retval;
		else if (attr.test.retval != first)
			others++;
		durations[i] = attr.test.duration;
	}
	qsort(durations, calls, sizeof(*durations), cmp_u32);
	lo = calls / 4;
	hi = calls - calls / 4;
	for (i = lo; i < hi; i++)
		sum += durations[i];
	printf("{\"retval\":%u,\"otherRetvals\":%u,\"calls\":%ld,\"iqmNs\":%.2f,\"medianNs\":%u}\n", first, others, calls,
	       sum / (hi - lo), durations[calls / 2]);
	return 0;
}
