//! What a runtime pays per container to attach it: `ADD` and `DEL` of netd-cni against
//! the reference plugins it replaces (`bridge` + `host-local` + `portmap` of
//! containernetworking-plugins, which write iptables rules), each container publishing
//! one port, with 0 and with 10,000 ports already published on the node. The plugins are
//! exec'd as libcni execs them (a chain: `bridge`, then `portmap` with its `prevResult`;
//! `DEL` in reverse), from the node's network namespace.

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Progress, report::Results};
use crate::{Daemon, Netns, Sandbox, cni::plugin_bin, unique_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniPlugin {
    /// The reference chain: `bridge` (with `host-local`) and `portmap`.
    Reference,
    /// netd-cni with the netd daemon.
    Netd,
}

impl CniPlugin {
    pub const ALL: [CniPlugin; 2] = [CniPlugin::Reference, CniPlugin::Netd];

    pub fn by_name(name: &str) -> Option<Vec<CniPlugin>> {
        if name == "cni" {
            return Some(Self::ALL.to_vec());
        }
        Self::ALL
            .into_iter()
            .find(|p| p.to_string() == name)
            .map(|p| vec![p])
    }
}

impl fmt::Display for CniPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CniPlugin::Reference => "cni-bridge",
            CniPlugin::Netd => "cni-netd",
        })
    }
}

/// How much: attachments per scale, and the published ports already on the node.
pub struct CniPlan {
    pub attachments: usize,
    pub scales: Vec<u16>,
}

/// Where the reference plugins are (Debian's containernetworking-plugins).
const REFERENCE_DIR: &str = "/usr/lib/cni";
const SUBNET: &str = "10.88.0.0/16";
/// The measured containers publish 30000, 30001, ...; the fillers 20000 and up.
const PORT_BASE: u16 = 30000;
const FILLER_BASE: u16 = 20000;

/// One plugin's bed: the node, and netd or the reference chain's state directory.
struct CniBed {
    plugin: CniPlugin,
    daemon: Option<Daemon>,
    dir: PathBuf,
    sandbox: Sandbox,
}

impl CniBed {
    fn new(plugin: CniPlugin) -> Result<Self> {
        for tool in ["bridge", "host-local", "portmap"] {
            if !Path::new(REFERENCE_DIR).join(tool).exists() {
                bail!(
                    "{REFERENCE_DIR}/{tool} is missing: run `cargo xtask setup` (it installs containernetworking-plugins)"
                );
            }
        }
        let sandbox = Sandbox::new(match plugin {
            CniPlugin::Reference => "bcr",
            CniPlugin::Netd => "bcn",
        })?;
        let dir = PathBuf::from(format!("/tmp/netd-bench-cni-{}", sandbox.node.name));
        std::fs::create_dir_all(&dir)?;
        let daemon = match plugin {
            CniPlugin::Netd => {
                let d = Daemon::start(&sandbox.node, Sandbox::UPLINK)?;
                d.cli_ok(&["network", "create", "--subnet", SUBNET, "bench"])?;
                Some(d)
            }
            CniPlugin::Reference => None,
        };
        Ok(CniBed {
            plugin,
            daemon,
            dir,
            sandbox,
        })
    }

    /// The chain's configurations, in `ADD` order, for one container's port.
    fn chain(&self, port: u16) -> Vec<(PathBuf, Value)> {
        let mappings = json!([{ "hostPort": port, "containerPort": 80, "protocol": "tcp" }]);
        match (self.plugin, &self.daemon) {
            (CniPlugin::Netd, Some(d)) => vec![(
                plugin_bin(),
                json!({
                    "cniVersion": "1.0.0", "name": "bench", "type": "netd-cni",
                    "network": "bench", "socket": d.socket,
                    "runtimeConfig": { "portMappings": mappings },
                }),
            )],
            _ => vec![
                (
                    Path::new(REFERENCE_DIR).join("bridge"),
                    json!({
                        "cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                        "bridge": "cni0", "isGateway": true, "ipMasq": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{ "subnet": SUBNET }]],
                            "routes": [{ "dst": "0.0.0.0/0" }],
                            "dataDir": self.dir.join("ipam"),
                        },
                    }),
                ),
                (
                    Path::new(REFERENCE_DIR).join("portmap"),
                    json!({
                        "cniVersion": "1.0.0", "name": "bench", "type": "portmap",
                        "snat": true, "capabilities": { "portMappings": true },
                        "runtimeConfig": { "portMappings": mappings },
                    }),
                ),
            ],
        }
    }

    /// `ADD` (the chain in order, each with the previous result) or `DEL` (in reverse,
    /// each with the `ADD` result) of container `id` in `netns`; the final result.
    fn call(
        &self,
        command: &str,
        id: &str,
        netns: &Path,
        port: u16,
        prev: Option<&Value>,
    ) -> Result<Value> {
        let mut chain = self.chain(port);
        if command == "DEL" {
            chain.reverse();
        }
        let mut result = prev.cloned();
        for (bin, mut conf) in chain {
            if let Some(prev) = &result {
                conf["prevResult"] = prev.clone();
            }
            let out = exec_plugin(&self.sandbox.node, &bin, command, id, netns, &conf)?;
            if command == "ADD" {
                result = Some(out);
            }
        }
        Ok(result.unwrap_or(Value::Null))
    }

    /// Publish `count` ports before the measured ones: netd, one container with a range;
    /// the reference, portmap's chains filled in one `iptables-restore` as portmap lays
    /// them out (a jump per container from CNI-HOSTPORT-DNAT, a DNAT rule per port).
    fn fill(&self, count: u16) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let last = FILLER_BASE + count - 1;
        match &self.daemon {
            Some(d) => {
                let range = format!("{FILLER_BASE}-{last}:{FILLER_BASE}-{last}");
                d.cli_ok(&[
                    "create",
                    "--name",
                    "filler",
                    "--network",
                    "bench",
                    "-p",
                    &range,
                ])?;
            }
            None => {
                let mut rules = String::from(
                    "*nat\n:CNI-HOSTPORT-DNAT - [0:0]\n:CNI-DN-filler - [0:0]\n\
                     -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
                     -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n\
                     -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment filler -j CNI-DN-filler\n",
                );
                for port in FILLER_BASE..=last {
                    rules.push_str(&format!(
                        "-A CNI-DN-filler -p tcp --dport {port} -j DNAT --to-destination 10.88.255.254:{port}\n"
                    ));
                }
                rules.push_str("COMMIT\n");
                self.sandbox
                    .node
                    .exec_stdin(&["iptables-restore", "--noflush"], &rules)?;
            }
        }
        Ok(())
    }

    fn unfill(&self, count: u16) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        match &self.daemon {
            Some(d) => d.cli_ok(&["rm", "filler"]).map(drop),
            None => {
                let node = &self.sandbox.node;
                node.exec(&[
                    "iptables",
                    "-t",
                    "nat",
                    "-D",
                    "CNI-HOSTPORT-DNAT",
                    "-p",
                    "tcp",
                    "-m",
                    "comment",
                    "--comment",
                    "filler",
                    "-j",
                    "CNI-DN-filler",
                ])?;
                node.exec(&["iptables", "-t", "nat", "-F", "CNI-DN-filler"])?;
                node.exec(&["iptables", "-t", "nat", "-X", "CNI-DN-filler"])
                    .map(drop)
            }
        }
    }

    /// What the node holds that the plugin made: iptables rules, or netd's records.
    fn evidence(&self, made: usize) -> Result<String> {
        let rules = self.sandbox.node.exec(&["iptables-save"])?;
        let rules = String::from_utf8_lossy(&rules.stdout)
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count();
        Ok(format!(
            "{made} attachments made and removed; iptables rules in the node now: {rules}"
        ))
    }
}

