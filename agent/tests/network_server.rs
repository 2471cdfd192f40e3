//! The edge network server against a device built with the `lorawan` crate (the frame
//! library lorawan-device uses): OTAA joins by MAC version, data uplinks with their MIC,
//! FCnt rollover and replays, de-duplication, MAC answers, confirmed uplinks and queued
//! downlinks, and garbage.

use fuota_agent::clock::{GpsTime, WallTime};
use fuota_agent::identifiers::{DevAddr, DevEui, GatewayEui, JoinEui};
use fuota_agent::lorawan::region::{Region, RegionName, RegionOptions};
use fuota_agent::lorawan::scheduler::ClassAKind;
use fuota_agent::lorawan::time::MonotonicTime;
use fuota_agent::network_server::{
    NetworkServer, NetworkServerSettings, OwnershipIndex, QueuedDownlink, Rejection, UplinkOutcome,
    UplinkRadio,
};
use fuota_agent::storage::{Device, EventKind, MacVersion, Storage};
use lorawan::creator::{DataPayloadCreator, JoinRequestCreator};
use lorawan::keys::{AppKey, AppSKey, NewSKey, AES128};
use lorawan::maccommands::SerializableMacCommand;
use lorawan::parser::{
    parse, DataHeader, DataPayload, DecryptedJoinAcceptPayload, DevNonce, FRMPayload, PhyPayload,
};
use lorawan_fuota::crypto::Key128;
use proptest::prelude::*;

const APP_KEY: [u8; 16] = [
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
];
const DEV_EUI: u64 = 0x70b3_d57e_d000_1234;
const JOIN_EUI: u64 = 0x70b3_d57e_d000_0001;
const GATEWAY: u64 = 0x0016_c001_ff10_a235;

struct Harness {
    _directory: tempfile::TempDir,
    storage: Storage,
    server: NetworkServer,
    now_us: u64,
}

impl Harness {
    fn new(mac_version: MacVersion) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let mut storage = Storage::open(&directory.path().join("agent.db")).unwrap();
        let mut device = Device::new(DevEui::from(DEV_EUI), JoinEui::from(JOIN_EUI), mac_version);
        device.app_key = Some(Key128::from_bytes(APP_KEY));
        storage
            .write(|tx| tx.insert_device(&device, WallTime::from_unix_seconds(1_790_000_000)))
            .unwrap();
        let ownership = OwnershipIndex::load(&storage).unwrap();
        let settings = NetworkServerSettings {
            net_id: 0x00_0013,
            dev_addr_prefix: 0x2600_0000,
            dev_addr_prefix_len: 7,
            ..NetworkServerSettings::default()
        };
        let server = NetworkServer::new(
            Region::new(RegionName::Eu868, RegionOptions::default()),
            settings,
            ownership,
        );
        Harness {
            _directory: directory,
            storage,
            server,
            now_us: 10_000_000,
        }
    }

    /// Radio metadata of an uplink heard now on 868.3 MHz DR5; each call is 5 s later.
    fn radio(&mut self) -> UplinkRadio {
        self.now_us += 5_000_000;
        UplinkRadio {
            gateway: GatewayEui::from(GATEWAY),
            frequency_hz: 868_300_000,
            data_rate: 5,
            snr_db: 7.0,
            rssi_dbm: -60,
            tmst: 4_000_000_000,
            gps_time: None,
            received_at: MonotonicTime::from_micros(self.now_us),
            received_wall: WallTime::from_unix_seconds(
                1_790_000_000 + (self.now_us / 1_000_000) as i64,
            ),
        }
    }

    fn uplink(&mut self, phy: &[u8]) -> UplinkOutcome {
        let radio = self.radio();
        self.server
            .handle_uplink(&mut self.storage, phy, &radio)
            .unwrap()
    }

    fn events(&self, kind: EventKind) -> usize {
        self.storage
            .events_after(0, 10_000)
            .unwrap()
            .iter()
            .filter(|event| event.kind == kind)
            .count()
    }
}

