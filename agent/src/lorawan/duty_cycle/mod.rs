//! The duty-cycle accountant of one gateway transmitter: an airtime timeline per
//! regulatory sub-band ([`bands`]) that refuses any transmission that would break the
//! band's limit, and keeps a share of each band for Class A answers and join accepts.
//!
//! # The rule enforced
//!
//! For every band with a duty cycle `D` and window `T` (one hour), budget `B = D·T`
//! (36 s/h at 1 %), reserve `R = B · reserved% / 100`:
//!
//! 1. for **every** window `[w, w + T)` (every real `w`, not only aligned hours), the
//!    airtime of all recorded transmissions inside the window is at most `B`;
//! 2. for every window, the airtime of [`TrafficClass::Other`] transmissions (multicast,
//!    pass-through downlinks, anything not a Class A answer) is at most `B − R`.
//!
//! Airtime that straddles a window edge counts for the part inside. A transmission
//! is accepted at its exact start only if both rules still hold with it added, and
//! [`DutyCycleError::WaitUntil`] gives the earliest later start at which it would be.
//! Consequently a Class A answer whose own class's usage stays within `R` in every
//! window is always accepted: the other traffic can never hold more than `B − R`.
//!
//! Transmissions on one band of one transmitter never overlap in time (a second one is
//! told to wait for the end of the first). With that, checking only the windows that
//! contain the whole new transmission `N = [s, s + d)` is exact: a window holding only
//! the head of `N` ends inside `N`, where no other transmission lies; sliding it later
//! gains `N`'s airtime at rate 1 and loses older airtime at rate at most 1 (older
//! transmissions are disjoint), so it never shrinks until it holds all of `N`; the same
//! holds mirrored for windows holding only the tail. The test is therefore
//! `U(w) ≤ limit − d` for every window start `w` in `[s + d − T, s]`, where `U(w)` is
//! the recorded airtime in `[w, w + T)`; `U` is piecewise linear, so it is evaluated at
//! its breakpoints (see `timeline`), in `O(k log n)` for `k` transmissions within an
//! hour of `N`. The earliest acceptable start is found by jumping past the last
//! offending window each time, which never skips a feasible start.
//!
//! Bands without a duty cycle (US915, AS923) are only checked for overlap and dwell
//! time; dwell-time limits refuse a transmission longer than the band allows.
//!
//! The accountant forgets transmissions that ended more than two windows before the
//! latest recorded start, and refuses requests old enough to need them
//! ([`Refusal::TooFarInPast`]).
//!
//! Times are [`MonotonicTime`] values passed in by the caller; the accountant never reads
//! a clock.

pub mod bands;
mod timeline;

use thiserror::Error;

use crate::lorawan::region::Region;
use crate::lorawan::time::MonotonicTime;

pub use bands::{regulatory_bands, DwellTimeLimit, RegulatoryBand};
use timeline::{AirtimeTimeline, TimelineEntry};

/// One hour in microseconds: the observation period of ETSI/CEPT duty cycles.
pub const ONE_HOUR_US: u64 = 3_600 * 1_000_000;

/// How a transmission counts against the reserved share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficClass {
    /// Class A answers (RX1/RX2) and join accepts: may use the whole budget, including
    /// the reserved share.
    ClassA,
    /// Everything else (Class C multicast, pass-through downlinks): limited to the
    /// budget minus the reserved share.
    Other,
}

/// Settings of the accountant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DutyCycleConfig {
    /// The sliding window, in µs (one hour for ETSI/CEPT).
    pub window_us: u64,
    /// Percentage (0..=100) of each band's budget only Class A answers and join accepts
    /// may use.
    pub class_a_reserved_percent: u8,
}

impl Default for DutyCycleConfig {
    /// One hour; 20 % of each band kept for Class A answers and join accepts.
    fn default() -> Self {
        DutyCycleConfig {
            window_us: ONE_HOUR_US,
            class_a_reserved_percent: 20,
        }
    }
}

/// A transmission to check or record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransmitRequest {
    /// Centre frequency in Hz.
    pub frequency_hz: u32,
    /// Occupied bandwidth in Hz (LoRa bandwidth; see `Modulation::occupied_bandwidth_hz`).
    pub bandwidth_hz: u32,
    /// Start of the transmission.
    pub start: MonotonicTime,
    /// Time on air in µs.
    pub airtime_us: u64,
    /// Traffic class.
    pub class: TrafficClass,
}

