//! NAT66 under BPF_PROG_TEST_RUN: what a container of a masqueraded network sends beyond
//! the node leaves the uplink (`uplink_egress`, which hands IPv6 to `uplink_egress6` and a
//! flow's first packet on to `uplink_egress6_new`) from the uplink's IPv6 address, its
//! source port kept when free, and the replies (`uplink_ingress6`) are translated back;
//! every translated frame is compared byte for byte with the one a sender's stack would
//! have built, checksums computed from scratch. What cannot be translated never leaves
//! with a container's own address. The IPv6 connection table is listed and swept by the
//! daemon's calls.

mod support;

use std::net::Ipv6Addr;

use netd::conntrack::FlowTable;
use netd_common::{
    flow::{ORIGIN_SNAT, SEEN_SYN},
    maps::{ENDPOINT_ICC_OFF, ENDPOINT_INTERNAL},
};
use support::*;

/// The upper layer of `proto` from port `sport` to `dport` (for echo: a request with
/// identifier `sport`, or a reply to identifier `dport`).
fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    match proto {
        TCP6 => tcp6_segment(sport, dport, 0x02),
        UDP6 => udp6_datagram(sport, dport),
        _ if sport != 0 => echo6(128, sport, 1),
        _ => echo6(129, dport, 1),
    }
}

#[test]
fn tcp_udp_and_echo_leave_from_the_uplinks_address_and_their_replies_come_back() {
    let mut t = nat6_node();
    for (i, proto) in [TCP6, UDP6, ICMP6].into_iter().enumerate() {
        for ext in [vec![], dest_opts(proto)] {
            // A port (identifier) of its own per case: each is a new flow.
            let port = 40000 + (i as u16) * 10 + ext.len() as u16;
            let dport = if proto == ICMP6 { 0 } else { 443 };
            let out = frame6(
                CONTAINER6,
                BEYOND6,
                &ext,
                DEST_OPTS,
                proto,
                &l4(proto, port, dport),
            );
            let (verdict, sent) = t.run("uplink_egress", &out);
            assert_eq!(verdict, TC_ACT_OK, "proto {proto} ext {}", ext.len());
            // TCP and UDP keep their free source port; an echo's identifier is never the
            // container's (as for IPv4): one of the SNAT range.
            let at = ETH + 40 + ext.len() + if proto == ICMP6 { 4 } else { 0 };
            let translated = u16::from_be_bytes([sent[at], sent[at + 1]]);
            if proto == ICMP6 {
                assert!(
                    (61000..=65535).contains(&translated),
                    "identifier {translated}"
                );
            } else {
                assert_eq!(translated, port);
            }
            let expected = frame6(
                NODE6,
                BEYOND6,
                &ext,
                DEST_OPTS,
                proto,
                &l4(proto, translated, dport),
            );
            assert_eq!(
                sent,
                expected,
                "masqueraded, proto {proto} ext {}",
                ext.len()
            );

            let (rsport, rdport) = if proto == ICMP6 {
                (0, translated)
            } else {
                (443, port)
            };
            let reply = frame6(
                BEYOND6,
                NODE6,
                &ext,
                DEST_OPTS,
                proto,
                &l4(proto, rsport, rdport),
            );
            let (verdict, delivered) = t.run("uplink_ingress", &reply);
            assert_eq!(verdict, TC_ACT_OK);
            let (rsport, rdport) = if proto == ICMP6 {
                (0, port)
            } else {
                (443, port)
            };
            let expected = frame6(
                BEYOND6,
                CONTAINER6,
                &ext,
                DEST_OPTS,
                proto,
                &l4(proto, rsport, rdport),
            );
            assert_eq!(
                delivered,
                expected,
                "reply, proto {proto} ext {}",
                ext.len()
            );
        }
    }
    assert_eq!(count(&t, "UplinkEgress", "snat_new_flow"), 6);
    assert_eq!(count(&t, "UplinkIngress", "snat_reply"), 6);
    // The flow's next packet is translated by its entry.
    let again = udp6(CONTAINER6, 40010, BEYOND6, 443);
    let (verdict, sent) = t.run("uplink_egress", &again);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(sent, udp6(NODE6, 40010, BEYOND6, 443));
    assert_eq!(count(&t, "UplinkEgress", "translated_established"), 1);
}

#[test]
fn a_source_port_another_flow_holds_is_remapped_into_the_snat_range() {
    let mut t = nat6_node();
    let first = tcp6(CONTAINER6, 40000, BEYOND6, 443, 0x02);
    assert_eq!(t.run("uplink_egress", &first).0, TC_ACT_OK);
    // Another container, the same source port, the same destination: the tuple from the
    // node's address is taken.
    let second = tcp6(OTHER_CONTAINER6, 40000, BEYOND6, 443, 0x02);
    let (verdict, sent) = t.run("uplink_egress", &second);
    assert_eq!(verdict, TC_ACT_OK);
    let port = u16::from_be_bytes([sent[ETH + 40], sent[ETH + 41]]);
    assert!((61000..=65535).contains(&port), "remapped to {port}");
    let expected = tcp6(NODE6, port, BEYOND6, 443, 0x02);
    assert_eq!(sent, expected);
    // Its reply reaches the second container, the first's the first.
    let reply = tcp6(BEYOND6, 443, NODE6, port, 0x12);
    let (_, delivered) = t.run("uplink_ingress", &reply);
    assert_eq!(delivered, tcp6(BEYOND6, 443, OTHER_CONTAINER6, 40000, 0x12));
    let reply = tcp6(BEYOND6, 443, NODE6, 40000, 0x12);
    let (_, delivered) = t.run("uplink_ingress", &reply);
    assert_eq!(delivered, tcp6(BEYOND6, 443, CONTAINER6, 40000, 0x12));
}

