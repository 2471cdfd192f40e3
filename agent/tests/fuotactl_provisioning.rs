//! `fuotactl device provisioning-records` as a manufacturing line runs it: the CSV the
//! agent imports in, one OTP record per device out, read back the way the STM32WL
//! firmware reads it; a wrong row refuses the whole file and writes nothing.

mod common;

use std::path::Path;
use std::process::Output;

use fuota_device::{ProvisioningRecord, PROVISIONING_RECORD_LEN};

use common::{fuotactl, text};

const HEADER: &str = "dev_eui,join_eui,mac_version,app_key,gen_app_key,hardware_version\n";
const FIRST: &str = "70B3D57ED0000001,70B3D57ED0000000,1.0.4,\
                     000102030405060708090A0B0C0D0E0F,F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF,stm32wl\n";
const SECOND: &str = "70b3d57ed0000002,70b3d57ed0000000,1.0.3,\
                      2b7e151628aed2a6abf7158809cf4f3c,3c4fcf098815f7aba6d2ae2816157e2b,stm32wl\n";

fn run(csv: &str, output_dir: &Path, json: bool) -> Output {
    let file = output_dir.parent().unwrap().join("devices.csv");
    std::fs::write(&file, csv).unwrap();
    let mut args = vec![
        "device",
        "provisioning-records",
        file.to_str().unwrap(),
        "--output-dir",
        output_dir.to_str().unwrap(),
    ];
    if json {
        args.insert(0, "--json");
    }
    fuotactl(&args)
}

fn read_record(path: &Path) -> ProvisioningRecord {
    let bytes = std::fs::read(path).unwrap();
    let bytes: [u8; PROVISIONING_RECORD_LEN] = bytes.try_into().expect("64 bytes");
    ProvisioningRecord::decode(&bytes).unwrap()
}

#[test]
fn every_device_of_the_csv_gets_a_record_the_firmware_reads_back() {
    let directory = tempfile::tempdir().unwrap();
    let output_dir = directory.path().join("records");
    let output = run(&format!("{HEADER}{FIRST}{SECOND}"), &output_dir, false);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("0x1fff7000"), "{stdout}");
    assert!(stdout.contains("2 provisioning records"), "{stdout}");

    let first = read_record(&output_dir.join("70b3d57ed0000001.bin"));
    assert_eq!(
        first.credentials.dev_eui,
        [0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0, 0, 1]
    );
    assert_eq!(
        first.credentials.join_eui,
        [0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0, 0, 0]
    );
    assert_eq!(
        first.credentials.app_key,
        core::array::from_fn::<u8, 16, _>(|i| i as u8)
    );
    assert_eq!(
        first.gen_app_key,
        core::array::from_fn::<u8, 16, _>(|i| 0xF0 + i as u8)
    );
    let second = read_record(&output_dir.join("70b3d57ed0000002.bin"));
    assert_eq!(second.credentials.app_key[0], 0x2b);
    assert_eq!(second.gen_app_key[15], 0x2b);
    let files = std::fs::read_dir(&output_dir).unwrap().count();
    assert_eq!(files, 2, "no temporary file left behind");

    // JSON: what was written where.
    let output = run(&format!("{HEADER}{FIRST}"), &output_dir, true);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["otp_address"], "0x1fff7000");
    assert_eq!(json["records"][0]["dev_eui"], "70b3d57ed0000001");
}

#[test]
fn a_wrong_row_refuses_the_file_and_writes_nothing() {
    let cases = [
        (
            format!("{HEADER}{FIRST}70b3d57ed0000003,70b3d57ed0000000,1.0.4,000102030405060708090a0b0c0d0e0f,,x\n"),
            "device 2 (70b3d57ed0000003): gen_app_key is empty",
        ),
        (
            format!("{HEADER}{FIRST}{}", SECOND.replace("1.0.3", "1.1")),
            "mac_version 1.1: the STM32WL firmware joins with LoRaWAN 1.0.x only",
        ),
        (
            format!("{HEADER}{FIRST}{}", FIRST.replace("F0F1", "F0")),
            "gen_app_key",
        ),
        (format!("{HEADER}{FIRST}{FIRST}"), "listed twice"),
    ];
    for (csv, expected) in cases {
        let directory = tempfile::tempdir().unwrap();
        let output_dir = directory.path().join("records");
        let output = run(&csv, &output_dir, false);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        assert!(!output_dir.exists(), "nothing written for {expected:?}");
    }
}
