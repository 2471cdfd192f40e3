//! TS004 fragmentation sessions end to end: setup error bits, blocks of 48-, 50- and
//! 232-byte fragments sent by multicast out of order with 10 % loss and coded fragments,
//! status answers (v1/v2 layouts, saturation, Participants, random delay), the v2 MIC,
//! FragDataBlockReceivedReq repetition, reboot and resume, SessionCnt replay across a
//! reboot, and a second session in the same run (workspace recycling).

mod support;

use fuota_node::{Action, FuotaNode, Instant, MicCheck, StateLoad};
use lorawan_fuota::codec::fragmentation::{
    Downlink, FragSessionSetup, ReceptionStatus, SessionSetupV2, Uplink,
};
use lorawan_fuota::codec::multicast_setup::Downlink as Ts005;
use lorawan_fuota::codec::{decode_all, PackageVersion};
use lorawan_fuota::crypto::data_block_mic::{data_block_int_key, data_block_mic};
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::fec::FragmentEncoder;
use lorawan_fuota::image::ImageVersion;
use support::{
    actions, bytes, config, downlink, image, uplinks, Device, McSender, Node, TestRng, HARDWARE,
    MC_ADDR, MC_KEY,
};

const T: Instant = Instant::from_secs(100);

/// A data block and how the agent cuts it.
struct Block {
    data: Vec<u8>,
    frag_size: usize,
    version: PackageVersion,
}

impl Block {
    fn image(frag_size: usize, version: PackageVersion) -> Self {
        let body = image::body(12_000, frag_size as u32);
        Block {
            data: image::signed(
                &body,
                ImageVersion::new(1, 3, 0, 7),
                HARDWARE,
                &image::signing_key(),
            ),
            frag_size,
            version,
        }
    }

    fn encoder(&self) -> FragmentEncoder<'_> {
        FragmentEncoder::new(&self.data, self.frag_size, self.version).expect("encodable block")
    }

    fn nb_frag(&self) -> u16 {
        self.encoder().nb_frag()
    }

    fn setup(
        &self,
        session_cnt: u16,
        ack_reception: bool,
        block_ack_delay: u8,
    ) -> FragSessionSetup {
        let descriptor = [0x13, 0x00, 0x00, 0x07];
        let v2 = (self.version == PackageVersion::V2).then(|| SessionSetupV2 {
            ack_reception,
            session_cnt,
            mic: data_block_mic(
                &data_block_int_key(&Key128::from_bytes(support::GEN_APP_KEY)),
                session_cnt,
                0,
                descriptor,
                &self.data,
            ),
        });
        FragSessionSetup {
            frag_index: 0,
            mc_group_bit_mask: 0b0001,
            nb_frag: self.nb_frag(),
            frag_size: self.frag_size as u8,
            frag_algo: 0,
            block_ack_delay,
            padding: self.encoder().padding() as u8,
            descriptor,
            v2,
        }
    }

    /// The DataFragment command for fragment `n`.
    fn fragment(&self, n: u16) -> Vec<u8> {
        let mut data = vec![0u8; self.frag_size];
        self.encoder()
            .fragment(u32::from(n), &mut data)
            .expect("fragment");
        downlink(&[Downlink::DataFragment {
            frag_index: 0,
            fragment_number: n,
            data: &data,
        }])
    }

    /// Fragment numbers the agent sends: all uncoded ones and `coded` coded ones,
    /// shuffled, with `loss_percent` of them lost.
    fn schedule(&self, coded: u16, loss_percent: usize, rng: &mut TestRng) -> Vec<u16> {
        let mut numbers: Vec<u16> = (1..=self.nb_frag() + coded).collect();
        rng.shuffle(&mut numbers);
        let lost = numbers.len() * loss_percent / 100;
        numbers.truncate(numbers.len() - lost);
        numbers
    }
}

fn setup_answer(
    node: &mut Node<'_>,
    now: Instant,
    setup: FragSessionSetup,
    version: PackageVersion,
) -> Uplink {
    node.handle_downlink(now, 201, &downlink(&[Downlink::FragSessionSetupReq(setup)]));
    let all = uplinks(node, now);
    assert_eq!(all.len(), 1, "{all:?}");
    Uplink::decode_single_for(&all[0].payload, version)
}

/// Decoding helper for answers.
trait DecodeAnswer {
    fn decode_single_for(payload: &[u8], version: PackageVersion) -> Self;
}
impl DecodeAnswer for Uplink {
    fn decode_single_for(payload: &[u8], version: PackageVersion) -> Self {
        let mut all: Vec<Uplink> = decode_all::<Uplink>(payload, version)
            .map(|c| c.expect("valid TS004 answer"))
            .collect();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }
}

