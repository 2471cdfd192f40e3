//! Time values of the LoRaWAN layer: the agent's monotonic timeline ([`MonotonicTime`]),
//! the concentrator's wrapping 32-bit microsecond counter ([`Tmst`]) and the mapping
//! between the two ([`ConcentratorClock`]).
//!
//! Everything here is a plain value passed in by the caller: this module never reads a
//! clock. The agent's `Clock` trait (elsewhere) produces [`MonotonicTime`] values.

use std::fmt;

/// Microseconds in one second.
pub const MICROS_PER_SECOND: u64 = 1_000_000;

/// A point on the agent's monotonic timeline, in microseconds since an arbitrary origin
/// (boot of the agent, start of a simulation). Never goes backwards; unaffected by wall
/// clock steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonotonicTime(u64);

impl MonotonicTime {
    /// The origin of the timeline.
    pub const ZERO: MonotonicTime = MonotonicTime(0);

    /// The time `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        MonotonicTime(micros)
    }

    /// The time `seconds` seconds after the origin (saturating).
    pub const fn from_secs(seconds: u64) -> Self {
        MonotonicTime(seconds.saturating_mul(MICROS_PER_SECOND))
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This time plus `micros` microseconds, saturating at the end of the timeline.
    pub const fn saturating_add_micros(self, micros: u64) -> Self {
        MonotonicTime(self.0.saturating_add(micros))
    }

    /// This time minus `micros` microseconds, saturating at the origin.
    pub const fn saturating_sub_micros(self, micros: u64) -> Self {
        MonotonicTime(self.0.saturating_sub(micros))
    }

    /// Microseconds from `earlier` to `self`; zero when `earlier` is later than `self`.
    pub const fn micros_since(self, earlier: MonotonicTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for MonotonicTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06} s",
            self.0 / MICROS_PER_SECOND,
            self.0 % MICROS_PER_SECOND
        )
    }
}

/// A value of the concentrator's internal microsecond counter (`tmst` in the Semtech UDP
/// protocol). It is 32 bits wide and wraps every 2^32 µs (about 71.6 minutes), so all
/// arithmetic on it is modular.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tmst(pub u32);

impl Tmst {
    /// The counter value `micros` microseconds later (wrapping at 2^32).
    pub const fn wrapping_add_micros(self, micros: u32) -> Tmst {
        Tmst(self.0.wrapping_add(micros))
    }

    /// Signed microseconds from `self` to `later`, read modulo 2^32 as the shortest
    /// distance: in `-2^31 ..= 2^31 - 1`. Correct across a wrap as long as the two values
    /// are less than about 35.8 minutes apart.
    pub const fn signed_micros_until(self, later: Tmst) -> i64 {
        later.0.wrapping_sub(self.0) as i32 as i64
    }
}

impl fmt::Display for Tmst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tmst {}", self.0)
    }
}

/// One observation linking the concentrator counter to the monotonic timeline: "the
/// counter read `tmst` at `time`". The packet-forwarder link records one from every
/// received uplink (its `tmst`, and the monotonic time it arrived).
///
/// Conversions assume both clocks run at the same rate; a gateway crystal off by
/// 20 ppm drifts 72 ms per hour, so refresh the anchor with every uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcentratorClock {
    anchor_tmst: Tmst,
    anchor_time: MonotonicTime,
}

impl ConcentratorClock {
    /// A clock anchored on one observation.
    pub const fn new(anchor_tmst: Tmst, anchor_time: MonotonicTime) -> Self {
        ConcentratorClock {
            anchor_tmst,
            anchor_time,
        }
    }

    /// The counter value of the anchor.
    pub const fn anchor_tmst(&self) -> Tmst {
        self.anchor_tmst
    }

    /// The monotonic time of the anchor.
    pub const fn anchor_time(&self) -> MonotonicTime {
        self.anchor_time
    }

    /// The monotonic time at which the counter reads `tmst`, taking the occurrence of
    /// `tmst` nearest to the anchor (within ±2^31 µs). `None` if that lies before the
    /// origin of the monotonic timeline.
    pub fn to_monotonic(&self, tmst: Tmst) -> Option<MonotonicTime> {
        let offset = self.anchor_tmst.signed_micros_until(tmst);
        let anchor = self.anchor_time.as_micros();
        if offset >= 0 {
            Some(MonotonicTime::from_micros(
                anchor.checked_add(offset.unsigned_abs())?,
            ))
        } else {
            Some(MonotonicTime::from_micros(
                anchor.checked_sub(offset.unsigned_abs())?,
            ))
        }
    }

    /// The counter value at monotonic time `time` (wrapping).
    pub fn to_tmst(&self, time: MonotonicTime) -> Tmst {
        let anchor = self.anchor_time.as_micros();
        let micros = time.as_micros();
        if micros >= anchor {
            // Truncation to 32 bits is the wrap of the counter.
            self.anchor_tmst
                .wrapping_add_micros((micros - anchor) as u32)
        } else {
            Tmst(self.anchor_tmst.0.wrapping_sub((anchor - micros) as u32))
        }
    }
}
