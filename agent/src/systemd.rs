//! systemd integration over the sd_notify protocol: READY=1 once storage is open and
//! the packet-forwarder socket is bound, STATUS= lines, WATCHDOG=1 from the core loop
//! (so a hung loop gets the service restarted), STOPPING=1 on shutdown. Everything is a
//! no-op when the agent does not run under systemd (no `NOTIFY_SOCKET`).
//!
//! [`status_line`] is what `systemctl status fuota-agent` shows while the agent runs:
//! the devices served and each active campaign's step and progress.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

/// The agent's link to its service manager.
#[derive(Debug, Clone, Copy)]
pub struct ServiceManager {
    watchdog_timeout: Option<Duration>,
}

impl ServiceManager {
    /// Reads `WATCHDOG_USEC` / `WATCHDOG_PID` from the environment (`NOTIFY_SOCKET` is
    /// read by each notification).
    pub fn from_environment() -> Self {
        ServiceManager {
            watchdog_timeout: watchdog_timeout(
                std::env::var("WATCHDOG_USEC").ok().as_deref(),
                std::env::var("WATCHDOG_PID").ok().as_deref(),
                std::process::id(),
            ),
        }
    }

    /// The watchdog timeout systemd set (`WatchdogSec=`), if any.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog_timeout
    }

    /// Startup is complete.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A status line for `systemctl status`.
    pub fn status(&self, status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    /// The main loop is alive (only sent when the watchdog is enabled).
    pub fn watchdog(&self) {
        if self.watchdog_timeout.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }

    /// Shutting down.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }
}

/// The agent's state in one line, for STATUS=: devices served, then each active
/// campaign with its step and how many devices have their result.
pub fn status_line(
    storage: &crate::storage::Storage,
) -> Result<String, crate::storage::StorageError> {
    use crate::campaign::DeviceStatus;
    let devices = storage.devices()?.len();
    let mut parts = vec![format!("serving {devices} devices")];
    let mut active = 0;
    for campaign in storage.campaigns()? {
        if !campaign.state.is_active() {
            continue;
        }
        active += 1;
        let results = storage.campaign_devices(campaign.id)?;
        let ended = results
            .iter()
            .filter(|device| device.status != DeviceStatus::InProgress)
            .count();
        let successful = results
            .iter()
            .filter(|device| device.status == DeviceStatus::Successful)
            .count();
        let step = campaign.progress.phase.name().to_string();
        parts.push(format!(
            "campaign {} {:?} {}, step {step}: {ended} of {} devices done ({successful} successful)",
            campaign.id,
            campaign.name,
            campaign.state.as_str(),
            results.len()
        ));
    }
    if active == 0 {
        parts.push("no campaign running".into());
    }
    Ok(parts.join("; "))
}

/// The watchdog timeout the environment asks for, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC` set to a positive number, and `WATCHDOG_PID`, when set, naming this
/// process (a child that inherited the variables does not feed its parent's watchdog).
/// sd-notify's own `watchdog_enabled` requires `WATCHDOG_PID`, which systemd may omit.
fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec = usec?.trim().parse::<u64>().ok().filter(|usec| *usec > 0)?;
    match pid {
        Some(pid) if pid.trim().parse::<u32>().ok() != Some(own_pid) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        warn!(%error, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_on_for_this_process_only() {
        let two_seconds = Some(Duration::from_secs(2));
        assert_eq!(watchdog_timeout(Some("2000000"), None, 42), two_seconds);
        assert_eq!(
            watchdog_timeout(Some("2000000"), Some("42"), 42),
            two_seconds
        );
        assert_eq!(watchdog_timeout(Some("2000000"), Some("43"), 42), None);
        assert_eq!(watchdog_timeout(Some("0"), None, 42), None);
        assert_eq!(watchdog_timeout(Some("soon"), None, 42), None);
        assert_eq!(watchdog_timeout(None, Some("42"), 42), None);
    }
}
