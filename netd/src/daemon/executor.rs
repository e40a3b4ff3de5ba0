//! Applies what `plan` decided, through `Node` and `Dataplane`: a plan step by step,
//! undone in reverse when a step fails (every undo is tried; what one could not undo is
//! reported with the error), and a teardown where every step is tried whatever the
//! others do.

use anyhow::{Context, Result};
use netd_common::maps::OverlayInfo;

use super::{dataplane::Dataplane, leftovers::Leftovers, node::Node};
use crate::plan::{Planned, Step};

/// Apply `plan`. On failure, the undos of the steps done so far run in reverse, and the
/// error says what they could not undo.
pub(super) async fn apply(
    node: &impl Node,
    dp: &mut impl Dataplane,
    plan: &[Planned],
) -> Result<()> {
    for (i, p) in plan.iter().enumerate() {
        if let Err(e) = run(node, dp, &p.step).await {
            let mut left = Leftovers::default();
            for done in plan[..i].iter().rev() {
                for undo in &done.undo {
                    let result = run(node, dp, undo).await;
                    left.note(undo, result);
                }
            }
            return Err(left.after(e.context(p.step.to_string())));
        }
    }
    Ok(())
}

/// Run every step of `steps`, whatever the others do; what failed is returned.
pub(super) async fn teardown(
    node: &impl Node,
    dp: &mut impl Dataplane,
    what: &str,
    steps: &[Step],
) -> Leftovers {
    let mut left = Leftovers::default();
    for s in steps {
        let result = run(node, dp, s).await;
        left.note(format_args!("{what}: {s}"), result);
    }
    left
}

