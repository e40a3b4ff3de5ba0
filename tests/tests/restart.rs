//! Restart continuity: the data path's links and maps are pinned, so stopping the daemon
//! (SIGTERM) or killing it (SIGKILL) and starting it again drops no connection and no
//! published port. A TCP stream and a UDP exchange keep flowing, through a published port
//! and through masquerade, across three restarts of each kind, with zero errors, and they
//! keep flowing while the daemon is down.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netd_tests::{Daemon, EchoServer, Proto, Sandbox, addr, echo::in_netns, require_root};

/// A client that exchanges small messages with an echo server until told to stop; every
/// exchange must come back whole and in time.
struct Exchange {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Exchange {
    fn start(netns: PathBuf, proto: Proto, target: SocketAddr) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (done.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            in_netns(&netns, move || match proto {
                Proto::Tcp => tcp_loop(target, &d, &s),
                Proto::Udp => udp_loop(target, &d, &s),
            })
        });
        Exchange {
            done,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()?;
        Ok(self.count())
    }
}

impl Drop for Exchange {
    /// Also on a failed assertion: the loop ends, so the test does not hang.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Traffic both ways that must survive what a test does to the daemon: TCP and UDP from
/// the client to published ports of a container `web`, and masqueraded TCP and UDP from
/// it to the internet host, each an `Exchange` running until finished.
struct Traffic {
    _servers: Vec<EchoServer>,
    exchanges: Vec<Exchange>,
}

impl Traffic {
    fn start(sb: &Sandbox, d: &Daemon) -> Self {
        let web = d
            .run_idle_container("web", &["8080:80", "5353:53/udp"])
            .unwrap();
        let (inet_tcp, inet_udp) = (
            addr(Sandbox::INET_ADDR, 9000),
            addr(Sandbox::INET_ADDR, 9001),
        );
        let servers = vec![
            EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap(),
            EchoServer::start(&web.netns, Proto::Udp, addr(web.ip, 53)).unwrap(),
            EchoServer::start(&sb.inet.path(), Proto::Tcp, inet_tcp).unwrap(),
            EchoServer::start(&sb.inet.path(), Proto::Udp, inet_udp).unwrap(),
        ];
        let exchanges = vec![
            Exchange::start(sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)),
            Exchange::start(sb.ext.path(), Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)),
            Exchange::start(web.netns.clone(), Proto::Tcp, inet_tcp),
            Exchange::start(web.netns.clone(), Proto::Udp, inet_udp),
        ];
        Traffic {
            _servers: servers,
            exchanges,
        }
    }
}

const PAUSE: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_secs(2);

fn tcp_loop(target: SocketAddr, done: &AtomicU64, stop: &AtomicBool) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&target, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let msg = format!("message {n:08}");
        s.write_all(msg.as_bytes())
            .with_context(|| format!("TCP write #{n} to {target}"))?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)
            .with_context(|| format!("TCP echo #{n} from {target}"))?;
        if back != msg.as_bytes() {
            bail!("TCP echo #{n} from {target} differs");
        }
        n += 1;
        done.store(n, Ordering::Relaxed);
        std::thread::sleep(PAUSE);
    }
    Ok(())
}

fn udp_loop(target: SocketAddr, done: &AtomicU64, stop: &AtomicBool) -> Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(target)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let msg = format!("datagram {n:08}");
        s.send(msg.as_bytes())?;
        let mut back = [0u8; 64];
        let len = s
            .recv(&mut back)
            .with_context(|| format!("UDP echo #{n} from {target}"))?;
        if &back[..len] != msg.as_bytes() {
            bail!("UDP echo #{n} from {target} differs");
        }
        n += 1;
        done.store(n, Ordering::Relaxed);
        std::thread::sleep(PAUSE);
    }
    Ok(())
}

