//! The duty-cycle accountant: band lookup, budgets, the reserved Class A share,
//! WaitUntil answers, dwell time, and a property test against a brute-force checker of
//! every one-hour window.

use fuota_agent::lorawan::duty_cycle::{
    bands, regulatory_bands, DutyCycleAccountant, DutyCycleConfig, DutyCycleError, Refusal,
    TrafficClass, TransmitRequest, ONE_HOUR_US,
};
use fuota_agent::lorawan::region::{Region, RegionName, RegionOptions};
use fuota_agent::lorawan::time::MonotonicTime;
use proptest::prelude::*;

const SECOND: u64 = 1_000_000;

fn eu868_accountant(reserved_percent: u8) -> DutyCycleAccountant {
    DutyCycleAccountant::new(
        bands::eu868_bands(),
        DutyCycleConfig {
            window_us: ONE_HOUR_US,
            class_a_reserved_percent: reserved_percent,
        },
    )
}

fn request(
    frequency_hz: u32,
    start_us: u64,
    airtime_us: u64,
    class: TrafficClass,
) -> TransmitRequest {
    TransmitRequest {
        frequency_hz,
        bandwidth_hz: 125_000,
        start: MonotonicTime::from_micros(start_us),
        airtime_us,
        class,
    }
}

#[test]
fn eu868_bands_by_frequency() {
    let accountant = eu868_accountant(20);
    let band = |frequency_hz, bandwidth_hz| {
        accountant
            .band_for(frequency_hz, bandwidth_hz)
            .map(|band| (band.name, band.duty_cycle_ppm))
    };
    assert_eq!(
        band(863_500_000, 125_000),
        Some(("863.0-865.0 MHz", Some(1_000)))
    );
    assert_eq!(
        band(867_100_000, 125_000),
        Some(("865.0-868.0 MHz", Some(10_000)))
    );
    assert_eq!(
        band(868_100_000, 125_000),
        Some(("868.0-868.6 MHz", Some(10_000)))
    );
    assert_eq!(
        band(868_500_000, 125_000),
        Some(("868.0-868.6 MHz", Some(10_000)))
    );
    assert_eq!(
        band(868_900_000, 125_000),
        Some(("868.7-869.2 MHz", Some(1_000)))
    );
    assert_eq!(
        band(869_525_000, 125_000),
        Some(("869.4-869.65 MHz", Some(100_000)))
    );
    assert_eq!(
        band(869_850_000, 125_000),
        Some(("869.7-870.0 MHz", Some(10_000)))
    );
    // 868.55 MHz at 125 kHz reaches 868.6125 MHz: straddles the edge, in no band.
    assert_eq!(band(868_550_000, 125_000), None);
    // 868.3 MHz at 250 kHz (DR6) fits 868.0–868.6.
    assert_eq!(
        band(868_300_000, 250_000),
        Some(("868.0-868.6 MHz", Some(10_000)))
    );
    assert_eq!(band(868_650_000, 25_000), None); // the 868.6–868.7 gap (alarms)
    assert_eq!(band(915_000_000, 125_000), None);

    let budgets: Vec<Option<u64>> = accountant
        .bands()
        .map(|band| band.budget_us(ONE_HOUR_US))
        .collect();
    assert_eq!(
        budgets,
        vec![
            Some(3_600_000),
            Some(36_000_000),
            Some(36_000_000),
            Some(3_600_000),
            Some(360_000_000),
            Some(36_000_000)
        ]
    );
}

#[test]
fn region_bands() {
    let eu = Region::new(RegionName::Eu868, RegionOptions::default());
    assert_eq!(
        DutyCycleAccountant::for_region(&eu, DutyCycleConfig::default())
            .bands()
            .count(),
        6
    );
    let us = regulatory_bands(RegionName::Us915, &RegionOptions::default());
    assert_eq!(us.len(), 1);
    assert_eq!(us[0].duty_cycle_ppm, None);
    let as923 = regulatory_bands(
        RegionName::As923_3,
        &RegionOptions {
            downlink_dwell_time_400ms: true,
            ..RegionOptions::default()
        },
    );
    assert_eq!(as923[0].dwell_time.map(|dwell| dwell.max_us), Some(400_000));
    assert!(as923[0].contains(916_600_000, 125_000));
}

