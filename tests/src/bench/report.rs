//! The benchmark's samples and what is made of them: the terminal table, the netd
//! variants' ratios to their baselines (the bridge's to iptables and the direct path,
//! macvlan's to netd's bridge and the direct path), the issue's targets as met or not
//! (reported, never asserted), the JSON file with every raw sample, and the machine the
//! numbers came from.

use std::{collections::BTreeMap, process::Command};

use serde_json::{Value, json};

use super::{bed::Datapath, cni::CniPlugin, engines::Engine, overlay::CrossNode};

/// Every sample of one run of the benchmark.
pub struct Results {
    pub quick: bool,
    pub runs: usize,
    /// datapath -> metric key -> samples.
    samples: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// datapath -> what its own counters said about the translation.
    evidence: BTreeMap<String, String>,
    /// The per-packet cost of netd's programs (the `datapath_cost` bench's JSON).
    pub program_cost: Option<Value>,
    /// What a reader needs to know about how some rows were measured, by topic.
    notes: BTreeMap<String, String>,
    /// netd datapath -> the daemon's flags and what `netd info` said about them.
    config: BTreeMap<String, Value>,
    /// Docker engine (`docker-bridge`, `docker-netd`) -> metric key -> samples.
    engines: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Docker engine -> what its translation left as evidence.
    engine_evidence: BTreeMap<String, String>,
    /// CNI plugin (`cni-bridge`, `cni-netd`) -> metric key -> samples.
    cni: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// CNI plugin -> what it left in the node as evidence.
    cni_evidence: BTreeMap<String, String>,
    /// Cross-node bed (`vxlan-fdb`, `netd-overlay`, `netd-same-node`) -> metric key ->
    /// samples.
    overlay: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Cross-node bed -> which path its counters show the traffic took.
    overlay_evidence: BTreeMap<String, String>,
}

/// Median and range of some samples.
#[derive(Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: s[0],
            max: s[n - 1],
        })
    }

    /// Half the range, in percent of the median.
    pub fn spread_percent(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median.abs() * 100.0
        }
    }
}

impl Results {
    pub fn new(quick: bool, runs: usize) -> Self {
        Results {
            quick,
            runs,
            samples: BTreeMap::new(),
            evidence: BTreeMap::new(),
            program_cost: None,
            notes: BTreeMap::new(),
            config: BTreeMap::new(),
            engines: BTreeMap::new(),
            engine_evidence: BTreeMap::new(),
            cni: BTreeMap::new(),
            cni_evidence: BTreeMap::new(),
            overlay: BTreeMap::new(),
            overlay_evidence: BTreeMap::new(),
        }
    }

    pub fn add_overlay(&mut self, bed: &str, key: &str, value: f64) {
        push(&mut self.overlay, bed, key, value);
    }

    pub fn overlay_evidence(&mut self, bed: &str, text: String) {
        self.overlay_evidence.insert(bed.to_string(), text);
    }

    /// The cross-node beds measured, the kernel's VXLAN first.
    pub fn overlays(&self) -> Vec<String> {
        measured(&CrossNode::ALL, &self.overlay)
    }

    pub fn add_cni(&mut self, plugin: &str, key: &str, value: f64) {
        push(&mut self.cni, plugin, key, value);
    }

    pub fn cni_evidence(&mut self, plugin: &str, text: String) {
        self.cni_evidence.insert(plugin.to_string(), text);
    }

    /// The CNI plugins measured, the reference chain first.
    pub fn cni_plugins(&self) -> Vec<String> {
        measured(&CniPlugin::ALL, &self.cni)
    }

    pub fn add_engine(&mut self, engine: &str, key: &str, value: f64) {
        push(&mut self.engines, engine, key, value);
    }

    pub fn engine_evidence(&mut self, engine: &str, text: String) {
        self.engine_evidence.insert(engine.to_string(), text);
    }

    /// The Docker engines measured, Docker's own bridge driver first.
    pub fn engines(&self) -> Vec<String> {
        measured(&Engine::ALL, &self.engines)
    }

    pub fn engine_summary(&self, engine: &str, key: &str) -> Option<Summary> {
        Summary::of(self.engines.get(engine)?.get(key)?)
    }

