//! Helpers the agent's integration tests share: a registered OTAA device, a JoinRequest
//! built with the `lorawan` crate (the device side), the EU868 service settings, a
//! packet-forwarder transport on loopback, the LoRa data rate names of
//! lorawan-device's radio parameters, and `fuotactl` run as a technician runs it.
//!
//! Include it with `mod common;` (each test binary uses a part of it).
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use fuota_agent::clock::{Clock, WallTime};
use fuota_agent::config::PacketForwarderConfig;
use fuota_agent::identifiers::{DevEui, JoinEui};
use fuota_agent::lorawan::duty_cycle::DutyCycleConfig;
use fuota_agent::lorawan::region::{Region, RegionName, RegionOptions};
use fuota_agent::lorawan::scheduler::SchedulerConfig;
use fuota_agent::network_server::NetworkServerSettings;
use fuota_agent::packet_forwarder::{
    NothingOwned, UdpPacketForwarder, UplinkOwnership, UpstreamConfig,
};
use fuota_agent::service::ServiceSettings;
use fuota_agent::storage::{Device, MacVersion, Storage};
use lorawan_fuota::crypto::Key128;

/// Registers an OTAA device with `app_key`.
pub fn register_otaa_device(
    storage: &mut Storage,
    dev_eui: u64,
    join_eui: u64,
    app_key: [u8; 16],
    mac_version: MacVersion,
) {
    let mut device = Device::new(DevEui::from(dev_eui), JoinEui::from(join_eui), mac_version);
    device.app_key = Some(Key128::from_bytes(app_key));
    storage
        .write(|tx| tx.insert_device(&device, WallTime::from_unix_seconds(1_790_000_000)))
        .expect("register the device");
}

/// A JoinRequest as a device sends it (EUIs little-endian on the air).
pub fn join_request(join_eui: u64, dev_eui: u64, dev_nonce: u16, app_key: [u8; 16]) -> Vec<u8> {
    let mut creator = lorawan::creator::JoinRequestCreator::new();
    creator
        .set_app_eui(&join_eui.to_le_bytes())
        .set_dev_eui(&dev_eui.to_le_bytes())
        .set_dev_nonce(&dev_nonce.to_le_bytes());
    creator
        .build(&lorawan::keys::AppKey::from(app_key))
        .to_vec()
}

/// EU868 service settings with these network-server settings, defaults elsewhere.
pub fn eu868_settings(network_server: NetworkServerSettings) -> ServiceSettings {
    ServiceSettings {
        region: Region::new(RegionName::Eu868, RegionOptions::default()),
        network_server,
        scheduler: SchedulerConfig::default(),
        duty_cycle: DutyCycleConfig::default(),
        tx_power_dbm: None,
    }
}

/// The packet-forwarder transport on a free loopback port, any gateway, 2 s TX_ACK
/// timeout, passing what `ownership` does not claim to `upstreams`.
pub async fn loopback_transport(
    clock: Arc<dyn Clock>,
    upstreams: Vec<UpstreamConfig>,
    ownership: Option<Arc<dyn UplinkOwnership>>,
) -> UdpPacketForwarder {
    UdpPacketForwarder::bind_with_upstreams(
        &PacketForwarderConfig {
            bind: "127.0.0.1:0".parse().expect("a socket address"),
            gateway_euis: Vec::new(),
            tx_ack_timeout: Duration::from_secs(2),
        },
        upstreams,
        ownership.unwrap_or_else(|| Arc::new(NothingOwned)),
        clock,
    )
    .await
    .expect("bind on loopback")
}

/// The spreading factor's number.
pub fn spreading_factor(sf: lora_modulation::SpreadingFactor) -> u8 {
    use lora_modulation::SpreadingFactor;
    match sf {
        SpreadingFactor::_5 => 5,
        SpreadingFactor::_6 => 6,
        SpreadingFactor::_7 => 7,
        SpreadingFactor::_8 => 8,
        SpreadingFactor::_9 => 9,
        SpreadingFactor::_10 => 10,
        SpreadingFactor::_11 => 11,
        SpreadingFactor::_12 => 12,
    }
}

/// The Semtech UDP `datr` of a LoRa modulation: `SF7BW125`.
pub fn lora_datr(sf: lora_modulation::SpreadingFactor, bw: lora_modulation::Bandwidth) -> String {
    format!("SF{}BW{}", spreading_factor(sf), bw.hz() / 1000)
}

/// Runs the built `fuotactl` with `args`.
pub fn fuotactl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fuotactl"))
        .args(args)
        .output()
        .unwrap()
}

/// A command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
