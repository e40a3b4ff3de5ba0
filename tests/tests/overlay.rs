//! Overlay networks across nodes, end to end: three nodes on an underlay, a three-member
//! etcd, a netd daemon per node. Containers on different nodes talk over their overlay
//! by address (TCP, UDP, ping, 20 KB across the overlay's MTU), never across overlays,
//! not even with frames forged on the underlay; an overlay container reaches the outside
//! masqueraded by its own node and is published there; conversations across nodes
//! survive the store going away and a daemon killed; a dead node's containers vanish
//! from the others with its lease; nothing is left behind.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netd_tests::{
    addr,
    cluster::{Cluster, member_addr, node_addr},
    cni,
    daemon::{Container, Daemon},
    echo::{EchoServer, HeldConnection, Proto, echo_fails, echo_once, in_netns},
    netns::require_root,
};

const TTL: u64 = 3;
/// For the test that kills and restarts a daemon: a lease that outlasts a slow start on
/// a busy 2-core machine (a restart longer than the lease drops the node's containers from
/// the others until it registers again).
const RESTART_TTL: u64 = 6;
const VXLAN_PORT: u16 = 4789;

/// An overlay made on node 1 and seen by all.
fn overlay(c: &Cluster, name: &str) -> Result<u32> {
    overlay_with(c, name, &[])
}