#[test]
fn without_an_ipv6_address_on_the_uplink_masqueraded_ipv6_is_dropped_with_its_reason() {
    let mut t = nat6_node();
    t.dp.set_snat_addr6(None).unwrap();
    let out = udp6(CONTAINER6, 40000, BEYOND6, 53);
    assert_eq!(t.run("uplink_egress", &out).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkEgress", "drop_ipv6_no_snat_address"), 1);
    assert!(t.dp.flow_entries6().unwrap().is_empty());
}

#[test]
fn what_cannot_be_translated_never_leaves_with_a_containers_address() {
    let mut t = nat6_node();
    // A fragment after the first (no ports), another protocol (SCTP), an echo reply
    // that answers no flow.
    let mut following = udp6(CONTAINER6, 1, BEYOND6, 2);
    following.splice(ETH + 40..ETH + 40, [UDP6, 0, 0x05, 0x00, 0, 0, 0, 1]);
    following[ETH + 6] = FRAGMENT;
    let len = (following.len() - ETH - 40) as u16;
    following[ETH + 4..ETH + 6].copy_from_slice(&len.to_be_bytes());
    let sctp = ipv6_frame(GATEWAY_MAC, CONTAINER6, BEYOND6, 132, &[0; 16]);
    let stray_reply = frame6(CONTAINER6, BEYOND6, &[], 0, ICMP6, &echo6(129, 7, 1));
    for (what, f) in [
        ("a following fragment", following),
        ("another protocol", sctp),
        ("an echo reply of no flow", stray_reply),
    ] {
        let (verdict, _) = t.run("uplink_egress", &f);
        assert_eq!(verdict, TC_ACT_SHOT, "{what}");
    }
    assert_eq!(count(&t, "UplinkEgress", "drop_ipv6_not_translated"), 3);
    // The node's own goes on untouched.
    let own = ipv6_frame(GATEWAY_MAC, NODE6, BEYOND6, 132, &[0; 16]);
    assert_eq!(t.run("uplink_egress", &own), (TC_ACT_OK, own.clone()));
    let own_udp = udp6(NODE6, 5000, BEYOND6, 53);
    assert_eq!(
        t.run("uplink_egress", &own_udp),
        (TC_ACT_OK, own_udp.clone())
    );
    // Also from its address on the network (the gateway's, answering a LAN host): the
    // node's, not a container's.
    let answer = tcp6(GATEWAY6, 22, BEYOND6, 40000, 0x12);
    assert_eq!(t.run("uplink_egress", &answer), (TC_ACT_OK, answer.clone()));
    let other = ipv6_frame(GATEWAY_MAC, GATEWAY6, BEYOND6, 132, &[0; 16]);
    assert_eq!(t.run("uplink_egress", &other), (TC_ACT_OK, other.clone()));
    assert!(t.dp.flow_entries6().unwrap().is_empty());
}

#[test]
fn a_routed_networks_ipv6_leaves_as_it_is_and_nothing_unasked_comes_in() {
    let mut t = nat6_node();
    t.dp.set_network6(
        NET6.parse().unwrap(),
        Some(network(NETWORK_TAG, netd_common::maps::NETWORK_ROUTED)),
    )
    .unwrap();
    let out = tcp6(CONTAINER6, 40000, BEYOND6, 443, 0x02);
    assert_eq!(t.run("uplink_egress", &out), (TC_ACT_OK, out.clone()));
    assert!(t.dp.flow_entries6().unwrap().is_empty());
    // Masqueraded again: a packet to the node's address that answers no flow is the
    // node's, untouched; one straight to the container is dropped.
    t.dp.set_network6(
        NET6.parse().unwrap(),
        Some(network(NETWORK_TAG, netd_common::maps::NETWORK_MASQUERADE)),
    )
    .unwrap();
    let stray = tcp6(BEYOND6, 443, NODE6, 40000, 0x12);
    assert_eq!(t.run("uplink_ingress", &stray), (TC_ACT_OK, stray.clone()));
    let direct = tcp6(BEYOND6, 443, CONTAINER6, 40000, 0x12);
    assert_eq!(t.run("uplink_ingress", &direct).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkIngress", "drop_not_published"), 1);
}

#[test]
fn the_ipv6_connection_table_is_listed_confirmed_and_swept() {
    let mut t = nat6_node();
    let syn = tcp6(CONTAINER6, 40000, BEYOND6, 443, 0x02);
    let syn_ack = tcp6(BEYOND6, 443, NODE6, 40000, 0x12);
    let ack = tcp6(CONTAINER6, 40000, BEYOND6, 443, 0x10);
    let data = tcp6(BEYOND6, 443, NODE6, 40000, 0x18);
    t.run("uplink_egress", &syn);
    let entries = t.dp.flow_entries6().unwrap();
    assert_eq!(entries.len(), 2, "both halves of the new flow");
    assert!(
        entries
            .iter()
            .all(|(_, _, table)| *table == FlowTable::Unconfirmed)
    );
    let (_, first, _) = entries.iter().find(|(_, e, _)| e.is_first()).unwrap();
    assert_eq!(first.origin, ORIGIN_SNAT);
    assert_eq!(first.seen & SEEN_SYN, SEEN_SYN);
    assert_eq!(
        netd::conntrack::views(&entries, 0)[0].translated,
        format!("[{NODE6}]:40000 -> [{BEYOND6}]:443")
    );
    for f in [&syn_ack, &ack, &data] {
        t.run(
            if f == &ack {
                "uplink_egress"
            } else {
                "uplink_ingress"
            },
            f,
        );
    }
    let entries = t.dp.flow_entries6().unwrap();
    assert!(
        entries
            .iter()
            .all(|(_, _, table)| *table == FlowTable::Confirmed),
        "a completed handshake confirms the flow"
    );
    assert_eq!(count(&t, "FlowTable", "flow_confirmed"), 1);
    let owners =
        t.dp.flow_owner_counts_of::<netd_common::maps::Addr6>()
            .unwrap();
    assert_eq!(
        owners.get(&netd_common::user::addr6_be(CONTAINER6)),
        Some(&1)
    );
    // Idle past its timeout: the sweep removes both halves, and the owner holds none.
    let keys: Vec<_> = entries.iter().map(|(k, _, _)| *k).collect();
    let later = netd::conntrack::monotonic_now() + netd::conntrack::TCP_ESTABLISHED_TIMEOUT + 1;
    let removed =
        t.dp.sweep_flows(FlowTable::Confirmed, &keys, later)
            .unwrap();
    assert_eq!(removed, 2);
    assert!(t.dp.flow_entries6().unwrap().is_empty());
    let owners =
        t.dp.flow_owner_counts_of::<netd_common::maps::Addr6>()
            .unwrap();
    assert_eq!(
        owners.get(&netd_common::user::addr6_be(CONTAINER6)),
        Some(&0)
    );
    // And the daemon's purge of a removed container's address finds its flows.
    t.run("uplink_egress", &syn);
    let entries = t.dp.flow_entries6().unwrap();
    let keys = netd::conntrack::involving(&entries, CONTAINER6.into());
    assert_eq!(keys.len(), 2);
    t.dp.remove_flows(&keys).unwrap();
    assert!(t.dp.flow_entries6().unwrap().is_empty());
}

/// An ICMPv6 error (`icmp_type`, `code`, the 4 bytes after the checksum: Packet Too Big's
/// MTU) from `src` to `dst` quoting `quoted` (an IPv6 packet, without its Ethernet
/// header), its checksum right.
fn icmp6_error(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    code: u8,
    word: u32,
    quoted: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![icmp_type, code, 0, 0];
    l4.extend_from_slice(&word.to_be_bytes());
    l4.extend_from_slice(quoted);
    frame6(src, dst, &[], 0, ICMP6, &l4)
}

/// `frame`'s IPv6 packet with its source or destination (`at`: 8 or 24 into the fixed
/// header) and the port at `port_at` (into the packet) replaced, its own checksum left
/// as it was: how a translated quote reads.
fn patched(frame: &[u8], at: usize, addr: Ipv6Addr, port_at: usize, port: u16) -> Vec<u8> {
    let mut p = frame[ETH..].to_vec();
    p[at..at + 16].copy_from_slice(&addr.octets());
    p[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    p
}

const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0xfe);

#[test]
fn packet_too_big_and_other_errors_about_a_masqueraded_flow_reach_the_container() {
    let mut t = nat6_node();
    // A full-size segment out, masqueraded; a router on the way cannot forward it.
    let big = tcp6(CONTAINER6, 40000, BEYOND6, 443, 0x10);
    let (_, sent) = t.run("uplink_egress", &big);
    let ptb = icmp6_error(ROUTER6, NODE6, 2, 0, 1280, &sent[ETH..]);
    let (verdict, delivered) = t.run("uplink_ingress", &ptb);
    assert_eq!(verdict, TC_ACT_OK);
    // To the container, still from the router, quoting the packet as the container sent
    // it (the quoted TCP checksum is the one the router saw).
    let quoted = patched(&sent, 8, CONTAINER6, 40, 40000);
    assert_eq!(
        delivered,
        icmp6_error(ROUTER6, CONTAINER6, 2, 0, 1280, &quoted)
    );
    assert_eq!(count(&t, "UplinkIngress", "icmp_error_translated"), 1);

    // A time exceeded about an echo (its identifier remapped) reaches the container with
    // the container's own identifier.
    let ping = frame6(CONTAINER6, BEYOND6, &[], 0, ICMP6, &echo6(128, 7, 1));
    let (_, sent) = t.run("uplink_egress", &ping);
    let id = u16::from_be_bytes([sent[ETH + 44], sent[ETH + 45]]);
    let exceeded = icmp6_error(ROUTER6, NODE6, 3, 0, 0, &sent[ETH..]);
    let (_, delivered) = t.run("uplink_ingress", &exceeded);
    let quoted = patched(&sent, 8, CONTAINER6, 44, 7);
    assert_ne!(id, 7);
    assert_eq!(
        delivered,
        icmp6_error(ROUTER6, CONTAINER6, 3, 0, 0, &quoted)
    );

    // The container's own error about a reply of its flow (its socket closed): from the
    // node's address, quoting the reply as the remote end sent it.
    let udp = udp6(CONTAINER6, 40001, BEYOND6, 53);
    t.run("uplink_egress", &udp);
    let reply_in = udp6(BEYOND6, 53, NODE6, 40001);
    let (_, reply) = t.run("uplink_ingress", &reply_in);
    let unreachable = icmp6_error(CONTAINER6, BEYOND6, 1, 4, 0, &reply[ETH..]);
    let (verdict, out) = t.run("uplink_egress", &unreachable);
    assert_eq!(verdict, TC_ACT_OK);
    let quoted = patched(&reply, 24, NODE6, 42, 40001);
    assert_eq!(out, icmp6_error(NODE6, BEYOND6, 1, 4, 0, &quoted));
    assert_eq!(count(&t, "UplinkEgress", "icmp_error_translated"), 1);
}

#[test]
fn errors_about_no_flow_or_to_anyone_but_the_quoted_sender_are_never_translated() {
    let mut t = nat6_node();
    let big = tcp6(CONTAINER6, 40000, BEYOND6, 443, 0x10);
    let (_, sent) = t.run("uplink_egress", &big);
    // To the node about a flow it does not have: the node's own business, untouched.
    let unknown = tcp6(NODE6, 40999, BEYOND6, 443, 0x10);
    let stray = icmp6_error(ROUTER6, NODE6, 2, 0, 1280, &unknown[ETH..]);
    assert_eq!(t.run("uplink_ingress", &stray), (TC_ACT_OK, stray.clone()));
    // Quoting the flow, but addressed to another host than the quoted packet's source:
    // not the flow's, never translated into a container.
    let elsewhere = icmp6_error(ROUTER6, GATEWAY6, 2, 0, 1280, &sent[ETH..]);
    assert_eq!(
        t.run("uplink_ingress", &elsewhere),
        (TC_ACT_OK, elsewhere.clone())
    );
    assert_eq!(count(&t, "UplinkIngress", "icmp_error_translated"), 0);
    // A container's error about no flow of its own never leaves with its address.
    let invented = udp6(BEYOND6, 53, CONTAINER6, 41000);
    let error = icmp6_error(CONTAINER6, BEYOND6, 1, 4, 0, &invented[ETH..]);
    assert_eq!(t.run("uplink_egress", &error).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkEgress", "drop_ipv6_not_translated"), 1);
}

#[test]
fn a_port_published_on_every_address_is_reached_on_the_nodes_ipv6_addresses_client_kept() {
    let mut t = nat6_node();
    publish_8080(&mut t);
    for node_addr in [NODE6, GATEWAY6] {
        let sport = if node_addr == NODE6 { 50000 } else { 50001 };
        let syn = tcp6(BEYOND6, sport, node_addr, 8080, 0x02);
        let (verdict, delivered) = t.run("uplink_ingress", &syn);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(
            delivered,
            tcp6(BEYOND6, sport, CONTAINER6, 80, 0x02),
            "DNATed to the container, the client's address kept ({node_addr})"
        );
        let syn_ack = tcp6(CONTAINER6, 80, BEYOND6, sport, 0x12);
        let (verdict, sent) = t.run("uplink_egress", &syn_ack);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(
            sent,
            tcp6(node_addr, 8080, BEYOND6, sport, 0x12),
            "the reply from the address and port the client called"
        );
    }
    assert_eq!(count(&t, "UplinkIngress", "dnat_new_flow"), 2);
    assert_eq!(count(&t, "UplinkEgress", "dnat_reply"), 2);
    let views = netd::conntrack::views(&t.dp.flow_entries6().unwrap(), 0);
    assert!(views.iter().all(|v| v.kind == "dnat"), "{views:?}");
    // Another port, another protocol, an address that is not the node's: not published.
    for (what, f) in [
        ("another port", tcp6(BEYOND6, 50002, NODE6, 8081, 0x02)),
        ("UDP", udp6(BEYOND6, 50002, NODE6, 8080)),
    ] {
        assert_eq!(
            t.run("uplink_ingress", &f),
            (TC_ACT_OK, f.clone()),
            "{what}"
        );
    }
    let elsewhere = tcp6(BEYOND6, 50003, BEYOND6, 8080, 0x02);
    assert_eq!(
        t.run("uplink_ingress", &elsewhere),
        (TC_ACT_OK, elsewhere.clone())
    );
    // Loopback from outside is a martian: never a published port.
    let looped = tcp6(BEYOND6, 50004, Ipv6Addr::LOCALHOST, 8080, 0x02);
    assert_eq!(
        t.run("uplink_ingress", &looped),
        (TC_ACT_OK, looped.clone())
    );
    // Unpublished: the next connection is the node's.
    t.dp.unpublish(&binding_8080()[1]).unwrap();
    let syn = tcp6(BEYOND6, 50005, NODE6, 8080, 0x02);
    assert_eq!(t.run("uplink_ingress", &syn), (TC_ACT_OK, syn.clone()));
}

/// `frame` addressed to the node at layer 2 as the test device (loopback) sees it: the
/// all-zero MAC.
fn to_this_host(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&[0; 6]);
    frame
}

/// `frame` as a router forwards it into the container: to its MAC from its gateway's,
/// hop limit minus one.
fn forwarded_into_container(mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&CONTAINER_MAC);
    frame[6..12].copy_from_slice(&GATEWAY_MAC);
    frame[ETH + 7] -= 1;
    frame
}

#[test]
fn with_the_fast_path_a_published_ipv6_port_is_redirected_into_the_container_as_a_router_forwards()
{
    let mut t = nat6_node();
    publish_8080(&mut t);
    t.dp.set_node_config(&node_settings(true)).unwrap();
    for (sport, flags) in [(50000, 0x02), (50000, 0x10)] {
        let (verdict, out) = t.run(
            "uplink_ingress",
            &to_this_host(tcp6(BEYOND6, sport, NODE6, 8080, flags)),
        );
        assert_eq!(verdict, TC_ACT_REDIRECT, "flags {flags:#x}");
        assert_eq!(
            out,
            forwarded_into_container(tcp6(BEYOND6, sport, CONTAINER6, 80, flags)),
            "DNATed, to the container's MAC from its gateway's, hop limit 254"
        );
    }
    assert_eq!(count(&t, "FastPath", "redirect_to_container"), 2);

    // Hop limit 1: translated all the same, left to the stack (which answers Time
    // Exceeded, as a router does).
    let mut syn = to_this_host(tcp6(BEYOND6, 50001, NODE6, 8080, 0x02));
    syn[ETH + 7] = 1;
    let (verdict, out) = t.run("uplink_ingress", &syn);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        (out[ETH + 7], &out[ETH + 24..ETH + 40]),
        (1, &CONTAINER6.octets()[..])
    );
    assert_eq!(count(&t, "FastPath", "stack_ttl_expiring"), 1);

    // Not addressed to this host at layer 2: the stack drops it, as before.
    let other = tcp6(BEYOND6, 50002, NODE6, 8080, 0x02);
    assert_eq!(t.run("uplink_ingress", &other).0, TC_ACT_OK);
    assert_eq!(count(&t, "FastPath", "stack_not_for_this_host"), 1);

    // A source no router forwards (link-local): the stack judges it.
    let fe80 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7);
    let syn = to_this_host(tcp6(fe80, 50003, NODE6, 8080, 0x02));
    assert_eq!(t.run("uplink_ingress", &syn).0, TC_ACT_OK);
    assert_eq!(count(&t, "FastPath", "stack_martian_source"), 1);

    // The endpoint behind the flow's veth no longer owns the address (re-wired): the
    // stack routes it, hop limit untouched.
    let mut moved = endpoint6_info();
    moved.addr = netd_common::user::addr6_be(BEYOND6);
    t.dp.register_endpoint6(LO, Some(&moved)).unwrap();
    let syn = to_this_host(tcp6(BEYOND6, 50004, NODE6, 8080, 0x02));
    let (verdict, out) = t.run("uplink_ingress", &syn);
    assert_eq!((verdict, out[ETH + 7]), (TC_ACT_OK, 255));
    assert_eq!(count(&t, "FastPath", "pass_no_match"), 1);
    t.dp.register_endpoint6(LO, Some(&endpoint6_info()))
        .unwrap();

    // A masqueraded flow's reply goes into the container that sent it (its veth found by
    // its address when the flow was made).
    let (_, sent) = t.run("uplink_egress", &udp6(CONTAINER6, 5000, BEYOND6, 53));
    let port = u16::from_be_bytes([sent[ETH + 40], sent[ETH + 41]]);
    let reply = to_this_host(udp6(BEYOND6, 53, NODE6, port));
    let (verdict, out) = t.run("uplink_ingress", &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        forwarded_into_container(udp6(BEYOND6, 53, CONTAINER6, 5000))
    );
    assert_eq!(count(&t, "FastPath", "redirect_to_container"), 3);

    // Fast path off: translated and passed.
    t.dp.set_node_config(&node_settings(false)).unwrap();
    let syn = to_this_host(tcp6(BEYOND6, 50005, NODE6, 8080, 0x02));
    let (verdict, out) = t.run("uplink_ingress", &syn);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out[ETH + 24..ETH + 40], CONTAINER6.octets());
    assert_eq!(count(&t, "FastPath", "redirect_to_container"), 3);
}

