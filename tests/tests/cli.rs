//! The CLI's behaviour without a daemon and with bad input.

use std::process::Command;

use netd_tests::daemon::netd_bin;

#[test]
fn cli_says_when_the_daemon_is_not_running() {
    let out = Command::new(netd_bin())
        .args(["--socket", "/nonexistent/netd.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the netd daemon at /nonexistent/netd.sock"),
        "{err}"
    );
    assert!(
        err.contains("netd daemon"),
        "the message says how to start it: {err}"
    );
}

#[test]
fn socket_can_come_from_the_environment() {
    let out = Command::new(netd_bin())
        .arg("ps")
        .env("NETD_SOCKET", "/nonexistent/env.sock")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/env.sock"));
}
