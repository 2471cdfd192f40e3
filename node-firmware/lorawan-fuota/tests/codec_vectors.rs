//! Every message vector of `shared/reference/test-vectors.md` §1 (TS003), §2 (TS005),
//! §4.1 (TS004) and §7 (TS006), byte-exact in both directions: the struct encodes to the
//! bytes, and the bytes decode to the struct under each version the vector applies to.
//! (§3.2's McGroupSetupReq encodings are included as well.)

use core::fmt::Debug;

use lorawan_fuota::codec::{
    clock_sync, firmware_management, fragmentation, multicast_setup, Command, PackageVersion,
    PackageVersionAns,
};

const V1: &[PackageVersion] = &[PackageVersion::V1];
const V2: &[PackageVersion] = &[PackageVersion::V2];
const BOTH: &[PackageVersion] = &[PackageVersion::V1, PackageVersion::V2];

fn bytes(hex: &str) -> Vec<u8> {
    hex::decode(hex.replace(' ', "")).unwrap()
}

/// `value` encodes to `hex`, and `hex` decodes to `value` under every version in
/// `versions`.
fn vector<C>(value: C, hex: &str, versions: &[PackageVersion])
where
    C: for<'x> Command<'x> + PartialEq + Debug + Copy,
{
    let expected = bytes(hex);
    let mut out = [0u8; 64];
    let length = value.encode_to(&mut out).unwrap();
    assert_eq!(
        hex::encode(&out[..length]),
        hex::encode(&expected),
        "encoding {value:?}"
    );
    for &version in versions {
        assert_eq!(
            C::decode_single(&expected, version),
            Ok(value),
            "decoding {hex} as {version:?}"
        );
    }
}

/// [`vector`] for TS004 downlinks, which borrow DataFragment bytes.
fn fragmentation_downlink_vector(
    value: fragmentation::Downlink<'_>,
    hex: &str,
    versions: &[PackageVersion],
) {
    let expected = bytes(hex);
    let mut out = [0u8; 64];
    let length = value.encode_to(&mut out).unwrap();
    assert_eq!(
        hex::encode(&out[..length]),
        hex::encode(&expected),
        "encoding {value:?}"
    );
    for &version in versions {
        assert_eq!(
            fragmentation::Downlink::decode_single(&expected, version),
            Ok(value),
            "decoding {hex} as {version:?}"
        );
    }
}

fn package_version_ans(package_identifier: u8, package_version: u8) -> PackageVersionAns {
    PackageVersionAns {
        package_identifier,
        package_version,
    }
}

// ------------------------------------------------------------------------------------------
// §1 TS003

#[test]
fn ts003_vectors() {
    use clock_sync::{Downlink, Uplink};
    vector(Downlink::PackageVersionReq, "00", BOTH);
    vector(
        Uplink::PackageVersionAns(package_version_ans(1, 1)),
        "00 01 01",
        BOTH,
    );
    vector(
        Uplink::AppTimeReq {
            device_time: 1024,
            ans_required: true,
            token: 15,
        },
        "01 00 04 00 00 1f",
        BOTH,
    );
    vector(
        Downlink::AppTimeAns {
            time_correction: 1024,
            token: 15,
        },
        "01 00 04 00 00 0f",
        BOTH,
    );
    vector(
        Downlink::AppTimeAns {
            time_correction: -5,
            token: 3,
        },
        "01 fb ff ff ff 03",
        BOTH,
    );
    vector(
        Downlink::AppTimeAns {
            time_correction: 0x7FFF_FFFF,
            token: 0,
        },
        "01 ff ff ff 7f 00",
        V2,
    );
    vector(
        Downlink::DeviceAppTimePeriodicityReq { period: 15 },
        "02 0f",
        BOTH,
    );
    vector(
        Uplink::DeviceAppTimePeriodicityAns {
            not_supported: true,
            device_time: 1024,
        },
        "02 01 00 04 00 00",
        BOTH,
    );
    vector(
        Downlink::ForceDeviceResync {
            nb_transmissions: 7,
        },
        "03 07",
        BOTH,
    );
}

