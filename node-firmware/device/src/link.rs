//! The device's main loop: lorawan-device (OTAA, Class A) and the FUOTA node driven
//! together, until the device must reset.
//!
//! - The node's actions first: a Class C session starts or ends the multicast receiver,
//!   a reboot (the MAC record saved first) ends the loop, a new fragmentation session
//!   restarts the node on its workspace.
//! - An image on trial that is past its deadline ends the loop (the bootloader reverts it).
//! - Not joined: a join request, when the transmit budget allows, each at the next data
//!   rate of `join_data_rates` (from the fastest down: a device out of the gateway's
//!   reach at SF7 joins at the slowest one that reaches). The session's uplinks keep the
//!   data rate its join was accepted at, across resets too: lorawan-device does not apply
//!   the data rate of a LinkADRReq, and a device that stops being heard (unacknowledged
//!   confirmed uplinks) joins again, from the fastest.
//! - Within the transmit budget: the node's answers first, then the periodic application
//!   uplink (one in `confirmed_uplink_every` confirmed: three unacknowledged in a row
//!   mean the network forgot the session, and the device joins again). The periodic
//!   uplink waits while a Class C session runs: each uplink and its RX windows take the
//!   radio off the multicast channel for seconds, and fragments sent meanwhile are lost.
//! - Otherwise the radio listens on the multicast channel (when a Class C session runs)
//!   until the next thing is due.

use core::time::Duration;

use embassy_futures::select::{select, Either};
use fuota_node::{Action, FuotaNode, Instant, NodeParts, Platform, StartReport, StateLoad};
use lorawan_device::async_device::radio::{PhyRxTx, Timer};
use lorawan_device::async_device::{Device, Error, JoinMode, JoinResponse, SendResponse, Timings};
use lorawan_device::default_crypto::DefaultFactory;
use lorawan_device::region::{Configuration, Region, DR};
use lorawan_device::{mac, AppEui, AppKey, DevEui, Downlink, RngCore};

use crate::fmt::Loggable;
use crate::mac_state::{dev_addr_value, DevNonceRng, DevNonceSlot, MacRecordStore, MacState};
use crate::multicast_rx::MulticastReceiver;
use crate::transmit_budget::TransmitBudget;
use crate::trial::TrialDeadline;
use crate::Clock;

/// Radio buffer size: the largest LoRa frame.
pub const RADIO_BUFFER_LEN: usize = 256;
/// Downlinks buffered between two drains.
pub const DOWNLINK_QUEUE_LEN: usize = 3;
/// Radio failures in a row after which the radio is taken to be wedged (a reset is the
/// only way to initialise it again through lora-phy's `LorawanRadio`).
pub const MAX_CONSECUTIVE_RADIO_FAILURES: u32 = 5;
/// How long the node is left alone after it had an uplink due but nothing to say.
const NODE_QUIET_RETRY_MS: u64 = 1_000;
/// The longest the loop sleeps when nothing is due (a Class C session whose end the
/// node did not schedule).
const IDLE_WAKEUP_MS: u64 = 3_600_000;
/// How long the device waits before asking again when it may not join at all.
const JOIN_REFUSED_RETRY_MS: u64 = 3_600_000;

/// lorawan-device as the link runs it.
pub type LinkDevice<'a, R, T, G> =
    Device<R, DefaultFactory, T, DevNonceRng<'a, G>, RADIO_BUFFER_LEN, DOWNLINK_QUEUE_LEN>;

/// The device's LoRaWAN identity (LoRaWAN 1.0.x OTAA).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// DevEUI, most significant byte first (as network servers display it).
    pub dev_eui: [u8; 8],
    /// JoinEUI (AppEUI), most significant byte first.
    pub join_eui: [u8; 8],
    /// AppKey, in the order network servers display it.
    pub app_key: [u8; 16],
}

