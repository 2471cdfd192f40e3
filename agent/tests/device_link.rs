//! The STM32WL application's loop (`fuota-device`'s `Link`: lorawan-device for OTAA and
//! Class A, the FUOTA node, the multicast receiver, the MAC record, the transmit budget,
//! the trial deadline) run against the agent, on virtual time.
//!
//! The device is the firmware's code on a simulated board: its radio transmits into the
//! agent's simulated packet forwarder (`simulator::air`) and receives what the gateway
//! puts on the air, in the RX windows lorawan-device opens or on the multicast channel
//! the link listens to; its flash is the STM32WL55JC layout with the real bootloader
//! run at every reset (`simulator::node::SimChip`). The agent is the whole service:
//! network server (OTAA join), campaign engine, scheduler and duty cycle.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use fuota_agent::campaign::{
    CampaignEngine, CampaignSpec, DeliveryChoice, DeviceStatus, ParameterOverrides, Targets,
};
use fuota_agent::clock::{Clock, VirtualClock, WallTime};
use fuota_agent::firmware::{FirmwareCache, ImageSigner, ImageSpec, TrustStore};
use fuota_agent::identifiers::{AesKey, DevEui, GatewayEui, JoinEui};
use fuota_agent::lorawan::region::{Region, RegionName, RegionOptions};
use fuota_agent::lorawan::time::MonotonicTime;
use fuota_agent::network_server::NetworkServerSettings;
use fuota_agent::packet_forwarder::GatewayEvent;
use fuota_agent::service::campaigns::CampaignRequest;
use fuota_agent::service::{Service, ServiceNotification};
use fuota_agent::simulator::air::{self, Transmission};
use fuota_agent::simulator::node::{SimChip, Store};
use fuota_agent::storage::{Device, MacVersion, Storage};
use fuota_device::{
    Clock as DeviceClock, Credentials, DevNonceSlot, Link, LinkConfig, MacRecordStore, ResetReason,
};
use fuota_node::{LastUpdate, MacRecord, NodeConfig, RECORD_LORAWAN};
use lora_modulation::BaseBandModulationParams;
use lorawan_device::async_device::radio::{
    PhyRxTx, RxConfig, RxMode, RxQuality, RxStatus, Timer, TxConfig,
};
use lorawan_device::async_device::Timings;
use lorawan_device::region::DR;
use lorawan_fuota::image::ImageVersion;
use tokio::sync::{mpsc, Notify};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node-firmware/lorawan-fuota/tests/fixtures/images"
);
/// 2026-11-01T00:00:00Z.
const START_UNIX_S: i64 = 1_793_491_200;
const FACTORY: ImageVersion = ImageVersion::new(1, 0, 0, 0);
const TARGET: ImageVersion = ImageVersion::new(1, 1, 0, 0);
const HARDWARE: u32 = 0x0001_0203;
const HARDWARE_NAME: &str = "stm32wl55-nucleo";
const DEV_EUI: u64 = 0x70b3_d57e_d00f_0001;
const JOIN_EUI: u64 = 0x70b3_d57e_d00f_0000;
const APP_KEY: [u8; 16] = [0x5a; 16];
const GEN_APP_KEY: [u8; 16] = [0x6b; 16];
const GATEWAY: u64 = 0x0016_c001_ff10_0001;
/// The campaign's multicast channel unless a scenario says otherwise: EU868's RX2
/// frequency (the agent's default) at DR5 (RX2 is DR0).
const MULTICAST_CHANNEL: MulticastChannel = MulticastChannel {
    frequency_hz: 869_525_000,
    data_rate: 5,
};

/// Where the campaign's multicast frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MulticastChannel {
    frequency_hz: u32,
    data_rate: u8,
}
/// How long the receiver waits for a preamble after a single window opens.
const RX_WINDOW_US: u64 = 30_000;

/// What the gateway put on the air, as the device's radio hears it.
struct Ether {
    clock: VirtualClock,
    region: Region,
    to_service: mpsc::UnboundedSender<GatewayEvent>,
    frames: RefCell<Vec<Transmission>>,
    arrived: Notify,
    /// The device hears no downlink at all while false (out of the gateway's reach).
    downlinks_reach_the_device: Cell<bool>,
    /// Nor any that starts in this span, virtual µs.
    deaf_us: Option<(u64, u64)>,
    /// The radio fails every transmission from this many uplinks on.
    radio_fails_after: Option<usize>,
    /// The radio fails every transmission once this many multicast frames were heard,
    /// until the device resets.
    radio_wedged_after_multicast_frames: Cell<Option<u64>>,
    /// Transmissions that failed.
    failed_transmissions: RefCell<Vec<u64>>,
    /// One multicast frame in this many is lost.
    multicast_loss_every: u64,
    multicast_heard: Cell<u64>,
    multicast_lost: Cell<u64>,
    /// Start of every multicast frame the device heard, virtual µs.
    multicast_heard_at_us: RefCell<Vec<u64>>,
    /// The campaign's multicast channel.
    multicast_channel: MulticastChannel,
    /// Every uplink the device transmitted: (start, end), virtual µs.
    uplinks: RefCell<Vec<(u64, u64)>>,
    /// The gateway hears the device's uplinks only up to this data rate (the device's
    /// 14 dBm do not carry further at faster ones); it hears every DR when `None`. The
    /// device hears the gateway (27 dBm) at every data rate.
    gateway_hears_up_to_dr: Option<u8>,
    /// Every uplink the device transmitted, in order.
    uplink_log: RefCell<Vec<SentUplink>>,
}

