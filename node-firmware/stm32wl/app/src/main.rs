//! FUOTA node application for the STM32WL55 (CM4 core) on a NUCLEO-WL55JC1.
//!
//! Boots the dual-core chip as primary, brings up the on-chip radio (`radio`, `board`) under
//! lorawan-device, and runs the FUOTA core (`fuota-node`) beside it:
//!
//! - lorawan-device does OTAA and Class A; its session and DevNonce counter are kept
//!   across resets (`mac_state`), so a device resumes its session after an update's
//!   reboot instead of joining again;
//! - the node answers the four packages (FPorts 200-203) on the application downlinks,
//!   and its answers go out as uplinks within the `transmit_budget` (duty cycle);
//! - a multicast Class C session is received beside lorawan-device (`multicast_rx`), on
//!   the session's own channel, between the device's uplinks;
//! - fragments go straight into the download slot, the node's state and fragment
//!   journal into the application state pages (`node_platform`), and a verified image is
//!   handed to the bootloader (`boot/`) before the reset the node asks for;
//! - an image on trial confirms itself on its first downlink, or is reset within
//!   `image_trial::TRIAL_DEADLINE` and reverted; the watchdog the bootloader started is
//!   refreshed from a task.
//!
//! A periodic application uplink (FPort 1, a counter) runs beside them; one in
//! `config::CONFIRMED_UPLINK_EVERY` is confirmed, which tells a session the network has
//! forgotten from a quiet one.
#![no_std]
#![no_main]

mod board;
mod config;
mod image_trial;
mod lorawan_timer;
mod mac_state;
mod multicast_rx;
mod node_platform;
mod radio;
mod transmit_budget;

use core::mem::MaybeUninit;

