//! The downlink scheduler of one concentrator: Class A window times (with `tmst`
//! wrap-around), RX2 fallback, multicast in the gaps, duty-cycle waits, and the decision
//! taken for every TX_ACK error.

use fuota_agent::lorawan::airtime::CodingRate;
use fuota_agent::lorawan::duty_cycle::{
    DutyCycleAccountant, DutyCycleConfig, Refusal, TrafficClass,
};
use fuota_agent::lorawan::region::{Modulation, Region, RegionName, RegionOptions};
use fuota_agent::lorawan::scheduler::{
    ClassAKind, ClassARequest, DownlinkId, DownlinkScheduler, ExternalRequest, ExternalTiming,
    GiveUpReason, MulticastRequest, ScheduleError, ScheduledTx, SchedulerConfig, TxAckDecision,
    TxAckError, TxAckErrorKind, TxAckOutcome, TxRadio, TxSlot, WindowUnavailable,
};
use fuota_agent::lorawan::time::{MonotonicTime, Tmst};

const MS: u64 = 1_000;
const SECOND: u64 = 1_000_000;
const T0: MonotonicTime = MonotonicTime::from_secs(1_000);
const NEAR_WRAP: u32 = u32::MAX - 299_999;

fn at(offset_us: u64) -> MonotonicTime {
    T0.saturating_add_micros(offset_us)
}

fn scheduler_with(config: SchedulerConfig) -> DownlinkScheduler {
    let region = Region::new(RegionName::Eu868, RegionOptions::default());
    DownlinkScheduler::new(
        config,
        DutyCycleAccountant::for_region(&region, DutyCycleConfig::default()),
    )
}

fn new_scheduler() -> DownlinkScheduler {
    scheduler_with(SchedulerConfig::default())
}

fn radio(frequency_hz: u32, spreading_factor: u8, phy_len: usize) -> TxRadio {
    let modulation = Modulation::Lora {
        spreading_factor,
        bandwidth_hz: 125_000,
        coding_rate: CodingRate::Cr4_5,
    };
    match TxRadio::lorawan_downlink(frequency_hz, &modulation, phy_len) {
        Ok(radio) => radio,
        Err(error) => panic!("test radio parameters are valid: {error}"),
    }
}

fn class_a(id: u64, uplink_tmst: Tmst, kind: ClassAKind) -> ClassARequest {
    ClassARequest {
        id: DownlinkId(id),
        uplink_tmst,
        kind,
        rx1: Some(radio(868_100_000, 7, 20)),
        rx2: Some(radio(869_525_000, 12, 20)),
    }
}

fn data() -> ClassAKind {
    ClassAKind::Data { rx1_delay_s: 1 }
}

fn multicast(id: u64, radio: TxRadio, not_before: MonotonicTime) -> MulticastRequest {
    MulticastRequest {
        id: DownlinkId(id),
        radio,
        not_before,
        deadline: None,
    }
}

fn end_of(tx: &ScheduledTx) -> u64 {
    tx.start.as_micros()
        + tx.radio
            .concentrator_occupancy_us
            .max(tx.radio.time_on_air_us)
}

fn assert_separated(a: &ScheduledTx, b: &ScheduledTx, guard_us: u64) {
    let (first, second) = if a.start <= b.start { (a, b) } else { (b, a) };
    assert!(
        end_of(first) + guard_us <= second.start.as_micros(),
        "{first:?} and {second:?} are closer than the guard time"
    );
}

