//! Attacks on the data path, each named after what it tries, made the way a confined
//! workload with raw sockets or a host on the uplink's LAN would make them (security
//! review, findings H1-H5, M1, M6, L5, L6, and fragments). Frames are crafted byte by
//! byte and sent through AF_PACKET sockets inside the containers' namespaces; what their
//! targets receive is captured the same way, so a test sees every frame that reached a
//! neighbour, also one its stack would have dropped. Where a test could pass by seeing
//! nothing at all, a control frame that policy allows shows the capture works.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use netd_tests::{
    Daemon, EchoServer, Netns, Proto, Sandbox, addr,
    craft::{self, BROADCAST, Capture, ETH_P_8021AD, ETH_P_8021Q, UDP},
    daemon::Container,
    echo::{in_netns, net_sysctl},
    echo_fails, echo_once, require_root, udp_echo_sized, unique_name,
};

/// Docker's MAC scheme, which netd follows: 02:42 and the IPv4 address.
fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

fn network(d: &Daemon, name: &str, subnet: &str, options: &[&str]) {
    let mut args = vec!["network", "create", "--subnet", subnet];
    args.extend_from_slice(options);
    args.push(name);
    d.cli_ok(&args).unwrap();
}

/// Networks red (10.10.1.0/24) and blue (10.10.2.0/24), and lonely (10.10.3.0/24) with
/// icc off.
fn red_blue_lonely(d: &Daemon) {
    network(d, "red", "10.10.1.0/24", &[]);
    network(d, "blue", "10.10.2.0/24", &[]);
    network(
        d,
        "lonely",
        "10.10.3.0/24",
        &["-o", "com.netd.bridge.enable_icc=false"],
    );
}

fn container(d: &Daemon, name: &str, network: &str, ip: &str) -> Container {
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "--ip",
        ip,
        "--",
        "sleep",
        "infinity",
    ])
    .unwrap();
    d.container(name).unwrap()
}

/// A UDP datagram from `src` to `dst` in an Ethernet frame to `dst_mac`, carrying
/// `marker`.
fn udp_frame(
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    src_mac: [u8; 6],
    dst: Ipv4Addr,
    marker: &[u8],
) -> Vec<u8> {
    let l4 = craft::udp(src, dst, 40000, 6000, marker);
    craft::ipv4_frame(dst_mac, src_mac, &craft::ipv4(src, dst, UDP, 7, 0, &l4))
}

/// The frames a capture got that carry `marker`.
fn marked(capture: &Capture, marker: &[u8]) -> usize {
    capture
        .settle()
        .iter()
        .filter(|f| craft::carries(f, marker))
        .count()
}

#[test]
fn a_router_advertisement_or_any_frame_but_ipv4_and_arp_reaches_no_neighbour_nor_the_node() {
    require_root();
    let sb = Sandbox::new("ae").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let c1 = d.run_idle_container("c1", &[]).unwrap();
    let c2 = d.run_idle_container("c2", &[]).unwrap();
    let on_c2 = Capture::start(&c2.netns, "eth0").unwrap();
    let on_node = Capture::start(&sb.node.path(), "netd0").unwrap();
    let me = mac_of(c1.ip);
    let to_c2 = mac_of(c2.ip);
    let mark = b"netd-attack-ethertype".as_slice();
    let mut ipv6 = vec![0x60, 0, 0, 0, 0, mark.len() as u8, 17, 64];
    ipv6.extend_from_slice(&[0; 32]);
    ipv6.extend_from_slice(mark);
    // LLC/SNAP: an IPv4 packet behind an 802.3 length field instead of an ethertype.
    let mut snap = vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
    snap.extend_from_slice(&craft::ipv4(c1.ip, c2.ip, UDP, 1, 0, mark));
    let frames = vec![
        craft::router_advertisement(me),
        craft::ethernet(to_c2, me, craft::ETH_P_IPV6, &ipv6),
        craft::ethernet(BROADCAST, me, 0x88cc, mark),
        craft::ethernet(to_c2, me, 0x1234, mark),
        craft::ethernet(to_c2, me, snap.len() as u16, &snap),
    ];
    let sent = frames.len() as u64;
    craft::send_frames(&c1.netns, "eth0", frames).unwrap();

    let from_c1 = |frames: Vec<Vec<u8>>| {
        frames
            .into_iter()
            .filter(|f| f[6..12] == me && !matches!(craft::ethertype(f), 0x0800 | 0x0806))
            .count()
    };
    assert_eq!(from_c1(on_c2.settle()), 0, "the neighbour got a frame");
    assert_eq!(
        from_c1(on_node.frames()),
        0,
        "the node's bridge got a frame"
    );
    // The two IPv6 frames went to the IPv6 program: this network has no IPv6.
    assert!(
        d.counter("EndpointIngress", "drop_ethertype_not_allowed")
            .unwrap()
            >= sent - 2
    );
    assert!(
        d.counter("EndpointIngress", "drop_ipv6_not_enabled")
            .unwrap()
            >= 2
    );
    // Nobody took the advertisement, and nobody would have: IPv6 is off where netd wires.
    // (A router's advertisement gives a default route through its link-local address, and
    // its prefix, 2001:db8:66::/64; the node's own default route is the sandbox's.)
    for (who, ns) in [("the node", sb.node.path()), ("c2", c2.netns.clone())] {
        let routes = in_netns(&ns, || {
            Ok(std::process::Command::new("ip")
                .args(["-6", "route", "show"])
                .output()?)
        })
        .unwrap();
        let routes = String::from_utf8_lossy(&routes.stdout);
        assert!(
            !routes.contains("via fe80") && !routes.contains("2001:db8:66"),
            "{who} took a route from the advertisement: {routes}"
        );
    }
    assert_eq!(
        net_sysctl(&sb.node.path(), "ipv6/conf/netd0/disable_ipv6"),
        "1"
    );
    assert_eq!(
        net_sysctl(&sb.node.path(), "ipv6/conf/netd0/accept_ra"),
        "0"
    );
    let veth = format!("ipv6/conf/{}/disable_ipv6", c1.host_veth);
    assert_eq!(net_sysctl(&sb.node.path(), &veth), "1");
    assert_eq!(net_sysctl(&c2.netns, "ipv6/conf/eth0/disable_ipv6"), "1");
    assert_eq!(net_sysctl(&c2.netns, "ipv6/conf/eth0/accept_ra"), "0");
}

