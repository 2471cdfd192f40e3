//! Pass-through of foreign traffic to upstream network servers over Semtech UDP, the
//! way a packet multiplexer does it, with the agent's rules:
//!
//! * **Uplinks.** An `rxpk` is the agent's when its [`UplinkOwnership`] says so (a
//!   JoinRequest of a registered device, a data frame of one of its sessions); every
//!   other one goes to each upstream whose filters accept it (DevAddr prefixes for data
//!   frames, JoinEUI prefixes for join requests; an upstream without filters takes
//!   everything, one with filters takes only what they match). When every `rxpk` of a
//!   PUSH_DATA goes to an upstream, it receives the gateway's datagram byte for byte;
//!   when only some do, it receives a PUSH_DATA with the gateway's header and those
//!   `rxpk` objects copied verbatim (their JSON text untouched) plus the `stat`.
//! * **One link per gateway and upstream.** Each has its own socket, so the upstream
//!   sees one packet forwarder per gateway, and sends that gateway's PULL_DATA
//!   keepalives so the upstream can send downlinks.
//! * **Downlinks.** A PULL_RESP from an upstream becomes a
//!   [`PassThroughDownlink`] event: the core loop admits it against the gateway's
//!   schedule and duty cycle (the same transmitter, the same budget), sends it with a
//!   token of its own (tokens never collide), and answers the upstream with a TX_ACK
//!   carrying the upstream's original token: the gateway's outcome, or the refusal
//!   (`COLLISION_PACKET` when the concentrator is busy then or the duty-cycle budget is
//!   spent: only standard Semtech names, which every network server understands and
//!   answers by trying its alternative, e.g. RX2). The gateway receives the upstream's
//!   JSON body exactly as written (only the token is ours), so fields the agent does not
//!   read, and absent ones, reach `lora_pkt_fwd` unchanged.
//! * **An upstream that is down costs nothing.** Forwarding never waits: datagrams are
//!   sent with `try_send` and dropped (counted) when the socket would block or the
//!   address is not resolved yet; name resolution and keepalives run in the link's own
//!   task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::GatewayEvent;
use crate::identifiers::GatewayEui;
use crate::lorawan::scheduler::TxAckOutcome;

/// Protocol version of the datagrams we write.
const PROTOCOL_VERSION: u8 = 2;
const PUSH_ACK: u8 = 0x01;
const PULL_DATA: u8 = 0x02;
const PULL_RESP: u8 = 0x03;
const PULL_ACK: u8 = 0x04;
const TX_ACK: u8 = 0x05;
/// Header length of PUSH_DATA/PULL_DATA/TX_ACK: version, token, type, gateway EUI.
const HEADER_LEN: usize = 12;

/// Answers "is this PHYPayload the agent's own?" (the network server's index implements it).
pub trait UplinkOwnership: Send + Sync {
    /// True when the frame belongs to a device the agent serves.
    fn owns(&self, phy_payload: &[u8]) -> bool;
}

/// Owns nothing: everything is passed through.
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingOwned;

impl UplinkOwnership for NothingOwned {
    fn owns(&self, _phy_payload: &[u8]) -> bool {
        false
    }
}

/// A prefix of 32-bit DevAddrs: the top `length` bits of `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevAddrPrefix {
    /// The address bits.
    pub address: u32,
    /// How many leading bits must match (0..=32).
    pub length: u8,
}

impl DevAddrPrefix {
    /// Whether `dev_addr` lies in the prefix.
    pub fn matches(&self, dev_addr: u32) -> bool {
        let length = u32::from(self.length.min(32));
        if length == 0 {
            return true;
        }
        let mask = u32::MAX << (32 - length);
        dev_addr & mask == self.address & mask
    }
}

/// A prefix of 64-bit JoinEUIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinEuiPrefix {
    /// The EUI bits.
    pub eui: u64,
    /// How many leading bits must match (0..=64).
    pub length: u8,
}

impl JoinEuiPrefix {
    /// Whether `join_eui` lies in the prefix.
    pub fn matches(&self, join_eui: u64) -> bool {
        let length = u32::from(self.length.min(64));
        if length == 0 {
            return true;
        }
        let mask = u64::MAX << (64 - length);
        join_eui & mask == self.eui & mask
    }
}

