//! Port publishing: Docker's `-p` grammar, `[HOST_IP:][HOST_PORT[-END]:]CTR_PORT[-END][/PROTO]`,
//! parsed into specs, then expanded into one binding per container port. Error texts are
//! Docker's, because users search for them.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => netd_common::PROTO_TCP,
            Proto::Udp => netd_common::PROTO_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => bail!("invalid proto: sctp is not supported by netd's data path yet"),
            _ => bail!("invalid proto: {s}"),
        }
    }
}

/// An inclusive port range; a single port is `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn count(&self) -> u32 {
        u32::from(self.end - self.start) + 1
    }

    fn parse(s: &str, field: &str) -> Result<Self> {
        let bad = || anyhow::anyhow!("invalid {field}: {s}");
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (a, b),
            None => (s, s),
        };
        let start: u16 = start.parse().map_err(|_| bad())?;
        let end: u16 = end.parse().map_err(|_| bad())?;
        if start == 0 || end < start {
            return Err(bad());
        }
        Ok(PortRange { start, end })
    }
}

/// One `-p` argument, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// `None`: every node address (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    /// `None`: an ephemeral port is chosen.
    pub host_ports: Option<PortRange>,
    pub container_ports: PortRange,
    pub proto: Proto,
}

impl FromStr for PortSpec {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Self> {
        let (raw, proto) = match spec.rsplit_once('/') {
            Some((raw, proto)) => (raw, proto.parse()?),
            None => (spec, Proto::Tcp),
        };
        let (ip, host, container) = split_ip_host_container(raw, spec)?;
        let host_ip = match ip {
            "" => None,
            ip if ip.starts_with('[') => {
                bail!("invalid IP address: {ip}: IPv6 host addresses are not supported yet")
            }
            ip => Some(
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| anyhow::anyhow!("invalid IP address: {ip}"))?,
            ),
        };
        if container.is_empty() {
            bail!("no port specified: {spec}<empty>");
        }
        let container_ports = PortRange::parse(container, "containerPort")?;
        let host_ports = match host {
            "" => None,
            host => Some(PortRange::parse(host, "hostPort")?),
        };
        if let Some(hp) = host_ports
            && container_ports.count() > 1
            && hp.count() != container_ports.count()
        {
            bail!("invalid ranges specified for container and host Ports: {container} and {host}");
        }
        Ok(PortSpec {
            host_ip: host_ip.filter(|ip| !ip.is_unspecified()),
            host_ports,
            container_ports,
            proto,
        })
    }
}

/// `ip:host:container`, `host:container` or `container`.
fn split_ip_host_container<'a>(raw: &'a str, spec: &str) -> Result<(&'a str, &'a str, &'a str)> {
    let parts: Vec<&str> = raw.split(':').collect();
    Ok(match parts.as_slice() {
        [c] => ("", "", c),
        [h, c] => ("", h, c),
        [ip, h, c] => (ip, h, c),
        _ => bail!("invalid port specification: \"{spec}\""),
    })
}

/// One published port: what `netd port` prints and what the data path's map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    pub proto: Proto,
    pub container_port: u16,
    /// 0.0.0.0 for every node address.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
}

impl PortBinding {
    /// Two bindings conflict when they share protocol and port and either is on 0.0.0.0
    /// or both are on the same address.
    pub fn conflicts_with(&self, other: &PortBinding) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }
}

impl fmt::Display for PortBinding {
    /// Docker's `docker port` line: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.proto, self.host_ip, self.host_port
        )
    }
}

