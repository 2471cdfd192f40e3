//! Campaigns where devices fail: a device that never answers ends `Timeout` without
//! holding the others back, a device whose rebuilt block fails its MIC ends `MICError`
//! (TS004 v2) or `ImageRejected` (v1: no MIC, the device's signature check refuses it),
//! a device already on the target version is skipped, a device whose bootloader reverts
//! the image ends `VersionMismatch`, a device that loses power mid-download resumes it
//! and is updated; and a campaign that cannot be done is refused at
//! creation with the plan's figures.

mod campaign_support;

use campaign_support::{Behaviour, Fleet, FleetOptions, RUNNING, TARGET};
use fuota_agent::campaign::{
    CampaignError, CampaignSpec, DeliveryChoice, DeviceStatus, DeviceStep, ParameterOverrides,
    PlanError, Targets,
};
use fuota_agent::clock::WallTime;
use fuota_agent::storage::EventKind;
use fuota_node::RandomSource;
use lorawan_fuota::codec::PackageVersion;

fn overrides() -> ParameterOverrides {
    ParameterOverrides {
        data_rate: Some(5),
        session_lead_s: Some(180),
        setup_timeout_s: Some(7_200),
        device_timeout_s: Some(2_400),
        block_ack_delay: Some(0),
        reboot_delay_s: Some(30),
        reboot_grace_s: Some(30),
        max_retries: Some(3),
        ..ParameterOverrides::default()
    }
}

fn spec(fleet: &Fleet) -> CampaignSpec {
    CampaignSpec {
        name: "mixed fleet".into(),
        image_sha256: fleet.image_sha256.clone(),
        targets: Targets::HardwareVersion {
            hardware_version: "stm32wl-rev3".into(),
        },
        delivery: DeliveryChoice::Auto,
        overrides: overrides(),
    }
}

fn mixed_fleet(version: PackageVersion, seed: u64) -> (Fleet, i64) {
    let mut fleet = Fleet::new(&FleetOptions {
        devices: vec![
            (Behaviour::Normal, 10),
            (Behaviour::Silent, 10),
            (Behaviour::Normal, 10),
            (Behaviour::StuckFlashBit, 10),
            (Behaviour::UpToDate, 10),
            (Behaviour::Reverts, 10),
            (Behaviour::PowerCut, 10),
        ],
        body_size: 12_000,
        package_version: version,
        seed,
        unicast_loss_percent: 0,
    });
    let id = fleet.start_campaign(&spec(&fleet));
    (fleet, id)
}

#[test]
fn each_failing_device_ends_with_its_own_status_and_the_others_succeed() {
    let (mut fleet, id) = mixed_fleet(PackageVersion::V2, 11);
    assert!(fleet.run_until_finished(id, 8 * 3600));
    let results: Vec<DeviceStatus> = fleet.results(id).into_values().collect();
    assert_eq!(
        results,
        vec![
            DeviceStatus::Successful,
            DeviceStatus::Timeout,
            DeviceStatus::Successful,
            DeviceStatus::MicError,
            DeviceStatus::AlreadyUpToDate,
            DeviceStatus::VersionMismatch,
            DeviceStatus::Successful,
        ]
    );
    // The device that lost power mid-download resumed it and was updated.
    assert_eq!(fleet.devices[6].reboots, 2, "the power cut and the update");
    // Only the working devices took the new image; the others were not rebooted into it.
    let versions = fleet.running_versions();
    assert_eq!(versions[0], TARGET.to_ts006());
    assert_eq!(versions[3], RUNNING.to_ts006());
    assert_eq!(
        fleet.devices[3].reboots, 0,
        "a MIC error is never installed"
    );
    assert_eq!(
        fleet.devices[4].reboots, 0,
        "an up-to-date device is left alone"
    );
    assert_eq!(fleet.devices[5].reboots, 1);
    assert!(fleet.reused_fcnts.is_empty());

    let devices = fleet.storage().campaign_devices(id).unwrap();
    // The working devices were done long before the silent one timed out.
    let silent = &devices[1];
    assert!(silent
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("no answer")));
    let silent_done = fleet
        .storage()
        .device_events(silent.dev_eui, 50)
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::CampaignDeviceResult)
        .unwrap()
        .time_ms;
    let first_success = fleet
        .storage()
        .device_events(devices[0].dev_eui, 200)
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::CampaignDeviceResult)
        .unwrap()
        .time_ms;
    assert!(
        first_success < silent_done,
        "success at {first_success}, silent device's timeout at {silent_done}"
    );
    // The MIC error and the mismatch say what happened.
    assert!(devices[3].last_error.as_deref().unwrap().contains("MIC"));
    assert!(devices[5]
        .last_error
        .as_deref()
        .unwrap()
        .contains("reverted"));
    // The up-to-date device was only asked for its versions.
    let history = fleet
        .storage()
        .device_events(devices[4].dev_eui, 50)
        .unwrap();
    assert!(!history
        .iter()
        .any(|e| e.kind == EventKind::CampaignDeviceStep && e.payload["to"] == "group_setup"));
}

