//! Whole multicast campaigns against real device cores on virtual time: every device
//! updated and confirmed after its reboot at 0 %, 10 % and 30 % multicast loss (and
//! lost unicast uplinks and downlinks, which the retries make up for), with the
//! per-device event history, the registry's firmware versions and the group FCnts
//! checked.

mod campaign_support;

use campaign_support::{Behaviour, Fleet, FleetOptions, TARGET};
use fuota_agent::campaign::{
    CampaignSpec, CampaignState, DeliveryChoice, DeviceStatus, ParameterOverrides, Targets,
};
use fuota_agent::clock::WallTime;
use fuota_agent::storage::EventKind;
use lorawan_fuota::codec::PackageVersion;

/// Campaign parameters for a quick virtual run: DR5 on the Class C default channel.
pub fn quick_overrides() -> ParameterOverrides {
    ParameterOverrides {
        data_rate: Some(5),
        session_lead_s: Some(180),
        setup_timeout_s: Some(3_600),
        device_timeout_s: Some(1_800),
        block_ack_delay: Some(0),
        reboot_delay_s: Some(30),
        reboot_grace_s: Some(30),
        max_retries: Some(3),
        ..ParameterOverrides::default()
    }
}

fn campaign(fleet: &Fleet, overrides: ParameterOverrides) -> CampaignSpec {
    CampaignSpec {
        name: "rollout 1.3.0".into(),
        image_sha256: fleet.image_sha256.clone(),
        targets: Targets::HardwareVersion {
            hardware_version: "stm32wl-rev3".into(),
        },
        delivery: DeliveryChoice::Multicast,
        overrides,
    }
}

