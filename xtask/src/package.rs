//! `cargo xtask package`: netd's Debian package, `target/package/netd_VERSION_ARCH.deb`:
//! the daemon and CLI, netd-cni, the systemd unit with its defaults file, the drop-in
//! that orders docker.service after netd, shell completions, man pages generated from
//! the CLI, and the docs Debian asks for. Built from a staging tree with `dpkg-deb
//! --root-owner-group`; nothing is installed or started on the build machine. `check`
//! is what `cargo xtask test` asks of it: the files it must hold, sound maintainer
//! scripts, and no lintian error.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd::{cargo, output, require_root, run as run_cmd, target_dir, workspace_root};

const MAINTAINER: &str = "netd developers <netd@packages.invalid>";

/// Every path the package must ship (with a leading `./`, as `dpkg-deb -c` lists them).
pub const SHIPPED: &[&str] = &[
    "./usr/bin/netd",
    "./usr/lib/cni/netd-cni",
    "./lib/systemd/system/netd.service",
    "./lib/systemd/system/docker.service.d/netd.conf",
    "./etc/default/netd",
    "./usr/share/bash-completion/completions/netd",
    "./usr/share/zsh/vendor-completions/_netd",
    "./usr/share/fish/vendor_completions.d/netd.fish",
    "./usr/share/man/man1/netd.1.gz",
    "./usr/share/man/man1/netd-run.1.gz",
    "./usr/share/man/man1/netd-network-create.1.gz",
    "./usr/share/man/man1/netd-monitor.1.gz",
    "./usr/share/doc/netd/copyright",
    "./usr/share/doc/netd/changelog.gz",
    "./usr/share/doc/netd/examples/netd-alerts.yml",
    "./usr/share/doc/netd/examples/netd-dashboard.json",
];

