//! One simulated STM32WL node: a 256 KB flash chip on the real layout (`fuota-boot`'s
//! simulated flash), the real bootloader run at every reset (signature, hardware and
//! anti-rollback checks, swap, trial), the real node core (`fuota-node`) on top, and a
//! small ABP LoRaWAN MAC of its own (uplinks built and downlinks checked with the
//! `lorawan` crate), since the devices are provisioned with a session rather than
//! joined. RAM (the node core) is lost at each reset; the chip is not.

use std::cell::RefCell;
use std::rc::Rc;

use fuota_boot::sim::{SimFlash, SimFlashError};
use fuota_boot::{
    boot, confirm_image, read_boot_state, request_update, BootConfig, BootDecision, FlashWindow,
    Phase, Region, Watchdog, WindowError, STM32WL55JC,
};
use fuota_node::{
    Action, ErasableRegion, Eu868, FlashSessionStore, FlashStoreError, FuotaNode, Instant,
    LastUpdate, NodeConfig, NodeParts, PendingUpdate, Platform, RandomSource, RunningImage,
    SessionStore, UpdateAgent, FRAGMENT_RECORD_LEN,
};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey, AES128};
use lorawan::parser::{parse, DataHeader, DataPayload, FRMPayload, PhyPayload};
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::fec::FlashRegion;
use lorawan_fuota::image::TrustedKey;

use crate::identifiers::{DevAddr, DevEui};

/// The chip layout of every simulated node.
const LAYOUT: fuota_boot::Layout = STM32WL55JC;
/// The FEC decoder's RAM the firmware lends the node core.
const WORKSPACE: usize = 16 * 1024;

type Chip = Rc<RefCell<SimFlash>>;

/// A region of the chip as the node core's flash.
#[derive(Clone)]
pub struct Area {
    chip: Chip,
    region: Region,
}

impl FlashRegion for Area {
    type Error = WindowError<SimFlashError>;

    fn write_granule(&self) -> usize {
        8
    }

    fn capacity(&self) -> usize {
        self.region.len as usize
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        let offset = u32::try_from(offset).unwrap_or(u32::MAX);
        FlashWindow::new(&mut *self.chip.borrow_mut(), self.region).read_at(offset, buffer)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        let offset = u32::try_from(offset).unwrap_or(u32::MAX);
        FlashWindow::new(&mut *self.chip.borrow_mut(), self.region).program_at(offset, data)
    }
}

impl ErasableRegion for Area {
    fn erase_prefix(&mut self, len: usize) -> Result<(), Self::Error> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        FlashWindow::new(&mut *self.chip.borrow_mut(), self.region).erase_prefix(len)
    }
}

/// The node's settings and fragment journal, in the chip's application state pages.
#[derive(Clone)]
pub struct Store(Rc<RefCell<FlashSessionStore<Area>>>);

/// What the node's store can fail with.
pub type StoreError = FlashStoreError<WindowError<SimFlashError>>;

impl Store {
    /// Reads record `kind` into `buffer`: its length, `None` if it was never saved.
    pub fn load_record(&self, kind: u8, buffer: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.0.borrow_mut().load_record(kind, buffer)
    }

    /// Replaces record `kind` (atomically: a cut leaves the old or the new one).
    pub fn save_record(&self, kind: u8, record: &[u8]) -> Result<(), StoreError> {
        self.0.borrow_mut().save_record(kind, record)
    }
}

impl SessionStore for Store {
    type Error = StoreError;

    fn load_state(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.0.borrow_mut().load_state(buffer)
    }

    fn save_state(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.0.borrow_mut().save_state(record)
    }

    fn append_fragment(&mut self, record: &[u8; FRAGMENT_RECORD_LEN]) -> Result<(), StoreError> {
        self.0.borrow_mut().append_fragment(record)
    }

    fn read_fragment(
        &mut self,
        index: usize,
    ) -> Result<Option<[u8; FRAGMENT_RECORD_LEN]>, StoreError> {
        self.0.borrow_mut().read_fragment(index)
    }

    fn clear_fragments(&mut self) -> Result<(), StoreError> {
        self.0.borrow_mut().clear_fragments()
    }
}

/// The hand-over to the bootloader, through the boot crate's application calls.
pub struct HandOver {
    chip: Chip,
}

impl UpdateAgent for HandOver {
    type Error = String;

    fn mark_update_pending(&mut self, _update: &PendingUpdate) -> Result<(), String> {
        request_update(&mut *self.chip.borrow_mut(), &LAYOUT).map_err(|e| format!("{e:?}"))
    }

    fn confirm_running_image(&mut self) -> Result<(), String> {
        confirm_image(&mut *self.chip.borrow_mut(), &LAYOUT)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }
}

/// splitmix64: the node's random source (BlockAckDelay, DevNonce), seeded per boot.
pub struct SeededRng(u64);

