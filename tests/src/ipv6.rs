//! What the IPv6 end-to-end tests (`ipv6`, `ipv6_policing`) share: a dual-stack network
//! whose IPv6 subnet is `SUBNET6`, its gateway and two container addresses on it, and
//! how they create such networks and run containers on them.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::{
    EchoServer, Proto, Sandbox,
    daemon::{Container, Daemon},
    echo_once,
};

/// The IPv6 subnet of the tests' dual-stack network.
pub const SUBNET6: &str = "fd00:10:1::/64";
/// Its gateway: the bridge's address, the node's on that network.
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 1);
/// The address of the first container on it (`--ip6`).
pub const C1: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 0x10);
/// The address of the second container on it.
pub const C2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 0x20);

/// `netd network create --ipv6` of network `name` with IPv4 subnet `v4` and IPv6 subnet
/// `v6`, and `options` (`-o ...`, `--internal`); panics if refused.
pub fn dual_stack(d: &Daemon, name: &str, v4: &str, v6: &str, options: &[&str]) {
    let mut args = vec![
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6,
    ];
    args.extend_from_slice(options);
    args.push(name);
    d.cli_ok(&args).unwrap();
}

/// An idle container `name` on `network`, at IPv6 address `ip6` if given (else IPAM's);
/// panics if it does not run.
pub fn run_on(d: &Daemon, name: &str, network: &str, ip6: Option<Ipv6Addr>) -> Container {
    match ip6 {
        Some(ip6) => d.run_idle_on6(name, network, ip6, &[]),
        None => d.run_idle_on(name, network, &[]),
    }
    .unwrap()
}

/// The LAN host reaches `server` through the node's published `port` over IPv6, and the
/// container sees the host's own address; panics otherwise.
pub fn published_to_lan6(sb: &Sandbox, proto: Proto, port: u16, server: &EchoServer) {
    echo_once(&sb.ext.path(), proto, v6(Sandbox::NODE_ADDR6, port)).unwrap();
    assert_eq!(
        server.peers().last().unwrap().ip(),
        IpAddr::V6(Sandbox::EXT_ADDR6),
        "{proto:?}: the container sees the client's own address"
    );
}

/// An IPv6 address and a port.
pub fn v6(a: Ipv6Addr, port: u16) -> SocketAddr {
    crate::addr(a, port)
}