/// `overlay` with more flags for `network create`.
fn overlay_with(c: &Cluster, name: &str, flags: &[&str]) -> Result<u32> {
    let mut args = vec!["network", "create", "-d", "overlay"];
    args.extend(flags);
    args.push(name);
    c.daemons[0].cli_ok(&args)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    for d in &c.daemons {
        while !d.cli_ok(&["network", "ls"])?.contains(name) {
            if Instant::now() > deadline {
                bail!("overlay {name} not seen by every node");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&c.daemons[0].cli_ok(&["network", "inspect", name])?)?;
    Ok(inspect[0]["options"]["com.netd.vxlan.id"]
        .as_str()
        .context("no VXLAN ID")?
        .parse()?)
}

fn run_on(d: &Daemon, name: &str, network: &str, publish: &[&str]) -> Result<Container> {
    let mut args = vec!["run", "-d", "--name", name, "--network", network];
    for p in publish {
        args.extend(["-p", p]);
    }
    args.extend(["--", "sleep", "infinity"]);
    d.cli_ok(&args)?;
    d.container(name)
}

/// Until `f` holds, for at most `within`.
fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + within;
    while !f()? {
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn remote_entries(d: &Daemon) -> Result<u64> {
    map_entries(d, "remote_endpoints")
}

fn map_entries(d: &Daemon, map: &str) -> Result<u64> {
    Ok(d.info()?["map_entries"][map].as_u64().unwrap_or(u64::MAX))
}

/// `bytes` sent over TCP to an echo server and all of them read back.
fn transfer(netns: &Path, target: SocketAddr, bytes: usize) -> Result<()> {
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let mut writer = s.try_clone()?;
        let sent = data.clone();
        let w = std::thread::spawn(move || writer.write_all(&sent));
        let mut back = vec![0u8; bytes];
        s.read_exact(&mut back).context("read the echo")?;
        w.join().expect("writer").context("write")?;
        if back != data {
            bail!("the transfer came back changed");
        }
        Ok(())
    })
}

fn ping(
    netns: &Path,
    to: impl Into<IpAddr>,
    size: usize,
    dont_fragment: bool,
) -> Result<std::process::Output> {
    let size = size.to_string();
    let to = to.into().to_string();
    let mut args = vec![
        "--net=".to_string() + &netns.display().to_string(),
        "ping".into(),
    ];
    args.extend(["-c", "1", "-W", "2", "-s", &size].map(String::from));
    if dont_fragment {
        args.extend(["-M", "do"].map(String::from));
    }
    args.push(to);
    Ok(std::process::Command::new("nsenter").args(&args).output()?)
}

/// The MTU of both ends of a container's veth (a veth drops what exceeds its peer's MTU).
fn set_mtu(node: &netd_tests::netns::Netns, ct: &Container, mtu: u32) -> Result<()> {
    let mtu = mtu.to_string();
    let inside = format!("--net={}", ct.netns.display());
    node.exec(&["nsenter", &inside, "ip", "link", "set", "eth0", "mtu", &mtu])?;
    node.ip(&["link", "set", &ct.host_veth, "mtu", &mtu])?;
    Ok(())
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A VXLAN datagram's payload: header with `vni`, then an Ethernet frame carrying a UDP
/// datagram from `src` to `dst`:`port`, IPv4 (valid header checksum, no UDP checksum) or
/// IPv6 (its UDP checksum right, as IPv6 requires).
fn vxlan_frame(vni: u32, src: impl Into<IpAddr>, dst: impl Into<IpAddr>, port: u16) -> Vec<u8> {
    let payload = b"forged on the underlay";
    let mut udp = 40000u16.to_be_bytes().to_vec();
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let (ethertype, ip) = match (src.into(), dst.into()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            (0x0800u16, ip)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            inet6_checksum(src, dst, 17, &mut udp, 6);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            (0x86dd, ip)
        }
        _ => panic!("one family for both addresses"),
    };
    let mut f = vec![0x08, 0, 0, 0];
    f.extend_from_slice(&(vni << 8).to_be_bytes());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// Fill in the checksum at `at` of upper-layer message `msg` (protocol `proto`) from
/// `src` to `dst`, over IPv6's pseudo header.
fn inet6_checksum(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, msg: &mut [u8], at: usize) {
    let mut covered = src.octets().to_vec();
    covered.extend_from_slice(&dst.octets());
    covered.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    covered.extend_from_slice(&[0, 0, 0, proto]);
    msg[at..at + 2].fill(0);
    covered.extend_from_slice(msg);
    let c = checksum(&covered);
    msg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A VXLAN datagram's payload carrying a neighbour advertisement from `src` to `dst`
/// that claims `target` (the Override flag set, a target link-layer address option).
fn vxlan_advertisement(vni: u32, src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut na = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    na.extend_from_slice(&target.octets());
    na.extend_from_slice(&[2, 1, 0x02, 0, 0, 0, 0, 1]);
    inet6_checksum(src, dst, 58, &mut na, 2);
    let mut f = vec![0x08, 0, 0, 0];
    f.extend_from_slice(&(vni << 8).to_be_bytes());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(na.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&na);
    f
}

/// Send `frame` to `node`'s VXLAN port from the namespace at `netns`.
fn send_vxlan(netns: &Path, node: Ipv4Addr, frame: Vec<u8>) -> Result<()> {
    in_netns(netns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..3 {
            s.send_to(&frame, (node, VXLAN_PORT))?;
        }
        Ok(())
    })
}

#[test]
fn containers_on_different_nodes_talk_over_their_overlay_and_never_across_overlays() -> Result<()> {
    require_root();
    let mut c = Cluster::new("ov", 3)?;
    for i in 0..3 {
        c.start_daemon(i, TTL, &[])?;
    }
    let vni1 = overlay(&c, "ov1")?;
    let vni2 = overlay(&c, "ov2")?;
    let a = run_on(&c.daemons[0], "ca", "ov1", &[])?;
    let b = run_on(&c.daemons[1], "cb", "ov1", &["8080:80"])?;
    let c3 = run_on(&c.daemons[2], "cc", "ov1", &[])?;
    let x = run_on(&c.daemons[0], "cx", "ov2", &[])?;
    let y = run_on(&c.daemons[1], "cy", "ov2", &[])?;
    // Each node's addresses from its own block of the overlay's subnet.
    assert!(
        a.ip.octets()[..3] == [10, 0, 0] && a.ip.octets()[3] < 64,
        "{}",
        a.ip
    );
    assert!((64..128).contains(&b.ip.octets()[3]), "{}", b.ip);
    assert!((128..192).contains(&c3.ip.octets()[3]), "{}", c3.ip);
    // The overlay's MTU on the container's interface; the node's bridge has it too.
    let link = c.nodes[0].exec(&[
        "nsenter",
        &format!("--net={}", a.netns.display()),
        "ip",
        "link",
        "show",
        "eth0",
    ])?;
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("mtu 1450"),
        "{link:?}"
    );
    // Shown as the cluster's network, with this node's containers on it.
    let inspect: serde_json::Value =
        serde_json::from_str(&c.daemons[0].cli_ok(&["network", "inspect", "ov1"])?)?;
    let ov1 = &inspect[0];
    assert_eq!(
        (&ov1["driver"], &ov1["scope"]),
        (&"overlay".into(), &"global".into())
    );
    assert_eq!(ov1["mtu"], 1450);
    let here: Vec<&str> = ov1["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["container"].as_str())
        .collect();
    assert_eq!(here, ["ca"], "{ov1}");
    // Every node knows the others' containers within a second.
    for (i, d) in c.daemons.iter().enumerate() {
        let others = [3, 3, 4][i];
        wait_for("remote table filled", Duration::from_secs(1), || {
            Ok(remote_entries(d)? == others)
        })?;
    }

    // TCP, UDP and ping between nodes, both ways, addresses kept.
    let b_server = EchoServer::start(&b.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80))?;
    let _b_udp = EchoServer::start(&b.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53))?;
    let a_udp = EchoServer::start(&a.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53))?;
    echo_once(&a.netns, Proto::Tcp, addr(b.ip, 80))?;
    echo_once(&c3.netns, Proto::Tcp, addr(b.ip, 80))?;
    echo_once(&a.netns, Proto::Udp, addr(b.ip, 53))?;
    echo_once(&b.netns, Proto::Udp, addr(a.ip, 53))?;
    let seen: Vec<_> = b_server.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(
        seen,
        [a.ip, c3.ip],
        "no NAT between containers of an overlay"
    );
    for (from, to) in [(&a, c3.ip), (&c3, a.ip), (&b, a.ip)] {
        let out = ping(&from.netns, to, 56, false)?;
        assert!(out.status.success(), "ping {to}: {out:?}");
    }
    // 20 KB across the overlay's MTU (TCP segments sized for it), and a DF datagram just
    // at the MTU.
    transfer(&a.netns, addr(b.ip, 80), 20_000)?;
    assert!(ping(&a.netns, b.ip, 1450 - 28, true)?.status.success());
    // A container whose interface claims more than the overlay carries is told by its
    // gateway, as a router would: "fragmentation needed", never a silent loss.
    set_mtu(&c.nodes[0], &a, 1500)?;
    let big = ping(&a.netns, b.ip, 1472, true)?;
    let said =
        String::from_utf8_lossy(&big.stdout).to_string() + &String::from_utf8_lossy(&big.stderr);
    assert!(
        !big.status.success() && said.to_lowercase().contains("frag needed"),
        "{said}\n{}",
        c.daemons[0].cli_ok(&["stats"])?
    );
    assert!(c.daemons[0].counter("EndpointIngress", "stack_overlay_frag_needed")? > 0);
    set_mtu(&c.nodes[0], &a, 1450)?;
    assert!(c.daemons[0].counter("EndpointIngress", "overlay_sent")? > 0);
    assert!(c.daemons[1].counter("Overlay", "overlay_delivered")? > 0);

    // Overlays are isolated, on one node and across nodes.
    assert!(
        echo_fails(&x.netns, Proto::Udp, addr(a.ip, 53))?,
        "ov2 reached ov1 on its node"
    );
    assert!(
        echo_fails(&y.netns, Proto::Udp, addr(a.ip, 53))?,
        "ov2 reached ov1 across nodes"
    );
    assert!(
        echo_fails(&a.netns, Proto::Tcp, addr(y.ip, 80))?,
        "ov1 reached ov2"
    );
    // Frames forged on the underlay: another overlay's VNI, a source of another overlay,
    // a real source sent by a host that is not its node. None arrives; each is counted.
    let before = a_udp.peers().len();
    let n2 = c.nodes[1].path();
    let lan_host = c.members[0].ns.path();
    send_vxlan(&n2, node_addr(0), vxlan_frame(vni2, y.ip, a.ip, 53))?;
    send_vxlan(&n2, node_addr(0), vxlan_frame(vni1, y.ip, a.ip, 53))?;
    send_vxlan(&lan_host, node_addr(0), vxlan_frame(vni1, b.ip, a.ip, 53))?;
    send_vxlan(
        &lan_host,
        node_addr(0),
        vxlan_frame(vni1 + 1000, b.ip, a.ip, 53),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a_udp.peers().len(), before, "a forged frame was delivered");
    let n1 = &c.daemons[0];
    assert!(n1.counter("Overlay", "drop_overlay_wrong_vni")? >= 1);
    assert!(n1.counter("Overlay", "drop_overlay_foreign_source")? >= 2);
    assert!(n1.counter("Overlay", "drop_overlay_unknown_vni")? >= 1);

    // Outside: masqueraded by the container's own node; published on it.
    let lan = addr(member_addr(0), 9000);
    let outside = EchoServer::start(&lan_host, Proto::Tcp, lan)?;
    echo_once(&a.netns, Proto::Tcp, lan)?;
    echo_once(&b.netns, Proto::Tcp, lan)?;
    let seen: Vec<_> = outside.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(
        seen,
        [node_addr(0), node_addr(1)],
        "each masqueraded by its node"
    );
    echo_once(&lan_host, Proto::Tcp, addr(node_addr(1), 8080))?;
    assert_eq!(
        b_server.peers().last().map(|p| p.ip()),
        Some(member_addr(0).into()),
        "the published port keeps the client's address"
    );

    // A container that leaves is gone from every node at once; the last one of an overlay
    // on a node takes the overlay's bridge and blocks with it.
    c.daemons[2].cli_ok(&["rm", "-f", "cc"])?;
    wait_for("c3 forgotten", Duration::from_secs(1), || {
        Ok(remote_entries(&c.daemons[0])? == 2)
    })?;
    assert!(echo_fails(&a.netns, Proto::Udp, addr(c3.ip, 53))?);
    assert!(
        !c.nodes[2]
            .ip(&["link"])?
            .stdout
            .windows(6)
            .any(|w| w == b"ov4096")
    );
    // A static address, whichever node's block it lies in: n2's container takes the
    // address n1 would hand out next; n1 then refuses it to `--ip` and skips it itself,
    // and the container is reached there from n1.
    let (n1, n2) = (&c.daemons[0], &c.daemons[1]);
    let wanted = Ipv4Addr::new(10, 0, 0, 3);
    n2.cli_ok(&[
        "run",
        "-d",
        "--name",
        "pin",
        "--network",
        "ov1",
        "--ip",
        "10.0.0.3",
        "--",
        "sleep",
        "infinity",
    ])?;
    let pin = n2.container("pin")?;
    assert_eq!(pin.ip, wanted);
    wait_for("pin known to n1", Duration::from_secs(1), || {
        Ok(remote_entries(n1)? == 3)
    })?;
    let _pin_udp = EchoServer::start(&pin.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53))?;
    echo_once(&a.netns, Proto::Udp, addr(wanted, 53))?;
    for (ip, why) in [
        ("10.0.0.3", "in use"),
        ("10.0.0.1", "gateway"),
        ("10.0.9.9", "not a host address"),
        ("10.0.0", "IPv4 address"),
    ] {
        let out = n1.cli(&[
            "run",
            "-d",
            "--name",
            "dup",
            "--network",
            "ov1",
            "--ip",
            ip,
            "--",
            "sleep",
            "infinity",
        ])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "--ip {ip}: {err}"
        );
    }
    assert!(
        n1.container("dup").is_err(),
        "nothing left of a refused run"
    );
    let next = run_on(n1, "cd", "ov1", &[])?;
    assert_eq!(
        next.ip,
        Ipv4Addr::new(10, 0, 0, 4),
        "n2's static address skipped"
    );
    for (d, name) in [(1, "pin"), (0, "cd")] {
        c.daemons[d].cli_ok(&["rm", "-f", name])?;
    }

    // A runtime's containers through netd-cni (Podman, containerd, Kubernetes), on n1 and
    // on n3 (whose share of the overlay went with cc): they reach each other and netd's
    // containers across nodes; their DEL takes their records, and n3's share, with them.
    let pods = ["pod1", "pod3"]
        .into_iter()
        .map(|p| netd_tests::netns::Netns::new(&netd_tests::netns::unique_name(p)))
        .collect::<Result<Vec<_>>>()?;
    let cni_call = |i: usize, command: &str| -> Result<serde_json::Value> {
        let d = &c.daemons[[0, 2][i]];
        let path = pods[i].path();
        let call = cni::Call::new(command, &pods[i].name, Some(&path));
        cni::exec(d, &call, &cni::conf("1.0.0", "ov1", &d.socket))?.ok()
    };
    let mut pod_ips = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let ip = cni_call(i, "ADD")?["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
            .context("no address in the CNI result")?;
        pod_ips.push((pod.path(), ip));
    }
    assert!(
        pod_ips[0].1.octets()[3] < 64,
        "n1's block: {:?}",
        pod_ips[0]
    );
    assert!(
        pod_ips[1].1.octets()[3] >= 128,
        "n3's block: {:?}",
        pod_ips[1]
    );
    wait_for("pod3 known to n1", Duration::from_secs(1), || {
        Ok(remote_entries(n1)? == 3)
    })?;
    let _pod_udp = EchoServer::start(&pod_ips[1].0, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53))?;
    echo_once(&pod_ips[0].0, Proto::Udp, addr(pod_ips[1].1, 53))?;
    echo_once(&a.netns, Proto::Udp, addr(pod_ips[1].1, 53))?;
    echo_once(&pod_ips[1].0, Proto::Tcp, addr(b.ip, 80))?;
    for i in 0..2 {
        cni_call(i, "DEL")?;
    }
    wait_for("pod3 forgotten", Duration::from_secs(1), || {
        Ok(remote_entries(n1)? == 2)
    })?;
    assert!(
        !c.nodes[2]
            .ip(&["link"])?
            .stdout
            .windows(6)
            .any(|w| w == b"ov4096"),
        "n3's share of the overlay went with its last attachment"
    );

    for (d, name) in [(0, "ca"), (1, "cb"), (0, "cx"), (1, "cy")] {
        c.daemons[d].cli_ok(&["rm", "-f", name])?;
    }
    for name in ["ov1", "ov2"] {
        c.daemons[2].cli_ok(&["network", "rm", name])?;
    }
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netd/v1/"])?;
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.lines()
            .filter(|k| !k.is_empty())
            .all(|k| k.contains("/nodes/") || k.contains("/alive/")),
        "{keys}"
    );
    for d in &c.daemons {
        wait_for("remote tables empty", Duration::from_secs(1), || {
            let e = &d.info()?["map_entries"];
            Ok(e["remote_endpoints"] == 0 && e["overlays"] == 0)
        })?;
    }
    Ok(())
}

