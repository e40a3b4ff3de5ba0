//! `cargo xtask setup`: what a fresh machine of this kind lacks, installed idempotently.
//! Each step says what it found or did; a second run changes nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd::{output, require_root, run as run_cmd};

/// Debian packages the project, its tests, the demo and the benchmarks call.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "iperf3",
    "ethtool",
    "socat",
    "tcpdump",
    "bpftool",
    "iputils-ping",
    "curl",
    "conntrack",
    "procps",
    // taskset and nsenter, for the benchmark's CPU placement (Essential, listed anyway).
    "util-linux",
    "python3",
    // The real Docker engine the Docker-driver tests, `demo --docker` and the benchmark's
    // Docker comparison drive (always inside a sandbox, never as the machine's service),
    // and the static busybox their image is made of.
    "docker.io",
    "busybox-static",
    // Podman 4 with its CNI backend, for the CNI tests (netavark stays out: without
    // recommends, and the tests ask for the CNI backend by name).
    "podman",
    "containernetworking-plugins",
    // The cluster store's client crate (etcd-client) generates its gRPC code with protoc
    // at build time; the cluster tests run a three-member etcd 3.4 in their namespaces
    // (never the package's service) and read it with etcdctl.
    "protobuf-compiler",
    // protoc's well-known types (google/protobuf/descriptor.proto ...), which etcd's protos import.
    "libprotobuf-dev",
    "etcd-server",
    "etcd-client",
    // The cluster tests' certificates for etcd over TLS.
    "openssl",
    // The real Prometheus the metrics test scrapes the daemon with (in its namespaces,
    // never the package's service), and promtool, which lints the exposition.
    "prometheus",
    // `cargo xtask package` builds with dpkg-deb and strips with binutils; lintian checks
    // the package.
    "dpkg-dev",
    "binutils",
    "lintian",
];

/// Installing a package with a service must not start it on this machine:
/// invoke-rc.d asks this script, and 101 means "not now".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    require_root("cargo xtask setup")?;
    debian_packages()?;
    nightly_rust_src()?;
    nightly_clippy()?;
    bpf_linker()?;
    bpffs()?;
    println!("setup: done");
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p])).as_deref()
                != Some("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        println!(
            "setup: debian packages: all {} present",
            DEBIAN_PACKAGES.len()
        );
        return Ok(());
    }
    println!("setup: debian packages: installing {}", missing.join(" "));
    let _guard = NoServiceStarts::install()?;
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A `policy-rc.d` that refuses every service start while packages install (docker.io
/// would otherwise start dockerd in the root namespace of a machine with an init system),
/// removed afterwards if setup put it there. `--no-install-recommends` keeps the rest out.
struct NoServiceStarts {
    ours: bool,
}

impl NoServiceStarts {
    fn install() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            println!("setup: {POLICY_RC_D} exists: package installs start no service");
            return Ok(NoServiceStarts { ours: false });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# netd's setup: no service starts while it installs packages.\nexit 101\n",
        )
        .with_context(|| format!("write {POLICY_RC_D}"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        println!("setup: {POLICY_RC_D} in place while packages install (no service starts)");
        Ok(NoServiceStarts { ours: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.ours {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"])).context(
        "the nightly toolchain is missing: this machine kind preinstalls it and it cannot be downloaded here (RUSTUP_AUTO_INSTALL=0)",
    )?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn nightly_rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        println!("setup: nightly rust-src: present");
        return Ok(());
    }
    println!("setup: nightly rust-src: installing");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// `cargo xtask clippy` lints the kernel programs with nightly's clippy.
fn nightly_clippy() -> Result<()> {
    let present =
        output(Command::new("rustup").args(["run", "nightly", "cargo", "clippy", "--version"]));
    if present.is_some() {
        println!("setup: nightly clippy: present");
        return Ok(());
    }
    println!("setup: nightly clippy: installing");
    run_cmd(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
}

/// bpf-linker must use rustc's own LLVM (Debian has none new enough): link it against the
/// nightly's libLLVM through a directory of symlinks that its rpath points at.
fn bpf_linker() -> Result<()> {
    let llvm_prefix = home().join(".cache/netd-llvm");
    // Before testing the binary: its rpath names this directory, so a missing or dangling
    // link (a new nightly, a wiped cache) would make a good binary look broken.
    link_rustc_llvm(&llvm_prefix.join("lib"))?;
    let candidates = [
        PathBuf::from("bpf-linker"),
        cargo_home().join("bin/bpf-linker"),
    ];
    if let Some(found) = candidates.iter().find(|bin| {
        output(Command::new(bin).arg("--version"))
            .is_some_and(|v| v.split_whitespace().any(|w| w == BPF_LINKER_VERSION))
    }) {
        println!(
            "setup: bpf-linker {BPF_LINKER_VERSION}: present ({})",
            found.display()
        );
        return Ok(());
    }
    println!(
        "setup: bpf-linker {BPF_LINKER_VERSION}: building against rustc's libLLVM (about two minutes)"
    );
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
                // Replaces a binary of this version that no longer runs.
                "--force",
            ])
            .env("LLVM_PREFIX", &llvm_prefix)
            // Built by stable like everything on the host; "/" has no rust-toolchain.toml.
            .env("RUSTUP_TOOLCHAIN", "stable")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .current_dir("/"),
    )
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The nightly's libLLVM shared object: the ELF file named `libLLVM.so.*` (its soname) or,
/// failing that, `libLLVM-*.so`. The toolchain also ships a `libLLVM-*.so` that is a
/// linker script, which must not be picked.
fn rustc_libllvm(lib: &Path) -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(lib)
        .with_context(|| format!("read {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so"))
        })
        .filter(|n| is_elf(&lib.join(n)))
        .collect();
    names.sort_by_key(|n| !n.starts_with("libLLVM.so."));
    names
        .into_iter()
        .next()
        .with_context(|| format!("no libLLVM shared library in {}", lib.display()))
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn link_rustc_llvm(dir: &Path) -> Result<()> {
    let lib = nightly_sysroot()?.join("lib");
    let so = rustc_libllvm(&lib)?;
    let target = lib.join(&so);
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for name in ["libLLVM.so", so.as_str()] {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link)
                .with_context(|| format!("link {}", link.display()))?;
        }
    }
    Ok(())
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
    }) {
        println!("setup: bpffs at /sys/fs/bpf: mounted");
        return Ok(());
    }
    if !Path::new("/sys/fs/bpf").is_dir() {
        bail!("/sys/fs/bpf does not exist: this kernel has no bpffs mount point");
    }
    println!("setup: bpffs at /sys/fs/bpf: mounting");
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
