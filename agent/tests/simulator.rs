//! Whole campaigns in the deterministic simulator: the agent's service loop, network
//! server and campaign engine over the simulated packet forwarder, nodes running the
//! real node core and bootloader on simulated flash.

use std::process::Command;

use fuota_agent::campaign::DeviceStatus;
use fuota_agent::simulator::{simulate, SimulationConfig, SimulationError};

fn small(devices: usize, loss_percent: Vec<u8>, seed: u64) -> SimulationConfig {
    SimulationConfig {
        devices,
        loss_percent,
        image_size: 3 * 1024,
        seed,
        ..SimulationConfig::default()
    }
}

#[test]
fn every_node_is_updated_and_confirmed_across_loss_rates() {
    let report = simulate(&small(6, vec![0, 10, 30], 3), &mut |_| {}).unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(
        report.results.get(&DeviceStatus::Successful),
        Some(&6),
        "{report:?}"
    );
    // Every node runs the new image, confirmed, and the bootloader starts it again.
    assert_eq!(report.nodes_confirmed, 6);
    assert!(report.unsuccessful.is_empty());
    // The multicast frames respected the band's duty cycle: the campaign took at least
    // the floor their airtime imposes.
    assert!(report.multicast_frames >= u64::from(report.fragments));
    assert!(
        report.duration_s >= report.duty_cycle_floor_s,
        "{} s < floor {} s",
        report.duration_s,
        report.duty_cycle_floor_s
    );
}

