//! The local API's client, as `fuotactl` uses it: one HTTP/1.1 request per call over the
//! Unix socket, blocking (a small current-thread runtime inside), with errors that say
//! what to do: no agent listening, no permission on the socket, or the agent's own
//! refusal with its status code.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::views::ErrorView;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "no agent is listening on {}: is fuota-agent running? (systemctl status fuota-agent) \
         Use --socket if its [api] socket is elsewhere", .0.display()
    )]
    NoAgent(PathBuf),
    /// The socket's permissions keep this user out.
    #[error(
        "permission denied on {}: fuotactl must run as root or as a member of the agent's API \
         group (sudo adduser $USER fuota-agent, then log in again)", .0.display()
    )]
    PermissionDenied(PathBuf),
    /// Another connection error.
    #[error("connecting to {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the agent: {0}")]
    Http(String),
    /// The agent answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The agent's message.
        message: String,
    },
    /// The answer is not the document expected.
    #[error("unexpected answer from the agent: {0}")]
    Decode(String),
}

impl ClientError {
    /// `true` when the agent examined the request and refused it (4xx): the request
    /// was wrong, not the agent.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if (400..500).contains(status))
    }
}

/// A body to send.
#[derive(Debug)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// A JSON document.
    Json(Vec<u8>),
    /// Raw bytes (an image).
    Bytes(Vec<u8>),
}

/// A client of the API at one socket.
#[derive(Debug)]
pub struct ApiClient {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl ApiClient {
    /// A client of the API on `socket`.
    pub fn new(socket: &Path) -> Result<ApiClient, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| ClientError::Http(format!("starting the I/O runtime: {error}")))?;
        Ok(ApiClient {
            socket: socket.to_path_buf(),
            runtime,
        })
    }

    /// `GET path`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, RequestBody::Empty)
    }

    /// `POST path` with a JSON body, decoded.
    pub fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body =
            serde_json::to_vec(body).map_err(|error| ClientError::Decode(error.to_string()))?;
        self.call(Method::POST, path, RequestBody::Json(body))
    }

    /// A request whose answer is a JSON document, decoded.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<T, ClientError> {
        let bytes = self.request(method, path, body)?;
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode(error.to_string()))
    }

    /// A request; the answer's body when its status is a success.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<Vec<u8>, ClientError> {
        self.runtime.block_on(self.exchange(method, path, body))
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<Vec<u8>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NoAgent(self.socket.clone())
                }
                std::io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied(self.socket.clone())
                }
                _ => ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                },
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?;
        let connection = tokio::spawn(connection);
        let (content_type, bytes) = match body {
            RequestBody::Empty => (None, Vec::new()),
            RequestBody::Json(bytes) => (Some("application/json"), bytes),
            RequestBody::Bytes(bytes) => (Some("application/octet-stream"), bytes),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "fuota-agent");
        if let Some(content_type) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|error| ClientError::Http(error.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| ClientError::Http(error.to_string()))?
            .to_bytes()
            .to_vec();
        connection.abort();
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorView>(&body)
            .map(|view| view.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }
}
