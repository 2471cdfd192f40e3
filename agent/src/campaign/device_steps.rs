//! Each device's own steps: the unicast request of every step (encoded with
//! lorawan-fuota's codecs), the answers that move a device on, the mapping of every
//! error answer to a result, retries on the device's next uplinks, and timeouts.
//!
//! A device has at most one request waiting for an answer ([`PendingRequest`]).
//! Downlinks wait in the engine's outbox for the device's next uplink, and each uplink
//! releases one for its receive window (a Class A device gets one downlink per uplink;
//! queuing more at the network server would only make them late). The answer comes
//! with a later uplink: after two uplinks without it the request was lost, and is sent
//! again, up to `max_retries` times. A device that sends nothing at all ends `Timeout` after
//! `device_timeout_s`.
//!
//! Multicast order: versions (TS006 with DevVersionReq first, so devices already on the
//! target or on other hardware stop there), TS003, TS005, TS004 → clock sync →
//! McGroupSetup → FragSessionSetup → (the campaign's Class C sessions) → after the
//! block: DevUpgradeImageReq → FragSessionDelete → McGroupDelete → DevRebootTimeReq →
//! DevVersionReq after the reboot. Unicast delivery skips the TS005 steps and sends the
//! fragments itself, one per uplink.

use lorawan_fuota::codec::firmware_management::{self, UpgradeImageStatus};
use lorawan_fuota::codec::fragmentation::{
    self, FragSessionSetup, ReceptionStatus, SessionSetupV2,
};
use lorawan_fuota::codec::{
    clock_sync, decode_all, encode_all, multicast_setup, Command, Package, PackageVersion,
    PackageVersionAns,
};
use lorawan_fuota::crypto::data_block_mic::{data_block_int_key, data_block_mic};
use lorawan_fuota::crypto::multicast::{encrypt_mc_key_for_wire, mc_ke_key, mc_root_key};
use lorawan_fuota::fec::encoder::FragmentEncoder;

use super::actions::{CampaignAction, UnicastDownlink};
use super::model::{Delivery, DeviceStatus, DeviceStep, PendingRequest};
use super::plan::{base_repair_margin, repair_margin, repair_round_size, RepairNeed};
use super::work::Work;
use super::CampaignError;
use crate::identifiers::DevEui;
use crate::storage::EventKind;
use std::collections::VecDeque;

/// FPort of each package (the defaults; devices using other ports are not supported).
pub(super) const PORT_MULTICAST: u8 = 200;
/// TS004 FPort.
pub(super) const PORT_FRAGMENTATION: u8 = 201;
/// TS003 FPort.
pub(super) const PORT_CLOCK_SYNC: u8 = 202;
/// TS006 FPort.
pub(super) const PORT_FIRMWARE: u8 = 203;

/// Encodes commands into a payload.
pub(super) fn encode<'c, C: Command<'c>>(commands: &[C]) -> Result<Vec<u8>, CampaignError> {
    let mut buffer = [0u8; 256];
    let length = encode_all(commands, &mut buffer)
        .map_err(|error| CampaignError::Encode(error.to_string()))?;
    Ok(buffer[..length].to_vec())
}

/// Whether a step is one of the setup steps before the first Class C session.
pub(super) fn is_setup_step(step: DeviceStep) -> bool {
    matches!(
        step,
        DeviceStep::DiscoverFirmware
            | DeviceStep::DiscoverMulticast
            | DeviceStep::DiscoverFragmentation
            | DeviceStep::DiscoverClockSync
            | DeviceStep::ClockSync
            | DeviceStep::GroupSetup
            | DeviceStep::FragSessionSetup
    )
}

/// The step after `step` on the way to a successful update.
fn next_step(delivery: Delivery, step: DeviceStep) -> DeviceStep {
    let multicast = delivery == Delivery::Multicast;
    match step {
        DeviceStep::DiscoverFirmware => DeviceStep::DiscoverClockSync,
        DeviceStep::DiscoverClockSync if multicast => DeviceStep::DiscoverMulticast,
        DeviceStep::DiscoverClockSync => DeviceStep::DiscoverFragmentation,
        DeviceStep::DiscoverMulticast => DeviceStep::DiscoverFragmentation,
        DeviceStep::DiscoverFragmentation => DeviceStep::ClockSync,
        DeviceStep::ClockSync if multicast => DeviceStep::GroupSetup,
        DeviceStep::ClockSync => DeviceStep::FragSessionSetup,
        DeviceStep::GroupSetup => DeviceStep::FragSessionSetup,
        DeviceStep::FragSessionSetup if multicast => DeviceStep::ReadyForSession,
        DeviceStep::FragSessionSetup => DeviceStep::UnicastFragments,
        DeviceStep::ReadyForSession => DeviceStep::SessionSetup,
        DeviceStep::SessionSetup => DeviceStep::Receiving,
        DeviceStep::Receiving | DeviceStep::UnicastFragments | DeviceStep::StatusQuery => {
            DeviceStep::UpgradeCheck
        }
        DeviceStep::UpgradeCheck => DeviceStep::DeleteFragSession,
        DeviceStep::DeleteFragSession if multicast => DeviceStep::DeleteGroup,
        DeviceStep::DeleteFragSession | DeviceStep::DeleteGroup => DeviceStep::ScheduleReboot,
        DeviceStep::ScheduleReboot | DeviceStep::ScheduleRebootCountdown => DeviceStep::AwaitReboot,
        DeviceStep::AwaitReboot => DeviceStep::ConfirmVersion,
        DeviceStep::ConfirmVersion | DeviceStep::Done => DeviceStep::Done,
    }
}

