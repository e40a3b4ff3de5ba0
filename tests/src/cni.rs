//! `netd-cni` exec'd as a runtime execs it: `CNI_*` variables, the network configuration
//! on stdin, in the node's namespace; what it printed and the spec's error code, if any.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::daemon::{Daemon, netd_bin};

/// The plugin under test, built next to `netd`.
pub fn plugin_bin() -> PathBuf {
    netd_bin().with_file_name("netd-cni")
}

/// One plugin's configuration, as a runtime hands it from a conflist: `network` and the
/// daemon's socket, in `version`.
pub fn conf(version: &str, network: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": "netd-test",
        "type": "netd-cni",
        "network": network,
        "socket": socket,
    })
}

/// What the plugin answered.
#[derive(Debug)]
pub struct Answer {
    pub success: bool,
    /// stdout as JSON (`Null` when empty).
    pub json: Value,
    pub stderr: String,
}

impl Answer {
    /// The spec's error code, when it failed.
    pub fn code(&self) -> Option<u64> {
        (!self.success)
            .then(|| self.json["code"].as_u64())
            .flatten()
    }

    /// The result, failing with the error the plugin gave.
    pub fn ok(self) -> Result<Value> {
        if !self.success {
            bail!("netd-cni failed: {} {}", self.json, self.stderr);
        }
        Ok(self.json)
    }

    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or_default()
    }
}

/// One call's environment.
#[derive(Clone, Debug, Default)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, netns: Option<&'a Path>) -> Self {
        Call {
            command,
            container_id,
            netns,
            ifname: "eth0",
            args: "",
        }
    }
}

/// Exec the plugin in the daemon's node namespace with `env` and `stdin`, as a runtime of
/// that node would.
pub fn exec(daemon: &Daemon, call: &Call, stdin: &Value) -> Result<Answer> {
    exec_raw(
        daemon,
        &call.env(),
        serde_json::to_string(stdin)?.as_bytes(),
    )
}

impl Call<'_> {
    /// The `CNI_*` variables of this call.
    pub fn env(&self) -> Vec<(String, String)> {
        let call = self;
        let mut env = vec![
            ("CNI_COMMAND".to_string(), call.command.to_string()),
            ("CNI_CONTAINERID".into(), call.container_id.into()),
            ("CNI_IFNAME".into(), call.ifname.into()),
            ("CNI_PATH".into(), "/opt/cni/bin".into()),
        ];
        if let Some(ns) = call.netns {
            env.push(("CNI_NETNS".into(), ns.to_string_lossy().into_owned()));
        }
        if !call.args.is_empty() {
            env.push(("CNI_ARGS".into(), call.args.into()));
        }
        env
    }
}

/// Exec the plugin with exactly this environment (nothing inherited but PATH) and stdin.
pub fn exec_raw(daemon: &Daemon, env: &[(String, String)], stdin: &[u8]) -> Result<Answer> {
    exec_in(daemon, None, env, stdin)
}

/// `exec`, by a runtime whose mount namespace is that of process `runtime` (paths such as
/// `CNI_NETNS` are its own).
pub fn exec_by(daemon: &Daemon, runtime: u32, call: &Call, stdin: &Value) -> Result<Answer> {
    exec_in(
        daemon,
        Some(runtime),
        &call.env(),
        serde_json::to_string(stdin)?.as_bytes(),
    )
}

fn exec_in(
    daemon: &Daemon,
    runtime: Option<u32>,
    env: &[(String, String)],
    stdin: &[u8],
) -> Result<Answer> {
    let mut command = match runtime {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-m", "--", "ip"]);
            c
        }
        None => Command::new("ip"),
    };
    let mut child = command
        .args(["netns", "exec", &daemon.node])
        .arg(plugin_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("exec netd-cni")?;
    child.stdin.take().context("stdin")?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("netd-cni printed {text:?}"))?
    };
    Ok(Answer {
        success: out.status.success(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The daemon's CNI attachment records, as `netd ps --format json` lists them.
pub fn attachments(daemon: &Daemon) -> Vec<Value> {
    let listed = daemon
        .cli_ok(&["ps", "-a", "--format", "json"])
        .and_then(|out| Ok(serde_json::from_str::<Value>(&out)?))
        .expect("netd ps");
    listed
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["sandbox"]["kind"] == "cni")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The interfaces of `node`, by name, sorted.
pub fn node_links(node: &crate::netns::Netns) -> Vec<String> {
    let out = node.ip(&["-o", "link", "show"]).expect("ip link show");
    let mut links: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    links.sort();
    links
}

/// No attachment recorded and no endpoint veth in the node.
pub fn assert_nothing_left(daemon: &Daemon, node: &crate::netns::Netns) {
    assert_eq!(attachments(daemon), Vec::<Value>::new());
    let veths: Vec<String> = node_links(node)
        .into_iter()
        .filter(|l| l.starts_with("ndv") || l.starts_with("ndp"))
        .collect();
    assert!(veths.is_empty(), "veths left in the node: {veths:?}");
}
