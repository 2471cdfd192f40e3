//! A campaign's life as an operator sees it: paused (nothing is sent, no time runs
//! out) and resumed to the end; a second campaign on the same devices (a new group,
//! SessionCnts above the first campaign's); and the stored rows agreeing with the event
//! history they were written with.

mod campaign_support;

use campaign_support::{Behaviour, Fleet, FleetOptions};
use fuota_agent::campaign::{
    CampaignSpec, CampaignState, DeliveryChoice, DeviceStatus, ParameterOverrides, Targets,
};
use fuota_agent::storage::EventKind;
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::image::ImageVersion;

fn spec(image_sha256: &str) -> CampaignSpec {
    CampaignSpec {
        name: "lifecycle".into(),
        image_sha256: image_sha256.into(),
        targets: Targets::HardwareVersion {
            hardware_version: "stm32wl-rev3".into(),
        },
        delivery: DeliveryChoice::Multicast,
        overrides: ParameterOverrides {
            data_rate: Some(5),
            session_lead_s: Some(180),
            device_timeout_s: Some(1_200),
            block_ack_delay: Some(0),
            reboot_delay_s: Some(30),
            reboot_grace_s: Some(30),
            ..ParameterOverrides::default()
        },
    }
}

fn fleet(seed: u64) -> Fleet {
    Fleet::new(&FleetOptions {
        devices: vec![(Behaviour::Normal, 10); 4],
        body_size: 8_000,
        package_version: PackageVersion::V2,
        seed,
        unicast_loss_percent: 5,
    })
}

#[test]
fn a_paused_campaign_sends_nothing_and_finishes_after_resume() {
    let mut fleet = fleet(41);
    let id = fleet.start_campaign(&spec(&fleet.image_sha256.clone()));
    for _ in 0..240 {
        fleet.step();
    }
    let now = fleet.wall();
    let (engine, storage) = (
        fleet.engine.as_mut().unwrap(),
        fleet.storage.as_mut().unwrap(),
    );
    engine.pause(storage, id, now).unwrap();
    assert_eq!(
        storage.campaign(id).unwrap().unwrap().state,
        CampaignState::Paused
    );
    let (unicast, multicast) = (fleet.unicast_actions, fleet.fcnts.len());
    // Two hours: longer than the device timeout, which must not run while paused.
    for _ in 0..7_200 {
        fleet.step();
    }
    assert_eq!(fleet.unicast_actions, unicast, "no downlink while paused");
    assert_eq!(
        fleet.fcnts.len(),
        multicast,
        "no multicast frame while paused"
    );
    let now = fleet.wall();
    let (engine, storage) = (
        fleet.engine.as_mut().unwrap(),
        fleet.storage.as_mut().unwrap(),
    );
    engine.resume(storage, id, now).unwrap();
    // What `systemctl status` shows while it runs: the step and the devices done.
    let line = fuota_agent::systemd::status_line(fleet.storage.as_ref().unwrap()).unwrap();
    assert!(
        line.starts_with("serving 4 devices; campaign ")
            && line.contains("\"lifecycle\" running, step ")
            && line.contains(" of 4 devices done"),
        "{line}"
    );
    assert!(fleet.run_until_finished(id, 6 * 3600));
    let line = fuota_agent::systemd::status_line(fleet.storage.as_ref().unwrap()).unwrap();
    assert_eq!(line, "serving 4 devices; no campaign running");
    let results = fleet.results(id);
    assert!(
        results.values().all(|s| *s == DeviceStatus::Successful),
        "{results:?}"
    );
    let states: Vec<String> = fleet
        .storage()
        .events_after(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::CampaignState)
        .map(|e| e.payload["to"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["running", "paused", "running", "finished"]);
}

#[test]
fn a_second_campaign_updates_the_same_devices_again() {
    let mut fleet = fleet(42);
    let first = fleet.start_campaign(&spec(&fleet.image_sha256.clone()));
    assert!(fleet.run_until_finished(first, 6 * 3600));
    let first_counters: Vec<Option<u16>> = fleet
        .devices
        .iter()
        .map(|d| d.dev_eui)
        .collect::<Vec<_>>()
        .into_iter()
        .map(|dev_eui| fleet.storage().last_frag_session_cnt(dev_eui).unwrap())
        .collect();
    assert!(first_counters.iter().all(Option::is_some));

    let next = ImageVersion::new(1, 4, 0, 0);
    let sha256 = fleet.import_image(next, 7_000);
    let second = fleet.start_campaign(&spec(&sha256));
    assert!(fleet.run_until_finished(second, 6 * 3600));
    let results = fleet.results(second);
    assert!(
        results.values().all(|s| *s == DeviceStatus::Successful),
        "{results:?}"
    );
    assert!(fleet
        .running_versions()
        .iter()
        .all(|&v| v == next.to_ts006()));
    // Each device's SessionCnt grew across the campaigns (devices refuse replays).
    for (device, first) in fleet
        .devices
        .iter()
        .map(|d| d.dev_eui)
        .collect::<Vec<_>>()
        .into_iter()
        .zip(first_counters)
    {
        let second = fleet.storage().last_frag_session_cnt(device).unwrap();
        assert!(second > first, "{device}: {first:?} then {second:?}");
    }
    let storage = fleet.storage();
    let (a, b) = (
        storage.campaign(first).unwrap().unwrap(),
        storage.campaign(second).unwrap().unwrap(),
    );
    assert_ne!(a.mc_addr, b.mc_addr, "a new group");
    for device in storage.devices().unwrap() {
        assert_eq!(device.firmware_version.as_deref(), Some("1.4.0"));
    }
}

#[test]
fn the_stored_rows_agree_with_the_event_history() {
    let mut fleet = fleet(43);
    let id = fleet.start_campaign(&spec(&fleet.image_sha256.clone()));
    // Stop half-way and compare, then at the end.
    for checkpoint in [600u64, 6 * 3600] {
        while fleet.now_ms < checkpoint * 1000 && !fleet.finished.contains_key(&id) {
            fleet.step();
        }
        let storage = fleet.storage();
        for device in storage.campaign_devices(id).unwrap() {
            let history = storage.device_events(device.dev_eui, 1_000).unwrap();
            let last_step = history
                .iter()
                .find(|e| e.kind == EventKind::CampaignDeviceStep)
                .map(|e| e.payload["to"].clone());
            assert_eq!(
                last_step,
                Some(serde_json::to_value(device.step).unwrap()),
                "{}",
                device.dev_eui
            );
            let result = history
                .iter()
                .find(|e| e.kind == EventKind::CampaignDeviceResult)
                .map(|e| e.payload["status"].clone());
            match device.status {
                DeviceStatus::InProgress => assert_eq!(result, None),
                status => assert_eq!(result, Some(serde_json::to_value(status).unwrap())),
            }
        }
        let campaign = storage.campaign(id).unwrap().unwrap();
        let last_phase = storage
            .events_after(0, 100_000)
            .unwrap()
            .into_iter()
            .rev()
            .find(|e| e.kind == EventKind::CampaignStep && e.payload.get("to").is_some())
            .map(|e| e.payload["to"].clone());
        assert_eq!(
            last_phase,
            Some(serde_json::Value::from(campaign.progress.phase.name()))
        );
    }
    assert!(fleet.finished.contains_key(&id));
}
