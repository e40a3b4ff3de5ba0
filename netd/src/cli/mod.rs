//! The CLI's commands: each turns arguments into an API call and the answer into the
//! output Docker users expect.

pub mod events;
pub mod monitor;
pub mod network;
pub mod node;

use std::{path::Path, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::Args;
use hyper::Method;
use serde_json::Value;

use crate::{
    api::{
        Client, ContainerView, CounterView, RunRequest, SandboxView, StatusView as Status,
        encode_segment,
    },
    conntrack::FlowView,
    docker_plugin::short_id,
    ports::Proto,
    process,
};

#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container's ID.
    #[arg(short = 'd', long)]
    detach: bool,
    #[command(flatten)]
    container: ContainerArgs,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    container: ContainerArgs,
    /// The command `netd exec` users mean to run (recorded, not started).
    #[arg(last = true)]
    cmd: Vec<String>,
}

/// What `netd run` and `netd create` share: the container's network and ports.
#[derive(Args)]
pub struct ContainerArgs {
    /// The container's name.
    #[arg(long)]
    name: Option<String>,
    /// Network mode: `bridge` (the default network netd0), a network's name, `host`,
    /// `none` or `container:NAME`.
    #[arg(long = "network", alias = "net", default_value = "bridge")]
    network: String,
    /// A static IPv4 address on the network (user-defined networks only).
    #[arg(long)]
    ip: Option<String>,
    /// A static IPv6 address on the network (user-defined networks with --ipv6 only).
    #[arg(long)]
    ip6: Option<String>,
    /// Use this existing network namespace (e.g. /var/run/netns/NAME) instead of a new one.
    #[arg(long)]
    netns: Option<std::path::PathBuf>,
    /// Publish a container's port(s) to the host: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every --expose port to a free ephemeral host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// A port or range the container serves: PORT[-END][/PROTO] (published with -P).
    #[arg(long)]
    expose: Vec<String>,
}

impl ContainerArgs {
    fn request(self, cmd: Vec<String>, start: bool) -> RunRequest {
        if self.network == "host" && (!self.publish.is_empty() || self.publish_all) {
            eprintln!("WARNING: Published ports are discarded when using host network mode");
        }
        RunRequest {
            name: self.name,
            network: self.network,
            ip: self.ip,
            ip6: self.ip6,
            netns: self.netns.map(|p| resolve_directories(&p)),
            start,
            publish: self.publish,
            expose: self.expose,
            publish_all: self.publish_all,
            cmd,
        }
    }
}

/// `path` made absolute, with the symbolic links of its directories resolved here, as
/// the user means them (`/var/run/netns/x` is `/run/netns/x` on most systems): the daemon
/// takes no symbolic link on a `--netns` path. The last component stays as given.
fn resolve_directories(path: &Path) -> std::path::PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|dir| dir.join(name))
            .unwrap_or(abs),
        _ => abs,
    }
}

#[derive(Args)]
pub struct ExecArgs {
    name: String,
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill a running container before removing it.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show every container, not only running ones.
    #[arg(short = 'a', long)]
    all: bool,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Args)]
pub struct FormatArgs {
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    format: String,
}

