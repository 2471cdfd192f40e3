//! A fleet of real `fuota-node` device cores driven by the campaign engine on virtual
//! time: a tiny network server in between (unicast downlinks queued per device and
//! delivered in the window of its next uplink, multicast frames built with the
//! `lorawan` crate from the group keys the engine hands out and received by every node
//! in Class C on the session's channel, with seeded random loss), devices that send a
//! heartbeat uplink every minute besides their FUOTA answers, reboots that install the
//! verified image (the node restarts on the same flash and store, running the version
//! the bootloader was given), and agent restarts (engine and database dropped without a
//! clean shutdown, the network server's queues lost).
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use fuota_agent::campaign::{
    CampaignAction, CampaignEngine, CampaignId, CampaignSpec, DeviceStatus, MulticastFrame,
    MulticastOutcome,
};
use fuota_agent::clock::WallTime;
use fuota_agent::firmware::{FirmwareCache, ImageSigner, ImageSpec, TrustStore};
use fuota_agent::identifiers::{AesKey, DevEui, JoinEui};
use fuota_agent::lorawan::region::{Region, RegionName, RegionOptions};
use fuota_agent::storage::{Device, MacVersion, Storage};
use fuota_node::{
    Action, ErasableRegion, Eu868, FuotaNode, Instant, NodeConfig, NodeParts, PendingUpdate,
    Platform, RamSessionStore, RamStoreError, RandomSource, SessionStore, UpdateAgent,
    FRAGMENT_RECORD_LEN,
};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::parser::FCtrl;
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::FlashRegion;
use lorawan_fuota::image::ImageVersion;

/// 2026-11-01T00:00:00Z: the virtual time the fleet starts at.
pub const START_UNIX_S: i64 = 1_793_491_200;
/// Firmware the devices run: 1.2.3.
pub const RUNNING: ImageVersion = ImageVersion::new(1, 2, 3, 0);
/// Firmware of the image: 1.3.0.
pub const TARGET: ImageVersion = ImageVersion::new(1, 3, 0, 0);
/// The devices' hardware version.
pub const HARDWARE: u32 = 0x0001_0203;
/// FPort of the devices' own heartbeat uplinks.
pub const HEARTBEAT_PORT: u8 = 2;
/// A [`Behaviour::Asleep`] device is out of reach until this virtual time.
pub const ASLEEP_UNTIL_MS: u64 = 1_200_000;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node-firmware/lorawan-fuota/tests/fixtures/images"
);

// ----- the device platform -----

/// NOR flash in RAM: erased 0xFF, 8-byte granules, 2 KiB pages. A flash with a stuck
/// bit corrupts every write that covers `stuck_bit_at`.
#[derive(Debug, Clone)]
pub struct SimFlash(Rc<RefCell<FlashCells>>);

#[derive(Debug)]
struct FlashCells {
    bytes: Vec<u8>,
    stuck_bit_at: Option<usize>,
}

impl SimFlash {
    fn new(size: usize, stuck_bit_at: Option<usize>) -> Self {
        SimFlash(Rc::new(RefCell::new(FlashCells {
            bytes: vec![0xFF; size],
            stuck_bit_at,
        })))
    }
}

/// Why the simulated flash refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds;

impl FlashRegion for SimFlash {
    type Error = OutOfBounds;

    fn write_granule(&self) -> usize {
        8
    }

    fn capacity(&self) -> usize {
        self.0.borrow().bytes.len()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), OutOfBounds> {
        let cells = self.0.borrow();
        let source = cells
            .bytes
            .get(offset..offset + buffer.len())
            .ok_or(OutOfBounds)?;
        buffer.copy_from_slice(source);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        let mut cells = self.0.borrow_mut();
        let stuck = cells.stuck_bit_at;
        let target = cells
            .bytes
            .get_mut(offset..offset + data.len())
            .ok_or(OutOfBounds)?;
        target.copy_from_slice(data);
        if let Some(at) = stuck {
            if (offset..offset + data.len()).contains(&at) {
                target[at - offset] ^= 0x10;
            }
        }
        Ok(())
    }
}