    /// The sizes of the ranges published with `docker run -p`, ascending.
    pub fn engine_ranges(&self) -> Vec<u32> {
        suffixes(&self.engines, "publish_s@")
    }

    pub fn note(&mut self, topic: &str, text: String) {
        self.notes.insert(topic.to_string(), text);
    }

    pub fn config(&mut self, dp: Datapath, config: Value) {
        self.config.insert(dp.to_string(), config);
    }

    pub fn add(&mut self, dp: Datapath, key: &str, value: f64) {
        push(&mut self.samples, &dp.to_string(), key, value);
    }

    pub fn evidence(&mut self, dp: Datapath, text: String) {
        self.evidence.insert(dp.to_string(), text);
    }

    pub fn datapaths(&self) -> Vec<String> {
        measured(&Datapath::ALL, &self.samples)
    }

    pub fn summary(&self, dp: &str, key: &str) -> Option<Summary> {
        Summary::of(self.samples.get(dp)?.get(key)?)
    }

    /// The scales that were measured (published ports), ascending.
    pub fn scales(&self) -> Vec<u32> {
        suffixes(&self.samples, "conn_rate@")
    }

    /// The direct path has no published ports: its 1-port figure is the floor at every
    /// scale.
    pub fn floor(&self, key: &str) -> Option<Summary> {
        self.summary("direct", key).or_else(|| {
            let (base, _) = key.split_once('@')?;
            self.summary("direct", &format!("{base}@1"))
        })
    }

    pub fn to_json(&self) -> Value {
        let datapaths = samples_json(&self.samples);
        json!({
            "machine": machine(),
            "quick": self.quick,
            "runs": self.runs,
            "cpu_placement": "clients on CPU 0, servers on CPU 1 (taskset); the node's forwarding runs in softirq on the sending CPU",
            "units": ROWS.iter().map(|r| (r.key, r.unit)).collect::<BTreeMap<_, _>>(),
            "datapaths": datapaths,
            "translation_evidence": self.evidence,
            "netd_config": self.config,
            "notes": self.notes,
            "targets": self.targets(),
            "program_cost_ns_per_packet": self.program_cost,
            "docker_engines": samples_json(&self.engines),
            "docker_engine_units": ENGINE_ROWS.iter().map(|r| (r.key, r.unit)).collect::<BTreeMap<_, _>>(),
            "docker_engine_evidence": self.engine_evidence,
            "cni_plugins": samples_json(&self.cni),
            "cni_units": CNI_ROWS.iter().map(|r| (r.key, r.unit)).collect::<BTreeMap<_, _>>(),
            "cni_evidence": self.cni_evidence,
            "cross_node": samples_json(&self.overlay),
            "cross_node_units": OVERLAY_ROWS.iter().map(|r| (r.key, r.unit)).collect::<BTreeMap<_, _>>(),
            "cross_node_evidence": self.overlay_evidence,
        })
    }

    /// The terminal table: one row per metric, one column per datapath (median ±half
    /// range); then each netd variant's ratios to its baselines, the targets, and the
    /// notes.
    pub fn table(&self) -> String {
        let dps = self.datapaths();
        let mut out = String::new();
        if dps.is_empty() {
            out.push_str(&self.engine_table());
            out.push_str(&self.cni_table());
            out.push_str(&self.overlay_table());
            out.push_str(&self.notes_text());
            return out;
        }
        let mut header = format!("{:<46}", "metric (median ±half-range)");
        for dp in &dps {
            header.push_str(&format!("{dp:>15}"));
        }
        out.push_str(&format!(
            "{header}\n{}\n",
            "-".repeat(header.chars().count())
        ));
        for row in self.rows() {
            let cells: Vec<Option<String>> = dps
                .iter()
                .map(|dp| self.summary(dp, &row.key).map(|s| cell(&s, row.scale)))
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            out.push_str(&format!("{:<46}", row.label));
            for c in cells {
                out.push_str(&format!("{:>15}", c.unwrap_or_else(|| "-".into())));
            }
            out.push('\n');
        }
        out.push_str(&self.ratios());
        out.push_str(&self.engine_table());
        out.push_str(&self.cni_table());
        out.push_str(&self.overlay_table());
        let targets = self.targets();
        if !targets.is_empty() {
            out.push_str("\ntargets of issue 6 (reported, never asserted):\n");
            for t in targets {
                out.push_str(&format!("  {t}\n"));
            }
        }
        if let Some(cost) = &self.program_cost {
            out.push_str("\nnetd's programs alone (BPF_PROG_TEST_RUN), ns per packet:\n");
            for (case, label) in COST_CASES {
                if let Some(s) = cost[case]["samples"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>())
                    .and_then(|v| Summary::of(&v))
                {
                    out.push_str(&format!("  {label:<38}{:>15}\n", cell(&s, 1.0)));
                }
            }
        }
        out.push_str(&self.notes_text());
        out
    }

