//! CNI `DEL`s the daemon could not take: `netd-cni` answers a `DEL` with success when the
//! daemon is down or stopping (a runtime that gets an error may never ask again, and the
//! container is going either way), and leaves the request as a file beside the daemon's
//! socket. The daemon carries them out when it starts, before it rebuilds anything, so an
//! attachment whose namespace is still alive is not brought back. An `ADD` of the same
//! key supersedes the request.

use std::{
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::api::encode_segment;

/// One attachment's `DEL`, by its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDel {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// Where requests are left for the daemon serving `socket`: beside it, so that a runtime
/// with a mount namespace of its own that reaches the socket reaches the directory too.
pub fn dir(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or(Path::new("/"))
        .join("cni-pending-del")
}

impl PendingDel {
    /// One file per key (a repeated `DEL` rewrites it): the key, percent-encoded.
    fn file_name(&self) -> String {
        encode_segment(&format!(
            "{}/{}/{}",
            self.network, self.container_id, self.ifname
        ))
    }

    /// Leave the request in `dir`, whole or not at all (written aside, then renamed).
    pub fn record(&self, dir: &Path) -> io::Result<PathBuf> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join(self.file_name());
        // '+' never starts an encoded key: `list` knows a temporary by it.
        let tmp = dir.join(format!("+{}.{}", self.file_name(), std::process::id()));
        // A temporary of another run is removed; none is ever followed (a link planted
        // there must not make root write elsewhere).
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Forget the request for this key, if there is one.
    pub fn clear(&self, dir: &Path) -> io::Result<()> {
        match std::fs::remove_file(dir.join(self.file_name())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The requests left in `dir`; files that are not one (a half-written temporary, a
    /// stranger's) are reported by name and left alone.
    pub fn list(dir: &Path) -> (Vec<PendingDel>, Vec<String>) {
        let (mut found, mut bad) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (found, bad);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('+') {
                continue;
            }
            match read_request(&e.path()) {
                Some(d) if d.file_name() == name => found.push(d),
                _ => bad.push(name),
            }
        }
        found.sort_by_key(PendingDel::file_name);
        (found, bad)
    }
}

/// A request file: a regular file (no link followed, no FIFO waited on), small.
fn read_request(path: &Path) -> Option<PendingDel> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_recorded_listed_rewritten_and_cleared() {
        let dir = std::env::temp_dir().join(format!("netd-pending-del-{}", std::process::id()));
        let d = PendingDel {
            network: "n/1".into(),
            container_id: "ctr.1".into(),
            ifname: "eth0".into(),
        };
        let path = d.record(&dir).unwrap();
        assert_eq!(
            path.parent(),
            Some(dir.as_path()),
            "the '/' in a name is encoded"
        );
        d.record(&dir).unwrap();
        std::fs::write(dir.join("junk"), b"{").unwrap();
        // Neither followed nor waited on: a link to a request, a FIFO.
        std::os::unix::fs::symlink(&path, dir.join("link")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (found, mut strangers) = PendingDel::list(&dir);
        strangers.sort();
        assert_eq!(found, vec![d.clone()]);
        assert_eq!(strangers, ["fifo", "junk", "link"]);
        for f in ["junk", "link", "fifo"] {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        d.clear(&dir).unwrap();
        d.clear(&dir).unwrap();
        assert_eq!(PendingDel::list(&dir).0, vec![]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(PendingDel::list(&dir), (vec![], vec![]));
    }
}
