//! Campaign planning: from an image size, a region and a data rate, the figures a
//! campaign runs on — fragment size, fragment counts, redundancy, airtime, the time the
//! duty cycle forces, the Class C session timeout — or a refusal up front that says
//! which limit is hit and by how much.
//!
//! Pure arithmetic over the region tables and the airtime model: the campaign engine
//! uses it to set parameters, `simulate` to report them, and an operator can read every
//! figure before anything is sent.
//!
//! # Limits (TS004/TS005)
//!
//! * FragIndex is 14 bits: uncoded plus coded fragments of one block are at most 16383.
//! * FragSize is one byte (at most 255) and must fit the data rate's FRMPayload with the
//!   3-byte DataFragment header.
//! * A Class C session lasts `2^SessionTimeOut` seconds, `SessionTimeOut` ≤ 15 (~9.1 h):
//!   a longer campaign spans several sessions.
//!
//! # Redundancy
//!
//! The first pass sends every uncoded fragment plus coded ones sized for the expected
//! loss (adaptive), or a fixed share. Repair rounds are sized later from what devices
//! report missing ([`repair_round_size`]), so a good channel does not pay for a bad one
//! up front.

use thiserror::Error;

use crate::lorawan::airtime::{lorawan_downlink_airtime, AirtimeError};
use crate::lorawan::duty_cycle::bands::regulatory_bands;
use crate::lorawan::duty_cycle::DutyCycleConfig;
use crate::lorawan::region::{Modulation, Region, RegionError};

/// Largest FragIndex (14 bits): a block's uncoded and coded fragments together.
pub const MAX_FRAGMENT_INDEX: u32 = 16_383;
/// FragSize is one byte.
pub const MAX_FRAGMENT_SIZE: usize = 255;
/// Longest Class C session: `2^15` s.
pub const MAX_SESSION_TIMEOUT_EXPONENT: u8 = 15;
/// Bytes a multicast data frame adds around the fragment: MHDR (1), DevAddr (4),
/// FCtrl (1), FCnt (2), FPort (1), DataFragment CID and index (3), MIC (4).
pub const DATA_FRAGMENT_FRAME_OVERHEAD: usize = 16;
/// Extra fragments beyond `M` a device needs to decode with high probability
/// (the TS004 parity matrix behaves close to a random binary code: each extra fragment
/// about halves the failure probability).
pub const DECODE_MARGIN_FRAGMENTS: u32 = 8;
/// Guard between consecutive multicast frames on the concentrator (the scheduler's).
pub const INTER_FRAME_GUARD_US: u64 = 50_000;
/// Slack the Class C session keeps beyond the first pass for status and repair.
pub const SESSION_SLACK_PERCENT: u64 = 50;

/// How many coded fragments the first pass sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundancy {
    /// Enough for the devices to decode at this expected loss (percent, 0..=90), with
    /// [`DECODE_MARGIN_FRAGMENTS`]; repair rounds cover the rest.
    Adaptive {
        /// Expected fragment loss, percent.
        expected_loss_percent: u8,
    },
    /// A fixed share of `M`, in percent (0..=1000), as simple FUOTA servers do.
    Fixed {
        /// Coded fragments as a percentage of the uncoded ones.
        percent: u16,
    },
}

impl Default for Redundancy {
    /// Adaptive for 10 % loss.
    fn default() -> Self {
        Redundancy::Adaptive {
            expected_loss_percent: 10,
        }
    }
}

/// What the plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanInputs {
    /// Size of the image (the data block), bytes.
    pub image_size: usize,
    /// Data rate of the multicast frames.
    pub data_rate: u8,
    /// Frequency of the multicast frames; `None`: the region's Class C default (RX2).
    pub frequency_hz: Option<u32>,
    /// Fragment size; `None`: the largest the data rate allows.
    pub fragment_size: Option<usize>,
    /// First-pass redundancy.
    pub redundancy: Redundancy,
    /// The duty-cycle window and the share reserved for Class A.
    pub duty_cycle: DutyCycleConfig,
}

impl PlanInputs {
    /// An image of `image_size` bytes at `data_rate`, everything else defaulted.
    pub fn new(image_size: usize, data_rate: u8) -> Self {
        PlanInputs {
            image_size,
            data_rate,
            frequency_hz: None,
            fragment_size: None,
            redundancy: Redundancy::default(),
            duty_cycle: DutyCycleConfig::default(),
        }
    }
}

