//! Incremental TS004 FEC decoder that writes the block straight into flash.
//!
//! # What it guarantees
//!
//! - Online Gaussian elimination over GF(2): the block is declared complete exactly when
//!   the received rows determine every uncoded fragment, never before.
//! - Fragments may come in any order, duplicated, uncoded after coded.
//! - Every byte of the final block is programmed exactly once, into erased flash, in
//!   whole aligned write granules, with no read-modify-write and no erase.
//! - Intermediate data (pivot payloads, coded fragments that arrive too early, partial
//!   boundary granules that did not fit in RAM) goes to an append-only *log* region of
//!   its own, each byte written once — never to the final slot positions.
//! - RAM is fixed at construction from (M, L_max, FragSize, write granule) and reported
//!   by [`Decoder::sizing`]: the caller hands in one workspace buffer of that size.
//!
//! # How
//!
//! Uncoded fragments are written to the block as they arrive and marked *known*. A coded
//! fragment first XORs out its known columns (read back from flash), leaving a row over
//! the still *unknown* columns. Unknown columns that appear in a row get a *slot*
//! (0..L_max) on first sight, so the elimination matrix spans at most L_max columns, not
//! M. Pivot rows are kept in RAM in packed upper-triangular form (a pivot at slot s only
//! has bits above s): L_max·(L_max−1)/2 bits. Their payloads are appended to the log.
//! An uncoded fragment for a slotted column enters the elimination as a unit row.
//!
//! A coded fragment is only eliminated once every unknown column could be given a slot
//! (`unslotted unknown ≤ free slots`); before that point (coded fragments sent before
//! the uncoded ones were all seen) it is appended to the log as received, and all such
//! fragments are replayed once the condition holds. Once it holds it holds for good, so
//! at most L_max slots are ever used and reordering never costs decoding capacity.
//!
//! When all columns are known or slotted and the rank equals the slots in use, back
//! substitution from the highest slot down writes each recovered fragment to the block.
//!
//! When FragSize is not a multiple of the write granule, the granules that straddle two
//! fragments can only be programmed once both neighbours are known: the known part is
//! held in a RAM table (capacity 2·L_max + 2, what in-order delivery needs), spilling to
//! the log when it is full.

use super::parity::{self, parity_row};
use super::storage::FlashRegion;
use super::MAX_FRAGMENT_INDEX;
use crate::codec::PackageVersion;
use core::fmt;

/// Largest write granule the decoder supports (the STM32WL double-word).
pub const MAX_WRITE_GRANULE: usize = 8;
/// Largest FragSize (the field is one byte on air).
pub const MAX_FRAG_SIZE: usize = 255;
/// Bytes of a log entry header.
pub const LOG_HEADER_BYTES: usize = 8;
/// The log is addressed in 8-byte units with 15-bit indexes: at most this many bytes of
/// it are used.
pub const MAX_LOG_BYTES: usize = 0x7FFF * 8;

const LOG_KIND_PIVOT: u8 = b'P';
const LOG_KIND_DEFERRED: u8 = b'D';
const LOG_KIND_GRANULE: u8 = b'G';

/// `pivot_source` value: no pivot at this slot.
const NO_PIVOT: u16 = 0xFFFF;
/// `pivot_source` flag: the payload is the uncoded fragment in the block (low 15 bits =
/// fragment index), otherwise a log offset in 8-byte units.
const PIVOT_IN_BLOCK: u16 = 0x8000;

const HELD_ENTRY_BYTES: usize = 4 + 1 + MAX_WRITE_GRANULE;

/// Parameters of one fragmentation session, as the decoder needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// M: uncoded fragments (NbFrag), 1..=16383.
    pub nb_frag: u16,
    /// FragSize in bytes, 1..=255.
    pub frag_size: u16,
    /// L_max: the most uncoded fragments this decoder can rebuild. Sizes RAM and log.
    pub max_lost: u16,
    /// The TS004 version: selects the parity-row rule.
    pub version: PackageVersion,
}

/// RAM and flash a decoder needs, from [`Decoder::sizing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderSizing {
    /// Bytes of the workspace buffer to hand to [`Decoder::new`].
    pub workspace_bytes: usize,
    /// Bytes of the decoder value itself (counters and buffer references).
    pub struct_bytes: usize,
    /// Total RAM: workspace plus the decoder value.
    pub ram_bytes: usize,
    /// Log bytes reserved for pivot payloads (L_max entries); the log must be at least
    /// this large, and what it has beyond holds early coded fragments and spills.
    pub log_reserved_bytes: usize,
    /// Bytes of one log entry carrying a fragment payload.
    pub log_entry_bytes: usize,
    /// Partial boundary granules the RAM table holds before spilling to the log.
    pub held_granule_capacity: usize,
}

/// The Semtech reference decoder's RAM for the same session: ((L>>3)+1)·L + 2M bytes.
pub const fn semtech_reference_ram(nb_frag: u16, max_lost: u16) -> usize {
    let l = max_lost as usize;
    ((l >> 3) + 1) * l + 2 * nb_frag as usize
}

