//! The macvlan driver on a simulated LAN (`netd_tests::lan`): containers on the LAN at
//! their own addresses and MACs, in each of the kernel's modes, IPv6 beside IPv4 (no
//! address another LAN host holds handed out, of either family), the internal network
//! with no parent, the node's shim, the refusals (each with its message and nothing
//! changed), restart continuity and create/remove cycles that leave nothing behind.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::Output,
};

use netd_tests::{
    Daemon, EchoServer, HeldConnection, Proto, Sandbox, addr, echo_once, lan::Lan, require_root,
};

struct Bed {
    netd: Daemon,
    lan: Lan,
    sb: Sandbox,
}

impl Bed {
    fn new(prefix: &str) -> Bed {
        require_root();
        let sb = Sandbox::new(prefix).unwrap();
        let lan = Lan::new(&sb).unwrap();
        let netd = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
        Bed { netd, lan, sb }
    }

    /// `netd network create -d macvlan` on the LAN with `more` flags.
    fn create(&self, name: &str, more: &[&str]) {
        let mut args = vec![
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            Lan::SUBNET,
            "--gateway",
            "192.168.77.1",
            "--ip-range",
            "192.168.77.128/25",
        ];
        args.extend_from_slice(more);
        args.push(name);
        self.netd.cli_ok(&args).unwrap();
    }

    fn run(&self, name: &str, network: &str) -> netd_tests::daemon::Container {
        self.netd
            .cli_ok(&[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                network,
                "--",
                "sleep",
                "infinity",
            ])
            .unwrap();
        self.netd.container(name).unwrap()
    }

    /// The error of `netd run FLAG IP` (`--ip`, `--ip6`) on `network`, which must fail.
    fn run_refused(&self, network: &str, flag: &str, ip: &str) -> String {
        let out = self
            .netd
            .cli(&[
                "run",
                "-d",
                "--name",
                "thief",
                "--network",
                network,
                flag,
                ip,
                "--",
                "sleep",
                "1",
            ])
            .unwrap();
        assert!(!out.status.success(), "{flag} {ip} on {network} was taken");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `netd rm -f` the containers, then `netd network rm` the network.
    fn remove(&self, containers: &[&str], network: &str) {
        let mut rm = vec!["rm", "-f"];
        rm.extend_from_slice(containers);
        self.netd.cli_ok(&rm).unwrap();
        self.netd.cli_ok(&["network", "rm", network]).unwrap();
    }

    fn node_links(&self) -> Vec<String> {
        netd_tests::cni::node_links(&self.sb.node)
    }
}

/// A command inside the namespace at `ns`.
fn inside(ns: &Path, args: &[&str]) -> Output {
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .unwrap()
}

fn pings(ns: &Path, to: impl Into<IpAddr>) -> bool {
    inside(ns, &["ping", "-c", "1", "-W", "1", &to.into().to_string()])
        .status
        .success()
}

/// Whether `to` answers a ping from `ns` within a few attempts: for a path that has just
/// changed (a switch port set to reflect), where the sender's first address resolution
/// may still be failing.
fn pings_soon(ns: &Path, to: Ipv4Addr) -> bool {
    (0..5).any(|_| pings(ns, to))
}

/// netd's (Docker's) MAC for a container's address.
fn scheme_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn lan_pings(lan: &Lan, to: impl Into<IpAddr>) -> bool {
    pings(&lan.host.path(), to)
}

#[test]
fn macvlan_containers_are_on_the_lan_at_their_own_addresses_and_macs() {
    let bed = Bed::new("mvl");
    let links_before = bed.node_links();
    bed.create("lan", &["-o", "parent=lan0"]);
    let ls = bed.netd.cli_ok(&["network", "ls"]).unwrap();
    let row = ls
        .lines()
        .find(|l| l.contains(" lan "))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("macvlan"), "{ls}");
    let inspect = bed.netd.cli_ok(&["network", "inspect", "lan"]).unwrap();
    assert!(inspect.contains("\"parent\": \"lan0\""), "{inspect}");

