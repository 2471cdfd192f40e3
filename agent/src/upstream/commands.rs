//! Commands from the fleet backend: `<prefix>/command/<name>` messages, validated,
//! applied once by id through the core loop (the same operations as the local API),
//! and answered with a `command_response` event, published on `<prefix>/response`
//! through the outbox (so an answer survives an outage like every other event).
//!
//! Every command is a JSON object with an `id` (1 to 128 characters, unique per
//! command; a retried command keeps its id) and the fields of its kind:
//!
//! | Command | Fields |
//! |---|---|
//! | `add_devices` | `devices`: devices as `POST /v1/devices` takes them |
//! | `remove_device` | `dev_eui` |
//! | `create_campaign` | `campaign`: as `POST /v1/campaigns` takes it; `start` (bool, default false) |
//! | `start_campaign`, `pause_campaign`, `resume_campaign`, `cancel_campaign` | `campaign`: its id |
//! | `announce_image` | `url` (https), `sha256`, `size`, `name`, `version` (optional): download it ([`super::download`]) |
//!
//! Applying a command twice does no more than once: devices already registered with
//! the same keys are left as they are, removing a device that is gone succeeds,
//! starting a running campaign or cancelling a cancelled one succeeds, and a campaign
//! creation interrupted by a crash finds the campaign it created (same name and image,
//! created after the command arrived) instead of creating another.

use serde::Deserialize;
use serde_json::{json, Value};

use super::download::{announcement, DownloadQueue};
use crate::api::device_from_request;
use crate::api::views::NewDevice;
use crate::campaign::{CampaignError, CampaignId, CampaignSpec, CampaignState};
use crate::clock::WallTime;
use crate::identifiers::DevEui;
use crate::service::campaigns::CampaignRequest;
use crate::service::operations::{Operation, OperationError, OperationErrorKind};
use crate::service::{ServiceCommand, ServiceHandle};
use crate::storage::image_downloads::AnnouncedImage;
use crate::storage::outbox::Outbox;
use crate::storage::upstream_commands::CommandRecord;
use crate::storage::{Device, Storage, StorageError};

/// The commands, by topic name.
pub const COMMANDS: [&str; 8] = [
    "add_devices",
    "announce_image",
    "remove_device",
    "create_campaign",
    "start_campaign",
    "pause_campaign",
    "resume_campaign",
    "cancel_campaign",
];

/// Longest command id.
pub const MAX_COMMAND_ID: usize = 128;

/// A command, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamCommand {
    /// Register devices (all or none).
    AddDevices(Vec<Device>),
    /// Remove a device.
    RemoveDevice(DevEui),
    /// Create a campaign, and start it if asked.
    CreateCampaign {
        /// The campaign.
        spec: Box<CampaignSpec>,
        /// Start it at once.
        start: bool,
    },
    /// Download an image into the cache.
    AnnounceImage(AnnouncedImage),
    /// Start, pause, resume or cancel a campaign.
    CampaignAction {
        /// `start`, `pause`, `resume` or `cancel`.
        action: CampaignAction,
        /// The campaign.
        campaign: CampaignId,
    },
}

/// What to do to a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignAction {
    /// Start a created campaign.
    Start,
    /// Pause a running one.
    Pause,
    /// Resume a paused one.
    Resume,
    /// Cancel it.
    Cancel,
}

/// A command as received: its id, its name, and the command or why it is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCommand {
    /// The `id` field, if it could be read.
    pub id: Option<String>,
    /// The command name (the last topic level).
    pub name: String,
    /// The command, or why it cannot be applied.
    pub command: Result<UpstreamCommand, String>,
}

