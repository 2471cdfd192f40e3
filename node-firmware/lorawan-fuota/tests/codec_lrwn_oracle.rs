//! ChirpStack's `lrwn` crate (modules `lrwn::applayer::{clocksync, multicastsetup,
//! fragmentation}::{v1, v2}`) as an independent oracle for the TS003, TS005 and TS004
//! codecs.
//!
//! For every command lrwn supports, in each direction and version:
//! - our encoding decodes with lrwn to the same values,
//! - lrwn's encoding decodes with ours to the same values,
//! - and both encodings are the same bytes.
//!
//! On arbitrary bytes, whenever both decoders accept a single command, they agree.
//!
//! lrwn deliberately differs in a few places (reference `applayer.md` §7 items 1 and 2,
//! plus some checks lrwn does not make). Those are tested one by one at the end of the
//! file, and the property tests restrict themselves to forms both sides can represent
//! (`AnswerForm::Lrwn`; the conversions below return `None` outside them):
//!
//! 1. TS005 session answer with StartMissed only: spec/LBM send 1 byte, lrwn v2 demands 4
//!    (it keys TimeToStart on bits 2..4 only); lrwn v1 ignores bit 5 and demands 4 too.
//! 2. TS005 v2 bits 7:6 ("reserved for future errors"): lrwn ignores them.
//! 3. TS005 error answer followed by 3 bytes: lrwn drops them silently; we keep them.
//! 4. TS005 McGroupStatusAns: lrwn does not check that the entries match AnsGroupMask,
//!    nor that NbTotalGroups ≤ 4.
//! 5. TS005 DLFreq ≥ 12 000 000 (× 100 Hz): lrwn reads 200 Hz steps (its 2.4 GHz
//!    extension); we always read 100 Hz steps, per the sub-GHz specifications.
//! 6. TS004 v2 FragSessionStatusAns with SessionDoesNotExist: spec sends 1 byte, lrwn
//!    demands 4; we accept both.
//! 7. TS004 DataFragment N = 0: lrwn accepts and encodes it; we refuse it both ways.

mod codec_strategies;

use core::fmt::Debug;

use codec_strategies::*;
use lorawan_fuota::codec::{
    clock_sync, fragmentation, multicast_setup, Command, DecodeError, EncodeError, PackageVersion,
    PackageVersionAns,
};
use lrwn::applayer::clocksync::{v1 as cs1, v2 as cs2};
use lrwn::applayer::fragmentation::{v1 as fr1, v2 as fr2};
use lrwn::applayer::multicastsetup::{v1 as mc1, v2 as mc2};
use lrwn::DevAddr;
use proptest::collection::vec;
use proptest::prelude::*;

// ------------------------------------------------------------------------------------------
// Generic checks

fn encode_ours<'a, C: Command<'a> + Debug>(command: &C) -> Result<Vec<u8>, EncodeError> {
    let mut out = [0u8; 512];
    let length = command.encode_to(&mut out)?;
    Ok(out[..length].to_vec())
}

/// Both directions of agreement between our `ours` and lrwn's version of it
/// (`to_lrwn(&ours)`; lrwn's payloads are not `Clone`, so it is called twice).
fn agree<C, L, E1, E2>(
    ours: C,
    version: PackageVersion,
    to_lrwn: impl Fn(&C) -> Option<L>,
    lrwn_decode: impl Fn(&[u8]) -> Result<L, E1>,
    lrwn_encode: impl Fn(&L) -> Result<Vec<u8>, E2>,
) -> Result<(), TestCaseError>
where
    C: for<'x> Command<'x> + PartialEq + Debug + Copy,
    L: PartialEq + Debug,
    E1: Debug,
    E2: Debug,
{
    let theirs = to_lrwn(&ours).expect("the strategy yields lrwn-representable commands");
    let our_bytes = encode_ours(&ours).unwrap();
    let decoded_by_lrwn = lrwn_decode(&our_bytes);
    prop_assert!(
        decoded_by_lrwn.is_ok(),
        "lrwn rejects our encoding {} of {:?}: {:?}",
        hex::encode(&our_bytes),
        ours,
        decoded_by_lrwn.as_ref().err()
    );
    prop_assert_eq!(decoded_by_lrwn.ok(), to_lrwn(&ours));
    let their_bytes = lrwn_encode(&theirs).unwrap();
    prop_assert_eq!(C::decode_single(&their_bytes, version), Ok(ours));
    prop_assert_eq!(hex::encode(our_bytes), hex::encode(their_bytes));
    Ok(())
}

/// On arbitrary bytes: when both decoders accept one command, they agree.
fn differential<'a, C, L, E>(
    bytes: &'a [u8],
    version: PackageVersion,
    lrwn_decode: impl Fn(&[u8]) -> Result<L, E>,
    to_lrwn: impl Fn(&C) -> Option<L>,
) -> Result<(), TestCaseError>
where
    C: Command<'a> + Debug,
    L: PartialEq + Debug,
{
    let (Ok(ours), Ok(theirs)) = (C::decode_single(bytes, version), lrwn_decode(bytes)) else {
        return Ok(());
    };
    if let Some(ours_as_lrwn) = to_lrwn(&ours) {
        prop_assert_eq!(ours_as_lrwn, theirs, "bytes {}", hex::encode(bytes));
    }
    Ok(())
}

fn mask_bits(mask: u8) -> [bool; 4] {
    core::array::from_fn(|bit| mask & (1 << bit) != 0)
}

fn dev_addr(addr: u32) -> DevAddr {
    DevAddr::from_le_bytes(addr.to_le_bytes())
}

/// lrwn reads DLFreq values from 12 000 000 (× 100 Hz) up as 200 Hz steps.
const LRWN_2G4_THRESHOLD_HZ: u32 = 1_200_000_000;

// ------------------------------------------------------------------------------------------
// TS003 conversions (every command is representable)