    fn notes_text(&self) -> String {
        let mut out = String::new();
        if !self.notes.is_empty() {
            out.push_str("\nnotes:\n");
            for (topic, text) in &self.notes {
                out.push_str(&format!("  {topic}: {text}\n"));
            }
        }
        out
    }

    /// The ratio table's columns, in the table's order: each netd variant measured, over
    /// each of its baselines measured too.
    fn ratio_columns(&self) -> Vec<(Datapath, Datapath)> {
        let measured = |d: &Datapath| self.samples.contains_key(&d.to_string());
        Datapath::ALL
            .into_iter()
            .filter(|v| v.is_netd() && measured(v))
            .flat_map(|v| {
                v.baselines()
                    .iter()
                    .filter(|b| measured(b))
                    .map(move |&b| (v, b))
            })
            .collect()
    }

    /// A datapath's median for `key`; the direct path's is its floor (see `floor`).
    fn baseline(&self, dp: Datapath, key: &str) -> Option<Summary> {
        if dp == Datapath::Direct {
            self.floor(key)
        } else {
            self.summary(&dp.to_string(), key)
        }
    }

    /// Medians of each netd variant over each of its baselines, per metric.
    fn ratios(&self) -> String {
        let columns = self.ratio_columns();
        if columns.is_empty() {
            return String::new();
        }
        let short = |d: Datapath| d.to_string().trim_start_matches("netd-").to_string();
        // A variant's first column is wider: it sets the variants apart.
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, (v, _))| {
                if i > 0 && columns[i - 1].0 == *v {
                    17
                } else {
                    20
                }
            })
            .collect();
        let mut header = format!("{:<46}", "netd variant ÷ baseline (medians)");
        for (&(v, b), w) in columns.iter().zip(&widths) {
            header.push_str(&format!("{:>w$}", format!("{}÷{}", short(v), short(b))));
        }
        let mut out = format!("\n{header}\n{}\n", "-".repeat(header.chars().count()));
        for row in self.rows() {
            let cells: Vec<Option<String>> = columns
                .iter()
                .map(|&(v, b)| {
                    match (
                        self.summary(&v.to_string(), &row.key),
                        self.baseline(b, &row.key),
                    ) {
                        (Some(n), Some(o)) if o.median != 0.0 => {
                            Some(format!("{:.2}x", n.median / o.median))
                        }
                        _ => None,
                    }
                })
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            out.push_str(&format!("{:<46}", row.label));
            for (c, w) in cells.into_iter().zip(&widths) {
                out.push_str(&format!("{:>w$}", c.unwrap_or_else(|| "-".into())));
            }
            out.push('\n');
        }
        out
    }

    /// Issue 6's targets for the fast-path variants, each as met, not met or not measured:
    /// new connections/s at 10,000 ports at least the direct path's, and 64-byte
    /// forwarding at least 2x iptables and 1.2x the direct path.
    pub fn targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let verdict = |v: &str,
                       key: &str,
                       label: &str,
                       base: &str,
                       other: Option<Summary>,
                       want: f64| {
            match (self.summary(v, key), other) {
                (Some(n), Some(o)) if o.median > 0.0 => {
                    let x = n.median / o.median;
                    format!(
                        "{v}: {label} {:.0} vs {base} {:.0} = {x:.2}x (target ≥ {want:.1}x): {}",
                        n.median,
                        o.median,
                        if x >= want { "met" } else { "NOT met" }
                    )
                }
                _ => format!("{v}: {label} vs {base} (target ≥ {want:.1}x): not measured"),
            }
        };
        for v in ["netd-redirect", "netd-xdp"] {
            if !self.samples.contains_key(v) {
                continue;
            }
            let key = "conn_rate@10000";
            out.push(verdict(
                v,
                key,
                "new conn/s at 10,000 ports",
                "direct",
                self.floor(key),
                1.0,
            ));
            let key = "fwd64_pps";
            out.push(verdict(
                v,
                key,
                "64 B pps delivered",
                "iptables",
                self.summary("iptables", key),
                2.0,
            ));
            out.push(verdict(
                v,
                key,
                "64 B pps delivered",
                "direct",
                self.summary("direct", key),
                1.2,
            ));
        }
        out
    }

    /// The table's rows, the scale rows once per measured scale.
    fn rows(&self) -> Vec<TableRow> {
        let mut rows = Vec::new();
        for r in ROWS {
            if r.key.ends_with('@') {
                for n in self.scales() {
                    rows.push(TableRow {
                        key: format!("{}{n}", r.key),
                        label: format!(
                            "{} ({}), {n} port{}",
                            r.label,
                            r.unit,
                            if n == 1 { "" } else { "s" }
                        ),
                        scale: r.scale,
                    });
                }
            } else {
                rows.push(TableRow {
                    key: r.key.to_string(),
                    label: format!("{} ({})", r.label, r.unit),
                    scale: r.scale,
                });
            }
        }
        rows
    }
}

