//! Attaches the programs (TC on the uplink and the endpoints' veths, XDP on the uplink,
//! socket hooks on a cgroup) through links pinned in the bpffs directory, so the data path
//! stays attached while the daemon is stopped and a new daemon swaps its programs in.

use std::{io::ErrorKind, os::fd::AsFd, path::Path};

use anyhow::{Context, Result};
use aya::{
    programs::{
        CgroupAttachMode, TcAttachType, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
    sys::SyscallError,
};
use log::{info, warn};
use netd_common::maps::EndpointInfo;

use super::{
    Datapath, ENDPOINT_EGRESS_PROGRAM, ENDPOINT_PROGRAM, HOST_LOCAL_PROGRAMS, UPLINK_PROGRAMS,
    XDP_PROGRAM,
};
use crate::pins;

/// `--xdp`: how to run the XDP program on the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpRequest {
    /// Native (driver) mode where the uplink's driver has it, else no XDP.
    Auto,
    /// Native mode, or fail.
    Native,
    /// Generic (skb) mode: slower than TC, for testing on drivers without XDP.
    Generic,
    /// No XDP: TC does all the translation.
    Off,
}

/// The XDP mode in use on the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpInUse {
    Native,
    Generic,
    Off,
}

impl XdpInUse {
    pub fn name(self) -> &'static str {
        match self {
            XdpInUse::Native => "native",
            XdpInUse::Generic => "generic",
            XdpInUse::Off => "off",
        }
    }
}

impl Datapath {
    /// Attach the uplink programs to `uplink` (TC ingress and egress), or swap them into
    /// the links a previous daemon pinned there; links of another uplink are removed.
    pub fn attach(&mut self, uplink: &str) -> Result<()> {
        let mut keep = Vec::new();
        for (name, attach) in UPLINK_PROGRAMS {
            let pin = format!("uplink-{uplink}-{name}");
            self.attach_tc_pinned(name, uplink, attach, &pin)?;
            keep.push(pin);
        }
        pins::retain_links(&self.links, "uplink-", &keep);
        info!("data path attached to uplink {uplink}");
        Ok(())
    }

    /// Swap program `name` into the link pinned as `pin`, or attach it to `iface` and
    /// pin the new link. A pinned link that cannot take the program (its interface is
    /// gone) is replaced.
    pub(super) fn attach_tc_pinned(
        &mut self,
        name: &str,
        iface: &str,
        attach: TcAttachType,
        pin: &str,
    ) -> Result<()> {
        let path = self.links.join(pin);
        let prog = self.program(name)?;
        let swapped = swap_into_pinned_link(&path, |link| {
            let id = prog.attach_to_link(SchedClassifierLink::try_from(link)?)?;
            // The pin holds the link; the program must not, or unpinning would not detach.
            drop(prog.take_link(id)?);
            Ok(())
        });
        if swapped {
            return Ok(());
        }
        let id = prog
            .attach(iface, attach)
            .with_context(|| format!("attach {name} to {iface}"))?;
        let link = FdLink::try_from(prog.take_link(id)?)?;
        pins::pin_link(link, &path)
    }

    /// Attach the XDP program to the uplink as `want` says, or swap it into the link a
    /// previous daemon pinned for the same mode. An XDP link of another mode is removed
    /// first (an interface cannot run native and generic XDP at once), and all of them
    /// for `off`. Returns the mode in use.
    pub fn attach_xdp(&mut self, uplink: &str, want: XdpRequest) -> Result<XdpInUse> {
        let mode = match want {
            XdpRequest::Auto | XdpRequest::Native => XdpInUse::Native,
            XdpRequest::Generic => XdpInUse::Generic,
            XdpRequest::Off => {
                pins::retain_links(&self.links, "xdp-", &[]);
                return Ok(XdpInUse::Off);
            }
        };
        if mode == XdpInUse::Generic {
            warn!(
                "generic XDP on {uplink} is for testing: slower than TC, and on NICs that report CHECKSUM_COMPLETE the kernel re-checks translated packets in software"
            );
        }
        let pin = format!("xdp-{uplink}-{}", mode.name());
        pins::retain_links(&self.links, "xdp-", std::slice::from_ref(&pin));
        match self.attach_xdp_pinned(uplink, mode, &pin) {
            Ok(()) => {
                info!("XDP attached to uplink {uplink} in {} mode", mode.name());
                Ok(mode)
            }
            Err(e) if want == XdpRequest::Auto => {
                warn!("XDP in native mode on {uplink}: {e:#}; running without XDP");
                pins::retain_links(&self.links, "xdp-", &[]);
                Ok(XdpInUse::Off)
            }
            Err(e) => Err(e),
        }
    }

    fn attach_xdp_pinned(&mut self, uplink: &str, mode: XdpInUse, pin: &str) -> Result<()> {
        let path = self.links.join(pin);
        let prog = self.xdp_program()?;
        let swapped = swap_into_pinned_link(&path, |link| {
            let id = prog.attach_to_link(XdpLink::try_from(link)?)?;
            // The pin holds the link; the program must not, or unpinning would not detach.
            drop(prog.take_link(id)?);
            Ok(())
        });
        if swapped {
            return Ok(());
        }
        let flags = if mode == XdpInUse::Generic {
            XdpMode::Skb
        } else {
            XdpMode::Driver
        };
        let id = prog
            .attach(uplink, flags)
            .with_context(|| format!("attach {XDP_PROGRAM} to {uplink}"))?;
        let link = FdLink::try_from(prog.take_link(id)?)?;
        pins::pin_link(link, &path)
    }

