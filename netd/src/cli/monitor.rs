//! `netd monitor`: the data path's events as they happen, like `cilium monitor`: drops
//! with their reason and tuple, flows as they begin and end, each translation; one line
//! per event, or a JSON object per line. Until interrupted.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use hyper::Method;

use crate::{
    api::{Client, encode_segment},
    monitor::{self, DEFAULT_RATE, Page},
};

#[derive(Args)]
pub struct MonitorArgs {
    /// What to show: drop, flow (flows beginning and ending) or trace (every
    /// translation); repeat it or separate with commas. Default: all.
    #[arg(long = "type", short = 't')]
    types: Vec<String>,
    /// Only events of this container.
    #[arg(long)]
    container: Option<String>,
    /// Only events of containers on this network.
    #[arg(long)]
    network: Option<String>,
    /// `text` (a line per event) or `json` (an object per line).
    #[arg(long, default_value = "text")]
    format: String,
    /// Send one event in N, per CPU (in the kernel; 1: every one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,
    /// Events each CPU sends per second at most; the rest are counted as lost (0: no
    /// limit).
    #[arg(long, default_value_t = DEFAULT_RATE)]
    rate: u32,
}

/// How long one request waits for events before asking again.
const POLL_SECS: u64 = 5;

pub async fn run(client: &Client, args: MonitorArgs) -> Result<ExitCode> {
    let types = monitor::parse_types(&args.types)?;
    let json = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => bail!("invalid --format {other}: expected text or json"),
    };
    let session = session_id();
    let mut query = format!(
        "monitor?session={session}&types={}&sample={}&rate={}",
        monitor::type_names(types),
        args.sample,
        args.rate
    );
    for (key, value) in [("container", &args.container), ("network", &args.network)] {
        if let Some(v) = value {
            query.push_str(&format!("&{key}={}", encode_segment(v)));
        }
    }
    let first: Page = client.call(Method::GET, &query, None::<&()>).await?;
    let follow = follow(client, &query, first, json);
    // Interrupted, it detaches at once rather than leaving the programs sending for the
    // session's lease.
    tokio::select! {
        result = follow => result,
        () = crate::readiness::termination_signal() => {
            let detach = format!("monitor?session={session}");
            let _: serde_json::Value = client.call(Method::DELETE, &detach, None::<&()>).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Print each page's events (and the lost ones) as they come, forever.
async fn follow(client: &Client, query: &str, first: Page, json: bool) -> Result<ExitCode> {
    let (mut after, mut lost) = (first.last, first.lost);
    loop {
        let page: Page = client
            .call(
                Method::GET,
                &format!("{query}&after={after}&wait={POLL_SECS}"),
                None::<&()>,
            )
            .await?;
        // The daemon restarted: its events are numbered from 1 again, its counts from 0.
        if page.last < after || page.lost < lost {
            (after, lost) = (0, 0);
            continue;
        }
        for e in &page.events {
            if json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!("{}", monitor::line(e));
            }
        }
        if page.lost > lost {
            let n = page.lost - lost;
            if json {
                println!("{}", serde_json::json!({ "type": "lost", "count": n }));
            } else {
                println!("lost {n} events (over the rate limit, or the ring buffer was full)");
            }
        }
        (after, lost) = (page.last, page.lost);
    }
}

/// A number for this client's session, different from other clients'.
fn session_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (u64::from(std::process::id()) << 32) | u64::from(nanos)
}
