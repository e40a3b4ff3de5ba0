//! Bad `netd run` input gets Docker's error, exit code 1, and changes nothing.

use netd_tests::{Daemon, Sandbox, require_root};

#[test]
fn bad_run_input_names_the_problem_and_leaves_nothing() {
    require_root();
    let sb = Sandbox::new("re").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.run_idle_container("web", &["8080:80"]).unwrap();
    let links_before = String::from_utf8(sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap();

    let cases: &[(&[&str], &str)] = &[
        (&["-p", "8080:80/foo"], "invalid proto: foo"),
        (&["-p", "99999:80"], "invalid hostPort: 99999"),
        (&["-p", "8080:80x"], "invalid containerPort: 80x"),
        (
            &["-p", "localhost:8080:80"],
            "invalid IP address: localhost",
        ),
        (
            &["-p", "8080:81"],
            "Bind for 0.0.0.0:8080 failed: port is already allocated",
        ),
        (
            &["--name", "web"],
            "The container name \"web\" is already in use",
        ),
        (&["--network", "nope"], "network nope not found"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        if !args.contains(&"--name") {
            all.extend(["--name", "other"]);
        }
        all.extend(["--", "sleep", "infinity"]);
        let out = d.cli(&all).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(
            err.contains(expected),
            "{all:?}: expected {expected:?} in {err:?}"
        );
    }
    let links_after = String::from_utf8(sb.node.ip(&["-o", "link"]).unwrap().stdout).unwrap();
    assert_eq!(
        links_before.lines().count(),
        links_after.lines().count(),
        "no link left behind"
    );
    let ps = d.cli_ok(&["ps", "-a"]).unwrap();
    assert_eq!(ps.lines().count(), 2, "only web is listed: {ps}");
}
