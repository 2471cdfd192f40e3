//! When this device may transmit next: the EU868 duty cycle and the join-request backoff.
//!
//! lorawan-device transmits whenever it is asked to and enforces neither, so the link
//! asks this budget first.
//!
//! - Duty cycle: every transmission is followed by an off time of 99 times its airtime,
//!   device-wide. Every EU868 default channel and every channel a CFList can add lies in a
//!   1 % sub-band, so this keeps each sub-band within its limit (conservatively: the budget
//!   is shared instead of per sub-band).
//! - Join backoff (LoRaWAN 1.0.4 §7, aggregated duty cycle of join requests): 1 % during the
//!   first hour after the first attempt, 0.1 % up to hour 11, 0.01 % afterwards, each off
//!   time stretched by up to half again at random so that devices that lost power together
//!   do not retry in lockstep.
//!
//! - Across a reset: the clock starts again at 0, so the device cannot tell how long ago
//!   it last transmitted. A device that may have transmitted before waits, from its start,
//!   the off time of the longest frame the region allows at the slowest data rate it may
//!   have used ([`TransmitBudget::after_reset`]).
//!
//! Airtime is computed for the frame's worst case (full FOpts) at the data rate in use,
//! rounded up to the millisecond.
use fuota_node::Instant;
use lora_modulation::{Bandwidth, BaseBandModulationParams, CodingRate, SpreadingFactor};
use lorawan_device::region::DR;

use crate::multicast_rx::eu868_modulation;

/// PHYPayload length of a join request: MHDR, JoinEUI, DevEUI, DevNonce, MIC.
pub const JOIN_REQUEST_LEN: usize = 1 + 8 + 8 + 2 + 4;
/// PHYPayload overhead of a data uplink with the longest FOpts: MHDR, FHDR (7 + 15), FPort, MIC.
pub const DATA_UPLINK_OVERHEAD: usize = 1 + 7 + 15 + 1 + 4;
/// LoRaWAN preamble length in symbols.
const PREAMBLE_SYMBOLS: u8 = 8;
const MILLIS_PER_HOUR: u64 = 3_600_000;

/// The device's transmit budget.
pub struct TransmitBudget {
    next_transmission: Instant,
    first_join_attempt: Option<Instant>,
    jitter: XorShift32,
}

impl TransmitBudget {
    /// A budget that allows a transmission from `now`. `jitter_seed` should come from a
    /// true RNG, so that devices draw different jitter.
    pub fn new(now: Instant, jitter_seed: u32) -> Self {
        Self {
            next_transmission: now,
            first_join_attempt: None,
            jitter: XorShift32(jitter_seed | 1),
        }
    }

    /// A budget at a start after which the device may have transmitted, at `data_rate`
    /// or faster, just before: the next transmission waits the off time of the longest
    /// frame at `data_rate`.
    pub fn after_reset(now: Instant, jitter_seed: u32, data_rate: DR) -> Self {
        let longest_us = airtime_us(data_rate, eu868_max_phy_payload(data_rate));
        let mut budget = Self::new(now, jitter_seed);
        budget.next_transmission = now.plus_millis(off_time_ms(longest_us, 100));
        budget
    }

    /// Earliest instant of the next transmission.
    pub fn next_transmission(&self) -> Instant {
        self.next_transmission
    }

    /// Records a join request that ended (its RX windows included) at `finished`. An accepted
    /// one only costs the 1 % off time and ends the backoff, so that the next join (after a
    /// session loss) starts a new one.
    pub fn record_join_request(&mut self, finished: Instant, data_rate: DR, accepted: bool) {
        let airtime_us = airtime_us(data_rate, JOIN_REQUEST_LEN);
        if accepted {
            self.first_join_attempt = None;
            self.next_transmission = finished.plus_millis(off_time_ms(airtime_us, 100));
            return;
        }
        let first_attempt = *self.first_join_attempt.get_or_insert(finished);
        let hours_since_first = finished.millis_since(first_attempt) / MILLIS_PER_HOUR;
        let duty_cycle_divisor: u64 = match hours_since_first {
            0 => 100,
            1..=10 => 1_000,
            _ => 10_000,
        };
        let off_time = off_time_ms(airtime_us, duty_cycle_divisor);
        let jitter_ms = u64::from(self.jitter.next()) % (off_time / 2 + 1);
        self.next_transmission = finished.plus_millis(off_time + jitter_ms);
    }

    /// Records a data uplink carrying `app_payload_len` bytes that ended at `finished`.
    pub fn record_uplink(&mut self, finished: Instant, data_rate: DR, app_payload_len: usize) {
        let airtime_us = airtime_us(data_rate, DATA_UPLINK_OVERHEAD + app_payload_len);
        let earliest = finished.plus_millis(off_time_ms(airtime_us, 100));
        self.next_transmission = self.next_transmission.max(earliest);
    }
}

/// The off time after `airtime_us` of transmission under a 1/`divisor` duty cycle, in
/// whole milliseconds rounded up.
fn off_time_ms(airtime_us: u64, divisor: u64) -> u64 {
    (airtime_us * (divisor - 1)).div_ceil(1_000)
}

/// The largest PHYPayload at an EU868 data rate (RP002-1.0.x: the MACPayload's M,
/// 59, 123 or 250 bytes, plus MHDR and MIC).
fn eu868_max_phy_payload(data_rate: DR) -> usize {
    match data_rate as u8 {
        0..=2 => 59 + 5,
        3 => 123 + 5,
        _ => 250 + 5,
    }
}

/// Time on air, µs, of a `phy_payload_len`-byte uplink at an EU868 data rate. Data rates
/// without a LoRa modulation here (FSK, LR-FHSS) count as the slowest one, DR0.
pub fn airtime_us(data_rate: DR, phy_payload_len: usize) -> u64 {
    let modulation = eu868_modulation(data_rate as u8).unwrap_or(BaseBandModulationParams::new(
        SpreadingFactor::_12,
        Bandwidth::_125KHz,
        CodingRate::_4_5,
    ));
    let len = u8::try_from(phy_payload_len).unwrap_or(u8::MAX);
    u64::from(modulation.time_on_air_us(Some(PREAMBLE_SYMBOLS), true, len))
}

/// Marsaglia's xorshift: enough to spread retries, not for anything secret.
struct XorShift32(u32);

impl XorShift32 {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}
