// SPDX-License-Identifier: Apache-2.0
//
// gtmd's XDP program: redirects UDP datagrams addressed to one of gtmd's listeners into
// the AF_XDP socket of the receive queue they arrived on (XSKMAP `xsks`, key: RX queue
// index), and passes everything else to the kernel: TCP, ARP, ICMP, other addresses and
// ports, IPv4 fragments and IPv4 headers with options, IPv6 with extension headers, VLAN
// tags. A queue without a socket in `xsks` passes too (bpf_redirect_map's default).
//
// The listeners are the keys of `dst4` and `dst6` (address in network order, port in
// network order); address 0 (0.0.0.0 / ::) is a wildcard for its port. gtmd fills the
// maps before it attaches the program.
//
// Build: tools/xdp/build (clang -O2 -g -target bpf, paths mapped to `.` and DWARF stripped
// so that a build is byte-identical anywhere; the BTF stays, aya reads the maps from it).
// The object is committed as src/shard/xdp/gtmd-xdp.o, so building gtmd needs no clang;
// `tools/xdp/build --check` (run by tools/test when clang is present) fails if it is stale.
// Debian: apt-get install clang libbpf-dev (for <bpf/bpf_helpers.h>).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct key4 {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct key6 {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct key4);
	__type(value, __u8);
} dst4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct key6);
	__type(value, __u8);
} dst6 SEC(".maps");

static __always_inline int listened4(__u32 addr, __u16 port)
{
	struct key4 k = { .addr = addr, .port = port, .pad = 0 };
	if (bpf_map_lookup_elem(&dst4, &k))
		return 1;
	k.addr = 0;
	return bpf_map_lookup_elem(&dst4, &k) != 0;
}

static __always_inline int listened6(const struct in6_addr *addr, __u16 port)
{
	struct key6 k = { .port = port, .pad = 0 };
	__builtin_memcpy(k.addr, addr, 16);
	if (bpf_map_lookup_elem(&dst6, &k))
		return 1;
	__builtin_memset(k.addr, 0, 16);
	return bpf_map_lookup_elem(&dst6, &k) != 0;
}

SEC("xdp")
int gtmd_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		// no options, UDP, not a fragment (MF or an offset)
		if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return XDP_PASS;
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return XDP_PASS;
		if (!listened4(ip->daddr, udp->dest))
			return XDP_PASS;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		// UDP right after the fixed header: extension headers (fragments) pass
		if (ip6->nexthdr != IPPROTO_UDP)
			return XDP_PASS;
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return XDP_PASS;
		if (!listened6(&ip6->daddr, udp->dest))
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

// No GPL-only helper is used (bpf_map_lookup_elem, bpf_redirect_map).
char LICENSE[] SEC("license") = "Apache-2.0";
