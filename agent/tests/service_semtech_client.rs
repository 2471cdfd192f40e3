//! The core loop with semtech-udp's own client runtime playing the packet forwarder (a
//! Semtech UDP implementation written by others): the join accept's TxPk contract as
//! that client reads it (tmst + 5 s, ipol, ncrc, 8-symbol preamble, RX1 data rate and
//! frequency), and a Class C multicast frame queued through the service handle going out
//! on the group's frequency and data rate after its not-before time, reported sent once
//! the gateway accepts it.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fuota_agent::clock::{Clock, SystemClock};
use fuota_agent::identifiers::GatewayEui;
use fuota_agent::network_server::multicast::{build_multicast_frame, MulticastGroupKeys};
use fuota_agent::network_server::NetworkServerSettings;
use fuota_agent::service::{MulticastFrame, Service, ServiceCommand, ServiceNotification};
use fuota_agent::storage::{MacVersion, Storage};
use lorawan_fuota::crypto::Key128;
use semtech_udp::client_runtime::{self, ClientRx};
use semtech_udp::push_data::{self, RxPk, RxPkV1, CRC};
use semtech_udp::{CodingRate, DataRate, MacAddress, Modulation};

const GATEWAY: GatewayEui =
    GatewayEui::from_bytes([0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0xab, 0xcd]);
const APP_KEY: [u8; 16] = [0x42; 16];
const WAIT: Duration = Duration::from_secs(5);

async fn next_downlink(rx: &mut ClientRx) -> client_runtime::DownlinkRequest {
    loop {
        match tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a downlink")
        {
            Some(client_runtime::Event::DownlinkRequest(request)) => return request,
            Some(_) => continue,
            None => panic!("the client runtime stopped"),
        }
    }
}

#[tokio::test]
async fn join_accept_and_multicast_frames_as_semtech_udps_client_sees_them() {
    let directory = tempfile::tempdir().unwrap();
    let mut storage = Storage::open(&directory.path().join("agent.db")).unwrap();
    common::register_otaa_device(&mut storage, 0x1111, 0x2222, APP_KEY, MacVersion::V1_0_4);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let transport = common::loopback_transport(clock.clone(), Vec::new(), None).await;
    let agent = transport.local_address();
    let (service, handle, mut notifications) = Service::new(
        common::eu868_settings(NetworkServerSettings::default()),
        storage,
        transport,
        clock.clone(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));

    let (tx, mut rx, runtime) = client_runtime::UdpRuntime::new_with_outbound_socket(
        "127.0.0.1:0",
        MacAddress::from(GATEWAY),
        agent,
    )
    .await
    .unwrap();
    let (_stop_client, client_stopped) = triggered::trigger();
    tokio::spawn(runtime.run(client_stopped));
    // Let the client's PULL_DATA open the downlink path.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let join_request = common::join_request(0x2222, 0x1111, 1, APP_KEY);
    let tmst = 3_000_000_000;
    tx.send(push_data::Packet::from_rxpk(
        MacAddress::from(GATEWAY),
        RxPk::V1(RxPkV1 {
            chan: 1,
            codr: Some(CodingRate::_4_5),
            data: join_request.clone(),
            datr: DataRate::from_str("SF10BW125").unwrap(),
            freq: 868.3,
            lsnr: 2.5,
            modu: Modulation::LORA,
            rfch: 0,
            rssi: -101,
            rssis: None,
            size: join_request.len() as u64,
            stat: CRC::OK,
            tmst,
            time: None,
        }),
    ))
    .await
    .unwrap();
    let request = next_downlink(&mut rx).await;
    let wire = serde_json::to_value(request.txpk()).unwrap();
    assert_eq!(wire["tmst"], u64::from(tmst) + 5_000_000);
    assert_eq!(wire["imme"], false);
    assert_eq!(wire["ipol"], true);
    assert_eq!(wire["ncrc"], true);
    assert_eq!(wire["prea"], 8);
    assert_eq!(wire["freq"], 868.3);
    assert_eq!(wire["datr"], "SF10BW125");
    assert_eq!(request.txpk().data.len(), 17);
    request.ack().await.unwrap();

    // A multicast frame for a group on 869.525 MHz DR3 (SF9), not before 300 ms from now.
    let group = MulticastGroupKeys::from_mc_key(&Key128::from_bytes([7; 16]), 0x0200_0001);
    let frame = build_multicast_frame(&group, 12, 201, &[0x08, 0x01, 0x00, 1, 2, 3]).unwrap();
    let not_before = clock.now().saturating_add_micros(300_000);
    assert!(
        handle
            .send(ServiceCommand::Multicast(MulticastFrame {
                reference: 99,
                gateway: GATEWAY,
                phy_payload: frame.clone(),
                frequency_hz: 869_525_000,
                data_rate: 3,
                not_before,
                deadline: None,
            }))
            .await
    );
    let request = next_downlink(&mut rx).await;
    let handed_over = clock.now();
    let wire = serde_json::to_value(request.txpk()).unwrap();
    assert_eq!(wire["freq"], 869.525);
    assert_eq!(wire["datr"], "SF9BW125");
    assert_eq!(wire["ipol"], true);
    assert_eq!(wire["prea"], 8);
    assert_eq!(request.txpk().data.data(), frame.as_slice());
    // Timed on the concentrator's counter (anchored on the join request, received just
    // before not_before - 300 ms) at or after not_before, and handed over ahead of it.
    let multicast_tmst = wire["tmst"].as_u64().unwrap();
    assert!(
        multicast_tmst >= u64::from(tmst) + 300_000,
        "{multicast_tmst}"
    );
    assert!(
        multicast_tmst < u64::from(tmst) + 5_000_000,
        "before the join accept's slot"
    );
    assert!(handed_over < not_before.saturating_add_micros(500_000));
    request.ack().await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, notifications.recv())
            .await
            .unwrap()
        {
            Some(ServiceNotification::MulticastSent { reference }) => {
                assert_eq!(reference, 99);
                break;
            }
            Some(_) => continue,
            None => panic!("the service stopped"),
        }
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