/// `cargo xtask package`: build the package; its path.
pub fn run() -> Result<PathBuf> {
    require_root("cargo xtask package")?;
    crate::setup::run()?;
    println!("package: build netd and netd-cni, release profile");
    run_cmd(cargo().args(["build", "--release", "-p", "netd", "--bins"]))?;
    let release = target_dir().join("release");
    let netd = release.join("netd");
    let version = output(Command::new(&netd).arg("--version"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .context("netd --version")?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))
        .map(|a| a.trim().to_string())
        .context("dpkg --print-architecture")?;
    let out = target_dir().join("package");
    let stage = out.join(format!("netd_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    println!("package: staging in {}", stage.display());
    stage_files(&stage, &release, &version)?;
    control(&stage, &version, &arch)?;
    let deb = out.join(format!("netd_{version}_{arch}.deb"));
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zxz"])
            .arg(&stage)
            .arg(&deb),
    )?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// A file of the package at `path` (relative to the root) with `mode`.
fn put(stage: &Path, path: &str, contents: &[u8], mode: u32) -> Result<()> {
    let to = stage.join(path);
    fs::create_dir_all(to.parent().context("a path with a parent")?)?;
    fs::write(&to, contents).with_context(|| format!("write {}", to.display()))?;
    fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A stripped copy of the binary `from` at `path`.
fn put_binary(stage: &Path, path: &str, from: &Path) -> Result<()> {
    put(stage, path, &fs::read(from)?, 0o755)?;
    run_cmd(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(stage.join(path)),
    )
}

/// `gzip -9n` in place (no name or time stamp: reproducible).
fn gzip(file: &Path) -> Result<()> {
    run_cmd(Command::new("gzip").args(["-9nf"]).arg(file))
}

fn stage_files(stage: &Path, release: &Path, version: &str) -> Result<()> {
    let root = workspace_root();
    let netd = release.join("netd");
    put_binary(stage, "usr/bin/netd", &netd)?;
    // Debian's CNI plugin directory (Podman's); containerd's /opt/cni/bin is the admin's.
    put_binary(stage, "usr/lib/cni/netd-cni", &release.join("netd-cni"))?;

    // The repository's unit, with the packaged binary and the defaults file.
    let unit = fs::read_to_string(root.join("netd.service"))?
        .replace("/usr/local/bin/netd", "/usr/bin/netd");
    if !unit.contains("EnvironmentFile=-/etc/default/netd") || !unit.contains("$NETD_OPTS") {
        bail!("netd.service must read /etc/default/netd and pass $NETD_OPTS");
    }
    put(
        stage,
        "lib/systemd/system/netd.service",
        unit.as_bytes(),
        0o644,
    )?;
    put(
        stage,
        "lib/systemd/system/docker.service.d/netd.conf",
        b"# Installed by netd: Docker finds its network driver `netd` at start (a plugin\n\
          # missing then costs 15 s per call and leaves restart-policy containers down).\n\
          [Unit]\nWants=netd.service\nAfter=netd.service\n",
        0o644,
    )?;
    put(
        stage,
        "etc/default/netd",
        b"# Flags for `netd daemon` (see `man netd-daemon`), read by netd.service, e.g.\n\
          # NETD_OPTS=\"--uplink eth0 --xdp native --socket-group netd\"\n\
          NETD_OPTS=\"\"\n",
        0o644,
    )?;

    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/netd"),
        ("zsh", "usr/share/zsh/vendor-completions/_netd"),
        ("fish", "usr/share/fish/vendor_completions.d/netd.fish"),
    ] {
        let script = output(Command::new(&netd).args(["completion", shell]))
            .with_context(|| format!("netd completion {shell}"))?;
        put(stage, path, script.as_bytes(), 0o644)?;
    }
    let man = stage.join("usr/share/man/man1");
    run_cmd(Command::new(&netd).arg("manpages").arg(&man))?;
    for page in fs::read_dir(&man)? {
        let page = page?.path();
        fs::set_permissions(&page, fs::Permissions::from_mode(0o644))?;
        gzip(&page)?;
    }

    let doc = "usr/share/doc/netd";
    put(
        stage,
        &format!("{doc}/copyright"),
        copyright().as_bytes(),
        0o644,
    )?;
    put(
        stage,
        &format!("{doc}/changelog"),
        changelog(version).as_bytes(),
        0o644,
    )?;
    gzip(&stage.join(doc).join("changelog"))?;
    for example in ["netd-alerts.yml", "netd-dashboard.json"] {
        let text = fs::read(root.join("docs/prometheus").join(example))?;
        put(stage, &format!("{doc}/examples/{example}"), &text, 0o644)?;
    }
    // Directories 0755 whatever the umask.
    for dir in walk(stage)?.into_iter().filter(|p| p.is_dir()) {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Every path under `dir`, depth first.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut all = vec![dir.to_path_buf()];
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            all.extend(walk(&path)?);
        } else {
            all.push(path);
        }
    }
    Ok(all)
}

fn copyright() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: netd\n\
         Upstream-Contact: {MAINTAINER}\n\n\
         Files: *\n\
         Copyright: 2026 the netd developers\n\
         License: MIT or Apache-2.0\n \
         netd is dual-licensed under the MIT license and the Apache License, Version 2.0;\n \
         you may use it under either.\n \
         .\n \
         On Debian systems the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n"
    )
}

fn changelog(version: &str) -> String {
    let date = output(Command::new("date").args(["-R", "-u"]))
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    format!(
        "netd ({version}) unstable; urgency=medium\n\n  \
         * Built by cargo xtask package from the netd repository.\n\n \
         -- {MAINTAINER}  {date}\n"
    )
}

/// DEBIAN/: control, conffiles, md5sums and the maintainer scripts.
fn control(stage: &Path, version: &str, arch: &str) -> Result<()> {
    let files: Vec<PathBuf> = walk(stage)?.into_iter().filter(|p| p.is_file()).collect();
    let bytes: u64 = files
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    let mut md5sums = String::new();
    for f in &files {
        let sum = output(Command::new("md5sum").arg(f)).context("md5sum")?;
        let rel = f.strip_prefix(stage)?.display().to_string();
        md5sums.push_str(&format!(
            "{}  {rel}\n",
            sum.split_whitespace().next().unwrap_or_default()
        ));
    }
    let control = format!(
        "Package: netd\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {}\n\
         Depends: libc6 (>= 2.34), iproute2\n\
         Suggests: docker.io, podman, containernetworking-plugins, prometheus\n\
         Section: net\n\
         Priority: optional\n\
         Description: container networking with an eBPF data path\n \
         netd creates bridges and veth pairs like Docker's bridge driver and publishes\n \
         container ports (DNAT) and masquerades their traffic (SNAT) with TC and XDP\n \
         programs instead of iptables rules. It drives Docker (as a network plugin),\n \
         Podman, containerd and Kubernetes (through netd-cni), spans hosts with VXLAN\n \
         overlays agreed on in etcd, and serves Prometheus metrics.\n",
        bytes.div_ceil(1024)
    );
    put(stage, "DEBIAN/control", control.as_bytes(), 0o644)?;
    put(stage, "DEBIAN/conffiles", b"/etc/default/netd\n", 0o644)?;
    put(stage, "DEBIAN/md5sums", md5sums.as_bytes(), 0o644)?;
    for (script, text) in MAINTAINER_SCRIPTS {
        put(stage, &format!("DEBIAN/{script}"), text.as_bytes(), 0o755)?;
    }
    Ok(())
}

