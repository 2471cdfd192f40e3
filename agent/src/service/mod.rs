//! The agent's core loop: gateway events in, the network server's decisions, downlinks
//! out through one [`DownlinkScheduler`] per gateway, TX_ACKs back in.
//!
//! It is generic over the [`Transport`] and the [`Clock`], so the daemon runs it over
//! Semtech UDP and the simulator over its channel model with virtual time. Layers above
//! (the campaign engine, the local API) talk to it through a [`ServiceHandle`]: they
//! queue application payloads for devices and multicast frames, and receive
//! [`ServiceNotification`]s (application uplinks by FPort, joins, multicast outcomes).
//!
//! Every state change is committed to storage by the network server with its event;
//! this loop records downlinks and the TX_ACK errors it settles. Sending a downlink runs
//! as its own task (the TX_ACK wait never blocks the loop); its outcome comes back on a
//! channel and goes to the scheduler, which may ask for the RX2 retry of a refused RX1.

pub mod campaigns;
pub mod operations;
pub mod radio;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::campaign::{CampaignEngine, CampaignId, DeviceStatus, MulticastOutcome};
use crate::clock::{Clock, WallTime};
use crate::identifiers::{DevEui, GatewayEui};
use crate::lorawan::duty_cycle::{
    BandUsage, DutyCycleAccountant, DutyCycleConfig, TrafficClass, TransmitRequest,
};
use crate::lorawan::region::{Modulation, Region};
use crate::lorawan::scheduler::{
    ClassARequest, DownlinkId, DownlinkScheduler, MulticastRequest, ScheduledTx, SchedulerConfig,
    TxAckDecision, TxRadio, TxSlot,
};
use crate::lorawan::scheduler::{ExternalRequest, ExternalTiming, TxAckError};
use crate::lorawan::time::{MonotonicTime, Tmst};
use crate::network_server::{
    ClassAAnswer, NetworkServer, NetworkServerSettings, OwnershipIndex, QueuedDownlink,
    UplinkOutcome,
};
use crate::packet_forwarder::{
    DownlinkError, DownlinkSender, GatewayEvent, PassThroughDownlink, PassThroughTiming, Transport,
    TxAckOutcome, Uplink,
};
use crate::storage::{EventKind, NewEvent, Storage, StorageError};

/// How often the wall clock is compared with the monotonic one.
const CLOCK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Commands waiting for the loop; senders wait when it is full.
const COMMAND_QUEUE: usize = 1024;
/// Notifications waiting for the layer above; beyond this the oldest are not kept (the
/// events table has everything).
const NOTIFICATION_QUEUE: usize = 4096;

/// What the service needs to know.
#[derive(Debug)]
pub struct ServiceSettings {
    /// The region of the gateways.
    pub region: Region,
    /// The network server's settings.
    pub network_server: NetworkServerSettings,
    /// The scheduler's settings.
    pub scheduler: SchedulerConfig,
    /// The duty-cycle window and Class A reserve.
    pub duty_cycle: DutyCycleConfig,
    /// Transmit power in the TxPk, dBm (`None`: the region's maximum at the frequency,
    /// capped at 14 dBm).
    pub tx_power_dbm: Option<u32>,
}

/// A Class C multicast frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastFrame {
    /// The caller's reference, echoed in the outcome.
    pub reference: u64,
    /// The gateway to send it from.
    pub gateway: GatewayEui,
    /// The frame (built with the group's keys and FCnt).
    pub phy_payload: Vec<u8>,
    /// Frequency, Hz.
    pub frequency_hz: u32,
    /// Data rate index.
    pub data_rate: u8,
    /// Not before this time.
    pub not_before: MonotonicTime,
    /// Give up if it cannot end by this time.
    pub deadline: Option<MonotonicTime>,
}

/// Requests from the layers above.
#[derive(Debug)]
pub enum ServiceCommand {
    /// Send this payload in the device's next Class A answer.
    EnqueueDownlink {
        /// The device.
        dev_eui: DevEui,
        /// The payload.
        downlink: QueuedDownlink,
    },
    /// Send a multicast frame in the gaps.
    Multicast(MulticastFrame),
    /// A campaign operation; the answer comes back on `reply`.
    Campaign {
        /// What to do.
        request: campaigns::CampaignRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<campaigns::CampaignReply>,
    },
    /// A local-API operation (devices, images, status); it carries its own answer
    /// channel.
    Operation(operations::Operation),
}

