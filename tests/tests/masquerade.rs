//! Container egress leaves through the uplink masqueraded to the node's address.

use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, echo_once, require_root};

#[test]
fn masqueraded_egress_is_seen_with_node_address() {
    require_root();
    let sb = Sandbox::new("mq").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let app = d.run_idle_container("app", &[]).unwrap();
    let target = addr(Sandbox::INET_ADDR, 9000);
    let tcp = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();
    let udp = EchoServer::start(&sb.inet.path(), Proto::Udp, target).unwrap();

    // The inet namespace has no route to the container subnet: without SNAT no reply
    // could come back, so a completed echo proves the reverse translation too.
    echo_once(&app.netns, Proto::Tcp, target).unwrap();
    echo_once(&app.netns, Proto::Udp, target).unwrap();

    for peers in [tcp.peers(), udp.peers()] {
        assert!(!peers.is_empty());
        for p in peers {
            assert_eq!(
                p.ip(),
                Sandbox::NODE_ADDR,
                "the outside must see the node's address"
            );
        }
    }
    assert!(d.counter("UplinkEgress", "snat_new_flow").unwrap() >= 2);
    assert!(d.counter("UplinkIngress", "snat_reply").unwrap() >= 2);
}

#[test]
fn many_flows_to_one_destination_get_distinct_ports() {
    require_root();
    let sb = Sandbox::new("mp").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let app = d.run_idle_container("app", &[]).unwrap();
    let target = addr(Sandbox::INET_ADDR, 9001);
    let server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();

    for _ in 0..20 {
        echo_once(&app.netns, Proto::Tcp, target).unwrap();
    }

    let mut ports: Vec<u16> = server.peers().iter().map(|p| p.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(
        ports.len(),
        20,
        "every flow needs its own translated source port"
    );
    assert!(
        ports.iter().all(|p| (61000..=65535).contains(p)),
        "ports come from the SNAT range: {ports:?}"
    );
}
