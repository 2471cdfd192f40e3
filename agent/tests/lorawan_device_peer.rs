//! A real device stack written by others — lora-rs's `lorawan-device` 0.12 async device —
//! joins through the agent by OTAA and exchanges confirmed and unconfirmed uplinks and
//! downlinks in RX1 and RX2. Its radio is ours: what the device transmits goes to the
//! agent as a Semtech UDP PUSH_DATA from a fake gateway, and the downlinks the agent
//! sends (PULL_RESP) are what the device receives, in the window whose frequency and
//! data rate the TxPk names. The device's timer returns at once: RX windows are matched
//! by their radio parameters, the TxPk timing is checked by the service's own tests.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use fuota_agent::clock::{SystemClock, WallTime};
use fuota_agent::identifiers::{DevEui, JoinEui};
use fuota_agent::network_server::{NetworkServerSettings, QueuedDownlink};
use fuota_agent::service::{Service, ServiceCommand, ServiceNotification};
use fuota_agent::storage::{Device, MacVersion, Storage};
use lorawan_device::async_device::radio::{
    PhyRxTx, RxConfig, RxQuality, RxStatus, Timer, TxConfig,
};
use lorawan_device::async_device::{Device as LoraDevice, JoinResponse, SendResponse, Timings};
use lorawan_device::default_crypto::DefaultFactory;
use lorawan_device::{region, AppEui, AppKey, DevEui as LoraDevEui, JoinMode, Prng};
use lorawan_fuota::crypto::Key128;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const APP_KEY: [u8; 16] = [0x3c; 16];
const DEV_EUI: u64 = 0x0011_2233_4455_6677;
const JOIN_EUI: u64 = 0x0000_0000_0000_00aa;
const GATEWAY: [u8; 8] = [0xaa, 0x55, 0, 0, 0, 0, 0, 1];
const WAIT: Duration = Duration::from_secs(5);

/// A downlink the gateway was asked to transmit.
#[derive(Debug, Clone)]
struct OnAir {
    frequency_hz: u32,
    datr: String,
    data: Vec<u8>,
}

/// The device's radio: a fake Semtech UDP gateway in front of the agent.
struct BridgeRadio {
    socket: UdpSocket,
    agent: SocketAddr,
    token: u16,
    tmst: u32,
    /// Downlinks of the last uplink, to be received in a matching window.
    on_air: VecDeque<OnAir>,
    rx: Option<RxConfig>,
    /// Refuse the next RX1 TxPk with TOO_LATE (so the agent falls back to RX2).
    refuse_next_rx1: bool,
    downlinks_sent_in: Vec<&'static str>,
}

impl BridgeRadio {
    async fn send(&mut self, kind: u8, token: Option<u16>, body: &[u8]) {
        let token = token.unwrap_or_else(|| {
            self.token = self.token.wrapping_add(1);
            self.token
        });
        let mut datagram = vec![2, (token >> 8) as u8, token as u8, kind];
        datagram.extend_from_slice(&GATEWAY);
        datagram.extend_from_slice(body);
        self.socket.send_to(&datagram, self.agent).await.unwrap();
    }

    async fn receive(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut buffer = vec![0u8; 65_536];
        match tokio::time::timeout(timeout, self.socket.recv_from(&mut buffer)).await {
            Ok(Ok((len, _))) => {
                buffer.truncate(len);
                Some(buffer)
            }
            _ => None,
        }
    }
}

impl PhyRxTx for BridgeRadio {
    type PhyError = String;
    const MAX_RADIO_POWER: u8 = 14;

