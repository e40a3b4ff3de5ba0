//! Endpoints' names and addresses: the veth pair that wires a container's namespace to a
//! network's bridge has its host end `ndv…` and, while it is in the node, its container
//! end `ndp…`; a container's MAC follows Docker's scheme. What wiring one takes is
//! planned in `daemon::plan` and applied by `daemon::executor`.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::netlink::Netlink;

/// Every host-side veth netd makes starts with this, so that leftovers are recognised.
pub const HOST_VETH_PREFIX: &str = "ndv";
/// The container-side end before it moves into the container's namespace.
pub const PEER_PREFIX: &str = "ndp";

/// Link names are at most 15 bytes.
pub fn host_veth_name(id: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", &id[..id.len().min(12)])
}

/// Docker's MAC scheme: 02:42 followed by the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The fixed MAC of a link of the node with these addresses (a bridge from its gateways, a
/// macvlan shim): Docker's scheme from the IPv4 one, and on an IPv6-only network 02:42
/// followed by the IPv6 address's last 32 bits. (A container there gets a random one:
/// `random_mac`.)
pub fn mac_of(ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> [u8; 6] {
    match (ip, ip6) {
        (Some(ip), _) => mac_for(ip),
        (None, Some(ip6)) => {
            let o = ip6.octets();
            [0x02, 0x42, o[12], o[13], o[14], o[15]]
        }
        (None, None) => [0x02, 0x42, 0, 0, 0, 0],
    }
}

/// A unicast, locally administered MAC from random `bytes`.
pub fn random_mac(bytes: [u8; 6]) -> [u8; 6] {
    let mut mac = bytes;
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// `02:42:ac:11:00:02` back to bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `lo` up in a container's namespace (every mode with a namespace of its own).
pub async fn bring_up_loopback(inside: &Netlink) -> Result<()> {
    let lo = inside
        .link_index("lo")
        .await?
        .context("no lo in the container's namespace")?;
    inside.up(lo).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_dockers_scheme_and_round_trip() {
        let mac = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(&mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(mac));
        assert_eq!(parse_mac(""), None);
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(host_veth_name("0123456789abcdef"), "ndv0123456789ab");
    }
}
