//! The Container Network Interface as `netd-cni` speaks it (CNI 1.0.0 and 1.1.0, with
//! results also in 0.3.x and 0.4.0): the environment and configuration a runtime hands a
//! plugin, the errors with the spec's codes, and the results in the version asked for.
//! Pure: what the plugin asks of the daemon is `api::CniAttachRequest`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    api::{CniAttachRequest, CniAttachmentView},
    endpoint,
};

/// The versions whose configuration and results `netd-cni` understands.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version `VERSION` answers in.
pub const LATEST: &str = "1.1.0";
/// What the configuration's `type` must be: the plugin's file name, which runtimes exec.
pub const PLUGIN_TYPE: &str = "netd-cni";
/// The network a configuration without `network` attaches to.
pub const DEFAULT_NETWORK: &str = "netd0";
pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";

/// The spec's error codes (CNI 1.1.0, "Error codes").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_READY: u32 = 50;
    /// Plugin-specific (100 and up): `CHECK` found the attachment not as it was made.
    pub const CHECK_MISMATCH: u32 = 100;
    /// Plugin-specific: the daemon refused the request (an address or port taken).
    pub const REFUSED: u32 = 101;
}

/// An error as the spec's JSON: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl Error {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

fn invalid_env(msg: String) -> Error {
    Error::new(code::INVALID_ENVIRONMENT, msg)
}