/// An uplink as the air saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SentUplink {
    data_rate: u8,
    join_request: bool,
    /// The gateway received it.
    heard: bool,
}

impl Ether {
    fn now_us(&self) -> u64 {
        self.clock.now().as_micros()
    }

    async fn sleep_until_us(&self, at_us: u64) {
        tokio::time::sleep_until(self.clock.instant_at(MonotonicTime::from_micros(at_us))).await
    }

    fn data_rate_of(&self, modulation: &BaseBandModulationParams) -> u8 {
        air::data_rate_index(
            &self.region,
            common::spreading_factor(modulation.sf),
            modulation.bw.hz(),
        )
    }

    /// Start of every frame the gateway sent on the campaign's multicast channel,
    /// virtual µs.
    fn multicast_frames_sent_at_us(&self) -> Vec<u64> {
        let channel = self.multicast_channel;
        self.frames
            .borrow()
            .iter()
            .filter(|frame| {
                frame.frequency_hz == channel.frequency_hz && frame.data_rate == channel.data_rate
            })
            .map(|frame| frame.start_us)
            .collect()
    }

    /// Multicast frames sent between the first and the last the device heard that it
    /// did not hear: the radio was elsewhere (an uplink, its RX windows, a reset).
    fn multicast_frames_missed_mid_session(&self) -> Vec<u64> {
        let heard = self.multicast_heard_at_us.borrow();
        let (Some(first), Some(last)) = (heard.first(), heard.last()) else {
            return Vec::new();
        };
        self.multicast_frames_sent_at_us()
            .into_iter()
            .filter(|at| (first..=last).contains(&at) && !heard.contains(at))
            .collect()
    }

    fn hears(&self, frame: &Transmission, config: &RxConfig) -> bool {
        self.downlinks_reach_the_device.get()
            && self
                .deaf_us
                .is_none_or(|(from, to)| !(from..to).contains(&frame.start_us))
            && frame.frequency_hz == config.rf.frequency
            && frame.data_rate == self.data_rate_of(&config.rf.bb)
    }
}

/// The device's radio on the simulated air: half duplex, one configuration at a time.
struct SimRadio {
    ether: Rc<Ether>,
    rx: Option<RxConfig>,
    /// Continuous reception hears frames that start after this.
    listening_since_us: u64,
    /// Start of the last frame continuous reception delivered.
    last_delivered_us: Option<u64>,
}

impl PhyRxTx for SimRadio {
    type PhyError = String;
    const MAX_RADIO_POWER: u8 = 14;

    async fn tx(&mut self, config: TxConfig, buf: &[u8]) -> Result<u32, String> {
        self.rx = None;
        let wedged = self
            .ether
            .radio_wedged_after_multicast_frames
            .get()
            .is_some_and(|frames| self.ether.multicast_heard.get() >= frames);
        if wedged
            || self
                .ether
                .radio_fails_after
                .is_some_and(|after| self.ether.uplinks.borrow().len() >= after)
        {
            // The radio does not answer: the driver gives up after its timeout.
            let now_us = self.ether.now_us();
            self.ether.failed_transmissions.borrow_mut().push(now_us);
            self.ether.sleep_until_us(now_us + 100_000).await;
            return Err("the radio does not answer".into());
        }
        let len = u8::try_from(buf.len()).map_err(|_| "frame too long".to_string())?;
        let airtime_us = u64::from(config.rf.bb.time_on_air_us(Some(8), true, len));
        let start_us = self.ether.now_us();
        let end_us = start_us + airtime_us;
        self.ether.sleep_until_us(end_us).await;
        let datr = common::lora_datr(config.rf.bb.sf, config.rf.bb.bw);
        // tmst: the concentrator's counter at the end of the frame (RX1 opens 1 s later).
        let uplink = air::received_uplink(
            GatewayEui::from(GATEWAY),
            0,
            buf.to_vec(),
            config.rf.frequency,
            &datr,
            self.ether.now_us() as u32,
            self.ether.clock.now(),
        )
        .ok_or_else(|| format!("data rate {datr}"))?;
        self.ether.uplinks.borrow_mut().push((start_us, end_us));
        let data_rate = self.ether.data_rate_of(&config.rf.bb);
        let heard = self
            .ether
            .gateway_hears_up_to_dr
            .is_none_or(|reach| data_rate <= reach);
        self.ether.uplink_log.borrow_mut().push(SentUplink {
            data_rate,
            // MHDR 0x00: a join request.
            join_request: buf.first() == Some(&0x00),
            heard,
        });
        if heard {
            let _ = self.ether.to_service.send(uplink);
        }
        Ok(0)
    }

    async fn setup_rx(&mut self, config: RxConfig) -> Result<(), String> {
        if matches!(config.mode, RxMode::Continuous) {
            self.listening_since_us = self.ether.now_us();
        }
        self.rx = Some(config);
        Ok(())
    }

