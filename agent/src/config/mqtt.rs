//! `[mqtt]`: the connection to the fleet backend's MQTT broker (upstream sync), its
//! validation, and the secret files it names.
//!
//! Secrets (the broker password, the client's private key) are not written in
//! `agent.toml`, which the package installs readable by the `fuota-agent` group: they
//! live in files of their own (`password_file`, `client_key_file`) that
//! [`read_secret_file`] refuses to use unless only their owner (root or the agent's
//! user) and at most its group can read them, and nobody else can write them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{absolute_path, Rejection};

/// Default MQTT topic prefix; `{gateway_id}` is replaced.
pub const DEFAULT_TOPIC_PREFIX: &str = "fuota/{gateway_id}";
/// Default keep-alive interval, seconds.
pub const DEFAULT_KEEP_ALIVE_S: u64 = 30;
/// Default time the broker has to acknowledge a publish, seconds.
pub const DEFAULT_ACK_TIMEOUT_S: u64 = 30;
/// Default first reconnection delay, seconds.
pub const DEFAULT_RECONNECT_MIN_S: u64 = 1;
/// Default longest reconnection delay, seconds.
pub const DEFAULT_RECONNECT_MAX_S: u64 = 120;
/// Default number of publishes awaiting their PUBACK.
pub const DEFAULT_MAX_IN_FLIGHT: u16 = 32;
/// Default disk quota of the outbox, MiB.
pub const DEFAULT_OUTBOX_QUOTA_MB: u64 = 256;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// `mqtts://`: TLS.
    pub tls: bool,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `[mqtt]`, validated; present only when a broker is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// `broker`
    pub broker: BrokerAddress,
    /// `gateway_id` (the host name when not set).
    pub gateway_id: String,
    /// `topic_prefix`, with `{gateway_id}` replaced.
    pub topic_prefix: String,
    /// `client_id` (`fuota-agent-<gateway_id>` when not set).
    pub client_id: String,
    /// `username`
    pub username: Option<String>,
    /// `password_file`
    pub password_file: Option<PathBuf>,
    /// `ca_file`: the CA certificates (PEM) the broker's certificate must chain to; the
    /// system's CA store when not set.
    pub ca_file: Option<PathBuf>,
    /// `client_cert_file`: the agent's certificate chain (PEM), for brokers that
    /// authenticate clients by certificate.
    pub client_cert_file: Option<PathBuf>,
    /// `client_key_file`: its private key (PEM).
    pub client_key_file: Option<PathBuf>,
    /// `keep_alive_s`
    pub keep_alive: Duration,
    /// `ack_timeout_s`: a publish not acknowledged in this time means the connection
    /// is dead (a backhaul that silently drops packets).
    pub ack_timeout: Duration,
    /// `reconnect_min_s`
    pub reconnect_min: Duration,
    /// `reconnect_max_s`
    pub reconnect_max: Duration,
    /// `max_in_flight`
    pub max_in_flight: u16,
    /// `outbox_quota_mb`, in bytes.
    pub outbox_quota_bytes: u64,
    /// `accept_commands`: subscribe to `<prefix>/command/+` and apply what comes.
    pub accept_commands: bool,
    /// `protocol`: MQTT 3.1.1 (`false`) or MQTT 5 (`true`).
    pub mqtt5: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    broker: Option<Spanned<String>>,
    gateway_id: Option<Spanned<String>>,
    topic_prefix: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    ca_file: Option<Spanned<PathBuf>>,
    client_cert_file: Option<Spanned<PathBuf>>,
    client_key_file: Option<Spanned<PathBuf>>,
    keep_alive_s: Option<Spanned<u64>>,
    ack_timeout_s: Option<Spanned<u64>>,
    reconnect_min_s: Option<Spanned<u64>>,
    reconnect_max_s: Option<Spanned<u64>>,
    max_in_flight: Option<Spanned<u16>>,
    outbox_quota_mb: Option<Spanned<u64>>,
    accept_commands: Option<bool>,
    protocol: Option<Spanned<String>>,
}

/// `value` if set and within `range`, else `default`.
fn in_range<T>(
    value: Option<Spanned<T>>,
    range: std::ops::RangeInclusive<T>,
    default: T,
    unit: &str,
) -> Result<T, Rejection>
where
    T: PartialOrd + Copy + std::fmt::Display,
{
    match value {
        None => Ok(default),
        Some(value) if range.contains(value.get_ref()) => Ok(*value.get_ref()),
        Some(value) => Err((
            value.span(),
            format!(
                "{} is out of range: expected {} to {} {unit}",
                value.get_ref(),
                range.start(),
                range.end()
            ),
        )),
    }
}

/// An optional absolute path; `""` means not set.
fn optional_path(value: Option<Spanned<PathBuf>>) -> Result<Option<PathBuf>, Rejection> {
    match value {
        Some(path) if !path.get_ref().as_os_str().is_empty() => absolute_path(path).map(Some),
        _ => Ok(None),
    }
}

