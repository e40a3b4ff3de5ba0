//! `netd network create`'s request and its validation: names, driver, options, MTU and the
//! address plan. Pure logic, so every error is unit-tested; the daemon adds what depends on
//! the node (overlaps with its routes and other networks, the bridge name being free).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Names a user may not create: Docker's predefined networks and netd's default.
pub const RESERVED_NAMES: [&str; 4] = ["bridge", "host", "none", crate::daemon::DEFAULT_NETWORK];

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    /// `--subnet`, `--gateway`, `--ip-range`: each once per family (`families`). A single
    /// string is taken too, as clients before IPv6 sent it.
    #[serde(default, deserialize_with = "one_or_many")]
    pub subnet: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub gateway: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub ip_range: Vec<String>,
    /// `--ipv6`: the network has an IPv6 subnet too (given, or one of the node's ULA /64s).
    #[serde(default)]
    pub ipv6: bool,
    /// `--ipv4=BOOL` (Docker's): `false` makes an IPv6-only network (with `--ipv6`, on
    /// the bridge driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<bool>,
    #[serde(default)]
    pub internal: bool,
    /// `-o KEY=VALUE`, as given.
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// `--aux-address NAME=IP`: addresses of other hosts on the network, never handed out.
    #[serde(default)]
    pub aux_addresses: Vec<String>,
    /// `--attachable`: an overlay network standalone containers may join.
    #[serde(default)]
    pub attachable: bool,
}

/// A list, or one string, or null.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// A network's address flags of one family, as given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressFlags<'a> {
    pub subnet: Option<&'a str>,
    pub gateway: Option<&'a str>,
    pub ip_range: Option<&'a str>,
}

/// A request's address flags split by family (an address with a `:` is IPv6), as
/// `docker network create --ipv6 --subnet 172.28.0.0/16 --subnet fd00:1::/64` takes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Families<'a> {
    /// None with `--ipv4=false`.
    pub v4: Option<AddressFlags<'a>>,
    /// With `--ipv6` only.
    pub v6: Option<AddressFlags<'a>>,
}

/// Split the address flags by family: each flag once per family, IPv6 values only with
/// `--ipv6`, IPv4 values only without `--ipv4=false`, a gateway or range only with a
/// subnet of its family.
pub fn families(req: &NetworkRequest) -> Result<Families<'_>> {
    let ipv4 = req.ipv4 != Some(false);
    if !ipv4 && !req.ipv6 {
        bail!(
            "invalid --ipv4=false: a network needs IPv4 or IPv6 (IPv4 or IPv6 must be enabled); give --ipv6 with it for an IPv6-only network"
        );
    }
    let mut v4 = AddressFlags::default();
    let mut v6 = AddressFlags::default();
    let flags = [
        ("--subnet", "subnet", &req.subnet),
        ("--gateway", "gateway", &req.gateway),
        ("--ip-range", "range", &req.ip_range),
    ];
    for (flag, what, values) in flags {
        for value in values {
            let (family, name) = match value.contains(':') {
                true => (&mut v6, "IPv6"),
                false => (&mut v4, "IPv4"),
            };
            if name == "IPv6" && !req.ipv6 {
                bail!(
                    "invalid {flag} {value}: an IPv6 {what} needs --ipv6 (IPv6 {what} provided but --ipv6 not set)"
                );
            }
            if name == "IPv4" && !ipv4 {
                bail!(
                    "invalid {flag} {value}: an IPv4 {what} on an IPv6-only network (--ipv4=false); leave --ipv4 out for dual stack"
                );
            }
            let slot = match flag {
                "--subnet" => &mut family.subnet,
                "--gateway" => &mut family.gateway,
                _ => &mut family.ip_range,
            };
            if let Some(first) = slot.replace(value) {
                bail!(
                    "invalid {flag} {value}: a network has one {name} {what} at most, and {first} was given too"
                );
            }
        }
    }
    if v4.subnet.is_none() && (v4.gateway.is_some() || v4.ip_range.is_some()) {
        bail!("--gateway and --ip-range need --subnet: give the subnet they belong to");
    }
    if v6.subnet.is_none()
        && let Some(given) = v6.gateway.or(v6.ip_range)
    {
        bail!(
            "invalid {} {given}: an IPv6 --gateway or --ip-range needs the IPv6 --subnet it belongs to",
            if v6.gateway == Some(given) {
                "--gateway"
            } else {
                "--ip-range"
            }
        );
    }
    Ok(Families {
        v4: ipv4.then_some(v4),
        v6: req.ipv6.then_some(v6),
    })
}

