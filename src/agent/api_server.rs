//! The API socket: line-delimited JSON requests (see [`crate::api`]).
//!
//! The socket file is created mode 0600 in a directory only root can write;
//! on top of that, a connection from another user than memifd's own (or
//! root) is refused with its uid in the log.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::Agent;
use crate::api::{
    ApiError, ErrorCode, Reply, ReplyEnvelope, Request, RequestEnvelope, API_VERSION, MAX_MESSAGE,
};

/// Why the API socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another memifd is already serving {0}")]
    InUse(String),
    #[error("cannot create the API socket {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the API socket at `path` (creating its directory), replacing a
/// stale socket file but never a live memifd's.
pub fn listen(path: &Path) -> Result<UnixListener, ListenError> {
    let io = |source| ListenError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // Bind with a restrictive umask-independent mode: set it right after.
    let l = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(l)
}

/// Serves connections until the listener fails.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == me => {}
            Ok(c) => {
                tracing::warn!(uid = c.uid(), pid = ?c.pid(), "API connection from another user refused");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "API connection without credentials refused");
                continue;
            }
        }
        let a = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, a).await {
                tracing::debug!(error = %e, "API connection ended");
            }
        });
    }
}

async fn connection(stream: UnixStream, agent: Arc<Agent>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = AsyncReadExt::take(&mut r, MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let too_long = n > MAX_MESSAGE;
        let reply = if too_long {
            Reply::Error(ApiError {
                code: ErrorCode::BadRequest,
                message: format!("request longer than {MAX_MESSAGE} bytes"),
            })
        } else {
            handle(&agent, &line).await
        };
        let mut out = serde_json::to_vec(&ReplyEnvelope {
            api: API_VERSION,
            reply,
        })
        .expect("replies serialize");
        out.push(b'\n');
        w.write_all(&out).await?;
        if too_long {
            // The rest of the line is still unread; the stream is unusable.
            return Ok(());
        }
    }
}

fn bad(code: ErrorCode, message: String) -> Reply {
    Reply::Error(ApiError { code, message })
}

/// Decodes one request line: JSON, the API version, then the request.
/// Pure (no agent), so the request-line fuzzer runs exactly this.
pub fn parse_request(line: &[u8]) -> Result<Request, Reply> {
    let v: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| bad(ErrorCode::BadRequest, format!("request is not JSON: {e}")))?;
    match v.get("api").and_then(|a| a.as_u64()) {
        Some(n) if n == API_VERSION as u64 => {}
        Some(n) => {
            return Err(bad(
                ErrorCode::Version,
                format!("API version {n} is not supported; memifd speaks {API_VERSION}"),
            ))
        }
        None => {
            return Err(bad(
                ErrorCode::Version,
                format!("request has no \"api\" version; memifd speaks {API_VERSION}"),
            ))
        }
    }
    serde_json::from_value::<RequestEnvelope>(v)
        .map(|r| r.request)
        .map_err(|e| bad(ErrorCode::BadRequest, format!("bad request: {e}")))
}

/// One request line to its reply.
pub async fn handle(agent: &Agent, line: &[u8]) -> Reply {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let r = match req {
        Request::Attach(a) => agent
            .attach(*a)
            .await
            .map(|i| Reply::Attachment(Box::new(i))),
        Request::Detach(k) => agent
            .detach(&k)
            .await
            .map(|existed| Reply::Detached { existed }),
        Request::Get(k) => agent.get(&k).map(|i| Reply::Attachment(Box::new(i))),
        Request::List { network } => Ok(Reply::Attachments {
            items: agent.list(network.as_deref()),
        }),
        Request::Status => Ok(Reply::Status(Box::new(agent.status()))),
        Request::Gc { network, valid } => agent
            .gc(&network, &valid)
            .await
            .map(|removed| Reply::Collected { removed }),
        Request::PodAnnotations(p) => agent
            .pod_annotations(&p)
            .await
            .map(|annotations| Reply::Annotations { annotations }),
        Request::Uplinks => Ok(Reply::Uplinks {
            items: agent.uplinks(),
        }),
        Request::Remote => agent.remote().map(|r| Reply::Remote(Box::new(r))),
    };
    r.unwrap_or_else(|e| {
        tracing::debug!(code = ?e.code, message = %e.message, "API request refused");
        Reply::Error(e)
    })
}