impl ErasableRegion for SimFlash {
    fn erase_prefix(&mut self, len: usize) -> Result<(), OutOfBounds> {
        let mut cells = self.0.borrow_mut();
        let end = len
            .div_ceil(2048)
            .saturating_mul(2048)
            .min(cells.bytes.len());
        cells.bytes[..end].fill(0xFF);
        Ok(())
    }
}

/// The session store, kept by the device across reboots.
#[derive(Debug, Clone, Default)]
pub struct SimStore(Rc<RefCell<RamSessionStore<2048>>>);

impl SessionStore for SimStore {
    type Error = RamStoreError;

    fn load_state(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, RamStoreError> {
        self.0.borrow_mut().load_state(buffer)
    }

    fn save_state(&mut self, record: &[u8]) -> Result<(), RamStoreError> {
        self.0.borrow_mut().save_state(record)
    }

    fn append_fragment(&mut self, record: &[u8; FRAGMENT_RECORD_LEN]) -> Result<(), RamStoreError> {
        self.0.borrow_mut().append_fragment(record)
    }

    fn read_fragment(
        &mut self,
        index: usize,
    ) -> Result<Option<[u8; FRAGMENT_RECORD_LEN]>, RamStoreError> {
        self.0.borrow_mut().read_fragment(index)
    }

    fn clear_fragments(&mut self) -> Result<(), RamStoreError> {
        self.0.borrow_mut().clear_fragments()
    }
}

/// SplitMix64: deterministic randomness for devices and the channel.
#[derive(Debug, Clone)]
pub struct SimRng(pub u64);

impl RandomSource for SimRng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 32) as u32
    }
}

impl SimRng {
    /// A value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        u64::from(self.next_u32()) % bound.max(1)
    }
}

/// The bootloader hand-over: remembers the update to install at the next reset.
#[derive(Debug, Clone, Default)]
pub struct SimBootloader(Rc<RefCell<Option<PendingUpdate>>>);

impl UpdateAgent for SimBootloader {
    type Error = ();

    fn mark_update_pending(&mut self, update: &PendingUpdate) -> Result<(), ()> {
        *self.0.borrow_mut() = Some(*update);
        Ok(())
    }

    /// The simulated bootloader installs without a trial (the boot crate's own tests
    /// cover trial and revert), so there is nothing to confirm.
    fn confirm_running_image(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// The simulated platform.
pub struct SimPlatform;

impl Platform for SimPlatform {
    type FlashError = OutOfBounds;
    type DownloadSlot = SimFlash;
    type FecLog = SimFlash;
    type Store = SimStore;
    type Rng = SimRng;
    type Region = Eu868;
    type Updater = SimBootloader;
}

/// A decoder workspace that lives as long as the test (a few KiB per boot).
fn workspace() -> &'static mut [u8] {
    Box::leak(vec![0u8; 48 * 1024].into_boxed_slice())
}

// ----- devices -----

/// How a simulated device behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A working device.
    Normal,
    /// Never sends anything (out of range, battery dead).
    Silent,
    /// A flash cell of its download slot is stuck: the rebuilt block fails its MIC.
    StuckFlashBit,
    /// Already runs the target version.
    UpToDate,
    /// Loses power once in the middle of the download (the node restarts from its
    /// store and flash and resumes).
    PowerCut,
    /// Out of reach until [`ASLEEP_UNTIL_MS`]: it misses the first session entirely.
    Asleep,
    /// Its bootloader reverts the new image: it keeps running the old version.
    Reverts,
    /// Its uplinks stop reaching the gateway once it has heard a multicast fragment (it
    /// moved out of uplink range): it keeps receiving, and answers nothing.
    MuteOnceReceiving,
}