/// What the service tells the layers above.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceNotification {
    /// An application payload from a device.
    ApplicationUplink {
        /// The device.
        dev_eui: DevEui,
        /// FPort.
        f_port: u8,
        /// Decrypted payload.
        payload: Vec<u8>,
        /// Its FCnt.
        f_cnt: u32,
        /// When it was received (agent's wall time).
        received: WallTime,
        /// GPS time of reception, when the gateway has GPS.
        gps_time_s: Option<u64>,
    },
    /// A device joined.
    Joined {
        /// The device.
        dev_eui: DevEui,
    },
    /// A multicast frame was accepted by the gateway (or assumed sent without TX_ACK).
    MulticastSent {
        /// The caller's reference.
        reference: u64,
    },
    /// A multicast frame was dropped.
    MulticastGaveUp {
        /// The caller's reference.
        reference: u64,
        /// Why.
        reason: String,
    },
    /// A campaign ended: every device has its result.
    CampaignFinished {
        /// The campaign.
        campaign_id: CampaignId,
        /// Devices per result.
        results: std::collections::BTreeMap<DeviceStatus, usize>,
    },
}

/// The layers above's handle on the service.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    commands: mpsc::Sender<ServiceCommand>,
    ownership: OwnershipIndex,
}

impl ServiceHandle {
    /// Sends a command; `false` if the service has stopped.
    pub async fn send(&self, command: ServiceCommand) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// The ownership index (for the pass-through, and to register devices).
    pub fn ownership(&self) -> &OwnershipIndex {
        &self.ownership
    }
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The transport stopped.
    #[error("the packet-forwarder link stopped")]
    TransportClosed,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceCounters {
    /// Uplinks received (all gateways, all devices).
    pub uplinks: u64,
    /// Uplinks handed to the pass-through (not ours).
    pub foreign_uplinks: u64,
    /// Downlinks handed to gateways (attempts).
    pub downlinks_sent: u64,
    /// Downlinks refused by a gateway.
    pub tx_ack_errors: u64,
    /// Class A answers that found no window.
    pub answers_lost: u64,
}

/// What a downlink in the scheduler carries.
#[derive(Debug, Clone)]
struct Outgoing {
    gateway: GatewayEui,
    phy_payload: Vec<u8>,
    /// Modulation per window: RX1 and RX2 for answers, the frame's for multicast.
    rx1_modulation: Modulation,
    rx2_modulation: Modulation,
    dev_eui: Option<DevEui>,
    multicast_reference: Option<u64>,
    /// The radio parameters and slot of the attempt handed to the gateway last.
    sent: Option<(TxRadio, TxSlot)>,
    /// For a pass-through downlink: where it came from (its TxPk is sent as written).
    pass_through: Option<PassThroughDownlink>,
}

type SendResult = (DownlinkId, Result<TxAckOutcome, DownlinkError>);

/// The core loop and its state.
pub struct Service<T: Transport> {
    settings: ServiceSettings,
    storage: Storage,
    server: NetworkServer,
    transport: T,
    downlinks: T::Downlinks,
    clock: Arc<dyn Clock>,
    schedulers: HashMap<GatewayEui, DownlinkScheduler>,
    /// Downlinks of the last duty-cycle window before this start, per gateway, restored
    /// into the gateway's accountant when its scheduler is created.
    airtime_history: HashMap<GatewayEui, Vec<PastTransmission>>,
    wakeups: HashMap<GatewayEui, Option<MonotonicTime>>,
    outgoing: HashMap<DownlinkId, Outgoing>,
    next_id: u64,
    commands: mpsc::Receiver<ServiceCommand>,
    notifications: mpsc::Sender<ServiceNotification>,
    send_results_tx: mpsc::UnboundedSender<SendResult>,
    send_results: mpsc::UnboundedReceiver<SendResult>,
    counters: ServiceCounters,
    tx_ack_errors_by_kind: std::collections::BTreeMap<String, u64>,
    heartbeat: Option<Box<dyn FnMut() + Send>>,
    campaigns: Option<CampaignEngine>,
    campaign_runtime: campaigns::CampaignRuntime,
    campaign_timeline: campaigns::CampaignTimeline,
}

impl<T: Transport> Service<T> {
    /// A service over `storage` and `transport`; returns it with the handle for the
    /// layers above and the notification stream.
    pub fn new(
        settings: ServiceSettings,
        storage: Storage,
        transport: T,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, ServiceHandle, mpsc::Receiver<ServiceNotification>), StorageError> {
        let ownership = OwnershipIndex::load(&storage)?;
        Self::with_ownership(settings, storage, ownership, transport, clock)
    }

