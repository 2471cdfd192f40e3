//! `fuotactl`: the technician's command line for the FUOTA agent.
//!
//! Most commands drive a running agent through its local API (`/run/fuota-agent/api.sock`,
//! open to root and the `fuota-agent` group): `status`, `device`, `image import|list|
//! show|remove`, `campaign` and `events`. `image sign` and `image verify` work without an
//! agent. Human output is aligned tables; `--json` prints the API's documents for
//! scripts.
//!
//! Exit codes: 0 success; 1 the request was examined and refused (a bad image, an
//! unknown device, a campaign in the wrong state), or `campaign watch` saw devices end
//! unsuccessful; 2 usage, key and file errors; 3 the agent cannot be reached or failed.

mod offline;
mod output;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use fuota_agent::api::client::ClientError;
use fuota_agent::firmware::signing::{VersionArgument, DEFAULT_HEADER_SIZE};
use fuota_agent::firmware::{ImageSpec, KeyIdentification};

/// Exit code when the input was examined and refused.
const EXIT_REFUSED: u8 = 1;
/// Exit code for usage, key and file errors.
const EXIT_ERROR: u8 = 2;
/// Exit code when the agent cannot be reached or failed.
const EXIT_UNAVAILABLE: u8 = 3;

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
    /// The agent's API socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "FUOTA_API_SOCKET",
        default_value = fuota_agent::config::DEFAULT_API_SOCKET
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The agent: version, uptime, devices, campaigns, traffic, duty-cycle use.
    Status,
    /// Registered devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Firmware images: sign and verify here, import into the agent's cache.
    #[command(subcommand)]
    Image(ImageCommand),
    /// FUOTA campaigns.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (fuotactl.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Manpages {
        /// The directory.
        directory: PathBuf,
    },
    /// The agent's event log (oldest first).
    Events {
        /// Only events after this id.
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this device's events.
        #[arg(long, value_name = "DEV_EUI")]
        device: Option<String>,
        /// Keep printing new events as they come (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// List the devices.
    List,
    /// Show one device.
    Show {
        /// DevEUI.
        dev_eui: String,
    },
    /// Register a device. Keys given here stay in the shell's history: prefer `import`
    /// from a protected file for real keys.
    Add(Box<DeviceArgs>),
    /// Register every device of a CSV file, all or none. Header row: dev_eui, join_eui,
    /// mac_version, and any of app_key, nwk_key, gen_app_key, class, hardware_version,
    /// firmware_version, tags (k=v;k=v).
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Remove a device (refused while an active campaign targets it).
    Remove {
        /// DevEUI.
        dev_eui: String,
    },
    /// Write the provisioning record of every device of an import CSV (the same file
    /// `import` takes): one 64-byte <DevEUI>.bin per device, for the STM32WL firmware's
    /// OTP area at 0x1FFF7000. Needs app_key and gen_app_key, and LoRaWAN 1.0.x. Works
    /// without the agent; all files or none.
    ProvisioningRecords {
        /// The CSV file.
        file: PathBuf,
        /// Where the records go (created if missing).
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct DeviceArgs {
    /// DevEUI (16 hexadecimal digits).
    #[arg(long)]
    dev_eui: String,
    /// JoinEUI (16 hexadecimal digits).
    #[arg(long)]
    join_eui: String,
    /// LoRaWAN version: 1.0.2, 1.0.3, 1.0.4 or 1.1.
    #[arg(long, default_value = "1.0.4")]
    mac_version: String,
    /// AppKey (32 hexadecimal digits).
    #[arg(long)]
    app_key: Option<String>,
    /// NwkKey (LoRaWAN 1.1).
    #[arg(long)]
    nwk_key: Option<String>,
    /// GenAppKey (TS005 multicast on 1.0.x).
    #[arg(long)]
    gen_app_key: Option<String>,
    /// Class: A, B or C.
    #[arg(long)]
    class: Option<String>,
    /// Hardware version (campaigns can target it).
    #[arg(long)]
    hardware_version: Option<String>,
    /// Firmware version, if known.
    #[arg(long)]
    firmware_version: Option<String>,
    /// A tag, key=value; repeat for several.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
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
        #[arg(long, value_name = "HW", value_parser = offline::parse_u32)]
        hardware_version: Option<u32>,
        /// Header size including padding (decimal or 0x hex); must match the
        /// application's link offset in the slot.
        #[arg(long, value_name = "BYTES", value_parser = offline::parse_u16, default_value_t = DEFAULT_HEADER_SIZE)]
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
        #[arg(long, value_name = "HW", value_parser = offline::parse_u32)]
        hardware_version: Option<u32>,
        /// The image.
        image: PathBuf,
    },
    /// Import a signed image into the agent's cache (verified against its trusted keys),
    /// from a file or from an https:// URL. A URL needs --sha256 and --size; the agent
    /// fetches it in the background (resuming and retrying as needed) and this command
    /// follows it until the image is in the cache (exit 0) or given up (exit 1).
    Import {
        /// The signed MCUboot image: a file, or an https:// URL.
        source: PathBuf,
        /// Name to file it under (default: the file's or the URL's name).
        #[arg(long)]
        name: Option<String>,
        /// URL only: the image's SHA-256; anything else is refused.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// URL only: the image's size in bytes; a longer body is refused.
        #[arg(long, value_name = "BYTES")]
        size: Option<u64>,
        /// URL only: queue the download and return at once (follow it with
        /// `fuotactl image download ID`).
        #[arg(long)]
        no_wait: bool,
    },
    /// Show an image download (from `fuotactl image import URL`).
    Download {
        /// The download's id.
        id: i64,
    },
    /// List the cached images.
    List,
    /// Show one cached image.
    Show {
        /// Its SHA-256.
        sha256: String,
    },
    /// Remove a cached image (refused while an active campaign uses it).
    Remove {
        /// Its SHA-256.
        sha256: String,
    },
}

#[derive(Debug, Subcommand)]
enum CampaignCommand {
    /// Create a campaign (it waits for `start`, or give --start).
    Create(CreateArgs),
    /// Start a created campaign.
    Start {
        /// Campaign id.
        id: i64,
    },
    /// Pause a running campaign (nothing is sent, no deadline runs).
    Pause {
        /// Campaign id.
        id: i64,
    },
    /// Resume a paused campaign.
    Resume {
        /// Campaign id.
        id: i64,
    },
    /// Cancel a campaign for good.
    Cancel {
        /// Campaign id.
        id: i64,
    },
    /// Show a campaign with every device's step and result.
    Show {
        /// Campaign id.
        id: i64,
    },
    /// List the campaigns.
    List,
    /// Follow a campaign live until it ends; exits 0 if every device succeeded.
    Watch {
        /// Campaign id.
        id: i64,
        /// Seconds between updates.
        #[arg(long, default_value_t = 2)]
        interval_s: u64,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// A name for people.
    #[arg(long)]
    name: String,
    /// The image: SHA-256 of a cached image (`fuotactl image list`).
    #[arg(long)]
    image: String,
    /// Target these devices (repeat, or comma-separated).
    #[arg(long = "device", value_name = "DEV_EUI", value_delimiter = ',', conflicts_with_all = ["hardware_version", "tag"])]
    devices: Vec<String>,
    /// Target every device of this hardware version.
    #[arg(long, conflicts_with = "tag")]
    hardware_version: Option<String>,
    /// Target every device with this tag.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
    tag: Option<(String, String)>,
    /// How the image travels: auto (unicast for one device, multicast otherwise),
    /// multicast or unicast.
    #[arg(long, default_value = "auto")]
    delivery: String,
    /// Data rate of the multicast frames (default: the region's).
    #[arg(long)]
    dr: Option<u8>,
    /// Fixed first-pass redundancy, percent (default: adaptive).
    #[arg(long, value_name = "PERCENT")]
    redundancy: Option<u16>,
    /// Loss to size the first pass and repairs for, percent (default 10).
    #[arg(long, value_name = "PERCENT")]
    expected_loss: Option<u8>,
    /// Start it at once.
    #[arg(long)]
    start: bool,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))?;
    if key.trim().is_empty() {
        return Err(format!("{text:?}: the key is empty"));
    }
    Ok((key.trim().to_string(), value.trim().to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
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
            offline::image_sign(&key, &spec, &input, &output, json)
        }
        Command::Image(ImageCommand::Verify {
            key,
            hardware_version,
            image,
        }) => offline::image_verify(&key, hardware_version, &image, json),
        Command::Device(DeviceCommand::ProvisioningRecords { file, output_dir }) => {
            offline::provisioning_records(&file, &output_dir, json)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fuotactl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpages { directory } => fuota_agent::manpages::write_all(
            <Cli as clap::CommandFactory>::command(),
            "1",
            &directory,
        )
        .map(|_| ())
        .map_err(|error| {
            Failure::error(format!(
                "writing man pages into {}: {error}",
                directory.display()
            ))
        }),
        command => remote::run(&cli.socket, json, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("fuotactl: {}", failure.message);
            }
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

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = if error.is_refusal() {
            EXIT_REFUSED
        } else {
            EXIT_UNAVAILABLE
        };
        Failure {
            message: error.to_string(),
            code,
        }
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}
