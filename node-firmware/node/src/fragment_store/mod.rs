//! The fragment store: the download slot, the FEC log, the decoder's RAM workspace and
//! the decoder itself, and how a download survives a reboot.
//!
//! # Writing
//!
//! A session starts by erasing the slot (the block's pages) and the log, then every
//! fragment goes to `lorawan_fuota::fec::Decoder`, which writes uncoded fragments
//! straight to their place in the slot and everything intermediate to the log, each
//! byte once, and rebuilds the missing fragments there when the block is complete. No
//! slot page is erased or rewritten after the session started.
//!
//! # Persistence and resume: the choice
//!
//! The decoder keeps its elimination state in RAM only. Persisting that state after
//! every fragment would cost a large write per fragment and tie the node to the
//! decoder's internals. Instead the node persists:
//!
//! - the session setup and the decoder sizing (the state record, once per setup), and
//! - which uncoded fragments are safely in the slot: 8-byte window records, one per 40
//!   fragments delivered in order ([`journal`]); a fragment is journaled once every
//!   flash granule it touches is programmed (with a FragSize that is not a multiple of
//!   8, the granule shared with a neighbour is programmed only when both are known).
//!
//! On resume the log is erased (its rows are meaningless without the RAM state), a new
//! decoder is created over the same slot, and every journaled fragment is read back
//! from the slot and fed to it again. The decoder writes those fragments again;
//! `regions::ResumableSlot` turns programming bytes that are already there into a
//! no-op, so nothing is programmed twice and nothing is erased. The decoder's state is
//! then exactly what it would have been had only the journaled fragments arrived.
//!
//! What is lost: coded fragments received before the reboot, the window the journal
//! held in RAM (at most 39 fragments) and fragments waiting for a neighbour: they are
//! received again (their bytes match, so re-programming them is a no-op too), or
//! rebuilt from coded fragments. What is kept: every journaled uncoded fragment.
//!
//! Why not a bitmap in flash: a double-word cannot be programmed twice, so a bitmap
//! costs an erase-and-rewrite per update; append-only window records cost one
//! double-word per window. Why not infer received fragments from the slot: firmware
//! images contain 0xFF runs, indistinguishable from erased flash. Size: the largest
//! TS004 block (16 383 fragments) delivered in order needs 410 records (3 280 bytes),
//! within the 4 KB journal of the STM32WL layout.
//!
//! # The workspace
//!
//! The decoder borrows its RAM workspace for its whole life and has no way to give it
//! back, so a second decoder in the same run needs the workspace back from the
//! firmware: the node asks with [`crate::Action::RecycleWorkspace`], and the firmware
//! restarts it on the same workspace (`FuotaNode::into_parts` / `FuotaNode::start`),
//! which is the resume path above. A setup repeated before any fragment arrived (its
//! answer was lost) reuses the idle decoder instead.

pub mod journal;
pub mod regions;

use lorawan_fuota::codec::firmware_management::UpgradeImageStatus;
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::decoder::{DecoderStatus, MAX_LOG_BYTES};
use lorawan_fuota::fec::{Decoder, DecoderError, FlashRegion, FragmentOutcome};
use lorawan_fuota::image::ImageSource;

use crate::platform::{ErasableRegion, Platform, SessionStore};
use journal::{BlockGeometry, JournalWriter, WindowRecord};
use regions::{LogRegion, RegionError, ResumableSlot};

/// Journal records a resume reads at most (one per fragment number, and some torn).
const MAX_JOURNAL_RECORDS: usize = 2 * lorawan_fuota::fec::MAX_FRAGMENT_INDEX as usize;

/// The decoder type the node uses.
pub(crate) type FecDecoder<'w, P> =
    Decoder<'w, ResumableSlot<<P as Platform>::DownloadSlot>, LogRegion<<P as Platform>::FecLog>>;

/// Error of a decoder operation.
pub(crate) type FecError<P> = DecoderError<RegionError<<P as Platform>::FlashError>>;

/// The download slot and the FEC log, as the firmware lends them.
pub type Regions<P> = (<P as Platform>::DownloadSlot, <P as Platform>::FecLog);

