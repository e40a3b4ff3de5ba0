//! Container processes: the namespace holder (a pause process that keeps a container's
//! network namespace alive independently of its command and of the daemon) and the
//! command itself, started inside that namespace. Processes are named by pid and start
//! time so that a reused pid is never signalled.

use std::{
    fs::File,
    io::Read,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::{netns, state::ProcessId};

/// The soft RLIMIT_NOFILE the daemon was started with (`u64::MAX`: not recorded), given
/// back to the commands it starts.
static INHERITED_NOFILE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Raise this process's soft limit on open files to its hard limit, as systemd advises a
/// service that needs many: the daemon holds a descriptor per container namespace and per
/// API connection. Container commands get the limit it was started with back
/// (`spawn_in`). Returns (before, after).
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    INHERITED_NOFILE.store(limit.rlim_cur, Ordering::Relaxed);
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit with a valid struct; only the soft limit moves, up to the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, raised.rlim_cur))
}

/// The open-files limit a command the daemon starts gets: the one the daemon was started
/// with (its soft limit), under the current hard limit.
fn command_nofile_limit() -> Option<libc::rlimit> {
    let soft = INHERITED_NOFILE.load(Ordering::Relaxed);
    if soft == u64::MAX {
        return None;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    limit.rlim_cur = soft.min(limit.rlim_max);
    Some(limit)
}

/// The hidden subcommand the holder runs as.
pub const HOLDER_SUBCOMMAND: &str = "netns-holder";

/// Body of the holder process: sleep until a signal ends it.
pub fn hold_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Start a holder in a new network namespace. By the time this returns the namespace
/// exists (the child unshares before exec, and spawn waits for the exec). Its command line
/// names the daemon's state directory and the container, so that a holder left by a
/// daemon killed half-way is found (`find_holders`).
pub fn spawn_holder(state_dir: &Path, container_id: &str) -> Result<(ProcessId, Child)> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(HOLDER_SUBCOMMAND)
        .arg(state_dir)
        .arg(container_id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("start the network namespace holder")?;
    let id = identify(child.id().context("holder exited at once")?)?;
    Ok((id, child))
}

/// A container's log grows to this before it is rotated (checked on every garbage
/// collection tick): the log then holds what came since, `NAME.log.1` the last this many
/// bytes before.
pub const LOG_MAX_BYTES: u64 = 10 << 20;

/// Where a container's command writes its output.
pub fn log_path(state_dir: &Path, container: &str) -> PathBuf {
    logs_dir(state_dir).join(format!("{container}.log"))
}

pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// The previous part of a rotated log: `NAME.log.1`.
fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Remove a container's logs (the current and the rotated one).
pub fn remove_log(log: &Path) -> std::io::Result<()> {
    for path in [log.to_path_buf(), rotated(log)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// If `log` is over `max` bytes: its last `max` bytes become `NAME.log.1` (replacing the
/// one before) and `log` is emptied in place. In place, because the command keeps writing
/// through its own descriptor (opened O_APPEND, so it writes on at the new end); output
/// written between the copy and the truncation is lost, as with logrotate's
/// `copytruncate`. Whether it rotated.
pub fn rotate_log(log: &Path, max: u64) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut current = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(log)?;
    let size = current.metadata()?.len();
    if size <= max {
        return Ok(false);
    }
    current.seek(SeekFrom::Start(size - max))?;
    let previous = rotated(log);
    let mut tmp_name = previous.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut copy = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::copy(&mut (&current).take(max), &mut copy)?;
    std::fs::rename(&tmp, &previous)?;
    current.set_len(0)?;
    Ok(true)
}

/// Rotate every container log in `dir` that is over `max` bytes; the ones rotated.
pub fn rotate_logs(dir: &Path, max: u64) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut rotated = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            match rotate_log(&path, max) {
                Ok(true) => rotated.push(path.display().to_string()),
                Ok(false) => {}
                Err(e) => log::warn!("rotate log {}: {e}", path.display()),
            }
        }
    }
    rotated
}

/// Start `argv` inside namespace `ns`, in its own session, output to `log`, which starts
/// empty (a name used before must not show an older container's output) and is readable
/// by root only. The command gets umask 022, as Docker's do, not the daemon's 077.
pub fn spawn_in(ns: &File, argv: &[String], log: &Path) -> Result<(ProcessId, Child)> {
    let (program, args) = argv.split_first().context("no command given")?;
    if let Some(dir) = log.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    remove_log(log).with_context(|| format!("remove old log {}", log.display()))?;
    // Removed above: this makes a new, empty file.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("open log {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let fd = ns.as_raw_fd();
    let nofile = command_nofile_limit();
    // SAFETY: only async-signal-safe calls between fork and exec; `ns` outlives spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(limit) = nofile
                && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::umask(0o022);
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("start {program}"))?;
    let id = identify(child.id().context("command exited at once")?)?;
    Ok((id, child))
}

