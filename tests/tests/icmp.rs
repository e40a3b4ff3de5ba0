//! ICMP through the translations: ping out of a container, and errors that quote a
//! translated flow reaching the original sender.

use std::{io::ErrorKind, net::UdpSocket, time::Duration};

use netd_tests::{Daemon, Sandbox, echo::in_netns, require_root};

#[test]
fn ping_from_a_container_through_masquerade() {
    require_root();
    let sb = Sandbox::new("ip").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.run_idle_container("app", &[]).unwrap();

    // The internet host has no route to the container subnet: replies only come back
    // if the echo was masqueraded and its reply translated back.
    let out = d
        .cli_ok(&[
            "exec",
            "app",
            "--",
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            &Sandbox::INET_ADDR.to_string(),
        ])
        .unwrap();

    assert!(out.contains("2 received"), "{out}");
    let flows = d.cli_ok(&["conntrack", "--format", "json"]).unwrap();
    assert!(flows.contains("\"proto\": \"icmp\""), "{flows}");
}

#[test]
fn port_unreachable_for_a_masqueraded_flow_reaches_the_container() {
    require_root();
    let sb = Sandbox::new("iu").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let app = d.run_idle_container("app", &[]).unwrap();
    let closed = std::net::SocketAddr::new(Sandbox::INET_ADDR.into(), 9999);

    // A connected UDP socket reports an ICMP port unreachable as ECONNREFUSED; without the
    // error's translation it would only time out.
    let kind = in_netns(&app.netns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(closed)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send(b"anyone?")?;
        let mut buf = [0u8; 16];
        Ok(s.recv(&mut buf).map(|_| ()).err().map(|e| e.kind()))
    })
    .unwrap();

    assert_eq!(kind, Some(ErrorKind::ConnectionRefused));
    assert!(d.counter("UplinkIngress", "icmp_error_translated").unwrap() >= 1);
}
