//! [`FuotaNode`]: the sans-IO device core the firmware loop drives, and [`NodeParts`],
//! what it is built from and given back as.
//!
//! The node owns the package state machines and dispatches to them: downlinks by FPort
//! (`handle_downlink`), multicast PHYPayloads (`handle_multicast_frame`), and time
//! (`poll_action`, `poll_uplink`, `next_wakeup`). It persists its state through the
//! [`SessionStore`] after every change that must survive a reboot, and restores it in
//! [`FuotaNode::start`].

use lorawan_fuota::codec::Package;

use crate::clock_sync::{ClockSyncClient, ClockSyncStats};
use crate::config::NodeConfig;
use crate::firmware_management::{FirmwareManagement, ImageCheck};
use crate::fragment_store::{FragmentStore, Regions, ResumeSummary, SlotContent};
use crate::fragmentation::{
    Fragmentation, FragmentationEvents, FragmentationLimits, FragmentationProgress,
    FragmentationStats, Source,
};
use crate::multicast::reception::{receive, MulticastDrop, MAX_PHY_PAYLOAD};
use crate::multicast::{GroupInfo, Multicast};
use crate::outbox::{Action, Outbox, Uplink, UplinkPayload};
use crate::persistence::{PersistedState, StateRecordError};
use crate::platform::{Platform, SessionStore, UpdateAgent, STATE_RECORD_MAX_LEN};
use crate::report::{DownlinkReport, PackageReport};
use crate::time::Instant;
use crate::update::RunningImage;

/// The firmware's services the node keeps for its whole life.
struct Services<P: Platform> {
    store: P::Store,
    rng: P::Rng,
    region: P::Region,
    updater: P::Updater,
}

/// Everything of the node except the flash regions and the workspace.
struct NodeCore<P: Platform> {
    config: NodeConfig,
    services: Services<P>,
    clock: ClockSyncClient,
    multicast: Multicast,
    fragmentation: Fragmentation,
    firmware: FirmwareManagement,
    outbox: Outbox,
    stats: NodeStats,
    /// The running image is on trial and has not confirmed itself yet.
    on_trial: bool,
}

/// What a node is made of, without its workspace: built by the firmware at boot
/// ([`NodeParts::new`]) or given back by [`FuotaNode::into_parts`].
pub struct NodeParts<P: Platform> {
    core: NodeCore<P>,
    regions: Option<Regions<P>>,
    slot_content: SlotContent,
    restore_from_store: bool,
    running: RunningImage,
}

impl<P: Platform> NodeParts<P> {
    /// The parts of a node that has just booted: its state is restored from `store` in
    /// [`FuotaNode::start`].
    pub fn new(
        config: NodeConfig,
        download_slot: P::DownloadSlot,
        fec_log: P::FecLog,
        store: P::Store,
        rng: P::Rng,
        region: P::Region,
        updater: P::Updater,
    ) -> Self {
        let clock = ClockSyncClient::new(config.clock_sync_version, config.clock_sync);
        let multicast = Multicast::new(
            config.multicast_setup_version,
            config.multicast_groups,
            config.lorawan_version,
            &config.root_key,
        );
        let fragmentation = Fragmentation::new(
            config.fragmentation_version,
            FragmentationLimits {
                supported_indexes: config.fragmentation_indexes.clamp(1, 4),
                fec_capacity_percent: config.fec_capacity_percent,
                fec_minimum_percent: config.fec_minimum_percent,
                block_received_attempts: config.block_received_attempts.max(1),
            },
            &config.root_key,
        );
        let firmware = FirmwareManagement::new(
            config.firmware_version,
            config.hardware_version,
            config.trusted_keys.clone(),
            config.verify_signature,
        );
        let outbox = Outbox::new(config.uplink_limit());
        NodeParts {
            core: NodeCore {
                config,
                services: Services {
                    store,
                    rng,
                    region,
                    updater,
                },
                clock,
                multicast,
                fragmentation,
                firmware,
                outbox,
                stats: NodeStats::default(),
                on_trial: false,
            },
            regions: Some((download_slot, fec_log)),
            slot_content: SlotContent::Empty,
            restore_from_store: true,
            running: RunningImage::default(),
        }
    }

