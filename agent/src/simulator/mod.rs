//! The deterministic simulator: the agent's own service loop, network server and
//! campaign engine over a simulated packet forwarder ([`air`]) on virtual time
//! ([`VirtualClock`] on tokio's paused clock), serving simulated STM32WL nodes
//! ([`node`]) that run the real node core and bootloader on simulated flash. Same
//! configuration and seed, same run; hours of campaign take seconds.
//!
//! [`simulate`] builds everything in a temporary directory (database, image cache, a
//! signing key derived from the seed, a factory image and the target image), registers
//! the nodes with ABP sessions, runs one campaign to its end and reports what it cost.
//! On request it runs earlier campaigns on the same nodes first (the reported one then
//! plans with the history they left), and kills and restarts the agent at given times
//! (a new process over the same database, whose wall clock is the system's).
//!
//! Debugging a run: `FUOTA_SIM_TRACE=<DevEUI>` prints that node's uplinks and downlinks,
//! `FUOTA_SIM_TRACE_AIR=1` every transmission, `RUST_LOG=debug` the agent's decisions.

pub mod air;
pub mod node;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::campaign::{
    CampaignEngine, CampaignSpec, DeliveryChoice, DeviceStatus, ParameterOverrides, Targets,
};
use crate::clock::{Clock, VirtualClock, WallTime};
use crate::firmware::signing::{ImageSigner, ImageSpec};
use crate::firmware::trust::{parse_public_key, TrustStore, TrustStoreEntry};
use crate::firmware::FirmwareCache;
use crate::identifiers::{AesKey, DevAddr, DevEui, GatewayEui, JoinEui};
use crate::lorawan::duty_cycle::DutyCycleConfig;
use crate::lorawan::region::{Region, RegionName, RegionOptions, RxWindow};
use crate::lorawan::scheduler::SchedulerConfig;
use crate::network_server::NetworkServerSettings;
use crate::packet_forwarder::GatewayEvent;
use crate::service::campaigns::CampaignRequest;
use crate::service::{
    Service, ServiceCommand, ServiceError, ServiceHandle, ServiceNotification, ServiceSettings,
};
use crate::storage::{Device, DeviceSession, MacVersion, Storage};
use lorawan_fuota::image::ImageVersion;
use node::{NodeIdentity, SimNode};

/// The hardware version of the simulated nodes (TS006).
pub const HARDWARE_VERSION: u32 = 0x0001_0203;
/// The simulated nodes' hardware version as the registry writes it (campaign targets).
pub const HARDWARE_NAME: &str = "stm32wl55-sim";
/// Virtual start: 2026-06-01T00:00:00Z.
const START_UNIX_S: i64 = 1_780_272_000;
/// RX2 data rate of the simulated EU868 network (DR3, SF9).
const SIMULATED_RX2_DATA_RATE: u8 = 3;
/// The simulated gateway.
const GATEWAY: u64 = 0x0016_c001_ff10_0001;
/// The 125 kHz uplink channels the nodes hop over: the region's default channels
/// (US915: sub-band 2, channels 8 to 15, as most US915 gateways are set up).
fn uplink_channels(region: &Region) -> Vec<u32> {
    let channels = if region.name() == RegionName::Us915 {
        region.sub_band_channels(2).unwrap_or_default()
    } else {
        region.default_uplink_channels()
    };
    channels
        .into_iter()
        .filter(|channel| channel.min_dr == 0)
        .map(|channel| channel.frequency_hz)
        .collect()
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// Number of nodes.
    pub devices: usize,
    /// Packet loss of each node, percent, both directions: the list is repeated over
    /// the nodes (one value: every node the same).
    pub loss_percent: Vec<u8>,
    /// Size of the new firmware's body, bytes.
    pub image_size: usize,
    /// The region.
    pub region: RegionName,
    /// Data rate of the multicast session (`None`: the plan's choice).
    pub data_rate: Option<u8>,
    /// First-pass redundancy fixed at this percentage (`None`: adaptive, the default).
    pub fixed_redundancy_percent: Option<u16>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Seconds between a node's heartbeat uplinks (the chances the agent has to send it
    /// a unicast request).
    pub heartbeat_s: u64,
    /// Give up after this much virtual time, s.
    pub time_limit_s: u64,
    /// The gateway's system wall clock steps by `.1` seconds `.0` seconds into the run
    /// (NTP correcting an offline gateway's clock when the backhaul returns).
    pub clock_step: Option<(u64, i64)>,
    /// Bursty loss: frames are lost in bursts of this many frames on average (a
    /// Gilbert-Elliott channel per node whose long-run loss is the node's percentage);
    /// `None`: each frame is lost independently.
    pub burst_length: Option<u32>,
    /// Run the agent's production Semtech UDP transport on loopback, the simulated
    /// gateway at the other end of a real socket (the default is in memory).
    pub udp: bool,
    /// Create and start the campaign with this `create_campaign` command from the fleet
    /// backend (the JSON an MQTT message carries), through the agent's upstream command
    /// processor, instead of directly. `{image_sha256}` in it stands for the simulated
    /// image's SHA-256 (which the backend knows from announcing the image).
    pub campaign_command: Option<String>,
    /// Campaigns run on the same nodes before the reported one, each to a newer version
    /// (the first one through `campaign_command` when given): the reported campaign
    /// plans with the history they left, as a gateway's next campaign does.
    pub previous_campaigns: u32,
    /// Seconds into the run at which the agent is killed (no clean shutdown: the network
    /// server's queues are lost) and started again over the same database, as a new
    /// process whose wall clock is the system's.
    pub agent_restarts: Vec<u64>,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            devices: 64,
            loss_percent: vec![0, 5, 10, 20, 30],
            image_size: 24 * 1024,
            region: RegionName::Eu868,
            data_rate: None,
            fixed_redundancy_percent: None,
            seed: 1,
            heartbeat_s: 60,
            time_limit_s: 48 * 3600,
            clock_step: None,
            burst_length: None,
            udp: false,
            campaign_command: None,
            previous_campaigns: 0,
            agent_restarts: Vec::new(),
        }
    }
}

