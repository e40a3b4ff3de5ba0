//! Several netd nodes on one machine, and the etcd cluster they agree through:
//!
//! ```text
//!   ul: bridge ulbr (the underlay's switch)
//!    |-- e1, e2, e3: etcd 3.4 members, 10.98.0.11-13 (client port 2379)
//!    '-- n1, n2, n3: nodes, eth0 10.98.0.1-3, each with its own netd daemon
//! ```
//!
//! Every namespace, process and data directory is the test's own and goes on drop.

use std::{
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    daemon::Daemon,
    netns::{Netns, plug, run, unique_name},
};

/// The nodes' uplink on the underlay.
pub const UNDERLAY_IF: &str = "eth0";

pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 98, 0, 1 + i as u8)
}

pub fn member_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 98, 0, 11 + i as u8)
}

/// One etcd member, in its own namespace; killed by pid on drop.
pub struct EtcdMember {
    pub ns: Netns,
    pub name: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl EtcdMember {
    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "etcd"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start etcd (cargo xtask setup installs etcd-server)")?;
        self.child = Some(child);
        Ok(())
    }

    /// Stop the member with `signal` and wait for it.
    pub fn stop(&mut self, signal: i32) -> Result<()> {
        let mut child = self.child.take().context("the member is not running")?;
        // SAFETY: our own child's pid (`ip netns exec` execs etcd in place).
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait()?;
        Ok(())
    }

    /// Start the member again on its data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Cluster {
    /// Nodes before members before the switch: dropped in this order.
    pub daemons: Vec<Daemon>,
    pub nodes: Vec<Netns>,
    pub members: Vec<EtcdMember>,
    pub underlay: Netns,
    dir: PathBuf,
    /// With TLS: the CA, and a client certificate and key for the nodes and etcdctl.
    pub tls: Option<Certs>,
}

/// A test CA, the members' server certificate (their addresses as SANs) and a client
/// certificate, made with openssl in the cluster's directory.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Certs {
    fn make(dir: &std::path::Path) -> Result<Certs> {
        let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let key_opts = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let openssl = |args: &[&str]| run("openssl", args).map(drop);
        let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
        let mut ca = vec!["req", "-x509"];
        ca.extend(key_opts);
        ca.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca_pem,
            "-days",
            "1",
            "-subj",
            "/CN=netd test CA",
        ]);
        openssl(&ca)?;
        let sans: Vec<String> = (0..3).map(|i| format!("IP:{}", member_addr(i))).collect();
        for (name, ext) in [
            (
                "server",
                format!(
                    "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth",
                    sans.join(",")
                ),
            ),
            ("client", "extendedKeyUsage=clientAuth".to_string()),
        ] {
            let (key, csr, pem, extfile) = (
                p(&format!("{name}.key")),
                p(&format!("{name}.csr")),
                p(&format!("{name}.pem")),
                p(&format!("{name}.ext")),
            );
            fs::write(&extfile, ext)?;
            let mut req = vec!["req"];
            req.extend(key_opts);
            let subject = format!("/CN={name}");
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
            openssl(&req)?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &p("ca.pem"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ])?;
        }
        Ok(Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        })
    }
}

impl Cluster {
    /// The underlay with three etcd members, healthy, and `nodes` node namespaces
    /// (no daemon yet: `start_daemon`).
    pub fn new(prefix: &str, nodes: usize) -> Result<Cluster> {
        Self::build(prefix, nodes, false)
    }

    /// Like `new`, with etcd serving its clients over TLS and asking for their
    /// certificates.
    pub fn with_tls(prefix: &str, nodes: usize) -> Result<Cluster> {
        Self::build(prefix, nodes, true)
    }

