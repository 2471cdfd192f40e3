//! FUOTA campaigns in SQLite: the campaign rows (state, parameters, progress, multicast
//! group), their per-device rows, the multicast group FCnt reservation, and each
//! device's TS004 SessionCnt.
//!
//! The campaign engine ([`crate::campaign`]) reads a campaign and its devices, moves
//! them forward in memory, and writes the changed rows back in one [`Storage::write`]
//! transaction together with the events that report the changes.
//!
//! # Multicast FCnt
//!
//! Like FCntDown ([`super::frame_counters`]), the group FCnt is protected by a
//! high-water mark, `mc_fcnt_reserved`: every FCnt handed out is below it, and it is
//! moved ahead in a commit synced to disk (`synchronous=FULL`) before a value at or
//! above it is used. The engine keeps the window in memory and starts a reloaded
//! campaign at the mark, so no FCnt is ever reused.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::devices::{read_key, read_parsed};
use super::events::{EventKind, NewEvent};
use super::{Storage, StorageError, WriteTx};
use crate::campaign::model::{
    Campaign, CampaignDevice, CampaignId, CampaignParameters, CampaignProgress, CampaignState,
    Delivery, StoredDeviceStep, Targets,
};
use crate::clock::WallTime;
use crate::identifiers::{AesKey, DevEui};

/// How many multicast FCnts one synced write reserves.
pub const MC_FCNT_RESERVATION: u64 = 64;

/// A 32-bit FCnt: values `0 ..= 2^32 - 1`.
const MC_FCNT_LIMIT: u64 = 1 << 32;

/// A campaign to insert.
#[derive(Debug, Clone)]
pub struct NewCampaign<'a> {
    /// Name.
    pub name: &'a str,
    /// The image.
    pub image_sha256: &'a str,
    /// TS006 version it installs.
    pub target_version: u32,
    /// Hardware version it is for.
    pub hardware_version: Option<u32>,
    /// How the targets were chosen.
    pub targets: &'a Targets,
    /// Delivery.
    pub delivery: Delivery,
    /// Parameters.
    pub parameters: &'a CampaignParameters,
    /// McAddr; `None`: derived from the id by the caller-given function.
    pub mc_addr: Option<u32>,
    /// McKey of the group.
    pub mc_key: &'a AesKey,
    /// The devices.
    pub devices: &'a [DevEui],
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> Result<T, StorageError> {
    let text: String = row.get(index).map_err(StorageError::sql(column))?;
    serde_json::from_str(&text).map_err(|error| StorageError::InvalidStoredValue {
        column,
        reason: error.to_string(),
    })
}

fn u32_column(row: &Row<'_>, index: usize, column: &'static str) -> Result<u32, StorageError> {
    let value: i64 = row.get(index).map_err(StorageError::sql(column))?;
    u32::try_from(value).map_err(|_| StorageError::InvalidStoredValue {
        column,
        reason: format!("{value} is not a 32-bit value"),
    })
}

const CAMPAIGN_COLUMNS: &str = "id, name, image_sha256, target_version, hardware_version, \
     targets, delivery, parameters, state, progress, mc_addr, created_at_ms, updated_at_ms";

fn campaign_from_row(row: &Row<'_>) -> Result<Campaign, StorageError> {
    let hardware_version: Option<i64> = row
        .get(4)
        .map_err(StorageError::sql("campaigns.hardware_version"))?;
    Ok(Campaign {
        id: row.get(0).map_err(StorageError::sql("campaigns.id"))?,
        name: row.get(1).map_err(StorageError::sql("campaigns.name"))?,
        image_sha256: row
            .get(2)
            .map_err(StorageError::sql("campaigns.image_sha256"))?,
        target_version: u32_column(row, 3, "campaigns.target_version")?,
        hardware_version: hardware_version
            .map(|value| {
                u32::try_from(value).map_err(|_| StorageError::InvalidStoredValue {
                    column: "campaigns.hardware_version",
                    reason: format!("{value} is not a 32-bit value"),
                })
            })
            .transpose()?,
        targets: json_column(row, 5, "campaigns.targets")?,
        delivery: read_parsed(row, 6, "campaigns.delivery")?,
        parameters: json_column(row, 7, "campaigns.parameters")?,
        state: read_parsed(row, 8, "campaigns.state")?,
        progress: json_column(row, 9, "campaigns.progress")?,
        mc_addr: u32_column(row, 10, "campaigns.mc_addr")?,
        created_at_ms: row
            .get(11)
            .map_err(StorageError::sql("campaigns.created_at_ms"))?,
        updated_at_ms: row
            .get(12)
            .map_err(StorageError::sql("campaigns.updated_at_ms"))?,
    })
}