impl RandomSource for SeededRng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 32) as u32
    }
}

/// The simulated board.
pub struct Board;

impl Platform for Board {
    type FlashError = WindowError<SimFlashError>;
    type DownloadSlot = Area;
    type FecLog = Area;
    type Store = Store;
    type Rng = SeededRng;
    type Region = SimRegion;
    type Updater = HandOver;
}

/// The independent watchdog, which the simulation never lets fire.
struct NoWatchdog;

impl Watchdog for NoWatchdog {
    fn start(&mut self) {}
}

/// What a node is provisioned with.
#[derive(Clone)]
pub struct NodeIdentity {
    /// DevEUI.
    pub dev_eui: DevEui,
    /// ABP session: DevAddr.
    pub dev_addr: DevAddr,
    /// ABP session: NwkSKey.
    pub nwk_s_key: Key128,
    /// ABP session: AppSKey.
    pub app_s_key: Key128,
    /// GenAppKey (the FUOTA packages' root key).
    pub gen_app_key: Key128,
    /// Hardware version (TS006).
    pub hardware_version: u32,
    /// The keys the bootloader and the node accept images from.
    pub trusted_keys: Vec<TrustedKey>,
    /// The region whose channel rules the node applies.
    pub region: crate::lorawan::region::RegionName,
}

/// The node's region rules, chosen at run time from the simulated network's region.
#[derive(Debug, Clone, Copy)]
pub struct SimRegion(crate::lorawan::region::RegionName);

impl fuota_node::RegionCheck for SimRegion {
    fn is_valid_downlink_frequency(&self, frequency_hz: u32) -> bool {
        use crate::lorawan::region::RegionName;
        match self.0 {
            RegionName::Eu868 => Eu868.is_valid_downlink_frequency(frequency_hz),
            RegionName::Us915 => fuota_node::Us915.is_valid_downlink_frequency(frequency_hz),
            _ => fuota_node::As923.is_valid_downlink_frequency(frequency_hz),
        }
    }

    fn is_valid_downlink_data_rate(&self, data_rate: u8) -> bool {
        use crate::lorawan::region::RegionName;
        match self.0 {
            RegionName::Eu868 => Eu868.is_valid_downlink_data_rate(data_rate),
            RegionName::Us915 => fuota_node::Us915.is_valid_downlink_data_rate(data_rate),
            _ => fuota_node::As923.is_valid_downlink_data_rate(data_rate),
        }
    }
}

/// A simulated STM32WL55JC: its flash on the real layout, the bootloader that runs on
/// it at each reset, and the node core's platform on top (download slot, FEC log,
/// session store, hand-over). Clones share the chip.
#[derive(Clone)]
pub struct SimChip {
    chip: Chip,
    store: Store,
}

/// What the bootloader jumped into.
#[derive(Debug, Clone, Copy)]
pub struct BootedImage {
    /// Its TS006 version.
    pub version: u32,
    /// Whether it runs on trial, and what became of the last update.
    pub running: RunningImage,
}

impl SimChip {
    /// A chip whose primary slot holds `factory_image` (never booted yet).
    pub fn new(factory_image: &[u8]) -> Result<Self, String> {
        let mut flash = SimFlash::for_layout(&LAYOUT);
        flash.load(LAYOUT.primary.start, factory_image);
        let chip: Chip = Rc::new(RefCell::new(flash));
        let areas = LAYOUT.app_state_areas();
        let area = |region| Area {
            chip: chip.clone(),
            region,
        };
        let store = FlashSessionStore::new(
            [area(areas.settings[0]), area(areas.settings[1])],
            area(areas.journal),
        )
        .map_err(|error| format!("the node's store: {error:?}"))?;
        Ok(SimChip {
            chip,
            store: Store(Rc::new(RefCell::new(store))),
        })
    }

    /// A reset: the bootloader (with the watchdog never firing) verifies, installs or
    /// reverts, and jumps. An error means it halted (no bootable image).
    pub fn boot(
        &self,
        trusted_keys: &[TrustedKey],
        hardware_version: u32,
    ) -> Result<BootedImage, String> {
        let mut config = BootConfig::new(LAYOUT, trusted_keys);
        config.verify_options = config.verify_options.require_hardware(hardware_version);
        let report = boot(&mut *self.chip.borrow_mut(), &config, &mut NoWatchdog)
            .map_err(|error| format!("bootloader: {error:?}"))?;
        let BootDecision::Jump { image, trial } = report.decision else {
            return Err(format!("the bootloader halted: {:?}", report.decision));
        };
        Ok(BootedImage {
            version: image.version.to_ts006(),
            running: RunningImage {
                on_trial: trial,
                last_update: report.state.last_update.map(LastUpdate::from),
            },
        })
    }

