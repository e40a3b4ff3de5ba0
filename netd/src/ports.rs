//! Port publishing: Docker's `-p` grammar, `[HOST_IP:][HOST_PORT[-END]:]CTR_PORT[-END][/PROTO]`,
//! parsed into specs, then expanded into one binding per container port. Error texts are
//! Docker's, because users search for them.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, str::FromStr};

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

    /// Whether both take the same place in the data path's port map (protocol, host
    /// address and port): publishing one replaces the other.
    pub fn same_key(&self, other: &PortBinding) -> bool {
        (self.proto, self.host_ip, self.host_port) == (other.proto, other.host_ip, other.host_port)
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

/// Where host ports come from when a spec names none: Docker's allocator. It walks the
/// node's `ip_local_port_range` sequentially from one past the last port it handed out for
/// the same (protocol, host IP), wraps around, and skips `ip_local_reserved_ports`.
#[derive(Debug, Default)]
pub struct EphemeralPorts {
    pub range: Option<PortRange>,
    pub reserved: Vec<PortRange>,
    last: BTreeMap<(Proto, Ipv4Addr), u16>,
}

impl EphemeralPorts {
    pub fn new(range: PortRange, reserved: Vec<PortRange>) -> Self {
        EphemeralPorts {
            range: Some(range),
            reserved,
            last: BTreeMap::new(),
        }
    }

    /// The node's settings, read from /proc/sys (which follows the network namespace).
    pub fn from_node() -> Self {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap_or_default()
        };
        let range = parse_local_port_range(&read("ip_local_port_range")).unwrap_or(PortRange {
            start: 32768,
            end: 60999,
        });
        EphemeralPorts::new(
            range,
            parse_reserved_ports(&read("ip_local_reserved_ports")),
        )
    }

    /// Candidates in Docker's order for (proto, ip).
    fn candidates(&self, proto: Proto, ip: Ipv4Addr) -> impl Iterator<Item = u16> + '_ {
        let range = self.range.unwrap_or(PortRange {
            start: 32768,
            end: 60999,
        });
        let first = match self.last.get(&(proto, ip)) {
            Some(&last) if last >= range.start && last < range.end => last + 1,
            _ => range.start,
        };
        (first..=range.end)
            .chain(range.start..first)
            .filter(|p| !self.reserved.iter().any(|r| (r.start..=r.end).contains(p)))
    }

    fn handed_out(&mut self, b: &PortBinding) {
        self.last.insert((b.proto, b.host_ip), b.host_port);
    }
}

fn parse_local_port_range(s: &str) -> Option<PortRange> {
    let mut it = s.split_whitespace().map(|p| p.parse::<u16>());
    Some(PortRange {
        start: it.next()?.ok()?,
        end: it.next()?.ok()?,
    })
}

/// `ip_local_reserved_ports`: a comma-separated list of ports and ranges.
fn parse_reserved_ports(s: &str) -> Vec<PortRange> {
    s.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| PortRange::parse(p, "reserved port").ok())
        .collect()
}

/// Expands specs into bindings. `conflict(candidate, chosen_so_far)` names why a candidate
/// host port cannot be used (another binding, a process listening on the node), or `None`.
pub fn bind(
    specs: &[PortSpec],
    ephemeral: &mut EphemeralPorts,
    mut conflict: impl FnMut(&PortBinding, &[PortBinding]) -> Option<String>,
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
                    if let Some(why) = conflict(&b, &out) {
                        bail!("Bind for {}:{} failed: {why}", b.host_ip, b.host_port);
                    }
                    b
                }
                // A host range for one container port: the first free one.
                Some(hp) => (hp.start..=hp.end)
                    .map(candidate)
                    .find(|b| conflict(b, &out).is_none())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "Bind for {host_ip}:{}-{} failed: port is already allocated",
                            hp.start,
                            hp.end
                        )
                    })?,
                None => {
                    let b = ephemeral
                        .candidates(spec.proto, host_ip)
                        .map(candidate)
                        .find(|b| conflict(b, &out).is_none())
                        .ok_or_else(|| anyhow::anyhow!("all ports are allocated"))?;
                    ephemeral.handed_out(&b);
                    b
                }
            };
            out.push(binding);
        }
    }
    Ok(out)
}

