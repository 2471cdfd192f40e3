//! Regulatory sub-bands: which frequency range carries which duty-cycle and dwell-time
//! limit, per region.
//!
//! # EU868 (ETSI EN 300 220-2, ERC/REC 70-03 Annex 1)
//!
//! | Range (MHz)    | Duty cycle | EN 300 220-2 V3.2.1 Table B.1 | LoRaWAN's old name |
//! |----------------|-----------:|-------------------------------|--------------------|
//! | 863.0 – 865.0  |      0.1 % | band K                        | g                  |
//! | 865.0 – 868.0  |        1 % | band L                        | g                  |
//! | 868.0 – 868.6  |        1 % | band M                        | g1                 |
//! | 868.7 – 869.2  |      0.1 % | band N                        | g2                 |
//! | 869.4 – 869.65 |       10 % | band P (500 mW e.r.p.)        | g3                 |
//! | 869.7 – 870.0  |        1 % | band Q                        | g4                 |
//!
//! These are the limits for equipment without LBT+AFA (a packet-forwarder gateway does
//! not do listen-before-talk). The same six sub-bands, with these figures, are what
//! Semtech's LoRaMac-node uses (`RegionEU868.c`, `VerifyRfFreq`, bands 0–5), after
//! LoRaMac-node PR #750 split 863–865 and 868.7–869.2 into two bands following
//! EN 300 220-2 V3.2.1. ERC/REC 70-03 defines the duty cycle as Σ(Ton)/Tobs for a single
//! transmitter, with Ton measured in the band and Tobs "a continuous one hour period"
//! unless an annex says otherwise: the accountant enforces it over every sliding hour,
//! per transmitter (gateway) and per band.
//! Note the 865–868 MHz band (1 %), which the usual "g/g1/g2/g3/g4" list leaves out;
//! 869.7–870 MHz also allows 5 mW with no duty cycle, which we do not use.
//!
//! A transmission belongs to a band only if its whole occupied bandwidth lies inside
//! it (868.1 MHz at 125 kHz occupies 868.0375–868.1625 MHz: band M).
//!
//! # US915 (FCC 47 CFR §15.247)
//!
//! No duty cycle. Downlinks are 500 kHz LoRa, i.e. digital modulation with a 6 dB
//! bandwidth of at least 500 kHz (§15.247(a)(2)), which has no dwell-time limit (power
//! and power spectral density limits apply, §15.247(b)(3), (e)). Narrower transmissions
//! are frequency hopping under §15.247(a)(1)(i): at most 0.4 s of occupancy per channel
//! in 20 s. We enforce 400 ms per transmission below 500 kHz (LoRaWAN never sends one in
//! US915; a pass-through downlink might), not the 20 s occupancy.
//!
//! # AS923 (groups 1–4)
//!
//! No duty cycle is enforced (it is national: e.g. Japan's ARIB STD-T108 relies on LBT
//! and transmission-time limits the concentrator does not implement). With the region
//! option `downlink_dwell_time_400ms`, every transmission is limited to 400 ms
//! (RP002 AS923 "DownlinkDwellTime"). Custom bands can be passed to the accountant when
//! a deployment needs national limits.

use crate::lorawan::region::{RegionName, RegionOptions};

/// A limit on the duration of one transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DwellTimeLimit {
    /// Longest transmission, in microseconds.
    pub max_us: u64,
    /// The limit only applies to transmissions narrower than this bandwidth (Hz);
    /// `None`: to every transmission.
    pub only_below_bandwidth_hz: Option<u32>,
}

impl DwellTimeLimit {
    /// Whether a transmission of `bandwidth_hz` is subject to the limit.
    pub fn applies_to(&self, bandwidth_hz: u32) -> bool {
        self.only_below_bandwidth_hz
            .is_none_or(|threshold| bandwidth_hz < threshold)
    }
}

