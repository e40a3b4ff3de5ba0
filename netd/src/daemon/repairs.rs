//! What the start-up reconcile repairs, decided from the state and what was observed on
//! the node, without touching anything: the containers to remove because their network
//! namespace is gone (and those that joined one of them, however deep), the holders no
//! record accounts for, and the links netd made that no endpoint owns. `reconcile`
//! observes, asks here, and carries the repairs out. Pure, so every decision is
//! unit-tested without root.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    endpoint::{HOST_VETH_PREFIX, PEER_PREFIX},
    state::{ProcessId, Sandbox, State},
};

/// The containers whose namespace is gone, with why: those `gone` names (their
/// namespace was looked for and not found), and those that joined one of them or a
/// container that no longer exists, however deep the chain.
pub fn dead_containers(state: &State, gone: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut gone = gone;
    loop {
        let more: Vec<(String, String)> = state
            .containers
            .values()
            .filter(|c| !gone.contains_key(&c.name))
            .filter_map(|c| match &c.sandbox {
                Sandbox::Container { name } if !state.containers.contains_key(name) => Some((
                    c.name.clone(),
                    format!("the container {name} it joins is gone"),
                )),
                Sandbox::Container { name } if gone.contains_key(name) => {
                    Some((c.name.clone(), format!("it joined {name}'s")))
                }
                _ => None,
            })
            .collect();
        if more.is_empty() {
            return gone;
        }
        gone.extend(more);
    }
}

/// The namespace holders found running (container ID, process) that no record
/// accounts for: an unfinished `netd run`, or a record removed while netd was down.
pub fn stray_holders(state: &State, found: &[(String, ProcessId)]) -> Vec<(String, ProcessId)> {
    found
        .iter()
        .filter(|(id, holder)| {
            !state.containers.values().any(|c| {
                c.id == *id && matches!(c.sandbox, Sandbox::Holder { holder: h } if h == *holder)
            })
        })
        .cloned()
        .collect()
}

