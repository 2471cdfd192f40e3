//! The agent's core loop over real Semtech UDP on loopback, with a raw socket playing
//! the packet forwarder: a device joins by OTAA and sends confirmed uplinks; the TxPk
//! contract (tmst + 5/6 s for join accepts and + 1/2 s for data, RX1 DR offset, RX2
//! parameters, ipol, ncrc, 8-symbol preamble, tmst wrap-around at 2^32 µs); an RX1
//! refused by TX_ACK goes out in RX2; bad frames are refused and the loop keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;

use base64::Engine;
use fuota_agent::clock::{SystemClock, WallTime};
use fuota_agent::identifiers::{DevEui, JoinEui};
use fuota_agent::network_server::{NetworkServerSettings, QueuedDownlink};
use fuota_agent::service::{Service, ServiceCommand, ServiceNotification};
use fuota_agent::storage::{Device, EventKind, MacVersion, Storage};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppKey, AppSKey, NewSKey, AES128};
use lorawan::parser::{
    parse, DataHeader, DataPayload, DecryptedJoinAcceptPayload, DevNonce, PhyPayload,
};
use lorawan_fuota::crypto::Key128;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

const APP_KEY: [u8; 16] = [7; 16];
const DEV_EUI: u64 = 0x0004_a30b_001c_0530;
const JOIN_EUI: u64 = 0x0000_0000_0000_0001;
const GATEWAY: [u8; 8] = [0x00, 0x16, 0xc0, 0x01, 0xff, 0x10, 0xa2, 0x35];
const WAIT: Duration = Duration::from_secs(5);

struct Gateway {
    socket: UdpSocket,
    agent: SocketAddr,
    token: u16,
}

impl Gateway {
    async fn connect(agent: SocketAddr) -> Gateway {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut gateway = Gateway {
            socket,
            agent,
            token: 0,
        };
        gateway.send(0x02, b"").await; // PULL_DATA: open the downlink path
        let ack = gateway.receive().await;
        assert_eq!(ack[3], 0x04, "PULL_ACK");
        gateway
    }

    async fn send(&mut self, kind: u8, body: &[u8]) {
        self.token = self.token.wrapping_add(1);
        let mut datagram = vec![2, (self.token >> 8) as u8, self.token as u8, kind];
        datagram.extend_from_slice(&GATEWAY);
        datagram.extend_from_slice(body);
        self.socket.send_to(&datagram, self.agent).await.unwrap();
    }

    async fn receive(&self) -> Vec<u8> {
        let mut buffer = vec![0u8; 65_536];
        let (len, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buffer))
            .await
            .expect("a datagram from the agent")
            .unwrap();
        buffer.truncate(len);
        buffer
    }

    /// Sends an uplink in a PUSH_DATA and waits for its PUSH_ACK.
    async fn uplink(&mut self, phy: &[u8], tmst: u32, datr: &str, freq: f64) {
        let body = serde_json::json!({ "rxpk": [{
            "tmst": tmst, "chan": 0, "rfch": 0, "freq": freq, "stat": 1, "modu": "LORA",
            "datr": datr, "codr": "4/5", "rssi": -50, "lsnr": 8.5, "size": phy.len(),
            "data": base64::engine::general_purpose::STANDARD.encode(phy),
        }]});
        self.send(0x00, body.to_string().as_bytes()).await;
        let ack = self.receive().await;
        assert_eq!(ack[3], 0x01, "PUSH_ACK");
    }

    /// The next PULL_RESP: its token and TxPk.
    async fn pull_resp(&self) -> (u16, serde_json::Value) {
        let datagram = self.receive().await;
        assert_eq!(datagram[3], 0x03, "PULL_RESP");
        let token = u16::from_be_bytes([datagram[1], datagram[2]]);
        let json: serde_json::Value = serde_json::from_slice(&datagram[4..]).unwrap();
        (token, json["txpk"].clone())
    }

    async fn tx_ack(&mut self, token: u16, error: &str) {
        let mut datagram = vec![2, (token >> 8) as u8, token as u8, 0x05];
        datagram.extend_from_slice(&GATEWAY);
        datagram.extend_from_slice(
            serde_json::json!({ "txpk_ack": { "error": error } })
                .to_string()
                .as_bytes(),
        );
        self.socket.send_to(&datagram, self.agent).await.unwrap();
    }

    async fn nothing_for(&self, duration: Duration) {
        let mut buffer = vec![0u8; 65_536];
        if let Ok(Ok((len, _))) =
            tokio::time::timeout(duration, self.socket.recv_from(&mut buffer)).await
        {
            panic!("unexpected datagram: {:?}", &buffer[..len.min(64)]);
        }
    }
}