/// Every sample of each of `samples`' keys, with its median and range.
fn samples_json(samples: &BTreeMap<String, BTreeMap<String, Vec<f64>>>) -> Value {
    let map: serde_json::Map<String, Value> = samples
        .iter()
        .map(|(name, metrics)| {
            let m: serde_json::Map<String, Value> = metrics
                .iter()
                .map(|(k, v)| {
                    let s = Summary::of(v);
                    (
                        k.clone(),
                        json!({
                            "samples": v,
                            "median": s.map(|s| s.median),
                            "min": s.map(|s| s.min),
                            "max": s.map(|s| s.max),
                        }),
                    )
                })
                .collect();
            (name.clone(), Value::Object(m))
        })
        .collect();
    Value::Object(map)
}

impl Results {
    /// Docker's bridge driver against Docker with netd: one row per metric, a column per
    /// engine, and netd's median over the bridge driver's.
    fn engine_table(&self) -> String {
        let largest = self.engine_ranges().last().copied();
        let mut rows = Vec::new();
        for row in ENGINE_ROWS {
            if row.key.ends_with('@') {
                rows.extend(self.engine_ranges().iter().map(|n| {
                    (
                        format!("{}{n}", row.key),
                        format!("{}, {n} ports ({})", row.label, row.unit),
                    )
                }));
            } else {
                let ports = match (row.key.ends_with("@range"), largest) {
                    (true, Some(n)) => format!(", {} ports", n + 2),
                    _ => String::new(),
                };
                rows.push((
                    row.key.to_string(),
                    format!("{}{ports} ({})", row.label, row.unit),
                ));
            }
        }
        pair_table(
            "Docker with netd vs Docker's bridge driver",
            &["netd÷bridge"],
            &self.engines(),
            &self.engines,
            &rows,
            &self.engine_evidence,
        )
    }

    /// The reference CNI chain (bridge + host-local + portmap) against netd-cni.
    fn cni_table(&self) -> String {
        let rows: Vec<(String, String)> = CNI_ROWS
            .iter()
            .map(|r| (r.key.to_string(), format!("{} ({})", r.label, r.unit)))
            .collect();
        pair_table(
            "netd-cni vs bridge + host-local + portmap",
            &["netd÷reference"],
            &self.cni_plugins(),
            &self.cni,
            &rows,
            &self.cni_evidence,
        )
    }
}

impl Results {
    /// Across nodes: the kernel's VXLAN path, netd's overlay (with and without XDP on
    /// the uplink), and netd's overlay within one node; each over the kernel's.
    fn overlay_table(&self) -> String {
        let rows: Vec<(String, String)> = OVERLAY_ROWS
            .iter()
            .map(|r| (r.key.to_string(), format!("{} ({})", r.label, r.unit)))
            .collect();
        let names = self.overlays();
        let ratios: Vec<String> = names
            .iter()
            .skip(1)
            .map(|n| format!("{}÷{}", n.trim_start_matches("netd-"), names[0]))
            .collect();
        pair_table(
            "across nodes: container on node 1 to node 2",
            &ratios.iter().map(String::as_str).collect::<Vec<_>>(),
            &names,
            &self.overlay,
            &rows,
            &self.overlay_evidence,
        )
    }
}