#[test]
fn class_a_windows_follow_the_uplink_tmst() {
    let mut scheduler = new_scheduler();
    let uplink = Tmst(10_000_000);
    scheduler.sync_concentrator_clock(uplink, T0);
    let tx = scheduler
        .schedule_class_a(class_a(1, uplink, data()), at(50 * MS))
        .expect("RX1 is free");
    assert_eq!(tx.slot, TxSlot::Rx1);
    assert_eq!(tx.tmst, Tmst(11_000_000));
    assert_eq!(tx.start, at(SECOND));
    assert_eq!(tx.radio.frequency_hz, 868_100_000);
    assert_eq!(tx.attempt, 1);

    // RX1 delay 0 means 1 s; 3 means 3 s.
    scheduler.sync_concentrator_clock(Tmst(100_000_000), at(90 * SECOND));
    let tx = scheduler
        .schedule_class_a(
            class_a(2, Tmst(100_000_000), ClassAKind::Data { rx1_delay_s: 0 }),
            at(90 * SECOND),
        )
        .expect("free");
    assert_eq!(tx.tmst, Tmst(101_000_000));
    scheduler.sync_concentrator_clock(Tmst(200_000_000), at(190 * SECOND));
    let tx = scheduler
        .schedule_class_a(
            class_a(3, Tmst(200_000_000), ClassAKind::Data { rx1_delay_s: 3 }),
            at(190 * SECOND),
        )
        .expect("free");
    assert_eq!(tx.tmst, Tmst(203_000_000));
    assert_eq!(tx.start, at(193 * SECOND));

    // Join accept: + 5 s.
    scheduler.sync_concentrator_clock(Tmst(300_000_000), at(290 * SECOND));
    let tx = scheduler
        .schedule_class_a(
            class_a(4, Tmst(300_000_000), ClassAKind::JoinAccept),
            at(290 * SECOND),
        )
        .expect("free");
    assert_eq!(tx.tmst, Tmst(305_000_000));
    assert_eq!(tx.start, at(295 * SECOND));
}

#[test]
fn class_a_windows_across_the_tmst_wrap() {
    let mut scheduler = new_scheduler();
    scheduler.sync_concentrator_clock(Tmst(NEAR_WRAP), T0);
    let tx = scheduler
        .schedule_class_a(class_a(1, Tmst(NEAR_WRAP), data()), at(20 * MS))
        .expect("free");
    assert_eq!(tx.tmst, Tmst(700_000)); // 2^32 − 300 000 + 1 000 000
    assert_eq!(tx.start, at(SECOND));
    // RX1 rejected: the RX2 retry wraps too.
    match scheduler.on_tx_ack(
        DownlinkId(1),
        TxAckOutcome::Rejected(TxAckError::CollisionPacket),
        at(30 * MS),
    ) {
        TxAckDecision::RetryInRx2(rx2) => {
            assert_eq!(rx2.tmst, Tmst(1_700_000));
            assert_eq!(rx2.start, at(2 * SECOND));
        }
        other => panic!("expected an RX2 retry, got {other:?}"),
    }

    // A join accept whose uplink ended after the wrap, answered with the clock anchored
    // before it.
    let mut scheduler = new_scheduler();
    scheduler.sync_concentrator_clock(Tmst(NEAR_WRAP), T0);
    let uplink_after_wrap = Tmst(200_000); // 500 ms after the anchor
    let tx = scheduler
        .schedule_class_a(
            class_a(2, uplink_after_wrap, ClassAKind::JoinAccept),
            at(600 * MS),
        )
        .expect("free");
    assert_eq!(tx.tmst, Tmst(5_200_000));
    assert_eq!(tx.start, at(5_500 * MS));

    // Multicast timed from a clock anchored just before the wrap.
    let mut scheduler = new_scheduler();
    scheduler.sync_concentrator_clock(Tmst(NEAR_WRAP), T0);
    scheduler
        .enqueue_multicast(multicast(3, radio(869_525_000, 9, 30), at(400 * MS)))
        .expect("new id");
    let outcome = scheduler.poll(T0);
    assert_eq!(outcome.transmit.len(), 1);
    assert_eq!(outcome.transmit[0].start, at(400 * MS));
    assert_eq!(outcome.transmit[0].tmst, Tmst(100_000));
}

