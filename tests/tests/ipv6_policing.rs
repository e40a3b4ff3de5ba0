//! IPv6 policing at a container's first hop, end to end: isolation between networks,
//! icc off and `--internal` hold for IPv6 as for IPv4; a container with raw sockets
//! cannot spoof its IPv6 source or MAC, advertise itself as a router, redirect, poison
//! its neighbours' caches with advertisements for addresses not its own, answer as a
//! DHCPv6 server, or hide any of it behind extension headers or fragments: its neighbour
//! and the node's bridge never see such a frame.
//!
//! Run once, not under every data-path combination (`cargo xtask test`): all of it is
//! decided in the endpoint program on a container's host-side veth (the first-hop guards,
//! then policy) before the fast path may take a packet, what it lets through stays on the
//! node (to a neighbour, to the gateway), where the fast path leaves it to the stack, and
//! nothing comes in by the uplink, where XDP runs. The rest of IPv6 is in `ipv6.rs`.

use std::{net::Ipv6Addr, time::Duration};

use netd_tests::{
    Daemon, EchoServer, Netns, Proto, Sandbox,
    craft::{self, Capture},
    daemon::Container,
    echo::in_netns,
    echo_fails, echo_once,
    ipv6::{C1, C2, GATEWAY6, SUBNET6, dual_stack, run_on, v6},
    monitor, require_root,
    stream::Stream,
};

const UDP: u8 = 17;
const ICMP6: u8 = 58;

/// The MAC address netd gives a container: 02:42 and its IPv4 address.
fn mac_of(c: &Container) -> [u8; 6] {
    let o = c.ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The MAC address of a network's bridge (its gateway), read in the node.
fn gateway_mac(node: &Netns, d: &Daemon, network: &str) -> [u8; 6] {
    let v: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["network", "inspect", network]).unwrap()).unwrap();
    let path = format!("/sys/class/net/{}/address", bridge_of(&v));
    let out = node.exec(&["cat", &path]).unwrap();
    let bytes: Vec<u8> = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The bridge of a network, from `network inspect`.
fn bridge_of(v: &serde_json::Value) -> String {
    v[0]["bridge"]
        .as_str()
        .expect("network inspect names the bridge")
        .to_string()
}

#[test]
fn ipv6_isolation_icc_off_and_internal_hold_as_for_ipv4() {
    require_root();
    let sb = Sandbox::new("6i").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "red", "10.10.1.0/24", "fd00:10:1::/64", &[]);
    dual_stack(&d, "blue", "10.10.2.0/24", "fd00:10:2::/64", &[]);
    dual_stack(
        &d,
        "lonely",
        "10.10.3.0/24",
        "fd00:10:3::/64",
        &["-o", "com.netd.bridge.enable_icc=false"],
    );
    dual_stack(
        &d,
        "inside",
        "10.10.4.0/24",
        "fd00:10:4::/64",
        &["--internal"],
    );
    let red = run_on(&d, "red1", "red", Some(C1));
    let blue = run_on(&d, "blue1", "blue", Some("fd00:10:2::10".parse().unwrap()));
    let l1 = run_on(&d, "l1", "lonely", Some("fd00:10:3::10".parse().unwrap()));
    let l2 = run_on(&d, "l2", "lonely", Some("fd00:10:3::20".parse().unwrap()));
    let i1 = run_on(&d, "i1", "inside", Some("fd00:10:4::10".parse().unwrap()));
    let i2 = run_on(&d, "i2", "inside", Some("fd00:10:4::20".parse().unwrap()));

    let refused = |from: &Container, to: Ipv6Addr, reason: &str| {
        let before = d.counter("EndpointIngress", reason).unwrap();
        let target = v6(to, 7100);
        for proto in [Proto::Tcp, Proto::Udp] {
            assert!(
                echo_fails(&from.netns, proto, target).unwrap(),
                "{proto:?} to {to}"
            );
        }
        assert!(
            d.counter("EndpointIngress", reason).unwrap() > before,
            "{reason}"
        );
    };
    let _servers: Vec<EchoServer> = [
        (&blue, "fd00:10:2::10"),
        (&red, "fd00:10:1::10"),
        (&l2, "fd00:10:3::20"),
        (&i2, "fd00:10:4::20"),
    ]
    .iter()
    .flat_map(|(c, a)| {
        let a: Ipv6Addr = a.parse().unwrap();
        [Proto::Tcp, Proto::Udp].map(|p| EchoServer::start(&c.netns, p, v6(a, 7100)).unwrap())
    })
    .collect();
    refused(
        &red,
        "fd00:10:2::10".parse().unwrap(),
        "drop_network_isolation",
    );
    refused(&blue, C1, "drop_network_isolation");
    refused(&l1, "fd00:10:3::20".parse().unwrap(), "drop_icc_disabled");
    // An internal network's containers have no route out; one with raw sockets sends
    // through the gateway all the same.
    for (to, reason) in [
        ("fd00:10:2::10".parse().unwrap(), "drop_network_isolation"),
        (Sandbox::INET_ADDR6, "drop_internal_network"),
    ] {
        let before = d.counter("EndpointIngress", reason).unwrap();
        let from: Ipv6Addr = "fd00:10:4::10".parse().unwrap();
        let frame = craft::ethernet(
            gateway_mac(&sb.node, &d, "inside"),
            mac_of(&i1),
            craft::ETH_P_IPV6,
            &craft::ipv6(from, to, UDP, &craft::udp6(40000, 7100, b"netd-internal")),
        );
        craft::send_frames(&i1.netns, "eth0", vec![frame]).unwrap();
        assert_eq!(
            d.counter("EndpointIngress", reason).unwrap(),
            before + 1,
            "{to}"
        );
    }
    // What is allowed still works: inside the internal network, and each to its gateway.
    echo_once(
        &i1.netns,
        Proto::Tcp,
        v6("fd00:10:4::20".parse().unwrap(), 7100),
    )
    .unwrap();
    let gw = v6("fd00:10:3::1".parse().unwrap(), 7101);
    let _node = EchoServer::start(&sb.node.path(), Proto::Udp, gw).unwrap();
    echo_once(&l1.netns, Proto::Udp, gw).unwrap();
}

