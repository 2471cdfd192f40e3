//! FUOTA campaigns: planning ([`plan`]) and the persisted campaign state machine
//! ([`CampaignEngine`]) that takes a signed image to a set of devices with TS003 clock
//! sync, TS005 multicast setup, TS004 fragmentation and TS006 firmware management.
//!
//! - [`model`]: what a campaign is (spec, parameters, state, steps, per-device rows).
//! - [`engine`]: the sans-IO engine the service loop drives (uplinks, ticks, multicast
//!   outcomes in; [`CampaignAction`]s out), committing every change with its event.
//! - [`actions`]: the actions and outcomes exchanged with the network server.
//! - `device_steps` (each device's unicast steps), `phases` (the campaign-wide steps:
//!   Class C sessions, broadcast, status, repair), `work` (one pass over a campaign).

pub mod actions;
mod device_steps;
pub mod engine;
pub mod model;
mod phases;
pub mod plan;
mod work;

pub use actions::{
    CampaignAction, MulticastFrame, MulticastFrameId, MulticastOutcome, UnicastDownlink,
};
pub use engine::CampaignEngine;
pub use model::{
    Campaign, CampaignDevice, CampaignId, CampaignParameters, CampaignPhase, CampaignSpec,
    CampaignState, Delivery, DeliveryChoice, DeviceStatus, DeviceStep, ParameterOverrides, Targets,
};
pub use plan::{
    base_repair_margin, first_pass_loss, frames_to_deliver, loss_from_history, measured_loss, plan,
    repair_margin, repair_round_size, CampaignPlan, FirstPassLoss, PlanError, PlanInputs,
    ReceptionRecord, Redundancy, RepairNeed,
};

use crate::firmware::cache::CacheError;
use crate::identifiers::DevEui;
use crate::storage::StorageError;

/// Why a campaign operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The image cannot be loaded (not cached, damaged, no longer trusted).
    #[error("campaign image: {0}")]
    Image(#[from] CacheError),
    /// The campaign cannot be planned (the error carries the plan's figures).
    #[error("the campaign cannot be done: {0}")]
    Plan(#[from] PlanError),
    /// No campaign has this id.
    #[error("no campaign {0}")]
    UnknownCampaign(CampaignId),
    /// A target device is not registered.
    #[error("device {0} is not registered")]
    UnknownDevice(DevEui),
    /// No registered device matches the targets.
    #[error("no registered device matches the targets {0:?}")]
    NoTargets(Targets),
    /// A target device is already in an active campaign.
    #[error("device {dev_eui} is already in campaign {campaign}, which is still active")]
    DeviceBusy {
        /// The device.
        dev_eui: DevEui,
        /// The campaign it is in.
        campaign: CampaignId,
    },
    /// The image does not say which TS006 version it installs.
    #[error(
        "image {0} has no TS006 version: it cannot be checked against the devices' versions \
         (import it with a version)"
    )]
    ImageWithoutVersion(String),
    /// The operation does not apply in the campaign's state.
    #[error("campaign {id} is {state}: cannot {action} it")]
    InvalidState {
        /// The campaign.
        id: CampaignId,
        /// Its state.
        state: CampaignState,
        /// What was asked.
        action: &'static str,
    },
    /// A parameter is out of range.
    #[error("invalid campaign parameter: {0}")]
    InvalidParameter(String),
    /// A command could not be encoded (a parameter out of its field's range).
    #[error("encoding a command: {0}")]
    Encode(String),
    /// The agent's clock is before the GPS epoch.
    #[error("the agent's clock is before 1980: GPS times cannot be computed")]
    NoGpsTime,
    /// No random key could be drawn.
    #[error("drawing the multicast group key: {0}")]
    Random(String),
    /// Every 32-bit group FCnt was used.
    #[error("campaign {0} has used every multicast FCnt")]
    GroupFCntExhausted(CampaignId),
}