    /// Like [`Service::new`] with an ownership index loaded beforehand (the one the
    /// transport's pass-through consults, so both see every join).
    pub fn with_ownership(
        settings: ServiceSettings,
        storage: Storage,
        ownership: OwnershipIndex,
        transport: T,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, ServiceHandle, mpsc::Receiver<ServiceNotification>), StorageError> {
        let server = NetworkServer::new(
            Region::new(settings.region.name(), settings.region.options()),
            settings.network_server.clone(),
            ownership.clone(),
        );
        let (command_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (notifications, notification_rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let (send_results_tx, send_results) = mpsc::unbounded_channel();
        let downlinks = transport.downlinks();
        let airtime_history =
            load_airtime_history(&storage, clock.wall_now(), settings.duty_cycle)?;
        let mut storage = storage;
        let campaign_timeline =
            campaigns::CampaignTimeline::resume(&mut storage, clock.wall_now(), clock.now())?;
        let service = Service {
            settings,
            storage,
            server,
            transport,
            downlinks,
            clock,
            schedulers: HashMap::new(),
            airtime_history,
            wakeups: HashMap::new(),
            outgoing: HashMap::new(),
            next_id: 1,
            commands,
            notifications,
            send_results_tx,
            send_results,
            counters: ServiceCounters::default(),
            tx_ack_errors_by_kind: std::collections::BTreeMap::new(),
            heartbeat: None,
            campaigns: None,
            campaign_runtime: campaigns::CampaignRuntime::default(),
            campaign_timeline,
        };
        Ok((
            service,
            ServiceHandle {
                commands: command_tx,
                ownership,
            },
            notification_rx,
        ))
    }

    /// Calls `heartbeat` from the loop about once a second while it runs (the systemd
    /// watchdog: a loop that stops turning stops the heartbeats).
    pub fn set_heartbeat(&mut self, heartbeat: Box<dyn FnMut() + Send>) {
        self.heartbeat = Some(heartbeat);
    }

    /// The counters so far.
    pub fn counters(&self) -> ServiceCounters {
        self.counters
    }

    /// Runs until `shutdown` resolves (returning the storage for a clean close) or the
    /// transport stops.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Storage, ServiceError> {
        tokio::pin!(shutdown);
        let mut clock_check = tokio::time::interval(CLOCK_CHECK_INTERVAL);
        clock_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wakeup = self.next_wakeup();
            let sleep_for = wakeup
                .map(|at| std::time::Duration::from_micros(at.micros_since(self.clock.now())));
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some((id, result)) = self.send_results.recv() => self.on_send_result(id, result)?,
                event = self.transport.recv() => match event {
                    Some(event) => self.on_gateway_event(event)?,
                    None => return Err(ServiceError::TransportClosed),
                },
                Some(command) = self.commands.recv() => self.on_command(command),
                _ = clock_check.tick() => {
                    self.check_clock()?;
                    self.tick_campaigns()?;
                    if let Some(heartbeat) = self.heartbeat.as_mut() {
                        heartbeat();
                    }
                }
                () = sleep_or_forever(sleep_for) => {}
            }
            self.settle_campaign_frames()?;
            self.poll_schedulers()?;
        }
        info!(counters = ?self.counters, "service stopping");
        Ok(self.storage)
    }

