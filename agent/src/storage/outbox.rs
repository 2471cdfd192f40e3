//! The upstream outbox: the events the MQTT broker has not acknowledged yet, and the
//! disk quota that bounds them.
//!
//! The outbox is not a second copy of anything: it is the tail of the `events` table
//! after `upstream_cursor.delivered_event_id`. Events are written in the same
//! transaction as the state change they report (see [`super`]), so an event can never be
//! missing from the outbox; the publisher reads them in id order, and moves the cursor
//! once the broker has acknowledged every event up to it. A crash between the PUBACK
//! and the cursor update publishes those events again, with the same id: delivery is at
//! least once, and duplicates are recognisable by id.
//!
//! Each published event carries an id `"<epoch>-<seq>"`: `seq` is the event's row id,
//! and the epoch is a random tag chosen when the database was created and again each
//! time it is restored from a backup (`event_epochs`), so two gateways that share a
//! history never publish different events under one id.
//!
//! # The quota
//!
//! While the backhaul is down the outbox grows. [`Outbox::enforce_quota`] keeps its
//! estimated size (payload bytes plus [`EVENT_ROW_OVERHEAD`] per row) under the quota
//! with this policy, applied oldest first, until the outbox is back under 90 % of the
//! quota:
//!
//! 1. plain uplinks (`uplink` events) are dropped;
//! 2. then radio telemetry older than the duty-cycle window (`downlink` and
//!    `tx_ack_error` events older than one hour: newer downlinks are what a restarted
//!    agent reads back to know the airtime it already used);
//! 3. nothing else is ever dropped: campaign and device results, registry changes,
//!    sessions, images and the agent's own lifecycle stay, even over the quota (the
//!    publisher then logs and reports that the outbox is over its quota).
//!
//! Each run of dropped events is replaced by one `outbox_gap` event, written in place of
//! the first event dropped (same id, so same position in the sequence), that says how
//! many events of which kinds were dropped, between which ids and times. Events that are
//! being published (ids up to the publisher's mark) and the newest event (whose id
//! SQLite would otherwise reuse) are never dropped.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::events::event_from_row;
use super::{connect_migrated, Event, EventKind, StorageError};
use crate::clock::WallTime;

/// Estimated bytes an event row costs beyond its payload (row id, time, kind, EUIs,
/// and its entries in the two event indexes).
pub const EVENT_ROW_OVERHEAD: u64 = 96;

/// Radio telemetry is only dropped once it is older than this: the agent reads the
/// downlinks of the last hour back at start to count the airtime already used.
pub const TELEMETRY_KEEP_MS: i64 = 3_600_000;

/// At most this many events are dropped into one gap event.
const DROP_BATCH: usize = 20_000;

/// Room kept for the gap event a run of dropped events leaves (its payload is about
/// 250 bytes): a run must free more than this, or dropping it gains nothing.
const GAP_EVENT_BYTES: u64 = 400 + EVENT_ROW_OVERHEAD;

/// An event waiting to be published, with the id it is published under.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The event as stored (its `id` is the sequence number).
    pub event: Event,
    /// The epoch it was written under.
    pub epoch: String,
}

impl OutboxEvent {
    /// The id the event is published under: `"<epoch>-<seq>"`.
    pub fn message_id(&self) -> String {
        format!("{}-{}", self.epoch, self.event.id)
    }
}

/// How much is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxDepth {
    /// Events not yet acknowledged by the broker.
    pub events: u64,
    /// Their estimated size on disk, bytes.
    pub bytes: u64,
    /// The last event acknowledged by the broker (0: none yet).
    pub delivered_event_id: i64,
}

/// What one quota check did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuotaOutcome {
    /// The outbox before, as measured.
    pub before: OutboxDepth,
    /// Events dropped, by kind.
    pub dropped: BTreeMap<&'static str, u64>,
    /// The gap events written (their ids).
    pub gap_event_ids: Vec<i64>,
    /// Estimated bytes freed.
    pub freed_bytes: u64,
    /// Estimated bytes still over the quota once everything droppable was dropped
    /// (0: under the quota).
    pub still_over_bytes: u64,
}

