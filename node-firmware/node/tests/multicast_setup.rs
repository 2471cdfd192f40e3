//! TS005 remote multicast setup: groups (keys, status, delete) and the Class C session
//! (error bits, TimeToStart, StartMissed, start and end), on a session channel other
//! than RX2. Vectors from test-vectors.md §2 and §3.2.

mod support;

use fuota_node::{Action, GroupInfo, Instant};
use lorawan_fuota::codec::multicast_setup::Downlink;
use lorawan_fuota::codec::PackageVersion;
use support::{
    actions, bytes, config, downlink, gps_at, mc_key_for_device, uplinks, Device, Node,
    SESSION_DATA_RATE, SESSION_FREQUENCY_HZ,
};

fn answers(node: &mut Node<'_>, now: Instant) -> Vec<u8> {
    let all = uplinks(node, now);
    assert!(all.iter().all(|u| u.fport == 200), "{all:?}");
    all.into_iter().flat_map(|u| u.payload.to_vec()).collect()
}

fn setup_group(node: &mut Node<'_>, now: Instant, id: u8, mc_addr: u32) {
    let request = downlink(&[Downlink::McGroupSetupReq {
        mc_group_id: id,
        mc_addr,
        mc_key_encrypted: mc_key_for_device([id + 1; 16]),
        min_mc_fcnt: 0,
        max_mc_fcnt: u32::MAX,
    }]);
    node.handle_downlink(now, 200, &request);
    assert_eq!(answers(node, now), [0x02, id]);
}

fn class_c_request(id: u8, session_time: u32, time_out: u8, frequency_hz: u32, dr: u8) -> Vec<u8> {
    downlink(&[Downlink::McClassCSessionReq {
        mc_group_id: id,
        session_time,
        time_out,
        dl_frequency_hz: frequency_hz,
        data_rate: dr,
    }])
}

