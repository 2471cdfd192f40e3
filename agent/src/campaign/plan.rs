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
//! The first pass sends every uncoded fragment plus coded ones: a fixed share, or
//! (adaptive, the default) enough for a device at the expected loss to receive M plus
//! [`FIRST_PASS_MARGIN_FRAGMENTS`]. That is the typical device, not the worst: repair
//! rounds are sized from what each device then reports ([`repair_round_size`]): what it
//! still lacks and the loss its received count shows ([`measured_loss`]). Undersizing
//! the first pass costs a status round; oversizing it costs airtime nobody needed.
//!
//! When the target devices took part in earlier campaigns, the adaptive first pass is
//! sized from what they received there instead ([`loss_from_history`],
//! [`first_pass_loss`]): the loss of the device at the
//! [`FIRST_PASS_QUANTILE_PERCENT`] of the targets (devices without enough history count at the
//! expected loss), and enough frames for it to receive M plus the margin with
//! [`FIRST_PASS_HISTORY_Z`] confidence ([`Redundancy::Measured`]). A device stops
//! counting once it has decoded its block, so a count taken after that says only that
//! its loss was at most what the count shows: such counts are left out, and a device
//! that always decoded in the first pass has no measured loss. History can therefore
//! raise the first pass for devices that lose more than expected, but not lower it for
//! devices that lose less.
//!
//! The margins come from `cargo run --release -p lorawan-fuota --example
//! fec_overhead_report`: a device needs on average 0.5 to 2 fragments beyond M to
//! decode, more than 4 in about 5 % of trials and more than 8 in under 1 %.

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
/// Fragments beyond `M` the adaptive first pass brings a device at the expected loss
/// (about the mean the TS004 code needs to decode; the repair round covers the rest).
pub const FIRST_PASS_MARGIN_FRAGMENTS: u32 = 2;
/// Useful fragments beyond what it lacks a repair round brings the device it is sized
/// for, TS004 v2 (the code needs more than 4 extra in about 5 % of cases). Each round
/// after the first doubles it, so that an unlucky device does not need many rounds.
pub const REPAIR_MARGIN_FRAGMENTS: u32 = 4;
/// The same for TS004 v1, whose parity rows may repeat a column and decode later (more
/// than 8 extra in up to 10 % of cases for small blocks).
pub const REPAIR_MARGIN_FRAGMENTS_V1: u32 = 8;
/// One-sided normal quantile of the repair round's confidence (90 %): the round is long
/// enough for the device to receive what it needs in 9 cases out of 10 at its loss.
pub const REPAIR_CONFIDENCE_Z: f64 = 1.2816;
/// Fewer frames than this offered to a device say too little about its loss: the
/// expected loss is used instead.
pub const MIN_FRAMES_FOR_MEASURED_LOSS: u32 = 16;
/// Earlier campaigns of a device whose reception the first pass of a new one looks at
/// (the most recent first).
pub const HISTORY_CAMPAIGNS: usize = 3;
/// The first pass sized from history covers the device at this quantile of the
/// targets' losses: the worst tenth are left to the repair rounds, so that one device
/// with an unlucky (or wrongly counted) campaign does not size the pass for everyone.
pub const FIRST_PASS_QUANTILE_PERCENT: usize = 90;
/// One-sided normal quantile of a first pass sized from measured loss (90 %): the
/// device at [`FIRST_PASS_QUANTILE_PERCENT`] receives M plus the margin in 9 cases out of 10.
/// A repair round costs a status request, a margin of its own and a session's time, so
/// a first pass that serves nearly every device costs less than one sized for the mean.
pub const FIRST_PASS_HISTORY_Z: f64 = REPAIR_CONFIDENCE_Z;
/// Highest loss any sizing assumes (a device losing more is not served by multicast).
pub const MAX_LOSS: f64 = 0.9;
/// Guard between consecutive multicast frames on the concentrator (the scheduler's).
pub const INTER_FRAME_GUARD_US: u64 = 50_000;
/// Slack the Class C session keeps beyond the first pass for status and repair.
pub const SESSION_SLACK_PERCENT: u64 = 50;

