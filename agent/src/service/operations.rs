//! Operations the local API asks of the core loop: registering and removing devices,
//! importing and removing images, and the loop's own status (counters, gateways and
//! their duty-cycle use).
//!
//! They run in the loop because the loop owns the writable storage, the ownership index
//! the packet forwarder consults, and the campaign engine's image cache: a device added
//! here is served from its very next uplink. Reads that need none of that (lists, shows,
//! events) are answered by the API from its own read-only connection.

use serde::Serialize;
use tokio::sync::oneshot;

use super::{Service, ServiceCounters};
use crate::firmware::cache::{CacheError, ImportOutcome};
use crate::identifiers::{DevEui, GatewayEui};
use crate::packet_forwarder::Transport;
use crate::storage::{Device, FirmwareImageRecord, StorageError};

/// An operation and where its answer goes.
#[derive(Debug)]
pub enum Operation {
    /// The loop's status.
    Status(oneshot::Sender<ServiceStatus>),
    /// Register devices, all in one transaction: every one or none.
    AddDevices(Vec<Device>, oneshot::Sender<Result<(), OperationError>>),
    /// Remove a device (refused while a campaign targets it).
    RemoveDevice(DevEui, oneshot::Sender<Result<(), OperationError>>),
    /// Verify and cache an MCUboot image.
    ImportImage {
        /// The image file's bytes.
        bytes: Vec<u8>,
        /// The name to file it under.
        name: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ImportedImage, OperationError>>,
    },
    /// Remove a cached image (refused while an active campaign uses it).
    RemoveImage(String, oneshot::Sender<Result<(), OperationError>>),
    /// Trust these keys from now on (SIGHUP reload of `[firmware] trusted_keys`).
    ReplaceTrustStore(crate::firmware::TrustStore, oneshot::Sender<()>),
}

/// What an image import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedImage {
    /// `true` when the same image was already cached (nothing changed).
    pub already_cached: bool,
    /// The cached image.
    pub image: FirmwareImageRecord,
}

/// Why an operation was refused; the kind decides the API's status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OperationError {
    /// What kind of refusal.
    pub kind: OperationErrorKind,
    /// What was wrong and what to do, in words.
    pub message: String,
}

/// Kinds of [`OperationError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationErrorKind {
    /// The request is wrong (bad image, bad signature).
    Invalid,
    /// What it names does not exist.
    NotFound,
    /// It conflicts with the current state (exists already, in use).
    Conflict,
    /// The agent failed (storage, disk).
    Internal,
}

impl OperationError {
    fn new(kind: OperationErrorKind, message: impl Into<String>) -> Self {
        OperationError {
            kind,
            message: message.into(),
        }
    }
}

impl From<StorageError> for OperationError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::DeviceExists(_) => {
                OperationError::new(OperationErrorKind::Conflict, error.to_string())
            }
            StorageError::UnknownDevice(_) => {
                OperationError::new(OperationErrorKind::NotFound, error.to_string())
            }
            other => OperationError::new(OperationErrorKind::Internal, other.to_string()),
        }
    }
}

impl From<CacheError> for OperationError {
    fn from(error: CacheError) -> Self {
        let kind = match error {
            CacheError::Io { .. } | CacheError::Storage(_) => OperationErrorKind::Internal,
            _ => OperationErrorKind::Invalid,
        };
        OperationError::new(kind, error.to_string())
    }
}

/// The loop's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// Traffic counters since start.
    pub counters: ServiceCounters,
    /// TX_ACK errors since start by the gateway's error name (TOO_LATE, ...).
    pub tx_ack_errors_by_kind: std::collections::BTreeMap<String, u64>,
    /// Gateways heard since start, with their transmitters' duty-cycle use.
    pub gateways: Vec<GatewayStatus>,
}

/// One gateway's transmitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayStatus {
    /// The gateway.
    pub gateway_eui: GatewayEui,
    /// Duty-cycle use per regulatory band, over the band's window ending now.
    pub bands: Vec<BandStatus>,
}

/// One band's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BandStatus {
    /// The band ("868.0-868.6 MHz").
    pub band: String,
    /// Airtime used in the window, µs.
    pub used_us: u64,
    /// Budget of the window, µs (`None`: no duty-cycle limit).
    pub budget_us: Option<u64>,
}

