//! GPS-epoch time with leap seconds (applayer.md §1.7 and §5.1).
//!
//! LoRaWAN carries time as seconds since the GPS epoch, 1980-01-06T00:00:00Z. GPS time
//! runs continuously; UTC (and therefore Unix time) has had 18 leap seconds inserted since
//! then, so
//!
//! ```text
//! gps = unix − 315964800 + L        L = leap seconds inserted so far (18 since 2017)
//! ```
//!
//! This module owns the leap-second table, the conversions in both directions, the 32-bit
//! on-air form (`gps mod 2^32`) and the DeviceTimeAns fraction byte (1/256 s).
//!
//! # Leap seconds and Unix time
//!
//! A leap second (23:59:60 UTC) has no Unix timestamp of its own: Unix time counts every
//! day as 86400 s. [`unix_to_gps`] therefore never yields the GPS second of a leap second,
//! and [`gps_to_unix`] maps that GPS second to the Unix timestamp of the 23:59:59 before
//! it (the convention of the Linux kernel, which repeats 23:59:59). As a result
//! `gps_to_unix(unix_to_gps(u)) == u` for every Unix time `u` from the GPS epoch on, while
//! `unix_to_gps(gps_to_unix(g)) == g` for every GPS second `g` except the 18 leap seconds,
//! which come back as `g − 1`.
//!
//! # When the table must be updated
//!
//! [`LEAP_SECONDS`] lists every leap second up to and including the one at the end of
//! 2016-12-31. The IERS announces leap seconds about six months ahead in its Bulletin C
//! (published every January and July); a leap second can only take effect at the end of
//! June or December. When a new one is announced, append its entry before it takes effect,
//! or every conversion after that date will be one second off. The CGPM decided in 2022
//! to stop inserting leap seconds by 2035; a *negative* leap second (none has ever
//! happened) would need more than a new entry, as the table only models insertions.

/// Unix time of the GPS epoch, 1980-01-06T00:00:00Z.
pub const GPS_UNIX_OFFSET: i64 = 315_964_800;

/// The leap seconds inserted into UTC between the GPS epoch and today, oldest first.
///
/// Each entry is the Unix timestamp of the first second *after* the inserted leap second,
/// i.e. 00:00:00 UTC of the day following the 23:59:60. From that timestamp on, one more
/// leap second is in effect. See the module documentation for when to update it.
pub const LEAP_SECONDS: [i64; 18] = [
    362_793_600,   // 1981-07-01
    394_329_600,   // 1982-07-01
    425_865_600,   // 1983-07-01
    489_024_000,   // 1985-07-01
    567_993_600,   // 1988-01-01
    631_152_000,   // 1990-01-01
    662_688_000,   // 1991-01-01
    709_948_800,   // 1992-07-01
    741_484_800,   // 1993-07-01
    773_020_800,   // 1994-07-01
    820_454_400,   // 1996-01-01
    867_715_200,   // 1997-07-01
    915_148_800,   // 1999-01-01
    1_136_073_600, // 2006-01-01
    1_230_768_000, // 2009-01-01
    1_341_100_800, // 2012-07-01
    1_435_708_800, // 2015-07-01
    1_483_228_800, // 2017-01-01
];

/// Nanoseconds per DeviceTimeAns fraction step (1/256 s).
const NANOS_PER_FRACTION: u32 = 3_906_250;

/// GPS second of the `index`-th (0-based) leap second itself, the 23:59:60.
///
/// At 00:00:00 after it, `index + 1` leap seconds are in effect, so that second is
/// `LEAP_SECONDS[index] − GPS_UNIX_OFFSET + index + 1` in GPS time; the leap second is the
/// one before. Entries before the GPS epoch (there are none) would give `None`.
fn leap_second_gps(index: usize, leap_unix: i64) -> Option<u64> {
    let index = i64::try_from(index).ok()?;
    u64::try_from(leap_unix - GPS_UNIX_OFFSET + index).ok()
}

/// Number of leap seconds in effect at Unix time `unix_seconds` (0 before 1981-07-01,
/// 18 from 2017-01-01 on).
pub fn leap_seconds_at_unix(unix_seconds: i64) -> u8 {
    let mut count = 0;
    for &leap in LEAP_SECONDS.iter() {
        if unix_seconds >= leap {
            count += 1;
        }
    }
    count
}

