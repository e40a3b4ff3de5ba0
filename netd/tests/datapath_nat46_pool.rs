//! NAT46's pool under BPF_PROG_TEST_RUN and the collector's calls: each IPv6 client holds
//! an address of its own; a source that never completed a handshake holds it only until
//! a new client needs it (a flood of spoofed sources cannot keep real clients out), a
//! client with a confirmed flow keeps it; a flow whose client lost its address stops
//! rather than go on under another's; the collector frees what no flow holds, and a flow
//! still going claims its address back. The pool is a /30: three addresses.

mod support;

use std::{net::Ipv4Addr, net::Ipv6Addr, time::Duration};

use netd::{
    conntrack::monotonic_now,
    datapath::{Nat46Collected, Nat46InUse},
};
use netd_common::maps::Addr6;
use support::*;

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// NAT46's hold on an unproved client's address (`NAT46_UNCONFIRMED_HOLD_NS`), and a
/// margin.
const PAST_THE_HOLD: Duration = Duration::from_millis(700);

fn client(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x46, 0, 0, 0, 0, n)
}

/// A TCP segment of `src:sport` to the node's `[NODE6]:8080`, as the uplink receives it.
fn segment(src: Ipv6Addr, sport: u16, flags: u8) -> Vec<u8> {
    let f = ipv6_frame(
        GATEWAY_MAC,
        src,
        NODE6,
        TCP6,
        &tcp6_segment(sport, 8080, flags),
    );
    with_l4_checksum6(f, ETH + 40, TCP6)
}

/// A node with NAT46 on a /30 pool and CONTAINER's port 80 (IPv4 only) published on
/// `[::]:8080`.
fn node() -> TestDatapath {
    let mut t = nat6_node();
    t.dp.set_nat46_pool(Some("198.18.0.0/30".parse().unwrap()))
        .unwrap();
    let binding = netd::ports::PortBinding {
        proto: netd::ports::Proto::Tcp,
        container_port: 80,
        host_ip: Ipv6Addr::UNSPECIFIED.into(),
        host_port: 8080,
    };
    t.dp.publish(&binding, Some(CONTAINER), None, LO).unwrap();
    t
}

/// Where the uplink translates a client's packets: its TC program, or its XDP program
/// (`uplink_xdp_nat46`), which claims and takes pool addresses as TC does.
#[derive(Clone, Copy, Debug)]
enum Via {
    Tc,
    Xdp,
}

impl Via {
    /// The hook its counters are kept under.
    fn hook(self) -> &'static str {
        match self {
            Via::Tc => "UplinkIngress",
            Via::Xdp => "UplinkXdp",
        }
    }
}

/// The client's segment sent in at the uplink: its pool address when translated.
fn send(t: &mut TestDatapath, src: Ipv6Addr, sport: u16, flags: u8) -> Option<Ipv4Addr> {
    send_via(Via::Tc, t, src, sport, flags)
}

/// `send`, translated `via` TC or XDP.
fn send_via(
    via: Via,
    t: &mut TestDatapath,
    src: Ipv6Addr,
    sport: u16,
    flags: u8,
) -> Option<Ipv4Addr> {
    let frame = segment(src, sport, flags);
    let (passed, out) = match via {
        Via::Tc => {
            let (verdict, out) = t.run("uplink_ingress", &frame);
            (verdict == TC_ACT_OK, out)
        }
        Via::Xdp => {
            let (verdict, _, out) = t.run_xdp(&frame);
            (verdict == XDP_PASS, out)
        }
    };
    (passed && out[12..14] == [0x08, 0x00])
        .then(|| Ipv4Addr::new(out[ETH + 12], out[ETH + 13], out[ETH + 14], out[ETH + 15]))
}

/// The container's segment to a pool address: whether it left for the client, and to
/// which address.
fn answer(t: &mut TestDatapath, to: Ipv4Addr, dport: u16, flags: u8) -> Option<Ipv6Addr> {
    let (verdict, out) = t.run(
        "endpoint_ingress",
        &Pkt::tcp(CONTAINER, 80, to, dport, flags).build(),
    );
    (verdict == TC_ACT_REDIRECT)
        .then(|| Ipv6Addr::from(<[u8; 16]>::try_from(&out[ETH + 24..ETH + 40]).unwrap()))
}

