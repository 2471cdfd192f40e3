//! The running image's side of the bootloader's watchdog and trial: refresh the
//! independent watchdog the bootloader started, and reset an image on trial that has not
//! proved itself in time, so that the bootloader reverts it.
//!
//! An image on trial confirms itself through `fuota-node` (its `downlink_heard`, called
//! for every downlink of the session: the device has joined and heard the network); one
//! that gets no downlink within [`TRIAL_DEADLINE`] resets here, and one that hangs stops
//! refreshing the watchdog and is reset by it.

use defmt::warn;
use embassy_time::{Duration, Instant, Timer};
use fuota_stm32wl_flash::IndependentWatchdog;

/// How often the watchdog (about 32 s period) is refreshed.
const WATCHDOG_REFRESH: Duration = Duration::from_secs(8);
/// How long an image on trial may take to join and hear a downlink.
pub const TRIAL_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// When an image on trial must have confirmed itself.
pub struct TrialDeadline {
    deadline: Instant,
}

impl TrialDeadline {
    /// Counts from now (the application's start).
    pub fn start() -> Self {
        TrialDeadline {
            deadline: Instant::now() + TRIAL_DEADLINE,
        }
    }

    /// The instant the check must run at, while the image is on trial.
    pub fn at(&self, on_trial: bool) -> Option<Instant> {
        on_trial.then_some(self.deadline)
    }

    /// Resets when an image still on trial is past its deadline (the bootloader then
    /// reverts it).
    pub fn check(&self, on_trial: bool) {
        if on_trial && Instant::now() >= self.deadline {
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
