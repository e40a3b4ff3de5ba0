//! Network namespaces by file descriptor: open one safely from a path a client gave, know
//! it by (device, inode), and run work on a thread inside it (setns affects only the
//! calling thread, so the daemon's own threads stay in the node).
//!
//! A path is opened once and never by name again: the descriptor is the namespace. The
//! open never blocks and has no side effects whatever the path names (a FIFO, a device,
//! a tty): it is `O_PATH` first, checked to be on nsfs, and only then opened for real.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Component, Path},
};

use anyhow::{Context, Result, anyhow, bail};

/// A namespace's identity: device and inode of its nsfs file.
pub type NsId = (u64, u64);

/// The inode of the initial network namespace on kernels that fix it
/// (`PROC_NET_INIT_INO`). Dynamic namespace inodes start at 0xF0000000, so no other
/// namespace ever has it.
const INIT_NET_INO: u64 = 0xEFFF_FFF9;

/// Open the network namespace at `path`, a client's `--netns`: an absolute path with no
/// symbolic link in it (a bind mount such as `/run/netns/NAME`), or exactly
/// `/proc/PID/ns/net`, the kernel's link to a process's namespace. Refused with the
/// reason when it is anything else.
pub fn open_path(path: &Path) -> Result<File> {
    if !path.is_absolute() {
        bail!("not an absolute path");
    }
    let opath = match proc_pid(path) {
        Some(pid) => open_proc_ns(pid)?,
        None => openat2(
            libc::AT_FDCWD,
            path,
            libc::O_PATH | libc::O_CLOEXEC,
            libc::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow!(
                "a symbolic link is on the path: give the namespace file itself (of the kernel's links, only /proc/PID/ns/net is taken)"
            ),
            Some(libc::ENOSYS) => anyhow!("this kernel has no openat2 (Linux 5.6 or later)"),
            _ => anyhow::Error::from(e),
        })?,
    };
    reopen_checked(&opath)
}

/// `open_path` as process `pid` sees `path`: through its root (a chroot's too), in its
/// mount namespace. A runtime's `CNI_NETNS` may be a bind mount that only the runtime's
/// mount namespace has (Podman's `/run/netns` under a private `/run`), and the plugin that
/// sends it is that process. The same rules: no symbolic link on the way, a network
/// namespace at the end. `/proc/N/ns/net` names process N of the caller's PID namespace:
/// taken only when that is the daemon's too (elsewhere N would name another process).
pub fn open_path_seen_by(pid: u32, path: &Path) -> Result<File> {
    if !path.is_absolute() {
        bail!("not an absolute path");
    }
    if pid == 0 {
        bail!("the process that sent it is in a PID namespace netd cannot see");
    }
    if proc_pid(path).is_some() {
        if !same_namespace(pid, "pid") {
            bail!(
                "a /proc path from a process in another PID namespace names another process: give a bind-mounted namespace file"
            );
        }
        return open_path(path);
    }
    let root = openat2(
        libc::AT_FDCWD,
        Path::new(&format!("/proc/{pid}/root")),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    )
    .with_context(|| format!("open the root of process {pid}"))?;
    let inside = path.strip_prefix("/").unwrap_or(path);
    let opath = openat2(
        root.as_raw_fd(),
        inside,
        libc::O_PATH | libc::O_CLOEXEC,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_IN_ROOT,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => anyhow!(
            "a symbolic link is on the path (netd-cni resolves the directories; the namespace file itself must not be a link)"
        ),
        _ => anyhow::Error::from(e).context(format!("as process {pid} sees it")),
    })?;
    reopen_checked(&opath)
}

/// Are process `pid` and the daemon in the same namespace of this kind?
fn same_namespace(pid: u32, kind: &str) -> bool {
    let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let theirs = id(&format!("/proc/{pid}/ns/{kind}"));
    theirs.is_some() && theirs == id(&format!("/proc/self/ns/{kind}"))
}

/// The network namespace `ns`, wherever it still exists: a process in it, a bind mount
/// of it in any process's mount namespace (a runtime's `/run/netns/...` that the daemon's
/// own mount namespace does not have), or a descriptor a process holds open on it (a
/// runtime that keeps its pods' namespaces by fd). `None` when none exists: it is gone.
pub fn find(ns: NsId) -> Option<File> {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let same = |f: File| (id(&f).ok() == Some(ns)).then_some(f);
    let ns_of = |pid: u32, kind: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
            .map(|m| (m.dev(), m.ino()))
            .ok()
    };
    if let Some(pid) = pids.iter().copied().find(|&p| ns_of(p, "net") == Some(ns)) {
        return open_of_pid(pid).ok().and_then(same);
    }
    let mut mount_namespaces = std::collections::HashSet::new();
    let wanted = format!("net:[{}]", ns.1);
    for &pid in &pids {
        if !ns_of(pid, "mnt").is_some_and(|m| mount_namespaces.insert(m)) {
            continue;
        }
        let Ok(mountinfo) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
            continue;
        };
        for mountpoint in nsfs_mountpoints(&mountinfo, &wanted) {
            if let Some(f) = open_path_seen_by(pid, Path::new(&mountpoint))
                .ok()
                .and_then(same)
            {
                return Some(f);
            }
        }
    }
    pids.into_iter()
        .find_map(|pid| open_held_by(pid, ns))
        .and_then(same)
}

