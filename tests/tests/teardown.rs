//! Teardown tells the truth: what `rm`, `network disconnect` and a rollback could not
//! undo is reported, and the command fails, instead of "removed" while a pinned link
//! stays. The failure is real: the daemon's bpffs is made read-only under it, so that
//! unpinning the endpoint's link fails; the next start removes the leftovers.

use netd_tests::{Daemon, Sandbox, netns::run, require_root};

fn bpffs_read_only(d: &Daemon, read_only: bool) {
    let mode = if read_only {
        "remount,ro"
    } else {
        "remount,rw"
    };
    run("mount", &["-o", mode, &d.dir.join("bpf").to_string_lossy()]).unwrap();
}

fn endpoint_pins(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.dir.join("bpf/links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("endpoint-"))
        .collect()
}

#[test]
fn removal_reports_what_it_could_not_undo_and_the_next_start_removes_it() {
    require_root();
    let sb = Sandbox::new("td").unwrap();
    let mut d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.cli_ok(&["network", "create", "--subnet", "10.10.8.0/24", "extra"])
        .unwrap();
    let web = d.run_idle_container("web", &["8080:80"]).unwrap();
    d.cli_ok(&["network", "connect", "extra", "web"]).unwrap();
    assert_eq!(endpoint_pins(&d).len(), 4, "two endpoints, two links each");

    bpffs_read_only(&d, true);
    let out = d.cli(&["network", "disconnect", "extra", "web"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "disconnect: {err}");
    assert!(
        err.contains("Warning:") && err.contains("unpin link"),
        "{err}"
    );

    let out = d.cli(&["rm", "-f", "web"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "rm: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
    assert!(
        err.contains("Warning:") && err.contains(&format!("endpoint-{}", web.host_veth)),
        "the warning names the link that stays: {err}"
    );
    assert_eq!(
        endpoint_pins(&d).len(),
        4,
        "all four links are still pinned"
    );
    bpffs_read_only(&d, false);

    // What the removals left behind goes at the next start.
    d.stop(libc::SIGTERM).unwrap();
    d.restart().unwrap();
    assert!(endpoint_pins(&d).is_empty(), "{:?}", endpoint_pins(&d));

    // A clean removal says nothing more and succeeds.
    d.run_idle_container("web", &["8080:80"]).unwrap();
    let out = d.cli(&["rm", "-f", "web"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}
