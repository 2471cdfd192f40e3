//! The device registry: what the agent knows about each device it serves (identity,
//! root keys, LoRaWAN version and class, hardware and firmware version, tags).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::events::{EventKind, NewEvent};
use super::{Storage, StorageError, WriteTx};
use crate::clock::WallTime;
use crate::identifiers::{AesKey, DevEui, JoinEui};

/// The LoRaWAN MAC version a device implements (it decides DevNonce rules, key
/// derivation and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MacVersion {
    /// LoRaWAN 1.0.2
    #[serde(rename = "1.0.2")]
    V1_0_2,
    /// LoRaWAN 1.0.3 (random DevNonce)
    #[serde(rename = "1.0.3")]
    V1_0_3,
    /// LoRaWAN 1.0.4 (DevNonce is a counter)
    #[serde(rename = "1.0.4")]
    V1_0_4,
    /// LoRaWAN 1.1
    #[serde(rename = "1.1")]
    V1_1,
}

impl MacVersion {
    /// The version as written in the database and the API (`"1.0.4"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            MacVersion::V1_0_2 => "1.0.2",
            MacVersion::V1_0_3 => "1.0.3",
            MacVersion::V1_0_4 => "1.0.4",
            MacVersion::V1_1 => "1.1",
        }
    }
}

impl FromStr for MacVersion {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "1.0.2" => Ok(MacVersion::V1_0_2),
            "1.0.3" => Ok(MacVersion::V1_0_3),
            "1.0.4" => Ok(MacVersion::V1_0_4),
            "1.1" => Ok(MacVersion::V1_1),
            other => Err(format!(
                "unknown LoRaWAN MAC version {other:?} (expected 1.0.2, 1.0.3, 1.0.4 or 1.1)"
            )),
        }
    }
}

impl fmt::Display for MacVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// LoRaWAN device class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DeviceClass {
    /// Class A: receive windows after each uplink only.
    A,
    /// Class B: beacon-synchronised ping slots.
    B,
    /// Class C: continuously listening.
    C,
}

impl DeviceClass {
    /// `"A"`, `"B"` or `"C"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceClass::A => "A",
            DeviceClass::B => "B",
            DeviceClass::C => "C",
        }
    }
}

impl FromStr for DeviceClass {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "A" => Ok(DeviceClass::A),
            "B" => Ok(DeviceClass::B),
            "C" => Ok(DeviceClass::C),
            other => Err(format!(
                "unknown device class {other:?} (expected A, B or C)"
            )),
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// DevEUI.
    pub dev_eui: DevEui,
    /// JoinEUI (AppEUI in 1.0.x).
    pub join_eui: JoinEui,
    /// AppKey: the OTAA root key of 1.0.x devices (the application root key in 1.1).
    /// `None` for ABP-only devices.
    pub app_key: Option<AesKey>,
    /// NwkKey: LoRaWAN 1.1 only.
    pub nwk_key: Option<AesKey>,
    /// GenAppKey: TS005 multicast root key derivation on 1.0.x devices.
    pub gen_app_key: Option<AesKey>,
    /// LoRaWAN MAC version.
    pub mac_version: MacVersion,
    /// Device class.
    pub class: DeviceClass,
    /// Hardware version (matched against an image's hardware TLV).
    pub hardware_version: Option<String>,
    /// Last known firmware version.
    pub firmware_version: Option<String>,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
}

impl Device {
    /// A Class A device with no keys, versions or tags (fill in what applies).
    pub fn new(dev_eui: DevEui, join_eui: JoinEui, mac_version: MacVersion) -> Self {
        Device {
            dev_eui,
            join_eui,
            app_key: None,
            nwk_key: None,
            gen_app_key: None,
            mac_version,
            class: DeviceClass::A,
            hardware_version: None,
            firmware_version: None,
            tags: BTreeMap::new(),
        }
    }
}

fn key_bytes(key: &Option<AesKey>) -> Option<&[u8]> {
    key.as_ref().map(|key| key.as_bytes().as_slice())
}

