//! netd as a CNI plugin: `netd-cni` exec'd as a runtime (a kubelet's containerd, Podman's
//! CNI backend) execs it, with the `CNI_*` environment and a configuration on stdin, for
//! namespaces the test makes as a runtime would (a pod sandbox is a named namespace).
//! What is checked is what a runtime and its users see: the result in the version asked
//! for, the spec's error codes, host ports reachable through the uplink with the client's
//! address kept, and nothing left after `DEL` or `GC`.

use std::{net::Ipv4Addr, path::Path};

use serde_json::{Value, json};

use netd_tests::{
    Daemon, EchoServer, HeldConnection, Netns, Proto, Sandbox, addr,
    cni::{
        Answer, Call, assert_nothing_left, attachments, conf, exec, exec_by, exec_raw, node_links,
    },
    echo::in_netns,
    echo_fails, echo_once, require_root, unique_name,
};

/// The node with netd and a network `n1`.
struct Bed {
    netd: Daemon,
    sb: Sandbox,
}

impl Bed {
    fn new(prefix: &str) -> Bed {
        Bed::with_network(prefix, &["n1"])
    }

    /// The node with netd and the network `netd network create ARGS` makes.
    fn with_network(prefix: &str, args: &[&str]) -> Bed {
        require_root();
        let sb = Sandbox::new(prefix).unwrap();
        let netd = Daemon::start(&sb.node, Sandbox::UPLINK).unwrap();
        netd.cli_ok(&[&["network", "create"], args].concat())
            .unwrap();
        Bed { netd, sb }
    }

    fn conf(&self, version: &str) -> Value {
        conf(version, "n1", &self.netd.socket)
    }

    fn call(&self, call: &Call, stdin: &Value) -> Answer {
        exec(&self.netd, call, stdin).unwrap()
    }

    /// `ADD` of `pod` as container `id`, publishing `ports` (hostPort, containerPort,
    /// protocol); the result.
    fn add(&self, id: &str, pod: &Netns, ports: &[(u16, u16, &str)]) -> Value {
        let mut c = self.conf("1.0.0");
        c["runtimeConfig"] = json!({ "portMappings": port_mappings(ports) });
        self.call(&Call::new("ADD", id, Some(&pod.path())), &c)
            .ok()
            .unwrap()
    }

    fn del(&self, id: &str) {
        let c = self.conf("1.0.0");
        self.call(&Call::new("DEL", id, None), &c).ok().unwrap();
    }

    fn attachments(&self) -> Vec<Value> {
        attachments(&self.netd)
    }

    fn node_links(&self) -> Vec<String> {
        node_links(&self.sb.node)
    }

    fn assert_nothing_left(&self) {
        assert_nothing_left(&self.netd, &self.sb.node);
    }
}

fn port_mappings(ports: &[(u16, u16, &str)]) -> Value {
    ports
        .iter()
        .map(|(h, c, p)| json!({ "hostPort": h, "containerPort": c, "protocol": p }))
        .collect()
}

fn pod(prefix: &str) -> Netns {
    Netns::new(&unique_name(prefix)).unwrap()
}

fn has_interface(pod: &Netns, name: &str) -> bool {
    pod.ip(&["link", "show", name]).is_ok()
}

/// A kubelet's `CNI_ARGS`.
fn kubelet_args(pod_name: &str, infra: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name};K8S_POD_INFRA_CONTAINER_ID={infra};K8S_POD_UID=0b3f1d2c-5a6e-4f70-8192-a3b4c5d6e7f8"
    )
}

const INFRA: &str = "3f1c0c5e9a7b4d2e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";

