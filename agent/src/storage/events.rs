//! The event log: one row per thing that happened (a device added, a session created,
//! an uplink, a clock step...), written in the same transaction as the state change it
//! reports. Ids only grow, so readers (the upstream sync, `fuotactl events`) page with
//! "after id N".

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, Row};
use serde::Serialize;

use super::devices::read_parsed;
use super::{Storage, StorageError, WriteTx};
use crate::clock::WallTime;
use crate::identifiers::{DevEui, GatewayEui};

macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What an event reports. Stored as its snake_case name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// Every kind.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The stored name (`"device_added"`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }
        }

        impl FromStr for EventKind {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($name => Ok(EventKind::$variant),)*
                    other => Err(format!("unknown event kind {other:?}")),
                }
            }
        }
    };
}

event_kinds! {
    /// The agent started (payload: version).
    AgentStarted => "agent_started",
    /// The agent stopped cleanly.
    AgentStopped => "agent_stopped",
    /// The system wall clock stepped (payload: before, after, delta).
    ClockStep => "clock_step",
    /// A gateway connected or changed address (payload: address).
    GatewayConnected => "gateway_connected",
    /// An uplink was received (payload: radio metadata and PHYPayload).
    Uplink => "uplink",
    /// A downlink was sent (payload: radio parameters, FCnt).
    Downlink => "downlink",
    /// A gateway refused a downlink (payload: the TX_ACK error).
    TxAckError => "tx_ack_error",
    /// A device was registered.
    DeviceAdded => "device_added",
    /// A device was removed.
    DeviceRemoved => "device_removed",
    /// A device reported a new firmware version.
    DeviceFirmwareVersion => "device_firmware_version",
    /// A session was created (OTAA join or ABP activation).
    SessionCreated => "session_created",
    /// A frame of one of our devices was refused (payload: reason; bad MIC, replayed
    /// FCnt or DevNonce...).
    UplinkRejected => "uplink_rejected",
    /// A firmware image entered the cache (payload: SHA-256, kind, version, size).
    ImageImported => "image_imported",
    /// A firmware image left the cache (payload: SHA-256).
    ImageRemoved => "image_removed",
    /// A FUOTA campaign was created (payload: id, image, targets, parameters).
    CampaignCreated => "campaign_created",
    /// A campaign changed state: started, paused, resumed, cancelled, finished
    /// (payload: id, from, to).
    CampaignState => "campaign_state",
    /// A campaign moved to another step (payload: id, step).
    CampaignStep => "campaign_step",
    /// A campaign sized a repair round (payload: id, `repair_round` with the counts and
    /// losses it was sized from).
    CampaignRedundancy => "campaign_redundancy",
    /// A device of a campaign moved to another step (payload: id, from, to, detail).
    CampaignDeviceStep => "campaign_device_step",
    /// A device of a campaign got its result (payload: id, status, error).
    CampaignDeviceResult => "campaign_device_result",
    /// A device of a campaign sent something wrong, or an answer it did not expect
    /// (payload: id, fport, error).
    CampaignDeviceError => "campaign_device_error",
    /// Undelivered events were dropped because the upstream outbox reached its disk
    /// quota (payload: how many of each kind, their id and time range). Written in place
    /// of the first event dropped, so it keeps that position in the sequence.
    OutboxGap => "outbox_gap",
    /// The answer to a command from the fleet backend (payload: command id, command,
    /// ok, result or error, duplicate). Published on `<prefix>/response`.
    CommandResponse => "command_response",
    /// A firmware download the fleet backend announced began (payload: download id,
    /// URL without query or credentials, SHA-256, size, version).
    ImageDownloadStarted => "image_download_started",
    /// A firmware download was given up (payload: download id, SHA-256, URL, reason);
    /// nothing of it entered the cache.
    ImageDownloadFailed => "image_download_failed",
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// When it happened (the agent's anchored wall time).
    pub time: WallTime,
    /// What happened.
    pub kind: EventKind,
    /// The device concerned, if any.
    pub dev_eui: Option<DevEui>,
    /// The gateway concerned, if any.
    pub gateway_eui: Option<GatewayEui>,
    /// Details, a JSON object (never keys).
    pub payload: serde_json::Value,
}