    async fn rx_continuous(&mut self, buf: &mut [u8]) -> Result<(usize, RxQuality), String> {
        let config = self.rx.ok_or("continuous reception without a setup")?;
        loop {
            let arrived = self.ether.arrived.notified();
            let mut arrived = std::pin::pin!(arrived);
            arrived.as_mut().enable();
            let next = self
                .ether
                .frames
                .borrow()
                .iter()
                .filter(|frame| {
                    frame.start_us >= self.listening_since_us
                        && self
                            .last_delivered_us
                            .is_none_or(|last| frame.start_us > last)
                        && self.ether.hears(frame, &config)
                })
                .min_by_key(|frame| frame.start_us)
                .cloned();
            let Some(frame) = next else {
                arrived.await;
                continue;
            };
            self.ether.sleep_until_us(frame.end_us).await;
            self.last_delivered_us = Some(frame.start_us);
            self.ether
                .multicast_heard_at_us
                .borrow_mut()
                .push(frame.start_us);
            let heard = self.ether.multicast_heard.get() + 1;
            self.ether.multicast_heard.set(heard);
            if heard.is_multiple_of(self.ether.multicast_loss_every) {
                self.ether
                    .multicast_lost
                    .set(self.ether.multicast_lost.get() + 1);
                continue;
            }
            buf[..frame.phy_payload.len()].copy_from_slice(&frame.phy_payload);
            return Ok((frame.phy_payload.len(), RxQuality::new(-95, 5)));
        }
    }

    async fn rx_single(&mut self, buf: &mut [u8]) -> Result<RxStatus, String> {
        let config = self.rx.ok_or("a receive window without a setup")?;
        let opened_us = self.ether.now_us();
        self.ether.sleep_until_us(opened_us + RX_WINDOW_US).await;
        let found = self
            .ether
            .frames
            .borrow()
            .iter()
            .find(|frame| {
                frame.start_us + 5_000 >= opened_us
                    && frame.start_us <= opened_us + RX_WINDOW_US
                    && self.ether.hears(frame, &config)
            })
            .cloned();
        let Some(frame) = found else {
            return Ok(RxStatus::RxTimeout);
        };
        self.ether.sleep_until_us(frame.end_us).await;
        buf[..frame.phy_payload.len()].copy_from_slice(&frame.phy_payload);
        Ok(RxStatus::Rx(
            frame.phy_payload.len(),
            RxQuality::new(-90, 7),
        ))
    }
}

impl Timings for SimRadio {
    fn get_rx_window_lead_time_ms(&self) -> u32 {
        0
    }
}

/// lorawan-device's timer on the virtual clock.
struct SimTimer {
    reference: tokio::time::Instant,
}

impl Timer for SimTimer {
    fn reset(&mut self) {
        self.reference = tokio::time::Instant::now();
    }

    async fn at(&mut self, millis: u64) {
        tokio::time::sleep_until(self.reference + Duration::from_millis(millis)).await
    }

    async fn delay_ms(&mut self, millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await
    }
}

/// The device's monotonic clock: milliseconds since its last reset.
struct BoardClock {
    boot: tokio::time::Instant,
}

impl DeviceClock for BoardClock {
    fn now(&self) -> fuota_node::Instant {
        fuota_node::Instant::from_millis(self.boot.elapsed().as_millis() as u64)
    }

    async fn sleep_until(&self, at: fuota_node::Instant) {
        tokio::time::sleep_until(self.boot + Duration::from_millis(at.as_millis())).await
    }
}

/// splitmix64: the board's random source.
struct BoardRng(u64);

impl lorawan_device::RngCore for BoardRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            *byte = self.next_u32() as u8;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// The firmware's MAC record, beside the node's records in the chip's store.
struct MacRecords(Store);

impl MacRecordStore for MacRecords {
    type Error = String;

    fn load_mac_record(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, String> {
        self.0
            .load_record(RECORD_LORAWAN, buffer)
            .map_err(|error| format!("{error:?}"))
    }

    fn save_mac_record(&mut self, record: &[u8]) -> Result<(), String> {
        self.0
            .save_record(RECORD_LORAWAN, record)
            .map_err(|error| format!("{error:?}"))
    }
}

/// What the device did, boot by boot.
#[derive(Debug, Default)]
struct DeviceLog {
    /// (version, on trial, what became of the last update) at each boot.
    boots: Vec<(u32, bool, Option<LastUpdate>)>,
    /// Why the link stopped, each time (`None`: the power was cut).
    resets: Vec<Option<ResetReason>>,
    /// How long each boot ran, virtual seconds.
    ran_s: Vec<u64>,
    /// The MAC record's next DevNonce when the link stopped.
    next_dev_nonce: Vec<u16>,
    /// Fragments the node replayed from its journal when it started, each boot.
    resumed_fragments: Vec<Option<u32>>,
    /// Multicast frames the node was given (heard and not lost), and those lost, when
    /// the link stopped.
    multicast_delivered: Vec<(u64, u64)>,
}

fn link_config(scenario: &Scenario) -> LinkConfig {
    LinkConfig {
        credentials: Credentials {
            dev_eui: DEV_EUI.to_be_bytes(),
            join_eui: JOIN_EUI.to_be_bytes(),
            app_key: APP_KEY,
        },
        region: lorawan_device::region::Region::EU868,
        resume_session_after_reset: scenario.resume_session,
        uplink_fport: 1,
        uplink_period: scenario.uplink_period,
        confirmed_uplink_every: 12,
        rejoin_after_unanswered: 3,
        trial_deadline: Duration::from_secs(30 * 60),
        join_data_rates: &[DR::_5, DR::_4, DR::_3, DR::_2, DR::_1, DR::_0],
    }
}

/// What happens around the device.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Size of the update's body, bytes.
    image_body: usize,
    /// No downlink reaches the device while its image is on trial.
    deaf_on_trial: bool,
    /// The firmware's `resume_session_after_reset`.
    resume_session: bool,
    /// Run an update campaign (until it is over); without one, run for `limit`.
    campaign: bool,
    /// How long the run may take, virtual time.
    limit: Duration,
    /// No downlink reaches the device in this span of virtual time.
    deaf: Option<(Duration, Duration)>,
    /// The radio fails from this many uplinks on.
    radio_fails_after: Option<usize>,
    /// The power is cut (RAM lost, flash kept, the bootloader runs) once the device has
    /// heard this many multicast frames.
    power_cut_after_multicast_frames: Option<u64>,
    /// The radio wedges (every transmission fails) once the device has heard this many
    /// multicast frames; a reset cures it.
    radio_wedged_after_multicast_frames: Option<u64>,
    /// The gateway hears the device only up to this data rate.
    gateway_hears_up_to_dr: Option<u8>,
    /// Time between the firmware's periodic uplinks.
    uplink_period: Duration,
    /// The campaign's multicast channel.
    multicast_channel: MulticastChannel,
}

