//! GPS-epoch time: every vector of `shared/reference/test-vectors.md` §6, the
//! DeviceTimeAns example, leap-second behaviour, round trips, and lrwn's DeviceTimeAns
//! encoder as an oracle for the fraction byte.

use std::time::Duration;

use lorawan_fuota::gps_time::{
    device_time_ans_payload, fraction_from_millis, fraction_from_nanos, fraction_to_nanos,
    gps_to_on_air, gps_to_unix, is_leap_second, leap_seconds_at_gps, leap_seconds_at_unix,
    unix_to_gps, GPS_UNIX_OFFSET, LEAP_SECONDS,
};
use lrwn::{DeviceTimeAnsPayload, PayloadCodec};
use proptest::prelude::*;

/// (UTC, Unix, GPS) from test-vectors.md §6.
const VECTORS: [(&str, i64, u64); 6] = [
    ("1980-01-06T00:00:00Z", 315_964_800, 0),
    ("2010-01-28T16:36:24Z", 1_264_696_584, 948_731_799),
    ("2012-06-30T23:59:59Z", 1_341_100_799, 1_025_136_014),
    ("2012-07-01T00:00:00Z", 1_341_100_800, 1_025_136_016),
    ("2016-02-12T14:24:31Z", 1_455_287_071, 1_139_322_288),
    ("2025-07-14T00:00:00Z", 1_752_451_200, 1_436_486_418),
];

#[test]
fn every_vector_both_directions() {
    for (utc, unix, gps) in VECTORS {
        assert_eq!(unix_to_gps(unix), Some(gps), "{utc}");
        assert_eq!(gps_to_unix(gps), unix, "{utc}");
    }
}

#[test]
fn offset_and_leap_counts() {
    assert_eq!(GPS_UNIX_OFFSET, 315_964_800);
    assert_eq!(LEAP_SECONDS.len(), 18);
    assert_eq!(leap_seconds_at_unix(GPS_UNIX_OFFSET), 0);
    assert_eq!(leap_seconds_at_unix(1_455_287_071), 17); // Feb 2016 (spec example)
    assert_eq!(leap_seconds_at_unix(1_483_228_799), 17); // 2016-12-31T23:59:59Z
    assert_eq!(leap_seconds_at_unix(1_483_228_800), 18); // 2017-01-01T00:00:00Z
    assert_eq!(leap_seconds_at_unix(1_752_451_200), 18);
    assert_eq!(leap_seconds_at_unix(i64::MIN), 0);
    assert_eq!(leap_seconds_at_unix(i64::MAX), 18);
    assert_eq!(leap_seconds_at_gps(0), 0);
    assert_eq!(leap_seconds_at_gps(1_436_486_418), 18);
    assert_eq!(leap_seconds_at_gps(u64::MAX), 18);
}

#[test]
fn before_the_epoch_is_none() {
    assert_eq!(unix_to_gps(GPS_UNIX_OFFSET - 1), None);
    assert_eq!(unix_to_gps(0), None);
    assert_eq!(unix_to_gps(i64::MIN), None);
}

#[test]
fn absurd_values_do_not_panic() {
    assert_eq!(
        unix_to_gps(i64::MAX),
        Some((i64::MAX - GPS_UNIX_OFFSET) as u64 + 18)
    );
    assert_eq!(gps_to_unix(u64::MAX), i64::MAX);
    assert_eq!(
        gps_to_unix((i64::MAX - GPS_UNIX_OFFSET) as u64 + 18),
        i64::MAX
    );
}

/// The leap second 2012-06-30T23:59:60Z is GPS 1025136015: it has no Unix timestamp and
/// maps to the 23:59:59 before it; Unix never yields it.
#[test]
fn the_leap_second_itself() {
    let leap = 1_025_136_015;
    assert!(is_leap_second(leap));
    assert_eq!(gps_to_unix(leap), 1_341_100_799);
    assert_eq!(gps_to_unix(leap - 1), 1_341_100_799);
    assert_eq!(gps_to_unix(leap + 1), 1_341_100_800);
    assert_eq!(unix_to_gps(gps_to_unix(leap)), Some(leap - 1));

    // Exactly 18 leap seconds in GPS time, one per table entry, all at 23:59:60.
    let leaps: Vec<u64> = LEAP_SECONDS
        .iter()
        .map(|&l| unix_to_gps(l).unwrap() - 1)
        .collect();
    for &g in &leaps {
        assert!(is_leap_second(g), "{g}");
        assert!(!is_leap_second(g - 1) && !is_leap_second(g + 1), "{g}");
        assert_eq!(unix_to_gps(gps_to_unix(g)), Some(g - 1));
    }
    // The last one: 2016-12-31T23:59:60Z.
    assert_eq!(leaps[17], 1_167_264_017);
}

