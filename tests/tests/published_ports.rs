//! Published ports through the uplink's programs: real TCP and UDP from the external
//! namespace to the node's address, DNATed to a container (by TC or XDP, delivered past
//! the bridge or not, as the data-path combination under test says).

use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, addr, assert_fast_paths_taken, echo_once, require_root,
};

#[test]
fn published_tcp_port_reaches_container_with_client_address() {
    require_root();
    let sb = Sandbox::new("pt").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();

    let client = echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();

    assert_eq!(
        server.peers(),
        vec![client],
        "the container must see the client's own address"
    );
    assert_eq!(client.ip(), Sandbox::EXT_ADDR);
    assert!(d.from_network("dnat_new_flow").unwrap() >= 1);
    assert!(d.to_network("dnat_reply").unwrap() >= 1);
    assert_fast_paths_taken(&d);
}

#[test]
fn udp_published_port_reaches_container() {
    require_root();
    let sb = Sandbox::new("pu").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let dns = d.run_idle_container("dns", &["5353:53/udp"]).unwrap();
    let server = EchoServer::start(&dns.netns, Proto::Udp, addr(dns.ip, 53)).unwrap();

    let client = echo_once(&sb.ext.path(), Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)).unwrap();

    assert_eq!(server.peers()[0], client);
}

#[test]
fn unpublished_port_does_not_reach_container() {
    require_root();
    let sb = Sandbox::new("pn").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let published = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let private = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 81)).unwrap();

    // Neither the container port itself nor a port nobody published answers.
    for port in [81, 80, 8081] {
        let err = echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, port));
        assert!(
            err.is_err(),
            "node port {port} must not reach the container"
        );
    }
    assert!(private.peers().is_empty());
    assert!(published.peers().is_empty());
    // The published one still works, so the failures above are not a broken sandbox.
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    assert_eq!(published.peers().len(), 1);
}

#[test]
fn removed_container_no_longer_answers_and_leaves_nothing() {
    require_root();
    let sb = Sandbox::new("pr").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let _server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();

    d.cli_ok(&["rm", "-f", "web"]).unwrap();

    assert!(echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).is_err());
    let links_after = String::from_utf8(sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap();
    assert!(
        !links_after.contains("master netd0"),
        "the container's veth must be gone: {links_after}"
    );
    assert!(
        d.cli_ok(&["ps", "-a"]).unwrap().lines().count() == 1,
        "only the header is left"
    );
}

#[test]
fn a_published_range_reaches_every_port() {
    require_root();
    let sb = Sandbox::new("pg").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d
        .run_idle_container("web", &["8000-8002:80-82", "9000-9002:90-92/udp"])
        .unwrap();

    for i in 0..3u16 {
        for (proto, host, ctr) in [(Proto::Tcp, 8000, 80), (Proto::Udp, 9000, 90)] {
            let server = EchoServer::start(&web.netns, proto, addr(web.ip, ctr + i)).unwrap();
            echo_once(&sb.ext.path(), proto, addr(Sandbox::NODE_ADDR, host + i)).unwrap();
            assert_eq!(
                server.peers().len(),
                1,
                "{proto:?} {} -> {}",
                host + i,
                ctr + i
            );
        }
    }
}
