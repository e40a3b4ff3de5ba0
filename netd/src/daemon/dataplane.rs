//! What the executor changes in the data path, as a trait: networks and endpoints (both
//! families) registered and policed, program links unpinned, flows purged. `Datapath` is the real one (maps and
//! programs); the executor's tests use a recording fake.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use netd_common::maps::{Endpoint6Info, EndpointInfo, NetworkInfo, OverlayInfo};

use crate::{conntrack, datapath::Datapath, ports::PortBinding};

pub(super) trait Dataplane {
    fn set_network(&mut self, subnet: Ipv4Net, info: Option<NetworkInfo>) -> Result<()>;
    fn set_network6(&mut self, subnet: Ipv6Net, info: Option<NetworkInfo>) -> Result<()>;
    fn set_overlay(&mut self, vni: u32, info: Option<OverlayInfo>) -> Result<()>;
    /// Register the endpoint (its IPv6 side, or that it has none) and attach its programs.
    fn police(
        &mut self,
        host_veth: &str,
        ifindex: u32,
        info: &EndpointInfo,
        info6: Option<&Endpoint6Info>,
    ) -> Result<()>;
    fn forget(&mut self, host_veth: &str, ifindex: u32) -> Result<()>;
    fn unpin(&mut self, host_veth: &str) -> Result<()>;
    fn purge_flows(&mut self, ip: IpAddr) -> Result<()>;
    fn publish(
        &mut self,
        binding: &PortBinding,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        ifindex: u32,
    ) -> Result<()>;
    fn unpublish(&mut self, binding: &PortBinding) -> Result<()>;
}

impl Dataplane for Datapath {
    fn set_network(&mut self, subnet: Ipv4Net, info: Option<NetworkInfo>) -> Result<()> {
        Datapath::set_network(self, subnet, info)
    }

    fn set_network6(&mut self, subnet: Ipv6Net, info: Option<NetworkInfo>) -> Result<()> {
        Datapath::set_network6(self, subnet, info)
    }

    fn set_overlay(&mut self, vni: u32, info: Option<OverlayInfo>) -> Result<()> {
        Datapath::set_overlay(self, vni, info)
    }

    fn police(
        &mut self,
        host_veth: &str,
        ifindex: u32,
        info: &EndpointInfo,
        info6: Option<&Endpoint6Info>,
    ) -> Result<()> {
        // The IPv6 side first: once attached, the program looks it up for every frame.
        self.register_endpoint6(ifindex, info6)
            .with_context(|| format!("register the IPv6 side of endpoint {host_veth}"))?;
        self.attach_endpoint(host_veth, ifindex, info)
    }

    fn forget(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
        self.forget_endpoint(host_veth, ifindex)
    }

    fn unpin(&mut self, host_veth: &str) -> Result<()> {
        self.unpin_endpoint(host_veth)
    }

    fn purge_flows(&mut self, ip: IpAddr) -> Result<()> {
        match ip {
            IpAddr::V4(_) => {
                let entries = self.flow_entries()?;
                let keys = conntrack::involving(&entries, ip);
                self.remove_flows(&keys)?;
                self.note_purged(conntrack::ended(&entries, &keys));
                // Its NAT46 flows, in the IPv6 table with its address v4-mapped.
                let entries6 = self.flow_entries6()?;
                let keys6 = conntrack::involving(&entries6, ip);
                self.remove_flows(&keys6)?;
                self.note_purged6(conntrack::ended(&entries6, &keys6));
            }
            IpAddr::V6(_) => {
                let entries = self.flow_entries6()?;
                let keys = conntrack::involving(&entries, ip);
                self.remove_flows(&keys)?;
                self.note_purged6(conntrack::ended(&entries, &keys));
            }
        }
        Ok(())
    }

    fn publish(
        &mut self,
        binding: &PortBinding,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        ifindex: u32,
    ) -> Result<()> {
        Datapath::publish(self, binding, ip, ip6, ifindex)
    }

    fn unpublish(&mut self, binding: &PortBinding) -> Result<()> {
        Datapath::unpublish(self, binding)
    }
}
