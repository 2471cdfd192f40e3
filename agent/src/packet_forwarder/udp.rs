//! The Semtech UDP server: one socket that packet forwarders send PUSH_DATA, PULL_DATA
//! and TX_ACK to, and that sends PUSH_ACK, PULL_ACK and PULL_RESP back.
//!
//! * PUSH_DATA and PULL_DATA are acknowledged here, locally, as soon as they are read:
//!   local service never waits on anything upstream.
//! * Gateways outside the allow-list get no acknowledgement at all; their datagrams are
//!   dropped, counted and logged (a warning the first time per gateway).
//! * Malformed datagrams are rejected, counted and logged; the server keeps running.
//!   Inside a PUSH_DATA, each `rxpk` stands alone ([`super::push_data`]).
//! * A downlink goes to the address of the gateway's latest PULL_DATA, with a token that
//!   is unique among pending downlinks; the TX_ACK carrying that token (from that gateway)
//!   completes it.
//!
//! # Why not `semtech-udp`'s server runtime
//!
//! `semtech_udp::server_runtime` (0.12) was the starting point, but it cannot meet the
//! agent's requirements, so only the crate's wire types are used:
//! * it acknowledges and registers every gateway before the application sees anything,
//!   so an allow-list can only filter events, not stop unknown gateways being served;
//! * a datagram it cannot parse is reported (`Event::UnableToParseUdpFrame`, with the
//!   bytes) and not acknowledged, but one bad `rxpk` (bad base64) rejects the whole
//!   PUSH_DATA, losing the good packets beside it;
//! * a TX_ACK with an error name it does not know (`FULL`, `EMPTY`, `DUTY_CYCLE`) reads
//!   as *success* (`get_result()` is `Ok(None)`: the untagged, flattened result field
//!   swallows the error), so a refused downlink would be taken as sent;
//! * its v1 `RxPk` has no `tmms` field, so the GPS time of reception is dropped;
//! * its gateway liveness check uses `SystemTime` and returns an error if the wall clock
//!   stepped backwards, which makes its internal task panic and takes the whole runtime
//!   down: exactly what happens on a gateway whose clock NTP corrects;
//! * TX_ACKs whose token it did not issue are discarded, and the raw datagram is not
//!   available, both of which the pass-through to upstream servers needs.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use super::counters::{CounterSnapshot, PacketForwarderCounters};
use super::datagram::{self, UpstreamDatagram};
use super::passthrough::{
    PassThroughDownlink, UplinkOwnership, UpstreamConfig, UpstreamCounterSnapshot, Upstreams,
};
use super::push_data::parse_push_data;
use super::tx_ack::parse_tx_ack;
use super::{DownlinkError, DownlinkSender, GatewayEvent, Transport, TxPk, Uplink};
use crate::clock::{Clock, MonotonicTime};
use crate::config::PacketForwarderConfig;
use crate::identifiers::GatewayEui;
use crate::lorawan::scheduler::TxAckOutcome;

/// Events waiting for the consumer; beyond this, new events are dropped and counted
/// (blocking instead would stop the acknowledgements as well).
const EVENT_QUEUE_CAPACITY: usize = 4096;

/// Largest UDP payload.
const MAX_DATAGRAM_SIZE: usize = 65_535;

/// Unknown gateways remembered for "warn once"; beyond this, all are logged at debug.
const MAX_REMEMBERED_UNKNOWN_GATEWAYS: usize = 1024;

/// Pause after a socket receive error, so a persistent error cannot spin the CPU.
const RECEIVE_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the packet-forwarder socket to {address}: {source}")]
pub struct BindError {
    /// The address.
    pub address: SocketAddr,
    /// The socket error.
    #[source]
    pub source: std::io::Error,
}

/// A connected gateway, as seen from its PULL_DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLink {
    /// Where its downlinks go.
    pub address: SocketAddr,
    /// When its latest PULL_DATA arrived.
    pub last_pull_data: MonotonicTime,
}