/// One simulated device: flash, store and bootloader survive reboots; the node core
/// does not.
pub struct SimDevice {
    pub dev_eui: DevEui,
    pub behaviour: Behaviour,
    pub loss_percent: u64,
    pub config: NodeConfig,
    pub node: Option<FuotaNode<'static, SimPlatform>>,
    slot: SimFlash,
    log: SimFlash,
    store: SimStore,
    bootloader: SimBootloader,
    seed: u64,
    /// Unicast downlinks waiting for this device's next uplink (the network server's
    /// queue).
    pub downlinks: VecDeque<(u8, Vec<u8>)>,
    /// Listening in Class C on `(frequency, data rate)`.
    pub class_c: Option<(u32, u8)>,
    /// Virtual ms of the last boot: the node's monotonic clock starts there.
    boot_ms: u64,
    next_heartbeat_ms: u64,
    pub reboots: u32,
    pub multicast_received: u32,
    pub multicast_lost: u32,
}

impl SimDevice {
    fn instant(&self, now_ms: u64) -> Instant {
        Instant::from_millis(now_ms - self.boot_ms)
    }

    fn boot(&mut self, now_ms: u64) {
        self.boot_ms = now_ms;
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let parts = NodeParts::new(
            self.config.clone(),
            self.slot.clone(),
            self.log.clone(),
            self.store.clone(),
            SimRng(self.seed),
            Eu868,
            self.bootloader.clone(),
        );
        let (node, _) = FuotaNode::start(parts, workspace(), Instant::from_millis(0));
        self.node = Some(node);
    }
}

/// The root key (GenAppKey) of device `n`.
pub fn gen_app_key(n: u64) -> [u8; 16] {
    let mut key = [0x2b; 16];
    key[..8].copy_from_slice(&n.to_be_bytes());
    key
}

// ----- the fleet -----

/// Options of a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Behaviour and multicast loss (percent) of each device.
    pub devices: Vec<(Behaviour, u64)>,
    /// Image body size, bytes.
    pub body_size: usize,
    /// TS004/TS005/TS003 version of the devices.
    pub package_version: PackageVersion,
    /// Seed of the channel and the devices.
    pub seed: u64,
    /// Loss of unicast uplinks and downlinks, percent (each direction).
    pub unicast_loss_percent: u64,
}

/// The agent side (database, cache, engine) and the devices.
pub struct Fleet {
    _directory: tempfile::TempDir,
    db_path: PathBuf,
    cache_dir: PathBuf,
    trust: TrustStore,
    pub storage: Option<Storage>,
    pub engine: Option<CampaignEngine>,
    pub devices: Vec<SimDevice>,
    pub image_sha256: String,
    pub image: Vec<u8>,
    /// Virtual ms since the start.
    pub now_ms: u64,
    channel: SimRng,
    /// Multicast frames waiting to go out (the network server's queue).
    multicast_queue: Vec<MulticastFrame>,
    /// Every (campaign, FCnt) the engine handed out.
    pub fcnts: HashSet<(CampaignId, u32)>,
    /// FCnts handed out twice (must stay empty).
    pub reused_fcnts: Vec<(CampaignId, u32)>,
    pub finished: BTreeMap<CampaignId, BTreeMap<DeviceStatus, usize>>,
    pub multicast_sent: u64,
    /// Unicast downlinks the engine handed out.
    pub unicast_actions: u64,
    pub agent_restarts: u32,
    unicast_loss_percent: u64,
    /// Uplinks and downlinks the channel lost.
    pub unicast_lost: u64,
}

fn region() -> Region {
    Region::new(RegionName::Eu868, RegionOptions::default())
}

