//! The connection table's two maps under BPF_PROG_TEST_RUN: a flow starts unconfirmed and
//! is confirmed once a TCP handshake completes (or, for UDP, a reply comes); an endpoint
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

fn handshake(t: &mut TestDatapath, sport: u16) {
    let (v, _) = t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, sport, NODE, 8080, SYN).build(),
    );
    assert_eq!(v, TC_ACT_OK);
    let syn_ack = Pkt::tcp(CONTAINER, 80, CLIENT, sport, SYN | ACK).build();
    assert_eq!(t.run("uplink_egress", &syn_ack).0, TC_ACT_OK);
    let (v, out) = t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, sport, NODE, 8080, ACK).build(),
    );
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(
        dst_of(&out),
        (CONTAINER, 80),
        "translated, confirmed or not"
    );
}

#[test]
fn a_flow_is_confirmed_by_a_completed_handshake_not_by_a_syn() {
    let mut t = standard_node();
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, SYN).build(),
    );
    assert_eq!(tables(&mut t), (0, 2), "a SYN alone: unconfirmed");
    let syn_ack = Pkt::tcp(CONTAINER, 80, CLIENT, 40000, SYN | ACK).build();
    t.run("uplink_egress", &syn_ack);
    assert_eq!(
        tables(&mut t),
        (0, 2),
        "answered, but not acknowledged: still unconfirmed"
    );
    t.run(
        "uplink_ingress",
        &Pkt::tcp(CLIENT, 40000, NODE, 8080, ACK).build(),
    );
    assert_eq!(tables(&mut t), (2, 0), "the handshake completed");
    assert_eq!(count(&t, "FlowTable", "flow_confirmed"), 1);

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
    assert_eq!(owners(&mut t).values().sum::<u64>(), 1);
    let info = t.dp.map_entry_counts().unwrap();
    assert_eq!(info.iter().find(|(n, _)| *n == "flow_owners").unwrap().1, 1);

    let snapshot = t.dp.flow_entries().unwrap();
    let last = snapshot
        .iter()
        .map(|(_, e, _)| e.last_seen_ns)
        .max()
        .unwrap();
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
