//! OTAA joins of LoRaWAN 1.0.x devices: the JoinRequest checked (MIC, JoinEUI, DevNonce
//! rules of the device's MAC version), a DevAddr allocated, the session stored with its
//! event, and the join accept built for RX1 (+5 s) / RX2 (+6 s).

use sha2::{Digest, Sha256};

use super::crypto::{build_join_accept, derive_session_keys, JoinAcceptFields};
use super::{ClassAAnswer, NetworkServer, Rejection, UplinkOutcome, UplinkRadio};
use crate::identifiers::{DevAddr, DevEui, JoinEui};
use crate::lorawan::region::RegionName;
use crate::lorawan::scheduler::ClassAKind;
use crate::storage::{
    DevNonceUse, DeviceSession, EventKind, MacVersion, NewEvent, Storage, StorageError,
};

/// JoinRequest length: MHDR, JoinEUI, DevEUI, DevNonce, MIC.
const JOIN_REQUEST_LEN: usize = 23;

/// Attempts at finding a DevAddr no session uses.
const DEV_ADDR_ATTEMPTS: u32 = 64;

/// Handles a JoinRequest the ownership index says is ours.
pub(super) fn handle_join_request(
    server: &mut NetworkServer,
    storage: &mut Storage,
    phy_payload: &[u8],
    radio: &UplinkRadio,
) -> Result<UplinkOutcome, StorageError> {
    if phy_payload.len() != JOIN_REQUEST_LEN {
        return Ok(rejected(
            None,
            Rejection::Malformed(format!(
                "a JoinRequest is {JOIN_REQUEST_LEN} bytes, this one {}",
                phy_payload.len()
            )),
        ));
    }
    let eui = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&phy_payload[range]);
        bytes.reverse();
        bytes
    };
    let join_eui = JoinEui::from_bytes(eui(1..9));
    let dev_eui = DevEui::from_bytes(eui(9..17));
    let dev_nonce = u16::from_le_bytes([phy_payload[17], phy_payload[18]]);

    let Some(device) = storage.device(dev_eui)? else {
        // Removed since the ownership check.
        return Ok(UplinkOutcome::NotOurs);
    };
    let refuse = |storage: &mut Storage, reason: Rejection| {
        record_rejection(storage, dev_eui, radio, &reason)?;
        Ok(rejected(Some(dev_eui), reason))
    };
    if device.join_eui != join_eui {
        let reason = Rejection::WrongJoinEui {
            found: join_eui.to_string(),
            expected: device.join_eui.to_string(),
        };
        return refuse(storage, reason);
    }
    let Some(app_key) = device.app_key else {
        return refuse(storage, Rejection::NotOtaa);
    };
    let mic = super::crypto::cmac_mic(&app_key, &phy_payload[..19]);
    if mic != phy_payload[19..23] {
        return refuse(storage, Rejection::BadMic);
    }
    let counter_nonces = !matches!(device.mac_version, MacVersion::V1_0_2 | MacVersion::V1_0_3);
    if counter_nonces {
        if let Some(highest) = storage.highest_dev_nonce(dev_eui, join_eui)? {
            if dev_nonce <= highest {
                return refuse(
                    storage,
                    Rejection::DevNonceNotIncreasing { dev_nonce, highest },
                );
            }
        }
    }

    // JoinNonce: how many joins the device made before, plus one; never repeats.
    let join_nonce = (storage.dev_nonce_count(dev_eui)? + 1) & 0x00ff_ffff;
    let Some(dev_addr) = allocate_dev_addr(server, storage, dev_eui, dev_nonce)? else {
        return refuse(storage, Rejection::NoDevAddr);
    };
    let keys = derive_session_keys(&app_key, join_nonce, server.settings.net_id, dev_nonce);
    let rx2 = server.rx2();
    let rx1 = match server.region.rx1(
        radio.frequency_hz,
        radio.data_rate,
        server.settings.rx1_dr_offset,
    ) {
        Ok(rx1) => rx1,
        Err(error) => return refuse(storage, Rejection::Region(error.to_string())),
    };
    let cf_list = cf_list(server).map_err(|error| StorageError::InvalidStoredValue {
        column: "network_server.cf_list",
        reason: error,
    })?;
    let join_accept = build_join_accept(
        &app_key,
        &JoinAcceptFields {
            join_nonce,
            net_id: server.settings.net_id,
            dev_addr: dev_addr.to_u32(),
            dl_settings: (server.settings.rx1_dr_offset & 0x07) << 4 | (rx2.data_rate & 0x0f),
            rx_delay: server.settings.rx1_delay_s & 0x0f,
            cf_list,
        },
    );

    let session = DeviceSession {
        dev_eui,
        dev_addr,
        nwk_s_key: keys.nwk_s_key,
        s_nwk_s_int_key: None,
        nwk_s_enc_key: None,
        app_s_key: keys.app_s_key,
        last_f_cnt_up: None,
    };
    let at = radio.received_wall;
    let replayed = storage.write(|tx| {
        if tx.record_dev_nonce(dev_eui, join_eui, dev_nonce, at)? == DevNonceUse::Replayed {
            return Ok(true);
        }
        tx.store_session(
            &session,
            at,
            serde_json::json!({
                "dev_nonce": dev_nonce,
                "join_nonce": join_nonce,
                "gateway": radio.gateway,
                "mac_version": device.mac_version,
            }),
        )?;
        Ok(false)
    })?;
    if replayed {
        return refuse(storage, Rejection::DevNonceReplayed { dev_nonce });
    }
    server.ownership.set_session(dev_eui, dev_addr);
    // A new session: whatever was queued for the old one is still for the device.
    Ok(UplinkOutcome::Joined {
        dev_eui,
        answer: ClassAAnswer {
            dev_eui,
            gateway: radio.gateway,
            phy_payload: join_accept,
            kind: ClassAKind::JoinAccept,
            uplink_tmst: radio.tmst,
            rx1,
            rx2,
            f_cnt_down: None,
        },
    })
}

