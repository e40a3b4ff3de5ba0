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

/// What bash offers after `words` (the last one being completed), through the script
/// `netd completion bash` prints.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = Command::new(netd_bin())
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let program = format!(
        "{}\nCOMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; _netd netd '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        String::from_utf8_lossy(&script.stdout),
        words.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn shells_complete_commands_and_flags() {
    assert_eq!(bash_completes(&["netd", "netw"]), ["network"]);
    let commands = bash_completes(&["netd", ""]);
    assert!(commands.iter().any(|w| w == "completion"), "{commands:?}");
    assert!(
        !commands
            .iter()
            .any(|w| w == "manpages" || w == "netns-holder"),
        "hidden commands are not offered: {commands:?}"
    );
    let create = bash_completes(&["netd", "network", "create", "--"]);
    for flag in ["--driver", "--subnet", "--internal", "--attachable"] {
        assert!(create.iter().any(|w| w == flag), "{flag}: {create:?}");
    }
    assert_eq!(bash_completes(&["netd", "monitor", "--ty"]), ["--type"]);
    let daemon = bash_completes(&["netd", "daemon", "--metr"]);
    assert_eq!(daemon, ["--metrics-addr"]);
    for (shell, first) in [("zsh", "#compdef netd"), ("fish", "complete -c netd")] {
        let out = Command::new(netd_bin())
            .args(["completion", shell])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(first),
            "{shell}: {text}"
        );
    }
    let bad = Command::new(netd_bin())
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("[possible values: bash, zsh, fish]"));
}

#[test]
fn man_pages_cover_every_command() {
    let dir = std::env::temp_dir().join(format!("netd-man-{}", std::process::id()));
    let out = Command::new(netd_bin())
        .arg("manpages")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "netd.1",
        "netd-run.1",
        "netd-daemon.1",
        "netd-network-create.1",
        "netd-node-ls.1",
        "netd-completion.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page}: {pages:?}");
    }
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("help") || p.contains("holder") || p.contains("manpages")),
        "no page for help or hidden commands: {pages:?}"
    );
    let create = std::fs::read_to_string(dir.join("netd-network-create.1")).unwrap();
    assert!(create.contains(".TH netd-network-create 1"), "{create}");
    assert!(create.contains("\\-\\-subnet"), "{create}");
    let _ = std::fs::remove_dir_all(&dir);
}
