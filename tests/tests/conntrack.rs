//! The connection table: listed by `netd conntrack`, bounded, and purged with containers.

use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, addr, echo_once, require_root, udp_echo_from,
};

fn flows(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.cli_ok(&["conntrack", "--format", "json"]).unwrap();
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn conntrack_lists_published_and_masqueraded_flows() {
    require_root();
    let sb = Sandbox::new("ct").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let _web_server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let target = addr(Sandbox::INET_ADDR, 9000);
    let _inet_server = EchoServer::start(&sb.inet.path(), Proto::Udp, target).unwrap();

    let client = echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    let local = echo_once(&web.netns, Proto::Udp, target).unwrap();

    let flows = flows(&d);
    assert_eq!(flows.len(), 2, "{flows:?}");
    let dnat = flows.iter().find(|f| f["kind"] == "dnat").unwrap();
    assert_eq!(dnat["proto"], "tcp");
    assert_eq!(
        dnat["original"],
        format!("{client} -> {}:8080", Sandbox::NODE_ADDR)
    );
    assert_eq!(dnat["translated"], format!("{client} -> {}:80", web.ip));
    assert!(
        ["established", "closing"].contains(&dnat["state"].as_str().unwrap()),
        "{dnat}"
    );
    let snat = flows.iter().find(|f| f["kind"] == "snat").unwrap();
    assert_eq!(snat["original"], format!("{local} -> {target}"));
    assert!(
        snat["translated"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", Sandbox::NODE_ADDR))
    );
    assert_eq!(snat["state"], "replied");

    let table = d.cli_ok(&["conntrack"]).unwrap();
    assert!(table.starts_with("PROTO   KIND   ORIGINAL"), "{table}");

    // A removed container's flows go with it, so a reused address inherits nothing.
    d.cli_ok(&["rm", "-f", "web"]).unwrap();
    assert!(self::flows(&d).is_empty());
}

#[test]
fn snat_port_exhaustion_is_counted_not_corrupting() {
    require_root();
    let sb = Sandbox::new("cx").unwrap();
    let d =
        Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--snat-ports", "61000-61002"]).unwrap();
    let a = d.run_idle_container("aa", &[]).unwrap();
    let b = d.run_idle_container("bb", &[]).unwrap();
    let target = addr(Sandbox::INET_ADDR, 9000);
    let server = EchoServer::start(&sb.inet.path(), Proto::Udp, target).unwrap();

    // aa's flows keep their source ports; bb's, from the same ports to the same
    // destination, must be remapped, and three use up the range.
    for port in 40000..40004 {
        udp_echo_from(&a.netns, port, target).unwrap();
    }
    for port in 40000..40003 {
        udp_echo_from(&b.netns, port, target).unwrap();
    }
    assert!(
        udp_echo_from(&b.netns, 40003, target).is_err(),
        "a fourth remapped flow to the same destination has no port"
    );

    assert!(d.to_network("drop_snat_ports_exhausted").unwrap() >= 1);
    let mut peers = server.peers();
    peers.sort();
    peers.dedup();
    assert_eq!(
        peers.len(),
        7,
        "no flow went out untranslated or twice: {peers:?}"
    );
    assert!(peers.iter().all(|p| p.ip() == Sandbox::NODE_ADDR));
    // The port space is per destination: another destination port still works.
    let other = addr(Sandbox::INET_ADDR, 9001);
    let _other_server = EchoServer::start(&sb.inet.path(), Proto::Udp, other).unwrap();
    udp_echo_from(&b.netns, 40003, other).unwrap();
}

#[test]
fn a_full_table_of_confirmed_flows_leaves_new_flows_working_unconfirmed() {
    require_root();
    let sb = Sandbox::new("cf").unwrap();
    // Room for two confirmed flows (two entries each), and a quota that lets one
    // container take them all.
    let d = Daemon::start_with(
        &sb.node,
        Sandbox::UPLINK,
        &["--flow-table-size", "4", "--flow-quota", "100"],
    )
    .unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let _server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let published = addr(Sandbox::NODE_ADDR, 8080);

    for _ in 0..3 {
        echo_once(&sb.ext.path(), Proto::Tcp, published).unwrap();
    }

    assert!(d.counter("FlowTable", "unconfirmed_table_full").unwrap() >= 1);
    assert_eq!(d.counter("FlowTable", "flow_confirmed").unwrap(), 2);
    let listed = flows(&d);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let unconfirmed = listed.iter().filter(|f| f["confirmed"] == false).count();
    assert_eq!(
        unconfirmed, 1,
        "the third flow works from the unconfirmed table"
    );
    let info = d.info().unwrap();
    assert_eq!(info["flow_table"]["confirmed"], 4, "{info}");
    assert_eq!(info["flow_table"]["confirmed_percent"], 100.0, "{info}");
}

#[test]
fn closed_flows_are_aged_out_by_the_garbage_collector() {
    require_root();
    let sb = Sandbox::new("cg").unwrap();
    let d =
        Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--conntrack-gc-interval", "1"]).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let _server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();

    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    assert_eq!(flows(&d).len(), 1);

    // A closed TCP flow expires 10 s after its last packet; the sweep runs every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !flows(&d).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed flow was never collected: {:?}",
            flows(&d)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
