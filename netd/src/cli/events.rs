//! `netd events`: the node's changes as they happen, like `docker events`: the kept ones
//! since `--since` first, then each new one, until interrupted.

use std::{
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail};
use clap::Args;
use hyper::Method;

use crate::{
    api::Client,
    events::{self, Filter, Page},
};

#[derive(Args)]
pub struct EventsArgs {
    /// Show the events the daemon kept since this long ago (e.g. 30s, 10m, 1h30m), then
    /// the new ones; without it, only the new ones.
    #[arg(long)]
    since: Option<String>,
    /// Only events matching KEY=VALUE: type=container|network|port|daemon, event=ACTION,
    /// name=NAME, or an attribute (network=, container=); repeat it or separate pairs with
    /// commas.
    #[arg(long, short = 'f')]
    filter: Vec<String>,
    /// `text` (a line per event, as `docker events` prints them) or `json` (an object per
    /// line).
    #[arg(long, default_value = "text")]
    format: String,
}

/// How long one request waits for the next event before asking again.
const POLL_SECS: u64 = 25;

pub async fn run(client: &Client, args: EventsArgs) -> Result<ExitCode> {
    let filter = Filter::parse(&args.filter)?;
    let json = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => bail!("invalid --format {other}: expected text or json"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let since = match &args.since {
        Some(s) => events::since(s, now)?,
        None => now,
    };
    let mut after = 0;
    loop {
        let page: Page = client
            .call(
                Method::GET,
                &format!("events?after={after}&since={since}&wait={POLL_SECS}"),
                None::<&()>,
            )
            .await?;
        // The daemon restarted: its events are numbered from 1 again.
        if page.last < after {
            after = 0;
            continue;
        }
        for e in page.events.iter().filter(|e| filter.matches(e)) {
            if json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!("{}", events::line(e));
            }
        }
        after = page.last;
    }
}