#[test]
fn rejected_rx1_is_retried_in_rx2_then_given_up() {
    let mut scheduler = new_scheduler();
    let uplink = Tmst(10_000_000);
    scheduler.sync_concentrator_clock(uplink, T0);
    scheduler
        .schedule_class_a(class_a(1, uplink, data()), at(50 * MS))
        .expect("free");
    let retry = match scheduler.on_tx_ack(
        DownlinkId(1),
        TxAckOutcome::Rejected(TxAckError::TooLate),
        at(60 * MS),
    ) {
        TxAckDecision::RetryInRx2(tx) => tx,
        other => panic!("expected an RX2 retry, got {other:?}"),
    };
    assert_eq!(retry.slot, TxSlot::Rx2);
    assert_eq!(retry.tmst, Tmst(12_000_000));
    assert_eq!(retry.radio.frequency_hz, 869_525_000);
    assert_eq!(retry.attempt, 2);
    assert_eq!(
        scheduler.on_tx_ack(
            DownlinkId(1),
            TxAckOutcome::Rejected(TxAckError::TooLate),
            at(70 * MS)
        ),
        TxAckDecision::GaveUp {
            id: DownlinkId(1),
            slot: TxSlot::Rx2,
            reason: GiveUpReason::Rejected(TxAckError::TooLate)
        }
    );
    // Nothing of it is left on the duty-cycle books.
    assert!(scheduler
        .accountant()
        .usage(at(10 * SECOND))
        .iter()
        .all(|band| band.used_us == 0));

    // Even a frequency the RX1 chain refuses is worth an RX2 try (other frequency).
    scheduler.sync_concentrator_clock(Tmst(50_000_000), at(40 * SECOND));
    scheduler
        .schedule_class_a(class_a(2, Tmst(50_000_000), data()), at(40 * SECOND))
        .expect("free");
    assert!(matches!(
        scheduler.on_tx_ack(
            DownlinkId(2),
            TxAckOutcome::Rejected(TxAckError::TxFrequency),
            at(40 * SECOND + 10 * MS)
        ),
        TxAckDecision::RetryInRx2(_)
    ));

    // When the RX1 rejection arrives too late for RX2, the answer is given up.
    scheduler.sync_concentrator_clock(Tmst(90_000_000), at(80 * SECOND));
    scheduler
        .schedule_class_a(class_a(3, Tmst(90_000_000), data()), at(80 * SECOND))
        .expect("free");
    assert!(matches!(
        scheduler.on_tx_ack(
            DownlinkId(3),
            TxAckOutcome::Rejected(TxAckError::CollisionPacket),
            at(81_950 * MS)
        ),
        TxAckDecision::GaveUp {
            reason: GiveUpReason::Rx2Unavailable {
                rx1_error: TxAckError::CollisionPacket,
                rx2: WindowUnavailable::TooLate { .. }
            },
            ..
        }
    ));
}

#[test]
fn busy_rx1_falls_back_to_rx2_and_no_window_is_an_error() {
    let mut scheduler = new_scheduler();
    let uplink = Tmst(10_000_000);
    scheduler.sync_concentrator_clock(uplink, T0);
    // An upstream server's downlink sits on our RX1.
    scheduler
        .admit_external(
            ExternalRequest {
                id: DownlinkId(100),
                radio: radio(868_300_000, 9, 30),
                timing: ExternalTiming::AtTmst(Tmst(11_000_000)),
                class: TrafficClass::Other,
            },
            at(10 * MS),
        )
        .expect("free");
    let tx = scheduler
        .schedule_class_a(class_a(1, uplink, data()), at(50 * MS))
        .expect("RX2 is free");
    assert_eq!(tx.slot, TxSlot::Rx2);
    assert_eq!(tx.tmst, Tmst(12_000_000));

    // A second answer to the same uplink time finds both windows taken.
    let error = scheduler
        .schedule_class_a(class_a(2, uplink, data()), at(60 * MS))
        .expect_err("both windows busy");
    assert!(matches!(
        error,
        ScheduleError::NoClassAWindow {
            rx1: WindowUnavailable::ConcentratorBusy { .. },
            rx2: WindowUnavailable::ConcentratorBusy { .. }
        }
    ));
    // Too late for both.
    let error = scheduler
        .schedule_class_a(class_a(3, uplink, data()), at(2_500 * MS))
        .expect_err("too late");
    assert!(matches!(
        error,
        ScheduleError::NoClassAWindow {
            rx1: WindowUnavailable::TooLate { .. },
            rx2: WindowUnavailable::TooLate { .. }
        }
    ));
    // A request offering neither window.
    let mut neither = class_a(4, Tmst(50_000_000), data());
    neither.rx1 = None;
    neither.rx2 = None;
    assert!(matches!(
        scheduler.schedule_class_a(neither, at(40 * SECOND)),
        Err(ScheduleError::NoClassAWindow {
            rx1: WindowUnavailable::NotOffered,
            rx2: WindowUnavailable::NotOffered
        })
    ));
    assert_eq!(
        scheduler.schedule_class_a(class_a(1, uplink, data()), at(70 * MS)),
        Err(ScheduleError::DuplicateId(DownlinkId(1)))
    );
}