use cortex_m::peripheral::SCB;
use defmt::{debug, error, info, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{select, Either};
use embassy_stm32::peripherals::{self, RNG};
use embassy_stm32::rcc::{mux, MSIRange, Sysclk};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::spi::Spi;
use embassy_stm32::{bind_interrupts, dma, SharedData};
use embassy_time::{Delay, Duration, Instant, Timer};
use fuota_boot::{read_boot_state, running_image, STM32WL55JC};
use fuota_node::{
    Action, FuotaNode, LastUpdate, NodeConfig, NodeParts, StartReport, StateLoad, XorShiftRng,
};
use fuota_stm32wl_flash::Stm32wlFlash;
use lora_phy::lorawan_radio::LorawanRadio;
use lora_phy::sx126x::{Stm32wl, Sx126x};
use lora_phy::LoRa;
use lorawan_device::async_device::radio::PhyRxTx;
use lorawan_device::async_device::{Device, Error, JoinMode, JoinResponse, SendResponse};
use lorawan_device::default_crypto::DefaultFactory;
use lorawan_device::region::Configuration;
use lorawan_device::{mac, AppEui, AppKey, DevEui, Downlink};
use lorawan_fuota::crypto::Key128;
use static_cell::ConstStaticCell;
use {defmt_rtt as _, panic_probe as _};

use crate::board::NucleoRfSwitch;
use crate::image_trial::TrialDeadline;
use crate::lorawan_timer::LorawanTimer;
use crate::mac_state::{DevNonceRng, MacState};
use crate::multicast_rx::MulticastReceiver;
use crate::node_platform::{
    running_version, BootHandOver, Eu868Lora, FlashArea, SharedStore, Stm32wlNode,
};
use crate::radio::{Stm32wlInterfaceVariant, SubghzSpiDevice};
use crate::transmit_budget::TransmitBudget;

/// State shared with the CM0+ core, in its own linker section (memory.x).
#[unsafe(link_section = ".shared_data")]
static SHARED_DATA: MaybeUninit<SharedData> = MaybeUninit::uninit();

/// The FEC decoder's RAM, lent to the node for its whole life (in .bss).
static FEC_WORKSPACE: ConstStaticCell<[u8; config::FEC_WORKSPACE_BYTES]> =
    ConstStaticCell::new([0; config::FEC_WORKSPACE_BYTES]);

bind_interrupts!(struct Irqs {
    SUBGHZ_RADIO => radio::SubghzRadioIrqHandler;
    DMA1_CHANNEL1 => dma::InterruptHandler<peripherals::DMA1_CH1>;
    DMA1_CHANNEL2 => dma::InterruptHandler<peripherals::DMA1_CH2>;
    RNG => rng::InterruptHandler<RNG>;
});

type RadioKind = Sx126x<SubghzSpiDevice<'static>, Stm32wlInterfaceVariant<NucleoRfSwitch>, Stm32wl>;
type Radio =
    LorawanRadio<RadioKind, Delay, { board::MAX_TX_POWER_DBM }, { board::ANTENNA_GAIN_DBI }>;
/// Radio buffer size: the largest LoRa frame.
const RADIO_BUFFER_LEN: usize = 256;
/// Downlinks buffered between two drains.
const DOWNLINK_QUEUE_LEN: usize = 3;
type LorawanDevice = Device<
    Radio,
    DefaultFactory,
    LorawanTimer,
    DevNonceRng<Rng<'static, RNG>>,
    RADIO_BUFFER_LEN,
    DOWNLINK_QUEUE_LEN,
>;
type Node<'w> = FuotaNode<'w, Stm32wlNode>;

/// Radio failures in a row after which the radio is taken to be wedged. lora-phy's
/// `LorawanRadio` offers no way to re-initialise it, so the MCU resets.
const MAX_CONSECUTIVE_RADIO_FAILURES: u32 = 5;
/// LoRaWAN public network: sync word 0x34 (0x3444 on the SX126x).
const PUBLIC_NETWORK: bool = true;
/// Pause before the reset that follows a failed start (radio, store).
const FAILED_START_RETRY_DELAY: Duration = Duration::from_secs(10);
/// How long the node is left alone after it had an uplink due but nothing to say.
const NODE_QUIET_RETRY: Duration = Duration::from_secs(1);
/// Time for the last log lines to leave over RTT before a planned reset.
const RESET_GRACE: Duration = Duration::from_millis(100);

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init_primary(clock_config(), &SHARED_DATA);
    info!("fuota node starting");
    spawner.spawn(image_trial::refresh_watchdog().expect("one watchdog task"));
    let trial_deadline = TrialDeadline::start();

    let boot_state = read_boot_state(&mut Stm32wlFlash::new(), &STM32WL55JC);
    let running = running_image(&boot_state);
    let firmware_version = running_version().unwrap_or_else(|| {
        warn!("no image header in the primary slot: reporting version 0");
        config::UNSIGNED_FIRMWARE_VERSION
    });
    info!(
        "running {:08x}{}",
        firmware_version,
        if running.on_trial { " on trial" } else { "" }
    );
    log_last_update(running.last_update);

    let Some(store) = SharedStore::open() else {
        error!("the application state pages do not fit the session store; resetting");
        reset_after(FAILED_START_RETRY_DELAY).await;
    };
    let mut rng = Rng::new(p.RNG, Irqs);
    let budget = TransmitBudget::new(rng.next_u32());
    let node_rng = XorShiftRng::new(u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32()));
    let mac = MacState::load(Some(store));

    let spi = SubghzSpiDevice::new(Spi::new_subghz(p.SUBGHZSPI, p.DMA1_CH1, p.DMA1_CH2, Irqs));
    let interface = Stm32wlInterfaceVariant::new(Irqs, NucleoRfSwitch::new(p.PC4, p.PC5, p.PC3));
    let radio_kind = Sx126x::new(spi, interface, board::radio_config());
    let lora = match LoRa::new(radio_kind, PUBLIC_NETWORK, Delay).await {
        Ok(lora) => lora,
        Err(failure) => {
            error!("radio initialisation failed: {}; resetting", failure);
            reset_after(FAILED_START_RETRY_DELAY).await;
        }
    };
    let radio: Radio = lora.into();
    let saved_session = if config::RESUME_SESSION_AFTER_RESET {
        mac.saved_session()
    } else {
        None
    };
    let joined = saved_session.is_some();
    if let Some(session) = &saved_session {
        info!(
            "resuming the session of DevAddr {:08x} at FCntUp {}",
            u32::from(*session.devaddr()),
            session.fcnt_up
        );
    }
    let device = LorawanDevice::new_with_session(
        Configuration::new(config::REGION),
        radio,
        LorawanTimer::new(),
        DevNonceRng(rng),
        saved_session,
    );

    let mut node_config = NodeConfig::new(
        Key128::from_bytes(config::GEN_APP_KEY),
        firmware_version,
        config::HARDWARE_VERSION,
    );
    node_config.max_uplink_payload = config::MAX_UPLINK_PAYLOAD;
    let mut parts = NodeParts::<Stm32wlNode>::new(
        node_config,
        FlashArea::new(STM32WL55JC.download_image()),
        FlashArea::new(STM32WL55JC.fec_log),
        store,
        node_rng,
        Eu868Lora,
        BootHandOver,
    )
    .with_running_image(running);

    let mut link = Link {
        device,
        budget,
        mac,
        multicast: MulticastReceiver::new(),
        radio_health: RadioHealth::default(),
        trial_deadline,
        joined,
        next_app_uplink: Instant::now(),
        app_uplinks: 0,
        unanswered_confirmed: 0,
        node_quiet_until: Instant::now(),
    };
    let workspace = FEC_WORKSPACE.take();
    loop {
        let (node, report) = node_start(parts, &mut workspace[..]);
        log_start(&report);
        parts = link.run(node).await;
        info!("fuota node restarts on its workspace for a new fragmentation session");
    }
}

