//! Running the daemon for real: systemd readiness, a clean SIGTERM that leaves the data
//! path attached, one daemon per socket and state directory, and the API socket's access
//! rules.

use std::{
    os::unix::{net::UnixDatagram, process::CommandExt},
    process::Command,
    time::Duration,
};

use netd_tests::{Daemon, Sandbox, daemon::netd_bin, require_root};

#[test]
fn readiness_is_notified_and_sigterm_stops_cleanly_without_detaching() {
    require_root();
    let sb = Sandbox::new("lr").unwrap();
    let notify_path = format!("/run/netd-test-notify-{}.sock", std::process::id());
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = Daemon::start_with_env(
        &sb.node,
        Sandbox::UPLINK,
        &[],
        &[("NOTIFY_SOCKET", &notify_path)],
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        msg.starts_with("READY=1\nSTATUS=serving uplink uplink0"),
        "{msg}"
    );
    // Container processes must not inherit the notification socket.
    d.run_idle_container("ctr", &[]).unwrap();
    let env = d.cli_ok(&["exec", "ctr", "--", "env"]).unwrap();
    assert!(!env.contains("NOTIFY_SOCKET"), "{env}");

    let status = d.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{status}");
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(!d.socket.exists(), "the API socket is removed");
    // The links stay pinned (traffic through them while the daemon is down is the
    // restart test's business).
    let links = d.dir.join("bpf/links");
    let mut pins: Vec<String> = std::fs::read_dir(&links)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pins.sort();
    assert!(
        pins.contains(&"uplink-uplink0-uplink_ingress".to_string()),
        "{pins:?}"
    );
    assert!(
        pins.iter().any(|p| p.starts_with("endpoint-ndv")),
        "{pins:?}"
    );
    for pin in &pins {
        let shown = Command::new("bpftool")
            .args(["link", "show", "pinned"])
            .arg(links.join(pin))
            .output()
            .unwrap();
        assert!(shown.status.success(), "{pin}");
    }
    assert!(d.log().contains("the data path stays attached"));
    let _ = std::fs::remove_file(&notify_path);
}

#[test]
fn a_second_daemon_on_the_same_socket_or_state_is_refused() {
    require_root();
    let sb = Sandbox::new("l2").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let out = Command::new("ip")
        .args(d.command_line_with(&[]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another netd daemon"), "{err}");
    assert!(d.cli_ok(&["info"]).is_ok(), "the first one still serves");
}

#[test]
fn the_socket_admits_root_and_its_group_only() {
    require_root();
    let sb = Sandbox::new("lp").unwrap();
    // 65534: nobody / nogroup.
    let d = Daemon::start_with(&sb.node, Sandbox::UPLINK, &["--socket-group", "65534"]).unwrap();
    let as_user = |uid: u32, gid: u32| {
        Command::new(netd_bin())
            .arg("--socket")
            .arg(&d.socket)
            .arg("info")
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    };
    let out = as_user(65534, 65533);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied on the netd socket"),
        "{err}"
    );
    assert!(
        as_user(65534, 65534).status.success(),
        "a member of --socket-group"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534);
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../netd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "KillMode=process",
        "RuntimeDirectory=netd",
        "StateDirectory=netd",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from netd.service"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("ExecStart=") && l.contains("--metrics-addr 127.0.0.1:")),
        "the packaged unit serves metrics on this host only"
    );
    // systemd-analyze wants the binary it names to exist: point it at this build.
    let copy = std::env::temp_dir().join(format!("netd-verify-{}.service", std::process::id()));
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/netd", netd_bin().to_str().unwrap()),
    )
    .unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            eprintln!("systemd-analyze not installed: only the unit's key lines were checked")
        }
    }
    let _ = std::fs::remove_file(copy);
}
