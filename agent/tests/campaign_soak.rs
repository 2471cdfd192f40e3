//! Many seeded campaigns under heavy loss: 30 % multicast loss and 10 % loss of unicast
//! uplinks and downlinks, TS004 v1 and v2 fleets, the agent killed at random seconds in
//! half of them, and a device that misses the first Class C session entirely. Every
//! device must end `Successful`, with no group FCnt handed out twice.

mod campaign_support;

use campaign_support::{Behaviour, Fleet, FleetOptions, SimRng};
use fuota_agent::campaign::{
    CampaignSpec, DeliveryChoice, DeviceStatus, ParameterOverrides, Targets,
};
use fuota_node::RandomSource;
use lorawan_fuota::codec::PackageVersion;

fn spec(fleet: &Fleet) -> CampaignSpec {
    CampaignSpec {
        name: "soak".into(),
        image_sha256: fleet.image_sha256.clone(),
        targets: Targets::HardwareVersion {
            hardware_version: "stm32wl-rev3".into(),
        },
        delivery: DeliveryChoice::Multicast,
        overrides: ParameterOverrides {
            data_rate: Some(5),
            session_lead_s: Some(180),
            block_ack_delay: Some(0),
            reboot_delay_s: Some(30),
            reboot_grace_s: Some(30),
            ..ParameterOverrides::default()
        },
    }
}

fn run(devices: Vec<(Behaviour, u64)>, version: PackageVersion, seed: u64, kills: bool) -> Fleet {
    let count = devices.len();
    let mut fleet = Fleet::new(&FleetOptions {
        devices,
        body_size: 9_000,
        package_version: version,
        seed,
        unicast_loss_percent: 10,
    });
    let id = fleet.start_campaign(&spec(&fleet));
    let mut chance = SimRng(seed);
    let mut finished = false;
    for _ in 0..12 * 3600 {
        fleet.step();
        if fleet.finished.contains_key(&id) {
            finished = true;
            break;
        }
        if kills && chance.next_u32().is_multiple_of(200) {
            fleet.restart_agent();
        }
    }
    assert!(finished, "seed {seed}: finished");
    let results = fleet.results(id);
    assert_eq!(
        results
            .values()
            .filter(|s| **s == DeviceStatus::Successful)
            .count(),
        count,
        "seed {seed} ({version:?}, kills {kills}): {:?}",
        fleet
            .storage()
            .campaign_devices(id)
            .unwrap()
            .iter()
            .map(|d| (d.status, d.last_error.clone()))
            .collect::<Vec<_>>()
    );
    assert!(fleet.reused_fcnts.is_empty(), "seed {seed}");
    // One reboot each: a lost reboot answer is followed by a version check, not by a
    // second reboot request.
    assert!(
        fleet.devices.iter().all(|d| d.reboots == 1),
        "seed {seed}: {:?}",
        fleet.devices.iter().map(|d| d.reboots).collect::<Vec<_>>()
    );
    fleet
}

#[test]
fn twenty_lossy_campaigns_update_every_device() {
    for seed in 100..120u64 {
        let version = if seed % 3 == 0 {
            PackageVersion::V1
        } else {
            PackageVersion::V2
        };
        run(
            vec![(Behaviour::Normal, 30); 5],
            version,
            seed,
            seed % 2 == 0,
        );
    }
}

#[test]
fn a_device_that_missed_the_first_session_is_updated_in_a_later_one() {
    // TS004 v2 parity rows of this block all have an even weight: coded fragments
    // alone leave such a device one rank short, so the repair round re-sends uncoded
    // ones.
    let mut fleet = run(
        vec![
            (Behaviour::Normal, 10),
            (Behaviour::Asleep, 10),
            (Behaviour::Normal, 10),
        ],
        PackageVersion::V2,
        7,
        false,
    );
    assert!(fleet.devices[1].multicast_received > 0);
    let progress = fleet.storage().campaign(1).unwrap().unwrap().progress;
    assert!(progress.sessions >= 2, "{progress:?}");
}
