//! The connection table: one entry per direction of a translated flow, keyed by the
//! tuple as the program that looks it up sees it, holding the tuple to write. The
//! partner entry's key is derived, not stored: the written tuple, reversed, looked up
//! where the replies pass (`partner_dir`). IPv4 and IPv6 flows have a table each, of
//! the same layout over their address type.

use crate::maps::Addr6;

/// The hook that looks an entry up.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
/// Packets from a container, at its host-side veth (hairpin flows: both halves here).
pub const DIR_FROM_ENDPOINT: u8 = 2;

/// Where the replies of a flow whose first half is looked up at `dir` pass.
pub const fn partner_dir(dir: u8) -> u8 {
    match dir {
        DIR_INGRESS => DIR_EGRESS,
        DIR_EGRESS => DIR_INGRESS,
        other => other,
    }
}

/// How the flow was created (for listing and purging).
pub const ORIGIN_DNAT: u8 = 0;
pub const ORIGIN_SNAT: u8 = 1;
/// A container calling a published port through a node address.
pub const ORIGIN_HAIRPIN: u8 = 2;
/// Egress of a network without masquerade, not translated but tracked, so that its
/// replies are told from traffic the uplink must not let in (`drop_not_published`).
pub const ORIGIN_TRACKED: u8 = 3;
/// NAT46: an IPv6 client to an IPv4-only container's published port. Both halves are in
/// the IPv6 table, the IPv4 ends as v4-mapped addresses (`::ffff:a.b.c.d`).
pub const ORIGIN_NAT46: u8 = 4;

/// Entry flag: after the rewrite, send the packet back out of the interface it came in on
/// (a container calling its own published port: the stack must not see a packet whose
/// source is the node's own gateway address).
pub const FLAG_REDIRECT_BACK: u8 = 1;
/// Entry flag: this half carries the replies (the other half saw the first packet).
pub const FLAG_REPLY: u8 = 2;
/// Entry flag: the flow's end (both sides' FIN, or a reset) was reported to a monitor.
pub const FLAG_END_REPORTED: u8 = 8;
/// Entry flag (reply half of a hairpin flow between two networks): after the rewrite,
/// deliver the packet straight into the calling container, whose host-side veth is the
/// entry's `ifindex`. Routed by the stack, a packet from the node's own address arriving
/// on a bridge would be dropped as a martian.
pub const FLAG_REDIRECT_TO_CALLER: u8 = 4;

/// What an entry's direction has seen (a bit set, updated in place): TCP flags, and
/// whether any packet at all went this way (so a reply is visible at once, without
/// waiting for the last-seen timestamp's granularity).
pub const SEEN_SYN: u8 = 1;
pub const SEEN_ACK: u8 = 2;
pub const SEEN_FIN: u8 = 4;
pub const SEEN_RST: u8 = 8;
pub const SEEN_PACKET: u8 = 16;
/// An ACK without SYN or RST: acknowledging something beyond the handshake (or data).
pub const SEEN_ACK_ONLY: u8 = 32;
/// A half that saw either is closing: a SYN after it starts the tuple over.
pub const SEEN_CLOSED: u8 = SEEN_FIN | SEEN_RST;

/// A flow half's key, for an address family: `A` is `u32` for IPv4 (`FlowKey`) and
/// `maps::Addr6` for IPv6 (`FlowKey6`). One layout, so that one copy of the connection
/// table's code serves both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyOf<A> {
    /// Network order.
    pub src_addr: A,
    pub dst_addr: A,
    /// Network order.
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}

/// A flow half: what its packets are written as, and what they did (see `FlowKeyOf`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntryOf<A> {
    /// The packet's tuple after translation (network order); unchanged ends are equal to
    /// the key's.
    pub src_addr: A,
    pub dst_addr: A,
    pub src_port: u16,
    pub dst_port: u16,
    pub origin: u8,
    /// `SEEN_*` bits for packets of this direction.
    pub seen: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    pub _pad: u8,
    /// The endpoint's host-side veth (the backend's for DNAT and hairpin flows), for
    /// purges and redirects; 0 when unknown.
    pub ifindex: u32,
    /// Packets of this direction, modulo 2^32 (32 bits, in what was padding, keep the
    /// entry small: the programs copy it onto a stack near its limit), added atomically.
    pub packets: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of creation and of the latest packet.
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Bytes of this direction (IP total lengths, as Linux's conntrack counts them),
    /// added atomically (several CPUs may carry a direction).
    pub bytes: u64,
}

pub type FlowKey = FlowKeyOf<u32>;
pub type FlowEntry = FlowEntryOf<u32>;
pub type FlowKey6 = FlowKeyOf<Addr6>;
pub type FlowEntry6 = FlowEntryOf<Addr6>;

/// `FlowEntry` as the first layout (`NETD_FLOWS_V1`) had it: the same fields up to
/// `last_seen_ns`, without the byte count and with padding where the packet count is. A
/// daemon adopting such a table (an upgrade) copies its entries over with counts from
/// zero.
pub const FLOW_ENTRY_V1_SIZE: usize = 40;

