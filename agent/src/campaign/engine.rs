//! [`CampaignEngine`]: the sans-IO, synchronous front of the campaign state machine.
//!
//! The service loop feeds it the application uplinks of devices (with their reception
//! time), ticks of the agent's clock, and what became of each multicast frame; it
//! returns [`CampaignAction`]s. Every call loads the campaign from storage, moves it
//! forward, and commits the new state with its events in one transaction before the
//! actions are returned, so the radio never acts on a state that is not on disk, and a
//! process killed at any point resumes from the last commit ([`CampaignEngine::load`]).
//!
//! What lives only in memory is rebuilt or safely forgotten on restart: the image bytes
//! (reloaded and re-verified from the firmware cache), the multicast group's session
//! keys (derived again from the stored McKey), the group FCnt window (restarted at the
//! persisted reservation mark: FCnts are skipped, never reused) and the frames handed
//! out but not yet reported (forgotten: the fragments they carried are covered by the
//! code's redundancy and the repair rounds).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lorawan_fuota::crypto::multicast::{mc_app_s_key, mc_nwk_s_key};
use lorawan_fuota::image::ImageVersion;

use super::actions::{CampaignAction, MulticastFrame, MulticastFrameId, MulticastOutcome};
use super::model::{
    CampaignId, CampaignParameters, CampaignPhase, CampaignProgress, CampaignSpec, CampaignState,
    Delivery, DeliveryChoice, DeviceStatus, DeviceStep, StoredDeviceStep, Targets,
    DEFAULT_MC_ADDR_BASE,
};
use super::plan::{
    first_pass_loss, loss_from_history, plan, FirstPassLoss, PlanInputs, ReceptionRecord,
    Redundancy, FIRST_PASS_HISTORY_Z, HISTORY_CAMPAIGNS,
};
use super::work::{Outbox, Work};
use super::CampaignError;
use crate::clock::WallTime;
use crate::firmware::FirmwareCache;
use crate::identifiers::{AesKey, DevAddr, DevEui};
use crate::lorawan::region::Region;
use crate::storage::campaigns::NewCampaign;
use crate::storage::{EventKind, NewEvent, Storage};

/// Default retries of each unicast request. A retry is only sent in the answer to one
/// of the device's own uplinks, so a silent device costs nothing and a device that is
/// heard but never answers costs one downlink per uplink. At 30 % loss each way an
/// exchange fails half the time: 6 attempts all fail for about 1 device step in 60,
/// 16 attempts for 1 in 50,000 (found with `fuota-agent simulate`).
pub const DEFAULT_MAX_RETRIES: u32 = 15;
/// Default silence before a device ends `Timeout`, s.
pub const DEFAULT_DEVICE_TIMEOUT_S: u64 = 3_600;
/// Default setup time before the first session, s.
pub const DEFAULT_SETUP_TIMEOUT_S: u64 = 3_600;
/// Default lead time of a Class C session, s.
pub const DEFAULT_SESSION_LEAD_S: u64 = 900;
/// Default BlockAckDelay (answers spread over 32 s).
pub const DEFAULT_BLOCK_ACK_DELAY: u8 = 1;
/// Default repair rounds.
pub const DEFAULT_MAX_REPAIR_ROUNDS: u32 = 3;
/// Default reboot delay, s.
pub const DEFAULT_REBOOT_DELAY_S: u64 = 60;
/// Default grace after the reboot, s.
pub const DEFAULT_REBOOT_GRACE_S: u64 = 60;
/// Longest duration parameter an operator may set, s (30 days).
pub const MAX_DURATION_S: u64 = 30 * 24 * 3600;
/// Default expected loss, percent.
pub const DEFAULT_EXPECTED_LOSS_PERCENT: u8 = 10;

/// A campaign's multicast group, in memory.
struct GroupRuntime {
    mc_app_s_key: AesKey,
    mc_nwk_s_key: AesKey,
    mc_key: AesKey,
    next_fcnt: u64,
    reserved_until: u64,
    /// Frames handed out, not reported: FCnt → not-after (Unix ms).
    in_flight: BTreeMap<u32, i64>,
}

