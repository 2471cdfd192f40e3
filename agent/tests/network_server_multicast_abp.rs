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
    NetworkServer, NetworkServerSettings, OwnershipIndex, UplinkOutcome, UplinkRadio,
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

#[test]
fn an_abp_device_is_served_from_its_provisioned_session() {
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
    let mut server = NetworkServer::new(
        Region::new(RegionName::Eu868, RegionOptions::default()),
        NetworkServerSettings::default(),
        OwnershipIndex::load(&storage).unwrap(),
    );

    let mut creator = DataPayloadCreator::new();
    creator
        .set_uplink(true)
        .set_confirmed(true)
        .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(
            0x2601_0203u32.to_le_bytes(),
        ))
        .set_fcnt(7)
        .set_f_port(3);
    let frame = creator
        .build(
            b"abp",
            &[],
            &NewSKey::from([1; 16]),
            &AppSKey::from([2; 16]),
        )
        .unwrap()
        .to_vec();
    let radio = UplinkRadio {
        gateway: GatewayEui::from(1),
        frequency_hz: 868_100_000,
        data_rate: 5,
        snr_db: 5.0,
        rssi_dbm: -80,
        tmst: 1_000_000,
        gps_time: None,
        received_at: MonotonicTime::from_secs(10),
        received_wall: at,
    };
    let outcome = server.handle_uplink(&mut storage, &frame, &radio).unwrap();
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
