//! Test support shared by the node's integration tests: a checked NOR flash the test
//! keeps a handle on (so a "reboot" drops the node and keeps flash and store), a test
//! platform, the agent side (commands encoded with lorawan-fuota's codec, multicast
//! frames built with the `lorawan` crate, FEC fragments from lorawan-fuota's encoder)
//! and a small MCUboot image signer.
#![allow(dead_code)]

pub mod image;

use std::cell::RefCell;
use std::rc::Rc;

use fuota_node::{
    Action, ErasableRegion, Eu868, FuotaNode, Instant, NodeConfig, NodeParts, PendingUpdate,
    Platform, RamSessionStore, RamStoreError, RandomSource, SessionStore, StartReport, UpdateAgent,
    Uplink, FRAGMENT_RECORD_LEN,
};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::maccommands::SerializableMacCommand;
use lorawan::parser::FCtrl;
use lorawan_fuota::codec::{clock_sync, encode_all, Command, PackageVersion};
use lorawan_fuota::crypto::multicast::{
    encrypt_mc_key_for_wire, mc_app_s_key, mc_ke_key, mc_nwk_s_key, mc_root_key, LorawanVersion,
};
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::fec::FlashRegion;

/// The LoRaMac-node default key, used as GenAppKey (test-vectors.md §3.2 and §4.5).
pub const GEN_APP_KEY: [u8; 16] = [
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
];
/// The McKey of test-vectors.md §3.2.
pub const MC_KEY: [u8; 16] = [
    0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00,
];
/// The McAddr of test-vectors.md §3.2 and §5.
pub const MC_ADDR: u32 = 0x2601_1234;
/// GPS time the tests' network lives at (2025-07-14T00:00:00Z).
pub const NETWORK_GPS: u64 = 1_436_486_418;
/// Running firmware 1.2.3 and hardware of the test device.
pub const RUNNING_FIRMWARE: u32 = 0x0102_0003;
pub const HARDWARE: u32 = 0x0001_0203;
/// A multicast channel that is not EU868's RX2 (869.525 MHz, DR0).
pub const SESSION_FREQUENCY_HZ: u32 = 868_300_000;
pub const SESSION_DATA_RATE: u8 = 5;

/// Parses a hex string with spaces.
pub fn bytes(hex: &str) -> Vec<u8> {
    hex::decode(hex.replace(' ', "")).expect("test hex")
}

// ----- flash -----

/// Why the checked flash refused an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlashError {
    OutOfBounds { offset: usize, length: usize },
    Misaligned { offset: usize, length: usize },
    ProgrammedTwice { offset: usize },
}

/// NOR flash: erased 0xFF, aligned granules programmed once between erases, whole-page
/// erases; every operation is counted, and every erase recorded.
#[derive(Debug)]
pub struct FlashModel {
    pub bytes: Vec<u8>,
    pub programmed: Vec<bool>,
    pub granule: usize,
    pub page_size: usize,
    pub writes: usize,
    pub bytes_written: usize,
    pub erased_pages: Vec<usize>,
}

/// A handle on a flash model; the node gets one, the test keeps another.
#[derive(Debug, Clone)]
pub struct SharedFlash(pub Rc<RefCell<FlashModel>>);

impl SharedFlash {
    /// Erased flash of `size` bytes.
    pub fn erased(size: usize, granule: usize, page_size: usize) -> Self {
        SharedFlash(Rc::new(RefCell::new(FlashModel {
            bytes: vec![0xFF; size],
            programmed: vec![false; size],
            granule,
            page_size,
            writes: 0,
            bytes_written: 0,
            erased_pages: Vec::new(),
        })))
    }

    /// A copy of `range`.
    pub fn read_bytes(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        self.0.borrow().bytes[range].to_vec()
    }

    /// Pages erased so far.
    pub fn erase_count(&self) -> usize {
        self.0.borrow().erased_pages.len()
    }

    /// Granule writes so far.
    pub fn write_count(&self) -> usize {
        self.0.borrow().writes
    }

    /// Overwrites bytes behind the node's back (to corrupt an image).
    pub fn tamper(&self, offset: usize, value: u8) {
        self.0.borrow_mut().bytes[offset] ^= value;
    }
}

impl FlashRegion for SharedFlash {
    type Error = FlashError;

    fn write_granule(&self) -> usize {
        self.0.borrow().granule
    }

    fn capacity(&self) -> usize {
        self.0.borrow().bytes.len()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), FlashError> {
        let flash = self.0.borrow();
        let end = offset + buffer.len();
        let source = flash
            .bytes
            .get(offset..end)
            .ok_or(FlashError::OutOfBounds {
                offset,
                length: buffer.len(),
            })?;
        buffer.copy_from_slice(source);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        let mut flash = self.0.borrow_mut();
        let granule = flash.granule;
        if !offset.is_multiple_of(granule) || !data.len().is_multiple_of(granule) {
            return Err(FlashError::Misaligned {
                offset,
                length: data.len(),
            });
        }
        let end = offset + data.len();
        if end > flash.bytes.len() {
            return Err(FlashError::OutOfBounds {
                offset,
                length: data.len(),
            });
        }
        if let Some(i) = (offset..end).find(|&i| flash.programmed[i]) {
            return Err(FlashError::ProgrammedTwice { offset: i });
        }
        flash.bytes[offset..end].copy_from_slice(data);
        flash.programmed[offset..end].fill(true);
        flash.writes += data.len() / granule;
        flash.bytes_written += data.len();
        Ok(())
    }
}