impl QuotaOutcome {
    /// How many events were dropped.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// The publisher's connection to the database: reads the outbox, moves the cursor,
/// enforces the quota. A connection of its own (WAL lets it work beside the core's
/// writer); its writes are short transactions.
#[derive(Debug)]
pub struct Outbox {
    pub(super) connection: Connection,
}

/// One class of droppable events, in the order the policy drops them.
struct DropTier {
    kinds: &'static [EventKind],
    /// Only events at least this old (ms) are dropped.
    min_age_ms: i64,
}

const DROP_TIERS: [DropTier; 2] = [
    DropTier {
        kinds: &[EventKind::Uplink],
        min_age_ms: 0,
    },
    DropTier {
        kinds: &[EventKind::Downlink, EventKind::TxAckError],
        min_age_ms: TELEMETRY_KEEP_MS,
    },
];

/// An event chosen to be dropped.
struct Doomed {
    id: i64,
    time_ms: i64,
    kind: EventKind,
    bytes: u64,
}

impl Outbox {
    /// Opens the outbox of the database at `path`, which the agent's writer has opened
    /// and migrated already.
    pub fn open(path: &Path) -> Result<Outbox, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = connect_migrated(path, flags)?;
        Ok(Outbox { connection })
    }

    /// The last event the broker acknowledged (0: none).
    pub fn delivered_event_id(&self) -> Result<i64, StorageError> {
        self.connection
            .query_row(
                "SELECT delivered_event_id FROM upstream_cursor WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .map_err(StorageError::sql("reading the outbox cursor"))
    }

    /// Up to `limit` events after `after_id`, oldest first, with their epochs.
    pub fn events_after(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StorageError> {
        let epochs = self.epochs()?;
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, time_ms, kind, dev_eui, gateway_eui, payload FROM events \
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(StorageError::sql("preparing the outbox query"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = statement
            .query(params![after_id, limit])
            .map_err(StorageError::sql("reading the outbox"))?;
        let mut events = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading an outbox event"))?
        {
            let event = event_from_row(row)?;
            let epoch = epoch_of(&epochs, event.id);
            events.push(OutboxEvent { event, epoch });
        }
        Ok(events)
    }

    /// Records that the broker acknowledged every event up to `event_id`. The cursor
    /// never moves back.
    pub fn mark_delivered(&mut self, event_id: i64, now: WallTime) -> Result<(), StorageError> {
        self.connection
            .execute(
                "UPDATE upstream_cursor SET delivered_event_id = ?1, delivered_at_ms = ?2 \
                 WHERE id = 1 AND delivered_event_id < ?1",
                params![event_id, now.unix_millis()],
            )
            .map_err(StorageError::sql("moving the outbox cursor"))?;
        Ok(())
    }

    /// How many events are waiting, and their estimated size.
    pub fn depth(&self) -> Result<OutboxDepth, StorageError> {
        let delivered_event_id = self.delivered_event_id()?;
        let (events, bytes): (i64, i64) = self
            .connection
            .query_row(
                "SELECT count(*), coalesce(sum(octet_length(payload)), 0) FROM events WHERE id > ?1",
                params![delivered_event_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(StorageError::sql("measuring the outbox"))?;
        let events = u64::try_from(events).unwrap_or(0);
        let payload_bytes = u64::try_from(bytes).unwrap_or(0);
        Ok(OutboxDepth {
            events,
            bytes: payload_bytes + events * EVENT_ROW_OVERHEAD,
            delivered_event_id,
        })
    }

    /// Applies the quota policy (module docs): if the outbox is over `quota_bytes`,
    /// drops droppable events, oldest first, until it is under 90 % of it. Events up to
    /// `publishing_up_to` (handed to the broker connection already) are kept.
    pub fn enforce_quota(
        &mut self,
        quota_bytes: u64,
        publishing_up_to: i64,
        now: WallTime,
    ) -> Result<QuotaOutcome, StorageError> {
        let before = self.depth()?;
        let mut outcome = QuotaOutcome {
            before,
            ..QuotaOutcome::default()
        };
        if before.bytes <= quota_bytes {
            return Ok(outcome);
        }
        let target = quota_bytes / 10 * 9;
        let mut to_free = before.bytes - target;
        let floor = before.delivered_event_id.max(publishing_up_to);
        for tier in &DROP_TIERS {
            while to_free > 0 {
                let cutoff = now.unix_millis() - tier.min_age_ms;
                // Enough to free `to_free` and pay for the gap event that replaces them.
                let doomed =
                    self.choose_droppable(tier, floor, cutoff, to_free + GAP_EVENT_BYTES)?;
                let run_bytes: u64 = doomed.iter().map(|event| event.bytes).sum();
                if doomed.len() < 2 || run_bytes <= GAP_EVENT_BYTES {
                    // Nothing left in this tier that frees more than its gap event.
                    break;
                }
                let freed = self.drop_run(&doomed, quota_bytes, now, &mut outcome)?;
                if freed == 0 {
                    break;
                }
                to_free = to_free.saturating_sub(freed);
            }
        }
        let after = before.bytes.saturating_sub(outcome.freed_bytes);
        outcome.still_over_bytes = after.saturating_sub(quota_bytes);
        Ok(outcome)
    }

    /// The oldest events of `tier` after `floor` (and before the newest event and
    /// `cutoff_ms`), enough to free `to_free` bytes, at most [`DROP_BATCH`].
    fn choose_droppable(
        &self,
        tier: &DropTier,
        floor: i64,
        cutoff_ms: i64,
        to_free: u64,
    ) -> Result<Vec<Doomed>, StorageError> {
        let kinds: Vec<&str> = tier.kinds.iter().map(|kind| kind.as_str()).collect();
        let kinds_json = serde_json::to_string(&kinds)?;
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, time_ms, kind, octet_length(payload) FROM events \
                 WHERE id > ?1 AND id < (SELECT max(id) FROM events) AND time_ms <= ?2 \
                   AND kind IN (SELECT value FROM json_each(?3)) \
                 ORDER BY id LIMIT ?4",
            )
            .map_err(StorageError::sql("preparing the outbox quota query"))?;
        let mut rows = statement
            .query(params![floor, cutoff_ms, kinds_json, DROP_BATCH as i64])
            .map_err(StorageError::sql("choosing events to drop"))?;
        let mut doomed = Vec::new();
        let mut freed = 0u64;
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading an event to drop"))?
        {
            let kind: String = row.get(2).map_err(StorageError::sql("events.kind"))?;
            let kind =
                kind.parse::<EventKind>()
                    .map_err(|reason| StorageError::InvalidStoredValue {
                        column: "events.kind",
                        reason,
                    })?;
            let payload: i64 = row.get(3).map_err(StorageError::sql("events.payload"))?;
            let bytes = u64::try_from(payload).unwrap_or(0) + EVENT_ROW_OVERHEAD;
            doomed.push(Doomed {
                id: row.get(0).map_err(StorageError::sql("events.id"))?,
                time_ms: row.get(1).map_err(StorageError::sql("events.time_ms"))?,
                kind,
                bytes,
            });
            freed += bytes;
            if freed >= to_free {
                break;
            }
        }
        Ok(doomed)
    }

    /// Drops `doomed` in one transaction, the first row becoming the gap event; returns
    /// the bytes freed.
    fn drop_run(
        &mut self,
        doomed: &[Doomed],
        quota_bytes: u64,
        now: WallTime,
        outcome: &mut QuotaOutcome,
    ) -> Result<u64, StorageError> {
        let (Some(first), Some(last)) = (doomed.first(), doomed.last()) else {
            return Ok(0);
        };
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        for event in doomed {
            *by_kind.entry(event.kind.as_str()).or_default() += 1;
        }
        let payload = serde_json::json!({
            "dropped": doomed.len(),
            "kinds": by_kind,
            "first_id": first.id,
            "last_id": last.id,
            "from_ms": first.time_ms,
            "to_ms": last.time_ms,
            "quota_bytes": quota_bytes,
            "dropped_at_ms": now.unix_millis(),
        });
        let payload = serde_json::to_string(&payload)?;
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning an outbox quota transaction"))?;
        {
            let mut delete = transaction
                .prepare("DELETE FROM events WHERE id = ?1")
                .map_err(StorageError::sql("preparing an event deletion"))?;
            for event in &doomed[1..] {
                delete
                    .execute(params![event.id])
                    .map_err(StorageError::sql("dropping an event"))?;
            }
        }
        transaction
            .execute(
                "UPDATE events SET kind = ?2, dev_eui = NULL, gateway_eui = NULL, payload = ?3 \
                 WHERE id = ?1",
                params![first.id, EventKind::OutboxGap.as_str(), payload],
            )
            .map_err(StorageError::sql("writing the outbox gap event"))?;
        transaction
            .commit()
            .map_err(StorageError::sql("committing an outbox quota transaction"))?;
        let freed: u64 = doomed.iter().map(|event| event.bytes).sum();
        let gap_bytes = payload.len() as u64 + EVENT_ROW_OVERHEAD;
        for (kind, count) in by_kind {
            *outcome.dropped.entry(kind).or_default() += count;
        }
        outcome.gap_event_ids.push(first.id);
        let freed = freed.saturating_sub(gap_bytes);
        outcome.freed_bytes += freed;
        Ok(freed)
    }

    /// Every epoch, by its first event id.
    fn epochs(&self) -> Result<Vec<(i64, String)>, StorageError> {
        let mut statement = self
            .connection
            .prepare("SELECT first_event_id, epoch FROM event_epochs ORDER BY first_event_id")
            .map_err(StorageError::sql("preparing the epoch query"))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(StorageError::sql("reading the event epochs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StorageError::sql("reading an event epoch"))
    }
}

/// The epoch of event `id`: the last one that starts at or before it.
fn epoch_of(epochs: &[(i64, String)], id: i64) -> String {
    epochs
        .iter()
        .rev()
        .find(|(first, _)| *first <= id)
        .map(|(_, epoch)| epoch.clone())
        .unwrap_or_default()
}

/// Starts a new epoch at the next event id (after a restore: the events this database
/// writes from now on must not share ids with those the replaced gateway published).
pub fn start_new_epoch(connection: &Connection, now: WallTime) -> Result<String, StorageError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|error| StorageError::InvalidStoredValue {
        column: "event_epochs.epoch",
        reason: format!("no random source for a new epoch: {error}"),
    })?;
    let epoch: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    connection
        .execute(
            "INSERT INTO event_epochs (first_event_id, epoch, created_at_ms) \
             VALUES ((SELECT coalesce(max(id), 0) + 1 FROM events), ?1, ?2)",
            params![epoch, now.unix_millis()],
        )
        .map_err(StorageError::sql("starting a new event epoch"))?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifiers::DevEui;
    use crate::storage::{NewEvent, Storage};

    const NOW_MS: i64 = 1_790_000_000_000;

    fn at(ms: i64) -> WallTime {
        WallTime::from_unix_micros(ms * 1000)
    }

    fn open() -> (tempfile::TempDir, Storage, Outbox) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("agent.db");
        let storage = Storage::open(&path).expect("open storage");
        let outbox = Outbox::open(&path).expect("open outbox");
        (directory, storage, outbox)
    }

    fn append(storage: &mut Storage, kind: EventKind, time_ms: i64, filler: usize) -> i64 {
        let payload = serde_json::json!({ "filler": "x".repeat(filler) });
        storage
            .append_event(&NewEvent::new(at(time_ms), kind).payload(payload))
            .expect("append")
    }

    fn kinds_after(outbox: &Outbox, after: i64) -> Vec<(i64, EventKind)> {
        outbox
            .events_after(after, 10_000)
            .expect("events")
            .into_iter()
            .map(|event| (event.event.id, event.event.kind))
            .collect()
    }

    #[test]
    fn the_cursor_only_moves_forward_and_depth_counts_what_follows_it() {
        let (_directory, mut storage, mut outbox) = open();
        for _ in 0..5 {
            append(&mut storage, EventKind::Uplink, NOW_MS, 100);
        }
        let depth = outbox.depth().expect("depth");
        assert_eq!(depth.events, 5);
        assert_eq!(depth.delivered_event_id, 0);
        assert!(depth.bytes >= 5 * (100 + EVENT_ROW_OVERHEAD));
        outbox.mark_delivered(3, at(NOW_MS)).expect("mark");
        outbox.mark_delivered(2, at(NOW_MS)).expect("mark back");
        assert_eq!(outbox.delivered_event_id().expect("cursor"), 3);
        assert_eq!(outbox.depth().expect("depth").events, 2);
        let waiting: Vec<i64> = outbox
            .events_after(3, 10)
            .expect("events")
            .iter()
            .map(|event| event.event.id)
            .collect();
        assert_eq!(waiting, vec![4, 5]);
    }

    #[test]
    fn message_ids_carry_the_epoch_and_a_new_epoch_starts_after_the_last_event() {
        let (_directory, mut storage, outbox) = open();
        let first = append(&mut storage, EventKind::AgentStarted, NOW_MS, 0);
        let before = outbox.events_after(0, 10).expect("events");
        let old_epoch = before[0].epoch.clone();
        assert_eq!(old_epoch.len(), 16);
        assert_eq!(before[0].message_id(), format!("{old_epoch}-{first}"));
        let new_epoch = start_new_epoch(&outbox.connection, at(NOW_MS)).expect("epoch");
        assert_ne!(new_epoch, old_epoch);
        let second = append(&mut storage, EventKind::AgentStarted, NOW_MS, 0);
        let after = outbox.events_after(0, 10).expect("events");
        assert_eq!(after[0].epoch, old_epoch, "old events keep their ids");
        assert_eq!(after[1].event.id, second);
        assert_eq!(after[1].message_id(), format!("{new_epoch}-{second}"));
    }

    #[test]
    fn under_the_quota_nothing_is_dropped() {
        let (_directory, mut storage, mut outbox) = open();
        for _ in 0..10 {
            append(&mut storage, EventKind::Uplink, NOW_MS, 200);
        }
        let outcome = outbox
            .enforce_quota(1_000_000, 0, at(NOW_MS))
            .expect("quota");
        assert_eq!(outcome.dropped_total(), 0);
        assert_eq!(outbox.depth().expect("depth").events, 10);
    }

    #[test]
    fn uplinks_go_first_results_never_and_a_gap_event_takes_the_first_place() {
        let (_directory, mut storage, mut outbox) = open();
        let mut results = Vec::new();
        let mut uplinks = Vec::new();
        for index in 0..100 {
            uplinks.push(append(&mut storage, EventKind::Uplink, NOW_MS + index, 400));
            if index % 10 == 0 {
                let id = storage
                    .append_event(
                        &NewEvent::new(at(NOW_MS + index), EventKind::CampaignDeviceResult)
                            .device(DevEui::from(index as u64))
                            .payload(serde_json::json!({ "status": "successful" })),
                    )
                    .expect("result");
                results.push(id);
            }
        }
        let before = outbox.depth().expect("depth");
        let quota = before.bytes / 2;
        let outcome = outbox
            .enforce_quota(quota, 0, at(NOW_MS + 200))
            .expect("quota");
        let after = outbox.depth().expect("depth");
        assert!(after.bytes <= quota, "{} > {quota}", after.bytes);
        assert!(outcome.dropped_total() > 0);
        assert_eq!(
            outcome.dropped.keys().copied().collect::<Vec<_>>(),
            vec!["uplink"]
        );
        let remaining = kinds_after(&outbox, 0);
        for id in &results {
            assert!(
                remaining.contains(&(*id, EventKind::CampaignDeviceResult)),
                "result {id} was dropped"
            );
        }
        // The gap event sits where the first dropped uplink was, and accounts for
        // every uplink that is gone.
        assert_eq!(outcome.gap_event_ids, vec![uplinks[0]]);
        assert_eq!(remaining[0], (uplinks[0], EventKind::OutboxGap));
        let gap = outbox.events_after(0, 1).expect("gap")[0].event.clone();
        let remaining_uplinks = remaining
            .iter()
            .filter(|(_, kind)| *kind == EventKind::Uplink)
            .count() as u64;
        assert_eq!(gap.payload["dropped"], outcome.dropped_total());
        assert_eq!(gap.payload["kinds"]["uplink"], outcome.dropped_total());
        assert_eq!(
            remaining_uplinks + outcome.dropped_total(),
            uplinks.len() as u64
        );
        assert_eq!(gap.payload["first_id"], uplinks[0]);
        assert_eq!(gap.payload["from_ms"], NOW_MS);
        // The oldest uplinks went: every remaining uplink is newer than the dropped ones.
        let last_dropped = gap.payload["last_id"].as_i64().expect("last id");
        assert!(remaining
            .iter()
            .filter(|(_, kind)| *kind == EventKind::Uplink)
            .all(|(id, _)| *id > last_dropped));
    }

    #[test]
    fn just_over_the_quota_a_few_uplinks_go_into_one_gap() {
        let (_directory, mut storage, mut outbox) = open();
        for index in 0..200 {
            append(&mut storage, EventKind::Uplink, NOW_MS + index, 300);
        }
        let before = outbox.depth().expect("depth");
        // Over by one byte: the policy goes down to 90 % of the quota, in one run.
        let quota = before.bytes - 1;
        let outcome = outbox
            .enforce_quota(quota, 0, at(NOW_MS + 300))
            .expect("quota");
        assert_eq!(outcome.gap_event_ids.len(), 1, "{outcome:?}");
        let after = outbox.depth().expect("depth");
        assert!(after.bytes <= quota / 10 * 9 + GAP_EVENT_BYTES, "{after:?}");
        assert!(
            after.bytes >= quota / 10 * 8,
            "dropped far too much: {after:?}"
        );
        // A second check finds nothing to do.
        let again = outbox
            .enforce_quota(quota, 0, at(NOW_MS + 300))
            .expect("quota");
        assert_eq!(again.dropped_total(), 0, "{again:?}");
    }

    #[test]
    fn recent_downlinks_are_kept_old_ones_go_after_the_uplinks() {
        let (_directory, mut storage, mut outbox) = open();
        let old = NOW_MS - 2 * TELEMETRY_KEEP_MS;
        let old_downlinks: Vec<i64> = (0..20)
            .map(|index| append(&mut storage, EventKind::Downlink, old + index, 400))
            .collect();
        let uplinks: Vec<i64> = (0..20)
            .map(|index| append(&mut storage, EventKind::Uplink, NOW_MS + index, 400))
            .collect();
        let recent_downlinks: Vec<i64> = (0..20)
            .map(|index| append(&mut storage, EventKind::Downlink, NOW_MS + 100 + index, 400))
            .collect();
        append(&mut storage, EventKind::AgentStopped, NOW_MS + 200, 0);
        // Room for the recent downlinks and a little more: every uplink and most old
        // downlinks must go.
        let quota = 30 * (400 + 20 + EVENT_ROW_OVERHEAD);
        let outcome = outbox
            .enforce_quota(quota, 0, at(NOW_MS + 300))
            .expect("quota");
        assert_eq!(outcome.dropped.get("uplink"), Some(&20));
        assert!(outcome.dropped.get("downlink").copied().unwrap_or(0) > 0);
        let remaining: Vec<i64> = kinds_after(&outbox, 0).iter().map(|(id, _)| *id).collect();
        for id in &recent_downlinks {
            assert!(remaining.contains(id), "recent downlink {id} was dropped");
        }
        assert!(!uplinks.iter().skip(1).any(|id| remaining.contains(id)));
        assert!(old_downlinks
            .iter()
            .skip(1)
            .any(|id| !remaining.contains(id)));
        assert_eq!(outcome.gap_event_ids.len(), 2, "one gap per kind of run");
    }

    #[test]
    fn over_the_quota_with_only_results_nothing_is_dropped_and_the_excess_is_reported() {
        let (_directory, mut storage, mut outbox) = open();
        for index in 0..50 {
            append(
                &mut storage,
                EventKind::CampaignDeviceResult,
                NOW_MS + index,
                300,
            );
        }
        let outcome = outbox.enforce_quota(1_000, 0, at(NOW_MS)).expect("quota");
        assert_eq!(outcome.dropped_total(), 0);
        assert!(outcome.still_over_bytes > 0);
        assert_eq!(outbox.depth().expect("depth").events, 50);
    }

    #[test]
    fn events_being_published_and_the_newest_event_are_never_dropped() {
        let (_directory, mut storage, mut outbox) = open();
        let ids: Vec<i64> = (0..30)
            .map(|index| append(&mut storage, EventKind::Uplink, NOW_MS + index, 400))
            .collect();
        let publishing_up_to = ids[9];
        let outcome = outbox
            .enforce_quota(1, publishing_up_to, at(NOW_MS + 100))
            .expect("quota");
        let remaining: Vec<i64> = kinds_after(&outbox, 0).iter().map(|(id, _)| *id).collect();
        for id in &ids[..10] {
            assert!(remaining.contains(id), "in-flight event {id} was dropped");
        }
        assert!(remaining.contains(&ids[29]), "the newest event was dropped");
        assert_eq!(outcome.dropped.get("uplink"), Some(&19));
        assert_eq!(remaining.len(), 12);
        // The next event gets a fresh id.
        let next = append(&mut storage, EventKind::Uplink, NOW_MS + 200, 0);
        assert_eq!(next, ids[29] + 1);
    }
}