fn mapping(t: &TestDatapath, c: Ipv6Addr) -> Option<netd::datapath::Nat46Client> {
    t.dp.nat46_clients_now()
        .unwrap()
        .into_iter()
        .find(|m| m.client == c)
}

/// Every IPv6 flow gone from the table.
fn forget_flows(t: &mut TestDatapath) {
    let keys: Vec<_> =
        t.dp.flow_entries6()
            .unwrap()
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
    t.dp.remove_flows(&keys).unwrap();
}

fn collect(t: &mut TestDatapath, later: Duration) -> Nat46Collected {
    let flows = t.dp.flow_entries6().unwrap();
    let now = monotonic_now() + later.as_nanos() as u64;
    t.dp.collect_nat46_clients(&Nat46InUse::of(&flows), now)
        .unwrap()
}

#[test]
fn a_full_pool_gives_new_clients_the_addresses_of_unproved_ones_never_of_proved_ones() {
    a_full_pool_gives_way_via(Via::Tc);
}

#[test]
fn in_xdp_a_full_pool_gives_new_clients_the_addresses_of_unproved_ones_never_of_proved_ones() {
    a_full_pool_gives_way_via(Via::Xdp);
}

fn a_full_pool_gives_way_via(via: Via) {
    let send = |t: &mut TestDatapath, src, sport, flags| send_via(via, t, src, sport, flags);
    let mut t = node();
    // A real client: a handshake, and the container's answer to its request.
    let proved = client(1);
    let p_addr = send(&mut t, proved, 40001, SYN).expect("translated");
    assert_eq!(answer(&mut t, p_addr, 40001, SYN_ACK), Some(proved));
    assert_eq!(send(&mut t, proved, 40001, PSH_ACK), Some(p_addr));
    assert_eq!(answer(&mut t, p_addr, 40001, PSH_ACK), Some(proved));
    assert!(mapping(&t, proved).unwrap().confirmed, "its flow proved it");
    // Its confirmed flow counts against the container's quota, not the client's.
    let owners = t.dp.flow_owner_counts_of::<Addr6>().unwrap();
    let container_mapped: Addr6 = [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(CONTAINER.octets()),
    ];
    assert_eq!(owners.get(&container_mapped), Some(&1), "{owners:?}");

    // Two spoofed sources (a SYN each, nothing after) fill the pool.
    let spoofed = [client(0x51), client(0x52)];
    let mut s_addrs = Vec::new();
    for s in spoofed {
        s_addrs.push(send(&mut t, s, 41000, SYN).expect("translated"));
    }
    assert_eq!(t.dp.nat46_addresses_held().unwrap(), 3);
    // A newcomer while they are fresh: nothing to give.
    assert_eq!(send(&mut t, client(0x71), 42000, SYN), None);
    assert_eq!(count(&t, via.hook(), "drop_nat46_pool_exhausted"), 1);

    // Once they held their addresses a while without proving anything, newcomers take them.
    std::thread::sleep(PAST_THE_HOLD);
    let mut taken = Vec::new();
    for n in [client(0x71), client(0x72)] {
        let addr = send(&mut t, n, 42000, SYN).expect("an address taken for it");
        assert_ne!(addr, p_addr, "never the proved client's");
        assert!(s_addrs.contains(&addr), "{addr} is one of {s_addrs:?}");
        assert!(!taken.contains(&addr), "two clients on {addr}");
        taken.push(addr);
        // The container's answer reaches the newcomer, not the address's former holder.
        assert_eq!(answer(&mut t, addr, 42000, SYN_ACK), Some(n));
    }
    assert_eq!(count(&t, via.hook(), "nat46_address_taken"), 2);
    // The former holders' flows stop: neither their packets nor answers to them pass.
    for (s, addr) in spoofed.iter().zip(&s_addrs) {
        assert_eq!(send(&mut t, *s, 41000, ACK), None);
        assert_eq!(answer(&mut t, *addr, 41000, ACK), None);
        assert!(mapping(&t, *s).is_none(), "{s} mapped still");
    }
    assert_eq!(count(&t, via.hook(), "drop_nat46_address_lost"), 2);
    assert_eq!(count(&t, "EndpointIngress", "drop_nat46_address_lost"), 2);
    // With every address held by a proved or a fresh client, the next one waits.
    assert_eq!(send(&mut t, client(0x73), 42000, SYN), None);
    // The proved client's connection goes on, and its new ones get its address.
    assert_eq!(send(&mut t, proved, 40001, ACK), Some(p_addr));
    assert_eq!(send(&mut t, proved, 40002, SYN), Some(p_addr));
    assert_eq!(t.dp.nat46_addresses_held().unwrap(), 3);
}