/// A non-empty trimmed string, or `None` for absent or `""`.
fn optional_text(value: &Option<Spanned<String>>) -> Option<(String, std::ops::Range<usize>)> {
    value.as_ref().and_then(|value| {
        let text = value.get_ref().trim();
        (!text.is_empty()).then(|| (text.to_string(), value.span()))
    })
}

/// Parses `mqtt://host:port` or `mqtts://host:port` (port defaults 1883 and 8883).
fn parse_broker(text: &str) -> Result<BrokerAddress, String> {
    let example =
        "expected mqtt://host:port or mqtts://host:port, e.g. \"mqtts://broker.example.com:8883\"";
    let (tls, rest) = if let Some(rest) = text.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(format!("invalid broker {text:?}: {example}"));
    };
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!("invalid broker {text:?}: unclosed '[' ({example})"));
        };
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("invalid broker {text:?}: bad port {port:?} ({example})"))?,
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !host_ok {
        return Err(format!(
            "invalid broker {text:?}: bad host {host:?} ({example})"
        ));
    }
    Ok(BrokerAddress {
        tls,
        host: host.to_string(),
        port,
    })
}

/// Why a topic level or prefix is not usable, if it is not.
fn topic_problem(text: &str) -> Option<&'static str> {
    if text.contains(['+', '#']) {
        Some("MQTT wildcards ('+', '#') are not allowed in a topic one publishes to")
    } else if text.contains('\0') || text.chars().any(char::is_control) {
        Some("control characters are not allowed")
    } else if text.len() > 512 {
        Some("longer than 512 bytes")
    } else {
        None
    }
}

/// The machine's host name, the default gateway id.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gateway".to_string())
}

impl RawMqtt {
    pub(super) fn validate(self) -> Result<Option<MqttConfig>, Rejection> {
        // Every key is checked even when no broker is set, so a mistake shows before
        // the day the broker is switched on.
        let broker = match optional_text(&self.broker) {
            None => None,
            Some((text, span)) => Some((
                parse_broker(&text).map_err(|message| (span.clone(), message))?,
                span,
            )),
        };

        let gateway_id = match optional_text(&self.gateway_id) {
            None => host_name(),
            Some((id, span)) => {
                if id.contains('/') {
                    return Err((span, format!("invalid gateway_id {id:?}: it is one topic level, so it cannot contain '/'")));
                }
                if let Some(problem) = topic_problem(&id) {
                    return Err((span, format!("invalid gateway_id {id:?}: {problem}")));
                }
                id
            }
        };

        let topic_prefix = match optional_text(&self.topic_prefix) {
            None => DEFAULT_TOPIC_PREFIX.replace("{gateway_id}", &gateway_id),
            Some((prefix, span)) => {
                if let Some(problem) = topic_problem(&prefix) {
                    return Err((span, format!("invalid topic_prefix {prefix:?}: {problem}")));
                }
                if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
                    return Err((span, format!("invalid topic_prefix {prefix:?}: no empty topic levels (a leading, trailing or double '/'), e.g. \"fuota/{{gateway_id}}\"")));
                }
                let rest = prefix.replace("{gateway_id}", "");
                if rest.contains(['{', '}']) {
                    return Err((span, format!("invalid topic_prefix {prefix:?}: the only placeholder is {{gateway_id}}")));
                }
                prefix.replace("{gateway_id}", &gateway_id)
            }
        };

        let client_id = match optional_text(&self.client_id) {
            None => format!("fuota-agent-{gateway_id}"),
            Some((id, span)) => {
                if id.len() > 256 || id.chars().any(char::is_control) {
                    return Err((
                        span,
                        format!("invalid client_id {id:?}: at most 256 printable characters"),
                    ));
                }
                id
            }
        };

        let username = optional_text(&self.username).map(|(name, _)| name);
        let password_file = optional_path(self.password_file)?;
        if password_file.is_some() && username.is_none() {
            if let Some(username) = &self.username {
                return Err((
                    username.span(),
                    "a password_file is set but username is empty: MQTT sends a password only with a user name".into(),
                ));
            }
        }
        let ca_file = optional_path(self.ca_file)?;
        let client_cert_span = self.client_cert_file.as_ref().map(Spanned::span);
        let client_cert_file = optional_path(self.client_cert_file)?;
        let client_key_span = self.client_key_file.as_ref().map(Spanned::span);
        let client_key_file = optional_path(self.client_key_file)?;
        match (&client_cert_file, &client_key_file) {
            (Some(_), None) => {
                return Err((
                    client_cert_span.unwrap_or_default(),
                    "client_cert_file is set without client_key_file: set both, or neither".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    client_key_span.unwrap_or_default(),
                    "client_key_file is set without client_cert_file: set both, or neither".into(),
                ))
            }
            _ => {}
        }
        if let Some((broker, span)) = &broker {
            if !broker.tls && (ca_file.is_some() || client_cert_file.is_some()) {
                return Err((
                    span.clone(),
                    format!("TLS files (ca_file, client_cert_file) are set but the broker {broker} is plain MQTT: use mqtts://"),
                ));
            }
        }

