//! Proptest strategies for every command of every package, shared by the codec test
//! suites (`codec_roundtrip`, `codec_lrwn_oracle`). Each suite uses a subset.
#![allow(dead_code)]

use lorawan_fuota::codec::{
    clock_sync, firmware_management, fragmentation, multicast_setup, PackageVersion,
    PackageVersionAns,
};
use proptest::collection::vec;
use proptest::prelude::*;

pub const V1: PackageVersion = PackageVersion::V1;
pub const V2: PackageVersion = PackageVersion::V2;
pub const VERSIONS: [PackageVersion; 2] = [V1, V2];

/// Which forms of the answers with an optional tail to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerForm {
    /// What the specification sends: TS005 TimeToStart only for accepted sessions, TS004
    /// v2 reception fields only when the session exists. Safe anywhere in a frame.
    Canonical,
    /// Canonical plus the tolerated 4-byte forms (the optional 3 bytes present). These
    /// only decode back when nothing follows them in the frame.
    Any,
    /// The forms ChirpStack lrwn can represent: TS005 TimeToStart exactly when bits 2..4
    /// are clear, no v2 reserved error bits, no StartMissed in v1; TS004 v2 status always
    /// 4 bytes; DataFragment N ≥ 1 (as ours).
    Lrwn,
}

pub fn version() -> impl Strategy<Value = PackageVersion> {
    prop_oneof![Just(V1), Just(V2)]
}

pub fn package_version_ans() -> impl Strategy<Value = PackageVersionAns> {
    (any::<u8>(), any::<u8>()).prop_map(|(package_identifier, package_version)| PackageVersionAns {
        package_identifier,
        package_version,
    })
}

fn group_id() -> impl Strategy<Value = u8> {
    0u8..4
}

// ---------------------------------------------------------------------------------------
// TS003

pub fn clock_sync_downlink() -> impl Strategy<Value = clock_sync::Downlink> {
    use clock_sync::Downlink;
    prop_oneof![
        Just(Downlink::PackageVersionReq),
        (any::<i32>(), 0u8..16).prop_map(|(time_correction, token)| Downlink::AppTimeAns {
            time_correction,
            token
        }),
        (0u8..16).prop_map(|period| Downlink::DeviceAppTimePeriodicityReq { period }),
        (0u8..8).prop_map(|nb_transmissions| Downlink::ForceDeviceResync { nb_transmissions }),
    ]
}

pub fn clock_sync_uplink() -> impl Strategy<Value = clock_sync::Uplink> {
    use clock_sync::Uplink;
    prop_oneof![
        package_version_ans().prop_map(Uplink::PackageVersionAns),
        (any::<u32>(), any::<bool>(), 0u8..16).prop_map(|(device_time, ans_required, token)| {
            Uplink::AppTimeReq {
                device_time,
                ans_required,
                token,
            }
        }),
        (any::<bool>(), any::<u32>()).prop_map(|(not_supported, device_time)| {
            Uplink::DeviceAppTimePeriodicityAns {
                not_supported,
                device_time,
            }
        }),
    ]
}

// ---------------------------------------------------------------------------------------
// TS005

/// Frequencies in Hz that DLFreq can carry. `lrwn_range` keeps the wire value below
/// 12 000 000, where lrwn switches to its 2.4 GHz (200 Hz step) interpretation.
pub fn frequency_hz(lrwn_range: bool) -> impl Strategy<Value = u32> {
    let top = if lrwn_range { 11_999_999 } else { 0x00FF_FFFF };
    prop_oneof![
        (0u32..=top).prop_map(|units| units * 100),
        // Typical EU868 / US915 channels.
        (8_630_000u32..8_700_000).prop_map(|units| units * 100),
        (9_020_000u32..9_280_000).prop_map(|units| units * 100),
    ]
}