impl Fleet {
    /// A database and cache with a signed image of 1.3.0 for [`HARDWARE`], and the
    /// devices, registered and booted.
    pub fn new(options: &FleetOptions) -> Fleet {
        let directory = tempfile::tempdir().unwrap();
        let db_path = directory.path().join("agent.db");
        let cache_dir = directory.path().join("images");
        let trust = TrustStore::load(&[PathBuf::from(FIXTURES).join("pubkey.pem")]).unwrap();
        let mut storage = Storage::open(&db_path).unwrap();
        let cache = FirmwareCache::open(&cache_dir, trust.clone()).unwrap();
        let signer = ImageSigner::load(&PathBuf::from(FIXTURES).join("key.pem")).unwrap();
        let mut body_rng = SimRng(options.seed ^ 0x5555);
        let body: Vec<u8> = (0..options.body_size)
            .map(|_| body_rng.next_u32() as u8)
            .collect();
        let mut spec = ImageSpec::new(TARGET);
        spec.hardware_version = Some(HARDWARE);
        let image = signer.sign_image(&body, &spec).unwrap();
        let at = WallTime::from_unix_seconds(START_UNIX_S);
        let record = cache
            .import_mcuboot(&mut storage, &image, "app-1.3.0.bin", at)
            .unwrap()
            .record()
            .clone();
        assert_eq!(record.ts006_version, Some(TARGET.to_ts006()));

        let mut devices = Vec::new();
        for (n, &(behaviour, loss_percent)) in options.devices.iter().enumerate() {
            let n = n as u64 + 1;
            let dev_eui = DevEui::from(0x70b3_d57e_d000_0000 + n);
            let mut registered = Device::new(
                dev_eui,
                JoinEui::from(0x70b3_d57e_d000_0000),
                MacVersion::V1_0_4,
            );
            registered.gen_app_key = Some(AesKey::from_bytes(gen_app_key(n)));
            registered.hardware_version = Some("stm32wl-rev3".into());
            storage
                .write(|tx| tx.insert_device(&registered, at))
                .unwrap();
            let running = if behaviour == Behaviour::UpToDate {
                TARGET
            } else {
                RUNNING
            };
            let mut config = NodeConfig::new(
                AesKey::from_bytes(gen_app_key(n)),
                running.to_ts006(),
                HARDWARE,
            )
            .with_package_versions(options.package_version);
            config.max_uplink_payload = 51;
            config
                .trusted_keys
                .push(trust.keys()[0].clone())
                .expect("one key fits");
            let stuck = (behaviour == Behaviour::StuckFlashBit).then_some(700);
            let mut device = SimDevice {
                dev_eui,
                behaviour,
                loss_percent,
                config,
                node: None,
                slot: SimFlash::new(64 * 1024, stuck),
                log: SimFlash::new(32 * 1024, None),
                store: SimStore::default(),
                bootloader: SimBootloader::default(),
                seed: options.seed.wrapping_mul(31).wrapping_add(n),
                downlinks: VecDeque::new(),
                class_c: None,
                boot_ms: 0,
                next_heartbeat_ms: 1_000 + (n * 7_919) % 60_000,
                reboots: 0,
                multicast_received: 0,
                multicast_lost: 0,
            };
            device.boot(0);
            devices.push(device);
        }
        let engine = CampaignEngine::load(&storage, region(), cache).unwrap();
        Fleet {
            _directory: directory,
            db_path,
            cache_dir,
            trust,
            storage: Some(storage),
            engine: Some(engine),
            devices,
            image_sha256: record.sha256,
            image,
            now_ms: 0,
            channel: SimRng(options.seed ^ 0xC0FF_EE00),
            multicast_queue: Vec::new(),
            fcnts: HashSet::new(),
            reused_fcnts: Vec::new(),
            finished: BTreeMap::new(),
            multicast_sent: 0,
            unicast_actions: 0,
            agent_restarts: 0,
            unicast_loss_percent: options.unicast_loss_percent,
            unicast_lost: 0,
        }
    }