/// As dh_installsystemd writes them, except that installing enables netd without starting
/// it: netd attaches programs to the node's uplink, which an admin starts knowingly
/// (`systemctl start netd`), after reading /etc/default/netd. An upgrade restarts a
/// running netd (containers and flows survive: the data path is pinned).
const MAINTAINER_SCRIPTS: &[(&str, &str)] = &[
    (
        "postinst",
        r#"#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ]; then
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper unmask 'netd.service' >/dev/null || true
        if deb-systemd-helper --quiet was-enabled 'netd.service'; then
            deb-systemd-helper enable 'netd.service' >/dev/null || true
        else
            deb-systemd-helper update-state 'netd.service' >/dev/null || true
        fi
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ] && command -v deb-systemd-invoke >/dev/null 2>&1; then
            deb-systemd-invoke try-restart 'netd.service' >/dev/null || true
        fi
    fi
fi
exit 0
"#,
    ),
    (
        "prerm",
        r#"#!/bin/sh
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ] && command -v deb-systemd-invoke >/dev/null 2>&1; then
    deb-systemd-invoke stop 'netd.service' >/dev/null || true
fi
exit 0
"#,
    ),
    (
        "postrm",
        r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper mask 'netd.service' >/dev/null || true
fi
if [ "$1" = "purge" ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper purge 'netd.service' >/dev/null || true
    deb-systemd-helper unmask 'netd.service' >/dev/null || true
    rm -rf /var/lib/netd
fi
exit 0
"#,
    ),
];

/// What `cargo xtask test` asks of the package: every file it ships, sound maintainer
/// scripts, the unit as packaged, and no lintian error.
pub fn check(deb: &Path) -> Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(deb)).context("dpkg-deb -c")?;
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for want in SHIPPED {
        if !paths.contains(want) {
            bail!("{} lacks {want}", deb.display());
        }
    }
    if paths.iter().any(|p| p.starts_with("./opt/")) {
        bail!("{} ships under /opt", deb.display());
    }
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"root/root") {
            bail!("not owned by root: {line}");
        }
    }
    let unpacked = target_dir().join("package/check");
    if unpacked.exists() {
        fs::remove_dir_all(&unpacked)?;
    }
    run_cmd(
        Command::new("dpkg-deb")
            .arg("--raw-extract")
            .arg(deb)
            .arg(&unpacked),
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        run_cmd(
            Command::new("sh")
                .arg("-n")
                .arg(unpacked.join("DEBIAN").join(script)),
        )?;
    }
    let unit = fs::read_to_string(unpacked.join("lib/systemd/system/netd.service"))?;
    if !unit.contains("ExecStart=/usr/bin/netd daemon") {
        bail!("the packaged unit does not start /usr/bin/netd");
    }
    let field = |name: &str| {
        output(Command::new("dpkg-deb").args(["-f"]).arg(deb).arg(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if field("Package") != "netd" || field("Depends").is_empty() {
        bail!(
            "control fields: Package {:?}, Depends {:?}",
            field("Package"),
            field("Depends")
        );
    }
    println!("package: contents as expected; lintian (errors fail)");
    let lintian = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("run lintian (cargo xtask setup installs it)")?;
    let said = String::from_utf8_lossy(&lintian.stdout);
    print!("{said}");
    if !lintian.status.success() || said.lines().any(|l| l.starts_with("E: ")) {
        bail!("lintian found errors in {}", deb.display());
    }
    fs::remove_dir_all(&unpacked)?;
    Ok(())
}
