//! `netd-cni`: netd as a CNI plugin. A runtime (Podman's CNI backend, containerd, a
//! kubelet through either) execs it with `CNI_*` variables and the network configuration
//! on stdin; it asks the daemon on its socket to do the work and prints the result, or the
//! spec's error, on stdout. It keeps no state of its own: the daemon keys each attachment
//! by (network, container ID, interface) and persists it.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use hyper::{Method, StatusCode};
use serde_json::Value;

use netd::{
    api::{
        CallError, Client, CniAttachmentView, CniCheckRequest, CniGcRequest, NetworkView,
        encode_segment,
    },
    cni::{self, Command, Env, Error, Expected, NetConf, code},
    pending_del::{self, PendingDel},
};

/// How long `STATUS` waits for the daemon to answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are answered in the version the configuration asked for, when it says one.
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| cni::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| cni::LATEST.to_string());
    let outcome = match read {
        Ok(_) => run(&stdin),
        Err(e) => Err(Error::new(code::IO_FAILURE, format!("read stdin: {e}"))),
    };
    let (answer, status) = match outcome {
        Ok(Some(result)) => (Some(result), ExitCode::SUCCESS),
        Ok(None) => (None, ExitCode::SUCCESS),
        Err(e) => (Some(e.to_json(&version)), ExitCode::FAILURE),
    };
    if let Some(answer) = answer {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &answer);
        let _ = writeln!(out);
    }
    status
}

fn run(stdin: &[u8]) -> Result<Option<Value>, Error> {
    let env = Env::from_vars(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(Some(cni::version_info()));
    }
    let conf = NetConf::parse(stdin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(code::IO_FAILURE, format!("start the runtime: {e}")))?;
    runtime.block_on(call(&env, &conf))
}

async fn call(env: &Env, conf: &NetConf) -> Result<Option<Value>, Error> {
    let client = Client::new(&conf.socket());
    match env.command {
        Command::Add => {
            let req = attach_request(conf, env)?;
            let mut view: CniAttachmentView = client
                .send(Method::POST, "cni/attachments", Some(&req))
                .await
                .map_err(|e| daemon_error(e, conf, Command::Add))?;
            // The runtime knows the namespace by the path it gave.
            view.netns = env.netns.clone().unwrap_or_default();
            Ok(Some(cni::add_result(&conf.cni_version, &view)))
        }
        Command::Del => {
            let path = format!(
                "cni/attachments/{}/{}/{}",
                encode_segment(conf.network()),
                encode_segment(&env.container_id),
                encode_segment(&env.ifname)
            );
            match client
                .send::<Value>(Method::DELETE, &path, None::<&()>)
                .await
            {
                Ok(_) => Ok(None),
                // A runtime may not ask again after a failed DEL (Podman logs it and goes
                // on), and the container is going either way: the request is left for the
                // daemon, which carries it out when it starts, and DEL succeeds.
                Err(e @ CallError::Unreachable(_))
                | Err(e @ CallError::Refused(StatusCode::SERVICE_UNAVAILABLE, _)) => {
                    let pending = PendingDel {
                        network: conf.network().to_string(),
                        container_id: env.container_id.clone(),
                        ifname: env.ifname.clone(),
                    };
                    let dir = pending_del::dir(&conf.socket());
                    let left = pending.record(&dir).map_err(|w| {
                        Error::new(
                            code::TRY_AGAIN,
                            format!(
                                "netd is not running and the DEL could not be left for it in {}",
                                dir.display()
                            ),
                        )
                        .with_details(format!("{e}; {w}"))
                    })?;
                    eprintln!(
                        "netd-cni: DEL {} {}: {e}; left in {} for netd to carry out when it starts",
                        env.container_id,
                        env.ifname,
                        left.display()
                    );
                    Ok(None)
                }
                Err(e) => Err(daemon_error(e, conf, Command::Del)),
            }
        }
        Command::Check => {
            needs(conf, "0.4.0", "CHECK")?;
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                Error::new(
                    code::INVALID_CONFIG,
                    "prevResult: CHECK needs the result ADD gave",
                )
            })?;
            let expected = Expected::from_prev_result(prev, &env.ifname)?;
            let req = CniCheckRequest {
                attach: attach_request(conf, env)?,
                ip: expected.ip,
                prefix_len: expected.prefix_len,
                mac: expected.mac,
                default_route: expected.default_route,
            };
            client
                .send::<Value>(Method::POST, "cni/check", Some(&req))
                .await
                .map_err(|e| daemon_error(e, conf, Command::Check))?;
            Ok(None)
        }
        Command::Gc => {
            needs(conf, "1.1.0", "GC")?;
            let req = CniGcRequest {
                network: conf.network().to_string(),
                cni_network: Some(conf.name.clone()),
                valid: cni::valid_set(conf)?.into_iter().collect(),
            };
            client
                .send::<Value>(Method::POST, "cni/gc", Some(&req))
                .await
                .map_err(|e| daemon_error(e, conf, Command::Gc))?;
            Ok(None)
        }
        Command::Status => {
            needs(conf, "1.1.0", "STATUS")?;
            let path = format!("networks/{}", encode_segment(conf.network()));
            let ready = tokio::time::timeout(
                STATUS_TIMEOUT,
                client.send::<NetworkView>(Method::GET, &path, None::<&()>),
            )
            .await;
            match ready {
                Ok(Ok(_)) => Ok(None),
                Ok(Err(e)) => Err(Error::new(
                    code::NOT_READY,
                    format!("netd is not ready for network {}", conf.network()),
                )
                .with_details(e.to_string())),
                Err(_) => Err(Error::new(
                    code::NOT_READY,
                    format!(
                        "netd did not answer within {} s (starting up?)",
                        STATUS_TIMEOUT.as_secs()
                    ),
                )),
            }
        }
        Command::Version => Ok(Some(cni::version_info())),
    }
}

