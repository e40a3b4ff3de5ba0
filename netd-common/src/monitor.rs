//! `netd monitor`: events the programs send the daemon through a BPF ring buffer, only
//! while a monitor is attached. The daemon writes what it wants into `MONITOR_CONFIG`
//! (all zero: nothing, which is how the programs start); each event is a
//! `MonitorEvent`, or a `MonitorEvent6` for an IPv6 flow (`EVENT_IPV6` in its kind). A
//! per-CPU state (`MONITOR_STATE`) samples and rate-limits them in the
//! kernel and counts those lost to the limit or a full ring.

use crate::maps::Addr6;

/// `MonitorConfig::types` bits.
pub const MONITOR_DROP: u32 = 1;
pub const MONITOR_FLOW: u32 = 2;
pub const MONITOR_TRACE: u32 = 4;

/// `MonitorEvent::kind`.
pub const EVENT_DROP: u8 = 1;
/// A flow created (its first packet, translated).
pub const EVENT_FLOW_NEW: u8 = 2;
/// A flow ended (both sides sent FIN, or one RST); the daemon adds those it expires.
pub const EVENT_FLOW_END: u8 = 3;
/// A packet translated (tuple before and after).
pub const EVENT_TRACE: u8 = 4;
/// An IPv6 packet dropped: `before` holds its source address's 16 bytes, `after` its
/// destination's (the tuples have no room for more).
pub const EVENT_DROP6: u8 = 5;
/// A bit of `kind`: the event is a `MonitorEvent6` (a flow's or a translation's over
/// IPv6, its tuples of IPv6 addresses), e.g. `EVENT_FLOW_NEW | EVENT_IPV6`.
pub const EVENT_IPV6: u8 = 0x80;

/// How a flow ended (`MonitorEvent::hook` of a flow's end): both sides sent FIN, a reset,
/// idle past its timeout (the daemon's collector), removed with its container.
pub const ENDED_FIN: u8 = 1;
pub const ENDED_RESET: u8 = 2;
pub const ENDED_TIMEOUT: u8 = 3;
pub const ENDED_REMOVED: u8 = 4;

/// Bytes of the ring buffer (a power of two, a multiple of the page size).
pub const MONITOR_RING_BYTES: u32 = 1 << 20;

/// Map names: not pinned, so a new daemon starts with monitoring off.
pub const MONITOR_CONFIG: &str = "MONITOR_CONFIG";
pub const MONITOR_STATE: &str = "MONITOR_STATE";
pub const MONITOR_EVENTS: &str = "MONITOR_EVENTS";

/// Index 0 of `MONITOR_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// `MONITOR_*` bits: which events to send (0: none, the programs' only check).
    pub types: u32,
    /// Send one event in `sample` (per CPU); 0 or 1: every one.
    pub sample: u32,
    /// Events each CPU sends per second at most; beyond, they are counted as lost.
    /// 0: no limit.
    pub rate: u32,
    pub _pad: u32,
}

/// Index 0 of `MONITOR_STATE` (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorState {
    /// When this CPU's current one-second window began (CLOCK_MONOTONIC ns).
    pub window_ns: u64,
    /// Events sent in the window.
    pub in_window: u32,
    /// Events offered (for sampling).
    pub offered: u32,
    /// Events sent.
    pub sent: u64,
    /// Events lost: over the rate, or the ring was full.
    pub lost: u64,
}

/// A packet's ends (network order), as an event carries them: `A` is `u32` for IPv4
/// (`EventTuple`) and `maps::Addr6` for IPv6 (`EventTuple6`), as in `flow::FlowKeyOf`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventTupleOf<A> {
    pub src_addr: A,
    pub dst_addr: A,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

pub type EventTuple = EventTupleOf<u32>;
pub type EventTuple6 = EventTupleOf<Addr6>;

/// An event, for an address family as `EventTupleOf`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorEventOf<A> {
    /// `bpf_ktime_get_ns` when it happened.
    pub time_ns: u64,
    /// `EVENT_*`.
    pub kind: u8,
    /// A drop's `Hook`; how a flow ended (`ENDED_*`).
    pub hook: u8,
    /// A drop's or a translation's `Reason`.
    pub reason: u8,
    /// A flow's origin (`flow::ORIGIN_*`).
    pub origin: u8,
    /// Where it happened: the interface whose program saw the packet.
    pub ifindex: u32,
    /// The container's host-side veth the flow belongs to (0: none known).
    pub endpoint: u32,
    /// The packet's length.
    pub len: u32,
    /// The packet as it came (a flow's end: its first packet's tuple).
    pub before: EventTupleOf<A>,
    /// As translated (drops: as it came).
    pub after: EventTupleOf<A>,
    /// An ended flow's packets and bytes (both ways) and how long it lived.
    pub packets: u64,
    pub bytes: u64,
    pub duration_ns: u64,
}

/// The events of IPv4 flows, and every drop (`EVENT_DROP6` included).
pub type MonitorEvent = MonitorEventOf<u32>;
/// The events of IPv6 flows and translations (`kind` has `EVENT_IPV6`).
pub type MonitorEvent6 = MonitorEventOf<Addr6>;

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<MonitorConfig>() == 16);
    assert!(size_of::<MonitorState>() == 32);
    assert!(size_of::<EventTuple>() == 16);
    assert!(size_of::<MonitorEvent>() == 80);
    assert!(size_of::<EventTuple6>() == 40);
    assert!(size_of::<MonitorEvent6>() == 128);
};
