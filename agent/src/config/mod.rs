//! The agent's configuration file (`/etc/fuota-agent/agent.toml`): its sections, their
//! defaults, validation, and the commented template that `fuota-agent configfile` prints.
//!
//! The template (`etc/fuota-agent/agent.toml` in the repository, embedded here) lists
//! every option the agent reads with its default; a test keeps the two in step. Loading
//! is strict: unknown keys, wrong types and invalid values are errors that name the key
//! and its line ([`InvalidConfig`]), so `fuota-agent check-config` can tell an operator
//! exactly what to fix and the daemon never starts on a half-understood file.
//!
//! Parsing happens in two layers: private `Raw*` structs that mirror the file (with
//! spans, for messages about values that parse but are not allowed), then validation
//! into the public [`Config`].

mod error;
mod mqtt;
pub mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

pub use error::{ConfigError, InvalidConfig};
pub use mqtt::{read_secret_file, BrokerAddress, MqttConfig, SecretFileError};

use crate::identifiers::GatewayEui;
use crate::lorawan::region::RegionName;
use crate::packet_forwarder::passthrough::{DevAddrPrefix, JoinEuiPrefix, UpstreamConfig};

/// The commented configuration template, every option with its default.
pub const TEMPLATE: &str = include_str!("../../../etc/fuota-agent/agent.toml");

/// Where the agent looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fuota-agent/agent.toml";

/// Default database path.
pub const DEFAULT_DATABASE_PATH: &str = "/var/lib/fuota-agent/agent.db";

/// Default packet-forwarder bind address: loopback only (the protocol is unauthenticated).
pub const DEFAULT_PACKET_FORWARDER_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1700);

/// Default TX_ACK timeout in milliseconds.
pub const DEFAULT_TX_ACK_TIMEOUT_MS: u64 = 2_000;

/// Upper bound of `tx_ack_timeout_ms`.
pub const MAX_TX_ACK_TIMEOUT_MS: u64 = 60_000;

/// Default PULL_DATA keepalive towards upstream servers, seconds.
pub const DEFAULT_UPSTREAM_KEEPALIVE_S: u64 = 10;

/// Default region.
pub const DEFAULT_REGION: RegionName = RegionName::Eu868;

/// Default directory of the firmware image cache.
pub const DEFAULT_IMAGE_CACHE_DIRECTORY: &str = "/var/lib/fuota-agent/images";

/// Default path of the local API's Unix socket.
pub const DEFAULT_API_SOCKET: &str = "/run/fuota-agent/api.sock";

/// Default group whose members may use the local API.
pub const DEFAULT_API_GROUP: &str = "fuota-agent";

/// Default log level.
pub const DEFAULT_LOG_LEVEL: &str = "info";

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[packet_forwarder]`
    pub packet_forwarder: PacketForwarderConfig,
    /// `[lorawan]`
    pub lorawan: LorawanConfig,
    /// `[[upstream]]`: network servers foreign traffic is passed through to.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[firmware]`
    pub firmware: FirmwareConfig,
    /// `[api]`
    pub api: ApiConfig,
    /// `[mqtt]`: upstream sync to the fleet backend; `None` when no broker is set.
    pub mqtt: Option<MqttConfig>,
    /// `[logging]`
    pub logging: LoggingConfig,
}

/// `[firmware]`: the image cache and the keys images must be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareConfig {
    /// `cache_directory`: where cached images live (absolute).
    pub cache_directory: PathBuf,
    /// `trusted_keys`: PEM public keys an image must be signed with (one of them).
    pub trusted_keys: Vec<PathBuf>,
    /// `download_ca_file`: CA certificates (PEM) for HTTPS image downloads; `None`: the
    /// system's CA store.
    pub download_ca_file: Option<PathBuf>,
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        FirmwareConfig {
            cache_directory: PathBuf::from(DEFAULT_IMAGE_CACHE_DIRECTORY),
            trusted_keys: Vec::new(),
            download_ca_file: None,
        }
    }
}

