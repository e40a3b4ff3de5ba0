//! The benchmark's own TCP load: a connection-rate client, a request/response client on
//! a kept connection, and the server both talk to. No Debian tool measures new
//! connections per second with per-connection latency percentiles over a chosen path, so
//! this is a small Rust one (`netd-load`); iperf3 does throughput and UDP.
//!
//! Protocol: the client sends one byte, `c` (a short connection) or `r` (request/response);
//! the server answers with one line, `PEER LOCAL\n`, the addresses it saw (so the
//! benchmark can check that each datapath translated), then for `c` closes (the server
//! closes first, so TIME_WAIT stays on the server and the client's ports are free at
//! once) and for `r` echoes every byte until the client closes.
//!
//! Everything is bounded: clients by a duration and a count, the server by a lifetime
//! after which it exits by itself.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve `threads` accept loops on `listen` for at most `lifetime`, then exit.
pub fn serve(listen: SocketAddr, threads: usize, lifetime: Duration) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    // Ready: the parent waits for this line before it starts a client.
    println!("listening {listen}");
    std::io::stdout().flush()?;
    let listener = Arc::new(listener);
    for _ in 1..threads.max(1) {
        let l = listener.clone();
        thread::spawn(move || accept_loop(&l));
    }
    thread::spawn(move || {
        thread::sleep(lifetime);
        std::process::exit(0);
    });
    accept_loop(&listener);
    Ok(())
}

fn accept_loop(listener: &TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        let _ = serve_one(stream, peer);
    }
}

fn serve_one(mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    stream.read_exact(&mut mode)?;
    let local = stream.local_addr()?;
    stream.write_all(format!("{peer} {local}\n").as_bytes())?;
    if mode[0] == b'r' {
        // A kept connection gets its own thread so short connections keep flowing.
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// Latencies in microseconds, summarized.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Open, ask, read the answer, close, as fast as `threads` loops can, for `duration` or
/// `max` connections; prints one JSON object.
pub fn conns(to: SocketAddr, threads: usize, duration: Duration, max: u64) -> Result<()> {
    let started = Instant::now();
    let per_thread = max.div_ceil(threads.max(1) as u64);
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut seen = None;
                while (lat.len() as u64) < per_thread && started.elapsed() < duration {
                    let t = Instant::now();
                    match one_connection(to) {
                        Ok(line) => {
                            lat.push(t.elapsed().as_micros() as u64);
                            seen.get_or_insert(line);
                        }
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors, seen)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut seen = None;
    for w in workers {
        let (l, e, s) = w
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread died"))?;
        lat.extend(l);
        errors += e;
        seen = seen.or(s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "{}",
        json!({
            "connections": lat.len(),
            "errors": errors,
            "seconds": elapsed,
            "per_second": lat.len() as f64 / elapsed,
            "p50_us": percentile(&lat, 0.50),
            "p99_us": percentile(&lat, 0.99),
            "seen": seen.unwrap_or_default(),
        })
    );
    Ok(())
}

fn one_connection(to: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    s.write_all(b"c")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    if !answer.ends_with('\n') {
        bail!("short answer {answer:?}");
    }
    Ok(answer.trim().to_string())
}

/// One-byte request/response on one kept connection for `duration` or `max` exchanges;
/// prints one JSON object.
pub fn rr(to: SocketAddr, duration: Duration, max: u64) -> Result<()> {
    let s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        .with_context(|| format!("connect {to}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(b"r")?;
    let mut seen = String::new();
    r.read_line(&mut seen)?;
    let mut lat = Vec::new();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    while started.elapsed() < duration && (lat.len() as u64) < max {
        let t = Instant::now();
        w.write_all(b"x")?;
        r.read_exact(&mut byte)?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "{}",
        json!({
            "transactions": lat.len(),
            "seconds": elapsed,
            "per_second": lat.len() as f64 / elapsed,
            "p50_us": percentile(&lat, 0.50) as f64 / 1000.0,
            "p99_us": percentile(&lat, 0.99) as f64 / 1000.0,
            "seen": seen.trim(),
        })
    );
    Ok(())
}
