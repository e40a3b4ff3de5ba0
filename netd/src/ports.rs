//! Port publishing: Docker's `-p` grammar, `[HOST_IP:][HOST_PORT[-END]:]CTR_PORT[-END][/PROTO]`,
//! parsed into specs, then expanded into one binding per container port. Error texts are
//! Docker's, because users search for them.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

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
    /// `None`: every node address of each family the container has (`0.0.0.0` and
    /// `[::]`); `0.0.0.0` is every IPv4 address only, `::` every IPv6 one (Docker 27+).
    pub host_ip: Option<IpAddr>,
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
        let (ip, host, container) = split_ip_host_container(raw);
        let host_ip = match ip {
            "" => None,
            ip => Some(parse_host_ip(ip)?),
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
            host_ip,
            host_ports,
            container_ports,
            proto,
        })
    }
}

/// `ip:host:container`, `host:container` or `container`; as Docker, an IP of more than
/// one part is everything before the last two (`::1:8080:80`, `[::1]:8080:80`).
fn split_ip_host_container(raw: &str) -> (&str, &str, &str) {
    let mut parts = raw.rsplitn(3, ':');
    let container = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => ("", "", container),
        (Some(host), None) => ("", host, container),
        (Some(host), Some(ip)) => (ip, host, container),
    }
}

/// A host address as Docker takes it: IPv4, or IPv6 with or without brackets; an
/// IPv4-mapped IPv6 address is the IPv4 address it maps.
fn parse_host_ip(ip: &str) -> Result<IpAddr> {
    let bare = match ip.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| anyhow::anyhow!("invalid IP address {ip}: missing ']' in address"))?,
        None => ip,
    };
    let parsed: IpAddr = bare
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid IP address: {bare}"))?;
    Ok(parsed.to_canonical())
}

/// `0.0.0.0:8080` or `[::]:8080`, as Docker writes a host address and port.
pub fn host_end(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// `0.0.0.0` or `[::]`, as before a `:PORT` or a port range.
pub fn host_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// One published port: what `netd port` prints and what the data path's map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    pub proto: Proto,
    pub container_port: u16,
    /// `0.0.0.0` for every IPv4 address of the node, `::` for every IPv6 address.
    pub host_ip: IpAddr,
    pub host_port: u16,
}

impl PortBinding {
    /// Two bindings conflict when they share protocol, port and address family, and
    /// either is on every address of the family or both are on the same address.
    pub fn conflicts_with(&self, other: &PortBinding) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && self.host_ip.is_ipv4() == other.host_ip.is_ipv4()
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
    /// Docker's `docker port` line: `80/tcp -> 0.0.0.0:8080`, `80/tcp -> [::]:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.container_port,
            self.proto,
            host_end(self.host_ip, self.host_port)
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
    last: BTreeMap<(Proto, IpAddr), u16>,
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
    fn candidates(&self, proto: Proto, ip: IpAddr) -> impl Iterator<Item = u16> + '_ {
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

