//! The device's identity and root keys, written once per device at manufacturing: a
//! provisioning record, so that no two devices share credentials compiled into their
//! image.
//!
//! The STM32WL application keeps its records in the chip's one-time-programmable area
//! (1 KB at 0x1FFF_7000, 16 slots of [`PROVISIONING_RECORD_LEN`] bytes). OTP cannot be
//! erased, so a correction is a new record in the next free slot: [`latest_record`]
//! takes the last valid record before the first erased slot. A slot whose write was cut
//! (checksum wrong, or unreadable) is skipped.
//!
//! Record layout (64 bytes):
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `FPRV` |
//! | 4      | format version (1) |
//! | 5..8   | zero |
//! | 8..16  | DevEUI, most significant byte first |
//! | 16..24 | JoinEUI, most significant byte first |
//! | 24..40 | AppKey |
//! | 40..56 | GenAppKey (TS005 multicast keys, TS004 v2 MIC key) |
//! | 56..60 | zero |
//! | 60..64 | CRC-32 (IEEE 802.3, as zlib computes it) of bytes 0..60, little-endian |
//!
//! The CRC catches a cut or corrupted write; it is no protection against someone who
//! can program the OTP area (they own the device anyway).
//!
//! `fuotactl device provisioning-records` writes them from the CSV the agent imports.

use lorawan_fuota::checksum::crc32;

use crate::Credentials;

/// Length of a provisioning record (and of an OTP slot).
pub const PROVISIONING_RECORD_LEN: usize = 64;
const MAGIC: [u8; 4] = *b"FPRV";
const FORMAT_VERSION: u8 = 1;
const CHECKED_LEN: usize = 60;

/// What a device is provisioned with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProvisioningRecord {
    /// LoRaWAN identity and root key.
    pub credentials: Credentials,
    /// GenAppKey, the root of the FUOTA packages' keys.
    pub gen_app_key: [u8; 16],
}

impl core::fmt::Debug for ProvisioningRecord {
    /// The EUIs only: keys stay out of logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProvisioningRecord")
            .field(
                "dev_eui",
                &format_args!("{:016x}", u64::from_be_bytes(self.credentials.dev_eui)),
            )
            .field(
                "join_eui",
                &format_args!("{:016x}", u64::from_be_bytes(self.credentials.join_eui)),
            )
            .finish_non_exhaustive()
    }
}

/// Why a slot holds no usable record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProvisioningError {
    /// All 0xFF: never written.
    Erased,
    /// Not a provisioning record (another magic).
    NotARecord,
    /// A record of a format this firmware does not know (from newer tooling).
    UnknownFormat(u8),
    /// The checksum does not match: a write cut short, or damaged.
    Damaged,
}

impl ProvisioningRecord {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; PROVISIONING_RECORD_LEN] {
        let mut bytes = [0u8; PROVISIONING_RECORD_LEN];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4] = FORMAT_VERSION;
        bytes[8..16].copy_from_slice(&self.credentials.dev_eui);
        bytes[16..24].copy_from_slice(&self.credentials.join_eui);
        bytes[24..40].copy_from_slice(&self.credentials.app_key);
        bytes[40..56].copy_from_slice(&self.gen_app_key);
        let crc = crc32(&bytes[..CHECKED_LEN]);
        bytes[CHECKED_LEN..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// The record in `bytes`, checked.
    pub fn decode(bytes: &[u8; PROVISIONING_RECORD_LEN]) -> Result<Self, ProvisioningError> {
        if bytes.iter().all(|&byte| byte == 0xFF) {
            return Err(ProvisioningError::Erased);
        }
        if bytes[0..4] != MAGIC {
            return Err(ProvisioningError::NotARecord);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(ProvisioningError::UnknownFormat(bytes[4]));
        }
        if crc32(&bytes[..CHECKED_LEN]).to_le_bytes() != bytes[CHECKED_LEN..]
            || bytes[5..8] != [0; 3]
            || bytes[56..60] != [0; 4]
        {
            return Err(ProvisioningError::Damaged);
        }
        let field = |range: core::ops::Range<usize>| &bytes[range];
        let mut record = ProvisioningRecord {
            credentials: Credentials {
                dev_eui: [0; 8],
                join_eui: [0; 8],
                app_key: [0; 16],
            },
            gen_app_key: [0; 16],
        };
        record.credentials.dev_eui.copy_from_slice(field(8..16));
        record.credentials.join_eui.copy_from_slice(field(16..24));
        record.credentials.app_key.copy_from_slice(field(24..40));
        record.gen_app_key.copy_from_slice(field(40..56));
        Ok(record)
    }
}

/// What a scan of the slots found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// The last valid record before the first erased slot.
    pub record: Option<ProvisioningRecord>,
    /// Slots skipped because they hold no usable record (cut writes, other formats).
    pub skipped: usize,
}

/// Scans `slots` records, read one by one through `read_slot` (a read that fails, such
/// as an ECC error on a cut OTP write, counts as a skipped slot), up to the first
/// erased one.
pub fn latest_record<E>(
    slots: usize,
    mut read_slot: impl FnMut(usize, &mut [u8; PROVISIONING_RECORD_LEN]) -> Result<(), E>,
) -> Scan {
    let mut scan = Scan {
        record: None,
        skipped: 0,
    };
    let mut bytes = [0u8; PROVISIONING_RECORD_LEN];
    for slot in 0..slots {
        if read_slot(slot, &mut bytes).is_err() {
            scan.skipped += 1;
            continue;
        }
        match ProvisioningRecord::decode(&bytes) {
            Ok(record) => scan.record = Some(record),
            Err(ProvisioningError::Erased) => break,
            Err(_) => scan.skipped += 1,
        }
    }
    scan
}
