//! The running image's side of the bootloader's watchdog: refresh the independent
//! watchdog the bootloader started, so that only an image that hangs is reset by it (and,
//! on trial, reverted). An image on trial that runs but hears no downlink is reset by
//! the link at its deadline (`fuota_device::trial`).

use embassy_time::{Duration, Timer};
use fuota_stm32wl_flash::IndependentWatchdog;

/// How often the watchdog (about 32 s period) is refreshed.
const WATCHDOG_REFRESH: Duration = Duration::from_secs(8);
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
