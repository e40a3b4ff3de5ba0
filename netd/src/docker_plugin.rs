//! Docker's plugin API v1 as a network and IPAM driver sees it (libnetwork's remote
//! drivers): the wire types of each call, spelled as Docker sends them, and their
//! translation into netd's own terms (network options, port specs, addresses). Pure
//! logic; what the calls do is the daemon's business (`daemon::docker`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ports::{PortRange, PortSpec, Proto};

/// The name Docker knows netd by: `docker network create -d netd --ipam-driver netd`.
pub const DRIVER_NAME: &str = "netd";
/// The media type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";
/// The address spaces netd's IPAM driver reports (Docker passes them back verbatim).
pub const LOCAL_ADDRESS_SPACE: &str = "netd-local";
pub const GLOBAL_ADDRESS_SPACE: &str = "netd-global";

/// Docker's option keys.
pub mod keys {
    pub const GENERIC: &str = "com.docker.network.generic";
    pub const INTERNAL: &str = "com.docker.network.internal";
    pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
    pub const PORTMAP: &str = "com.docker.network.portmap";
    /// `RequestAddress` of a network's gateway.
    pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
    pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
}

/// Go encodes an empty map or slice as `null`: read it as empty.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One of the pools Docker hands a driver in `CreateNetwork`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub address_space: String,
    /// The subnet, as CIDR.
    #[serde(default)]
    pub pool: String,
    /// The gateway, as CIDR (`172.30.0.1/16`).
    #[serde(default)]
    pub gateway: String,
}

#[derive(Debug, Deserialize)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// `DeleteNetwork`, `Leave`, `DeleteEndpoint`, `RevokeExternalConnectivity`,
/// `EndpointOperInfo`: the network, and the endpoint where there is one.
#[derive(Debug, Deserialize)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Interface {
    /// The endpoint's IPv4 address, as CIDR.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Deserialize)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<Interface>,
}

#[derive(Debug, Deserialize)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

#[derive(Debug, Deserialize)]
pub struct ProgramExternalConnectivity {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
}

/// One entry of `com.docker.network.portmap` (Docker's `types.PortBinding`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortMapping {
    /// The IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    /// The container's port.
    pub port: u16,
    /// Empty: every node address.
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    /// 0: the driver chooses (`-P`, `-p 80`).
    #[serde(default)]
    pub host_port: u16,
    /// Above `host_port`: a range to take the first free port of.
    #[serde(default)]
    pub host_port_end: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    #[serde(default)]
    pub address_space: String,
    /// `--subnet`, or empty: netd chooses.
    #[serde(default)]
    pub pool: String,
    /// `--ip-range`.
    #[serde(default)]
    pub sub_pool: String,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address asked for (`--ip`, `--gateway`), or empty.
    #[serde(default)]
    pub address: String,
    #[serde(default, deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Deserialize)]
