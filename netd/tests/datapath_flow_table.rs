//! The connection table's two maps under BPF_PROG_TEST_RUN: a flow starts unconfirmed and
//! is confirmed once the side that answered acknowledges beyond the handshake (for UDP,
//! once a reply comes), which a blind spoofer cannot bring about; an endpoint
//! over its quota keeps working from the unconfirmed table; a flood of flows that are
//! never answered evicts only unconfirmed flows; the sweep gives back what it removes.

mod support;

use std::net::Ipv4Addr;

use netd::conntrack::{self, FlowTable};
use support::*;

fn tables(t: &mut TestDatapath) -> (usize, usize) {
    let entries = t.dp.flow_entries().unwrap();
    let confirmed = entries
        .iter()
        .filter(|(_, _, table)| *table == FlowTable::Confirmed)
        .count();
    (confirmed, entries.len() - confirmed)
}

/// A connection to the published port as far as its first exchange: the handshake, then
/// the server acknowledging the client's first data.
fn handshake(t: &mut TestDatapath, sport: u16) {
    let from_client = |flags| Pkt::tcp(CLIENT, sport, NODE, 8080, flags).build();
    let from_server = |flags| Pkt::tcp(CONTAINER, 80, CLIENT, sport, flags).build();
    assert_eq!(t.run("uplink_ingress", &from_client(SYN)).0, TC_ACT_OK);
    assert_eq!(t.run("uplink_egress", &from_server(SYN | ACK)).0, TC_ACT_OK);
    let (v, out) = t.run("uplink_ingress", &from_client(ACK));
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(
        dst_of(&out),
        (CONTAINER, 80),
        "translated, confirmed or not"
    );
    assert_eq!(t.run("uplink_egress", &from_server(ACK)).0, TC_ACT_OK);
}

#[test]
fn a_flow_is_confirmed_by_what_only_a_real_peer_brings_about() {
    let mut t = standard_node();
    let from_client = |flags| Pkt::tcp(CLIENT, 40000, NODE, 8080, flags).build();
    let from_server = |flags| Pkt::tcp(CONTAINER, 80, CLIENT, 40000, flags).build();
    t.run("uplink_ingress", &from_client(SYN));
    assert_eq!(tables(&mut t), (0, 2), "a SYN alone: unconfirmed");
    t.run("uplink_egress", &from_server(SYN | ACK));
    assert_eq!(
        tables(&mut t),
        (0, 2),
        "answered, not acknowledged: unconfirmed"
    );
    // What a blind spoofer can add: a bare ACK, which the server answers with a reset.
    t.run("uplink_ingress", &from_client(ACK));
    assert_eq!(
        tables(&mut t),
        (0, 2),
        "a SYN and an ACK from anyone confirm nothing"
    );
    // A real client's data, acknowledged by the server.
    t.run("uplink_egress", &from_server(ACK));
    assert_eq!(
        tables(&mut t),
        (2, 0),
        "the server acknowledged beyond the handshake"
    );
    assert_eq!(count(&t, "FlowTable", "flow_confirmed"), 1);

    let mut spoofed = standard_node();
    let from_client = |flags| Pkt::tcp(CLIENT, 40001, NODE, 8080, flags).build();
    let from_server = |flags| Pkt::tcp(CONTAINER, 80, CLIENT, 40001, flags).build();
    spoofed.run("uplink_ingress", &from_client(SYN));
    spoofed.run("uplink_egress", &from_server(SYN | ACK));
    spoofed.run("uplink_ingress", &from_client(ACK));
    spoofed.run("uplink_egress", &from_server(RST));
    assert_eq!(
        tables(&mut spoofed),
        (0, 2),
        "the server's reset confirms nothing"
    );

    // UDP: on the first reply.
    t.run(
        "uplink_ingress",
        &Pkt::udp(CLIENT, 40001, NODE, 5353).build(),
    );
    assert_eq!(tables(&mut t), (2, 2));
    t.run(
        "uplink_egress",
        &Pkt::udp(CONTAINER, 53, CLIENT, 40001).build(),
    );
    assert_eq!(tables(&mut t), (4, 0));
}

#[test]
fn an_endpoint_over_its_quota_keeps_working_unconfirmed() {
    let mut t = standard_node();
    let mut settings = node_settings(false);
    settings.flow_quota = 2;
    t.dp.set_node_config(&settings).unwrap();
    for sport in 40000..40004 {
        handshake(&mut t, sport);
    }
    assert_eq!(
        tables(&mut t),
        (4, 4),
        "two flows confirmed, two left unconfirmed"
    );
    assert_eq!(count(&t, "FlowTable", "unconfirmed_endpoint_over_quota"), 2);
    let (v, out) = t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40003, NODE, 8080, ACK).build(),
    );
    assert_eq!((v, dst_of(&out)), (TC_ACT_OK, (CONTAINER, 80)));
}