fn every_device_is_updated(
    loss_percent: u64,
    unicast_loss_percent: u64,
    version: PackageVersion,
    seed: u64,
) {
    let mut fleet = Fleet::new(&FleetOptions {
        devices: vec![(Behaviour::Normal, loss_percent); 6],
        body_size: 12_000,
        package_version: version,
        seed,
        unicast_loss_percent,
    });
    let id = fleet.start_campaign(&campaign(&fleet, quick_overrides()));
    assert!(
        fleet.run_until_finished(id, 6 * 3600),
        "campaign finished within 6 virtual hours"
    );
    let results = fleet.results(id);
    if std::env::var("SIM_TRACE").is_ok() {
        for d in fleet.storage().campaign_devices(id).unwrap() {
            eprintln!(
                "{} {:?} {:?} {:?} retries {}",
                d.dev_eui, d.status, d.step, d.last_error, d.retries
            );
            for e in fleet
                .storage()
                .device_events(d.dev_eui, 300)
                .unwrap()
                .iter()
                .rev()
            {
                eprintln!(
                    "   {} {} {}",
                    e.time_ms - 1_793_491_200_000,
                    e.kind,
                    e.payload
                );
            }
        }
    }
    assert!(
        results.values().all(|s| *s == DeviceStatus::Successful),
        "{results:?}"
    );
    assert_eq!(fleet.finished[&id].get(&DeviceStatus::Successful), Some(&6));
    assert!(fleet
        .running_versions()
        .iter()
        .all(|&v| v == TARGET.to_ts006()));
    assert!(fleet.devices.iter().all(|d| d.reboots == 1));
    assert!(fleet.reused_fcnts.is_empty(), "{:?}", fleet.reused_fcnts);
    if loss_percent > 0 {
        assert!(fleet.devices.iter().any(|d| d.multicast_lost > 0));
    }

    let (duration_s, sent) = (fleet.now_ms / 1000, fleet.multicast_sent);
    let storage = fleet.storage();
    let campaign = storage.campaign(id).unwrap().unwrap();
    assert_eq!(campaign.state, CampaignState::Finished);
    let progress = campaign.progress;
    eprintln!(
        "loss {loss_percent} %: {} uncoded + {} coded first pass, {sent} multicast frames \
         sent, {} sessions, {} repair rounds, {duration_s} s virtual",
        campaign.parameters.fragments,
        campaign.parameters.first_pass_coded,
        progress.sessions,
        progress.repair_rounds
    );
    if unicast_loss_percent > 0 {
        // Lost requests and answers were sent again on the devices' next uplinks.
        let retries: u32 = storage
            .campaign_devices(id)
            .unwrap()
            .iter()
            .map(|d| d.retries)
            .sum();
        assert!(retries > 0, "retries after unicast loss");
    }
    if loss_percent >= 30 {
        // The first pass is sized for 10 % loss: repairs made up the difference, sized
        // from the loss the devices' status answers showed.
        assert!(progress.repair_rounds >= 1, "{progress:?}");
        let (first_pass, rounds): (Vec<_>, Vec<_>) = storage
            .events_of_kind_since(
                EventKind::CampaignRedundancy,
                WallTime::from_unix_seconds(0),
            )
            .unwrap()
            .into_iter()
            .partition(|event| event.payload["first_pass"].is_object());
        assert_eq!(rounds.len() as u32, progress.repair_rounds, "{rounds:?}");
        // The first pass, planned before any campaign of these devices, was sized for
        // the expected loss, and its event says so.
        let [first_pass] = first_pass.as_slice() else {
            panic!("one first-pass event: {first_pass:?}");
        };
        let figures = &first_pass.payload["first_pass"];
        assert_eq!(figures["sized_from"], "expected", "{figures}");
        assert_eq!(figures["devices_without_history"], 6, "{figures}");
        assert_eq!(
            figures["coded_fragments"], campaign.parameters.first_pass_coded,
            "{figures}"
        );
        let first = &rounds[0].payload["repair_round"];
        let worst = first["worst_loss_percent"].as_f64().unwrap();
        assert!(
            (20.0..=60.0).contains(&worst),
            "measured worst loss {worst} %"
        );
        // What a device lacks is at most what it misses (its coded fragments count).
        assert!(first["most_lacking"].as_u64() <= first["most_missing"].as_u64());
        let coded = first["coded_fragments"].as_u64().unwrap();
        let lacking = first["most_lacking"].as_u64().unwrap();
        // Enough for the worst device at its loss, not the whole block again.
        assert!(coded >= lacking + 4, "{first}");
        assert!(coded < u64::from(campaign.parameters.fragments), "{first}");
    }
    // The registry learnt the new version.
    for device in storage.devices().unwrap() {
        assert_eq!(device.firmware_version.as_deref(), Some("1.3.0"));
    }
    // Every device has a timestamped history ending in its result.
    let device = storage.devices().unwrap()[0].dev_eui;
    let history = storage.device_events(device, 200).unwrap();
    assert!(history
        .iter()
        .any(|e| e.kind == EventKind::CampaignDeviceResult && e.payload["status"] == "successful"));
    let steps: Vec<String> = history
        .iter()
        .rev()
        .filter(|e| e.kind == EventKind::CampaignDeviceStep)
        .map(|e| e.payload["to"].as_str().unwrap_or("").to_string())
        .collect();
    for expected in [
        "discover_clock_sync",
        "clock_sync",
        "group_setup",
        "frag_session_setup",
        "session_setup",
        "receiving",
        "upgrade_check",
        "schedule_reboot",
        "confirm_version",
    ] {
        assert!(
            steps.iter().any(|s| s == expected),
            "{expected} in {steps:?}"
        );
    }
}

#[test]
fn every_device_is_updated_without_loss() {
    every_device_is_updated(0, 0, PackageVersion::V2, 1);
}

#[test]
fn every_device_is_updated_at_10_percent_loss() {
    every_device_is_updated(10, 10, PackageVersion::V2, 2);
}

#[test]
fn every_device_is_updated_at_30_percent_loss() {
    every_device_is_updated(30, 5, PackageVersion::V2, 3);
}

#[test]
fn ts004_v1_devices_are_updated_at_10_percent_loss() {
    every_device_is_updated(10, 10, PackageVersion::V1, 4);
}
