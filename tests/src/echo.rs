//! The connection tester: an echo server in one namespace, a client in another, a random
//! payload that must come back unchanged. Sockets are opened by a thread that entered the
//! namespace (a socket stays in the namespace it was created in), so no helper binaries.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::collector::Collector;

const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP echo server keeps a quiet client's connection (one at a time): long
/// enough for a `HeldConnection` to outlast a daemon's restart on a busy 2-core machine
/// (the kernel programs' verification alone takes seconds there).
const HELD_QUIET: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Run `f` on a thread inside the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = std::fs::File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a valid fd; it changes only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        f()
    })
    .join()
    .map_err(|_| anyhow!("namespace thread panicked"))?
}

/// `/proc/sys/net/KEY` as the namespace at `ns` has it (e.g. `ipv6/conf/eth0/accept_ra`).
pub fn net_sysctl(ns: &Path, key: &str) -> String {
    let key = key.to_string();
    in_netns(ns, move || {
        Ok(std::fs::read_to_string(format!("/proc/sys/net/{key}"))?
            .trim()
            .to_string())
    })
    .unwrap()
}

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Echoes whatever arrives, and remembers who sent it.
pub struct EchoServer(Collector<SocketAddr>);

impl EchoServer {
    pub fn start(netns: &Path, proto: Proto, bind: SocketAddr) -> Result<Self> {
        let listener = in_netns(netns, move || {
            Ok(match proto {
                Proto::Tcp => Listener::Tcp(TcpListener::bind(bind)?),
                Proto::Udp => Listener::Udp(UdpSocket::bind(bind)?),
            })
        })
        .with_context(|| format!("listen on {bind} ({proto:?})"))?;
        Ok(EchoServer(Collector::spawn(move |peers, stop| {
            serve(listener, peers, stop)
        })))
    }

    /// The source addresses the server has seen, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.0.items()
    }
}

fn serve(listener: Listener, peers: &Mutex<Vec<SocketAddr>>, stop: &AtomicBool) {
    // Room for the largest datagram, so that fragmented ones come back whole.
    let mut buf = vec![0u8; 65536];
    match listener {
        Listener::Tcp(l) => {
            l.set_nonblocking(true).ok();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        peers.lock().unwrap().push(peer);
                        s.set_nonblocking(false).ok();
                        s.set_read_timeout(Some(HELD_QUIET)).ok();
                        // Nor does a peer that stopped taking data (a path that lost
                        // its segments) hold the server.
                        s.set_write_timeout(Some(HELD_QUIET)).ok();
                        // Echo until the client closes (or goes quiet).
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        Listener::Udp(u) => {
            u.set_read_timeout(Some(Duration::from_millis(50))).ok();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    peers.lock().unwrap().push(peer);
                    let _ = u.send_to(&buf[..n], peer);
                }
            }
        }
    }
}

fn random_payload() -> Vec<u8> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom into a valid buffer.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes()
}

/// From inside `netns`, send a random payload to `target` and check it comes back.
/// Returns the client's local address.
pub fn echo_once(netns: &Path, proto: Proto, target: SocketAddr) -> Result<SocketAddr> {
    in_netns(netns, move || {
        let payload = random_payload();
        let mut back = vec![0u8; payload.len()];
        let local = match proto {
            Proto::Tcp => {
                let mut s = TcpStream::connect_timeout(&target, IO_TIMEOUT)
                    .with_context(|| format!("connect to {target}"))?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.write_all(&payload)?;
                s.read_exact(&mut back)
                    .with_context(|| format!("read the echo from {target}"))?;
                s.local_addr()?
            }
            Proto::Udp => udp_exchange(0, target, &payload, &mut back)?,
        };
        if back != payload {
            bail!("echo from {target} differs from what was sent");
        }
        Ok(local)
    })
}

/// From inside `netns`, send one UDP datagram of `size` bytes to `target` (the kernel
/// fragments it when it is larger than the path's MTU) and check the whole of it comes
/// back.
pub fn udp_echo_sized(netns: &Path, target: SocketAddr, size: usize) -> Result<()> {
    in_netns(netns, move || {
        let payload: Vec<u8> = random_payload().into_iter().cycle().take(size).collect();
        let mut back = vec![0u8; size + 1];
        let s = UdpSocket::bind(unspecified(target, 0))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.connect(target)?;
        for _ in 0..5 {
            s.send(&payload)?;
            if let Ok(n) = s.recv(&mut back) {
                if back[..n] != payload[..] {
                    bail!("the {size}-byte echo from {target} came back as {n} other bytes");
                }
                return Ok(());
            }
        }
        bail!("no {size}-byte UDP echo from {target}")
    })
}

/// Like `echo_once` over UDP, from local port `port` of `netns`.
pub fn udp_echo_from(netns: &Path, port: u16, target: SocketAddr) -> Result<SocketAddr> {
    in_netns(netns, move || {
        let payload = random_payload();
        let mut back = vec![0u8; payload.len()];
        let local = udp_exchange(port, target, &payload, &mut back)?;
        if back != payload {
            bail!("echo from {target} differs from what was sent");
        }
        Ok(local)
    })
}

/// Any local address of `target`'s family, port `port`.
fn unspecified(target: SocketAddr, port: u16) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
    }
}

/// Send `payload` from local `port` (0: any) to `target` and receive the echo into `back`.
fn udp_exchange(
    port: u16,
    target: SocketAddr,
    payload: &[u8],
    back: &mut [u8],
) -> Result<SocketAddr> {
    let s = UdpSocket::bind(unspecified(target, port))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.connect(target)?;
    let mut got = None;
    // UDP may lose the first datagram while neighbours resolve: a few tries.
    for _ in 0..5 {
        s.send(payload)?;
        if let Ok(n) = s.recv(back) {
            got = Some(n);
            break;
        }
    }
    if got != Some(payload.len()) {
        bail!("no UDP echo from {target}");
    }
    Ok(s.local_addr()?)
}

/// From inside `netns`, check that `target` does NOT answer: a TCP connection is not
/// established within a second, or a UDP datagram gets no echo in three tries.
pub fn echo_fails(netns: &Path, proto: Proto, target: SocketAddr) -> Result<bool> {
    in_netns(netns, move || {
        let wait = Duration::from_millis(700);
        Ok(match proto {
            Proto::Tcp => TcpStream::connect_timeout(&target, wait).is_err(),
            Proto::Udp => {
                let s = UdpSocket::bind(unspecified(target, 0))?;
                s.set_read_timeout(Some(wait / 2))?;
                s.connect(target)?;
                let mut back = [0u8; 64];
                (0..3).all(|_| s.send(b"anyone?").is_err() || s.recv(&mut back).is_err())
            }
        })
    })
}

/// A TCP connection from inside a namespace to `target`, held open across what a test does
/// (a daemon restart, say): `exchange` checks it still carries data both ways.
pub struct HeldConnection(TcpStream);

impl HeldConnection {
    pub fn open(netns: &Path, target: SocketAddr) -> Result<Self> {
        let s = in_netns(netns, move || {
            let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            Ok(s)
        })?;
        let mut held = HeldConnection(s);
        held.exchange()?;
        Ok(held)
    }

    /// The client's end of the connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.0.local_addr()?)
    }

    pub fn exchange(&mut self) -> Result<()> {
        let msg = b"still there?";
        self.0
            .write_all(msg)
            .context("send on the held connection")?;
        let mut back = [0u8; 12];
        self.0
            .read_exact(&mut back)
            .context("read on the held connection")?;
        if &back != msg {
            bail!("the held connection echoed {back:?}");
        }
        Ok(())
    }
}