/// One upstream network server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// A name for logs and counters.
    pub name: String,
    /// `host:port` of its Semtech UDP server (resolved by the link, and again when it
    /// fails, so a gateway that boots offline still starts).
    pub server: String,
    /// Data frames forwarded only with a DevAddr in one of these (empty: no filter).
    pub dev_addr_prefixes: Vec<DevAddrPrefix>,
    /// Join requests forwarded only with a JoinEUI in one of these (empty: no filter).
    pub join_eui_prefixes: Vec<JoinEuiPrefix>,
    /// PULL_DATA keepalive interval.
    pub keepalive: Duration,
}

impl UpstreamConfig {
    /// Whether this upstream takes a foreign frame.
    pub fn accepts(&self, phy_payload: &[u8]) -> bool {
        if self.dev_addr_prefixes.is_empty() && self.join_eui_prefixes.is_empty() {
            return true;
        }
        let Some(&mhdr) = phy_payload.first() else {
            return false;
        };
        match mhdr >> 5 {
            0b000 if phy_payload.len() == 23 => {
                let mut eui = [0u8; 8];
                eui.copy_from_slice(&phy_payload[1..9]);
                let join_eui = u64::from_le_bytes(eui);
                self.join_eui_prefixes
                    .iter()
                    .any(|prefix| prefix.matches(join_eui))
            }
            0b010 | 0b100 if phy_payload.len() >= 12 => {
                let dev_addr = u32::from_le_bytes([
                    phy_payload[1],
                    phy_payload[2],
                    phy_payload[3],
                    phy_payload[4],
                ]);
                self.dev_addr_prefixes
                    .iter()
                    .any(|prefix| prefix.matches(dev_addr))
            }
            _ => false,
        }
    }
}

/// When a pass-through downlink asks to go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassThroughTiming {
    /// `imme: true`.
    Immediately,
    /// At this concentrator counter value.
    AtTmst(u32),
}

/// What the scheduler needs to know of a pass-through downlink, read from its TxPk the
/// way `lora_pkt_fwd` reads it (only these fields; the rest is the upstream's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassThroughRadio {
    /// Frequency, Hz.
    pub frequency_hz: u32,
    /// LoRa spreading factor.
    pub spreading_factor: u8,
    /// LoRa bandwidth, Hz.
    pub bandwidth_hz: u32,
    /// PHYPayload length.
    pub phy_len: usize,
    /// When.
    pub timing: PassThroughTiming,
}

/// A downlink an upstream sent for a gateway.
#[derive(Debug, Clone)]
pub struct PassThroughDownlink {
    /// The gateway it is for.
    pub gateway: GatewayEui,
    /// Which upstream (index in the configuration).
    pub upstream: usize,
    /// The upstream's token, to put in the TX_ACK.
    pub upstream_token: u16,
    /// Its radio parameters, for the schedule and the duty cycle.
    pub radio: PassThroughRadio,
    /// The PULL_RESP's JSON body exactly as the upstream wrote it: what the gateway gets.
    pub body: Vec<u8>,
}

/// Reads the fields of a PULL_RESP body the schedule needs. GPS-timed (`tmms`) and FSK
/// downlinks are refused (the agent schedules by the concentrator counter and LoRa).
pub fn read_pull_resp(body: &[u8]) -> Result<PassThroughRadio, String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    let txpk = json.get("txpk").ok_or("no \"txpk\" object")?;
    let frequency_mhz = txpk
        .get("freq")
        .and_then(serde_json::Value::as_f64)
        .ok_or("no \"freq\" number")?;
    let frequency_hz = (frequency_mhz * 1_000_000.0).round();
    if !(1.0..=f64::from(u32::MAX)).contains(&frequency_hz) {
        return Err(format!("frequency {frequency_mhz} MHz out of range"));
    }
    if txpk.get("modu").and_then(serde_json::Value::as_str) != Some("LORA") {
        return Err("only LoRa (\"modu\": \"LORA\") downlinks pass through".into());
    }
    let datr = txpk
        .get("datr")
        .and_then(serde_json::Value::as_str)
        .ok_or("no LoRa \"datr\" string")?;
    let (spreading_factor, bandwidth_hz) = crate::service::radio::parse_lora_datr(datr)
        .ok_or_else(|| format!("unreadable data rate {datr:?}"))?;
    let data = txpk
        .get("data")
        .and_then(serde_json::Value::as_str)
        .ok_or("no \"data\" string")?;
    let phy_len = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|error| format!("\"data\" is not base64: {error}"))?
        .len();
    let immediately = txpk
        .get("imme")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let timing = if immediately {
        PassThroughTiming::Immediately
    } else if let Some(tmst) = txpk.get("tmst").and_then(serde_json::Value::as_u64) {
        PassThroughTiming::AtTmst(
            u32::try_from(tmst).map_err(|_| format!("tmst {tmst} is above 2^32"))?,
        )
    } else {
        return Err(
            "neither \"imme\" nor \"tmst\" (GPS-timed downlinks do not pass through)".into(),
        );
    };
    Ok(PassThroughRadio {
        frequency_hz: frequency_hz as u32,
        spreading_factor,
        bandwidth_hz,
        phy_len,
        timing,
    })
}

