//! The campaign engine inside the core loop: application uplinks go to the engine,
//! whose unicast request for the device rides in that uplink's own receive window;
//! its multicast frames are built with the group's keys and FCnt and handed to the
//! gateway's scheduler (duty cycle, Class A priority); what became of each frame goes
//! back to the engine; the loop's one-second tick lets the engine's time run.
//!
//! Engine failures are logged and recorded, never fatal to the loop: the network
//! server keeps serving every device while a campaign is stuck (its state is on disk
//! and resumes on the next call or restart).

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::{MulticastFrame, Service, ServiceError, ServiceNotification};
use crate::campaign::{
    CampaignAction, CampaignEngine, CampaignError, CampaignId, CampaignSpec, MulticastFrameId,
    MulticastOutcome,
};
use crate::clock::WallTime;
use crate::identifiers::GatewayEui;
use crate::lorawan::time::MonotonicTime;
use crate::network_server::multicast::{build_multicast_frame, MulticastGroupKeys};
use crate::network_server::{ApplicationHandler, ApplicationUplink, QueuedDownlink};
use crate::packet_forwarder::Transport;
use crate::storage::{Storage, StorageError};

/// A campaign operation asked of the loop (by the local API, the simulator, or the
/// upstream commands).
#[derive(Debug)]
pub enum CampaignRequest {
    /// Create a campaign (state `created`).
    Create(Box<CampaignSpec>),
    /// Start a created campaign.
    Start(CampaignId),
    /// Pause a running campaign.
    Pause(CampaignId),
    /// Resume a paused campaign.
    Resume(CampaignId),
    /// Cancel a campaign.
    Cancel(CampaignId),
}

/// The engine's answer to a [`CampaignRequest`]: the campaign concerned.
pub type CampaignReply = Result<CampaignId, CampaignError>;

/// The engine as the network server's [`ApplicationHandler`] for one uplink: the
/// device's unicast request goes into the answer, every other action is kept for the
/// loop to carry out once the uplink is handled.
pub(super) struct EngineHook<'a> {
    pub engine: &'a mut CampaignEngine,
    pub actions: Vec<CampaignAction>,
    pub timeline: CampaignTimeline,
}

impl ApplicationHandler for EngineHook<'_> {
    fn on_application_uplink(
        &mut self,
        storage: &mut Storage,
        uplink: &ApplicationUplink<'_>,
    ) -> Option<QueuedDownlink> {
        let actions = match self.engine.handle_uplink(
            storage,
            uplink.dev_eui,
            uplink.f_port,
            uplink.payload,
            self.timeline.at(uplink.received_at),
        ) {
            Ok(actions) => actions,
            Err(error) => {
                warn!(dev_eui = %uplink.dev_eui, "campaign engine: {error}");
                return None;
            }
        };
        let mut answer = None;
        for action in actions {
            match action {
                CampaignAction::Unicast(downlink)
                    if answer.is_none() && downlink.dev_eui == uplink.dev_eui =>
                {
                    answer = Some(QueuedDownlink {
                        f_port: downlink.fport,
                        payload: downlink.payload,
                        confirmed: false,
                    });
                }
                other => self.actions.push(other),
            }
        }
        answer
    }
}

/// The campaign side of the loop's state.
#[derive(Default)]
pub(super) struct CampaignRuntime {
    /// Multicast frames handed to a scheduler: service reference → engine frame.
    pub frames: BTreeMap<u64, MulticastFrameId>,
    /// Next service reference for a campaign frame (high bit set, apart from the
    /// references the layers above choose).
    pub next_reference: u64,
    /// The gateway that heard an uplink last: campaign frames go out from it.
    pub last_gateway: Option<GatewayEui>,
    /// Outcomes of campaign frames not yet told to the engine.
    pub settled: Vec<(MulticastFrameId, MulticastOutcome)>,
}

/// Campaign frame outcomes told to the engine per turn of the loop.
const SETTLED_PER_TURN: usize = 256;

