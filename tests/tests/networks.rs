//! User networks: the CLI (create, ls, inspect, rm, connect, disconnect), IPAM, and the
//! isolation the data path enforces, each checked with real traffic in both directions.

use std::net::Ipv4Addr;

use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, echo_fails, echo_once, require_root};
use serde_json::Value;

fn inspect(d: &Daemon, what: &[&str]) -> Value {
    let out = d.cli_ok(what).unwrap();
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn run_on(
    d: &Daemon,
    name: &str,
    network: &str,
    publish: &[&str],
) -> netd_tests::daemon::Container {
    let mut args = vec!["run", "-d", "--name", name, "--network", network];
    for p in publish {
        args.extend(["-p", p]);
    }
    args.extend(["--", "sleep", "infinity"]);
    d.cli_ok(&args).unwrap();
    d.container(name).unwrap()
}

#[test]
fn network_commands_behave_like_dockers() {
    require_root();
    let sb = Sandbox::new("nc").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();

    let ls = d.cli_ok(&["network", "ls"]).unwrap();
    assert!(ls.starts_with("NETWORK ID"), "{ls}");
    assert!(
        ls.contains(" netd0 ") && ls.contains("bridge") && ls.contains("local"),
        "{ls}"
    );

    // Docker's default pools in order: netd0 took 172.17.0.0/16, so 172.18.0.0/16 is next.
    let id = d.cli_ok(&["network", "create", "front"]).unwrap();
    assert_eq!(id.trim().len(), 12);
    let front = inspect(&d, &["network", "inspect", "front"]);
    assert_eq!(front["subnet"], "172.18.0.0/16");
    assert_eq!(front["gateway"], "172.18.0.1");
    assert_eq!(front["bridge"], format!("br-{}", id.trim()));
    sb.node
        .ip(&["link", "show", front["bridge"].as_str().unwrap()])
        .unwrap();

    d.cli_ok(&[
        "network",
        "create",
        "--subnet",
        "10.50.0.0/24",
        "--gateway",
        "10.50.0.254",
        "--ip-range",
        "10.50.0.128/25",
        "-o",
        "com.netd.bridge.name=br-back",
        "--mtu",
        "1400",
        "back",
    ])
    .unwrap();
    let web = run_on(&d, "web", "back", &[]);
    assert_eq!(
        web.ip,
        Ipv4Addr::new(10, 50, 0, 128),
        "the first address of --ip-range"
    );
    let back = inspect(&d, &["network", "inspect", "back"]);
    assert_eq!(back["endpoints"][0]["container"], "web");
    assert_eq!(back["endpoints"][0]["ip"], "10.50.0.128/24");
    assert_eq!(back["mtu"], 1400);
    let mtu = netd_tests::netns::run(
        "ip",
        &["-n", &sb.node.name, "-o", "link", "show", "br-back"],
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&mtu.stdout).contains("mtu 1400"));

    let json: Value =
        serde_json::from_str(&d.cli_ok(&["network", "ls", "--format", "json"]).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    // Removal is refused while a container is attached, naming it.
    let out = d.cli(&["network", "rm", "back"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has active endpoints") && err.contains("web"),
        "{err}"
    );
    let out = d.cli(&["network", "rm", "netd0"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("pre-defined network"));

    d.cli_ok(&["rm", "-f", "web"]).unwrap();
    assert_eq!(d.cli_ok(&["network", "rm", "back"]).unwrap().trim(), "back");
    assert!(
        sb.node.ip(&["link", "show", "br-back"]).is_err(),
        "the bridge went with it"
    );
    // Its subnet is free again.
    d.cli_ok(&["network", "create", "--subnet", "10.50.0.0/24", "again"])
        .unwrap();
}

#[test]
fn bad_network_input_names_the_field_and_changes_nothing() {
    require_root();
    let sb = Sandbox::new("ne").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.cli_ok(&["network", "create", "--subnet", "10.60.0.0/24", "taken"])
        .unwrap();
    d.run_idle_container("c1", &[]).unwrap();
    let links = || {
        let out = String::from_utf8(sb.node.ip(&["-o", "-4", "addr"]).unwrap().stdout).unwrap();
        let names = String::from_utf8(sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap();
        let names: Vec<String> = names
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
            .collect();
        (out, names)
    };
    let before = (
        d.cli_ok(&["network", "ls", "--format", "json"]).unwrap(),
        links(),
    );
    let cases: &[(&[&str], &str)] = &[
        (&["network", "create", "bad name"], "invalid network name"),
        (&["network", "create", "taken"], "already exists"),
        (&["network", "create", "host"], "already exists"),
        (
            &["network", "create", "-d", "overlay", "n"],
            "invalid --driver overlay: overlay networks span the nodes of a cluster, and this node is not in a cluster",
        ),
        (
            &["network", "create", "-d", "vxlan", "n"],
            "plugin \"vxlan\" not found",
        ),
        (
            &["network", "create", "--subnet", "10.70.0.0/33", "n"],
            "invalid --subnet",
        ),
        (
            &["network", "create", "--subnet", "10.70.0.5/24", "n"],
            "it should be 10.70.0.0/24",
        ),
        (
            &["network", "create", "--subnet", "10.60.0.0/16", "n"],
            "Pool overlaps",
        ),
        (
            &["network", "create", "--subnet", "10.200.0.0/16", "n"],
            "Pool overlaps",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.70.0.0/24",
                "--gateway",
                "10.71.0.1",
                "n",
            ],
            "invalid --gateway",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.70.0.0/24",
                "--ip-range",
                "10.70.1.0/25",
                "n",
            ],
            "invalid --ip-range",
        ),
        (
            &["network", "create", "--gateway", "10.70.0.1", "n"],
            "need --subnet",
        ),
        (
            &[
                "network",
                "create",
                "-o",
                "com.netd.bridge.enable_icc=maybe",
                "n",
            ],
            "expected true or false",
        ),
        (
            &["network", "create", "-o", "com.netd.nope=1", "n"],
            "invalid option com.netd.nope",
        ),
        (
            &[
                "network",
                "create",
                "-o",
                "com.netd.bridge.name=uplink0",
                "n",
            ],
            "already exists on the node",
        ),
        (
            &["network", "create", "--mtu", "20", "n"],
            "invalid --mtu 20",
        ),
        (&["network", "rm", "nope"], "network nope not found"),
        (&["network", "inspect", "nope"], "network nope not found"),
        (
            &["network", "connect", "nope", "c1"],
            "network nope not found",
        ),
        (
            &["network", "connect", "taken", "nope"],
            "No such container: nope",
        ),
        (
            &["network", "connect", "--ip", "10.60.0.1", "taken", "c1"],
            "gateway",
        ),
        (
            &["network", "connect", "--ip", "10.61.0.9", "taken", "c1"],
            "not a host address",
        ),
        (
            &["network", "connect", "--ip", "banana", "taken", "c1"],
            "invalid --ip banana",
        ),
        (
            &["network", "disconnect", "taken", "c1"],
            "is not connected to network taken",
        ),
        (
            &["run", "-d", "--network", "nope", "--", "true"],
            "network nope not found",
        ),
        (
            &["run", "-d", "--ip", "172.17.0.50", "--", "true"],
            "user defined networks only",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "taken",
                "--ip",
                "10.60.0.0",
                "--",
                "true",
            ],
            "invalid --ip",
        ),
        (
            &["run", "-d", "--name", "x y", "--", "true"],
            "invalid container name",
        ),
        (
            &["run", "-d", "--network", "container:nope", "--", "true"],
            "No such container: nope",
        ),
        (
            &[
                "run",
                "-d",
                "--network",
                "container:c1",
                "-p",
                "80",
                "--",
                "true",
            ],
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            &["run", "-d", "--netns", "/nonexistent", "--", "true"],
            "invalid --netns /nonexistent",
        ),
        (
            &["create", "--netns", "/proc/self/ns/net"],
            "the node's own network namespace",
        ),
        (&["create", "--name", "c1"], "is already in use"),
    ];
    for (args, want) in cases {
        let out = d.cli(args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "netd {}: {err}", args.join(" "));
        assert!(
            err.contains(want),
            "netd {}: wanted {want:?} in {err}",
            args.join(" ")
        );
    }
    let after = (
        d.cli_ok(&["network", "ls", "--format", "json"]).unwrap(),
        links(),
    );
    assert_eq!(before, after, "a refused command changed nothing");
    let ps = d.cli_ok(&["ps", "-a", "--format", "json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&ps)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn networks_are_isolated_from_each_other_but_not_from_the_node_or_published_ports() {
    require_root();
    let sb = Sandbox::new("ni").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.cli_ok(&["network", "create", "red"]).unwrap();
    d.cli_ok(&["network", "create", "blue"]).unwrap();
    let r1 = run_on(&d, "r1", "red", &["8081:80"]);
    let r2 = run_on(&d, "r2", "red", &[]);
    let b1 = run_on(&d, "b1", "blue", &["8082:80"]);
    let servers: Vec<_> = [&r1, &r2, &b1]
        .iter()
        .flat_map(|c| {
            [
                EchoServer::start(&c.netns, Proto::Tcp, addr(c.ip, 80)).unwrap(),
                EchoServer::start(&c.netns, Proto::Udp, addr(c.ip, 53)).unwrap(),
            ]
        })
        .collect();
    let inet =
        EchoServer::start(&sb.inet.path(), Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();
    let node = EchoServer::start(
        &sb.node.path(),
        Proto::Tcp,
        addr(Ipv4Addr::UNSPECIFIED, 9001),
    )
    .unwrap();

    for proto in [Proto::Tcp, Proto::Udp] {
        let port = if proto == Proto::Tcp { 80 } else { 53 };
        assert!(
            echo_fails(&r1.netns, proto, addr(b1.ip, port)).unwrap(),
            "red to blue"
        );
        assert!(
            echo_fails(&b1.netns, proto, addr(r1.ip, port)).unwrap(),
            "blue to red"
        );
        echo_once(&r1.netns, proto, addr(r2.ip, port)).expect("within red");
        echo_once(&r2.netns, proto, addr(r1.ip, port)).expect("within red, back");
    }
    for c in [&r1, &b1] {
        echo_once(&c.netns, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).expect("the outside");
        echo_once(&c.netns, Proto::Tcp, addr(Sandbox::NODE_ADDR, 9001)).expect("the node");
    }
    // Each other's published ports, through the node's address.
    if let Err(e) = echo_once(&r1.netns, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8082)) {
        panic!(
            "red to blue's port: {e:#}\n{}\n{}\n{}",
            d.cli_ok(&["stats"]).unwrap(),
            d.cli_ok(&["conntrack"]).unwrap(),
            d.cli_ok(&["info"]).unwrap()
        );
    }
    echo_once(&b1.netns, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8081)).expect("blue to red's port");
    assert!(
        d.counter("EndpointIngress", "drop_network_isolation")
            .unwrap()
            >= 4
    );
    drop((servers, inet, node));
}

#[test]
fn internal_networks_and_icc_off() {
    require_root();
    let sb = Sandbox::new("nn").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.cli_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.80.0.0/24",
        "vault",
    ])
    .unwrap();
    d.cli_ok(&[
        "network",
        "create",
        "-o",
        "com.netd.bridge.enable_icc=false",
        "lonely",
    ])
    .unwrap();

    let out = d
        .cli(&[
            "run",
            "-d",
            "--network",
            "vault",
            "-p",
            "8080:80",
            "--",
            "true",
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot publish ports on internal network vault")
    );

    let v1 = run_on(&d, "v1", "vault", &[]);
    let v2 = run_on(&d, "v2", "vault", &[]);
    let routes = d.cli_ok(&["exec", "v1", "--", "ip", "route"]).unwrap();
    assert!(!routes.contains("default"), "no route out: {routes}");
    let _inet =
        EchoServer::start(&sb.inet.path(), Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();
    let _v2 = EchoServer::start(&v2.netns, Proto::Tcp, addr(v2.ip, 80)).unwrap();
    echo_once(&v1.netns, Proto::Tcp, addr(v2.ip, 80)).expect("inside the internal network");
    // Even with a route of its own making, the data path lets nothing out.
    d.cli_ok(&[
        "exec",
        "v1",
        "--",
        "ip",
        "route",
        "add",
        "default",
        "via",
        "10.80.0.1",
    ])
    .unwrap();
    assert!(echo_fails(&v1.netns, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap());
    // Nor through a published port of another network, called on its own gateway.
    let public = d.run_idle_container("public", &["8085:80"]).unwrap();
    let _p = EchoServer::start(&public.netns, Proto::Tcp, addr(public.ip, 80)).unwrap();
    let gateway = Ipv4Addr::new(10, 80, 0, 1);
    assert!(echo_fails(&v1.netns, Proto::Tcp, addr(gateway, 8085)).unwrap());
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8085)).expect("from outside");
    assert!(
        d.counter("EndpointIngress", "drop_internal_network")
            .unwrap()
            >= 1
    );

    let l1 = run_on(&d, "l1", "lonely", &[]);
    let l2 = run_on(&d, "l2", "lonely", &[]);
    let _s1 = EchoServer::start(&l1.netns, Proto::Tcp, addr(l1.ip, 80)).unwrap();
    let _s2 = EchoServer::start(&l2.netns, Proto::Udp, addr(l2.ip, 53)).unwrap();
    assert!(echo_fails(&l2.netns, Proto::Tcp, addr(l1.ip, 80)).unwrap());
    assert!(echo_fails(&l1.netns, Proto::Udp, addr(l2.ip, 53)).unwrap());
    echo_once(&l1.netns, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).expect("still reaches out");
    assert!(d.counter("EndpointIngress", "drop_icc_disabled").unwrap() >= 2);
}

#[test]
fn spoofed_addresses_and_macs_are_dropped_and_counted() {
    require_root();
    let sb = Sandbox::new("ns").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let c = d.run_idle_container("ctr", &[]).unwrap();
    let _inet =
        EchoServer::start(&sb.inet.path(), Proto::Udp, addr(Sandbox::INET_ADDR, 9000)).unwrap();
    echo_once(&c.netns, Proto::Udp, addr(Sandbox::INET_ADDR, 9000)).unwrap();

    // Another address of the same subnet, added inside the container.
    d.cli_ok(&[
        "exec",
        "ctr",
        "--",
        "ip",
        "addr",
        "add",
        "172.17.0.200/16",
        "dev",
        "eth0",
    ])
    .unwrap();
    let sent = netd_tests::echo::in_netns(&c.netns, || {
        let s = std::net::UdpSocket::bind("172.17.0.200:0")?;
        s.set_read_timeout(Some(std::time::Duration::from_millis(300)))?;
        s.send_to(b"spoof", addr(Sandbox::INET_ADDR, 9000))?;
        let mut b = [0u8; 8];
        Ok(s.recv(&mut b).is_err())
    })
    .unwrap();
    assert!(sent, "no answer to a spoofed source");
    assert!(d.counter("EndpointIngress", "drop_spoofed_source").unwrap() >= 1);

    d.cli_ok(&[
        "exec",
        "ctr",
        "--",
        "ip",
        "link",
        "set",
        "eth0",
        "address",
        "02:42:de:ad:be:ef",
    ])
    .unwrap();
    assert!(echo_fails(&c.netns, Proto::Udp, addr(Sandbox::INET_ADDR, 9000)).unwrap());
    assert!(d.counter("EndpointIngress", "drop_spoofed_mac").unwrap() >= 1);
}

#[test]
fn connect_and_disconnect_add_and_remove_an_interface() {
    require_root();
    let sb = Sandbox::new("nk").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.cli_ok(&["network", "create", "--subnet", "10.90.0.0/24", "extra"])
        .unwrap();
    let c = d.run_idle_container("ctr", &[]).unwrap();
    let peer = run_on(&d, "peer", "extra", &[]);
    let _s = EchoServer::start(&peer.netns, Proto::Tcp, addr(peer.ip, 80)).unwrap();
    assert!(
        echo_fails(&c.netns, Proto::Tcp, addr(peer.ip, 80)).unwrap(),
        "not on extra yet"
    );

    d.cli_ok(&["network", "connect", "--ip", "10.90.0.77", "extra", "ctr"])
        .unwrap();
    let links = d
        .cli_ok(&["exec", "ctr", "--", "ip", "-o", "addr", "show", "eth1"])
        .unwrap();
    assert!(links.contains("10.90.0.77/24"), "{links}");
    echo_once(&c.netns, Proto::Tcp, addr(peer.ip, 80)).expect("reachable on the shared network");
    let ps = d.cli_ok(&["ps"]).unwrap();
    assert!(
        ps.contains("netd0,extra") && ps.contains("10.90.0.77"),
        "{ps}"
    );
    let out = d.cli(&["network", "connect", "extra", "ctr"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists in network extra"));

    d.cli_ok(&["network", "disconnect", "extra", "ctr"])
        .unwrap();
    let out = d
        .cli_ok(&["exec", "ctr", "--", "ip", "-o", "link"])
        .unwrap();
    assert!(!out.contains("eth1"), "{out}");
    assert!(echo_fails(&c.netns, Proto::Tcp, addr(peer.ip, 80)).unwrap());
    // The address went back to the pool; connecting again works.
    d.cli_ok(&["network", "connect", "--ip", "10.90.0.77", "extra", "ctr"])
        .unwrap();
}
