//! Hairpin: containers calling published ports through the node's address, their own
//! included, as they would call any service published on the host.

use std::net::Ipv4Addr;

use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, echo_once, require_root};

#[test]
fn hairpin_to_another_containers_published_port() {
    require_root();
    let sb = Sandbox::new("hp").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d
        .run_idle_container("web", &["8080:80", "5353:53/udp"])
        .unwrap();
    let app = d.run_idle_container("app", &[]).unwrap();
    let tcp = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let udp = EchoServer::start(&web.netns, Proto::Udp, addr(web.ip, 53)).unwrap();

    let local = echo_once(&app.netns, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    echo_once(&app.netns, Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)).unwrap();

    assert_eq!(
        tcp.peers(),
        vec![local],
        "the backend sees the calling container's own address"
    );
    assert_eq!(udp.peers()[0].ip(), app.ip);
    assert!(d.counter("EndpointIngress", "hairpin_new_flow").unwrap() >= 2);
}

#[test]
fn hairpin_to_own_published_port() {
    require_root();
    let sb = Sandbox::new("hs").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d
        .run_idle_container("web", &["8080:80", "5353:53/udp"])
        .unwrap();
    let tcp = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let udp = EchoServer::start(&web.netns, Proto::Udp, addr(web.ip, 53)).unwrap();

    // Its own published port: the reply must come back through the translation, so the
    // call is masqueraded to the network's gateway, as Docker's hairpin NAT does.
    echo_once(&web.netns, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    echo_once(&web.netns, Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)).unwrap();

    let gateway = Ipv4Addr::new(172, 17, 0, 1);
    assert_eq!(tcp.peers()[0].ip(), gateway);
    assert_eq!(udp.peers()[0].ip(), gateway);
    let flows = d.cli_ok(&["conntrack", "--format", "json"]).unwrap();
    assert!(flows.contains("\"kind\": \"hairpin\""), "{flows}");
}

#[test]
fn unpublished_node_port_from_a_container_is_not_translated() {
    require_root();
    let sb = Sandbox::new("hn").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let app = d.run_idle_container("app", &[]).unwrap();
    // A service of the node itself, on a port nobody published.
    let node_service = EchoServer::start(
        &sb.node.path(),
        Proto::Tcp,
        addr(Ipv4Addr::UNSPECIFIED, 7000),
    )
    .unwrap();

    let local = echo_once(&app.netns, Proto::Tcp, addr(Sandbox::NODE_ADDR, 7000)).unwrap();

    assert_eq!(
        node_service.peers(),
        vec![local],
        "the node sees the container's own address"
    );
}