/// What happened to one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentOutcome {
    /// An uncoded fragment was written to the block.
    Stored,
    /// A coded fragment added information (rank grew by one).
    Accepted,
    /// A coded fragment carried nothing new (its row depends on earlier ones).
    NoNewInformation,
    /// An uncoded fragment that was already known.
    Duplicate,
    /// A coded fragment that arrived before its row could be eliminated, kept in the log.
    Deferred,
    /// A coded fragment dropped because the log is full (the device's memory error).
    DroppedNoSpace,
    /// This fragment completed the block: every byte is in the block region.
    Completed,
    /// The block was already complete; the fragment was ignored.
    AlreadyComplete,
}

/// Counters of a decoder, for status answers and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderStatus {
    /// Fragments passed to [`Decoder::push`] that were valid (duplicates included).
    pub received: u32,
    /// Uncoded fragments neither received nor recovered yet (MissingFrag).
    pub missing: u16,
    /// Rank of the elimination matrix.
    pub rank: u16,
    /// Slots (unknown columns under elimination) in use.
    pub slots_used: u16,
    /// Coded fragments waiting in the log.
    pub deferred: u16,
    /// Coded fragments dropped for lack of log space.
    pub dropped_no_space: u32,
    /// Bytes of the log in use.
    pub log_used: usize,
    /// The block is complete.
    pub complete: bool,
}

/// Why the decoder refused a configuration or a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderError<E> {
    /// The session parameters are unusable.
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The workspace buffer is smaller than [`DecoderSizing::workspace_bytes`].
    WorkspaceTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// The block region cannot hold M·FragSize bytes (rounded up to a granule).
    BlockRegionTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The log region cannot hold the L_max pivot entries.
    LogRegionTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A region's write granule is not a power of two up to 8.
    UnsupportedWriteGranule {
        /// The region's granule.
        granule: usize,
    },
    /// Fragment counter 0 or above 16383.
    FragmentIndexOutOfRange {
        /// The counter received.
        n: u16,
    },
    /// The fragment's payload is not FragSize bytes.
    WrongFragmentLength {
        /// FragSize.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// An uncoded fragment could not be stored: its boundary granules need log space
    /// that is exhausted. Nothing was written; the fragment counts as lost.
    LogFull,
    /// The flash driver failed; the decoder's state is unchanged for this fragment
    /// unless the failure happened part-way through a write.
    Flash(E),
}

impl<E: fmt::Debug> fmt::Display for DecoderError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecoderError::InvalidConfig { reason } => {
                write!(f, "invalid fragmentation session: {reason}")
            }
            DecoderError::WorkspaceTooSmall { needed, available } => write!(
                f,
                "decoder workspace of {available} byte(s), {needed} needed for this session"
            ),
            DecoderError::BlockRegionTooSmall { needed, available } => write!(
                f,
                "block region of {available} byte(s) cannot hold the {needed}-byte block"
            ),
            DecoderError::LogRegionTooSmall { needed, available } => write!(
                f,
                "log region of {available} byte(s), {needed} needed for the pivot payloads \
                 of L_max lost fragments; lower L_max or enlarge the log"
            ),
            DecoderError::UnsupportedWriteGranule { granule } => write!(
                f,
                "flash write granule of {granule} byte(s); 1, 2, 4 or 8 are supported"
            ),
            DecoderError::FragmentIndexOutOfRange { n } => {
                write!(f, "fragment counter {n} outside 1..=16383")
            }
            DecoderError::WrongFragmentLength { expected, actual } => write!(
                f,
                "fragment of {actual} byte(s), the session's fragment size is {expected}"
            ),
            DecoderError::LogFull => f.write_str(
                "log region full: the fragment's boundary bytes cannot be held; fragment dropped",
            ),
            DecoderError::Flash(e) => write!(f, "flash error: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for DecoderError<E> {}

/// The workspace split into its buffers.
struct Buffers<'w> {
    /// M bits: column is known (in the block, or held).
    known: &'w mut [u8],
    /// M bits: column has a slot.
    slotted: &'w mut [u8],
    /// M bits: scratch parity row.
    parity: &'w mut [u8],
    /// L × u16 LE: column of each slot.
    slot_column: &'w mut [u8],
    /// L × u16 LE: where each pivot's payload lives.
    pivot_source: &'w mut [u8],
    /// L(L−1)/2 bits: pivot rows above their pivot, packed.
    triangle: &'w mut [u8],
    /// L bits: scratch row being eliminated.
    row: &'w mut [u8],
    /// ⌈S⌉₈ bytes: payload being eliminated.
    payload: &'w mut [u8],
    /// ⌈S⌉₈ bytes: read buffer.
    scratch: &'w mut [u8],
    /// H × 13 bytes: held partial granules (granule u32, mask, data).
    held: &'w mut [u8],
}

/// Sizes of each workspace buffer, in workspace order.
#[derive(Clone, Copy)]
struct Layout {
    bitmap: usize,
    slot_table: usize,
    triangle: usize,
    row: usize,
    payload: usize,
    held_capacity: usize,
}

impl Layout {
    fn new(config: &DecoderConfig, granule: usize) -> Self {
        let m = usize::from(config.nb_frag);
        let l = usize::from(config.max_lost.min(config.nb_frag));
        let s = usize::from(config.frag_size);
        let held_capacity = if s.is_multiple_of(granule) {
            0
        } else {
            (2 * l + 2).min(m + 1)
        };
        Layout {
            bitmap: m.div_ceil(8),
            slot_table: 2 * l,
            triangle: (l * l.saturating_sub(1) / 2).div_ceil(8),
            row: l.div_ceil(8),
            payload: s.next_multiple_of(MAX_WRITE_GRANULE),
            held_capacity,
        }
    }