/// What the download slot holds (persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SlotContent {
    /// Nothing usable (erased, or deleted).
    #[default]
    Empty,
    /// Part of a data block (a session is receiving, or was deleted before completing).
    Partial,
    /// A complete data block of `block_len` bytes.
    Complete {
        /// Unpadded length of the block.
        block_len: u32,
        /// The TS004 v2 MIC did not match: the block must not be used.
        mic_failed: bool,
    },
    /// The block the node handed to the bootloader runs on trial: it is no longer in
    /// the slot, and comes back if the trial image is reverted (see `update`).
    OnTrial {
        /// Unpadded length of the block.
        block_len: u32,
    },
    /// A complete block the node handed to the bootloader, which refused it or
    /// reverted it (see `update`): reported, never handed over again.
    Refused {
        /// Unpadded length of the block.
        block_len: u32,
        /// What DevUpgradeImageAns says about it.
        status: UpgradeImageStatus,
    },
}

/// Why a session cannot be given a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMemoryError {
    /// The padded block does not fit the download slot.
    SlotTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Slot capacity.
        capacity: usize,
    },
    /// Even at the minimum FEC capacity the decoder needs more RAM or log than the
    /// device has.
    DecoderTooLarge {
        /// Lost fragments the session would need to be able to rebuild.
        minimum_lost: u16,
    },
    /// The session parameters are not a valid block (NbFrag 0, FragSize 0, Padding ≥
    /// FragSize, or NbFrag above 16383).
    InvalidBlock,
}

/// How a new decoder was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Slot and log erased, decoder created.
    Started,
    /// An identical decoder that had not received anything was kept.
    Reused,
    /// The workspace is held by a previous decoder: recycle the node first.
    NeedsWorkspace,
}

/// What a resume replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResumeSummary {
    /// Journal records fed back to the decoder.
    pub replayed: u32,
    /// Records skipped (another session's epoch, out of range, unreadable).
    pub skipped: u32,
    /// The block was already complete after the replay.
    pub completed: bool,
}

/// A failure while preparing or resuming a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError<E> {
    /// Erasing or reading flash failed.
    Flash(RegionError<E>),
    /// The decoder refused the configuration (not expected after planning).
    Decoder,
    /// The regions were lost after an earlier decoder failure.
    RegionsLost,
}

// The decoder is the point of the store and lives in place (no heap to box it in).
#[allow(clippy::large_enum_variant)]
enum Engine<'w, P: Platform> {
    Idle {
        slot: P::DownloadSlot,
        log: P::FecLog,
        workspace: Option<&'w mut [u8]>,
    },
    Decoding(FecDecoder<'w, P>),
    Lost,
}

/// The fragment store; see the module documentation.
pub(crate) struct FragmentStore<'w, P: Platform> {
    engine: Engine<'w, P>,
    workspace_len: usize,
    slot_capacity: usize,
    slot_granule: usize,
    log_capacity: usize,
    /// What the slot holds.
    pub content: SlotContent,
    /// The journal's window in RAM.
    journal: JournalWriter,
}

impl<'w, P: Platform> FragmentStore<'w, P> {
    /// A store over the two regions and the workspace.
    pub fn new(
        slot: P::DownloadSlot,
        log: P::FecLog,
        workspace: &'w mut [u8],
        content: SlotContent,
    ) -> Self {
        FragmentStore {
            workspace_len: workspace.len(),
            slot_capacity: slot.capacity(),
            slot_granule: slot.write_granule(),
            log_capacity: log.capacity().min(MAX_LOG_BYTES),
            engine: Engine::Idle {
                slot,
                log,
                workspace: Some(workspace),
            },
            content,
            journal: JournalWriter::default(),
        }
    }

    /// A store whose regions were lost (every session is refused).
    pub fn lost(content: SlotContent) -> Self {
        FragmentStore {
            engine: Engine::Lost,
            workspace_len: 0,
            slot_capacity: 0,
            slot_granule: 1,
            log_capacity: 0,
            content,
            journal: JournalWriter::default(),
        }
    }

    /// The regions back, for `FuotaNode::into_parts`.
    pub fn into_regions(self) -> Option<Regions<P>> {
        match self.engine {
            Engine::Idle { slot, log, .. } => Some((slot, log)),
            Engine::Decoding(decoder) => {
                let (slot, log) = decoder.into_regions();
                Some((slot.into_inner(), log.into_inner()))
            }
            Engine::Lost => None,
        }
    }