fn clock_sync_down_v1(command: &clock_sync::Downlink) -> Option<cs1::Payload> {
    use clock_sync::Downlink;
    Some(match *command {
        Downlink::PackageVersionReq => cs1::Payload::PackageVersionReq,
        Downlink::AppTimeAns {
            time_correction,
            token,
        } => cs1::Payload::AppTimeAns(cs1::AppTimeAnsPayload {
            time_correction,
            param: cs1::AppTimeAnsPayloadParam { token_ans: token },
        }),
        Downlink::DeviceAppTimePeriodicityReq { period } => {
            cs1::Payload::DeviceAppTimePeropdicityReq(cs1::DeviceAppTimePeriodicityReqPayload {
                period,
            })
        }
        Downlink::ForceDeviceResync { nb_transmissions } => {
            cs1::Payload::ForceDeviceResyncReq(cs1::ForceDeviceResyncReqPayload {
                force_conf: cs1::ForceDeviceResyncReqPayloadForceConf { nb_transmissions },
            })
        }
    })
}

fn clock_sync_down_v2(command: &clock_sync::Downlink) -> Option<cs2::Payload> {
    use clock_sync::Downlink;
    Some(match *command {
        Downlink::PackageVersionReq => cs2::Payload::PackageVersionReq,
        Downlink::AppTimeAns {
            time_correction,
            token,
        } => cs2::Payload::AppTimeAns(cs2::AppTimeAnsPayload {
            time_correction,
            param: cs2::AppTimeAnsPayloadParam { token_ans: token },
        }),
        Downlink::DeviceAppTimePeriodicityReq { period } => {
            cs2::Payload::DeviceAppTimePeropdicityReq(cs2::DeviceAppTimePeriodicityReqPayload {
                period,
            })
        }
        Downlink::ForceDeviceResync { nb_transmissions } => {
            cs2::Payload::ForceDeviceResyncCmd(cs2::ForceDeviceResyncCmdPayload {
                force_conf: cs2::ForceDeviceResyncCmdPayloadForceConf { nb_transmissions },
            })
        }
    })
}

fn clock_sync_up_v1(command: &clock_sync::Uplink) -> Option<cs1::Payload> {
    use clock_sync::Uplink;
    Some(match *command {
        Uplink::PackageVersionAns(answer) => {
            cs1::Payload::PackageVersionAns(cs1::PackageVersionAnsPayload {
                package_identifier: answer.package_identifier,
                package_version: answer.package_version,
            })
        }
        Uplink::AppTimeReq {
            device_time,
            ans_required,
            token,
        } => cs1::Payload::AppTimeReq(cs1::AppTimeReqPayload {
            device_time,
            param: cs1::AppTimeReqPayloadParam {
                token_req: token,
                ans_required,
            },
        }),
        Uplink::DeviceAppTimePeriodicityAns {
            not_supported,
            device_time,
        } => cs1::Payload::DeviceAppTimePeropdicityAns(cs1::DeviceAppTimePeriodicityAnsPayload {
            status: cs1::DeviceAppTimePeriodicityAnsPayloadStatus { not_supported },
            time: device_time,
        }),
    })
}

fn clock_sync_up_v2(command: &clock_sync::Uplink) -> Option<cs2::Payload> {
    use clock_sync::Uplink;
    Some(match *command {
        Uplink::PackageVersionAns(answer) => {
            cs2::Payload::PackageVersionAns(cs2::PackageVersionAnsPayload {
                package_identifier: answer.package_identifier,
                package_version: answer.package_version,
            })
        }
        Uplink::AppTimeReq {
            device_time,
            ans_required,
            token,
        } => cs2::Payload::AppTimeReq(cs2::AppTimeReqPayload {
            device_time,
            param: cs2::AppTimeReqPayloadParam {
                token_req: token,
                ans_required,
            },
        }),
        Uplink::DeviceAppTimePeriodicityAns {
            not_supported,
            device_time,
        } => cs2::Payload::DeviceAppTimePeropdicityAns(cs2::DeviceAppTimePeriodicityAnsPayload {
            status: cs2::DeviceAppTimePeriodicityAnsPayloadStatus { not_supported },
            time: device_time,
        }),
    })
}

// ------------------------------------------------------------------------------------------
// TS005 conversions

/// True when lrwn would encode and expect TimeToStart for this answer (bits 2..4 clear),
/// and it can represent the rest of it.
fn lrwn_session_form(answer: &multicast_setup::SessionAns, version: PackageVersion) -> bool {
    let lrwn_errors = answer.dr_error || answer.freq_error || answer.mc_group_undefined;
    answer.reserved_errors == 0
        && answer.time_to_start.is_some() != lrwn_errors
        && !(version == PackageVersion::V1 && answer.start_missed)
}

fn multicast_down_v1(command: &multicast_setup::Downlink) -> Option<mc1::Payload> {
    use multicast_setup::Downlink;
    Some(match *command {
        Downlink::PackageVersionReq => mc1::Payload::PackageVersionReq,
        Downlink::McGroupStatusReq { req_group_mask } => {
            mc1::Payload::McGroupStatusReq(mc1::McGroupStatusReqPayload {
                cmd_mask: mc1::McGroupStatusReqPayloadCmdMask {
                    req_group_mask: mask_bits(req_group_mask),
                },
            })
        }
        Downlink::McGroupSetupReq {
            mc_group_id,
            mc_addr,
            mc_key_encrypted,
            min_mc_fcnt,
            max_mc_fcnt,
        } => mc1::Payload::McGroupSetupReq(mc1::McGroupSetupReqPayload {
            mc_group_id_header: mc1::McGroupSetupReqPayloadMcGroupIdHeader { mc_group_id },
            mc_addr: dev_addr(mc_addr),
            mc_key_encrypted,
            min_mc_f_count: min_mc_fcnt,
            max_mc_f_count: max_mc_fcnt,
        }),
        Downlink::McGroupDeleteReq { mc_group_id } => {
            mc1::Payload::McGroupDeleteReq(mc1::McGroupDeleteReqPayload {
                mc_group_id_header: mc1::McGroupDeleteReqPayloadMcGroupIdHeader { mc_group_id },
            })
        }
        Downlink::McClassCSessionReq {
            mc_group_id,
            session_time,
            time_out,
            dl_frequency_hz,
            data_rate,
        } => {
            if dl_frequency_hz >= LRWN_2G4_THRESHOLD_HZ {
                return None;
            }
            mc1::Payload::McClassCSessionReq(mc1::McClassCSessionReqPayload {
                mc_group_id_header: mc1::McClassCSessionReqPayloadMcGroupIdHeader { mc_group_id },
                session_time,
                session_time_out: mc1::McClassCSessionReqPayloadSessionTimeOut { time_out },
                dl_frequ: dl_frequency_hz,
                dr: data_rate,
            })
        }
        Downlink::McClassBSessionReq {
            mc_group_id,
            session_time,
            time_out,
            periodicity,
            dl_frequency_hz,
            data_rate,
        } => {
            if dl_frequency_hz >= LRWN_2G4_THRESHOLD_HZ {
                return None;
            }
            mc1::Payload::McClassBSessionReq(mc1::McClassBSessionReqPayload {
                mc_group_id_header: mc1::McClassBSessionReqPayloadMcGroupIdHeader { mc_group_id },
                session_time,
                time_out_periodicity: mc1::McClassBSessionReqPayloadTimeOutPeriodicity {
                    time_out,
                    periodicity,
                },
                dl_frequ: dl_frequency_hz,
                dr: data_rate,
            })
        }
    })
}

