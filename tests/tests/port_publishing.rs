//! Docker's port-publishing behaviour: `netd port`, `-P/--expose`, host IPs, conflicts
//! with processes of the node.

use std::net::Ipv4Addr;

use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, echo_once, require_root};

#[test]
fn netd_port_prints_bindings_like_docker_port() {
    require_root();
    let sb = Sandbox::new("np").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.run_idle_container("web", &["5353:53/udp", "8080:80", "127.0.0.1:8443:443"])
        .unwrap();

    // The container has IPv4 only; as Docker's (with its userland proxy), its ports
    // answer on [::] too (NAT46, on by default).
    assert_eq!(
        d.cli_ok(&["port", "web"]).unwrap(),
        "53/udp -> 0.0.0.0:5353\n53/udp -> [::]:5353\n80/tcp -> 0.0.0.0:8080\n\
         80/tcp -> [::]:8080\n443/tcp -> 127.0.0.1:8443\n"
    );
    assert_eq!(
        d.cli_ok(&["port", "web", "80"]).unwrap(),
        "0.0.0.0:8080\n[::]:8080\n"
    );
    assert_eq!(
        d.cli_ok(&["port", "web", "53/udp"]).unwrap(),
        "0.0.0.0:5353\n[::]:5353\n"
    );
    let out = d.cli(&["port", "web", "53"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no public port '53/tcp' published for web")
    );
}

#[test]
fn with_nat46_off_an_ipv4_only_container_publishes_on_ipv4_only() {
    require_root();
    let sb = Sandbox::new("n4").unwrap();
    let d = Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--nat46-pool", "off"]).unwrap();
    let Err(refused) = d.run_idle_container("web", &["8080:80", "[::]:8081:81"]) else {
        panic!("[::] published for a container with IPv4 only, NAT46 off");
    };
    assert!(
        format!("{refused:#}")
            .contains("invalid host IP [::]: the container has no IPv6 address to publish to"),
        "{refused:#}"
    );
    d.run_idle_container("web", &["8080:80"]).unwrap();
    assert_eq!(
        d.cli_ok(&["port", "web"]).unwrap(),
        "80/tcp -> 0.0.0.0:8080\n"
    );
    // Off, a network may use the default pool's addresses.
    d.cli_ok(&["network", "create", "--subnet", "198.18.7.0/24", "lab"])
        .unwrap();
}

#[test]
fn publish_all_gives_exposed_ports_ephemeral_host_ports() {
    require_root();
    let sb = Sandbox::new("pa").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.cli_ok(&[
        "run", "-d", "--name", "web", "-P", "--expose", "80", "--expose", "90/udp", "--", "sleep",
        "infinity",
    ])
    .unwrap();
    let web = d.container("web").unwrap();
    let range = sb
        .node
        .exec(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"])
        .unwrap()
        .stdout;
    let range: Vec<u16> = String::from_utf8(range)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();

    let host_port = published_port(&d, "web", "80");
    let udp_port = published_port(&d, "web", "90/udp");
    for p in [host_port, udp_port] {
        assert!(
            (range[0]..=range[1]).contains(&p),
            "{p} comes from ip_local_port_range {range:?}"
        );
    }
    let server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    echo_once(
        &sb.ext.path(),
        Proto::Tcp,
        addr(Sandbox::NODE_ADDR, host_port),
    )
    .unwrap();
    assert_eq!(server.peers().len(), 1);
}

#[test]
fn host_port_held_by_a_node_process_is_refused() {
    require_root();
    let sb = Sandbox::new("pi").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let _listener = EchoServer::start(
        &sb.node.path(),
        Proto::Tcp,
        addr(Ipv4Addr::UNSPECIFIED, 8080),
    )
    .unwrap();

    let out = d
        .cli(&[
            "run", "-d", "--name", "web", "-p", "8080:80", "--", "sleep", "infinity",
        ])
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "Bind for 0.0.0.0:8080 failed: port is already in use by a process on the node"
        ),
        "{err}"
    );
    // UDP 8080 is a different port.
    d.run_idle_container("dns", &["8080:53/udp"]).unwrap();
}

