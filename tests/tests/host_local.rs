//! Processes of the node reach published ports through 127.0.0.1, `[::1]` and the node's
//! own addresses, with no proxy process; processes of other namespaces are not affected.

use std::net::Ipv6Addr;

use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, require_root};

/// A client in Python: connects (or sends, for UDP), and prints the peer it sees and
/// what came back.
const CLIENT: &str = r#"
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(b"hello")
        data, peer = s.recv(100), s.getpeername()
    elif proto == "udp-connected":
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect((host, port))
        s.send(b"hello")
        data, peer = s.recv(100), s.getpeername()
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(b"hello", (host, port))
        data, peer = s.recvfrom(100)
    at = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
    print(f"{at}:{peer[1]} {data.decode()}")
except OSError as e:
    print(f"error {e.__class__.__name__}")
"#;

fn call(d: &Daemon, ns: &netd_tests::Netns, host: &str, port: u16, proto: &str) -> String {
    let out = d
        .host_process(
            ns,
            &["python3", "-c", CLIENT, host, &port.to_string(), proto],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn node_process_reaches_published_ports_via_loopback_and_node_address() {
    require_root();
    let sb = Sandbox::new("hl").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d
        .run_idle_container("web", &["8080:80", "5353:53/udp"])
        .unwrap();
    let tcp = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
    let _udp = EchoServer::start(&web.netns, Proto::Udp, addr(web.ip, 53)).unwrap();
    let node = Sandbox::NODE_ADDR.to_string();

    // The process sees the address it called, not the container's.
    assert_eq!(
        call(&d, &sb.node, "127.0.0.1", 8080, "tcp"),
        "127.0.0.1:8080 hello"
    );
    assert_eq!(
        call(&d, &sb.node, &node, 8080, "tcp"),
        format!("{node}:8080 hello")
    );
    assert_eq!(
        call(&d, &sb.node, "127.0.0.1", 5353, "udp"),
        "127.0.0.1:5353 hello"
    );
    // An IPv6 socket calling a v4-mapped address goes over IPv4 (not IPv6-only):
    // redirected the same, and it too sees the address it called.
    assert_eq!(
        call(&d, &sb.node, "::ffff:127.0.0.1", 8080, "tcp"),
        "[::ffff:127.0.0.1]:8080 hello"
    );
    assert_eq!(
        call(&d, &sb.node, &format!("::ffff:{node}"), 8080, "tcp"),
        format!("[::ffff:{node}]:8080 hello")
    );
    assert_eq!(
        call(&d, &sb.node, "::ffff:127.0.0.1", 5353, "udp"),
        "[::ffff:127.0.0.1]:5353 hello"
    );
    // The container has IPv4 only; NAT46 (on by default) publishes its ports on [::]
    // too: an IPv6 socket is led to its v4-mapped address and sees the address it
    // called. UDP through a connected socket (the kernel refuses to send an unconnected
    // IPv6 socket's datagram to a v4-mapped address a socket hook chose: EOPNOTSUPP).
    let node6 = Sandbox::NODE_ADDR6.to_string();
    assert_eq!(call(&d, &sb.node, "::1", 8080, "tcp"), "[::1]:8080 hello");
    assert_eq!(
        call(&d, &sb.node, &node6, 8080, "tcp"),
        format!("[{node6}]:8080 hello")
    );
    assert_eq!(
        call(&d, &sb.node, "::1", 5353, "udp-connected"),
        "[::1]:5353 hello"
    );
    assert_eq!(tcp.peers().len(), 6, "every call reached the container");
    // No proxy: nothing in the node listens on the published port.
    let listening = sb.node.exec(&["ss", "-Htln"]).unwrap().stdout;
    assert!(!String::from_utf8_lossy(&listening).contains(":8080"));
}

#[test]
fn a_binding_on_127_0_0_1_is_local_only() {
    require_root();
    let sb = Sandbox::new("hb").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d
        .run_idle_container("web", &["127.0.0.1:8443:443"])
        .unwrap();
    let server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 443)).unwrap();

    assert_eq!(
        call(&d, &sb.node, "127.0.0.1", 8443, "tcp"),
        "127.0.0.1:8443 hello"
    );
    let node = Sandbox::NODE_ADDR.to_string();
    assert!(
        call(&d, &sb.node, &node, 8443, "tcp").starts_with("error"),
        "not on the node's other addresses"
    );
    assert!(
        netd_tests::echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8443)).is_err()
    );
    assert_eq!(server.peers().len(), 1);
}

#[test]
fn processes_of_other_namespaces_are_not_redirected() {
    require_root();
    let sb = Sandbox::new("ho").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    let server = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();

    // Same cgroup, other network namespace: its 127.0.0.1 is its own.
    assert_eq!(
        call(&d, &sb.ext, "127.0.0.1", 8080, "tcp"),
        "error ConnectionRefusedError"
    );
    assert!(server.peers().is_empty());
}

#[test]
fn node_process_reaches_published_ports_via_ipv6_loopback_and_node_address() {
    require_root();
    let sb = Sandbox::new("h6").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let c1: Ipv6Addr = "fd00:10:6::10".parse().unwrap();
    d.cli_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.10.6.0/24",
        "--subnet",
        "fd00:10:6::/64",
        "ds",
    ])
    .unwrap();
    let web = d
        .run_idle_on6(
            "web",
            "ds",
            c1,
            &["8080:80", "5353:53/udp", "[::1]:8443:443"],
        )
        .unwrap();
    let tcp = EchoServer::start(&web.netns, Proto::Tcp, addr(c1, 80)).unwrap();
    let _udp = EchoServer::start(&web.netns, Proto::Udp, addr(c1, 53)).unwrap();
    let tls = EchoServer::start(&web.netns, Proto::Tcp, addr(c1, 443)).unwrap();
    let node6 = Sandbox::NODE_ADDR6.to_string();

    // The process sees the address it called, not the container's.
    assert_eq!(call(&d, &sb.node, "::1", 8080, "tcp"), "[::1]:8080 hello");
    assert_eq!(
        call(&d, &sb.node, &node6, 8080, "tcp"),
        format!("[{node6}]:8080 hello")
    );
    assert_eq!(call(&d, &sb.node, "::1", 5353, "udp"), "[::1]:5353 hello");
    assert_eq!(tcp.peers().len(), 2, "both calls reached the container");
    // `[::1]` only: not the node's other addresses, not IPv4's loopback, not the LAN.
    assert_eq!(call(&d, &sb.node, "::1", 8443, "tcp"), "[::1]:8443 hello");
    for host in [node6.as_str(), "127.0.0.1"] {
        assert!(
            call(&d, &sb.node, host, 8443, "tcp").starts_with("error"),
            "{host}"
        );
    }
    assert!(
        netd_tests::echo_fails(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR6, 8443))
            .unwrap()
    );
    assert_eq!(tls.peers().len(), 1);
    // No proxy: nothing in the node listens on the published ports.
    let listening = sb.node.exec(&["ss", "-Htln"]).unwrap().stdout;
    let listening = String::from_utf8_lossy(&listening);
    assert!(
        !listening.contains(":8080") && !listening.contains(":8443"),
        "{listening}"
    );
}
