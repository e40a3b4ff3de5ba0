//! Overlay networks: one record per network in the store (`PREFIX/v1/networks/NAME`),
//! the same on every node. Creating one is planned here, purely, from the records read
//! at one revision and the node's own subnets: the name free, the VNI unique (given by
//! `-o com.netd.vxlan.id=N` or the lowest free from 4096, as Docker allocates), the subnet
//! overlapping no other overlay's and nothing on this node (given, or the first free /24
//! of 10.0.0.0/8, Docker's overlay pool); then committed only if no network record
//! changed since that revision, so two nodes creating at once never both win.
//!
//! With `--ipv6`, the network has an IPv6 subnet too (given, or a /64 of a ULA /48 drawn
//! from the network's ID), and a container's IPv6 address is its IPv4 address's place in
//! the IPv4 subnet, taken to the IPv6 subnet (`ipv6_of`): unique across the cluster
//! because the IPv4 address is, and known to every node from the IPv4 address its
//! container's record carries, with no second set of blocks to claim.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::store::{Guard, Op};
use crate::{
    ipam::{self, Pool},
    ipam6,
    network_request::{NetworkRequest, RESERVED_NAMES, families, options_of, validate_name},
    state::Network6,
};

/// netd's option for the network's VXLAN ID, and Docker's.
pub const OPT_VNI: &str = "com.netd.vxlan.id";
const DOCKER_OPT_VNI: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// Where VNIs are allocated from when none is given (Docker's first).
const FIRST_VNI: u32 = 4096;
/// VXLAN's 24 bits.
const MAX_VNI: u32 = (1 << 24) - 1;

/// An overlay network as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub name: String,
    pub id: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
    pub vni: u32,
    pub internal: bool,
    pub attachable: bool,
    /// Unix seconds, and the node it was created on.
    pub created: u64,
    pub created_on: String,
    /// The IPv6 side, with `--ipv6` (absent from the records of netd before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<OverlayIpv6>,
}

/// An overlay network's IPv6 subnet and gateway (the IPv4 gateway's place in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayIpv6 {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
}

impl OverlayNetwork {
    /// The IPv6 address of the container at `ip` (an address of the IPv4 subnet), on a
    /// network with IPv6.
    pub fn ipv6_of(&self, ip: Ipv4Addr) -> Option<Ipv6Addr> {
        let v6 = self.ipv6?;
        self.subnet
            .contains(&ip)
            .then(|| placed(&self.subnet, &v6.subnet, ip))
    }

    /// The IPv4 address whose place `ip6` is (`ipv6_of`'s inverse), on a network with IPv6:
    /// none for an address outside the IPv4 subnet's places.
    pub fn ipv4_of(&self, ip6: Ipv6Addr) -> Option<Ipv4Addr> {
        let v6 = self.ipv6?;
        let offset = u128::from(ip6).checked_sub(u128::from(v6.subnet.network()))?;
        let size = 1u128 << (32 - self.subnet.prefix_len());
        (offset < size).then(|| Ipv4Addr::from(u32::from(self.subnet.network()) + offset as u32))
    }

    /// The IPv6 side as a node's share of the network has it.
    pub fn network6(&self) -> Option<Network6> {
        self.ipv6.map(|v6| Network6 {
            subnet: v6.subnet,
            gateway: v6.gateway,
            ip_range: None,
            last_allocated: None,
            gateway_mode: Default::default(),
        })
    }
}

/// `ip`'s place in `subnet4`, in `subnet6`.
fn placed(subnet4: &Ipv4Net, subnet6: &Ipv6Net, ip: Ipv4Addr) -> Ipv6Addr {
    let offset = u32::from(ip) - u32::from(subnet4.network());
    Ipv6Addr::from(u128::from(subnet6.network()) + u128::from(offset))
}