/// How the link behaves.
#[derive(Clone, Copy)]
pub struct LinkConfig {
    /// Who the device is.
    pub credentials: Credentials,
    /// Regional parameters.
    pub region: Region,
    /// Start with the session saved before the reset instead of joining again.
    pub resume_session_after_reset: bool,
    /// FPort of the periodic application uplink.
    pub uplink_fport: u8,
    /// Time between periodic uplinks (the transmit budget may stretch it).
    pub uplink_period: Duration,
    /// One periodic uplink in this many is confirmed.
    pub confirmed_uplink_every: u32,
    /// Confirmed uplinks unacknowledged in a row after which the device joins again.
    pub rejoin_after_unanswered: u32,
    /// How long an image on trial may take to hear a downlink.
    pub trial_deadline: Duration,
    /// The data rates join requests use in turn, from the first again after each join
    /// (fastest first, so that a device near the gateway spends little airtime). Empty:
    /// every join request at lorawan-device's data rate.
    pub join_data_rates: &'static [DR],
}

/// Why the link stopped: the device must reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ResetReason {
    /// The node asked for it (TS006 reboot); `install_update` when an update was
    /// handed to the bootloader. The MAC record was saved.
    Reboot {
        /// An update waits for the bootloader.
        install_update: bool,
    },
    /// The image on trial heard no downlink in time: the bootloader reverts it.
    TrialExpired,
    /// The radio failed [`MAX_CONSECUTIVE_RADIO_FAILURES`] times in a row.
    RadioUnresponsive,
}

/// What a sent uplink came to.
enum Sent {
    /// Sent; `acknowledged` for a confirmed uplink that got its ACK.
    Done { acknowledged: bool },
    /// Not sent, or sent without the expected answer; the session goes on.
    Failed,
    /// The session is gone (frame counter exhausted, not joined): join again.
    SessionLost,
}

/// How a node's run ended.
enum Ended {
    /// It asked for its workspace back (a new fragmentation session).
    Recycle,
    /// The device must reset.
    Reset(ResetReason),
}

/// The device's LoRaWAN side and the firmware's own state around the node.
pub struct Link<'a, R: PhyRxTx + Timings, T: Timer, G: RngCore, K, S> {
    config: LinkConfig,
    device: LinkDevice<'a, R, T, G>,
    clock: K,
    budget: TransmitBudget,
    mac: MacState<'a, S>,
    multicast: MulticastReceiver,
    radio_health: RadioHealth,
    trial_deadline: TrialDeadline,
    joined: bool,
    /// Join requests sent since the last join (or the start): picks the data rate.
    join_attempts: usize,
    next_app_uplink: Instant,
    app_uplinks: u32,
    unanswered_confirmed: u32,
    /// The node had an uplink due but nothing to say (a package decided so when asked):
    /// not asked again before this, so that a due time it keeps does not spin the loop.
    node_quiet_until: Instant,
    /// What the node found when it last started.
    last_start: Option<StartReport>,
}

