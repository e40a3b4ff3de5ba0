//! What the daemon writes to disk: the state and container logs are private to root
//! (also outside systemd, whose StateDirectoryMode would otherwise be all that protects
//! them), commands still create files with the usual umask, and logs are capped, go with
//! their container, and never carry an older container's output.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use netd_tests::{Daemon, Sandbox, require_root};

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn state_and_logs_are_private_and_commands_keep_umask_022() {
    require_root();
    let sb = Sandbox::new("fm").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let state = d.dir.join("state");
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--",
        "sh",
        "-c",
        "umask; touch /tmp/netd-umask-probe-$$ && stat -c %a /tmp/netd-umask-probe-$$ && rm /tmp/netd-umask-probe-$$; sleep infinity",
    ])
    .unwrap();
    let log = state.join("logs/web.log");
    wait_for("the command ran", Duration::from_secs(5), || {
        fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 2)
    });
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("state.json")), 0o600);
    assert_eq!(mode(&state.join("lock")), 0o600);
    assert_eq!(mode(&state.join("logs")), 0o700);
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(&d.socket), 0o660);
    let out = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        ["0022", "644"],
        "the command's umask and a file it made"
    );
}

#[test]
fn logs_rotate_past_their_cap_and_go_with_the_container() {
    require_root();
    let sb = Sandbox::new("fr").unwrap();
    let d =
        Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--conntrack-gc-interval", "1"]).unwrap();
    let logs = d.dir.join("state/logs");
    // 11 MB, over the 10 MiB cap; then, once rotated, a line more.
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--",
        "sh",
        "-c",
        "head -c 11000000 /dev/zero | tr '\\0' x; echo; while [ -s /proc/self/fd/1 ]; do sleep 0.2; done; echo after; sleep infinity",
    ])
    .unwrap();
    let log = logs.join("chatty.log");
    let previous = logs.join("chatty.log.1");
    wait_for("rotated", Duration::from_secs(20), || previous.exists());
    wait_for("written on", Duration::from_secs(10), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("after"))
    });
    assert_eq!(fs::metadata(&previous).unwrap().len(), 10 << 20);
    assert_eq!(mode(&previous), 0o600);
    // The command wrote on at the start of the emptied log, not after a hole.
    assert_eq!(fs::read_to_string(&log).unwrap(), "after\n");

    d.cli_ok(&["rm", "-f", "chatty"]).unwrap();
    assert!(!log.exists() && !previous.exists(), "the logs went with it");
}

#[test]
fn a_reused_name_starts_a_fresh_log() {
    require_root();
    let sb = Sandbox::new("fn").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let log = d.dir.join("state/logs/web.log");
    d.cli_ok(&["run", "-d", "--name", "web", "--", "echo", "first"])
        .unwrap();
    wait_for("first ran", Duration::from_secs(5), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("first"))
    });
    d.cli_ok(&["rm", "web"]).unwrap();
    assert!(!log.exists());
    // Even a log nothing removed (left by an older netd) does not carry over.
    fs::write(&log, "stale\n").unwrap();
    fs::write(log.with_extension("log.1"), "staler\n").unwrap();
    d.cli_ok(&["run", "-d", "--name", "web", "--", "echo", "second"])
        .unwrap();
    wait_for("second ran", Duration::from_secs(5), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("second"))
    });
    assert_eq!(fs::read_to_string(&log).unwrap(), "second\n");
    assert!(!log.with_extension("log.1").exists());
}