/// A namespace process `pid` holds a descriptor of, known by what the descriptor's link
/// leads to (its text is the path it was opened by, `/` once that is unmounted):
/// `/proc/PID/fd` opened with no symbolic link on the way, then the one kernel link.
fn open_held_by(pid: u32, ns: NsId) -> Option<File> {
    let dir = format!("/proc/{pid}/fd");
    let fds = std::fs::read_dir(&dir).ok()?;
    let fd = fds
        .flatten()
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| (m.dev(), m.ino()) == ns))?;
    let dir = openat2(
        libc::AT_FDCWD,
        Path::new(&dir),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        libc::RESOLVE_NO_SYMLINKS,
    )
    .ok()?;
    let opath = openat2(
        dir.as_raw_fd(),
        Path::new(&fd.file_name()),
        libc::O_PATH | libc::O_CLOEXEC,
        0,
    )
    .ok()?;
    reopen_checked(&opath).ok()
}

/// The mount points of `mountinfo` where nsfs shows `root` (`net:[INODE]`), unescaped.
fn nsfs_mountpoints(mountinfo: &str, root: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("nsfs "))
        })
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (fields.get(3) == Some(&root)).then(|| unescape_octal(fields.get(4)?))?
        })
        .collect()
}

/// mountinfo's `\040`-style escapes.
fn unescape_octal(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok()?;
            out.push(u8::from_str_radix(digits, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The network namespace of process `pid`, through `/proc/PID/ns` opened with no
/// symbolic link and `net` inside it (the one link followed). The caller checks that the
/// process is still the one it means (a pid can be reused).
pub fn open_of_pid(pid: u32) -> Result<File> {
    reopen_checked(&open_proc_ns(pid)?)
}

/// The calling process's own network namespace (the daemon's: the node's).
pub fn open_own() -> Result<File> {
    open_of_pid(std::process::id())
}

/// (device, inode) of an open namespace.
pub fn id(ns: &File) -> io::Result<NsId> {
    let m = ns.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Is `ns` the initial network namespace (the host's)? Known by its fixed inode where the
/// kernel has one, and by comparison with init's (pid 1 of this PID namespace) where we
/// may open that.
pub fn is_initial(ns: NsId) -> bool {
    ns.1 == INIT_NET_INO || open_of_pid(1).and_then(|f| Ok(id(&f)?)).ok() == Some(ns)
}

/// `/proc/PID/ns/net` exactly (no `.`, `..` or doubled slashes): the PID.
fn proc_pid(path: &Path) -> Option<u32> {
    let parts: Vec<Component> = path.components().collect();
    match parts.as_slice() {
        [
            Component::RootDir,
            Component::Normal(proc_),
            Component::Normal(pid),
            Component::Normal(ns),
            Component::Normal(net),
        ] if *proc_ == "proc" && *ns == "ns" && *net == "net" => {
            let pid = pid.to_str()?;
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            pid.parse().ok()
        }
        _ => None,
    }
}

/// `O_PATH` descriptor of `/proc/PID/ns/net`: the directory with no symbolic link on its
/// way, then its `net` (a kernel link, followed).
fn open_proc_ns(pid: u32) -> Result<OwnedFd> {
    let dir = format!("/proc/{pid}/ns");
    let dir = openat2(
        libc::AT_FDCWD,
        Path::new(&dir),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        libc::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => anyhow!("no process {pid}"),
        _ => anyhow::Error::from(e).context(format!("open {dir}")),
    })?;
    openat2(
        dir.as_raw_fd(),
        Path::new("net"),
        libc::O_PATH | libc::O_CLOEXEC,
        0,
    )
    .with_context(|| format!("open /proc/{pid}/ns/net"))
}

/// From an `O_PATH` descriptor: check it is a namespace (nsfs), only then open it for
/// real (so no device, FIFO or tty is ever opened), and check it is a network namespace.
fn reopen_checked(opath: &OwnedFd) -> Result<File> {
    // SAFETY: all-zero is a valid statfs.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs into that struct, on a valid descriptor.
    if unsafe { libc::fstatfs(opath.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error()).context("fstatfs");
    }
    // f_type and the magic constant have different integer types on some architectures.
    #[allow(clippy::unnecessary_cast)]
    let on_nsfs = fs.f_type as i64 == libc::NSFS_MAGIC as i64;
    if !on_nsfs {
        bail!(
            "not a namespace file (a network namespace is /proc/PID/ns/net, or a file `ip netns add` bind-mounted)"
        );
    }
    // Through our own descriptor, so the file is the one checked, not whatever the path
    // names by now.
    let file = openat2(
        libc::AT_FDCWD,
        Path::new(&format!("/proc/self/fd/{}", opath.as_raw_fd())),
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        0,
    )
    .context("reopen the namespace")?;
    // SAFETY: an ioctl without arguments on a valid descriptor.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(io::Error::last_os_error()).context("NS_GET_NSTYPE");
    }
    if kind != libc::CLONE_NEWNET {
        bail!("a {} namespace, not a network namespace", kind_name(kind));
    }
    Ok(File::from(file))
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "UTS",
        libc::CLONE_NEWIPC => "IPC",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "PID",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "other",
    }
}

fn openat2(dir: RawFd, path: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero open_how is valid (no flags, mode 0, no resolve restriction).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: openat2 with a NUL-terminated path and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat2 just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`): unlike its
/// inode number, which the kernel hands to a new namespace once the old one is freed, a
/// cookie is never reused while the machine runs.
pub fn current_cookie() -> Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: socket() with constant arguments; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("socket for SO_NETNS_COOKIE");
    }
    // SAFETY: a descriptor socket() just returned, owned by no one else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the size given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("getsockopt SO_NETNS_COOKIE");
    }
    Ok(cookie)
}

/// The cookie of the network namespace `ns`.
pub fn cookie(ns: &File) -> Result<u64> {
    run_in(ns, current_cookie)
}

/// Move the calling thread into the network namespace `ns`.
pub fn enter(ns: &impl AsFd) -> std::io::Result<()> {
    // SAFETY: setns on a valid fd; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Run `f` on a fresh thread that has entered `ns`, and return what it returns.
pub fn run_in<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.try_clone()?;
    std::thread::spawn(move || {
        enter(&ns).context("enter network namespace")?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("namespace worker thread panicked"))?
}

/// The name of interface `ifindex` in the calling thread's network namespace, if it
/// exists.
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if name.is_null() {
        return None;
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsfs_mount_points_are_found_by_inode_and_unescaped() {
        let mountinfo = "\
25 1 0:23 / /run rw,nosuid - tmpfs tmpfs rw
612 25 0:4 net:[4026532567] /run/netns/netns-1 rw shared:5 - nsfs nsfs rw
613 25 0:4 net:[4026532999] /run/netns/other rw - nsfs nsfs rw
614 25 0:4 net:[4026532567] /tmp/a\\040b rw - nsfs nsfs rw
615 25 0:4 mnt:[4026532567] /tmp/mnt rw - nsfs nsfs rw
";
        assert_eq!(
            nsfs_mountpoints(mountinfo, "net:[4026532567]"),
            ["/run/netns/netns-1", "/tmp/a b"]
        );
    }

    #[test]
    fn only_the_exact_proc_form_is_a_process_namespace() {
        assert_eq!(proc_pid(Path::new("/proc/42/ns/net")), Some(42));
        for other in [
            "/proc/self/ns/net",
            "/proc/42/ns/uts",
            "/proc/42/task/42/ns/net",
            "/proc/42/../1/ns/net",
            "/proc/+42/ns/net",
            "/proc//ns/net",
            "proc/42/ns/net",
            "/run/netns/x",
        ] {
            assert_eq!(proc_pid(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn the_initial_namespace_is_known_by_its_fixed_inode() {
        assert!(is_initial((4, INIT_NET_INO)));
        assert!(!is_initial((4, 0xF000_0000)));
    }

    #[test]
    fn a_relative_path_is_refused_before_anything_is_opened() {
        let e = open_path(Path::new("run/netns/x")).unwrap_err().to_string();
        assert!(e.contains("not an absolute path"), "{e}");
    }

    #[test]
    fn files_that_are_not_namespaces_are_refused_without_being_opened() {
        let dir = std::env::temp_dir().join(format!("netd-netns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO would block a real open until a writer came.
        let fifo = dir.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = format!("{:#}", open_path(&fifo).unwrap_err());
        assert!(e.contains("not a namespace file"), "{e}");
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let e = format!("{:#}", open_path(&plain).unwrap_err());
        assert!(e.contains("not a namespace file"), "{e}");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&plain, &link).unwrap();
        let e = format!("{:#}", open_path(&link).unwrap_err());
        assert!(e.contains("a symbolic link is on the path"), "{e}");
        let e = format!("{:#}", open_path(&dir.join("missing")).unwrap_err());
        assert!(e.contains("No such file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
