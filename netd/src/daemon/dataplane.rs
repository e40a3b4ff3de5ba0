//! What the executor changes in the data path, as a trait: endpoints registered and
//! policed, program links unpinned, flows purged. `Datapath` is the real one (maps and
//! programs); the executor's tests use a recording fake.

use std::net::Ipv4Addr;

use anyhow::Result;
use ipnet::Ipv4Net;
use netd_common::maps::{EndpointInfo, NetworkInfo, OverlayInfo};

use crate::{conntrack, datapath::Datapath, ports::PortBinding};

pub(super) trait Dataplane {
    fn set_network(&mut self, subnet: Ipv4Net, info: Option<NetworkInfo>) -> Result<()>;
    fn set_overlay(&mut self, vni: u32, info: Option<OverlayInfo>) -> Result<()>;
    fn police(&mut self, host_veth: &str, ifindex: u32, info: &EndpointInfo) -> Result<()>;
    fn forget(&mut self, host_veth: &str, ifindex: u32) -> Result<()>;
    fn unpin(&mut self, host_veth: &str) -> Result<()>;
    fn purge_flows(&mut self, ip: Ipv4Addr) -> Result<()>;
    fn publish(&mut self, binding: &PortBinding, ip: Ipv4Addr, ifindex: u32) -> Result<()>;
    fn unpublish(&mut self, binding: &PortBinding) -> Result<()>;
}

impl Dataplane for Datapath {
    fn set_network(&mut self, subnet: Ipv4Net, info: Option<NetworkInfo>) -> Result<()> {
        Datapath::set_network(self, subnet, info)
    }

    fn set_overlay(&mut self, vni: u32, info: Option<OverlayInfo>) -> Result<()> {
        Datapath::set_overlay(self, vni, info)
    }

    fn police(&mut self, host_veth: &str, ifindex: u32, info: &EndpointInfo) -> Result<()> {
        self.attach_endpoint(host_veth, ifindex, info)
    }

    fn forget(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
        self.forget_endpoint(host_veth, ifindex)
    }

    fn unpin(&mut self, host_veth: &str) -> Result<()> {
        self.unpin_endpoint(host_veth)
    }

    fn purge_flows(&mut self, ip: Ipv4Addr) -> Result<()> {
        let entries = self.flow_entries()?;
        let keys = conntrack::involving(&entries, ip);
        self.remove_flows(&keys)?;
        self.note_purged(conntrack::ended(&entries, &keys));
        Ok(())
    }

    fn publish(&mut self, binding: &PortBinding, ip: Ipv4Addr, ifindex: u32) -> Result<()> {
        Datapath::publish(self, binding, ip, ifindex)
    }

    fn unpublish(&mut self, binding: &PortBinding) -> Result<()> {
        Datapath::unpublish(self, binding)
    }
}
