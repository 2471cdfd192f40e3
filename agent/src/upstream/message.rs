//! What goes on the wire to the fleet backend: the topics and the JSON of each message
//! (documented for backend authors in `docs/mqtt.md`; a test keeps the two in step).

use serde::{Deserialize, Serialize};

use crate::storage::outbox::OutboxEvent;

/// One event, as published on `<prefix>/event/<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    /// Unique id, `"<epoch>-<seq>"`: the same event published twice (after a lost
    /// PUBACK or a restart) carries the same id; two events never share one.
    pub id: String,
    /// Sequence number: grows with every event of this gateway (the event's row id).
    /// A backend that sorts by it sees the events in the order they happened. Numbers
    /// missing from the sequence are accounted for by an `outbox_gap` event.
    pub seq: i64,
    /// The epoch of the id (changes when the gateway's database is restored from a
    /// backup; `seq` keeps growing).
    pub epoch: String,
    /// The gateway id of the configuration (`[mqtt] gateway_id`).
    pub gateway_id: String,
    /// When it happened, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// When it happened, Unix milliseconds.
    pub time_ms: i64,
    /// What happened: the event kind (`uplink`, `campaign_device_result`...).
    pub kind: String,
    /// The device concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_eui: Option<String>,
    /// The gateway (radio) concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_eui: Option<String>,
    /// The details, as `fuotactl events --json` shows them (never keys).
    pub payload: serde_json::Value,
}

impl EventMessage {
    /// The message for an outbox event of gateway `gateway_id`.
    pub fn from_outbox(event: &OutboxEvent, gateway_id: &str) -> EventMessage {
        let stored = &event.event;
        let time = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(stored.time_ms).unwrap_or(0));
        EventMessage {
            id: event.message_id(),
            seq: stored.id,
            epoch: event.epoch.clone(),
            gateway_id: gateway_id.to_string(),
            time: humantime::format_rfc3339_millis(time).to_string(),
            time_ms: stored.time_ms,
            kind: stored.kind.as_str().to_string(),
            dev_eui: stored.dev_eui.map(|eui| eui.to_string()),
            gateway_eui: stored.gateway_eui.map(|eui| eui.to_string()),
            payload: stored.payload.clone(),
        }
    }
}

/// The topic of events of `kind` under `prefix`: `<prefix>/event/<kind>`, except the
/// answers to commands, on `<prefix>/response`.
pub fn event_topic(prefix: &str, kind: &str) -> String {
    if kind == crate::storage::EventKind::CommandResponse.as_str() {
        format!("{prefix}/response")
    } else {
        format!("{prefix}/event/{kind}")
    }
}

/// The topic filter of the commands under `prefix`: `<prefix>/command/+`.
pub fn command_filter(prefix: &str) -> String {
    format!("{prefix}/command/+")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA_DOC: &str = include_str!("../../../docs/mqtt.md");

    #[test]
    fn the_schema_document_names_every_field_and_every_event_kind() {
        let example = EventMessage {
            id: String::new(),
            seq: 0,
            epoch: String::new(),
            gateway_id: String::new(),
            time: String::new(),
            time_ms: 0,
            kind: String::new(),
            dev_eui: Some(String::new()),
            gateway_eui: Some(String::new()),
            payload: serde_json::Value::Null,
        };
        let fields = serde_json::to_value(&example).expect("json");
        for field in fields.as_object().expect("object").keys() {
            assert!(
                SCHEMA_DOC.contains(&format!("| `{field}` |")),
                "docs/mqtt.md does not describe the field {field:?}"
            );
        }
        for kind in EventKind::ALL {
            assert!(
                SCHEMA_DOC.contains(&format!("| `{}` |", kind.as_str())),
                "docs/mqtt.md does not describe the event kind {:?}",
                kind.as_str()
            );
        }
    }
    use crate::identifiers::DevEui;
    use crate::storage::{Event, EventKind};

    #[test]
    fn an_event_becomes_a_message_with_its_id_sequence_and_time() {
        let event = OutboxEvent {
            event: Event {
                id: 42,
                time_ms: 1_790_000_000_123,
                kind: EventKind::CampaignDeviceResult,
                dev_eui: Some(DevEui::from(0x0016_c001_ff10_a235)),
                gateway_eui: None,
                payload: serde_json::json!({ "campaign_id": 3, "status": "successful" }),
            },
            epoch: "0123456789abcdef".into(),
        };
        let message = EventMessage::from_outbox(&event, "gw-17");
        let json = serde_json::to_value(&message).expect("json");
        assert_eq!(json["id"], "0123456789abcdef-42");
        assert_eq!(json["seq"], 42);
        assert_eq!(json["time"], "2026-09-21T14:13:20.123Z");
        assert_eq!(json["kind"], "campaign_device_result");
        assert_eq!(json["dev_eui"], "0016c001ff10a235");
        assert!(json.get("gateway_eui").is_none());
        assert_eq!(json["payload"]["status"], "successful");
        assert_eq!(
            event_topic("fuota/gw-17", &message.kind),
            "fuota/gw-17/event/campaign_device_result"
        );
    }
}