fn join_request(dev_nonce: u16, key: [u8; 16]) -> Vec<u8> {
    let mut creator = JoinRequestCreator::new();
    let mut join_eui = JOIN_EUI.to_be_bytes();
    join_eui.reverse();
    let mut dev_eui = DEV_EUI.to_be_bytes();
    dev_eui.reverse();
    creator
        .set_app_eui(&join_eui)
        .set_dev_eui(&dev_eui)
        .set_dev_nonce(&dev_nonce.to_le_bytes());
    creator.build(&AppKey::from(key)).to_vec()
}

/// The device's side of a join: the accept decrypted and checked with the AppKey, the
/// session keys derived as a device derives them.
struct DeviceSession {
    dev_addr_wire: [u8; 4],
    nwk_s_key: [u8; 16],
    app_s_key: [u8; 16],
}

fn accept_join(join_accept: &[u8], dev_nonce: u16) -> (DeviceSession, u8, u8) {
    let app_key = AppKey::from(APP_KEY);
    let accept = DecryptedJoinAcceptPayload::new(join_accept.to_vec(), &app_key)
        .expect("the join accept decrypts and its MIC verifies with the AppKey");
    let nonce = dev_nonce.to_le_bytes();
    let nonce = DevNonce::new(&nonce[..]).unwrap();
    let nwk = accept.derive_newskey(&nonce, &app_key);
    let app = accept.derive_appskey(&nonce, &app_key);
    let mut dev_addr_wire = [0u8; 4];
    dev_addr_wire.copy_from_slice(accept.dev_addr().as_ref());
    let dl_settings = accept.dl_settings().raw_value();
    let rx_delay = accept.rx_delay();
    (
        DeviceSession {
            dev_addr_wire,
            nwk_s_key: nwk.inner().0,
            app_s_key: app.inner().0,
        },
        dl_settings,
        rx_delay,
    )
}

fn data_uplink(
    session: &DeviceSession,
    f_cnt: u32,
    confirmed: bool,
    f_port: Option<u8>,
    payload: &[u8],
    mac: &[&dyn SerializableMacCommand],
) -> Vec<u8> {
    let mut creator = DataPayloadCreator::new();
    creator
        .set_uplink(true)
        .set_confirmed(confirmed)
        .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(
            session.dev_addr_wire,
        ))
        .set_fcnt(f_cnt);
    if let Some(f_port) = f_port {
        creator.set_f_port(f_port);
    }
    creator
        .build(
            payload,
            mac,
            &NewSKey::from(session.nwk_s_key),
            &AppSKey::from(session.app_s_key),
        )
        .unwrap()
        .to_vec()
}

/// A downlink as the device reads it: FCtrl, FCnt, FOpts, FPort, decrypted payload.
struct Received {
    ack: bool,
    f_cnt: u16,
    fopts: Vec<u8>,
    f_port: Option<u8>,
    payload: Vec<u8>,
}

fn receive(session: &DeviceSession, phy: &[u8], full_f_cnt: u32) -> Received {
    let Ok(PhyPayload::Data(DataPayload::Encrypted(encrypted))) = parse(phy.to_vec()) else {
        panic!("not a data downlink");
    };
    assert!(
        encrypted.validate_mic(&AES128(session.nwk_s_key), full_f_cnt),
        "downlink MIC"
    );
    let fhdr = encrypted.fhdr();
    let ack = fhdr.fctrl().ack();
    let f_cnt = fhdr.fcnt();
    let fopts = fhdr.data().to_vec();
    let decrypted = encrypted
        .decrypt(
            Some(&AES128(session.nwk_s_key)),
            Some(&AES128(session.app_s_key)),
            full_f_cnt,
        )
        .unwrap();
    let f_port = decrypted.f_port();
    let payload = match decrypted.frm_payload() {
        FRMPayload::Data(data) => data.to_vec(),
        _ => Vec::new(),
    };
    Received {
        ack,
        f_cnt,
        fopts,
        f_port,
        payload,
    }
}

fn join(harness: &mut Harness, dev_nonce: u16) -> DeviceSession {
    let outcome = harness.uplink(&join_request(dev_nonce, APP_KEY));
    let UplinkOutcome::Joined { answer, .. } = outcome else {
        panic!("join refused: {outcome:?}");
    };
    accept_join(&answer.phy_payload, dev_nonce).0
}

