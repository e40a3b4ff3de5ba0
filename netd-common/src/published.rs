//! Published ports: `(proto, host address, host port)` to the container that serves it.

use crate::maps::Addr6;

/// Key of `PUBLISHED_PORTS` (`A = u32`) and `PUBLISHED_PORTS6` (`A = Addr6`). An address
/// of all zeroes is the wildcard binding (every node address of the family). The padding
/// is explicit so that both sides hash the same bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKeyOf<A> {
    /// Network order; 0 for the wildcard.
    pub addr: A,
    /// Network order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `PUBLISHED_PORTS` and `PUBLISHED_PORTS6`: where the traffic goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendOf<A> {
    /// Container address, network order.
    pub addr: A,
    /// Container port, network order.
    pub port: u16,
    pub _pad: u16,
    /// The host-side veth of the container's endpoint (for redirects and purges).
    pub ifindex: u32,
}

pub type PortKey = PortKeyOf<u32>;
pub type Backend = BackendOf<u32>;
pub type PortKey6 = PortKeyOf<Addr6>;
pub type Backend6 = BackendOf<Addr6>;

const _: () = {
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::size_of::<Backend>() == 12);
    assert!(core::mem::size_of::<PortKey6>() == 20);
    assert!(core::mem::size_of::<Backend6>() == 24);
};