/// Expands specs into bindings. `is_free(binding)` says whether a candidate host port is
/// free (no other binding, no listening socket); `ephemeral` is the range for specs
/// without a host port (the node's `ip_local_port_range`).
pub fn bind(
    specs: &[PortSpec],
    ephemeral: PortRange,
    mut is_free: impl FnMut(&PortBinding, &[PortBinding]) -> bool,
) -> Result<Vec<PortBinding>> {
    let mut out: Vec<PortBinding> = Vec::new();
    for spec in specs {
        let host_ip = spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        for (i, container_port) in
            (spec.container_ports.start..=spec.container_ports.end).enumerate()
        {
            let candidate = |host_port| PortBinding {
                proto: spec.proto,
                container_port,
                host_ip,
                host_port,
            };
            let binding = match spec.host_ports {
                // One-to-one ranges, or a single pair.
                Some(hp) if hp.count() == spec.container_ports.count() => {
                    let b = candidate(hp.start + i as u16);
                    if !is_free(&b, &out) {
                        bail!(
                            "Bind for {}:{} failed: port is already allocated",
                            b.host_ip,
                            b.host_port
                        );
                    }
                    b
                }
                // A host range for one container port: the first free one.
                Some(hp) => (hp.start..=hp.end)
                    .map(candidate)
                    .find(|b| is_free(b, &out))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "Bind for {host_ip}:{}-{} failed: port is already allocated",
                            hp.start,
                            hp.end
                        )
                    })?,
                None => (ephemeral.start..=ephemeral.end)
                    .map(candidate)
                    .find(|b| is_free(b, &out))
                    .ok_or_else(|| anyhow::anyhow!("all ports are allocated"))?,
            };
            out.push(binding);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<PortSpec>().unwrap_err().to_string()
    }

    #[test]
    fn every_docker_form_parses() {
        let p = spec("8080:80");
        assert_eq!(
            (p.host_ip, p.host_ports, p.container_ports.start, p.proto),
            (
                None,
                Some(PortRange {
                    start: 8080,
                    end: 8080
                }),
                80,
                Proto::Tcp
            )
        );
        assert_eq!(spec("80").host_ports, None);
        assert_eq!(spec("127.0.0.1:8080:80").host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(spec("127.0.0.1::80").host_ports, None);
        assert_eq!(spec("0.0.0.0:8080:80").host_ip, None);
        assert_eq!(spec("8080:80/UDP").proto, Proto::Udp);
        assert_eq!(
            spec("8000-8009:80-89").container_ports,
            PortRange { start: 80, end: 89 }
        );
        assert_eq!(
            spec("8000-8010:80").host_ports,
            Some(PortRange {
                start: 8000,
                end: 8010
            })
        );
    }

    #[test]
    fn bad_specs_get_dockers_errors() {
        assert_eq!(err("8080:80/foo"), "invalid proto: foo");
        assert_eq!(err("localhost:8080:80"), "invalid IP address: localhost");
        assert_eq!(err("8080:80x"), "invalid containerPort: 80x");
        assert_eq!(err("99999:80"), "invalid hostPort: 99999");
        assert_eq!(
            err("8000-8005:80-90"),
            "invalid ranges specified for container and host Ports: 80-90 and 8000-8005"
        );
        assert_eq!(err("1:2:3:4"), "invalid port specification: \"1:2:3:4\"");
        assert!(err("80/sctp").contains("not supported"));
    }

    #[test]
    fn ranges_expand_one_to_one_and_conflicts_are_refused() {
        let range = PortRange {
            start: 40000,
            end: 40002,
        };
        let b = bind(&[spec("8000-8002:80-82/udp")], range, |_, _| true).unwrap();
        assert_eq!(
            b.iter()
                .map(|b| (b.host_port, b.container_port))
                .collect::<Vec<_>>(),
            [(8000, 80), (8001, 81), (8002, 82)]
        );
        let taken = PortBinding {
            proto: Proto::Tcp,
            container_port: 1,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
        };
        let e = bind(&[spec("127.0.0.1:8080:80")], range, |b, _| {
            !b.conflicts_with(&taken)
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 127.0.0.1:8080 failed: port is already allocated"
        );
    }

    #[test]
    fn ephemeral_and_host_ranges_take_the_first_free_port() {
        let range = PortRange {
            start: 40000,
            end: 40001,
        };
        let b = bind(&[spec("80"), spec("81")], range, |b, out| {
            !out.iter().any(|o| o.conflicts_with(b))
        })
        .unwrap();
        assert_eq!((b[0].host_port, b[1].host_port), (40000, 40001));
        let e = bind(&[spec("80"), spec("81"), spec("82")], range, |b, out| {
            !out.iter().any(|o| o.conflicts_with(b))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "all ports are allocated");
        let b = bind(&[spec("9000-9005:80")], range, |b, _| b.host_port != 9000).unwrap();
        assert_eq!(b[0].host_port, 9001);
    }

    #[test]
    fn docker_port_format() {
        let b = PortBinding {
            proto: Proto::Udp,
            container_port: 53,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 5353,
        };
        assert_eq!(b.to_string(), "53/udp -> 0.0.0.0:5353");
    }
}
