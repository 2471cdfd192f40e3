//! Regional parameters the agent needs, behind a small API of our own: data rates,
//! maximum payload sizes, RX1/RX2 parameters, channels, US915 sub-bands and the
//! join-accept CFList, for EU868, US915 and AS923 (groups 1–4).
//!
//! The tables come from ChirpStack's `lrwn` crate (`lrwn::region`, feature `regions`),
//! which transcribes the LoRa Alliance Regional Parameters (RP002-1.0.x and the older
//! 1.0.2rB / 1.0.3rA documents); nothing here retypes a table. What this module adds:
//!
//! * the choice of table by [`RegionalParametersRevision`] and repeater compatibility;
//! * the FRMPayload maximum derived as `N = M − 8` rather than read from lrwn's `n`
//!   (lrwn 4.13 has `n = 222` for EU868 DR4 in the RP002 non-repeater table, where the
//!   document and every other row give `N = M − 8 = 242`);
//! * the repeater-compatible cap `M ≤ 230` applied to every table (lrwn's older AS923
//!   "repeater" tables list 250);
//! * uplink/downlink use of each data rate, read from lrwn's own data-rate flags;
//! * the TS004 DataFragment size per data rate;
//! * US915 sub-band helpers and a CFList as the 16 bytes a join accept carries.
//!
//! The rest of the agent uses only the types defined here, never lrwn's.

use std::fmt;
use std::str::FromStr;

use lrwn::region as lr;
use thiserror::Error;

use crate::lorawan::airtime::CodingRate;

/// Bytes of a MACPayload that are not FRMPayload when there are no FOpts: the FHDR
/// without FOpts (DevAddr 4, FCtrl 1, FCnt 2) and FPort (1). `N = M − 8`.
pub const MAC_PAYLOAD_OVERHEAD_WITHOUT_FOPTS: usize = 8;

/// Bytes a PHYPayload adds around the MACPayload: MHDR (1) and MIC (4).
pub const PHY_PAYLOAD_OVERHEAD: usize = 5;

/// Bytes of a TS004 DataFragment command before the fragment: CID (1) and the
/// FragIndex/N field (2) (TS004 v1/v2 §3.6 / §3.7 "DataFragment").
pub const DATA_FRAGMENT_HEADER_LEN: usize = 3;

/// Largest MACPayload of a repeater-compatible table (Regional Parameters, "repeater
/// compatible" maximum payload tables).
pub const REPEATER_COMPATIBLE_MAX_MAC_PAYLOAD: usize = 230;

/// Most extra channels a CFList of type 0 carries.
pub const MAX_CF_LIST_CHANNELS: usize = 5;

/// Length of a CFList in a join accept.
pub const CF_LIST_LEN: usize = 16;

/// Number of US915 uplink sub-bands (8 × 125 kHz channels + 1 × 500 kHz channel each).
pub const US915_SUB_BANDS: u8 = 8;

/// A region the agent supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionName {
    /// Europe 863–870 MHz.
    Eu868,
    /// United States 902–928 MHz.
    Us915,
    /// AS923 group 1 (AS923-1): 923.2/923.4 MHz default channels.
    As923,
    /// AS923 group 2: channels 1.8 MHz below group 1.
    As923_2,
    /// AS923 group 3: channels 6.6 MHz below group 1.
    As923_3,
    /// AS923 group 4: channels 5.9 MHz below group 1.
    As923_4,
}

impl RegionName {
    /// Every supported region.
    pub const ALL: [RegionName; 6] = [
        RegionName::Eu868,
        RegionName::Us915,
        RegionName::As923,
        RegionName::As923_2,
        RegionName::As923_3,
        RegionName::As923_4,
    ];

