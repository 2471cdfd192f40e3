//! What the firmware lends the node: the two flash regions of a download, persistent
//! storage for session state, randomness, the region's channel rules and the hand-over
//! to the bootloader. Each is a small trait so the same node runs on the STM32WL, in the
//! agent's simulator and in host tests; [`Platform`] bundles their types.

use core::fmt;

use lorawan_fuota::fec::FlashRegion;

/// A flash region the node may erase: the download slot and the FEC log.
///
/// The FEC decoder only ever programs erased granules (see
/// [`lorawan_fuota::fec::FlashRegion`]); erasing belongs to the node, which does it when
/// a fragmentation session is set up (slot and log) and when it resumes one (log only:
/// the slot's received fragments are kept).
pub trait ErasableRegion: FlashRegion {
    /// Erases the pages covering bytes `0..len` of the region (rounded up to whole
    /// pages; `len` beyond the capacity means the whole region, 0 erases nothing).
    fn erase_prefix(&mut self, len: usize) -> Result<(), Self::Error>;
}

/// A source of random numbers, for the TS004 answer delays and TS003 jitter.
///
/// It need not be cryptographic, but devices must not share a sequence (seed it from
/// the radio's RSSI noise or the DevEUI): the random delay is what spreads the answers
/// of a whole multicast group.
pub trait RandomSource {
    /// A uniformly distributed 32-bit value.
    fn next_u32(&mut self) -> u32;
}

/// xorshift64*: a [`RandomSource`] for firmware that seeds it from a hardware RNG (or
/// the DevEUI), and for tests that want a repeatable sequence. Enough to spread answer
/// delays over a group; not cryptographic.
#[derive(Debug, Clone)]
pub struct XorShiftRng(u64);

impl XorShiftRng {
    /// A generator seeded with `seed` (0, which xorshift cannot leave, is replaced by a
    /// fixed odd value).
    pub const fn new(seed: u64) -> Self {
        XorShiftRng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
}

impl RandomSource for XorShiftRng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

/// A uniformly random value in `0..=max` from `rng`.
pub(crate) fn random_up_to(rng: &mut impl RandomSource, max: u64) -> u64 {
    let span = max.saturating_add(1);
    if span <= 1 << 32 {
        // (r · span) >> 32 maps 0..2^32 onto 0..=max, uniform enough for delays.
        (u64::from(rng.next_u32()) * span) >> 32
    } else {
        let wide = u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32());
        if max == u64::MAX {
            wide
        } else {
            wide % span
        }
    }
}

/// The region's rules for a multicast Class C session's downlink channel
/// (McClassCSessionReq FreqError / DRError).
pub trait RegionCheck {
    /// True if the device can receive on `frequency_hz` in this region.
    fn is_valid_downlink_frequency(&self, frequency_hz: u32) -> bool;

    /// True if `data_rate` is a defined downlink data rate of this region.
    fn is_valid_downlink_data_rate(&self, data_rate: u8) -> bool;
}

/// EU863-870: downlinks from 863 to 870 MHz, data rates DR0 (SF12) to DR7 (FSK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Eu868;

impl RegionCheck for Eu868 {
    fn is_valid_downlink_frequency(&self, frequency_hz: u32) -> bool {
        (863_000_000..=870_000_000).contains(&frequency_hz)
    }

    fn is_valid_downlink_data_rate(&self, data_rate: u8) -> bool {
        data_rate <= 7
    }
}

/// US902-928: Class C and multicast downlinks on the eight 500 kHz downlink channels
/// (923.3 MHz + 600 kHz × n, n = 0..7), data rates DR8 to DR13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Us915;

impl RegionCheck for Us915 {
    fn is_valid_downlink_frequency(&self, frequency_hz: u32) -> bool {
        (923_300_000..=927_500_000).contains(&frequency_hz)
            && (frequency_hz - 923_300_000).is_multiple_of(600_000)
    }

    fn is_valid_downlink_data_rate(&self, data_rate: u8) -> bool {
        (8..=13).contains(&data_rate)
    }
}

/// AS923 (groups 1 to 4 together): downlinks from 915 to 928 MHz, data rates DR0 to
/// DR7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct As923;

impl RegionCheck for As923 {
    fn is_valid_downlink_frequency(&self, frequency_hz: u32) -> bool {
        (915_000_000..=928_000_000).contains(&frequency_hz)
    }

    fn is_valid_downlink_data_rate(&self, data_rate: u8) -> bool {
        data_rate <= 7
    }
}

/// A verified image the bootloader is asked to install at the next reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingUpdate {
    /// TS006 version of the image (`major << 24 | minor << 16 | revision`).
    pub firmware_version: u32,
    /// Length of the image up to the end of its TLVs, in bytes.
    pub image_len: u32,
    /// SHA-256 of header, body and protected TLVs.
    pub digest: [u8; 32],
}