#[test]
fn other_traffic_stops_at_its_share_and_waits_for_the_window_to_slide() {
    // 1 % band: 36 s/h; 20 % reserved → other traffic may use 28.8 s/h.
    let mut accountant = eu868_accountant(20);
    accountant
        .record(&request(868_100_000, 0, 28_800_000, TrafficClass::Other))
        .expect("fits the other share exactly");
    let next = request(868_300_000, 100 * SECOND, SECOND, TrafficClass::Other);
    // The window [1 s, 3601 s) holds 27.8 s of the first frame plus this one: the
    // earliest start is 3600 s.
    assert_eq!(
        accountant.can_transmit(&next),
        Err(DutyCycleError::WaitUntil {
            band: "868.0-868.6 MHz",
            earliest_start: MonotonicTime::from_micros(3_600 * SECOND)
        })
    );
    assert_eq!(
        accountant.earliest_start(&next),
        Ok(MonotonicTime::from_micros(3_600 * SECOND))
    );
    let later = request(868_300_000, 3_600 * SECOND, SECOND, TrafficClass::Other);
    assert_eq!(accountant.can_transmit(&later), Ok(()));
    let one_before = request(868_300_000, 3_600 * SECOND - 1, SECOND, TrafficClass::Other);
    assert!(accountant.can_transmit(&one_before).is_err());

    // Class A answers still have the reserved 7.2 s.
    accountant
        .record(&request(
            868_500_000,
            200 * SECOND,
            7_200_000,
            TrafficClass::ClassA,
        ))
        .expect("the reserved share is available to Class A");
    let more = request(868_500_000, 300 * SECOND, 1, TrafficClass::ClassA);
    assert!(matches!(
        accountant.can_transmit(&more),
        Err(DutyCycleError::WaitUntil { .. })
    ));

    // Another band is independent.
    assert_eq!(
        accountant.can_transmit(&request(
            869_525_000,
            100 * SECOND,
            10 * SECOND,
            TrafficClass::Other
        )),
        Ok(())
    );

    let usage = accountant.usage(MonotonicTime::from_micros(3_600 * SECOND));
    let band = usage
        .iter()
        .find(|usage| usage.band.name == "868.0-868.6 MHz")
        .expect("band");
    assert_eq!(band.used_us, 36_000_000);
    assert_eq!(band.used_by_other_us, 28_800_000);
    assert_eq!(band.budget_us, Some(36_000_000));
    assert_eq!(band.other_limit_us, Some(28_800_000));
}

#[test]
fn class_a_may_use_the_whole_budget_but_not_more() {
    let mut accountant = eu868_accountant(20);
    accountant
        .record(&request(868_100_000, 0, 36 * SECOND, TrafficClass::ClassA))
        .expect("the whole budget");
    // Other traffic counts Class A airtime in the total: nothing left in this hour.
    assert!(matches!(
        accountant.can_transmit(&request(
            868_100_000,
            60 * SECOND,
            SECOND,
            TrafficClass::Other
        )),
        Err(DutyCycleError::WaitUntil { .. })
    ));
    assert_eq!(
        accountant.can_transmit(&request(868_100_000, 0, 37 * SECOND, TrafficClass::ClassA)),
        Err(DutyCycleError::Refused(Refusal::ExceedsBudget {
            band: "868.0-868.6 MHz",
            airtime_us: 37 * SECOND,
            limit_us: 36 * SECOND
        }))
    );
    assert!(matches!(
        accountant.can_transmit(&request(
            868_100_000,
            10 * ONE_HOUR_US,
            30 * SECOND,
            TrafficClass::Other
        )),
        Err(DutyCycleError::Refused(Refusal::ExceedsBudget {
            limit_us: 28_800_000,
            ..
        }))
    ));
}

#[test]
fn overlapping_transmissions_wait_for_the_first() {
    let mut accountant = eu868_accountant(0);
    accountant
        .record(&request(
            869_525_000,
            10 * SECOND,
            2 * SECOND,
            TrafficClass::ClassA,
        ))
        .expect("fits");
    assert_eq!(
        accountant.can_transmit(&request(
            869_525_000,
            11 * SECOND,
            SECOND,
            TrafficClass::Other
        )),
        Err(DutyCycleError::WaitUntil {
            band: "869.4-869.65 MHz",
            earliest_start: MonotonicTime::from_micros(12 * SECOND)
        })
    );
    // Ending exactly where it starts is fine.
    assert_eq!(
        accountant.can_transmit(&request(
            869_525_000,
            9 * SECOND,
            SECOND,
            TrafficClass::Other
        )),
        Ok(())
    );
}

#[test]
fn cancelled_transmissions_free_their_airtime() {
    let mut accountant = eu868_accountant(0);
    let id = accountant
        .record(&request(868_900_000, 0, 3_600_000, TrafficClass::Other))
        .expect("0.1 % band: 3.6 s");
    let next = request(868_900_000, 10 * SECOND, 100_000, TrafficClass::Other);
    assert!(accountant.can_transmit(&next).is_err());
    assert!(accountant.cancel(id));
    assert!(!accountant.cancel(id));
    assert_eq!(accountant.can_transmit(&next), Ok(()));
}

