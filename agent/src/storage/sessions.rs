//! Device sessions (DevAddr, session keys, frame counters) and the DevNonces each device
//! has used to join.
//!
//! A session's FCntDown is not written here frame by frame: [`super::frame_counters`]
//! hands counters out of a durably reserved window. Replacing a session (a new join)
//! resets both counters to zero in the same transaction that stores the new keys.

use rusqlite::{params, OptionalExtension, Row};

use super::devices::{read_key, read_parsed};
use super::events::{EventKind, NewEvent};
use super::{Storage, StorageError, WriteTx};
use crate::clock::WallTime;
use crate::identifiers::{AesKey, DevAddr, DevEui, JoinEui};

/// A device's current session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    /// The device.
    pub dev_eui: DevEui,
    /// Its address in this session.
    pub dev_addr: DevAddr,
    /// NwkSKey (1.0.x); FNwkSIntKey in 1.1.
    pub nwk_s_key: AesKey,
    /// SNwkSIntKey (1.1 only).
    pub s_nwk_s_int_key: Option<AesKey>,
    /// NwkSEncKey (1.1 only).
    pub nwk_s_enc_key: Option<AesKey>,
    /// AppSKey.
    pub app_s_key: AesKey,
    /// Last uplink FCnt accepted; `None` before the first uplink.
    pub last_f_cnt_up: Option<u32>,
}

/// A session's downlink counter bookkeeping, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCounters {
    /// Next FCntDown known unused as of the last write (informational).
    pub n_f_cnt_down: u64,
    /// Every FCntDown handed out is below this mark.
    pub f_cnt_down_reserved: u64,
}

/// Whether a DevNonce was new for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevNonceUse {
    /// First use: recorded.
    New,
    /// Seen before: a replayed JoinRequest (or a device that reset its nonce counter).
    Replayed,
}

const SESSION_COLUMNS: &str =
    "dev_eui, dev_addr, nwk_s_key, s_nwk_s_int_key, nwk_s_enc_key, app_s_key, last_f_cnt_up";

fn required_key(row: &Row<'_>, index: usize, column: &'static str) -> Result<AesKey, StorageError> {
    read_key(row, index, column)?.ok_or(StorageError::InvalidStoredValue {
        column,
        reason: "missing key".into(),
    })
}

fn session_from_row(row: &Row<'_>) -> Result<DeviceSession, StorageError> {
    let last_f_cnt_up: Option<i64> = row
        .get(6)
        .map_err(StorageError::sql("device_sessions.last_f_cnt_up"))?;
    let last_f_cnt_up = last_f_cnt_up
        .map(|value| {
            u32::try_from(value).map_err(|_| StorageError::InvalidStoredValue {
                column: "device_sessions.last_f_cnt_up",
                reason: format!("{value} is not a 32-bit counter"),
            })
        })
        .transpose()?;
    Ok(DeviceSession {
        dev_eui: read_parsed(row, 0, "device_sessions.dev_eui")?,
        dev_addr: read_parsed(row, 1, "device_sessions.dev_addr")?,
        nwk_s_key: required_key(row, 2, "device_sessions.nwk_s_key")?,
        s_nwk_s_int_key: read_key(row, 3, "device_sessions.s_nwk_s_int_key")?,
        nwk_s_enc_key: read_key(row, 4, "device_sessions.nwk_s_enc_key")?,
        app_s_key: required_key(row, 5, "device_sessions.app_s_key")?,
        last_f_cnt_up,
    })
}

fn optional_key(key: &Option<AesKey>) -> Option<&[u8]> {
    key.as_ref().map(|key| key.as_bytes().as_slice())
}