/// `[api]`: the local HTTP/JSON API on a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// `socket`: the socket's path (absolute).
    pub socket: PathBuf,
    /// `group`: members of this group (and root) may use the API; empty: root and the
    /// agent's own user only.
    pub group: String,
    /// `metrics_listen`: loopback TCP address of the read-only status and Prometheus
    /// metrics listener; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_API_SOCKET),
            group: DEFAULT_API_GROUP.to_string(),
            metrics_listen: None,
        }
    }
}

/// `[storage]`: the SQLite database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `database`: absolute path of the SQLite file.
    pub database: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            database: PathBuf::from(DEFAULT_DATABASE_PATH),
        }
    }
}

/// `[packet_forwarder]`: the Semtech UDP link to the gateway's packet forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketForwarderConfig {
    /// `bind`: the UDP address to listen on.
    pub bind: SocketAddr,
    /// `gateway_euis`: the gateways allowed to talk to the agent; empty means any gateway
    /// (only accepted with a loopback `bind`).
    pub gateway_euis: Vec<GatewayEui>,
    /// `tx_ack_timeout_ms`: how long a downlink waits for its TX_ACK.
    pub tx_ack_timeout: Duration,
}

impl Default for PacketForwarderConfig {
    fn default() -> Self {
        PacketForwarderConfig {
            bind: DEFAULT_PACKET_FORWARDER_BIND,
            gateway_euis: Vec::new(),
            tx_ack_timeout: Duration::from_millis(DEFAULT_TX_ACK_TIMEOUT_MS),
        }
    }
}

/// `[lorawan]`: the region and what the network server gives joining devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LorawanConfig {
    /// `region`: the regional parameters of the gateway.
    pub region: RegionName,
    /// `net_id`: the NetID in join accepts (24 bits).
    pub net_id: u32,
    /// `dev_addr_prefix`: DevAddrs are allocated in this prefix: the address bits ...
    pub dev_addr_prefix: u32,
    /// ... and how many of them are fixed.
    pub dev_addr_prefix_len: u8,
    /// `rx1_dr_offset`: RX1DROffset given to devices at join (0..=5).
    pub rx1_dr_offset: u8,
    /// `rx1_delay_s`: RX1 delay given to devices at join (1..=15 s).
    pub rx1_delay_s: u8,
}

impl Default for LorawanConfig {
    fn default() -> Self {
        LorawanConfig {
            region: DEFAULT_REGION,
            net_id: 0,
            dev_addr_prefix: 0,
            dev_addr_prefix_len: 7,
            rx1_dr_offset: 0,
            rx1_delay_s: 1,
        }
    }
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// `level`: a level name or `tracing` filter directives.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: DEFAULT_LOG_LEVEL.to_string(),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&source, &path.display().to_string())
    }

    /// Parses and validates `source`; `origin` names it in messages (a path).
    pub fn parse(source: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(source)
            .map_err(|error| InvalidConfig::at(origin, source, error.span(), error.message()))?;
        raw.validate().map_err(|(span, message)| {
            InvalidConfig::at(origin, source, Some(span), message).into()
        })
    }
}

/// A validation failure: the span of the offending value and the message.
type Rejection = (std::ops::Range<usize>, String);

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    packet_forwarder: RawPacketForwarder,
    #[serde(default)]
    lorawan: RawLorawan,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    firmware: RawFirmware,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    mqtt: mqtt::RawMqtt,
    #[serde(default)]
    logging: RawLogging,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFirmware {
    cache_directory: Option<Spanned<PathBuf>>,
    trusted_keys: Option<Vec<Spanned<PathBuf>>>,
    download_ca_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    socket: Option<Spanned<PathBuf>>,
    group: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    database: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPacketForwarder {
    bind: Option<Spanned<BindAddress>>,
    gateway_euis: Option<Vec<Spanned<String>>>,
    tx_ack_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Spanned<String>,
    server: Spanned<String>,
    #[serde(default)]
    dev_addr_prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    join_eui_prefixes: Vec<Spanned<String>>,
    keepalive_interval_s: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLorawan {
    region: Option<Spanned<String>>,
    net_id: Option<Spanned<String>>,
    dev_addr_prefix: Option<Spanned<String>>,
    rx1_dr_offset: Option<Spanned<u8>>,
    rx1_delay_s: Option<Spanned<u8>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    level: Option<Spanned<String>>,
}

/// A socket address with a message that says what is expected.
#[derive(Debug, Clone, Copy)]
struct BindAddress(SocketAddr);

impl<'de> Deserialize<'de> for BindAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(BindAddress).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid address {text:?}: expected IP:port, e.g. \"127.0.0.1:1700\" or \"[::1]:1700\""
            ))
        })
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, Rejection> {
        Ok(Config {
            storage: self.storage.validate()?,
            packet_forwarder: self.packet_forwarder.validate()?,
            lorawan: self.lorawan.validate()?,
            upstreams: validate_upstreams(self.upstream)?,
            firmware: self.firmware.validate()?,
            api: self.api.validate()?,
            mqtt: self.mqtt.validate()?,
            logging: self.logging.validate()?,
        })
    }
}

