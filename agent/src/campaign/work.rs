//! One pass of the engine over one campaign: the campaign and its device rows loaded
//! from storage, changed in memory by an input (an uplink, a tick, a multicast outcome)
//! and by the steps that follow from it, with the events, actions and multicast frames
//! that result. The engine writes it back in one transaction
//! ([`super::engine::CampaignEngine`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lorawan_fuota::crypto::multicast::LorawanVersion;

use super::actions::CampaignAction;
use super::model::{Campaign, CampaignDevice, CampaignPhase, DeviceStatus, DeviceStep};
use crate::clock::WallTime;
use crate::identifiers::{AesKey, DevEui};
use crate::storage::{EventKind, MacVersion, NewEvent, Storage, StorageError};

/// A multicast frame the engine still has to give a group FCnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FrameRequest {
    pub fport: u8,
    pub payload: Vec<u8>,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

/// A unicast downlink waiting for the device's next uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct QueuedDownlink {
    pub fport: u8,
    pub payload: Vec<u8>,
    /// A step's request (at most one is queued: a retry replaces it), or an answer.
    pub request: bool,
}

/// Unicast downlinks waiting for each device's next uplink.
pub(super) type Outbox = BTreeMap<DevEui, VecDeque<QueuedDownlink>>;

/// The root key a device's TS005 / TS004 keys derive from.
#[derive(Clone, Copy)]
pub(super) struct RootKey {
    pub version: LorawanVersion,
    pub key: AesKey,
}

/// The campaign being worked on.
pub(super) struct Work<'a> {
    pub campaign: Campaign,
    pub devices: Vec<CampaignDevice>,
    pub changed: BTreeSet<usize>,
    pub progress_changed: bool,
    pub events: Vec<NewEvent>,
    pub actions: Vec<CampaignAction>,
    pub frames: Vec<FrameRequest>,
    /// Multicast frames handed out and not yet reported (before this pass's frames).
    pub frames_in_flight: usize,
    pub now: WallTime,
    pub image: &'a [u8],
    pub mc_key: AesKey,
    pub storage: &'a Storage,
    /// SessionCnts to record, by device.
    pub session_counters: BTreeMap<DevEui, u16>,
    /// Firmware versions to record in the registry.
    pub firmware_versions: Vec<(DevEui, u32)>,
    /// Unicast downlinks waiting for the devices' uplinks.
    pub outbox: Outbox,
}

impl<'a> Work<'a> {
    /// Unix milliseconds of `now`.
    pub fn now_ms(&self) -> i64 {
        self.now.unix_millis()
    }

    /// The index of a device's row.
    pub fn index_of(&self, dev_eui: DevEui) -> Option<usize> {
        self.devices.iter().position(|d| d.dev_eui == dev_eui)
    }

    /// Marks a row as changed.
    pub fn touch(&mut self, index: usize) {
        self.changed.insert(index);
    }

    /// An event about the campaign.
    pub fn campaign_event(&mut self, kind: EventKind, mut payload: serde_json::Value) {
        if let Some(object) = payload.as_object_mut() {
            object.insert("campaign".into(), self.campaign.id.into());
        }
        self.events
            .push(NewEvent::new(self.now, kind).payload(payload));
    }

    /// An event about a device of the campaign.
    pub fn device_event(&mut self, index: usize, kind: EventKind, mut payload: serde_json::Value) {
        if let Some(object) = payload.as_object_mut() {
            object.insert("campaign".into(), self.campaign.id.into());
        }
        let dev_eui = self.devices[index].dev_eui;
        self.events.push(
            NewEvent::new(self.now, kind)
                .device(dev_eui)
                .payload(payload),
        );
    }

    /// Moves the campaign to another phase, with its event.
    pub fn set_phase(&mut self, phase: CampaignPhase) {
        let previous = self.campaign.progress.phase;
        self.campaign.progress.phase = phase;
        self.progress_changed = true;
        if previous.name() != phase.name() {
            self.campaign_event(
                EventKind::CampaignStep,
                serde_json::json!({ "from": previous.name(), "to": phase.name(), "detail": phase }),
            );
        }
    }

    /// Records an error of a device without changing its step.
    pub fn device_error(&mut self, index: usize, fport: Option<u8>, error: String) {
        self.device_event(
            index,
            EventKind::CampaignDeviceError,
            serde_json::json!({ "fport": fport, "error": error }),
        );
        self.devices[index].last_error = Some(error);
        self.touch(index);
    }

    /// Queues an answer (AppTimeAns, FragDataBlockReceivedAns) for the device's next
    /// uplink; an identical one already waiting is not queued twice.
    pub fn unicast(&mut self, index: usize, fport: u8, payload: Vec<u8>) {
        let dev_eui = self.devices[index].dev_eui;
        let queue = self.outbox.entry(dev_eui).or_default();
        if !queue
            .iter()
            .any(|q| !q.request && q.fport == fport && q.payload == payload)
        {
            queue.push_back(QueuedDownlink {
                fport,
                payload,
                request: false,
            });
        }
    }

    /// Queues a step's request for the device's next uplink, replacing an older one.
    pub fn queue_request(&mut self, index: usize, fport: u8, payload: Vec<u8>) {
        let dev_eui = self.devices[index].dev_eui;
        let queue = self.outbox.entry(dev_eui).or_default();
        queue.retain(|q| !q.request);
        queue.push_back(QueuedDownlink {
            fport,
            payload,
            request: true,
        });
    }

    /// Whether nothing waits for the device's next uplink.
    pub fn outbox_empty(&self, index: usize) -> bool {
        self.outbox
            .get(&self.devices[index].dev_eui)
            .is_none_or(VecDeque::is_empty)
    }

    /// The root key of a device, from the registry.
    pub fn root_key(&self, dev_eui: DevEui) -> Result<Result<RootKey, String>, StorageError> {
        let Some(device) = self.storage.device(dev_eui)? else {
            return Ok(Err(format!("device {dev_eui} is no longer registered")));
        };
        Ok(match device.mac_version {
            MacVersion::V1_1 => device
                .app_key
                .map(|key| RootKey {
                    version: LorawanVersion::V1_1,
                    key,
                })
                .ok_or_else(|| "no AppKey registered: the multicast keys cannot be derived".into()),
            _ => device
                .gen_app_key
                .map(|key| RootKey {
                    version: LorawanVersion::V1_0,
                    key,
                })
                .ok_or_else(|| {
                    "no GenAppKey registered (LoRaWAN 1.0.x): the multicast keys and the \
                     data-block MIC cannot be derived"
                        .into()
                }),
        })
    }

    /// Devices per result.
    pub fn results(&self) -> BTreeMap<DeviceStatus, usize> {
        let mut results = BTreeMap::new();
        for device in &self.devices {
            *results.entry(device.status).or_insert(0) += 1;
        }
        results
    }

    /// Whether every device is done.
    pub fn all_done(&self) -> bool {
        self.devices.iter().all(|d| d.step == DeviceStep::Done)
    }
}