fn accepted(frag_index: u8) -> Uplink {
    Uplink::FragSessionSetupAns {
        frag_index,
        frag_algo_unsupported: false,
        not_enough_memory: false,
        frag_index_unsupported: false,
        wrong_descriptor: false,
        session_cnt_replay: false,
    }
}

fn new_device(version: PackageVersion) -> Device {
    Device::new(config(version), 16 * 1024, 16 * 1024)
}

/// Joins group 0 (McAddr 0x26011234) and synchronises the clock.
fn ready<'w>(device: &mut Device, workspace: &'w mut [u8], version: PackageVersion) -> Node<'w> {
    let (mut node, _) = device.boot(workspace, T);
    support::sync_clock(&mut node, T, version);
    let group = downlink(&[Ts005::McGroupSetupReq {
        mc_group_id: 0,
        mc_addr: MC_ADDR,
        mc_key_encrypted: support::mc_key_for_device(MC_KEY),
        min_mc_fcnt: 0,
        max_mc_fcnt: u32::MAX,
    }]);
    node.handle_downlink(T, 200, &group);
    uplinks(&mut node, T);
    node
}

#[test]
fn setup_sets_every_error_bit_that_applies() {
    let version = PackageVersion::V2;
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let mut node = ready(&mut device, &mut workspace, version);
    let block = Block::image(50, version);
    let good = block.setup(5, false, 1);

    let answer = setup_answer(
        &mut node,
        T,
        FragSessionSetup {
            frag_algo: 1,
            ..good
        },
        version,
    );
    assert!(matches!(
        answer,
        Uplink::FragSessionSetupAns {
            frag_algo_unsupported: true,
            not_enough_memory: false,
            ..
        }
    ));
    let answer = setup_answer(
        &mut node,
        T,
        FragSessionSetup {
            frag_index: 1,
            ..good
        },
        version,
    );
    assert!(matches!(
        answer,
        Uplink::FragSessionSetupAns {
            frag_index: 1,
            frag_index_unsupported: true,
            ..
        }
    ));
    // 20000 × 50 bytes do not fit the 16 KB slot.
    let answer = setup_answer(
        &mut node,
        T,
        FragSessionSetup {
            nb_frag: 20_000,
            ..good
        },
        version,
    );
    assert!(matches!(
        answer,
        Uplink::FragSessionSetupAns {
            not_enough_memory: true,
            ..
        }
    ));
    // Padding not smaller than FragSize is no block at all.
    let answer = setup_answer(
        &mut node,
        T,
        FragSessionSetup {
            padding: 50,
            ..good
        },
        version,
    );
    assert!(matches!(
        answer,
        Uplink::FragSessionSetupAns {
            not_enough_memory: true,
            ..
        }
    ));
    // All three at once, FragIndex 2: 02 87.
    let all = FragSessionSetup {
        frag_index: 2,
        frag_algo: 3,
        nb_frag: 20_000,
        ..good
    };
    node.handle_downlink(T, 201, &downlink(&[Downlink::FragSessionSetupReq(all)]));
    assert_eq!(uplinks(&mut node, T)[0].payload.as_slice(), bytes("02 87"));

    // Accepted, then SessionCnt replay for an equal or lower counter.
    assert_eq!(setup_answer(&mut node, T, good, version), accepted(0));
    for replayed in [5, 4, 0] {
        let v2 = good.v2.map(|v2| SessionSetupV2 {
            session_cnt: replayed,
            ..v2
        });
        let answer = setup_answer(&mut node, T, FragSessionSetup { v2, ..good }, version);
        assert!(
            matches!(
                answer,
                Uplink::FragSessionSetupAns {
                    session_cnt_replay: true,
                    ..
                }
            ),
            "{replayed}"
        );
    }
    let next = good.v2.map(|v2| SessionSetupV2 {
        session_cnt: 6,
        ..v2
    });
    assert_eq!(
        setup_answer(&mut node, T, FragSessionSetup { v2: next, ..good }, version),
        accepted(0)
    );

    // Decoder RAM: a device with a 64-byte workspace cannot hold the decoder.
    drop(node);
    let mut tiny = vec![0u8; 64];
    let mut small = Device::new(config(version), 16 * 1024, 16 * 1024);
    let (mut node, _) = small.boot(&mut tiny, T);
    uplinks(&mut node, T);
    let answer = setup_answer(&mut node, T, good, version);
    assert!(matches!(
        answer,
        Uplink::FragSessionSetupAns {
            not_enough_memory: true,
            session_cnt_replay: false,
            ..
        }
    ));
    // Log: a 1 KB log cannot hold the rows of 5 % of 251 fragments.
    drop(node);
    let mut short_log = Device::new(config(version), 16 * 1024, 1024);
    let (mut node, _) = short_log.boot(&mut tiny, T);
    uplinks(&mut node, T);
    let mut workspace = vec![0u8; 8192];
    drop(node);
    let (mut node, _) = short_log.boot(&mut workspace, T);
    uplinks(&mut node, T);
    let answer = setup_answer(&mut node, T, good, version);
    assert!(matches!(
        answer,
        Uplink::FragSessionSetupAns {
            not_enough_memory: true,
            ..
        }
    ));
}

