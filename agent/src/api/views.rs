//! The local API's JSON documents: what the agent answers and what it accepts. Both the
//! server and `fuotactl` use these types, so the two cannot drift apart; `docs/api.md`
//! describes them for other clients.
//!
//! Views never carry keys: a device shows whether it has an AppKey, NwkKey and
//! GenAppKey, never their values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::campaign::{CampaignState, DeviceStatus, DeviceStep};

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The agent's version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// The database file.
    pub database: String,
    /// Registered devices.
    pub devices: usize,
    /// Cached images.
    pub images: usize,
    /// Campaigns per state.
    pub campaigns: BTreeMap<CampaignState, usize>,
    /// Traffic since start.
    pub counters: CountersView,
    /// TX_ACK errors since start by the gateway's error name.
    pub tx_ack_errors_by_kind: BTreeMap<String, u64>,
    /// Gateways heard since start.
    pub gateways: Vec<GatewayView>,
    /// Upstream sync to the MQTT broker; absent when `[mqtt]` has no broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::upstream::UpstreamStatus>,
}

/// Traffic counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    /// Uplinks received.
    pub uplinks: u64,
    /// Uplinks of devices the agent does not serve (passed through).
    pub foreign_uplinks: u64,
    /// Downlinks handed to gateways.
    pub downlinks_sent: u64,
    /// Downlinks a gateway refused.
    pub tx_ack_errors: u64,
    /// Class A answers that found no receive window.
    pub answers_lost: u64,
}

/// A gateway's transmitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    /// Gateway EUI.
    pub gateway_eui: String,
    /// Duty-cycle use per band.
    pub bands: Vec<BandView>,
}

/// One band's duty-cycle use over its window ending now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandView {
    /// The band.
    pub band: String,
    /// Airtime used, µs.
    pub used_us: u64,
    /// Budget, µs (`null`: no duty-cycle limit).
    pub budget_us: Option<u64>,
}

/// A registered device (`GET /v1/devices`, `GET /v1/devices/{dev_eui}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// DevEUI.
    pub dev_eui: String,
    /// JoinEUI.
    pub join_eui: String,
    /// LoRaWAN MAC version ("1.0.3", "1.1").
    pub mac_version: String,
    /// Class ("A", "B", "C").
    pub class: String,
    /// Hardware version, if known.
    pub hardware_version: Option<String>,
    /// Firmware version last reported, if known.
    pub firmware_version: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Whether an AppKey is set (its value is never shown).
    pub has_app_key: bool,
    /// Whether a NwkKey is set (1.1).
    pub has_nwk_key: bool,
    /// Whether a GenAppKey is set (TS005 multicast key derivation).
    pub has_gen_app_key: bool,
    /// DevAddr of the current session, if it has joined.
    pub dev_addr: Option<String>,
    /// FCntUp of the last uplink of the session.
    pub last_f_cnt_up: Option<u32>,
    /// The active campaign it is in, if any.
    pub active_campaign: Option<i64>,
}

