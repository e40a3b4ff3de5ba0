//! The real Podman 4.3 (Debian's), with its CNI backend and netd-cni as the plugin of its
//! networks, run as ENGINES.md describes: every `podman` command runs in one long-lived
//! sandbox (a mount namespace of its own in the node's network namespace, with tmpfs over
//! `/run`, `/dev/shm` and `/var/lib`, so Podman's namespace files, its lock file
//! (`/dev/shm/libpod_lock`: shared, two tests' Podmans refused each other's) and CNI's
//! cache never reach the machine: `/var/lib/cni` is not even created on it), its storage (`vfs`) and configuration under a temporary directory, and
//! containers from a busybox directory (`--rootfs`), so nothing is pulled. The daemon's
//! directory is bound back into the sandbox's `/run`, where the plugin finds its socket.
//! On drop, containers are removed through Podman, then the sandbox's keeper is killed by
//! pid and the directory removed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cni::plugin_bin, daemon::Daemon, netns::Netns};

pub struct Podman {
    pub dir: PathBuf,
    /// The sandbox's keeper (`sleep`): its mount namespace is where Podman runs.
    keeper: Child,
    socket: PathBuf,
}

impl Podman {
    /// Start the sandbox in `node`, whose netd is `netd`.
    pub fn start(node: &Netns, netd: &Daemon) -> Result<Self> {
        for tool in ["/usr/bin/podman", "/usr/lib/cni/loopback", "/bin/busybox"] {
            if !Path::new(tool).exists() {
                bail!(
                    "{tool} is missing: run `cargo xtask setup` (it installs podman, containernetworking-plugins and busybox-static)"
                );
            }
        }
        let dir = PathBuf::from(format!("/tmp/netd-podman-{}", node.name));
        fs::create_dir_all(dir.join("net.d"))?;
        fs::create_dir_all(dir.join("plugins"))?;
        fs::create_dir_all(dir.join("netd"))?;
        let plugin = dir.join("plugins/netd-cni");
        if !plugin.exists() {
            std::os::unix::fs::symlink(plugin_bin(), &plugin)?;
        }
        crate::engine::busybox_rootfs(&dir.join("rootfs"))?;
        let d = dir.display();
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 network_config_dir = \"{d}/net.d\"\n\
                 cni_plugin_dirs = [\"{d}/plugins\", \"/usr/lib/cni\"]\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n"
            ),
        )?;
        let netd_dir = netd.dir.display();
        let inner = format!(
            "mount --rbind {netd_dir} {d}/netd; mount -t tmpfs tmpfs /run; \
             mkdir -p {netd_dir}; mount --rbind {d}/netd {netd_dir}; \
             mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /var/lib; \
             exec sleep infinity"
        );
        let log = fs::File::create(dir.join("keeper.log"))?;
        let keeper = crate::engine::sandboxed(&dir, &node.name, &inner)?
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start Podman's sandbox")?;
        let podman = Podman {
            dir,
            keeper,
            socket: netd.socket.clone(),
        };
        podman.wait_sandbox()?;
        Ok(podman)
    }

    /// Until the keeper has mounted everything (its last mount is the tmpfs over /var/lib).
    fn wait_sandbox(&self) -> Result<()> {
        let mountinfo = format!("/proc/{}/mountinfo", self.keeper.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mounts = fs::read_to_string(&mountinfo).unwrap_or_default();
            if mounts
                .lines()
                .any(|l| l.contains(" /var/lib ") && l.contains("tmpfs"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Podman's sandbox not ready after 10 s: {}",
                    fs::read_to_string(self.dir.join("keeper.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sandbox's keeper: a process of the mount namespace Podman runs in.
    pub fn keeper(&self) -> u32 {
        self.keeper.id()
    }

    /// A Podman network `name` whose plugin is netd-cni on netd network `network`.
    pub fn network(&self, name: &str, network: &str) -> Result<()> {
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [{
                "type": "netd-cni",
                "network": network,
                "socket": self.socket,
                "capabilities": { "portMappings": true, "ips": true, "mac": true },
            }],
        });
        fs::write(
            self.dir.join("net.d").join(format!("{name}.conflist")),
            serde_json::to_string_pretty(&conflist)?,
        )?;
        Ok(())
    }

    /// `podman ARGS` in the sandbox; the output, whatever the exit code.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let d = &self.dir;
        Command::new("nsenter")
            .args(["-t", &self.keeper.id().to_string(), "-m", "-n", "--"])
            .arg("/usr/bin/podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(Stdio::null())
            .output()
            .context("run podman")
    }

    /// Like `cli`, failing unless the command succeeded; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        crate::engine::checked("podman", args, self.cli(args)?)
    }

    /// `podman run -d ARGS --rootfs BUSYBOX sleep 3600`: an idle container, its ID.
    pub fn run_idle(&self, args: &[&str]) -> Result<String> {
        let rootfs = self.dir.join("rootfs");
        let mut all = vec!["run", "-d"];
        all.extend(args);
        all.extend([
            "--rootfs",
            rootfs.to_str().context("rootfs path")?,
            "sleep",
            "3600",
        ]);
        self.ok(&all)
    }

    /// The network namespace of a running container, as a path a test thread can enter.
    pub fn netns(&self, container: &str) -> Result<PathBuf> {
        crate::engine::container_netns(|a| self.ok(a), container)
    }

    /// A container's address on a network, as the engine reports it.
    pub fn ip(&self, container: &str, network: &str) -> Result<std::net::Ipv4Addr> {
        crate::engine::container_ip(|a| self.ok(a), container, network)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first, through Podman: conmon and the containers' processes live in
        // namespaces Podman made.
        let _ = self.cli(&["rm", "-f", "-a", "-t", "0"]);
        let _ = self.keeper.kill();
        let _ = self.keeper.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
