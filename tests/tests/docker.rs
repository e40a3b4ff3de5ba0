//! Docker drives netd: the real dockerd (Debian's docker.io) with netd as its network and
//! IPAM driver (`docker network create -d netd --ipam-driver netd`), in the same
//! ext/node/inet sandbox as every end-to-end test. What is checked is what a user of
//! Docker sees: `docker run -p` answers through the uplink with client addresses kept,
//! containers reach the internet masqueraded, networks are isolated, `--ipv6` networks
//! give containers IPv6 addresses they talk over, and nothing of
//! Docker's own NAT (iptables rules, docker-proxy) exists at any point.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netd_tests::{
    Daemon, EchoServer, HeldConnection, Proto, Sandbox, addr, docker::Docker, echo::in_netns,
    echo_fails, echo_once, require_root,
};

/// dockerd and netd in one node. Dropped in field order: Docker's containers and dockerd
/// first, then netd, then the namespaces.
struct Bed {
    docker: Docker,
    netd: Daemon,
    sb: Sandbox,
}

impl Bed {
    fn new(prefix: &str) -> Bed {
        require_root();
        let sb = Sandbox::new(prefix).unwrap();
        let socket = Docker::plugin_socket_for(&sb.node);
        let netd = Daemon::start_with(
            &sb.node,
            Sandbox::UPLINK,
            &["--docker-plugin-socket", &socket.to_string_lossy()],
        )
        .unwrap();
        let docker = Docker::start(&sb.node, &socket).unwrap();
        Bed { docker, netd, sb }
    }

    /// netd's name for a container's endpoint on a network: the endpoint's short ID.
    fn endpoint(&self, container: &str, network: &str) -> String {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").EndpointID}}}}");
        let id = self
            .docker
            .ok(&["inspect", "-f", &format, container])
            .unwrap();
        id[..12].to_string()
    }

    fn netd_port(&self, container: &str, network: &str) -> String {
        self.netd
            .cli_ok(&["port", &self.endpoint(container, network)])
            .unwrap()
    }

    /// No NAT of Docker's: no iptables or nftables rule in the node, no docker-proxy.
    fn assert_no_docker_nat(&self) {
        let rules = self.sb.node.exec(&["iptables-save"]).unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            !rules
                .lines()
                .any(|l| l.starts_with("-A") || l.starts_with(":DOCKER")),
            "iptables rules in the node:\n{rules}"
        );
        let nft = self.sb.node.exec(&["nft", "list", "ruleset"]).unwrap();
        let nft = String::from_utf8_lossy(&nft.stdout);
        assert!(
            !nft.contains("rule") && !nft.contains("chain"),
            "nftables ruleset:\n{nft}"
        );
        let proxies: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "docker-proxy")
            .collect();
        assert!(proxies.is_empty(), "docker-proxy processes: {proxies:?}");
    }
}

#[test]
fn docker_run_publishes_ports_through_netd_with_client_addresses_kept() {
    let bed = Bed::new("dkp");
    let docker = &bed.docker;
    docker
        .netd_network("n1", &["--subnet", "10.77.0.0/24"])
        .unwrap();
    docker
        .run_idle(&[
            "--name",
            "web",
            "--network",
            "n1",
            "-p",
            "8080:80",
            "-p",
            "5353:53/udp",
        ])
        .unwrap();
    let web = docker.netns("web").unwrap();
    let ip = docker.ip("web", "n1").unwrap();
    assert!(ip.to_string().starts_with("10.77.0."), "{ip}");
    let tcp = EchoServer::start(&web, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let udp = EchoServer::start(&web, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53)).unwrap();

    echo_once(
        &bed.sb.ext.path(),
        Proto::Tcp,
        addr(Sandbox::NODE_ADDR, 8080),
    )
    .unwrap();
    echo_once(
        &bed.sb.ext.path(),
        Proto::Udp,
        addr(Sandbox::NODE_ADDR, 5353),
    )
    .unwrap();
    assert_eq!(
        tcp.peers()[0].ip(),
        Sandbox::EXT_ADDR,
        "the client's own address"
    );
    assert_eq!(
        udp.peers()[0].ip(),
        Sandbox::EXT_ADDR,
        "the client's own address"
    );
    assert_eq!(
        bed.netd_port("web", "n1"),
        "53/udp -> 0.0.0.0:5353\n53/udp -> [::]:5353\n80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n"
    );
    // `docker port` stays empty for a remote driver; `netd ps` and `netd port` show the
    // sandbox (Docker's stand-in for the container) and the endpoint.
    let key = docker
        .ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "web"])
        .unwrap();
    let sandbox = &key.rsplit('/').next().unwrap()[..12];
    assert_eq!(
        bed.netd.cli_ok(&["port", sandbox, "80"]).unwrap(),
        "0.0.0.0:8080\n[::]:8080\n"
    );
    let ps = bed.netd.cli_ok(&["ps"]).unwrap();
    let row = ps
        .lines()
        .find(|l| l.starts_with(sandbox))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(
        row.contains(&bed.endpoint("web", "n1")) && row.contains(&ip.to_string()),
        "{row}"
    );

    // Out to the internet host, masqueraded behind the node's address.
    bed.sb.assert_masqueraded_out(&web).unwrap();
    bed.assert_no_docker_nat();
}

