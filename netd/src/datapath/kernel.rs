//! What the running kernel lets netd's programs do, where kernels differ in ways the
//! programs must be built for before they are verified (read-only globals, which the
//! verifier prunes by).

use std::sync::OnceLock;

/// BPF_PROG_LOAD, BPF_PROG_TYPE_XDP, BPF_FUNC_xdp_adjust_meta.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_FUNC_XDP_ADJUST_META: i32 = 54;

/// Whether XDP programs may call `bpf_xdp_adjust_meta` (the note the uplink's XDP program
/// leaves for its TC program). Kernels built without it answer "program of this type
/// cannot use helper" (seen on 6.18.44-fc); netd's XDP then translates without the note,
/// and the stack routes what it translated. Probed once per process.
pub fn xdp_metadata_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| loads_xdp_calling(BPF_FUNC_XDP_ADJUST_META))
}

/// Whether the kernel loads an XDP program that calls helper `helper` with (ctx, -8) and
/// passes the frame.
fn loads_xdp_calling(helper: i32) -> bool {
    // struct bpf_insn: code, dst and src registers, offset, immediate.
    let insn = |code: u8, dst: u8, imm: i32| -> [u8; 8] {
        let mut i = [0u8; 8];
        i[0] = code;
        i[1] = dst;
        i[4..].copy_from_slice(&imm.to_le_bytes());
        i
    };
    let program: Vec<u8> = [
        insn(0xb7, 2, -8),     // r2 = -8
        insn(0x85, 0, helper), // call helper(r1 = ctx, r2)
        insn(0xb7, 0, 2),      // r0 = XDP_PASS
        insn(0x95, 0, 0),      // exit
    ]
    .concat();
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license; the rest 0.
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&((program.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(program.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(2) reads `attr` (and the program and license it points to, alive here).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: the descriptor the kernel just returned, closed once.
    unsafe { libc::close(fd as libc::c_int) };
    true
}