#[test]
fn an_endpoints_ipv6_address_leads_back_to_its_veth_until_it_is_forgotten() {
    let mut t = node6(0);
    let fill = |t: &mut TestDatapath| {
        t.dp.map_fill()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "endpoint_addresses6")
            .unwrap()
            .entries
    };
    assert_eq!(fill(&mut t), 1, "CONTAINER6 -> loopback");
    // Re-addressed: the old address no longer leads there.
    let mut moved = endpoint6_info();
    moved.addr = netd_common::user::addr6_be(NEIGHBOUR6);
    t.dp.register_endpoint6(LO, Some(&moved)).unwrap();
    assert_eq!(fill(&mut t), 1);
    // Without IPv6, and when the endpoint is gone: nothing.
    t.dp.register_endpoint6(LO, None).unwrap();
    assert_eq!(fill(&mut t), 0);
    t.dp.register_endpoint6(LO, Some(&endpoint6_info()))
        .unwrap();
    t.dp.retain_endpoints(&[]).unwrap();
    assert_eq!(fill(&mut t), 0);
}

#[test]
fn a_published_port_is_never_a_masqueraded_flows_source_port() {
    let mut t = nat6_node();
    publish_8080(&mut t);
    // A container sending from port 8080: kept, its replies would be DNATed; remapped.
    let out = tcp6(CONTAINER6, 8080, BEYOND6, 443, 0x02);
    let (_, sent) = t.run("uplink_egress", &out);
    let port = u16::from_be_bytes([sent[ETH + 40], sent[ETH + 41]]);
    assert!((61000..=65535).contains(&port), "remapped to {port}");
}