const DEVICE_COLUMNS: &str =
    "campaign_id, dev_eui, status, step, retries, last_seen_ms, missing, last_error";

fn campaign_device_from_row(row: &Row<'_>) -> Result<CampaignDevice, StorageError> {
    let stored: StoredDeviceStep = json_column(row, 3, "campaign_devices.step")?;
    let retries: i64 = row
        .get(4)
        .map_err(StorageError::sql("campaign_devices.retries"))?;
    let missing: Option<i64> = row
        .get(6)
        .map_err(StorageError::sql("campaign_devices.missing"))?;
    Ok(CampaignDevice {
        campaign_id: row
            .get(0)
            .map_err(StorageError::sql("campaign_devices.campaign_id"))?,
        dev_eui: read_parsed(row, 1, "campaign_devices.dev_eui")?,
        status: read_parsed(row, 2, "campaign_devices.status")?,
        step: stored.step,
        pending: stored.pending,
        facts: stored.facts,
        retries: u32::try_from(retries).unwrap_or(u32::MAX),
        last_seen_ms: row
            .get(5)
            .map_err(StorageError::sql("campaign_devices.last_seen_ms"))?,
        missing: missing.map(|value| u32::try_from(value).unwrap_or(u32::MAX)),
        last_error: row
            .get(7)
            .map_err(StorageError::sql("campaign_devices.last_error"))?,
    })
}