/// What `netd network create -d overlay` asked for, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayRequest {
    pub name: String,
    /// The subnet, gateway and range, when `--subnet` was given.
    pub pool: Option<Pool>,
    pub vni: Option<u32>,
    pub internal: bool,
    pub attachable: bool,
    /// `--ipv6`, with its IPv6 `--subnet` and `--gateway` when given.
    pub ipv6: Option<Ipv6Request>,
}

/// The IPv6 side asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Request {
    pub subnet: Option<Ipv6Net>,
    pub gateway: Option<Ipv6Addr>,
}

/// Check a request for an overlay network; nothing is touched.
pub fn request(req: &NetworkRequest) -> Result<OverlayRequest> {
    validate_name("network", &req.name)?;
    if RESERVED_NAMES.contains(&req.name.as_str()) {
        bail!("network with name {} already exists", req.name);
    }
    let families = families(req)?;
    let ipv6 = families.v6.map(ipv6_request).transpose()?;
    let Some(v4) = families.v4 else {
        bail!(
            "invalid --ipv4=false: an overlay network's IPv6 addresses follow its IPv4 ones, so it cannot be IPv6-only"
        );
    };
    let pool = match v4.subnet {
        Some(s) => Some(ipam::plan(ipam::parse_subnet(s)?, v4.gateway, v4.ip_range)?),
        None => None,
    };
    if !req.aux_addresses.is_empty() {
        bail!(
            "invalid --aux-address: overlay networks span nodes whose LANs differ; there is no host to reserve an address for"
        );
    }
    if req.mtu.is_some() {
        bail!(
            "invalid --mtu: an overlay's MTU is each node's underlay MTU less the 50 bytes of VXLAN; it is not set per network"
        );
    }
    let mut vni = None;
    for (key, value) in options_of(req)? {
        match key {
            OPT_VNI | DOCKER_OPT_VNI => {
                let n = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_VNI).contains(n))
                    .ok_or_else(|| {
                        anyhow::anyhow!("invalid option {key}={value}: a VXLAN ID is a number from 1 to {MAX_VNI}")
                    })?;
                if vni.replace(n).is_some() {
                    bail!("invalid option {key}: the VXLAN ID is given twice");
                }
            }
            _ => bail!(
                "invalid option {key}: overlay networks take {OPT_VNI} (or Docker's {DOCKER_OPT_VNI})"
            ),
        }
    }
    Ok(OverlayRequest {
        name: req.name.clone(),
        pool,
        vni,
        internal: req.internal,
        attachable: req.attachable,
        ipv6,
    })
}

/// The IPv6 flags of an overlay network: a subnet and gateway; no range, as its
/// containers' IPv6 addresses follow their IPv4 ones.
fn ipv6_request(v6: crate::network_request::AddressFlags) -> Result<Ipv6Request> {
    if let Some(range) = v6.ip_range {
        bail!(
            "invalid --ip-range {range}: on an overlay network a container's IPv6 address is its IPv4 address's place in the IPv6 subnet; give an IPv4 --ip-range instead"
        );
    }
    let subnet = v6.subnet.map(ipam6::parse_subnet).transpose()?;
    let gateway = v6
        .gateway
        .map(|g| {
            g.parse::<Ipv6Addr>()
                .map_err(|_| anyhow::anyhow!("invalid --gateway {g}: not an IPv6 address"))
        })
        .transpose()?;
    Ok(Ipv6Request { subnet, gateway })
}

/// Docker's overlay pool: 10.0.0.0/8 in /24s.
fn overlay_pool() -> impl Iterator<Item = Ipv4Net> {
    (0..=u16::MAX).map(|i| {
        let [hi, lo] = i.to_be_bytes();
        Ipv4Net::new(Ipv4Addr::new(10, hi, lo, 0), 24).expect("a /24")
    })
}

/// Who made the network, and when.
pub struct Origin<'a> {
    pub id: &'a str,
    pub node: &'a str,
    pub now: u64,
}

/// What this node's own networks, routes and addresses use, each with what uses it.
#[derive(Clone, Debug, Default)]
pub struct Local {
    pub v4: Vec<(Ipv4Net, String)>,
    pub v6: Vec<(Ipv6Net, String)>,
}

