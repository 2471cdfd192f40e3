//! Data uplinks of our devices: the session found by DevAddr and MIC, the 32-bit FCnt
//! rebuilt and checked, the payload decrypted, MAC requests answered, and the Class A
//! answer built when one is due (confirmed uplink, MAC answer, or a queued payload).

use base64::prelude::{Engine as _, BASE64_STANDARD};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey, AES128};
use lorawan::parser::{parse, DataHeader, DataPayload, FCtrl, FRMPayload, PhyPayload};

use super::join::record_rejection;
use super::mac_commands::{
    device_time_answer, link_check_answer, link_margin_db, parse_uplink_mac_commands, MacAnswer,
    MacRequest,
};
use super::{
    ApplicationHandler, ApplicationUplink, ClassAAnswer, NetworkServer, Rejection, UplinkOutcome,
    UplinkRadio,
};
use crate::identifiers::{DevAddr, DevEui};
use crate::lorawan::region::Modulation;
use crate::lorawan::scheduler::ClassAKind;
use crate::storage::{DeviceSession, EventKind, NewEvent, Storage, StorageError};

/// Shortest data frame: MHDR, FHDR (7), MIC.
const MIN_DATA_FRAME_LEN: usize = 12;
/// FCtrl ACK bit (downlink).
const FCTRL_ACK: u8 = 0x20;