impl<'a, R, T, G, K, S> Link<'a, R, T, G, K, S>
where
    R: PhyRxTx + Timings,
    R::PhyError: Loggable,
    T: Timer,
    G: RngCore,
    K: Clock,
    S: MacRecordStore,
{
    /// The link at the application's start: the MAC record loaded from `store`, the
    /// saved session resumed (if the configuration says so), the trial deadline counting.
    /// `rng` is a true RNG (lorawan-device's draws, the budget's jitter); `dev_nonce_slot`
    /// lives as long as the link.
    pub fn new(
        config: LinkConfig,
        radio: R,
        timer: T,
        mut rng: G,
        store: Option<S>,
        dev_nonce_slot: &'a DevNonceSlot,
        clock: K,
    ) -> Self {
        let now = clock.now();
        let mac = MacState::load(store, dev_nonce_slot);
        let saved_session = if config.resume_session_after_reset {
            mac.saved_session()
        } else {
            None
        };
        let joined = saved_session.is_some();
        if let Some(session) = &saved_session {
            info!(
                "resuming the session of DevAddr {:08x} at FCntUp {}",
                dev_addr_value(session.devaddr()),
                session.fcnt_up
            );
        }
        let jitter_seed = rng.next_u32();
        let mut device = Device::new_with_session(
            Configuration::new(config.region),
            radio,
            timer,
            DevNonceRng::new(rng, dev_nonce_slot),
            saved_session,
        );
        let session_data_rate = mac.saved_data_rate().and_then(data_rate_of_index);
        if joined {
            if let Some(data_rate) = session_data_rate {
                device.set_datarate(data_rate);
            }
        }
        // The duty cycle across the reset. With a session saved, the device sent no join
        // request since (each saves the record without one first): its last frames were
        // the session's uplinks. Otherwise they may have been join requests at any of
        // the join data rates, or the lost session's uplinks at one of them.
        let budget = if mac.may_have_transmitted() {
            let slowest = session_data_rate
                .or_else(|| {
                    config
                        .join_data_rates
                        .iter()
                        .copied()
                        .min_by_key(|dr| *dr as u8)
                })
                .unwrap_or_else(|| device.get_datarate());
            TransmitBudget::after_reset(now, jitter_seed, slowest)
        } else {
            TransmitBudget::new(now, jitter_seed)
        };
        Link {
            config,
            device,
            clock,
            budget,
            mac,
            multicast: MulticastReceiver::new(),
            radio_health: RadioHealth::default(),
            trial_deadline: TrialDeadline::new(now, config.trial_deadline),
            joined,
            join_attempts: 0,
            next_app_uplink: now,
            app_uplinks: 0,
            unanswered_confirmed: 0,
            node_quiet_until: now,
            last_start: None,
        }
    }

    /// lorawan-device, for what the board needs of it (the radio, the session).
    pub fn device(&mut self) -> &mut LinkDevice<'a, R, T, G> {
        &mut self.device
    }

    /// The MAC record as it stands.
    pub fn mac_record(&self) -> &fuota_node::MacRecord {
        self.mac.record()
    }

    /// What the node found when it last started (its saved state, a download resumed).
    pub fn last_start(&self) -> Option<StartReport> {
        self.last_start
    }

    /// Runs the node on `workspace` (restarted on it for each new fragmentation session)
    /// until the device must reset.
    pub async fn run<P: Platform>(
        &mut self,
        mut parts: NodeParts<P>,
        workspace: &mut [u8],
    ) -> ResetReason {
        loop {
            let (mut node, report) = node_start(parts, workspace, self.clock.now());
            log_start(&report);
            self.last_start = Some(report);
            match self.drive(&mut node).await {
                Ended::Recycle => {
                    info!("fuota node restarts on its workspace for a new fragmentation session");
                    parts = node.into_parts();
                }
                Ended::Reset(reason) => {
                    // The fragments the journal still holds in RAM go to flash first, so
                    // that the download resumes with them (the node flushed it itself
                    // before a reboot it asked for).
                    node_flush_journal(&mut node);
                    return reason;
                }
            }
        }
    }

    async fn drive<P: Platform>(&mut self, node: &mut FuotaNode<'_, P>) -> Ended {
        loop {
            while let Some(action) = node_poll_action(node, self.clock.now()) {
                match action {
                    Action::StartClassC {
                        mc_group_id,
                        frequency_hz,
                        data_rate,
                    } => {
                        if self.multicast.start(frequency_hz, data_rate) {
                            info!(
                                "class C session of group {} on {} Hz DR{}",
                                mc_group_id, frequency_hz, data_rate
                            );
                        } else {
                            warn!("class C at DR{} cannot be received here", data_rate);
                        }
                    }
                    Action::ReturnToClassA => {
                        info!("class C session over: class A");
                        self.multicast.end();
                        if let Err(failure) = self.device.get_mut_radio().low_power().await {
                            self.radio_health.failed(&failure);
                        }
                    }
                    Action::Reboot { install_update } => {
                        info!("rebooting (update handed over: {})", install_update);
                        self.mac.before_reset(self.device.get_session());
                        return Ended::Reset(ResetReason::Reboot { install_update });
                    }
                    Action::RecycleWorkspace => return Ended::Recycle,
                }
            }
            if self.radio_health.wedged() {
                error!("radio unresponsive; resetting");
                return Ended::Reset(ResetReason::RadioUnresponsive);
            }
            if self
                .trial_deadline
                .expired(node.image_on_trial(), self.clock.now())
            {
                warn!("image on trial heard no downlink in time; resetting to revert it");
                return Ended::Reset(ResetReason::TrialExpired);
            }
            if !self.joined {
                self.join(node.image_on_trial()).await;
                continue;
            }
            let now = self.clock.now();
            if now >= self.budget.next_transmission() {
                if now >= self.node_quiet_until {
                    if let Some(uplink) = node_poll_uplink(node, now) {
                        self.send(node, uplink.fport, &uplink.payload, false).await;
                        continue;
                    }
                    self.node_quiet_until = now.plus_millis(NODE_QUIET_RETRY_MS);
                }
                if now >= self.next_app_uplink && !self.multicast.in_session() {
                    self.send_app_uplink(node).await;
                    continue;
                }
            }
            let wake = self.next_wakeup(node);
            let mut frame = [0u8; RADIO_BUFFER_LEN];
            let received = select(
                self.multicast
                    .receive(self.device.get_mut_radio(), &mut frame),
                self.clock.sleep_until(wake),
            )
            .await;
            match received {
                Either::First(Ok((len, quality))) => {
                    self.radio_health.succeeded();
                    let received = frame.get(..len).unwrap_or(&frame);
                    match node_multicast(node, self.clock.now(), received) {
                        Ok(accepted) => debug!(
                            "multicast group {} FCnt {} (RSSI {})",
                            accepted.mc_group_id,
                            accepted.fcnt,
                            quality.rssi()
                        ),
                        Err(_) => debug!("a frame on the multicast channel was not for us"),
                    }
                }
                Either::First(Err(failure)) => self.radio_health.failed(&failure),
                Either::Second(()) => {}
            }
        }
    }

    /// When the loop must look again: the node's next action or (within the transmit
    /// budget) uplink, the next periodic uplink (not during a Class C session: the
    /// session's end is a node action), the trial deadline.
    fn next_wakeup<P: Platform>(&self, node: &FuotaNode<'_, P>) -> Instant {
        let transmit_from = self.budget.next_transmission();
        let mut wake = if self.multicast.in_session() {
            self.clock.now().plus_millis(IDLE_WAKEUP_MS)
        } else {
            self.next_app_uplink.max(transmit_from)
        };
        if let Some(at) = node.next_uplink_at() {
            wake = wake.min(at.max(transmit_from).max(self.node_quiet_until));
        }
        if let Some(at) = node.next_action_at(self.clock.now()) {
            wake = wake.min(at);
        }
        if let Some(at) = self.trial_deadline.at(node.image_on_trial()) {
            wake = wake.min(at);
        }
        wake
    }

    /// One join request, when the transmit budget allows; on success the session is
    /// saved and the periodic uplinks start.
    async fn join(&mut self, on_trial: bool) {
        let turn = self.budget.next_transmission();
        let wake = match self.trial_deadline.at(on_trial) {
            Some(deadline) => turn.min(deadline),
            None => turn,
        };
        self.clock.sleep_until(wake).await;
        if self.clock.now() < turn {
            // Woken for the trial deadline: the caller checks it.
            return;
        }
        let credentials = self.config.credentials;
        let join_mode = JoinMode::OTAA {
            deveui: DevEui::from(eui_lsb_first(credentials.dev_eui)),
            appeui: AppEui::from(eui_lsb_first(credentials.join_eui)),
            appkey: AppKey::from(credentials.app_key),
        };
        let dev_nonce = match self.mac.before_join() {
            Ok(nonce) => nonce,
            Err(refused) => {
                error!("no join possible: {:?}", refused);
                let retry = self.clock.now().plus_millis(JOIN_REFUSED_RETRY_MS);
                self.clock.sleep_until(retry).await;
                return;
            }
        };
        self.multicast.stop();
        let rates = self.config.join_data_rates;
        if let Some(rate) = rates.get(self.join_attempts % rates.len().max(1)) {
            self.device.set_datarate(*rate);
        }
        self.join_attempts = self.join_attempts.wrapping_add(1);
        let data_rate = self.device.get_datarate();
        info!(
            "join request (DevNonce {}) at DR{}",
            dev_nonce, data_rate as u8
        );
        let outcome = self.device.join(&join_mode).await;
        self.mac.after_join_request();
        let accepted = matches!(outcome, Ok(JoinResponse::JoinSuccess));
        let now = self.clock.now();
        self.budget.record_join_request(now, data_rate, accepted);
        match outcome {
            Ok(JoinResponse::JoinSuccess) => {
                self.radio_health.succeeded();
                if let Some(session) = self.device.get_session() {
                    info!(
                        "joined as DevAddr {:08x}",
                        dev_addr_value(session.devaddr())
                    );
                    self.mac.joined(session, data_rate as u8);
                }
                self.joined = true;
                self.join_attempts = 0;
                self.unanswered_confirmed = 0;
                self.next_app_uplink = now;
            }
            Ok(JoinResponse::NoJoinAccept) => {
                self.radio_health.succeeded();
                let wait_ms = self.budget.next_transmission().millis_since(now);
                info!("not joined; next join request in {} s", wait_ms / 1_000);
            }
            Err(Error::Radio(failure)) => self.radio_health.failed(&failure),
            Err(Error::Mac(failure)) => warn!("join request refused by the MAC: {:?}", failure),
        }
    }

    /// The periodic application uplink (a counter), confirmed one time in
    /// `confirmed_uplink_every`; too many unacknowledged in a row and the device joins
    /// again.
    async fn send_app_uplink<P: Platform>(&mut self, node: &mut FuotaNode<'_, P>) {
        self.next_app_uplink = self
            .clock
            .now()
            .plus_millis(crate::millis_of(self.config.uplink_period));
        let confirmed = self
            .app_uplinks
            .is_multiple_of(self.config.confirmed_uplink_every.max(1));
        let payload = self.app_uplinks.to_be_bytes();
        self.app_uplinks = self.app_uplinks.wrapping_add(1);
        match self
            .send(node, self.config.uplink_fport, &payload, confirmed)
            .await
        {
            Sent::Done { acknowledged: true } => self.unanswered_confirmed = 0,
            Sent::Done {
                acknowledged: false,
            } if confirmed => {
                self.unanswered_confirmed += 1;
                warn!(
                    "confirmed uplink not acknowledged ({} in a row)",
                    self.unanswered_confirmed
                );
                if self.unanswered_confirmed >= self.config.rejoin_after_unanswered {
                    warn!("the network no longer answers this session: joining again");
                    self.session_lost();
                }
            }
            Sent::Done { .. } | Sent::Failed | Sent::SessionLost => {}
        }
    }

    /// Sends one uplink, then hands the downlinks it brought to the node.
    async fn send<P: Platform>(
        &mut self,
        node: &mut FuotaNode<'_, P>,
        fport: u8,
        payload: &[u8],
        confirmed: bool,
    ) -> Sent {
        if let Some(session) = self.device.get_session() {
            self.mac.before_uplink(session);
        }
        self.multicast.stop();
        let data_rate = self.device.get_datarate();
        let outcome = self.device.send(payload, fport, confirmed).await;
        self.budget
            .record_uplink(self.clock.now(), data_rate, payload.len());
        let sent = match outcome {
            Ok(SendResponse::DownlinkReceived(fcnt_down)) => {
                self.radio_health.succeeded();
                debug!(
                    "uplink on FPort {} answered (FCntDown {})",
                    fport, fcnt_down
                );
                // A downlink without application payload proves the link too.
                node.downlink_heard();
                Sent::Done { acknowledged: true }
            }
            Ok(SendResponse::RxComplete) | Ok(SendResponse::NoAck) => {
                self.radio_health.succeeded();
                Sent::Done {
                    acknowledged: false,
                }
            }
            Ok(SendResponse::SessionExpired) => {
                warn!("frame counter exhausted: session expired");
                self.session_lost();
                Sent::SessionLost
            }
            Err(Error::Mac(mac::Error::NotJoined)) => {
                self.session_lost();
                Sent::SessionLost
            }
            Err(Error::Mac(failure)) => {
                warn!("uplink refused by the MAC: {:?}", failure);
                Sent::Failed
            }
            Err(Error::Radio(failure)) => {
                self.radio_health.failed(&failure);
                Sent::Failed
            }
        };
        self.deliver_downlinks(node);
        sent
    }

    /// Hands the buffered downlinks to the node in arrival order (lorawan-device's
    /// `take_downlink` returns the newest first).
    fn deliver_downlinks<P: Platform>(&mut self, node: &mut FuotaNode<'_, P>) {
        let mut newest_first: [Option<Downlink>; DOWNLINK_QUEUE_LEN] = Default::default();
        let mut count = 0;
        while count < DOWNLINK_QUEUE_LEN {
            let Some(downlink) = self.device.take_downlink() else {
                break;
            };
            newest_first[count] = Some(downlink);
            count += 1;
        }
        for downlink in newest_first[..count].iter().rev().flatten() {
            debug!(
                "downlink on FPort {} ({} bytes)",
                downlink.fport,
                downlink.data.len()
            );
            node_downlink(node, self.clock.now(), downlink);
        }
    }

    fn session_lost(&mut self) {
        self.joined = false;
        self.mac.session_lost();
    }
}

