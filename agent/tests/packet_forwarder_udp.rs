//! The packet-forwarder link over real UDP on loopback, with `semtech-udp`'s client
//! runtime playing the packet forwarder (and raw sockets for what a well-behaved
//! forwarder never sends): uplinks arrive through the [`Transport`], downlinks reach the
//! gateway as PULL_RESP with the TxPk intact and return its TX_ACK, unknown gateways are
//! dropped and counted, and garbage is counted while the agent keeps serving.
//!
//! Every wait is bounded by a timeout, so a regression fails instead of hanging.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fuota_agent::clock::{ManualClock, MonotonicTime, WallTime};
use fuota_agent::config::PacketForwarderConfig;
use fuota_agent::identifiers::GatewayEui;
use fuota_agent::packet_forwarder::{
    CounterSnapshot, DownlinkError, DownlinkSender, GatewayEvent, Transport, TxAckError,
    TxAckOutcome, UdpPacketForwarder, Uplink,
};
use semtech_udp::client_runtime::{self, ClientRx, ClientTx};
use semtech_udp::pull_resp::{PhyData, Time, TxPk};
use semtech_udp::push_data::{self, RxPk, RxPkV1, CRC};
use semtech_udp::{tx_ack, CodingRate, DataRate, MacAddress, Modulation};

const WAIT: Duration = Duration::from_secs(5);
const GATEWAY_A: GatewayEui =
    GatewayEui::from_bytes([0x00, 0x16, 0xc0, 0x01, 0xff, 0x10, 0xa2, 0x35]);
const GATEWAY_B: GatewayEui =
    GatewayEui::from_bytes([0x00, 0x16, 0xc0, 0x01, 0xff, 0x10, 0xa2, 0x36]);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn start_agent(allowed: &[GatewayEui], tx_ack_timeout: Duration) -> UdpPacketForwarder {
    let config = PacketForwarderConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        gateway_euis: allowed.to_vec(),
        tx_ack_timeout,
    };
    let clock = Arc::new(ManualClock::new(WallTime::from_unix_seconds(1_767_225_600)));
    UdpPacketForwarder::bind(&config, clock).await.unwrap()
}

/// A fake packet forwarder: semtech-udp's client runtime, loopback only. It sends a
/// PULL_DATA as soon as it runs. Dropping the trigger stops it.
struct FakeGateway {
    tx: ClientTx,
    rx: ClientRx,
    _stop: triggered::Trigger,
}

async fn start_gateway(eui: GatewayEui, agent: SocketAddr) -> FakeGateway {
    let (tx, rx, runtime) = client_runtime::UdpRuntime::new_with_outbound_socket(
        "127.0.0.1:0",
        MacAddress::from(eui),
        agent,
    )
    .await
    .unwrap();
    let (stop, stopped) = triggered::trigger();
    tokio::spawn(runtime.run(stopped));
    FakeGateway {
        tx,
        rx,
        _stop: stop,
    }
}

fn rxpk(payload: &[u8], tmst: u32) -> RxPk {
    RxPk::V1(RxPkV1 {
        chan: 2,
        codr: Some(CodingRate::_4_5),
        data: payload.to_vec(),
        datr: DataRate::from_str("SF9BW125").unwrap(),
        freq: 868.5,
        lsnr: 7.5,
        modu: Modulation::LORA,
        rfch: 0,
        rssi: -57,
        rssis: Some(-58),
        size: payload.len() as u64,
        stat: CRC::OK,
        tmst,
        time: None,
    })
}

fn txpk(payload: &[u8], tmst: u32) -> TxPk {
    TxPk {
        time: Time::by_tmst(tmst),
        freq: 869.525,
        rfch: 0,
        powe: 14,
        modu: Modulation::LORA,
        datr: DataRate::from_str("SF12BW125").unwrap(),
        codr: Some(CodingRate::_4_5),
        fdev: None,
        ipol: true,
        prea: Some(8),
        data: PhyData::new(payload.to_vec()),
        ncrc: Some(true),
    }
}

