//! The agent's clocks: the [`Clock`] trait (monotonic time, wall time, GPS time), the
//! [`SystemClock`] that runs the daemon, and the [`ManualClock`] that tests and the
//! simulator drive by hand.
//!
//! # Wall time anchored to monotonic time
//!
//! A gateway often boots without a battery-backed RTC: its wall clock starts wrong
//! (1970, or the time `fake-hwclock` saved at shutdown) and NTP steps it when the backhaul
//! comes back, possibly hours later. Timers and schedules therefore run on the monotonic
//! clock ([`MonotonicTime`], the timeline of the `lorawan` module), and the agent's wall
//! time is *anchored* to it: `wall = anchor.wall + (now - anchor.monotonic)`. Between
//! checks, the agent's wall time advances exactly with the monotonic clock, whatever the
//! system clock does. [`Clock::check_for_step`] (called from the main loop about once a
//! second) compares the system's wall clock with the anchored one; a difference of
//! [`DEFAULT_STEP_THRESHOLD_MICROS`] or more is a *step*: the clock re-anchors and returns
//! a [`ClockStep`], which the caller records as an event. Smaller differences (reading
//! the two clocks a few microseconds apart) re-anchor silently.
//!
//! GPS time (seconds since 1980-01-06, with leap seconds) is derived from the wall time
//! with `lorawan_fuota::gps_time`, the same conversion the node firmware uses.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use crate::lorawan::time::MonotonicTime;

/// Differences between the system wall clock and the anchored wall time at or above this
/// many microseconds are reported as steps (NTP daemons step rather than slew from
/// 128 ms on; anything near that is a real correction, not jitter).
pub const DEFAULT_STEP_THRESHOLD_MICROS: u64 = 100_000;

const MICROS_PER_SECOND: i64 = 1_000_000;

/// A wall-clock time: microseconds since the Unix epoch (UTC, leap seconds not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WallTime(i64);

impl WallTime {
    /// 2025-01-01T00:00:00Z. A wall clock earlier than this is certainly wrong (the
    /// agent did not exist before), typically an RTC-less gateway that booted at 1970.
    pub const PLAUSIBLE_FLOOR: WallTime = WallTime(1_735_689_600 * MICROS_PER_SECOND);

    /// The time `micros` microseconds after the Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        WallTime(micros)
    }

    /// The time `seconds` seconds after the Unix epoch (saturating).
    pub const fn from_unix_seconds(seconds: i64) -> Self {
        WallTime(seconds.saturating_mul(MICROS_PER_SECOND))
    }

    /// The wall time of a `SystemTime` (saturating far outside ±292,000 years).
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => WallTime(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => WallTime(
                i64::try_from(before.duration().as_micros())
                    .map(|micros| -micros)
                    .unwrap_or(i64::MIN),
            ),
        }
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (rounded towards negative infinity).
    pub const fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// Whole seconds since the Unix epoch (rounded towards negative infinity).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SECOND)
    }

    /// Nanoseconds within the second.
    pub const fn subsec_nanos(self) -> u32 {
        (self.0.rem_euclid(MICROS_PER_SECOND) * 1_000) as u32
    }

    /// This time shifted by `micros` (saturating).
    pub const fn saturating_add_micros(self, micros: i64) -> Self {
        WallTime(self.0.saturating_add(micros))
    }

    /// Whether this time is at or after [`WallTime::PLAUSIBLE_FLOOR`].
    pub fn is_plausible(self) -> bool {
        self >= Self::PLAUSIBLE_FLOOR
    }

    /// The GPS time of this wall time, or `None` before the GPS epoch (1980-01-06).
    pub fn to_gps(self) -> Option<GpsTime> {
        lorawan_fuota::gps_time::unix_to_gps(self.unix_seconds()).map(|seconds| GpsTime {
            seconds,
            subsec_nanos: self.subsec_nanos(),
        })
    }
}

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unix {}.{:06}",
            self.unix_seconds(),
            self.0.rem_euclid(MICROS_PER_SECOND)
        )
    }
}

/// A GPS time: seconds since 1980-01-06T00:00:00Z counting leap seconds, and the
/// nanoseconds within that second (LoRaWAN DeviceTimeAns, TS003 clock sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GpsTime {
    /// Seconds since the GPS epoch.
    pub seconds: u64,
    /// Nanoseconds within the second.
    pub subsec_nanos: u32,
}