#[test]
fn refusals() {
    let mut accountant = eu868_accountant(20);
    assert_eq!(
        accountant.can_transmit(&request(868_650_000, 0, 1_000, TrafficClass::Other)),
        Err(DutyCycleError::Refused(Refusal::OutsideBands {
            frequency_hz: 868_650_000,
            bandwidth_hz: 125_000
        }))
    );
    assert_eq!(
        accountant.can_transmit(&request(868_100_000, 0, 0, TrafficClass::Other)),
        Err(DutyCycleError::Refused(Refusal::EmptyTransmission))
    );
    // After recording at hour 5, hour 1 can no longer be checked.
    accountant
        .record(&request(
            869_525_000,
            5 * ONE_HOUR_US,
            SECOND,
            TrafficClass::Other,
        ))
        .expect("fits");
    assert!(matches!(
        accountant.can_transmit(&request(
            869_525_000,
            ONE_HOUR_US,
            SECOND,
            TrafficClass::Other
        )),
        Err(DutyCycleError::Refused(Refusal::TooFarInPast { .. }))
    ));
    assert_eq!(
        accountant.can_transmit(&request(
            869_525_000,
            4 * ONE_HOUR_US,
            SECOND,
            TrafficClass::Other
        )),
        Ok(())
    );
}

#[test]
fn dwell_time_limits() {
    let as923 = DutyCycleAccountant::new(bands::as923_bands(true), DutyCycleConfig::default());
    let mut long = request(923_200_000, 0, 500_000, TrafficClass::ClassA);
    assert_eq!(
        as923.can_transmit(&long),
        Err(DutyCycleError::Refused(Refusal::DwellTimeExceeded {
            band: "915-928 MHz",
            airtime_us: 500_000,
            max_us: 400_000
        }))
    );
    long.airtime_us = 400_000;
    assert_eq!(as923.can_transmit(&long), Ok(()));

    let mut us915 = DutyCycleAccountant::new(bands::us915_bands(), DutyCycleConfig::default());
    // 500 kHz downlinks: no dwell time, no duty cycle.
    let mut wide = request(923_300_000, 0, 3 * SECOND, TrafficClass::Other);
    wide.bandwidth_hz = 500_000;
    for i in 0..100 {
        wide.start = MonotonicTime::from_micros(i * 3 * SECOND);
        us915.record(&wide).expect("no duty cycle in US915");
    }
    let narrow = request(923_300_000, ONE_HOUR_US, 500_000, TrafficClass::Other);
    assert!(matches!(
        us915.can_transmit(&narrow),
        Err(DutyCycleError::Refused(Refusal::DwellTimeExceeded { .. }))
    ));
}

// ---------------------------------------------------------------------------------------
// Property test
// ---------------------------------------------------------------------------------------

/// Channels used by the property test: 1 %, 0.1 %, 10 % and 0.1 % bands.
const CHANNELS: [u32; 4] = [868_100_000, 868_900_000, 869_525_000, 863_500_000];

