//! `cargo xtask demo`: netd's main job on this machine, shown end to end in a sandbox of
//! network namespaces (never the machine's own network), then removed again. With
//! `--docker`, the same story with the real dockerd as the engine and netd as its network
//! driver.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netd_tests::{
    Daemon, EchoServer, Proto, Sandbox, docker::Docker, echo::in_netns, echo_once, require_root,
};

const PAGE: &str = "hello from a netd container";

struct Steps {
    n: usize,
    total: usize,
}

impl Steps {
    fn step(&mut self, what: &str) {
        self.n += 1;
        println!("[{}/{}] {what}", self.n, self.total);
    }
}

fn main() -> ExitCode {
    require_root();
    let started = Instant::now();
    let docker = std::env::args().skip(1).any(|a| a == "--docker");
    match if docker { demo_docker() } else { demo() } {
        Ok(()) => {
            println!(
                "\ndemo: OK in {:.1}s, sandbox removed",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<()> {
    let mut s = Steps { n: 0, total: 6 };
    s.step("building a sandbox of network namespaces");
    let sb = Sandbox::new("demo")?;
    println!(
        "      client {} (ns {}) --- node {} on {} (ns {}) --- internet host {} (ns {})",
        Sandbox::EXT_ADDR,
        sb.ext.name,
        Sandbox::NODE_ADDR,
        Sandbox::UPLINK,
        sb.node.name,
        Sandbox::INET_ADDR,
        sb.inet.name
    );

    s.step("starting `netd daemon` inside the node namespace");
    let d = Daemon::start(&sb.node, Sandbox::UPLINK)?;
    let info: serde_json::Value = serde_json::from_str(&d.cli_ok(&["info"])?)?;
    let netd0: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["network", "inspect", "netd0"])?)?;
    println!(
        "      uplink {} ({}), default network netd0 on {}",
        info["uplink"],
        info["uplink_address"].as_str().unwrap_or("?"),
        netd0[0]["subnet"].as_str().unwrap_or("?")
    );

    s.step("netd run -d --name web -p 8080:80 -- python3 -m http.server 80");
    let www = d.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), format!("{PAGE}\n"))?;
    let www = www.to_string_lossy().into_owned();
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
        "--directory",
        &www,
    ])?;
    let web = d.container("web")?;
    print!("{}", indent(&d.cli_ok(&["ps"])?));
    wait_for_listener(&web.netns, SocketAddr::new(web.ip.into(), 80))?;

    fetch_through_uplink(&mut s, &sb)?;
    let log = std::fs::read_to_string(d.dir.join("state/logs/web.log")).unwrap_or_default();
    show_client_address(&log)?;
    let server = egress_is_masqueraded(&mut s, &sb, &web.netns, "web")?;

    s.step("data path counters (netd stats)");
    print!("{}", indent(&d.cli_ok(&["stats"])?));
    d.cli_ok(&["rm", "-f", "web"])?;
    drop(server);
    drop(d);
    drop(sb);
    Ok(())
}

/// Step: the page through the node's uplink, from the client.
fn fetch_through_uplink(s: &mut Steps, sb: &Sandbox) -> Result<()> {
    s.step(&format!(
        "client fetches http://{}:8080/ through the node's uplink",
        Sandbox::NODE_ADDR
    ));
    let url = format!("http://{}:8080/", Sandbox::NODE_ADDR);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let out = sb.ext.exec(&["curl", "-sS", "-m", "5", &url])?;
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if body == PAGE || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("      curl got: {body}");
    if body != PAGE {
        bail!("the page did not come back through the published port");
    }
    Ok(())
}

/// The server's log line of the request: it must name the client's own address.
fn show_client_address(log: &str) -> Result<()> {
    let seen = log
        .lines()
        .find(|l| l.contains("GET /") || l.contains("url:/"))
        .context("the container logged no request")?;
    println!("      the container's server logged: {}", seen.trim());
    if !seen.contains(&Sandbox::EXT_ADDR.to_string()) {
        bail!("the container did not see the client's own address");
    }
    Ok(())
}