/// System clock and RNG kernel clock: MSI at 48 MHz. The radio has its own TCXO.
fn clock_config() -> embassy_stm32::Config {
    let mut config = embassy_stm32::Config::default();
    config.rcc.msi = Some(MSIRange::RANGE48M);
    config.rcc.sys = Sysclk::MSI;
    config.rcc.mux.rngsel = mux::Rngsel::MSI;
    config
}

/// The node's clock: embassy's monotonic time in milliseconds.
fn node_now() -> fuota_node::Instant {
    fuota_node::Instant::from_millis(Instant::now().as_millis())
}

/// An instant of the node's clock on embassy's.
fn embassy_instant(at: fuota_node::Instant) -> Instant {
    Instant::from_millis(at.as_millis())
}

/// Resets after `delay` (time for the log to leave, or a pause before a retry).
async fn reset_after(delay: Duration) -> ! {
    Timer::after(delay).await;
    SCB::sys_reset()
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_start(parts: NodeParts<Stm32wlNode>, workspace: &mut [u8]) -> (Node<'_>, StartReport) {
    FuotaNode::start(parts, workspace, node_now())
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_poll_action(node: &mut Node<'_>) -> Option<Action> {
    node.poll_action(node_now())
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_poll_uplink(node: &mut Node<'_>) -> Option<fuota_node::Uplink> {
    node.poll_uplink(node_now())
}

/// Not inlined: see [`node_downlink`].
#[inline(never)]
fn node_multicast(
    node: &mut Node<'_>,
    frame: &[u8],
) -> Result<fuota_node::MulticastReceived, fuota_node::MulticastDrop> {
    node.handle_multicast_frame(node_now(), frame)
}

/// The node's entry points are called through these non-inlined functions: inlined
/// into the async state machines that call them they were copied there, 3.5 KB more
/// code (the application must fit its slot).
#[inline(never)]
fn node_downlink(node: &mut Node<'_>, downlink: &Downlink) {
    node.handle_downlink(node_now(), downlink.fport, &downlink.data);
}

/// Logs what became of the last update (the bootloader's record).
fn log_last_update(last_update: Option<LastUpdate>) {
    match last_update {
        None => {}
        Some(LastUpdate::Installed { version }) => info!("last update: {:08x} installed", version),
        Some(LastUpdate::Rejected { version, .. }) => {
            warn!("last update: {:08x} refused by the bootloader", version)
        }
        Some(LastUpdate::Reverted { version }) => {
            warn!(
                "last update: {:08x} reverted (not confirmed on trial)",
                version
            )
        }
    }
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

/// What a sent uplink came to.
enum Sent {
    /// Sent; `acknowledged` for a confirmed uplink that got its ACK.
    Done { acknowledged: bool },
    /// Not sent, or sent without the expected answer; the session goes on.
    Failed,
    /// The session is gone (frame counter exhausted, not joined): join again.
    SessionLost,
}

/// The device's LoRaWAN side and the firmware's own state around the node.
struct Link {
    device: LorawanDevice,
    budget: TransmitBudget,
    mac: MacState,
    multicast: MulticastReceiver,
    radio_health: RadioHealth,
    trial_deadline: TrialDeadline,
    joined: bool,
    next_app_uplink: Instant,
    app_uplinks: u32,
    unanswered_confirmed: u32,
    /// The node had an uplink due but nothing to say (a package decided so when asked):
    /// not asked again before this, so that a due time it keeps does not spin the loop.
    node_quiet_until: Instant,
}

impl Link {
    /// Drives `node` until it asks for its workspace back (a new fragmentation session):
    /// returns its parts to restart it on the workspace.
    async fn run(&mut self, mut node: Node<'_>) -> NodeParts<Stm32wlNode> {
        loop {
            while let Some(action) = node_poll_action(&mut node) {
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
                        reset_after(RESET_GRACE).await;
                    }
                    Action::RecycleWorkspace => return node.into_parts(),
                }
            }
            self.trial_deadline.check(node.image_on_trial());
            if !self.joined {
                self.join(&node).await;
                continue;
            }
            if Instant::now() >= self.budget.next_transmission() {
                if Instant::now() >= self.node_quiet_until {
                    if let Some(uplink) = node_poll_uplink(&mut node) {
                        self.send(&mut node, uplink.fport, &uplink.payload, false)
                            .await;
                        continue;
                    }
                    self.node_quiet_until = Instant::now() + NODE_QUIET_RETRY;
                }
                if Instant::now() >= self.next_app_uplink {
                    self.send_app_uplink(&mut node).await;
                    continue;
                }
            }
            let wake = self.next_wakeup(&node);
            let mut frame = [0u8; RADIO_BUFFER_LEN];
            let received = select(
                self.multicast
                    .receive(self.device.get_mut_radio(), &mut frame),
                Timer::at(wake),
            )
            .await;
            match received {
                Either::First(Ok((len, quality))) => {
                    self.radio_health.succeeded();
                    match node_multicast(&mut node, &frame[..len]) {
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
    /// budget) uplink, the next periodic uplink, the trial deadline.
    fn next_wakeup(&self, node: &Node<'_>) -> Instant {
        let transmit_from = self.budget.next_transmission();
        let mut wake = self.next_app_uplink.max(transmit_from);
        if let Some(at) = node.next_uplink_at() {
            wake = wake.min(
                embassy_instant(at)
                    .max(transmit_from)
                    .max(self.node_quiet_until),
            );
        }
        if let Some(at) = node.next_action_at(node_now()) {
            wake = wake.min(embassy_instant(at));
        }
        if let Some(at) = self.trial_deadline.at(node.image_on_trial()) {
            wake = wake.min(at);
        }
        wake
    }

    /// One join request, when the transmit budget allows; on success the session is
    /// saved and the periodic uplinks start.
    async fn join(&mut self, node: &Node<'_>) {
        let turn = self.budget.next_transmission();
        let wake = match self.trial_deadline.at(node.image_on_trial()) {
            Some(deadline) => turn.min(deadline),
            None => turn,
        };
        Timer::at(wake).await;
        if Instant::now() < turn {
            // Woken for the trial deadline: the caller checks it.
            return;
        }
        let credentials = JoinMode::OTAA {
            deveui: DevEui::from(config::eui_lsb_first(config::DEV_EUI_MSB)),
            appeui: AppEui::from(config::eui_lsb_first(config::JOIN_EUI_MSB)),
            appkey: AppKey::from(config::APP_KEY),
        };
        let dev_nonce = match self.mac.before_join() {
            Ok(nonce) => nonce,
            Err(refused) => {
                error!("no join possible: {}", refused);
                Timer::after(Duration::from_secs(3600)).await;
                return;
            }
        };
        self.multicast.stop();
        let data_rate = self.device.get_datarate();
        info!("join request (DevNonce {}) at {}", dev_nonce, data_rate);
        let outcome = self.device.join(&credentials).await;
        self.mac.after_join_request();
        let accepted = matches!(outcome, Ok(JoinResponse::JoinSuccess));
        self.budget
            .record_join_request(Instant::now(), data_rate, accepted);
        match outcome {
            Ok(JoinResponse::JoinSuccess) => {
                self.radio_health.succeeded();
                if let Some(session) = self.device.get_session() {
                    info!("joined as DevAddr {:08x}", u32::from(*session.devaddr()));
                    self.mac.joined(session);
                }
                self.joined = true;
                self.unanswered_confirmed = 0;
                self.next_app_uplink = Instant::now();
            }
            Ok(JoinResponse::NoJoinAccept) => {
                self.radio_health.succeeded();
                let wait = self
                    .budget
                    .next_transmission()
                    .saturating_duration_since(Instant::now());
                info!("not joined; next join request in {} s", wait.as_secs());
            }
            Err(Error::Radio(failure)) => self.radio_health.failed(&failure),
            Err(Error::Mac(failure)) => warn!("join request refused by the MAC: {}", failure),
        }
    }

    /// The periodic application uplink (a counter on `config::UPLINK_FPORT`), confirmed
    /// one time in `config::CONFIRMED_UPLINK_EVERY`; too many unacknowledged in a row
    /// and the device joins again.
    async fn send_app_uplink(&mut self, node: &mut Node<'_>) {
        self.next_app_uplink = Instant::now() + config::UPLINK_PERIOD;
        let confirmed = self.app_uplinks % config::CONFIRMED_UPLINK_EVERY.max(1) == 0;
        let payload = self.app_uplinks.to_be_bytes();
        self.app_uplinks = self.app_uplinks.wrapping_add(1);
        match self
            .send(node, config::UPLINK_FPORT, &payload, confirmed)
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
                if self.unanswered_confirmed >= config::REJOIN_AFTER_UNANSWERED {
                    warn!("the network no longer answers this session: joining again");
                    self.session_lost();
                }
            }
            Sent::Done { .. } | Sent::Failed | Sent::SessionLost => {}
        }
    }

    /// Sends one uplink, then hands the downlinks it brought to the node.
    async fn send(
        &mut self,
        node: &mut Node<'_>,
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
            .record_uplink(Instant::now(), data_rate, payload.len());
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
            Ok(SendResponse::RxComplete) => {
                self.radio_health.succeeded();
                Sent::Done {
                    acknowledged: false,
                }
            }
            Ok(SendResponse::NoAck) => {
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
                warn!("uplink refused by the MAC: {}", failure);
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
    fn deliver_downlinks(&mut self, node: &mut Node<'_>) {
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
            node_downlink(node, downlink);
        }
    }

    fn session_lost(&mut self) {
        self.joined = false;
        self.mac.session_lost();
    }
}

/// Counts radio failures in a row and resets the MCU when the radio looks wedged.
#[derive(Default)]
struct RadioHealth {
    consecutive_failures: u32,
}

impl RadioHealth {
    fn succeeded(&mut self) {
        self.consecutive_failures = 0;
    }

    fn failed(&mut self, failure: &lora_phy::lorawan_radio::Error) {
        self.consecutive_failures += 1;
        error!(
            "radio failure {} in a row: {}",
            self.consecutive_failures, failure
        );
        if self.consecutive_failures >= MAX_CONSECUTIVE_RADIO_FAILURES {
            error!("radio unresponsive; resetting");
            SCB::sys_reset();
        }
    }
}