    /// Attach the endpoint program to a container's host-side veth and say who is behind
    /// it. Idempotent (a restarted daemon re-attaches to the veths it finds).
    pub fn attach_endpoint(
        &mut self,
        host_veth: &str,
        ifindex: u32,
        info: &EndpointInfo,
    ) -> Result<()> {
        self.register_endpoint(ifindex, info)
            .with_context(|| format!("register endpoint {host_veth}"))?;
        if !self.endpoints_attached.contains(host_veth) {
            for (name, attach, pin) in endpoint_links(host_veth) {
                self.attach_tc_pinned(name, host_veth, attach, &pin)?;
            }
            self.endpoints_attached.insert(host_veth.to_string());
        }
        Ok(())
    }

    /// Unpin the endpoint links of host-side veths not in `keep`.
    pub fn retain_endpoint_links(&mut self, keep: &[String]) -> usize {
        let keep: Vec<String> = keep
            .iter()
            .flat_map(|v| endpoint_links(v).map(|(_, _, pin)| pin))
            .collect();
        self.endpoints_attached
            .retain(|v| keep.contains(&endpoint_links(v)[0].2));
        pins::retain_links(&self.links, "endpoint-", &keep)
    }

    /// Undo `attach_endpoint`, step two (after the veth is deleted): unpin the programs'
    /// links. Tolerant of links already gone; every link is tried.
    pub fn unpin_endpoint(&mut self, host_veth: &str) -> Result<()> {
        self.endpoints_attached.remove(host_veth);
        let mut result = Ok(());
        for (_, _, pin) in endpoint_links(host_veth) {
            if let Err(e) = pins::unpin_link(&self.links.join(pin)) {
                result = Err(e);
            }
        }
        result
    }

    /// Attach the host-local socket hooks to the cgroup at `cgroup` (a cgroup2 directory):
    /// processes in it, and only those in the node's network namespace, reach published
    /// ports on 127.0.0.1 and the node's addresses. Other programs attached there stay
    /// (a link attachment never replaces another).
    pub fn attach_host_local(&mut self, cgroup: &Path) -> Result<()> {
        let dir = std::fs::File::open(cgroup)
            .with_context(|| format!("--cgroup {}: open", cgroup.display()))?;
        let ino = std::os::unix::fs::MetadataExt::ino(&dir.metadata()?);
        let mut keep = Vec::new();
        for name in HOST_LOCAL_PROGRAMS {
            let pin = format!("cgroup-{ino}-{name}");
            let path = self.links.join(&pin);
            keep.push(pin);
            let prog = self.socket_program(name)?;
            match pins::update_pinned_link(&path, prog.fd()?.as_fd()) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    log::warn!("{e:#}: attaching afresh");
                    pins::remove_link(&path);
                }
            }
            // On kernels with bpf_link (5.7+, which this needs anyway for the netns
            // cookie) aya attaches with a link, which is always multi-attach and takes no
            // flags: BPF_F_ALLOW_MULTI there is EINVAL.
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attach {name} to cgroup {}", cgroup.display()))?;
            pins::pin_link(FdLink::try_from(prog.take_link(id)?)?, &path)?;
        }
        pins::retain_links(&self.links, "cgroup-", &keep);
        info!(
            "host-local access to published ports for cgroup {}",
            cgroup.display()
        );
        Ok(())
    }
}

/// Swap a program into the link pinned at `path`: `update` gets the link and replaces
/// the link's program (BPF_LINK_UPDATE, through aya's `attach_to_link`). `false` when
/// there is none, or when the pinned link cannot take it (its interface is gone, or it is
/// not a link of the program's kind; the pin is removed then).
fn swap_into_pinned_link(path: &Path, update: impl FnOnce(FdLink) -> Result<()>) -> bool {
    let swapped = match PinnedLink::from_pin(path) {
        Ok(pinned) => update(FdLink::from(pinned))
            .with_context(|| format!("update pinned link {}", path.display())),
        Err(LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == ErrorKind::NotFound =>
        {
            return false;
        }
        Err(e) => Err(e).with_context(|| format!("open pinned link {}", path.display())),
    };
    match swapped {
        Ok(()) => true,
        Err(e) => {
            warn!("{e:#}: attaching afresh");
            pins::remove_link(path);
            false
        }
    }
}

/// The programs on a host-side veth, where each attaches, and its link's pin name.
fn endpoint_links(host_veth: &str) -> [(&'static str, TcAttachType, String); 2] {
    [
        (
            ENDPOINT_PROGRAM,
            TcAttachType::Ingress,
            format!("endpoint-{host_veth}"),
        ),
        (
            ENDPOINT_EGRESS_PROGRAM,
            TcAttachType::Egress,
            format!("endpoint-{host_veth}-egress"),
        ),
    ]
}

/// The cgroup2 hierarchy's mount point, if this mount namespace has one.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
    })
}