#[test]
fn a_ts004_v1_device_with_a_corrupt_block_refuses_the_image() {
    let (mut fleet, id) = mixed_fleet(PackageVersion::V1, 12);
    assert!(fleet.run_until_finished(id, 8 * 3600));
    let results: Vec<DeviceStatus> = fleet.results(id).into_values().collect();
    // v1 has no data-block MIC: the device's own signature check refuses the image.
    assert_eq!(results[3], DeviceStatus::ImageRejected);
    assert_eq!(results[0], DeviceStatus::Successful);
    assert_eq!(results[1], DeviceStatus::Timeout);
}

#[test]
fn a_single_device_is_updated_by_unicast_fragments() {
    let mut fleet = Fleet::new(&FleetOptions {
        devices: vec![(Behaviour::Normal, 0)],
        body_size: 6_000,
        package_version: PackageVersion::V2,
        seed: 13,
        unicast_loss_percent: 0,
    });
    let id = fleet.start_campaign(&spec(&fleet));
    assert!(fleet.run_until_finished(id, 24 * 3600));
    assert_eq!(
        fleet.results(id).into_values().collect::<Vec<_>>(),
        vec![DeviceStatus::Successful]
    );
    assert_eq!(fleet.multicast_sent, 0, "one device: no multicast session");
    let dev_eui = fleet.devices[0].dev_eui;
    let history = fleet.storage().device_events(dev_eui, 200).unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.kind == EventKind::CampaignDeviceStep
                && e.payload["to"] == "unicast_fragments")
    );
    assert!(!history
        .iter()
        .any(|e| e.kind == EventKind::CampaignDeviceStep && e.payload["to"] == "group_setup"));
}

#[test]
fn a_campaign_needing_more_than_16383_fragments_is_refused_with_the_figures() {
    let mut fleet = Fleet::new(&FleetOptions {
        devices: vec![(Behaviour::Normal, 0), (Behaviour::Normal, 0)],
        body_size: 800_000,
        package_version: PackageVersion::V2,
        seed: 14,
        unicast_loss_percent: 0,
    });
    let mut spec = spec(&fleet);
    spec.overrides.data_rate = Some(0);
    let now = fleet.wall();
    let (engine, storage) = (
        fleet.engine.as_mut().unwrap(),
        fleet.storage.as_mut().unwrap(),
    );
    let error = engine.create_campaign(storage, &spec, now).unwrap_err();
    let CampaignError::Plan(PlanError::TooManyFragments {
        fragments, total, ..
    }) = &error
    else {
        panic!("{error}");
    };
    assert!(*total > 16_383 && *fragments > 16_000, "{error}");
    let message = error.to_string();
    assert!(message.contains("16383"), "{message}");
    assert!(storage.campaigns().unwrap().is_empty());
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let mut fleet = Fleet::new(&FleetOptions {
        devices: vec![(Behaviour::Normal, 0), (Behaviour::Normal, 0)],
        body_size: 4_000,
        package_version: PackageVersion::V2,
        seed: 15,
        unicast_loss_percent: 0,
    });
    let now = fleet.wall();
    let good = spec(&fleet);
    let (engine, storage) = (
        fleet.engine.as_mut().unwrap(),
        fleet.storage.as_mut().unwrap(),
    );
    let mut unknown_image = good.clone();
    unknown_image.image_sha256 = "00".repeat(32);
    assert!(matches!(
        engine.create_campaign(storage, &unknown_image, now),
        Err(CampaignError::Image(_))
    ));
    let mut nobody = good.clone();
    nobody.targets = Targets::Tag {
        key: "site".into(),
        value: "nowhere".into(),
    };
    assert!(matches!(
        engine.create_campaign(storage, &nobody, now),
        Err(CampaignError::NoTargets(_))
    ));
    let mut bad_group = good.clone();
    bad_group.overrides.mc_group_id = Some(4);
    assert!(matches!(
        engine.create_campaign(storage, &bad_group, now),
        Err(CampaignError::InvalidParameter(_))
    ));
    let mut forever = good.clone();
    forever.overrides.device_timeout_s = Some(u64::MAX);
    let error = engine.create_campaign(storage, &forever, now).unwrap_err();
    assert!(error.to_string().contains("device_timeout_s"), "{error}");
    let mut odd_frequency = good.clone();
    odd_frequency.overrides.frequency_hz = Some(869_525_050);
    assert!(matches!(
        engine.create_campaign(storage, &odd_frequency, now),
        Err(CampaignError::InvalidParameter(_))
    ));
    let mut too_large = good.clone();
    too_large.overrides.fragment_size = Some(250);
    assert!(matches!(
        engine.create_campaign(storage, &too_large, now),
        Err(CampaignError::Plan(PlanError::FragmentTooLarge { .. }))
    ));
    let id = engine.create_campaign(storage, &good, now).unwrap();
    // A device is in one active campaign at a time.
    assert!(matches!(
        engine.create_campaign(storage, &good, now),
        Err(CampaignError::DeviceBusy { campaign, .. }) if campaign == id
    ));
    // State changes are checked.
    assert!(matches!(
        engine.resume(storage, id, now),
        Err(CampaignError::InvalidState { .. })
    ));
    engine.start(storage, id, now).unwrap();
    assert!(matches!(
        engine.start(storage, id, now),
        Err(CampaignError::InvalidState { .. })
    ));
    // Garbage from a device is recorded, not fatal.
    let dev_eui = storage.campaign_devices(id).unwrap()[0].dev_eui;
    engine
        .handle_uplink(storage, dev_eui, 203, &[0x01, 0x02], now)
        .unwrap();
    let device = &storage.campaign_devices(id).unwrap()[0];
    assert!(device
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("undecodable")));
    // Random bytes on every FUOTA port: recorded, never fatal.
    let mut rng = campaign_support::SimRng(99);
    for round in 0..2_000u32 {
        let len = (rng.next_u32() % 20) as usize;
        let payload: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
        let fport = 200 + (round % 4) as u8;
        engine
            .handle_uplink(storage, dev_eui, fport, &payload, now)
            .unwrap();
        engine.tick(storage, now).unwrap();
    }
    // (Random bytes that decode as answers, or uplinks without the awaited answer,
    // moved the fuzzed device on: it may already hold a result.)
    // Cancelling gives every unfinished device its status.
    engine.cancel(storage, id, now).unwrap();
    let devices = storage.campaign_devices(id).unwrap();
    assert_eq!(devices[1].status, DeviceStatus::Cancelled);
    assert!(devices.iter().all(|d| d.status != DeviceStatus::InProgress));
    assert!(devices.iter().all(|d| d.step == DeviceStep::Done));
    assert!(matches!(
        engine.start(storage, id, now),
        Err(CampaignError::InvalidState { .. })
    ));
}