/// Enter the namespace at `path` (opened as the daemon opens `--netns`: no symbolic link,
/// nsfs, a network namespace) and run `argv` in it (for `netd exec`). With `expected`,
/// the namespace must still be that one.
pub fn exec_in(
    path: &Path,
    expected: Option<netns::NsId>,
    argv: &[String],
) -> Result<std::process::ExitStatus> {
    let ns = netns::open_path(path)
        .with_context(|| format!("open the container's network namespace {}", path.display()))?;
    if let Some(want) = expected
        && netns::id(&ns)? != want
    {
        anyhow::bail!(
            "{} is no longer the container's network namespace (it was replaced)",
            path.display()
        );
    }
    netns::enter(&ns).context("enter the container's network namespace")?;
    let (program, args) = argv.split_first().context("no command given")?;
    std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("run {program}"))
}

/// Name a child we just started. It may already have exited: as our unreaped child it is
/// then a zombie, which still has its start time.
pub fn identify(pid: u32) -> Result<ProcessId> {
    let (start_time, _) = stat(pid).with_context(|| format!("read /proc/{pid}/stat"))?;
    Ok(ProcessId { pid, start_time })
}

/// Start time (field 22 of /proc/PID/stat) and whether the process is a zombie.
fn stat(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(19)?.parse().ok()?, fields.first() == Some(&"Z")))
}

/// The holders started for `state_dir`: (container id, process).
pub fn find_holders(state_dir: &Path) -> Vec<(String, ProcessId)> {
    let want = state_dir.as_os_str().as_encoded_bytes();
    let mut out = Vec::new();
    for pid in all_pids() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if let [_, sub, dir, id, ..] = args.as_slice()
            && *sub == HOLDER_SUBCOMMAND.as_bytes()
            && *dir == want
            && let (Ok(id), Ok(p)) = (std::str::from_utf8(id), identify(pid))
        {
            out.push((id.to_string(), p));
        }
    }
    out
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A network namespace's identity: device and inode of its nsfs file.
pub fn netns_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The network namespace of our holder `holder`, checked after the open to still be that
/// process (a pid reused by another process between its death and the open would give
/// that process's namespace).
pub fn open_holder(holder: ProcessId) -> Result<File> {
    let ns = netns::open_of_pid(holder.pid)?;
    if !is_alive(holder) {
        anyhow::bail!("namespace holder {} is gone", holder.pid);
    }
    Ok(ns)
}

/// SIGKILL every process in the network namespace `ns`, a container's own. Refused (0)
/// for the caller's own namespace and the initial one: a holder that did not unshare, or
/// a namespace path that resolves to the node, must never take the node's processes down.
pub fn kill_namespace(ns: (u64, u64)) -> usize {
    if netns::is_initial(ns) || netns_id(Path::new("/proc/self/ns/net")) == Some(ns) {
        log::error!("refusing to kill the processes of the node's own network namespace");
        return 0;
    }
    let me = std::process::id();
    let mut n = 0;
    for pid in all_pids() {
        if pid != me && netns_id(Path::new(&format!("/proc/{pid}/ns/net"))) == Some(ns) {
            // SAFETY: kill with a pid we just found in the container's namespace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            n += 1;
        }
    }
    n
}

/// A process by descriptor (`pidfd_open`): it names that process, never one that reuses
/// its pid later.
pub struct Pidfd(std::os::fd::OwnedFd);

impl Pidfd {
    pub fn open(pid: u32) -> std::io::Result<Pidfd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we were just given and own alone.
        Ok(Pidfd(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd as i32)
        }))
    }

    /// Has the process exited (a pidfd polls readable from then on)?
    pub fn exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & libc::POLLIN != 0
    }
}

/// Still running, and still the process we started (not a reused pid, not a zombie).
pub fn is_alive(p: ProcessId) -> bool {
    stat(p.pid) == Some((p.start_time, false))
}

/// Send `signal` to `p` if it is still the process we started.
pub fn signal(p: ProcessId, signal: i32) {
    if is_alive(p) {
        // SAFETY: kill with a checked pid.
        unsafe { libc::kill(p.pid as i32, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netd-logs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_log_over_its_cap_keeps_its_last_part_and_starts_again() {
        let dir = scratch("rotate");
        let log = dir.join("web.v1.log");
        // The writer's own descriptor, O_APPEND like the command's.
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        use std::io::Write;
        writer.write_all(&[b'a'; 100]).unwrap();
        assert!(!rotate_log(&log, 100).unwrap(), "at the cap: kept");
        writer.write_all(&[b'b'; 50]).unwrap();
        assert!(rotate_log(&log, 100).unwrap());
        let previous = std::fs::read(dir.join("web.v1.log.1")).unwrap();
        assert_eq!(
            previous,
            [[b'a'; 50].as_slice(), &[b'b'; 50]].concat(),
            "the last 100 bytes"
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        // The writer goes on at the start of the emptied file, not past a hole.
        writer.write_all(b"after").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"after");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("web.v1.log.1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second rotation replaces the first copy.
        writer.write_all(&[b'c'; 200]).unwrap();
        assert_eq!(rotate_logs(&dir, 100).len(), 1);
        assert_eq!(
            std::fs::read(dir.join("web.v1.log.1")).unwrap(),
            [b'c'; 100]
        );
        assert!(!dir.join("web.v1.log.1.tmp").exists());
        remove_log(&log).unwrap();
        assert!(!log.exists() && !dir.join("web.v1.log.1").exists());
        remove_log(&log).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_pidfd_tells_when_its_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = Pidfd::open(child.id()).unwrap();
        assert!(!fd.exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(fd.exited());
    }
}
