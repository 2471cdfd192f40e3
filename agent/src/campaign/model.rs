//! The campaign data model: what an operator asks for ([`CampaignSpec`]), the
//! parameters a campaign runs on ([`CampaignParameters`]), the campaign's state and
//! current step ([`CampaignState`], [`CampaignPhase`]), and each device's row
//! ([`CampaignDevice`]: result, step, the request waiting for an answer, what was learnt).
//!
//! Everything here is plain data with serde forms: the storage layer keeps the steps and
//! parameters as JSON columns (readable with the `sqlite3` shell), the engine
//! ([`super::engine`]) moves them forward.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::identifiers::DevEui;

/// A campaign's row id.
pub type CampaignId = i64;

/// Which devices a campaign is for. Resolved against the registry when the campaign is
/// created; the resolved list is what the campaign keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Targets {
    /// These devices.
    Devices {
        /// Their DevEUIs.
        dev_euis: Vec<DevEui>,
    },
    /// Every registered device with this hardware version (as the registry writes it).
    HardwareVersion {
        /// The registry's hardware version text.
        hardware_version: String,
    },
    /// Every registered device carrying this tag.
    Tag {
        /// Tag name.
        key: String,
        /// Tag value.
        value: String,
    },
}

/// How the image travels, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryChoice {
    /// Unicast for a single device, multicast otherwise.
    #[default]
    Auto,
    /// A Class C multicast session for all devices.
    Multicast,
    /// Each device's own Class A downlinks, one fragment per uplink.
    Unicast,
}

/// How the image travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// One Class C multicast group session (TS005) for every device.
    Multicast,
    /// Fragments as each device's own downlinks.
    Unicast,
}

impl Delivery {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Delivery::Multicast => "multicast",
            Delivery::Unicast => "unicast",
        }
    }
}

impl FromStr for Delivery {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "multicast" => Ok(Delivery::Multicast),
            "unicast" => Ok(Delivery::Unicast),
            other => Err(format!(
                "unknown delivery {other:?} (expected multicast or unicast)"
            )),
        }
    }
}

/// Parameters an operator may set instead of the planned or default ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ParameterOverrides {
    /// Data rate of the multicast frames (default: the region's Class C default).
    pub data_rate: Option<u8>,
    /// Frequency of the multicast frames, Hz (default: the region's Class C default).
    pub frequency_hz: Option<u32>,
    /// Fragment size, bytes (default: the largest the data rate carries).
    pub fragment_size: Option<usize>,
    /// First-pass coded fragments as a fixed percentage of the uncoded ones (default:
    /// adaptive, from `expected_loss_percent`).
    pub fixed_redundancy_percent: Option<u16>,
    /// Loss the first pass and repair rounds are sized for, percent (default 10).
    pub expected_loss_percent: Option<u8>,
    /// Retries of each unicast request (default 15).
    pub max_retries: Option<u32>,
    /// A device that answers nothing for this long while a request waits ends
    /// `Timeout` (default 2 h).
    pub device_timeout_s: Option<u64>,
    /// Longest time the setup steps may take before the first session (default 6 h).
    pub setup_timeout_s: Option<u64>,
    /// Time between scheduling a Class C session and its start, for every device to
    /// get McClassCSessionReq in a Class A window (default 15 min).
    pub session_lead_s: Option<u64>,
    /// TS004 BlockAckDelay (0..=7): devices spread status answers over
    /// 2^(BlockAckDelay+4) s (default 1: 32 s).
    pub block_ack_delay: Option<u8>,
    /// Repair rounds after the first pass (default 3).
    pub max_repair_rounds: Option<u32>,
    /// Delay between the reboot request and the reboot (default 60 s).
    pub reboot_delay_s: Option<u64>,
    /// Time a rebooted device gets before its version is asked (default 60 s).
    pub reboot_grace_s: Option<u64>,
    /// McGroupID (0..=3, default 0).
    pub mc_group_id: Option<u8>,
    /// FragIndex (0..=3, default 0).
    pub frag_index: Option<u8>,
    /// McAddr of the group (default: [`DEFAULT_MC_ADDR_BASE`] + campaign id).
    pub mc_addr: Option<u32>,
}