pub(crate) fn read_key(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> Result<Option<AesKey>, StorageError> {
    let bytes: Option<Vec<u8>> = row.get(index).map_err(StorageError::sql(column))?;
    bytes
        .map(|bytes| {
            <[u8; 16]>::try_from(bytes.as_slice())
                .map(AesKey::from_bytes)
                .map_err(|_| StorageError::InvalidStoredValue {
                    column,
                    reason: format!("{} bytes, expected 16", bytes.len()),
                })
        })
        .transpose()
}

pub(crate) fn read_parsed<T: FromStr>(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> Result<T, StorageError>
where
    T::Err: fmt::Display,
{
    let text: String = row.get(index).map_err(StorageError::sql(column))?;
    text.parse()
        .map_err(|error: T::Err| StorageError::InvalidStoredValue {
            column,
            reason: format!("{text:?}: {error}"),
        })
}

const DEVICE_COLUMNS: &str = "dev_eui, join_eui, app_key, nwk_key, gen_app_key, mac_version, \
                              class, hardware_version, firmware_version, tags";

fn device_from_row(row: &Row<'_>) -> Result<Device, StorageError> {
    let tags: String = row.get(9).map_err(StorageError::sql("devices.tags"))?;
    let tags = serde_json::from_str(&tags).map_err(|error| StorageError::InvalidStoredValue {
        column: "devices.tags",
        reason: error.to_string(),
    })?;
    Ok(Device {
        dev_eui: read_parsed(row, 0, "devices.dev_eui")?,
        join_eui: read_parsed(row, 1, "devices.join_eui")?,
        app_key: read_key(row, 2, "devices.app_key")?,
        nwk_key: read_key(row, 3, "devices.nwk_key")?,
        gen_app_key: read_key(row, 4, "devices.gen_app_key")?,
        mac_version: read_parsed(row, 5, "devices.mac_version")?,
        class: read_parsed(row, 6, "devices.class")?,
        hardware_version: row
            .get(7)
            .map_err(StorageError::sql("devices.hardware_version"))?,
        firmware_version: row
            .get(8)
            .map_err(StorageError::sql("devices.firmware_version"))?,
        tags,
    })
}

impl WriteTx<'_> {
    /// Registers a new device and appends a `device_added` event (keys are never part of
    /// events). Fails with [`StorageError::DeviceExists`] if the DevEUI is taken.
    pub fn insert_device(&mut self, device: &Device, at: WallTime) -> Result<(), StorageError> {
        let tags = serde_json::to_string(&device.tags)?;
        let inserted = self
            .connection()
            .execute(
                "INSERT INTO devices (dev_eui, join_eui, app_key, nwk_key, gen_app_key, mac_version, \
                 class, hardware_version, firmware_version, tags, created_at_ms, updated_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) \
                 ON CONFLICT (dev_eui) DO NOTHING",
                params![
                    device.dev_eui.to_string(),
                    device.join_eui.to_string(),
                    key_bytes(&device.app_key),
                    key_bytes(&device.nwk_key),
                    key_bytes(&device.gen_app_key),
                    device.mac_version.as_str(),
                    device.class.as_str(),
                    device.hardware_version,
                    device.firmware_version,
                    tags,
                    at.unix_millis(),
                ],
            )
            .map_err(StorageError::sql("inserting a device"))?;
        if inserted == 0 {
            return Err(StorageError::DeviceExists(device.dev_eui));
        }
        self.append_event(
            &NewEvent::new(at, EventKind::DeviceAdded)
                .device(device.dev_eui)
                .payload(serde_json::json!({
                    "join_eui": device.join_eui,
                    "mac_version": device.mac_version,
                    "class": device.class,
                    "hardware_version": device.hardware_version,
                    "firmware_version": device.firmware_version,
                    "otaa": device.app_key.is_some(),
                    "multicast_root_key": device.gen_app_key.is_some(),
                })),
        )?;
        Ok(())
    }

    /// Removes a device with its session and DevNonces, appending `device_removed`.
    pub fn remove_device(&mut self, dev_eui: DevEui, at: WallTime) -> Result<(), StorageError> {
        let removed = self
            .connection()
            .execute(
                "DELETE FROM devices WHERE dev_eui = ?1",
                params![dev_eui.to_string()],
            )
            .map_err(StorageError::sql("removing a device"))?;
        if removed == 0 {
            return Err(StorageError::UnknownDevice(dev_eui));
        }
        self.sessions_replaced.push(dev_eui);
        self.append_event(&NewEvent::new(at, EventKind::DeviceRemoved).device(dev_eui))?;
        Ok(())
    }

    /// Records the firmware version a device reported, appending
    /// `device_firmware_version` with the old and new values.
    pub fn set_firmware_version(
        &mut self,
        dev_eui: DevEui,
        firmware_version: &str,
        at: WallTime,
    ) -> Result<(), StorageError> {
        let previous: Option<Option<String>> = self
            .connection()
            .query_row(
                "SELECT firmware_version FROM devices WHERE dev_eui = ?1",
                params![dev_eui.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(StorageError::sql("reading a device's firmware version"))?;
        let Some(previous) = previous else {
            return Err(StorageError::UnknownDevice(dev_eui));
        };
        self.connection()
            .execute(
                "UPDATE devices SET firmware_version = ?2, updated_at_ms = ?3 WHERE dev_eui = ?1",
                params![dev_eui.to_string(), firmware_version, at.unix_millis()],
            )
            .map_err(StorageError::sql("updating a device's firmware version"))?;
        self.append_event(
            &NewEvent::new(at, EventKind::DeviceFirmwareVersion)
                .device(dev_eui)
                .payload(serde_json::json!({
                    "previous": previous,
                    "current": firmware_version,
                })),
        )?;
        Ok(())
    }
}

impl Storage {
    /// The device with this DevEUI, if registered.
    pub fn device(&self, dev_eui: DevEui) -> Result<Option<Device>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE dev_eui = ?1"
            ))
            .map_err(StorageError::sql("preparing a device query"))?;
        let mut rows = statement
            .query(params![dev_eui.to_string()])
            .map_err(StorageError::sql("querying a device"))?;
        match rows.next().map_err(StorageError::sql("reading a device"))? {
            Some(row) => device_from_row(row).map(Some),
            None => Ok(None),
        }
    }

    /// Every registered device, by DevEUI.
    pub fn devices(&self) -> Result<Vec<Device>, StorageError> {
        let mut statement = self
            .connection()
            .prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY dev_eui"
            ))
            .map_err(StorageError::sql("preparing the device list"))?;
        let mut rows = statement
            .query([])
            .map_err(StorageError::sql("listing devices"))?;
        let mut devices = Vec::new();
        while let Some(row) = rows.next().map_err(StorageError::sql("reading a device"))? {
            devices.push(device_from_row(row)?);
        }
        Ok(devices)
    }
}