    /// The usual name: `"EU868"`, `"US915"`, `"AS923"`, `"AS923-2"` …
    pub const fn as_str(self) -> &'static str {
        match self {
            RegionName::Eu868 => "EU868",
            RegionName::Us915 => "US915",
            RegionName::As923 => "AS923",
            RegionName::As923_2 => "AS923-2",
            RegionName::As923_3 => "AS923-3",
            RegionName::As923_4 => "AS923-4",
        }
    }

    /// Whether this is one of the AS923 groups.
    pub const fn is_as923(self) -> bool {
        matches!(
            self,
            RegionName::As923 | RegionName::As923_2 | RegionName::As923_3 | RegionName::As923_4
        )
    }

    /// The frequency range of the region's band plan, in Hz (inclusive).
    pub const fn frequency_range_hz(self) -> (u32, u32) {
        match self {
            RegionName::Eu868 => (863_000_000, 870_000_000),
            RegionName::Us915 => (902_000_000, 928_000_000),
            RegionName::As923 | RegionName::As923_2 | RegionName::As923_3 | RegionName::As923_4 => {
                (915_000_000, 928_000_000)
            }
        }
    }

    fn lrwn(self) -> lr::CommonName {
        match self {
            RegionName::Eu868 => lr::CommonName::EU868,
            RegionName::Us915 => lr::CommonName::US915,
            RegionName::As923 => lr::CommonName::AS923,
            RegionName::As923_2 => lr::CommonName::AS923_2,
            RegionName::As923_3 => lr::CommonName::AS923_3,
            RegionName::As923_4 => lr::CommonName::AS923_4,
        }
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RegionName {
    type Err = RegionError;

    /// Accepts the usual names, case-insensitively, with `-` or `_` before the AS923
    /// group (`"eu868"`, `"AS923_2"`, `"AS923-1"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalised = s.trim().to_ascii_uppercase().replace('_', "-");
        match normalised.as_str() {
            "EU868" => Ok(RegionName::Eu868),
            "US915" => Ok(RegionName::Us915),
            "AS923" | "AS923-1" => Ok(RegionName::As923),
            "AS923-2" => Ok(RegionName::As923_2),
            "AS923-3" => Ok(RegionName::As923_3),
            "AS923-4" => Ok(RegionName::As923_4),
            _ => Err(RegionError::UnknownRegion(s.to_string())),
        }
    }
}

/// Which edition of the Regional Parameters the devices follow; it selects the maximum
/// payload tables (they changed between editions, e.g. US915 DR8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RegionalParametersRevision {
    /// LoRaWAN 1.0.2 Regional Parameters revision B (devices on MAC 1.0.2).
    Rp1_0_2RevB,
    /// LoRaWAN 1.0.3 Regional Parameters revision A (devices on MAC 1.0.3).
    Rp1_0_3RevA,
    /// RP002-1.0.4 (devices on MAC 1.0.4 and later; the newest tables).
    #[default]
    Rp002_1_0_4,
}

impl RegionalParametersRevision {
    fn lrwn(self) -> (lr::MacVersion, lr::Revision) {
        match self {
            RegionalParametersRevision::Rp1_0_2RevB => {
                (lr::MacVersion::LORAWAN_1_0_2, lr::Revision::B)
            }
            RegionalParametersRevision::Rp1_0_3RevA => {
                (lr::MacVersion::LORAWAN_1_0_3, lr::Revision::A)
            }
            // lrwn files RP002-1.0.3/1.0.4 under its "Latest" keys; asking for 1.0.4 falls
            // back to them.
            RegionalParametersRevision::Rp002_1_0_4 => {
                (lr::MacVersion::LORAWAN_1_0_4, lr::Revision::RP002_1_0_4)
            }
        }
    }
}

/// Options that select a region's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RegionOptions {
    /// Use the repeater-compatible maximum payload tables (MACPayload ≤ 230 bytes).
    /// Off by default, as in ChirpStack: only needed when a repeater may relay frames.
    pub repeater_compatible: bool,
    /// AS923 only: the downlink dwell time is limited to 400 ms (TxParamSetupReq
    /// DownlinkDwellTime = 1; required in e.g. Japan). Selects the dwell-time payload
    /// tables and RX1 minimum DR2, and makes [`Region::downlink_dwell_time_limit_us`]
    /// return 400 ms. Ignored by other regions.
    pub downlink_dwell_time_400ms: bool,
    /// Regional Parameters edition of the devices.
    pub revision: RegionalParametersRevision,
}

