//! A background thread that records what it sees (frames, peers) until it is dropped.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

/// What the thread records so far, and the means to stop it; dropping stops and joins it.
pub struct Collector<T> {
    items: Arc<Mutex<Vec<T>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Clone + Send + 'static> Collector<T> {
    /// Run `work` on a thread of its own: it pushes what it sees into the list and returns
    /// once the flag is set (it must check it at least every few hundred milliseconds).
    pub fn spawn(work: impl FnOnce(&Mutex<Vec<T>>, &AtomicBool) + Send + 'static) -> Self {
        let items = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (items, stop) = (items.clone(), stop.clone());
            std::thread::spawn(move || work(&items, &stop))
        };
        Collector {
            items,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything recorded so far, in order.
    pub fn items(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }
}

impl<T> Drop for Collector<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