/// Number of leap seconds in effect at GPS second `gps_seconds`, counting a leap second
/// from its own start (during the 23:59:60 the new leap second already counts).
pub fn leap_seconds_at_gps(gps_seconds: u64) -> u8 {
    let mut count = 0;
    for (index, &leap) in LEAP_SECONDS.iter().enumerate() {
        match leap_second_gps(index, leap) {
            Some(leap_gps) if gps_seconds >= leap_gps => count += 1,
            _ => {}
        }
    }
    count
}

/// Whether GPS second `gps_seconds` is an inserted leap second (a 23:59:60 UTC).
pub fn is_leap_second(gps_seconds: u64) -> bool {
    LEAP_SECONDS
        .iter()
        .enumerate()
        .any(|(index, &leap)| leap_second_gps(index, leap) == Some(gps_seconds))
}

/// GPS seconds of a Unix time, or `None` before the GPS epoch (1980-01-06T00:00:00Z),
/// which GPS time cannot represent.
pub fn unix_to_gps(unix_seconds: i64) -> Option<u64> {
    let since_epoch = unix_seconds.checked_sub(GPS_UNIX_OFFSET)?;
    let since_epoch = u64::try_from(since_epoch).ok()?;
    since_epoch.checked_add(u64::from(leap_seconds_at_unix(unix_seconds)))
}

/// Unix time of a GPS second.
///
/// A leap second maps to the 23:59:59 before it (see the module documentation). GPS
/// values beyond what an `i64` Unix time can hold (about 2.9 × 10^11 years away)
/// saturate at `i64::MAX`.
pub fn gps_to_unix(gps_seconds: u64) -> i64 {
    let unix = i128::from(gps_seconds) + i128::from(GPS_UNIX_OFFSET)
        - i128::from(leap_seconds_at_gps(gps_seconds));
    i64::try_from(unix).unwrap_or(i64::MAX)
}

/// The 32-bit on-air form of a GPS time, `gps mod 2^32` (the on-air value wraps in 2116).
pub const fn gps_to_on_air(gps_seconds: u64) -> u32 {
    (gps_seconds & 0xFFFF_FFFF) as u32
}

/// DeviceTimeAns fraction byte (units of 1/256 s) from milliseconds within the second:
/// `floor(ms × 256 / 1000)`. Only `millis % 1000` is used.
pub const fn fraction_from_millis(millis: u32) -> u8 {
    ((millis % 1000) * 256 / 1000) as u8
}

/// DeviceTimeAns fraction byte (units of 1/256 s) from nanoseconds within the second:
/// `floor(ns / 3906250)`, the same as [`fraction_from_millis`] at millisecond
/// resolution. Only `nanos % 1_000_000_000` is used.
pub const fn fraction_from_nanos(nanos: u32) -> u8 {
    ((nanos % 1_000_000_000) / NANOS_PER_FRACTION) as u8
}

/// Nanoseconds within the second of a DeviceTimeAns fraction byte (`fraction × 3906250`).
pub const fn fraction_to_nanos(fraction: u8) -> u32 {
    fraction as u32 * NANOS_PER_FRACTION
}

/// The 5-byte DeviceTimeAns payload (MAC CID 0x0D, CID not included):
/// `gps_seconds mod 2^32` as u32 LE, then the fraction byte of `subsec_nanos`.
pub fn device_time_ans_payload(gps_seconds: u64, subsec_nanos: u32) -> [u8; 5] {
    let mut payload = [0u8; 5];
    payload[..4].copy_from_slice(&gps_to_on_air(gps_seconds).to_le_bytes());
    payload[4] = fraction_from_nanos(subsec_nanos);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_after_the_epoch() {
        assert!(LEAP_SECONDS.windows(2).all(|w| w[0] < w[1]));
        assert!(LEAP_SECONDS.iter().all(|&l| l > GPS_UNIX_OFFSET));
        // Every leap second takes effect at midnight UTC.
        assert!(LEAP_SECONDS.iter().all(|&l| l % 86_400 == 0));
    }

    #[test]
    fn leap_second_gps_positions() {
        // 2012-06-30T23:59:59Z is GPS 1025136014, 2012-07-01T00:00:00Z is 1025136016.
        assert!(is_leap_second(1_025_136_015));
        assert!(!is_leap_second(1_025_136_014));
        assert!(!is_leap_second(1_025_136_016));
        assert_eq!(leap_seconds_at_gps(1_025_136_014), 15);
        assert_eq!(leap_seconds_at_gps(1_025_136_015), 16);
    }
}
