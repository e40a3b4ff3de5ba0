//! A macvlan network whose parent is netd's own uplink (the usual case on a real host:
//! containers on the LAN of `eth0`), dual stack. The uplink's programs (TC, and XDP in
//! the modes that have it) see these frames; they must pass them untouched both ways,
//! IPv4 and IPv6: no translation, no drop, the LAN host's and the container's own
//! addresses kept. Runs under every data-path combination, because the uplink's programs
//! differ between them.

use std::net::{Ipv4Addr, Ipv6Addr};

use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, craft, echo_once, lan, require_root};

#[test]
fn macvlan_containers_on_netds_uplink_pass_its_programs_untouched() {
    require_root();
    let sb = Sandbox::new("mvu").unwrap();
    let netd = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    // The LAN host holds the IPv6 range's first address too (deprecated: answered for,
    // never its source): netd's probe for it goes out through the uplink's own
    // programs, and must still be answered.
    sb.ext
        .ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:200::100/64",
            "dev",
            "ext0",
            "nodad",
            "preferred_lft",
            "0",
        ])
        .unwrap();
    let mut create = vec!["network", "create"];
    create.extend(lan::ON_UPLINK_FLAGS);
    create.extend(lan::ON_UPLINK_FLAGS6);
    create.push("lan");
    netd.cli_ok(&create).unwrap();
    netd.cli_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "lan",
        "--",
        "sleep",
        "infinity",
    ])
    .unwrap();
    let c = netd.container("web").unwrap();
    assert_eq!(c.ip, Ipv4Addr::new(10, 200, 0, 128));
    let ip6 = c
        .ip6
        .expect("an IPv6 address on a dual-stack macvlan network");
    assert_eq!(ip6, "2001:db8:200::101".parse::<Ipv6Addr>().unwrap());

    // In from the LAN host, its address kept.
    let tcp = EchoServer::start(&c.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let udp = EchoServer::start(&c.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(c.ip, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Udp, addr(c.ip, 53)).unwrap();
    assert_eq!(tcp.peers()[0].ip(), Sandbox::EXT_ADDR);
    assert_eq!(udp.peers()[0].ip(), Sandbox::EXT_ADDR);
    let tcp6 = EchoServer::start(&c.netns, Proto::Tcp, addr(Ipv6Addr::UNSPECIFIED, 81)).unwrap();
    let udp6 = EchoServer::start(&c.netns, Proto::Udp, addr(Ipv6Addr::UNSPECIFIED, 54)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(ip6, 81)).unwrap();
    echo_once(&sb.ext.path(), Proto::Udp, addr(ip6, 54)).unwrap();
    assert_eq!(tcp6.peers()[0].ip(), Sandbox::EXT_ADDR6);
    assert_eq!(udp6.peers()[0].ip(), Sandbox::EXT_ADDR6);

    // Out through the LAN's router with its own address: not masqueraded.
    sb.inet
        .ip(&["route", "add", "10.200.0.128/25", "via", "10.201.0.1"])
        .unwrap();
    let target = addr(Sandbox::INET_ADDR, 9000);
    let server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();
    echo_once(&c.netns, Proto::Tcp, target).unwrap();
    assert_eq!(server.peers()[0].ip(), c.ip);
    let target6 = addr(Sandbox::INET_ADDR6, 9001);
    let server6 = EchoServer::start(&sb.inet.path(), Proto::Tcp, target6).unwrap();
    echo_once(&c.netns, Proto::Tcp, target6).unwrap();
    assert_eq!(
        server6.peers()[0].ip(),
        ip6,
        "masqueraded (NAT66) by the node"
    );

    // The node's own published ports and masquerade still work beside it, on a
    // dual-stack bridge network.
    netd.cli_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.50.0.0/24",
        "--subnet",
        "fd00:50::/64",
        "dual",
    ])
    .unwrap();
    let p = netd.run_idle_on("pub1", "dual", &["8080:80"]).unwrap();
    let p6 = p
        .ip6
        .expect("an IPv6 address on the dual-stack bridge network");
    let _s = EchoServer::start(&p.netns, Proto::Tcp, addr(Ipv6Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR6, 8080)).unwrap();

    // A hostile macvlan container forges the bridge container's address: the uplink's
    // programs see its frame (it leaves through the uplink) and must not take it for the
    // node's, nor masquerade it behind the node's address.
    let ext_mac = mac_of(&sb.ext.ip(&["-o", "link", "show", "ext0"]).unwrap().stdout);
    // The macvlan's own MAC (netd's scheme for 10.200.0.128).
    let scheme_mac = [0x02, 0x42, 10, 200, 0, 128];
    let marker = b"netd-forged-by-a-macvlan";
    let datagram = craft::udp(p.ip, Sandbox::INET_ADDR, 4444, 9999, marker);
    let ip = craft::ipv4(p.ip, Sandbox::INET_ADDR, 17, 7, 0, &datagram);
    let frame = craft::ipv4_frame(ext_mac, scheme_mac, &ip);
    for f in forged_frames_on_the_lan(&sb, &c, frame, marker) {
        let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        assert_eq!(
            src, p.ip,
            "a forged frame left with {src}: translated by the node"
        );
    }

    // The same over IPv6: the bridge container's IPv6 address, which NAT66 masquerades
    // behind the node's, forged by the macvlan container.
    let marker = b"netd-forged6-by-a-macvlan";
    let datagram = craft::udp6(4444, 9999, marker);
    let ip = craft::ipv6(p6, Sandbox::INET_ADDR6, 17, &datagram);
    let frame = craft::ethernet(ext_mac, scheme_mac, 0x86dd, &ip);
    for f in forged_frames_on_the_lan(&sb, &c, frame, marker) {
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
        assert_eq!(
            src, p6,
            "a forged IPv6 frame left with {src}: translated by the node"
        );
    }

    netd.cli_ok(&["rm", "-f", "web", "pub1"]).unwrap();
    netd.cli_ok(&["network", "rm", "lan", "dual"]).unwrap();
}

/// `frame` (carrying `marker`) sent three times by container `c` out of its macvlan: the
/// copies the LAN host saw, at least one.
fn forged_frames_on_the_lan(
    sb: &Sandbox,
    c: &netd_tests::daemon::Container,
    frame: Vec<u8>,
    marker: &[u8],
) -> Vec<Vec<u8>> {
    let capture = craft::Capture::start(&sb.ext.path(), "ext0").unwrap();
    craft::send_frames(&c.netns, "eth0", vec![frame; 3]).unwrap();
    let seen: Vec<Vec<u8>> = capture
        .settle()
        .into_iter()
        .filter(|f| craft::carries(f, marker))
        .collect();
    assert!(!seen.is_empty(), "the forged frames reached the LAN");
    seen
}

/// The MAC in `ip -o link show` output.
fn mac_of(out: &[u8]) -> [u8; 6] {
    let text = String::from_utf8_lossy(out);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether in ip link output");
    netd::endpoint::parse_mac(hex).expect("a MAC in ip link output")
}
