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

/// The node's links (index, name) that netd made and nothing owns: a host veth no
/// endpoint has, a container end no engine is yet to take.
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
    links
        .iter()
        .filter(|(_, name)| {
            (name.starts_with(HOST_VETH_PREFIX) || name.starts_with(PEER_PREFIX))
                && !veths.contains(name.as_str())
                && !peers.contains(name.as_str())
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
                    ip: Ipv4Addr::new(172, 17, 0, 2 + i as u8),
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
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u32 + 1, n.to_string()))
        .collect();
        assert_eq!(
            stray_links(&s, &links),
            [(6, "ndvdead".to_string()), (7, "ndpdead".to_string())]
        );
    }
}
