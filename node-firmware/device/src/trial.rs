//! The running image's trial: an image the bootloader installed runs on trial until it
//! confirms itself (through `fuota-node`, on the first downlink of its session: it has
//! joined and heard the network). One that hears no downlink within its deadline must be
//! reset, so that the bootloader reverts it; the link returns
//! [`ResetReason::TrialExpired`](crate::ResetReason::TrialExpired) for that.
//!
//! A trial image that hangs is the watchdog's business (the bootloader starts it, the
//! board refreshes it).

use core::time::Duration;

use fuota_node::Instant;

/// How long an image on trial may take to join and hear a downlink, by default.
pub const DEFAULT_TRIAL_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// When an image on trial must have confirmed itself.
pub struct TrialDeadline {
    deadline: Instant,
}

impl TrialDeadline {
    /// `allowed` from `started` (the application's start).
    pub fn new(started: Instant, allowed: Duration) -> Self {
        TrialDeadline {
            deadline: started.plus_millis(crate::millis_of(allowed)),
        }
    }

    /// The instant the check must run at, while the image is on trial.
    pub fn at(&self, on_trial: bool) -> Option<Instant> {
        on_trial.then_some(self.deadline)
    }

    /// Whether an image still on trial is past its deadline at `now`.
    pub fn expired(&self, on_trial: bool, now: Instant) -> bool {
        on_trial && now >= self.deadline
    }
}