#[test]
fn reference_setup_vectors_are_accepted() {
    // v1 lrwn vector: FragIndex 3, NbFrag 1024, FragSize 128, matrix 1 → algo unsupported.
    let mut config_v1 = config(PackageVersion::V1);
    config_v1.fragmentation_indexes = 4;
    let mut device = Device::new(config_v1, 132 * 1024, 64 * 1024);
    let mut workspace = vec![0u8; 16 * 1024];
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    node.handle_downlink(T, 201, &bytes("02 31 00 04 80 0d 40 01 02 03 04"));
    assert_eq!(uplinks(&mut node, T)[0].payload.as_slice(), bytes("02 c1"));
    // The same with FragmentationMatrix 0: accepted (02 c0).
    node.handle_downlink(T, 201, &bytes("02 31 00 04 80 05 40 01 02 03 04"));
    assert_eq!(uplinks(&mut node, T)[0].payload.as_slice(), bytes("02 c0"));
    let progress = node.fragmentation_progress().unwrap();
    assert_eq!(
        (progress.frag_index, progress.nb_frag, progress.missing),
        (3, 1024, 1024)
    );
    assert!(
        progress.max_lost >= 52,
        "at least 5 % of 1024: {}",
        progress.max_lost
    );

    // v2 computed vector (§4.1): idx 0, NbFrag 10, FragSize 10, AckReception,
    // SessionCnt 1, MIC of the block 00..63 → accepted (02 00).
    drop(node);
    let mut device = Device::new(config(PackageVersion::V2), 4096, 4096);
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    node.handle_downlink(
        T,
        201,
        &bytes("02 01 0a 00 0a 41 00 01 02 03 04 01 00 85 38 f3 0c"),
    );
    assert_eq!(uplinks(&mut node, T)[0].payload.as_slice(), bytes("02 00"));
    // Fragments N = 1..10 of 00..63 by unicast (vector 08 01 00 00 01 .. 09 first).
    node.handle_downlink(T, 201, &bytes("08 01 00 00 01 02 03 04 05 06 07 08 09"));
    for n in 2..=10u16 {
        let data: Vec<u8> = (0..10).map(|i| ((n - 1) * 10 + i) as u8).collect();
        node.handle_downlink(
            T,
            201,
            &downlink(&[Downlink::DataFragment {
                frag_index: 0,
                fragment_number: n,
                data: &data,
            }]),
        );
    }
    let progress = node.fragmentation_progress().unwrap();
    assert_eq!(
        (progress.complete, progress.mic),
        (true, Some(MicCheck::Passed))
    );
    // PackageVersionReq → 00 03 02, sent together with the FragDataBlockReceivedReq
    // (AckReception) that is due by then: one uplink, two answers.
    node.handle_downlink(T, 201, &bytes("00"));
    let answers: Vec<Vec<u8>> = uplinks(&mut node, T.plus_secs(40))
        .iter()
        .map(|u| u.payload.to_vec())
        .collect();
    assert_eq!(answers, [bytes("00 03 02 04 00")]);
}

/// Sends `numbers` of `block` by multicast and returns the node's progress at the end.
fn send_multicast(node: &mut Node<'_>, block: &Block, numbers: &[u16], sender: &mut McSender) {
    for &n in numbers {
        let frame = sender.frame(201, &block.fragment(n));
        node.handle_multicast_frame(T, &frame)
            .expect("authentic frame");
    }
}