#[derive(Debug, Clone)]
enum Step {
    /// Move the stream's clock by `advance_ms`, then ask `back_ms` before it (streams
    /// mostly move forward; some requests are for earlier times).
    Transmit {
        advance_ms: u64,
        back_ms: u64,
        channel: usize,
        airtime_us: u64,
        class_a: bool,
        retry_at_wait_until: bool,
    },
    CancelOne(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (
            0u64..60_000,
            prop_oneof![3 => Just(0u64), 1 => 0u64..1_800_000],
            0usize..CHANNELS.len(),
            prop_oneof![1_000u64..100_000, 100_000u64..3_000_000],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(advance_ms, back_ms, channel, airtime_us, class_a, retry_at_wait_until)| Step::Transmit {
                advance_ms,
                back_ms,
                channel,
                airtime_us,
                class_a,
                retry_at_wait_until,
            }),
        1 => any::<usize>().prop_map(Step::CancelOne),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Accepted {
    band: usize,
    start: u64,
    end: u64,
    class_a: bool,
}

/// Airtime of `transmissions` inside `[w, w + T)`, summed naively.
fn usage(
    transmissions: &[Accepted],
    window_start: i128,
    filter: impl Fn(&Accepted) -> bool,
) -> i128 {
    let window_end = window_start + i128::from(ONE_HOUR_US);
    transmissions
        .iter()
        .filter(|t| filter(t))
        .map(|t| {
            let start = i128::from(t.start).max(window_start);
            let end = i128::from(t.end).min(window_end);
            (end - start).max(0)
        })
        .sum()
}

/// Every window start where the usage function may peak.
fn breakpoints(transmissions: &[Accepted]) -> Vec<i128> {
    let hour = i128::from(ONE_HOUR_US);
    transmissions
        .iter()
        .flat_map(|t| {
            let (start, end) = (i128::from(t.start), i128::from(t.end));
            [start, end, start - hour, end - hour]
        })
        .collect()
}

fn band_index(frequency_hz: u32) -> usize {
    bands::eu868_bands()
        .iter()
        .position(|band| band.contains(frequency_hz, 125_000))
        .unwrap_or(usize::MAX)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failures print their minimal input; nothing is written next to the tests.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn never_exceeds_any_window_and_class_a_keeps_its_share(
        reserved_percent in 0u8..=100,
        steps in proptest::collection::vec(step(), 1..240),
    ) {
        let mut accountant = eu868_accountant(reserved_percent);
        let eu_bands = bands::eu868_bands();
        let mut accepted: Vec<(Accepted, fuota_agent::lorawan::duty_cycle::RecordId)> = Vec::new();
        let mut clock_ms = 0u64;

        for step in steps {
            let (advance_ms, back_ms, channel, airtime_us, class_a, retry) = match step {
                Step::CancelOne(pick) => {
                    if !accepted.is_empty() {
                        let index = pick % accepted.len();
                        // False only for a transmission old enough to be forgotten: it
                        // then stays in the checked set.
                        if accountant.cancel(accepted[index].1) {
                            accepted.remove(index);
                        }
                    }
                    continue;
                }
                Step::Transmit { advance_ms, back_ms, channel, airtime_us, class_a, retry_at_wait_until } =>
                    (advance_ms, back_ms, channel, airtime_us, class_a, retry_at_wait_until),
            };
            clock_ms += advance_ms;
            let start_ms = clock_ms.saturating_sub(back_ms);
            let frequency_hz = CHANNELS[channel];
            let band = band_index(frequency_hz);
            let budget = eu_bands[band].budget_us(ONE_HOUR_US).unwrap_or(0);
            let reserve = budget * u64::from(reserved_percent) / 100;
            let class = if class_a { TrafficClass::ClassA } else { TrafficClass::Other };
            let start = start_ms * 1_000;
            let candidate = request(frequency_hz, start, airtime_us, class);

            // Precondition of the reserve guarantee, checked by brute force: a Class A
            // transmission that overlaps nothing and keeps Class A's own usage within the
            // reserve in every window must be accepted.
            let current: Vec<Accepted> = accepted
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| a.band == band)
                .collect();
            let new = Accepted { band, start, end: start + airtime_us, class_a };
            let overlaps = current.iter().any(|a| a.start < new.end && new.start < a.end);
            let mut with_new = current.clone();
            with_new.push(new);
            let class_a_fits_reserve = class_a
                && !overlaps
                && breakpoints(&with_new)
                    .into_iter()
                    .all(|w| usage(&with_new, w, |t| t.class_a) <= i128::from(reserve));

            let result = accountant.record(&candidate);
            match &result {
                Ok(id) => accepted.push((new, *id)),
                Err(DutyCycleError::WaitUntil { earliest_start, .. }) => {
                    prop_assert!(*earliest_start > candidate.start);
                    // Minimal: one microsecond earlier is refused.
                    let mut before = candidate;
                    before.start = earliest_start.saturating_sub_micros(1);
                    prop_assert!(accountant.can_transmit(&before).is_err());
                    if retry {
                        let mut later = candidate;
                        later.start = *earliest_start;
                        let id = accountant.record(&later);
                        prop_assert!(id.is_ok(), "WaitUntil start refused: {:?}", id);
                        if let Ok(id) = id {
                            let start = earliest_start.as_micros();
                            accepted.push((Accepted { band, start, end: start + airtime_us, class_a }, id));
                        }
                    }
                }
                Err(DutyCycleError::Refused(_)) => {}
            }
            if class_a_fits_reserve {
                prop_assert!(
                    matches!(result, Ok(_) | Err(DutyCycleError::Refused(Refusal::TooFarInPast { .. }))),
                    "Class A within the reserve refused: {:?}", result
                );
            }
        }

        // Independent check of every window of every band.
        for (band, definition) in eu_bands.iter().enumerate() {
            let Some(budget) = definition.budget_us(ONE_HOUR_US) else { continue };
            let other_limit = budget - budget * u64::from(reserved_percent) / 100;
            let in_band: Vec<Accepted> = accepted
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| a.band == band)
                .collect();
            for (i, a) in in_band.iter().enumerate() {
                for b in &in_band[i + 1..] {
                    prop_assert!(a.end <= b.start || b.end <= a.start, "overlap in band {}", definition.name);
                }
            }
            for w in breakpoints(&in_band) {
                let total = usage(&in_band, w, |_| true);
                let other = usage(&in_band, w, |t| !t.class_a);
                prop_assert!(total <= i128::from(budget),
                    "band {} window at {} µs holds {} µs > {}", definition.name, w, total, budget);
                prop_assert!(other <= i128::from(other_limit),
                    "band {} window at {} µs holds {} µs of other traffic > {}", definition.name, w, other, other_limit);
            }
        }
    }
}
