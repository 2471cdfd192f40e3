//! The `fuota-agent` daemon's command line: `run` (the service), `configfile` (print the
//! commented configuration template) and `check-config` (validate a configuration file
//! and say which key on which line is wrong).
//!
//! `run` opens the storage and the image cache, binds the packet-forwarder socket and the
//! local API's socket, and runs the core loop ([`fuota_agent::service`]): the edge
//! network server for the registered devices, the downlink scheduler per gateway, the
//! campaign engine, the events. The local API ([`fuota_agent::api`]) serves `fuotactl`
//! beside it until shutdown.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{debug, error, info, warn};

use fuota_agent::api::{ApiListener, MonitoringListener};
use fuota_agent::campaign::CampaignEngine;
use fuota_agent::clock::{Clock, SystemClock};
use fuota_agent::config::{self, Config, ConfigError};
use fuota_agent::firmware::{FirmwareCache, TrustStore};
use fuota_agent::lorawan::duty_cycle::DutyCycleConfig;
use fuota_agent::lorawan::region::{Region, RegionOptions};
use fuota_agent::lorawan::scheduler::SchedulerConfig;
use fuota_agent::network_server::{NetworkServerSettings, OwnershipIndex};
use fuota_agent::packet_forwarder::UdpPacketForwarder;
use fuota_agent::service::{Service, ServiceSettings};
use fuota_agent::simulator::{self, SimulationConfig, SimulationReport};
use fuota_agent::storage::image_downloads::DownloadStore;
use fuota_agent::storage::outbox::Outbox;
use fuota_agent::storage::{EventKind, NewEvent, Storage};
use fuota_agent::systemd::ServiceManager;
use fuota_agent::upstream::commands::CommandProcessor;
use fuota_agent::upstream::download::Downloader;
use fuota_agent::upstream::Publisher;

