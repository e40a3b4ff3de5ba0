//! Userspace views of the shared types: aya's `Pod` for maps and bytemuck's for bytes.

use crate::{
    counters::{Counter, EndpointCounters, EndpointDropKey},
    fast_path::XdpMeta,
    flow::{FlowEntry, FlowEntry6, FlowKey, FlowKey6},
    maps::{
        Endpoint6Info, EndpointInfo, FragmentKey, FragmentKey6, FragmentPorts, Nat46Config,
        Nat46Mapping, NetworkInfo, NodeConfig, NodeConfig6, OverlayInfo, RemoteEndpoint,
    },
    monitor::{EventTuple, EventTuple6, MonitorConfig, MonitorEvent, MonitorEvent6, MonitorState},
    published::{Backend, Backend6, PortKey, PortKey6},
    sockets::{SocketOrigin, SocketOrigin6, SocketPeer, SocketPeer6},
};

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: `#[repr(C)]`, only integer fields, and every padding byte is an explicit
        // field, so any bit pattern is valid and there are no uninitialised bytes.
        unsafe impl aya::Pod for $t {}
        // SAFETY: as above: all zeroes is a valid value.
        unsafe impl bytemuck::Zeroable for $t {}
        // SAFETY: as above.
        unsafe impl bytemuck::Pod for $t {}
    )*};
}

pod!(
    PortKey,
    Backend,
    PortKey6,
    Backend6,
    FlowKey,
    FlowEntry,
    FlowKey6,
    FlowEntry6,
    NodeConfig,
    NodeConfig6,
    Nat46Config,
    Nat46Mapping,
    EndpointInfo,
    Endpoint6Info,
    NetworkInfo,
    FragmentKey,
    FragmentKey6,
    FragmentPorts,
    Counter,
    EndpointCounters,
    EndpointDropKey,
    SocketPeer,
    SocketOrigin,
    SocketPeer6,
    SocketOrigin6,
    XdpMeta,
    MonitorConfig,
    MonitorState,
    EventTuple,
    MonitorEvent,
    EventTuple6,
    MonitorEvent6,
    RemoteEndpoint,
    OverlayInfo
);

/// The network-order `u32` the kernel programs compare with a packet's address bytes.
pub fn addr_be(addr: core::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub fn addr_from_be(addr: u32) -> core::net::Ipv4Addr {
    core::net::Ipv4Addr::from(addr.to_ne_bytes())
}

/// An IPv6 address as the kernel programs compare it (`maps::Addr6`).
pub fn addr6_be(addr: core::net::Ipv6Addr) -> crate::maps::Addr6 {
    let o = addr.octets();
    core::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

pub fn addr6_from_be(addr: crate::maps::Addr6) -> core::net::Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, word) in addr.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
    }
    core::net::Ipv6Addr::from(o)
}

/// The link-local address an interface with this MAC has (modified EUI-64, RFC 4291
/// appendix A): what netd gives container interfaces and bridges.
pub fn link_local_for(mac: [u8; 6]) -> core::net::Ipv6Addr {
    let m = mac;
    core::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

impl PortKey {
    pub fn new(proto: u8, addr: core::net::Ipv4Addr, port: u16) -> Self {
        PortKey {
            addr: addr_be(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

impl Backend {
    pub fn new(addr: core::net::Ipv4Addr, port: u16, ifindex: u32) -> Self {
        Backend {
            addr: addr_be(addr),
            port: port.to_be(),
            _pad: 0,
            ifindex,
        }
    }
}

impl PortKey6 {
    pub fn new(proto: u8, addr: core::net::Ipv6Addr, port: u16) -> Self {
        PortKey6 {
            addr: addr6_be(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

impl Backend6 {
    pub fn new(addr: core::net::Ipv6Addr, port: u16, ifindex: u32) -> Self {
        Backend6 {
            addr: addr6_be(addr),
            port: port.to_be(),
            _pad: 0,
            ifindex,
        }
    }
}