/// Wait until every exchange made progress (at least `k` more exchanges each).
fn wait_progress(exchanges: &[&Exchange], k: u64, what: &str) {
    let start: Vec<u64> = exchanges.iter().map(|e| e.count()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while exchanges.iter().zip(&start).any(|(e, s)| e.count() < s + k) {
        assert!(Instant::now() < deadline, "no progress {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_survive_three_sigterm_and_three_sigkill_restarts() {
    require_root();
    let sb = Sandbox::new("rs").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let traffic = Traffic::start(&sb, &d);
    let all: Vec<&Exchange> = traffic.exchanges.iter().collect();
    wait_progress(&all, 5, "before any restart");

    for signal in [libc::SIGTERM; 3].into_iter().chain([libc::SIGKILL; 3]) {
        let status = d.stop(signal).unwrap();
        if signal == libc::SIGTERM {
            assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
        }
        wait_progress(&all, 5, "while the daemon is down");
        d.restart().unwrap();
        wait_progress(&all, 5, "after the restart");
    }
    for e in traffic.exchanges {
        let n = e.finish().expect("no exchange failed across the restarts");
        assert!(n > 30, "{n} exchanges");
    }
    // A new connection works too (the echo server serves one at a time), and the daemon
    // still knows its container.
    netd_tests::echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    assert!(d.cli_ok(&["ps"]).unwrap().contains("web"));
}

/// The XDP mode attached to the node's uplink, as the kernel reports it.
fn xdp_attached(sb: &Sandbox) -> &'static str {
    let out = sb
        .node
        .exec(&["ip", "-j", "link", "show", "dev", Sandbox::UPLINK])
        .unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // XDP_ATTACHED_DRV = 1, XDP_ATTACHED_SKB = 2 (if_link.h).
    match links[0]["xdp"]["mode"].as_u64() {
        None => "off",
        Some(1) => "native",
        Some(2) => "generic",
        Some(other) => panic!("XDP attached in mode {other}"),
    }
}

#[test]
fn switching_xdp_and_the_fast_path_across_restarts_cuts_no_connection() {
    require_root();
    let sb = Sandbox::new("rx").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let traffic = Traffic::start(&sb, &d);
    let all: Vec<&Exchange> = traffic.exchanges.iter().collect();
    wait_progress(&all, 5, "before any restart");

    for (xdp, fast_path) in [
        ("generic", "off"),
        ("off", "on"),
        ("native", "off"),
        ("native", "on"),
        ("off", "off"),
    ] {
        d.stop(libc::SIGTERM).unwrap();
        d.restart_with(&[("--xdp", xdp), ("--fast-path", fast_path)])
            .unwrap();
        let info = d.info().unwrap();
        assert_eq!(info["xdp"], xdp, "{info}");
        assert_eq!(info["fast_path"], fast_path, "{info}");
        assert_eq!(xdp_attached(&sb), xdp, "what the kernel has attached");
        wait_progress(
            &all,
            5,
            &format!("after a restart with --xdp {xdp} --fast-path {fast_path}"),
        );
    }
    for e in traffic.exchanges {
        e.finish().expect("no exchange failed across the restarts");
    }
}

#[test]
fn a_pinned_map_of_another_geometry_is_refused_and_old_versions_are_dropped() {
    require_root();
    let sb = Sandbox::new("rv").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.stop(libc::SIGTERM).unwrap();
    let bpf = d.dir.join("bpf");

    // A flow table of another size: refused, naming the map and the way out.
    let other = Daemon::command_line_with(&d, &["--flow-table-size", "1024"]);
    let out = std::process::Command::new("ip")
        .args(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NETD_FLOWS_V2") && err.contains("--flow-table-size"),
        "{err}"
    );

    // A map of an older layout version is removed at start.
    let pinned = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(bpf.join("NETD_PORTS_V0"))
        .args([
            "type",
            "hash",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "8",
            "name",
            "NETD_PORTS_V0",
        ])
        .status()
        .unwrap();
    assert!(pinned.success());
    // The previous layout's flow table is adopted (its flows copied over), not dropped.
    let flows_v1 = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(bpf.join("NETD_FLOWS_V1"))
        .args(["type", "hash", "key", "16", "value", "40", "entries", "64"])
        .args(["name", "NETD_FLOWS_V1"])
        .status()
        .unwrap();
    assert!(flows_v1.success());
    d.restart().unwrap();
    assert!(!bpf.join("NETD_PORTS_V0").exists());
    assert!(d.log().contains("from another layout version"));
    assert!(!bpf.join("NETD_FLOWS_V1").exists());
    assert!(
        d.log().contains("adopted 0 flows of NETD_FLOWS_V1"),
        "{}",
        d.log()
    );
}
