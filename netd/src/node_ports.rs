//! Ports that processes of the node hold, read from /proc/net (which follows the network
//! namespace of the reader: the daemon's, i.e. the node's). A published port that a
//! process already listens on would silently steal its traffic, so it is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ports::{PortBinding, Proto};

/// A socket of the node: protocol, local address (unspecified for any) and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSocket {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
}

impl NodeSocket {
    /// A socket on `::` may take IPv4 too (unless IPV6_V6ONLY, which /proc does not
    /// show): it conflicts with bindings of both families.
    pub fn conflicts_with(&self, b: &PortBinding) -> bool {
        let same_place = match self.addr {
            IpAddr::V6(a) if a.is_unspecified() => true,
            a => {
                a.is_ipv4() == b.host_ip.is_ipv4()
                    && (a == b.host_ip || a.is_unspecified() || b.host_ip.is_unspecified())
            }
        };
        self.proto == b.proto && self.port == b.host_port && same_place
    }
}

const TCP_LISTEN: &str = "0A";

/// Listening TCP sockets and bound UDP sockets, IPv4 and IPv6.
pub fn node_sockets() -> Vec<NodeSocket> {
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) {
            out.extend(parse_proc_net(&text, proto));
        }
    }
    out
}

pub fn parse_proc_net(text: &str, proto: Proto) -> Vec<NodeSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            if proto == Proto::Tcp && *state != TCP_LISTEN {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let addr = match addr.len() {
                8 => IpAddr::V4(Ipv4Addr::from(
                    u32::from_str_radix(addr, 16).ok()?.to_le_bytes(),
                )),
                // Four 32-bit words, each in the kernel's (little-endian) byte order.
                32 => {
                    let mut bytes = [0u8; 16];
                    for (i, word) in bytes.chunks_exact_mut(4).enumerate() {
                        let hex = addr.get(i * 8..i * 8 + 8)?;
                        word.copy_from_slice(&u32::from_str_radix(hex, 16).ok()?.to_le_bytes());
                    }
                    // ::ffff:a.b.c.d is the IPv4 address.
                    IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical()
                }
                _ => return None,
            };
            (port != 0).then_some(NodeSocket { proto, addr, port })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0200C80A:0016 0100C80A:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 0000000000000000FFFF00000200C80A:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: B80D0120000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000
";

    #[test]
    fn listening_sockets_are_found_and_connections_are_not() {
        let s = parse_proc_net(TCP, Proto::Tcp);
        assert_eq!(
            s,
            [NodeSocket {
                proto: Proto::Tcp,
                addr: IpAddr::from([127, 0, 0, 1]),
                port: 8080
            }]
        );
        let s6 = parse_proc_net(TCP6, Proto::Tcp);
        assert_eq!(s6[0].addr, Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            (s6[1].addr, s6[1].port),
            (IpAddr::from([10, 200, 0, 2]), 8082)
        );
        assert_eq!(
            (s6[2].addr, s6[2].port),
            ("2001:db8::1".parse::<IpAddr>().unwrap(), 8083)
        );
    }

    #[test]
    fn a_socket_on_one_address_conflicts_with_that_address_and_the_wildcard() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let socket = |addr: &str| NodeSocket {
            proto: Proto::Tcp,
            addr: ip(addr),
            port: 8080,
        };
        let b = |addr: &str, proto| PortBinding {
            proto,
            container_port: 80,
            host_ip: ip(addr),
            host_port: 8080,
        };
        let s = socket("127.0.0.1");
        assert!(s.conflicts_with(&b("0.0.0.0", Proto::Tcp)));
        assert!(s.conflicts_with(&b("127.0.0.1", Proto::Tcp)));
        assert!(!s.conflicts_with(&b("10.0.0.1", Proto::Tcp)));
        assert!(!s.conflicts_with(&b("0.0.0.0", Proto::Udp)));
        assert!(!s.conflicts_with(&b("::", Proto::Tcp)));
        // A socket on every IPv4 address leaves IPv6 free; one on `::` may be dual-stack.
        assert!(!socket("0.0.0.0").conflicts_with(&b("::", Proto::Tcp)));
        assert!(socket("::").conflicts_with(&b("0.0.0.0", Proto::Tcp)));
        assert!(socket("::").conflicts_with(&b("2001:db8::1", Proto::Tcp)));
        let s6 = socket("2001:db8::1");
        assert!(s6.conflicts_with(&b("::", Proto::Tcp)));
        assert!(s6.conflicts_with(&b("2001:db8::1", Proto::Tcp)));
        assert!(!s6.conflicts_with(&b("2001:db8::2", Proto::Tcp)));
        assert!(!s6.conflicts_with(&b("0.0.0.0", Proto::Tcp)));
    }
}
