//! The real Prometheus (Debian's), run by a test inside a namespace it made, scraping a
//! netd daemon there; read back through its HTTP query API. Plain HTTP/1.1 over a TCP
//! stream in the namespace, for the daemon's `/metrics` too.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{echo::in_netns, netns::Netns};

/// An HTTP response: status code, headers (lower-case names), body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD target` against `to` from the namespace at `netns`, with extra header lines.
pub fn http(
    netns: &Path,
    to: SocketAddr,
    method: &str,
    target: &str,
    headers: &[&str],
) -> Result<Response> {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let raw = in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok(raw)
    })?;
    let text = String::from_utf8(raw).context("the response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of the response's head")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    Ok(Response {
        status,
        body: if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        },
        headers,
    })
}

/// A chunked body's data (HTTP/1.1 chunked transfer coding; no trailers expected).
fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .context("a chunk without its size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let data = after.get(..size).context("a chunk cut short")?;
        body.push_str(data);
        rest = after.get(size + 2..).context("a chunk without its end")?;
    }
}

/// Percent-encoding of a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus scraping `target` every second, listening on `listen`, in namespace `ns`;
/// stopped and its data removed on drop.
pub struct Prometheus {
    child: Child,
    netns: PathBuf,
    pub listen: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// With the alert and recording rules of `rules`, if given.
    pub fn start(
        ns: &Netns,
        target: SocketAddr,
        listen: SocketAddr,
        rules: Option<&Path>,
    ) -> Result<Self> {
        let dir = PathBuf::from(format!("/run/netd-test/{}-prometheus", ns.name));
        fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        let mut yaml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: netd\n    static_configs:\n      - targets: ['{target}']\n"
        );
        if let Some(r) = rules {
            yaml.push_str(&format!("rule_files:\n  - '{}'\n", r.display()));
        }
        fs::write(&config, yaml)?;
        let log = fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start prometheus (cargo xtask setup installs Debian's prometheus)")?;
        let p = Prometheus {
            child,
            netns: ns.path(),
            listen,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http(&p.netns, listen, "GET", "/-/ready", &[])
                && r.status == 200
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus not ready after 20s: {}",
                    fs::read_to_string(p.dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An instant query's samples: (labels, value).
    pub fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let target = format!("/api/v1/query?query={}", encode(promql));
        let r = http(&self.netns, self.listen, "GET", &target, &[])?;
        let v: serde_json::Value =
            serde_json::from_str(&r.body).with_context(|| format!("{promql}: {}", r.body))?;
        if v["status"] != "success" {
            bail!("{promql}: {}", r.body);
        }
        Ok(v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let value = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), value))
            })
            .collect())
    }

    /// The rules loaded, each as (name, health, last error).
    pub fn rules(&self) -> Result<Vec<(String, String, String)>> {
        let r = http(&self.netns, self.listen, "GET", "/api/v1/rules", &[])?;
        let v: serde_json::Value = serde_json::from_str(&r.body)?;
        Ok(v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|rule| {
                let text = |k: &str| rule[k].as_str().unwrap_or_default().to_string();
                (text("name"), text("health"), text("lastError"))
            })
            .collect())
    }

    /// Until `promql`'s first sample is at least `at_least`, for at most `within`: its
    /// value.
    pub fn wait_for(&self, promql: &str, at_least: f64, within: Duration) -> Result<f64> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.query(promql)?;
            if let Some((_, v)) = seen.first()
                && *v >= at_least
            {
                return Ok(*v);
            }
            if Instant::now() > deadline {
                bail!("{promql}: {seen:?} after {within:?}, wanted at least {at_least}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: our own child's pid (`ip netns exec` execs prometheus in place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