/// `CNI_NETNS` with its directories resolved as the runtime sees them (the plugin runs in
/// the runtime's mount namespace): containerd and CRI-O name `/var/run/netns/...`, where
/// `/var/run` is a link to `/run` on most systems, and the daemon follows no link. The
/// file itself is kept as named (a link there is refused). Unchanged when the directory
/// cannot be resolved: the daemon's refusal then says why.
pub fn resolve_netns_dirs(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if path.is_absolute() => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// The request, with `CNI_NETNS` as the daemon can open it from this process's view.
fn attach_request(conf: &NetConf, env: &Env) -> Result<netd::api::CniAttachRequest, Error> {
    let mut req = conf.attach_request(env)?;
    req.netns = resolve_netns_dirs(&req.netns);
    Ok(req)
}

fn needs(conf: &NetConf, version: &str, command: &str) -> Result<(), Error> {
    if conf.at_least(version) {
        return Ok(());
    }
    Err(Error::new(
        code::INCOMPATIBLE_VERSION,
        format!(
            "cniVersion {}: {command} needs {version} or later",
            conf.cni_version
        ),
    ))
}

/// The daemon's refusal as the spec's error: unreachable is "try again later", an unknown
/// network an invalid configuration, an unknown attachment in `CHECK` an unknown
/// container, a mismatch or a taken address or port codes of netd's own.
fn daemon_error(e: CallError, conf: &NetConf, command: Command) -> Error {
    match e {
        CallError::Unreachable(e) => {
            Error::new(code::TRY_AGAIN, "netd is not running").with_details(format!("{e:#}"))
        }
        CallError::Transport(e) => Error::new(code::TRY_AGAIN, "the exchange with netd broke off")
            .with_details(format!("{e:#}")),
        CallError::Refused(status, msg) => {
            let code = match (status, command) {
                (StatusCode::NOT_FOUND, Command::Check) => code::UNKNOWN_CONTAINER,
                (StatusCode::CONFLICT, Command::Check) => code::CHECK_MISMATCH,
                (StatusCode::NOT_FOUND, _) => {
                    return Error::new(
                        code::INVALID_CONFIG,
                        format!(
                            "network: {msg} (create it first: netd network create {})",
                            conf.network()
                        ),
                    );
                }
                (StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN, _) => code::INVALID_CONFIG,
                (StatusCode::CONFLICT, _) => code::REFUSED,
                // The daemon is stopping.
                (StatusCode::SERVICE_UNAVAILABLE, _) => code::TRY_AGAIN,
                _ => code::IO_FAILURE,
            };
            Error::new(code, msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_directories_are_resolved_and_the_file_is_kept() {
        let dir = std::env::temp_dir().join(format!("netd-cni-resolve-{}", std::process::id()));
        let real = dir.join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.join("link")).unwrap();
        let got = resolve_netns_dirs(&dir.join("link").join("ns1"));
        let want = real.canonicalize().unwrap().join("ns1");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got, want);
        assert_eq!(
            resolve_netns_dirs(Path::new("/nonexistent-dir/ns")),
            Path::new("/nonexistent-dir/ns")
        );
        assert_eq!(resolve_netns_dirs(Path::new("ns")), Path::new("ns"));
    }
}
