//! What the fast paths share between programs and with the daemon: the note the uplink's
//! XDP program leaves for its TC program, and the node-config flag that turns the
//! redirects on.

/// Written by the XDP program in front of a frame it translated (`bpf_xdp_adjust_meta`),
/// read by the uplink's TC ingress program: the packet is already translated, and
/// belongs to the container behind host-side veth `ifindex` (0: unknown, let the stack
/// route it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMeta {
    pub magic: u32,
    pub ifindex: u32,
}

/// `XdpMeta::magic`: "netd" in ASCII, so that metadata of another program is not taken
/// for ours.
pub const XDP_META_MAGIC: u32 = 0x6e65_7464;

/// `NodeConfig::flags`: after translating, deliver straight into the container
/// (`bpf_redirect_peer`) or out of the uplink (`bpf_redirect_neigh`).
pub const FAST_PATH: u32 = 1;

const _: () = assert!(core::mem::size_of::<XdpMeta>() == 8);