impl WriteTx<'_> {
    /// Inserts a campaign (state `created`) and its device rows, appending
    /// `campaign_created`; returns its id. `default_mc_addr` gives the McAddr from the
    /// new id when [`NewCampaign::mc_addr`] is `None`.
    pub fn insert_campaign(
        &mut self,
        campaign: &NewCampaign<'_>,
        default_mc_addr: impl Fn(CampaignId) -> u32,
        first_step: &StoredDeviceStep,
        at: WallTime,
    ) -> Result<CampaignId, StorageError> {
        let progress = serde_json::to_string(&CampaignProgress::new())?;
        self.connection()
            .execute(
                "INSERT INTO campaigns (name, image_sha256, target_version, hardware_version, \
                 targets, delivery, parameters, state, progress, mc_addr, mc_key, \
                 created_at_ms, updated_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'created', ?8, 0, ?9, ?10, ?10)",
                params![
                    campaign.name,
                    campaign.image_sha256,
                    i64::from(campaign.target_version),
                    campaign.hardware_version.map(i64::from),
                    serde_json::to_string(campaign.targets)?,
                    campaign.delivery.as_str(),
                    serde_json::to_string(campaign.parameters)?,
                    progress,
                    campaign.mc_key.as_bytes().as_slice(),
                    at.unix_millis(),
                ],
            )
            .map_err(StorageError::sql("inserting a campaign"))?;
        let id = self.connection().last_insert_rowid();
        let mc_addr = campaign.mc_addr.unwrap_or_else(|| default_mc_addr(id));
        self.connection()
            .execute(
                "UPDATE campaigns SET mc_addr = ?2 WHERE id = ?1",
                params![id, i64::from(mc_addr)],
            )
            .map_err(StorageError::sql("setting a campaign's McAddr"))?;
        let step = serde_json::to_string(first_step)?;
        for dev_eui in campaign.devices {
            self.connection()
                .execute(
                    "INSERT INTO campaign_devices (campaign_id, dev_eui, status, step, updated_at_ms) \
                     VALUES (?1, ?2, 'in_progress', ?3, ?4)",
                    params![id, dev_eui.to_string(), step, at.unix_millis()],
                )
                .map_err(StorageError::sql("inserting a campaign device"))?;
        }
        self.append_event(&NewEvent::new(at, EventKind::CampaignCreated).payload(
            serde_json::json!({
                "campaign": id,
                "name": campaign.name,
                "image_sha256": campaign.image_sha256,
                "target_version": campaign.target_version,
                "hardware_version": campaign.hardware_version,
                "targets": campaign.targets,
                "delivery": campaign.delivery,
                "devices": campaign.devices,
                "mc_addr": format!("{mc_addr:08x}"),
                "parameters": campaign.parameters,
            }),
        ))?;
        Ok(id)
    }

    /// Changes a campaign's state, appending `campaign_state` with the old and new one.
    pub fn set_campaign_state(
        &mut self,
        id: CampaignId,
        from: CampaignState,
        to: CampaignState,
        at: WallTime,
    ) -> Result<(), StorageError> {
        let updated = self
            .connection()
            .execute(
                "UPDATE campaigns SET state = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![id, to.as_str(), at.unix_millis()],
            )
            .map_err(StorageError::sql("updating a campaign's state"))?;
        if updated == 0 {
            return Err(StorageError::InvalidStoredValue {
                column: "campaigns.id",
                reason: format!("campaign {id} does not exist"),
            });
        }
        self.append_event(&NewEvent::new(at, EventKind::CampaignState).payload(
            serde_json::json!({
                "campaign": id,
                "from": from,
                "to": to,
            }),
        ))?;
        Ok(())
    }

    /// Writes a campaign's progress. The caller appends the event that reports the
    /// change (a step change) in the same transaction; counters alone need none.
    pub fn save_campaign_progress(
        &mut self,
        id: CampaignId,
        progress: &CampaignProgress,
        at: WallTime,
    ) -> Result<(), StorageError> {
        self.connection()
            .execute(
                "UPDATE campaigns SET progress = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![id, serde_json::to_string(progress)?, at.unix_millis()],
            )
            .map_err(StorageError::sql("updating a campaign's progress"))?;
        Ok(())
    }

    /// Writes a device's row. The caller appends the events that report the change.
    pub fn save_campaign_device(
        &mut self,
        device: &CampaignDevice,
        at: WallTime,
    ) -> Result<(), StorageError> {
        let step = serde_json::to_string(&StoredDeviceStep {
            step: device.step,
            pending: device.pending,
            facts: device.facts,
        })?;
        self.connection()
            .execute(
                "UPDATE campaign_devices SET status = ?3, step = ?4, retries = ?5, \
                 last_seen_ms = ?6, missing = ?7, last_error = ?8, updated_at_ms = ?9 \
                 WHERE campaign_id = ?1 AND dev_eui = ?2",
                params![
                    device.campaign_id,
                    device.dev_eui.to_string(),
                    device.status.as_str(),
                    step,
                    i64::from(device.retries),
                    device.last_seen_ms,
                    device.missing.map(i64::from),
                    device.last_error,
                    at.unix_millis(),
                ],
            )
            .map_err(StorageError::sql("updating a campaign device"))?;
        Ok(())
    }

    /// Records the TS004 SessionCnt last handed to a device (devices refuse a SessionCnt
    /// not above the last one they accepted, so it must grow across campaigns).
    pub fn set_frag_session_cnt(
        &mut self,
        dev_eui: DevEui,
        session_cnt: u16,
    ) -> Result<(), StorageError> {
        self.connection()
            .execute(
                "INSERT INTO frag_session_counters (dev_eui, last_session_cnt) VALUES (?1, ?2) \
                 ON CONFLICT (dev_eui) DO UPDATE SET last_session_cnt = excluded.last_session_cnt",
                params![dev_eui.to_string(), session_cnt],
            )
            .map_err(StorageError::sql("writing a SessionCnt"))?;
        Ok(())
    }
}

