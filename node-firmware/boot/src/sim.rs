//! A simulated NOR flash with the STM32WL's rules and fault injection, for host tests
//! and the agent's simulator (feature `sim`).
//!
//! The rules ([`SimFlash`] refuses anything else, records it as a [`Violation`] and
//! returns an error):
//!
//! - erased bytes read 0xFF; erasing works on whole pages;
//! - programming works on aligned 8-byte double-words, each programmable once after an
//!   erase; all zeros may be programmed over anything (the STM32WL allows it);
//! - reads, programs and erases stay inside the flash.
//!
//! Faults:
//!
//! - a **power cut** scheduled at operation k ([`PowerCut`]): before it (it does not
//!   happen), after it (it completes), or torn (it is cut part-way). Operations are
//!   numbered from 0 and counted per double-word programmed and per page erased: a
//!   program call of 32 double-words is 32 operations. From the cut on, every call
//!   fails with [`SimFlashError::PowerLost`] until [`SimFlash::power_cycle`].
//! - a **torn program** leaves that double-word with some of its bits programmed; a
//!   **torn erase** leaves each double-word of the page erased, unchanged or torn.
//!   Reading a torn double-word raises an ECC double-error fault
//!   ([`SimFlashError::EccDoubleError`]), or, with [`TornReads::Garbage`], returns the
//!   undefined bits; either way it cannot be programmed again before an erase (except to
//!   all zeros, which repairs it).
//!
//! Counters ([`FlashCounters`]) and per-page erase counts say what an operation cost.

use std::vec::Vec;

use lorawan_fuota::fec::FlashRegion;

use crate::flash::BootFlash;
use crate::layout::{Layout, STM32WL_FLASH_SIZE, STM32WL_PAGE_SIZE};

/// The programming unit: a double-word.
pub const DOUBLE_WORD: u32 = 8;

/// When, relative to its operation, a scheduled power cut strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutTiming {
    /// The operation does not happen.
    Before,
    /// The operation completes, then power is lost.
    After,
    /// The operation is cut part-way: a torn double-word or a torn page.
    Torn,
}

impl CutTiming {
    /// All three timings.
    pub const ALL: [CutTiming; 3] = [CutTiming::Before, CutTiming::After, CutTiming::Torn];
}

/// A power cut at operation `operation` (0-based, counted since the flash was created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PowerCut {
    /// Index of the operation (double-word program or page erase) that is cut.
    pub operation: u64,
    /// Whether the cut comes before, after or during it.
    pub timing: CutTiming,
}

/// What reading a torn double-word does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornReads {
    /// An ECC double-error fault: the read fails (the STM32WL's NMI, turned into an
    /// error by the flash driver).
    EccFault,
    /// The undefined bits are returned without an error.
    Garbage,
}

/// Why a [`SimFlash`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFlashError {
    /// Power is off (a power cut happened; call [`SimFlash::power_cycle`]).
    PowerLost,
    /// The access leaves the flash.
    OutOfBounds {
        /// Offset of the access.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// Program offset or length not double-word aligned, or erase offset not on a page.
    Misaligned {
        /// Offset of the access.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// A double-word was programmed that is not erased.
    NotErased {
        /// Offset of the double-word.
        offset: u32,
    },
    /// A torn double-word was read (ECC double error).
    EccDoubleError {
        /// Offset of the double-word.
        offset: u32,
    },
}

impl core::fmt::Display for SimFlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SimFlashError::PowerLost => f.write_str("power lost"),
            SimFlashError::OutOfBounds { offset, len } => {
                write!(f, "access of {len} bytes at {offset:#x} leaves the flash")
            }
            SimFlashError::Misaligned { offset, len } => {
                write!(f, "misaligned access of {len} bytes at {offset:#x}")
            }
            SimFlashError::NotErased { offset } => {
                write!(
                    f,
                    "double-word at {offset:#x} programmed twice without erase"
                )
            }
            SimFlashError::EccDoubleError { offset } => {
                write!(f, "ECC double error reading the double-word at {offset:#x}")
            }
        }
    }
}

impl std::error::Error for SimFlashError {}

/// A use of the flash the hardware would refuse: a bug in the code under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The error returned for it.
    pub error: SimFlashError,
    /// Operation counter when it happened.
    pub at_operation: u64,
}