#[test]
fn otaa_join_gives_the_device_a_session_it_can_derive() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let outcome = h.uplink(&join_request(0x1234, APP_KEY));
    let UplinkOutcome::Joined { dev_eui, answer } = outcome else {
        panic!("join refused: {outcome:?}");
    };
    assert_eq!(dev_eui, DevEui::from(DEV_EUI));
    assert_eq!(answer.kind, ClassAKind::JoinAccept);
    assert_eq!(answer.uplink_tmst, 4_000_000_000);
    assert_eq!(answer.rx1.frequency_hz, 868_300_000);
    assert_eq!(answer.rx1.data_rate, 5);
    assert_eq!(answer.rx2.frequency_hz, 869_525_000);
    assert_eq!(answer.rx2.data_rate, 0);
    assert_eq!(answer.phy_payload.len(), 17);

    let (device, dl_settings, rx_delay) = accept_join(&answer.phy_payload, 0x1234);
    assert_eq!(dl_settings, 0x00);
    assert_eq!(rx_delay, 1);
    let stored = h.storage.session(dev_eui).unwrap().unwrap();
    let wire_addr = stored.dev_addr.to_u32().to_le_bytes();
    assert_eq!(device.dev_addr_wire, wire_addr);
    assert_eq!(
        stored.dev_addr.to_u32() >> 25,
        0x2600_0000 >> 25,
        "DevAddr in the prefix"
    );
    assert_eq!(stored.nwk_s_key.as_bytes(), &device.nwk_s_key);
    assert_eq!(stored.app_s_key.as_bytes(), &device.app_s_key);
    assert_eq!(h.events(EventKind::SessionCreated), 1);
    // Data frames from the new DevAddr are now ours; other DevAddrs are not.
    let frame = data_uplink(&device, 0, false, Some(1), b"x", &[]);
    assert!(h.server.ownership().owns(&frame));
    let mut foreign = frame.clone();
    foreign[4] ^= 0x80;
    assert!(!h.server.ownership().owns(&foreign));
}

#[test]
fn join_accept_carries_the_configured_rx_settings_and_cf_list() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let settings = NetworkServerSettings {
        rx1_dr_offset: 2,
        rx1_delay_s: 3,
        cf_list_frequencies_hz: vec![867_100_000, 867_300_000],
        ..h.server.settings().clone()
    };
    h.server = NetworkServer::new(
        Region::new(RegionName::Eu868, RegionOptions::default()),
        settings,
        h.server.ownership().clone(),
    );
    let UplinkOutcome::Joined { answer, .. } = h.uplink(&join_request(7, APP_KEY)) else {
        panic!("join refused");
    };
    assert_eq!(answer.phy_payload.len(), 33);
    assert_eq!(answer.rx1.data_rate, 3, "DR5 with RX1DROffset 2");
    let app_key = AppKey::from(APP_KEY);
    let accept = DecryptedJoinAcceptPayload::new(answer.phy_payload.clone(), &app_key).unwrap();
    assert_eq!(accept.dl_settings().raw_value(), 0x20);
    assert_eq!(accept.rx_delay(), 3);
    let Some(lorawan::parser::CfList::DynamicChannel(channels)) = accept.c_f_list() else {
        panic!("no CFList");
    };
    assert_eq!(channels[0].value(), 867_100_000);
    assert_eq!(channels[1].value(), 867_300_000);
}

#[test]
fn dev_nonce_rules_follow_the_mac_version() {
    // 1.0.3: random nonces, none accepted twice.
    let mut h = Harness::new(MacVersion::V1_0_3);
    join(&mut h, 500);
    join(&mut h, 20);
    let outcome = h.uplink(&join_request(500, APP_KEY));
    assert_eq!(
        outcome,
        UplinkOutcome::Rejected {
            dev_eui: Some(DevEui::from(DEV_EUI)),
            reason: Rejection::DevNonceReplayed { dev_nonce: 500 }
        }
    );
    assert_eq!(h.events(EventKind::UplinkRejected), 1);

    // 1.0.4: a counter; anything not above the highest is refused.
    let mut h = Harness::new(MacVersion::V1_0_4);
    join(&mut h, 10);
    let outcome = h.uplink(&join_request(9, APP_KEY));
    assert!(matches!(
        outcome,
        UplinkOutcome::Rejected {
            reason: Rejection::DevNonceNotIncreasing {
                dev_nonce: 9,
                highest: 10
            },
            ..
        }
    ));
    let first = h.storage.session(DevEui::from(DEV_EUI)).unwrap().unwrap();
    join(&mut h, 11);
    let second = h.storage.session(DevEui::from(DEV_EUI)).unwrap().unwrap();
    assert_ne!(
        first.nwk_s_key, second.nwk_s_key,
        "a new JoinNonce, new keys"
    );
}

