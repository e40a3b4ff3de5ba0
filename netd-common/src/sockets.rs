//! Host-local sockets pointed at a container: which address they really called.

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

const _: () = {
    assert!(core::mem::size_of::<SocketPeer>() == 16);
    assert!(core::mem::size_of::<SocketOrigin>() == 8);
};
