//! A netd daemon inside a node namespace, started as a user would start it:
//! `ip netns exec NODE netd daemon --uplink uplink0 --socket S --state-dir D --bpffs-dir B`,
//! with its own bpffs mounted outside /sys (so pins survive the daemon) and its own paths.
//! On drop it is killed, and so is every process it started (found by a tag in their
//! environment, which only this daemon's descendants carry).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, run};

const TAG_VAR: &str = "NETD_TEST_TAG";

/// The netd binary under test: $NETD_BIN, or the workspace's debug build.
pub fn netd_bin() -> PathBuf {
    std::env::var_os("NETD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netd"))
}

/// `netd daemon` flags every test daemon gets, from $NETD_TEST_DATAPATH (pairs such as
/// `--fast-path off --xdp generic`): `cargo xtask test` runs the end-to-end suite once
/// per data-path combination. A flag the test gives itself wins.
pub const DATAPATH_VAR: &str = "NETD_TEST_DATAPATH";

fn datapath_flags(extra: &[&str]) -> Vec<String> {
    let spec = std::env::var(DATAPATH_VAR).unwrap_or_default();
    let words: Vec<&str> = spec.split_whitespace().collect();
    words
        .chunks(2)
        .filter(|pair| !extra.contains(&pair[0]))
        .flat_map(|pair| pair.iter().map(|w| w.to_string()))
        .collect()
}

/// The data path under test really took the paths its `netd info` reports, after traffic
/// both ways through a published port or masquerade: with the fast path on, packets were
/// redirected into the container and out of the uplink (and none with it off); with XDP,
/// the XDP program translated some. A requested XDP mode must be the one in use.
pub fn assert_fast_paths_taken(d: &Daemon) {
    let info = d.info().unwrap();
    let fast_path = info["fast_path"].as_str().unwrap().to_string();
    let xdp = info["xdp"].as_str().unwrap().to_string();
    let redirected = |reason| d.counter("FastPath", reason).unwrap();
    if fast_path == "on" {
        assert!(redirected("redirect_to_container") >= 1, "{info}");
        assert!(redirected("redirect_to_uplink") >= 1, "{info}");
    } else {
        assert_eq!(redirected("redirect_to_container"), 0, "{info}");
        assert_eq!(redirected("redirect_to_uplink"), 0, "{info}");
    }
    if let Some(asked) = d.flag("--xdp")
        && asked != "auto"
    {
        assert_eq!(xdp, asked, "the XDP mode asked for is the one in use");
    }
    if xdp != "off" {
        let in_xdp: u64 = ["dnat_new_flow", "translated_established", "snat_reply"]
            .iter()
            .map(|r| d.counter("UplinkXdp", r).unwrap())
            .sum();
        assert!(in_xdp >= 1, "XDP ({xdp}) translated nothing: {info}");
    }
}

pub struct Daemon {
    pub node: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    tag: String,
    uplink: String,
    flags: Vec<String>,
    /// More environment for the daemon (e.g. NOTIFY_SOCKET).
    env: Vec<(String, String)>,
    /// The daemon's cgroup for host-local access: `host_process` runs commands in it.
    pub cgroup: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Start a daemon serving `node`, with uplink `uplink`.
    pub fn start(node: &Netns, uplink: &str) -> Result<Self> {
        Self::start_with(node, uplink, &[])
    }

    /// Like `start`, with more `netd daemon` flags.
    pub fn start_with(node: &Netns, uplink: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(node, uplink, extra, &[])
    }

    /// Like `start_with`, with more environment variables for the daemon.
    pub fn start_with_env(
        node: &Netns,
        uplink: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = PathBuf::from(format!("/run/netd-test/{}", node.name));
        fs::create_dir_all(dir.join("bpf"))?;
        run(
            "mount",
            &["-t", "bpf", "bpf", &dir.join("bpf").to_string_lossy()],
        )?;
        // A private cgroup for the host-local socket hooks, so they never see the
        // machine's other processes; on a cgroup2 mount outside /sys, which
        // `ip netns exec` hides.
        fs::create_dir_all(dir.join("cgroup"))?;
        run(
            "mount",
            &[
                "-t",
                "cgroup2",
                "none",
                &dir.join("cgroup").to_string_lossy(),
            ],
        )?;
        let cgroup = dir.join("cgroup").join(format!("netd-test-{}", node.name));
        fs::create_dir_all(&cgroup)?;
        let mut flags: Vec<String> = vec!["--cgroup".into(), cgroup.to_string_lossy().into_owned()];
        flags.extend(datapath_flags(extra));
        flags.extend(extra.iter().map(|f| f.to_string()));
        let mut daemon = Daemon {
            node: node.name.clone(),
            socket: dir.join("netd.sock"),
            tag: node.name.clone(),
            uplink: uplink.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
            flags,
            cgroup,
            child: None,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    /// The daemon's pid while it runs (`ip netns exec` execs it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Signal the daemon process alone (not the containers it started) and wait for it.
    pub fn stop(&mut self, signal: i32) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("the daemon is not running")?;
        // SAFETY: our own child's pid (`ip netns exec` execs the daemon in place).
        unsafe { libc::kill(child.id() as i32, signal) };
        Ok(child.wait()?)
    }

    /// Start the daemon again with the same flags, after `stop`.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    /// The value this daemon was given for `flag`, if any.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        let at = self.flags.iter().position(|f| f == flag)?;
        self.flags.get(at + 1).map(String::as_str)
    }

