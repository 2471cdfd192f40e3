//! The downlink scheduler of one concentrator: it decides when each downlink goes out,
//! as a pure state machine (plain values in, decisions out; no clock, no socket).
//!
//! * **One transmission at a time.** Every downlink occupies the concentrator for its
//!   airtime (or the packet forwarder's larger estimate of it) plus a guard time; no two
//!   overlap. The default guard (50 ms) covers `lora_pkt_fwd`'s JIT rule, which rejects
//!   a frame starting less than `TX_START_DELAY + TX_JIT_DELAY + TX_MARGIN_DELAY`
//!   (42.5 ms) after the previous one ends (`jitqueue.c`, `jit_collision_test`).
//! * **Class A first, at fixed times.** An answer goes in RX1 (uplink `tmst` + RX1 delay,
//!   1 s by default; join accept + 5 s) or RX2 (+ 1 s more; join accept + 6 s). RX1 is
//!   tried first; while its TX_ACK is pending the RX2 slot stays reserved so that a
//!   rejected RX1 can still be answered in RX2.
//! * **Multicast fills the gaps.** Class C frames wait in a queue and are placed at the
//!   earliest time that is free on the concentrator (never over a reserved Class A
//!   window), allowed by the duty-cycle accountant, and at least the minimum lead time
//!   ahead. They are handed to the forwarder only shortly before they start (the commit
//!   horizon), so Class A answers that arrive meanwhile still find their windows free.
//! * **Duty cycle.** Every downlink (ours and pass-through ones) is recorded in the
//!   [`DutyCycleAccountant`] when it is handed over and cancelled if the forwarder
//!   rejects it. Class A answers use [`TrafficClass::ClassA`] (they may use the reserved
//!   share); multicast uses [`TrafficClass::Other`].
//! * **TX_ACK.** [`DownlinkScheduler::on_tx_ack`] turns each answer into a decision:
//!   a rejected RX1 is retried in RX2 when RX2 is still possible; a rejected RX2 is given
//!   up; a multicast frame is rescheduled after a transient error (up to a number of
//!   attempts) and given up after a permanent one (see [`TxAckError::kind`]). Forwarders
//!   that never send TX_ACK (protocol v1) are covered by a timeout after which the frame
//!   counts as sent.
//!
//! Times: the scheduler works on the agent's [`MonotonicTime`]; the concentrator's 32-bit
//! `tmst` is mapped through a [`ConcentratorClock`] anchored on received uplinks, and all
//! `tmst` arithmetic wraps at 2^32.

mod tx_ack;

use std::collections::HashMap;

use thiserror::Error;

use crate::lorawan::airtime::{lorawan_downlink_airtime, AirtimeError};
use crate::lorawan::duty_cycle::{
    DutyCycleAccountant, DutyCycleError, RecordId, Refusal, TrafficClass, TransmitRequest,
};
use crate::lorawan::region::Modulation;
use crate::lorawan::time::{ConcentratorClock, MonotonicTime, Tmst, MICROS_PER_SECOND};

pub use tx_ack::{TxAckError, TxAckErrorKind, TxAckOutcome};

/// The caller's identifier of a downlink (unique among those the scheduler holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownlinkId(pub u64);

/// Radio parameters of a downlink that matter for scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxRadio {
    /// Centre frequency in Hz.
    pub frequency_hz: u32,
    /// Occupied bandwidth in Hz.
    pub bandwidth_hz: u32,
    /// Time on air in µs (counted by the duty cycle).
    pub time_on_air_us: u64,
    /// How long the concentrator is busy with it, µs (at least the time on air).
    pub concentrator_occupancy_us: u64,
}

impl TxRadio {
    /// A LoRaWAN downlink of `phy_payload_len` bytes at `frequency_hz` with the
    /// modulation of a data rate.
    pub fn lorawan_downlink(
        frequency_hz: u32,
        modulation: &Modulation,
        phy_payload_len: usize,
    ) -> Result<Self, AirtimeError> {
        let airtime = lorawan_downlink_airtime(modulation, phy_payload_len)?;
        Ok(TxRadio {
            frequency_hz,
            bandwidth_hz: modulation.occupied_bandwidth_hz(),
            time_on_air_us: airtime.time_on_air_us,
            concentrator_occupancy_us: airtime.concentrator_occupancy_us,
        })
    }