/// LR-FHSS coding rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LrFhssCodingRate {
    /// 1/3 (written "2/6" in lrwn and the Semtech protocol).
    OneThird,
    /// 2/3 (written "4/6").
    TwoThirds,
}

/// The modulation of a data rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modulation {
    /// LoRa.
    Lora {
        /// Spreading factor, 5..=12.
        spreading_factor: u8,
        /// Bandwidth in Hz.
        bandwidth_hz: u32,
        /// Coding rate (4/5 for every LoRaWAN data rate).
        coding_rate: CodingRate,
    },
    /// GFSK.
    Fsk {
        /// Bit rate in bit/s.
        bitrate_bps: u32,
    },
    /// LR-FHSS (uplink only).
    LrFhss {
        /// Coding rate.
        coding_rate: LrFhssCodingRate,
        /// Occupied channel width in Hz.
        occupied_channel_width_hz: u32,
    },
}

impl Modulation {
    /// The spectrum a transmission occupies, in Hz: the LoRa bandwidth; for FSK Carson's
    /// rule with LoRaWAN's deviation of half the bit rate (2 × bit rate: 100 kHz at
    /// 50 kbit/s); for LR-FHSS the occupied channel width.
    pub const fn occupied_bandwidth_hz(&self) -> u32 {
        match *self {
            Modulation::Lora { bandwidth_hz, .. } => bandwidth_hz,
            Modulation::Fsk { bitrate_bps } => bitrate_bps.saturating_mul(2),
            Modulation::LrFhss {
                occupied_channel_width_hz,
                ..
            } => occupied_channel_width_hz,
        }
    }

    /// Whether two modulations are the same data rate on the air (LoRa: same SF and
    /// bandwidth; the coding rate is not part of a LoRaWAN data rate's identity since a
    /// gateway reports it per packet).
    pub fn same_data_rate(&self, other: &Modulation) -> bool {
        match (self, other) {
            (
                Modulation::Lora {
                    spreading_factor: sf_a,
                    bandwidth_hz: bw_a,
                    ..
                },
                Modulation::Lora {
                    spreading_factor: sf_b,
                    bandwidth_hz: bw_b,
                    ..
                },
            ) => sf_a == sf_b && bw_a == bw_b,
            _ => self == other,
        }
    }
}

/// One entry of a region's data-rate table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataRate {
    /// The DR index.
    pub index: u8,
    /// Its modulation.
    pub modulation: Modulation,
    /// Usable for uplinks.
    pub uplink: bool,
    /// Usable for downlinks.
    pub downlink: bool,
}

/// A channel of the region's default plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Channel {
    /// Centre frequency in Hz.
    pub frequency_hz: u32,
    /// Lowest data rate allowed on it.
    pub min_dr: u8,
    /// Highest data rate allowed on it.
    pub max_dr: u8,
}

/// Frequency and data rate of a receive window (RX1, RX2, Class C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RxWindow {
    /// Centre frequency in Hz.
    pub frequency_hz: u32,
    /// Data rate index.
    pub data_rate: u8,
}

/// The default Class A receive delays after the end of an uplink, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiveDelays {
    /// RECEIVE_DELAY1 (1 s).
    pub rx1_delay_us: u64,
    /// RECEIVE_DELAY2 (2 s).
    pub rx2_delay_us: u64,
    /// JOIN_ACCEPT_DELAY1 (5 s).
    pub join_accept_delay1_us: u64,
    /// JOIN_ACCEPT_DELAY2 (6 s).
    pub join_accept_delay2_us: u64,
}

