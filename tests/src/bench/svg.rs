//! The benchmark's chart as a standalone SVG: new TCP connections per second against the
//! number of published ports (one line per datapath; `direct` publishes nothing and is
//! drawn flat as the floor; `netd-macvlan`, which publishes nothing either, is one point
//! at 1 port, its only measurement), TCP throughput per datapath (inbound: through a
//! published port or to the container's own address; outbound: masqueraded or from its
//! own address), and 64-byte frames delivered per second per datapath (the XDP
//! generator), all as medians with the range as whiskers.

use std::fmt::Write;

use super::report::{Results, Summary};

const W: f64 = 1320.0;
const H: f64 = 420.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 360.0;
const COLORS: [(&str, &str); 9] = [
    ("direct", "#7f7f7f"),
    ("iptables", "#d62728"),
    ("nftables", "#ff7f0e"),
    ("netd-tc", "#9ecae1"),
    ("netd-redirect", "#4292c6"),
    ("netd-xdp", "#08306b"),
    ("netd-macvlan", "#6a3d9a"),
    ("docker-bridge", "#8c564b"),
    ("docker-netd", "#2ca02c"),
];
/// The width the Docker comparison's two panels add.
const DOCKER_W: f64 = 660.0;

fn color(dp: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(d, _)| *d == dp)
        .map(|(_, c)| *c)
        .unwrap_or("#000")
}

/// A round axis maximum above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * step >= v * 1.05 {
            return m * step;
        }
    }
    10.0 * step
}

fn y_of(v: f64, max: f64) -> f64 {
    BOTTOM - v / max * (BOTTOM - TOP)
}

fn axis(s: &mut String, x0: f64, x1: f64, max: f64, unit: &str) {
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = y_of(v, max);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            if max >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="{:.1}" font-size="11">{unit}</text>"#,
        TOP - 10.0
    );
}

/// One datapath's bar (its median) in a slot `slot` wide at `x`, with its min-max whisker.
fn bar_with_whisker(s: &mut String, x: f64, slot: f64, v: &Summary, max: f64, fill: &str) {
    let y = y_of(v.median, max);
    let _ = writeln!(
        s,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
        slot * 0.9,
        BOTTOM - y,
    );
    whisker(s, x + slot * 0.45, v, max, "#333");
}

fn whisker(s: &mut String, x: f64, sum: &Summary, max: f64, col: &str) {
    let _ = writeln!(
        s,
        r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{col}"/>"#,
        y_of(sum.min, max),
        y_of(sum.max, max)
    );
}

pub fn chart(results: &Results) -> String {
    let mut s = String::new();
    let engines = results.engines();
    // A run with `--only` draws only the panels it has numbers for.
    let datapaths_w = if results.datapaths().is_empty() {
        0.0
    } else {
        W
    };
    let engines_w = if engines.is_empty() { 0.0 } else { DOCKER_W };
    let width = datapaths_w + engines_w;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    if datapaths_w > 0.0 {
        connection_rate(&mut s, results, 80.0, 500.0);
        throughput(&mut s, results, 600.0, 960.0);
        forwarding_64(&mut s, results, 1040.0, 1290.0);
    }
    if engines_w > 0.0 {
        let x = datapaths_w;
        docker_connections(&mut s, results, x + 60.0, x + 300.0);
        docker_publish(&mut s, results, x + 380.0, x + DOCKER_W - 30.0);
    }
    // Legend.
    let named: Vec<String> = results.datapaths().into_iter().chain(engines).collect();
    for (i, dp) in named.iter().enumerate() {
        let x = 80.0 + i as f64 * 150.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{:.0}" font-size="12">{dp}</text>"#,
            H - 28.0,
            color(dp),
            x + 16.0,
            H - 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Left: connections/s against published ports, categories spaced evenly.
fn connection_rate(s: &mut String, r: &Results, x0: f64, x1: f64) {
    let scales = r.scales();
    let dps = r.datapaths();
    let value = |dp: &str, n: u32| {
        let key = format!("conn_rate@{n}");
        if dp == "direct" {
            r.floor(&key)
        } else {
            r.summary(dp, &key)
        }
    };
    let max = nice_max(
        dps.iter()
            .flat_map(|dp| scales.iter().filter_map(move |&n| value(dp, n)))
            .map(|v| v.max)
            .fold(0.0, f64::max),
    );
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="24" font-size="14" font-weight="bold">New TCP connections/s through a published port</text>"#
    );
    axis(s, x0, x1, max, "connections/s");
    let step = (x1 - x0) / scales.len().max(1) as f64;
    let x_of = |i: usize| x0 + step * (i as f64 + 0.5);
    for (i, n) in scales.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.0}" text-anchor="middle" font-size="11">{n} ports</text>"#,
            x_of(i),
            BOTTOM + 16.0
        );
    }
    for dp in &dps {
        let col = color(dp);
        let points: Vec<(f64, Summary)> = scales
            .iter()
            .enumerate()
            .filter_map(|(i, &n)| Some((x_of(i), value(dp, n)?)))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(x, v)| format!("{x:.1},{:.1}", y_of(v.median, max)))
            .collect();
        let dash = if dp == "direct" {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{col}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        for (x, v) in &points {
            whisker(s, *x, v, max, col);
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{col}"/>"#,
                y_of(v.median, max)
            );
        }
    }
}