/// What the flash has been asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlashCounters {
    /// Read calls.
    pub reads: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Double-words programmed (each one a flash operation).
    pub double_words_programmed: u64,
    /// Program calls.
    pub program_calls: u64,
    /// Pages erased.
    pub pages_erased: u64,
    /// Reads that hit a torn double-word (ECC faults, or garbage returned).
    pub torn_reads: u64,
}

impl FlashCounters {
    /// Bytes programmed.
    pub fn bytes_programmed(&self) -> u64 {
        self.double_words_programmed * u64::from(DOUBLE_WORD)
    }
}

/// State of one double-word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Erased,
    Programmed,
    Torn,
}

/// A simulated NOR flash; see the module documentation.
#[derive(Debug, Clone)]
pub struct SimFlash {
    page_size: u32,
    bytes: Vec<u8>,
    units: Vec<Unit>,
    torn_reads: TornReads,
    counters: FlashCounters,
    operations: u64,
    cut: Option<PowerCut>,
    powered: bool,
    rng: u64,
    violations: Vec<Violation>,
    page_erases: Vec<u32>,
}

impl SimFlash {
    /// An erased flash of `size` bytes with `page_size`-byte pages (both multiples of
    /// the double-word; a trailing partial page is dropped).
    pub fn new(size: u32, page_size: u32) -> Self {
        let page_size = page_size.max(DOUBLE_WORD) / DOUBLE_WORD * DOUBLE_WORD;
        let size = size / page_size * page_size;
        let units = (size / DOUBLE_WORD) as usize;
        Self {
            page_size,
            bytes: vec![0xFF; size as usize],
            units: vec![Unit::Erased; units],
            torn_reads: TornReads::EccFault,
            counters: FlashCounters::default(),
            operations: 0,
            cut: None,
            powered: true,
            rng: 0x9E37_79B9_7F4A_7C15,
            violations: Vec::new(),
            page_erases: vec![0; (size / page_size) as usize],
        }
    }

    /// The STM32WL55JC's flash: 256 KB of 2 KB pages.
    pub fn stm32wl55jc() -> Self {
        Self::new(STM32WL_FLASH_SIZE, STM32WL_PAGE_SIZE)
    }

    /// A flash with `layout`'s geometry.
    pub fn for_layout(layout: &Layout) -> Self {
        Self::new(layout.flash_size, layout.page_size)
    }