#[test]
fn rx2_stays_reserved_until_rx1_is_acknowledged() {
    let run = |acknowledge_rx1_first: bool| {
        let mut scheduler = new_scheduler();
        let uplink = Tmst(10_000_000);
        scheduler.sync_concentrator_clock(uplink, T0);
        scheduler
            .schedule_class_a(class_a(1, uplink, data()), at(50 * MS))
            .expect("free");
        if acknowledge_rx1_first {
            assert_eq!(
                scheduler.on_tx_ack(DownlinkId(1), TxAckOutcome::Accepted, at(60 * MS)),
                TxAckDecision::Sent {
                    id: DownlinkId(1),
                    slot: TxSlot::Rx1
                }
            );
        }
        // A multicast frame that would like to start at the RX2 time.
        scheduler
            .enqueue_multicast(multicast(2, radio(869_525_000, 7, 20), at(2 * SECOND)))
            .expect("new id");
        let outcome = scheduler.poll(at(1_600 * MS));
        (scheduler, outcome)
    };

    let (_, outcome) = run(true);
    assert_eq!(outcome.transmit.len(), 1);
    assert_eq!(outcome.transmit[0].start, at(2 * SECOND));

    let (mut scheduler, outcome) = run(false);
    assert!(outcome.transmit.is_empty(), "RX2 is still held");
    let wakeup = outcome.next_wakeup.expect("the frame waits");
    assert!(wakeup > at(2 * SECOND));
    // When the RX1 TX_ACK arrives, the RX2 slot is released at once.
    scheduler.on_tx_ack(DownlinkId(1), TxAckOutcome::Accepted, at(1_610 * MS));
    let outcome = scheduler.poll(at(1_620 * MS));
    assert_eq!(outcome.transmit.len(), 1);
    assert_eq!(outcome.transmit[0].start, at(2 * SECOND));
}

#[test]
fn multicast_fills_the_gaps_around_class_a_windows() {
    let config = SchedulerConfig::default();
    let mut scheduler = scheduler_with(config);
    let uplink = Tmst(10_000_000);
    scheduler.sync_concentrator_clock(uplink, T0);
    let rx1 = scheduler
        .schedule_class_a(class_a(1, uplink, data()), at(20 * MS))
        .expect("free");
    // 20 frames of ~200 ms on the 10 % band, all wanted now.
    for id in 10..30 {
        scheduler
            .enqueue_multicast(multicast(id, radio(869_525_000, 9, 30), T0))
            .expect("new id");
    }
    let mut sent: Vec<ScheduledTx> = Vec::new();
    let mut now = at(30 * MS);
    for _ in 0..200 {
        let outcome = scheduler.poll(now);
        for tx in &outcome.transmit {
            assert!(tx.start >= now.saturating_add_micros(config.min_lead_time_us));
            assert!(tx.start <= now.saturating_add_micros(config.multicast_commit_horizon_us));
            assert_eq!(tx.slot, TxSlot::Multicast);
            scheduler.on_tx_ack(tx.id, TxAckOutcome::Accepted, now);
        }
        sent.extend(outcome.transmit);
        if scheduler.queued_multicast() == 0 {
            break;
        }
        now = outcome
            .next_wakeup
            .unwrap_or(now)
            .max(now.saturating_add_micros(10 * MS));
    }
    assert_eq!(sent.len(), 20);
    // None overlaps RX1 (or comes within the guard time), nor each other.
    for (i, tx) in sent.iter().enumerate() {
        assert_separated(tx, &rx1, config.guard_time_us);
        for other in &sent[i + 1..] {
            assert_separated(tx, other, config.guard_time_us);
        }
    }
    // Some went out before RX1 and some after: they filled the gap.
    assert!(sent.iter().any(|tx| tx.start < rx1.start));
    assert!(sent.iter().any(|tx| tx.start > rx1.start));
}