    fn occupancy_us(&self) -> u64 {
        self.concentrator_occupancy_us.max(self.time_on_air_us)
    }

    fn duty_cycle_request(&self, start: MonotonicTime, class: TrafficClass) -> TransmitRequest {
        TransmitRequest {
            frequency_hz: self.frequency_hz,
            bandwidth_hz: self.bandwidth_hz,
            start,
            airtime_us: self.time_on_air_us,
            class,
        }
    }
}

/// What a Class A answer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClassAKind {
    /// A data uplink; `rx1_delay_s` is the device's RX1 delay (RxTimingSetupReq /
    /// join accept RxDelay; 0 means 1 s, as the specification says).
    Data {
        /// RX1 delay in seconds (0..=15).
        rx1_delay_s: u8,
    },
    /// A join request: JOIN_ACCEPT_DELAY1 = 5 s, JOIN_ACCEPT_DELAY2 = 6 s.
    JoinAccept,
}

impl ClassAKind {
    /// Delay from the end of the uplink to RX1, µs.
    pub fn rx1_delay_us(&self) -> u64 {
        match *self {
            ClassAKind::Data { rx1_delay_s } => {
                u64::from(rx1_delay_s.clamp(1, 15)) * MICROS_PER_SECOND
            }
            ClassAKind::JoinAccept => 5 * MICROS_PER_SECOND,
        }
    }

    /// Delay from the end of the uplink to RX2 (RX1 + 1 s), µs.
    pub fn rx2_delay_us(&self) -> u64 {
        self.rx1_delay_us() + MICROS_PER_SECOND
    }
}

/// A Class A answer to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClassARequest {
    /// The caller's identifier.
    pub id: DownlinkId,
    /// `tmst` of the uplink being answered (end of its reception).
    pub uplink_tmst: Tmst,
    /// Data answer or join accept.
    pub kind: ClassAKind,
    /// The frame as sent in RX1 (`None`: do not use RX1).
    pub rx1: Option<TxRadio>,
    /// The frame as sent in RX2 (`None`: do not use RX2).
    pub rx2: Option<TxRadio>,
}

/// A Class C multicast frame to place in the gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MulticastRequest {
    /// The caller's identifier.
    pub id: DownlinkId,
    /// Radio parameters.
    pub radio: TxRadio,
    /// Not before this time.
    pub not_before: MonotonicTime,
    /// Give up if it cannot end by this time.
    pub deadline: Option<MonotonicTime>,
}

/// When a pass-through downlink asks to go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExternalTiming {
    /// At this counter value.
    AtTmst(Tmst),
    /// As soon as possible (`imme: true`).
    Immediately,
}

/// A downlink from an upstream network server passing through this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalRequest {
    /// The caller's identifier.
    pub id: DownlinkId,
    /// Radio parameters.
    pub radio: TxRadio,
    /// When.
    pub timing: ExternalTiming,
    /// How it counts against the reserved share (a pass-through downlink landing in a
    /// recent uplink's RX window may be counted as Class A; otherwise `Other`).
    pub class: TrafficClass,
}

/// Which slot a downlink takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxSlot {
    /// Class A first receive window.
    Rx1,
    /// Class A second receive window.
    Rx2,
    /// Class C multicast.
    Multicast,
    /// Pass-through from upstream.
    External,
}

/// A downlink placed on the concentrator: hand it to the packet forwarder now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScheduledTx {
    /// The caller's identifier.
    pub id: DownlinkId,
    /// The slot.
    pub slot: TxSlot,
    /// Start on the monotonic timeline.
    pub start: MonotonicTime,
    /// Start as a concentrator counter value (the TxPk's `tmst`).
    pub tmst: Tmst,
    /// Send with `imme: true` instead of `tmst` (pass-through that asked for it).
    pub immediately: bool,
    /// Radio parameters (the frequency to put in the TxPk).
    pub radio: TxRadio,
    /// 1 for the first attempt of this downlink, 2 for the next …
    pub attempt: u8,
}