/// The hand-over to the bootloader (defined by the boot crate; the firmware adapts it).
pub trait UpdateAgent {
    /// Why marking failed.
    type Error: fmt::Debug;

    /// Records, power-fail-safely, that the download slot holds `update` and must be
    /// installed at the next reset. Called right before [`crate::Action::Reboot`].
    fn mark_update_pending(&mut self, update: &PendingUpdate) -> Result<(), Self::Error>;

    /// Confirms the running image, which runs on trial (see `crate::update`): called
    /// once, when the device has joined and heard a downlink. Without it the
    /// bootloader reverts the image at the next reset.
    fn confirm_running_image(&mut self) -> Result<(), Self::Error>;
}

/// Length of one received-fragment record; see [`SessionStore`].
pub const FRAGMENT_RECORD_LEN: usize = 8;

/// Largest state record the node writes; see [`SessionStore::save_state`].
pub const STATE_RECORD_MAX_LEN: usize = 320;

/// Persistent storage of the node's session state (see `fragment_store` for what is
/// kept and how a download resumes).
///
/// Two things are stored, both as opaque bytes whose format the node owns (versioned
/// and checksummed):
///
/// - one *state record* of at most [`STATE_RECORD_MAX_LEN`] bytes, rewritten when a
///   multicast group, a Class C session or a fragmentation session changes (a few times
///   per campaign): `save_state` must replace it atomically (e.g. two alternating
///   pages with a sequence number);
/// - an append-only *journal* of [`FRAGMENT_RECORD_LEN`]-byte records (one flash
///   double-word each), one per 40 uncoded fragments delivered in order (see
///   `fragment_store::journal`; 4 KB hold the largest block). A torn append reads back
///   as an error or as a record whose CRC fails; either is skipped.
pub trait SessionStore {
    /// Why an operation failed.
    type Error: fmt::Debug;

    /// Copies the last saved state record into `buffer` and returns its length, or
    /// `None` if none was ever saved.
    fn load_state(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, Self::Error>;

    /// Atomically replaces the state record.
    fn save_state(&mut self, record: &[u8]) -> Result<(), Self::Error>;

    /// Appends one record to the fragment journal.
    fn append_fragment(&mut self, record: &[u8; FRAGMENT_RECORD_LEN]) -> Result<(), Self::Error>;

    /// Journal record number `index` (0-based), or `None` past the last one.
    fn read_fragment(
        &mut self,
        index: usize,
    ) -> Result<Option<[u8; FRAGMENT_RECORD_LEN]>, Self::Error>;

    /// Empties the journal.
    fn clear_fragments(&mut self) -> Result<(), Self::Error>;
}

/// A [`SessionStore`] in RAM holding up to `JOURNAL_RECORDS` fragment records: for the
/// agent's simulator and host tests (keep the value across a simulated reboot), or for
/// a device with battery-backed RAM.
#[derive(Debug, Clone)]
pub struct RamSessionStore<const JOURNAL_RECORDS: usize> {
    state: heapless::Vec<u8, STATE_RECORD_MAX_LEN>,
    has_state: bool,
    journal: heapless::Vec<[u8; FRAGMENT_RECORD_LEN], JOURNAL_RECORDS>,
}

impl<const JOURNAL_RECORDS: usize> Default for RamSessionStore<JOURNAL_RECORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const JOURNAL_RECORDS: usize> RamSessionStore<JOURNAL_RECORDS> {
    /// An empty store.
    pub const fn new() -> Self {
        RamSessionStore {
            state: heapless::Vec::new(),
            has_state: false,
            journal: heapless::Vec::new(),
        }
    }

    /// Number of journal records.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }
}

/// Why a [`RamSessionStore`] refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamStoreError {
    /// The state record is larger than [`STATE_RECORD_MAX_LEN`].
    RecordTooLarge,
    /// The journal holds `JOURNAL_RECORDS` records already.
    JournalFull,
}

impl<const JOURNAL_RECORDS: usize> SessionStore for RamSessionStore<JOURNAL_RECORDS> {
    type Error = RamStoreError;

    fn load_state(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        if !self.has_state {
            return Ok(None);
        }
        let target = buffer
            .get_mut(..self.state.len())
            .ok_or(RamStoreError::RecordTooLarge)?;
        target.copy_from_slice(&self.state);
        Ok(Some(self.state.len()))
    }

    fn save_state(&mut self, record: &[u8]) -> Result<(), Self::Error> {
        self.state.clear();
        self.state
            .extend_from_slice(record)
            .map_err(|_| RamStoreError::RecordTooLarge)?;
        self.has_state = true;
        Ok(())
    }

    fn append_fragment(&mut self, record: &[u8; FRAGMENT_RECORD_LEN]) -> Result<(), Self::Error> {
        self.journal
            .push(*record)
            .map_err(|_| RamStoreError::JournalFull)
    }