fn invalid_config(msg: String) -> Error {
    Error::new(code::INVALID_CONFIG, msg)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "" => return Err(invalid_env("CNI_COMMAND is not set".into())),
            other => {
                return Err(invalid_env(format!(
                    "CNI_COMMAND={other:?}: expected ADD, DEL, CHECK, VERSION, GC or STATUS"
                )));
            }
        })
    }

    /// Commands about one container's interface: they need its ID, interface and (but
    /// `DEL`) its namespace.
    fn per_container(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`. netd reads `IP` and `MAC` (Podman's `--ip`
/// and `--mac-address`), keeps Kubernetes' `K8S_POD_*` as labels, and refuses any other
/// key unless `IgnoreUnknown` is true.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub labels: BTreeMap<String, String>,
}

impl Args {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let mut args = Args::default();
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(invalid_env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")));
            };
            match k {
                "IgnoreUnknown" => {
                    ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
                }
                "IP" => {
                    let ip = v.split_once('/').map_or(v, |(a, _)| a);
                    args.ip = Some(ip.parse().map_err(|_| {
                        invalid_env(format!("CNI_ARGS: IP={v}: not an IPv4 address"))
                    })?);
                }
                "MAC" => args.mac = Some(parse_unicast_mac(v, "CNI_ARGS: MAC", invalid_env)?),
                k if k.starts_with("K8S_") => {
                    args.labels.insert(k.to_string(), v.to_string());
                }
                k => unknown.push(k.to_string()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(invalid_env(format!(
                "CNI_ARGS: unknown key(s) {}; netd-cni reads IP, MAC and K8S_* (add IgnoreUnknown=1 to pass others)",
                unknown.join(", ")
            )));
        }
        Ok(args)
    }
}

fn parse_unicast_mac(
    v: &str,
    field: &str,
    err: impl Fn(String) -> Error,
) -> Result<[u8; 6], Error> {
    endpoint::parse_mac(v)
        .filter(|m| m[0] & 1 == 0 && *m != [0; 6])
        .ok_or_else(|| {
            err(format!(
                "{field}={v}: not a unicast MAC address such as 02:42:ac:11:00:02"
            ))
        })
}

/// The `CNI_*` environment of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: Args,
}

impl Env {
    /// From the variables (a lookup, so tests need not touch the process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |k: &str| var(k).unwrap_or_default();
        let command = Command::parse(&get("CNI_COMMAND"))?;
        let mut env = Env {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: var("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ifname: get("CNI_IFNAME"),
            args: Args::parse(&get("CNI_ARGS"))?,
        };
        if !command.per_container() {
            return Ok(env);
        }
        check_container_id(&env.container_id)?;
        check_ifname(&env.ifname)?;
        match (&env.netns, command) {
            (None, Command::Add | Command::Check) => {
                return Err(invalid_env("CNI_NETNS is not set".into()));
            }
            (Some(p), _) if !p.is_absolute() => {
                return Err(invalid_env(format!(
                    "CNI_NETNS={}: not an absolute path",
                    p.display()
                )));
            }
            _ => {}
        }
        if command == Command::Del {
            // DEL only needs to find the attachment; a namespace already gone is fine.
            env.netns = None;
        }
        Ok(env)
    }
}

/// The spec: letters, digits, `_`, `.` and `-`, starting with a letter or digit.
pub fn check_container_id(id: &str) -> Result<(), Error> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(invalid_env(format!(
            "CNI_CONTAINERID={id:?}: must be letters, digits, '_', '.' or '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// A Linux interface name: 1 to 15 bytes; netd also keeps to `[A-Za-z0-9_.-]`, not `.`
/// or `..`.
pub fn check_ifname(name: &str) -> Result<(), Error> {
    let ok = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(invalid_env(format!(
            "CNI_IFNAME={name:?}: must be 1 to 15 of [A-Za-z0-9_.-]"
        )));
    }
    Ok(())
}

/// One entry of the `portMappings` capability.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i64,
    pub container_port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

impl PortMapping {
    /// As netd's (Docker's) `-p` spec, checked field by field.
    fn spec(&self, i: usize) -> Result<String, Error> {
        let field = |f: &str| format!("runtimeConfig.portMappings[{i}].{f}");
        let port = |v: i64, f: &str| {
            u16::try_from(v)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid_config(format!("{}: {v} is not a port (1-65535)", field(f))))
        };
        let host_port = port(self.host_port, "hostPort")?;
        let container_port = port(self.container_port, "containerPort")?;
        let proto = match self.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            p => {
                return Err(invalid_config(format!(
                    "{}: {p:?}: netd publishes tcp and udp",
                    field("protocol")
                )));
            }
        };
        // As the portmap plugin: none is every address of the container's families,
        // `0.0.0.0` every IPv4 address, `::` every IPv6 address.
        let host_ip = match self.host_ip.as_str() {
            "" => String::new(),
            ip => match ip.parse::<IpAddr>().map(|a| a.to_canonical()) {
                Ok(IpAddr::V4(a)) => format!("{a}:"),
                Ok(IpAddr::V6(a)) => format!("[{a}]:"),
                Err(_) => {
                    return Err(invalid_config(format!(
                        "{}: {ip:?} is not an IP address",
                        field("hostIP")
                    )));
                }
            },
        };
        Ok(format!("{host_ip}{host_port}:{container_port}/{proto}"))
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Static addresses (`10.88.0.5/16` or `10.88.0.5`); netd takes one IPv4 address.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// `cni.dev/valid-attachments` of a `GC` call.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin (one plugin's part of a conflist, as the runtime
/// hands it: with `cniVersion` and `name` of the list, `runtimeConfig` and `prevResult`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The netd network to attach to.
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's API socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(
        default,
        rename = "cni.dev/valid-attachments",
        alias = "cni.dev/attachments"
    )]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self, Error> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            Error::new(code::DECODE, "cannot decode the network configuration")
                .with_details(e.to_string())
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(Error::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported: netd-cni speaks {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if conf.plugin_type != PLUGIN_TYPE {
            return Err(invalid_config(format!(
                "type {:?}: this plugin is {PLUGIN_TYPE:?}",
                conf.plugin_type
            )));
        }
        if conf.name.is_empty() {
            return Err(invalid_config("name: must not be empty".into()));
        }
        Ok(conf)
    }

    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(DEFAULT_NETWORK)
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// Result and command versions at 0.4.0 and later have `CHECK`; 1.1.0, `GC` and
    /// `STATUS`.
    pub fn at_least(&self, version: &str) -> bool {
        version_key(&self.cni_version) >= version_key(version)
    }

    /// What `ADD` (and `CHECK`) ask of the daemon: the capabilities and `CNI_ARGS`
    /// merged, the capabilities first (what a runtime configures beats what a user
    /// passes through).
    pub fn attach_request(&self, env: &Env) -> Result<CniAttachRequest, Error> {
        let ports = self
            .runtime_config
            .port_mappings
            .iter()
            .enumerate()
            .map(|(i, m)| m.spec(i))
            .collect::<Result<Vec<_>, _>>()?;
        let (ip, ip6) = static_addresses(&self.runtime_config.ips)?;
        let ip = ip.or(env.args.ip);
        let mac = match &self.runtime_config.mac {
            Some(m) => Some(parse_unicast_mac(m, "runtimeConfig.mac", invalid_config)?),
            None => env.args.mac,
        };
        Ok(CniAttachRequest {
            network: self.network().to_string(),
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            netns: env.netns.clone().unwrap_or_default(),
            cni_network: Some(self.name.clone()),
            ports,
            ip: ip.map(|i| i.to_string()),
            ip6: ip6.map(|i| i.to_string()),
            mac: mac.map(|m| endpoint::format_mac(&m)),
            labels: env.args.labels.clone(),
        })
    }
}

/// `runtimeConfig.ips`: at most one IPv4 and one IPv6 address (`ADDR` or `ADDR/LEN`).
fn static_addresses(ips: &[String]) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), Error> {
    let (mut v4, mut v6) = (None, None);
    for (i, given) in ips.iter().enumerate() {
        let addr = given.split_once('/').map_or(given.as_str(), |(a, _)| a);
        let slot = match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => v4.replace(a).map(|_| "IPv4"),
            Ok(std::net::IpAddr::V6(a)) => v6.replace(a).map(|_| "IPv6"),
            Err(_) => {
                return Err(invalid_config(format!(
                    "runtimeConfig.ips[{i}]: {given:?} is not an IP address"
                )));
            }
        };
        if let Some(family) = slot {
            return Err(invalid_config(format!(
                "runtimeConfig.ips: netd gives an interface one {family} address; more were asked for"
            )));
        }
    }
    Ok((v4, v6))
}

fn version_key(v: &str) -> (u32, u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// `VERSION`'s answer.
pub fn version_info() -> Value {
    json!({ "cniVersion": LATEST, "supportedVersions": SUPPORTED_VERSIONS })
}

/// `ADD`'s result in `version`: the bridge, the host end of the veth and the interface in
/// the sandbox; its address with the gateway; the default route when the network has a
/// way out; each family's the network has. 0.3.x and 0.4.0 mark each address
/// `"version": "4"` or `"6"`.
pub fn add_result(version: &str, a: &CniAttachmentView) -> Value {
    let legacy = version_key(version) < (1, 0, 0);
    let v4 = a.ip.zip(a.gateway).map(|(addr, gateway)| {
        let address = Ipv4Net::new(addr, a.prefix_len).map(|n| n.to_string());
        (address.unwrap_or_default(), IpAddr::V4(gateway))
    });
    let v6 = a
        .ip6
        .map(|(addr, prefix, gateway)| (format!("{addr}/{prefix}"), IpAddr::V6(gateway)));
    let mut ips = Vec::new();
    let mut routes: Vec<Value> = Vec::new();
    for (address, gateway) in [v4, v6].into_iter().flatten() {
        let (family, everywhere) = match gateway {
            IpAddr::V4(_) => ("4", "0.0.0.0/0"),
            IpAddr::V6(_) => ("6", "::/0"),
        };
        let mut ip = json!({ "address": address, "gateway": gateway, "interface": 2 });
        if legacy {
            ip["version"] = json!(family);
        }
        ips.push(ip);
        if a.default_route {
            routes.push(json!({ "dst": everywhere, "gw": gateway }));
        }
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            { "name": a.bridge, "mac": a.bridge_mac },
            { "name": a.host_veth, "mac": a.host_mac },
            { "name": a.ifname, "mac": a.mac, "sandbox": a.netns },
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

/// What `CHECK` compares the live attachment with, read from `prevResult`: the sandbox
/// interface's MAC and address, and whether it had the default route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Its IPv4 address, or on an IPv6-only network its IPv6 one.
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub mac: Option<String>,
    pub default_route: bool,
}

impl Expected {
    pub fn from_prev_result(prev: &Value, ifname: &str) -> Result<Self, Error> {
        let bad = |why: &str| invalid_config(format!("prevResult: {why}"));
        let interfaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
        let index = interfaces
            .iter()
            .position(|i| i["name"] == ifname && i.get("sandbox").is_some_and(|s| s.is_string()));
        let ips = prev["ips"].as_array().ok_or_else(|| bad("no ips"))?;
        // Its IPv4 address: what CHECK compares (an IPv6 one may be listed beside it); its
        // IPv6 one where it has no IPv4 (an IPv6-only network).
        let nets: Vec<IpNet> = ips
            .iter()
            .filter(|ip| match (index, ip["interface"].as_u64()) {
                (Some(i), Some(j)) => i as u64 == j,
                _ => true,
            })
            .filter_map(|ip| ip["address"].as_str().and_then(|a| a.parse().ok()))
            .collect();
        let net = nets
            .iter()
            .find(|n| matches!(n, IpNet::V4(_)))
            .or(nets.first())
            .ok_or_else(|| bad(&format!("no address of {ifname}")))?;
        let default_dst = match net {
            IpNet::V4(_) => "0.0.0.0/0",
            IpNet::V6(_) => "::/0",
        };
        let default_route = prev["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["dst"] == default_dst));
        Ok(Expected {
            ip: net.addr(),
            prefix_len: net.prefix_len(),
            mac: index.and_then(|i| interfaces[i]["mac"].as_str().map(str::to_string)),
            default_route,
        })
    }
}

/// `GC`'s keep list as a set, for the network named in the configuration. A `GC` with no
/// list is refused: read as empty, it would remove every attachment of the network.
pub fn valid_set(conf: &NetConf) -> Result<BTreeSet<ValidAttachment>, Error> {
    let list = conf.valid_attachments.clone().ok_or_else(|| {
        invalid_config(
            "cni.dev/valid-attachments: GC needs the list of attachments to keep (an empty list removes all of them)".into(),
        )
    })?;
    Ok(list.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, Error> {
        env_with(vars, "", "")
    }

    /// `vars` with `key` set to `value` (or left alone when `key` is empty).
    fn env_with(vars: &[(&str, &str)], key: &str, value: &str) -> Result<Env, Error> {
        let mut vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !key.is_empty() {
            vars.insert(key.into(), value.into());
        }
        Env::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn args_read_ip_mac_and_pod_labels_and_refuse_unknown_keys_unless_told() {
        let a = Args::parse(
            "IgnoreUnknown=1;IP=10.88.0.7;MAC=02:00:00:00:00:07;K8S_POD_NAME=web;FOO=bar",
        )
        .unwrap();
        assert_eq!(a.ip, Some(Ipv4Addr::new(10, 88, 0, 7)));
        assert_eq!(a.mac, Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(a.labels["K8S_POD_NAME"], "web");
        let e = Args::parse("FOO=bar").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.msg.contains("FOO"), "{e}");
        for bad in ["IP=10.88.0", "MAC=01:00:5e:00:00:01", "IP"] {
            assert_eq!(
                Args::parse(bad).unwrap_err().code,
                code::INVALID_ENVIRONMENT,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_environment_is_checked_per_command() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert!(env(&base).is_ok());
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENVIRONMENT);
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        for (k, v, field) in [
            ("CNI_COMMAND", "ATTACH", "CNI_COMMAND"),
            ("CNI_CONTAINERID", "", "CNI_CONTAINERID"),
            ("CNI_CONTAINERID", "-x", "CNI_CONTAINERID"),
            ("CNI_IFNAME", "eth0/../x", "CNI_IFNAME"),
            ("CNI_IFNAME", "a-very-long-ifname", "CNI_IFNAME"),
            ("CNI_NETNS", "", "CNI_NETNS"),
            ("CNI_NETNS", "relative/ns", "CNI_NETNS"),
        ] {
            let e = env_with(&base, k, v).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENVIRONMENT, "{k}={v}");
            assert!(e.msg.contains(field), "{k}={v}: {e}");
        }
        // DEL does not need the namespace.
        let del = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(env(&del).unwrap().netns, None);
    }

    fn conf(json: Value) -> Result<NetConf, Error> {
        NetConf::parse(json.to_string().as_bytes())
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let ok = json!({"cniVersion": "1.0.0", "name": "n", "type": "netd-cni"});
        assert_eq!(conf(ok.clone()).unwrap().network(), "netd0");
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, code::DECODE);
        let mut v = ok.clone();
        v["cniVersion"] = json!("2.0.0");
        assert_eq!(conf(v).unwrap_err().code, code::INCOMPATIBLE_VERSION);
        let mut v = ok.clone();
        v["type"] = json!("bridge");
        assert_eq!(conf(v).unwrap_err().code, code::INVALID_CONFIG);
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        for (mappings, field) in [
            (
                json!([{"hostPort": 0, "containerPort": 80}]),
                "portMappings[0].hostPort",
            ),
            (
                json!([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 70000, "containerPort": 80}]),
                "portMappings[1].hostPort",
            ),
            (
                json!([{"hostPort": 8080, "containerPort": 80, "protocol": "sctp"}]),
                "portMappings[0].protocol",
            ),
            (
                json!([{"hostPort": 8080, "containerPort": 80, "hostIP": "localhost"}]),
                "portMappings[0].hostIP",
            ),
        ] {
            let mut v = ok.clone();
            v["runtimeConfig"] = json!({ "portMappings": mappings });
            let e = conf(v).unwrap().attach_request(&e).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert!(e.msg.contains(field), "{e}");
        }
        let mut v = ok;
        v["runtimeConfig"] = json!({
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
                {"hostPort": 8443, "containerPort": 443, "hostIP": "2001:db8::1"},
                {"hostPort": 8053, "containerPort": 53, "protocol": "UDP", "hostIP": "0.0.0.0"},
            ],
            "ips": ["10.88.0.9/16"],
            "mac": "02:00:00:00:00:09",
        });
        let req = conf(v).unwrap().attach_request(&e).unwrap();
        assert_eq!(
            req.ports,
            [
                "8080:80/tcp",
                "127.0.0.1:5353:53/udp",
                "[2001:db8::1]:8443:443/tcp",
                "0.0.0.0:8053:53/udp"
            ]
        );
        assert_eq!(req.ip.as_deref(), Some("10.88.0.9"));
        assert_eq!(req.mac.as_deref(), Some("02:00:00:00:00:09"));
    }

    /// The example conflists shipped in `netd/cni/` hand netd-cni a valid configuration,
    /// as a runtime builds it: the list's `cniVersion` and `name` with the plugin's keys.
    #[test]
    fn the_shipped_conflists_are_valid() {
        for file in ["10-netd.conflist", "podman-web.conflist"] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/cni/");
            let text = std::fs::read_to_string(format!("{path}{file}")).unwrap();
            let list: Value = serde_json::from_str(&text).unwrap();
            // Podman 4.3 refuses results of 1.1.0.
            assert_eq!(list["cniVersion"], "1.0.0", "{file}");
            let mut plugin = list["plugins"][0].clone();
            plugin["cniVersion"] = list["cniVersion"].clone();
            plugin["name"] = list["name"].clone();
            let conf = NetConf::parse(plugin.to_string().as_bytes()).unwrap();
            assert_ne!(conf.network(), DEFAULT_NETWORK, "{file}: names its network");
            assert_eq!(plugin["capabilities"]["portMappings"], true, "{file}");
        }
    }

    fn attachment() -> CniAttachmentView {
        CniAttachmentView {
            name: "c1-eth0".into(),
            network: "n1".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            ip: Some(Ipv4Addr::new(10, 88, 0, 2)),
            prefix_len: 16,
            gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
            ip6: None,
            default_route: true,
            mac: "02:42:0a:58:00:02".into(),
            bridge: "br-n1".into(),
            bridge_mac: "02:00:00:00:00:01".into(),
            host_veth: "ndv0123".into(),
            host_mac: "02:00:00:00:00:02".into(),
            ports: Vec::new(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn results_are_in_the_version_asked_for_and_check_reads_them_back() {
        for version in SUPPORTED_VERSIONS {
            let r = add_result(version, &attachment());
            assert_eq!(r["cniVersion"], version);
            assert_eq!(r["ips"][0]["address"], "10.88.0.2/16");
            assert_eq!(r["interfaces"][2]["sandbox"], "/run/netns/x");
            assert_eq!(r["ips"][0]["interface"], 2);
            assert_eq!(
                r["ips"][0].get("version").is_some(),
                version_key(version) < (1, 0, 0)
            );
            let e = Expected::from_prev_result(&r, "eth0").unwrap();
            assert_eq!(
                e,
                Expected {
                    ip: Ipv4Addr::new(10, 88, 0, 2).into(),
                    prefix_len: 16,
                    mac: Some("02:42:0a:58:00:02".into()),
                    default_route: true
                }
            );
        }
        assert_eq!(
            Expected::from_prev_result(&json!({}), "eth0")
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn a_dual_stack_attachment_has_both_addresses_and_default_routes() {
        let a = CniAttachmentView {
            ip6: Some((
                "fd00:88::2".parse().unwrap(),
                64,
                "fd00:88::1".parse().unwrap(),
            )),
            ..attachment()
        };
        for version in SUPPORTED_VERSIONS {
            let r = add_result(version, &a);
            assert_eq!(r["ips"][1]["address"], "fd00:88::2/64", "{version}");
            assert_eq!(r["ips"][1]["gateway"], "fd00:88::1");
            assert_eq!(r["ips"][1]["interface"], 2);
            if version_key(version) < (1, 0, 0) {
                assert_eq!(r["ips"][1]["version"], "6");
            }
            assert_eq!(r["routes"][1], json!({"dst": "::/0", "gw": "fd00:88::1"}));
            // CHECK compares the IPv4 side, wherever it is listed.
            let mut reordered = r.clone();
            reordered["ips"].as_array_mut().unwrap().reverse();
            let e = Expected::from_prev_result(&reordered, "eth0").unwrap();
            assert_eq!(e.ip, Ipv4Addr::new(10, 88, 0, 2));
        }
    }

    #[test]
    fn an_ipv6_only_attachment_has_its_ipv6_address_and_route_alone_and_check_reads_them() {
        let a = CniAttachmentView {
            ip: None,
            prefix_len: 0,
            gateway: None,
            ip6: Some((
                "fd00:61::2".parse().unwrap(),
                64,
                "fd00:61::1".parse().unwrap(),
            )),
            ..attachment()
        };
        for version in SUPPORTED_VERSIONS {
            let r = add_result(version, &a);
            assert_eq!(r["ips"].as_array().unwrap().len(), 1, "{r}");
            assert_eq!(r["ips"][0]["address"], "fd00:61::2/64", "{version}");
            assert_eq!(r["routes"], json!([{"dst": "::/0", "gw": "fd00:61::1"}]));
            let e = Expected::from_prev_result(&r, "eth0").unwrap();
            assert_eq!(
                (e.ip, e.prefix_len, e.default_route),
                ("fd00:61::2".parse().unwrap(), 64, true)
            );
        }
    }

    #[test]
    fn static_addresses_are_one_per_family() {
        let ips =
            |v: &[&str]| static_addresses(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            ips(&["10.88.0.5/16", "fd00:88::5/64"]).unwrap(),
            (
                Some(Ipv4Addr::new(10, 88, 0, 5)),
                Some("fd00:88::5".parse().unwrap())
            )
        );
        assert_eq!(ips(&["fd00:88::5"]).unwrap().0, None);
        let e = ips(&["10.88.0.5", "10.88.0.6"]).unwrap_err();
        assert!(
            e.msg.contains("one IPv4 address; more were asked for"),
            "{}",
            e.msg
        );
        let e = ips(&["fd00::1", "fd00::2"]).unwrap_err();
        assert!(e.msg.contains("one IPv6 address"), "{}", e.msg);
        let e = ips(&["ten"]).unwrap_err();
        assert!(
            e.msg
                .contains("runtimeConfig.ips[0]: \"ten\" is not an IP address"),
            "{}",
            e.msg
        );
    }
}