#[test]
fn vlan_tagged_frames_from_a_container_are_dropped_whatever_their_tags() {
    require_root();
    let sb = Sandbox::new("av").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    red_blue_lonely(&d);
    let r1 = container(&d, "r1", "red", "10.10.1.2");
    let b1 = container(&d, "b1", "blue", "10.10.2.2");
    let b2 = container(&d, "b2", "blue", "10.10.2.3");
    let l1 = container(&d, "l1", "lonely", "10.10.3.2");
    let l2 = container(&d, "l2", "lonely", "10.10.3.3");
    let on_b1 = Capture::start(&b1.netns, "eth0").unwrap();
    let on_l2 = Capture::start(&l2.netns, "eth0").unwrap();
    let mark = b"netd-attack-vlan".as_slice();
    let across = udp_frame(
        mac_of(Ipv4Addr::new(10, 10, 1, 1)),
        r1.ip,
        mac_of(r1.ip),
        b1.ip,
        mark,
    );
    let spoofed = Ipv4Addr::new(10, 10, 3, 77);
    let to_neighbour = udp_frame(mac_of(l2.ip), spoofed, mac_of(l1.ip), l2.ip, mark);
    let tag_sets: [&[(u16, u16)]; 5] = [
        &[(ETH_P_8021Q, 0)],
        &[(ETH_P_8021Q, 7)],
        &[(ETH_P_8021AD, 0), (ETH_P_8021Q, 0)],
        &[(ETH_P_8021Q, 0), (ETH_P_8021Q, 0)],
        &[(0x9100, 0), (ETH_P_8021Q, 0)],
    ];
    for tags in tag_sets {
        craft::send_frames(&r1.netns, "eth0", vec![craft::vlan_tagged(&across, tags)]).unwrap();
        craft::send_frames(
            &l1.netns,
            "eth0",
            vec![craft::vlan_tagged(&to_neighbour, tags)],
        )
        .unwrap();
    }
    // Control: the same frame, untagged, from b1's own network reaches it.
    let control = b"netd-control-vlan".as_slice();
    let allowed = udp_frame(mac_of(b1.ip), b2.ip, mac_of(b2.ip), b1.ip, control);
    craft::send_frames(&b2.netns, "eth0", vec![allowed]).unwrap();

    assert_eq!(marked(&on_b1, control), 1, "the capture sees what arrives");
    assert_eq!(marked(&on_b1, mark), 0, "a tagged frame crossed networks");
    assert_eq!(
        marked(&on_l2, mark),
        0,
        "a tagged frame reached an icc-off neighbour"
    );
    assert!(d.counter("EndpointIngress", "drop_vlan_tagged").unwrap() >= 10);
}

/// The first 28 bytes of a UDP packet from `src` to `dst`, as an ICMP error quotes it.
fn quote(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let l4 = craft::udp(src, dst, 6000, 40000, b"quoted");
    craft::ipv4(src, dst, UDP, 9, 0, &l4)[..28].to_vec()
}

/// An ICMP error from `src` to `dst` in a frame to `dst_mac`, quoting `quoted`, with
/// `marker` after the quote (an error may carry more of the datagram).
fn icmp_error_frame(
    dst_mac: [u8; 6],
    (src, src_mac): (Ipv4Addr, [u8; 6]),
    dst: Ipv4Addr,
    (ty, code): (u8, u8),
    quoted: &[u8],
    marker: &[u8],
) -> Vec<u8> {
    let body = [quoted, marker].concat();
    let icmp = craft::icmp(ty, code, [0; 4], &body);
    craft::ipv4_frame(
        dst_mac,
        src_mac,
        &craft::ipv4(src, dst, craft::ICMP, 3, 0, &icmp),
    )
}