/// What a simulation cost and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationReport {
    /// Whether the campaign finished within the time limit.
    pub finished: bool,
    /// Virtual time from start to the end of the campaign, s.
    pub duration_s: f64,
    /// Devices per result.
    pub results: BTreeMap<DeviceStatus, usize>,
    /// Nodes running the new version, confirmed (boot state idle), and still starting it
    /// after one more reset.
    pub nodes_confirmed: usize,
    /// Nodes.
    pub nodes: usize,
    /// Downlinks transmitted (unicast and multicast).
    pub downlinks: u64,
    /// Multicast frames transmitted.
    pub multicast_frames: u64,
    /// Airtime of the multicast frames, s.
    pub multicast_airtime_s: f64,
    /// Airtime of every downlink, s.
    pub downlink_airtime_s: f64,
    /// The time the multicast frames need at least under the band's duty cycle, s.
    pub duty_cycle_floor_s: f64,
    /// The band's duty cycle, percent.
    pub duty_cycle_percent: f64,
    /// Fragments in the image (NbFrag) and the fragment size.
    pub fragments: u16,
    /// Coded fragments of the first pass.
    pub first_pass_coded: u16,
    /// Repair rounds after the first pass.
    pub repair_rounds: u32,
    /// Class C sessions.
    pub sessions: u32,
    /// FragSize, bytes.
    pub fragment_size: u16,
    /// Uplinks the nodes sent (lost ones included).
    pub uplinks: u64,
    /// The multicast data rate.
    pub data_rate: u8,
    /// Devices that did not end Successful: DevEUI, result, the step they were in, the
    /// last error, and their loss.
    pub unsuccessful: Vec<UnsuccessfulDevice>,
    /// Steps of the system clock the agent noticed and recorded.
    pub clock_steps: usize,
    /// The campaigns run before the reported one (`previous_campaigns`).
    pub previous_campaigns: Vec<EarlierCampaign>,
    /// Times the agent was killed and started again.
    pub agent_restarts: u32,
    /// Data downlinks that went on the air with a DevAddr and FCnt already used
    /// (unicast or multicast, the whole run): always 0.
    pub reused_fcnts: u64,
}

/// What a campaign before the reported one cost.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierCampaign {
    /// Multicast frames transmitted.
    pub multicast_frames: u64,
    /// Coded fragments of its first pass.
    pub first_pass_coded: u16,
    /// Repair rounds after the first pass.
    pub repair_rounds: u32,
    /// Devices that ended Successful.
    pub successful: usize,
}

/// A device that did not end Successful, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsuccessfulDevice {
    /// The device.
    pub dev_eui: DevEui,
    /// Its result.
    pub status: DeviceStatus,
    /// The step it ended in.
    pub step: String,
    /// Its last error, if any.
    pub last_error: Option<String>,
    /// Missing fragments it last reported.
    pub missing: Option<u32>,
    /// Its simulated loss, percent.
    pub loss_percent: u8,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    /// A setting is out of range.
    #[error("invalid simulation setting: {0}")]
    Invalid(String),
    /// Setting up failed (database, images, nodes).
    #[error("setting up the simulation: {0}")]
    Setup(String),
    /// The agent failed while running.
    #[error("the agent stopped: {0}")]
    Agent(String),
}

fn setup<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> SimulationError {
    move |error| SimulationError::Setup(format!("{what}: {error}"))
}

/// Progress while the simulation runs (the demo draws it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Virtual seconds since the start.
    pub elapsed_s: u64,
    /// Nodes with the whole image.
    pub nodes_complete: usize,
    /// Nodes downloading, and the fraction of the image they have on average.
    pub nodes_downloading: usize,
    /// Average fraction received by downloading nodes.
    pub average_received: f64,
    /// Nodes running the new version.
    pub nodes_updated: usize,
    /// Nodes.
    pub nodes: usize,
}

