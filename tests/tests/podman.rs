//! Podman drives netd through CNI: the real Podman 4.3 (Debian's), CNI backend, with
//! netd-cni as its networks' plugin, in the same ext/node/inet sandbox as every
//! end-to-end test. What is checked is what a Podman user sees: `podman run -p` answers
//! through the uplink with the client's address kept and from the node through
//! 127.0.0.1, `-P` and `--ip` hold, networks are isolated, `podman stop`/`start` rewire,
//! and no iptables rule is written at any point.

use std::net::Ipv4Addr;

use netd_tests::{
    Daemon, EchoServer, HeldConnection, Proto, Sandbox, addr,
    cni::{Call, assert_nothing_left, attachments, conf, exec},
    echo_fails, echo_once,
    podman::Podman,
    require_root,
};

/// Podman and netd in one node. Dropped in field order: Podman's containers and its
/// sandbox first (their DELs reach netd), then netd, then the namespaces.
struct Bed {
    podman: Podman,
    netd: Daemon,
    sb: Sandbox,
}

impl Bed {
    /// With netd networks `n1` and `n2`, each a Podman network of the same name.
    fn new(prefix: &str) -> Bed {
        require_root();
        let sb = Sandbox::new(prefix).unwrap();
        let netd = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
        let podman = Podman::start(&sb.node, &netd).unwrap();
        for n in ["n1", "n2"] {
            netd.cli_ok(&["network", "create", n]).unwrap();
            podman.network(n, n).unwrap();
        }
        Bed { podman, netd, sb }
    }

