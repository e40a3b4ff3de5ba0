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
}

/// What the options and flags of a request amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
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
    match req.driver.as_deref() {
        None | Some("bridge") => {}
        Some(other) => {
            bail!(
                "invalid --driver {other}: plugin \"{other}\" not found (netd supports the bridge driver)"
            )
        }
    }
    if req.subnet.is_none() && (req.gateway.is_some() || req.ip_range.is_some()) {
        bail!("--gateway and --ip-range need --subnet: give the subnet they belong to");
    }
    let mut s = Settings {
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
}
