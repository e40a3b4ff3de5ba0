//! Whether the node's own sockets use a tuple. Linux's NAT sees the node's connections in
//! conntrack; netd's table holds only translated flows, so before it hands a container's
//! source port to a masqueraded flow it asks the kernel's socket tables instead.

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::TcContext,
};
use netd_common::{PROTO_TCP, PROTO_UDP, maps::Addr6};

/// Whether a packet from `remote:remote_port` to `local:port` (all network order) would
/// reach a socket of this namespace: a connection, a TCP TIME_WAIT or request, or a
/// listener or bound UDP socket on the port. Other protocols: always "yes" (never take
/// their identifier from the container).
#[inline(always)]
pub fn in_use(
    ctx: &TcContext,
    proto: u8,
    remote: u32,
    remote_port: u16,
    local: u32,
    port: u16,
) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: remote,
                daddr: local,
                sport: remote_port,
                dport: port,
            },
        },
    };
    lookup(
        ctx,
        proto,
        &mut tuple,
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>(),
    )
}

/// `in_use` for IPv6.
#[inline(always)]
pub fn in_use6(
    ctx: &TcContext,
    proto: u8,
    remote: Addr6,
    remote_port: u16,
    local: Addr6,
    port: u16,
) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv6: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: remote,
                daddr: local,
                sport: remote_port,
                dport: port,
            },
        },
    };
    lookup(
        ctx,
        proto,
        &mut tuple,
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>(),
    )
}

/// Look up the socket of a tuple whose first `size` bytes are filled in (the family is
/// told by the size).
#[inline(always)]
fn lookup(ctx: &TcContext, proto: u8, tuple: &mut bpf_sock_tuple, size: usize) -> bool {
    let netns = BPF_F_CURRENT_NETNS as u64;
    let skb = ctx.skb.skb as *mut _;
    let size = size as u32;
    // SAFETY: the helpers read `size` bytes of the tuple on our stack; a socket they
    // return is released before we return.
    unsafe {
        let sk = match proto {
            PROTO_TCP => bpf_skc_lookup_tcp(skb, tuple, size, netns, 0),
            PROTO_UDP => bpf_sk_lookup_udp(skb, tuple, size, netns, 0),
            _ => return true,
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk as *mut _);
        true
    }
}