    /// When the loop must wake up without input: the schedulers' next placements, and
    /// at least once a second while downlinks await their TX_ACK (the scheduler's
    /// timeout for silent forwarders).
    fn next_wakeup(&self) -> Option<MonotonicTime> {
        let pending_check =
            (!self.outgoing.is_empty()).then(|| self.clock.now().saturating_add_micros(1_000_000));
        self.wakeups
            .values()
            .flatten()
            .copied()
            .chain(pending_check)
            .min()
    }

    fn scheduler(&mut self, gateway: GatewayEui) -> &mut DownlinkScheduler {
        let settings = &self.settings;
        let history = &mut self.airtime_history;
        let clock = &self.clock;
        self.schedulers.entry(gateway).or_insert_with(|| {
            let mut accountant =
                DutyCycleAccountant::for_region(&settings.region, settings.duty_cycle);
            let now = clock.now();
            let wall = clock.wall_now();
            for past in history.remove(&gateway).unwrap_or_default() {
                // Placed at its age before now; one older than this process is placed at
                // the process's start (counted longer than it was: never less).
                let age_us =
                    u64::try_from(wall.unix_micros().saturating_sub(past.at.unix_micros()))
                        .unwrap_or(0);
                accountant.restore(&TransmitRequest {
                    frequency_hz: past.frequency_hz,
                    bandwidth_hz: past.bandwidth_hz,
                    start: now.saturating_sub_micros(age_us),
                    airtime_us: past.airtime_us,
                    class: TrafficClass::ClassA,
                });
            }
            DownlinkScheduler::new(settings.scheduler, accountant)
        })
    }

    fn new_id(&mut self) -> DownlinkId {
        let id = DownlinkId(self.next_id);
        self.next_id += 1;
        id
    }

    fn on_gateway_event(&mut self, event: GatewayEvent) -> Result<(), ServiceError> {
        match event {
            GatewayEvent::Uplink(uplink) => self.on_uplink(&uplink),
            GatewayEvent::GatewayConnected { gateway, address } => {
                self.storage.append_event(
                    &NewEvent::new(self.clock.wall_now(), EventKind::GatewayConnected)
                        .gateway(gateway)
                        .payload(serde_json::json!({ "address": address.to_string() })),
                )?;
                Ok(())
            }
            GatewayEvent::PassThroughDownlink(downlink) => self.on_pass_through(*downlink),
            GatewayEvent::Stats { gateway, stat } => {
                debug!(%gateway, ?stat, "gateway status");
                Ok(())
            }
        }
    }

    fn on_uplink(&mut self, uplink: &Uplink) -> Result<(), ServiceError> {
        self.counters.uplinks += 1;
        self.campaign_runtime.last_gateway = Some(uplink.gateway);
        let now = self.clock.now();
        let tmst = Tmst(uplink.rxpk.timestamp());
        self.scheduler(uplink.gateway)
            .sync_concentrator_clock(tmst, uplink.received_at);
        let Some(radio) = radio::uplink_radio(&self.settings.region, uplink, self.clock.wall_now())
        else {
            // A modulation the region does not know: not a frame of ours.
            self.counters.foreign_uplinks += 1;
            return Ok(());
        };
        let mut campaign_actions = Vec::new();
        let outcome = match self.campaigns.as_mut() {
            Some(engine) => {
                let mut hook = campaigns::EngineHook {
                    engine,
                    actions: Vec::new(),
                    timeline: self.campaign_timeline,
                };
                let outcome = self.server.handle_uplink_with(
                    &mut self.storage,
                    uplink.rxpk.data(),
                    &radio,
                    &mut hook,
                )?;
                campaign_actions = hook.actions;
                outcome
            }
            None => self
                .server
                .handle_uplink(&mut self.storage, uplink.rxpk.data(), &radio)?,
        };
        match outcome {
            UplinkOutcome::NotOurs => self.counters.foreign_uplinks += 1,
            UplinkOutcome::Duplicate => {}
            UplinkOutcome::Rejected { dev_eui, reason } => {
                debug!(?dev_eui, "uplink refused: {reason}");
            }
            UplinkOutcome::Joined { dev_eui, answer } => {
                info!(%dev_eui, "device joined");
                self.notify(ServiceNotification::Joined { dev_eui });
                self.schedule_answer(answer, now)?;
            }
            UplinkOutcome::Data {
                dev_eui,
                f_cnt,
                f_port,
                payload,
                answer,
                ..
            } => {
                if let Some(f_port) = f_port.filter(|&port| port != 0) {
                    self.notify(ServiceNotification::ApplicationUplink {
                        dev_eui,
                        f_port,
                        payload,
                        f_cnt,
                        received: radio.received_wall,
                        gps_time_s: radio.gps_time.map(|time| time.seconds),
                    });
                }
                if let Some(answer) = answer {
                    self.schedule_answer(answer, now)?;
                }
            }
        }
        self.carry_out(campaign_actions)
    }