/// Why a regional-parameter question has no answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegionError {
    /// The region name is not one we support.
    #[error("unknown region {0:?} (supported: EU868, US915, AS923, AS923-2, AS923-3, AS923-4)")]
    UnknownRegion(String),
    /// The data rate is not in the region's table.
    #[error("{region}: DR{dr} is not defined")]
    UnknownDataRate {
        /// Region.
        region: RegionName,
        /// Data rate index.
        dr: u8,
    },
    /// The data rate exists but not for this use.
    #[error("{region}: DR{dr} cannot be used for {what}")]
    DataRateNotAllowed {
        /// Region.
        region: RegionName,
        /// Data rate index.
        dr: u8,
        /// The use refused ("uplink", "downlink", "payload with the dwell-time limit").
        what: &'static str,
    },
    /// No data rate of the region has this modulation.
    #[error("{region}: no {direction} data rate has the modulation {modulation:?}")]
    UnknownModulation {
        /// Region.
        region: RegionName,
        /// "uplink" or "downlink".
        direction: &'static str,
        /// The modulation looked up.
        modulation: Modulation,
    },
    /// The RX1 data-rate offset is out of the region's range.
    #[error("{region}: RX1 DR offset {offset} is not valid for uplink DR{uplink_dr}")]
    InvalidRx1DrOffset {
        /// Region.
        region: RegionName,
        /// Uplink data rate.
        uplink_dr: u8,
        /// Offset requested.
        offset: u8,
    },
    /// The frequency is not a channel of the region (or outside its band).
    #[error("{region}: {frequency_hz} Hz is not a {what} of the region")]
    UnknownFrequency {
        /// Region.
        region: RegionName,
        /// Frequency.
        frequency_hz: u32,
        /// "uplink channel", "frequency in the band" …
        what: &'static str,
    },
    /// US915 sub-bands are numbered 1..=8.
    #[error("sub-band {0} does not exist (US915 sub-bands are 1..=8)")]
    InvalidSubBand(u8),
    /// The operation belongs to another kind of region.
    #[error("{region} has no {what}")]
    NotSupportedInRegion {
        /// Region.
        region: RegionName,
        /// What was asked for.
        what: &'static str,
    },
    /// A CFList carries at most five extra channels.
    #[error("a CFList carries at most {max} extra channels, {count} given")]
    TooManyCfListChannels {
        /// Channels given.
        count: usize,
        /// Maximum.
        max: usize,
    },
    /// A CFList carries at least one channel or one enabled sub-band.
    #[error("a CFList needs at least one {0}")]
    EmptyCfList(&'static str),
    /// A CFList frequency is encoded in 100 Hz steps.
    #[error("CFList frequency {0} Hz is not a multiple of 100 Hz")]
    CfListFrequencyNotEncodable(u32),
    /// lrwn refused the question; its message is kept.
    #[error("regional parameters table: {0}")]
    Table(String),
}

/// The regional parameters of one region, with the options chosen. Cheap to share
/// (`Send + Sync`); build one per configured region.
pub struct Region {
    name: RegionName,
    options: RegionOptions,
    tables: Box<dyn lr::Region + Send + Sync>,
    uplink_data_rates: u16,
    downlink_data_rates: u16,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// The regional parameters of `name` with `options`.
    pub fn new(name: RegionName, options: RegionOptions) -> Self {
        let tables = Self::lrwn_tables(name, &options);
        let mut uplink_data_rates = 0u16;
        let mut downlink_data_rates = 0u16;
        for dr in 0..16u8 {
            let Ok(modulation) = tables.get_data_rate(dr) else {
                continue;
            };
            // lrwn keeps per-DR uplink/downlink flags private; its reverse lookup skips
            // DRs not usable in the asked direction, which reveals them.
            if tables.get_data_rate_index(true, &modulation).ok() == Some(dr) {
                uplink_data_rates |= 1 << dr;
            }
            if tables.get_data_rate_index(false, &modulation).ok() == Some(dr) {
                downlink_data_rates |= 1 << dr;
            }
        }
        Region {
            name,
            options,
            tables,
            uplink_data_rates,
            downlink_data_rates,
        }
    }

