//! TS003 clock synchronisation client: AppTimeReq / AppTimeAns with tokens, v2
//! saturation, periodicity and forced resynchronisation, fed with the agent-side
//! encodings and the vectors of test-vectors.md §1.

mod support;

use fuota_node::{DownlinkReport, Instant, Uplink};
use lorawan_fuota::codec::clock_sync::{Downlink, Uplink as Ts003Uplink};
use lorawan_fuota::codec::{decode_all, PackageVersion};
use support::{bytes, config, downlink, uplinks, Device, Node};

fn requests(uplink: &Uplink, version: PackageVersion) -> Vec<Ts003Uplink> {
    assert_eq!(uplink.fport, 202);
    decode_all::<Ts003Uplink>(&uplink.payload, version)
        .map(|c| c.expect("valid TS003 uplink"))
        .collect()
}

fn only_uplink(node: &mut Node<'_>, now: Instant) -> Uplink {
    let mut all = uplinks(node, now);
    assert_eq!(all.len(), 1, "one uplink expected: {all:?}");
    all.remove(0)
}

/// Answers the AppTimeReq in `uplink` with `correction` and the request's token.
fn answer(node: &mut Node<'_>, now: Instant, uplink: &Uplink, correction: i32) -> DownlinkReport {
    let [Ts003Uplink::AppTimeReq { token, .. }] = requests(uplink, PackageVersion::V2)[..] else {
        panic!("not a lone AppTimeReq: {uplink:?}");
    };
    let payload = downlink(&[Downlink::AppTimeAns {
        time_correction: correction,
        token,
    }]);
    node.handle_downlink(now, 202, &payload)
}