fn multicast_down_v2(command: &multicast_setup::Downlink) -> Option<mc2::Payload> {
    use multicast_setup::Downlink;
    Some(match *command {
        Downlink::PackageVersionReq => mc2::Payload::PackageVersionReq,
        Downlink::McGroupStatusReq { req_group_mask } => {
            mc2::Payload::McGroupStatusReq(mc2::McGroupStatusReqPayload {
                cmd_mask: mc2::McGroupStatusReqPayloadCmdMask {
                    req_group_mask: mask_bits(req_group_mask),
                },
            })
        }
        Downlink::McGroupSetupReq {
            mc_group_id,
            mc_addr,
            mc_key_encrypted,
            min_mc_fcnt,
            max_mc_fcnt,
        } => mc2::Payload::McGroupSetupReq(mc2::McGroupSetupReqPayload {
            mc_group_id_header: mc2::McGroupSetupReqPayloadMcGroupIdHeader { mc_group_id },
            mc_addr: dev_addr(mc_addr),
            mc_key_encrypted,
            min_mc_f_count: min_mc_fcnt,
            max_mc_f_count: max_mc_fcnt,
        }),
        Downlink::McGroupDeleteReq { mc_group_id } => {
            mc2::Payload::McGroupDeleteReq(mc2::McGroupDeleteReqPayload {
                mc_group_id_header: mc2::McGroupDeleteReqPayloadMcGroupIdHeader { mc_group_id },
            })
        }
        Downlink::McClassCSessionReq {
            mc_group_id,
            session_time,
            time_out,
            dl_frequency_hz,
            data_rate,
        } => {
            if dl_frequency_hz >= LRWN_2G4_THRESHOLD_HZ {
                return None;
            }
            mc2::Payload::McClassCSessionReq(mc2::McClassCSessionReqPayload {
                mc_group_id_header: mc2::McClassCSessionReqPayloadMcGroupIdHeader { mc_group_id },
                session_time,
                session_time_out: mc2::McClassCSessionReqPayloadSessionTimeOut { time_out },
                dl_frequ: dl_frequency_hz,
                dr: data_rate,
            })
        }
        Downlink::McClassBSessionReq {
            mc_group_id,
            session_time,
            time_out,
            periodicity,
            dl_frequency_hz,
            data_rate,
        } => {
            if dl_frequency_hz >= LRWN_2G4_THRESHOLD_HZ {
                return None;
            }
            mc2::Payload::McClassBSessionReq(mc2::McClassBSessionReqPayload {
                mc_group_id_header: mc2::McClassBSessionReqPayloadMcGroupIdHeader { mc_group_id },
                session_time,
                time_out_periodicity: mc2::McClassBSessionReqPayloadTimeOutPeriodicity {
                    time_out,
                    periodicity,
                },
                dl_frequ: dl_frequency_hz,
                dr: data_rate,
            })
        }
    })
}

fn multicast_up_v1(command: &multicast_setup::Uplink) -> Option<mc1::Payload> {
    use multicast_setup::Uplink;
    Some(match *command {
        Uplink::PackageVersionAns(answer) => {
            mc1::Payload::PackageVersionAns(mc1::PackageVersionAnsPayload {
                package_identifier: answer.package_identifier,
                package_version: answer.package_version,
            })
        }
        Uplink::McGroupStatusAns(status) => {
            mc1::Payload::McGroupStatusAns(mc1::McGroupStatusAnsPayload {
                status: mc1::McGroupStatusAnsPayloadStatus {
                    ans_group_mask: mask_bits(status.ans_group_mask()),
                    nb_total_groups: status.nb_total_groups,
                },
                items: status
                    .entries()
                    .map(|(mc_group_id, mc_addr)| mc1::McGroupStatusAnsPayloadItem {
                        mc_group_id,
                        mc_addr: dev_addr(mc_addr),
                    })
                    .collect(),
            })
        }
        Uplink::McGroupSetupAns {
            mc_group_id,
            id_error,
        } => mc1::Payload::McGroupSetupAns(mc1::McGroupSetupAnsPayload {
            mc_group_id_header: mc1::McGroupSetupAnsPayloadMcGroupIdHeader {
                mc_group_id,
                id_error,
            },
        }),
        Uplink::McGroupDeleteAns {
            mc_group_id,
            mc_group_undefined,
        } => mc1::Payload::McGroupDeleteAns(mc1::McGroupDeleteAnsPayload {
            mc_group_id_header: mc1::McGroupDeleteAnsPayloadMcGroupIdHeader {
                mc_group_id,
                mc_group_undefined,
            },
        }),
        Uplink::McClassCSessionAns(answer) => {
            if !lrwn_session_form(&answer, PackageVersion::V1) {
                return None;
            }
            mc1::Payload::McClassCSessionAns(mc1::McClassCSessionAnsPayload {
                status_and_mc_group_id: mc1::McClassCSessionAnsPayloadStatusAnsMcGroupId {
                    mc_group_id: answer.mc_group_id,
                    dr_error: answer.dr_error,
                    freq_error: answer.freq_error,
                    mc_group_undefined: answer.mc_group_undefined,
                },
                time_to_start: answer.time_to_start,
            })
        }
        Uplink::McClassBSessionAns(answer) => {
            if !lrwn_session_form(&answer, PackageVersion::V1) {
                return None;
            }
            mc1::Payload::McClassBSessionAns(mc1::McClassBSessionAnsPayload {
                status_and_mc_group_id: mc1::McClassBSessionAnsPayloadStatusAndMcGroupId {
                    mc_group_id: answer.mc_group_id,
                    dr_error: answer.dr_error,
                    freq_error: answer.freq_error,
                    mc_group_undefined: answer.mc_group_undefined,
                },
                time_to_start: answer.time_to_start,
            })
        }
    })
}

