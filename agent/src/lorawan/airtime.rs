//! Time on air of LoRa and FSK frames, in whole microseconds.
//!
//! LoRa follows the Semtech formula (SX1276 datasheet §4.1.1.7, application note
//! AN1200.13 "LoRa Modem Designer's Guide"; SX1261/2 datasheet §6.1.4 for SF5/SF6):
//!
//! ```text
//! Tsym        = 2^SF / BW
//! Tpreamble   = (Npreamble + 4.25) · Tsym            (SF7..SF12)
//!             = (Npreamble + 6.25) · Tsym            (SF5, SF6)
//! Npayload    = 8 + max(ceil((8·PL − 4·SF + 28 + 16·CRC − 20·IH) / (4·(SF − 2·DE))), 0) · (CR + 4)
//!               (SF5/SF6: the "+28" is "+20": no 8-bit extra term)
//! Tpacket     = Tpreamble + Npayload · Tsym
//! ```
//!
//! with PL the PHY payload length in bytes, IH = 1 for implicit header, CRC = 1 when the
//! payload CRC is sent, DE = 1 with low-data-rate optimisation, CR = 1..4 for 4/5..4/8.
//! The computation counts quarter symbols in integers and rounds the final duration up
//! to the next microsecond, so for 125/250/500 kHz it is exact (every duration there is a
//! whole number of microseconds).
//!
//! Low-data-rate optimisation "auto" enables DE when the symbol lasts 16 ms or more, which
//! is the SX1302 HAL's transmit rule (`SET_PPM_ON`: SF11/SF12 at 125 kHz, SF12 at
//! 250 kHz) and Semtech's datasheet recommendation. Note that the HAL's own
//! `lgw_time_on_air` sets DE for every SF ≥ 11 whatever the bandwidth; what we compute is
//! what the concentrator actually transmits.
//!
//! FSK follows the packet forwarder's model (`lgw_time_on_air`): preamble, sync word,
//! length byte, payload and CRC bytes, 8 bits each, at the bit rate.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::lorawan::region::Modulation;
use crate::lorawan::time::MICROS_PER_SECOND;

/// The largest LoRa payload a radio can send (the length field is one byte).
pub const MAX_LORA_PAYLOAD_LEN: usize = 255;

/// LoRaWAN's LoRa preamble: 8 symbols (RP002 §2.x "preamble"), for uplinks and downlinks.
pub const LORAWAN_PREAMBLE_SYMBOLS: u16 = 8;

/// LoRaWAN's FSK preamble: 5 bytes (RP002: "the preamble is 5 bytes for FSK").
pub const LORAWAN_FSK_PREAMBLE_BYTES: u16 = 5;

/// LoRaWAN's FSK sync word: 3 bytes (0xC194C1).
pub const LORAWAN_FSK_SYNC_WORD_BYTES: u16 = 3;

/// Forward error-correction coding rate of a LoRa frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodingRate {
    /// 4/5 (LoRaWAN's only coding rate for data rates).
    Cr4_5,
    /// 4/6.
    Cr4_6,
    /// 4/7.
    Cr4_7,
    /// 4/8.
    Cr4_8,
}

impl CodingRate {
    /// The `CR` term of the formula: 1 for 4/5 up to 4 for 4/8.
    pub const fn formula_value(self) -> u64 {
        match self {
            CodingRate::Cr4_5 => 1,
            CodingRate::Cr4_6 => 2,
            CodingRate::Cr4_7 => 3,
            CodingRate::Cr4_8 => 4,
        }
    }

    /// The notation of the Semtech UDP protocol (`codr`): `"4/5"` … `"4/8"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CodingRate::Cr4_5 => "4/5",
            CodingRate::Cr4_6 => "4/6",
            CodingRate::Cr4_7 => "4/7",
            CodingRate::Cr4_8 => "4/8",
        }
    }
}

impl fmt::Display for CodingRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CodingRate {
    type Err = AirtimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "4/5" => Ok(CodingRate::Cr4_5),
            "4/6" => Ok(CodingRate::Cr4_6),
            "4/7" => Ok(CodingRate::Cr4_7),
            "4/8" => Ok(CodingRate::Cr4_8),
            other => Err(AirtimeError::UnknownCodingRate(other.to_string())),
        }
    }
}