/// Default McAddr of a campaign's group: this base plus the campaign id (NetID 0's
/// address space, above what the network server hands out to joined devices).
pub const DEFAULT_MC_ADDR_BASE: u32 = 0x01ff_0000;

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// A name for people.
    pub name: String,
    /// The image: the SHA-256 of a cached image.
    pub image_sha256: String,
    /// The devices.
    pub targets: Targets,
    /// How the image travels.
    #[serde(default)]
    pub delivery: DeliveryChoice,
    /// Parameters to set instead of the planned ones.
    #[serde(default)]
    pub overrides: ParameterOverrides,
}

/// The parameters a campaign runs on: the plan's figures with the overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignParameters {
    /// Data rate of the multicast frames.
    pub data_rate: u8,
    /// Frequency of the multicast frames, Hz.
    pub frequency_hz: u32,
    /// FragSize.
    pub fragment_size: u16,
    /// NbFrag (M).
    pub fragments: u16,
    /// Padding of the last fragment.
    pub padding: u8,
    /// Coded fragments of the first pass.
    pub first_pass_coded: u16,
    /// Concentrator time of one fragment frame (airtime and guard), µs.
    pub frame_slot_us: u64,
    /// Time on air of one fragment frame, µs.
    pub frame_airtime_us: u64,
    /// Shortest time the first pass takes under the duty cycle, µs.
    pub first_pass_duration_us: u64,
    /// Class C SessionTimeOut exponent of the first session.
    pub session_timeout_exponent: u8,
    /// Class C sessions the first pass needs.
    pub sessions_needed: u32,
    /// Loss expected before anything is measured, percent: the adaptive first pass is
    /// sized for it, and repair rounds use it for devices whose own loss is unknown.
    pub expected_loss_percent: u8,
    /// Retries of each unicast request.
    pub max_retries: u32,
    /// Silence after which a device waiting for an answer ends `Timeout`, s.
    pub device_timeout_s: u64,
    /// Longest setup before the first session, s.
    pub setup_timeout_s: u64,
    /// Lead time of a Class C session, s.
    pub session_lead_s: u64,
    /// TS004 BlockAckDelay.
    pub block_ack_delay: u8,
    /// Repair rounds after the first pass.
    pub max_repair_rounds: u32,
    /// Reboot delay, s.
    pub reboot_delay_s: u64,
    /// Grace after the reboot before the version is asked, s.
    pub reboot_grace_s: u64,
    /// McGroupID.
    pub mc_group_id: u8,
    /// FragIndex.
    pub frag_index: u8,
}

impl CampaignParameters {
    /// How long devices may spread their status answers, s: 2^(BlockAckDelay+4).
    pub fn status_spread_s(&self) -> u64 {
        1u64 << (u32::from(self.block_ack_delay.min(7)) + 4)
    }

    /// The last fragment number a block may use (FragIndex N is 14 bits).
    pub fn last_fragment_number(&self) -> u16 {
        super::plan::MAX_FRAGMENT_INDEX as u16
    }
}

/// A campaign's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Created, not started.
    Created,
    /// Sending and listening.
    Running,
    /// Stopped by the operator: nothing is sent, inputs are ignored, no time runs out;
    /// on resume, waiting requests are sent again and deadlines move by the pause.
    Paused,
    /// Stopped for good by the operator; unfinished devices end `Cancelled`.
    Cancelled,
    /// Every device has its result.
    Finished,
}

impl CampaignState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CampaignState::Created => "created",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Finished => "finished",
        }
    }

    /// Whether the campaign still holds its devices (created, running or paused).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            CampaignState::Created | CampaignState::Running | CampaignState::Paused
        )
    }
}