    /// The node core's parts on this chip, its random source seeded with `seed`.
    pub fn node_parts(
        &self,
        config: NodeConfig,
        seed: u64,
        region: crate::lorawan::region::RegionName,
    ) -> NodeParts<Board> {
        let area = |region| Area {
            chip: self.chip.clone(),
            region,
        };
        NodeParts::<Board>::new(
            config,
            area(LAYOUT.download_image()),
            area(LAYOUT.fec_log),
            self.store.clone(),
            SeededRng(seed),
            SimRegion(region),
            HandOver {
                chip: self.chip.clone(),
            },
        )
    }

    /// The session store the node core uses, for the firmware's own records beside it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the running image is confirmed (the bootloader's state is idle: no
    /// trial, no pending update).
    pub fn confirmed(&self) -> bool {
        read_boot_state(&mut *self.chip.borrow_mut(), &LAYOUT).phase == Phase::Idle
    }
}

/// A downlink the node's MAC accepted, for the node core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedDownlink {
    /// FPort.
    pub f_port: u8,
    /// Decrypted payload.
    pub payload: Vec<u8>,
}

/// One simulated node.
pub struct SimNode {
    /// Provisioning.
    pub identity: NodeIdentity,
    chip: SimChip,
    node: Option<FuotaNode<'static, Board>>,
    /// Simulation ms of the last reset: the node's monotonic clock starts there.
    boot_ms: u64,
    seed: u64,
    f_cnt_up: u32,
    last_f_cnt_down: Option<u32>,
    /// The firmware version (TS006) the bootloader last jumped into.
    pub running_version: u32,
    /// Whether that image runs on trial.
    pub on_trial: bool,
    /// Resets so far.
    pub resets: u32,
    /// Listening in Class C on (frequency, data rate).
    pub class_c: Option<(u32, u8)>,
    /// Multicast frames the node core accepted.
    pub multicast_received: u64,
}

impl SimNode {
    /// A node whose primary slot holds `factory_image`, reset at `now_ms`.
    pub fn new(
        identity: NodeIdentity,
        factory_image: &[u8],
        seed: u64,
        now_ms: u64,
    ) -> Result<Self, String> {
        let mut node = SimNode {
            identity,
            chip: SimChip::new(factory_image)?,
            node: None,
            boot_ms: now_ms,
            seed,
            f_cnt_up: 0,
            last_f_cnt_down: None,
            running_version: 0,
            on_trial: false,
            resets: 0,
            class_c: None,
            multicast_received: 0,
        };
        node.reset(now_ms)?;
        Ok(node)
    }

    fn instant(&self, now_ms: u64) -> Instant {
        Instant::from_millis(now_ms.saturating_sub(self.boot_ms))
    }

    /// A reset: the bootloader runs on the chip, then the node core starts on the image
    /// it jumped into. An error means the bootloader halted (no bootable image).
    pub fn reset(&mut self, now_ms: u64) -> Result<(), String> {
        self.node = None;
        self.class_c = None;
        self.boot_ms = now_ms;
        self.resets += 1;
        let booted = self
            .chip
            .boot(&self.identity.trusted_keys, self.identity.hardware_version)?;
        self.running_version = booted.version;
        self.on_trial = booted.running.on_trial;
        let mut config = NodeConfig::new(
            self.identity.gen_app_key,
            self.running_version,
            self.identity.hardware_version,
        );
        config.max_uplink_payload = 51;
        for key in &self.identity.trusted_keys {
            config
                .trusted_keys
                .push(key.clone())
                .map_err(|_| "too many trusted keys for the node".to_string())?;
        }
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let parts = self
            .chip
            .node_parts(config, self.seed, self.identity.region)
            .with_running_image(booted.running);
        // The node core borrows its workspace for its lifetime: one per boot, a few
        // resets per node in a simulation.
        let workspace: &'static mut [u8] = Box::leak(vec![0u8; WORKSPACE].into_boxed_slice());
        let (node, _) = FuotaNode::start(parts, workspace, Instant::from_millis(0));
        self.node = Some(node);
        Ok(())
    }

    /// Runs the node core's due actions (Class C on/off, reboots); `Err` if a reboot
    /// left the node without a bootable image.
    pub fn run_actions(&mut self, now_ms: u64) -> Result<(), String> {
        loop {
            let instant = self.instant(now_ms);
            let Some(action) = self.node.as_mut().and_then(|n| n.poll_action(instant)) else {
                return Ok(());
            };
            match action {
                Action::StartClassC {
                    frequency_hz,
                    data_rate,
                    ..
                } => self.class_c = Some((frequency_hz, data_rate)),
                Action::ReturnToClassA => self.class_c = None,
                Action::Reboot { .. } => self.reset(now_ms)?,
                Action::RecycleWorkspace => {
                    if let Some(node) = self.node.take() {
                        let parts = node.into_parts();
                        let workspace: &'static mut [u8] =
                            Box::leak(vec![0u8; WORKSPACE].into_boxed_slice());
                        self.node = Some(FuotaNode::start(parts, workspace, instant).0);
                    }
                }
            }
        }
    }