fn rebuild_block(frag_size: usize, version: PackageVersion, seed: u64) {
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let mut node = ready(&mut device, &mut workspace, version);
    let block = Block::image(frag_size, version);
    assert_eq!(
        setup_answer(&mut node, T, block.setup(1, false, 2), version),
        accepted(0)
    );
    let erases_after_setup = device.slot.erase_count();

    let mut rng = TestRng(seed);
    let m = block.nb_frag();
    let coded = (m / 4).max(12);
    let numbers = block.schedule(coded, 10, &mut rng);
    let mut sender = McSender::new(MC_ADDR, MC_KEY, 0);
    send_multicast(&mut node, &block, &numbers, &mut sender);

    let progress = node.fragmentation_progress().unwrap();
    assert!(
        progress.complete,
        "{frag_size}-byte fragments, {version:?}: {progress:?}"
    );
    assert!(!progress.memory_error);
    // Fragments after completion are not used but counted: NbFragReceived is what the
    // server measures the device's loss from.
    assert!(
        numbers.len() > usize::from(m),
        "the schedule runs past completion"
    );
    assert_eq!(progress.received as usize, numbers.len());
    let expected_mic = match version {
        PackageVersion::V1 => MicCheck::NotApplicable,
        PackageVersion::V2 => MicCheck::Passed,
    };
    assert_eq!(progress.mic, Some(expected_mic));
    assert_eq!(device.slot.read_bytes(0..block.data.len()), block.data);
    assert_eq!(
        device.slot.erase_count(),
        erases_after_setup,
        "no slot page erased during the session"
    );
    assert_eq!(node.stats().fragmentation.flash_errors, 0);
    let lost_uncoded = (1..=m).filter(|n| !numbers.contains(n)).count();
    assert!(lost_uncoded > 0, "some uncoded fragments were rebuilt");
    // TS006 sees a valid image of version 1.3.0.
    assert_eq!(
        node.upgrade_image().status,
        lorawan_fuota::codec::firmware_management::UpgradeImageStatus::Valid {
            next_firmware_version: 0x0103_0000
        }
    );
}

#[test]
fn blocks_of_48_50_and_232_byte_fragments_are_rebuilt_from_lossy_shuffled_multicast() {
    for version in [PackageVersion::V1, PackageVersion::V2] {
        for (frag_size, seed) in [(48, 11), (50, 12), (232, 13)] {
            rebuild_block(frag_size, version, seed);
        }
    }
}

#[test]
fn status_answers_follow_the_version_layout_participants_and_delay() {
    for version in [PackageVersion::V1, PackageVersion::V2] {
        let mut device = new_device(version);
        let mut workspace = vec![0u8; 8192];
        let mut node = ready(&mut device, &mut workspace, version);
        let status_req = |participants_all| {
            downlink(&[Downlink::FragSessionStatusReq {
                frag_index: 0,
                participants_all,
            }])
        };

        // No session: v2 says so in one byte, v1 stays silent.
        node.handle_downlink(T, 201, &status_req(true));
        let answers = uplinks(&mut node, T);
        match version {
            PackageVersion::V1 => assert!(answers.is_empty()),
            PackageVersion::V2 => assert_eq!(answers[0].payload.as_slice(), bytes("01 04")),
        }

        // 300 fragments missing: MissingFrag saturates at 255.
        let block = Block {
            data: vec![0x5A; 3000],
            frag_size: 10,
            version,
        };
        assert_eq!(
            setup_answer(&mut node, T, block.setup(1, false, 1), version),
            accepted(0)
        );
        node.handle_downlink(T, 201, &block.fragment(7));
        node.handle_downlink(T, 201, &status_req(false));
        let answer = Uplink::decode_single_for(&uplinks(&mut node, T)[0].payload, version);
        let reception = ReceptionStatus {
            frag_index: 0,
            nb_frag_received: 1,
            missing_frag: 255,
        };
        match version {
            PackageVersion::V1 => assert_eq!(
                answer,
                Uplink::FragSessionStatusAnsV1 {
                    reception,
                    not_enough_matrix_memory: false
                }
            ),
            PackageVersion::V2 => assert_eq!(
                answer,
                Uplink::FragSessionStatusAnsV2 {
                    memory_error: false,
                    mic_error: false,
                    session_does_not_exist: false,
                    reception: Some(reception)
                }
            ),
        }

        // By multicast: delayed by a random time within 2^(1+4) = 32 s, and built when
        // sent (it reports fragments received meanwhile).
        let mut sender = McSender::new(MC_ADDR, MC_KEY, 0);
        node.handle_multicast_frame(T, &sender.frame(201, &status_req(true)))
            .unwrap();
        let due = node.next_uplink_at().expect("answer scheduled");
        assert!(due.millis_since(T) <= 32_000, "{due:?}");
        node.handle_downlink(T, 201, &block.fragment(8));
        let answer = Uplink::decode_single_for(&uplinks(&mut node, due)[0].payload, version);
        let received = match answer {
            Uplink::FragSessionStatusAnsV1 { reception, .. } => reception.nb_frag_received,
            Uplink::FragSessionStatusAnsV2 {
                reception: Some(reception),
                ..
            } => reception.nb_frag_received,
            other => panic!("{other:?}"),
        };
        assert_eq!(received, 2);

        // Complete: Participants = 0 → silence; Participants = 1 → MissingFrag 0.
        for n in 1..=block.nb_frag() {
            node.handle_downlink(T, 201, &block.fragment(n));
        }
        assert!(node.fragmentation_progress().unwrap().complete);
        uplinks(&mut node, T.plus_secs(10_000));
        node.handle_downlink(T.plus_secs(10_000), 201, &status_req(false));
        assert!(uplinks(&mut node, T.plus_secs(10_000)).is_empty());
        node.handle_downlink(T.plus_secs(10_000), 201, &status_req(true));
        let answer =
            Uplink::decode_single_for(&uplinks(&mut node, T.plus_secs(10_000))[0].payload, version);
        let missing = match answer {
            Uplink::FragSessionStatusAnsV1 { reception, .. } => reception.missing_frag,
            Uplink::FragSessionStatusAnsV2 {
                reception: Some(reception),
                ..
            } => reception.missing_frag,
            other => panic!("{other:?}"),
        };
        assert_eq!(missing, 0);
    }

    // The delay is uniformly spread: many devices, one multicast request.
    let mut delays = Vec::new();
    for seed in 0..24u64 {
        let mut device = new_device(PackageVersion::V2);
        device.seed = seed * 7919;
        let mut workspace = vec![0u8; 8192];
        let mut node = ready(&mut device, &mut workspace, PackageVersion::V2);
        let block = Block {
            data: vec![1; 100],
            frag_size: 10,
            version: PackageVersion::V2,
        };
        setup_answer(&mut node, T, block.setup(1, false, 3), PackageVersion::V2);
        let mut sender = McSender::new(MC_ADDR, MC_KEY, 0);
        let request = downlink(&[Downlink::FragSessionStatusReq {
            frag_index: 0,
            participants_all: true,
        }]);
        node.handle_multicast_frame(T, &sender.frame(201, &request))
            .unwrap();
        delays.push(node.next_uplink_at().unwrap().millis_since(T));
    }
    assert!(delays.iter().all(|&d| d <= 128_000), "{delays:?}");
    assert!(
        delays.iter().any(|&d| d < 64_000) && delays.iter().any(|&d| d >= 64_000),
        "{delays:?}"
    );
}