/// How many coded fragments the first pass sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundancy {
    /// Enough for a device at this expected loss (percent, 0..=90) to receive M plus
    /// [`FIRST_PASS_MARGIN_FRAGMENTS`]; repair rounds, sized from the devices' status
    /// answers, cover the rest.
    Adaptive {
        /// Expected fragment loss, percent.
        expected_loss_percent: u8,
    },
    /// Enough for a device at this loss (per mille, 0..=900), measured in the target
    /// devices' earlier campaigns ([`first_pass_loss`]), to receive M plus
    /// [`FIRST_PASS_MARGIN_FRAGMENTS`] with [`FIRST_PASS_HISTORY_Z`] confidence.
    Measured {
        /// The loss the pass is sized for, per mille.
        loss_permille: u16,
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
            Ok(adaptive_first_pass_coded(
                fragments,
                f64::from(expected_loss_percent) / 100.0,
            ))
        }
        Redundancy::Measured { loss_permille } => {
            if loss_permille > 900 {
                return Err(PlanError::InvalidRedundancy(format!(
                    "measured loss {loss_permille} per mille is out of range (0 to 900)"
                )));
            }
            let wanted = fragments.saturating_add(FIRST_PASS_MARGIN_FRAGMENTS);
            let loss = f64::from(loss_permille) / 1000.0;
            Ok(frames_to_deliver(wanted, loss, FIRST_PASS_HISTORY_Z).saturating_sub(fragments))
        }
    }
}

/// Coded fragments of an adaptive first pass for a device losing `loss` (0.0 to 1.0) of
/// the frames: it receives `fragments + FIRST_PASS_MARGIN_FRAGMENTS` on average.
fn adaptive_first_pass_coded(fragments: u32, loss: f64) -> u32 {
    let wanted = f64::from(fragments) + f64::from(FIRST_PASS_MARGIN_FRAGMENTS);
    let frames = (wanted / (1.0 - clamp_loss(loss))).ceil();
    // In range: at most (16383 + 2) * 10.
    (frames as u32).saturating_sub(fragments)
}

fn clamp_loss(loss: f64) -> f64 {
    if loss.is_nan() {
        return MAX_LOSS;
    }
    loss.clamp(0.0, MAX_LOSS)
}

/// Frames to send so that a device losing `loss` of them (independently) receives at
/// least `needed` with confidence `z` (a one-sided normal quantile; 0 for the mean):
/// the smallest `N` with `N(1-p) - z·sqrt(N·p·(1-p)) ≥ needed`.
pub fn frames_to_deliver(needed: u32, loss: f64, z: f64) -> u32 {
    if needed == 0 {
        return 0;
    }
    let p = clamp_loss(loss);
    let kept = 1.0 - p;
    let spread = z.max(0.0) * (p * kept).sqrt();
    // With s = sqrt(N): kept·s² - spread·s - needed = 0.
    let s = (spread + (spread * spread + 4.0 * kept * f64::from(needed)).sqrt()) / (2.0 * kept);
    // At most (16383 + margins) / 0.1 and its spread: far inside u32. The small
    // allowance keeps rounding error (10.000000002) from adding a frame.
    ((s * s - 1e-6).ceil() as u32).max(needed)
}

/// The loss a device's status answer shows: of `offered` fragment frames sent since its
/// session began it counted `received` (NbFragReceived). With the usual +1/+2 smoothing,
/// so that a clean run of a few frames does not read as a perfect channel. `None` when
/// the device said nothing, received nothing (it was not listening) or too few frames
/// went out; then the caller's expectation stands.
pub fn measured_loss(received: Option<u32>, offered: u32) -> Option<f64> {
    let received = received?;
    // Nothing received: the device was not listening (it missed the session), which
    // says nothing of its channel.
    if offered < MIN_FRAMES_FOR_MEASURED_LOSS || received == 0 {
        return None;
    }
    // Devices count differently (TS004 calls NbFragReceived indicative): never above
    // what was sent.
    let lost = offered - received.min(offered);
    Some(clamp_loss(
        (f64::from(lost) + 1.0) / (f64::from(offered) + 2.0),
    ))
}

/// What one device still needs, from its last status answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepairNeed {
    /// Useful fragments it still lacks to decode: MissingFrag, or less when the coded
    /// fragments it already holds make up for part of it (M minus NbFragReceived).
    pub lacking: u32,
    /// The loss it sees (measured, or the expected one), 0.0 to 1.0.
    pub loss: f64,
}

/// The first repair round's margin for a TS004 version (`None`: v2).
pub fn base_repair_margin(fragmentation_version: Option<u8>) -> u32 {
    if fragmentation_version == Some(1) {
        REPAIR_MARGIN_FRAGMENTS_V1
    } else {
        REPAIR_MARGIN_FRAGMENTS
    }
}

/// The margin of a repair round: `base` ([`REPAIR_MARGIN_FRAGMENTS`] or
/// [`REPAIR_MARGIN_FRAGMENTS_V1`]) doubled for each round already made.
pub fn repair_margin(base: u32, rounds_done: u32) -> u32 {
    base.saturating_mul(1u32.checked_shl(rounds_done.min(16)).unwrap_or(u32::MAX))
}