/// The figures of a campaign's first pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignPlan {
    /// Data rate of the multicast frames.
    pub data_rate: u8,
    /// Its modulation.
    pub modulation: Modulation,
    /// Frequency of the multicast frames, Hz.
    pub frequency_hz: u32,
    /// Fragment size, bytes.
    pub fragment_size: usize,
    /// Uncoded fragments (`M`).
    pub fragments: u32,
    /// Zero bytes appended to the image to fill the last fragment (TS004 Padding).
    pub padding: usize,
    /// Coded fragments sent in the first pass.
    pub coded_fragments: u32,
    /// PHYPayload length of each fragment frame.
    pub frame_len: usize,
    /// Time on air of one fragment frame, µs.
    pub frame_airtime_us: u64,
    /// Concentrator time per frame (occupancy plus guard), µs.
    pub frame_slot_us: u64,
    /// Time on air of the whole first pass, µs.
    pub first_pass_airtime_us: u64,
    /// The regulatory band the frames fall in (`None`: no band, e.g. outside the plan).
    pub band: Option<&'static str>,
    /// That band's duty cycle in ppm (`None`: not limited).
    pub duty_cycle_ppm: Option<u32>,
    /// Airtime multicast may use per duty-cycle window (after the Class A reserve), µs;
    /// `None` when not limited.
    pub multicast_budget_per_window_us: Option<u64>,
    /// Shortest time the first pass can take under the duty cycle, µs.
    pub first_pass_duration_us: u64,
    /// Class C `SessionTimeOut` exponent (session lasts `2^exponent` s).
    pub session_timeout_exponent: u8,
    /// Class C sessions the first pass needs (more than one when it exceeds `2^15` s).
    pub sessions_needed: u32,
}

impl CampaignPlan {
    /// Frames of the first pass.
    pub fn first_pass_frames(&self) -> u32 {
        self.fragments + self.coded_fragments
    }

    /// How long one Class C session lasts, seconds.
    pub fn session_timeout_s(&self) -> u64 {
        1u64 << self.session_timeout_exponent
    }
}

/// Why no campaign can be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// Nothing to send.
    #[error("the image is empty")]
    EmptyImage,
    /// The data rate or frequency does not exist in the region.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The fragment size does not fit the data rate.
    #[error(
        "fragment size {requested} does not fit data rate DR{data_rate}: at most {max} bytes \
         (choose a smaller fragment or a faster data rate)"
    )]
    FragmentTooLarge {
        /// Requested size.
        requested: usize,
        /// Largest allowed.
        max: usize,
        /// The data rate.
        data_rate: u8,
    },
    /// A zero fragment size.
    #[error("the fragment size must be at least 1 byte")]
    FragmentTooSmall,
    /// The block needs more fragments than FragIndex can number.
    #[error(
        "a {image_size}-byte image in {fragment_size}-byte fragments needs {fragments} fragments \
         plus {coded} coded ones = {total}, above the {MAX_FRAGMENT_INDEX} a fragmentation \
         session can number: use a faster data rate (larger fragments) or a smaller image"
    )]
    TooManyFragments {
        /// Image size.
        image_size: usize,
        /// Fragment size.
        fragment_size: usize,
        /// Uncoded fragments.
        fragments: u32,
        /// Coded fragments.
        coded: u32,
        /// Their sum.
        total: u32,
    },
    /// Airtime cannot be computed for the modulation.
    #[error("time on air at DR{data_rate}: {source}")]
    Airtime {
        /// The data rate.
        data_rate: u8,
        /// Why.
        #[source]
        source: AirtimeError,
    },
    /// The band's whole budget is reserved for Class A.
    #[error(
        "the duty-cycle band {band} leaves no airtime for multicast once {reserved_percent} % \
         is reserved for Class A answers"
    )]
    NoMulticastBudget {
        /// The band.
        band: &'static str,
        /// The reserve.
        reserved_percent: u8,
    },
    /// The redundancy setting is out of range.
    #[error("{0}")]
    InvalidRedundancy(String),
}