    async fn tx(&mut self, config: TxConfig, buf: &[u8]) -> Result<u32, String> {
        self.tmst = self.tmst.wrapping_add(30_000_000);
        self.on_air.clear();
        let datr = common::lora_datr(config.rf.bb.sf, config.rf.bb.bw);
        let body = serde_json::json!({ "rxpk": [{
            "tmst": self.tmst, "chan": 0, "rfch": 0,
            "freq": f64::from(config.rf.frequency) / 1e6, "stat": 1, "modu": "LORA",
            "datr": datr, "codr": "4/5", "rssi": -70, "lsnr": 6.0, "size": buf.len(),
            "data": base64::engine::general_purpose::STANDARD.encode(buf),
        }]});
        self.send(0x00, None, body.to_string().as_bytes()).await;
        // PUSH_ACK, then whatever the agent sends for this uplink.
        while let Some(datagram) = self.receive(Duration::from_millis(400)).await {
            if datagram[3] != 0x03 {
                continue;
            }
            let token = u16::from_be_bytes([datagram[1], datagram[2]]);
            let json: serde_json::Value =
                serde_json::from_slice(&datagram[4..]).map_err(|e| e.to_string())?;
            let txpk = &json["txpk"];
            let frequency_hz = (txpk["freq"].as_f64().unwrap_or(0.0) * 1e6).round() as u32;
            let is_rx1 = frequency_hz == config.rf.frequency;
            let error = if is_rx1 && self.refuse_next_rx1 {
                self.refuse_next_rx1 = false;
                "TOO_LATE"
            } else {
                self.on_air.push_back(OnAir {
                    frequency_hz,
                    datr: txpk["datr"].as_str().unwrap_or_default().to_string(),
                    data: base64::engine::general_purpose::STANDARD
                        .decode(txpk["data"].as_str().unwrap_or_default())
                        .map_err(|e| e.to_string())?,
                });
                self.downlinks_sent_in
                    .push(if is_rx1 { "RX1" } else { "RX2" });
                "NONE"
            };
            let ack = serde_json::json!({ "txpk_ack": { "error": error } });
            self.send(0x05, Some(token), ack.to_string().as_bytes())
                .await;
        }
        Ok(50)
    }

    async fn setup_rx(&mut self, config: RxConfig) -> Result<(), String> {
        self.rx = Some(config);
        Ok(())
    }

    async fn rx_continuous(&mut self, _buf: &mut [u8]) -> Result<(usize, RxQuality), String> {
        std::future::pending().await
    }

    async fn rx_single(&mut self, buf: &mut [u8]) -> Result<RxStatus, String> {
        let Some(config) = self.rx else {
            return Ok(RxStatus::RxTimeout);
        };
        let datr = common::lora_datr(config.rf.bb.sf, config.rf.bb.bw);
        let found = self
            .on_air
            .iter()
            .position(|frame| frame.frequency_hz == config.rf.frequency && frame.datr == datr);
        match found.and_then(|index| self.on_air.remove(index)) {
            Some(frame) => {
                buf[..frame.data.len()].copy_from_slice(&frame.data);
                Ok(RxStatus::Rx(frame.data.len(), RxQuality::new(-70, 6)))
            }
            None => Ok(RxStatus::RxTimeout),
        }
    }
}

impl Timings for BridgeRadio {
    fn get_rx_window_lead_time_ms(&self) -> u32 {
        0
    }
}

/// Windows open at once: frames are matched by frequency and data rate.
struct InstantTimer;

impl Timer for InstantTimer {
    fn reset(&mut self) {}
    async fn at(&mut self, _millis: u64) {}
    async fn delay_ms(&mut self, _millis: u64) {}
}

