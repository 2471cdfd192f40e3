//! Multicast frame reception: the test-vectors.md §5 PHYPayload byte-exact, then frames
//! built with the `lorawan` crate, and every way a frame is dropped, each with its
//! reason (and without touching the group's FCnt).

mod support;

use fuota_node::{
    Action, DownlinkReport, Instant, MulticastDrop, MulticastReceived, PackageReport,
};
use lorawan::maccommandcreator::LinkCheckAnsCreator;
use lorawan_fuota::codec::fragmentation::Downlink as Ts004;
use lorawan_fuota::codec::multicast_setup::Downlink as Ts005;
use lorawan_fuota::codec::{Package, PackageVersion};
use support::{actions, bytes, config, downlink, uplinks, Device, McSender, Node, MC_ADDR, MC_KEY};

/// §3.2: McGroupSetupReq for group 0, McAddr 0x26011234, min 0, max 0xFFFFFFFF.
const GROUP_SETUP: &str = "02 00 34 12 01 26 54d3d7a0b563b5dd91650ec5b8554af7 00000000 ffffffff";
/// §4.1: v2 FragSessionSetupReq idx 0, mask 0b0001, NbFrag 10, FragSize 10,
/// BlockAckDelay 1, AckReception, SessionCnt 1, MIC of the block 00..63.
const FRAG_SETUP: &str = "02 01 0a 00 0a 41 00 01 02 03 04 01 00 85 38 f3 0c";
/// §5: DataFragment idx 0, N 1, data 00..09 on FPort 201, FCnt 5.
const FRAME_FCNT_5: &str = "6034120126000500c9d8c7b5cbbd1cdeb15fce63f79e97d1a18f";

fn prepared_node<'w>(device: &mut Device, workspace: &'w mut [u8], t: Instant) -> Node<'w> {
    let (mut node, _) = device.boot(workspace, t);
    support::sync_clock(&mut node, t, PackageVersion::V2);
    node.handle_downlink(t, 200, &bytes(GROUP_SETUP));
    node.handle_downlink(t, 201, &bytes(FRAG_SETUP));
    let answers: Vec<Vec<u8>> = uplinks(&mut node, t)
        .into_iter()
        .map(|u| u.payload.to_vec())
        .collect();
    assert_eq!(answers, [bytes("02 00"), bytes("02 00")]);
    node
}

fn fragment(n: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..10)
        .map(|i| (usize::from(n - 1) * 10 + i) as u8)
        .collect();
    downlink(&[Ts004::DataFragment {
        frag_index: 0,
        fragment_number: n,
        data: &data,
    }])
}

fn handled(report: PackageReport) -> (u8, u8) {
    (report.handled, report.ignored)
}

#[test]
fn reference_frame_is_accepted_byte_exact_and_the_block_completes() {
    let mut device = Device::new(config(PackageVersion::V2), 8192, 8192);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_secs(1);
    let mut node = prepared_node(&mut device, &mut workspace, t);

    let received = node
        .handle_multicast_frame(t, &bytes(FRAME_FCNT_5))
        .expect("§5 frame accepted");
    assert_eq!(
        (received.mc_group_id, received.fcnt, received.fport),
        (0, 5, 201)
    );
    assert_eq!(handled(received.report), (1, 0));
    let progress = node.fragmentation_progress().expect("session");
    assert_eq!((progress.received, progress.missing), (1, 9));
    // Bytes 8..10 share a double-word with fragment 2: held until it arrives.
    assert_eq!(device.slot.read_bytes(0..8), (0..8).collect::<Vec<u8>>());

    // The rest of the block, sent by the server side of the group.
    let mut sender = McSender::new(MC_ADDR, MC_KEY, 6);
    for n in 2..=10 {
        let frame = sender.frame(201, &fragment(n));
        let MulticastReceived { report, .. } = node.handle_multicast_frame(t, &frame).unwrap();
        assert_eq!(handled(report), (1, 0));
    }
    let progress = node.fragmentation_progress().unwrap();
    assert!(progress.complete);
    assert_eq!(progress.mic, Some(fuota_node::MicCheck::Passed));
    assert_eq!(
        device.slot.read_bytes(0..100),
        (0..100).collect::<Vec<u8>>()
    );
    assert_eq!(node.multicast_group(0).unwrap().last_fcnt, Some(14));
}