    /// Seeds the generator of torn contents (default: a fixed seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = seed | 1;
        self
    }

    /// Sets what reading a torn double-word does (default [`TornReads::EccFault`]).
    pub fn set_torn_reads(&mut self, behaviour: TornReads) {
        self.torn_reads = behaviour;
    }

    /// Writes `data` at `offset` as a programmer would at the factory: no counters, no
    /// faults, no rules (double-words that end up all 0xFF count as erased).
    pub fn load(&mut self, offset: u32, data: &[u8]) {
        let start = offset as usize;
        let end = (start + data.len()).min(self.bytes.len());
        if start >= end {
            return;
        }
        self.bytes[start..end].copy_from_slice(&data[..end - start]);
        let first = start / DOUBLE_WORD as usize;
        let last = end.div_ceil(DOUBLE_WORD as usize);
        for unit in first..last {
            let at = unit * DOUBLE_WORD as usize;
            let erased = self.bytes[at..at + DOUBLE_WORD as usize]
                .iter()
                .all(|&b| b == 0xFF);
            self.units[unit] = if erased {
                Unit::Erased
            } else {
                Unit::Programmed
            };
        }
    }

    /// Schedules a power cut (replacing any scheduled one).
    pub fn schedule_power_cut(&mut self, cut: PowerCut) {
        self.cut = Some(cut);
    }

    /// Schedules a power cut at the `n`-th operation from now (0 = the next one).
    pub fn cut_power_in(&mut self, n: u64, timing: CutTiming) {
        self.cut = Some(PowerCut {
            operation: self.operations + n,
            timing,
        });
    }

    /// Removes the scheduled power cut, if any.
    pub fn cancel_power_cut(&mut self) {
        self.cut = None;
    }

    /// Restores power (a reboot) and removes any scheduled cut.
    pub fn power_cycle(&mut self) {
        self.powered = true;
        self.cut = None;
    }

    /// False once a power cut has struck, until [`power_cycle`](Self::power_cycle).
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Operations (double-words programmed and pages erased) attempted so far: the
    /// index the next one will get.
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// What the flash has done.
    pub fn counters(&self) -> FlashCounters {
        self.counters
    }

    /// Zeroes the counters (not the operation index, not the erase counts).
    pub fn reset_counters(&mut self) {
        self.counters = FlashCounters::default();
    }

    /// Uses of the flash the hardware would refuse.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Erases per page since creation.
    pub fn page_erase_counts(&self) -> &[u32] {
        &self.page_erases
    }

    /// The raw contents (torn double-words show their undefined bits).
    pub fn contents(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of torn double-words in `[offset, offset + len)`.
    pub fn torn_double_words(&self, offset: u32, len: u32) -> usize {
        let first = (offset / DOUBLE_WORD) as usize;
        let last = ((offset + len).div_ceil(DOUBLE_WORD) as usize).min(self.units.len());
        self.units[first.min(last)..last]
            .iter()
            .filter(|&&u| u == Unit::Torn)
            .count()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn violation(&mut self, error: SimFlashError) -> SimFlashError {
        self.violations.push(Violation {
            error,
            at_operation: self.operations,
        });
        error
    }

    fn check_range(&mut self, offset: u32, len: usize) -> Result<(usize, usize), SimFlashError> {
        let start = offset as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok((start, end)),
            _ => Err(self.violation(SimFlashError::OutOfBounds {
                offset,
                len: u32::try_from(len).unwrap_or(u32::MAX),
            })),
        }
    }

    /// Takes the next operation index and returns the timing of a cut striking it.
    fn begin_operation(&mut self) -> Option<CutTiming> {
        let index = self.operations;
        self.operations += 1;
        match self.cut {
            Some(cut) if cut.operation == index => {
                self.cut = None;
                Some(cut.timing)
            }
            _ => None,
        }
    }

    fn unit_range(unit: usize) -> core::ops::Range<usize> {
        let at = unit * DOUBLE_WORD as usize;
        at..at + DOUBLE_WORD as usize
    }

    fn program_unit(&mut self, unit: usize, data: &[u8]) -> Result<(), SimFlashError> {
        let offset = (unit * DOUBLE_WORD as usize) as u32;
        let cut = self.begin_operation();
        if cut == Some(CutTiming::Before) {
            self.powered = false;
            return Err(SimFlashError::PowerLost);
        }
        let zeros = data.iter().all(|&b| b == 0);
        if !zeros && self.units[unit] != Unit::Erased {
            if cut.is_some() {
                self.powered = false;
            }
            return Err(self.violation(SimFlashError::NotErased { offset }));
        }
        if cut == Some(CutTiming::Torn) {
            // Some of the bits that should go to 0 did.
            let mut torn = [0u8; DOUBLE_WORD as usize];
            let noise = self.next_random().to_le_bytes();
            for ((out, &want), &n) in torn.iter_mut().zip(data).zip(noise.iter()) {
                *out = want | (n & !want);
            }
            if torn.iter().all(|&b| b == 0xFF) {
                // Make at least one bit go to 0 (the lowest 0 bit of the first byte
                // that has one), so the torn double-word never reads as erased.
                if let Some((i, &want)) = data.iter().enumerate().find(|(_, &b)| b != 0xFF) {
                    let lowest_zero_bit = !want & (!want).wrapping_neg();
                    torn[i] = !lowest_zero_bit;
                }
            }
            let range = Self::unit_range(unit);
            self.bytes[range].copy_from_slice(&torn);
            self.units[unit] = Unit::Torn;
            self.powered = false;
            return Err(SimFlashError::PowerLost);
        }
        let range = Self::unit_range(unit);
        self.bytes[range].copy_from_slice(data);
        self.units[unit] = Unit::Programmed;
        self.counters.double_words_programmed += 1;
        if cut == Some(CutTiming::After) {
            self.powered = false;
            return Err(SimFlashError::PowerLost);
        }
        Ok(())
    }
}

impl BootFlash for SimFlash {
    type Error = SimFlashError;