    /// Chooses the decoder sizing (L_max) for a session: the largest capacity, up to
    /// `capacity_percent` of NbFrag, that fits the workspace and leaves room in the log
    /// for as many early coded fragments as pivots; refused below `minimum_percent`.
    pub fn plan(
        &self,
        nb_frag: u16,
        frag_size: u8,
        version: PackageVersion,
        capacity_percent: u8,
        minimum_percent: u8,
    ) -> Result<DecoderConfig, SessionMemoryError> {
        if nb_frag == 0 || frag_size == 0 || nb_frag > lorawan_fuota::fec::MAX_FRAGMENT_INDEX {
            return Err(SessionMemoryError::InvalidBlock);
        }
        let granule = self.slot_granule.max(1);
        let needed = (usize::from(nb_frag) * usize::from(frag_size)).next_multiple_of(granule);
        if needed > self.slot_capacity {
            return Err(SessionMemoryError::SlotTooSmall {
                needed,
                capacity: self.slot_capacity,
            });
        }
        let share = |percent: u8| -> u16 {
            let lost = (u32::from(nb_frag) * u32::from(percent)).div_ceil(100);
            u16::try_from(lost).unwrap_or(nb_frag).clamp(1, nb_frag)
        };
        let wanted = share(capacity_percent.max(minimum_percent));
        let minimum = share(minimum_percent);
        let config = |max_lost: u16| DecoderConfig {
            nb_frag,
            frag_size: u16::from(frag_size),
            max_lost,
            version,
        };
        let fits = |max_lost: u16| -> bool {
            match FecDecoder::<P>::sizing(&config(max_lost), granule) {
                Ok(sizing) => {
                    sizing.workspace_bytes <= self.workspace_len
                        && sizing
                            .log_reserved_bytes
                            .saturating_add(usize::from(max_lost) * sizing.log_entry_bytes)
                            <= self.log_capacity
                }
                Err(_) => false,
            }
        };
        if !fits(minimum) {
            return Err(SessionMemoryError::DecoderTooLarge {
                minimum_lost: minimum,
            });
        }
        // Largest fitting value in minimum..=wanted (fits is monotonic).
        let (mut low, mut high) = (minimum, wanted);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            if fits(middle) {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        Ok(config(low))
    }

    /// Gives a new session a decoder: erases the first `block_bytes` of the slot and
    /// the log, then creates it (or keeps an identical untouched one).
    pub fn begin(
        &mut self,
        config: DecoderConfig,
        block_bytes: usize,
    ) -> Result<Begin, StoreError<P::FlashError>> {
        if let Engine::Decoding(decoder) = &self.engine {
            return Ok(if reusable::<P>(decoder, &config) {
                Begin::Reused
            } else {
                Begin::NeedsWorkspace
            });
        }
        let idle_with_workspace = matches!(
            self.engine,
            Engine::Idle {
                workspace: Some(_),
                ..
            }
        );
        if idle_with_workspace && !self.decoder_fits(&config) {
            return Err(StoreError::Decoder);
        }
        match &mut self.engine {
            Engine::Idle {
                workspace: None, ..
            } => return Ok(Begin::NeedsWorkspace),
            Engine::Idle { slot, log, .. } => {
                slot.erase_prefix(block_bytes)
                    .map_err(|e| StoreError::Flash(RegionError::Flash(e)))?;
                log.erase_prefix(usize::MAX)
                    .map_err(|e| StoreError::Flash(RegionError::Flash(e)))?;
            }
            Engine::Decoding(_) | Engine::Lost => return Err(StoreError::RegionsLost),
        }
        self.journal = JournalWriter::default();
        self.create_decoder(config)?;
        Ok(Begin::Started)
    }

    /// Erases the first `block_bytes` of the slot (a session whose setup was accepted
    /// while the workspace was busy is prepared here, on resume).
    pub fn erase_slot(&mut self, block_bytes: usize) -> Result<(), StoreError<P::FlashError>> {
        self.release_decoder();
        match &mut self.engine {
            Engine::Idle { slot, .. } => slot
                .erase_prefix(block_bytes)
                .map_err(|e| StoreError::Flash(RegionError::Flash(e))),
            Engine::Decoding(_) | Engine::Lost => Err(StoreError::RegionsLost),
        }
    }

    /// Resumes a session: erases the log, creates the decoder and re-feeds it every
    /// journal record of `epoch` (see the module documentation).
    pub fn resume(
        &mut self,
        config: DecoderConfig,
        epoch: u8,
        store: &mut P::Store,
    ) -> Result<ResumeSummary, StoreError<P::FlashError>> {
        if !self.decoder_fits(&config) {
            // E.g. a firmware with a smaller workspace resuming an older session.
            return Err(StoreError::Decoder);
        }
        match &mut self.engine {
            Engine::Idle {
                log,
                workspace: Some(_),
                ..
            } => log
                .erase_prefix(usize::MAX)
                .map_err(|e| StoreError::Flash(RegionError::Flash(e)))?,
            _ => return Err(StoreError::RegionsLost),
        }
        self.create_decoder(config)?;
        let Engine::Decoding(decoder) = &mut self.engine else {
            return Err(StoreError::RegionsLost);
        };
        let mut summary = ResumeSummary::default();
        self.journal = JournalWriter::default();
        let frag_size = usize::from(config.frag_size);
        let mut fragment = [0u8; 256];
        let Some(fragment) = fragment.get_mut(..frag_size) else {
            return Err(StoreError::Decoder);
        };
        let last_window = WindowRecord::window_of(config.nb_frag);
        let mut index = 0;
        loop {
            let bytes = match store.read_fragment(index) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                // An unreadable record (a torn append) is skipped, not the rest.
                Err(_) if index < MAX_JOURNAL_RECORDS => {
                    index += 1;
                    summary.skipped += 1;
                    continue;
                }
                Err(_) => break,
            };
            index += 1;
            let record = match WindowRecord::decode(&bytes) {
                Some(record) if record.epoch == epoch && record.window <= last_window => record,
                _ => {
                    summary.skipped += 1;
                    continue;
                }
            };
            for number in record.fragments(config.nb_frag) {
                // Journaled fragments are durable: every byte is in the slot.
                let offset = usize::from(number - 1) * frag_size;
                if decoder.read_block(offset, fragment).is_err() {
                    summary.skipped += 1;
                    continue;
                }
                match decoder.push(number, fragment) {
                    Ok(FragmentOutcome::Stored | FragmentOutcome::Completed) => {
                        summary.replayed += 1
                    }
                    Ok(_) | Err(_) => summary.skipped += 1,
                }
            }
        }
        summary.completed = decoder.is_complete();
        Ok(summary)
    }