impl<A: Copy> FlowKeyOf<A> {
    /// The key under which the other direction of this flow is stored.
    pub fn partner(&self, entry: &FlowEntryOf<A>) -> FlowKeyOf<A> {
        FlowKeyOf {
            src_addr: entry.dst_addr,
            dst_addr: entry.src_addr,
            src_port: entry.dst_port,
            dst_port: entry.src_port,
            proto: self.proto,
            dir: partner_dir(self.dir),
            _pad: [0; 2],
        }
    }

    /// The tuple reversed, as a translated tuple for the partner's entry.
    pub fn reversed(&self) -> (A, A, u16, u16) {
        (self.dst_addr, self.src_addr, self.dst_port, self.src_port)
    }
}

const _: () = {
    assert!(core::mem::size_of::<FlowKey>() == 16);
    assert!(core::mem::size_of::<FlowEntry>() == 48);
    assert!(core::mem::offset_of!(FlowEntry, bytes) == FLOW_ENTRY_V1_SIZE);
    assert!(core::mem::size_of::<FlowKey6>() == 40);
    assert!(core::mem::size_of::<FlowEntry6>() == 72);
};

impl<A> FlowEntryOf<A> {
    /// The half that saw the flow's first packet.
    pub const fn is_first(&self) -> bool {
        self.flags & FLAG_REPLY == 0
    }
}

/// The endpoint a flow counts against (its quota of confirmed flows), from its first
/// half: the container that opened it (masquerade, hairpin, tracked egress) or the one a
/// published port leads to (NAT46's too: its v4-mapped address, as the flow's IPv4 end).
pub const fn owner<A: Copy>(first_key: &FlowKeyOf<A>, first: &FlowEntryOf<A>) -> A {
    if first.origin == ORIGIN_DNAT || first.origin == ORIGIN_NAT46 {
        first.dst_addr
    } else {
        first_key.src_addr
    }
}

/// Whether a flow has proved itself, so that it moves to the table whose entries are
/// never evicted, from its first half's and its reply half's `seen`: TCP once the side
/// that answered has acknowledged something beyond the handshake (an ACK without SYN:
/// the peer's data or its own), which a blind spoofer cannot bring about (a SYN, or a SYN
/// and a bare ACK, from a forged address get a SYN-ACK and a reset, nothing more);
/// anything else once a reply came back.
pub const fn confirmed(proto: u8, first: u8, reply: u8) -> bool {
    if (first | reply) & SEEN_CLOSED != 0 {
        return false;
    }
    if proto == crate::PROTO_TCP {
        first & SEEN_ACK != 0 && reply & SEEN_ACK_ONLY != 0
    } else {
        first & SEEN_PACKET != 0 && reply & SEEN_PACKET != 0
    }
}

pub const SECOND: u64 = 1_000_000_000;
/// Idle timeouts (like Cilium's and Calico's): TCP established, TCP opening, TCP closing
/// (FIN or RST seen), anything else answered, anything else never answered. Flows that
/// were never answered go soonest: they are what a flood is made of.
pub const TCP_ESTABLISHED_TIMEOUT: u64 = 6 * 3600 * SECOND;
pub const TCP_SYN_TIMEOUT: u64 = 30 * SECOND;
pub const TCP_CLOSING_TIMEOUT: u64 = 10 * SECOND;
pub const OTHER_TIMEOUT: u64 = 60 * SECOND;
pub const UNREPLIED_TIMEOUT: u64 = 30 * SECOND;

/// How long a flow may stay idle, judged on both its halves.
pub fn timeout<A>(key: &FlowKeyOf<A>, a: &FlowEntryOf<A>, b: Option<&FlowEntryOf<A>>) -> u64 {
    let seen_a = a.seen;
    let seen_b = match b {
        Some(b) => b.seen,
        None => 0,
    };
    if key.proto != crate::PROTO_TCP {
        return if seen_a & SEEN_PACKET != 0 && seen_b & SEEN_PACKET != 0 {
            OTHER_TIMEOUT
        } else {
            UNREPLIED_TIMEOUT
        };
    }
    if (seen_a | seen_b) & SEEN_CLOSED != 0 {
        TCP_CLOSING_TIMEOUT
    } else if seen_a & SEEN_ACK != 0 && seen_b & SEEN_ACK != 0 {
        TCP_ESTABLISHED_TIMEOUT
    } else {
        TCP_SYN_TIMEOUT
    }
}

/// Whether one half of a flow (with its partner, if any) has been idle past its timeout
/// at `now` (CLOCK_MONOTONIC ns). A half refreshed after `now` was read is never expired.
pub fn is_expired<A>(
    key: &FlowKeyOf<A>,
    entry: &FlowEntryOf<A>,
    partner: Option<&FlowEntryOf<A>>,
    now: u64,
) -> bool {
    let mut last = entry.last_seen_ns;
    if let Some(p) = partner
        && p.last_seen_ns > last
    {
        last = p.last_seen_ns;
    }
    now.saturating_sub(last) > timeout(key, entry, partner)
}
