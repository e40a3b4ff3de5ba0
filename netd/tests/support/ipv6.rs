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

/// The uplink's IPv6 address: what masqueraded IPv6 leaves with (`nat6_node`).
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);

/// `node6`, with NODE6 (one of the node's addresses) as the address masqueraded IPv6
/// leaves with.
pub fn nat6_node() -> TestDatapath {
    let mut t = node6(0);
    t.dp.set_node_addrs6(&[GATEWAY6, OTHER_GATEWAY6, NODE6])
        .unwrap();
    t.dp.set_snat_addr6(Some(NODE6)).unwrap();
    t
}

/// A TCP segment (with a payload), checksum left zero (see `with_l4_checksum6`).
pub fn tcp6_segment(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(b"netd-ipv6-payload");
    l4
}

/// A UDP datagram (with a payload), checksum left zero.
pub fn udp6_datagram(sport: u16, dport: u16) -> Vec<u8> {
    let payload = b"netd-ipv6-payload";
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// An ICMPv6 echo request (128) or reply (129), checksum left zero.
pub fn echo6(icmp_type: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut l4 = vec![icmp_type, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(b"netd-ipv6-ping");
    l4
}

/// Where the checksum of an upper-layer header of protocol `proto` is, from its start.
pub fn l4_csum_offset6(proto: u8) -> usize {
    match proto {
        TCP6 => 16,
        UDP6 => 6,
        _ => 2,
    }
}

/// The one's complement sum over the IPv6 pseudo header of `frame` (its fixed header's
/// addresses) and its upper layer at `l4_off` of protocol `proto`, folded and
/// complemented: 0 when the stored checksum is right.
pub fn l4_sum6(frame: &[u8], l4_off: usize, proto: u8) -> u16 {
    let mut pseudo = 0u32;
    for w in frame[ETH + 8..ETH + 40].chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    let len = (frame.len() - l4_off) as u32;
    pseudo += (len >> 16) + (len & 0xffff) + u32::from(proto);
    checksum(&frame[l4_off..], pseudo)
}

/// `frame` with the checksum of its upper layer (at `l4_off`, protocol `proto`) computed
/// from scratch, as a sender's stack would.
pub fn with_l4_checksum6(mut frame: Vec<u8>, l4_off: usize, proto: u8) -> Vec<u8> {
    let at = l4_off + l4_csum_offset6(proto);
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = l4_sum6(&frame, l4_off, proto);
    if proto == UDP6 && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    frame
}

/// A frame of `proto` from `src` to `dst` with `l4` behind `ext` (extension headers, the
/// first of protocol `next` when not empty), its upper-layer checksum right.
pub fn frame6(src: Ipv6Addr, dst: Ipv6Addr, ext: &[u8], next: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut rest = ext.to_vec();
    rest.extend_from_slice(l4);
    let first = if ext.is_empty() { proto } else { next };
    let f = ipv6_frame(GATEWAY_MAC, src, dst, first, &rest);
    with_l4_checksum6(f, ETH + 40 + ext.len(), proto)
}

/// A TCP segment from `src:sport` to `dst:dport` with `flags`, no extension headers.
pub fn tcp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Vec<u8> {
    frame6(src, dst, &[], 0, TCP6, &tcp6_segment(sport, dport, flags))
}

/// A UDP datagram from `src:sport` to `dst:dport`, no extension headers.
pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    frame6(src, dst, &[], 0, UDP6, &udp6_datagram(sport, dport))
}

/// A SYN of `src:sport` to `dst:dport` with TCP options `options` (a multiple of 4), no
/// extension headers.
pub fn syn6_with_options(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    options: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    l4.push(((20 + options.len()) / 4 * 16) as u8);
    l4.extend_from_slice(&[0x02, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(options);
    let f = ipv6_frame(GATEWAY_MAC, src, dst, TCP6, &l4);
    with_l4_checksum6(f, ETH + 40, TCP6)
}

/// An 8-byte Destination Options header (PadN) leading to `next`.
pub fn dest_opts(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// TCP port 80 published on `host_ip`:8080.
pub fn binding_8080_on(host_ip: impl Into<std::net::IpAddr>) -> netd::ports::PortBinding {
    netd::ports::PortBinding {
        proto: netd::ports::Proto::Tcp,
        container_port: 80,
        host_ip: host_ip.into(),
        host_port: 8080,
    }
}

/// `-p 8080:80` for a dual-stack container: TCP port 80 on `0.0.0.0` and `[::]`.
pub fn binding_8080() -> [netd::ports::PortBinding; 2] {
    [
        binding_8080_on(std::net::Ipv4Addr::UNSPECIFIED),
        binding_8080_on(Ipv6Addr::UNSPECIFIED),
    ]
}

/// CONTAINER's (and CONTAINER6's) port 80 published on every address.
pub fn publish_8080(t: &mut TestDatapath) {
    for b in binding_8080() {
        t.dp.publish(&b, Some(CONTAINER), Some(CONTAINER6), LO)
            .unwrap();
    }
}

/// A UDP datagram from `src:sport` to `dst:dport` (checksum over the whole of it) cut in
/// two fragments of identification `id` after its first 16 bytes.
pub fn udp6_fragments(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    id: u32,
) -> [Vec<u8>; 2] {
    let whole = udp6(src, sport, dst, dport);
    let l4 = &whole[ETH + 40..];
    let header = |offset_and_more: u16| {
        let mut h = vec![UDP6, 0];
        h.extend_from_slice(&offset_and_more.to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h
    };
    let mut first = header(1);
    first.extend_from_slice(&l4[..16]);
    let mut following = header(16);
    following.extend_from_slice(&l4[16..]);
    [first, following].map(|rest| ipv6_frame(GATEWAY_MAC, src, dst, FRAGMENT, &rest))
}