/// The campaigns' timeline: the agent's wall time when the loop started, carried on by
/// the monotonic clock, and never stepped. A campaign's devices are synchronised to it
/// (TS003) and its Class C sessions are set on it, so a step of the system clock (NTP
/// correcting an offline gateway when the backhaul returns) does not move a session the
/// devices already wait for. Steps are recorded as events by the loop.
#[derive(Debug, Clone, Copy)]
pub(super) struct CampaignTimeline {
    pub wall: WallTime,
    pub monotonic: MonotonicTime,
}

impl CampaignTimeline {
    /// The timeline a starting loop runs on: the system clock, or, while campaigns are
    /// active and a step had moved the system clock away from the timeline they ran on
    /// before the restart, the system clock plus that recorded offset. With no active
    /// campaign the offset is forgotten: new campaigns start on the system clock.
    ///
    /// A step while the agent is stopped (NTP at boot) cannot be told from the clock
    /// itself and is not corrected.
    pub fn resume(
        storage: &mut Storage,
        wall: WallTime,
        monotonic: MonotonicTime,
    ) -> Result<CampaignTimeline, StorageError> {
        let offset_us = if storage.any_active_campaign()? {
            storage.campaign_timeline_offset()?.unwrap_or(0)
        } else {
            storage.set_campaign_timeline_offset(None, wall)?;
            0
        };
        if offset_us != 0 {
            info!(
                offset_ms = offset_us / 1_000,
                "campaigns continue on the timeline they ran on before the clock stepped"
            );
        }
        Ok(CampaignTimeline {
            wall: wall.saturating_add_micros(offset_us),
            monotonic,
        })
    }

    /// Records how far the timeline is from the system clock, which reads `wall` at
    /// `monotonic` (after a step), for [`CampaignTimeline::resume`].
    pub fn record(
        &self,
        storage: &mut Storage,
        wall: WallTime,
        monotonic: MonotonicTime,
    ) -> Result<(), StorageError> {
        let offset_us = self
            .at(monotonic)
            .unix_micros()
            .saturating_sub(wall.unix_micros());
        storage.set_campaign_timeline_offset(Some(offset_us), wall)
    }

    /// The timeline's time at `at`.
    pub fn at(&self, at: MonotonicTime) -> WallTime {
        let elapsed = i64::try_from(at.micros_since(self.monotonic)).unwrap_or(i64::MAX);
        self.wall.saturating_add_micros(elapsed)
    }
}

/// References of campaign frames have this bit set.
const CAMPAIGN_REFERENCE_BIT: u64 = 1 << 63;

impl<T: Transport> Service<T> {
    /// Now, on the campaigns' timeline.
    pub(super) fn campaign_now(&self) -> WallTime {
        self.campaign_timeline.at(self.clock.now())
    }

    /// Runs campaigns: the loop feeds `engine` uplinks, ticks and multicast outcomes.
    pub fn with_campaigns(mut self, engine: CampaignEngine) -> Self {
        self.campaigns = Some(engine);
        self
    }

    /// Carries out a campaign request now (before [`Service::run`], or from a command).
    pub fn campaign_request(&mut self, request: CampaignRequest) -> CampaignReply {
        let now = self.campaign_now();
        let Some(engine) = self.campaigns.as_mut() else {
            return Err(CampaignError::InvalidParameter(
                "this agent runs no campaign engine".into(),
            ));
        };
        let storage = &mut self.storage;
        let what = match &request {
            CampaignRequest::Create(_) => "created",
            CampaignRequest::Start(_) => "started",
            CampaignRequest::Pause(_) => "paused",
            CampaignRequest::Resume(_) => "resumed",
            CampaignRequest::Cancel(_) => "cancelled",
        };
        let (id, actions) = match request {
            CampaignRequest::Create(spec) => (engine.create_campaign(storage, &spec, now)?, vec![]),
            CampaignRequest::Start(id) => (id, engine.start(storage, id, now)?),
            CampaignRequest::Pause(id) => {
                engine.pause(storage, id, now)?;
                (id, vec![])
            }
            CampaignRequest::Resume(id) => (id, engine.resume(storage, id, now)?),
            CampaignRequest::Cancel(id) => {
                engine.cancel(storage, id, now)?;
                (id, vec![])
            }
        };
        info!(campaign_id = id, "campaign {what}");
        if let Err(error) = self.carry_out(actions) {
            warn!(campaign_id = id, "campaign actions: {error}");
        }
        Ok(id)
    }

