//! The STM32WL's side of `fuota-node`: the [`fuota_node::Platform`] the FUOTA core runs
//! on, built from the one flash layout (`fuota_boot::STM32WL55JC`).
//!
//! - [`FlashArea`]: the download image area and the FEC log, as regions the node
//!   programs and erases (the internal flash through `fuota-stm32wl-flash`).
//! - [`SharedStore`]: the application state pages as the node's session store (its
//!   state record and fragment journal), shared with the firmware's MAC record
//!   (`fuota_device::mac_state`).
//! - [`BootHandOver`]: `request_update` / `confirm_image` on the boot state.
//! - [`Eu868Lora`]: the region's Class C rules for a radio that receives LoRa only
//!   (answer delays draw from `fuota_node::XorShiftRng`, seeded from the hardware RNG).
//! - [`running_version`]: what the running image's header says, for the node's start.
//! - [`provisioning`]: the device's identity and root keys, from the OTP area.
//!
//! Every [`FlashArea`] holds its own handle on the flash registers. That is sound here:
//! the node and the firmware call them one at a time from the one executor thread, and
//! no interrupt handler programs or erases (the NMI handler only reads and clears
//! `FLASH_ECCR`).

use core::cell::RefCell;

use fuota_boot::{
    confirm_image, request_update, Confirmation, FlashWindow, Region, RequestError, WindowError,
    STM32WL55JC,
};
use fuota_device::{latest_record, MacRecordStore, ProvisioningRecord, PROVISIONING_RECORD_LEN};
use fuota_node::{
    ErasableRegion, Eu868, FlashSessionStore, FlashStoreError, PendingUpdate, Platform,
    RegionCheck, SessionStore, UpdateAgent, XorShiftRng, FRAGMENT_RECORD_LEN, RECORD_LORAWAN,
};
use fuota_stm32wl_flash::{read_otp, FlashError, Stm32wlFlash, OTP_SIZE};
use lorawan_fuota::fec::FlashRegion;
use lorawan_fuota::image::{ImageHeader, IMAGE_HEADER_LEN};

/// What a flash region operation can fail with.
pub type AreaError = WindowError<FlashError>;

/// One region of the internal flash, addressed from 0.
pub struct FlashArea(FlashWindow<Stm32wlFlash>);

impl FlashArea {
    /// The window onto `region` of the layout.
    pub fn new(region: Region) -> Self {
        FlashArea(FlashWindow::new(Stm32wlFlash::new(), region))
    }
}

impl FlashRegion for FlashArea {
    type Error = AreaError;

    fn write_granule(&self) -> usize {
        self.0.write_granule()
    }

    fn capacity(&self) -> usize {
        FlashRegion::capacity(&self.0)
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), AreaError> {
        FlashRegion::read(&mut self.0, offset, buffer)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), AreaError> {
        FlashRegion::write(&mut self.0, offset, data)
    }
}

impl ErasableRegion for FlashArea {
    fn erase_prefix(&mut self, len: usize) -> Result<(), AreaError> {
        self.0.erase_prefix(u32::try_from(len).unwrap_or(u32::MAX))
    }
}

/// The settings pages and the fragment journal in the application state pages.
pub type SettingsStore = FlashSessionStore<FlashArea>;

/// Why a [`SharedStore`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The flash store refused or failed.
    Store(FlashStoreError<AreaError>),
    /// The store was in use (a call from inside another: a bug, reported not panicked).
    Busy,
}

impl defmt::Format for StoreError {
    fn format(&self, f: defmt::Formatter<'_>) {
        let what = match self {
            StoreError::Store(FlashStoreError::Flash(_)) => "flash failure",
            StoreError::Store(FlashStoreError::BadKind(_)) => "bad record kind",
            StoreError::Store(FlashStoreError::TooLong { .. }) => "record too long",
            StoreError::Store(FlashStoreError::PageFull) => "settings page full",
            StoreError::Store(FlashStoreError::JournalFull) => "journal full",
            StoreError::Store(FlashStoreError::Geometry) => "bad geometry",
            StoreError::Busy => "store busy",
        };
        defmt::write!(f, "{=str}", what)
    }
}