#[test]
fn publish_all_and_open_host_ports_are_chosen_by_netd_and_a_taken_port_fails_docker_run() {
    let bed = Bed::new("dka");
    let docker = &bed.docker;
    docker.netd_network("n1", &[]).unwrap();
    docker
        .run_idle(&[
            "--name",
            "ca",
            "--network",
            "n1",
            "-p",
            "8080:80",
            "-p",
            "9000:80",
        ])
        .unwrap();
    docker
        .run_idle(&[
            "--name",
            "cb",
            "--network",
            "n1",
            "-P",
            "--expose",
            "81",
            "-p",
            "90",
        ])
        .unwrap();
    let ports = bed.netd_port("cb", "n1");
    let host_port = |container_port: &str| -> u16 {
        ports
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{container_port}/tcp -> 0.0.0.0:")))
            .unwrap_or_else(|| panic!("no {container_port}/tcp in {ports}"))
            .parse()
            .unwrap()
    };
    let range: Vec<u16> = String::from_utf8(
        bed.sb
            .node
            .exec(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"])
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .map(|p| p.parse().unwrap())
    .collect();
    for p in [host_port("81"), host_port("90")] {
        assert!((range[0]..=range[1]).contains(&p), "{p} in {range:?}");
    }
    let b = docker.netns("cb").unwrap();
    let _server = EchoServer::start(&b, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 90)).unwrap();
    echo_once(
        &bed.sb.ext.path(),
        Proto::Tcp,
        addr(Sandbox::NODE_ADDR, host_port("90")),
    )
    .unwrap();

    // A range gives its first free port.
    docker
        .run_idle(&["--name", "cc", "--network", "n1", "-p", "9000-9002:80"])
        .unwrap();
    assert_eq!(
        bed.netd_port("cc", "n1"),
        "80/tcp -> 0.0.0.0:9001\n80/tcp -> [::]:9001\n"
    );

    // A taken port fails `docker run` with Docker's words, and leaves nothing in netd.
    let before = bed.netd.info().unwrap()["map_entries"].clone();
    let out = docker
        .cli(&[
            "run",
            "-d",
            "--name",
            "cd",
            "--network",
            "n1",
            "-p",
            "8080:80",
            netd_tests::docker::IMAGE,
            "sleep",
            "60",
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Bind for 0.0.0.0:8080 failed: port is already allocated"),
        "{stderr}"
    );
    assert_eq!(bed.netd.info().unwrap()["map_entries"], before);
    assert_eq!(docker_endpoints(&bed.netd), 3, "a, b and c");
    bed.assert_no_docker_nat();
}

/// How many of netd's container records are Docker endpoints.
fn docker_endpoints(d: &Daemon) -> usize {
    let all: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["ps", "-a", "--format", "json"]).unwrap()).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["sandbox"]["kind"] == "docker")
        .count()
}