    /// True if `Decoder::new` will accept `config` with these regions and workspace:
    /// everything it checks is checked here first, because a refusal would take the
    /// regions with it.
    fn decoder_fits(&self, config: &DecoderConfig) -> bool {
        let Engine::Idle { log, .. } = &self.engine else {
            return false;
        };
        let log_granule = log.write_granule();
        let granule = self.slot_granule;
        let Ok(sizing) = FecDecoder::<P>::sizing(config, granule) else {
            return false;
        };
        let block_bytes =
            (usize::from(config.nb_frag) * usize::from(config.frag_size)).next_multiple_of(granule);
        log_granule.is_power_of_two()
            && log_granule <= 8
            && sizing.workspace_bytes <= self.workspace_len
            && block_bytes <= self.slot_capacity
            && sizing.log_reserved_bytes <= self.log_capacity
    }

    fn create_decoder(&mut self, config: DecoderConfig) -> Result<(), StoreError<P::FlashError>> {
        if !self.decoder_fits(&config) {
            return Err(StoreError::Decoder);
        }
        match core::mem::replace(&mut self.engine, Engine::Lost) {
            Engine::Idle {
                slot,
                log,
                workspace: Some(workspace),
            } => {
                match Decoder::new(
                    config,
                    ResumableSlot::new(slot),
                    LogRegion::new(log),
                    workspace,
                ) {
                    Ok(decoder) => {
                        self.engine = Engine::Decoding(decoder);
                        Ok(())
                    }
                    // `decoder_fits` checked everything `new` checks; should it still
                    // refuse, the regions went with it and every later session is
                    // refused.
                    Err(_) => Err(StoreError::Decoder),
                }
            }
            other => {
                self.engine = other;
                Err(StoreError::RegionsLost)
            }
        }
    }