    /// What the bootloader's state says about the running image (see `crate::update`):
    /// whether it runs on trial, and what became of the last update. Without it the
    /// node assumes a confirmed image and no news of the last update.
    pub fn with_running_image(mut self, running: RunningImage) -> Self {
        self.core.on_trial = running.on_trial;
        self.running = running;
        self
    }

    /// The session store (e.g. to inspect or carry it across a simulated power cut).
    pub fn store(&self) -> &P::Store {
        &self.core.services.store
    }

    /// Takes the platform pieces back: `(download_slot, fec_log, store)`, `None` for
    /// the regions if an earlier failure lost them. For simulators that power-cycle a
    /// node: build a fresh [`NodeParts::new`] from them.
    pub fn into_platform(self) -> (Option<Regions<P>>, P::Store) {
        (self.regions, self.core.services.store)
    }
}

/// How the node's persisted state was found at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateLoad {
    /// Nothing was saved yet.
    Fresh,
    /// The saved state was restored.
    Restored,
    /// The node was recycled: its state carried over in RAM.
    CarriedOver,
    /// A record was found but refused; the node starts empty.
    Refused(StateRecordError),
    /// The store failed to read; the node starts empty.
    StoreFailed,
}

/// What [`FuotaNode::start`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartReport {
    /// The persisted state.
    pub state: StateLoad,
    /// The fragmentation session that was resumed, if one was receiving.
    pub resumed: Option<ResumeSummary>,
}

/// Counters for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStats {
    /// Multicast frames accepted.
    pub multicast_accepted: u32,
    /// Multicast frames dropped.
    pub multicast_dropped: u32,
    /// State records that could not be saved.
    pub store_failures: u32,
    /// Answers that could not be queued.
    pub answers_dropped: u32,
    /// Attempts at confirming the running image that failed (retried at the next
    /// downlink).
    pub confirm_failures: u32,
    /// TS003 counters.
    pub clock_sync: ClockSyncStats,
    /// TS004 counters.
    pub fragmentation: FragmentationStats,
}

/// An accepted multicast frame and what its package did with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastReceived {
    /// McGroupID.
    pub mc_group_id: u8,
    /// 32-bit FCnt.
    pub fcnt: u32,
    /// FPort.
    pub fport: u8,
    /// The TS004 package's report.
    pub report: PackageReport,
}

/// The device side of FUOTA, sans IO. See the crate documentation for the loop that
/// drives it.
///
/// `'w` is the lifetime of the decoder workspace the firmware lends it.
pub struct FuotaNode<'w, P: Platform> {
    core: NodeCore<P>,
    fragments: FragmentStore<'w, P>,
}

impl<'w, P: Platform> FuotaNode<'w, P> {
    /// Starts the node on `workspace` (the FEC decoder's RAM): restores the persisted
    /// state (on a fresh boot), resumes a fragmentation session that was receiving, and
    /// schedules a clock synchronisation if needed.
    pub fn start(
        parts: NodeParts<P>,
        workspace: &'w mut [u8],
        now: Instant,
    ) -> (Self, StartReport) {
        let NodeParts {
            mut core,
            regions,
            mut slot_content,
            restore_from_store,
            running,
        } = parts;
        let state = if restore_from_store {
            let (state, restored) = load_state::<P>(&mut core.services.store);
            if let Some(restored) = restored {
                core.multicast.groups = restored.groups;
                core.multicast.class_c = restored.class_c;
                core.fragmentation.session = restored.fragmentation;
                core.fragmentation.last_session_cnt = restored.last_session_cnt;
                core.fragmentation.generation = restored.session_generation;
                core.firmware.handed_over = restored.handed_over;
                slot_content = restored.slot;
            }
            state
        } else {
            StateLoad::CarriedOver
        };
        let fragments = match regions {
            Some((slot, log)) => FragmentStore::new(slot, log, workspace, slot_content),
            None => FragmentStore::lost(slot_content),
        };
        let mut node = FuotaNode { core, fragments };
        if restore_from_store
            && node
                .core
                .firmware
                .settle_handed_over_image(&running, &mut node.fragments)
        {
            node.persist();
        }
        let (resumed, events) = node.core.fragmentation.resume(
            now,
            &mut node.fragments,
            &mut node.core.services.store,
            &mut node.core.services.rng,
        );
        node.apply_fragmentation_events(events);
        node.core.firmware.slot_changed();
        if restore_from_store {
            node.core.clock.start(now);
        }
        (node, StartReport { state, resumed })
    }

