//! Builds the kernel programs (netd-ebpf) with nightly and bpf-linker and puts the object
//! in OUT_DIR for `include_bytes_aligned!`. AYA_BUILD_SKIP=1 skips it (clippy, docs).
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netd-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../netd-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
