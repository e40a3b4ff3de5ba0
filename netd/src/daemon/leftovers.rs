//! What a teardown or a rollback could not undo. Every step is still tried; each failure
//! is logged and kept, and the caller reports them all (the API's `warnings`, a rollback's
//! error), so that nobody is told "removed" while a veth, a pinned link or a map entry
//! stays behind. The next start's reconcile removes such leftovers.

use std::fmt::Display;

use anyhow::Result;
use log::warn;

#[derive(Debug, Default)]
pub struct Leftovers(Vec<String>);

impl Leftovers {
    /// Keep `result`'s failure, if any, as what `step` left behind.
    pub fn note<T>(&mut self, step: impl Display, result: Result<T>) {
        if let Err(e) = result {
            let failure = format!("{step}: {e:#}");
            warn!("{failure}");
            self.0.push(failure);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_warnings(self) -> Vec<String> {
        self.0
    }

    /// `error`, with what undoing the change left behind, if anything.
    pub fn after(self, error: anyhow::Error) -> anyhow::Error {
        if self.0.is_empty() {
            return error;
        }
        error.context(format!(
            "undoing it left behind: {} (the daemon's next start removes it)",
            self.0.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_is_kept_and_reported_with_the_error() {
        let mut left = Leftovers::default();
        left.note("unpublish 8080/tcp", Ok(()));
        assert!(left.is_empty());
        left.note("remove veth ndv1", Err::<(), _>(anyhow::anyhow!("busy")));
        left.note("unpin link", Err::<(), _>(anyhow::anyhow!("read-only")));
        let e = left.after(anyhow::anyhow!("start container web"));
        let text = format!("{e:#}");
        assert!(
            text.contains("remove veth ndv1: busy; unpin link: read-only"),
            "{text}"
        );
        assert!(text.contains("start container web"), "{text}");
    }
}