/// An absolute, non-empty path.
fn absolute_path(value: Spanned<PathBuf>) -> Result<PathBuf, Rejection> {
    let span = value.span();
    let path = value.into_inner();
    if path.as_os_str().is_empty() {
        return Err((span, "must not be empty".into()));
    }
    if !path.is_absolute() {
        return Err((
            span,
            format!(
                "{:?} is a relative path; use an absolute path (the service runs with \"/\" as its working directory)",
                path.display().to_string()
            ),
        ));
    }
    Ok(path)
}

impl RawStorage {
    fn validate(self) -> Result<StorageConfig, Rejection> {
        let Some(database) = self.database else {
            return Ok(StorageConfig::default());
        };
        Ok(StorageConfig {
            database: absolute_path(database)?,
        })
    }
}

impl RawFirmware {
    fn validate(self) -> Result<FirmwareConfig, Rejection> {
        let mut config = FirmwareConfig::default();
        if let Some(directory) = self.cache_directory {
            config.cache_directory = absolute_path(directory)?;
        }
        for key in self.trusted_keys.unwrap_or_default() {
            let span = key.span();
            let path = absolute_path(key)?;
            if config.trusted_keys.contains(&path) {
                return Err((span, format!("{} is listed twice", path.display())));
            }
            config.trusted_keys.push(path);
        }
        if let Some(path) = self.download_ca_file {
            if !path.get_ref().as_os_str().is_empty() {
                config.download_ca_file = Some(absolute_path(path)?);
            }
        }
        Ok(config)
    }
}

impl RawApi {
    fn validate(self) -> Result<ApiConfig, Rejection> {
        let mut config = ApiConfig::default();
        if let Some(socket) = self.socket {
            config.socket = absolute_path(socket)?;
        }
        if let Some(group) = self.group {
            let name = group.get_ref().trim();
            let valid = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid || name.starts_with('-') {
                return Err((
                    group.span(),
                    format!("invalid group name {name:?}: letters, digits, '_', '-' and '.' only, e.g. \"fuota-agent\""),
                ));
            }
            config.group = name.to_string();
        }
        if let Some(listen) = self.metrics_listen {
            let text = listen.get_ref().trim();
            if !text.is_empty() {
                let address: SocketAddr = text.parse().map_err(|_| {
                    (
                        listen.span(),
                        format!("invalid address {text:?}: expected IP:port, e.g. \"127.0.0.1:9103\", or \"\" for off"),
                    )
                })?;
                if !address.ip().is_loopback() {
                    return Err((
                        listen.span(),
                        format!(
                            "{address} is not a loopback address: the metrics listener has no \
                             authentication, so it only listens on this host (use 127.0.0.1 or ::1, \
                             and a reverse proxy or SSH tunnel to reach it from elsewhere)"
                        ),
                    ));
                }
                config.metrics_listen = Some(address);
            }
        }
        Ok(config)
    }
}

