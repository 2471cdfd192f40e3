//! The concentrator counter (`tmst`) wraps at 2^32 µs: differences, conversions to and
//! from the monotonic timeline across the wrap.

use fuota_agent::lorawan::time::{ConcentratorClock, MonotonicTime, Tmst};

const NEAR_WRAP: u32 = u32::MAX - 299_999; // 300 ms before the counter wraps

#[test]
fn tmst_arithmetic_wraps() {
    assert_eq!(
        Tmst(NEAR_WRAP).wrapping_add_micros(1_000_000),
        Tmst(700_000)
    );
    assert_eq!(
        Tmst(NEAR_WRAP).signed_micros_until(Tmst(700_000)),
        1_000_000
    );
    assert_eq!(
        Tmst(700_000).signed_micros_until(Tmst(NEAR_WRAP)),
        -1_000_000
    );
    assert_eq!(Tmst(5).signed_micros_until(Tmst(5)), 0);
    assert_eq!(
        Tmst(0).signed_micros_until(Tmst(i32::MAX as u32)),
        i64::from(i32::MAX)
    );
}

#[test]
fn clock_maps_across_the_wrap() {
    let anchor_time = MonotonicTime::from_secs(10_000);
    let clock = ConcentratorClock::new(Tmst(NEAR_WRAP), anchor_time);
    // 1 s after the anchor, past the wrap.
    assert_eq!(
        clock.to_monotonic(Tmst(700_000)),
        Some(anchor_time.saturating_add_micros(1_000_000))
    );
    assert_eq!(
        clock.to_tmst(anchor_time.saturating_add_micros(1_000_000)),
        Tmst(700_000)
    );
    // Before the anchor.
    assert_eq!(
        clock.to_monotonic(Tmst(NEAR_WRAP - 2_000_000)),
        Some(anchor_time.saturating_sub_micros(2_000_000))
    );
    assert_eq!(
        clock.to_tmst(anchor_time.saturating_sub_micros(2_000_000)),
        Tmst(NEAR_WRAP - 2_000_000)
    );
    // Several wraps later the counter value repeats every 2^32 µs.
    let much_later = anchor_time.saturating_add_micros(3 * (1u64 << 32) + 1_000_000);
    assert_eq!(clock.to_tmst(much_later), Tmst(700_000));
    // A counter value that would map before the monotonic origin.
    let early = ConcentratorClock::new(Tmst(1_000), MonotonicTime::from_micros(10));
    assert_eq!(early.to_monotonic(Tmst(0)), None);
    assert_eq!(early.to_monotonic(Tmst(990)), Some(MonotonicTime::ZERO));
}

#[test]
fn monotonic_time_helpers() {
    let t = MonotonicTime::from_secs(2);
    assert_eq!(t.as_micros(), 2_000_000);
    assert_eq!(t.saturating_sub_micros(3_000_000), MonotonicTime::ZERO);
    assert_eq!(t.micros_since(MonotonicTime::from_secs(3)), 0);
    assert_eq!(MonotonicTime::from_secs(3).micros_since(t), 1_000_000);
    assert_eq!(t.to_string(), "2.000000 s");
}