#[tokio::test]
async fn a_lorawan_device_stack_joins_and_talks_through_the_agent() {
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
    let settings = common::eu868_settings(NetworkServerSettings::default());
    let (service, handle, mut notifications): (_, _, mpsc::Receiver<ServiceNotification>) =
        Service::new(settings, storage, transport, clock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));

    let mut radio = BridgeRadio {
        socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        agent,
        token: 0,
        tmst: 1_000,
        on_air: VecDeque::new(),
        rx: None,
        refuse_next_rx1: false,
        downlinks_sent_in: Vec::new(),
    };
    radio.send(0x02, None, b"").await; // PULL_DATA
    assert_eq!(radio.receive(WAIT).await.unwrap()[3], 0x04, "PULL_ACK");

    let mut lora: LoraDevice<BridgeRadio, DefaultFactory, InstantTimer, Prng> =
        LoraDevice::new_with_seed(
            region::Configuration::new(lorawan_device::Region::EU868),
            radio,
            InstantTimer,
            7,
        );
    let join = lora
        .join(&JoinMode::OTAA {
            deveui: LoraDevEui::from(DEV_EUI.to_le_bytes()),
            appeui: AppEui::from(JOIN_EUI.to_le_bytes()),
            appkey: AppKey::from(APP_KEY),
        })
        .await
        .unwrap();
    assert!(matches!(join, JoinResponse::JoinSuccess), "{join:?}");
    assert_eq!(
        tokio::time::timeout(WAIT, notifications.recv())
            .await
            .unwrap(),
        Some(ServiceNotification::Joined {
            dev_eui: DevEui::from(DEV_EUI)
        })
    );

    // The device joined at the slow join data rate; like ADR would, move it to DR5 so
    // that the SF12 answers of one exchange do not still occupy the concentrator when
    // the next uplink (milliseconds later in this test) wants its windows.
    lora.set_datarate(region::DR::_5);

    // Unconfirmed uplink: delivered to the application layer, nothing comes back.
    let response = lora.send(b"unconfirmed", 42, false).await.unwrap();
    assert!(matches!(response, SendResponse::RxComplete), "{response:?}");
    let Some(ServiceNotification::ApplicationUplink {
        f_port, payload, ..
    }) = tokio::time::timeout(WAIT, notifications.recv())
        .await
        .unwrap()
    else {
        panic!("no application uplink");
    };
    assert_eq!(
        (f_port, payload.as_slice()),
        (42, b"unconfirmed".as_slice())
    );

    // Confirmed uplink with a queued downlink: both in RX1.
    assert!(
        handle
            .send(ServiceCommand::EnqueueDownlink {
                dev_eui: DevEui::from(DEV_EUI),
                downlink: QueuedDownlink {
                    f_port: 7,
                    payload: b"hello device".to_vec(),
                    confirmed: false,
                },
            })
            .await
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = lora.send(b"confirmed", 42, true).await.unwrap();
    let radio = lora.get_mut_radio();
    assert!(
        matches!(response, SendResponse::DownlinkReceived(_)),
        "{response:?}; windows {:?}, left on air {:?}, last rx {:?}",
        radio.downlinks_sent_in,
        radio.on_air,
        radio.rx
    );
    let downlink = lora.take_downlink().expect("the queued payload");
    assert_eq!(
        (downlink.fport, downlink.data.as_slice()),
        (7, b"hello device".as_slice())
    );

    // The gateway refuses RX1: the answer reaches the device in RX2.
    lora.get_mut_radio().refuse_next_rx1 = true;
    handle
        .send(ServiceCommand::EnqueueDownlink {
            dev_eui: DevEui::from(DEV_EUI),
            downlink: QueuedDownlink {
                f_port: 8,
                payload: b"via rx2".to_vec(),
                confirmed: false,
            },
        })
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = lora.send(b"again", 42, true).await.unwrap();
    let radio = lora.get_mut_radio();
    assert!(
        matches!(response, SendResponse::DownlinkReceived(_)),
        "{response:?}; windows {:?}, left on air {:?}, last rx {:?}",
        radio.downlinks_sent_in,
        radio.on_air,
        radio.rx
    );
    let downlink = lora.take_downlink().expect("the RX2 payload");
    assert_eq!(
        (downlink.fport, downlink.data.as_slice()),
        (8, b"via rx2".as_slice())
    );
    assert_eq!(
        lora.get_mut_radio().downlinks_sent_in,
        vec!["RX1", "RX1", "RX2"],
        "join accept and first answer in RX1, the last in RX2"
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