    fn lrwn_tables(name: RegionName, options: &RegionOptions) -> Box<dyn lr::Region + Send + Sync> {
        lr::get(
            name.lrwn(),
            options.repeater_compatible,
            name.is_as923() && options.downlink_dwell_time_400ms,
        )
    }

    /// The region.
    pub fn name(&self) -> RegionName {
        self.name
    }

    /// The options the tables were chosen with.
    pub fn options(&self) -> RegionOptions {
        self.options
    }

    /// The data rate `dr`.
    pub fn data_rate(&self, dr: u8) -> Result<DataRate, RegionError> {
        let modulation =
            self.tables
                .get_data_rate(dr)
                .map_err(|_| RegionError::UnknownDataRate {
                    region: self.name,
                    dr,
                })?;
        Ok(DataRate {
            index: dr,
            modulation: convert_modulation(&modulation)?,
            uplink: self.uplink_data_rates & (1 << dr) != 0,
            downlink: self.downlink_data_rates & (1 << dr) != 0,
        })
    }

    /// Every data rate of the region, in index order.
    pub fn data_rates(&self) -> Vec<DataRate> {
        (0..16u8).filter_map(|dr| self.data_rate(dr).ok()).collect()
    }

    /// The uplink data rate of a received frame's modulation (LoRa: SF and bandwidth).
    pub fn uplink_data_rate_index(&self, modulation: &Modulation) -> Result<u8, RegionError> {
        self.data_rates()
            .into_iter()
            .find(|dr| dr.uplink && dr.modulation.same_data_rate(modulation))
            .map(|dr| dr.index)
            .ok_or(RegionError::UnknownModulation {
                region: self.name,
                direction: "uplink",
                modulation: *modulation,
            })
    }

    /// The downlink data rate of a modulation (LoRa: SF and bandwidth).
    pub fn downlink_data_rate_index(&self, modulation: &Modulation) -> Result<u8, RegionError> {
        self.data_rates()
            .into_iter()
            .find(|dr| dr.downlink && dr.modulation.same_data_rate(modulation))
            .map(|dr| dr.index)
            .ok_or(RegionError::UnknownModulation {
                region: self.name,
                direction: "downlink",
                modulation: *modulation,
            })
    }

    /// Largest MACPayload (`M`) at data rate `dr`, from the table selected by the options
    /// (repeater-compatible tables capped at 230).
    pub fn max_mac_payload(&self, dr: u8) -> Result<usize, RegionError> {
        self.data_rate(dr)?;
        let (mac_version, revision) = self.options.revision.lrwn();
        let size = self
            .tables
            .get_max_payload_size(mac_version, revision, dr)
            .map_err(|error| RegionError::Table(error.to_string()))?;
        if size.m == 0 {
            return Err(RegionError::DataRateNotAllowed {
                region: self.name,
                dr,
                what: "payload with the dwell-time limit",
            });
        }
        Ok(if self.options.repeater_compatible {
            size.m.min(REPEATER_COMPATIBLE_MAX_MAC_PAYLOAD)
        } else {
            size.m
        })
    }

    /// Largest FRMPayload (`N`) at `dr` when the frame carries no FOpts: `M − 8`.
    pub fn max_frm_payload(&self, dr: u8) -> Result<usize, RegionError> {
        Ok(self
            .max_mac_payload(dr)?
            .saturating_sub(MAC_PAYLOAD_OVERHEAD_WITHOUT_FOPTS))
    }

    /// Largest PHYPayload at `dr`: `M + 5` (MHDR and MIC). Use it for worst-case airtime.
    pub fn max_phy_payload(&self, dr: u8) -> Result<usize, RegionError> {
        Ok(self.max_mac_payload(dr)? + PHY_PAYLOAD_OVERHEAD)
    }