impl<T: Transport> Service<T> {
    pub(super) fn on_operation(&mut self, operation: Operation) {
        // An asker that has gone away loses only its answer; the change is committed.
        match operation {
            Operation::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Operation::AddDevices(devices, reply) => {
                let _ = reply.send(self.add_devices(&devices));
            }
            Operation::RemoveDevice(dev_eui, reply) => {
                let _ = reply.send(self.remove_device(dev_eui));
            }
            Operation::ImportImage { bytes, name, reply } => {
                let _ = reply.send(self.import_image(&bytes, &name));
            }
            Operation::RemoveImage(sha256, reply) => {
                let _ = reply.send(self.remove_image(&sha256));
            }
            Operation::ReplaceTrustStore(trust, reply) => {
                if let Some(engine) = self.campaigns.as_mut() {
                    engine.set_trust_store(trust);
                }
                let _ = reply.send(());
            }
        }
    }

    fn status(&mut self) -> ServiceStatus {
        let mut gateways: Vec<GatewayEui> = self.schedulers.keys().copied().collect();
        gateways.sort();
        let gateways = gateways
            .into_iter()
            .map(|gateway_eui| GatewayStatus {
                gateway_eui,
                bands: self
                    .duty_cycle_usage(gateway_eui)
                    .into_iter()
                    .map(|usage| BandStatus {
                        band: usage.band.name.to_string(),
                        used_us: usage.used_us,
                        budget_us: usage.budget_us,
                    })
                    .collect(),
            })
            .collect();
        ServiceStatus {
            counters: self.counters,
            tx_ack_errors_by_kind: self.tx_ack_errors_by_kind.clone(),
            gateways,
        }
    }

    fn add_devices(&mut self, devices: &[Device]) -> Result<(), OperationError> {
        let now = self.clock.wall_now();
        self.storage.write(|tx| {
            for device in devices {
                tx.insert_device(device, now)?;
            }
            Ok(())
        })?;
        for device in devices {
            self.server.ownership().add_device(device.dev_eui);
        }
        Ok(())
    }

    fn remove_device(&mut self, dev_eui: DevEui) -> Result<(), OperationError> {
        if let Some(campaign) = self.storage.active_campaigns_of(dev_eui)?.first() {
            return Err(OperationError::new(
                OperationErrorKind::Conflict,
                format!(
                    "device {dev_eui} is in campaign {campaign}, which is still active: cancel \
                     the campaign or wait for it to finish"
                ),
            ));
        }
        let now = self.clock.wall_now();
        self.storage.write(|tx| tx.remove_device(dev_eui, now))?;
        self.server.ownership().remove_device(dev_eui);
        Ok(())
    }

    fn import_image(&mut self, bytes: &[u8], name: &str) -> Result<ImportedImage, OperationError> {
        let Some(engine) = self.campaigns.as_ref() else {
            return Err(OperationError::new(
                OperationErrorKind::Internal,
                "this agent runs without its campaign engine and image cache",
            ));
        };
        let now = self.clock.wall_now();
        let outcome = engine
            .cache()
            .import_mcuboot(&mut self.storage, bytes, name, now)?;
        Ok(match outcome {
            ImportOutcome::Imported(image) => ImportedImage {
                already_cached: false,
                image,
            },
            ImportOutcome::AlreadyCached(image) => ImportedImage {
                already_cached: true,
                image,
            },
        })
    }

    fn remove_image(&mut self, sha256: &str) -> Result<(), OperationError> {
        let Some(engine) = self.campaigns.as_ref() else {
            return Err(OperationError::new(
                OperationErrorKind::Internal,
                "this agent runs without its campaign engine and image cache",
            ));
        };
        if let Some(campaign) = self
            .storage
            .campaigns()?
            .into_iter()
            .find(|campaign| campaign.state.is_active() && campaign.image_sha256 == sha256)
        {
            return Err(OperationError::new(
                OperationErrorKind::Conflict,
                format!(
                    "image {sha256} is used by campaign {} ({}), which is still active: cancel \
                     the campaign or wait for it to finish",
                    campaign.id, campaign.name
                ),
            ));
        }
        let now = self.clock.wall_now();
        if engine.cache().remove(&mut self.storage, sha256, now)? {
            Ok(())
        } else {
            Err(OperationError::new(
                OperationErrorKind::NotFound,
                format!("no cached image has SHA-256 {sha256}; `fuotactl image list` shows them"),
            ))
        }
    }
}
