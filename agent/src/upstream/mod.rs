//! Upstream sync: the agent's link to the fleet backend over MQTT, offline first.
//!
//! Everything the agent records is an event in SQLite, written in the same transaction
//! as the state change it reports; the part the broker has not acknowledged is the
//! outbox ([`crate::storage::outbox`]). The [`publisher`] publishes it in order, QoS 1,
//! one message per event ([`message`]), moves the outbox cursor as PUBACKs arrive,
//! reconnects with backoff when the backhaul goes, and keeps the outbox within its disk
//! quota meanwhile. It runs beside the core loop and shares nothing with it but the
//! database file, so a backhaul that is down, slow or silently dropping packets slows
//! down nothing else.
//!
//! This module also owns the connection settings ([`connection_options`]): TLS
//! ([`tls`]), credentials from secret files, keep-alive, in-flight window.

pub mod commands;
pub mod download;
pub mod link;
pub mod message;
pub mod publisher;
pub mod tls;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::config::{read_secret_file, MqttConfig, SecretFileError};
use crate::storage::StorageError;
use link::LinkOptions;

pub use publisher::{Publisher, UpstreamStatus};

/// Largest event message the agent publishes or accepts, bytes (an uplink event with
/// its raw rxpk is well under 4 KiB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Why upstream sync cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A secret file is missing or unsafe.
    #[error("[mqtt] {key}: {source}")]
    Secret {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with the file.
        #[source]
        source: SecretFileError,
    },
    /// The password is not UTF-8 (MQTT 3.1.1 sends it as a string here).
    #[error("[mqtt] password_file: the password is not valid UTF-8 text")]
    PasswordNotText,
    /// A TLS file cannot be used.
    #[error("[mqtt] {what} {}: {reason}", path.display())]
    TlsFile {
        /// The configuration key.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No `ca_file` and no usable system CA store.
    #[error("[mqtt] no ca_file is set and the system CA store is unusable ({0}): install ca-certificates or set ca_file")]
    NoSystemRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The HTTPS client could not be built.
    #[error("HTTPS client for image downloads: {0}")]
    Http(String),
    /// The download directory cannot be created.
    #[error("cannot create the download directory {}: {source}", path.display())]
    DownloadDirectory {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The outbox could not be read or written.
    #[error("outbox: {0}")]
    Storage(#[from] StorageError),
}

/// The MQTT connection options for `config`: version, broker, client id, keep-alive,
/// in-flight window, credentials (the password read from its file) and TLS.
pub fn connection_options(config: &MqttConfig) -> Result<LinkOptions, UpstreamError> {
    let password = match (&config.username, &config.password_file) {
        (Some(_), Some(path)) => {
            let bytes = read_secret_file(path).map_err(|source| UpstreamError::Secret {
                key: "password_file",
                source,
            })?;
            Some(String::from_utf8(bytes).map_err(|_| UpstreamError::PasswordNotText)?)
        }
        _ => None,
    };
    let transport = if config.broker.tls {
        let client = tls::client_config(config)?;
        Some(Transport::tls_with_config(TlsConfiguration::Rustls(client)))
    } else {
        None
    };
    let client_id = config.client_id.clone();
    let host = config.broker.host.clone();
    let port = config.broker.port;
    // Publishes resume from the outbox cursor on every connection: the broker keeps
    // no session for us unless commands need one (`LinkOptions::keep_session`).
    if config.mqtt5 {
        let mut options = rumqttc::v5::MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(config.keep_alive)
            .set_outgoing_inflight_upper_limit(config.max_in_flight)
            .set_max_packet_size(Some(MAX_MESSAGE_BYTES as u32))
            .set_clean_start(true);
        if let Some(username) = &config.username {
            options.set_credentials(username.clone(), password.unwrap_or_default());
        }
        if let Some(transport) = transport {
            options.set_transport(transport);
        }
        Ok(LinkOptions::V5(Box::new(options)))
    } else {
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(config.keep_alive)
            .set_inflight(config.max_in_flight)
            .set_max_packet_size(MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES)
            .set_clean_session(true);
        if let Some(username) = &config.username {
            options.set_credentials(username.clone(), password.unwrap_or_default());
        }
        if let Some(transport) = transport {
            options.set_transport(transport);
        }
        Ok(LinkOptions::V311(Box::new(options)))
    }
}