/// lorawan-device's data rate of a region's DR index.
fn data_rate_of_index(index: u8) -> Option<DR> {
    const DATA_RATES: [DR; 16] = [
        DR::_0,
        DR::_1,
        DR::_2,
        DR::_3,
        DR::_4,
        DR::_5,
        DR::_6,
        DR::_7,
        DR::_8,
        DR::_9,
        DR::_10,
        DR::_11,
        DR::_12,
        DR::_13,
        DR::_14,
        DR::_15,
    ];
    DATA_RATES.get(usize::from(index)).copied()
}

/// lorawan-device takes EUIs least significant byte first (the on-air order).
pub const fn eui_lsb_first(msb_first: [u8; 8]) -> [u8; 8] {
    let mut lsb_first = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        lsb_first[i] = msb_first[7 - i];
        i += 1;
    }
    lsb_first
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_start<P: Platform>(
    parts: NodeParts<P>,
    workspace: &mut [u8],
    now: Instant,
) -> (FuotaNode<'_, P>, StartReport) {
    FuotaNode::start(parts, workspace, now)
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_poll_action<P: Platform>(node: &mut FuotaNode<'_, P>, now: Instant) -> Option<Action> {
    node.poll_action(now)
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_poll_uplink<P: Platform>(
    node: &mut FuotaNode<'_, P>,
    now: Instant,
) -> Option<fuota_node::Uplink> {
    node.poll_uplink(now)
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_multicast<P: Platform>(
    node: &mut FuotaNode<'_, P>,
    now: Instant,
    frame: &[u8],
) -> Result<fuota_node::MulticastReceived, fuota_node::MulticastDrop> {
    node.handle_multicast_frame(now, frame)
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_flush_journal<P: Platform>(node: &mut FuotaNode<'_, P>) {
    node.flush_journal();
}

/// The node's entry points are called through these non-inlined functions: inlined
/// into the async state machines that call them they were copied there, 3.5 KB more
/// code on the STM32WL (the application must fit its slot).
#[inline(never)]
fn node_downlink<P: Platform>(node: &mut FuotaNode<'_, P>, now: Instant, downlink: &Downlink) {
    node.handle_downlink(now, downlink.fport, &downlink.data);
}

/// Logs how the node found its saved state.
fn log_start(report: &StartReport) {
    match report.state {
        StateLoad::Fresh => info!("fuota node: no saved state"),
        StateLoad::Restored => info!("fuota node: saved state restored"),
        StateLoad::CarriedOver => info!("fuota node: restarted on its workspace"),
        StateLoad::Refused(_) => error!("fuota node: saved state damaged; starting empty"),
        StateLoad::StoreFailed => error!("fuota node: saved state unreadable; starting empty"),
    }
    if report.resumed.is_some() {
        info!("fuota node: a fragmentation session resumes");
    }
}

/// Counts radio failures in a row.
#[derive(Default)]
struct RadioHealth {
    consecutive_failures: u32,
}

impl RadioHealth {
    fn succeeded(&mut self) {
        self.consecutive_failures = 0;
    }

    fn failed<E: Loggable>(&mut self, failure: &E) {
        self.consecutive_failures += 1;
        error!(
            "radio failure {} in a row: {:?}",
            self.consecutive_failures, failure
        );
    }

    fn wedged(&self) -> bool {
        self.consecutive_failures >= MAX_CONSECUTIVE_RADIO_FAILURES
    }
}