    /// Largest fragment of a TS004 DataFragment at `dr` on a frame without FOpts:
    /// `N − 3` (CID and the 2-byte FragIndex/N field take the rest), as TS004 requires
    /// the fragment size to fit the FRMPayload of the data rate used.
    pub fn max_data_fragment(&self, dr: u8) -> Result<usize, RegionError> {
        Ok(self
            .max_frm_payload(dr)?
            .saturating_sub(DATA_FRAGMENT_HEADER_LEN))
    }

    /// The RX1 window answering an uplink on `uplink_frequency_hz` at `uplink_dr` with the
    /// device's RX1DROffset: frequency by the region's rule (EU868/AS923: the uplink
    /// frequency; US915: downlink channel `uplink channel mod 8`), data rate from the
    /// region's RX1 table.
    pub fn rx1(
        &self,
        uplink_frequency_hz: u32,
        uplink_dr: u8,
        rx1_dr_offset: u8,
    ) -> Result<RxWindow, RegionError> {
        let data_rate = self.data_rate(uplink_dr)?;
        if !data_rate.uplink {
            return Err(RegionError::DataRateNotAllowed {
                region: self.name,
                dr: uplink_dr,
                what: "uplink",
            });
        }
        self.check_in_band(uplink_frequency_hz)?;
        let frequency_hz = self
            .tables
            .get_rx1_frequency_for_uplink_frequency(uplink_frequency_hz)
            .map_err(|_| RegionError::UnknownFrequency {
                region: self.name,
                frequency_hz: uplink_frequency_hz,
                what: "uplink channel",
            })?;
        let rx1_dr = self
            .tables
            .get_rx1_data_rate_index(uplink_dr, usize::from(rx1_dr_offset))
            .map_err(|_| RegionError::InvalidRx1DrOffset {
                region: self.name,
                uplink_dr,
                offset: rx1_dr_offset,
            })?;
        Ok(RxWindow {
            frequency_hz,
            data_rate: rx1_dr,
        })
    }

    /// The default RX2 window (EU868: 869.525 MHz DR0; US915: 923.3 MHz DR8; AS923:
    /// 923.2 MHz − group offset, DR2).
    pub fn rx2(&self) -> RxWindow {
        let defaults = self.tables.get_defaults();
        RxWindow {
            frequency_hz: defaults.rx2_frequency,
            data_rate: defaults.rx2_dr,
        }
    }

    /// The default Class C (continuous RX2) parameters; a multicast session may set its
    /// own frequency and data rate (TS005 McClassCSessionReq).
    pub fn class_c_default(&self) -> RxWindow {
        self.rx2()
    }

    /// The default receive delays.
    pub fn receive_delays(&self) -> ReceiveDelays {
        let defaults = self.tables.get_defaults();
        ReceiveDelays {
            rx1_delay_us: duration_us(defaults.rx1_delay),
            rx2_delay_us: duration_us(defaults.rx2_delay),
            join_accept_delay1_us: duration_us(defaults.join_accept_delay1),
            join_accept_delay2_us: duration_us(defaults.join_accept_delay2),
        }
    }

    /// The region's default uplink channels (EU868: 3; US915: 64 × 125 kHz then
    /// 8 × 500 kHz; AS923: 2).
    pub fn default_uplink_channels(&self) -> Vec<Channel> {
        self.tables
            .get_default_uplink_channel_indices()
            .into_iter()
            .filter_map(|index| self.tables.get_uplink_channel(index).ok())
            .map(|channel| Channel {
                frequency_hz: channel.frequency,
                min_dr: channel.min_dr,
                max_dr: channel.max_dr,
            })
            .collect()
    }

    /// The region's default downlink channels (US915: the 8 × 500 kHz channels from
    /// 923.3 MHz; elsewhere the default uplink channels).
    pub fn downlink_channels(&self) -> Vec<Channel> {
        (0..)
            .map_while(|index| self.tables.get_downlink_channel(index).ok())
            .map(|channel| Channel {
                frequency_hz: channel.frequency,
                min_dr: channel.min_dr,
                max_dr: channel.max_dr,
            })
            .collect()
    }