/// The default network's IPv6, from `netd daemon --ipv6 [--fixed-cidr-v6 CIDR]`
/// (Docker's daemon flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultIpv6 {
    /// IPv4 only.
    #[default]
    Off,
    /// A /64 of the node's ULA /48, as a user network with `--ipv6` alone.
    Chosen,
    /// `--fixed-cidr-v6`.
    Fixed(ipnet::Ipv6Net),
}

/// Check the daemon's IPv6 flags for the default network.
pub fn default_ipv6(ipv6: bool, fixed_cidr_v6: Option<&str>) -> Result<DefaultIpv6> {
    match (ipv6, fixed_cidr_v6) {
        (false, None) => Ok(DefaultIpv6::Off),
        (false, Some(cidr)) => bail!(
            "invalid --fixed-cidr-v6 {cidr}: it needs --ipv6 (the default network has IPv6 only with --ipv6)"
        ),
        (true, None) => Ok(DefaultIpv6::Chosen),
        (true, Some(cidr)) => Ok(DefaultIpv6::Fixed(crate::ipam6::parse_subnet_of(
            "--fixed-cidr-v6",
            cidr,
        )?)),
    }
}

/// The network drivers netd knows. `Ipvlan` is known to be refused: the daemon asks the
/// kernel whether it has ipvlan, to say what is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Bridge,
    Macvlan,
    Ipvlan,
}

/// How a macvlan network's containers share its parent (the kernel's modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Containers of the network reach each other through the parent, not the wire.
    #[default]
    Bridge,
    /// Everything goes out to the switch, which may reflect it (802.1Qbg).
    Vepa,
    /// Containers never reach each other, even reflected.
    Private,
    /// One container takes the parent over.
    Passthru,
}

impl MacvlanMode {
    pub fn name(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Private => "private",
            MacvlanMode::Passthru => "passthru",
        }
    }
}

/// A macvlan network's own settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacvlanSettings {
    /// `-o parent=IFACE`; none: an internal network on a parent netd makes.
    pub parent: Option<String>,
    pub mode: MacvlanMode,
    /// `com.netd.macvlan.host_access`: a shim on the node reaches the containers.
    pub host_access: bool,
}

/// What the options and flags of a request amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub driver: Driver,
    /// The macvlan driver's settings (`driver` is `Macvlan`).
    pub macvlan: Option<MacvlanSettings>,
    pub bridge: Option<String>,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    pub gateway_mode: GatewayMode,
    /// The IPv6 side's (`gateway_mode_ipv6`): `Nat` or `Routed`.
    pub gateway_mode6: GatewayMode,
    pub options: BTreeMap<String, String>,
}

/// How hosts beyond the uplink reach the network's containers (Docker's
/// `gateway_mode_ipv4`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayMode {
    /// Masqueraded; from outside only published ports and the replies of the containers'
    /// own connections get in.
    #[default]
    Nat,
    /// Masqueraded, and containers can be reached directly by hosts with a route to
    /// them (Docker's "nat-unprotected").
    NatUnprotected,
    /// Not masqueraded: the subnet is routed, and hosts with a route to it reach its
    /// containers directly.
    Routed,
}

impl GatewayMode {
    /// Whether hosts beyond the uplink may reach containers directly.
    pub fn direct_routing(self) -> bool {
        self != GatewayMode::Nat
    }
}

