//! The real dockerd (Debian's docker.io), run inside a node namespace as ENGINES.md
//! describes: a mount namespace of its own with a fresh sysfs (the host's cgroup mounts bound
//! back), tmpfs over `/run` and `/etc/docker` (so dockerd leaves no file on the machine),
//! every directory of its own under a temporary one, and Docker's own networking off
//! (`--bridge=none --iptables=false --ip-forward=false`). netd's plugin socket is named
//! by a spec file in that private `/etc/docker/plugins`. On drop, its containers are
//! removed through Docker, then dockerd is stopped by pid and its directory removed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// The test image: busybox-static, imported from a tarball (no registry).
pub const IMAGE: &str = "netd-test-busybox";

/// The Docker CLI of the docker.io package (some images put a newer one first in PATH).
const DOCKER_CLI: &str = "/usr/bin/docker";

/// Who does the node's container networking for this dockerd.
#[derive(Clone, Debug)]
pub enum Networking {
    /// netd, as the network driver at this plugin socket; Docker's own NAT off
    /// (`--iptables=false --ip-forward=false`), as netd's README tells users.
    Netd { plugin_socket: PathBuf },
    /// Docker's own bridge driver as Docker ships it: iptables DNAT and masquerade, and a
    /// docker-proxy process per published port and address family. Forwarding is turned
    /// on in the node beforehand (`--ip-forward=false` keeps dockerd from loading
    /// br_netfilter, a module every namespace of the machine would see).
    Own,
}

pub struct Docker {
    pub dir: PathBuf,
    node: String,
    networking: Networking,
    child: Option<Child>,
}

impl Docker {
    /// Where netd should serve the plugin API for a dockerd of `node`: outside `/run`,
    /// which dockerd's sandbox covers.
    pub fn plugin_socket_for(node: &Netns) -> PathBuf {
        PathBuf::from(format!("/tmp/netd-docker-{}/plugin/netd.sock", node.name))
    }

    /// Start dockerd in `node`, finding netd's plugin at `plugin_socket`.
    pub fn start(node: &Netns, plugin_socket: &Path) -> Result<Self> {
        Self::start_with(
            node,
            Networking::Netd {
                plugin_socket: plugin_socket.to_path_buf(),
            },
        )
    }

    /// Start dockerd in `node` with the given networking.
    pub fn start_with(node: &Netns, networking: Networking) -> Result<Self> {
        for tool in [DOCKER_CLI, "/usr/sbin/dockerd", "/bin/busybox"] {
            if !Path::new(tool).exists() {
                bail!(
                    "{tool} is missing: run `cargo xtask setup` (it installs docker.io and busybox-static)"
                );
            }
        }
        let dir = PathBuf::from(format!("/tmp/netd-docker-{}", node.name));
        fs::create_dir_all(&dir)?;
        let mut docker = Docker {
            dir,
            node: node.name.clone(),
            networking,
            child: None,
        };
        docker.spawn()?;
        docker.import_image()?;
        Ok(docker)
    }

    fn spawn(&mut self) -> Result<()> {
        let d = self.dir.display();
        let (plugin, nat) = match &self.networking {
            Networking::Netd { plugin_socket } => (
                format!(
                    "mkdir -p /etc/docker/plugins; echo unix://{} > /etc/docker/plugins/netd.spec;",
                    plugin_socket.display()
                ),
                "--iptables=false",
            ),
            Networking::Own => (String::new(), "--iptables=true"),
        };
        let inner = format!(
            "mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /etc/docker; {plugin} \
             exec /usr/sbin/dockerd --data-root {d}/root --exec-root {d}/exec \
             --pidfile {d}/docker.pid -H unix://{d}/docker.sock --bridge=none \
             {nat} --ip-forward=false --storage-driver vfs"
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))?;
        // unshare and nsenter exec in place: the child's pid is dockerd's.
        let child = crate::engine::sandboxed(&self.dir, &self.node, &inner)?
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start dockerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("dockerd exited with {status}:\n{}", self.log());
            }
            if self.cli(&["version"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("dockerd not ready after 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// busybox-static with the applets the tests use, imported as `IMAGE`.
    fn import_image(&self) -> Result<()> {
        let root = self.dir.join("image");
        crate::engine::busybox_rootfs(&root)?;
        let tar = self.dir.join("image.tar");
        crate::netns::run(
            "tar",
            &[
                "-C",
                &root.to_string_lossy(),
                "-cf",
                &tar.to_string_lossy(),
                ".",
            ],
        )?;
        self.ok(&["import", &tar.to_string_lossy(), IMAGE])?;
        Ok(())
    }

    /// `docker ARGS` against this dockerd; the output, whatever the exit code.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(DOCKER_CLI)
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}/docker.sock", self.dir.display()),
            )
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .stdin(Stdio::null())
            .output()
            .context("run docker")
    }

    /// Like `cli`, failing unless the command succeeded; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        crate::engine::checked("docker", args, self.cli(args)?)
    }

    /// `docker network create -d netd --ipam-driver netd [OPTIONS] NAME`: a network of
    /// netd's, its ID.
    pub fn netd_network(&self, name: &str, options: &[&str]) -> Result<String> {
        let mut args = vec!["network", "create", "-d", "netd", "--ipam-driver", "netd"];
        args.extend(options);
        args.push(name);
        self.ok(&args)
    }

    /// `docker run -d ARGS IMAGE sleep 3600`: an idle container, its ID.
    pub fn run_idle(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["run", "-d"];
        all.extend(args);
        all.extend([IMAGE, "sleep", "3600"]);
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

    /// Stop dockerd (SIGTERM: it stops its containers and tells the driver) and wait.
    pub fn stop(&mut self) -> Result<()> {
        let mut child = self.child.take().context("dockerd is not running")?;
        // SAFETY: our own child's pid (dockerd, exec'd in place).
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("dockerd did not stop within 40 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Start dockerd again after `stop`, with the same directories.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    /// dockerd's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Containers first, through Docker: their processes live in namespaces Docker
            // made, not in ours.
            if let Ok(ids) = self.ok(&["ps", "-aq"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    let _ = self.cli(&args);
                }
            }
            let _ = self.stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
