//! A macvlan network whose parent is netd's own uplink (the usual case on a real host:
//! containers on the LAN of `eth0`). The uplink's programs (TC, and XDP in the modes that
//! have it) see these frames; they must pass them untouched both ways: no translation,
//! no drop, the LAN host's and the container's own addresses kept. Runs under every
//! data-path combination, because the uplink's programs differ between them.

use std::net::Ipv4Addr;

use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, craft, echo_once, lan, require_root};

#[test]
fn macvlan_containers_on_netds_uplink_pass_its_programs_untouched() {
    require_root();
    let sb = Sandbox::new("mvu").unwrap();
    let netd = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let mut create = vec!["network", "create"];
    create.extend(lan::ON_UPLINK_FLAGS);
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

    // In from the LAN host, its address kept.
    let tcp = EchoServer::start(&c.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let udp = EchoServer::start(&c.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(c.ip, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Udp, addr(c.ip, 53)).unwrap();
    assert_eq!(tcp.peers()[0].ip(), Sandbox::EXT_ADDR);
    assert_eq!(udp.peers()[0].ip(), Sandbox::EXT_ADDR);

    // Out through the LAN's router with its own address: not masqueraded.
    sb.inet
        .ip(&["route", "add", "10.200.0.128/25", "via", "10.201.0.1"])
        .unwrap();
    let target = addr(Sandbox::INET_ADDR, 9000);
    let server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();
    echo_once(&c.netns, Proto::Tcp, target).unwrap();
    assert_eq!(server.peers()[0].ip(), c.ip);

    // The node's own published ports and masquerade still work beside it.
    netd.run_idle_container("pub1", &["8080:80"]).unwrap();
    let p = netd.container("pub1").unwrap();
    let _s = EchoServer::start(&p.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();

    // A hostile macvlan container forges the bridge container's address: the uplink's
    // programs see its frame (it leaves through the uplink) and must not take it for the
    // node's, nor masquerade it behind the node's address.
    let capture = craft::Capture::start(&sb.ext.path(), "ext0").unwrap();
    let ext_mac = mac_of(&sb.ext.ip(&["-o", "link", "show", "ext0"]).unwrap().stdout);
    let marker = b"netd-forged-by-a-macvlan";
    let datagram = craft::udp(p.ip, Sandbox::INET_ADDR, 4444, 9999, marker);
    let ip = craft::ipv4(p.ip, Sandbox::INET_ADDR, 17, 7, 0, &datagram);
    let frame = craft::ipv4_frame(ext_mac, [0x02, 0x42, 10, 200, 0, 128], &ip);
    craft::send_frames(&c.netns, "eth0", vec![frame; 3]).unwrap();
    let seen: Vec<Vec<u8>> = capture
        .settle()
        .into_iter()
        .filter(|f| craft::carries(f, marker))
        .collect();
    assert!(!seen.is_empty(), "the forged frames reached the LAN");
    for f in &seen {
        let src = std::net::Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        assert_eq!(
            src, p.ip,
            "a forged frame left with {src}: translated by the node"
        );
    }

    netd.cli_ok(&["rm", "-f", "web", "pub1"]).unwrap();
    netd.cli_ok(&["network", "rm", "lan"]).unwrap();
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
