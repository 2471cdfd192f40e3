//! Campaign planning against the region tables and the airtime model: fragment sizes
//! from the data rate, redundancy, duty-cycle pacing, Class C session length, and
//! refusals with the figures that explain them.

use fuota_agent::campaign::plan::{
    DATA_FRAGMENT_FRAME_OVERHEAD, INTER_FRAME_GUARD_US, MAX_FRAGMENT_INDEX,
};
use fuota_agent::campaign::{
    base_repair_margin, first_pass_loss, frames_to_deliver, loss_from_history, measured_loss, plan,
    repair_margin, repair_round_size, PlanError, PlanInputs, ReceptionRecord, Redundancy,
    RepairNeed,
};
use fuota_agent::lorawan::airtime::lorawan_downlink_airtime;
use fuota_agent::lorawan::duty_cycle::ONE_HOUR_US;
use fuota_agent::lorawan::region::{Region, RegionName, RegionOptions};
use proptest::prelude::*;

fn eu868() -> Region {
    Region::new(RegionName::Eu868, RegionOptions::default())
}

fn us915() -> Region {
    Region::new(RegionName::Us915, RegionOptions::default())
}

#[test]
fn a_100_kib_image_at_eu868_dr5_fits_one_short_session() {
    let region = eu868();
    let plan = plan(&region, &PlanInputs::new(100 * 1024, 5)).unwrap();
    // DR5: M = 250, N = 242, fragment = N - 3.
    assert_eq!(plan.fragment_size, 239);
    assert_eq!(plan.fragment_size, region.max_data_fragment(5).unwrap());
    assert_eq!(plan.fragments, 429);
    assert_eq!(plan.padding, 429 * 239 - 100 * 1024);
    // Adaptive for 10 % loss: (429 + 2) / 0.9 = 478.9 -> 479 frames.
    assert_eq!(plan.first_pass_frames(), 479);
    assert_eq!(plan.coded_fragments, 50);
    // Class C default: 869.525 MHz, the 10 % band.
    assert_eq!(plan.frequency_hz, 869_525_000);
    assert_eq!(plan.duty_cycle_ppm, Some(100_000));
    // 10 % of an hour, 80 % of it for multicast.
    assert_eq!(plan.multicast_budget_per_window_us, Some(288_000_000));

    let airtime =
        lorawan_downlink_airtime(&plan.modulation, 239 + DATA_FRAGMENT_FRAME_OVERHEAD).unwrap();
    assert_eq!(plan.frame_len, 255);
    assert_eq!(plan.frame_airtime_us, airtime.time_on_air_us);
    assert_eq!(plan.first_pass_airtime_us, 479 * airtime.time_on_air_us);
    // Within one hour's budget: frames go back to back.
    assert!(plan.first_pass_airtime_us < 288_000_000);
    assert_eq!(
        plan.first_pass_duration_us,
        479 * (airtime.concentrator_occupancy_us + INTER_FRAME_GUARD_US)
    );
    // The session covers the first pass with slack, as a power of two seconds.
    let session_us = plan.session_timeout_s() * 1_000_000;
    assert!(session_us >= plan.first_pass_duration_us * 3 / 2);
    assert!(session_us / 2 < plan.first_pass_duration_us * 3 / 2 + 1_000_000);
    assert_eq!(plan.sessions_needed, 1);
}

#[test]
fn a_slow_data_rate_is_paced_by_the_duty_cycle_across_several_sessions() {
    let region = eu868();
    let plan = plan(&region, &PlanInputs::new(100 * 1024, 0)).unwrap();
    assert_eq!(plan.fragment_size, 48); // DR0: M = 59, N = 51
    assert_eq!(plan.fragments, 2134);
    let budget = plan.multicast_budget_per_window_us.unwrap();
    assert!(plan.first_pass_airtime_us > 10 * budget);
    // At least one full window per budget's worth of airtime.
    let windows = plan.first_pass_airtime_us / budget;
    assert!(plan.first_pass_duration_us >= windows * ONE_HOUR_US);
    assert!(plan.first_pass_duration_us <= (windows + 1) * ONE_HOUR_US);
    assert_eq!(plan.session_timeout_exponent, 15);
    assert!(plan.sessions_needed >= 2, "{plan:?}");
}