impl Storage {
    /// The TS004 SessionCnt last handed to a device, if any.
    pub fn last_frag_session_cnt(&self, dev_eui: DevEui) -> Result<Option<u16>, StorageError> {
        let last: Option<i64> = self
            .connection()
            .query_row(
                "SELECT last_session_cnt FROM frag_session_counters WHERE dev_eui = ?1",
                params![dev_eui.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(StorageError::sql("reading a SessionCnt"))?;
        last.map(|value| {
            u16::try_from(value).map_err(|_| StorageError::InvalidStoredValue {
                column: "frag_session_counters.last_session_cnt",
                reason: format!("{value} is not a 16-bit counter"),
            })
        })
        .transpose()
    }

    /// A campaign.
    pub fn campaign(&self, id: CampaignId) -> Result<Option<Campaign>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?1"
            ))
            .map_err(StorageError::sql("preparing a campaign query"))?;
        let mut rows = statement
            .query(params![id])
            .map_err(StorageError::sql("querying a campaign"))?;
        match rows
            .next()
            .map_err(StorageError::sql("reading a campaign"))?
        {
            Some(row) => campaign_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// How far the campaigns' timeline was from the system clock (µs, timeline minus
    /// system) when it was last recorded; `None` when it never was.
    pub fn campaign_timeline_offset(&self) -> Result<Option<i64>, StorageError> {
        self.connection()
            .query_row(
                "SELECT offset_us FROM campaign_timeline WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(StorageError::sql("reading the campaign timeline"))
    }

    /// Records the campaigns' timeline offset (`None`: forgets it).
    pub fn set_campaign_timeline_offset(
        &mut self,
        offset_us: Option<i64>,
        now: WallTime,
    ) -> Result<(), StorageError> {
        let result = match offset_us {
            Some(offset) => self.connection().execute(
                "INSERT INTO campaign_timeline (id, offset_us, updated_at_ms) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET offset_us = ?1, updated_at_ms = ?2",
                params![offset, now.unix_millis()],
            ),
            None => self
                .connection()
                .execute("DELETE FROM campaign_timeline", []),
        };
        result
            .map(|_| ())
            .map_err(StorageError::sql("recording the campaign timeline"))
    }

    /// Whether any campaign is created, running or paused.
    pub fn any_active_campaign(&self) -> Result<bool, StorageError> {
        self.connection()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM campaigns \
                 WHERE state IN ('created', 'running', 'paused'))",
                [],
                |row| row.get(0),
            )
            .map_err(StorageError::sql("looking for active campaigns"))
    }