fn known_version(answer: &PackageVersionAns, package: Package) -> Result<u8, String> {
    match answer.package() {
        Some((answered, version)) if answered == package => Ok(version.number()),
        _ => Err(format!(
            "{package}: the device answered package {} version {}, which this agent does not \
             speak",
            answer.package_identifier, answer.package_version
        )),
    }
}

pub(super) fn version_of(number: Option<u8>) -> PackageVersion {
    number
        .and_then(PackageVersion::from_number)
        .unwrap_or(PackageVersion::V2)
}

impl Work<'_> {
    /// Moves a device to `step` and sends the step's request, if it has one.
    pub(super) fn set_step(
        &mut self,
        index: usize,
        step: DeviceStep,
        detail: &str,
    ) -> Result<(), CampaignError> {
        let previous = self.devices[index].step;
        self.devices[index].step = step;
        self.devices[index].pending = None;
        self.touch(index);
        if previous != step {
            self.device_event(
                index,
                EventKind::CampaignDeviceStep,
                serde_json::json!({ "from": previous, "to": step, "detail": detail }),
            );
        }
        self.send_request(index)
    }

    /// Moves a device on to the step after its current one.
    pub(super) fn advance_device(
        &mut self,
        index: usize,
        detail: &str,
    ) -> Result<(), CampaignError> {
        let device = &self.devices[index];
        let mut step = next_step(self.campaign.delivery, device.step);
        // A device that already failed only cleans up.
        if device.status != DeviceStatus::InProgress && matches!(step, DeviceStep::ScheduleReboot) {
            step = DeviceStep::Done;
        }
        self.set_step(index, step, detail)
    }

    /// Gives a device its result; it then cleans up what it set up on the device
    /// (unless it is silent).
    pub(super) fn finish_device(
        &mut self,
        index: usize,
        status: DeviceStatus,
        error: Option<String>,
    ) -> Result<(), CampaignError> {
        let device = &mut self.devices[index];
        if device.status != DeviceStatus::InProgress {
            return Ok(());
        }
        device.status = status;
        if error.is_some() {
            device.last_error.clone_from(&error);
        }
        tracing::info!(
            campaign_id = self.campaign.id,
            dev_eui = %device.dev_eui,
            status = status.as_str(),
            error = error.as_deref().unwrap_or(""),
            "device result"
        );
        self.device_event(
            index,
            EventKind::CampaignDeviceResult,
            serde_json::json!({ "status": status, "error": error }),
        );
        let facts = self.devices[index].facts;
        let cleanup = if status == DeviceStatus::Timeout || status == DeviceStatus::Successful {
            DeviceStep::Done
        } else if facts.session_cnt.is_some() {
            DeviceStep::DeleteFragSession
        } else if self.devices[index].step > DeviceStep::GroupSetup
            && self.campaign.delivery == Delivery::Multicast
        {
            DeviceStep::DeleteGroup
        } else {
            DeviceStep::Done
        };
        let cleanup = if self.devices[index].step >= DeviceStep::ScheduleReboot {
            DeviceStep::Done
        } else {
            cleanup
        };
        self.set_step(index, cleanup, status.as_str())
    }

    /// Sends the request of the device's step (again), recording it as pending.
    pub(super) fn send_request(&mut self, index: usize) -> Result<(), CampaignError> {
        let Some((fport, payload)) = self.request_of(index)? else {
            return Ok(());
        };
        self.queue_request(index, fport, payload);
        let now_ms = self.now_ms();
        let device = &mut self.devices[index];
        let attempts = device.pending.map_or(0, |p| p.attempts);
        device.pending = Some(PendingRequest {
            issued_ms: now_ms,
            uplinks_without_answer: 0,
            attempts: attempts + 1,
        });
        self.touch(index);
        Ok(())
    }

    /// The request of the device's step: `(fport, payload)`, or `None` for steps that
    /// wait for the campaign or for time. May move the device on (a step that cannot be
    /// done ends the device with an error).
    fn request_of(&mut self, index: usize) -> Result<Option<(u8, Vec<u8>)>, CampaignError> {
        let parameters = self.campaign.parameters;
        let device = self.devices[index].clone();
        let request = match device.step {
            DeviceStep::DiscoverFirmware => (
                PORT_FIRMWARE,
                encode(&[
                    firmware_management::Downlink::PackageVersionReq,
                    firmware_management::Downlink::DevVersionReq,
                ])?,
            ),
            DeviceStep::DiscoverMulticast => (
                PORT_MULTICAST,
                encode(&[multicast_setup::Downlink::PackageVersionReq])?,
            ),
            DeviceStep::DiscoverFragmentation => (
                PORT_FRAGMENTATION,
                encode(&[fragmentation::Downlink::PackageVersionReq])?,
            ),
            DeviceStep::DiscoverClockSync => (
                PORT_CLOCK_SYNC,
                encode(&[clock_sync::Downlink::PackageVersionReq])?,
            ),
            DeviceStep::ClockSync => (
                PORT_CLOCK_SYNC,
                encode(&[clock_sync::Downlink::ForceDeviceResync {
                    nb_transmissions: 1,
                }])?,
            ),
            DeviceStep::GroupSetup => {
                let root = match self.root_key(device.dev_eui)? {
                    Ok(root) => root,
                    Err(error) => {
                        self.finish_device(index, DeviceStatus::PackageNotSupported, Some(error))?;
                        return Ok(None);
                    }
                };
                let kek = mc_ke_key(&mc_root_key(root.version, &root.key));
                (
                    PORT_MULTICAST,
                    encode(&[multicast_setup::Downlink::McGroupSetupReq {
                        mc_group_id: parameters.mc_group_id,
                        mc_addr: self.campaign.mc_addr,
                        mc_key_encrypted: encrypt_mc_key_for_wire(&kek, &self.mc_key),
                        min_mc_fcnt: 0,
                        max_mc_fcnt: u32::MAX,
                    }])?,
                )
            }
            DeviceStep::FragSessionSetup => {
                let version = version_of(device.facts.fragmentation_version);
                let descriptor = self.campaign.target_version.to_le_bytes();
                let v2 = if version == PackageVersion::V2 {
                    let root = match self.root_key(device.dev_eui)? {
                        Ok(root) => root,
                        Err(error) => {
                            self.finish_device(
                                index,
                                DeviceStatus::PackageNotSupported,
                                Some(error),
                            )?;
                            return Ok(None);
                        }
                    };
                    // A new SessionCnt for every attempt: when an answer was lost, the
                    // device accepts the repeated setup instead of calling it a replay.
                    let session_cnt = self.new_session_cnt(index)?;
                    Some(SessionSetupV2 {
                        ack_reception: true,
                        session_cnt,
                        mic: data_block_mic(
                            &data_block_int_key(&root.key),
                            session_cnt,
                            parameters.frag_index,
                            descriptor,
                            self.image,
                        ),
                    })
                } else {
                    // v1 has no SessionCnt; record that a session was set up.
                    if device.facts.session_cnt.is_none() {
                        self.devices[index].facts.session_cnt = Some(0);
                    }
                    None
                };
                let mask = match self.campaign.delivery {
                    Delivery::Multicast => 1u8 << parameters.mc_group_id,
                    Delivery::Unicast => 0,
                };
                (
                    PORT_FRAGMENTATION,
                    encode(&[fragmentation::Downlink::FragSessionSetupReq(
                        FragSessionSetup {
                            frag_index: parameters.frag_index,
                            mc_group_bit_mask: mask,
                            nb_frag: parameters.fragments,
                            frag_size: u8::try_from(parameters.fragment_size).unwrap_or(u8::MAX),
                            frag_algo: 0,
                            block_ack_delay: parameters.block_ack_delay,
                            padding: parameters.padding,
                            descriptor,
                            v2,
                        },
                    )])?,
                )
            }
            DeviceStep::SessionSetup => {
                let super::model::CampaignPhase::SessionScheduling {
                    start_ms,
                    timeout_exponent,
                } = self.campaign.progress.phase
                else {
                    // The session this device was meant for is gone: wait for the next.
                    self.devices[index].step = DeviceStep::ReadyForSession;
                    return Ok(None);
                };
                let session_time = crate::clock::WallTime::from_unix_micros(start_ms * 1000)
                    .to_gps()
                    .ok_or(CampaignError::NoGpsTime)?
                    .on_air_seconds();
                (
                    PORT_MULTICAST,
                    encode(&[multicast_setup::Downlink::McClassCSessionReq {
                        mc_group_id: parameters.mc_group_id,
                        session_time,
                        time_out: timeout_exponent,
                        dl_frequency_hz: parameters.frequency_hz,
                        data_rate: parameters.data_rate,
                    }])?,
                )
            }
            DeviceStep::StatusQuery => (
                PORT_FRAGMENTATION,
                encode(&[fragmentation::Downlink::FragSessionStatusReq {
                    frag_index: parameters.frag_index,
                    participants_all: true,
                }])?,
            ),
            DeviceStep::UpgradeCheck => (
                PORT_FIRMWARE,
                encode(&[firmware_management::Downlink::DevUpgradeImageReq])?,
            ),
            DeviceStep::DeleteFragSession => (
                PORT_FRAGMENTATION,
                encode(&[fragmentation::Downlink::FragSessionDeleteReq {
                    frag_index: parameters.frag_index,
                }])?,
            ),
            DeviceStep::DeleteGroup => (
                PORT_MULTICAST,
                encode(&[multicast_setup::Downlink::McGroupDeleteReq {
                    mc_group_id: parameters.mc_group_id,
                }])?,
            ),
            DeviceStep::ScheduleReboot => {
                let delay_ms = i64::try_from(parameters.reboot_delay_s * 1000).unwrap_or(0);
                let facts = &mut self.devices[index].facts;
                facts.reboot_at_ms = Some(self.now.unix_millis() + delay_ms);
                facts.reboot_acknowledged = false;
                let at = self
                    .now
                    .saturating_add_micros(
                        i64::try_from(parameters.reboot_delay_s).unwrap_or(i64::MAX) * 1_000_000,
                    )
                    .to_gps()
                    .ok_or(CampaignError::NoGpsTime)?
                    .on_air_seconds();
                (
                    PORT_FIRMWARE,
                    encode(&[firmware_management::Downlink::DevRebootTimeReq { reboot_time: at }])?,
                )
            }
            DeviceStep::ScheduleRebootCountdown => {
                let delay_ms = i64::try_from(parameters.reboot_delay_s * 1000).unwrap_or(0);
                let facts = &mut self.devices[index].facts;
                facts.reboot_at_ms = Some(self.now.unix_millis() + delay_ms);
                facts.reboot_acknowledged = false;
                (
                    PORT_FIRMWARE,
                    encode(&[firmware_management::Downlink::DevRebootCountdownReq {
                        countdown: u32::try_from(parameters.reboot_delay_s.clamp(1, 0x00FF_FFFE))
                            .unwrap_or(60),
                    }])?,
                )
            }
            DeviceStep::ConfirmVersion => (
                PORT_FIRMWARE,
                encode(&[firmware_management::Downlink::DevVersionReq])?,
            ),
            DeviceStep::ReadyForSession
            | DeviceStep::Receiving
            | DeviceStep::UnicastFragments
            | DeviceStep::AwaitReboot
            | DeviceStep::Done => return Ok(None),
        };
        Ok(Some(request))
    }

    /// The device just sent an uplink: the first downlink waiting for it goes out in
    /// that uplink's receive window. A reboot request is built now, so the reboot time
    /// it carries is counted from when it is sent.
    pub(super) fn release_window(&mut self, dev_eui: DevEui) -> Result<(), CampaignError> {
        let Some(queued) = self.outbox.get_mut(&dev_eui).and_then(VecDeque::pop_front) else {
            return Ok(());
        };
        let (mut fport, mut payload) = (queued.fport, queued.payload);
        if let Some(index) = self.index_of(dev_eui) {
            if queued.request && self.devices[index].step == DeviceStep::ScheduleReboot {
                match self.request_of(index)? {
                    Some(fresh) => (fport, payload) = fresh,
                    None => return Ok(()),
                }
            }
        }
        self.actions.push(CampaignAction::Unicast(UnicastDownlink {
            campaign_id: self.campaign.id,
            dev_eui,
            fport,
            payload,
        }));
        Ok(())
    }

    /// A new SessionCnt for the device: above the stored one and this campaign's.
    fn new_session_cnt(&mut self, index: usize) -> Result<u16, CampaignError> {
        let dev_eui = self.devices[index].dev_eui;
        let stored = self.storage.last_frag_session_cnt(dev_eui)?;
        let pending = self.session_counters.get(&dev_eui).copied();
        let last = stored.max(pending).or(stored);
        let next = last.map_or(0, |last| last.wrapping_add(1));
        self.session_counters.insert(dev_eui, next);
        self.devices[index].facts.session_cnt = Some(next);
        self.touch(index);
        Ok(next)
    }

    /// Handles an application uplink of a device of this campaign.
    pub(super) fn handle_uplink(
        &mut self,
        index: usize,
        fport: u8,
        payload: &[u8],
    ) -> Result<(), CampaignError> {
        let now_ms = self.now_ms();
        self.devices[index].last_seen_ms = Some(now_ms);
        self.touch(index);
        let before = (self.devices[index].step, self.devices[index].pending);
        match fport {
            PORT_CLOCK_SYNC => self.clock_sync_uplink(index, payload)?,
            PORT_MULTICAST => self.multicast_uplink(index, payload)?,
            PORT_FRAGMENTATION => self.fragmentation_uplink(index, payload)?,
            PORT_FIRMWARE => self.firmware_uplink(index, payload)?,
            _ => {}
        }
        let device = &self.devices[index];
        if device.step == DeviceStep::UnicastFragments {
            if self.outbox_empty(index) {
                self.send_unicast_fragment(index)?;
            }
            return Ok(());
        }
        if (device.step, device.pending) == before {
            self.uplink_without_answer(index)?;
        }
        Ok(())
    }

    /// The device's uplink did not carry the answer to its pending request.
    fn uplink_without_answer(&mut self, index: usize) -> Result<(), CampaignError> {
        let max_retries = self.campaign.parameters.max_retries;
        let device = &mut self.devices[index];
        let Some(pending) = device.pending.as_mut() else {
            return Ok(());
        };
        pending.uplinks_without_answer += 1;
        if pending.uplinks_without_answer < 2 {
            return Ok(());
        }
        // A lost answer to a reboot request: the device may reboot as asked. Sending
        // the request again would reboot it twice; once the time is past, its version
        // tells (and a device still on the old version is asked again).
        if matches!(
            device.step,
            DeviceStep::ScheduleReboot | DeviceStep::ScheduleRebootCountdown
        ) {
            if let Some(at) = device.facts.reboot_at_ms {
                let grace_ms =
                    i64::try_from(self.campaign.parameters.reboot_grace_s * 1000).unwrap_or(0);
                if self.now.unix_millis() < at + grace_ms {
                    return Ok(());
                }
                device.retries += 1;
                return self.set_step(
                    index,
                    DeviceStep::ConfirmVersion,
                    "no answer to the reboot request: asking the version",
                );
            }
        }
        if pending.attempts > max_retries {
            let step = device.step;
            return self.timeout(
                index,
                format!(
                    "no answer to the {} request after {} attempts",
                    step.name(),
                    max_retries + 1
                ),
            );
        }
        device.retries += 1;
        self.send_request(index)
    }

    /// A device stopped answering.
    pub(super) fn timeout(&mut self, index: usize, error: String) -> Result<(), CampaignError> {
        if self.devices[index].status == DeviceStatus::InProgress {
            self.finish_device(index, DeviceStatus::Timeout, Some(error))
        } else {
            // Cleaning up after a result: give up on it.
            self.device_error(index, None, error);
            self.set_step(index, DeviceStep::Done, "cleanup unanswered")
        }
    }

    fn decode_error(&mut self, index: usize, fport: u8, error: impl std::fmt::Display) {
        self.device_error(index, Some(fport), format!("undecodable answer: {error}"));
    }

    fn clock_sync_uplink(&mut self, index: usize, payload: &[u8]) -> Result<(), CampaignError> {
        let version = version_of(self.devices[index].facts.clock_sync_version);
        for command in decode_all::<clock_sync::Uplink>(payload, version) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    self.decode_error(index, PORT_CLOCK_SYNC, error);
                    break;
                }
            };
            match command {
                clock_sync::Uplink::PackageVersionAns(answer) => {
                    if self.devices[index].step != DeviceStep::DiscoverClockSync {
                        continue;
                    }
                    match known_version(&answer, Package::ClockSync) {
                        Ok(number) => {
                            self.devices[index].facts.clock_sync_version = Some(number);
                            self.advance_device(index, "TS003 version known")?;
                        }
                        Err(error) => self.finish_device(
                            index,
                            DeviceStatus::PackageNotSupported,
                            Some(error),
                        )?,
                    }
                }
                clock_sync::Uplink::AppTimeReq {
                    device_time,
                    ans_required,
                    token,
                } => {
                    let network = self.now.to_gps().ok_or(CampaignError::NoGpsTime)?.seconds;
                    let correction = clock_sync::time_correction(network, device_time, version);
                    if correction.seconds != 0 || ans_required {
                        self.unicast(
                            index,
                            PORT_CLOCK_SYNC,
                            encode(&[clock_sync::Downlink::AppTimeAns {
                                time_correction: correction.seconds,
                                token,
                            }])?,
                        );
                    }
                    if !correction.saturated {
                        self.devices[index].facts.clock_synchronised = true;
                        self.touch(index);
                        if self.devices[index].step == DeviceStep::ClockSync {
                            self.advance_device(index, "clock synchronised")?;
                        }
                    }
                }
                clock_sync::Uplink::DeviceAppTimePeriodicityAns { .. } => {}
            }
        }
        Ok(())
    }

    fn multicast_uplink(&mut self, index: usize, payload: &[u8]) -> Result<(), CampaignError> {
        let version = version_of(self.devices[index].facts.multicast_version);
        for command in decode_all::<multicast_setup::Uplink>(payload, version) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    self.decode_error(index, PORT_MULTICAST, error);
                    break;
                }
            };
            let step = self.devices[index].step;
            match command {
                multicast_setup::Uplink::PackageVersionAns(answer)
                    if step == DeviceStep::DiscoverMulticast =>
                {
                    match known_version(&answer, Package::MulticastSetup) {
                        Ok(number) => {
                            self.devices[index].facts.multicast_version = Some(number);
                            self.advance_device(index, "TS005 version known")?;
                        }
                        Err(error) => self.finish_device(
                            index,
                            DeviceStatus::PackageNotSupported,
                            Some(error),
                        )?,
                    }
                }
                multicast_setup::Uplink::McGroupSetupAns { id_error, .. }
                    if step == DeviceStep::GroupSetup =>
                {
                    if id_error {
                        self.finish_device(
                            index,
                            DeviceStatus::MulticastSetupRefused,
                            Some(format!(
                                "McGroupSetupAns IDerror: McGroupID {} is not supported",
                                self.campaign.parameters.mc_group_id
                            )),
                        )?;
                    } else {
                        self.advance_device(index, "multicast group set up")?;
                    }
                }
                multicast_setup::Uplink::McClassCSessionAns(answer)
                    if matches!(step, DeviceStep::SessionSetup | DeviceStep::Receiving) =>
                {
                    if answer.has_error() {
                        self.finish_device(
                            index,
                            DeviceStatus::MulticastSetupRefused,
                            Some(format!(
                                "McClassCSessionAns refused the session: DRError {}, \
                                 FreqError {}, McGroupUndefined {}, reserved error bits {}",
                                answer.dr_error,
                                answer.freq_error,
                                answer.mc_group_undefined,
                                answer.reserved_errors
                            )),
                        )?;
                    } else if answer.start_missed {
                        self.device_error(
                            index,
                            Some(PORT_MULTICAST),
                            "McClassCSessionAns StartMissed: the session had started; the \
                             device waits for the next one"
                                .into(),
                        );
                        self.set_step(index, DeviceStep::ReadyForSession, "start missed")?;
                    } else if step == DeviceStep::SessionSetup {
                        if let super::model::CampaignPhase::SessionScheduling { start_ms, .. } =
                            self.campaign.progress.phase
                        {
                            self.devices[index].facts.session_start_ms = Some(start_ms);
                        }
                        self.advance_device(index, "Class C session accepted")?;
                    }
                }
                multicast_setup::Uplink::McGroupDeleteAns { .. }
                    if step == DeviceStep::DeleteGroup =>
                {
                    self.advance_device(index, "multicast group deleted")?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn fragmentation_uplink(&mut self, index: usize, payload: &[u8]) -> Result<(), CampaignError> {
        let version = version_of(self.devices[index].facts.fragmentation_version);
        for command in decode_all::<fragmentation::Uplink>(payload, version) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    self.decode_error(index, PORT_FRAGMENTATION, error);
                    break;
                }
            };
            let step = self.devices[index].step;
            match command {
                fragmentation::Uplink::PackageVersionAns(answer)
                    if step == DeviceStep::DiscoverFragmentation =>
                {
                    match known_version(&answer, Package::Fragmentation) {
                        Ok(number) => {
                            self.devices[index].facts.fragmentation_version = Some(number);
                            self.advance_device(index, "TS004 version known")?;
                        }
                        Err(error) => self.finish_device(
                            index,
                            DeviceStatus::PackageNotSupported,
                            Some(error),
                        )?,
                    }
                }
                fragmentation::Uplink::FragSessionSetupAns {
                    frag_algo_unsupported,
                    not_enough_memory,
                    frag_index_unsupported,
                    wrong_descriptor,
                    session_cnt_replay,
                    ..
                } if step == DeviceStep::FragSessionSetup => {
                    if not_enough_memory {
                        self.finish_device(
                            index,
                            DeviceStatus::NotEnoughMemory,
                            Some(format!(
                                "FragSessionSetupAns NotEnoughMemory: the device cannot hold a \
                                 {}-byte block or its decoder",
                                self.image.len()
                            )),
                        )?;
                    } else if frag_algo_unsupported || frag_index_unsupported || wrong_descriptor {
                        self.finish_device(
                            index,
                            DeviceStatus::FragSessionRefused,
                            Some(format!(
                                "FragSessionSetupAns refused the session: FragAlgoUnsupported \
                                 {frag_algo_unsupported}, FragIndexUnsupported \
                                 {frag_index_unsupported}, WrongDescriptor {wrong_descriptor}"
                            )),
                        )?;
                    } else if session_cnt_replay {
                        // The device saw this SessionCnt (or a later one): take a new one.
                        self.device_error(
                            index,
                            Some(PORT_FRAGMENTATION),
                            "FragSessionSetupAns SessionCntReplay: retrying with a higher \
                             SessionCnt"
                                .into(),
                        );
                        let max_retries = self.campaign.parameters.max_retries;
                        let attempts = self.devices[index].pending.map_or(0, |p| p.attempts);
                        if attempts > max_retries {
                            self.finish_device(
                                index,
                                DeviceStatus::FragSessionRefused,
                                Some("the device refused every SessionCnt as a replay".into()),
                            )?;
                        } else {
                            self.devices[index].retries += 1;
                            self.send_request(index)?;
                        }
                    } else {
                        if self.campaign.delivery == Delivery::Unicast {
                            let parameters = self.campaign.parameters;
                            let facts = &mut self.devices[index].facts;
                            facts.unicast_next_fragment = Some(1);
                            facts.unicast_round_end =
                                Some(parameters.fragments + parameters.first_pass_coded);
                        }
                        self.advance_device(index, "fragmentation session set up")?;
                    }
                }
                fragmentation::Uplink::FragSessionStatusAnsV1 {
                    reception,
                    not_enough_matrix_memory,
                } => {
                    if not_enough_matrix_memory {
                        self.finish_device(
                            index,
                            DeviceStatus::NotEnoughMemory,
                            Some(
                                "FragSessionStatusAns NotEnoughMatrixMemory: the device ran out \
                                 of decoder memory"
                                    .into(),
                            ),
                        )?;
                    } else {
                        self.reception_status(index, Some(reception), false)?;
                    }
                }
                fragmentation::Uplink::FragSessionStatusAnsV2 {
                    memory_error,
                    mic_error,
                    session_does_not_exist,
                    reception,
                } => {
                    if !matches!(
                        step,
                        DeviceStep::Receiving
                            | DeviceStep::StatusQuery
                            | DeviceStep::UnicastFragments
                            | DeviceStep::SessionSetup
                            | DeviceStep::ReadyForSession
                    ) {
                        continue;
                    }
                    if session_does_not_exist {
                        self.finish_device(
                            index,
                            DeviceStatus::MissingFrag,
                            Some(
                                "FragSessionStatusAns SessionDoesNotExist: the device lost its \
                                 fragmentation session"
                                    .into(),
                            ),
                        )?;
                    } else if memory_error {
                        self.finish_device(
                            index,
                            DeviceStatus::NotEnoughMemory,
                            Some(
                                "FragSessionStatusAns MemoryError: the device could not store \
                                 the fragments"
                                    .into(),
                            ),
                        )?;
                    } else {
                        self.reception_status(index, reception, mic_error)?;
                    }
                }
                fragmentation::Uplink::FragDataBlockReceivedReq {
                    frag_index,
                    mic_error,
                } => {
                    self.unicast(
                        index,
                        PORT_FRAGMENTATION,
                        encode(&[fragmentation::Downlink::FragDataBlockReceivedAns {
                            frag_index,
                        }])?,
                    );
                    if frag_index == self.campaign.parameters.frag_index {
                        self.block_status(index, 0, None, mic_error)?;
                    }
                }
                fragmentation::Uplink::FragSessionDeleteAns { .. }
                    if step == DeviceStep::DeleteFragSession =>
                {
                    self.advance_device(index, "fragmentation session deleted")?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A device reported its reception (`None`: a v2 answer without one).
    fn reception_status(
        &mut self,
        index: usize,
        reception: Option<ReceptionStatus>,
        mic_error: bool,
    ) -> Result<(), CampaignError> {
        let missing = reception.map_or(u32::from(self.campaign.parameters.fragments), |r| {
            u32::from(r.missing_frag)
        });
        let received = reception.map(|r| u32::from(r.nb_frag_received));
        self.block_status(index, missing, received, mic_error)
    }

    /// What a device said of its block: `missing` uncoded fragments, `received` counted
    /// (NbFragReceived, when it said).
    fn block_status(
        &mut self,
        index: usize,
        missing: u32,
        received: Option<u32>,
        mic_error: bool,
    ) -> Result<(), CampaignError> {
        let step = self.devices[index].step;
        if !matches!(
            step,
            DeviceStep::Receiving
                | DeviceStep::StatusQuery
                | DeviceStep::UnicastFragments
                | DeviceStep::SessionSetup
                | DeviceStep::ReadyForSession
        ) {
            return Ok(());
        }
        let on_air = self.campaign.progress.fragment_frames_on_air();
        let device = &mut self.devices[index];
        device.missing = Some(missing);
        device.facts.status_reported = true;
        if received.is_some() {
            device.facts.fragments_received = received;
            device.facts.fragments_offered = device
                .facts
                .fragment_frames_baseline
                .map(|baseline| u32::try_from(on_air.saturating_sub(baseline)).unwrap_or(u32::MAX));
            device.facts.fragments_counted_complete = Some(missing == 0);
        }
        if missing == 0 {
            device.facts.block_complete = true;
        }
        self.touch(index);
        if missing == 0 && mic_error {
            return self.finish_device(
                index,
                DeviceStatus::MicError,
                Some(
                    "the rebuilt data block failed its TS004 MIC: the device will not use it"
                        .into(),
                ),
            );
        }
        if missing == 0 {
            return self.set_step(index, DeviceStep::UpgradeCheck, "data block complete");
        }
        if step == DeviceStep::StatusQuery {
            match self.campaign.delivery {
                Delivery::Multicast => {
                    // Waits for the campaign's next repair round.
                    self.set_step(index, DeviceStep::Receiving, "fragments missing")?;
                }
                Delivery::Unicast => self.unicast_repair(index, missing)?,
            }
        }
        Ok(())
    }

    /// Unicast delivery: another round of coded fragments for what the device misses.
    fn unicast_repair(&mut self, index: usize, missing: u32) -> Result<(), CampaignError> {
        let parameters = self.campaign.parameters;
        let facts = self.devices[index].facts;
        let next = facts.unicast_next_fragment.unwrap_or(1);
        let size = repair_round_size(
            &[RepairNeed {
                lacking: missing,
                loss: f64::from(parameters.expected_loss_percent) / 100.0,
            }],
            repair_margin(
                base_repair_margin(facts.fragmentation_version),
                facts.unicast_repairs,
            ),
        );
        let end = u32::from(next) + size.saturating_sub(1);
        if facts.unicast_repairs >= parameters.max_repair_rounds
            || end > u32::from(parameters.last_fragment_number())
        {
            return self.finish_device(
                index,
                DeviceStatus::MissingFrag,
                Some(format!(
                    "{missing} fragments still missing after {} repair rounds",
                    facts.unicast_repairs
                )),
            );
        }
        let facts = &mut self.devices[index].facts;
        facts.unicast_repairs += 1;
        facts.unicast_round_end = Some(end as u16);
        self.set_step(index, DeviceStep::UnicastFragments, "repair round")
    }

    /// Unicast delivery: the next fragment in this uplink's window, or the status
    /// request after the last one of the round.
    fn send_unicast_fragment(&mut self, index: usize) -> Result<(), CampaignError> {
        let parameters = self.campaign.parameters;
        let facts = self.devices[index].facts;
        let next = facts.unicast_next_fragment.unwrap_or(1);
        let end = facts.unicast_round_end.unwrap_or(parameters.fragments);
        if next > end {
            self.devices[index].facts.status_since_ms = Some(self.now_ms());
            return self.set_step(index, DeviceStep::StatusQuery, "round sent");
        }
        let version = version_of(facts.fragmentation_version);
        let payload = self.fragment_payload(next, version)?;
        self.queue_request(index, PORT_FRAGMENTATION, payload);
        self.devices[index].facts.unicast_next_fragment = Some(next + 1);
        self.touch(index);
        Ok(())
    }

    /// The DataFragment command of fragment `n`, coded with TS004 `version`'s parity
    /// rows.
    pub(super) fn fragment_payload(
        &self,
        n: u16,
        version: PackageVersion,
    ) -> Result<Vec<u8>, CampaignError> {
        let parameters = self.campaign.parameters;
        let encoder =
            FragmentEncoder::new(self.image, usize::from(parameters.fragment_size), version)
                .map_err(|error| CampaignError::Encode(error.to_string()))?;
        let mut data = vec![0u8; usize::from(parameters.fragment_size)];
        encoder
            .fragment(u32::from(n), &mut data)
            .map_err(|error| CampaignError::Encode(error.to_string()))?;
        encode(&[fragmentation::Downlink::DataFragment {
            frag_index: parameters.frag_index,
            fragment_number: n,
            data: &data,
        }])
    }

    fn firmware_uplink(&mut self, index: usize, payload: &[u8]) -> Result<(), CampaignError> {
        for command in decode_all::<firmware_management::Uplink>(payload, PackageVersion::V1) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    self.decode_error(index, PORT_FIRMWARE, error);
                    break;
                }
            };
            let step = self.devices[index].step;
            match command {
                firmware_management::Uplink::PackageVersionAns(answer)
                    if step == DeviceStep::DiscoverFirmware =>
                {
                    if let Err(error) = known_version(&answer, Package::FirmwareManagement) {
                        self.finish_device(
                            index,
                            DeviceStatus::PackageNotSupported,
                            Some(error))?;
                    }
                }
                firmware_management::Uplink::DevVersionAns {
                    firmware_version,
                    hardware_version,
                } => match step {
                    DeviceStep::DiscoverFirmware => {
                        self.devices[index].facts.firmware_version = Some(firmware_version);
                        self.devices[index].facts.hardware_version = Some(hardware_version);
                        let dev_eui = self.devices[index].dev_eui;
                        self.firmware_versions.push((dev_eui, firmware_version));
                        if let Some(image_hardware) = self.campaign.hardware_version {
                            if image_hardware != hardware_version {
                                self.finish_device(
                                    index,
                                    DeviceStatus::WrongHardware,
                                    Some(format!(
                                        "the device's hardware version is {hardware_version:#010x}, \
                                         the image is for {image_hardware:#010x}"
                                    )))?;
                                continue;
                            }
                        }
                        if firmware_version == self.campaign.target_version {
                            self.finish_device(index, DeviceStatus::AlreadyUpToDate, None)?;
                        } else {
                            self.advance_device(index, "versions known")?;
                        }
                    }
                    DeviceStep::ConfirmVersion => {
                        let dev_eui = self.devices[index].dev_eui;
                        self.firmware_versions.push((dev_eui, firmware_version));
                        let facts = self.devices[index].facts;
                        if firmware_version == self.campaign.target_version {
                            self.finish_device(index, DeviceStatus::Successful, None)?;
                        } else if !facts.reboot_acknowledged
                            && facts.reboot_requests < self.campaign.parameters.max_retries
                        {
                            // The reboot request itself may have been lost: ask again.
                            self.devices[index].retries += 1;
                            self.devices[index].facts.reboot_requests += 1;
                            self.set_step(
                                index,
                                DeviceStep::ScheduleReboot,
                                "still on the old version and the reboot was never confirmed",
                            )?;
                        } else {
                            self.finish_device(
                                index,
                                DeviceStatus::VersionMismatch,
                                Some(format!(
                                    "after the reboot the device runs version {firmware_version:#010x}, \
                                     not the image's {:#010x} (refused or reverted by the bootloader)",
                                    self.campaign.target_version
                                )))?;
                        }
                    }
                    _ => {}
                },
                firmware_management::Uplink::DevUpgradeImageAns(status)
                    if step == DeviceStep::UpgradeCheck =>
                {
                    match status {
                        UpgradeImageStatus::Valid {
                            next_firmware_version,
                        } if next_firmware_version == self.campaign.target_version => {
                            self.advance_device(index, "image verified by the device")?;
                        }
                        UpgradeImageStatus::Valid {
                            next_firmware_version,
                        } => self.finish_device(
                            index,
                            DeviceStatus::VersionMismatch,
                            Some(format!(
                                "the device holds an image of version {next_firmware_version:#010x}, \
                                 not {:#010x}",
                                self.campaign.target_version
                            )))?,
                        UpgradeImageStatus::WrongHardware => self.finish_device(
                            index,
                            DeviceStatus::WrongHardware,
                            Some("DevUpgradeImageAns: the image is for other hardware".into()))?,
                        UpgradeImageStatus::CorruptOrBadSignature => self.finish_device(
                            index,
                            DeviceStatus::ImageRejected,
                            Some(
                                "DevUpgradeImageAns: the image is corrupt, badly signed or a \
                                 downgrade"
                                    .into(),
                            ))?,
                        UpgradeImageStatus::NoImage => self.finish_device(
                            index,
                            DeviceStatus::ImageRejected,
                            Some("DevUpgradeImageAns: the device holds no complete image".into()))?,
                    }
                }
                firmware_management::Uplink::DevRebootTimeAns { reboot_time }
                    if step == DeviceStep::ScheduleReboot =>
                {
                    if reboot_time == 0 || reboot_time == firmware_management::REBOOT_TIME_CANCEL {
                        self.set_step(
                            index,
                            DeviceStep::ScheduleRebootCountdown,
                            "the device could not take a GPS reboot time")?;
                    } else {
                        self.reboot_programmed(index, u64::from(reboot_time))?;
                    }
                }
                firmware_management::Uplink::DevRebootCountdownAns { countdown }
                    if step == DeviceStep::ScheduleRebootCountdown =>
                {
                    if countdown == 0 || countdown == firmware_management::REBOOT_COUNTDOWN_CANCEL {
                        self.finish_device(
                            index,
                            DeviceStatus::RebootRefused,
                            Some(format!("DevRebootCountdownAns {countdown:#x}: no reboot programmed")))?;
                    } else {
                        self.reboot_programmed(index, u64::from(countdown))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn reboot_programmed(&mut self, index: usize, seconds: u64) -> Result<(), CampaignError> {
        let at =
            self.now_ms() + i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
        self.devices[index].facts.reboot_at_ms = Some(at);
        self.devices[index].facts.reboot_acknowledged = true;
        self.advance_device(index, "reboot programmed")
    }

    /// Time-driven device steps: timeouts, and the version check after the reboot.
    pub(super) fn tick_device(&mut self, index: usize) -> Result<(), CampaignError> {
        let parameters = self.campaign.parameters;
        let now_ms = self.now_ms();
        let device = &self.devices[index];
        if device.step == DeviceStep::AwaitReboot {
            let due = device.facts.reboot_at_ms.unwrap_or(now_ms)
                + i64::try_from(parameters.reboot_grace_s * 1000).unwrap_or(i64::MAX / 2);
            if now_ms >= due {
                return self.advance_device(index, "reboot done");
            }
            return Ok(());
        }
        if let Some(pending) = device.pending {
            let timeout_ms = i64::try_from(parameters.device_timeout_s.saturating_mul(1000))
                .unwrap_or(i64::MAX / 2);
            let quiet_since = pending
                .issued_ms
                .max(device.last_seen_ms.unwrap_or(i64::MIN));
            if now_ms - quiet_since >= timeout_ms {
                let step = device.step;
                return self.timeout(
                    index,
                    format!(
                        "no answer to the {} request for {} s",
                        step.name(),
                        parameters.device_timeout_s
                    ),
                );
            }
        }
        Ok(())
    }
}