/// Whether the low-data-rate optimisation (DE) is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LowDataRateOptimization {
    /// On when the symbol lasts 16 ms or more (SF11/SF12 at 125 kHz, SF12 at 250 kHz).
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

/// Everything that determines the duration of a LoRa frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoraFrame {
    /// Spreading factor, 5..=12.
    pub spreading_factor: u8,
    /// Bandwidth in Hz (125 000, 250 000, 500 000; other values are computed too).
    pub bandwidth_hz: u32,
    /// Coding rate.
    pub coding_rate: CodingRate,
    /// Programmed preamble length in symbols (LoRaWAN: 8).
    pub preamble_symbols: u16,
    /// Explicit header (LoRaWAN: always).
    pub explicit_header: bool,
    /// Payload CRC sent (LoRaWAN: uplinks yes, downlinks no).
    pub crc: bool,
    /// Low-data-rate optimisation.
    pub low_data_rate_optimization: LowDataRateOptimization,
    /// PHY payload length in bytes, 0..=255.
    pub payload_len: usize,
}

impl LoraFrame {
    /// A LoRaWAN downlink: coding rate 4/5, 8-symbol preamble, explicit header, no
    /// payload CRC (the `ncrc` of a downlink TxPk), automatic low-data-rate optimisation.
    pub const fn lorawan_downlink(
        spreading_factor: u8,
        bandwidth_hz: u32,
        payload_len: usize,
    ) -> Self {
        LoraFrame {
            spreading_factor,
            bandwidth_hz,
            coding_rate: CodingRate::Cr4_5,
            preamble_symbols: LORAWAN_PREAMBLE_SYMBOLS,
            explicit_header: true,
            crc: false,
            low_data_rate_optimization: LowDataRateOptimization::Auto,
            payload_len,
        }
    }

    /// A LoRaWAN uplink: as a downlink, but with the payload CRC.
    pub const fn lorawan_uplink(
        spreading_factor: u8,
        bandwidth_hz: u32,
        payload_len: usize,
    ) -> Self {
        let mut frame = Self::lorawan_downlink(spreading_factor, bandwidth_hz, payload_len);
        frame.crc = true;
        frame
    }

    /// Whether the low-data-rate optimisation is in effect for this frame.
    pub fn uses_low_data_rate_optimization(&self) -> bool {
        match self.low_data_rate_optimization {
            LowDataRateOptimization::On => true,
            LowDataRateOptimization::Off => false,
            // Tsym >= 16 ms  <=>  2^SF / BW >= 0.016  <=>  2^SF * 125 >= 2 * BW
            LowDataRateOptimization::Auto => {
                self.bandwidth_hz != 0
                    && self.spreading_factor <= 12
                    && (1u64 << self.spreading_factor) * 125 >= 2 * u64::from(self.bandwidth_hz)
            }
        }
    }

    /// Duration of one symbol in microseconds, rounded up.
    pub fn symbol_duration_us(&self) -> Result<u64, AirtimeError> {
        self.validate()?;
        let numerator = (1u128 << self.spreading_factor) * u128::from(MICROS_PER_SECOND);
        Ok(div_ceil_u128(numerator, u128::from(self.bandwidth_hz)))
    }

    /// Number of symbols after the preamble (header and payload): the `Npayload` term.
    pub fn payload_symbols(&self) -> Result<u64, AirtimeError> {
        self.validate()?;
        let sf = i64::from(self.spreading_factor);
        let low_data_rate = i64::from(self.uses_low_data_rate_optimization());
        let crc_bits = if self.crc { 16 } else { 0 };
        let header_bits = if self.explicit_header { 20 } else { 0 };
        // SX126x datasheet: the extra 8 bits only exist from SF7 up.
        let extra_bits = if self.spreading_factor >= 7 { 8 } else { 0 };
        let numerator = 8 * self.payload_len as i64 + crc_bits - 4 * sf + extra_bits + header_bits;
        let denominator = 4 * (sf - 2 * low_data_rate);
        if denominator <= 0 {
            return Err(AirtimeError::InvalidSpreadingFactor(self.spreading_factor));
        }
        let blocks = if numerator <= 0 {
            0
        } else {
            // Both positive: ceiling division.
            (numerator + denominator - 1) / denominator
        };
        Ok(8 + blocks.unsigned_abs() * (self.coding_rate.formula_value() + 4))
    }

