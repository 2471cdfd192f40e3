//! The edge network server for the devices registered with the agent (LoRaWAN 1.0.x):
//! joins, uplink checks, MAC answers and the Class A answer of each uplink, as a
//! synchronous state machine over [`Storage`] (no sockets, no clock reads: the service
//! loop passes the radio metadata and times in, and sends the answers out).
//!
//! * **Joins** ([`join`]): JoinRequest MIC with the AppKey, DevNonce replay rules by MAC
//!   version (1.0.2/1.0.3: a DevNonce is never accepted twice; 1.0.4 and later: it must
//!   be above every one seen), a DevAddr in the configured prefix, the join accept with
//!   RX1DROffset/RX2DataRate/RxDelay and the region's CFList, session keys derived and
//!   stored with their event in one transaction.
//! * **Uplinks** ([`uplink`]): DevAddr lookup (several sessions may share one; the MIC
//!   decides), the 32-bit FCnt rebuilt from its 16 wire bits (rollover included; replays
//!   and old counters refused), de-duplication of the copies several antennas or gateways
//!   hear, FRMPayload decryption, LinkCheckReq/DeviceTimeReq answered (DeviceTimeAns from
//!   the gateway's GPS time of reception when it has one), confirmed uplinks
//!   acknowledged, application payloads handed up by FPort.
//! * **Downlinks**: one queue of application payloads per device, sent in the answer to
//!   the device's next uplink with an FCntDown from storage's durable reservation (never
//!   reused, even after `kill -9`).
//! * **Ownership** ([`ownership`]): what is ours, for the pass-through to upstream.
//!
//! De-duplication keeps the first copy and answers at once through the gateway that
//! heard it, rather than waiting for a collection window: RX1 opens one second after the
//! uplink, and on a single-gateway deployment (the agent's usual case) the copies come
//! from the same concentrator anyway. Later copies are counted as duplicates.

pub mod crypto;
pub mod join;
pub mod mac_commands;
pub mod multicast;
pub mod ownership;
pub mod uplink;

use std::collections::{HashMap, VecDeque};

use crate::clock::{GpsTime, WallTime};
use crate::identifiers::{DevEui, GatewayEui};
use crate::lorawan::region::{Region, RxWindow};
use crate::lorawan::scheduler::ClassAKind;
use crate::lorawan::time::MonotonicTime;

pub use ownership::OwnershipIndex;

/// Settings of the network server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkServerSettings {
    /// NetID (24 bits) written in join accepts.
    pub net_id: u32,
    /// DevAddrs handed out at join start with these bits ...
    pub dev_addr_prefix: u32,
    /// ... this many of them (0..=32).
    pub dev_addr_prefix_len: u8,
    /// RX1DROffset given to devices at join.
    pub rx1_dr_offset: u8,
    /// RX2 window given to devices at join; `None`: the region's default.
    pub rx2: Option<RxWindow>,
    /// RX1 delay in seconds given at join (1..=15).
    pub rx1_delay_s: u8,
    /// Extra channels in the CFList of EU868/AS923 join accepts (none: no CFList).
    pub cf_list_frequencies_hz: Vec<u32>,
    /// How long a frame is remembered to recognise its copies, µs.
    pub dedup_window_us: u64,
}

impl Default for NetworkServerSettings {
    /// NetID 000000 (experimental), DevAddr prefix 00000000/7 (its NwkID), RX1DROffset 0,
    /// the region's RX2, 1 s RX1 delay, no CFList, 2 s de-duplication.
    fn default() -> Self {
        NetworkServerSettings {
            net_id: 0,
            dev_addr_prefix: 0,
            dev_addr_prefix_len: 7,
            rx1_dr_offset: 0,
            rx2: None,
            rx1_delay_s: 1,
            cf_list_frequencies_hz: Vec::new(),
            dedup_window_us: 2_000_000,
        }
    }
}

/// How an uplink was received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UplinkRadio {
    /// The gateway that heard it.
    pub gateway: GatewayEui,
    /// Uplink frequency, Hz.
    pub frequency_hz: u32,
    /// Uplink data rate index in the region.
    pub data_rate: u8,
    /// Signal-to-noise ratio, dB.
    pub snr_db: f32,
    /// Received signal strength, dBm.
    pub rssi_dbm: i32,
    /// The concentrator's counter at the end of reception.
    pub tmst: u32,
    /// GPS time of reception, when the gateway has GPS.
    pub gps_time: Option<GpsTime>,
    /// Arrival on the agent's monotonic timeline.
    pub received_at: MonotonicTime,
    /// The agent's wall time at arrival.
    pub received_wall: WallTime,
}