/// The next uplink from any transport, skipping other events.
async fn next_uplink<T: Transport>(transport: &mut T) -> Uplink {
    within("an uplink", async {
        loop {
            match transport.recv().await.expect("transport open") {
                GatewayEvent::Uplink(uplink) => return *uplink,
                _ => continue,
            }
        }
    })
    .await
}

async fn wait_for_connection<T: Transport>(transport: &mut T, gateway: GatewayEui) {
    within("the gateway's PULL_DATA", async {
        loop {
            if let GatewayEvent::GatewayConnected { gateway: eui, .. } =
                transport.recv().await.expect("transport open")
            {
                if eui == gateway {
                    return;
                }
            }
        }
    })
    .await;
}

async fn wait_for_counters(
    agent: &UdpPacketForwarder,
    what: &str,
    condition: impl Fn(&CounterSnapshot) -> bool,
) -> CounterSnapshot {
    within(what, async {
        loop {
            let counters = agent.counters();
            if condition(&counters) {
                return counters;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_rxpk_pushed_by_a_gateway_arrives_as_an_uplink() {
    let mut agent = start_agent(&[GATEWAY_A], Duration::from_secs(2)).await;
    let gateway = start_gateway(GATEWAY_A, agent.local_address()).await;
    let payload = [0x40, 0xda, 0x1b, 0x01, 0x26, 0x80, 0x01, 0x00, 0x01, 0xa1];
    gateway
        .tx
        .send(push_data::Packet::from_rxpk(
            MacAddress::from(GATEWAY_A),
            rxpk(&payload, 4_000_000_123),
        ))
        .await
        .unwrap();

    let uplink = next_uplink(&mut agent).await;
    assert_eq!(uplink.gateway, GATEWAY_A);
    assert_eq!(uplink.rxpk.data(), &payload.to_vec());
    assert_eq!(uplink.rxpk.timestamp(), 4_000_000_123);
    assert_eq!(uplink.rxpk.frequency(), 868.5);
    assert_eq!(uplink.rxpk.datarate().to_string(), "SF9BW125");
    assert_eq!(uplink.received_at, MonotonicTime::ZERO); // the manual clock's time
    let counters = agent.counters();
    assert_eq!(counters.uplinks, 1);
    assert_eq!(counters.bad_datagrams, 0);
}

#[tokio::test]
async fn a_downlink_reaches_the_gateway_intact_and_its_tx_ack_comes_back() {
    let mut agent = start_agent(&[GATEWAY_A], Duration::from_secs(2)).await;
    let mut gateway = start_gateway(GATEWAY_A, agent.local_address()).await;
    wait_for_connection(&mut agent, GATEWAY_A).await;
    let downlinks = agent.downlinks();

    // Accepted.
    let sent = txpk(
        &[0x60, 0xda, 0x1b, 0x01, 0x26, 0x00, 0x05, 0x00],
        4_294_000_000,
    );
    let sending = tokio::spawn({
        let downlinks = downlinks.clone();
        let sent = sent.clone();
        async move { downlinks.send_downlink(GATEWAY_A, sent).await }
    });
    let request = match within("the PULL_RESP", gateway.rx.recv()).await {
        Some(client_runtime::Event::DownlinkRequest(request)) => request,
        other => panic!("expected a downlink request, got {other:?}"),
    };
    assert_eq!(
        serde_json::to_value(request.txpk()).unwrap(),
        serde_json::to_value(&sent).unwrap(),
        "the TxPk arrives intact"
    );
    let wire = serde_json::to_value(request.txpk()).unwrap();
    assert_eq!(wire["prea"], 8);
    assert_eq!(wire["ipol"], true);
    assert_eq!(wire["ncrc"], true);
    assert_eq!(wire["tmst"], 4_294_000_000u32);
    request.ack().await.unwrap();
    let outcome = within("the TX_ACK", sending).await.unwrap().unwrap();
    assert_eq!(outcome, TxAckOutcome::Accepted);

    // Refused by the gateway: the error comes back as the outcome.
    let sending = tokio::spawn({
        let downlinks = downlinks.clone();
        async move {
            downlinks
                .send_downlink(GATEWAY_A, txpk(&[1, 2, 3], 5))
                .await
        }
    });
    let request = match within("the second PULL_RESP", gateway.rx.recv()).await {
        Some(client_runtime::Event::DownlinkRequest(request)) => request,
        other => panic!("expected a downlink request, got {other:?}"),
    };
    request.nack(tx_ack::Error::TooLate).await.unwrap();
    let outcome = within("the TX_ACK", sending).await.unwrap().unwrap();
    assert_eq!(outcome, TxAckOutcome::Rejected(TxAckError::TooLate));

    let counters = agent.counters();
    assert_eq!(counters.downlinks_sent, 2);
    assert_eq!(counters.tx_acks, 2);
    assert_eq!(counters.tx_ack_rejections, 1);
}

#[tokio::test]
async fn a_missing_tx_ack_times_out_and_an_unconnected_gateway_is_reported() {
    let mut agent = start_agent(&[GATEWAY_A, GATEWAY_B], Duration::from_millis(200)).await;
    let mut gateway = start_gateway(GATEWAY_A, agent.local_address()).await;
    wait_for_connection(&mut agent, GATEWAY_A).await;
    let downlinks = agent.downlinks();

    let result = within(
        "the TX_ACK timeout",
        downlinks.send_downlink(GATEWAY_A, txpk(&[1], 1)),
    )
    .await;
    assert!(
        matches!(result, Err(DownlinkError::TxAckTimeout { .. })),
        "{result:?}"
    );
    // The gateway got it but never answered; a late TX_ACK is counted, not misrouted.
    if let Some(client_runtime::Event::DownlinkRequest(request)) =
        within("the PULL_RESP", gateway.rx.recv()).await
    {
        request.ack().await.unwrap();
    }
    wait_for_counters(&agent, "the late TX_ACK", |c| c.unmatched_tx_acks == 1).await;

    let result = downlinks.send_downlink(GATEWAY_B, txpk(&[1], 1)).await;
    assert!(
        matches!(result, Err(DownlinkError::GatewayNotConnected(eui)) if eui == GATEWAY_B),
        "{result:?}"
    );
    assert_eq!(agent.counters().tx_ack_timeouts, 1);
}

#[tokio::test]
async fn an_unknown_gateway_is_dropped_unacknowledged_and_counted() {
    let mut agent = start_agent(&[GATEWAY_A], Duration::from_secs(2)).await;
    let stranger = start_gateway(GATEWAY_B, agent.local_address()).await;
    stranger
        .tx
        .send(push_data::Packet::from_rxpk(
            MacAddress::from(GATEWAY_B),
            rxpk(&[1, 2, 3], 1),
        ))
        .await
        .unwrap();
    // Its PULL_DATA (sent at start) and PUSH_DATA are dropped.
    wait_for_counters(&agent, "the stranger's datagrams", |c| {
        c.unknown_gateway_datagrams >= 2
    })
    .await;

    // No acknowledgement reaches it: a raw PULL_DATA gets no PULL_ACK.
    let socket = raw_socket();
    socket
        .send_to(&pull_data(0x0101, GATEWAY_B), agent.local_address())
        .await
        .unwrap();
    let mut buffer = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buffer))
            .await
            .is_err(),
        "no PULL_ACK for a stranger"
    );

    // Nothing reached the consumer, and it cannot be sent downlinks.
    let counters = agent.counters();
    assert_eq!(
        (counters.uplinks, counters.pull_data, counters.push_data),
        (0, 0, 0)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), agent.recv())
            .await
            .is_err(),
        "no event from an unknown gateway"
    );
    assert!(matches!(
        agent
            .downlinks()
            .send_downlink(GATEWAY_B, txpk(&[1], 1))
            .await,
        Err(DownlinkError::GatewayNotConnected(_))
    ));

    // The allowed gateway is still served.
    let allowed = start_gateway(GATEWAY_A, agent.local_address()).await;
    allowed
        .tx
        .send(push_data::Packet::from_rxpk(
            MacAddress::from(GATEWAY_A),
            rxpk(&[9], 2),
        ))
        .await
        .unwrap();
    assert_eq!(next_uplink(&mut agent).await.gateway, GATEWAY_A);
}

