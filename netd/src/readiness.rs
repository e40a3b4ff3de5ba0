//! Waiting on the kernel for the daemon's background readers: a ring buffer drained each
//! time it becomes readable (the programs' logs, `netd monitor`'s events), and the
//! signals that stop a long-running command (SIGTERM, SIGINT).

use std::os::fd::AsRawFd;

use log::warn;
use tokio::io::{Interest, unix::AsyncFd};

/// Call `drain` on `source` each time its descriptor becomes readable, for as long as it
/// can be watched; `what` names it in the warning if it cannot.
pub async fn drain_when_readable<T: AsRawFd>(source: T, what: &str, mut drain: impl FnMut(&mut T)) {
    // SAFETY: `source` owns its descriptor (a ring buffer's, the callers'), which stays
    // open and the same for as long as it lives, and the AsyncFd owns `source`.
    let registered = unsafe { AsyncFd::register_with_interest(source, Interest::READABLE) };
    let mut source = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!("{what} cannot be read: {e}");
            return;
        }
    };
    loop {
        let mut ready = match source.readable_mut().await {
            Ok(ready) => ready,
            Err(e) => {
                warn!("{what}: {e}");
                return;
            }
        };
        drain(ready.get_inner_mut());
        ready.clear_ready();
    }
}

/// SIGTERM or SIGINT (Ctrl-C), whichever comes first; never, if they cannot be caught.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
