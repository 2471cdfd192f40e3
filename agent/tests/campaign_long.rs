//! A campaign whose first pass is longer than the longest Class C session (2^15 s):
//! DR0 on the 10 % band, a 60 KB image, about 1400 frames paced by the duty cycle. The
//! first pass continues in a second session, and every device is updated.

mod campaign_support;

use campaign_support::{Behaviour, Fleet, FleetOptions};
use fuota_agent::campaign::{
    CampaignSpec, DeliveryChoice, DeviceStatus, ParameterOverrides, Targets,
};
use lorawan_fuota::codec::PackageVersion;

#[test]
fn a_first_pass_longer_than_one_session_spans_two() {
    let mut fleet = Fleet::new(&FleetOptions {
        devices: vec![(Behaviour::Normal, 5); 2],
        body_size: 60_000,
        package_version: PackageVersion::V2,
        seed: 51,
        unicast_loss_percent: 0,
    });
    let spec = CampaignSpec {
        name: "long".into(),
        image_sha256: fleet.image_sha256.clone(),
        targets: Targets::HardwareVersion {
            hardware_version: "stm32wl-rev3".into(),
        },
        delivery: DeliveryChoice::Multicast,
        overrides: ParameterOverrides {
            data_rate: Some(0),
            session_lead_s: Some(180),
            block_ack_delay: Some(0),
            reboot_delay_s: Some(30),
            reboot_grace_s: Some(30),
            ..ParameterOverrides::default()
        },
    };
    let id = fleet.start_campaign(&spec);
    let parameters = fleet.storage().campaign(id).unwrap().unwrap().parameters;
    assert_eq!(parameters.session_timeout_exponent, 15);
    assert!(parameters.sessions_needed >= 2, "{parameters:?}");
    assert!(fleet.run_until_finished(id, 30 * 3600));
    let results = fleet.results(id);
    assert!(
        results.values().all(|s| *s == DeviceStatus::Successful),
        "{results:?}"
    );
    let progress = fleet.storage().campaign(id).unwrap().unwrap().progress;
    assert!(progress.sessions >= 2, "{progress:?}");
    eprintln!(
        "{} fragments + {} coded at DR0: {} sessions, {} repair rounds, {} frames, {:.1} h",
        parameters.fragments,
        parameters.first_pass_coded,
        progress.sessions,
        progress.repair_rounds,
        progress.frames_sent,
        fleet.now_ms as f64 / 3_600_000.0
    );
}