#[test]
fn once_the_table_is_three_quarters_full_only_small_endpoints_confirm() {
    // 64 entries: 32 flows, 24 of them the high water.
    let mut t = standard_node_with(TestDatapath::with_flow_table(64));
    let mut settings = node_settings(false);
    settings.flow_quota = 100;
    t.dp.set_node_config(&settings).unwrap();
    for sport in 40000..40030 {
        handshake(&mut t, sport);
    }
    assert_eq!(
        tables(&mut t).0,
        48,
        "one endpoint confirms up to the high water"
    );
    assert!(count(&t, "FlowTable", "unconfirmed_table_reserved") >= 6);
}

#[test]
fn a_flood_of_unanswered_flows_evicts_no_confirmed_flow() {
    // 64 entries a map: the flood is ten times that.
    let mut t = standard_node_with(TestDatapath::with_flow_table(64));
    let mut settings = node_settings(false);
    settings.flow_quota = 100;
    t.dp.set_node_config(&settings).unwrap();
    handshake(&mut t, 40000);
    for sport in 0..320u16 {
        let syn = Pkt::tcp(
            Ipv4Addr::new(10, 202, 1, (sport % 250) as u8),
            1000 + sport,
            NODE,
            8080,
            SYN,
        );
        assert_eq!(
            t.run("uplink_ingress", &syn.build()).0,
            TC_ACT_OK,
            "never refused"
        );
    }
    let (confirmed, unconfirmed) = tables(&mut t);
    assert_eq!(confirmed, 2, "the established flow is still there");
    assert!(unconfirmed <= 64, "{unconfirmed}");
    let (v, out) = t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, ACK).build(),
    );
    assert_eq!((v, dst_of(&out)), (TC_ACT_OK, (CONTAINER, 80)));
    // A new connection right after the flood gets in and completes.
    handshake(&mut t, 41000);
    assert_eq!(tables(&mut t).0, 4);
    assert_eq!(count(&t, "UplinkIngress", "drop_flow_table_full"), 0);
}

#[test]
fn the_sweep_gives_back_the_quota_of_the_flows_it_removes() {
    let mut t = standard_node();
    handshake(&mut t, 40000);
    let owners = |t: &mut TestDatapath| conntrack::owners(&t.dp.flow_entries().unwrap());
    let backend = netd_common::user::addr_be(CONTAINER);
    assert_eq!(owners(&mut t)[&backend], 1);
    let counted = t.dp.flow_owner_counts().unwrap();
    assert_eq!(counted[&backend], 1, "the programs count it too");
    assert_eq!(counted[&netd_common::maps::ALL_OWNERS], 1, "and in all");

    let snapshot = t.dp.flow_entries().unwrap();
    let last = latest_seen(&snapshot);
    let now = last + conntrack::TCP_ESTABLISHED_TIMEOUT + 1;
    let expired: Vec<_> = conntrack::expired(&snapshot, now)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        t.dp.sweep_flows(FlowTable::Confirmed, &expired, now)
            .unwrap(),
        2
    );
    // The owner's count went back to zero in the kernel itself.
    assert!(owners(&mut t).is_empty());
    let counted = t.dp.flow_owner_counts().unwrap();
    assert_eq!(counted.values().sum::<u64>(), 0, "{counted:?}");
}

/// A half whose partner was evicted and replaced by another flow's half under the same
/// key is stale: it no longer translates anything, and the new flow works.
#[test]
fn a_half_whose_partner_now_belongs_to_another_flow_is_ignored() {
    let mut t = standard_node();
    let first = Pkt::udp(CONTAINER, 5555, REMOTE, 9999).build();
    let (_, sent) = t.run("uplink_egress", &first);
    let old_port = src_of(&sent).1;
    // The first half goes, as an LRU eviction would take it; the reply half stays.
    let container = netd_common::user::addr_be(CONTAINER);
    let evicted: Vec<_> =
        t.dp.flow_entries()
            .unwrap()
            .into_iter()
            .filter(|(k, _, _)| k.src_addr == container)
            .map(|(k, _, _)| k)
            .collect();
    assert_eq!(evicted.len(), 1);
    t.dp.remove_flows(&evicted).unwrap();

    let (_, again) = t.run("uplink_egress", &first);
    let new_port = src_of(&again).1;
    assert_ne!(new_port, old_port, "the stale half still holds its port");
    let reply_to = |port| Pkt::udp(REMOTE, 9999, NODE, port).build();
    let stale = reply_to(old_port);
    assert_eq!(
        t.run("uplink_ingress", &stale),
        (TC_ACT_OK, stale),
        "the stale half translates nothing"
    );
    // Counted: an unconfirmed flow broken by an eviction.
    assert_eq!(count(&t, "FlowTable", "flow_evicted"), 1);
    let (v, out) = t.run("uplink_ingress", &reply_to(new_port));
    assert_eq!((v, dst_of(&out)), (TC_ACT_OK, (CONTAINER, 5555)));
}