#[test]
fn multicast_waits_for_the_duty_cycle_while_class_a_keeps_its_reserve() {
    let mut scheduler = new_scheduler();
    scheduler.sync_concentrator_clock(Tmst(0), T0);
    // 868.1 MHz (1 % band: 36 s/h, 28.8 s/h for multicast), SF12, 51 bytes: 2.302 s each.
    let frame = radio(868_100_000, 12, 51);
    assert_eq!(frame.time_on_air_us, 2_301_952);
    for id in 0..14 {
        scheduler
            .enqueue_multicast(multicast(id, frame, T0))
            .expect("new id");
    }
    let mut sent: Vec<ScheduledTx> = Vec::new();
    let mut now = T0;
    while sent.len() < 12 {
        let outcome = scheduler.poll(now);
        for tx in &outcome.transmit {
            scheduler.on_tx_ack(tx.id, TxAckOutcome::Accepted, now);
        }
        sent.extend(outcome.transmit);
        now = outcome.next_wakeup.expect("more to send");
    }
    // 12 × 2.302 s = 27.6 s; a 13th would exceed 28.8 s: the next wake-up is about an
    // hour after the first frame.
    let outcome = scheduler.poll(now);
    assert!(outcome.transmit.is_empty());
    let wakeup = outcome.next_wakeup.expect("the 13th frame waits");
    assert!(wakeup > sent[0].start.saturating_add_micros(3_500 * SECOND));

    // A Class A answer on the same band still goes out: it may use the reserve.
    let last_end = end_of(sent.last().expect("sent"));
    let uplink_time = MonotonicTime::from_micros(last_end + SECOND);
    scheduler.sync_concentrator_clock(Tmst(5_000_000), uplink_time);
    let mut answer = class_a(100, Tmst(5_000_000), data());
    answer.rx1 = Some(frame);
    let tx = scheduler
        .schedule_class_a(answer, uplink_time.saturating_add_micros(20 * MS))
        .expect("Class A may use the reserved share");
    assert_eq!(tx.slot, TxSlot::Rx1);

    // Run an hour and a half: the rest goes out, and no hour holds more than 28.8 s of
    // multicast on the band.
    let mut now = wakeup;
    while sent.len() < 14 {
        let outcome = scheduler.poll(now);
        for tx in &outcome.transmit {
            scheduler.on_tx_ack(tx.id, TxAckOutcome::Accepted, now);
        }
        sent.extend(outcome.transmit);
        now = outcome
            .next_wakeup
            .expect("more to send")
            .max(now.saturating_add_micros(MS));
    }
    // Every window starting at a frame's start or ending at a frame's end (where the
    // sliding sum peaks); airtime straddling an edge counts for the part inside.
    let hour = 3_600 * SECOND;
    let on_air = |tx: &ScheduledTx| {
        (
            tx.start.as_micros(),
            tx.start.as_micros() + tx.radio.time_on_air_us,
        )
    };
    for tx in &sent {
        let (start, end) = on_air(tx);
        for window_start in [start, end.saturating_sub(hour)] {
            let window_end = window_start + hour;
            let in_window: u64 = sent
                .iter()
                .map(|other| {
                    let (a, b) = on_air(other);
                    b.min(window_end).saturating_sub(a.max(window_start))
                })
                .sum();
            assert!(in_window <= 28_800_000, "{in_window} µs in an hour");
        }
    }
}