#[test]
fn the_same_campaign_runs_over_the_real_udp_transport_on_loopback() {
    // The agent's production Semtech UDP transport, the simulated gateway behind a real
    // socket: every uplink a PUSH_DATA, every downlink a PULL_RESP and its TX_ACK.
    let in_memory = simulate(&small(8, vec![0, 10, 20], 11), &mut |_| {}).unwrap();
    let over_udp = simulate(
        &SimulationConfig {
            udp: true,
            ..small(8, vec![0, 10, 20], 11)
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(over_udp.finished, "{over_udp:?}");
    assert_eq!(
        over_udp.results.get(&DeviceStatus::Successful),
        Some(&8),
        "{over_udp:?}"
    );
    assert_eq!(over_udp.nodes_confirmed, 8);
    assert!(over_udp.multicast_frames >= u64::from(over_udp.fragments));
    // The link is transparent: the same decisions as in memory.
    assert_eq!(over_udp.results, in_memory.results);
    assert_eq!(
        over_udp.downlinks, in_memory.downlinks,
        "{over_udp:?}\n{in_memory:?}"
    );
}

#[test]
fn a_small_image_reaches_every_node_through_bursty_loss() {
    // Losses in bursts of 6 frames on average (up to 30 % in the long run): the repair
    // rounds, sized from what the nodes report missing, still complete every block.
    let bursty = simulate(
        &SimulationConfig {
            burst_length: Some(6),
            ..small(8, vec![10, 20, 30], 2)
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        bursty.results.get(&DeviceStatus::Successful),
        Some(&8),
        "{bursty:?}"
    );
    assert_eq!(bursty.nodes_confirmed, 8);
    // Bursts cost more air than the same loss spread out.
    let independent = simulate(&small(8, vec![10, 20, 30], 2), &mut |_| {}).unwrap();
    assert!(
        bursty.multicast_frames > independent.multicast_frames,
        "bursty {} vs independent {}",
        bursty.multicast_frames,
        independent.multicast_frames
    );
}

#[test]
fn campaigns_run_in_us915_and_as923_as_in_eu868() {
    use fuota_agent::lorawan::region::RegionName;
    for region in [RegionName::Us915, RegionName::As923_2] {
        let report = simulate(
            &SimulationConfig {
                region,
                ..small(6, vec![0, 10], 5)
            },
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            report.results.get(&DeviceStatus::Successful),
            Some(&6),
            "{region:?}: {report:?}"
        );
        assert_eq!(report.nodes_confirmed, 6, "{region:?}");
        // Each region's own Class C channel: US915 at DR8 (SF12, 500 kHz), AS923 DR2.
        let expected_dr = if region == RegionName::Us915 { 8 } else { 2 };
        assert_eq!(report.data_rate, expected_dr, "{region:?}");
    }
}

#[test]
fn a_clock_step_mid_campaign_does_not_move_the_sessions() {
    // NTP corrects the gateway's clock by an hour, forwards or backwards, during the
    // setup and during the Class C session: the campaign runs as without the step.
    let mut config = small(6, vec![5], 21);
    config.data_rate = Some(3);
    let undisturbed = simulate(&config, &mut |_| {}).unwrap();
    assert_eq!(undisturbed.clock_steps, 0);
    for step in [(300, 3_600), (300, -3_600), (900, 3_600), (900, -600)] {
        config.clock_step = Some(step);
        let report = simulate(&config, &mut |_| {}).unwrap();
        assert_eq!(report.clock_steps, 1, "the step {step:?} was noticed");
        assert!(report.finished, "{step:?}: {report:?}");
        assert_eq!(
            report.results.get(&DeviceStatus::Successful),
            Some(&6),
            "{step:?}: {:?}",
            report.unsuccessful
        );
        assert_eq!(report.nodes_confirmed, 6);
    }
}

#[test]
fn an_agent_restarted_after_a_clock_step_keeps_the_sessions_the_devices_wait_for() {
    // NTP steps the gateway's clock by ten minutes, forwards or backwards, and the agent
    // is killed and started again before its campaign is over: the new process reads
    // the stepped clock, but the campaign goes on on the timeline the devices were
    // synchronised to and given their Class C sessions on. In this run the devices get
    // their first session's time at about 210 s; it starts at about 1090 s, its frames
    // go until about 1115 s, and the repair round's session is set at about 1290 s for
    // about 2075 s. The agent restarts while the devices wait for a session, and in the
    // middle of the broadcast.
    let mut config = small(6, vec![5], 21);
    config.data_rate = Some(3);
    let undisturbed = simulate(&config, &mut |_| {}).unwrap();
    assert_eq!(undisturbed.reused_fcnts, 0);
    for (step, restarts) in [
        ((300, 600), vec![420]),
        ((300, -600), vec![420, 1_100]),
        ((600, 600), vec![900, 1_100, 1_500]),
        ((600, -600), vec![900, 1_500]),
    ] {
        // The same restarts without the step: a restart in the broadcast loses the
        // frames in flight and may cost a session of its own.
        config.clock_step = None;
        config.agent_restarts = restarts.clone();
        let restarted = simulate(&config, &mut |_| {}).unwrap();
        config.clock_step = Some(step);
        let report = simulate(&config, &mut |_| {}).unwrap();
        let case = format!("step {step:?}, restarts at {restarts:?}");
        assert_eq!(report.agent_restarts, restarts.len() as u32, "{case}");
        assert_eq!(report.clock_steps, 1, "{case}: the step was noticed");
        assert!(report.finished, "{case}: {report:?}");
        assert_eq!(
            report.results.get(&DeviceStatus::Successful),
            Some(&6),
            "{case}: {:?}",
            report.unsuccessful
        );
        assert_eq!(report.nodes_confirmed, 6, "{case}");
        assert_eq!(report.reused_fcnts, 0, "{case}");
        // The devices heard the sessions they were given: no session more than the
        // same restarts needed without the step (and restarts while the devices wait
        // cost none).
        assert_eq!(
            (report.sessions, report.repair_rounds),
            (restarted.sessions, restarted.repair_rounds),
            "{case}"
        );
        if !restarts.contains(&1_100) {
            assert_eq!(report.sessions, undisturbed.sessions, "{case}");
        }
    }
}

#[test]
fn a_second_campaign_sizes_its_first_pass_from_the_loss_the_devices_showed() {
    // The same devices, a second campaign: at 20 % loss (more than the 10 % expected)
    // the first one measured it and the second one's first pass is longer than the
    // plan without history; at 0 % nothing was measured and the plan is the same.
    let mut lossy = small(8, vec![20], 5);
    lossy.data_rate = Some(5);
    let first = simulate(&lossy, &mut |_| {}).unwrap();
    assert!(first.previous_campaigns.is_empty());
    assert!(first.repair_rounds >= 1, "{first:?}");
    lossy.previous_campaigns = 1;
    let second = simulate(&lossy, &mut |_| {}).unwrap();
    let [earlier] = second.previous_campaigns.as_slice() else {
        panic!("one earlier campaign: {:?}", second.previous_campaigns);
    };
    assert_eq!(earlier.successful, 8);
    assert_eq!(earlier.first_pass_coded, first.first_pass_coded);
    assert_eq!(second.fragments, first.fragments);
    assert!(
        second.first_pass_coded > first.first_pass_coded,
        "sized from the history: {} coded, without: {}",
        second.first_pass_coded,
        first.first_pass_coded
    );
    assert!(second.finished, "{second:?}");
    assert_eq!(
        second.results.get(&DeviceStatus::Successful),
        Some(&8),
        "{:?}",
        second.unsuccessful
    );
    assert_eq!(second.nodes_confirmed, 8);
    assert_eq!(second.reused_fcnts, 0);

    let mut clean = small(8, vec![0], 5);
    clean.data_rate = Some(5);
    let without = simulate(&clean, &mut |_| {}).unwrap();
    clean.previous_campaigns = 1;
    let with = simulate(&clean, &mut |_| {}).unwrap();
    assert_eq!(with.first_pass_coded, without.first_pass_coded);
    assert_eq!(
        with.results.get(&DeviceStatus::Successful),
        Some(&8),
        "{:?}",
        with.unsuccessful
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let config = small(4, vec![5, 20], 11);
    let first = simulate(&config, &mut |_| {}).unwrap();
    let second = simulate(&config, &mut |_| {}).unwrap();
    assert_eq!(first, second);
    let other = simulate(&small(4, vec![5, 20], 12), &mut |_| {}).unwrap();
    assert_ne!(
        (first.uplinks, first.duration_s),
        (other.uplinks, other.duration_s),
        "another seed, another run"
    );
}

#[test]
fn impossible_settings_are_refused_with_the_reason() {
    let error = simulate(&small(0, vec![10], 1), &mut |_| {}).unwrap_err();
    assert!(matches!(error, SimulationError::Invalid(_)));
    assert!(error.to_string().contains("--devices 0"), "{error}");
    let error = simulate(&small(2, vec![99], 1), &mut |_| {}).unwrap_err();
    assert!(error.to_string().contains("--loss"), "{error}");
    let mut too_big = small(2, vec![10], 1);
    too_big.image_size = 200 * 1024;
    let error = simulate(&too_big, &mut |_| {}).unwrap_err();
    assert!(error.to_string().contains("--image-size"), "{error}");
    let mut endless_bursts = small(2, vec![10], 1);
    endless_bursts.burst_length = Some(0);
    let error = simulate(&endless_bursts, &mut |_| {}).unwrap_err();
    assert!(error.to_string().contains("--burst-length"), "{error}");
}

#[test]
fn simulate_prints_the_report_as_json() {
    let output = Command::new(env!("CARGO_BIN_EXE_fuota-agent"))
        .args([
            "simulate",
            "--devices",
            "2",
            "--loss",
            "0",
            "--image-size",
            "2048",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["finished"], true);
    assert_eq!(report["results"]["successful"], 2);
    assert_eq!(report["nodes_confirmed"], 2);
    assert!(report["multicast_airtime_s"].as_f64().unwrap() > 0.0);

    let refused = Command::new(env!("CARGO_BIN_EXE_fuota-agent"))
        .args(["simulate", "--region", "EU433"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--region EU433") && stderr.contains("US915"),
        "{stderr}"
    );
}

#[test]
fn a_campaign_created_by_a_command_from_upstream_runs_to_the_end() {
    // The fleet backend's create_campaign message, as the MQTT subscriber hands it to
    // the command processor: validated, applied through the core loop, answered.
    let command = r#"{
        "id": "backend-7f3a",
        "campaign": {
            "name": "from the fleet backend",
            "image_sha256": "{image_sha256}",
            "targets": { "kind": "hardware_version", "hardware_version": "HARDWARE" },
            "delivery": "multicast"
        },
        "start": true
    }"#
    .replace("HARDWARE", fuota_agent::simulator::HARDWARE_NAME);
    let report = simulate(
        &SimulationConfig {
            campaign_command: Some(command),
            ..small(6, vec![0, 10], 5)
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(
        report.results.get(&DeviceStatus::Successful),
        Some(&6),
        "{report:?}"
    );
    assert_eq!(report.nodes_confirmed, 6);

    // A command that cannot be applied stops the simulation with the agent's answer.
    let wrong = r#"{"id":"backend-7f3b","campaign":{"name":"x","image_sha256":"00","targets":{"kind":"tag","key":"site","value":"none"}},"start":true}"#;
    let refused = simulate(
        &SimulationConfig {
            campaign_command: Some(wrong.into()),
            ..small(2, vec![0], 5)
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(refused, SimulationError::Invalid(_)), "{refused}");
    assert!(refused.to_string().contains("\"ok\":false"), "{refused}");
}
