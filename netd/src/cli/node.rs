//! `netd node ...`: the nodes of the cluster this node is in (`--cluster-store`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;

use super::{FormatArgs, print_table, remove_each};
use crate::api::{Client, NodeView};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the cluster's nodes: ready while their lease holds, down after it lapsed.
    #[command(alias = "list")]
    Ls(FormatArgs),
    /// Forget nodes that are down (their records stay listed until removed).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(client: &Client, command: NodeCommand) -> Result<ExitCode> {
    match command {
        NodeCommand::Ls(format) => ls(client, format).await,
        NodeCommand::Rm { names } => remove_each(client, "nodes", &names, "").await,
    }
}

/// NAME (this node marked `*`, as `docker node ls` marks it), ADDRESS, STATUS, LAST SEEN.
async fn ls(client: &Client, format: FormatArgs) -> Result<ExitCode> {
    let nodes: Vec<NodeView> = client.call(Method::GET, "nodes", None::<&()>).await?;
    if format.json()? {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::unix_now();
    let rows: Vec<[String; 4]> = nodes
        .iter()
        .map(|n| {
            [
                if n.this_node {
                    format!("{} *", n.name)
                } else {
                    n.name.clone()
                },
                n.address.to_string(),
                match n.status.as_str() {
                    "ready" => "Ready".into(),
                    "down" => "Down".into(),
                    other => other.to_string(),
                },
                ago(now.saturating_sub(n.last_seen)),
            ]
        })
        .collect();
    print_table(&["NAME", "ADDRESS", "STATUS", "LAST SEEN"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// `3 seconds ago`, `2 minutes ago`, `5 hours ago`, `4 days ago`.
fn ago(seconds: u64) -> String {
    let (n, unit) = match seconds {
        0..=1 => return "just now".into(),
        2..=119 => (seconds, "second"),
        120..=7199 => (seconds / 60, "minute"),
        7200..=172_799 => (seconds / 3600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{n} {unit}s ago")
}

#[cfg(test)]
mod tests {
    use super::ago;

    #[test]
    fn last_seen_reads_like_dockers_times() {
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(5), "5 seconds ago");
        assert_eq!(ago(600), "10 minutes ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
    }
}
