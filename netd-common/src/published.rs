//! Published ports: `(proto, host address, host port)` to the container that serves it.

/// Key of `PUBLISHED_PORTS`. `addr == 0` is the wildcard binding (every node address).
/// The padding is explicit so that both sides hash the same bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Network order; 0 for the wildcard.
    pub addr: u32,
    /// Network order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `PUBLISHED_PORTS`: where the traffic goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Container address, network order.
    pub addr: u32,
    /// Container port, network order.
    pub port: u16,
    pub _pad: u16,
    /// The host-side veth of the container's endpoint (for redirects and purges).
    pub ifindex: u32,
}

const _: () = {
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::size_of::<Backend>() == 12);
};
