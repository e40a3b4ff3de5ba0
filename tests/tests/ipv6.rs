//! IPv6 on netd's networks, end to end: `network create --ipv6` gives containers an
//! IPv6 address from IPAM (or `--ip6`) beside their IPv4 one, and real TCP and UDP flow
//! over it between containers of the network and to the node, addresses untouched; what
//! leaves for beyond the node's networks is masqueraded (NAT66) behind the node's
//! address, TCP, UDP and ping, its connections kept across a restart, unless the
//! network's IPv6 is routed or not masqueraded. Ports published with `-p` answer on the
//! node's IPv6 addresses, to the LAN and to containers, also for a container with IPv4
//! only (NAT46). From the LAN nothing reaches a container's IPv6 address, even on a node
//! that forwards IPv6. What is decided at a container's first hop before any fast path
//! (isolation, icc off, `--internal`, the guards against spoofing and playing router or
//! neighbour) is in `ipv6_policing.rs`, which runs once instead of under every data-path
//! combination.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use netd_tests::{
    Daemon, EchoServer, HeldConnection, Proto, Sandbox, addr,
    echo::{in_netns, net_sysctl},
    echo_fails, echo_once,
    ipv6::{C1, C2, GATEWAY6, SUBNET6, dual_stack, published_to_lan6, run_on, v6},
    monitor, require_root,
    stream::Stream,
};

#[test]
fn containers_of_a_dual_stack_network_talk_tcp_and_udp_over_ipv6_also_after_a_restart() {
    require_root();
    let sb = Sandbox::new("6a").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    d.cli_ok(&["network", "create", "--subnet", "10.10.2.0/24", "v4only"])
        .unwrap();
    let c1 = run_on(&d, "c1", "ds", Some(C1));
    let c2 = run_on(&d, "c2", "ds", Some(C2));
    let _auto = run_on(&d, "auto", "ds", None);
    let plain = run_on(&d, "plain", "v4only", None);

    // IPv6 on where the network has it, with no router advertisement taken; off elsewhere.
    assert_eq!(net_sysctl(&c1.netns, "ipv6/conf/eth0/disable_ipv6"), "0");
    assert_eq!(net_sysctl(&c1.netns, "ipv6/conf/eth0/accept_ra"), "0");
    assert_eq!(net_sysctl(&plain.netns, "ipv6/conf/eth0/disable_ipv6"), "1");
    let inspect: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["inspect", "auto"]).unwrap()).unwrap();
    let text = inspect.to_string();
    assert!(
        text.contains("fd00:10:1::"),
        "auto has no address of the subnet: {text}"
    );

    let check = || {
        for proto in [Proto::Tcp, Proto::Udp] {
            let target = v6(C2, 7000);
            let server = EchoServer::start(&c2.netns, proto, target).unwrap();
            echo_once(&c1.netns, proto, target).unwrap();
            assert_eq!(
                server.peers().iter().map(|p| p.ip()).collect::<Vec<_>>(),
                [IpAddr::V6(C1)],
                "{proto:?}: the peer is c1's own address"
            );
        }
        // The node, through its gateway address.
        let target = v6(GATEWAY6, 7001);
        let server = EchoServer::start(&sb.node.path(), Proto::Tcp, target).unwrap();
        echo_once(&c1.netns, Proto::Tcp, target).unwrap();
        assert_eq!(server.peers()[0].ip(), IpAddr::V6(C1));
        // Beyond the node's networks: masqueraded behind the node's address.
        let out = v6(Sandbox::INET_ADDR6, 7002);
        let server = EchoServer::start(&sb.inet.path(), Proto::Udp, out).unwrap();
        echo_once(&c1.netns, Proto::Udp, out).unwrap();
        assert_eq!(server.peers()[0].ip(), IpAddr::V6(Sandbox::NODE_ADDR6));
    };
    check();
    assert_eq!(d.info().unwrap()["map_entries"]["endpoints6"], 3);
    d.stop(libc::SIGKILL).unwrap();
    d.restart().unwrap();
    check();
    assert_eq!(d.info().unwrap()["map_entries"]["endpoints6"], 3);
    for c in ["c1", "c2", "auto", "plain"] {
        d.cli_ok(&["rm", "-f", c]).unwrap();
    }
    let info = d.info().unwrap();
    assert_eq!(info["map_entries"]["endpoints6"], 0, "{info}");
}

#[test]
fn the_lan_reaches_no_containers_ipv6_address_even_through_a_forwarding_node() {
    require_root();
    let sb = Sandbox::new("6l").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    let c1 = run_on(&d, "c1", "ds", Some(C1));
    // The node forwards IPv6 (for reasons of its own) and the LAN has a route to the
    // containers' subnet through it.
    sb.node.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    sb.ext
        .ip(&[
            "-6",
            "route",
            "add",
            SUBNET6,
            "via",
            &Sandbox::NODE_ADDR6.to_string(),
        ])
        .unwrap();
    let servers: Vec<EchoServer> = [Proto::Tcp, Proto::Udp]
        .map(|p| EchoServer::start(&c1.netns, p, v6(C1, 7200)).unwrap())
        .into();
    let before = d.counter("UplinkIngress", "drop_not_published").unwrap();
    for proto in [Proto::Tcp, Proto::Udp] {
        assert!(
            echo_fails(&sb.ext.path(), proto, v6(C1, 7200)).unwrap(),
            "{proto:?}"
        );
    }
    assert!(d.counter("UplinkIngress", "drop_not_published").unwrap() > before);
    assert!(servers.iter().all(|s| s.peers().is_empty()));
    // The node's own address on that subnet is the node's business.
    let node_server = EchoServer::start(&sb.node.path(), Proto::Tcp, v6(GATEWAY6, 7201)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, v6(GATEWAY6, 7201)).unwrap();
    assert_eq!(node_server.peers()[0].ip(), IpAddr::V6(Sandbox::EXT_ADDR6));
}