#[test]
fn binding_on_a_specific_host_ip_answers_only_there() {
    require_root();
    let sb = Sandbox::new("ph").unwrap();
    let second = Ipv4Addr::new(10, 200, 0, 3);
    sb.node
        .ip(&["addr", "add", "10.200.0.3/24", "dev", Sandbox::UPLINK])
        .unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let only = d
        .run_idle_container("only", &["10.200.0.3:8080:80"])
        .unwrap();
    let every = d.run_idle_container("every", &["9090:80"]).unwrap();
    let only_server = EchoServer::start(&only.netns, Proto::Tcp, addr(only.ip, 80)).unwrap();
    let every_server = EchoServer::start(&every.netns, Proto::Tcp, addr(every.ip, 80)).unwrap();
    let ext = sb.ext.path();

    echo_once(&ext, Proto::Tcp, addr(second, 8080)).unwrap();
    assert!(
        echo_once(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).is_err(),
        "not on the other address"
    );
    assert_eq!(only_server.peers().len(), 1);

    echo_once(&ext, Proto::Tcp, addr(second, 9090)).unwrap();
    echo_once(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 9090)).unwrap();
    assert_eq!(
        every_server.peers().len(),
        2,
        "a wildcard binding answers on every node address"
    );
}

/// The host port of a container port, from `netd port NAME PORT` (`0.0.0.0:32768`).
fn published_port(d: &Daemon, name: &str, port: &str) -> u16 {
    let out = d.cli_ok(&["port", name, port]).unwrap();
    out.trim().rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_wildcard_binding_answers_on_an_address_added_later() {
    require_root();
    let sb = Sandbox::new("pw").unwrap();
    // With the periodic sweep an hour away, only the address-change notification can
    // teach the data path the new address.
    let d = Daemon::start_with(
        &sb.node,
        Sandbox::UPLINK,
        &["--conntrack-gc-interval", "3600"],
    )
    .unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let _srv = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let added = Ipv4Addr::new(10, 200, 0, 50);
    sb.node
        .ip(&["addr", "add", "10.200.0.50/24", "dev", Sandbox::UPLINK])
        .unwrap();
    let mut result = echo_once(&sb.ext.path(), Proto::Tcp, addr(added, 8080));
    for _ in 0..20 {
        if result.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        result = echo_once(&sb.ext.path(), Proto::Tcp, addr(added, 8080));
    }
    result.expect("the new address answers for the wildcard binding");
}

#[test]
fn nat46s_default_pool_steps_aside_for_a_lan_that_uses_it_and_a_pool_given_there_is_refused() {
    require_root();
    let sb = Sandbox::new("n5").unwrap();
    // The node's LAN uses part of the benchmarking block NAT46's default pool is from.
    sb.node
        .ip(&["addr", "add", "198.18.9.2/24", "dev", Sandbox::UPLINK])
        .unwrap();
    let Err(refused) = Daemon::start_with(
        &sb.node,
        Sandbox::UPLINK,
        &["--nat46-pool", "198.18.0.0/16"],
    ) else {
        panic!("a daemon started with a NAT46 pool over its own LAN");
    };
    assert!(
        format!("{refused:#}").contains(
            "--nat46-pool 198.18.0.0/16 overlaps the node's address 198.18.9.2/24: choose another pool"
        ),
        "{refused:#}"
    );
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    assert!(
        d.log().contains(
            "NAT46 off: its default pool 198.18.0.0/16 overlaps the node's address 198.18.9.2/24"
        ),
        "{}",
        d.log()
    );
    d.run_idle_container("web", &["8080:80"]).unwrap();
    assert_eq!(
        d.cli_ok(&["port", "web"]).unwrap(),
        "80/tcp -> 0.0.0.0:8080\n"
    );
}
