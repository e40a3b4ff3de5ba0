//! Network modes of `netd run` / `netd create`: bridge (the default), host, none,
//! container:NAME, and --netns PATH (a namespace someone else made, the way a container
//! runtime attaches one).

use std::net::Ipv4Addr;

use netd_tests::{
    Daemon, EchoServer, Netns, Proto, Sandbox, addr, echo_once, require_root, unique_name,
};
use serde_json::Value;

fn inspect(d: &Daemon, name: &str) -> Value {
    let v: Value = serde_json::from_str(&d.cli_ok(&["inspect", name]).unwrap()).unwrap();
    v[0].clone()
}

#[test]
fn host_none_and_container_modes() {
    require_root();
    let sb = Sandbox::new("mh").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();

    // host: the node's own namespace; -p is discarded with Docker's warning.
    let out = d
        .cli(&[
            "run",
            "-d",
            "--name",
            "hostmode",
            "--network",
            "host",
            "-p",
            "80:80",
            "--",
            "sleep",
            "infinity",
        ])
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("WARNING: Published ports are discarded when using host network mode")
    );
    let links = d
        .cli_ok(&["exec", "hostmode", "--", "ip", "-o", "link"])
        .unwrap();
    assert!(links.contains("uplink0"), "{links}");
    let h = inspect(&d, "hostmode");
    assert_eq!(h["network_mode"], "host");
    assert!(h["ports"].as_array().unwrap().is_empty());

    // none: a namespace of its own with only lo, up.
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        "nonet",
        "--network",
        "none",
        "--",
        "sleep",
        "infinity",
    ])
    .unwrap();
    let links = d
        .cli_ok(&["exec", "nonet", "--", "ip", "-o", "link"])
        .unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");

    // container:NAME: the same namespace as web, so the same address and listeners.
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        "side",
        "--network",
        "container:web",
        "--",
        "sleep",
        "infinity",
    ])
    .unwrap();
    let side = inspect(&d, "side");
    assert_eq!(
        side["netns_path"].as_str().unwrap(),
        web.netns.to_str().unwrap()
    );
    let addrs = d
        .cli_ok(&["exec", "side", "--", "ip", "-o", "-4", "addr"])
        .unwrap();
    assert!(addrs.contains(&web.ip.to_string()), "{addrs}");
    let ps = d.cli_ok(&["ps"]).unwrap();
    assert!(
        ps.contains("container:web") && ps.contains("host") && ps.contains("none"),
        "{ps}"
    );

    let out = d.cli(&["rm", "-f", "web"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("side"));
    d.cli_ok(&["rm", "-f", "side", "web", "nonet", "hostmode"])
        .unwrap();
    // Removing a host-mode container kills its process, never the node's others.
    assert!(d.cli_ok(&["info"]).is_ok());
}

#[test]
fn create_wires_a_namespace_without_a_process() {
    require_root();
    let sb = Sandbox::new("mc").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let path = d
        .cli_ok(&["create", "--name", "sb", "-p", "8080:80"])
        .unwrap();
    let path = std::path::PathBuf::from(path.trim());
    assert!(
        path.starts_with("/proc") && path.ends_with("ns/net"),
        "{}",
        path.display()
    );
    assert!(
        !d.cli_ok(&["ps"]).unwrap().contains(" sb "),
        "ps hides created containers"
    );
    assert!(d.cli_ok(&["ps", "-a"]).unwrap().contains("created"));

    // A runtime starts its own process in the namespace; the published port reaches it.
    let c = d.container("sb").unwrap();
    assert_eq!(c.netns, path);
    let _web = EchoServer::start(&path, Proto::Tcp, addr(c.ip, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    d.cli_ok(&["rm", "sb"]).unwrap();
}

#[test]
fn an_existing_namespace_is_attached_and_released() {
    require_root();
    let sb = Sandbox::new("mn").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let theirs = Netns::new(&unique_name("mnx")).unwrap();
    let path = theirs.path();
    let printed = d
        .cli_ok(&[
            "create",
            "--name",
            "rt",
            "--netns",
            path.to_str().unwrap(),
            "-p",
            "8080:80",
        ])
        .unwrap();
    assert_eq!(printed.trim(), path.to_str().unwrap());
    let ip: Ipv4Addr = inspect(&d, "rt")["endpoints"][0]["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let addrs = String::from_utf8(
        theirs
            .ip(&["-o", "-4", "addr", "show", "eth0"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(addrs.contains(&ip.to_string()), "{addrs}");

    let _web = EchoServer::start(&path, Proto::Tcp, addr(ip, 80)).unwrap();
    echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    let _out =
        EchoServer::start(&sb.inet.path(), Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();
    echo_once(&path, Proto::Tcp, addr(Sandbox::INET_ADDR, 9000)).unwrap();

    // The same namespace cannot be attached twice.
    let out = d
        .cli(&["create", "--netns", path.to_str().unwrap()])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already attached"));

    d.cli_ok(&["rm", "rt"]).unwrap();
    let links = String::from_utf8(theirs.ip(&["-o", "link"]).unwrap().stdout).unwrap();
    assert!(
        !links.contains("eth0"),
        "the interface went, the namespace stays: {links}"
    );
}
