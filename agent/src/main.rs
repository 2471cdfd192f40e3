//! The `fuota-agent` daemon's command line: `run` (the service), `configfile` (print the
//! commented configuration template) and `check-config` (validate a configuration file
//! and say which key on which line is wrong).
//!
//! For now `run` opens the storage, binds the packet-forwarder socket, acknowledges the
//! gateways and records each uplink as an event; the network server and the campaign
//! engine plug into the same loop later.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use fuota_agent::clock::{Clock, ClockStep, SystemClock};
use fuota_agent::config::{self, Config, ConfigError};
use fuota_agent::packet_forwarder::{GatewayEvent, Transport, UdpPacketForwarder, Uplink};
use fuota_agent::storage::{EventKind, NewEvent, Storage};

/// How often the main loop checks the wall clock for steps.
const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Configfile => {
            print!("{}", config::TEMPLATE);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(config) => config,
                Err(error) => return report_config_error(&error),
            };
            match run(config) {
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

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_) => {
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

fn init_logging(config: &config::LoggingConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&directives)
                .with_context(|| format!("invalid RUST_LOG {directives:?}"))?
        }
        _ => tracing_subscriber::EnvFilter::try_new(&config.level)
            .with_context(|| format!("invalid logging.level {:?}", config.level))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config.logging)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
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

    let mut transport = UdpPacketForwarder::bind(&config.packet_forwarder, clock.clone()).await?;
    let mut clock_check = tokio::time::interval(CLOCK_CHECK_INTERVAL);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    info!(version = env!("CARGO_PKG_VERSION"), "fuota-agent running");
    loop {
        tokio::select! {
            event = transport.recv() => {
                let Some(event) = event else {
                    bail!("the packet-forwarder link stopped");
                };
                record_gateway_event(&mut storage, clock.as_ref(), event);
            }
            _ = clock_check.tick() => {
                if let Some(step) = clock.check_for_step() {
                    record_clock_step(&mut storage, step);
                }
            }
            signal = &mut shutdown => {
                info!("{signal}: shutting down");
                break;
            }
        }
    }

    let counters = transport.counters();
    info!(?counters, "packet-forwarder counters at shutdown");
    drop(transport);
    storage
        .append_event(&NewEvent::new(clock.wall_now(), EventKind::AgentStopped))
        .context("cannot record the stop event")?;
    storage
        .shutdown()
        .context("cannot close the database cleanly")?;
    Ok(())
}

fn record_gateway_event(storage: &mut Storage, clock: &dyn Clock, event: GatewayEvent) {
    let time = clock.wall_now();
    let new_event = match event {
        GatewayEvent::Uplink(uplink) => {
            info!(gateway = %uplink.gateway, rxpk = %uplink.rxpk, "uplink");
            uplink_event(time, &uplink)
        }
        GatewayEvent::GatewayConnected { gateway, address } => {
            NewEvent::new(time, EventKind::GatewayConnected)
                .gateway(gateway)
                .payload(serde_json::json!({ "address": address.to_string() }))
        }
        GatewayEvent::Stats { gateway, stat } => {
            tracing::debug!(%gateway, ?stat, "gateway status");
            return;
        }
    };
    if let Err(error) = storage.append_event(&new_event) {
        error!("cannot record a {} event: {error}", new_event.kind);
    }
}

fn uplink_event(time: fuota_agent::clock::WallTime, uplink: &Uplink) -> NewEvent {
    let rxpk = &uplink.rxpk;
    let phy_payload: String = rxpk
        .data()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    NewEvent::new(time, EventKind::Uplink)
        .gateway(uplink.gateway)
        .payload(serde_json::json!({
            "tmst": rxpk.timestamp(),
            "gps_time_ms": uplink.gps_time_ms,
            "frequency_mhz": rxpk.frequency(),
            "data_rate": rxpk.datarate().to_string(),
            "rssi_dbm": rxpk.signal_rssi().unwrap_or_else(|| rxpk.channel_rssi()),
            "snr_db": rxpk.snr(),
            "phy_payload": phy_payload,
        }))
}

fn record_clock_step(storage: &mut Storage, step: ClockStep) {
    warn!(
        delta_ms = step.delta_micros / 1_000,
        before = %step.before,
        after = %step.after,
        "the system wall clock stepped; re-anchored"
    );
    let event = NewEvent::new(step.after, EventKind::ClockStep).payload(serde_json::json!({
        "before_unix_us": step.before.unix_micros(),
        "after_unix_us": step.after.unix_micros(),
        "delta_us": step.delta_micros,
        "after_plausible": step.after.is_plausible(),
    }));
    if let Err(error) = storage.append_event(&event) {
        error!("cannot record a clock step event: {error}");
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