#[test]
fn conversations_across_nodes_outlive_the_store_and_a_killed_daemon_and_a_dead_nodes_containers_vanish()
-> Result<()> {
    require_root();
    let mut c = Cluster::new("of", 3)?;
    for i in 0..3 {
        c.start_daemon(i, RESTART_TTL, &[])?;
    }
    overlay(&c, "ov1")?;
    let a = run_on(&c.daemons[0], "ca", "ov1", &[])?;
    let b = run_on(&c.daemons[1], "cb", "ov1", &[])?;
    let cc = run_on(&c.daemons[2], "cc", "ov1", &[])?;
    let _b_server = EchoServer::start(&b.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80))?;
    let _c_server = EchoServer::start(&cc.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53))?;
    wait_for("n1 knows cb and cc", Duration::from_secs(1), || {
        Ok(remote_entries(&c.daemons[0])? == 2)
    })?;
    let mut held = HeldConnection::open(&a.netns, addr(b.ip, 80))?;

    // One etcd member killed: nothing changes.
    c.members[0].stop(libc::SIGKILL)?;
    held.exchange()?;
    echo_once(&a.netns, Proto::Udp, addr(cc.ip, 53))?;
    c.members[0].restart()?;

    // The whole store gone: the conversation goes on from the pinned tables, new
    // containers on the overlay and new overlays are refused naming the store.
    for m in &mut c.members {
        m.stop(libc::SIGTERM)?;
    }
    held.exchange()?;
    echo_once(&a.netns, Proto::Udp, addr(cc.ip, 53))?;
    for args in [
        vec!["network", "create", "-d", "overlay", "z"],
        vec!["run", "-d", "--network", "ov1", "--", "sleep", "60"],
    ] {
        let out = c.daemons[0].cli(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("cluster store etcd://10.98.0.11:2379"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(
            &c.daemons[0].cli_ok(&["ps", "-a", "--format", "json"])?
        )?
        .len(),
        1,
        "the refused run left no container"
    );
    for m in &mut c.members {
        m.restart()?;
    }
    // (The echo server hangs up on a client quiet for 3 s: the waits keep talking.)
    wait_for("etcd healthy", Duration::from_secs(30), || {
        held.exchange()?;
        let health = c.etcdctl(&["endpoint", "health", "--command-timeout=1s"])?;
        Ok(health.status.success())
    })?;
    wait_for(
        "the store takes changes again",
        Duration::from_secs(15),
        || {
            held.exchange()?;
            Ok(c.daemons[1]
                .cli(&["network", "create", "-d", "overlay", "z"])?
                .status
                .success())
        },
    )?;

    // A daemon SIGKILLed, then started again: the conversation never notices.
    c.daemons[0].stop(libc::SIGKILL)?;
    held.exchange()?;
    c.daemons[0].restart()?;
    held.exchange()?;
    echo_once(&a.netns, Proto::Udp, addr(cc.ip, 53))?;
    assert_eq!(remote_entries(&c.daemons[0])?, 2);

    // A node dies (its daemon killed, its link cut): once its lease lapses, the other
    // nodes drop its containers.
    c.daemons[2].stop(libc::SIGKILL)?;
    c.nodes[2].ip(&["link", "set", "eth0", "down"])?;
    wait_for(
        "n3's container forgotten",
        Duration::from_secs(RESTART_TTL + 5),
        || {
            held.exchange()?;
            Ok(remote_entries(&c.daemons[0])? == 1 && remote_entries(&c.daemons[1])? == 1)
        },
    )?;
    let keys = c.etcdctl(&["get", "--prefix", "--keys-only", "/netd/v1/endpoints/"])?;
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(!keys.contains(&cc.ip.to_string()), "{keys}");
    if let Err(e) = held.exchange() {
        let all = c.etcdctl(&["get", "--prefix", "/netd/v1/"])?;
        panic!(
            "{e:#}: {} / {}\n{}\n{}\n{}",
            remote_entries(&c.daemons[0])?,
            remote_entries(&c.daemons[1])?,
            String::from_utf8_lossy(&all.stdout),
            c.daemons[0].log(),
            c.daemons[1].cli_ok(&["stats"])?
        );
    }
    Ok(())
}

/// The IPv6 address of a container of an overlay with IPv6.
fn ip6(ct: &Container) -> Result<Ipv6Addr> {
    ct.ip6.context("the container has no IPv6 address")
}

#[test]
fn containers_on_different_nodes_talk_over_ipv6_on_their_overlay_and_never_across_overlays()
-> Result<()> {
    require_root();
    let mut c = Cluster::new("ov6", 2)?;
    for i in 0..2 {
        c.start_daemon(i, TTL, &[])?;
    }
    let vni6 = overlay_with(&c, "ov6", &["--ipv6"])?;
    let vni7 = overlay_with(
        &c,
        "ov7",
        &[
            "--ipv6",
            "--subnet",
            "10.77.0.0/24",
            "--subnet",
            "fd00:77::/64",
        ],
    )?;
    // Shown with both families; the IPv6 subnet chosen is a ULA /64.
    let inspect: serde_json::Value =
        serde_json::from_str(&c.daemons[1].cli_ok(&["network", "inspect", "ov6"])?)?;
    assert_eq!(inspect[0]["EnableIPv6"], true, "{inspect}");
    let text = inspect.to_string();
    assert!(text.contains("\"fd") && text.contains("::/64"), "{text}");

    let a = run_on(&c.daemons[0], "ca", "ov6", &[])?;
    let b = run_on(&c.daemons[1], "cb", "ov6", &[])?;
    let x = run_on(&c.daemons[0], "cx", "ov7", &[])?;
    let y = run_on(&c.daemons[1], "cy", "ov7", &[])?;
    let (a6, b6, y6) = (ip6(&a)?, ip6(&b)?, ip6(&y)?);
    // A container's IPv6 address is its IPv4 address's place in the IPv6 subnet.
    assert_eq!(
        y6,
        Ipv6Addr::from(0xfd00_0077_u128 << 96 | u128::from(y.ip.octets()[3])),
        "{y6} for {}",
        y.ip
    );
    assert_eq!(ip6(&x)?.segments()[..4], [0xfd00, 0x77, 0, 0]);
    // Every node knows the other's containers by both addresses.
    for d in &c.daemons {
        wait_for("remote tables filled", Duration::from_secs(2), || {
            Ok(remote_entries(d)? == 2 && map_entries(d, "remote_endpoints6")? == 2)
        })?;
    }
    // `--ip6` stands for the IPv4 address whose place it is; nothing else is taken.
    let run6 = |extra: &[&str]| {
        let mut args = vec!["run", "-d", "--name", "cz", "--network", "ov7"];
        args.extend_from_slice(extra);
        args.extend(["--", "sleep", "infinity"]);
        c.daemons[0].cli(&args)
    };
    for (extra, why) in [
        (
            &["--ip6", "fd00:77::1:0"][..],
            "no address of 10.77.0.0/24 has this one",
        ),
        (
            &["--ip", "10.77.0.5", "--ip6", "fd00:77::99"][..],
            "it is the place of IPv4 address 10.77.0.153 on overlay ov7, and --ip 10.77.0.5 was given",
        ),
    ] {
        let refused = run6(extra)?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(why),
            "{extra:?}: {stderr}"
        );
    }
    let out = run6(&["--ip6", "fd00:77::99"])?;
    assert!(out.status.success(), "{out:?}");
    let z = c.daemons[0].container("cz")?;
    assert_eq!(z.ip, Ipv4Addr::new(10, 77, 0, 153));
    assert_eq!(ip6(&z)?, "fd00:77::99".parse::<Ipv6Addr>()?);
    c.daemons[0].cli_ok(&["rm", "-f", "cz"])?;
    for d in &c.daemons {
        wait_for("remote tables back", Duration::from_secs(2), || {
            Ok(remote_entries(d)? == 2 && map_entries(d, "remote_endpoints6")? == 2)
        })?;
    }

    // TCP and UDP between nodes over IPv6, both ways, addresses kept; ping; 20 KB across
    // the overlay's MTU.
    let b_server = EchoServer::start(&b.netns, Proto::Tcp, addr(Ipv6Addr::UNSPECIFIED, 80))?;
    let _b_udp = EchoServer::start(&b.netns, Proto::Udp, addr(Ipv6Addr::UNSPECIFIED, 53))?;
    let a_udp = EchoServer::start(&a.netns, Proto::Udp, addr(Ipv6Addr::UNSPECIFIED, 53))?;
    echo_once(&a.netns, Proto::Tcp, addr(b6, 80))?;
    echo_once(&a.netns, Proto::Udp, addr(b6, 53))?;
    echo_once(&b.netns, Proto::Udp, addr(a6, 53))?;
    let seen: Vec<_> = b_server.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(
        seen,
        [IpAddr::from(a6)],
        "no NAT between containers of an overlay"
    );
    for (from, to) in [(&a, b6), (&b, a6)] {
        let out = ping(&from.netns, to, 56, false)?;
        assert!(out.status.success(), "ping {to}: {out:?}");
    }
    transfer(&a.netns, addr(b6, 80), 20_000)?;
    // The container learnt the other node's container at its gateway's MAC, from netd's
    // answer: no neighbour discovery crossed.
    assert!(c.daemons[0].counter("EndpointIngress", "neighbor_answered")? > 0);
    assert!(c.daemons[0].counter("EndpointIngress", "overlay_sent")? > 0);
    assert!(c.daemons[1].counter("Overlay", "overlay_delivered")? > 0);
    assert_eq!(
        c.daemons[1].counter("Overlay", "drop_overlay_neighbor_discovery")?,
        0
    );

    // Overlays are isolated over IPv6 too, on one node and across nodes.
    assert!(
        echo_fails(&x.netns, Proto::Udp, addr(a6, 53))?,
        "ov7 reached ov6 on its node"
    );
    assert!(
        echo_fails(&y.netns, Proto::Udp, addr(a6, 53))?,
        "ov7 reached ov6 across nodes"
    );
    assert!(
        echo_fails(&a.netns, Proto::Udp, addr(y6, 53))?,
        "ov6 reached ov7"
    );
    assert_eq!(a_udp.peers().len(), 1, "only b's datagram reached a");

    // IPv6 forged on the underlay: from ov7's container under either VNI, a real
    // container's source from a LAN host that is not its node, a neighbour advertisement
    // claiming a's gateway from b's own node under the right VNI. None arrives; each is
    // counted.
    let n2 = c.nodes[1].path();
    let lan_host = c.members[0].ns.path();
    let gateway6 = Ipv6Addr::from(u128::from(a6) & !0xffff_ffff_ffff_ffff | 1);
    send_vxlan(&n2, node_addr(0), vxlan_frame(vni7, y6, a6, 53))?;
    send_vxlan(&n2, node_addr(0), vxlan_frame(vni6, y6, a6, 53))?;
    send_vxlan(&lan_host, node_addr(0), vxlan_frame(vni6, b6, a6, 53))?;
    send_vxlan(
        &n2,
        node_addr(0),
        vxlan_advertisement(vni6, b6, a6, gateway6),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a_udp.peers().len(), 1, "a forged IPv6 frame was delivered");
    let n1 = &c.daemons[0];
    assert!(n1.counter("Overlay", "drop_overlay_wrong_vni")? >= 1);
    assert!(n1.counter("Overlay", "drop_overlay_foreign_source")? >= 2);
    assert!(n1.counter("Overlay", "drop_overlay_neighbor_discovery")? >= 1);
    // a still reaches b, its gateway's MAC unchanged by the forged advertisement.
    echo_once(&a.netns, Proto::Udp, addr(b6, 53))?;

    for (i, name) in [(0, "ca"), (1, "cb"), (0, "cx"), (1, "cy")] {
        c.daemons[i].cli_ok(&["rm", "-f", name])?;
    }
    for d in &c.daemons {
        wait_for("remote tables emptied", Duration::from_secs(2), || {
            Ok(map_entries(d, "remote_endpoints6")? == 0)
        })?;
    }
    Ok(())
}
