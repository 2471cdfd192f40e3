//! Provisioning records: the layout the manufacturing tools write, the checks that keep a
//! cut or foreign write from becoming the device's identity, and which record of the
//! OTP slots counts.

use fuota_device::provisioning::{latest_record, Scan};
use fuota_device::{Credentials, ProvisioningError, ProvisioningRecord, PROVISIONING_RECORD_LEN};

fn record(n: u8) -> ProvisioningRecord {
    ProvisioningRecord {
        credentials: Credentials {
            dev_eui: [0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, n],
            join_eui: [0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 0x00],
            app_key: [n; 16],
        },
        gen_app_key: [n ^ 0x5A; 16],
    }
}

#[test]
fn a_record_is_laid_out_as_documented_and_reads_back() {
    let bytes = record(7).encode();
    assert_eq!(&bytes[0..4], b"FPRV");
    assert_eq!(bytes[4], 1, "format version");
    assert_eq!(&bytes[5..8], &[0, 0, 0]);
    assert_eq!(
        &bytes[8..16],
        &[0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 7]
    );
    assert_eq!(&bytes[16..24], &[0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0, 0, 0]);
    assert_eq!(&bytes[24..40], &[7; 16]);
    assert_eq!(&bytes[40..56], &[7 ^ 0x5A; 16]);
    assert_eq!(&bytes[56..60], &[0; 4]);
    assert_eq!(
        u32::from_le_bytes(bytes[60..64].try_into().unwrap()),
        crc32fast::hash(&bytes[..60])
    );
    assert_eq!(ProvisioningRecord::decode(&bytes), Ok(record(7)));
}

#[test]
fn the_checksum_is_the_standard_crc_32() {
    // The CRC-32 check value, and an independent implementation on other data.
    assert_eq!(lorawan_fuota::checksum::crc32(b"123456789"), 0xCBF4_3926);
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    assert_eq!(
        lorawan_fuota::checksum::crc32(&data),
        crc32fast::hash(&data)
    );
}

#[test]
fn a_cut_foreign_or_newer_record_is_refused() {
    assert_eq!(
        ProvisioningRecord::decode(&[0xFF; PROVISIONING_RECORD_LEN]),
        Err(ProvisioningError::Erased)
    );
    let good = record(1).encode();
    // Every byte matters: a single flipped bit anywhere is caught.
    for index in 0..PROVISIONING_RECORD_LEN {
        let mut bytes = good;
        bytes[index] ^= 0x10;
        assert!(
            ProvisioningRecord::decode(&bytes).is_err(),
            "a flip at byte {index} went unnoticed"
        );
    }
    // A write cut after the first half: the rest still erased.
    let mut cut = good;
    cut[32..].fill(0xFF);
    assert_eq!(
        ProvisioningRecord::decode(&cut),
        Err(ProvisioningError::Damaged)
    );
    let mut newer = good;
    newer[4] = 2;
    assert_eq!(
        ProvisioningRecord::decode(&newer),
        Err(ProvisioningError::UnknownFormat(2))
    );
    assert_eq!(
        ProvisioningRecord::decode(&[0; PROVISIONING_RECORD_LEN]),
        Err(ProvisioningError::NotARecord)
    );
}

/// OTP slots as the firmware reads them: `None` is a slot whose read fails (ECC).
fn scan(slots: &[Option<[u8; PROVISIONING_RECORD_LEN]>]) -> Scan {
    latest_record(16, |index, buffer| {
        match slots
            .get(index)
            .copied()
            .unwrap_or(Some([0xFF; PROVISIONING_RECORD_LEN]))
        {
            Some(bytes) => {
                *buffer = bytes;
                Ok(())
            }
            None => Err("ECC double error"),
        }
    })
}

#[test]
fn the_last_valid_record_before_the_first_erased_slot_counts() {
    assert_eq!(
        scan(&[]),
        Scan {
            record: None,
            skipped: 0
        },
        "never provisioned"
    );
    assert_eq!(scan(&[Some(record(1).encode())]).record, Some(record(1)));
    // A correction written after the first record replaces it.
    let corrected = scan(&[Some(record(1).encode()), Some(record(2).encode())]);
    assert_eq!(corrected.record, Some(record(2)));
    // A correction whose write was cut (or that cannot be read) leaves the one before.
    let mut cut = record(3).encode();
    cut[40..].fill(0xFF);
    let after_cut = scan(&[Some(record(2).encode()), Some(cut), None]);
    assert_eq!(
        after_cut,
        Scan {
            record: Some(record(2)),
            skipped: 2
        }
    );
    // Records after an erased slot are not looked at (the slots fill in order).
    let gap = scan(&[
        Some(record(1).encode()),
        Some([0xFF; PROVISIONING_RECORD_LEN]),
        Some(record(9).encode()),
    ]);
    assert_eq!(gap.record, Some(record(1)));
}

#[test]
fn the_keys_stay_out_of_debug_output() {
    let text = format!("{:?}", record(0xAB));
    assert!(text.contains("dev_eui: 70b3d57ed00000ab"), "{text}");
    assert!(text.contains("join_eui: 70b3d57ed0000000"), "{text}");
    // AppKey [0xAB; 16], GenAppKey [0xF1; 16]: in no form.
    for key_byte in ["ab, ab", "171", "abab", "f1", "241"] {
        assert!(!text.to_lowercase().contains(key_byte), "{text}");
    }
}
