//! What every real container engine under test needs (ENGINES.md): a sandbox of a mount
//! namespace of its own (a slave of the machine's) inside the node's network namespace, with a fresh sysfs and the host's
//! cgroup mounts bound back (a bare `ip netns exec` hides them and breaks runc), and an
//! image of busybox-static with no registry.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};

/// busybox-static at `bin/busybox` under `root`, with the applets the tests use.
pub fn busybox_rootfs(root: &Path) -> Result<()> {
    fs::create_dir_all(root.join("bin"))?;
    fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    for applet in [
        "sh", "sleep", "httpd", "nc", "cat", "echo", "ip", "hostname",
    ] {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    Ok(())
}

/// `sh -c inner`, run in a mount namespace of its own (a slave of the machine's) inside `node`'s network namespace, with
/// sysfs and the cgroup mounts in place (saved under `dir/cgroup` on the way). `inner`
/// mounts what the engine must not leave on the machine (tmpfs over `/run`, ...) and
/// execs the engine or a keeper process; unshare and nsenter exec in place, so the
/// child's pid is `inner`'s last exec.
pub fn sandboxed(dir: &Path, node: &str, inner: &str) -> Result<Command> {
    let d = dir.display();
    fs::create_dir_all(dir.join("cgroup"))?;
    let inner = format!(
        "set -e; mount -t sysfs sysfs /sys; mount --rbind {d}/cgroup /sys/fs/cgroup; {inner}"
    );
    let outer = format!(
        "set -e; mount --rbind /sys/fs/cgroup {d}/cgroup; \
         exec nsenter --net=/run/netns/{node} -- sh -c '{inner}'"
    );
    let mut command = Command::new("unshare");
    // A slave of the machine's mounts: nothing mounted inside leaks out, and what the
    // machine unmounts (another test's `/run/netns/NAME`) goes from here too, so the copy
    // never keeps another test's network namespace alive.
    command.args(["-m", "--propagation", "slave", "sh", "-c", &outer]);
    Ok(command)
}

/// An engine CLI's output, failing unless the command succeeded; its stdout, trimmed.
pub fn checked(engine: &str, args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{engine} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The network namespace of a running container, as a path a test thread can enter,
/// from `inspect` (`ok` runs the engine's CLI; Docker and Podman answer alike).
pub fn container_netns(ok: impl Fn(&[&str]) -> Result<String>, container: &str) -> Result<PathBuf> {
    let pid = ok(&["inspect", "-f", "{{.State.Pid}}", container])?;
    if pid == "0" || pid.is_empty() {
        bail!("container {container} is not running");
    }
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// A container's address on a network, as the engine reports it.
pub fn container_ip(
    ok: impl Fn(&[&str]) -> Result<String>,
    container: &str,
    network: &str,
) -> Result<Ipv4Addr> {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let ip = ok(&["inspect", "-f", &format, container])?;
    ip.parse()
        .with_context(|| format!("container {container} has no address on {network}: {ip:?}"))
}
