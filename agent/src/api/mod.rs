//! The local API: HTTP/JSON over a Unix socket (`/run/fuota-agent/api.sock`), the way
//! `fuotactl` and a technician's scripts see and drive the agent.
//!
//! This module owns the socket (binding it with mode 0660 and the API group), the
//! callers' authorization, the routes and their answers. Who may call: root, the agent's
//! own user, and members of the configured group, primary or supplementary. The kernel
//! reports the caller's uid and gid with the connection (SO_PEERCRED) and its
//! supplementary groups (SO_PEERGROUPS); a caller outside is answered 403 with what to
//! do, and logged. The socket's mode already keeps others out; the credential check
//! holds even if someone loosens it.
//!
//! Reads (lists, shows, events) go to a read-only SQLite connection of the API's own,
//! so they never wait for the radio; changes go to the core loop as
//! [`ServiceCommand`]s, which commits them as it commits everything else. The routes
//! and documents are listed in `docs/api.md`; [`views`] holds the documents and
//! [`client`] is the client `fuotactl` uses.

pub mod client;
mod credentials;
mod metrics;
mod routes;
pub(crate) use routes::device_from_request;
pub mod views;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tracing::{debug, warn};

use crate::config::ApiConfig;
use crate::service::{ServiceCommand, ServiceHandle};
use crate::storage::Storage;

pub use credentials::{Caller, CallerPolicy};

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The configured group does not exist.
    #[error(
        "the API group {0:?} does not exist: create it (groupadd --system {0}) or set \
         [api] group in the configuration (empty: root and the agent's user only)"
    )]
    UnknownGroup(String),
    /// The group database could not be read.
    #[error("looking up the API group {group:?}: {source}")]
    GroupLookup {
        /// The group.
        group: String,
        /// The error.
        source: nix::Error,
    },
    /// Something that is not a socket sits at the socket's path.
    #[error("{} exists and is not a socket: move it away or set [api] socket", .0.display())]
    NotASocket(PathBuf),
    /// Another agent answers on the socket.
    #[error(
        "another process is serving the API on {}: is a second fuota-agent running? \
         (systemctl status fuota-agent)", .0.display()
    )]
    InUse(PathBuf),
    /// A file operation on the socket failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The read-only database connection could not be opened.
    #[error("opening the API's read-only database connection: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

/// The bound socket and who may use it.
#[derive(Debug)]
pub struct ApiListener {
    listener: UnixListener,
    path: PathBuf,
    policy: CallerPolicy,
    upstream: Option<UpstreamStatusReceiver>,
    downloads: Option<crate::upstream::download::DownloadQueue>,
}

/// Follows the MQTT publisher's status.
pub type UpstreamStatusReceiver = tokio::sync::watch::Receiver<crate::upstream::UpstreamStatus>;

