//! Prometheus metrics, served by `netd daemon --metrics-addr ADDR:PORT` at `/metrics`.
//!
//! Two kinds: what the daemon counts as it works (API requests by route and status with
//! their latency, reconcile and collector runs with their durations), kept in
//! `prometheus-client`'s metric types; and what the node is at the moment of the scrape
//! (the data path's counters, every table's fill level, containers, networks, ports),
//! read by the daemon into a [`Snapshot`] and encoded by a collector. The exposition is
//! OpenMetrics text when the scraper asks for it (`Accept: application/openmetrics-text`),
//! else the Prometheus text format 0.0.4, derived from the same encoding.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

/// The content types of the two expositions.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// 0.5 ms to about 8 s: an API call, a reconcile, a collector run.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// What the daemon counts as it works; shared by the API server and the background tasks.
#[derive(Debug)]
pub struct Metrics {
    api_requests: Family<Labels, Counter>,
    api_duration: Histograms,
    runs: Family<Labels, Counter>,
    run_duration: Histograms,
    /// When the daemon started, Unix seconds.
    started: f64,
}

/// A background task whose runs are counted and timed.
#[derive(Clone, Copy, Debug)]
pub enum Task {
    /// The start-up reconcile.
    Reconcile,
    /// One garbage-collection sweep of the connection table.
    Collector,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Reconcile => "reconcile",
            Task::Collector => "collector",
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics {
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(duration_histogram),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(duration_histogram),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        })
    }

    /// An API request served: its route (a bounded pattern, see [`route_pattern`]), the
    /// HTTP status it got and how long it took.
    pub fn api_request(&self, route: &str, status: u16, took: Duration) {
        self.api_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("code", status.to_string()),
            ])
            .inc();
        self.api_duration
            .get_or_create(&vec![("route", route.to_string())])
            .observe(took.as_secs_f64());
    }

    /// A run of `task` finished (successfully or not) after `took`.
    pub fn ran(&self, task: Task, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.runs
            .get_or_create(&vec![
                ("task", task.name().to_string()),
                ("result", result.to_string()),
            ])
            .inc();
        self.run_duration
            .get_or_create(&vec![("task", task.name().to_string())])
            .observe(took.as_secs_f64());
    }

    /// The whole exposition: these metrics and `snapshot`, as OpenMetrics text or as
    /// the Prometheus text format.
    pub fn render(&self, snapshot: Snapshot, openmetrics: bool) -> String {
        let mut registry = Registry::with_prefix("netd");
        registry.register(
            "api_requests",
            "API requests served, by route and HTTP status",
            self.api_requests.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "Time to serve an API request, by route",
            Unit::Seconds,
            self.api_duration.clone(),
        );
        registry.register(
            "task_runs",
            "Runs of the daemon's background tasks (reconcile, connection-table collector), by result",
            self.runs.clone(),
        );
        registry.register_with_unit(
            "task_run_duration",
            "Time a background task's run took",
            Unit::Seconds,
            self.run_duration.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register("build_info", "netd's version (always 1)", build);
        registry.register_with_unit(
            "start_time",
            "When the daemon started, since the Unix epoch",
            Unit::Seconds,
            ConstGauge::new(self.started),
        );
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        if openmetrics {
            out
        } else {
            prometheus_text(&out)
        }
    }
}

/// Scrapers served at once; more wait for a slot.
const MAX_SCRAPERS: usize = 8;
/// A scraper that sends no request head within this is hung up on.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `GET /metrics` on `listener` for as long as the daemon runs: each scrape gets
/// `render(openmetrics)`'s exposition, OpenMetrics when its `Accept` asks for it.
pub async fn serve<F, Fut>(listener: tokio::net::TcpListener, render: F)
where
    F: Fn(bool) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<String>> + Send + 'static,
{
    use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
    use hyper_util::rt::{TokioIo, TokioTimer};

    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let render = render.clone();
                async move {
                    let reply = |status: StatusCode, kind: &'static str, body: String| {
                        Response::builder()
                            .status(status)
                            .header(header::CONTENT_TYPE, kind)
                            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                    };
                    if req.uri().path() != "/metrics" {
                        return reply(
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "netd serves /metrics only\n".into(),
                        );
                    }
                    if req.method() != Method::GET && req.method() != Method::HEAD {
                        return reply(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "text/plain",
                            "GET /metrics\n".into(),
                        );
                    }
                    let openmetrics = req
                        .headers()
                        .get_all(header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .any(|v| v.contains("application/openmetrics-text"));
                    match render(openmetrics).await {
                        Ok(body) => reply(
                            StatusCode::OK,
                            if openmetrics {
                                OPENMETRICS
                            } else {
                                PROMETHEUS_TEXT
                            },
                            body,
                        ),
                        Err(e) => reply(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            format!("{e:#}\n"),
                        ),
                    }
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                log::debug!("metrics: a scraper's connection: {e}");
            }
        });
    }
}

