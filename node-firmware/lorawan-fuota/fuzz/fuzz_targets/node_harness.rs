//! A `fuota-node` device for the fuzz targets: RAM flash with the NOR rules (8-byte
//! granules programmed once, 2 KB page erases), a RAM session store, a deterministic
//! RNG and a bootloader hand-over that records nothing. `Device::run` drives the node
//! like the firmware loop does (actions, uplinks, reboots, workspace recycling) and
//! checks what must hold whatever arrives from the air.

use fuota_node::{
    Action, ErasableRegion, Eu868, FuotaNode, Instant, NodeConfig, NodeParts, PendingUpdate,
    Platform, RamSessionStore, RandomSource, UpdateAgent, MAX_UPLINK_PAYLOAD,
};
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::fec::FlashRegion;

pub const GEN_APP_KEY: [u8; 16] = [0x2b; 16];
const GRANULE: usize = 8;
const PAGE: usize = 2048;

/// A NOR-flash region in RAM.
pub struct RamRegion {
    bytes: Vec<u8>,
    programmed: Vec<bool>,
}

/// What the RAM flash refused (the node must cope, never panic).
#[derive(Debug)]
pub enum RegionFault {
    OutOfBounds,
    Misaligned,
    ProgrammedTwice,
}

impl RamRegion {
    pub fn new(len: usize) -> Self {
        RamRegion {
            bytes: vec![0xFF; len],
            programmed: vec![false; len / GRANULE],
        }
    }
}

impl FlashRegion for RamRegion {
    type Error = RegionFault;

    fn write_granule(&self) -> usize {
        GRANULE
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), RegionFault> {
        let end = offset
            .checked_add(buffer.len())
            .ok_or(RegionFault::OutOfBounds)?;
        let source = self
            .bytes
            .get(offset..end)
            .ok_or(RegionFault::OutOfBounds)?;
        buffer.copy_from_slice(source);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), RegionFault> {
        if offset % GRANULE != 0 || data.len() % GRANULE != 0 {
            return Err(RegionFault::Misaligned);
        }
        let end = offset
            .checked_add(data.len())
            .ok_or(RegionFault::OutOfBounds)?;
        if end > self.bytes.len() {
            return Err(RegionFault::OutOfBounds);
        }
        let units = offset / GRANULE..end / GRANULE;
        if self.programmed[units.clone()].iter().any(|&p| p) {
            return Err(RegionFault::ProgrammedTwice);
        }
        self.programmed[units].fill(true);
        self.bytes[offset..end].copy_from_slice(data);
        Ok(())
    }
}

impl ErasableRegion for RamRegion {
    fn erase_prefix(&mut self, len: usize) -> Result<(), RegionFault> {
        let len = len
            .min(self.bytes.len())
            .next_multiple_of(PAGE)
            .min(self.bytes.len());
        self.bytes[..len].fill(0xFF);
        self.programmed[..len / GRANULE].fill(false);
        Ok(())
    }
}

pub struct Rng(pub u64);

impl RandomSource for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
}

pub struct Bootloader;

impl UpdateAgent for Bootloader {
    type Error = ();

    fn mark_update_pending(&mut self, _update: &PendingUpdate) -> Result<(), ()> {
        Ok(())
    }

    fn confirm_running_image(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

pub struct FuzzPlatform;

impl Platform for FuzzPlatform {
    type FlashError = RegionFault;
    type DownloadSlot = RamRegion;
    type FecLog = RamRegion;
    type Store = RamSessionStore<512>;
    type Rng = Rng;
    type Region = Eu868;
    type Updater = Bootloader;
}

pub type Node<'w> = FuotaNode<'w, FuzzPlatform>;

pub fn config() -> NodeConfig {
    let mut config = NodeConfig::new(Key128::from_bytes(GEN_APP_KEY), 0x0100_0000, 0x0001_0203);
    config.multicast_groups = 4;
    config.fragmentation_indexes = 4;
    config.max_uplink_payload = MAX_UPLINK_PAYLOAD;
    config
}

/// The parts of a freshly booted device.
pub fn fresh_parts() -> NodeParts<FuzzPlatform> {
    NodeParts::new(
        config(),
        RamRegion::new(16 * 1024),
        RamRegion::new(8 * 1024),
        RamSessionStore::new(),
        Rng(0x1234_5678_9ABC_DEF1),
        Eu868,
        Bootloader,
    )
}

/// After a reboot: the same flash and store, a new node (RAM lost).
pub fn rebooted_parts(node: Node<'_>) -> NodeParts<FuzzPlatform> {
    let (regions, store) = node.into_parts().into_platform();
    let (slot, log) =
        regions.unwrap_or_else(|| (RamRegion::new(16 * 1024), RamRegion::new(8 * 1024)));
    NodeParts::new(
        config(),
        slot,
        log,
        store,
        Rng(0x9E37_79B9_7F4A_7C15),
        Eu868,
        Bootloader,
    )
}

/// Lets time pass to `now`: takes every action and uplink due, as the firmware loop
/// does, and says whether the node must be restarted.
pub fn service(node: &mut Node<'_>, now: Instant) -> Service {
    let mut recycle = false;
    for _ in 0..16 {
        match node.poll_action(now) {
            Some(Action::Reboot { .. }) => return Service::Reboot,
            Some(Action::RecycleWorkspace) => recycle = true,
            Some(Action::StartClassC { .. } | Action::ReturnToClassA) => {}
            None => break,
        }
    }
    for _ in 0..16 {
        let Some(uplink) = node.poll_uplink(now) else {
            break;
        };
        assert!(uplink.payload.len() <= MAX_UPLINK_PAYLOAD);
        assert!(!uplink.payload.is_empty());
    }
    if recycle {
        Service::Recycle
    } else {
        Service::Continue
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Continue,
    Recycle,
    Reboot,
}
