//! `fuotactl`: the technician's command line for the FUOTA agent.
//!
//! Today it holds the commands that work without a running agent: `image sign` (make a
//! signed MCUboot image from a firmware binary and a P-256 key) and `image verify` (check
//! an image against public keys, as the agent and the bootloader will). The commands
//! that drive a running agent over its local API (status, devices, campaigns, events)
//! join them with the operations work.
//!
//! Exit codes: 0 success, 1 the input was refused (bad image, bad signature), 2 usage or
//! file errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use fuota_agent::firmware::signing::{VersionArgument, DEFAULT_HEADER_SIZE};
use fuota_agent::firmware::{hex, ImageSigner, ImageSpec, KeyIdentification, TrustStore};
use lorawan_fuota::image::{verify, VerifyOptions};

/// Exit code when the input was examined and refused.
const EXIT_REFUSED: u8 = 1;
/// Exit code for usage, key and file errors.
const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "fuotactl",
    version,
    about = "Command line for the LoRaWAN FUOTA agent"
)]
struct Cli {
    /// Print results as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Firmware images.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PublicKeyFormat {
    /// SHA-256 of the public key (imgtool's default).
    Hash,
    /// The whole public key.
    Full,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Make a signed MCUboot image from a firmware binary (imgtool-compatible).
    Sign {
        /// P-256 private key in PEM (imgtool keygen -t ecdsa-p256).
        #[arg(long, short)]
        key: PathBuf,
        /// Image version, major.minor.revision[+build]; TS006 uses major.minor.revision.
        #[arg(long, short = 'v', value_name = "VERSION")]
        version: VersionArgument,
        /// Hardware version the image is for (decimal or 0x hex); devices of other
        /// hardware refuse it.
        #[arg(long, value_name = "HW", value_parser = parse_u32)]
        hardware_version: Option<u32>,
        /// Header size including padding (decimal or 0x hex); must match the
        /// application's link offset in the slot.
        #[arg(long, value_name = "BYTES", value_parser = parse_u16, default_value_t = DEFAULT_HEADER_SIZE)]
        header_size: u16,
        /// How the image names its signing key.
        #[arg(long, value_enum, default_value_t = PublicKeyFormat::Hash)]
        public_key_format: PublicKeyFormat,
        /// The firmware binary (raw, as objcopy -O binary writes it).
        input: PathBuf,
        /// Where to write the signed image.
        output: PathBuf,
    },
    /// Check a signed image against trusted public keys.
    Verify {
        /// Trusted public key(s) in PEM or DER; repeat for several.
        #[arg(long, short, required = true)]
        key: Vec<PathBuf>,
        /// Hardware version the image must be for.
        #[arg(long, value_name = "HW", value_parser = parse_u32)]
        hardware_version: Option<u32>,
        /// The image.
        image: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Image(ImageCommand::Sign {
            key,
            version,
            hardware_version,
            header_size,
            public_key_format,
            input,
            output,
        }) => {
            let mut spec = ImageSpec::new(version.0);
            spec.hardware_version = hardware_version;
            spec.header_size = header_size;
            spec.key_identification = match public_key_format {
                PublicKeyFormat::Hash => KeyIdentification::Hash,
                PublicKeyFormat::Full => KeyIdentification::Full,
            };
            image_sign(&key, &spec, &input, &output, cli.json)
        }
        Command::Image(ImageCommand::Verify {
            key,
            hardware_version,
            image,
        }) => image_verify(&key, hardware_version, &image, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("fuotactl: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// A command's failure: what to print and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn error(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: EXIT_ERROR,
        }
    }

    fn refused(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: EXIT_REFUSED,
        }
    }
}

fn image_sign(
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

fn image_verify(
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

fn print_json(value: &serde_json::Value) {
    println!("{value}");
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

fn parse_u32(text: &str) -> Result<u32, String> {
    parse_number(text).and_then(|value| {
        u32::try_from(value).map_err(|_| format!("{text} does not fit in 32 bits"))
    })
}

fn parse_u16(text: &str) -> Result<u16, String> {
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