/// A plain UDP socket on loopback (a std socket, driven by tokio so the test never
/// blocks the runtime the agent runs on).
fn raw_socket() -> tokio::net::UdpSocket {
    let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    tokio::net::UdpSocket::from_std(socket).unwrap()
}

async fn receive(socket: &tokio::net::UdpSocket, what: &str) -> Vec<u8> {
    let mut buffer = [0u8; 512];
    let (length, _) = within(what, socket.recv_from(&mut buffer)).await.unwrap();
    buffer[..length].to_vec()
}

fn header(token: u16, identifier: u8, gateway: GatewayEui) -> Vec<u8> {
    let mut datagram = vec![2, (token >> 8) as u8, token as u8, identifier];
    datagram.extend_from_slice(&gateway.to_bytes());
    datagram
}

fn pull_data(token: u16, gateway: GatewayEui) -> Vec<u8> {
    header(token, 0x02, gateway)
}

fn push_data(token: u16, gateway: GatewayEui, json: &str) -> Vec<u8> {
    let mut datagram = header(token, 0x00, gateway);
    datagram.extend_from_slice(json.as_bytes());
    datagram
}

const GOOD_RXPK: &str = r#"{"tmst":1000,"chan":0,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-40,"lsnr":9.0,"size":3,"data":"AQID"}"#;