/// Handle of a recorded transmission, to cancel it when it did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(u64);

/// Why a transmission can never be accepted as asked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// No band of the region contains the whole transmission.
    #[error("{frequency_hz} Hz at {bandwidth_hz} Hz bandwidth lies in no permitted sub-band")]
    OutsideBands {
        /// Frequency.
        frequency_hz: u32,
        /// Bandwidth.
        bandwidth_hz: u32,
    },
    /// The transmission alone is longer than the budget its class may use.
    #[error(
        "{airtime_us} µs of airtime exceeds the {limit_us} µs this class may use in band {band}"
    )]
    ExceedsBudget {
        /// Band.
        band: &'static str,
        /// Airtime requested.
        airtime_us: u64,
        /// The class's limit per window.
        limit_us: u64,
    },
    /// The transmission is longer than the band's dwell time.
    #[error("{airtime_us} µs of airtime exceeds the {max_us} µs dwell time of band {band}")]
    DwellTimeExceeded {
        /// Band.
        band: &'static str,
        /// Airtime requested.
        airtime_us: u64,
        /// Dwell-time limit.
        max_us: u64,
    },
    /// The request is so far before the latest recorded transmission that the history
    /// needed to check it has been forgotten.
    #[error("start {start} is before {earliest_allowed}, the oldest start still checkable in band {band}")]
    TooFarInPast {
        /// Band.
        band: &'static str,
        /// Start requested.
        start: MonotonicTime,
        /// Oldest acceptable start for this airtime.
        earliest_allowed: MonotonicTime,
    },
    /// A transmission of zero airtime.
    #[error("a transmission needs a non-zero airtime")]
    EmptyTransmission,
}

/// The accountant's answer when a transmission cannot start as asked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DutyCycleError {
    /// Not at the requested start; it would be accepted from `earliest_start` on (given
    /// what is recorded now).
    #[error("duty cycle of band {band}: wait until {earliest_start}")]
    WaitUntil {
        /// Band.
        band: &'static str,
        /// Earliest acceptable start.
        earliest_start: MonotonicTime,
    },
    /// Never, as asked.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

/// Usage of one band, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BandUsage {
    /// The band.
    pub band: RegulatoryBand,
    /// Airtime of all traffic in the window ending at the time asked, µs.
    pub used_us: u64,
    /// Airtime of [`TrafficClass::Other`] traffic in that window, µs.
    pub used_by_other_us: u64,
    /// Budget per window (`None`: no duty cycle).
    pub budget_us: Option<u64>,
    /// Limit of [`TrafficClass::Other`] per window (`None`: no duty cycle).
    pub other_limit_us: Option<u64>,
}

#[derive(Debug, Clone)]
struct BandLedger {
    band: RegulatoryBand,
    budget_us: Option<u64>,
    other_limit_us: Option<u64>,
    all: AirtimeTimeline,
    other: AirtimeTimeline,
    /// Every transmission that ended at or before this time may have been forgotten
    /// (`None`: nothing forgotten yet).
    forgotten_before: Option<u64>,
    latest_start: u64,
}

/// Upper bound on search steps before falling back to a start that is always feasible.
const MAX_SEARCH_STEPS: usize = 10_000;

impl BandLedger {
    fn new(band: RegulatoryBand, config: &DutyCycleConfig) -> Self {
        let budget_us = band.budget_us(config.window_us);
        let other_limit_us = budget_us.map(|budget| {
            let reserve =
                u128::from(budget) * u128::from(config.class_a_reserved_percent.min(100)) / 100;
            budget - u64::try_from(reserve).unwrap_or(budget)
        });
        BandLedger {
            band,
            budget_us,
            other_limit_us,
            all: AirtimeTimeline::new(),
            other: AirtimeTimeline::new(),
            forgotten_before: None,
            latest_start: 0,
        }
    }