    /// A campaign as stored (its parameters, state and progress).
    pub fn campaign(&self, id: CampaignId) -> Result<crate::campaign::Campaign, CampaignError> {
        self.storage
            .campaign(id)?
            .ok_or(CampaignError::UnknownCampaign(id))
    }

    /// The engine's tick (once a second).
    pub(super) fn tick_campaigns(&mut self) -> Result<(), ServiceError> {
        let now = self.campaign_now();
        let Some(engine) = self.campaigns.as_mut() else {
            return Ok(());
        };
        match engine.tick(&mut self.storage, now) {
            Ok(actions) => self.carry_out(actions),
            Err(CampaignError::Storage(error)) => Err(error.into()),
            Err(error) => {
                warn!("campaign engine tick: {error}");
                Ok(())
            }
        }
    }

    /// What became of a multicast frame: a campaign's goes (later in this turn of the
    /// loop, see [`Service::settle_campaign_frames`]) to the engine, anyone else's to the
    /// layers above.
    pub(super) fn multicast_settled(&mut self, reference: u64, outcome: MulticastOutcome) {
        if let Some(frame) = self.campaign_runtime.frames.remove(&reference) {
            self.campaign_runtime.settled.push((frame, outcome));
            return;
        }
        self.notify(match outcome {
            MulticastOutcome::Sent => ServiceNotification::MulticastSent { reference },
            MulticastOutcome::GivenUp(reason) => {
                ServiceNotification::MulticastGaveUp { reference, reason }
            }
        });
    }

    /// Tells the engine what became of its frames; the frames that follow go out.
    /// Bounded per turn of the loop, so a gateway that refuses everything cannot keep
    /// the loop here.
    pub(super) fn settle_campaign_frames(&mut self) -> Result<(), ServiceError> {
        for _ in 0..SETTLED_PER_TURN {
            if self.campaign_runtime.settled.is_empty() {
                break;
            }
            let (frame, outcome) = self.campaign_runtime.settled.remove(0);
            let now = self.campaign_now();
            let Some(engine) = self.campaigns.as_mut() else {
                continue;
            };
            match engine.multicast_outcome(&mut self.storage, frame, outcome, now) {
                Ok(actions) => self.carry_out(actions)?,
                Err(CampaignError::Storage(error)) => return Err(error.into()),
                Err(error) => warn!("campaign engine: {error}"),
            }
        }
        Ok(())
    }

    /// Does what the engine asked.
    pub(super) fn carry_out(&mut self, actions: Vec<CampaignAction>) -> Result<(), ServiceError> {
        for action in actions {
            match action {
                CampaignAction::Unicast(downlink) => {
                    // Not in an uplink's window: the device's next uplink carries it.
                    self.server.enqueue_downlink(
                        downlink.dev_eui,
                        QueuedDownlink {
                            f_port: downlink.fport,
                            payload: downlink.payload,
                            confirmed: false,
                        },
                    );
                }
                CampaignAction::Multicast(frame) => self.send_campaign_frame(&frame)?,
                CampaignAction::Finished {
                    campaign_id,
                    results,
                } => {
                    info!(campaign_id = %campaign_id, ?results, "campaign finished");
                    self.notify(ServiceNotification::CampaignFinished {
                        campaign_id,
                        results,
                    });
                }
            }
        }
        Ok(())
    }

