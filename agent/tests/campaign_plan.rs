//! Campaign planning against the region tables and the airtime model: fragment sizes
//! from the data rate, redundancy, duty-cycle pacing, Class C session length, and
//! refusals with the figures that explain them.

use fuota_agent::campaign::plan::{
    DATA_FRAGMENT_FRAME_OVERHEAD, INTER_FRAME_GUARD_US, MAX_FRAGMENT_INDEX,
};
use fuota_agent::campaign::{plan, repair_round_size, PlanError, PlanInputs, Redundancy};
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
    // Adaptive for 10 % loss: (429 + 8) / 0.9 = 485.6 -> 486 frames.
    assert_eq!(plan.first_pass_frames(), 486);
    assert_eq!(plan.coded_fragments, 57);
    // Class C default: 869.525 MHz, the 10 % band.
    assert_eq!(plan.frequency_hz, 869_525_000);
    assert_eq!(plan.duty_cycle_ppm, Some(100_000));
    // 10 % of an hour, 80 % of it for multicast.
    assert_eq!(plan.multicast_budget_per_window_us, Some(288_000_000));

    let airtime =
        lorawan_downlink_airtime(&plan.modulation, 239 + DATA_FRAGMENT_FRAME_OVERHEAD).unwrap();
    assert_eq!(plan.frame_len, 255);
    assert_eq!(plan.frame_airtime_us, airtime.time_on_air_us);
    assert_eq!(plan.first_pass_airtime_us, 486 * airtime.time_on_air_us);
    // Within one hour's budget: frames go back to back.
    assert!(plan.first_pass_airtime_us < 288_000_000);
    assert_eq!(
        plan.first_pass_duration_us,
        486 * (airtime.concentrator_occupancy_us + INTER_FRAME_GUARD_US)
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
fn repair_rounds_cover_the_worst_device_with_margin() {
    assert_eq!(repair_round_size(&[], 10), 0);
    assert_eq!(repair_round_size(&[0, 0], 10), 0);
    // 20 missing + 8 margin at 10 % loss: 28 / 0.9 = 31.1 -> 32.
    assert_eq!(repair_round_size(&[3, 20, 7], 10), 32);
    assert_eq!(repair_round_size(&[20], 0), 28);
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
                prop_assert!(kept >= (u64::from(plan.fragments) + 8) * 100);
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
