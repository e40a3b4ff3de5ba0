//! The `--cluster-*` flags of `netd daemon`, checked before anything is touched:
//! `--cluster-store etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, `--cluster-store-opt
//! kv.cacertfile=|kv.certfile=|kv.keyfile=` (Docker's names for its store's TLS),
//! `--cluster-advertise IFACE|IP[:PORT]`, `--node-name`, `--cluster-lease-ttl`.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};

/// The store's default client port.
const ETCD_PORT: u16 = 2379;
/// Where netd's keys live in the store unless the URL names a path.
const DEFAULT_PREFIX: &str = "/netd";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The store's members as the client dials them (`http://` or, with TLS, `https://`).
    pub endpoints: Vec<String>,
    /// The `--cluster-store` URL as given, for messages.
    pub url: String,
    /// Every key netd writes starts with this (no trailing `/`).
    pub prefix: String,
    pub tls: Option<Tls>,
    pub advertise: Advertise,
    pub node_name: String,
    /// How long this node stays listed after its daemon stops renewing its lease.
    pub lease_ttl: Duration,
}

/// `--cluster-store-opt kv.*`: the CA that signs the store's certificate, and this node's
/// client certificate and key if the store asks for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The underlay address other nodes reach this one at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advertise {
    Interface(String),
    Address(Ipv4Addr),
}

impl ClusterConfig {
    pub fn parse(
        store: &str,
        opts: &[String],
        advertise: Option<&str>,
        node_name: &str,
        lease_ttl: Duration,
    ) -> Result<Self> {
        let tls = tls_options(opts)?;
        let (endpoints, prefix) = endpoints(store, tls.is_some())?;
        let advertise = advertise
            .context("--cluster-store needs --cluster-advertise IFACE|IP: the underlay address other nodes reach this one at")?;
        check_node_name(node_name)?;
        Ok(ClusterConfig {
            endpoints,
            url: store.to_string(),
            prefix,
            tls,
            advertise: parse_advertise(advertise)?,
            node_name: node_name.to_string(),
            lease_ttl,
        })
    }
}

/// `etcd://HOST[:PORT][,HOST[:PORT]...][/PREFIX]` into the members' URLs and the key prefix.
fn endpoints(url: &str, tls: bool) -> Result<(Vec<String>, String)> {
    let Some(rest) = url.strip_prefix("etcd://") else {
        bail!(
            "invalid --cluster-store {url}: netd's cluster store is etcd; expected etcd://HOST:PORT[,HOST:PORT...]"
        );
    };
    let (hosts, prefix) = match rest.split_once('/') {
        Some((hosts, path)) => (hosts, format!("/{}", path.trim_end_matches('/'))),
        None => (rest, DEFAULT_PREFIX.to_string()),
    };
    if prefix == "/" {
        bail!("invalid --cluster-store {url}: the key prefix after the hosts is empty");
    }
    let scheme = if tls { "https" } else { "http" };
    let members = hosts
        .split(',')
        .map(|h| {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => {
                    let port = port.parse::<u16>().ok().filter(|p| *p != 0).with_context(|| {
                        format!("invalid --cluster-store {url}: bad port in {h}: expected 1 to 65535")
                    })?;
                    (host, port)
                }
                None => (h, ETCD_PORT),
            };
            if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
                bail!("invalid --cluster-store {url}: bad host {h:?}");
            }
            Ok(format!("{scheme}://{host}:{port}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((members, prefix))
}

/// Docker's `--cluster-store-opt` keys for the store's TLS.
fn tls_options(opts: &[String]) -> Result<Option<Tls>> {
    let (mut ca, mut cert, mut key) = (None, None, None);
    for opt in opts {
        let (k, v) = opt
            .split_once('=')
            .with_context(|| format!("invalid --cluster-store-opt {opt}: expected KEY=VALUE"))?;
        let slot = match k {
            "kv.cacertfile" => &mut ca,
            "kv.certfile" => &mut cert,
            "kv.keyfile" => &mut key,
            _ => bail!(
                "invalid --cluster-store-opt {k}: netd knows kv.cacertfile, kv.certfile and kv.keyfile"
            ),
        };
        if v.is_empty() {
            bail!("invalid --cluster-store-opt {k}: no file given");
        }
        if slot.replace(PathBuf::from(v)).is_some() {
            bail!("invalid --cluster-store-opt {k}: given twice");
        }
    }
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!(
            "invalid --cluster-store-opt: kv.certfile and kv.keyfile go together (a client certificate and its key)"
        ),
    };
    Ok((ca.is_some() || identity.is_some()).then_some(Tls { ca, identity }))
}

/// `IFACE`, `IP`, or Docker's `IFACE:PORT` / `IP:PORT` (the port is Docker's daemon port:
/// netd's nodes talk only through the store, so it is accepted and not used).
fn parse_advertise(value: &str) -> Result<Advertise> {
    let what = value.rsplit_once(':').map_or(value, |(a, port)| {
        if port.parse::<u16>().is_ok() {
            a
        } else {
            value
        }
    });
    if let Ok(ip) = what.parse::<Ipv4Addr>() {
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
            bail!(
                "invalid --cluster-advertise {value}: other nodes cannot reach {ip}; give an address of this node on the underlay"
            );
        }
        return Ok(Advertise::Address(ip));
    }
    if what.is_empty() || what.len() > 15 || what.contains(['/', ' ']) {
        bail!("invalid --cluster-advertise {value}: expected an interface name or an IPv4 address");
    }
    Ok(Advertise::Interface(what.to_string()))
}

