//! netd's kernel programs, one entry point per attach point; the work is in the modules.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// For BPF's atomic add (see `conntrack::atomic_add`); the programs are built with nightly.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod bench;
#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod csum;
#[cfg(target_arch = "bpf")]
mod endpoint;
#[cfg(target_arch = "bpf")]
mod endpoint6;
#[cfg(target_arch = "bpf")]
mod fast_path;
#[cfg(target_arch = "bpf")]
mod fragment;
#[cfg(target_arch = "bpf")]
mod guard;
#[cfg(target_arch = "bpf")]
mod guard6;
#[cfg(target_arch = "bpf")]
mod host_local;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod icmp6;
#[cfg(target_arch = "bpf")]
mod log;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod monitor;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod nat46;
#[cfg(target_arch = "bpf")]
mod node_sockets;
#[cfg(target_arch = "bpf")]
mod overlay;
#[cfg(target_arch = "bpf")]
mod overlay6;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod parse6;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod policy6;
#[cfg(target_arch = "bpf")]
mod program;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod sweep;
#[cfg(target_arch = "bpf")]
mod tcp_mss;
#[cfg(target_arch = "bpf")]
mod uplink;
#[cfg(target_arch = "bpf")]
mod uplink6;
#[cfg(target_arch = "bpf")]
mod xdp;
#[cfg(target_arch = "bpf")]
mod xdp6;
#[cfg(target_arch = "bpf")]
mod xdp_handoff;
#[cfg(target_arch = "bpf")]
mod xdp_nat46;
#[cfg(target_arch = "bpf")]
mod xlat;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{cgroup_sock_addr, classifier, xdp},
        programs::{SockAddrContext, TcContext, XdpContext},
    };
    use netd_common::maps::Addr6;

    /// TC ingress of the uplink: DNAT of published ports, reverse SNAT of replies, then
    /// (fast path) straight into the container. IPv6 goes to `uplink_ingress6`.
    #[classifier]
    pub fn uplink_ingress(ctx: TcContext) -> i32 {
        if crate::program::is_ipv6(&ctx) {
            return crate::uplink6::hand_over(&ctx);
        }
        crate::uplink::ingress(&ctx)
    }

    /// Tail-called by `uplink_ingress` for IPv6: replies of masqueraded flows; nothing
    /// else gets into a container's subnet.
    #[classifier]
    pub fn uplink_ingress6(ctx: TcContext) -> i32 {
        crate::uplink6::ingress(&ctx)
    }

    /// TC egress of the uplink: SNAT of container egress, reverse DNAT of replies. IPv6
    /// goes to `uplink_egress6`.
    #[classifier]
    pub fn uplink_egress(ctx: TcContext) -> i32 {
        if crate::program::is_ipv6(&ctx) {
            return crate::uplink6::hand_over_egress(&ctx);
        }
        match crate::uplink::egress(&ctx) {
            crate::nat46::TO_NAT46 => crate::nat46::hand_over_node_error(&ctx),
            verdict => verdict,
        }
    }

    /// Tail-called by `uplink_ingress6` for a connection's first packet to the node:
    /// published ports (DNAT66).
    #[classifier]
    pub fn uplink_ingress6_new(ctx: TcContext) -> i32 {
        crate::uplink6::ingress_new(&ctx)
    }

    /// Tail-called by `uplink_ingress6` and `uplink_ingress6_new`: an IPv6 client's
    /// packet to a published port of a container with IPv4 only (NAT46).
    #[classifier]
    pub fn uplink_nat46(ctx: TcContext) -> i32 {
        crate::nat46::ingress(&ctx)
    }

    /// Tail-called by `uplink_egress` for IPv6: masquerade (NAT66).
    #[classifier]
    pub fn uplink_egress6(ctx: TcContext) -> i32 {
        crate::uplink6::egress(&ctx)
    }

    /// Tail-called by `uplink_egress6` for a flow's first packet: the flow created.
    #[classifier]
    pub fn uplink_egress6_new(ctx: TcContext) -> i32 {
        crate::uplink6::egress_new(&ctx)
    }

    /// TC ingress of a container's host-side veth: anti-spoofing, network policy, hairpin
    /// to published ports, and (fast path) translation of traffic leaving by the uplink.
    /// IPv6 goes to `endpoint_ingress6`.
    #[classifier]
    pub fn endpoint_ingress(ctx: TcContext) -> i32 {
        if crate::program::is_ipv6(&ctx) {
            return crate::endpoint6::hand_over(&ctx);
        }
        match crate::endpoint::ingress(&ctx) {
            crate::nat46::TO_NAT46 => crate::nat46::hand_over_reply(&ctx),
            verdict => verdict,
        }
    }

    /// Tail-called by `endpoint_ingress` for a packet into NAT46's pool: a container's
    /// reply to an IPv6 client, translated and sent out of the uplink.
    #[classifier]
    pub fn endpoint_nat46(ctx: TcContext) -> i32 {
        crate::nat46::reply(&ctx)
    }

    /// Tail-called by `endpoint_ingress` for IPv6: the first-hop guards, hairpin flows
    /// and policy.
    #[classifier]
    pub fn endpoint_ingress6(ctx: TcContext) -> i32 {
        crate::endpoint6::ingress(&ctx)
    }

    /// Tail-called by `endpoint_ingress6` for a connection's first packet to a port
    /// published on a node's IPv6 address: the hairpin flow created.
    #[classifier]
    pub fn endpoint_ingress6_new(ctx: TcContext) -> i32 {
        crate::endpoint6::ingress_new(&ctx)
    }

    /// TC egress of a container's host-side veth: counts what is delivered to the
    /// container.
    #[classifier]
    pub fn endpoint_egress(ctx: TcContext) -> i32 {
        crate::endpoint::egress(&ctx)
    }

    /// TC ingress of the node's VXLAN device: frames from containers of other nodes,
    /// checked and delivered into their containers.
    #[classifier]
    pub fn overlay_ingress(ctx: TcContext) -> i32 {
        crate::overlay::ingress(&ctx)
    }

    /// Never attached: `overlay_ingress` for BPF_PROG_TEST_RUN, which cannot give a frame
    /// the tunnel metadata the VXLAN device's receive path gives it: the key is set first
    /// from the context (see `overlay::ingress_keyed`).
    #[classifier]
    pub fn overlay_ingress_keyed(ctx: TcContext) -> i32 {
        crate::overlay::ingress_keyed(&ctx)
    }

    /// Never attached: the daemon's collector runs it (BPF_PROG_TEST_RUN) to remove a
    /// batch of expired flows after judging each again in the kernel.
    #[classifier]
    pub fn flow_sweep(ctx: TcContext) -> i32 {
        crate::sweep::run(&ctx)
    }

    /// `flow_sweep` for the IPv6 connection table.
    #[classifier]
    pub fn flow_sweep6(ctx: TcContext) -> i32 {
        crate::sweep::run6(&ctx)
    }

    /// Node processes connecting to a published port reach the container directly.
    #[cgroup_sock_addr(connect4)]
    pub fn host_connect4(ctx: SockAddrContext) -> i32 {
        crate::host_local::translate_destination::<u32>(&ctx)
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn host_sendmsg4(ctx: SockAddrContext) -> i32 {
        crate::host_local::translate_destination::<u32>(&ctx)
    }

    #[cgroup_sock_addr(recvmsg4)]
    pub fn host_recvmsg4(ctx: SockAddrContext) -> i32 {
        crate::host_local::restore_peer::<u32>(&ctx)
    }

    #[cgroup_sock_addr(getpeername4)]
    pub fn host_getpeername4(ctx: SockAddrContext) -> i32 {
        crate::host_local::restore_peer::<u32>(&ctx)
    }

    /// The same for IPv6 sockets: `[::1]` and the node's IPv6 addresses.
    #[cgroup_sock_addr(connect6)]
    pub fn host_connect6(ctx: SockAddrContext) -> i32 {
        crate::host_local::translate_destination::<Addr6>(&ctx)
    }

    #[cgroup_sock_addr(sendmsg6)]
    pub fn host_sendmsg6(ctx: SockAddrContext) -> i32 {
        crate::host_local::translate_destination::<Addr6>(&ctx)
    }

    #[cgroup_sock_addr(recvmsg6)]
    pub fn host_recvmsg6(ctx: SockAddrContext) -> i32 {
        crate::host_local::restore_peer::<Addr6>(&ctx)
    }

    #[cgroup_sock_addr(getpeername6)]
    pub fn host_getpeername6(ctx: SockAddrContext) -> i32 {
        crate::host_local::restore_peer::<Addr6>(&ctx)
    }

    /// XDP on the uplink: the ingress translation before the kernel builds an skb. IPv6
    /// goes to `uplink_xdp6`.
    #[xdp]
    pub fn uplink_xdp(ctx: XdpContext) -> u32 {
        if crate::xdp::is_ipv6(&ctx) {
            return crate::xdp6::hand_over(&ctx);
        }
        crate::xdp::uplink(&ctx)
    }

    /// Tail-called by `uplink_xdp` for IPv6: DNAT66 and NAT66's replies. NAT46 goes to
    /// `uplink_xdp_nat46`.
    #[xdp]
    pub fn uplink_xdp6(ctx: XdpContext) -> u32 {
        crate::xdp6::uplink(&ctx)
    }

    /// Tail-called by `uplink_xdp6` for a port published for a container with IPv4 only:
    /// NAT46 (IPv6 in, IPv4 out).
    #[xdp]
    pub fn uplink_xdp_nat46(ctx: XdpContext) -> u32 {
        crate::xdp_nat46::uplink(&ctx)
    }

    /// Never attached by the daemon: the benchmark's frame generator. Run with
    /// BPF_PROG_TEST_RUN in live-frames mode on the client's interface, it sends the
    /// frame set in `BENCH_FRAME` out of that interface (XDP_TX), as fast as the kernel
    /// allows.
    #[xdp]
    pub fn bench_transmit(ctx: XdpContext) -> u32 {
        crate::bench::transmit(&ctx)
    }

    /// The same with the IPv6 frame set in `BENCH_FRAME6`.
    #[xdp]
    pub fn bench_transmit6(ctx: XdpContext) -> u32 {
        crate::bench::transmit6(&ctx)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}

/// Built for the host only so that `cargo clippy --workspace` can check this crate.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