const OPT_BRIDGE_NAME: &str = "bridge.name";
const OPT_ICC: &str = "bridge.enable_icc";
const OPT_MASQUERADE: &str = "bridge.enable_ip_masquerade";
const OPT_MTU: &str = "driver.mtu";
/// netd's spelling, and Docker's.
const OPT_GATEWAY_MODE: &str = "network.gateway_mode";
const OPT_GATEWAY_MODE_DOCKER: &str = "bridge.gateway_mode_ipv4";
/// The same for the network's IPv6 side.
const OPT_GATEWAY_MODE6: &str = "network.gateway_mode_ipv6";
const OPT_GATEWAY_MODE6_DOCKER: &str = "bridge.gateway_mode_ipv6";
const KNOWN_OPTIONS: [&str; 8] = [
    OPT_BRIDGE_NAME,
    OPT_ICC,
    OPT_MASQUERADE,
    OPT_MTU,
    OPT_GATEWAY_MODE,
    OPT_GATEWAY_MODE_DOCKER,
    OPT_GATEWAY_MODE6,
    OPT_GATEWAY_MODE6_DOCKER,
];
/// netd's option prefix, and Docker's, accepted as the same options.
const PREFIXES: [&str; 2] = ["com.netd.", "com.docker.network."];
/// The macvlan driver's options: Docker's (unprefixed), and netd's own.
const OPT_PARENT: &str = "parent";
const OPT_MACVLAN_MODE: &str = "macvlan_mode";
const OPT_HOST_ACCESS: &str = "com.netd.macvlan.host_access";
const MACVLAN_OPTIONS: [&str; 5] = [
    OPT_PARENT,
    OPT_MACVLAN_MODE,
    OPT_HOST_ACCESS,
    "com.docker.network.driver.mtu",
    "com.netd.driver.mtu",
];

/// Docker's rule for network (and container) names.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!(
            "invalid {kind} name \"{name}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed (1 to 64 characters)"
        );
    }
    Ok(())
}

/// A bridge's name: a Linux interface name (1 to 15 bytes) of `[A-Za-z0-9_.-]` only. No
/// `%` (the kernel expands `br%d` to the first free `br0`, `br1`..., which netd would then
/// never find again), no control characters, and not one of netd's own veth prefixes
/// (its start-up removes every `ndv…`/`ndp…` link no container owns).
pub fn validate_ifname(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!(
            "invalid {what} \"{}\": interface names have 1 to 15 characters",
            name.escape_debug()
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        bail!(
            "invalid {what} \"{}\": {:?} is not allowed; use only letters, digits, '_', '.' and '-'",
            name.escape_debug(),
            c
        );
    }
    if name == "." || name == ".." {
        bail!("invalid {what} \"{name}\": not a usable interface name");
    }
    for prefix in [
        crate::endpoint::HOST_VETH_PREFIX,
        crate::endpoint::PEER_PREFIX,
    ] {
        if name.starts_with(prefix) {
            bail!(
                "invalid {what} \"{name}\": names starting with {prefix} are netd's own veths (removed at start when no container owns them)"
            );
        }
    }
    Ok(())
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("invalid option {key}={value}: expected true or false"),
    }
}

fn parse_gateway_mode(key: &str, value: &str) -> Result<GatewayMode> {
    match value {
        "nat" => Ok(GatewayMode::Nat),
        "nat-unprotected" => Ok(GatewayMode::NatUnprotected),
        "routed" => Ok(GatewayMode::Routed),
        _ => bail!("invalid option {key}={value}: expected nat, nat-unprotected or routed"),
    }
}

/// The IPv6 side's gateway mode: `nat` (the default: masquerade, NAT66) or `routed`.
fn parse_gateway_mode6(req: &NetworkRequest, key: &str, value: &str) -> Result<GatewayMode> {
    if !req.ipv6 {
        bail!("invalid option {key}={value}: the network has no IPv6 (give --ipv6)");
    }
    match parse_gateway_mode(key, value)? {
        GatewayMode::NatUnprotected => bail!(
            "invalid option {key}={value}: netd has no unprotected mode for IPv6 (a LAN host reaches no container's IPv6 address unless the network is routed); use nat (the default: masquerade) or routed"
        ),
        mode => Ok(mode),
    }
}

pub fn gateway_mode_name(mode: GatewayMode) -> &'static str {
    match mode {
        GatewayMode::Nat => "nat",
        GatewayMode::NatUnprotected => "nat-unprotected",
        GatewayMode::Routed => "routed",
    }
}

fn parse_mtu(what: &str, value: &str) -> Result<u32> {
    match value.parse::<u32>() {
        Ok(m) if (68..=65535).contains(&m) => Ok(m),
        _ => bail!("invalid {what} {value}: the MTU must be a number from 68 to 65535"),
    }
}