#[test]
fn a_container_cannot_spoof_or_play_router_or_neighbour_over_ipv6() {
    require_root();
    let sb = Sandbox::new("6s").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    dual_stack(&d, "ds", "10.10.1.0/24", SUBNET6, &[]);
    let c1 = run_on(&d, "c1", "ds", Some(C1));
    let c2 = run_on(&d, "c2", "ds", Some(C2));
    let (me, to_c2) = (mac_of(&c1), mac_of(&c2));
    let my_ll = craft::link_local6(me);
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let mark = b"netd-attack-ipv6".as_slice();
    let on_c2 = Capture::start(&c2.netns, "eth0").unwrap();
    let inspect = d.cli_ok(&["network", "inspect", "ds"]).unwrap();
    let bridge = bridge_of(&serde_json::from_str(&inspect).unwrap());
    let on_node = Capture::start(&sb.node.path(), &bridge).unwrap();
    let mon = Stream::start(&d, &["monitor", "--type", "drop", "--format", "json"]).unwrap();
    monitor::wait_attached(&mon, &c1, c2.ip).unwrap();

    let ra = {
        let mut m = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[
            3, 4, 64, 0xc0, 0, 0x27, 0x8d, 0, 0, 0, 0x0e, 0x10, 0, 0, 0, 0,
        ]);
        m.extend_from_slice(&"2001:db8:66::".parse::<Ipv6Addr>().unwrap().octets());
        m.extend_from_slice(mark);
        m
    };
    let na = |target: Ipv6Addr, flags: u8, lladdr: [u8; 6]| {
        let mut m = vec![136, 0, 0, 0, flags, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[2, 1]);
        m.extend_from_slice(&lladdr);
        m.extend_from_slice(mark);
        m
    };
    let redirect = {
        let mut m = vec![137, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&C1.octets());
        m.extend_from_slice(&Sandbox::INET_ADDR6.octets());
        m.extend_from_slice(mark);
        m
    };
    let hbh = |next: u8| vec![next, 0, 1, 4, 0, 0, 0, 0];
    let frag = |next: u8| vec![next, 0, 0, 1, 0, 0, 0, 9];
    let to_all = |next: u8, rest: &[u8]| {
        craft::ethernet(
            [0x33, 0x33, 0, 0, 0, 1],
            me,
            craft::ETH_P_IPV6,
            &craft::ipv6(my_ll, all_nodes, next, rest),
        )
    };
    let attacks = vec![
        ("rogue RA", to_all(ICMP6, &ra)),
        (
            "RA behind a hop-by-hop header",
            to_all(0, &[hbh(ICMP6), ra.clone()].concat()),
        ),
        (
            "RA in a first fragment",
            to_all(44, &[frag(ICMP6), ra.clone()].concat()),
        ),
        (
            "redirect",
            craft::ethernet(
                to_c2,
                me,
                craft::ETH_P_IPV6,
                &craft::ipv6(my_ll, C2, ICMP6, &redirect),
            ),
        ),
        ("NA for c2's address", to_all(ICMP6, &na(C2, 0x20, me))),
        ("NA for the gateway", to_all(ICMP6, &na(GATEWAY6, 0xa0, me))),
        (
            "NA with another MAC",
            to_all(ICMP6, &na(C1, 0x20, [2, 0, 0, 0, 0, 0x66])),
        ),
        (
            "DHCPv6 advertise",
            to_all(UDP, &craft::udp6(547, 546, mark)),
        ),
        (
            "c2's source",
            craft::ethernet(
                to_c2,
                me,
                craft::ETH_P_IPV6,
                &craft::ipv6(C2, C2, UDP, &craft::udp6(1, 2, mark)),
            ),
        ),
        (
            "the gateway's source",
            craft::ethernet(
                to_c2,
                me,
                craft::ETH_P_IPV6,
                &craft::ipv6(GATEWAY6, C2, UDP, &craft::udp6(1, 2, mark)),
            ),
        ),
        (
            "another MAC",
            craft::ethernet(
                to_c2,
                [2, 0, 0, 0, 0, 0x66],
                craft::ETH_P_IPV6,
                &craft::ipv6(C1, C2, UDP, &craft::udp6(1, 2, mark)),
            ),
        ),
    ];
    let sent = attacks.len();
    let control_mark = b"netd-control-ipv6".as_slice();
    let control = craft::ethernet(
        to_c2,
        me,
        craft::ETH_P_IPV6,
        &craft::ipv6(C1, C2, UDP, &craft::udp6(1, 2, control_mark)),
    );
    let guard_drops = || -> u64 {
        [
            "drop_router_message",
            "drop_spoofed_neighbor_message",
            "drop_dhcpv6_server",
            "drop_nd_fragmented",
            "drop_spoofed_source",
            "drop_spoofed_mac",
        ]
        .iter()
        .map(|r| d.counter("EndpointIngress", r).unwrap())
        .sum()
    };
    let drops_before = guard_drops();
    let mut frames: Vec<Vec<u8>> = attacks.iter().map(|(_, f)| f.clone()).collect();
    frames.push(control);
    craft::send_frames(&c1.netns, "eth0", frames).unwrap();

    let got = on_c2.settle();
    assert!(
        got.iter().any(|f| craft::carries(f, control_mark)),
        "the control frame did not reach c2: the capture is blind"
    );
    for (who, frames) in [("c2", got), ("the node's bridge", on_node.frames())] {
        let leaked: Vec<_> = frames.iter().filter(|f| craft::carries(f, mark)).collect();
        assert!(
            leaked.is_empty(),
            "{who} got {} attack frames: {leaked:02x?}",
            leaked.len()
        );
    }
    let drops_after = guard_drops();
    assert!(
        drops_after - drops_before >= sent as u64,
        "{drops_before} -> {drops_after}"
    );
    // `netd monitor` names them with their IPv6 addresses.
    let ll = format!("[{my_ll}]");
    monitor::expect(&mon, Duration::from_secs(5), |e| {
        e["reason"] == "drop_router_message" && e["src"] == ll.as_str() && e["proto"] == "ipv6"
    })
    .unwrap();
    // Nobody took a route from the advertisement.
    for (who, ns) in [("the node", sb.node.path()), ("c2", c2.netns.clone())] {
        let routes = in_netns(&ns, || {
            Ok(std::process::Command::new("ip")
                .args(["-6", "route", "show", "2001:db8:66::/64"])
                .output()?)
        })
        .unwrap();
        assert!(routes.stdout.is_empty(), "{who} took the prefix");
    }
}
