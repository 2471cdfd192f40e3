//! Translation between the packet forwarder's radio descriptions (`RxPk`, `TxPk`) and
//! the region's data rates: an uplink's metadata for the network server, and the TxPk of
//! a placed downlink (`ipol` true, `ncrc` true, preamble 8, `tmst` or `imme`).

use std::str::FromStr;

use semtech_udp::pull_resp::{PhyData, Time};
use semtech_udp::{
    CodingRate as WireCodingRate, DataRate as WireDataRate, Modulation as WireModulation,
};

use crate::clock::{GpsTime, WallTime};
use crate::lorawan::airtime::CodingRate;
use crate::lorawan::region::{Modulation, Region};
use crate::lorawan::scheduler::ScheduledTx;
use crate::network_server::UplinkRadio;
use crate::packet_forwarder::{TxPk, Uplink};

/// LoRaWAN downlinks always use an 8-symbol preamble (a `null` makes lora_pkt_fwd use 6).
pub const DOWNLINK_PREAMBLE: u64 = 8;

/// The spreading factor and bandwidth (Hz) of a LoRa `datr` such as `SF7BW125`.
pub fn parse_lora_datr(datr: &str) -> Option<(u8, u32)> {
    let rest = datr.strip_prefix("SF")?;
    let (sf, bw) = rest.split_once("BW")?;
    let spreading_factor: u8 = sf.parse().ok()?;
    let bandwidth_khz: u32 = bw.parse().ok()?;
    Some((spreading_factor, bandwidth_khz * 1_000))
}

/// The network server's view of an uplink, or `None` when its modulation is not one of
/// the region's uplink data rates.
pub fn uplink_radio(region: &Region, uplink: &Uplink, wall: WallTime) -> Option<UplinkRadio> {
    let rxpk = &uplink.rxpk;
    let (spreading_factor, bandwidth_hz) = parse_lora_datr(&rxpk.datarate().to_string())?;
    let modulation = Modulation::Lora {
        spreading_factor,
        bandwidth_hz,
        coding_rate: CodingRate::Cr4_5,
    };
    let data_rate = region.uplink_data_rate_index(&modulation).ok()?;
    let frequency_hz = (rxpk.frequency() * 1_000_000.0).round();
    if !(0.0..=f64::from(u32::MAX)).contains(&frequency_hz) {
        return None;
    }
    Some(UplinkRadio {
        gateway: uplink.gateway,
        frequency_hz: frequency_hz as u32,
        data_rate,
        snr_db: rxpk.snr(),
        rssi_dbm: rxpk.signal_rssi().unwrap_or_else(|| rxpk.channel_rssi()),
        tmst: rxpk.timestamp(),
        gps_time: uplink.gps_time_ms.map(|ms| GpsTime {
            seconds: ms / 1_000,
            subsec_nanos: ((ms % 1_000) * 1_000_000) as u32,
        }),
        received_at: uplink.received_at,
        received_wall: wall,
    })
}

/// The TxPk of a placed downlink.
pub fn txpk(
    tx: &ScheduledTx,
    modulation: &Modulation,
    power_dbm: u32,
    phy_payload: Vec<u8>,
) -> Result<TxPk, String> {
    let Modulation::Lora {
        spreading_factor,
        bandwidth_hz,
        ..
    } = *modulation
    else {
        return Err(format!("{modulation:?} downlinks are not supported"));
    };
    let datr = format!("SF{spreading_factor}BW{}", bandwidth_hz / 1_000);
    let datr = WireDataRate::from_str(&datr).map_err(|error| format!("{datr}: {error:?}"))?;
    Ok(TxPk {
        time: if tx.immediately {
            Time::immediate()
        } else {
            Time::by_tmst(tx.tmst.0)
        },
        freq: f64::from(tx.radio.frequency_hz) / 1_000_000.0,
        rfch: 0,
        powe: u64::from(power_dbm),
        modu: WireModulation::LORA,
        datr,
        codr: Some(WireCodingRate::_4_5),
        fdev: None,
        ipol: true,
        prea: Some(DOWNLINK_PREAMBLE),
        data: PhyData::new(phy_payload),
        ncrc: Some(true),
    })
}