impl ErasableRegion for SharedFlash {
    fn erase_prefix(&mut self, len: usize) -> Result<(), FlashError> {
        let mut flash = self.0.borrow_mut();
        let len = len.min(flash.bytes.len());
        let page_size = flash.page_size;
        let pages = len.div_ceil(page_size);
        for page in 0..pages {
            let start = page * page_size;
            let end = (start + page_size).min(flash.bytes.len());
            flash.bytes[start..end].fill(0xFF);
            flash.programmed[start..end].fill(false);
            flash.erased_pages.push(page);
        }
        Ok(())
    }
}

// ----- store, randomness, bootloader -----

/// The session store, shared with the test so it survives a simulated reboot.
#[derive(Debug, Clone)]
pub struct SharedStore(pub Rc<RefCell<RamSessionStore<4096>>>);

impl SharedStore {
    pub fn new() -> Self {
        SharedStore(Rc::new(RefCell::new(RamSessionStore::new())))
    }

    pub fn journal_len(&self) -> usize {
        self.0.borrow().journal_len()
    }
}

impl SessionStore for SharedStore {
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

/// xorshift64*: deterministic randomness.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl RandomSource for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

impl TestRng {
    /// A value in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u32() as usize) % bound
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Records what was handed to the bootloader.
#[derive(Debug, Clone, Default)]
pub struct RecordingUpdater(pub Rc<RefCell<Vec<PendingUpdate>>>);

impl UpdateAgent for RecordingUpdater {
    type Error = ();

    fn mark_update_pending(&mut self, update: &PendingUpdate) -> Result<(), ()> {
        self.0.borrow_mut().push(*update);
        Ok(())
    }

    fn confirm_running_image(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// The host test platform.
pub struct TestPlatform;

impl Platform for TestPlatform {
    type FlashError = FlashError;
    type DownloadSlot = SharedFlash;
    type FecLog = SharedFlash;
    type Store = SharedStore;
    type Rng = TestRng;
    type Region = Eu868;
    type Updater = RecordingUpdater;
}

pub type Node<'w> = FuotaNode<'w, TestPlatform>;

/// A simulated device: its flash, store and bootloader survive reboots; RAM does not.
pub struct Device {
    pub config: NodeConfig,
    pub slot: SharedFlash,
    pub log: SharedFlash,
    pub store: SharedStore,
    pub updater: RecordingUpdater,
    pub seed: u64,
}

/// STM32WL-like geometry: 8-byte double-words, 2 KB pages.
pub const GRANULE: usize = 8;
pub const PAGE: usize = 2048;

impl Device {
    /// A device with a `slot_size` download slot and a `log_size` FEC log.
    pub fn new(config: NodeConfig, slot_size: usize, log_size: usize) -> Self {
        Device {
            config,
            slot: SharedFlash::erased(slot_size, GRANULE, PAGE),
            log: SharedFlash::erased(log_size, GRANULE, PAGE),
            store: SharedStore::new(),
            updater: RecordingUpdater::default(),
            seed: 0x1234_5678_9abc_def1,
        }
    }

    /// Powers the device on (or back on): a fresh node on the persistent pieces.
    pub fn boot<'w>(&mut self, workspace: &'w mut [u8], now: Instant) -> (Node<'w>, StartReport) {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let parts = NodeParts::new(
            self.config.clone(),
            self.slot.clone(),
            self.log.clone(),
            self.store.clone(),
            TestRng(self.seed),
            Eu868,
            self.updater.clone(),
        );
        FuotaNode::start(parts, workspace, now)
    }
}

/// The test device's configuration: all packages at `version`, two multicast groups,
/// trusted key from the image signer.
pub fn config(version: PackageVersion) -> NodeConfig {
    let mut config = NodeConfig::new(Key128::from_bytes(GEN_APP_KEY), RUNNING_FIRMWARE, HARDWARE)
        .with_package_versions(version);
    config.multicast_groups = 2;
    config.max_uplink_payload = 242;
    config
        .trusted_keys
        .push(image::trusted(&image::signing_key()))
        .expect("one key fits");
    config
}

// ----- agent side -----

/// An FRMPayload of `commands`, encoded with lorawan-fuota's codec.
pub fn downlink<'a, C: Command<'a>>(commands: &[C]) -> Vec<u8> {
    let mut out = [0u8; 256];
    let length = encode_all(commands, &mut out).expect("encodable test commands");
    out[..length].to_vec()
}

/// The McKey_encrypted the server sends this device for `mc_key`.
pub fn mc_key_for_device(mc_key: [u8; 16]) -> [u8; 16] {
    let kek = mc_ke_key(&mc_root_key(
        LorawanVersion::V1_0,
        &Key128::from_bytes(GEN_APP_KEY),
    ));
    encrypt_mc_key_for_wire(&kek, &Key128::from_bytes(mc_key))
}

/// The server side of a multicast group.
#[derive(Debug, Clone)]
pub struct McSender {
    pub mc_addr: u32,
    pub nwk_s_key: [u8; 16],
    pub app_s_key: [u8; 16],
    pub fcnt: u32,
}

impl McSender {
    pub fn new(mc_addr: u32, mc_key: [u8; 16], first_fcnt: u32) -> Self {
        let key = Key128::from_bytes(mc_key);
        McSender {
            mc_addr,
            nwk_s_key: *mc_nwk_s_key(&key, mc_addr).as_bytes(),
            app_s_key: *mc_app_s_key(&key, mc_addr).as_bytes(),
            fcnt: first_fcnt,
        }
    }

