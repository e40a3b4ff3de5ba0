//! systemd's readiness protocol (sd_notify): a datagram such as `READY=1` to the Unix
//! socket named by $NOTIFY_SOCKET (a path, or an abstract name starting with '@'). A no-op
//! when the daemon was not started by systemd with `Type=notify`.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use anyhow::{Context, Result};

const VAR: &str = "NOTIFY_SOCKET";

/// Where notifications go, if anywhere.
pub struct Notifier {
    target: Option<String>,
}

impl Notifier {
    /// Take $NOTIFY_SOCKET out of the environment, so that container processes the
    /// daemon starts do not inherit it. Call before any thread is started.
    pub fn from_env() -> Self {
        let target = std::env::var_os(VAR).map(|v| v.to_string_lossy().into_owned());
        // SAFETY: called at startup, before the daemon starts any thread.
        unsafe { std::env::remove_var(VAR) };
        Notifier { target }
    }

    /// Send `state` (newline-separated `KEY=VALUE` lines) to the service manager.
    pub fn send(&self, state: &str) -> Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let addr = match target.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => SocketAddr::from_pathname(target),
        }
        .with_context(|| format!("{VAR}={target} is not a socket address"))?;
        let socket = UnixDatagram::unbound().context("socket for sd_notify")?;
        socket
            .send_to_addr(state.as_bytes(), &addr)
            .with_context(|| format!("notify the service manager at {target}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reaches_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("netd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(path.to_string_lossy().into_owned()),
        };
        n.send("READY=1").unwrap();
        let mut buf = [0u8; 16];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("netd-notify-test-{}", std::process::id());
        let abs =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier {
            target: Some(format!("@{name}")),
        };
        n.send("STOPPING=1").unwrap();
        let len = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
        assert!(Notifier { target: None }.send("READY=1").is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