#[test]
fn ts003_spec_example_2050_saturates_then_completes() {
    use clock_sync::{time_correction, Downlink, TimeCorrection};
    // DeviceTime 0 on 2050-01-01 00:00:00 UTC needs +2208643200 (0x83A53880).
    let network = 2_208_643_200u64;
    let first = time_correction(network, 0, PackageVersion::V2);
    assert_eq!(
        first,
        TimeCorrection {
            seconds: 0x7FFF_FFFF,
            saturated: true
        }
    );
    let answer = Downlink::AppTimeAns {
        time_correction: first.seconds,
        token: 0,
    };
    vector(answer, "01 ff ff ff 7f 00", V2);
    let device_after_first = first.seconds as u32;
    let second = time_correction(network, device_after_first, PackageVersion::V2);
    assert_eq!(
        second,
        TimeCorrection {
            seconds: 0x03A5_3881,
            saturated: false
        }
    );
    vector(
        Downlink::AppTimeAns {
            time_correction: second.seconds,
            token: 1,
        },
        "01 81 38 a5 03 01",
        V2,
    );
    assert_eq!(
        u64::from(device_after_first) + second.seconds as u64,
        network
    );
}

#[test]
fn ts003_device_in_sync_needs_no_correction() {
    // ChirpStack clocksync.rs "device synced": gateway GPS time 1234 s, DeviceTime 1234.
    for version in [PackageVersion::V1, PackageVersion::V2] {
        let correction = clock_sync::time_correction(1234, 1234, version);
        assert_eq!(correction.seconds, 0);
        assert!(!correction.saturated);
    }
}

// ------------------------------------------------------------------------------------------
// §2 TS005

fn session(
    mc_group_id: u8,
    status_bits: u8,
    time_to_start: Option<u32>,
) -> multicast_setup::SessionAns {
    multicast_setup::SessionAns {
        mc_group_id,
        dr_error: status_bits & 0x04 != 0,
        freq_error: status_bits & 0x08 != 0,
        mc_group_undefined: status_bits & 0x10 != 0,
        start_missed: status_bits & 0x20 != 0,
        reserved_errors: status_bits >> 6,
        time_to_start,
    }
}