    /// Signs and imports another image of `version` for [`HARDWARE`]; returns its
    /// SHA-256.
    pub fn import_image(&mut self, version: ImageVersion, body_size: usize) -> String {
        let signer = ImageSigner::load(&PathBuf::from(FIXTURES).join("key.pem")).unwrap();
        let mut rng = SimRng(u64::from(version.to_ts006()));
        let body: Vec<u8> = (0..body_size).map(|_| rng.next_u32() as u8).collect();
        let mut spec = ImageSpec::new(version);
        spec.hardware_version = Some(HARDWARE);
        let image = signer.sign_image(&body, &spec).unwrap();
        let cache = FirmwareCache::open(&self.cache_dir, self.trust.clone()).unwrap();
        let at = self.wall();
        cache
            .import_mcuboot(self.storage.as_mut().unwrap(), &image, "app.bin", at)
            .unwrap()
            .record()
            .sha256
            .clone()
    }

    /// The agent's wall time now.
    pub fn wall(&self) -> WallTime {
        WallTime::from_unix_micros((START_UNIX_S * 1000 + self.now_ms as i64) * 1000)
    }

    pub fn storage(&mut self) -> &mut Storage {
        self.storage.as_mut().unwrap()
    }

    /// Creates and starts a campaign.
    pub fn start_campaign(&mut self, spec: &CampaignSpec) -> CampaignId {
        let now = self.wall();
        let (engine, storage) = (
            self.engine.as_mut().unwrap(),
            self.storage.as_mut().unwrap(),
        );
        let id = engine.create_campaign(storage, spec, now).unwrap();
        let actions = engine.start(storage, id, now).unwrap();
        self.dispatch(actions);
        id
    }

    /// The agent is killed (no clean shutdown) and starts again: the engine reloads
    /// from the database; what the network server held in memory is lost.
    pub fn restart_agent(&mut self) {
        self.engine = None;
        self.storage = None;
        self.multicast_queue.clear();
        for device in &mut self.devices {
            device.downlinks.clear();
        }
        let storage = Storage::open(&self.db_path).unwrap();
        let cache = FirmwareCache::open(&self.cache_dir, self.trust.clone()).unwrap();
        self.engine = Some(CampaignEngine::load(&storage, region(), cache).unwrap());
        self.storage = Some(storage);
        self.agent_restarts += 1;
    }

    fn dispatch(&mut self, actions: Vec<CampaignAction>) {
        for action in actions {
            match action {
                CampaignAction::Unicast(downlink) => {
                    self.unicast_actions += 1;
                    if let Some(device) = self
                        .devices
                        .iter_mut()
                        .find(|d| d.dev_eui == downlink.dev_eui)
                    {
                        device
                            .downlinks
                            .push_back((downlink.fport, downlink.payload));
                    }
                }
                CampaignAction::Multicast(frame) => {
                    if !self.fcnts.insert((frame.id.campaign_id, frame.fcnt)) {
                        self.reused_fcnts.push((frame.id.campaign_id, frame.fcnt));
                    }
                    self.multicast_queue.push(frame);
                }
                CampaignAction::Finished {
                    campaign_id,
                    results,
                } => {
                    self.finished.insert(campaign_id, results);
                }
            }
        }
    }

    /// One second of virtual time: the engine's tick, multicast frames due, devices.
    pub fn step(&mut self) {
        self.now_ms += 1_000;
        let now = self.wall();
        let (engine, storage) = (
            self.engine.as_mut().unwrap(),
            self.storage.as_mut().unwrap(),
        );
        let actions = engine.tick(storage, now).unwrap();
        self.dispatch(actions);
        self.send_multicast_due();
        for index in 0..self.devices.len() {
            self.step_device(index);
        }
    }