#[test]
fn a_fragmented_datagram_is_masqueraded_whole_and_so_are_its_replies() {
    let mut t = nat6_node();
    let out = udp6_fragments(CONTAINER6, 40000, BEYOND6, 53, 0x1234);
    let expected = udp6_fragments(NODE6, 40000, BEYOND6, 53, 0x1234);
    for (i, (f, want)) in out.iter().zip(&expected).enumerate() {
        let (verdict, sent) = t.run("uplink_egress", f);
        assert_eq!(verdict, TC_ACT_OK, "fragment {i}");
        assert_eq!(
            &sent, want,
            "fragment {i}: from the node, the datagram's checksum right"
        );
    }
    let back = udp6_fragments(BEYOND6, 53, NODE6, 40000, 0x99);
    let expected = udp6_fragments(BEYOND6, 53, CONTAINER6, 40000, 0x99);
    for (i, (f, want)) in back.iter().zip(&expected).enumerate() {
        let (verdict, delivered) = t.run("uplink_ingress", f);
        assert_eq!(verdict, TC_ACT_OK, "reply fragment {i}");
        assert_eq!(&delivered, want, "reply fragment {i}");
    }
    // A fragment whose first was never seen cannot be told where it goes: never sent
    // with the container's address.
    let [_, stray] = udp6_fragments(CONTAINER6, 40001, BEYOND6, 53, 0x777);
    assert_eq!(t.run("uplink_egress", &stray).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkEgress", "drop_ipv6_not_translated"), 1);
}

#[test]
fn a_lan_host_cannot_reach_a_published_port_from_a_containers_or_the_nodes_address() {
    let mut t = nat6_node();
    publish_8080(&mut t);
    // IPv6 has no rp_filter: a source inside the node's networks, or the node's own,
    // can only be forged on the LAN.
    for spoofed in [OTHER_CONTAINER6, NEIGHBOUR6, GATEWAY6, NODE6] {
        let syn = tcp6(spoofed, 50000, NODE6, 8080, 0x02);
        assert_eq!(t.run("uplink_ingress", &syn).0, TC_ACT_SHOT, "{spoofed}");
    }
    assert_eq!(count(&t, "UplinkIngress", "drop_spoofed_source"), 4);
    assert!(t.dp.flow_entries6().unwrap().is_empty());
}

#[test]
fn a_packet_that_says_it_has_no_payload_is_read_as_having_none() {
    let mut t = nat6_node();
    publish_8080(&mut t);
    // Payload length 0 on a frame that is no GSO one: the kernel trims what follows the
    // fixed header, so the SYN behind it is no packet's and opens no flow.
    let mut syn = tcp6(BEYOND6, 50000, NODE6, 8080, 0x02);
    syn[ETH + 4..ETH + 6].copy_from_slice(&[0, 0]);
    assert_eq!(t.run("uplink_ingress", &syn), (TC_ACT_OK, syn.clone()));
    assert!(t.dp.flow_entries6().unwrap().is_empty());
    assert_eq!(count(&t, "UplinkIngress", "dnat_new_flow"), 0);
}

#[test]
fn a_container_cannot_send_errors_about_another_containers_flow() {
    let mut t = nat6_node();
    t.run("uplink_egress", &udp6(OTHER_CONTAINER6, 40001, BEYOND6, 53));
    let (_, reply) = t.run("uplink_ingress", &udp6(BEYOND6, 53, NODE6, 40001));
    // CONTAINER6 quotes the reply OTHER_CONTAINER6 received.
    let forged = icmp6_error(CONTAINER6, BEYOND6, 1, 4, 0, &reply[ETH..]);
    assert_eq!(t.run("uplink_egress", &forged).0, TC_ACT_SHOT);
    assert_eq!(count(&t, "UplinkEgress", "icmp_error_translated"), 0);
    assert_eq!(count(&t, "UplinkEgress", "drop_ipv6_not_translated"), 1);
}

#[test]
fn published_again_for_an_endpoint_without_ipv6_leaves_no_ipv6_binding() {
    let mut t = nat6_node();
    publish_8080(&mut t);
    t.dp.publish(&binding_8080()[1], Some(CONTAINER), None, LO)
        .unwrap();
    let syn = tcp6(BEYOND6, 50000, NODE6, 8080, 0x02);
    assert_eq!(t.run("uplink_ingress", &syn), (TC_ACT_OK, syn.clone()));
    // And the restart's sweep keeps only the bindings listed.
    publish_8080(&mut t);
    // Gone: the [::] binding, and the standard node's 5353/udp binding (not in the list).
    assert_eq!(t.dp.retain_published(&binding_8080()[..1]).unwrap(), 2);
    assert_eq!(t.run("uplink_ingress", &syn), (TC_ACT_OK, syn.clone()));
}

#[test]
fn a_port_published_on_one_ipv6_address_answers_there_only() {
    let mut t = nat6_node();
    // The standard node's IPv4 binding of 8080 goes: IPv4 sees nothing of IPv6's.
    t.dp.unpublish(&binding_8080()[0]).unwrap();
    let on_node6 = binding_8080_on(NODE6);
    t.dp.publish(&on_node6, Some(CONTAINER), Some(CONTAINER6), LO)
        .unwrap();
    assert!(
        t.dp.is_published(&on_node6, Some(CONTAINER), Some(CONTAINER6))
            .unwrap()
    );
    assert!(!t.dp.is_published(&on_node6, Some(CONTAINER), None).unwrap());
    let syn = tcp6(BEYOND6, 50000, NODE6, 8080, 0x02);
    assert_eq!(
        t.run("uplink_ingress", &syn),
        (TC_ACT_OK, tcp6(BEYOND6, 50000, CONTAINER6, 80, 0x02))
    );
    // The node's other IPv6 address, and IPv4: not published there.
    let other = tcp6(BEYOND6, 50001, GATEWAY6, 8080, 0x02);
    assert_eq!(t.run("uplink_ingress", &other), (TC_ACT_OK, other.clone()));
    let v4 = Pkt::tcp(CLIENT, 50002, NODE, 8080, SYN).build();
    assert_eq!(t.run("uplink_ingress", &v4), (TC_ACT_OK, v4.clone()));
    // `[::]` only: every IPv6 address of the node, never IPv4.
    t.dp.unpublish(&on_node6).unwrap();
    t.dp.publish(&binding_8080()[1], Some(CONTAINER), Some(CONTAINER6), LO)
        .unwrap();
    assert_eq!(
        t.run("uplink_ingress", &other),
        (TC_ACT_OK, tcp6(BEYOND6, 50001, CONTAINER6, 80, 0x02))
    );
    let v4 = Pkt::tcp(CLIENT, 50003, NODE, 8080, SYN).build();
    assert_eq!(t.run("uplink_ingress", &v4), (TC_ACT_OK, v4.clone()));
}

/// `frame` with its MAC addresses swapped: sent back into the container it came from.
fn macs_swapped(mut frame: Vec<u8>) -> Vec<u8> {
    let (dst, src) = (frame[..6].to_vec(), frame[6..12].to_vec());
    frame[..6].copy_from_slice(&src);
    frame[6..12].copy_from_slice(&dst);
    frame
}

#[test]
fn a_container_calling_its_own_port_on_a_nodes_ipv6_address_is_sent_straight_back() {
    let mut t = nat6_node();
    publish_8080(&mut t);
    for node_addr in [NODE6, GATEWAY6] {
        let sport = if node_addr == NODE6 { 40000 } else { 40001 };
        let syn = tcp6(CONTAINER6, sport, node_addr, 8080, 0x02);
        assert_eq!(
            t.run("endpoint_ingress", &syn),
            (
                TC_ACT_REDIRECT,
                macs_swapped(tcp6(GATEWAY6, sport, CONTAINER6, 80, 0x02))
            ),
            "DNATed to itself, masqueraded to its gateway ({node_addr})"
        );
        let syn_ack = tcp6(CONTAINER6, 80, GATEWAY6, sport, 0x12);
        assert_eq!(
            t.run("endpoint_ingress", &syn_ack),
            (
                TC_ACT_REDIRECT,
                macs_swapped(tcp6(node_addr, 8080, CONTAINER6, sport, 0x12))
            ),
            "the reply from the address and port it called"
        );
    }
    // UDP too; a port of the node's that is not published is the node's.
    let dns = netd::ports::PortBinding {
        proto: netd::ports::Proto::Udp,
        container_port: 53,
        ..binding_8080()[1]
    };
    t.dp.publish(&dns, Some(CONTAINER), Some(CONTAINER6), LO)
        .unwrap();
    assert_eq!(
        t.run("endpoint_ingress", &udp6(CONTAINER6, 40003, NODE6, 8080)),
        (
            TC_ACT_REDIRECT,
            macs_swapped(udp6(GATEWAY6, 40003, CONTAINER6, 53))
        )
    );
    assert_eq!(count(&t, "EndpointIngress", "hairpin_new_flow"), 3);
    // Its port unreachable about that datagram: from the address it called, about the
    // datagram it sent (the quote's own checksum left as it was), sent straight back.
    let received = udp6(GATEWAY6, 40003, CONTAINER6, 53);
    let unreachable = icmp6_error(CONTAINER6, GATEWAY6, 1, 4, 0, &received[ETH..]);
    let mut quoted = received[ETH..].to_vec();
    quoted[8..24].copy_from_slice(&CONTAINER6.octets());
    quoted[24..40].copy_from_slice(&NODE6.octets());
    quoted[42..44].copy_from_slice(&8080u16.to_be_bytes());
    assert_eq!(
        t.run("endpoint_ingress", &unreachable),
        (
            TC_ACT_REDIRECT,
            macs_swapped(icmp6_error(NODE6, CONTAINER6, 1, 4, 0, &quoted))
        )
    );
    assert_eq!(count(&t, "EndpointIngress", "icmp_error_translated"), 1);
    let views = netd::conntrack::views(&t.dp.flow_entries6().unwrap(), 0);
    assert!(views.iter().all(|v| v.kind == "hairpin"), "{views:?}");
    let other = tcp6(CONTAINER6, 40002, NODE6, 9999, 0x02);
    assert_eq!(
        t.run("endpoint_ingress", &other),
        (TC_ACT_OK, other.clone())
    );
}

#[test]
fn a_container_calling_another_networks_port_on_a_nodes_ipv6_address_is_dnated_only() {
    let mut t = nat6_node();
    let web = netd::ports::PortBinding {
        proto: netd::ports::Proto::Tcp,
        container_port: 80,
        host_ip: Ipv6Addr::UNSPECIFIED.into(),
        host_port: 8081,
    };
    t.dp.publish(&web, Some(CONTAINER), Some(OTHER_CONTAINER6), 7)
        .unwrap();
    let syn = tcp6(CONTAINER6, 40000, NODE6, 8081, 0x02);
    assert_eq!(
        t.run("endpoint_ingress", &syn),
        (
            TC_ACT_OK,
            tcp6(CONTAINER6, 40000, OTHER_CONTAINER6, 80, 0x02)
        ),
        "the stack routes it to the backend, the caller's address kept"
    );
    // Its replies enter the backend's veth: they go straight back to the caller.
    let views = netd::conntrack::views(&t.dp.flow_entries6().unwrap(), 0);
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].kind, "hairpin");
}