/// Step: the container connects out; the internet host must see the node's address.
fn egress_is_masqueraded(
    s: &mut Steps,
    sb: &Sandbox,
    netns: &std::path::Path,
    name: &str,
) -> Result<EchoServer> {
    s.step(&format!(
        "container {name} connects to the internet host {}:9000",
        Sandbox::INET_ADDR
    ));
    let target = SocketAddr::new(Sandbox::INET_ADDR.into(), 9000);
    let server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target)?;
    let local = echo_once(netns, Proto::Tcp, target)?;
    let peer = *server
        .peers()
        .first()
        .context("the internet host saw no connection")?;
    println!("      sent from {local} inside the container; the internet host saw {peer}");
    if peer.ip() != std::net::IpAddr::from(Sandbox::NODE_ADDR) {
        bail!("egress was not masqueraded to the node's address");
    }
    Ok(server)
}

/// `cargo xtask demo --docker`: Docker runs the container, netd is its network driver.
fn demo_docker() -> Result<()> {
    let mut s = Steps { n: 0, total: 8 };
    s.step("building a sandbox of network namespaces");
    let sb = Sandbox::new("demo")?;
    println!(
        "      client {} --- node {} on {} (netd and dockerd) --- internet host {}",
        Sandbox::EXT_ADDR,
        Sandbox::NODE_ADDR,
        Sandbox::UPLINK,
        Sandbox::INET_ADDR,
    );

    s.step("starting `netd daemon --docker-plugin-socket ...` and dockerd in the node");
    let socket = Docker::plugin_socket_for(&sb.node);
    let d = Daemon::start_with(
        &sb.node,
        Sandbox::UPLINK,
        &["--docker-plugin-socket", &socket.to_string_lossy()],
    )?;
    let docker = Docker::start(&sb.node, &socket)?;
    println!(
        "      dockerd {} with --bridge=none --iptables=false --ip-forward=false; plugin spec -> unix://{}",
        docker.ok(&["version", "-f", "{{.Server.Version}}"])?,
        socket.display()
    );

    s.step("docker network create -d netd --ipam-driver netd n1");
    docker.netd_network("n1", &[])?;
    print!(
        "{}",
        indent(&docker.ok(&["network", "ls", "--filter", "driver=netd"])?)
    );

    s.step("docker run -d --name web --network n1 -p 8080:80 busybox httpd");
    let www = docker.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), format!("{PAGE}\n"))?;
    let volume = format!("{}:/www:ro", www.display());
    let mut run = vec![
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n1",
        "-p",
        "8080:80",
    ];
    run.extend(["-v", &volume, netd_tests::docker::IMAGE]);
    run.extend(["httpd", "-f", "-vv", "-p", "80", "-h", "/www"]);
    docker.ok(&run)?;
    println!("      netd ps:");
    print!("{}", indent(&d.cli_ok(&["ps"])?));
    let key = docker.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "web"])?;
    let sandbox: String = key
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(12)
        .collect();
    println!(
        "      netd port {sandbox}: {}",
        d.cli_ok(&["port", &sandbox])?.trim()
    );
    println!(
        "      docker port web: {:?} (Docker shows no ports for a remote driver; netd port does)",
        docker.ok(&["port", "web"])?
    );

    fetch_through_uplink(&mut s, &sb)?;
    let logs = docker.cli(&["logs", "web"])?;
    show_client_address(&String::from_utf8_lossy(&logs.stderr))?;

    let web = docker.netns("web")?;
    let server = egress_is_masqueraded(&mut s, &sb, &web, "web")?;

    s.step("what Docker's own NAT would have left: iptables rules, docker-proxy processes");
    let rules = sb.node.exec(&["iptables-save"])?;
    let rules = String::from_utf8_lossy(&rules.stdout)
        .lines()
        .filter(|l| l.starts_with("-A"))
        .count();
    let proxies = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|c| c.trim() == "docker-proxy")
        .count();
    println!("      iptables rules in the node: {rules}; docker-proxy processes: {proxies}");
    if rules + proxies > 0 {
        bail!("Docker's own NAT is in place");
    }

    s.step("data path counters (netd stats)");
    print!("{}", indent(&d.cli_ok(&["stats"])?));
    docker.ok(&["rm", "-f", "web"])?;
    docker.ok(&["network", "rm", "n1"])?;
    drop(server);
    drop(docker);
    drop(d);
    drop(sb);
    Ok(())
}

/// python3 needs a moment to bind; poll for it from inside the container's namespace.
fn wait_for_listener(netns: &std::path::Path, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = in_netns(netns, move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
            s.write_all(b"HEAD / HTTP/1.0\r\n\r\n")?;
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf)?;
            Ok(())
        });
        if up.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the container's HTTP server did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}