    fn total(&self) -> usize {
        3 * self.bitmap
            + 2 * self.slot_table
            + self.triangle
            + self.row
            + 2 * self.payload
            + self.held_capacity * HELD_ENTRY_BYTES
    }

    fn split<'w>(&self, workspace: &'w mut [u8]) -> Buffers<'w> {
        let (known, rest) = workspace.split_at_mut(self.bitmap);
        let (slotted, rest) = rest.split_at_mut(self.bitmap);
        let (parity, rest) = rest.split_at_mut(self.bitmap);
        let (slot_column, rest) = rest.split_at_mut(self.slot_table);
        let (pivot_source, rest) = rest.split_at_mut(self.slot_table);
        let (triangle, rest) = rest.split_at_mut(self.triangle);
        let (row, rest) = rest.split_at_mut(self.row);
        let (payload, rest) = rest.split_at_mut(self.payload);
        let (scratch, rest) = rest.split_at_mut(self.payload);
        let (held, _) = rest.split_at_mut(self.held_capacity * HELD_ENTRY_BYTES);
        Buffers {
            known,
            slotted,
            parity,
            slot_column,
            pivot_source,
            triangle,
            row,
            payload,
            scratch,
            held,
        }
    }
}

/// Incremental FEC decoder for one fragmentation session; see the module docs.
pub struct Decoder<'w, B, L> {
    config: DecoderConfig,
    max_lost: u16,
    frag_size: usize,
    granule: usize,
    block: B,
    log: L,
    log_capacity: usize,
    log_entry_bytes: usize,
    buffers: Buffers<'w>,
    held_capacity: usize,
    known_count: u16,
    unslotted_unknown: u16,
    slots_used: u16,
    rank: u16,
    pivots_logged: u16,
    log_used: usize,
    deferred: u16,
    deferred_replayed: bool,
    held_spilled: bool,
    dropped_no_space: u32,
    received: u32,
    complete: bool,
}

impl<B, L> fmt::Debug for Decoder<'_, B, L>
where
    B: FlashRegion,
    L: FlashRegion<Error = B::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<'w, B, L> Decoder<'w, B, L>