/// Check everything of a request that does not depend on the node.
pub fn settings(req: &NetworkRequest) -> Result<Settings> {
    validate_name("network", &req.name)?;
    if RESERVED_NAMES.contains(&req.name.as_str()) {
        bail!("network with name {} already exists", req.name);
    }
    let name = req.driver.as_deref().unwrap_or("bridge");
    let families = families(req)?;
    if name == "ipvlan" {
        // Refused by the daemon, which asks the kernel what is missing.
        return Ok(Settings {
            driver: Driver::Ipvlan,
            ..macvlan_settings(&NetworkRequest {
                options: Vec::new(),
                ..req.clone()
            })?
        });
    }
    let Some(driver) = crate::driver::named(name) else {
        let known: Vec<&str> = crate::driver::ALL.iter().map(|d| d.name()).collect();
        bail!(
            "invalid --driver {name}: plugin \"{name}\" not found (netd has the {} drivers, and overlay in a cluster)",
            known.join(" and ")
        );
    };
    let s = driver.validate(req)?;
    if families.v6.is_some() && !matches!(s.driver, Driver::Bridge | Driver::Macvlan) {
        bail!(
            "invalid --ipv6: IPv6 on {name} networks is not supported yet (bridge and macvlan networks have it)"
        );
    }
    Ok(s)
}

/// `-o KEY=VALUE` split, each key once.
pub fn options_of(req: &NetworkRequest) -> Result<Vec<(&str, &str)>> {
    let mut seen = std::collections::BTreeSet::new();
    req.options
        .iter()
        .map(|opt| {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("invalid option {opt}: expected KEY=VALUE"))?;
            if !seen.insert(key) {
                bail!("invalid option {key}: given twice");
            }
            Ok((key, value))
        })
        .collect()
}

/// The macvlan driver's settings (`driver::macvlan`'s `validate`).
pub fn macvlan_settings(req: &NetworkRequest) -> Result<Settings> {
    let mut m = MacvlanSettings {
        parent: None,
        mode: MacvlanMode::default(),
        host_access: false,
    };
    let mut s = Settings {
        driver: Driver::Macvlan,
        macvlan: None,
        bridge: None,
        icc: true,
        masquerade: false,
        mtu: None,
        gateway_mode: GatewayMode::Routed,
        gateway_mode6: GatewayMode::Nat,
        options: BTreeMap::new(),
    };
    for (key, value) in options_of(req)? {
        match key {
            OPT_PARENT => {
                validate_ifname("option parent", value)?;
                m.parent = Some(value.to_string());
            }
            OPT_MACVLAN_MODE => {
                m.mode = match value {
                    "bridge" => MacvlanMode::Bridge,
                    "vepa" => MacvlanMode::Vepa,
                    "private" => MacvlanMode::Private,
                    "passthru" => MacvlanMode::Passthru,
                    _ => bail!(
                        "invalid option macvlan_mode={value}: the modes are bridge (the default), vepa, private and passthru"
                    ),
                }
            }
            OPT_HOST_ACCESS => m.host_access = parse_bool(key, value)?,
            k if MACVLAN_OPTIONS.contains(&k) => {
                s.mtu = Some(parse_mtu(&format!("option {key}"), value)?)
            }
            _ => bail!(
                "invalid option {key}: not an option of the macvlan driver; its options are {}",
                MACVLAN_OPTIONS.join(", ")
            ),
        }
        s.options.insert(key.to_string(), value.to_string());
    }
    if m.parent.is_none() && m.host_access {
        bail!(
            "invalid option {OPT_HOST_ACCESS}=true: a macvlan network without a parent is internal to the node's containers, there is no LAN to share with the node"
        );
    }
    if m.host_access && m.mode != MacvlanMode::Bridge {
        bail!(
            "invalid option {OPT_HOST_ACCESS}=true: it needs macvlan_mode=bridge (in {} mode the node's shim and the containers exchange no frames)",
            m.mode.name()
        );
    }
    if let Some(mtu) = req.mtu {
        s.mtu = Some(parse_mtu("--mtu", &mtu.to_string())?);
    }
    s.macvlan = Some(m);
    Ok(s)
}

