//! A bounded, numbered history that clients read page by page and wait on: what
//! `netd events` and `netd monitor` are served from. Entries are numbered from 1 for the
//! daemon's run; a client asks for those after the last number it saw, and may wait (a
//! long poll, with no lock of the daemon held) until there are some. Closing it (the
//! daemon stopping) ends every wait at once.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

/// The longest a client's wait may last.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

pub struct Journal<T> {
    /// The last number given, and the kept entries with their numbers.
    log: Mutex<(u64, VecDeque<(u64, T)>)>,
    capacity: usize,
    /// The last number given, and whether the journal is closed.
    added: tokio::sync::watch::Sender<(u64, bool)>,
}

impl<T: Clone> Journal<T> {
    /// A journal keeping the last `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Journal {
            log: Mutex::new((0, VecDeque::new())),
            capacity,
            added: tokio::sync::watch::Sender::new((0, false)),
        }
    }

    /// Add entries, each made from its number; waiting clients wake once. Returns the
    /// last number.
    pub fn extend<I>(&self, items: impl IntoIterator<Item = I>, make: impl Fn(u64, I) -> T) -> u64 {
        let last = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            for item in items {
                log.0 += 1;
                let n = log.0;
                log.1.push_back((n, make(n, item)));
            }
            while log.1.len() > self.capacity {
                log.1.pop_front();
            }
            log.0
        };
        self.added.send_modify(|(n, _)| *n = last);
        last
    }

    /// End every wait now; later ones do not wait.
    pub fn close(&self) {
        self.added.send_modify(|(_, closed)| *closed = true);
    }

    /// The kept entries after number `after` that `keep` accepts, and the number to ask
    /// after next time.
    pub fn after(&self, after: u64, keep: impl Fn(&T) -> bool) -> (Vec<T>, u64) {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let entries = log
            .1
            .iter()
            .filter(|(n, e)| *n > after && keep(e))
            .map(|(_, e)| e.clone())
            .collect();
        (entries, log.0.max(after))
    }

    /// `after`, waiting up to `wait` (at most [`MAX_WAIT`]) for an entry if there is none
    /// yet.
    pub async fn wait_after(
        &self,
        after: u64,
        keep: impl Fn(&T) -> bool,
        wait: Duration,
    ) -> (Vec<T>, u64) {
        let mut added = self.added.subscribe();
        let page = self.after(after, &keep);
        if !page.0.is_empty() || wait.is_zero() {
            return page;
        }
        let news = added.wait_for(|(n, closed)| *n > after || *closed);
        let _ = tokio::time::timeout(wait.min(MAX_WAIT), news).await;
        self.after(after, keep)
    }

    /// The last number given.
    pub fn last(&self) -> u64 {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}