    /// Records a step of the system wall clock (an offline gateway's wrong clock
    /// corrected by NTP, say): the monotonic timeline the scheduler uses is unaffected.
    fn check_clock(&mut self) -> Result<(), ServiceError> {
        let Some(step) = self.clock.check_for_step() else {
            return Ok(());
        };
        warn!(
            delta_ms = step.delta_micros / 1_000,
            before = %step.before,
            after = %step.after,
            "the system wall clock stepped; re-anchored"
        );
        self.storage
            .append_event(&NewEvent::new(step.after, EventKind::ClockStep).payload(
                serde_json::json!({
                    "before_unix_us": step.before.unix_micros(),
                    "after_unix_us": step.after.unix_micros(),
                    "delta_us": step.delta_micros,
                    "after_plausible": step.after.is_plausible(),
                }),
            ))?;
        // A restart keeps the campaigns on their timeline, not on the stepped clock.
        self.campaign_timeline.record(
            &mut self.storage,
            self.clock.wall_now(),
            self.clock.now(),
        )?;
        Ok(())
    }

    /// A downlink from an upstream network server: admitted against the gateway's
    /// schedule and duty cycle like our own, or refused with a TX_ACK error.
    fn on_pass_through(&mut self, downlink: PassThroughDownlink) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let wanted = downlink.radio;
        let modulation = Modulation::Lora {
            spreading_factor: wanted.spreading_factor,
            bandwidth_hz: wanted.bandwidth_hz,
            coding_rate: crate::lorawan::airtime::CodingRate::Cr4_5,
        };
        let timing = match wanted.timing {
            PassThroughTiming::Immediately => ExternalTiming::Immediately,
            PassThroughTiming::AtTmst(tmst) => ExternalTiming::AtTmst(Tmst(tmst)),
        };
        let Ok(radio) = TxRadio::lorawan_downlink(wanted.frequency_hz, &modulation, wanted.phy_len)
        else {
            self.downlinks
                .answer_pass_through(&downlink, &TxAckOutcome::Rejected(TxAckError::TxFrequency));
            return Ok(());
        };
        let id = self.new_id();
        let request = ExternalRequest {
            id,
            radio,
            timing,
            class: TrafficClass::Other,
        };
        match self
            .scheduler(downlink.gateway)
            .admit_external(request, now)
        {
            Ok(tx) => {
                self.outgoing.insert(
                    id,
                    Outgoing {
                        gateway: downlink.gateway,
                        phy_payload: Vec::new(),
                        rx1_modulation: modulation,
                        rx2_modulation: modulation,
                        dev_eui: None,
                        multicast_reference: None,
                        sent: None,
                        pass_through: Some(downlink),
                    },
                );
                self.transmit(tx);
            }
            Err(error) => {
                // Busy or out of budget: both answered with a standard Semtech error, so
                // the upstream tries its alternative (RX2); the reason is logged here.
                debug!(gateway = %downlink.gateway, "pass-through downlink refused: {error}");
                self.downlinks.answer_pass_through(
                    &downlink,
                    &TxAckOutcome::Rejected(TxAckError::CollisionPacket),
                );
            }
        }
        Ok(())
    }

    fn notify(&mut self, notification: ServiceNotification) {
        if let Err(error) = self.notifications.try_send(notification) {
            warn!("a notification for the layers above was dropped: {error}");
        }
    }

    fn schedule_answer(
        &mut self,
        answer: ClassAAnswer,
        now: MonotonicTime,
    ) -> Result<(), ServiceError> {
        let region = &self.settings.region;
        let modulation_of = |dr: u8| region.data_rate(dr).map(|rate| rate.modulation);
        let (Ok(rx1_modulation), Ok(rx2_modulation)) = (
            modulation_of(answer.rx1.data_rate),
            modulation_of(answer.rx2.data_rate),
        ) else {
            warn!(dev_eui = %answer.dev_eui, "answer windows use unknown data rates; dropped");
            self.counters.answers_lost += 1;
            return Ok(());
        };
        let len = answer.phy_payload.len();
        let rx1 = TxRadio::lorawan_downlink(answer.rx1.frequency_hz, &rx1_modulation, len).ok();
        let rx2 = TxRadio::lorawan_downlink(answer.rx2.frequency_hz, &rx2_modulation, len).ok();
        let id = self.new_id();
        let request = ClassARequest {
            id,
            uplink_tmst: Tmst(answer.uplink_tmst),
            kind: answer.kind,
            rx1,
            rx2,
        };
        match self
            .scheduler(answer.gateway)
            .schedule_class_a(request, now)
        {
            Ok(tx) => {
                self.outgoing.insert(
                    id,
                    Outgoing {
                        gateway: answer.gateway,
                        phy_payload: answer.phy_payload,
                        rx1_modulation,
                        rx2_modulation,
                        dev_eui: Some(answer.dev_eui),
                        multicast_reference: None,
                        sent: None,
                        pass_through: None,
                    },
                );
                self.transmit(tx);
            }
            Err(error) => {
                self.counters.answers_lost += 1;
                warn!(dev_eui = %answer.dev_eui, "no window for the answer: {error}");
                self.storage.append_event(
                    &NewEvent::new(self.clock.wall_now(), EventKind::TxAckError)
                        .device(answer.dev_eui)
                        .gateway(answer.gateway)
                        .payload(
                            serde_json::json!({ "error": error.to_string(), "stage": "schedule" }),
                        ),
                )?;
            }
        }
        Ok(())
    }

    fn on_command(&mut self, command: ServiceCommand) {
        match command {
            ServiceCommand::EnqueueDownlink { dev_eui, downlink } => {
                self.server.enqueue_downlink(dev_eui, downlink);
            }
            ServiceCommand::Multicast(frame) => self.enqueue_multicast(frame),
            ServiceCommand::Campaign { request, reply } => {
                // The asker may have gone; the campaign's state is on disk either way.
                let _ = reply.send(self.campaign_request(request));
            }
            ServiceCommand::Operation(operation) => self.on_operation(operation),
        }
    }

    fn enqueue_multicast(&mut self, frame: MulticastFrame) {
        let reference = frame.reference;
        let modulation = match self.settings.region.data_rate(frame.data_rate) {
            Ok(rate) => rate.modulation,
            Err(error) => {
                self.multicast_settled(reference, MulticastOutcome::GivenUp(error.to_string()));
                return;
            }
        };
        let radio = match TxRadio::lorawan_downlink(
            frame.frequency_hz,
            &modulation,
            frame.phy_payload.len(),
        ) {
            Ok(radio) => radio,
            Err(error) => {
                self.multicast_settled(reference, MulticastOutcome::GivenUp(error.to_string()));
                return;
            }
        };
        let id = self.new_id();
        let request = MulticastRequest {
            id,
            radio,
            not_before: frame.not_before,
            deadline: frame.deadline,
        };
        match self.scheduler(frame.gateway).enqueue_multicast(request) {
            Ok(()) => {
                self.outgoing.insert(
                    id,
                    Outgoing {
                        gateway: frame.gateway,
                        phy_payload: frame.phy_payload,
                        rx1_modulation: modulation,
                        rx2_modulation: modulation,
                        dev_eui: None,
                        multicast_reference: Some(reference),
                        sent: None,
                        pass_through: None,
                    },
                );
            }
            Err(error) => {
                self.multicast_settled(reference, MulticastOutcome::GivenUp(error.to_string()));
            }
        }
    }

    fn poll_schedulers(&mut self) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let gateways: Vec<GatewayEui> = self.schedulers.keys().copied().collect();
        for gateway in gateways {
            let outcome = self.scheduler(gateway).poll(now);
            self.wakeups.insert(gateway, outcome.next_wakeup);
            for tx in outcome.transmit {
                self.transmit(tx);
            }
            for (id, reason) in outcome.gave_up {
                self.settle_given_up(id, reason.to_string())?;
            }
            for id in outcome.assumed_sent {
                self.settle_sent(id)?;
            }
        }
        Ok(())
    }

    /// Builds the TxPk of a placed downlink and sends it in its own task.
    fn transmit(&mut self, tx: ScheduledTx) {
        let Some(outgoing) = self.outgoing.get_mut(&tx.id) else {
            warn!(
                id = tx.id.0,
                "the scheduler placed a downlink the service does not hold"
            );
            return;
        };
        outgoing.sent = Some((tx.radio, tx.slot));
        let outgoing = &*outgoing;
        let modulation = if tx.slot == TxSlot::Rx2 {
            outgoing.rx2_modulation
        } else {
            outgoing.rx1_modulation
        };
        let power = self.settings.tx_power_dbm.unwrap_or_else(|| {
            u32::try_from(
                self.settings
                    .region
                    .max_downlink_eirp_dbm(tx.radio.frequency_hz),
            )
            .unwrap_or(14)
            .min(14)
        });
        if let Some(pass_through) = &outgoing.pass_through {
            let body = pass_through.body.clone();
            let gateway = outgoing.gateway;
            self.counters.downlinks_sent += 1;
            let sender = self.downlinks.clone();
            let results = self.send_results_tx.clone();
            let id = tx.id;
            tokio::spawn(async move {
                let result = sender.send_pass_through(gateway, body).await;
                let _ = results.send((id, result));
            });
            return;
        }
        let txpk = match radio::txpk(&tx, &modulation, power, outgoing.phy_payload.clone()) {
            Ok(txpk) => txpk,
            Err(error) => {
                warn!(
                    id = tx.id.0,
                    "cannot describe the downlink for the gateway: {error}"
                );
                return;
            }
        };
        self.counters.downlinks_sent += 1;
        let gateway = outgoing.gateway;
        let sender = self.downlinks.clone();
        let results = self.send_results_tx.clone();
        let id = tx.id;
        tokio::spawn(async move {
            let result = sender.send_downlink(gateway, txpk).await;
            let _ = results.send((id, result));
        });
    }

    fn on_send_result(
        &mut self,
        id: DownlinkId,
        result: Result<TxAckOutcome, DownlinkError>,
    ) -> Result<(), ServiceError> {
        let Some(gateway) = self.outgoing.get(&id).map(|outgoing| outgoing.gateway) else {
            return Ok(());
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            // No answer: the scheduler's own TX_ACK timeout settles it.
            Err(DownlinkError::TxAckTimeout { .. }) => return Ok(()),
            Err(error) => {
                warn!(id = id.0, %gateway, "downlink not delivered to the gateway: {error}");
                TxAckOutcome::Rejected(crate::lorawan::scheduler::TxAckError::SendFail)
            }
        };
        if let Some(pass_through) = self.outgoing.get(&id).and_then(|o| o.pass_through.as_ref()) {
            self.downlinks.answer_pass_through(pass_through, &outcome);
        }
        if let TxAckOutcome::Rejected(error) = &outcome {
            self.counters.tx_ack_errors += 1;
            *self
                .tx_ack_errors_by_kind
                .entry(error.as_wire().to_string())
                .or_default() += 1;
            let dev_eui = self.outgoing.get(&id).and_then(|outgoing| outgoing.dev_eui);
            let mut event = NewEvent::new(self.clock.wall_now(), EventKind::TxAckError)
                .gateway(gateway)
                .payload(serde_json::json!({ "error": error.to_string() }));
            if let Some(dev_eui) = dev_eui {
                event = event.device(dev_eui);
            }
            self.storage.append_event(&event)?;
        }
        let now = self.clock.now();
        match self.scheduler(gateway).on_tx_ack(id, outcome, now) {
            TxAckDecision::Sent { id, .. } => self.settle_sent(id)?,
            TxAckDecision::RetryInRx2(tx) => self.transmit(tx),
            TxAckDecision::Rescheduled { .. } => {}
            TxAckDecision::GaveUp { id, reason, .. } => {
                self.settle_given_up(id, reason.to_string())?;
            }
            TxAckDecision::UnknownDownlink(_) => {}
        }
        Ok(())
    }

    /// A downlink went out: its event (which also carries its airtime, read back after
    /// a restart to keep the duty cycle) and the notification.
    fn settle_sent(&mut self, id: DownlinkId) -> Result<(), ServiceError> {
        let Some(outgoing) = self.outgoing.remove(&id) else {
            return Ok(());
        };
        if let Some((radio, slot)) = outgoing.sent {
            let mut event = NewEvent::new(self.clock.wall_now(), EventKind::Downlink)
                .gateway(outgoing.gateway)
                .payload(serde_json::json!({
                    "slot": format!("{slot:?}"),
                    "frequency_hz": radio.frequency_hz,
                    "bandwidth_hz": radio.bandwidth_hz,
                    "airtime_us": radio.time_on_air_us,
                    "size": outgoing.phy_payload.len(),
                    "multicast_reference": outgoing.multicast_reference,
                }));
            if let Some(dev_eui) = outgoing.dev_eui {
                event = event.device(dev_eui);
            }
            self.storage.append_event(&event)?;
        }
        if let Some(reference) = outgoing.multicast_reference {
            self.multicast_settled(reference, MulticastOutcome::Sent);
        }
        Ok(())
    }

    /// Usage of each duty-cycle band of a gateway's transmitter now.
    pub fn duty_cycle_usage(&mut self, gateway: GatewayEui) -> Vec<BandUsage> {
        let now = self.clock.now();
        self.scheduler(gateway).accountant().usage(now)
    }

    fn settle_given_up(&mut self, id: DownlinkId, reason: String) -> Result<(), ServiceError> {
        if let Some(outgoing) = self.outgoing.remove(&id) {
            if let Some(reference) = outgoing.multicast_reference {
                self.multicast_settled(reference, MulticastOutcome::GivenUp(reason.clone()));
            }
            if let Some(dev_eui) = outgoing.dev_eui {
                self.counters.answers_lost += 1;
                self.storage.append_event(
                    &NewEvent::new(self.clock.wall_now(), EventKind::TxAckError)
                        .device(dev_eui)
                        .gateway(outgoing.gateway)
                        .payload(serde_json::json!({ "error": reason, "stage": "gave_up" })),
                )?;
            }
        }
        Ok(())
    }
}