#[test]
fn v2_mic_error_is_reported_and_block_received_is_repeated_until_acknowledged() {
    let version = PackageVersion::V2;
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let mut node = ready(&mut device, &mut workspace, version);
    let block = Block::image(232, version);
    let mut setup = block.setup(3, true, 0);
    if let Some(v2) = &mut setup.v2 {
        v2.mic[0] ^= 0xFF;
    }
    assert_eq!(setup_answer(&mut node, T, setup, version), accepted(0));
    for n in 1..=block.nb_frag() {
        node.handle_downlink(T, 201, &block.fragment(n));
    }
    let progress = node.fragmentation_progress().unwrap();
    assert_eq!(
        (progress.complete, progress.mic),
        (true, Some(MicCheck::Failed))
    );

    // FragDataBlockReceivedReq with MICError (04 04), within 2^4 s, then repeated.
    let first = node.next_uplink_at().unwrap();
    assert!(first.millis_since(T) <= 16_000);
    assert_eq!(
        uplinks(&mut node, first)[0].payload.as_slice(),
        bytes("04 04")
    );
    let second = node.next_uplink_at().unwrap();
    assert!(second.millis_since(first) >= 16_000);
    assert_eq!(
        uplinks(&mut node, second)[0].payload.as_slice(),
        bytes("04 04")
    );
    // Status says MICError too.
    node.handle_downlink(second, 201, &bytes("01 01"));
    assert_eq!(
        uplinks(&mut node, second)[0].payload.as_slice()[..2],
        bytes("01 02")[..]
    );
    // TS006: the block is not an image to install.
    assert_eq!(
        node.upgrade_image().status,
        lorawan_fuota::codec::firmware_management::UpgradeImageStatus::CorruptOrBadSignature
    );
    // FragDataBlockReceivedAns stops the repetition.
    node.handle_downlink(second, 201, &bytes("04 00"));
    assert_eq!(node.next_uplink_at(), None);

    // A good MIC: 04 00, and the configured number of attempts without an answer.
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let mut node = ready(&mut device, &mut workspace, version);
    assert_eq!(
        setup_answer(&mut node, T, block.setup(4, true, 0), version),
        accepted(0)
    );
    for n in 1..=block.nb_frag() {
        node.handle_downlink(T, 201, &block.fragment(n));
    }
    let mut sent = 0;
    while let Some(at) = node.next_uplink_at() {
        assert_eq!(uplinks(&mut node, at)[0].payload.as_slice(), bytes("04 00"));
        sent += 1;
    }
    assert_eq!(sent, 8);
}