fn multicast_up_v2(command: &multicast_setup::Uplink) -> Option<mc2::Payload> {
    use multicast_setup::Uplink;
    Some(match *command {
        Uplink::PackageVersionAns(answer) => {
            mc2::Payload::PackageVersionAns(mc2::PackageVersionAnsPayload {
                package_identifier: answer.package_identifier,
                package_version: answer.package_version,
            })
        }
        Uplink::McGroupStatusAns(status) => {
            mc2::Payload::McGroupStatusAns(mc2::McGroupStatusAnsPayload {
                status: mc2::McGroupStatusAnsPayloadStatus {
                    ans_group_mask: mask_bits(status.ans_group_mask()),
                    nb_total_groups: status.nb_total_groups,
                },
                items: status
                    .entries()
                    .map(|(mc_group_id, mc_addr)| mc2::McGroupStatusAnsPayloadItem {
                        mc_group_id,
                        mc_addr: dev_addr(mc_addr),
                    })
                    .collect(),
            })
        }
        Uplink::McGroupSetupAns {
            mc_group_id,
            id_error,
        } => mc2::Payload::McGroupSetupAns(mc2::McGroupSetupAnsPayload {
            mc_group_id_header: mc2::McGroupSetupAnsPayloadMcGroupIdHeader {
                mc_group_id,
                id_error,
            },
        }),
        Uplink::McGroupDeleteAns {
            mc_group_id,
            mc_group_undefined,
        } => mc2::Payload::McGroupDeleteAns(mc2::McGroupDeleteAnsPayload {
            mc_group_id_header: mc2::McGroupDeleteAnsPayloadMcGroupIdHeader {
                mc_group_id,
                mc_group_undefined,
            },
        }),
        Uplink::McClassCSessionAns(answer) => {
            if !lrwn_session_form(&answer, PackageVersion::V2) {
                return None;
            }
            mc2::Payload::McClassCSessionAns(mc2::McClassCSessionAnsPayload {
                status_and_mc_group_id: mc2::McClassCSessionAnsPayloadStatusAnsMcGroupId {
                    mc_group_id: answer.mc_group_id,
                    dr_error: answer.dr_error,
                    freq_error: answer.freq_error,
                    mc_group_undefined: answer.mc_group_undefined,
                    start_missed: answer.start_missed,
                },
                time_to_start: answer.time_to_start,
            })
        }
        Uplink::McClassBSessionAns(answer) => {
            if !lrwn_session_form(&answer, PackageVersion::V2) {
                return None;
            }
            mc2::Payload::McClassBSessionAns(mc2::McClassBSessionAnsPayload {
                status_and_mc_group_id: mc2::McClassBSessionAnsPayloadStatusAndMcGroupId {
                    mc_group_id: answer.mc_group_id,
                    dr_error: answer.dr_error,
                    freq_error: answer.freq_error,
                    mc_group_undefined: answer.mc_group_undefined,
                    start_missed: answer.start_missed,
                },
                time_to_start: answer.time_to_start,
            })
        }
    })
}

// ------------------------------------------------------------------------------------------
// TS004 conversions

fn fragmentation_down_v1(command: &fragmentation::Downlink<'_>) -> Option<fr1::Payload> {
    use fragmentation::Downlink;
    Some(match *command {
        Downlink::PackageVersionReq => fr1::Payload::PackageVersionReq,
        Downlink::FragSessionStatusReq {
            frag_index,
            participants_all,
        } => fr1::Payload::FragSessionStatusReq(fr1::FragSessionStatusReqPayload {
            participants: participants_all,
            frag_index,
        }),
        Downlink::FragSessionSetupReq(setup) => {
            if setup.v2.is_some() {
                return None;
            }
            fr1::Payload::FragSessionSetupReq(fr1::FragSessionSetupReqPayload {
                frag_session: fr1::FragSessionSetuReqPayloadFragSession {
                    mc_group_bit_mask: mask_bits(setup.mc_group_bit_mask),
                    frag_index: setup.frag_index,
                },
                nb_frag: setup.nb_frag,
                frag_size: setup.frag_size,
                control: fr1::FragSessionSetuReqPayloadControl {
                    block_ack_delay: setup.block_ack_delay,
                    fragmentation_matrix: setup.frag_algo,
                },
                padding: setup.padding,
                descriptor: setup.descriptor,
            })
        }
        Downlink::FragSessionDeleteReq { frag_index } => {
            fr1::Payload::FragSessionDeleteReq(fr1::FragSessionDeleteReqPayload { frag_index })
        }
        Downlink::FragDataBlockReceivedAns { .. } => return None,
        Downlink::DataFragment {
            frag_index,
            fragment_number,
            data,
        } => fr1::Payload::DataFragment(fr1::DataFragmentPayload {
            index_and_n: fr1::DataFragmentPayloadIndexAndN {
                n: fragment_number,
                frag_index,
            },
            data: data.to_vec(),
        }),
    })
}