/// Counters of one upstream.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    /// PUSH_DATA datagrams sent.
    pub push_data_sent: AtomicU64,
    /// Uplinks (`rxpk`) forwarded.
    pub uplinks_forwarded: AtomicU64,
    /// Datagrams not sent (address unresolved, socket full, send error).
    pub send_failures: AtomicU64,
    /// PUSH_ACKs received.
    pub push_acks: AtomicU64,
    /// PULL_ACKs received.
    pub pull_acks: AtomicU64,
    /// PULL_RESPs received and handed to the core.
    pub downlinks: AtomicU64,
    /// TX_ACKs sent back.
    pub tx_acks_sent: AtomicU64,
    /// Datagrams from the upstream that were not understood.
    pub bad_datagrams: AtomicU64,
}

/// A snapshot of an upstream's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamCounterSnapshot {
    /// The upstream's name.
    pub name: String,
    /// See [`UpstreamCounters`].
    pub push_data_sent: u64,
    /// See [`UpstreamCounters`].
    pub uplinks_forwarded: u64,
    /// See [`UpstreamCounters`].
    pub send_failures: u64,
    /// See [`UpstreamCounters`].
    pub push_acks: u64,
    /// See [`UpstreamCounters`].
    pub pull_acks: u64,
    /// See [`UpstreamCounters`].
    pub downlinks: u64,
    /// See [`UpstreamCounters`].
    pub tx_acks_sent: u64,
    /// See [`UpstreamCounters`].
    pub bad_datagrams: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Link {
    socket: Arc<UdpSocket>,
    address: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The upstreams and their per-gateway links.
pub(crate) struct Upstreams {
    configs: Vec<UpstreamConfig>,
    counters: Vec<Arc<UpstreamCounters>>,
    ownership: Arc<dyn UplinkOwnership>,
    links: Mutex<HashMap<(GatewayEui, usize), Arc<Link>>>,
    events: mpsc::Sender<GatewayEvent>,
}

#[derive(Deserialize)]
struct RawPushData<'a> {
    #[serde(borrow, default)]
    rxpk: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    stat: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RxpkData {
    #[serde(default)]
    data: Option<String>,
}

impl Upstreams {
    pub(crate) fn new(
        configs: Vec<UpstreamConfig>,
        ownership: Arc<dyn UplinkOwnership>,
        events: mpsc::Sender<GatewayEvent>,
    ) -> Self {
        let counters = configs.iter().map(|_| Arc::default()).collect();
        Upstreams {
            configs,
            counters,
            ownership,
            links: Mutex::new(HashMap::new()),
            events,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    pub(crate) fn counters(&self) -> Vec<UpstreamCounterSnapshot> {
        self.configs
            .iter()
            .zip(&self.counters)
            .map(|(config, counters)| {
                let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                UpstreamCounterSnapshot {
                    name: config.name.clone(),
                    push_data_sent: read(&counters.push_data_sent),
                    uplinks_forwarded: read(&counters.uplinks_forwarded),
                    send_failures: read(&counters.send_failures),
                    push_acks: read(&counters.push_acks),
                    pull_acks: read(&counters.pull_acks),
                    downlinks: read(&counters.downlinks),
                    tx_acks_sent: read(&counters.tx_acks_sent),
                    bad_datagrams: read(&counters.bad_datagrams),
                }
            })
            .collect()
    }

    /// A gateway opened its downlink path: open its link to every upstream (which then
    /// sends PULL_DATA keepalives, so upstreams can reach it before any uplink).
    pub(crate) fn connect(&self, gateway: GatewayEui) {
        for upstream in 0..self.configs.len() {
            let _ = self.link(gateway, upstream);
        }
    }

    /// Forwards what is foreign in a PUSH_DATA (the whole datagram `raw`, JSON `body`).
    pub(crate) fn forward_push_data(&self, gateway: GatewayEui, raw: &[u8], body: &[u8]) {
        let Ok(parsed) = serde_json::from_slice::<RawPushData<'_>>(body) else {
            return;
        };
        let rxpks = parsed.rxpk.unwrap_or_default();
        let frames: Vec<Option<Vec<u8>>> = rxpks
            .iter()
            .map(|rxpk| {
                let data = serde_json::from_str::<RxpkData>(rxpk.get()).ok()?.data?;
                base64::engine::general_purpose::STANDARD.decode(data).ok()
            })
            .collect();
        let foreign: Vec<bool> = frames
            .iter()
            .map(|frame| frame.as_deref().is_none_or(|phy| !self.ownership.owns(phy)))
            .collect();
        for (index, config) in self.configs.iter().enumerate() {
            let selected: Vec<usize> = (0..rxpks.len())
                .filter(|&i| {
                    foreign[i]
                        && frames[i].as_deref().map_or(
                            config.dev_addr_prefixes.is_empty()
                                && config.join_eui_prefixes.is_empty(),
                            |phy| config.accepts(phy),
                        )
                })
                .collect();
            if selected.is_empty() && parsed.stat.is_none() {
                continue;
            }
            let datagram = if selected.len() == rxpks.len() {
                raw.to_vec()
            } else {
                let mut json = String::from("{");
                if !selected.is_empty() {
                    json.push_str("\"rxpk\":[");
                    for (n, &i) in selected.iter().enumerate() {
                        if n > 0 {
                            json.push(',');
                        }
                        json.push_str(rxpks[i].get());
                    }
                    json.push(']');
                }
                if let Some(stat) = parsed.stat {
                    if !selected.is_empty() {
                        json.push(',');
                    }
                    json.push_str("\"stat\":");
                    json.push_str(stat.get());
                }
                json.push('}');
                let mut datagram = raw[..HEADER_LEN].to_vec();
                datagram.extend_from_slice(json.as_bytes());
                datagram
            };
            let counters = &self.counters[index];
            if self
                .link(gateway, index)
                .is_some_and(|link| link.try_send(&datagram))
            {
                bump(&counters.push_data_sent);
                counters
                    .uplinks_forwarded
                    .fetch_add(selected.len() as u64, Ordering::Relaxed);
            } else {
                bump(&counters.send_failures);
            }
        }
    }

    /// Sends the upstream its TX_ACK for a pass-through downlink.
    pub(crate) fn answer(
        &self,
        gateway: GatewayEui,
        upstream: usize,
        token: u16,
        outcome: &TxAckOutcome,
    ) {
        let Some(counters) = self.counters.get(upstream) else {
            return;
        };
        let error = match outcome {
            TxAckOutcome::Accepted => "NONE".to_string(),
            TxAckOutcome::AcceptedWithAdjustedPower { .. } => "TX_POWER".to_string(),
            TxAckOutcome::Rejected(error) => error.as_wire().to_string(),
        };
        let mut datagram = vec![PROTOCOL_VERSION, (token >> 8) as u8, token as u8, TX_ACK];
        datagram.extend_from_slice(&gateway.to_bytes());
        datagram.extend_from_slice(
            serde_json::json!({ "txpk_ack": { "error": error } })
                .to_string()
                .as_bytes(),
        );
        if self
            .link(gateway, upstream)
            .is_some_and(|link| link.try_send(&datagram))
        {
            bump(&counters.tx_acks_sent);
        } else {
            bump(&counters.send_failures);
        }
    }

    /// The link of a gateway to an upstream, created (socket and task) on first use;
    /// `None` if no socket can be opened (logged; tried again next time).
    fn link(&self, gateway: GatewayEui, upstream: usize) -> Option<Arc<Link>> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = links.get(&(gateway, upstream)) {
            return Some(Arc::clone(link));
        }
        let link = Arc::new(self.start_link(gateway, upstream)?);
        links.insert((gateway, upstream), Arc::clone(&link));
        Some(link)
    }

    fn start_link(&self, gateway: GatewayEui, upstream: usize) -> Option<Link> {
        let config = self.configs[upstream].clone();
        let counters = Arc::clone(&self.counters[upstream]);
        // Bound synchronously so a first datagram can go out at once.
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
            .and_then(UdpSocket::from_std);
        let socket = match socket {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                warn!(upstream = %config.name, %gateway, %error, "cannot open a socket for the upstream");
                return None;
            }
        };
        // A literal address needs no resolution: usable for the very first datagram.
        let address = Arc::new(Mutex::new(config.server.parse::<SocketAddr>().ok()));
        let task = tokio::spawn(run_link(
            gateway,
            upstream,
            config,
            counters,
            Arc::clone(&socket),
            Arc::clone(&address),
            self.events.clone(),
        ));
        Some(Link {
            socket,
            address,
            task,
        })
    }
}

