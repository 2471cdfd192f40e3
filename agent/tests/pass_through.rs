//! Pass-through to upstream network servers over real UDP on loopback: raw sockets play
//! the gateway and two upstream servers; the agent (transport and core loop) runs between
//! them. Foreign uplinks reach the upstreams byte for byte (and only those their filters
//! accept), the agent's own do not; upstream downlinks reach the gateway and each TX_ACK
//! goes back to the upstream that sent the downlink with its own token, even when both
//! upstreams use the same token; a downlink the concentrator cannot take is refused with
//! a TX_ACK error; with the upstreams gone the agent keeps serving.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use fuota_agent::clock::SystemClock;
use fuota_agent::network_server::{NetworkServerSettings, OwnershipIndex};
use fuota_agent::packet_forwarder::passthrough::DevAddrPrefix;
use fuota_agent::packet_forwarder::UpstreamConfig;
use fuota_agent::service::Service;
use fuota_agent::storage::{MacVersion, Storage};
use tokio::net::UdpSocket;

const GATEWAY: [u8; 8] = [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0x00, 0x00, 0x01];
const WAIT: Duration = Duration::from_secs(3);
const APP_KEY: [u8; 16] = [9; 16];

async fn receive_kind(socket: &UdpSocket, kind: u8) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buffer = vec![0u8; 65_536];
    loop {
        match tokio::time::timeout(WAIT, socket.recv_from(&mut buffer)).await {
            Ok(Ok((len, from))) if len >= 4 && buffer[3] == kind => {
                return Some((buffer[..len].to_vec(), from));
            }
            Ok(Ok(_)) => continue,
            _ => return None,
        }
    }
}

async fn nothing_of_kind(socket: &UdpSocket, kind: u8, during: Duration) {
    let mut buffer = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + during;
    while let Ok(Ok((len, _))) =
        tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await
    {
        assert!(
            len < 4 || buffer[3] != kind,
            "unexpected datagram of type {kind}"
        );
    }
}

