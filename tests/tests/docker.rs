//! Docker drives netd: the real dockerd (Debian's docker.io) with netd as its network and
//! IPAM driver (`docker network create -d netd --ipam-driver netd`), in the same
//! ext/node/inet sandbox as every end-to-end test. What is checked is what a user of
//! Docker sees: `docker run -p` answers through the uplink with client addresses kept,
//! containers reach the internet masqueraded, networks are isolated, and nothing of
//! Docker's own NAT (iptables rules, docker-proxy) exists at any point.

use std::net::Ipv4Addr;

use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, addr, docker::Docker, echo_fails, echo_once,
    require_root,
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
        let id = self.docker.ok(&["inspect", "-f", &format, container]).unwrap();
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
            !rules.lines().any(|l| l.starts_with("-A") || l.starts_with(":DOCKER")),
            "iptables rules in the node:\n{rules}"
        );
        let nft = self.sb.node.exec(&["nft", "list", "ruleset"]).unwrap();
        let nft = String::from_utf8_lossy(&nft.stdout);
        assert!(!nft.contains("rule") && !nft.contains("chain"), "nftables ruleset:\n{nft}");
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
        .ok(&[
            "network", "create", "-d", "netd", "--ipam-driver", "netd", "--subnet",
            "10.77.0.0/24", "n1",
        ])
        .unwrap();
    docker
        .run_idle(&[
            "--name", "web", "--network", "n1", "-p", "8080:80", "-p", "5353:53/udp",
        ])
        .unwrap();
    let web = docker.netns("web").unwrap();
    let ip = docker.ip("web", "n1").unwrap();
    assert!(ip.to_string().starts_with("10.77.0."), "{ip}");
    let tcp = EchoServer::start(&web, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let udp = EchoServer::start(&web, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53)).unwrap();

    echo_once(&bed.sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    echo_once(&bed.sb.ext.path(), Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)).unwrap();
    assert_eq!(tcp.peers()[0].ip(), Sandbox::EXT_ADDR, "the client's own address");
    assert_eq!(udp.peers()[0].ip(), Sandbox::EXT_ADDR, "the client's own address");
    assert_eq!(
        bed.netd_port("web", "n1"),
        "53/udp -> 0.0.0.0:5353\n80/tcp -> 0.0.0.0:8080\n"
    );

    // Out to the internet host, masqueraded behind the node's address.
    let inet = EchoServer::start(&bed.sb.inet.path(), Proto::Tcp, addr(Sandbox::INET_ADDR, 9000))
        .unwrap();
    echo_once(&web, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();
    assert_eq!(inet.peers()[0].ip(), Sandbox::NODE_ADDR);
    bed.assert_no_docker_nat();
}