#[test]
fn the_collector_frees_what_no_flow_holds_and_a_flow_still_going_claims_its_address_back() {
    the_collector_frees_via(Via::Tc);
}

#[test]
fn in_xdp_a_flow_still_going_claims_its_address_back_from_the_collector() {
    the_collector_frees_via(Via::Xdp);
}

fn the_collector_frees_via(via: Via) {
    let send = |t: &mut TestDatapath, src, sport, flags| send_via(via, t, src, sport, flags);
    let mut t = node();
    let c = client(1);
    let addr = send(&mut t, c, 40001, SYN).expect("translated");
    assert_eq!(collect(&mut t, Duration::ZERO), Nat46Collected::default());
    assert_eq!(
        collect(&mut t, Duration::from_secs(3600)),
        Nat46Collected::default(),
        "its flow holds the address however long it has been"
    );

    // A collector that judged the client idle a moment before its next packet (nothing
    // in use, long after): its address and mapping are freed...
    let freed =
        t.dp.collect_nat46_clients(&Nat46InUse::default(), monotonic_now() + 61_000_000_000)
            .unwrap();
    assert_eq!(freed.freed, 1);
    assert_eq!(t.dp.nat46_addresses_held().unwrap(), 0);
    // ...and the flow's next packet claims the address back, the flow going on as it was.
    assert_eq!(send(&mut t, c, 40001, ACK), Some(addr));
    assert_eq!(answer(&mut t, addr, 40001, SYN_ACK), Some(c));
    assert_eq!(t.dp.nat46_addresses_held().unwrap(), 1);
    // Held by the flow only (no mapping leads to it): kept while the flow lasts.
    assert_eq!(collect(&mut t, Duration::ZERO).orphans, 0);
    assert_eq!(collect(&mut t, Duration::ZERO).orphans, 0);
    // Its flow gone, it is freed at the second round that finds it so (a client being
    // mapped holds its address a moment before its mapping exists).
    forget_flows(&mut t);
    assert_eq!(collect(&mut t, Duration::ZERO).orphans, 0);
    assert_eq!(collect(&mut t, Duration::ZERO).orphans, 1);
    assert_eq!(t.dp.nat46_addresses_held().unwrap(), 0);

    // A client whose flows are gone keeps its address for the grace, then gives it back.
    let again = send(&mut t, c, 40002, SYN).expect("translated");
    forget_flows(&mut t);
    assert_eq!(collect(&mut t, Duration::from_secs(30)).freed, 0);
    assert!(mapping(&t, c).is_some_and(|m| m.addr == again && m.holds));
    assert_eq!(collect(&mut t, Duration::from_secs(61)).freed, 1);
    assert!(mapping(&t, c).is_none());
    assert_eq!(t.dp.nat46_addresses_held().unwrap(), 0);
}

