//! FUOTA node application for the STM32WL55 (CM4 core) on a NUCLEO-WL55JC1.
//!
//! Boots the dual-core chip as primary, brings up the on-chip radio (`radio`, `board`) under
//! lorawan-device, joins by OTAA with the credentials in `config` (retrying within the
//! `transmit_budget`), then sends a periodic uplink and logs every downlink (FPort and length)
//! over defmt-RTT. Class C listening between uplinks is wired in and off by default
//! (`config::CLASS_C_AFTER_JOIN`).
//!
//! Behind the bootloader (`boot/`): refreshes the watchdog it starts and confirms an image on
//! trial once it has joined and heard a downlink (`image_trial`).
//!
//! Not here yet: the FUOTA packages (crate `fuota-node`, see [`handle_downlink`]), multicast
//! reception (lorawan-device drops frames for other DevAddrs), persisting the session and
//! DevNonce across resets.
#![no_std]
#![no_main]

mod board;
mod config;
mod image_trial;
mod lorawan_timer;
mod radio;
mod transmit_budget;

use core::mem::MaybeUninit;
use core::ops::RangeInclusive;

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
use lora_phy::lorawan_radio::LorawanRadio;
use lora_phy::sx126x::{Stm32wl, Sx126x};
use lora_phy::LoRa;
use lorawan_device::async_device::{Device, Error, JoinMode, JoinResponse, SendResponse};
use lorawan_device::default_crypto::DefaultFactory;
use lorawan_device::region::Configuration;
use lorawan_device::{mac, AppEui, AppKey, DevEui, Downlink};
use {defmt_rtt as _, panic_probe as _};

use crate::board::NucleoRfSwitch;
use crate::image_trial::ImageTrial;
use crate::lorawan_timer::LorawanTimer;
use crate::radio::{Stm32wlInterfaceVariant, SubghzSpiDevice};
use crate::transmit_budget::TransmitBudget;

/// State shared with the CM0+ core, in its own linker section (memory.x).
#[unsafe(link_section = ".shared_data")]
static SHARED_DATA: MaybeUninit<SharedData> = MaybeUninit::uninit();

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
/// Downlinks buffered between two drains. lorawan-device advises at least 2 for Class C,
/// where RXC frames can arrive next to an RX1/RX2 answer.
const DOWNLINK_QUEUE_LEN: usize = 3;
type LorawanDevice = Device<
    Radio,
    DefaultFactory,
    LorawanTimer,
    Rng<'static, RNG>,
    RADIO_BUFFER_LEN,
    DOWNLINK_QUEUE_LEN,
>;

/// FPorts of the FUOTA packages: TS005 multicast setup (200), TS004 fragmentation (201),
/// TS003 clock sync (202), TS006 firmware management (203).
const FUOTA_FPORTS: RangeInclusive<u8> = 200..=203;
/// Radio failures in a row after which the radio is taken to be wedged. lora-phy's
/// `LorawanRadio` offers no way to re-initialise it, so the MCU resets.
const MAX_CONSECUTIVE_RADIO_FAILURES: u32 = 5;
/// LoRaWAN public network: sync word 0x34 (0x3444 on the SX126x).
const PUBLIC_NETWORK: bool = true;
/// Pause before the reset that follows a failed radio initialisation.
const RADIO_INIT_RETRY_DELAY: Duration = Duration::from_secs(10);

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init_primary(clock_config(), &SHARED_DATA);
    info!("fuota node starting");
    spawner.spawn(image_trial::refresh_watchdog().expect("one watchdog task"));
    let trial = ImageTrial::from_boot_state();

    let mut rng = Rng::new(p.RNG, Irqs);
    let budget = TransmitBudget::new(rng.next_u32());

    let spi = SubghzSpiDevice::new(Spi::new_subghz(p.SUBGHZSPI, p.DMA1_CH1, p.DMA1_CH2, Irqs));
    let interface = Stm32wlInterfaceVariant::new(Irqs, NucleoRfSwitch::new(p.PC4, p.PC5, p.PC3));
    let radio_kind = Sx126x::new(spi, interface, board::radio_config());
    let lora = match LoRa::new(radio_kind, PUBLIC_NETWORK, Delay).await {
        Ok(lora) => lora,
        Err(failure) => {
            error!("radio initialisation failed: {}; resetting", failure);
            Timer::after(RADIO_INIT_RETRY_DELAY).await;
            SCB::sys_reset();
        }
    };
    let radio: Radio = lora.into();
    let device = LorawanDevice::new(
        Configuration::new(config::REGION),
        radio,
        LorawanTimer::new(),
        rng,
    );
    run(device, budget, trial).await
}

/// System clock and RNG kernel clock: MSI at 48 MHz. The radio has its own TCXO.
fn clock_config() -> embassy_stm32::Config {
    let mut config = embassy_stm32::Config::default();
    config.rcc.msi = Some(MSIRange::RANGE48M);
    config.rcc.sys = Sysclk::MSI;
    config.rcc.mux.rngsel = mux::Rngsel::MSI;
    config
}

/// Joins, runs the session until it is lost, and joins again, forever.
async fn run(mut device: LorawanDevice, mut budget: TransmitBudget, mut trial: ImageTrial) -> ! {
    let mut radio_health = RadioHealth::default();
    loop {
        join(&mut device, &mut budget, &mut radio_health, &trial).await;
        run_session(&mut device, &mut budget, &mut radio_health, &mut trial).await;
        warn!("session lost; joining again");
    }
}