fn data_of(txpk: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(txpk["data"].as_str().unwrap())
        .unwrap()
}

fn assert_downlink_contract(txpk: &serde_json::Value) {
    assert_eq!(txpk["ipol"], true, "{txpk}");
    assert_eq!(txpk["ncrc"], true, "{txpk}");
    assert_eq!(txpk["prea"], 8, "{txpk}");
    assert_eq!(txpk["imme"], false, "{txpk}");
    assert_eq!(txpk["modu"], "LORA", "{txpk}");
    assert_eq!(txpk["codr"], "4/5", "{txpk}");
    assert_eq!(txpk["size"].as_u64().unwrap() as usize, data_of(txpk).len());
}

struct Running {
    gateway: Gateway,
    notifications: mpsc::Receiver<ServiceNotification>,
    handle: fuota_agent::service::ServiceHandle,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Storage>,
}

async fn start(rx1_dr_offset: u8) -> (tempfile::TempDir, Running) {
    let directory = tempfile::tempdir().unwrap();
    let mut storage = Storage::open(&directory.path().join("agent.db")).unwrap();
    let mut device = Device::new(
        DevEui::from(DEV_EUI),
        JoinEui::from(JOIN_EUI),
        MacVersion::V1_0_3,
    );
    device.app_key = Some(Key128::from_bytes(APP_KEY));
    storage
        .write(|tx| tx.insert_device(&device, WallTime::from_unix_seconds(1_790_000_000)))
        .unwrap();

    let clock = Arc::new(SystemClock::new());
    let transport = common::loopback_transport(clock.clone(), Vec::new(), None).await;
    let agent = transport.local_address();
    let settings = common::eu868_settings(NetworkServerSettings {
        rx1_dr_offset,
        ..NetworkServerSettings::default()
    });
    let (service, handle, notifications) =
        Service::new(settings, storage, transport, clock).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        service
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    let gateway = Gateway::connect(agent).await;
    (
        directory,
        Running {
            gateway,
            notifications,
            handle,
            stop,
            task,
        },
    )
}

fn join_request(dev_nonce: u16) -> Vec<u8> {
    common::join_request(JOIN_EUI, DEV_EUI, dev_nonce, APP_KEY)
}

struct Session {
    dev_addr: [u8; 4],
    nwk: [u8; 16],
    app: [u8; 16],
}

fn session_from(join_accept: &[u8], dev_nonce: u16) -> Session {
    let key = AppKey::from(APP_KEY);
    let accept = DecryptedJoinAcceptPayload::new(join_accept.to_vec(), &key).expect("join accept");
    let nonce = dev_nonce.to_le_bytes();
    let nonce = DevNonce::new(&nonce[..]).unwrap();
    let mut dev_addr = [0u8; 4];
    dev_addr.copy_from_slice(accept.dev_addr().as_ref());
    Session {
        dev_addr,
        nwk: accept.derive_newskey(&nonce, &key).inner().0,
        app: accept.derive_appskey(&nonce, &key).inner().0,
    }
}