/// One input of a pass over a campaign.
enum Input<'p> {
    Start,
    Resume {
        paused_ms: i64,
    },
    Tick,
    Uplink {
        dev_eui: DevEui,
        fport: u8,
        payload: &'p [u8],
    },
    Outcome(MulticastOutcome),
}

/// The campaign engine. See the module documentation.
pub struct CampaignEngine {
    region: Region,
    cache: FirmwareCache,
    images: HashMap<String, Arc<Vec<u8>>>,
    groups: HashMap<CampaignId, GroupRuntime>,
    outboxes: HashMap<CampaignId, Outbox>,
}

impl CampaignEngine {
    /// The engine over `storage`, planning in `region` and reading images from `cache`.
    /// Campaigns that were running go on from their stored state at the next call; every
    /// active campaign is read once here, so a damaged row is reported at start.
    pub fn load(
        storage: &Storage,
        region: Region,
        cache: FirmwareCache,
    ) -> Result<Self, CampaignError> {
        for campaign in storage.campaigns()? {
            if campaign.state.is_active() {
                storage.campaign_devices(campaign.id)?;
            }
        }
        Ok(CampaignEngine {
            region,
            cache,
            images: HashMap::new(),
            groups: HashMap::new(),
            outboxes: HashMap::new(),
        })
    }

    /// The image cache campaigns read from (imports go through it too).
    pub fn cache(&self) -> &FirmwareCache {
        &self.cache
    }

    /// Replaces the image cache's trust store (a configuration reload).
    pub fn set_trust_store(&mut self, trust: crate::firmware::TrustStore) {
        self.cache.set_trust_store(trust);
    }

    /// Creates a campaign (state `created`): checks the image (cached, verified, with a
    /// TS006 version), resolves the targets, plans it (refused with the plan's figures
    /// when it cannot be done, e.g. more than 16383 fragments), draws the group's McKey.
    pub fn create_campaign(
        &mut self,
        storage: &mut Storage,
        spec: &CampaignSpec,
        now: WallTime,
    ) -> Result<CampaignId, CampaignError> {
        let loaded = self.cache.load(storage, &spec.image_sha256)?;
        let record = loaded.record;
        let target_version = record
            .ts006_version
            .ok_or_else(|| CampaignError::ImageWithoutVersion(record.sha256.clone()))?;
        let devices = resolve_targets(storage, &spec.targets)?;
        for &dev_eui in &devices {
            if let Some(&campaign) = storage.active_campaigns_of(dev_eui)?.first() {
                return Err(CampaignError::DeviceBusy { dev_eui, campaign });
            }
        }
        let delivery = match spec.delivery {
            DeliveryChoice::Multicast => Delivery::Multicast,
            DeliveryChoice::Unicast => Delivery::Unicast,
            DeliveryChoice::Auto if devices.len() == 1 => Delivery::Unicast,
            DeliveryChoice::Auto => Delivery::Multicast,
        };
        // The adaptive first pass is sized from what the targets received in their
        // earlier campaigns, when they took part in any.
        let expected_loss_percent = spec
            .overrides
            .expected_loss_percent
            .unwrap_or(DEFAULT_EXPECTED_LOSS_PERCENT);
        let first_pass = match spec.overrides.fixed_redundancy_percent {
            Some(_) => None,
            None => Some(first_pass_from_history(
                storage,
                &devices,
                f64::from(expected_loss_percent) / 100.0,
            )?),
        };
        let parameters = self.parameters(spec, loaded.bytes.len(), first_pass)?;
        let mut mc_key = [0u8; 16];
        getrandom::fill(&mut mc_key).map_err(|error| CampaignError::Random(error.to_string()))?;
        let mc_key = AesKey::from_bytes(mc_key);
        let first_step = StoredDeviceStep {
            step: DeviceStep::DiscoverFirmware,
            pending: None,
            facts: Default::default(),
        };
        let campaign = NewCampaign {
            name: &spec.name,
            image_sha256: &record.sha256,
            target_version,
            hardware_version: record.hardware_version,
            targets: &spec.targets,
            delivery,
            parameters: &parameters,
            mc_addr: spec.overrides.mc_addr,
            mc_key: &mc_key,
            devices: &devices,
        };
        let id = storage.write(|tx| {
            let id = tx.insert_campaign(
                &campaign,
                |id| DEFAULT_MC_ADDR_BASE.wrapping_add(id as u32),
                &first_step,
                now,
            )?;
            tx.append_event(&NewEvent::new(now, EventKind::CampaignRedundancy).payload(
                first_pass_event(id, &parameters, spec.overrides, first_pass),
            ))?;
            Ok(id)
        })?;
        self.images.insert(record.sha256, Arc::new(loaded.bytes));
        Ok(id)
    }