impl FromStr for CampaignState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "created" => Ok(CampaignState::Created),
            "running" => Ok(CampaignState::Running),
            "paused" => Ok(CampaignState::Paused),
            "cancelled" => Ok(CampaignState::Cancelled),
            "finished" => Ok(CampaignState::Finished),
            other => Err(format!("unknown campaign state {other:?}")),
        }
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The campaign-wide step. Per-device steps run beside it ([`DeviceStep`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum CampaignPhase {
    /// Devices run their setup steps (versions, clock, group, fragmentation session).
    Setup {
        /// When the setup ends for the devices not ready yet (Unix ms).
        deadline_ms: i64,
    },
    /// A Class C session is scheduled: the ready devices get McClassCSessionReq.
    SessionScheduling {
        /// Start of the session (Unix ms; a whole GPS second).
        start_ms: i64,
        /// Its SessionTimeOut exponent.
        timeout_exponent: u8,
    },
    /// Fragments go out on the group.
    Broadcast {
        /// End of the session (Unix ms).
        end_ms: i64,
        /// Last fragment number of this round.
        round_end: u16,
    },
    /// A FragSessionStatusReq went out; answers are collected.
    Status {
        /// End of the session (Unix ms).
        end_ms: i64,
        /// The multicast request has been handed out.
        requested: bool,
        /// When the answers are counted (Unix ms; set once the request went out).
        deadline_ms: Option<i64>,
    },
    /// No more multicast: devices finish their own steps.
    Finishing,
    /// Every device has its result.
    Done,
}

impl CampaignPhase {
    /// A short name for events and reports.
    pub const fn name(&self) -> &'static str {
        match self {
            CampaignPhase::Setup { .. } => "setup",
            CampaignPhase::SessionScheduling { .. } => "session_scheduling",
            CampaignPhase::Broadcast { .. } => "broadcast",
            CampaignPhase::Status { .. } => "status",
            CampaignPhase::Finishing => "finishing",
            CampaignPhase::Done => "done",
        }
    }
}

/// The campaign-wide progress, stored as one JSON column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignProgress {
    /// The current step.
    pub phase: CampaignPhase,
    /// Class C sessions scheduled so far.
    pub sessions: u32,
    /// Repair rounds started so far.
    pub repair_rounds: u32,
    /// Next fragment number to send on the group (1-based; above M: coded).
    pub next_fragment: u16,
    /// Last fragment number of the current round (first pass or repair).
    #[serde(default)]
    pub round_end: u16,
    /// Uncoded fragments still to send again before the round's coded ones: TS004 v2
    /// parity rows all have the same weight, so a device that received no uncoded
    /// fragment at all cannot decode from coded ones alone (the rows are rank M - 1
    /// when that weight is even).
    #[serde(default)]
    pub uncoded_resends: u16,
    /// Earliest time of the next multicast frame (Unix ms): frames are spaced by the
    /// frame slot so that the scheduler gets them in order.
    pub next_frame_at_ms: i64,
    /// Multicast frames handed out.
    pub frames_emitted: u64,
    /// Of those, DataFragment frames (what a device's NbFragReceived counts).
    #[serde(default)]
    pub fragment_frames_emitted: u64,
    /// `fragment_frames_on_air()` when the current repair round was sized.
    #[serde(default)]
    pub round_started_on_air: u64,
    /// Frames of the current repair round (coded and uncoded resends).
    #[serde(default)]
    pub round_frames: u32,
    /// Repair rounds that did not count: most of their frames never went on the air.
    #[serde(default)]
    pub starved_rounds: u32,
    /// Multicast frames the network server reported sent.
    pub frames_sent: u64,
    /// Multicast frames the network server gave up on.
    pub frames_given_up: u64,
    /// TS004 version of the group's coded fragments (v1 and v2 parity rows differ):
    /// set when the first session is scheduled.
    #[serde(default)]
    pub fragmentation_version: Option<u8>,
    /// When the campaign was paused (Unix ms), while it is.
    #[serde(default)]
    pub paused_at_ms: Option<i64>,
}

impl CampaignProgress {
    /// DataFragment frames that went on the air: those handed out, less those the
    /// network server gave up on (counted as fragments: status requests are few).
    pub fn fragment_frames_on_air(&self) -> u64 {
        self.fragment_frames_emitted
            .saturating_sub(self.frames_given_up)
    }

    /// The progress of a campaign that has not started.
    pub fn new() -> Self {
        CampaignProgress {
            phase: CampaignPhase::Setup { deadline_ms: 0 },
            sessions: 0,
            repair_rounds: 0,
            next_fragment: 1,
            round_end: 0,
            uncoded_resends: 0,
            next_frame_at_ms: 0,
            frames_emitted: 0,
            fragment_frames_emitted: 0,
            round_started_on_air: 0,
            round_frames: 0,
            starved_rounds: 0,
            frames_sent: 0,
            frames_given_up: 0,
            fragmentation_version: None,
            paused_at_ms: None,
        }
    }
}

impl Default for CampaignProgress {
    fn default() -> Self {
        Self::new()
    }
}

/// A stored campaign (the McKey stays in storage and the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// Row id.
    pub id: CampaignId,
    /// Name.
    pub name: String,
    /// The image.
    pub image_sha256: String,
    /// TS006 version the image installs.
    pub target_version: u32,
    /// Hardware version the image is for, if it says.
    pub hardware_version: Option<u32>,
    /// How the targets were chosen.
    pub targets: Targets,
    /// How the image travels.
    pub delivery: Delivery,
    /// Parameters.
    pub parameters: CampaignParameters,
    /// Lifecycle state.
    pub state: CampaignState,
    /// Campaign-wide step and counters.
    pub progress: CampaignProgress,
    /// McAddr of the group.
    pub mc_addr: u32,
    /// Created (Unix ms).
    pub created_at_ms: i64,
    /// Last change (Unix ms).
    pub updated_at_ms: i64,
}

