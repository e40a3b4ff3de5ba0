//! Ports that processes of the node hold, read from /proc/net (which follows the network
//! namespace of the reader: the daemon's, i.e. the node's). A published port that a
//! process already listens on would silently steal its traffic, so it is refused.

use std::net::Ipv4Addr;

use crate::ports::{PortBinding, Proto};

/// A socket of the node: protocol, local address (0.0.0.0 for any) and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSocket {
    pub proto: Proto,
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl NodeSocket {
    pub fn conflicts_with(&self, b: &PortBinding) -> bool {
        self.proto == b.proto
            && self.port == b.host_port
            && (self.addr == b.host_ip || self.addr.is_unspecified() || b.host_ip.is_unspecified())
    }
}

const TCP_LISTEN: &str = "0A";

/// Listening TCP sockets and bound UDP sockets, IPv4 and IPv6 (`::` counts as any IPv4
/// address, as a dual-stack socket takes IPv4 too).
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
                8 => Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?.to_le_bytes()),
                32 if addr.chars().all(|c| c == '0') => Ipv4Addr::UNSPECIFIED,
                // ::ffff:a.b.c.d is stored as 0000000000000000FFFF0000 then the IPv4 word.
                32 if addr[..24].eq_ignore_ascii_case("0000000000000000FFFF0000") => {
                    Ipv4Addr::from(u32::from_str_radix(&addr[24..], 16).ok()?.to_le_bytes())
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
";

    #[test]
    fn listening_sockets_are_found_and_connections_are_not() {
        let s = parse_proc_net(TCP, Proto::Tcp);
        assert_eq!(
            s,
            [NodeSocket {
                proto: Proto::Tcp,
                addr: Ipv4Addr::LOCALHOST,
                port: 8080
            }]
        );
        let s6 = parse_proc_net(TCP6, Proto::Tcp);
        assert_eq!(s6[0].addr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            (s6[1].addr, s6[1].port),
            (Ipv4Addr::new(10, 200, 0, 2), 8082)
        );
    }

    #[test]
    fn a_socket_on_one_address_conflicts_with_that_address_and_the_wildcard() {
        let s = NodeSocket {
            proto: Proto::Tcp,
            addr: Ipv4Addr::LOCALHOST,
            port: 8080,
        };
        let b = |ip: Ipv4Addr, proto| PortBinding {
            proto,
            container_port: 80,
            host_ip: ip,
            host_port: 8080,
        };
        assert!(s.conflicts_with(&b(Ipv4Addr::UNSPECIFIED, Proto::Tcp)));
        assert!(s.conflicts_with(&b(Ipv4Addr::LOCALHOST, Proto::Tcp)));
        assert!(!s.conflicts_with(&b(Ipv4Addr::new(10, 0, 0, 1), Proto::Tcp)));
        assert!(!s.conflicts_with(&b(Ipv4Addr::UNSPECIFIED, Proto::Udp)));
    }
}