    fn send_multicast_due(&mut self) {
        let now = self.wall();
        loop {
            let due = self
                .multicast_queue
                .iter()
                .enumerate()
                .filter(|(_, f)| f.not_before <= now)
                .min_by_key(|(_, f)| (f.not_before, f.fcnt))
                .map(|(i, _)| i);
            let Some(index) = due else { break };
            let frame = self.multicast_queue.remove(index);
            let outcome = if frame.not_after <= now {
                MulticastOutcome::GivenUp("the session is over".into())
            } else {
                self.transmit(&frame);
                MulticastOutcome::Sent
            };
            let (engine, storage) = (
                self.engine.as_mut().unwrap(),
                self.storage.as_mut().unwrap(),
            );
            let actions = engine
                .multicast_outcome(storage, frame.id, outcome, now)
                .unwrap();
            self.dispatch(actions);
        }
    }

    /// Builds the multicast frame like the network server does and gives it to every
    /// listening device, losing it at each device's loss rate.
    fn transmit(&mut self, frame: &MulticastFrame) {
        self.multicast_sent += 1;
        let mut creator = DataPayloadCreator::new();
        creator
            .set_confirmed(false)
            .set_uplink(false)
            .set_dev_addr(&frame.mc_addr.to_u32().to_le_bytes())
            .set_fctrl(&FCtrl::new(0, false))
            .set_fcnt(frame.fcnt)
            .set_f_port(frame.fport);
        let phy = creator
            .build(
                &frame.payload,
                &[],
                &NewSKey::from(*frame.mc_nwk_s_key.as_bytes()),
                &AppSKey::from(*frame.mc_app_s_key.as_bytes()),
            )
            .expect("a buildable multicast frame")
            .to_vec();
        for index in 0..self.devices.len() {
            let listening =
                self.devices[index].class_c == Some((frame.frequency_hz, frame.data_rate));
            if !listening || self.out_of_reach(index) {
                continue;
            }
            if self.channel.below(100) < self.devices[index].loss_percent {
                self.devices[index].multicast_lost += 1;
                continue;
            }
            let device = &mut self.devices[index];
            let instant = device.instant(self.now_ms);
            if let Some(node) = device.node.as_mut() {
                let result = node.handle_multicast_frame(instant, &phy);
                if std::env::var("SIM_TRACE").is_ok() {
                    eprintln!(
                        "{} dev{index} mc fcnt {} {:?}",
                        self.now_ms,
                        frame.fcnt,
                        result.map(|r| r.report)
                    );
                }
                if result.is_ok() {
                    device.multicast_received += 1;
                }
            }
        }
    }

    fn out_of_reach(&self, index: usize) -> bool {
        match self.devices[index].behaviour {
            Behaviour::Silent => true,
            Behaviour::Asleep => self.now_ms < ASLEEP_UNTIL_MS,
            _ => false,
        }
    }