impl Drop for CniBed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn exec_plugin(
    node: &Netns,
    bin: &Path,
    command: &str,
    id: &str,
    netns: &Path,
    conf: &Value,
) -> Result<Value> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", node.path().display()))
        .arg("--")
        .arg(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("exec {}", bin.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} {command} {id}: {}{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{} printed {text:?}", bin.display()))?
    })
}

/// The value at quantile `q` of `samples` (nearest rank).
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1));
    s.get(rank - 1).copied().unwrap_or(0.0)
}

pub(super) fn measure(
    plugin: CniPlugin,
    plan: &CniPlan,
    progress: &Progress,
    results: &mut Results,
) -> Result<()> {
    progress.step(plugin, "building the bed (namespaces, plugin)")?;
    let bed = CniBed::new(plugin)?;
    let name = plugin.to_string();
    for &fillers in &plan.scales {
        progress.step(plugin, &format!("publishing {fillers} ports first"))?;
        bed.fill(fillers)?;
        let pods: Vec<Netns> = (0..plan.attachments)
            .map(|_| Netns::new(&unique_name("bcp")))
            .collect::<Result<_>>()?;
        progress.step(
            plugin,
            &format!("ADD of {} containers, one port each", pods.len()),
        )?;
        let mut added = Vec::new();
        let mut add_ms = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let id = format!("bench{i}");
            let port = PORT_BASE + i as u16;
            let started = Instant::now();
            let result = bed.call("ADD", &id, &pod.path(), port, None)?;
            add_ms.push(started.elapsed().as_secs_f64() * 1e3);
            added.push(result);
        }
        // The attachments are real: the first container's port answers through the
        // uplink (not timed).
        if let Some(first) = pods.first() {
            let server = crate::EchoServer::start(
                &first.path(),
                crate::Proto::Tcp,
                crate::addr(std::net::Ipv4Addr::UNSPECIFIED, 80),
            )?;
            crate::echo_once(
                &bed.sandbox.ext.path(),
                crate::Proto::Tcp,
                crate::addr(Sandbox::NODE_ADDR, PORT_BASE),
            )
            .with_context(|| format!("{plugin}: the published port does not answer"))?;
            drop(server);
        }
        progress.step(plugin, &format!("DEL of {} containers", pods.len()))?;
        let mut del_ms = Vec::new();
        for (i, (pod, result)) in pods.iter().zip(&added).enumerate() {
            let started = Instant::now();
            bed.call(
                "DEL",
                &format!("bench{i}"),
                &pod.path(),
                PORT_BASE + i as u16,
                Some(result),
            )?;
            del_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        for (key, samples) in [("add", &add_ms), ("del", &del_ms)] {
            results.add_cni(
                &name,
                &format!("{key}_p50@{fillers}"),
                quantile(samples, 0.5),
            );
            results.add_cni(
                &name,
                &format!("{key}_p99@{fillers}"),
                quantile(samples, 0.99),
            );
        }
        bed.unfill(fillers)?;
    }
    let evidence = bed.evidence(plan.attachments * plan.scales.len())?;
    progress.step(plugin, &format!("done; {evidence}"))?;
    results.cni_evidence(&name, evidence);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 100.0);
        assert_eq!(quantile(&s, 0.99), 198.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }
}
