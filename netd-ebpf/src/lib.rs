//! Empty on purpose: the programs are the `netd-ebpf` binary of this crate (src/main.rs). This
//! library target lets netd/build.rs declare a build-dependency so cargo rebuilds them.
#![no_std]