/// Handles a data uplink whose DevAddr the ownership index knows.
pub(super) fn handle_data_uplink(
    server: &mut NetworkServer,
    storage: &mut Storage,
    phy_payload: &[u8],
    radio: &UplinkRadio,
    application: &mut dyn ApplicationHandler,
) -> Result<UplinkOutcome, StorageError> {
    let mtype = phy_payload[0] >> 5;
    let confirmed = match mtype {
        0b010 => false,
        0b100 => true,
        other => {
            return Ok(UplinkOutcome::Rejected {
                dev_eui: None,
                reason: Rejection::NotAnUplink(other),
            })
        }
    };
    if phy_payload.len() < MIN_DATA_FRAME_LEN {
        return Ok(UplinkOutcome::Rejected {
            dev_eui: None,
            reason: Rejection::Malformed(format!(
                "a data frame is at least {MIN_DATA_FRAME_LEN} bytes, this one {}",
                phy_payload.len()
            )),
        });
    }
    let dev_addr = DevAddr::from_bytes([
        phy_payload[4],
        phy_payload[3],
        phy_payload[2],
        phy_payload[1],
    ]);
    let wire_f_cnt = u16::from_le_bytes([phy_payload[6], phy_payload[7]]);
    let sessions = storage.sessions_by_dev_addr(dev_addr)?;
    if sessions.is_empty() {
        return Ok(UplinkOutcome::NotOurs);
    }

    // The session whose key gives a valid MIC, and the full counter it implies.
    let mut matched: Option<(DeviceSession, u32)> = None;
    let mut replay: Option<(DevEui, u32, u32)> = None;
    for session in &sessions {
        let nwk = AES128(*session.nwk_s_key.as_bytes());
        let candidates = f_cnt_candidates(session.last_f_cnt_up, wire_f_cnt);
        for candidate in candidates {
            if mic_ok(phy_payload, &nwk, candidate) {
                match session.last_f_cnt_up {
                    Some(last) if candidate <= last => {
                        replay = Some((session.dev_eui, candidate, last));
                    }
                    _ => matched = Some((session.clone(), candidate)),
                }
                break;
            }
        }
        if matched.is_some() {
            break;
        }
    }
    let Some((session, f_cnt)) = matched else {
        let (dev_eui, reason) = match replay {
            Some((dev_eui, f_cnt, last)) => {
                (Some(dev_eui), Rejection::FCntReplayed { f_cnt, last })
            }
            None if sessions.len() == 1 => (Some(sessions[0].dev_eui), Rejection::BadMic),
            None => (None, Rejection::BadMic),
        };
        if let Some(dev_eui) = dev_eui {
            record_rejection(storage, dev_eui, radio, &reason)?;
        }
        return Ok(UplinkOutcome::Rejected { dev_eui, reason });
    };
    let dev_eui = session.dev_eui;

    let nwk = AES128(*session.nwk_s_key.as_bytes());
    let app = AES128(*session.app_s_key.as_bytes());
    let decrypted = match parse(phy_payload.to_vec()) {
        Ok(PhyPayload::Data(DataPayload::Encrypted(encrypted))) => {
            match encrypted.decrypt(Some(&nwk), Some(&app), f_cnt) {
                Ok(decrypted) => decrypted,
                Err(error) => {
                    let reason = Rejection::Malformed(format!("{error:?}"));
                    record_rejection(storage, dev_eui, radio, &reason)?;
                    return Ok(UplinkOutcome::Rejected {
                        dev_eui: Some(dev_eui),
                        reason,
                    });
                }
            }
        }
        Ok(_) => {
            return Ok(UplinkOutcome::Rejected {
                dev_eui: Some(dev_eui),
                reason: Rejection::Malformed("not a data frame".into()),
            })
        }
        Err(error) => {
            let reason = Rejection::Malformed(format!("{error:?}"));
            record_rejection(storage, dev_eui, radio, &reason)?;
            return Ok(UplinkOutcome::Rejected {
                dev_eui: Some(dev_eui),
                reason,
            });
        }
    };
    let f_port = decrypted.f_port();
    let fopts = decrypted.fhdr().data().to_vec();
    let (payload, mac_bytes) = match decrypted.frm_payload() {
        FRMPayload::Data(data) => (data.to_vec(), fopts),
        FRMPayload::MACCommands(commands) => (Vec::new(), commands.data().to_vec()),
        FRMPayload::None => (Vec::new(), fopts),
    };

    storage.write(|tx| {
        tx.set_last_f_cnt_up(dev_eui, f_cnt)?;
        tx.append_event(
            &NewEvent::new(radio.received_wall, EventKind::Uplink)
                .device(dev_eui)
                .gateway(radio.gateway)
                .payload(serde_json::json!({
                    "f_cnt": f_cnt,
                    "f_port": f_port,
                    "confirmed": confirmed,
                    "size": payload.len(),
                    // The decrypted application payload, for the fleet backend (the
                    // event log is what upstream sync publishes).
                    "data": (!payload.is_empty()).then(|| BASE64_STANDARD.encode(&payload)),
                    "frequency_hz": radio.frequency_hz,
                    "data_rate": radio.data_rate,
                    "rssi_dbm": radio.rssi_dbm,
                    "snr_db": radio.snr_db,
                })),
        )?;
        Ok(())
    })?;

    if let Some(port) = f_port.filter(|port| (1..=223).contains(port)) {
        let uplink = ApplicationUplink {
            dev_eui,
            f_port: port,
            payload: &payload,
            f_cnt,
            received: radio.received_wall,
            received_at: radio.received_at,
        };
        if let Some(downlink) = application.on_application_uplink(storage, &uplink) {
            server.requeue_front(dev_eui, downlink);
        }
    }
    let answers = mac_answers(server, &mac_bytes, radio);
    let answer = build_answer(server, storage, &session, radio, confirmed, &answers)?;
    Ok(UplinkOutcome::Data {
        dev_eui,
        f_cnt,
        confirmed,
        f_port,
        payload,
        answer,
    })
}

/// The full counters a 16-bit wire FCnt may stand for, most likely first: the same
/// upper half as the last accepted one, then the next (rollover).
fn f_cnt_candidates(last: Option<u32>, wire: u16) -> Vec<u32> {
    let Some(last) = last else {
        return vec![u32::from(wire)];
    };
    let same_half = (last & 0xffff_0000) | u32::from(wire);
    let mut candidates = vec![same_half];
    if same_half <= last {
        if let Some(next) = same_half.checked_add(0x1_0000) {
            candidates.push(next);
        }
    }
    candidates
}

fn mic_ok(phy_payload: &[u8], nwk_s_key: &AES128, f_cnt: u32) -> bool {
    match parse(phy_payload.to_vec()) {
        Ok(PhyPayload::Data(DataPayload::Encrypted(encrypted))) => {
            encrypted.validate_mic(nwk_s_key, f_cnt)
        }
        _ => false,
    }
}