#[test]
fn groups_are_set_up_listed_and_deleted_as_in_the_vectors() {
    let mut device = Device::new(config(PackageVersion::V2), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_secs(0);
    let (mut node, _) = device.boot(&mut workspace, t);
    support::sync_clock(&mut node, t, PackageVersion::V2);

    // §3.2, LoRaWAN 1.0.x column: group 0, McAddr 0x26011234, min 0, max 0xFFFFFFFF.
    let setup = bytes("02 00 34 12 01 26 54d3d7a0b563b5dd91650ec5b8554af7 00000000 ffffffff");
    node.handle_downlink(t, 200, &setup);
    assert_eq!(answers(&mut node, t), bytes("02 00"));
    assert_eq!(
        node.multicast_group(0),
        Some(GroupInfo {
            mc_group_id: 0,
            mc_addr: 0x2601_1234,
            min_fcnt: 0,
            max_fcnt: u32::MAX,
            last_fcnt: None
        })
    );

    // The lrwn vector sets up group 2: this device supports two groups → IDerror (02 06).
    let id_two = bytes(
        "02 02 04 03 02 01 01 02 03 04 05 06 07 08 01 02 03 04 05 06 07 08 00 04 00 00 00 08 00 00",
    );
    node.handle_downlink(t, 200, &id_two);
    assert_eq!(answers(&mut node, t), bytes("02 06"));
    assert_eq!(node.multicast_group(2), None);

    // Status with groups 0 and 1 at 0x01020304 and 0x02020304: the lrwn vector.
    setup_group(&mut node, t, 0, 0x0102_0304);
    setup_group(&mut node, t, 1, 0x0202_0304);
    node.handle_downlink(t, 200, &bytes("01 03"));
    assert_eq!(
        answers(&mut node, t),
        bytes("01 23 00 04 03 02 01 01 04 03 02 02")
    );
    node.handle_downlink(t, 200, &bytes("01 02"));
    assert_eq!(answers(&mut node, t), bytes("01 22 01 04 03 02 02"));

    // Delete: group 3 undefined (03 07), group 0 deleted (03 00), then undefined.
    node.handle_downlink(t, 200, &bytes("03 03 03 00 03 00"));
    assert_eq!(answers(&mut node, t), bytes("03 07 03 00 03 04"));
    assert_eq!(node.multicast_group(0), None);
    node.handle_downlink(t, 200, &bytes("01 0f"));
    assert_eq!(answers(&mut node, t), bytes("01 12 01 04 03 02 02"));

    // PackageVersionReq.
    node.handle_downlink(t, 200, &bytes("00"));
    assert_eq!(answers(&mut node, t), bytes("00 02 02"));
}

#[test]
fn class_c_session_starts_on_its_channel_and_returns_to_class_a_at_timeout() {
    let mut device = Device::new(config(PackageVersion::V2), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t0 = Instant::from_secs(50);
    let (mut node, _) = device.boot(&mut workspace, t0);
    support::sync_clock(&mut node, t0, PackageVersion::V2);
    setup_group(&mut node, t0, 0, support::MC_ADDR);

    let start = gps_at(t0, 1024);
    node.handle_downlink(
        t0,
        200,
        &class_c_request(0, start, 8, SESSION_FREQUENCY_HZ, SESSION_DATA_RATE),
    );
    // Accepted, TimeToStart 1024 (McClassCSessionAns vector 04 00 00 04 00 for group 0).
    assert_eq!(answers(&mut node, t0), bytes("04 00 00 04 00"));
    let starts_at = t0.plus_secs(1024);
    assert_eq!(node.next_action_at(t0), Some(starts_at));
    assert!(actions(&mut node, just_before(starts_at)).is_empty());
    assert_eq!(
        actions(&mut node, starts_at),
        [Action::StartClassC {
            mc_group_id: 0,
            frequency_hz: SESSION_FREQUENCY_HZ,
            data_rate: SESSION_DATA_RATE
        }]
    );
    assert_ne!(
        (SESSION_FREQUENCY_HZ, SESSION_DATA_RATE),
        (869_525_000, 0),
        "the session channel differs from EU868 RX2"
    );
    // 2^8 s later: back to Class A.
    let ends_at = starts_at.plus_secs(256);
    assert_eq!(node.next_action_at(starts_at), Some(ends_at));
    assert!(actions(&mut node, just_before(ends_at)).is_empty());
    assert_eq!(actions(&mut node, ends_at), [Action::ReturnToClassA]);
    assert_eq!(node.next_action_at(ends_at), None);
}

fn just_before(at: Instant) -> Instant {
    Instant::from_millis(at.as_millis() - 1)
}

#[test]
fn session_request_errors_missed_starts_and_unsynchronised_clocks() {
    let mut device = Device::new(config(PackageVersion::V2), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_secs(5);
    let (mut node, _) = device.boot(&mut workspace, t);
    // Clock not synchronised yet: TimeToStart saturates (v2: 0xFFFFFF) and the node
    // asks for the time.
    uplinks(&mut node, t);
    setup_group(&mut node, t, 0, support::MC_ADDR);
    node.handle_downlink(
        t,
        200,
        &class_c_request(0, support::NETWORK_GPS as u32, 8, SESSION_FREQUENCY_HZ, 5),
    );
    let all = uplinks(&mut node, t);
    assert_eq!(all[0].payload.as_slice(), bytes("04 00 ff ff ff"));
    assert_eq!(all[1].fport, 202, "AppTimeReq follows");
    support::sync_clock(&mut node, t, PackageVersion::V2);
    // Once the clock is right, that session turns out to have started 5 s ago.
    assert_eq!(
        actions(&mut node, t),
        [Action::StartClassC {
            mc_group_id: 0,
            frequency_hz: SESSION_FREQUENCY_HZ,
            data_rate: 5
        }]
    );

    // Undefined group, bad frequency and DR: the vector 04 1e.
    node.handle_downlink(
        t,
        200,
        &class_c_request(2, gps_at(t, 100), 8, 915_000_000, 9),
    );
    assert_eq!(answers(&mut node, t), bytes("04 1e"));
    // Only the DR is wrong.
    node.handle_downlink(
        t,
        200,
        &class_c_request(0, gps_at(t, 100), 8, SESSION_FREQUENCY_HZ, 8),
    );
    assert_eq!(answers(&mut node, t), bytes("04 04"));
    // SessionTime already past: v2 StartMissed, no TimeToStart (vector 04 20).
    let past = gps_at(t, 0) - 10;
    node.handle_downlink(
        t,
        200,
        &class_c_request(0, past, 8, SESSION_FREQUENCY_HZ, 5),
    );
    assert_eq!(answers(&mut node, t), bytes("04 20"));
    // A missed or refused request leaves the running session alone (ends 256 s after
    // its SessionTime).
    assert_eq!(node.next_action_at(t), Some(t.plus_secs(251)));

    // Class B is not supported.
    let class_b = downlink(&[Downlink::McClassBSessionReq {
        mc_group_id: 0,
        session_time: gps_at(t, 128),
        time_out: 2,
        periodicity: 4,
        dl_frequency_hz: 869_525_000,
        data_rate: 3,
    }]);
    node.handle_downlink(t, 200, &class_b);
    assert_eq!(answers(&mut node, t), bytes("05 0c"));
}

#[test]
fn v1_joins_a_session_that_already_started_and_delete_ends_it() {
    let mut device = Device::new(config(PackageVersion::V1), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_secs(5);
    let (mut node, _) = device.boot(&mut workspace, t);
    support::sync_clock(&mut node, t, PackageVersion::V1);
    setup_group(&mut node, t, 1, support::MC_ADDR);
    let started_ten_seconds_ago = gps_at(t, 0) - 10;
    node.handle_downlink(
        t,
        200,
        &class_c_request(1, started_ten_seconds_ago, 5, SESSION_FREQUENCY_HZ, 5),
    );
    assert_eq!(answers(&mut node, t), bytes("04 01 00 00 00"));
    assert_eq!(
        actions(&mut node, t),
        [Action::StartClassC {
            mc_group_id: 1,
            frequency_hz: SESSION_FREQUENCY_HZ,
            data_rate: 5
        }]
    );
    // The window still ends 2^5 s after SessionTime.
    assert_eq!(node.next_action_at(t), Some(t.plus_secs(22)));
    node.handle_downlink(t, 200, &bytes("03 01"));
    assert_eq!(answers(&mut node, t), bytes("03 01"));
    assert_eq!(actions(&mut node, t), [Action::ReturnToClassA]);
    node.handle_downlink(t, 200, &bytes("00"));
    assert_eq!(answers(&mut node, t), bytes("00 02 01"));
}