impl Link {
    /// Sends without waiting; false when not sent.
    fn try_send(&self, datagram: &[u8]) -> bool {
        let address = *self.address.lock().unwrap_or_else(PoisonError::into_inner);
        match address {
            Some(address) => self.socket.try_send_to(datagram, address).is_ok(),
            None => false,
        }
    }
}

/// The link's task: resolves the upstream, sends PULL_DATA keepalives, reads what the
/// upstream sends.
async fn run_link(
    gateway: GatewayEui,
    upstream: usize,
    config: UpstreamConfig,
    counters: Arc<UpstreamCounters>,
    socket: Arc<UdpSocket>,
    address: Arc<Mutex<Option<SocketAddr>>>,
    events: mpsc::Sender<GatewayEvent>,
) {
    let mut keepalive = tokio::time::interval(config.keepalive);
    let mut token: u16 = 0;
    let mut buffer = vec![0u8; 65_535];
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                let resolved = *address.lock().unwrap_or_else(PoisonError::into_inner);
                if resolved.is_none() {
                    match tokio::net::lookup_host(&config.server).await {
                        Ok(mut addresses) => {
                            if let Some(found) = addresses.next() {
                                info!(upstream = %config.name, %gateway, address = %found, "upstream resolved");
                                *address.lock().unwrap_or_else(PoisonError::into_inner) = Some(found);
                            }
                        }
                        Err(error) => debug!(upstream = %config.name, %error, "cannot resolve the upstream yet"),
                    }
                }
                let resolved = *address.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(resolved) = resolved {
                    token = token.wrapping_add(1);
                    let mut pull_data = vec![PROTOCOL_VERSION, (token >> 8) as u8, token as u8, PULL_DATA];
                    pull_data.extend_from_slice(&gateway.to_bytes());
                    if socket.try_send_to(&pull_data, resolved).is_err() {
                        bump(&counters.send_failures);
                    }
                }
            }
            received = socket.recv_from(&mut buffer) => {
                let Ok((length, from)) = received else {
                    // ICMP port unreachable and the like: the upstream is down; keep going.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let expected = *address.lock().unwrap_or_else(PoisonError::into_inner);
                if expected != Some(from) {
                    bump(&counters.bad_datagrams);
                    continue;
                }
                handle_upstream_datagram(gateway, upstream, &config, &counters, &buffer[..length], &events);
            }
        }
    }
}