    fn handed_out(&mut self, proto: Proto, ip: IpAddr, port: u16) {
        self.last.insert((proto, ip), port);
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

/// The address families of a container's endpoint: what a binding on every address
/// (`-p 8080:80`) covers, and what a binding on one address needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Families {
    /// An endpoint's: IPv4 always (for now), IPv6 when it has an IPv6 address.
    pub fn with_ipv6(ipv6: bool) -> Families {
        Families { ipv4: true, ipv6 }
    }

    pub const IPV4: Families = Families {
        ipv4: true,
        ipv6: false,
    };
    pub const DUAL_STACK: Families = Families {
        ipv4: true,
        ipv6: true,
    };
}

/// The host addresses a spec binds: its own, or every address of each family (Docker's
/// `0.0.0.0` and `[::]`, in that order).
fn host_ips(spec: &PortSpec, families: Families) -> Result<Vec<IpAddr>> {
    let Some(ip) = spec.host_ip else {
        let every = [
            families.ipv4.then_some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            families.ipv6.then_some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ];
        return Ok(every.into_iter().flatten().collect());
    };
    let (has, family, hint) = match ip {
        IpAddr::V4(_) => (
            families.ipv4,
            "IPv4",
            "its network is IPv6-only (--ipv4=false)",
        ),
        IpAddr::V6(_) => (families.ipv6, "IPv6", "create its network with --ipv6"),
    };
    if !has {
        bail!(
            "invalid host IP {}: the container has no {family} address to publish to ({hint})",
            host_addr(ip),
        );
    }
    Ok(vec![ip])
}

/// Expands specs into bindings, for a container of `families`. A spec without a host
/// address gets the same host port on `0.0.0.0` and `[::]` (Docker 27+).
/// `conflict(candidate, chosen_so_far)` names why a candidate host port cannot be used
/// (another binding, a process listening on the node), or `None`.
pub fn bind(
    specs: &[PortSpec],
    families: Families,
    ephemeral: &mut EphemeralPorts,
    mut conflict: impl FnMut(&PortBinding, &[PortBinding]) -> Option<String>,
) -> Result<Vec<PortBinding>> {
    let mut out: Vec<PortBinding> = Vec::new();
    for spec in specs {
        let ips = host_ips(spec, families)?;
        let Some(&first_ip) = ips.first() else {
            continue;
        };
        for (i, container_port) in
            (spec.container_ports.start..=spec.container_ports.end).enumerate()
        {
            let at = |host_port| -> Vec<PortBinding> {
                ips.iter()
                    .map(|&host_ip| PortBinding {
                        proto: spec.proto,
                        container_port,
                        host_ip,
                        host_port,
                    })
                    .collect()
            };
            let mut why_not = |bs: &[PortBinding]| {
                bs.iter()
                    .find_map(|b| conflict(b, &out).map(|why| (*b, why)))
            };
            let chosen = match spec.host_ports {
                // One-to-one ranges, or a single pair.
                Some(hp) if hp.count() == spec.container_ports.count() => {
                    let bs = at(hp.start + i as u16);
                    if let Some((b, why)) = why_not(&bs) {
                        bail!(
                            "Bind for {} failed: {why}",
                            host_end(b.host_ip, b.host_port)
                        );
                    }
                    bs
                }
                // A host range for one container port: the first free one.
                Some(hp) => (hp.start..=hp.end)
                    .map(at)
                    .find(|bs| why_not(bs).is_none())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "Bind for {}:{}-{} failed: port is already allocated",
                            host_addr(first_ip),
                            hp.start,
                            hp.end
                        )
                    })?,
                None => {
                    let bs = ephemeral
                        .candidates(spec.proto, first_ip)
                        .map(at)
                        .find(|bs| why_not(bs).is_none())
                        .ok_or_else(|| anyhow::anyhow!("all ports are allocated"))?;
                    ephemeral.handed_out(spec.proto, first_ip, bs[0].host_port);
                    bs
                }
            };
            out.extend(chosen);
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