        let keep_alive_s = in_range(self.keep_alive_s, 5..=3600, DEFAULT_KEEP_ALIVE_S, "seconds")?;
        let ack_timeout_s = in_range(
            self.ack_timeout_s,
            1..=3600,
            DEFAULT_ACK_TIMEOUT_S,
            "seconds",
        )?;
        let reconnect_min_s = in_range(
            self.reconnect_min_s,
            1..=3600,
            DEFAULT_RECONNECT_MIN_S,
            "seconds",
        )?;
        let reconnect_max_span = self.reconnect_max_s.as_ref().map(Spanned::span);
        let reconnect_max_s = in_range(
            self.reconnect_max_s,
            1..=86_400,
            DEFAULT_RECONNECT_MAX_S,
            "seconds",
        )?;
        if reconnect_max_s < reconnect_min_s {
            return Err((
                reconnect_max_span.unwrap_or_default(),
                format!("reconnect_max_s ({reconnect_max_s}) is below reconnect_min_s ({reconnect_min_s})"),
            ));
        }
        let max_in_flight = in_range(
            self.max_in_flight,
            1..=1000,
            DEFAULT_MAX_IN_FLIGHT,
            "messages",
        )?;
        let outbox_quota_mb = in_range(
            self.outbox_quota_mb,
            1..=1_048_576,
            DEFAULT_OUTBOX_QUOTA_MB,
            "MiB",
        )?;

        let mqtt5 = match &self.protocol {
            None => false,
            Some(protocol) => match protocol.get_ref().trim() {
                "3.1.1" => false,
                "5" => true,
                other => {
                    return Err((
                        protocol.span(),
                        format!("invalid protocol {other:?}: \"3.1.1\" or \"5\""),
                    ))
                }
            },
        };
        let Some((broker, _)) = broker else {
            return Ok(None);
        };
        Ok(Some(MqttConfig {
            broker,
            gateway_id,
            topic_prefix,
            client_id,
            username,
            password_file,
            ca_file,
            client_cert_file,
            client_key_file,
            keep_alive: Duration::from_secs(keep_alive_s),
            ack_timeout: Duration::from_secs(ack_timeout_s),
            reconnect_min: Duration::from_secs(reconnect_min_s),
            reconnect_max: Duration::from_secs(reconnect_max_s),
            max_in_flight,
            outbox_quota_bytes: outbox_quota_mb * 1024 * 1024,
            accept_commands: self.accept_commands.unwrap_or(true),
            mqtt5,
        }))
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It is not a regular file.
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// Others than its owner and group may read or write it, or its group may write it.
    #[error("{} has mode {mode:04o}: a secret must not be readable by other users nor writable by its group; run `chmod 0640 {}` (or 0600)", path.display(), path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Someone other than root or the agent's user owns it (and could change it).
    #[error("{} belongs to uid {owner}: a secret must belong to root or to the agent's user (uid {agent}); run `chown root {}`", path.display(), path.display())]
    WrongOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The agent's uid.
        agent: u32,
    },
    /// It is empty.
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
}

/// Reads a secret file after checking who can read and change it (module docs).
/// Trailing line breaks are removed (files written with `echo`).
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let read_error = |source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile(path.to_path_buf()));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let agent = nix::unistd::geteuid().as_raw();
    if metadata.uid() != 0 && metadata.uid() != agent {
        return Err(SecretFileError::WrongOwner {
            path: path.to_path_buf(),
            owner: metadata.uid(),
            agent,
        });
    }
    let mut bytes = std::fs::read(path).map_err(read_error)?;
    while bytes
        .last()
        .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
    {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(SecretFileError::Empty(path.to_path_buf()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse_with_default_ports() {
        let plain = parse_broker("mqtt://broker.example.com").expect("plain");
        assert_eq!((plain.tls, plain.port), (false, 1883));
        let tls = parse_broker("mqtts://10.0.0.1:18883").expect("tls");
        assert_eq!(
            (tls.tls, tls.host.as_str(), tls.port),
            (true, "10.0.0.1", 18883)
        );
        let v6 = parse_broker("mqtts://[::1]:8883").expect("v6");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "mqtts://[::1]:8883");
        for bad in [
            "broker:1883",
            "http://x",
            "mqtt://",
            "mqtt://host:0",
            "mqtt://host:port",
            "mqtt://a b",
        ] {
            assert!(parse_broker(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn secret_files_are_refused_when_others_can_read_them_and_trimmed_when_accepted() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("password");
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read_secret_file(&path).expect_err("world-readable");
        assert!(error.to_string().contains("mode 0644"), "{error}");
        assert!(error.to_string().contains("chmod 0640"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).expect("chmod");
        assert!(matches!(
            read_secret_file(&path),
            Err(SecretFileError::TooOpen { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(read_secret_file(&path).expect("0640"), b"s3cret");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            read_secret_file(&path),
            Err(SecretFileError::Empty(_))
        ));
        assert!(matches!(
            read_secret_file(directory.path()),
            Err(SecretFileError::NotAFile(_))
        ));
    }
}