/// A downlink sent before this start, as its event recorded it.
#[derive(Debug, Clone, Copy)]
struct PastTransmission {
    at: WallTime,
    frequency_hz: u32,
    bandwidth_hz: u32,
    airtime_us: u64,
}

/// The downlinks of the last duty-cycle window, per gateway, from their events.
fn load_airtime_history(
    storage: &Storage,
    now: WallTime,
    duty_cycle: DutyCycleConfig,
) -> Result<HashMap<GatewayEui, Vec<PastTransmission>>, StorageError> {
    let window = i64::try_from(duty_cycle.window_us).unwrap_or(i64::MAX);
    let since = now.saturating_add_micros(-window);
    let mut history: HashMap<GatewayEui, Vec<PastTransmission>> = HashMap::new();
    for event in storage.events_of_kind_since(EventKind::Downlink, since)? {
        let Some(gateway) = event.gateway_eui else {
            continue;
        };
        let field = |name: &str| event.payload.get(name).and_then(serde_json::Value::as_u64);
        let (Some(frequency_hz), Some(bandwidth_hz), Some(airtime_us)) = (
            field("frequency_hz"),
            field("bandwidth_hz"),
            field("airtime_us"),
        ) else {
            continue;
        };
        history.entry(gateway).or_default().push(PastTransmission {
            at: WallTime::from_unix_micros(event.time_ms.saturating_mul(1_000)),
            frequency_hz: u32::try_from(frequency_hz).unwrap_or(0),
            bandwidth_hz: u32::try_from(bandwidth_hz).unwrap_or(0),
            airtime_us,
        });
    }
    Ok(history)
}

async fn sleep_or_forever(duration: Option<std::time::Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}