/// netd's names for a macvlan network's links: `nm` + network ID (a stub parent, `x` at
/// the end for its peer), `nh` + network ID (a shim), and `ndq` + digits (a kernel
/// probe's link, deleted at once unless the daemon died meanwhile). The network's ID
/// (empty for a probe's link).
fn macvlan_link_network(name: &str) -> Option<&str> {
    let hex12 = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(rest) = name.strip_prefix("ndq") {
        return (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then_some("");
    }
    if let Some(rest) = name.strip_prefix("nm") {
        let id = rest.strip_suffix('x').unwrap_or(rest);
        return hex12(id).then_some(id);
    }
    name.strip_prefix("nh").filter(|id| hex12(id))
}

/// The node's links (index, name) that netd made and nothing owns: a host veth no
/// endpoint has, a container end no engine is yet to take, a macvlan network's stub
/// parent or shim whose network is gone, a probe's link.
pub fn stray_links(state: &State, links: &[(u32, String)]) -> Vec<(u32, String)> {
    let veths: BTreeSet<&str> = state
        .endpoints()
        .map(|(_, e)| e.host_veth.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    // The container ends Docker has not taken yet (or gave back at `Leave`).
    let peers: BTreeSet<&str> = state
        .containers
        .values()
        .filter_map(|c| match &c.sandbox {
            Sandbox::Docker(d) => Some(d.peer.as_str()),
            _ => None,
        })
        .collect();
    let networks: BTreeSet<&str> = state.networks.values().map(|n| n.id.as_str()).collect();
    links
        .iter()
        .filter(|(_, name)| {
            let veth = (name.starts_with(HOST_VETH_PREFIX) || name.starts_with(PEER_PREFIX))
                && !veths.contains(name.as_str())
                && !peers.contains(name.as_str());
            let macvlan = macvlan_link_network(name).is_some_and(|id| !networks.contains(id));
            veth || macvlan
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::state::{Container, DockerEndpoint, Endpoint, Status};

    fn container(name: &str, sandbox: Sandbox, veths: &[&str]) -> Container {
        Container {
            id: format!("{name}-id"),
            name: name.into(),
            network_mode: "netd0".into(),
            sandbox,
            endpoints: veths
                .iter()
                .enumerate()
                .map(|(i, v)| Endpoint {
                    network: "netd0".into(),
                    ip: Some(Ipv4Addr::new(172, 17, 0, 2 + i as u8)),
                    ip6: None,
                    mac: String::new(),
                    ifname: format!("eth{i}"),
                    host_veth: v.to_string(),
                    host_ifindex: 10 + i as u32,
                })
                .collect(),
            cmd: Vec::new(),
            process: None,
            status: Status::Running,
            ports: Vec::new(),
            created: 0,
        }
    }

    fn holder(pid: u32) -> ProcessId {
        ProcessId { pid, start_time: 1 }
    }

    fn state(containers: Vec<Container>) -> State {
        let mut s = State::default();
        for c in containers {
            s.containers.insert(c.name.clone(), c);
        }
        s
    }

    fn joins(name: &str) -> Sandbox {
        Sandbox::Container { name: name.into() }
    }

    #[test]
    fn containers_that_joined_a_dead_one_die_with_it_however_deep() {
        let s = state(vec![
            container("web", Sandbox::Holder { holder: holder(1) }, &["ndv1"]),
            container("side", joins("web"), &[]),
            container("deeper", joins("side"), &[]),
            container("other", Sandbox::Holder { holder: holder(2) }, &["ndv2"]),
            container("orphan", joins("removed-while-down"), &[]),
        ]);
        let gone = dead_containers(
            &s,
            BTreeMap::from([("web".to_string(), "no process".to_string())]),
        );
        assert_eq!(
            gone,
            BTreeMap::from([
                ("deeper".to_string(), "it joined side's".to_string()),
                (
                    "orphan".to_string(),
                    "the container removed-while-down it joins is gone".to_string()
                ),
                ("side".to_string(), "it joined web's".to_string()),
                ("web".to_string(), "no process".to_string()),
            ])
        );
        assert_eq!(
            dead_containers(&s, BTreeMap::new())
                .keys()
                .collect::<Vec<_>>(),
            ["orphan"]
        );
    }

    #[test]
    fn a_holder_is_stray_unless_its_record_names_that_very_process() {
        let s = state(vec![container(
            "web",
            Sandbox::Holder { holder: holder(1) },
            &["ndv1"],
        )]);
        let found = vec![
            ("web-id".to_string(), holder(1)),
            (
                "web-id".to_string(),
                ProcessId {
                    pid: 1,
                    start_time: 2,
                },
            ),
            ("unfinished".to_string(), holder(3)),
        ];
        assert_eq!(stray_holders(&s, &found), found[1..].to_vec());
    }

    #[test]
    fn only_netds_unowned_links_are_stray() {
        let mut docker = container("dkr", Sandbox::Host, &["ndv3"]);
        docker.sandbox = Sandbox::Docker(DockerEndpoint {
            network_id: "n".into(),
            endpoint_id: "e".into(),
            peer: "ndpwaiting".into(),
            sandbox_key: None,
        });
        let s = state(vec![
            container("web", Sandbox::Holder { holder: holder(1) }, &["ndv1"]),
            container("lanbox", Sandbox::Holder { holder: holder(2) }, &[""]),
            docker,
        ]);
        let links: Vec<(u32, String)> = [
            "lo",
            "uplink0",
            "br-abc",
            "ndv1",
            "ndv3",
            "ndvdead",
            "ndpdead",
            "ndpwaiting",
            "nmabc",
            "nhabc",
            "nm0123456789ab",
            "nm0123456789abx",
            "nhfedcba987654",
            "nm111111111111",
            "ndq4242",
            "ndqx",
            "nmcli0",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u32 + 1, n.to_string()))
        .collect();
        let stray = |s: &State| -> Vec<String> {
            stray_links(s, &links).into_iter().map(|(_, n)| n).collect()
        };
        assert!(stray(&s).contains(&"nm111111111111".to_string()));
        // Network 111111111111 exists: its stub parent is not stray; the others' links are.
        let mut s = s;
        s.networks.insert(
            "lan".into(),
            serde_json::from_value(serde_json::json!({
                "id": "111111111111", "name": "lan", "driver": "macvlan", "bridge": "",
                "subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "ip_range": null,
                "internal": true, "icc": true, "masquerade": false, "mtu": null,
                "options": {}, "tag": 2, "created": 0
            }))
            .unwrap(),
        );
        assert_eq!(
            stray(&s),
            [
                "ndvdead",
                "ndpdead",
                "nm0123456789ab",
                "nm0123456789abx",
                "nhfedcba987654",
                "ndq4242"
            ]
        );
    }
}