    /// Time on air in microseconds, rounded up to the next microsecond.
    pub fn time_on_air_us(&self) -> Result<u64, AirtimeError> {
        self.validate()?;
        // Quarter symbols: preamble + 4.25 (or 6.25 below SF7) + payload symbols.
        let fixed_quarters: u64 = if self.spreading_factor >= 7 { 17 } else { 25 };
        let quarters =
            4 * u64::from(self.preamble_symbols) + fixed_quarters + 4 * self.payload_symbols()?;
        let numerator =
            u128::from(quarters) * (1u128 << self.spreading_factor) * u128::from(MICROS_PER_SECOND);
        let denominator = 4 * u128::from(self.bandwidth_hz);
        Ok(div_ceil_u128(numerator, denominator))
    }

    /// How long the Semtech packet forwarder's just-in-time queue considers the
    /// concentrator busy with this frame (`jit_enqueue` post-delay from the SX1302 HAL's
    /// `lgw_time_on_air`): that HAL sets DE for every SF ≥ 11 whatever the bandwidth and
    /// rounds to the nearest millisecond, so it can exceed the real time on air (by
    /// ~80 ms for 50 bytes at SF12/500 kHz). Plan concentrator occupancy with the larger
    /// of the two, or the forwarder answers COLLISION_PACKET.
    pub fn packet_forwarder_occupancy_us(&self) -> Result<u64, AirtimeError> {
        let mut hal_frame = *self;
        hal_frame.low_data_rate_optimization = if self.spreading_factor >= 11 {
            LowDataRateOptimization::On
        } else {
            LowDataRateOptimization::Off
        };
        let hal_us = hal_frame.time_on_air_us()?;
        let rounded_ms = (hal_us + 500) / 1000;
        Ok((rounded_ms * 1000).max(self.time_on_air_us()?))
    }

    fn validate(&self) -> Result<(), AirtimeError> {
        if !(5..=12).contains(&self.spreading_factor) {
            return Err(AirtimeError::InvalidSpreadingFactor(self.spreading_factor));
        }
        if self.bandwidth_hz == 0 {
            return Err(AirtimeError::InvalidBandwidth(self.bandwidth_hz));
        }
        if self.payload_len > MAX_LORA_PAYLOAD_LEN {
            return Err(AirtimeError::PayloadTooLong {
                len: self.payload_len,
                max: MAX_LORA_PAYLOAD_LEN,
            });
        }
        Ok(())
    }
}

/// Everything that determines the duration of an FSK frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FskFrame {
    /// Bit rate in bit/s (LoRaWAN: 50 000).
    pub bitrate_bps: u32,
    /// Preamble length in bytes (LoRaWAN: 5).
    pub preamble_bytes: u16,
    /// Sync word length in bytes (LoRaWAN: 3).
    pub sync_word_bytes: u16,
    /// Two CRC bytes sent.
    pub crc: bool,
    /// Payload length in bytes, 0..=255.
    pub payload_len: usize,
}

impl FskFrame {
    /// A LoRaWAN FSK frame: 5-byte preamble, 3-byte sync word, length byte, CRC.
    pub const fn lorawan(bitrate_bps: u32, payload_len: usize) -> Self {
        FskFrame {
            bitrate_bps,
            preamble_bytes: LORAWAN_FSK_PREAMBLE_BYTES,
            sync_word_bytes: LORAWAN_FSK_SYNC_WORD_BYTES,
            crc: true,
            payload_len,
        }
    }