    fn parameters(
        &self,
        spec: &CampaignSpec,
        image_size: usize,
        first_pass: Option<FirstPassLoss>,
    ) -> Result<CampaignParameters, CampaignError> {
        let overrides = spec.overrides;
        let invalid = |text: String| Err(CampaignError::InvalidParameter(text));
        if overrides.mc_group_id.is_some_and(|id| id > 3) {
            return invalid("mc_group_id must be 0 to 3".into());
        }
        if overrides.frag_index.is_some_and(|index| index > 3) {
            return invalid("frag_index must be 0 to 3".into());
        }
        if overrides.block_ack_delay.is_some_and(|delay| delay > 7) {
            return invalid("block_ack_delay must be 0 to 7".into());
        }
        for (name, value) in [
            ("device_timeout_s", overrides.device_timeout_s),
            ("setup_timeout_s", overrides.setup_timeout_s),
            ("session_lead_s", overrides.session_lead_s),
            ("reboot_delay_s", overrides.reboot_delay_s),
            ("reboot_grace_s", overrides.reboot_grace_s),
        ] {
            if value.is_some_and(|seconds| !(1..=MAX_DURATION_S).contains(&seconds)) {
                return invalid(format!("{name} must be 1 to {MAX_DURATION_S} s (30 days)"));
            }
        }
        if overrides.max_retries.is_some_and(|n| n > 1_000) {
            return invalid("max_retries must be at most 1000".into());
        }
        if overrides.max_repair_rounds.is_some_and(|n| n > 100) {
            return invalid("max_repair_rounds must be at most 100".into());
        }
        if overrides.expected_loss_percent.is_some_and(|p| p > 90) {
            return invalid("expected_loss_percent must be 0 to 90".into());
        }
        if overrides
            .frequency_hz
            .is_some_and(|hz| hz % 100 != 0 || hz / 100 > 0x00FF_FFFF)
        {
            return invalid(
                "frequency_hz must be a multiple of 100 Hz below 1677.7216 MHz (TS005 DLFreq)"
                    .into(),
            );
        }
        let expected_loss_percent = overrides
            .expected_loss_percent
            .unwrap_or(DEFAULT_EXPECTED_LOSS_PERCENT);
        let class_c = self.region.class_c_default();
        let inputs = PlanInputs {
            data_rate: overrides.data_rate.unwrap_or(class_c.data_rate),
            frequency_hz: overrides.frequency_hz,
            fragment_size: overrides.fragment_size,
            redundancy: match overrides.fixed_redundancy_percent {
                Some(percent) => Redundancy::Fixed { percent },
                None => match first_pass {
                    Some(first_pass) => first_pass.redundancy(expected_loss_percent),
                    None => Redundancy::Adaptive {
                        expected_loss_percent,
                    },
                },
            },
            ..PlanInputs::new(image_size, overrides.data_rate.unwrap_or(class_c.data_rate))
        };
        let planned = plan(&self.region, &inputs)?;
        let too_large = |what: &str| {
            CampaignError::InvalidParameter(format!("the plan's {what} does not fit its field"))
        };
        Ok(CampaignParameters {
            data_rate: planned.data_rate,
            frequency_hz: planned.frequency_hz,
            fragment_size: u16::try_from(planned.fragment_size)
                .map_err(|_| too_large("fragment size"))?,
            fragments: u16::try_from(planned.fragments).map_err(|_| too_large("NbFrag"))?,
            padding: u8::try_from(planned.padding).map_err(|_| too_large("padding"))?,
            first_pass_coded: u16::try_from(planned.coded_fragments)
                .map_err(|_| too_large("coded fragments"))?,
            frame_slot_us: planned.frame_slot_us,
            frame_airtime_us: planned.frame_airtime_us,
            first_pass_duration_us: planned.first_pass_duration_us,
            session_timeout_exponent: planned.session_timeout_exponent,
            sessions_needed: planned.sessions_needed,
            expected_loss_percent,
            max_retries: overrides.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            device_timeout_s: overrides
                .device_timeout_s
                .unwrap_or(DEFAULT_DEVICE_TIMEOUT_S),
            setup_timeout_s: overrides.setup_timeout_s.unwrap_or(DEFAULT_SETUP_TIMEOUT_S),
            session_lead_s: overrides.session_lead_s.unwrap_or(DEFAULT_SESSION_LEAD_S),
            block_ack_delay: overrides.block_ack_delay.unwrap_or(DEFAULT_BLOCK_ACK_DELAY),
            max_repair_rounds: overrides
                .max_repair_rounds
                .unwrap_or(DEFAULT_MAX_REPAIR_ROUNDS),
            reboot_delay_s: overrides.reboot_delay_s.unwrap_or(DEFAULT_REBOOT_DELAY_S),
            reboot_grace_s: overrides.reboot_grace_s.unwrap_or(DEFAULT_REBOOT_GRACE_S),
            mc_group_id: overrides.mc_group_id.unwrap_or(0),
            frag_index: overrides.frag_index.unwrap_or(0),
        })
    }