/// The bridge driver's settings (`driver::bridge`'s `validate`).
pub fn bridge_settings(req: &NetworkRequest) -> Result<Settings> {
    let mut s = Settings {
        driver: Driver::Bridge,
        macvlan: None,
        bridge: None,
        icc: true,
        masquerade: true,
        mtu: None,
        gateway_mode: GatewayMode::Nat,
        gateway_mode6: GatewayMode::Nat,
        options: BTreeMap::new(),
    };
    let mut masquerade_given = false;
    for opt in &req.options {
        let (key, value) = opt
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid option {opt}: expected KEY=VALUE"))?;
        let short = PREFIXES
            .iter()
            .find_map(|p| key.strip_prefix(p))
            .filter(|k| KNOWN_OPTIONS.contains(k))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid option {key}: unknown; known options are {}",
                    KNOWN_OPTIONS.map(|k| format!("com.netd.{k}")).join(", ")
                )
            })?;
        match short {
            OPT_BRIDGE_NAME => {
                validate_ifname("option com.netd.bridge.name", value)?;
                s.bridge = Some(value.to_string());
            }
            OPT_ICC => s.icc = parse_bool(key, value)?,
            OPT_MASQUERADE => {
                s.masquerade = parse_bool(key, value)?;
                masquerade_given = true;
            }
            OPT_GATEWAY_MODE | OPT_GATEWAY_MODE_DOCKER => {
                s.gateway_mode = parse_gateway_mode(key, value)?
            }
            OPT_GATEWAY_MODE6 | OPT_GATEWAY_MODE6_DOCKER => {
                s.gateway_mode6 = parse_gateway_mode6(req, key, value)?
            }
            _ => s.mtu = Some(parse_mtu(&format!("option {key}"), value)?),
        }
        if s.options
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            bail!("invalid option {key}: given twice");
        }
    }
    if s.gateway_mode == GatewayMode::Routed {
        if masquerade_given && s.masquerade {
            bail!(
                "invalid option gateway_mode=routed: a routed network is not masqueraded, but enable_ip_masquerade=true was given"
            );
        }
        s.masquerade = false;
    }
    if req.internal && s.gateway_mode6.direct_routing() {
        bail!(
            "invalid option gateway_mode_ipv6=routed: an --internal network cannot be reached from outside"
        );
    }
    if req.internal && s.gateway_mode.direct_routing() {
        bail!(
            "invalid option gateway_mode={}: an --internal network cannot be reached from outside",
            gateway_mode_name(s.gateway_mode)
        );
    }
    if let Some(mtu) = req.mtu {
        let mtu = parse_mtu("--mtu", &mtu.to_string())?;
        if s.mtu.is_some_and(|m| m != mtu) {
            bail!(
                "--mtu {mtu} contradicts the option driver.mtu={}",
                s.mtu.unwrap_or(0)
            );
        }
        s.mtu = Some(mtu);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, options: &[&str]) -> NetworkRequest {
        NetworkRequest {
            name: name.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn err(r: &NetworkRequest) -> String {
        settings(r).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let s = settings(&req("front", &[])).unwrap();
        assert!(s.icc && s.masquerade && s.bridge.is_none() && s.mtu.is_none());
    }

    #[test]
    fn names_are_checked_and_reserved_ones_refused() {
        assert!(err(&req("-x", &[])).contains("invalid network name \"-x\""));
        assert!(err(&req("a b", &[])).contains("invalid network name"));
        assert!(err(&req("", &[])).contains("invalid network name"));
        for name in RESERVED_NAMES {
            assert!(err(&req(name, &[])).contains("already exists"), "{name}");
        }
    }

    #[test]
    fn options_in_netd_and_docker_spelling() {
        let s = settings(&req(
            "n",
            &[
                "com.netd.bridge.name=br-test",
                "com.docker.network.bridge.enable_icc=false",
                "com.netd.bridge.enable_ip_masquerade=false",
                "com.netd.driver.mtu=1400",
            ],
        ))
        .unwrap();
        assert_eq!(s.bridge.as_deref(), Some("br-test"));
        assert!(!s.icc && !s.masquerade);
        assert_eq!(s.mtu, Some(1400));
        assert_eq!(s.options.len(), 4);
    }

    #[test]
    fn bad_options_name_the_option_and_why() {
        for (opt, why) in [
            ("com.netd.bridge.enable_icc=maybe", "expected true or false"),
            (
                "com.netd.bridge.name=waytoolongbridgename",
                "1 to 15 characters",
            ),
            ("com.netd.bridge.name=a/b", "'/' is not allowed"),
            ("com.netd.bridge.name=br%d", "'%' is not allowed"),
            ("com.netd.bridge.name=br\u{1}x", "'\\u{1}' is not allowed"),
            ("com.netd.bridge.name=a b", "' ' is not allowed"),
            ("com.netd.bridge.name=br:0", "':' is not allowed"),
            ("com.netd.bridge.name=br\u{e9}", "'\u{e9}' is not allowed"),
            ("com.netd.bridge.name=..", "not a usable interface name"),
            ("com.netd.bridge.name=ndv0123", "netd's own veths"),
            ("com.netd.bridge.name=ndpx", "netd's own veths"),
            ("com.netd.bogus=1", "invalid option com.netd.bogus: unknown"),
            ("novalue", "expected KEY=VALUE"),
            ("com.netd.driver.mtu=10", "from 68 to 65535"),
        ] {
            let e = err(&req("n", &[opt]));
            assert!(e.contains(why), "{opt}: {e}");
        }
        let twice = req(
            "n",
            &[
                "com.netd.bridge.enable_icc=true",
                "com.netd.bridge.enable_icc=false",
            ],
        );
        assert!(err(&twice).contains("given twice"));
    }

    #[test]
    fn gateway_modes_in_netd_and_docker_spelling() {
        assert_eq!(
            settings(&req("n", &[])).unwrap().gateway_mode,
            GatewayMode::Nat
        );
        let s = settings(&req("n", &["com.netd.network.gateway_mode=routed"])).unwrap();
        assert_eq!(s.gateway_mode, GatewayMode::Routed);
        assert!(!s.masquerade, "a routed network is not masqueraded");
        let s = settings(&req(
            "n",
            &["com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected"],
        ))
        .unwrap();
        assert!(s.gateway_mode.direct_routing() && s.masquerade);
        let e = err(&req("n", &["com.netd.network.gateway_mode=open"]));
        assert!(e.contains("expected nat, nat-unprotected or routed"), "{e}");
        let e = err(&req(
            "n",
            &[
                "com.netd.network.gateway_mode=routed",
                "com.netd.bridge.enable_ip_masquerade=true",
            ],
        ));
        assert!(e.contains("is not masqueraded"), "{e}");
        let mut internal = req("n", &["com.netd.network.gateway_mode=routed"]);
        internal.internal = true;
        assert!(err(&internal).contains("cannot be reached from outside"));
    }

    #[test]
    fn driver_mtu_and_address_flags() {
        let mut r = req("n", &[]);
        r.driver = Some("overlay".into());
        assert!(err(&r).contains("plugin \"overlay\" not found"));
        let mut r = req("n", &[]);
        r.mtu = Some(70000);
        assert!(err(&r).contains("invalid --mtu 70000"));
        let mut r = req("n", &[]);
        r.gateway = vec!["10.0.0.1".into()];
        assert!(err(&r).contains("need --subnet"));
    }

    fn dual(subnet: &[&str], gateway: &[&str], ip_range: &[&str], ipv6: bool) -> NetworkRequest {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        NetworkRequest {
            subnet: list(subnet),
            gateway: list(gateway),
            ip_range: list(ip_range),
            ipv6,
            ..req("n", &[])
        }
    }

    #[test]
    fn address_flags_are_split_by_family_once_each() {
        let r = dual(
            &["fd00:1::/64", "172.28.0.0/16"],
            &["172.28.0.254", "fd00:1::fe"],
            &["fd00:1::100/120"],
            true,
        );
        let f = families(&r).unwrap();
        assert_eq!(
            f.v4,
            Some(AddressFlags {
                subnet: Some("172.28.0.0/16"),
                gateway: Some("172.28.0.254"),
                ip_range: None
            })
        );
        assert_eq!(
            f.v6,
            Some(AddressFlags {
                subnet: Some("fd00:1::/64"),
                gateway: Some("fd00:1::fe"),
                ip_range: Some("fd00:1::100/120")
            })
        );
        // --ipv6 alone: the subnet is chosen by the daemon.
        let only = dual(&[], &[], &[], true);
        assert_eq!(families(&only).unwrap().v6, Some(AddressFlags::default()));
        assert!(
            families(&dual(&["10.1.0.0/16"], &[], &[], false))
                .unwrap()
                .v6
                .is_none()
        );
        assert!(settings(&dual(&["fd00:1::/64"], &[], &[], true)).is_ok());
    }

    #[test]
    fn bad_address_flags_name_the_flag_and_why() {
        for (r, want) in [
            (
                dual(&["fd00:1::/64"], &[], &[], false),
                "invalid --subnet fd00:1::/64: an IPv6 subnet needs --ipv6 (IPv6 subnet provided but --ipv6 not set)",
            ),
            (
                dual(&[], &["fd00:1::1"], &[], false),
                "invalid --gateway fd00:1::1: an IPv6 gateway needs --ipv6",
            ),
            (
                dual(&["10.1.0.0/16", "10.2.0.0/16"], &[], &[], false),
                "invalid --subnet 10.2.0.0/16: a network has one IPv4 subnet at most, and 10.1.0.0/16 was given too",
            ),
            (
                dual(&["fd00:1::/64", "fd00:2::/64"], &[], &[], true),
                "invalid --subnet fd00:2::/64: a network has one IPv6 subnet at most",
            ),
            (
                dual(&["fd00:1::/64"], &["fd00:1::1", "fd00:1::2"], &[], true),
                "invalid --gateway fd00:1::2: a network has one IPv6 gateway at most",
            ),
            (
                dual(
                    &["fd00:1::/64"],
                    &[],
                    &["fd00:1::/120", "fd00:1::/121"],
                    true,
                ),
                "invalid --ip-range fd00:1::/121: a network has one IPv6 range at most",
            ),
            (
                dual(&["10.1.0.0/16"], &["fd00:1::1"], &[], true),
                "invalid --gateway fd00:1::1: an IPv6 --gateway or --ip-range needs the IPv6 --subnet it belongs to",
            ),
            (
                dual(&[], &[], &["fd00:1::/120"], true),
                "invalid --ip-range fd00:1::/120: an IPv6 --gateway or --ip-range needs the IPv6 --subnet",
            ),
            (
                dual(&["fd00:1::/64"], &["10.1.0.1"], &[], true),
                "--gateway and --ip-range need --subnet",
            ),
        ] {
            let e = err(&r);
            assert!(e.starts_with(want), "{r:?}: {e}");
        }
    }

    #[test]
    fn the_default_networks_ipv6_flags_are_checked() {
        assert_eq!(default_ipv6(false, None).unwrap(), DefaultIpv6::Off);
        assert_eq!(default_ipv6(true, None).unwrap(), DefaultIpv6::Chosen);
        assert_eq!(
            default_ipv6(true, Some("fd00:42::/64")).unwrap(),
            DefaultIpv6::Fixed("fd00:42::/64".parse().unwrap())
        );
        let e = default_ipv6(false, Some("fd00:42::/64"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid --fixed-cidr-v6 fd00:42::/64: it needs --ipv6"),
            "{e}"
        );
        let e = default_ipv6(true, Some("fd00:42::1/64"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid --fixed-cidr-v6 fd00:42::1/64: it should be fd00:42::/64"),
            "{e}"
        );
        let e = default_ipv6(true, Some("fe80::/64"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("link-local"), "{e}");
    }

    #[test]
    fn bridge_and_macvlan_networks_have_ipv6() {
        let mut r = dual(&["fd00:77::/64"], &["fd00:77::1"], &[], true);
        r.driver = Some("macvlan".into());
        r.options = vec!["parent=lan0".into()];
        let s = settings(&r).unwrap();
        assert_eq!(s.driver, Driver::Macvlan);
        assert!(families(&r).unwrap().v6.is_some());
    }

    #[test]
    fn an_ipv6_only_network_is_a_bridge_network_with_ipv6_and_no_ipv4_flags() {
        let mut r = dual(&["fd00:9::/64"], &[], &[], true);
        r.ipv4 = Some(false);
        let f = families(&r).unwrap();
        assert_eq!(f.v4, None);
        assert_eq!(f.v6.unwrap().subnet, Some("fd00:9::/64"));
        assert_eq!(settings(&r).unwrap().driver, Driver::Bridge);
        r.ipv4 = Some(true);
        assert!(families(&r).unwrap().v4.is_some());

        let refused = |r: &NetworkRequest| settings(r).unwrap_err().to_string();
        let mut no_v6 = dual(&[], &[], &[], false);
        no_v6.ipv4 = Some(false);
        let e = refused(&no_v6);
        assert!(
            e.starts_with("invalid --ipv4=false: ") && e.contains("--ipv6"),
            "{e}"
        );
        let mut v4_subnet = dual(&["10.9.0.0/24"], &[], &[], true);
        v4_subnet.ipv4 = Some(false);
        let e = refused(&v4_subnet);
        assert!(e.starts_with("invalid --subnet 10.9.0.0/24: "), "{e}");
        let mut macvlan = dual(&[], &[], &[], true);
        macvlan.ipv4 = Some(false);
        macvlan.driver = Some("macvlan".into());
        macvlan.options = vec!["parent=lan0".into()];
        assert_eq!(settings(&macvlan).unwrap().driver, Driver::Macvlan);
    }

    #[test]
    fn a_request_of_a_client_before_ipv6_is_understood() {
        let r: NetworkRequest = serde_json::from_str(
            r#"{"name":"n","subnet":"10.1.0.0/16","gateway":null,"ip_range":"10.1.0.0/24"}"#,
        )
        .unwrap();
        assert_eq!(r.subnet, ["10.1.0.0/16"]);
        assert!(r.gateway.is_empty() && !r.ipv6);
        assert_eq!(r.ip_range, ["10.1.0.0/24"]);
    }

    #[test]
    fn the_ipv6_gateway_mode_is_its_own() {
        let mut r = req("n", &["com.docker.network.bridge.gateway_mode_ipv6=routed"]);
        r.ipv6 = true;
        let s = settings(&r).unwrap();
        assert_eq!(s.gateway_mode6, GatewayMode::Routed);
        assert_eq!(s.gateway_mode, GatewayMode::Nat, "IPv4 stays masqueraded");
        assert!(s.masquerade);
        let e = err(&req("n", &["com.netd.network.gateway_mode_ipv6=routed"]));
        assert!(e.contains("the network has no IPv6 (give --ipv6)"), "{e}");
        let mut r = req("n", &["com.netd.network.gateway_mode_ipv6=nat-unprotected"]);
        r.ipv6 = true;
        assert!(err(&r).contains("no unprotected mode for IPv6"));
        let mut r = req("n", &["com.netd.network.gateway_mode_ipv6=routed"]);
        r.ipv6 = true;
        r.internal = true;
        assert!(err(&r).contains("cannot be reached from outside"));
    }

    #[test]
    fn macvlan_options_are_its_own() {
        let mut r = req("lan", &["parent=eth1", "macvlan_mode=private"]);
        r.driver = Some("macvlan".into());
        let s = settings(&r).unwrap();
        assert_eq!(s.driver, Driver::Macvlan);
        let m = s.macvlan.unwrap();
        assert_eq!(
            (m.parent.as_deref(), m.mode, m.host_access),
            (Some("eth1"), MacvlanMode::Private, false)
        );
        assert!(!s.masquerade);
        for (opt, want) in [
            (
                "macvlan_mode=bridged",
                "the modes are bridge (the default), vepa, private and passthru",
            ),
            (
                "com.netd.bridge.name=x",
                "not an option of the macvlan driver",
            ),
            ("parent=eth1/x", "invalid option parent"),
            ("com.netd.macvlan.host_access=yes", "expected true or false"),
        ] {
            let mut r = req("lan", &[opt]);
            r.driver = Some("macvlan".into());
            assert!(err(&r).contains(want), "{opt}: {}", err(&r));
        }
        let mut r = req("lan", &["com.netd.macvlan.host_access=true"]);
        r.driver = Some("macvlan".into());
        assert!(err(&r).contains("without a parent is internal"));
        let mut r = req("lan", &["parent=eth1", "parent=eth2"]);
        r.driver = Some("macvlan".into());
        assert!(err(&r).contains("given twice"));
        let mut r = req("lan", &[]);
        r.driver = Some("ipvlan".into());
        assert_eq!(settings(&r).unwrap().driver, Driver::Ipvlan);
    }
}