#[test]
fn us915_has_no_duty_cycle_so_frames_go_back_to_back() {
    let region = us915();
    let plan = plan(&region, &PlanInputs::new(20_000, 8)).unwrap();
    assert_eq!(plan.multicast_budget_per_window_us, None);
    assert_eq!(
        plan.first_pass_duration_us,
        u64::from(plan.first_pass_frames()) * plan.frame_slot_us
    );
}

#[test]
fn impossible_campaigns_are_refused_with_their_figures() {
    let region = eu868();
    let error = plan(&region, &PlanInputs::new(1024 * 1024, 0)).unwrap_err();
    let PlanError::TooManyFragments {
        fragments, total, ..
    } = error
    else {
        panic!("expected TooManyFragments, got {error:?}");
    };
    assert_eq!(fragments, 21_846);
    assert!(total > MAX_FRAGMENT_INDEX);
    let message = error.to_string();
    assert!(message.contains("21846 fragments"), "{message}");
    assert!(message.contains("16383"), "{message}");

    let mut inputs = PlanInputs::new(10_000, 5);
    inputs.fragment_size = Some(240);
    assert_eq!(
        plan(&region, &inputs),
        Err(PlanError::FragmentTooLarge {
            requested: 240,
            max: 239,
            data_rate: 5
        })
    );
    inputs.fragment_size = Some(0);
    assert_eq!(plan(&region, &inputs), Err(PlanError::FragmentTooSmall));
    assert_eq!(
        plan(&region, &PlanInputs::new(0, 5)),
        Err(PlanError::EmptyImage)
    );
    assert!(matches!(
        plan(&region, &PlanInputs::new(100, 14)),
        Err(PlanError::Region(_))
    ));

    let mut inputs = PlanInputs::new(10_000, 5);
    inputs.duty_cycle.class_a_reserved_percent = 100;
    assert!(matches!(
        plan(&region, &inputs),
        Err(PlanError::NoMulticastBudget { .. })
    ));
    inputs.duty_cycle.class_a_reserved_percent = 20;
    inputs.redundancy = Redundancy::Adaptive {
        expected_loss_percent: 95,
    };
    assert!(matches!(
        plan(&region, &inputs),
        Err(PlanError::InvalidRedundancy(_))
    ));
}

#[test]
fn fixed_redundancy_and_explicit_fragment_sizes() {
    let region = eu868();
    let mut inputs = PlanInputs::new(10_000, 5);
    inputs.fragment_size = Some(50);
    inputs.redundancy = Redundancy::Fixed { percent: 20 };
    let plan = plan(&region, &inputs).unwrap();
    assert_eq!(plan.fragments, 200);
    assert_eq!(plan.padding, 0);
    assert_eq!(plan.coded_fragments, 40);
    assert_eq!(plan.frame_len, 66);
}

#[test]
fn repair_rounds_cover_the_worst_device_at_its_own_loss() {
    assert_eq!(repair_round_size(&[], 4), 0);
    let need = |lacking, loss| RepairNeed { lacking, loss };
    // No loss: exactly what it lacks plus the margin.
    assert_eq!(repair_round_size(&[need(20, 0.0)], 4), 24);
    // A device that received M frames without decoding still gets the margin.
    assert_eq!(repair_round_size(&[need(0, 0.0)], 4), 4);
    // 20 + 4 at 10 % loss: 24 / 0.9 = 26.7 on average, 29 for 90 % confidence.
    assert_eq!(repair_round_size(&[need(20, 0.1)], 4), 29);
    // The worst device sets the size: here the one with fewer missing but more loss.
    let lossy = repair_round_size(&[need(10, 0.5)], 4);
    assert_eq!(repair_round_size(&[need(20, 0.1), need(10, 0.5)], 4), lossy);
    assert!(lossy > 29, "{lossy}");
    // Margins: v2 4, v1 8, doubling with each round already made.
    assert_eq!(repair_margin(base_repair_margin(Some(2)), 0), 4);
    assert_eq!(repair_margin(base_repair_margin(None), 2), 16);
    assert_eq!(repair_margin(base_repair_margin(Some(1)), 1), 16);
    assert_eq!(repair_margin(4, 100), 4 << 16);
}