/// Variants of a quote of a packet from `peer` to `me`: as it should be, of another IP
/// version, with options, cut short, about the sender itself.
fn hostile_quotes(me: Ipv4Addr, peer: Ipv4Addr) -> Vec<Vec<u8>> {
    let good = quote(peer, me);
    let mut v6 = good.clone();
    v6[0] = 0x65;
    let mut options = good.clone();
    options[0] = 0x4f;
    vec![
        good.clone(),
        v6,
        options,
        good[..12].to_vec(),
        quote(me, me),
    ]
}

/// ICMP errors of every kind netd translates from `from` (address, MAC) to `to`, one for
/// each quote and each frame destination MAC, each carrying `marker`.
fn error_frames(
    from: (Ipv4Addr, [u8; 6]),
    to: Ipv4Addr,
    macs: &[[u8; 6]],
    quotes: &[Vec<u8>],
    marker: &[u8],
) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for kind in [(3, 3), (3, 4), (11, 0), (12, 0)] {
        for q in quotes {
            for mac in macs {
                frames.push(icmp_error_frame(*mac, from, to, kind, q, marker));
            }
        }
    }
    frames
}

#[test]
fn icmp_errors_are_policed_by_where_they_go_not_by_what_they_quote() {
    require_root();
    let sb = Sandbox::new("ai").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    red_blue_lonely(&d);
    network(&d, "vault", "10.10.4.0/24", &["--internal"]);
    let r1 = container(&d, "r1", "red", "10.10.1.2");
    let r2 = container(&d, "r2", "red", "10.10.1.3");
    let b1 = container(&d, "b1", "blue", "10.10.2.2");
    let l1 = container(&d, "l1", "lonely", "10.10.3.2");
    let l2 = container(&d, "l2", "lonely", "10.10.3.3");
    let i1 = container(&d, "i1", "vault", "10.10.4.2");
    let on_b1 = Capture::start(&b1.netns, "eth0").unwrap();
    let on_l2 = Capture::start(&l2.netns, "eth0").unwrap();
    let on_r2 = Capture::start(&r2.netns, "eth0").unwrap();
    let outside = Capture::start(&sb.ext.path(), "ext0").unwrap();
    let mark = b"netd-attack-icmp".as_slice();

    let gateway = |net: u8| mac_of(Ipv4Addr::new(10, 10, net, 1));
    let frames = error_frames(
        (r1.ip, mac_of(r1.ip)),
        b1.ip,
        &[gateway(1)],
        &hostile_quotes(r1.ip, b1.ip),
        mark,
    );
    craft::send_frames(&r1.netns, "eth0", frames).unwrap();
    let frames = error_frames(
        (l1.ip, mac_of(l1.ip)),
        l2.ip,
        &[mac_of(l2.ip), gateway(3)],
        &hostile_quotes(l1.ip, l2.ip),
        mark,
    );
    craft::send_frames(&l1.netns, "eth0", frames).unwrap();
    let frames = error_frames(
        (i1.ip, mac_of(i1.ip)),
        Sandbox::EXT_ADDR,
        &[gateway(4)],
        &hostile_quotes(i1.ip, Sandbox::EXT_ADDR),
        mark,
    );
    craft::send_frames(&i1.netns, "eth0", frames).unwrap();
    // Control: an error within red, where r1 may send anything, arrives.
    let control = b"netd-control-icmp".as_slice();
    let allowed = icmp_error_frame(
        mac_of(r2.ip),
        (r1.ip, mac_of(r1.ip)),
        r2.ip,
        (3, 3),
        &quote(r2.ip, r1.ip),
        control,
    );
    craft::send_frames(&r1.netns, "eth0", vec![allowed]).unwrap();

    assert_eq!(marked(&on_r2, control), 1, "the capture sees what arrives");
    assert_eq!(marked(&on_b1, mark), 0, "an error crossed networks");
    assert_eq!(
        marked(&on_l2, mark),
        0,
        "an error reached an icc-off neighbour"
    );
    assert_eq!(
        marked(&outside, mark),
        0,
        "an error left an internal network"
    );
    let dropped: u64 = [
        "drop_network_isolation",
        "drop_icc_disabled",
        "drop_internal_network",
    ]
    .iter()
    .map(|r| d.counter("EndpointIngress", r).unwrap())
    .sum();
    assert!(dropped >= 20 + 40 + 20, "{dropped}");
}