/// Why a Class A window cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowUnavailable {
    /// The request did not offer a frame for this window.
    #[error("no frame offered for this window")]
    NotOffered,
    /// The window starts too soon to reach the concentrator in time.
    #[error("starts at {start}, less than the minimum lead time after {now}")]
    TooLate {
        /// Window start.
        start: MonotonicTime,
        /// Time of the decision.
        now: MonotonicTime,
    },
    /// Another downlink occupies the concentrator then.
    #[error("the concentrator is busy until {busy_until}")]
    ConcentratorBusy {
        /// End of the conflicting occupation (guard time included).
        busy_until: MonotonicTime,
    },
    /// The duty cycle does not allow it.
    #[error("duty cycle: {0}")]
    DutyCycle(DutyCycleError),
}

/// Why a downlink could not be scheduled at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    /// Neither RX1 nor RX2 can be used: record the answer as lost.
    #[error("no Class A window: RX1 {rx1}; RX2 {rx2}")]
    NoClassAWindow {
        /// Why not RX1.
        rx1: WindowUnavailable,
        /// Why not RX2.
        rx2: WindowUnavailable,
    },
    /// The identifier is already held by the scheduler.
    #[error("downlink {0:?} is already scheduled")]
    DuplicateId(DownlinkId),
    /// No uplink has anchored the concentrator clock yet.
    #[error("no uplink has anchored the concentrator clock yet")]
    NoClockReference,
    /// The `tmst` maps before the origin of the monotonic timeline.
    #[error("{0} cannot be placed on the monotonic timeline")]
    ClockOutOfRange(Tmst),
    /// Another downlink occupies the concentrator then.
    #[error("the concentrator is busy until {busy_until}")]
    ConcentratorBusy {
        /// End of the conflicting occupation (guard time included).
        busy_until: MonotonicTime,
    },
    /// The duty cycle does not allow it.
    #[error("duty cycle: {0}")]
    DutyCycle(DutyCycleError),
}

/// Why a downlink was dropped: record it (events table) with this reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GiveUpReason {
    /// The forwarder rejected it and no retry makes sense (RX2, pass-through, or a
    /// permanent error).
    #[error("rejected by the packet forwarder: {0}")]
    Rejected(TxAckError),
    /// RX1 was rejected and RX2 could not be used.
    #[error("RX1 rejected ({rx1_error}) and RX2 unavailable: {rx2}")]
    Rx2Unavailable {
        /// The RX1 rejection.
        rx1_error: TxAckError,
        /// Why not RX2.
        rx2: WindowUnavailable,
    },
    /// A multicast frame was rejected too many times.
    #[error("rejected {attempts} times, last: {last_error}")]
    AttemptsExhausted {
        /// The last rejection.
        last_error: TxAckError,
        /// Attempts made.
        attempts: u8,
    },
    /// A multicast frame could not end before its deadline.
    #[error("cannot be sent before its deadline {deadline}")]
    DeadlineMissed {
        /// The deadline.
        deadline: MonotonicTime,
    },
    /// The duty cycle can never allow it (outside every band, too long …).
    #[error("duty cycle: {0}")]
    DutyCycle(Refusal),
}

/// What to do after a TX_ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxAckDecision {
    /// Accepted: the downlink will go out.
    Sent {
        /// The downlink.
        id: DownlinkId,
        /// Its slot.
        slot: TxSlot,
    },
    /// RX1 was rejected; send this RX2 frame now.
    RetryInRx2(ScheduledTx),
    /// The multicast frame went back to the queue; [`DownlinkScheduler::poll`] will
    /// place it again from `not_before` on.
    Rescheduled {
        /// The downlink.
        id: DownlinkId,
        /// Earliest new start.
        not_before: MonotonicTime,
        /// The rejection that caused it.
        error: TxAckError,
    },
    /// Dropped: record it.
    GaveUp {
        /// The downlink.
        id: DownlinkId,
        /// The slot it last had.
        slot: TxSlot,
        /// Why.
        reason: GiveUpReason,
    },
    /// The scheduler holds no such downlink (already settled, or never scheduled).
    UnknownDownlink(DownlinkId),
}

/// What [`DownlinkScheduler::poll`] asks the caller to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Hand these to the packet forwarder now.
    pub transmit: Vec<ScheduledTx>,
    /// These multicast frames were dropped: record them.
    pub gave_up: Vec<(DownlinkId, GiveUpReason)>,
    /// No TX_ACK came for these within the timeout: they count as sent.
    pub assumed_sent: Vec<DownlinkId>,
    /// Call `poll` again at this time (or when something new is queued).
    pub next_wakeup: Option<MonotonicTime>,
}