#[test]
fn asks_at_start_with_ans_required_and_applies_only_a_matching_token() {
    let mut device = Device::new(config(PackageVersion::V2), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t0 = Instant::from_secs(10);
    let (mut node, _) = device.boot(&mut workspace, t0);
    assert_eq!(node.next_uplink_at(), Some(t0));
    let request = only_uplink(&mut node, t0);
    assert!(request.carries_device_time);
    // Unsynchronised: DeviceTime is the local time, AnsRequired set, token 0.
    assert_eq!(request.payload.as_slice(), bytes("01 0a 00 00 00 10"));

    let t1 = Instant::from_secs(12);
    let wrong = downlink(&[Downlink::AppTimeAns {
        time_correction: 1000,
        token: 5,
    }]);
    let DownlinkReport::Package(report) = node.handle_downlink(t1, 202, &wrong) else {
        panic!("TS003 port");
    };
    assert_eq!((report.handled, report.ignored), (0, 1));
    assert_eq!(node.gps_time_millis(t1), None);

    answer(&mut node, t1, &request, 1_000_000);
    assert_eq!(node.gps_time_millis(t1), Some(1_000_012_000));
    assert_eq!(node.clock_sync_token(), 1);
    // Synchronised and no periodicity: nothing more to send.
    assert_eq!(node.next_uplink_at(), None);
    // A late duplicate answer with the old token is ignored.
    answer(&mut node, t1, &request, 5);
    assert_eq!(node.gps_time_millis(t1), Some(1_000_012_000));
    assert_eq!(node.stats().clock_sync.answers_with_wrong_token, 2);
}

#[test]
fn token_rolls_over_and_matches_the_reference_vectors() {
    let mut device = Device::new(config(PackageVersion::V1), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let (mut node, _) = device.boot(&mut workspace, Instant::from_secs(0));
    let force = bytes("03 01"); // ForceDeviceResyncReq, one transmission
                                // Fifteen exchanges with a zero correction bring TokenReq to 15.
    let first = only_uplink(&mut node, Instant::from_secs(0));
    answer(&mut node, Instant::from_secs(0), &first, 0);
    for _ in 1..15 {
        node.handle_downlink(Instant::from_secs(0), 202, &force);
        let request = only_uplink(&mut node, Instant::from_secs(0));
        answer(&mut node, Instant::from_secs(0), &request, 0);
    }
    assert_eq!(node.clock_sync_token(), 15);
    // At DeviceTime 1024 (clock still on local time): the vector of §1.
    let t = Instant::from_secs(1024);
    node.handle_downlink(t, 202, &force);
    let request = only_uplink(&mut node, t);
    assert_eq!(request.payload.as_slice(), bytes("01 00 04 00 00 1f"));
    // AppTimeAns TimeCorrection=1024, TokenAns=15.
    node.handle_downlink(t, 202, &bytes("01 00 04 00 00 0f"));
    assert_eq!(node.gps_time_millis(t), Some(2_048_000));
    assert_eq!(node.clock_sync_token(), 0, "token wraps modulo 16");
    // PackageVersionReq → PackageVersionAns 00 01 01.
    node.handle_downlink(t, 202, &bytes("00"));
    assert_eq!(
        only_uplink(&mut node, t).payload.as_slice(),
        bytes("00 01 01")
    );
}

#[test]
fn v2_saturated_correction_is_applied_and_finished_by_an_immediate_request() {
    // TS003-2.0.0 example: DeviceTime 0 on 2050-01-01 needs +2208643200.
    let mut device = Device::new(config(PackageVersion::V2), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_millis(500);
    let (mut node, _) = device.boot(&mut workspace, t);
    let request = only_uplink(&mut node, t);
    assert_eq!(
        requests(&request, PackageVersion::V2),
        [Ts003Uplink::AppTimeReq {
            device_time: 0,
            ans_required: true,
            token: 0
        }]
    );
    node.handle_downlink(t, 202, &bytes("01 ff ff ff 7f 00"));
    // Applied, and a new request leaves at once.
    assert_eq!(node.gps_time_millis(t), Some(0x7FFF_FFFF * 1000 + 500));
    assert_eq!(node.next_uplink_at(), Some(t));
    let second = only_uplink(&mut node, t);
    assert_eq!(
        requests(&second, PackageVersion::V2),
        [Ts003Uplink::AppTimeReq {
            device_time: 0x7FFF_FFFF,
            ans_required: true,
            token: 1
        }]
    );
    node.handle_downlink(t, 202, &bytes("01 81 38 a5 03 01"));
    assert_eq!(node.gps_time_millis(t), Some(2_208_643_200 * 1000 + 500));
    assert_eq!(node.next_uplink_at(), None);
}

#[test]
fn v1_does_not_treat_the_largest_correction_as_saturated() {
    let mut device = Device::new(config(PackageVersion::V1), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_secs(0);
    let (mut node, _) = device.boot(&mut workspace, t);
    only_uplink(&mut node, t);
    node.handle_downlink(t, 202, &bytes("01 ff ff ff 7f 00"));
    assert_eq!(node.next_uplink_at(), None);
}

#[test]
fn periodicity_request_answers_with_the_current_time_and_schedules_requests() {
    let mut device = Device::new(config(PackageVersion::V2), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t0 = Instant::from_secs(100);
    let (mut node, _) = device.boot(&mut workspace, t0);
    support::sync_clock(&mut node, t0, PackageVersion::V2);

    let t1 = Instant::from_millis(100_700);
    node.handle_downlink(
        t1,
        202,
        &downlink(&[Downlink::DeviceAppTimePeriodicityReq { period: 0 }]),
    );
    let answer = only_uplink(&mut node, t1);
    assert!(answer.carries_device_time);
    assert_eq!(
        requests(&answer, PackageVersion::V2),
        [Ts003Uplink::DeviceAppTimePeriodicityAns {
            not_supported: false,
            device_time: support::gps_at(t1, 0)
        }]
    );
    // Every 128 s ± 30 s.
    let mut previous = t1;
    for _ in 0..3 {
        let next = node.next_uplink_at().expect("periodic request scheduled");
        let gap = next.millis_since(previous);
        assert!((98_000..=158_000).contains(&gap), "gap {gap} ms");
        let request = only_uplink(&mut node, next);
        assert_eq!(
            requests(&request, PackageVersion::V2),
            [Ts003Uplink::AppTimeReq {
                device_time: support::gps_at(next, 0),
                ans_required: false,
                token: 1
            }]
        );
        previous = next;
    }
    // Period 15 (vector 02 0f): about 128 × 2^15 s.
    node.handle_downlink(previous, 202, &bytes("02 0f"));
    only_uplink(&mut node, previous);
    let gap = node
        .next_uplink_at()
        .expect("scheduled")
        .millis_since(previous);
    assert!(gap.abs_diff(128 * 32_768 * 1000) <= 30_000);
}

#[test]
fn forced_resync_sends_up_to_n_requests_until_an_answer() {
    let mut device = Device::new(config(PackageVersion::V1), 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let t0 = Instant::from_secs(0);
    let (mut node, _) = device.boot(&mut workspace, t0);
    support::sync_clock(&mut node, t0, PackageVersion::V1);

    // NbTransmissions = 3 and no answer: exactly three requests, 30 s apart.
    node.handle_downlink(t0, 202, &bytes("03 03"));
    let mut sent = Vec::new();
    while let Some(at) = node.next_uplink_at() {
        let request = only_uplink(&mut node, at);
        assert!(matches!(
            requests(&request, PackageVersion::V1)[..],
            [Ts003Uplink::AppTimeReq {
                ans_required: true,
                ..
            }]
        ));
        sent.push(at);
    }
    assert_eq!(
        sent,
        [t0, Instant::from_secs(30), Instant::from_secs(60)],
        "three spaced requests"
    );

    // NbTransmissions = 7 (vector 03 07), answered after the second: stops there.
    let t1 = Instant::from_secs(1000);
    node.handle_downlink(t1, 202, &bytes("03 07"));
    only_uplink(&mut node, t1);
    let second = only_uplink(&mut node, Instant::from_secs(1030));
    answer(&mut node, Instant::from_secs(1031), &second, -3);
    assert_eq!(node.next_uplink_at(), None);
    assert_eq!(
        node.gps_time_millis(Instant::from_secs(1031)),
        Some((support::NETWORK_GPS as i64 + 1031 - 3) * 1000)
    );
}