/// The record of a new overlay network and the transaction that creates it, from the
/// records `existing` (read at `revision` under `networks_prefix`, which ends in `/`) and
/// what this node uses (`local`).
pub fn plan_create(
    req: &OverlayRequest,
    existing: &[OverlayNetwork],
    local: &Local,
    networks_prefix: &str,
    revision: i64,
    origin: &Origin,
) -> Result<(OverlayNetwork, Vec<Guard>, Vec<Op>)> {
    if existing.iter().any(|n| n.name == req.name) {
        bail!("network with name {} already exists", req.name);
    }
    if let Some((_, what)) = local
        .v4
        .iter()
        .find(|(_, what)| *what == format!("network {}", req.name))
    {
        bail!(
            "network with name {} already exists on this node ({what})",
            req.name
        );
    }
    let vni = match req.vni {
        Some(v) => {
            if let Some(other) = existing.iter().find(|n| n.vni == v) {
                bail!(
                    "invalid option {OPT_VNI}={v}: VXLAN ID {v} is in use by network {}",
                    other.name
                );
            }
            v
        }
        None => (FIRST_VNI..=MAX_VNI)
            .find(|v| !existing.iter().any(|n| n.vni == *v))
            .ok_or_else(|| anyhow::anyhow!("every VXLAN ID from {FIRST_VNI} is in use"))?,
    };
    let pool = match req.pool {
        Some(p) => {
            if let Some(other) = existing
                .iter()
                .find(|n| ipam::overlaps(&n.subnet, &p.subnet))
            {
                bail!(
                    "invalid --subnet {}: it overlaps overlay network {}'s subnet {}",
                    p.subnet,
                    other.name,
                    other.subnet
                );
            }
            if let Some((net, what)) = local.v4.iter().find(|(n, _)| ipam::overlaps(n, &p.subnet)) {
                bail!(
                    "invalid --subnet {}: it overlaps {what} ({net}) on this node",
                    p.subnet
                );
            }
            p
        }
        None => {
            let subnet = overlay_pool()
                .find(|s| {
                    !existing.iter().any(|n| ipam::overlaps(&n.subnet, s))
                        && !local.v4.iter().any(|(n, _)| ipam::overlaps(n, s))
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no free /24 left in 10.0.0.0/8 for an overlay network: give --subnet"
                    )
                })?;
            ipam::default_pool(subnet)
        }
    };
    let ipv6 = req
        .ipv6
        .map(|r| plan_ipv6(&r, &pool, existing, &local.v6, origin.id))
        .transpose()?;
    let network = OverlayNetwork {
        name: req.name.clone(),
        id: origin.id.to_string(),
        subnet: pool.subnet,
        gateway: pool.gateway,
        ip_range: pool.range,
        vni,
        internal: req.internal,
        attachable: req.attachable,
        created: origin.now,
        created_on: origin.node.to_string(),
        ipv6,
    };
    let key = format!("{networks_prefix}{}", req.name);
    let guards = vec![
        Guard::Absent(key.clone()),
        // Every network read still as it was: the VNI and subnet are still free.
        Guard::UnchangedSince {
            prefix: networks_prefix.to_string(),
            revision,
        },
    ];
    let ops = vec![Op::Put {
        key,
        value: serde_json::to_vec(&network).expect("plain data"),
        lease: None,
    }];
    Ok((network, guards, ops))
}