    /// Every campaign, oldest first.
    pub fn campaigns(&self) -> Result<Vec<Campaign>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id"
            ))
            .map_err(StorageError::sql("preparing the campaign list"))?;
        let mut rows = statement
            .query([])
            .map_err(StorageError::sql("listing campaigns"))?;
        let mut campaigns = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading a campaign"))?
        {
            campaigns.push(campaign_from_row(row)?);
        }
        Ok(campaigns)
    }

    /// A campaign's group McKey.
    pub fn campaign_mc_key(&self, id: CampaignId) -> Result<Option<AesKey>, StorageError> {
        let mut statement = self
            .connection()
            .prepare("SELECT mc_key FROM campaigns WHERE id = ?1")
            .map_err(StorageError::sql("preparing a McKey query"))?;
        let mut rows = statement
            .query(params![id])
            .map_err(StorageError::sql("querying a McKey"))?;
        match rows.next().map_err(StorageError::sql("reading a McKey"))? {
            Some(row) => read_key(row, 0, "campaigns.mc_key"),
            None => Ok(None),
        }
    }

    /// The device rows of a campaign, by DevEUI.
    pub fn campaign_devices(&self, id: CampaignId) -> Result<Vec<CampaignDevice>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM campaign_devices WHERE campaign_id = ?1 \
                 ORDER BY dev_eui"
            ))
            .map_err(StorageError::sql("preparing the campaign device list"))?;
        let mut rows = statement
            .query(params![id])
            .map_err(StorageError::sql("listing campaign devices"))?;
        let mut devices = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading a campaign device"))?
        {
            devices.push(campaign_device_from_row(row)?);
        }
        Ok(devices)
    }

    /// The device's rows in its last `limit` multicast campaigns that are over
    /// (finished or cancelled), the most recent first: what it received there.
    pub fn past_multicast_campaigns_of(
        &self,
        dev_eui: DevEui,
        limit: usize,
    ) -> Result<Vec<CampaignDevice>, StorageError> {
        let columns = DEVICE_COLUMNS
            .split(", ")
            .map(|column| format!("d.{column}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {columns} FROM campaign_devices d JOIN campaigns c ON c.id = d.campaign_id \
                 WHERE d.dev_eui = ?1 AND c.state IN ('finished', 'cancelled') \
                 AND c.delivery = 'multicast' ORDER BY c.id DESC LIMIT ?2"
            ))
            .map_err(StorageError::sql("preparing the device's campaign history"))?;
        let mut rows = statement
            .query(params![
                dev_eui.to_string(),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])
            .map_err(StorageError::sql("querying the device's campaign history"))?;
        let mut devices = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading the device's campaign history"))?
        {
            devices.push(campaign_device_from_row(row)?);
        }
        Ok(devices)
    }

    /// The campaigns a device belongs to that are still active (created, running or
    /// paused).
    pub fn active_campaigns_of(&self, dev_eui: DevEui) -> Result<Vec<CampaignId>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(
                "SELECT c.id FROM campaigns c JOIN campaign_devices d ON d.campaign_id = c.id \
                 WHERE d.dev_eui = ?1 AND c.state IN ('created', 'running', 'paused') \
                 ORDER BY c.id",
            )
            .map_err(StorageError::sql("preparing the device's campaign query"))?;
        let mut rows = statement
            .query(params![dev_eui.to_string()])
            .map_err(StorageError::sql("querying the device's campaigns"))?;
        let mut ids = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading a campaign id"))?
        {
            ids.push(row.get(0).map_err(StorageError::sql("campaigns.id"))?);
        }
        Ok(ids)
    }

    /// The campaign's group FCnt high-water mark.
    pub fn campaign_mc_fcnt_reserved(&self, id: CampaignId) -> Result<u64, StorageError> {
        let mark: Option<i64> = self
            .connection()
            .query_row(
                "SELECT mc_fcnt_reserved FROM campaigns WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(StorageError::sql("reading a multicast FCnt mark"))?;
        let mark = mark.ok_or_else(|| StorageError::InvalidStoredValue {
            column: "campaigns.id",
            reason: format!("campaign {id} does not exist"),
        })?;
        u64::try_from(mark).map_err(|_| StorageError::InvalidStoredValue {
            column: "campaigns.mc_fcnt_reserved",
            reason: format!("{mark} is negative"),
        })
    }

    /// Moves the campaign's group FCnt mark to at least `next + MC_FCNT_RESERVATION`
    /// (at most 2^32) in a commit synced to disk; returns the new mark. Call it outside
    /// any [`Storage::write`] transaction, before using FCnt `next`.
    pub fn reserve_mc_fcnts(&mut self, id: CampaignId, next: u64) -> Result<u64, StorageError> {
        let mark = (next + MC_FCNT_RESERVATION).min(MC_FCNT_LIMIT);
        self.connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(StorageError::sql(
                "enabling synchronous=FULL for a reservation",
            ))?;
        let reserved = self.write_mc_fcnt_reservation(id, mark);
        let restored = self
            .connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(StorageError::sql("restoring synchronous=NORMAL"));
        reserved.and(restored)?;
        self.campaign_mc_fcnt_reserved(id)
    }

    fn write_mc_fcnt_reservation(&mut self, id: CampaignId, mark: u64) -> Result<(), StorageError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning a multicast FCnt reservation"))?;
        transaction
            .execute(
                "UPDATE campaigns SET mc_fcnt_reserved = max(mc_fcnt_reserved, ?2) WHERE id = ?1",
                params![id, mark as i64],
            )
            .map_err(StorageError::sql("reserving multicast FCnts"))?;
        transaction
            .commit()
            .map_err(StorageError::sql("committing a multicast FCnt reservation"))
    }
}
