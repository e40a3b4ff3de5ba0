//! Userspace views of the shared types: aya's `Pod` for maps and bytemuck's for bytes.

use crate::{
    counters::{Counter, EndpointCounters, EndpointDropKey},
    fast_path::XdpMeta,
    flow::{FlowEntry, FlowKey},
    maps::{
        EndpointInfo, FragmentKey, FragmentPorts, NetworkInfo, NodeConfig, OverlayInfo,
        RemoteEndpoint,
    },
    monitor::{EventTuple, MonitorConfig, MonitorEvent, MonitorState},
    published::{Backend, PortKey},
    sockets::{SocketOrigin, SocketPeer},
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
    FlowKey,
    FlowEntry,
    NodeConfig,
    EndpointInfo,
    NetworkInfo,
    FragmentKey,
    FragmentPorts,
    Counter,
    EndpointCounters,
    EndpointDropKey,
    SocketPeer,
    SocketOrigin,
    XdpMeta,
    MonitorConfig,
    MonitorState,
    EventTuple,
    MonitorEvent,
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