fn push_data(token: u16, rxpks: &[String]) -> Vec<u8> {
    let mut datagram = vec![2, (token >> 8) as u8, token as u8, 0x00];
    datagram.extend_from_slice(&GATEWAY);
    datagram.extend_from_slice(format!(r#"{{"rxpk":[{}]}}"#, rxpks.join(",")).as_bytes());
    datagram
}

/// An rxpk with unusual spacing and field order, to show it is copied verbatim.
fn rxpk(phy: &[u8], tmst: u32) -> String {
    format!(
        r#"{{ "tmst":{tmst},"freq":868.1, "chan":0,"rfch":0,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-60,"lsnr":7.25,"size":{},"data":"{}" }}"#,
        phy.len(),
        base64::engine::general_purpose::STANDARD.encode(phy)
    )
}

/// A foreign unconfirmed data frame from `dev_addr` (MIC not checked by anyone here).
fn data_frame(dev_addr: u32) -> Vec<u8> {
    let mut frame = vec![0x40];
    frame.extend_from_slice(&dev_addr.to_le_bytes());
    frame.extend_from_slice(&[0x00, 0x01, 0x00, 0x01, 0xaa, 0xbb, 1, 2, 3, 4]);
    frame
}

fn our_join_request() -> Vec<u8> {
    common::join_request(1, 0x0102_0304_0506_0708, 5, APP_KEY)
}

struct Setup {
    _directory: tempfile::TempDir,
    gateway: UdpSocket,
    agent: SocketAddr,
    upstream_a: UdpSocket,
    upstream_b: UdpSocket,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn setup() -> Setup {
    let directory = tempfile::tempdir().unwrap();
    let mut storage = Storage::open(&directory.path().join("agent.db")).unwrap();
    common::register_otaa_device(
        &mut storage,
        0x0102_0304_0506_0708,
        1,
        APP_KEY,
        MacVersion::V1_0_3,
    );
    let upstream_a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstreams = vec![
        UpstreamConfig {
            name: "a".into(),
            server: upstream_a.local_addr().unwrap().to_string(),
            dev_addr_prefixes: Vec::new(),
            join_eui_prefixes: Vec::new(),
            keepalive: Duration::from_secs(10),
        },
        UpstreamConfig {
            name: "b".into(),
            server: upstream_b.local_addr().unwrap().to_string(),
            dev_addr_prefixes: vec![DevAddrPrefix {
                address: 0x2600_0000,
                length: 7,
            }],
            join_eui_prefixes: Vec::new(),
            keepalive: Duration::from_secs(10),
        },
    ];
    let ownership = OwnershipIndex::load(&storage).unwrap();
    let clock = Arc::new(SystemClock::new());
    let transport =
        common::loopback_transport(clock.clone(), upstreams, Some(Arc::new(ownership.clone())))
            .await;
    let agent = transport.local_address();
    let settings = common::eu868_settings(NetworkServerSettings::default());
    let (service, _handle, _notifications) =
        Service::with_ownership(settings, storage, ownership, transport, clock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));
    let gateway = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut pull_data = vec![2, 0, 1, 0x02];
    pull_data.extend_from_slice(&GATEWAY);
    gateway.send_to(&pull_data, agent).await.unwrap();
    receive_kind(&gateway, 0x04).await.expect("PULL_ACK");
    Setup {
        _directory: directory,
        gateway,
        agent,
        upstream_a,
        upstream_b,
        stop,
    }
}

#[tokio::test]
async fn foreign_uplinks_reach_upstreams_byte_identical_and_ours_do_not() {
    let s = setup().await;
    // Each upstream sees the gateway through its own link, with the gateway's EUI.
    let (keepalive, _) = receive_kind(&s.upstream_a, 0x02)
        .await
        .expect("PULL_DATA keepalive");
    assert_eq!(&keepalive[4..12], &GATEWAY);
    receive_kind(&s.upstream_b, 0x02)
        .await
        .expect("PULL_DATA keepalive to b");

    // A frame in b's prefix: both get the gateway's datagram unchanged.
    let datagram = push_data(0x1001, &[rxpk(&data_frame(0x2601_1234), 100)]);
    s.gateway.send_to(&datagram, s.agent).await.unwrap();
    receive_kind(&s.gateway, 0x01).await.expect("PUSH_ACK");
    assert_eq!(receive_kind(&s.upstream_a, 0x00).await.unwrap().0, datagram);
    assert_eq!(receive_kind(&s.upstream_b, 0x00).await.unwrap().0, datagram);

    // Outside b's prefix: only a.
    let datagram = push_data(0x1002, &[rxpk(&data_frame(0x0100_0000), 200)]);
    s.gateway.send_to(&datagram, s.agent).await.unwrap();
    assert_eq!(receive_kind(&s.upstream_a, 0x00).await.unwrap().0, datagram);
    nothing_of_kind(&s.upstream_b, 0x00, Duration::from_millis(300)).await;

    // Ours alongside a foreign frame: a gets only the foreign rxpk, its text verbatim.
    let foreign = rxpk(&data_frame(0x0100_0001), 300);
    let datagram = push_data(0x1003, &[rxpk(&our_join_request(), 300), foreign.clone()]);
    s.gateway.send_to(&datagram, s.agent).await.unwrap();
    let (forwarded, _) = receive_kind(&s.upstream_a, 0x00).await.unwrap();
    assert_eq!(&forwarded[..12], &datagram[..12], "the gateway's header");
    assert_eq!(
        std::str::from_utf8(&forwarded[12..]).unwrap(),
        format!(r#"{{"rxpk":[{foreign}]}}"#)
    );

    // Ours alone: nothing goes upstream.
    let datagram = push_data(0x1004, &[rxpk(&our_join_request(), 400)]);
    s.gateway.send_to(&datagram, s.agent).await.unwrap();
    receive_kind(&s.gateway, 0x01).await.expect("PUSH_ACK");
    nothing_of_kind(&s.upstream_a, 0x00, Duration::from_millis(300)).await;
    let _ = s.stop.send(());
}

fn pull_resp(token: u16, tmst: u32, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![2, (token >> 8) as u8, token as u8, 0x03];
    datagram.extend_from_slice(
        serde_json::json!({ "txpk": {
            "imme": false, "tmst": tmst, "freq": 869.525, "rfch": 0, "powe": 14,
            "modu": "LORA", "datr": "SF9BW125", "codr": "4/5", "ipol": true, "prea": 8,
            "size": payload.len(),
            "data": base64::engine::general_purpose::STANDARD.encode(payload),
        }})
        .to_string()
        .as_bytes(),
    );
    datagram
}

async fn tx_ack_of(socket: &UdpSocket) -> (u16, String) {
    let (datagram, _) = receive_kind(socket, 0x05).await.expect("TX_ACK");
    let token = u16::from_be_bytes([datagram[1], datagram[2]]);
    let json: serde_json::Value = serde_json::from_slice(&datagram[12..]).unwrap();
    (
        token,
        json["txpk_ack"]["error"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn upstream_downlinks_reach_the_gateway_and_tx_acks_go_back_by_token() {
    let s = setup().await;
    let (_, link_a) = receive_kind(&s.upstream_a, 0x02).await.unwrap();
    let (_, link_b) = receive_kind(&s.upstream_b, 0x02).await.unwrap();
    // An uplink gives the agent the concentrator's clock.
    let tmst = 50_000_000;
    s.gateway
        .send_to(
            &push_data(1, &[rxpk(&data_frame(0x2600_0001), tmst)]),
            s.agent,
        )
        .await
        .unwrap();
    receive_kind(&s.gateway, 0x01).await.unwrap();

    // Both upstreams use token 0x0101, for different times.
    s.upstream_a
        .send_to(&pull_resp(0x0101, tmst + 3_000_000, b"from a"), link_a)
        .await
        .unwrap();
    let (first, _) = receive_kind(&s.gateway, 0x03).await.expect("a's downlink");
    s.upstream_b
        .send_to(&pull_resp(0x0101, tmst + 6_000_000, b"from b"), link_b)
        .await
        .unwrap();
    let (second, _) = receive_kind(&s.gateway, 0x03).await.expect("b's downlink");
    let token_of = |datagram: &[u8]| u16::from_be_bytes([datagram[1], datagram[2]]);
    assert_ne!(
        token_of(&first),
        token_of(&second),
        "the agent's own tokens"
    );
    assert_eq!(
        &first[4..],
        &pull_resp(0x0101, tmst + 3_000_000, b"from a")[4..],
        "the upstream's JSON body, byte for byte"
    );
    let body: serde_json::Value = serde_json::from_slice(&first[4..]).unwrap();
    assert_eq!(body["txpk"]["tmst"], tmst + 3_000_000);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(body["txpk"]["data"].as_str().unwrap())
            .unwrap(),
        b"from a"
    );

    let tx_ack = |token: u16, error: &str| {
        let mut datagram = vec![2, (token >> 8) as u8, token as u8, 0x05];
        datagram.extend_from_slice(&GATEWAY);
        datagram.extend_from_slice(
            serde_json::json!({ "txpk_ack": { "error": error } })
                .to_string()
                .as_bytes(),
        );
        datagram
    };
    s.gateway
        .send_to(&tx_ack(token_of(&second), "TOO_LATE"), s.agent)
        .await
        .unwrap();
    s.gateway
        .send_to(&tx_ack(token_of(&first), "NONE"), s.agent)
        .await
        .unwrap();
    assert_eq!(tx_ack_of(&s.upstream_a).await, (0x0101, "NONE".to_string()));
    assert_eq!(
        tx_ack_of(&s.upstream_b).await,
        (0x0101, "TOO_LATE".to_string())
    );

    // A downlink over one already scheduled: refused without reaching the gateway.
    s.upstream_b
        .send_to(&pull_resp(0x0202, tmst + 3_000_000, b"clash"), link_b)
        .await
        .unwrap();
    assert_eq!(
        tx_ack_of(&s.upstream_b).await,
        (0x0202, "COLLISION_PACKET".to_string())
    );
    nothing_of_kind(&s.gateway, 0x03, Duration::from_millis(300)).await;
    let _ = s.stop.send(());
}

#[tokio::test]
async fn with_the_upstreams_gone_the_agent_keeps_serving() {
    let s = setup().await;
    drop(s.upstream_a);
    drop(s.upstream_b);
    for token in 0..50u16 {
        let datagram = push_data(
            token,
            &[rxpk(&data_frame(0x2600_0000 + u32::from(token)), 1000)],
        );
        s.gateway.send_to(&datagram, s.agent).await.unwrap();
        let (ack, _) = receive_kind(&s.gateway, 0x01).await.expect("PUSH_ACK");
        assert_eq!(u16::from_be_bytes([ack[1], ack[2]]), token);
    }
    let _ = s.stop.send(());
}

#[tokio::test]
async fn a_minimal_pull_resp_passes_through_untouched() {
    let s = setup().await;
    let (_, link_a) = receive_kind(&s.upstream_a, 0x02).await.unwrap();
    let tmst = 70_000_000u32;
    s.gateway
        .send_to(
            &push_data(1, &[rxpk(&data_frame(0x2600_0009), tmst)]),
            s.agent,
        )
        .await
        .unwrap();
    receive_kind(&s.gateway, 0x01).await.unwrap();
    // No "imme", "ipol", "powe" or "prea": lora_pkt_fwd's defaults apply, and the agent
    // must not add its own (a null "prea" would mean a 6-symbol preamble).
    let body = format!(
        r#"{{"txpk":{{"tmst":{},"freq":869.525,"rfch":0,"modu":"LORA","datr":"SF12BW125","codr":"4/5","size":3,"data":"AQID","x_vendor":7}}}}"#,
        tmst + 2_000_000
    );
    let mut datagram = vec![2, 0x33, 0x44, 0x03];
    datagram.extend_from_slice(body.as_bytes());
    s.upstream_a.send_to(&datagram, link_a).await.unwrap();
    let (forwarded, _) = receive_kind(&s.gateway, 0x03).await.expect("the downlink");
    assert_eq!(std::str::from_utf8(&forwarded[4..]).unwrap(), body);
    let _ = s.stop.send(());
}