#[derive(Deserialize)]
struct CommandId {
    id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDevicesBody {
    #[allow(dead_code)]
    id: String,
    devices: Vec<NewDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveDeviceBody {
    #[allow(dead_code)]
    id: String,
    dev_eui: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCampaignBody {
    #[allow(dead_code)]
    id: String,
    campaign: CampaignSpec,
    #[serde(default)]
    start: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnounceImageBody {
    #[allow(dead_code)]
    id: String,
    url: String,
    sha256: String,
    size: u64,
    name: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignActionBody {
    #[allow(dead_code)]
    id: String,
    campaign: CampaignId,
}

/// Reads the command `name` from `payload`. Never fails: a command that cannot be
/// applied carries the reason, to be answered.
pub fn parse(name: &str, payload: &[u8]) -> ReceivedCommand {
    let id = serde_json::from_slice::<CommandId>(payload)
        .ok()
        .and_then(|command| match command.id {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_COMMAND_ID => Some(id),
            _ => None,
        });
    let command = if id.is_none() {
        Err(format!(
            "the command has no usable \"id\": a string of 1 to {MAX_COMMAND_ID} characters, unique per command, is required"
        ))
    } else {
        parse_body(name, payload)
    };
    ReceivedCommand {
        id,
        name: name.to_string(),
        command,
    }
}

fn body<'a, T: Deserialize<'a>>(name: &str, payload: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|error| format!("{name}: {error}"))
}

fn parse_body(name: &str, payload: &[u8]) -> Result<UpstreamCommand, String> {
    let action = |action| -> Result<UpstreamCommand, String> {
        let body: CampaignActionBody = body(name, payload)?;
        Ok(UpstreamCommand::CampaignAction {
            action,
            campaign: body.campaign,
        })
    };
    match name {
        "add_devices" => {
            let body: AddDevicesBody = body(name, payload)?;
            if body.devices.is_empty() {
                return Err("add_devices: \"devices\" is empty".into());
            }
            let devices = body
                .devices
                .iter()
                .enumerate()
                .map(|(index, device)| {
                    device_from_request(device)
                        .map_err(|error| format!("add_devices: devices[{index}]: {error}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(UpstreamCommand::AddDevices(devices))
        }
        "remove_device" => {
            let body: RemoveDeviceBody = body(name, payload)?;
            let dev_eui = body
                .dev_eui
                .parse()
                .map_err(|error| format!("remove_device: dev_eui {:?}: {error}", body.dev_eui))?;
            Ok(UpstreamCommand::RemoveDevice(dev_eui))
        }
        "create_campaign" => {
            let body: CreateCampaignBody = body(name, payload)?;
            Ok(UpstreamCommand::CreateCampaign {
                spec: Box::new(body.campaign),
                start: body.start,
            })
        }
        "announce_image" => {
            let body: AnnounceImageBody = body(name, payload)?;
            let image = announcement(body.url, &body.sha256, body.size, body.name, body.version)
                .map_err(|reason| format!("announce_image: {reason}"))?;
            Ok(UpstreamCommand::AnnounceImage(image))
        }
        "start_campaign" => action(CampaignAction::Start),
        "pause_campaign" => action(CampaignAction::Pause),
        "resume_campaign" => action(CampaignAction::Resume),
        "cancel_campaign" => action(CampaignAction::Cancel),
        other => Err(format!(
            "unknown command {other:?}: the commands are {}",
            COMMANDS.join(", ")
        )),
    }
}

/// Why a command failed, for its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailure {
    /// `invalid`, `not_found`, `conflict` or `internal`.
    pub kind: &'static str,
    /// What was wrong and what to do.
    pub message: String,
}

impl CommandFailure {
    fn invalid(message: impl Into<String>) -> Self {
        CommandFailure {
            kind: "invalid",
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        CommandFailure {
            kind: "internal",
            message: message.into(),
        }
    }

    fn stopped() -> Self {
        CommandFailure::internal("the agent is shutting down; send the command again later")
    }
}

impl From<OperationError> for CommandFailure {
    fn from(error: OperationError) -> Self {
        let kind = match error.kind {
            OperationErrorKind::Invalid => "invalid",
            OperationErrorKind::NotFound => "not_found",
            OperationErrorKind::Conflict => "conflict",
            OperationErrorKind::Internal => "internal",
        };
        CommandFailure {
            kind,
            message: error.message,
        }
    }
}

impl From<CampaignError> for CommandFailure {
    fn from(error: CampaignError) -> Self {
        let kind = match &error {
            CampaignError::UnknownCampaign(_) => "not_found",
            CampaignError::DeviceBusy { .. } | CampaignError::InvalidState { .. } => "conflict",
            CampaignError::Storage(_)
            | CampaignError::Random(_)
            | CampaignError::NoGpsTime
            | CampaignError::GroupFCntExhausted(_) => "internal",
            _ => "invalid",
        };
        CommandFailure {
            kind,
            message: error.to_string(),
        }
    }
}

impl From<StorageError> for CommandFailure {
    fn from(error: StorageError) -> Self {
        CommandFailure::internal(error.to_string())
    }
}

/// Applies commands through the core loop and records their answers.
pub struct CommandProcessor {
    handle: ServiceHandle,
    downloads: Option<DownloadQueue>,
    /// Behind a mutex so the processor can be shared by the publisher's task; only
    /// locked between awaits.
    reader: std::sync::Mutex<Storage>,
}

impl CommandProcessor {
    /// A processor that applies commands through `handle`, reading the registry and
    /// the campaigns through `reader` (a read-only connection).
    pub fn new(handle: ServiceHandle, reader: Storage) -> Self {
        CommandProcessor {
            handle,
            downloads: None,
            reader: std::sync::Mutex::new(reader),
        }
    }

    /// Accepts `announce_image`, queueing downloads on `downloads`.
    pub fn with_downloads(mut self, downloads: DownloadQueue) -> Self {
        self.downloads = Some(downloads);
        self
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Storage> {
        // Reads only: a panic while it was held left nothing half-done.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Handles one command message: applies it unless its id was seen, and records
    /// the answer (a `command_response` event) in `outbox`. Returns the response. An
    /// error means the answer could not be recorded: the message must not be
    /// acknowledged, so the broker delivers it again.
    pub async fn process(
        &self,
        outbox: &mut Outbox,
        name: &str,
        payload: &[u8],
        now: WallTime,
    ) -> Result<Value, StorageError> {
        let received = parse(name, payload);
        let id = received.id.clone();
        let mut interrupted_at_ms = None;
        if let Some(id) = &id {
            match outbox.command_record(id)? {
                Some(CommandRecord::Answered { response }) => {
                    outbox.answer_command(Some(id), &response, true, now)?;
                    return Ok(response);
                }
                Some(CommandRecord::Applying { received_at_ms }) => {
                    interrupted_at_ms = Some(received_at_ms);
                }
                None => outbox.begin_command(id, name, now)?,
            }
        }
        let outcome = match received.command {
            Err(reason) => Err(CommandFailure::invalid(reason)),
            Ok(command) => {
                tracing::info!(
                    command = name,
                    command_id = id.as_deref().unwrap_or(""),
                    "command from upstream"
                );
                self.apply(command, interrupted_at_ms).await
            }
        };
        let response = match outcome {
            Ok(result) => json!({
                "command_id": id,
                "command": name,
                "ok": true,
                "result": result,
                "error": null,
            }),
            Err(failure) => {
                tracing::warn!(
                    command = name,
                    command_id = id.as_deref().unwrap_or(""),
                    "command from upstream refused: {}",
                    failure.message
                );
                json!({
                    "command_id": id,
                    "command": name,
                    "ok": false,
                    "result": null,
                    "error": { "kind": failure.kind, "message": failure.message },
                })
            }
        };
        outbox.answer_command(id.as_deref(), &response, false, now)?;
        Ok(response)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> ServiceCommand,
    ) -> Result<T, CommandFailure> {
        crate::api::ask(&self.handle, command)
            .await
            .ok_or_else(CommandFailure::stopped)
    }

    /// Applies `command`; `interrupted_at_ms` when an earlier attempt was cut short.
    async fn apply(
        &self,
        command: UpstreamCommand,
        interrupted_at_ms: Option<i64>,
    ) -> Result<Value, CommandFailure> {
        match command {
            UpstreamCommand::AddDevices(devices) => {
                let mut new = Vec::new();
                let mut already = Vec::new();
                for device in devices {
                    match self.reader().device(device.dev_eui)? {
                        None => new.push(device),
                        Some(known) if same_identity(&known, &device) => {
                            already.push(device.dev_eui.to_string());
                        }
                        Some(_) => {
                            return Err(CommandFailure {
                                kind: "conflict",
                                message: format!(
                                    "device {} is registered with other keys or versions: remove it first",
                                    device.dev_eui
                                ),
                            })
                        }
                    }
                }
                let added: Vec<String> = new
                    .iter()
                    .map(|device| device.dev_eui.to_string())
                    .collect();
                if !new.is_empty() {
                    self.ask(|reply| ServiceCommand::Operation(Operation::AddDevices(new, reply)))
                        .await??;
                }
                Ok(json!({ "added": added, "already_registered": already }))
            }
            UpstreamCommand::RemoveDevice(dev_eui) => {
                if self.reader().device(dev_eui)?.is_none() {
                    return Ok(json!({ "removed": false, "already_absent": true }));
                }
                self.ask(|reply| {
                    ServiceCommand::Operation(Operation::RemoveDevice(dev_eui, reply))
                })
                .await??;
                Ok(json!({ "removed": true, "already_absent": false }))
            }
            UpstreamCommand::CreateCampaign { spec, start } => {
                let existing = match interrupted_at_ms {
                    None => None,
                    Some(received_at_ms) => self
                        .reader()
                        .campaigns()?
                        .into_iter()
                        .find(|campaign| {
                            campaign.name == spec.name
                                && campaign.image_sha256 == spec.image_sha256
                                && campaign.created_at_ms >= received_at_ms
                        })
                        .map(|campaign| campaign.id),
                };
                let id = match existing {
                    Some(id) => id,
                    None => {
                        self.ask(|reply| ServiceCommand::Campaign {
                            request: CampaignRequest::Create(spec),
                            reply,
                        })
                        .await??
                    }
                };
                if start {
                    self.campaign_action(CampaignAction::Start, id).await?;
                }
                self.campaign_answer(id)
            }
            UpstreamCommand::CampaignAction { action, campaign } => {
                self.campaign_action(action, campaign).await?;
                self.campaign_answer(campaign)
            }
            UpstreamCommand::AnnounceImage(image) => {
                if self.reader().firmware_image(&image.sha256)?.is_some() {
                    return Ok(json!({ "image": image.sha256, "already_cached": true }));
                }
                let Some(downloads) = &self.downloads else {
                    return Err(CommandFailure::invalid(
                        "this agent does not download images (no download queue)",
                    ));
                };
                let (download, new) = downloads.announce(&image)?;
                Ok(json!({
                    "image": image.sha256,
                    "already_cached": false,
                    "download": download.id,
                    "state": download.state,
                    "already_downloading": !new,
                }))
            }
        }
    }

    /// Starts, pauses, resumes or cancels; a campaign already in the state asked for
    /// is left as it is.
    async fn campaign_action(
        &self,
        action: CampaignAction,
        id: CampaignId,
    ) -> Result<(), CommandFailure> {
        let state = self
            .reader()
            .campaign(id)?
            .map(|campaign| campaign.state)
            .ok_or_else(|| CommandFailure::from(CampaignError::UnknownCampaign(id)))?;
        let done = match action {
            CampaignAction::Start | CampaignAction::Resume => {
                matches!(state, CampaignState::Running | CampaignState::Finished)
            }
            CampaignAction::Pause => state == CampaignState::Paused,
            CampaignAction::Cancel => {
                matches!(state, CampaignState::Cancelled | CampaignState::Finished)
            }
        };
        if done {
            return Ok(());
        }
        let request = match action {
            CampaignAction::Start => CampaignRequest::Start(id),
            CampaignAction::Pause => CampaignRequest::Pause(id),
            CampaignAction::Resume => CampaignRequest::Resume(id),
            CampaignAction::Cancel => CampaignRequest::Cancel(id),
        };
        self.ask(|reply| ServiceCommand::Campaign { request, reply })
            .await??;
        Ok(())
    }

    fn campaign_answer(&self, id: CampaignId) -> Result<Value, CommandFailure> {
        let campaign = self
            .reader()
            .campaign(id)?
            .ok_or_else(|| CommandFailure::from(CampaignError::UnknownCampaign(id)))?;
        Ok(json!({ "campaign": id, "state": campaign.state }))
    }
}

/// Whether two registrations are the same device with the same keys.
fn same_identity(known: &Device, wanted: &Device) -> bool {
    known.join_eui == wanted.join_eui
        && known.app_key == wanted.app_key
        && known.nwk_key == wanted.nwk_key
        && known.gen_app_key == wanted.gen_app_key
        && known.mac_version == wanted.mac_version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_with_their_id_and_mistakes_are_named() {
        let received = parse(
            "remove_device",
            br#"{"id":"c-1","dev_eui":"0016c001ff10a235"}"#,
        );
        assert_eq!(received.id.as_deref(), Some("c-1"));
        assert_eq!(
            received.command,
            Ok(UpstreamCommand::RemoveDevice(DevEui::from(
                0x0016_c001_ff10_a235
            )))
        );
        let received = parse("cancel_campaign", br#"{"id":"c-2","campaign":7}"#);
        assert_eq!(
            received.command,
            Ok(UpstreamCommand::CampaignAction {
                action: CampaignAction::Cancel,
                campaign: 7
            })
        );

        let no_id = parse("remove_device", br#"{"dev_eui":"0016c001ff10a235"}"#);
        assert_eq!(no_id.id, None);
        assert!(no_id.command.unwrap_err().contains("\"id\""));
        let long_id = format!(r#"{{"id":"{}","campaign":1}}"#, "x".repeat(129));
        assert_eq!(parse("start_campaign", long_id.as_bytes()).id, None);
        let not_json = parse("remove_device", b"remove it");
        assert_eq!(not_json.id, None);

        let unknown = parse("reboot_gateway", br#"{"id":"c-3"}"#);
        assert_eq!(unknown.id.as_deref(), Some("c-3"));
        assert!(unknown.command.unwrap_err().contains("add_devices"));
        let extra = parse(
            "start_campaign",
            br#"{"id":"c-4","campaign":1,"force":true}"#,
        );
        assert!(extra.command.unwrap_err().contains("unknown field `force`"));
        let bad_eui = parse("remove_device", br#"{"id":"c-5","dev_eui":"xyz"}"#);
        assert!(bad_eui.command.unwrap_err().contains("dev_eui \"xyz\""));
        let bad_key = parse(
            "add_devices",
            br#"{"id":"c-6","devices":[{"dev_eui":"0016c001ff10a235","join_eui":"70b3d57ed0050000","mac_version":"1.0.4","app_key":"00"}]}"#,
        );
        assert!(bad_key.command.unwrap_err().contains("devices[0]"));
    }
}
