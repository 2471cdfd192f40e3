//! The simulated packet forwarder and the air between it and the nodes, on the agent's
//! [`Transport`] trait: uplinks reach the service as [`GatewayEvent::Uplink`]s stamped
//! with a concentrator counter (virtual µs, wrapping like the SX130x's); each downlink
//! handed to the gateway is checked like a concentrator does (one transmission at a
//! time: an overlap is refused `COLLISION_PACKET`; a `tmst` already past is `TOO_LATE`),
//! given its airtime, and put on the air, where the nodes hear it at its end.
//!
//! [`udp_gateway`] puts the same gateway behind a real Semtech UDP link instead: the
//! agent then runs its production transport (`UdpPacketForwarder`) on loopback, and
//! every uplink, PULL_RESP and TX_ACK crosses a socket as it does on a gateway.

use std::sync::{Arc, Mutex, PoisonError};

use semtech_udp::pull_resp::TxPk;
use tokio::sync::mpsc;

use crate::clock::{Clock, VirtualClock};
use crate::identifiers::GatewayEui;
use crate::lorawan::airtime::CodingRate;
use crate::lorawan::region::{Modulation, Region};
use crate::lorawan::scheduler::{TxAckError, TxRadio};
use crate::packet_forwarder::{
    DownlinkError, DownlinkSender, GatewayEvent, Transport, TxAckOutcome,
};
use crate::service::radio::parse_lora_datr;

/// A frame on the air.
#[derive(Debug, Clone)]
pub struct Transmission {
    /// Start, virtual µs.
    pub start_us: u64,
    /// End, virtual µs.
    pub end_us: u64,
    /// Frequency, Hz.
    pub frequency_hz: u32,
    /// Data rate index in the region.
    pub data_rate: u8,
    /// The PHYPayload.
    pub phy_payload: Vec<u8>,
    /// Sent as soon as possible (Class C) rather than at a `tmst`.
    pub immediately: bool,
}

/// What the gateway's transmitter did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AirCounters {
    /// Frames transmitted.
    pub transmissions: u64,
    /// Their airtime, µs.
    pub airtime_us: u64,
    /// Frames refused because another was on the air.
    pub collisions: u64,
    /// Frames refused because their time had passed.
    pub too_late: u64,
}

#[derive(Debug, Default)]
struct Air {
    /// Transmissions accepted and not yet over: (start, end), µs.
    busy: Vec<(u64, u64)>,
    counters: AirCounters,
}

/// The gateway's downlink side.
#[derive(Clone)]
pub struct SimDownlinks {
    air: Arc<Mutex<Air>>,
    on_air: mpsc::UnboundedSender<Transmission>,
    clock: VirtualClock,
    region: Arc<Region>,
}

impl SimDownlinks {
    fn transmit(&self, txpk: &TxPk) -> TxAckOutcome {
        let now_us = self.clock.now().as_micros();
        let start_us = if txpk.time.is_immediate() {
            now_us
        } else if let Some(tmst) = txpk.time.tmst() {
            // The concentrator counter is the low 32 bits of virtual µs.
            let ahead = i64::from(tmst.wrapping_sub(now_us as u32) as i32);
            if ahead < 0 {
                lock(&self.air).counters.too_late += 1;
                return TxAckOutcome::Rejected(TxAckError::TooLate);
            }
            now_us + ahead.unsigned_abs()
        } else {
            return TxAckOutcome::Rejected(TxAckError::Unknown("GPS_UNLOCKED".into()));
        };
        let Some((spreading_factor, bandwidth_hz)) = parse_lora_datr(&txpk.datr.to_string()) else {
            return TxAckOutcome::Rejected(TxAckError::Unknown("not LoRa".into()));
        };
        let modulation = Modulation::Lora {
            spreading_factor,
            bandwidth_hz,
            coding_rate: CodingRate::Cr4_5,
        };
        let frequency_hz = (txpk.freq * 1_000_000.0).round() as u32;
        let phy_payload = txpk.data.data().to_vec();
        let Ok(radio) = TxRadio::lorawan_downlink(frequency_hz, &modulation, phy_payload.len())
        else {
            return TxAckOutcome::Rejected(TxAckError::TxFrequency);
        };
        let end_us = start_us + radio.time_on_air_us;
        let data_rate = data_rate_index(&self.region, spreading_factor, bandwidth_hz);
        let mut air = lock(&self.air);
        air.busy.retain(|&(_, end)| end > now_us);
        if air
            .busy
            .iter()
            .any(|&(start, end)| start_us < end && start < end_us)
        {
            air.counters.collisions += 1;
            return TxAckOutcome::Rejected(TxAckError::CollisionPacket);
        }
        if trace_air() {
            eprintln!(
                "air {now_us}: tx {start_us}..{end_us} {frequency_hz} DR{data_rate} {} B",
                phy_payload.len()
            );
        }
        air.busy.push((start_us, end_us));
        air.counters.transmissions += 1;
        air.counters.airtime_us += radio.time_on_air_us;
        drop(air);
        let _ = self.on_air.send(Transmission {
            start_us,
            end_us,
            frequency_hz,
            data_rate,
            phy_payload,
            immediately: txpk.time.is_immediate(),
        });
        TxAckOutcome::Accepted
    }