#[test]
fn multicast_tx_ack_errors() {
    let config = SchedulerConfig {
        max_multicast_attempts: 3,
        ..SchedulerConfig::default()
    };
    let mut scheduler = scheduler_with(config);
    scheduler.sync_concentrator_clock(Tmst(0), T0);
    let frame = radio(869_525_000, 9, 30);
    scheduler
        .enqueue_multicast(multicast(1, frame, T0))
        .expect("new id");
    let first = scheduler.poll(T0).transmit;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);

    // COLLISION_PACKET (also a full JIT queue): try again after the retry delay.
    let now = at(10 * MS);
    assert_eq!(
        scheduler.on_tx_ack(
            DownlinkId(1),
            TxAckOutcome::Rejected(TxAckError::CollisionPacket),
            now
        ),
        TxAckDecision::Rescheduled {
            id: DownlinkId(1),
            not_before: now.saturating_add_micros(config.multicast_retry_delay_us),
            error: TxAckError::CollisionPacket
        }
    );
    assert!(scheduler
        .accountant()
        .usage(at(10 * SECOND))
        .iter()
        .all(|band| band.used_us == 0));
    let outcome = scheduler.poll(at(400 * MS));
    assert!(outcome.transmit.is_empty());
    let second = scheduler.poll(outcome.next_wakeup.expect("waits")).transmit;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    assert!(second[0].start >= at(1_010 * MS));

    // TOO_EARLY: retry from now on.
    let now = second[0].start.saturating_sub_micros(300 * MS);
    assert_eq!(
        scheduler.on_tx_ack(
            DownlinkId(1),
            TxAckOutcome::Rejected(TxAckError::TooEarly),
            now
        ),
        TxAckDecision::Rescheduled {
            id: DownlinkId(1),
            not_before: now,
            error: TxAckError::TooEarly
        }
    );
    let third = scheduler.poll(now).transmit;
    assert_eq!(third[0].attempt, 3);
    // Third transient rejection: attempts exhausted.
    assert_eq!(
        scheduler.on_tx_ack(
            DownlinkId(1),
            TxAckOutcome::Rejected(TxAckError::TooLate),
            now
        ),
        TxAckDecision::GaveUp {
            id: DownlinkId(1),
            slot: TxSlot::Multicast,
            reason: GiveUpReason::AttemptsExhausted {
                last_error: TxAckError::TooLate,
                attempts: 3
            }
        }
    );

    // Permanent errors are given up at once.
    for (id, error) in [
        (2, TxAckError::TxFrequency),
        (3, TxAckError::TxPower),
        (4, TxAckError::GpsUnlocked),
        (5, TxAckError::Unknown("WHATEVER".into())),
    ] {
        scheduler
            .enqueue_multicast(multicast(id, frame, at(100 * SECOND)))
            .expect("new id");
        let sent = scheduler.poll(at(99_600 * MS)).transmit;
        assert_eq!(sent.len(), 1, "{error:?}");
        assert_eq!(
            scheduler.on_tx_ack(
                DownlinkId(id),
                TxAckOutcome::Rejected(error.clone()),
                at(99_610 * MS)
            ),
            TxAckDecision::GaveUp {
                id: DownlinkId(id),
                slot: TxSlot::Multicast,
                reason: GiveUpReason::Rejected(error)
            }
        );
    }

    // A lowered power is a success.
    scheduler
        .enqueue_multicast(multicast(6, frame, at(200 * SECOND)))
        .expect("new id");
    assert_eq!(scheduler.poll(at(199_600 * MS)).transmit.len(), 1);
    assert_eq!(
        scheduler.on_tx_ack(
            DownlinkId(6),
            TxAckOutcome::AcceptedWithAdjustedPower {
                power_dbm: Some(14)
            },
            at(199_610 * MS)
        ),
        TxAckDecision::Sent {
            id: DownlinkId(6),
            slot: TxSlot::Multicast
        }
    );
    assert_eq!(
        scheduler.on_tx_ack(DownlinkId(6), TxAckOutcome::Accepted, at(199_620 * MS)),
        TxAckDecision::UnknownDownlink(DownlinkId(6))
    );
}