#[test]
fn a_pool_changed_under_mapped_clients_gives_their_new_flows_addresses_of_the_new_pool() {
    let mut t = node();
    let c = client(1);
    let old = send(&mut t, c, 40001, SYN).expect("translated");
    t.dp.set_nat46_pool(Some("198.19.0.0/30".parse().unwrap()))
        .unwrap();
    let new = send(&mut t, c, 40002, SYN).expect("translated");
    assert_eq!(new.octets()[..2], [198, 19], "{new}");
    assert_eq!(mapping(&t, c).map(|m| m.addr), Some(new));
    // The flow it had goes on with the address it had.
    assert_eq!(send(&mut t, c, 40001, ACK), Some(old));
    // NAT46 turned off: every address is given back.
    t.dp.set_nat46_pool(None).unwrap();
    let done = collect(&mut t, Duration::ZERO);
    assert_eq!((done.freed, done.orphans), (1, 1), "{done:?}");
    assert_eq!(t.dp.nat46_addresses_held().unwrap(), 0);
}

/// An IPv4 connection from the LAN "from" a pool address would reach the container as
/// if from that IPv6 client: forged (only NAT46 writes such a source), dropped by TC and
/// XDP alike; other sources pass.
#[test]
fn a_lan_host_cannot_open_an_ipv4_connection_from_a_pool_address() {
    let mut t = node();
    let binding = netd::ports::PortBinding {
        proto: netd::ports::Proto::Tcp,
        container_port: 80,
        host_ip: Ipv4Addr::UNSPECIFIED.into(),
        host_port: 8080,
    };
    t.dp.publish(&binding, Some(CONTAINER), None, LO).unwrap();
    for src in ["198.18.0.1", "198.18.0.3"] {
        let syn = Pkt::tcp(src.parse().unwrap(), 40000, NODE, 8080, SYN).build();
        assert_eq!(t.run("uplink_ingress", &syn).0, TC_ACT_SHOT, "{src}");
        assert_eq!(t.run_xdp(&syn).0, XDP_DROP, "{src}");
    }
    assert_eq!(count(&t, "UplinkIngress", "drop_spoofed_source"), 2);
    assert!(t.dp.flow_entries().unwrap().is_empty());
    let syn = Pkt::tcp("198.18.0.4".parse().unwrap(), 40000, NODE, 8080, SYN).build();
    assert_eq!(t.run("uplink_ingress", &syn).0, TC_ACT_OK, "beyond the /30");
}

/// With the fast path on, a NAT46 client's translated segment goes straight into the
/// container (`bpf_redirect_peer`) as a router forwards it: to the container's MAC from
/// its gateway's, the TTL (the hop limit) less the hop, the header checksum right.
#[test]
fn with_the_fast_path_a_nat46_clients_segment_goes_straight_into_the_container() {
    let mut t = node();
    t.dp.set_node_config(&node_settings(true)).unwrap();
    let mut syn = segment(client(1), 40001, SYN);
    syn[..6].copy_from_slice(&[0; 6]);
    let (verdict, out) = t.run("uplink_ingress", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out[12..14], [0x08, 0x00], "an IPv4 frame");
    assert_eq!(out[..6], CONTAINER_MAC);
    assert_eq!(out[6..12], GATEWAY_MAC);
    let ip = &out[ETH..ETH + 20];
    assert_eq!(ip[8], syn[ETH + 7] - 1, "TTL: the hop limit less the hop");
    assert_eq!(checksum(ip, 0), 0, "the header checksum right");
    assert_eq!(ip[16..20], CONTAINER.octets());
    assert_eq!(count(&t, "FastPath", "redirect_to_container"), 1);
    assert_eq!(count(&t, "UplinkIngress", "nat46_new_flow"), 1);
}