#[test]
fn every_bad_frame_is_dropped_with_its_reason() {
    let mut device = Device::new(config(PackageVersion::V2), 8192, 8192);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_secs(1);
    let mut node = prepared_node(&mut device, &mut workspace, t);
    // A second group with a narrow window, not in the session's McGroupBitMask.
    let narrow_key = [7u8; 16];
    let narrow = downlink(&[Ts005::McGroupSetupReq {
        mc_group_id: 1,
        mc_addr: 0x2601_9999,
        mc_key_encrypted: support::mc_key_for_device(narrow_key),
        min_mc_fcnt: 50,
        max_mc_fcnt: 100,
    }]);
    node.handle_downlink(t, 200, &narrow);
    uplinks(&mut node, t);
    node.handle_multicast_frame(t, &bytes(FRAME_FCNT_5))
        .unwrap();

    let sender = McSender::new(MC_ADDR, MC_KEY, 6);
    let narrow_sender = McSender::new(0x2601_9999, narrow_key, 50);
    let good = sender.frame_at(6, 201, &fragment(2), 0, false);

    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let mut tampered_payload = good.clone();
    tampered_payload[10] ^= 0x80;
    let link_check = {
        let mut creator = LinkCheckAnsCreator::new();
        creator.set_margin(10).set_gateway_count(1);
        creator
    };
    let mut uplink = good.clone();
    uplink[0] = 0x40;
    let cases: Vec<(&str, Vec<u8>, MulticastDrop)> = vec![
        (
            "tampered MIC",
            tampered,
            MulticastDrop::MicMismatch {
                mc_group_id: 0,
                fcnt: 6,
            },
        ),
        (
            "tampered payload",
            tampered_payload,
            MulticastDrop::MicMismatch {
                mc_group_id: 0,
                fcnt: 6,
            },
        ),
        (
            "wrong McAddr",
            McSender::new(0x2601_1235, MC_KEY, 6).frame_at(6, 201, &fragment(2), 0, false),
            MulticastDrop::UnknownMcAddr {
                dev_addr: 0x2601_1235,
            },
        ),
        (
            "replayed FCnt",
            bytes(FRAME_FCNT_5),
            MulticastDrop::Replayed {
                mc_group_id: 0,
                fcnt_on_air: 5,
                last_fcnt: 5,
            },
        ),
        (
            "FCnt after the window",
            narrow_sender.frame_at(101, 201, &fragment(2), 0, false),
            MulticastDrop::AfterWindow {
                mc_group_id: 1,
                fcnt: 101,
            },
        ),
        (
            "FCnt before the window",
            narrow_sender.frame_at(49, 201, &fragment(2), 0, false),
            MulticastDrop::BeforeWindow {
                mc_group_id: 1,
                fcnt_on_air: 49,
            },
        ),
        (
            "confirmed frame",
            sender.frame_at(6, 201, &fragment(2), 0, true),
            MulticastDrop::Confirmed,
        ),
        (
            "FOpts present",
            sender.build(6, Some(201), &fragment(2), 0, false, &[&link_check]),
            MulticastDrop::FOptsPresent { length: 3 },
        ),
        (
            "ACK set",
            sender.frame_at(6, 201, &fragment(2), 0x20, false),
            MulticastDrop::AckSet,
        ),
        (
            "RFU bit set",
            sender.frame_at(6, 201, &fragment(2), 0x40, false),
            MulticastDrop::RfuBitSet,
        ),
        (
            "FPort 0 (MAC commands)",
            sender.build(6, Some(0), &[], 0, false, &[&link_check]),
            MulticastDrop::FPortZero,
        ),
        (
            "no FPort",
            sender.build(6, None, &[], 0, false, &[]),
            MulticastDrop::NoFPort,
        ),
        ("uplink", uplink, MulticastDrop::NotDownlinkData),
        (
            "too long",
            vec![0x60; 300],
            MulticastDrop::TooLong { length: 300 },
        ),
        (
            "too short",
            bytes("60 34 12 01 26 00"),
            MulticastDrop::Malformed,
        ),
    ];
    for (name, frame, reason) in cases {
        assert_eq!(
            node.handle_multicast_frame(t, &frame),
            Err(reason),
            "{name}"
        );
        assert_eq!(
            node.multicast_group(0).unwrap().last_fcnt,
            Some(5),
            "{name}"
        );
        assert_eq!(node.multicast_group(1).unwrap().last_fcnt, None, "{name}");
    }
    assert_eq!(node.fragmentation_progress().unwrap().received, 1);
    // The untouched frame still goes through afterwards.
    node.handle_multicast_frame(t, &good).unwrap();
    assert_eq!(node.fragmentation_progress().unwrap().received, 2);
    assert_eq!(node.stats().multicast_dropped, 15);
}

