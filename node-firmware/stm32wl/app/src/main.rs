//! FUOTA node application for the STM32WL55 (CM4 core) on a NUCLEO-WL55JC1.
//!
//! Boots the dual-core chip as primary, brings up the on-chip radio (`radio`, `board`) under
//! lorawan-device, and runs the FUOTA core (`fuota-node`) beside it:
//!
//! The loop itself is `fuota-device`'s [`Link`], host-tested against the agent
//! (node-firmware/device):
//!
//! - lorawan-device does OTAA and Class A; its session and DevNonce counter are kept
//!   across resets, so a device resumes its session after an update's reboot instead of
//!   joining again;
//! - the node answers the four packages (FPorts 200-203) on the application downlinks,
//!   and its answers go out as uplinks within the duty cycle;
//! - a multicast Class C session is received beside lorawan-device, on the session's
//!   own channel, between the device's uplinks;
//! - an image on trial confirms itself on its first downlink, or the link returns at
//!   its deadline and the device resets so that the bootloader reverts it.
//!
//! This file and the modules beside it are the board: the clocks, the radio (`radio`,
//! `board`), the flash regions, session store and bootloader hand-over the node runs on
//! (`node_platform`), the watchdog the bootloader started (`image_trial`), and the
//! configuration (`config`). A periodic application uplink (FPort 1, a counter) runs
//! beside the FUOTA traffic; one in `config::CONFIRMED_UPLINK_EVERY` is confirmed,
//! which tells a session the network has forgotten from a quiet one.
#![no_std]
#![no_main]

mod board;
mod config;
mod image_trial;
mod lorawan_timer;
mod node_platform;
mod radio;

use core::mem::MaybeUninit;

use cortex_m::peripheral::SCB;
use defmt::{error, info, warn};
use embassy_executor::Spawner;
use embassy_stm32::peripherals::{self, RNG};
use embassy_stm32::rcc::{mux, MSIRange, Sysclk};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::spi::Spi;
use embassy_stm32::{bind_interrupts, dma, SharedData};
use embassy_time::{Delay, Duration, Timer};
use fuota_boot::{read_boot_state, running_image, STM32WL55JC};
use fuota_device::{DevNonceSlot, Link, ResetReason};
use fuota_node::{LastUpdate, NodeConfig, NodeParts, XorShiftRng};
use fuota_stm32wl_flash::Stm32wlFlash;
use lora_phy::lorawan_radio::LorawanRadio;
use lora_phy::sx126x::{Stm32wl, Sx126x};
use lora_phy::LoRa;
use lorawan_fuota::crypto::Key128;
use static_cell::ConstStaticCell;
use {defmt_rtt as _, panic_probe as _};

use crate::board::NucleoRfSwitch;
use crate::lorawan_timer::{EmbassyClock, LorawanTimer};
use crate::node_platform::{
    running_version, BootHandOver, Eu868Lora, FlashArea, SharedStore, Stm32wlNode,
};
use crate::radio::{Stm32wlInterfaceVariant, SubghzSpiDevice};

/// State shared with the CM0+ core, in its own linker section (memory.x).
#[unsafe(link_section = ".shared_data")]
static SHARED_DATA: MaybeUninit<SharedData> = MaybeUninit::uninit();

/// The FEC decoder's RAM, lent to the node for its whole life (in .bss).
static FEC_WORKSPACE: ConstStaticCell<[u8; config::FEC_WORKSPACE_BYTES]> =
    ConstStaticCell::new([0; config::FEC_WORKSPACE_BYTES]);

/// The DevNonce the link's RNG hands lorawan-device for a join request.
static DEV_NONCE_SLOT: DevNonceSlot = DevNonceSlot::new();

bind_interrupts!(struct Irqs {
    SUBGHZ_RADIO => radio::SubghzRadioIrqHandler;
    DMA1_CHANNEL1 => dma::InterruptHandler<peripherals::DMA1_CH1>;
    DMA1_CHANNEL2 => dma::InterruptHandler<peripherals::DMA1_CH2>;
    RNG => rng::InterruptHandler<RNG>;
});

type RadioKind = Sx126x<SubghzSpiDevice<'static>, Stm32wlInterfaceVariant<NucleoRfSwitch>, Stm32wl>;
type Radio =
    LorawanRadio<RadioKind, Delay, { board::MAX_TX_POWER_DBM }, { board::ANTENNA_GAIN_DBI }>;

/// LoRaWAN public network: sync word 0x34 (0x3444 on the SX126x).
const PUBLIC_NETWORK: bool = true;
/// Pause before the reset that follows a failed start (radio, store).
const FAILED_START_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Time for the last log lines to leave over RTT before a planned reset.
const RESET_GRACE: Duration = Duration::from_millis(100);

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init_primary(clock_config(), &SHARED_DATA);
    info!("fuota node starting");
    spawner.spawn(image_trial::refresh_watchdog().expect("one watchdog task"));

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

    let Some(provisioned) = node_platform::provisioning().or_else(config::bench_credentials) else {
        not_provisioned().await
    };
    info!(
        "DevEUI {:016x}, JoinEUI {:016x}",
        u64::from_be_bytes(provisioned.credentials.dev_eui),
        u64::from_be_bytes(provisioned.credentials.join_eui)
    );

    let Some(store) = SharedStore::open() else {
        error!("the application state pages do not fit the session store; resetting");
        reset_after(FAILED_START_RETRY_DELAY).await;
    };
    let mut rng = Rng::new(p.RNG, Irqs);
    let node_rng = XorShiftRng::new(u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32()));

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
    let mut link = Link::new(
        config::link_config(provisioned.credentials),
        radio,
        LorawanTimer::new(),
        rng,
        Some(store),
        &DEV_NONCE_SLOT,
        EmbassyClock,
    );

    let mut node_config = NodeConfig::new(
        Key128::from_bytes(provisioned.gen_app_key),
        firmware_version,
        config::HARDWARE_VERSION,
    );
    node_config.max_uplink_payload = config::MAX_UPLINK_PAYLOAD;
    let parts = NodeParts::<Stm32wlNode>::new(
        node_config,
        FlashArea::new(STM32WL55JC.download_image()),
        FlashArea::new(STM32WL55JC.fec_log),
        store,
        node_rng,
        Eu868Lora,
        BootHandOver,
    )
    .with_running_image(running);

    let workspace = FEC_WORKSPACE.take();
    let reason = link.run(parts, &mut workspace[..]).await;
    match reason {
        ResetReason::Reboot { .. } => info!("resetting: {}", reason),
        ResetReason::TrialExpired | ResetReason::RadioUnresponsive => {
            warn!("resetting: {}", reason)
        }
    }
    reset_after(RESET_GRACE).await;
}

/// System clock and RNG kernel clock: MSI at 48 MHz. The radio has its own TCXO.
fn clock_config() -> embassy_stm32::Config {
    let mut config = embassy_stm32::Config::default();
    config.rcc.msi = Some(MSIRange::RANGE48M);
    config.rcc.sys = Sysclk::MSI;
    config.rcc.mux.rngsel = mux::Rngsel::MSI;
    config
}

/// Resets after `delay` (time for the log to leave, or a pause before a retry).
async fn reset_after(delay: Duration) -> ! {
    Timer::after(delay).await;
    SCB::sys_reset()
}

/// A device without a provisioning record has no identity to join with: it says so
/// (once an hour) and does nothing else.
async fn not_provisioned() -> ! {
    loop {
        error!(
            "not provisioned: no valid record in the OTP area; write one \
             (fuotactl device provisioning-records) and reset"
        );
        Timer::after(Duration::from_secs(3600)).await;
    }
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