/// Fragments of `received` whose every 8-byte flash granule is covered by received
/// fragments (the journal's durability rule, computed independently).
fn durable_fragments(received: &[u16], frag_size: usize, nb_frag: u16) -> usize {
    let block_end = usize::from(nb_frag) * frag_size;
    let have: std::collections::HashSet<u16> = received.iter().copied().collect();
    let byte_known =
        |byte: usize| byte >= block_end || have.contains(&((byte / frag_size) as u16 + 1));
    received
        .iter()
        .filter(|&&n| {
            let start = usize::from(n - 1) * frag_size;
            let end = start + frag_size;
            let first_granule = start / 8 * 8;
            let last_granule_end = end.div_ceil(8) * 8;
            (first_granule..last_granule_end).all(byte_known)
        })
        .count()
}

fn resume_after_reboot(frag_size: usize) {
    let version = PackageVersion::V2;
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let block = Block::image(frag_size, version);
    let m = block.nb_frag();
    let mut rng = TestRng(frag_size as u64);
    let mut order: Vec<u16> = (1..=m).collect();
    rng.shuffle(&mut order);
    let (before, after) = order.split_at(usize::from(m) * 6 / 10);
    let mut sender = McSender::new(MC_ADDR, MC_KEY, 0);
    let erases_after_setup;
    {
        let mut node = ready(&mut device, &mut workspace, version);
        // The Class C session of the download, on a channel other than RX2.
        let session = downlink(&[Ts005::McClassCSessionReq {
            mc_group_id: 0,
            session_time: support::gps_at(T, 10),
            time_out: 12,
            dl_frequency_hz: support::SESSION_FREQUENCY_HZ,
            data_rate: support::SESSION_DATA_RATE,
        }]);
        node.handle_downlink(T, 200, &session);
        assert_eq!(
            uplinks(&mut node, T)[0].payload.as_slice(),
            bytes("04 00 0a 00 00")
        );
        assert_eq!(
            setup_answer(&mut node, T, block.setup(9, false, 1), version),
            accepted(0)
        );
        erases_after_setup = device.slot.erase_count();
        let mut sent: Vec<u16> = before.to_vec();
        sent.extend(m + 1..m + 6); // some coded fragments too
        send_multicast(&mut node, &block, &sent, &mut sender);
        assert_eq!(
            node.fragmentation_progress().unwrap().missing,
            m - before.len() as u16
        );
        // Power cut: the node (RAM) is gone; flash and store remain.
    }
    let resumed_at = T.plus_secs(20);
    let (mut node, report) = device.boot(&mut workspace, resumed_at);
    assert_eq!(report.state, StateLoad::Restored);
    let resumed = report.resumed.expect("session resumed");
    // Kept: every durable fragment (all its flash granules programmed) but those of
    // the journal window still in RAM at the power cut (at most 39).
    let durable = durable_fragments(before, frag_size, m);
    let kept = resumed.replayed as usize;
    assert!(
        kept <= durable && kept + 39 >= durable,
        "{frag_size}: kept {kept} of {durable} durable ({} received)",
        before.len()
    );
    if frag_size.is_multiple_of(8) {
        assert_eq!(durable, before.len());
    }
    assert_eq!(resumed.skipped, 0);
    let progress = node.fragmentation_progress().unwrap();
    assert_eq!(progress.missing, m - kept as u16);
    assert_eq!(progress.received as usize, kept);
    // The clock is re-learnt; the Class C session is still known and restarts.
    support::sync_clock(&mut node, resumed_at, version);
    assert!(matches!(
        actions(&mut node, resumed_at)[..],
        [Action::StartClassC { .. }]
    ));

    // Only what was not received is sent again (10 % of it lost), plus coded
    // fragments: enough for those lost and those the power cut took.
    let mut rest: Vec<u16> = after.to_vec();
    let lost = rest.len() / 10;
    rest.truncate(rest.len() - lost);
    rest.extend(m + 10..m + 10 + (m / 2).max(12));
    send_multicast(&mut node, &block, &rest, &mut sender);
    let progress = node.fragmentation_progress().unwrap();
    assert!(progress.complete, "{frag_size}: {progress:?}");
    assert_eq!(progress.mic, Some(MicCheck::Passed));
    assert_eq!(device.slot.read_bytes(0..block.data.len()), block.data);
    assert_eq!(
        device.slot.erase_count(),
        erases_after_setup,
        "slot never erased after setup"
    );
    assert_eq!(
        node.stats().fragmentation.flash_errors,
        0,
        "no granule programmed twice"
    );
    // Completion ends the Class C session.
    assert_eq!(actions(&mut node, resumed_at), [Action::ReturnToClassA]);

    // Reboot once more: the completed block is remembered.
    drop(node);
    let (mut node, report) = device.boot(&mut workspace, resumed_at);
    assert_eq!(report.resumed, None);
    let progress = node.fragmentation_progress().unwrap();
    assert_eq!(
        (progress.complete, progress.missing, progress.mic),
        (true, 0, Some(MicCheck::Passed))
    );
    assert!(matches!(
        node.upgrade_image().status,
        lorawan_fuota::codec::firmware_management::UpgradeImageStatus::Valid { .. }
    ));
}