#[test]
fn docker_networks_are_isolated_connect_joins_them_and_internal_and_static_ips_hold() {
    let bed = Bed::new("dki");
    let docker = &bed.docker;
    for (name, subnet) in [("n1", "10.77.0.0/24"), ("n2", "10.78.0.0/24")] {
        docker.netd_network(name, &["--subnet", subnet]).unwrap();
    }
    docker.netd_network("n3", &["--internal"]).unwrap();
    docker
        .run_idle(&["--name", "ca", "--network", "n1"])
        .unwrap();
    docker
        .run_idle(&["--name", "cb", "--network", "n2", "--ip", "10.78.0.50"])
        .unwrap();
    assert_eq!(docker.ip("cb", "n2").unwrap(), Ipv4Addr::new(10, 78, 0, 50));
    let (a, b) = (docker.netns("ca").unwrap(), docker.netns("cb").unwrap());
    let target = addr(Ipv4Addr::new(10, 78, 0, 50), 7000);
    let _server = EchoServer::start(&b, Proto::Tcp, target).unwrap();

    assert!(echo_fails(&a, Proto::Tcp, target).unwrap(), "n1 reached n2");
    docker.ok(&["network", "connect", "n2", "ca"]).unwrap();
    echo_once(&a, Proto::Tcp, target).unwrap();
    docker.ok(&["network", "disconnect", "n2", "ca"]).unwrap();
    assert!(
        echo_fails(&a, Proto::Tcp, target).unwrap(),
        "n1 reached n2 after disconnect"
    );

    // --internal: no way out.
    let _inet = EchoServer::start(
        &bed.sb.inet.path(),
        Proto::Tcp,
        addr(Sandbox::INET_ADDR, 9000),
    )
    .unwrap();
    docker
        .run_idle(&["--name", "cc", "--network", "n3"])
        .unwrap();
    let c = docker.netns("cc").unwrap();
    assert!(echo_fails(&c, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap());
    echo_once(&a, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();

    // Docker's bridge options reach netd: enable_icc=false isolates the network's
    // containers from each other; --mac-address is the MAC netd polices.
    docker
        .netd_network("n4", &["-o", "com.docker.network.bridge.enable_icc=false"])
        .unwrap();
    docker
        .run_idle(&[
            "--name",
            "i1",
            "--network",
            "n4",
            "--mac-address",
            "02:11:22:33:44:55",
        ])
        .unwrap();
    docker
        .run_idle(&["--name", "i2", "--network", "n4"])
        .unwrap();
    let i1 = docker.netns("i1").unwrap();
    let mac = docker
        .ok(&[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"n4\").MacAddress}}",
            "i1",
        ])
        .unwrap();
    assert_eq!(mac, "02:11:22:33:44:55");
    echo_once(&i1, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();
    let i2_addr = addr(docker.ip("i2", "n4").unwrap(), 7001);
    let _i2 = EchoServer::start(&docker.netns("i2").unwrap(), Proto::Tcp, i2_addr).unwrap();
    assert!(
        echo_fails(&i1, Proto::Tcp, i2_addr).unwrap(),
        "icc off let i1 reach i2"
    );

    // A static address already taken is refused by netd's IPAM.
    let out = docker
        .cli(&[
            "run",
            "-d",
            "--network",
            "n2",
            "--ip",
            "10.78.0.50",
            netd_tests::docker::IMAGE,
            "sleep",
            "60",
        ])
        .unwrap();
    assert!(!out.status.success());
    bed.assert_no_docker_nat();
}

/// What netd holds for Docker: endpoint records, networks besides netd0, veths and
/// bridges of Docker's networks, published ports and endpoints in the data path, IPAM
/// pools in the state file.
fn assert_nothing_of_docker_left(bed: &Bed) {
    assert_eq!(docker_endpoints(&bed.netd), 0);
    let networks = bed.netd.cli_ok(&["network", "ls"]).unwrap();
    assert_eq!(
        networks.lines().count(),
        2,
        "only netd0 is left:\n{networks}"
    );
    let links = String::from_utf8(bed.sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap();
    for prefix in [": ndv", ": ndp", ": br-"] {
        assert!(!links.contains(prefix), "a {prefix} link is left:\n{links}");
    }
    let info = bed.netd.info().unwrap();
    assert_eq!(info["map_entries"]["published_ports"], 0, "{info}");
    assert_eq!(info["map_entries"]["published_ports6"], 0, "{info}");
    assert_eq!(info["map_entries"]["endpoints"], 0, "{info}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bed.netd.dir.join("state/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["ipam_pools"], serde_json::json!({}), "{state}");
    assert!(state.get("ipam_pools6").is_none(), "{state}");
}

#[test]
fn docker_rm_and_network_rm_leave_nothing_in_netd() {
    let bed = Bed::new("dkr");
    let docker = &bed.docker;
    docker.netd_network("n1", &[]).unwrap();
    docker
        .run_idle(&["--name", "ca", "--network", "n1", "-p", "8080:80"])
        .unwrap();
    docker
        .run_idle(&["--name", "cb", "--network", "n1", "-P", "--expose", "81"])
        .unwrap();
    docker.ok(&["stop", "-t", "0", "cb"]).unwrap();
    docker.ok(&["rm", "-f", "ca", "cb"]).unwrap();
    docker.ok(&["network", "rm", "n1"]).unwrap();
    assert_nothing_of_docker_left(&bed);
    bed.assert_no_docker_nat();
}

#[test]
fn a_netd_restart_keeps_docker_traffic_and_docker_stop_and_rm_work_after_it() {
    let mut bed = Bed::new("dks");
    bed.docker.netd_network("n1", &[]).unwrap();
    bed.docker
        .run_idle(&[
            "--name",
            "web",
            "--network",
            "n1",
            "-p",
            "8080:80",
            "-p",
            "8082:82",
        ])
        .unwrap();
    let web = bed.docker.netns("web").unwrap();
    // One server per connection: the held one keeps its server busy.
    let _held_server =
        EchoServer::start(&web, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let _server = EchoServer::start(&web, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 82)).unwrap();
    let mut held =
        HeldConnection::open(&bed.sb.ext.path(), addr(Sandbox::NODE_ADDR, 8080)).unwrap();

    bed.netd.stop(libc::SIGKILL).unwrap();
    held.exchange().unwrap();
    bed.netd.restart().unwrap();
    held.exchange().unwrap();
    echo_once(
        &bed.sb.ext.path(),
        Proto::Tcp,
        addr(Sandbox::NODE_ADDR, 8082),
    )
    .unwrap();

    // Docker never repeats CreateNetwork: netd kept the network's ID.
    bed.docker
        .run_idle(&["--name", "late", "--network", "n1", "-p", "8081:80"])
        .unwrap();
    bed.docker.ok(&["stop", "-t", "1", "web", "late"]).unwrap();
    bed.docker.ok(&["rm", "web", "late"]).unwrap();
    bed.docker.ok(&["network", "rm", "n1"]).unwrap();
    assert_nothing_of_docker_left(&bed);
}

#[test]
fn a_dockerd_restart_with_live_containers_leaves_nothing_behind_in_netd() {
    let mut bed = Bed::new("dkd");
    bed.docker.netd_network("n1", &[]).unwrap();
    for name in ["ca", "cb"] {
        bed.docker
            .run_idle(&["--name", name, "--network", "n1", "-P", "--expose", "80"])
            .unwrap();
    }
    bed.docker.stop().unwrap();
    assert_eq!(
        docker_endpoints(&bed.netd),
        0,
        "dockerd's stop released its endpoints"
    );
    let info = bed.netd.info().unwrap();
    assert_eq!(info["map_entries"]["published_ports"], 0, "{info}");
    assert_eq!(info["map_entries"]["published_ports6"], 0, "{info}");
    assert_eq!(info["map_entries"]["endpoints"], 0, "{info}");

    bed.docker.restart().unwrap();
    bed.docker.ok(&["start", "ca"]).unwrap();
    let a = bed.docker.netns("ca").unwrap();
    let _server = EchoServer::start(&a, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let port = bed.netd_port("ca", "n1");
    let port: u16 = port.trim().rsplit(':').next().unwrap().parse().unwrap();
    echo_once(
        &bed.sb.ext.path(),
        Proto::Tcp,
        addr(Sandbox::NODE_ADDR, port),
    )
    .unwrap();
    bed.docker.ok(&["rm", "-f", "ca", "cb"]).unwrap();
    bed.docker.ok(&["network", "rm", "n1"]).unwrap();
    assert_nothing_of_docker_left(&bed);
    bed.assert_no_docker_nat();
}

/// A field of a container's settings on a network, as `docker inspect` shows it.
fn docker_net_field(docker: &Docker, container: &str, network: &str, field: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").{field}}}}}");
    docker.ok(&["inspect", "-f", &format, container]).unwrap()
}

#[test]
fn docker_dual_stack_networks_get_ipv6_from_netd_and_containers_talk_over_it_also_after_a_restart()
{
    let mut bed = Bed::new("dk6");
    let docker = &bed.docker;
    docker
        .netd_network(
            "d6",
            &[
                "--ipv6",
                "--subnet",
                "172.30.0.0/16",
                "--subnet",
                "fd00:30::/64",
            ],
        )
        .unwrap();
    let c1_ip6: Ipv6Addr = "fd00:30::10".parse().unwrap();
    docker
        .run_idle(&["--name", "c1", "--network", "d6", "--ip6", "fd00:30::10"])
        .unwrap();
    docker
        .run_idle(&["--name", "c2", "--network", "d6"])
        .unwrap();
    assert_eq!(
        docker_net_field(docker, "c1", "d6", "GlobalIPv6Address"),
        "fd00:30::10"
    );
    assert_eq!(
        docker_net_field(docker, "c1", "d6", "IPv6Gateway"),
        "fd00:30::1"
    );
    let c2_ip6: Ipv6Addr = docker_net_field(docker, "c2", "d6", "GlobalIPv6Address")
        .parse()
        .unwrap();
    assert!(
        c2_ip6.segments()[..4] == [0xfd00, 0x30, 0, 0] && c2_ip6 != c1_ip6,
        "{c2_ip6}"
    );
    // netd polices the address Docker's IPAM call gave.
    let inspect = bed
        .netd
        .cli_ok(&["inspect", &bed.endpoint("c2", "d6")])
        .unwrap();
    assert!(inspect.contains(&c2_ip6.to_string()), "{inspect}");

    let (a, b) = (docker.netns("c1").unwrap(), docker.netns("c2").unwrap());
    let disable_ipv6 = in_netns(&a, || {
        Ok(std::fs::read_to_string(
            "/proc/sys/net/ipv6/conf/eth0/disable_ipv6",
        )?)
    })
    .unwrap();
    assert_eq!(disable_ipv6.trim(), "0", "IPv6 is on on c1's eth0");
    let check = |bed: &Bed| {
        for proto in [Proto::Tcp, Proto::Udp] {
            let target = addr(c1_ip6, 7000);
            let server = EchoServer::start(&a, proto, target).unwrap();
            echo_once(&b, proto, target).unwrap();
            assert_eq!(
                server.peers().iter().map(|p| p.ip()).collect::<Vec<_>>(),
                [IpAddr::V6(c2_ip6)],
                "{proto:?}: the peer is c2's own address"
            );
        }
        // The node, through the gateway Docker routes to.
        let gateway = addr("fd00:30::1".parse::<Ipv6Addr>().unwrap(), 7001);
        let server = EchoServer::start(&bed.sb.node.path(), Proto::Tcp, gateway).unwrap();
        echo_once(&a, Proto::Tcp, gateway).unwrap();
        assert_eq!(server.peers()[0].ip(), IpAddr::V6(c1_ip6));
    };
    check(&bed);
    assert_eq!(bed.netd.info().unwrap()["map_entries"]["endpoints6"], 2);
    bed.netd.stop(libc::SIGKILL).unwrap();
    bed.netd.restart().unwrap();
    check(&bed);
    assert_eq!(bed.netd.info().unwrap()["map_entries"]["endpoints6"], 2);

    // Without an IPv6 --subnet, a /64 of the node's ULA /48, as `netd network create --ipv6`.
    docker.netd_network("auto6", &["--ipv6"]).unwrap();
    let subnets = docker
        .ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            "auto6",
        ])
        .unwrap();
    let subnet6 = subnets
        .split_whitespace()
        .find(|s| s.contains(':'))
        .unwrap_or_else(|| panic!("no IPv6 subnet: {subnets}"));
    assert!(
        subnet6.starts_with("fd") && subnet6.ends_with("::/64"),
        "{subnet6}"
    );
    docker
        .run_idle(&["--name", "c3", "--network", "auto6"])
        .unwrap();
    let c3_ip6 = docker_net_field(docker, "c3", "auto6", "GlobalIPv6Address");
    assert!(
        c3_ip6.starts_with(subnet6.trim_end_matches("::/64")),
        "{c3_ip6} in {subnet6}"
    );

    // Published on IPv6 host addresses, as Docker passes them: `[::]` answers the LAN
    // over IPv6 only; `[::1]` is the node's own (tests/host_local.rs reaches it).
    docker
        .run_idle(&[
            "--name",
            "web6",
            "--network",
            "d6",
            "-p",
            "[::]:8081:81",
            "-p",
            "[::1]:8082:82",
        ])
        .unwrap();
    let web6 = docker.netns("web6").unwrap();
    let _servers = [81, 82].map(|port| {
        EchoServer::start(&web6, Proto::Tcp, addr(Ipv6Addr::UNSPECIFIED, port)).unwrap()
    });
    let ext = bed.sb.ext.path();
    echo_once(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR6, 8081)).unwrap();
    for target in [
        addr(Sandbox::NODE_ADDR, 8081),
        addr(Sandbox::NODE_ADDR6, 8082),
    ] {
        assert!(echo_fails(&ext, Proto::Tcp, target).unwrap(), "{target}");
    }

    docker.ok(&["rm", "-f", "c1", "c2", "c3"]).unwrap();
    // The refused container was created: Docker keeps it, stopped.
    let left = docker.ok(&["ps", "-aq"]).unwrap();
    if !left.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(left.split_whitespace());
        docker.ok(&args).unwrap();
    }
    docker.ok(&["network", "rm", "d6", "auto6"]).unwrap();
    assert_eq!(bed.netd.info().unwrap()["map_entries"]["endpoints6"], 0);
    assert_nothing_of_docker_left(&bed);
    bed.assert_no_docker_nat();
}
