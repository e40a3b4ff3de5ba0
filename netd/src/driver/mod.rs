//! Network drivers behind one trait: each validates a request into its own settings
//! without touching the system, plans what setting a network up and tearing it down
//! take, and what attaching and detaching an endpoint take (`plan`), and says what it
//! supports. The daemon applies the plans; nothing here touches the node.
//! `bridge` is Docker's default driver (a Linux bridge, veths policed by netd's programs);
//! `macvlan` puts containers straight on a LAN; `overlay` is a cluster's network spanning
//! nodes (a bridge on each node with containers on it, VXLAN between them).

pub mod bridge;
pub mod macvlan;
pub mod overlay;

use std::net::IpAddr;

use anyhow::Result;

use crate::{
    network_request::{NetworkRequest, Settings},
    plan::{EndpointPlan, PeerGoes, Planned, Policing, Step},
    state::{Endpoint, Network},
};

/// What a network's driver offers, checked before it is asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `-p`: published ports (netd's DNAT on the node's uplink).
    pub publish: bool,
    /// Egress masqueraded behind the node's address.
    pub masquerade: bool,
    /// The containers' traffic passes netd's programs: isolation between networks,
    /// anti-spoofing, icc, `--internal`.
    pub isolation: bool,
    /// netd's fast paths (redirects past the node's stack) apply.
    pub fast_paths: bool,
}

pub trait NetworkDriver: Sync {
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// The request's driver settings, checked; nothing is touched.
    fn validate(&self, req: &NetworkRequest) -> Result<Settings>;
    /// What makes network `n` exist on the node, idempotently. With `fresh` (the network
    /// is being created), each step comes with its undo; a set-up at start has none (a
    /// failure there must never remove what containers use). `endpoints`: the addresses
    /// of the network's containers.
    fn setup(&self, n: &Network, endpoints: &[IpAddr], fresh: bool) -> Vec<Planned>;
    /// What removes network `n`, every step tried.
    fn teardown(&self, n: &Network) -> Vec<Step>;
    /// What attaching an endpoint takes. `police`: what netd's programs enforce for it,
    /// for a driver with `isolation`.
    fn attach(
        &self,
        n: &Network,
        p: &EndpointPlan,
        police: Option<Policing>,
        peer_goes: PeerGoes,
    ) -> Vec<Planned>;
    /// What detaching endpoint `ep` of `n` takes, every step tried. `namespace_open`:
    /// the container's namespace is still held.
    fn detach(&self, n: Option<&Network>, ep: &Endpoint, namespace_open: bool) -> Vec<Step>;
}

/// The driver of a network.
pub fn of(n: &Network) -> &'static dyn NetworkDriver {
    if n.is_macvlan() {
        &macvlan::Macvlan
    } else if n.overlay.is_some() {
        &overlay::Overlay
    } else {
        &bridge::Bridge
    }
}

/// Every driver netd has, by the name `-d` gives.
/// (Not the overlay driver: an overlay is made for the cluster, not by `-d` on one node.)
pub const ALL: &[&dyn NetworkDriver] = &[&bridge::Bridge, &macvlan::Macvlan];

/// The driver `-d NAME` names; `None` for a driver netd does not have.
pub fn named(name: &str) -> Option<&'static dyn NetworkDriver> {
    ALL.iter().copied().find(|d| d.name() == name)
}

pub fn capabilities(n: &Network) -> Capabilities {
    of(n).capabilities()
}