pub struct ReleasePool {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// A network option's value as `-o` gives it (a string), or as Docker's own options come
/// (booleans, numbers).
fn option_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What `CreateNetwork` asks for, in netd's terms.
#[derive(Debug, PartialEq, Eq)]
pub struct NetworkPlan {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The IPv6 subnet and gateway of a network created with `--ipv6`.
    pub ipv6: Option<(Ipv6Net, Ipv6Addr)>,
    pub internal: bool,
    /// `-o KEY=VALUE` options, as `netd network create -o` takes them.
    pub options: Vec<String>,
}

impl CreateNetwork {
    /// The subnets, gateways and options of the network: one IPv4 pool, and one IPv6
    /// pool with `--ipv6` (netd's networks have one subnet per family).
    pub fn plan(&self) -> Result<NetworkPlan> {
        let pools = self.ipv4_data.as_deref().unwrap_or_default();
        let data = match pools {
            [one] => one,
            [] => bail!("no IPv4 subnet given: netd's networks need one"),
            _ => bail!(
                "{} IPv4 subnets given: a netd network has exactly one",
                pools.len()
            ),
        };
        let subnet: Ipv4Net = data
            .pool
            .parse()
            .with_context(|| format!("invalid subnet {:?} from Docker's IPAM", data.pool))?;
        let gateway = match data.gateway.as_str() {
            "" => bail!("no gateway given for subnet {subnet}"),
            g => cidr_address(g).with_context(|| format!("invalid gateway {g:?}"))?,
        };
        let enable_ipv6 = match self.options.get(keys::ENABLE_IPV6) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            Some(other) => bail!("invalid option {}: {other}", keys::ENABLE_IPV6),
        };
        let pools6 = self.ipv6_data.as_deref().unwrap_or_default();
        let ipv6 = match (enable_ipv6, pools6) {
            (false, []) => None,
            (false, [d, ..]) => bail!("invalid --subnet {}: an IPv6 subnet needs --ipv6", d.pool),
            (true, []) => bail!("no IPv6 subnet given with --ipv6: netd's IPv6 networks need one"),
            (true, [d]) => {
                let subnet: Ipv6Net = d.pool.parse().with_context(|| {
                    format!("invalid IPv6 subnet {:?} from Docker's IPAM", d.pool)
                })?;
                let gateway = match d.gateway.as_str() {
                    "" => bail!("no IPv6 gateway given for subnet {subnet}"),
                    g => cidr_address6(g).with_context(|| format!("invalid IPv6 gateway {g:?}"))?,
                };
                Some((subnet.trunc(), gateway))
            }
            (true, _) => bail!(
                "{} IPv6 subnets given: a netd network has one at most",
                pools6.len()
            ),
        };
        let internal = match self.options.get(keys::INTERNAL) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            Some(other) => bail!("invalid option {}: {other}", keys::INTERNAL),
        };
        let options = match self.options.get(keys::GENERIC) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(generic)) => generic
                .iter()
                .map(|(k, v)| format!("{k}={}", option_text(v)))
                .collect(),
            Some(other) => bail!("invalid {}: {other} is not an object", keys::GENERIC),
        };
        Ok(NetworkPlan {
            subnet: subnet.trunc(),
            gateway,
            ipv6,
            internal,
            options,
        })
    }
}

/// `172.30.0.2/16` (or a bare address) to the address.
pub fn cidr_address(s: &str) -> Result<Ipv4Addr> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not an IPv4 address"))
}

/// `fd00:30::2/64` (or a bare address) to the address.
pub fn cidr_address6(s: &str) -> Result<Ipv6Addr> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not an IPv6 address"))
}

/// Docker's port bindings of an endpoint (`com.docker.network.portmap`) as netd's port
/// specs. Absent: no ports.
pub fn port_specs(options: &BTreeMap<String, Value>) -> Result<Vec<PortSpec>> {
    let Some(map) = options.get(keys::PORTMAP) else {
        return Ok(Vec::new());
    };
    let mappings: Vec<PortMapping> = match map {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v.clone())
            .with_context(|| format!("invalid {}: {v}", keys::PORTMAP))?,
    };
    mappings.iter().map(PortMapping::spec).collect()
}

impl PortMapping {
    fn spec(&self) -> Result<PortSpec> {
        let proto = match self.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => bail!(
                "invalid port {}/sctp: netd publishes tcp and udp ports only",
                self.port
            ),
            n => bail!("invalid port {}: unknown IP protocol {n}", self.port),
        };
        if self.port == 0 {
            bail!("invalid containerPort: 0");
        }
        // Docker's: empty is every address of the container's families, `0.0.0.0`
        // every IPv4 address, `::` every IPv6 address.
        let host_ip = match self.host_ip.as_str() {
            "" => None,
            ip => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| anyhow::anyhow!("invalid IP address: {ip}"))?
                    .to_canonical(),
            ),
        };
        let host_ports = match (self.host_port, self.host_port_end) {
            (0, _) => None,
            (start, end) if end <= start => Some(PortRange { start, end: start }),
            (start, end) => Some(PortRange { start, end }),
        };
        Ok(PortSpec {
            host_ip,
            host_ports,
            container_ports: PortRange {
                start: self.port,
                end: self.port,
            },
            proto,
        })
    }
}