    fn send_campaign_frame(
        &mut self,
        frame: &crate::campaign::MulticastFrame,
    ) -> Result<(), ServiceError> {
        let mut give_up = |reason: String| -> Result<(), ServiceError> {
            self.campaign_runtime
                .settled
                .push((frame.id, MulticastOutcome::GivenUp(reason)));
            Ok(())
        };
        let Some(gateway) = self.campaign_runtime.last_gateway else {
            return give_up("no gateway has been heard from yet".into());
        };
        let keys = MulticastGroupKeys {
            mc_addr: frame.mc_addr.to_u32(),
            mc_nwk_s_key: frame.mc_nwk_s_key,
            mc_app_s_key: frame.mc_app_s_key,
        };
        let phy_payload =
            match build_multicast_frame(&keys, frame.fcnt, frame.fport, &frame.payload) {
                Ok(phy_payload) => phy_payload,
                Err(error) => return give_up(error.to_string()),
            };
        let now = self.clock.now();
        let wall = self.campaign_now();
        let at = |time: WallTime| {
            let ahead = time.unix_micros().saturating_sub(wall.unix_micros());
            now.saturating_add_micros(u64::try_from(ahead).unwrap_or(0))
        };
        self.campaign_runtime.next_reference += 1;
        let reference = CAMPAIGN_REFERENCE_BIT | self.campaign_runtime.next_reference;
        self.campaign_runtime.frames.insert(reference, frame.id);
        self.enqueue_multicast(MulticastFrame {
            reference,
            gateway,
            phy_payload,
            frequency_hz: frame.frequency_hz,
            data_rate: frame.data_rate,
            not_before: at(frame.not_before),
            deadline: Some(at(frame.not_after)),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL: WallTime = WallTime::from_unix_seconds(1_780_000_000);

    fn storage_with_campaign(state: &str) -> (tempfile::TempDir, Storage) {
        let directory = tempfile::tempdir().unwrap();
        let storage = Storage::open(&directory.path().join("agent.db")).unwrap();
        storage
            .connection()
            .execute(
                "INSERT INTO campaigns (name, image_sha256, target_version, targets, delivery, \
                 parameters, state, progress, mc_addr, mc_key, created_at_ms, updated_at_ms) \
                 VALUES ('c', ?1, 1, '{}', 'multicast', '{}', ?2, '{}', 1, zeroblob(16), 0, 0)",
                rusqlite::params!["a".repeat(64), state],
            )
            .unwrap();
        (directory, storage)
    }

    #[test]
    fn a_restart_after_a_clock_step_keeps_the_running_campaigns_timeline() {
        let (_directory, mut storage) = storage_with_campaign("running");
        let start = MonotonicTime::from_micros(5_000_000);
        let timeline = CampaignTimeline::resume(&mut storage, WALL, start).unwrap();
        assert_eq!(timeline.at(start), WALL);
        // Ten minutes on, NTP steps the system clock an hour forward.
        let later = MonotonicTime::from_micros(5_000_000 + 600_000_000);
        let stepped_wall = WALL.saturating_add_micros(600_000_000 + 3_600_000_000);
        timeline.record(&mut storage, stepped_wall, later).unwrap();
        assert_eq!(
            storage.campaign_timeline_offset().unwrap(),
            Some(-3_600_000_000)
        );
        // The agent restarts a minute later (a new monotonic origin): the campaign's
        // time carries on from where it was, not from the stepped clock.
        let restarted_wall = stepped_wall.saturating_add_micros(60_000_000);
        let origin = MonotonicTime::from_micros(1_000);
        let resumed = CampaignTimeline::resume(&mut storage, restarted_wall, origin).unwrap();
        assert_eq!(
            resumed.at(origin),
            timeline.at(later).saturating_add_micros(60_000_000)
        );
    }

    #[test]
    fn without_an_active_campaign_the_timeline_is_the_system_clock_again() {
        let (_directory, mut storage) = storage_with_campaign("finished");
        storage
            .set_campaign_timeline_offset(Some(-3_600_000_000), WALL)
            .unwrap();
        let origin = MonotonicTime::from_micros(0);
        let resumed = CampaignTimeline::resume(&mut storage, WALL, origin).unwrap();
        assert_eq!(resumed.at(origin), WALL);
        assert_eq!(storage.campaign_timeline_offset().unwrap(), None);
    }
}