#[test]
fn a_kubernetes_pod_sandbox_gets_its_host_ports_address_and_route_and_del_leaves_nothing() {
    let bed = Bed::new("cnk");
    let pod = pod("cnkpod");
    let pod_path = pod.path();
    let args = kubelet_args("web-0", INFRA);
    let mut c = bed.conf("1.0.0");
    c["runtimeConfig"] =
        json!({ "portMappings": port_mappings(&[(8080, 80, "tcp"), (5353, 53, "udp")]) });
    let add = Call {
        args: &args,
        ..Call::new("ADD", INFRA, Some(&pod_path))
    };
    let result = bed.call(&add, &c).ok().unwrap();

    // The result: the sandbox interface, its address with the gateway, the default route.
    assert_eq!(result["cniVersion"], "1.0.0");
    let sandbox_if = &result["interfaces"][2];
    assert_eq!(sandbox_if["name"], "eth0");
    assert_eq!(sandbox_if["sandbox"], pod.path().to_str().unwrap());
    let cidr = result["ips"][0]["address"].as_str().unwrap().to_string();
    let ip: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    let gateway: Ipv4Addr = result["ips"][0]["gateway"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(
        result["routes"],
        json!([{ "dst": "0.0.0.0/0", "gw": gateway.to_string() }])
    );
    let inside = String::from_utf8_lossy(&pod.ip(&["-4", "addr", "show", "eth0"]).unwrap().stdout)
        .into_owned();
    assert!(inside.contains(&cidr), "{inside}");
    let link =
        String::from_utf8_lossy(&pod.ip(&["link", "show", "eth0"]).unwrap().stdout).into_owned();
    assert!(link.contains(sandbox_if["mac"].as_str().unwrap()), "{link}");

    // Host ports through the uplink, the client's own address seen; egress masqueraded.
    let tcp = EchoServer::start(&pod.path(), Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let _udp = EchoServer::start(&pod.path(), Proto::Udp, addr(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
    let ext = bed.sb.ext.path();
    echo_once(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap();
    echo_once(&ext, Proto::Udp, addr(Sandbox::NODE_ADDR, 5353)).unwrap();
    assert_eq!(tcp.peers()[0].ip(), Sandbox::EXT_ADDR);
    // From the node through 127.0.0.1, like every netd port.
    let local = bed
        .netd
        .host_process(
            &bed.sb.node,
            &[
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/8080 && printf hello >&3 && head -c 5 <&3",
            ],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&local.stdout), "hello", "{local:?}");
    bed.sb.assert_masqueraded_out(&pod.path()).unwrap();

    // netd ps and netd port show the attachment by the runtime's container ID.
    let ps = bed.netd.cli_ok(&["ps"]).unwrap();
    let row = ps
        .lines()
        .find(|l| l.starts_with(&INFRA[..12]))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(row.contains("n1") && row.contains(&ip.to_string()), "{row}");
    let record = format!("{}-eth0", &INFRA[..12]);
    let ports = bed.netd.cli_ok(&["port", &record]).unwrap();
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080"), "{ports}");
    assert!(ports.contains("53/udp -> 0.0.0.0:5353"), "{ports}");
    let inspect = bed.netd.cli_ok(&["inspect", &record]).unwrap();
    assert!(inspect.contains("\"K8S_POD_NAME\": \"web-0\""), "{inspect}");

    // CHECK agrees with the result; then finds the route a process removed.
    let mut check = c.clone();
    check["prevResult"] = result.clone();
    let check_call = Call {
        args: &args,
        ..Call::new("CHECK", INFRA, Some(&pod_path))
    };
    bed.call(&check_call, &check).ok().unwrap();
    pod.ip(&["route", "del", "default"]).unwrap();
    let broken = bed.call(&check_call, &check);
    assert_eq!(broken.code(), Some(100), "{broken:?}");
    assert!(broken.msg().contains("default route"), "{broken:?}");

    // DEL, twice: nothing left, the port no longer answers.
    let del = Call {
        args: &args,
        ..Call::new("DEL", INFRA, Some(&pod_path))
    };
    let mut del_conf = c;
    del_conf["prevResult"] = result;
    bed.call(&del, &del_conf).ok().unwrap();
    bed.call(&del, &del_conf).ok().unwrap();
    // The kubelet's GC, listing no sandbox of this network, finds nothing more.
    let mut gc = bed.conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    bed.call(&Call::new("GC", "", None), &gc).ok().unwrap();
    bed.assert_nothing_left();
    assert!(!has_interface(&pod, "eth0"));
    assert!(echo_fails(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap());
}

#[test]
fn every_command_answers_in_the_version_the_configuration_asks_for() {
    let bed = Bed::new("cnv");
    let version = bed.call(&Call::new("VERSION", "", None), &json!({}));
    let version = version.ok().unwrap();
    assert_eq!(version["cniVersion"], "1.1.0");
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(
            version["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&json!(v)),
            "{version}"
        );
    }
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = pod("cnvpod");
        let id = format!("ctr-{}", v.replace('.', ""));
        let c = bed.conf(v);
        let result = bed
            .call(&Call::new("ADD", &id, Some(&pod.path())), &c)
            .ok()
            .unwrap();
        assert_eq!(result["cniVersion"], v);
        let legacy = v.starts_with("0.");
        assert_eq!(
            result["ips"][0].get("version").is_some(),
            legacy,
            "{v}: {result}"
        );
        if v != "0.3.1" {
            let mut check = c.clone();
            check["prevResult"] = result;
            bed.call(&Call::new("CHECK", &id, Some(&pod.path())), &check)
                .ok()
                .unwrap();
        }
        bed.call(&Call::new("DEL", &id, None), &c).ok().unwrap();
    }
    // CHECK came with 0.4.0, GC and STATUS with 1.1.0.
    let pod = pod("cnvpod");
    let old = bed.call(
        &Call::new("CHECK", "x1", Some(&pod.path())),
        &bed.conf("0.3.1"),
    );
    assert_eq!(old.code(), Some(1), "{old:?}");
    for command in ["GC", "STATUS"] {
        let old = bed.call(&Call::new(command, "", None), &bed.conf("1.0.0"));
        assert_eq!(old.code(), Some(1), "{command}: {old:?}");
    }
    bed.call(&Call::new("STATUS", "", None), &bed.conf("1.1.0"))
        .ok()
        .unwrap();
    bed.assert_nothing_left();
}

#[test]
fn bad_input_gets_the_specs_error_code_and_changes_nothing() {
    let bed = Bed::new("cnb");
    let taken_pod = pod("cnbpod");
    let taken = bed.add("taken", &taken_pod, &[(8080, 80, "tcp")]);
    let taken_ip = taken["ips"][0]["address"].as_str().unwrap().to_string();
    let before = (bed.attachments(), bed.node_links());
    let pod = pod("cnbpod");
    let path = pod.path();
    let good = bed.conf("1.0.0");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let add = Call::new("ADD", "fresh", Some(&path));
    let not_a_namespace = Path::new("/proc/self/status");
    let host_namespace = Path::new("/proc/1/ns/net");
    let cases: Vec<(&str, Answer, u64, &str)> = vec![
        (
            "no CNI_COMMAND",
            exec_raw(&bed.netd, &[], good.to_string().as_bytes()).unwrap(),
            4,
            "CNI_COMMAND",
        ),
        (
            "bad JSON",
            exec_raw(&bed.netd, &add.env(), b"{\"cniVersion\": ").unwrap(),
            6,
            "decode",
        ),
        (
            "unknown network",
            bed.call(&add, &with(&|c| c["network"] = json!("nope"))),
            7,
            "network",
        ),
        (
            "bad IP= in CNI_ARGS",
            bed.call(
                &Call {
                    args: "IP=10.1.2",
                    ..add.clone()
                },
                &good,
            ),
            4,
            "IP",
        ),
        (
            "unknown CNI_ARGS key",
            bed.call(
                &Call {
                    args: "COLOUR=blue",
                    ..add.clone()
                },
                &good,
            ),
            4,
            "COLOUR",
        ),
        (
            "port conflict",
            bed.call(
                &add,
                &with(&|c| {
                    c["runtimeConfig"] =
                        json!({ "portMappings": port_mappings(&[(8080, 80, "tcp")]) })
                }),
            ),
            101,
            "port is already allocated",
        ),
        (
            "address taken",
            bed.call(
                &add,
                &with(&|c| c["runtimeConfig"] = json!({ "ips": [taken_ip.clone()] })),
            ),
            101,
            "",
        ),
        (
            "ADD twice",
            bed.call(&Call::new("ADD", "taken", Some(&taken_pod.path())), &good),
            101,
            "already has interface eth0",
        ),
        (
            "another plugin's type",
            bed.call(&add, &with(&|c| c["type"] = json!("bridge"))),
            7,
            "type",
        ),
        (
            "unknown cniVersion",
            bed.call(&add, &with(&|c| c["cniVersion"] = json!("9.9.9"))),
            1,
            "cniVersion",
        ),
        (
            "hostPort 0",
            bed.call(
                &add,
                &with(&|c| {
                    c["runtimeConfig"] = json!({ "portMappings": port_mappings(&[(0, 80, "tcp")]) })
                }),
            ),
            7,
            "portMappings[0].hostPort",
        ),
        (
            "CNI_NETNS not a namespace",
            bed.call(&Call::new("ADD", "fresh", Some(not_a_namespace)), &good),
            7,
            "CNI_NETNS",
        ),
        (
            "CNI_NETNS the host's namespace",
            bed.call(&Call::new("ADD", "fresh", Some(host_namespace)), &good),
            7,
            "CNI_NETNS",
        ),
        (
            "CNI_NETNS a namespace another container holds",
            bed.call(&Call::new("ADD", "other", Some(&taken_pod.path())), &good),
            101,
            "already attached",
        ),
    ];
    for (what, answer, code, text) in cases {
        assert_eq!(answer.code(), Some(code), "{what}: {answer:?}");
        assert!(answer.msg().contains(text), "{what}: {answer:?}");
        assert!(
            answer.json["cniVersion"].as_str().is_some(),
            "{what}: {answer:?}"
        );
    }
    assert_eq!((bed.attachments(), bed.node_links()), before);
    assert!(!has_interface(&pod, "eth0"));
    bed.del("taken");
    bed.assert_nothing_left();
}

#[test]
fn concurrent_adds_and_dels_are_safe_and_gc_removes_what_the_runtime_no_longer_knows() {
    let bed = Bed::new("cnc");
    let pods: Vec<Netns> = (0..8).map(|_| pod("cncpod")).collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let bed = &bed;
                s.spawn(move || {
                    let r = bed.add(&format!("ctr{i}"), p, &[(9000 + i as u16, 80, "tcp")]);
                    r["ips"][0]["address"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "{ips:?}");
    assert_eq!(bed.attachments().len(), 8);

    // GC keeps what the runtime lists, removes the rest.
    let mut gc = bed.conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([
        { "containerID": "ctr0", "ifname": "eth0" },
        { "containerID": "ctr1", "ifname": "eth0" },
        { "containerID": "ctr2", "ifname": "eth0" },
    ]);
    bed.call(&Call::new("GC", "", None), &gc).ok().unwrap();
    assert_eq!(bed.attachments().len(), 3);
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(has_interface(p, "eth0"), i < 3, "pod {i}");
    }

    std::thread::scope(|s| {
        for i in 0..3 {
            let bed = &bed;
            s.spawn(move || bed.del(&format!("ctr{i}")));
        }
    });
    bed.assert_nothing_left();
}

#[test]
fn del_succeeds_while_netd_is_down_and_its_next_start_carries_it_out_and_removes_attachments_whose_namespace_died()
 {
    let mut bed = Bed::new("cnd");
    let gone = pod("cndpod");
    let kept = pod("cndpod");
    bed.add("gone", &gone, &[(8080, 80, "tcp")]);
    let kept_result = bed.add("kept", &kept, &[(8081, 80, "tcp")]);
    let alive = pod("cndpod");
    bed.add("alive", &alive, &[(8082, 80, "tcp")]);

    bed.netd.stop(libc::SIGTERM).unwrap();
    let status = bed.call(&Call::new("STATUS", "", None), &bed.conf("1.1.0"));
    assert_eq!(status.code(), Some(50), "{status:?}");
    let third = pod("cndpod");
    let add = bed.call(
        &Call::new("ADD", "third", Some(&third.path())),
        &bed.conf("1.0.0"),
    );
    assert_eq!(add.code(), Some(11), "{add:?}");
    let del = bed.call(&Call::new("DEL", "gone", None), &bed.conf("1.0.0"));
    assert!(del.success, "{del:?}");
    assert!(del.stderr.contains("left in"), "{del:?}");
    drop(gone); // the runtime removes the container's namespace
    // A DEL while netd is down of a pod whose namespace lives on: carried out at start,
    // not rebuilt.
    let del = bed.call(&Call::new("DEL", "alive", None), &bed.conf("1.0.0"));
    assert!(del.success, "{del:?}");

    bed.netd.restart().unwrap();
    assert!(!has_interface(&alive, "eth0"), "{}", bed.netd.log());
    assert!(
        echo_fails(
            &bed.sb.ext.path(),
            Proto::Tcp,
            addr(Sandbox::NODE_ADDR, 8082)
        )
        .unwrap()
    );
    let left: Vec<Value> = bed.attachments();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["sandbox"]["container_id"], "kept");
    let mut check = bed.conf("1.0.0");
    check["prevResult"] = kept_result;
    check["runtimeConfig"] = json!({ "portMappings": port_mappings(&[(8081, 80, "tcp")]) });
    bed.call(&Call::new("CHECK", "kept", Some(&kept.path())), &check)
        .ok()
        .unwrap();
    assert!(
        echo_fails(
            &bed.sb.ext.path(),
            Proto::Tcp,
            addr(Sandbox::NODE_ADDR, 8080)
        )
        .unwrap()
    );
    bed.del("kept");
    bed.assert_nothing_left();
}

#[test]
fn a_netd_restart_keeps_a_cni_containers_traffic() {
    let mut bed = Bed::new("cnr");
    let pod = pod("cnrpod");
    let result = bed.add("web", &pod, &[(8080, 80, "tcp")]);
    let _server =
        EchoServer::start(&pod.path(), Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let mut held =
        HeldConnection::open(&bed.sb.ext.path(), addr(Sandbox::NODE_ADDR, 8080)).unwrap();

    bed.netd.stop(libc::SIGKILL).unwrap();
    held.exchange().unwrap();
    bed.netd.restart().unwrap();
    held.exchange().unwrap();
    let mut check = bed.conf("1.0.0");
    check["prevResult"] = result;
    check["runtimeConfig"] = json!({ "portMappings": port_mappings(&[(8080, 80, "tcp")]) });
    bed.call(&Call::new("CHECK", "web", Some(&pod.path())), &check)
        .ok()
        .unwrap();
    drop(held);
    bed.del("web");
    bed.assert_nothing_left();
}

/// A runtime in a mount namespace of its own (as Podman runs with a private `/run`): the
/// pod's namespace is bind-mounted at a path only that mount namespace has.
struct PrivateRuntime {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl PrivateRuntime {
    fn new(bed: &Bed, pod: &Netns) -> PrivateRuntime {
        let dir = std::path::PathBuf::from(format!("/tmp/netd-cni-{}", bed.sb.node.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ns"), b"").unwrap();
        let script = format!(
            "mount --bind {} {}/ns && exec sleep 600",
            pod.path().display(),
            dir.display()
        );
        let child = std::process::Command::new("unshare")
            // A slave: the machine's unmounts reach it, so it never keeps another test's
            // namespace alive; its own bind mount stays its own.
            .args(["-m", "--propagation", "slave", "sh", "-c", &script])
            .spawn()
            .unwrap();
        let runtime = PrivateRuntime { child, dir };
        let mountinfo = format!("/proc/{}/mountinfo", runtime.pid());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&mountinfo)
            .unwrap_or_default()
            .contains(&format!("{}/ns", runtime.dir.display()))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the bind mount never appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        runtime
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The namespace's path as the runtime sees it.
    fn netns(&self) -> std::path::PathBuf {
        self.dir.join("ns")
    }

    /// The same namespace, for the test's own threads.
    fn netns_from_outside(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!(
            "/proc/{}/root{}",
            self.pid(),
            self.netns().display()
        ))
    }
}

impl Drop for PrivateRuntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_runtime_in_its_own_mount_namespace_is_served_and_its_attachment_outlives_a_netd_restart() {
    let mut bed = Bed::new("cnm");
    let pod = pod("cnmpod");
    let runtime = PrivateRuntime::new(&bed, &pod);
    drop(pod); // now only the runtime's mount namespace keeps it
    let ns = runtime.netns();
    assert_eq!(
        std::fs::metadata(&ns).unwrap().len(),
        0,
        "the node sees a plain file"
    );
    let mut c = bed.conf("1.0.0");
    c["runtimeConfig"] = json!({ "portMappings": port_mappings(&[(8080, 80, "tcp")]) });
    let add = Call::new("ADD", "private", Some(&ns));
    let result = exec_by(&bed.netd, runtime.pid(), &add, &c)
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(result["interfaces"][2]["sandbox"], ns.to_str().unwrap());
    let inside = runtime.netns_from_outside();
    let _server = EchoServer::start(&inside, Proto::Tcp, addr(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
    let ext = bed.sb.ext.path();
    let mut held = HeldConnection::open(&ext, addr(Sandbox::NODE_ADDR, 8080)).unwrap();

    // The restarted daemon finds the namespace through the runtime's mounts.
    bed.netd.stop(libc::SIGKILL).unwrap();
    bed.netd.restart().unwrap();
    held.exchange().unwrap();
    assert_eq!(bed.attachments().len(), 1);
    let mut check = c.clone();
    check["prevResult"] = result;
    exec_by(
        &bed.netd,
        runtime.pid(),
        &Call::new("CHECK", "private", Some(&ns)),
        &check,
    )
    .unwrap()
    .ok()
    .unwrap();

    // The runtime goes away with its mount namespace and no DEL: the next start finds
    // the namespace nowhere and removes the attachment.
    drop(held);
    drop(runtime);
    bed.netd.stop(libc::SIGTERM).unwrap();
    bed.netd.restart().unwrap();
    bed.assert_nothing_left();
    assert!(echo_fails(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap());
}

#[test]
fn a_namespace_path_through_a_linked_directory_is_served_as_containerd_gives_it() {
    // containerd and CRI-O name `/var/run/netns/...`, and `/var/run` is a link to `/run`.
    let bed = Bed::new("cns");
    let pod = pod("cnspod");
    let dir = std::path::PathBuf::from(format!("/tmp/netd-{}", bed.sb.node.name));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveOnDrop(dir.clone());
    std::os::unix::fs::symlink("/run/netns", dir.join("run")).unwrap();
    let given = dir.join("run").join(&pod.name);
    let c = bed.conf("1.0.0");
    let result = bed
        .call(&Call::new("ADD", "linked", Some(&given)), &c)
        .ok()
        .unwrap();
    assert_eq!(
        result["interfaces"][2]["sandbox"],
        given.to_str().unwrap(),
        "the runtime's own path in the result"
    );
    assert!(has_interface(&pod, "eth0"));
    let mut check = c.clone();
    check["prevResult"] = result;
    bed.call(&Call::new("CHECK", "linked", Some(&given)), &check)
        .ok()
        .unwrap();

    // The namespace file itself a link: refused, nothing made.
    std::os::unix::fs::symlink(pod.path(), dir.join("ns-link")).unwrap();
    let before = (bed.attachments().len(), bed.node_links());
    let link = dir.join("ns-link");
    let refused = bed.call(&Call::new("ADD", "filelink", Some(&link)), &c);
    assert_eq!(refused.code(), Some(7), "{refused:?}");
    assert!(refused.msg().contains("symbolic link"), "{refused:?}");
    assert_eq!((bed.attachments().len(), bed.node_links()), before);

    bed.del("linked");
    bed.assert_nothing_left();
}

/// A directory removed when the test ends, however it ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_runtimes_gc_removes_only_its_own_attachments_and_needs_its_list() {
    // Two runtimes (or two CNI configurations) attach to the same netd network.
    let bed = Bed::new("cng");
    let (a, b) = (pod("cngpod"), pod("cngpod"));
    let mut conf_a = bed.conf("1.1.0");
    conf_a["name"] = json!("runtime-a");
    let mut conf_b = conf_a.clone();
    conf_b["name"] = json!("runtime-b");
    bed.call(&Call::new("ADD", "a1", Some(&a.path())), &conf_a)
        .ok()
        .unwrap();
    bed.call(&Call::new("ADD", "b1", Some(&b.path())), &conf_b)
        .ok()
        .unwrap();

    let no_list = bed.call(&Call::new("GC", "", None), &conf_a);
    assert_eq!(no_list.code(), Some(7), "{no_list:?}");
    assert!(
        no_list.msg().contains("cni.dev/valid-attachments"),
        "{no_list:?}"
    );
    assert_eq!(bed.attachments().len(), 2);

    let mut gc = conf_a.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    bed.call(&Call::new("GC", "", None), &gc).ok().unwrap();
    let left = bed.attachments();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["sandbox"]["container_id"], "b1");
    assert!(!has_interface(&a, "eth0") && has_interface(&b, "eth0"));

    bed.call(&Call::new("DEL", "b1", None), &conf_b)
        .ok()
        .unwrap();
    bed.assert_nothing_left();
}

#[test]
fn a_recreated_interface_keeps_the_mac_the_runtime_chose() {
    let mut bed = Bed::new("cnh");
    let pod = pod("cnhpod");
    let mac = "02:5e:00:ab:cd:ef";
    let mut c = bed.conf("1.0.0");
    c["runtimeConfig"] = json!({ "mac": mac });
    let result = bed
        .call(&Call::new("ADD", "chosen", Some(&pod.path())), &c)
        .ok()
        .unwrap();
    assert_eq!(result["interfaces"][2]["mac"], mac);
    // Someone deletes the pod's interface (and with it the host end) while netd is down.
    bed.netd.stop(libc::SIGKILL).unwrap();
    pod.ip(&["link", "del", "eth0"]).unwrap();
    bed.netd.restart().unwrap();
    let link =
        String::from_utf8_lossy(&pod.ip(&["link", "show", "eth0"]).unwrap().stdout).into_owned();
    assert!(link.contains(mac), "{link}");
    let mut check = c.clone();
    check["prevResult"] = result;
    bed.call(&Call::new("CHECK", "chosen", Some(&pod.path())), &check)
        .ok()
        .unwrap();
    bed.del("chosen");
    bed.assert_nothing_left();
}

#[test]
fn a_pod_namespace_kept_only_by_a_descriptor_outlives_a_netd_restart() {
    // A runtime may keep its pods' namespaces by an open descriptor, with no mount of them
    // and no process in them yet.
    let mut bed = Bed::new("cnf");
    let pod = pod("cnfpod");
    bed.add("byfd", &pod, &[]);
    let keeper = std::process::Command::new("sleep")
        .arg("600")
        .stdin(std::fs::File::open(pod.path()).unwrap())
        .spawn()
        .unwrap();
    let mut keeper = KillOnDrop(keeper);
    drop(pod); // the name and the bind mount go; the descriptor keeps the namespace
    bed.netd.stop(libc::SIGKILL).unwrap();
    bed.netd.restart().unwrap();
    assert_eq!(bed.attachments().len(), 1, "{}", bed.netd.log());

    // The keeper closes it: gone, and the next start removes the attachment.
    keeper.0.kill().unwrap();
    keeper.0.wait().unwrap();
    bed.netd.stop(libc::SIGTERM).unwrap();
    bed.netd.restart().unwrap();
    bed.assert_nothing_left();
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_dual_stack_network_gives_cni_attachments_both_families() {
    let bed = Bed::with_network(
        "cn6",
        &[
            "--ipv6",
            "--subnet",
            "10.88.0.0/16",
            "--subnet",
            "fd00:88::/64",
            "n6",
        ],
    );
    let (a, b) = (pod("cn6a"), pod("cn6b"));
    let mut c = conf("0.4.0", "n6", &bed.netd.socket);
    let first = bed
        .call(&Call::new("ADD", "pod-a", Some(&a.path())), &c)
        .ok()
        .unwrap();
    assert_eq!(first["ips"][1]["version"], "6", "{first}");
    assert_eq!(first["ips"][1]["gateway"], "fd00:88::1", "{first}");
    assert!(
        first["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "::/0"),
        "{first}"
    );
    let a6 = address6(&first["ips"][1]);
    // A static IPv6 address, as a runtime's `ips` capability asks; host ports as the
    // portmap plugin takes them: no hostIP is both families, `::` IPv6 only.
    c["runtimeConfig"] = json!({
        "ips": ["10.88.0.77/16", "fd00:88::77/64"],
        "portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "::"},
        ],
    });
    let second = bed
        .call(&Call::new("ADD", "pod-b", Some(&b.path())), &c)
        .ok()
        .unwrap();
    assert_eq!(second["ips"][1]["address"], "fd00:88::77/64", "{second}");
    let mut check = c.clone();
    check["prevResult"] = second.clone();
    bed.call(&Call::new("CHECK", "pod-b", Some(&b.path())), &check)
        .ok()
        .unwrap();
    let _servers = [80, 443].map(|port| {
        EchoServer::start(
            &b.path(),
            Proto::Tcp,
            addr(std::net::Ipv6Addr::UNSPECIFIED, port),
        )
        .unwrap()
    });
    let ext = bed.sb.ext.path();
    for (target, answers) in [
        (addr(Sandbox::NODE_ADDR, 8080), true),
        (addr(Sandbox::NODE_ADDR6, 8080), true),
        (addr(Sandbox::NODE_ADDR6, 8443), true),
        (addr(Sandbox::NODE_ADDR, 8443), false),
    ] {
        if answers {
            echo_once(&ext, Proto::Tcp, target).unwrap();
        } else {
            assert!(echo_fails(&ext, Proto::Tcp, target).unwrap(), "{target}");
        }
    }

    pods_talk_over_ipv6(&a, (&b, "fd00:88::77".parse().unwrap()), a6);
    for id in ["pod-a", "pod-b"] {
        bed.call(&Call::new("DEL", id, None), &c).ok().unwrap();
    }
    assert_nothing_left(&bed.netd, &bed.sb.node);
}

/// An IPv6 address of an `ADD` result (`ips[i]`), without its prefix length.
fn address6(ip: &Value) -> std::net::Ipv6Addr {
    let cidr = ip["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// Real TCP and UDP from pod `a` (at `a6`) to pod `b` at `b6` over IPv6, addresses
/// untouched.
fn pods_talk_over_ipv6(a: &Netns, (b, b6): (&Netns, std::net::Ipv6Addr), a6: std::net::Ipv6Addr) {
    let target = addr(b6, 7400);
    for proto in [Proto::Tcp, Proto::Udp] {
        let server = EchoServer::start(&b.path(), proto, target).unwrap();
        echo_once(&a.path(), proto, target).unwrap();
        assert_eq!(
            server.peers()[0].ip(),
            std::net::IpAddr::V6(a6),
            "{proto:?}"
        );
    }
}

#[test]
fn an_ipv6_only_network_gives_cni_attachments_ipv6_alone() {
    let bed = Bed::with_network(
        "cn7",
        &["--ipv4=false", "--ipv6", "--subnet", "fd00:87::/64", "n7"],
    );
    let (a, b) = (pod("cn7a"), pod("cn7b"));
    let mut c = conf("0.4.0", "n7", &bed.netd.socket);
    // An IPv4 static address has no place on it: refused, the attachment not made.
    c["runtimeConfig"] = json!({ "ips": ["10.87.0.5/24"] });
    let refused = bed.call(&Call::new("ADD", "pod-x", Some(&a.path())), &c);
    let e = refused.msg().to_string();
    assert!(!refused.success, "{refused:?}");
    assert!(
        e.contains("invalid static address 10.87.0.5") && e.contains("IPv6-only"),
        "{refused:?}"
    );
    assert!(bed.attachments().is_empty());
    c["runtimeConfig"] = json!({});
    let first = bed
        .call(&Call::new("ADD", "pod-a", Some(&a.path())), &c)
        .ok()
        .unwrap();
    let ips = first["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1, "{first}");
    assert_eq!(ips[0]["version"], "6", "{first}");
    assert_eq!(
        first["routes"],
        json!([{"dst": "::/0", "gw": "fd00:87::1"}]),
        "{first}"
    );
    let a6 = address6(&ips[0]);
    c["runtimeConfig"] = json!({
        "ips": ["fd00:87::77/64"],
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    });
    let second = bed
        .call(&Call::new("ADD", "pod-b", Some(&b.path())), &c)
        .ok()
        .unwrap();
    assert_eq!(second["ips"][0]["address"], "fd00:87::77/64", "{second}");
    let mut check = c.clone();
    check["prevResult"] = second.clone();
    bed.call(&Call::new("CHECK", "pod-b", Some(&b.path())), &check)
        .ok()
        .unwrap();
    // The port is published on IPv6 alone, the client's address kept.
    let server = EchoServer::start(
        &b.path(),
        Proto::Tcp,
        addr(std::net::Ipv6Addr::UNSPECIFIED, 80),
    )
    .unwrap();
    let ext = bed.sb.ext.path();
    echo_once(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR6, 8080)).unwrap();
    assert_eq!(
        server.peers().last().unwrap().ip(),
        std::net::IpAddr::V6(Sandbox::EXT_ADDR6)
    );
    assert!(echo_fails(&ext, Proto::Tcp, addr(Sandbox::NODE_ADDR, 8080)).unwrap());
    pods_talk_over_ipv6(&a, (&b, "fd00:87::77".parse().unwrap()), a6);
    // CHECK sees a removed address.
    let mut check_a = conf("0.4.0", "n7", &bed.netd.socket);
    check_a["prevResult"] = first.clone();
    bed.call(&Call::new("CHECK", "pod-a", Some(&a.path())), &check_a)
        .ok()
        .unwrap();
    let prefix = format!("{a6}/64");
    in_netns(&a.path(), move || {
        let out = std::process::Command::new("ip")
            .args(["addr", "del", &prefix, "dev", "eth0"])
            .output()?;
        anyhow::ensure!(out.status.success(), "{out:?}");
        Ok(())
    })
    .unwrap();
    let gone = bed.call(&Call::new("CHECK", "pod-a", Some(&a.path())), &check_a);
    assert!(!gone.success, "{gone:?}");
    assert!(
        gone.msg().contains(&format!("no longer has {a6}/64")),
        "{gone:?}"
    );
    for id in ["pod-a", "pod-b"] {
        bed.call(&Call::new("DEL", id, None), &c).ok().unwrap();
    }
    assert_nothing_left(&bed.netd, &bed.sb.node);
}