    /// Gives back everything but the workspace, to restart the node on it
    /// ([`Action::RecycleWorkspace`]) or to drop it.
    pub fn into_parts(mut self) -> NodeParts<P> {
        self.flush_journal();
        let slot_content = self.fragments.content;
        NodeParts {
            core: self.core,
            regions: self.fragments.into_regions(),
            slot_content,
            restore_from_store: false,
            running: RunningImage::default(),
        }
    }

    /// Handles an application downlink received by unicast (`lorawan-device`'s
    /// `take_downlink`): `fport` and the decrypted FRMPayload.
    pub fn handle_downlink(&mut self, now: Instant, fport: u8, payload: &[u8]) -> DownlinkReport {
        self.downlink_heard();
        let Some(package) = self.core.config.ports.package(fport) else {
            return DownlinkReport::NotFuota { fport };
        };
        let core = &mut self.core;
        let report = match package {
            Package::ClockSync => core.clock.handle(
                now,
                payload,
                fport,
                &mut core.outbox,
                &mut core.services.rng,
            ),
            Package::MulticastSetup => {
                let (report, changed) = core.multicast.handle(
                    now,
                    payload,
                    fport,
                    &mut core.outbox,
                    &mut core.clock,
                    &core.services.region,
                );
                if changed {
                    self.persist();
                }
                report
            }
            Package::Fragmentation => {
                let (report, events) = core.fragmentation.handle(
                    now,
                    payload,
                    fport,
                    Source::Unicast,
                    &mut core.outbox,
                    &mut self.fragments,
                    &mut core.services.store,
                    &mut core.services.rng,
                );
                self.apply_fragmentation_events(events);
                report
            }
            Package::FirmwareManagement => {
                let (report, slot_changed) = core.firmware.handle(
                    now,
                    payload,
                    fport,
                    &mut core.outbox,
                    &mut core.clock,
                    &mut self.fragments,
                );
                if slot_changed {
                    self.persist();
                }
                report
            }
        };
        self.core.stats.answers_dropped = self.core.outbox.dropped();
        DownlinkReport::Package(report)
    }

    /// Handles a raw PHYPayload received on the multicast channel during a Class C
    /// session: checks it against the multicast groups (see
    /// [`crate::multicast::reception`]) and hands an authentic TS004 payload to the
    /// fragmentation package. Every refusal says why.
    pub fn handle_multicast_frame(
        &mut self,
        now: Instant,
        phy_payload: &[u8],
    ) -> Result<MulticastReceived, MulticastDrop> {
        let result = self.receive_multicast(now, phy_payload);
        match result {
            Ok(_) => self.core.stats.multicast_accepted += 1,
            Err(_) => self.core.stats.multicast_dropped += 1,
        }
        result
    }

    fn receive_multicast(
        &mut self,
        now: Instant,
        phy_payload: &[u8],
    ) -> Result<MulticastReceived, MulticastDrop> {
        let mut buffer = [0u8; MAX_PHY_PAYLOAD];
        let core = &mut self.core;
        let frame = receive(&mut core.multicast.groups, phy_payload, &mut buffer)?;
        match core.config.ports.package(frame.fport) {
            Some(Package::Fragmentation) => {}
            Some(_) => return Err(MulticastDrop::PackageNotAllowed { fport: frame.fport }),
            None => return Err(MulticastDrop::UnhandledFPort { fport: frame.fport }),
        }
        let (report, events) = core.fragmentation.handle(
            now,
            frame.payload,
            frame.fport,
            Source::Multicast {
                mc_group_id: frame.mc_group_id,
            },
            &mut core.outbox,
            &mut self.fragments,
            &mut core.services.store,
            &mut core.services.rng,
        );
        let received = MulticastReceived {
            mc_group_id: frame.mc_group_id,
            fcnt: frame.fcnt,
            fport: frame.fport,
            report,
        };
        self.apply_fragmentation_events(events);
        Ok(received)
    }