    /// The next multicast frame on `fport` (FCnt incremented).
    pub fn frame(&mut self, fport: u8, payload: &[u8]) -> Vec<u8> {
        let frame = self.frame_at(self.fcnt, fport, payload, 0x00, false);
        self.fcnt += 1;
        frame
    }

    /// A frame with the given FCnt, FCtrl and MType, built by the `lorawan` crate.
    pub fn frame_at(
        &self,
        fcnt: u32,
        fport: u8,
        payload: &[u8],
        fctrl: u8,
        confirmed: bool,
    ) -> Vec<u8> {
        self.build(fcnt, Some(fport), payload, fctrl, confirmed, &[])
    }

    /// Any frame the `lorawan` crate can build: optional FPort, MAC commands in FOpts.
    pub fn build(
        &self,
        fcnt: u32,
        fport: Option<u8>,
        payload: &[u8],
        fctrl: u8,
        confirmed: bool,
        mac_commands: &[&dyn SerializableMacCommand],
    ) -> Vec<u8> {
        let mut creator = DataPayloadCreator::new();
        creator
            .set_confirmed(confirmed)
            .set_uplink(false)
            .set_dev_addr(&self.mc_addr.to_le_bytes())
            .set_fctrl(&FCtrl::new(fctrl, false))
            .set_fcnt(fcnt);
        if let Some(fport) = fport {
            creator.set_f_port(fport);
        }
        creator
            .build(
                payload,
                mac_commands,
                &NewSKey::from(self.nwk_s_key),
                &AppSKey::from(self.app_s_key),
            )
            .expect("buildable frame")
            .to_vec()
    }
}

/// Takes every uplink due at `now`.
pub fn uplinks(node: &mut Node<'_>, now: Instant) -> Vec<Uplink> {
    std::iter::from_fn(|| node.poll_uplink(now)).collect()
}

/// Takes every action due at `now`.
pub fn actions(node: &mut Node<'_>, now: Instant) -> Vec<Action> {
    std::iter::from_fn(|| node.poll_action(now)).collect()
}

/// Synchronises the node's clock to the network's `NETWORK_GPS` at `now` through
/// AppTimeReq / AppTimeAns (the answer computed with the server-side rule).
pub fn sync_clock(node: &mut Node<'_>, now: Instant, version: PackageVersion) {
    let network_gps = NETWORK_GPS + now.as_millis() / 1000;
    for _ in 0..3 {
        let requests: Vec<_> = uplinks(node, now)
            .into_iter()
            .filter(|u| u.fport == 202)
            .collect();
        let Some(request) = requests.last() else {
            node_request_time(node, now);
            continue;
        };
        let decoded: Vec<_> =
            lorawan_fuota::codec::decode_all::<clock_sync::Uplink>(&request.payload, version)
                .map(|c| c.expect("valid uplink"))
                .collect();
        let Some(clock_sync::Uplink::AppTimeReq {
            device_time, token, ..
        }) = decoded
            .into_iter()
            .find(|c| matches!(c, clock_sync::Uplink::AppTimeReq { .. }))
        else {
            continue;
        };
        let correction = clock_sync::time_correction(network_gps, device_time, version);
        let answer = downlink(&[clock_sync::Downlink::AppTimeAns {
            time_correction: correction.seconds,
            token,
        }]);
        node.handle_downlink(now, 202, &answer);
        if !correction.saturated {
            break;
        }
    }
    assert_eq!(
        node.gps_time_millis(now).map(|ms| ms / 1000),
        Some(network_gps as i64),
        "clock synchronised"
    );
}

/// Makes the node ask for the time (ForceDeviceResync with one transmission).
fn node_request_time(node: &mut Node<'_>, now: Instant) {
    let force = downlink(&[clock_sync::Downlink::ForceDeviceResync {
        nb_transmissions: 1,
    }]);
    node.handle_downlink(now, 202, &force);
}

/// The GPS seconds (on-air) `seconds` after `now`, for a node synchronised by
/// [`sync_clock`].
pub fn gps_at(now: Instant, seconds: u64) -> u32 {
    (NETWORK_GPS + now.as_millis() / 1000 + seconds) as u32
}
