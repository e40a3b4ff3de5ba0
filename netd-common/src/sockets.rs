//! Host-local sockets pointed at a container: which address they really called.

use crate::maps::Addr6;

pub const SOCKET_ORIGINS_MAX: u32 = 65_536;

/// Key: the socket and the container end it was pointed at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketPeer {
    pub cookie: u64,
    /// Network order.
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Value: the address and port the process called (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOrigin {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// `SocketPeer` of an IPv6 socket (`NETD_SOCKETS6_V1`). Every byte is a named field: a
/// hash key has no padding left to chance.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketPeer6 {
    pub cookie: u64,
    /// Network order, as `bpf_sock_addr.user_ip6`.
    pub addr: Addr6,
    pub port: u16,
    pub _pad: [u16; 3],
}

/// `SocketOrigin` of an IPv6 socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOrigin6 {
    pub addr: Addr6,
    pub port: u16,
    pub _pad: u16,
}

const _: () = {
    assert!(core::mem::size_of::<SocketPeer>() == 16);
    assert!(core::mem::size_of::<SocketOrigin>() == 8);
    assert!(core::mem::size_of::<SocketPeer6>() == 32);
    assert!(core::mem::size_of::<SocketOrigin6>() == 20);
};
