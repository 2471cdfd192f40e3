//! `fuota-agent run` end to end: the daemon opens its database, binds the
//! packet-forwarder socket on loopback, acknowledges a PUSH_DATA, lets a registered
//! device join (the session and its event are stored), and on SIGTERM records its stop
//! and exits cleanly.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fuota_agent::clock::WallTime;
use fuota_agent::identifiers::{DevEui, JoinEui};
use fuota_agent::storage::{Device, EventKind, MacVersion, Storage};
use lorawan_fuota::crypto::Key128;

const APP_KEY: [u8; 16] = [0x11; 16];

/// A JoinRequest of DevEUI 0102030405060708, JoinEUI 0000000000000001, DevNonce 1.
fn join_request() -> Vec<u8> {
    let mut creator = lorawan::creator::JoinRequestCreator::new();
    creator
        .set_app_eui(&[1, 0, 0, 0, 0, 0, 0, 0])
        .set_dev_eui(&[8, 7, 6, 5, 4, 3, 2, 1])
        .set_dev_nonce(&[1, 0]);
    creator
        .build(&lorawan::keys::AppKey::from(APP_KEY))
        .to_vec()
}

const WAIT: Duration = Duration::from_secs(10);

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn run_lets_a_device_join_and_stops_cleanly_on_sigterm() {
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("agent.db");
    let port = free_port();
    let config = directory.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndatabase = \"{}\"\n[packet_forwarder]\nbind = \"127.0.0.1:{port}\"\n\
             gateway_euis = [\"0016c001ff10a235\"]\n[logging]\nlevel = \"debug\"\n\
             [firmware]\ncache_directory = \"{dir}/images\"\n[api]\nsocket = \"{dir}/api.sock\"\ngroup = \"\"\n",
            database.display(),
            dir = directory.path().display()
        ),
    )
    .unwrap();
    {
        let mut storage = Storage::open(&database).unwrap();
        let mut device = Device::new(
            "0102030405060708".parse::<DevEui>().unwrap(),
            "0000000000000001".parse::<JoinEui>().unwrap(),
            MacVersion::V1_0_3,
        );
        device.app_key = Some(Key128::from_bytes(APP_KEY));
        storage
            .write(|tx| tx.insert_device(&device, WallTime::from_unix_seconds(1_790_000_000)))
            .unwrap();
    }
    let mut agent = Command::new(env!("CARGO_BIN_EXE_fuota-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut push_data = vec![
        2, 0x12, 0x34, 0x00, 0x00, 0x16, 0xc0, 0x01, 0xff, 0x10, 0xa2, 0x35,
    ];
    let phy_payload = join_request();
    let body = format!(
        r#"{{"rxpk":[{{"tmst":1000,"chan":0,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-40,"lsnr":9.0,"size":{},"data":"{}"}}]}}"#,
        phy_payload.len(),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &phy_payload)
    );
    push_data.extend_from_slice(body.as_bytes());
    // Retry until the agent is up and acknowledges.
    let started = Instant::now();
    let mut buffer = [0u8; 16];
    loop {
        assert!(started.elapsed() < WAIT, "no PUSH_ACK from the agent");
        if let Some(status) = agent.try_wait().unwrap() {
            panic!("the agent exited early: {status}");
        }
        socket.send_to(&push_data, ("127.0.0.1", port)).unwrap();
        if let Ok((length, _)) = socket.recv_from(&mut buffer) {
            assert_eq!(&buffer[..length], &[2, 0x12, 0x34, 0x01]);
            break;
        }
    }

    let terminated = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            agent.kill().unwrap();
            panic!("the agent did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit: {status}");

    let storage = Storage::open(&database).unwrap();
    let kinds: Vec<EventKind> = storage
        .events_after(0, 100)
        .unwrap()
        .iter()
        .map(|event| event.kind)
        .collect();
    assert_eq!(kinds.first(), Some(&EventKind::DeviceAdded));
    assert_eq!(kinds.get(1), Some(&EventKind::AgentStarted));
    assert!(kinds.contains(&EventKind::SessionCreated), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&EventKind::AgentStopped));
    let session = storage
        .session("0102030405060708".parse::<DevEui>().unwrap())
        .unwrap();
    assert!(
        session.is_some(),
        "the device joined through the running agent"
    );
}