/// `POST /v1/devices`: a device to register. Keys are 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// DevEUI, 16 hexadecimal digits.
    pub dev_eui: String,
    /// JoinEUI, 16 hexadecimal digits.
    pub join_eui: String,
    /// LoRaWAN MAC version: "1.0.2", "1.0.3", "1.0.4" or "1.1".
    pub mac_version: String,
    /// AppKey (OTAA).
    #[serde(default)]
    pub app_key: Option<String>,
    /// NwkKey (1.1 OTAA).
    #[serde(default)]
    pub nwk_key: Option<String>,
    /// GenAppKey (TS005 on 1.0.x devices).
    #[serde(default)]
    pub gen_app_key: Option<String>,
    /// Class: "A" (default), "B" or "C".
    #[serde(default)]
    pub class: Option<String>,
    /// Hardware version.
    #[serde(default)]
    pub hardware_version: Option<String>,
    /// Firmware version, if known.
    #[serde(default)]
    pub firmware_version: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A cached image (`GET /v1/images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageView {
    /// SHA-256 of the image, its identity.
    pub sha256: String,
    /// "mcuboot" or "opaque".
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Name it was imported under.
    pub name: String,
    /// MCUboot version.
    pub version: Option<String>,
    /// TS006 version as major.minor.revision.
    pub ts006_version: Option<String>,
    /// Hardware version the image is for.
    pub hardware_version: Option<u32>,
    /// KEYHASH of the key that verified it.
    pub signer_key_hash: String,
    /// Import time, Unix ms.
    pub imported_at_ms: i64,
}

/// `POST /v1/images`: what the import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportView {
    /// `true` when the image was cached already (nothing changed).
    pub already_cached: bool,
    /// The image.
    pub image: ImageView,
}

/// `POST /v1/images/downloads` takes: an image to fetch over https.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDownload {
    /// Where to fetch it (https only).
    pub url: String,
    /// Its SHA-256 (64 hexadecimal digits): the download is refused if it differs.
    pub sha256: String,
    /// Its size, bytes: a longer body is refused.
    pub size: u64,
    /// Name to file it under (default: the URL's last path segment).
    #[serde(default)]
    pub name: Option<String>,
    /// Version it is said to be (informational; the image's header counts).
    #[serde(default)]
    pub version: Option<String>,
}

/// An image download (`POST /v1/images/downloads`, `GET /v1/images/downloads/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadView {
    /// Its id; `0` when the image was cached already and nothing was fetched.
    pub id: i64,
    /// `downloading`, `imported` or `failed`.
    pub state: String,
    /// The URL, without its query string or credentials.
    pub url: String,
    /// The image's SHA-256.
    pub sha256: String,
    /// Its size, bytes.
    pub size: u64,
    /// Bytes fetched so far.
    pub bytes_done: u64,
    /// Attempts that failed so far (the download retries with growing delays).
    pub attempts: u32,
    /// Why the last attempt failed, or why the download was given up.
    pub last_error: Option<String>,
    /// The same image was being fetched already: this is that download.
    pub already_downloading: bool,
    /// The image was in the cache already.
    pub already_cached: bool,
}

/// A campaign in a list (`GET /v1/campaigns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSummaryView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Lifecycle state.
    pub state: CampaignState,
    /// The current step ("setup", "broadcast", "status", ...).
    pub step: String,
    /// The image.
    pub image_sha256: String,
    /// Version the image installs (major.minor.revision).
    pub target_version: String,
    /// "multicast" or "unicast".
    pub delivery: String,
    /// Devices targeted.
    pub devices: usize,
    /// Devices per result so far.
    pub results: BTreeMap<DeviceStatus, usize>,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Last change, Unix ms.
    pub updated_at_ms: i64,
}

/// A campaign in full (`GET /v1/campaigns/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignView {
    /// The summary.
    #[serde(flatten)]
    pub summary: CampaignSummaryView,
    /// The step and its counters, as the engine keeps them.
    pub progress: serde_json::Value,
    /// The parameters it runs on (data rate, fragments, redundancy, ...).
    pub parameters: serde_json::Value,
    /// How the devices were chosen.
    pub targets: serde_json::Value,
    /// Each device.
    pub device_results: Vec<CampaignDeviceView>,
}

/// A device in a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDeviceView {
    /// DevEUI.
    pub dev_eui: String,
    /// Result so far.
    pub status: DeviceStatus,
    /// Step it is in.
    pub step: DeviceStep,
    /// Retries so far.
    pub retries: u32,
    /// Fragments it still missed at its last status answer.
    pub missing: Option<u32>,
    /// Last uplink, Unix ms.
    pub last_seen_ms: Option<i64>,
    /// The last error, in words.
    pub last_error: Option<String>,
}

/// `POST /v1/campaigns/{id}/{action}` and `POST /v1/campaigns`: the campaign concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRef {
    /// Its id.
    pub id: i64,
    /// Its state after the request.
    pub state: CampaignState,
}

/// An event (`GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Id; grows with every event.
    pub id: i64,
    /// Unix ms.
    pub time_ms: i64,
    /// What happened.
    pub kind: String,
    /// The device concerned.
    pub dev_eui: Option<String>,
    /// The gateway concerned.
    pub gateway_eui: Option<String>,
    /// Details.
    pub payload: serde_json::Value,
}

/// Every refusal and failure: what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// The message.
    pub error: String,
}