#[test]
fn missing_tx_acks_count_as_sent() {
    let config = SchedulerConfig::default();
    let mut scheduler = scheduler_with(config);
    scheduler.sync_concentrator_clock(Tmst(0), T0);
    scheduler
        .enqueue_multicast(multicast(1, radio(869_525_000, 9, 30), T0))
        .expect("new id");
    let outcome = scheduler.poll(T0);
    assert_eq!(outcome.transmit.len(), 1);
    assert_eq!(
        outcome.next_wakeup,
        Some(T0.saturating_add_micros(config.tx_ack_timeout_us))
    );
    let outcome = scheduler.poll(T0.saturating_add_micros(config.tx_ack_timeout_us));
    assert_eq!(outcome.assumed_sent, vec![DownlinkId(1)]);
    assert_eq!(scheduler.awaiting_tx_ack(), 0);
    // Its airtime stays counted.
    assert!(scheduler
        .accountant()
        .usage(at(10 * SECOND))
        .iter()
        .any(|band| band.used_us > 0));
}

#[test]
fn pass_through_downlinks_share_the_concentrator_and_the_budget() {
    let mut scheduler = new_scheduler();
    let external = |id, timing| ExternalRequest {
        id: DownlinkId(id),
        radio: radio(868_900_000, 12, 30), // 0.1 % band: 3.6 s/h, 2.88 s for "other"
        timing,
        class: TrafficClass::Other,
    };
    assert_eq!(
        scheduler.admit_external(external(1, ExternalTiming::AtTmst(Tmst(5))), T0),
        Err(ScheduleError::NoClockReference)
    );
    scheduler.sync_concentrator_clock(Tmst(10_000_000), T0);
    let tx = scheduler
        .admit_external(external(1, ExternalTiming::AtTmst(Tmst(11_000_000))), T0)
        .expect("free");
    assert_eq!(tx.slot, TxSlot::External);
    assert_eq!(tx.start, at(SECOND));
    assert!(!tx.immediately);
    // Overlapping the first: the concentrator is busy.
    assert!(matches!(
        scheduler.admit_external(external(2, ExternalTiming::AtTmst(Tmst(11_500_000))), T0),
        Err(ScheduleError::ConcentratorBusy { .. })
    ));
    // Later, but the band's multicast share is spent (1.6 s + 1.6 s > 2.88 s).
    assert!(matches!(
        scheduler.admit_external(external(3, ExternalTiming::AtTmst(Tmst(20_000_000))), T0),
        Err(ScheduleError::DutyCycle(_))
    ));
    // As a Class A answer it may use the reserve.
    let mut answer = external(4, ExternalTiming::AtTmst(Tmst(20_000_000)));
    answer.class = TrafficClass::ClassA;
    assert!(scheduler.admit_external(answer, T0).is_ok());
    // Immediately: sent with imme, placed at the minimum lead.
    let mut immediate = external(5, ExternalTiming::Immediately);
    immediate.radio = radio(869_525_000, 7, 20);
    let tx = scheduler
        .admit_external(immediate, at(30 * SECOND))
        .expect("free");
    assert!(tx.immediately);
    assert_eq!(tx.start, at(30 * SECOND + 100 * MS));
    // A rejected pass-through downlink is released; the upstream server decides.
    assert_eq!(
        scheduler.on_tx_ack(
            DownlinkId(5),
            TxAckOutcome::Rejected(TxAckError::TooLate),
            at(30 * SECOND)
        ),
        TxAckDecision::GaveUp {
            id: DownlinkId(5),
            slot: TxSlot::External,
            reason: GiveUpReason::Rejected(TxAckError::TooLate)
        }
    );
}