impl RawPacketForwarder {
    fn validate(self) -> Result<PacketForwarderConfig, Rejection> {
        let mut gateway_euis: Vec<GatewayEui> = Vec::new();
        for text in self.gateway_euis.unwrap_or_default() {
            // Parsed here, not by serde: toml would point a custom error at the whole
            // array instead of the element.
            let eui: GatewayEui = text.get_ref().parse().map_err(|error| {
                (
                    text.span(),
                    format!("invalid gateway EUI {:?}: {error}", text.get_ref()),
                )
            })?;
            if gateway_euis.contains(&eui) {
                return Err((text.span(), format!("gateway EUI {eui} is listed twice")));
            }
            gateway_euis.push(eui);
        }

        let bind = match self.bind {
            None => DEFAULT_PACKET_FORWARDER_BIND,
            Some(bind) => {
                let address = bind.get_ref().0;
                if !address.ip().is_loopback() && gateway_euis.is_empty() {
                    return Err((
                        bind.span(),
                        format!(
                            "{address} is not a loopback address, so any host on the network could \
                             act as a gateway: list the allowed gateways in `gateway_euis`"
                        ),
                    ));
                }
                address
            }
        };

        let tx_ack_timeout = match self.tx_ack_timeout_ms {
            None => Duration::from_millis(DEFAULT_TX_ACK_TIMEOUT_MS),
            Some(timeout) => {
                let millis = *timeout.get_ref();
                if !(1..=MAX_TX_ACK_TIMEOUT_MS).contains(&millis) {
                    return Err((
                        timeout.span(),
                        format!("{millis} is out of range: expected 1 to {MAX_TX_ACK_TIMEOUT_MS} milliseconds"),
                    ));
                }
                Duration::from_millis(millis)
            }
        };

        Ok(PacketForwarderConfig {
            bind,
            gateway_euis,
            tx_ack_timeout,
        })
    }
}

fn validate_upstreams(raw: Vec<RawUpstream>) -> Result<Vec<UpstreamConfig>, Rejection> {
    let mut upstreams: Vec<UpstreamConfig> = Vec::new();
    for upstream in raw {
        let name = upstream.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err((upstream.name.span(), "must not be empty".into()));
        }
        if upstreams.iter().any(|known| known.name == name) {
            return Err((
                upstream.name.span(),
                format!("upstream {name:?} is defined twice"),
            ));
        }
        let server = upstream.server.get_ref().trim().to_string();
        let port_ok = server.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
        });
        if !port_ok {
            return Err((
                upstream.server.span(),
                format!("invalid server {server:?}: expected host:port, e.g. \"lns.example.com:1700\" or \"192.0.2.10:1700\""),
            ));
        }
        let mut dev_addr_prefixes = Vec::new();
        for text in &upstream.dev_addr_prefixes {
            let parsed = parse_prefix(text.get_ref(), 8, 32).map(|(bits, length)| DevAddrPrefix {
                address: bits as u32,
                length,
            });
            let Some(prefix) = parsed else {
                return Err((
                    text.span(),
                    format!("invalid DevAddr prefix {:?}: expected 8 hexadecimal digits, '/', and 0 to 32, e.g. \"26000000/7\"", text.get_ref()),
                ));
            };
            dev_addr_prefixes.push(prefix);
        }
        let mut join_eui_prefixes = Vec::new();
        for text in &upstream.join_eui_prefixes {
            let parsed = parse_prefix(text.get_ref(), 16, 64)
                .map(|(bits, length)| JoinEuiPrefix { eui: bits, length });
            let Some(prefix) = parsed else {
                return Err((
                    text.span(),
                    format!("invalid JoinEUI prefix {:?}: expected 16 hexadecimal digits, '/', and 0 to 64, e.g. \"70b3d57ed0000000/32\"", text.get_ref()),
                ));
            };
            join_eui_prefixes.push(prefix);
        }
        let keepalive_s = match &upstream.keepalive_interval_s {
            None => DEFAULT_UPSTREAM_KEEPALIVE_S,
            Some(value) => {
                if !(1..=300).contains(value.get_ref()) {
                    return Err((
                        value.span(),
                        format!(
                            "{} is out of range: expected 1 to 300 seconds",
                            value.get_ref()
                        ),
                    ));
                }
                *value.get_ref()
            }
        };
        upstreams.push(UpstreamConfig {
            name,
            server,
            dev_addr_prefixes,
            join_eui_prefixes,
            keepalive: Duration::from_secs(keepalive_s),
        });
    }
    Ok(upstreams)
}

