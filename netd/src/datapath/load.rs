//! Loads netd's kernel object: adopts the maps pinned in the bpffs directory (after
//! checking their layout), verifies the programs, and hands them and the maps out by name.

use std::{collections::HashSet, path::Path};

use anyhow::{Context, Result, bail};
use aya::{
    EbpfLoader,
    programs::{CgroupSockAddr, SchedClassifier, Xdp},
};
use netd_common::maps as names;

use super::{
    Datapath, ENDPOINT_PROGRAM, HOST_LOCAL_PROGRAMS, OVERLAY_PROGRAM, PROGRAMS, SWEEP_PROGRAM,
    UPLINK_PROGRAMS, XDP_PROGRAM,
};
use crate::pins;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Refuse a directory that is not on bpffs: pins there would not survive, or fail.
pub fn check_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create bpffs directory {}", dir.display()))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: all-zero is a valid statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs into that struct, with a NUL-terminated path.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", dir.display()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "--bpffs-dir {} is not on a bpf filesystem: mount one first (mount -t bpf bpf {}) or choose a directory under a bpffs mount",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

impl Datapath {
    /// Load and verify the programs, with their maps pinned in `bpffs_dir` (adopting maps
    /// a previous run pinned there). Nothing is attached yet.
    /// `flow_table_size` is the connection table's capacity in entries (two per flow).
    pub fn load(bpffs_dir: &Path, flow_table_size: u32) -> Result<Self> {
        check_bpffs(bpffs_dir)?;
        pins::check_pinned_maps(bpffs_dir, &pins::expected_maps(PROGRAMS, flow_table_size)?)?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(bpffs_dir)
            .map_max_entries(names::FLOWS, flow_table_size)
            .map_max_entries(names::PENDING_FLOWS, flow_table_size)
            .load(PROGRAMS)
            .context("load netd's eBPF programs")?;
        let mut datapath = Datapath {
            ebpf,
            links: pins::links_dir(bpffs_dir),
            endpoints_attached: HashSet::new(),
            flow_capacity: flow_table_size,
        };
        let names = UPLINK_PROGRAMS.iter().map(|(name, _)| *name).chain([
            ENDPOINT_PROGRAM,
            OVERLAY_PROGRAM,
            SWEEP_PROGRAM,
        ]);
        for name in names {
            datapath
                .program(name)?
                .load()
                .with_context(|| format!("verify program {name}"))?;
        }
        for name in HOST_LOCAL_PROGRAMS {
            datapath
                .socket_program(name)?
                .load()
                .with_context(|| format!("verify program {name}"))?;
        }
        Ok(datapath)
    }

    /// The uplink's XDP program (e.g. for `BPF_PROG_TEST_RUN`), verified on first use:
    /// a daemon with `--xdp off` never loads it.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .with_context(|| format!("program {XDP_PROGRAM} missing"))?
            .try_into()
            .with_context(|| format!("program {XDP_PROGRAM} is not XDP"))?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("verify program {XDP_PROGRAM}"))?;
        }
        Ok(prog)
    }

    /// A program of the object, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?)
    }

    pub(super) fn socket_program(&mut self, name: &str) -> Result<&mut CgroupSockAddr> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?)
    }

    pub(super) fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name} missing"))
    }

    pub(super) fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("map {name} missing"))
    }
}