/// name -> metric key -> samples.
type Samples = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn push(samples: &mut Samples, name: &str, key: &str, value: f64) {
    samples
        .entry(name.to_string())
        .or_default()
        .entry(key.to_string())
        .or_default()
        .push(value);
}

/// The names of `all` that have samples, in `all`'s order.
fn measured<T: std::fmt::Display>(all: &[T], samples: &Samples) -> Vec<String> {
    all.iter()
        .map(|t| t.to_string())
        .filter(|n| samples.contains_key(n))
        .collect()
}

/// The numbers after `prefix` in any name's keys (`conn_rate@1000` -> 1000), ascending.
fn suffixes(samples: &Samples, prefix: &str) -> Vec<u32> {
    let mut s: Vec<u32> = samples
        .values()
        .flat_map(|m| m.keys())
        .filter_map(|k| k.strip_prefix(prefix)?.parse().ok())
        .collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// Contenders side by side: one row per (key, label) with samples, a column each, then
/// each later contender's median over the first's, headed by `ratios` in order (a ratio
/// without a label is not shown).
fn pair_table(
    title: &str,
    ratios: &[&str],
    names: &[String],
    samples: &Samples,
    rows: &[(String, String)],
    evidence: &BTreeMap<String, String>,
) -> String {
    if names.is_empty() {
        return String::new();
    }
    let width = |text: &str| (text.chars().count() + 2).max(16);
    let ratios = &ratios[..ratios.len().min(names.len() - 1)];
    let mut header = format!("{title:<50}");
    for n in names {
        header.push_str(&format!("{n:>w$}", w = width(n)));
    }
    for r in ratios {
        header.push_str(&format!("{r:>w$}", w = width(r)));
    }
    let mut out = format!("\n{header}\n{}\n", "-".repeat(header.chars().count()));
    for (key, label) in rows {
        let cells: Vec<Option<Summary>> = names
            .iter()
            .map(|n| Summary::of(samples.get(n)?.get(key)?))
            .collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        out.push_str(&format!("{label:<50}"));
        for (c, n) in cells.iter().zip(names) {
            out.push_str(&format!(
                "{:>w$}",
                c.map_or_else(|| "-".into(), |s| cell(&s, 1.0)),
                w = width(n)
            ));
        }
        for (later, r) in cells[1..].iter().zip(ratios) {
            let text = match (cells[0], later) {
                (Some(first), Some(n)) if first.median != 0.0 => {
                    format!("{:.2}x", n.median / first.median)
                }
                _ => "-".into(),
            };
            out.push_str(&format!("{text:>w$}", w = width(r)));
        }
        out.push('\n');
    }
    for (n, text) in evidence {
        out.push_str(&format!("  {n}: {text}\n"));
    }
    out
}

/// The rows of the cross-node comparison.
pub const OVERLAY_ROWS: &[Row] = &[
    Row {
        key: "tcp_gbps",
        label: "TCP throughput",
        unit: "Gbit/s",
        scale: 1.0,
    },
    Row {
        key: "conn_rate",
        label: "new connections",
        unit: "/s",
        scale: 1.0,
    },
    Row {
        key: "conn_p50",
        label: "new connection, median",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn_p99",
        label: "new connection, p99",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "rr_p50",
        label: "request/response, median",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "rr_p99",
        label: "request/response, p99",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "fwd64_pps",
        label: "64 B frames delivered, XDP generator",
        unit: "pps",
        scale: 1.0,
    },
    Row {
        key: "fwd64_ns_per_packet",
        label: "64 B frames, CPU time per frame",
        unit: "ns",
        scale: 1.0,
    },
    Row {
        key: "fwd64_dropped",
        label: "64 B frames lost",
        unit: "%",
        scale: 1.0,
    },
];

/// The rows of the CNI comparison: each a median or p99 over one run's attachments.
pub const CNI_ROWS: &[Row] = &[
    Row {
        key: "add_p50@0",
        label: "ADD, median, 0 published ports",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "add_p99@0",
        label: "ADD, p99, 0 published ports",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "del_p50@0",
        label: "DEL, median, 0 published ports",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "del_p99@0",
        label: "DEL, p99, 0 published ports",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "add_p50@10000",
        label: "ADD, median, 10,000 published ports",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "add_p99@10000",
        label: "ADD, p99, 10,000 published ports",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "del_p50@10000",
        label: "DEL, median, 10,000 published ports",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "del_p99@10000",
        label: "DEL, p99, 10,000 published ports",
        unit: "ms",
        scale: 1.0,
    },
];

/// The rows of the Docker comparison; a key ending in `@` is one row per published range.
pub const ENGINE_ROWS: &[Row] = &[
    Row {
        key: "tcp_gbps",
        label: "TCP throughput, published port",
        unit: "Gbit/s",
        scale: 1.0,
    },
    Row {
        key: "conn_rate@1",
        label: "new TCP connections, 1 published port",
        unit: "conn/s",
        scale: 1.0,
    },
    Row {
        key: "conn_p99@1",
        label: "conn p99, 1 published port",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn_errors@1",
        label: "failed connections, 1 published port",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "conn_rate@range",
        label: "new TCP connections",
        unit: "conn/s",
        scale: 1.0,
    },
    Row {
        key: "conn_p99@range",
        label: "conn p99",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn_errors@range",
        label: "failed connections",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "tcp6_gbps",
        label: "TCP throughput, IPv6 client to an IPv4-only container",
        unit: "Gbit/s",
        scale: 1.0,
    },
    Row {
        key: "conn6_rate@1",
        label: "new TCP connections, IPv6 client to an IPv4-only container",
        unit: "conn/s",
        scale: 1.0,
    },
    Row {
        key: "conn6_p99@1",
        label: "conn p99, IPv6 client to an IPv4-only container",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn6_errors@1",
        label: "failed connections, IPv6 client to an IPv4-only container",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "docker_run_bare_s",
        label: "docker run, no ports",
        unit: "s",
        scale: 1.0,
    },
    Row {
        key: "publish_s@",
        label: "docker run -p",
        unit: "s",
        scale: 1.0,
    },
    Row {
        key: "publish_procs@",
        label: "processes added by docker run -p",
        unit: "count",
        scale: 1.0,
    },
    Row {
        key: "publish_mib@",
        label: "memory added by docker run -p",
        unit: "MiB RSS",
        scale: 1.0,
    },
    Row {
        key: "remove_s@",
        label: "docker rm -f",
        unit: "s",
        scale: 1.0,
    },
];

struct TableRow {
    key: String,
    label: String,
    scale: f64,
}

fn cell(s: &Summary, scale: f64) -> String {
    // A spread in percent of a zero median says nothing: show the largest sample.
    if s.median == 0.0 && s.max != 0.0 {
        return format!("0 (max {})", number(s.max / scale));
    }
    format!("{} ±{:.0}%", number(s.median / scale), s.spread_percent())
}

/// Three significant digits or so.
fn number(v: f64) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}")
}