/// `"<hex digits>/<length>"` with exactly `digits` hex digits and a length up to `max_len`.
fn parse_prefix(text: &str, digits: usize, max_len: u8) -> Option<(u64, u8)> {
    let (bits, length) = text.trim().split_once('/')?;
    if bits.len() != digits {
        return None;
    }
    let bits = u64::from_str_radix(bits, 16).ok()?;
    let length: u8 = length.parse().ok().filter(|length| *length <= max_len)?;
    Some((bits, length))
}

impl RawLorawan {
    fn validate(self) -> Result<LorawanConfig, Rejection> {
        let mut config = LorawanConfig::default();
        if let Some(region) = self.region {
            config.region = region.get_ref().parse().map_err(|_| {
                (
                    region.span(),
                    format!(
                        "unknown region {:?}: expected \"EU868\", \"US915\", \"AS923\", \"AS923-2\", \"AS923-3\" or \"AS923-4\"",
                        region.get_ref()
                    ),
                )
            })?;
        }
        if let Some(net_id) = self.net_id {
            let text = net_id.get_ref().trim();
            config.net_id = u32::from_str_radix(text, 16)
                .ok()
                .filter(|value| text.len() == 6 && *value <= 0x00ff_ffff)
                .ok_or_else(|| {
                    (
                        net_id.span(),
                        format!("invalid NetID {text:?}: expected 6 hexadecimal digits, e.g. \"000013\""),
                    )
                })?;
        }
        if let Some(prefix) = self.dev_addr_prefix {
            let text = prefix.get_ref().trim();
            let parsed = text.split_once('/').and_then(|(address, length)| {
                let address = u32::from_str_radix(address, 16)
                    .ok()
                    .filter(|_| address.len() == 8)?;
                let length: u8 = length.parse().ok().filter(|length| *length <= 32)?;
                Some((address, length))
            });
            let Some((address, length)) = parsed else {
                return Err((
                    prefix.span(),
                    format!("invalid DevAddr prefix {text:?}: expected 8 hexadecimal digits, '/', and a length of 0 to 32 bits, e.g. \"26000000/7\""),
                ));
            };
            config.dev_addr_prefix = address;
            config.dev_addr_prefix_len = length;
        }
        if let Some(offset) = self.rx1_dr_offset {
            if *offset.get_ref() > 5 {
                return Err((
                    offset.span(),
                    format!("{} is out of range: expected 0 to 5", offset.get_ref()),
                ));
            }
            config.rx1_dr_offset = *offset.get_ref();
        }
        if let Some(delay) = self.rx1_delay_s {
            if !(1..=15).contains(delay.get_ref()) {
                return Err((
                    delay.span(),
                    format!(
                        "{} is out of range: expected 1 to 15 seconds",
                        delay.get_ref()
                    ),
                ));
            }
            config.rx1_delay_s = *delay.get_ref();
        }
        Ok(config)
    }
}

impl RawLogging {
    fn validate(self) -> Result<LoggingConfig, Rejection> {
        let Some(level) = self.level else {
            return Ok(LoggingConfig::default());
        };
        let span = level.span();
        let text = level.into_inner();
        let is_directive_list = text.contains('=') || text.contains(',');
        let valid = if is_directive_list {
            tracing_subscriber::EnvFilter::try_new(&text).is_ok()
        } else {
            LOG_LEVELS.contains(&text.trim().to_ascii_lowercase().as_str())
        };
        if !valid {
            return Err((
                span,
                format!(
                    "invalid log level {text:?}: expected one of {} or tracing directives such as \"info,fuota_agent=debug\"",
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
        Ok(LoggingConfig { level: text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults() {
        let config = Config::parse(TEMPLATE, "template").unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn every_default_in_the_template_is_the_default_in_the_code() {
        // Uncomment every "#key = value" line: the documented defaults must parse to the
        // same configuration as the empty file.
        let uncommented: String = TEMPLATE
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            uncommented.contains("\nbind = "),
            "template lost its options"
        );
        let config = Config::parse(&uncommented, "uncommented template").unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn an_empty_file_is_the_default_configuration() {
        assert_eq!(Config::parse("", "empty").unwrap(), Config::default());
    }
}