/// An API request's route for the metrics' labels: the method and the path with every
/// segment that is not one of the API's own words replaced by `{}`, so that names and
/// IDs never become label values (bounded cardinality).
pub fn route_pattern(method: &str, path: &[String]) -> String {
    // The API's own words (`daemon::Daemon::route`); anything else is a name or an ID.
    const WORDS: &[&str] = &[
        "ping",
        "info",
        "containers",
        "networks",
        "connect",
        "disconnect",
        "conntrack",
        "stats",
        "nodes",
        "cni",
        "attachments",
        "check",
        "gc",
        "events",
        "monitor",
    ];
    let mut route = String::from(method);
    route.push(' ');
    if path.is_empty() {
        route.push('/');
    }
    for segment in path.iter().take(6) {
        route.push('/');
        route.push_str(if WORDS.contains(&segment.as_str()) {
            segment
        } else {
            "{}"
        });
    }
    route
}

/// The node as the scrape finds it, read by the daemon under its lock.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The data path's counters: hook, reason, packets, bytes (summed over CPUs).
    pub counters: Vec<(String, String, u64, u64)>,
    /// Each table: name, entries, capacity.
    pub tables: Vec<(String, u64, u64)>,
    pub containers: u64,
    pub networks: u64,
    pub published_ports: u64,
    /// The connection table's capacity and its confirmed and unconfirmed entries.
    pub flow_capacity: u64,
    pub flows_confirmed: u64,
    pub flows_unconfirmed: u64,
    /// Each endpoint's counters (one per container and network it is on).
    pub endpoints: Vec<EndpointSample>,
    /// Unconfirmed flows found broken by the table's evictions, and packets dropped for a
    /// full table (every hook).
    pub flow_evictions: u64,
    pub flow_table_full_drops: u64,
    /// The SNAT range's size, the most ports of it one destination holds, and the new
    /// flows refused for want of one.
    pub snat_ports: u64,
    pub snat_ports_in_use_max: u64,
    pub snat_exhausted_drops: u64,
    /// `netd monitor`: sessions attached, and the programs' events sent and lost.
    pub monitor_sessions: u64,
    pub monitor_sent: u64,
    pub monitor_lost: u64,
}

/// An endpoint's counters, as the programs keep them, with the labels that name it.
#[derive(Debug, Default)]
pub struct EndpointSample {
    pub container: String,
    pub network: String,
    /// Packets and bytes the container sent (dropped ones included) and received.
    pub out: (u64, u64),
    pub r#in: (u64, u64),
    /// Packets it sent that were dropped, by reason.
    pub drops: Vec<(String, u64)>,
}

impl Snapshot {
    /// The endpoints' traffic as counter samples: container, network, direction.
    fn endpoint_traffic(&self, pick: fn((u64, u64)) -> u64) -> Vec<(Labels, u64)> {
        self.endpoints
            .iter()
            .flat_map(|e| {
                [("in", e.r#in), ("out", e.out)].map(|(direction, counter)| {
                    let labels = vec![
                        ("container", e.container.clone()),
                        ("network", e.network.clone()),
                        ("direction", direction.to_string()),
                    ];
                    (labels, pick(counter))
                })
            })
            .collect()
    }