/// Sends join requests, as often as the transmit budget allows, until one is accepted.
async fn join(
    device: &mut LorawanDevice,
    budget: &mut TransmitBudget,
    radio_health: &mut RadioHealth,
    trial: &ImageTrial,
) {
    let credentials = JoinMode::OTAA {
        deveui: DevEui::from(config::eui_lsb_first(config::DEV_EUI_MSB)),
        appeui: AppEui::from(config::eui_lsb_first(config::JOIN_EUI_MSB)),
        appkey: AppKey::from(config::APP_KEY),
    };
    loop {
        trial.check_deadline();
        budget.wait_for_turn().await;
        let data_rate = device.get_datarate();
        info!("join request at {}", data_rate);
        let outcome = device.join(&credentials).await;
        let accepted = matches!(outcome, Ok(JoinResponse::JoinSuccess));
        budget.record_join_request(Instant::now(), data_rate, accepted);
        match outcome {
            Ok(JoinResponse::JoinSuccess) => {
                radio_health.succeeded();
                if let Some(session) = device.get_session() {
                    info!("joined as DevAddr {:08x}", u32::from(*session.devaddr()));
                }
                return;
            }
            Ok(JoinResponse::NoJoinAccept) => radio_health.succeeded(),
            Err(Error::Radio(failure)) => radio_health.failed(&failure),
            Err(Error::Mac(failure)) => warn!("join request refused by the MAC: {}", failure),
        }
        let wait = budget
            .next_transmission()
            .saturating_duration_since(Instant::now());
        info!("not joined; next join request in {} s", wait.as_secs());
    }
}

/// Periodic uplinks and downlink delivery; returns when the session is lost.
async fn run_session(
    device: &mut LorawanDevice,
    budget: &mut TransmitBudget,
    radio_health: &mut RadioHealth,
    trial: &mut ImageTrial,
) {
    let class_c = config::CLASS_C_AFTER_JOIN;
    if class_c {
        device.enable_class_c();
    } else {
        device.disable_class_c();
    }
    let mut uplink_counter: u32 = 0;
    let mut next_uplink = Instant::now();
    loop {
        idle_until(device, next_uplink.max(budget.next_transmission()), class_c).await;
        next_uplink = Instant::now() + config::UPLINK_PERIOD;

        let payload = uplink_counter.to_be_bytes();
        let data_rate = device.get_datarate();
        let outcome = device.send(&payload, config::UPLINK_FPORT, false).await;
        budget.record_uplink(Instant::now(), data_rate, payload.len());
        uplink_counter = uplink_counter.wrapping_add(1);
        match outcome {
            Ok(SendResponse::DownlinkReceived(fcnt_down)) => {
                radio_health.succeeded();
                trial.downlink_heard();
                debug!("uplink answered (FCntDown {})", fcnt_down);
            }
            Ok(SendResponse::RxComplete) => {
                radio_health.succeeded();
                debug!("uplink sent; nothing received in RX1/RX2");
            }
            Ok(SendResponse::NoAck) => warn!("confirmed uplink not acknowledged"),
            Ok(SendResponse::SessionExpired) => {
                warn!("frame counter exhausted: session expired");
                return;
            }
            Err(Error::Mac(mac::Error::NotJoined)) => return,
            Err(Error::Mac(failure)) => warn!("uplink refused by the MAC: {}", failure),
            Err(Error::Radio(failure)) => radio_health.failed(&failure),
        }
        deliver_downlinks(device);
        trial.check_deadline();
    }
}

/// Waits until `until`. In Class C the radio listens meanwhile (lorawan-device leaves it in
/// RXC after each uplink) and downlinks are delivered as they arrive.
async fn idle_until(device: &mut LorawanDevice, until: Instant, class_c: bool) {
    if !class_c {
        Timer::at(until).await;
        return;
    }
    loop {
        let outcome = select(device.rxc_listen(), Timer::at(until)).await;
        match outcome {
            Either::First(Ok(response)) => {
                debug!("class C: {}", response);
                deliver_downlinks(device);
            }
            Either::First(Err(failure)) => {
                warn!(
                    "class C listening failed: {}; idle until the next uplink",
                    failure
                );
                Timer::at(until).await;
                return;
            }
            Either::Second(()) => return,
        }
    }
}

/// Hands the buffered downlinks to [`handle_downlink`] in arrival order (lorawan-device's
/// `take_downlink` returns the newest first).
fn deliver_downlinks(device: &mut LorawanDevice) {
    let mut newest_first: [Option<Downlink>; DOWNLINK_QUEUE_LEN] = Default::default();
    let mut count = 0;
    while count < DOWNLINK_QUEUE_LEN {
        let Some(downlink) = device.take_downlink() else {
            break;
        };
        newest_first[count] = Some(downlink);
        count += 1;
    }
    for downlink in newest_first[..count].iter().rev().flatten() {
        handle_downlink(downlink);
    }
}

/// Where application downlinks go.
///
/// FUOTA INTEGRATION POINT: downlinks on [`FUOTA_FPORTS`] belong to the `fuota-node` crate
/// (node-firmware/node), which is not wired in yet. Until it is, they are logged and dropped:
/// nothing answers them, so a FUOTA campaign makes no progress on this firmware.
fn handle_downlink(downlink: &Downlink) {
    let (fport, len) = (downlink.fport, downlink.data.len());
    if FUOTA_FPORTS.contains(&fport) {
        warn!(
            "downlink on FUOTA FPort {} ({} bytes) dropped: fuota-node not integrated",
            fport, len
        );
    } else {
        info!("downlink on FPort {} ({} bytes)", fport, len);
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