/// The IPv6 side of a new overlay network with IPv4 `pool`: the subnet given (free in
/// the cluster and on this node) or the first free /64 of a ULA /48 whose global ID is
/// drawn from the network's ID `id`, with room for every address of the IPv4 subnet; its
/// gateway the IPv4 gateway's place in it.
fn plan_ipv6(
    r: &Ipv6Request,
    pool: &Pool,
    existing: &[OverlayNetwork],
    local: &[(Ipv6Net, String)],
    id: &str,
) -> Result<OverlayIpv6> {
    let others = existing.iter().filter_map(|n| {
        n.ipv6.map(|v6| {
            (
                v6.subnet,
                format!("overlay network {}'s IPv6 subnet", n.name),
            )
        })
    });
    let subnet = match r.subnet {
        Some(s) => {
            if let Some((net, what)) = others.clone().find(|(n, _)| ipam::overlaps(n, &s)) {
                bail!("invalid --subnet {s}: it overlaps {what} {net}");
            }
            if let Some((net, what)) = local.iter().find(|(n, _)| ipam::overlaps(n, &s)) {
                bail!("invalid --subnet {s}: it overlaps {what} ({net}) on this node");
            }
            s
        }
        None => {
            let in_use: Vec<Ipv6Net> = others
                .map(|(n, _)| n)
                .chain(local.iter().map(|(n, _)| *n))
                .collect();
            ipam6::choose_subnet(ipam6::ula_base(global_id(id)), &in_use)?
        }
    };
    let widest = 96 + pool.subnet.prefix_len();
    if subnet.prefix_len() > widest {
        bail!(
            "invalid --subnet {subnet}: an overlay's IPv6 subnet holds its IPv4 subnet {}'s addresses (each container's IPv6 address is its IPv4 address's place in it), so it is a /{widest} or wider",
            pool.subnet
        );
    }
    let gateway = placed(&pool.subnet, &subnet, pool.gateway);
    if let Some(g) = r.gateway.filter(|g| *g != gateway) {
        bail!(
            "invalid --gateway {g}: an overlay's IPv6 gateway is its IPv4 gateway {}'s place in the IPv6 subnet, {gateway}",
            pool.gateway
        );
    }
    Ok(OverlayIpv6 { subnet, gateway })
}

