//! Time as the node sees it: the firmware's local monotonic clock ([`Instant`]) and the
//! device's idea of GPS time ([`DeviceClock`]), which is that local clock plus an offset
//! learnt through TS003 clock synchronisation.
//!
//! Everything on air is GPS seconds modulo 2^32 (SessionTime, RebootTime, DeviceTime).
//! Such a value is turned into a full GPS time by taking the one nearest to the device's
//! current GPS time ([`DeviceClock::nearest_gps_millis`]), so the 2116 wrap needs no
//! special case. Schedules are kept in GPS terms and converted to local instants when
//! they are polled, so a clock correction moves them with it.

/// A point of the firmware's local monotonic clock, in milliseconds.
///
/// The epoch is the firmware's (typically boot); it must never jump backwards. The node
/// never reads a clock itself: every call that needs the time takes an `Instant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The instant `millis` milliseconds after the local epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis)
    }

    /// The instant `seconds` seconds after the local epoch (saturating).
    pub const fn from_secs(seconds: u64) -> Self {
        Instant(seconds.saturating_mul(1000))
    }

    /// Milliseconds since the local epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant plus `millis` milliseconds (saturating).
    pub const fn plus_millis(self, millis: u64) -> Self {
        Instant(self.0.saturating_add(millis))
    }

    /// This instant plus `seconds` seconds (saturating).
    pub const fn plus_secs(self, seconds: u64) -> Self {
        self.plus_millis(seconds.saturating_mul(1000))
    }

    /// Milliseconds from `earlier` to this instant, 0 if `earlier` is later.
    pub const fn millis_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The device's GPS clock: the local clock plus an offset, and whether the offset was
/// ever set by the network.
///
/// Before the first synchronisation the offset is 0, so "GPS time" is the local time
/// since boot: TimeToStart computed from it comes out absurd (saturated), which is
/// exactly what tells the server to resynchronise the device (TS005 §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceClock {
    offset_millis: i64,
    synchronised: bool,
}

impl Default for DeviceClock {
    fn default() -> Self {
        Self::unsynchronised()
    }
}

impl DeviceClock {
    /// A clock that was never synchronised (offset 0).
    pub const fn unsynchronised() -> Self {
        DeviceClock {
            offset_millis: 0,
            synchronised: false,
        }
    }

    /// True once the network (AppTimeAns) or the firmware (MAC DeviceTimeAns) set it.
    pub const fn is_synchronised(&self) -> bool {
        self.synchronised
    }

    /// GPS milliseconds at local instant `now` (may be negative after a wild correction
    /// of an unsynchronised clock; on-air values are taken modulo 2^32 anyway).
    pub fn gps_millis(&self, now: Instant) -> i64 {
        i64::try_from(now.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_millis)
    }

    /// Whole GPS seconds at `now` (floor).
    pub fn gps_seconds(&self, now: Instant) -> i64 {
        self.gps_millis(now).div_euclid(1000)
    }

    /// GPS seconds modulo 2^32 at `now`: the DeviceTime of TS003.
    pub fn on_air_seconds(&self, now: Instant) -> u32 {
        // rem_euclid keeps the value in 0..2^32, so the cast only drops zero high bits.
        self.gps_seconds(now).rem_euclid(1 << 32) as u32
    }

    /// The full GPS time, in milliseconds, of the on-air value `on_air_seconds` that is
    /// nearest to the device's time at `now` (within ±2^31 s).
    pub fn nearest_gps_millis(&self, now: Instant, on_air_seconds: u32) -> i64 {
        let delta = self.seconds_until(now, on_air_seconds);
        self.gps_seconds(now)
            .saturating_add(i64::from(delta))
            .saturating_mul(1000)
    }

    /// Signed seconds from the device's time at `now` to the nearest GPS time whose
    /// on-air value is `on_air_seconds` (negative: it is in the past).
    pub fn seconds_until(&self, now: Instant, on_air_seconds: u32) -> i32 {
        // Two's complement of the modular difference: the nearest representative.
        on_air_seconds.wrapping_sub(self.on_air_seconds(now)) as i32
    }

    /// The local instant at which the device's GPS clock reads `gps_millis` (the local
    /// epoch if that is before it).
    pub fn local_instant(&self, gps_millis: i64) -> Instant {
        let local = gps_millis.saturating_sub(self.offset_millis);
        Instant::from_millis(u64::try_from(local).unwrap_or(0))
    }

    /// Adds a TS003 TimeCorrection (whole seconds) and marks the clock synchronised.
    pub fn apply_correction(&mut self, correction_seconds: i32) {
        self.offset_millis = self
            .offset_millis
            .saturating_add(i64::from(correction_seconds) * 1000);
        self.synchronised = true;
    }

    /// Sets the clock so that it reads `gps_millis` at `now` (e.g. from a MAC-layer
    /// DeviceTimeAns handled by the firmware).
    pub fn set(&mut self, now: Instant, gps_millis: i64) {
        let local = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        self.offset_millis = gps_millis.saturating_sub(local);
        self.synchronised = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_handles_the_2116_wrap() {
        let mut clock = DeviceClock::unsynchronised();
        // Device at GPS 2^32 - 10 s; the session starts 20 s later, on air as 10.
        clock.set(Instant::from_secs(5), ((1i64 << 32) - 10) * 1000);
        let now = Instant::from_secs(5);
        assert_eq!(clock.seconds_until(now, 10), 20);
        assert_eq!(
            clock.nearest_gps_millis(now, 10),
            ((1i64 << 32) + 10) * 1000
        );
        assert_eq!(
            clock.local_instant(clock.nearest_gps_millis(now, 10)),
            Instant::from_secs(25)
        );
    }

    #[test]
    fn corrections_move_the_clock() {
        let mut clock = DeviceClock::unsynchronised();
        let now = Instant::from_millis(1500);
        assert_eq!(clock.on_air_seconds(now), 1);
        clock.apply_correction(1_000_000);
        assert!(clock.is_synchronised());
        assert_eq!(clock.on_air_seconds(now), 1_000_001);
        clock.apply_correction(-2_000_000);
        assert_eq!(clock.gps_seconds(now), -999_999);
        assert_eq!(
            clock.on_air_seconds(now),
            (-999_999i64).rem_euclid(1 << 32) as u32
        );
    }
}