    fn step_device(&mut self, index: usize) {
        if self.out_of_reach(index) {
            return;
        }
        let now_ms = self.now_ms;
        // A power cut once the download is half done.
        let device = &mut self.devices[index];
        if device.behaviour == Behaviour::PowerCut && device.reboots == 0 {
            let halfway = device
                .node
                .as_ref()
                .and_then(|n| n.fragmentation_progress())
                .is_some_and(|p| !p.complete && u32::from(p.missing) * 2 < u32::from(p.nb_frag));
            if halfway {
                device.node = None;
                device.class_c = None;
                device.reboots += 1;
                device.boot(now_ms);
            }
        }
        // Actions due.
        loop {
            let device = &mut self.devices[index];
            let instant = device.instant(now_ms);
            let Some(action) = device.node.as_mut().and_then(|n| n.poll_action(instant)) else {
                break;
            };
            match action {
                Action::StartClassC {
                    frequency_hz,
                    data_rate,
                    ..
                } => {
                    if std::env::var("SIM_TRACE").is_ok() {
                        eprintln!("{now_ms} dev{index} class C");
                    }
                    device.class_c = Some((frequency_hz, data_rate))
                }
                Action::ReturnToClassA => {
                    if std::env::var("SIM_TRACE").is_ok() {
                        eprintln!("{now_ms} dev{index} class A");
                    }
                    device.class_c = None
                }
                Action::Reboot { install_update } => {
                    let pending = device.bootloader.0.borrow_mut().take();
                    if install_update && device.behaviour != Behaviour::Reverts {
                        if let Some(update) = pending {
                            device.config.firmware_version = update.firmware_version;
                        }
                    }
                    device.node = None;
                    device.class_c = None;
                    device.reboots += 1;
                    device.boot(now_ms);
                }
                Action::RecycleWorkspace => {
                    let parts = device.node.take().expect("a running node").into_parts();
                    let (node, _) = FuotaNode::start(parts, workspace(), instant);
                    device.node = Some(node);
                }
            }
        }
        // An uplink: a FUOTA answer if one is due, else the heartbeat when due.
        let device = &mut self.devices[index];
        let instant = device.instant(now_ms);
        let uplink = device
            .node
            .as_mut()
            .and_then(|n| n.poll_uplink(instant))
            .map(|u| (u.fport, u.payload.to_vec()));
        let uplink = match uplink {
            Some(uplink) => Some(uplink),
            None if now_ms >= device.next_heartbeat_ms => {
                device.next_heartbeat_ms = now_ms + 60_000;
                Some((HEARTBEAT_PORT, vec![0x01]))
            }
            None => None,
        };
        let Some((fport, payload)) = uplink else {
            return;
        };
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "{now_ms} dev{index} up {fport} {payload:02x?} queue {} progress {:?}",
                device.downlinks.len(),
                device
                    .node
                    .as_ref()
                    .and_then(|n| n.fragmentation_progress())
            );
        }
        if device.behaviour == Behaviour::MuteOnceReceiving && device.multicast_received > 0 {
            return;
        }
        let dev_eui = device.dev_eui;
        if self.channel.below(100) < self.unicast_loss_percent {
            self.unicast_lost += 1;
            if std::env::var("SIM_TRACE").is_ok() {
                eprintln!("{now_ms} dev{index} lost up {fport}");
            }
            return;
        }
        let now = self.wall();
        let (engine, storage) = (
            self.engine.as_mut().unwrap(),
            self.storage.as_mut().unwrap(),
        );
        let actions = engine
            .handle_uplink(storage, dev_eui, fport, &payload, now)
            .unwrap();
        self.dispatch(actions);
        // The receive window of this uplink carries one queued downlink.
        let lost = self.channel.below(100) < self.unicast_loss_percent;
        let device = &mut self.devices[index];
        if let Some((fport, payload)) = device.downlinks.pop_front() {
            if lost {
                self.unicast_lost += 1;
                if std::env::var("SIM_TRACE").is_ok() {
                    eprintln!("{now_ms} dev{index} lost down {fport} {payload:02x?}");
                }
                return;
            }
            let instant = device.instant(now_ms + 1_000);
            if let Some(node) = device.node.as_mut() {
                let report = node.handle_downlink(instant, fport, &payload);
                if std::env::var("SIM_TRACE").is_ok() && fport != 201 {
                    eprintln!("{now_ms} dev{index} down {fport} {payload:02x?} {report:?}");
                }
            }
        }
    }

    /// Runs until the campaign finishes or `limit_s` of virtual time pass; returns
    /// whether it finished.
    pub fn run_until_finished(&mut self, id: CampaignId, limit_s: u64) -> bool {
        let end = self.now_ms + limit_s * 1000;
        while self.now_ms < end {
            self.step();
            if self.finished.contains_key(&id) {
                return true;
            }
        }
        false
    }

    /// Each device's result, by DevEUI.
    pub fn results(&mut self, id: CampaignId) -> BTreeMap<DevEui, DeviceStatus> {
        self.storage()
            .campaign_devices(id)
            .unwrap()
            .into_iter()
            .map(|d| (d.dev_eui, d.status))
            .collect()
    }

    /// The firmware version each device runs now.
    pub fn running_versions(&self) -> Vec<u32> {
        self.devices
            .iter()
            .map(|d| d.config.firmware_version)
            .collect()
    }
}