#[test]
fn reboot_mid_download_resumes_without_downloading_stored_fragments_again() {
    for frag_size in [48, 50, 232] {
        resume_after_reboot(frag_size);
    }
}

#[test]
fn session_cnt_replay_is_refused_after_a_reboot() {
    let version = PackageVersion::V2;
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let block = Block {
        data: vec![3; 500],
        frag_size: 50,
        version,
    };
    {
        let (mut node, _) = device.boot(&mut workspace, T);
        uplinks(&mut node, T);
        assert_eq!(
            setup_answer(&mut node, T, block.setup(7, false, 0), version),
            accepted(0)
        );
        node.handle_downlink(T, 201, &bytes("03 00"));
        assert_eq!(uplinks(&mut node, T)[0].payload.as_slice(), bytes("03 00"));
        node.handle_downlink(T, 201, &bytes("03 00"));
        assert_eq!(uplinks(&mut node, T)[0].payload.as_slice(), bytes("03 04"));
    }
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    for replayed in [7, 2] {
        let answer = setup_answer(&mut node, T, block.setup(replayed, false, 0), version);
        assert!(matches!(
            answer,
            Uplink::FragSessionSetupAns {
                session_cnt_replay: true,
                not_enough_memory: false,
                ..
            }
        ));
    }
    assert_eq!(
        setup_answer(&mut node, T, block.setup(8, false, 0), version),
        accepted(0)
    );
}

#[test]
fn a_second_session_in_the_same_run_recycles_the_workspace() {
    let version = PackageVersion::V2;
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let first = Block {
        data: (0..=255).cycle().take(1000).collect(),
        frag_size: 48,
        version,
    };
    let second = Block {
        data: (0..=255).rev().cycle().take(1500).collect(),
        frag_size: 50,
        version,
    };

    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    // A setup repeated before any fragment (its answer was lost) reuses the decoder.
    assert_eq!(
        setup_answer(&mut node, T, first.setup(1, false, 0), version),
        accepted(0)
    );
    assert_eq!(
        setup_answer(&mut node, T, first.setup(2, false, 0), version),
        accepted(0)
    );
    assert!(actions(&mut node, T).is_empty());
    for n in 1..=first.nb_frag() {
        node.handle_downlink(T, 201, &first.fragment(n));
    }
    assert!(node.fragmentation_progress().unwrap().complete);

    // The next session needs the workspace the first decoder holds: the firmware loop
    // recycles the node on the same buffer.
    assert_eq!(
        setup_answer(&mut node, T, second.setup(3, false, 0), version),
        accepted(0)
    );
    // Until then, fragments of the new session are not taken (the old decoder is gone).
    node.handle_downlink(T, 201, &second.fragment(1));
    assert_eq!(node.fragmentation_progress().unwrap().received, 0);
    assert_eq!(
        device.slot.read_bytes(0..1000),
        first.data,
        "slot untouched"
    );
    let mut recycled = 0;
    for action in actions(&mut node, T) {
        assert_eq!(action, Action::RecycleWorkspace);
        node = FuotaNode::start(node.into_parts(), &mut workspace, T).0;
        recycled += 1;
    }
    assert_eq!(recycled, 1);
    for n in (1..=second.nb_frag()).rev() {
        node.handle_downlink(T, 201, &second.fragment(n));
    }
    let progress = node.fragmentation_progress().unwrap();
    assert_eq!(
        (progress.complete, progress.mic),
        (true, Some(MicCheck::Passed))
    );
    assert_eq!(device.slot.read_bytes(0..1500), second.data);
}