impl GpsTime {
    /// The 32-bit on-air seconds (`seconds mod 2^32`).
    pub const fn on_air_seconds(self) -> u32 {
        lorawan_fuota::gps_time::gps_to_on_air(self.seconds)
    }

    /// The 5-byte DeviceTimeAns payload (seconds LE, fraction in 1/256 s).
    pub fn device_time_ans_payload(self) -> [u8; 5] {
        lorawan_fuota::gps_time::device_time_ans_payload(self.seconds, self.subsec_nanos)
    }
}

/// A step of the system wall clock, noticed by [`Clock::check_for_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockStep {
    /// When it was noticed.
    pub noticed_at: MonotonicTime,
    /// The agent's wall time just before re-anchoring (continuous with the past).
    pub before: WallTime,
    /// The system's wall time now, the new anchor.
    pub after: WallTime,
    /// `after - before` in microseconds: positive when the clock jumped forward.
    pub delta_micros: i64,
}

/// The agent's source of time. Object safe, so the core can hold an `Arc<dyn Clock>`.
pub trait Clock: Send + Sync {
    /// Monotonic time: never goes backwards, unaffected by wall-clock steps.
    fn now(&self) -> MonotonicTime;

    /// The agent's wall time, anchored to the monotonic clock (see the module doc).
    fn wall_now(&self) -> WallTime;

    /// Compares the system wall clock with the anchored wall time; on a step, re-anchors
    /// and returns it. Call regularly (about once a second) and record what it returns.
    fn check_for_step(&self) -> Option<ClockStep>;

    /// GPS time derived from [`Clock::wall_now`]; `None` if the wall clock is before 1980.
    fn gps_now(&self) -> Option<GpsTime> {
        self.wall_now().to_gps()
    }
}

/// The anchor "the wall clock read `wall` at monotonic time `monotonic`", and the
/// step detection built on it; shared by both clock implementations.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    monotonic: MonotonicTime,
    wall: WallTime,
}

impl Anchor {
    fn wall_at(&self, now: MonotonicTime) -> WallTime {
        let elapsed = i64::try_from(now.micros_since(self.monotonic)).unwrap_or(i64::MAX);
        self.wall.saturating_add_micros(elapsed)
    }

