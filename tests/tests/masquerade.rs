//! Container egress leaves through the uplink masqueraded to the node's address.

use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, addr, assert_fast_paths_taken, echo_once, require_root,
    udp_echo_from,
};

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
    assert!(d.to_network("snat_new_flow").unwrap() >= 2);
    assert!(d.from_network("snat_reply").unwrap() >= 2);
    assert_fast_paths_taken(&d);
}

#[test]
fn many_flows_to_one_destination_keep_their_own_distinct_ports() {
    require_root();
    let sb = Sandbox::new("mp").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let app = d.run_idle_container("app", &[]).unwrap();
    let target = addr(Sandbox::INET_ADDR, 9001);
    let server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();

    let mut local: Vec<u16> = (0..20)
        .map(|_| echo_once(&app.netns, Proto::Tcp, target).unwrap().port())
        .collect();

    let mut seen: Vec<u16> = server.peers().iter().map(|p| p.port()).collect();
    local.sort();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen, local,
        "as with Linux's MASQUERADE, each flow keeps the container's own source port"
    );
}

#[test]
fn a_source_port_in_use_is_remapped_into_the_snat_range() {
    require_root();
    let sb = Sandbox::new("mr").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let a = d.run_idle_container("aa", &[]).unwrap();
    let b = d.run_idle_container("bb", &[]).unwrap();
    let target = addr(Sandbox::INET_ADDR, 9002);
    let server = EchoServer::start(&sb.inet.path(), Proto::Udp, target).unwrap();
    // A socket of the node itself on port 40001.
    let _node_socket = netd_tests::echo::in_netns(&sb.node.path(), || {
        Ok(std::net::UdpSocket::bind("0.0.0.0:40001")?)
    })
    .unwrap();

    udp_echo_from(&a.netns, 40000, target).unwrap();
    // Container b from the same port to the same destination: the tuple is a's.
    udp_echo_from(&b.netns, 40000, target).unwrap();
    // A port the node's own socket holds.
    udp_echo_from(&a.netns, 40001, target).unwrap();

    let mut ports: Vec<u16> = server.peers().iter().map(|p| p.port()).collect();
    // A datagram sent again (UDP's first may be lost) is the same flow.
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");
    assert_eq!(ports[0], 40000, "the first flow keeps its port");
    for p in &ports[1..] {
        assert!(
            (61000..=65535).contains(p),
            "a taken port is remapped into --snat-ports: {ports:?}"
        );
    }
    assert!(server.peers().iter().all(|p| p.ip() == Sandbox::NODE_ADDR));
}