#[test]
fn a_real_error_from_an_icc_off_container_still_reaches_its_peer() {
    require_root();
    let sb = Sandbox::new("ar").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    network(
        &d,
        "lonely",
        "10.10.3.0/24",
        &["-o", "com.netd.bridge.enable_icc=false"],
    );
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        "l1",
        "--network",
        "lonely",
        "-p",
        "7000:7000/udp",
        "--",
        "sleep",
        "infinity",
    ])
    .unwrap();
    // Nothing listens on 7000 in l1: it answers port unreachable, which must come back
    // to the client translated, so that its connected socket learns of it.
    let refused = in_netns(&sb.ext.path(), || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(addr(Sandbox::NODE_ADDR, 7000))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut buf = [0u8; 16];
        for _ in 0..10 {
            s.send(b"anyone?")?;
            if let Err(e) = s.recv(&mut buf)
                && e.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .unwrap();
    assert!(refused, "the port unreachable never reached the client");
    assert!(
        d.counter("UplinkEgress", "icmp_error_translated").unwrap()
            + d.counter("EndpointIngress", "icmp_error_translated")
                .unwrap()
            >= 1
    );
}

#[test]
fn icc_off_lets_no_broadcast_multicast_or_arp_reach_a_neighbour() {
    require_root();
    let sb = Sandbox::new("ab").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    network(
        &d,
        "lonely",
        "10.10.3.0/24",
        &["-o", "com.netd.bridge.enable_icc=false"],
    );
    network(&d, "red", "10.10.1.0/24", &[]);
    let l1 = container(&d, "l1", "lonely", "10.10.3.2");
    let l2 = container(&d, "l2", "lonely", "10.10.3.3");
    let r1 = container(&d, "r1", "red", "10.10.1.2");
    let r2 = container(&d, "r2", "red", "10.10.1.3");
    let on_l2 = Capture::start(&l2.netns, "eth0").unwrap();
    let on_r2 = Capture::start(&r2.netns, "eth0").unwrap();
    let mark = b"netd-attack-broadcast".as_slice();
    let gateway_mac = mac_of(Ipv4Addr::new(10, 10, 3, 1));
    let to = |dst_mac, dst| udp_frame(dst_mac, l1.ip, mac_of(l1.ip), dst, mark);
    let mut arp = craft::arp_request(mac_of(l1.ip), l1.ip, l2.ip);
    arp.extend_from_slice(mark);
    let frames = vec![
        to(BROADCAST, Ipv4Addr::BROADCAST),
        to(BROADCAST, Ipv4Addr::new(10, 10, 3, 255)),
        to([1, 0, 0x5e, 0, 0, 1], Ipv4Addr::new(224, 0, 0, 1)),
        to([1, 0, 0x5e, 0x7f, 0, 1], Ipv4Addr::new(239, 255, 0, 1)),
        to(gateway_mac, Ipv4Addr::BROADCAST),
        to(gateway_mac, Ipv4Addr::new(224, 0, 0, 251)),
        // To the neighbour's MAC, addressed to somewhere it might route to.
        to(mac_of(l2.ip), Sandbox::INET_ADDR),
        arp,
    ];
    craft::send_frames(&l1.netns, "eth0", frames).unwrap();
    // Control: the same broadcast between two containers of a network with icc on.
    let control = b"netd-control-broadcast".as_slice();
    let allowed = udp_frame(
        BROADCAST,
        r1.ip,
        mac_of(r1.ip),
        Ipv4Addr::BROADCAST,
        control,
    );
    craft::send_frames(&r1.netns, "eth0", vec![allowed]).unwrap();

    assert_eq!(marked(&on_r2, control), 1, "the capture sees what arrives");
    assert_eq!(
        marked(&on_l2, mark),
        0,
        "a frame reached an icc-off neighbour"
    );
    assert!(d.counter("EndpointIngress", "drop_icc_disabled").unwrap() >= 8);
    let link = sb.node.ip(&["-d", "link", "show", &l1.host_veth]).unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("isolated on"),
        "the bridge port of an icc-off container is isolated"
    );
}

/// What a blaster saw and did at the moment its interface appeared.
struct Blast {
    sent: u64,
    /// The host-side veths of the node that had a TC ingress program then.
    policed: Vec<String>,
    /// The host-side veths of the node then.
    veths: Vec<String>,
}

/// In the namespace at `ns`, wait for `ifname` to appear; at that moment stop the daemon
/// (SIGSTOP, so that it cannot finish wiring, as a busy daemon would not), note which
/// veths of the node have a program, bring the interface up itself and send broadcast
/// frames from a MAC and an address that are not the endpoint's; then let the daemon go
/// on.
fn blast_as_soon_as_it_appears(
    ns: &Path,
    node: &Path,
    ifname: &'static str,
    marker: &'static [u8],
    daemon: u32,
) -> std::thread::JoinHandle<Blast> {
    let (ns, node) = (ns.to_path_buf(), node.to_path_buf());
    std::thread::spawn(move || {
        let blast = in_netns(&ns, move || {
            let spoofed = Ipv4Addr::new(172, 17, 99, 99);
            let mac = [2, 0xde, 0xad, 0xbe, 0xef, 1];
            let frame = udp_frame(BROADCAST, spoofed, mac, Ipv4Addr::BROADCAST, marker);
            let deadline = Instant::now() + Duration::from_secs(15);
            // Polled with if_nametoindex: cheap, unlike opening a packet socket (whose
            // close waits for an RCU grace period).
            let name = std::ffi::CString::new(ifname)?;
            // SAFETY: a NUL-terminated name.
            while unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
                anyhow::ensure!(Instant::now() < deadline, "{ifname} never appeared");
            }
            // SAFETY: a signal to the daemon this test started.
            unsafe { libc::kill(daemon as i32, libc::SIGSTOP) };
            let (veths, policed) = in_netns(&node, veths_and_programs)?;

            craft::set_up(ifname)?;
            let sender = craft::RawSender::open(ifname)?;
            let (mut sent, until) = (0, Instant::now() + Duration::from_millis(300));
            while Instant::now() < until {
                if sender.send(&frame).is_ok() {
                    sent += 1;
                }
            }
            Ok(Blast {
                sent,
                policed,
                veths,
            })
        });
        // SAFETY: as above.
        unsafe { libc::kill(daemon as i32, libc::SIGCONT) };
        blast.unwrap()
    })
}