    /// Re-anchors on the system reading `system_wall` at `now`; a step if the difference
    /// reaches `threshold_micros`.
    fn observe(
        &mut self,
        now: MonotonicTime,
        system_wall: WallTime,
        threshold_micros: u64,
    ) -> Option<ClockStep> {
        let before = self.wall_at(now);
        let delta_micros = system_wall
            .unix_micros()
            .saturating_sub(before.unix_micros());
        *self = Anchor {
            monotonic: now,
            wall: system_wall,
        };
        (delta_micros.unsigned_abs() >= threshold_micros).then_some(ClockStep {
            noticed_at: now,
            before,
            after: system_wall,
            delta_micros,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are plain data that every writer leaves consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The daemon's clock: `CLOCK_MONOTONIC` (through `Instant`) with the origin at creation,
/// and `CLOCK_REALTIME` (through `SystemTime`) anchored to it.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    anchor: Mutex<Anchor>,
    step_threshold_micros: u64,
}

impl SystemClock {
    /// A clock whose monotonic origin is now, anchored on the current system time.
    pub fn new() -> Self {
        Self::with_step_threshold(DEFAULT_STEP_THRESHOLD_MICROS)
    }

    /// As [`SystemClock::new`], reporting steps of `micros` or more.
    pub fn with_step_threshold(micros: u64) -> Self {
        SystemClock {
            origin: Instant::now(),
            anchor: Mutex::new(Anchor {
                monotonic: MonotonicTime::ZERO,
                wall: WallTime::from_system_time(SystemTime::now()),
            }),
            step_threshold_micros: micros,
        }
    }

    /// The `Instant` of a monotonic time (for tokio timers).
    pub fn instant_at(&self, time: MonotonicTime) -> Instant {
        self.origin + Duration::from_micros(time.as_micros())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> MonotonicTime {
        let micros = self.origin.elapsed().as_micros();
        MonotonicTime::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn wall_now(&self) -> WallTime {
        let now = self.now();
        lock(&self.anchor).wall_at(now)
    }

    fn check_for_step(&self) -> Option<ClockStep> {
        let now = self.now();
        let system_wall = WallTime::from_system_time(SystemTime::now());
        lock(&self.anchor).observe(now, system_wall, self.step_threshold_micros)
    }
}

#[derive(Debug)]
struct ManualState {
    monotonic: MonotonicTime,
    /// What the (simulated) system wall clock reads now.
    system_wall: WallTime,
    anchor: Anchor,
}

/// A clock moved by hand, for tests and the simulator. Clones share one timeline.
///
/// [`ManualClock::advance`] moves monotonic and wall time together;
/// [`ManualClock::step_system_wall`] makes the simulated system wall clock jump (an NTP
/// step), which [`Clock::check_for_step`] then notices like on a real gateway.
#[derive(Debug, Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
    step_threshold_micros: u64,
}

impl ManualClock {
    /// A clock at monotonic time zero whose wall clock reads `wall`.
    pub fn new(wall: WallTime) -> Self {
        ManualClock {
            state: Arc::new(Mutex::new(ManualState {
                monotonic: MonotonicTime::ZERO,
                system_wall: wall,
                anchor: Anchor {
                    monotonic: MonotonicTime::ZERO,
                    wall,
                },
            })),
            step_threshold_micros: DEFAULT_STEP_THRESHOLD_MICROS,
        }
    }

    /// Moves time forward by `duration` (monotonic and wall alike).
    pub fn advance(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let mut state = lock(&self.state);
        state.monotonic = state.monotonic.saturating_add_micros(micros);
        state.system_wall = state
            .system_wall
            .saturating_add_micros(i64::try_from(micros).unwrap_or(i64::MAX));
    }

    /// Makes the simulated system wall clock jump by `delta_micros` (negative: backwards)
    /// without moving monotonic time.
    pub fn step_system_wall(&self, delta_micros: i64) {
        let mut state = lock(&self.state);
        state.system_wall = state.system_wall.saturating_add_micros(delta_micros);
    }

    /// What the simulated system wall clock reads (not the agent's anchored wall time).
    pub fn system_wall(&self) -> WallTime {
        lock(&self.state).system_wall
    }
}

impl Clock for ManualClock {
    fn now(&self) -> MonotonicTime {
        lock(&self.state).monotonic
    }

    fn wall_now(&self) -> WallTime {
        let state = lock(&self.state);
        state.anchor.wall_at(state.monotonic)
    }

    fn check_for_step(&self) -> Option<ClockStep> {
        let mut state = lock(&self.state);
        let (now, system_wall) = (state.monotonic, state.system_wall);
        state
            .anchor
            .observe(now, system_wall, self.step_threshold_micros)
    }
}

/// Tokio's clock (virtual when the runtime's time is paused) as the agent's clock: the
/// simulator's timeline, on which the service's timers and the simulated radio agree.
/// The system wall clock it simulates starts at `wall` and moves with tokio's time;
/// [`VirtualClock::step_system_wall`] makes it jump like [`ManualClock`]'s.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    origin: tokio::time::Instant,
    state: Arc<Mutex<VirtualState>>,
    step_threshold_micros: u64,
}

#[derive(Debug)]
struct VirtualState {
    /// System wall clock minus (start wall + elapsed): the steps so far.
    system_offset_micros: i64,
    start_wall: WallTime,
    anchor: Anchor,
}

impl VirtualClock {
    /// A clock at monotonic time zero now (tokio's now) whose wall clock reads `wall`.
    pub fn new(wall: WallTime) -> Self {
        VirtualClock {
            origin: tokio::time::Instant::now(),
            state: Arc::new(Mutex::new(VirtualState {
                system_offset_micros: 0,
                start_wall: wall,
                anchor: Anchor {
                    monotonic: MonotonicTime::ZERO,
                    wall,
                },
            })),
            step_threshold_micros: DEFAULT_STEP_THRESHOLD_MICROS,
        }
    }

    /// Makes the simulated system wall clock jump by `delta_micros`.
    pub fn step_system_wall(&self, delta_micros: i64) {
        let mut state = lock(&self.state);
        state.system_offset_micros = state.system_offset_micros.saturating_add(delta_micros);
    }

    /// What a new process of the agent sees (the agent restarted): its wall clock starts
    /// from the system's now, with every step so far, noticed or not. Monotonic time
    /// goes on (the machine did not reboot).
    pub fn restart_process(&self) {
        let now = self.now();
        let mut state = lock(&self.state);
        let wall = self.system_wall(&state, now);
        state.anchor = Anchor {
            monotonic: now,
            wall,
        };
    }

    /// The tokio instant of a monotonic time.
    pub fn instant_at(&self, time: MonotonicTime) -> tokio::time::Instant {
        self.origin + Duration::from_micros(time.as_micros())
    }

    fn system_wall(&self, state: &VirtualState, now: MonotonicTime) -> WallTime {
        let elapsed = i64::try_from(now.as_micros()).unwrap_or(i64::MAX);
        state
            .start_wall
            .saturating_add_micros(elapsed.saturating_add(state.system_offset_micros))
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> MonotonicTime {
        let micros = self.origin.elapsed().as_micros();
        MonotonicTime::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn wall_now(&self) -> WallTime {
        let now = self.now();
        lock(&self.state).anchor.wall_at(now)
    }

    fn check_for_step(&self) -> Option<ClockStep> {
        let now = self.now();
        let mut state = lock(&self.state);
        let system_wall = self.system_wall(&state, now);
        state
            .anchor
            .observe(now, system_wall, self.step_threshold_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: WallTime = WallTime::from_unix_seconds(1_767_225_600); // 2026-01-01

    #[test]
    fn manual_clock_advances_monotonic_and_wall_together() {
        let clock = ManualClock::new(START);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now(), MonotonicTime::from_micros(1_500_000));
        assert_eq!(clock.wall_now(), START.saturating_add_micros(1_500_000));
        assert_eq!(clock.check_for_step(), None);
    }

    #[test]
    fn a_forward_step_is_noticed_once_and_re_anchors() {
        let clock = ManualClock::new(START);
        clock.advance(Duration::from_secs(10));
        clock.step_system_wall(3_600_000_000); // NTP jumps one hour ahead
                                               // Until the check, the agent's wall time stays continuous.
        assert_eq!(clock.wall_now(), START.saturating_add_micros(10_000_000));
        let step = clock.check_for_step().expect("a step");
        assert_eq!(step.delta_micros, 3_600_000_000);
        assert_eq!(step.before, START.saturating_add_micros(10_000_000));
        assert_eq!(step.after, START.saturating_add_micros(3_610_000_000));
        assert_eq!(step.noticed_at, MonotonicTime::from_secs(10));
        assert_eq!(clock.wall_now(), step.after);
        assert_eq!(clock.check_for_step(), None);
    }

    #[test]
    fn a_backward_step_is_negative_and_monotonic_time_is_unaffected() {
        let clock = ManualClock::new(START);
        clock.advance(Duration::from_secs(5));
        clock.step_system_wall(-2_000_000);
        let step = clock.check_for_step().expect("a step");
        assert_eq!(step.delta_micros, -2_000_000);
        assert_eq!(clock.now(), MonotonicTime::from_secs(5));
    }

    #[test]
    fn differences_below_the_threshold_re_anchor_silently() {
        let clock = ManualClock::new(START);
        clock.step_system_wall(50_000);
        assert_eq!(clock.check_for_step(), None);
        assert_eq!(clock.wall_now(), START.saturating_add_micros(50_000));
    }

    #[test]
    fn wall_time_converts_to_gps_time_with_leap_seconds() {
        // 2026-01-01T00:00:00.25Z: 18 leap seconds since the GPS epoch.
        let wall = WallTime::from_unix_micros(1_767_225_600 * 1_000_000 + 250_000);
        let gps = wall.to_gps().expect("after 1980");
        assert_eq!(gps.seconds, 1_767_225_600 - 315_964_800 + 18);
        assert_eq!(gps.subsec_nanos, 250_000_000);
        assert_eq!(gps.device_time_ans_payload()[4], 64); // 0.25 s = 64/256
        assert_eq!(WallTime::from_unix_seconds(0).to_gps(), None);
    }

    #[test]
    fn implausible_wall_clocks_are_recognised() {
        assert!(!WallTime::from_unix_seconds(0).is_plausible());
        assert!(START.is_plausible());
    }

    #[test]
    fn system_clock_is_monotonic_and_close_to_system_time() {
        let clock = SystemClock::new();
        let first = clock.now();
        let second = clock.now();
        assert!(second >= first);
        let system = WallTime::from_system_time(SystemTime::now());
        let difference = (clock.wall_now().unix_micros() - system.unix_micros()).abs();
        assert!(difference < 1_000_000, "difference {difference} µs");
        assert_eq!(clock.check_for_step(), None);
    }
}
