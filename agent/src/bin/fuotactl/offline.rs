//! The commands that work without a running agent: `image sign` (make a signed MCUboot
//! image from a firmware binary and a P-256 key), `image verify` (check an image
//! against public keys, as the agent and the bootloader will) and `device
//! provisioning-records` (the per-device records the STM32WL firmware reads from OTP).

use std::io::Write;
use std::path::{Path, PathBuf};

use std::str::FromStr;

use fuota_agent::firmware::{hex, ImageSigner, ImageSpec, TrustStore};
use fuota_agent::identifiers::{parse_aes_key, DevEui, JoinEui};
use fuota_device::{Credentials, ProvisioningRecord};
use lorawan_fuota::image::{verify, VerifyOptions};

use crate::{print_json, Failure};

pub(crate) fn image_sign(
    key: &Path,
    spec: &ImageSpec,
    input: &Path,
    output: &Path,
    json: bool,
) -> Result<(), Failure> {
    let signer = ImageSigner::load(key).map_err(|error| Failure::error(error.to_string()))?;
    let body = std::fs::read(input)
        .map_err(|error| Failure::error(format!("cannot read {}: {error}", input.display())))?;
    let image = signer
        .sign_image(&body, spec)
        .map_err(|error| Failure::refused(format!("{}: {error}", input.display())))?;
    write_atomically(output, &image)
        .map_err(|error| Failure::error(format!("cannot write {}: {error}", output.display())))?;
    let key_hash = hex(&signer.key_hash());
    if json {
        print_json(&serde_json::json!({
            "output": output.display().to_string(),
            "size": image.len(),
            "version": spec.version.to_string(),
            "ts006_version": spec.version.to_ts006(),
            "hardware_version": spec.hardware_version,
            "key_hash": key_hash,
        }));
    } else {
        println!(
            "signed {} -> {} ({} bytes, version {}, TS006 0x{:08x}{}, key {})",
            input.display(),
            output.display(),
            image.len(),
            spec.version,
            spec.version.to_ts006(),
            spec.hardware_version
                .map(|hardware| format!(", hardware 0x{hardware:08x}"))
                .unwrap_or_default(),
            &key_hash[..16],
        );
    }
    Ok(())
}

pub(crate) fn image_verify(
    keys: &[PathBuf],
    hardware_version: Option<u32>,
    image: &Path,
    json: bool,
) -> Result<(), Failure> {
    let trust = TrustStore::load(keys).map_err(|error| Failure::error(error.to_string()))?;
    let bytes = std::fs::read(image)
        .map_err(|error| Failure::error(format!("cannot read {}: {error}", image.display())))?;
    let mut options = VerifyOptions::new();
    if let Some(hardware) = hardware_version {
        options = options.require_hardware(hardware);
    }
    match verify(&bytes, trust.keys(), &options) {
        Ok(verified) => {
            let signer = &trust.entries()[verified.key_index()].name;
            if json {
                print_json(&serde_json::json!({
                    "valid": true,
                    "version": verified.version().to_string(),
                    "ts006_version": verified.ts006_version(),
                    "hardware_version": verified.hardware_version(),
                    "image_digest": hex(verified.digest()),
                    "size": verified.image_len(),
                    "signed_by": signer,
                }));
            } else {
                println!(
                    "{}: valid, version {} (TS006 0x{:08x}), {} bytes, hardware {}, signed by {}",
                    image.display(),
                    verified.version(),
                    verified.ts006_version(),
                    verified.image_len(),
                    verified
                        .hardware_version()
                        .map(|hardware| format!("0x{hardware:08x}"))
                        .unwrap_or_else(|| "any".into()),
                    signer,
                );
            }
            Ok(())
        }
        Err(error) => {
            if json {
                print_json(&serde_json::json!({ "valid": false, "reason": error.to_string() }));
            }
            Err(Failure::refused(format!(
                "{}: refused: {error}",
                image.display()
            )))
        }
    }
}

/// The OTP area the STM32WL firmware reads its provisioning record from.
const OTP_ADDRESS: u32 = 0x1FFF_7000;