fn mac_answers(server: &NetworkServer, mac_bytes: &[u8], radio: &UplinkRadio) -> Vec<MacAnswer> {
    let parsed = parse_uplink_mac_commands(mac_bytes);
    if let Some(cid) = parsed.stopped_at_unknown_cid {
        tracing::debug!("stopped reading MAC commands at unknown CID {cid:#04x}");
    }
    let spreading_factor = match server
        .region
        .data_rate(radio.data_rate)
        .map(|dr| dr.modulation)
    {
        Ok(Modulation::Lora {
            spreading_factor, ..
        }) => spreading_factor,
        _ => 12,
    };
    parsed
        .requests
        .iter()
        .filter_map(|request| match request {
            MacRequest::LinkCheck => Some(link_check_answer(
                link_margin_db(radio.snr_db, spreading_factor),
                1,
            )),
            MacRequest::DeviceTime => radio
                .gps_time
                .or_else(|| radio.received_wall.to_gps())
                .map(|time| device_time_answer(time.device_time_ans_payload())),
        })
        .collect()
}

/// The Class A answer, when one is due.
fn build_answer(
    server: &mut NetworkServer,
    storage: &mut Storage,
    session: &DeviceSession,
    radio: &UplinkRadio,
    ack: bool,
    mac_answers: &[MacAnswer],
) -> Result<Option<ClassAAnswer>, StorageError> {
    let dev_eui = session.dev_eui;
    let queued = server.take_downlink(dev_eui);
    if !ack && mac_answers.is_empty() && queued.is_none() {
        return Ok(None);
    }
    let rx1 = match server.region.rx1(
        radio.frequency_hz,
        radio.data_rate,
        server.settings.rx1_dr_offset,
    ) {
        Ok(rx1) => rx1,
        Err(error) => {
            tracing::warn!(%dev_eui, "cannot answer: {error}");
            if let Some(queued) = queued {
                server.requeue_front(dev_eui, queued);
            }
            return Ok(None);
        }
    };
    let rx2 = server.rx2();
    // The payload must fit the smaller of the two windows' data rates.
    let max_frm = [rx1.data_rate, rx2.data_rate]
        .iter()
        .filter_map(|&dr| server.region.max_frm_payload(dr).ok())
        .min()
        .unwrap_or(0);
    let fopts_len: usize = mac_answers
        .iter()
        .map(|answer| 1 + answer.payload.len())
        .sum();
    let queued = match queued {
        Some(queued) if queued.payload.len() + fopts_len > max_frm => {
            tracing::error!(
                %dev_eui,
                "dropped a {}-byte downlink on FPort {}: at most {max_frm} bytes fit",
                queued.payload.len(),
                queued.f_port
            );
            None
        }
        other => other,
    };
    if !ack && mac_answers.is_empty() && queued.is_none() {
        return Ok(None);
    }

    let f_cnt_down = storage.next_f_cnt_down(dev_eui)?;
    let mut creator = DataPayloadCreator::new();
    let wire_dev_addr = session.dev_addr.to_u32().to_le_bytes();
    creator
        .set_uplink(false)
        .set_confirmed(queued.as_ref().is_some_and(|queued| queued.confirmed))
        .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(wire_dev_addr))
        .set_fctrl(&FCtrl::new(if ack { FCTRL_ACK } else { 0 }, false))
        .set_fcnt(f_cnt_down);
    let payload: &[u8] = match &queued {
        Some(queued) => {
            creator.set_f_port(queued.f_port);
            &queued.payload
        }
        None => &[],
    };
    let commands: Vec<&dyn lorawan::maccommands::SerializableMacCommand> = mac_answers
        .iter()
        .map(|answer| answer as &dyn lorawan::maccommands::SerializableMacCommand)
        .collect();
    let frame = creator
        .build(
            payload,
            &commands,
            &NewSKey::from(*session.nwk_s_key.as_bytes()),
            &AppSKey::from(*session.app_s_key.as_bytes()),
        )
        .map(<[u8]>::to_vec);
    let frame = match frame {
        Ok(frame) => frame,
        Err(error) => {
            tracing::error!(%dev_eui, "cannot build the answer: {error:?}");
            return Ok(None);
        }
    };
    Ok(Some(ClassAAnswer {
        dev_eui,
        gateway: radio.gateway,
        phy_payload: frame,
        kind: ClassAKind::Data {
            rx1_delay_s: server.settings.rx1_delay_s,
        },
        uplink_tmst: radio.tmst,
        rx1,
        rx2,
        f_cnt_down: Some(f_cnt_down),
    }))
}