where
    B: FlashRegion,
    L: FlashRegion<Error = B::Error>,
{
    /// RAM and log a decoder for `config` needs with a block region programmed in
    /// `write_granule`-byte units.
    pub fn sizing(
        config: &DecoderConfig,
        write_granule: usize,
    ) -> Result<DecoderSizing, DecoderError<B::Error>> {
        check_config(config)?;
        check_granule(write_granule)?;
        let layout = Layout::new(config, write_granule);
        let workspace_bytes = layout.total();
        let struct_bytes = core::mem::size_of::<Self>();
        let log_entry_bytes = LOG_HEADER_BYTES + layout.payload;
        Ok(DecoderSizing {
            workspace_bytes,
            struct_bytes,
            ram_bytes: workspace_bytes + struct_bytes,
            log_reserved_bytes: usize::from(config.max_lost.min(config.nb_frag)) * log_entry_bytes,
            log_entry_bytes,
            held_granule_capacity: layout.held_capacity,
        })
    }

    /// A decoder writing the block into `block` (erased, at least M·FragSize bytes
    /// rounded up to its granule) and its intermediate data into `log` (erased), with
    /// every RAM buffer carved from `workspace`.
    pub fn new(
        config: DecoderConfig,
        block: B,
        log: L,
        workspace: &'w mut [u8],
    ) -> Result<Self, DecoderError<B::Error>> {
        check_config(&config)?;
        let granule = block.write_granule();
        check_granule(granule)?;
        check_granule(log.write_granule())?;
        let layout = Layout::new(&config, granule);
        let needed = layout.total();
        if workspace.len() < needed {
            return Err(DecoderError::WorkspaceTooSmall {
                needed,
                available: workspace.len(),
            });
        }
        let frag_size = usize::from(config.frag_size);
        let block_bytes = (usize::from(config.nb_frag) * frag_size).next_multiple_of(granule);
        if block.capacity() < block_bytes {
            return Err(DecoderError::BlockRegionTooSmall {
                needed: block_bytes,
                available: block.capacity(),
            });
        }
        let max_lost = config.max_lost.min(config.nb_frag);
        let log_entry_bytes = LOG_HEADER_BYTES + layout.payload;
        let log_capacity = log.capacity().min(MAX_LOG_BYTES);
        let reserved = usize::from(max_lost) * log_entry_bytes;
        if log_capacity < reserved {
            return Err(DecoderError::LogRegionTooSmall {
                needed: reserved,
                available: log.capacity(),
            });
        }
        let buffers = layout.split(&mut workspace[..needed]);
        buffers.known.fill(0);
        buffers.slotted.fill(0);
        buffers.pivot_source.fill(0xFF);
        buffers.triangle.fill(0);
        buffers.held.fill(0);
        Ok(Decoder {
            config,
            max_lost,
            frag_size,
            granule,
            block,
            log,
            log_capacity,
            log_entry_bytes,
            buffers,
            held_capacity: layout.held_capacity,
            known_count: 0,
            unslotted_unknown: config.nb_frag,
            slots_used: 0,
            rank: 0,
            pivots_logged: 0,
            log_used: 0,
            deferred: 0,
            deferred_replayed: false,
            held_spilled: false,
            dropped_no_space: 0,
            received: 0,
            complete: false,
        })
    }

    /// The session this decoder serves.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// True once every uncoded fragment is in the block region.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// True if uncoded fragment `n` (1-based) is known: received or rebuilt, its bytes
    /// in the block region except boundary bytes still held for a neighbour (see the
    /// module documentation). False for `n` outside `1..=NbFrag`.
    pub fn is_known(&self, n: u16) -> bool {
        if n == 0 || n > self.config.nb_frag {
            return false;
        }
        bit(self.buffers.known, usize::from(n - 1))
    }

    /// Current counters.
    pub fn status(&self) -> DecoderStatus {
        DecoderStatus {
            received: self.received,
            missing: self.config.nb_frag - self.known_count,
            rank: self.rank,
            slots_used: self.slots_used,
            deferred: self.deferred,
            dropped_no_space: self.dropped_no_space,
            log_used: self.log_used,
            complete: self.complete,
        }
    }

    /// True while coded fragments cannot be eliminated because more uncoded fragments
    /// are unknown than the decoder has free slots (L_max too small for the losses so
    /// far). Reordered delivery makes this true early on; if it is still true when the
    /// session's fragments have all been sent, the device has a memory error.
    pub fn over_capacity(&self) -> bool {
        self.unslotted_unknown > self.max_lost - self.slots_used
    }

    /// Gives the regions back (e.g. to verify the block once complete).
    pub fn into_regions(self) -> (B, L) {
        (self.block, self.log)
    }

    /// Reads `buffer.len()` bytes of the block region at `offset` (for instance to check
    /// the TS004 v2 MIC once complete).
    pub fn read_block(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), B::Error> {
        self.block.read(offset, buffer)
    }

    /// Feeds DataFragment `n` (1-based; > M means coded) with its payload.
    pub fn push(&mut self, n: u16, data: &[u8]) -> Result<FragmentOutcome, DecoderError<B::Error>> {
        if n == 0 || n > MAX_FRAGMENT_INDEX {
            return Err(DecoderError::FragmentIndexOutOfRange { n });
        }
        if data.len() != self.frag_size {
            return Err(DecoderError::WrongFragmentLength {
                expected: self.frag_size,
                actual: data.len(),
            });
        }
        self.received = self.received.saturating_add(1);
        if self.complete {
            return Ok(FragmentOutcome::AlreadyComplete);
        }
        let outcome = if n <= self.config.nb_frag {
            self.push_uncoded(usize::from(n) - 1, data)?
        } else {
            self.buffers.payload[..self.frag_size].copy_from_slice(data);
            self.push_coded(n)?
        };
        if self.complete {
            Ok(FragmentOutcome::Completed)
        } else {
            Ok(outcome)
        }
    }

    fn push_uncoded(
        &mut self,
        column: usize,
        data: &[u8],
    ) -> Result<FragmentOutcome, DecoderError<B::Error>> {
        if bit(self.buffers.known, column) {
            return Ok(FragmentOutcome::Duplicate);
        }
        let slot = self.slot_of(column);
        // Check the space for held granules before the first write, so a refusal leaves
        // no trace. A pivot entry always has room: L_max of them are reserved.
        self.ensure_room_for_edges(column)?;
        self.store_fragment(column, data)?;
        match slot {
            Some(slot) => {
                // The column is under elimination: its value enters as a unit row.
                self.buffers.row.fill(0);
                set_bit(self.buffers.row, slot);
                self.buffers.payload[..self.frag_size].copy_from_slice(data);
                self.eliminate_and_insert(Some(column))?;
            }
            None => self.unslotted_unknown -= 1,
        }
        self.replay_deferred_if_ready()?;
        self.check_complete()?;
        Ok(FragmentOutcome::Stored)
    }

    /// Eliminates the coded fragment `n` whose payload is in `buffers.payload`.
    fn push_coded(&mut self, n: u16) -> Result<FragmentOutcome, DecoderError<B::Error>> {
        if self.over_capacity() {
            return self.defer(n);
        }
        let m = self.config.nb_frag;
        parity_row(
            u32::from(n - m),
            m,
            self.config.version,
            self.buffers.parity,
        )
        .map_err(|_| DecoderError::InvalidConfig {
            reason: "parity row could not be generated",
        })?;
        self.buffers.row.fill(0);
        let mut any_unknown = false;
        let row_len = parity::row_bytes(m);
        for byte_index in 0..row_len {
            let mut byte = self.buffers.parity[byte_index];
            while byte != 0 {
                let column = byte_index * 8 + byte.trailing_zeros() as usize;
                byte &= byte - 1;
                if bit(self.buffers.known, column) {
                    self.read_fragment(column)?;
                    xor_into(
                        &mut self.buffers.payload[..self.frag_size],
                        &self.buffers.scratch[..self.frag_size],
                    );
                } else {
                    let slot = match self.slot_of(column) {
                        Some(slot) => slot,
                        None => self.assign_slot(column),
                    };
                    set_bit(self.buffers.row, slot);
                    any_unknown = true;
                }
            }
        }
        if !any_unknown {
            return Ok(FragmentOutcome::NoNewInformation);
        }
        let outcome = self.eliminate_and_insert(None)?;
        self.check_complete()?;
        Ok(outcome)
    }

    fn defer(&mut self, n: u16) -> Result<FragmentOutcome, DecoderError<B::Error>> {
        if !self.log_has_room(self.log_entry_bytes) {
            self.dropped_no_space = self.dropped_no_space.saturating_add(1);
            return Ok(FragmentOutcome::DroppedNoSpace);
        }
        let header = log_header(LOG_KIND_DEFERRED, 0, n, 0);
        self.append_payload_entry(header)?;
        self.deferred += 1;
        Ok(FragmentOutcome::Deferred)
    }

    /// Replays the deferred coded fragments once each can be eliminated.
    fn replay_deferred_if_ready(&mut self) -> Result<(), DecoderError<B::Error>> {
        if self.deferred_replayed || self.deferred == 0 || self.over_capacity() {
            return Ok(());
        }
        self.deferred_replayed = true;
        let end = self.log_used;
        let mut offset = 0;
        while offset < end && !self.complete {
            let mut header = [0u8; LOG_HEADER_BYTES];
            self.log
                .read(offset, &mut header)
                .map_err(DecoderError::Flash)?;
            let entry_len = self.log_entry_len(header[0]);
            if header[0] == LOG_KIND_DEFERRED {
                let n = u16::from_le_bytes([header[2], header[3]]);
                let body = offset + LOG_HEADER_BYTES;
                self.log
                    .read(body, &mut self.buffers.payload[..self.frag_size])
                    .map_err(DecoderError::Flash)?;
                self.deferred -= 1;
                self.push_coded(n)?;
            }
            offset += entry_len;
        }
        Ok(())
    }

    /// Reduces `buffers.row`/`buffers.payload` against the pivots and stores the result
    /// as a new pivot if anything is left. `uncoded` names the column whose uncoded
    /// fragment the payload is, while the row is still that unit row.
    fn eliminate_and_insert(
        &mut self,
        mut uncoded: Option<usize>,
    ) -> Result<FragmentOutcome, DecoderError<B::Error>> {
        let slots = usize::from(self.slots_used);
        let l = usize::from(self.max_lost);
        for slot in 0..slots {
            if !bit(self.buffers.row, slot) {
                continue;
            }
            let source = read_u16(self.buffers.pivot_source, slot);
            if source == NO_PIVOT {
                // Lowest set slot without a pivot: this row becomes its pivot.
                let start = triangle_offset(slot, l);
                for above in slot + 1..slots {
                    if bit(self.buffers.row, above) {
                        set_bit(self.buffers.triangle, start + (above - slot - 1));
                    }
                }
                let only_this_slot = (slot + 1..slots).all(|s| !bit(self.buffers.row, s));
                let source = match uncoded {
                    Some(column) if only_this_slot => PIVOT_IN_BLOCK | column as u16,
                    _ => {
                        let unit = (self.log_used / 8) as u16;
                        let header = log_header(LOG_KIND_PIVOT, 0, slot as u16, 0);
                        self.append_payload_entry(header)?;
                        self.pivots_logged += 1;
                        unit
                    }
                };
                write_u16(self.buffers.pivot_source, slot, source);
                self.rank += 1;
                return Ok(FragmentOutcome::Accepted);
            }
            // Subtract the pivot row (bits above `slot`) and its payload.
            let start = triangle_offset(slot, l);
            for above in slot + 1..slots {
                if bit(self.buffers.triangle, start + (above - slot - 1)) {
                    toggle_bit(self.buffers.row, above);
                }
            }
            clear_bit(self.buffers.row, slot);
            self.read_pivot_payload(source)?;
            xor_into(
                &mut self.buffers.payload[..self.frag_size],
                &self.buffers.scratch[..self.frag_size],
            );
            uncoded = None;
        }
        Ok(FragmentOutcome::NoNewInformation)
    }

    /// Back-substitutes and writes every recovered fragment once the system is solved.
    fn check_complete(&mut self) -> Result<(), DecoderError<B::Error>> {
        if self.complete || self.unslotted_unknown != 0 || self.rank != self.slots_used {
            return Ok(());
        }
        let slots = usize::from(self.slots_used);
        let l = usize::from(self.max_lost);
        for slot in (0..slots).rev() {
            let column = usize::from(read_u16(self.buffers.slot_column, slot));
            if bit(self.buffers.known, column) {
                continue;
            }
            let source = read_u16(self.buffers.pivot_source, slot);
            self.read_pivot_payload(source)?;
            self.buffers.payload[..self.frag_size]
                .copy_from_slice(&self.buffers.scratch[..self.frag_size]);
            let start = triangle_offset(slot, l);
            for above in slot + 1..slots {
                if bit(self.buffers.triangle, start + (above - slot - 1)) {
                    let other = usize::from(read_u16(self.buffers.slot_column, above));
                    self.read_fragment(other)?;
                    xor_into(
                        &mut self.buffers.payload[..self.frag_size],
                        &self.buffers.scratch[..self.frag_size],
                    );
                }
            }
            self.ensure_room_for_edges(column)?;
            self.store_payload_as_fragment(column)?;
        }
        self.complete = true;
        // Coded fragments still waiting in the log are moot now.
        self.deferred = 0;
        Ok(())
    }

    fn slot_of(&self, column: usize) -> Option<usize> {
        if !bit(self.buffers.slotted, column) {
            return None;
        }
        (0..usize::from(self.slots_used))
            .find(|&slot| usize::from(read_u16(self.buffers.slot_column, slot)) == column)
    }

    /// Gives an unknown, unslotted column the next slot. Only called when not over
    /// capacity, so a slot is always free.
    fn assign_slot(&mut self, column: usize) -> usize {
        let slot = usize::from(self.slots_used);
        write_u16(self.buffers.slot_column, slot, column as u16);
        set_bit(self.buffers.slotted, column);
        self.slots_used += 1;
        self.unslotted_unknown -= 1;
        slot
    }

    /// Reads pivot payload `source` into `buffers.scratch`.
    fn read_pivot_payload(&mut self, source: u16) -> Result<(), DecoderError<B::Error>> {
        if source & PIVOT_IN_BLOCK != 0 {
            self.read_fragment(usize::from(source & !PIVOT_IN_BLOCK))
        } else {
            let offset = usize::from(source) * 8 + LOG_HEADER_BYTES;
            self.log
                .read(offset, &mut self.buffers.scratch[..self.frag_size])
                .map_err(DecoderError::Flash)
        }
    }

    // ----- the block region: write once, granule by granule -----

    /// Writes a known fragment (`data`) and marks it known.
    fn store_fragment(&mut self, column: usize, data: &[u8]) -> Result<(), DecoderError<B::Error>> {
        let start = column * self.frag_size;
        let end = start + self.frag_size;
        let g = self.granule;
        let first_whole = start.next_multiple_of(g);
        let last_whole = end / g * g;
        if first_whole < last_whole {
            self.block
                .write(first_whole, &data[first_whole - start..last_whole - start])
                .map_err(DecoderError::Flash)?;
        }
        for granule_index in self.edge_granules(column).into_iter().flatten() {
            self.merge_edge(granule_index, start, data)?;
        }
        set_bit(self.buffers.known, column);
        self.known_count += 1;
        Ok(())
    }

    /// [`Self::store_fragment`] for the payload buffer (recovered fragments).
    fn store_payload_as_fragment(&mut self, column: usize) -> Result<(), DecoderError<B::Error>> {
        let mut data = [0u8; MAX_FRAG_SIZE];
        data[..self.frag_size].copy_from_slice(&self.buffers.payload[..self.frag_size]);
        self.store_fragment(column, &data[..self.frag_size])
    }

    /// The granules fragment `column` shares with a neighbour (or with the end of the
    /// block): at most one at each end; `None` where the fragment edge is aligned.
    fn edge_granules(&self, column: usize) -> [Option<usize>; 2] {
        let g = self.granule;
        let start = column * self.frag_size;
        let end = start + self.frag_size;
        let (first, last) = (start / g, (end - 1) / g);
        let start_partial = !start.is_multiple_of(g);
        let end_partial = !end.is_multiple_of(g);
        if first == last {
            [(start_partial || end_partial).then_some(first), None]
        } else {
            [start_partial.then_some(first), end_partial.then_some(last)]
        }
    }

    /// Adds the bytes of the fragment starting at `start` to granule `granule_index`,
    /// programming the granule if every byte of it is now known.
    fn merge_edge(
        &mut self,
        granule_index: usize,
        start: usize,
        data: &[u8],
    ) -> Result<(), DecoderError<B::Error>> {
        let g = self.granule;
        let granule_start = granule_index * g;
        let block_end = usize::from(self.config.nb_frag) * self.frag_size;
        let mut bytes = [0xFFu8; MAX_WRITE_GRANULE];
        let mut mask = 0u8;
        for (i, byte) in bytes.iter_mut().enumerate().take(g) {
            let position = granule_start + i;
            if position >= block_end {
                mask |= 1 << i; // past the block: stays erased
            } else if position >= start && position < start + data.len() {
                *byte = data[position - start];
                mask |= 1 << i;
            }
        }
        let (held_mask, held_bytes) = self.held_lookup(granule_index)?;
        for i in 0..g {
            if held_mask >> i & 1 == 1 && mask >> i & 1 == 0 {
                bytes[i] = held_bytes[i];
                mask |= 1 << i;
            }
        }
        let full = if g == 8 { 0xFF } else { (1u8 << g) - 1 };
        if mask == full {
            self.block
                .write(granule_start, &bytes[..g])
                .map_err(DecoderError::Flash)?;
            self.held_remove(granule_index);
            Ok(())
        } else {
            self.held_store(granule_index, mask, &bytes)
        }
    }

    /// Fails with [`DecoderError::LogFull`] if storing `column` might need to spill
    /// partial granules to a log that has no room for them.
    fn ensure_room_for_edges(&mut self, column: usize) -> Result<(), DecoderError<B::Error>> {
        if self.held_capacity == 0 {
            return Ok(()); // fragments are granule-aligned: nothing is ever held
        }
        let mut spills_needed = 0;
        let mut free_ram = (0..self.held_capacity)
            .filter(|&i| self.held_entry(i).1 == 0)
            .count();
        for edge in self.edge_granules(column).into_iter().flatten() {
            if self.held_find(edge).is_some() {
                continue;
            }
            if free_ram > 0 {
                free_ram -= 1;
            } else {
                spills_needed += 1;
            }
        }
        if spills_needed == 0 || self.log_has_room(spills_needed * (LOG_HEADER_BYTES + 8)) {
            Ok(())
        } else {
            Err(DecoderError::LogFull)
        }
    }

    /// Reads known fragment `column` into `buffers.scratch`, completing its boundary
    /// bytes from the held granules when those are not programmed yet.
    fn read_fragment(&mut self, column: usize) -> Result<(), DecoderError<B::Error>> {
        let start = column * self.frag_size;
        let end = start + self.frag_size;
        self.block
            .read(start, &mut self.buffers.scratch[..self.frag_size])
            .map_err(DecoderError::Flash)?;
        if self.held_capacity == 0 {
            return Ok(());
        }
        let g = self.granule;
        for granule_index in [start / g, (end - 1) / g] {
            let (mask, bytes) = self.held_lookup(granule_index)?;
            for (i, &byte) in bytes.iter().enumerate().take(g) {
                let position = granule_index * g + i;
                if mask >> i & 1 == 1 && position >= start && position < end {
                    self.buffers.scratch[position - start] = byte;
                }
            }
        }
        Ok(())
    }

    // ----- held partial granules: RAM table, spilling to the log -----

    fn held_entry(&self, index: usize) -> (u32, u8, [u8; MAX_WRITE_GRANULE]) {
        let entry = &self.buffers.held[index * HELD_ENTRY_BYTES..(index + 1) * HELD_ENTRY_BYTES];
        let granule = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let mut bytes = [0u8; MAX_WRITE_GRANULE];
        bytes.copy_from_slice(&entry[5..]);
        (granule, entry[4], bytes)
    }

    fn held_find(&self, granule_index: usize) -> Option<usize> {
        (0..self.held_capacity).find(|&i| {
            let (granule, mask, _) = self.held_entry(i);
            mask != 0 && granule as usize == granule_index
        })
    }

    /// Known bytes of a granule not yet programmed: the RAM entry merged with any log
    /// spills (all hold the same bytes where they overlap).
    fn held_lookup(
        &mut self,
        granule_index: usize,
    ) -> Result<(u8, [u8; MAX_WRITE_GRANULE]), DecoderError<B::Error>> {
        let (mut mask, mut bytes) = match self.held_find(granule_index) {
            Some(i) => {
                let (_, mask, bytes) = self.held_entry(i);
                (mask, bytes)
            }
            None => (0, [0xFF; MAX_WRITE_GRANULE]),
        };
        if self.held_spilled {
            let mut offset = 0;
            while offset < self.log_used {
                let mut header = [0u8; LOG_HEADER_BYTES];
                self.log
                    .read(offset, &mut header)
                    .map_err(DecoderError::Flash)?;
                let granule = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                if header[0] == LOG_KIND_GRANULE && granule as usize == granule_index {
                    let mut spilled = [0u8; MAX_WRITE_GRANULE];
                    self.log
                        .read(offset + LOG_HEADER_BYTES, &mut spilled)
                        .map_err(DecoderError::Flash)?;
                    for i in 0..MAX_WRITE_GRANULE {
                        if header[1] >> i & 1 == 1 {
                            bytes[i] = spilled[i];
                        }
                    }
                    mask |= header[1];
                }
                offset += self.log_entry_len(header[0]);
            }
        }
        Ok((mask, bytes))
    }

    fn held_store(
        &mut self,
        granule_index: usize,
        mask: u8,
        bytes: &[u8; MAX_WRITE_GRANULE],
    ) -> Result<(), DecoderError<B::Error>> {
        let slot = self
            .held_find(granule_index)
            .or_else(|| (0..self.held_capacity).find(|&i| self.held_entry(i).1 == 0));
        match slot {
            Some(i) => {
                let entry =
                    &mut self.buffers.held[i * HELD_ENTRY_BYTES..(i + 1) * HELD_ENTRY_BYTES];
                entry[..4].copy_from_slice(&(granule_index as u32).to_le_bytes());
                entry[4] = mask;
                entry[5..].copy_from_slice(bytes);
                Ok(())
            }
            None => {
                // Room was checked by ensure_room_for_edges before the first write.
                let header = log_header(LOG_KIND_GRANULE, mask, 0, granule_index as u32);
                self.log
                    .write(self.log_used, &header)
                    .map_err(DecoderError::Flash)?;
                self.log
                    .write(self.log_used + LOG_HEADER_BYTES, bytes)
                    .map_err(DecoderError::Flash)?;
                self.log_used += LOG_HEADER_BYTES + MAX_WRITE_GRANULE;
                self.held_spilled = true;
                Ok(())
            }
        }
    }

    fn held_remove(&mut self, granule_index: usize) {
        if let Some(i) = self.held_find(granule_index) {
            self.buffers.held[i * HELD_ENTRY_BYTES + 4] = 0;
        }
    }

    // ----- the log region: append only -----

    fn log_entry_len(&self, kind: u8) -> usize {
        match kind {
            LOG_KIND_GRANULE => LOG_HEADER_BYTES + MAX_WRITE_GRANULE,
            _ => self.log_entry_bytes,
        }
    }

    /// Room for `bytes` more, keeping the space of the pivots still to come.
    fn log_has_room(&self, bytes: usize) -> bool {
        let pivots_to_come = usize::from(self.max_lost - self.pivots_logged);
        self.log_used + bytes + pivots_to_come * self.log_entry_bytes <= self.log_capacity
    }

    /// Appends `header` and `buffers.payload` (padded to 8 bytes) to the log.
    fn append_payload_entry(
        &mut self,
        header: [u8; LOG_HEADER_BYTES],
    ) -> Result<(), DecoderError<B::Error>> {
        let body_len = self.log_entry_bytes - LOG_HEADER_BYTES;
        self.buffers.payload[self.frag_size..body_len].fill(0xFF);
        self.log
            .write(self.log_used, &header)
            .map_err(DecoderError::Flash)?;
        self.log
            .write(
                self.log_used + LOG_HEADER_BYTES,
                &self.buffers.payload[..body_len],
            )
            .map_err(DecoderError::Flash)?;
        self.log_used += self.log_entry_bytes;
        Ok(())
    }
}