    fn build(prefix: &str, nodes: usize, tls: bool) -> Result<Cluster> {
        let base = unique_name(prefix);
        let underlay = Netns::new(&format!("{base}-ul"))?;
        let dir = PathBuf::from(format!("/run/netd-test/{base}-etcd"));
        fs::create_dir_all(&dir)?;
        // Owned from here on: removed on drop whatever fails below.
        let mut cluster = Cluster {
            daemons: Vec::new(),
            nodes: Vec::new(),
            members: Vec::new(),
            underlay,
            dir,
            tls: None,
        };
        let certs = if tls {
            Some(Certs::make(&cluster.dir)?)
        } else {
            None
        };
        let scheme = if tls { "https" } else { "http" };
        cluster
            .underlay
            .ip(&["link", "add", "ulbr", "type", "bridge"])?;
        cluster.underlay.ip(&["link", "set", "ulbr", "up"])?;
        let initial: Vec<String> = (0..3)
            .map(|i| format!("e{}=http://{}:2380", i + 1, member_addr(i)))
            .collect();
        for i in 0..3 {
            let ns = cluster.attach(&format!("{base}-e{}", i + 1), member_addr(i), "ul-e", i)?;
            let name = format!("e{}", i + 1);
            let ip = member_addr(i);
            let data = cluster.dir.join(&name);
            let args = [
                "--name",
                &name,
                "--data-dir",
                &data.to_string_lossy(),
                "--listen-peer-urls",
                &format!("http://{ip}:2380"),
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
                "--listen-client-urls",
                &format!("{scheme}://{ip}:2379"),
                "--advertise-client-urls",
                &format!("{scheme}://{ip}:2379"),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &base,
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
                // 3.4's default is off: a member cut off would force elections on return.
                "--pre-vote",
            ]
            .map(String::from)
            .to_vec();
            let mut args = args;
            if let Some(c) = &certs {
                for (flag, path) in [
                    ("--cert-file", &c.server_cert),
                    ("--key-file", &c.server_key),
                    ("--trusted-ca-file", &c.ca),
                ] {
                    args.extend([flag.to_string(), path.to_string_lossy().into_owned()]);
                }
                args.push("--client-cert-auth".into());
            }
            let mut member = EtcdMember {
                ns,
                name,
                args,
                child: None,
                log: cluster.dir.join(format!("e{}.log", i + 1)),
            };
            member.spawn()?;
            cluster.members.push(member);
        }
        cluster.tls = certs;
        for i in 0..nodes {
            let ns = cluster.attach(&format!("{base}-n{}", i + 1), node_addr(i), "ul-n", i)?;
            cluster.nodes.push(ns);
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// A namespace with `eth0` at `ip` on the underlay's switch.
    fn attach(&self, name: &str, ip: Ipv4Addr, port_prefix: &str, i: usize) -> Result<Netns> {
        let ns = Netns::new(name)?;
        let port = format!("{port_prefix}{}", i + 1);
        let addr = format!("{ip}/24");
        plug(&ns, UNDERLAY_IF, Some(&addr), &self.underlay, "ulbr", &port)?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `--cluster-store` for the whole etcd cluster.
    pub fn store_url(&self) -> String {
        let hosts: Vec<String> = (0..3).map(|i| format!("{}:2379", member_addr(i))).collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// etcdctl against the members, from the first node's namespace.
    pub fn etcdctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = (0..3)
            .map(|i| format!("{scheme}://{}:2379", member_addr(i)))
            .collect();
        let mut all: Vec<String> = ["netns", "exec", &self.underlay_client().name, "etcdctl"]
            .map(String::from)
            .to_vec();
        all.push(format!("--endpoints={}", endpoints.join(",")));
        if let Some(c) = &self.tls {
            for (flag, path) in [("--cacert", &c.ca), ("--cert", &c.cert), ("--key", &c.key)] {
                all.push(format!("{flag}={}", path.display()));
            }
        }
        all.extend(args.iter().map(|a| a.to_string()));
        Ok(Command::new("ip")
            .args(&all)
            .env("ETCDCTL_API", "3")
            .output()?)
    }

    fn underlay_client(&self) -> &Netns {
        self.nodes.first().unwrap_or(&self.members[0].ns)
    }

    /// Wait until every running member reports healthy.
    pub fn wait_healthy(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let out = self.etcdctl(&["endpoint", "health", "--command-timeout=1s"])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd not healthy after {within:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Start node `i`'s daemon in the cluster, named `n{i+1}`, with a lease TTL of
    /// `ttl` seconds and `extra` flags.
    pub fn start_daemon(&mut self, i: usize, ttl: u64, extra: &[&str]) -> Result<()> {
        let name = format!("n{}", i + 1);
        let url = self.store_url();
        let ttl = ttl.to_string();
        let tls: Vec<String> = self
            .tls
            .iter()
            .flat_map(|c| {
                [
                    ("kv.cacertfile", &c.ca),
                    ("kv.certfile", &c.cert),
                    ("kv.keyfile", &c.key),
                ]
                .map(|(k, p)| {
                    [
                        "--cluster-store-opt".to_string(),
                        format!("{k}={}", p.display()),
                    ]
                })
            })
            .flatten()
            .collect();
        let mut flags = vec![
            "--cluster-store",
            &url,
            "--cluster-advertise",
            UNDERLAY_IF,
            "--node-name",
            &name,
            "--cluster-lease-ttl",
            &ttl,
        ];
        flags.extend(tls.iter().map(String::as_str));
        flags.extend(extra);
        let daemon = Daemon::start_with(&self.nodes[i], UNDERLAY_IF, &flags)?;
        self.daemons.push(daemon);
        Ok(())
    }

    /// `netd node ls --format json` on a daemon: (name, status) by name.
    pub fn node_statuses(d: &Daemon) -> Result<Vec<(String, String)>> {
        let out = d.cli_ok(&["node", "ls", "--format", "json"])?;
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&out)?;
        Ok(nodes
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap_or_default().to_string(),
                    n["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Wait until `d` lists the nodes with exactly these statuses.
    pub fn wait_statuses(d: &Daemon, want: &[(&str, &str)], within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        loop {
            let seen = Self::node_statuses(d);
            if seen.as_ref().is_ok_and(|s| *s == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("after {within:?} the nodes are {seen:?}, not {want:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.daemons.clear();
        self.members.clear();
        let _ = run("rm", &["-rf", &self.dir.to_string_lossy()]);
    }
}