    fn page_size(&self) -> u32 {
        self.page_size
    }

    fn write_size(&self) -> u32 {
        DOUBLE_WORD
    }

    fn capacity(&self) -> u32 {
        self.bytes.len() as u32
    }

    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLost);
        }
        let (start, end) = self.check_range(offset, buffer.len())?;
        self.counters.reads += 1;
        if start < end {
            let first = start / DOUBLE_WORD as usize;
            let last = end.div_ceil(DOUBLE_WORD as usize);
            if let Some(torn) = (first..last).find(|&u| self.units[u] == Unit::Torn) {
                self.counters.torn_reads += 1;
                if self.torn_reads == TornReads::EccFault {
                    return Err(SimFlashError::EccDoubleError {
                        offset: (torn * DOUBLE_WORD as usize) as u32,
                    });
                }
            }
        }
        buffer.copy_from_slice(&self.bytes[start..end]);
        self.counters.bytes_read += buffer.len() as u64;
        Ok(())
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLost);
        }
        if !offset.is_multiple_of(DOUBLE_WORD) || !data.len().is_multiple_of(DOUBLE_WORD as usize) {
            return Err(self.violation(SimFlashError::Misaligned {
                offset,
                len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            }));
        }
        let (start, _) = self.check_range(offset, data.len())?;
        self.counters.program_calls += 1;
        for (i, chunk) in data.chunks_exact(DOUBLE_WORD as usize).enumerate() {
            self.program_unit(start / DOUBLE_WORD as usize + i, chunk)?;
        }
        Ok(())
    }

    fn erase_page(&mut self, offset: u32) -> Result<(), SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLost);
        }
        if !offset.is_multiple_of(self.page_size) {
            return Err(self.violation(SimFlashError::Misaligned {
                offset,
                len: self.page_size,
            }));
        }
        let (start, end) = self.check_range(offset, self.page_size as usize)?;
        let cut = self.begin_operation();
        if cut == Some(CutTiming::Before) {
            self.powered = false;
            return Err(SimFlashError::PowerLost);
        }
        let first = start / DOUBLE_WORD as usize;
        let last = end / DOUBLE_WORD as usize;
        if cut == Some(CutTiming::Torn) {
            // Each double-word is erased, left as it was, or left undefined; at least
            // one is undefined.
            let mut any_torn = false;
            for unit in first..last {
                let roll = self.next_random();
                let range = Self::unit_range(unit);
                match roll % 3 {
                    0 => {
                        self.bytes[range].fill(0xFF);
                        self.units[unit] = Unit::Erased;
                    }
                    1 => {}
                    _ => {
                        let noise = self.next_random().to_le_bytes();
                        self.bytes[range].copy_from_slice(&noise);
                        self.units[unit] = Unit::Torn;
                        any_torn = true;
                    }
                }
            }
            if !any_torn {
                let range = Self::unit_range(first);
                self.bytes[range].fill(0x5A);
                self.units[first] = Unit::Torn;
            }
            self.powered = false;
            return Err(SimFlashError::PowerLost);
        }
        self.bytes[start..end].fill(0xFF);
        self.units[first..last].fill(Unit::Erased);
        self.counters.pages_erased += 1;
        if let Some(count) = self.page_erases.get_mut(start / self.page_size as usize) {
            *count += 1;
        }
        if cut == Some(CutTiming::After) {
            self.powered = false;
            return Err(SimFlashError::PowerLost);
        }
        Ok(())
    }
}

/// The whole chip as a FEC decoder region (offsets from the start of the flash). Use a
/// [`FlashWindow`](crate::flash::FlashWindow) for one region of it.
impl FlashRegion for SimFlash {
    type Error = SimFlashError;

    fn write_granule(&self) -> usize {
        DOUBLE_WORD as usize
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        let offset = u32::try_from(offset).map_err(|_| SimFlashError::OutOfBounds {
            offset: u32::MAX,
            len: 0,
        })?;
        BootFlash::read(self, offset, buffer)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        let offset = u32::try_from(offset).map_err(|_| SimFlashError::OutOfBounds {
            offset: u32::MAX,
            len: 0,
        })?;
        BootFlash::program(self, offset, data)
    }
}