#[test]
fn ts005_vectors() {
    use multicast_setup::{Downlink, McGroupStatus, Uplink};
    vector(
        Downlink::McGroupStatusReq {
            req_group_mask: 0b0011,
        },
        "01 03",
        BOTH,
    );
    vector(
        Uplink::McGroupStatusAns(McGroupStatus {
            nb_total_groups: 2,
            mc_addr: [Some(0x0102_0304), Some(0x0202_0304), None, None],
        }),
        "01 23 00 04 03 02 01 01 04 03 02 02",
        BOTH,
    );
    vector(
        Downlink::McGroupSetupReq {
            mc_group_id: 2,
            mc_addr: 0x0102_0304,
            mc_key_encrypted: [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            min_mc_fcnt: 1024,
            max_mc_fcnt: 2048,
        },
        "02 02 04 03 02 01 01 02 03 04 05 06 07 08 01 02 03 04 05 06 07 08 00 04 00 00 00 08 00 00",
        BOTH,
    );
    vector(
        Uplink::McGroupSetupAns {
            mc_group_id: 2,
            id_error: true,
        },
        "02 06",
        BOTH,
    );
    vector(Downlink::McGroupDeleteReq { mc_group_id: 3 }, "03 03", BOTH);
    vector(
        Uplink::McGroupDeleteAns {
            mc_group_id: 3,
            mc_group_undefined: true,
        },
        "03 07",
        BOTH,
    );
    vector(
        Downlink::McClassCSessionReq {
            mc_group_id: 2,
            session_time: 1024,
            time_out: 15,
            dl_frequency_hz: 868_100_000,
            data_rate: 5,
        },
        "04 02 00 04 00 00 0f 28 76 84 05",
        BOTH,
    );
    vector(
        Uplink::McClassCSessionAns(session(2, 0, Some(1024))),
        "04 02 00 04 00",
        BOTH,
    );
    vector(
        Uplink::McClassCSessionAns(session(2, 0x1C, None)),
        "04 1e",
        BOTH,
    );
    // v2 StartMissed only: no TimeToStart. Reference §7 item 4: LBM sends the same in v1.
    vector(
        Uplink::McClassCSessionAns(session(0, 0x20, None)),
        "04 20",
        BOTH,
    );
    vector(
        Downlink::McClassBSessionReq {
            mc_group_id: 3,
            session_time: 1024,
            time_out: 15,
            periodicity: 4,
            dl_frequency_hz: 868_100_000,
            data_rate: 5,
        },
        "05 03 00 04 00 00 4f 28 76 84 05",
        BOTH,
    );
    vector(
        Uplink::McClassBSessionAns(session(3, 0, Some(1024))),
        "05 03 00 04 00",
        BOTH,
    );
    vector(
        Uplink::McClassBSessionAns(session(3, 0x1C, None)),
        "05 1f",
        BOTH,
    );
    vector(
        Downlink::McClassCSessionReq {
            mc_group_id: 0,
            session_time: 1_436_486_418,
            time_out: 8,
            dl_frequency_hz: 869_525_000,
            data_rate: 0,
        },
        "04 00 12 0b 9f 55 08 d2 ad 84 00",
        BOTH,
    );
}

#[test]
fn ts005_key_chain_setup_requests() {
    // test-vectors.md §3.2: McGroupSetupReq carrying the encrypted keys of the chain.
    use multicast_setup::Downlink;
    let request = |key_hex: &str| {
        let mut mc_key_encrypted = [0u8; 16];
        mc_key_encrypted.copy_from_slice(&bytes(key_hex));
        Downlink::McGroupSetupReq {
            mc_group_id: 0,
            mc_addr: 0x2601_1234,
            mc_key_encrypted,
            min_mc_fcnt: 0,
            max_mc_fcnt: 0xFFFF_FFFF,
        }
    };
    vector(
        request("54d3d7a0b563b5dd91650ec5b8554af7"),
        "02 00 34 12 01 26 54d3d7a0b563b5dd91650ec5b8554af7 00000000 ffffffff",
        BOTH,
    );
    vector(
        request("feb0de53397546349b0284d13dbcaa54"),
        "02 00 34 12 01 26 feb0de53397546349b0284d13dbcaa54 00000000 ffffffff",
        BOTH,
    );
}

#[test]
fn ts005_lrwn_four_byte_start_missed_form_is_kept() {
    // Reference §7 item 1: lrwn v2 sends (and wants) TimeToStart after StartMissed.
    vector(
        multicast_setup::Uplink::McClassCSessionAns(session(0, 0x20, Some(0))),
        "04 20 00 00 00",
        BOTH,
    );
}

// ------------------------------------------------------------------------------------------
// §4.1 TS004

fn reception(
    frag_index: u8,
    nb_frag_received: u16,
    missing_frag: u8,
) -> fragmentation::ReceptionStatus {
    fragmentation::ReceptionStatus {
        frag_index,
        nb_frag_received,
        missing_frag,
    }
}

fn setup_1024_by_128(v2: Option<fragmentation::SessionSetupV2>) -> fragmentation::FragSessionSetup {
    fragmentation::FragSessionSetup {
        frag_index: 3,
        mc_group_bit_mask: 0b0001,
        nb_frag: 1024,
        frag_size: 128,
        frag_algo: 1,
        block_ack_delay: 5,
        padding: 64,
        descriptor: [1, 2, 3, 4],
        v2,
    }
}

#[test]
fn ts004_status_vectors() {
    use fragmentation::{Downlink, Uplink};
    fragmentation_downlink_vector(
        Downlink::FragSessionStatusReq {
            frag_index: 2,
            participants_all: true,
        },
        "01 05",
        BOTH,
    );
    vector(
        Uplink::FragSessionStatusAnsV1 {
            reception: reception(3, 1024, 128),
            not_enough_matrix_memory: true,
        },
        "01 00 c4 80 01",
        V1,
    );
    // lrwn v2 vector: SessionDoesNotExist with the 4-byte form; the fields are decoded and
    // re-encoding gives the same 5 bytes.
    vector(
        Uplink::FragSessionStatusAnsV2 {
            memory_error: true,
            mic_error: false,
            session_does_not_exist: true,
            reception: Some(reception(3, 1024, 128)),
        },
        "01 05 00 c4 80",
        V2,
    );
    vector(
        Uplink::FragSessionStatusAnsV2 {
            memory_error: false,
            mic_error: false,
            session_does_not_exist: true,
            reception: None,
        },
        "01 04",
        V2,
    );
    vector(
        Uplink::FragSessionStatusAnsV2 {
            memory_error: false,
            mic_error: false,
            session_does_not_exist: false,
            reception: Some(reception(0, 12, 0)),
        },
        "01 00 0c 00 00",
        V2,
    );
}

#[test]
fn ts004_setup_vectors() {
    use fragmentation::{Downlink, FragSessionSetup, SessionSetupV2, Uplink};
    fragmentation_downlink_vector(
        Downlink::FragSessionSetupReq(setup_1024_by_128(None)),
        "02 31 00 04 80 0d 40 01 02 03 04",
        V1,
    );
    fragmentation_downlink_vector(
        Downlink::FragSessionSetupReq(setup_1024_by_128(Some(SessionSetupV2 {
            ack_reception: false,
            session_cnt: 128,
            mic: [1, 2, 3, 4],
        }))),
        "02 31 00 04 80 0d 40 01 02 03 04 80 00 01 02 03 04",
        V2,
    );
    let with_mic = FragSessionSetup {
        frag_index: 0,
        mc_group_bit_mask: 0b0001,
        nb_frag: 10,
        frag_size: 10,
        frag_algo: 0,
        block_ack_delay: 1,
        padding: 0,
        descriptor: [1, 2, 3, 4],
        v2: Some(SessionSetupV2 {
            ack_reception: true,
            session_cnt: 1,
            mic: [0x85, 0x38, 0xF3, 0x0C],
        }),
    };
    fragmentation_downlink_vector(
        Downlink::FragSessionSetupReq(with_mic),
        "02 01 0a 00 0a 41 00 01 02 03 04 01 00 85 38 f3 0c",
        V2,
    );
    assert_eq!(with_mic.block_size(), Ok(100));
    vector(
        Uplink::FragSessionSetupAns {
            frag_index: 2,
            frag_algo_unsupported: true,
            not_enough_memory: true,
            frag_index_unsupported: false,
            wrong_descriptor: true,
            session_cnt_replay: false,
        },
        "02 8b",
        BOTH,
    );
    vector(
        Uplink::FragSessionSetupAns {
            frag_index: 1,
            frag_algo_unsupported: false,
            not_enough_memory: false,
            frag_index_unsupported: false,
            wrong_descriptor: false,
            session_cnt_replay: false,
        },
        "02 40",
        BOTH,
    );
}

#[test]
fn ts004_delete_and_block_received_vectors() {
    use fragmentation::{Downlink, Uplink};
    fragmentation_downlink_vector(
        Downlink::FragSessionDeleteReq { frag_index: 3 },
        "03 03",
        BOTH,
    );
    vector(
        Uplink::FragSessionDeleteAns {
            frag_index: 3,
            session_does_not_exist: true,
        },
        "03 07",
        BOTH,
    );
    vector(
        Uplink::FragDataBlockReceivedReq {
            frag_index: 2,
            mic_error: true,
        },
        "04 06",
        V2,
    );
    fragmentation_downlink_vector(
        Downlink::FragDataBlockReceivedAns { frag_index: 2 },
        "04 02",
        V2,
    );
}

#[test]
fn ts004_data_fragment_vectors() {
    use fragmentation::Downlink;
    fragmentation_downlink_vector(
        Downlink::DataFragment {
            frag_index: 2,
            fragment_number: 1024,
            data: &[1, 2, 3, 4],
        },
        "08 00 84 01 02 03 04",
        BOTH,
    );
    fragmentation_downlink_vector(
        Downlink::DataFragment {
            frag_index: 0,
            fragment_number: 1,
            data: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        },
        "08 01 00 00 01 02 03 04 05 06 07 08 09",
        BOTH,
    );
    fragmentation_downlink_vector(
        Downlink::DataFragment {
            frag_index: 0,
            fragment_number: 11,
            data: &bytes("262622222e2e22222626"),
        },
        "08 0b 00 26 26 22 22 2e 2e 22 22 26 26",
        BOTH,
    );
    fragmentation_downlink_vector(
        Downlink::DataFragment {
            frag_index: 3,
            fragment_number: 16383,
            data: &[],
        },
        "08 ff ff",
        BOTH,
    );
}

#[test]
fn ts004_block_ack_delay() {
    assert_eq!(fragmentation::block_ack_delay_seconds(0), Some(16));
    assert_eq!(fragmentation::block_ack_delay_seconds(1), Some(32));
    assert_eq!(fragmentation::block_ack_delay_seconds(7), Some(2048));
}

#[test]
fn package_version_answers_of_every_package() {
    // §0.2 example (TS004 v2) and the TS003 / TS006 ones.
    vector(
        fragmentation::Uplink::PackageVersionAns(package_version_ans(3, 2)),
        "00 03 02",
        BOTH,
    );
    vector(
        multicast_setup::Uplink::PackageVersionAns(package_version_ans(2, 1)),
        "00 02 01",
        BOTH,
    );
    vector(multicast_setup::Downlink::PackageVersionReq, "00", BOTH);
    fragmentation_downlink_vector(fragmentation::Downlink::PackageVersionReq, "00", BOTH);
}

// ------------------------------------------------------------------------------------------
// §7 TS006

#[test]
fn ts006_vectors() {
    use firmware_management::{Downlink, UpgradeImageStatus, Uplink};
    vector(
        Uplink::PackageVersionAns(package_version_ans(4, 1)),
        "00 04 01",
        V1,
    );
    vector(Downlink::DevVersionReq, "01", V1);
    vector(
        Uplink::DevVersionAns {
            firmware_version: 0x1122_3344,
            hardware_version: 0x1234_5678,
        },
        "01 44 33 22 11 78 56 34 12",
        V1,
    );
    vector(
        Downlink::DevRebootTimeReq { reboot_time: 0 },
        "02 00 00 00 00",
        V1,
    );
    vector(
        Downlink::DevRebootTimeReq {
            reboot_time: 0xFFFF_FFFF,
        },
        "02 ff ff ff ff",
        V1,
    );
    vector(
        Downlink::DevRebootTimeReq {
            reboot_time: 1_436_486_418,
        },
        "02 12 0b 9f 55",
        V1,
    );
    vector(
        Uplink::DevRebootTimeAns { reboot_time: 3600 },
        "02 10 0e 00 00",
        V1,
    );
    vector(
        Downlink::DevRebootCountdownReq { countdown: 262_657 },
        "03 01 02 04",
        V1,
    );
    vector(
        Downlink::DevRebootCountdownReq {
            countdown: 0x00FF_FFFF,
        },
        "03 ff ff ff",
        V1,
    );
    vector(Downlink::DevUpgradeImageReq, "04", V1);
    vector(
        Uplink::DevUpgradeImageAns(UpgradeImageStatus::Valid {
            next_firmware_version: 0x0102_0304,
        }),
        "04 03 04 03 02 01",
        V1,
    );
    vector(
        Uplink::DevUpgradeImageAns(UpgradeImageStatus::NoImage),
        "04 00",
        V1,
    );
    vector(
        Downlink::DevDeleteImageReq {
            firmware_version: 0x7319_0117,
        },
        "05 17 01 19 73",
        V1,
    );
    let delete_answer = |error_invalid_version, error_no_valid_image| Uplink::DevDeleteImageAns {
        error_invalid_version,
        error_no_valid_image,
    };
    vector(delete_answer(false, true), "05 01", V1);
    vector(delete_answer(true, false), "05 02", V1);
    vector(delete_answer(true, true), "05 03", V1);
}