/// The calling thread's namespace's host-side veths, and those with a TC ingress program
/// (as the kernel's tcx query lists them).
fn veths_and_programs() -> anyhow::Result<(Vec<String>, Vec<String>)> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let links = std::process::Command::new("ip")
        .args(["-j", "link"])
        .output()?;
    let links: serde_json::Value = serde_json::from_slice(&links.stdout)?;
    let veths: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|name| name.starts_with("ndv"))
        .map(str::to_string)
        .collect();
    let policed = veths
        .iter()
        .filter(|v| {
            SchedClassifier::query_tcx(v, TcAttachType::Ingress)
                .is_ok_and(|(_, programs)| !programs.is_empty())
        })
        .cloned()
        .collect();
    Ok((veths, policed))
}

#[test]
fn a_container_sending_as_its_interface_appears_is_policed_from_the_first_frame() {
    require_root();
    let sb = Sandbox::new("af").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let daemon = d.pid().unwrap();
    let c2 = d.run_idle_container("c2", &[]).unwrap();
    let on_c2 = Capture::start(&c2.netns, "eth0").unwrap();
    let mark: &'static [u8] = b"netd-attack-first-frame";
    let node = sb.node.path();

    // A runtime's namespace whose process sends the moment its interface appears.
    let theirs = Netns::new(&unique_name("afx")).unwrap();
    let blaster = blast_as_soon_as_it_appears(&theirs.path(), &node, "eth0", mark, daemon);
    d.cli_ok(&[
        "create",
        "--name",
        "rt",
        "--netns",
        theirs.path().to_str().unwrap(),
    ])
    .unwrap();
    let first = blaster.join().unwrap();

    // A running container connected to a second network, sending on the new interface.
    d.cli_ok(&["network", "create", "--subnet", "10.10.9.0/24", "extra"])
        .unwrap();
    let e2 = container(&d, "e2", "extra", "10.10.9.3");
    let on_e2 = Capture::start(&e2.netns, "eth0").unwrap();
    let x = d.run_idle_container("xx", &[]).unwrap();
    let blaster = blast_as_soon_as_it_appears(&x.netns, &node, "eth1", mark, daemon);
    d.cli_ok(&["network", "connect", "extra", "xx"]).unwrap();
    let second = blaster.join().unwrap();

    for blast in [&first, &second] {
        assert!(blast.sent > 0, "the blaster never got its frames out");
        assert_eq!(
            blast.veths, blast.policed,
            "a veth was wired into a container before its program was attached"
        );
    }
    assert_eq!(
        marked(&on_c2, mark),
        0,
        "a spoofed frame got out before the guard"
    );
    assert_eq!(
        marked(&on_e2, mark),
        0,
        "a spoofed frame got out before the guard"
    );
    assert!(
        d.counter("EndpointIngress", "drop_spoofed_mac").unwrap() >= first.sent + second.sent,
        "every frame sent as the interface appeared was judged by the guard"
    );
    d.cli_ok(&["rm", "rt"]).unwrap();
}

