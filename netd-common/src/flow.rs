//! The connection table: one entry per direction of a translated flow, keyed by the
//! tuple as the program that looks it up sees it. The partner entry's key is derived, not
//! stored: apply the entry's rewrite to its key, swap the ends and flip `dir`.

/// The hook that looks an entry up.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Which end of the packet an entry rewrites.
pub const REWRITE_DST: u8 = 0;
pub const REWRITE_SRC: u8 = 1;

/// How the flow was created (for listing and purging).
pub const ORIGIN_DNAT: u8 = 0;
pub const ORIGIN_SNAT: u8 = 1;

/// What an entry's direction has seen (a bit set, updated in place): TCP flags, and
/// whether any packet at all went this way (so a reply is visible at once, without
/// waiting for the last-seen timestamp's granularity).
pub const SEEN_SYN: u8 = 1;
pub const SEEN_ACK: u8 = 2;
pub const SEEN_FIN: u8 = 4;
pub const SEEN_RST: u8 = 8;
pub const SEEN_PACKET: u8 = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Network order.
    pub src_addr: u32,
    pub dst_addr: u32,
    /// Network order.
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// The address and port written into the end named by `rewrite` (network order).
    pub new_addr: u32,
    pub new_port: u16,
    pub rewrite: u8,
    pub origin: u8,
    /// `SEEN_*` bits for packets of this direction.
    pub seen: u8,
    pub _pad: [u8; 3],
    /// The endpoint's host-side veth, so an endpoint's flows can be purged.
    pub ifindex: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of creation and of the latest packet.
    pub created_ns: u64,
    pub last_seen_ns: u64,
}

impl FlowKey {
    /// The key under which the other direction of this flow is stored, given this
    /// entry's rewrite.
    pub fn partner(&self, entry: &FlowEntry) -> FlowKey {
        let (mut src_addr, mut src_port, mut dst_addr, mut dst_port) =
            (self.src_addr, self.src_port, self.dst_addr, self.dst_port);
        if entry.rewrite == REWRITE_SRC {
            src_addr = entry.new_addr;
            src_port = entry.new_port;
        } else {
            dst_addr = entry.new_addr;
            dst_port = entry.new_port;
        }
        FlowKey {
            src_addr: dst_addr,
            dst_addr: src_addr,
            src_port: dst_port,
            dst_port: src_port,
            proto: self.proto,
            dir: self.dir ^ 1,
            _pad: [0; 2],
        }
    }
}