    /// What the transmitter did so far.
    pub fn counters(&self) -> AirCounters {
        lock(&self.air).counters
    }
}

impl DownlinkSender for SimDownlinks {
    async fn send_downlink(
        &self,
        _gateway: GatewayEui,
        txpk: TxPk,
    ) -> Result<TxAckOutcome, DownlinkError> {
        Ok(self.transmit(&txpk))
    }
}

/// The service's side of the simulated packet forwarder.
pub struct SimTransport {
    events: mpsc::UnboundedReceiver<GatewayEvent>,
    downlinks: SimDownlinks,
}

impl Transport for SimTransport {
    type Downlinks = SimDownlinks;

    async fn recv(&mut self) -> Option<GatewayEvent> {
        self.events.recv().await
    }

    fn downlinks(&self) -> SimDownlinks {
        self.downlinks.clone()
    }
}

/// The nodes' side: where uplinks go in and transmissions come out.
pub struct AirSide {
    /// Uplinks (and other gateway events) towards the service.
    pub to_service: mpsc::UnboundedSender<GatewayEvent>,
    /// Frames the gateway put on the air.
    pub on_air: mpsc::UnboundedReceiver<Transmission>,
    /// The transmitter's counters.
    pub downlinks: SimDownlinks,
}

impl AirSide {
    /// The service side of the same gateway for an agent started again: uplinks go to
    /// it from now on (the old service's queue is gone with it).
    pub fn reconnect(&mut self) -> SimTransport {
        let (to_service, events) = mpsc::unbounded_channel();
        self.to_service = to_service;
        SimTransport {
            events,
            downlinks: self.downlinks.clone(),
        }
    }
}

/// A simulated packet forwarder on `clock`, for `region`.
pub fn packet_forwarder(clock: VirtualClock, region: Region) -> (SimTransport, AirSide) {
    let (to_service, events) = mpsc::unbounded_channel();
    let (on_air_tx, on_air) = mpsc::unbounded_channel();
    let downlinks = SimDownlinks {
        air: Arc::default(),
        on_air: on_air_tx,
        clock,
        region: Arc::new(region),
    };
    (
        SimTransport {
            events,
            downlinks: downlinks.clone(),
        },
        AirSide {
            to_service,
            on_air,
            downlinks,
        },
    )
}

/// A frame the simulated gateway received, as the packet forwarder reports it: on
/// `frequency_hz` at `datr` (`SF7BW125`), `tmst` the concentrator counter at its end,
/// with a good signal. `None` if `datr` is not a LoRa data rate.
pub fn received_uplink(
    gateway: GatewayEui,
    channel: u64,
    phy_payload: Vec<u8>,
    frequency_hz: u32,
    datr: &str,
    tmst: u32,
    received_at: crate::lorawan::time::MonotonicTime,
) -> Option<GatewayEvent> {
    let rxpk = semtech_udp::push_data::RxPk::V1(semtech_udp::push_data::RxPkV1 {
        chan: channel,
        codr: Some(semtech_udp::CodingRate::_4_5),
        size: phy_payload.len() as u64,
        data: phy_payload,
        datr: datr.parse().ok()?,
        freq: f64::from(frequency_hz) / 1e6,
        lsnr: 7.0,
        modu: semtech_udp::Modulation::LORA,
        rfch: 0,
        rssi: -90,
        rssis: None,
        stat: semtech_udp::push_data::CRC::OK,
        tmst,
        time: None,
    });
    Some(GatewayEvent::Uplink(Box::new(
        crate::packet_forwarder::Uplink {
            gateway,
            rxpk,
            gps_time_ms: None,
            received_at,
        },
    )))
}

/// GWMP datagram kinds.
const PUSH_DATA: u8 = 0x00;
const PULL_DATA: u8 = 0x02;
const PULL_RESP: u8 = 0x03;
const TX_ACK: u8 = 0x05;

#[derive(serde::Deserialize)]
struct PullRespBody {
    txpk: TxPk,
}