/// The CFList of join accepts, if extra channels are configured (EU868/AS923).
fn cf_list(server: &NetworkServer) -> Result<Option<[u8; 16]>, String> {
    if server.settings.cf_list_frequencies_hz.is_empty()
        || server.region.name() == RegionName::Us915
    {
        return Ok(None);
    }
    server
        .region
        .cf_list_extra_channels(&server.settings.cf_list_frequencies_hz)
        .map(Some)
        .map_err(|error| error.to_string())
}

/// A DevAddr in the configured prefix that no other device's session uses, picked from
/// a hash of the device and its nonce (so a rejoin usually gets a new address).
fn allocate_dev_addr(
    server: &NetworkServer,
    storage: &Storage,
    dev_eui: DevEui,
    dev_nonce: u16,
) -> Result<Option<DevAddr>, StorageError> {
    let prefix_len = u32::from(server.settings.dev_addr_prefix_len.min(32));
    let prefix_mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len)
    };
    let prefix = server.settings.dev_addr_prefix & prefix_mask;
    for attempt in 0..DEV_ADDR_ATTEMPTS {
        let mut hasher = Sha256::new();
        hasher.update(dev_eui.to_bytes());
        hasher.update(dev_nonce.to_le_bytes());
        hasher.update(attempt.to_le_bytes());
        let digest = hasher.finalize();
        let random = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let candidate = DevAddr::from(prefix | (random & !prefix_mask));
        let taken = storage
            .sessions_by_dev_addr(candidate)?
            .iter()
            .any(|session| session.dev_eui != dev_eui);
        if !taken {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

fn rejected(dev_eui: Option<DevEui>, reason: Rejection) -> UplinkOutcome {
    UplinkOutcome::Rejected { dev_eui, reason }
}

/// Appends an `uplink_rejected` event for a known device.
pub(super) fn record_rejection(
    storage: &mut Storage,
    dev_eui: DevEui,
    radio: &UplinkRadio,
    reason: &Rejection,
) -> Result<(), StorageError> {
    tracing::warn!(%dev_eui, gateway = %radio.gateway, "refused a frame: {reason}");
    storage.append_event(
        &NewEvent::new(radio.received_wall, EventKind::UplinkRejected)
            .device(dev_eui)
            .gateway(radio.gateway)
            .payload(serde_json::json!({ "reason": reason.to_string() })),
    )?;
    Ok(())
}