    /// The node core's next uplink (FPort, payload), if one is due.
    pub fn poll_uplink(&mut self, now_ms: u64) -> Option<(u8, Vec<u8>)> {
        let instant = self.instant(now_ms);
        self.node
            .as_mut()
            .and_then(|n| n.poll_uplink(instant))
            .map(|uplink| (uplink.fport, uplink.payload.to_vec()))
    }

    /// An unconfirmed data uplink frame carrying `payload` on `f_port`.
    pub fn build_uplink(&mut self, f_port: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut creator = DataPayloadCreator::new();
        creator
            .set_uplink(true)
            .set_confirmed(false)
            .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(
                self.identity.dev_addr.to_u32().to_le_bytes(),
            ))
            .set_fcnt(self.f_cnt_up)
            .set_f_port(f_port);
        let frame = creator
            .build(
                payload,
                &[],
                &NewSKey::from(*self.identity.nwk_s_key.as_bytes()),
                &AppSKey::from(*self.identity.app_s_key.as_bytes()),
            )
            .map_err(|error| format!("building an uplink: {error:?}"))?
            .to_vec();
        self.f_cnt_up = self.f_cnt_up.wrapping_add(1);
        Ok(frame)
    }

    /// A frame heard in a receive window: the MAC checks it is for this device (DevAddr,
    /// MIC, FCntDown above the last), decrypts it, and gives an application payload to
    /// the node core. Returns what it accepted.
    pub fn receive_unicast(&mut self, now_ms: u64, phy_payload: &[u8]) -> Option<AcceptedDownlink> {
        let Ok(PhyPayload::Data(DataPayload::Encrypted(frame))) = parse(phy_payload.to_vec())
        else {
            return None;
        };
        if frame.is_uplink() {
            return None;
        }
        let addr = frame.fhdr().dev_addr();
        if u32::from_le_bytes([
            addr.as_ref()[0],
            addr.as_ref()[1],
            addr.as_ref()[2],
            addr.as_ref()[3],
        ]) != self.identity.dev_addr.to_u32()
        {
            return None;
        }
        let wire = u32::from(frame.fhdr().fcnt());
        let f_cnt = match self.last_f_cnt_down {
            Some(last) => {
                let candidate = (last & 0xffff_0000) | wire;
                if candidate > last {
                    candidate
                } else {
                    candidate.checked_add(0x1_0000)?
                }
            }
            None => wire,
        };
        let nwk = AES128(*self.identity.nwk_s_key.as_bytes());
        let app = AES128(*self.identity.app_s_key.as_bytes());
        if !frame.validate_mic(&nwk, f_cnt) {
            return None;
        }
        self.last_f_cnt_down = Some(f_cnt);
        let decrypted = frame.decrypt(Some(&nwk), Some(&app), f_cnt).ok()?;
        let f_port = decrypted.f_port().filter(|port| *port != 0)?;
        let FRMPayload::Data(data) = decrypted.frm_payload() else {
            return None;
        };
        let accepted = AcceptedDownlink {
            f_port,
            payload: data.to_vec(),
        };
        let instant = self.instant(now_ms);
        if let Some(node) = self.node.as_mut() {
            node.handle_downlink(instant, f_port, &accepted.payload);
        }
        Some(accepted)
    }

    /// A Class C multicast frame heard while listening: the node core checks and takes
    /// it (McAddr, MIC, FCnt window, fragment).
    pub fn receive_multicast(&mut self, now_ms: u64, phy_payload: &[u8]) -> bool {
        let instant = self.instant(now_ms);
        let accepted = self
            .node
            .as_mut()
            .is_some_and(|node| node.handle_multicast_frame(instant, phy_payload).is_ok());
        if accepted {
            self.multicast_received += 1;
        }
        accepted
    }

    /// Loses power now: RAM is gone, the chip keeps what was written; the bootloader
    /// runs at once.
    pub fn power_cut(&mut self, now_ms: u64) -> Result<(), String> {
        self.reset(now_ms)
    }

    /// Whether the running image is confirmed (the bootloader's state is idle: no
    /// trial, no pending update).
    pub fn confirmed(&self) -> bool {
        self.chip.confirmed()
    }

    /// The download progress: (missing, total) fragments, while a session runs.
    pub fn download_progress(&self) -> Option<(u16, u16)> {
        self.node
            .as_ref()
            .and_then(|n| n.fragmentation_progress())
            .filter(|p| !p.complete)
            .map(|p| (p.missing, p.nb_frag))
    }
}