    /// The earliest start at or after `start` at which the transmission is accepted.
    fn earliest_start(
        &self,
        start: u64,
        airtime: u64,
        class: TrafficClass,
        window: u64,
    ) -> Result<u64, Refusal> {
        let band = self.band.name;
        let limits = self.limits_for(class);
        for &(_, limit) in &limits {
            if airtime > limit {
                return Err(Refusal::ExceedsBudget {
                    band,
                    airtime_us: airtime,
                    limit_us: limit,
                });
            }
        }
        if let Some(forgotten_before) = self.forgotten_before {
            // Its windows reach back to `start + airtime − T`; all of them must be intact.
            let earliest_allowed = forgotten_before
                .saturating_add(window)
                .saturating_sub(airtime)
                .max(forgotten_before);
            if start < earliest_allowed {
                return Err(Refusal::TooFarInPast {
                    band,
                    start: MonotonicTime::from_micros(start),
                    earliest_allowed: MonotonicTime::from_micros(earliest_allowed),
                });
            }
        }

        let mut candidate = start;
        for _ in 0..MAX_SEARCH_STEPS {
            let end = candidate.saturating_add(airtime);
            if let Some(busy) = self.all.last_overlapping(candidate, end) {
                candidate = busy.end;
                continue;
            }
            // Windows holding the whole transmission start in [end − T, candidate].
            let lowest_window = end.saturating_sub(window);
            let mut next: Option<u64> = None;
            for &(timeline, limit) in &limits {
                let threshold = limit - airtime;
                if let Some(bad) =
                    timeline.last_window_start_over(lowest_window, candidate, window, threshold)
                {
                    // Any start whose windows still include `bad` fails too.
                    let after = bad
                        .saturating_add(window)
                        .saturating_sub(airtime)
                        .saturating_add(1);
                    next = Some(next.map_or(after, |n: u64| n.max(after)));
                }
            }
            match next {
                None => return Ok(candidate),
                Some(after) => candidate = after.max(candidate.saturating_add(1)),
            }
        }
        // Unreachable in practice; a start one window after everything recorded is always
        // feasible (no window can hold both), so fall back to it.
        Ok(self
            .all
            .last_end()
            .unwrap_or(start)
            .saturating_add(window)
            .max(start))
    }

    /// The timelines and limits a class is checked against.
    fn limits_for(&self, class: TrafficClass) -> Vec<(&AirtimeTimeline, u64)> {
        let mut limits = Vec::with_capacity(2);
        if let Some(budget) = self.budget_us {
            limits.push((&self.all, budget));
            if class == TrafficClass::Other {
                if let Some(other_limit) = self.other_limit_us {
                    limits.push((&self.other, other_limit));
                }
            }
        }
        limits
    }

    fn insert(&mut self, entry: TimelineEntry, class: TrafficClass, window: u64) {
        self.all.insert(entry);
        if class == TrafficClass::Other {
            self.other.insert(entry);
        }
        self.latest_start = self.latest_start.max(entry.start);
        let cutoff = self.latest_start.saturating_sub(window.saturating_mul(2));
        if cutoff > self.forgotten_before.unwrap_or(0) {
            self.all.forget_ending_by(cutoff);
            self.other.forget_ending_by(cutoff);
            self.forgotten_before = Some(cutoff);
        }
    }
}

/// The duty-cycle accountant of one transmitter (one gateway's concentrator): keep one
/// per gateway.
#[derive(Debug, Clone)]
pub struct DutyCycleAccountant {
    config: DutyCycleConfig,
    ledgers: Vec<BandLedger>,
    next_id: u64,
}

impl DutyCycleAccountant {
    /// An accountant over `bands` (which must not overlap; the first containing a
    /// transmission is used). A zero window is taken as 1 µs; a reserve above 100 % as
    /// 100 %.
    pub fn new(bands: Vec<RegulatoryBand>, config: DutyCycleConfig) -> Self {
        let config = DutyCycleConfig {
            window_us: config.window_us.max(1),
            class_a_reserved_percent: config.class_a_reserved_percent.min(100),
        };
        let ledgers = bands
            .into_iter()
            .map(|band| BandLedger::new(band, &config))
            .collect();
        DutyCycleAccountant {
            config,
            ledgers,
            next_id: 0,
        }
    }

    /// An accountant over the regulatory bands of `region`.
    pub fn for_region(region: &Region, config: DutyCycleConfig) -> Self {
        Self::new(regulatory_bands(region.name(), &region.options()), config)
    }

    /// The settings in force.
    pub fn config(&self) -> DutyCycleConfig {
        self.config
    }

    /// The bands accounted.
    pub fn bands(&self) -> impl Iterator<Item = &RegulatoryBand> {
        self.ledgers.iter().map(|ledger| &ledger.band)
    }

    /// The band that holds a transmission, if any.
    pub fn band_for(&self, frequency_hz: u32, bandwidth_hz: u32) -> Option<&RegulatoryBand> {
        self.ledger_index(frequency_hz, bandwidth_hz)
            .map(|index| &self.ledgers[index].band)
    }