impl WriteTx<'_> {
    /// Stores `session` as the device's session, replacing any previous one, with both
    /// frame counters reset; appends `session_created` (with `details` merged into its
    /// payload, e.g. the join's DevNonce and gateway).
    pub fn store_session(
        &mut self,
        session: &DeviceSession,
        at: WallTime,
        details: serde_json::Value,
    ) -> Result<(), StorageError> {
        let known: bool = self
            .connection()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE dev_eui = ?1)",
                params![session.dev_eui.to_string()],
                |row| row.get(0),
            )
            .map_err(StorageError::sql("checking a session's device"))?;
        if !known {
            return Err(StorageError::UnknownDevice(session.dev_eui));
        }
        self.connection()
            .execute(
                "INSERT INTO device_sessions (dev_eui, dev_addr, nwk_s_key, s_nwk_s_int_key, \
                 nwk_s_enc_key, app_s_key, last_f_cnt_up, n_f_cnt_down, f_cnt_down_reserved, \
                 created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, ?8) \
                 ON CONFLICT (dev_eui) DO UPDATE SET dev_addr = excluded.dev_addr, \
                 nwk_s_key = excluded.nwk_s_key, s_nwk_s_int_key = excluded.s_nwk_s_int_key, \
                 nwk_s_enc_key = excluded.nwk_s_enc_key, app_s_key = excluded.app_s_key, \
                 last_f_cnt_up = excluded.last_f_cnt_up, n_f_cnt_down = 0, \
                 f_cnt_down_reserved = 0, created_at_ms = excluded.created_at_ms",
                params![
                    session.dev_eui.to_string(),
                    session.dev_addr.to_string(),
                    session.nwk_s_key.as_bytes().as_slice(),
                    optional_key(&session.s_nwk_s_int_key),
                    optional_key(&session.nwk_s_enc_key),
                    session.app_s_key.as_bytes().as_slice(),
                    session.last_f_cnt_up.map(i64::from),
                    at.unix_millis(),
                ],
            )
            .map_err(StorageError::sql("storing a session"))?;
        self.sessions_replaced.push(session.dev_eui);
        let mut payload = serde_json::json!({ "dev_addr": session.dev_addr });
        if let (Some(payload), serde_json::Value::Object(details)) =
            (payload.as_object_mut(), details)
        {
            payload.extend(details);
        }
        self.append_event(
            &NewEvent::new(at, EventKind::SessionCreated)
                .device(session.dev_eui)
                .payload(payload),
        )?;
        Ok(())
    }

    /// Records the FCnt of an accepted uplink.
    pub fn set_last_f_cnt_up(
        &mut self,
        dev_eui: DevEui,
        f_cnt_up: u32,
    ) -> Result<(), StorageError> {
        let updated = self
            .connection()
            .execute(
                "UPDATE device_sessions SET last_f_cnt_up = ?2 WHERE dev_eui = ?1",
                params![dev_eui.to_string(), i64::from(f_cnt_up)],
            )
            .map_err(StorageError::sql("updating an uplink frame counter"))?;
        if updated == 0 {
            return Err(StorageError::NoSession(dev_eui));
        }
        Ok(())
    }

    /// Records a DevNonce from a JoinRequest; [`DevNonceUse::Replayed`] if the device
    /// already used it with this JoinEUI (nothing is written then).
    pub fn record_dev_nonce(
        &mut self,
        dev_eui: DevEui,
        join_eui: JoinEui,
        dev_nonce: u16,
        at: WallTime,
    ) -> Result<DevNonceUse, StorageError> {
        let inserted = self
            .connection()
            .execute(
                "INSERT INTO dev_nonces (dev_eui, join_eui, dev_nonce, seen_at_ms) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![
                    dev_eui.to_string(),
                    join_eui.to_string(),
                    dev_nonce,
                    at.unix_millis()
                ],
            )
            .map_err(StorageError::sql("recording a DevNonce"))?;
        Ok(if inserted == 1 {
            DevNonceUse::New
        } else {
            DevNonceUse::Replayed
        })
    }
}

impl Storage {
    /// How many DevNonces the device has used (every accepted join adds one): the agent's
    /// JoinNonce counter, which therefore never repeats for a device.
    pub fn dev_nonce_count(&self, dev_eui: DevEui) -> Result<u32, StorageError> {
        let count: i64 = self
            .connection()
            .query_row(
                "SELECT count(*) FROM dev_nonces WHERE dev_eui = ?1",
                params![dev_eui.to_string()],
                |row| row.get(0),
            )
            .map_err(StorageError::sql("counting DevNonces"))?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// The device's session, if it has one.
    pub fn session(&self, dev_eui: DevEui) -> Result<Option<DeviceSession>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE dev_eui = ?1"
            ))
            .map_err(StorageError::sql("preparing a session query"))?;
        let mut rows = statement
            .query(params![dev_eui.to_string()])
            .map_err(StorageError::sql("querying a session"))?;
        match rows
            .next()
            .map_err(StorageError::sql("reading a session"))?
        {
            Some(row) => session_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// Every session using `dev_addr` (DevAddrs are not unique: the MIC decides).
    pub fn sessions_by_dev_addr(
        &self,
        dev_addr: DevAddr,
    ) -> Result<Vec<DeviceSession>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE dev_addr = ?1 ORDER BY dev_eui"
            ))
            .map_err(StorageError::sql("preparing a DevAddr query"))?;
        let mut rows = statement
            .query(params![dev_addr.to_string()])
            .map_err(StorageError::sql("querying sessions by DevAddr"))?;
        let mut sessions = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading a session"))?
        {
            sessions.push(session_from_row(row)?);
        }
        Ok(sessions)
    }

    /// The stored FCntDown bookkeeping of the device's session.
    pub fn session_counters(
        &self,
        dev_eui: DevEui,
    ) -> Result<Option<SessionCounters>, StorageError> {
        self.connection()
            .query_row(
                "SELECT n_f_cnt_down, f_cnt_down_reserved FROM device_sessions WHERE dev_eui = ?1",
                params![dev_eui.to_string()],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(StorageError::sql("reading a session's frame counters"))?
            .map(|(next, reserved)| {
                let counter = |value: i64, column: &'static str| {
                    u64::try_from(value).map_err(|_| StorageError::InvalidStoredValue {
                        column,
                        reason: format!("negative counter {value}"),
                    })
                };
                Ok(SessionCounters {
                    n_f_cnt_down: counter(next, "device_sessions.n_f_cnt_down")?,
                    f_cnt_down_reserved: counter(reserved, "device_sessions.f_cnt_down_reserved")?,
                })
            })
            .transpose()
    }

    /// The highest DevNonce the device has used with `join_eui` (LoRaWAN 1.0.4 requires
    /// each new one to be greater).
    pub fn highest_dev_nonce(
        &self,
        dev_eui: DevEui,
        join_eui: JoinEui,
    ) -> Result<Option<u16>, StorageError> {
        let highest: Option<i64> = self
            .connection()
            .query_row(
                "SELECT max(dev_nonce) FROM dev_nonces WHERE dev_eui = ?1 AND join_eui = ?2",
                params![dev_eui.to_string(), join_eui.to_string()],
                |row| row.get(0),
            )
            .map_err(StorageError::sql("reading the highest DevNonce"))?;
        highest
            .map(|value| {
                u16::try_from(value).map_err(|_| StorageError::InvalidStoredValue {
                    column: "dev_nonces.dev_nonce",
                    reason: format!("{value} is not a 16-bit DevNonce"),
                })
            })
            .transpose()
    }
}