#[test]
fn a_network_with_routed_ipv6_reaches_and_is_reached_by_the_internet_at_its_own_addresses() {
    require_root();
    let sb = Sandbox::new("6r").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let prefix = "2001:db8:99::/64";
    dual_stack(
        &d,
        "pub6",
        "10.10.9.0/24",
        prefix,
        &["-o", "com.docker.network.bridge.gateway_mode_ipv6=routed"],
    );
    dual_stack(&d, "nat6", "10.10.8.0/24", "fd00:10:8::/64", &[]);
    let own: Ipv6Addr = "2001:db8:99::10".parse().unwrap();
    let c = run_on(&d, "pub", "pub6", Some(own));
    let other = run_on(&d, "other", "nat6", Some("fd00:10:8::10".parse().unwrap()));
    // The LAN routes the prefix to the node, which now routes IPv6 and still takes
    // router advertisements on its uplink.
    sb.ext
        .ip(&[
            "-6",
            "route",
            "add",
            prefix,
            "via",
            &Sandbox::NODE_ADDR6.to_string(),
        ])
        .unwrap();
    assert_eq!(net_sysctl(&sb.node.path(), "ipv6/conf/all/forwarding"), "1");
    assert_eq!(
        net_sysctl(&sb.node.path(), "ipv6/conf/uplink0/accept_ra"),
        "2"
    );

    for proto in [Proto::Tcp, Proto::Udp] {
        let out = v6(Sandbox::INET_ADDR6, 7300);
        let server = EchoServer::start(&sb.inet.path(), proto, out).unwrap();
        echo_once(&c.netns, proto, out).unwrap();
        assert_eq!(server.peers()[0].ip(), IpAddr::V6(own), "{proto:?} out");
        let into = v6(own, 7301);
        let server = EchoServer::start(&c.netns, proto, into).unwrap();
        echo_once(&sb.inet.path(), proto, into).unwrap();
        assert_eq!(
            server.peers()[0].ip(),
            IpAddr::V6(Sandbox::INET_ADDR6),
            "{proto:?} in"
        );
    }
    assert!(d.counter("EndpointIngress", "pass_ipv6_routed").unwrap() > 0);
    assert!(d.counter("UplinkIngress", "pass_ipv6_routed").unwrap() > 0);
    // Its IPv4 is masqueraded as before; a network whose IPv6 is not routed is
    // masqueraded.
    sb.assert_masqueraded_out(&c.netns).unwrap();
    let out = v6(Sandbox::INET_ADDR6, 7303);
    let server = EchoServer::start(&sb.inet.path(), Proto::Udp, out).unwrap();
    echo_once(&other.netns, Proto::Udp, out).unwrap();
    assert_eq!(server.peers()[0].ip(), IpAddr::V6(Sandbox::NODE_ADDR6));
    // And the routed network is no way into the other one.
    let inside = v6("fd00:10:8::10".parse().unwrap(), 7302);
    let _server = EchoServer::start(&other.netns, Proto::Tcp, inside).unwrap();
    assert!(echo_fails(&c.netns, Proto::Tcp, inside).unwrap());
}

/// Send `msg` on `s` and read it back.
fn exchange(s: &mut std::net::TcpStream, msg: &str) {
    use std::io::{Read, Write};
    s.write_all(msg.as_bytes()).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg.as_bytes(), "{msg}");
}

#[test]
fn a_network_without_masquerade_sends_its_ipv6_as_it_is_and_lets_only_the_replies_in() {
    require_root();
    let sb = Sandbox::new("6t").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(
        &d,
        "nm",
        "10.10.5.0/24",
        SUBNET6,
        &["-o", "com.netd.bridge.enable_ip_masquerade=false"],
    );
    let c1 = run_on(&d, "c1", "nm", Some(C1));
    // The LAN's router knows the way to the containers' subnet through the node, as a
    // network without masquerade needs.
    let node6 = Sandbox::NODE_ADDR6.to_string();
    sb.ext
        .ip(&["-6", "route", "add", SUBNET6, "via", &node6])
        .unwrap();
    for (proto, port) in [(Proto::Tcp, 7410), (Proto::Udp, 7411)] {
        let out = v6(Sandbox::INET_ADDR6, port);
        let server = EchoServer::start(&sb.inet.path(), proto, out).unwrap();
        if echo_once(&c1.netns, proto, out).is_err() {
            eprintln!("STATS {}", d.cli_ok(&["stats"]).unwrap());
            panic!();
        }
        assert_eq!(
            server.peers()[0].ip(),
            IpAddr::V6(C1),
            "{proto:?}: the internet host sees the container's own address"
        );
    }
    assert!(d.to_network("tracked_new_flow").unwrap() >= 2);
    let flows = d.cli_ok(&["conntrack"]).unwrap();
    assert!(flows.contains(&format!("[{C1}]:")), "{flows}");
    // Routed out is no way in: what the LAN and the internet host open toward the
    // container, with a route to it, is dropped; only its flows' replies came in.
    let _servers = [
        EchoServer::start(&c1.netns, Proto::Tcp, v6(C1, 8000)).unwrap(),
        EchoServer::start(&c1.netns, Proto::Udp, v6(C1, 7777)).unwrap(),
    ];
    for host in [sb.ext.path(), sb.inet.path()] {
        for (proto, port) in [(Proto::Tcp, 8000), (Proto::Udp, 7777)] {
            assert!(
                echo_fails(&host, proto, v6(C1, port)).unwrap(),
                "{proto:?} {port} reached the container from outside"
            );
        }
    }
    assert!(d.from_network("drop_not_published").unwrap() >= 4);
}