    /// Whether the transmission may start exactly at `request.start`.
    pub fn can_transmit(&self, request: &TransmitRequest) -> Result<(), DutyCycleError> {
        let (index, earliest) = self.evaluate(request)?;
        if earliest == request.start {
            Ok(())
        } else {
            Err(DutyCycleError::WaitUntil {
                band: self.ledgers[index].band.name,
                earliest_start: earliest,
            })
        }
    }

    /// The earliest start at or after `request.start` at which the transmission would be
    /// accepted, given what is recorded now.
    pub fn earliest_start(&self, request: &TransmitRequest) -> Result<MonotonicTime, Refusal> {
        self.evaluate(request).map(|(_, earliest)| earliest)
    }

    /// Checks the transmission like [`Self::can_transmit`] and, if it is accepted,
    /// records it. Record a downlink when it is handed to the packet forwarder;
    /// [`Self::cancel`] it if the forwarder rejects it.
    pub fn record(&mut self, request: &TransmitRequest) -> Result<RecordId, DutyCycleError> {
        let (index, earliest) = self.evaluate(request)?;
        if earliest != request.start {
            return Err(DutyCycleError::WaitUntil {
                band: self.ledgers[index].band.name,
                earliest_start: earliest,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let start = request.start.as_micros();
        let entry = TimelineEntry {
            start,
            end: start.saturating_add(request.airtime_us),
            id,
        };
        let window = self.config.window_us;
        self.ledgers[index].insert(entry, request.class, window);
        Ok(RecordId(id))
    }

    /// Records a transmission that already happened (restored from storage after a
    /// restart), without checking it against the budget: it did go out. Returns `false`
    /// if it lies in no band of this accountant.
    pub fn restore(&mut self, request: &TransmitRequest) -> bool {
        let Some(index) = self.ledger_index(request.frequency_hz, request.bandwidth_hz) else {
            return false;
        };
        let id = self.next_id;
        self.next_id += 1;
        let start = request.start.as_micros();
        let entry = TimelineEntry {
            start,
            end: start.saturating_add(request.airtime_us),
            id,
        };
        let window = self.config.window_us;
        self.ledgers[index].insert(entry, request.class, window);
        true
    }

    /// Removes a recorded transmission that did not happen; whether it was found.
    pub fn cancel(&mut self, id: RecordId) -> bool {
        for ledger in &mut self.ledgers {
            if ledger.all.remove(id.0) {
                ledger.other.remove(id.0);
                return true;
            }
        }
        false
    }

    /// Usage of every band in the window that ends at `window_end`.
    pub fn usage(&self, window_end: MonotonicTime) -> Vec<BandUsage> {
        let window = self.config.window_us;
        let window_start = window_end.as_micros().saturating_sub(window);
        self.ledgers
            .iter()
            .map(|ledger| BandUsage {
                band: ledger.band,
                used_us: ledger.all.usage_in_window(window_start, window),
                used_by_other_us: ledger.other.usage_in_window(window_start, window),
                budget_us: ledger.budget_us,
                other_limit_us: ledger.other_limit_us,
            })
            .collect()
    }

    fn ledger_index(&self, frequency_hz: u32, bandwidth_hz: u32) -> Option<usize> {
        self.ledgers
            .iter()
            .position(|ledger| ledger.band.contains(frequency_hz, bandwidth_hz))
    }

    fn evaluate(&self, request: &TransmitRequest) -> Result<(usize, MonotonicTime), Refusal> {
        if request.airtime_us == 0 {
            return Err(Refusal::EmptyTransmission);
        }
        let index = self
            .ledger_index(request.frequency_hz, request.bandwidth_hz)
            .ok_or(Refusal::OutsideBands {
                frequency_hz: request.frequency_hz,
                bandwidth_hz: request.bandwidth_hz,
            })?;
        let ledger = &self.ledgers[index];
        if let Some(dwell) = ledger.band.dwell_time {
            if dwell.applies_to(request.bandwidth_hz) && request.airtime_us > dwell.max_us {
                return Err(Refusal::DwellTimeExceeded {
                    band: ledger.band.name,
                    airtime_us: request.airtime_us,
                    max_us: dwell.max_us,
                });
            }
        }
        let earliest = ledger.earliest_start(
            request.start.as_micros(),
            request.airtime_us,
            request.class,
            self.config.window_us,
        )?;
        Ok((index, MonotonicTime::from_micros(earliest)))
    }
}
