//! The campaign-wide steps of a multicast campaign: when the setup ends, scheduling a
//! Class C session, the fragment broadcast (paced, never more than a few frames handed
//! out ahead), the status request and the unicast status queries of the silent, the
//! repair rounds sized from what devices report missing, and the end of the campaign.
//!
//! Repair rounds are sized with
//! [`repair_round_size`] from what each device still needing fragments reported: its
//! missing count, and the loss its received count shows over the fragment frames sent
//! since its first session ([`measured_loss`]; the expected loss when it is unknown). A
//! device that reported no uncoded fragment at all also gets a few uncoded ones again:
//! TS004 v2 parity rows all have the same weight, so coded fragments alone cannot
//! rebuild its block.
//!
//! A session holds as many frames as fit before its end with the status answers'
//! spread; a first pass longer than one session (2^15 s at most) continues in the next
//! session, and so does a repair round that no longer fits the current one.

use super::device_steps::{is_setup_step, version_of, PORT_FRAGMENTATION};
use super::model::{CampaignPhase, Delivery, DeviceStatus, DeviceStep};
use super::plan::{
    base_repair_margin, measured_loss, repair_margin, repair_round_size, RepairNeed,
    MAX_SESSION_TIMEOUT_EXPONENT,
};
use super::work::{FrameRequest, Work};
use super::CampaignError;
use crate::storage::EventKind;
use lorawan_fuota::codec::fragmentation;

/// Most multicast frames handed out and not yet reported.
pub const MAX_FRAMES_IN_FLIGHT: usize = 4;

/// Repair rounds that could not go on the air, at most, before the devices still
/// missing fragments are given up.
pub const MAX_STARVED_ROUNDS: u32 = 6;

/// Time after the status answers' spread before the silent are asked by unicast, ms.
const STATUS_MARGIN_MS: i64 = 10_000;

/// Sessions start on a whole second at least this far ahead of the request, ms.
const MIN_SESSION_LEAD_MS: i64 = 1_000;

