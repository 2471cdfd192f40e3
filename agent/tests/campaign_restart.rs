//! The agent killed and restarted at random points of campaigns (engine and database
//! dropped without a clean shutdown, the network server's queues lost): each campaign
//! resumes from storage and ends with the same per-device results as an undisturbed
//! run, and no multicast FCnt is ever handed out twice.

mod campaign_support;

use std::collections::BTreeSet;

use campaign_support::{Behaviour, Fleet, FleetOptions, SimRng};
use fuota_agent::campaign::{CampaignSpec, DeliveryChoice, ParameterOverrides, Targets};
use fuota_node::RandomSource;
use lorawan_fuota::codec::PackageVersion;

fn options(seed: u64) -> FleetOptions {
    FleetOptions {
        devices: vec![
            (Behaviour::Normal, 10),
            (Behaviour::Normal, 20),
            (Behaviour::StuckFlashBit, 10),
            (Behaviour::Normal, 30),
            (Behaviour::UpToDate, 10),
            (Behaviour::Normal, 5),
        ],
        body_size: 10_000,
        package_version: PackageVersion::V2,
        seed,
        unicast_loss_percent: 0,
    }
}

fn base_spec(fleet: &Fleet) -> CampaignSpec {
    CampaignSpec {
        name: "restarts".into(),
        image_sha256: fleet.image_sha256.clone(),
        targets: Targets::Tag {
            key: "unused".into(),
            value: "unused".into(),
        },
        delivery: DeliveryChoice::Multicast,
        overrides: ParameterOverrides {
            data_rate: Some(5),
            session_lead_s: Some(180),
            setup_timeout_s: Some(3_600),
            device_timeout_s: Some(1_800),
            block_ack_delay: Some(0),
            reboot_delay_s: Some(30),
            reboot_grace_s: Some(30),
            max_retries: Some(4),
            ..ParameterOverrides::default()
        },
    }
}

fn devices_spec(fleet: &Fleet) -> CampaignSpec {
    let mut spec = base_spec(fleet);
    spec.targets = Targets::Devices {
        dev_euis: fleet.devices.iter().map(|d| d.dev_eui).collect(),
    };
    spec
}

#[test]
fn a_campaign_resumes_after_kills_at_random_points_with_the_same_results() {
    let mut phases_hit = BTreeSet::new();
    for seed in [21u64, 22, 23] {
        // The undisturbed run.
        let mut reference = Fleet::new(&options(seed));
        let id = reference.start_campaign(&devices_spec(&reference));
        assert!(reference.run_until_finished(id, 6 * 3600));
        let expected = reference.results(id);

        // The same campaign, killed at random seconds.
        let mut fleet = Fleet::new(&options(seed));
        let id = fleet.start_campaign(&devices_spec(&fleet));
        let mut chance = SimRng(seed * 7_777 + 1);
        let mut finished = false;
        for _ in 0..6 * 3600 {
            fleet.step();
            if fleet.finished.contains_key(&id) {
                finished = true;
                break;
            }
            if chance.next_u32().is_multiple_of(90) {
                let phase = fleet
                    .storage()
                    .campaign(id)
                    .unwrap()
                    .unwrap()
                    .progress
                    .phase;
                phases_hit.insert(phase.name());
                fleet.restart_agent();
            }
        }
        assert!(
            finished,
            "seed {seed}: the campaign finished after restarts"
        );
        assert!(
            fleet.agent_restarts >= 3,
            "seed {seed}: {} restarts",
            fleet.agent_restarts
        );
        assert_eq!(fleet.results(id), expected, "seed {seed}");
        eprintln!(
            "seed {seed}: {} restarts, results {:?}",
            fleet.agent_restarts, fleet.finished[&id]
        );
        assert!(fleet.reused_fcnts.is_empty(), "{:?}", fleet.reused_fcnts);
    }
    eprintln!("kills during {phases_hit:?}");
    // The kills hit the campaign in several of its steps.
    assert!(phases_hit.len() >= 3, "{phases_hit:?}");
}

#[test]
fn group_fcnts_continue_above_the_reservation_after_a_kill() {
    let mut fleet = Fleet::new(&options(31));
    let id = fleet.start_campaign(&devices_spec(&fleet));
    // Run into the broadcast.
    while fleet.fcnts.len() < 10 {
        fleet.step();
        assert!(fleet.now_ms < 3_600_000, "the broadcast started");
    }
    let before: u32 = fleet.fcnts.iter().map(|&(_, fcnt)| fcnt).max().unwrap();
    let mark = fleet.storage().campaign_mc_fcnt_reserved(id).unwrap();
    assert!(
        u64::from(before) < mark,
        "every FCnt handed out is below the mark"
    );
    fleet.restart_agent();
    let handed_out = fleet.fcnts.len();
    while fleet.fcnts.len() == handed_out {
        fleet.step();
        assert!(fleet.now_ms < 4 * 3_600_000);
    }
    let after: Vec<u32> = fleet
        .fcnts
        .iter()
        .map(|&(_, fcnt)| fcnt)
        .filter(|&fcnt| fcnt > before)
        .collect();
    assert!(
        after.iter().all(|&fcnt| u64::from(fcnt) >= mark),
        "after the kill the group FCnt restarts at the mark {mark}: {after:?}"
    );
    assert!(fleet.run_until_finished(id, 6 * 3600));
    assert!(fleet.reused_fcnts.is_empty());
}