    /// Starts a created campaign: every device gets its first request.
    pub fn start(
        &mut self,
        storage: &mut Storage,
        id: CampaignId,
        now: WallTime,
    ) -> Result<Vec<CampaignAction>, CampaignError> {
        self.require_state(storage, id, &[CampaignState::Created], "start")?;
        self.run(storage, id, now, Input::Start)
    }

    /// Pauses a running campaign: nothing is sent until [`CampaignEngine::resume`].
    pub fn pause(
        &mut self,
        storage: &mut Storage,
        id: CampaignId,
        now: WallTime,
    ) -> Result<(), CampaignError> {
        let mut campaign = self.require_state(storage, id, &[CampaignState::Running], "pause")?;
        campaign.progress.paused_at_ms = Some(now.unix_millis());
        storage.write(|tx| {
            tx.save_campaign_progress(id, &campaign.progress, now)?;
            tx.set_campaign_state(id, CampaignState::Running, CampaignState::Paused, now)
        })?;
        self.groups.remove(&id);
        self.outboxes.remove(&id);
        Ok(())
    }

    /// Resumes a paused campaign: waiting requests are sent again, deadlines move by
    /// the time it was paused, a session that ended meanwhile is replaced.
    pub fn resume(
        &mut self,
        storage: &mut Storage,
        id: CampaignId,
        now: WallTime,
    ) -> Result<Vec<CampaignAction>, CampaignError> {
        let campaign = self.require_state(storage, id, &[CampaignState::Paused], "resume")?;
        let paused_ms = campaign
            .progress
            .paused_at_ms
            .map_or(0, |at| (now.unix_millis() - at).max(0));
        self.run(storage, id, now, Input::Resume { paused_ms })
    }

    /// Cancels a campaign: devices without a result end `Cancelled`; nothing more is
    /// sent (multicast groups and sessions left on devices are overwritten by the next
    /// campaign's setup).
    pub fn cancel(
        &mut self,
        storage: &mut Storage,
        id: CampaignId,
        now: WallTime,
    ) -> Result<(), CampaignError> {
        let campaign = self.require_state(
            storage,
            id,
            &[
                CampaignState::Created,
                CampaignState::Running,
                CampaignState::Paused,
            ],
            "cancel",
        )?;
        let mut devices = storage.campaign_devices(id)?;
        storage.write(|tx| {
            for device in &mut devices {
                if device.step == DeviceStep::Done && device.status != DeviceStatus::InProgress {
                    continue;
                }
                if device.status == DeviceStatus::InProgress {
                    device.status = DeviceStatus::Cancelled;
                    tx.append_event(
                        &NewEvent::new(now, EventKind::CampaignDeviceResult)
                            .device(device.dev_eui)
                            .payload(serde_json::json!({
                                "campaign": id,
                                "status": DeviceStatus::Cancelled,
                                "error": null,
                            })),
                    )?;
                }
                device.step = DeviceStep::Done;
                device.pending = None;
                tx.save_campaign_device(device, now)?;
            }
            tx.set_campaign_state(id, campaign.state, CampaignState::Cancelled, now)
        })?;
        self.groups.remove(&id);
        self.outboxes.remove(&id);
        Ok(())
    }