#[test]
fn a_containers_ipv6_is_masqueraded_behind_the_nodes_address_and_survives_a_restart() {
    require_root();
    let sb = Sandbox::new("6m").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    let c1 = run_on(&d, "c1", "ds", Some(C1));
    // The node routes IPv6 for it, and its uplink still takes router advertisements.
    assert_eq!(net_sysctl(&sb.node.path(), "ipv6/conf/all/forwarding"), "1");
    assert_eq!(
        net_sysctl(&sb.node.path(), "ipv6/conf/uplink0/accept_ra"),
        "2"
    );
    // The internet host has no route to the containers' subnet: replies only come back
    // if what the container sent was masqueraded and its replies translated back.
    for (proto, port) in [(Proto::Tcp, 7400), (Proto::Udp, 7401)] {
        let out = v6(Sandbox::INET_ADDR6, port);
        let server = EchoServer::start(&sb.inet.path(), proto, out).unwrap();
        echo_once(&c1.netns, proto, out).unwrap();
        assert_eq!(
            server.peers()[0].ip(),
            IpAddr::V6(Sandbox::NODE_ADDR6),
            "{proto:?}: the internet host sees the node's address"
        );
    }
    let ping = d
        .cli_ok(&[
            "exec",
            "c1",
            "--",
            "ping",
            "-6",
            "-c",
            "2",
            "-W",
            "2",
            &Sandbox::INET_ADDR6.to_string(),
        ])
        .unwrap();
    assert!(ping.contains("2 received"), "{ping}");
    let flows = d.cli_ok(&["conntrack"]).unwrap();
    for expected in [
        format!("[{C1}]:"),
        format!("[{}]:", Sandbox::NODE_ADDR6),
        "icmpv6".to_string(),
        "snat".to_string(),
    ] {
        assert!(flows.contains(&expected), "no {expected} in:\n{flows}");
    }
    assert!(d.counter("UplinkEgress", "snat_new_flow").unwrap() >= 3);
    // The replies translated back: TCP's and UDP's by the uplink's XDP program where it
    // runs, the rest (ICMPv6) by TC.
    let in_xdp = d.counter("UplinkXdp", "snat_reply").unwrap();
    assert!(d.counter("UplinkIngress", "snat_reply").unwrap() + in_xdp >= 3);
    assert_eq!(
        in_xdp > 0,
        d.info().unwrap()["xdp"] != "off",
        "{in_xdp} in XDP"
    );
    // With the fast path on, the flows' packets went straight out of the uplink (looked
    // up as AF_INET6 routes) and their replies straight into the container; with it off,
    // none did.
    let fast_path = d.info().unwrap()["fast_path"] == "on";
    for reason in ["redirect_to_uplink", "redirect_to_container"] {
        let redirected = d.counter("FastPath", reason).unwrap();
        assert_eq!(redirected > 0, fast_path, "{reason}: {redirected}");
    }

    // A connection open across a SIGKILL of the daemon: it flows while the daemon is
    // down and after it is back.
    let target = v6(Sandbox::INET_ADDR6, 7402);
    let server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();
    let mut stream = in_netns(&c1.netns, move || {
        Ok(std::net::TcpStream::connect_timeout(
            &target,
            Duration::from_secs(2),
        )?)
    })
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    exchange(&mut stream, "before the restart");
    // Messages keep going every 200 ms (the echo server hangs up on a quiet client) while
    // the daemon is killed, down and started again; each must come back whole.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talking = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                exchange(&mut stream, &format!("message {n:06}"));
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            n
        })
    };
    d.stop(libc::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    d.restart().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let exchanged = talking
        .join()
        .expect("every message came back across the restart");
    assert!(exchanged >= 6, "{exchanged} messages");
    assert_eq!(server.peers()[0].ip(), IpAddr::V6(Sandbox::NODE_ADDR6));

    // A removed container's flows go with it.
    d.cli_ok(&["rm", "-f", "c1"]).unwrap();
    let flows = d.cli_ok(&["conntrack"]).unwrap();
    assert!(!flows.contains(&format!("[{C1}]:")), "{flows}");
}