#[test]
fn only_status_requests_and_fragments_are_taken_from_multicast() {
    let mut device = Device::new(config(PackageVersion::V2), 8192, 8192);
    let mut workspace = vec![0u8; 4096];
    let t = Instant::from_secs(1);
    let mut node = prepared_node(&mut device, &mut workspace, t);
    let mut sender = McSender::new(MC_ADDR, MC_KEY, 0);

    // TS005, TS003 and TS006 commands on multicast: dropped, nothing happens.
    let delete_group = sender.frame(200, &bytes("03 00"));
    assert_eq!(
        node.handle_multicast_frame(t, &delete_group),
        Err(MulticastDrop::PackageNotAllowed { fport: 200 })
    );
    assert!(node.multicast_group(0).is_some());
    let time_answer = sender.frame(202, &bytes("01 00 04 00 00 00"));
    assert_eq!(
        node.handle_multicast_frame(t, &time_answer),
        Err(MulticastDrop::PackageNotAllowed { fport: 202 })
    );
    let reboot_now = sender.frame(203, &bytes("03 00 00 00"));
    assert_eq!(
        node.handle_multicast_frame(t, &reboot_now),
        Err(MulticastDrop::PackageNotAllowed { fport: 203 })
    );
    assert!(actions(&mut node, t).is_empty(), "no reboot");
    let application = sender.frame(10, b"hello");
    assert_eq!(
        node.handle_multicast_frame(t, &application),
        Err(MulticastDrop::UnhandledFPort { fport: 10 })
    );
    // TS004 setup and delete on multicast: ignored; status request and fragment: taken.
    let mut frame = downlink(&[Ts004::FragSessionDeleteReq { frag_index: 0 }]);
    let ignored = node
        .handle_multicast_frame(t, &sender.frame(201, &frame))
        .unwrap();
    assert_eq!(handled(ignored.report), (0, 1));
    frame = downlink(&[Ts004::FragSessionStatusReq {
        frag_index: 0,
        participants_all: true,
    }]);
    let taken = node
        .handle_multicast_frame(t, &sender.frame(201, &frame))
        .unwrap();
    assert_eq!(handled(taken.report), (1, 0));
    assert!(
        node.fragmentation_progress().is_some(),
        "session not deleted"
    );
    assert!(uplinks(&mut node, t).is_empty(), "status answer is delayed");

    // A unicast downlink on the same ports still works.
    let report = node.handle_downlink(t, 200, &bytes("01 01"));
    assert!(matches!(
        report,
        DownlinkReport::Package(PackageReport {
            package: Package::MulticastSetup,
            handled: 1,
            ..
        })
    ));
    let _ = Action::ReturnToClassA;
}
