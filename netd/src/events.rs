//! What changed on the node, as `docker events` tells it: containers created, started,
//! exited and removed, networks created, connected to, disconnected from and removed,
//! ports published and unpublished, the daemon started. The daemon keeps the last
//! [`HISTORY`] events in memory (for `netd events --since`) and wakes the clients that
//! wait for the next one (`GET /events?after=ID&wait=SECONDS`, a long poll: no lock of the
//! daemon is held while a client waits).

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::journal::Journal;
pub use crate::journal::MAX_WAIT;

/// Events kept for `--since`.
pub const HISTORY: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing from 1 for the daemon's run.
    pub id: u64,
    /// Unix time in nanoseconds.
    pub time_nano: u128,
    /// `container`, `network`, `port` or `daemon`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `create`, `start`, `die`, `remove`, `connect`, `disconnect`, `publish`, `unpublish`.
    pub action: String,
    pub actor: Actor,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The container's or network's ID, the port's binding, the daemon's version.
    pub id: String,
    /// `name` always; then what the action is about (`network`, `container`, `exitCode`).
    pub attributes: BTreeMap<String, String>,
}

/// A page of events for a client, and where the next page starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Page {
    pub events: Vec<Event>,
    /// The ID to ask `after` next time.
    pub last: u64,
}

/// The node's recent events, and the clients waiting for more.
pub struct Events(Journal<Event>);

impl Default for Events {
    fn default() -> Self {
        Events(Journal::new(HISTORY))
    }
}

impl Events {
    /// Record an event of `kind`: `action` by the actor `id` named `name`, with more
    /// attributes.
    pub fn emit(&self, kind: &str, action: &str, id: &str, name: &str, more: &[(&str, String)]) {
        let mut attributes: BTreeMap<String, String> = more
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        attributes.insert("name".into(), name.to_string());
        let time_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let actor = Actor {
            id: id.to_string(),
            attributes,
        };
        self.0.extend([actor], |id, actor| Event {
            id,
            time_nano,
            kind: kind.to_string(),
            action: action.to_string(),
            actor,
        });
    }

    /// The daemon is stopping: every wait ends now, and later ones do not wait (a
    /// stopping daemon waits for its requests to finish).
    pub fn close(&self) {
        self.0.close();
    }

    /// The kept events after ID `after` that happened at `since` (Unix nanoseconds) or
    /// later.
    pub fn after(&self, after: u64, since: u128) -> Page {
        let (events, last) = self.0.after(after, |e| e.time_nano >= since);
        Page { events, last }
    }

    /// `after`, waiting up to `wait` (at most [`MAX_WAIT`]) for an event if there is none
    /// yet.
    pub async fn wait_after(&self, after: u64, since: u128, wait: Duration) -> Page {
        let (events, last) = self
            .0
            .wait_after(after, |e| e.time_nano >= since, wait)
            .await;
        Page { events, last }
    }
}

/// `netd events --filter`: `key=value` pairs (also several in one, comma-separated);
/// values of one key are alternatives, different keys must all match. Keys: `type`,
/// `event` (the action), `name`, and any attribute (`network`, `container`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    wanted: BTreeMap<String, Vec<String>>,
}

impl Filter {
    pub fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pair in specs.iter().flat_map(|s| s.split(',')) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --filter {pair:?}: expected KEY=VALUE, e.g. type=container"
                )
            })?;
            if key.is_empty() || value.is_empty() {
                anyhow::bail!("invalid --filter {pair:?}: expected KEY=VALUE, e.g. name=web");
            }
            if key == "type" && !["container", "network", "port", "daemon"].contains(&value) {
                anyhow::bail!(
                    "invalid --filter type={value}: expected container, network, port or daemon"
                );
            }
            wanted
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
        Ok(Filter { wanted })
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.wanted.iter().all(|(key, values)| {
            let have = match key.as_str() {
                "type" => Some(&e.kind),
                "event" | "action" => Some(&e.action),
                other => e.actor.attributes.get(other),
            };
            have.is_some_and(|h| values.iter().any(|v| v == h))
        })
    }
}