impl Work<'_> {
    /// Moves the campaign-wide steps as far as they go at `now`.
    pub(super) fn advance_campaign(&mut self) -> Result<(), CampaignError> {
        // Each pass changes the phase at most once; a few passes settle it.
        for _ in 0..8 {
            let before = self.campaign.progress.phase;
            self.advance_once()?;
            if self.campaign.progress.phase == before {
                break;
            }
        }
        Ok(())
    }

    fn advance_once(&mut self) -> Result<(), CampaignError> {
        let now_ms = self.now_ms();
        match self.campaign.progress.phase {
            CampaignPhase::Setup { deadline_ms } => {
                if self.campaign.delivery == Delivery::Unicast {
                    self.set_phase(CampaignPhase::Finishing);
                    return Ok(());
                }
                let setting_up: Vec<usize> =
                    self.indexes(|d| d.status == DeviceStatus::InProgress && is_setup_step(d.step));
                if now_ms >= deadline_ms {
                    for index in setting_up {
                        self.timeout(index, "not set up by the end of the setup time".into())?;
                    }
                    self.schedule_session_or_finish(None)?;
                    return Ok(());
                }
                // Devices that have been quiet for a session lead time would miss the
                // session anyway: they do not hold the others back (they go on with
                // their own steps, and a later session takes them if they come back).
                let lead_ms = i64::try_from(self.campaign.parameters.session_lead_s * 1000)
                    .unwrap_or(i64::MAX / 4);
                let active = setting_up.iter().any(|&i| {
                    let device = &self.devices[i];
                    let heard = device
                        .pending
                        .map_or(now_ms, |p| p.issued_ms)
                        .max(device.last_seen_ms.unwrap_or(i64::MIN));
                    now_ms - heard < lead_ms
                });
                let ready = self.devices.iter().any(|d| {
                    d.status == DeviceStatus::InProgress && d.step == DeviceStep::ReadyForSession
                });
                if active || (!ready && !setting_up.is_empty()) {
                    return Ok(());
                }
                self.schedule_session_or_finish(None)?;
            }
            CampaignPhase::SessionScheduling {
                start_ms,
                timeout_exponent,
            } => {
                if now_ms < start_ms {
                    return Ok(());
                }
                let end_ms = start_ms + (1i64 << timeout_exponent) * 1000;
                let listening = self.indexes(|d| {
                    d.status == DeviceStatus::InProgress
                        && matches!(d.step, DeviceStep::Receiving | DeviceStep::SessionSetup)
                });
                if listening.is_empty() {
                    self.decide_after_round()?;
                    return Ok(());
                }
                let first_frame_ms = self.campaign.progress.next_frame_at_ms.max(start_ms);
                self.campaign.progress.next_frame_at_ms = first_frame_ms;
                let fit = self
                    .frames_fitting(first_frame_ms, end_ms)
                    .saturating_sub(u32::from(self.campaign.progress.uncoded_resends))
                    .max(1);
                let round_end = self.round_end();
                let session_end_fragment =
                    u32::from(self.campaign.progress.next_fragment) + fit.saturating_sub(1);
                let round_end = u32::from(round_end).min(session_end_fragment) as u16;
                self.set_phase(CampaignPhase::Broadcast { end_ms, round_end });
            }
            CampaignPhase::Broadcast { end_ms, round_end } => {
                let version = version_of(self.campaign.progress.fragmentation_version);
                while self.frames_in_flight < MAX_FRAMES_IN_FLIGHT
                    && self.campaign.progress.uncoded_resends > 0
                    && self.campaign.progress.next_frame_at_ms < end_ms
                {
                    // Spread over the block: fragment 1 + k·M/(k+1) for the k-th left.
                    let left = u32::from(self.campaign.progress.uncoded_resends);
                    let fragments = u32::from(self.campaign.parameters.fragments);
                    let n = (1 + (left - 1) * fragments / (left + 1)).min(fragments) as u16;
                    let payload = self.fragment_payload(n, version)?;
                    self.queue_frame(payload, end_ms, true);
                    self.campaign.progress.uncoded_resends -= 1;
                }
                while self.frames_in_flight < MAX_FRAMES_IN_FLIGHT
                    && self.campaign.progress.uncoded_resends == 0
                    && self.campaign.progress.next_fragment <= round_end
                    && self.campaign.progress.next_frame_at_ms < end_ms
                {
                    let n = self.campaign.progress.next_fragment;
                    let payload = self.fragment_payload(n, version)?;
                    self.queue_frame(payload, end_ms, true);
                    self.campaign.progress.next_fragment = n + 1;
                }
                let round_sent = self.campaign.progress.next_fragment > round_end
                    || self.campaign.progress.next_frame_at_ms >= end_ms;
                if round_sent && self.frames_in_flight == 0 {
                    self.set_phase(CampaignPhase::Status {
                        end_ms,
                        requested: false,
                        deadline_ms: None,
                    });
                }
            }
            CampaignPhase::Status {
                end_ms,
                requested,
                deadline_ms,
            } => {
                if !requested {
                    let spread_ms =
                        i64::try_from(self.campaign.parameters.status_spread_s() * 1000)
                            .unwrap_or(i64::MAX / 4);
                    let send_at = self.campaign.progress.next_frame_at_ms.max(now_ms);
                    if send_at < end_ms {
                        let payload = super::device_steps::encode(&[
                            fragmentation::Downlink::FragSessionStatusReq {
                                frag_index: self.campaign.parameters.frag_index,
                                participants_all: true,
                            },
                        ])?;
                        self.queue_frame(payload, end_ms, false);
                    }
                    for index in self.participants() {
                        let facts = &mut self.devices[index].facts;
                        facts.status_since_ms = Some(now_ms);
                        facts.status_reported = false;
                        self.touch(index);
                    }
                    let deadline = if send_at < end_ms {
                        send_at + spread_ms + STATUS_MARGIN_MS
                    } else {
                        now_ms
                    };
                    self.set_phase(CampaignPhase::Status {
                        end_ms,
                        requested: true,
                        deadline_ms: Some(deadline),
                    });
                    return Ok(());
                }
                let deadline = deadline_ms.unwrap_or(now_ms);
                if now_ms < deadline {
                    return Ok(());
                }
                // The silent are asked one by one; the campaign waits for them for a
                // session lead time, then goes on with what it knows.
                // (A device whose session answer never came may be listening all the
                // same: it is asked too.)
                let silent = self.indexes(|d| {
                    d.status == DeviceStatus::InProgress
                        && matches!(d.step, DeviceStep::Receiving | DeviceStep::SessionSetup)
                        && !d.facts.status_reported
                        && !d.facts.block_complete
                });
                for &index in &silent {
                    self.set_step(index, DeviceStep::StatusQuery, "no status answer")?;
                }
                let waiting = self.indexes(|d| {
                    d.status == DeviceStatus::InProgress && d.step == DeviceStep::StatusQuery
                });
                let lead_ms = i64::try_from(self.campaign.parameters.session_lead_s * 1000)
                    .unwrap_or(i64::MAX / 4);
                if !waiting.is_empty() && now_ms < deadline + lead_ms {
                    return Ok(());
                }
                self.decide_after_round()?;
            }
            CampaignPhase::Finishing => {
                // Devices that still need fragments (set up late, or whose status came
                // in after the last round): another session if the rounds allow.
                let ready = self.indexes(|d| {
                    d.status == DeviceStatus::InProgress
                        && !d.facts.block_complete
                        && matches!(d.step, DeviceStep::ReadyForSession | DeviceStep::Receiving)
                });
                if !ready.is_empty() {
                    self.decide_after_round()?;
                    return Ok(());
                }
                if self.all_done() {
                    self.set_phase(CampaignPhase::Done);
                }
            }
            CampaignPhase::Done => {}
        }
        Ok(())
    }

    fn indexes(&self, keep: impl Fn(&super::model::CampaignDevice) -> bool) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|&i| keep(&self.devices[i]))
            .collect()
    }

    /// Devices in the current session.
    fn participants(&self) -> Vec<usize> {
        self.indexes(|d| {
            d.status == DeviceStatus::InProgress
                && matches!(
                    d.step,
                    DeviceStep::Receiving | DeviceStep::SessionSetup | DeviceStep::StatusQuery
                )
        })
    }

    /// Time between frames, ms (the slower of the frame slot and the duty-cycle pace).
    fn frame_interval_ms(&self) -> i64 {
        let parameters = self.campaign.parameters;
        let frames = u64::from(parameters.fragments) + u64::from(parameters.first_pass_coded);
        let paced = parameters.first_pass_duration_us / frames.max(1);
        i64::try_from(paced.max(parameters.frame_slot_us).div_ceil(1000)).unwrap_or(i64::MAX / 4)
    }

    /// How many frames fit from `from_ms` to the session's end, leaving the status
    /// answers' spread.
    fn frames_fitting(&self, from_ms: i64, end_ms: i64) -> u32 {
        let reserve = i64::try_from(self.campaign.parameters.status_spread_s() * 1000)
            .unwrap_or(i64::MAX / 4)
            + STATUS_MARGIN_MS;
        let usable = end_ms - from_ms - reserve;
        if usable <= 0 {
            return 1;
        }
        u32::try_from(usable / self.frame_interval_ms().max(1))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Last fragment of the current round (first pass or repair).
    fn round_end(&self) -> u16 {
        let progress = self.campaign.progress;
        progress
            .round_end
            .max(progress.next_fragment.saturating_sub(1))
    }

    /// Hands out a multicast frame (a DataFragment if `fragment`), paced after the
    /// previous one.
    fn queue_frame(&mut self, payload: Vec<u8>, end_ms: i64, fragment: bool) {
        let now_ms = self.now_ms();
        let interval = self.frame_interval_ms();
        let progress = &mut self.campaign.progress;
        let not_before = progress.next_frame_at_ms.max(now_ms);
        progress.next_frame_at_ms = not_before + interval;
        progress.frames_emitted += 1;
        if fragment {
            progress.fragment_frames_emitted += 1;
        }
        self.progress_changed = true;
        self.frames_in_flight += 1;
        self.frames.push(FrameRequest {
            fport: PORT_FRAGMENTATION,
            payload,
            not_before_ms: not_before,
            not_after_ms: end_ms,
        });
    }

    /// After a round's status: the campaign is through, or another round (in this
    /// session if it fits, else in a new one), or the repair rounds are spent.
    fn decide_after_round(&mut self) -> Result<(), CampaignError> {
        let parameters = self.campaign.parameters;
        let needing = self.indexes(|d| {
            d.status == DeviceStatus::InProgress
                && !d.facts.block_complete
                && matches!(
                    d.step,
                    DeviceStep::Receiving
                        | DeviceStep::SessionSetup
                        | DeviceStep::StatusQuery
                        | DeviceStep::ReadyForSession
                )
        });
        if needing.is_empty() {
            self.set_phase(CampaignPhase::Finishing);
            return Ok(());
        }
        let first_pass_left =
            self.campaign.progress.next_fragment <= self.campaign.progress.round_end;
        if !first_pass_left {
            let progress = self.campaign.progress;
            // A repair round most of whose frames never went on the air (the network
            // server gave them up: the duty-cycle budget was spent) was not a round the
            // devices could use: it does not count, up to a limit.
            let aired = progress
                .fragment_frames_on_air()
                .saturating_sub(progress.round_started_on_air);
            if progress.repair_rounds > progress.starved_rounds
                && aired * 2 < u64::from(progress.round_frames)
            {
                if progress.starved_rounds >= MAX_STARVED_ROUNDS {
                    return self.give_up(
                        &needing,
                        format!(
                            "{MAX_STARVED_ROUNDS} repair rounds could not go on the air (the \
                             duty-cycle budget was spent): use a faster data rate"
                        ),
                    );
                }
                self.campaign.progress.starved_rounds += 1;
                self.progress_changed = true;
            }
            let progress = self.campaign.progress;
            let rounds_made = progress.repair_rounds - progress.starved_rounds;
            if rounds_made >= parameters.max_repair_rounds {
                return self.give_up(
                    &needing,
                    format!("fragments still missing after {rounds_made} repair rounds"),
                );
            }
            // The round is sized for the devices that said what they miss. One that has
            // not answered a status request yet (its unicast query is under way, or it
            // is silent) would make the round a whole block for every device on a
            // guess; it is asked again after the round, and the next round is sized
            // from its answer. Only when none answered is the round sized on guesses.
            let reported: Vec<usize> = needing
                .iter()
                .copied()
                .filter(|&i| self.devices[i].missing.is_some())
                .collect();
            let sized_for = if reported.is_empty() {
                &needing
            } else {
                &reported
            };
            let needs: Vec<RepairNeed> = sized_for.iter().map(|&i| self.repair_need(i)).collect();
            let margin = repair_margin(
                base_repair_margin(progress.fragmentation_version),
                rounds_made,
            );
            let size = repair_round_size(&needs, margin).max(1);
            let missing: Vec<u32> = sized_for
                .iter()
                .map(|&i| {
                    self.devices[i]
                        .missing
                        .unwrap_or(u32::from(parameters.fragments))
                })
                .collect();
            let last = u32::from(parameters.last_fragment_number());
            let start = u32::from(progress.next_fragment);
            if start > last {
                return self.give_up(
                    &needing,
                    "every fragment number of the session is used".to_string(),
                );
            }
            let end = (start + size - 1).min(last) as u16;
            // A device without any uncoded fragment needs one (see `uncoded_resends`):
            // a few, for the loss.
            let none_uncoded = missing
                .iter()
                .any(|&m| m >= u32::from(parameters.fragments));
            let resends = if none_uncoded {
                let loss = u32::from(parameters.expected_loss_percent.min(90));
                (2 + 300 / (100 - loss)).min(u32::from(parameters.fragments)) as u16
            } else {
                0
            };
            let progress = &mut self.campaign.progress;
            progress.repair_rounds += 1;
            progress.round_end = end;
            progress.uncoded_resends = resends;
            progress.round_started_on_air = progress.fragment_frames_on_air();
            progress.round_frames = u32::from(end) + 1 - start + u32::from(resends);
            self.progress_changed = true;
            let worst_loss = needs.iter().map(|need| need.loss).fold(0.0, f64::max);
            let round = progress.repair_rounds;
            self.campaign_event(
                EventKind::CampaignRedundancy,
                serde_json::json!({ "repair_round": {
                    "round": round,
                    "devices": needs.len(),
                    "devices_without_status": needing.len() - reported.len(),
                    "coded_fragments": size,
                    "most_missing": missing.iter().max(),
                    "most_lacking": needs.iter().map(|need| need.lacking).max(),
                    "worst_loss_percent": (worst_loss * 1000.0).round() / 10.0,
                }}),
            );
        }
        // Still in a session long enough for the round?
        if let CampaignPhase::Status { end_ms, .. } = self.campaign.progress.phase {
            let from = self.campaign.progress.next_frame_at_ms.max(self.now_ms());
            let wanted = u32::from(self.campaign.progress.round_end)
                - u32::from(self.campaign.progress.next_fragment)
                + 1
                + u32::from(self.campaign.progress.uncoded_resends);
            if self.frames_fitting(from, end_ms) >= wanted {
                for &index in &needing {
                    if self.devices[index].step == DeviceStep::StatusQuery {
                        self.set_step(index, DeviceStep::Receiving, "repair round")?;
                    }
                }
                let round_end = self.campaign.progress.round_end;
                self.set_phase(CampaignPhase::Broadcast { end_ms, round_end });
                return Ok(());
            }
        }
        self.schedule_session_or_finish(Some(&needing))
    }

    /// Devices that cannot get the rest of the block end `MissingFrag`.
    fn give_up(&mut self, needing: &[usize], error: String) -> Result<(), CampaignError> {
        for &index in needing {
            self.finish_device(index, DeviceStatus::MissingFrag, Some(error.clone()))?;
        }
        self.set_phase(CampaignPhase::Finishing);
        Ok(())
    }

    /// Schedules a Class C session for the ready devices (and `also`), or finishes.
    fn schedule_session_or_finish(&mut self, also: Option<&[usize]>) -> Result<(), CampaignError> {
        if let Some(also) = also {
            for &index in also {
                if self.devices[index].step != DeviceStep::ReadyForSession {
                    self.set_step(index, DeviceStep::ReadyForSession, "next session")?;
                }
            }
        }
        let mut ready = self.indexes(|d| {
            d.status == DeviceStatus::InProgress && d.step == DeviceStep::ReadyForSession
        });
        // One parity rule for the whole group: the most common TS004 version.
        let group_version = match self.campaign.progress.fragmentation_version {
            Some(version) => version,
            None => {
                let v1 = ready
                    .iter()
                    .filter(|&&i| self.devices[i].facts.fragmentation_version == Some(1))
                    .count();
                let version = if v1 * 2 > ready.len() { 1 } else { 2 };
                self.campaign.progress.fragmentation_version = Some(version);
                self.progress_changed = true;
                version
            }
        };
        for index in ready.clone() {
            let version = self.devices[index].facts.fragmentation_version.unwrap_or(2);
            if version != group_version {
                self.finish_device(
                    index,
                    DeviceStatus::PackageNotSupported,
                    Some(format!(
                        "the device speaks TS004 v{version}, the group's coded fragments are \
                         v{group_version} (their parity rows differ): update it on its own"
                    )),
                )?;
            }
        }
        ready.retain(|&i| self.devices[i].status == DeviceStatus::InProgress);
        if ready.is_empty() {
            self.set_phase(CampaignPhase::Finishing);
            return Ok(());
        }
        let parameters = self.campaign.parameters;
        let lead_ms = i64::try_from(parameters.session_lead_s * 1000).unwrap_or(i64::MAX / 4);
        let start_ms =
            (self.now_ms() + lead_ms.max(MIN_SESSION_LEAD_MS)).div_euclid(1000) * 1000 + 1000;
        let exponent = if self.campaign.progress.sessions == 0 {
            parameters.session_timeout_exponent
        } else {
            self.session_exponent_for_round()
        };
        self.campaign.progress.sessions += 1;
        self.campaign.progress.next_frame_at_ms = start_ms;
        self.progress_changed = true;
        self.set_phase(CampaignPhase::SessionScheduling {
            start_ms,
            timeout_exponent: exponent,
        });
        let on_air = self.campaign.progress.fragment_frames_on_air();
        for index in ready {
            let facts = &mut self.devices[index].facts;
            if facts.fragment_frames_baseline.is_none() {
                facts.fragment_frames_baseline = Some(on_air);
            }
            self.set_step(index, DeviceStep::SessionSetup, "session scheduled")?;
        }
        Ok(())
    }

    /// SessionTimeOut exponent long enough for the rest of the round and the status
    /// answers, with slack.
    fn session_exponent_for_round(&self) -> u8 {
        let parameters = self.campaign.parameters;
        let progress = self.campaign.progress;
        let frames = i64::from(progress.round_end.saturating_sub(progress.next_fragment))
            + 1
            + i64::from(progress.uncoded_resends);
        let wanted_ms = (frames * self.frame_interval_ms()
            + i64::try_from(parameters.status_spread_s() * 1000).unwrap_or(0)
            + STATUS_MARGIN_MS)
            * 3
            / 2;
        let mut exponent = 0u8;
        while exponent < MAX_SESSION_TIMEOUT_EXPONENT && (1i64 << exponent) * 1000 < wanted_ms {
            exponent += 1;
        }
        exponent
    }

    /// What a device still missing fragments needs, as its last status answer said.
    fn repair_need(&self, index: usize) -> RepairNeed {
        let parameters = self.campaign.parameters;
        let device = &self.devices[index];
        let expected = f64::from(parameters.expected_loss_percent) / 100.0;
        let fragments = u32::from(parameters.fragments);
        let facts = device.facts;
        let loss = facts
            .fragments_offered
            .and_then(|offered| measured_loss(facts.fragments_received, offered))
            .unwrap_or(expected);
        let missing = device.missing.unwrap_or(fragments);
        // MissingFrag counts the uncoded fragments not known yet; the coded ones the
        // device holds already make up for most of them (the code resolves them all at
        // once when the rank reaches M). What it lacks is M minus what it received.
        let lacking = match (facts.fragments_received, facts.fragments_offered) {
            (Some(received), Some(offered)) if received <= offered => {
                missing.min(fragments.saturating_sub(received))
            }
            _ => missing,
        };
        RepairNeed { lacking, loss }
    }
}