struct PendingDownlink {
    gateway: GatewayEui,
    answer: oneshot::Sender<TxAckOutcome>,
}

#[derive(Default)]
struct LinkState {
    gateways: HashMap<GatewayEui, GatewayLink>,
    pending: HashMap<u16, PendingDownlink>,
    last_token: u16,
    warned_unknown_gateways: HashSet<GatewayEui>,
}

impl LinkState {
    /// A token no pending downlink uses.
    fn allocate_token(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            self.last_token = self.last_token.wrapping_add(1);
            if !self.pending.contains_key(&self.last_token) {
                return Some(self.last_token);
            }
        }
        None
    }
}

struct Shared {
    socket: UdpSocket,
    /// `None`: any gateway.
    allowed_gateways: Option<HashSet<GatewayEui>>,
    tx_ack_timeout: Duration,
    clock: Arc<dyn Clock>,
    counters: PacketForwarderCounters,
    state: Mutex<LinkState>,
    /// Upstream network servers foreign traffic is passed to (none: nothing passes).
    upstreams: Upstreams,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, LinkState> {
        // Plain maps, left consistent by every critical section.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, events: &mpsc::Sender<GatewayEvent>, event: GatewayEvent) {
        if let Err(error) = events.try_send(event) {
            PacketForwarderCounters::increment(&self.counters.events_dropped);
            warn!(%error, "dropping a gateway event: the consumer is not keeping up");
        }
    }

    async fn send_to(&self, bytes: &[u8], address: SocketAddr, what: &str) {
        if let Err(error) = self.socket.send_to(bytes, address).await {
            PacketForwarderCounters::increment(&self.counters.socket_errors);
            warn!(%address, %error, "cannot send {what}");
        }
    }

