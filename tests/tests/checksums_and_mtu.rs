//! Checksums survive translation whatever the offload settings, and a container MTU above
//! the uplink's does not break TCP.
//!
//! A veth hands a CHECKSUM_PARTIAL packet to its peer unchecked, and marks a software-
//! checksummed one as verified when the receiver has rx offload on; either way a bad
//! checksum would go unseen. So receivers get `rx off` (they verify), and the forwarding
//! devices after the rewrite get `tx off`, which makes the kernel complete a partial
//! checksum in software right after netd's helpers adjusted it. Under XDP this also shows
//! that partial checksums are left to TC and complete ones translated in XDP.

use netd_tests::{Daemon, EchoServer, Netns, Proto, Sandbox, addr, echo_once, require_root};

fn ethtool(ns: &Netns, dev: &str, setting: &str, value: &str) {
    ns.exec(&["ethtool", "-K", dev, setting, value]).unwrap();
}

fn exec_in(d: &Daemon, name: &str, args: &[&str]) {
    let mut all = vec!["exec", name, "--"];
    all.extend_from_slice(args);
    d.cli_ok(&all).unwrap();
}

#[test]
fn checksums_hold_with_tx_offload_on_and_off() {
    require_root();
    for sender_tx in ["on", "off"] {
        let sb = Sandbox::new("ck").unwrap();
        let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
        let web = d
            .run_idle_container("web", &["8080:80", "5353:53/udp"])
            .unwrap();
        // Senders: the client, the internet host, the container.
        ethtool(&sb.ext, "ext0", "tx", sender_tx);
        ethtool(&sb.inet, "inet0", "tx", sender_tx);
        exec_in(
            &d,
            "web",
            &["ethtool", "-K", "eth0", "tx", sender_tx, "rx", "off"],
        );
        // Forwarders after the rewrite complete partial checksums in software.
        ethtool(&sb.node, Sandbox::UPLINK, "tx", "off");
        ethtool(&sb.node, &web.host_veth, "tx", "off");
        ethtool(&sb.ext, "ext1", "tx", "off");
        // Receivers verify.
        ethtool(&sb.ext, "ext0", "rx", "off");
        ethtool(&sb.inet, "inet0", "rx", "off");

        let _tcp = EchoServer::start(&web.netns, Proto::Tcp, addr(web.ip, 80)).unwrap();
        let _udp = EchoServer::start(&web.netns, Proto::Udp, addr(web.ip, 53)).unwrap();
        let target = addr(Sandbox::INET_ADDR, 9000);
        let _inet_tcp = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();
        let _inet_udp = EchoServer::start(&sb.inet.path(), Proto::Udp, target).unwrap();

        let ctx = format!("sender tx offload {sender_tx}");
        echo_once(&sb.ext.path(), Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).expect(&ctx);
        echo_once(&sb.ext.path(), Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)).expect(&ctx);
        echo_once(&web.netns, Proto::Tcp, target).expect(&ctx);
        echo_once(&web.netns, Proto::Udp, target).expect(&ctx);

        // XDP translates only complete checksums; partial ones (tx offload on, through a
        // veth) are left to TC's helpers.
        if d.info().unwrap()["xdp"] != "off" {
            let (reason, expect) = if sender_tx == "on" {
                ("pass_checksum_partial", "left to TC")
            } else {
                ("dnat_new_flow", "translated in XDP")
            };
            assert!(
                d.counter("UplinkXdp", reason).unwrap() >= 2,
                "{ctx}: TCP and UDP {expect}"
            );
        }
    }
}

#[test]
fn container_mtu_above_the_uplinks_still_carries_tcp() {
    require_root();
    let sb = Sandbox::new("mt").unwrap();
    // The node's link to the router has MTU 1400; the router's other side and the internet
    // host keep 1500, so full 1460-byte segments meet the narrow link in both directions.
    for (ns, dev) in [(&sb.node, Sandbox::UPLINK), (&sb.ext, "ext0")] {
        ns.ip(&["link", "set", dev, "mtu", "1400"]).unwrap();
    }
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    d.run_idle_container("web", &[]).unwrap();
    let link = d
        .cli_ok(&["exec", "web", "--", "ip", "-o", "link", "show", "eth0"])
        .unwrap();
    assert!(
        link.contains("mtu 1500"),
        "the container keeps MTU 1500: {link}"
    );
    let target = addr(Sandbox::INET_ADDR, 9000);
    let _server = EchoServer::start(&sb.inet.path(), Proto::Tcp, target).unwrap();

    let script =
        format!("head -c 20000 /dev/zero | socat -t 5 - TCP:{target},connect-timeout=3 | wc -c");
    let echoed = d
        .cli_ok(&["exec", "web", "--", "sh", "-c", &script])
        .unwrap();

    assert_eq!(
        echoed.trim(),
        "20000",
        "20 KB went out and came back through masquerade"
    );
}

#[test]
fn containers_of_one_network_talk_directly_without_translation() {
    require_root();
    let sb = Sandbox::new("cc").unwrap();
    let d = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
    let a = d.run_idle_container("ca", &[]).unwrap();
    let b = d.run_idle_container("cb", &["8080:80"]).unwrap();
    let server = EchoServer::start(&b.netns, Proto::Tcp, addr(b.ip, 80)).unwrap();

    let local = echo_once(&a.netns, Proto::Tcp, addr(b.ip, 80)).unwrap();

    assert_eq!(
        server.peers(),
        vec![local],
        "b sees a's own address and port"
    );
    assert!(
        d.cli_ok(&["conntrack", "--format", "json"]).unwrap().trim() == "[]",
        "nothing was translated"
    );
}