#[derive(Debug, Parser)]
#[command(
    name = "fuota-agent",
    version,
    about = "Gateway-resident LoRaWAN FUOTA agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the systemd service runs this).
    Run {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Print the commented configuration template (every option with its default).
    Configfile,
    /// Validate a configuration file; exits non-zero and names the wrong key and line.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Write the man pages (fuota-agent.8 and one per subcommand) into a directory.
    #[command(hide = true)]
    Manpages {
        /// The directory.
        directory: PathBuf,
    },
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Back up the agent (database and image cache) into a new directory, online.
    Backup {
        /// Configuration file (for the database and image cache paths).
        #[arg(long, short, value_name = "PATH", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The new directory to write the backup into.
        output: PathBuf,
    },
    /// Restore a backup made by `backup` (the agent must be stopped).
    Restore {
        /// Configuration file (for the database and image cache paths).
        #[arg(long, short, value_name = "PATH", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Replace an existing database (it is kept, renamed agent.db.replaced-<time>).
        #[arg(long)]
        force: bool,
        /// The backup directory.
        input: PathBuf,
    },
    /// Simulate a campaign on virtual time (a planning tool and our efficiency benchmark):
    /// the agent's own loop, simulated radio, nodes running the real node and boot code.
    Simulate(SimulateArgs),
    /// A full campaign on embedded defaults: 64 simulated STM32WL nodes with mixed loss,
    /// a generated key and image, on virtual time. Exits non-zero unless every node ends
    /// Successful, running and confirming the new version.
    Demo {
        /// Seed of the run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 64)]
    devices: usize,
    /// Packet loss per node, percent; a comma-separated list is spread over the nodes
    /// (e.g. 1,5,10,30).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    loss: Vec<u8>,
    /// Size of the new firmware's body, bytes.
    #[arg(long, default_value_t = 24 * 1024)]
    image_size: usize,
    /// Region: EU868, US915 (sub-band 2), AS923, AS923-2, AS923-3 or AS923-4.
    #[arg(long, default_value = "EU868")]
    region: String,
    /// Data rate of the multicast session (default: the plan's).
    #[arg(long)]
    dr: Option<u8>,
    /// Fixed first-pass redundancy, percent of the fragments (default: adaptive).
    #[arg(long, value_name = "PERCENT")]
    redundancy: Option<u16>,
    /// Seed: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds between the nodes' heartbeat uplinks.
    #[arg(long, default_value_t = 60)]
    heartbeat_s: u64,
    /// Step the gateway's system clock: AT_S:DELTA_S (e.g. 1800:3600, an hour forward
    /// half an hour in).
    #[arg(long, value_name = "AT_S:DELTA_S", value_parser = parse_clock_step)]
    clock_step: Option<(u64, i64)>,
    /// Bursty loss: frames are lost in bursts of this many on average (a two-state
    /// channel per node with the same long-run loss); default: independent losses.
    #[arg(long, value_name = "FRAMES")]
    burst_length: Option<u32>,
    /// Run the agent's production Semtech UDP transport on loopback, the simulated
    /// gateway talking to it over a real socket (slower; proves the UDP path).
    #[arg(long)]
    udp: bool,
    /// Run this many campaigns on the same nodes first, each to a newer version; the
    /// report is of the campaign after them, which plans its first pass with the loss
    /// the nodes showed in them.
    #[arg(long, value_name = "N", default_value_t = 0)]
    previous_campaigns: u32,
    /// Kill the agent (no clean shutdown) AT_S seconds into the run and start it again
    /// over the same database; may be repeated or comma-separated.
    #[arg(long, value_name = "AT_S", value_delimiter = ',')]
    restart_at: Vec<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_clock_step(text: &str) -> Result<(u64, i64), String> {
    let (at, delta) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected AT_S:DELTA_S, e.g. 1800:3600"))?;
    let at = at
        .parse()
        .map_err(|_| format!("{at:?}: seconds into the run, e.g. 1800"))?;
    let delta = delta
        .parse()
        .map_err(|_| format!("{delta:?}: seconds, negative for backwards, e.g. -3600"))?;
    Ok((at, delta))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Configfile => {
            print!("{}", config::TEMPLATE);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Manpages { directory } => {
            match fuota_agent::manpages::write_all(
                <Cli as clap::CommandFactory>::command(),
                "8",
                &directory,
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!(
                        "fuota-agent: writing man pages into {}: {error}",
                        directory.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fuota-agent",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Simulate(args) => simulate(&args),
        Command::Backup { config, output } => backup(&config, &output),
        Command::Restore {
            config,
            force,
            input,
        } => restore(&config, &input, force),
        Command::Demo { seed } => demo(seed),
        Command::Run { config } => {
            let config_path = config;
            let config = match Config::load(&config_path) {
                Ok(config) => config,
                Err(error) => return report_config_error(&error),
            };
            match run(config, config_path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    error!("{error:#}");
                    eprintln!("fuota-agent: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn backup(config_path: &Path, output: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(error) => return report_config_error(&error),
    };
    let now_ms = SystemClock::new().wall_now().unix_millis();
    match fuota_agent::backup::create(
        &config.storage.database,
        &config.firmware.cache_directory,
        output,
        now_ms,
    ) {
        Ok(manifest) => {
            println!(
                "backed up {} (schema {}) and {} images into {}",
                config.storage.database.display(),
                manifest.schema_version,
                manifest.images.len(),
                output.display()
            );
            println!("it holds device keys: keep it as safe as the gateway");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fuota-agent backup: {error}");
            ExitCode::FAILURE
        }
    }
}

fn restore(config_path: &Path, input: &Path, force: bool) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(error) => return report_config_error(&error),
    };
    let now_ms = SystemClock::new().wall_now().unix_millis();
    match fuota_agent::backup::restore(
        input,
        &config.storage.database,
        &config.firmware.cache_directory,
        &config.api.socket,
        force,
        now_ms,
    ) {
        Ok((manifest, replaced)) => {
            println!(
                "restored {} (schema {}, agent {}) and {} images from {}",
                config.storage.database.display(),
                manifest.schema_version,
                manifest.agent_version,
                manifest.images.len(),
                input.display()
            );
            if let Some(replaced) = replaced {
                println!("the database it replaced is kept as {}", replaced.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fuota-agent restore: {error}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(args: &SimulateArgs) -> ExitCode {
    // The agent's own logs, on request (RUST_LOG=debug shows every decision).
    if let Ok(directives) = std::env::var("RUST_LOG") {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_new(&directives) {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
    let region: fuota_agent::lorawan::region::RegionName = match args.region.parse() {
        Ok(region) => region,
        Err(error) => {
            eprintln!(
                "error: --region {}: {error} (EU868, US915, AS923, AS923-2, AS923-3, AS923-4)",
                args.region
            );
            return ExitCode::from(2);
        }
    };
    let config = SimulationConfig {
        devices: args.devices,
        loss_percent: args.loss.clone(),
        image_size: args.image_size,
        region,
        data_rate: args.dr,
        fixed_redundancy_percent: args.redundancy,
        clock_step: args.clock_step,
        seed: args.seed,
        heartbeat_s: args.heartbeat_s,
        udp: args.udp,
        burst_length: args.burst_length,
        previous_campaigns: args.previous_campaigns,
        agent_restarts: args.restart_at.clone(),
        ..SimulationConfig::default()
    };
    match simulator::simulate(&config, &mut |_| {}) {
        Ok(report) => {
            if args.json {
                println!("{}", report_json(&report));
            } else {
                print_report(&report);
            }
            if report.finished {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn demo(seed: u64) -> ExitCode {
    let config = SimulationConfig {
        seed,
        ..SimulationConfig::default()
    };
    println!(
        "fuota-agent demo: {} simulated STM32WL nodes (loss {:?} %), a {} KiB image signed \
         with a generated key, one multicast campaign on virtual time.",
        config.devices,
        config.loss_percent,
        config.image_size / 1024
    );
    let mut last_drawn: Option<(usize, usize, u64)> = None;
    let mut draw = |progress: &simulator::Progress| {
        // A line when a count changes, or every half hour of virtual time.
        let key = (
            progress.nodes_complete,
            progress.nodes_updated,
            progress.elapsed_s,
        );
        if let Some((complete, updated, at)) = last_drawn {
            if complete == key.0 && updated == key.1 && progress.elapsed_s < at + 1_800 {
                return;
            }
        }
        last_drawn = Some(key);
        let width = 30;
        let filled = |count: usize| count * width / progress.nodes.max(1);
        let bar = |count: usize| {
            let filled = filled(count);
            format!("{}{}", "#".repeat(filled), ".".repeat(width - filled))
        };
        println!(
            "  {:>5} min  downloading {:>3} ({:>3.0} %)  complete [{}] {:>3}  updated [{}] {:>3}/{}",
            progress.elapsed_s / 60,
            progress.nodes_downloading,
            progress.average_received * 100.0,
            bar(progress.nodes_complete),
            progress.nodes_complete,
            bar(progress.nodes_updated),
            progress.nodes_updated,
            progress.nodes
        );
    };
    match simulator::simulate(&config, &mut draw) {
        Ok(report) => {
            print_report(&report);
            let successful = report
                .results
                .get(&fuota_agent::campaign::DeviceStatus::Successful)
                .copied()
                .unwrap_or(0);
            if report.finished
                && successful == report.nodes
                && report.nodes_confirmed == report.nodes
            {
                println!("demo: every node is Successful and runs the new version, confirmed.");
                ExitCode::SUCCESS
            } else {
                println!(
                    "demo FAILED: {successful} of {} nodes Successful, {} confirmed",
                    report.nodes, report.nodes_confirmed
                );
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn print_report(report: &SimulationReport) {
    let hours = |seconds: f64| format!("{:.0} min ({seconds:.0} s)", seconds / 60.0);
    println!(
        "campaign:            {}",
        if report.finished {
            "finished"
        } else {
            "NOT finished within the time limit"
        }
    );
    for (n, earlier) in report.previous_campaigns.iter().enumerate() {
        println!(
            "earlier campaign {}:  {} multicast frames (first pass {} + {} coded, {} repair \
             round(s)), {} Successful",
            n + 1,
            earlier.multicast_frames,
            report.fragments,
            earlier.first_pass_coded,
            earlier.repair_rounds,
            earlier.successful
        );
    }
    println!("duration (virtual):  {}", hours(report.duration_s));
    println!(
        "image:               {} fragments of {} bytes, multicast at DR{}",
        report.fragments, report.fragment_size, report.data_rate
    );
    println!(
        "multicast frames:    {} ({:.1} s of airtime; duty-cycle floor at {} %: {})",
        report.multicast_frames,
        report.multicast_airtime_s,
        report.duty_cycle_percent,
        hours(report.duty_cycle_floor_s)
    );
    println!(
        "rounds:              first pass {} + {} coded, {} repair round(s), {} Class C session(s)",
        report.fragments, report.first_pass_coded, report.repair_rounds, report.sessions
    );
    println!(
        "downlinks in all:    {} ({:.1} s of airtime); uplinks: {}",
        report.downlinks, report.downlink_airtime_s, report.uplinks
    );
    let results: Vec<String> = report
        .results
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    println!("results:             {}", results.join(", "));
    for device in &report.unsuccessful {
        println!(
            "  {} {} in step {} (loss {} %, missing {:?}){}",
            device.dev_eui,
            device.status,
            device.step,
            device.loss_percent,
            device.missing,
            device
                .last_error
                .as_deref()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        );
    }
    if report.agent_restarts > 0 || report.clock_steps > 0 {
        println!(
            "agent restarts:      {}; clock steps noticed: {}; FCnts reused: {}",
            report.agent_restarts, report.clock_steps, report.reused_fcnts
        );
    }
    println!(
        "nodes confirmed on the new version: {}/{}",
        report.nodes_confirmed, report.nodes
    );
}

fn report_json(report: &SimulationReport) -> serde_json::Value {
    serde_json::json!({
        "finished": report.finished,
        "duration_s": report.duration_s,
        "results": report.results.iter().map(|(status, count)| (status.to_string(), *count)).collect::<std::collections::BTreeMap<_, _>>(),
        "nodes": report.nodes,
        "nodes_confirmed": report.nodes_confirmed,
        "fragments": report.fragments,
        "fragment_size": report.fragment_size,
        "data_rate": report.data_rate,
        "multicast_frames": report.multicast_frames,
        "multicast_airtime_s": report.multicast_airtime_s,
        "duty_cycle_percent": report.duty_cycle_percent,
        "duty_cycle_floor_s": report.duty_cycle_floor_s,
        "downlinks": report.downlinks,
        "downlink_airtime_s": report.downlink_airtime_s,
        "uplinks": report.uplinks,
        "clock_steps": report.clock_steps,
        "first_pass_coded": report.first_pass_coded,
        "repair_rounds": report.repair_rounds,
        "sessions": report.sessions,
        "previous_campaigns": report.previous_campaigns.iter().map(|earlier| serde_json::json!({
            "multicast_frames": earlier.multicast_frames,
            "first_pass_coded": earlier.first_pass_coded,
            "repair_rounds": earlier.repair_rounds,
            "successful": earlier.successful,
        })).collect::<Vec<_>>(),
        "agent_restarts": report.agent_restarts,
        "reused_fcnts": report.reused_fcnts,
    })
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            // The files [mqtt] names (password, TLS) are read as the agent would.
            if let Some(mqtt) = &config.mqtt {
                if let Err(error) = fuota_agent::upstream::connection_options(mqtt) {
                    eprintln!("{}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            println!("{}: configuration is valid", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => report_config_error(&error),
    }
}

fn report_config_error(error: &ConfigError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

/// Changes the log filter of the running agent (SIGHUP).
type LogFilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Installs the logger: the journal under systemd (JOURNAL_STREAM set and the journal
/// reachable), stderr otherwise. RUST_LOG, when set, overrides `[logging] level` (and
/// then a reload does not change it: the returned handle is `None`).
fn init_logging(config: &config::LoggingConfig) -> anyhow::Result<Option<LogFilterHandle>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_environment = std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| !directives.is_empty());
    let filter = match &from_environment {
        Some(directives) => tracing_subscriber::EnvFilter::try_new(directives)
            .with_context(|| format!("invalid RUST_LOG {directives:?}"))?,
        None => tracing_subscriber::EnvFilter::try_new(&config.level)
            .with_context(|| format!("invalid logging.level {:?}", config.level))?,
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // systemd sets JOURNAL_STREAM when stderr goes to the journal: write to the journal
    // itself then, with each event's fields as journal fields.
    let journal = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let installed = match journal {
        Some(journal) => registry.with(journal).try_init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))?;
    Ok(from_environment.is_none().then_some(handle))
}

fn run(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    let log_filter = init_logging(&config.logging)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, config_path, log_filter))
}

async fn serve(
    config: Config,
    config_path: PathBuf,
    log_filter: Option<LogFilterHandle>,
) -> anyhow::Result<()> {
    let clock = Arc::new(SystemClock::new());
    let wall = clock.wall_now();
    if !wall.is_plausible() {
        warn!(%wall, "the system clock looks wrong (before 2025); event times will be off until it is set");
    }

    let database = &config.storage.database;
    let mut storage = Storage::open(database)
        .with_context(|| format!("cannot open the database {}", database.display()))?;
    storage
        .append_event(
            &NewEvent::new(wall, EventKind::AgentStarted)
                .payload(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })),
        )
        .context("cannot record the start event")?;
    info!(database = %database.display(), "storage open");

    let ownership = OwnershipIndex::load(&storage).context("cannot load the device registry")?;
    let transport = UdpPacketForwarder::bind_with_upstreams(
        &config.packet_forwarder,
        config.upstreams.clone(),
        Arc::new(ownership.clone()),
        clock.clone(),
    )
    .await?;
    let lorawan = &config.lorawan;
    let settings = ServiceSettings {
        region: Region::new(lorawan.region, RegionOptions::default()),
        network_server: NetworkServerSettings {
            net_id: lorawan.net_id,
            dev_addr_prefix: lorawan.dev_addr_prefix,
            dev_addr_prefix_len: lorawan.dev_addr_prefix_len,
            rx1_dr_offset: lorawan.rx1_dr_offset,
            rx1_delay_s: lorawan.rx1_delay_s,
            ..NetworkServerSettings::default()
        },
        scheduler: SchedulerConfig {
            tx_ack_timeout_us: u64::try_from(config.packet_forwarder.tx_ack_timeout.as_micros())
                .unwrap_or(u64::MAX),
            ..SchedulerConfig::default()
        },
        duty_cycle: DutyCycleConfig::default(),
        tx_power_dbm: None,
    };
    let firmware = &config.firmware;
    let trust = TrustStore::load(&firmware.trusted_keys)
        .context("cannot load the trusted keys ([firmware] trusted_keys)")?;
    if trust.is_empty() {
        warn!("no trusted keys are configured ([firmware] trusted_keys): every image import will be refused");
    }
    let cache = FirmwareCache::open(&firmware.cache_directory, trust).with_context(|| {
        format!(
            "cannot open the image cache {}",
            firmware.cache_directory.display()
        )
    })?;
    let engine = CampaignEngine::load(
        &storage,
        Region::new(lorawan.region, RegionOptions::default()),
        cache,
    )
    .context("cannot load the campaigns")?;
    let api = ApiListener::bind(&config.api).context("cannot start the local API")?;
    let api_reader = Storage::open_reader(database).with_context(|| {
        format!(
            "cannot open the database {} for reading",
            database.display()
        )
    })?;
    let (service, handle, mut notifications) =
        Service::with_ownership(settings, storage, ownership, transport, clock.clone())
            .context("cannot load the device registry")?;
    let mut service = service.with_campaigns(engine);
    // Upstream sync: a publisher on its own database connection, beside the core loop.
    let (upstream_stop, upstream_stopped) = tokio::sync::watch::channel(false);
    let mut upstream_tasks = Vec::new();
    // Image downloads over https, for `fuotactl image import URL` and for images the
    // backend announces: fetched in the background and verified like a local import.
    let store = DownloadStore::open(database)
        .with_context(|| format!("cannot open the downloads in {}", database.display()))?;
    let downloader = Downloader::new(
        store,
        &config.firmware.cache_directory,
        config.firmware.download_ca_file.as_deref(),
        handle.clone(),
    )
    .context("cannot start image downloads")?;
    let downloads = downloader.queue();
    upstream_tasks.push(tokio::spawn(
        downloader.run(stopped(upstream_stopped.clone())),
    ));
    let upstream_status = match &config.mqtt {
        None => None,
        Some(mqtt) => {
            let outbox = Outbox::open(database)
                .with_context(|| format!("cannot open the outbox in {}", database.display()))?;
            let mut publisher =
                Publisher::new(mqtt, outbox).context("cannot start upstream sync ([mqtt])")?;
            if mqtt.accept_commands {
                let reader = Storage::open_reader(database).with_context(|| {
                    format!(
                        "cannot open the database {} for reading",
                        database.display()
                    )
                })?;
                publisher = publisher.with_commands(
                    CommandProcessor::new(handle.clone(), reader).with_downloads(downloads.clone()),
                );
            }
            let status = publisher.status();
            info!(broker = %mqtt.broker, topic_prefix = %mqtt.topic_prefix, "upstream sync on");
            upstream_tasks.push(tokio::spawn(publisher.run(stopped(upstream_stopped))));
            Some(status)
        }
    };
    let api = match &upstream_status {
        Some(status) => api.with_upstream(status.clone()),
        None => api,
    }
    .with_downloads(downloads);
    // The campaign engine runs inside the loop; what else reaches the application layer
    // is logged.
    tokio::spawn(async move {
        while let Some(notification) = notifications.recv().await {
            debug!(?notification, "for the application layer");
        }
    });
    info!(socket = %api.path().display(), "local API listening");
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    tokio::spawn(reload_on_hangup(
        hangups,
        config_path,
        config.clone(),
        handle.clone(),
        log_filter,
    ));
    let (monitoring_stop, monitoring_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(address) = config.api.metrics_listen {
        let listener = MonitoringListener::bind(address)
            .await
            .context("cannot start the metrics listener ([api] metrics_listen)")?;
        let reader = Storage::open_reader(database).with_context(|| {
            format!(
                "cannot open the database {} for reading",
                database.display()
            )
        })?;
        let listener = match &upstream_status {
            Some(status) => listener.with_upstream(status.clone()),
            None => listener,
        };
        info!(%address, "metrics listener: GET /metrics, GET /v1/status");
        tokio::spawn(listener.serve(handle.clone(), reader, async move {
            let _ = monitoring_stopped.await;
        }));
    }
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(api.serve(handle, api_reader, async move {
        let _ = api_stopped.await;
    }));

    let manager = ServiceManager::from_environment();
    service.set_heartbeat(Box::new(move || manager.watchdog()));
    info!(version = env!("CARGO_PKG_VERSION"), region = %lorawan.region.as_str(), "fuota-agent running");
    manager.ready(&format!(
        "serving packet forwarders on {}",
        config.packet_forwarder.bind
    ));
    // STATUS= for `systemctl status`: devices and campaign progress, when it changes.
    match Storage::open_reader(database) {
        Ok(reader) => {
            tokio::spawn(async move {
                let mut last = String::new();
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    every.tick().await;
                    match fuota_agent::systemd::status_line(&reader) {
                        Ok(line) if line != last => {
                            manager.status(&line);
                            last = line;
                        }
                        Ok(_) => {}
                        Err(error) => debug!("status line: {error}"),
                    }
                }
            });
        }
        Err(error) => warn!("no status line for systemd: {error}"),
    }
    let shutdown = async {
        let signal = shutdown_signal().await;
        info!("{signal}: shutting down");
    };
    let result = service.run(shutdown).await;
    manager.stopping();
    let _ = api_stop.send(());
    let _ = monitoring_stop.send(());
    let _ = api_task.await;
    let _ = upstream_stop.send(true);
    for task in upstream_tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
    }
    let mut storage = result?;
    storage
        .append_event(&NewEvent::new(clock.wall_now(), EventKind::AgentStopped))
        .context("cannot record the stop event")?;
    storage
        .shutdown()
        .context("cannot close the database cleanly")?;
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// On every SIGHUP (`systemctl reload fuota-agent`): reads the configuration again and
/// applies what can change while running (log level, trusted keys); a file with
/// mistakes is refused and the running configuration stays.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    path: PathBuf,
    mut running: Config,
    service: fuota_agent::service::ServiceHandle,
    log_filter: Option<LogFilterHandle>,
) {
    use fuota_agent::config::reload::ReloadPlan;
    use fuota_agent::service::operations::Operation;
    use fuota_agent::service::ServiceCommand;
    while hangups.recv().await.is_some() {
        let reloaded = match Config::load(&path) {
            Ok(config) => config,
            Err(error) => {
                error!("SIGHUP: {error}; the running configuration stays");
                continue;
            }
        };
        let plan = ReloadPlan::between(&running, &reloaded);
        let mut applied = Vec::new();
        if let Some(level) = &plan.log_level {
            match (&log_filter, tracing_subscriber::EnvFilter::try_new(level)) {
                (Some(handle), Ok(filter)) => match handle.reload(filter) {
                    Ok(()) => applied.push(format!("log level {level:?}")),
                    Err(error) => error!("SIGHUP: changing the log level: {error}"),
                },
                (None, _) => warn!("SIGHUP: RUST_LOG is set, so [logging] level does not apply"),
                (_, Err(error)) => error!("SIGHUP: log level {level:?}: {error}"),
            }
        }
        let mut plan = plan;
        if let Some(keys) = plan.trusted_keys.clone() {
            match TrustStore::load(&keys) {
                Ok(trust) => {
                    let count = trust.keys().len();
                    let (reply, done) = tokio::sync::oneshot::channel();
                    let sent = service
                        .send(ServiceCommand::Operation(Operation::ReplaceTrustStore(
                            trust, reply,
                        )))
                        .await;
                    if sent && done.await.is_ok() {
                        applied.push(format!("{count} trusted keys"));
                    } else {
                        plan.trusted_keys = None;
                    }
                }
                Err(error) => {
                    error!("SIGHUP: [firmware] trusted_keys: {error}; the running keys stay");
                    plan.trusted_keys = None;
                }
            }
        }
        running = plan.applied_to(&running);
        if applied.is_empty() {
            info!("SIGHUP: configuration reloaded, nothing to apply");
        } else {
            info!("SIGHUP: configuration reloaded: {}", applied.join(", "));
        }
        if !plan.needs_restart.is_empty() {
            warn!(
                "SIGHUP: {} changed and take effect at the next restart (systemctl restart fuota-agent)",
                plan.needs_restart.join(", ")
            );
        }
    }
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C), naming the signal.
async fn shutdown_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => "SIGTERM",
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => "SIGINT",
            Err(error) => {
                warn!(%error, "cannot listen for SIGINT");
                std::future::pending::<&'static str>().await
            }
        },
    }
}