#[test]
fn fragments_for_other_sessions_or_groups_are_ignored() {
    let version = PackageVersion::V1;
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let mut node = ready(&mut device, &mut workspace, version);
    let block = Block {
        data: vec![9; 200],
        frag_size: 20,
        version,
    };
    let setup = FragSessionSetup {
        mc_group_bit_mask: 0b0010,
        ..block.setup(0, false, 0)
    };
    assert_eq!(setup_answer(&mut node, T, setup, version), accepted(0));
    // Group 0 is not in McGroupBitMask 0b0010.
    let mut sender = McSender::new(MC_ADDR, MC_KEY, 0);
    let received = node
        .handle_multicast_frame(T, &sender.frame(201, &block.fragment(1)))
        .unwrap();
    assert_eq!((received.report.handled, received.report.ignored), (0, 1));
    // Another FragIndex, a wrong length: ignored.
    let other = downlink(&[Downlink::DataFragment {
        frag_index: 1,
        fragment_number: 1,
        data: &[9; 20],
    }]);
    node.handle_downlink(T, 201, &other);
    let short = downlink(&[Downlink::DataFragment {
        frag_index: 0,
        fragment_number: 1,
        data: &[9; 19],
    }]);
    node.handle_downlink(T, 201, &short);
    assert_eq!(node.fragmentation_progress().unwrap().received, 0);
    assert_eq!(node.stats().fragmentation.fragments_ignored, 3);
    // By unicast it is taken.
    node.handle_downlink(T, 201, &block.fragment(1));
    assert_eq!(node.fragmentation_progress().unwrap().received, 1);
}

#[test]
fn losing_more_than_the_decoder_can_rebuild_is_reported_as_a_memory_error() {
    for version in [PackageVersion::V1, PackageVersion::V2] {
        let mut config = config(version);
        config.fec_capacity_percent = 10;
        let mut device = Device::new(config, 16 * 1024, 16 * 1024);
        let mut workspace = vec![0u8; 8192];
        let (mut node, _) = device.boot(&mut workspace, T);
        uplinks(&mut node, T);
        let block = Block {
            data: (0..1000u32).map(|i| i as u8).collect(),
            frag_size: 10,
            version,
        };
        assert_eq!(
            setup_answer(&mut node, T, block.setup(1, false, 0), version),
            accepted(0)
        );
        assert_eq!(node.fragmentation_progress().unwrap().max_lost, 10);
        // In order, 20 of the 100 uncoded fragments lost, then coded ones.
        for n in (1..=100u16).filter(|n| n % 5 != 0).chain(101..140) {
            node.handle_downlink(T, 201, &block.fragment(n));
        }
        let progress = node.fragmentation_progress().unwrap();
        assert!(!progress.complete && progress.memory_error, "{progress:?}");
        node.handle_downlink(T, 201, &bytes("01 01"));
        let payload = uplinks(&mut node, T)[0].payload.to_vec();
        match version {
            // Received&Index, MissingFrag 20, NotEnoughMatrixMemory.
            PackageVersion::V1 => assert_eq!(payload, [0x01, 119, 0x00, 20, 0x01]),
            // MemoryError first.
            PackageVersion::V2 => assert_eq!(payload, [0x01, 0x01, 119, 0x00, 20]),
        }
    }
}

#[test]
fn a_session_that_no_longer_fits_after_a_reboot_is_reported_not_lost() {
    let version = PackageVersion::V2;
    let mut device = new_device(version);
    let mut workspace = vec![0u8; 8192];
    let block = Block {
        data: vec![0x77; 4000],
        frag_size: 50,
        version,
    };
    {
        let (mut node, _) = device.boot(&mut workspace, T);
        uplinks(&mut node, T);
        assert_eq!(
            setup_answer(&mut node, T, block.setup(1, false, 0), version),
            accepted(0)
        );
        for n in 1..=40 {
            node.handle_downlink(T, 201, &block.fragment(n));
        }
    }
    // A firmware with a far smaller workspace: the session cannot resume...
    let mut tiny = vec![0u8; 32];
    let (node, report) = device.boot(&mut tiny, T);
    assert_eq!(report.resumed, None);
    let progress = node.fragmentation_progress().unwrap();
    assert!(progress.memory_error && !progress.complete);
    drop(node);
    // ...but nothing was lost: with the workspace back, it resumes where it was.
    let (node, report) = device.boot(&mut workspace, T);
    assert_eq!(report.resumed.map(|r| r.replayed), Some(40));
    assert_eq!(
        node.fragmentation_progress().unwrap().missing,
        block.nb_frag() - 40
    );
}