#[test]
fn a_join_request_with_a_wrong_mic_is_refused_and_unknown_devices_are_not_ours() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let outcome = h.uplink(&join_request(1, [0x55; 16]));
    assert!(matches!(
        outcome,
        UplinkOutcome::Rejected {
            reason: Rejection::BadMic,
            ..
        }
    ));
    let mut stranger = join_request(1, APP_KEY);
    stranger[12] ^= 0x01; // another DevEUI
    assert_eq!(h.uplink(&stranger), UplinkOutcome::NotOurs);
    assert!(h.storage.session(DevEui::from(DEV_EUI)).unwrap().is_none());
}

#[test]
fn data_uplinks_are_checked_decrypted_and_acknowledged_when_confirmed() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let device = join(&mut h, 1);

    let outcome = h.uplink(&data_uplink(&device, 0, false, Some(10), b"hello", &[]));
    let UplinkOutcome::Data {
        f_cnt,
        confirmed,
        f_port,
        payload,
        answer,
        ..
    } = outcome
    else {
        panic!("refused: {outcome:?}");
    };
    assert_eq!((f_cnt, confirmed, f_port), (0, false, Some(10)));
    assert_eq!(payload, b"hello");
    assert!(answer.is_none(), "nothing to say to an unconfirmed uplink");

    let outcome = h.uplink(&data_uplink(&device, 1, true, Some(10), b"again", &[]));
    let UplinkOutcome::Data {
        answer: Some(answer),
        ..
    } = outcome
    else {
        panic!("no answer to a confirmed uplink: {outcome:?}");
    };
    let received = receive(&device, &answer.phy_payload, answer.f_cnt_down.unwrap());
    assert!(received.ack);
    assert_eq!(answer.kind, ClassAKind::Data { rx1_delay_s: 1 });
    assert_eq!(h.events(EventKind::Uplink), 2);
    // The uplink events carry the decrypted application payload (upstream sync
    // publishes them to the fleet backend).
    let uplinks: Vec<serde_json::Value> = h
        .storage
        .events_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|event| event.kind == EventKind::Uplink)
        .map(|event| event.payload)
        .collect();
    assert_eq!(uplinks[0]["data"], "aGVsbG8=");
    assert_eq!(uplinks[1]["data"], "YWdhaW4=");
    assert_eq!(uplinks[0]["f_port"], 10);
}

#[test]
fn replays_bad_mics_and_duplicates_are_refused() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let device = join(&mut h, 1);
    let frame = data_uplink(&device, 5, false, Some(2), b"a", &[]);
    assert!(matches!(
        h.uplink(&frame),
        UplinkOutcome::Data { f_cnt: 5, .. }
    ));

    // The same bytes within the de-duplication window: a copy from another antenna.
    let radio = UplinkRadio {
        received_at: MonotonicTime::from_micros(h.now_us + 100_000),
        ..h.radio()
    };
    assert_eq!(
        h.server
            .handle_uplink(&mut h.storage, &frame, &radio)
            .unwrap(),
        UplinkOutcome::Duplicate
    );
    // Later: a replay.
    h.now_us += 10_000_000;
    assert!(matches!(
        h.uplink(&frame),
        UplinkOutcome::Rejected {
            reason: Rejection::FCntReplayed { f_cnt: 5, last: 5 },
            ..
        }
    ));
    let older = data_uplink(&device, 3, false, Some(2), b"b", &[]);
    assert!(matches!(
        h.uplink(&older),
        UplinkOutcome::Rejected {
            reason: Rejection::FCntReplayed { f_cnt: 3, last: 5 },
            ..
        }
    ));
    let mut tampered = data_uplink(&device, 6, false, Some(2), b"c", &[]);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(matches!(
        h.uplink(&tampered),
        UplinkOutcome::Rejected {
            reason: Rejection::BadMic,
            ..
        }
    ));
    assert_eq!(h.events(EventKind::UplinkRejected), 3);
    assert_eq!(h.server.counters().duplicates, 1);
}

