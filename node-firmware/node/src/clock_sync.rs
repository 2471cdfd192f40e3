//! TS003 application layer clock synchronisation, device side (FPort 202, v1 and v2).
//!
//! Owns the device's GPS clock ([`DeviceClock`]) and the AppTimeReq schedule:
//!
//! - AppTimeReq carries the DeviceTime at the moment the uplink is taken
//!   (`append_due`), the 4-bit token and AnsRequired (set while unsynchronised and
//!   during a forced resync, clear for periodic checks so the server may stay silent
//!   when the clock is fine).
//! - AppTimeAns is applied only if its token equals the current TokenReq; the
//!   correction is added to the clock and the token incremented (mod 16). A v2
//!   saturated correction (0x7FFFFFFF / 0x80000000) triggers an immediate new request
//!   to finish the correction (TS003-2.0.0).
//! - DeviceAppTimePeriodicityReq is accepted (NotSupported = 0): the answer carries the
//!   current time, and AppTimeReq is then sent every 128 × 2^Period s, with jitter.
//! - ForceDeviceResync(N) sends up to N requests (AnsRequired = 1), spaced by the
//!   configured interval, stopping at the first matching answer.
//! - While unsynchronised the node keeps asking at the configured retry interval.
//!
//! The same token is reused for retries until an answer matches: an answer to any of
//! them synchronises the clock, later duplicates no longer match and are ignored.

use lorawan_fuota::codec::clock_sync::{Downlink, Uplink, MAX_TOKEN};
use lorawan_fuota::codec::{decode_all, Package, PackageVersion, PackageVersionAns};

use crate::config::ClockSyncSettings;
use crate::outbox::{append_command, Outbox, UplinkPayload};
use crate::platform::{random_up_to, RandomSource};
use crate::report::PackageReport;
use crate::time::{DeviceClock, Instant};

/// Base period of DeviceAppTimePeriodicityReq: 128 × 2^Period seconds.
const PERIODICITY_BASE_SECS: u64 = 128;

/// Counters of the clock synchronisation client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockSyncStats {
    /// AppTimeReq uplinks built.
    pub requests_sent: u32,
    /// AppTimeAns applied.
    pub answers_applied: u32,
    /// AppTimeAns ignored because the token did not match.
    pub answers_with_wrong_token: u32,
}

/// Device side of TS003; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct ClockSyncClient {
    version: PackageVersion,
    settings: ClockSyncSettings,
    clock: DeviceClock,
    token: u8,
    request_due: Option<Instant>,
    answer_required: bool,
    forced_remaining: u8,
    periodic: Option<PeriodicRequests>,
    periodicity_answer_due: Option<Instant>,
    stats: ClockSyncStats,
}

#[derive(Debug, Clone, Copy)]
struct PeriodicRequests {
    period_secs: u64,
    next_at: Instant,
}

impl ClockSyncClient {
    /// A client with an unsynchronised clock.
    pub fn new(version: PackageVersion, settings: ClockSyncSettings) -> Self {
        ClockSyncClient {
            version,
            settings,
            clock: DeviceClock::unsynchronised(),
            token: 0,
            request_due: None,
            answer_required: false,
            forced_remaining: 0,
            periodic: None,
            periodicity_answer_due: None,
            stats: ClockSyncStats::default(),
        }
    }

    /// Called when the node starts: asks for the time if configured to and needed.
    pub fn start(&mut self, now: Instant) {
        if self.settings.sync_at_start && !self.clock.is_synchronised() {
            self.request_now(now);
        }
    }

    /// The device clock.
    pub fn clock(&self) -> &DeviceClock {
        &self.clock
    }

    /// The TokenReq the next AppTimeReq carries.
    pub fn token(&self) -> u8 {
        self.token
    }

    /// Counters.
    pub fn stats(&self) -> ClockSyncStats {
        self.stats
    }

    /// Sets the clock from a source the firmware trusts (MAC DeviceTimeAns).
    pub fn set_gps_time(&mut self, now: Instant, gps_millis: i64) {
        self.clock.set(now, gps_millis);
        if self.forced_remaining == 0 {
            self.request_due = None;
            self.answer_required = false;
        }
    }

    /// Asks for the time now unless a request is already due sooner (another package
    /// needs the time and the clock is not synchronised).
    pub fn request_now(&mut self, now: Instant) {
        self.answer_required = true;
        if self.request_due.is_none_or(|due| due > now) {
            self.request_due = Some(now);
        }
    }

