//! The firmware cache's metadata: one row per cached image, keyed by the SHA-256 of its
//! content. The bytes themselves live in the cache directory
//! ([`crate::firmware::cache`]); this table is what makes an image part of the cache.

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{NewEvent, Storage, StorageError, WriteTx};
use crate::clock::WallTime;
use crate::storage::EventKind;

/// How a device takes an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareImageKind {
    /// An MCUboot image our bootloader verifies (signature inside the image).
    Mcuboot,
    /// Bytes sent as they are to a device with another bootloader (ST's SBSFU `.sfb`,
    /// say), checked by the agent with a detached signature.
    Opaque,
}

impl FirmwareImageKind {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FirmwareImageKind::Mcuboot => "mcuboot",
            FirmwareImageKind::Opaque => "opaque",
        }
    }
}

impl fmt::Display for FirmwareImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FirmwareImageKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "mcuboot" => Ok(FirmwareImageKind::Mcuboot),
            "opaque" => Ok(FirmwareImageKind::Opaque),
            other => Err(format!(
                "unknown image kind {other:?}: expected \"mcuboot\" or \"opaque\""
            )),
        }
    }
}

/// A cached image's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirmwareImageRecord {
    /// SHA-256 of the image file, lower-case hex: its identity and file name.
    pub sha256: String,
    /// MCUboot or opaque.
    pub kind: FirmwareImageKind,
    /// Size in bytes.
    pub size: u64,
    /// The name it was imported under.
    pub name: String,
    /// MCUboot version (`1.2.3+4`); `None` for opaque images.
    pub version: Option<String>,
    /// TS006 firmware version.
    pub ts006_version: Option<u32>,
    /// Hardware version the image is for.
    pub hardware_version: Option<u32>,
    /// MCUboot's image digest (hex); `None` for opaque images.
    pub image_digest: Option<String>,
    /// The detached signature of an opaque image.
    #[serde(skip)]
    pub signature: Option<Vec<u8>>,
    /// KEYHASH (hex) of the trusted key that verified it.
    pub signer_key_hash: String,
    /// When it was imported.
    pub imported_at: WallTime,
}

const COLUMNS: &str = "sha256, kind, size, name, version, ts006_version, hardware_version, \
                       image_digest, signature, signer_key_hash, imported_at_ms";

fn record_from_row(row: &Row<'_>) -> Result<FirmwareImageRecord, StorageError> {
    let size: i64 = row
        .get(2)
        .map_err(StorageError::sql("firmware_images.size"))?;
    let imported_at_ms: i64 = row
        .get(10)
        .map_err(StorageError::sql("firmware_images.imported_at_ms"))?;
    Ok(FirmwareImageRecord {
        sha256: row
            .get(0)
            .map_err(StorageError::sql("firmware_images.sha256"))?,
        kind: super::devices::read_parsed(row, 1, "firmware_images.kind")?,
        size: u64::try_from(size).map_err(|_| StorageError::InvalidStoredValue {
            column: "firmware_images.size",
            reason: format!("{size} is negative"),
        })?,
        name: row
            .get(3)
            .map_err(StorageError::sql("firmware_images.name"))?,
        version: row
            .get(4)
            .map_err(StorageError::sql("firmware_images.version"))?,
        ts006_version: row
            .get(5)
            .map_err(StorageError::sql("firmware_images.ts006_version"))?,
        hardware_version: row
            .get(6)
            .map_err(StorageError::sql("firmware_images.hardware_version"))?,
        image_digest: row
            .get(7)
            .map_err(StorageError::sql("firmware_images.image_digest"))?,
        signature: row
            .get(8)
            .map_err(StorageError::sql("firmware_images.signature"))?,
        signer_key_hash: row
            .get(9)
            .map_err(StorageError::sql("firmware_images.signer_key_hash"))?,
        imported_at: WallTime::from_unix_micros(imported_at_ms.saturating_mul(1_000)),
    })
}

impl WriteTx<'_> {
    /// Adds an image's metadata and appends `image_imported`. Returns `false` (and
    /// changes nothing) when an image with that SHA-256 is already cached.
    pub fn insert_firmware_image(
        &mut self,
        record: &FirmwareImageRecord,
    ) -> Result<bool, StorageError> {
        let size = i64::try_from(record.size).map_err(|_| StorageError::InvalidStoredValue {
            column: "firmware_images.size",
            reason: format!("{} does not fit", record.size),
        })?;
        let inserted = self
            .connection()
            .execute(
                &format!(
                    "INSERT INTO firmware_images ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT (sha256) DO NOTHING"
                ),
                params![
                    record.sha256,
                    record.kind.as_str(),
                    size,
                    record.name,
                    record.version,
                    record.ts006_version,
                    record.hardware_version,
                    record.image_digest,
                    record.signature,
                    record.signer_key_hash,
                    record.imported_at.unix_millis(),
                ],
            )
            .map_err(StorageError::sql("inserting a firmware image"))?;
        if inserted == 0 {
            return Ok(false);
        }
        self.append_event(
            &NewEvent::new(record.imported_at, EventKind::ImageImported).payload(
                serde_json::json!({
                    "sha256": record.sha256,
                    "kind": record.kind,
                    "name": record.name,
                    "size": record.size,
                    "version": record.version,
                    "ts006_version": record.ts006_version,
                    "hardware_version": record.hardware_version,
                    "signer_key_hash": record.signer_key_hash,
                }),
            ),
        )?;
        Ok(true)
    }

    /// Removes an image's metadata and appends `image_removed`; `false` if it was not
    /// cached.
    pub fn remove_firmware_image(
        &mut self,
        sha256: &str,
        at: WallTime,
    ) -> Result<bool, StorageError> {
        let removed = self
            .connection()
            .execute(
                "DELETE FROM firmware_images WHERE sha256 = ?1",
                params![sha256],
            )
            .map_err(StorageError::sql("removing a firmware image"))?;
        if removed == 0 {
            return Ok(false);
        }
        self.append_event(
            &NewEvent::new(at, EventKind::ImageRemoved)
                .payload(serde_json::json!({ "sha256": sha256 })),
        )?;
        Ok(true)
    }
}

impl Storage {
    /// The cached image with this SHA-256 (lower-case hex), if any.
    pub fn firmware_image(
        &self,
        sha256: &str,
    ) -> Result<Option<FirmwareImageRecord>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM firmware_images WHERE sha256 = ?1"
            ))
            .map_err(StorageError::sql("preparing a firmware image query"))?;
        statement
            .query_row(params![sha256], |row| Ok(record_from_row(row)))
            .optional()
            .map_err(StorageError::sql("querying a firmware image"))?
            .transpose()
    }

    /// Every cached image, oldest import first.
    pub fn firmware_images(&self) -> Result<Vec<FirmwareImageRecord>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM firmware_images ORDER BY imported_at_ms, sha256"
            ))
            .map_err(StorageError::sql("preparing the firmware image list"))?;
        let mut rows = statement
            .query([])
            .map_err(StorageError::sql("listing firmware images"))?;
        let mut records = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StorageError::sql("reading a firmware image"))?
        {
            records.push(record_from_row(row)?);
        }
        Ok(records)
    }
}
