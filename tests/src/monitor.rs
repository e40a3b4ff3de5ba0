//! Helpers for `netd monitor`'s tests: waiting for a monitor's events, and for it to be
//! attached (with frames every container can send that its veth drops: `craft::spoofed`).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::{craft, stream::Stream};

pub fn unix_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The next event the monitor prints that `wanted` accepts, within `within` of now.
pub fn expect(mon: &Stream, within: Duration, wanted: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match mon.next(left) {
            Ok(e) if wanted(&e) => return Ok(e),
            Ok(e) => seen.push(e),
            Err(_) => bail!("no such event within {within:?}; saw {seen:#?}"),
        }
    }
}

/// Send spoofed frames from `c` until the monitor shows one: it is attached.
pub fn wait_attached(mon: &Stream, c: &crate::daemon::Container, to: Ipv4Addr) -> Result<()> {
    for _ in 0..30 {
        craft::send_frames(&c.netns, "eth0", vec![craft::spoofed(c.ip, to, 1)])?;
        if expect(mon, Duration::from_millis(200), |e| {
            e["reason"] == "drop_spoofed_source"
        })
        .is_ok()
        {
            // Whatever else the probes made.
            mon.drain(Duration::from_millis(300));
            return Ok(());
        }
    }
    bail!("the monitor never showed a probe's drop")
}