    fn is_allowed(&self, gateway: GatewayEui) -> bool {
        self.allowed_gateways
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&gateway))
    }

    async fn handle_datagram(
        &self,
        bytes: &[u8],
        from: SocketAddr,
        events: &mpsc::Sender<GatewayEvent>,
    ) {
        let received_at = self.clock.now();
        PacketForwarderCounters::increment(&self.counters.datagrams_received);
        let datagram = match datagram::parse_upstream(bytes) {
            Ok(datagram) => datagram,
            Err(rejection) => {
                PacketForwarderCounters::increment(&self.counters.bad_datagrams);
                warn!(peer = %from, length = bytes.len(), "rejected datagram: {rejection}");
                return;
            }
        };
        let gateway = datagram.gateway();
        if !self.is_allowed(gateway) {
            PacketForwarderCounters::increment(&self.counters.unknown_gateway_datagrams);
            let first_time = {
                let mut state = self.state();
                state.warned_unknown_gateways.len() < MAX_REMEMBERED_UNKNOWN_GATEWAYS
                    && state.warned_unknown_gateways.insert(gateway)
            };
            if first_time {
                warn!(%gateway, peer = %from, "dropping datagrams from a gateway that is not in gateway_euis");
            } else {
                debug!(%gateway, peer = %from, "dropped a datagram from a gateway not in gateway_euis");
            }
            return;
        }
        match datagram {
            UpstreamDatagram::PushData { token, json, .. } => {
                self.handle_push_data(gateway, token, json, from, received_at, events)
                    .await;
                if !self.upstreams.is_empty() {
                    self.upstreams.forward_push_data(gateway, bytes, json);
                }
            }
            UpstreamDatagram::PullData { token, .. } => {
                self.handle_pull_data(gateway, token, from, received_at, events)
                    .await;
            }
            UpstreamDatagram::TxAck { token, json, .. } => {
                self.handle_tx_ack(gateway, token, json, from);
            }
        }
    }

    async fn handle_push_data(
        &self,
        gateway: GatewayEui,
        token: u16,
        json: &[u8],
        from: SocketAddr,
        received_at: MonotonicTime,
        events: &mpsc::Sender<GatewayEvent>,
    ) {
        let contents = match parse_push_data(json) {
            Ok(contents) => contents,
            Err(rejection) => {
                PacketForwarderCounters::increment(&self.counters.bad_datagrams);
                warn!(%gateway, peer = %from, "rejected PUSH_DATA: {rejection}");
                return;
            }
        };
        PacketForwarderCounters::increment(&self.counters.push_data);
        self.send_to(&datagram::push_ack(token), from, "PUSH_ACK")
            .await;

        for (index, reason) in &contents.rejected_packets {
            PacketForwarderCounters::increment(&self.counters.bad_rxpks);
            warn!(%gateway, peer = %from, "rejected rxpk[{index}]: {reason}");
        }
        if contents.crc_not_ok > 0 {
            PacketForwarderCounters::add(
                &self.counters.crc_not_ok_rxpks,
                contents.crc_not_ok as u64,
            );
            debug!(%gateway, count = contents.crc_not_ok, "ignored packets without a valid CRC");
        }
        for packet in contents.packets {
            PacketForwarderCounters::increment(&self.counters.uplinks);
            trace!(%gateway, rxpk = %packet.rxpk, "uplink");
            self.deliver(
                events,
                GatewayEvent::Uplink(Box::new(Uplink {
                    gateway,
                    rxpk: packet.rxpk,
                    gps_time_ms: packet.gps_time_ms,
                    received_at,
                })),
            );
        }
        if let Some(reason) = &contents.rejected_stat {
            PacketForwarderCounters::increment(&self.counters.bad_stats);
            warn!(%gateway, peer = %from, "rejected stat: {reason}");
        }
        if let Some(stat) = contents.stat {
            PacketForwarderCounters::increment(&self.counters.stats);
            self.deliver(
                events,
                GatewayEvent::Stats {
                    gateway,
                    stat: Box::new(stat),
                },
            );
        }
    }

    async fn handle_pull_data(
        &self,
        gateway: GatewayEui,
        token: u16,
        from: SocketAddr,
        received_at: MonotonicTime,
        events: &mpsc::Sender<GatewayEvent>,
    ) {
        PacketForwarderCounters::increment(&self.counters.pull_data);
        let previous = self.state().gateways.insert(
            gateway,
            GatewayLink {
                address: from,
                last_pull_data: received_at,
            },
        );
        self.send_to(&datagram::pull_ack(token), from, "PULL_ACK")
            .await;
        self.upstreams.connect(gateway);
        if previous.map(|link| link.address) != Some(from) {
            info!(%gateway, address = %from, "gateway connected");
            self.deliver(
                events,
                GatewayEvent::GatewayConnected {
                    gateway,
                    address: from,
                },
            );
        }
    }

    fn handle_tx_ack(&self, gateway: GatewayEui, token: u16, json: &[u8], from: SocketAddr) {
        let outcome = match parse_tx_ack(json) {
            Ok(outcome) => outcome,
            Err(rejection) => {
                PacketForwarderCounters::increment(&self.counters.bad_datagrams);
                warn!(%gateway, peer = %from, token, "rejected TX_ACK: {rejection}");
                return;
            }
        };
        PacketForwarderCounters::increment(&self.counters.tx_acks);
        let pending = {
            let mut state = self.state();
            match state.pending.get(&token) {
                Some(pending) if pending.gateway == gateway => state.pending.remove(&token),
                _ => None,
            }
        };
        match pending {
            Some(pending) => {
                if matches!(outcome, TxAckOutcome::Rejected(_)) {
                    PacketForwarderCounters::increment(&self.counters.tx_ack_rejections);
                }
                // The sender may have given up (timeout) in the meantime: nothing to do.
                let _ = pending.answer.send(outcome);
            }
            None => {
                PacketForwarderCounters::increment(&self.counters.unmatched_tx_acks);
                debug!(%gateway, token, ?outcome, "TX_ACK matches no pending downlink");
            }
        }
    }

    async fn send_downlink(
        &self,
        gateway: GatewayEui,
        txpk: TxPk,
    ) -> Result<TxAckOutcome, DownlinkError> {
        let description = txpk.to_string();
        self.send_pull_resp(gateway, &description, |token| {
            datagram::pull_resp(token, &txpk)
        })
        .await
    }

    /// Sends a PULL_RESP whose JSON body is given as is (a pass-through downlink), under a
    /// token of ours.
    async fn send_raw_pull_resp(
        &self,
        gateway: GatewayEui,
        body: &[u8],
    ) -> Result<TxAckOutcome, DownlinkError> {
        self.send_pull_resp(gateway, "pass-through", |token| {
            let [high, low] = token.to_be_bytes();
            let mut datagram = vec![datagram::PROTOCOL_VERSION, high, low, 0x03];
            datagram.extend_from_slice(body);
            Ok(datagram)
        })
        .await
    }

    async fn send_pull_resp(
        &self,
        gateway: GatewayEui,
        description: &str,
        build: impl FnOnce(u16) -> Result<Vec<u8>, serde_json::Error>,
    ) -> Result<TxAckOutcome, DownlinkError> {
        let (answer, answered) = oneshot::channel();
        let (token, address) = {
            let mut state = self.state();
            let Some(link) = state.gateways.get(&gateway).copied() else {
                PacketForwarderCounters::increment(&self.counters.downlink_send_errors);
                return Err(DownlinkError::GatewayNotConnected(gateway));
            };
            let token = state
                .allocate_token()
                .ok_or(DownlinkError::TooManyPending)?;
            state
                .pending
                .insert(token, PendingDownlink { gateway, answer });
            (token, link.address)
        };
        let forget = || {
            self.state().pending.remove(&token);
        };

        let bytes = match build(token) {
            Ok(bytes) => bytes,
            Err(source) => {
                forget();
                PacketForwarderCounters::increment(&self.counters.downlink_send_errors);
                return Err(DownlinkError::Encode { gateway, source });
            }
        };
        if let Err(source) = self.socket.send_to(&bytes, address).await {
            forget();
            PacketForwarderCounters::increment(&self.counters.downlink_send_errors);
            PacketForwarderCounters::increment(&self.counters.socket_errors);
            return Err(DownlinkError::Send {
                gateway,
                address,
                source,
            });
        }
        PacketForwarderCounters::increment(&self.counters.downlinks_sent);
        debug!(%gateway, %address, token, downlink = %description, "downlink sent");

        match tokio::time::timeout(self.tx_ack_timeout, answered).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(DownlinkError::TransportClosed),
            Err(_) => {
                forget();
                PacketForwarderCounters::increment(&self.counters.tx_ack_timeouts);
                Err(DownlinkError::TxAckTimeout {
                    gateway,
                    timeout: self.tx_ack_timeout,
                })
            }
        }
    }
}