#[test]
fn packet_too_big_from_a_narrower_hop_and_port_unreachable_reach_a_masqueraded_container() {
    require_root();
    let sb = Sandbox::new("6p").unwrap();
    // The router forwards to the internet host over a 1280-byte path (IPv6's minimum;
    // locked, so that forwarding honours it); the rest is 1500 bytes. IPv6 routers do not
    // fragment: the container's full-size segments only get through once the router's
    // Packet Too Big, sent to the node's address, reaches the container translated.
    narrow_path_to_inet(&sb);
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    let c1 = run_on(&d, "c1", "ds", Some(C1));
    let target = v6(Sandbox::INET_ADDR6, 7500);
    let _server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();
    let script = format!(
        "head -c 200000 /dev/zero | socat -t 5 - TCP6:[{}]:7500,connect-timeout=3 | wc -c",
        Sandbox::INET_ADDR6
    );
    let echoed = d
        .cli_ok(&["exec", "c1", "--", "sh", "-c", &script])
        .unwrap();
    assert_eq!(echoed.trim(), "200000", "200 KB out and back through NAT66");
    assert!(d.counter("UplinkIngress", "icmp_error_translated").unwrap() > 0);

    // A connected UDP socket hears "port unreachable" as ECONNREFUSED; without the
    // error's translation it would only time out.
    assert_eq!(
        udp_answer(&c1.netns, v6(Sandbox::INET_ADDR6, 9999)),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
}

/// What a connected UDP socket in `netns` hears after one datagram to `target`: an
/// answer, or the error (ECONNREFUSED: port unreachable; WouldBlock: nothing in 2 s).
fn udp_answer(netns: &std::path::Path, target: SocketAddr) -> Result<usize, std::io::ErrorKind> {
    in_netns(netns, move || {
        let s = std::net::UdpSocket::bind("[::]:0")?;
        s.connect(target)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send(b"anyone?")?;
        let mut buf = [0u8; 16];
        Ok(s.recv(&mut buf).map_err(|e| e.kind()))
    })
    .unwrap()
}

#[test]
fn ports_published_with_dash_p_answer_on_the_nodes_ipv6_address_the_client_kept() {
    require_root();
    let sb = Sandbox::new("6d").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    let web = d
        .run_idle_on6("web", "ds", C1, &["8080:80", "5353:53/udp"])
        .unwrap();
    // As `docker port` prints them: the IPv4 binding, then its IPv6 twin.
    assert_eq!(
        d.cli_ok(&["port", "web"]).unwrap(),
        "53/udp -> 0.0.0.0:5353\n53/udp -> [::]:5353\n80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n"
    );
    assert_eq!(
        d.cli_ok(&["port", "web", "80"]).unwrap(),
        "0.0.0.0:8080\n[::]:8080\n"
    );
    let servers = [
        EchoServer::start(&web.netns, Proto::Tcp, v6(C1, 80)).unwrap(),
        EchoServer::start(&web.netns, Proto::Udp, v6(C1, 53)).unwrap(),
    ];
    let check = || {
        for (proto, port, server) in [
            (Proto::Tcp, 8080, &servers[0]),
            (Proto::Udp, 5353, &servers[1]),
        ] {
            published_to_lan6(&sb, proto, port, server);
        }
    };
    check();
    // Translated by the uplink's XDP program where it runs (TC then only delivers), else
    // by TC.
    let info = d.info().unwrap();
    let in_xdp = d.counter("UplinkXdp", "dnat_new_flow").unwrap();
    if info["xdp"] == "off" {
        assert!(d.counter("UplinkIngress", "dnat_new_flow").unwrap() >= 2);
        assert_eq!(in_xdp, 0, "{info}");
    } else {
        assert!(in_xdp >= 2, "{in_xdp} new flows in XDP; {info}");
        assert!(d.counter("UplinkIngress", "translated_in_xdp").unwrap() >= 2);
    }
    // Where the fast path is on, it delivered them into the container, as for IPv4 (no
    // IPv4 went through a published port here).
    let redirected = d.counter("FastPath", "redirect_to_container").unwrap();
    if info["fast_path"] == "on" {
        assert!(redirected >= 2, "{redirected} redirected; {info}");
    } else {
        assert_eq!(redirected, 0, "{info}");
    }
    // `netd info` counts the IPv6 tables too: the two `[::]` bindings, their flows.
    let tables = &d.info().unwrap()["map_entries"];
    assert_eq!(tables["published_ports6"], 2, "{tables}");
    let flows6 =
        tables["flows6"].as_u64().unwrap() + tables["unconfirmed_flows6"].as_u64().unwrap();
    assert!(flows6 >= 2, "{tables}");
    d.stop(libc::SIGKILL).unwrap();
    d.restart().unwrap();
    check();
    // Removed with the container: the node's port is its own again.
    d.cli_ok(&["rm", "-f", "web"]).unwrap();
    assert!(echo_fails(&sb.ext.path(), Proto::Tcp, v6(Sandbox::NODE_ADDR6, 8080)).unwrap());
    assert_eq!(d.info().unwrap()["map_entries"]["published_ports6"], 0);
}

#[test]
fn a_binding_on_one_family_or_one_ipv6_address_answers_there_only() {
    require_root();
    let sb = Sandbox::new("6b").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    let node6 = format!("[{}]", Sandbox::NODE_ADDR6);
    let web = d
        .run_idle_on6(
            "web",
            "ds",
            C1,
            &[
                "[::]:8081:81",
                "0.0.0.0:8082:82",
                &format!("{node6}:8083:83"),
            ],
        )
        .unwrap();
    assert_eq!(
        d.cli_ok(&["port", "web"]).unwrap(),
        format!("81/tcp -> [::]:8081\n82/tcp -> 0.0.0.0:8082\n83/tcp -> {node6}:8083\n")
    );
    let ps = d.cli_ok(&["ps"]).unwrap();
    assert!(
        ps.contains(&format!(
            "[::]:8081->81/tcp, 0.0.0.0:8082->82/tcp, {node6}:8083->83/tcp"
        )),
        "{ps}"
    );
    let _servers = [
        EchoServer::start(&web.netns, Proto::Tcp, v6(C1, 81)).unwrap(),
        EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 82)).unwrap(),
        EchoServer::start(&web.netns, Proto::Tcp, v6(C1, 83)).unwrap(),
    ];
    let node4 = |port| addr(Sandbox::NODE_ADDR, port);
    let node6 = |port| v6(Sandbox::NODE_ADDR6, port);
    let ext = sb.ext.path();
    for (target, answers) in [
        (node6(8081), true),
        (node4(8081), false),
        (node4(8082), true),
        (node6(8082), false),
        (node6(8083), true),
        (node4(8083), false),
    ] {
        if answers {
            echo_once(&ext, Proto::Tcp, target).unwrap();
        } else {
            assert!(echo_fails(&ext, Proto::Tcp, target).unwrap(), "{target}");
        }
    }
    // An IPv6 host address for a container without IPv6: NAT46 (on by default) serves it
    // (with NAT46 off it is refused: port_publishing.rs).
    d.cli_ok(&["network", "create", "--subnet", "10.10.2.0/24", "v4only"])
        .unwrap();
    let refused = |args: &[&str]| {
        let out = d.cli(args).unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let v4 = d.run_idle_on("v4", "v4only", &["[::]:8084:84"]).unwrap();
    assert_eq!(d.cli_ok(&["port", "v4"]).unwrap(), "84/tcp -> [::]:8084\n");
    let _v4_server = EchoServer::start(&v4.netns, Proto::Tcp, addr(v4.ip, 84)).unwrap();
    echo_once(&ext, Proto::Tcp, node6(8084)).unwrap();
    assert!(echo_fails(&ext, Proto::Tcp, node4(8084)).unwrap());
    // Docker's error for what is no address at all.
    let err = refused(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "ds",
        "-p",
        "[fe80::zz]:8085:85",
        "--",
        "sleep",
        "infinity",
    ]);
    assert!(err.contains("invalid IP address: fe80::zz"), "{err}");
}

