//! The link to the gateways' packet forwarders: the [`Transport`] abstraction the core
//! runs on, and its implementation over the Semtech UDP protocol ([`udp`]).
//!
//! A transport delivers [`GatewayEvent`]s (uplinks with their gateway and arrival time,
//! gateway status, gateways connecting) and sends downlinks ([`DownlinkSender`]),
//! returning the gateway's TX_ACK answer as a [`TxAckOutcome`]. The simulator implements
//! the same traits over its channel model, so the core cannot tell the difference.
//!
//! The wire types (`RxPk`, `TxPk`, `Stat`) are `semtech-udp`'s; framing, parsing of the
//! JSON bodies, allow-listing, acknowledgements and TX_ACK matching are ours (see
//! [`udp`] for why its server runtime is not used).
//!
//! Foreign traffic is passed through to upstream network servers ([`passthrough`]).

pub mod counters;
pub mod datagram;
pub mod passthrough;
pub mod push_data;
pub mod tx_ack;
pub mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use semtech_udp::pull_resp::TxPk;
pub use semtech_udp::push_data::{RxPk, Stat};

pub use crate::lorawan::scheduler::{TxAckError, TxAckOutcome};
pub use counters::CounterSnapshot;
pub use passthrough::{
    NothingOwned, PassThroughDownlink, PassThroughRadio, PassThroughTiming, UplinkOwnership,
    UpstreamConfig, UpstreamCounterSnapshot,
};
pub use udp::{UdpDownlinks, UdpPacketForwarder};

use crate::clock::MonotonicTime;
use crate::identifiers::GatewayEui;

/// An uplink as received by one gateway.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// The gateway that received it.
    pub gateway: GatewayEui,
    /// The packet and its radio metadata (`tmst`, frequency, data rate, RSSI, SNR).
    pub rxpk: RxPk,
    /// GPS time of reception in milliseconds since the GPS epoch (`tmms`), if the
    /// gateway has GPS.
    pub gps_time_ms: Option<u64>,
    /// When the datagram carrying it arrived, on the agent's monotonic timeline (anchors
    /// the concentrator's `tmst` counter for downlink timing).
    pub received_at: MonotonicTime,
}

/// Something a gateway reported.
#[derive(Debug, Clone)]
pub enum GatewayEvent {
    /// A received packet with a valid CRC.
    Uplink(Box<Uplink>),
    /// A status report.
    Stats {
        /// The reporting gateway.
        gateway: GatewayEui,
        /// Its statistics.
        stat: Box<Stat>,
    },
    /// An upstream network server wants a gateway to transmit this (pass-through).
    PassThroughDownlink(Box<PassThroughDownlink>),
    /// A gateway opened its downlink path (first PULL_DATA) or moved to a new address.
    GatewayConnected {
        /// The gateway.
        gateway: GatewayEui,
        /// Where its downlinks now go.
        address: SocketAddr,
    },
}

/// Why a downlink did not get a TX_ACK answer.
#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    /// The gateway has not sent a PULL_DATA yet, so there is nowhere to send to.
    #[error("gateway {0} has no downlink path yet (no PULL_DATA received)")]
    GatewayNotConnected(GatewayEui),
    /// The TxPk could not be encoded.
    #[error("encoding the downlink for gateway {gateway}: {source}")]
    Encode {
        /// The gateway.
        gateway: GatewayEui,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The datagram could not be sent.
    #[error("sending the downlink to gateway {gateway} at {address}: {source}")]
    Send {
        /// The gateway.
        gateway: GatewayEui,
        /// Its address.
        address: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// No TX_ACK in time: the gateway may or may not transmit.
    #[error("no TX_ACK from gateway {gateway} within {timeout:?}")]
    TxAckTimeout {
        /// The gateway.
        gateway: GatewayEui,
        /// How long we waited.
        timeout: Duration,
    },
    /// Every token is taken by a pending downlink (65,536 in flight).
    #[error("too many downlinks waiting for a TX_ACK")]
    TooManyPending,
    /// The transport has shut down.
    #[error("the packet-forwarder link has shut down")]
    TransportClosed,
}

/// The source of gateway events, and the factory of downlink senders.
pub trait Transport: Send {
    /// The downlink side, usable concurrently with [`Transport::recv`].
    type Downlinks: DownlinkSender;

    /// The next event from the gateways; `None` once the transport has stopped.
    fn recv(&mut self) -> impl Future<Output = Option<GatewayEvent>> + Send;

    /// A handle for sending downlinks.
    fn downlinks(&self) -> Self::Downlinks;
}

/// Sends downlinks to gateways.
pub trait DownlinkSender: Clone + Send + Sync + 'static {
    /// Sends `txpk` to `gateway` and waits for its TX_ACK. A refusal by the gateway is an
    /// `Ok(TxAckOutcome::Rejected(..))`; `Err` means no answer was obtained.
    fn send_downlink(
        &self,
        gateway: GatewayEui,
        txpk: TxPk,
    ) -> impl Future<Output = Result<TxAckOutcome, DownlinkError>> + Send;

    /// Sends a pass-through downlink: the upstream's PULL_RESP JSON body as it wrote it,
    /// under a token of the transport's own. Transports without upstreams never get one.
    fn send_pass_through(
        &self,
        gateway: GatewayEui,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<TxAckOutcome, DownlinkError>> + Send {
        let _ = (gateway, body);
        async { Err(DownlinkError::TransportClosed) }
    }

    /// Tells the upstream that sent a pass-through downlink what became of it (its TX_ACK,
    /// with its own token). Transports without upstreams ignore it.
    fn answer_pass_through(&self, downlink: &PassThroughDownlink, outcome: &TxAckOutcome) {
        let _ = (downlink, outcome);
    }
}