/// RFC 7915: the Traffic Class and the TOS octet carry over both ways (DSCP and ECN).
#[test]
fn the_traffic_class_and_the_tos_octet_carry_over() {
    let mut t = node();
    let mut syn = segment(client(1), 40001, SYN);
    // Traffic class 0xb9 (Expedited Forwarding, ECT(1)): 0x6b 0x90 ...
    syn[ETH] = 0x6b;
    syn[ETH + 1] = 0x90;
    let (verdict, out) = t.run("uplink_ingress", &syn);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out[ETH + 1], 0xb9, "the TOS octet");
    assert_eq!(checksum(&out[ETH..ETH + 20], 0), 0);
    let pool_addr = Ipv4Addr::new(out[ETH + 12], out[ETH + 13], out[ETH + 14], out[ETH + 15]);

    let mut reply = Pkt::tcp(CONTAINER, 80, pool_addr, 40001, SYN_ACK).build();
    reply[ETH + 1] = 0x2a;
    reply[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let sum = checksum(&reply[ETH..ETH + 20], 0);
    reply[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
    let (verdict, back) = t.run("endpoint_ingress", &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        (back[ETH], back[ETH + 1] & 0xf0),
        (0x62, 0xa0),
        "version 6, traffic class 0x2a"
    );
}

/// Nothing addressed into the pool leaves by the uplink (the node's own errors to a
/// client's pool address, above all): the pool is the node's, not the network's.
#[test]
fn nothing_addressed_into_the_pool_leaves_by_the_uplink() {
    let mut t = node();
    for dst in ["198.18.0.1", "198.18.0.2"] {
        let out = Pkt::udp(NODE, 5000, dst.parse().unwrap(), 6000).build();
        assert_eq!(t.run("uplink_egress", &out).0, TC_ACT_SHOT, "{dst}");
    }
    assert_eq!(count(&t, "UplinkEgress", "drop_nat46_pool_leak"), 2);
    let beyond = Pkt::udp(NODE, 5000, "198.18.0.4".parse().unwrap(), 6000).build();
    assert_eq!(
        t.run("uplink_egress", &beyond).0,
        TC_ACT_OK,
        "beyond the /30"
    );
    t.dp.set_nat46_pool(None).unwrap();
    let off = Pkt::udp(NODE, 5000, "198.18.0.1".parse().unwrap(), 6000).build();
    assert_eq!(t.run("uplink_egress", &off).0, TC_ACT_OK, "NAT46 off");
}

/// A dual-stack container calling `[NODE6]:8080`, which leads to a container with IPv4
/// only: NAT46 serves clients beyond the node, and the port is never DNATed to the
/// backend's v4-mapped address (which no stack takes); the drop says why.
#[test]
fn a_containers_ipv6_call_of_a_port_nat46_serves_is_dropped_with_its_reason() {
    let mut t = node();
    let f = ipv6_frame(
        GATEWAY_MAC,
        CONTAINER6,
        NODE6,
        TCP6,
        &tcp6_segment(40000, 8080, SYN),
    );
    let syn = with_l4_checksum6(f, ETH + 40, TCP6);
    assert_eq!(t.run("endpoint_ingress", &syn).0, TC_ACT_SHOT);
    assert_eq!(
        count(&t, "EndpointIngress", "drop_nat46_from_a_container"),
        1
    );
    assert!(t.dp.flow_entries6().unwrap().is_empty());
}

/// A SYN of `src:sport` to `[NODE6]:8080` with TCP options `options` (a multiple of 4).
fn syn_with_options(src: Ipv6Addr, sport: u16, options: &[u8]) -> Vec<u8> {
    syn6_with_options(src, sport, NODE6, 8080, options)
}

/// An IPv6 client on a larger MTU than the node's uplink asks for segments that, IPv6
/// again (20 bytes longer), would not fit the uplink: its SYN's MSS is clamped to the
/// uplink's MTU less 60; a container's packet too long all the same is dropped with its
/// reason rather than lost at the uplink.
#[test]
fn a_clients_mss_is_clamped_to_the_uplink_and_what_would_not_fit_is_dropped_with_its_reason() {
    let mut t = node();
    t.dp.set_nat46_uplink_mtu(1500).unwrap();
    let mss = |out: &[u8], at: usize| u16::from_be_bytes([out[at], out[at + 1]]);
    let cases: [(&[u8], usize, u16); 3] = [
        // Jumbo: 8940 asked, 1440 given.
        (&[2, 4, 0x22, 0xec], 22, 1440),
        // Behind padding and another option (window scale), the same.
        (&[1, 1, 1, 3, 3, 7, 2, 4, 0x22, 0xec, 0, 0], 28, 1440),
        // Within the limit: left alone.
        (&[2, 4, 0x04, 0xb0], 22, 1200),
    ];
    for (n, (options, at, expected)) in cases.into_iter().enumerate() {
        let syn = syn_with_options(client(1), 40000 + n as u16, options);
        let (verdict, out) = t.run("uplink_ingress", &syn);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out[12..14], [0x08, 0x00], "an IPv4 frame");
        assert_eq!(mss(&out, ETH + 20 + at), expected, "{options:?}");
        let csum_at = l4_csum_offset(TCP);
        assert_eq!(
            u16::from_be_bytes([out[csum_at], out[csum_at + 1]]),
            l4_checksum(&out),
            "its TCP checksum right ({options:?})"
        );
    }
    let pool_addr = mapping(&t, client(1)).unwrap().addr;
    // The container's answer that fits (1480 bytes: 1500 as IPv6) goes; one byte more
    // would not fit the uplink.
    for (len, fits) in [(1480usize, true), (1481, false)] {
        let mut seg = Pkt::tcp(CONTAINER, 80, pool_addr, 40000, ACK).build();
        seg.resize(ETH + len, 0);
        seg[ETH + 2..ETH + 4].copy_from_slice(&(len as u16).to_be_bytes());
        seg[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
        let sum = checksum(&seg[ETH..ETH + 20], 0);
        seg[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
        let verdict = t.run("endpoint_ingress", &seg).0;
        assert_eq!(verdict == TC_ACT_REDIRECT, fits, "{len} bytes");
    }
    assert_eq!(count(&t, "EndpointIngress", "drop_nat46_too_big"), 1);
}

/// The node's own ICMP error to a client's pool address (its forwarding's Time Exceeded
/// for a segment that came with hop limit 1) reaches the client as ICMPv6 from the
/// address it called, quoting its segment as it sent it; one about no flow of NAT46's is
/// dropped, as is the node's error quoting what the client never sent.
#[test]
fn the_nodes_own_errors_to_a_pool_address_reach_the_client_as_icmpv6() {
    let mut t = node();
    let syn = segment(client(1), 40001, SYN);
    let (_, as_ipv4) = t.run("uplink_ingress", &syn);
    let pool_addr = mapping(&t, client(1)).unwrap().addr;
    let err = icmp_error(NODE, pool_addr, 11, 0, &as_ipv4);
    let (verdict, back) = t.run("uplink_egress", &err);
    assert_eq!(verdict, TC_ACT_REDIRECT, "out by the uplink, as IPv6");
    assert_eq!(back[12..14], [0x86, 0xdd]);
    assert_eq!(back[ETH + 6], ICMP6);
    assert_eq!(back[ETH + 8..ETH + 24], NODE6.octets());
    assert_eq!(back[ETH + 24..ETH + 40], client(1).octets());
    assert_eq!((back[ETH + 40], back[ETH + 41]), (3, 0), "Time Exceeded");
    assert_eq!(
        with_l4_checksum6(back.clone(), ETH + 40, ICMP6),
        back,
        "ICMPv6's checksum right"
    );
    assert_eq!(
        back[ETH + 48 + 8..ETH + 48 + 24],
        client(1).octets(),
        "the quote: the client's"
    );
    assert_eq!(count(&t, "UplinkEgress", "icmp_error_translated"), 1);
    // About no flow of NAT46's, or to another than the quoted sender: dropped.
    let stray = Pkt::tcp(pool_addr, 40009, CONTAINER, 80, SYN).build();
    let other: Ipv4Addr = "198.18.0.3".parse().unwrap();
    for err in [
        icmp_error(NODE, pool_addr, 11, 0, &stray),
        icmp_error(NODE, other, 11, 0, &as_ipv4),
    ] {
        assert_eq!(t.run("uplink_egress", &err).0, TC_ACT_SHOT);
    }
    assert_eq!(count(&t, "UplinkEgress", "drop_nat46_no_flow"), 2);
}