#[test]
fn frames_to_deliver_meets_its_confidence() {
    // Binomial check: with N frames at loss p, P(received >= needed) is at least ~90 %.
    for (needed, loss) in [(10u32, 0.1f64), (30, 0.3), (100, 0.05), (5, 0.5)] {
        let n = frames_to_deliver(needed, loss, 1.2816);
        let mean = frames_to_deliver(needed, loss, 0.0);
        assert!(n >= mean, "{n} < {mean}");
        assert_eq!(mean, (f64::from(needed) / (1.0 - loss)).ceil() as u32);
        // Exact binomial tail.
        let kept = 1.0 - loss;
        let mut below = 0.0;
        let mut term = loss.powi(n as i32); // P(0 received)
        for k in 0..needed {
            below += term;
            term *= f64::from(n - k) / f64::from(k + 1) * kept / loss;
        }
        assert!(
            below < 0.16,
            "needed {needed} at {loss}: N = {n}, P(short) = {below}"
        );
        // And not wasteful: one frame fewer than the mean is short most of the time.
        assert!(
            n < mean + 3 * (needed as f64).sqrt() as u32 + 3,
            "N = {n}, mean {mean}"
        );
    }
    assert_eq!(frames_to_deliver(0, 0.3, 1.28), 0);
    // Losses beyond 90 % are read as 90 %.
    assert_eq!(frames_to_deliver(10, 1.0, 0.0), 100);
}

#[test]
fn a_devices_loss_from_history_uses_only_counts_taken_before_it_decoded() {
    let record = |received, offered, complete| ReceptionRecord {
        received,
        offered,
        complete,
    };
    // No history at all, or too few frames: unknown.
    assert_eq!(loss_from_history(&[]), None);
    assert_eq!(loss_from_history(&[record(9, 10, false)]), None);
    // One campaign: 96 of 120 received, smoothed (24 + 1) / (120 + 2).
    let loss = loss_from_history(&[record(96, 120, false)]).unwrap();
    assert!((loss - 25.0 / 122.0).abs() < 1e-9, "{loss}");
    // Several pool their frames: 10 of 12 and 8 of 10 say little alone, together
    // (4 + 1) / (22 + 2).
    let pooled = loss_from_history(&[record(10, 12, false), record(8, 10, false)]).unwrap();
    assert!((pooled - 5.0 / 24.0).abs() < 1e-9, "{pooled}");
    // A count taken once the block was complete understates the channel (the device
    // stopped counting when it decoded): left out.
    assert_eq!(loss_from_history(&[record(107, 140, true)]), None);
    let with_censored =
        loss_from_history(&[record(107, 140, true), record(96, 120, false)]).unwrap();
    assert_eq!(with_censored, loss);
    // A device that received nothing was not listening (a silent device): unknown, not
    // 100 % loss; and a device never counts more than was sent.
    assert_eq!(loss_from_history(&[record(0, 120, false)]), None);
    assert_eq!(
        loss_from_history(&[record(0, 120, false), record(96, 120, false)]),
        Some(loss)
    );
    let over = loss_from_history(&[record(130, 120, false)]).unwrap();
    assert!(over < 0.01, "{over}");
}

#[test]
fn the_first_pass_is_sized_for_the_targets_measured_losses() {
    // No device with history: the expected loss, as before.
    let none = first_pass_loss(&[None; 8], 0.1);
    assert!(!none.measured);
    assert_eq!(none.loss, 0.1);
    assert_eq!((none.devices_measured, none.devices_expected), (0, 8));
    assert_eq!(none.worst_measured, None);
    assert_eq!(
        none.redundancy(10),
        Redundancy::Adaptive {
            expected_loss_percent: 10
        }
    );
    // Every device measured at about 20 %: the device at the 90th percentile.
    let losses: Vec<Option<f64>> = (0..10).map(|i| Some(0.15 + 0.01 * f64::from(i))).collect();
    let measured = first_pass_loss(&losses, 0.1);
    assert!(measured.measured);
    assert!((measured.loss - 0.23).abs() < 1e-9, "{measured:?}");
    assert!((measured.worst_measured.unwrap() - 0.24).abs() < 1e-9);
    assert_eq!(
        measured.redundancy(10),
        Redundancy::Measured { loss_permille: 230 }
    );
    // One outlier among twenty does not size the pass for everyone; the worst is
    // still reported.
    let mut outlier = vec![Some(0.05); 19];
    outlier.push(Some(0.8));
    let sized = first_pass_loss(&outlier, 0.1);
    assert!(sized.measured);
    assert_eq!(sized.loss, 0.05);
    assert_eq!(sized.worst_measured, Some(0.8));
    // Devices without history count at the expected loss: here most of them, so the
    // expected loss is what the quantile device has.
    let mut mixed = vec![None; 9];
    mixed.push(Some(0.3));
    let partly = first_pass_loss(&mixed, 0.1);
    assert!(!partly.measured, "{partly:?}");
    assert_eq!(partly.loss, 0.1);
    assert_eq!((partly.devices_measured, partly.devices_expected), (1, 9));
    // A small fleet: the quantile is its worst device.
    let small = first_pass_loss(&[None, Some(0.3)], 0.1);
    assert!(small.measured);
    assert_eq!(small.loss, 0.3);
    // Losses beyond what any sizing assumes are capped.
    let capped = first_pass_loss(&[Some(1.0)], 0.1);
    assert_eq!(capped.loss, 0.9);
}