    let c1 = bed.run("c1", "lan");
    let c2 = bed.run("c2", "lan");
    assert_eq!(c1.ip, Ipv4Addr::new(192, 168, 77, 128));
    // The LAN host reaches each at its own address and learns netd's MAC for it.
    for c in [&c1, &c2] {
        assert!(lan_pings(&bed.lan, c.ip), "{}", c.ip);
        assert_eq!(bed.lan.host_neighbour(c.ip).unwrap(), scheme_mac(c.ip));
    }
    // TCP from the LAN, with the LAN host's own address seen.
    let server = EchoServer::start(&c1.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(&bed.lan.host.path(), Proto::Tcp, addr(c1.ip, 80)).unwrap();
    assert_eq!(server.peers()[0].ip(), Lan::HOST);
    let udp = EchoServer::start(&c1.netns, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
    echo_once(&bed.lan.host.path(), Proto::Udp, addr(c1.ip, 53)).unwrap();
    assert_eq!(udp.peers()[0].ip(), Lan::HOST);
    // The router through the default route; the sibling in bridge mode.
    let routes = String::from_utf8_lossy(&inside(&c1.netns, &["ip", "route"]).stdout).into_owned();
    assert!(routes.contains("default via 192.168.77.1"), "{routes}");
    assert!(pings(&c1.netns, Lan::ROUTER));
    assert!(pings(&c1.netns, c2.ip));
    drop(server);

    bed.remove(&["c1", "c2"], "lan");
    assert_eq!(bed.node_links(), links_before);
}

#[test]
fn each_macvlan_mode_does_what_the_kernel_says() {
    let bed = Bed::new("mvm");
    // private: reachable from the LAN, never from a sibling.
    bed.create("priv", &["-o", "parent=lan0", "-o", "macvlan_mode=private"]);
    let a = bed.run("ca", "priv");
    let b = bed.run("cb", "priv");
    assert!(lan_pings(&bed.lan, a.ip) && lan_pings(&bed.lan, b.ip));
    assert!(!pings(&a.netns, b.ip), "private mode let siblings talk");
    bed.remove(&["ca", "cb"], "priv");

    // vepa: siblings talk only through a switch that reflects frames.
    bed.create("vepa", &["-o", "parent=lan0", "-o", "macvlan_mode=vepa"]);
    let a = bed.run("ca", "vepa");
    let b = bed.run("cb", "vepa");
    assert!(lan_pings(&bed.lan, a.ip));
    assert!(!pings(&a.netns, b.ip), "vepa without a reflecting switch");
    bed.lan.hairpin_node_port().unwrap();
    assert!(
        pings_soon(&a.netns, b.ip),
        "vepa through a reflecting switch"
    );
    bed.remove(&["ca", "cb"], "vepa");

    // passthru: one container takes the parent over.
    bed.create(
        "pass",
        &["-o", "parent=lan0", "-o", "macvlan_mode=passthru"],
    );
    let a = bed.run("ca", "pass");
    assert!(lan_pings(&bed.lan, a.ip));
    bed.remove(&["ca"], "pass");
}

/// `--ipv6 --subnet fd00:77::/64` on the LAN: containers' IPv6 from the range.
const IPV6_FLAGS: [&str; 7] = [
    "--ipv6",
    "--subnet",
    Lan::SUBNET6,
    "--gateway",
    "fd00:77::1",
    "--ip-range",
    "fd00:77::100/120",
];

#[test]
fn macvlan_containers_have_ipv6_on_the_lan_and_never_take_a_lan_hosts_address() {
    let mut bed = Bed::new("mv6");
    bed.lan.add_ipv6().unwrap();
    // A laptop holds the range's first address (configured by hand, or by SLAAC from a
    // prefix that overlaps it).
    bed.lan.host_takes("fd00:77::100/64").unwrap();
    let laptop: IpAddr = "fd00:77::100".parse().unwrap();
    let links_before = bed.node_links();
    let mut flags = vec!["-o", "parent=lan0"];
    flags.extend(IPV6_FLAGS);
    bed.create("lan6", &flags);
    let inspect = bed.netd.cli_ok(&["network", "inspect", "lan6"]).unwrap();
    assert!(inspect.contains("fd00:77::/64"), "{inspect}");

    let c1 = bed.run("c1", "lan6");
    let c2 = bed.run("c2", "lan6");
    let ip6 = c1.ip6.expect("an IPv6 address on a network with --ipv6");
    assert_eq!(ip6, "fd00:77::101".parse::<Ipv6Addr>().unwrap());
    assert!(
        bed.netd.log().contains("fd00:77::100 is in use on the LAN"),
        "{}",
        bed.netd.log()
    );
    let err = bed.run_refused("lan6", "--ip6", "fd00:77::100");
    assert!(
        err.contains("invalid --ip6 fd00:77::100: Address already in use on the LAN of lan0"),
        "{err}"
    );
    assert!(pings(&bed.lan.router.path(), laptop), "the laptop keeps it");

    // The LAN host reaches it at that address and learns netd's MAC for it; TCP and UDP
    // with the host's own address seen.
    assert!(lan_pings(&bed.lan, ip6));
    assert_eq!(bed.lan.host_neighbour(ip6).unwrap(), scheme_mac(c1.ip));
    let server = EchoServer::start(&c1.netns, Proto::Tcp, addr(Ipv6Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(&bed.lan.host.path(), Proto::Tcp, addr(ip6, 80)).unwrap();
    let host = [IpAddr::V6(Lan::HOST6), laptop];
    assert!(
        host.contains(&server.peers()[0].ip()),
        "{:?}",
        server.peers()
    );
    let udp = EchoServer::start(&c1.netns, Proto::Udp, addr(Ipv6Addr::UNSPECIFIED, 53)).unwrap();
    echo_once(&bed.lan.host.path(), Proto::Udp, addr(ip6, 53)).unwrap();
    assert!(host.contains(&udp.peers()[0].ip()), "{:?}", udp.peers());
    // Out: the router through the IPv6 default route, the LAN host, the sibling.
    let routes =
        String::from_utf8_lossy(&inside(&c1.netns, &["ip", "-6", "route"]).stdout).into_owned();
    assert!(routes.contains("default via fd00:77::1"), "{routes}");
    assert!(pings(&c1.netns, Lan::ROUTER6));
    let lan_server = EchoServer::start(
        &bed.lan.host.path(),
        Proto::Tcp,
        addr(Ipv6Addr::UNSPECIFIED, 81),
    )
    .unwrap();
    echo_once(&c1.netns, Proto::Tcp, addr(Lan::HOST6, 81)).unwrap();
    assert_eq!(lan_server.peers()[0].ip(), IpAddr::V6(ip6));
    assert!(pings(&c1.netns, c2.ip6.unwrap()));
    // A static address that no one holds.
    bed.netd
        .cli_ok(&[
            "run",
            "-d",
            "--name",
            "c3",
            "--network",
            "lan6",
            "--ip6",
            "fd00:77::1ff",
            "--",
            "sleep",
            "infinity",
        ])
        .unwrap();
    let c3 = bed.netd.container("c3").unwrap();
    assert_eq!(c3.ip6, Some("fd00:77::1ff".parse().unwrap()));
    assert!(lan_pings(&bed.lan, c3.ip6.unwrap()));

    // A restart leaves its IPv6 as it was: a held connection goes on.
    let mut held = HeldConnection::open(&bed.lan.host.path(), addr(ip6, 80)).unwrap();
    bed.netd.stop(libc::SIGKILL).unwrap();
    held.exchange().unwrap();
    bed.netd.restart().unwrap();
    held.exchange().unwrap();
    drop((held, server, udp, lan_server));

    bed.remove(&["c1", "c2", "c3"], "lan6");
    assert_eq!(bed.node_links(), links_before);
}

#[test]
fn a_macvlan_network_without_parent_is_internal_to_its_containers() {
    let bed = Bed::new("mvi");
    let links_before = bed.node_links();
    bed.netd
        .cli_ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "10.98.0.0/24",
            "--ipv6",
            "--subnet",
            "fd00:98::/64",
            "inner",
        ])
        .unwrap();
    let inspect = bed.netd.cli_ok(&["network", "inspect", "inner"]).unwrap();
    assert!(inspect.contains("\"internal\": true"), "{inspect}");
    let a = bed.run("ca", "inner");
    let b = bed.run("cb", "inner");
    assert!(pings(&a.netns, b.ip));
    assert!(pings(&a.netns, b.ip6.expect("IPv6 from --ipv6")));
    for family in ["-4", "-6"] {
        let routes = inside(&a.netns, &["ip", family, "route"]).stdout;
        let routes = String::from_utf8_lossy(&routes).into_owned();
        assert!(!routes.contains("default"), "{routes}");
    }
    assert!(!lan_pings(&bed.lan, a.ip));
    bed.remove(&["ca", "cb"], "inner");
    assert_eq!(bed.node_links(), links_before);
}

#[test]
fn refusals_name_what_is_wrong_and_change_nothing() {
    let bed = Bed::new("mvr");
    bed.create("lan", &["-o", "parent=lan0"]);
    let networks = bed.netd.cli_ok(&["network", "ls"]).unwrap();
    let links = bed.node_links();
    let refused = |args: &[&str], expected: &str| {
        let out = bed.netd.cli(args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(
            bed.netd.cli_ok(&["network", "ls"]).unwrap(),
            networks,
            "{args:?}"
        );
        assert_eq!(bed.node_links(), links, "{args:?}");
    };
    let create = |more: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "10.97.0.0/24",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(more.iter().map(|s| s.to_string()));
        a.push("other".into());
        a
    };
    for (more, expected) in [
        (
            &["-o", "parent=lan0"][..],
            "network lan is already using parent interface lan0",
        ),
        (
            &["-o", "parent=lan0", "-o", "macvlan_mode=bridged"],
            "invalid option macvlan_mode=bridged",
        ),
        (
            &["-o", "parent=nosuch0"],
            "no interface nosuch0 on the node",
        ),
        (
            &["-o", "parent=uplink0.50"],
            "this kernel has no 802.1Q VLAN links (CONFIG_VLAN_8021Q)",
        ),
        (
            &["-o", "com.netd.macvlan.host_access=true"],
            "without a parent is internal",
        ),
        (
            &["-o", "com.netd.bridge.name=brx", "-o", "parent=uplink0"],
            "not an option of the macvlan driver",
        ),
        (
            &["-o", "parent=uplink0", "-o", "macvlan_mode=passthru"],
            "parent uplink0 is netd's uplink",
        ),
        (&["-o", "parent=lo"], "not a LAN interface"),
    ] {
        let args = create(more);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, expected);
    }
    refused(
        &[
            "network",
            "create",
            "-d",
            "ipvlan",
            "-o",
            "parent=uplink0",
            "iv",
        ],
        "this kernel has no ipvlan links (CONFIG_IPVLAN)",
    );
    refused(
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "lan",
            "-p",
            "8080:80",
            "--",
            "sleep",
            "1",
        ],
        "cannot publish ports on macvlan network lan",
    );
    assert!(bed.netd.cli_ok(&["ps", "-a"]).unwrap().lines().count() <= 1);
}

