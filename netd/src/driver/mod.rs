//! Network drivers other than the bridge: what their networks are made of on the node
//! and how a container's interface joins one. The bridge driver's links are made by
//! `endpoint` and `netlink::ensure_bridge`; what each driver offers is `Capabilities`.

pub mod macvlan;

use crate::state::Network;

/// What a network's driver offers, which the daemon checks before it is asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `-p`: published ports (netd's DNAT on the node's uplink).
    pub publish: bool,
    /// The containers' traffic passes netd's programs (isolation, anti-spoofing,
    /// masquerade, the fast paths).
    pub policed: bool,
}

pub fn capabilities(n: &Network) -> Capabilities {
    if n.is_macvlan() {
        Capabilities {
            publish: false,
            policed: false,
        }
    } else {
        Capabilities {
            publish: true,
            policed: true,
        }
    }
}