/// The session store, shared by the node (its state record and journal) and the
/// firmware (its MAC record): one instance, so both see the same current page.
#[derive(Clone, Copy)]
pub struct SharedStore(&'static RefCell<SettingsStore>);

impl SharedStore {
    /// Opens the application state pages of the layout. `None` if their geometry does
    /// not suit the store (a layout mistake: the node then runs without persistence).
    pub fn open() -> Option<Self> {
        let areas = STM32WL55JC.app_state_areas();
        let store = FlashSessionStore::new(
            [
                FlashArea::new(areas.settings[0]),
                FlashArea::new(areas.settings[1]),
            ],
            FlashArea::new(areas.journal),
        )
        .ok()?;
        let cell: &'static mut RefCell<SettingsStore> =
            cortex_m::singleton!(: RefCell<SettingsStore> = RefCell::new(store))?;
        Some(SharedStore(cell))
    }

    /// Runs `operation` on the store.
    pub fn with<T>(
        &self,
        operation: impl FnOnce(&mut SettingsStore) -> Result<T, FlashStoreError<AreaError>>,
    ) -> Result<T, StoreError> {
        let mut store = self.0.try_borrow_mut().map_err(|_| StoreError::Busy)?;
        operation(&mut store).map_err(StoreError::Store)
    }
}

/// The firmware's MAC record, a record of the same store.
impl MacRecordStore for SharedStore {
    type Error = StoreError;

    fn load_mac_record(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.with(|store| store.load_record(RECORD_LORAWAN, buffer))
    }

    fn save_mac_record(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.with(|store| store.save_record(RECORD_LORAWAN, record))
    }
}

impl SessionStore for SharedStore {
    type Error = StoreError;

    fn load_state(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.with(|store| store.load_state(buffer))
    }

    fn save_state(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.with(|store| store.save_state(record))
    }

    fn append_fragment(&mut self, record: &[u8; FRAGMENT_RECORD_LEN]) -> Result<(), StoreError> {
        self.with(|store| store.append_fragment(record))
    }

    fn read_fragment(
        &mut self,
        index: usize,
    ) -> Result<Option<[u8; FRAGMENT_RECORD_LEN]>, StoreError> {
        self.with(|store| store.read_fragment(index))
    }

    fn clear_fragments(&mut self) -> Result<(), StoreError> {
        self.with(|store| store.clear_fragments())
    }
}

/// The hand-over to the bootloader, on the boot state pages.
pub struct BootHandOver;

impl UpdateAgent for BootHandOver {
    type Error = ();

    fn mark_update_pending(&mut self, update: &PendingUpdate) -> Result<(), ()> {
        match request_update(&mut Stm32wlFlash::new(), &STM32WL55JC) {
            Ok(()) => {
                defmt::info!(
                    "update to {:08x} ({} bytes) handed to the bootloader",
                    update.firmware_version,
                    update.image_len
                );
                Ok(())
            }
            Err(RequestError::TrialNotConfirmed) => {
                defmt::error!("update refused: the running image is not confirmed yet");
                Err(())
            }
            Err(RequestError::SwapInProgress | RequestError::Boot(_)) => {
                defmt::error!("update refused: the boot state cannot take it");
                Err(())
            }
        }
    }

    fn confirm_running_image(&mut self) -> Result<(), ()> {
        match confirm_image(&mut Stm32wlFlash::new(), &STM32WL55JC) {
            Ok(Confirmation::Confirmed { version }) => {
                defmt::info!("image {:08x} confirmed", version);
                Ok(())
            }
            Ok(Confirmation::AlreadyConfirmed) => Ok(()),
            Err(_) => {
                defmt::error!("confirming the image failed; trying again at the next downlink");
                Err(())
            }
        }
    }
}

/// EU868 Class C channel rules for this radio path: LoRa data rates only (DR0-DR6). DR7
/// is FSK, which the multicast receiver does not set up, so a session at DR7 is
/// answered with DRError instead of being accepted and never heard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Eu868Lora;

impl RegionCheck for Eu868Lora {
    fn is_valid_downlink_frequency(&self, frequency_hz: u32) -> bool {
        Eu868.is_valid_downlink_frequency(frequency_hz)
    }

    fn is_valid_downlink_data_rate(&self, data_rate: u8) -> bool {
        data_rate <= 6
    }
}

/// The node's platform on the STM32WL55JC.
pub struct Stm32wlNode;

impl Platform for Stm32wlNode {
    type FlashError = AreaError;
    type DownloadSlot = FlashArea;
    type FecLog = FlashArea;
    type Store = SharedStore;
    type Rng = XorShiftRng;
    type Region = Eu868Lora;
    type Updater = BootHandOver;
}

/// The device's provisioning record: the last valid one of the OTP area's slots. Not
/// inlined into the main task's state machine, where it cost 500 bytes more.
#[inline(never)]
pub fn provisioning() -> Option<ProvisioningRecord> {
    const SLOTS: usize = OTP_SIZE as usize / PROVISIONING_RECORD_LEN;
    let scan = latest_record(SLOTS, |slot, buffer| {
        read_otp((slot * PROVISIONING_RECORD_LEN) as u32, buffer)
    });
    if scan.skipped > 0 {
        defmt::warn!(
            "{} OTP slots hold no usable provisioning record (cut or foreign writes)",
            scan.skipped
        );
    }
    scan.record
}

/// The TS006 version of the running image, from its MCUboot header at the start of the
/// primary slot (the bootloader verified it before jumping). `None` if the header
/// cannot be read (the application was flashed without one, on a bench).
pub fn running_version() -> Option<u32> {
    let mut header = [0u8; IMAGE_HEADER_LEN];
    let mut primary = FlashWindow::new(Stm32wlFlash::new(), STM32WL55JC.primary);
    primary.read_at(0, &mut header).ok()?;
    ImageHeader::parse(&header)
        .ok()
        .map(|header| header.version.to_ts006())
}