    /// Handles an application uplink of a device (any FPort: every uplink is a chance
    /// to send the device's next request; FPorts 200–203 carry the answers). `now` is
    /// when it was received. Returns at most one unicast downlink for the device, to
    /// send in this uplink's receive window (the others wait for its next uplinks), and
    /// whatever multicast frames the step allows. Devices in no running campaign give
    /// no action.
    pub fn handle_uplink(
        &mut self,
        storage: &mut Storage,
        dev_eui: DevEui,
        fport: u8,
        payload: &[u8],
        now: WallTime,
    ) -> Result<Vec<CampaignAction>, CampaignError> {
        let mut actions = Vec::new();
        for id in storage.active_campaigns_of(dev_eui)? {
            let running = storage
                .campaign(id)?
                .is_some_and(|c| c.state == CampaignState::Running);
            if running {
                actions.extend(self.run(
                    storage,
                    id,
                    now,
                    Input::Uplink {
                        dev_eui,
                        fport,
                        payload,
                    },
                )?);
            }
        }
        Ok(actions)
    }

    /// Lets time run: timeouts, deadlines, sessions starting, fragments due. Call it
    /// about once a second.
    pub fn tick(
        &mut self,
        storage: &mut Storage,
        now: WallTime,
    ) -> Result<Vec<CampaignAction>, CampaignError> {
        let mut actions = Vec::new();
        for campaign in storage.campaigns()? {
            if campaign.state == CampaignState::Running {
                actions.extend(self.run(storage, campaign.id, now, Input::Tick)?);
            }
        }
        Ok(actions)
    }

    /// What became of a multicast frame; the next frames follow.
    pub fn multicast_outcome(
        &mut self,
        storage: &mut Storage,
        frame: MulticastFrameId,
        outcome: MulticastOutcome,
        now: WallTime,
    ) -> Result<Vec<CampaignAction>, CampaignError> {
        let known = self
            .groups
            .get_mut(&frame.campaign_id)
            .and_then(|group| group.in_flight.remove(&frame.fcnt))
            .is_some();
        let running = storage
            .campaign(frame.campaign_id)?
            .is_some_and(|c| c.state == CampaignState::Running);
        if !known || !running {
            return Ok(Vec::new());
        }
        self.run(storage, frame.campaign_id, now, Input::Outcome(outcome))
    }

    fn require_state(
        &self,
        storage: &Storage,
        id: CampaignId,
        allowed: &[CampaignState],
        action: &'static str,
    ) -> Result<super::model::Campaign, CampaignError> {
        let campaign = storage
            .campaign(id)?
            .ok_or(CampaignError::UnknownCampaign(id))?;
        if !allowed.contains(&campaign.state) {
            return Err(CampaignError::InvalidState {
                id,
                state: campaign.state,
                action,
            });
        }
        Ok(campaign)
    }

    fn image(&mut self, storage: &Storage, sha256: &str) -> Result<Arc<Vec<u8>>, CampaignError> {
        if let Some(image) = self.images.get(sha256) {
            return Ok(image.clone());
        }
        let loaded = self.cache.load(storage, sha256)?;
        let image = Arc::new(loaded.bytes);
        self.images.insert(sha256.to_string(), image.clone());
        Ok(image)
    }