/// Runs a campaign in simulation; `progress` is called about once a virtual minute.
pub fn simulate(
    config: &SimulationConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SimulationReport, SimulationError> {
    if config.devices == 0 || config.devices > 10_000 {
        return Err(SimulationError::Invalid(format!(
            "--devices {} (1 to 10000)",
            config.devices
        )));
    }
    if config.loss_percent.is_empty() || config.loss_percent.iter().any(|&l| l > 95) {
        return Err(SimulationError::Invalid(
            "--loss: percentages from 0 to 95".into(),
        ));
    }
    if config
        .burst_length
        .is_some_and(|length| !(1..=1000).contains(&length))
    {
        return Err(SimulationError::Invalid(
            "--burst-length: 1 to 1000 frames".into(),
        ));
    }
    if config.previous_campaigns > 20 {
        return Err(SimulationError::Invalid(format!(
            "--previous-campaigns {} (0 to 20)",
            config.previous_campaigns
        )));
    }
    if config.udp && !config.agent_restarts.is_empty() {
        return Err(SimulationError::Invalid(
            "--restart-at runs on the in-memory link only (not with --udp)".into(),
        ));
    }
    if config.image_size == 0 || config.image_size > 90 * 1024 {
        return Err(SimulationError::Invalid(format!(
            "--image-size {} (1 to 92160 bytes: the node's slot)",
            config.image_size
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(setup("tokio runtime"))?;
    runtime.block_on(run(config, progress))
}

/// splitmix64 over the seed: the channel's and the images' randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn percent_below(&mut self, percent: u8) -> bool {
        self.next() % 100 < u64::from(percent)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// After an uplink, RX1 (1 s) and RX2 (2 s) are over by this time, µs.
const RX_WINDOWS_CLOSED_US: u64 = 2_200_000;

/// Each node is stepped once a second, in its own slot of the second (its uplinks do
/// not all start at the same microsecond, as real nodes' do not).
const SLOTS_PER_SECOND: u64 = 20;
const SLOT: Duration = Duration::from_millis(1_000 / SLOTS_PER_SECOND);

/// A node's radio channel: independent losses, or a two-state (Gilbert-Elliott) channel
/// that loses every frame while in its bad state.
#[derive(Debug, Clone, Copy)]
enum Channel {
    Independent,
    Bursty {
        /// In the bad state now.
        bad: bool,
        /// Chance per frame, in millionths, of going bad, and of recovering.
        to_bad_ppm: u64,
        to_good_ppm: u64,
    },
}

impl Channel {
    /// A channel losing `loss_percent` of the frames in the long run, in bursts of
    /// `burst_length` frames on average when given.
    fn new(loss_percent: u8, burst_length: Option<u32>) -> Channel {
        match burst_length {
            Some(length) if loss_percent > 0 => {
                // Bad state: mean stay 1/r = length frames; stationary share of bad
                // p / (p + r) = loss, so p = loss * r / (1 - loss).
                let to_good_ppm = 1_000_000 / u64::from(length.max(1));
                let loss = u64::from(loss_percent);
                let to_bad_ppm = (loss * to_good_ppm / (100 - loss).max(1)).min(1_000_000);
                Channel::Bursty {
                    bad: false,
                    to_bad_ppm,
                    to_good_ppm,
                }
            }
            _ => Channel::Independent,
        }
    }

    /// Whether the next frame is lost.
    fn lost(&mut self, rng: &mut Rng, loss_percent: u8) -> bool {
        match self {
            Channel::Independent => rng.percent_below(loss_percent),
            Channel::Bursty {
                bad,
                to_bad_ppm,
                to_good_ppm,
            } => {
                let flip = if *bad { *to_good_ppm } else { *to_bad_ppm };
                if rng.next() % 1_000_000 < flip {
                    *bad = !*bad;
                }
                *bad
            }
        }
    }
}

struct SimDevice {
    node: SimNode,
    /// Its slot in each second.
    phase: u64,
    loss_percent: u8,
    channel_model: Channel,
    next_heartbeat_ms: u64,
    last_uplink_us: Option<u64>,
    channel: usize,
    uplinks: u64,
}

/// The agent's loop, running.
type AgentLoop = Pin<Box<dyn Future<Output = Result<Storage, ServiceError>>>>;

/// What the simulation needs to start (or start again) the agent.
struct AgentSetup<'a> {
    config: &'a SimulationConfig,
    database: &'a Path,
    images: &'a Path,
    trust: &'a TrustStore,
    clock: &'a VirtualClock,
}

impl AgentSetup<'_> {
    /// A new agent process over the database: the service with its campaign engine,
    /// not running yet.
    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        transport: air::SimulatedLink,
    ) -> Result<
        (
            Service<air::SimulatedLink>,
            ServiceHandle,
            tokio::sync::mpsc::Receiver<ServiceNotification>,
        ),
        SimulationError,
    > {
        let region = || Region::new(self.config.region, RegionOptions::default());
        let storage = Storage::open(self.database).map_err(setup("database"))?;
        let cache =
            FirmwareCache::open(self.images, self.trust.clone()).map_err(setup("image cache"))?;
        let engine =
            CampaignEngine::load(&storage, region(), cache).map_err(setup("campaign engine"))?;
        let settings = ServiceSettings {
            region: region(),
            // EU868 nodes are provisioned with RX2 at SF9 (DR3) on 869.525 MHz, as large
            // networks do: at the default SF12, every RX2 answer holds the transmitter for
            // 1.3 s and blocks the next node's RX1, and a busy cell never gets out of RX2.
            // Elsewhere the region's RX2 (US915: SF12 at 500 kHz, already short).
            network_server: NetworkServerSettings {
                rx2: (self.config.region == RegionName::Eu868).then_some(RxWindow {
                    frequency_hz: 869_525_000,
                    data_rate: SIMULATED_RX2_DATA_RATE,
                }),
                ..NetworkServerSettings::default()
            },
            scheduler: SchedulerConfig::default(),
            duty_cycle: DutyCycleConfig::default(),
            tx_power_dbm: None,
        };
        let (service, handle, notifications) =
            Service::new(settings, storage, transport, Arc::new(self.clock.clone()))
                .map_err(setup("service"))?;
        Ok((service.with_campaigns(engine), handle, notifications))
    }
}

/// Why the agent's loop ended.
fn loop_ended(outcome: Result<Storage, ServiceError>) -> SimulationError {
    SimulationError::Agent(match outcome {
        Ok(_) => "the service loop ended".into(),
        Err(error) => error.to_string(),
    })
}

/// Asks the running agent for a campaign operation, as the local API does.
async fn ask_campaign(
    service_run: &mut AgentLoop,
    handle: &ServiceHandle,
    request: CampaignRequest,
) -> Result<crate::campaign::CampaignId, SimulationError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let ask = async {
        if !handle
            .send(ServiceCommand::Campaign { request, reply })
            .await
        {
            return Err(SimulationError::Agent("the agent took no command".into()));
        }
        answer
            .await
            .map_err(|_| SimulationError::Agent("the agent did not answer".into()))?
            .map_err(|error| SimulationError::Invalid(error.to_string()))
    };
    tokio::select! {
        outcome = service_run => Err(loop_ended(outcome)),
        answer = ask => answer,
    }
}

/// The DevAddr and FCnt (16 bits) of a data downlink.
fn downlink_fcnt(phy_payload: &[u8]) -> Option<(u32, u16)> {
    // MType 3 (unconfirmed data down) or 5 (confirmed data down).
    let mtype = phy_payload.first()? >> 5;
    if mtype != 3 && mtype != 5 {
        return None;
    }
    let address = u32::from_le_bytes(phy_payload.get(1..5)?.try_into().ok()?);
    let fcnt = u16::from_le_bytes(phy_payload.get(6..8)?.try_into().ok()?);
    Some((address, fcnt))
}

async fn run(
    config: &SimulationConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SimulationReport, SimulationError> {
    let mut rng = Rng(config.seed);
    let directory = tempfile::tempdir().map_err(setup("temporary directory"))?;
    let database = directory.path().join("agent.db");
    let images = directory.path().join("images");
    let mut storage = Storage::open(&database).map_err(setup("database"))?;
    let start = WallTime::from_unix_seconds(START_UNIX_S);

    // The signing key, from the seed; the trust store of the agent and the nodes.
    let secret: [u8; 32] = Sha256::digest(config.seed.to_be_bytes()).into();
    let key = p256::ecdsa::SigningKey::from_slice(&secret).map_err(setup("signing key"))?;
    let signer = ImageSigner::new(key);
    let trusted = parse_public_key(signer.public_key_der())
        .ok_or_else(|| SimulationError::Setup("the demo key's public half".into()))?;
    let trust = TrustStore::new(vec![TrustStoreEntry {
        key: trusted.clone(),
        name: "simulation key".into(),
    }]);
    let sign = |version: ImageVersion, body: &[u8]| {
        let mut spec = ImageSpec::new(version);
        spec.hardware_version = Some(HARDWARE_VERSION);
        signer.sign_image(body, &spec).map_err(setup("signing"))
    };
    let factory = sign(ImageVersion::new(1, 0, 0, 0), &rng.bytes(4 * 1024))?;
    let cache = FirmwareCache::open(&images, trust.clone()).map_err(setup("image cache"))?;
    // One image per campaign: 1.1.0, then 1.2.0, ... (the last one is reported).
    let mut image_sha256s = Vec::new();
    for campaign in 0..=config.previous_campaigns {
        let minor = u8::try_from(campaign + 1).unwrap_or(u8::MAX);
        let target = sign(
            ImageVersion::new(1, minor, 0, 0),
            &rng.bytes(config.image_size),
        )?;
        let sha256 = cache
            .import_mcuboot(
                &mut storage,
                &target,
                &format!("app-1.{minor}.0.bin"),
                start,
            )
            .map_err(setup("importing the image"))?
            .record()
            .sha256
            .clone();
        image_sha256s.push(sha256);
    }
    drop(cache);
    // The nodes, registered with ABP sessions.
    let mut devices = Vec::with_capacity(config.devices);
    for n in 0..config.devices {
        let index = n as u64 + 1;
        let mut key = |tag: u8| {
            let mut bytes = [tag; 16];
            bytes[..8].copy_from_slice(&rng.next().to_be_bytes());
            AesKey::from_bytes(bytes)
        };
        let identity = NodeIdentity {
            dev_eui: DevEui::from(0x70b3_d57e_d005_0000 + index),
            dev_addr: DevAddr::from(0x2601_0000 + index as u32),
            nwk_s_key: key(1),
            app_s_key: key(2),
            gen_app_key: key(3),
            hardware_version: HARDWARE_VERSION,
            trusted_keys: vec![trusted.clone()],
            region: config.region,
        };
        let mut device = Device::new(
            identity.dev_eui,
            JoinEui::from(0x70b3_d57e_d005_0000),
            MacVersion::V1_0_4,
        );
        device.gen_app_key = Some(identity.gen_app_key);
        device.hardware_version = Some(HARDWARE_NAME.into());
        let session = DeviceSession {
            dev_eui: identity.dev_eui,
            dev_addr: identity.dev_addr,
            nwk_s_key: identity.nwk_s_key,
            s_nwk_s_int_key: None,
            nwk_s_enc_key: None,
            app_s_key: identity.app_s_key,
            last_f_cnt_up: None,
        };
        storage
            .write(|tx| {
                tx.insert_device(&device, start)?;
                tx.store_session(&session, start, serde_json::json!({ "activation": "abp" }))
            })
            .map_err(setup("registering a node"))?;
        let node = SimNode::new(identity, &factory, config.seed ^ index, 0)
            .map_err(SimulationError::Setup)?;
        devices.push(SimDevice {
            node,
            phase: rng.next() % SLOTS_PER_SECOND,
            loss_percent: config.loss_percent[n % config.loss_percent.len()],
            channel_model: Channel::new(
                config.loss_percent[n % config.loss_percent.len()],
                config.burst_length,
            ),
            // Spread over the first heartbeat period.
            next_heartbeat_ms: 1_000 + rng.next() % (config.heartbeat_s.max(1) * 1_000),
            last_uplink_us: None,
            channel: n,
            uplinks: 0,
        });
    }

    drop(storage);

    let clock = VirtualClock::new(start);
    let (memory_link, mut air) = air::packet_forwarder(
        clock.clone(),
        Region::new(config.region, RegionOptions::default()),
    );
    let transport = if config.udp {
        // The production transport on loopback; the simulated gateway reaches it over a
        // socket, and the nodes' uplinks go through the gateway instead of straight in.
        let udp = crate::packet_forwarder::UdpPacketForwarder::bind(
            &crate::config::PacketForwarderConfig {
                bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                gateway_euis: vec![GatewayEui::from(GATEWAY)],
                tx_ack_timeout: Duration::from_secs(2),
            },
            Arc::new(clock.clone()),
        )
        .await
        .map_err(setup("the UDP transport"))?;
        let (uplinks_tx, uplinks) = tokio::sync::mpsc::unbounded_channel();
        air.to_service = uplinks_tx;
        tokio::spawn(air::udp_gateway(
            udp.local_address(),
            GatewayEui::from(GATEWAY),
            uplinks,
            air.downlinks.clone(),
        ));
        air::SimulatedLink::Udp(udp)
    } else {
        air::SimulatedLink::Memory(memory_link)
    };
    let agent = AgentSetup {
        config,
        database: &database,
        images: &images,
        trust: &trust,
        clock: &clock,
    };
    let (mut service, mut handle, mut notifications) = agent.start(transport)?;
    let reader = Storage::open_reader(&database).map_err(setup("database reader"))?;
    let overrides = ParameterOverrides {
        data_rate: config.data_rate,
        fixed_redundancy_percent: config.fixed_redundancy_percent,
        ..ParameterOverrides::default()
    };
    let spec = |campaign: usize| CampaignSpec {
        name: "simulation".into(),
        image_sha256: image_sha256s[campaign].clone(),
        targets: Targets::HardwareVersion {
            hardware_version: HARDWARE_NAME.into(),
        },
        delivery: DeliveryChoice::Multicast,
        overrides,
    };
    let created = match &config.campaign_command {
        None => {
            let id = service
                .campaign_request(CampaignRequest::Create(Box::new(spec(0))))
                .map_err(|error| SimulationError::Invalid(error.to_string()))?;
            service
                .campaign_request(CampaignRequest::Start(id))
                .map_err(|error| SimulationError::Agent(error.to_string()))?;
            Some(id)
        }
        Some(_) => None,
    };
    let mut service_run: AgentLoop = Box::pin(service.run(std::future::pending()));
    let mut id = match (&config.campaign_command, created) {
        (None, Some(id)) => id,
        (None, None) => return Err(SimulationError::Agent("no campaign was created".into())),
        (Some(template), _) => {
            let command = template.replace("{image_sha256}", &image_sha256s[0]);
            let processor = crate::upstream::commands::CommandProcessor::new(
                handle.clone(),
                Storage::open_reader(&database).map_err(setup("database reader"))?,
            );
            let mut outbox =
                crate::storage::outbox::Outbox::open(&database).map_err(setup("outbox"))?;
            let response = tokio::select! {
                outcome = &mut service_run => return Err(loop_ended(outcome)),
                response = processor.process(&mut outbox, "create_campaign", command.as_bytes(), start) => {
                    response.map_err(setup("recording the command's answer"))?
                }
            };
            let started = response["result"]["state"] == "running";
            match response["result"]["campaign"].as_i64() {
                Some(id) if started => id,
                _ => {
                    return Err(SimulationError::Invalid(format!(
                        "the create_campaign command did not start a campaign: {response}"
                    )))
                }
            }
        }
    };
    let campaign_of = |id| {
        reader
            .campaign(id)
            .map_err(|error| SimulationError::Agent(error.to_string()))?
            .ok_or_else(|| SimulationError::Agent(format!("campaign {id} is not in the database")))
    };
    let mut target_version = campaign_of(id)?.target_version;

    let channels_hz = uplink_channels(&Region::new(config.region, RegionOptions::default()));
    if channels_hz.is_empty() {
        return Err(SimulationError::Invalid(format!(
            "--region {}: no 125 kHz uplink channel",
            config.region.as_str()
        )));
    }
    let mut started = tokio::time::Instant::now();
    let limit = Duration::from_secs(config.time_limit_s);
    let gateway = GatewayEui::from(GATEWAY);
    let mut results = None;
    let mut multicast_frames = 0u64;
    let mut multicast_airtime_us = 0u64;
    let mut on_air: Vec<air::Transmission> = Vec::new();
    let mut next_slot = started;
    let mut slot: u64 = 0;
    let mut last_progress_s = 0;
    let mut earlier = Vec::new();
    let mut campaign_index = 0usize;
    let mut counters_at_start = air.downlinks.counters();
    let mut uplinks_at_start = 0u64;
    let mut agent_restarts = 0u32;
    let mut downlink_fcnts = HashSet::new();
    let mut reused_fcnts = 0u64;

    loop {
        let next_delivery = on_air
            .iter()
            .map(|t| clock.instant_at(crate::lorawan::time::MonotonicTime::from_micros(t.end_us)))
            .min();
        let wake = next_delivery.map_or(next_slot, |at| at.min(next_slot));
        let mut finished = None;
        tokio::select! {
            biased;
            outcome = &mut service_run => return Err(loop_ended(outcome)),
            Some(notification) = notifications.recv() => {
                if let ServiceNotification::CampaignFinished { campaign_id, results: r } = notification {
                    if campaign_id == id {
                        finished = Some(r);
                    }
                }
            }
            Some(transmission) = air.on_air.recv() => on_air.push(transmission),
            () = tokio::time::sleep_until(wake) => {}
        }
        if let Some(r) = finished {
            if campaign_index == config.previous_campaigns as usize {
                results = Some(r);
                break;
            }
            // An earlier campaign is over: the next one, on the same nodes.
            let done = campaign_of(id)?;
            earlier.push(EarlierCampaign {
                multicast_frames,
                first_pass_coded: done.parameters.first_pass_coded,
                repair_rounds: done.progress.repair_rounds,
                successful: r.get(&DeviceStatus::Successful).copied().unwrap_or(0),
            });
            campaign_index += 1;
            id = ask_campaign(
                &mut service_run,
                &handle,
                CampaignRequest::Create(Box::new(spec(campaign_index))),
            )
            .await?;
            ask_campaign(&mut service_run, &handle, CampaignRequest::Start(id)).await?;
            target_version = campaign_of(id)?.target_version;
            started = tokio::time::Instant::now();
            multicast_frames = 0;
            multicast_airtime_us = 0;
            counters_at_start = air.downlinks.counters();
            uplinks_at_start = devices.iter().map(|d| d.uplinks).sum();
            continue;
        }
        let now_us = clock.now().as_micros();
        let now_ms = now_us / 1_000;
        // Frames whose transmission is over reach the nodes that hear them.
        let mut index = 0;
        while index < on_air.len() {
            if on_air[index].end_us > now_us {
                index += 1;
                continue;
            }
            let frame = on_air.swap_remove(index);
            if let Some(key) = downlink_fcnt(&frame.phy_payload) {
                if !downlink_fcnts.insert(key) {
                    reused_fcnts += 1;
                }
            }
            let multicast = deliver(&frame, &mut devices, &mut rng, now_ms);
            if multicast {
                multicast_frames += 1;
                multicast_airtime_us += frame.end_us - frame.start_us;
            }
        }
        if tokio::time::Instant::now() >= next_slot {
            next_slot += SLOT;
            slot += 1;
            let phase = slot % SLOTS_PER_SECOND;
            step_devices(
                devices.iter_mut().filter(|device| device.phase == phase),
                &mut rng,
                &air.to_service,
                gateway,
                now_ms,
                now_us,
                &clock,
                config.heartbeat_s,
                &channels_hz,
            )?;
            let elapsed_s = now_ms / 1_000;
            if let Some((at_s, delta_s)) = config.clock_step {
                if elapsed_s == at_s && phase == 0 {
                    clock.step_system_wall(delta_s.saturating_mul(1_000_000));
                }
            }
            if phase == 0 && config.agent_restarts.contains(&elapsed_s) {
                // Killed: the loop and everything it held in memory are gone.
                drop(std::mem::replace(
                    &mut service_run,
                    Box::pin(std::future::pending()),
                ));
                clock.restart_process();
                let (service, new_handle, new_notifications) =
                    agent.start(air::SimulatedLink::Memory(air.reconnect()))?;
                service_run = Box::pin(service.run(std::future::pending()));
                handle = new_handle;
                notifications = new_notifications;
                agent_restarts += 1;
            }
            if phase == 0 && elapsed_s >= last_progress_s + 60 {
                last_progress_s = elapsed_s;
                progress(&progress_of(&devices, elapsed_s, target_version));
            }
            if started.elapsed() > limit {
                break;
            }
        }
    }
    let duration_s = started.elapsed().as_secs_f64();
    // The service holds the database; a second connection reads the results (WAL).
    let reader = Storage::open(&database).map_err(setup("reading results"))?;
    let campaign = campaign_of(id)?;
    let parameters = campaign.parameters;
    let rows = reader
        .campaign_devices(id)
        .map_err(|error| SimulationError::Agent(error.to_string()))?;
    let clock_steps = reader
        .events_of_kind_since(
            crate::storage::EventKind::ClockStep,
            WallTime::from_unix_micros(0),
        )
        .map_err(|error| SimulationError::Agent(error.to_string()))?
        .len();
    let progress = campaign.progress;
    let unsuccessful = rows
        .iter()
        .filter(|row| row.status != DeviceStatus::Successful)
        .map(|row| UnsuccessfulDevice {
            dev_eui: row.dev_eui,
            status: row.status,
            step: format!("{:?}", row.step),
            last_error: row.last_error.clone(),
            missing: row.missing,
            loss_percent: devices
                .iter()
                .find(|d| d.node.identity.dev_eui == row.dev_eui)
                .map_or(0, |d| d.loss_percent),
        })
        .collect();
    let counters = air.downlinks.counters();
    // The band of the session's frequency (an unlimited band counts as 100 %).
    let band_percent = crate::lorawan::duty_cycle::bands::regulatory_bands(
        config.region,
        &RegionOptions::default(),
    )
    .iter()
    .find(|band| band.contains(parameters.frequency_hz, 125_000))
    .and_then(|band| band.duty_cycle_ppm)
    .map_or(100.0, |ppm| f64::from(ppm) / 10_000.0);
    let multicast_airtime_s = multicast_airtime_us as f64 / 1e6;
    // Confirmed: the boot state is idle on the new version, and a reset (the real
    // bootloader verifying the primary slot again) still starts it.
    let end_ms = clock.now().as_micros() / 1_000;
    let mut nodes_confirmed = 0;
    for device in &mut devices {
        let confirmed = device.node.running_version == target_version && device.node.confirmed();
        let restarts = device.node.reset(end_ms).is_ok();
        if confirmed && restarts && device.node.running_version == target_version {
            nodes_confirmed += 1;
        }
    }
    Ok(SimulationReport {
        finished: results.is_some(),
        duration_s,
        results: results.unwrap_or_default(),
        nodes_confirmed,
        nodes: devices.len(),
        downlinks: counters.transmissions - counters_at_start.transmissions,
        multicast_frames,
        multicast_airtime_s,
        downlink_airtime_s: (counters.airtime_us - counters_at_start.airtime_us) as f64 / 1e6,
        duty_cycle_floor_s: multicast_airtime_s * 100.0 / band_percent,
        duty_cycle_percent: band_percent,
        fragments: parameters.fragments,
        first_pass_coded: parameters.first_pass_coded,
        repair_rounds: progress.repair_rounds,
        sessions: progress.sessions,
        fragment_size: parameters.fragment_size,
        uplinks: devices.iter().map(|d| d.uplinks).sum::<u64>() - uplinks_at_start,
        data_rate: parameters.data_rate,
        unsuccessful,
        clock_steps,
        previous_campaigns: earlier,
        agent_restarts,
        reused_fcnts,
    })
}

/// Gives a finished transmission to the nodes that hear it; returns whether it was a
/// multicast (Class C) frame.
fn deliver(
    frame: &air::Transmission,
    devices: &mut [SimDevice],
    rng: &mut Rng,
    now_ms: u64,
) -> bool {
    let mut multicast = false;
    for device in devices.iter_mut() {
        let listening = device.node.class_c == Some((frame.frequency_hz, frame.data_rate));
        // Class A: RX1 1 s or RX2 2 s after the node's last uplink.
        let in_rx_window = device.last_uplink_us.is_some_and(|up| {
            let after = frame.start_us.saturating_sub(up);
            (900_000..=1_100_000).contains(&after) || (1_900_000..=2_100_000).contains(&after)
        });
        if !listening && !in_rx_window {
            continue;
        }
        if device.channel_model.lost(rng, device.loss_percent) {
            continue;
        }
        if in_rx_window
            && device
                .node
                .receive_unicast(now_ms, &frame.phy_payload)
                .is_some()
        {
            continue;
        }
        if listening && device.node.receive_multicast(now_ms, &frame.phy_payload) {
            multicast = true;
        }
    }
    // A frame for no node's own DevAddr is a group's (counted even when no node kept
    // it: those that completed the block ignore the rest).
    let address = frame
        .phy_payload
        .get(1..5)
        .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    multicast
        || address.is_some_and(|address| {
            !devices
                .iter()
                .any(|device| device.node.identity.dev_addr.to_u32() == address)
        })
}

#[allow(clippy::too_many_arguments)]
fn step_devices<'d>(
    devices: impl Iterator<Item = &'d mut SimDevice>,
    rng: &mut Rng,
    to_service: &tokio::sync::mpsc::UnboundedSender<GatewayEvent>,
    gateway: GatewayEui,
    now_ms: u64,
    now_us: u64,
    clock: &VirtualClock,
    heartbeat_s: u64,
    channels_hz: &[u32],
) -> Result<(), SimulationError> {
    for device in devices {
        device
            .node
            .run_actions(now_ms)
            .map_err(|error| SimulationError::Agent(format!("a node: {error}")))?;
        // Class A: no uplink before the last one's RX2 has closed.
        if device
            .last_uplink_us
            .is_some_and(|up| now_us < up + RX_WINDOWS_CLOSED_US)
        {
            continue;
        }
        // A node listening in Class C still sends its answers.
        let uplink = match device.node.poll_uplink(now_ms) {
            Some(uplink) => Some(uplink),
            None if now_ms >= device.next_heartbeat_ms => {
                // Real nodes drift: ±20 % jitter, so two nodes that once collided do
                // not collide forever.
                let period_ms = heartbeat_s.max(1) * 1_000;
                let jitter = rng.next() % (period_ms * 2 / 5 + 1);
                device.next_heartbeat_ms = now_ms + period_ms * 4 / 5 + jitter;
                Some((2, vec![0x01]))
            }
            None => None,
        };
        let Some((f_port, payload)) = uplink else {
            continue;
        };
        if trace(device) {
            eprintln!(
                "{now_ms} {} up {f_port} {payload:02x?}",
                device.node.identity.dev_eui
            );
        }
        let frame = device
            .node
            .build_uplink(f_port, &payload)
            .map_err(SimulationError::Agent)?;
        device.uplinks += 1;
        device.last_uplink_us = Some(now_us);
        // Its next uplinks fall in another slot of the second.
        device.phase = rng.next() % SLOTS_PER_SECOND;
        device.channel = (device.channel + 1) % channels_hz.len();
        if device.channel_model.lost(rng, device.loss_percent) {
            continue;
        }
        let uplink = air::received_uplink(
            gateway,
            device.channel as u64,
            frame,
            channels_hz[device.channel % channels_hz.len()],
            "SF7BW125",
            now_us as u32,
            clock.now(),
        )
        .ok_or_else(|| SimulationError::Agent("data rate".into()))?;
        let _ = to_service.send(uplink);
    }
    Ok(())
}

fn progress_of(devices: &[SimDevice], elapsed_s: u64, target_version: u32) -> Progress {
    let mut downloading = 0;
    let mut received = 0.0;
    let mut complete = 0;
    for device in devices {
        match device.node.download_progress() {
            Some((missing, total)) if total > 0 => {
                downloading += 1;
                received += 1.0 - f64::from(missing) / f64::from(total);
            }
            _ => {}
        }
        if device.node.multicast_received > 0 && device.node.download_progress().is_none() {
            complete += 1;
        }
    }
    Progress {
        elapsed_s,
        nodes_complete: complete,
        nodes_downloading: downloading,
        average_received: if downloading > 0 {
            received / downloading as f64
        } else {
            0.0
        },
        nodes_updated: devices
            .iter()
            .filter(|d| d.node.running_version == target_version)
            .count(),
        nodes: devices.len(),
    }
}

/// Whether `FUOTA_SIM_TRACE` names this node (its uplinks and downlinks go to stderr).
fn trace(device: &SimDevice) -> bool {
    static TRACED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TRACED
        .get_or_init(|| std::env::var("FUOTA_SIM_TRACE").ok())
        .as_deref()
        .is_some_and(|eui| eui.eq_ignore_ascii_case(&device.node.identity.dev_eui.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long-run loss and mean burst length of a channel over many frames.
    fn measure(mut channel: Channel, loss_percent: u8) -> (f64, f64) {
        let mut rng = Rng(7);
        let frames = 400_000;
        let (mut lost, mut bursts, mut previous) = (0u64, 0u64, false);
        for _ in 0..frames {
            let now = channel.lost(&mut rng, loss_percent);
            if now {
                lost += 1;
                if !previous {
                    bursts += 1;
                }
            }
            previous = now;
        }
        (
            lost as f64 * 100.0 / f64::from(frames),
            lost as f64 / bursts.max(1) as f64,
        )
    }

    #[test]
    fn a_bursty_channel_keeps_the_loss_rate_and_loses_in_bursts() {
        let (loss, burst) = measure(Channel::new(20, Some(8)), 20);
        assert!((loss - 20.0).abs() < 1.5, "loss {loss}");
        assert!((burst - 8.0).abs() < 1.0, "burst {burst}");
        let (loss, burst) = measure(Channel::new(20, None), 20);
        assert!((loss - 20.0).abs() < 1.0, "loss {loss}");
        assert!(
            burst < 1.5,
            "independent losses come one or two at a time: {burst}"
        );
        let (loss, _) = measure(Channel::new(0, Some(8)), 0);
        assert_eq!(loss, 0.0);
    }
}