async fn run(node: &impl Node, dp: &mut impl Dataplane, step: &Step) -> Result<()> {
    match step {
        Step::PrepareNamespace { own } => node.prepare_namespace(*own).await,
        Step::EnsureBridge {
            name,
            gateway,
            gateway6,
            mac,
            mtu,
        } => {
            node.ensure_bridge(name, *gateway, *gateway6, *mac, *mtu)
                .await
        }
        Step::SetNetwork { subnet, info } => dp.set_network(*subnet, *info),
        Step::SetNetwork6 { subnet, info } => dp.set_network6(*subnet, *info),
        Step::SetOverlay { vni, tag: None } => dp.set_overlay(*vni, None),
        Step::SetOverlay {
            vni,
            tag: Some(tag),
        } => {
            let vxlan = crate::cluster::VXLAN_DEVICE;
            let vxlan_ifindex = node.link_index(vxlan).await?.with_context(|| {
                format!("the VXLAN device {vxlan} is missing (is the node in a cluster?)")
            })?;
            let info = OverlayInfo {
                tag: *tag,
                vxlan_ifindex,
            };
            dp.set_overlay(*vni, Some(info))
        }
        Step::RequireLink { name } => node.ensure_parent(name, false).await,
        Step::EnsureStubParent { name } => node.ensure_parent(name, true).await,
        Step::EnsureShim {
            shim,
            parent,
            routes,
        } => node.ensure_shim(shim, parent, routes).await,
        Step::CreateVeth { host, peer } => node.create_veth(host, peer).await,
        Step::CreateMacvlan { name, parent, mode } => {
            node.create_macvlan(name, parent, *mode).await
        }
        Step::SetMtu { link, mtu } => node.set_mtu(link, *mtu).await,
        Step::SetMac { link, mac } => node.set_mac(link, *mac).await,
        Step::Ipv6Off { link } => node.ipv6_off(link),
        Step::Police {
            host_veth,
            info,
            info6,
        } => {
            let ifindex = node
                .link_index(host_veth)
                .await?
                .with_context(|| format!("{host_veth} vanished"))?;
            dp.police(host_veth, ifindex, info, info6.as_ref())
        }
        Step::JoinBridge {
            link,
            bridge,
            isolated,
        } => node.join_bridge(link, bridge, *isolated).await,
        Step::MoveIntoContainer { link } => node.move_into_container(link).await,
        Step::Configure { link, inside } => node.configure(link, inside).await,
        Step::HostRoute { to, via, src } => node.host_route(*to, via, *src).await,
        Step::DeleteHostRoute { to, via } => node.delete_host_route(*to, via).await,
        Step::DeleteLink { at, link } => node.delete_link(*at, link).await,
        Step::Forget { host_veth, ifindex } => {
            let ifindex = match ifindex {
                Some(i) => Some(*i),
                None => node.link_index(host_veth).await?,
            };
            match ifindex {
                Some(i) => dp.forget(host_veth, i),
                // Never registered under an index: nothing to forget.
                None => Ok(()),
            }
        }
        Step::Unpin { host_veth } => dp.unpin(host_veth),
        Step::PurgeFlows { ip } => dp.purge_flows(*ip),
        Step::Publish {
            binding,
            ip,
            ip6,
            via,
        } => {
            let ifindex = node
                .link_index(via)
                .await?
                .with_context(|| format!("{via} is missing"))?;
            dp.publish(binding, *ip, *ip6, ifindex)
        }
        Step::Unpublish { binding } => dp.unpublish(binding),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::RefCell,
        net::{IpAddr, Ipv4Addr},
    };

    use anyhow::bail;
    use netd_common::maps::{Endpoint6Info, EndpointInfo};

    use super::*;
    use crate::{
        network_request::MacvlanMode,
        plan::{self, At, Attached, EndpointPlan, Inside, PeerGoes},
        ports::PortBinding,
    };

    /// Records every call, in order, across node and data path; fails the calls whose
    /// record starts with one of `fail`.
    #[derive(Default)]
    struct Journal {
        calls: RefCell<Vec<String>>,
        fail: Vec<&'static str>,
    }

    impl Journal {
        fn failing(fail: &[&'static str]) -> Self {
            Journal {
                fail: fail.to_vec(),
                ..Default::default()
            }
        }

        fn call(&self, what: String) -> Result<()> {
            let failed = self.fail.iter().any(|f| what.starts_with(f));
            self.calls.borrow_mut().push(what.clone());
            if failed {
                bail!("{what} failed");
            }
            Ok(())
        }

        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    struct FakeNode<'a>(&'a Journal);
    struct FakeDataplane<'a>(&'a Journal);

    impl Node for FakeNode<'_> {
        async fn prepare_namespace(&self, own: bool) -> Result<()> {
            self.0.call(format!("prepare namespace own={own}"))
        }
        async fn ensure_bridge(
            &self,
            name: &str,
            _: Option<(Ipv4Addr, u8)>,
            gateway6: Option<(std::net::Ipv6Addr, u8)>,
            _: [u8; 6],
            _: Option<u32>,
        ) -> Result<()> {
            match gateway6 {
                Some((gw, prefix)) => self.0.call(format!("bridge {name} {gw}/{prefix}")),
                None => self.0.call(format!("bridge {name}")),
            }
        }
        async fn ensure_parent(&self, name: &str, made: bool) -> Result<()> {
            self.0.call(format!("parent {name} {made}"))
        }
        async fn ensure_shim(
            &self,
            shim: &crate::state::Shim,
            parent: &str,
            _: &[IpAddr],
        ) -> Result<()> {
            self.0.call(format!("shim {} {parent}", shim.name))
        }
        async fn create_veth(&self, host: &str, peer: &str) -> Result<()> {
            self.0.call(format!("veth {host} {peer}"))
        }
        async fn create_macvlan(&self, name: &str, parent: &str, _: MacvlanMode) -> Result<()> {
            self.0.call(format!("macvlan {name} {parent}"))
        }
        async fn set_mtu(&self, link: &str, mtu: u32) -> Result<()> {
            self.0.call(format!("mtu {link} {mtu}"))
        }
        async fn set_mac(&self, link: &str, _: [u8; 6]) -> Result<()> {
            self.0.call(format!("mac {link}"))
        }
        fn ipv6_off(&self, link: &str) -> Result<()> {
            self.0.call(format!("ipv6off {link}"))
        }
        async fn join_bridge(&self, link: &str, bridge: &str, _: bool) -> Result<()> {
            self.0.call(format!("bridge {link} {bridge}"))
        }
        async fn move_into_container(&self, link: &str) -> Result<()> {
            self.0.call(format!("move {link}"))
        }
        async fn configure(&self, link: &str, inside: &Inside) -> Result<()> {
            self.0.call(format!("configure {link} {}", inside.ifname))
        }
        async fn host_route(&self, to: IpAddr, via: &str, _: IpAddr) -> Result<()> {
            self.0.call(format!("route {to} {via}"))
        }
        async fn delete_host_route(&self, to: IpAddr, via: &str) -> Result<()> {
            self.0.call(format!("unroute {to} {via}"))
        }
        async fn delete_link(&self, at: At, link: &str) -> Result<()> {
            self.0.call(format!("delete {at:?} {link}"))
        }
        async fn link_index(&self, _: &str) -> Result<Option<u32>> {
            Ok(Some(7))
        }
    }

    impl Dataplane for FakeDataplane<'_> {
        fn set_network(
            &mut self,
            subnet: ipnet::Ipv4Net,
            info: Option<netd_common::maps::NetworkInfo>,
        ) -> Result<()> {
            self.0.call(format!("network {subnet} {}", info.is_some()))
        }
        fn set_network6(
            &mut self,
            subnet: ipnet::Ipv6Net,
            info: Option<netd_common::maps::NetworkInfo>,
        ) -> Result<()> {
            self.0.call(format!("network6 {subnet} {}", info.is_some()))
        }
        fn set_overlay(&mut self, vni: u32, info: Option<OverlayInfo>) -> Result<()> {
            self.0.call(format!("overlay {vni} {}", info.is_some()))
        }
        fn police(
            &mut self,
            host_veth: &str,
            ifindex: u32,
            _: &EndpointInfo,
            info6: Option<&Endpoint6Info>,
        ) -> Result<()> {
            match info6 {
                Some(_) => self
                    .0
                    .call(format!("police {host_veth} {ifindex} with IPv6")),
                None => self.0.call(format!("police {host_veth} {ifindex}")),
            }
        }
        fn forget(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
            self.0.call(format!("forget {host_veth} {ifindex}"))
        }
        fn unpin(&mut self, host_veth: &str) -> Result<()> {
            self.0.call(format!("unpin {host_veth}"))
        }
        fn purge_flows(&mut self, ip: std::net::IpAddr) -> Result<()> {
            self.0.call(format!("purge {ip}"))
        }
        fn publish(
            &mut self,
            b: &PortBinding,
            ip: Option<Ipv4Addr>,
            _: Option<std::net::Ipv6Addr>,
            ifindex: u32,
        ) -> Result<()> {
            let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
            self.0.call(format!("publish {b} {ip} {ifindex}"))
        }
        fn unpublish(&mut self, b: &PortBinding) -> Result<()> {
            self.0.call(format!("unpublish {b}"))
        }
    }

    fn endpoint() -> EndpointPlan<'static> {
        EndpointPlan {
            id: "abc",
            ip: Some(Ipv4Addr::new(172, 18, 0, 2)),
            mac: [2, 0x42, 172, 18, 0, 2],
            ifname: "eth0",
            prefix: 16,
            mtu: None,
            gateway: None,
            ipv6: None,
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn attach(journal: &Journal) -> Result<()> {
        let steps = plan::attach_bridge(
            &endpoint(),
            "br-x",
            false,
            (EndpointInfo::default(), None),
            PeerGoes::IntoContainer,
        );
        block_on(apply(
            &FakeNode(journal),
            &mut FakeDataplane(journal),
            &steps,
        ))
    }

    #[test]
    fn a_plan_that_succeeds_runs_every_step_once_in_order() {
        let j = Journal::default();
        attach(&j).unwrap();
        assert_eq!(
            j.calls(),
            [
                "veth ndvabc ndpabc",
                "mac ndpabc",
                "ipv6off ndvabc",
                "police ndvabc 7",
                "bridge ndvabc br-x",
                "move ndpabc",
                "configure ndpabc eth0",
            ]
        );
    }

    #[test]
    fn a_failed_step_is_undone_in_reverse_and_nothing_after_it_runs() {
        let j = Journal::failing(&["move"]);
        let e = attach(&j).unwrap_err();
        assert!(
            format!("{e:#}").contains("move ndpabc into the container"),
            "{e:#}"
        );
        assert_eq!(
            j.calls()[5..],
            [
                "move ndpabc",
                "forget ndvabc 7",
                "delete Node ndvabc",
                "unpin ndvabc",
                "purge 172.18.0.2",
            ]
        );
    }

    #[test]
    fn an_undo_that_fails_is_reported_and_the_others_still_run() {
        let j = Journal::failing(&["configure", "forget"]);
        let e = format!("{:#}", attach(&j).unwrap_err());
        assert!(
            e.contains("undoing it left behind: forget endpoint ndvabc"),
            "{e}"
        );
        assert!(j.calls().ends_with(&[
            "delete Node ndvabc".into(),
            "unpin ndvabc".into(),
            "purge 172.18.0.2".into()
        ]));
    }

    #[test]
    fn a_failure_at_the_first_step_undoes_nothing() {
        let j = Journal::failing(&["veth"]);
        attach(&j).unwrap_err();
        assert_eq!(j.calls(), ["veth ndvabc ndpabc"]);
    }

    #[test]
    fn a_macvlan_that_fails_inside_the_container_is_removed_from_it() {
        let j = Journal::failing(&["configure"]);
        let steps = plan::attach_macvlan(&endpoint(), "lan0", MacvlanMode::Bridge, None);
        block_on(apply(&FakeNode(&j), &mut FakeDataplane(&j), &steps)).unwrap_err();
        assert_eq!(
            j.calls()[3..],
            [
                "configure ndpabc eth0",
                "delete Container ndpabc",
                "delete Node ndpabc",
            ]
        );
    }

    #[test]
    fn a_teardown_tries_every_step_and_reports_each_failure() {
        let j = Journal::failing(&["delete", "unpin"]);
        let steps = plan::detach(
            Some(Ipv4Addr::new(172, 18, 0, 2)),
            None,
            &Attached::Bridge {
                host_veth: "ndvabc",
                ifindex: 9,
            },
        );
        let left = block_on(teardown(
            &FakeNode(&j),
            &mut FakeDataplane(&j),
            "container web",
            &steps,
        ));
        assert_eq!(
            j.calls(),
            [
                "forget ndvabc 9",
                "delete Node ndvabc",
                "unpin ndvabc",
                "purge 172.18.0.2"
            ]
        );
        let warnings = left.into_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("container web: remove ndvabc"),
            "{warnings:?}"
        );
    }

    fn dual_stack_network() -> crate::state::Network {
        serde_json::from_value(serde_json::json!({
            "id": "0123456789ab", "name": "front", "driver": "bridge", "bridge": "br-front",
            "subnet": "172.20.0.0/16", "gateway": "172.20.0.1", "ip_range": null,
            "ipv6": {"subnet": "fd00:1::/64", "gateway": "fd00:1::1", "ip_range": null},
            "internal": false, "icc": true, "masquerade": true, "mtu": null,
            "options": {}, "tag": 3, "created": 0
        }))
        .unwrap()
    }

    #[test]
    fn a_dual_stack_network_that_fails_at_its_ipv6_subnet_is_undone() {
        use crate::driver::NetworkDriver;
        let j = Journal::failing(&["network6"]);
        let n = dual_stack_network();
        let steps = crate::driver::bridge::Bridge.setup(&n, &[], true);
        block_on(apply(&FakeNode(&j), &mut FakeDataplane(&j), &steps)).unwrap_err();
        assert_eq!(
            j.calls(),
            [
                "bridge br-front fd00:1::1/64",
                "network 172.20.0.0/16 true",
                "network6 fd00:1::/64 true",
                "network 172.20.0.0/16 false",
                "delete Node br-front",
            ]
        );
    }

    #[test]
    fn a_dual_stack_endpoint_is_registered_with_its_ipv6_side() {
        let j = Journal::default();
        let steps = plan::attach_bridge(
            &endpoint(),
            "br-x",
            false,
            (EndpointInfo::default(), Some(Endpoint6Info::default())),
            PeerGoes::IntoContainer,
        );
        block_on(apply(&FakeNode(&j), &mut FakeDataplane(&j), &steps)).unwrap();
        assert_eq!(j.calls()[3], "police ndvabc 7 with IPv6");
    }

    #[test]
    fn a_port_that_cannot_be_published_unpublishes_those_before_it() {
        let ports: Vec<PortBinding> = [80, 81, 82]
            .iter()
            .map(|&p| PortBinding {
                proto: crate::ports::Proto::Tcp,
                container_port: p,
                host_ip: Ipv4Addr::UNSPECIFIED.into(),
                host_port: 8000 + p,
            })
            .collect();
        let j = Journal::failing(&["publish 82/tcp"]);
        let to = plan::PublishTo {
            ip: Some(Ipv4Addr::new(172, 17, 0, 2)),
            ip6: None,
            via: "ndvabc",
        };
        let steps = plan::publish(&ports, &to);
        block_on(apply(&FakeNode(&j), &mut FakeDataplane(&j), &steps)).unwrap_err();
        assert_eq!(
            j.calls(),
            [
                "publish 80/tcp -> 0.0.0.0:8080 172.17.0.2 7",
                "publish 81/tcp -> 0.0.0.0:8081 172.17.0.2 7",
                "publish 82/tcp -> 0.0.0.0:8082 172.17.0.2 7",
                "unpublish 81/tcp -> 0.0.0.0:8081",
                "unpublish 80/tcp -> 0.0.0.0:8080",
            ]
        );
    }
}