    fn endpoint_drops(&self) -> Vec<(Labels, u64)> {
        self.endpoints
            .iter()
            .flat_map(|e| {
                e.drops.iter().map(|(reason, packets)| {
                    let labels = vec![
                        ("container", e.container.clone()),
                        ("network", e.network.clone()),
                        ("reason", reason.clone()),
                    ];
                    (labels, *packets)
                })
            })
            .collect()
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = |pick: fn(&(String, String, u64, u64)) -> u64| {
            self.counters
                .iter()
                .map(move |c| {
                    let labels = vec![("hook", c.0.clone()), ("reason", c.1.clone())];
                    (labels, pick(c))
                })
                .collect::<Vec<_>>()
        };
        encode_counters(
            &mut encoder,
            "datapath_packets",
            "Packets netd's programs handled, by hook and reason (drops included)",
            None,
            &counters(|c| c.2),
        )?;
        // The unit is appended to the name: netd_datapath_bytes_total.
        encode_counters(
            &mut encoder,
            "datapath",
            "Bytes netd's programs handled, by hook and reason",
            Some(&Unit::Bytes),
            &counters(|c| c.3),
        )?;
        encode_counters(
            &mut encoder,
            "endpoint_packets",
            "Packets each container sent (out, drops included) and received (in), by network",
            None,
            &self.endpoint_traffic(|c| c.0),
        )?;
        encode_counters(
            &mut encoder,
            "endpoint",
            "Bytes each container sent (out) and received (in), by network",
            Some(&Unit::Bytes),
            &self.endpoint_traffic(|c| c.1),
        )?;
        encode_counters(
            &mut encoder,
            "endpoint_drops",
            "Packets each container sent that were dropped, by network and reason",
            None,
            &self.endpoint_drops(),
        )?;
        let tables = |pick: fn(&(String, u64, u64)) -> u64| {
            self.tables
                .iter()
                .map(move |t| (vec![("table", t.0.clone())], pick(t) as f64))
                .collect::<Vec<_>>()
        };
        encode_gauges(
            &mut encoder,
            "table_entries",
            "Entries in each of the data path's tables",
            &tables(|t| t.1),
        )?;
        encode_gauges(
            &mut encoder,
            "table_capacity",
            "Capacity (max_entries) of each of the data path's tables",
            &tables(|t| t.2),
        )?;
        let flows = [
            ("confirmed", self.flows_confirmed),
            ("unconfirmed", self.flows_unconfirmed),
        ]
        .map(|(state, n)| (vec![("state", state.to_string())], n as f64));
        encode_gauges(
            &mut encoder,
            "flow_entries",
            "Entries of the connection table, confirmed (seen both ways) or not",
            &flows,
        )?;
        encode_counters(
            &mut encoder,
            "flow_evictions",
            "Unconfirmed flows found broken because the full table evicted one of their halves",
            None,
            &[(Vec::new(), self.flow_evictions)],
        )?;
        encode_counters(
            &mut encoder,
            "flow_table_full_drops",
            "Packets dropped because the connection table could not take their new flow",
            None,
            &[(Vec::new(), self.flow_table_full_drops)],
        )?;
        encode_counters(
            &mut encoder,
            "snat_exhausted_drops",
            "New masqueraded flows dropped because no SNAT port was free for their destination",
            None,
            &[(Vec::new(), self.snat_exhausted_drops)],
        )?;
        let monitor = [("sent", self.monitor_sent), ("lost", self.monitor_lost)]
            .map(|(result, n)| (vec![("result", result.to_string())], n));
        encode_counters(
            &mut encoder,
            "monitor_events",
            "Events the programs sent netd monitor, or lost to its rate limit or a full ring",
            None,
            &monitor,
        )?;
        encode_gauges(
            &mut encoder,
            "snat_port_usage_ratio",
            "The most SNAT ports one destination holds, over the SNAT range's size",
            &[(
                Vec::new(),
                self.snat_ports_in_use_max as f64 / self.snat_ports.max(1) as f64,
            )],
        )?;
        for (name, help, value) in [
            (
                "flow_capacity",
                "Entries the connection table holds at most, each kind",
                self.flow_capacity,
            ),
            (
                "snat_ports",
                "Ports in the SNAT range (each destination may use them all)",
                self.snat_ports,
            ),
            (
                "snat_ports_in_use_max",
                "The most SNAT ports masqueraded flows to one destination hold",
                self.snat_ports_in_use_max,
            ),
            (
                "monitor_sessions",
                "netd monitor clients attached",
                self.monitor_sessions,
            ),
            ("containers", "Containers the daemon keeps", self.containers),
            ("networks", "Networks on this node", self.networks),
            (
                "published_ports",
                "Host ports published to containers",
                self.published_ports,
            ),
        ] {
            encode_gauges(&mut encoder, name, help, &[(Vec::new(), value as f64)])?;
        }
        Ok(())
    }
}

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let metric =
        encoder.encode_descriptor(name, help, unit, ConstCounter::new(0u64).metric_type())?;
    encode_samples(metric, samples, |v, m| ConstCounter::new(*v).encode(m))
}

fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
    encode_samples(metric, samples, |v, m| ConstGauge::new(*v).encode(m))
}

/// A family's samples; a lone sample without labels as `name value`, not `name{} value`.
fn encode_samples<V>(
    mut metric: prometheus_client::encoding::MetricEncoder,
    samples: &[(Labels, V)],
    encode: impl Fn(&V, prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    if let [(labels, value)] = samples
        && labels.is_empty()
    {
        return encode(value, metric);
    }
    for (labels, value) in samples {
        encode(value, metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family is named as
/// its samples are (`_total`), units are part of the names already, and there is no
/// `# EOF` or `# UNIT` line.
fn prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            counters: vec![
                ("UplinkIngress".into(), "dnat_new_flow".into(), 3, 180),
                (
                    "EndpointIngress".into(),
                    "drop_spoofed_source".into(),
                    1,
                    60,
                ),
            ],
            tables: vec![
                ("flows".into(), 4, 65536),
                ("published_ports".into(), 2, 65536),
            ],
            containers: 2,
            networks: 1,
            published_ports: 2,
            flow_capacity: 65536,
            flows_confirmed: 4,
            flows_unconfirmed: 0,
            endpoints: vec![EndpointSample {
                container: "web".into(),
                network: "bridge".into(),
                out: (7, 700),
                r#in: (5, 500),
                drops: vec![("drop_spoofed_source".into(), 1)],
            }],
            snat_ports: 4000,
            snat_ports_in_use_max: 1000,
            monitor_lost: 12,
            ..Snapshot::default()
        }
    }

    #[test]
    fn both_expositions_carry_the_same_samples() {
        let m = Metrics::new();
        m.api_request("GET /containers", 200, Duration::from_millis(3));
        m.ran(Task::Reconcile, true, Duration::from_millis(40));
        let om = m.render(snapshot(), true);
        let text = m.render(snapshot(), false);
        assert!(om.ends_with("# EOF\n"), "{om}");
        for want in [
            "netd_datapath_packets_total{hook=\"UplinkIngress\",reason=\"dnat_new_flow\"} 3",
            "netd_datapath_bytes_total{hook=\"EndpointIngress\",reason=\"drop_spoofed_source\"} 60",
            "netd_table_capacity{table=\"flows\"} 65536",
            "netd_flow_entries{state=\"confirmed\"} 4",
            "netd_api_requests_total{route=\"GET /containers\",code=\"200\"} 1",
            "netd_task_runs_total{task=\"reconcile\",result=\"ok\"} 1",
            "netd_build_info{version=",
            "netd_endpoint_packets_total{container=\"web\",network=\"bridge\",direction=\"out\"} 7",
            "netd_snat_port_usage_ratio 0.25",
            "netd_monitor_events_total{result=\"lost\"} 12",
            "netd_flow_evictions_total 0",
            "netd_endpoint_bytes_total{container=\"web\",network=\"bridge\",direction=\"in\"} 500",
            "netd_endpoint_drops_total{container=\"web\",network=\"bridge\",reason=\"drop_spoofed_source\"} 1",
        ] {
            assert!(om.contains(want), "OpenMetrics lacks {want}: {om}");
            assert!(text.contains(want), "text lacks {want}: {text}");
        }
        // The text format names a counter family as its samples; no OpenMetrics lines.
        assert!(text.contains("# TYPE netd_datapath_packets_total counter"));
        assert!(om.contains("# TYPE netd_datapath_packets counter"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert!(text.contains("# TYPE netd_api_request_duration_seconds histogram"));
    }

    #[test]
    fn routes_never_carry_names_or_ids() {
        let p = |path: &[&str]| {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            route_pattern("DELETE", &path)
        };
        assert_eq!(p(&["containers", "web"]), "DELETE /containers/{}");
        assert_eq!(
            p(&["cni", "attachments", "net", "0123abcd", "eth0"]),
            "DELETE /cni/attachments/{}/{}/{}"
        );
        assert_eq!(
            p(&["networks", "containers"]),
            "DELETE /networks/containers"
        );
        assert_eq!(p(&[]), "DELETE /");
        let long: Vec<&str> = ["x"; 40].to_vec();
        assert_eq!(p(&long).matches("{}").count(), 6, "bounded");
    }
}