#[tokio::test]
async fn garbage_is_counted_and_the_agent_keeps_serving() {
    let mut agent = start_agent(&[GATEWAY_A], Duration::from_secs(2)).await;
    let address = agent.local_address();
    let socket = raw_socket();

    let mut wrong_version = pull_data(1, GATEWAY_A);
    wrong_version[0] = 1;
    let bad_datagrams: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated header", vec![2, 0]),
        ("truncated gateway EUI", vec![2, 0, 1, 0x02, 0x00, 0x16]),
        ("wrong protocol version", wrong_version),
        (
            "unknown identifier",
            vec![2, 0, 1, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8],
        ),
        ("server-to-gateway type", vec![2, 0, 1, 0x03, b'{', b'}']),
        ("not JSON", push_data(7, GATEWAY_A, "\u{1}\u{2}garbage")),
        (
            "wrong JSON shape",
            push_data(8, GATEWAY_A, r#"{"rxpk":"x"}"#),
        ),
        (
            "random bytes",
            (0..200u8).map(|i| i.wrapping_mul(37)).collect(),
        ),
    ];
    for (_, datagram) in &bad_datagrams {
        socket.send_to(datagram, address).await.unwrap();
    }
    wait_for_counters(&agent, "every bad datagram", |c| {
        c.bad_datagrams == bad_datagrams.len() as u64
    })
    .await;

    // A PUSH_DATA whose rxpk has bad base64 is acknowledged, the bad rxpk counted, and
    // the good rxpk beside it still delivered.
    let bad_base64 = GOOD_RXPK.replace("AQID", "A*!D");
    socket
        .send_to(
            &push_data(
                0xbeef,
                GATEWAY_A,
                &format!(r#"{{"rxpk":[{bad_base64},{GOOD_RXPK}]}}"#),
            ),
            address,
        )
        .await
        .unwrap();
    let ack = receive(&socket, "the PUSH_ACK").await;
    assert_eq!(ack, [2, 0xbe, 0xef, 0x01], "PUSH_ACK echoes the token");
    let uplink = next_uplink(&mut agent).await;
    assert_eq!(uplink.rxpk.data(), &vec![1, 2, 3]);

    // Still serving: PULL_DATA is acknowledged.
    socket
        .send_to(&pull_data(0x4242, GATEWAY_A), address)
        .await
        .unwrap();
    let ack = receive(&socket, "the PULL_ACK").await;
    assert_eq!(ack, [2, 0x42, 0x42, 0x04], "PULL_ACK echoes the token");

    let counters = agent.counters();
    assert_eq!(counters.bad_datagrams, bad_datagrams.len() as u64);
    assert_eq!(counters.bad_rxpks, 1);
    assert_eq!(counters.uplinks, 1);
    assert_eq!(counters.push_data, 1);
    assert_eq!(counters.pull_data, 1);
}