/// Settings of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchedulerConfig {
    /// Gap kept between the end of one transmission and the start of the next, µs.
    pub guard_time_us: u64,
    /// Minimum time between handing a downlink to the forwarder and its start, µs
    /// (`lora_pkt_fwd` answers TOO_LATE below 42.5 ms; add the network's latency).
    pub min_lead_time_us: u64,
    /// Multicast frames are handed over at most this long before they start, µs.
    pub multicast_commit_horizon_us: u64,
    /// Delay before a rejected multicast frame is tried again, µs.
    pub multicast_retry_delay_us: u64,
    /// Attempts per multicast frame before giving up.
    pub max_multicast_attempts: u8,
    /// A downlink without TX_ACK after this long counts as sent, µs.
    pub tx_ack_timeout_us: u64,
}

impl Default for SchedulerConfig {
    /// 50 ms guard, 100 ms minimum lead, 500 ms commit horizon, 1 s retry delay,
    /// 5 attempts, 2 s TX_ACK timeout.
    fn default() -> Self {
        SchedulerConfig {
            guard_time_us: 50_000,
            min_lead_time_us: 100_000,
            multicast_commit_horizon_us: 500_000,
            multicast_retry_delay_us: MICROS_PER_SECOND,
            max_multicast_attempts: 5,
            tx_ack_timeout_us: 2 * MICROS_PER_SECOND,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    id: DownlinkId,
    start: u64,
    end: u64,
    /// An RX2 slot kept free while the RX1 TX_ACK is pending (not yet transmitted, not
    /// recorded in the duty cycle).
    rx2_hold: bool,
}

#[derive(Debug, Clone, Copy)]
struct Rx2Fallback {
    start: MonotonicTime,
    tmst: Tmst,
    radio: TxRadio,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    tx: ScheduledTx,
    record: RecordId,
    committed_at: MonotonicTime,
    rx2_fallback: Option<Rx2Fallback>,
    multicast: Option<MulticastRequest>,
}

#[derive(Debug, Clone, Copy)]
struct QueuedMulticast {
    request: MulticastRequest,
    attempts_made: u8,
    not_before: MonotonicTime,
    /// Do not search again before this time (the last search found a later slot).
    next_check: MonotonicTime,
}

/// The downlink scheduler of one concentrator.
#[derive(Debug, Clone)]
pub struct DownlinkScheduler {
    config: SchedulerConfig,
    accountant: DutyCycleAccountant,
    clock: Option<ConcentratorClock>,
    reservations: Vec<Reservation>,
    multicast_queue: Vec<QueuedMulticast>,
    in_flight: HashMap<DownlinkId, InFlight>,
}

impl DownlinkScheduler {
    /// A scheduler using `accountant` for the gateway's duty cycle.
    pub fn new(config: SchedulerConfig, accountant: DutyCycleAccountant) -> Self {
        DownlinkScheduler {
            config,
            accountant,
            clock: None,
            reservations: Vec::new(),
            multicast_queue: Vec::new(),
            in_flight: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// The duty-cycle accountant (for usage reports).
    pub fn accountant(&self) -> &DutyCycleAccountant {
        &self.accountant
    }

    /// The current concentrator clock anchor.
    pub fn clock(&self) -> Option<ConcentratorClock> {
        self.clock
    }

    /// Anchors the concentrator clock: the counter read `tmst` at `at` (call it for every
    /// received uplink with its `tmst` and arrival time).
    pub fn sync_concentrator_clock(&mut self, tmst: Tmst, at: MonotonicTime) {
        self.clock = Some(ConcentratorClock::new(tmst, at));
    }

    /// Multicast frames waiting to be placed.
    pub fn queued_multicast(&self) -> usize {
        self.multicast_queue.len()
    }

    /// Downlinks handed over whose TX_ACK is pending.
    pub fn awaiting_tx_ack(&self) -> usize {
        self.in_flight.len()
    }

    /// Places a Class A answer in RX1, or RX2 if RX1 cannot be used. Without a clock
    /// anchor yet, the uplink is taken to have ended at `now`.
    pub fn schedule_class_a(
        &mut self,
        request: ClassARequest,
        now: MonotonicTime,
    ) -> Result<ScheduledTx, ScheduleError> {
        self.ensure_new_id(request.id)?;
        self.prune(now);
        let clock = *self
            .clock
            .get_or_insert(ConcentratorClock::new(request.uplink_tmst, now));
        let uplink_end = clock
            .to_monotonic(request.uplink_tmst)
            .ok_or(ScheduleError::ClockOutOfRange(request.uplink_tmst))?;
        let rx1_delay = request.kind.rx1_delay_us();
        let rx2_delay = request.kind.rx2_delay_us();
        let rx2_plan = request.rx2.map(|radio| Rx2Fallback {
            start: uplink_end.saturating_add_micros(rx2_delay),
            tmst: request
                .uplink_tmst
                .wrapping_add_micros(delay_u32(rx2_delay)),
            radio,
        });

        let rx1_start = uplink_end.saturating_add_micros(rx1_delay);
        let rx1_check = match request.rx1 {
            None => Err(WindowUnavailable::NotOffered),
            Some(radio) => self.check_class_a_window(request.id, rx1_start, &radio, now),
        };
        if let (Ok(()), Some(radio)) = (&rx1_check, request.rx1) {
            let tx = ScheduledTx {
                id: request.id,
                slot: TxSlot::Rx1,
                start: rx1_start,
                tmst: request
                    .uplink_tmst
                    .wrapping_add_micros(delay_u32(rx1_delay)),
                immediately: false,
                radio,
                attempt: 1,
            };
            self.commit(tx, TrafficClass::ClassA, now, rx2_plan, None)
                .map_err(ScheduleError::DutyCycle)?;
            if let Some(plan) = rx2_plan {
                let end = plan
                    .start
                    .as_micros()
                    .saturating_add(plan.radio.occupancy_us());
                if self.conflict(plan.start.as_micros(), end, None).is_none() {
                    self.reservations.push(Reservation {
                        id: request.id,
                        start: plan.start.as_micros(),
                        end,
                        rx2_hold: true,
                    });
                }
            }
            return Ok(tx);
        }

        let rx2_check = match rx2_plan {
            None => Err(WindowUnavailable::NotOffered),
            Some(plan) => self.check_class_a_window(request.id, plan.start, &plan.radio, now),
        };
        match (rx2_check, rx2_plan) {
            (Ok(()), Some(plan)) => {
                let tx = ScheduledTx {
                    id: request.id,
                    slot: TxSlot::Rx2,
                    start: plan.start,
                    tmst: plan.tmst,
                    immediately: false,
                    radio: plan.radio,
                    attempt: 1,
                };
                self.commit(tx, TrafficClass::ClassA, now, None, None)
                    .map_err(ScheduleError::DutyCycle)?;
                Ok(tx)
            }
            (rx2, _) => Err(ScheduleError::NoClassAWindow {
                rx1: rx1_check.err().unwrap_or(WindowUnavailable::NotOffered),
                rx2: rx2.err().unwrap_or(WindowUnavailable::NotOffered),
            }),
        }
    }

    /// Queues a multicast frame; [`Self::poll`] places it.
    pub fn enqueue_multicast(&mut self, request: MulticastRequest) -> Result<(), ScheduleError> {
        self.ensure_new_id(request.id)?;
        self.multicast_queue.push(QueuedMulticast {
            request,
            attempts_made: 0,
            not_before: request.not_before,
            next_check: MonotonicTime::ZERO,
        });
        Ok(())
    }

    /// Removes a queued multicast frame (not one already handed over); whether it was
    /// queued.
    pub fn cancel_multicast(&mut self, id: DownlinkId) -> bool {
        let before = self.multicast_queue.len();
        self.multicast_queue
            .retain(|queued| queued.request.id != id);
        self.multicast_queue.len() != before
    }

    /// Admits a pass-through downlink at the time its network server chose, if the
    /// concentrator is free then and the duty cycle allows it (it counts in the same
    /// budget). On refusal, answer the upstream server with a TX_ACK error.
    pub fn admit_external(
        &mut self,
        request: ExternalRequest,
        now: MonotonicTime,
    ) -> Result<ScheduledTx, ScheduleError> {
        self.ensure_new_id(request.id)?;
        self.prune(now);
        let (start, tmst, immediately) = match request.timing {
            ExternalTiming::AtTmst(tmst) => {
                let clock = self.clock.ok_or(ScheduleError::NoClockReference)?;
                let start = clock
                    .to_monotonic(tmst)
                    .ok_or(ScheduleError::ClockOutOfRange(tmst))?;
                (start, tmst, false)
            }
            ExternalTiming::Immediately => {
                let start = now.saturating_add_micros(self.config.min_lead_time_us);
                let tmst = self
                    .clock
                    .map(|clock| clock.to_tmst(start))
                    .unwrap_or_default();
                (start, tmst, true)
            }
        };
        let end = start
            .as_micros()
            .saturating_add(request.radio.occupancy_us());
        if let Some(busy_until) = self.conflict(start.as_micros(), end, None) {
            return Err(ScheduleError::ConcentratorBusy {
                busy_until: MonotonicTime::from_micros(busy_until),
            });
        }
        let tx = ScheduledTx {
            id: request.id,
            slot: TxSlot::External,
            start,
            tmst,
            immediately,
            radio: request.radio,
            attempt: 1,
        };
        self.commit(tx, request.class, now, None, None)
            .map_err(ScheduleError::DutyCycle)?;
        Ok(tx)
    }

    /// Settles a downlink with the forwarder's TX_ACK.
    pub fn on_tx_ack(
        &mut self,
        id: DownlinkId,
        outcome: TxAckOutcome,
        now: MonotonicTime,
    ) -> TxAckDecision {
        let Some(flight) = self.in_flight.remove(&id) else {
            return TxAckDecision::UnknownDownlink(id);
        };
        let slot = flight.tx.slot;
        let error = match outcome {
            TxAckOutcome::Accepted | TxAckOutcome::AcceptedWithAdjustedPower { .. } => {
                self.release_rx2_hold(id);
                return TxAckDecision::Sent { id, slot };
            }
            TxAckOutcome::Rejected(error) => error,
        };
        // The frame will not go out: free its airtime and its slot.
        self.accountant.cancel(flight.record);
        self.reservations
            .retain(|reservation| reservation.id != id || reservation.rx2_hold);
        self.release_rx2_hold(id);
        self.forget_slot_searches();
        self.prune(now);

        match slot {
            TxSlot::Rx1 => match flight.rx2_fallback {
                None => TxAckDecision::GaveUp {
                    id,
                    slot,
                    reason: GiveUpReason::Rejected(error),
                },
                Some(plan) => self.retry_in_rx2(flight.tx, plan, error, now),
            },
            TxSlot::Rx2 | TxSlot::External => TxAckDecision::GaveUp {
                id,
                slot,
                reason: GiveUpReason::Rejected(error),
            },
            TxSlot::Multicast => {
                let Some(request) = flight.multicast else {
                    return TxAckDecision::GaveUp {
                        id,
                        slot,
                        reason: GiveUpReason::Rejected(error),
                    };
                };
                let attempts = flight.tx.attempt;
                if error.kind() == TxAckErrorKind::Permanent {
                    return TxAckDecision::GaveUp {
                        id,
                        slot,
                        reason: GiveUpReason::Rejected(error),
                    };
                }
                if attempts >= self.config.max_multicast_attempts {
                    return TxAckDecision::GaveUp {
                        id,
                        slot,
                        reason: GiveUpReason::AttemptsExhausted {
                            last_error: error,
                            attempts,
                        },
                    };
                }
                let retry_at = match error {
                    // Too far ahead: the next search starts from now anyway.
                    TxAckError::TooEarly => now,
                    _ => now.saturating_add_micros(self.config.multicast_retry_delay_us),
                };
                let not_before = retry_at.max(request.not_before);
                self.multicast_queue.push(QueuedMulticast {
                    request,
                    attempts_made: attempts,
                    not_before,
                    next_check: MonotonicTime::ZERO,
                });
                TxAckDecision::Rescheduled {
                    id,
                    not_before,
                    error,
                }
            }
        }
    }

    /// Places queued multicast frames whose slot is within the commit horizon, expires
    /// TX_ACKs that never came, and says when to call again.
    pub fn poll(&mut self, now: MonotonicTime) -> PollOutcome {
        self.prune(now);
        let mut outcome = PollOutcome::default();

        let timeout = self.config.tx_ack_timeout_us;
        let mut expired: Vec<DownlinkId> = self
            .in_flight
            .iter()
            .filter(|(_, flight)| now >= flight.committed_at.saturating_add_micros(timeout))
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            self.in_flight.remove(&id);
            self.release_rx2_hold(id);
            outcome.assumed_sent.push(id);
        }

        let mut wakeups: Vec<MonotonicTime> = Vec::new();
        let horizon = now.saturating_add_micros(self.config.multicast_commit_horizon_us);
        let queue = std::mem::take(&mut self.multicast_queue);
        let mut still_queued = Vec::with_capacity(queue.len());
        for mut queued in queue {
            let request = queued.request;
            let earliest_possible_end = now
                .saturating_add_micros(self.config.min_lead_time_us)
                .max(queued.not_before)
                .saturating_add_micros(request.radio.time_on_air_us);
            if let Some(deadline) = request.deadline {
                if earliest_possible_end > deadline {
                    outcome
                        .gave_up
                        .push((request.id, GiveUpReason::DeadlineMissed { deadline }));
                    continue;
                }
            }
            if queued.next_check > now {
                wakeups.push(queued.next_check);
                still_queued.push(queued);
                continue;
            }
            let Some(clock) = self.clock else {
                // No uplink has shown the concentrator's counter yet: nothing to time by.
                still_queued.push(queued);
                continue;
            };
            let start = match self.find_multicast_slot(&queued, now) {
                Ok(start) => start,
                Err(refusal) => {
                    outcome
                        .gave_up
                        .push((request.id, GiveUpReason::DutyCycle(refusal)));
                    continue;
                }
            };
            if let Some(deadline) = request.deadline {
                if start.saturating_add_micros(request.radio.time_on_air_us) > deadline {
                    outcome
                        .gave_up
                        .push((request.id, GiveUpReason::DeadlineMissed { deadline }));
                    continue;
                }
            }
            if start > horizon {
                queued.next_check =
                    start.saturating_sub_micros(self.config.multicast_commit_horizon_us);
                wakeups.push(queued.next_check);
                still_queued.push(queued);
                continue;
            }
            let tx = ScheduledTx {
                id: request.id,
                slot: TxSlot::Multicast,
                start,
                tmst: clock.to_tmst(start),
                immediately: false,
                radio: request.radio,
                attempt: queued.attempts_made.saturating_add(1),
            };
            match self.commit(tx, TrafficClass::Other, now, None, Some(request)) {
                Ok(()) => outcome.transmit.push(tx),
                Err(_) => {
                    // The slot was just checked; should it fail anyway, search again soon.
                    queued.next_check =
                        now.saturating_add_micros(self.config.multicast_retry_delay_us);
                    wakeups.push(queued.next_check);
                    still_queued.push(queued);
                }
            }
        }
        self.multicast_queue = still_queued;

        wakeups.extend(
            self.in_flight
                .values()
                .map(|flight| flight.committed_at.saturating_add_micros(timeout)),
        );
        outcome.next_wakeup = wakeups.into_iter().min();
        outcome
    }

    fn retry_in_rx2(
        &mut self,
        rx1: ScheduledTx,
        plan: Rx2Fallback,
        rx1_error: TxAckError,
        now: MonotonicTime,
    ) -> TxAckDecision {
        let id = rx1.id;
        let give_up = |rx2| TxAckDecision::GaveUp {
            id,
            slot: TxSlot::Rx1,
            reason: GiveUpReason::Rx2Unavailable {
                rx1_error: rx1_error.clone(),
                rx2,
            },
        };
        if let Err(unavailable) = self.check_class_a_window(id, plan.start, &plan.radio, now) {
            return give_up(unavailable);
        }
        let tx = ScheduledTx {
            id,
            slot: TxSlot::Rx2,
            start: plan.start,
            tmst: plan.tmst,
            immediately: false,
            radio: plan.radio,
            attempt: rx1.attempt.saturating_add(1),
        };
        match self.commit(tx, TrafficClass::ClassA, now, None, None) {
            Ok(()) => TxAckDecision::RetryInRx2(tx),
            Err(error) => give_up(WindowUnavailable::DutyCycle(error)),
        }
    }

    fn check_class_a_window(
        &self,
        id: DownlinkId,
        start: MonotonicTime,
        radio: &TxRadio,
        now: MonotonicTime,
    ) -> Result<(), WindowUnavailable> {
        if start < now.saturating_add_micros(self.config.min_lead_time_us) {
            return Err(WindowUnavailable::TooLate { start, now });
        }
        let end = start.as_micros().saturating_add(radio.occupancy_us());
        if let Some(busy_until) = self.conflict(start.as_micros(), end, Some(id)) {
            return Err(WindowUnavailable::ConcentratorBusy {
                busy_until: MonotonicTime::from_micros(busy_until),
            });
        }
        self.accountant
            .can_transmit(&radio.duty_cycle_request(start, TrafficClass::ClassA))
            .map_err(WindowUnavailable::DutyCycle)
    }

    /// Earliest start for a queued multicast frame: free on the concentrator and allowed
    /// by the duty cycle. Each step moves strictly later and past a finite set of
    /// reservations and records, so the search ends.
    fn find_multicast_slot(
        &self,
        queued: &QueuedMulticast,
        now: MonotonicTime,
    ) -> Result<MonotonicTime, Refusal> {
        let radio = queued.request.radio;
        let mut start = queued
            .not_before
            .max(now.saturating_add_micros(self.config.min_lead_time_us));
        loop {
            let end = start.as_micros().saturating_add(radio.occupancy_us());
            if let Some(busy_until) = self.conflict(start.as_micros(), end, None) {
                start = MonotonicTime::from_micros(busy_until);
                continue;
            }
            let allowed = self
                .accountant
                .earliest_start(&radio.duty_cycle_request(start, TrafficClass::Other))?;
            if allowed > start {
                start = allowed;
                continue;
            }
            return Ok(start);
        }
    }

    /// If `[start, end)` comes within the guard time of a reservation (other than those
    /// of `ignore`), the earliest start after all such reservations.
    fn conflict(&self, start: u64, end: u64, ignore: Option<DownlinkId>) -> Option<u64> {
        let guard = self.config.guard_time_us;
        self.reservations
            .iter()
            .filter(|reservation| Some(reservation.id) != ignore)
            .filter(|reservation| {
                end.saturating_add(guard) > reservation.start
                    && reservation.end.saturating_add(guard) > start
            })
            .map(|reservation| reservation.end.saturating_add(guard))
            .max()
    }

    fn commit(
        &mut self,
        tx: ScheduledTx,
        class: TrafficClass,
        now: MonotonicTime,
        rx2_fallback: Option<Rx2Fallback>,
        multicast: Option<MulticastRequest>,
    ) -> Result<(), DutyCycleError> {
        let record = self
            .accountant
            .record(&tx.radio.duty_cycle_request(tx.start, class))?;
        self.reservations.push(Reservation {
            id: tx.id,
            start: tx.start.as_micros(),
            end: tx.start.as_micros().saturating_add(tx.radio.occupancy_us()),
            rx2_hold: false,
        });
        self.in_flight.insert(
            tx.id,
            InFlight {
                tx,
                record,
                committed_at: now,
                rx2_fallback,
                multicast,
            },
        );
        Ok(())
    }

    fn release_rx2_hold(&mut self, id: DownlinkId) {
        let before = self.reservations.len();
        self.reservations
            .retain(|reservation| !(reservation.id == id && reservation.rx2_hold));
        if self.reservations.len() != before {
            self.forget_slot_searches();
        }
    }

    /// Something was freed: queued frames may now fit earlier than last found.
    fn forget_slot_searches(&mut self) {
        for queued in &mut self.multicast_queue {
            queued.next_check = MonotonicTime::ZERO;
        }
    }

    fn prune(&mut self, now: MonotonicTime) {
        let guard = self.config.guard_time_us;
        let now = now.as_micros();
        self.reservations
            .retain(|reservation| reservation.end.saturating_add(guard) > now);
    }

    fn ensure_new_id(&self, id: DownlinkId) -> Result<(), ScheduleError> {
        let queued = self
            .multicast_queue
            .iter()
            .any(|queued| queued.request.id == id);
        if queued || self.in_flight.contains_key(&id) {
            Err(ScheduleError::DuplicateId(id))
        } else {
            Ok(())
        }
    }
}

/// Class A delays are at most 16 s, far below 2^32 µs.
fn delay_u32(delay_us: u64) -> u32 {
    u32::try_from(delay_us).unwrap_or(u32::MAX)
}
