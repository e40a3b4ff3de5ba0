//! Loads netd's kernel object: adopts the maps pinned in the bpffs directory (after
//! checking their layout), verifies the programs, and hands them and the maps out by name.

use std::{collections::HashSet, path::Path};

use anyhow::{Context, Result, bail};
use aya::{
    EbpfLoader,
    programs::{CgroupSockAddr, SchedClassifier, Xdp},
};
use netd_common::{
    counters::{Hook, Reason},
    maps as names,
};

use super::{
    Datapath, ENDPOINT_EGRESS_PROGRAM, ENDPOINT_PROGRAM, HOST_LOCAL_PROGRAMS, IPV6_PROGRAMS,
    OVERLAY_PROGRAM, PROGRAMS, SWEEP_PROGRAM, SWEEP6_PROGRAM, UPLINK_PROGRAMS, XDP_NAT46_PROGRAM,
    XDP_PROGRAM, XDP6_PROGRAM,
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

/// `netd daemon --datapath-log`: what the kernel programs log (through aya-log, to the
/// daemon's log under the target `netd_ebpf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathLog {
    /// Nothing: the verifier finds every log call dead.
    Off,
    /// netd's own failures (a rewrite, a redirect, a tunnel key).
    Error,
    /// Also every dropped packet, with its hook and reason.
    Debug,
}

/// The programs log a verdict as `hook H reason R` (numbers: names would multiply the
/// paths the verifier explores); this logger passes them on as `netd stats` names them,
/// `EndpointIngress: drop_spoofed_source`.
pub struct NamedVerdicts<L>(pub L);