    fn apply_fragmentation_events(&mut self, events: FragmentationEvents) {
        if let Some(groups) = events.completed_groups {
            self.core.multicast.end_class_c_for_groups(groups);
        }
        if events.slot_changed {
            self.core.firmware.slot_changed();
        }
        if events.changed || events.completed_groups.is_some() {
            self.persist();
        }
    }

    /// The next action due at `now`, if any. Call it until it returns `None`.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        let core = &mut self.core;
        if core.fragmentation.recycle_requested {
            core.fragmentation.recycle_requested = false;
            return Some(Action::RecycleWorkspace);
        }
        let clock = *core.clock.clock();
        if let Some(update) = core
            .firmware
            .take_due_reboot(now, &clock, &mut self.fragments)
        {
            self.flush_journal();
            let install_update = match update {
                Some(update) => {
                    // Remembered before the bootloader is told, so that the next start
                    // always knows which image its outcome is about.
                    self.core.firmware.handed_over = Some(update.firmware_version);
                    self.persist();
                    self.core
                        .services
                        .updater
                        .mark_update_pending(&update)
                        .is_ok()
                }
                None => false,
            };
            return Some(Action::Reboot { install_update });
        }
        let mut changed = false;
        let action = core.multicast.poll_class_c(now, &clock, &mut changed);
        if changed {
            self.persist();
        }
        action
    }

    /// The uplink due at `now`, if any, built now: call it when the MAC can transmit,
    /// and transmit what it returns right away.
    pub fn poll_uplink(&mut self, now: Instant) -> Option<Uplink> {
        // A package may decide, when its turn comes, that nothing needs saying (a
        // status answer no longer needed): then look again.
        for _ in 0..4 {
            let fport = self.due_port(now)?;
            let core = &mut self.core;
            let limit = core.outbox.limit();
            let mut payload = UplinkPayload::new();
            core.outbox.take_port(fport, &mut payload, limit);
            let mut carries_device_time = false;
            if fport == core.config.ports.clock_sync {
                carries_device_time =
                    core.clock
                        .append_due(now, &mut payload, limit, &mut core.services.rng);
            }
            if fport == core.config.ports.fragmentation {
                let changed = core.fragmentation.append_due(
                    now,
                    &mut payload,
                    limit,
                    &self.fragments,
                    &mut core.services.rng,
                );
                if changed {
                    self.persist();
                }
            }
            if !payload.is_empty() {
                return Some(Uplink {
                    fport,
                    payload,
                    carries_device_time,
                });
            }
        }
        None
    }

    /// The port of the earliest uplink due at `now`.
    fn due_port(&self, now: Instant) -> Option<u8> {
        let ports = &self.core.config.ports;
        [
            self.core.outbox.oldest(),
            self.core.clock.next_due().map(|at| (at, ports.clock_sync)),
            self.core
                .fragmentation
                .next_due()
                .map(|at| (at, ports.fragmentation)),
        ]
        .into_iter()
        .flatten()
        .filter(|(at, _)| *at <= now)
        .min_by_key(|(at, _)| *at)
        .map(|(_, port)| port)
    }

    /// When the next uplink becomes due (its earliest send time).
    pub fn next_uplink_at(&self) -> Option<Instant> {
        [
            self.core.outbox.oldest().map(|(at, _)| at),
            self.core.clock.next_due(),
            self.core.fragmentation.next_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the next action becomes due.
    pub fn next_action_at(&self, now: Instant) -> Option<Instant> {
        let clock = self.core.clock.clock();
        [
            self.core.fragmentation.recycle_requested.then_some(now),
            self.core.firmware.next_reboot_at(now, clock),
            self.core.multicast.next_class_c_at(now, clock),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the firmware should call the node again at the latest (the earlier of
    /// [`Self::next_uplink_at`] and [`Self::next_action_at`]).
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        [self.next_uplink_at(), self.next_action_at(now)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sets the GPS clock from a source the firmware trusts (a MAC-layer DeviceTimeAns:
    /// `gps_millis` is the GPS time at `now`).
    pub fn set_gps_time(&mut self, now: Instant, gps_millis: i64) {
        self.core.clock.set_gps_time(now, gps_millis);
    }

    /// The device's GPS time at `now` in milliseconds, once synchronised.
    pub fn gps_time_millis(&self, now: Instant) -> Option<i64> {
        let clock = self.core.clock.clock();
        clock.is_synchronised().then(|| clock.gps_millis(now))
    }

    /// The TokenReq of the next AppTimeReq.
    pub fn clock_sync_token(&self) -> u8 {
        self.core.clock.token()
    }

    /// A multicast group, if defined.
    pub fn multicast_group(&self, mc_group_id: u8) -> Option<GroupInfo> {
        self.core.multicast.group_info(mc_group_id)
    }

    /// Progress of the fragmentation session, if one exists.
    pub fn fragmentation_progress(&self) -> Option<FragmentationProgress> {
        self.core.fragmentation.progress(&self.fragments)
    }

    /// The verified status of the image in the download slot (what DevUpgradeImageAns
    /// would say).
    pub fn upgrade_image(&mut self) -> ImageCheck {
        self.core.firmware.check_image(&mut self.fragments)
    }

    /// Tells the node the device has heard a downlink (after joining): an image on
    /// trial confirms itself now (see `crate::update`). [`Self::handle_downlink`] calls
    /// it; call it for downlinks that carry no application payload too.
    pub fn downlink_heard(&mut self) {
        if !self.core.on_trial {
            return;
        }
        match self.core.services.updater.confirm_running_image() {
            Ok(()) => {
                self.core.on_trial = false;
                if self.core.firmware.confirmed(&mut self.fragments) {
                    self.persist();
                }
            }
            Err(_) => {
                self.core.stats.confirm_failures =
                    self.core.stats.confirm_failures.saturating_add(1)
            }
        }
    }

    /// True while the running image is on trial and has not confirmed itself.
    pub fn image_on_trial(&self) -> bool {
        self.core.on_trial
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            clock_sync: self.core.clock.stats(),
            fragmentation: self.core.fragmentation.stats(),
            ..self.core.stats
        }
    }

    /// Appends the fragment journal's window held in RAM (the firmware calls it before
    /// a reset it did not get from [`Action::Reboot`], e.g. on a low-battery warning).
    pub fn flush_journal(&mut self) {
        if !self.fragments.flush_journal(&mut self.core.services.store) {
            self.core.stats.store_failures = self.core.stats.store_failures.saturating_add(1);
        }
    }

    /// Saves the state record.
    fn persist(&mut self) {
        let state = PersistedState {
            last_session_cnt: self.core.fragmentation.last_session_cnt,
            session_generation: self.core.fragmentation.generation,
            groups: self.core.multicast.groups.clone(),
            class_c: self.core.multicast.class_c,
            fragmentation: self.core.fragmentation.session,
            slot: self.fragments.content,
            handed_over: self.core.firmware.handed_over,
        };
        let saved = match state.encode() {
            Some(record) => self.core.services.store.save_state(&record).is_ok(),
            None => false,
        };
        if !saved {
            self.core.stats.store_failures = self.core.stats.store_failures.saturating_add(1);
        }
    }
}

fn load_state<P: Platform>(store: &mut P::Store) -> (StateLoad, Option<PersistedState>) {
    let mut buffer = [0u8; STATE_RECORD_MAX_LEN];
    match store.load_state(&mut buffer) {
        Ok(None) => (StateLoad::Fresh, None),
        Ok(Some(length)) => match buffer.get(..length).map(PersistedState::decode) {
            Some(Ok(state)) => (StateLoad::Restored, Some(state)),
            Some(Err(error)) => (StateLoad::Refused(error), None),
            None => (StateLoad::Refused(StateRecordError::Truncated), None),
        },
        Err(_) => (StateLoad::StoreFailed, None),
    }
}
