//! Container lifecycle through the CLI: run, ps, exec, rm.

use netd_tests::{Daemon, Sandbox, require_root};

#[test]
fn exec_runs_inside_the_container_namespace() {
    require_root();
    let sb = Sandbox::new("cx").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let web = d.run_idle_container("web", &[]).unwrap();

    let addrs = d
        .cli_ok(&[
            "exec", "web", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0",
        ])
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/16", web.ip)),
        "eth0 carries the container's address: {addrs}"
    );
    let route = d
        .cli_ok(&["exec", "web", "--", "ip", "route", "show", "default"])
        .unwrap();
    assert!(
        route.contains("via 172.17.0.1 dev eth0"),
        "default route via the gateway: {route}"
    );
    let out = d.cli(&["exec", "web", "--", "sh", "-c", "exit 7"]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "exec returns the command's exit code"
    );
    let out = d.cli(&["exec", "nope", "--", "true"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such container: nope"));
}

#[test]
fn ps_lists_containers_like_docker() {
    require_root();
    let sb = Sandbox::new("cp").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.run_idle_container("web", &["8080:80", "127.0.0.1:5353:53/udp"])
        .unwrap();
    d.cli_ok(&["run", "-d", "--name", "once", "--", "true"])
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));

    let ps = d.cli_ok(&["ps"]).unwrap();
    let lines: Vec<&str> = ps.lines().collect();
    assert!(lines[0].starts_with("CONTAINER ID   NAME"), "{ps}");
    assert_eq!(
        lines.len(),
        2,
        "an exited container is only shown with -a: {ps}"
    );
    assert!(
        lines[1].contains("0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 127.0.0.1:5353->53/udp"),
        "{ps}"
    );
    let all = d.cli_ok(&["ps", "-a"]).unwrap();
    assert!(
        all.lines()
            .any(|l| l.contains("once") && l.contains("exited (0)")),
        "{all}"
    );

    // A running container is only removed with -f, as in Docker.
    let out = d.cli(&["rm", "web"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container is running"));
    d.cli_ok(&["rm", "once"]).unwrap();
    d.cli_ok(&["rm", "-f", "web"]).unwrap();
    assert_eq!(d.cli_ok(&["ps", "-a"]).unwrap().lines().count(), 1);
}