impl<L: log::Log> log::Log for NamedVerdicts<L> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        let text = record.args().to_string();
        let named = text
            .strip_prefix("hook ")
            .and_then(|rest| rest.split_once(" reason "))
            .and_then(|(h, r)| {
                let hook = Hook::ALL.iter().find(|x| h.parse() == Ok(**x as u32))?;
                let reason = Reason::ALL.iter().find(|x| r.parse() == Ok(**x as u32))?;
                Some(format!("{}: {}", hook.name(), reason.name()))
            });
        self.0.log(
            &log::Record::builder()
                .args(format_args!("{}", named.as_deref().unwrap_or(&text)))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

impl DatapathLog {
    /// What the daemon's log lets through of the programs' records (target `netd_ebpf`).
    pub fn log_filter(self) -> Option<log::LevelFilter> {
        match self {
            DatapathLog::Off => None,
            DatapathLog::Error => Some(log::LevelFilter::Error),
            DatapathLog::Debug => Some(log::LevelFilter::Debug),
        }
    }

    /// aya-log's level number (`aya_log_common::Level`: error 1, debug 4; 0 logs nothing).
    fn level(self) -> u8 {
        match self {
            DatapathLog::Off => 0,
            DatapathLog::Error => 1,
            DatapathLog::Debug => 4,
        }
    }
}

impl Datapath {
    /// Load and verify the programs, with their maps pinned in `bpffs_dir` (adopting maps
    /// a previous run pinned there). Nothing is attached yet.
    /// `flow_table_size` is the connection table's capacity in entries (two per flow).
    pub fn load(bpffs_dir: &Path, flow_table_size: u32) -> Result<Self> {
        Self::load_logging(bpffs_dir, flow_table_size, DatapathLog::Off)
    }

    /// `load`, with the programs' logs at `log` (read them with `take_logger`).
    pub fn load_logging(bpffs_dir: &Path, flow_table_size: u32, log: DatapathLog) -> Result<Self> {
        check_bpffs(bpffs_dir)?;
        pins::check_pinned_maps(bpffs_dir, &pins::expected_maps(PROGRAMS, flow_table_size)?)?;
        let level = log.level();
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(bpffs_dir);
        for table in names::FLOW_TABLES {
            loader.map_max_entries(table, flow_table_size);
        }
        let ebpf = loader
            // aya-log's level: read-only, so the verifier prunes the calls it turns off.
            .override_global("AYA_LOG_LEVEL", &level, true)
            // Likewise: the XDP note's helper where the kernel has it, pruned where not.
            .override_global(
                "XDP_METADATA",
                &u8::from(super::kernel::xdp_metadata_supported()),
                true,
            )
            .load(PROGRAMS)
            .context("load netd's eBPF programs")?;
        let mut datapath = Datapath {
            ebpf,
            links: pins::links_dir(bpffs_dir),
            endpoints_attached: HashSet::new(),
            flow_capacity: flow_table_size,
            purged: Default::default(),
            nat46: None,
            nat46_orphans: HashSet::new(),
            nat46_uplink_mtu: 0,
        };
        let names = UPLINK_PROGRAMS.iter().map(|(name, _)| *name).chain([
            ENDPOINT_PROGRAM,
            ENDPOINT_EGRESS_PROGRAM,
            OVERLAY_PROGRAM,
            SWEEP_PROGRAM,
            SWEEP6_PROGRAM,
        ]);
        for name in names.chain(IPV6_PROGRAMS.iter().map(|(name, _)| *name)) {
            datapath
                .program(name)?
                .load()
                .with_context(|| format!("verify program {name}"))?;
        }
        datapath.fill_calls()?;
        for name in HOST_LOCAL_PROGRAMS {
            datapath
                .socket_program(name)?
                .load()
                .with_context(|| format!("verify program {name}"))?;
        }
        datapath.adopt_old_flows(bpffs_dir)?;
        Ok(datapath)
    }

    /// Put the IPv6 programs in the slots the IPv4 entry points tail-call (replacing a
    /// previous daemon's: its programs, still attached until their links are updated,
    /// call the new ones). Before anything is attached, so that no IPv6 frame ever finds
    /// a slot empty.
    fn fill_calls(&mut self) -> Result<()> {
        let fds: Vec<(u32, aya::programs::ProgramFd)> = IPV6_PROGRAMS
            .iter()
            .map(|(name, slot)| Ok((*slot, self.program(name)?.fd()?.try_clone()?)))
            .collect::<Result<_>>()?;
        let mut calls = aya::maps::ProgramArray::try_from(self.map_mut(names::CALLS)?)?;
        for (slot, fd) in &fds {
            calls
                .set(*slot, fd, 0)
                .with_context(|| format!("put IPv6 program {slot} in {}", names::CALLS))?;
        }
        Ok(())
    }

    /// The reader of the programs' logs (aya-log's ring buffer), to poll for as long as
    /// the programs run; `None` with logging off.
    pub fn take_logger(
        &mut self,
        log: DatapathLog,
    ) -> Result<Option<aya_log::EbpfLogger<NamedVerdicts<&'static dyn log::Log>>>> {
        self.take_logger_to(log, log::logger())
    }

    /// `take_logger`, the records going to `to` (a test's, say) instead of the log.
    pub fn take_logger_to<T: log::Log>(
        &mut self,
        log: DatapathLog,
        to: T,
    ) -> Result<Option<aya_log::EbpfLogger<NamedVerdicts<T>>>> {
        if log == DatapathLog::Off {
            return Ok(None);
        }
        Ok(Some(
            aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, NamedVerdicts(to))
                .context("read the programs' logs")?,
        ))
    }

    /// The uplink's XDP program (e.g. for `BPF_PROG_TEST_RUN`), verified on first use:
    /// a daemon with `--xdp off` never loads it.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp> {
        if self.xdp_of(XDP_PROGRAM)?.fd().is_err() {
            // Its IPv6 halves first, in the slots tail-called: no IPv6 frame finds them
            // empty once the program is attached (NAT46 before the program calling it).
            self.xdp_call(XDP_NAT46_PROGRAM, names::XDP_CALL_NAT46)?;
            self.xdp_call(XDP6_PROGRAM, names::XDP_CALL_UPLINK6)?;
            self.xdp_of(XDP_PROGRAM)?
                .load()
                .with_context(|| format!("verify program {XDP_PROGRAM}"))?;
        }
        self.xdp_of(XDP_PROGRAM)
    }

    /// Verify the XDP program `name` and put it in slot `index` of `XDP_CALLS`.
    fn xdp_call(&mut self, name: &str, index: u32) -> Result<()> {
        let program = self.xdp_of(name)?;
        program
            .load()
            .with_context(|| format!("verify program {name}"))?;
        let fd = program.fd()?.try_clone()?;
        aya::maps::ProgramArray::try_from(self.map_mut(names::XDP_CALLS)?)?
            .set(index, &fd, 0)
            .with_context(|| format!("put {name} in {}", names::XDP_CALLS))
    }

    fn xdp_of(&mut self, name: &str) -> Result<&mut Xdp> {
        self.ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()
            .with_context(|| format!("program {name} is not XDP"))
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