    /// The US915 sub-band (1..=8) an uplink frequency belongs to: channels 0–7 and 64 are
    /// sub-band 1, channels 8–15 and 65 sub-band 2, … `None` in other regions and for
    /// frequencies that are no US915 uplink channel.
    pub fn sub_band(&self, uplink_frequency_hz: u32) -> Option<u8> {
        if self.name != RegionName::Us915 {
            return None;
        }
        let index = self
            .tables
            .get_uplink_channel_index(uplink_frequency_hz, false)
            .ok()?;
        let sub_band = if index < 64 { index / 8 } else { index - 64 };
        u8::try_from(sub_band + 1).ok()
    }

    /// The nine uplink channels of a US915 sub-band (1..=8): eight 125 kHz channels, then
    /// the 500 kHz channel.
    pub fn sub_band_channels(&self, sub_band: u8) -> Result<Vec<Channel>, RegionError> {
        let indices = self.sub_band_channel_indices(sub_band)?;
        indices
            .into_iter()
            .map(|index| {
                self.tables
                    .get_uplink_channel(index)
                    .map(|channel| Channel {
                        frequency_hz: channel.frequency,
                        min_dr: channel.min_dr,
                        max_dr: channel.max_dr,
                    })
                    .map_err(|error| RegionError::Table(error.to_string()))
            })
            .collect()
    }

    fn sub_band_channel_indices(&self, sub_band: u8) -> Result<Vec<usize>, RegionError> {
        if self.name != RegionName::Us915 {
            return Err(RegionError::NotSupportedInRegion {
                region: self.name,
                what: "uplink sub-bands",
            });
        }
        if !(1..=US915_SUB_BANDS).contains(&sub_band) {
            return Err(RegionError::InvalidSubBand(sub_band));
        }
        let first = usize::from(sub_band - 1) * 8;
        let mut indices: Vec<usize> = (first..first + 8).collect();
        indices.push(64 + usize::from(sub_band - 1));
        Ok(indices)
    }

    /// The CFList of type 0 (extra channels, DR0–DR5 each) for EU868 and AS923 join
    /// accepts: up to five frequencies, each in the region's band and a multiple of
    /// 100 Hz. Encoded by lrwn (3 bytes little-endian per channel in 100 Hz units, unused
    /// slots zero, CFListType 0 last).
    pub fn cf_list_extra_channels(
        &self,
        frequencies_hz: &[u32],
    ) -> Result<[u8; CF_LIST_LEN], RegionError> {
        if self.name == RegionName::Us915 {
            return Err(RegionError::NotSupportedInRegion {
                region: self.name,
                what: "CFList of extra channels (US915 uses a channel mask)",
            });
        }
        if frequencies_hz.is_empty() {
            return Err(RegionError::EmptyCfList("extra channel"));
        }
        if frequencies_hz.len() > MAX_CF_LIST_CHANNELS {
            return Err(RegionError::TooManyCfListChannels {
                count: frequencies_hz.len(),
                max: MAX_CF_LIST_CHANNELS,
            });
        }
        for &frequency_hz in frequencies_hz {
            self.check_in_band(frequency_hz)?;
            if frequency_hz % 100 != 0 {
                return Err(RegionError::CfListFrequencyNotEncodable(frequency_hz));
            }
        }
        let cf_list = lrwn::CFList::Channels(
            lrwn::CFListChannels::from_slice(frequencies_hz)
                .map_err(|error| RegionError::Table(error.to_string()))?,
        );
        cf_list
            .to_bytes()
            .map_err(|error| RegionError::Table(error.to_string()))
    }