impl NewEvent {
    /// An event with no device, gateway or details.
    pub fn new(time: WallTime, kind: EventKind) -> Self {
        NewEvent {
            time,
            kind,
            dev_eui: None,
            gateway_eui: None,
            payload: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// This event, about `dev_eui`.
    pub fn device(mut self, dev_eui: DevEui) -> Self {
        self.dev_eui = Some(dev_eui);
        self
    }

    /// This event, about `gateway_eui`.
    pub fn gateway(mut self, gateway_eui: GatewayEui) -> Self {
        self.gateway_eui = Some(gateway_eui);
        self
    }

    /// This event, with details.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Row id; grows with every event.
    pub id: i64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// The device concerned, if any.
    pub dev_eui: Option<DevEui>,
    /// The gateway concerned, if any.
    pub gateway_eui: Option<GatewayEui>,
    /// Details.
    pub payload: serde_json::Value,
}

fn optional_parsed<T: FromStr>(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> Result<Option<T>, StorageError>
where
    T::Err: fmt::Display,
{
    let text: Option<String> = row.get(index).map_err(StorageError::sql(column))?;
    text.map(|text| {
        text.parse()
            .map_err(|error: T::Err| StorageError::InvalidStoredValue {
                column,
                reason: format!("{text:?}: {error}"),
            })
    })
    .transpose()
}

pub(crate) fn event_from_row(row: &Row<'_>) -> Result<Event, StorageError> {
    let payload: String = row.get(5).map_err(StorageError::sql("events.payload"))?;
    Ok(Event {
        id: row.get(0).map_err(StorageError::sql("events.id"))?,
        time_ms: row.get(1).map_err(StorageError::sql("events.time_ms"))?,
        kind: read_parsed(row, 2, "events.kind")?,
        dev_eui: optional_parsed(row, 3, "events.dev_eui")?,
        gateway_eui: optional_parsed(row, 4, "events.gateway_eui")?,
        payload: serde_json::from_str(&payload).map_err(|error| {
            StorageError::InvalidStoredValue {
                column: "events.payload",
                reason: error.to_string(),
            }
        })?,
    })
}

impl WriteTx<'_> {
    /// Appends an event in this transaction; returns its id.
    pub fn append_event(&mut self, event: &NewEvent) -> Result<i64, StorageError> {
        insert_event(self.connection(), event)
    }
}

/// Inserts `event` on `connection` (inside the caller's transaction); returns its id.
pub(crate) fn insert_event(
    connection: &rusqlite::Connection,
    event: &NewEvent,
) -> Result<i64, StorageError> {
    let payload = serde_json::to_string(&event.payload)?;
    connection
        .execute(
            "INSERT INTO events (time_ms, kind, dev_eui, gateway_eui, payload) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                event.time.unix_millis(),
                event.kind.as_str(),
                event.dev_eui.map(|eui| eui.to_string()),
                event.gateway_eui.map(|eui| eui.to_string()),
                payload,
            ],
        )
        .map_err(StorageError::sql("appending an event"))?;
    Ok(connection.last_insert_rowid())
}

impl Storage {
    /// Every event of `kind` at or after `since`, oldest first.
    pub fn events_of_kind_since(
        &self,
        kind: EventKind,
        since: WallTime,
    ) -> Result<Vec<Event>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(
                "SELECT id, time_ms, kind, dev_eui, gateway_eui, payload FROM events \
                 WHERE kind = ?1 AND time_ms >= ?2 ORDER BY id",
            )
            .map_err(StorageError::sql("preparing an event query"))?;
        let mut rows = statement
            .query(params![kind.as_str(), since.unix_millis()])
            .map_err(StorageError::sql("querying events by kind"))?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().map_err(StorageError::sql("reading an event"))? {
            events.push(event_from_row(row)?);
        }
        Ok(events)
    }

    /// Up to `limit` events with an id greater than `after_id`, oldest first.
    pub fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(
                "SELECT id, time_ms, kind, dev_eui, gateway_eui, payload FROM events \
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(StorageError::sql("preparing the event query"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = statement
            .query(params![after_id, limit])
            .map_err(StorageError::sql("querying events"))?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().map_err(StorageError::sql("reading an event"))? {
            events.push(event_from_row(row)?);
        }
        Ok(events)
    }

    /// Up to `limit` most recent events of one device, newest first.
    pub fn device_events(&self, dev_eui: DevEui, limit: usize) -> Result<Vec<Event>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(
                "SELECT id, time_ms, kind, dev_eui, gateway_eui, payload FROM events \
                 WHERE dev_eui = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(StorageError::sql("preparing the device event query"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = statement
            .query(params![dev_eui.to_string(), limit])
            .map_err(StorageError::sql("querying device events"))?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().map_err(StorageError::sql("reading an event"))? {
            events.push(event_from_row(row)?);
        }
        Ok(events)
    }
}