pub fn multicast_downlink(lrwn_range: bool) -> impl Strategy<Value = multicast_setup::Downlink> {
    use multicast_setup::Downlink;
    prop_oneof![
        Just(Downlink::PackageVersionReq),
        (0u8..16).prop_map(|req_group_mask| Downlink::McGroupStatusReq { req_group_mask }),
        (
            group_id(),
            any::<u32>(),
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(mc_group_id, mc_addr, mc_key_encrypted, min_mc_fcnt, max_mc_fcnt)| {
                    Downlink::McGroupSetupReq {
                        mc_group_id,
                        mc_addr,
                        mc_key_encrypted,
                        min_mc_fcnt,
                        max_mc_fcnt,
                    }
                }
            ),
        group_id().prop_map(|mc_group_id| Downlink::McGroupDeleteReq { mc_group_id }),
        (
            group_id(),
            any::<u32>(),
            0u8..16,
            frequency_hz(lrwn_range),
            any::<u8>()
        )
            .prop_map(
                |(mc_group_id, session_time, time_out, dl_frequency_hz, data_rate)| {
                    Downlink::McClassCSessionReq {
                        mc_group_id,
                        session_time,
                        time_out,
                        dl_frequency_hz,
                        data_rate,
                    }
                }
            ),
        (
            group_id(),
            any::<u32>(),
            0u8..16,
            0u8..8,
            frequency_hz(lrwn_range),
            any::<u8>()
        )
            .prop_map(
                |(mc_group_id, session_time, time_out, periodicity, dl_frequency_hz, data_rate)| {
                    Downlink::McClassBSessionReq {
                        mc_group_id,
                        session_time,
                        time_out,
                        periodicity,
                        dl_frequency_hz,
                        data_rate,
                    }
                }
            ),
    ]
}

pub fn group_status() -> impl Strategy<Value = multicast_setup::McGroupStatus> {
    (0u8..=4, any::<[Option<u32>; 4]>()).prop_map(|(nb_total_groups, mc_addr)| {
        multicast_setup::McGroupStatus {
            nb_total_groups,
            mc_addr,
        }
    })
}

pub fn session_ans(
    version: PackageVersion,
    form: AnswerForm,
) -> impl Strategy<Value = multicast_setup::SessionAns> {
    (
        group_id(),
        any::<[bool; 4]>(),
        0u8..4,
        any::<bool>(),
        0u32..(1 << 24),
    )
        .prop_map(
            move |(
                mc_group_id,
                [dr_error, freq_error, undefined, start_missed],
                reserved,
                tail,
                time,
            )| {
                let reserved_errors = match (version, form) {
                    (PackageVersion::V2, AnswerForm::Canonical | AnswerForm::Any) => reserved,
                    _ => 0,
                };
                let start_missed = start_missed && !(version == V1 && form == AnswerForm::Lrwn);
                let mut answer = multicast_setup::SessionAns {
                    mc_group_id,
                    dr_error,
                    freq_error,
                    mc_group_undefined: undefined,
                    start_missed,
                    reserved_errors,
                    time_to_start: None,
                };
                let with_time = match form {
                    AnswerForm::Canonical => answer.accepted(),
                    AnswerForm::Any => answer.accepted() || tail,
                    AnswerForm::Lrwn => !(dr_error || freq_error || undefined),
                };
                if with_time {
                    // An optional tail on an error answer that reads `00 02 ..` is this
                    // package's own PackageVersionAns to the decoder, by design.
                    let ambiguous = !answer.accepted() && time & 0xFFFF == 0x0200;
                    answer.time_to_start = Some(if ambiguous { time | 1 } else { time });
                }
                answer
            },
        )
}

pub fn multicast_uplink(
    version: PackageVersion,
    form: AnswerForm,
) -> impl Strategy<Value = multicast_setup::Uplink> {
    use multicast_setup::Uplink;
    prop_oneof![
        package_version_ans().prop_map(Uplink::PackageVersionAns),
        group_status().prop_map(Uplink::McGroupStatusAns),
        (group_id(), any::<bool>()).prop_map(|(mc_group_id, id_error)| {
            Uplink::McGroupSetupAns {
                mc_group_id,
                id_error,
            }
        }),
        (group_id(), any::<bool>()).prop_map(|(mc_group_id, mc_group_undefined)| {
            Uplink::McGroupDeleteAns {
                mc_group_id,
                mc_group_undefined,
            }
        }),
        session_ans(version, form).prop_map(Uplink::McClassCSessionAns),
        session_ans(version, form).prop_map(Uplink::McClassBSessionAns),
    ]
}