/// A downlink to send in the device's receive windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassAAnswer {
    /// The device answered.
    pub dev_eui: DevEui,
    /// The gateway that heard the uplink (and transmits the answer).
    pub gateway: GatewayEui,
    /// The frame.
    pub phy_payload: Vec<u8>,
    /// Join accept or data answer (gives the RX delays).
    pub kind: ClassAKind,
    /// `tmst` of the uplink.
    pub uplink_tmst: u32,
    /// RX1 frequency and data rate.
    pub rx1: RxWindow,
    /// RX2 frequency and data rate.
    pub rx2: RxWindow,
    /// The FCntDown the frame uses (data answers).
    pub f_cnt_down: Option<u32>,
}

/// Why an uplink was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a LoRaWAN frame we can read.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame type devices do not send (downlinks, proprietary).
    #[error("not an uplink frame (MType {0:#05b})")]
    NotAnUplink(u8),
    /// The JoinRequest names another JoinEUI than the device's.
    #[error("JoinEUI {found} does not match the device's {expected}")]
    WrongJoinEui {
        /// In the request.
        found: String,
        /// Registered.
        expected: String,
    },
    /// The device has no AppKey (ABP only).
    #[error("the device has no AppKey, so it cannot join (ABP device?)")]
    NotOtaa,
    /// Bad MIC.
    #[error("MIC check failed")]
    BadMic,
    /// A DevNonce used before (replay).
    #[error("DevNonce {dev_nonce} was used before (replayed JoinRequest)")]
    DevNonceReplayed {
        /// The nonce.
        dev_nonce: u16,
    },
    /// A 1.0.4 device's DevNonce that is not above the last one.
    #[error("DevNonce {dev_nonce} is not above the last one, {highest} (LoRaWAN 1.0.4 counter)")]
    DevNonceNotIncreasing {
        /// The nonce.
        dev_nonce: u16,
        /// Highest seen.
        highest: u16,
    },
    /// No DevAddr left in the prefix.
    #[error("no free DevAddr in the configured prefix")]
    NoDevAddr,
    /// An FCnt at or below the last accepted one.
    #[error("FCnt {f_cnt} is not above the last accepted {last} (replay or old frame)")]
    FCntReplayed {
        /// The rebuilt counter.
        f_cnt: u32,
        /// The last accepted.
        last: u32,
    },
    /// The region cannot answer (data rate or frequency unknown).
    #[error("region: {0}")]
    Region(String),
}

/// What the network server made of an uplink.
#[derive(Debug, Clone, PartialEq)]
pub enum UplinkOutcome {
    /// Not a frame of ours: pass it through.
    NotOurs,
    /// A copy of a frame already handled.
    Duplicate,
    /// Refused.
    Rejected {
        /// The device, when known.
        dev_eui: Option<DevEui>,
        /// Why.
        reason: Rejection,
    },
    /// A device joined.
    Joined {
        /// The device.
        dev_eui: DevEui,
        /// The join accept to send.
        answer: ClassAAnswer,
    },
    /// A data uplink was accepted.
    Data {
        /// The device.
        dev_eui: DevEui,
        /// Its full 32-bit FCnt.
        f_cnt: u32,
        /// Confirmed uplink.
        confirmed: bool,
        /// FPort (`None`: MAC commands only).
        f_port: Option<u8>,
        /// Decrypted application payload (empty for FPort 0).
        payload: Vec<u8>,
        /// The answer to send, if any is due.
        answer: Option<ClassAAnswer>,
    },
}

/// An application payload waiting for the device's next uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDownlink {
    /// FPort (1..=223).
    pub f_port: u8,
    /// Payload, sent encrypted with the AppSKey.
    pub payload: Vec<u8>,
    /// Ask for an acknowledgement.
    pub confirmed: bool,
}

/// The layer above the network server that may answer an application uplink in its own
/// receive window (the campaign engine: a device's next FUOTA request must go out in
/// the RX1/RX2 of the uplink that carried its previous answer).
pub trait ApplicationHandler {
    /// A device's application payload (FPort 1..=223), decrypted, after its uplink was
    /// committed. What it returns is sent in this uplink's answer, ahead of the device's
    /// queued payloads.
    fn on_application_uplink(
        &mut self,
        storage: &mut crate::storage::Storage,
        uplink: &ApplicationUplink<'_>,
    ) -> Option<QueuedDownlink>;
}

/// An application uplink, as [`ApplicationHandler`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct ApplicationUplink<'a> {
    /// The device.
    pub dev_eui: DevEui,
    /// FPort (1..=223).
    pub f_port: u8,
    /// The decrypted FRMPayload.
    pub payload: &'a [u8],
    /// Its full FCnt.
    pub f_cnt: u32,
    /// When it was received (the agent's wall time).
    pub received: WallTime,
    /// When it was received, on the monotonic timeline.
    pub received_at: MonotonicTime,
}

/// The handler of a network server nobody stands above: nothing is answered.
struct NoApplication;

impl ApplicationHandler for NoApplication {
    fn on_application_uplink(
        &mut self,
        _storage: &mut crate::storage::Storage,
        _uplink: &ApplicationUplink<'_>,
    ) -> Option<QueuedDownlink> {
        None
    }
}

