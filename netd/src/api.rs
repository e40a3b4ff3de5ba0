//! The daemon's API: HTTP/1.1 with JSON bodies on a Unix socket, like Docker's. This module
//! holds the request/response types and the transport for both ends; what the requests do
//! is the daemon's business.

use std::{
    convert::Infallible, future::Future, os::unix::fs::PermissionsExt, path::Path, sync::Arc,
};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use log::{debug, warn};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Serialize, Deserialize)]
pub struct RunRequest {
    pub name: Option<String>,
    /// `bridge`, a network's name, `host`, `none` or `container:NAME`.
    pub network: String,
    /// A static address on the network (`--ip`).
    #[serde(default)]
    pub ip: Option<String>,
    /// Attach this existing network namespace instead of making one (`--netns PATH`).
    #[serde(default)]
    pub netns: Option<std::path::PathBuf>,
    /// Start `cmd` (`netd run`), or only wire the namespace (`netd create`).
    #[serde(default = "yes")]
    pub start: bool,
    /// `-p` specs, parsed by the daemon so that every client gets the same errors.
    pub publish: Vec<String>,
    /// `--expose` ports, published to ephemeral host ports when `publish_all` (`-P`).
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default)]
    pub publish_all: bool,
    pub cmd: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A container as the API shows it: its record, and where its network namespace is.
#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerView {
    #[serde(flatten)]
    pub container: crate::state::Container,
    pub netns_path: std::path::PathBuf,
}

/// `netd network connect` / `disconnect`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub container: String,
    #[serde(default)]
    pub ip: Option<String>,
}

/// A network as `netd network inspect` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: crate::state::Network,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EndpointView {
    pub container: String,
    pub ip: String,
    pub mac: String,
    pub host_veth: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CounterView {
    pub hook: String,
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// An error with the HTTP status it is answered with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: anyhow::Error,
}

impl ApiError {
    pub fn bad_request(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error,
        }
    }
    pub fn not_found(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error,
        }
    }
    pub fn forbidden(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            error,
        }
    }
    pub fn conflict(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            error,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error,
        }
    }
}

/// A parsed request as the daemon's router sees it.
pub struct ApiRequest {
    pub method: Method,
    /// Path segments after the version prefix, e.g. `["containers", "web"]`.
    pub path: Vec<String>,
    pub query: String,
    pub body: Bytes,
}

impl ApiRequest {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(anyhow::anyhow!("invalid request body: {e}")))
    }

    pub fn flag(&self, name: &str) -> bool {
        self.query
            .split('&')
            .any(|kv| kv == format!("{name}=1") || kv == format!("{name}=true"))
    }
}

pub const API_PREFIX: &str = "/v1/";

/// Listen on a Unix socket at `path`, mode 0660, owned by `group` if given. A stale
/// socket (left by a killed daemon) is replaced; the socket of a daemon that still
/// answers is not.
pub async fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create socket directory {}", dir.display()))?;
    }
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "another netd daemon is serving {}: stop it first, or give this one another --socket",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => debug!("removed stale socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale socket {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chown {} to group {gid}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    Ok(listener)
}

/// Serve `handler` on `listener` (bound at `path`) until `shutdown` resolves; then remove
/// the socket.
pub async fn serve<H, F>(
    listener: UnixListener,
    path: &Path,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    H: Fn(ApiRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Result<serde_json::Value, ApiError>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => { warn!("accept on {}: {e}", path.display()); continue; }
            },
            () = &mut shutdown => break,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(handler.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("API connection: {e}");
            }
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

async fn answer<H, F>(
    handler: Arc<H>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    H: Fn(ApiRequest) -> F,
    F: Future<Output = Result<serde_json::Value, ApiError>>,
{
    let method = req.method().clone();
    let uri = req.uri().clone();
    let result = match req.into_body().collect().await {
        Ok(body) => match uri.path().strip_prefix(API_PREFIX) {
            Some(rest) => {
                let path = rest
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(percent_decode)
                    .collect();
                let query = uri.query().unwrap_or("").to_string();
                handler(ApiRequest {
                    method,
                    path,
                    query,
                    body: body.to_bytes(),
                })
                .await
            }
            None => Err(ApiError::not_found(anyhow::anyhow!(
                "unknown API path {}",
                uri.path()
            ))),
        },
        Err(e) => Err(ApiError::bad_request(anyhow::anyhow!(
            "read request body: {e}"
        ))),
    };
    let (status, body) = match result {
        Ok(value) => (StatusCode::OK, value),
        Err(e) => {
            let body = ErrorBody {
                message: format!("{:#}", e.error),
            };
            (e.status, serde_json::to_value(body).unwrap_or_default())
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Decode `%XX` escapes of a path segment. Works on bytes: a `%` before a multi-byte
/// character is kept as it is (slicing the `str` there would panic).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(&[hi, lo])) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                out.push(hex_value(hi) << 4 | hex_value(lo));
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Escape `s` as one path segment: everything but RFC 3986's unreserved characters, so
/// that a name holding `?`, `/` or `#` stays a name (`netd rm 'web?force=1'` must not
/// force-remove `web`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CLI's side: one request per connection.
pub struct Client {
    socket: std::path::PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                anyhow::anyhow!(
                    "permission denied on the netd socket {}: it is for root and the daemon's --socket-group; run as root (sudo) or join that group",
                    self.socket.display()
                )
            } else {
                anyhow::anyhow!(
                    "cannot connect to the netd daemon at {}: {e}. Is the daemon running? Start it with `netd daemon` (or `systemctl start netd`), or point --socket / NETD_SOCKET at its socket",
                    self.socket.display()
                )
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the daemon")?;
        tokio::spawn(conn);
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path}"))
            .header(hyper::header::HOST, "netd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let resp = sender
            .send_request(req)
            .await
            .context("send request to the daemon")?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("read the daemon's answer")?
            .to_bytes();
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{msg}");
        }
        serde_json::from_slice(&bytes).context("decode the daemon's answer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percent_before_a_multi_byte_character_is_kept_not_a_panic() {
        assert_eq!(percent_decode("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(percent_decode("\u{e9}%\u{e9}"), "\u{e9}%\u{e9}");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("web%2d1%2F"), "web-1/");
    }

    #[test]
    fn encoded_segments_decode_to_the_same_name() {
        assert_eq!(encode_segment("web?force=1"), "web%3Fforce%3D1");
        assert_eq!(encode_segment("web_1.a-b"), "web_1.a-b");
        for name in ["web?force=1", "a/b#c", "100%", "\u{e9}t\u{e9} ", "../x", ""] {
            let encoded = encode_segment(name);
            assert!(!encoded.contains(['/', '?', '#']), "{encoded}");
            assert_eq!(percent_decode(&encoded), name);
        }
    }
}