#[test]
fn the_lan_reaches_containers_only_through_published_ports_unless_their_network_is_routed() {
    require_root();
    let sb = Sandbox::new("al").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    network(&d, "plain", "10.10.1.0/24", &[]);
    network(
        &d,
        "nomasq",
        "10.10.5.0/24",
        &["-o", "com.netd.bridge.enable_ip_masquerade=false"],
    );
    network(&d, "vault", "10.10.4.0/24", &["--internal"]);
    let p1 = container(&d, "p1", "plain", "10.10.1.2");
    let m1 = container(&d, "m1", "nomasq", "10.10.5.2");
    let i1 = container(&d, "i1", "vault", "10.10.4.2");
    let mut servers = Vec::new();
    for c in [&p1, &m1, &i1] {
        servers.push(EchoServer::start(&c.netns, Proto::Tcp, addr(c.ip, 8000)).unwrap());
        servers.push(EchoServer::start(&c.netns, Proto::Udp, addr(c.ip, 7777)).unwrap());
    }
    // A LAN host that knows a route to every container subnet, and the internet host too
    // (nomasq and routed leave unmasqueraded).
    sb.ext
        .ip(&["route", "add", "10.10.0.0/16", "via", "10.200.0.2"])
        .unwrap();
    sb.inet
        .ip(&["route", "add", "10.10.0.0/16", "via", "10.201.0.1"])
        .unwrap();
    let lan = sb.ext.path();
    for c in [&p1, &m1, &i1] {
        for (proto, port) in [(Proto::Tcp, 8000), (Proto::Udp, 7777)] {
            assert!(
                echo_fails(&lan, proto, addr(c.ip, port)).unwrap(),
                "the LAN reached {} {proto:?} {port} directly",
                c.ip
            );
        }
    }
    let ping = sb.ext.exec(&["ping", "-c", "1", "-W", "1", "10.10.1.2"]);
    assert!(ping.is_err(), "the LAN pinged a container directly");
    // Another protocol (GRE) and a packet with IP options, straight at a container.
    let on_p1 = Capture::start(&p1.netns, "eth0").unwrap();
    let mark = b"netd-attack-direct".as_slice();
    let node_mac = link_mac(&sb.node, Sandbox::UPLINK);
    let ext_mac = link_mac(&sb.ext, "ext0");
    let gre = craft::ipv4(Sandbox::EXT_ADDR, p1.ip, 47, 5, 0, mark);
    let mut options = craft::ipv4(
        Sandbox::EXT_ADDR,
        p1.ip,
        UDP,
        6,
        0,
        &[
            &[1, 1, 1, 0][..],
            &craft::udp(Sandbox::EXT_ADDR, p1.ip, 1, 7777, mark),
        ]
        .concat(),
    );
    options[0] = 0x46;
    options[10..12].copy_from_slice(&[0, 0]);
    let c = craft::checksum(&options[..24], 0);
    options[10..12].copy_from_slice(&c.to_be_bytes());
    let frames = vec![
        craft::ipv4_frame(node_mac, ext_mac, &gre),
        craft::ipv4_frame(node_mac, ext_mac, &options),
    ];
    craft::send_frames(&lan, "ext0", frames).unwrap();
    assert_eq!(
        marked(&on_p1, mark),
        0,
        "a packet the parser does not take got in"
    );
    assert!(d.from_network("drop_not_published").unwrap() >= 8);

    // ICMP errors from the LAN straight at p1: quoting the flow p1 really has (as the
    // node sent it, and as p1 sent it), or quotes the parser cannot take. An error
    // belongs to a flow only when it goes where the quoted packet came from.
    let on_lan = Capture::start(&lan, "ext0").unwrap();
    let probe = b"netd-probe-masq".as_slice();
    let gw_mac = mac_of(Ipv4Addr::new(10, 10, 1, 1));
    let l4 = craft::udp(p1.ip, Sandbox::EXT_ADDR, 6000, 40000, probe);
    let datagram = craft::ipv4(p1.ip, Sandbox::EXT_ADDR, UDP, 8, 0, &l4);
    craft::send_frames(
        &p1.netns,
        "eth0",
        vec![craft::ipv4_frame(gw_mac, mac_of(p1.ip), &datagram)],
    )
    .unwrap();
    let masqueraded = on_lan
        .settle()
        .into_iter()
        .find(|f| craft::carries(f, probe))
        .expect("p1's datagram left masqueraded");
    let as_sent = masqueraded[14..42].to_vec();
    let mut quotes = hostile_quotes(Sandbox::EXT_ADDR, Sandbox::NODE_ADDR);
    quotes.extend([as_sent.clone(), datagram[..28].to_vec()]);
    let lan_mark = b"netd-attack-lan-icmp".as_slice();
    let from = (Sandbox::EXT_ADDR, ext_mac);
    let frames = error_frames(from, p1.ip, &[node_mac], &quotes, lan_mark);
    let errors = frames.len() as u64;
    let before = d.from_network("drop_not_published").unwrap();
    craft::send_frames(&lan, "ext0", frames).unwrap();
    // Control: the same error sent to the node, where the quoted packet came from, is
    // translated and reaches p1.
    let control = b"netd-control-lan-icmp".as_slice();
    let right = icmp_error_frame(
        node_mac,
        (Sandbox::EXT_ADDR, ext_mac),
        Sandbox::NODE_ADDR,
        (3, 3),
        &as_sent,
        control,
    );
    craft::send_frames(&lan, "ext0", vec![right]).unwrap();
    assert_eq!(marked(&on_p1, control), 1, "the real error arrives");
    assert_eq!(
        marked(&on_p1, lan_mark),
        0,
        "an ICMP error from the LAN reached a protected container"
    );
    assert!(d.from_network("drop_not_published").unwrap() >= before + errors);

    network(
        &d,
        "routed",
        "10.10.6.0/24",
        &["-o", "com.netd.network.gateway_mode=routed"],
    );
    network(
        &d,
        "routed2",
        "10.10.7.0/24",
        &["-o", "com.docker.network.bridge.gateway_mode_ipv4=routed"],
    );
    let o1 = container(&d, "o1", "routed", "10.10.6.2");
    let o2 = container(&d, "o2", "routed2", "10.10.7.2");
    for c in [&o1, &o2] {
        servers.push(EchoServer::start(&c.netns, Proto::Tcp, addr(c.ip, 8000)).unwrap());
        servers.push(EchoServer::start(&c.netns, Proto::Udp, addr(c.ip, 7777)).unwrap());
    }
    // Routed on purpose: reached directly, with the client's own address.
    for c in [&o1, &o2] {
        echo_once(&lan, Proto::Tcp, addr(c.ip, 8000)).expect("a routed network is reachable");
        echo_once(&lan, Proto::Udp, addr(c.ip, 7777)).expect("a routed network is reachable");
    }
    // The containers of a network without masquerade still reach out, and get answers.
    let inet =
        EchoServer::start(&sb.inet.path(), Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();
    echo_once(&m1.netns, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).expect("nomasq reaches out");
    assert_eq!(
        inet.peers()[0].ip(),
        std::net::IpAddr::V4(m1.ip),
        "not masqueraded"
    );
    // And published ports of every non-internal network answer from the LAN.
    drop(servers);
}

fn link_mac(ns: &Netns, ifname: &str) -> [u8; 6] {
    let out = ns.ip(&["-j", "link", "show", ifname]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v[0]["address"].as_str().unwrap().to_string();
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

#[test]
fn more_node_addresses_than_the_old_limit_block_neither_containers_nor_a_restart() {
    require_root();
    let sb = Sandbox::new("aa").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let batch: String = (0..300)
        .map(|i| {
            format!(
                "address add 10.210.{}.{}/32 dev {}\n",
                i / 250,
                1 + i % 250,
                Sandbox::UPLINK
            )
        })
        .collect();
    sb.node.exec_stdin(&["ip", "-batch", "-"], &batch).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let _server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    d.stop(libc::SIGTERM).unwrap();
    d.restart().unwrap();
    let info = d.info().unwrap();
    assert!(
        info["map_entries"]["node_addresses"].as_u64().unwrap() >= 301,
        "{info}"
    );
    // A wildcard binding answers on the 300th of them.
    sb.ext
        .ip(&["route", "add", "10.210.1.50/32", "via", "10.200.0.2"])
        .unwrap();
    echo_once(
        &sb.ext.path(),
        Proto::Tcp,
        addr(Ipv4Addr::new(10, 210, 1, 50), 8080),
    )
    .expect("published on an address beyond the 256th");
}

#[test]
fn a_4000_byte_datagram_crosses_a_published_port_and_masquerade_both_ways() {
    require_root();
    let sb = Sandbox::new("ag").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["5353:53/udp"]).unwrap();
    let _dns = EchoServer::start(&web.netns, Proto::Udp, addr(web.ip, 53)).unwrap();
    let inet =
        EchoServer::start(&sb.inet.path(), Proto::Udp, addr(Sandbox::INET_ADDR, 9999)).unwrap();

    udp_echo_sized(&sb.ext.path(), addr(Sandbox::NODE_ADDR, 5353), 4000)
        .expect("through the published port and back");
    udp_echo_sized(&web.netns, addr(Sandbox::INET_ADDR, 9999), 4000)
        .expect("through masquerade and back");
    assert_eq!(
        inet.peers()[0].ip(),
        std::net::IpAddr::V4(Sandbox::NODE_ADDR),
        "masqueraded"
    );
    assert_eq!(
        d.counter("UplinkIngress", "drop_fragment_before_first")
            .unwrap(),
        0
    );
}

/// A TCP server in `ns` that echoes on one connection for as long as the client keeps it
/// (the harness's echo server cuts idle connections after a few seconds).
fn hold_one_connection(ns: &Path, bind: SocketAddr) -> std::thread::JoinHandle<()> {
    let listener = in_netns(ns, move || Ok(std::net::TcpListener::bind(bind)?)).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// Send `count` UDP datagrams from one socket of `ns` to distinct ports of `target`:
/// as many new flows, none of them ever answered.
fn spray_udp(ns: &Path, target: Ipv4Addr, count: u16) -> std::thread::JoinHandle<()> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            for port in 0..count {
                let _ = s.send_to(b"flood", SocketAddr::from((target, 20000 + port)));
            }
            Ok(())
        })
        .unwrap()
    })
}