    /// Start the daemon again after `stop`, with some flags set to new values (or added):
    /// an operator changing its configuration.
    pub fn restart_with(&mut self, changes: &[(&str, &str)]) -> Result<()> {
        for (flag, value) in changes {
            match self.flags.iter().position(|f| f == flag) {
                Some(i) => self.flags[i + 1] = value.to_string(),
                None => self.flags.extend([flag.to_string(), value.to_string()]),
            }
        }
        self.spawn()
    }

    /// Start the daemon again after `stop` without these flags (each with its value,
    /// every time it was given).
    pub fn restart_without(&mut self, flags: &[&str]) -> Result<()> {
        let mut kept = Vec::new();
        let mut given = std::mem::take(&mut self.flags).into_iter();
        while let Some(f) = given.next() {
            if flags.contains(&f.as_str()) {
                given.next();
            } else {
                kept.push(f);
            }
        }
        self.flags = kept;
        self.spawn()
    }

    /// The `ip` arguments that run this daemon in its node, with `extra` flags.
    pub fn command_line_with(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["netns", "exec", &self.node].map(String::from).to_vec();
        args.push(netd_bin().to_string_lossy().into_owned());
        args.extend(["daemon", "--uplink", &self.uplink, "--socket"].map(String::from));
        args.push(self.socket.to_string_lossy().into_owned());
        args.push("--state-dir".into());
        args.push(self.dir.join("state").to_string_lossy().into_owned());
        args.push("--bpffs-dir".into());
        args.push(self.dir.join("bpf").to_string_lossy().into_owned());
        args.extend(self.flags.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        let child = Command::new("ip")
            .args(self.command_line_with(&[]))
            .env(TAG_VAR, &self.tag)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start netd daemon")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "netd daemon exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if self
                .cli(&["info"])
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("netd daemon not ready after 20s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `netd --socket S ARGS` in the node namespace; the output, whatever the exit code.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.node])
            .arg(netd_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env(TAG_VAR, &self.tag)
            .stdin(Stdio::null())
            .output()
            .context("run netd CLI")
    }

    /// Like `cli`, but failing unless the command succeeded; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "netd {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run a container whose command just sleeps; the test brings its own listeners.
    pub fn run_idle_container(&self, name: &str, publish: &[&str]) -> Result<Container> {
        self.run_idle(name, None, publish)
    }

    /// `run_idle_container` on network `network`.
    pub fn run_idle_on(&self, name: &str, network: &str, publish: &[&str]) -> Result<Container> {
        self.run_idle(name, Some(network), publish)
    }

    /// `run_idle_on` with IPv6 address `ip6` (`--ip6`), on a network with IPv6.
    pub fn run_idle_on6(
        &self,
        name: &str,
        network: &str,
        ip6: std::net::Ipv6Addr,
        publish: &[&str],
    ) -> Result<Container> {
        self.run_idle_at(name, Some(network), Some(ip6), publish)
    }

    fn run_idle(&self, name: &str, network: Option<&str>, publish: &[&str]) -> Result<Container> {
        self.run_idle_at(name, network, None, publish)
    }

    fn run_idle_at(
        &self,
        name: &str,
        network: Option<&str>,
        ip6: Option<std::net::Ipv6Addr>,
        publish: &[&str],
    ) -> Result<Container> {
        let ip6 = ip6.map(|a| a.to_string());
        let mut args = vec!["run", "-d", "--name", name];
        if let Some(n) = network {
            args.extend(["--network", n]);
        }
        if let Some(a) = &ip6 {
            args.extend(["--ip6", a]);
        }
        for p in publish {
            args.extend(["-p", p]);
        }
        args.extend(["--", "sleep", "infinity"]);
        self.cli_ok(&args)?;
        self.container(name)
    }

    pub fn container(&self, name: &str) -> Result<Container> {
        let all: serde_json::Value =
            serde_json::from_str(&self.cli_ok(&["ps", "-a", "--format", "json"])?)?;
        let c = all
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .with_context(|| format!("container {name} not listed by netd ps"))?;
        let primary = &c["endpoints"][0];
        Ok(Container {
            host_veth: primary["host_veth"]
                .as_str()
                .context("no endpoint")?
                .to_string(),
            ip: match &primary["ip"] {
                serde_json::Value::Null => std::net::Ipv4Addr::UNSPECIFIED,
                ip => ip.as_str().context("no ip")?.parse()?,
            },
            ip6: primary["GlobalIPv6Address"]
                .as_str()
                .filter(|a| !a.is_empty())
                .map(str::parse)
                .transpose()?,
            netns: PathBuf::from(c["netns_path"].as_str().context("no netns_path")?),
        })
    }

    /// The data path's counter for (hook, reason), summed over CPUs.
    pub fn counter(&self, hook: &str, reason: &str) -> Result<u64> {
        let stats: serde_json::Value =
            serde_json::from_str(&self.cli_ok(&["stats", "--format", "json"])?)?;
        Ok(stats
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["hook"] == hook && c["reason"] == reason)
            .map(|c| c["packets"].as_u64().unwrap_or(0))
            .sum())
    }

    /// Packets counted for `reason` wherever this data path translates traffic arriving
    /// from the network (TC on the uplink, or XDP before it).
    pub fn from_network(&self, reason: &str) -> Result<u64> {
        Ok(self.counter("UplinkIngress", reason)? + self.counter("UplinkXdp", reason)?)
    }

    /// Packets counted for `reason` wherever this data path translates traffic leaving
    /// through the uplink (TC on the uplink, or on the container's veth with the fast
    /// path on).
    pub fn to_network(&self, reason: &str) -> Result<u64> {
        Ok(self.counter("UplinkEgress", reason)? + self.counter("EndpointIngress", reason)?)
    }

    /// How many namespace holders of this daemon's containers are running (a holder's
    /// command line names the daemon's state directory).
    pub fn holders(&self) -> usize {
        let want = fs::canonicalize(self.dir.join("state")).unwrap_or_default();
        let Ok(procs) = fs::read_dir("/proc") else {
            return 0;
        };
        procs
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .filter(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.len() > 3
                    && args[1] == b"netns-holder"
                    && args[2] == want.as_os_str().as_encoded_bytes()
            })
            .count()
    }

    /// `netd info`, parsed.
    pub fn info(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli_ok(&["info"])?)?)
    }

    /// Run `args` as a process of namespace `ns` inside the daemon's cgroup (where the
    /// host-local hooks apply); its output, whatever the exit code.
    pub fn host_process(&self, ns: &Netns, args: &[&str]) -> Result<Output> {
        let procs = self.cgroup.join("cgroup.procs");
        let script = format!("echo $$ > {} && exec \"$@\"", procs.display());
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c", &script, "sh"])
            .args(args)
            .env(TAG_VAR, &self.tag)
            .stdin(Stdio::null())
            .output()
            .context("run a process in the daemon's cgroup")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Kill every process carrying our tag, scanning again until a scan finds none: a
    /// process may fork while a scan passes it (a shell starting its last command), and
    /// its child would outlive one scan.
    fn kill_tagged(&self) {
        for _ in 0..50 {
            if self.kill_tagged_once() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One scan of /proc; how many tagged processes it signalled.
    fn kill_tagged_once(&self) -> usize {
        let needle = format!("{TAG_VAR}={}\0", self.tag);
        let Ok(procs) = fs::read_dir("/proc") else {
            return 0;
        };
        let mut killed = 0;
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            if let Ok(env) = fs::read(entry.path().join("environ"))
                && env.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                // SAFETY: a pid we just read, carrying our unique tag.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
        }
        killed
    }
}

/// What a test needs to know of a container.
pub struct Container {
    /// The host end of its veth, in the node namespace.
    pub host_veth: String,
    /// Its IPv4 address; 0.0.0.0 on an IPv6-only network (`--ipv4=false`).
    pub ip: std::net::Ipv4Addr,
    /// Its IPv6 address, on a network with IPv6.
    pub ip6: Option<std::net::Ipv6Addr>,
    pub netns: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_tagged();
        // A cgroup can be removed once its (killed) processes are gone.
        for _ in 0..50 {
            if fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("umount").arg(self.dir.join("cgroup")).output();
        let _ = Command::new("umount").arg(self.dir.join("bpf")).output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