fn check_config<E>(config: &DecoderConfig) -> Result<(), DecoderError<E>> {
    let reason = if config.nb_frag == 0 {
        "NbFrag is 0"
    } else if config.nb_frag > MAX_FRAGMENT_INDEX {
        "NbFrag above 16383: fragment counters are 14 bits"
    } else if config.frag_size == 0 {
        "FragSize is 0"
    } else if usize::from(config.frag_size) > MAX_FRAG_SIZE {
        "FragSize above 255"
    } else {
        return Ok(());
    };
    Err(DecoderError::InvalidConfig { reason })
}

fn check_granule<E>(granule: usize) -> Result<(), DecoderError<E>> {
    if granule.is_power_of_two() && granule <= MAX_WRITE_GRANULE {
        Ok(())
    } else {
        Err(DecoderError::UnsupportedWriteGranule { granule })
    }
}

fn log_header(kind: u8, aux: u8, index: u16, granule: u32) -> [u8; LOG_HEADER_BYTES] {
    let mut header = [0u8; LOG_HEADER_BYTES];
    header[0] = kind;
    header[1] = aux;
    header[2..4].copy_from_slice(&index.to_le_bytes());
    header[4..8].copy_from_slice(&granule.to_le_bytes());
    header
}

/// Bit offset of the packed row of pivot `slot` (bits for slots `slot+1 .. l`).
fn triangle_offset(slot: usize, l: usize) -> usize {
    // Σ_{k<slot} (l − 1 − k)
    slot * (l - 1) - slot * slot.saturating_sub(1) / 2
}