/// `--since`: a duration back from now (`30s`, `10m`, `1h30m`, `2h`), as Unix
/// nanoseconds.
pub fn since(spec: &str, now_nano: u128) -> anyhow::Result<u128> {
    let bad = || {
        anyhow::anyhow!("invalid --since {spec:?}: expected a duration such as 30s, 10m or 1h30m")
    };
    let mut total = 0u128;
    let mut digits = String::new();
    for c in spec.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u128 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() || spec.is_empty() {
        return Err(bad());
    }
    Ok(now_nano.saturating_sub(total * 1_000_000_000))
}

/// One line per event, as `docker events` prints them:
/// `2026-12-04T12:00:00.123456789Z container start 3f2a9c1b2d4e (name=web, network=netd0)`.
pub fn line(e: &Event) -> String {
    let secs = (e.time_nano / 1_000_000_000) as i64;
    let nanos = (e.time_nano % 1_000_000_000) as u32;
    let attrs: Vec<String> = e
        .actor
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{}.{nanos:09}Z {} {} {} ({})",
        utc(secs),
        e.kind,
        e.action,
        e.actor.id,
        attrs.join(", ")
    )
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC for Unix seconds `t` (days to civil date, after Howard
/// Hinnant's algorithm).
pub fn utc(t: i64) -> String {
    let (days, rem) = (t.div_euclid(86400), t.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_pages_follow_each_other() {
        let events = Events::default();
        for i in 0..HISTORY + 5 {
            events.emit("container", "create", &i.to_string(), "c", &[]);
        }
        let all = events.after(0, 0);
        assert_eq!(all.events.len(), HISTORY);
        assert_eq!(all.events[0].id, 6, "the oldest went");
        assert_eq!(all.last, (HISTORY + 5) as u64);
        assert!(events.after(all.last, 0).events.is_empty());
    }

    #[test]
    fn a_waiting_client_wakes_for_the_next_event() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let events = std::sync::Arc::new(Events::default());
            let waiter = {
                let events = events.clone();
                tokio::spawn(async move { events.wait_after(0, 0, Duration::from_secs(5)).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            events.emit(
                "network",
                "create",
                "abc",
                "front",
                &[("driver", "bridge".into())],
            );
            let page = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("woken at once")
                .unwrap();
            assert_eq!(page.events.len(), 1);
            assert_eq!(page.events[0].actor.attributes["driver"], "bridge");
            // Nothing new: the wait ends empty after its time.
            let empty = events.wait_after(1, 0, Duration::from_millis(50)).await;
            assert!(empty.events.is_empty());
            // Stopping ends every wait at once.
            let waiter = {
                let events = events.clone();
                tokio::spawn(async move { events.wait_after(1, 0, Duration::from_secs(20)).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            events.close();
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("ended at once")
                .unwrap();
        });
    }

    #[test]
    fn filters_since_and_lines_read_as_dockers() {
        let e = Event {
            id: 1,
            time_nano: 1_796_387_308_123_456_789,
            kind: "container".into(),
            action: "start".into(),
            actor: Actor {
                id: "3f2a9c1b2d4e".into(),
                attributes: [("name", "web"), ("network", "netd0")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
            },
        };
        let f = |s: &[&str]| Filter::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(f(&["type=container,name=web"]).unwrap().matches(&e));
        assert!(f(&["type=network", "type=container"]).unwrap().matches(&e));
        assert!(!f(&["name=db"]).unwrap().matches(&e));
        assert!(f(&["event=start", "network=netd0"]).unwrap().matches(&e));
        assert!(
            f(&["type=volume"])
                .unwrap_err()
                .to_string()
                .contains("expected container, network, port or daemon")
        );
        assert!(f(&["name"]).unwrap_err().to_string().contains("KEY=VALUE"));
        let now = 10_000 * 1_000_000_000;
        assert_eq!(
            since("1h30m", now).unwrap(),
            (10_000 - 5400) * 1_000_000_000
        );
        assert_eq!(since("45s", now).unwrap(), (10_000 - 45) * 1_000_000_000);
        assert!(since("10", now).is_err() && since("5x", now).is_err() && since("", now).is_err());
        assert_eq!(
            line(&e),
            "2026-12-04T12:28:28.123456789Z container start 3f2a9c1b2d4e (name=web, network=netd0)"
        );
    }
}
