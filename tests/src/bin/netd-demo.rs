//! `cargo xtask demo`: netd's main job on this machine, shown end to end in a sandbox of
//! network namespaces (never the machine's own network), then removed again.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netd_tests::{Daemon, EchoServer, Proto, Sandbox, echo::in_netns, echo_once, require_root};

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
    match demo() {
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

    s.step(&format!(
        "client fetches http://{}:8080/ through the node's uplink",
        Sandbox::NODE_ADDR
    ));
    let out = sb.ext.exec(&[
        "curl",
        "-sS",
        "-m",
        "5",
        &format!("http://{}:8080/", Sandbox::NODE_ADDR),
    ])?;
    let body = String::from_utf8_lossy(&out.stdout);
    println!("      curl got: {}", body.trim());
    if body.trim() != PAGE {
        bail!("the page did not come back through the published port");
    }
    let log = std::fs::read_to_string(d.dir.join("state/logs/web.log")).unwrap_or_default();
    let seen = log
        .lines()
        .find(|l| l.contains("GET /"))
        .context("the container logged no request")?;
    println!("      the container's server logged: {seen}");
    if !seen.starts_with(&Sandbox::EXT_ADDR.to_string()) {
        bail!("the container did not see the client's own address");
    }

    s.step(&format!(
        "container web connects to the internet host {}:9000",
        Sandbox::INET_ADDR
    ));
    let target = SocketAddr::new(Sandbox::INET_ADDR.into(), 9000);
    let server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target)?;
    let local = echo_once(&web.netns, Proto::Tcp, target)?;
    let peer = *server
        .peers()
        .first()
        .context("the internet host saw no connection")?;
    println!("      sent from {local} inside the container; the internet host saw {peer}");
    if peer.ip() != std::net::IpAddr::from(Sandbox::NODE_ADDR) {
        bail!("egress was not masqueraded to the node's address");
    }

    s.step("data path counters (netd stats)");
    print!("{}", indent(&d.cli_ok(&["stats"])?));
    d.cli_ok(&["rm", "-f", "web"])?;
    drop(server);
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