/// A device in the session that never answers a status request (its uplinks no longer
/// reach the gateway) must not make the repair round a whole block for everybody: the
/// round is sized from the devices that said what they miss.
#[test]
fn a_device_without_a_status_answer_does_not_make_the_repair_round_a_whole_block() {
    let mut fleet = Fleet::new(&FleetOptions {
        devices: vec![
            (Behaviour::Normal, 30),
            (Behaviour::MuteOnceReceiving, 30),
            (Behaviour::Normal, 30),
            (Behaviour::Normal, 30),
        ],
        body_size: 12_000,
        package_version: PackageVersion::V2,
        seed: 5,
        unicast_loss_percent: 0,
    });
    let id = fleet.start_campaign(&spec(&fleet));
    assert!(fleet.run_until_finished(id, 48 * 3600), "campaign finished");
    let results = fleet.results(id);
    let mute = fleet.devices[1].dev_eui;
    assert!(fleet.devices[1].multicast_received > 0, "it was receiving");
    assert_ne!(results[&mute], DeviceStatus::Successful);
    for (dev_eui, status) in &results {
        if *dev_eui != mute {
            assert_eq!(*status, DeviceStatus::Successful, "{dev_eui}");
        }
    }
    let campaign = fleet.storage().campaign(id).unwrap().unwrap();
    let fragments = u64::from(campaign.parameters.fragments);
    let rounds: Vec<_> = fleet
        .storage()
        .events_of_kind_since(
            EventKind::CampaignRedundancy,
            WallTime::from_unix_seconds(0),
        )
        .unwrap()
        .into_iter()
        .filter_map(|event| {
            let round = &event.payload["repair_round"];
            round.is_object().then(|| round.clone())
        })
        .collect();
    let first = rounds.first().expect("a repair round at 30 % loss");
    assert_eq!(first["devices_without_status"], 1, "{first}");
    assert_eq!(first["devices"], 3, "{first}");
    let coded = first["coded_fragments"].as_u64().unwrap();
    assert!(
        coded < fragments,
        "a round of {coded} frames for a block of {fragments}: {first}"
    );
}