/// Docker's 64-hex-digit IDs, shown by their first 12 like Docker does.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// An ID Docker sent: hex digits only (it names netd's links and records).
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.len() < 12 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid {what} {id:?}: expected Docker's hexadecimal ID");
    }
    Ok(())
}

/// The sandbox's ID, from the path of its namespace (`…/netns/fec914805970`).
pub fn sandbox_id(sandbox_key: &str) -> &str {
    sandbox_key.rsplit('/').next().unwrap_or(sandbox_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: &str) -> BTreeMap<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn create_network_carries_subnet_gateway_internal_and_generic_options() {
        let req: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"ab12","Options":{"com.docker.network.enable_ipv6":false,
                "com.docker.network.internal":true,
                "com.docker.network.generic":{"com.docker.network.bridge.enable_icc":"false",
                                              "com.docker.network.driver.mtu":"1400"}},
                "IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"172.30.0.1/16","Pool":"172.30.0.0/16"}],
                "IPv6Data":[]}"#,
        )
        .unwrap();
        let plan = req.plan().unwrap();
        assert_eq!(plan.subnet, "172.30.0.0/16".parse().unwrap());
        assert_eq!(plan.gateway, Ipv4Addr::new(172, 30, 0, 1));
        assert!(plan.internal);
        assert_eq!(
            plan.options,
            [
                "com.docker.network.bridge.enable_icc=false",
                "com.docker.network.driver.mtu=1400"
            ]
        );
    }

    #[test]
    fn dual_stack_networks_carry_their_ipv6_subnet_and_gateway() {
        let req: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"ab12","Options":{"com.docker.network.enable_ipv6":true},
                "IPv4Data":[{"Gateway":"172.30.0.1/16","Pool":"172.30.0.0/16"}],
                "IPv6Data":[{"AddressSpace":"netd-local","Gateway":"fd00:30::1/64","Pool":"fd00:30::/64"}]}"#,
        )
        .unwrap();
        let plan = req.plan().unwrap();
        assert_eq!(plan.subnet, "172.30.0.0/16".parse().unwrap());
        assert_eq!(
            plan.ipv6,
            Some((
                "fd00:30::/64".parse().unwrap(),
                "fd00:30::1".parse().unwrap()
            ))
        );
        // IPv4 only: Docker sends an empty (or null) IPv6Data and enable_ipv6 false.
        let req: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"ab12","Options":{"com.docker.network.enable_ipv6":false},
                "IPv4Data":[{"Gateway":"10.1.0.1/24","Pool":"10.1.0.0/24"}],"IPv6Data":null}"#,
        )
        .unwrap();
        assert_eq!(req.plan().unwrap().ipv6, None);
    }

    #[test]
    fn what_a_network_cannot_have_is_refused_with_the_reason() {
        let v4 = r#""IPv4Data":[{"Gateway":"10.1.0.1/24","Pool":"10.1.0.0/24"}]"#;
        let v6 = |pools: &str| format!(r#""IPv6Data":[{pools}]"#);
        let one6 = r#"{"Gateway":"fd00:1::1/64","Pool":"fd00:1::/64"}"#;
        for (body, why) in [
            (
                format!(r#""Options":{{"com.docker.network.enable_ipv6":true}},{v4}"#),
                "no IPv6 subnet given with --ipv6",
            ),
            (
                format!(r#""Options":{{}},{v4},{}"#, v6(one6)),
                "invalid --subnet fd00:1::/64: an IPv6 subnet needs --ipv6",
            ),
            (
                format!(
                    r#""Options":{{"com.docker.network.enable_ipv6":true}},{v4},{}"#,
                    v6(&format!(
                        r#"{one6},{{"Gateway":"fd00:2::1/64","Pool":"fd00:2::/64"}}"#
                    ))
                ),
                "2 IPv6 subnets given",
            ),
            (
                format!(
                    r#""Options":{{"com.docker.network.enable_ipv6":true}},{v4},{}"#,
                    v6(r#"{"Gateway":"10.1.0.1/24","Pool":"fd00:1::/64"}"#)
                ),
                "invalid IPv6 gateway",
            ),
            (
                format!(
                    r#""Options":{{"com.docker.network.enable_ipv6":true}},{v4},{}"#,
                    v6(r#"{"Pool":"fd00:1::/64"}"#)
                ),
                "no IPv6 gateway given",
            ),
            (r#""IPv4Data":[]"#.to_string(), "no IPv4 subnet"),
        ] {
            let req: CreateNetwork =
                serde_json::from_str(&format!(r#"{{"NetworkID":"ab12",{body}}}"#)).unwrap();
            let e = format!("{:#}", req.plan().unwrap_err());
            assert!(e.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn ipv6_pools_and_addresses_are_read_as_docker_sends_them() {
        let req: RequestPool = serde_json::from_str(
            r#"{"AddressSpace":"netd-local","Pool":"","SubPool":"","Options":{},"V6":true}"#,
        )
        .unwrap();
        assert!(req.v6 && req.pool.is_empty());
        let req: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"ab12","EndpointID":"cd34","Options":{},
                "Interface":{"Address":"172.30.0.2/16","AddressIPv6":"fd00:30::10/64","MacAddress":""}}"#,
        )
        .unwrap();
        let iface = req.interface.unwrap();
        assert_eq!(
            cidr_address6(&iface.address_ipv6).unwrap(),
            "fd00:30::10".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            cidr_address6("fd00:30::2").unwrap(),
            "fd00:30::2".parse::<Ipv6Addr>().unwrap()
        );
        for bad in ["172.30.0.2/16", "nope", ""] {
            assert!(cidr_address6(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn portmaps_become_port_specs() {
        let specs = port_specs(&options(
            r#"{"com.docker.network.portmap":[
                {"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
                {"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":5353,"HostPortEnd":5353},
                {"Proto":6,"IP":"","Port":81,"HostIP":"","HostPort":0,"HostPortEnd":0},
                {"Proto":6,"IP":"","Port":82,"HostIP":"0.0.0.0","HostPort":9000,"HostPortEnd":9009},
                {"Proto":6,"IP":"","Port":83,"HostIP":"::","HostPort":8083,"HostPortEnd":8083},
                {"Proto":17,"IP":"","Port":84,"HostIP":"2001:db8::1","HostPort":0,"HostPortEnd":0}]}"#,
        ))
        .unwrap();
        assert_eq!(specs[0], "8080:80".parse().unwrap());
        assert_eq!(specs[1], "127.0.0.1:5353:53/udp".parse().unwrap());
        assert_eq!(specs[2], "81".parse().unwrap());
        assert_eq!(specs[3], "0.0.0.0:9000-9009:82".parse().unwrap());
        assert_eq!(specs[4], "[::]:8083:83".parse().unwrap());
        assert_eq!(specs[5], "[2001:db8::1]::84/udp".parse().unwrap());
        assert!(port_specs(&BTreeMap::new()).unwrap().is_empty());
    }

    #[test]
    fn unsupported_ports_are_refused_with_the_reason() {
        for (json, why) in [
            (r#"[{"Proto":132,"Port":80}]"#, "sctp"),
            (
                r#"[{"Proto":6,"Port":80,"HostIP":"nope"}]"#,
                "invalid IP address",
            ),
            (r#"[{"Proto":6,"Port":0}]"#, "containerPort"),
            (r#"{"Proto":6}"#, "invalid com.docker.network.portmap"),
        ] {
            let opts = options(&format!(r#"{{"com.docker.network.portmap":{json}}}"#));
            let e = format!("{:#}", port_specs(&opts).unwrap_err());
            assert!(e.contains(why), "{json}: {e}");
        }
    }

    #[test]
    fn ids_are_checked_and_shortened() {
        assert!(check_id("network", &"a".repeat(64)).is_ok());
        assert!(check_id("network", "../../etc").is_err());
        assert!(check_id("network", "abc").is_err());
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(
            sandbox_id("/var/run/docker/netns/fec914805970"),
            "fec914805970"
        );
    }
}
