//! The IPv6 side of the datapath tests: CONTAINER's IPv6 addresses and its neighbours',
//! the node of `datapath_ipv6` and `datapath_fuzz6`, and IPv6 frames.

use std::net::Ipv6Addr;

use netd_common::user::link_local_for;

use super::*;

pub const HOP_BY_HOP: u8 = 0;
pub const TCP6: u8 = 6;
pub const UDP6: u8 = 17;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const AUTH: u8 = 51;
pub const ICMP6: u8 = 58;
pub const NO_NEXT: u8 = 59;
pub const DEST_OPTS: u8 = 60;
pub const MOBILITY: u8 = 135;

/// CONTAINER's network's IPv6 subnet, gateway and address; a neighbour on it; another
/// network with its gateway (a node address) and a container; a host beyond the node.
pub const NET6: &str = "fd00:17::/64";
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 1);
pub const CONTAINER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 2);
pub const NEIGHBOUR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 3);
pub const NEIGHBOUR_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 3];
pub const OTHER_NET6: &str = "fd00:18::/64";
pub const OTHER_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
pub const OTHER_CONTAINER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
pub const BEYOND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The standard node with IPv6: CONTAINER's network and another one have their IPv6
/// subnets, their gateways are node addresses, and the endpoint behind loopback (with
/// `ENDPOINT_*` flags) has its IPv6 side.
pub fn node6(flags: u16) -> TestDatapath {
    let mut t = standard_node();
    t.dp.set_network6(
        NET6.parse().unwrap(),
        Some(network(NETWORK_TAG, NETWORK_MASQUERADE)),
    )
    .unwrap();
    t.dp.set_network6(
        OTHER_NET6.parse().unwrap(),
        Some(network(NETWORK_TAG + 1, NETWORK_MASQUERADE)),
    )
    .unwrap();
    t.dp.set_node_addrs6(&[GATEWAY6, OTHER_GATEWAY6]).unwrap();
    t.dp.register_endpoint(LO, &endpoint_info(flags)).unwrap();
    t.dp.register_endpoint6(LO, Some(&endpoint6_info()))
        .unwrap();
    t
}

/// CONTAINER's link-local address, and its gateway's.
pub fn own_link_local() -> Ipv6Addr {
    link_local_for(CONTAINER_MAC)
}

pub fn gateway_link_local() -> Ipv6Addr {
    link_local_for(GATEWAY_MAC)
}

/// The IPv6 side of the endpoint behind loopback (CONTAINER6, link-local from
/// CONTAINER_MAC, the bridge's link-local from GATEWAY_MAC).
pub fn endpoint6_info() -> netd_common::maps::Endpoint6Info {
    use netd_common::user::addr6_be;
    netd_common::maps::Endpoint6Info {
        addr: addr6_be(CONTAINER6),
        link_local: addr6_be(link_local_for(CONTAINER_MAC)),
        gateway: addr6_be(GATEWAY6),
        gateway_link_local: addr6_be(link_local_for(GATEWAY_MAC)),
    }
}

/// An Ethernet frame from CONTAINER_MAC to `dst_mac` carrying an IPv6 packet: fixed
/// header (hop limit 255), then `rest` (extension headers and upper layer) whose first
/// protocol is `next`. Checksums are not filled in: the programs under test read none.
pub fn ipv6_frame(
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    rest: &[u8],
) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&CONTAINER_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(rest);
    f
}