/// A 40-bit ULA global ID drawn from a network's ID (FNV-1a): random as the ID is, and
/// the same on every node.
fn global_id(id: &str) -> u64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash & 0xff_ffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, subnet: Option<&str>, options: &[&str]) -> OverlayRequest {
        request(&NetworkRequest {
            name: name.into(),
            driver: Some("overlay".into()),
            subnet: subnet.into_iter().map(String::from).collect(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..NetworkRequest::default()
        })
        .unwrap()
    }

    fn plan(
        r: &OverlayRequest,
        existing: &[OverlayNetwork],
        local: &[(Ipv4Net, String)],
    ) -> Result<OverlayNetwork> {
        let origin = Origin {
            id: "abc",
            node: "n1",
            now: 1,
        };
        let local = Local {
            v4: local.to_vec(),
            v6: Vec::new(),
        };
        plan_create(r, existing, &local, "/netd/v1/networks/", 7, &origin).map(|(n, _, _)| n)
    }

    #[test]
    fn vnis_and_subnets_are_the_first_free_ones_and_the_commit_is_guarded() {
        let a = plan(&req("a", None, &[]), &[], &[]).unwrap();
        assert_eq!(
            (a.vni, a.subnet.to_string(), a.gateway.to_string()),
            (4096, "10.0.0.0/24".into(), "10.0.0.1".into())
        );
        let local = [(
            "10.0.1.0/24".parse().unwrap(),
            "the node's route to 10.0.1.0/24".to_string(),
        )];
        let b = plan(&req("b", None, &[]), std::slice::from_ref(&a), &local).unwrap();
        assert_eq!((b.vni, b.subnet.to_string()), (4097, "10.0.2.0/24".into()));
        let origin = Origin {
            id: "x",
            node: "n1",
            now: 1,
        };
        let (_, guards, ops) = plan_create(
            &req("c", None, &[]),
            &[a, b],
            &Local::default(),
            "/netd/v1/networks/",
            42,
            &origin,
        )
        .unwrap();
        assert_eq!(
            guards,
            [
                Guard::Absent("/netd/v1/networks/c".into()),
                Guard::UnchangedSince {
                    prefix: "/netd/v1/networks/".into(),
                    revision: 42
                },
            ]
        );
        assert!(
            matches!(&ops[..], [Op::Put { key, lease: None, .. }] if key == "/netd/v1/networks/c")
        );
    }

    #[test]
    fn a_taken_name_vni_or_subnet_is_refused_naming_who_has_it() {
        let a = plan(
            &req("a", Some("10.50.0.0/16"), &["com.netd.vxlan.id=100"]),
            &[],
            &[],
        )
        .unwrap();
        let err = |r: OverlayRequest, local: &[(Ipv4Net, String)]| {
            format!(
                "{:#}",
                plan(&r, std::slice::from_ref(&a), local).unwrap_err()
            )
        };
        assert!(err(req("a", None, &[]), &[]).contains("network with name a already exists"));
        assert!(
            err(
                req(
                    "b",
                    None,
                    &["com.docker.network.driver.overlay.vxlanid_list=100"]
                ),
                &[]
            )
            .contains("VXLAN ID 100 is in use by network a")
        );
        assert!(
            err(req("b", Some("10.50.3.0/24"), &[]), &[])
                .contains("overlaps overlay network a's subnet 10.50.0.0/16")
        );
        let local = [("192.168.0.0/20".parse().unwrap(), "network lan".to_string())];
        assert!(
            err(req("b", Some("192.168.1.0/24"), &[]), &local)
                .contains("overlaps network lan (192.168.0.0/20) on this node")
        );
        assert!(err(req("lan", None, &[]), &local).contains("already exists on this node"));
    }

    #[test]
    fn requests_name_their_bad_field() {
        let bad = |r: NetworkRequest| format!("{:#}", request(&r).unwrap_err());
        let base = || NetworkRequest {
            name: "ov".into(),
            driver: Some("overlay".into()),
            ..NetworkRequest::default()
        };
        assert!(
            bad(NetworkRequest {
                options: vec!["com.netd.vxlan.id=0".into()],
                ..base()
            })
            .contains("a VXLAN ID is a number from 1 to 16777215")
        );
        assert!(
            bad(NetworkRequest {
                options: vec!["parent=eth0".into()],
                ..base()
            })
            .contains("invalid option parent")
        );
        assert!(
            bad(NetworkRequest {
                gateway: vec!["10.0.0.1".into()],
                ..base()
            })
            .contains("need --subnet")
        );
        assert!(
            bad(NetworkRequest {
                ipv6: true,
                subnet: vec!["fd00:1::/64".into()],
                ip_range: vec!["fd00:1::/80".into()],
                ..base()
            })
            .contains("invalid --ip-range fd00:1::/80: on an overlay network a container's IPv6 address is its IPv4 address's place")
        );
        assert!(
            bad(NetworkRequest {
                mtu: Some(1400),
                ..base()
            })
            .contains("invalid --mtu")
        );
        assert!(
            bad(NetworkRequest {
                name: "host".into(),
                ..base()
            })
            .contains("already exists")
        );
    }

    fn v6_req(name: &str, subnets: &[&str], gateways: &[&str]) -> Result<OverlayRequest> {
        request(&NetworkRequest {
            name: name.into(),
            driver: Some("overlay".into()),
            subnet: subnets.iter().map(|s| s.to_string()).collect(),
            gateway: gateways.iter().map(|s| s.to_string()).collect(),
            ipv6: true,
            ..NetworkRequest::default()
        })
    }

    #[test]
    fn an_overlay_cannot_be_ipv6_only() {
        let e = request(&NetworkRequest {
            name: "ov".into(),
            driver: Some("overlay".into()),
            ipv6: true,
            ipv4: Some(false),
            ..NetworkRequest::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("invalid --ipv4=false: "), "{e}");
    }

    #[test]
    fn an_overlays_ipv6_addresses_are_its_ipv4_addresses_places_in_its_ipv6_subnet() {
        let a = plan(
            &v6_req("a", &["10.9.0.0/16", "fd00:9::/64"], &[]).unwrap(),
            &[],
            &[],
        )
        .unwrap();
        let v6 = a.ipv6.unwrap();
        assert_eq!(
            (v6.subnet.to_string(), v6.gateway.to_string()),
            ("fd00:9::/64".into(), "fd00:9::1".into())
        );
        assert_eq!(
            a.ipv6_of("10.9.3.7".parse().unwrap()),
            Some("fd00:9::307".parse().unwrap())
        );
        assert_eq!(a.ipv6_of("10.10.0.1".parse().unwrap()), None);
        // And back (`--ip6`): only the IPv4 subnet's places have an IPv4 address.
        let back = |s: &str| a.ipv4_of(s.parse().unwrap());
        assert_eq!(back("fd00:9::307"), Some("10.9.3.7".parse().unwrap()));
        assert_eq!(back("fd00:9::"), Some(a.subnet.network()));
        assert_eq!(back("fd00:9::1:0"), None, "beyond the /16's places");
        assert_eq!(back("fd00:8::307"), None, "below the subnet");
        assert_eq!(back("fd00:a::307"), None);
        // Without a subnet: a /64 of a ULA /48 drawn from the network's ID, the same for
        // the same ID, another for another; never one a network already has.
        let b = plan(
            &v6_req("b", &[], &[]).unwrap(),
            std::slice::from_ref(&a),
            &[],
        )
        .unwrap();
        let b6 = b.ipv6.unwrap();
        assert!(b6.subnet.to_string().starts_with("fd"), "{b6:?}");
        assert_eq!(b6.subnet.prefix_len(), 64);
        assert_eq!(b.ipv6_of(b.gateway), Some(b6.gateway));
        let mut like_b = a.clone();
        like_b.ipv6 = Some(b6);
        like_b.name = "like-b".into();
        let c = plan(&v6_req("c", &[], &[]).unwrap(), &[a.clone(), like_b], &[]).unwrap();
        assert_ne!(c.ipv6.unwrap().subnet, b6.subnet);
        // A network of an older netd has no IPv6 and reads as before.
        let mut json = serde_json::to_value(&a).unwrap();
        json.as_object_mut().unwrap().remove("ipv6");
        let old: OverlayNetwork = serde_json::from_value(json).unwrap();
        assert_eq!(old.ipv6, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("ipv6"));
    }

    #[test]
    fn an_overlays_ipv6_subnet_and_gateway_that_cannot_hold_its_addresses_are_refused() {
        let a = plan(
            &v6_req("a", &["10.9.0.0/16", "fd00:9::/64"], &[]).unwrap(),
            &[],
            &[],
        )
        .unwrap();
        let err = |r: OverlayRequest| {
            format!("{:#}", plan(&r, std::slice::from_ref(&a), &[]).unwrap_err())
        };
        assert!(
            err(v6_req("b", &["10.8.0.0/16", "fd00:9:0:0:1::/80"], &[]).unwrap())
                .contains("overlaps overlay network a's IPv6 subnet fd00:9::/64")
        );
        assert!(
            err(v6_req("b", &["10.8.0.0/16", "fd00:8::/120"], &[]).unwrap())
                .contains("invalid --subnet fd00:8::/120: an overlay's IPv6 subnet holds its IPv4 subnet 10.8.0.0/16's addresses")
        );
        assert!(
            err(v6_req("b", &["10.8.0.0/16", "fd00:8::/64"], &["fd00:8::99"]).unwrap())
                .contains("invalid --gateway fd00:8::99: an overlay's IPv6 gateway is its IPv4 gateway 10.8.0.1's place in the IPv6 subnet, fd00:8::1")
        );
        let ok = plan(
            &v6_req("b", &["10.8.0.0/16", "fd00:8::/112"], &["fd00:8::1"]).unwrap(),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(ok.ipv6.unwrap().gateway.to_string(), "fd00:8::1");
    }
}
