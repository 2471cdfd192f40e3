//! Class C multicast frames as a device of the group reads them (the `lorawan` crate's
//! parser with the group keys derived by lorawan-fuota, as the node does), and an ABP
//! device (session provisioned, no join) served like any other.

use fuota_agent::clock::WallTime;
use fuota_agent::identifiers::{DevAddr, DevEui, GatewayEui, JoinEui};
use fuota_agent::lorawan::region::{Region, RegionName, RegionOptions};
use fuota_agent::lorawan::time::MonotonicTime;
use fuota_agent::network_server::multicast::{
    build_multicast_frame, MulticastFrameError, MulticastGroupKeys,
};
use fuota_agent::network_server::{
    ApplicationHandler, ApplicationUplink, NetworkServer, NetworkServerSettings, OwnershipIndex,
    QueuedDownlink, UplinkOutcome, UplinkRadio,
};
use fuota_agent::storage::{Device, DeviceSession, MacVersion, Storage};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey, AES128};
use lorawan::parser::{parse, DataHeader, DataPayload, FRMPayload, PhyPayload};
use lorawan_fuota::crypto::Key128;

#[test]
fn a_group_member_decrypts_and_verifies_multicast_frames() {
    let mc_key = Key128::from_bytes([0x5a; 16]);
    let group = MulticastGroupKeys::from_mc_key(&mc_key, 0x0123_4567);
    let frame = build_multicast_frame(&group, 0x0001_0005, 201, b"fragment 5").unwrap();
    assert_eq!(frame[0] >> 5, 0b011, "unconfirmed data down");
    assert_eq!(
        &frame[1..5],
        &0x0123_4567u32.to_le_bytes(),
        "McAddr on the air"
    );
    assert_eq!(
        u16::from_le_bytes([frame[6], frame[7]]),
        0x0005,
        "FCnt's low bits"
    );

    // A member derives the same keys from the McKey it was given.
    let nwk = lorawan_fuota::crypto::multicast::mc_nwk_s_key(&mc_key, 0x0123_4567);
    let app = lorawan_fuota::crypto::multicast::mc_app_s_key(&mc_key, 0x0123_4567);
    let Ok(PhyPayload::Data(DataPayload::Encrypted(encrypted))) = parse(frame.clone()) else {
        panic!("not a data frame");
    };
    assert!(encrypted.validate_mic(&AES128(*nwk.as_bytes()), 0x0001_0005));
    assert!(
        !encrypted.validate_mic(&AES128(*nwk.as_bytes()), 0x0000_0005),
        "the full FCnt counts"
    );
    let decrypted = encrypted
        .decrypt(
            Some(&AES128(*nwk.as_bytes())),
            Some(&AES128(*app.as_bytes())),
            0x0001_0005,
        )
        .unwrap();
    assert_eq!(decrypted.f_port(), Some(201));
    let FRMPayload::Data(data) = decrypted.frm_payload() else {
        panic!("no payload");
    };
    assert_eq!(data, b"fragment 5");

    assert_eq!(
        build_multicast_frame(&group, 1, 0, b"x"),
        Err(MulticastFrameError::InvalidFPort(0))
    );
    assert!(build_multicast_frame(&group, 1, 201, &[0; 300]).is_err());
}

/// An ABP device (DevAddr 26010203, NwkSKey 01.., AppSKey 02..) registered in a fresh
/// database, and a network server over it.
fn abp_device() -> (tempfile::TempDir, Storage, NetworkServer, DevEui) {
    let directory = tempfile::tempdir().unwrap();
    let mut storage = Storage::open(&directory.path().join("agent.db")).unwrap();
    let dev_eui = DevEui::from(0x00aa_bbcc_0000_0001);
    let at = WallTime::from_unix_seconds(1_790_000_000);
    let device = Device::new(dev_eui, JoinEui::from(0), MacVersion::V1_0_3);
    let session = DeviceSession {
        dev_eui,
        dev_addr: DevAddr::from(0x2601_0203),
        nwk_s_key: Key128::from_bytes([1; 16]),
        s_nwk_s_int_key: None,
        nwk_s_enc_key: None,
        app_s_key: Key128::from_bytes([2; 16]),
        last_f_cnt_up: None,
    };
    storage
        .write(|tx| {
            tx.insert_device(&device, at)?;
            tx.store_session(&session, at, serde_json::json!({ "activation": "abp" }))
        })
        .unwrap();
    let server = NetworkServer::new(
        Region::new(RegionName::Eu868, RegionOptions::default()),
        NetworkServerSettings::default(),
        OwnershipIndex::load(&storage).unwrap(),
    );
    (directory, storage, server, dev_eui)
}

/// An uplink of the ABP device.
fn abp_uplink(confirmed: bool, f_cnt: u16, f_port: u8, payload: &[u8]) -> Vec<u8> {
    let mut creator = DataPayloadCreator::new();
    creator
        .set_uplink(true)
        .set_confirmed(confirmed)
        .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(
            0x2601_0203u32.to_le_bytes(),
        ))
        .set_fcnt(u32::from(f_cnt))
        .set_f_port(f_port);
    creator
        .build(
            payload,
            &[],
            &NewSKey::from([1; 16]),
            &AppSKey::from([2; 16]),
        )
        .unwrap()
        .to_vec()
}

