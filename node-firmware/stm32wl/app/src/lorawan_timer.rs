//! Time on embassy-time 0.5: lorawan-device's `radio::Timer` and fuota-device's `Clock`.
//!
//! lorawan-device's own `embassy-time` feature pulls embassy-time 0.3, which conflicts with
//! embassy-stm32 0.6, so this crate provides the (small) implementation itself.
use embassy_time::{Duration, Instant, Timer};
use lorawan_device::async_device::radio;

/// Measures RX window delays from the instant lorawan-device last called `reset`
/// (the end of a transmission).
pub struct LorawanTimer {
    reference: Instant,
}

impl LorawanTimer {
    pub fn new() -> Self {
        Self {
            reference: Instant::now(),
        }
    }
}

impl radio::Timer for LorawanTimer {
    fn reset(&mut self) {
        self.reference = Instant::now();
    }

    async fn at(&mut self, millis: u64) {
        Timer::at(self.reference + Duration::from_millis(millis)).await
    }

    async fn delay_ms(&mut self, millis: u64) {
        Timer::after_millis(millis).await
    }
}

/// The link's and the node's clock: embassy's monotonic time in milliseconds.
pub struct EmbassyClock;

impl fuota_device::Clock for EmbassyClock {
    fn now(&self) -> fuota_node::Instant {
        fuota_node::Instant::from_millis(Instant::now().as_millis())
    }

    async fn sleep_until(&self, at: fuota_node::Instant) {
        Timer::at(Instant::from_millis(at.as_millis())).await
    }
}