/// A metric as the table shows it; a key ending in `@` is measured per scale.
pub struct Row {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    /// Samples are divided by this for display.
    pub scale: f64,
}

pub const ROWS: &[Row] = &[
    Row {
        key: "tcp_gbps",
        label: "TCP throughput, published port",
        unit: "Gbit/s",
        scale: 1.0,
    },
    Row {
        key: "fwd64_pps",
        label: "64 B frames delivered, XDP generator",
        unit: "kpps",
        scale: 1e3,
    },
    Row {
        key: "fwd64_dropped",
        label: "64 B frames not delivered",
        unit: "%",
        scale: 1.0,
    },
    Row {
        key: "fwd64_ns_per_packet",
        label: "64 B CPU time per delivered frame",
        unit: "ns",
        scale: 1.0,
    },
    Row {
        key: "fwd64_cycles_per_packet",
        label: "64 B cycles per delivered frame",
        unit: "cycles",
        scale: 1.0,
    },
    Row {
        key: "fwd64_client_tx_dropped",
        label: "64 B dropped at client veth (ring full)",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "fwd64_uplink_rx_dropped",
        label: "64 B uplink rx_dropped",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "fwd64_rcvbuf_full",
        label: "64 B reached the full sink socket",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "fwd64_uplink_xdp_errors",
        label: "64 B uplink veth drop/error counters",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "fwd64_softnet_dropped",
        label: "64 B backlog drops on CPU 0",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "fwd64_netd_drops",
        label: "64 B dropped by netd's programs",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "udp_rx_pps",
        label: "UDP 64 B, iperf3 (sender-limited)",
        unit: "kpps",
        scale: 1e3,
    },
    Row {
        key: "udp_loss",
        label: "UDP 64 B lost, iperf3",
        unit: "%",
        scale: 1.0,
    },
    Row {
        key: "conn_rate@",
        label: "new TCP connections",
        unit: "conn/s",
        scale: 1.0,
    },
    Row {
        key: "conn_p50@",
        label: "conn p50",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn_p99@",
        label: "conn p99",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn_errors@",
        label: "failed connections",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "rr_p50@",
        label: "1 B req/resp p50",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "rr_p99@",
        label: "1 B req/resp p99",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "egress_gbps",
        label: "masqueraded TCP throughput",
        unit: "Gbit/s",
        scale: 1.0,
    },
    Row {
        key: "egress_conn_rate",
        label: "masqueraded new connections",
        unit: "conn/s",
        scale: 1.0,
    },
    Row {
        key: "egress_conn_errors",
        label: "masqueraded failed connections",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "egress_conn_p50",
        label: "masqueraded conn p50",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "egress_conn_p99",
        label: "masqueraded conn p99",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "install_all",
        label: "install 10,000 mappings, 1 call",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "add_one",
        label: "add 1 mapping at 10,000",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "create_bare",
        label: "(netd: a container without -p)",
        unit: "ms",
        scale: 1.0,
    },
    Row {
        key: "daemon_cpu",
        label: "daemon CPU time, whole run",
        unit: "s",
        scale: 1.0,
    },
    Row {
        key: "rss_idle",
        label: "daemon RSS, idle",
        unit: "MiB",
        scale: 1.0,
    },
    Row {
        key: "rss_all",
        label: "daemon RSS, 10,000 mappings",
        unit: "MiB",
        scale: 1.0,
    },
    Row {
        key: "fwd6_pps",
        label: "IPv6: 80 B frames delivered, XDP generator",
        unit: "kpps",
        scale: 1e3,
    },
    Row {
        key: "fwd6_dropped",
        label: "IPv6: 80 B frames not delivered",
        unit: "%",
        scale: 1.0,
    },
    Row {
        key: "fwd6_ns_per_packet",
        label: "IPv6: 80 B CPU time per delivered frame",
        unit: "ns",
        scale: 1.0,
    },
    Row {
        key: "fwd6_netd_drops",
        label: "IPv6: 80 B dropped by netd's programs",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "tcp6_gbps",
        label: "IPv6: TCP throughput, published port",
        unit: "Gbit/s",
        scale: 1.0,
    },
    Row {
        key: "conn6_rate@",
        label: "IPv6: new TCP connections",
        unit: "conn/s",
        scale: 1.0,
    },
    Row {
        key: "conn6_p50@",
        label: "IPv6: conn p50",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn6_p99@",
        label: "IPv6: conn p99",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "conn6_errors@",
        label: "IPv6: failed connections",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "egress6_gbps",
        label: "IPv6: masqueraded TCP throughput",
        unit: "Gbit/s",
        scale: 1.0,
    },
    Row {
        key: "egress6_conn_rate",
        label: "IPv6: masqueraded new connections",
        unit: "conn/s",
        scale: 1.0,
    },
    Row {
        key: "egress6_conn_errors",
        label: "IPv6: masqueraded failed connections",
        unit: "per run",
        scale: 1.0,
    },
    Row {
        key: "egress6_conn_p50",
        label: "IPv6: masqueraded conn p50",
        unit: "µs",
        scale: 1.0,
    },
    Row {
        key: "egress6_conn_p99",
        label: "IPv6: masqueraded conn p99",
        unit: "µs",
        scale: 1.0,
    },
];