fn xor_into(target: &mut [u8], source: &[u8]) {
    target.iter_mut().zip(source).for_each(|(t, s)| *t ^= s);
}

fn bit(bits: &[u8], i: usize) -> bool {
    parity::bit(bits, i)
}

fn set_bit(bits: &mut [u8], i: usize) {
    if let Some(byte) = bits.get_mut(i / 8) {
        *byte |= 1 << (i % 8);
    }
}

fn clear_bit(bits: &mut [u8], i: usize) {
    if let Some(byte) = bits.get_mut(i / 8) {
        *byte &= !(1 << (i % 8));
    }
}

fn toggle_bit(bits: &mut [u8], i: usize) {
    if let Some(byte) = bits.get_mut(i / 8) {
        *byte ^= 1 << (i % 8);
    }
}

fn read_u16(table: &[u8], index: usize) -> u16 {
    u16::from_le_bytes([table[2 * index], table[2 * index + 1]])
}

fn write_u16(table: &mut [u8], index: usize, value: u16) {
    table[2 * index..2 * index + 2].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triangle_rows_are_packed_without_overlap() {
        let l = 7;
        let mut next = 0;
        for slot in 0..l {
            assert_eq!(triangle_offset(slot, l), next);
            next += l - 1 - slot;
        }
        assert_eq!(next, l * (l - 1) / 2);
    }

    #[test]
    fn is_known_follows_the_uncoded_fragments_received() {
        use crate::fec::SliceFlash;
        let config = DecoderConfig {
            nb_frag: 4,
            frag_size: 8,
            max_lost: 2,
            version: crate::codec::PackageVersion::V2,
        };
        let sizing = Decoder::<SliceFlash, SliceFlash>::sizing(&config, 8).unwrap();
        let mut workspace = [0u8; 512];
        assert!(sizing.workspace_bytes <= workspace.len());
        let mut block = [0xFFu8; 32];
        let mut log = [0xFFu8; 1024];
        assert!(sizing.log_reserved_bytes <= log.len());
        let mut decoder = Decoder::new(
            config,
            SliceFlash::new(&mut block, 8),
            SliceFlash::new(&mut log, 8),
            &mut workspace,
        )
        .unwrap();
        decoder.push(3, &[7; 8]).unwrap();
        assert!(decoder.is_known(3));
        assert!(!decoder.is_known(2));
        assert!(!decoder.is_known(0) && !decoder.is_known(5));
    }

    #[test]
    fn semtech_formula() {
        assert_eq!(semtech_reference_ram(2000, 400), 51 * 400 + 4000);
    }
}
