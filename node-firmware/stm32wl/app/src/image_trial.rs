//! The running image's side of the bootloader hand-over: refresh the independent
//! watchdog the bootloader started, and confirm an image on trial once the device has
//! joined and heard a downlink. An image on trial that gets no downlink within
//! [`TRIAL_DEADLINE`] resets, and the bootloader reverts it; one that hangs stops
//! refreshing the watchdog and is reset the same way.
//!
//! The FUOTA core (`fuota-node`) takes this over when it is wired in (its
//! `UpdateAgent::confirm_running_image`); until then the application does it here.

use defmt::{error, info, warn};
use embassy_time::{Duration, Instant, Timer};
use fuota_boot::{confirm_image, read_boot_state, Confirmation, Phase, STM32WL55JC};
use fuota_stm32wl_flash::{IndependentWatchdog, Stm32wlFlash};

/// How often the watchdog (about 32 s period) is refreshed.
const WATCHDOG_REFRESH: Duration = Duration::from_secs(8);
/// How long an image on trial may take to join and hear a downlink.
pub const TRIAL_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Whether the running image still has to prove itself.
pub struct ImageTrial {
    on_trial: bool,
    started: Instant,
}

impl ImageTrial {
    /// Reads the boot state.
    pub fn from_boot_state() -> Self {
        let state = read_boot_state(&mut Stm32wlFlash::new(), &STM32WL55JC);
        let on_trial = matches!(state.phase, Phase::Trial(_));
        if on_trial {
            info!("image on trial: confirms after joining and hearing a downlink");
        }
        ImageTrial {
            on_trial,
            started: Instant::now(),
        }
    }

    /// The device heard a downlink in its session: confirm the image if on trial.
    pub fn downlink_heard(&mut self) {
        if !self.on_trial {
            return;
        }
        match confirm_image(&mut Stm32wlFlash::new(), &STM32WL55JC) {
            Ok(Confirmation::Confirmed { version }) => {
                info!("image confirmed (version {:08x})", version);
                self.on_trial = false;
            }
            Ok(Confirmation::AlreadyConfirmed) => self.on_trial = false,
            Err(_) => error!("confirming the image failed; trying again at the next downlink"),
        }
    }

    /// Resets when an image on trial has not proved itself in time (the bootloader then
    /// reverts it).
    pub fn check_deadline(&self) {
        if self.on_trial && Instant::now() > self.started + TRIAL_DEADLINE {
            warn!("image on trial heard no downlink in time; resetting to revert it");
            cortex_m::peripheral::SCB::sys_reset();
        }
    }
}

/// Keeps the watchdog the bootloader started from resetting a healthy application.
#[embassy_executor::task]
pub async fn refresh_watchdog() {
    loop {
        IndependentWatchdog::refresh();
        Timer::after(WATCHDOG_REFRESH).await;
    }
}

/// An ECC double error on a flash read comes as an NMI: the flash driver turns it into a
/// read error. Any other NMI resets.
#[cortex_m_rt::exception]
unsafe fn NonMaskableInt() {
    if !fuota_stm32wl_flash::on_nmi() {
        cortex_m::peripheral::SCB::sys_reset();
    }
}
