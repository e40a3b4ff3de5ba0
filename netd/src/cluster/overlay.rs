//! Overlay networks: one record per network in the store (`PREFIX/v1/networks/NAME`),
//! the same on every node. Creating one is planned here, purely, from the records read
//! at one revision and the node's own subnets: the name free, the VNI unique (given by
//! `-o com.netd.vxlan.id=N` or the lowest free from 4096, as Docker allocates), the subnet
//! overlapping no other overlay's and nothing on this node (given, or the first free /24
//! of 10.0.0.0/8, Docker's overlay pool); then committed only if no network record
//! changed since that revision, so two nodes creating at once never both win.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::store::{Guard, Op};
use crate::{
    ipam::{self, Pool},
    network_request::{NetworkRequest, RESERVED_NAMES, families, options_of, validate_name},
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
}

/// Check a request for an overlay network; nothing is touched.
pub fn request(req: &NetworkRequest) -> Result<OverlayRequest> {
    validate_name("network", &req.name)?;
    if RESERVED_NAMES.contains(&req.name.as_str()) {
        bail!("network with name {} already exists", req.name);
    }
    let families = families(req)?;
    if families.v6.is_some() {
        bail!(
            "invalid --ipv6: IPv6 on overlay networks is not supported yet (bridge and macvlan networks have it)"
        );
    }
    let v4 = families.v4;
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
    })
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

/// The record of a new overlay network and the transaction that creates it, from the
/// records `existing` (read at `revision` under `networks_prefix`, which ends in `/`) and
/// what this node uses (`local`: subnets with what uses them).
pub fn plan_create(
    req: &OverlayRequest,
    existing: &[OverlayNetwork],
    local: &[(Ipv4Net, String)],
    networks_prefix: &str,
    revision: i64,
    origin: &Origin,
) -> Result<(OverlayNetwork, Vec<Guard>, Vec<Op>)> {
    if existing.iter().any(|n| n.name == req.name) {
        bail!("network with name {} already exists", req.name);
    }
    if let Some((_, what)) = local
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
            if let Some((net, what)) = local.iter().find(|(n, _)| ipam::overlaps(n, &p.subnet)) {
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
                        && !local.iter().any(|(n, _)| ipam::overlaps(n, s))
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no free /24 left in 10.0.0.0/8 for an overlay network: give --subnet"
                    )
                })?;
            ipam::default_pool(subnet)
        }
    };
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
        plan_create(r, existing, local, "/netd/v1/networks/", 7, &origin).map(|(n, _, _)| n)
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
            &[],
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
                ..base()
            })
            .contains("IPv6 on overlay networks is not supported yet")
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
}
