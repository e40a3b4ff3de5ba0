//! Network namespaces by file descriptor: open one, and run work on a thread inside it
//! (setns affects only the calling thread, so the daemon's own threads stay in the node).

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::{Context, Result, anyhow};

pub fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("open network namespace {}", path.display()))
}

/// Move the calling thread into the network namespace `ns`.
pub fn enter(ns: &impl AsFd) -> std::io::Result<()> {
    // SAFETY: setns on a valid fd; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Run `f` on a fresh thread that has entered `ns`, and return what it returns.
pub fn run_in<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.try_clone()?;
    std::thread::spawn(move || {
        enter(&ns).context("enter network namespace")?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("namespace worker thread panicked"))?
}