/// Right: TCP throughput per datapath, into the container and out of it side by side
/// (published port and masqueraded where the node translates, the container's own
/// address where it does not).
fn throughput(s: &mut String, r: &Results, x0: f64, x1: f64) {
    let dps = r.datapaths();
    let kinds = [("tcp_gbps", "inbound"), ("egress_gbps", "outbound")];
    let max = nice_max(
        dps.iter()
            .flat_map(|dp| kinds.iter().filter_map(|(k, _)| r.summary(dp, k)))
            .map(|v| v.max)
            .fold(0.0, f64::max),
    );
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="24" font-size="14" font-weight="bold">TCP throughput, one stream</text>"#
    );
    axis(s, x0, x1, max, "Gbit/s");
    let group = (x1 - x0) / kinds.len() as f64;
    let bar = group / (dps.len() as f64 + 1.0);
    for (g, (key, label)) in kinds.iter().enumerate() {
        let gx = x0 + g as f64 * group;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.0}" text-anchor="middle" font-size="11">{label}</text>"#,
            gx + group / 2.0,
            BOTTOM + 16.0
        );
        for (i, dp) in dps.iter().enumerate() {
            let Some(v) = r.summary(dp, key) else {
                continue;
            };
            bar_with_whisker(s, gx + bar * (i as f64 + 0.5), bar, &v, max, color(dp));
        }
    }
}

/// Far right: 64-byte frames delivered to the container per second, per datapath.
fn forwarding_64(s: &mut String, r: &Results, x0: f64, x1: f64) {
    let dps: Vec<(String, Summary)> = r
        .datapaths()
        .into_iter()
        .filter_map(|dp| Some((dp.clone(), r.summary(&dp, "fwd64_pps")?)))
        .collect();
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="24" font-size="14" font-weight="bold">64-byte frames delivered, 1 CPU</text>"#
    );
    let max = nice_max(dps.iter().map(|(_, v)| v.max / 1e6).fold(0.0, f64::max));
    axis(s, x0, x1, max, "Mpps");
    let bar = (x1 - x0) / (dps.len() as f64 + 1.0);
    for (i, (dp, v)) in dps.iter().enumerate() {
        let mpps = Summary {
            median: v.median / 1e6,
            min: v.min / 1e6,
            max: v.max / 1e6,
        };
        bar_with_whisker(s, x0 + bar * (i as f64 + 0.5), bar, &mpps, max, color(dp));
    }
}

/// Grouped bars of the Docker engines: one group per `(key, label)`, a bar per engine.
fn engine_groups(
    s: &mut String,
    r: &Results,
    x0: f64,
    x1: f64,
    title: &str,
    unit: &str,
    groups: &[(String, String)],
) {
    let engines = r.engines();
    let max = nice_max(
        engines
            .iter()
            .flat_map(|e| groups.iter().filter_map(|(k, _)| r.engine_summary(e, k)))
            .map(|v| v.max)
            .fold(0.0, f64::max),
    );
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="24" font-size="14" font-weight="bold">{title}</text>"#
    );
    axis(s, x0, x1, max, unit);
    let group = (x1 - x0) / groups.len().max(1) as f64;
    let bar = group / (engines.len() as f64 + 1.0);
    for (g, (key, label)) in groups.iter().enumerate() {
        let gx = x0 + g as f64 * group;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.0}" text-anchor="middle" font-size="11">{label}</text>"#,
            gx + group / 2.0,
            BOTTOM + 16.0
        );
        for (i, e) in engines.iter().enumerate() {
            if let Some(v) = r.engine_summary(e, key) {
                bar_with_whisker(s, gx + bar * (i as f64 + 0.5), bar, &v, max, color(e));
            }
        }
    }
}

/// Docker: new connections per second through a published port, with 1 port and with
/// the largest range published.
fn docker_connections(s: &mut String, r: &Results, x0: f64, x1: f64) {
    let mut groups = vec![("conn_rate@1".to_string(), "1 port".to_string())];
    if let Some(n) = r.engine_ranges().last() {
        groups.push(("conn_rate@range".into(), format!("{} ports", n + 2)));
    }
    engine_groups(s, r, x0, x1, "Docker: new TCP conn/s", "conn/s", &groups);
}

/// Docker: seconds for `docker run -p` of each range, and for `docker rm -f` of it.
fn docker_publish(s: &mut String, r: &Results, x0: f64, x1: f64) {
    let groups: Vec<(String, String)> = r
        .engine_ranges()
        .iter()
        .flat_map(|n| {
            [
                (format!("publish_s@{n}"), format!("run -p {n}")),
                (format!("remove_s@{n}"), format!("rm {n}")),
            ]
        })
        .collect();
    engine_groups(s, r, x0, x1, "Docker: publish a port range", "s", &groups);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::bed::Datapath;

    fn width(svg: &str) -> f64 {
        let (_, rest) = svg.split_once("width=\"").unwrap();
        rest.split('"').next().unwrap().parse().unwrap()
    }

    #[test]
    fn a_run_draws_only_the_panels_it_measured() {
        let mut docker = Results::new(true, 1);
        docker.add_engine("docker-bridge", "conn_rate@1", 100.0);
        docker.add_engine("docker-netd", "conn_rate@1", 120.0);
        let svg = chart(&docker);
        assert_eq!(width(&svg), DOCKER_W);
        assert!(svg.contains("Docker: new TCP conn/s"));
        assert!(
            !svg.contains("64-byte frames"),
            "empty datapath panels drawn"
        );

        let mut datapaths = Results::new(true, 1);
        datapaths.add(Datapath::Direct, "conn_rate@1", 100.0);
        let svg = chart(&datapaths);
        assert_eq!(width(&svg), W);
        assert!(!svg.contains("Docker:"));

        datapaths.add_engine("docker-netd", "conn_rate@1", 120.0);
        assert_eq!(width(&chart(&datapaths)), W + DOCKER_W);
    }
}