#[test]
fn a_first_pass_sized_from_measured_loss_delivers_with_confidence() {
    let region = eu868();
    let mut inputs = PlanInputs::new(10_000, 5);
    inputs.fragment_size = Some(50);
    let expected = plan(&region, &inputs).unwrap();
    assert_eq!(expected.fragments, 200);
    for (permille, more) in [(200u16, true), (100, true), (20, false)] {
        inputs.redundancy = Redundancy::Measured {
            loss_permille: permille,
        };
        let measured = plan(&region, &inputs).unwrap();
        let frames = measured.first_pass_frames();
        // Enough for M + 2 at that loss with 90 % confidence, and no more.
        assert_eq!(
            frames,
            frames_to_deliver(202, f64::from(permille) / 1000.0, 1.2816)
        );
        assert!(frames > 202);
        // Against the no-history plan (10 % expected, on average): more at 10 % and
        // above (the confidence), fewer at 2 %.
        assert_eq!(frames > expected.first_pass_frames(), more, "{permille}");
    }
    inputs.redundancy = Redundancy::Measured { loss_permille: 901 };
    assert!(matches!(
        plan(&region, &inputs),
        Err(PlanError::InvalidRedundancy(_))
    ));
}

#[test]
fn measured_loss_reads_the_status_counts() {
    // Too few frames offered: nothing measured.
    assert_eq!(measured_loss(Some(5), 10), None);
    assert_eq!(measured_loss(None, 200), None);
    // Nothing received: the device missed the session, its channel is unknown.
    assert_eq!(measured_loss(Some(0), 200), None);
    // 90 of 100: (10 + 1) / 102.
    let loss = measured_loss(Some(90), 100).unwrap();
    assert!((loss - 11.0 / 102.0).abs() < 1e-9, "{loss}");
    // A clean run still reads as a little loss.
    assert!(measured_loss(Some(100), 100).unwrap() > 0.0);
    // A device counting more than was sent reads as no more than the smoothing.
    assert_eq!(measured_loss(Some(150), 100), measured_loss(Some(100), 100));
}

proptest! {
    #[test]
    fn every_plan_is_within_the_protocol_limits(
        image_size in 1usize..400_000,
        data_rate in 0u8..=5,
        loss in 0u8..=60,
    ) {
        let region = eu868();
        let mut inputs = PlanInputs::new(image_size, data_rate);
        inputs.redundancy = Redundancy::Adaptive { expected_loss_percent: loss };
        match plan(&region, &inputs) {
            Ok(plan) => {
                prop_assert!(plan.first_pass_frames() <= MAX_FRAGMENT_INDEX);
                prop_assert!(plan.fragment_size <= 255);
                prop_assert!(plan.padding < plan.fragment_size);
                prop_assert_eq!(
                    plan.fragments as usize * plan.fragment_size,
                    image_size + plan.padding
                );
                // Enough frames for a device at the expected loss to receive M + margin.
                let kept = u64::from(plan.first_pass_frames()) * (100 - u64::from(loss));
                prop_assert!(kept >= (u64::from(plan.fragments) + 2) * 100);
                prop_assert!(plan.session_timeout_exponent <= 15);
                prop_assert!(
                    plan.session_timeout_s() * u64::from(plan.sessions_needed) * 1_000_000
                        >= plan.first_pass_duration_us
                );
            }
            Err(PlanError::TooManyFragments { total, .. }) => {
                prop_assert!(total > MAX_FRAGMENT_INDEX);
            }
            Err(other) => prop_assert!(false, "unexpected refusal: {other}"),
        }
    }
}
