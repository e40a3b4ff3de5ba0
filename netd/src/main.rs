//! netd: container networking with an eBPF data path. One binary: `netd daemon` and the
//! CLI that talks to it over the API socket.

use netd::{api, cli, daemon, datapath::XdpRequest, ports, process};

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "netd",
    version,
    about = "Container networking with an eBPF data path"
)]
struct Cli {
    /// The daemon's API socket.
    #[arg(
        long,
        global = true,
        env = "NETD_SOCKET",
        default_value = "/run/netd/netd.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (in the network namespace it should serve).
    Daemon(DaemonArgs),
    /// Run a command in a new container.
    Run(cli::RunArgs),
    /// Wire a new container's network namespace without starting a process; prints the
    /// namespace's path.
    Create(cli::CreateArgs),
    /// Show containers as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Manage networks.
    #[command(subcommand)]
    Network(cli::network::NetworkCommand),
    /// The nodes of this node's cluster (`netd daemon --cluster-store`).
    #[command(subcommand)]
    Node(cli::node::NodeCommand),
    /// Run a command inside a running container's network namespace.
    Exec(cli::ExecArgs),
    /// List a container's published ports, like `docker port`.
    Port(cli::PortArgs),
    /// Remove containers.
    Rm(cli::RmArgs),
    /// List containers.
    Ps(cli::PsArgs),
    /// List the translated flows of the connection table.
    Conntrack(cli::FormatArgs),
    /// Show the data path's counters.
    Stats(cli::FormatArgs),
    /// Show the daemon's uplink, networks and settings.
    Info,
    /// Stream what changes on the node (containers, networks, ports), like `docker events`.
    Events(cli::events::EventsArgs),
    /// Stream the data path's events: drops, flows beginning and ending, translations.
    Monitor(cli::monitor::MonitorArgs),
    /// Print a completion script for a shell, e.g. `netd completion bash >
    /// /usr/share/bash-completion/completions/netd`.
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write netd's man pages (one per command) into a directory (the package ships them).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    #[command(name = process::HOLDER_SUBCOMMAND, hide = true)]
    NetnsHolder {
        /// The daemon's state directory and the container: they identify the holder.
        #[arg(num_args = 0..)]
        owner: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`, from the CLI's own definition.
fn completion(shell: CompletionShell) -> anyhow::Result<std::process::ExitCode> {
    use clap::CommandFactory;
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    // Without the hidden commands (the generators would offer them).
    let cli = Cli::command();
    let mut visible = clap::Command::new("netd")
        .version(cli.get_version().unwrap_or_default().to_string())
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible, "netd", &mut script);
    use std::io::Write;
    match std::io::stdout().write_all(&script) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(std::process::ExitCode::SUCCESS),
    }
}

/// `netd.1` and a page per command (`netd-network-create.1`, ...) in `dir`.
fn manpages(dir: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    use clap::CommandFactory;
    fn write(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<()> {
        let cmd = cmd.clone().name(name.to_string());
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        let pages = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help");
        for sub in pages {
            write(sub, &format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cli = Cli::command();
    cli.build();
    write(&cli, "netd", dir)?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(Args)]
struct DaemonArgs {
    /// Interface to publish ports on and masquerade through [default: the default route's]
    #[arg(long)]
    uplink: Option<String>,
    /// Where networks and containers are persisted.
    #[arg(long, default_value = "/var/lib/netd")]
    state_dir: PathBuf,
    /// A directory on bpffs where maps are pinned, so restarts keep flows.
    #[arg(long, default_value = "/sys/fs/bpf/netd")]
    bpffs_dir: PathBuf,
    /// Source ports for masqueraded flows whose own port is taken (a container's source
    /// port is kept when no other flow and no socket of the node uses the tuple); keep it
    /// outside ip_local_port_range.
    #[arg(long, default_value = "61000-65535")]
    snat_ports: String,
    /// Capacity of the connection table in entries (two per translated flow); flows not
    /// confirmed yet (no reply, no completed handshake) have a table as large again, whose
    /// oldest entries a flood evicts.
    #[arg(long, default_value_t = netd_common::maps::FLOWS_MAX, value_parser = clap::value_parser!(u32).range(4..))]
    flow_table_size: u32,
    /// Confirmed flows one container may hold [default: an eighth of --flow-table-size,
    /// i.e. a quarter of its entries]; beyond it, its new flows still work but stay among
    /// the unconfirmed ones, evicted first when the table is under pressure.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    flow_quota: Option<u32>,
    /// The cgroup2 directory whose processes reach published ports through 127.0.0.1 and
    /// the node's addresses [default: the cgroup2 root]
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Seconds between sweeps that remove expired flows from the connection table.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    conntrack_gc_interval: u64,
    /// A group (name or number) whose members may use the API socket besides root.
    #[arg(long)]
    socket_group: Option<String>,
    /// XDP on the uplink: translate published-port and reply traffic before the kernel
    /// builds a packet buffer. `auto`: native mode where the driver has it, else off;
    /// `generic` is slower than TC and meant for testing.
    #[arg(long, value_enum, default_value_t = XdpRequest::Auto)]
    xdp: XdpRequest,
    /// Deliver translated packets straight into containers (bpf_redirect_peer) and out of
    /// the uplink (bpf_redirect_neigh), past the bridge and the node's forwarding.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    fast_path: OnOff,
    /// Serve Docker's network and IPAM plugin API (`docker network create -d netd
    /// --ipam-driver netd`) on this socket: `/run/docker/plugins/netd.sock`, where Docker
    /// looks, or any path named by a spec file `/etc/docker/plugins/netd.spec`.
    #[arg(long)]
    docker_plugin_socket: Option<PathBuf>,
    /// What the kernel programs log, to this log under the target `netd_ebpf`: `off`
    /// (nothing; the verifier prunes every log call), `error` (netd's own failures),
    /// `debug` (also every dropped packet with its hook and reason).
    #[arg(long, value_enum, default_value_t = netd::datapath::DatapathLog::Off)]
    datapath_log: netd::datapath::DatapathLog,
    /// Serve Prometheus metrics at `http://ADDR:PORT/metrics` (OpenMetrics when asked);
    /// off unless given. Anyone who reaches the address reads them: keep it on
    /// 127.0.0.1 or a management network.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Give the default network netd0 IPv6 too (Docker's flag): its subnet is
    /// --fixed-cidr-v6, or the next free /64 of the node's ULA /48.
    #[arg(long)]
    ipv6: bool,
    /// The IPv6 subnet of the default network netd0 (needs --ipv6).
    #[arg(long, value_name = "CIDR")]
    fixed_cidr_v6: Option<String>,
    /// NAT46: IPv6 clients reach the published ports of containers that have IPv4
    /// only, each client mapped to an address of this IPv4 pool of its own; `off` turns
    /// NAT46 off [default: 198.18.0.0/16, off if a network uses part of it]
    #[arg(long, value_name = "CIDR|off")]
    nat46_pool: Option<daemon::Nat46Pool>,
    /// Join a cluster whose nodes agree through etcd:
    /// `etcd://HOST:2379[,HOST:2379...][/PREFIX]` (Docker's flag for overlays on a
    /// key-value store).
    #[arg(long, value_name = "URL")]
    cluster_store: Option<String>,
    /// TLS for the store, Docker's keys: `kv.cacertfile=PATH`, `kv.certfile=PATH`,
    /// `kv.keyfile=PATH` (repeat the flag).
    #[arg(long, value_name = "KEY=VALUE", requires = "cluster_store")]
    cluster_store_opt: Vec<String>,
    /// The interface or IPv4 address other nodes reach this one at (`IFACE|IP`, Docker's
    /// `:PORT` suffix accepted and unused).
    #[arg(long, value_name = "IFACE|IP", requires = "cluster_store")]
    cluster_advertise: Option<String>,
    /// This node's name in the cluster [default: the host name]
    #[arg(long, requires = "cluster_store")]
    node_name: Option<String>,
    /// Seconds a node stays ready after its daemon stops renewing its lease (a node that
    /// dies is noticed this late; a restart within it goes unnoticed).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    cluster_lease_ttl: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::NetnsHolder { .. } => process::hold_forever(),
        Command::Daemon(args) => run_daemon(&cli.socket, args),
        Command::Exec(args) => cli::exec(&cli.socket, args),
        Command::Completion { shell } => completion(shell),
        Command::Manpages { dir } => manpages(&dir),
        command => cli::runtime().and_then(|rt| rt.block_on(client(&cli.socket, command))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn client(
    socket: &std::path::Path,
    command: Command,
) -> anyhow::Result<std::process::ExitCode> {
    let client = api::Client::new(socket);
    match command {
        Command::Run(args) => cli::run(&client, args).await,
        Command::Create(args) => cli::create(&client, args).await,
        Command::Inspect { names } => cli::inspect(&client, names).await,
        Command::Network(command) => cli::network::run(&client, command).await,
        Command::Node(command) => cli::node::run(&client, command).await,
        Command::Rm(args) => cli::rm(&client, args).await,
        Command::Port(args) => cli::port(&client, args).await,
        Command::Ps(args) => cli::ps(&client, args).await,
        Command::Stats(args) => cli::stats(&client, args).await,
        Command::Conntrack(args) => cli::conntrack(&client, args).await,
        Command::Info => cli::info(&client).await,
        Command::Events(args) => cli::events::run(&client, args).await,
        Command::Monitor(args) => cli::monitor::run(&client, args).await,
        Command::Daemon(_)
        | Command::Exec(_)
        | Command::NetnsHolder { .. }
        | Command::Completion { .. }
        | Command::Manpages { .. } => {
            unreachable!("handled in main")
        }
    }
}

fn run_daemon(
    socket: &std::path::Path,
    args: DaemonArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let notifier = netd::notify::Notifier::from_env();
    let mut logs =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // The programs' lines at the level asked for, whatever RUST_LOG says of the rest.
    if let Some(level) = args.datapath_log.log_filter() {
        logs.filter_module("netd_ebpf", level);
    }
    logs.init();
    let snat_ports = parse_snat_ports(&args.snat_ports)?;
    let default_ipv6 =
        netd::network_request::default_ipv6(args.ipv6, args.fixed_cidr_v6.as_deref())?;
    let socket_group = args.socket_group.as_deref().map(group_id).transpose()?;
    let cluster = match &args.cluster_store {
        Some(store) => Some(netd::cluster::ClusterConfig::parse(
            store,
            &args.cluster_store_opt,
            args.cluster_advertise.as_deref(),
            &args.node_name.clone().map_or_else(host_name, Ok)?,
            std::time::Duration::from_secs(args.cluster_lease_ttl),
        )?),
        None => None,
    };
    let config = daemon::DaemonConfig {
        uplink: args.uplink,
        socket: socket.to_path_buf(),
        state_dir: args.state_dir,
        bpffs_dir: args.bpffs_dir,
        snat_ports,
        flow_table_size: args.flow_table_size,
        flow_quota: args.flow_quota.unwrap_or((args.flow_table_size / 8).max(1)),
        cgroup: args.cgroup,
        gc_interval: std::time::Duration::from_secs(args.conntrack_gc_interval),
        socket_group,
        notifier,
        xdp: args.xdp,
        fast_path: args.fast_path == OnOff::On,
        docker_plugin_socket: args.docker_plugin_socket,
        metrics_addr: args.metrics_addr,
        datapath_log: args.datapath_log,
        cluster,
        default_ipv6,
        nat46_pool: args.nat46_pool.unwrap_or(daemon::Nat46Pool::Default),
    };
    tokio::runtime::Runtime::new()?.block_on(daemon::run(config))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The host's name (the default node name in a cluster).
fn host_name() -> anyhow::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// A group by name or number.
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)?;
    // SAFETY: getgrnam with a NUL-terminated name; the result is read before any other
    // call that could reuse its static buffer.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        anyhow::bail!("invalid --socket-group {group}: no such group");
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*entry).gr_gid })
}

fn parse_snat_ports(s: &str) -> anyhow::Result<ports::PortRange> {
    let bad = || anyhow::anyhow!("invalid --snat-ports {s}: expected FIRST-LAST, e.g. 61000-65535");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (start, end) = (
        a.parse::<u16>().map_err(|_| bad())?,
        b.parse::<u16>().map_err(|_| bad())?,
    );
    if start == 0 || end < start {
        return Err(bad());
    }
    Ok(ports::PortRange { start, end })
}