/// Plans the first pass of a campaign.
pub fn plan(region: &Region, inputs: &PlanInputs) -> Result<CampaignPlan, PlanError> {
    if inputs.image_size == 0 {
        return Err(PlanError::EmptyImage);
    }
    let data_rate = region.data_rate(inputs.data_rate)?;
    let modulation = data_rate.modulation;
    let max_fragment = region
        .max_data_fragment(inputs.data_rate)?
        .min(MAX_FRAGMENT_SIZE);
    let fragment_size = match inputs.fragment_size {
        None => max_fragment,
        Some(0) => return Err(PlanError::FragmentTooSmall),
        Some(requested) if requested > max_fragment => {
            return Err(PlanError::FragmentTooLarge {
                requested,
                max: max_fragment,
                data_rate: inputs.data_rate,
            })
        }
        Some(requested) => requested,
    };
    let fragments_usize = inputs.image_size.div_ceil(fragment_size);
    let padding = fragments_usize * fragment_size - inputs.image_size;
    let fragments = u32::try_from(fragments_usize).unwrap_or(u32::MAX);
    let coded_fragments = first_pass_coded(fragments, inputs.redundancy)?;
    let total = fragments.saturating_add(coded_fragments);
    if total > MAX_FRAGMENT_INDEX {
        return Err(PlanError::TooManyFragments {
            image_size: inputs.image_size,
            fragment_size,
            fragments,
            coded: coded_fragments,
            total,
        });
    }

    let frequency_hz = inputs
        .frequency_hz
        .unwrap_or_else(|| region.class_c_default().frequency_hz);
    let frame_len = fragment_size + DATA_FRAGMENT_FRAME_OVERHEAD;
    let airtime =
        lorawan_downlink_airtime(&modulation, frame_len).map_err(|source| PlanError::Airtime {
            data_rate: inputs.data_rate,
            source,
        })?;
    let frame_slot_us = airtime.concentrator_occupancy_us + INTER_FRAME_GUARD_US;
    let first_pass_airtime_us = airtime.time_on_air_us * u64::from(total);
    let back_to_back_us = frame_slot_us * u64::from(total);

    let bandwidth_hz = modulation.occupied_bandwidth_hz();
    let band = regulatory_bands(region.name(), &region.options())
        .into_iter()
        .find(|band| band.contains(frequency_hz, bandwidth_hz));
    let window_us = inputs.duty_cycle.window_us;
    let multicast_budget_per_window_us = match band.and_then(|band| band.budget_us(window_us)) {
        None => None,
        Some(budget) => {
            let usable =
                budget * u64::from(100 - inputs.duty_cycle.class_a_reserved_percent.min(100)) / 100;
            if usable < airtime.time_on_air_us {
                return Err(PlanError::NoMulticastBudget {
                    band: band.map(|band| band.name).unwrap_or("?"),
                    reserved_percent: inputs.duty_cycle.class_a_reserved_percent,
                });
            }
            Some(usable)
        }
    };
    let first_pass_duration_us = match multicast_budget_per_window_us {
        None => back_to_back_us,
        Some(budget) => {
            let frames_per_window = (budget / airtime.time_on_air_us).max(1);
            let full_windows = (u64::from(total) - 1) / frames_per_window;
            let last_burst_frames = u64::from(total) - full_windows * frames_per_window;
            (full_windows * window_us + last_burst_frames * frame_slot_us).max(back_to_back_us)
        }
    };

    let wanted_s = (first_pass_duration_us * (100 + SESSION_SLACK_PERCENT) / 100)
        .div_ceil(1_000_000)
        .max(1);
    let mut exponent = 0u8;
    while exponent < MAX_SESSION_TIMEOUT_EXPONENT && (1u64 << exponent) < wanted_s {
        exponent += 1;
    }
    let session_s = 1u64 << exponent;
    let sessions_needed = u32::try_from(wanted_s.div_ceil(session_s)).unwrap_or(u32::MAX);

    Ok(CampaignPlan {
        data_rate: inputs.data_rate,
        modulation,
        frequency_hz,
        fragment_size,
        fragments,
        padding,
        coded_fragments,
        frame_len,
        frame_airtime_us: airtime.time_on_air_us,
        frame_slot_us,
        first_pass_airtime_us,
        band: band.map(|band| band.name),
        duty_cycle_ppm: band.and_then(|band| band.duty_cycle_ppm),
        multicast_budget_per_window_us,
        first_pass_duration_us,
        session_timeout_exponent: exponent,
        sessions_needed,
    })
}

/// Coded fragments of the first pass.
fn first_pass_coded(fragments: u32, redundancy: Redundancy) -> Result<u32, PlanError> {
    match redundancy {
        Redundancy::Fixed { percent } => {
            if percent > 1000 {
                return Err(PlanError::InvalidRedundancy(format!(
                    "fixed redundancy {percent} % is out of range (0 to 1000 %)"
                )));
            }
            Ok(
                u32::try_from((u64::from(fragments) * u64::from(percent)).div_ceil(100))
                    .unwrap_or(u32::MAX),
            )
        }
        Redundancy::Adaptive {
            expected_loss_percent,
        } => {
            if expected_loss_percent > 90 {
                return Err(PlanError::InvalidRedundancy(format!(
                    "expected loss {expected_loss_percent} % is out of range (0 to 90 %)"
                )));
            }
            Ok(frames_for_decoding(fragments, expected_loss_percent) - fragments)
        }
    }
}

/// Frames to send so that a device losing `loss_percent` of them still receives
/// `fragments + DECODE_MARGIN_FRAGMENTS` (at least `fragments`).
fn frames_for_decoding(fragments: u32, loss_percent: u8) -> u32 {
    let needed = u64::from(fragments) + u64::from(DECODE_MARGIN_FRAGMENTS);
    let kept_percent = 100 - u64::from(loss_percent.min(90));
    let frames = (needed * 100).div_ceil(kept_percent);
    u32::try_from(frames).unwrap_or(u32::MAX).max(fragments)
}

/// Coded fragments for a repair round, from what each device still misses (the
/// `MissingFrag` counts of FragSessionStatusAns of the devices that have not decoded) and
/// the loss they see: enough for the worst device, with the decode margin.
pub fn repair_round_size(missing_counts: &[u32], loss_percent: u8) -> u32 {
    let Some(&worst) = missing_counts.iter().max() else {
        return 0;
    };
    if worst == 0 {
        return 0;
    }
    // A device that misses `worst` fragments needs `worst` more useful ones plus the margin.
    frames_for_decoding(worst, loss_percent)
}
