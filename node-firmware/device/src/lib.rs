//! The FUOTA device's LoRaWAN link, host-testable: the loop the STM32WL application runs,
//! generic over the radio, the clock and the store, so that the same code runs on a
//! simulated radio in host tests (against the agent) and on the chip.
//!
//! - [`Link`] (`link`): lorawan-device (OTAA, Class A) and `fuota-node` (the four FUOTA
//!   packages, multicast) driven together until the device must reset
//!   ([`ResetReason`]).
//! - [`mac_state`]: the DevNonce counter and the session kept across resets, and the RNG
//!   wrapper that feeds lorawan-device the counter's DevNonce.
//! - [`multicast_rx`]: multicast reception beside lorawan-device, on the Class C
//!   session's own channel.
//! - [`transmit_budget`]: the duty cycle and the join backoff lorawan-device does not
//!   enforce.
//! - [`trial`]: the deadline of an image on trial.
//! - [`provisioning`]: the per-device identity and root keys written at manufacturing.
#![no_std]
#![forbid(unsafe_code)]

#[macro_use]
mod fmt;
mod link;
pub mod mac_state;
pub mod multicast_rx;
pub mod provisioning;
pub mod transmit_budget;
pub mod trial;

pub use fmt::Loggable;
pub use link::{
    eui_lsb_first, Credentials, Link, LinkConfig, LinkDevice, ResetReason, DOWNLINK_QUEUE_LEN,
    MAX_CONSECUTIVE_RADIO_FAILURES, RADIO_BUFFER_LEN,
};
pub use mac_state::{
    dev_addr_value, DevNonceRng, DevNonceSlot, JoinRefused, MacRecordStore, MacState,
};
pub use multicast_rx::{eu868_modulation, MulticastReceiver};
pub use provisioning::{
    latest_record, ProvisioningError, ProvisioningRecord, PROVISIONING_RECORD_LEN,
};
pub use transmit_budget::TransmitBudget;
pub use trial::{TrialDeadline, DEFAULT_TRIAL_DEADLINE};

/// The device's monotonic clock, in the node's milliseconds.
#[allow(async_fn_in_trait)]
pub trait Clock {
    /// Now.
    fn now(&self) -> fuota_node::Instant;

    /// Returns at `at` (at once if it has passed).
    async fn sleep_until(&self, at: fuota_node::Instant);
}

/// `duration` in whole milliseconds, saturating (without the 128-bit arithmetic of
/// `Duration::as_millis`, which costs code on a Cortex-M4).
fn millis_of(duration: core::time::Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000)
        .saturating_add(u64::from(duration.subsec_millis()))
}