    fn group(
        &mut self,
        storage: &Storage,
        id: CampaignId,
    ) -> Result<&mut GroupRuntime, CampaignError> {
        let group = match self.groups.entry(id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let mc_key = storage
                    .campaign_mc_key(id)?
                    .ok_or(CampaignError::UnknownCampaign(id))?;
                let campaign = storage
                    .campaign(id)?
                    .ok_or(CampaignError::UnknownCampaign(id))?;
                let mark = storage.campaign_mc_fcnt_reserved(id)?;
                entry.insert(GroupRuntime {
                    mc_app_s_key: mc_app_s_key(&mc_key, campaign.mc_addr),
                    mc_nwk_s_key: mc_nwk_s_key(&mc_key, campaign.mc_addr),
                    mc_key,
                    next_fcnt: mark,
                    reserved_until: mark,
                    in_flight: BTreeMap::new(),
                })
            }
        };
        Ok(group)
    }

    fn next_fcnt(&mut self, storage: &mut Storage, id: CampaignId) -> Result<u32, CampaignError> {
        let group = self.group(storage, id)?;
        let (next, reserved_until) = (group.next_fcnt, group.reserved_until);
        if next >= 1 << 32 {
            return Err(CampaignError::GroupFCntExhausted(id));
        }
        if next >= reserved_until {
            let mark = storage.reserve_mc_fcnts(id, next)?;
            self.group(storage, id)?.reserved_until = mark;
        }
        let group = self.group(storage, id)?;
        group.next_fcnt = next + 1;
        u32::try_from(next).map_err(|_| CampaignError::GroupFCntExhausted(id))
    }

    /// One pass over a campaign: load, apply the input, move on, commit, act.
    fn run(
        &mut self,
        storage: &mut Storage,
        id: CampaignId,
        now: WallTime,
        input: Input<'_>,
    ) -> Result<Vec<CampaignAction>, CampaignError> {
        let mut campaign = storage
            .campaign(id)?
            .ok_or(CampaignError::UnknownCampaign(id))?;
        let devices = storage.campaign_devices(id)?;
        let image = self.image(storage, &campaign.image_sha256)?;
        let now_ms = now.unix_millis();
        let group = self.group(storage, id)?;
        group.in_flight.retain(|_, not_after| *not_after > now_ms);
        let frames_in_flight = group.in_flight.len();
        let mc_key = group.mc_key;
        let previous_state = campaign.state;
        let mut new_state = campaign.state;
        match &input {
            Input::Start => {
                new_state = CampaignState::Running;
                let parameters = campaign.parameters;
                campaign.progress = CampaignProgress {
                    phase: CampaignPhase::Setup {
                        deadline_ms: now_ms
                            + i64::try_from(parameters.setup_timeout_s * 1000)
                                .unwrap_or(i64::MAX / 4),
                    },
                    round_end: parameters.fragments + parameters.first_pass_coded,
                    ..CampaignProgress::new()
                };
            }
            Input::Resume { paused_ms } => {
                new_state = CampaignState::Running;
                campaign.progress.paused_at_ms = None;
                campaign.progress.phase = match campaign.progress.phase {
                    CampaignPhase::Setup { deadline_ms } => CampaignPhase::Setup {
                        deadline_ms: deadline_ms + paused_ms,
                    },
                    CampaignPhase::SessionScheduling { start_ms, .. } if start_ms <= now_ms => {
                        CampaignPhase::Setup {
                            deadline_ms: now_ms,
                        }
                    }
                    CampaignPhase::Broadcast { end_ms, .. }
                    | CampaignPhase::Status { end_ms, .. }
                        if end_ms <= now_ms =>
                    {
                        CampaignPhase::Status {
                            end_ms,
                            requested: true,
                            deadline_ms: Some(now_ms),
                        }
                    }
                    phase => phase,
                };
            }
            _ => {}
        }
        campaign.state = new_state;
        let mut work = Work {
            campaign,
            devices,
            changed: Default::default(),
            progress_changed: true,
            events: Vec::new(),
            actions: Vec::new(),
            frames: Vec::new(),
            frames_in_flight,
            now,
            image: image.as_slice(),
            mc_key,
            storage: &*storage,
            session_counters: BTreeMap::new(),
            firmware_versions: Vec::new(),
            outbox: self.outboxes.remove(&id).unwrap_or_default(),
        };
        let uplink_device = match &input {
            Input::Uplink { dev_eui, .. } => Some(*dev_eui),
            _ => None,
        };
        match input {
            Input::Start => {
                for index in 0..work.devices.len() {
                    work.send_request(index)?;
                }
            }
            Input::Resume { paused_ms } => {
                for index in 0..work.devices.len() {
                    let device = &mut work.devices[index];
                    if let Some(at) = device.facts.reboot_at_ms.as_mut() {
                        *at += paused_ms;
                    }
                    if device.step == DeviceStep::SessionSetup
                        && !matches!(
                            work.campaign.progress.phase,
                            CampaignPhase::SessionScheduling { .. }
                        )
                    {
                        work.set_step(index, DeviceStep::ReadyForSession, "session missed")?;
                    } else if work.devices[index].pending.is_some() {
                        work.send_request(index)?;
                    }
                }
            }
            Input::Tick => {
                for index in 0..work.devices.len() {
                    work.tick_device(index)?;
                }
            }
            Input::Uplink {
                dev_eui,
                fport,
                payload,
            } => {
                if let Some(index) = work.index_of(dev_eui) {
                    work.handle_uplink(index, fport, payload)?;
                }
            }
            Input::Outcome(outcome) => match outcome {
                MulticastOutcome::Sent => work.campaign.progress.frames_sent += 1,
                MulticastOutcome::GivenUp(reason) => {
                    work.campaign.progress.frames_given_up += 1;
                    work.campaign_event(
                        EventKind::CampaignStep,
                        serde_json::json!({ "multicast_frame_given_up": reason }),
                    );
                }
            },
        }
        work.advance_campaign()?;
        if let Some(dev_eui) = uplink_device {
            work.release_window(dev_eui)?;
        }
        let finished = work.campaign.progress.phase == CampaignPhase::Done
            && new_state == CampaignState::Running;
        if finished {
            new_state = CampaignState::Finished;
            work.actions.push(CampaignAction::Finished {
                campaign_id: id,
                results: work.results(),
            });
        }
        let mut firmware_versions = Vec::new();
        for (dev_eui, version) in std::mem::take(&mut work.firmware_versions) {
            // TS006 carries major.minor.revision (no build number).
            let parsed = ImageVersion::from_ts006(version);
            let text = format!("{}.{}.{}", parsed.major, parsed.minor, parsed.revision);
            if let Some(device) = work.storage.device(dev_eui)? {
                if device.firmware_version.as_deref() != Some(text.as_str()) {
                    firmware_versions.push((dev_eui, text));
                }
            }
        }
        let Work {
            campaign,
            devices,
            changed,
            events,
            mut actions,
            frames,
            session_counters,
            outbox,
            ..
        } = work;
        if new_state == CampaignState::Running {
            self.outboxes.insert(id, outbox);
        }
        drop(image);
        for frame in frames {
            let fcnt = self.next_fcnt(storage, id)?;
            let group = self.group(storage, id)?;
            group.in_flight.insert(fcnt, frame.not_after_ms);
            actions.push(CampaignAction::Multicast(MulticastFrame {
                id: MulticastFrameId {
                    campaign_id: id,
                    fcnt,
                },
                mc_addr: DevAddr::from(campaign.mc_addr),
                mc_app_s_key: group.mc_app_s_key,
                mc_nwk_s_key: group.mc_nwk_s_key,
                fcnt,
                fport: frame.fport,
                payload: frame.payload,
                frequency_hz: campaign.parameters.frequency_hz,
                data_rate: campaign.parameters.data_rate,
                not_before: WallTime::from_unix_micros(frame.not_before_ms * 1000),
                not_after: WallTime::from_unix_micros(frame.not_after_ms * 1000),
            }));
        }
        storage.write(|tx| {
            tx.save_campaign_progress(id, &campaign.progress, now)?;
            for &index in &changed {
                tx.save_campaign_device(&devices[index], now)?;
            }
            for (dev_eui, session_cnt) in &session_counters {
                tx.set_frag_session_cnt(*dev_eui, *session_cnt)?;
            }
            for (dev_eui, text) in &firmware_versions {
                tx.set_firmware_version(*dev_eui, text, now)?;
            }
            for event in &events {
                tx.append_event(event)?;
            }
            if new_state != previous_state {
                tx.set_campaign_state(id, previous_state, new_state, now)?;
            }
            Ok(())
        })?;
        if new_state == CampaignState::Finished {
            self.groups.remove(&id);
            self.outboxes.remove(&id);
        }
        Ok(actions)
    }
}