impl ApiListener {
    /// Binds the socket of `config`: a stale socket left by a crash is replaced, a live
    /// one (another agent) is an error; the new socket gets mode 0660 and the API group.
    /// Must run inside the tokio runtime.
    pub fn bind(config: &ApiConfig) -> Result<ApiListener, ApiError> {
        let group_id = resolve_group(&config.group)?;
        let path = config.socket.clone();
        remove_stale_socket(&path)?;
        let io = |action| {
            let path = path.clone();
            move |source| ApiError::Io {
                action,
                path,
                source,
            }
        };
        let listener = UnixListener::bind(&path).map_err(io("binding the API socket"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .map_err(io("setting the mode of the API socket"))?;
        if let Some(gid) = group_id {
            std::os::unix::fs::chown(&path, None, Some(gid))
                .map_err(io("giving the API socket to its group"))?;
        }
        Ok(ApiListener {
            listener,
            path,
            policy: CallerPolicy {
                agent_uid: nix::unistd::geteuid().as_raw(),
                group_id,
            },
            upstream: None,
            downloads: None,
        })
    }

    /// Reports the MQTT publisher's status in `GET /v1/status`.
    pub fn with_upstream(mut self, status: UpstreamStatusReceiver) -> Self {
        self.upstream = Some(status);
        self
    }

    /// Queues image downloads (`POST /v1/images/downloads`) on `downloads`.
    pub fn with_downloads(mut self, downloads: crate::upstream::download::DownloadQueue) -> Self {
        self.downloads = Some(downloads);
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves callers until `shutdown` resolves, then removes the socket. Each
    /// connection runs as its own task.
    pub async fn serve(
        self,
        handle: ServiceHandle,
        reader: Storage,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let state = routes::ApiState {
            handle,
            reader: Arc::new(Mutex::new(reader)),
            started: Instant::now(),
            upstream: self.upstream.clone(),
            downloads: self.downloads.clone(),
        };
        let allowed = routes::router(state);
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        warn!("API socket: accepting a connection: {error}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let caller = Caller::of(&stream);
            let app = match self.policy.check(&caller) {
                Ok(()) => {
                    debug!(uid = caller.uid, pid = caller.pid, "API caller accepted");
                    allowed.clone()
                }
                Err(refusal) => {
                    warn!(
                        uid = caller.uid,
                        gid = caller.gid,
                        pid = caller.pid,
                        "API caller refused: {refusal}"
                    );
                    routes::refusal(refusal)
                }
            };
            tokio::spawn(async move {
                let service = TowerToHyperService::new(app);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!("API connection: {error}");
                }
            });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The optional read-only monitoring listener on a loopback TCP address: `GET /metrics`
/// (Prometheus) and `GET /v1/status`. It changes nothing and shows no secret, so it
/// needs no credentials; the configuration only allows loopback addresses.
#[derive(Debug)]
pub struct MonitoringListener {
    listener: tokio::net::TcpListener,
    upstream: Option<UpstreamStatusReceiver>,
}

impl MonitoringListener {
    /// Binds `address`.
    pub async fn bind(address: std::net::SocketAddr) -> Result<MonitoringListener, ApiError> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ApiError::Io {
                action: "binding the metrics listener on",
                path: PathBuf::from(address.to_string()),
                source,
            })?;
        Ok(MonitoringListener {
            listener,
            upstream: None,
        })
    }

    /// Reports the MQTT publisher's status and outbox in the metrics.
    pub fn with_upstream(mut self, status: UpstreamStatusReceiver) -> Self {
        self.upstream = Some(status);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        handle: ServiceHandle,
        reader: Storage,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let state = routes::ApiState {
            handle,
            reader: Arc::new(Mutex::new(reader)),
            started: Instant::now(),
            upstream: self.upstream,
            downloads: None,
        };
        if let Err(error) = axum::serve(self.listener, routes::monitoring_router(state))
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!("metrics listener: {error}");
        }
    }
}

/// Sends a command to the core loop and waits for its answer; `None` if the loop
/// has stopped.
pub(crate) async fn ask<T>(
    handle: &ServiceHandle,
    command: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> ServiceCommand,
) -> Option<T> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !handle.send(command(reply)).await {
        return None;
    }
    answer.await.ok()
}

fn resolve_group(name: &str) -> Result<Option<u32>, ApiError> {
    if name.is_empty() {
        return Ok(None);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(Some(group.gid.as_raw())),
        Ok(None) => Err(ApiError::UnknownGroup(name.to_string())),
        Err(source) => Err(ApiError::GroupLookup {
            group: name.to_string(),
            source,
        }),
    }
}

/// Removes a socket left by an agent that died; refuses to touch anything else, or a
/// socket someone still answers on.
fn remove_stale_socket(path: &Path) -> Result<(), ApiError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ApiError::Io {
                action: "examining",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ApiError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ApiError::InUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(|source| ApiError::Io {
        action: "removing the stale socket",
        path: path.to_path_buf(),
        source,
    })
}