/// A device's result in a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// No result yet.
    InProgress,
    /// The new image runs and confirmed its version after the reboot.
    Successful,
    /// The device already ran the target version.
    AlreadyUpToDate,
    /// The device's hardware is not the image's (DevVersionAns, or DevUpgradeImageAns 2).
    WrongHardware,
    /// The device lacks a package (or a version of it) the campaign needs.
    PackageNotSupported,
    /// The device cannot hold the block or its decoder (FragSessionSetupAns, status).
    NotEnoughMemory,
    /// The rebuilt block failed its TS004 v2 MIC.
    MicError,
    /// Fragments were still missing when the repair rounds ran out.
    MissingFrag,
    /// The device stopped answering.
    Timeout,
    /// After the reboot the device runs another version (the image was refused or
    /// reverted), or the image it holds is not the target version.
    VersionMismatch,
    /// The device refused the multicast group or the Class C session (McGroupSetupAns
    /// IDerror, McClassCSessionAns DRError / FreqError / McGroupUndefined).
    MulticastSetupRefused,
    /// The device refused the fragmentation session (FragIndex unsupported, wrong
    /// descriptor, algorithm unsupported).
    FragSessionRefused,
    /// The block was rebuilt but is not an authentic image (DevUpgradeImageAns 1) or no
    /// image is there (0).
    ImageRejected,
    /// The device would not schedule the reboot.
    RebootRefused,
    /// The campaign was cancelled first.
    Cancelled,
}

impl DeviceStatus {
    /// Every status.
    pub const ALL: &'static [DeviceStatus] = &[
        DeviceStatus::InProgress,
        DeviceStatus::Successful,
        DeviceStatus::AlreadyUpToDate,
        DeviceStatus::WrongHardware,
        DeviceStatus::PackageNotSupported,
        DeviceStatus::NotEnoughMemory,
        DeviceStatus::MicError,
        DeviceStatus::MissingFrag,
        DeviceStatus::Timeout,
        DeviceStatus::VersionMismatch,
        DeviceStatus::MulticastSetupRefused,
        DeviceStatus::FragSessionRefused,
        DeviceStatus::ImageRejected,
        DeviceStatus::RebootRefused,
        DeviceStatus::Cancelled,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::InProgress => "in_progress",
            DeviceStatus::Successful => "successful",
            DeviceStatus::AlreadyUpToDate => "already_up_to_date",
            DeviceStatus::WrongHardware => "wrong_hardware",
            DeviceStatus::PackageNotSupported => "package_not_supported",
            DeviceStatus::NotEnoughMemory => "not_enough_memory",
            DeviceStatus::MicError => "mic_error",
            DeviceStatus::MissingFrag => "missing_frag",
            DeviceStatus::Timeout => "timeout",
            DeviceStatus::VersionMismatch => "version_mismatch",
            DeviceStatus::MulticastSetupRefused => "multicast_setup_refused",
            DeviceStatus::FragSessionRefused => "frag_session_refused",
            DeviceStatus::ImageRejected => "image_rejected",
            DeviceStatus::RebootRefused => "reboot_refused",
            DeviceStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for DeviceStatus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DeviceStatus::ALL
            .iter()
            .copied()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown device status {text:?}"))
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a device stands in a campaign. Steps with a unicast request wait for its
/// answer ([`PendingRequest`]); the others wait for the campaign or for time. Ordered
/// as a successful device goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStep {
    /// TS006 PackageVersionReq + DevVersionReq.
    DiscoverFirmware,
    /// TS005 PackageVersionReq.
    DiscoverMulticast,
    /// TS004 PackageVersionReq.
    DiscoverFragmentation,
    /// TS003 PackageVersionReq.
    DiscoverClockSync,
    /// TS003 ForceDeviceResync; the AppTimeReq it causes is answered.
    ClockSync,
    /// TS005 McGroupSetupReq.
    GroupSetup,
    /// TS004 FragSessionSetupReq.
    FragSessionSetup,
    /// Set up; waits for the campaign's next Class C session.
    ReadyForSession,
    /// TS005 McClassCSessionReq for the scheduled session.
    SessionSetup,
    /// In the Class C session, receiving fragments.
    Receiving,
    /// Unicast delivery: one fragment per uplink.
    UnicastFragments,
    /// TS004 FragSessionStatusReq by unicast.
    StatusQuery,
    /// TS006 DevUpgradeImageReq.
    UpgradeCheck,
    /// TS004 FragSessionDeleteReq.
    DeleteFragSession,
    /// TS005 McGroupDeleteReq.
    DeleteGroup,
    /// TS006 DevRebootTimeReq.
    ScheduleReboot,
    /// TS006 DevRebootCountdownReq (the device could not take a GPS time).
    ScheduleRebootCountdown,
    /// The reboot is programmed; waits for it.
    AwaitReboot,
    /// TS006 DevVersionReq after the reboot.
    ConfirmVersion,
    /// Nothing more to do.
    Done,
}