impl Scenario {
    /// An update campaign of `image_body` bytes, nothing in the way.
    fn update(image_body: usize) -> Self {
        Scenario {
            image_body,
            deaf_on_trial: false,
            resume_session: true,
            campaign: true,
            limit: Duration::from_secs(6 * 3600),
            deaf: None,
            radio_fails_after: None,
            power_cut_after_multicast_frames: None,
            radio_wedged_after_multicast_frames: None,
            gateway_hears_up_to_dr: None,
            uplink_period: Duration::from_secs(120),
            multicast_channel: MULTICAST_CHANNEL,
        }
    }

    /// No campaign: the device on its own for `limit`.
    fn quiet(limit: Duration) -> Self {
        Scenario {
            campaign: false,
            limit,
            ..Scenario::update(1024)
        }
    }
}

/// The device: the bootloader, then the firmware's link until it asks for a reset,
/// again and again. Returns only if the bootloader halts.
async fn run_device(
    chip: SimChip,
    ether: Rc<Ether>,
    trust: TrustStore,
    log: Rc<RefCell<DeviceLog>>,
    scenario: Scenario,
) -> String {
    let dev_nonce_slot = DevNonceSlot::new();
    let mut seed = 0x5eed_u64;
    loop {
        let booted = match chip.boot(trust.keys(), HARDWARE) {
            Ok(booted) => booted,
            Err(error) => return error,
        };
        log.borrow_mut().boots.push((
            booted.version,
            booted.running.on_trial,
            booted.running.last_update,
        ));
        ether
            .downlinks_reach_the_device
            .set(!(scenario.deaf_on_trial && booted.running.on_trial));
        let booted_at = tokio::time::Instant::now();
        seed = seed.wrapping_add(1);
        let radio = SimRadio {
            ether: ether.clone(),
            rx: None,
            listening_since_us: 0,
            last_delivered_us: None,
        };
        let mut link = Link::new(
            link_config(&scenario),
            radio,
            SimTimer {
                reference: tokio::time::Instant::now(),
            },
            BoardRng(seed),
            Some(MacRecords(chip.store().clone())),
            &dev_nonce_slot,
            BoardClock {
                boot: tokio::time::Instant::now(),
            },
        );
        let mut config = NodeConfig::new(AesKey::from_bytes(GEN_APP_KEY), booted.version, HARDWARE);
        config.max_uplink_payload = 51;
        for key in trust.keys() {
            if config.trusted_keys.push(key.clone()).is_err() {
                return "too many trusted keys".into();
            }
        }
        let parts = chip
            .node_parts(config, seed, RegionName::Eu868)
            .with_running_image(booted.running);
        let mut workspace = vec![0u8; 16 * 1024];
        let power_cut = async {
            match scenario.power_cut_after_multicast_frames {
                Some(frames) if log.borrow().resets.iter().all(Option::is_some) => {
                    while ether.multicast_heard.get() < frames {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                _ => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            reason = link.run(parts, &mut workspace) => Some(reason),
            () = power_cut => None,
        };
        let mut log = log.borrow_mut();
        log.resets.push(reason);
        log.ran_s.push(booted_at.elapsed().as_secs());
        log.next_dev_nonce.push(link.mac_record().next_dev_nonce);
        log.multicast_delivered.push((
            ether.multicast_heard.get() - ether.multicast_lost.get(),
            ether.multicast_lost.get(),
        ));
        // A reset cures a wedged radio.
        ether.radio_wedged_after_multicast_frames.set(None);
        log.resumed_fragments.push(
            link.last_start()
                .and_then(|report| report.resumed)
                .map(|resumed| resumed.replayed),
        );
    }
}

/// Moves what the gateway transmits onto the device's air.
async fn carry_transmissions(mut on_air: mpsc::UnboundedReceiver<Transmission>, ether: Rc<Ether>) {
    while let Some(transmission) = on_air.recv().await {
        ether.frames.borrow_mut().push(transmission);
        ether.arrived.notify_waiters();
    }
}

/// The agent with one device registered for OTAA (not joined), an image of [`TARGET`]
/// in its cache, and a running multicast campaign for the device's hardware.
struct Setup {
    _directory: tempfile::TempDir,
    database: PathBuf,
    service: Service<air::SimulatedLink>,
    notifications: mpsc::Receiver<ServiceNotification>,
    air: air::AirSide,
    clock: VirtualClock,
    chip: SimChip,
    trust: TrustStore,
    campaign_id: Option<fuota_agent::campaign::CampaignId>,
}

fn setup(scenario: &Scenario) -> Setup {
    let (image_body, campaign) = (scenario.image_body, scenario.campaign);
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("agent.db");
    let images = directory.path().join("images");
    let start = WallTime::from_unix_seconds(START_UNIX_S);
    let trust = TrustStore::load(&[PathBuf::from(FIXTURES).join("pubkey.pem")]).unwrap();
    let signer = ImageSigner::load(&PathBuf::from(FIXTURES).join("key.pem")).unwrap();
    let sign = |version: ImageVersion, len: usize| {
        let body: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut spec = ImageSpec::new(version);
        spec.hardware_version = Some(HARDWARE);
        signer.sign_image(&body, &spec).unwrap()
    };
    let chip = SimChip::new(&sign(FACTORY, 4 * 1024)).unwrap();

    let mut storage = Storage::open(&database).unwrap();
    let cache = FirmwareCache::open(&images, trust.clone()).unwrap();
    let image_sha256 = cache
        .import_mcuboot(
            &mut storage,
            &sign(TARGET, image_body),
            "app-1.1.0.bin",
            start,
        )
        .unwrap()
        .record()
        .sha256
        .clone();
    let mut device = Device::new(
        DevEui::from(DEV_EUI),
        JoinEui::from(JOIN_EUI),
        MacVersion::V1_0_4,
    );
    device.app_key = Some(AesKey::from_bytes(APP_KEY));
    device.gen_app_key = Some(AesKey::from_bytes(GEN_APP_KEY));
    device.hardware_version = Some(HARDWARE_NAME.into());
    storage
        .write(|tx| tx.insert_device(&device, start))
        .unwrap();

    let region = || Region::new(RegionName::Eu868, RegionOptions::default());
    let engine = CampaignEngine::load(&storage, region(), cache).unwrap();
    let clock = VirtualClock::new(start);
    let (transport, air) = air::packet_forwarder(clock.clone(), region());
    let settings = common::eu868_settings(NetworkServerSettings::default());
    let (service, _handle, notifications) = Service::new(
        settings,
        storage,
        air::SimulatedLink::Memory(transport),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let mut service = service.with_campaigns(engine);
    let spec = CampaignSpec {
        name: "device link".into(),
        image_sha256,
        targets: Targets::HardwareVersion {
            hardware_version: HARDWARE_NAME.into(),
        },
        delivery: DeliveryChoice::Multicast,
        overrides: ParameterOverrides {
            data_rate: Some(scenario.multicast_channel.data_rate),
            frequency_hz: Some(scenario.multicast_channel.frequency_hz),
            ..ParameterOverrides::default()
        },
    };
    let campaign_id = campaign.then(|| {
        let id = service
            .campaign_request(CampaignRequest::Create(Box::new(spec)))
            .unwrap();
        service
            .campaign_request(CampaignRequest::Start(id))
            .unwrap();
        id
    });
    Setup {
        _directory: directory,
        database,
        service,
        notifications,
        air,
        clock,
        chip,
        trust,
        campaign_id,
    }
}

/// What the campaign came to, and how many joins the agent accepted on the way.
async fn campaign_results(
    notifications: &mut mpsc::Receiver<ServiceNotification>,
    campaign_id: Option<fuota_agent::campaign::CampaignId>,
    joins: &Cell<u32>,
) -> BTreeMap<DeviceStatus, usize> {
    while let Some(notification) = notifications.recv().await {
        match notification {
            ServiceNotification::Joined { .. } => joins.set(joins.get() + 1),
            ServiceNotification::CampaignFinished {
                campaign_id: id,
                results,
            } if Some(id) == campaign_id => return results,
            _ => {}
        }
    }
    panic!("the service stopped notifying");
}

/// How a campaign run went.
struct Run {
    _directory: tempfile::TempDir,
    /// The agent's database, after the run.
    storage: Storage,
    results: BTreeMap<DeviceStatus, usize>,
    log: DeviceLog,
    ether: Rc<Ether>,
    chip: SimChip,
    joins: u32,
}

/// Runs the agent and the device until the campaign is over (or, without one, for the
/// scenario's limit).
async fn run(scenario: Scenario) -> Run {
    let Setup {
        _directory,
        database,
        service,
        mut notifications,
        air,
        clock,
        chip,
        trust,
        campaign_id,
    } = setup(&scenario);
    let micros = |at: Duration| at.as_micros() as u64;
    let ether = Rc::new(Ether {
        clock,
        region: Region::new(RegionName::Eu868, RegionOptions::default()),
        to_service: air.to_service.clone(),
        frames: RefCell::new(Vec::new()),
        arrived: Notify::new(),
        downlinks_reach_the_device: Cell::new(true),
        deaf_us: scenario.deaf.map(|(from, to)| (micros(from), micros(to))),
        radio_fails_after: scenario.radio_fails_after,
        radio_wedged_after_multicast_frames: Cell::new(
            scenario.radio_wedged_after_multicast_frames,
        ),
        failed_transmissions: RefCell::new(Vec::new()),
        multicast_loss_every: 10,
        multicast_heard: Cell::new(0),
        multicast_lost: Cell::new(0),
        multicast_heard_at_us: RefCell::new(Vec::new()),
        multicast_channel: scenario.multicast_channel,
        uplinks: RefCell::new(Vec::new()),
        gateway_hears_up_to_dr: scenario.gateway_hears_up_to_dr,
        uplink_log: RefCell::new(Vec::new()),
    });
    let log = Rc::new(RefCell::new(DeviceLog::default()));
    let joins = Cell::new(0);
    let started = tokio::time::Instant::now();
    let device = run_device(
        chip.clone(),
        ether.clone(),
        trust.clone(),
        log.clone(),
        scenario,
    );
    let results = tokio::select! {
        outcome = service.run(std::future::pending()) => panic!("the agent stopped: {:?}", outcome.err()),
        halted = device => panic!("the device stopped: {halted}"),
        () = carry_transmissions(air.on_air, ether.clone()) => panic!("the gateway stopped"),
        results = campaign_results(&mut notifications, campaign_id, &joins) => results,
        () = tokio::time::sleep(scenario.limit) => {
            assert!(!scenario.campaign, "no result in {:?} of virtual time; device: {:?}", scenario.limit, log.borrow());
            BTreeMap::new()
        }
    };
    let log = log.take();
    assert_off_times_kept(&ether.uplinks.borrow());
    eprintln!(
        "campaign over in {} virtual s: {results:?}; {} uplinks, {} multicast frames sent, {} heard, {} lost; {:?}",
        started.elapsed().as_secs(),
        ether.uplinks.borrow().len(),
        ether.multicast_frames_sent_at_us().len(),
        ether.multicast_heard.get(),
        ether.multicast_lost.get(),
        log
    );
    Run {
        storage: Storage::open_reader(&database).unwrap(),
        _directory,
        results,
        log,
        ether,
        chip,
        joins: joins.get(),
    }
}

#[tokio::test(start_paused = true)]
async fn the_firmware_link_joins_downloads_installs_and_confirms_an_update_from_the_agent() {
    let Run {
        results,
        log,
        ether,
        chip,
        joins,
        storage,
        ..
    } = run(Scenario::update(6 * 1024)).await;
    assert_device_ended(&results, DeviceStatus::Successful, &log);
    assert!(
        ether.multicast_lost.get() > 0,
        "the FEC had something to do"
    );
    assert_eq!(
        ether.multicast_frames_missed_mid_session(),
        Vec::<u64>::new()
    );
    // Factory image, then the update on trial (what became of it is recorded once it
    // confirms or is reverted); the link confirmed it on its first downlink.
    assert_eq!(
        log.boots,
        vec![
            (FACTORY.to_ts006(), false, None),
            (TARGET.to_ts006(), true, None)
        ]
    );
    assert_eq!(
        log.resets,
        vec![Some(ResetReason::Reboot {
            install_update: true
        })]
    );
    assert!(chip.confirmed(), "the new image confirmed itself");
    // One join (DevNonce 0), and the session resumed after the update's reboot: the
    // agent accepted the new image's uplinks without a second join.
    assert_eq!(joins, 1);
    assert_eq!(log.next_dev_nonce, vec![1]);
    assert_eq!(
        storage
            .highest_dev_nonce(DevEui::from(DEV_EUI), JoinEui::from(JOIN_EUI))
            .unwrap(),
        Some(0)
    );
    assert_within_duty_cycle(&ether.uplinks.borrow());
}

/// The campaign's results: the one device ended `status`.
fn assert_device_ended(
    results: &BTreeMap<DeviceStatus, usize>,
    status: DeviceStatus,
    log: &DeviceLog,
) {
    assert_eq!(results, &BTreeMap::from([(status, 1)]), "device: {log:?}");
}

/// Each transmission is followed by at least 99 times its airtime of silence (EU868's
/// 1 % sub-bands), to the millisecond.
fn assert_within_duty_cycle(uplinks: &[(u64, u64)]) {
    assert!(uplinks.len() > 10, "{} uplinks", uplinks.len());
    assert_off_times_kept(uplinks);
}

/// Each transmission is followed by at least 99 times its airtime of silence, resets
/// included (every run is checked).
fn assert_off_times_kept(uplinks: &[(u64, u64)]) {
    for pair in uplinks.windows(2) {
        let ((start, end), (next_start, _)) = (pair[0], pair[1]);
        let off_time = (end - start) * 99;
        assert!(
            next_start + 1_000 >= end + off_time,
            "an uplink at {next_start} µs, {} ms after one of {} µs on air (at {start} µs)",
            (next_start - end) / 1_000,
            end - start
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_device_that_joins_again_after_the_updates_reboot_uses_the_next_dev_nonce() {
    let Run {
        results,
        log,
        ether,
        joins,
        storage,
        ..
    } = run(Scenario {
        resume_session: false,
        ..Scenario::update(2 * 1024)
    })
    .await;
    assert_device_ended(&results, DeviceStatus::Successful, &log);
    // DevNonce 0 at the first join, 1 after the reboot: the counter survived it, went
    // through lorawan-device's RNG, and the agent (LoRaWAN 1.0.4) accepted it as new.
    assert_eq!(joins, 2);
    assert_eq!(log.next_dev_nonce, vec![1]);
    let dev_eui = DevEui::from(DEV_EUI);
    assert_eq!(
        storage
            .highest_dev_nonce(dev_eui, JoinEui::from(JOIN_EUI))
            .unwrap(),
        Some(1)
    );
    assert_eq!(storage.dev_nonce_count(dev_eui).unwrap(), 2);
    assert_within_duty_cycle(&ether.uplinks.borrow());
}

#[tokio::test(start_paused = true)]
async fn an_update_that_hears_no_downlink_on_trial_is_reset_at_its_deadline_and_reverted() {
    let Run {
        results,
        log,
        chip,
        joins,
        ..
    } = run(Scenario {
        deaf_on_trial: true,
        ..Scenario::update(2 * 1024)
    })
    .await;
    assert_eq!(
        log.boots,
        vec![
            (FACTORY.to_ts006(), false, None),
            (TARGET.to_ts006(), true, None),
            (
                FACTORY.to_ts006(),
                false,
                Some(LastUpdate::Reverted {
                    version: TARGET.to_ts006()
                })
            ),
        ],
        "{results:?}"
    );
    assert_eq!(
        log.resets[..2],
        [
            Some(ResetReason::Reboot {
                install_update: true
            }),
            Some(ResetReason::TrialExpired)
        ]
    );
    // The deadline, not before: 30 minutes after the start of the image on trial.
    assert_eq!(log.ran_s[1], 30 * 60);
    assert!(chip.confirmed(), "the factory image runs confirmed again");
    // The agent learns it from the version the device reports after the revert.
    assert_device_ended(&results, DeviceStatus::VersionMismatch, &log);
    // The old image resumed the session: no second join.
    assert_eq!(joins, 1);
}

/// The MAC record the device keeps in its flash.
fn mac_record(chip: &SimChip) -> MacRecord {
    let mut buffer = [0u8; fuota_node::MAC_RECORD_MAX_LEN];
    let len = chip
        .store()
        .load_record(RECORD_LORAWAN, &mut buffer)
        .unwrap()
        .expect("a saved MAC record");
    MacRecord::decode(&buffer[..len]).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_device_the_network_stops_answering_joins_again_with_fresh_dev_nonces() {
    // Joined, then no downlink for two hours: three confirmed uplinks (one in 12, every
    // 2 minutes) go unacknowledged, the device takes the session as lost and sends join
    // requests, within the join backoff, until the network answers again.
    let Run {
        log,
        ether,
        chip,
        joins,
        storage,
        ..
    } = run(Scenario {
        deaf: Some((
            Duration::from_secs(600),
            Duration::from_secs(2 * 3600 + 600),
        )),
        ..Scenario::quiet(Duration::from_secs(4 * 3600))
    })
    .await;
    assert!(log.resets.is_empty(), "{log:?}");
    // Every join request the device sent reached the agent with its own DevNonce, in
    // order: the agent saw as many as the device counted, the last one the highest.
    // (The agent answered each; the device heard the first and the last.)
    let record = mac_record(&chip);
    assert!(record.next_dev_nonce > 2, "{record:?}");
    assert_eq!(joins, u32::from(record.next_dev_nonce));
    let dev_eui = DevEui::from(DEV_EUI);
    // The device runs on the session of the last join accept, and the agent took its
    // uplinks on it after the silence.
    let device_session = record.session.expect("a session after the silence");
    let agent_session = storage
        .session(dev_eui)
        .unwrap()
        .expect("the agent's session");
    assert_eq!(device_session.dev_addr, agent_session.dev_addr.to_u32());
    assert_eq!(
        &device_session.nwk_s_key,
        agent_session.nwk_s_key.as_bytes()
    );
    assert!(agent_session.last_f_cnt_up.is_some(), "{agent_session:?}");
    assert_eq!(
        storage.dev_nonce_count(dev_eui).unwrap(),
        u32::from(record.next_dev_nonce)
    );
    assert_eq!(
        storage
            .highest_dev_nonce(dev_eui, JoinEui::from(JOIN_EUI))
            .unwrap(),
        Some(record.next_dev_nonce - 1)
    );
    assert_within_duty_cycle(&ether.uplinks.borrow());
}

#[tokio::test(start_paused = true)]
async fn a_radio_that_stops_answering_resets_the_device_after_five_failures() {
    let Run { log, ether, .. } = run(Scenario {
        radio_fails_after: Some(4),
        ..Scenario::quiet(Duration::from_secs(3600))
    })
    .await;
    assert_eq!(
        log.resets.first(),
        Some(&Some(ResetReason::RadioUnresponsive)),
        "{log:?}"
    );
    let failures = ether.failed_transmissions.borrow();
    assert!(failures.len() >= 5, "{} failures", failures.len());
    // The first boot's five, then the next boot's; a failed transmission is spaced
    // like a sent one.
    assert!(log
        .resets
        .iter()
        .all(|reason| *reason == Some(ResetReason::RadioUnresponsive)));
    assert_eq!(failures.len(), 5 * log.resets.len() + failures.len() % 5);
}

#[tokio::test(start_paused = true)]
async fn a_power_cut_in_the_middle_of_the_download_resumes_it_and_the_session() {
    // The image is 60 fragments and more; the power goes after 50 multicast frames.
    let Run {
        results,
        log,
        ether,
        chip,
        joins,
        ..
    } = run(Scenario {
        power_cut_after_multicast_frames: Some(50),
        ..Scenario::update(12 * 1024)
    })
    .await;
    assert_device_ended(&results, DeviceStatus::Successful, &log);
    assert_eq!(
        log.resets,
        vec![
            None,
            Some(ResetReason::Reboot {
                install_update: true
            })
        ]
    );
    assert_eq!(
        log.boots,
        vec![
            (FACTORY.to_ts006(), false, None),
            (FACTORY.to_ts006(), false, None),
            (TARGET.to_ts006(), true, None)
        ]
    );
    assert!(chip.confirmed());
    // The session and its frame counters survived the cut: no second join, and the
    // agent took the uplinks after it (it refuses a frame counter used before).
    assert_eq!(joins, 1);
    assert_eq!(log.next_dev_nonce, vec![1, 1]);
    // The 45 fragments received before the cut (50 heard, 1 in 10 lost) were kept but
    // for those the journal still held in RAM (it writes a record per window of 40):
    // the node replayed the rest from its journal and the download went on from there.
    assert_eq!(log.resumed_fragments[0], None);
    assert!(
        log.resumed_fragments[1].is_some_and(|replayed| replayed >= 20),
        "{:?}",
        log.resumed_fragments
    );
    assert_within_duty_cycle(&ether.uplinks.borrow());
}

#[tokio::test(start_paused = true)]
async fn a_reset_for_a_wedged_radio_keeps_every_fragment_received() {
    let Run {
        results, log, chip, ..
    } = run(Scenario {
        radio_wedged_after_multicast_frames: Some(20),
        ..Scenario::update(12 * 1024)
    })
    .await;
    assert_device_ended(&results, DeviceStatus::Successful, &log);
    assert_eq!(log.resets[0], Some(ResetReason::RadioUnresponsive));
    assert!(chip.confirmed());
    // The link flushed the node's journal before the reset it asked for, so every
    // fragment given to the node before it is replayed, but those whose flash granule
    // shared with a neighbour waits for that neighbour: the two beside each lost
    // fragment, and the one after the last received. (Without the flush, only whole
    // windows of 40 survive: 29 here.)
    let (delivered, lost) = log.multicast_delivered[0];
    assert!(delivered > 40 && delivered < 56, "all uncoded: {delivered}");
    let replayed = u64::from(log.resumed_fragments[1].expect("a resumed download"));
    assert!(
        (delivered - 2 * lost - 1..=delivered).contains(&replayed),
        "{replayed} of {delivered} fragments replayed ({lost} lost)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_device_the_gateway_hears_only_at_sf10_joins_there_and_updates_on_another_channel() {
    // The multicast session on neither RX2's frequency nor its data rate, nor the
    // device's uplink data rate: 868.3 MHz at DR3.
    let channel = MulticastChannel {
        frequency_hz: 868_300_000,
        data_rate: 3,
    };
    let Run {
        results,
        log,
        ether,
        chip,
        joins,
        ..
    } = run(Scenario {
        gateway_hears_up_to_dr: Some(2),
        multicast_channel: channel,
        ..Scenario::update(6 * 1024)
    })
    .await;
    assert_device_ended(&results, DeviceStatus::Successful, &log);
    let heard = ether.multicast_heard_at_us.borrow().len();
    assert!(heard > 20, "{heard} multicast frames heard on {channel:?}");
    assert_eq!(
        ether.multicast_frames_missed_mid_session(),
        Vec::<u64>::new()
    );
    assert!(chip.confirmed(), "the new image confirmed itself");
    assert_eq!(joins, 1);
    let uplinks = ether.uplink_log.borrow();
    let (joins_sent, data): (Vec<SentUplink>, Vec<SentUplink>) =
        uplinks.iter().partition(|uplink| uplink.join_request);
    // The join requests stepped down from SF7 until the gateway heard one, at SF10.
    assert_eq!(
        joins_sent
            .iter()
            .map(|uplink| (uplink.data_rate, uplink.heard))
            .collect::<Vec<_>>(),
        vec![(5, false), (4, false), (3, false), (2, true)]
    );
    // Every data uplink of the session, before the update's reboot and after it (the
    // session resumed with its data rate), went at SF10 and was heard.
    assert!(data.len() > 10, "{} data uplinks", data.len());
    assert!(
        data.iter()
            .all(|uplink| uplink.data_rate == 2 && uplink.heard),
        "{data:?}"
    );
    assert_eq!(log.boots.len(), 2, "the update's reboot: {:?}", log.boots);
    assert_within_duty_cycle(&ether.uplinks.borrow());
}

#[tokio::test(start_paused = true)]
async fn the_periodic_uplink_waits_while_the_multicast_session_runs() {
    // An uplink every 10 s: without the wait, several would fall in the session, each
    // taking the radio off the multicast channel for its RX windows.
    let Run {
        results,
        log,
        ether,
        ..
    } = run(Scenario {
        uplink_period: Duration::from_secs(10),
        ..Scenario::update(12 * 1024)
    })
    .await;
    assert_device_ended(&results, DeviceStatus::Successful, &log);
    let heard = ether.multicast_heard_at_us.borrow().clone();
    assert!(heard.len() > 50, "{} multicast frames heard", heard.len());
    assert_eq!(
        ether.multicast_frames_missed_mid_session(),
        Vec::<u64>::new()
    );
    // The periodic uplinks went on before the session and after it.
    let (first, last) = (heard[0], heard[heard.len() - 1]);
    let uplinks = ether.uplinks.borrow();
    assert!(uplinks.iter().filter(|(start, _)| *start < first).count() > 10);
    assert!(uplinks.iter().filter(|(start, _)| *start > last).count() > 10);
}