fn fragmentation_down_v2(command: &fragmentation::Downlink<'_>) -> Option<fr2::Payload> {
    use fragmentation::Downlink;
    Some(match *command {
        Downlink::PackageVersionReq => fr2::Payload::PackageVersionReq,
        Downlink::FragSessionStatusReq {
            frag_index,
            participants_all,
        } => fr2::Payload::FragSessionStatusReq(fr2::FragSessionStatusReqPayload {
            participants: participants_all,
            frag_index,
        }),
        Downlink::FragSessionSetupReq(setup) => {
            let v2 = setup.v2?;
            fr2::Payload::FragSessionSetupReq(fr2::FragSessionSetupReqPayload {
                frag_session: fr2::FragSessionSetuReqPayloadFragSession {
                    mc_group_bit_mask: mask_bits(setup.mc_group_bit_mask),
                    frag_index: setup.frag_index,
                },
                nb_frag: setup.nb_frag,
                frag_size: setup.frag_size,
                control: fr2::FragSessionSetuReqPayloadControl {
                    block_ack_delay: setup.block_ack_delay,
                    frag_algo: setup.frag_algo,
                    ack_reception: v2.ack_reception,
                },
                padding: setup.padding,
                descriptor: setup.descriptor,
                session_cnt: v2.session_cnt,
                mic: v2.mic,
            })
        }
        Downlink::FragSessionDeleteReq { frag_index } => {
            fr2::Payload::FragSessionDeleteReq(fr2::FragSessionDeleteReqPayload { frag_index })
        }
        Downlink::FragDataBlockReceivedAns { frag_index } => {
            fr2::Payload::FragDataBlockReceivedAns(fr2::FragDataBlockReceivedAnsPayload {
                frag_index,
            })
        }
        Downlink::DataFragment {
            frag_index,
            fragment_number,
            data,
        } => fr2::Payload::DataFragment(fr2::DataFragmentPayload {
            index_and_n: fr2::DataFragmentPayloadIndexAndN {
                n: fragment_number,
                frag_index,
            },
            data: data.to_vec(),
        }),
    })
}

fn fragmentation_up_v1(command: &fragmentation::Uplink) -> Option<fr1::Payload> {
    use fragmentation::Uplink;
    Some(match *command {
        Uplink::PackageVersionAns(answer) => {
            fr1::Payload::PackageVersionAns(fr1::PackageVersionAnsPayload {
                package_identifier: answer.package_identifier,
                package_version: answer.package_version,
            })
        }
        Uplink::FragSessionStatusAnsV1 {
            reception,
            not_enough_matrix_memory,
        } => fr1::Payload::FragSessionStatusAns(fr1::FragSessionStatusAnsPayload {
            received_and_index: fr1::FragSessionStatusAnsPayloadReceivedAndIndex {
                nb_frag_received: reception.nb_frag_received,
                frag_index: reception.frag_index,
            },
            missing_frag: reception.missing_frag,
            status: fr1::FragSessionStatusAnsPayloadStatus {
                not_enough_matrix_memory,
            },
        }),
        Uplink::FragSessionSetupAns {
            frag_index,
            frag_algo_unsupported,
            not_enough_memory,
            frag_index_unsupported,
            wrong_descriptor,
            session_cnt_replay,
        } => {
            if session_cnt_replay {
                return None;
            }
            fr1::Payload::FragSessionSetupAns(fr1::FragSessionSetupAnsPayload {
                encoding_unsupported: frag_algo_unsupported,
                not_enough_memory,
                frag_session_index_not_supported: frag_index_unsupported,
                wrong_descriptor,
                frag_index,
            })
        }
        Uplink::FragSessionDeleteAns {
            frag_index,
            session_does_not_exist,
        } => fr1::Payload::FragSessionDeleteAns(fr1::FragSessionDeleteAnsPayload {
            frag_index,
            session_does_not_exist,
        }),
        Uplink::FragSessionStatusAnsV2 { .. } | Uplink::FragDataBlockReceivedReq { .. } => {
            return None
        }
    })
}

fn fragmentation_up_v2(command: &fragmentation::Uplink) -> Option<fr2::Payload> {
    use fragmentation::Uplink;
    Some(match *command {
        Uplink::PackageVersionAns(answer) => {
            fr2::Payload::PackageVersionAns(fr2::PackageVersionAnsPayload {
                package_identifier: answer.package_identifier,
                package_version: answer.package_version,
            })
        }
        Uplink::FragSessionStatusAnsV2 {
            memory_error,
            mic_error,
            session_does_not_exist,
            reception,
        } => {
            let reception = reception?;
            fr2::Payload::FragSessionStatusAns(fr2::FragSessionStatusAnsPayload {
                status: fr2::FragSessionStatusAnsPayloadStatus {
                    memory_error,
                    mic_error,
                    session_does_not_exist,
                },
                received_and_index: fr2::FragSessionStatusAnsPayloadReceivedAndIndex {
                    nb_frag_received: reception.nb_frag_received,
                    frag_index: reception.frag_index,
                },
                missing_frag: reception.missing_frag,
            })
        }
        Uplink::FragSessionSetupAns {
            frag_index,
            frag_algo_unsupported,
            not_enough_memory,
            frag_index_unsupported,
            wrong_descriptor,
            session_cnt_replay,
        } => fr2::Payload::FragSessionSetupAns(fr2::FragSessionSetupAnsPayload {
            frag_algo_unsupported,
            not_enough_memory,
            frag_index_unsupported,
            wrong_descriptor,
            session_cnt_replay,
            frag_index,
        }),
        Uplink::FragSessionDeleteAns {
            frag_index,
            session_does_not_exist,
        } => fr2::Payload::FragSessionDeleteAns(fr2::FragSessionDeleteAnsPayload {
            frag_index,
            session_does_not_exist,
        }),
        Uplink::FragDataBlockReceivedReq {
            frag_index,
            mic_error,
        } => fr2::Payload::FragDataBlockReceivedReq(fr2::FragDataBlockReceivedReqPayload {
            frag_index,
            mic_error,
        }),
        Uplink::FragSessionStatusAnsV1 { .. } => return None,
    })
}

