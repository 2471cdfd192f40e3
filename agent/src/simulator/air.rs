//! The simulated packet forwarder and the air between it and the nodes, on the agent's
//! [`Transport`] trait: uplinks reach the service as [`GatewayEvent::Uplink`]s stamped
//! with a concentrator counter (virtual µs, wrapping like the SX130x's); each downlink
//! handed to the gateway is checked like a concentrator does (one transmission at a
//! time: an overlap is refused `COLLISION_PACKET`; a `tmst` already past is `TOO_LATE`),
//! given its airtime, and put on the air, where the nodes hear it at its end.

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