impl FormatArgs {
    pub(crate) fn json(&self) -> Result<bool> {
        match self.format.as_str() {
            "table" => Ok(false),
            "json" => Ok(true),
            other => bail!("invalid --format {other}: expected table or json"),
        }
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub async fn run(client: &Client, args: RunArgs) -> Result<ExitCode> {
    if !args.detach {
        bail!(
            "netd run needs -d: containers run in the background; use `netd exec NAME -- CMD` to run commands in them"
        );
    }
    let req = args.container.request(args.cmd, true);
    let c: ContainerView = client.call(Method::POST, "containers", Some(&req)).await?;
    println!("{}", c.id);
    Ok(ExitCode::SUCCESS)
}

/// `netd create`: wire a container's network namespace without starting anything, and
/// print the namespace's path (for a runtime to start processes in).
pub async fn create(client: &Client, args: CreateArgs) -> Result<ExitCode> {
    let req = args.container.request(args.cmd, false);
    let c: ContainerView = client.call(Method::POST, "containers", Some(&req)).await?;
    println!("{}", c.netns_path.display());
    Ok(ExitCode::SUCCESS)
}

/// `netd inspect NAME...`: the containers' records as JSON (an array, like Docker's).
pub async fn inspect(client: &Client, names: Vec<String>) -> Result<ExitCode> {
    inspect_each(client, "containers", &names).await
}

/// GET `collection/NAME` for each name; print the answers as one JSON array, and report
/// the names that failed.
pub(crate) async fn inspect_each(
    client: &Client,
    collection: &str,
    names: &[String],
) -> Result<ExitCode> {
    let mut out = Vec::new();
    let failed = for_each_name(
        names,
        "Error",
        |name| {
            let path = format!("{collection}/{}", encode_segment(name));
            async move { client.call::<Value>(Method::GET, &path, None::<&()>).await }
        },
        |_, v| out.push(v),
    )
    .await;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(exit_code(failed))
}

/// Print the `warnings` of a daemon's answer (what a removal could not undo) to stderr.
/// Whether there were any: the object is not fully gone, and the command fails.
pub(crate) fn print_warnings(answer: &Value) -> bool {
    let warnings: Vec<&str> = answer["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for w in &warnings {
        eprintln!("Warning: {w}");
    }
    !warnings.is_empty()
}

/// DELETE `collection/NAME{query}` for each name, printing each removed name like Docker
/// and what its removal could not undo.
pub(crate) async fn remove_each(
    client: &Client,
    collection: &str,
    names: &[String],
    query: &str,
) -> Result<ExitCode> {
    let mut incomplete = false;
    let failed = for_each_name(
        names,
        "Error response from daemon",
        |name| {
            let path = format!("{collection}/{}{query}", encode_segment(name));
            async move {
                client
                    .call::<Value>(Method::DELETE, &path, None::<&()>)
                    .await
            }
        },
        |name, answer| {
            println!("{name}");
            incomplete |= print_warnings(&answer);
        },
    )
    .await;
    Ok(exit_code(failed || incomplete))
}

/// Run `call` for each name, in order; successes go to `ok`, failures to stderr with
/// `prefix`. Whether any failed.
async fn for_each_name<F, Fut>(
    names: &[String],
    prefix: &str,
    call: F,
    mut ok: impl FnMut(&str, Value),
) -> bool
where
    F: Fn(&str) -> Fut,
    Fut: std::future::Future<Output = Result<Value>>,
{
    let mut failed = false;
    for name in names {
        match call(name).await {
            Ok(v) => ok(name, v),
            Err(e) => {
                eprintln!("{prefix}: {e:#}");
                failed = true;
            }
        }
    }
    failed
}

pub(crate) fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs the command itself, in the container's namespace, with this terminal's stdio.
pub fn exec(socket: &Path, args: ExecArgs) -> Result<ExitCode> {
    let c: ContainerView = runtime()?.block_on(async {
        Client::new(socket)
            .call(
                Method::GET,
                &format!("containers/{}", encode_segment(&args.name)),
                None::<&()>,
            )
            .await
    })?;
    if !matches!(c.status, Status::Running | Status::Created) {
        bail!("container {} is not running", c.name);
    }
    // A namespace someone else made is checked to be the one the daemon holds.
    let expected = match c.sandbox {
        SandboxView::External { dev, ino, .. } => Some((dev, ino)),
        SandboxView::Docker { .. } => bail!(
            "{} is an endpoint of a Docker container: use docker exec",
            c.name
        ),
        SandboxView::Cni { container_id, .. } => bail!(
            "{} is the CNI attachment of container {container_id}: use its runtime's exec (podman exec, crictl exec, nsenter --net={})",
            c.name,
            c.netns_path.display()
        ),
        _ => None,
    };
    let status = process::exec_in(&c.netns_path, expected, &args.cmd)?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

#[derive(Args)]
pub struct PortArgs {
    name: String,
    /// Only this container port: PORT[/PROTO] (tcp when omitted).
    port: Option<String>,
}

/// `docker port`: every binding as `80/tcp -> 0.0.0.0:8080`, or the host addresses of one
/// container port.
pub async fn port(client: &Client, args: PortArgs) -> Result<ExitCode> {
    let c: ContainerView = client
        .call::<ContainerView>(
            Method::GET,
            &format!("containers/{}", encode_segment(&args.name)),
            None::<&()>,
        )
        .await?;
    let mut ports = c.ports.clone();
    ports.sort_by_key(|b| (b.container_port, b.proto, b.host_ip, b.host_port));
    let Some(wanted) = args.port else {
        for b in &ports {
            println!("{b}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let (port, proto) = match wanted.split_once('/') {
        Some((p, proto)) => (p, proto.parse::<Proto>()?),
        None => (wanted.as_str(), Proto::Tcp),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid port: {wanted}"))?;
    let matching: Vec<_> = ports
        .iter()
        .filter(|b| b.container_port == port && b.proto == proto)
        .collect();
    if matching.is_empty() {
        bail!("no public port '{port}/{proto}' published for {}", c.name);
    }
    for b in matching {
        println!("{}", crate::ports::host_end(b.host_ip, b.host_port));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rm(client: &Client, args: RmArgs) -> Result<ExitCode> {
    let query = if args.force { "?force=1" } else { "" };
    remove_each(client, "containers", &args.names, query).await
}

pub async fn ps(client: &Client, args: PsArgs) -> Result<ExitCode> {
    let json = args.format.json()?;
    let all: Vec<ContainerView> = client.call(Method::GET, "containers", None::<&()>).await?;
    let shown: Vec<&ContainerView> = all
        .iter()
        .filter(|c| args.all || c.status == Status::Running)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = shown
        .iter()
        .map(|v| {
            let c = v;
            let (networks, ips) = if c.endpoints.is_empty() {
                (c.network_mode.clone(), String::new())
            } else {
                (
                    c.endpoints
                        .iter()
                        .map(|e| e.network.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    // Each endpoint's IPv4 address, then its IPv6 one, those it has.
                    c.endpoints
                        .iter()
                        .flat_map(|e| {
                            let v6 = Some(&e.global_ipv6_address).filter(|a| !a.is_empty());
                            e.ip.map(|ip| ip.to_string()).into_iter().chain(v6.cloned())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                )
            };
            // Docker tells its driver the sandbox, not the container: its short ID stands
            // in the ID column, the endpoint's in the name.
            let id = match &c.sandbox {
                SandboxView::Docker { sandbox, .. } => {
                    sandbox.clone().unwrap_or_else(|| "-".into())
                }
                // A runtime's container: its ID, short as runtimes show it.
                SandboxView::Cni { container_id, .. } => short_id(container_id).to_string(),
                _ => c.id.clone(),
            };
            [
                id,
                c.name.clone(),
                networks,
                ips,
                status_text(&c.status),
                ports_column(c),
            ]
        })
        .collect();
    print_table(
        &["CONTAINER ID", "NAME", "NETWORK", "IP", "STATUS", "PORTS"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(client: &Client, args: FormatArgs) -> Result<ExitCode> {
    let counters: Vec<CounterView> = client.call(Method::GET, "stats", None::<&()>).await?;
    if args.json()? {
        println!("{}", serde_json::to_string_pretty(&counters)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 4]> = counters
        .iter()
        .filter(|c| c.packets > 0)
        .map(|c| {
            [
                c.hook.clone(),
                c.reason.clone(),
                c.packets.to_string(),
                c.bytes.to_string(),
            ]
        })
        .collect();
    print_table(&["HOOK", "REASON", "PACKETS", "BYTES"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn conntrack(client: &Client, args: FormatArgs) -> Result<ExitCode> {
    let flows: Vec<FlowView> = client.call(Method::GET, "conntrack", None::<&()>).await?;
    if args.json()? {
        println!("{}", serde_json::to_string_pretty(&flows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 8]> = flows
        .iter()
        .map(|f| {
            [
                f.proto.clone(),
                f.kind.clone(),
                f.original.clone(),
                f.translated.clone(),
                f.state.clone(),
                format!("{}s/{}s", f.age_seconds, f.idle_seconds),
                format!("{}/{}", f.packets_original, f.packets_reply),
                format!("{}/{}", f.bytes_original, f.bytes_reply),
            ]
        })
        .collect();
    print_table(
        &[
            "PROTO",
            "KIND",
            "ORIGINAL",
            "TRANSLATED",
            "STATE",
            "AGE/IDLE",
            "PACKETS",
            "BYTES",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn info(client: &Client) -> Result<ExitCode> {
    let info: Value = client.call(Method::GET, "info", None::<&()>).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&info).context("format info")?
    );
    Ok(ExitCode::SUCCESS)
}

fn status_text(s: &Status) -> String {
    match s {
        Status::Created => "created".into(),
        Status::Running => "running".into(),
        Status::Exited { code: Some(c) } => format!("exited ({c})"),
        Status::Exited { code: None } => "exited".into(),
    }
}

/// Docker's PORTS column: `0.0.0.0:8080->80/tcp, ...`, with bindings that run on by one
/// collapsed into ranges (`0.0.0.0:20000-29999->20000-29999/tcp`).
fn ports_column(c: &ContainerView) -> String {
    port_runs(&c.ports)
        .iter()
        .map(PortRun::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bindings on one host address and protocol whose host and container ports both go up
/// by one from binding to binding. Ordered by protocol, then container port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PortRun {
    proto: Proto,
    container_start: u16,
    host_ip: std::net::IpAddr,
    host_start: u16,
    /// How many ports past the first (0 for a single binding).
    extra: u16,
}

impl std::fmt::Display for PortRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (h, c) = (self.host_start, self.container_start);
        let ip = crate::ports::host_addr(self.host_ip);
        if self.extra == 0 {
            write!(f, "{ip}:{h}->{c}/{}", self.proto)
        } else {
            let (h_end, c_end) = (h + self.extra, c + self.extra);
            write!(f, "{ip}:{h}-{h_end}->{c}-{c_end}/{}", self.proto)
        }
    }
}

fn port_runs(bindings: &[crate::ports::PortBinding]) -> Vec<PortRun> {
    let mut sorted = bindings.to_vec();
    sorted.sort_by_key(|b| (b.proto, b.host_ip, b.container_port, b.host_port));
    sorted.dedup();
    let mut runs: Vec<PortRun> = Vec::new();
    for b in sorted {
        if let Some(run) = runs.last_mut()
            && run.proto == b.proto
            && run.host_ip == b.host_ip
            && u32::from(run.container_start) + u32::from(run.extra) + 1
                == u32::from(b.container_port)
            && u32::from(run.host_start) + u32::from(run.extra) + 1 == u32::from(b.host_port)
        {
            run.extra += 1;
            continue;
        }
        runs.push(PortRun {
            proto: b.proto,
            container_start: b.container_port,
            host_ip: b.host_ip,
            host_start: b.host_port,
            extra: 0,
        });
    }
    runs.sort();
    runs
}

pub(crate) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    print!("{}", render_table(header, rows));
}

/// Columns padded to their widest cell, three spaces apart. Padding is written out, not
/// asked of `format!` (whose width argument cannot exceed u16::MAX: a PORTS cell of a few
/// thousand bindings is wider).
fn render_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths = header.map(width);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("   ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', w - width(cell)));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;
    use crate::ports::PortBinding;

    fn binding(
        proto: Proto,
        host_ip: impl Into<IpAddr>,
        host_port: u16,
        container_port: u16,
    ) -> PortBinding {
        PortBinding {
            proto,
            container_port,
            host_ip: host_ip.into(),
            host_port,
        }
    }

    fn column(bindings: &[PortBinding]) -> String {
        port_runs(bindings)
            .iter()
            .map(PortRun::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn a_published_range_is_one_entry_like_dockers() {
        let range: Vec<_> = (20000..=29999)
            .map(|p| binding(Proto::Tcp, [0, 0, 0, 0], p, p))
            .collect();
        assert_eq!(column(&range), "0.0.0.0:20000-29999->20000-29999/tcp");
        // Shifted ranges collapse too, when both sides run on by one.
        let shifted: Vec<_> = (0..10)
            .map(|i| binding(Proto::Udp, [127, 0, 0, 1], 8000 + i, 80 + i))
            .collect();
        assert_eq!(column(&shifted), "127.0.0.1:8000-8009->80-89/udp");
    }

    #[test]
    fn only_bindings_that_run_on_together_collapse() {
        let bindings = [
            binding(Proto::Tcp, [0, 0, 0, 0], 8080, 80),
            binding(Proto::Tcp, [0, 0, 0, 0], 8081, 81),
            // Host port jumps: a new entry.
            binding(Proto::Tcp, [0, 0, 0, 0], 9000, 82),
            // Another address, same ports: its own entry.
            binding(Proto::Tcp, [127, 0, 0, 1], 8080, 80),
            // Another protocol, same ports.
            binding(Proto::Udp, [0, 0, 0, 0], 8080, 80),
            binding(Proto::Udp, [0, 0, 0, 0], 8081, 81),
            binding(Proto::Udp, [0, 0, 0, 0], 5353, 53),
        ];
        assert_eq!(
            column(&bindings),
            "0.0.0.0:8080-8081->80-81/tcp, 127.0.0.1:8080->80/tcp, 0.0.0.0:9000->82/tcp, \
             0.0.0.0:5353->53/udp, 0.0.0.0:8080-8081->80-81/udp"
        );
        // The order of the input does not matter, nor does the top of the port space.
        let mut top: Vec<_> = (65530..=65535)
            .map(|p| binding(Proto::Tcp, [0, 0, 0, 0], p, p))
            .collect();
        top.reverse();
        assert_eq!(column(&top), "0.0.0.0:65530-65535->65530-65535/tcp");
        assert_eq!(column(&[]), "");
    }

    #[test]
    fn ipv6_bindings_are_bracketed_after_their_ipv4_twins_like_dockers() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let mut bindings: Vec<_> = (0..3)
            .flat_map(|i| {
                [
                    binding(Proto::Tcp, [0, 0, 0, 0], 8000 + i, 80 + i),
                    binding(Proto::Tcp, v6("::"), 8000 + i, 80 + i),
                ]
            })
            .collect();
        bindings.push(binding(Proto::Udp, v6("2001:db8::1"), 5353, 53));
        assert_eq!(
            column(&bindings),
            "0.0.0.0:8000-8002->80-82/tcp, [::]:8000-8002->80-82/tcp, [2001:db8::1]:5353->53/udp"
        );
    }

    #[test]
    fn a_table_with_a_very_wide_cell_prints() {
        let wide = "x".repeat(200_000);
        let rows = [
            ["a".to_string(), wide.clone()],
            ["bb".to_string(), "y".to_string()],
        ];
        let table = render_table(&["NAME", "PORTS"], &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "NAME   PORTS");
        assert_eq!(lines[1], format!("a      {wide}"));
        assert_eq!(lines[2], "bb     y");
    }
}