    /// Handles one FRMPayload received on the TS003 port.
    pub fn handle(
        &mut self,
        now: Instant,
        payload: &[u8],
        fport: u8,
        outbox: &mut Outbox,
        rng: &mut impl RandomSource,
    ) -> PackageReport {
        let mut report = PackageReport::new(Package::ClockSync);
        for command in decode_all::<Downlink>(payload, self.version) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    report.decode_error = Some(error);
                    break;
                }
            };
            match command {
                Downlink::PackageVersionReq => {
                    let answer = PackageVersionAns::for_package(Package::ClockSync, self.version);
                    outbox.push(now, fport, &Uplink::PackageVersionAns(answer));
                    report.handled();
                }
                Downlink::AppTimeAns {
                    time_correction,
                    token,
                } => {
                    if token == self.token {
                        self.apply_answer(now, time_correction);
                        report.handled();
                    } else {
                        self.stats.answers_with_wrong_token =
                            self.stats.answers_with_wrong_token.saturating_add(1);
                        report.ignored();
                    }
                }
                Downlink::DeviceAppTimePeriodicityReq { period } => {
                    let period_secs = PERIODICITY_BASE_SECS << period.min(15);
                    let next_at = self.jittered(now, period_secs, rng);
                    self.periodic = Some(PeriodicRequests {
                        period_secs,
                        next_at,
                    });
                    self.periodicity_answer_due = Some(now);
                    report.handled();
                }
                Downlink::ForceDeviceResync { nb_transmissions } => {
                    self.forced_remaining = nb_transmissions;
                    if nb_transmissions > 0 {
                        self.request_now(now);
                    }
                    report.handled();
                }
            }
        }
        report
    }

    fn apply_answer(&mut self, now: Instant, correction: i32) {
        self.clock.apply_correction(correction);
        self.token = (self.token + 1) & MAX_TOKEN;
        self.stats.answers_applied = self.stats.answers_applied.saturating_add(1);
        self.forced_remaining = 0;
        let saturated = correction == i32::MAX || correction == i32::MIN;
        if self.version == PackageVersion::V2 && saturated {
            // TS003-2.0.0: the rest of the correction comes with the next answer.
            self.request_due = Some(now);
            self.answer_required = true;
        } else {
            self.request_due = None;
            self.answer_required = false;
        }
    }

    /// `now` plus `period_secs` ± the configured jitter.
    fn jittered(&self, now: Instant, period_secs: u64, rng: &mut impl RandomSource) -> Instant {
        let jitter_ms = u64::from(self.settings.periodic_jitter_secs) * 1000;
        let offset = random_up_to(rng, 2 * jitter_ms);
        // period − jitter + (0..=2·jitter), never before `now`.
        now.plus_millis((period_secs * 1000 + offset).saturating_sub(jitter_ms))
    }

    /// When something is due on the TS003 port.
    pub fn next_due(&self) -> Option<Instant> {
        [
            self.request_due,
            self.periodic.map(|p| p.next_at),
            self.periodicity_answer_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Appends everything due at `now` that fits; returns true if a DeviceTime was
    /// written (the uplink must then go out immediately).
    pub fn append_due(
        &mut self,
        now: Instant,
        out: &mut UplinkPayload,
        limit: usize,
        rng: &mut impl RandomSource,
    ) -> bool {
        let mut carries_device_time = false;
        if self.periodicity_answer_due.is_some_and(|due| due <= now) {
            let answer = Uplink::DeviceAppTimePeriodicityAns {
                not_supported: false,
                device_time: self.clock.on_air_seconds(now),
            };
            if append_command(out, limit, &answer) {
                self.periodicity_answer_due = None;
                carries_device_time = true;
            }
        }
        if let Some(periodic) = self.periodic.filter(|p| p.next_at <= now) {
            if self.request_due.is_none_or(|due| due > now) {
                self.request_due = Some(now);
            }
            let next_at = self.jittered(now, periodic.period_secs, rng);
            self.periodic = Some(PeriodicRequests {
                next_at,
                ..periodic
            });
        }
        if self.request_due.is_some_and(|due| due <= now) {
            let request = Uplink::AppTimeReq {
                device_time: self.clock.on_air_seconds(now),
                ans_required: self.answer_required || !self.clock.is_synchronised(),
                token: self.token,
            };
            if append_command(out, limit, &request) {
                carries_device_time = true;
                self.request_sent(now);
            }
        }
        carries_device_time
    }

    fn request_sent(&mut self, now: Instant) {
        self.stats.requests_sent = self.stats.requests_sent.saturating_add(1);
        self.forced_remaining = self.forced_remaining.saturating_sub(1);
        self.request_due = if self.forced_remaining > 0 {
            Some(now.plus_secs(self.settings.forced_resync_interval_secs.into()))
        } else if !self.clock.is_synchronised() {
            Some(now.plus_secs(self.settings.unsynchronised_retry_secs.into()))
        } else {
            None
        };
        self.answer_required = self.forced_remaining > 0 || !self.clock.is_synchronised();
    }
}