/// Send `count` TCP SYNs to `target` from spoofed sources (10.202.0.0/16) through the
/// LAN host's stack: half-open flows whose handshakes never complete.
fn spoofed_syn_flood(ns: &Path, target: SocketAddr, count: u32) -> std::thread::JoinHandle<()> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
            // SAFETY: a plain socket call.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            // SAFETY: a new fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let std::net::IpAddr::V4(dst) = target.ip() else {
                unreachable!()
            };
            for i in 0..count {
                let src = Ipv4Addr::new(10, 202, (i >> 8) as u8, i as u8);
                let syn = craft::tcp_syn(src, dst, 1024 + (i % 60000) as u16, target.port(), i);
                let packet = craft::ipv4(src, dst, craft::TCP, i as u16, 0, &syn);
                // SAFETY: all-zero is a valid sockaddr_in.
                let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                to.sin_family = libc::AF_INET as u16;
                to.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
                // SAFETY: sendto from a valid buffer to a sockaddr_in of the size given.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&to as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                };
            }
            Ok(())
        })
        .unwrap()
    })
}

#[test]
fn a_flood_of_unanswered_flows_leaves_established_flows_and_other_containers_working() {
    require_root();
    let sb = Sandbox::new("ax").unwrap();
    // A small table: the floods are ten times its size.
    let d = Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--flow-table-size", "1024"]).unwrap();
    let flooder = d.run_idle_container("flooder", &["8081:80"]).unwrap();
    let victim = d
        .run_idle_container("victim", &["8080:80", "8082:81"])
        .unwrap();
    let _long_lived = hold_one_connection(&victim.netns, addr(victim.ip, 81));
    let other = d.run_idle_container("other", &[]).unwrap();
    let _flooder_web = EchoServer::start(&flooder.netns, Proto::Tcp, addr(flooder.ip, 80)).unwrap();
    let _victim_web = EchoServer::start(&victim.netns, Proto::Tcp, addr(victim.ip, 80)).unwrap();
    let _inet =
        EchoServer::start(&sb.inet.path(), Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();

    // An established connection from the LAN, opened before the floods and used after.
    let published = addr(Sandbox::NODE_ADDR, 8080);
    let long_lived = addr(Sandbox::NODE_ADDR, 8082);
    let established = in_netns(&sb.ext.path(), move || {
        Ok(TcpStream::connect_timeout(
            &long_lived,
            Duration::from_secs(3),
        )?)
    })
    .unwrap();
    let exchange = |mut s: &TcpStream| -> std::io::Result<()> {
        use std::io::{Read, Write};
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"still here")?;
        let mut back = [0u8; 10];
        s.read_exact(&mut back)?;
        assert_eq!(&back, b"still here");
        Ok(())
    };
    exchange(&established).unwrap();

    let floods = [
        spray_udp(&flooder.netns, Sandbox::INET_ADDR, 10_240),
        spoofed_syn_flood(&sb.ext.path(), addr(Sandbox::NODE_ADDR, 8081), 10_240),
    ];
    // Meanwhile, and after: new connections of the others, out and in.
    let (ok_out, ok_in) = (AtomicU64::new(0), AtomicU64::new(0));
    let attempts = 100;
    for _ in 0..attempts {
        if echo_once(&other.netns, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).is_ok() {
            ok_out.fetch_add(1, Ordering::Relaxed);
        }
        if echo_once(&sb.ext.path(), Proto::Tcp, published).is_ok() {
            ok_in.fetch_add(1, Ordering::Relaxed);
        }
    }
    for f in floods {
        f.join().unwrap();
    }
    let info = d.info().unwrap();
    let (ok_out, ok_in) = (
        ok_out.load(Ordering::Relaxed),
        ok_in.load(Ordering::Relaxed),
    );
    assert!(
        ok_out >= 99,
        "{ok_out} of {attempts} new connections out succeeded: {info}"
    );
    assert!(
        ok_in >= 99,
        "{ok_in} of {attempts} new connections in succeeded: {info}"
    );
    exchange(&established).expect("the established connection survives the floods");
    assert!(
        d.from_network("dnat_new_flow").unwrap() >= 5_000,
        "the SYN flood got through to the table"
    );
    assert!(
        d.to_network("snat_new_flow").unwrap() >= 5_000,
        "the UDP flood got through to the table"
    );
    assert!(
        info["flow_table"]["unconfirmed"].as_u64().unwrap() > 0,
        "{info}"
    );
    assert!(
        info["flow_table"]["confirmed"].as_u64().unwrap() <= 1024,
        "{info}"
    );
}