fn radio_at(second: u64) -> UplinkRadio {
    UplinkRadio {
        gateway: GatewayEui::from(1),
        frequency_hz: 868_100_000,
        data_rate: 5,
        snr_db: 5.0,
        rssi_dbm: -80,
        tmst: 1_000_000,
        gps_time: None,
        received_at: MonotonicTime::from_secs(second),
        received_wall: WallTime::from_unix_seconds(1_790_000_000 + second as i64),
    }
}

#[test]
fn an_abp_device_is_served_from_its_provisioned_session() {
    let (_directory, mut storage, mut server, dev_eui) = abp_device();
    let frame = abp_uplink(true, 7, 3, b"abp");
    let outcome = server
        .handle_uplink(&mut storage, &frame, &radio_at(10))
        .unwrap();
    let UplinkOutcome::Data {
        dev_eui: from,
        f_cnt,
        payload,
        answer: Some(answer),
        ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        (from, f_cnt, payload.as_slice()),
        (dev_eui, 7, b"abp".as_slice())
    );
    let Ok(PhyPayload::Data(DataPayload::Encrypted(ack))) = parse(answer.phy_payload) else {
        panic!("no answer frame");
    };
    assert!(ack.fhdr().fctrl().ack());
    assert!(ack.validate_mic(&AES128([1; 16]), answer.f_cnt_down.unwrap()));
}

/// The layer above answering FPort 201 uplinks, as the campaign engine does.
#[derive(Default)]
struct Answering {
    seen: Vec<(DevEui, u8, Vec<u8>, u32)>,
}

impl ApplicationHandler for Answering {
    fn on_application_uplink(
        &mut self,
        _storage: &mut Storage,
        uplink: &ApplicationUplink<'_>,
    ) -> Option<QueuedDownlink> {
        self.seen.push((
            uplink.dev_eui,
            uplink.f_port,
            uplink.payload.to_vec(),
            uplink.f_cnt,
        ));
        (uplink.f_port == 201).then(|| QueuedDownlink {
            f_port: 201,
            payload: b"next request".to_vec(),
            confirmed: false,
        })
    }
}

/// The FPort and decrypted payload of the ABP device's answer.
fn answer_payload(outcome: UplinkOutcome) -> (u8, Vec<u8>) {
    let UplinkOutcome::Data {
        answer: Some(answer),
        ..
    } = outcome
    else {
        panic!("no answer: {outcome:?}");
    };
    let f_cnt_down = answer.f_cnt_down.unwrap();
    let Ok(PhyPayload::Data(DataPayload::Encrypted(frame))) = parse(answer.phy_payload) else {
        panic!("no answer frame");
    };
    let decrypted = frame
        .decrypt(Some(&AES128([1; 16])), Some(&AES128([2; 16])), f_cnt_down)
        .unwrap();
    let FRMPayload::Data(data) = decrypted.frm_payload() else {
        panic!("no payload");
    };
    (decrypted.f_port().unwrap(), data.to_vec())
}

#[test]
fn the_layer_above_answers_an_uplink_in_its_own_receive_window() {
    let (_directory, mut storage, mut server, dev_eui) = abp_device();
    let mut application = Answering::default();
    // Something queued earlier waits behind the answer to this uplink.
    server.enqueue_downlink(
        dev_eui,
        QueuedDownlink {
            f_port: 5,
            payload: b"older".to_vec(),
            confirmed: false,
        },
    );

    let frame = abp_uplink(false, 1, 201, b"status");
    let outcome = server
        .handle_uplink_with(&mut storage, &frame, &radio_at(10), &mut application)
        .unwrap();
    assert_eq!(
        application.seen,
        vec![(dev_eui, 201, b"status".to_vec(), 1)]
    );
    assert_eq!(answer_payload(outcome), (201, b"next request".to_vec()));

    // Another port: the handler sees it, answers nothing, and the older payload goes.
    let frame = abp_uplink(false, 2, 3, b"heartbeat");
    let outcome = server
        .handle_uplink_with(&mut storage, &frame, &radio_at(20), &mut application)
        .unwrap();
    assert_eq!(application.seen.len(), 2);
    assert_eq!(answer_payload(outcome), (5, b"older".to_vec()));

    // MAC-only uplinks (FPort absent) never reach the layer above.
    let mut creator = DataPayloadCreator::new();
    creator
        .set_uplink(true)
        .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(
            0x2601_0203u32.to_le_bytes(),
        ))
        .set_fcnt(3);
    let mac_only = creator
        .build(&[], &[], &NewSKey::from([1; 16]), &AppSKey::from([2; 16]))
        .unwrap()
        .to_vec();
    server
        .handle_uplink_with(&mut storage, &mac_only, &radio_at(30), &mut application)
        .unwrap();
    assert_eq!(application.seen.len(), 2);
}