    fn ip(s: &str) -> IpAddr {
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
        assert_eq!(spec("127.0.0.1:8080:80").host_ip, Some(ip("127.0.0.1")));
        assert_eq!(spec("127.0.0.1::80").host_ports, None);
        // Explicitly every IPv4 address: IPv4 only, as Docker 27+.
        assert_eq!(spec("0.0.0.0:8080:80").host_ip, Some(ip("0.0.0.0")));
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
    fn ipv6_host_addresses_parse_with_or_without_brackets() {
        for (s, want) in [
            ("[::]:8080:80", "::"),
            ("[2001:db8::1]:8080:80", "2001:db8::1"),
            ("[::1]:8080:80/udp", "::1"),
            ("::1:8080:80", "::1"),
            ("[::1]::80", "::1"),
            // IPv4-mapped: the IPv4 address.
            ("[::ffff:10.0.0.1]:8080:80", "10.0.0.1"),
        ] {
            assert_eq!(spec(s).host_ip, Some(ip(want)), "{s}");
        }
        assert_eq!(spec("[::1]::80").host_ports, None);
        assert_eq!(spec("[::1]:8080:80/udp").proto, Proto::Udp);
        assert_eq!(
            spec("[2001:db8::1]:8000-8001:80-81").container_ports,
            PortRange { start: 80, end: 81 }
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
        assert_eq!(err("1:2:3:4"), "invalid IP address: 1:2");
        assert_eq!(
            err("[::1:8080:80"),
            "invalid IP address [::1: missing ']' in address"
        );
        assert_eq!(err("[fe80::zz]:8080:80"), "invalid IP address: fe80::zz");
        assert_eq!(err("[::1]:8080:80x"), "invalid containerPort: 80x");
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
        let b = bind(
            &[spec("8000-8002:80-82/udp")],
            Families::IPV4,
            &mut range,
            taken_by(&[]),
        )
        .unwrap();
        assert_eq!(
            b.iter()
                .map(|b| (b.host_port, b.container_port))
                .collect::<Vec<_>>(),
            [(8000, 80), (8001, 81), (8002, 82)]
        );
        let taken = PortBinding {
            proto: Proto::Tcp,
            container_port: 1,
            host_ip: ip("0.0.0.0"),
            host_port: 8080,
        };
        let e = bind(
            &[spec("127.0.0.1:8080:80")],
            Families::IPV4,
            &mut range,
            taken_by(&[taken]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 127.0.0.1:8080 failed: port is already allocated"
        );
    }

    #[test]
    fn ephemeral_and_host_ranges_take_the_first_free_port() {
        let b = bind(
            &[spec("80"), spec("81")],
            Families::IPV4,
            &mut ephemeral(40000, 40001),
            taken_by(&[]),
        )
        .unwrap();
        assert_eq!((b[0].host_port, b[1].host_port), (40000, 40001));
        let e = bind(
            &[spec("80"), spec("81"), spec("82")],
            Families::IPV4,
            &mut ephemeral(40000, 40001),
            taken_by(&[]),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "all ports are allocated");
        let b = bind(
            &[spec("9000-9005:80")],
            Families::IPV4,
            &mut ephemeral(1, 1),
            |b, _| (b.host_port == 9000).then(|| "taken".to_string()),
        )
        .unwrap();
        assert_eq!(b[0].host_port, 9001);
    }

    #[test]
    fn ephemeral_ports_continue_after_the_last_one_and_wrap() {
        let mut eph = ephemeral(40000, 40003);
        let first = bind(&[spec("80")], Families::IPV4, &mut eph, taken_by(&[])).unwrap()[0];
        assert_eq!(first.host_port, 40000);
        // Released at once: Docker still moves on instead of reusing it.
        let second = bind(&[spec("80")], Families::IPV4, &mut eph, taken_by(&[])).unwrap()[0];
        assert_eq!(second.host_port, 40001);
        // Per (proto, host IP): UDP starts from the beginning.
        assert_eq!(
            bind(&[spec("53/udp")], Families::IPV4, &mut eph, taken_by(&[])).unwrap()[0].host_port,
            40000
        );
        let rest = bind(
            &[spec("81"), spec("82")],
            Families::IPV4,
            &mut eph,
            taken_by(&[]),
        )
        .unwrap();
        assert_eq!((rest[0].host_port, rest[1].host_port), (40002, 40003));
        // Wraps around, past the ports still taken.
        let wrapped = bind(&[spec("83")], Families::IPV4, &mut eph, taken_by(&[first])).unwrap()[0];
        assert_eq!(wrapped.host_port, 40001);
    }

    #[test]
    fn a_dual_stack_container_gets_the_same_port_on_both_families() {
        let mut eph = ephemeral(40000, 40003);
        let ends = |bs: &[PortBinding]| bs.iter().map(|b| b.to_string()).collect::<Vec<_>>();
        let b = bind(
            &[spec("8080:80")],
            Families::DUAL_STACK,
            &mut eph,
            taken_by(&[]),
        )
        .unwrap();
        assert_eq!(ends(&b), ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]);
        // Explicit addresses are one family each.
        let b = bind(
            &[
                spec("0.0.0.0:8081:81"),
                spec("[::]:8082:82"),
                spec("[2001:db8::1]::83"),
            ],
            Families::DUAL_STACK,
            &mut eph,
            taken_by(&[]),
        )
        .unwrap();
        assert_eq!(
            ends(&b),
            [
                "81/tcp -> 0.0.0.0:8081",
                "82/tcp -> [::]:8082",
                "83/tcp -> [2001:db8::1]:40000"
            ]
        );
        // An ephemeral port free on IPv4 but taken on IPv6 is passed over for both.
        let taken6 = PortBinding {
            proto: Proto::Tcp,
            container_port: 1,
            host_ip: ip("::"),
            host_port: 40000,
        };
        let b = bind(
            &[spec("84")],
            Families::DUAL_STACK,
            &mut eph,
            taken_by(&[taken6]),
        )
        .unwrap();
        assert_eq!(
            ends(&b),
            ["84/tcp -> 0.0.0.0:40001", "84/tcp -> [::]:40001"]
        );
        // The families do not conflict with each other; each one's wildcard does within.
        let v4 = PortBinding {
            host_ip: ip("0.0.0.0"),
            ..taken6
        };
        assert!(!v4.conflicts_with(&taken6));
        let one6 = PortBinding {
            host_ip: ip("2001:db8::1"),
            ..taken6
        };
        assert!(one6.conflicts_with(&taken6));
        let e = bind(
            &[spec("[2001:db8::1]:40000:80")],
            Families::DUAL_STACK,
            &mut eph,
            taken_by(&[taken6]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for [2001:db8::1]:40000 failed: port is already allocated"
        );
        let e = bind(
            &[spec("[::1]:8080:80")],
            Families::IPV4,
            &mut eph,
            taken_by(&[]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid host IP [::1]: the container has no IPv6 address to publish to (create its network with --ipv6)"
        );
        // Without IPv6, no [::] binding.
        let b = bind(&[spec("8085:85")], Families::IPV4, &mut eph, taken_by(&[])).unwrap();
        assert_eq!(ends(&b), ["85/tcp -> 0.0.0.0:8085"]);
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
        let b = bind(
            &[spec("80"), spec("81")],
            Families::IPV4,
            &mut eph,
            taken_by(&[]),
        )
        .unwrap();
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
            host_ip: ip("0.0.0.0"),
            host_port: 5353,
        };
        assert_eq!(b.to_string(), "53/udp -> 0.0.0.0:5353");
        let b6 = PortBinding {
            host_ip: ip("::"),
            ..b
        };
        assert_eq!(b6.to_string(), "53/udp -> [::]:5353");
    }
}