#[test]
fn hairpin_over_ipv6_keeps_icc_off_and_internal_networks_apart() {
    for (flags, backend, reason) in [
        (ENDPOINT_ICC_OFF, NEIGHBOUR6, "drop_icc_disabled"),
        (ENDPOINT_INTERNAL, OTHER_CONTAINER6, "drop_internal_network"),
    ] {
        let mut t = node6(flags);
        t.dp.set_node_addrs6(&[GATEWAY6, OTHER_GATEWAY6, NODE6])
            .unwrap();
        t.dp.publish(&binding_8080()[1], Some(CONTAINER), Some(backend), 7)
            .unwrap();
        let syn = tcp6(CONTAINER6, 40000, NODE6, 8080, 0x02);
        assert_eq!(t.run("endpoint_ingress", &syn).0, TC_ACT_SHOT, "{reason}");
        assert_eq!(count(&t, "EndpointIngress", reason), 1);
        // Its own port stays reachable (icc off keeps containers apart, not from
        // themselves); an internal network's reaches nothing beyond it.
        if flags == ENDPOINT_ICC_OFF {
            t.dp.publish(&binding_8080()[1], Some(CONTAINER), Some(CONTAINER6), LO)
                .unwrap();
            let syn = tcp6(CONTAINER6, 40001, NODE6, 8080, 0x02);
            assert_eq!(t.run("endpoint_ingress", &syn).0, TC_ACT_REDIRECT);
        }
    }
}