/// `-P`: every `--expose` port not already published by a `-p` gets an ephemeral port.
/// `--expose` takes `PORT[-END][/PROTO]`.
pub fn publish_all(published: &[PortSpec], expose: &[String]) -> Result<Vec<PortSpec>> {
    let mut out = Vec::new();
    for e in expose {
        if e.contains(':') {
            bail!("invalid --expose {e}: expected PORT[-END][/PROTO]");
        }
        let spec: PortSpec = e
            .parse()
            .map_err(|err| anyhow::anyhow!("invalid --expose {e}: {err}"))?;
        for port in spec.container_ports.start..=spec.container_ports.end {
            let covered = published.iter().chain(&out).any(|p: &PortSpec| {
                p.proto == spec.proto
                    && (p.container_ports.start..=p.container_ports.end).contains(&port)
            });
            if !covered {
                out.push(PortSpec {
                    host_ip: None,
                    host_ports: None,
                    container_ports: PortRange {
                        start: port,
                        end: port,
                    },
                    proto: spec.proto,
                });
            }
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

    fn taken_by(
        existing: &[PortBinding],
    ) -> impl FnMut(&PortBinding, &[PortBinding]) -> Option<String> + '_ {
        move |b, out| {
            existing
                .iter()
                .chain(out)
                .any(|o| o.conflicts_with(b))
                .then(|| "port is already allocated".to_string())
        }
    }

    fn ephemeral(start: u16, end: u16) -> EphemeralPorts {
        EphemeralPorts::new(PortRange { start, end }, vec![])
    }

    #[test]
    fn ranges_expand_one_to_one_and_conflicts_are_refused() {
        let mut range = ephemeral(40000, 40002);
        let b = bind(&[spec("8000-8002:80-82/udp")], &mut range, taken_by(&[])).unwrap();
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
        let e = bind(&[spec("127.0.0.1:8080:80")], &mut range, taken_by(&[taken])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 127.0.0.1:8080 failed: port is already allocated"
        );
    }

    #[test]
    fn ephemeral_and_host_ranges_take_the_first_free_port() {
        let b = bind(
            &[spec("80"), spec("81")],
            &mut ephemeral(40000, 40001),
            taken_by(&[]),
        )
        .unwrap();
        assert_eq!((b[0].host_port, b[1].host_port), (40000, 40001));
        let e = bind(
            &[spec("80"), spec("81"), spec("82")],
            &mut ephemeral(40000, 40001),
            taken_by(&[]),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "all ports are allocated");
        let b = bind(&[spec("9000-9005:80")], &mut ephemeral(1, 1), |b, _| {
            (b.host_port == 9000).then(|| "taken".to_string())
        })
        .unwrap();
        assert_eq!(b[0].host_port, 9001);
    }

    #[test]
    fn ephemeral_ports_continue_after_the_last_one_and_wrap() {
        let mut eph = ephemeral(40000, 40003);
        let first = bind(&[spec("80")], &mut eph, taken_by(&[])).unwrap()[0];
        assert_eq!(first.host_port, 40000);
        // Released at once: Docker still moves on instead of reusing it.
        let second = bind(&[spec("80")], &mut eph, taken_by(&[])).unwrap()[0];
        assert_eq!(second.host_port, 40001);
        // Per (proto, host IP): UDP starts from the beginning.
        assert_eq!(
            bind(&[spec("53/udp")], &mut eph, taken_by(&[])).unwrap()[0].host_port,
            40000
        );
        let rest = bind(&[spec("81"), spec("82")], &mut eph, taken_by(&[])).unwrap();
        assert_eq!((rest[0].host_port, rest[1].host_port), (40002, 40003));
        // Wraps around, past the ports still taken.
        let wrapped = bind(&[spec("83")], &mut eph, taken_by(&[first])).unwrap()[0];
        assert_eq!(wrapped.host_port, 40001);
    }

    #[test]
    fn reserved_ports_are_skipped() {
        let reserved = parse_reserved_ports("40000-40001,40003\n");
        assert_eq!(reserved.len(), 2);
        let mut eph = EphemeralPorts::new(
            PortRange {
                start: 40000,
                end: 40004,
            },
            reserved,
        );
        let b = bind(&[spec("80"), spec("81")], &mut eph, taken_by(&[])).unwrap();
        assert_eq!((b[0].host_port, b[1].host_port), (40002, 40004));
    }

    #[test]
    fn publish_all_covers_exposed_ports_not_published_already() {
        let published = [spec("8080:80")];
        let extra = publish_all(
            &published,
            &["80".into(), "90-91/udp".into(), "80/udp".into()],
        )
        .unwrap();
        let got: Vec<(u16, Proto)> = extra
            .iter()
            .map(|s| (s.container_ports.start, s.proto))
            .collect();
        assert_eq!(got, [(90, Proto::Udp), (91, Proto::Udp), (80, Proto::Udp)]);
        assert!(extra.iter().all(|s| s.host_ports.is_none()));
        assert!(
            publish_all(&[], &["1:2".into()])
                .unwrap_err()
                .to_string()
                .contains("invalid --expose 1:2")
        );
        assert!(
            publish_all(&[], &["80/foo".into()])
                .unwrap_err()
                .to_string()
                .contains("invalid proto: foo")
        );
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