/// [`agree`] for TS004 downlinks (DataFragment borrows its bytes).
fn agree_fragmentation_downlink<L, E1, E2>(
    owned: &FragDown,
    version: PackageVersion,
    to_lrwn: impl Fn(&fragmentation::Downlink<'_>) -> Option<L>,
    lrwn_decode: impl Fn(&[u8]) -> Result<L, E1>,
    lrwn_encode: impl Fn(&L) -> Result<Vec<u8>, E2>,
) -> Result<(), TestCaseError>
where
    L: PartialEq + Debug,
    E1: Debug,
    E2: Debug,
{
    let ours = owned.as_command();
    let theirs = to_lrwn(&ours).unwrap();
    let our_bytes = encode_ours(&ours).unwrap();
    let decoded_by_lrwn = lrwn_decode(&our_bytes);
    prop_assert!(
        decoded_by_lrwn.is_ok(),
        "lrwn rejects {}",
        hex::encode(&our_bytes)
    );
    prop_assert_eq!(decoded_by_lrwn.ok(), to_lrwn(&ours));
    let their_bytes = lrwn_encode(&theirs).unwrap();
    prop_assert_eq!(
        fragmentation::Downlink::decode_single(&their_bytes, version),
        Ok(ours)
    );
    prop_assert_eq!(hex::encode(our_bytes), hex::encode(their_bytes));
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Property tests: both directions, every command lrwn supports

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn clock_sync_v1_agrees_with_lrwn(down in clock_sync_downlink(), up in clock_sync_uplink()) {
        agree(down, V1, clock_sync_down_v1, |b| cs1::Payload::from_slice(false, b), cs1::Payload::to_vec)?;
        agree(up, V1, clock_sync_up_v1, |b| cs1::Payload::from_slice(true, b), cs1::Payload::to_vec)?;
    }

    #[test]
    fn clock_sync_v2_agrees_with_lrwn(down in clock_sync_downlink(), up in clock_sync_uplink()) {
        agree(down, V2, clock_sync_down_v2, |b| cs2::Payload::from_slice(false, b), cs2::Payload::to_vec)?;
        agree(up, V2, clock_sync_up_v2, |b| cs2::Payload::from_slice(true, b), cs2::Payload::to_vec)?;
    }

    #[test]
    fn multicast_v1_agrees_with_lrwn(
        down in multicast_downlink(true),
        up in multicast_uplink(V1, AnswerForm::Lrwn),
    ) {
        agree(down, V1, multicast_down_v1, |b| mc1::Payload::from_slice(false, b), mc1::Payload::to_vec)?;
        agree(up, V1, multicast_up_v1, |b| mc1::Payload::from_slice(true, b), mc1::Payload::to_vec)?;
    }

    #[test]
    fn multicast_v2_agrees_with_lrwn(
        down in multicast_downlink(true),
        up in multicast_uplink(V2, AnswerForm::Lrwn),
    ) {
        agree(down, V2, multicast_down_v2, |b| mc2::Payload::from_slice(false, b), mc2::Payload::to_vec)?;
        agree(up, V2, multicast_up_v2, |b| mc2::Payload::from_slice(true, b), mc2::Payload::to_vec)?;
    }

    #[test]
    fn fragmentation_v1_agrees_with_lrwn(
        down in frag_downlink(V1),
        up in frag_uplink(V1, AnswerForm::Lrwn),
    ) {
        agree_fragmentation_downlink(&down, V1, fragmentation_down_v1, |b| fr1::Payload::from_slice(false, b), fr1::Payload::to_vec)?;
        agree(up, V1, fragmentation_up_v1, |b| fr1::Payload::from_slice(true, b), fr1::Payload::to_vec)?;
    }

    #[test]
    fn fragmentation_v2_agrees_with_lrwn(
        down in frag_downlink(V2),
        up in frag_uplink(V2, AnswerForm::Lrwn),
    ) {
        agree_fragmentation_downlink(&down, V2, fragmentation_down_v2, |b| fr2::Payload::from_slice(false, b), fr2::Payload::to_vec)?;
        agree(up, V2, fragmentation_up_v2, |b| fr2::Payload::from_slice(true, b), fr2::Payload::to_vec)?;
    }
}

/// One command's CID followed by a few bytes: lrwn only decodes exact-length payloads.
fn single_command_frame() -> impl Strategy<Value = Vec<u8>> {
    (0u8..9, vec(any::<u8>(), 0..32)).prop_map(|(cid, mut rest)| {
        rest.insert(0, cid);
        rest
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// Differential decoding: wherever both decoders accept the bytes as one command
    /// that lrwn can represent, they read the same values.
    #[test]
    fn decoders_agree_on_arbitrary_bytes(bytes in single_command_frame()) {
        differential(&bytes, V1, |b| cs1::Payload::from_slice(false, b), clock_sync_down_v1)?;
        differential(&bytes, V1, |b| cs1::Payload::from_slice(true, b), clock_sync_up_v1)?;
        differential(&bytes, V2, |b| cs2::Payload::from_slice(false, b), clock_sync_down_v2)?;
        differential(&bytes, V2, |b| cs2::Payload::from_slice(true, b), clock_sync_up_v2)?;
        differential(&bytes, V1, |b| mc1::Payload::from_slice(false, b), multicast_down_v1)?;
        differential(&bytes, V1, |b| mc1::Payload::from_slice(true, b), multicast_up_v1)?;
        differential(&bytes, V2, |b| mc2::Payload::from_slice(false, b), multicast_down_v2)?;
        differential(&bytes, V2, |b| mc2::Payload::from_slice(true, b), multicast_up_v2)?;
        differential::<fragmentation::Downlink<'_>, _, _>(
            &bytes, V1, |b| fr1::Payload::from_slice(false, b), fragmentation_down_v1,
        )?;
        differential(&bytes, V1, |b| fr1::Payload::from_slice(true, b), fragmentation_up_v1)?;
        differential::<fragmentation::Downlink<'_>, _, _>(
            &bytes, V2, |b| fr2::Payload::from_slice(false, b), fragmentation_down_v2,
        )?;
        differential(&bytes, V2, |b| fr2::Payload::from_slice(true, b), fragmentation_up_v2)?;
    }
}

// ------------------------------------------------------------------------------------------
// Documented differences (module doc, items 1 to 7)

fn session(status: u8, time_to_start: Option<u32>) -> multicast_setup::SessionAns {
    multicast_setup::SessionAns {
        mc_group_id: status & 0x03,
        dr_error: status & 0x04 != 0,
        freq_error: status & 0x08 != 0,
        mc_group_undefined: status & 0x10 != 0,
        start_missed: status & 0x20 != 0,
        reserved_errors: status >> 6,
        time_to_start,
    }
}

fn encode_bytes<'a, C: Command<'a> + Debug>(command: &C) -> Vec<u8> {
    encode_ours(command).unwrap()
}

#[test]
fn difference_1_start_missed_only_session_answer() {
    use multicast_setup::Uplink;
    let short = [0x04, 0x20];
    // Spec / LBM form: we read it in both versions (LBM sets bit 5 in v1 too).
    for version in VERSIONS {
        assert_eq!(
            Uplink::decode_single(&short, version),
            Ok(Uplink::McClassCSessionAns(session(0x20, None)))
        );
    }
    // lrwn wants TimeToStart whenever bits 2..4 are clear, in both versions.
    assert!(mc2::Payload::from_slice(true, &short).is_err());
    assert!(mc1::Payload::from_slice(true, &short).is_err());
    // lrwn v2 even encodes this answer that way and then cannot decode its own bytes.
    let lrwn_answer = mc2::Payload::McClassCSessionAns(mc2::McClassCSessionAnsPayload {
        status_and_mc_group_id: mc2::McClassCSessionAnsPayloadStatusAnsMcGroupId {
            mc_group_id: 0,
            dr_error: false,
            freq_error: false,
            mc_group_undefined: false,
            start_missed: true,
        },
        time_to_start: None,
    });
    let lrwn_bytes = lrwn_answer.to_vec().unwrap();
    assert_eq!(lrwn_bytes, short);
    assert!(mc2::Payload::from_slice(true, &lrwn_bytes).is_err());

    // lrwn's 4-byte form: we keep the 3 bytes, so both sides read the same values and
    // re-encoding is byte-exact.
    let long = [0x05, 0x21, 0x10, 0x00, 0x00];
    let ours = Uplink::decode_single(&long, V2).unwrap();
    assert_eq!(ours, Uplink::McClassBSessionAns(session(0x21, Some(16))));
    assert_eq!(encode_bytes(&ours), long);
    assert_eq!(
        mc2::Payload::from_slice(true, &long).unwrap(),
        multicast_up_v2(&ours).unwrap()
    );
    // lrwn v1 ignores bit 5 and sees a plain accepted answer; we report StartMissed.
    let ours_v1 = Uplink::decode_single(&long, V1).unwrap();
    assert_eq!(ours_v1, Uplink::McClassBSessionAns(session(0x21, Some(16))));
    let lrwn_v1 = mc1::Payload::from_slice(true, &long).unwrap();
    let mut without_start_missed = session(0x01, Some(16));
    without_start_missed.start_missed = false;
    assert_eq!(
        lrwn_v1,
        multicast_up_v1(&Uplink::McClassBSessionAns(without_start_missed)).unwrap()
    );
}

#[test]
fn difference_2_v2_reserved_error_bits() {
    use multicast_setup::Uplink;
    // Bit 6 set: an error for us in v2 (no TimeToStart follows); lrwn ignores it and
    // wants a TimeToStart.
    let short = [0x04, 0x40];
    let ours = Uplink::decode_single(&short, V2).unwrap();
    assert_eq!(ours, Uplink::McClassCSessionAns(session(0x40, None)));
    if let Uplink::McClassCSessionAns(answer) = ours {
        assert!(answer.has_error());
    }
    assert!(mc2::Payload::from_slice(true, &short).is_err());

    // With 3 bytes after it lrwn reads an accepted session; we read the error and keep
    // the bytes. In v1 the bits are RFU for both.
    let long = [0x04, 0xC2, 0x00, 0x01, 0x00];
    assert_eq!(
        Uplink::decode_single(&long, V2),
        Ok(Uplink::McClassCSessionAns(session(0xC2, Some(256))))
    );
    let lrwn_v2 = mc2::Payload::from_slice(true, &long).unwrap();
    assert_eq!(
        lrwn_v2,
        multicast_up_v2(&Uplink::McClassCSessionAns(session(0x02, Some(256)))).unwrap()
    );
    let ours_v1 = Uplink::decode_single(&long, V1).unwrap();
    assert_eq!(
        ours_v1,
        Uplink::McClassCSessionAns(session(0x02, Some(256)))
    );
    assert_eq!(
        mc1::Payload::from_slice(true, &long).unwrap(),
        multicast_up_v1(&ours_v1).unwrap()
    );
}

#[test]
fn difference_3_error_answer_followed_by_three_bytes() {
    use multicast_setup::Uplink;
    let bytes = [0x04, 0x1E, 0x00, 0x04, 0x00];
    let ours = Uplink::decode_single(&bytes, V1).unwrap();
    assert_eq!(ours, Uplink::McClassCSessionAns(session(0x1E, Some(1024))));
    assert_eq!(encode_bytes(&ours), bytes);
    // lrwn accepts the bytes but drops the TimeToStart; re-encoding loses them.
    for lrwn in [
        mc1::Payload::from_slice(true, &bytes)
            .unwrap()
            .to_vec()
            .unwrap(),
        mc2::Payload::from_slice(true, &bytes)
            .unwrap()
            .to_vec()
            .unwrap(),
    ] {
        assert_eq!(lrwn, [0x04, 0x1E]);
    }
}

#[test]
fn difference_4_group_status_consistency_checks() {
    use multicast_setup::Uplink;
    // Entries out of order (group 1 listed first).
    let swapped = [0x01, 0x23, 0x01, 4, 3, 2, 1, 0x00, 4, 3, 2, 2];
    assert!(matches!(
        Uplink::decode_single(&swapped, V1),
        Err(DecodeError::InvalidField {
            field: "McGroupID",
            ..
        })
    ));
    assert!(mc1::Payload::from_slice(true, &swapped).is_ok());
    // NbTotalGroups = 7.
    let too_many = [0x01, 0x70];
    assert!(matches!(
        Uplink::decode_single(&too_many, V2),
        Err(DecodeError::InvalidField {
            field: "NbTotalGroups",
            ..
        })
    ));
    assert!(mc2::Payload::from_slice(true, &too_many).is_ok());
    // AnsGroupMask lists two groups but only one entry follows.
    let short = [0x01, 0x23, 0x00, 4, 3, 2, 1];
    assert!(matches!(
        Uplink::decode_single(&short, V2),
        Err(DecodeError::Truncated { cid: 0x01, .. })
    ));
    assert!(mc2::Payload::from_slice(true, &short).is_ok());
}

#[test]
fn difference_5_frequencies_from_1_2_ghz() {
    use multicast_setup::Downlink;
    // DLFreq 12 125 000 = 0xB90348: lrwn reads 200 Hz steps (2.425 GHz), we read 100 Hz
    // steps as the sub-GHz specifications define.
    let bytes = [0x04, 0x00, 0, 0, 0, 0, 0x08, 0x48, 0x03, 0xB9, 0x00];
    assert_eq!(
        Downlink::decode_single(&bytes, V2),
        Ok(Downlink::McClassCSessionReq {
            mc_group_id: 0,
            session_time: 0,
            time_out: 8,
            dl_frequency_hz: 1_212_500_000,
            data_rate: 0
        })
    );
    let Ok(mc2::Payload::McClassCSessionReq(lrwn)) = mc2::Payload::from_slice(false, &bytes) else {
        panic!("lrwn rejects a Class C session request");
    };
    assert_eq!(lrwn.dl_frequ, 2_425_000_000);
    // 2.425 GHz does not fit DLFreq in 100 Hz units: we refuse, lrwn halves it.
    let at_2g4 = Downlink::McClassCSessionReq {
        mc_group_id: 0,
        session_time: 0,
        time_out: 8,
        dl_frequency_hz: 2_425_000_000,
        data_rate: 0,
    };
    assert!(matches!(
        encode_ours(&at_2g4),
        Err(EncodeError::InvalidField {
            field: "DLFreq",
            ..
        })
    ));
    assert_eq!(
        mc2::Payload::McClassCSessionReq(lrwn).to_vec().unwrap(),
        bytes
    );
}

#[test]
fn difference_6_v2_status_answer_without_session() {
    use fragmentation::{ReceptionStatus, Uplink};
    let short = [0x01, 0x04];
    assert_eq!(
        Uplink::decode_single(&short, V2),
        Ok(Uplink::FragSessionStatusAnsV2 {
            memory_error: false,
            mic_error: false,
            session_does_not_exist: true,
            reception: None
        })
    );
    assert!(fr2::Payload::from_slice(true, &short).is_err());
    // lrwn always sends 4 bytes; LBM sends zeros after the status. Both decode the same
    // and we re-encode the same bytes.
    let lrwn_answer = fr2::Payload::FragSessionStatusAns(fr2::FragSessionStatusAnsPayload {
        status: fr2::FragSessionStatusAnsPayloadStatus {
            memory_error: false,
            mic_error: false,
            session_does_not_exist: true,
        },
        received_and_index: fr2::FragSessionStatusAnsPayloadReceivedAndIndex {
            nb_frag_received: 0,
            frag_index: 1,
        },
        missing_frag: 0,
    });
    let lrwn_bytes = lrwn_answer.to_vec().unwrap();
    assert_eq!(lrwn_bytes, [0x01, 0x04, 0x00, 0x40, 0x00]);
    let ours = Uplink::decode_single(&lrwn_bytes, V2).unwrap();
    assert_eq!(
        ours,
        Uplink::FragSessionStatusAnsV2 {
            memory_error: false,
            mic_error: false,
            session_does_not_exist: true,
            reception: Some(ReceptionStatus {
                frag_index: 1,
                nb_frag_received: 0,
                missing_frag: 0
            })
        }
    );
    assert_eq!(encode_bytes(&ours), lrwn_bytes);
    assert_eq!(fragmentation_up_v2(&ours), Some(lrwn_answer));
}

#[test]
fn difference_7_data_fragment_counter_zero() {
    use fragmentation::Downlink;
    let bytes = [0x08, 0x00, 0x40, 0xAA];
    for version in VERSIONS {
        assert!(matches!(
            Downlink::decode_single(&bytes, version),
            Err(DecodeError::InvalidField { field: "N", .. })
        ));
    }
    let Ok(fr1::Payload::DataFragment(lrwn)) = fr1::Payload::from_slice(false, &bytes) else {
        panic!("lrwn rejects a DataFragment");
    };
    assert_eq!((lrwn.index_and_n.n, lrwn.index_and_n.frag_index), (0, 1));
    assert!(fr2::Payload::from_slice(false, &bytes).is_ok());
    let counter_zero = Downlink::DataFragment {
        frag_index: 1,
        fragment_number: 0,
        data: &[0xAA],
    };
    assert!(matches!(
        encode_ours(&counter_zero),
        Err(EncodeError::InvalidField { field: "N", .. })
    ));
    assert_eq!(fr1::Payload::DataFragment(lrwn).to_vec().unwrap(), bytes);
}

#[test]
fn agreement_cid_4_is_v2_only_on_both_sides() {
    for bytes in [[0x04u8, 0x06], [0x04, 0x02]] {
        assert!(fr1::Payload::from_slice(true, &bytes).is_err());
        assert!(fr1::Payload::from_slice(false, &bytes).is_err());
        assert!(matches!(
            fragmentation::Uplink::decode_single(&bytes, V1),
            Err(DecodeError::UnknownCid { cid: 4, .. })
        ));
        assert!(matches!(
            fragmentation::Downlink::decode_single(&bytes, V1),
            Err(DecodeError::UnknownCid { cid: 4, .. })
        ));
    }
}

#[test]
fn agreement_package_version_answers() {
    let ours = clock_sync::Uplink::PackageVersionAns(PackageVersionAns {
        package_identifier: 1,
        package_version: 2,
    });
    assert_eq!(
        cs2::Payload::from_slice(true, &encode_bytes(&ours)).unwrap(),
        clock_sync_up_v2(&ours).unwrap()
    );
}