impl DeviceStep {
    /// The stored name.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A unicast request waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// When it was (last) handed to the network server (Unix ms).
    pub issued_ms: i64,
    /// Uplinks of the device seen since, without the answer. The request goes out in
    /// the window of the first one; from the second on, it is sent again.
    pub uplinks_without_answer: u32,
    /// Times it was sent.
    pub attempts: u32,
}

/// What the campaign learnt about a device, and its own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceFacts {
    /// TS003 version.
    pub clock_sync_version: Option<u8>,
    /// TS005 version.
    pub multicast_version: Option<u8>,
    /// TS004 version.
    pub fragmentation_version: Option<u8>,
    /// Firmware version before the campaign (DevVersionAns).
    pub firmware_version: Option<u32>,
    /// Hardware version (DevVersionAns).
    pub hardware_version: Option<u32>,
    /// The device's clock was corrected (an AppTimeReq answered).
    pub clock_synchronised: bool,
    /// TS004 v2 SessionCnt of this campaign's fragmentation session.
    pub session_cnt: Option<u16>,
    /// The Class C session the device accepted (start, Unix ms).
    pub session_start_ms: Option<i64>,
    /// Status answers count from this time on (Unix ms).
    pub status_since_ms: Option<i64>,
    /// A status answer arrived since `status_since_ms`.
    pub status_reported: bool,
    /// The block is complete on the device.
    pub block_complete: bool,
    /// The campaign's DataFragment frames on the air when the device's first Class C
    /// session was scheduled: the frames before it were not meant for it.
    pub fragment_frames_baseline: Option<u64>,
    /// NbFragReceived of its last status answer.
    pub fragments_received: Option<u32>,
    /// DataFragment frames on the air since its first session, as of that answer.
    pub fragments_offered: Option<u32>,
    /// That answer said the block was complete: the device stopped counting when it
    /// decoded, so the count understates its reception (`None`: recorded before this
    /// was kept; the row's missing count tells).
    pub fragments_counted_complete: Option<bool>,
    /// Unicast delivery: next fragment number to send.
    pub unicast_next_fragment: Option<u16>,
    /// Unicast delivery: last fragment number of the current round.
    pub unicast_round_end: Option<u16>,
    /// Unicast delivery: repair rounds done.
    pub unicast_repairs: u32,
    /// When the device reboots (Unix ms): asked for, then as it answered.
    pub reboot_at_ms: Option<i64>,
    /// The device answered the reboot request.
    pub reboot_acknowledged: bool,
    /// Reboot requests made again after a version check found the old version and no
    /// answer to the reboot request had come.
    pub reboot_requests: u32,
}

/// A device's row in a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDevice {
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The device.
    pub dev_eui: DevEui,
    /// Its result.
    pub status: DeviceStatus,
    /// Its step.
    pub step: DeviceStep,
    /// The unicast request waiting for an answer.
    pub pending: Option<PendingRequest>,
    /// What was learnt.
    pub facts: DeviceFacts,
    /// Retries so far (all steps).
    pub retries: u32,
    /// Last uplink (Unix ms).
    pub last_seen_ms: Option<i64>,
    /// Uncoded fragments still missing at the last status answer.
    pub missing: Option<u32>,
    /// The last error, in words.
    pub last_error: Option<String>,
}

/// The step column's JSON: the step with its pending request and facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDeviceStep {
    /// The step.
    pub step: DeviceStep,
    /// The request waiting for an answer.
    pub pending: Option<PendingRequest>,
    /// What was learnt.
    #[serde(default)]
    pub facts: DeviceFacts,
}