/// One regulatory sub-band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegulatoryBand {
    /// A name for logs and status ("868.0-868.6 MHz").
    pub name: &'static str,
    /// Lower edge in Hz.
    pub low_hz: u32,
    /// Upper edge in Hz.
    pub high_hz: u32,
    /// Duty-cycle limit in parts per million of the window (1 % = 10 000);
    /// `None`: no duty-cycle limit.
    pub duty_cycle_ppm: Option<u32>,
    /// Limit on each transmission's duration, if any.
    pub dwell_time: Option<DwellTimeLimit>,
}

impl RegulatoryBand {
    /// Whether a transmission centred on `frequency_hz` occupying `bandwidth_hz` lies
    /// wholly inside the band (edges included).
    pub fn contains(&self, frequency_hz: u32, bandwidth_hz: u32) -> bool {
        // Doubled to keep half a bandwidth exact.
        let centre = 2 * u64::from(frequency_hz);
        let bandwidth = u64::from(bandwidth_hz);
        centre >= bandwidth
            && centre - bandwidth >= 2 * u64::from(self.low_hz)
            && centre + bandwidth <= 2 * u64::from(self.high_hz)
    }

    /// The airtime allowed in a window of `window_us` microseconds (rounded down);
    /// `None` when the band has no duty-cycle limit.
    pub fn budget_us(&self, window_us: u64) -> Option<u64> {
        let ppm = self.duty_cycle_ppm?;
        let budget = u128::from(window_us) * u128::from(ppm) / 1_000_000;
        Some(u64::try_from(budget).unwrap_or(u64::MAX))
    }
}

const PERCENT_0_1: u32 = 1_000;
const PERCENT_1: u32 = 10_000;
const PERCENT_10: u32 = 100_000;

/// The EU868 sub-bands (see the module documentation).
pub fn eu868_bands() -> Vec<RegulatoryBand> {
    let band = |name, low_hz, high_hz, ppm| RegulatoryBand {
        name,
        low_hz,
        high_hz,
        duty_cycle_ppm: Some(ppm),
        dwell_time: None,
    };
    vec![
        band("863.0-865.0 MHz", 863_000_000, 865_000_000, PERCENT_0_1),
        band("865.0-868.0 MHz", 865_000_000, 868_000_000, PERCENT_1),
        band("868.0-868.6 MHz", 868_000_000, 868_600_000, PERCENT_1),
        band("868.7-869.2 MHz", 868_700_000, 869_200_000, PERCENT_0_1),
        band("869.4-869.65 MHz", 869_400_000, 869_650_000, PERCENT_10),
        band("869.7-870.0 MHz", 869_700_000, 870_000_000, PERCENT_1),
    ]
}

/// The US915 band: 902–928 MHz, no duty cycle, 400 ms per transmission below 500 kHz.
pub fn us915_bands() -> Vec<RegulatoryBand> {
    vec![RegulatoryBand {
        name: "902-928 MHz",
        low_hz: 902_000_000,
        high_hz: 928_000_000,
        duty_cycle_ppm: None,
        dwell_time: Some(DwellTimeLimit {
            max_us: 400_000,
            only_below_bandwidth_hz: Some(500_000),
        }),
    }]
}

/// The AS923 band (every group's channels lie in 915–928 MHz): no duty cycle; 400 ms
/// per transmission when `dwell_time_400ms`.
pub fn as923_bands(dwell_time_400ms: bool) -> Vec<RegulatoryBand> {
    vec![RegulatoryBand {
        name: "915-928 MHz",
        low_hz: 915_000_000,
        high_hz: 928_000_000,
        duty_cycle_ppm: None,
        dwell_time: dwell_time_400ms.then_some(DwellTimeLimit {
            max_us: 400_000,
            only_below_bandwidth_hz: None,
        }),
    }]
}

/// The regulatory bands of a region.
pub fn regulatory_bands(region: RegionName, options: &RegionOptions) -> Vec<RegulatoryBand> {
    match region {
        RegionName::Eu868 => eu868_bands(),
        RegionName::Us915 => us915_bands(),
        RegionName::As923 | RegionName::As923_2 | RegionName::As923_3 | RegionName::As923_4 => {
            as923_bands(options.downlink_dwell_time_400ms)
        }
    }
}