    /// Drops the decoder (its workspace stays with it until the node is recycled) and
    /// keeps the regions.
    pub fn release_decoder(&mut self) {
        if let Engine::Decoding(_) = self.engine {
            if let Engine::Decoding(decoder) = core::mem::replace(&mut self.engine, Engine::Lost) {
                let (slot, log) = decoder.into_regions();
                self.engine = Engine::Idle {
                    slot: slot.into_inner(),
                    log: log.into_inner(),
                    workspace: None,
                };
            }
        }
    }

    /// The decoder's counters, if a decoder exists.
    pub fn status(&self) -> Option<DecoderStatus> {
        match &self.engine {
            Engine::Decoding(decoder) => Some(decoder.status()),
            _ => None,
        }
    }

    /// Feeds fragment `number` to the decoder and journals it if it was an uncoded
    /// fragment newly stored. A journal failure is returned in the second value (the
    /// fragment is in the slot; only its resume is at risk).
    pub fn push(
        &mut self,
        number: u16,
        data: &[u8],
        epoch: u8,
        store: &mut P::Store,
    ) -> Result<(FragmentOutcome, bool), Option<FecError<P>>> {
        let Engine::Decoding(decoder) = &mut self.engine else {
            return Err(None);
        };
        let config = *decoder.config();
        let outcome = decoder.push(number, data).map_err(Some)?;
        let stored_uncoded = number <= config.nb_frag
            && matches!(
                outcome,
                FragmentOutcome::Stored | FragmentOutcome::Completed
            );
        let mut journal_failed = false;
        if stored_uncoded {
            let geometry = BlockGeometry {
                nb_frag: config.nb_frag,
                frag_size: config.frag_size,
                granule: u16::try_from(self.slot_granule).unwrap_or(8),
            };
            let decoder = &*decoder;
            for record in self
                .journal
                .fragment_known(number, epoch, &geometry, |c| decoder.is_known(c))
            {
                journal_failed |= store.append_fragment(&record).is_err();
            }
        }
        Ok((outcome, journal_failed))
    }

    /// Appends the journal's window held in RAM (before a reboot or a restart of the
    /// node); returns false if the store refused it.
    pub fn flush_journal(&mut self, store: &mut P::Store) -> bool {
        match self.journal.flush() {
            Some(record) => store.append_fragment(&record).is_ok(),
            None => true,
        }
    }

    /// Reads slot bytes (through the decoder when it holds the slot).
    pub fn read(
        &mut self,
        offset: usize,
        buffer: &mut [u8],
    ) -> Result<(), RegionError<P::FlashError>> {
        match &mut self.engine {
            Engine::Idle { slot, .. } => slot.read(offset, buffer).map_err(RegionError::Flash),
            Engine::Decoding(decoder) => decoder.read_block(offset, buffer),
            Engine::Lost => Err(RegionError::Conflict { offset }),
        }
    }

    /// An image source over the first `len` bytes of the slot.
    pub fn image(&mut self, len: u32) -> SlotImage<'_, 'w, P> {
        SlotImage { store: self, len }
    }
}

fn reusable<P: Platform>(decoder: &FecDecoder<'_, P>, config: &DecoderConfig) -> bool {
    decoder.status().received == 0 && decoder.config() == config
}

/// The download slot read as a signed image.
pub(crate) struct SlotImage<'a, 'w, P: Platform> {
    store: &'a mut FragmentStore<'w, P>,
    len: u32,
}

impl<P: Platform> ImageSource for SlotImage<'_, '_, P> {
    type Error = RegionError<P::FlashError>;

    fn size(&self) -> u32 {
        self.len
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.store.read(offset as usize, buf)
    }
}

impl<P: Platform> FragmentStore<'_, P> {
    /// Erases the image's pages and marks the slot empty (DevDeleteImageReq).
    pub fn delete_image(&mut self, block_len: u32) -> Result<(), StoreError<P::FlashError>> {
        self.erase_slot(block_len as usize)?;
        self.content = SlotContent::Empty;
        Ok(())
    }
}