#[test]
fn containers_reach_published_ports_through_the_nodes_ipv6_addresses_their_own_included() {
    require_root();
    let sb = Sandbox::new("6h").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    dual_stack(&d, "other", "10.10.2.0/24", "fd00:10:2::/64", &[]);
    let web = d
        .run_idle_on6("web", "ds", C1, &["8080:80", "5353:53/udp"])
        .unwrap();
    let app = run_on(&d, "app", "ds", Some(C2));
    let far6: Ipv6Addr = "fd00:10:2::30".parse().unwrap();
    let far = run_on(&d, "far", "other", Some(far6));
    let tcp = EchoServer::start(&web.netns, Proto::Tcp, v6(C1, 80)).unwrap();
    let udp = EchoServer::start(&web.netns, Proto::Udp, v6(C1, 53)).unwrap();
    let node = |port| v6(Sandbox::NODE_ADDR6, port);
    // A neighbour, through the node's address and through its gateway's: the backend
    // sees the caller's own address.
    for target in [node(8080), v6(GATEWAY6, 8080)] {
        echo_once(&app.netns, Proto::Tcp, target).unwrap();
        assert_eq!(tcp.peers().last().unwrap().ip(), IpAddr::V6(C2), "{target}");
    }
    echo_once(&app.netns, Proto::Udp, node(5353)).unwrap();
    assert_eq!(udp.peers().last().unwrap().ip(), IpAddr::V6(C2));
    // Another network's container: through the published port only.
    echo_once(&far.netns, Proto::Tcp, node(8080)).unwrap();
    assert_eq!(tcp.peers().last().unwrap().ip(), IpAddr::V6(far6));
    assert!(echo_fails(&far.netns, Proto::Tcp, v6(C1, 80)).unwrap());
    // Its own published port: masqueraded to its gateway, as Docker's hairpin NAT does.
    echo_once(&web.netns, Proto::Tcp, node(8080)).unwrap();
    assert_eq!(tcp.peers().last().unwrap().ip(), IpAddr::V6(GATEWAY6));
    echo_once(&web.netns, Proto::Udp, node(5353)).unwrap();
    assert!(d.counter("EndpointIngress", "hairpin_new_flow").unwrap() >= 5);
}

/// One echo over a TCP connection from `netns` to `target` whose every segment carries a
/// Destination Options header (a PadN option: nothing for anyone to act on), then closed;
/// its local address.
fn echo_behind_dest_options(
    netns: &std::path::Path,
    target: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    let SocketAddr::V6(target) = target else {
        anyhow::bail!("{target} is no IPv6 address");
    };
    in_netns(netns, move || {
        // SAFETY: a new socket, owned by the stream from here on.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let mut stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
        // Next header and length (the kernel fills both in), then PadN over 4 bytes.
        let options = [0u8, 0, 1, 4, 0, 0, 0, 0];
        let to = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: target.port().to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: target.ip().octets(),
            },
            sin6_scope_id: 0,
        };
        // SAFETY: the option's and the address's bytes, their sizes given.
        unsafe {
            let rc = libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_DSTOPTS,
                options.as_ptr().cast(),
                options.len() as libc::socklen_t,
            );
            anyhow::ensure!(rc == 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
            let rc = libc::connect(
                stream.as_raw_fd(),
                (&to as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            );
            anyhow::ensure!(
                rc == 0,
                "connect to {target}: {}",
                std::io::Error::last_os_error()
            );
        }
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let sent = b"behind a destination options header";
        stream.write_all(sent)?;
        let mut back = vec![0u8; sent.len()];
        stream.read_exact(&mut back)?;
        anyhow::ensure!(back == sent, "the echo differs");
        Ok(stream.local_addr()?)
    })
}

#[test]
fn monitor_shows_an_ipv6_connections_translation_and_end_and_its_masquerade() {
    require_root();
    let sb = Sandbox::new("6m").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    let web = d.run_idle_on6("web", "ds", C1, &["8080:80"]).unwrap();
    let _server = EchoServer::start(&web.netns, Proto::Tcp, v6(C1, 80)).unwrap();
    let inet = EchoServer::start(&sb.inet.path(), Proto::Udp, v6(Sandbox::INET_ADDR6, 53)).unwrap();
    let mon = Stream::start(&d, &["monitor", "--type", "flow", "--format", "json"]).unwrap();
    // Attached once a flow shows (the monitor asks the programs within a poll).
    let published = format!("[{}]:8080", Sandbox::NODE_ADDR6);
    let mut client = None;
    for _ in 0..30 {
        let c = echo_once(&sb.ext.path(), Proto::Tcp, v6(Sandbox::NODE_ADDR6, 8080)).unwrap();
        let new = monitor::expect(&mon, Duration::from_millis(300), |e| {
            e["type"] == "flow-new" && e["src"] == c.to_string()
        });
        if let Ok(new) = new {
            assert_eq!(new["dst"], published, "{new}");
            assert_eq!(new["translated_dst"], format!("[{C1}]:80"), "{new}");
            assert_eq!(
                new["translated_src"],
                c.to_string(),
                "the client kept: {new}"
            );
            assert_eq!(
                (&new["origin"], &new["container"]),
                (&"dnat".into(), &"web".into())
            );
            assert_eq!(new["proto"], "tcp");
            client = Some(c);
            break;
        }
    }
    let client = client.expect("no IPv6 flow-new while the monitor was attached");
    // Its end, when both FINs have passed: its packets both ways.
    let end = monitor::expect(&mon, Duration::from_secs(2), |e| {
        e["type"] == "flow-end" && e["src"] == client.to_string()
    })
    .unwrap();
    assert_eq!(
        (&end["reason"], &end["dst"]),
        (&"fin".into(), &published.clone().into())
    );
    assert!(end["packets"].as_u64().unwrap() >= 7, "{end}");
    // A client whose every segment carries an extension header: its flow shows and ends
    // the same, its ports read behind the header.
    let behind = echo_behind_dest_options(&sb.ext.path(), v6(Sandbox::NODE_ADDR6, 8080)).unwrap();
    let new = monitor::expect(&mon, Duration::from_secs(1), |e| {
        e["type"] == "flow-new" && e["src"] == behind.to_string()
    })
    .unwrap();
    assert_eq!(new["translated_dst"], format!("[{C1}]:80"), "{new}");
    let end = monitor::expect(&mon, Duration::from_secs(2), |e| {
        e["type"] == "flow-end" && e["src"] == behind.to_string()
    })
    .unwrap();
    assert_eq!(end["reason"], "fin", "{end}");
    // Masquerade (NAT66): the container's datagram leaves from the node's address.
    let sent = echo_once(&web.netns, Proto::Udp, v6(Sandbox::INET_ADDR6, 53)).unwrap();
    let out = monitor::expect(&mon, Duration::from_secs(1), |e| {
        e["type"] == "flow-new" && e["src"] == sent.to_string()
    })
    .unwrap();
    assert_eq!(out["origin"], "snat", "{out}");
    let seen = inet.peers().last().copied().unwrap();
    assert_eq!(
        out["translated_src"],
        seen.to_string(),
        "as the server saw it: {out}"
    );
    assert_eq!(seen.ip(), IpAddr::V6(Sandbox::NODE_ADDR6));
    // An IPv6 connection still open when its container is removed ends with it.
    let held = HeldConnection::open(&sb.ext.path(), v6(Sandbox::NODE_ADDR6, 8080)).unwrap();
    let local = held.local_addr().unwrap();
    monitor::expect(&mon, Duration::from_secs(1), |e| {
        e["type"] == "flow-new" && e["src"] == local.to_string()
    })
    .unwrap();
    d.cli_ok(&["rm", "-f", "web"]).unwrap();
    let gone = monitor::expect(&mon, Duration::from_secs(1), |e| {
        e["type"] == "flow-end" && e["src"] == local.to_string()
    })
    .unwrap();
    assert_eq!(
        (&gone["reason"], &gone["container"]),
        (&"removed".into(), &"web".into()),
        "{gone}"
    );
    assert!(gone["packets"].as_u64().unwrap_or(0) >= 3, "{gone}");
    drop(held);
}

