//! Network namespaces made with `ip netns add`, removed on drop (also when a test panics).

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};

/// Tests move packets and load programs: they need root, and say so instead of passing.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (it creates network namespaces and loads eBPF programs): run it with `cargo xtask test`"
        );
    }
}

/// A short name unique to this process and call: `{prefix}{pid}x{n}`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Run a command, failing with its words and stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    pub fn open(&self) -> Result<File> {
        File::open(self.path()).with_context(|| format!("open namespace {}", self.name))
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Run a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Run a program inside the namespace with `input` on its stdin; fails unless it
    /// succeeds.
    pub fn exec_stdin(&self, args: &[&str], input: &str) -> Result<Output> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("run {}", args.join(" ")))?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{} in {} failed: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Connect `a` and `b` with a veth pair (`a_if` in `a`, `b_if` in `b`), addressed and up.
pub fn link(
    a: &Netns,
    a_if: &str,
    a_addr: &str,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) -> Result<()> {
    run(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    )?;
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", ifname])?;
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// A veth from `ns` (as `ifname`, with `addr`, up) to port `port` of bridge `bridge` in
/// namespace `switch`: a host plugged into a switch.
pub fn plug(
    ns: &Netns,
    ifname: &str,
    addr: Option<&str>,
    switch: &Netns,
    bridge: &str,
    port: &str,
) -> Result<()> {
    run(
        "ip",
        &[
            "link",
            "add",
            ifname,
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &switch.name,
        ],
    )?;
    switch.ip(&["link", "set", port, "master", bridge])?;
    switch.ip(&["link", "set", port, "up"])?;
    if let Some(a) = addr {
        ns.ip(&["addr", "add", a, "dev", ifname])?;
    }
    ns.ip(&["link", "set", ifname, "up"]).map(drop)
}

/// The standard topology of the end-to-end tests and the demo.
pub struct Sandbox {
    pub ext: Netns,
    pub node: Netns,
    pub inet: Netns,
}

impl Sandbox {
    /// A TCP conversation from the namespace at `from` to the internet host, which must
    /// see the node's address (the container's traffic was masqueraded).
    pub fn assert_masqueraded_out(&self, from: &std::path::Path) -> Result<()> {
        use crate::echo::{EchoServer, Proto, echo_once};
        let target = crate::addr(Self::INET_ADDR, 9000);
        let server = EchoServer::start(&self.inet.path(), Proto::Tcp, target)?;
        echo_once(from, Proto::Tcp, target)?;
        let seen: Vec<_> = server.peers().iter().map(|p| p.ip()).collect();
        if seen != [std::net::IpAddr::V4(Self::NODE_ADDR)] {
            bail!("the internet host saw {seen:?}, not the node's address");
        }
        Ok(())
    }

    pub const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
    pub const INET_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
    pub const UPLINK: &str = "uplink0";
    /// The same hosts' IPv6 addresses (documentation prefixes: nothing real answers them).
    pub const EXT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);
    pub const NODE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 2);
    pub const INET_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x201, 0, 0, 0, 0, 2);

    pub fn new(prefix: &str) -> Result<Self> {
        let base = unique_name(prefix);
        let sandbox = Sandbox {
            ext: Netns::new(&format!("{base}-ext"))?,
            node: Netns::new(&format!("{base}-node"))?,
            inet: Netns::new(&format!("{base}-inet"))?,
        };
        link(
            &sandbox.node,
            Self::UPLINK,
            "10.200.0.2/24",
            &sandbox.ext,
            "ext0",
            "10.200.0.1/24",
        )?;
        link(
            &sandbox.inet,
            "inet0",
            "10.201.0.2/24",
            &sandbox.ext,
            "ext1",
            "10.201.0.1/24",
        )?;
        sandbox
            .node
            .ip(&["route", "add", "default", "via", "10.200.0.1"])?;
        sandbox
            .inet
            .ip(&["route", "add", "10.200.0.0/24", "via", "10.201.0.1"])?;
        sandbox.ext.sysctl("net.ipv4.ip_forward", "1")?;
        // IPv6 on every link too (no duplicate address detection: usable at once).
        for (ns, ifname, addr) in [
            (&sandbox.node, Self::UPLINK, "2001:db8:200::2/64"),
            (&sandbox.ext, "ext0", "2001:db8:200::1/64"),
            (&sandbox.inet, "inet0", "2001:db8:201::2/64"),
            (&sandbox.ext, "ext1", "2001:db8:201::1/64"),
        ] {
            ns.ip(&["-6", "addr", "add", addr, "dev", ifname, "nodad"])?;
        }
        sandbox
            .node
            .ip(&["-6", "route", "add", "default", "via", "2001:db8:200::1"])?;
        sandbox
            .inet
            .ip(&["-6", "route", "add", "default", "via", "2001:db8:201::1"])?;
        sandbox.ext.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // ext0 stands for the wire: what reaches the node carries complete checksums, as
        // from a NIC. (A veth passes a local sender's CHECKSUM_PARTIAL packets on as they
        // are; `checksums_and_mtu` turns tx back on to cover those.)
        sandbox.ext.exec(&["ethtool", "-K", "ext0", "tx", "off"])?;
        Ok(sandbox)
    }
}