    fn read_fragment(
        &mut self,
        index: usize,
    ) -> Result<Option<[u8; FRAGMENT_RECORD_LEN]>, Self::Error> {
        Ok(self.journal.get(index).copied())
    }

    fn clear_fragments(&mut self) -> Result<(), Self::Error> {
        self.journal.clear();
        Ok(())
    }
}

/// The firmware's types, bundled so the node has one type parameter.
///
/// Implement it on a marker type:
///
/// ```ignore
/// struct Stm32wl;
/// impl fuota_node::Platform for Stm32wl {
///     type FlashError = FlashError;
///     type DownloadSlot = SlotRegion;   // ErasableRegion<Error = FlashError>
///     type FecLog = LogRegion;          // ErasableRegion<Error = FlashError>
///     type Store = FlashSessionStore;
///     type Rng = RadioNoiseRng;
///     type Region = fuota_node::Eu868;
///     type Updater = BootloaderHandOver;
/// }
/// ```
pub trait Platform {
    /// Error of the flash driver behind both regions.
    type FlashError: fmt::Debug;
    /// The download slot the data block is reassembled into.
    type DownloadSlot: ErasableRegion<Error = Self::FlashError>;
    /// The FEC decoder's log region (intermediate rows and early coded fragments).
    type FecLog: ErasableRegion<Error = Self::FlashError>;
    /// Persistent session state.
    type Store: SessionStore;
    /// Randomness for answer delays.
    type Rng: RandomSource;
    /// The region's channel rules.
    type Region: RegionCheck;
    /// The hand-over to the bootloader.
    type Updater: UpdateAgent;
}

#[cfg(test)]
mod tests {

    #[test]
    fn each_region_accepts_its_own_class_c_channels_only() {
        assert!(Eu868.is_valid_downlink_frequency(869_525_000));
        assert!(!Eu868.is_valid_downlink_frequency(923_300_000));
        assert!(Us915.is_valid_downlink_frequency(923_300_000));
        assert!(Us915.is_valid_downlink_frequency(927_500_000));
        assert!(
            !Us915.is_valid_downlink_frequency(923_400_000),
            "between channels"
        );
        assert!(!Us915.is_valid_downlink_frequency(869_525_000));
        assert!(Us915.is_valid_downlink_data_rate(8) && Us915.is_valid_downlink_data_rate(13));
        assert!(
            !Us915.is_valid_downlink_data_rate(3),
            "an uplink-only data rate"
        );
        assert!(As923.is_valid_downlink_frequency(923_200_000));
        assert!(As923.is_valid_downlink_frequency(916_600_000), "AS923-3");
        assert!(!As923.is_valid_downlink_frequency(868_100_000));
        assert!(As923.is_valid_downlink_data_rate(2) && !As923.is_valid_downlink_data_rate(8));
    }

    use super::*;

    struct Fixed(u32);
    impl RandomSource for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0
        }
    }

    #[test]
    fn xorshift_never_sticks_at_zero_and_repeats_per_seed() {
        let mut zero = XorShiftRng::new(0);
        let drawn = [zero.next_u32(), zero.next_u32(), zero.next_u32()];
        assert!(drawn.iter().any(|&v| v != 0));
        let (mut a, mut b) = (XorShiftRng::new(42), XorShiftRng::new(42));
        assert_eq!(a.next_u32(), b.next_u32());
        assert_ne!(
            XorShiftRng::new(1).next_u32(),
            XorShiftRng::new(2).next_u32()
        );
    }

    #[test]
    fn random_delay_covers_both_ends() {
        assert_eq!(random_up_to(&mut Fixed(0), 16_000), 0);
        assert_eq!(random_up_to(&mut Fixed(u32::MAX), 16_000), 16_000);
        assert_eq!(random_up_to(&mut Fixed(u32::MAX), 0), 0);
        assert!(random_up_to(&mut Fixed(u32::MAX), u64::MAX) > 0);
    }

    #[test]
    fn ram_store_round_trips() {
        let mut store = RamSessionStore::<2>::new();
        let mut buffer = [0u8; STATE_RECORD_MAX_LEN];
        assert_eq!(store.load_state(&mut buffer), Ok(None));
        store.save_state(&[1, 2, 3]).unwrap();
        assert_eq!(store.load_state(&mut buffer), Ok(Some(3)));
        store.append_fragment(&[7; FRAGMENT_RECORD_LEN]).unwrap();
        store.append_fragment(&[8; FRAGMENT_RECORD_LEN]).unwrap();
        assert_eq!(
            store.append_fragment(&[9; FRAGMENT_RECORD_LEN]),
            Err(RamStoreError::JournalFull)
        );
        assert_eq!(store.read_fragment(1), Ok(Some([8; FRAGMENT_RECORD_LEN])));
        assert_eq!(store.read_fragment(2), Ok(None));
        store.clear_fragments().unwrap();
        assert_eq!(store.journal_len(), 0);
    }
}