/// Coded fragments for a repair round: long enough for every device that has not
/// decoded its block (`needs`) to receive what it lacks plus `margin` at its own loss,
/// with [`REPAIR_CONFIDENCE_Z`] confidence. 0 when no device needs anything.
pub fn repair_round_size(needs: &[RepairNeed], margin: u32) -> u32 {
    needs
        .iter()
        .map(|need| {
            frames_to_deliver(
                need.lacking.saturating_add(margin),
                need.loss,
                REPAIR_CONFIDENCE_Z,
            )
        })
        .max()
        .unwrap_or(0)
}

/// A device's reception in one earlier campaign, as its last status answer with a
/// count said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionRecord {
    /// NbFragReceived.
    pub received: u32,
    /// DataFragment frames on the air since its first session, as of that answer.
    pub offered: u32,
    /// Its block was complete when it counted: devices stop counting once they have
    /// decoded, so the count understates what the channel delivered.
    pub complete: bool,
}

/// A device's loss from its earlier campaigns: the counts taken before its block was
/// complete, pooled, smoothed as in [`measured_loss`]. `None` when there is no such
/// count, fewer than [`MIN_FRAMES_FOR_MEASURED_LOSS`] frames were offered in all, or
/// the device received nothing (it was not listening, which says nothing of its
/// channel: a silent device is not a device losing everything).
pub fn loss_from_history(records: &[ReceptionRecord]) -> Option<f64> {
    let (received, offered) = records
        .iter()
        .filter(|record| !record.complete && record.received > 0)
        .fold((0u32, 0u32), |(received, offered), record| {
            (
                received.saturating_add(record.received.min(record.offered)),
                offered.saturating_add(record.offered),
            )
        });
    measured_loss(Some(received), offered)
}

/// The loss a new campaign's first pass is sized for, and the figures it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstPassLoss {
    /// The loss to size for, 0.0 to [`MAX_LOSS`].
    pub loss: f64,
    /// It is a device's measured loss (else the expected loss: no device had history,
    /// or the device at the quantile had none).
    pub measured: bool,
    /// Target devices with a measured loss.
    pub devices_measured: usize,
    /// Target devices without one (counted at the expected loss).
    pub devices_expected: usize,
    /// The highest measured loss.
    pub worst_measured: Option<f64>,
}

impl FirstPassLoss {
    /// How the first pass is sized: [`Redundancy::Measured`] when the loss is a
    /// measured one, else [`Redundancy::Adaptive`] at `expected_loss_percent`.
    pub fn redundancy(&self, expected_loss_percent: u8) -> Redundancy {
        if self.measured {
            Redundancy::Measured {
                // In range: clamped to 0.9.
                loss_permille: (clamp_loss(self.loss) * 1000.0).round() as u16,
            }
        } else {
            Redundancy::Adaptive {
                expected_loss_percent,
            }
        }
    }
}

/// The loss the first pass is sized for, from each target device's loss in earlier
/// campaigns ([`loss_from_history`]; `None`: no usable history, the `expected` loss
/// stands for it): the loss of the device at [`FIRST_PASS_QUANTILE_PERCENT`] of the targets.
pub fn first_pass_loss(per_device: &[Option<f64>], expected: f64) -> FirstPassLoss {
    let expected = clamp_loss(expected);
    let devices_measured = per_device.iter().filter(|loss| loss.is_some()).count();
    let worst_measured = per_device
        .iter()
        .flatten()
        .map(|&loss| clamp_loss(loss))
        .fold(None, |worst: Option<f64>, loss| {
            Some(worst.map_or(loss, |worst| worst.max(loss)))
        });
    let mut losses: Vec<(f64, bool)> = per_device
        .iter()
        .map(|loss| match loss {
            Some(loss) => (clamp_loss(*loss), true),
            None => (expected, false),
        })
        .collect();
    losses.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // Nearest rank: the loss that FIRST_PASS_QUANTILE_PERCENT of them do not exceed.
    let rank = (losses.len() * FIRST_PASS_QUANTILE_PERCENT).div_ceil(100);
    let (loss, measured) = match rank.checked_sub(1).and_then(|index| losses.get(index)) {
        Some(&chosen) if devices_measured > 0 => chosen,
        _ => (expected, false),
    };
    FirstPassLoss {
        loss,
        measured,
        devices_measured,
        devices_expected: per_device.len() - devices_measured,
        worst_measured,
    }
}