fn uplink(session: &Session, f_cnt: u32, confirmed: bool, payload: &[u8]) -> Vec<u8> {
    let mut creator = DataPayloadCreator::new();
    creator
        .set_uplink(true)
        .set_confirmed(confirmed)
        .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(session.dev_addr))
        .set_fcnt(f_cnt)
        .set_f_port(10);
    creator
        .build(
            payload,
            &[],
            &NewSKey::from(session.nwk),
            &AppSKey::from(session.app),
        )
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn join_accept_txpk_contract_with_tmst_wrap_and_rx2_after_a_refused_rx1() {
    let (_directory, mut agent) = start(0).await;
    // An uplink ending 2 s before the 32-bit counter wraps.
    let tmst = u32::MAX - 2_000_000;
    agent
        .gateway
        .uplink(&join_request(0x0102), tmst, "SF7BW125", 868.1)
        .await;

    let (token, rx1) = agent.gateway.pull_resp().await;
    assert_downlink_contract(&rx1);
    assert_eq!(
        rx1["tmst"].as_u64().unwrap(),
        u64::from(tmst.wrapping_add(5_000_000))
    );
    assert_eq!(rx1["freq"], 868.1);
    assert_eq!(rx1["datr"], "SF7BW125");
    let session = session_from(&data_of(&rx1), 0x0102);

    // The gateway refuses RX1: the same join accept goes out in RX2.
    agent.gateway.tx_ack(token, "TOO_LATE").await;
    let (token, rx2) = agent.gateway.pull_resp().await;
    assert_downlink_contract(&rx2);
    assert_eq!(
        rx2["tmst"].as_u64().unwrap(),
        u64::from(tmst.wrapping_add(6_000_000))
    );
    assert_eq!(rx2["freq"], 869.525);
    assert_eq!(rx2["datr"], "SF12BW125");
    assert_eq!(data_of(&rx2), data_of(&rx1));
    agent.gateway.tx_ack(token, "NONE").await;

    assert_eq!(
        tokio::time::timeout(WAIT, agent.notifications.recv())
            .await
            .unwrap(),
        Some(ServiceNotification::Joined {
            dev_eui: DevEui::from(DEV_EUI)
        })
    );

    // A confirmed uplink: acknowledged in RX1 at + 1 s.
    let tmst = 1_000_000;
    agent
        .gateway
        .uplink(
            &uplink(&session, 0, true, b"status"),
            tmst,
            "SF7BW125",
            868.3,
        )
        .await;
    let (token, answer) = agent.gateway.pull_resp().await;
    assert_downlink_contract(&answer);
    assert_eq!(
        answer["tmst"].as_u64().unwrap(),
        u64::from(tmst + 1_000_000)
    );
    assert_eq!(answer["freq"], 868.3);
    let frame = data_of(&answer);
    let Ok(PhyPayload::Data(DataPayload::Encrypted(encrypted))) = parse(frame) else {
        panic!("not a data frame");
    };
    assert!(encrypted.validate_mic(&AES128(session.nwk), 0));
    assert!(encrypted.fhdr().fctrl().ack());
    agent.gateway.tx_ack(token, "NONE").await;

    let notification = tokio::time::timeout(WAIT, agent.notifications.recv())
        .await
        .unwrap();
    let Some(ServiceNotification::ApplicationUplink {
        f_port, payload, ..
    }) = notification
    else {
        panic!("{notification:?}");
    };
    assert_eq!((f_port, payload.as_slice()), (10, b"status".as_slice()));

    agent.stop.send(()).unwrap();
    let storage = agent.task.await.unwrap();
    let tx_ack_errors = storage
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .filter(|event| event.kind == EventKind::TxAckError)
        .count();
    assert_eq!(tx_ack_errors, 1, "the refused RX1 is recorded");
}