#[test]
fn macvlan_containers_survive_a_netd_restart_and_cycles_leave_nothing() {
    let mut bed = Bed::new("mvs");
    let links_before = bed.node_links();
    bed.create("lan", &["-o", "parent=lan0"]);
    let c = bed.run("web", "lan");
    let _server = EchoServer::start(&c.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let mut held = HeldConnection::open(&bed.lan.host.path(), addr(c.ip, 80)).unwrap();
    bed.netd.stop(libc::SIGKILL).unwrap();
    held.exchange().unwrap();
    bed.netd.restart().unwrap();
    held.exchange().unwrap();
    drop(held);

    // Its interface deleted while netd is down: the next start makes it again, same
    // address and MAC.
    bed.netd.stop(libc::SIGKILL).unwrap();
    let mac_before = scheme_mac(c.ip);
    assert!(
        inside(&c.netns, &["ip", "link", "del", "eth0"])
            .status
            .success()
    );
    bed.netd.restart().unwrap();
    let link = String::from_utf8_lossy(&inside(&c.netns, &["ip", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(link.contains(&mac_before), "{link} vs {mac_before}");
    assert!(lan_pings(&bed.lan, c.ip));
    bed.netd.cli_ok(&["rm", "-f", "web"]).unwrap();

    // On the LAN each start waits for the address probe (300 ms): fewer cycles there;
    // the thousand on a network without parent, whose links are made and removed the
    // same way.
    bed.netd
        .cli_ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "10.96.0.0/16",
            "inner",
        ])
        .unwrap();
    for (network, cycles) in [("lan", LAN_CYCLES), ("inner", CYCLES)] {
        for i in 0..cycles {
            let name = format!("cyc{i}");
            bed.netd
                .cli_ok(&[
                    "create",
                    "--name",
                    &name,
                    "--network",
                    network,
                    "--",
                    "true",
                ])
                .unwrap();
            bed.netd.cli_ok(&["rm", "-f", &name]).unwrap();
        }
    }
    bed.netd.cli_ok(&["network", "rm", "lan", "inner"]).unwrap();
    assert_eq!(bed.node_links(), links_before);
    let addresses = bed.sb.node.ip(&["-o", "-4", "addr", "show"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&addresses.stdout).contains("10.96."),
        "an address of the network is left on the node"
    );
    assert!(bed.netd.cli_ok(&["ps", "-a"]).unwrap().lines().count() <= 1);
}

/// Create/remove cycles of the last test (two CLI calls each).
const CYCLES: usize = 1000;
/// The same on the LAN, where each start probes its address first.
const LAN_CYCLES: usize = 50;

#[test]
fn an_address_another_lan_host_answers_for_or_an_aux_address_is_never_handed_out() {
    // A laptop got 192.168.77.128 from the LAN's DHCP server: the first address of the
    // network's range.
    let bed = Bed::new("mvp");
    bed.lan
        .host
        .ip(&["addr", "add", "192.168.77.128/24", "dev", "eth0"])
        .unwrap();
    // A printer with a static address, declared to netd as Docker users do.
    bed.create(
        "lan",
        &[
            "-o",
            "parent=lan0",
            "--aux-address",
            "printer=192.168.77.129",
        ],
    );
    let inspect = bed.netd.cli_ok(&["network", "inspect", "lan"]).unwrap();
    assert!(
        inspect.contains("\"printer\": \"192.168.77.129\""),
        "{inspect}"
    );
    let c = bed.run("web", "lan");
    assert_eq!(c.ip, Ipv4Addr::new(192, 168, 77, 130), "{}", bed.netd.log());
    assert!(
        bed.netd
            .log()
            .contains("192.168.77.128 is in use on the LAN"),
        "{}",
        bed.netd.log()
    );
    let err = bed.run_refused("lan", "--ip", "192.168.77.128");
    assert!(
        err.contains("192.168.77.128: Address already in use on the LAN of lan0"),
        "{err}"
    );
    // The laptop keeps its address: its neighbours still reach it, not a container.
    assert!(pings(
        &bed.lan.router.path(),
        Ipv4Addr::new(192, 168, 77, 128)
    ));
    bed.netd.cli_ok(&["rm", "-f", "web"]).unwrap();
}

#[test]
fn the_node_reaches_its_macvlan_containers_only_through_the_shim_it_asks_for() {
    let mut bed = Bed::new("mvh");
    bed.lan.add_ipv6().unwrap();
    // The node is on the LAN itself, as a real host is, with both families.
    bed.sb
        .node
        .ip(&["addr", "add", "192.168.77.2/24", "dev", "lan0"])
        .unwrap();
    bed.sb
        .node
        .ip(&["-6", "addr", "add", "fd00:77::2/64", "dev", "lan0", "nodad"])
        .unwrap();
    let links_before = bed.node_links();
    bed.create("plain", &["-o", "parent=lan0"]);
    let c = bed.run("ca", "plain");
    assert!(lan_pings(&bed.lan, c.ip));
    assert!(
        !pings(&bed.sb.node.path(), c.ip),
        "the kernel passes no frame between a parent and its macvlans"
    );
    bed.remove(&["ca"], "plain");

    let mut flags = vec![
        "-o",
        "parent=lan0",
        "-o",
        "com.netd.macvlan.host_access=true",
    ];
    flags.extend(IPV6_FLAGS);
    bed.create("shared", &flags);
    let inspect = bed.netd.cli_ok(&["network", "inspect", "shared"]).unwrap();
    assert!(inspect.contains("\"shim\""), "{inspect}");
    // The node's own address on the LAN is never a container's.
    let err = bed.run_refused("shared", "--ip", "192.168.77.2");
    assert!(err.contains("it is the node's own address"), "{err}");
    let err = bed.run_refused("shared", "--ip6", "fd00:77::2");
    assert!(err.contains("it is the node's own address"), "{err}");
    let c = bed.run("ca", "shared");
    // The shim took the ranges' first addresses; the container the next.
    assert_eq!(c.ip, Ipv4Addr::new(192, 168, 77, 129));
    let ip6 = c.ip6.unwrap();
    assert_eq!(ip6, "fd00:77::101".parse::<Ipv6Addr>().unwrap());
    let server = EchoServer::start(&c.netns, Proto::Tcp, addr(Ipv6Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(&bed.sb.node.path(), Proto::Tcp, addr(c.ip, 80)).unwrap();
    echo_once(&bed.sb.node.path(), Proto::Tcp, addr(ip6, 80)).unwrap();
    let shim6: IpAddr = "fd00:77::100".parse().unwrap();
    assert_eq!(
        server
            .peers()
            .iter()
            .map(|p| p.ip().to_canonical())
            .collect::<Vec<_>>(),
        [IpAddr::V4(Ipv4Addr::new(192, 168, 77, 128)), shim6]
    );
    assert!(lan_pings(&bed.lan, c.ip), "the LAN still reaches it");
    assert!(
        lan_pings(&bed.lan, ip6),
        "the LAN still reaches it over IPv6"
    );

    // The node's route to it is rebuilt by the next start if it went.
    bed.netd.stop(libc::SIGKILL).unwrap();
    bed.sb
        .node
        .ip(&["route", "del", &format!("{}/32", c.ip)])
        .unwrap();
    bed.sb
        .node
        .ip(&["-6", "route", "del", &format!("{ip6}/128")])
        .unwrap();
    bed.netd.restart().unwrap();
    echo_once(&bed.sb.node.path(), Proto::Tcp, addr(c.ip, 80)).unwrap();
    echo_once(&bed.sb.node.path(), Proto::Tcp, addr(ip6, 80)).unwrap();
    drop(server);

    bed.remove(&["ca"], "shared");
    assert_eq!(bed.node_links(), links_before);
}

#[test]
fn a_bridge_container_connected_to_a_macvlan_network_is_on_both() {
    let bed = Bed::new("mvc");
    bed.create("lan", &["-o", "parent=lan0"]);
    let c = bed.netd.run_idle_container("both", &["8080:80"]).unwrap();
    bed.netd
        .cli_ok(&["network", "connect", "lan", "both"])
        .unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&bed.netd.cli_ok(&["inspect", "both"]).unwrap()).unwrap();
    // An array, as `docker inspect` prints.
    let eps = inspect[0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{inspect}");
    let lan_ip: Ipv4Addr = eps[1]["ip"].as_str().unwrap().parse().unwrap();
    assert_eq!(eps[1]["ifname"], "eth1");
    // The LAN reaches it at its LAN address; its published port still answers on the
    // node's uplink, and its default route stays on the bridge.
    assert!(lan_pings(&bed.lan, lan_ip));
    let _s = EchoServer::start(&c.netns, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(
        &bed.sb.ext.path(),
        Proto::Tcp,
        addr(Sandbox::NODE_ADDR, 8080),
    )
    .unwrap();
    let routes = String::from_utf8_lossy(&inside(&c.netns, &["ip", "route"]).stdout).into_owned();
    assert!(
        routes.contains("default via 172.17.0.1 dev eth0"),
        "{routes}"
    );

    bed.netd
        .cli_ok(&["network", "disconnect", "lan", "both"])
        .unwrap();
    assert!(
        !inside(&c.netns, &["ip", "link", "show", "eth1"])
            .status
            .success()
    );
    assert!(!lan_pings(&bed.lan, lan_ip));
    bed.netd.cli_ok(&["rm", "-f", "both"]).unwrap();
}

#[test]
fn an_ipv6_only_macvlan_network_puts_containers_on_the_lan_with_ipv6_alone() {
    let bed = Bed::new("mv7");
    bed.lan.add_ipv6().unwrap();
    bed.sb
        .node
        .ip(&["-6", "addr", "add", "fd00:77::2/64", "dev", "lan0", "nodad"])
        .unwrap();
    let links_before = bed.node_links();
    let mut args = vec![
        "network",
        "create",
        "-d",
        "macvlan",
        "--ipv4=false",
        "-o",
        "parent=lan0",
        "-o",
        "com.netd.macvlan.host_access=true",
    ];
    args.extend(IPV6_FLAGS);
    args.push("lan7");
    bed.netd.cli_ok(&args).unwrap();
    let err = bed.run_refused("lan7", "--ip", "192.168.77.140");
    assert!(
        err.contains("invalid --ip 192.168.77.140") && err.contains("IPv6-only"),
        "{err}"
    );
    let c = bed.run("c7", "lan7");
    assert_eq!(c.ip, Ipv4Addr::UNSPECIFIED, "no IPv4 address");
    // The shim took the range's first address; the container the next, its MAC from it.
    let ip6 = c.ip6.unwrap();
    assert_eq!(ip6, "fd00:77::101".parse::<Ipv6Addr>().unwrap());
    let eth0 = String::from_utf8_lossy(
        &inside(&c.netns, &["ip", "-o", "addr", "show", "dev", "eth0"]).stdout,
    )
    .into_owned();
    assert!(
        eth0.contains("fd00:77::101/64") && !eth0.contains("inet "),
        "{eth0}"
    );
    assert!(lan_pings(&bed.lan, ip6));
    // The LAN learns the container's own MAC (a random one: no IPv4 address for Docker's
    // scheme).
    let inspect: serde_json::Value =
        serde_json::from_str(&bed.netd.cli_ok(&["inspect", "c7"]).unwrap()).unwrap();
    let mac = inspect[0]["endpoints"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bed.lan.host_neighbour(ip6).unwrap(), mac);
    let server = EchoServer::start(&c.netns, Proto::Tcp, addr(Ipv6Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(&bed.lan.host.path(), Proto::Tcp, addr(ip6, 80)).unwrap();
    assert_eq!(server.peers()[0].ip(), IpAddr::V6(Lan::HOST6));
    // The node through its shim, which has IPv6 alone too.
    echo_once(&bed.sb.node.path(), Proto::Tcp, addr(ip6, 80)).unwrap();
    assert_eq!(
        server.peers()[1].ip(),
        "fd00:77::100".parse::<IpAddr>().unwrap()
    );
    let shim = bed
        .node_links()
        .into_iter()
        .find(|l| l.starts_with("nh"))
        .unwrap();
    let on_shim = bed
        .sb
        .node
        .ip(&["-o", "addr", "show", "dev", &shim])
        .unwrap();
    let on_shim = String::from_utf8_lossy(&on_shim.stdout);
    assert!(
        on_shim.contains("fd00:77::100/128") && !on_shim.contains("inet "),
        "{on_shim}"
    );
    drop(server);
    bed.remove(&["c7"], "lan7");
    assert_eq!(bed.node_links(), links_before);
}
