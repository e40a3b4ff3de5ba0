//! `netd-cni`: netd as a CNI plugin. A runtime (Podman's CNI backend, containerd, a
//! kubelet through either) execs it with `CNI_*` variables and the network configuration
//! on stdin; it asks the daemon on its socket to do the work and prints the result, or the
//! spec's error, on stdout. It keeps no state of its own: the daemon keys each attachment
//! by (network, container ID, interface) and persists it.

use std::{
    io::{Read, Write},
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
            let req = conf.attach_request(env)?;
            let view: CniAttachmentView = client
                .send(Method::POST, "cni/attachments", Some(&req))
                .await
                .map_err(|e| daemon_error(e, conf, Command::Add))?;
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
                // containerd never retries a failed DEL: succeed, and leave the rest to
                // the daemon (its next start removes attachments whose namespace is gone).
                Err(e @ CallError::Unreachable(_))
                | Err(e @ CallError::Refused(StatusCode::SERVICE_UNAVAILABLE, _)) => {
                    eprintln!(
                        "netd-cni: DEL {} {}: {e}; netd removes the attachment when it starts, if its namespace is gone by then",
                        env.container_id, env.ifname
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
                attach: conf.attach_request(env)?,
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
                valid: cni::valid_set(conf).into_iter().collect(),
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