/// True for a TS005 answer whose optional 3 bytes are absent (a following 3-byte tail
/// would be taken for them).
pub fn multicast_short_form(command: &multicast_setup::Uplink) -> bool {
    match command {
        multicast_setup::Uplink::McClassCSessionAns(answer)
        | multicast_setup::Uplink::McClassBSessionAns(answer) => answer.time_to_start.is_none(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// TS004

pub fn frag_setup(
    version: PackageVersion,
) -> impl Strategy<Value = fragmentation::FragSessionSetup> {
    let v2 = match version {
        PackageVersion::V1 => Just(None).boxed(),
        PackageVersion::V2 => (any::<bool>(), any::<u16>(), any::<[u8; 4]>())
            .prop_map(|(ack_reception, session_cnt, mic)| {
                Some(fragmentation::SessionSetupV2 {
                    ack_reception,
                    session_cnt,
                    mic,
                })
            })
            .boxed(),
    };
    (
        (group_id(), 0u8..16, any::<u16>(), any::<u8>()),
        (0u8..8, 0u8..8, any::<u8>(), any::<[u8; 4]>()),
        v2,
    )
        .prop_map(
            |(
                (frag_index, mc_group_bit_mask, nb_frag, frag_size),
                (frag_algo, block_ack_delay, padding, descriptor),
                v2,
            )| fragmentation::FragSessionSetup {
                frag_index,
                mc_group_bit_mask,
                nb_frag,
                frag_size,
                frag_algo,
                block_ack_delay,
                padding,
                descriptor,
                v2,
            },
        )
}

/// An owned TS004 downlink: [`fragmentation::Downlink`] borrows DataFragment bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragDown {
    /// Any command but DataFragment.
    Command(fragmentation::Downlink<'static>),
    /// DataFragment with owned bytes.
    Fragment {
        frag_index: u8,
        fragment_number: u16,
        data: Vec<u8>,
    },
}

impl FragDown {
    pub fn as_command(&self) -> fragmentation::Downlink<'_> {
        match self {
            FragDown::Command(command) => *command,
            FragDown::Fragment {
                frag_index,
                fragment_number,
                data,
            } => fragmentation::Downlink::DataFragment {
                frag_index: *frag_index,
                fragment_number: *fragment_number,
                data,
            },
        }
    }
}

pub fn data_fragment() -> impl Strategy<Value = FragDown> {
    (group_id(), 1u16..=0x3FFF, vec(any::<u8>(), 0..=64)).prop_map(
        |(frag_index, fragment_number, data)| FragDown::Fragment {
            frag_index,
            fragment_number,
            data,
        },
    )
}

/// TS004 downlinks other than DataFragment.
pub fn frag_downlink_command(version: PackageVersion) -> impl Strategy<Value = FragDown> {
    use fragmentation::Downlink;
    let block_received = match version {
        PackageVersion::V1 => Just(Downlink::PackageVersionReq).boxed(),
        PackageVersion::V2 => group_id()
            .prop_map(|frag_index| Downlink::FragDataBlockReceivedAns { frag_index })
            .boxed(),
    };
    prop_oneof![
        Just(Downlink::PackageVersionReq),
        (group_id(), any::<bool>()).prop_map(|(frag_index, participants_all)| {
            Downlink::FragSessionStatusReq {
                frag_index,
                participants_all,
            }
        }),
        frag_setup(version).prop_map(Downlink::FragSessionSetupReq),
        group_id().prop_map(|frag_index| Downlink::FragSessionDeleteReq { frag_index }),
        block_received,
    ]
    .prop_map(FragDown::Command)
}

pub fn frag_downlink(version: PackageVersion) -> impl Strategy<Value = FragDown> {
    prop_oneof![frag_downlink_command(version), data_fragment()]
}

pub fn reception_status() -> impl Strategy<Value = fragmentation::ReceptionStatus> {
    (group_id(), 0u16..=0x3FFF, any::<u8>()).prop_map(
        |(frag_index, nb_frag_received, missing_frag)| fragmentation::ReceptionStatus {
            frag_index,
            nb_frag_received,
            missing_frag,
        },
    )
}

pub fn frag_uplink(
    version: PackageVersion,
    form: AnswerForm,
) -> impl Strategy<Value = fragmentation::Uplink> {
    use fragmentation::Uplink;
    let status = match version {
        PackageVersion::V1 => (reception_status(), any::<bool>())
            .prop_map(
                |(reception, not_enough_matrix_memory)| Uplink::FragSessionStatusAnsV1 {
                    reception,
                    not_enough_matrix_memory,
                },
            )
            .boxed(),
        PackageVersion::V2 => (any::<[bool; 4]>(), reception_status())
            .prop_map(
                move |([memory_error, mic_error, session_does_not_exist, tail], reception)| {
                    let with_reception = match form {
                        AnswerForm::Canonical => !session_does_not_exist,
                        AnswerForm::Any => !session_does_not_exist || tail,
                        AnswerForm::Lrwn => true,
                    };
                    // An optional tail that reads `00 03 ..` is TS004's own
                    // PackageVersionAns to the decoder, by design.
                    let mut reception = reception;
                    if session_does_not_exist
                        && reception.frag_index == 0
                        && reception.nb_frag_received == 0x300
                    {
                        reception.nb_frag_received = 0x301;
                    }
                    Uplink::FragSessionStatusAnsV2 {
                        memory_error,
                        mic_error,
                        session_does_not_exist,
                        reception: with_reception.then_some(reception),
                    }
                },
            )
            .boxed(),
    };
    let block_received = match version {
        PackageVersion::V1 => package_version_ans()
            .prop_map(Uplink::PackageVersionAns)
            .boxed(),
        PackageVersion::V2 => (group_id(), any::<bool>())
            .prop_map(|(frag_index, mic_error)| Uplink::FragDataBlockReceivedReq {
                frag_index,
                mic_error,
            })
            .boxed(),
    };
    prop_oneof![
        package_version_ans().prop_map(Uplink::PackageVersionAns),
        status,
        (group_id(), any::<[bool; 5]>()).prop_map(move |(frag_index, flags)| {
            let [frag_algo_unsupported, not_enough_memory, frag_index_unsupported, wrong_descriptor, replay] =
                flags;
            Uplink::FragSessionSetupAns {
                frag_index,
                frag_algo_unsupported,
                not_enough_memory,
                frag_index_unsupported,
                wrong_descriptor,
                session_cnt_replay: replay && version == V2,
            }
        }),
        (group_id(), any::<bool>()).prop_map(|(frag_index, session_does_not_exist)| {
            Uplink::FragSessionDeleteAns {
                frag_index,
                session_does_not_exist,
            }
        }),
        block_received,
    ]
}

/// True for a TS004 v2 status answer sent in its 1-byte form (a following 3-byte tail, or
/// three zero bytes, would be taken for its optional fields).
pub fn frag_short_form(command: &fragmentation::Uplink) -> bool {
    matches!(
        command,
        fragmentation::Uplink::FragSessionStatusAnsV2 {
            reception: None,
            ..
        }
    )
}

// ---------------------------------------------------------------------------------------
// TS006

pub fn firmware_downlink() -> impl Strategy<Value = firmware_management::Downlink> {
    use firmware_management::Downlink;
    prop_oneof![
        Just(Downlink::PackageVersionReq),
        Just(Downlink::DevVersionReq),
        any::<u32>().prop_map(|reboot_time| Downlink::DevRebootTimeReq { reboot_time }),
        (0u32..(1 << 24)).prop_map(|countdown| Downlink::DevRebootCountdownReq { countdown }),
        Just(Downlink::DevUpgradeImageReq),
        any::<u32>().prop_map(|firmware_version| Downlink::DevDeleteImageReq { firmware_version }),
    ]
}

pub fn firmware_uplink() -> impl Strategy<Value = firmware_management::Uplink> {
    use firmware_management::{UpgradeImageStatus, Uplink};
    prop_oneof![
        package_version_ans().prop_map(Uplink::PackageVersionAns),
        (any::<u32>(), any::<u32>()).prop_map(|(firmware_version, hardware_version)| {
            Uplink::DevVersionAns {
                firmware_version,
                hardware_version,
            }
        }),
        any::<u32>().prop_map(|reboot_time| Uplink::DevRebootTimeAns { reboot_time }),
        (0u32..(1 << 24)).prop_map(|countdown| Uplink::DevRebootCountdownAns { countdown }),
        prop_oneof![
            Just(UpgradeImageStatus::NoImage),
            Just(UpgradeImageStatus::CorruptOrBadSignature),
            Just(UpgradeImageStatus::WrongHardware),
            any::<u32>().prop_map(|next_firmware_version| UpgradeImageStatus::Valid {
                next_firmware_version
            }),
        ]
        .prop_map(Uplink::DevUpgradeImageAns),
        (any::<bool>(), any::<bool>()).prop_map(|(error_invalid_version, error_no_valid_image)| {
            Uplink::DevDeleteImageAns {
                error_invalid_version,
                error_no_valid_image,
            }
        }),
    ]
}