    /// Time on air in microseconds, rounded up.
    pub fn time_on_air_us(&self) -> Result<u64, AirtimeError> {
        if self.bitrate_bps == 0 {
            return Err(AirtimeError::InvalidBitrate(self.bitrate_bps));
        }
        if self.payload_len > MAX_LORA_PAYLOAD_LEN {
            return Err(AirtimeError::PayloadTooLong {
                len: self.payload_len,
                max: MAX_LORA_PAYLOAD_LEN,
            });
        }
        let bytes = u128::from(self.preamble_bytes)
            + u128::from(self.sync_word_bytes)
            + 1
            + self.payload_len as u128
            + if self.crc { 2 } else { 0 };
        Ok(div_ceil_u128(
            bytes * 8 * u128::from(MICROS_PER_SECOND),
            u128::from(self.bitrate_bps),
        ))
    }
}

impl FskFrame {
    /// How long the Semtech packet forwarder considers the concentrator busy with this
    /// frame: the HAL truncates to whole milliseconds and adds one.
    pub fn packet_forwarder_occupancy_us(&self) -> Result<u64, AirtimeError> {
        let us = self.time_on_air_us()?;
        Ok(((us / 1000 + 1) * 1000).max(us))
    }
}

/// Duration of a downlink on the air and on the concentrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DownlinkAirtime {
    /// Real time on air (what the duty cycle counts), µs.
    pub time_on_air_us: u64,
    /// How long the packet forwarder keeps the concentrator busy with it (at least the
    /// time on air), µs.
    pub concentrator_occupancy_us: u64,
}

/// Time on air of a LoRaWAN downlink of `payload_len` PHY bytes with the modulation of a
/// data rate (see [`LoraFrame::lorawan_downlink`] and [`FskFrame::lorawan`]).
pub fn lorawan_downlink_airtime(
    modulation: &Modulation,
    payload_len: usize,
) -> Result<DownlinkAirtime, AirtimeError> {
    match *modulation {
        Modulation::Lora {
            spreading_factor,
            bandwidth_hz,
            coding_rate,
        } => {
            let mut frame =
                LoraFrame::lorawan_downlink(spreading_factor, bandwidth_hz, payload_len);
            frame.coding_rate = coding_rate;
            Ok(DownlinkAirtime {
                time_on_air_us: frame.time_on_air_us()?,
                concentrator_occupancy_us: frame.packet_forwarder_occupancy_us()?,
            })
        }
        Modulation::Fsk { bitrate_bps } => {
            let frame = FskFrame::lorawan(bitrate_bps, payload_len);
            Ok(DownlinkAirtime {
                time_on_air_us: frame.time_on_air_us()?,
                concentrator_occupancy_us: frame.packet_forwarder_occupancy_us()?,
            })
        }
        Modulation::LrFhss { .. } => Err(AirtimeError::UnsupportedModulation),
    }
}

/// Why a time on air cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AirtimeError {
    /// The spreading factor is outside 5..=12.
    #[error("spreading factor SF{0} is outside SF5..SF12")]
    InvalidSpreadingFactor(u8),
    /// The bandwidth is zero.
    #[error("bandwidth {0} Hz is not usable")]
    InvalidBandwidth(u32),
    /// The FSK bit rate is zero.
    #[error("FSK bit rate {0} bit/s is not usable")]
    InvalidBitrate(u32),
    /// The payload does not fit a radio frame.
    #[error("payload of {len} bytes exceeds the radio maximum of {max}")]
    PayloadTooLong {
        /// Requested length.
        len: usize,
        /// Largest length.
        max: usize,
    },
    /// The coding rate notation is not one of 4/5..4/8.
    #[error("unknown coding rate {0:?}")]
    UnknownCodingRate(String),
    /// LR-FHSS is uplink-only; the agent never transmits it.
    #[error("time on air of LR-FHSS is not computed (uplink-only modulation)")]
    UnsupportedModulation,
}

fn div_ceil_u128(numerator: u128, denominator: u128) -> u64 {
    // Callers guarantee a non-zero denominator; the quotient of our inputs fits u64.
    let quotient = numerator.div_ceil(denominator);
    u64::try_from(quotient).unwrap_or(u64::MAX)
}