/// The loss a new campaign's first pass is sized for, from what each of `devices`
/// received in its last multicast campaigns (see [`first_pass_loss`]).
fn first_pass_from_history(
    storage: &Storage,
    devices: &[DevEui],
    expected: f64,
) -> Result<FirstPassLoss, CampaignError> {
    let mut losses = Vec::with_capacity(devices.len());
    for &dev_eui in devices {
        let records: Vec<ReceptionRecord> = storage
            .past_multicast_campaigns_of(dev_eui, HISTORY_CAMPAIGNS)?
            .iter()
            .filter_map(|row| {
                let facts = row.facts;
                Some(ReceptionRecord {
                    received: facts.fragments_received?,
                    offered: facts.fragments_offered?,
                    complete: facts
                        .fragments_counted_complete
                        .unwrap_or(row.missing == Some(0)),
                })
            })
            .collect();
        losses.push(loss_from_history(&records));
    }
    Ok(first_pass_loss(&losses, expected))
}

/// The `campaign_redundancy` event of a new campaign: how its first pass was sized.
fn first_pass_event(
    id: CampaignId,
    parameters: &CampaignParameters,
    overrides: super::model::ParameterOverrides,
    first_pass: Option<FirstPassLoss>,
) -> serde_json::Value {
    let percent = |loss: f64| (loss * 1000.0).round() / 10.0;
    let mut figures = serde_json::json!({
        "fragments": parameters.fragments,
        "coded_fragments": parameters.first_pass_coded,
        "expected_loss_percent": parameters.expected_loss_percent,
    });
    if let Some(object) = figures.as_object_mut() {
        match (overrides.fixed_redundancy_percent, first_pass) {
            (None, Some(first_pass)) => {
                object.insert("policy".into(), "adaptive".into());
                let (from, z) = if first_pass.measured {
                    ("measured", FIRST_PASS_HISTORY_Z)
                } else {
                    ("expected", 0.0)
                };
                object.insert("sized_from".into(), from.into());
                object.insert(
                    "sized_for_loss_percent".into(),
                    percent(first_pass.loss).into(),
                );
                object.insert("confidence_z".into(), z.into());
                object.insert(
                    "devices_measured".into(),
                    first_pass.devices_measured.into(),
                );
                object.insert(
                    "devices_without_history".into(),
                    first_pass.devices_expected.into(),
                );
                object.insert(
                    "worst_measured_loss_percent".into(),
                    first_pass.worst_measured.map(percent).into(),
                );
            }
            (fixed, _) => {
                object.insert("policy".into(), "fixed".into());
                object.insert("fixed_percent".into(), fixed.into());
            }
        }
    }
    serde_json::json!({ "campaign": id, "first_pass": figures })
}

/// The devices a campaign is for, from the registry.
fn resolve_targets(storage: &Storage, targets: &Targets) -> Result<Vec<DevEui>, CampaignError> {
    let mut devices = match targets {
        Targets::Devices { dev_euis } => {
            for &dev_eui in dev_euis {
                if storage.device(dev_eui)?.is_none() {
                    return Err(CampaignError::UnknownDevice(dev_eui));
                }
            }
            dev_euis.clone()
        }
        Targets::HardwareVersion { hardware_version } => storage
            .devices()?
            .into_iter()
            .filter(|d| d.hardware_version.as_deref() == Some(hardware_version.as_str()))
            .map(|d| d.dev_eui)
            .collect(),
        Targets::Tag { key, value } => storage
            .devices()?
            .into_iter()
            .filter(|d| d.tags.get(key) == Some(value))
            .map(|d| d.dev_eui)
            .collect(),
    };
    devices.sort();
    devices.dedup();
    if devices.is_empty() {
        return Err(CampaignError::NoTargets(targets.clone()));
    }
    Ok(devices)
}