/// The UDP packet-forwarder link: bound socket, receive task, event queue.
/// Dropping it stops the receive task and closes the socket once no [`UdpDownlinks`]
/// handle is left.
pub struct UdpPacketForwarder {
    shared: Arc<Shared>,
    events: mpsc::Receiver<GatewayEvent>,
    receive_task: JoinHandle<()>,
    local_address: SocketAddr,
}

impl std::fmt::Debug for UdpPacketForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPacketForwarder")
            .field("local_address", &self.local_address)
            .finish_non_exhaustive()
    }
}

/// Sends downlinks over a [`UdpPacketForwarder`]'s socket. Cheap to clone.
#[derive(Clone)]
pub struct UdpDownlinks {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UdpDownlinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpDownlinks").finish_non_exhaustive()
    }
}

impl UdpPacketForwarder {
    /// Binds `config.bind` and starts serving packet forwarders (must run inside a tokio
    /// runtime), with no upstream.
    pub async fn bind(
        config: &PacketForwarderConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<UdpPacketForwarder, BindError> {
        Self::bind_with_upstreams(config, Vec::new(), Arc::new(super::NothingOwned), clock).await
    }

    /// Like [`Self::bind`], passing the traffic `ownership` does not claim through to
    /// `upstreams`.
    pub async fn bind_with_upstreams(
        config: &PacketForwarderConfig,
        upstreams: Vec<UpstreamConfig>,
        ownership: Arc<dyn UplinkOwnership>,
        clock: Arc<dyn Clock>,
    ) -> Result<UdpPacketForwarder, BindError> {
        let socket = UdpSocket::bind(config.bind)
            .await
            .map_err(|source| BindError {
                address: config.bind,
                source,
            })?;
        let local_address = socket.local_addr().map_err(|source| BindError {
            address: config.bind,
            source,
        })?;
        let allowed_gateways = (!config.gateway_euis.is_empty())
            .then(|| config.gateway_euis.iter().copied().collect());
        let (event_sender, events) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let upstreams = Upstreams::new(upstreams, ownership, event_sender.clone());
        let shared = Arc::new(Shared {
            socket,
            allowed_gateways,
            tx_ack_timeout: config.tx_ack_timeout,
            clock,
            counters: PacketForwarderCounters::default(),
            state: Mutex::new(LinkState::default()),
            upstreams,
        });
        let receive_task = tokio::spawn(receive_loop(Arc::clone(&shared), event_sender));
        info!(address = %local_address, "listening for packet forwarders (Semtech UDP)");
        Ok(UdpPacketForwarder {
            shared,
            events,
            receive_task,
            local_address,
        })
    }

    /// The bound address (with the actual port when bound to port 0).
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The link's counters now.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// Each upstream's counters now.
    pub fn upstream_counters(&self) -> Vec<UpstreamCounterSnapshot> {
        self.shared.upstreams.counters()
    }

    /// Gateways that have sent a PULL_DATA, with their address and last PULL_DATA time.
    pub fn connected_gateways(&self) -> Vec<(GatewayEui, GatewayLink)> {
        let mut gateways: Vec<_> = self
            .shared
            .state()
            .gateways
            .iter()
            .map(|(eui, link)| (*eui, *link))
            .collect();
        gateways.sort_by_key(|(eui, _)| *eui);
        gateways
    }
}

impl Drop for UdpPacketForwarder {
    fn drop(&mut self) {
        self.receive_task.abort();
    }
}

async fn receive_loop(shared: Arc<Shared>, events: mpsc::Sender<GatewayEvent>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM_SIZE];
    loop {
        match shared.socket.recv_from(&mut buffer).await {
            Ok((length, from)) => {
                shared
                    .handle_datagram(&buffer[..length], from, &events)
                    .await
            }
            Err(error) => {
                PacketForwarderCounters::increment(&shared.counters.socket_errors);
                warn!(%error, "packet-forwarder socket receive error");
                tokio::time::sleep(RECEIVE_ERROR_BACKOFF).await;
            }
        }
    }
}

impl Transport for UdpPacketForwarder {
    type Downlinks = UdpDownlinks;

    async fn recv(&mut self) -> Option<GatewayEvent> {
        self.events.recv().await
    }

    fn downlinks(&self) -> UdpDownlinks {
        UdpDownlinks {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl DownlinkSender for UdpDownlinks {
    async fn send_downlink(
        &self,
        gateway: GatewayEui,
        txpk: TxPk,
    ) -> Result<TxAckOutcome, DownlinkError> {
        self.shared.send_downlink(gateway, txpk).await
    }

    async fn send_pass_through(
        &self,
        gateway: GatewayEui,
        body: Vec<u8>,
    ) -> Result<TxAckOutcome, DownlinkError> {
        self.shared.send_raw_pull_resp(gateway, &body).await
    }

    fn answer_pass_through(&self, downlink: &PassThroughDownlink, outcome: &TxAckOutcome) {
        self.shared.upstreams.answer(
            downlink.gateway,
            downlink.upstream,
            downlink.upstream_token,
            outcome,
        );
    }
}
