//! The commands the fleet backend sent over MQTT, by their id: what makes them
//! idempotent. A command is recorded as `applying` when it arrives and as `answered`
//! with its response, in the same transaction as the `command_response` event that
//! publishes the answer. A command delivered again (MQTT QoS 1 after a lost PUBACK, or
//! a restart before the broker got our acknowledgement) finds its record and is
//! answered again with the recorded response, marked as a duplicate; one found in
//! `applying` was interrupted by a crash and is applied again (each command is written
//! so that applying it twice does no more than once).

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::events::insert_event;
use super::outbox::Outbox;
use super::{EventKind, NewEvent, StorageError};
use crate::clock::WallTime;

/// What is known of a command id.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandRecord {
    /// Received, not answered: the agent stopped while applying it.
    Applying {
        /// When it first arrived.
        received_at_ms: i64,
    },
    /// Answered with this response.
    Answered {
        /// The response published.
        response: serde_json::Value,
    },
}

impl Outbox {
    /// The record of `command_id`, if it was seen.
    pub fn command_record(&self, command_id: &str) -> Result<Option<CommandRecord>, StorageError> {
        let row: Option<(String, Option<String>, i64)> = self
            .connection
            .query_row(
                "SELECT state, response, received_at_ms FROM upstream_commands WHERE command_id = ?1",
                params![command_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(StorageError::sql("reading an upstream command"))?;
        let Some((state, response, received_at_ms)) = row else {
            return Ok(None);
        };
        match (state.as_str(), response) {
            ("answered", Some(response)) => Ok(Some(CommandRecord::Answered {
                response: serde_json::from_str(&response).map_err(|error| {
                    StorageError::InvalidStoredValue {
                        column: "upstream_commands.response",
                        reason: error.to_string(),
                    }
                })?,
            })),
            _ => Ok(Some(CommandRecord::Applying { received_at_ms })),
        }
    }

    /// Records that `command_id` arrived and is being applied (kept as it is if it was
    /// already recorded).
    pub fn begin_command(
        &mut self,
        command_id: &str,
        command: &str,
        now: WallTime,
    ) -> Result<(), StorageError> {
        self.connection
            .execute(
                "INSERT OR IGNORE INTO upstream_commands (command_id, command, state, received_at_ms) \
                 VALUES (?1, ?2, 'applying', ?3)",
                params![command_id, command, now.unix_millis()],
            )
            .map_err(StorageError::sql("recording an upstream command"))?;
        Ok(())
    }

    /// Appends the `command_response` event that publishes `response` and, when the
    /// command had an id (and is not a duplicate), records the response under it, in
    /// one transaction. Returns the event's id.
    pub fn answer_command(
        &mut self,
        command_id: Option<&str>,
        response: &serde_json::Value,
        duplicate: bool,
        now: WallTime,
    ) -> Result<i64, StorageError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning a command answer"))?;
        if let (Some(command_id), false) = (command_id, duplicate) {
            transaction
                .execute(
                    "UPDATE upstream_commands SET state = 'answered', response = ?2, answered_at_ms = ?3 \
                     WHERE command_id = ?1",
                    params![command_id, serde_json::to_string(response)?, now.unix_millis()],
                )
                .map_err(StorageError::sql("recording a command response"))?;
        }
        let mut payload = response.clone();
        if let Some(object) = payload.as_object_mut() {
            object.insert("duplicate".into(), duplicate.into());
        }
        let id = insert_event(
            &transaction,
            &NewEvent::new(now, EventKind::CommandResponse).payload(payload),
        )?;
        transaction
            .commit()
            .map_err(StorageError::sql("committing a command answer"))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[test]
    fn a_command_is_applying_until_answered_and_its_response_is_kept() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("agent.db");
        let _storage = Storage::open(&path).expect("storage");
        let mut outbox = Outbox::open(&path).expect("outbox");
        let now = WallTime::from_unix_seconds(1_790_000_000);
        assert_eq!(outbox.command_record("c-1").expect("record"), None);
        outbox
            .begin_command("c-1", "remove_device", now)
            .expect("begin");
        assert_eq!(
            outbox.command_record("c-1").expect("record"),
            Some(CommandRecord::Applying {
                received_at_ms: now.unix_millis()
            })
        );
        let response = serde_json::json!({ "command_id": "c-1", "ok": true });
        let first = outbox
            .answer_command(Some("c-1"), &response, false, now)
            .expect("answer");
        assert_eq!(
            outbox.command_record("c-1").expect("record"),
            Some(CommandRecord::Answered {
                response: response.clone()
            })
        );
        // Beginning it again changes nothing; a duplicate answer is an event of its own.
        outbox
            .begin_command("c-1", "remove_device", now)
            .expect("begin again");
        let second = outbox
            .answer_command(Some("c-1"), &response, true, now)
            .expect("answer again");
        assert!(second > first);
        let events = outbox.events_after(0, 10).expect("events");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.kind, EventKind::CommandResponse);
        assert_eq!(events[0].event.payload["duplicate"], false);
        assert_eq!(events[1].event.payload["duplicate"], true);
        assert_eq!(
            outbox.command_record("c-1").expect("record"),
            Some(CommandRecord::Answered { response })
        );
    }
}