#[test]
fn on_air_value_wraps_at_2_pow_32() {
    assert_eq!(gps_to_on_air(1_436_486_418), 1_436_486_418);
    assert_eq!(gps_to_on_air(u64::from(u32::MAX)), u32::MAX);
    assert_eq!(gps_to_on_air(1 << 32), 0);
    assert_eq!(gps_to_on_air((1 << 32) + 5), 5);
}

#[test]
fn device_time_ans_example() {
    // GPS 1436486418.5 s → 12 0b 9f 55 80.
    assert_eq!(
        device_time_ans_payload(1_436_486_418, 500_000_000),
        [0x12, 0x0b, 0x9f, 0x55, 0x80]
    );
    assert_eq!(fraction_from_millis(500), 0x80);
    assert_eq!(fraction_from_nanos(500_000_000), 0x80);
    assert_eq!(fraction_to_nanos(0x80), 500_000_000);
}

#[test]
fn fraction_edges() {
    assert_eq!(fraction_from_millis(0), 0);
    assert_eq!(fraction_from_millis(3), 0); // 0.768 → 0
    assert_eq!(fraction_from_millis(4), 1); // 1.024 → 1
    assert_eq!(fraction_from_millis(999), 255);
    assert_eq!(fraction_from_millis(1000), 0); // only the sub-second part counts
    assert_eq!(
        fraction_from_millis(u32::MAX),
        fraction_from_millis(u32::MAX % 1000)
    );
    assert_eq!(fraction_from_nanos(3_906_249), 0);
    assert_eq!(fraction_from_nanos(3_906_250), 1);
    assert_eq!(fraction_from_nanos(999_999_999), 255);
    assert_eq!(
        fraction_from_nanos(u32::MAX),
        fraction_from_nanos(u32::MAX % 1_000_000_000)
    );
    assert_eq!(fraction_to_nanos(255), 996_093_750);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every Unix time from the epoch on survives unix → gps → unix (a Unix timestamp can
    /// never fall inside a leap second).
    #[test]
    fn unix_gps_unix_round_trips(unix in GPS_UNIX_OFFSET..(1i64 << 40)) {
        let gps = unix_to_gps(unix).unwrap();
        prop_assert!(!is_leap_second(gps));
        prop_assert_eq!(gps_to_unix(gps), unix);
    }

    /// Around the leap seconds, where it matters most.
    #[test]
    fn unix_gps_unix_round_trips_near_leaps(index in 0usize..18, delta in -3i64..3) {
        let unix = LEAP_SECONDS[index] + delta;
        let gps = unix_to_gps(unix).unwrap();
        prop_assert_eq!(gps_to_unix(gps), unix);
    }

    /// GPS → Unix → GPS for every GPS second that is not a leap second.
    #[test]
    fn gps_unix_gps_round_trips_outside_leap_seconds(gps in 0u64..(1u64 << 40)) {
        prop_assume!(!is_leap_second(gps));
        prop_assert_eq!(unix_to_gps(gps_to_unix(gps)), Some(gps));
    }

    /// GPS → Unix never goes backwards.
    #[test]
    fn gps_to_unix_is_monotonic(gps in 0u64..(1u64 << 40)) {
        prop_assert!(gps_to_unix(gps) <= gps_to_unix(gps + 1));
    }

    /// The millisecond and nanosecond forms agree, and match lrwn's DeviceTimeAns encoder.
    #[test]
    fn fraction_matches_lrwn(secs in any::<u32>(), nanos in 0u32..1_000_000_000) {
        prop_assert_eq!(fraction_from_millis(nanos / 1_000_000), fraction_from_nanos(nanos - nanos % 1_000_000));
        let ours = device_time_ans_payload(u64::from(secs), nanos);
        let theirs = DeviceTimeAnsPayload {
            time_since_gps_epoch: Duration::new(u64::from(secs), nanos),
        }
        .encode()
        .unwrap();
        prop_assert_eq!(ours.to_vec(), theirs);
    }
}
