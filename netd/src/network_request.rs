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
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
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
const KNOWN_OPTIONS: [&str; 6] = [
    OPT_BRIDGE_NAME,
    OPT_ICC,
    OPT_MASQUERADE,
    OPT_MTU,
    OPT_GATEWAY_MODE,
    OPT_GATEWAY_MODE_DOCKER,
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
    if req.subnet.is_none() && (req.gateway.is_some() || req.ip_range.is_some()) {
        bail!("--gateway and --ip-range need --subnet: give the subnet they belong to");
    }
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
    driver.validate(req)
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
        r.gateway = Some("10.0.0.1".into());
        assert!(err(&r).contains("need --subnet"));
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