/// One provisioning record per device of an import CSV, into `output_dir`: all checked
/// before any is written.
pub(crate) fn provisioning_records(
    file: &Path,
    output_dir: &Path,
    json: bool,
) -> Result<(), Failure> {
    let devices = crate::remote::read_device_csv(file)?;
    let mut records = Vec::with_capacity(devices.len());
    for (row, device) in devices.iter().enumerate() {
        let refused = |what: String| {
            Failure::refused(format!(
                "{} device {} ({}): {what}",
                file.display(),
                row + 1,
                device.dev_eui
            ))
        };
        if !matches!(device.mac_version.as_str(), "1.0.2" | "1.0.3" | "1.0.4") {
            return Err(refused(format!(
                "mac_version {}: the STM32WL firmware joins with LoRaWAN 1.0.x only",
                device.mac_version
            )));
        }
        let dev_eui = DevEui::from_str(&device.dev_eui)
            .map_err(|error| refused(format!("dev_eui: {error}")))?;
        let join_eui = JoinEui::from_str(&device.join_eui)
            .map_err(|error| refused(format!("join_eui: {error}")))?;
        let key = |name: &str, value: &Option<String>| {
            let text = value
                .as_deref()
                .ok_or_else(|| refused(format!("{name} is empty: the device needs it")))?;
            parse_aes_key(text)
                .map(|key| *key.as_bytes())
                .map_err(|error| refused(format!("{name}: {error}")))
        };
        let record = ProvisioningRecord {
            credentials: Credentials {
                dev_eui: dev_eui.to_u64().to_be_bytes(),
                join_eui: join_eui.to_u64().to_be_bytes(),
                app_key: key("app_key", &device.app_key)?,
            },
            gen_app_key: key("gen_app_key", &device.gen_app_key)?,
        };
        if records
            .iter()
            .any(|(other, _): &(DevEui, [u8; 64])| *other == dev_eui)
        {
            return Err(refused("listed twice".into()));
        }
        records.push((dev_eui, record.encode()));
    }
    std::fs::create_dir_all(output_dir).map_err(|error| {
        Failure::error(format!("cannot create {}: {error}", output_dir.display()))
    })?;
    let mut written = Vec::with_capacity(records.len());
    for (dev_eui, bytes) in &records {
        let path = output_dir.join(format!("{dev_eui}.bin"));
        write_atomically(&path, bytes)
            .map_err(|error| Failure::error(format!("cannot write {}: {error}", path.display())))?;
        written.push((dev_eui.to_string(), path));
    }
    if json {
        print_json(&serde_json::json!({
            "otp_address": format!("0x{OTP_ADDRESS:08x}"),
            "records": written
                .iter()
                .map(|(dev_eui, path)| serde_json::json!({
                    "dev_eui": dev_eui,
                    "path": path.display().to_string(),
                }))
                .collect::<Vec<_>>(),
        }));
    } else {
        for (dev_eui, path) in &written {
            println!("{dev_eui} -> {}", path.display());
        }
        println!(
            "{} provisioning records in {}. Program each into its device's OTP area at \
             0x{OTP_ADDRESS:08x} (a correction goes into the next free 64-byte slot: \
             0x{:08x}, ...), e.g. STM32_Programmer_CLI -c port=SWD -w <file> 0x{OTP_ADDRESS:08x}",
            written.len(),
            output_dir.display(),
            OTP_ADDRESS + 64
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so a
/// failure never leaves a half-written image under the final name.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

pub(crate) fn parse_u32(text: &str) -> Result<u32, String> {
    parse_number(text).and_then(|value| {
        u32::try_from(value).map_err(|_| format!("{text} does not fit in 32 bits"))
    })
}

pub(crate) fn parse_u16(text: &str) -> Result<u16, String> {
    parse_number(text).and_then(|value| {
        u16::try_from(value).map_err(|_| format!("{text} does not fit in 16 bits"))
    })
}

fn parse_number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a number (decimal, or hexadecimal with 0x)"))
}