fn handle_upstream_datagram(
    gateway: GatewayEui,
    upstream: usize,
    config: &UpstreamConfig,
    counters: &UpstreamCounters,
    datagram: &[u8],
    events: &mpsc::Sender<GatewayEvent>,
) {
    if datagram.len() < 4 || !(1..=2).contains(&datagram[0]) {
        bump(&counters.bad_datagrams);
        warn!(upstream = %config.name, length = datagram.len(), "not a Semtech UDP datagram from the upstream");
        return;
    }
    let token = u16::from_be_bytes([datagram[1], datagram[2]]);
    match datagram[3] {
        PUSH_ACK => bump(&counters.push_acks),
        PULL_ACK => bump(&counters.pull_acks),
        PULL_RESP => {
            let body = &datagram[4..];
            match read_pull_resp(body) {
                Ok(radio) => {
                    bump(&counters.downlinks);
                    let event = GatewayEvent::PassThroughDownlink(Box::new(PassThroughDownlink {
                        gateway,
                        upstream,
                        upstream_token: token,
                        radio,
                        body: body.to_vec(),
                    }));
                    if events.try_send(event).is_err() {
                        warn!(upstream = %config.name, "dropped an upstream downlink: the core is not keeping up");
                    }
                }
                Err(reason) => {
                    bump(&counters.bad_datagrams);
                    warn!(upstream = %config.name, "refused a PULL_RESP from the upstream: {reason}");
                }
            }
        }
        other => {
            bump(&counters.bad_datagrams);
            warn!(upstream = %config.name, kind = other, "unexpected datagram type from the upstream");
        }
    }
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("configs", &self.configs)
            .finish_non_exhaustive()
    }
}