#[test]
fn multicast_without_clock_deadline_or_band() {
    let mut scheduler = new_scheduler();
    let frame = radio(869_525_000, 9, 30);
    scheduler
        .enqueue_multicast(multicast(1, frame, T0))
        .expect("new id");
    assert_eq!(
        scheduler.enqueue_multicast(multicast(1, frame, T0)),
        Err(ScheduleError::DuplicateId(DownlinkId(1)))
    );
    // No uplink has anchored the counter: nothing can be timed yet.
    let outcome = scheduler.poll(T0);
    assert!(outcome.transmit.is_empty());
    assert_eq!(scheduler.queued_multicast(), 1);
    scheduler.sync_concentrator_clock(Tmst(0), T0);
    assert_eq!(scheduler.poll(T0).transmit.len(), 1);

    // A deadline that cannot be met.
    scheduler
        .enqueue_multicast(MulticastRequest {
            deadline: Some(at(SECOND)),
            ..multicast(2, frame, at(990 * MS))
        })
        .expect("new id");
    let outcome = scheduler.poll(at(900 * MS));
    assert_eq!(
        outcome.gave_up,
        vec![(
            DownlinkId(2),
            GiveUpReason::DeadlineMissed {
                deadline: at(SECOND)
            }
        )]
    );

    // A frequency in no band.
    scheduler
        .enqueue_multicast(multicast(3, radio(868_650_000, 9, 30), at(5 * SECOND)))
        .expect("new id");
    let outcome = scheduler.poll(at(5 * SECOND));
    assert!(matches!(
        outcome.gave_up.as_slice(),
        [(
            DownlinkId(3),
            GiveUpReason::DutyCycle(Refusal::OutsideBands { .. })
        )]
    ));

    // Cancelling a queued frame.
    scheduler
        .enqueue_multicast(multicast(4, frame, at(100 * SECOND)))
        .expect("new id");
    assert!(scheduler.cancel_multicast(DownlinkId(4)));
    assert!(!scheduler.cancel_multicast(DownlinkId(4)));
}

#[test]
fn tx_ack_wire_names() {
    assert_eq!(
        TxAckOutcome::from_wire(None, None, None),
        TxAckOutcome::Accepted
    );
    assert_eq!(
        TxAckOutcome::from_wire(Some("NONE"), None, None),
        TxAckOutcome::Accepted
    );
    assert_eq!(
        TxAckOutcome::from_wire(None, Some("TX_POWER"), Some(27)),
        TxAckOutcome::AcceptedWithAdjustedPower {
            power_dbm: Some(27)
        }
    );
    let table = [
        ("TOO_LATE", TxAckError::TooLate, TxAckErrorKind::Transient),
        ("TOO_EARLY", TxAckError::TooEarly, TxAckErrorKind::Transient),
        (
            "COLLISION_PACKET",
            TxAckError::CollisionPacket,
            TxAckErrorKind::Transient,
        ),
        (
            "COLLISION_BEACON",
            TxAckError::CollisionBeacon,
            TxAckErrorKind::Transient,
        ),
        ("FULL", TxAckError::Full, TxAckErrorKind::Transient),
        ("EMPTY", TxAckError::Empty, TxAckErrorKind::Transient),
        (
            "DUTY_CYCLE",
            TxAckError::DutyCycle,
            TxAckErrorKind::Transient,
        ),
        (
            "SEND_LBT",
            TxAckError::ListenBeforeTalk,
            TxAckErrorKind::Transient,
        ),
        (
            "TX_FREQ",
            TxAckError::TxFrequency,
            TxAckErrorKind::Permanent,
        ),
        ("TX_POWER", TxAckError::TxPower, TxAckErrorKind::Permanent),
        (
            "GPS_UNLOCKED",
            TxAckError::GpsUnlocked,
            TxAckErrorKind::Permanent,
        ),
        ("SEND_FAIL", TxAckError::SendFail, TxAckErrorKind::Permanent),
    ];
    for (name, error, kind) in table {
        assert_eq!(TxAckError::from_wire(name), error);
        assert_eq!(error.as_wire(), name);
        assert_eq!(error.kind(), kind, "{name}");
        assert_eq!(
            TxAckOutcome::from_wire(Some(name), None, None),
            TxAckOutcome::Rejected(error)
        );
    }
    assert_eq!(
        TxAckError::from_wire("SOMETHING_NEW"),
        TxAckError::Unknown("SOMETHING_NEW".into())
    );
    assert_eq!(
        TxAckError::from_wire("SOMETHING_NEW").kind(),
        TxAckErrorKind::Permanent
    );
}