#[test]
fn ipv6_clients_reach_an_ipv4_only_container_through_nat46_each_as_an_address_of_its_own() {
    require_root();
    let sb = Sandbox::new("64").unwrap();
    // NAT46 is on by default, its pool 198.18.0.0/16; no network may overlap it.
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let refusals: [(&[&str], &str); 1] = [(
        &["--subnet", "198.18.7.0/24"],
        "invalid --subnet 198.18.7.0/24: Pool overlaps with other one on this address space (NAT46's pool, netd daemon --nat46-pool)",
    )];
    for (flags, expected) in refusals {
        let refused = d
            .cli(&[&["network", "create"], flags, &["lab"]].concat())
            .unwrap();
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains(expected),
            "{refused:?}"
        );
    }
    assert!(!d.cli_ok(&["network", "ls"]).unwrap().contains("lab"));
    // The default network has no IPv6: the container has IPv4 only.
    let web = d
        .run_idle_container("web", &["8080:80", "5353:53/udp", "5354:54/udp"])
        .unwrap();
    let ports = d.cli_ok(&["port", "web"]).unwrap();
    assert!(ports.contains("80/tcp -> [::]:8080"), "{ports}");
    let tcp = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let udp = EchoServer::start(&web.netns, Proto::Udp, addr(web.ip, 53)).unwrap();
    let in_pool = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets()[..2] == [198, 18],
        IpAddr::V6(_) => false,
    };
    // Two IPv6 clients (the LAN host, and the internet host routed through it), TCP and
    // UDP: the container sees one pool address per client, the same for both protocols.
    for (client, name) in [(sb.ext.path(), "lan"), (sb.inet.path(), "inet")] {
        let sent = echo_once(&client, Proto::Tcp, v6(Sandbox::NODE_ADDR6, 8080)).unwrap();
        assert!(sent.is_ipv6());
        echo_once(&client, Proto::Udp, v6(Sandbox::NODE_ADDR6, 5353)).unwrap();
        let (t, u) = (
            tcp.peers().last().copied().unwrap(),
            udp.peers().last().copied().unwrap(),
        );
        assert!(in_pool(t.ip()), "{name}: {t}");
        assert_eq!(t.ip(), u.ip(), "{name}: one address per client");
        assert_eq!(t.port(), sent.port(), "{name}: the client's port kept");
    }
    let (first, second) = (tcp.peers()[0].ip(), tcp.peers()[1].ip());
    assert_ne!(first, second, "two clients, two addresses");
    // The connection table shows each real client beside its mapping.
    let flows = d.cli_ok(&["conntrack"]).unwrap();
    for expected in [
        format!("[{}]:", Sandbox::EXT_ADDR6),
        format!("[{}]:", Sandbox::INET_ADDR6),
        format!("{first}:"),
        format!("{second}:"),
        format!("{}:80", web.ip),
        "nat46".to_string(),
    ] {
        assert!(flows.contains(&expected), "no {expected} in:\n{flows}");
    }
    assert!(d.from_network("nat46_new_flow").unwrap() >= 4);
    // Translated by the uplink's XDP program where it runs (`uplink_xdp_nat46`; TC then
    // only delivers the IPv4 frame), else by TC.
    let info = d.info().unwrap();
    let in_xdp = d.counter("UplinkXdp", "nat46_new_flow").unwrap();
    if info["xdp"] == "off" {
        assert!(d.counter("UplinkIngress", "nat46_new_flow").unwrap() >= 4);
        assert_eq!(in_xdp, 0, "{info}");
    } else {
        assert!(in_xdp >= 4, "{in_xdp} new NAT46 flows in XDP; {info}");
        assert!(d.counter("UplinkIngress", "translated_in_xdp").unwrap() >= 4);
    }
    // Nothing listens on 54/udp: the container's port unreachable reaches the client as
    // ICMPv6, which a connected socket hears as ECONNREFUSED (else it would time out).
    assert_eq!(
        udp_answer(&sb.ext.path(), v6(Sandbox::NODE_ADDR6, 5354)),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    // The pool is no way out: what the container sends there outside a flow is dropped.
    let before = d.counter("EndpointIngress", "drop_nat46_no_flow").unwrap();
    for target in [first, "198.18.0.77".parse().unwrap()] {
        assert!(echo_fails(&web.netns, Proto::Udp, SocketAddr::new(target, 40000)).unwrap());
    }
    assert!(d.counter("EndpointIngress", "drop_nat46_no_flow").unwrap() >= before + 2);
    // Removing the container takes its NAT46 flows (the UDP ones still open) with it.
    d.cli_ok(&["rm", "-f", "web"]).unwrap();
    let flows = d.cli_ok(&["conntrack"]).unwrap();
    assert!(!flows.contains("nat46"), "{flows}");
}