/// Counters, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkServerCounters {
    /// Joins accepted.
    pub joins: u64,
    /// Data uplinks accepted.
    pub uplinks: u64,
    /// Copies dropped.
    pub duplicates: u64,
    /// Frames refused.
    pub rejected: u64,
    /// Frames not ours.
    pub not_ours: u64,
}

/// The network server.
#[derive(Debug)]
pub struct NetworkServer {
    region: Region,
    settings: NetworkServerSettings,
    ownership: OwnershipIndex,
    recent_frames: VecDeque<(MonotonicTime, [u8; 16])>,
    queues: HashMap<DevEui, VecDeque<QueuedDownlink>>,
    counters: NetworkServerCounters,
}

impl NetworkServer {
    /// A network server for `region` whose ownership index is `ownership` (load it from
    /// storage with [`OwnershipIndex::load`]).
    pub fn new(region: Region, settings: NetworkServerSettings, ownership: OwnershipIndex) -> Self {
        NetworkServer {
            region,
            settings,
            ownership,
            recent_frames: VecDeque::new(),
            queues: HashMap::new(),
            counters: NetworkServerCounters::default(),
        }
    }

    /// The region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The settings.
    pub fn settings(&self) -> &NetworkServerSettings {
        &self.settings
    }

    /// The ownership index (a shared handle).
    pub fn ownership(&self) -> &OwnershipIndex {
        &self.ownership
    }

    /// The counters.
    pub fn counters(&self) -> NetworkServerCounters {
        self.counters
    }

    /// Queues an application payload for the device's next Class A answer.
    pub fn enqueue_downlink(&mut self, dev_eui: DevEui, downlink: QueuedDownlink) {
        self.queues.entry(dev_eui).or_default().push_back(downlink);
    }

    /// Payloads waiting for a device.
    pub fn queued_downlinks(&self, dev_eui: DevEui) -> usize {
        self.queues.get(&dev_eui).map_or(0, VecDeque::len)
    }

    /// The RX2 window devices are given.
    pub fn rx2(&self) -> RxWindow {
        self.settings.rx2.unwrap_or_else(|| self.region.rx2())
    }

    /// Handles one received PHYPayload.
    pub fn handle_uplink(
        &mut self,
        storage: &mut crate::storage::Storage,
        phy_payload: &[u8],
        radio: &UplinkRadio,
    ) -> Result<UplinkOutcome, crate::storage::StorageError> {
        self.handle_uplink_with(storage, phy_payload, radio, &mut NoApplication)
    }

    /// Handles one received PHYPayload; an application payload goes to `application`,
    /// which may answer it in this uplink's receive window.
    pub fn handle_uplink_with(
        &mut self,
        storage: &mut crate::storage::Storage,
        phy_payload: &[u8],
        radio: &UplinkRadio,
        application: &mut dyn ApplicationHandler,
    ) -> Result<UplinkOutcome, crate::storage::StorageError> {
        if !self.ownership.owns(phy_payload) {
            self.counters.not_ours += 1;
            return Ok(UplinkOutcome::NotOurs);
        }
        if self.seen_recently(phy_payload, radio.received_at) {
            self.counters.duplicates += 1;
            return Ok(UplinkOutcome::Duplicate);
        }
        let outcome = match phy_payload[0] >> 5 {
            0b000 => join::handle_join_request(self, storage, phy_payload, radio)?,
            _ => uplink::handle_data_uplink(self, storage, phy_payload, radio, application)?,
        };
        match &outcome {
            UplinkOutcome::Joined { .. } => self.counters.joins += 1,
            UplinkOutcome::Data { .. } => self.counters.uplinks += 1,
            UplinkOutcome::Rejected { .. } => self.counters.rejected += 1,
            UplinkOutcome::NotOurs => self.counters.not_ours += 1,
            UplinkOutcome::Duplicate => self.counters.duplicates += 1,
        }
        Ok(outcome)
    }

    /// Remembers the frame; true if a copy was seen within the window.
    fn seen_recently(&mut self, phy_payload: &[u8], now: MonotonicTime) -> bool {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(phy_payload).into();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let window = self.settings.dedup_window_us;
        while let Some(&(at, _)) = self.recent_frames.front() {
            if now.micros_since(at) > window {
                self.recent_frames.pop_front();
            } else {
                break;
            }
        }
        if self.recent_frames.iter().any(|(_, seen)| *seen == key) {
            return true;
        }
        self.recent_frames.push_back((now, key));
        false
    }

    fn take_downlink(&mut self, dev_eui: DevEui) -> Option<QueuedDownlink> {
        self.queues.get_mut(&dev_eui)?.pop_front()
    }

    fn requeue_front(&mut self, dev_eui: DevEui, downlink: QueuedDownlink) {
        self.queues.entry(dev_eui).or_default().push_front(downlink);
    }
}
