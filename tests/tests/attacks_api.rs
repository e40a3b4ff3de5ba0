//! Attacks on the daemon's API and its inputs, each named after what it tries: clients
//! that send too much, too slowly, or hang up half-way; too many connections; namespace
//! paths that are not what they seem; names that smuggle URL syntax. Each was seen to
//! hurt netd once (security review, findings M3-M5, L1-L3, L8); each test fails on the
//! code before its fix.

use std::{
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{Daemon, Netns, Sandbox, daemon::netd_bin, require_root, unique_name};
use serde_json::Value;

fn connect(d: &Daemon) -> UnixStream {
    UnixStream::connect(&d.socket).unwrap()
}

/// Send `raw` on a new connection and read the answer until the daemon closes it (each
/// raw request asks for `Connection: close`), or `patience` passes.
fn exchange(d: &Daemon, raw: &[u8], patience: Duration) -> String {
    let mut s = connect(d);
    s.set_read_timeout(Some(patience)).unwrap();
    // The daemon may answer (413) before reading all of a large body, and close.
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The daemon's CPU time so far, in clock ticks (utime + stime of all its threads).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn log_size(d: &Daemon) -> u64 {
    fs::metadata(d.dir.join("daemon.log")).map_or(0, |m| m.len())
}

fn node_links(sb: &Sandbox) -> String {
    String::from_utf8(sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap()
}

/// The names of the node's links.
fn node_link_names(sb: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = node_links(sb)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn containers(d: &Daemon) -> Vec<Value> {
    let ps: Value =
        serde_json::from_str(&d.cli_ok(&["ps", "-a", "--format", "json"]).unwrap()).unwrap();
    ps.as_array().unwrap().clone()
}

/// Holders, veths and map entries all belong to recorded containers, each whole.
fn nothing_leaked(sb: &Sandbox, d: &Daemon) -> Result<(), String> {
    let all = containers(d);
    let endpoints: usize = all
        .iter()
        .map(|c| c["endpoints"].as_array().unwrap().len())
        .sum();
    let ports: usize = all
        .iter()
        .map(|c| c["ports"].as_array().unwrap().len())
        .sum();
    let links = node_links(sb);
    let info: Value = serde_json::from_str(&d.cli_ok(&["info"]).unwrap()).unwrap();
    let seen = (
        d.holders(),
        links.matches(": ndv").count(),
        links.matches(": ndp").count(),
        info["map_entries"]["endpoints"].as_u64().unwrap() as usize,
        ["published_ports", "published_ports6"]
            .iter()
            .map(|t| info["map_entries"][t].as_u64().unwrap() as usize)
            .sum(),
    );
    let want = (all.len(), endpoints, 0, endpoints, ports);
    if seen == want {
        Ok(())
    } else {
        Err(format!(
            "(holders, veths, peer veths, endpoint entries, port entries) = {seen:?}, the {} recorded containers account for {want:?}\n{links}",
            all.len()
        ))
    }
}

/// `netd ARGS` in the node, killed (and failed) if it has not finished within `limit`.
fn cli_within(d: &Daemon, args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = cli_child(d, args);
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netd {} still running after {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn cli_child(d: &Daemon, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &d.node])
        .arg(netd_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .env("NETD_TEST_TAG", &d.node)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_huge_body_gets_413_and_costs_no_memory() {
    require_root();
    let sb = Sandbox::new("ab").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let pid = d.pid().unwrap();
    let rss = || -> u64 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss();

    // Declared: refused before a byte of it is read.
    let huge = 256 << 20;
    let head = format!(
        "POST /v1/networks HTTP/1.1\r\nHost: netd\r\nConnection: close\r\nContent-Length: {huge}\r\n\r\n"
    );
    let answer = exchange(&d, head.as_bytes(), Duration::from_secs(10));
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(answer.contains("the limit is 1048576 bytes"), "{answer}");

    // Chunked, no length given: cut off past the limit while it streams in.
    let mut s = connect(&d);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/networks HTTP/1.1\r\nHost: netd\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if s.write_all(&frame).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert_eq!(status(&answer), 413, "after {sent} bytes: {answer}");
    assert!(
        sent < 32 << 20,
        "the daemon read {sent} bytes before refusing"
    );
    // A body just under the limit is read (and judged on its content).
    let body = format!(
        "{{\"name\": \"n\", \"pad\": \"{}\"}}",
        "x".repeat(1_000_000)
    );
    let answer = exchange(&d, &post("/v1/networks", &body), Duration::from_secs(10));
    assert_ne!(status(&answer), 413, "{answer}");

    let grown = rss().saturating_sub(before);
    assert!(grown < 64 << 10, "RSS grew by {grown} kB");
    assert!(d.cli_ok(&["info"]).is_ok());
}

#[test]
fn slow_and_silent_clients_are_cut_off() {
    require_root();
    let sb = Sandbox::new("as").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let t0 = Instant::now();
    let silent = connect(&d);
    let mut half_headers = connect(&d);
    half_headers
        .write_all(b"POST /v1/containers HTTP/1.1\r\nHost: netd\r\n")
        .unwrap();
    let mut half_body = connect(&d);
    half_body
        .write_all(
            b"POST /v1/networks HTTP/1.1\r\nHost: netd\r\nContent-Length: 100\r\n\r\n{\"name\"",
        )
        .unwrap();
    // Each is closed by the daemon (read returns), not left open for ever.
    let closed_after = |mut s: UnixStream| {
        std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
            let mut out = Vec::new();
            let result = s.read_to_end(&mut out);
            (
                result.map_err(|e| e.kind()),
                t0.elapsed(),
                String::from_utf8_lossy(&out).into_owned(),
            )
        })
    };
    let waits = [
        closed_after(silent),
        closed_after(half_headers),
        closed_after(half_body),
    ];
    // Meanwhile the API answers others.
    assert!(d.cli_ok(&["info"]).is_ok());
    let [silent, half_headers, half_body] = waits.map(|t| t.join().unwrap());
    for (what, (result, after, _)) in [("silent", &silent), ("half headers", &half_headers)] {
        assert!(result.is_ok(), "{what}: {result:?} after {after:?}");
        assert!(
            *after >= Duration::from_secs(9) && *after < Duration::from_secs(15),
            "{what}: closed after {after:?}, the header timeout is 10 s"
        );
    }
    let (result, after, answer) = half_body;
    assert!(result.is_ok(), "half body: {result:?} after {after:?}");
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(answer.contains("did not arrive within 20s"), "{answer}");
    assert!(
        after >= Duration::from_secs(19) && after < Duration::from_secs(26),
        "half body answered after {after:?}"
    );
}

#[test]
fn idle_connections_are_bounded() {
    require_root();
    let sb = Sandbox::new("ac").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let pid = d.pid().unwrap();
    let before = open_fds(pid);
    let held: Vec<UnixStream> = (0..400).map(|_| connect(&d)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let during = open_fds(pid);
    assert!(
        during <= before + 256 + 4,
        "{before} descriptors before, {during} with 400 idle connections"
    );
    assert!(
        d.log()
            .contains("256 connections open, the most served at once"),
        "{}",
        d.log()
    );
    drop(held);
    let out = cli_within(&d, &["info"], Duration::from_secs(15));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn emfile_does_not_spin_or_flood_the_log() {
    require_root();
    let sb = Sandbox::new("ae").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let pid = d.pid().unwrap();
    // A file table nearly full: a few connections and the next accept fails with EMFILE.
    let limit = open_fds(pid) + 8;
    let set = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(set.success());
    let held: Vec<UnixStream> = (0..100).map(|_| connect(&d)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let (ticks, log) = (cpu_ticks(pid), log_size(&d));
    std::thread::sleep(Duration::from_secs(5));
    let spent = cpu_ticks(pid) - ticks;
    let logged = log_size(&d) - log;
    let text = d.log();
    assert!(
        text.contains("Too many open files"),
        "the accept failures are reported: {text}"
    );
    // 100 ticks a second is a whole CPU; the log may get a line or two.
    assert!(spent < 50, "{spent} ticks of CPU in 5 s");
    assert!(logged < 2048, "{logged} bytes of log in 5 s");
    drop(held);
    let out = cli_within(&d, &["info"], Duration::from_secs(20));
    assert!(
        out.status.success(),
        "the daemon answers again once connections close: {out:?}"
    );
}

#[test]
fn a_client_hanging_up_mid_run_leaks_nothing() {
    require_root();
    let sb = Sandbox::new("ah").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    // Ctrl-C on `netd run` at different points of the daemon's work.
    for (i, ms) in [0u64, 2, 5, 10, 20, 30, 45, 60, 90, 120]
        .into_iter()
        .enumerate()
    {
        let body = format!(
            r#"{{"name":"c{i}","network":"bridge","publish":["{}:80"],"cmd":["sleep","infinity"]}}"#,
            8100 + i
        );
        let mut s = connect(&d);
        s.write_all(&post("/v1/containers", &body)).unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        drop(s);
    }
    // Every change started runs to its end: poll until the last is done.
    let deadline = Instant::now() + Duration::from_secs(15);
    let verdict = loop {
        let verdict = nothing_leaked(&sb, &d);
        if verdict.is_ok() || Instant::now() > deadline {
            break verdict;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    verdict.unwrap();
    let all = containers(&d);
    assert!(!all.is_empty(), "the runs finished");
    for c in &all {
        d.cli_ok(&["rm", "-f", c["name"].as_str().unwrap()])
            .unwrap();
    }
    nothing_leaked(&sb, &d).unwrap();
}

#[test]
fn sigterm_lets_a_started_run_finish() {
    require_root();
    let sb = Sandbox::new("at").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    // A slow change: twenty thousand published ports, written to the data path after
    // the container's namespace holder exists. SIGTERM comes as that holder appears.
    let run = cli_child(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "slow",
            "-p",
            "20000-39999:20000-39999",
            "--",
            "sleep",
            "infinity",
        ],
    );
    // Another client is still sending its request when the stop comes.
    let create = r#"{"name":"late","subnet":"10.88.0.0/24"}"#;
    let mut late = connect(&d);
    late.write_all(
        format!(
            "POST /v1/networks HTTP/1.1\r\nHost: netd\r\nContent-Length: {}\r\n\r\n{}",
            create.len(),
            &create[..10]
        )
        .as_bytes(),
    )
    .unwrap();
    wait_for("the run started", Duration::from_secs(60), || {
        d.holders() == 1
    });
    // SAFETY: our own child's pid (the daemon, exec'ed in place by `ip netns exec`).
    unsafe { libc::kill(d.pid().unwrap() as i32, libc::SIGTERM) };
    wait_for("the daemon is stopping", Duration::from_secs(10), || {
        d.log().contains("waiting for 1 request(s) in flight")
    });
    assert!(!d.socket.exists(), "no new client gets in");
    late.write_all(&create.as_bytes()[10..]).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = late.read_to_string(&mut answer);
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(answer.contains("the netd daemon is stopping"), "{answer}");
    // Signal 0: no second signal (that one would stop at once); wait for the exit.
    let status = d.stop(0).unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the client got its answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "{status}");
    // What the run made is whole and recorded, with the daemon gone; the late request
    // changed nothing.
    let state: Value =
        serde_json::from_str(&fs::read_to_string(d.dir.join("state/state.json")).unwrap()).unwrap();
    assert!(state["networks"].get("late").is_none(), "{state}");
    let slow = &state["containers"]["slow"];
    // 20,000 ports on both families (NAT46 publishes [::] for its IPv4 address).
    assert_eq!(slow["ports"].as_array().unwrap().len(), 40000, "{state}");
    assert_eq!(d.holders(), 1);
    let links = node_links(&sb);
    assert_eq!(links.matches(": ndv").count(), 1, "{links}");
    assert_eq!(links.matches(": ndp").count(), 0, "{links}");

    d.restart().unwrap();
    nothing_leaked(&sb, &d).unwrap();
    assert!(!d.log().contains("unfinished container"), "{}", d.log());
}

#[test]
fn ps_with_thousands_of_published_ports_prints_one_range() {
    require_root();
    let sb = Sandbox::new("ap").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.run_idle_container(
        "wide",
        &["20000-29999:20000-29999", "127.0.0.1:5353:53/udp"],
    )
    .unwrap();
    let ps = d.cli_ok(&["ps"]).unwrap();
    let row = ps.lines().find(|l| l.contains("wide")).unwrap();
    assert!(
        row.ends_with(
            "0.0.0.0:20000-29999->20000-29999/tcp, [::]:20000-29999->20000-29999/tcp, \
             127.0.0.1:5353->53/udp"
        ),
        "{ps}"
    );
}

#[test]
fn a_url_with_a_percent_before_a_multibyte_character_is_answered() {
    require_root();
    let sb = Sandbox::new("au").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let answer = exchange(
        &d,
        "GET /v1/containers/%a\u{e9} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n"
            .as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(status(&answer), 404, "{answer}");
    assert!(answer.contains("No such container: %a\u{e9}"), "{answer}");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn a_name_holding_a_query_does_not_force_remove() {
    require_root();
    let sb = Sandbox::new("aq").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.run_idle_container("web", &[]).unwrap();
    let out = d.cli(&["rm", "web?force=1"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No such container: web?force=1"), "{err}");
    let out = d.cli(&["network", "rm", "../containers/web"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let ps = d.cli_ok(&["ps"]).unwrap();
    assert!(ps.contains("web") && ps.contains("running"), "{ps}");
}

#[test]
fn bad_network_requests_leave_no_bridge() {
    require_root();
    let sb = Sandbox::new("an").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let links_before = node_link_names(&sb);
    for i in 0..3 {
        let out = d
            .cli(&[
                "network",
                "create",
                "-o",
                "com.netd.bridge.name=br%d",
                &format!("pct{i}"),
            ])
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("invalid option com.netd.bridge.name \"br%d\": '%' is not allowed"),
            "{err}"
        );
    }
    for (args, expected) in [
        (
            ["-o", "com.netd.bridge.name=ndvx"],
            "names starting with ndv are netd's own veths",
        ),
        (
            ["-o", "com.netd.bridge.name=br\u{1}"],
            "'\\u{1}' is not allowed",
        ),
        (
            ["--subnet", "0.0.0.0/8"],
            "invalid --subnet 0.0.0.0/8: it overlaps 0.0.0.0/8, reserved",
        ),
        (
            ["--subnet", "240.0.0.0/24"],
            "invalid --subnet 240.0.0.0/24: it overlaps 240.0.0.0/4, reserved",
        ),
        (
            ["--subnet", "169.254.0.0/16"],
            "it overlaps 169.254.0.0/16, reserved for link-local",
        ),
    ] {
        let mut all = vec!["network", "create"];
        all.extend(args);
        all.push("bad");
        let out = d.cli(&all).unwrap();
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{all:?}: {err}");
    }
    assert_eq!(node_link_names(&sb), links_before, "no bridge left behind");
    let networks = d.cli_ok(&["network", "ls"]).unwrap();
    assert_eq!(networks.lines().count(), 2, "only netd0: {networks}");
}

#[test]
fn every_change_is_logged_with_the_callers_uid_and_pid() {
    use std::os::unix::process::CommandExt;
    require_root();
    let sb = Sandbox::new("ag").unwrap();
    // 65534: nobody / nogroup, a member of --socket-group.
    let d = Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--socket-group", "65534"]).unwrap();
    let as_nobody = |args: &[&str]| {
        let child = Command::new(netd_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        (pid, child.wait_with_output().unwrap())
    };
    let (pid, out) = as_nobody(&["network", "create", "--subnet", "10.77.0.0/24", "mine"]);
    assert!(out.status.success(), "{out:?}");
    let log = d.log();
    assert!(
        log.contains(&format!("API POST /v1/networks by uid 65534 pid {pid}")),
        "{log}"
    );
    // A refused change is logged with its answer.
    let (pid, out) = as_nobody(&["network", "rm", "netd0"]);
    assert_eq!(out.status.code(), Some(1));
    let log = d.log();
    assert!(
        log.contains(&format!(
            "API DELETE /v1/networks/netd0 by uid 65534 pid {pid}: 403 Forbidden: netd0 is a pre-defined network"
        )),
        "{log}"
    );
    // Reads are not changes.
    let (_, out) = as_nobody(&["ps"]);
    assert!(out.status.success());
    assert!(!d.log().contains("API GET"), "{}", d.log());
}

/// A scratch directory for the files a test makes (a FIFO, a symlink, mount points),
/// unmounted and removed on drop.
struct Scratch {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = PathBuf::from(format!("/run/netd-test-{}", unique_name(tag)));
        fs::create_dir_all(&dir).unwrap();
        Scratch {
            dir,
            mounts: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Bind-mount `source` (a namespace file) on a new file in /run/netns, the shared
    /// mount `ip netns` keeps (a mount elsewhere would not reach the daemon's mount
    /// namespace, which `ip netns exec` made private).
    fn bind(&mut self, source: &str, name: &str) -> PathBuf {
        let target = PathBuf::from(format!("/run/netns/{}-{name}", unique_name("scratch")));
        fs::write(&target, b"").unwrap();
        run_ok("mount", &["--bind", source, target.to_str().unwrap()]);
        self.mounts.push(target.clone());
        target
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
            let _ = fs::remove_file(m);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process of ours that keeps a namespace inspectable whatever its path becomes;
/// killed on drop.
struct Resident(Child);

impl Resident {
    fn in_netns(ns: &Netns) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Resident(child)
    }

    /// `ip ARGS` inside its namespace.
    fn ip(&self, args: &[&str]) -> String {
        let net = format!("--net=/proc/{}/ns/net", self.0.id());
        let mut all = vec![net.as_str(), "ip"];
        all.extend_from_slice(args);
        run_ok("nsenter", &all)
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn refused(d: &Daemon, args: &[&str], expected: &str) {
    let out = cli_within(d, args, Duration::from_secs(15));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "netd {}: {err}", args.join(" "));
    assert!(
        err.contains(expected),
        "netd {}: expected {expected:?} in {err:?}",
        args.join(" ")
    );
}

#[test]
fn a_fifo_netns_path_does_not_hang_the_api() {
    require_root();
    let sb = Sandbox::new("af").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let scratch = Scratch::new("af");
    let fifo = scratch.path("fifo");
    run_ok("mkfifo", &[fifo.to_str().unwrap()]);
    let fifo = fifo.to_str().unwrap();
    let not_a_namespace = "not a namespace file";
    refused(
        &d,
        &["run", "-d", "--netns", fifo, "--", "sleep", "1"],
        &format!("invalid --netns {fifo}: {not_a_namespace}"),
    );
    // Devices are never opened for real either (no side effect, no controlling tty).
    for path in ["/dev/null", "/dev/tty", "/etc/hostname"] {
        refused(
            &d,
            &["create", "--netns", path],
            &format!("invalid --netns {path}: {not_a_namespace}"),
        );
    }
    let out = cli_within(&d, &["ps", "-a"], Duration::from_secs(5));
    assert!(out.status.success(), "the API still answers");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn a_repointed_symlink_never_reaches_the_node_namespace() {
    require_root();
    let sb = Sandbox::new("ay").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let node_addrs =
        || String::from_utf8(sb.node.ip(&["-o", "-4", "addr"]).unwrap().stdout).unwrap();
    let mut scratch = Scratch::new("ay");
    let victim = Netns::new(&unique_name("ayv")).unwrap();
    let link = scratch.path("link");
    std::os::unix::fs::symlink(victim.path(), &link).unwrap();
    let link = link.to_str().unwrap().to_string();
    refused(
        &d,
        &["create", "--name", "tt", "--netns", &link],
        &format!("invalid --netns {link}: a symbolic link is on the path"),
    );
    // A symbolic link among the directories is resolved by the CLI, as the user means it.
    let via_var_run = format!("/var/run/netns/{}", victim.name);
    d.cli_ok(&["create", "--name", "vr", "--netns", &via_var_run])
        .unwrap();
    let vr: Value = serde_json::from_str(&d.cli_ok(&["inspect", "vr"]).unwrap()).unwrap();
    assert_eq!(vr[0]["netns_path"], format!("/run/netns/{}", victim.name));
    d.cli_ok(&["rm", "vr"]).unwrap();

    // The same attack with a bind mount, re-pointed at the node once attached.
    let theirs = Netns::new(&unique_name("ayt")).unwrap();
    let resident = Resident::in_netns(&theirs);
    let path = scratch.bind(theirs.path().to_str().unwrap(), "theirs");
    let path = path.to_str().unwrap().to_string();
    d.cli_ok(&["network", "create", "--subnet", "10.10.2.0/24", "netb"])
        .unwrap();
    d.cli_ok(&["create", "--name", "tt", "--netns", &path])
        .unwrap();
    run_ok("umount", &["-l", &path]);
    let daemon_ns = format!("/proc/{}/ns/net", d.pid().unwrap());
    run_ok("mount", &["--bind", &daemon_ns, &path]);
    let before = node_addrs();
    d.cli_ok(&["network", "connect", "netb", "tt"]).unwrap();
    let after = node_addrs();
    assert!(
        !after.contains("eth1") && !after.contains("eth0"),
        "a container interface in the node: {after}"
    );
    let netb_addrs: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("inet 10.10.2."))
        .collect();
    assert!(
        netb_addrs.len() == 1 && netb_addrs[0].contains("inet 10.10.2.1/24"),
        "only the gateway of netb is on the node: {before} -> {after}"
    );
    let inside = resident.ip(&["-o", "-4", "addr"]);
    assert!(
        inside.contains("eth1") && inside.contains("10.10.2."),
        "the interface went where the container is: {inside}"
    );
    // `netd exec` follows the daemon: it refuses a path that now names another namespace.
    let out = d.cli(&["exec", "tt", "--", "true"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no longer the container's network namespace"),
        "{out:?}"
    );

    // After a restart the path is opened again and found to be another namespace: the
    // container is gone, and nothing of it went into the node.
    d.stop(libc::SIGTERM).unwrap();
    d.restart().unwrap();
    let log = d.log();
    assert!(
        log.contains("container tt: its network namespace is gone")
            && log.contains("now names another network namespace"),
        "{log}"
    );
    assert!(d.cli(&["inspect", "tt"]).unwrap().status.code() == Some(1));
    let links = node_links(&sb);
    assert!(
        !links.contains("eth0") && !links.contains("eth1"),
        "{links}"
    );
}

#[test]
fn namespaces_netd_already_manages_are_refused() {
    require_root();
    let sb = Sandbox::new("am").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let mut scratch = Scratch::new("am");
    let web = d.run_idle_container("web", &[]).unwrap();
    let holder_ns = web.netns.to_str().unwrap().to_string();
    let links_before = node_link_names(&sb);

    // A holder's namespace, by its /proc path or bind-mounted elsewhere.
    refused(
        &d,
        &["create", "--netns", &holder_ns],
        "that namespace is already attached to a container (web)",
    );
    let elsewhere = scratch.bind(&holder_ns, "holder");
    refused(
        &d,
        &["create", "--netns", elsewhere.to_str().unwrap()],
        "that namespace is already attached to a container (web)",
    );
    // An external one already attached, under another path.
    let theirs = Netns::new(&unique_name("amx")).unwrap();
    d.cli_ok(&[
        "create",
        "--name",
        "ext",
        "--netns",
        theirs.path().to_str().unwrap(),
    ])
    .unwrap();
    let again = scratch.bind(theirs.path().to_str().unwrap(), "theirs");
    refused(
        &d,
        &["create", "--netns", again.to_str().unwrap()],
        "that namespace is already attached to a container (ext)",
    );
    // The node's own.
    let node = format!("/proc/{}/ns/net", d.pid().unwrap());
    refused(
        &d,
        &["create", "--netns", &node],
        "that is the node's own network namespace",
    );
    // Other kernel links, and namespaces of other kinds.
    let uts = format!("/proc/{}/ns/uts", d.pid().unwrap());
    refused(
        &d,
        &["create", "--netns", &uts],
        "a symbolic link is on the path",
    );
    let uts_file = scratch.bind(&uts, "uts");
    refused(
        &d,
        &["create", "--netns", uts_file.to_str().unwrap()],
        "a UTS namespace, not a network namespace",
    );
    refused(
        &d,
        &["create", "--netns", "/proc/4194304/ns/net"],
        "no process 4194304",
    );

    let ps = d.cli_ok(&["ps", "-a"]).unwrap();
    assert_eq!(ps.lines().count(), 3, "web and ext only: {ps}");
    let mut links_after = node_link_names(&sb);
    links_after.retain(|l| !l.starts_with("ndv"));
    let mut want = links_before.clone();
    want.retain(|l| !l.starts_with("ndv"));
    assert_eq!(links_after, want);
    d.cli_ok(&["rm", "-f", "web", "ext"]).unwrap();
}

#[test]
fn cni_keys_that_are_paths_or_split_characters_are_refused() {
    // The daemon trusts no client with the names it derives records and links from: a
    // container ID or interface name that is a path, overlong, or multibyte (cut at a
    // byte count, it would split a character).
    require_root();
    let sb = Sandbox::new("ak").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let before = node_link_names(&sb);
    let pod = Netns::new(&unique_name("akpod")).unwrap();
    let add = |id: &str, ifname: &str| {
        let body = serde_json::json!({
            "network": "netd0",
            "container_id": id,
            "ifname": ifname,
            "netns": pod.path(),
            "cni_network": "x",
        })
        .to_string();
        exchange(
            &d,
            &post("/v1/cni/attachments", &body),
            Duration::from_secs(20),
        )
    };
    for (id, ifname, field) in [
        ("../../../etc/netd-x", "eth0", "CNI_CONTAINERID"),
        (
            "a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "eth0",
            "CNI_CONTAINERID",
        ),
        ("ok", "eth0/../..", "CNI_IFNAME"),
        ("ok", &"i".repeat(70), "CNI_IFNAME"),
        ("ok", "\u{e9}th0", "CNI_IFNAME"),
    ] {
        let answer = add(id, ifname);
        assert_eq!(status(&answer), 400, "{id:?} {ifname:?}: {answer}");
        assert!(answer.contains(field), "{id:?} {ifname:?}: {answer}");
    }
    let del = exchange(
        &d,
        b"DELETE /v1/cni/attachments/netd0/..%2F..%2Fx/eth0 HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(status(&del), 400, "{del}");
    assert_eq!(node_link_names(&sb), before);
    assert!(containers(&d).is_empty());
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