#[test]
fn a_container_cannot_answer_its_neighbours_as_a_dhcp_server() {
    require_root();
    let sb = Sandbox::new("ad").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let c1 = d.run_idle_container("c1", &[]).unwrap();
    let c2 = d.run_idle_container("c2", &[]).unwrap();
    let on_c2 = Capture::start(&c2.netns, "eth0").unwrap();
    let me = mac_of(c1.ip);
    let mark = b"netd-attack-dhcp".as_slice();
    let offer = |sport: u16, dport: u16, to: Ipv4Addr, mac: [u8; 6]| {
        let udp = craft::udp(c1.ip, to, sport, dport, mark);
        craft::ipv4_frame(mac, me, &craft::ipv4(c1.ip, to, UDP, 1, 0, &udp))
    };
    let before = d.counter("EndpointIngress", "drop_dhcp_server").unwrap();
    let frames = vec![
        offer(67, 68, Ipv4Addr::BROADCAST, BROADCAST),
        offer(67, 68, c2.ip, mac_of(c2.ip)),
        offer(4000, 68, c2.ip, mac_of(c2.ip)),
    ];
    let sent = frames.len() as u64;
    let control_mark = b"netd-control-dhcp".as_slice();
    let control = {
        let udp = craft::udp(c1.ip, c2.ip, 4000, 4001, control_mark);
        craft::ipv4_frame(
            mac_of(c2.ip),
            me,
            &craft::ipv4(c1.ip, c2.ip, UDP, 2, 0, &udp),
        )
    };
    let mut all = frames;
    all.push(control);
    craft::send_frames(&c1.netns, "eth0", all).unwrap();
    let got = on_c2.settle();
    assert!(
        got.iter().any(|f| craft::carries(f, control_mark)),
        "the control frame did not reach c2: the capture is blind"
    );
    assert!(
        !got.iter().any(|f| craft::carries(f, mark)),
        "c2 got a DHCP server's message"
    );
    assert_eq!(
        d.counter("EndpointIngress", "drop_dhcp_server").unwrap(),
        before + sent
    );
}