#[tokio::test]
async fn rx1_dr_offset_and_queued_downlinks_and_bad_frames() {
    let (_directory, mut agent) = start(2).await;
    agent
        .gateway
        .uplink(&join_request(9), 5_000_000, "SF7BW125", 868.5)
        .await;
    let (token, accept) = agent.gateway.pull_resp().await;
    // DR5 with RX1DROffset 2: DR3 (SF9).
    assert_eq!(accept["datr"], "SF9BW125");
    agent.gateway.tx_ack(token, "NONE").await;
    let session = session_from(&data_of(&accept), 9);

    // Garbage and a frame with a wrong MIC: no downlink, the loop keeps serving.
    agent
        .gateway
        .uplink(&[0x40, 1, 2, 3], 6_000_000, "SF7BW125", 868.5)
        .await;
    let mut tampered = uplink(&session, 1, true, b"x");
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    agent
        .gateway
        .uplink(&tampered, 7_000_000, "SF7BW125", 868.5)
        .await;
    agent.gateway.nothing_for(Duration::from_millis(300)).await;

    // A queued payload goes out in the answer to the next uplink.
    assert!(
        agent
            .handle
            .send(ServiceCommand::EnqueueDownlink {
                dev_eui: DevEui::from(DEV_EUI),
                downlink: QueuedDownlink {
                    f_port: 200,
                    payload: vec![0x00],
                    confirmed: false,
                },
            })
            .await
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    agent
        .gateway
        .uplink(
            &uplink(&session, 2, false, b"y"),
            8_000_000,
            "SF7BW125",
            868.5,
        )
        .await;
    let (token, answer) = agent.gateway.pull_resp().await;
    assert_eq!(answer["datr"], "SF9BW125");
    assert_eq!(answer["tmst"].as_u64().unwrap(), 9_000_000);
    let frame = data_of(&answer);
    let Ok(PhyPayload::Data(DataPayload::Encrypted(encrypted))) = parse(frame) else {
        panic!("not a data frame");
    };
    assert_eq!(encrypted.f_port(), Some(200));
    agent.gateway.tx_ack(token, "NONE").await;

    agent.stop.send(()).unwrap();
    let storage = agent.task.await.unwrap();
    let rejected = storage
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .filter(|event| event.kind == EventKind::UplinkRejected)
        .count();
    assert_eq!(rejected, 1, "the wrong MIC is recorded against the device");
}

#[tokio::test]
async fn a_restarted_agent_keeps_counting_the_airtime_it_used() {
    let (directory, mut agent) = start(0).await;
    agent
        .gateway
        .uplink(&join_request(77), 10_000_000, "SF7BW125", 868.1)
        .await;
    let (token, accept) = agent.gateway.pull_resp().await;
    agent.gateway.tx_ack(token, "NONE").await;
    let session = session_from(&data_of(&accept), 77);
    agent
        .gateway
        .uplink(
            &uplink(&session, 0, true, b"c"),
            20_000_000,
            "SF7BW125",
            868.1,
        )
        .await;
    let (token, _) = agent.gateway.pull_resp().await;
    agent.gateway.tx_ack(token, "NONE").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.stop.send(()).unwrap();
    let storage = agent.task.await.unwrap();
    let sent: u64 = storage
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .filter(|event| event.kind == EventKind::Downlink)
        .map(|event| event.payload["airtime_us"].as_u64().unwrap())
        .sum();
    assert!(
        sent > 0,
        "the two downlinks are recorded with their airtime"
    );
    drop(storage);

    // A new process on the same database: the 868.1 MHz band (1 %) starts with that
    // airtime already used, not with a fresh budget.
    let storage = Storage::open(&directory.path().join("agent.db")).unwrap();
    let clock = Arc::new(SystemClock::new());
    let transport = common::loopback_transport(clock.clone(), Vec::new(), None).await;
    let settings = common::eu868_settings(NetworkServerSettings::default());
    let (mut service, _handle, _notifications) =
        Service::new(settings, storage, transport, clock).unwrap();
    let gateway = fuota_agent::identifiers::GatewayEui::from_bytes(GATEWAY);
    let used: u64 = service
        .duty_cycle_usage(gateway)
        .iter()
        .filter(|usage| usage.band.contains(868_100_000, 125_000))
        .map(|usage| usage.used_us)
        .sum();
    assert_eq!(used, sent);
}
