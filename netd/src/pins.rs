//! What lives in the bpffs directory and outlives the daemon: pinned maps (checked against
//! the layout this build expects before they are reused) and pinned program links (so
//! the data path stays attached while the daemon is stopped, and a new daemon swaps its
//! programs in atomically with BPF_LINK_UPDATE).

use std::{
    ffi::CString,
    fs,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{maps::MapInfo, programs::links::FdLink};
use log::{info, warn};
use netd_common::maps as names;

/// The maps of the kernel object: (name, key size, value size, max entries, flags).
pub fn expected_maps(object: &[u8], flow_table_size: u32) -> Result<Vec<(String, [u32; 4])>> {
    let obj = aya_obj::Object::parse(object).context("parse netd's eBPF object")?;
    let mut out: Vec<(String, [u32; 4])> = obj
        .maps
        .iter()
        .filter(|(name, _)| name.starts_with("NETD_"))
        .map(|(name, m)| {
            let max = if names::FLOW_TABLES.contains(&name.as_str()) {
                flow_table_size
            } else {
                m.max_entries()
            };
            (
                name.clone(),
                [m.key_size(), m.value_size(), max, m.map_flags()],
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Before maps are adopted: a pinned netd map of another layout version is removed (its
/// contents are rebuilt from the daemon's state), except the flow tables of the layout
/// before (`FLOWS_UPGRADED`), whose flows the loaded data path adopts; a pinned map with a
/// current name but another geometry is refused.
pub fn check_pinned_maps(dir: &Path, expected: &[(String, [u32; 4])]) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut refused = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("NETD_") {
            continue;
        }
        let path = entry.path();
        if names::FLOWS_UPGRADED.iter().any(|(old, _)| *old == name) {
            // Copied into the current layout once the maps are loaded (`adopt_old_flows`).
            continue;
        }
        let Some((_, want)) = expected.iter().find(|(n, _)| *n == name) else {
            warn!(
                "map {name} in {} is from another layout version of netd: removing it (its contents are rebuilt from the state; connections tracked in an old flow table are lost)",
                dir.display()
            );
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            continue;
        };
        let info = MapInfo::from_pin(&path)
            .with_context(|| format!("read pinned map {}", path.display()))?;
        let have = [
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
        ];
        if have != *want {
            refused.push(format!(
                "pinned map {} has key size {}, value size {}, {} entries, flags {:#x}, but this netd needs {}, {}, {}, {:#x}",
                path.display(),
                have[0],
                have[1],
                have[2],
                have[3],
                want[0],
                want[1],
                want[2],
                want[3],
            ));
        }
    }
    if !refused.is_empty() {
        refused.sort();
        bail!(
            "{}: made by another netd build or another --flow-table-size. Restart with the setting that made them, or remove them to start those tables afresh (their entries are lost)",
            refused.join("; ")
        );
    }
    Ok(())
}

/// Where the links are pinned.
pub fn links_dir(bpffs_dir: &Path) -> PathBuf {
    bpffs_dir.join("links")
}

/// Swap `prog` into the link pinned at `path`. `Ok(false)`: nothing pinned there.
pub fn update_pinned_link(path: &Path, prog: BorrowedFd<'_>) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let link = obj_get(path).with_context(|| format!("open pinned link {}", path.display()))?;
    link_update(&link, prog).with_context(|| format!("update pinned link {}", path.display()))?;
    Ok(true)
}

/// Pin a link the daemon just made, so it outlives the daemon.
pub fn pin_link(link: FdLink, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    link.pin(path)
        .with_context(|| format!("pin link {}", path.display()))?;
    Ok(())
}

/// Unpin a link: once nothing else holds it, its program is detached. A link already
/// gone is fine.
pub fn unpin_link(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            info!("detached {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("unpin link {}", path.display())),
    }
}

/// `unpin_link`, logging a failure: for links that are replaced right after.
pub fn remove_link(path: &Path) {
    if let Err(e) = unpin_link(path) {
        warn!("{e:#}");
    }
}

/// Unpin every link under `dir` whose name starts with `prefix` and is not in `keep`.
pub fn retain_links(dir: &Path, prefix: &str, keep: &[String]) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && !keep.contains(&name) {
            remove_link(&entry.path());
            removed += 1;
        }
    }
    removed
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 4]) -> std::io::Result<i64> {
    // SAFETY: the bpf syscall with an attribute buffer of the size given; the kernel
    // reads only the fields of the command, zeroes elsewhere.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut attr = [c.as_ptr() as u64, 0, 0, 0];
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: a new fd the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn link_update(link: &OwnedFd, prog: BorrowedFd<'_>) -> std::io::Result<()> {
    // link_update: link_fd (u32), new_prog_fd (u32), flags (u32), old_prog_fd (u32).
    let lo = |a: i32, b: i32| u64::from(a as u32) | (u64::from(b as u32) << 32);
    let mut attr = [lo(link.as_raw_fd(), prog.as_raw_fd()), 0, 0, 0];
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel object and netd-common name the same pinned maps: a map renamed (or a
    /// layout version bumped) on one side only would be created afresh, or refused, at
    /// every start.
    #[test]
    fn the_object_pins_exactly_the_maps_netd_common_names() {
        let obj = aya_obj::Object::parse(crate::datapath::PROGRAMS).unwrap();
        let mut in_object: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with("NETD_"))
            .collect();
        let mut named: Vec<&str> = names::PINNED.to_vec();
        in_object.sort();
        named.sort();
        assert_eq!(in_object, named);
        assert!(obj.maps.contains_key(names::SWEEP), "the sweep's batch map");
    }

    #[test]
    fn the_counters_map_has_room_for_every_hook_and_reason() {
        use netd_common::counters::{COUNTERS_LEN, Hook, Reason, counter_index};
        let maps = expected_maps(crate::datapath::PROGRAMS, 1024).unwrap();
        let (_, [_, value, entries, _]) = maps
            .iter()
            .find(|(n, _)| n == names::COUNTERS)
            .unwrap()
            .clone();
        assert_eq!(entries, COUNTERS_LEN);
        assert_eq!(value, 16);
        let last = counter_index(*Hook::ALL.last().unwrap(), *Reason::ALL.last().unwrap());
        assert!(last < COUNTERS_LEN);
    }
}