/// The simulated gateway behind a real Semtech UDP link to the agent at `agent`: the
/// nodes' uplinks (from `uplinks`) leave as PUSH_DATA; PULL_DATA keeps the downlink path
/// open; each PULL_RESP goes to the simulated transmitter (`downlinks`), and its verdict
/// goes back as TX_ACK. Runs until `uplinks` closes.
pub async fn udp_gateway(
    agent: std::net::SocketAddr,
    gateway: GatewayEui,
    mut uplinks: mpsc::UnboundedReceiver<GatewayEvent>,
    downlinks: SimDownlinks,
) -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(agent).await?;
    let mut token: u16 = 0;
    let datagram = |token: u16, kind: u8, body: &[u8]| {
        let mut datagram = vec![2, (token >> 8) as u8, token as u8, kind];
        datagram.extend_from_slice(&gateway.to_bytes());
        datagram.extend_from_slice(body);
        datagram
    };
    let mut keepalive = tokio::time::interval(std::time::Duration::from_secs(5));
    let mut buffer = vec![0u8; 65_536];
    loop {
        tokio::select! {
            uplink = uplinks.recv() => {
                let Some(event) = uplink else { return Ok(()) };
                let GatewayEvent::Uplink(uplink) = event else { continue };
                let body = serde_json::json!({ "rxpk": [uplink.rxpk] });
                token = token.wrapping_add(1);
                socket.send(&datagram(token, PUSH_DATA, body.to_string().as_bytes())).await?;
            }
            _ = keepalive.tick() => {
                token = token.wrapping_add(1);
                socket.send(&datagram(token, PULL_DATA, b"")).await?;
            }
            received = socket.recv(&mut buffer) => {
                let length = received?;
                let packet = &buffer[..length];
                if length < 4 || packet[3] != PULL_RESP {
                    continue; // PUSH_ACK, PULL_ACK
                }
                let answer_token = u16::from_be_bytes([packet[1], packet[2]]);
                // From the bytes: TxPk's data rate borrows its text.
                let txpk = serde_json::from_slice::<PullRespBody>(&packet[4..])
                    .ok()
                    .map(|body| body.txpk);
                let error = match txpk {
                    Some(txpk) => match downlinks.transmit(&txpk) {
                        TxAckOutcome::Accepted | TxAckOutcome::AcceptedWithAdjustedPower { .. } => "NONE".to_string(),
                        TxAckOutcome::Rejected(error) => error.as_wire().to_string(),
                    },
                    None => "SEND_FAIL".to_string(),
                };
                let body = serde_json::json!({ "txpk_ack": { "error": error } });
                socket.send(&datagram(answer_token, TX_ACK, body.to_string().as_bytes())).await?;
            }
        }
    }
}

/// The region's index of a LoRa data rate (255 if it has none).
pub fn data_rate_index(region: &Region, spreading_factor: u8, bandwidth_hz: u32) -> u8 {
    (0..16u8)
        .find(|&dr| {
            matches!(region.data_rate(dr).map(|rate| rate.modulation),
                Ok(Modulation::Lora { spreading_factor: sf, bandwidth_hz: bw, .. })
                    if sf == spreading_factor && bw == bandwidth_hz)
        })
        .unwrap_or(u8::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `FUOTA_SIM_TRACE_AIR` is set (every transmission goes to stderr).
fn trace_air() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUOTA_SIM_TRACE_AIR").is_some())
}

/// The agent's link to the simulated gateway: in memory, or its production Semtech UDP
/// transport on loopback with [`udp_gateway`] at the other end.
pub enum SimulatedLink {
    /// [`SimTransport`].
    Memory(SimTransport),
    /// The agent's UDP transport.
    Udp(crate::packet_forwarder::UdpPacketForwarder),
}

/// The downlink side of a [`SimulatedLink`].
#[derive(Clone)]
pub enum SimulatedLinkDownlinks {
    /// In memory.
    Memory(SimDownlinks),
    /// Over UDP.
    Udp(<crate::packet_forwarder::UdpPacketForwarder as Transport>::Downlinks),
}

impl DownlinkSender for SimulatedLinkDownlinks {
    async fn send_downlink(
        &self,
        gateway: GatewayEui,
        txpk: TxPk,
    ) -> Result<TxAckOutcome, DownlinkError> {
        match self {
            SimulatedLinkDownlinks::Memory(downlinks) => {
                downlinks.send_downlink(gateway, txpk).await
            }
            SimulatedLinkDownlinks::Udp(downlinks) => downlinks.send_downlink(gateway, txpk).await,
        }
    }
}

impl Transport for SimulatedLink {
    type Downlinks = SimulatedLinkDownlinks;

    async fn recv(&mut self) -> Option<GatewayEvent> {
        match self {
            SimulatedLink::Memory(link) => link.recv().await,
            SimulatedLink::Udp(link) => link.recv().await,
        }
    }

    fn downlinks(&self) -> SimulatedLinkDownlinks {
        match self {
            SimulatedLink::Memory(link) => SimulatedLinkDownlinks::Memory(link.downlinks()),
            SimulatedLink::Udp(link) => SimulatedLinkDownlinks::Udp(link.downlinks()),
        }
    }
}