    /// The CFList of type 1 (channel mask) for US915 join accepts enabling the given
    /// sub-bands (1..=8: their eight 125 kHz channels and their 500 kHz channel). Built by
    /// lrwn from its 72-channel plan: ChMask0..ChMask4 (channels 0–71), RFU, CFListType 1.
    /// Devices understand it from LoRaWAN 1.0.3 on; earlier ones need LinkADRReq.
    pub fn cf_list_channel_mask(
        &self,
        enabled_sub_bands: &[u8],
    ) -> Result<[u8; CF_LIST_LEN], RegionError> {
        if self.name != RegionName::Us915 {
            return Err(RegionError::NotSupportedInRegion {
                region: self.name,
                what: "CFList channel mask (it uses extra channels)",
            });
        }
        if enabled_sub_bands.is_empty() {
            return Err(RegionError::EmptyCfList("enabled sub-band"));
        }
        let mut enabled = Vec::new();
        for &sub_band in enabled_sub_bands {
            enabled.extend(self.sub_band_channel_indices(sub_band)?);
        }
        let mut plan = Self::lrwn_tables(self.name, &self.options);
        for index in plan.get_uplink_channel_indices() {
            if !enabled.contains(&index) {
                plan.disable_uplink_channel_index(index)
                    .map_err(|error| RegionError::Table(error.to_string()))?;
            }
        }
        let cf_list = plan
            .get_cf_list(lr::MacVersion::LORAWAN_1_0_3)
            .ok_or_else(|| RegionError::Table("lrwn built no CFList".to_string()))?;
        cf_list
            .to_bytes()
            .map_err(|error| RegionError::Table(error.to_string()))
    }

    /// Highest downlink EIRP in dBm lrwn allows at `frequency_hz` (EU868: 16 dBm, 29 dBm
    /// in 869.4–869.65 MHz; US915: 21 dBm … see lrwn).
    pub fn max_downlink_eirp_dbm(&self, frequency_hz: u32) -> i32 {
        let eirp = self.tables.get_downlink_tx_power_eirp(frequency_hz);
        i32::try_from(eirp).unwrap_or(0)
    }

    /// The longest single downlink transmission the region allows, if limited: 400 ms
    /// for AS923 with the dwell-time option. (US915 downlinks are 500 kHz digital
    /// modulation under FCC §15.247(a)(2), which has no dwell-time limit.)
    pub fn downlink_dwell_time_limit_us(&self) -> Option<u64> {
        if self.name.is_as923() && self.options.downlink_dwell_time_400ms {
            Some(400_000)
        } else {
            None
        }
    }

    fn check_in_band(&self, frequency_hz: u32) -> Result<(), RegionError> {
        let (low, high) = self.name.frequency_range_hz();
        if (low..=high).contains(&frequency_hz) {
            Ok(())
        } else {
            Err(RegionError::UnknownFrequency {
                region: self.name,
                frequency_hz,
                what: "frequency in the band",
            })
        }
    }
}

fn duration_us(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn convert_modulation(modulation: &lr::DataRateModulation) -> Result<Modulation, RegionError> {
    Ok(match modulation {
        lr::DataRateModulation::Lora(lora) => Modulation::Lora {
            spreading_factor: lora.spreading_factor,
            bandwidth_hz: lora.bandwidth,
            coding_rate: lora.coding_rate.parse().map_err(
                |error: crate::lorawan::airtime::AirtimeError| {
                    RegionError::Table(error.to_string())
                },
            )?,
        },
        lr::DataRateModulation::Fsk(fsk) => Modulation::Fsk {
            bitrate_bps: fsk.bitrate,
        },
        lr::DataRateModulation::LrFhss(lr_fhss) => Modulation::LrFhss {
            coding_rate: match lr_fhss.coding_rate.as_str() {
                "1/3" | "2/6" => LrFhssCodingRate::OneThird,
                "2/3" | "4/6" => LrFhssCodingRate::TwoThirds,
                other => {
                    return Err(RegionError::Table(format!(
                        "unknown LR-FHSS coding rate {other:?}"
                    )))
                }
            },
            occupied_channel_width_hz: lr_fhss.occupied_channel_width,
        },
    })
}