/// NAT46 (`--nat46-pool`): an IPv6 client's TCP segment to `[::]:8080` of a container
/// with IPv4 only becomes the IPv4 segment its stack would take (header checksum, L4
/// checksum from scratch, the client's port kept, the container's port), from the
/// client's address of the pool; the container's answer becomes IPv6 again, from the
/// address and port the client called, and leaves by the uplink (a redirect).
#[test]
fn nat46_writes_an_ipv6_clients_segment_as_ipv4_and_the_answer_back_checksums_right() {
    let mut t = nat6_node();
    t.dp.set_nat46_pool(Some("198.18.0.0/16".parse().unwrap()))
        .unwrap();
    t.dp.publish(
        &binding_8080_on(Ipv6Addr::UNSPECIFIED),
        Some(CONTAINER),
        None,
        LO,
    )
    .unwrap();
    let syn = tcp6(BEYOND6, 50000, NODE6, 8080, 0x02);
    let (verdict, out) = t.run("uplink_ingress", &syn);
    let out_syn = out.clone();
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out[12..14], [0x08, 0x00], "an IPv4 frame");
    let ip = &out[ETH..ETH + 20];
    assert_eq!(ip[0], 0x45);
    assert_eq!(checksum(ip, 0), 0, "its header checksum right");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        out.len() - ETH
    );
    assert_eq!(
        ip[8],
        syn[ETH + 7],
        "TTL: the hop limit (the node's forwarding decrements it)"
    );
    assert_eq!(ip[9], TCP);
    let pool_addr = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    assert_eq!(pool_addr.octets()[..2], [198, 18], "{pool_addr}");
    assert_eq!(ip[16..20], CONTAINER.octets());
    let csum_at = l4_csum_offset(TCP);
    assert_eq!(
        u16::from_be_bytes([out[csum_at], out[csum_at + 1]]),
        l4_checksum(&out),
        "its TCP checksum right"
    );
    // The segment itself: the client's port, the container's, the rest as sent.
    let mut expected = syn[ETH + 40..].to_vec();
    expected[2..4].copy_from_slice(&80u16.to_be_bytes());
    let mut got = out[ETH + 20..].to_vec();
    for seg in [&mut expected, &mut got] {
        seg[16..18].copy_from_slice(&[0, 0]);
    }
    assert_eq!(got, expected);
    assert_eq!(count(&t, "UplinkIngress", "nat46_new_flow"), 1);
    let views = netd::conntrack::views(&t.dp.flow_entries6().unwrap(), 0);
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].kind, "nat46");
    assert_eq!(
        views[0].translated,
        format!("{pool_addr}:50000 -> {CONTAINER}:80")
    );

    // The container's answer, IPv6 again from the address and port the client called.
    let syn_ack = Pkt::tcp(CONTAINER, 80, pool_addr, 50000, 0x12).build();
    let (verdict, back) = t.run("endpoint_ingress", &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "out by the uplink");
    assert_eq!(back[12..14], [0x86, 0xdd], "an IPv6 frame");
    assert_eq!(back[ETH + 8..ETH + 24], NODE6.octets());
    assert_eq!(back[ETH + 24..ETH + 40], BEYOND6.octets());
    assert_eq!(back[ETH + 6], TCP6);
    assert_eq!(
        back[ETH + 7],
        syn_ack[ETH + 8] - 1,
        "the hop limit: the TTL, decremented"
    );
    assert_eq!(
        with_l4_checksum6(back.clone(), ETH + 40, TCP6),
        back,
        "its TCP checksum right"
    );
    assert_eq!(
        back[ETH + 40..ETH + 44],
        [0x1f, 0x90, 0xc3, 0x50],
        "8080 -> 50000"
    );
    assert_eq!(count(&t, "EndpointIngress", "nat46_translated"), 1);

    // A router between the node and the client says the answer was too big: the
    // container hears Fragmentation Needed (RFC 7915: the MTU less 20), from the client's
    // pool address, quoting the segment as it sent it.
    for (icmp6, word, icmp4, mtu) in [((2, 0), 1280, (3, 4), 1260), ((3, 0), 0, (11, 0), 0)] {
        let err = icmp6_error(ROUTER6, NODE6, icmp6.0, icmp6.1, word, &back[ETH..]);
        let (verdict, out) = t.run("uplink_ingress", &err);
        assert_eq!(verdict, TC_ACT_OK, "{icmp6:?}");
        assert_eq!(out[12..14], [0x08, 0x00], "an IPv4 frame");
        assert_eq!(
            out.len(),
            err.len() - 40,
            "two headers, each 20 bytes shorter"
        );
        let ip = &out[ETH..ETH + 20];
        assert_eq!(checksum(ip, 0), 0, "its header checksum right");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            out.len() - ETH
        );
        assert_eq!(
            (ip[9], &ip[12..16], &ip[16..20]),
            (1, &pool_addr.octets()[..], &CONTAINER.octets()[..])
        );
        let icmp = &out[ETH + 20..];
        assert_eq!((icmp[0], icmp[1]), icmp4);
        assert_eq!(icmp[4..8], (mtu as u32).to_be_bytes(), "the next-hop MTU");
        assert_eq!(checksum(icmp, 0), 0, "ICMP's checksum right");
        let quoted = &icmp[8..28];
        assert_eq!(quoted[0], 0x45);
        assert_eq!(checksum(quoted, 0), 0, "the quoted header's checksum right");
        assert_eq!(
            usize::from(u16::from_be_bytes([quoted[2], quoted[3]])),
            back.len() - ETH - 20,
            "the length the container's packet had"
        );
        assert_eq!(quoted[9], TCP);
        assert_eq!(quoted[12..16], CONTAINER.octets());
        assert_eq!(quoted[16..20], pool_addr.octets());
        assert_eq!(icmp[28..32], [0, 80, 0xc3, 0x50], "80 -> 50000");
        assert_eq!(
            icmp[32..],
            back[ETH + 44..],
            "the rest of the quote as it was"
        );
    }
    assert_eq!(count(&t, "UplinkIngress", "icmp_error_translated"), 2);

    // The container's own errors about the client's (translated) segment reach the client
    // as ICMPv6 from the address it called, quoting the segment as the client sent it.
    for (icmp4, icmp6, word) in [((3, 3), (1, 4), 0u32), ((3, 4), (2, 0), 1420)] {
        let err = icmp_error(CONTAINER, pool_addr, icmp4.0, icmp4.1, &out_syn);
        let (verdict, back) = t.run("endpoint_ingress", &err);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{icmp4:?}: out by the uplink");
        assert_eq!(back[12..14], [0x86, 0xdd], "an IPv6 frame");
        assert_eq!(
            back.len(),
            err.len() + 40,
            "two headers, each 20 bytes longer"
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([back[ETH + 4], back[ETH + 5]])),
            back.len() - ETH - 40
        );
        assert_eq!(back[ETH + 6], ICMP6);
        assert_eq!(back[ETH + 8..ETH + 24], NODE6.octets());
        assert_eq!(back[ETH + 24..ETH + 40], BEYOND6.octets());
        let icmp = &back[ETH + 40..];
        assert_eq!((icmp[0], icmp[1]), icmp6);
        assert_eq!(
            icmp[4..8],
            word.to_be_bytes(),
            "Packet Too Big's MTU: 1400 + 20"
        );
        assert_eq!(
            with_l4_checksum6(back.clone(), ETH + 40, ICMP6),
            back,
            "ICMPv6's checksum right"
        );
        let quoted = &icmp[8..48];
        assert_eq!(quoted[0] >> 4, 6);
        assert_eq!(quoted[6], TCP6);
        assert_eq!(
            usize::from(u16::from_be_bytes([quoted[4], quoted[5]])),
            syn.len() - ETH - 40,
            "the length the client's segment had"
        );
        assert_eq!(quoted[8..24], BEYOND6.octets());
        assert_eq!(quoted[24..40], NODE6.octets());
        assert_eq!(icmp[48..52], [0xc3, 0x50, 0x1f, 0x90], "50000 -> 8080");
        assert_eq!(
            icmp[52..],
            err[ETH + 52..],
            "the rest of the quote as it was"
        );
    }
    assert_eq!(count(&t, "EndpointIngress", "icmp_error_translated"), 2);
    // Never an error about what the container did not receive, nor to anyone else.
    let forged = icmp_error(
        CONTAINER,
        pool_addr,
        3,
        3,
        &Pkt::tcp(pool_addr, 50000, REMOTE, 80, 0x02).build(),
    );
    assert_eq!(t.run("endpoint_ingress", &forged).0, TC_ACT_SHOT);
    // Into the pool outside a flow: dropped.
    let stray = Pkt::udp(CONTAINER, 53, pool_addr, 40000).build();
    assert_eq!(t.run("endpoint_ingress", &stray).0, TC_ACT_SHOT);
    assert_eq!(
        count(&t, "EndpointIngress", "drop_nat46_no_flow"),
        2,
        "the forged error and the stray datagram"
    );
}