#[test]
fn packet_too_big_about_a_nat46_flow_reaches_the_ipv4_only_container_as_fragmentation_needed() {
    require_root();
    let sb = Sandbox::new("6b").unwrap();
    // As in the NAT66 test: a 1280-byte path from the router to the internet host. The
    // container's full-size segments (1480 bytes as IPv4, 1500 as IPv6) only get through
    // once the router's Packet Too Big reaches it as Fragmentation Needed.
    narrow_path_to_inet(&sb);
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let _server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    // Bounded: without the translation the transfer stalls.
    let script = format!(
        "head -c 200000 /dev/zero | timeout 30 socat -t 5 - TCP6:[{}]:8080,connect-timeout=3 | wc -c",
        Sandbox::NODE_ADDR6
    );
    let out = sb.inet.exec(&["sh", "-c", &script]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200000",
        "200 KB in and back through NAT46: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.counter("UplinkIngress", "icmp_error_translated").unwrap() > 0);
}

/// The router forwards to the internet host over a 1280-byte path (IPv6's minimum;
/// locked, so that forwarding honours it); the rest is 1500 bytes.
fn narrow_path_to_inet(sb: &Sandbox) {
    sb.ext
        .ip(&[
            "-6",
            "route",
            "add",
            &format!("{}/128", Sandbox::INET_ADDR6),
            "dev",
            "ext1",
            "mtu",
            "lock",
            "1280",
        ])
        .unwrap();
}

#[test]
fn an_ipv6_only_network_gives_its_containers_ipv6_alone_and_publishes_them_on_ipv6() {
    require_root();
    let sb = Sandbox::new("6o").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    // Refused, naming the flag: IPv6-only without IPv6, an IPv4 subnet on it.
    let refused = |args: &[&str], flag: &str| {
        let e = d.cli_ok(args).unwrap_err().to_string();
        assert!(e.contains(&format!("invalid {flag}")), "{args:?}: {e}");
    };
    refused(&["network", "create", "--ipv4=false", "x"], "--ipv4=false");
    refused(
        &[
            "network",
            "create",
            "--ipv4=false",
            "--ipv6",
            "--subnet",
            "10.61.0.0/24",
            "x",
        ],
        "--subnet 10.61.0.0/24",
    );
    d.cli_ok(&[
        "network",
        "create",
        "--ipv4=false",
        "--ipv6",
        "--subnet",
        "fd00:61::/64",
        "v6only",
    ])
    .unwrap();
    let all: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["network", "inspect", "v6only"]).unwrap()).unwrap();
    let inspect = &all[0];
    assert_eq!(inspect["EnableIPv4"], false, "{inspect}");
    assert_eq!(inspect["EnableIPv6"], true, "{inspect}");
    let configs = inspect["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{inspect}");
    assert_eq!(configs[0]["Subnet"], "fd00:61::/64", "{inspect}");
    // The bridge has the IPv6 gateway and no IPv4 address.
    let bridge = inspect["bridge"].as_str().unwrap().to_string();
    let on_bridge = in_netns(&sb.node.path(), move || {
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "dev", &bridge])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .unwrap();
    assert!(on_bridge.contains("fd00:61::1/64"), "{on_bridge}");
    assert!(!on_bridge.contains("inet "), "{on_bridge}");

    let e = d
        .cli_ok(&[
            "run",
            "-d",
            "--network",
            "v6only",
            "--ip",
            "10.61.0.5",
            "--",
            "sleep",
            "1",
        ])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid --ip 10.61.0.5") && e.contains("IPv6-only"),
        "{e}"
    );
    let server_ip = "fd00:61::10".parse().unwrap();
    let web = d
        .run_idle_on6("web", "v6only", server_ip, &["8080:80", "5353:53/udp"])
        .unwrap();
    let client = run_on(&d, "client", "v6only", None);
    // Without an IPv4 address for Docker's MAC scheme: a random locally administered MAC,
    // one of its own on the network, also for an address alike in its last 32 bits.
    let twin = run_on(
        &d,
        "twin",
        "v6only",
        Some("fd00:61::1:0:0:10".parse().unwrap()),
    );
    let macs: Vec<String> = ["web", "client", "twin"]
        .iter()
        .map(|name| {
            let c: serde_json::Value =
                serde_json::from_str(&d.cli_ok(&["inspect", name]).unwrap()).unwrap();
            c[0]["endpoints"][0]["mac"].as_str().unwrap().to_string()
        })
        .collect();
    for mac in &macs {
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "{mac}: unicast, locally administered");
    }
    assert!(
        macs[0] != macs[1] && macs[0] != macs[2] && macs[1] != macs[2],
        "{macs:?}"
    );
    assert_eq!(web.ip, std::net::Ipv4Addr::UNSPECIFIED, "no IPv4 address");
    let client_ip = client.ip6.unwrap();
    assert!(
        client_ip.segments()[..4] == [0xfd00, 0x61, 0, 0],
        "{client_ip}"
    );
    // Published on IPv6 alone (Docker proxies IPv4 to such a container in userland).
    assert_eq!(
        d.cli_ok(&["port", "web"]).unwrap(),
        "53/udp -> [::]:5353\n80/tcp -> [::]:8080\n"
    );
    let e = d
        .cli_ok(&[
            "run",
            "-d",
            "--network",
            "v6only",
            "-p",
            "0.0.0.0:9090:90",
            "--",
            "sleep",
            "1",
        ])
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid host IP 0.0.0.0"), "{e}");
    // Inside: IPv6 with a default route, no IPv4 at all.
    let inside = d
        .cli_ok(&[
            "exec", "web", "--", "ip", "-o", "addr", "show", "dev", "eth0",
        ])
        .unwrap();
    assert!(inside.contains("fd00:61::10/64"), "{inside}");
    assert!(!inside.contains("inet "), "{inside}");
    let routes = d
        .cli_ok(&["exec", "web", "--", "ip", "-6", "route", "show", "default"])
        .unwrap();
    assert!(routes.contains("via fd00:61::1"), "{routes}");

    let servers = [
        EchoServer::start(&web.netns, Proto::Tcp, v6(server_ip, 80)).unwrap(),
        EchoServer::start(&web.netns, Proto::Udp, v6(server_ip, 53)).unwrap(),
    ];
    echo_once(&twin.netns, Proto::Tcp, v6(server_ip, 80)).unwrap();
    assert_eq!(servers[0].peers()[0].ip(), IpAddr::V6(twin.ip6.unwrap()));
    let check = |d: &Daemon| {
        for (proto, port, server) in [(Proto::Tcp, 80, &servers[0]), (Proto::Udp, 53, &servers[1])]
        {
            // Container to container, addresses untouched.
            echo_once(&client.netns, proto, v6(server_ip, port)).unwrap();
            assert_eq!(server.peers().last().unwrap().ip(), IpAddr::V6(client_ip));
        }
        for (proto, port, server) in [
            (Proto::Tcp, 8080, &servers[0]),
            (Proto::Udp, 5353, &servers[1]),
        ] {
            // The published port from the LAN, the client's address kept; never on IPv4.
            published_to_lan6(&sb, proto, port, server);
            assert!(echo_fails(&sb.ext.path(), proto, addr(Sandbox::NODE_ADDR, port)).unwrap());
        }
        // Through the node: hairpin from containers (the server's own included), and a
        // process of the node through [::1] and the node's address (its socket hooks).
        for from in [&client.netns, &web.netns] {
            echo_once(from, Proto::Tcp, v6(Sandbox::NODE_ADDR6, 8080)).unwrap();
        }
        for host in ["::1".to_string(), Sandbox::NODE_ADDR6.to_string()] {
            let call = format!(
                "import socket; s = socket.create_connection(('{host}', 8080), timeout=3); s.sendall(b'hi'); print(s.recv(2).decode())"
            );
            let out = d.host_process(&sb.node, &["python3", "-c", &call]).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "hi",
                "[{host}]:8080: {out:?}"
            );
        }
        // Out to the internet host, masqueraded behind the node's address.
        let out = v6(Sandbox::INET_ADDR6, 7400);
        let inet = EchoServer::start(&sb.inet.path(), Proto::Tcp, out).unwrap();
        echo_once(&client.netns, Proto::Tcp, out).unwrap();
        assert_eq!(inet.peers()[0].ip(), IpAddr::V6(Sandbox::NODE_ADDR6));
    };
    check(&d);
    // Another IPv6-only network's container reaches none of it.
    d.cli_ok(&["network", "create", "--ipv4=false", "--ipv6", "other6"])
        .unwrap();
    let stranger = run_on(&d, "stranger", "other6", None);
    assert!(echo_fails(&stranger.netns, Proto::Tcp, v6(server_ip, 80)).unwrap());
    assert!(echo_fails(&web.netns, Proto::Tcp, v6(stranger.ip6.unwrap(), 80)).unwrap());
    // A connection through the published port outlives a restart.
    let mut held = HeldConnection::open(&sb.ext.path(), v6(Sandbox::NODE_ADDR6, 8080)).unwrap();
    d.stop(libc::SIGKILL).unwrap();
    held.exchange().unwrap();
    d.restart().unwrap();
    held.exchange().unwrap();
    drop(held);
    check(&d);

    // A container of an IPv4 network connected to it too: IPv6 on its second interface.
    let dual = d.run_idle_container("dual", &[]).unwrap();
    d.cli_ok(&["network", "connect", "v6only", "dual"]).unwrap();
    let eth1 = d
        .cli_ok(&[
            "exec", "dual", "--", "ip", "-o", "addr", "show", "dev", "eth1",
        ])
        .unwrap();
    assert!(
        eth1.contains("inet6 fd00:61::") && !eth1.contains("inet "),
        "{eth1}"
    );
    echo_once(&dual.netns, Proto::Tcp, v6(server_ip, 80)).unwrap();
    let seen = servers[0].peers().last().unwrap().ip().to_string();
    assert!(seen.starts_with("fd00:61::"), "{seen}");
    // Each family's default route by the first network that has the family: IPv4's
    // through netd0 as before, IPv6's through the IPv6-only network; out over both.
    let default = |family: &str| {
        d.cli_ok(&[
            "exec", "dual", "--", "ip", family, "route", "show", "default",
        ])
        .unwrap()
    };
    assert!(default("-4").contains("dev eth0"), "{}", default("-4"));
    assert!(
        default("-6").contains("via fd00:61::1 dev eth1"),
        "{}",
        default("-6")
    );
    let out = v6(Sandbox::INET_ADDR6, 7401);
    let inet = EchoServer::start(&sb.inet.path(), Proto::Tcp, out).unwrap();
    echo_once(&dual.netns, Proto::Tcp, out).unwrap();
    assert_eq!(inet.peers()[0].ip(), IpAddr::V6(Sandbox::NODE_ADDR6));
    d.cli_ok(&["network", "disconnect", "v6only", "dual"])
        .unwrap();
    assert!(echo_fails(&dual.netns, Proto::Tcp, v6(server_ip, 80)).unwrap());
    assert!(default("-6").is_empty(), "{}", default("-6"));
    assert!(default("-4").contains("dev eth0"), "{}", default("-4"));

    // A container that gives itself IPv4 anyway sends none of it, ARP included: each frame
    // is dropped at its veth and counted.
    let before = d.counter("EndpointIngress", "drop_spoofed_source").unwrap();
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "client", "--"];
        all.extend_from_slice(args);
        d.cli(&all).unwrap()
    };
    exec(&["ip", "addr", "add", "10.61.0.99/24", "dev", "eth0"]);
    let arp = exec(&["ping", "-c", "2", "-W", "1", "10.61.0.1"]);
    assert!(!arp.status.success(), "ARP for a made-up gateway answered");
    let bridge_mac = "02:42:00:00:00:01";
    exec(&[
        "ip",
        "neigh",
        "replace",
        "10.61.0.1",
        "lladdr",
        bridge_mac,
        "dev",
        "eth0",
    ]);
    exec(&["ip", "route", "add", "default", "via", "10.61.0.1"]);
    for proto in [Proto::Tcp, Proto::Udp] {
        assert!(echo_fails(&client.netns, proto, addr(Sandbox::EXT_ADDR, 7)).unwrap());
    }
    let dropped = d.counter("EndpointIngress", "drop_spoofed_source").unwrap() - before;
    assert!(dropped >= 4, "{dropped} IPv4 and ARP frames dropped");
    // Its IPv6 still flows.
    echo_once(&client.netns, Proto::Tcp, v6(server_ip, 80)).unwrap();
}