/// The cases of the `datapath_cost` bench, by key, as the table names them.
pub const COST_CASES: [(&str, &str); 9] = [
    ("dnat_new", "DNAT, new flow to a published port"),
    ("snat_new", "SNAT, new masqueraded flow"),
    ("established", "established flow (reply)"),
    ("established_monitored", "the same, monitor on drop,flow"),
    ("established_traced", "the same, monitor tracing"),
    ("miss", "miss (not for netd)"),
    ("endpoint_out", "a container's packet at its veth"),
    (
        "endpoint_out_uncounted",
        "the same, no per-endpoint counters",
    ),
    ("endpoint_in", "delivery to a container (counting)"),
];

/// The machine the numbers came from.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let first_line = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    json!({
        "cpu": model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": first_line("uname", &["-r"]),
        "iptables": first_line("iptables", &["-V"]),
        "nft": first_line("nft", &["--version"]),
        "iperf3": first_line("iperf3", &["--version"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_median_and_range() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[1.0, 2.0, 4.0, 10.0]).unwrap().median, 3.0);
        assert_eq!(Summary::of(&[4.0, 6.0]).unwrap().spread_percent(), 20.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratios_use_the_direct_path_at_one_port_as_the_floor_of_every_scale() {
        let mut r = Results::new(true, 1);
        r.add(Datapath::Direct, "conn_rate@1", 100.0);
        r.add(Datapath::Iptables, "conn_rate@1", 50.0);
        r.add(Datapath::Iptables, "conn_rate@10000", 10.0);
        r.add(Datapath::NetdTc, "conn_rate@1", 100.0);
        r.add(Datapath::NetdTc, "conn_rate@10000", 80.0);
        assert_eq!(r.scales(), vec![1, 10000]);
        assert_eq!(r.floor("conn_rate@10000").unwrap().median, 100.0);
        let table = r.table();
        let (_, ratios) = table.split_once("netd variant ÷ baseline").unwrap();
        let line = ratios
            .lines()
            .find(|l| l.starts_with("new TCP connections (conn/s), 10000 ports"))
            .unwrap();
        assert!(line.contains("8.00x") && line.contains("0.80x"), "{line}");
    }

    #[test]
    fn macvlan_sits_beside_the_bridge_and_is_compared_with_it_and_the_direct_path() {
        let mut r = Results::new(true, 1);
        r.add(Datapath::Direct, "tcp_gbps", 10.0);
        r.add(Datapath::NetdXdp, "tcp_gbps", 8.0);
        r.add(Datapath::NetdMacvlan, "tcp_gbps", 12.0);
        let table = r.table();
        let (main, ratios) = table.split_once("netd variant ÷ baseline").unwrap();
        let header = main.lines().next().unwrap();
        assert!(
            header.find("netd-xdp") < header.find("netd-macvlan"),
            "{header}"
        );
        // Only the baselines measured: iptables was not.
        let header: Vec<&str> = ratios.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header[header.len() - 3..],
            ["xdp÷direct", "macvlan÷xdp", "macvlan÷direct"]
        );
        let line = ratios
            .lines()
            .find(|l| l.starts_with("TCP throughput"))
            .unwrap();
        let cells: Vec<&str> = line.split_whitespace().rev().take(3).collect();
        assert_eq!(cells, ["1.20x", "1.50x", "0.80x"], "{line}");
    }

    #[test]
    fn a_variant_without_a_measured_baseline_has_no_ratios() {
        let mut r = Results::new(true, 1);
        r.add(Datapath::NetdMacvlan, "tcp_gbps", 12.0);
        assert!(!r.table().contains("netd variant ÷ baseline"));
    }

    #[test]
    fn targets_are_reported_met_or_not_for_the_fast_paths() {
        let mut r = Results::new(true, 1);
        r.add(Datapath::Direct, "conn_rate@1", 100.0);
        r.add(Datapath::Iptables, "fwd64_pps", 1000.0);
        r.add(Datapath::Direct, "fwd64_pps", 1900.0);
        r.add(Datapath::NetdRedirect, "conn_rate@10000", 120.0);
        r.add(Datapath::NetdRedirect, "fwd64_pps", 2100.0);
        let t = r.targets();
        assert_eq!(t.len(), 3, "{t:?}");
        assert!(t[0].ends_with(": met"), "{}", t[0]);
        assert!(t[1].ends_with(": met"), "{}", t[1]);
        assert!(t[2].ends_with(": NOT met"), "{}", t[2]);
    }
}