#[test]
fn the_32_bit_frame_counter_rolls_over_the_16_bits_on_the_air() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let device = join(&mut h, 1);
    assert!(matches!(
        h.uplink(&data_uplink(&device, 0xfffe, false, Some(2), b"a", &[])),
        UplinkOutcome::Data { f_cnt: 0xfffe, .. }
    ));
    assert!(matches!(
        h.uplink(&data_uplink(&device, 0x1_0001, false, Some(2), b"b", &[])),
        UplinkOutcome::Data {
            f_cnt: 0x1_0001,
            ..
        }
    ));
    let stored = h.storage.session(DevEui::from(DEV_EUI)).unwrap().unwrap();
    assert_eq!(stored.last_f_cnt_up, Some(0x1_0001));
}

#[test]
fn link_check_and_device_time_are_answered() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let device = join(&mut h, 1);
    let link_check = lorawan::maccommandcreator::LinkCheckReqCreator::new();
    let device_time = lorawan::maccommandcreator::DeviceTimeReqCreator::new();
    let frame = data_uplink(
        &device,
        0,
        false,
        Some(3),
        b"t",
        &[&link_check, &device_time],
    );
    let gps = GpsTime {
        seconds: 1_400_000_000,
        subsec_nanos: 500_000_000,
    };
    let radio = UplinkRadio {
        gps_time: Some(gps),
        snr_db: 5.0,
        ..h.radio()
    };
    let UplinkOutcome::Data {
        answer: Some(answer),
        ..
    } = h
        .server
        .handle_uplink(&mut h.storage, &frame, &radio)
        .unwrap()
    else {
        panic!("no answer to the MAC requests");
    };
    let received = receive(&device, &answer.phy_payload, answer.f_cnt_down.unwrap());
    // LinkCheckAns: margin 5 dB - (-7.5 dB at SF7) = 12, one gateway; DeviceTimeAns.
    let mut expected = vec![0x02, 12, 1, 0x0d];
    expected.extend_from_slice(&gps.device_time_ans_payload());
    assert_eq!(received.fopts, expected);
    assert!(!received.ack);
}

#[test]
fn queued_downlinks_go_out_in_the_next_answer_with_increasing_fcnt_down() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let device = join(&mut h, 1);
    let dev_eui = DevEui::from(DEV_EUI);
    for (index, payload) in [b"first".as_slice(), b"second".as_slice()]
        .iter()
        .enumerate()
    {
        h.server.enqueue_downlink(
            dev_eui,
            QueuedDownlink {
                f_port: 201,
                payload: payload.to_vec(),
                confirmed: false,
            },
        );
        let frame = data_uplink(&device, index as u32, false, Some(2), b"u", &[]);
        let UplinkOutcome::Data {
            answer: Some(answer),
            ..
        } = h.uplink(&frame)
        else {
            panic!("the queued payload was not sent");
        };
        let f_cnt_down = answer.f_cnt_down.unwrap();
        assert_eq!(f_cnt_down, index as u32);
        let received = receive(&device, &answer.phy_payload, f_cnt_down);
        assert_eq!(received.f_port, Some(201));
        assert_eq!(received.payload, *payload);
        assert_eq!(u32::from(received.f_cnt), f_cnt_down);
    }
    assert_eq!(h.server.queued_downlinks(dev_eui), 0);
}

#[test]
fn dev_addr_of_a_device_is_reported_in_its_session() {
    let mut h = Harness::new(MacVersion::V1_0_3);
    let device = join(&mut h, 1);
    let stored = h.storage.session(DevEui::from(DEV_EUI)).unwrap().unwrap();
    let mut wire = device.dev_addr_wire;
    wire.reverse();
    assert_eq!(stored.dev_addr, DevAddr::from_bytes(wire));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn garbage_never_panics_and_is_never_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut h = Harness::new(MacVersion::V1_0_3);
        let _device = join(&mut h, 1);
        let outcome = h.uplink(&bytes);
        let accepted = matches!(outcome, UplinkOutcome::Data { .. } | UplinkOutcome::Joined { .. });
        prop_assert!(!accepted, "{:?}", outcome);
    }
}
