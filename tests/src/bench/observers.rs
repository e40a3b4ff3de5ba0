//! What watches a node in production, for the `netd-observed` bed: a scraper reading the
//! daemon's `/metrics` every second (as Prometheus would), and `netd monitor --type
//! drop,flow` attached the whole time. The bed's figures against netd-xdp's (the same
//! daemon, unwatched) are what observing costs.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{Daemon, daemon::netd_bin, prometheus::http};

/// Where the observed daemon serves its metrics (in the node's namespace).
pub const METRICS_ADDR: &str = "127.0.0.1:9464";

pub struct Observers {
    stop: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    scraper: Option<JoinHandle<()>>,
    monitor: Child,
}

impl Observers {
    /// Start scraping and monitoring the daemon of the node at `node` (a namespace path);
    /// returns once the monitor is attached and a scrape has succeeded.
    pub fn start(node: PathBuf, daemon: &Daemon) -> Result<Self> {
        let addr: SocketAddr = METRICS_ADDR.parse()?;
        http(&node, addr, "GET", "/metrics", &[]).context("the daemon's first scrape")?;
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let scraper = {
            let (stop, scrapes, failed) = (stop.clone(), scrapes.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match http(&node, addr, "GET", "/metrics", &[]) {
                        Ok(r) if r.status == 200 => scrapes.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    next += Duration::from_secs(1);
                    while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        };
        let monitor = Command::new(netd_bin())
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["monitor", "--type", "drop,flow", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start netd monitor")?;
        let observers = Observers {
            stop,
            scrapes,
            failed,
            scraper: Some(scraper),
            monitor,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while observers.monitor_sessions(daemon)? == 0 {
            if Instant::now() > deadline {
                bail!("netd monitor did not attach within 5 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(observers)
    }

    fn monitor_sessions(&self, daemon: &Daemon) -> Result<u64> {
        Ok(daemon.info()?["monitor"]["sessions"].as_u64().unwrap_or(0))
    }

    /// What they did, for the report's evidence; fails if the monitor detached or a
    /// scrape failed.
    pub fn evidence(&self, daemon: &Daemon) -> Result<String> {
        let monitor = daemon.info()?["monitor"].clone();
        if monitor["sessions"] != 1 {
            bail!("netd monitor is not attached any more: {monitor}");
        }
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!("{failed} scrapes of /metrics failed");
        }
        Ok(format!(
            "{} scrapes of /metrics, one a second; netd monitor --type {} attached: {} events sent, {} lost to its rate limit",
            self.scrapes.load(Ordering::Relaxed),
            monitor["types"].as_str().unwrap_or("?"),
            monitor["events_sent"],
            monitor["events_lost"],
        ))
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(scraper) = self.scraper.take() {
            let _ = scraper.join();
        }
        // SIGINT, as Ctrl-C: the monitor detaches; then it is reaped.
        // SAFETY: kill on the pid of a child started here and not reaped yet.
        unsafe { libc::kill(self.monitor.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.monitor.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
    }
}