/// A node's name is a key in the store and a column of `netd node ls`.
fn check_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.']);
    if !ok {
        bail!(
            "invalid --node-name {name:?}: 1 to 63 letters, digits, '-', '_' or '.', not starting with '-' or '.'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(store: &str, opts: &[&str], advertise: &str) -> Result<ClusterConfig> {
        let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        ClusterConfig::parse(
            store,
            &opts,
            Some(advertise),
            "node1",
            Duration::from_secs(15),
        )
    }

    #[test]
    fn the_store_url_names_every_member_and_a_prefix() {
        let c = parse("etcd://10.0.0.1:2379,10.0.0.2,etcd3:4001", &[], "eth0").unwrap();
        assert_eq!(
            c.endpoints,
            [
                "http://10.0.0.1:2379",
                "http://10.0.0.2:2379",
                "http://etcd3:4001"
            ]
        );
        assert_eq!(c.prefix, "/netd");
        assert_eq!(c.advertise, Advertise::Interface("eth0".into()));
        let c = parse("etcd://10.0.0.1/clusters/a/", &[], "10.0.0.9:2376").unwrap();
        assert_eq!(c.prefix, "/clusters/a");
        assert_eq!(c.advertise, Advertise::Address(Ipv4Addr::new(10, 0, 0, 9)));
    }

    #[test]
    fn tls_options_are_dockers_and_switch_to_https() {
        let c = parse(
            "etcd://10.0.0.1:2379",
            &[
                "kv.cacertfile=/ca.pem",
                "kv.certfile=/c.pem",
                "kv.keyfile=/k.pem",
            ],
            "eth0",
        )
        .unwrap();
        assert_eq!(c.endpoints, ["https://10.0.0.1:2379"]);
        assert_eq!(
            c.tls,
            Some(Tls {
                ca: Some("/ca.pem".into()),
                identity: Some(("/c.pem".into(), "/k.pem".into())),
            })
        );
    }

    #[test]
    fn each_bad_flag_is_named_with_why() {
        let err = |store: &str, opts: &[&str], adv: &str| {
            format!("{:#}", parse(store, opts, adv).unwrap_err())
        };
        assert!(err("consul://h:8500", &[], "eth0").contains("netd's cluster store is etcd"));
        assert!(err("etcd://h:0", &[], "eth0").contains("bad port in h:0"));
        assert!(err("etcd://,h", &[], "eth0").contains("bad host"));
        assert!(err("etcd://h", &["kv.certfile=/c"], "eth0").contains("go together"));
        assert!(err("etcd://h", &["kv.tls=1"], "eth0").contains("--cluster-store-opt kv.tls"));
        assert!(err("etcd://h", &[], "0.0.0.0").contains("other nodes cannot reach"));
        assert!(err("etcd://h", &[], "127.0.0.1:2376").contains("other nodes cannot reach"));
        let no_advertise =
            ClusterConfig::parse("etcd://h", &[], None, "n", Duration::from_secs(5)).unwrap_err();
        assert!(format!("{no_advertise:#}").contains("needs --cluster-advertise"));
        let bad_name =
            ClusterConfig::parse("etcd://h", &[], Some("eth0"), "a/b", Duration::ZERO).unwrap_err();
        assert!(format!("{bad_name:#}").contains("invalid --node-name"));
    }
}
