//! A netd command that streams (`netd events`, `netd monitor`), running against a test's
//! daemon, its output lines as they come; killed on drop.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{Daemon, daemon::netd_bin};

pub struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Stream {
    /// `netd ARGS` (e.g. `events --format json`) against `d`'s socket.
    pub fn start(d: &Daemon, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(netd_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start netd {}", args.join(" ")))?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Stream { child, lines })
    }

    /// The next line, within `within`.
    pub fn next_line(&self, within: Duration) -> Result<String> {
        self.lines
            .recv_timeout(within)
            .with_context(|| format!("no output within {within:?}"))
    }

    /// The next line as JSON, within `within`.
    pub fn next(&self, within: Duration) -> Result<Value> {
        Ok(serde_json::from_str(&self.next_line(within)?)?)
    }

    /// Interrupt it (SIGINT, as Ctrl-C does) and wait for it to exit; its exit status.
    pub fn interrupt(&mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: kill on the pid of a child this stream started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("it did not exit within 5 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line until none comes for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<String> {
        std::iter::from_fn(|| self.lines.recv_timeout(quiet).ok()).collect()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