    /// The node runs no iptables or nftables rule: netd published everything.
    fn assert_no_rules(&self) {
        let rules = self.sb.node.exec(&["iptables-save"]).unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            !rules.lines().any(|l| l.starts_with("-A")),
            "iptables rules in the node:\n{rules}"
        );
        let nft = self.sb.node.exec(&["nft", "list", "ruleset"]).unwrap();
        assert!(
            String::from_utf8_lossy(&nft.stdout).trim().is_empty(),
            "nftables rules in the node"
        );
    }

    /// The node's process reaching `127.0.0.1:port` over `proto` gets `hello` back.
    fn echo_via_node_loopback(&self, proto: &str, port: u16) -> String {
        let script = format!(
            "exec 3<>/dev/{proto}/127.0.0.1/{port} && printf hello >&3 && timeout 3 head -c 5 <&3"
        );
        let out = self
            .netd
            .host_process(&self.sb.node, &["bash", "-c", &script])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn podman_run_publishes_through_netd_to_the_uplink_and_the_node_with_no_iptables_rule() {
    let bed = Bed::new("pdp");
    let podman = &bed.podman;
    let id = podman
        .run_idle(&[
            "--name",
            "web",
            "--network",
            "n1",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:5353:53/udp",
        ])
        .unwrap();
    let web = podman.netns("web").unwrap();
    let tcp = EchoServer::start(&web, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let _udp = EchoServer::start(&web, Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
    let ext = bed.sb.ext.path();

    // Through the uplink, the client's own address seen.
    echo_once(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    assert_eq!(tcp.peers()[0].ip(), Sandbox::EXT_ADDR);
    // 127.0.0.1:5353 is the node's alone; 8080 answers on loopback too.
    assert!(echo_fails(&ext, Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)).unwrap());
    assert_eq!(bed.echo_via_node_loopback("udp", 5353), "hello");
    assert_eq!(bed.echo_via_node_loopback("tcp", 8080), "hello");

    // The container reaches the internet host as the node.
    bed.sb.assert_masqueraded_out(&web).unwrap();

    // netd ps and netd port name it by Podman's short ID.
    let ps = bed.netd.cli_ok(&["ps"]).unwrap();
    let ip = podman.ip("web", "n1").unwrap();
    let row = ps
        .lines()
        .find(|l| l.starts_with(&id[..12]))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(row.contains("n1") && row.contains(&ip.to_string()), "{row}");
    let ports = bed
        .netd
        .cli_ok(&["port", &format!("{}-eth0", &id[..12])])
        .unwrap();
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080"), "{ports}");
    assert!(ports.contains("53/udp -> 127.0.0.1:5353"), "{ports}");

    // -P: Podman picks the host port and hands it to the plugin.
    podman
        .run_idle(&["--name", "any", "--network", "n1", "-P", "--expose", "7000"])
        .unwrap();
    let picked = podman.ok(&["port", "any", "7000/tcp"]).unwrap();
    let port: u16 = picked.rsplit(':').next().unwrap().parse().unwrap();
    let any = podman.netns("any").unwrap();
    let _any = EchoServer::start(&any, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
    echo_once(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, port)).unwrap();

    // --ip and --mac-address arrive as CNI_ARGS and are honoured.
    let subnet_ip = ip.octets();
    let wanted = Ipv4Addr::new(subnet_ip[0], subnet_ip[1], subnet_ip[2], 77);
    podman
        .run_idle(&[
            "--name",
            "fixed",
            "--network",
            "n1",
            "--ip",
            &wanted.to_string(),
            "--mac-address",
            "02:11:22:33:44:55",
        ])
        .unwrap();
    assert_eq!(podman.ip("fixed", "n1").unwrap(), wanted);
    let inspect: serde_json::Value =
        serde_json::from_str(&bed.netd.cli_ok(&["ps", "--format", "json"]).unwrap()).unwrap();
    let fixed = inspect
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["endpoints"][0]["ip"] == wanted.to_string())
        .unwrap_or_else(|| panic!("{inspect}"));
    assert_eq!(fixed["endpoints"][0]["mac"], "02:11:22:33:44:55");

    bed.assert_no_rules();
    podman
        .ok(&["rm", "-f", "-t", "0", "web", "any", "fixed"])
        .unwrap();
    assert_nothing_left(&bed.netd, &bed.sb.node);
    assert!(echo_fails(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap());
}

#[test]
fn podman_networks_are_isolated_and_stop_then_start_rewires_the_container() {
    let bed = Bed::new("pdi");
    let podman = &bed.podman;
    podman
        .run_idle(&["--name", "a", "--network", "n1", "-p", "8080:80"])
        .unwrap();
    podman
        .run_idle(&["--name", "b", "--network", "n2"])
        .unwrap();
    podman
        .run_idle(&["--name", "c", "--network", "n1"])
        .unwrap();
    let b_addr = addr(podman.ip("b", "n2").unwrap(), 7000);
    let _b = EchoServer::start(&podman.netns("b").unwrap(), Proto::Tcp, b_addr).unwrap();
    let c_addr = addr(podman.ip("c", "n1").unwrap(), 7000);
    let _c = EchoServer::start(&podman.netns("c").unwrap(), Proto::Tcp, c_addr).unwrap();
    let a = podman.netns("a").unwrap();
    assert!(echo_fails(&a, Proto::Tcp, b_addr).unwrap(), "n1 reached n2");
    echo_once(&a, Proto::Tcp, c_addr).unwrap();

    // stop is a DEL, start an ADD in a new namespace.
    podman.ok(&["stop", "-t", "0", "a"]).unwrap();
    assert_eq!(attachments(&bed.netd).len(), 2);
    podman.ok(&["start", "a"]).unwrap();
    assert_eq!(attachments(&bed.netd).len(), 3);
    let a = podman.netns("a").unwrap();
    let _a = EchoServer::start(&a, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    echo_once(
        &bed.sb.ext.path(),
        Proto::Tcp,
        addr(Sandbox::NODE_ADDR, 8080),
    )
    .unwrap();
    bed.assert_no_rules();
}

#[test]
fn a_netd_restart_keeps_podman_traffic_and_podman_rm_while_netd_is_down_leaves_nothing() {
    let mut bed = Bed::new("pdr");
    bed.podman
        .run_idle(&["--name", "web", "--network", "n1", "-p", "8080:80"])
        .unwrap();
    let web = bed.podman.netns("web").unwrap();
    let _server = EchoServer::start(&web, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let mut held =
        HeldConnection::open(&bed.sb.ext.path(), addr(Sandbox::NODE_ADDR, 8080)).unwrap();

    bed.netd.stop(libc::SIGKILL).unwrap();
    held.exchange().unwrap();
    bed.netd.restart().unwrap();
    held.exchange().unwrap();
    assert_eq!(attachments(&bed.netd).len(), 1);
    drop(held);

    // netd down: podman rm's DEL succeeds (the plugin says why on stderr), and netd's
    // next start removes the attachment whose namespace Podman removed.
    bed.netd.stop(libc::SIGTERM).unwrap();
    bed.podman.ok(&["rm", "-f", "-t", "0", "web"]).unwrap();
    bed.netd.restart().unwrap();
    assert_nothing_left(&bed.netd, &bed.sb.node);

    // GC with nothing valid on n1 finds nothing more to remove.
    let mut gc = conf("1.1.0", "n1", &bed.netd.socket);
    gc["cni.dev/valid-attachments"] = serde_json::json!([]);
    exec(&bed.netd, &Call::new("GC", "", None), &gc)
        .unwrap()
        .ok()
        .unwrap();
    assert_nothing_left(&bed.netd, &bed.sb.node);
}
